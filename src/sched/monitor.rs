//! Monitors and links: Erlang's way of learning that a proc ended, and of
//! ending procs together.
//!
//! # Design
//!
//! ## Concepts
//!
//! - A **monitor** is one-way and one-shot: [`monitor(id, &tx)`](crate::chan::monitor)
//!   sends one [`Down`] `{ id, reason }` on `tx` when proc `id` ends, or at
//!   once, with [`ExitReason::NoProc`], when `id` is not alive.
//!   [`demonitor`] takes it back. The watcher need not be a proc: it is
//!   whoever holds the receiver.
//! - A **link** is two-way and lasts until one side ends or calls
//!   [`unlink`]. When a linked proc ends, its partner gets an *exit signal*
//!   carrying the reason. By default, a `Normal` reason is ignored and any
//!   other reason ends the partner, whose reason becomes
//!   [`ExitReason::Linked`] `{ by, reason }` and whose `JoinHandle` says
//!   [`JoinError::Exited`](crate::JoinError::Exited). A proc that
//!   [traps exits](crate::chan::trap_exits) gets every exit signal, `Normal` ones too, as
//!   a `Down` message on its channel instead, and lives on.
//! - `Linked { by, reason }` names the partner whose end ended this proc
//!   (`by`) and the *original* reason (`reason`, never itself `Linked`):
//!   in a chain A-B-C where C panics, A ends with
//!   `Linked { by: B, reason: Panicked(..) }`. Erlang passes the reason on
//!   unchanged in the same way. Doing so also keeps every reason at most
//!   two levels deep, so a chain of a million links costs no deep clone and
//!   no deep drop.
//! - [`link`] to a proc that is not alive acts as if the proc had just
//!   ended with `NoProc`, as in Erlang: a trapping caller gets
//!   `Down { id, reason: NoProc }`; any other caller is ended at once
//!   (`link` does not return) with `Linked { by: id, reason: NoProc }`.
//!   Linking to itself, or twice to the same proc, does nothing.
//!
//! ## Layers
//!
//! The scheduler keeps the per-proc state (monitors, links, traps, the
//! pending exit signal) and delivers at a proc's end; it knows a monitor's
//! destination only as a type-erased [`DownSink`]. The public calls that
//! take a channel, [`monitor`](crate::chan::monitor) and
//! [`trap_exits`](crate::chan::trap_exits), live in the channel layer
//! (`src/chan/monitor.rs`), which wraps a `Sender<Down>` into a sink. So
//! the scheduler names no channel type, and the layers stay ordered.
//!
//! ## Approach
//!
//! *Finding a proc by id.* A [`ProcId`] is the pair (process-wide sequence
//! number, slot in the runtime's table of live procs). The slot finds the
//! entry in O(1), and the sequence number tells whether the entry is still
//! that proc. The sequence number is 64 bits and never reused, so an id is
//! unique for the life of the process and across runtimes: an id from
//! another runtime, or of a proc that ended, finds nothing, and the proc
//! counts as not alive. Spawn already took a number and a slot; now
//! `new_proc` enters the proc in the live table between allocating the
//! control block and writing it, so the id it writes can name the slot.
//!
//! *Per-proc state.* A control block carries one `Option<Box<Watch>>`,
//! `None` for a proc that no monitor, link or trap touches: spawn stores a
//! null pointer, and the end of the proc loads it once. The box holds the
//! proc's monitors (by monitor number, so `Down`s go out in the order the
//! monitors were made), its partners (by id: a link holds no count on the
//! partner's control block), its trap channel, and a pending exit signal.
//! It is dropped again when it empties.
//!
//! *Cost.* The id is 16 bytes (was 8), `JoinError` 32 (was 16: `Exited`
//! carries a reason), and the control block has one more word. An empty
//! spawn+join still runs fewer instructions than before, 668 against 692
//! under callgrind: the live-table entry is made inside `new_proc` in one
//! pass, and the control block's drop skips the `watch` (`ManuallyDrop`:
//! every end of a proc takes it). Taking the slot first in a separate step,
//! or peeking at the free list, measured 1.5 to 3 ns slower.
//!
//! *Delivery.* Everything runs on one thread, so signals are delivered
//! synchronously at the moment a proc ends: the ending proc sends its
//! `Down`s and walks its partners. Signals between two procs therefore keep
//! the order they were sent in. An ending proc sends its monitors' `Down`s
//! first, in the order the monitors were made, then its exit signals, to
//! partners in the order they were spawned. `Down`s are sent with `try_send`, so an
//! ending proc never blocks: a `Down` to a dropped receiver, or to a full
//! bounded channel, is dropped. Give monitors and traps an unbounded
//! [`channel`](crate::chan::channel), which never refuses one.
//!
//! *Ending a partner* reuses the cancellation machinery (see `mod.rs`).
//! The exit signal stores the pending reason in the partner's box, sets its
//! `cancel` flag, and wakes it if it is parked. Every blocking point
//! (`park`, `park_timeout`, `sleep`, `yield_now`, `join`, `spawn`, and so
//! every channel operation that waits) already checks that flag, and the
//! runtime's `cancel_point` raises a private panic payload (`LinkExit`,
//! distinct from the runtime drop's `Cancelled`). The payload unwinds the
//! proc's stack, so its destructors run, and the proc's base records it as
//! `JoinError::Exited`. A proc killed before it started never runs its
//! closure (only possible where `spawn` queues the child: the fallback
//! targets without direct switching). The blocking points cost nothing new: they test the same flag.
//! The flag is cleared when the payload is raised, so destructors that
//! block while the proc unwinds block normally.
//!
//! ## Limits
//!
//! - Cooperative: a proc is ended only at a blocking point. A signal comes
//!   from another proc, which runs only while the target is suspended in a
//!   blocking call, so the target unwinds as soon as it runs again. But a
//!   proc that never blocks keeps every other proc, and so every signal,
//!   from running: nothing can end it.
//! - An exit signal ends a proc once. A proc that catches the unwinding
//!   with `catch_unwind` lives on, and later signals are ignored.
//! - A signal that finds the thread panicking (`std::thread::panicking`,
//!   which counts every proc's unwinding; see the crate's limitations) is
//!   dropped instead of raised: raising a second panic during an unwind
//!   would abort the process. The proc it was meant for is usually the one
//!   unwinding, and it ends with its own panic.
//! - A proc can now be unwound out of any blocking call while its runtime
//!   runs on (before, only during a drop). Code that registers a wait
//!   (a waiter queue entry) before it parks must withdraw it on unwind too,
//!   or the stale entry may swallow a wake-up meant for another waiter.
//! - While a runtime is being dropped, every proc ends `Cancelled`.
//!   Monitors and trapping procs still get their `Down`s, but signals no
//!   longer end partners, so no reason depends on the order of the drop.
//! - A monitor whose receiver is gone still holds its `Sender` until its
//!   proc ends or it is demonitored. Monitors made by a proc are not taken
//!   back when that proc ends (they belong to the channel, not the proc).
//!
//! Rejected:
//! - A `HashMap<ProcId, ProcRef>`: it would hash on every spawn and on
//!   every reap, and spawn+join is the price of a proc.
//! - Packing the slot into the low bits of a 64-bit id: the counter bits
//!   left over (40 for 16M live procs) wrap after about 10^12 spawns, a
//!   day of spawning on one core, and ids would repeat.
//! - Keeping `ProcRef`s (counts) in the link sets: each link would pin its
//!   partner's control block, and a proc that ended would have to be
//!   visited to drop them. Ids look the partner up again when needed.
//! - Delivering signals with a blocking `send`: an ending proc could then
//!   wait for a full channel forever, and its joiner with it. Erlang's
//!   mailboxes are unbounded; an unbounded channel is the match.
//! - Ending a partner at once, from the ending proc: a proc cannot unwind
//!   another proc's stack, and dropping it without unwinding would skip
//!   its destructors.

