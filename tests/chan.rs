//! Channels (`procrt::chan`): `std::sync::mpsc` semantics between procs of
//! one runtime, plus the timers they lean on (`sleep`, `park_timeout`,
//! `recv_timeout`) and the idle runtime's CPU use.
//!
//! Time is only ever bounded from below: a loaded machine may run any of
//! these late, never early.

mod util;

use procrt::chan::{
    channel, sync_channel, Receiver, RecvError, RecvTimeoutError, SendError, Sender, TryRecvError,
    TrySendError,
};
use procrt::{
    park_timeout, sleep, spawn, unparker, yield_now, JoinError, JoinHandle, Runtime, Unparker,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::DropCounter;

/// A shared, append-only record of what happened, in order.
type Log<T> = Rc<RefCell<Vec<T>>>;

fn log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

/// A value that counts its drops, and says which one it is.
struct Tracked {
    id: u32,
    _drop: DropCounter,
}

impl Tracked {
    fn new(id: u32, drops: &Rc<Cell<usize>>) -> Self {
        Tracked {
            id,
            _drop: DropCounter::new(drops),
        }
    }
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracked({})", self.id)
    }
}

// ---------------------------------------------------------------------------
// Unbounded channels
// ---------------------------------------------------------------------------

#[test]
fn unbounded_channel_delivers_in_fifo_order() {
    procrt::run(|| {
        // Without any blocking: all queued first, then all received.
        let (tx, rx) = channel();
        for i in 0..1000u32 {
            tx.send(i).unwrap();
        }
        for i in 0..1000u32 {
            assert_eq!(rx.recv(), Ok(i));
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

        // From a producer proc that yields between sends, to a receiver
        // that parks on an empty channel.
        let (tx, rx) = channel();
        let producer = spawn(move || {
            for i in 0..500u32 {
                tx.send(i).unwrap();
                if i % 7 == 0 {
                    yield_now();
                }
            }
        })
        .unwrap();
        let got: Vec<u32> = rx.iter().collect();
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        producer.join().unwrap();
    });
}

#[test]
fn cloned_senders_from_several_producers_all_arrive_in_per_sender_order() {
    const PRODUCERS: u32 = 4;
    const EACH: u32 = 250;
    procrt::run(|| {
        let (tx, rx) = channel::<(u32, u32)>();
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let tx: Sender<_> = tx.clone();
                spawn(move || {
                    for i in 0..EACH {
                        tx.send((p, i)).unwrap();
                        if (i + p) % 3 == 0 {
                            yield_now();
                        }
                    }
                })
                .unwrap()
            })
            .collect();
        drop(tx);
        let mut next = [0u32; PRODUCERS as usize];
        let mut total = 0;
        // Changes of producer between consecutive messages: more than one
        // per producer means their sends really interleaved.
        let mut switches = 0;
        let mut last_p = None;
        for (p, i) in rx.iter() {
            assert_eq!(i, next[p as usize], "producer {p}: out of order");
            next[p as usize] += 1;
            total += 1;
            switches += usize::from(last_p.is_some_and(|l| l != p));
            last_p = Some(p);
        }
        assert_eq!(total, PRODUCERS * EACH);
        assert!(next.iter().all(|&n| n == EACH));
        assert!(
            switches > 2 * PRODUCERS as usize,
            "the producers never interleaved ({switches})"
        );
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn queued_messages_are_delivered_after_every_sender_is_dropped_then_recv_fails() {
    procrt::run(|| {
        let (tx, rx) = channel::<u32>();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        tx.send(3).unwrap();
        drop(tx);
        // One sender is still alive: not disconnected, even when empty.
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(RecvTimeoutError::Timeout)
        );
        tx2.send(4).unwrap();
        drop(tx2);
        // Every sender gone, one message left: it still comes first.
        assert_eq!(rx.try_recv(), Ok(4));
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.recv(), Err(RecvError), "disconnection is permanent");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
}

#[test]
fn parked_receiver_wakes_with_recv_error_only_when_the_last_sender_goes() {
    procrt::run(|| {
        let (tx, rx) = channel::<u32>();
        let tx2 = tx.clone();
        let result = Rc::new(RefCell::new(None));
        let r = result.clone();
        let receiver = spawn(move || {
            *r.borrow_mut() = Some(rx.recv());
        })
        .unwrap();
        // The receiver is parked in recv.
        drop(tx);
        for _ in 0..10 {
            yield_now();
        }
        assert!(
            result.borrow().is_none(),
            "recv returned while a sender was still alive: {:?}",
            result.borrow()
        );
        assert!(!receiver.is_finished());
        drop(tx2);
        receiver.join().unwrap();
        assert_eq!(*result.borrow(), Some(Err(RecvError)));
    });
}

#[test]
fn send_after_receiver_dropped_gives_the_value_back_and_queued_messages_are_dropped() {
    for bound in [None, Some(0), Some(3)] {
        let drops = Rc::new(Cell::new(0));
        let d = drops.clone();
        procrt::run(move || {
            let (tx, rx) = match bound {
                None => channel::<Tracked>(),
                Some(n) => sync_channel::<Tracked>(n),
            };
            let queued = if bound == Some(0) { 0 } else { 3 };
            for i in 0..queued {
                tx.send(Tracked::new(i, &d)).unwrap();
            }
            assert_eq!(d.get(), 0, "{bound:?}: a queued message was dropped early");
            drop(rx);
            assert_eq!(
                d.get(),
                queued as usize,
                "{bound:?}: dropping the receiver must drop the queued messages at once"
            );
            match tx.send(Tracked::new(100, &d)) {
                Err(SendError(t)) => {
                    assert_eq!(t.id, 100);
                    assert_eq!(d.get(), queued as usize, "the value given back was dropped");
                }
                Ok(()) => panic!("{bound:?}: send succeeded without a receiver"),
            }
            assert_eq!(d.get(), queued as usize + 1);
            match tx.try_send(Tracked::new(101, &d)) {
                Err(TrySendError::Disconnected(t)) => assert_eq!(t.id, 101),
                other => panic!("{bound:?}: try_send without a receiver: {other:?}"),
            }
            assert_eq!(d.get(), queued as usize + 2);
        });
        assert_eq!(drops.get(), if bound == Some(0) { 2 } else { 5 });
    }
}

// ---------------------------------------------------------------------------
// Bounded channels
// ---------------------------------------------------------------------------

/// What the two sides of a bounded channel did, in order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ev {
    /// The receiver is about to call `recv` for the i-th message.
    RecvStart(u32),
    /// `send(i)` returned Ok.
    Sent(u32),
    /// `recv` returned `i`.
    Recvd(u32),
}

/// Runs a sender of `n` messages into `sync_channel(bound)` against a
/// receiver that starts late and yields now and then; returns the log.
fn bounded_exchange(bound: usize, n: u32) -> Vec<Ev> {
    let events = log::<Ev>();
    let ev = events.clone();
    procrt::run(move || {
        let (tx, rx) = sync_channel::<u32>(bound);
        let l = ev.clone();
        let sender = spawn(move || {
            for i in 0..n {
                tx.send(i).unwrap();
                l.borrow_mut().push(Ev::Sent(i));
            }
        })
        .unwrap();
        // The sender ran first: it filled the channel and parked.
        assert_eq!(ev.borrow().len(), bound, "bound {bound}: {:?}", ev.borrow());
        for _ in 0..5 {
            yield_now();
        }
        assert_eq!(
            ev.borrow().len(),
            bound,
            "bound {bound}: the sender went past a full channel: {:?}",
            ev.borrow()
        );
        assert!(!sender.is_finished());
        for i in 0..n {
            ev.borrow_mut().push(Ev::RecvStart(i));
            let v = rx.recv().unwrap();
            ev.borrow_mut().push(Ev::Recvd(v));
            assert_eq!(v, i);
            if i % 3 == 1 {
                yield_now();
            }
        }
        sender.join().unwrap();
    });
    Rc::try_unwrap(events).unwrap().into_inner()
}

#[test]
fn bounded_send_parks_when_full_so_the_sender_is_never_more_than_bound_ahead() {
    for bound in 1..=3usize {
        let events = bounded_exchange(bound, 30);
        let (mut sent, mut recvd, mut max_ahead) = (0usize, 0usize, 0usize);
        for (k, e) in events.iter().enumerate() {
            match e {
                Ev::Sent(_) => sent += 1,
                Ev::Recvd(_) => recvd += 1,
                Ev::RecvStart(_) => {}
            }
            assert!(
                recvd <= sent,
                "bound {bound}: received before sent at {k}: {events:?}"
            );
            assert!(
                sent - recvd <= bound,
                "bound {bound}: sender {} ahead at event {k}: {events:?}",
                sent - recvd
            );
            max_ahead = max_ahead.max(sent - recvd);
        }
        assert_eq!((sent, recvd), (30, 30));
        assert_eq!(max_ahead, bound, "bound {bound}: the channel never filled");
    }
}

#[test]
fn rendezvous_send_completes_only_once_the_receiver_waits() {
    let events = bounded_exchange(0, 30);
    let pos = |e: Ev| events.iter().position(|&x| x == e).unwrap();
    for i in 0..30 {
        assert!(
            pos(Ev::RecvStart(i)) < pos(Ev::Sent(i)),
            "send({i}) returned before the receiver asked for it: {events:?}"
        );
        assert!(pos(Ev::Sent(i)) < pos(Ev::Recvd(i)));
    }
    let mut ahead = 0i32;
    for e in &events {
        match e {
            Ev::Sent(_) => ahead += 1,
            Ev::Recvd(_) => ahead -= 1,
            Ev::RecvStart(_) => {}
        }
        assert!((0..=1).contains(&ahead), "{events:?}");
    }
}

#[test]
fn rendezvous_send_from_a_proc_parks_until_recv() {
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(0);
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        let sender = spawn(move || {
            tx.send(7).unwrap();
            d.set(true);
        })
        .unwrap();
        for _ in 0..10 {
            yield_now();
        }
        assert!(
            !done.get(),
            "rendezvous send returned with no receiver waiting"
        );
        assert!(!sender.is_finished());
        assert_eq!(rx.recv(), Ok(7));
        sender.join().unwrap();
        assert!(done.get());
    });
}

