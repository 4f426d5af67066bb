//! The run queues: intrusive doubly linked lists of procs.
//!
//! # Design
//!
//! A runnable proc sits in exactly one of the runtime's two queues (LIFO or
//! FIFO, see the policy in `mod.rs`), so its control block carries the one
//! pair of links both queues use ([`Link`]). Pushing and popping is a few
//! loads and stores: no capacity check, no ring-buffer index arithmetic,
//! no allocation, which matters because every park, wake and spawn goes
//! through here. The queue needs the front (LIFO push/pop, FIFO pop), the
//! back (FIFO push, and the fairness pick of the oldest LIFO entry), and
//! nothing in the middle: a proc leaves a queue only by being popped.
//!
//! # Ownership
//!
//! Queue entries hold no count: the runtime's own count on every live proc
//! keeps the control block alive while it is queued (a queued proc is
//! Runnable, hence not Done, hence not reaped).
//!
//! # Invariants
//! - `head` is `None` exactly when `tail` is.
//! - Following `next` from `head` reaches `tail` and visits every entry
//!   once; `prev` links are the reverse.
//! - A proc's links are meaningful only while it is queued; they are
//!   rewritten on every push.

use super::proc::ProcRef;
use std::cell::Cell;

/// The links a proc has while it is queued.
#[derive(Default)]
pub(crate) struct Link {
    next: Cell<Option<ProcRef>>,
    prev: Cell<Option<ProcRef>>,
}

/// A queue of runnable procs, open at both ends.
#[derive(Default)]
pub(crate) struct RunQueue {
    head: Cell<Option<ProcRef>>,
    tail: Cell<Option<ProcRef>>,
}

impl RunQueue {
    /// Puts `p`, which is in no queue, at the front.
    #[inline(always)]
    pub(crate) fn push_front(&self, p: ProcRef) {
        let l = &p.get().link;
        let old = self.head.replace(Some(p));
        l.prev.set(None);
        l.next.set(old);
        match old {
            Some(o) => o.get().link.prev.set(Some(p)),
            None => self.tail.set(Some(p)),
        }
    }

    /// Puts `p`, which is in no queue, at the back.
    #[inline(always)]
    pub(crate) fn push_back(&self, p: ProcRef) {
        let l = &p.get().link;
        let old = self.tail.replace(Some(p));
        l.next.set(None);
        l.prev.set(old);
        match old {
            Some(o) => o.get().link.next.set(Some(p)),
            None => self.head.set(Some(p)),
        }
    }

    /// Takes the front entry.
    #[inline(always)]
    pub(crate) fn pop_front(&self) -> Option<ProcRef> {
        let p = self.head.get()?;
        let next = p.get().link.next.get();
        self.head.set(next);
        match next {
            Some(n) => n.get().link.prev.set(None),
            None => self.tail.set(None),
        }
        Some(p)
    }

    /// Takes the back entry.
    pub(crate) fn pop_back(&self) -> Option<ProcRef> {
        let p = self.tail.get()?;
        let prev = p.get().link.prev.get();
        self.tail.set(prev);
        match prev {
            Some(n) => n.get().link.next.set(None),
            None => self.head.set(None),
        }
        Some(p)
    }

    /// The back entry, left in place.
    pub(crate) fn back(&self) -> Option<ProcRef> {
        self.tail.get()
    }

    /// Whether the queue holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.get().is_none()
    }

    /// Whether the queue holds at least two entries.
    pub(crate) fn has_two(&self) -> bool {
        self.head.get() != self.tail.get()
    }

    /// Forgets every entry (the procs' links are left stale: they are
    /// rewritten when a proc is pushed again).
    pub(crate) fn clear(&self) {
        self.head.set(None);
        self.tail.set(None);
    }
}
