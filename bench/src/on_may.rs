//! The workloads on may: stackful coroutines on one worker thread
//! (`may::config().set_workers(1)`), `may::sync::mpsc` channels. Each
//! workload runs inside a root coroutine that the main thread joins, so
//! timings start once may's scheduler is up.
//!
//! may's mpsc channel is unbounded only, so `--chan bounded` is skipped.
//! Coroutines get may's default stack (0x1000 words, 32 KiB, each its own
//! `mmap` with a guard page, so may too meets `vm.max_map_count` near 32k
//! live coroutines).

use crate::{
    mem, skynet_expected, warmup_round_trips, ChanKind, Failure, Outcome, Report, Via, Workload,
    RING_PROCS, RING_STOP,
};
use may::coroutine::{self, JoinHandle};
use may::sync::mpsc::{channel, Sender};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How skynet nodes collect results unless `--via` says otherwise.
const DEFAULT_VIA: Via = Via::Join;
/// Longest wait for spawned coroutines to reach their first `recv`.
const SETTLE: Duration = Duration::from_secs(30);

pub fn run(w: &Workload) -> Result<Report, Failure> {
    match *w {
        Workload::Pingpong {
            chan: Some(ChanKind::Bounded),
            ..
        }
        | Workload::Ring {
            chan: Some(ChanKind::Bounded),
            ..
        } => {
            return Err(Failure::Skipped(
                "may's mpsc channel is unbounded only".into(),
            ))
        }
        Workload::Idle {
            unguarded: true, ..
        }
        | Workload::Idle {
            segment: Some(_), ..
        } => {
            return Err(Failure::Skipped(
                "--unguarded and --segment are procrt's options".into(),
            ))
        }
        _ => {}
    }
    may::config().set_workers(1);
    let w = w.clone();
    // SAFETY: may's coroutines are unsafe to spawn because a coroutine that
    // overruns its stack (32 KiB by default) faults, and because thread
    // locals seen from a coroutine may move between threads. The root
    // coroutine and those it spawns run small non-recursive bodies (channel
    // calls, spawn, join; skynet recurses through new coroutines, not within
    // one), and touch no thread locals of ours; with one worker they never
    // move between threads.
    let root = unsafe { coroutine::spawn(move || run_in_coroutine(&w)) };
    root.join()
        .unwrap_or_else(|p| Err(Failure::Failed(panic_text(p.as_ref()))))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Spawns a coroutine with may's defaults.
fn go<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    // SAFETY: as for the root coroutine in `run`: every body spawned here is
    // a few small frames of channel calls, spawn and join, and uses no
    // thread locals.
    unsafe { coroutine::spawn(f) }
}

fn run_in_coroutine(w: &Workload) -> Result<Report, Failure> {
    match *w {
        Workload::NodePingpong { .. } | Workload::Prefork { .. } => Err(Failure::Skipped(
            "node workloads are procrt's own: the peers have no nodes".into(),
        )),
        Workload::Echo { conns, messages } => crate::echo::run(crate::Imp::May, conns, messages),
        Workload::Pingpong { round_trips, .. } => {
            let ns_per_rt = pingpong(round_trips);
            Ok(Report::new(Outcome::Pingpong { ns_per_rt })
                .with("chan", "unbounded")
                .with("round_trips", round_trips))
        }
        Workload::Skynet { leaves, via } => {
            let via = via.unwrap_or(DEFAULT_VIA);
            let start = Instant::now();
            let sum = match via {
                Via::Join => skynet_join(0, leaves),
                Via::Chan => skynet_chan(0, leaves),
            };
            let total_ms = start.elapsed().as_secs_f64() * 1e3;
            if sum != skynet_expected(leaves) {
                eprintln!("may skynet: wrong sum {sum}");
            }
            Ok(Report::new(Outcome::Skynet { total_ms, sum }).with("via", via.name()))
        }
        Workload::Ring { hops, procs, .. } => {
            let procs = procs.unwrap_or(RING_PROCS);
            let ns_per_hop = ring(hops, procs);
            Ok(Report::new(Outcome::Ring { ns_per_hop })
                .with("chan", "unbounded")
                .with("procs", procs)
                .with("hops", hops))
        }
        Workload::Idle { n, .. } => idle(n),
    }
}

fn pingpong(round_trips: u64) -> f64 {
    let warmup = warmup_round_trips(round_trips);
    let (ping_tx, ping_rx) = channel::<u64>();
    let (pong_tx, pong_rx) = channel::<u64>();
    let ponger = go(move || {
        for v in ping_rx.iter() {
            pong_tx.send(v).expect("pingpong: pinger gone");
        }
    });
    let pinger = go(move || {
        let round_trip = |i: u64| {
            ping_tx.send(i).expect("pingpong: ponger gone");
            assert_eq!(pong_rx.recv(), Ok(i));
        };
        (0..warmup).for_each(round_trip);
        let start = Instant::now();
        (0..round_trips).for_each(round_trip);
        start.elapsed()
    });
    let elapsed = pinger.join().expect("pingpong: pinger failed");
    ponger.join().expect("pingpong: ponger failed");
    elapsed.as_nanos() as f64 / round_trips as f64
}

