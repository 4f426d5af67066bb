//! Monitors and links with Erlang's semantics: `monitor` delivers one
//! `Down { id, reason }` when a proc ends; `link` ties two procs so that an
//! abnormal end of one ends the other unless it traps exits. The runtime
//! keeps running throughout: every test ends with a check that nothing is
//! left alive and that the runtime still runs procs.

mod util;

use procrt::chan::{channel, Receiver, Sender, TryRecvError};
use procrt::{
    demonitor, link, monitor, park, sleep, spawn, trap_exits, unlink, yield_now, Down, ExitReason,
    JoinError, ProcId, Runtime,
};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::DropCounter;

/// Parks until the runtime goes away or an exit signal ends it.
fn park_forever() -> ! {
    loop {
        park();
    }
}

/// The reason inside a `JoinError::Exited`, or a failure naming what came.
fn exited<T: std::fmt::Debug>(r: Result<T, JoinError>) -> ExitReason {
    match r {
        Err(JoinError::Exited(reason)) => reason,
        other => panic!("expected JoinError::Exited, got {other:?}"),
    }
}

fn panicked(msg: &str) -> ExitReason {
    ExitReason::Panicked(msg.to_owned())
}

fn linked(by: ProcId, reason: ExitReason) -> ExitReason {
    ExitReason::Linked {
        by,
        reason: Box::new(reason),
    }
}

/// Every `Down` in `rx` now.
fn drain(rx: &Receiver<Down>) -> Vec<Down> {
    rx.try_iter().collect()
}

/// The runtime is empty and still runs procs.
fn assert_runtime_still_runs(rt: &Runtime) {
    assert_eq!(rt.live_procs(), 0, "procs left alive");
    let v = rt.block_on(|| {
        let h = spawn(|| {
            yield_now();
            21
        })
        .unwrap();
        h.join().unwrap() * 2
    });
    assert_eq!(v, 42);
    assert_eq!(rt.live_procs(), 0);
    assert_eq!(rt.pool_stats().live_segments, 0);
}

#[test]
fn a_monitor_gets_down_normal_when_the_proc_returns() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel();
        let h = spawn(|| {
            yield_now();
            7
        })
        .unwrap();
        let id = h.id();
        let m = monitor(id, &tx);
        assert_eq!(m.id(), id);
        assert_eq!(
            rx.recv().unwrap(),
            Down {
                id,
                reason: ExitReason::Normal
            }
        );
        assert_eq!(h.join().unwrap(), 7);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "exactly one Down");
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_monitor_gets_down_panicked_with_the_panic_message() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel();
        let a = spawn(|| {
            yield_now();
            panic!("bad {}", std::hint::black_box(42));
        })
        .unwrap();
        let b = spawn(|| {
            yield_now();
            std::panic::panic_any(5u32);
        })
        .unwrap();
        monitor(a.id(), &tx);
        monitor(b.id(), &tx);
        let (a_id, b_id) = (a.id(), b.id());
        assert_eq!(a.join().unwrap_err().panic_message(), Some("bad 42"));
        assert!(b.join().unwrap_err().is_panic());
        let downs = drain(&rx);
        assert_eq!(downs.len(), 2);
        assert!(downs.contains(&Down {
            id: a_id,
            reason: panicked("bad 42")
        }));
        // A payload that is not a string is named as std names it.
        assert!(downs.contains(&Down {
            id: b_id,
            reason: panicked("Box<dyn Any>")
        }));
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn monitoring_a_proc_that_is_not_alive_sends_noproc_at_once() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel();
        let h = spawn(|| 1).unwrap();
        let id = h.id();
        assert_eq!(h.join().unwrap(), 1);
        let m = monitor(id, &tx);
        assert_eq!(
            rx.try_recv(),
            Ok(Down {
                id,
                reason: ExitReason::NoProc
            })
        );
        // Taking back a monitor that already fired does nothing.
        demonitor(m);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_reused_slot_does_not_revive_an_old_id() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel();
        let old = spawn(|| ()).unwrap();
        let old_id = old.id();
        old.join().unwrap();
        // The next proc takes the slot the old one left.
        let new = spawn(|| park_forever()).unwrap();
        assert_ne!(new.id(), old_id);
        assert!(new.id().as_u64() > old_id.as_u64());
        monitor(old_id, &tx);
        assert_eq!(
            rx.try_recv(),
            Ok(Down {
                id: old_id,
                reason: ExitReason::NoProc
            })
        );
        // And the new proc is monitored as itself.
        monitor(new.id(), &tx);
        let (tx2, rx2) = channel::<()>();
        let killer = spawn(move || {
            link(new.id());
            rx2.recv().ok();
            panic!("stop it");
        })
        .unwrap();
        drop(tx2);
        let _ = killer.join();
        assert!(rx.recv().unwrap().reason != ExitReason::NoProc);
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn an_id_from_another_runtime_is_not_alive() {
    let rt1 = Runtime::new().unwrap();
    // A proc that stays alive in rt1 after block_on returns.
    let (foreign, foreign_handle) = rt1.block_on(|| {
        let h = spawn(|| park_forever()).unwrap();
        (h.id(), h)
    });
    let rt2 = Runtime::new().unwrap();
    rt2.block_on(move || {
        // Fill rt2's first slots, so the foreign id's slot is taken here.
        let hs: Vec<_> = (0..4).map(|_| spawn(|| park_forever()).unwrap()).collect();
        let (tx, rx) = channel();
        monitor(foreign, &tx);
        assert_eq!(
            rx.try_recv(),
            Ok(Down {
                id: foreign,
                reason: ExitReason::NoProc
            })
        );
        assert!(hs.iter().all(|h| h.id() != foreign));
        // Procs are left parked: dropping rt2 cancels them.
    });
    drop(rt2);
    drop(rt1);
    assert!(foreign_handle.join().unwrap_err().is_cancelled());
}

