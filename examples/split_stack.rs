//! C code built with `-fsplit-stack` growing proc stacks by itself.
//!
//! The C functions (`splitc/c/split.c`) check every frame against the TCB
//! slot in their prologue and call procrt's `__morestack` when it does not
//! fit; no `stack::grow` appears anywhere. Procs start on the smallest
//! segment, recurse through ~1 KiB C frames, and a Rust callback at the
//! bottom records how many segments the proc holds there. Also shows
//! `stack::foreign` for C that makes no checks.
//!
//! ```text
//! cargo run --release --example split_stack            # 8 procs, 16 MiB deep each
//! cargo run --release --example split_stack -- --short # quick run for CI
//! ```

use procrt::stack::{self, StackUsage};
use procrt::{Builder, Runtime};
use procrt_splitc as c;
use std::cell::Cell;
use std::time::Instant;

thread_local! {
    /// Stack use seen by the callback at the bottom of the recursion.
    static DEEPEST: Cell<Option<StackUsage>> = const { Cell::new(None) };
}

/// Called by the C code at its deepest level.
extern "C-unwind" fn at_the_bottom(x: u64) -> u64 {
    DEEPEST.with(|d| d.set(stack::usage()));
    x
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let (procs, levels) = if short { (2, 2_000) } else { (8, 16_500) };
    let min = stack::MIN_SEGMENT_GUARDED;
    let rt = Runtime::builder()
        .first_segment_size(min)
        .build()
        .expect("runtime");
    println!(
        "split_stack: {procs} procs, {levels} levels of ~{} B C frames (-fsplit-stack), first segment {min} B",
        c::FRAME
    );
    println!("before:  {:?}", rt.pool_stats());
    let start = Instant::now();
    let results = rt.block_on(move || {
        let handles: Vec<_> = (0..procs)
            .map(|i| {
                Builder::new()
                    .name(format!("split-{i}"))
                    .stack_size(min)
                    .max_stack(64 << 20)
                    .spawn(move || {
                        let seed = i as u64 * 1_000;
                        // SAFETY: C recursion that grows the proc's stack
                        // through __morestack, checking every frame.
                        let sum = unsafe { c::split_recurse(levels, seed) };
                        // SAFETY: the same recursion, with a Rust callback
                        // at the bottom.
                        let back = unsafe { c::split_call_back(levels, at_the_bottom, 1) };
                        assert_eq!(back, 1 + levels as u64 + 1);
                        let deepest = DEEPEST.with(|d| d.get()).expect("reached the bottom");
                        // C without checks: on a foreign segment.
                        let foreign = stack::foreign(|| stack::usage().expect("inside a proc"));
                        let after = stack::usage().expect("inside a proc");
                        (seed, sum, deepest, foreign, after)
                    })
                    .expect("spawn")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("proc panicked"))
            .collect::<Vec<_>>()
    });
    let elapsed = start.elapsed();
    for (i, (seed, sum, deepest, foreign, after)) in results.iter().enumerate() {
        assert_eq!(
            *sum,
            c::expected_recurse(levels, *seed),
            "proc {i}: wrong checksum"
        );
        println!(
            "proc {i}: deepest {} segments / {} B reserved / {} B used; in foreign {} segments; after {} segment(s)",
            deepest.segments,
            deepest.reserved_bytes,
            deepest.used_bytes,
            foreign.segments,
            after.segments
        );
        assert!(deepest.segments > 1, "proc {i}: never split");
        assert_eq!(after.segments, 1, "proc {i}: chain not unwound");
    }
    let s = rt.pool_stats();
    println!("after:   {s:?}");
    assert_eq!(s.live_segments, 0, "segments leaked");
    println!("checksums ok; time {:.1} ms", elapsed.as_secs_f64() * 1e3);
}
