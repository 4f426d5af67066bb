//! Deep recursion on segmented stacks.
//!
//! Procs start on the smallest segment the pool allows and recurse to
//! several MiB of stack, calling `procrt::stack::grow` every few levels so
//! that the stack grows by linking segments instead of overflowing. Prints
//! the segment statistics before, at the deepest point, and after.
//!
//! ```text
//! cargo run --release --example deep_recursion            # 4 procs, ~6 MiB each
//! cargo run --release --example deep_recursion -- --short # quick run for CI
//! ```

use procrt::stack::{self, grow, StackUsage};
use procrt::{Builder, Runtime};
use std::time::Instant;

/// Bytes of locals per level; the recursion touches them all.
const FRAME: usize = 1024;
/// Levels between two calls to `grow`.
const LEVELS_PER_GROW: u32 = 8;
/// Stack asked for at each `grow`: room for LEVELS_PER_GROW levels, whose
/// frames are about twice FRAME in release and several times it in debug
/// builds (the array, its black_box copy, iterator state).
const GROW_BYTES: usize =
    LEVELS_PER_GROW as usize * FRAME * if cfg!(debug_assertions) { 8 } else { 2 };

/// Sums a pattern written into each level's frame, checking every frame on
/// the way back up. Records the stack use at the deepest level.
fn recurse(n: u32, deepest: &mut Option<StackUsage>) -> u64 {
    let mut frame = [0u8; FRAME];
    for (i, b) in frame.iter_mut().enumerate() {
        *b = (n as usize).wrapping_add(i) as u8;
    }
    let frame = std::hint::black_box(frame);
    let below = if n == 0 {
        *deepest = stack::usage();
        0
    } else if n % LEVELS_PER_GROW == 0 {
        // Make sure of room for the next LEVELS_PER_GROW levels.
        grow(GROW_BYTES, || recurse(n - 1, deepest))
    } else {
        recurse(n - 1, deepest)
    };
    let mine: u64 = frame.iter().map(|&b| b as u64).sum();
    for (i, &b) in frame.iter().enumerate() {
        assert_eq!(
            b,
            (n as usize).wrapping_add(i) as u8,
            "frame at level {n} corrupted"
        );
    }
    below + mine
}

/// The checksum `recurse(n)` must return.
fn expected(n: u32) -> u64 {
    (0..=n)
        .map(|l| {
            (0..FRAME)
                .map(|i| (l as usize).wrapping_add(i) as u8 as u64)
                .sum::<u64>()
        })
        .sum()
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let (procs, levels) = if short { (2, 1_000) } else { (4, 5_000) };
    let min = stack::MIN_SEGMENT_GUARDED;
    let rt = Runtime::builder()
        .first_segment_size(min)
        .build()
        .expect("runtime");
    println!("deep_recursion: {procs} procs, {levels} levels of {FRAME}-byte frames, first segment {min} bytes");
    println!("before:  {:?}", rt.pool_stats());
    let start = Instant::now();
    let results = rt.block_on(move || {
        let handles: Vec<_> = (0..procs)
            .map(|i| {
                Builder::new()
                    .name(format!("recurse-{i}"))
                    .stack_size(min)
                    .max_stack(64 << 20)
                    .spawn(move || {
                        let first = stack::usage().expect("inside a proc");
                        let mut deepest = None;
                        let sum = recurse(levels, &mut deepest);
                        let after = stack::usage().expect("inside a proc");
                        (sum, first, deepest.expect("reached the bottom"), after)
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
    for (i, (sum, first, deepest, after)) in results.iter().enumerate() {
        assert_eq!(*sum, expected(levels), "proc {i}: wrong checksum");
        println!(
            "proc {i}: start {} segment(s) / {} B; deepest {} segments / {} B reserved / {} B used; after {} segment(s)",
            first.segments,
            first.reserved_bytes,
            deepest.segments,
            deepest.reserved_bytes,
            deepest.used_bytes,
            after.segments
        );
        assert_eq!(after.segments, 1, "proc {i}: chain not unwound");
    }
    let s = rt.pool_stats();
    println!("after:   {s:?}");
    assert_eq!(s.live_segments, 0, "segments leaked");
    println!("checksums ok; time {:.1} ms", elapsed.as_secs_f64() * 1e3);
}
