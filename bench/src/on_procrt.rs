//! The workloads on procrt: procs, `procrt::chan` channels, one runtime on
//! the main thread. Timings start inside `block_on`, once the runtime is up.

use crate::{
    mem, skynet_expected, warmup_round_trips, ChanKind, Failure, Outcome, Report, Via, Workload,
    RING_PROCS, RING_STOP,
};
use procrt::chan::{channel, sync_channel, Receiver, Sender};
use procrt::{spawn, JoinHandle, Runtime, DEFAULT_HIBERNATE_AFTER};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Channel used by pingpong and ring unless `--chan` says otherwise:
/// `channel()`, the faster of the two in interleaved runs, by a few percent
/// (pingpong, 2M round trips x 5: 61-74 ns against 63-83 ns for
/// `sync_channel(1)`; ring within noise). Both are one `VecDeque` push/pop.
const DEFAULT_CHAN: ChanKind = ChanKind::Unbounded;
/// How skynet nodes collect results unless `--via` says otherwise: join,
/// about 117 ms against 163 ms for a channel per node (1M leaves).
const DEFAULT_VIA: Via = Via::Join;
/// First segment of an idle proc without guard pages: the smallest the
/// pool allows in release builds (`MIN_SEGMENT_UNGUARDED`, 4 KiB; asking
/// less rounds up to it).
const IDLE_UNGUARDED_SEGMENT: usize = 4096;
/// First segment of an idle proc with guard pages: the smallest the pool
/// allows in release builds (`MIN_SEGMENT_GUARDED`, 8 KiB: a guard page and
/// one usable page).
const IDLE_GUARDED_SEGMENT: usize = 8192;

pub fn run(w: &Workload) -> Result<Report, Failure> {
    match *w {
        Workload::Echo { conns, messages } => crate::echo::run(crate::Imp::Procrt, conns, messages),
        Workload::NodePingpong { round_trips } => crate::nodes::pingpong(round_trips),
        Workload::Prefork { workers, requests } => {
            crate::nodes::prefork(workers, requests.unwrap_or(20_000))
        }
        Workload::Pingpong { round_trips, chan } => {
            pingpong(round_trips, chan.unwrap_or(DEFAULT_CHAN))
        }
        Workload::Skynet { leaves, via } => skynet(leaves, via.unwrap_or(DEFAULT_VIA)),
        Workload::Ring { hops, procs, chan } => ring(
            hops,
            procs.unwrap_or(RING_PROCS),
            chan.unwrap_or(DEFAULT_CHAN),
        ),
        Workload::Idle {
            n,
            unguarded,
            segment,
        } => idle(n, unguarded, segment),
    }
}

fn runtime() -> Result<Runtime, Failure> {
    Runtime::new().map_err(|e| Failure::Failed(format!("cannot build the runtime: {e}")))
}

fn make_chan<T>(kind: ChanKind) -> (Sender<T>, Receiver<T>) {
    match kind {
        ChanKind::Bounded => sync_channel(1),
        ChanKind::Unbounded => channel(),
    }
}

/// Spawns `f`, turning a spawn failure into a panic of the caller with a
/// message naming the workload (the benchmarks below never expect one).
fn must_spawn<T: 'static>(what: &str, f: impl FnOnce() -> T + 'static) -> JoinHandle<T> {
    spawn(f).unwrap_or_else(|e| panic!("{what}: spawn failed: {e}"))
}