#[test]
fn try_send_on_bounded_channel_reports_full_then_disconnected() {
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(tx.try_send(4), Ok(()), "room made by recv");
        assert_eq!(tx.try_send(5), Err(TrySendError::Full(5)));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [2, 4]);
        drop(rx);
        assert_eq!(tx.try_send(6), Err(TrySendError::Disconnected(6)));
    });
}

#[test]
fn rendezvous_try_send_is_full_unless_the_receiver_is_parked_in_recv() {
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(0);
        assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)), "nobody waits");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(
            tx.try_send(2),
            Err(TrySendError::Full(2)),
            "try_recv does not wait"
        );
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(RecvTimeoutError::Timeout)
        );
        assert_eq!(
            tx.try_send(3),
            Err(TrySendError::Full(3)),
            "a receiver whose recv_timeout ran out no longer waits"
        );

        let receiver = spawn(move || {
            let v = rx.recv();
            (v, rx)
        })
        .unwrap();
        // The receiver is parked in recv now.
        assert_eq!(tx.try_send(4), Ok(()));
        assert_eq!(
            tx.try_send(5),
            Err(TrySendError::Full(5)),
            "the waiting receiver already has a message"
        );
        let (v, rx) = receiver.join().unwrap();
        assert_eq!(v, Ok(4));
        assert_eq!(tx.try_send(6), Err(TrySendError::Full(6)));
        drop(rx);
        assert_eq!(tx.try_send(7), Err(TrySendError::Disconnected(7)));
    });
}

