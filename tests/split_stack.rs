//! Code built with `-fsplit-stack` grows proc stacks through procrt's
//! `__morestack` (the C is `splitc/c/split.c`, frames of about 1 KiB).
//!
//! Checked: results (checksums over every frame, stack-passed arguments,
//! double, long double and in-memory struct results) across splits; the
//! proc's chain and the pool's accounting back at their starting values;
//! a panic unwinding through split frames; split code outside procs; the
//! proc's stack limit; the linker's `__morestack_non_split` path.

mod util;

use procrt::stack::{self, StackUsage};
use procrt::{Builder, Runtime};
use procrt_splitc as c;
use proptest::prelude::*;
use std::cell::Cell;

/// The smallest first segment the pool allows in guarded mode.
const MIN: usize = stack::MIN_SEGMENT_GUARDED;

/// Levels of about 1 KiB that make at least 16 MiB of stack.
const LEVELS_16_MIB: u32 = 16_500;

fn small_runtime() -> Runtime {
    Runtime::builder().first_segment_size(MIN).build().unwrap()
}

thread_local! {
    static DEEPEST: Cell<Option<StackUsage>> = const { Cell::new(None) };
}

/// A callback for `split_call_back`: records the proc's stack use at the
/// deepest point.
extern "C-unwind" fn record_usage(x: u64) -> u64 {
    DEEPEST.with(|d| d.set(stack::usage()));
    x
}

/// Runs the C functions of `splitc` at depth `n` and checks every result.
fn check_all(n: u32, seed: u64) {
    let s = seed as i64 % 1000;
    // SAFETY: plain C recursion of n + 1 levels of about 1 KiB each,
    // growing the proc's stack through __morestack (so are the calls below).
    let sum = unsafe { c::split_recurse(n, seed) };
    assert_eq!(sum, c::expected_recurse(n, seed));
    // SAFETY: as above.
    let args = unsafe { c::split_args(n, s, 2, 3, 4, 5, 6, 7, 8, 9) };
    assert_eq!(args, c::expected_args(n, s, 2, 3, 4, 5, 6, 7, 8, 9));
    // SAFETY: as above.
    let d = unsafe { c::split_double(n, 0.25, 1.0) };
    assert_eq!(d, 0.25 + n as f64 + 1.0);
    // SAFETY: as above.
    let ld = unsafe { c::split_long_double(n, 0.25, 0.5) };
    assert_eq!(ld, 0.25 + (n as f64 + 1.0) / 2.0);
    // SAFETY: as above.
    let t = unsafe { c::split_struct(n, s) };
    assert_eq!(t, c::expected_struct(n, s));
    // SAFETY: as above.
    let t_sum = unsafe { c::split_struct_sum(n, s) };
    assert_eq!(t_sum, t.a + t.b + t.c);
}

#[test]
fn split_code_runs_in_place_outside_procs() {
    assert_eq!(stack::remaining_stack(), None);
    check_all(100, 5);
    assert_eq!(stack::remaining_stack(), None, "slot left set");
}

#[test]
fn a_small_proc_grows_through_morestack_and_shrinks_back() {
    let rt = small_runtime();
    let before = rt.pool_stats();
    let (deepest, after) = rt.block_on(|| {
        Builder::new()
            .stack_size(MIN)
            .max_stack(64 << 20)
            .spawn(|| {
                let left = stack::remaining_stack().unwrap();
                check_all(2_000, 9);
                // SAFETY: C recursion with a callback at the bottom.
                let r = unsafe { c::split_call_back(2_000, record_usage, 7) };
                assert_eq!(r, 7 + 2_001);
                // The slot is back: the same room as before the splits.
                assert_eq!(stack::remaining_stack().unwrap(), left);
                (DEEPEST.with(|d| d.get()).unwrap(), stack::usage().unwrap())
            })
            .unwrap()
            .join()
            .unwrap()
    });
    assert!(deepest.segments > 3, "never split: {deepest:?}");
    assert!(deepest.used_bytes > 2_000 * c::FRAME, "{deepest:?}");
    assert_eq!(after.segments, 1);
    assert_eq!(rt.pool_stats().live_segments, before.live_segments);
}