fn pingpong(round_trips: u64, kind: ChanKind) -> Result<Report, Failure> {
    let rt = runtime()?;
    let warmup = warmup_round_trips(round_trips);
    let elapsed = rt.block_on(move || {
        let (ping_tx, ping_rx) = make_chan::<u64>(kind);
        let (pong_tx, pong_rx) = make_chan::<u64>(kind);
        // The ponger answers every ping; it ends when the pinger drops its
        // sender.
        let ponger = must_spawn("pingpong", move || {
            for v in ping_rx.iter() {
                pong_tx.send(v).expect("pingpong: pinger gone");
            }
        });
        let pinger = must_spawn("pingpong", move || {
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
        elapsed
    });
    let ns_per_rt = elapsed.as_nanos() as f64 / round_trips as f64;
    Ok(Report::new(Outcome::Pingpong { ns_per_rt })
        .with("chan", kind.name())
        .with("round_trips", round_trips))
}

/// The subtree of `size` leaves whose first leaf is number `num`; children
/// summed through their join handles.
fn skynet_join(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / 10;
    // An array, not a Vec: no heap allocation per node besides the procs.
    let children: [_; 10] = std::array::from_fn(|i| {
        let i = i as u64;
        must_spawn("skynet", move || skynet_join(num + i * step, step))
    });
    children
        .into_iter()
        .map(|h| h.join().expect("skynet: child failed"))
        .sum()
}

/// Like [`skynet_join`], but each child sends its sum on a channel the
/// node reads ten times; the join handles are dropped (detached).
fn skynet_chan(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / 10;
    let (tx, rx) = channel::<u64>();
    for i in 0..10 {
        let tx = tx.clone();
        drop(must_spawn("skynet", move || {
            // The node reads until all ten have sent; a failed send means
            // it is gone, which the node's own count would show.
            let _ = tx.send(skynet_chan(num + i * step, step));
        }));
    }
    drop(tx);
    rx.iter().take(10).sum()
}

fn skynet(leaves: u64, via: Via) -> Result<Report, Failure> {
    let rt = runtime()?;
    let (sum, elapsed) = rt.block_on(move || {
        let start = Instant::now();
        let sum = match via {
            Via::Join => skynet_join(0, leaves),
            Via::Chan => skynet_chan(0, leaves),
        };
        (sum, start.elapsed())
    });
    if sum != skynet_expected(leaves) {
        eprintln!("procrt skynet: wrong sum {sum}");
    }
    Ok(Report::new(Outcome::Skynet {
        total_ms: elapsed.as_secs_f64() * 1e3,
        sum,
    })
    .with("via", via.name())
    .with("peak_live_procs", rt.peak_live_procs())
    .with("peak_live_segments", rt.pool_stats().peak_live_segments))
}

fn ring(hops: u64, procs: usize, kind: ChanKind) -> Result<Report, Failure> {
    let rt = runtime()?;
    let elapsed = rt.block_on(move || {
        let (done_tx, done_rx) = channel::<()>();
        // Channel i feeds proc i; proc i holds the sender of channel i + 1
        // (the last proc that of channel 0). The root keeps one more sender
        // of channel 0 to inject the count.
        let (mut txs, rxs): (Vec<_>, Vec<_>) = (0..procs).map(|_| make_chan::<u64>(kind)).unzip();
        let first_tx = txs[0].clone();
        txs.rotate_left(1);
        let mut handles = Vec::with_capacity(procs);
        for (my_rx, next_tx) in rxs.into_iter().zip(txs) {
            let done_tx = done_tx.clone();
            handles.push(must_spawn("ring", move || {
                // Forward each count less one, report a 0, pass the stop
                // token on and leave (the last one finds proc 0 gone).
                for h in my_rx.iter() {
                    match h {
                        RING_STOP => {
                            let _ = next_tx.send(RING_STOP);
                            break;
                        }
                        0 => done_tx.send(()).expect("ring: root gone"),
                        h => next_tx.send(h - 1).expect("ring: next proc gone"),
                    }
                }
            }));
        }
        drop(done_tx);
        let lap = |n: u64| {
            first_tx.send(n).expect("ring: first proc gone");
            done_rx.recv().expect("ring: no proc reported the end");
        };
        lap(procs as u64);
        let start = Instant::now();
        lap(hops);
        let elapsed = start.elapsed();
        first_tx.send(RING_STOP).expect("ring: first proc gone");
        drop(first_tx);
        for h in handles {
            h.join().expect("ring: proc failed");
        }
        elapsed
    });
    Ok(Report::new(Outcome::Ring {
        ns_per_hop: elapsed.as_nanos() as f64 / hops as f64,
    })
    .with("chan", kind.name())
    .with("procs", procs)
    .with("hops", hops))
}

fn idle(n: usize, unguarded: bool, segment: Option<usize>) -> Result<Report, Failure> {
    let segment = segment.unwrap_or(if unguarded {
        IDLE_UNGUARDED_SEGMENT
    } else {
        IDLE_GUARDED_SEGMENT
    });
    let builder = Runtime::builder().first_segment_size(segment);
    let builder = if unguarded {
        // SAFETY: without guard pages nothing catches an overflow, so every
        // proc must stay inside its first segment (4 KiB by default here,
        // the pool's smallest). An idle proc runs only its closure below:
        // one counter update and `recv`, which parks. Both are a few small
        // frames, and every runtime entry point they reach (park, the
        // switch) goes through `stack::grow(ENTRY_STACK, ..)`, which links
        // a new segment instead of running past the bottom when less than
        // that is left. The root proc (`block_on`) runs on its own 1 MiB
        // segment. No foreign code runs on a proc stack.
        unsafe { builder.unguarded() }
    } else {
        builder
    };
    let rt = builder
        .build()
        .map_err(|e| Failure::Failed(format!("cannot build the runtime: {e}")))?;
    let (report, stop_error) = rt.block_on(move || {
        // Filled before the first reading so their memory does not count.
        let mut procs: Vec<Option<(Sender<u64>, JoinHandle<()>)>> = (0..n).map(|_| None).collect();
        let parked = Rc::new(Cell::new(0usize));
        let before = mem::rss_bytes();
        let mut stop_error = None;
        for slot in procs.iter_mut() {
            let (tx, rx) = channel::<u64>();
            let parked = parked.clone();
            match spawn(move || {
                parked.set(parked.get() + 1);
                // Parks until the sender is dropped below.
                let _ = rx.recv();
            }) {
                Ok(h) => *slot = Some((tx, h)),
                Err(e) => {
                    stop_error = Some(e.to_string());
                    break;
                }
            }
        }
        // A spawned proc runs at once until it parks; make sure every one
        // got there (a bounded number of yields).
        let fit = procs.iter().filter(|p| p.is_some()).count();
        for _ in 0..1000 {
            if parked.get() == fit {
                break;
            }
            procrt::yield_now();
        }
        let fresh = mem::rss_bytes();
        // Idle procs: let them rest until the runtime hibernates their
        // stacks (between one and two `DEFAULT_HIBERNATE_AFTER` after they
        // parked), bounded.
        let settle = Instant::now();
        while procrt::hibernated_procs() < fit && settle.elapsed() < 4 * DEFAULT_HIBERNATE_AFTER {
            procrt::sleep(Duration::from_millis(20));
        }
        let hibernated = procrt::hibernated_procs();
        let after = mem::rss_bytes();
        let parked_now = parked.get();
        // Wake them all (their channels disconnect) and let them end;
        // a hibernated proc's wake puts its stack back first.
        let waking = Instant::now();
        for (tx, h) in procs.into_iter().flatten() {
            drop(tx);
            h.join().expect("idle: proc failed");
        }
        let wake_ns = waking.elapsed().as_nanos() as u64 / fit.max(1) as u64;
        let per = after.saturating_sub(before) / fit.max(1) as u64;
        let per_fresh = fresh.saturating_sub(before) / fit.max(1) as u64;
        (
            (
                per, per_fresh, hibernated, wake_ns, fit, parked_now, before, after,
            ),
            stop_error,
        )
    });
    let (per, per_fresh, hibernated, wake_ns, fit, parked_now, before, after) = report;
    if parked_now != fit {
        return Err(Failure::Failed(format!(
            "only {parked_now} of {fit} procs reached recv"
        )));
    }
    let mut r = Report::new(Outcome::Idle {
        rss_per_proc: per,
        n: fit,
    })
    .with("mode", if unguarded { "unguarded" } else { "guarded" })
    .with("first_segment", segment)
    .with("asked", n)
    .with("rss_before", before)
    .with("rss_after", after)
    .with("rss_per_proc_fresh", per_fresh)
    .with("hibernated", hibernated)
    .with("wake_and_end_ns_per_proc", wake_ns);
    if let Some(e) = stop_error {
        eprintln!("procrt idle: spawn stopped after {fit} of {n} procs: {e}");
        r = r.with("stopped_at", fit);
    }
    Ok(r)
}
