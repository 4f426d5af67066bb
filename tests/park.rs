//! `park` / `unpark`: ping-pong between procs, the token semantics of
//! `std::thread::park`, unparkers that outlive their proc, joins that wait.

mod util;

use procrt::{park, spawn, unparker, yield_now, Runtime, Unparker};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// State shared by the two sides of a ping-pong.
#[derive(Default)]
struct Table {
    /// Whose turn it is: 0 or 1.
    turn: Cell<usize>,
    /// Turns taken by each side.
    count: [Cell<u32>; 2],
    /// Each side's unparker, published when it starts.
    unparkers: [RefCell<Option<Unparker>>; 2],
    /// How many times a `park` returned to each side.
    wakeups: [Cell<u32>; 2],
}

/// One side of the ping-pong: takes `rounds` turns, handing the turn over
/// and waking the other side after each one.
fn player(t: Rc<Table>, me: usize, rounds: u32) -> u32 {
    let other = 1 - me;
    *t.unparkers[me].borrow_mut() = Some(unparker());
    if let Some(u) = t.unparkers[other].borrow().as_ref() {
        u.unpark();
    }
    while t.unparkers[other].borrow().is_none() {
        park();
    }
    for _ in 0..rounds {
        while t.turn.get() != me {
            park();
            t.wakeups[me].set(t.wakeups[me].get() + 1);
        }
        // Strict alternation: side 0 moves first, so when side 0 moves the
        // counts are equal, and when side 1 moves side 0 is one ahead.
        let (mine, theirs) = (t.count[me].get(), t.count[other].get());
        assert_eq!(mine + me as u32, theirs, "side {me} moved out of turn");
        t.count[me].set(mine + 1);
        t.turn.set(other);
        t.unparkers[other].borrow().as_ref().unwrap().unpark();
    }
    t.count[me].get()
}

#[test]
fn park_unpark_ping_pong_alternates() {
    const ROUNDS: u32 = 10_000;
    let t = Rc::new(Table::default());
    let t2 = t.clone();
    let (a, b) = procrt::run(move || {
        let t = t2;
        let (ta, tb) = (t.clone(), t.clone());
        let a = spawn(move || player(ta, 0, ROUNDS)).unwrap();
        let b = spawn(move || player(tb, 1, ROUNDS)).unwrap();
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((a, b), (ROUNDS, ROUNDS));
    assert_eq!(t.count[0].get(), ROUNDS);
    assert_eq!(t.count[1].get(), ROUNDS);
    // Each side really waited for the other nearly every round (a park that
    // always returned at once would leave these near zero).
    assert!(
        t.wakeups[0].get() >= ROUNDS - 1,
        "side 0 woke {} times",
        t.wakeups[0].get()
    );
    assert!(
        t.wakeups[1].get() >= ROUNDS - 1,
        "side 1 woke {} times",
        t.wakeups[1].get()
    );
}

#[test]
fn unpark_before_park_makes_park_return_at_once() {
    let flag = Rc::new(Cell::new(false));
    let slot: Rc<RefCell<Option<Unparker>>> = Rc::default();
    let (f, s) = (flag.clone(), slot.clone());
    let steps = procrt::run(move || {
        let (f2, s2) = (f.clone(), s.clone());
        let p = spawn(move || {
            let me = unparker();
            *s2.borrow_mut() = Some(me.clone());
            // Two unparks leave one token: tokens do not add up.
            me.unpark();
            me.unpark();
            // Returns at once (nothing else could wake us: a real block
            // here would run the root, which checks `f` is still false).
            park();
            let first = f2.get();
            // This one blocks until the other proc sets the flag.
            park();
            let second = f2.get();
            (first, second)
        })
        .unwrap();
        // The child is parked in its second park now.
        assert!(!p.is_finished());
        assert!(!f.get());
        let q = spawn(move || {
            f.set(true);
            s.borrow().as_ref().unwrap().unpark();
        })
        .unwrap();
        q.join().unwrap();
        p.join().unwrap()
    });
    assert_eq!(steps, (false, true));
    drop(slot);
}

#[test]
fn park_after_a_lone_unpark_does_not_block() {
    // Nothing else in the runtime could wake the proc: if park blocked,
    // block_on would report a deadlock.
    let r = procrt::run(|| {
        let me = unparker();
        me.unpark();
        park();
        "returned"
    });
    assert_eq!(r, "returned");
}

#[test]
fn park_with_nothing_to_wake_it_is_a_reported_deadlock() {
    let rt = Runtime::new().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(park)));
    let payload = r.expect_err("block_on returned though its root parked forever");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("deadlock"), "{msg}");
    // The runtime still works afterwards.
    assert_eq!(rt.block_on(|| spawn(|| 3).unwrap().join().unwrap()), 3);
}

#[test]
fn unpark_of_a_finished_proc_is_a_no_op() {
    let rt = Runtime::new().unwrap();
    let u = rt.block_on(|| {
        let h = spawn(unparker).unwrap();
        let u = h.join().unwrap();
        // The proc has ended: unparking it does nothing, twice over.
        u.unpark();
        u.clone().unpark();
        // The caller is not woken by it either: a park here must block
        // until someone else wakes us, which the spawned proc below does.
        let woken = Rc::new(Cell::new(false));
        let w = woken.clone();
        let me = unparker();
        let _waker = spawn(move || {
            yield_now();
            w.set(true);
            me.unpark();
        })
        .unwrap();
        park();
        assert!(woken.get(), "park returned before the waker ran");
        u
    });
    // After its runtime is gone too.
    u.unpark();
    drop(rt);
    u.unpark();
    assert_eq!(u.id(), u.clone().id());
}

#[test]
fn join_waits_for_a_parked_proc() {
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    procrt::run(move || {
        let slot: Rc<RefCell<Option<Unparker>>> = Rc::default();
        let (s, o1) = (slot.clone(), o.clone());
        let sleeper = spawn(move || {
            *s.borrow_mut() = Some(unparker());
            o1.borrow_mut().push("sleeper parks");
            park();
            o1.borrow_mut().push("sleeper wakes");
            7
        })
        .unwrap();
        let o2 = o.clone();
        let joiner = spawn(move || {
            o2.borrow_mut().push("joiner waits");
            let v = sleeper.join().unwrap();
            o2.borrow_mut().push("joiner done");
            v * 2
        })
        .unwrap();
        assert!(!joiner.is_finished());
        o.borrow_mut().push("root wakes sleeper");
        slot.borrow().as_ref().unwrap().unpark();
        joiner.join().unwrap()
    });
    assert_eq!(
        *order.borrow(),
        [
            "sleeper parks",
            "joiner waits",
            "root wakes sleeper",
            "sleeper wakes",
            "joiner done"
        ]
    );
}

#[test]
fn spurious_unparks_do_not_end_a_join_early() {
    let v = procrt::run(|| {
        let root = unparker();
        let slow = spawn(move || {
            for _ in 0..5 {
                // Wake the joiner while we are not done yet.
                root.unpark();
                yield_now();
            }
            11
        })
        .unwrap();
        slow.join().unwrap()
    });
    assert_eq!(v, 11);
}

#[test]
fn park_outside_a_proc_panics() {
    let r = std::panic::catch_unwind(park);
    assert!(r.is_err());
    let r = std::panic::catch_unwind(unparker);
    assert!(r.is_err());
}
