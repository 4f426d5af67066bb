//! The Rust half of `__morestack`: growth decided by compiled prologues.
//!
//! # Design
//!
//! Code built with `-fsplit-stack` (gcc, clang) checks its own frame
//! against the TCB slot in every prologue and calls `__morestack` (in
//! `arch/*.s`, whose notes give the protocol) when the frame does not fit.
//! That routine saves the caller's argument registers and calls
//! [`procrt_morestack_acquire`] here, on the old segment, which takes a
//! segment from the running proc's [`Chain`](super::Chain) exactly as
//! [`grow`](super::grow) does (the spare when it fits, else a fresh one
//! twice the current size, within the proc's `max_stack`), copies the
//! caller's stack-passed arguments to its top and sets the slot to its
//! limit. When the function body returns, [`procrt_morestack_release`]
//! unlinks it (it becomes the spare: a hot split costs no allocation), and
//! `__morestack` restores the slot it saved on entry.
//!
//! Stack budget: these functions run on the old segment, which the
//! prologue found too small, while the stack pointer may lie up to 272
//! bytes below the slot (264 on i686). The slot therefore sits
//! [`LIMIT_MARGIN`](super::LIMIT_MARGIN) above the segment's bottom,
//! enough for that slack, `__morestack`'s frame and this code (the role of
//! libgcc's `BACKOFF`).
//!
//! Unwinding: `__morestack` has a landing pad that calls
//! [`procrt_morestack_unwind`], which unlinks the segment and resumes the
//! unwind. A Rust panic can cross split C code when the C is built with
//! unwind tables (`-fexceptions` or `-funwind-tables`) and the Rust
//! declarations are `extern "C-unwind"`.
//!
//! Outside procs there is no chain: acquire returns 0 and `__morestack`
//! runs the body in place (the slot is 0 on such stacks, so that is only
//! reached when something else wrote the slot).
//!
//! Failures: over `max_stack` the process ends with a message (see
//! below); when the pool itself has no segment left, the panic this code
//! raises cannot unwind out of an `extern "C"` function, so the process
//! aborts with that message too.
//!
//! Rejected: a separate pool or segment cache for split code (one chain per
//! proc keeps `max_stack`, `usage` and the pool's accounting true for both
//! kinds of growth); raising a panic when split code goes over `max_stack`
//! (split C code's callers do not expect to be unwound: the process ends
//! with a message instead, as on a stack overflow).

use super::grow::running_chain;
use super::Segment;
use crate::arch;

/// Bytes a new segment needs beyond the frame and the arguments: the
/// return address the body's `call` pushes, and the 16-byte alignment of
/// the copied arguments.
const CALL_SLACK: usize = 32;

/// Called by `__morestack` (`arch/*.s`) on the old segment: links a
/// segment with room for `frame` bytes plus `args_size` bytes of arguments
/// copied from `args`, sets the slot to its limit and returns the stack
/// pointer the body starts at (the copied arguments, 16-aligned). Returns
/// 0 outside procs: `__morestack` then runs the body in place.
///
/// `boundary` is a stack pointer on the old segment, recorded in the new
/// segment's header for [`usage`](super::usage).
///
/// # Safety
///
/// Called only by `__morestack`, with `[args, args + args_size)` the
/// caller's stack arguments.
#[no_mangle]
unsafe extern "C" fn procrt_morestack_acquire(
    frame: usize,
    args: *const u8,
    args_size: usize,
    boundary: usize,
) -> usize {
    let Some(chain) = running_chain() else {
        return 0;
    };
    let bytes = frame.saturating_add(args_size).saturating_add(CALL_SLACK);
    let (seg, refused) = match chain.take_spare(bytes) {
        Some(s) => (s, None),
        None => chain.fresh_segment(bytes),
    };
    if let Some(msg) = refused {
        over_limit(seg, msg);
    }
    chain.push(seg, boundary);
    let sp = (seg.top() - args_size) & !15;
    // SAFETY: 1. `args` holds `args_size` readable bytes (the contract).
    // 2. `[sp, sp + args_size)` lies below the top of a segment just
    // linked, which nothing else uses. 3. the two are on different
    // segments, so they do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(args, sp as *mut u8, args_size) };
    // SAFETY: the slot now describes the segment __morestack moves to
    // before anything else runs.
    unsafe { arch::set_stack_limit(seg.limit()) };
    sp
}

/// Called by `__morestack` on the new segment once the body returned:
/// unlinks the segment, which becomes the chain's spare (so it stays mapped
/// while this runs on it). `__morestack` restores the slot.
#[no_mangle]
extern "C" fn procrt_morestack_release() {
    match running_chain() {
        Some(chain) => chain.pop(),
        None => crate::fatal(format_args!("__morestack: release outside a proc")),
    }
}

extern "C-unwind" {
    /// libgcc's unwinder (libgcc_s): continue a phase-2 unwind from the
    /// caller's frame.
    fn _Unwind_Resume(exception: *mut u8) -> !;
}

/// `__morestack`'s landing pad: an exception or a panic is unwinding
/// through a split frame. Unlinks the segment when one was `linked` (the
/// slot is already restored) and resumes the unwind.
///
/// # Safety
///
/// Called only by `__morestack`'s landing pad with the exception object
/// the unwinder handed it.
#[no_mangle]
unsafe extern "C-unwind" fn procrt_morestack_unwind(exception: *mut u8, linked: usize) -> ! {
    if linked != 0 {
        procrt_morestack_release();
    }
    // SAFETY: `exception` is the object of the unwind in progress, as the
    // landing-pad protocol requires; our frame's CFI is valid here.
    unsafe { _Unwind_Resume(exception) }
}

/// Ends the process: split code asked for more stack than the proc's
/// `max_stack` allows. The message is printed on the overdraft segment
/// `seg` (the old one is nearly full).
#[cold]
fn over_limit(seg: Segment, msg: String) -> ! {
    /// Prints the message and aborts.
    ///
    /// # Safety
    ///
    /// `arg` points at a live `String`.
    unsafe extern "C" fn say(arg: *mut u8) {
        // SAFETY: `arg` is the message below, alive for the call.
        let msg = unsafe { &*(arg as *const String) };
        crate::fatal(format_args!("{msg} (in code built with -fsplit-stack)"));
    }
    let mut msg = msg;
    // SAFETY: `seg` is a fresh segment nothing else uses, its top 16-byte
    // aligned; `say` never returns, let alone unwinds.
    unsafe {
        arch::call_on_segment(
            (&mut msg as *mut String).cast(),
            say,
            seg.top(),
            seg.bottom(),
        )
    };
    unreachable!("procrt: fatal returned");
}
