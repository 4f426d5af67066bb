//! Property test of channel semantics against a model.
//!
//! Each case builds 1 to 3 channels (unbounded, or bounded 0 to 3), sender
//! procs that run random programs of `send` / `try_send` / `yield_now` /
//! "drop my sender for channel c", and one receiver proc per channel that
//! runs a random prefix of `recv` / `try_recv` / `recv_timeout` /
//! `yield_now` and then either drains until disconnected or drops its
//! receiver early. The procs are spawned in a random order in a fresh
//! runtime.
//!
//! Every channel operation appends an event to one shared log right after
//! it returns. Nothing in between can switch procs (a proc switches only
//! inside a blocking call, and a send that queued a message returns without
//! switching), so the log is the order in which the channel operations took
//! effect. Replaying it against a model of each channel (a FIFO, a count of
//! live senders, whether the receiver lives) checks:
//!
//! - every message received is the oldest one sent successfully and not yet
//!   received: none lost, duplicated or reordered (per sender in
//!   particular); a bounded channel never holds more than its bound;
//! - `send` / `try_send` fail with `Disconnected` exactly when the receiver
//!   is gone, giving the message back; `try_send` says `Full` on a bounded
//!   channel only when it holds its bound;
//! - `recv` / `try_recv` / `recv_timeout` report disconnection exactly when
//!   every sender is gone and the queue is empty, and `Empty` / `Timeout`
//!   only while the queue is empty and a sender lives;
//! - a receiver that drained until disconnected received every message sent
//!   successfully;
//! - every message is dropped exactly once, the ones queued when the
//!   receiver goes as the receiver goes;
//! - no deadlock (`block_on` would panic) and no proc panics.
//!
//! No deadlock by construction: receivers hold no senders, senders hold no
//! receivers, and the root holds neither while it joins. A sender parked on
//! channel c waits for c's receiver, which either drains c (making room, or
//! for a rendezvous waiting in `recv`, which wakes it) or drops it (failing
//! the send); a receiver parked in `recv` on c has an empty c, so no sender
//! of c is parked on c, and every sender's program is finite.

use procrt::chan::{
    channel, sync_channel, Receiver, RecvTimeoutError, SendError, Sender, TryRecvError,
    TrySendError,
};
use procrt::{spawn, yield_now, Runtime};
use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

/// A channel's capacity: `None` unbounded, `Some(n)` `sync_channel(n)`.
type Bound = Option<usize>;

/// One step of a sender proc. Channel numbers are taken modulo the number
/// of channels; a step on a channel the proc holds no sender for is skipped.
#[derive(Clone, Debug)]
enum SendOp {
    Send(usize),
    TrySend(usize),
    Yield,
    /// Drop this proc's sender for the channel.
    Drop(usize),
}

/// One step of a receiver proc, before it drains or drops.
#[derive(Clone, Debug)]
enum RecvOp {
    Recv,
    TryRecv,
    /// `recv_timeout` of this many milliseconds.
    RecvTimeout(u64),
    Yield,
}

#[derive(Clone, Debug)]
struct SenderSpec {
    /// Which channels (by number) it holds a sender for.
    holds: [bool; 3],
    ops: Vec<SendOp>,
}

#[derive(Clone, Debug)]
struct ReceiverSpec {
    ops: Vec<RecvOp>,
    /// Drop the receiver after `ops` instead of draining until disconnected.
    drop_early: bool,
}

#[derive(Clone, Debug)]
struct Case {
    bounds: Vec<Bound>,
    senders: Vec<SenderSpec>,
    /// One per channel.
    receivers: Vec<ReceiverSpec>,
    /// The order in which procs are spawned: `0..senders.len()` are sender
    /// procs, the rest receiver procs.
    spawn_order: Vec<usize>,
}

