//! The workloads on tokio: a current-thread runtime, `tokio::spawn`ed
//! tasks, `tokio::sync::mpsc` channels. Timings start inside `block_on`.
//!
//! Tasks are spawned with `tokio::spawn` on the current-thread runtime
//! (every value here is `Send`); that is tokio's own scheduler with no
//! `LocalSet` queue in between.

use crate::{
    mem, skynet_expected, warmup_round_trips, ChanKind, Failure, Outcome, Report, Via, Workload,
    RING_PROCS, RING_STOP,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Channel used by pingpong and ring unless `--chan` says otherwise:
/// `unbounded_channel()`, faster than `channel(1)` here (pingpong 140-153
/// against 171-188 ns per round trip), so tokio gets its best case.
const DEFAULT_CHAN: ChanKind = ChanKind::Unbounded;
/// How skynet nodes collect results unless `--via` says otherwise: join
/// handles, faster than a channel per node (about 680 against 1060 ms).
const DEFAULT_VIA: Via = Via::Join;
/// Most yields the root makes while waiting for spawned tasks to reach
/// their first `recv` (tokio runs a batch of tasks between two polls of the
/// `block_on` future).
const YIELD_BOUND: usize = 1_000_000;

pub fn run(w: &Workload) -> Result<Report, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot build the runtime: {e}")))?;
    match *w {
        Workload::NodePingpong { .. } | Workload::Prefork { .. } => Err(Failure::Skipped(
            "node workloads are procrt's own: the peers have no nodes".into(),
        )),
        Workload::Echo { conns, messages } => crate::echo::run(crate::Imp::Tokio, conns, messages),
        Workload::Pingpong { round_trips, chan } => {
            let kind = chan.unwrap_or(DEFAULT_CHAN);
            let ns_per_rt = rt.block_on(pingpong(round_trips, kind));
            Ok(Report::new(Outcome::Pingpong { ns_per_rt })
                .with("chan", kind.name())
                .with("round_trips", round_trips))
        }
        Workload::Skynet { leaves, via } => {
            let via = via.unwrap_or(DEFAULT_VIA);
            let (sum, total_ms) = rt.block_on(async move {
                let start = Instant::now();
                let sum = match via {
                    Via::Join => skynet_join(0, leaves).await,
                    Via::Chan => skynet_chan(0, leaves).await,
                };
                (sum, start.elapsed().as_secs_f64() * 1e3)
            });
            if sum != skynet_expected(leaves) {
                eprintln!("tokio skynet: wrong sum {sum}");
            }
            Ok(Report::new(Outcome::Skynet { total_ms, sum }).with("via", via.name()))
        }
        Workload::Ring { hops, procs, chan } => {
            let kind = chan.unwrap_or(DEFAULT_CHAN);
            let procs = procs.unwrap_or(RING_PROCS);
            let ns_per_hop = rt.block_on(ring(hops, procs, kind));
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
        Workload::Idle { n, .. } => {
            let (rss_per_proc, before, after) = rt.block_on(idle(n));
            Ok(Report::new(Outcome::Idle { rss_per_proc, n })
                .with("chan", "unbounded")
                .with("rss_before", before)
                .with("rss_after", after))
        }
    }
}

/// A tokio mpsc channel of either kind behind one face.
enum Tx<T> {
    Bounded(mpsc::Sender<T>),
    Unbounded(mpsc::UnboundedSender<T>),
}

enum Rx<T> {
    Bounded(mpsc::Receiver<T>),
    Unbounded(mpsc::UnboundedReceiver<T>),
}

fn make_chan<T>(kind: ChanKind) -> (Tx<T>, Rx<T>) {
    match kind {
        ChanKind::Bounded => {
            let (tx, rx) = mpsc::channel(1);
            (Tx::Bounded(tx), Rx::Bounded(rx))
        }
        ChanKind::Unbounded => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Tx::Unbounded(tx), Rx::Unbounded(rx))
        }
    }
}

