//! Actors (`procrt::actor`): mailbox order, request/reply and its errors,
//! panics in handlers, the bounded mailbox's backpressure, the registry,
//! supervisors (restarts, transient children, the restart-intensity limit).
//!
//! Time is only ever bounded from below: a loaded machine may run any of
//! this late, never early.

use procrt::actor::{
    lookup, register, registered, spawn_actor, unregister, whereis, ActorBuilder, Addr, CallError,
    ChildSpec, Context, LookupError, RegisterError, Reply, Supervisor, SupervisorError,
};
use procrt::chan::{SendError, TrySendError};
use procrt::{sleep, spawn, yield_now, JoinError, Runtime};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A shared, append-only record of what happened, in order.
type Log<T> = Rc<RefCell<Vec<T>>>;

fn log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

/// Long enough never to expire in these tests, even on a loaded machine.
const LONG: Duration = Duration::from_secs(60);

/// The messages of a counter actor.
enum Counter {
    Add(u64),
    Get(Reply<u64>),
    /// Panics in the handler, with the reply still unanswered.
    Crash(Reply<u64>),
    /// Panics in the handler; nobody waits.
    CrashQuietly,
    /// Ends the actor normally.
    Stop,
}

fn counter(n: &mut u64, msg: Counter, ctx: &Context<Counter>) {
    match msg {
        Counter::Add(k) => *n += k,
        Counter::Get(reply) => {
            let _ = reply.send(*n);
        }
        Counter::Crash(_reply) => panic!("counter crashed at {n}"),
        Counter::CrashQuietly => panic!("counter crashed quietly at {n}"),
        Counter::Stop => ctx.stop(),
    }
}

/// Yields until `f` gives `Some`, at most `LONG`.
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(start.elapsed() < LONG, "condition never became true");
        yield_now();
    }
}

#[test]
fn messages_are_handled_in_order_and_the_state_comes_back() {
    let seen = log();
    let seen2 = seen.clone();
    let (state, from_a, from_b) = procrt::run(move || {
        let (addr, handle) = ActorBuilder::new()
            .capacity(4) // small: the senders below also park on a full mailbox
            .spawn(
                0u32,
                move |count: &mut u32, (who, i): (char, u32), _: &Context<(char, u32)>| {
                    *count += 1;
                    seen2.borrow_mut().push((who, i));
                },
            )
            .unwrap();
        let senders: Vec<_> = ['a', 'b']
            .into_iter()
            .map(|who| {
                let addr = addr.clone();
                spawn(move || {
                    for i in 0..100 {
                        addr.send((who, i)).unwrap();
                    }
                })
                .unwrap()
            })
            .collect();
        drop(addr);
        for s in senders {
            s.join().unwrap();
        }
        // The last address is gone: the actor drains its mailbox and ends.
        let state = handle.join().unwrap();
        let seen = seen.borrow();
        let from = |w| {
            seen.iter()
                .filter(|(who, _)| *who == w)
                .map(|&(_, i)| i)
                .collect::<Vec<_>>()
        };
        (state, from('a'), from('b'))
    });
    assert_eq!(state, 200);
    // Each sender's messages arrive in the order it sent them.
    assert_eq!(from_a, (0..100).collect::<Vec<_>>());
    assert_eq!(from_b, (0..100).collect::<Vec<_>>());
}

#[test]
fn call_returns_each_caller_its_own_reply() {
    let results = procrt::run(|| {
        let addr = spawn_actor(0u64, counter);
        let callers: Vec<_> = (1..=10u64)
            .map(|k| {
                let addr = addr.clone();
                spawn(move || {
                    addr.send(Counter::Add(k)).unwrap();
                    addr.call(Counter::Get, LONG).unwrap()
                })
                .unwrap()
            })
            .collect();
        let mut got: Vec<u64> = callers.into_iter().map(|h| h.join().unwrap()).collect();
        got.push(addr.call(Counter::Get, LONG).unwrap());
        got
    });
    // Every caller saw at least its own addition; the last call sees all.
    for (i, &v) in results[..10].iter().enumerate() {
        assert!(v > i as u64, "caller {i} got {v}");
    }
    assert_eq!(results[10], 55);
}

