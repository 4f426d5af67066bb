//! What the scheduler and channel fuzz targets share: their expected
//! panic, the panic hook that keeps it quiet, and ASan's shadow upkeep for
//! proc stacks.

use std::cell::RefCell;

/// The payload of every panic a harness causes on purpose.
pub(crate) struct KnownPanic;

thread_local! {
    /// `(base, size)` of the segments of the proc about to raise
    /// `KnownPanic`, for the panic hook.
    pub(crate) static PANICKING_CHAIN: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

/// Keeps the expected panics quiet (and clears the panicking proc's stack
/// shadow, see [`asan`]); any other panic goes to the hook that was there
/// (libfuzzer-sys's, which prints and aborts).
pub(crate) fn install_panic_filter() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().is::<KnownPanic>() {
            PANICKING_CHAIN.with(|c| {
                for (base, size) in c.borrow_mut().drain(..) {
                    asan::unpoison(base, size);
                }
            });
        } else {
            previous(info);
        }
    }));
}

/// The current stack pointer.
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let sp: usize;
        // SAFETY: copies rsp into a register; touches no memory and leaves
        // the stack and flags as they were.
        unsafe {
            std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let probe = 0u8;
        std::hint::black_box(&probe) as *const u8 as usize
    }
}

/// Stands in for the fiber support procrt lacks (see either target's crate
/// docs).
pub(crate) mod asan {
    #[cfg(sanitize = "address")]
    extern "C" {
        /// ASan's interface: marks `[addr, addr + size)` addressable.
        fn __asan_unpoison_memory_region(addr: *const std::ffi::c_void, size: usize);
    }

    /// Marks `[base, base + len)` addressable in ASan's shadow (no-op
    /// without ASan). Only the shadow is written, never the range itself,
    /// so any range is fine; this forgets the redzones of frames living
    /// there, which costs detection, not correctness.
    pub(crate) fn unpoison(base: usize, len: usize) {
        #[cfg(sanitize = "address")]
        // SAFETY: the call writes only ASan's shadow memory for the range,
        // which ASan maps for every application address.
        unsafe {
            __asan_unpoison_memory_region(base as *const std::ffi::c_void, len)
        };
        #[cfg(not(sanitize = "address"))]
        let _ = (base, len);
    }
}
