//! Spawning and joining procs: many of them, nested, alive at once; what
//! `current()` says inside them; spawn's options and its misuse.

mod util;

use procrt::{current, spawn, try_current, yield_now, Builder, Runtime, SpawnErrorKind};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use util::DropCounter;

#[test]
fn hundred_thousand_procs_spawned_and_joined() {
    const N: u64 = 100_000;
    let rt = Runtime::new().unwrap();
    let sum = rt.block_on(|| {
        let handles: Vec<_> = (0..N).map(|i| spawn(move || i * 3 + 1).unwrap()).collect();
        assert_eq!(handles.len(), N as usize);
        // spawn runs each child at once, so all of them have finished.
        assert!(handles.iter().all(|h| h.is_finished()));
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, 3 * N * (N - 1) / 2 + N);
    let stats = rt.pool_stats();
    assert_eq!(stats.live_segments, 0, "{stats:?}");
    assert_eq!(rt.live_procs(), 0);
    // A finished child frees its stack before the next is spawned: only the
    // root and one child ever hold a segment.
    assert!(stats.peak_live_segments <= 4, "{stats:?}");
    assert!(
        rt.peak_live_procs() <= 4,
        "peak live procs {}",
        rt.peak_live_procs()
    );
    assert!(stats.total_allocs > N, "{stats:?}");
    // With a warm cache, spawning costs no system call.
    assert!(stats.cache_hits >= N - 10, "{stats:?}");
}

/// A tree `depth` levels deep below the caller, `fanout` children per
/// node; each leaf returns its index. Returns the sum of the leaves.
fn tree(first_leaf: u64, depth: u32, fanout: u64) -> u64 {
    if depth == 0 {
        return first_leaf;
    }
    let per_child = fanout.pow(depth - 1);
    let handles: Vec<_> = (0..fanout)
        .map(|i| {
            Builder::new()
                .name(format!("tree-{depth}-{i}"))
                .spawn(move || {
                    let me = current();
                    assert_eq!(me.name(), Some(format!("tree-{depth}-{i}").as_str()));
                    // Block once, so that siblings and cousins interleave.
                    yield_now();
                    tree(first_leaf + i * per_child, depth - 1, fanout)
                })
                .unwrap()
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn nested_spawns_return_their_results() {
    let sum = procrt::run(|| tree(0, 5, 4));
    let leaves = 4u64.pow(5);
    assert_eq!(sum, leaves * (leaves - 1) / 2);
}

#[test]
fn children_outlive_their_parent() {
    // A parent that returns without joining: its children keep running and
    // can be joined by the grandparent.
    let rt = Runtime::new().unwrap();
    let total = rt.block_on(|| {
        let parent = spawn(|| {
            (0..5u64)
                .map(|i| {
                    spawn(move || {
                        yield_now();
                        yield_now();
                        i + 100
                    })
                    .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
        let grandchildren = parent.join().unwrap();
        assert!(grandchildren.iter().all(|h| !h.is_finished()));
        grandchildren
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<u64>()
    });
    assert_eq!(total, 510);
    assert_eq!(rt.live_procs(), 0);
}

#[test]
fn detached_procs_run_to_completion() {
    let rt = Runtime::new().unwrap();
    let done = Rc::new(Cell::new(0u32));
    let d = done.clone();
    rt.block_on(move || {
        for _ in 0..10 {
            let d = d.clone();
            // Dropping the handle detaches the proc.
            drop(
                spawn(move || {
                    yield_now();
                    d.set(d.get() + 1);
                })
                .unwrap(),
            );
        }
        while d.get() < 10 {
            yield_now();
        }
    });
    assert_eq!(done.get(), 10);
    assert_eq!(rt.live_procs(), 0);
    assert_eq!(rt.pool_stats().live_segments, 0);
}

#[test]
fn procs_alive_at_once_keep_separate_stacks() {
    // Every proc writes a pattern of its own into a buffer on its stack,
    // yields while all the others are alive, and checks the pattern is
    // intact: no two live procs share stack memory.
    const N: usize = 2_000;
    let rt = Runtime::new().unwrap();
    let ok = rt.block_on(|| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                spawn(move || {
                    let mut buf = [0u32; 256];
                    for (k, w) in buf.iter_mut().enumerate() {
                        *w = (i * 7919 + k) as u32;
                    }
                    let buf = std::hint::black_box(buf);
                    for _ in 0..3 {
                        yield_now();
                    }
                    buf.iter()
                        .enumerate()
                        .all(|(k, &w)| w == (i * 7919 + k) as u32)
                })
                .unwrap()
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&ok| ok)
            .count()
    });
    assert_eq!(ok, N);
    let stats = rt.pool_stats();
    assert!(
        stats.peak_live_segments > N / 2,
        "procs were not alive at once: {stats:?}"
    );
    assert!(rt.peak_live_procs() > N / 2);
    assert_eq!(stats.live_segments, 0);
}

#[test]
fn current_names_and_ids_procs() {
    assert!(try_current().is_none(), "try_current outside any runtime");
    let rt = Runtime::new().unwrap();
    let ids = rt.block_on(|| {
        let root = current();
        // block_on's root proc is named after it (overflow reports say so).
        assert_eq!(root.name(), Some("block_on"));
        assert_eq!(try_current().map(|c| c.id()), Some(root.id()));
        let mut handles = Vec::new();
        for i in 0..50 {
            let b = if i % 2 == 0 {
                Builder::new().name(format!("worker-{i}"))
            } else {
                Builder::new()
            };
            handles.push(
                b.spawn(move || {
                    let me = current();
                    if i % 2 == 0 {
                        assert_eq!(me.name(), Some(format!("worker-{i}").as_str()));
                    } else {
                        assert_eq!(me.name(), None);
                    }
                    yield_now();
                    // Still the same proc after others ran.
                    assert_eq!(current().id(), me.id());
                    me.id()
                })
                .unwrap(),
            );
        }
        let mut ids = vec![root.id()];
        for h in handles {
            let hid = h.id();
            let id = h.join().unwrap();
            assert_eq!(id, hid, "JoinHandle::id differs from current().id() inside");
            ids.push(id);
        }
        // The root is itself again after its children ran.
        assert_eq!(current().id(), root.id());
        ids
    });
    let unique: HashSet<_> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate proc ids: {ids:?}");
    assert!(try_current().is_none(), "try_current after block_on");
    // Ids are unique across runtimes too.
    let other = procrt::run(|| current().id());
    assert!(!unique.contains(&other));
    assert!(ids.iter().all(|id| id.as_u64() != 0));
}

#[test]
fn spawn_outside_a_runtime_is_an_error() {
    let dropped = Rc::new(Cell::new(0));
    let guard = DropCounter::new(&dropped);
    let err = spawn(move || drop(guard)).unwrap_err();
    assert_eq!(err.kind(), &SpawnErrorKind::NoRuntime);
    assert_eq!(
        dropped.get(),
        1,
        "the closure of a refused spawn was not dropped"
    );
    // And the functions that need no proc do nothing.
    yield_now();
}

#[test]
fn block_on_inside_a_proc_panics() {
    let rt = Runtime::new().unwrap();
    let msg = rt.block_on(|| {
        let inner = Runtime::new().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.block_on(|| 1)));
        let payload = r.expect_err("nested block_on returned");
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    });
    assert!(msg.contains("block_on"), "{msg}");
}

#[test]
fn large_and_overaligned_closures_and_results() {
    #[repr(align(64))]
    struct Aligned([u8; 64]);

    let rt = Runtime::new().unwrap();
    let (a, b, c) = rt.block_on(|| {
        // Bigger than a quarter of the smallest segment: boxed by spawn.
        let big = [7u8; 5000];
        let a = spawn(move || big.iter().map(|&x| x as u64).sum::<u64>()).unwrap();
        let al = Aligned([3; 64]);
        let b = spawn(move || {
            let al = al;
            assert_eq!(&al as *const Aligned as usize % 64, 0, "misaligned capture");
            al.0.iter().map(|&x| x as u64).sum::<u64>()
        })
        .unwrap();
        // A result bigger than a register travels through the join handle.
        let c = spawn(|| {
            yield_now();
            [0xabu8; 512]
        })
        .unwrap();
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    assert_eq!(a, 7 * 5000);
    assert_eq!(b, 3 * 64);
    assert!(c.iter().all(|&x| x == 0xab));
}

const LARGE_VALUES: &str = "large-values";

#[test]
fn large_closures_and_results_fit_the_default_segment() {
    // A 12 KB closure and a 12 KB result, moved by value through spawn and
    // join, on the default 64 KiB segments. Run in a child: if the runtime
    // copies them too often on a proc's stack, the guard page ends it.
    if util::child_role().as_deref() == Some(LARGE_VALUES) {
        let (a, c) = procrt::run(|| {
            let big = std::hint::black_box([7u8; 12_000]);
            let a = spawn(move || big.iter().map(|&x| x as u64).sum::<u64>()).unwrap();
            let c = spawn(|| std::hint::black_box([0xabu8; 12_000])).unwrap();
            let a = a.join().unwrap();
            let c = c.join().unwrap();
            (a, c.iter().all(|&x| x == 0xab))
        });
        assert_eq!((a, c), (7 * 12_000, true));
        println!("child: done");
        return;
    }
    let out = util::run_child(
        "large_closures_and_results_fit_the_default_segment",
        LARGE_VALUES,
    );
    assert!(
        out.status.success() && out.stdout.contains("child: done"),
        "{}",
        out.describe()
    );
}

/// Uses about `bytes` of stack, one KiB per frame.
#[inline(never)]
fn use_stack(bytes: usize) -> u64 {
    let mut buf = [0u8; 1024];
    buf[bytes % 1024] = 1;
    let buf = std::hint::black_box(buf);
    let below = if bytes > 1024 {
        use_stack(bytes - 1024)
    } else {
        0
    };
    below + buf.iter().map(|&b| b as u64).sum::<u64>()
}

#[test]
fn stack_size_gives_a_proc_that_much_stack() {
    let rt = Runtime::builder()
        .first_segment_size(16 * 1024)
        .build()
        .unwrap();
    let r = rt.block_on(|| {
        // 256 KiB of frames: far past the 16 KiB default of this runtime.
        let h = Builder::new()
            .stack_size(1 << 20)
            .spawn(|| use_stack(256 * 1024))
            .unwrap();
        h.join().unwrap()
    });
    assert_eq!(r, 256);
    assert_eq!(rt.pool_stats().live_segments, 0);
}

#[test]
fn stack_larger_than_the_reservation_is_an_error() {
    let rt = Runtime::builder().reservation(16 << 20).build().unwrap();
    let kinds = rt.block_on(|| {
        let dropped = Rc::new(Cell::new(0));
        let g = DropCounter::new(&dropped);
        let e1 = Builder::new()
            .stack_size(64 << 20)
            .spawn(move || drop(g))
            .unwrap_err();
        assert_eq!(
            dropped.get(),
            1,
            "the closure of a refused spawn was not dropped"
        );
        // The runtime goes on.
        let ok = spawn(|| 5).unwrap().join().unwrap();
        (e1.kind().clone(), ok)
    });
    assert_eq!(kinds.1, 5);
    assert!(
        matches!(kinds.0, SpawnErrorKind::StackTooLarge { requested } if requested == 64 << 20),
        "a stack that can never fit the reservation: {:?}",
        kinds.0
    );
}

#[test]
fn absurd_stack_size_is_an_error_not_a_panic() {
    let rt = Runtime::new().unwrap();
    let r = rt.block_on(|| {
        let got = std::panic::catch_unwind(|| {
            Builder::new()
                .stack_size(usize::MAX / 2 + 2)
                .spawn(|| 1u8)
                .map(|_| ())
                .map_err(|e| e.kind().clone())
        });
        let still_works = spawn(|| 9).unwrap().join().unwrap();
        (got.map_err(|_| "spawn panicked"), still_works)
    });
    assert_eq!(r.1, 9);
    match r.0 {
        Ok(Err(SpawnErrorKind::StackTooLarge { .. })) => {}
        other => panic!("expected Err(StackTooLarge), got {other:?}"),
    }
}

#[test]
fn block_on_runs_again_and_resumes_procs_left_parked() {
    let rt = Runtime::new().unwrap();
    let unparker_slot: Rc<RefCell<Option<procrt::Unparker>>> = Rc::default();
    let handle_slot: Rc<RefCell<Option<procrt::JoinHandle<u32>>>> = Rc::default();
    let woke = Rc::new(Cell::new(false));
    let (us, hs, w) = (unparker_slot.clone(), handle_slot.clone(), woke.clone());
    rt.block_on(move || {
        let h = spawn(move || {
            *us.borrow_mut() = Some(procrt::unparker());
            while !w.get() {
                procrt::park();
            }
            42
        })
        .unwrap();
        *hs.borrow_mut() = Some(h);
    });
    // block_on returned with the child parked; it stays in the runtime.
    assert_eq!(rt.live_procs(), 1);
    assert_eq!(rt.pool_stats().live_segments, 1);
    let h = handle_slot.borrow_mut().take().unwrap();
    assert!(!h.is_finished());
    woke.set(true);
    // Unparking from outside any runtime queues the proc...
    unparker_slot.borrow().as_ref().unwrap().unpark();
    // ...and the next block_on runs it.
    let v = rt.block_on(move || h.join().unwrap());
    assert_eq!(v, 42);
    assert_eq!(rt.live_procs(), 0);
    assert_eq!(rt.pool_stats().live_segments, 0);
}