/// Messages of an actor that keeps requests without answering them.
enum Hoard {
    /// Kept in the state, unanswered.
    Keep(Reply<u32>),
    /// Answers every kept request now; replies with how many the callers
    /// were still waiting for.
    Flush(Reply<usize>),
    /// Drops the reply without answering.
    Drop(Reply<u32>),
}

fn hoard(kept: &mut Vec<Reply<u32>>, msg: Hoard, _: &Context<Hoard>) {
    match msg {
        Hoard::Keep(r) => kept.push(r),
        Hoard::Flush(r) => {
            let delivered = kept.drain(..).map(|k| k.send(1)).filter(Result::is_ok);
            let _ = r.send(delivered.count());
        }
        Hoard::Drop(r) => drop(r),
    }
}

#[test]
fn call_times_out_when_no_reply_comes() {
    let (err, waited, delivered) = procrt::run(|| {
        let addr = spawn_actor(Vec::new(), hoard);
        let timeout = Duration::from_millis(30);
        let start = Instant::now();
        let err = addr.call(Hoard::Keep, timeout);
        let waited = start.elapsed();
        // The kept reply now goes nowhere: its caller stopped waiting.
        let delivered = addr.call(Hoard::Flush, LONG).unwrap();
        (err, waited, delivered)
    });
    assert_eq!(err, Err(CallError::Timeout));
    assert!(
        waited >= Duration::from_millis(30),
        "returned after {waited:?}"
    );
    assert_eq!(delivered, 0);
}

#[test]
fn a_dropped_reply_fails_the_call_at_once() {
    let (err, waited) = procrt::run(|| {
        let addr = spawn_actor(Vec::new(), hoard);
        let start = Instant::now();
        let err = addr.call(Hoard::Drop, LONG);
        (err, start.elapsed())
    });
    assert_eq!(err, Err(CallError::NoReply));
    assert!(waited < LONG);
}

/// Messages of an actor that can be kept busy.
enum Busy {
    /// Parks in the handler until the flag is set.
    WaitFor(Rc<Cell<bool>>),
    /// Records its number, replies with it.
    Ping(u32, Reply<u32>),
    /// Records its number.
    Note(u32),
}

fn busy(handled: &mut Log<u32>, msg: Busy, _: &Context<Busy>) {
    match msg {
        Busy::WaitFor(flag) => {
            while !flag.get() {
                sleep(Duration::from_millis(1));
            }
        }
        Busy::Ping(i, r) => {
            handled.borrow_mut().push(i);
            let _ = r.send(i);
        }
        Busy::Note(i) => handled.borrow_mut().push(i),
    }
}

#[test]
fn a_request_abandoned_before_it_was_taken_is_never_handled() {
    let handled = log();
    let h2 = handled.clone();
    let (first, second) = procrt::run(move || {
        let addr = spawn_actor(h2, busy);
        // The actor is held at a gate that opens only after the first call
        // has given up. (A sleep would not do: on a loaded machine both
        // deadlines may pass before either proc runs again, and the actor
        // may then answer before the caller sees its timeout.)
        let gate = Rc::new(Cell::new(false));
        addr.send(Busy::WaitFor(gate.clone())).unwrap();
        // Queued behind the gate, and given up on before the actor is free.
        let first = addr.call(|r| Busy::Ping(1, r), Duration::from_millis(10));
        gate.set(true);
        let second = addr.call(|r| Busy::Ping(2, r), LONG);
        (first, second)
    });
    assert_eq!(first, Err(CallError::Timeout));
    assert_eq!(second, Ok(2));
    assert_eq!(*handled.borrow(), [2]);
}

#[test]
fn a_call_to_an_actor_that_ended_fails_fast() {
    let (call, send, try_send, alive, waited) = procrt::run(|| {
        let (addr, handle) = ActorBuilder::new().spawn(0u64, counter).unwrap();
        addr.send(Counter::Stop).unwrap();
        assert_eq!(handle.join().unwrap(), 0);
        let start = Instant::now();
        let call = addr.call(Counter::Get, LONG);
        let waited = start.elapsed();
        let send = matches!(addr.send(Counter::Add(1)), Err(SendError(Counter::Add(1))));
        let try_send = matches!(
            addr.try_send(Counter::Add(2)),
            Err(TrySendError::Disconnected(Counter::Add(2)))
        );
        (call, send, try_send, addr.is_alive(), waited)
    });
    assert_eq!(call, Err(CallError::Gone));
    assert!(send && try_send && !alive);
    assert!(waited < LONG, "took {waited:?}");
}

