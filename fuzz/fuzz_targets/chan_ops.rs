//! `chan_ops`: random programs of procs talking over a few channels, run on
//! a fresh runtime per input and checked against a model of every channel.
//!
//! The input decodes (with `arbitrary`) into a runtime configuration, 1 to 4
//! channels (`channel()` or `sync_channel(0..=3)`) and a flat list of
//! operations, parsed into a tree of programs as in `sched_ops`: the root's,
//! and for every `Spawn` the child's (the next `body_len` operations at that
//! level). The root creates the channels and holds the receiver and one
//! sender of each; a `Spawn` clones some of the spawner's senders into the
//! child and moves some of its receivers there. The operations: spawn,
//! `send` / `try_send`, `recv` / `try_recv` / `recv_timeout` / `try_iter`,
//! `Select` over a subset of the proc's receive and send cases (`ready`,
//! `try_ready`, `ready_timeout`; the chosen case is then performed with
//! `try_recv` / `try_send`), clone or drop a sender, drop a receiver, yield,
//! sleep, join or detach a child, panic (holding handles), run the next
//! operation inside `procrt::stack::grow` under a checked stack frame, and
//! (root only) end at once, so that dropping the runtime cancels procs
//! parked in `recv`, `send`, `select` or `join` (or a second `block_on`
//! finishes them). At its end a proc drops its senders, then drains
//! (`recv` until disconnected, as long as each `recv` provably cannot
//! deadlock, see below) and drops its receivers, then joins its children.
//!
//! # The model
//!
//! Everything runs on one thread and `send` queues its message before it
//! returns, with no switch in between (see `procrt::chan`), so the harness
//! knows each channel's exact state at every point where its own code runs:
//! the committed, unreceived messages in order, the live senders (and which
//! proc holds each), whether the receiver is alive, and whether its holder is
//! inside a `recv` / `recv_timeout` / select on it (so a rendezvous channel
//! has room). Every message carries its id, channel, sender, a canary and a
//! boxed payload; the harness records each message's state (in `send`,
//! queued, received, returned by a failed send, dropped).
//!
//! # Invariants checked
//!
//! A violation prints `chan_ops: invariant violated: ...` and aborts, which
//! libFuzzer reports as a crash. Only the harness's own [`KnownPanic`] is
//! expected; any other panic (a runtime panic such as `block_on`'s deadlock
//! report, an `expect` in the harness) reaches libfuzzer-sys's hook and
//! aborts too.
//!
//! 1. Order: a receive returns the oldest committed message of its channel
//!    (so none is lost, duplicated or reordered, per sender and across
//!    senders); a message is received at most once, on its own channel,
//!    intact, and only after its `send` returned `Ok`.
//! 2. Send outcomes: `try_send` gives exactly what the model predicts (`Ok`
//!    when the receiver lives and there is room: unbounded, fewer than `n`
//!    queued, or for `n = 0` a receiver waiting and nothing queued; `Full`
//!    when it lives without room; `Disconnected` when it is gone); a
//!    blocking `send` returns `Ok` only with room and a live receiver, and
//!    `Err` only when the receiver is gone. A failed send hands back the very
//!    message, intact, which is then never received.
//! 3. Receive outcomes: `try_recv` gives exactly the model's prediction;
//!    `RecvError` / `Disconnected` come exactly when every sender is gone and
//!    the queue is empty; `Timeout` only with an empty queue, a live sender
//!    and the full timeout elapsed; `try_iter` leaves the queue empty.
//! 4. Non-blocking means no switch: `try_*`, `try_iter`, `try_ready`,
//!    zero timeouts, and a `send` / `recv` / `ready` that the model says can
//!    proceed now return without letting any other proc run.
//! 5. Select: case indices are handed out in order; a returned case is
//!    ready in the model, and its `try_recv` / `try_send` then does not give
//!    `Empty` / `Full` (it succeeds or reports the disconnection); `None` /
//!    `ReadyTimeoutError` only when no case is ready, and a timeout only
//!    after it elapsed. A `ready` that never returns because its proc spins
//!    without switching (so no other proc, not even the watchdog, runs) is
//!    caught by an OS thread ([`hang_guard`]) once the input has run for
//!    [`HANG_LIMIT`].
//! 6. Drops: every message is dropped exactly once with its canary intact:
//!    after it was received, after a failed send returned it, while its
//!    receiver is dropped (never otherwise while queued), or, still inside a
//!    parked `send`, when the runtime's drop cancels that proc. Dropping a
//!    receiver drops everything queued.
//! 7. No lost wake-ups: a watchdog proc yields in a loop; when several of
//!    its yields pass with no harness code running anywhere, every other
//!    proc is parked, and none may be parked in a wait whose condition holds
//!    in the model (a `send` with room or no receiver, a `recv` with a
//!    message or no sender, a select with a ready case, a `join` of an ended
//!    proc; a select's own receive case does not count as the waiting
//!    receiver of its own rendezvous send case, see
//!    [`ChanModel::send_ready_for`]). If nothing is parked with a timeout
//!    either, the procs are
//!    deadlocked, which the generator rules out (below): also a violation.
//! 8. Procs: joins give the proc's own result (its operation count), the
//!    `KnownPanic` payload iff it panicked, `Cancelled` only after the
//!    runtime's drop and only for procs that neither returned nor panicked;
//!    `is_finished` agrees with the harness; no proc runs after it ended.
//! 9. Counters: after a full run `live_procs() == 0` and
//!    `pool_stats().live_segments == 0`, every message is already dropped
//!    and every channel is gone; after an early end `live_procs()` equals
//!    the unfinished procs; after the runtime's drop every started proc
//!    ended, every message was dropped, handles kept past the drop still
//!    work (`try_send` / `try_recv` outside any runtime) and nothing the
//!    runtime held still references the harness.
//! 10. `stack::grow` links at most one power-of-two segment holding what
//!     was asked, and a frame's pattern survives every switch inside it.
//!
//! # No deadlocks by construction
//!
//! Procs are ranked by spawn order (the root is 0); handles only move to
//! children, so the procs that hold a channel's senders or receiver only
//! ever get higher ranks. A proc may block (without timeout) only on
//! higher-ranked procs: a blocking `recv` when every sender of the channel
//! is held by a higher rank (or it can proceed now), a blocking `send` when
//! the receiver's holder ranks higher (or it can proceed now), `ready` when
//! one of its cases qualifies, `join` on its children. Every program is
//! finite, so the highest-ranked unfinished proc can always proceed, and by
//! induction all finish. Otherwise `Send` becomes `try_send` and the
//! blocking `Recv` / `ready` become a 1 ms timeout. Timeouts and sleeps draw
//! on a per-input budget of [`WAIT_BUDGET`]; once it is spent they are zero.
//!
//! # AddressSanitizer and proc stacks
//!
//! As in `sched_ops` (see its doc comment): procrt does not tell ASan about
//! its stack switches, so the harness clears ASan's shadow of a proc's
//! segment itself, in the panic hook before a [`KnownPanic`] unwinds, when a
//! proc ends and again before a dead proc's segment can be reused (spawn,
//! `grow`, `block_on`), and for every segment before the runtime's drop and
//! before the next input.

#![no_main]
#![feature(cfg_sanitize)]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use procrt::chan::{
    channel, sync_channel, Receiver, RecvError, RecvTimeoutError, Select, SendError, Sender,
    TryRecvError, TrySendError,
};
use procrt::{JoinError, JoinHandle, Runtime};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

mod common;
use common::{asan, install_panic_filter, stack_pointer, KnownPanic, PANICKING_CHAIN};

// ---------------------------------------------------------------------------
// Limits: keep every input to a few milliseconds.
// ---------------------------------------------------------------------------

/// Raw operations read from one input; the rest is ignored.
const MAX_RAW_OPS: usize = 256;
/// Spawns in one input's program tree (the watchdog is not counted).
const MAX_SPAWNS: usize = 16;
/// Nesting of spawns below the root.
const MAX_DEPTH: usize = 3;
/// Top-level operations of one child's program.
const MAX_BODY: usize = 24;
/// Channels per input.
const MAX_CHANS: usize = 4;
/// Senders one proc may hold (`CloneSender` stops there).
const MAX_SENDERS: usize = 8;
/// Nested `Grow` operations.
const MAX_GROW_NEST: usize = 3;
/// Stack each `Grow` asks for beyond its frame: room for the interpreter
/// and the runtime's entry points under ASan.
const GROW_SLACK: usize = 16 * 1024;
/// Total time one input may spend in timeouts and sleeps.
const WAIT_BUDGET: Duration = Duration::from_millis(6);
/// Yields without any harness code running elsewhere that make the
/// watchdog conclude every other proc is parked.
const QUIET_YIELDS: usize = 4;
/// The watchdog's sleep while every proc waits on a timer.
const NAP: Duration = Duration::from_micros(100);
/// Wall time after which waiting for procs to finish is a liveness failure.
const LIVENESS_LIMIT: Duration = Duration::from_secs(5);
/// Wall time after which one input counts as hung (see [`hang_guard`]).
const HANG_LIMIT: Duration = Duration::from_secs(10);
/// Stack reservation of each runtime.
const RESERVATION: usize = 256 << 20;