#[test]
fn demonitor_stops_delivery() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel();
        let (tx2, rx2) = channel();
        let h = spawn(|| {
            yield_now();
            panic!("late");
        })
        .unwrap();
        let id = h.id();
        let m = monitor(id, &tx);
        let _kept = monitor(id, &tx2);
        demonitor(m);
        let _ = h.join();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(
            rx2.try_recv(),
            Ok(Down {
                id,
                reason: panicked("late")
            })
        );
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn several_monitors_of_one_proc_each_get_a_down() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel();
        let (tx2, rx2) = channel();
        let h = spawn(yield_now).unwrap();
        let id = h.id();
        for _ in 0..3 {
            monitor(id, &tx);
        }
        monitor(id, &tx2);
        // Monitors from another proc count too.
        let other = {
            let tx2 = tx2.clone();
            spawn(move || {
                monitor(id, &tx2);
            })
            .unwrap()
        };
        other.join().unwrap();
        h.join().unwrap();
        let down = Down {
            id,
            reason: ExitReason::Normal,
        };
        assert_eq!(drain(&rx), vec![down.clone(); 3]);
        assert_eq!(drain(&rx2), vec![down; 2]);
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_monitor_whose_receiver_is_gone_is_ignored() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel();
        let h = spawn(yield_now).unwrap();
        monitor(h.id(), &tx);
        drop(rx);
        h.join().unwrap();
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_panic_ends_the_linked_partner_and_runs_its_destructors() {
    let rt = Runtime::new().unwrap();
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    rt.block_on(move || {
        let (tx, rx) = channel();
        let b = spawn(move || {
            let _guard = DropCounter::new(&d);
            park_forever();
        })
        .unwrap();
        let b_id = b.id();
        monitor(b_id, &tx);
        let a = spawn(move || {
            link(b_id);
            yield_now();
            panic!("a fails");
        })
        .unwrap();
        let a_id = a.id();
        assert_eq!(a.join().unwrap_err().panic_message(), Some("a fails"));
        let e = b.join().unwrap_err();
        assert!(e.is_exited() && !e.is_panic() && !e.is_cancelled());
        assert_eq!(e.panic_message(), None);
        assert!(
            e.to_string().contains(&format!("linked proc {a_id}")),
            "{e}"
        );
        assert!(format!("{e:?}").starts_with("Exited(Linked"), "{e:?}");
        let reason = exited(Err::<(), _>(e));
        assert_eq!(reason, linked(a_id, panicked("a fails")));
        assert_eq!(reason.root(), &panicked("a fails"));
        // The partner's monitors see why it ended.
        assert_eq!(rx.try_recv(), Ok(Down { id: b_id, reason }));
    });
    assert_eq!(drops.get(), 1, "the partner's destructors ran once");
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_normal_exit_does_not_end_the_partner() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (go_tx, go_rx) = channel::<u32>();
        let b = spawn(move || go_rx.recv().unwrap() + 1).unwrap();
        let b_id = b.id();
        let a = spawn(move || {
            link(b_id);
            yield_now();
        })
        .unwrap();
        a.join().unwrap();
        assert!(!b.is_finished());
        go_tx.send(9).unwrap();
        assert_eq!(b.join().unwrap(), 10);
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_trapping_proc_gets_downs_in_the_order_its_partners_ended() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let ended: Rc<RefCell<Vec<ProcId>>> = Rc::default();
        let (trap_tx, trap_rx) = channel();
        let t = spawn({
            let ended = ended.clone();
            move || {
                trap_exits(Some(trap_tx));
                let mut triggers: Vec<Sender<()>> = Vec::new();
                let mut ids = Vec::new();
                for i in 0..5 {
                    let (go, wait) = channel::<()>();
                    let ended = ended.clone();
                    let h = spawn(move || {
                        wait.recv().unwrap();
                        ended.borrow_mut().push(procrt::current().id());
                        if i % 2 == 0 {
                            panic!("child {i}");
                        }
                    })
                    .unwrap();
                    link(h.id());
                    ids.push(h.id());
                    triggers.push(go);
                }
                // Release them out of order, all at once.
                for &i in &[3, 0, 4, 1, 2] {
                    triggers[i].send(()).unwrap();
                }
                let downs: Vec<Down> = (0..5).map(|_| trap_rx.recv().unwrap()).collect();
                (ids, downs)
            }
        })
        .unwrap();
        let (ids, downs) = t.join().expect("a trapping proc lives on");
        let order: Vec<ProcId> = downs.iter().map(|d| d.id).collect();
        assert_eq!(order, *ended.borrow(), "Downs in the order the procs ended");
        for d in &downs {
            let i = ids.iter().position(|&id| id == d.id).unwrap();
            let want = if i % 2 == 0 {
                panicked(&format!("child {i}"))
            } else {
                ExitReason::Normal
            };
            assert_eq!(d.reason, want);
        }
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_watcher_gets_one_down_per_monitor_and_one_per_link() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel();
        let (go, wait) = channel::<()>();
        let x = spawn(move || {
            wait.recv().unwrap();
            panic!("x");
        })
        .unwrap();
        let x_id = x.id();
        let t = spawn(move || {
            trap_exits(Some(tx.clone()));
            monitor(x_id, &tx);
            link(x_id);
            monitor(x_id, &tx);
            go.send(()).unwrap();
            park_forever();
        })
        .unwrap();
        let _ = x.join();
        let downs = drain(&rx);
        assert_eq!(downs.len(), 3);
        assert!(downs
            .iter()
            .all(|d| d.id == x_id && d.reason == panicked("x")));
        assert!(!t.is_finished(), "a trapping proc lives on");
    });
    assert_eq!(rt.live_procs(), 1);
}