#[test]
fn a_panicking_handler_ends_its_actor_and_fails_its_calls() {
    let rt = Runtime::new().unwrap();
    let (in_flight, after, joined, other, bystander) = rt.block_on(|| {
        let (addr, handle) = ActorBuilder::new()
            .name("fragile")
            .spawn(7u64, counter)
            .unwrap();
        let other = spawn_actor(100u64, counter);
        let in_flight = addr.call(Counter::Crash, LONG);
        let after = addr.call(Counter::Get, LONG);
        let joined = handle.join();
        // Procs and actors that were not involved keep running.
        let bystander = spawn(|| 5).unwrap().join().unwrap();
        (
            in_flight,
            after,
            joined,
            other.call(Counter::Get, LONG),
            bystander,
        )
    });
    assert_eq!(in_flight, Err(CallError::Panicked));
    assert_eq!(after, Err(CallError::Gone));
    let err = joined.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.panic_message(), Some("counter crashed at 7"));
    assert_eq!(other, Ok(100));
    assert_eq!(bystander, 5);
}

#[test]
fn a_request_queued_behind_a_panic_fails_with_gone() {
    // The panicking handler is held until a second request is queued
    // behind it.
    let (in_flight, queued) = procrt::run(|| {
        let gate = Rc::new(Cell::new(false));
        let g = gate.clone();
        let addr = spawn_actor((), move |_: &mut (), msg: Counter, _: &Context<Counter>| {
            if let Counter::Crash(_r) = msg {
                while !g.get() {
                    yield_now();
                }
                panic!("crash after the gate opened");
            }
        });
        let a = addr.clone();
        let first = spawn(move || a.call(Counter::Crash, LONG)).unwrap();
        let a = addr.clone();
        let second = spawn(move || a.call(Counter::Get, LONG)).unwrap();
        // `second` ran until it parked in `call`: its request is queued.
        gate.set(true);
        (first.join().unwrap(), second.join().unwrap())
    });
    assert_eq!(in_flight, Err(CallError::Panicked));
    assert_eq!(queued, Err(CallError::Gone));
}

#[test]
fn a_full_mailbox_parks_send_and_fails_try_send() {
    let handled = log();
    let h2 = handled.clone();
    let (full, parked_while_full, sent) = procrt::run(move || {
        let (addr, handle) = ActorBuilder::new().capacity(2).spawn(h2, busy).unwrap();
        // The actor has not run since it was spawned: nothing is taken yet.
        addr.try_send(Busy::Note(1)).unwrap();
        addr.try_send(Busy::Note(2)).unwrap();
        let full = matches!(
            addr.try_send(Busy::Note(3)),
            Err(TrySendError::Full(Busy::Note(3)))
        );
        let sent = Rc::new(Cell::new(false));
        let (a, s) = (addr.clone(), sent.clone());
        let sender = spawn(move || {
            a.send(Busy::Note(3)).unwrap(); // parks: the mailbox is full
            s.set(true);
        })
        .unwrap();
        let parked_while_full = !sent.get();
        sender.join().unwrap();
        drop(addr);
        handle.join().unwrap();
        (full, parked_while_full, sent.get())
    });
    assert!(full, "try_send on a full mailbox must give Full");
    assert!(parked_while_full, "send on a full mailbox must park");
    assert!(sent);
    assert_eq!(*handled.borrow(), [1, 2, 3]);
}

#[test]
fn call_waits_for_room_only_until_its_timeout() {
    let handled = log();
    let h2 = handled.clone();
    let (err, waited, later) = procrt::run(move || {
        let addr = ActorBuilder::new().capacity(1).spawn(h2, busy).unwrap().0;
        let gate = Rc::new(Cell::new(false));
        addr.send(Busy::WaitFor(gate.clone())).unwrap();
        yield_now(); // the actor takes it and waits at the gate
        addr.try_send(Busy::Note(1)).unwrap(); // the mailbox is now full
        let start = Instant::now();
        let err = addr.call(|r| Busy::Ping(2, r), Duration::from_millis(30));
        let waited = start.elapsed();
        gate.set(true);
        let later = addr.call(|r| Busy::Ping(3, r), LONG);
        (err, waited, later)
    });
    assert_eq!(err, Err(CallError::Timeout));
    assert!(
        waited >= Duration::from_millis(30),
        "returned after {waited:?}"
    );
    assert_eq!(later, Ok(3));
    // The timed-out request never entered the mailbox.
    assert_eq!(*handled.borrow(), [1, 3]);
}

