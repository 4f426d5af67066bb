//! Timers: parking with a deadline.
//!
//! # Design
//!
//! A proc that parks with a deadline pushes `(deadline, seq, proc)` on the
//! runtime's binary min-heap and records `seq` as its armed timer. Firing
//! pops every entry whose deadline has passed; an entry wakes its proc only
//! if the proc still has that `seq` armed and is still parked. A proc that
//! is woken some other way (or ends) simply disarms (`timer = 0`), and its
//! stale entry is dropped when it comes up: cancellation is lazy, O(1), and
//! never fires for a proc that went away. Each entry holds a count on its
//! proc's control block until it is popped.
//!
//! When timers are checked: whenever the scheduler's own stack runs out of
//! runnable procs (it then sleeps until the earliest deadline: an idle
//! runtime burns no CPU), and every `CHECK_EVERY` picks while procs keep
//! running, so a sleeper is not starved by busy procs.
//!
//! The idle wait is the I/O driver's `epoll_wait`, with the deadline as its
//! timeout (or `std::thread::sleep` while the driver is unopened); see
//! `driver.rs`.
//!
//! Rejected: a timer wheel (cheaper inserts, but coarse and more code; the
//! heap is O(log n) and exact); eager removal (needs an index per entry).

use super::proc::ProcRef;
use std::cmp::Ordering;
use std::time::Instant;

/// While procs keep running, timers are checked once per this many picks.
pub(crate) const CHECK_EVERY: u32 = 64;

/// One armed (or stale) timer.
pub(crate) struct Entry {
    /// When it fires.
    pub(crate) deadline: Instant,
    /// Which arming of the proc's timer this is; ties broken by it too.
    pub(crate) seq: u64,
    /// The proc to wake; the entry holds a count on it.
    pub(crate) proc: ProcRef,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

impl Entry {
    /// Wakes the proc if this entry is still its armed timer; returns the
    /// proc to wake. Releases the entry's count either way.
    pub(crate) fn fire(self) -> Option<ProcRef> {
        let p = self.proc.get();
        let due = p.timer.get() == self.seq && p.state.get().is_parked();
        if due {
            p.timer.set(0);
            p.timed_out.set(true);
        }
        let proc = self.proc;
        // SAFETY: the count this entry took when it was pushed; the proc is
        // still referenced by the runtime if `due` (it is parked, so live).
        unsafe { proc.release() };
        due.then_some(proc)
    }
}
