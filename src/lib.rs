//! procrt: cheap green threads ("procs") on segmented stacks under a
//! single-threaded scheduler.
//!
//! ```
//! use procrt::{spawn, yield_now};
//!
//! let total = procrt::run(|| {
//!     let workers: Vec<_> = (0..4u64)
//!         .map(|i| spawn(move || { yield_now(); i * 10 }).unwrap())
//!         .collect();
//!     workers.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
//! });
//! assert_eq!(total, 60);
//! ```
//!
//! A proc is a control block plus a stack segment taken from a buddy
//! allocator over one big reservation of address space. Procs on one OS
//! thread are switched by hand-written assembly (`arch/x86_64.s`,
//! `arch/i686.s`) under one scheduler; closures need not be `Send`. A panic
//! in a proc is that proc's own: it reaches whoever joins it. A proc that
//! overflows its segment hits a guard page, and the process ends with a
//! message naming the proc.
//!
//! The layers, lowest first: [`arch`](crate) (the switch), [`stack`] (the
//! segment pool and growth), the scheduler ([`Runtime`], [`spawn`],
//! [`park`]), with Erlang's monitors and links ([`monitor`], [`link`],
//! [`trap_exits`]).
//!
//! # Limitations
//!
//! - Rust code makes no stack checks of its own: a proc's stack grows only
//!   where [`stack::grow`] is called (and at every runtime entry point).
//!   Code that needs more than its segment between two such points hits the
//!   guard page, which ends the process with a message naming the proc.
//! - `std::thread::panicking()` counts per OS thread, not per proc. While
//!   one proc is paused in the middle of unwinding (a destructor that
//!   blocks), the others see `panicking() == true`; a `std::sync::Mutex`
//!   guard they drop then is marked poisoned. Avoid blocking in destructors
//!   that may run during a panic.
//! - A blocking system call blocks every proc of the runtime: use the
//!   green sockets of [`net`], [`io::GreenFd`] for other fds, and
//!   [`spawn_blocking`] for calls with no readiness to wait on.
//! - Ending a proc is cooperative. An exit signal from a [`link`]ed proc
//!   unwinds its partner at a blocking point (`park`, `yield_now`, `join`,
//!   `spawn`, a channel wait); a proc that never blocks cannot be ended,
//!   and no other proc runs meanwhile.
//! - A proc that waits in a channel operation, a `select`, an I/O wait or
//!   `sleep` for longer than [`RuntimeBuilder::hibernate_after`] (half a
//!   second by default) has the live bytes of its stack moved to the heap
//!   and its stack pages given back, until the wake puts them back. Safe
//!   code cannot tell; `unsafe` code that lets another proc or thread touch
//!   a proc's stack memory while it waits there must set
//!   `hibernate_after(None)`. `park` and `join` never hibernate.

#![warn(missing_docs)]

pub mod actor;
mod arch;
pub mod chan;
mod error;
pub mod io;
pub mod net;
pub mod node;
mod sched;
pub mod stack;
pub mod toc;

/// Internals the crate's own benchmarks measure (`benches/switch.rs`); not
/// part of the API, and may change without notice.
#[doc(hidden)]
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "x86")
))]
pub mod __bench {
    pub use crate::arch::floor::{round_trips as switch_round_trips, Shape};
}

pub use chan::{monitor, trap_exits};
pub use error::{BuildError, JoinError, SpawnError, SpawnErrorKind};
pub use sched::{
    current, demonitor, handle, hibernated_procs, link, park, park_timeout, remote_unparker, run,
    sleep, sleep_until, spawn, spawn_blocking, try_current, unlink, unparker, yield_now, Builder,
    Down, ExitReason, Handle, JoinHandle, MonitorRef, ProcId, ProcInfo, RemoteUnparker, Runtime,
    RuntimeBuilder, Unparker, DEFAULT_HIBERNATE_AFTER, DEFAULT_IDLE_SPIN,
};

/// The README's code blocks, compiled and run by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Corrupted runtime state: print a named failure and abort. Never returns,
/// never unwinds (unwinding through a broken scheduler would make it worse).
#[cold]
pub(crate) fn fatal(args: std::fmt::Arguments<'_>) -> ! {
    eprintln!("procrt: fatal: {args}");
    std::process::abort()
}