#[test]
fn trap_exits_none_restores_the_default() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (go, wait) = channel::<()>();
        let x = spawn(move || {
            wait.recv().unwrap();
            panic!("x");
        })
        .unwrap();
        let x_id = x.id();
        let (tx, rx) = channel();
        let t = spawn(move || {
            trap_exits(Some(tx));
            trap_exits(None);
            link(x_id);
            go.send(()).unwrap();
            park_forever();
        })
        .unwrap();
        let _ = x.join();
        assert_eq!(exited(t.join()), linked(x_id, panicked("x")));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn links_are_bidirectional() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        // The proc that called link panics: the other ends.
        let (go, wait) = channel::<()>();
        let passive = spawn(|| park_forever()).unwrap();
        let p_id = passive.id();
        let caller = spawn(move || {
            link(p_id);
            wait.recv().unwrap();
            panic!("caller");
        })
        .unwrap();
        let c_id = caller.id();
        go.send(()).unwrap();
        let _ = caller.join();
        assert_eq!(exited(passive.join()), linked(c_id, panicked("caller")));

        // The proc linked to panics: the caller ends.
        let (go, wait) = channel::<()>();
        let target = spawn(move || {
            wait.recv().unwrap();
            panic!("target");
        })
        .unwrap();
        let t_id = target.id();
        let caller = spawn(move || {
            link(t_id);
            park_forever();
        })
        .unwrap();
        go.send(()).unwrap();
        let _ = target.join();
        assert_eq!(exited(caller.join()), linked(t_id, panicked("target")));
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn unlink_removes_the_link_both_ways() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        // Unlinked by the proc that linked.
        let (go, wait) = channel::<()>();
        let target = spawn(move || {
            wait.recv().unwrap();
            panic!("target");
        })
        .unwrap();
        let t_id = target.id();
        let (done_tx, done_rx) = channel::<()>();
        let caller = spawn(move || {
            link(t_id);
            unlink(t_id);
            done_rx.recv().unwrap();
            "survived"
        })
        .unwrap();
        go.send(()).unwrap();
        let _ = target.join();
        done_tx.send(()).unwrap();
        assert_eq!(caller.join().unwrap(), "survived");

        // The passive side itself unlinks.
        let (go, wait) = channel::<()>();
        let (unlink_tx, unlink_rx) = channel::<ProcId>();
        let (done_tx, done_rx) = channel::<()>();
        let passive = spawn(move || {
            let c = unlink_rx.recv().unwrap();
            unlink(c);
            done_rx.recv().unwrap();
            "unlinked from its side"
        })
        .unwrap();
        let p_id = passive.id();
        let caller = spawn(move || {
            link(p_id);
            wait.recv().unwrap();
            panic!("caller");
        })
        .unwrap();
        unlink_tx.send(caller.id()).unwrap();
        yield_now();
        go.send(()).unwrap();
        let _ = caller.join();
        done_tx.send(()).unwrap();
        assert_eq!(passive.join().unwrap(), "unlinked from its side");
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_panic_at_the_end_of_a_chain_of_links_ends_every_proc() {
    let rt = Runtime::new().unwrap();
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    rt.block_on(move || {
        let (go, wait) = channel::<()>();
        let c = spawn(move || {
            wait.recv().unwrap();
            panic!("c fails");
        })
        .unwrap();
        let c_id = c.id();
        let d_b = d.clone();
        let b = spawn(move || {
            let _g = DropCounter::new(&d_b);
            link(c_id);
            park_forever();
        })
        .unwrap();
        let b_id = b.id();
        let a = spawn(move || {
            let _g = DropCounter::new(&d);
            link(b_id);
            sleep(Duration::from_secs(3600));
        })
        .unwrap();
        let start = Instant::now();
        go.send(()).unwrap();
        assert_eq!(c.join().unwrap_err().panic_message(), Some("c fails"));
        // The reason passes along the chain unchanged; `by` is the
        // neighbour.
        assert_eq!(exited(b.join()), linked(c_id, panicked("c fails")));
        assert_eq!(exited(a.join()), linked(b_id, panicked("c fails")));
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a sleeper is woken to end"
        );
    });
    assert_eq!(drops.get(), 2);
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_trapping_proc_stops_a_chain() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (go, wait) = channel::<()>();
        let c = spawn(move || {
            wait.recv().unwrap();
            panic!("c");
        })
        .unwrap();
        let c_id = c.id();
        let b = spawn(move || {
            link(c_id);
            park_forever();
        })
        .unwrap();
        let b_id = b.id();
        let (trap_tx, trap_rx) = channel();
        let a = spawn(move || {
            trap_exits(Some(trap_tx));
            link(b_id);
            trap_rx.recv().unwrap()
        })
        .unwrap();
        go.send(()).unwrap();
        let _ = c.join();
        assert_eq!(exited(b.join()), linked(c_id, panicked("c")));
        assert_eq!(
            a.join().unwrap(),
            Down {
                id: b_id,
                reason: linked(c_id, panicked("c"))
            }
        );
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn linking_to_a_dead_proc_ends_the_caller_with_noproc() {
    let rt = Runtime::new().unwrap();
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    rt.block_on(move || {
        let dead = spawn(|| ()).unwrap();
        let dead_id = dead.id();
        dead.join().unwrap();
        let returned = Rc::new(Cell::new(false));
        let r = returned.clone();
        let caller = spawn(move || {
            let _g = DropCounter::new(&d);
            link(dead_id);
            r.set(true);
        })
        .unwrap();
        assert_eq!(exited(caller.join()), linked(dead_id, ExitReason::NoProc));
        assert!(!returned.get(), "link did not return");

        // A trapping caller gets the NoProc as a Down and lives on.
        let (tx, rx) = channel();
        let trapper = spawn(move || {
            trap_exits(Some(tx));
            link(dead_id);
            "alive"
        })
        .unwrap();
        assert_eq!(trapper.join().unwrap(), "alive");
        assert_eq!(
            rx.try_recv(),
            Ok(Down {
                id: dead_id,
                reason: ExitReason::NoProc
            })
        );

        // Linking to itself does nothing.
        let me = spawn(|| {
            link(procrt::current().id());
            yield_now();
            1
        })
        .unwrap();
        assert_eq!(me.join().unwrap(), 1);
    });
    assert_eq!(drops.get(), 1);
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_linked_proc_is_ended_wherever_it_blocks() {
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (go, wait) = channel::<()>();
        let killer = spawn(move || {
            wait.recv().unwrap();
            panic!("k");
        })
        .unwrap();
        let k = killer.id();
        let (_keep_tx, rx) = channel::<u32>();
        let never = spawn(|| park_forever()).unwrap();
        let victims = vec![
            // Waiting in a channel.
            spawn(move || {
                link(k);
                rx.recv().ok();
            })
            .unwrap(),
            // Waiting in join.
            spawn(move || {
                link(k);
                let _ = never.join();
            })
            .unwrap(),
            // Yielding in a loop.
            spawn(move || {
                link(k);
                loop {
                    yield_now();
                }
            })
            .unwrap(),
            // Sleeping.
            spawn(move || {
                link(k);
                sleep(Duration::from_secs(3600));
            })
            .unwrap(),
            // Waiting in spawn for a child that runs first: the child sets
            // the killer off and yields, so the killer runs while this
            // proc still waits in `spawn`.
            spawn(move || {
                link(k);
                let child = spawn(move || {
                    go.send(()).unwrap();
                    yield_now();
                    park_forever();
                })
                .unwrap();
                drop(child);
                unreachable!("ended in spawn's return");
            })
            .unwrap(),
        ];
        let _ = killer.join();
        for v in victims {
            assert_eq!(exited(v.join()), linked(k, panicked("k")));
        }
    });
    // The children left parked (`never`, the spawned child) are cancelled
    // when the runtime drops; only they are still alive.
    assert_eq!(rt.live_procs(), 2);
}

