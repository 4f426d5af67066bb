//! The hand-written switch of `arch/x86_64.s` and `arch/i686.s`.

use super::EntryFn;
use std::cell::Cell;

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(include_str!("../../arch/x86_64.s"), options(att_syntax));
#[cfg(target_arch = "x86")]
std::arch::global_asm!(include_str!("../../arch/i686.s"), options(att_syntax));

extern "C" {
    /// `arch/*.s`: save the running context, store its stack pointer in
    /// `*save_sp`, resume the context whose saved stack pointer is `new_sp`.
    fn procrt_switch(save_sp: *mut usize, new_sp: usize);
    /// `arch/*.s`: save the running context like `procrt_switch`, and enter
    /// a fresh proc with no frame, which runs `entry(arg)` from `top` with
    /// the stack limit `limit`, leaving the caller's return address on the
    /// return-stack buffer.
    fn procrt_start(save_sp: *mut usize, top: usize, entry: EntryFn, arg: *mut u8, limit: usize);
    /// `arch/*.s`: the first code a fresh proc runs. Never called from Rust;
    /// only its address is taken.
    fn procrt_proc_entry();
    /// `arch/*.s`: run `f(arg)` with the stack pointer at `sp`.
    fn procrt_call_on_segment(arg: *mut u8, f: unsafe extern "C" fn(*mut u8), sp: usize);
}

/// Runs `f(arg)` on the stack whose top is `top` (and lowest usable
/// address `bottom`), then returns on the current stack.
///
/// # Safety
///
/// `top` must be 16-byte aligned, `[bottom, top)` a stack nothing else
/// uses, and `f` must not unwind.
#[inline(always)]
pub(crate) unsafe fn call_on_segment(
    arg: *mut u8,
    f: unsafe extern "C" fn(*mut u8),
    top: usize,
    bottom: usize,
) {
    let _ = bottom;
    // SAFETY: forwarded to the caller; procrt_call_on_segment preserves
    // every callee-saved register and returns on the caller's stack.
    unsafe { procrt_call_on_segment(arg, f, top) }
}

/// Any context may switch straight to any other.
pub(crate) const DIRECT_SWITCH: bool = true;

/// Default MXCSR: all exceptions masked, round to nearest.
const MXCSR_DEFAULT: u32 = 0x1f80;
/// Default x87 control word: all exceptions masked, 64-bit precision, round
/// to nearest.
const FPU_CW_DEFAULT: u32 = 0x037f;

/// Words in a suspended context's frame (see the diagrams in `arch/*.s`).
#[cfg(target_arch = "x86_64")]
const FRAME_WORDS: usize = 9;
#[cfg(target_arch = "x86")]
const FRAME_WORDS: usize = 8;
/// Index of the stack-limit word in a suspended frame.
#[cfg(all(test, target_arch = "x86_64"))]
const LIMIT_WORD: usize = 1;
#[cfg(all(test, target_arch = "x86"))]
const LIMIT_WORD: usize = 2;

/// A suspended context: the stack pointer `procrt_switch` stored for it.
///
/// The running context's `sp` is stale; it is written by the switch that
/// suspends it.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// Saved stack pointer of the suspended context; 0 before the first
    /// switch away from it.
    sp: Cell<usize>,
}

impl Context {
    /// A context for the code that is running now (the scheduler's own
    /// stack): it gets its state when it first switches away.
    pub(crate) fn current() -> Self {
        Self::default()
    }