#[test]
fn stop_ends_an_actor_and_drops_what_is_queued() {
    let handled = log();
    let h2 = handled.clone();
    let state = procrt::run(move || {
        let (addr, handle) = ActorBuilder::new().spawn(h2, busy).unwrap();
        addr.send(Busy::Note(1)).unwrap();
        addr.send(Busy::Note(2)).unwrap();
        addr.stop();
        let state = handle.join().unwrap();
        assert!(!addr.is_alive());
        state
    });
    assert!(Rc::ptr_eq(&state, &handled));
    assert!(
        handled.borrow().is_empty(),
        "handled {:?}",
        handled.borrow()
    );
}

#[test]
fn a_handler_can_send_to_itself_through_its_context() {
    let seen = log();
    let s2 = seen.clone();
    procrt::run(move || {
        let (addr, handle) = ActorBuilder::new()
            .spawn((), move |_: &mut (), n: u32, ctx: &Context<u32>| {
                s2.borrow_mut().push(n);
                match n {
                    0 => ctx.stop(),
                    n => ctx.addr().unwrap().try_send(n - 1).unwrap(),
                }
            })
            .unwrap();
        addr.send(5).unwrap();
        handle.join().unwrap();
    });
    assert_eq!(*seen.borrow(), [5, 4, 3, 2, 1, 0]);
}

#[test]
fn the_registry_finds_live_actors_by_name_and_type() {
    procrt::run(|| {
        let a = spawn_actor(1u64, counter);
        let b = spawn_actor(2u64, counter);
        register("reg-a", &a).unwrap();
        register("reg-a", &a).unwrap(); // again: nothing changes
        assert_eq!(
            register("reg-a", &b),
            Err(RegisterError::Taken("reg-a".into()))
        );
        register("reg-b", &b).unwrap();
        assert_eq!(registered(), ["reg-a", "reg-b"]);

        let found: Addr<Counter> = whereis("reg-a").unwrap();
        assert_eq!(found, a);
        assert_eq!(found.call(Counter::Get, LONG), Ok(1));
        assert!(whereis::<Counter>("nobody").is_none());
        assert_eq!(
            lookup::<Counter>("nobody").unwrap_err(),
            LookupError::NotFound
        );

        // The wrong message type: None, and lookup says why.
        assert!(whereis::<u32>("reg-a").is_none());
        match lookup::<u32>("reg-a") {
            Err(LookupError::WrongType {
                registered,
                requested,
            }) => {
                assert!(registered.ends_with("Counter"), "{registered}");
                assert_eq!(requested, "u32");
            }
            other => panic!("expected WrongType, got {other:?}"),
        }

        assert!(unregister("reg-b"));
        assert!(!unregister("reg-b"));
        assert!(whereis::<Counter>("reg-b").is_none());
        assert!(b.is_alive(), "unregister does not stop the actor");
        register("reg-b", &b).unwrap();
        assert!(whereis::<Counter>("reg-b").is_some());
    });
}

#[test]
fn names_of_dead_actors_are_removed() {
    procrt::run(|| {
        let (a, handle) = ActorBuilder::new().spawn(0u64, counter).unwrap();
        register("doomed", &a).unwrap();
        a.send(Counter::CrashQuietly).unwrap();
        assert!(handle.join().is_err());
        assert!(whereis::<Counter>("doomed").is_none());
        assert!(!registered().contains(&"doomed".to_owned()));
        assert_eq!(
            register("doomed", &a),
            Err(RegisterError::Dead("doomed".into()))
        );
        // The name is free for another actor.
        let b = spawn_actor(0u64, counter);
        register("doomed", &b).unwrap();
        assert_eq!(whereis::<Counter>("doomed"), Some(b));
    });
}