use super::proc::{Proc, ProcId, ProcRef};
use super::runtime::{with_rt, Rt};
use crate::error::{payload_str, JoinError};
use crate::stack;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Monitor numbers, process-wide: a [`MonitorRef`] names one monitor of
/// one proc, whichever runtime it is used in.
static NEXT_MONITOR: AtomicU64 = AtomicU64::new(1);

/// Why a proc ended, as told by a [`Down`] or by
/// [`JoinError::Exited`](crate::JoinError::Exited).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// It returned.
    Normal,
    /// It panicked, with this message (`"Box<dyn Any>"` when the payload
    /// was not a string, as std prints it).
    Panicked(String),
    /// Its runtime was dropped before it finished.
    Cancelled,
    /// A linked proc ended abnormally, and this proc did not trap exits.
    Linked {
        /// The linked proc whose end ended this one.
        by: ProcId,
        /// Why that proc ended, passed on unchanged along a chain of links:
        /// never itself `Linked`.
        reason: Box<ExitReason>,
    },
    /// The proc was not alive when it was monitored or linked to.
    NoProc,
    /// The proc ran on another node, and the link to that node closed (the
    /// node died, or the link broke or was refused) before the proc was
    /// known to end; the text says why the link closed. Only remote
    /// monitors (`procrt::node`) report it.
    NodeDown(String),
}

