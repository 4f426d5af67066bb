//! Procs and the single-threaded scheduler.
//!
//! # Design
//!
//! A proc is a control block ([`proc::Proc`]) plus a stack segment. The
//! control block lives in one heap allocation together with the proc's
//! typed result slot, counted by hand between the runtime, the proc's
//! `JoinHandle` and its `Unparker`s. The closure is not boxed: spawn writes
//! it at the top of the proc's fresh segment; a child that is queued gets
//! its first switch frame below it, and one that runs at once (a spawn
//! inside a proc) is entered without one (`arch::start`). So a spawn costs
//! one small allocation and, with a warm segment cache, no system call.
//!
//! One OS thread runs one runtime. Switching is *direct*: a proc that blocks
//! picks the next runnable proc itself and switches straight to it (one
//! switch, not two through a scheduler stack); only when nothing is runnable
//! does it switch to the thread's own stack, where `block_on` waits. A proc
//! that ends cannot free the stack it runs on, so it leaves itself as the
//! runtime's *zombie*, and whichever context runs next reaps it.
//!
//! ## Scheduling policy
//!
//! Two queues:
//! - **LIFO** for procs that were spawned or woken: pushed and popped at the
//!   front. `spawn` from a proc goes further and starts the child at once,
//!   the parent waiting at the LIFO front. Fan-out therefore runs
//!   depth-first: in skynet (a 10-ary tree of a million leaves) a parent's
//!   child runs to completion, or to its first block, before the next child
//!   is spawned, so the live stacks are about one root-to-leaf path, not a
//!   million (the note's frugality; a FIFO here would hold every leaf's
//!   stack at once and hit `vm.max_map_count` in guarded mode).
//! - **FIFO** for procs that yielded: pushed at the back.
//!
//! The next proc is the LIFO front, except that after 61 consecutive LIFO
//! picks one pick goes to the FIFO's head, or, if no proc yielded, to the
//! oldest started proc at the LIFO's back. So a proc that yields runs again
//! within 62 picks whatever the others do (round robin among yielders), and
//! a busy ping-pong pair cannot starve a woken proc forever.
//!
//! Procs woken by the I/O driver (their fd became ready) go to the back of
//! the FIFO, like yielders: they are served in the order their fds became
//! ready, and a stream of new readiness cannot starve older waiters (see
//! `io/driver.rs`). Timer and channel wakes stay LIFO.
//!
//! A wake (into either queue) prefetches the top of the woken proc's
//! stack, where its switch frame lies: by the time the proc is switched
//! to, a hundred or more instructions later, the lines are on their way.
//! With thousands of procs the stacks do not stay in the cache, and in the
//! `ring` benchmark (10,000 procs) those misses were most of a hop
//! (71.5 ns/hop without, 28.3 ns with).
//!
//! Rejected: Go's single `runnext` slot plus FIFO: it runs fan-out
//! breadth-first (every leaf of skynet spawned before the first one ends);
//! a spawn that only queues the child: a proc spawning 100k children before
//! joining any holds 100k stacks.
//!
//! ## Cancellation
//!
//! Dropping a runtime marks every live proc cancelled and resumes each
//! started one; the blocking call it was in (`park`, `yield_now`, `join`,
//! `spawn`) raises a private panic payload that unwinds its stack to the
//! proc's base, where it is recorded as [`JoinError::Cancelled`](crate::JoinError).
//! The same flag and blocking points end a proc whose linked partner ended
//! abnormally, with a payload of its own ([`JoinError::Exited`](crate::JoinError));
//! see `monitor.rs`.

mod blocking;
mod blocks;
mod driver;
mod handle;
mod hibernate;
mod monitor;
mod proc;
mod queue;
mod remote;
mod runtime;
mod timer;

pub use blocking::spawn_blocking;
pub(crate) use driver::current_reactor;
pub use handle::{
    current, hibernated_procs, park, park_timeout, run, sleep, sleep_until, spawn, try_current,
    unparker, yield_now, Builder, JoinHandle, ProcInfo, Unparker,
};
pub(crate) use handle::{park_resting, rest, rest_until};
pub use hibernate::DEFAULT_HIBERNATE_AFTER;
pub(crate) use monitor::{add_monitor, set_trap, DownSink};
pub use monitor::{demonitor, link, unlink, Down, ExitReason, MonitorRef};
pub use proc::ProcId;
pub use remote::{handle, remote_unparker, Handle, RemoteUnparker};
pub use runtime::{Runtime, RuntimeBuilder, DEFAULT_IDLE_SPIN};

use crate::stack::SignalBuf;
use std::fmt::Write as _;

/// The stack layer's overflow `Reporter`: is
/// `addr` the guard page of the running proc's segment? Runs in a signal
/// handler: reads thread-locals and the control block, allocates nothing.
pub(crate) fn report_overflow(addr: usize, out: &mut [u8]) -> Option<usize> {
    let rt = runtime::rt_ptr();
    if rt.is_null() {
        return None;
    }
    // SAFETY: non-null CURRENT_RT: the runtime is alive on this thread.
    let me = unsafe { (*rt).current() }?;
    let p = me.get();
    let seg = p.chain.current();
    let (lo, hi) = seg.guard_range();
    if addr < lo || addr >= hi {
        return None;
    }
    let mut w = SignalBuf::new(out);
    let _ = write!(w, "procrt: stack overflow in proc {}", p.id);
    if let Some(name) = &p.name {
        let _ = write!(w, " '{name}'");
    }
    let _ = writeln!(
        w,
        ": guard page hit at {addr:#x}, below its {}-byte segment ({} bytes usable); aborting",
        seg.size(),
        seg.usable()
    );
    Some(w.len())
}
