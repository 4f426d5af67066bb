//! A panic in a proc is that proc's own: it reaches whoever joins it, with
//! its payload, and everything else keeps running.

use procrt::{park, spawn, unparker, yield_now, JoinError, Runtime};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

/// A panic payload that is not a string.
#[derive(Debug, PartialEq)]
struct Custom {
    code: u32,
}

#[test]
fn panics_propagate_to_join_with_their_payload() {
    let rt = Runtime::new().unwrap();
    let (e_str, e_string, e_custom, ok) = rt.block_on(|| {
        let a = spawn(|| -> u32 { panic!("static message") }).unwrap();
        let b = spawn(|| -> u32 {
            yield_now();
            panic!("formatted {}", std::hint::black_box(42))
        })
        .unwrap();
        let c = spawn(|| -> u32 { std::panic::panic_any(Custom { code: 7 }) }).unwrap();
        let d = spawn(|| {
            yield_now();
            5u32
        })
        .unwrap();
        (
            a.join().unwrap_err(),
            b.join().unwrap_err(),
            c.join().unwrap_err(),
            d.join().unwrap(),
        )
    });
    assert_eq!(ok, 5);

    assert!(e_str.is_panic() && !e_str.is_cancelled());
    assert_eq!(e_str.panic_message(), Some("static message"));
    let p = e_str.into_panic();
    assert_eq!(p.downcast_ref::<&str>(), Some(&"static message"));

    assert_eq!(e_string.panic_message(), Some("formatted 42"));
    assert!(e_string.to_string().contains("formatted 42"));
    let p = e_string.into_panic();
    assert_eq!(
        p.downcast_ref::<String>().map(String::as_str),
        Some("formatted 42")
    );

    assert!(e_custom.is_panic());
    assert_eq!(e_custom.panic_message(), None);
    match e_custom {
        JoinError::Panicked(p) => assert_eq!(p.downcast_ref::<Custom>(), Some(&Custom { code: 7 })),
        JoinError::Cancelled => panic!("custom panic reported as cancelled"),
        JoinError::Exited(r) => panic!("custom panic reported as an exit: {r}"),
    }
    assert_eq!(rt.live_procs(), 0);
    assert_eq!(rt.pool_stats().live_segments, 0);
}

#[test]
fn a_panicking_proc_does_not_disturb_the_others() {
    let progress = Rc::new(Cell::new(0u32));
    let p = progress.clone();
    let rt = Runtime::new().unwrap();
    let results = rt.block_on(move || {
        let mut handles = Vec::new();
        for i in 0..20u32 {
            let p = p.clone();
            handles.push(
                spawn(move || {
                    for _ in 0..3 {
                        yield_now();
                        p.set(p.get() + 1);
                    }
                    if i % 3 == 0 {
                        panic!("proc {i} fails");
                    }
                    i
                })
                .unwrap(),
            );
        }
        handles
            .into_iter()
            .map(|h| h.join().map_err(|e| e.panic_message().map(str::to_owned)))
            .collect::<Vec<_>>()
    });
    assert_eq!(progress.get(), 60, "every proc ran all its steps");
    for (i, r) in results.into_iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(r, Err(Some(format!("proc {i} fails"))));
        } else {
            assert_eq!(r, Ok(i as u32));
        }
    }
    // The runtime goes on.
    assert_eq!(rt.block_on(|| spawn(|| 1 + 1).unwrap().join().unwrap()), 2);
}

#[test]
fn a_panic_unwinds_the_procs_own_stack() {
    // Destructors on the panicking proc's stack run before join returns.
    let dropped = Rc::new(Cell::new(0));
    let d = dropped.clone();
    let r = procrt::run(move || {
        let d2 = d.clone();
        let h = spawn(move || {
            struct Bump(Rc<Cell<u32>>);
            impl Drop for Bump {
                fn drop(&mut self) {
                    self.0.set(self.0.get() + 1);
                }
            }
            let _a = Bump(d2.clone());
            yield_now();
            let _b = Bump(d2);
            panic!("unwind me");
        })
        .unwrap();
        let e = h.join().unwrap_err();
        (d.get(), e.panic_message().map(str::to_owned))
    });
    assert_eq!(r, (2, Some("unwind me".to_owned())));
    assert_eq!(dropped.get(), 2);
}

#[test]
fn a_parked_joiner_is_woken_by_a_panic() {
    let r = procrt::run(|| {
        let me = unparker();
        let h = spawn(move || {
            yield_now();
            drop(me);
            panic!("late");
        })
        .unwrap();
        let j = spawn(move || h.join()).unwrap();
        j.join()
            .unwrap()
            .map_err(|e| e.panic_message().map(str::to_owned))
    });
    assert_eq!(r, Err(Some("late".to_owned())));
}

#[test]
fn a_panic_in_the_root_proc_resumes_out_of_block_on() {
    let rt = Runtime::new().unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(|| {
            let h = spawn(|| 1).unwrap();
            assert_eq!(h.join().unwrap(), 1);
            std::panic::panic_any(Custom { code: 99 });
        })
    }));
    let payload = r.expect_err("block_on returned though the root panicked");
    assert_eq!(payload.downcast_ref::<Custom>(), Some(&Custom { code: 99 }));
    // Outside any proc again, and the runtime keeps working.
    assert!(procrt::try_current().is_none());
    assert_eq!(rt.live_procs(), 0);
    assert_eq!(
        rt.block_on(|| spawn(|| 40).unwrap().join().unwrap() + 2),
        42
    );

    // procrt::run too.
    let r = catch_unwind(|| procrt::run(|| -> u8 { panic!("root of run") }));
    let payload = r.expect_err("run returned though its root panicked");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"root of run"));
}

#[test]
fn a_root_panic_leaves_other_procs_to_the_runtime() {
    // Procs parked when the root panics stay in the runtime; dropping it
    // cancels them.
    let dropped = Rc::new(Cell::new(0));
    let d = dropped.clone();
    let rt = Runtime::new().unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(move || {
            for _ in 0..3 {
                let d = d.clone();
                drop(
                    spawn(move || {
                        struct Bump(Rc<Cell<u32>>);
                        impl Drop for Bump {
                            fn drop(&mut self) {
                                self.0.set(self.0.get() + 1);
                            }
                        }
                        let _g = Bump(d);
                        loop {
                            park();
                        }
                    })
                    .unwrap(),
                );
            }
            panic!("root gives up");
        })
    }));
    assert!(r.is_err());
    assert_eq!(rt.live_procs(), 3);
    assert_eq!(dropped.get(), 0);
    drop(rt);
    assert_eq!(dropped.get(), 3);
}

#[test]
#[ignore = "limitation: std's panic count is per OS thread, so a proc suspended \
            mid-unwind makes std::thread::panicking() true in every other proc"]
fn panicking_is_per_proc() {
    // Proc A panics; a destructor on its stack yields in the middle of the
    // unwinding, and proc B runs meanwhile. B is not panicking.
    struct YieldOnDrop;
    impl Drop for YieldOnDrop {
        fn drop(&mut self) {
            yield_now();
        }
    }
    let seen = procrt::run(|| {
        let a = spawn(|| {
            let _y = YieldOnDrop;
            panic!("A unwinds");
        })
        .unwrap();
        let b = spawn(std::thread::panicking).unwrap();
        assert!(a.join().is_err());
        b.join().unwrap()
    });
    assert!(
        !seen,
        "std::thread::panicking() leaked from one proc into another"
    );
}