impl ExitReason {
    /// True for [`ExitReason::Normal`].
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }

    /// The original cause: the `reason` inside [`ExitReason::Linked`], or
    /// `self` for any other reason.
    pub fn root(&self) -> &ExitReason {
        let mut r = self;
        while let ExitReason::Linked { reason, .. } = r {
            r = reason;
        }
        r
    }

    /// The reason of a proc whose closure ended with `e` (`None`: it
    /// returned).
    pub(crate) fn of(e: Option<&JoinError>) -> ExitReason {
        match e {
            None => ExitReason::Normal,
            Some(JoinError::Panicked(p)) => {
                ExitReason::Panicked(payload_str(&**p).unwrap_or("Box<dyn Any>").to_owned())
            }
            Some(JoinError::Cancelled) => ExitReason::Cancelled,
            Some(JoinError::Exited(r)) => r.clone(),
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => write!(f, "returned normally"),
            ExitReason::Panicked(m) => write!(f, "panicked: {m}"),
            ExitReason::Cancelled => write!(f, "cancelled: its runtime was dropped"),
            ExitReason::Linked { by, reason } => {
                write!(f, "ended by linked proc {by}, which {reason}")
            }
            ExitReason::NoProc => write!(f, "was not alive"),
            ExitReason::NodeDown(why) => {
                write!(f, "is out of reach: its node's link closed ({why})")
            }
        }
    }
}

/// The message a monitor (or a trapped exit signal) delivers: proc `id`
/// ended, for `reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    /// The proc that ended.
    pub id: ProcId,
    /// Why it ended.
    pub reason: ExitReason,
}

/// Where a monitor's (or a trap's) `Down`s go: a destination that takes a
/// `Down` at once, without blocking, or drops it. Implemented by the
/// channel layer for `Sender<Down>` (with `try_send`).
pub(crate) trait DownSink {
    /// Delivers `d`, or drops it if the destination is gone or full.
    fn deliver(&self, d: Down);
}

/// Names one monitor, for [`demonitor`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MonitorRef {
    /// The monitored proc.
    proc: ProcId,
    /// The monitor's number, its key in that proc's `Watch`.
    n: u64,
}

impl MonitorRef {
    /// The monitored proc's id.
    pub fn id(&self) -> ProcId {
        self.proc
    }
}

/// The monitor and link state of one proc, boxed in its control block only
/// while there is some.
#[derive(Default)]
pub(crate) struct Watch {
    /// This proc's monitors, by number: each gets one `Down` when it ends.
    monitors: BTreeMap<u64, Box<dyn DownSink>>,
    /// The procs linked with this one.
    links: BTreeSet<ProcId>,
    /// Where exit signals go while this proc traps exits.
    trap: Option<Box<dyn DownSink>>,
    /// An exit signal that ends this proc at its next blocking point.
    pending: Option<ExitReason>,
}

