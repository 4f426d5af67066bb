//! The workloads on OS threads with `std::sync::mpsc`, where sensible:
//!
//! - pingpong: two threads.
//! - skynet10k: a thread per node (11,111 threads). The full skynet
//!   (1,111,111 threads, about 50 µs each to create) is skipped.
//! - ring: 1,000 threads unless `--procs` (10,000 would mostly measure the
//!   kernel's run queue and 10,000 thread stacks).
//! - idle: at most 10,000 threads, each blocked in `recv`.
//!
//! Spawned threads get 64 KiB stacks ([`STACK`]), not std's 2 MiB default,
//! so ten thousand of them stay well inside the address space and
//! overcommit limits; only touched pages count towards RSS either way.

use crate::{
    mem, skynet_expected, warmup_round_trips, ChanKind, Failure, Outcome, Report, Via, Workload,
    RING_STOP, SKYNET10K_LEAVES,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Stack size of every spawned thread.
const STACK: usize = 64 * 1024;
/// Threads in the ring unless `--procs` says otherwise.
pub const RING_THREADS: usize = 1_000;
/// Most threads the idle workload spawns.
pub const IDLE_THREADS_MAX: usize = 10_000;
/// Channel used by pingpong and ring unless `--chan` says otherwise:
/// `channel()`, like the other implementations (`sync_channel(1)` was no
/// faster).
const DEFAULT_CHAN: ChanKind = ChanKind::Unbounded;
/// Longest wait for spawned threads to reach their first `recv`.
const SETTLE: Duration = Duration::from_secs(30);

pub fn run(w: &Workload) -> Result<Report, Failure> {
    match *w {
        Workload::NodePingpong { .. } | Workload::Prefork { .. } => Err(Failure::Skipped(
            "node workloads are procrt's own: the peers have no nodes".into(),
        )),
        Workload::Echo { conns, messages } => {
            crate::echo::run(crate::Imp::Threads, conns, messages)
        }
        Workload::Pingpong { round_trips, chan } => {
            let kind = chan.unwrap_or(DEFAULT_CHAN);
            let ns_per_rt = pingpong(round_trips, kind)?;
            Ok(Report::new(Outcome::Pingpong { ns_per_rt })
                .with("chan", kind.name())
                .with("round_trips", round_trips))
        }
        Workload::Skynet { leaves, .. } if leaves > SKYNET10K_LEAVES => {
            Err(Failure::Skipped(format!(
                "{leaves} leaves would be {} OS threads; run skynet10k",
                leaves * 10 / 9
            )))
        }
        Workload::Skynet { leaves, via } => {
            if via == Some(Via::Chan) {
                return Err(Failure::Skipped("threads run skynet via join only".into()));
            }
            let start = Instant::now();
            let sum = skynet(0, leaves)?;
            let total_ms = start.elapsed().as_secs_f64() * 1e3;
            if sum != skynet_expected(leaves) {
                eprintln!("threads skynet: wrong sum {sum}");
            }
            Ok(Report::new(Outcome::Skynet { total_ms, sum })
                .with("via", "join")
                .with("stack", STACK))
        }
        Workload::Ring { hops, procs, chan } => {
            let kind = chan.unwrap_or(DEFAULT_CHAN);
            let procs = procs.unwrap_or(RING_THREADS);
            let ns_per_hop = ring(hops, procs, kind)?;
            Ok(Report::new(Outcome::Ring { ns_per_hop })
                .with("chan", kind.name())
                .with("procs", procs)
                .with("hops", hops))
        }
        Workload::Idle {
            unguarded: true, ..
        }
        | Workload::Idle {
            segment: Some(_), ..
        } => Err(Failure::Skipped(
            "--unguarded and --segment are procrt's options".into(),
        )),
        Workload::Idle { n, .. } => idle(n),
    }
}

fn spawn<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, Failure> {
    thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .map_err(|e| Failure::Failed(format!("thread spawn failed: {e}")))
}

/// Either std channel behind one face.
enum Tx<T> {
    Bounded(SyncSender<T>),
    Unbounded(Sender<T>),
}

impl<T> Tx<T> {
    fn send(&self, t: T) -> bool {
        match self {
            Tx::Bounded(tx) => tx.send(t).is_ok(),
            Tx::Unbounded(tx) => tx.send(t).is_ok(),
        }
    }
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        match self {
            Tx::Bounded(tx) => Tx::Bounded(tx.clone()),
            Tx::Unbounded(tx) => Tx::Unbounded(tx.clone()),
        }
    }
}

fn make_chan<T>(kind: ChanKind) -> (Tx<T>, Receiver<T>) {
    match kind {
        ChanKind::Bounded => {
            let (tx, rx) = sync_channel(1);
            (Tx::Bounded(tx), rx)
        }
        ChanKind::Unbounded => {
            let (tx, rx) = channel();
            (Tx::Unbounded(tx), rx)
        }
    }
}