    /// Lays out a fresh proc on the stack below `top`, so that the first
    /// [`switch`] into it calls `entry(arg)` with the stack limit slot set to
    /// `limit`.
    ///
    /// # Safety
    ///
    /// `top` must be 16-byte aligned, and the `FRAME_WORDS` words below it
    /// must be writable memory of a stack that nothing else uses.
    pub(crate) unsafe fn prepare(top: usize, limit: usize, entry: EntryFn, arg: *mut u8) -> Self {
        debug_assert_eq!(top % 16, 0, "proc stack top not 16-byte aligned");
        let w = std::mem::size_of::<usize>();
        let sp = top - FRAME_WORDS * w;
        let frame = sp as *mut usize;
        let fp_ctrl = MXCSR_DEFAULT as u64 | ((FPU_CW_DEFAULT as u64) << 32);
        #[cfg(target_arch = "x86_64")]
        let words: [usize; FRAME_WORDS] = [
            fp_ctrl as usize,
            limit,
            0,                                       // r15
            0,                                       // r14
            0,                                       // r13
            arg as usize,                            // r12
            entry as *const () as usize,             // rbx
            0,                                       // rbp
            procrt_proc_entry as *const () as usize, // return address
        ];
        #[cfg(target_arch = "x86")]
        let words: [usize; FRAME_WORDS] = [
            fp_ctrl as u32 as usize,  // MXCSR
            (fp_ctrl >> 32) as usize, // x87 CW
            limit,
            0,                                       // edi
            arg as usize,                            // esi
            entry as *const () as usize,             // ebx
            0,                                       // ebp
            procrt_proc_entry as *const () as usize, // return address
        ];
        // SAFETY: the caller guarantees the FRAME_WORDS words below `top`
        // are ours to write; `sp` is word-aligned because `top` is.
        unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), frame, FRAME_WORDS) };
        Context { sp: Cell::new(sp) }
    }
}

impl Context {
    /// A context for a fresh proc that only [`start`] enters (a spawn that
    /// runs its child at once), which is then given the same arguments.
    /// Nothing is written: `procrt_start` sets up from those arguments what
    /// a prepared frame would hold, and the context gets its saved stack
    /// pointer when the proc first switches away.
    ///
    /// # Safety
    ///
    /// As [`prepare`](Self::prepare), whose arguments these are.
    #[inline(always)]
    pub(crate) unsafe fn unprepared(
        top: usize,
        limit: usize,
        entry: EntryFn,
        arg: *mut u8,
    ) -> Self {
        let _ = (top, limit, entry, arg);
        Self::default()
    }

    /// The stack pointer saved for a suspended (or prepared) context;
    /// `None` while none is (the scheduler's context before it first
    /// switches away).
    #[inline]
    pub(crate) fn saved_sp(&self) -> Option<usize> {
        let sp = self.sp.get();
        (sp != 0).then_some(sp)
    }

    /// Hints the CPU to bring the top of this suspended context's stack
    /// into the cache: the four lines from its saved stack pointer up,
    /// which hold the switch frame (`FRAME_WORDS` words and the return
    /// address) and the frames of the blocking call above it (a channel
    /// `recv`: about 250 bytes in all). A woken proc is usually switched to
    /// a hundred or more instructions later, and with thousands of procs
    /// its stack has left the cache meanwhile: in the `ring` benchmark
    /// (10,000 procs) these misses were most of a hop's time.
    ///
    /// Two lines were enough until a proc's entry function began to
    /// return (see `procrt_proc_entry`): its frames moved and the blocking
    /// frames of a `recv` reached a third and fourth line. `ring`, 15
    /// interleaved runs: 26.7 ns per hop before that change, 33.4 ns after
    /// it with two lines, 27.8 ns with four; `pingpong` (everything
    /// cached) measured the same with two and four.
    #[inline(always)]
    pub(crate) fn prefetch(&self) {
        // SAFETY: a prefetch is a hint: it never faults, whatever the
        // address, and changes no architectural state.
        unsafe {
            std::arch::asm!(
                "prefetcht0 [{sp}]",
                "prefetcht0 [{sp} + 64]",
                "prefetcht0 [{sp} + 128]",
                "prefetcht0 [{sp} + 192]",
                sp = in(reg) self.sp.get(),
                options(nostack, readonly, preserves_flags)
            )
        };
    }
}

/// Suspends the running context into `from` and resumes `to`. Returns when
/// some context switches back to `from`.
///
/// # Safety
///
/// `from` must describe the running context, `to` a suspended one (prepared
/// or switched away from) whose stack is still alive, and neither may be
/// moved or freed while suspended.
#[inline(always)]
pub(crate) unsafe fn switch(from: &Context, to: &Context) {
    // SAFETY: per this function's contract `to.sp` is the saved stack
    // pointer of a live suspended context; `from.sp` is a valid place to
    // store ours. procrt_switch preserves every callee-saved register, so to
    // the compiler it is an ordinary call.
    unsafe { procrt_switch(from.sp.as_ptr(), to.sp.get()) }
}

