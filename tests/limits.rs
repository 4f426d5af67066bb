//! Running out of stacks is an error returned from `spawn`, and the runtime
//! keeps working. (The kernel's map-count limit has its own test binary,
//! `map_limit.rs`, since it uses up the whole process's mappings.)

mod util;

use procrt::{
    park, spawn, unparker, yield_now, BuildError, JoinHandle, Runtime, SpawnErrorKind, Unparker,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use util::DropCounter;

/// Spawns procs that park until `release` is set, until spawn fails.
/// Returns their handles and unparkers, and the error's kind.
fn spawn_parked_until_refused(
    release: &Rc<Cell<bool>>,
    refused_closures: &Rc<Cell<usize>>,
) -> (Vec<JoinHandle<usize>>, Vec<Unparker>, SpawnErrorKind) {
    let unparkers: Rc<RefCell<Vec<Unparker>>> = Rc::default();
    let mut handles = Vec::new();
    loop {
        let (u, r) = (unparkers.clone(), release.clone());
        let i = handles.len();
        let g = DropCounter::new(refused_closures);
        match spawn(move || {
            // A spawned closure is not dropped before it runs; `g` only
            // counts drops of closures that never ran.
            std::mem::forget(g);
            u.borrow_mut().push(unparker());
            while !r.get() {
                park();
            }
            i
        }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                let u = std::mem::take(&mut *unparkers.borrow_mut());
                return (handles, u, e.kind().clone());
            }
        }
    }
}

#[test]
fn spawn_past_the_pool_returns_an_error_and_the_runtime_recovers() {
    const RESERVATION: usize = 4 << 20;
    const SEGMENT: usize = 64 << 10;
    let rt = Runtime::builder()
        .reservation(RESERVATION)
        .first_segment_size(SEGMENT)
        // The byte counts below assume the root proc's segment is one more
        // SEGMENT.
        .root_stack_size(SEGMENT)
        .build()
        .unwrap();
    let refused = Rc::new(Cell::new(0));
    let r = refused.clone();
    let (n, kind, sum, again) = rt.block_on(move || {
        let release = Rc::new(Cell::new(false));
        let (handles, unparkers, kind) = spawn_parked_until_refused(&release, &r);
        let n = handles.len();
        assert_eq!(unparkers.len(), n);
        // The refused closure was dropped, not leaked.
        assert_eq!(r.get(), 1);
        // Still refused while they all live.
        assert!(spawn(|| ()).is_err());
        release.set(true);
        for u in &unparkers {
            u.unpark();
        }
        let sum: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // Stacks are back: spawning works again, as many as before.
        let release = Rc::new(Cell::new(false));
        let (handles, unparkers, _) = spawn_parked_until_refused(&release, &r);
        let again = handles.len();
        release.set(true);
        unparkers.iter().for_each(Unparker::unpark);
        let sum2: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum2, again * (again.saturating_sub(1)) / 2);
        (n, kind, sum, again)
    });
    // The root holds one segment; the reservation holds at most 64.
    assert!((16..RESERVATION / SEGMENT).contains(&n), "{n} procs fit");
    assert_eq!(sum, n * (n - 1) / 2);
    assert_eq!(again, n, "fewer stacks after recovery");
    match kind {
        SpawnErrorKind::PoolExhausted {
            reserved,
            live,
            requested,
        } => {
            assert_eq!(reserved, RESERVATION);
            assert_eq!(requested, SEGMENT);
            assert_eq!(live, (n + 1) * SEGMENT, "live bytes: root and {n} procs");
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    assert_eq!(rt.live_procs(), 0);
    assert_eq!(rt.pool_stats().live_segments, 0);
}

#[test]
fn error_messages_say_what_ran_out() {
    let rt = Runtime::builder()
        .reservation(1 << 20)
        .first_segment_size(256 << 10)
        .build()
        .unwrap();
    let msg = rt.block_on(|| {
        let release = Rc::new(Cell::new(false));
        let (handles, unparkers, _) = spawn_parked_until_refused(&release, &Rc::default());
        let e = spawn(|| ()).unwrap_err();
        release.set(true);
        unparkers.iter().for_each(Unparker::unpark);
        handles.into_iter().for_each(|h| drop(h.join()));
        e.to_string()
    });
    assert!(msg.contains("exhausted"), "{msg}");
    assert!(msg.contains("262144"), "{msg}");
}

#[test]
fn first_segment_larger_than_the_reservation_is_a_build_error() {
    let r: Result<Runtime, BuildError> = Runtime::builder()
        .reservation(1 << 20)
        .first_segment_size(4 << 20)
        .build();
    let e = r
        .err()
        .expect("built a runtime whose first segment cannot fit");
    assert!(e.to_string().contains("exceeds"), "{e}");
}

#[test]
fn upkeep_that_cannot_get_stack_waits_instead_of_failing_a_proc() {
    // The scheduler runs its periodic checks (timers, I/O, hibernation
    // sweeps) on the stack of the proc that is switching away, and a sweep
    // needs 16 KiB. With a sweep due at every check and the pool used up,
    // a check on a child's small segment cannot get that stack: it must
    // wait for a later pick. (It used to panic in the proc, inside
    // `yield_now`, or abort the process on the way out of one that had
    // ended: tests/map_limit.rs failed now and then that way.)
    let rt = Runtime::builder()
        .reservation(4 << 20)
        .first_segment_size(procrt::stack::MIN_SEGMENT_GUARDED)
        .hibernate_after(Some(Duration::from_nanos(1)))
        .build()
        .unwrap();
    let (children, yields) = rt.block_on(|| {
        let stop = Rc::new(Cell::new(false));
        let yields = Rc::new(Cell::new(0u64));
        let mut handles = Vec::new();
        let kind = loop {
            let (s, y) = (stop.clone(), yields.clone());
            match spawn(move || {
                while !s.get() {
                    yield_now();
                    y.set(y.get() + 1);
                }
            }) {
                Ok(h) => handles.push(h),
                Err(e) => break e.kind().clone(),
            }
        };
        assert!(
            matches!(kind, SpawnErrorKind::PoolExhausted { .. }),
            "{kind:?}"
        );
        // The children yield in turn, on their small segments, with the
        // pool full: enough picks for about ten sweep checks (one every
        // 4,096 picks), nearly all of them on a child.
        while yields.get() < 40_000 {
            yield_now();
        }
        stop.set(true);
        let children = handles.len();
        for h in handles {
            h.join().expect("a child failed in the scheduler's upkeep");
        }
        (children, yields.get())
    });
    assert!(children > 100, "{children} children filled the pool");
    assert!(yields >= 40_000);
    assert_eq!(rt.live_procs(), 0);
}
