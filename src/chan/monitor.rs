//! Monitors and exit traps that deliver on channels.
//!
//! # Design
//!
//! The scheduler keeps each proc's monitors, links and trap, and sends the
//! `Down`s when the proc ends (see `src/sched/monitor.rs` for the
//! semantics and the approach). It sees a destination only as a
//! `DownSink`; this file, in the channel layer above it, makes a
//! `Sender<Down>` one. A sink delivers with `try_send`, so a proc that ends
//! never blocks on its monitors: a `Down` for a dropped receiver, or for a
//! full bounded channel, is dropped. Give monitors and traps an unbounded
//! [`channel`](super::channel), which never refuses one, as Erlang's
//! mailboxes never do.

use super::Sender;
use crate::sched::{add_monitor, set_trap, Down, DownSink, MonitorRef};
use crate::ProcId;

impl DownSink for Sender<Down> {
    fn deliver(&self, d: Down) {
        // Full or disconnected: dropped, as documented on `monitor`.
        let _ = self.try_send(d);
    }
}

/// Monitors proc `id`: one [`Down`] is sent on `to` when it ends, with the
/// reason it ended for; or at once, with
/// [`ExitReason::NoProc`](crate::ExitReason::NoProc), if it is not alive
/// (ended, never existed, or belongs to another runtime).
///
/// Each call makes a separate monitor, with its own `Down`. The `Down` is
/// sent with `try_send`, so the ending proc never waits: it is dropped if
/// the receiver is gone or a bounded channel is full (use an unbounded
/// [`channel`](super::channel)).
///
/// ```
/// use procrt::{chan::channel, monitor, spawn, Down, ExitReason};
/// procrt::run(|| {
///     let h = spawn(|| procrt::yield_now()).unwrap();
///     let (tx, rx) = channel();
///     monitor(h.id(), &tx);
///     assert_eq!(rx.recv().unwrap(), Down { id: h.id(), reason: ExitReason::Normal });
/// });
/// ```
///
/// # Panics
///
/// Outside a runtime.
pub fn monitor(id: ProcId, to: &Sender<Down>) -> MonitorRef {
    add_monitor(id, Box::new(to.clone()))
}

/// Sets how the calling proc takes exit signals from linked procs.
/// `Some(tx)`: every signal, a normal end included, arrives as a [`Down`]
/// on `tx` (sent with `try_send`: dropped if the receiver is gone or the
/// channel full), and the proc lives on. `None` (the default): a normal
/// end is ignored, any other ends the proc.
///
/// ```
/// use procrt::{chan::channel, link, spawn, trap_exits, ExitReason};
/// procrt::run(|| {
///     let (tx, rx) = channel();
///     trap_exits(Some(tx));
///     let h = spawn(|| {
///         procrt::yield_now();
///         panic!("boom");
///     })
///     .unwrap();
///     link(h.id());
///     let down = rx.recv().unwrap();
///     assert_eq!(down.id, h.id());
///     assert_eq!(down.reason, ExitReason::Panicked("boom".into()));
/// });
/// ```
///
/// # Panics
///
/// Outside a proc.
pub fn trap_exits(to: Option<Sender<Down>>) {
    set_trap(to.map(|tx| Box::new(tx) as Box<dyn DownSink>))
}