#[test]
fn a_thousand_small_procs_each_recurse_16_mib_deep() {
    let rt = small_runtime();
    let before = rt.pool_stats();
    let deepest = rt.block_on(|| {
        let handles: Vec<_> = (0..1000u64)
            .map(|i| {
                Builder::new()
                    .stack_size(MIN)
                    .max_stack(64 << 20)
                    .spawn(move || {
                        let got = unsafe {
                            // SAFETY: C recursion, 16 MiB through __morestack.
                            c::split_recurse(LEVELS_16_MIB, i)
                        };
                        // Stack-passed arguments across the splits.
                        // SAFETY: as above, 301 levels.
                        let args = unsafe { c::split_args(300, i as i64, 2, 3, 4, 5, 6, 7, 8, 9) };
                        assert_eq!(
                            args,
                            c::expected_args(300, i as i64, 2, 3, 4, 5, 6, 7, 8, 9)
                        );
                        procrt::yield_now();
                        let deepest = (i == 0).then(|| {
                            // SAFETY: as above, with a callback at the bottom.
                            unsafe { c::split_call_back(LEVELS_16_MIB, record_usage, 0) };
                            DEEPEST.with(|d| d.get()).unwrap()
                        });
                        assert_eq!(stack::usage().unwrap().segments, 1);
                        (got, deepest)
                    })
                    .unwrap()
            })
            .collect();
        let mut deepest = None;
        for (i, h) in handles.into_iter().enumerate() {
            let (got, d) = h.join().unwrap();
            assert_eq!(
                got,
                c::expected_recurse(LEVELS_16_MIB, i as u64),
                "proc {i}"
            );
            deepest = deepest.or(d);
        }
        deepest.unwrap()
    });
    assert!(deepest.used_bytes >= 16 << 20, "{deepest:?}");
    let after = rt.pool_stats();
    assert_eq!(after.live_segments, before.live_segments, "{after:?}");
    assert_eq!(after.live_bytes, before.live_bytes, "{after:?}");
}

#[test]
fn morestack_fits_below_the_slot_at_the_lowest_entry_the_abi_allows() {
    // Guarded segments: running out of the margin hits a guard page.
    let rt = small_runtime();
    rt.block_on(|| {
        Builder::new()
            .stack_size(MIN)
            .spawn(|| {
                for n in 0..1_500 {
                    // SAFETY: C recursion of small frames, then a 240-byte
                    // frame calling one of 16 KiB.
                    let r = unsafe { c::split_small_chain(n, 7) };
                    assert_eq!(r, 7 + 1 + n as u64);
                }
            })
            .unwrap()
            .join()
            .unwrap()
    });
}

/// A callback that lets the other procs run while this one is deep in
/// split C code.
extern "C-unwind" fn yield_at_bottom(x: u64) -> u64 {
    procrt::yield_now();
    x
}