#[test]
fn sender_parked_on_a_full_channel_wakes_with_err_when_the_receiver_is_dropped() {
    for bound in [0usize, 1, 3] {
        procrt::run(move || {
            let (tx, rx) = sync_channel::<u32>(bound);
            for i in 0..bound as u32 {
                tx.send(i).unwrap();
            }
            let senders: Vec<_> = (0..3u32)
                .map(|k| {
                    let tx = tx.clone();
                    spawn(move || tx.send(100 + k)).unwrap()
                })
                .collect();
            yield_now();
            assert!(senders.iter().all(|h| !h.is_finished()), "bound {bound}");
            drop(rx);
            for (k, h) in senders.into_iter().enumerate() {
                assert_eq!(
                    h.join().unwrap(),
                    Err(SendError(100 + k as u32)),
                    "bound {bound}"
                );
            }
        });
    }
}

#[test]
fn many_senders_parked_on_a_full_channel_all_complete() {
    const PROCS: u32 = 10;
    const EACH: u32 = 100;
    for bound in [1usize, 0, 2] {
        let count = procrt::run(move || {
            let (tx, rx) = sync_channel::<(u32, u32)>(bound);
            let handles: Vec<_> = (0..PROCS)
                .map(|p| {
                    let tx = tx.clone();
                    spawn(move || {
                        for i in 0..EACH {
                            tx.send((p, i)).unwrap();
                        }
                    })
                    .unwrap()
                })
                .collect();
            drop(tx);
            let receiver = spawn(move || {
                let mut next = [0u32; PROCS as usize];
                let mut count = 0u32;
                for (p, i) in rx {
                    assert_eq!(
                        i, next[p as usize],
                        "bound {bound}: sender {p} out of order"
                    );
                    next[p as usize] += 1;
                    count += 1;
                }
                count
            })
            .unwrap();
            for h in handles {
                h.join().unwrap();
            }
            receiver.join().unwrap()
        });
        assert_eq!(count, PROCS * EACH, "bound {bound}");
    }
}

#[test]
fn senders_parked_on_a_full_bounded_channel_are_served_in_arrival_order() {
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(1);
        tx.send(0).unwrap();
        // Each starts at once and parks on the full channel, in this order.
        let hs: Vec<_> = (1..=4u32)
            .map(|k| {
                let tx = tx.clone();
                spawn(move || tx.send(k).unwrap()).unwrap()
            })
            .collect();
        let got: Vec<u32> = (0..5).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(
            got,
            [0, 1, 2, 3, 4],
            "the sender that waited longest goes first"
        );
        for h in hs {
            h.join().unwrap();
        }
    });
}

// ---------------------------------------------------------------------------
// try_recv, recv_timeout, iterators
// ---------------------------------------------------------------------------

#[test]
fn try_recv_is_empty_while_senders_live_and_disconnected_after() {
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(1);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.send(9).unwrap();
        assert_eq!(rx.try_recv(), Ok(9));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
}

#[test]
fn recv_timeout_times_out_after_at_least_the_timeout() {
    procrt::run(|| {
        for timeout in [
            Duration::ZERO,
            Duration::from_millis(10),
            Duration::from_millis(20),
        ] {
            let (_tx, rx) = channel::<u32>();
            let t = Instant::now();
            assert_eq!(rx.recv_timeout(timeout), Err(RecvTimeoutError::Timeout));
            assert!(
                t.elapsed() >= timeout,
                "{timeout:?}: woke after {:?}",
                t.elapsed()
            );
        }
    });
}

/// Yields until `done()` holds, at most `max` times; whether it came to
/// hold. A proc woken by a channel runs before a proc that yields, so a
/// wake-up that happened shows within a few yields, and one that did not
/// fails the test at once rather than after the receiver's long timeout.
fn yield_until(max: usize, done: impl Fn() -> bool) -> bool {
    for _ in 0..max {
        if done() {
            return true;
        }
        yield_now();
    }
    done()
}

#[test]
fn recv_timeout_is_woken_by_a_message_sent_while_it_waits() {
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(0);
        let result = Rc::new(RefCell::new(None));
        let r = result.clone();
        let receiver = spawn(move || {
            let t = Instant::now();
            let v = rx.recv_timeout(Duration::from_secs(60));
            *r.borrow_mut() = Some((v, t.elapsed()));
            rx
        })
        .unwrap();
        sleep(Duration::from_millis(10));
        assert!(result.borrow().is_none());
        // The receiver waits in recv_timeout: a rendezvous has room.
        assert_eq!(tx.try_send(5), Ok(()));
        assert!(
            yield_until(100, || result.borrow().is_some()),
            "recv_timeout was not woken by the message"
        );
        let (v, waited) = result.borrow_mut().take().unwrap();
        assert_eq!(v, Ok(5));
        assert!(
            waited >= Duration::from_millis(10),
            "returned before the send"
        );
        let rx = receiver.join().unwrap();
        drop(tx);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)),
            Err(RecvTimeoutError::Disconnected)
        );
    });
}

