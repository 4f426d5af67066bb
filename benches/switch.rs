//! Context-switch and spawn costs of procrt, against corosensei and OS
//! threads. Run with `cargo bench --bench switch`.
//!
//! What each benchmark measures, and why:
//!
//! - `procrt/yield_round_trip`: two procs in one runtime, both looping on
//!   `procrt::yield_now()`. One iteration is one `yield_now()` in the root
//!   proc: it switches to the partner, whose own `yield_now()` switches
//!   back. So it is a round trip: two switches plus two passes through the
//!   scheduler's queue code (`yield_current` -> `switch_from` ->
//!   `next_runnable`). This is the cost every cooperative hand-off pays.
//!   The loop is timed with `Instant` inside `Runtime::block_on`, so the
//!   runtime, the root proc and the partner are set up outside the timing
//!   (`iter_custom`).
//! - `procrt/switch_round_trip_one_loop` and `.._two_loops`: two bare
//!   `procrt_switch` calls per iteration, between the bench's thread and a
//!   partner context, with no scheduler, queue or channel (`src/arch/floor.rs`):
//!   the floor under every round trip between procs. In `one_loop` both
//!   sides run the same function, so every return is predicted; in
//!   `two_loops` the partner runs its own loop, as the two procs of a
//!   ping-pong do, and each switch mispredicts the return into the loop
//!   (the switch is symmetric). Their difference is what those
//!   mispredictions cost.
//! - `procrt/spawn_join_empty`: `spawn(|| ())` then `join()`, timed the same
//!   way inside `block_on`. The child starts at once (direct switch), ends,
//!   and the parent reaps it: segment alloc + free from the buddy pool, the
//!   control block, and two switches. This is the price of a proc.
//! - `corosensei/resume_suspend`: `Coroutine::resume` + `Yielder::suspend`
//!   on a coroutine that suspends forever, made outside the timing. Also two
//!   switches, with no scheduler at all: the floor procrt's round trip is
//!   compared with. It is a floor, not a like-for-like peer: corosensei's
//!   switch is inline asm that saves only rbp/rbx (the compiler spills what
//!   else is live), keeps no MXCSR/x87 control word or stack-limit slot,
//!   and pairs resume (`call`) with suspend (`ret`), so the return-stack
//!   buffer always predicts; procrt's procs switch symmetrically, here
//!   from two different functions.
//! - `corosensei/create_resume_finish`: a corosensei coroutine on its
//!   `DefaultStack` made, resumed to completion and dropped each iteration.
//!   `DefaultStack` mmaps (and munmaps) a fresh 1 MiB stack with a guard
//!   page per coroutine; that is the point of the comparison with
//!   `spawn_join_empty`, whose segments come from a pool.
//! - `std/thread_spawn_join`: `std::thread::spawn(|| ()).join()`, the OS
//!   thread reference.
//!
//! Measurement times are short (0.5 s warm-up, 2 s, 30 samples) so the
//! whole run takes well under a minute; on a shared machine run it a few
//! times and compare.

use corosensei::{Coroutine, CoroutineResult, Yielder};
use criterion::Criterion;
use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn procrt_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("procrt");

    let rt = procrt::Runtime::new().expect("procrt runtime");
    g.bench_function("yield_round_trip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let stop = Rc::new(Cell::new(false));
                let partner = {
                    let stop = Rc::clone(&stop);
                    // Starts at once, yields back to us; from then on each
                    // of our yields runs exactly one of its yields.
                    procrt::spawn(move || {
                        while !stop.get() {
                            procrt::yield_now();
                        }
                    })
                    .expect("spawn partner")
                };
                let start = Instant::now();
                for _ in 0..iters {
                    procrt::yield_now();
                }
                let elapsed = start.elapsed();
                stop.set(true);
                partner.join().expect("partner proc");
                elapsed
            })
        })
    });
    drop(rt);

    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "x86")
    ))]
    {
        use procrt::__bench::{switch_round_trips, Shape};
        g.bench_function("switch_round_trip_one_loop", |b| {
            b.iter_custom(|iters| switch_round_trips(iters, Shape::OneLoop))
        });
        g.bench_function("switch_round_trip_two_loops", |b| {
            b.iter_custom(|iters| switch_round_trips(iters, Shape::TwoLoops))
        });
    }

    let rt = procrt::Runtime::new().expect("procrt runtime");
    g.bench_function("spawn_join_empty", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    let h = procrt::spawn(|| ()).expect("spawn");
                    h.join().expect("join");
                }
                start.elapsed()
            })
        })
    });
    drop(rt);

    g.finish();
}

fn corosensei_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("corosensei");

    let mut co: Coroutine<(), (), ()> = Coroutine::new(|y: &Yielder<(), ()>, ()| loop {
        y.suspend(());
    });
    g.bench_function("resume_suspend", |b| {
        b.iter(|| {
            let r = co.resume(());
            debug_assert!(matches!(r, CoroutineResult::Yield(())));
            black_box(r)
        })
    });
    // Dropping a suspended coroutine unwinds its stack.
    drop(co);

    g.bench_function("create_resume_finish", |b| {
        b.iter(|| {
            let mut co: Coroutine<(), (), ()> = Coroutine::new(|_: &Yielder<(), ()>, ()| {});
            let r = co.resume(());
            debug_assert!(matches!(r, CoroutineResult::Return(())));
            black_box(r)
        })
    });

    g.finish();
}

fn std_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("std");
    g.bench_function("thread_spawn_join", |b| {
        b.iter(|| std::thread::spawn(|| ()).join().expect("join"))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30)
}

// What criterion_group!/criterion_main! expand to, written out: the macros
// generate an undocumented `pub fn`, which the crate's `missing_docs` lint
// rejects.
fn main() {
    let mut c = config().configure_from_args();
    procrt_benches(&mut c);
    corosensei_benches(&mut c);
    std_benches(&mut c);
    c.final_summary();
}