/// A message: which sender, which channel, which of its sends; and a guard
/// that logs the message's drop.
struct Msg {
    id: MsgId,
    _guard: DropLog,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct MsgId {
    sender: usize,
    chan: usize,
    seq: usize,
}

struct DropLog {
    id: MsgId,
    log: Log,
}

impl Drop for DropLog {
    fn drop(&mut self) {
        self.log.borrow_mut().push(Event::MsgDropped(self.id));
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Event {
    SendOk(MsgId),
    /// `send` failed; the message it gave back.
    SendErr(MsgId),
    TrySendOk(MsgId),
    TrySendFull(MsgId),
    TrySendDisconnected(MsgId),
    /// Sender proc `.0` dropped its sender for channel `.1`.
    SenderDropped(usize, usize),
    /// A receive on channel `.0` returned the message.
    Received(usize, MsgId),
    /// A receive on the channel reported disconnection.
    Disconnected(usize),
    /// `try_recv` on the channel said `Empty`.
    Empty(usize),
    /// `recv_timeout` on the channel said `Timeout`.
    Timeout(usize),
    /// The channel's receiver was dropped.
    ReceiverDropped(usize),
    MsgDropped(MsgId),
}

type Log = Rc<RefCell<Vec<Event>>>;

fn push(log: &Log, e: Event) {
    log.borrow_mut().push(e);
}

fn bound() -> impl Strategy<Value = Bound> {
    prop_oneof![Just(None), (0usize..=3).prop_map(Some)]
}

fn send_op() -> impl Strategy<Value = SendOp> {
    prop_oneof![
        6 => (0usize..3).prop_map(SendOp::Send),
        2 => (0usize..3).prop_map(SendOp::TrySend),
        2 => Just(SendOp::Yield),
        1 => (0usize..3).prop_map(SendOp::Drop),
    ]
}

fn recv_op() -> impl Strategy<Value = RecvOp> {
    prop_oneof![
        4 => Just(RecvOp::Recv),
        3 => Just(RecvOp::TryRecv),
        2 => (0u64..=2).prop_map(RecvOp::RecvTimeout),
        2 => Just(RecvOp::Yield),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=3, 1usize..=4)
        .prop_flat_map(|(nchan, nsend)| {
            (
                prop::collection::vec(bound(), nchan),
                prop::collection::vec(
                    (
                        prop::array::uniform3(prop::bool::weighted(0.8)),
                        prop::collection::vec(send_op(), 0..16),
                    )
                        .prop_map(|(holds, ops)| SenderSpec { holds, ops }),
                    nsend,
                ),
                prop::collection::vec(
                    (
                        prop::collection::vec(recv_op(), 0..8),
                        prop::bool::weighted(0.25),
                    )
                        .prop_map(|(ops, drop_early)| ReceiverSpec { ops, drop_early }),
                    nchan,
                ),
                Just((0..nsend + nchan).collect::<Vec<_>>()).prop_shuffle(),
            )
        })
        .prop_map(|(bounds, senders, receivers, spawn_order)| Case {
            bounds,
            senders,
            receivers,
            spawn_order,
        })
}

/// A sender proc: runs its program, logging each operation's outcome.
fn run_sender(me: usize, spec: SenderSpec, mut txs: Vec<Option<Sender<Msg>>>, log: Log) {
    let nchan = txs.len();
    let mut seq = 0;
    let mut msg = |chan: usize| {
        seq += 1;
        let id = MsgId {
            sender: me,
            chan,
            seq,
        };
        Msg {
            id,
            _guard: DropLog {
                id,
                log: log.clone(),
            },
        }
    };
    for op in spec.ops {
        match op {
            SendOp::Send(c) => {
                let c = c % nchan;
                let Some(tx) = &txs[c] else { continue };
                let m = msg(c);
                let id = m.id;
                match tx.send(m) {
                    Ok(()) => push(&log, Event::SendOk(id)),
                    Err(SendError(back)) => {
                        push(&log, Event::SendErr(back.id));
                        assert_eq!(back.id, id, "send gave back another message");
                    }
                }
            }
            SendOp::TrySend(c) => {
                let c = c % nchan;
                let Some(tx) = &txs[c] else { continue };
                let m = msg(c);
                let id = m.id;
                match tx.try_send(m) {
                    Ok(()) => push(&log, Event::TrySendOk(id)),
                    Err(TrySendError::Full(back)) => {
                        push(&log, Event::TrySendFull(back.id));
                        assert_eq!(back.id, id);
                    }
                    Err(TrySendError::Disconnected(back)) => {
                        push(&log, Event::TrySendDisconnected(back.id));
                        assert_eq!(back.id, id);
                    }
                }
            }
            SendOp::Yield => yield_now(),
            SendOp::Drop(c) => {
                let c = c % nchan;
                if let Some(tx) = txs[c].take() {
                    drop(tx);
                    push(&log, Event::SenderDropped(me, c));
                }
            }
        }
    }
    for (c, tx) in txs.iter_mut().enumerate() {
        if let Some(tx) = tx.take() {
            drop(tx);
            push(&log, Event::SenderDropped(me, c));
        }
    }
}

/// A receiver proc for channel `chan`.
fn run_receiver(chan: usize, spec: ReceiverSpec, rx: Receiver<Msg>, log: Log) {
    // A received message is logged, then dropped (which logs its drop).
    for op in spec.ops {
        match op {
            RecvOp::Recv => match rx.recv() {
                Ok(m) => push(&log, Event::Received(chan, m.id)),
                Err(_) => push(&log, Event::Disconnected(chan)),
            },
            RecvOp::TryRecv => match rx.try_recv() {
                Ok(m) => push(&log, Event::Received(chan, m.id)),
                Err(TryRecvError::Empty) => push(&log, Event::Empty(chan)),
                Err(TryRecvError::Disconnected) => push(&log, Event::Disconnected(chan)),
            },
            RecvOp::RecvTimeout(ms) => match rx.recv_timeout(Duration::from_millis(ms)) {
                Ok(m) => push(&log, Event::Received(chan, m.id)),
                Err(RecvTimeoutError::Timeout) => push(&log, Event::Timeout(chan)),
                Err(RecvTimeoutError::Disconnected) => push(&log, Event::Disconnected(chan)),
            },
            RecvOp::Yield => yield_now(),
        }
    }
    if !spec.drop_early {
        loop {
            match rx.recv() {
                Ok(m) => push(&log, Event::Received(chan, m.id)),
                Err(_) => {
                    push(&log, Event::Disconnected(chan));
                    break;
                }
            }
        }
    }
    drop(rx);
    push(&log, Event::ReceiverDropped(chan));
}

/// Runs the case in a fresh runtime; returns the event log.
fn run_case(case: &Case) -> Vec<Event> {
    let log: Log = Rc::new(RefCell::new(Vec::new()));
    let rt = Runtime::new().expect("runtime");
    let case2 = case.clone();
    let l = log.clone();
    rt.block_on(move || {
        let case = case2;
        let nchan = case.bounds.len();
        let (txs, rxs): (Vec<_>, Vec<_>) = case
            .bounds
            .iter()
            .map(|b| match b {
                None => channel::<Msg>(),
                Some(n) => sync_channel::<Msg>(*n),
            })
            .unzip();
        // Every sender clone exists before any proc runs; the originals go
        // before the first spawn, so the root holds no sender while procs
        // run (a receiver draining until disconnected would wait for it).
        let mut sender_txs: Vec<Vec<Option<Sender<Msg>>>> = case
            .senders
            .iter()
            .map(|s| {
                (0..nchan)
                    .map(|c| s.holds[c].then(|| txs[c].clone()))
                    .collect()
            })
            .collect();
        drop(txs);
        let mut rxs: Vec<Option<Receiver<Msg>>> = rxs.into_iter().map(Some).collect();
        let mut handles = Vec::new();
        for &p in &case.spawn_order {
            let l = l.clone();
            let h = if p < case.senders.len() {
                let spec = case.senders[p].clone();
                let txs = std::mem::take(&mut sender_txs[p]);
                spawn(move || run_sender(p, spec, txs, l))
            } else {
                let c = p - case.senders.len();
                let spec = case.receivers[c].clone();
                let rx = rxs[c].take().unwrap();
                spawn(move || run_receiver(c, spec, rx, l))
            };
            handles.push(h.expect("spawn"));
        }
        for h in handles {
            if let Err(e) = h.join() {
                match e {
                    procrt::JoinError::Panicked(p) => std::panic::resume_unwind(p),
                    e => panic!("proc ended with {e:?}"),
                }
            }
        }
    });
    drop(rt);
    Rc::try_unwrap(log)
        .map(RefCell::into_inner)
        .unwrap_or_else(|l| l.borrow().clone())
}

/// The model of one channel.
#[derive(Default)]
struct Model {
    queue: VecDeque<MsgId>,
    live_senders: usize,
    receiver_alive: bool,
    /// The receiver reported disconnection (then it drained the queue).
    drained: bool,
    /// Messages sent successfully.
    accepted: usize,
    received: usize,
}

/// Replays `events` against the model; returns a description of the first
/// inconsistency.
fn check(case: &Case, events: &[Event]) -> Result<(), String> {
    let nchan = case.bounds.len();
    let mut models: Vec<Model> = (0..nchan)
        .map(|c| Model {
            live_senders: case.senders.iter().filter(|s| s.holds[c]).count(),
            receiver_alive: true,
            ..Model::default()
        })
        .collect();
    let mut created: HashMap<MsgId, usize> = HashMap::new();
    let mut dropped: HashMap<MsgId, usize> = HashMap::new();
    // Last sequence number received per (sender, channel).
    let mut last_seq: HashMap<(usize, usize), usize> = HashMap::new();
    for (k, e) in events.iter().enumerate() {
        let fail = |what: String| Err(format!("event {k} {e:?}: {what}"));
        match *e {
            Event::SendOk(id) | Event::TrySendOk(id) => {
                *created.entry(id).or_default() += 1;
                let m = &mut models[id.chan];
                if !m.receiver_alive {
                    return fail("a send succeeded after the receiver was dropped".into());
                }
                if dropped.contains_key(&id) {
                    return fail("the message was dropped before it was sent".into());
                }
                m.queue.push_back(id);
                m.accepted += 1;
                let cap = case.bounds[id.chan].map_or(usize::MAX, |n| n.max(1));
                if m.queue.len() > cap {
                    return fail(format!(
                        "{} messages queued, bound {:?}",
                        m.queue.len(),
                        case.bounds[id.chan]
                    ));
                }
            }
            Event::SendErr(id) | Event::TrySendDisconnected(id) => {
                *created.entry(id).or_default() += 1;
                if models[id.chan].receiver_alive {
                    return fail("send failed while the receiver was alive".into());
                }
                if dropped.contains_key(&id) {
                    return fail("the message given back had been dropped".into());
                }
            }
            Event::TrySendFull(id) => {
                *created.entry(id).or_default() += 1;
                let m = &models[id.chan];
                if !m.receiver_alive {
                    return fail("Full instead of Disconnected".into());
                }
                match case.bounds[id.chan] {
                    None => return fail("an unbounded channel said Full".into()),
                    Some(0) => {}
                    Some(n) => {
                        if m.queue.len() < n {
                            return fail(format!("Full with {} of {n} queued", m.queue.len()));
                        }
                    }
                }
            }
            Event::SenderDropped(_, c) => models[c].live_senders -= 1,
            Event::Received(c, id) => {
                let m = &mut models[c];
                if id.chan != c {
                    return fail("a message of another channel".into());
                }
                match m.queue.pop_front() {
                    Some(front) if front == id => {}
                    other => return fail(format!("expected the oldest queued message {other:?}")),
                }
                m.received += 1;
                let last = last_seq.entry((id.sender, c)).or_default();
                if id.seq <= *last {
                    return fail(format!(
                        "sender {}'s seq {} after {}",
                        id.sender, id.seq, last
                    ));
                }
                *last = id.seq;
            }
            Event::Disconnected(c) => {
                let m = &mut models[c];
                if m.live_senders != 0 || !m.queue.is_empty() {
                    return fail(format!(
                        "disconnected with {} senders alive and {} queued",
                        m.live_senders,
                        m.queue.len()
                    ));
                }
                m.drained = true;
            }
            Event::Empty(c) | Event::Timeout(c) => {
                let m = &models[c];
                if !m.queue.is_empty() {
                    return fail(format!("{} messages were queued", m.queue.len()));
                }
                if m.live_senders == 0 {
                    return fail("every sender was gone: should be Disconnected".into());
                }
            }
            Event::ReceiverDropped(c) => {
                let m = &mut models[c];
                for id in &m.queue {
                    if dropped.get(id) != Some(&1) {
                        return fail(format!("queued {id:?} was not dropped with the receiver"));
                    }
                }
                m.queue.clear();
                m.receiver_alive = false;
            }
            Event::MsgDropped(id) => {
                let n = dropped.entry(id).or_default();
                *n += 1;
                if *n > 1 {
                    return fail("dropped twice".into());
                }
            }
        }
    }
    for (c, m) in models.iter().enumerate() {
        if m.receiver_alive {
            return Err(format!("channel {c}: the receiver never went"));
        }
        if m.live_senders != 0 {
            return Err(format!(
                "channel {c}: {} senders never went",
                m.live_senders
            ));
        }
        if m.drained && m.received != m.accepted {
            return Err(format!(
                "channel {c}: drained until disconnected, but received {} of {}",
                m.received, m.accepted
            ));
        }
        if !case.receivers[c].drop_early && !m.drained {
            return Err(format!("channel {c}: the drain never saw disconnection"));
        }
    }
    for (id, n) in &created {
        if *n != 1 {
            return Err(format!("{id:?} logged as sent {n} times"));
        }
        if dropped.get(id) != Some(&1) {
            return Err(format!("{id:?} dropped {:?} times", dropped.get(id)));
        }
    }
    if dropped.len() != created.len() {
        return Err("a message was dropped that was never logged as sent".into());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn channels_agree_with_the_model(case in case()) {
        let events = run_case(&case);
        if let Err(e) = check(&case, &events) {
            let log: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
            prop_assert!(false, "{e}\nlog:\n{}", log.join("\n"));
        }
    }
}

/// The checker itself catches what it should: a hand-written log with a
/// reordered receive, and one with a premature disconnection.
#[test]
fn the_model_rejects_reordering_and_early_disconnection() {
    let case = Case {
        bounds: vec![None],
        senders: vec![SenderSpec {
            holds: [true, false, false],
            ops: vec![],
        }],
        receivers: vec![ReceiverSpec {
            ops: vec![],
            drop_early: false,
        }],
        spawn_order: vec![0, 1],
    };
    let a = MsgId {
        sender: 0,
        chan: 0,
        seq: 1,
    };
    let b = MsgId { seq: 2, ..a };
    let good = [
        Event::SendOk(a),
        Event::SendOk(b),
        Event::Received(0, a),
        Event::MsgDropped(a),
        Event::SenderDropped(0, 0),
        Event::Received(0, b),
        Event::MsgDropped(b),
        Event::Disconnected(0),
        Event::ReceiverDropped(0),
    ];
    assert_eq!(check(&case, &good), Ok(()));
    let mut reordered = good;
    reordered.swap(2, 5);
    reordered.swap(3, 6);
    assert!(check(&case, &reordered).is_err());
    let mut early = good.to_vec();
    let d = early.remove(7);
    early.insert(4, d);
    assert!(check(&case, &early).is_err());
}