impl<T> Tx<T> {
    /// Sends `t`; false when the receiver is gone.
    async fn send(&self, t: T) -> bool {
        match self {
            Tx::Bounded(tx) => tx.send(t).await.is_ok(),
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

impl<T> Rx<T> {
    async fn recv(&mut self) -> Option<T> {
        match self {
            Rx::Bounded(rx) => rx.recv().await,
            Rx::Unbounded(rx) => rx.recv().await,
        }
    }
}

async fn pingpong(round_trips: u64, kind: ChanKind) -> f64 {
    let warmup = warmup_round_trips(round_trips);
    let (ping_tx, mut ping_rx) = make_chan::<u64>(kind);
    let (pong_tx, mut pong_rx) = make_chan::<u64>(kind);
    let ponger = tokio::spawn(async move {
        while let Some(v) = ping_rx.recv().await {
            assert!(pong_tx.send(v).await, "pingpong: pinger gone");
        }
    });
    let pinger = tokio::spawn(async move {
        for i in 0..warmup {
            assert!(ping_tx.send(i).await, "pingpong: ponger gone");
            assert_eq!(pong_rx.recv().await, Some(i));
        }
        let start = Instant::now();
        for i in 0..round_trips {
            assert!(ping_tx.send(i).await, "pingpong: ponger gone");
            assert_eq!(pong_rx.recv().await, Some(i));
        }
        start.elapsed()
    });
    let elapsed = pinger.await.expect("pingpong: pinger failed");
    ponger.await.expect("pingpong: ponger failed");
    elapsed.as_nanos() as f64 / round_trips as f64
}

/// A boxed future: async recursion needs one.
type BoxFut = Pin<Box<dyn Future<Output = u64> + Send>>;

/// The subtree of `size` leaves whose first leaf is number `num`; each
/// child is a task, summed through its `JoinHandle`.
fn skynet_join(num: u64, size: u64) -> BoxFut {
    Box::pin(async move {
        if size == 1 {
            return num;
        }
        let step = size / 10;
        let children: [_; 10] =
            std::array::from_fn(|i| tokio::spawn(skynet_join(num + i as u64 * step, step)));
        let mut sum = 0;
        for h in children {
            sum += h.await.expect("skynet: child failed");
        }
        sum
    })
}

/// Like [`skynet_join`], but the children send on an unbounded channel.
fn skynet_chan(num: u64, size: u64) -> BoxFut {
    Box::pin(async move {
        if size == 1 {
            return num;
        }
        let step = size / 10;
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..10 {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(skynet_chan(num + i * step, step).await);
            });
        }
        drop(tx);
        let mut sum = 0;
        for _ in 0..10 {
            sum += rx.recv().await.expect("skynet: child failed");
        }
        sum
    })
}

async fn ring(hops: u64, procs: usize, kind: ChanKind) -> f64 {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let (mut txs, rxs): (Vec<_>, Vec<_>) = (0..procs).map(|_| make_chan::<u64>(kind)).unzip();
    let first_tx = txs[0].clone();
    txs.rotate_left(1);
    let mut handles = Vec::with_capacity(procs);
    for (mut my_rx, next_tx) in rxs.into_iter().zip(txs) {
        let done_tx = done_tx.clone();
        handles.push(tokio::spawn(async move {
            // Forward each count less one, report a 0, pass the stop token
            // on and leave (the last one finds task 0 gone).
            while let Some(h) = my_rx.recv().await {
                match h {
                    RING_STOP => {
                        let _ = next_tx.send(RING_STOP).await;
                        break;
                    }
                    0 => done_tx.send(()).expect("ring: root gone"),
                    h => assert!(next_tx.send(h - 1).await, "ring: next task gone"),
                }
            }
        }));
    }
    drop(done_tx);
    // One lap to warm up (it also gives every task its first poll), then
    // the timed hops.
    assert!(first_tx.send(procs as u64).await, "ring: first task gone");
    done_rx
        .recv()
        .await
        .expect("ring: no task reported the end");
    let start = Instant::now();
    assert!(first_tx.send(hops).await, "ring: first task gone");
    done_rx
        .recv()
        .await
        .expect("ring: no task reported the end");
    let elapsed = start.elapsed();
    assert!(first_tx.send(RING_STOP).await, "ring: first task gone");
    drop(first_tx);
    for h in handles {
        h.await.expect("ring: task failed");
    }
    elapsed.as_nanos() as f64 / hops as f64
}

/// `(rss per task, rss before, rss after)` for `n` tasks parked in `recv`
/// on unbounded channels of their own (`channel(1)` measured the same,
/// 1288 bytes per task).
async fn idle(n: usize) -> (u64, u64, u64) {
    type Slot = Option<(mpsc::UnboundedSender<u64>, tokio::task::JoinHandle<()>)>;
    let mut tasks: Vec<Slot> = (0..n).map(|_| None).collect();
    let parked = Arc::new(AtomicUsize::new(0));
    let before = mem::rss_bytes();
    for slot in tasks.iter_mut() {
        let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
        let parked = parked.clone();
        let h = tokio::spawn(async move {
            parked.fetch_add(1, Ordering::Relaxed);
            let _ = rx.recv().await;
        });
        *slot = Some((tx, h));
    }
    // Let every task run to its recv (a bounded number of yields).
    for _ in 0..YIELD_BOUND {
        if parked.load(Ordering::Relaxed) == n {
            break;
        }
        tokio::task::yield_now().await;
    }
    let after = mem::rss_bytes();
    assert_eq!(
        parked.load(Ordering::Relaxed),
        n,
        "idle: not every task reached recv"
    );
    for (tx, h) in tasks.into_iter().flatten() {
        drop(tx);
        h.await.expect("idle: task failed");
    }
    (after.saturating_sub(before) / n as u64, before, after)
}
