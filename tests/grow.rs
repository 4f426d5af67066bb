//! Stack growth: `stack::grow`, `stack::usage`, the per-proc limit.

use procrt::stack::{self, grow};
use procrt::{Builder, Runtime};

/// Recurses `n` levels with 512-byte frames, growing every 8 levels; checks
/// each frame's bytes on the way back up.
fn deep(n: u32) -> u64 {
    let frame = std::hint::black_box([n as u8; 512]);
    let below = if n == 0 {
        0
    } else if n % 8 == 0 {
        grow(16 * 1024, || deep(n - 1))
    } else {
        deep(n - 1)
    };
    assert!(frame.iter().all(|&b| b == n as u8), "frame {n} corrupted");
    below + 1
}

/// The smallest first segment the pool allows in guarded mode.
const MIN: usize = procrt::stack::MIN_SEGMENT_GUARDED;

fn small_runtime() -> Runtime {
    Runtime::builder().first_segment_size(MIN).build().unwrap()
}

#[test]
fn grow_lets_a_small_proc_recurse_deeply() {
    let rt = small_runtime();
    let before = rt.pool_stats();
    let depth = rt.block_on(|| {
        // Debug frames are several times larger: allow for them.
        let h = Builder::new()
            .stack_size(MIN)
            .max_stack(64 << 20)
            .spawn(|| deep(8_000))
            .unwrap();
        h.join().unwrap()
    });
    assert_eq!(depth, 8_001);
    let after = rt.pool_stats();
    assert_eq!(after.live_segments, before.live_segments, "segments leaked");
    assert!(after.peak_live_segments > 2, "never grew: {after:?}");
}

#[test]
fn usage_counts_segments_and_returns_to_one() {
    procrt::run(|| {
        // An ordinary proc (the root has a larger first segment).
        procrt::spawn(|| {
            let u0 = stack::usage().unwrap();
            assert_eq!(u0.segments, 1);
            let (u1, u2) = grow(256 << 10, || {
                let u1 = stack::usage().unwrap();
                let u2 = grow(1 << 20, || stack::usage().unwrap());
                (u1, u2)
            });
            assert_eq!(u1.segments, 2);
            assert_eq!(u2.segments, 3);
            assert!(u2.reserved_bytes > u1.reserved_bytes);
            assert!(u2.used_bytes > u1.used_bytes && u1.used_bytes > u0.used_bytes);
            assert_eq!(stack::usage().unwrap().segments, 1);
        })
        .unwrap()
        .join()
        .unwrap();
    });
}

#[test]
fn grow_in_place_when_the_segment_has_room() {
    procrt::run(|| {
        let u = grow(1024, || stack::usage().unwrap());
        assert_eq!(u.segments, 1);
    });
}

#[test]
fn a_panic_crosses_the_segment_boundary_to_join() {
    procrt::run(|| {
        let h = Builder::new()
            .stack_size(MIN)
            .spawn(|| grow(1 << 20, || -> u32 { panic!("deep trouble") }))
            .unwrap();
        let e = h.join().unwrap_err();
        assert_eq!(e.panic_message(), Some("deep trouble"));
        // The runtime and this proc keep running, and the chain is back.
        assert_eq!(stack::usage().unwrap().segments, 1);
    });
}

#[test]
fn growing_past_the_stack_limit_panics_in_that_proc() {
    let rt = small_runtime();
    rt.block_on(|| {
        let h = Builder::new()
            .stack_size(MIN)
            .max_stack(256 * 1024)
            .spawn(|| deep(100_000))
            .unwrap();
        let e = h.join().unwrap_err();
        let msg = e.panic_message().unwrap();
        assert!(
            msg.contains("stack limit of 262144 bytes exceeded"),
            "{msg}"
        );
    });
    assert_eq!(rt.pool_stats().live_segments, 0);
}

#[test]
fn a_hot_split_loop_reuses_the_spare_segment() {
    let rt = small_runtime();
    let allocs = rt.block_on(|| {
        let mut x = 0u64;
        for i in 0..10_000u64 {
            x += grow(1 << 20, || std::hint::black_box(i));
        }
        assert_eq!(x, 10_000 * 9_999 / 2);
        x
    });
    assert!(allocs > 0);
    let s = rt.pool_stats();
    // One segment for the root, one for the first crossing; every later
    // crossing reused the spare.
    assert!(s.total_allocs <= 3, "hot split allocated: {s:?}");
}

#[test]
fn grow_outside_procs_runs_in_place() {
    assert_eq!(grow(1 << 20, || 7), 7);
    assert!(stack::usage().is_none());
}

#[test]
fn runtime_entry_points_work_from_the_smallest_segment() {
    let rt = small_runtime();
    let n = rt.block_on(|| {
        let h = Builder::new()
            .stack_size(MIN)
            .spawn(|| {
                // Use most of the segment, then call into the runtime.
                fn burn(n: u32) -> u32 {
                    let pad = std::hint::black_box([0u8; 256]);
                    if n == 0 {
                        procrt::yield_now();
                        let c = procrt::spawn(|| 5).unwrap();
                        let u = procrt::unparker();
                        u.unpark();
                        procrt::park();
                        return c.join().unwrap() + pad[0] as u32;
                    }
                    burn(n - 1) + pad[1] as u32
                }
                // Debug builds have much larger frames: use less of the
                // segment there before calling in.
                burn(if cfg!(debug_assertions) { 0 } else { 4 })
            })
            .unwrap();
        h.join().unwrap()
    });
    assert_eq!(n, 5);
}