#[test]
fn a_registered_actor_stays_reachable_until_unregistered() {
    procrt::run(|| {
        let (a, handle) = ActorBuilder::new().spawn(3u64, counter).unwrap();
        register("kept", &a).unwrap();
        drop(a);
        yield_now();
        let again = whereis::<Counter>("kept").expect("registered actor gone");
        assert_eq!(again.call(Counter::Get, LONG), Ok(3));
        drop(again);
        // The registry held the last address: now the actor ends.
        assert!(unregister("kept"));
        assert_eq!(handle.join().unwrap(), 3);
    });
}

#[test]
fn dropping_the_runtime_clears_its_actors_names() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let a = spawn_actor(0u64, counter);
        register("outlived", &a).unwrap();
    });
    assert_eq!(registered(), ["outlived"]);
    drop(rt); // cancels the actor, whose end removes its name
    assert!(registered().is_empty());
}

/// A supervisor of one counter named `name`.
fn counter_supervisor(name: &str, max_restarts: u32, period: Duration) -> Supervisor {
    Supervisor::new()
        .max_restarts(max_restarts)
        .period(period)
        .child(ChildSpec::new(name, || 0u64, counter).capacity(8))
}

#[test]
fn a_supervisor_restarts_a_crashed_child_under_its_name() {
    procrt::run(|| {
        let sup = counter_supervisor("sup-counter", 3, LONG).spawn().unwrap();
        let first = whereis::<Counter>("sup-counter").unwrap();
        first.send(Counter::Add(5)).unwrap();
        assert_eq!(first.call(Counter::Get, LONG), Ok(5));

        // A call in flight when the child panics fails with Panicked.
        assert_eq!(first.call(Counter::Crash, LONG), Err(CallError::Panicked));
        // The old address is not redirected.
        assert_eq!(first.call(Counter::Get, LONG), Err(CallError::Gone));
        assert!(!first.is_alive());

        let second = wait_for(|| whereis::<Counter>("sup-counter"));
        assert_ne!(second, first);
        assert_eq!(sup.restarts(), 1);
        // A fresh state.
        assert_eq!(second.call(Counter::Get, LONG), Ok(0));
        second.send(Counter::Add(2)).unwrap();
        assert_eq!(second.call(Counter::Get, LONG), Ok(2));

        second.send(Counter::CrashQuietly).unwrap();
        let third = wait_for(|| whereis::<Counter>("sup-counter").filter(|a| *a != second));
        assert_eq!(third.call(Counter::Get, LONG), Ok(0));
        assert_eq!(sup.restarts(), 2);

        sup.stop();
        sup.join().unwrap();
        assert!(!third.is_alive());
        assert!(whereis::<Counter>("sup-counter").is_none());
    });
}

#[test]
fn a_child_that_ends_normally_is_not_restarted() {
    procrt::run(|| {
        let sup = Supervisor::new()
            .child(ChildSpec::new("calm-1", || 0u64, counter))
            .child(ChildSpec::new("calm-2", || 0u64, counter))
            .spawn()
            .unwrap();
        let one = whereis::<Counter>("calm-1").unwrap();
        let two = whereis::<Counter>("calm-2").unwrap();
        one.send(Counter::Stop).unwrap(); // the handler stops itself
        wait_for(|| (!one.is_alive()).then_some(()));
        yield_now();
        assert_eq!(sup.restarts(), 0);
        assert!(whereis::<Counter>("calm-1").is_none());
        assert!(!sup.is_finished());
        two.stop(); // stopped from outside
                    // The last child ended normally: the supervisor ends with Ok.
        sup.join().unwrap();
        assert!(whereis::<Counter>("calm-2").is_none());
    });
}

