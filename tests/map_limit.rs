//! Guarded mode meets the kernel's `vm.max_map_count`: each guarded segment
//! splits the stack reservation into two mappings, so near 32k live procs
//! the kernel refuses another guard page. That refusal must come back from
//! `spawn` as `MapLimit`, and the runtime must recover once procs end.
//!
//! Alone in its test binary: while it runs, the process has no mappings to
//! spare for anything else.

use procrt::{park, Builder, Runtime, SpawnErrorKind, Unparker};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// `vm.max_map_count`, or the kernel's default if it cannot be read.
fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530)
}

#[test]
fn spawn_at_the_map_limit_returns_an_error_and_the_runtime_recovers() {
    const SEGMENT: usize = 16 << 10;
    let limit = max_map_count();
    let rt = Runtime::new().unwrap();
    let (n, kind, sum, after) = rt.block_on(move || {
        let release = Rc::new(Cell::new(false));
        let unparkers: Rc<RefCell<Vec<Unparker>>> =
            Rc::new(RefCell::new(Vec::with_capacity(limit / 2 + 16)));
        // Allocated up front: near the limit even malloc may find no mapping
        // to grow into.
        let mut handles = Vec::with_capacity(limit / 2 + 16);
        let kind = loop {
            let (u, r) = (unparkers.clone(), release.clone());
            let i = handles.len();
            let spawned = Builder::new().stack_size(SEGMENT).spawn(move || {
                u.borrow_mut().push(procrt::unparker());
                while !r.get() {
                    park();
                }
                i
            });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => break e.kind().clone(),
            }
            assert!(
                handles.len() <= limit,
                "no error after {} guarded procs",
                handles.len()
            );
        };
        let n = handles.len();
        release.set(true);
        for u in unparkers.borrow().iter() {
            u.unpark();
        }
        let sum: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        unparkers.borrow_mut().clear();
        // Recovered: a batch of procs alive at once spawns fine again.
        let release = Rc::new(Cell::new(false));
        let batch: Vec<_> = (0..1_000)
            .map(|i| {
                let r = release.clone();
                Builder::new()
                    .stack_size(SEGMENT)
                    .spawn(move || {
                        while !r.get() {
                            procrt::yield_now();
                        }
                        i
                    })
                    .unwrap()
            })
            .collect();
        release.set(true);
        let after: usize = batch.into_iter().map(|h| h.join().unwrap()).sum();
        (n, kind, sum, after)
    });
    assert_eq!(sum, n * (n - 1) / 2);
    assert_eq!(after, 1_000 * 999 / 2);
    // Two mappings per guarded segment, minus what the process already had.
    assert!(
        n > limit / 2 - 2_000 && n < limit / 2,
        "{n} guarded procs with max_map_count {limit}"
    );
    match kind {
        SpawnErrorKind::MapLimit { live_segments } => {
            // The root's segment and every parked proc's.
            assert_eq!(live_segments, n + 1);
        }
        other => panic!("expected MapLimit, got {other:?}"),
    }
    assert_eq!(rt.live_procs(), 0);
    assert_eq!(rt.pool_stats().live_segments, 0);
}