// ---------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------

/// One fuzz input.
#[derive(Arbitrary, Debug)]
struct Input {
    config: Config,
    /// The channels (the first [`MAX_CHANS`]; none means one unbounded).
    chans: Vec<ChanKind>,
    ops: Vec<RawOp>,
}

/// How the runtime is built and how the root ends.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Config {
    /// First segment of every proc but the root.
    first_segment: SegSize,
    /// The root runs on 1 MiB rather than the first segment size.
    big_root: bool,
    /// A zero segment cache.
    no_cache: bool,
    /// At its end the root drains its receivers rather than dropping them.
    root_drains: bool,
    /// After the root ends early: drop the runtime at once, or first finish
    /// the other procs in a second `block_on`.
    after_early_end: AfterEarlyEnd,
    /// After an early end the root hands its channel handles out of
    /// `block_on`; they are used and dropped after the runtime's drop.
    keep_handles: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum SegSize {
    K32,
    K64,
}

impl SegSize {
    fn bytes(self) -> usize {
        match self {
            SegSize::K32 => 32 << 10,
            SegSize::K64 => 64 << 10,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum AfterEarlyEnd {
    Drop,
    Drain,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum ChanKind {
    Unbounded,
    Rendezvous,
    Bounded1,
    Bounded2,
    Bounded3,
}

impl ChanKind {
    fn bound(self) -> Option<usize> {
        match self {
            ChanKind::Unbounded => None,
            ChanKind::Rendezvous => Some(0),
            ChanKind::Bounded1 => Some(1),
            ChanKind::Bounded2 => Some(2),
            ChanKind::Bounded3 => Some(3),
        }
    }
}

/// A timeout or sleep (sleeps are capped at 1 ms).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Zero,
    Us100,
    Ms1,
    Ms2,
}

impl Wait {
    fn duration(self) -> Duration {
        match self {
            Wait::Zero => Duration::ZERO,
            Wait::Us100 => Duration::from_micros(100),
            Wait::Ms1 => Duration::from_millis(1),
            Wait::Ms2 => Duration::from_millis(2),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum RecvMode {
    /// `recv` if the model proves it cannot deadlock, else a 1 ms
    /// `recv_timeout`.
    Blocking,
    Try,
    Timeout(Wait),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum SelectMode {
    /// `ready` if one case proves it cannot deadlock, else a 1 ms
    /// `ready_timeout`.
    Ready,
    TryReady,
    Timeout(Wait),
}

/// Size of the checked buffer a `Grow` keeps on the grown stack.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    B256,
    B1024,
    B4096,
}

impl Frame {
    fn bytes(self) -> usize {
        match self {
            Frame::B256 => 256,
            Frame::B1024 => 1024,
            Frame::B4096 => 4096,
        }
    }
}

/// An operation as decoded. Handles are picked by index modulo what the
/// proc holds; an operation on a handle the proc lacks does nothing.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum RawOp {
    /// Spawn a child running the next `body_len` operations, with a clone of
    /// the spawner's (first) sender of each channel in `tx_mask` and the
    /// spawner's receivers of the channels in `rx_mask`. At its end the
    /// child drains its receivers if `drain`, else drops them.
    Spawn {
        body_len: u8,
        tx_mask: u8,
        rx_mask: u8,
        drain: bool,
    },
    /// `send` if `blocking` and the model proves it cannot deadlock, else
    /// `try_send`, on the proc's sender at this index.
    Send {
        tx: u8,
        blocking: bool,
    },
    /// Receive on the proc's receiver at this index (among those it holds).
    Recv {
        rx: u8,
        mode: RecvMode,
    },
    /// `try_iter` to the end.
    TryIter {
        rx: u8,
    },
    /// A select over the proc's receivers in `recv_mask` (bit = channel) and
    /// senders in `send_mask` (bit = index); bit 7 of `recv_mask` puts the
    /// send cases first.
    Select {
        recv_mask: u8,
        send_mask: u8,
        mode: SelectMode,
    },
    CloneSender(u8),
    DropSender(u8),
    DropReceiver(u8),
    Yield,
    Sleep(Wait),
    Join(u8),
    /// Drop a child's handle.
    Detach(u8),
    /// `panic_any(KnownPanic)`, holding whatever handles the proc holds.
    Panic,
    /// Run the next operation inside `procrt::stack::grow`, below a checked
    /// buffer of this size.
    Grow(Frame),
    /// In the root: return at once, leaving the rest to the runtime's drop
    /// (or a second `block_on`). Elsewhere: nothing.
    DropRuntimeEarly,
}

// ---------------------------------------------------------------------------
// Programs
// ---------------------------------------------------------------------------

/// A parsed operation.
#[derive(Debug)]
enum Op {
    Spawn {
        child: Rc<Program>,
        tx_mask: u8,
        rx_mask: u8,
    },
    Grow {
        frame: Frame,
        inner: Box<Op>,
    },
    /// Any other operation (never `RawOp::Spawn` or `RawOp::Grow`).
    Plain(RawOp),
}

/// One proc's program.
#[derive(Debug)]
struct Program {
    ops: Vec<Op>,
    /// At its end the proc drains its receivers.
    drain: bool,
}

/// Turns the flat operation list into a tree of programs within the limits.
struct Parser<'a> {
    raw: std::slice::Iter<'a, RawOp>,
    spawns: usize,
}

impl Parser<'_> {
    /// Parses up to `len` operations (all that remain when `None`) into the
    /// program of a proc `depth` spawns below the root.
    fn program(&mut self, len: Option<usize>, depth: usize, drain: bool) -> Program {
        let mut ops = Vec::new();
        while len.is_none_or(|l| ops.len() < l) {
            let Some(op) = self.op(depth, 0) else { break };
            ops.push(op);
        }
        Program { ops, drain }
    }

    /// Parses one operation; `nest` counts the `Grow`s around it.
    fn op(&mut self, depth: usize, nest: usize) -> Option<Op> {
        let raw = *self.raw.next()?;
        Some(match raw {
            RawOp::Spawn {
                body_len,
                tx_mask,
                rx_mask,
                drain,
            } => {
                let body = body_len as usize % (MAX_BODY + 1);
                if depth < MAX_DEPTH && self.spawns < MAX_SPAWNS {
                    self.spawns += 1;
                    let child = self.program(Some(body), depth + 1, drain);
                    Op::Spawn {
                        child: Rc::new(child),
                        tx_mask,
                        rx_mask,
                    }
                } else {
                    // Over the limits: the child's operations are skipped
                    // and the spawn becomes a yield.
                    for _ in 0..body {
                        self.raw.next();
                    }
                    Op::Plain(RawOp::Yield)
                }
            }
            RawOp::Grow(frame) if nest < MAX_GROW_NEST => match self.op(depth, nest + 1) {
                Some(inner) => Op::Grow {
                    frame,
                    inner: Box::new(inner),
                },
                None => Op::Plain(RawOp::Yield),
            },
            RawOp::Grow(_) => Op::Plain(RawOp::Yield),
            other => Op::Plain(other),
        })
    }
}

// ---------------------------------------------------------------------------
// Shared state and the model
// ---------------------------------------------------------------------------

/// Prints the violated invariant and aborts (libFuzzer reports a crash).
macro_rules! violation {
    ($($arg:tt)*) => {{
        eprintln!("chan_ops: invariant violated: {}", format_args!($($arg)*));
        std::process::abort()
    }};
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MsgState {
    /// Inside the `send`/`try_send` call that carries it.
    InFlight,
    /// Committed: `send` returned `Ok`, not yet received.
    Queued,
    /// A receive returned it (the harness drops it next).
    Received,
    /// A failed send returned it (the harness drops it next).
    Returned,
    Dropped,
}

struct MsgRec {
    state: MsgState,
}

/// What the model knows about one channel.
struct ChanModel {
    index: usize,
    /// `None`: unbounded; `Some(n)`: `sync_channel(n)`.
    bound: Option<usize>,
    /// Committed, unreceived messages, oldest first.
    queue: RefCell<VecDeque<usize>>,
    /// Live senders: (sender id, rank of the proc holding it).
    senders: RefCell<Vec<(u32, usize)>>,
    /// The receiver is alive.
    rx_alive: Cell<bool>,
    /// Rank of the proc holding the receiver.
    rx_rank: Cell<usize>,
    /// The receiver's holder is inside a `recv`, `recv_timeout` or select
    /// with a receive case on this channel.
    rx_waiting: Cell<bool>,
    /// The receiver is being dropped (its queued messages with it).
    rx_dropping: Cell<bool>,
}

impl ChanModel {
    fn new(index: usize, bound: Option<usize>) -> Self {
        ChanModel {
            index,
            bound,
            queue: RefCell::new(VecDeque::new()),
            senders: RefCell::new(Vec::new()),
            rx_alive: Cell::new(true),
            rx_rank: Cell::new(0),
            rx_waiting: Cell::new(false),
            rx_dropping: Cell::new(false),
        }
    }

    /// A message could be queued now.
    fn has_room(&self) -> bool {
        let queued = self.queue.borrow().len();
        match self.bound {
            None => true,
            Some(0) => self.rx_waiting.get() && queued == 0,
            Some(n) => queued < n,
        }
    }

    /// What `try_send` must give now.
    fn expected_send(&self) -> SendOutcome {
        if !self.rx_alive.get() {
            SendOutcome::Disconnected
        } else if self.has_room() {
            SendOutcome::Sent
        } else {
            SendOutcome::Full
        }
    }

    /// What `try_recv` must give now: the oldest message's id or an error.
    fn expected_recv(&self) -> Result<usize, TryRecvError> {
        match self.queue.borrow().front() {
            Some(&id) => Ok(id),
            None if self.senders.borrow().is_empty() => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// A send would not block now.
    fn send_ready(&self) -> bool {
        self.expected_send() != SendOutcome::Full
    }

    /// A send case of a select by the proc of rank `rank`, parked, can
    /// proceed. On a rendezvous channel whose receiver that proc holds, the
    /// waiting receiver is the select itself, which withdraws before it
    /// looks again: a proc never hands a message to itself.
    fn send_ready_for(&self, rank: usize) -> bool {
        if self.bound == Some(0) && self.rx_alive.get() && self.rx_rank.get() == rank {
            return false;
        }
        self.send_ready()
    }

    /// A receive would not block now.
    fn recv_ready(&self) -> bool {
        self.expected_recv() != Err(TryRecvError::Empty)
    }

    /// A blocking send by a proc of rank `rank` cannot deadlock: it proceeds
    /// now, or waits only on a higher-ranked receiver.
    fn send_may_block(&self, rank: usize) -> bool {
        self.send_ready() || self.rx_rank.get() > rank
    }

    /// A blocking receive by a proc of rank `rank` cannot deadlock: it
    /// proceeds now, or waits only on higher-ranked senders.
    fn recv_may_block(&self, rank: usize) -> bool {
        self.recv_ready() || self.senders.borrow().iter().all(|&(_, r)| r > rank)
    }
}

impl fmt::Debug for ChanModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "channel {} (bound {:?}, queued {:?}, senders {:?}, receiver {} at rank {}{})",
            self.index,
            self.bound,
            self.queue.borrow(),
            self.senders.borrow(),
            if self.rx_alive.get() { "alive" } else { "gone" },
            self.rx_rank.get(),
            if self.rx_waiting.get() {
                ", waiting"
            } else {
                ""
            },
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendOutcome {
    Sent,
    Full,
    Disconnected,
}

/// What a proc is parked in (or about to be), as the watchdog sees it.
#[derive(Debug, Clone)]
enum Blocked {
    Send {
        chan: usize,
    },
    Recv {
        chan: usize,
        timed: bool,
    },
    Select {
        recv: Vec<usize>,
        send: Vec<usize>,
        timed: bool,
    },
    Join {
        child: usize,
    },
    Sleep,
    /// The root waiting for detached procs (a watcher itself).
    Watch,
}

impl Blocked {
    fn timed(&self) -> bool {
        match self {
            Blocked::Recv { timed, .. } | Blocked::Select { timed, .. } => *timed,
            Blocked::Sleep => true,
            Blocked::Send { .. } | Blocked::Join { .. } | Blocked::Watch => false,
        }
    }
}

/// What the harness knows about one proc, shared with it.
#[derive(Default)]
struct Rec {
    /// Spawn order; the root is 0.
    rank: usize,
    started: Cell<bool>,
    /// Its program is over (returned, unwound by panic or by cancellation):
    /// set by the outermost local of the proc as it drops.
    done: Cell<bool>,
    /// It returned normally, with `value`.
    returned: Cell<bool>,
    value: Cell<u64>,
    /// It executed `Panic`.
    panicked: Cell<bool>,
    joined: Cell<bool>,
    /// `(base, size)` of the segments its stack is linked through (for the
    /// panic hook, see [`asan`]).
    chain: RefCell<Vec<(usize, usize)>>,
}

/// State shared by every proc of one input. Never borrowed across a switch.
struct World {
    chans: Vec<ChanModel>,
    /// Per message id.
    msgs: RefCell<Vec<MsgRec>>,
    /// Every ranked proc, by rank (the root first).
    records: RefCell<Vec<Rc<Rec>>>,
    /// What each ranked proc is blocked in, by rank.
    blocked: RefCell<Vec<Option<Blocked>>>,
    next_sender: Cell<u32>,
    /// Bumped by every proc at each operation and whenever a runtime call
    /// returns to harness code: "some harness code ran".
    progress: Cell<u64>,
    /// What is left of [`WAIT_BUDGET`].
    budget: Cell<Duration>,
    stop_watchdog: Cell<bool>,
    watchdog_alive: Cell<bool>,
    /// The runtime is being dropped (procs are being cancelled).
    cancelling: Cell<bool>,
    first_segment: usize,
    root_segment: usize,
    /// `(base, size)` of every segment a proc ran on.
    segments: RefCell<Vec<(usize, usize)>>,
    /// Segments of procs that ended, to clear before reuse (see [`asan`]).
    dead_segments: RefCell<Vec<(usize, usize)>>,
}

impl World {
    fn step(&self) {
        self.progress.set(self.progress.get() + 1);
    }

    /// Takes up to `want` from the wait budget.
    fn budget(&self, want: Duration) -> Duration {
        let d = want.min(self.budget.get());
        self.budget.set(self.budget.get() - d);
        d
    }

    fn unfinished(&self) -> usize {
        self.records
            .borrow()
            .iter()
            .filter(|r| r.started.get() && !r.done.get())
            .count()
    }

    /// Every proc but the root ended.
    fn children_done(&self) -> bool {
        self.records.borrow().iter().skip(1).all(|r| r.done.get())
    }

    fn blocked_dump(&self) -> String {
        let mut s = String::new();
        for (rank, b) in self.blocked.borrow().iter().enumerate() {
            if let Some(b) = b {
                s += &format!("\n  proc {rank}: {b:?}");
            }
        }
        for c in &self.chans {
            s += &format!("\n  {c:?}");
        }
        s
    }

    /// Commits message `id`, whose send on `chan` just returned `Ok`.
    fn commit(&self, chan: usize, id: usize, what: &str) {
        let ch = &self.chans[chan];
        if !ch.rx_alive.get() {
            violation!("{what} on channel {chan} succeeded after its receiver was dropped");
        }
        let mut msgs = self.msgs.borrow_mut();
        if msgs[id].state != MsgState::InFlight {
            violation!(
                "{what}: message {id} is {:?} when its send returned Ok",
                msgs[id].state
            );
        }
        // The send queued the message just now, with no switch since.
        if !ch.has_room() {
            violation!("{what} queued message {id} on a channel without room: {ch:?}");
        }
        ch.queue.borrow_mut().push_back(id);
        msgs[id].state = MsgState::Queued;
    }

    /// Checks message `msg` a failed send on `chan` handed back as `id`.
    fn returned(&self, chan: usize, id: usize, msg: Msg, what: &str) {
        msg.check_intact(what);
        if msg.id != id || msg.chan != chan {
            violation!(
                "{what} on channel {chan} returned {msg:?}, not the message {id} it was given"
            );
        }
        let mut msgs = self.msgs.borrow_mut();
        if msgs[id].state != MsgState::InFlight {
            violation!(
                "{what} returned message {id}, which is {:?}",
                msgs[id].state
            );
        }
        msgs[id].state = MsgState::Returned;
        drop(msgs);
        drop(msg);
    }

    /// Checks `msg`, just received on `chan`, against the model.
    fn received(&self, chan: usize, msg: Msg, what: &str) {
        msg.check_intact(what);
        if msg.chan != chan {
            violation!("{what} on channel {chan} gave {msg:?}, a message of another channel");
        }
        let mut msgs = self.msgs.borrow_mut();
        match msgs[msg.id].state {
            MsgState::Queued => {
                let front = self.chans[chan].queue.borrow_mut().pop_front();
                if front != Some(msg.id) {
                    violation!(
                        "{what} on channel {chan} gave {msg:?}, but the oldest message queued is \
                         {front:?}: lost or reordered"
                    );
                }
            }
            s => violation!("{what} on channel {chan} gave {msg:?}, which is {s:?}"),
        }
        msgs[msg.id].state = MsgState::Received;
        drop(msgs);
        drop(msg);
    }
}

/// A message: its identity twice (fields and canary) and a heap payload, so
/// a double drop or a use after free shows under ASan too.
struct Msg {
    world: Rc<World>,
    id: usize,
    chan: usize,
    sender: u32,
    canary: u64,
    payload: Box<u64>,
}

fn msg_canary(id: usize, chan: usize, sender: u32) -> u64 {
    (((id as u64) << 24) ^ ((chan as u64) << 16) ^ (sender as u64) ^ 0x5a5a_1234_c0ff_ee00)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Msg {
    /// A new message on `chan` from sender `sender`, in flight.
    fn new(world: &Rc<World>, chan: usize, sender: u32) -> Msg {
        let mut msgs = world.msgs.borrow_mut();
        let id = msgs.len();
        msgs.push(MsgRec {
            state: MsgState::InFlight,
        });
        let canary = msg_canary(id, chan, sender);
        Msg {
            world: world.clone(),
            id,
            chan,
            sender,
            canary,
            payload: Box::new(!canary),
        }
    }

    fn check_intact(&self, what: &str) {
        let ok = self.id < self.world.msgs.borrow().len()
            && self.canary == msg_canary(self.id, self.chan, self.sender)
            && *self.payload == !self.canary;
        if !ok {
            violation!("{what}: message corrupted: {self:?}");
        }
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message {} (channel {}, sender {})",
            self.id, self.chan, self.sender
        )
    }
}

impl Drop for Msg {
    fn drop(&mut self) {
        self.check_intact("drop");
        let w = &*self.world;
        let mut msgs = w.msgs.borrow_mut();
        match msgs[self.id].state {
            MsgState::Received | MsgState::Returned => {}
            MsgState::Queued => {
                let ch = &w.chans[self.chan];
                if !ch.rx_dropping.get() {
                    violation!("{self:?} dropped while queued, its receiver alive: lost");
                }
                let mut queue = ch.queue.borrow_mut();
                match queue.iter().position(|&i| i == self.id) {
                    Some(p) => {
                        queue.remove(p);
                    }
                    None => violation!("{self:?} dropped as queued, but the model lost it"),
                }
            }
            MsgState::InFlight => {
                if !w.cancelling.get() {
                    violation!("{self:?} dropped inside its send, outside a cancellation");
                }
            }
            MsgState::Dropped => violation!("{self:?} dropped twice"),
        }
        msgs[self.id].state = MsgState::Dropped;
    }
}

/// A sender the model tracks.
struct Tx {
    tx: Option<Sender<Msg>>,
    world: Rc<World>,
    chan: usize,
    id: u32,
}

impl Tx {
    /// Registers `tx` as a sender of `chan` held by the proc of rank `rank`.
    fn new(world: &Rc<World>, chan: usize, tx: Sender<Msg>, rank: usize) -> Tx {
        let id = world.next_sender.get();
        world.next_sender.set(id + 1);
        world.chans[chan].senders.borrow_mut().push((id, rank));
        Tx {
            tx: Some(tx),
            world: world.clone(),
            chan,
            id,
        }
    }

    fn sender(&self) -> &Sender<Msg> {
        self.tx.as_ref().expect("live Tx has its sender")
    }

    /// A clone held by the proc of rank `rank`.
    fn clone_for(&self, rank: usize) -> Tx {
        Tx::new(&self.world, self.chan, self.sender().clone(), rank)
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        let mut senders = self.world.chans[self.chan].senders.borrow_mut();
        match senders.iter().position(|&(id, _)| id == self.id) {
            Some(p) => {
                senders.remove(p);
            }
            None => violation!("sender {} of channel {} dropped twice", self.id, self.chan),
        }
        drop(senders);
        drop(self.tx.take());
    }
}

/// A receiver the model tracks.
struct Rx {
    rx: Option<Receiver<Msg>>,
    world: Rc<World>,
    chan: usize,
}

impl Rx {
    fn receiver(&self) -> &Receiver<Msg> {
        self.rx.as_ref().expect("live Rx has its receiver")
    }
}

impl Drop for Rx {
    fn drop(&mut self) {
        let ch = &self.world.chans[self.chan];
        ch.rx_alive.set(false);
        ch.rx_dropping.set(true);
        drop(self.rx.take());
        ch.rx_dropping.set(false);
        if !ch.queue.borrow().is_empty() {
            violation!("after the receiver's drop, messages stay queued: {ch:?}");
        }
    }
}

/// Marks the proc of `rank` as blocked in `what` (and, for receives, its
/// channels' receivers as waiting) until dropped, also by unwinding.
struct InCall<'a> {
    world: &'a World,
    rank: usize,
    rx_chans: Vec<usize>,
}

impl<'a> InCall<'a> {
    fn enter(world: &'a World, rank: usize, what: Blocked) -> InCall<'a> {
        let rx_chans = match &what {
            Blocked::Recv { chan, .. } => vec![*chan],
            Blocked::Select { recv, .. } => recv.clone(),
            _ => Vec::new(),
        };
        for &c in &rx_chans {
            world.chans[c].rx_waiting.set(true);
        }
        world.blocked.borrow_mut()[rank] = Some(what);
        InCall {
            world,
            rank,
            rx_chans,
        }
    }
}

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        self.world.blocked.borrow_mut()[self.rank] = None;
        for &c in &self.rx_chans {
            self.world.chans[c].rx_waiting.set(false);
        }
    }
}

/// Aborts if the proc of `rec` runs although it ended or was joined.
fn check_alive(rec: &Rec) {
    if rec.done.get() || rec.joined.get() {
        violation!("proc {} runs after it ended or was joined", rec.rank);
    }
}

// ---------------------------------------------------------------------------
// Checked channel operations
// ---------------------------------------------------------------------------

/// `try_send` of a new message on `tx`, checked against the model.
fn try_send_checked(tx: &Tx, what: &str) {
    let world = &*tx.world;
    let ch = &world.chans[tx.chan];
    let msg = Msg::new(&tx.world, tx.chan, tx.id);
    let id = msg.id;
    let expect = ch.expected_send();
    let before = world.progress.get();
    let r = tx.sender().try_send(msg);
    if world.progress.get() != before {
        violation!("{what} let other procs run");
    }
    match (r, expect) {
        (Ok(()), SendOutcome::Sent) => world.commit(tx.chan, id, what),
        (Err(TrySendError::Full(m)), SendOutcome::Full)
        | (Err(TrySendError::Disconnected(m)), SendOutcome::Disconnected) => {
            world.returned(tx.chan, id, m, what)
        }
        (r, expect) => {
            violation!("{what} of message {id} gave {r:?}, the model expects {expect:?}: {ch:?}")
        }
    }
}

/// `try_recv` on `rx`, checked against the model.
fn try_recv_checked(rx: &Rx, what: &str) -> Result<(), TryRecvError> {
    let world = &*rx.world;
    let ch = &world.chans[rx.chan];
    let expect = ch.expected_recv();
    let before = world.progress.get();
    let r = rx.receiver().try_recv();
    if world.progress.get() != before {
        violation!("{what} let other procs run");
    }
    match (r, expect) {
        (Ok(m), Ok(id)) if m.id == id => {
            world.received(rx.chan, m, what);
            Ok(())
        }
        (Err(e), Err(x)) if e == x => Err(e),
        (r, expect) => violation!("{what} gave {r:?}, the model expects {expect:?}: {ch:?}"),
    }
}

// ---------------------------------------------------------------------------
// Joining
// ---------------------------------------------------------------------------

/// A child's handle.
struct Child {
    handle: JoinHandle<u64>,
    rec: Rc<Rec>,
}

/// Checks a join result against what the proc did.
fn check_result(r: Result<u64, JoinError>, rec: &Rec, when: &str) {
    match &r {
        Ok(v) if *v == rec.value.get() && rec.returned.get() => {}
        Err(JoinError::Panicked(p)) if p.is::<KnownPanic>() && rec.panicked.get() => {}
        Err(JoinError::Cancelled) if !rec.returned.get() && !rec.panicked.get() => {}
        _ => violation!(
            "{when}: proc {} joined as {r:?} (returned {} with {}, panicked {})",
            rec.rank,
            rec.returned.get(),
            rec.value.get(),
            rec.panicked.get()
        ),
    }
}

/// Joins a child from inside the proc of rank `rank`.
fn join_child(world: &World, rank: usize, c: Child) {
    let Child { handle, rec } = c;
    if handle.is_finished() != rec.done.get() {
        violation!(
            "is_finished() = {} but proc {} is {}",
            handle.is_finished(),
            rec.rank,
            if rec.done.get() { "done" } else { "not done" }
        );
    }
    let r = {
        let _call = InCall::enter(world, rank, Blocked::Join { child: rec.rank });
        handle.join()
    };
    world.step();
    if !rec.done.get() {
        violation!("join of proc {} returned before it ended", rec.rank);
    }
    if rec.joined.replace(true) {
        violation!("proc {} joined twice", rec.rank);
    }
    if matches!(r, Err(JoinError::Cancelled)) {
        violation!("join inside a running runtime gave Cancelled");
    }
    check_result(r, &rec, "join");
}

// ---------------------------------------------------------------------------
// The watchdog
// ---------------------------------------------------------------------------

/// Every proc is parked: none may wait for something the model says is
/// there already.
fn check_quiescent(world: &World) {
    let records = world.records.borrow();
    for (rank, b) in world.blocked.borrow().iter().enumerate() {
        let ready = match b {
            Some(Blocked::Send { chan }) => world.chans[*chan].send_ready(),
            Some(Blocked::Recv { chan, .. }) => world.chans[*chan].recv_ready(),
            Some(Blocked::Select { recv, send, .. }) => {
                recv.iter().any(|&c| world.chans[c].recv_ready())
                    || send.iter().any(|&c| world.chans[c].send_ready_for(rank))
            }
            Some(Blocked::Join { child }) => records[*child].done.get(),
            Some(Blocked::Sleep | Blocked::Watch) | None => false,
        };
        if ready {
            violation!(
                "lost wake-up: every proc is parked, yet proc {rank} still waits in {b:?}, \
                 which can proceed:{}",
                world.blocked_dump()
            );
        }
    }
}

/// Yields until `until` holds; whenever [`QUIET_YIELDS`] yields pass with
/// no harness code running elsewhere (every other proc is parked), checks
/// [`check_quiescent`], then naps if some proc waits on a timer, or reports
/// a deadlock if procs wait on nothing that can end.
fn watch(world: &World, until: impl Fn(&World) -> bool) {
    let start = Instant::now();
    loop {
        if until(world) {
            return;
        }
        if start.elapsed() > LIVENESS_LIMIT {
            violation!(
                "liveness: procs did not finish within {LIVENESS_LIMIT:?}:{}",
                world.blocked_dump()
            );
        }
        let before = world.progress.get();
        for _ in 0..QUIET_YIELDS {
            procrt::yield_now();
        }
        if until(world) || world.progress.get() != before {
            continue;
        }
        check_quiescent(world);
        let blocked = world.blocked.borrow();
        let timed = blocked.iter().flatten().any(Blocked::timed);
        let stuck = blocked
            .iter()
            .flatten()
            .any(|b| !b.timed() && !matches!(b, Blocked::Watch));
        drop(blocked);
        if timed {
            procrt::sleep(NAP);
        } else if stuck {
            violation!(
                "deadlock: every proc is parked, none with a timeout:{}",
                world.blocked_dump()
            );
        }
    }
}

/// The watchdog proc: [`watch`] until the root stops it.
fn watchdog(world: Rc<World>) {
    let _sentinel = Sentinel::new(&world, None, world.first_segment);
    watch(&world, |w| w.stop_watchdog.get());
    world.watchdog_alive.set(false);
}

// ---------------------------------------------------------------------------
// The interpreter
// ---------------------------------------------------------------------------

/// A channel handle a select case refers to.
#[derive(Debug, Clone, Copy)]
enum Case {
    /// The receiver of this channel.
    Recv(usize),
    /// The sender at this index of the proc's senders.
    Send(usize),
}

/// One proc's running state. Its handles drop with it (also when it
/// unwinds): senders first, then receivers, then children's handles.
struct Interp {
    world: Rc<World>,
    rec: Rc<Rec>,
    rank: usize,
    txs: Vec<Tx>,
    /// By channel.
    rxs: Vec<Option<Rx>>,
    children: Vec<Option<Child>>,
    /// Operations executed: the proc's result.
    count: u64,
}

impl Interp {
    fn new(world: &Rc<World>, rec: &Rc<Rec>, txs: Vec<Tx>, rxs: Vec<Option<Rx>>) -> Interp {
        rec.started.set(true);
        world.step();
        Interp {
            world: world.clone(),
            rec: rec.clone(),
            rank: rec.rank,
            txs,
            rxs,
            children: Vec::new(),
            count: 0,
        }
    }

    /// Runs `ops`; returns true when the root was told to end early.
    fn run(&mut self, ops: &[Op], is_root: bool) -> bool {
        ops.iter().any(|op| self.exec(op, is_root))
    }

    /// Runs one operation; returns true when the root was told to end early.
    fn exec(&mut self, op: &Op, is_root: bool) -> bool {
        check_alive(&self.rec);
        self.world.step();
        self.count += 1;
        match op {
            Op::Spawn {
                child,
                tx_mask,
                rx_mask,
            } => self.spawn(child, *tx_mask, *rx_mask),
            Op::Grow { frame, inner } => {
                if self.grow(*frame, inner, is_root) {
                    return true;
                }
            }
            Op::Plain(raw) => match *raw {
                RawOp::Spawn { .. } | RawOp::Grow(_) => unreachable!("parsed away"),
                RawOp::Send { tx, blocking } => self.send(tx, blocking),
                RawOp::Recv { rx, mode } => self.recv(rx, mode),
                RawOp::TryIter { rx } => self.try_iter(rx),
                RawOp::Select {
                    recv_mask,
                    send_mask,
                    mode,
                } => self.select(recv_mask, send_mask, mode),
                RawOp::CloneSender(i) => {
                    if let Some(i) = pick(self.txs.len(), i) {
                        if self.txs.len() < MAX_SENDERS {
                            let tx = self.txs[i].clone_for(self.rank);
                            self.txs.push(tx);
                        }
                    }
                }
                RawOp::DropSender(i) => {
                    if let Some(i) = pick(self.txs.len(), i) {
                        drop(self.txs.remove(i));
                    }
                }
                RawOp::DropReceiver(i) => {
                    if let Some(c) = self.held_rx(i) {
                        drop(self.rxs[c].take());
                    }
                }
                RawOp::Yield => {
                    procrt::yield_now();
                    self.world.step();
                }
                RawOp::Sleep(w) => self.sleep(w),
                RawOp::Join(i) => {
                    if let Some(c) =
                        pick(self.children.len(), i).and_then(|i| self.children[i].take())
                    {
                        join_child(&self.world, self.rank, c);
                    }
                }
                RawOp::Detach(i) => {
                    if let Some(i) = pick(self.children.len(), i) {
                        drop(self.children[i].take());
                    }
                }
                RawOp::Panic => raise_known_panic(&self.rec),
                RawOp::DropRuntimeEarly => {
                    if is_root {
                        return true;
                    }
                }
            },
        }
        check_alive(&self.rec);
        false
    }

    /// The channel of the receiver at index `i` among those held.
    fn held_rx(&self, i: u8) -> Option<usize> {
        let held: Vec<usize> = (0..self.rxs.len())
            .filter(|&c| self.rxs[c].is_some())
            .collect();
        pick(held.len(), i).map(|k| held[k])
    }

    fn rx(&self, chan: usize) -> &Rx {
        self.rxs[chan].as_ref().expect("held receiver")
    }

    fn spawn(&mut self, program: &Rc<Program>, tx_mask: u8, rx_mask: u8) {
        let world = self.world.clone();
        let rank = world.records.borrow().len();
        let rec = Rc::new(Rec {
            rank,
            ..Rec::default()
        });
        world.records.borrow_mut().push(rec.clone());
        world.blocked.borrow_mut().push(None);
        let n = world.chans.len();
        let mut txs = Vec::new();
        for c in (0..n).filter(|c| tx_mask & 1 << c != 0) {
            if let Some(tx) = self.txs.iter().find(|t| t.chan == c) {
                txs.push(tx.clone_for(rank));
            }
        }
        let mut rxs: Vec<Option<Rx>> = (0..n).map(|_| None).collect();
        for c in (0..n).filter(|c| rx_mask & 1 << c != 0) {
            if let Some(rx) = self.rxs[c].take() {
                world.chans[c].rx_rank.set(rank);
                rxs[c] = Some(rx);
            }
        }
        let (w, r, p) = (world.clone(), rec.clone(), program.clone());
        unpoison_dead_segments(&world);
        match procrt::spawn(move || child_main(w, r, p, txs, rxs)) {
            Ok(handle) => self.children.push(Some(Child { handle, rec })),
            Err(e) => violation!("spawn failed: {e}"),
        }
        world.step();
    }

    fn send(&mut self, i: u8, blocking: bool) {
        let Some(i) = pick(self.txs.len(), i) else {
            return;
        };
        let world = self.world.clone();
        let tx = &self.txs[i];
        let ch = &world.chans[tx.chan];
        if !blocking || !ch.send_may_block(self.rank) {
            try_send_checked(tx, "try_send");
            return;
        }
        let msg = Msg::new(&world, tx.chan, tx.id);
        let id = msg.id;
        let expect = ch.send_ready().then(|| ch.expected_send());
        let before = world.progress.get();
        let r = {
            let _call = InCall::enter(&world, self.rank, Blocked::Send { chan: tx.chan });
            tx.sender().send(msg)
        };
        let switched = world.progress.get() != before;
        world.step();
        if let Some(expect) = expect {
            let got = match r {
                Ok(()) => SendOutcome::Sent,
                Err(_) => SendOutcome::Disconnected,
            };
            if switched || got != expect {
                violation!(
                    "send of message {id} that could proceed at once gave {got:?} (expected \
                     {expect:?}), other procs ran meanwhile: {switched}"
                );
            }
        }
        match r {
            Ok(()) => world.commit(tx.chan, id, "send"),
            Err(SendError(m)) => {
                if ch.rx_alive.get() {
                    violation!("send of message {id} failed with the receiver alive: {ch:?}");
                }
                world.returned(tx.chan, id, m, "send");
            }
        }
    }

    fn recv(&mut self, i: u8, mode: RecvMode) {
        let Some(chan) = self.held_rx(i) else { return };
        let world = self.world.clone();
        let ch = &world.chans[chan];
        match mode {
            RecvMode::Try => {
                let _ = try_recv_checked(self.rx(chan), "try_recv");
            }
            RecvMode::Blocking if ch.recv_may_block(self.rank) => {
                self.recv_blocking(chan);
            }
            RecvMode::Blocking => self.recv_timeout(chan, Wait::Ms1),
            RecvMode::Timeout(w) => self.recv_timeout(chan, w),
        }
    }

    /// A checked blocking `recv` (the caller made sure it cannot deadlock);
    /// returns whether it got a message.
    fn recv_blocking(&self, chan: usize) -> bool {
        let world = &*self.world;
        let ch = &world.chans[chan];
        let expect = ch.recv_ready().then(|| ch.expected_recv());
        let before = world.progress.get();
        let r = {
            let _call = InCall::enter(world, self.rank, Blocked::Recv { chan, timed: false });
            self.rx(chan).receiver().recv()
        };
        let switched = world.progress.get() != before;
        world.step();
        if let Some(expect) = expect {
            let same = match (&r, expect) {
                (Ok(m), Ok(id)) => m.id == id,
                (Err(RecvError), Err(TryRecvError::Disconnected)) => true,
                _ => false,
            };
            if switched || !same {
                violation!(
                    "recv that could proceed at once gave {r:?} (expected {expect:?}), other \
                     procs ran meanwhile: {switched}"
                );
            }
        }
        match r {
            Ok(m) => {
                world.received(chan, m, "recv");
                true
            }
            Err(RecvError) => {
                if ch.expected_recv() != Err(TryRecvError::Disconnected) {
                    violation!("recv gave RecvError, but {ch:?}");
                }
                false
            }
        }
    }

    fn recv_timeout(&self, chan: usize, w: Wait) {
        let world = &*self.world;
        let ch = &world.chans[chan];
        let d = world.budget(w.duration());
        let expect = (ch.recv_ready() || d.is_zero()).then(|| ch.expected_recv());
        let start = Instant::now();
        let before = world.progress.get();
        let r = {
            let _call = InCall::enter(world, self.rank, Blocked::Recv { chan, timed: true });
            self.rx(chan).receiver().recv_timeout(d)
        };
        let switched = world.progress.get() != before;
        world.step();
        if let Some(expect) = expect {
            let same = match (&r, expect) {
                (Ok(m), Ok(id)) => m.id == id,
                (Err(RecvTimeoutError::Disconnected), Err(TryRecvError::Disconnected))
                | (Err(RecvTimeoutError::Timeout), Err(TryRecvError::Empty)) => true,
                _ => false,
            };
            if switched || !same {
                violation!(
                    "recv_timeout({d:?}) that could end at once gave {r:?} (expected \
                     {expect:?}), other procs ran meanwhile: {switched}"
                );
            }
        }
        match r {
            Ok(m) => world.received(chan, m, "recv_timeout"),
            Err(RecvTimeoutError::Disconnected) => {
                if ch.expected_recv() != Err(TryRecvError::Disconnected) {
                    violation!("recv_timeout gave Disconnected, but {ch:?}");
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if ch.recv_ready() || start.elapsed() < d {
                    violation!(
                        "recv_timeout({d:?}) timed out after {:?}: {ch:?}",
                        start.elapsed()
                    );
                }
            }
        }
    }

    fn try_iter(&self, i: u8) {
        let Some(chan) = self.held_rx(i) else { return };
        let world = &*self.world;
        let before = world.progress.get();
        for m in self.rx(chan).receiver().try_iter() {
            world.received(chan, m, "try_iter");
        }
        if world.progress.get() != before {
            violation!("try_iter let other procs run");
        }
        if !world.chans[chan].queue.borrow().is_empty() {
            violation!(
                "try_iter stopped with messages queued: {:?}",
                world.chans[chan]
            );
        }
    }

    fn case_ready(&self, case: Case) -> bool {
        match case {
            Case::Recv(c) => self.world.chans[c].recv_ready(),
            Case::Send(i) => self.world.chans[self.txs[i].chan].send_ready(),
        }
    }

    fn select(&mut self, recv_mask: u8, send_mask: u8, mode: SelectMode) {
        let world = self.world.clone();
        let n = world.chans.len();
        let recvs = (0..n)
            .filter(|&c| recv_mask & 1 << c != 0 && self.rxs[c].is_some())
            .map(Case::Recv);
        let sends = (0..self.txs.len().min(8))
            .filter(|&i| send_mask & 1 << i != 0)
            .map(Case::Send);
        let cases: Vec<Case> = if recv_mask & 0x80 != 0 {
            sends.chain(recvs).collect()
        } else {
            recvs.chain(sends).collect()
        };
        let any_ready = cases.iter().any(|&c| self.case_ready(c));
        let may_block = any_ready
            || cases.iter().any(|&c| match c {
                Case::Recv(ch) => world.chans[ch].recv_may_block(self.rank),
                Case::Send(i) => world.chans[self.txs[i].chan].send_may_block(self.rank),
            });
        // What is called: `ready` only when it cannot deadlock.
        let (mode, d) = match mode {
            SelectMode::Ready if may_block => (SelectMode::Ready, Duration::ZERO),
            SelectMode::Ready if cases.is_empty() => (SelectMode::TryReady, Duration::ZERO),
            SelectMode::Ready => (
                SelectMode::Timeout(Wait::Ms1),
                world.budget(Wait::Ms1.duration()),
            ),
            SelectMode::TryReady => (SelectMode::TryReady, Duration::ZERO),
            SelectMode::Timeout(w) => (SelectMode::Timeout(w), world.budget(w.duration())),
        };
        let at_once =
            any_ready || mode == SelectMode::TryReady || (d.is_zero() && mode != SelectMode::Ready);
        let blocked = Blocked::Select {
            recv: cases
                .iter()
                .filter_map(|&c| match c {
                    Case::Recv(ch) => Some(ch),
                    Case::Send(_) => None,
                })
                .collect(),
            send: cases
                .iter()
                .filter_map(|&c| match c {
                    Case::Send(i) => Some(self.txs[i].chan),
                    Case::Recv(_) => None,
                })
                .collect(),
            timed: mode != SelectMode::Ready,
        };
        let start = Instant::now();
        let before = world.progress.get();
        let picked = {
            let mut sel = Select::new();
            for (k, &case) in cases.iter().enumerate() {
                let index = match case {
                    Case::Recv(c) => sel.recv(self.rx(c).receiver()),
                    Case::Send(i) => sel.send(self.txs[i].sender()),
                };
                if index != k {
                    violation!("select case {k} got index {index}");
                }
            }
            let _call = InCall::enter(&world, self.rank, blocked);
            match mode {
                SelectMode::Ready => Some(sel.ready()),
                SelectMode::TryReady => sel.try_ready(),
                SelectMode::Timeout(_) => sel.ready_timeout(d).ok(),
            }
        };
        let switched = world.progress.get() != before;
        world.step();
        if at_once && switched {
            violation!("select ({mode:?}, {d:?}) that could end at once let other procs run");
        }
        match picked {
            Some(k) => {
                let Some(&case) = cases.get(k) else {
                    violation!("select gave case {k} of {}", cases.len());
                };
                if !self.case_ready(case) {
                    violation!(
                        "select ({mode:?}) gave case {k} ({case:?}), which would block:{}",
                        world.blocked_dump()
                    );
                }
                match case {
                    Case::Recv(c) => {
                        let _ = try_recv_checked(self.rx(c), "try_recv of a ready select case");
                    }
                    Case::Send(i) => {
                        try_send_checked(&self.txs[i], "try_send of a ready select case")
                    }
                }
            }
            None => {
                if let Some(k) = cases.iter().position(|&c| self.case_ready(c)) {
                    violation!(
                        "select ({mode:?}) found no case ready, but case {k} ({:?}) is:{}",
                        cases[k],
                        world.blocked_dump()
                    );
                }
                if !cases.is_empty() && start.elapsed() < d {
                    violation!("ready_timeout({d:?}) gave up after {:?}", start.elapsed());
                }
            }
        }
    }

    fn sleep(&self, w: Wait) {
        let world = &*self.world;
        let d = world.budget(w.duration().min(Duration::from_millis(1)));
        let start = Instant::now();
        {
            let _call = InCall::enter(world, self.rank, Blocked::Sleep);
            procrt::sleep(d);
        }
        world.step();
        if start.elapsed() < d {
            violation!("sleep({d:?}) returned after {:?}", start.elapsed());
        }
    }

    /// Runs `inner` inside `stack::grow`, below a checked frame.
    fn grow(&mut self, frame: Frame, inner: &Op, is_root: bool) -> bool {
        // A linked segment may be a dead proc's: clear it first (`asan`).
        unpoison_dead_segments(&self.world);
        let bytes = frame.bytes() + GROW_SLACK;
        let before = procrt::stack::usage().expect("stack::usage inside a proc");
        let seed = self.count;
        procrt::stack::grow(bytes, || {
            let inside = procrt::stack::usage().expect("stack::usage inside a proc");
            let linked = inside.segments != before.segments;
            if linked {
                let size = inside.reserved_bytes.wrapping_sub(before.reserved_bytes);
                if inside.segments != before.segments + 1 || !size.is_power_of_two() || size < bytes
                {
                    violation!(
                        "grow({bytes}) went from {before:?} to {inside:?}: not one new \
                         power-of-two segment of at least {bytes} bytes"
                    );
                }
                let seg = (stack_pointer() & !(size - 1), size);
                self.rec.chain.borrow_mut().push(seg);
                self.world.segments.borrow_mut().push(seg);
            }
            let end = match frame {
                Frame::B256 => framed::<256, _>(seed, || self.exec(inner, is_root)),
                Frame::B1024 => framed::<1024, _>(seed, || self.exec(inner, is_root)),
                Frame::B4096 => framed::<4096, _>(seed, || self.exec(inner, is_root)),
            };
            if linked {
                self.rec.chain.borrow_mut().pop();
            }
            end
        })
    }

    /// The proc's end: drop its senders, drain (if `drain` and it cannot
    /// deadlock) and drop its receivers, join its children.
    fn finish(&mut self, drain: bool) {
        self.txs.clear();
        for c in 0..self.rxs.len() {
            if self.rxs[c].is_none() {
                continue;
            }
            // Checked before every recv: a queued message lets one recv
            // proceed, not the next.
            while drain && self.world.chans[c].recv_may_block(self.rank) && self.recv_blocking(c) {}
            self.rxs[c] = None;
        }
        for c in std::mem::take(&mut self.children).into_iter().flatten() {
            join_child(&self.world, self.rank, c);
        }
    }
}

/// Index `i` modulo `len`, if there is anything to pick.
fn pick(len: usize, i: u8) -> Option<usize> {
    (len > 0).then(|| i as usize % len)
}

/// Runs `f` below an `N`-byte buffer holding a pattern, and verifies the
/// pattern when `f` returns.
#[inline(never)]
fn framed<const N: usize, R>(seed: u64, f: impl FnOnce() -> R) -> R {
    let pattern = |i: usize| (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (i % 57)) as u8 ^ i as u8;
    let mut buf = [0u8; N];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(i);
    }
    std::hint::black_box(&mut buf);
    let r = f();
    std::hint::black_box(&mut buf);
    if let Some(i) = (0..N).find(|&i| buf[i] != pattern(i)) {
        violation!("a {N}-byte frame below stack::grow was corrupted at byte {i}");
    }
    r
}

/// Marks the proc as panicking and raises `KnownPanic`, telling the panic
/// hook which segments to clear (see [`asan`]).
fn raise_known_panic(rec: &Rec) -> ! {
    rec.panicked.set(true);
    PANICKING_CHAIN.with(|c| c.borrow_mut().clone_from(&rec.chain.borrow()));
    std::panic::panic_any(KnownPanic)
}

/// The body of every spawned proc.
fn child_main(
    world: Rc<World>,
    rec: Rc<Rec>,
    program: Rc<Program>,
    txs: Vec<Tx>,
    rxs: Vec<Option<Rx>>,
) -> u64 {
    let _sentinel = Sentinel::new(&world, Some(&rec), world.first_segment);
    let mut ip = Interp::new(&world, &rec, txs, rxs);
    ip.run(&program.ops, false);
    ip.finish(program.drain);
    let value = ip.count;
    drop(ip);
    rec.value.set(value);
    rec.returned.set(true);
    value
}

/// What the root hands back to the harness.
struct RootOut {
    ended_early: bool,
    /// Children's handles still held when the root ended early.
    children: Vec<Option<Child>>,
    /// The root's channel handles, with `keep_handles`.
    handles: Option<(Vec<Tx>, Vec<Option<Rx>>)>,
}

/// The body of the root proc: makes the channels and the watchdog, runs its
/// program, and (unless it ends early) waits for every proc and the
/// watchdog to end.
fn root_main(
    world: Rc<World>,
    rec: Rc<Rec>,
    program: Rc<Program>,
    kinds: Vec<ChanKind>,
    config: Config,
) -> RootOut {
    let _sentinel = Sentinel::new(&world, Some(&rec), world.root_segment);
    world.watchdog_alive.set(true);
    unpoison_dead_segments(&world);
    let w = world.clone();
    match procrt::Builder::new()
        .name("watchdog")
        .spawn(move || watchdog(w))
    {
        Ok(h) => drop(h), // detached; the root waits for `watchdog_alive`
        Err(e) => violation!("cannot spawn the watchdog: {e}"),
    }
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for (c, kind) in kinds.iter().enumerate() {
        let (tx, rx) = match kind.bound() {
            None => channel(),
            Some(n) => sync_channel(n),
        };
        txs.push(Tx::new(&world, c, tx, 0));
        rxs.push(Some(Rx {
            rx: Some(rx),
            world: world.clone(),
            chan: c,
        }));
    }
    let mut ip = Interp::new(&world, &rec, txs, rxs);
    if ip.run(&program.ops, true) {
        world.stop_watchdog.set(true);
        let children = std::mem::take(&mut ip.children);
        let handles = config
            .keep_handles
            .then(|| (std::mem::take(&mut ip.txs), std::mem::take(&mut ip.rxs)));
        drop(ip);
        return RootOut {
            ended_early: true,
            children,
            handles,
        };
    }
    ip.finish(program.drain);
    drop(ip);
    {
        let _call = InCall::enter(&world, 0, Blocked::Watch);
        watch(&world, World::children_done);
    }
    world.stop_watchdog.set(true);
    watch(&world, |w| !w.watchdog_alive.get());
    rec.returned.set(true);
    RootOut {
        ended_early: false,
        children: Vec::new(),
        handles: None,
    }
}

// ---------------------------------------------------------------------------
// One input
// ---------------------------------------------------------------------------

/// After an early end: the runtime's counters against the harness's.
fn check_counts(rt: &Runtime, world: &World, when: &str) {
    let live = rt.live_procs();
    let unfinished = world.unfinished() + world.watchdog_alive.get() as usize;
    let segments = rt.pool_stats().live_segments;
    // Each unfinished proc holds its chain, maybe one segment linked by a
    // runtime entry point, and at most one spare.
    let chains: usize = world
        .records
        .borrow()
        .iter()
        .filter(|r| r.started.get() && !r.done.get())
        .map(|r| r.chain.borrow().len())
        .sum::<usize>()
        + world.watchdog_alive.get() as usize;
    if live != unfinished || segments < live || segments > chains + 2 * live {
        violation!(
            "{when}: live_procs() = {live}, live_segments = {segments}, but {unfinished} procs \
             are unfinished, holding {chains} known segments"
        );
    }
}

/// After a full run: every proc ended, every message and channel is gone.
fn check_all_gone(rt: &Runtime, world: &World, when: &str) {
    if rt.live_procs() != 0 || rt.pool_stats().live_segments != 0 || world.unfinished() != 0 {
        violation!(
            "{when}: live_procs() = {}, live_segments = {}, unfinished = {}",
            rt.live_procs(),
            rt.pool_stats().live_segments,
            world.unfinished()
        );
    }
    check_messages_dropped(world, when);
    for ch in &world.chans {
        if ch.rx_alive.get() || !ch.senders.borrow().is_empty() {
            violation!("{when}: a handle outlives every proc: {ch:?}");
        }
    }
}

fn check_messages_dropped(world: &World, when: &str) {
    let msgs = world.msgs.borrow();
    if let Some(id) = msgs.iter().position(|m| m.state != MsgState::Dropped) {
        violation!(
            "{when}: message {id} of {} is {:?}, never dropped",
            msgs.len(),
            msgs[id].state
        );
    }
}

fn run(input: Input) {
    let _hang_guard = hang_guard::Input::start();
    let Input { config, chans, ops } = input;
    let ops = &ops[..ops.len().min(MAX_RAW_OPS)];
    let mut kinds: Vec<ChanKind> = chans.into_iter().take(MAX_CHANS).collect();
    if kinds.is_empty() {
        kinds.push(ChanKind::Unbounded);
    }
    let first = config.first_segment.bytes();
    let root_segment = if config.big_root { 1 << 20 } else { first };
    let root_program = {
        let mut parser = Parser {
            raw: ops.iter(),
            spawns: 0,
        };
        Rc::new(parser.program(None, 0, config.root_drains))
    };

    let rt = Runtime::builder()
        .reservation(RESERVATION)
        .first_segment_size(first)
        .root_stack_size(root_segment)
        .cache_limit(if config.no_cache { 0 } else { 1 << 20 })
        .build()
        .unwrap_or_else(|e| violation!("cannot build the runtime: {e}"));

    let world = Rc::new(World {
        chans: (0..kinds.len())
            .map(|c| ChanModel::new(c, kinds[c].bound()))
            .collect(),
        msgs: RefCell::new(Vec::new()),
        records: RefCell::new(Vec::new()),
        blocked: RefCell::new(vec![None]),
        next_sender: Cell::new(0),
        progress: Cell::new(0),
        budget: Cell::new(WAIT_BUDGET),
        stop_watchdog: Cell::new(false),
        watchdog_alive: Cell::new(false),
        cancelling: Cell::new(false),
        first_segment: first,
        root_segment,
        segments: RefCell::new(Vec::new()),
        dead_segments: RefCell::new(Vec::new()),
    });
    let root_rec = Rc::new(Rec::default());
    world.records.borrow_mut().push(root_rec.clone());

    let outcome = {
        let (w, r, p) = (world.clone(), root_rec.clone(), root_program.clone());
        catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(move || root_main(w, r, p, kinds, config))
        }))
    };
    // The root may have ended any way: the watchdog is not needed any more.
    world.stop_watchdog.set(true);
    if !root_rec.done.get() {
        violation!("block_on returned before the root proc ended");
    }
    let out = match outcome {
        Ok(out) => out,
        Err(payload) => {
            if !payload.is::<KnownPanic>() || !root_rec.panicked.get() {
                violation!("block_on panicked unexpectedly");
            }
            RootOut {
                ended_early: true,
                children: Vec::new(),
                handles: None,
            }
        }
    };

    if !out.ended_early {
        check_all_gone(&rt, &world, "after block_on");
    } else {
        check_counts(&rt, &world, "after an early end");
        if config.after_early_end == AfterEarlyEnd::Drain {
            unpoison_dead_segments(&world);
            let w = world.clone();
            rt.block_on(move || {
                let _sentinel = Sentinel::new(&w, None, w.root_segment);
                watch(&w, |w| w.unfinished() == 0 && !w.watchdog_alive.get());
            });
            if rt.live_procs() != 0 || rt.pool_stats().live_segments != 0 {
                violation!(
                    "after a draining block_on: live_procs() = {}, live_segments = {}",
                    rt.live_procs(),
                    rt.pool_stats().live_segments
                );
            }
        }
    }

    // The drop unwinds the procs still alive (see `asan`).
    for &(base, size) in world.segments.borrow().iter() {
        asan::unpoison(base, size);
    }
    world.cancelling.set(true);
    drop(rt);
    world.cancelling.set(false);

    // Every proc ended: returned, panicked, or was cancelled.
    for rec in world.records.borrow().iter() {
        if rec.started.get() && !rec.done.get() {
            violation!(
                "proc {} was neither finished nor unwound by the drop",
                rec.rank
            );
        }
    }
    if world.blocked.borrow().iter().any(Option::is_some) {
        violation!(
            "a proc is still marked blocked after the drop:{}",
            world.blocked_dump()
        );
    }
    // Handles outlive the runtime: join them outside it.
    for c in out.children.into_iter().flatten() {
        if !c.handle.is_finished() {
            violation!("proc {} not finished after the runtime's drop", c.rec.rank);
        }
        let r = c.handle.join();
        c.rec.joined.set(true);
        check_result(r, &c.rec, "join after the runtime's drop");
    }
    // Channel handles outlive it too: they work without a runtime (a wake-up
    // of a cancelled proc is a no-op).
    if let Some((txs, rxs)) = out.handles {
        for rx in rxs.iter().flatten() {
            while try_recv_checked(rx, "try_recv after the runtime's drop").is_ok() {}
        }
        for tx in &txs {
            try_send_checked(tx, "try_send after the runtime's drop");
        }
        drop(txs);
        drop(rxs);
    }
    check_messages_dropped(&world, "after the runtime's drop");
    drop(root_program);
    // The next input's runtime may map its stacks at the same addresses.
    for &(base, size) in world.segments.borrow().iter() {
        asan::unpoison(base, size);
    }
    if Rc::strong_count(&world) != 1 {
        violation!(
            "{} references to the shared state outlive the runtime (a closure, handle or \
             message leaked)",
            Rc::strong_count(&world) - 1
        );
    }
}

fuzz_target!(init: install_panic_filter(), |input: Input| {
    run(input);
});

/// Catches an input that never ends. A proc that loops without ever
/// switching (a `park` that keeps returning at once) stops every other proc,
/// the watchdog included, so only another OS thread can see it: this one
/// aborts, with a message, when an input has run for [`HANG_LIMIT`]
/// (libFuzzer then saves the input as a crash). libFuzzer's own `-timeout`
/// would do too, but its default is 20 minutes, and CI does not pass one.
mod hang_guard {
    use super::HANG_LIMIT;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// Milliseconds since [`epoch`] at which the running input started,
    /// plus one; 0 while no input runs.
    static STARTED: AtomicU64 = AtomicU64::new(0);

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    fn now_ms() -> u64 {
        epoch().elapsed().as_millis() as u64 + 1
    }