impl Watch {
    fn is_empty(&self) -> bool {
        self.monitors.is_empty()
            && self.links.is_empty()
            && self.trap.is_none()
            && self.pending.is_none()
    }
}

/// The panic payload that unwinds a proc ended by a linked proc.
pub(crate) struct LinkExit(pub(crate) ExitReason);

/// Runs `f` on `p`'s watch, made if it has none and dropped if `f` leaves
/// it empty. `f` must not touch `p`'s watch itself (it is out of the cell
/// meanwhile); nothing here runs user code.
fn update<R>(p: &Proc, f: impl FnOnce(&mut Watch) -> R) -> R {
    let mut w = p.watch.take().unwrap_or_default();
    let r = f(&mut w);
    if !w.is_empty() {
        p.watch.set(Some(w));
    }
    r
}

/// Takes the pending exit signal of `p`, for the runtime's `cancel_point`.
pub(crate) fn take_pending(p: &Proc) -> Option<ExitReason> {
    let w = p.watch.take()?;
    let mut w = w;
    let r = w.pending.take();
    if !w.is_empty() {
        p.watch.set(Some(w));
    }
    r
}

/// Whether an exit signal waits for `p`, which is about to start with its
/// `cancel` flag set (only a signal sets it outside a drop).
#[cold]
#[inline(never)]
pub(crate) fn exit_pending(p: &Proc) -> bool {
    let w = p.watch.take();
    let pending = w.as_ref().is_some_and(|w| w.pending.is_some());
    p.watch.set(w);
    pending
}

/// The pending exit signal of a proc that is about to start (see
/// `exit_pending`): it ends with this reason without running its closure.
pub(crate) fn exit_before_start(p: &Proc) -> ExitReason {
    p.cancel.set(false);
    take_pending(p).expect("procrt: no pending exit signal")
}

/// Sends the exit signal of proc `from`, which ended for `reason` (or was
/// not alive: `NoProc`), to its partner `to`: a `Down` if `to` traps exits,
/// else a pending exit unless `reason` is normal. Returns true when `to` is
/// to be ended.
fn exit_signal(rt: &Rt, to: ProcRef, from: ProcId, reason: &ExitReason) -> bool {
    let tp = to.get();
    let end = update(tp, |w| {
        w.links.remove(&from);
        if let Some(tx) = &w.trap {
            tx.deliver(Down {
                id: from,
                reason: reason.clone(),
            });
            return false;
        }
        if reason.is_normal() || rt.shutting_down() || tp.cancel_raised.get() || w.pending.is_some()
        {
            // Normal exits do not end partners; during a drop every proc
            // ends Cancelled; a proc already unwinding ends once.
            return false;
        }
        w.pending = Some(ExitReason::Linked {
            by: from,
            reason: Box::new(reason.root().clone()),
        });
        true
    });
    if end {
        tp.cancel.set(true);
        if tp.state.get().is_parked() {
            rt.wake(to);
        }
    }
    end
}

/// Proc `me` ended for `reason`: sends its `Down`s and its exit signals.
/// Called once per proc, by the proc itself after its closure ended, or by
/// the runtime's drop for a proc it ends without running. Runs no user
/// code and never blocks.
#[cold]
#[inline(never)]
pub(crate) fn proc_ended(rt: &Rt, me: ProcRef, w: Box<Watch>, reason: ExitReason) {
    stack::grow(stack::ENTRY_STACK, move || {
        let id = me.get().id;
        let Watch {
            monitors,
            links,
            trap,
            pending: _,
        } = *w;
        drop(trap);
        for (_, tx) in monitors {
            tx.deliver(Down {
                id,
                reason: reason.clone(),
            });
        }
        for partner in links {
            if let Some(p) = rt.lookup(partner) {
                exit_signal(rt, p, id, &reason);
            }
        }
    })
}