#[test]
fn recv_timeout_returns_disconnected_when_the_senders_go() {
    procrt::run(|| {
        // Gone before the call: at once, not after the timeout.
        let (tx, rx) = channel::<u32>();
        drop(tx);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)),
            Err(RecvTimeoutError::Disconnected)
        );

        // Gone while it waits: woken by the last sender's drop, not before.
        let (tx, rx) = channel::<u32>();
        let tx2 = tx.clone();
        let result = Rc::new(RefCell::new(None));
        let r = result.clone();
        let receiver = spawn(move || {
            *r.borrow_mut() = Some(rx.recv_timeout(Duration::from_secs(60)));
        })
        .unwrap();
        sleep(Duration::from_millis(10));
        drop(tx);
        assert!(
            !yield_until(20, || result.borrow().is_some()),
            "recv_timeout returned with a sender alive: {:?}",
            result.borrow()
        );
        drop(tx2);
        assert!(
            yield_until(100, || result.borrow().is_some()),
            "recv_timeout was not woken by the last sender's drop"
        );
        assert_eq!(*result.borrow(), Some(Err(RecvTimeoutError::Disconnected)));
        receiver.join().unwrap();
    });
}

#[test]
fn iter_receives_until_disconnected() {
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(2);
        let producer = spawn(move || {
            for i in 0..10 {
                tx.send(i).unwrap();
            }
        })
        .unwrap();
        let got: Vec<u32> = rx.iter().collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        let mut n = 0;
        for _ in &rx {
            n += 1;
        }
        assert_eq!(
            n, 0,
            "the borrowed iterator of a disconnected channel is empty"
        );
        producer.join().unwrap();
    });
}

#[test]
fn try_iter_takes_only_what_is_there() {
    procrt::run(|| {
        let (tx, rx) = channel::<u32>();
        assert_eq!(rx.try_iter().count(), 0);
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [0, 1, 2]);
        // Does not wait for the sender, which is still alive.
        assert_eq!(rx.try_iter().next(), None);
        tx.send(3).unwrap();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [3]);
    });
}

#[test]
fn into_iter_owns_the_receiver_and_ends_at_disconnection() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    procrt::run(move || {
        let (tx, rx) = channel::<Tracked>();
        let consumer = spawn(move || rx.into_iter().map(|t| t.id).collect::<Vec<_>>()).unwrap();
        for i in 0..4 {
            tx.send(Tracked::new(i, &d)).unwrap();
            yield_now();
        }
        drop(tx);
        assert_eq!(consumer.join().unwrap(), [0, 1, 2, 3]);
        // Dropping the iterator mid-way drops the receiver: sends fail.
        let (tx, rx) = channel::<u32>();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        let mut it = rx.into_iter();
        assert_eq!(it.next(), Some(1));
        drop(it);
        assert_eq!(tx.send(3), Err(SendError(3)));
    });
    assert_eq!(drops.get(), 4);
}

// ---------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------

#[test]
fn runtime_drop_cancels_procs_parked_in_recv_and_send_and_runs_destructors() {
    let drops = Rc::new(Cell::new(0));
    let rt = Runtime::new().unwrap();
    let d = drops.clone();
    let handles: Vec<JoinHandle<()>> = rt.block_on(move || {
        // A waits in recv on `a`, whose only sender B holds; B waits in
        // send on the full `b`, whose receiver C holds; C waits in recv on
        // `c`, whose only sender A holds. Nothing outside keeps any alive.
        let (a_tx, a_rx) = channel::<Tracked>();
        let (b_tx, b_rx) = sync_channel::<Tracked>(1);
        let (c_tx, c_rx) = sync_channel::<Tracked>(0);
        b_tx.send(Tracked::new(1, &d)).unwrap();
        let (da, db, dc) = (d.clone(), d.clone(), d.clone());
        let a = spawn(move || {
            let _guard = DropCounter::new(&da);
            let _c_tx = c_tx;
            let _ = a_rx.recv();
            unreachable!("A's recv returned");
        })
        .unwrap();
        let b = spawn(move || {
            let _guard = DropCounter::new(&db);
            let _a_tx = a_tx;
            let _ = b_tx.send(Tracked::new(2, &db));
            unreachable!("B's send returned");
        })
        .unwrap();
        let c = spawn(move || {
            let _guard = DropCounter::new(&dc);
            let _b_rx = b_rx;
            let _ = c_rx.recv();
            unreachable!("C's recv returned");
        })
        .unwrap();
        vec![a, b, c]
    });
    assert_eq!(drops.get(), 0);
    assert_eq!(rt.live_procs(), 3);
    drop(rt);
    // Three guards, the message queued in `b`, the one B was sending.
    assert_eq!(drops.get(), 5, "some destructor did not run (or ran twice)");
    for h in handles {
        assert!(matches!(h.join(), Err(JoinError::Cancelled)));
    }
}

/// A sender parked on a full channel and ended there by a linked proc's
/// exit signal unwinds out of `send`: it must take its place in the queue
/// of waiting senders with it, or the next receive wakes the dead proc
/// instead of a live sender, which then waits forever.
#[test]
fn a_sender_ended_while_parked_in_send_does_not_swallow_the_next_wake_up() {
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(1);
        tx.send(0).unwrap();
        let tx1 = tx.clone();
        let victim = spawn(move || {
            let _ = tx1.send(1);
        })
        .unwrap();
        let victim_id = victim.id();
        let killer = spawn(move || {
            procrt::link(victim_id);
            panic!("ending the linked sender parked in send");
        })
        .unwrap();
        assert!(killer.join().unwrap_err().is_panic());
        assert!(victim.join().unwrap_err().is_exited());
        // A live sender waits on the full channel now.
        let live = spawn(move || tx.send(2)).unwrap();
        assert!(!live.is_finished());
        assert_eq!(rx.recv(), Ok(0), "makes room: must wake the live sender");
        assert!(
            yield_until(100, || live.is_finished()),
            "the live sender was not woken: the room went to the ended one"
        );
        assert_eq!(live.join().unwrap(), Ok(()));
        assert_eq!(rx.recv(), Ok(2));
    });
}

