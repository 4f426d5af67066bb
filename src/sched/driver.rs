//! The scheduler's side of the I/O driver: where the run loop parks when
//! nothing is runnable, and what it polls while busy.
//!
//! # Design
//!
//! The scheduler never calls epoll itself: it calls [`Rt::idle`] when its
//! queues are empty and [`Rt::io_tick`] every `timer::CHECK_EVERY` picks
//! (with the timer check). Both go through the runtime's [`Driver`], which
//! opens nothing until first needed: a runtime whose procs never wait on an
//! fd nor hand out a [`Handle`](super::remote::Handle) makes no I/O syscall
//! and idles in `std::thread::sleep` as before.
//!
//! Once opened, the driver holds the [`Reactor`] (epoll) and the
//! [`Remote`] (injection queue + eventfd, registered in that epoll). Idle:
//! `epoll_wait` with the earliest timer's deadline as timeout (rounded *up*
//! to a millisecond, so the loop does not wake early and spin), then the
//! due timers fire. Busy: a non-blocking `epoll_wait` only when some proc
//! waits on an fd, and a drain of the injection queue only when its
//! `pending` flag is set; otherwise the tick costs two loads.
//!
//! ## Spinning before sleeping
//!
//! Going to sleep in `epoll_wait` and being woken costs a context switch
//! each way; on the test machine (a VM) a wake-up took about 25 µs, which
//! was most of an echo round trip over loopback with one connection. So
//! when the last wait was short (the next event is likely to come soon),
//! an idle runtime first *spins* for up to `idle_spin` (50 µs by default,
//! `RuntimeBuilder::idle_spin`): it polls with a zero timeout until an fd
//! is ready or another thread sent something, and sleeps only if nothing
//! came. Go's scheduler spins before it parks a thread for the same
//! reason. The rule "only after a wait shorter than the spin" keeps the
//! cost where it pays: a runtime whose events come further apart than the
//! spin never spins, so a quiet server burns nothing, and one spin of at
//! most 50 µs follows the end of a burst.
//!
//! Measured, `procrt-bench {procrt|tokio} echo 1` (the same procrt client,
//! which spins too, against either server; 5 interleaved runs, medians):
//! procrt's server 96.0k msg/s with a p99 of 13.3 µs, tokio's 44.7k msg/s
//! and 40.6 µs. Before the spin, procrt 15.3k msg/s and 110.7 µs, tokio
//! 14.7k and 119.1 µs. Spinning also saved CPU: the whole run (client and
//! server, 100k round trips) took 2.0 s of CPU instead of 5.7 s, because a
//! sleep and a wake-up cost more system time than the short spin. With
//! 100 and 1,000 connections a server is seldom idle; there the change
//! was within the noise (procrt/tokio 1.03x and 1.04x throughput, 0.75x
//! and 0.85x p99, 5 runs each).
//!
//! Deadlock: with no timer, no proc waiting on an fd, no queued message and
//! no `Handle` alive outside the runtime, nothing could ever wake a proc:
//! `idle` returns false and `block_on` panics as before. A `Handle` held
//! anywhere (a thread, a `spawn_blocking` job) means a wake may come, so
//! the runtime waits for it.