#[test]
fn procs_switch_while_deep_in_split_code() {
    let rt = small_runtime();
    let before = rt.pool_stats();
    rt.block_on(|| {
        let handles: Vec<_> = (0..100u64)
            .map(|i| {
                Builder::new()
                    .stack_size(MIN)
                    .spawn(move || {
                        let left = stack::remaining_stack().unwrap();
                        let n = 100 + (i as u32 % 7) * 50;
                        // SAFETY: C recursion; the callback at the bottom
                        // switches to the other procs, each deep in its own
                        // split segments, and back.
                        let r = unsafe { c::split_call_back(n, yield_at_bottom, i) };
                        assert_eq!(r, i + n as u64 + 1);
                        assert_eq!(stack::remaining_stack().unwrap(), left);
                        check_all(n, i);
                    })
                    .unwrap()
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    assert_eq!(rt.pool_stats().live_segments, before.live_segments);
}

#[test]
fn a_hot_split_reuses_the_spare_segment() {
    // Leaked, so that the proc can read the pool's counters.
    let rt: &'static Runtime = Box::leak(Box::new(small_runtime()));
    let allocs = rt.block_on(move || {
        Builder::new()
            .stack_size(MIN)
            .spawn(move || {
                // The deepest recursion that splits exactly once from here.
                let once = (1..64)
                    .take_while(|&n| {
                        // SAFETY: C recursion of n levels, a callback at the
                        // bottom.
                        unsafe { c::split_call_back(n, record_usage, 0) };
                        DEEPEST.with(|d| d.get()).unwrap().segments <= 2
                    })
                    .last()
                    .unwrap();
                let before = rt.pool_stats().total_allocs;
                for i in 0..1000 {
                    // SAFETY: the same C recursion.
                    let r = unsafe { c::split_call_back(once, identity, i) };
                    assert_eq!(r, i + once as u64 + 1);
                }
                rt.pool_stats().total_allocs - before
            })
            .unwrap()
            .join()
            .unwrap()
    });
    // The spare segment serves every crossing: no allocation at all.
    assert_eq!(allocs, 0, "{allocs} segments allocated for 1000 crossings");
}

extern "C-unwind" fn identity(x: u64) -> u64 {
    x
}

/// The payload a Rust callback raises at the bottom of split recursion.
struct Deep(u64);

extern "C-unwind" fn panic_at_bottom(x: u64) -> u64 {
    std::panic::panic_any(Deep(x))
}

#[test]
fn a_panic_unwinds_through_split_frames_and_restores_the_slot() {
    let rt = small_runtime();
    let before = rt.pool_stats();
    rt.block_on(|| {
        let h = Builder::new()
            .stack_size(MIN)
            .spawn(|| {
                let left = stack::remaining_stack().unwrap();
                let r = std::panic::catch_unwind(|| {
                    // SAFETY: C recursion (built with -fexceptions) whose
                    // callback panics at the bottom.
                    unsafe { c::split_call_back(3_000, panic_at_bottom, 42) }
                });
                let payload = r.unwrap_err();
                assert_eq!(payload.downcast_ref::<Deep>().map(|d| d.0), Some(42));
                assert_eq!(stack::usage().unwrap().segments, 1, "segments left linked");
                assert_eq!(stack::remaining_stack().unwrap(), left, "slot not restored");
                // And split code still works afterwards.
                check_all(500, 3);
                // A panic that reaches join.
                // SAFETY: as above.
                unsafe { c::split_call_back(3_000, panic_at_bottom, 7) }
            })
            .unwrap();
        let e = h.join().unwrap_err();
        drop(e);
    });
    assert_eq!(rt.pool_stats().live_segments, before.live_segments);
}

#[test]
fn split_code_calling_unchecked_code_gets_room_for_it() {
    let rt = small_runtime();
    let got = rt.block_on(|| {
        Builder::new()
            .stack_size(MIN)
            .spawn(|| {
                (0..200)
                    .map(|n| {
                        // SAFETY: C recursion, then a leaf with a 2 KiB
                        // frame that makes no stack check.
                        unsafe { c::split_calls_nosplit(n, 3) }
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap()
            .join()
            .unwrap()
    });
    assert!(got.iter().all(|&g| g == c::expected_nosplit(3)));
}

#[test]
fn foreign_runs_unchecked_code_on_a_large_cached_segment() {
    let rt = small_runtime();
    let before = rt.pool_stats();
    rt.block_on(|| {
        Builder::new()
            .stack_size(MIN)
            .spawn(|| {
                for _ in 0..3 {
                    let u = stack::foreign(|| {
                        let buf = std::hint::black_box([3u8; 32 * 1024]);
                        assert!(buf.iter().all(|&b| b == 3));
                        // Split code inside foreign still grows past it.
                        check_all(400, 8);
                        stack::usage().unwrap()
                    });
                    assert_eq!(u.segments, 2);
                    assert!(u.reserved_bytes >= stack::FOREIGN_STACK);
                    assert_eq!(stack::usage().unwrap().segments, 1);
                }
                let p = std::panic::catch_unwind(|| stack::foreign(|| panic!("in foreign")));
                assert!(p.is_err());
                assert_eq!(stack::usage().unwrap().segments, 1);
            })
            .unwrap()
            .join()
            .unwrap()
    });
    let after = rt.pool_stats();
    assert_eq!(after.live_segments, before.live_segments);
    assert!(
        after.cache_hits > before.cache_hits,
        "foreign segment not cached: {after:?}"
    );
}

#[test]
fn split_code_past_max_stack_ends_the_process_with_a_message() {
    if util::child_role().as_deref() == Some("over") {
        let rt = small_runtime();
        rt.block_on(|| {
            Builder::new()
                .stack_size(MIN)
                .max_stack(1 << 20)
                // SAFETY: C recursion of about 4 MiB: over the limit.
                .spawn(|| unsafe { c::split_recurse(4_000, 1) })
                .unwrap()
                .join()
                .unwrap()
        });
        unreachable!("survived");
    }
    let out = util::run_child(
        "split_code_past_max_stack_ends_the_process_with_a_message",
        "over",
    );
    assert_eq!(out.signal(), Some(util::SIGABRT), "{}", out.describe());
    assert!(
        out.stderr.contains("stack limit of 1048576 bytes exceeded")
            && out.stderr.contains("-fsplit-stack"),
        "{}",
        out.describe()
    );
}

thread_local! {
    static BACKTRACE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

extern "C-unwind" fn capture_backtrace(x: u64) -> u64 {
    let bt = std::backtrace::Backtrace::force_capture();
    BACKTRACE.with(|b| *b.borrow_mut() = format!("{bt}"));
    DEEPEST.with(|d| d.set(stack::usage()));
    x
}

#[inline(never)]
fn split_walk_marker() -> u64 {
    // SAFETY: C recursion of 301 levels, a callback at the bottom.
    let r = unsafe { c::split_call_back(300, capture_backtrace, 0) };
    std::hint::black_box(r)
}

#[test]
fn a_backtrace_crosses_split_segments_to_proc_entry() {
    let segments = procrt::run(|| {
        Builder::new()
            .stack_size(MIN)
            .spawn(|| {
                split_walk_marker();
                DEEPEST.with(|d| d.get()).unwrap().segments
            })
            .unwrap()
            .join()
            .unwrap()
    });
    assert!(segments > 2, "the callback ran on segment {segments}");
    let bt = BACKTRACE.with(|b| b.borrow().clone());
    let names = util::frame_names(&bt);
    let levels = names
        .iter()
        .filter(|n| n.contains("split_call_back"))
        .count();
    assert_eq!(levels, 301, "C frames lost across __morestack:\n{bt}");
    // __morestack's CFI skips the ret it returns through: no frame of it
    // appears between two levels, and the walk reaches the Rust caller.
    let marker = names.iter().position(|n| n.contains("split_walk_marker"));
    assert!(marker.is_some(), "the walk stopped at a split:\n{bt}");
    assert!(
        names
            .last()
            .is_some_and(|n| n.contains("procrt_proc_entry")),
        "the walk did not end at procrt_proc_entry:\n{bt}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random depths and first segments, two procs interleaving their
    /// splits: results right, chains and pool back where they started.
    #[test]
    fn random_depths_grow_and_shrink_back(
        depths in prop::collection::vec((0u32..6_000, any::<u64>()), 1..4),
        first in prop::sample::select(vec![MIN, 2 * MIN, 64 * 1024]),
    ) {
        let rt = small_runtime();
        let before = rt.pool_stats();
        let ds = depths.clone();
        rt.block_on(move || {
            let hs: Vec<_> = ds.iter().map(|&(n, seed)| {
                Builder::new().stack_size(first).max_stack(64 << 20).spawn(move || {
                    // SAFETY: C recursion through __morestack.
                    let a = unsafe { c::split_recurse(n, seed) };
                    procrt::yield_now();
                    check_all(n / 4, seed);
                    assert_eq!(stack::usage().unwrap().segments, 1);
                    a
                }).unwrap()
            }).collect();
            for (h, &(n, seed)) in hs.into_iter().zip(&ds) {
                assert_eq!(h.join().unwrap(), c::expected_recurse(n, seed));
            }
        });
        prop_assert_eq!(rt.pool_stats().live_segments, before.live_segments);
    }
}