#[test]
fn too_many_restarts_make_the_supervisor_give_up_and_stop_its_children() {
    procrt::run(|| {
        let sup = counter_supervisor("flaky", 2, LONG)
            .child(ChildSpec::new("steady", || 40u64, counter))
            .spawn()
            .unwrap();
        let steady = whereis::<Counter>("steady").unwrap();
        for crash in 0..3 {
            let flaky = wait_for(|| whereis::<Counter>("flaky"));
            flaky.send(Counter::CrashQuietly).unwrap();
            wait_for(|| (!flaky.is_alive()).then_some(()));
            if crash < 2 {
                assert_eq!(steady.call(Counter::Get, LONG), Ok(40));
            }
        }
        let restarts = sup.restarts();
        match sup.join() {
            Err(SupervisorError::GaveUp {
                child,
                max_restarts,
                period,
                cause,
            }) => {
                assert_eq!(child, "flaky");
                assert_eq!(max_restarts, 2);
                assert_eq!(period, LONG);
                assert_eq!(cause.panic_message(), Some("counter crashed quietly at 0"));
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        assert_eq!(restarts, 2);
        // Its children stopped with it.
        assert!(!steady.is_alive());
        assert_eq!(steady.call(Counter::Get, LONG), Err(CallError::Gone));
        assert!(whereis::<Counter>("steady").is_none());
        assert!(whereis::<Counter>("flaky").is_none());
    });
}

#[test]
fn the_restart_limit_counts_within_a_sliding_period() {
    procrt::run(|| {
        let period = Duration::from_millis(100);
        let sup = counter_supervisor("slow-crasher", 1, period)
            .spawn()
            .unwrap();
        for _ in 0..2 {
            let c = wait_for(|| whereis::<Counter>("slow-crasher"));
            c.send(Counter::CrashQuietly).unwrap();
            wait_for(|| (!c.is_alive()).then_some(()));
            // One restart per period is within the limit.
            sleep(period + Duration::from_millis(10));
        }
        assert_eq!(sup.restarts(), 2);
        assert!(!sup.is_finished());
        // Two crashes within one period are one too many. (Crashes keep
        // coming until then: a loaded machine may space two of them more
        // than a period apart.)
        for _ in 0..50 {
            let Some(c) = wait_for(|| {
                if sup.is_finished() {
                    Some(None)
                } else {
                    whereis::<Counter>("slow-crasher").map(Some)
                }
            }) else {
                break;
            };
            c.send(Counter::CrashQuietly).unwrap();
            wait_for(|| (!c.is_alive()).then_some(()));
        }
        assert!(matches!(sup.join(), Err(SupervisorError::GaveUp { .. })));
    });
}

#[test]
fn a_child_whose_init_panics_crash_loops_into_giving_up() {
    let (result, restarts, inits) = procrt::run(|| {
        let inits = Rc::new(Cell::new(0));
        let i2 = inits.clone();
        let sup = Supervisor::new()
            .max_restarts(3)
            .period(LONG)
            .child(ChildSpec::new(
                "never-starts",
                move || -> u64 {
                    i2.set(i2.get() + 1);
                    panic!("init failed")
                },
                counter,
            ))
            .spawn()
            .unwrap();
        wait_for(|| sup.is_finished().then_some(()));
        let restarts = sup.restarts();
        (sup.join(), restarts, inits.get())
    });
    match result {
        Err(SupervisorError::GaveUp { cause, .. }) => {
            assert_eq!(cause.panic_message(), Some("init failed"));
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert_eq!(restarts, 3);
    // The first start and three restarts.
    assert_eq!(inits, 4);
}

#[test]
fn a_supervisor_refuses_a_name_that_is_taken() {
    procrt::run(|| {
        let squatter = spawn_actor(0u64, counter);
        register("taken", &squatter).unwrap();
        let err = Supervisor::new()
            .child(ChildSpec::new("free", || 0u64, counter))
            .child(ChildSpec::new("taken", || 0u64, counter))
            .spawn()
            .unwrap_err();
        match err {
            SupervisorError::Name { child, error } => {
                assert_eq!(child, "taken");
                assert_eq!(error, RegisterError::Taken("taken".into()));
            }
            other => panic!("expected Name, got {other:?}"),
        }
        // The child started before the failure was stopped.
        let free_gone = wait_for(|| whereis::<Counter>("free").is_none().then_some(true));
        assert!(free_gone);
        assert_eq!(whereis::<Counter>("taken"), Some(squatter));
    });
}

#[test]
fn dropping_the_runtime_cancels_actors() {
    let rt = Runtime::new().unwrap();
    let (addr_alive, handle) = rt.block_on(|| {
        let (addr, handle) = ActorBuilder::new().spawn(Vec::new(), hoard).unwrap();
        let a = addr.clone();
        // Detached: parked in `call` when the runtime goes.
        drop(spawn(move || a.call(Hoard::Keep, LONG)).unwrap());
        (addr, handle)
    });
    assert!(addr_alive.is_alive());
    drop(rt);
    assert!(!addr_alive.is_alive());
    assert!(matches!(handle.join(), Err(JoinError::Cancelled)));
}