/// The same for a receiver: one proc of two sharing a receiver (`recv`
/// takes `&self`) is ended while parked in `recv` on a rendezvous channel.
/// Nobody waits in `recv` afterwards, so `try_send` must say `Full`, as it
/// does when no receiver ever waited; it must not hand the message over to
/// a waiter that is gone.
#[test]
fn a_receiver_ended_while_parked_in_recv_no_longer_counts_as_waiting() {
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(0);
        let rx = Rc::new(rx);
        let rx2 = rx.clone();
        let first = spawn(move || rx2.recv()).unwrap();
        assert_eq!(tx.try_send(1), Ok(()), "a proc waits in recv");
        assert_eq!(first.join().unwrap(), Ok(1));
        let rx3 = rx.clone();
        let victim = spawn(move || {
            let _ = rx3.recv();
        })
        .unwrap();
        let victim_id = victim.id();
        let killer = spawn(move || {
            procrt::link(victim_id);
            panic!("ending the linked receiver parked in recv");
        })
        .unwrap();
        assert!(killer.join().unwrap_err().is_panic());
        assert!(victim.join().unwrap_err().is_exited());
        assert_eq!(
            tx.try_send(2),
            Err(TrySendError::Full(2)),
            "no receiver waits any more"
        );
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    });
}

// ---------------------------------------------------------------------------
// Timers: sleep, park_timeout, an idle runtime
// ---------------------------------------------------------------------------

