//! `Select`: wait until one of several channel operations can proceed.
//!
//! # Design
//!
//! A [`Select`] holds receive and send cases. [`Select::ready`] returns the
//! index of a case whose operation would not block now (a receive finds a
//! message or a disconnected channel; a send finds room or a gone
//! receiver), and the caller then performs it with `try_recv`/`try_send`.
//! Everything runs on one thread, and nothing else runs between `ready`
//! returning and that call, so the readiness cannot go stale: the
//! operation succeeds (or reports the disconnection). This is crossbeam's
//! `Select::ready` model, without its races to handle.
//!
//! When no case is ready, the proc registers itself on every channel (as
//! the waiting receiver, or in the senders' queue), parks (until a
//! deadline, for [`ready_timeout`](Select::ready_timeout)), and withdraws
//! from all of them when woken, then looks again. Among ready cases the
//! choice is fair: each call starts scanning at a rotating index, so cases
//! that stay ready are taken round robin.
//!
//! One caveat for rendezvous channels (`sync_channel(0)`): while a select
//! waits on such a receiver, it counts as a receiver waiting, so a sender
//! may hand it a message; if the select then takes another case, that
//! message stays queued for the next receive.

use super::{Receiver, Sender};
use crate::sched::{rest, rest_until, unparker};
use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

/// One case, type-erased.
trait Case {
    /// Whether the operation would not block now.
    fn ready(&self) -> bool;
    /// Registers the calling proc to be woken when it may become ready.
    fn register(&self);
    /// Withdraws the calling proc's registration (`id` is its id).
    fn unregister(&self, id: crate::ProcId);
    /// This case was ready but another was chosen: pass on any wake-up it
    /// may have consumed.
    fn pass_on(&self) {}
}

struct RecvCase<'a, T>(&'a Receiver<T>);
struct SendCase<'a, T>(&'a Sender<T>);

impl<T> Case for RecvCase<'_, T> {
    fn ready(&self) -> bool {
        self.0.recv_ready()
    }
    fn register(&self) {
        self.0.add_recv_waiter();
    }
    fn unregister(&self, _id: crate::ProcId) {
        self.0.remove_recv_waiter();
    }
}

impl<T> Case for SendCase<'_, T> {
    fn ready(&self) -> bool {
        self.0.send_ready()
    }
    fn register(&self) {
        self.0.add_send_waiter(unparker());
    }
    fn unregister(&self, id: crate::ProcId) {
        self.0.remove_send_waiter(id);
    }
    fn pass_on(&self) {
        self.0.pass_on_room();
    }
}

thread_local! {
    /// Where the next scan starts (rotated on every scan, for fairness).
    static ROTATE: Cell<usize> = const { Cell::new(0) };
}

/// Waits for one of several receive and send operations.
///
/// ```
/// use procrt::chan::{channel, Select};
/// procrt::run(|| {
///     let (tx1, rx1) = channel::<u32>();
///     let (tx2, rx2) = channel::<&str>();
///     tx2.send("hello").unwrap();
///     let mut sel = Select::new();
///     let a = sel.recv(&rx1);
///     let b = sel.recv(&rx2);
///     let i = sel.ready();
///     assert_eq!(i, b);
///     assert_eq!(rx2.try_recv(), Ok("hello"));
///     drop((tx1, a));
/// });
/// ```
#[derive(Default)]
pub struct Select<'a> {
    cases: Vec<Box<dyn Case + 'a>>,
}

/// [`Select::ready_timeout`] found no case ready in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyTimeoutError;

impl fmt::Display for ReadyTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no select case became ready before the timeout")
    }
}

impl std::error::Error for ReadyTimeoutError {}

impl<'a> Select<'a> {
    /// An empty select.
    pub fn new() -> Self {
        Select { cases: Vec::new() }
    }

    /// Adds a receive case; returns its index.
    pub fn recv<T>(&mut self, rx: &'a Receiver<T>) -> usize {
        self.cases.push(Box::new(RecvCase(rx)));
        self.cases.len() - 1
    }

    /// Adds a send case; returns its index.
    pub fn send<T>(&mut self, tx: &'a Sender<T>) -> usize {
        self.cases.push(Box::new(SendCase(tx)));
        self.cases.len() - 1
    }

    /// The index of a ready case, if any, scanning from a rotating start.
    pub fn try_ready(&mut self) -> Option<usize> {
        let n = self.cases.len();
        if n == 0 {
            return None;
        }
        let start = ROTATE.with(|r| {
            let v = r.get();
            r.set(v.wrapping_add(1));
            v % n
        });
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.cases[i].ready())
    }

    /// Parks until some case is ready; returns its index. Perform the
    /// operation right away with `try_recv`/`try_send`: it will not block.
    ///
    /// # Panics
    ///
    /// With no cases (it would wait forever), or when it would have to park
    /// outside a proc.
    pub fn ready(&mut self) -> usize {
        assert!(
            !self.cases.is_empty(),
            "procrt: Select::ready with no cases"
        );
        let mut waited = false;
        loop {
            if let Some(i) = self.try_ready() {
                if waited {
                    self.pass_on_others(i);
                }
                return i;
            }
            self.wait(None);
            waited = true;
        }
    }

    /// After a wait: the wake-up that ended it may have been meant to hand
    /// this select room on a send case it is not taking; pass those on.
    fn pass_on_others(&self, chosen: usize) {
        for (j, c) in self.cases.iter().enumerate() {
            if j != chosen && c.ready() {
                c.pass_on();
            }
        }
    }

    /// Like [`ready`](Self::ready), but waits at most `timeout`.
    ///
    /// # Panics
    ///
    /// When it would have to park outside a proc.
    pub fn ready_timeout(&mut self, timeout: Duration) -> Result<usize, ReadyTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut waited = false;
        loop {
            if let Some(i) = self.try_ready() {
                if waited {
                    self.pass_on_others(i);
                }
                return Ok(i);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) || self.cases.is_empty() {
                return Err(ReadyTimeoutError);
            }
            self.wait(deadline);
            waited = true;
        }
    }

    /// Registers on every case, parks, withdraws from every case.
    fn wait(&self, deadline: Option<Instant>) {
        /// Withdraws from every case when dropped, also when unwinding out
        /// of `park` (the proc was ended by a link or cancelled).
        struct Withdraw<'s, 'a>(&'s Select<'a>, crate::ProcId);
        impl Drop for Withdraw<'_, '_> {
            fn drop(&mut self) {
                for c in &self.0.cases {
                    c.unregister(self.1);
                }
            }
        }
        let id = unparker().id();
        for c in &self.cases {
            c.register();
        }
        let _withdraw = Withdraw(self, id);
        match deadline {
            Some(d) => {
                rest_until(d);
            }
            None => rest(),
        }
    }
}

impl fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select")
            .field("cases", &self.cases.len())
            .finish()
    }
}
