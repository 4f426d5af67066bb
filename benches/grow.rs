//! The cost of stack growth. Run with `cargo bench --bench grow`.
//!
//! All in one run, each timed inside a proc (`Runtime::block_on`) with
//! `iter_custom`, the runtime set up outside the timing:
//!
//! - `call/plain`: a non-inlined call of a function returning its argument:
//!   the floor.
//! - `grow/in_place`: `stack::grow(1 KiB, f)` where the segment has room:
//!   one load of the TCB slot, one compare, then the call.
//! - `grow/hot_split`: `stack::grow(1 MiB, f)` from a 64 KiB segment, in a
//!   loop: every iteration crosses into a new segment and back. After the
//!   first, the proc's spare segment is reused, so this is the "hot split"
//!   that made Go and Rust give up segmented stacks, at its steady cost.
//! - `stacker/maybe_grow_forced`: `stacker::grow(1 MiB, f)`, which always
//!   moves to a new stack: stacker mmaps a fresh stack and munmaps it on
//!   return. The anchor for what growing costs without a pool and a spare.

use criterion::{black_box, Criterion};
use std::time::{Duration, Instant};

#[inline(never)]
fn identity(x: u64) -> u64 {
    black_box(x)
}

/// Times `iters` runs of `body` inside a proc of `rt`.
fn in_proc(rt: &procrt::Runtime, iters: u64, body: fn(u64) -> u64) -> Duration {
    rt.block_on(move || {
        let start = Instant::now();
        let mut acc = 0u64;
        for i in 0..iters {
            acc = acc.wrapping_add(body(i));
        }
        black_box(acc);
        start.elapsed()
    })
}

fn benches(c: &mut Criterion) {
    let rt = procrt::Runtime::new().expect("runtime");
    c.bench_function("call/plain", |b| {
        b.iter_custom(|n| in_proc(&rt, n, identity))
    });
    c.bench_function("grow/in_place", |b| {
        b.iter_custom(|n| in_proc(&rt, n, |i| procrt::stack::grow(1024, || identity(i))))
    });
    c.bench_function("grow/hot_split", |b| {
        b.iter_custom(|n| in_proc(&rt, n, |i| procrt::stack::grow(1 << 20, || identity(i))))
    });
    c.bench_function("stacker/maybe_grow_forced", |b| {
        b.iter_custom(|n| in_proc(&rt, n, |i| stacker::grow(1 << 20, || identity(i))))
    });
}

/// Written out instead of `criterion_main!`, whose generated items have no
/// docs (the crate denies missing docs in CI).
fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
}
