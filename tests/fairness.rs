//! Nobody starves: yielders take turns, a proc spinning on `yield_now`
//! until a flag is set gets to see it set, and a woken or yielding proc
//! runs even while a park/unpark pair keeps the CPU busy without yielding.

use procrt::{park, spawn, unparker, yield_now, Unparker};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

#[test]
fn yielders_take_turns_round_robin() {
    const YIELDERS: usize = 8;
    const ROUNDS: u32 = 2_000;
    let counts: Rc<Vec<Cell<u32>>> = Rc::new((0..YIELDERS).map(|_| Cell::new(0)).collect());
    let worst = Rc::new(Cell::new(0u32));
    let (c, w) = (counts.clone(), worst.clone());
    procrt::run(move || {
        let handles: Vec<_> = (0..YIELDERS)
            .map(|i| {
                let (c, w) = (c.clone(), w.clone());
                spawn(move || {
                    for _ in 0..ROUNDS {
                        c[i].set(c[i].get() + 1);
                        // Once every yielder has started, no one is ever
                        // more than one turn ahead of another.
                        if c.iter().all(|x| x.get() > 0) {
                            let max = c.iter().map(Cell::get).max().unwrap();
                            let min = c.iter().map(Cell::get).min().unwrap();
                            w.set(w.get().max(max - min));
                        }
                        yield_now();
                    }
                })
                .unwrap()
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    assert!(counts.iter().all(|c| c.get() == ROUNDS));
    assert!(
        worst.get() <= 1,
        "a yielder got {} turns ahead of another",
        worst.get()
    );
}

#[test]
fn a_proc_spinning_on_yield_sees_the_flag_set_by_another() {
    const YIELDERS: usize = 4;
    let flag = Rc::new(Cell::new(false));
    let spins = Rc::new(Cell::new(0u64));
    let counts: Rc<Vec<Cell<u32>>> = Rc::new((0..YIELDERS).map(|_| Cell::new(0)).collect());
    let (f, s, c) = (flag.clone(), spins.clone(), counts.clone());
    procrt::run(move || {
        let (f1, s1) = (f.clone(), s.clone());
        let spinner = spawn(move || {
            while !f1.get() {
                s1.set(s1.get() + 1);
                yield_now();
            }
        })
        .unwrap();
        let stop = Rc::new(Cell::new(false));
        let yielders: Vec<_> = (0..YIELDERS)
            .map(|i| {
                let (c, stop) = (c.clone(), stop.clone());
                spawn(move || {
                    while !stop.get() {
                        c[i].set(c[i].get() + 1);
                        yield_now();
                    }
                })
                .unwrap()
            })
            .collect();
        // The setter yields a while, then sets the flag.
        let f2 = f.clone();
        let setter = spawn(move || {
            for _ in 0..1_000 {
                yield_now();
            }
            f2.set(true);
        })
        .unwrap();
        setter.join().unwrap();
        spinner.join().unwrap();
        stop.set(true);
        for y in yielders {
            y.join().unwrap();
        }
    });
    assert!(flag.get());
    // The spinner ran about as often as the setter yielded.
    assert!(
        (900..=1_100).contains(&spins.get()),
        "spinner spun {} times",
        spins.get()
    );
    let max = counts.iter().map(Cell::get).max().unwrap();
    let min = counts.iter().map(Cell::get).min().unwrap();
    assert!(min > 0 && max - min <= 1, "unbalanced yielders: {counts:?}");
}

/// The two sides of a ping-pong that never yields: each unparks the other
/// and parks, until `stop` is set or `limit` rounds have passed. Side 0
/// calls `on_round_10` in its tenth round. Returns the rounds each side
/// played. The pair starts playing when the caller next blocks.
fn busy_pair(
    stop: Rc<Cell<bool>>,
    limit: u32,
    on_round_10: Box<dyn Fn()>,
) -> (procrt::JoinHandle<u32>, procrt::JoinHandle<u32>) {
    let slots: Rc<[RefCell<Option<Unparker>>; 2]> = Rc::default();
    let turn = Rc::new(Cell::new(0usize));
    let hook = Rc::new(on_round_10);
    let side = |me: usize| {
        let (slots, turn, stop, hook) = (slots.clone(), turn.clone(), stop.clone(), hook.clone());
        move || {
            *slots[me].borrow_mut() = Some(unparker());
            while slots[1 - me].borrow().is_none() {
                park();
            }
            let mut rounds = 0;
            while !stop.get() && rounds < limit {
                while turn.get() != me && !stop.get() {
                    park();
                }
                rounds += 1;
                if me == 0 && rounds == 10 {
                    hook();
                }
                turn.set(1 - me);
                slots[1 - me].borrow().as_ref().unwrap().unpark();
            }
            // Let the other side see the stop too.
            slots[1 - me].borrow().as_ref().unwrap().unpark();
            rounds
        }
    };
    let a = spawn(side(0)).unwrap();
    let b = spawn(side(1)).unwrap();
    slots[0].borrow().as_ref().unwrap().unpark();
    (a, b)
}

#[test]
fn a_woken_proc_is_not_starved_by_a_busy_ping_pong() {
    const LIMIT: u32 = 1_000_000;
    let r = procrt::run(|| {
        let stop = Rc::new(Cell::new(false));
        let slot: Rc<RefCell<Option<Unparker>>> = Rc::default();
        let (s1, st1) = (slot.clone(), stop.clone());
        // The third proc parks; one side of the pair wakes it in its tenth
        // round, so it waits behind the pair in the LIFO queue.
        let third = spawn(move || {
            *s1.borrow_mut() = Some(unparker());
            park();
            st1.set(true);
        })
        .unwrap();
        let s2 = slot.clone();
        let wake_third = Box::new(move || s2.borrow().as_ref().unwrap().unpark());
        let (a, b) = busy_pair(stop.clone(), LIMIT, wake_third);
        third.join().unwrap();
        (a.join().unwrap(), b.join().unwrap(), stop.get())
    });
    let (a, b, stopped) = r;
    assert!(stopped, "the woken proc never ran");
    assert!(
        a < LIMIT && b < LIMIT,
        "the pair played {a}+{b} rounds before the woken proc ran"
    );
    // The policy promises a turn within 62 picks.
    assert!(a + b < 200, "the woken proc waited {} rounds", a + b);
    assert!(a >= 10, "the pair stopped before waking the third proc");
}

#[test]
fn a_yielding_proc_is_not_starved_by_a_busy_ping_pong() {
    const LIMIT: u32 = 1_000_000;
    let r = procrt::run(|| {
        let stop = Rc::new(Cell::new(false));
        let st = stop.clone();
        // Yields first (into the yield queue), then stops the pair.
        let yielder = spawn(move || {
            yield_now();
            st.set(true);
        })
        .unwrap();
        let (a, b) = busy_pair(stop.clone(), LIMIT, Box::new(|| ()));
        yielder.join().unwrap();
        (a.join().unwrap(), b.join().unwrap(), stop.get())
    });
    let (a, b, stopped) = r;
    assert!(stopped, "the yielding proc never ran again");
    assert!(
        a < LIMIT && b < LIMIT,
        "the pair played {a}+{b} rounds before the yielder ran"
    );
    assert!(a + b < 200, "the yielder waited {} rounds", a + b);
}