#[test]
fn sleeping_procs_wake_in_deadline_order() {
    let order = log::<u64>();
    let o = order.clone();
    let t = Instant::now();
    procrt::run(move || {
        let hs: Vec<_> = [30u64, 10, 20]
            .into_iter()
            .map(|ms| {
                let o = o.clone();
                spawn(move || {
                    let t = Instant::now();
                    sleep(Duration::from_millis(ms));
                    assert!(t.elapsed() >= Duration::from_millis(ms));
                    o.borrow_mut().push(ms);
                })
                .unwrap()
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(*order.borrow(), [10, 20, 30]);
}

/// The runtime is late (here: the root blocks the thread in
/// `std::thread::sleep`, as a loaded machine might deschedule it), so both
/// deadlines have passed when the timers are next checked: the two sleepers
/// must still run in deadline order.
#[test]
fn sleepers_whose_deadlines_pass_together_still_wake_in_deadline_order() {
    let order = log::<u64>();
    let o = order.clone();
    procrt::run(move || {
        let hs: Vec<_> = [20u64, 10]
            .into_iter()
            .map(|ms| {
                let o = o.clone();
                spawn(move || {
                    sleep(Duration::from_millis(ms));
                    o.borrow_mut().push(ms);
                })
                .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(40));
        for h in hs {
            h.join().unwrap();
        }
    });
    assert_eq!(*order.borrow(), [10, 20]);
}

#[test]
fn park_timeout_returns_true_when_the_time_runs_out() {
    procrt::run(|| {
        let t = Instant::now();
        assert!(park_timeout(Duration::from_millis(20)));
        assert!(t.elapsed() >= Duration::from_millis(20));
    });
}

#[test]
fn park_timeout_returns_false_when_unparked() {
    procrt::run(|| {
        let slot: Rc<RefCell<Option<Unparker>>> = Rc::new(RefCell::new(None));
        let s = slot.clone();
        let parked = spawn(move || {
            *s.borrow_mut() = Some(unparker());
            let t = Instant::now();
            let timed_out = park_timeout(Duration::from_secs(60));
            (timed_out, t.elapsed())
        })
        .unwrap();
        sleep(Duration::from_millis(10));
        slot.borrow().as_ref().unwrap().unpark();
        let (timed_out, waited) = parked.join().unwrap();
        assert!(!timed_out, "unparked, yet reported a timeout");
        assert!(
            waited >= Duration::from_millis(10),
            "returned before the unpark"
        );
    });
}

/// utime + stime of this process, in clock ticks (fields 14 and 15 of
/// /proc/self/stat, counted after the parenthesised command name, which
/// may itself hold spaces).
fn process_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    let rest = &stat[stat.rfind(')').expect("comm field") + 1..];
    // `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[14 - 3].parse().expect("utime");
    let stime: u64 = fields[15 - 3].parse().expect("stime");
    utime + stime
}

/// Clock ticks per second, from `getconf CLK_TCK` (100 if that fails).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// CPU time from clock ticks.
fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / per_second)
}

#[test]
fn idle_runtime_uses_little_cpu_while_its_only_proc_sleeps() {
    const NAME: &str = "idle_runtime_uses_little_cpu_while_its_only_proc_sleeps";
    const SLEEP: Duration = Duration::from_millis(200);
    if util::child_role().as_deref() == Some("idle") {
        // Alone in this process (no other test runs here), so
        // /proc/self/stat is this test's CPU time.
        let tck = clock_ticks_per_second();
        // What a busy wait as long as the sleep costs here and now: on a
        // loaded machine a spinning thread gets only its share of a CPU.
        let before = process_cpu_ticks();
        let t = Instant::now();
        while t.elapsed() < SLEEP {
            std::hint::spin_loop();
        }
        let spin = ticks_to_duration(process_cpu_ticks() - before, tck);

        let before = process_cpu_ticks();
        let t = Instant::now();
        procrt::run(|| sleep(SLEEP));
        let elapsed = t.elapsed();
        let cpu = ticks_to_duration(process_cpu_ticks() - before, tck);
        println!(
            "slept {elapsed:?}, used {cpu:?} of CPU (a busy wait used {spin:?}; {tck} ticks/s)"
        );
        assert!(elapsed >= SLEEP);
        assert!(
            cpu < SLEEP / 2,
            "busy wait: {cpu:?} of CPU while sleeping {elapsed:?}"
        );
        if spin >= SLEEP / 4 {
            assert!(
                cpu < spin / 2,
                "busy wait: {cpu:?} of CPU while sleeping {elapsed:?}, as much as a spin ({spin:?})"
            );
        }
        return;
    }
    let out = util::run_child(NAME, "idle");
    println!("{}", out.stdout);
    assert!(out.status.success(), "{}", out.describe());
    assert!(out.stdout.contains("of CPU"), "{}", out.describe());
}

// ---------------------------------------------------------------------------
// Ported from std's own mpsc tests.
// ---------------------------------------------------------------------------

/// Adapted from the Rust standard library's mpsc tests
/// (rust-lang/rust, library/std/src/sync/mpsc/tests.rs and sync_tests.rs;
/// MIT OR Apache-2.0): `thread::spawn` became `procrt::spawn`, each body runs
/// in `procrt::run`, a `SyncSender` is our `Sender`, and loops that relied on
/// another thread running concurrently yield instead.
mod std_ports {
    use super::*;

    #[test]
    fn smoke() {
        procrt::run(|| {
            let (tx, rx) = channel::<i32>();
            tx.send(1).unwrap();
            assert_eq!(rx.recv().unwrap(), 1);
            let (tx, rx) = sync_channel::<i32>(1);
            tx.send(1).unwrap();
            assert_eq!(rx.recv().unwrap(), 1);
        });
    }

    #[test]
    fn smoke_shared() {
        procrt::run(|| {
            let (tx, rx) = channel::<i32>();
            tx.send(1).unwrap();
            assert_eq!(rx.recv().unwrap(), 1);
            let tx = tx.clone();
            tx.send(1).unwrap();
            assert_eq!(rx.recv().unwrap(), 1);
        });
    }

    #[test]
    fn smoke_threads_rendezvous() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<i32>(0);
            let _t = spawn(move || {
                tx.send(1).unwrap();
            });
            assert_eq!(rx.recv().unwrap(), 1);
        });
    }

    #[test]
    fn drop_full() {
        let drops = Rc::new(Cell::new(0));
        let d = drops.clone();
        procrt::run(move || {
            let (tx, _rx) = channel::<Tracked>();
            tx.send(Tracked::new(1, &d)).unwrap();
            let (tx, _rx) = sync_channel::<Tracked>(1);
            tx.send(Tracked::new(2, &d)).unwrap();
        });
        assert_eq!(drops.get(), 2);
    }

    #[test]
    fn drop_full_shared() {
        procrt::run(|| {
            let (tx, _rx) = channel::<Box<isize>>();
            drop(tx.clone());
            drop(tx.clone());
            tx.send(Box::new(1)).unwrap();
        });
    }

    #[test]
    fn smoke_shared_port_gone2() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<i32>(0);
            drop(rx);
            let tx2 = tx.clone();
            drop(tx);
            assert!(tx2.send(1).is_err());
        });
    }

    #[test]
    fn port_gone_concurrent_rendezvous() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<i32>(0);
            let t = spawn(move || {
                rx.recv().unwrap();
            })
            .unwrap();
            let mut sent = 0;
            while tx.send(1).is_ok() {
                sent += 1;
            }
            assert_eq!(sent, 1);
            t.join().unwrap();
        });
    }

    #[test]
    fn port_gone_concurrent_unbounded() {
        procrt::run(|| {
            let (tx, rx) = channel::<i32>();
            let tx2 = tx.clone();
            let t = spawn(move || {
                rx.recv().unwrap();
            })
            .unwrap();
            // The receiver runs only when we yield.
            let mut rounds = 0;
            while tx.send(1).is_ok() && tx2.send(1).is_ok() {
                yield_now();
                rounds += 1;
                assert!(
                    rounds < 10_000,
                    "sends keep succeeding after the receiver went"
                );
            }
            t.join().unwrap();
        });
    }

    #[test]
    fn chan_gone_concurrent() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<i32>(0);
            spawn(move || {
                tx.send(1).unwrap();
                tx.send(1).unwrap();
            })
            .unwrap();
            let mut n = 0;
            while rx.recv().is_ok() {
                n += 1;
            }
            assert_eq!(n, 2);
        });
    }

    #[test]
    fn stress() {
        for bound in [None, Some(0)] {
            procrt::run(move || {
                let (tx, rx) = match bound {
                    None => channel::<i32>(),
                    Some(n) => sync_channel::<i32>(n),
                };
                let t = spawn(move || {
                    for _ in 0..10000 {
                        tx.send(1).unwrap();
                    }
                })
                .unwrap();
                for _ in 0..10000 {
                    assert_eq!(rx.recv().unwrap(), 1);
                }
                t.join().unwrap();
            });
        }
    }

    #[test]
    fn stress_shared() {
        const AMT: u32 = 1000;
        const NTHREADS: u32 = 8;
        for bound in [None, Some(0)] {
            procrt::run(move || {
                let (tx, rx) = match bound {
                    None => channel::<i32>(),
                    Some(n) => sync_channel::<i32>(n),
                };
                let (dtx, drx) = sync_channel::<()>(0);
                spawn(move || {
                    for _ in 0..AMT * NTHREADS {
                        assert_eq!(rx.recv().unwrap(), 1);
                    }
                    assert!(rx.try_recv().is_err());
                    dtx.send(()).unwrap();
                })
                .unwrap();
                for _ in 0..NTHREADS {
                    let tx = tx.clone();
                    spawn(move || {
                        for _ in 0..AMT {
                            tx.send(1).unwrap();
                        }
                    })
                    .unwrap();
                }
                drop(tx);
                drx.recv().unwrap();
            });
        }
    }

    #[test]
    fn stress_recv_timeout_shared() {
        const AMT: u32 = 1000;
        const NTHREADS: u32 = 8;
        procrt::run(|| {
            let (tx, rx) = sync_channel::<i32>(0);
            let (dtx, drx) = sync_channel::<()>(0);
            spawn(move || {
                let mut recv_count = 0;
                // The senders are always ready: the receiver should hardly
                // ever wait out its 10 ms (a bound, so a lost wake-up fails
                // instead of crawling along at one message per timeout).
                let mut timeouts = 0;
                loop {
                    match rx.recv_timeout(Duration::from_millis(10)) {
                        Ok(v) => {
                            assert_eq!(v, 1);
                            recv_count += 1;
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            timeouts += 1;
                            assert!(timeouts < 100, "{timeouts} timeouts, {recv_count} received");
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                assert_eq!(recv_count, AMT * NTHREADS);
                assert!(rx.try_recv().is_err());
                dtx.send(()).unwrap();
            })
            .unwrap();
            for _ in 0..NTHREADS {
                let tx = tx.clone();
                spawn(move || {
                    for _ in 0..AMT {
                        tx.send(1).unwrap();
                    }
                })
                .unwrap();
            }
            drop(tx);
            drx.recv().unwrap();
        });
    }

    #[test]
    fn oneshot_single_thread_close_port_first() {
        procrt::run(|| {
            let (_tx, rx) = channel::<i32>();
            drop(rx);
            let (_tx, rx) = sync_channel::<i32>(0);
            drop(rx);
        });
    }

    #[test]
    fn oneshot_single_thread_close_chan_first() {
        procrt::run(|| {
            let (tx, _rx) = channel::<i32>();
            drop(tx);
            let (tx, _rx) = sync_channel::<i32>(0);
            drop(tx);
        });
    }

    #[test]
    fn oneshot_single_thread_send_port_close() {
        procrt::run(|| {
            let (tx, rx) = channel::<Box<i32>>();
            drop(rx);
            assert!(tx.send(Box::new(0)).is_err());
            let (tx, rx) = sync_channel::<Box<i32>>(0);
            drop(rx);
            assert!(tx.send(Box::new(0)).is_err());
        });
    }

    #[test]
    fn oneshot_single_thread_recv_chan_close() {
        procrt::run(|| {
            let res = spawn(move || {
                let (tx, rx) = channel::<i32>();
                drop(tx);
                rx.recv().unwrap();
            })
            .unwrap()
            .join();
            assert!(res.unwrap_err().is_panic());
        });
    }

    #[test]
    fn oneshot_single_thread_send_then_recv() {
        procrt::run(|| {
            let (tx, rx) = channel::<Box<i32>>();
            tx.send(Box::new(10)).unwrap();
            assert!(*rx.recv().unwrap() == 10);
        });
    }

    #[test]
    fn oneshot_single_thread_try_send_open() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<i32>(1);
            assert_eq!(tx.try_send(10), Ok(()));
            assert!(rx.recv().unwrap() == 10);
        });
    }

    #[test]
    fn oneshot_single_thread_try_send_closed() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<i32>(0);
            drop(rx);
            assert_eq!(tx.try_send(10), Err(TrySendError::Disconnected(10)));
        });
    }

    #[test]
    fn oneshot_single_thread_try_send_closed2() {
        procrt::run(|| {
            let (tx, _rx) = sync_channel::<i32>(0);
            assert_eq!(tx.try_send(10), Err(TrySendError::Full(10)));
        });
    }

    #[test]
    fn oneshot_single_thread_try_recv_closed_with_data() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<i32>(1);
            tx.send(10).unwrap();
            drop(tx);
            assert_eq!(rx.try_recv(), Ok(10));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        });
    }

    #[test]
    fn oneshot_single_thread_peek_data() {
        procrt::run(|| {
            let (tx, rx) = channel::<i32>();
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
            tx.send(10).unwrap();
            assert_eq!(rx.try_recv(), Ok(10));
        });
    }

    #[test]
    fn oneshot_single_thread_peek_close() {
        procrt::run(|| {
            let (tx, rx) = channel::<i32>();
            drop(tx);
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        });
    }

    #[test]
    fn oneshot_single_thread_peek_open() {
        procrt::run(|| {
            let (_tx, rx) = sync_channel::<i32>(0);
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        });
    }

    #[test]
    fn oneshot_single_thread_recv_timeout() {
        procrt::run(|| {
            let (tx, rx) = channel();
            tx.send(()).unwrap();
            assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(()));
            assert_eq!(
                rx.recv_timeout(Duration::from_millis(1)),
                Err(RecvTimeoutError::Timeout)
            );
            tx.send(()).unwrap();
            assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(()));
        });
    }

    #[test]
    fn oneshot_multi_task_recv_then_close() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<Box<i32>>(0);
            let _t = spawn(move || {
                drop(tx);
            });
            let res = spawn(move || {
                assert!(*rx.recv().unwrap() == 10);
            })
            .unwrap()
            .join();
            assert!(res.unwrap_err().is_panic());
        });
    }

    #[test]
    fn stream_send_recv_stress() {
        fn send(tx: Sender<Box<i32>>, i: i32) {
            if i == 10 {
                return;
            }
            spawn(move || {
                tx.send(Box::new(i)).unwrap();
                send(tx, i + 1);
            })
            .unwrap();
        }
        fn recv(rx: Receiver<Box<i32>>, i: i32, done: Rc<Cell<i32>>) {
            if i == 10 {
                return;
            }
            spawn(move || {
                assert!(*rx.recv().unwrap() == i);
                done.set(done.get() + 1);
                recv(rx, i + 1, done);
            })
            .unwrap();
        }
        for bound in [None, Some(0)] {
            let done = Rc::new(Cell::new(0));
            let d = done.clone();
            procrt::run(move || {
                let (tx, rx) = match bound {
                    None => channel(),
                    Some(n) => sync_channel(n),
                };
                send(tx, 0);
                recv(rx, 0, d.clone());
                assert!(
                    yield_until(100_000, || d.get() == 10),
                    "{bound:?}: {} of 10 received",
                    d.get()
                );
            });
            assert_eq!(done.get(), 10);
        }
    }

    #[test]
    fn shared_recv_timeout() {
        procrt::run(|| {
            let (tx, rx) = channel();
            let total = 5;
            for _ in 0..total {
                let tx = tx.clone();
                spawn(move || {
                    tx.send(()).unwrap();
                })
                .unwrap();
            }
            for _ in 0..total {
                rx.recv().unwrap();
            }
            assert_eq!(
                rx.recv_timeout(Duration::from_millis(1)),
                Err(RecvTimeoutError::Timeout)
            );
            tx.send(()).unwrap();
            assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(()));
        });
    }

    #[test]
    fn recv_a_lot() {
        procrt::run(|| {
            let (tx, rx) = sync_channel(10000);
            for _ in 0..10000 {
                tx.send(()).unwrap();
            }
            for _ in 0..10000 {
                rx.recv().unwrap();
            }
        });
    }

    #[test]
    fn test_recv_iter_break() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<i32>(0);
            let (count_tx, count_rx) = sync_channel(0);
            let _t = spawn(move || {
                let mut count = 0;
                for x in rx.iter() {
                    if count >= 3 {
                        break;
                    } else {
                        count += x;
                    }
                }
                count_tx.send(count).unwrap();
            });
            tx.send(2).unwrap();
            tx.send(2).unwrap();
            tx.send(2).unwrap();
            let _ = tx.try_send(2);
            drop(tx);
            assert_eq!(count_rx.recv().unwrap(), 4);
        });
    }

    #[test]
    fn test_recv_try_iter() {
        procrt::run(|| {
            let (request_tx, request_rx) = channel();
            let (response_tx, response_rx) = channel();
            // Request `x`s until we have `6`.
            let t = spawn(move || {
                let mut count = 0;
                for _ in 0..10_000 {
                    for x in response_rx.try_iter() {
                        count += x;
                        if count == 6 {
                            return count;
                        }
                    }
                    request_tx.send(()).unwrap();
                    // A thread would spin here; a proc lets the server run.
                    yield_now();
                }
                panic!("never got to 6: {count}");
            })
            .unwrap();
            for _ in request_rx.iter() {
                if response_tx.send(2).is_err() {
                    break;
                }
            }
            assert_eq!(t.join().unwrap(), 6);
        });
    }

    #[test]
    fn try_recv_states() {
        procrt::run(|| {
            let (tx1, rx1) = sync_channel::<i32>(1);
            let (tx2, rx2) = sync_channel::<()>(1);
            let (tx3, rx3) = sync_channel::<()>(1);
            let _t = spawn(move || {
                rx2.recv().unwrap();
                tx1.send(1).unwrap();
                tx3.send(()).unwrap();
                rx2.recv().unwrap();
                drop(tx1);
                tx3.send(()).unwrap();
            });
            assert_eq!(rx1.try_recv(), Err(TryRecvError::Empty));
            tx2.send(()).unwrap();
            rx3.recv().unwrap();
            assert_eq!(rx1.try_recv(), Ok(1));
            assert_eq!(rx1.try_recv(), Err(TryRecvError::Empty));
            tx2.send(()).unwrap();
            rx3.recv().unwrap();
            assert_eq!(rx1.try_recv(), Err(TryRecvError::Disconnected));
        });
    }

    #[test]
    fn destroy_upgraded_shared_port_when_sender_still_active() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<()>(0);
            let (tx2, rx2) = sync_channel::<()>(0);
            let _t = spawn(move || {
                rx.recv().unwrap(); // wait on a oneshot
                drop(rx); // destroy a shared
                tx2.send(()).unwrap();
            });
            // make sure the other proc has gone to sleep
            for _ in 0..50 {
                yield_now();
            }
            // upgrade to a shared chan and send a message
            let t = tx.clone();
            drop(tx);
            t.send(()).unwrap();
            // wait for the child proc to exit before we exit
            rx2.recv().unwrap();
        });
    }

    #[test]
    fn send4() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<i32>(0);
            let tx2 = tx.clone();
            let (done, donerx) = channel();
            let done2 = done.clone();
            let _t = spawn(move || {
                assert!(tx.send(1).is_err());
                done.send(()).unwrap();
            });
            let _t = spawn(move || {
                assert!(tx2.send(2).is_err());
                done2.send(()).unwrap();
            });
            drop(rx);
            donerx.recv().unwrap();
            donerx.recv().unwrap();
        });
    }

    #[test]
    fn try_send1_2_3() {
        procrt::run(|| {
            let (tx, _rx) = sync_channel::<i32>(0);
            assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));

            let (tx, _rx) = sync_channel::<i32>(1);
            assert_eq!(tx.try_send(1), Ok(()));
            assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));

            let (tx, rx) = sync_channel::<i32>(1);
            assert_eq!(tx.try_send(1), Ok(()));
            drop(rx);
            assert_eq!(tx.try_send(1), Err(TrySendError::Disconnected(1)));
        });
    }

    #[test]
    fn issue_15761() {
        fn repro() {
            let (tx1, rx1) = sync_channel::<()>(3);
            let (tx2, rx2) = sync_channel::<()>(3);
            let _t = spawn(move || {
                rx1.recv().unwrap();
                tx2.try_send(()).unwrap();
            });
            tx1.try_send(()).unwrap();
            rx2.recv().unwrap();
        }
        procrt::run(|| {
            for _ in 0..100 {
                repro()
            }
        });
    }

    #[test]
    fn drop_unreceived() {
        procrt::run(|| {
            let (tx, rx) = sync_channel::<Rc<()>>(1);
            let msg = Rc::new(());
            let weak = Rc::downgrade(&msg);
            assert!(tx.send(msg).is_ok());
            drop(rx);
            // Messages should be dropped immediately when the last receiver
            // is destroyed.
            assert!(weak.upgrade().is_none());
            drop(tx);
        });
    }
}