fn skynet_join(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / 10;
    let children: [_; 10] = std::array::from_fn(|i| {
        let i = i as u64;
        go(move || skynet_join(num + i * step, step))
    });
    children
        .into_iter()
        // A child's panic (may's own when a stack cannot be mapped) goes up
        // unchanged, so the root reports the first cause.
        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .sum()
}

fn skynet_chan(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / 10;
    let (tx, rx) = channel::<u64>();
    for i in 0..10 {
        let tx = tx.clone();
        drop(go(move || {
            let _ = tx.send(skynet_chan(num + i * step, step));
        }));
    }
    drop(tx);
    rx.iter().take(10).sum()
}

fn ring(hops: u64, procs: usize) -> f64 {
    let (done_tx, done_rx) = channel::<()>();
    let (mut txs, rxs): (Vec<_>, Vec<_>) = (0..procs).map(|_| channel::<u64>()).unzip();
    let first_tx = txs[0].clone();
    txs.rotate_left(1);
    let mut handles = Vec::with_capacity(procs);
    for (my_rx, next_tx) in rxs.into_iter().zip(txs) {
        let done_tx = done_tx.clone();
        handles.push(go(move || {
            // Forward each count less one, report a 0, pass the stop token
            // on and leave (the last one finds coroutine 0 gone).
            for h in my_rx.iter() {
                match h {
                    RING_STOP => {
                        let _ = next_tx.send(RING_STOP);
                        break;
                    }
                    0 => done_tx.send(()).expect("ring: root gone"),
                    h => next_tx.send(h - 1).expect("ring: next coroutine gone"),
                }
            }
        }));
    }
    drop(done_tx);
    // One lap to warm up (it also starts every coroutine), then the timed
    // hops.
    let lap = |n: u64| {
        first_tx.send(n).expect("ring: first coroutine gone");
        done_rx.recv().expect("ring: no coroutine reported the end");
    };
    lap(procs as u64);
    let start = Instant::now();
    lap(hops);
    let elapsed = start.elapsed();
    first_tx
        .send(RING_STOP)
        .expect("ring: first coroutine gone");
    drop(first_tx);
    for h in handles {
        h.join().expect("ring: coroutine failed");
    }
    elapsed.as_nanos() as f64 / hops as f64
}

/// Sleeps in short steps until `count` reaches `n` or [`SETTLE`] passes;
/// true when it got there. (A coroutine that only yields goes back to the
/// worker's local queue, ahead of the global queue where new coroutines
/// wait, so it would starve them; a sleeping one lets them run.)
fn wait_for(count: &AtomicUsize, n: usize) -> bool {
    let deadline = Instant::now() + SETTLE;
    while count.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return false;
        }
        coroutine::sleep(Duration::from_micros(100));
    }
    true
}

fn idle(n: usize) -> Result<Report, Failure> {
    type Slot = Option<(Sender<u64>, JoinHandle<()>)>;
    let mut slots: Vec<Slot> = (0..n).map(|_| None).collect();
    let parked = Arc::new(AtomicUsize::new(0));
    let before = mem::rss_bytes();
    let mut stop_error = None;
    for slot in slots.iter_mut() {
        let (tx, rx) = channel::<u64>();
        let parked = parked.clone();
        // may panics ("failed to alloc sys stack") when the kernel refuses
        // another stack mapping; count how many fit instead of dying.
        let spawned = catch_unwind(AssertUnwindSafe(|| {
            go(move || {
                parked.fetch_add(1, Ordering::Relaxed);
                let _ = rx.recv();
            })
        }));
        match spawned {
            Ok(h) => *slot = Some((tx, h)),
            Err(p) => {
                stop_error = Some(panic_text(p.as_ref()));
                break;
            }
        }
    }
    let fit = slots.iter().filter(|s| s.is_some()).count();
    wait_for(&parked, fit);
    let after = mem::rss_bytes();
    let parked_now = parked.load(Ordering::Relaxed);
    for (tx, h) in slots.into_iter().flatten() {
        drop(tx);
        h.join().expect("idle: coroutine failed");
    }
    if parked_now != fit {
        return Err(Failure::Failed(format!(
            "only {parked_now} of {fit} coroutines reached recv"
        )));
    }
    let mut r = Report::new(Outcome::Idle {
        rss_per_proc: after.saturating_sub(before) / fit.max(1) as u64,
        n: fit,
    })
    .with("chan", "unbounded")
    .with("asked", n)
    .with("rss_before", before)
    .with("rss_after", after);
    if let Some(e) = stop_error {
        eprintln!("may idle: spawn stopped after {fit} of {n} coroutines: {e}");
        r = r.with("stopped_at", fit);
    }
    Ok(r)
}