/// Suspends the running context into `from` and enters the fresh proc
/// `to`, made by [`Context::unprepared`] with the same arguments, for a
/// parent that waits while its child runs (a spawn). `procrt_start` builds
/// the child's first state from the arguments, and keeps the parent's
/// return address on the return-stack buffer, so that a child that ends
/// without blocking hands the CPU back with predicted returns (see
/// `arch/*.s`). Returns when some context switches back to `from`.
///
/// # Safety
///
/// `from` must describe the running context; `to` a fresh context that
/// never ran, made by `Context::unprepared(top, limit, entry, arg)` with
/// these arguments, whose contract they must meet; neither context may be
/// moved or freed while suspended.
#[inline(always)]
pub(crate) unsafe fn start(
    from: &Context,
    to: &Context,
    top: usize,
    limit: usize,
    entry: EntryFn,
    arg: *mut u8,
) {
    // `to` gets its saved stack pointer when the child first switches
    // away (through its own `&Context`); nothing to read from it here.
    let _ = to;
    // SAFETY: `from.sp` is a valid place to store the running context's
    // stack pointer; `top`, `limit`, `entry` and `arg` describe a stack
    // nothing else uses and a valid entry (the contract of `unprepared`,
    // which is `prepare`'s). procrt_start preserves every callee-saved
    // register of the caller, which resumes as from an ordinary call.
    unsafe { procrt_start(from.sp.as_ptr(), top, entry, arg, limit) }
}

/// What a proc's entry function returns when the proc has ended: the
/// saved stack pointer of the context to resume, which `procrt_proc_entry`
/// switches to (the second half of a switch: nothing resumes the ended
/// proc, so its state is not saved).
#[repr(transparent)]
pub(crate) struct Exit(usize);

/// Ends the running context `from` for good, handing the CPU to `to`:
/// returns the [`Exit`] that the proc's entry function returns.
///
/// # Safety
///
/// `from` is the running proc, which has ended: nothing on its stack is
/// used again once its entry function returns. `to` is a live suspended
/// context.
#[inline(always)]
pub(crate) unsafe fn exit(from: &Context, to: &Context) -> Exit {
    let _ = from;
    Exit(to.sp.get())
}

