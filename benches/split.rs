//! The cost of growth decided by compiled prologues. Run with
//! `cargo bench --bench split`.
//!
//! All timed inside a proc (`Runtime::block_on` or a spawned proc) with
//! `iter_custom`, the runtime set up outside the timing:
//!
//! - `call/plain`: a non-inlined Rust call: the floor.
//! - `c/in_place`: `split_big_frame` (C built with `-fsplit-stack`, a
//!   16 KiB frame touching one word) from a proc whose 1 MiB segment has
//!   room: the prologue's load, compare and branch, then the call.
//! - `c/morestack`: the same call from a proc on the smallest segment:
//!   every call splits through `__morestack` (the proc's spare segment
//!   cached after the first): one crossing and back.
//! - `grow/hot_split`: `stack::grow(1 MiB, f)` from a 64 KiB segment, every
//!   iteration crossing into the spare and back (as in `benches/grow.rs`).
//! - `foreign/call`: `stack::foreign(f)`: a 256 KiB segment from the pool's
//!   cache and back, each call.

use criterion::{black_box, Criterion};
use procrt::{Builder, Runtime};
use std::time::{Duration, Instant};

#[inline(never)]
fn identity(x: u64) -> u64 {
    black_box(x)
}

fn c_call(x: u64) -> u64 {
    // SAFETY: a C function with a 16 KiB frame; grows the stack by itself.
    unsafe { procrt_splitc::split_big_frame(x) }
}

/// Times `iters` runs of `body` inside a proc of `rt` whose first segment
/// is `segment` bytes.
fn in_proc(rt: &Runtime, segment: usize, iters: u64, body: fn(u64) -> u64) -> Duration {
    rt.block_on(move || {
        Builder::new()
            .stack_size(segment)
            .spawn(move || {
                let start = Instant::now();
                let mut acc = 0u64;
                for i in 0..iters {
                    acc = acc.wrapping_add(body(i));
                }
                black_box(acc);
                start.elapsed()
            })
            .expect("spawn")
            .join()
            .expect("join")
    })
}

fn benches(c: &mut Criterion) {
    let min = procrt::stack::MIN_SEGMENT_GUARDED;
    let rt = Runtime::builder()
        .first_segment_size(min)
        .build()
        .expect("runtime");
    c.bench_function("call/plain", |b| {
        b.iter_custom(|n| in_proc(&rt, 64 << 10, n, identity))
    });
    c.bench_function("c/in_place", |b| {
        b.iter_custom(|n| in_proc(&rt, 1 << 20, n, c_call))
    });
    c.bench_function("c/morestack", |b| {
        b.iter_custom(|n| in_proc(&rt, min, n, c_call))
    });
    c.bench_function("grow/hot_split", |b| {
        b.iter_custom(|n| {
            in_proc(&rt, 64 << 10, n, |i| {
                procrt::stack::grow(1 << 20, || identity(i))
            })
        })
    });
    c.bench_function("foreign/call", |b| {
        b.iter_custom(|n| in_proc(&rt, 64 << 10, n, |i| procrt::stack::foreign(|| identity(i))))
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