fn pingpong(round_trips: u64, kind: ChanKind) -> Result<f64, Failure> {
    let warmup = warmup_round_trips(round_trips);
    let (ping_tx, ping_rx) = make_chan::<u64>(kind);
    let (pong_tx, pong_rx) = make_chan::<u64>(kind);
    let ponger = spawn(move || {
        for v in ping_rx.iter() {
            assert!(pong_tx.send(v), "pingpong: pinger gone");
        }
    })?;
    let pinger = spawn(move || {
        let round_trip = |i: u64| {
            assert!(ping_tx.send(i), "pingpong: ponger gone");
            assert_eq!(pong_rx.recv(), Ok(i));
        };
        (0..warmup).for_each(round_trip);
        let start = Instant::now();
        (0..round_trips).for_each(round_trip);
        start.elapsed()
    })?;
    let elapsed = pinger
        .join()
        .map_err(|_| Failure::Failed("pinger panicked".into()))?;
    ponger
        .join()
        .map_err(|_| Failure::Failed("ponger panicked".into()))?;
    Ok(elapsed.as_nanos() as f64 / round_trips as f64)
}

fn skynet(num: u64, size: u64) -> Result<u64, Failure> {
    if size == 1 {
        return Ok(num);
    }
    let step = size / 10;
    let children = (0..10)
        .map(|i| spawn(move || skynet(num + i * step, step)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sum = 0;
    for h in children {
        sum += h
            .join()
            .map_err(|_| Failure::Failed("skynet: child panicked".into()))??;
    }
    Ok(sum)
}

fn ring(hops: u64, procs: usize, kind: ChanKind) -> Result<f64, Failure> {
    let (done_tx, done_rx) = channel::<()>();
    let (mut txs, rxs): (Vec<_>, Vec<_>) = (0..procs).map(|_| make_chan::<u64>(kind)).unzip();
    let first_tx = txs[0].clone();
    txs.rotate_left(1);
    let mut handles = Vec::with_capacity(procs);
    for (my_rx, next_tx) in rxs.into_iter().zip(txs) {
        let done_tx = done_tx.clone();
        handles.push(spawn(move || {
            // Forward each count less one, report a 0, pass the stop token
            // on and leave (the last one finds thread 0 gone).
            for h in my_rx.iter() {
                match h {
                    RING_STOP => {
                        let _ = next_tx.send(RING_STOP);
                        break;
                    }
                    0 => done_tx.send(()).expect("ring: root gone"),
                    h => assert!(next_tx.send(h - 1), "ring: next thread gone"),
                }
            }
        })?);
    }
    drop(done_tx);
    // One lap to warm up, then the timed hops.
    let lap = |n: u64| -> Result<(), Failure> {
        assert!(first_tx.send(n), "ring: first thread gone");
        done_rx
            .recv()
            .map_err(|_| Failure::Failed("ring: no thread reported the end".into()))
    };
    lap(procs as u64)?;
    let start = Instant::now();
    lap(hops)?;
    let elapsed = start.elapsed();
    assert!(first_tx.send(RING_STOP), "ring: first thread gone");
    drop(first_tx);
    for h in handles {
        h.join()
            .map_err(|_| Failure::Failed("ring: thread panicked".into()))?;
    }
    Ok(elapsed.as_nanos() as f64 / hops as f64)
}

fn idle(asked: usize) -> Result<Report, Failure> {
    let n = asked.min(IDLE_THREADS_MAX);
    if n < asked {
        eprintln!("threads idle: capped at {n} threads (asked {asked})");
    }
    type Slot = Option<(Sender<u64>, JoinHandle<()>)>;
    let mut slots: Vec<Slot> = (0..n).map(|_| None).collect();
    let parked = Arc::new(AtomicUsize::new(0));
    let before = mem::rss_bytes();
    for slot in slots.iter_mut() {
        let (tx, rx) = channel::<u64>();
        let parked = parked.clone();
        let h = spawn(move || {
            parked.fetch_add(1, Ordering::Relaxed);
            let _ = rx.recv();
        })?;
        *slot = Some((tx, h));
    }
    // Wait (bounded) for every thread to reach recv; a thread that counted
    // itself is a few instructions from blocking.
    let deadline = Instant::now() + SETTLE;
    while parked.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(50));
    let after = mem::rss_bytes();
    let parked_now = parked.load(Ordering::Relaxed);
    for (tx, h) in slots.into_iter().flatten() {
        drop(tx);
        h.join()
            .map_err(|_| Failure::Failed("idle: thread panicked".into()))?;
    }
    if parked_now != n {
        return Err(Failure::Failed(format!(
            "only {parked_now} of {n} threads reached recv"
        )));
    }
    Ok(Report::new(Outcome::Idle {
        rss_per_proc: after.saturating_sub(before) / n as u64,
        n,
    })
    .with("chan", "unbounded")
    .with("asked", asked)
    .with("stack", STACK)
    .with("rss_before", before)
    .with("rss_after", after))
}
