//! `foreign(f)`: a large segment for code that makes no stack checks.
//!
//! # Design
//!
//! Plain C, libc and most FFI libraries neither call `stack::grow` nor
//! check the TCB slot: they assume a thread's megabytes of stack. The note
//! calls for "stub routines to interface with ELF code"; [`foreign`] is
//! that stub. It runs `f` on one segment of [`FOREIGN_STACK`] bytes (or the
//! size given to [`foreign_with`]), linked to the running proc's chain like
//! any segment (so `usage`, `max_stack` and overflow reports see it), with
//! the slot set to its limit: split-stack code called inside still grows
//! past it. The segment comes from the pool and goes back to it on return,
//! where it waits in the pool's per-size cache, guard page in place, for
//! the next call from any proc: after the first call, a crossing costs no
//! system call. Outside procs `f` simply runs on the thread's stack.
//!
//! Rejected: a per-proc foreign segment (a proc that calls C once would
//! keep 256 KiB); reusing `grow`'s spare (a foreign call would evict the
//! small spare a hot `grow` loop depends on).

use super::grow::{run_linked, running_chain};
use std::panic::resume_unwind;

/// Default size of the segment [`foreign`] runs code on: 256 KiB of address
/// space, of which only touched pages cost memory.
pub const FOREIGN_STACK: usize = 256 * 1024;

/// Runs `f` on a segment of [`FOREIGN_STACK`] bytes, for code that does not
/// check the stack (C libraries, most FFI). A panic in `f` continues in
/// the caller. Outside procs, `f` runs in place.
///
/// # Panics
///
/// When the segment would take the proc past its stack limit
/// (`Builder::max_stack`), or the pool has no memory left; and whenever
/// `f` panics.
///
/// ```
/// let n = procrt::run(|| {
///     // As if it were a C library that needs 32 KiB of stack.
///     procrt::stack::foreign(|| {
///         let buf = std::hint::black_box([7u8; 32 * 1024]);
///         buf.iter().map(|&b| b as usize).sum::<usize>()
///     })
/// });
/// assert_eq!(n, 7 * 32 * 1024);
/// ```
pub fn foreign<R, F: FnOnce() -> R>(f: F) -> R {
    foreign_with(FOREIGN_STACK, f)
}

/// [`foreign`] on a segment of `bytes` bytes of address space (rounded up
/// to a power of two; the guard page, the header and the limit margin come
/// out of it).
///
/// ```
/// let used = procrt::run(|| {
///     procrt::stack::foreign_with(1 << 20, || procrt::stack::usage().unwrap())
/// });
/// assert!(used.reserved_bytes >= 1 << 20);
/// ```
pub fn foreign_with<R, F: FnOnce() -> R>(bytes: usize, f: F) -> R {
    let Some(chain) = running_chain() else {
        return call_outlined(f);
    };
    let size = chain.pool().segment_size_for(bytes);
    let (seg, refused) = chain.take_exact(size);
    let out = run_linked(chain, seg, refused, f);
    chain.pop_to_pool();
    match out {
        Ok(v) => v,
        Err(payload) => resume_unwind(payload),
    }
}

/// Calls `f` in a frame of its own: inlined here, `f`'s locals (which
/// may be large: that is why it runs on a foreign segment) would swell
/// `foreign_with`'s own frame, which lives on the proc's small segment.
#[inline(never)]
fn call_outlined<R, F: FnOnce() -> R>(f: F) -> R {
    f()
}