#[test]
fn an_exit_signal_to_a_proc_already_unwinding_is_dropped() {
    /// Blocks in its destructor until a message comes.
    struct WaitOnDrop(Option<Receiver<()>>);
    impl Drop for WaitOnDrop {
        fn drop(&mut self) {
            if let Some(rx) = self.0.take() {
                rx.recv().ok();
            }
        }
    }
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (release, wait) = channel::<()>();
        let (go, b_wait) = channel::<()>();
        let a = spawn(move || {
            let _w = WaitOnDrop(Some(wait));
            yield_now();
            panic!("a's own panic");
        })
        .unwrap();
        let a_id = a.id();
        let b = spawn(move || {
            link(a_id);
            b_wait.recv().unwrap();
            panic!("b");
        })
        .unwrap();
        // A panics and blocks in its destructor; then B panics, and its
        // exit signal reaches A mid-unwind.
        yield_now();
        yield_now();
        go.send(()).unwrap();
        let _ = b.join();
        assert!(!a.is_finished());
        release.send(()).unwrap();
        assert_eq!(a.join().unwrap_err().panic_message(), Some("a's own panic"));
    });
    assert_runtime_still_runs(&rt);
}

#[test]
fn a_killed_root_proc_makes_block_on_panic_and_the_runtime_runs_on() {
    let rt = Runtime::new().unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(|| {
            let h = spawn(|| {
                yield_now();
                panic!("child");
            })
            .unwrap();
            link(h.id());
            park_forever();
        })
    }));
    let msg = r.expect_err("block_on panics");
    let msg = msg
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or("");
    assert!(msg.contains("exit signal"), "{msg}");
    assert_runtime_still_runs(&rt);
}