use super::remote::{Msg, Remote};
use super::runtime::{rt_ptr, Rt};
use crate::io::Reactor;
use std::cell::{Cell, OnceCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stack the busy-path poll makes sure of (it may spawn procs and print).
const TICK_STACK: usize = 32 * 1024;

/// The opened halves of a driver.
struct Opened {
    /// The epoll instance and fd registrations.
    reactor: Rc<Reactor>,
    /// The injection queue; its eventfd is registered in `reactor`.
    remote: Arc<Remote>,
}

/// A runtime's I/O driver, opened on first use.
pub(crate) struct Driver {
    /// Empty until a proc first waits on an fd or asks for a handle.
    opened: OnceCell<Opened>,
    /// Longest an idle runtime polls before it sleeps (see "Spinning
    /// before sleeping").
    idle_spin: Duration,
    /// How long the last idle wait (spin or sleep) lasted.
    last_wait: Cell<Duration>,
}

impl Driver {
    /// An unopened driver that spins up to `idle_spin`: no fds, no
    /// syscalls yet.
    pub(crate) const fn new(idle_spin: Duration) -> Driver {
        Driver {
            opened: OnceCell::new(),
            idle_spin,
            last_wait: Cell::new(Duration::MAX),
        }
    }

    /// Opens the eventfd and the epoll instance if not yet done.
    fn open(&self) -> io::Result<&Opened> {
        if let Some(o) = self.opened.get() {
            return Ok(o);
        }
        let remote = Arc::new(Remote::new()?);
        let reactor = Rc::new(Reactor::new(remote.wake_fd())?);
        Ok(self.opened.get_or_init(|| Opened { reactor, remote }))
    }

    /// The reactor, opened if needed.
    pub(crate) fn reactor(&self) -> io::Result<Rc<Reactor>> {
        self.open().map(|o| o.reactor.clone())
    }

    /// The injection queue, opened if needed.
    pub(crate) fn remote(&self) -> io::Result<Arc<Remote>> {
        self.open().map(|o| o.remote.clone())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(o) = self.opened.get() {
            // Handles that outlive the runtime now fail or do nothing.
            o.remote.close();
        }
    }
}

/// The reactor of the runtime running the calling proc: `None` outside a
/// proc (the caller then blocks the thread in `poll(2)`), an error if the
/// reactor cannot be opened.
pub(crate) fn current_reactor() -> Option<io::Result<Rc<Reactor>>> {
    let rt = rt_ptr();
    if rt.is_null() {
        return None;
    }
    // SAFETY: non-null CURRENT_RT: its runtime is alive on this thread.
    let rt = unsafe { &*rt };
    rt.current()?;
    Some(rt.driver().reactor())
}

/// `deadline - now` in whole milliseconds, rounded up, for `epoll_wait`.
fn timeout_ms(deadline: Instant, now: Instant) -> i32 {
    let d = deadline.saturating_duration_since(now);
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min(i32::MAX as u128) as i32
}

impl Rt {
    /// Run with the timer check while procs keep running: picks up I/O
    /// readiness and injected messages without blocking. Two loads when
    /// there is nothing to do.
    #[inline]
    pub(super) fn io_tick(&self) {
        if let Some(o) = self.driver().opened.get() {
            if o.reactor.waiting() > 0 || o.remote.is_pending() {
                self.io_tick_slow(o);
            }
        }
    }

    /// Runs inside `next_runnable`, on the stack of a proc that is
    /// switching away (or ending), which was only promised `ENTRY_STACK`
    /// bytes: spawning an injected proc needs more, so make sure of
    /// `TICK_STACK`. When no segment can be had for it, the poll waits for
    /// a later check, or for `idle` on the scheduler's own stack.
    #[cold]
    fn io_tick_slow(&self, o: &Opened) {
        let _ = crate::stack::try_grow(TICK_STACK, || {
            if o.reactor.waiting() > 0 {
                self.poll_reactor(o, 0);
            }
            if o.remote.is_pending() {
                self.drain_remote(o);
            }
        });
    }

    /// Nothing is runnable: wait in the driver until an fd is ready, a
    /// message comes from another thread, or the earliest timer is due;
    /// then fire due timers. Returns false when nothing can ever wake a
    /// proc (a deadlock).
    ///
    /// A due hibernation sweep (see `hibernate.rs`) shortens the wait, but
    /// never counts as something that could wake a proc.
    pub(super) fn idle(&self) -> bool {
        let deadline = self.next_deadline();
        let sweep = self.next_sweep();
        // The earlier of the timer and the sweep.
        let wake_at = match (deadline, sweep) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        };
        match self.driver().opened.get() {
            Some(o) => {
                let pending = o.remote.is_pending();
                let can_wake =
                    pending || o.reactor.waiting() > 0 || Arc::strong_count(&o.remote) > 1;
                if !can_wake && deadline.is_none() {
                    return false;
                }
                let timeout = |now| match wake_at {
                    _ if pending => 0,
                    Some(d) => timeout_ms(d, now),
                    None => -1,
                };
                if timeout(Instant::now()) == 0 || !self.spin_for_io(o, wake_at) {
                    // After a spin that found nothing, the time to the
                    // deadline is shorter by the spin.
                    let slept = Instant::now();
                    self.poll_reactor(o, timeout(slept));
                    self.driver().last_wait.set(slept.elapsed());
                }
                if o.remote.is_pending() {
                    self.drain_remote(o);
                }
            }
            None => {
                if deadline.is_none() {
                    return false;
                }
                let d = wake_at.expect("a timer is armed");
                let now = Instant::now();
                if d > now {
                    std::thread::sleep(d - now);
                }
            }
        }
        if sweep.is_some() || deadline.is_some() {
            let now = Instant::now();
            self.sweep_if_due(now, usize::MAX);
            if deadline.is_some() {
                self.fire_timers(now);
            }
        }
        true
    }

    /// Before sleeping: polls without blocking for up to `idle_spin`, if the
    /// last wait was shorter than that and something could come (a proc
    /// waits on an fd, or another thread holds a handle); stops at
    /// `wake_at`. True when a proc became runnable or a message came.
    fn spin_for_io(&self, o: &Opened, wake_at: Option<Instant>) -> bool {
        let d = self.driver();
        let spin = d.idle_spin;
        if spin.is_zero()
            || d.last_wait.get() >= spin
            || (o.reactor.waiting() == 0 && Arc::strong_count(&o.remote) <= 1)
        {
            return false;
        }
        let start = Instant::now();
        let until = wake_at.map_or(start + spin, |d| d.min(start + spin));
        loop {
            self.poll_reactor(o, 0);
            if self.has_runnable() || o.remote.is_pending() {
                d.last_wait.set(start.elapsed());
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// One `epoll_wait`; wakes the procs whose fds became ready.
    fn poll_reactor(&self, o: &Opened, timeout_ms: i32) {
        match o.reactor.poll(timeout_ms) {
            Ok(true) => o.remote.clear_wake_fd(),
            Ok(false) => {}
            // EBADF, EFAULT, EINVAL: the reactor's own state is broken.
            Err(e) => crate::fatal(format_args!("epoll_wait failed: {e}")),
        }
    }

    /// Runs every message queued by other threads.
    fn drain_remote(&self, o: &Opened) {
        o.remote.drain(|m| match m {
            Msg::Wake(id) => {
                if let Some(p) = self.lookup(id) {
                    self.wake(p);
                }
            }
            Msg::Spawn(f) => {
                if let Err(e) = self.spawn_queued(f) {
                    eprintln!("procrt: a proc spawned from another thread could not start: {e}");
                }
            }
        });
    }
}