    /// Marks one input as running until dropped.
    pub(crate) struct Input(());

    impl Input {
        pub(crate) fn start() -> Input {
            static THREAD: OnceLock<()> = OnceLock::new();
            THREAD.get_or_init(|| {
                epoch();
                std::thread::spawn(watch);
            });
            STARTED.store(now_ms(), Ordering::SeqCst);
            Input(())
        }
    }

    impl Drop for Input {
        fn drop(&mut self) {
            STARTED.store(0, Ordering::SeqCst);
        }
    }

    fn watch() {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let started = STARTED.load(Ordering::SeqCst);
            if started != 0 && now_ms().saturating_sub(started) > HANG_LIMIT.as_millis() as u64 {
                eprintln!(
                    "chan_ops: invariant violated: the input still runs after {HANG_LIMIT:?}: a \
                     proc spins without switching (a park that keeps returning at once?), or \
                     the runtime hangs"
                );
                std::process::abort();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Stacks and AddressSanitizer
// ---------------------------------------------------------------------------

/// The outermost local of every proc the harness runs: records the proc's
/// segment, and as the proc ends (by return, panic or cancellation) marks
/// its record done and clears ASan's shadow of the segment.
struct Sentinel {
    world: Rc<World>,
    rec: Option<Rc<Rec>>,
    /// `(base, size)` of the proc's segment.
    segment: (usize, usize),
}

impl Sentinel {
    fn new(world: &Rc<World>, rec: Option<&Rc<Rec>>, segment: usize) -> Self {
        let base = stack_pointer() & !(segment - 1);
        world.segments.borrow_mut().push((base, segment));
        if let Some(rec) = rec {
            *rec.chain.borrow_mut() = vec![(base, segment)];
        }
        Sentinel {
            world: world.clone(),
            rec: rec.cloned(),
            segment: (base, segment),
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(rec) = &self.rec {
            check_alive(rec);
            rec.done.set(true);
        }
        let (base, size) = self.segment;
        asan::unpoison(base, size);
        // The proc's last frames (proc_main's tail, exit_current) still run
        // after this: clear again before the segment can be reused.
        self.world.dead_segments.borrow_mut().push(self.segment);
    }
}

/// Clears ASan's shadow of the segments of procs that ended since the last
/// call. Called before anything that may reuse them (spawn, grow, block_on).
fn unpoison_dead_segments(world: &World) {
    for (base, size) in world.dead_segments.borrow_mut().drain(..) {
        asan::unpoison(base, size);
    }
}