#[test]
fn monitors_across_a_runtime_drop_deliver_cancelled() {
    let (tx, rx) = channel::<Down>();
    let (trap_tx, trap_rx) = channel::<Down>();
    let rt = Runtime::new().unwrap();
    let (ids, handles) = rt.block_on(move || {
        let (_keep, recv_rx) = channel::<()>();
        let hs = vec![
            spawn(|| park_forever()).unwrap(),
            spawn(move || {
                recv_rx.recv().ok();
            })
            .unwrap(),
            spawn(|| loop {
                yield_now();
            })
            .unwrap(),
            spawn(|| sleep(Duration::from_secs(3600))).unwrap(),
        ];
        // A linked pair, one side trapping: the drop ends both Cancelled,
        // not by each other's signal.
        let l = spawn(|| park_forever()).unwrap();
        let l_id = l.id();
        let t = spawn(move || {
            trap_exits(Some(trap_tx));
            link(l_id);
            park_forever();
        })
        .unwrap();
        let mut hs = hs;
        hs.push(l);
        hs.push(t);
        let ids: Vec<ProcId> = hs.iter().map(|h| h.id()).collect();
        for &id in &ids {
            monitor(id, &tx);
        }
        (ids, hs)
    });
    drop(rt);
    let mut downs = drain(&rx);
    downs.sort_by_key(|d| d.id);
    let want: Vec<Down> = ids
        .iter()
        .map(|&id| Down {
            id,
            reason: ExitReason::Cancelled,
        })
        .collect();
    assert_eq!(downs, want);
    for h in handles {
        assert!(h.join().unwrap_err().is_cancelled());
    }
    // The trapping proc heard of its partner only if the partner was
    // cancelled first, and then with Cancelled.
    for d in drain(&trap_rx) {
        assert_eq!(d.reason, ExitReason::Cancelled);
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}

#[test]
fn procs_without_monitors_or_links_are_unaffected() {
    // Many procs end, some linked and monitored, most not; the table of
    // live procs and the ids stay consistent.
    let rt = Runtime::new().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel();
        let mut seen = std::collections::HashSet::new();
        for round in 0..200u32 {
            let hs: Vec<_> = (0..10u32)
                .map(|i| {
                    spawn(move || {
                        if i % 3 == 0 {
                            yield_now();
                        }
                        round * 10 + i
                    })
                    .unwrap()
                })
                .collect();
            for (i, h) in hs.into_iter().enumerate() {
                assert!(seen.insert(h.id()), "ids are unique");
                if i == 3 {
                    // Still alive: it yielded.
                    monitor(h.id(), &tx);
                }
                assert_eq!(h.join().unwrap(), round * 10 + i as u32);
            }
        }
        let downs = drain(&rx);
        assert_eq!(downs.len(), 200);
        assert!(downs.iter().all(|d| d.reason == ExitReason::Normal));
    });
    assert_runtime_still_runs(&rt);
}
