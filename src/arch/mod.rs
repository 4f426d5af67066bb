//! The context switch: one interface, one implementation per CPU.
//!
//! # Design
//!
//! A *context* is a stack plus the registers a callee must preserve. The
//! scheduler owns one context per proc and one for itself (the OS thread's
//! own stack, running `Runtime::block_on`'s loop). This module gives it:
//!
//! - [`Context`]: where a suspended context's state lives;
//! - [`Context::prepare`]: lay out a fresh proc's first frame so that the
//!   first switch into it lands in its entry function;
//! - [`switch`]: save the running context, resume another.
//!
//! On x86_64 and i686 Linux/glibc the switch is hand-written (`arch/*.s`,
//! read the header notes there): a context is one saved stack pointer, and
//! any context can switch straight to any other ([`DIRECT_SWITCH`] is true),
//! so a proc that blocks hands the CPU to the next proc without a trip
//! through the scheduler's stack. The split-stack limit slot of the TCB
//! (`%fs:0x70` / `%gs:0x30`) is saved and restored by the switch itself.
//!
//! The same files define `__morestack` and `__morestack_non_split`, which
//! code built with `-fsplit-stack` calls from its prologues when a frame
//! does not fit above the slot's limit; their header notes say what such a
//! prologue expects, what procrt provides and what it does not. The Rust
//! half is `src/stack/morestack.rs`.
//!
//! Elsewhere the same interface is built on `corosensei` (`fallback.rs`):
//! procs are coroutines, a proc can only switch to the scheduler and the
//! scheduler only to a proc ([`DIRECT_SWITCH`] is false), and there is no
//! stack-limit slot, hence no `__morestack`: code built with
//! `-fsplit-stack` does not link there.
//!
//! A spawn inside a proc runs the child at once, and the child often ends
//! before it blocks. [`start`] enters such a child without popping the
//! CPU's return-stack buffer, and a proc ends by returning from its entry
//! function with an [`Exit`] (made by [`exit`]) that names the context to
//! resume: the child's calls and returns balance, and the parent resumes
//! with predicted returns (see `arch/x86_64.s`, procrt_start). Such a
//! child's context is made by [`Context::unprepared`]: `start` is given
//! the child's stack top, entry and limit, and writes no first frame.
//!
//! Rejected: `swapcontext` (a system call per switch to save the signal
//! mask), and an inline `asm!` switch (the project keeps hand-written
//! routines in `arch/`, where their CFI can be documented and read).

#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "x86")
))]
mod native;
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "x86")
))]
pub(crate) use native::*;
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "x86")
))]
pub(crate) mod floor;

#[cfg(not(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "x86")
)))]
mod fallback;
#[cfg(not(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "x86")
)))]
pub(crate) use fallback::*;

/// The function a fresh proc starts in. It is given the argument passed to
/// [`Context::prepare`]; it returns when the proc has ended, with the
/// [`Exit`] made by [`exit`], which names the context to resume.
pub(crate) type EntryFn = unsafe extern "C" fn(arg: *mut u8) -> Exit;