/// Monitors proc `id` on behalf of `crate::chan::monitor`: `to` gets one
/// `Down` when the proc ends, or at once (`NoProc`) if it is not alive.
///
/// # Panics
///
/// Outside a runtime.
pub(crate) fn add_monitor(id: ProcId, to: Box<dyn DownSink>) -> MonitorRef {
    with_rt("monitor", |rt| {
        stack::grow(stack::ENTRY_STACK, || {
            let n = NEXT_MONITOR.fetch_add(1, Ordering::Relaxed);
            match rt.lookup(id) {
                Some(p) => update(p.get(), |w| {
                    w.monitors.insert(n, to);
                }),
                None => to.deliver(Down {
                    id,
                    reason: ExitReason::NoProc,
                }),
            }
            MonitorRef { proc: id, n }
        })
    })
}

/// Takes a monitor back: no `Down` is sent for it from now on. A `Down`
/// already sent stays in the channel. Does nothing if the proc has ended.
///
/// # Panics
///
/// Outside a runtime.
pub fn demonitor(m: MonitorRef) {
    with_rt("demonitor", |rt| {
        stack::grow(stack::ENTRY_STACK, || {
            if let Some(p) = rt.lookup(m.proc) {
                let tx = update(p.get(), |w| w.monitors.remove(&m.n));
                drop(tx);
            }
        })
    })
}

/// Links the calling proc with proc `id`, both ways: when either ends with
/// a reason other than [`ExitReason::Normal`], the other is ended too
/// (at its next blocking point; its `JoinHandle` then yields
/// [`JoinError::Exited`](crate::JoinError::Exited) with
/// [`ExitReason::Linked`]), unless it [traps exits](crate::chan::trap_exits).
///
/// If `id` is not alive, this acts as if it had just ended with
/// [`ExitReason::NoProc`]: a trapping caller gets that `Down`; any other
/// caller is ended here and now (`link` does not return). Linking to
/// itself or to a proc already linked does nothing.
///
/// Ending is cooperative: a proc is ended at a blocking point (`park`,
/// `yield_now`, `join`, `spawn`, a channel wait...), and a proc that never
/// blocks cannot be ended; see the crate's limitations.
///
/// # Panics
///
/// Outside a proc.
pub fn link(id: ProcId) {
    with_rt("link", |rt| {
        let me = rt.current().expect("procrt: link called outside a proc");
        stack::grow(stack::ENTRY_STACK, || {
            let my_id = me.get().id;
            if id == my_id {
                return;
            }
            match rt.lookup(id) {
                Some(p) => {
                    update(p.get(), |w| w.links.insert(my_id));
                    update(me.get(), |w| w.links.insert(id));
                }
                None => {
                    if exit_signal(rt, me, id, &ExitReason::NoProc) {
                        rt.cancel_point(me);
                    }
                }
            }
        })
    })
}

/// Removes the link between the calling proc and proc `id`, both ways, if
/// there is one. Afterwards no exit signal of `id` reaches the caller. A
/// trapping caller may already hold a `Down` from `id` in its channel.
///
/// # Panics
///
/// Outside a proc.
pub fn unlink(id: ProcId) {
    with_rt("unlink", |rt| {
        let me = rt.current().expect("procrt: unlink called outside a proc");
        stack::grow(stack::ENTRY_STACK, || {
            let my_id = me.get().id;
            update(me.get(), |w| w.links.remove(&id));
            if let Some(p) = rt.lookup(id) {
                update(p.get(), |w| w.links.remove(&my_id));
            }
        })
    })
}

/// Sets the calling proc's trap, on behalf of `crate::chan::trap_exits`.
///
/// # Panics
///
/// Outside a proc.
pub(crate) fn set_trap(to: Option<Box<dyn DownSink>>) {
    with_rt("trap_exits", |rt| {
        let me = rt
            .current()
            .expect("procrt: trap_exits called outside a proc");
        let old = update(me.get(), |w| std::mem::replace(&mut w.trap, to));
        drop(old);
    })
}