/// The stack pointer.
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer register; touches no memory.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: as above.
    #[cfg(target_arch = "x86")]
    unsafe {
        std::arch::asm!("mov {}, esp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

/// Reads the split-stack limit slot of this thread's TCB.
#[inline(always)]
pub(crate) fn stack_limit() -> usize {
    let v: usize;
    // SAFETY: on x86_64 glibc, %fs points at the thread's TCB and 0x70 is
    // `__private_ss`, a word reserved for split-stack limits; reading it
    // has no side effects.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0x70]", out(reg) v, options(nostack, readonly, preserves_flags))
    };
    // SAFETY: on i386 glibc, %gs points at the thread's TCB and 0x30 is
    // `__private_ss`; reading it has no side effects.
    #[cfg(target_arch = "x86")]
    unsafe {
        std::arch::asm!("mov {}, dword ptr gs:[0x30]", out(reg) v, options(nostack, readonly, preserves_flags))
    };
    v
}

/// Writes the split-stack limit slot of this thread's TCB.
///
/// # Safety
///
/// `limit` must describe the stack that is running (or be 0, "no limit
/// known"): split-stack code trusts it.
#[inline(always)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) unsafe fn set_stack_limit(limit: usize) {
    // SAFETY: `__private_ss` (%fs:0x70) is reserved for exactly this value;
    // glibc itself never reads it.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov qword ptr fs:[0x70], {}", in(reg) limit, options(nostack, preserves_flags))
    };
    // SAFETY: `__private_ss` (%gs:0x30) is reserved for exactly this value.
    #[cfg(target_arch = "x86")]
    unsafe {
        std::arch::asm!("mov dword ptr gs:[0x30], {}", in(reg) limit, options(nostack, preserves_flags))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_slot_reads_back_what_was_written() {
        let saved = stack_limit();
        // SAFETY: no split-stack code runs on this thread during the test,
        // and the old value is put back.
        unsafe { set_stack_limit(0x1234_5670) };
        assert_eq!(stack_limit(), 0x1234_5670);
        // SAFETY: as above.
        unsafe { set_stack_limit(saved) };
    }

    #[test]
    fn switch_saves_and_restores_the_limit_slot() {
        extern "C" fn body(arg: *mut u8) -> Exit {
            // SAFETY: `arg` points at the two contexts in the test's frame,
            // which outlives this coroutine; the test switches back at once.
            let (main, me) = unsafe { &*(arg as *const (Context, Context)) };
            let seen = stack_limit();
            // SAFETY: the slot is restored by the switch back.
            unsafe { set_stack_limit(seen + 16) };
            // SAFETY: `main` is suspended in the test; `me` is running.
            unsafe { switch(me, main) };
            unreachable!("resumed a finished test context");
        }
        let mut stack = vec![0u128; 1024];
        let top = (stack.as_mut_ptr() as usize + 1024 * 16) & !15;
        let saved = stack_limit();
        let mut pair = (Context::current(), Context::default());
        // SAFETY: `stack` is ours, 16 KiB, and outlives the context.
        pair.1 = unsafe { Context::prepare(top, 0xabc0, body, &pair as *const _ as *mut u8) };
        // SAFETY: `pair.0` is the running context, `pair.1` freshly prepared.
        unsafe { switch(&pair.0, &pair.1) };
        assert_eq!(stack_limit(), saved, "outgoing limit restored");
        let sp = pair.1.sp.get();
        // The suspended frame holds the proc's own limit, changed by it.
        // SAFETY: the suspended context's frame lies in `stack`.
        let frame_limit =
            unsafe { *((sp + std::mem::size_of::<usize>() * LIMIT_WORD) as *const usize) };
        assert_eq!(frame_limit, 0xabc0 + 16);
    }

    #[test]
    fn start_enters_a_fresh_proc_with_its_limit_and_the_parent_gets_its_own_back() {
        /// What the child saw, and where the two contexts are.
        struct Seen {
            contexts: Cell<*const (Context, Context)>,
            limit: Cell<usize>,
            sp: Cell<usize>,
        }
        extern "C" fn body(arg: *mut u8) -> Exit {
            // SAFETY: `arg` is the test's `Seen`, and `contexts` points at
            // the test's pair; both outlive the child, which returns
            // before the test goes on.
            let seen = unsafe { &*(arg as *const Seen) };
            // SAFETY: as above.
            let (parent, me) = unsafe { &*seen.contexts.get() };
            seen.limit.set(stack_limit());
            seen.sp.set(stack_pointer());
            // SAFETY: this child is running and ends here; the parent is
            // suspended in `start`.
            unsafe { exit(me, parent) }
        }
        let mut stack = vec![0u128; 1024];
        let top = (stack.as_mut_ptr() as usize + 1024 * 16) & !15;
        let seen = Seen {
            contexts: Cell::new(std::ptr::null()),
            limit: Cell::new(0),
            sp: Cell::new(0),
        };
        let arg = &seen as *const Seen as *mut u8;
        let saved = stack_limit();
        // SAFETY: `stack` is ours, 16 KiB, 16-byte aligned at `top`, and
        // outlives the child, which ends before `start` returns; `body`
        // takes `arg` as the `Seen` it is.
        let pair = (Context::current(), unsafe {
            Context::unprepared(top, 0xabc0, body, arg)
        });
        assert_eq!(pair.1.saved_sp(), None, "nothing was written");
        seen.contexts.set(&pair);
        // SAFETY: `pair.0` is the running context; `pair.1` was made by
        // `unprepared` with these arguments and never ran.
        unsafe { start(&pair.0, &pair.1, top, 0xabc0, body, arg) };
        assert_eq!(seen.limit.get(), 0xabc0, "the child runs with its limit");
        let sp = seen.sp.get();
        assert!(
            sp < top && sp > top - 8192,
            "the child ran on its stack: {sp:#x}, top {top:#x}"
        );
        assert_eq!(stack_limit(), saved, "the parent's limit is back");
        drop(stack);
    }
}
