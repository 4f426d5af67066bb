//! `sched_ops`: random programs of procs, run on a fresh runtime per input.
//!
//! The input decodes (with `arbitrary`) into a runtime configuration and a
//! flat list of operations, which are parsed into a tree of *programs*: the
//! root's, and for every `Spawn` the child's (the next `body_len` operations
//! at that level). A small interpreter runs each program in its proc. Every
//! program is finite and every proc that parks is eventually woken (see
//! "Parking" below), so an input runs to completion in milliseconds, or ends
//! early on purpose (`DropRuntimeEarly`, or a `Panic` in the root) to
//! exercise cancellation.
//!
//! # Invariants checked
//!
//! A violation prints `sched_ops: invariant violated: ...` and aborts, which
//! libFuzzer reports as a crash. Panics of procs are expected: the runtime
//! catches them, and a panic hook keeps the known payload ([`KnownPanic`])
//! quiet; any *other* panic reaches libfuzzer-sys's hook, which aborts.
//!
//! 1. A joined proc's result is exactly what its program computes: `Ok` with
//!    the checksum of the operations it executed, or `JoinError::Panicked`
//!    with the `KnownPanic` payload iff it executed `Panic`; after a drop of
//!    the runtime, `JoinError::Cancelled` only for procs that neither
//!    returned nor panicked.
//! 2. `block_on` returns the root's checksum, or resumes its `KnownPanic`.
//! 3. Every counted value (guards held by a proc, a token captured by each
//!    child's closure) is dropped exactly once, with its canary intact, by
//!    the time the runtime is dropped; afterwards nothing the harness handed
//!    to the runtime still holds the shared `World`.
//! 4. No proc runs after it ended or was joined; `join` returns only once
//!    the proc ended; `JoinHandle::is_finished` agrees with the harness's
//!    own record; `JoinHandle::id` matches `current().id()` inside the proc;
//!    ids are unique; a named proc sees its name.
//! 5. A proc's stack data survives while it is switched out: `Recurse`
//!    writes a pattern into a chain of frames, blocks (or panics) at the
//!    bottom, and verifies every frame on the way back up. With `grow`, each
//!    frame calls the next through `procrt::stack::grow`, so the chain spans
//!    several linked segments.
//! 6. A proc starts near the top of a segment at least as large as it asked
//!    for (its stack pointer, measured against a segment-aligned top).
//!    `stack::grow(n, f)` runs `f` with about `n` bytes of stack below it;
//!    when it links a segment, that segment is a power of two holding `n`,
//!    and `stack::usage().segments` always equals the harness's own count
//!    of the proc's linked segments (before, inside and after a `grow`).
//!    `stack::remaining_stack()` matches the segment the harness knows the
//!    proc runs on: before every operation, inside every `grow`, and after
//!    every switch at the bottom of a `Recurse` (the switch keeps the TCB's
//!    stack-limit slot per context).
//! 7. After `block_on`, before the drop: if every proc ended,
//!    `live_procs() == 0` and `pool_stats().live_segments == 0`; otherwise
//!    `live_procs()` equals the procs the harness knows to be unfinished
//!    (plus a janitor told to stop that has not run since) and
//!    `live_segments` lies between the segments their chains hold and that
//!    plus one spare each. A second `block_on` that wakes everything
//!    finishes every leftover proc. `trim_stacks` empties the segment cache
//!    and leaves live segments alone.
//! 8. The park token: a proc that unparks itself and then parks returns
//!    from `park` at once, without letting another proc run.
//! 9. Liveness: the harness's final wait for all procs converges within a
//!    bound (a scheduler that starves a runnable proc fails it).
//!
//! # Parking
//!
//! A `Park` registers the proc's [`Unparker`] in `World::parked` and parks
//! in a loop until the entry is consumed (by `Unpark`/`UnparkAll` of any
//! proc), so spurious wakeups (from stashed unparkers) are harmless. To
//! rule out deadlocks a *janitor* proc exists while anything is parked: it
//! yields in a loop, and when a whole round passes with no operation
//! executed by anyone it wakes the oldest parked proc. The root stops the
//! janitor only at its end, after which it wakes every parked proc itself
//! (or, ending early, leaves them parked for the runtime's drop to cancel;
//! the root's end returns straight to `block_on`, so runnable procs are left
//! too).
//!
//! # AddressSanitizer and proc stacks
//!
//! procrt does not tell ASan about its stacks (no
//! `__sanitizer_start_switch_fiber`), so ASan's shadow of a proc stack
//! keeps the redzones of frames that did not return normally: frames a
//! panic unwound (at a throw ASan clears the stack above the thrower, but
//! refuses on a stack it does not know: "ignoring requested
//! __asan_handle_no_return"), and `proc_main`/`exit_current`, which end by
//! switching away. Code that runs later at those addresses (a drop during
//! unwinding, the next proc on a reused segment) then writes through
//! stack slots ASan never set up and gets a bogus stack-use-after-scope.
//! The harness does ASan's clean-up itself (module [`asan`]), clearing the
//! shadow of a whole segment (which only forgets redzones):
//! - when a proc panics, in the panic hook, before unwinding starts;
//! - when a proc ends (its outermost local), and again before anything can
//!   reuse a dead proc's segment (a spawn, a `block_on`, the next input);
//! - before the runtime's drop, for every segment (cancellation unwinds
//!   the procs still alive).
//!
//! Without these the target reports false positives within seconds. If a
//! report still looks like stale stack shadow, rebuild with
//! `RUSTFLAGS="-Cllvm-args=-asan-stack=0"` (heap checks stay on).

#![no_main]
#![feature(cfg_sanitize)]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use procrt::{JoinError, JoinHandle, ProcId, Runtime, Unparker};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

mod common;
use common::{asan, install_panic_filter, stack_pointer, KnownPanic, PANICKING_CHAIN};

// ---------------------------------------------------------------------------
// Limits: keep every input to a few milliseconds.
// ---------------------------------------------------------------------------

/// Raw operations read from one input; the rest is ignored.
const MAX_RAW_OPS: usize = 384;
/// Spawns in one input's program tree (the janitor is not counted).
const MAX_SPAWNS: usize = 40;
/// Nesting of spawns below the root.
const MAX_DEPTH: usize = 4;
/// Top-level operations of one child's program.
const MAX_BODY: usize = 24;
/// Deepest `Recurse` chain within one segment.
const MAX_RECURSE: u32 = 15;
/// Deepest `Recurse` chain through `stack::grow`.
const MAX_GROW_RECURSE: u32 = 32;
/// Stack each `grow` asks for beyond its frame's buffer: room for the
/// frame's own overhead and, at the bottom, for the runtime's entry points
/// (which make sure of 2 KiB) under ASan.
const GROW_SLACK: usize = 6 * 1024;
/// Stack reservation of each runtime: room for every proc parked at the
/// bottom of a grown chain at once.
const RESERVATION: usize = 256 << 20;
/// Unparkers kept in `World::stash`.
const MAX_STASH: usize = 32;
/// Rounds the final wait for all procs may take.
const DRAIN_ROUNDS: usize = 100_000;
/// Most a proc's stack may hold when its program starts (proc_main,
/// catch_unwind and the closure sit above it).
const ENTRY_STACK_MAX: usize = 8 * 1024;

// ---------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------

/// One fuzz input.
#[derive(Arbitrary, Debug)]
struct Input {
    config: Config,
    ops: Vec<RawOp>,
}

/// How the runtime is built and what happens after an early end.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Config {
    /// The runtime's first segment size (default children's).
    first_segment: SegSize,
    /// The root proc's first segment.
    root_stack: RootStack,
    /// A zero segment cache: every ended proc's segment goes back to the
    /// buddy heap (unprotect, madvise, dealloc) instead of the cache.
    no_cache: bool,
    /// Build the runtime without guard pages.
    unguarded: bool,
    /// After the root ends early: drop the runtime at once (cancelling the
    /// rest), or first finish the rest in a second `block_on`.
    after_early_end: AfterEarlyEnd,
    /// Call `Runtime::trim_stacks` after the first `block_on`.
    trim: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum SegSize {
    K32,
    K64,
    K128,
}

impl SegSize {
    fn bytes(self) -> usize {
        match self {
            SegSize::K32 => 32 << 10,
            SegSize::K64 => 64 << 10,
            SegSize::K128 => 128 << 10,
        }
    }
}

/// `RuntimeBuilder::root_stack_size`.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum RootStack {
    /// The first segment size.
    First,
    /// 1 MiB.
    Big,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum AfterEarlyEnd {
    Drop,
    Drain,
}

/// First segment of a spawned proc.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum SpawnStack {
    /// The runtime's default (`spawn`).
    Default,
    /// `Builder::stack_size`.
    Sized(SegSize),
}

/// Size of the buffer in each `Recurse` frame.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    B128,
    B512,
    B2048,
}

impl Frame {
    fn bytes(self) -> usize {
        match self {
            Frame::B128 => 128,
            Frame::B512 => 512,
            Frame::B2048 => 2048,
        }
    }
}

/// What the deepest `Recurse` frame does while the chain is on the stack.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Bottom {
    Nothing,
    Yield,
    Park,
    /// `panic_any(KnownPanic)`: unwinds the whole chain (across segments).
    Panic,
}

/// An operation as decoded; `Spawn` takes the following `body_len`
/// operations (at its level) as the child's program.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum RawOp {
    /// Spawn a child (it starts at once) and keep its handle.
    Spawn {
        body_len: u8,
        stack: SpawnStack,
        named: bool,
    },
    /// `yield_now`.
    Yield,
    /// Park until some proc consumes this proc's entry in `World::parked`.
    Park,
    /// Wake the parked proc at this index (mod the number parked).
    Unpark(u8),
    /// Wake every parked proc.
    UnparkAll,
    /// Keep this proc's `Unparker` in `World::stash`.
    StashUnparker,
    /// Unpark a stashed unparker: a spurious wakeup, or a no-op on an
    /// ended proc.
    UnparkStashed(u8),
    /// Unpark itself, then park: the token makes `park` return at once,
    /// without running any other proc.
    TokenPark,
    /// Join the child at this index (mod the number of children).
    Join(u8),
    /// Drop the handle of the child at this index: detach it.
    DropHandle(u8),
    /// Hold a counted value until the proc ends; optionally its drop
    /// yields (also while the proc unwinds from `Panic`).
    Guard { yield_in_drop: bool },
    /// `panic_any(KnownPanic)`.
    Panic,
    /// A chain of `depth` frames with a verified pattern buffer each, on
    /// the proc's segment (`grow: false`, kept within a quarter of it) or
    /// through `procrt::stack::grow` at every frame.
    Recurse {
        depth: u8,
        frame: Frame,
        bottom: Bottom,
        grow: bool,
    },
    /// In the root: stop the janitor and return at once, leaving the rest
    /// of the procs to the runtime's drop. Elsewhere: nothing.
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
        stack: Option<usize>,
        named: bool,
    },
    Recurse {
        depth: u32,
        frame: Frame,
        bottom: Bottom,
        grow: bool,
    },
    /// Any other operation (never `RawOp::Spawn` or `RawOp::Recurse`).
    Plain(RawOp),
}

impl Op {
    /// What the operation adds to its proc's checksum.
    fn code(&self) -> u64 {
        match *self {
            Op::Spawn { stack, named, .. } => {
                1 | (named as u64) << 8 | (stack.unwrap_or(0) as u64) << 9
            }
            Op::Recurse {
                depth,
                frame,
                bottom,
                grow,
            } => {
                2 | (depth as u64) << 8
                    | (frame.bytes() as u64) << 16
                    | (bottom as u64) << 32
                    | (grow as u64) << 40
            }
            Op::Plain(raw) => match raw {
                RawOp::Spawn { .. } | RawOp::Recurse { .. } => unreachable!("parsed away"),
                RawOp::Yield => 3,
                RawOp::Park => 4,
                RawOp::Unpark(i) => 5 | (i as u64) << 8,
                RawOp::UnparkAll => 6,
                RawOp::StashUnparker => 7,
                RawOp::UnparkStashed(i) => 8 | (i as u64) << 8,
                RawOp::Join(i) => 9 | (i as u64) << 8,
                RawOp::DropHandle(i) => 10 | (i as u64) << 8,
                RawOp::Guard { yield_in_drop } => 11 | (yield_in_drop as u64) << 8,
                RawOp::Panic => 12,
                RawOp::DropRuntimeEarly => 13,
                RawOp::TokenPark => 14,
            },
        }
    }
}

/// One proc's program and what running it must produce.
#[derive(Debug)]
struct Program {
    ops: Vec<Op>,
    /// The segment size the proc runs on.
    segment: usize,
    /// What the proc's join (or `block_on`, for the root) must yield.
    expected: Expected,
    /// Root only: the program ends with `DropRuntimeEarly`.
    ends_early: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// Returns this checksum.
    Value(u64),
    /// Panics with `KnownPanic`.
    Panic,
}

const CHECKSUM_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-style step of a proc's checksum.
fn mix(h: u64, code: u64) -> u64 {
    (h ^ code)
        .wrapping_mul(0x0000_0100_0000_01b3)
        .rotate_left(5)
}

/// Turns the flat operation list into a tree of programs within the limits.
struct Parser<'a> {
    raw: std::slice::Iter<'a, RawOp>,
    spawns: usize,
    first_segment: usize,
}

impl Parser<'_> {
    /// Parses up to `len` operations (all that remain when `None`) into the
    /// program of a proc `depth` spawns below the root, on a `segment`-byte
    /// stack.
    fn program(&mut self, len: Option<usize>, depth: usize, segment: usize) -> Program {
        let is_root = depth == 0;
        let mut ops = Vec::new();
        while len.is_none_or(|l| ops.len() < l) {
            let Some(&raw) = self.raw.next() else { break };
            let op = match raw {
                RawOp::Spawn {
                    body_len,
                    stack,
                    named,
                } => {
                    let body = body_len as usize % (MAX_BODY + 1);
                    if depth < MAX_DEPTH && self.spawns < MAX_SPAWNS {
                        self.spawns += 1;
                        let stack = match stack {
                            SpawnStack::Default => None,
                            SpawnStack::Sized(s) => Some(s.bytes()),
                        };
                        let seg = stack.unwrap_or(self.first_segment);
                        let child = self.program(Some(body), depth + 1, seg);
                        Op::Spawn {
                            child: Rc::new(child),
                            stack,
                            named,
                        }
                    } else {
                        // Over the limits: the child's operations are
                        // skipped and the spawn becomes a yield.
                        for _ in 0..body {
                            self.raw.next();
                        }
                        Op::Plain(RawOp::Yield)
                    }
                }
                RawOp::Recurse {
                    depth: d,
                    frame,
                    bottom,
                    grow,
                } => {
                    let depth = if grow {
                        d as u32 % (MAX_GROW_RECURSE + 1)
                    } else {
                        // Keep the chain within a quarter of the segment
                        // (its bottom asserts it stays within half).
                        let per_frame = (frame.bytes() + 256) as u32;
                        let fit = (segment / 4) as u32 / per_frame;
                        (d as u32 % (MAX_RECURSE + 1)).min(fit)
                    };
                    Op::Recurse {
                        depth,
                        frame,
                        bottom,
                        grow,
                    }
                }
                other => Op::Plain(other),
            };
            ops.push(op);
        }
        // Run the program "on paper".
        let mut h = CHECKSUM_SEED;
        let mut expected = None;
        let mut ends_early = false;
        for op in &ops {
            h = mix(h, op.code());
            match op {
                Op::Plain(RawOp::Panic)
                | Op::Recurse {
                    bottom: Bottom::Panic,
                    depth: 1..,
                    ..
                } => {
                    expected = Some(Expected::Panic);
                    break;
                }
                Op::Plain(RawOp::DropRuntimeEarly) if is_root => {
                    ends_early = true;
                    break;
                }
                _ => {}
            }
        }
        let expected = expected.unwrap_or(Expected::Value(h));
        Program {
            ops,
            segment,
            expected,
            ends_early,
        }
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

/// Prints the violated invariant and aborts (libFuzzer reports a crash).
macro_rules! violation {
    ($($arg:tt)*) => {{
        eprintln!("sched_ops: invariant violated: {}", format_args!($($arg)*));
        std::process::abort()
    }};
}

/// What the harness knows about one proc, shared with it.
#[derive(Default)]
struct Rec {
    /// Name given at spawn.
    name: Option<String>,
    /// Its program began.
    started: Cell<bool>,
    /// Its program is over (returned, unwound by panic or by cancellation):
    /// set by the outermost local of the proc's closure as it drops.
    done: Cell<bool>,
    /// It returned normally (set after its locals were dropped).
    returned: Cell<bool>,
    /// It executed `Panic`.
    panicked: Cell<bool>,
    /// Its handle was joined.
    joined: Cell<bool>,
    /// `current().id()`, seen from inside.
    id: Cell<Option<ProcId>>,
    /// Its entry in `World::parked` was consumed.
    woken: Cell<bool>,
    /// `(base, size)` of the segments its stack is linked through, first
    /// first (kept by the harness from `stack::usage`).
    chain: RefCell<Vec<(usize, usize)>>,
}

/// State shared by every proc of one input. Never borrowed across a switch.
struct World {
    /// Every spawned proc (not the root or the janitor), in spawn order.
    records: RefCell<Vec<Rc<Rec>>>,
    /// Procs waiting in `Park`, oldest first.
    parked: RefCell<Vec<(Unparker, Rc<Rec>)>>,
    /// Unparkers kept by `StashUnparker`.
    stash: RefCell<Vec<Unparker>>,
    /// Ids seen so far.
    ids: RefCell<HashSet<ProcId>>,
    /// Per counted value: dropped yet?
    dropped: RefCell<Vec<bool>>,
    /// Operations executed so far, by anyone.
    progress: Cell<u64>,
    /// Procs inside a guard's yield while unwinding from `KnownPanic`.
    unwind_yielders: Cell<usize>,
    /// A janitor proc exists.
    janitor_alive: Cell<bool>,
    /// No more janitors: the root is ending.
    stop_janitor: Cell<bool>,
    /// The runtime is being dropped: drops do not yield (a proc that blocks
    /// while cancelled is abandoned by design).
    shutting_down: Cell<bool>,
    /// The runtime's first segment size (the janitor's).
    first_segment: usize,
    /// The root proc's first segment size (also the draining `block_on`'s).
    root_segment: usize,
    /// Bytes of guard page at the bottom of each segment.
    guard: usize,
    /// `(base, size)` of every segment a proc ran on.
    segments: RefCell<Vec<(usize, usize)>>,
    /// Segments of procs that ended, to clean before reuse (see [`asan`]).
    dead_segments: RefCell<Vec<(usize, usize)>>,
}

impl World {
    fn new(first_segment: usize, root_segment: usize, guard: usize) -> Self {
        World {
            first_segment,
            root_segment,
            guard,
            segments: RefCell::new(Vec::new()),
            dead_segments: RefCell::new(Vec::new()),
            records: RefCell::new(Vec::new()),
            parked: RefCell::new(Vec::new()),
            stash: RefCell::new(Vec::new()),
            ids: RefCell::new(HashSet::new()),
            dropped: RefCell::new(Vec::new()),
            progress: Cell::new(0),
            unwind_yielders: Cell::new(0),
            janitor_alive: Cell::new(false),
            stop_janitor: Cell::new(false),
            shutting_down: Cell::new(false),
        }
    }

    fn unfinished(&self) -> usize {
        self.records
            .borrow()
            .iter()
            .filter(|r| !r.done.get())
            .count()
    }

    /// Segments the unfinished procs' chains hold.
    fn unfinished_chain_segments(&self) -> usize {
        let records = self.records.borrow();
        records
            .iter()
            .filter(|r| !r.done.get())
            .map(|r| r.chain.borrow().len())
            .sum()
    }
}

/// Aborts if the proc of `rec` runs although it ended or was joined.
fn check_alive(rec: &Rec) {
    if rec.done.get() || rec.joined.get() {
        violation!(
            "proc {:?} runs after it {}",
            rec.id.get(),
            if rec.joined.get() {
                "was joined"
            } else {
                "ended"
            }
        );
    }
}

/// A value whose drop is counted: a proc's guard, or the token a child's
/// closure captures (dropped unrun if the proc never starts).
struct Counted {
    world: Rc<World>,
    owner: Rc<Rec>,
    index: usize,
    canary: u64,
    yield_in_drop: bool,
}

fn canary(index: usize) -> u64 {
    (index as u64 ^ 0x5a5a_1234_c0ff_ee00).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Counted {
    fn new(world: &Rc<World>, owner: &Rc<Rec>, yield_in_drop: bool) -> Self {
        let mut dropped = world.dropped.borrow_mut();
        let index = dropped.len();
        dropped.push(false);
        Counted {
            world: world.clone(),
            owner: owner.clone(),
            index,
            canary: canary(index),
            yield_in_drop,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.canary != canary(self.index) {
            violation!(
                "counted value {} corrupted (canary {:#x})",
                self.index,
                self.canary
            );
        }
        if std::mem::replace(&mut self.world.dropped.borrow_mut()[self.index], true) {
            violation!("counted value {} dropped twice", self.index);
        }
        if self.yield_in_drop && !self.world.shutting_down.get() {
            check_alive(&self.owner);
            let unwinding = self.owner.panicked.get();
            let yielders = &self.world.unwind_yielders;
            yielders.set(yielders.get() + unwinding as usize);
            procrt::yield_now();
            yielders.set(yielders.get() - unwinding as usize);
            check_alive(&self.owner);
        }
    }
}

/// The outermost local of every proc the harness spawns: records the
/// proc's segment, and as the proc ends (by return, panic or cancellation)
/// marks its record done and clears ASan's shadow of the segment.
struct Sentinel {
    world: Rc<World>,
    rec: Option<Rc<Rec>>,
    /// The root's: before it ends, wait until no proc is suspended in the
    /// middle of unwinding (see `root_main`).
    root: bool,
    /// `(base, size)` of the proc's segment.
    segment: (usize, usize),
}

impl Sentinel {
    fn new(world: &Rc<World>, rec: Option<&Rc<Rec>>, segment: usize, root: bool) -> Self {
        let base = stack_pointer() & !(segment - 1);
        world.segments.borrow_mut().push((base, segment));
        if let Some(rec) = rec {
            *rec.chain.borrow_mut() = vec![(base, segment)];
        }
        Sentinel {
            world: world.clone(),
            rec: rec.cloned(),
            root,
            segment: (base, segment),
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if self.root {
            let yielders = &self.world.unwind_yielders;
            for _ in 0..DRAIN_ROUNDS {
                if yielders.get() == 0 {
                    break;
                }
                procrt::yield_now();
            }
            if yielders.get() != 0 {
                violation!(
                    "{} procs stay suspended in the middle of unwinding",
                    yielders.get()
                );
            }
        }
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
/// call. Called before anything that may reuse them (spawn, block_on).
fn unpoison_dead_segments(world: &World) {
    for (base, size) in world.dead_segments.borrow_mut().drain(..) {
        asan::unpoison(base, size);
    }
}

/// A child's handle and what its join must give.
struct Child {
    handle: JoinHandle<u64>,
    rec: Rc<Rec>,
    expected: Expected,
}

/// Checks a join result against what the proc did.
fn check_result(r: Result<u64, JoinError>, rec: &Rec, expected: Expected, when: &str) {
    match (&r, expected) {
        (Ok(v), Expected::Value(e)) if *v == e && rec.returned.get() => {}
        (Err(JoinError::Panicked(p)), Expected::Panic)
            if p.is::<KnownPanic>() && rec.panicked.get() => {}
        (Err(JoinError::Cancelled), _) if !rec.returned.get() && !rec.panicked.get() => {}
        _ => violation!(
            "{when}: proc {:?} joined as {r:?}, expected {expected:?} \
             (returned {}, panicked {})",
            rec.id.get(),
            rec.returned.get(),
            rec.panicked.get()
        ),
    }
}

/// Joins a child from inside a proc.
fn join_child(c: Child) {
    let Child {
        handle,
        rec,
        expected,
    } = c;
    if handle.is_finished() != rec.done.get() {
        violation!(
            "is_finished() = {} but the proc is {}",
            handle.is_finished(),
            if rec.done.get() { "done" } else { "not done" }
        );
    }
    if let Some(id) = rec.id.get() {
        if handle.id() != id {
            violation!(
                "JoinHandle::id {:?} != current().id() {id:?} inside the proc",
                handle.id()
            );
        }
    }
    let r = handle.join();
    if !rec.done.get() {
        violation!("join of proc {:?} returned before it ended", rec.id.get());
    }
    if rec.joined.replace(true) {
        violation!("proc {:?} joined twice", rec.id.get());
    }
    if matches!(r, Err(JoinError::Cancelled)) {
        violation!("join inside a running runtime gave Cancelled");
    }
    check_result(r, &rec, expected, "join");
}

// ---------------------------------------------------------------------------
// Parking and the janitor
// ---------------------------------------------------------------------------

/// Parks the running proc until its entry in `World::parked` is consumed.
fn park_op(world: &Rc<World>, rec: &Rc<Rec>) {
    rec.woken.set(false);
    world
        .parked
        .borrow_mut()
        .push((procrt::unparker(), rec.clone()));
    ensure_janitor(world);
    while !rec.woken.get() {
        procrt::park();
        check_alive(rec);
    }
}

/// Wakes one parked proc: sets its flag, then unparks it.
fn wake(entry: (Unparker, Rc<Rec>)) {
    let (u, rec) = entry;
    rec.woken.set(true);
    u.unpark();
}

fn unpark_all(world: &World) {
    let entries: Vec<_> = world.parked.borrow_mut().drain(..).collect();
    entries.into_iter().for_each(wake);
}

/// Spawns a janitor unless one exists or the root is ending.
fn ensure_janitor(world: &Rc<World>) {
    if world.janitor_alive.get() || world.stop_janitor.get() {
        return;
    }
    world.janitor_alive.set(true);
    unpoison_dead_segments(world);
    let w = world.clone();
    match procrt::Builder::new()
        .name("janitor")
        .spawn(move || janitor(w))
    {
        Ok(h) => drop(h), // detached; the root waits for `janitor_alive`
        Err(e) => violation!("cannot spawn the janitor: {e}"),
    }
}

/// Wakes the oldest parked proc whenever a full round passes in which no
/// other proc executed an operation; ends when nothing is parked then.
fn janitor(world: Rc<World>) {
    let _sentinel = Sentinel::new(&world, None, world.first_segment, false);
    loop {
        let before = world.progress.get();
        procrt::yield_now();
        if world.stop_janitor.get() {
            break;
        }
        if world.progress.get() == before {
            let oldest = {
                let mut parked = world.parked.borrow_mut();
                (!parked.is_empty()).then(|| parked.remove(0))
            };
            match oldest {
                Some(entry) => wake(entry),
                None => break,
            }
        }
    }
    world.janitor_alive.set(false);
}

/// Stops the janitor and waits (yielding, waking every parked proc each
/// round) until every proc of `world` ended.
fn drain(world: &World) {
    world.stop_janitor.set(true);
    for _ in 0..DRAIN_ROUNDS {
        unpark_all(world);
        if !world.janitor_alive.get() && world.unfinished() == 0 {
            return;
        }
        procrt::yield_now();
    }
    violation!(
        "{} procs still unfinished after {DRAIN_ROUNDS} rounds of waking everything",
        world.unfinished()
    );
}

// ---------------------------------------------------------------------------
// Stack checks
// ---------------------------------------------------------------------------

/// Bytes of the running proc's stack in use, assuming it runs on a segment
/// of `segment` bytes (segments are aligned to their size).
fn stack_used(segment: usize) -> usize {
    let sp = stack_pointer();
    (sp | (segment - 1)) + 1 - sp
}

/// What a `Recurse` chain needs besides its frames.
struct RecurseEnv {
    world: Rc<World>,
    rec: Rc<Rec>,
    /// The proc's first segment size.
    segment: usize,
    bottom: Bottom,
    /// Call each frame through `stack::grow`.
    grow: bool,
}

impl RecurseEnv {
    /// Runs at the deepest frame.
    fn at_bottom(&self) {
        if self.grow {
            check_chain(&self.rec, "at the bottom of a grown Recurse");
            // The runtime's entry points may link a segment here too.
            unpoison_dead_segments(&self.world);
        } else {
            // The budget keeps a Recurse chain's frames to about a quarter
            // of the segment; the runtime's own frames (entry points make
            // room for their closures and results) come on top, so only
            // flag use beyond three quarters.
            let used = stack_used(self.segment);
            if used > self.segment / 4 * 3 {
                violation!(
                    "harness: Recurse uses {used} of a {}-byte segment; lower its budget",
                    self.segment
                );
            }
        }
        match self.bottom {
            Bottom::Nothing => {}
            Bottom::Yield => procrt::yield_now(),
            Bottom::Park => park_op(&self.world, &self.rec),
            Bottom::Panic => raise_known_panic(&self.rec),
        }
        check_alive(&self.rec);
        check_stack_limit(
            &self.world,
            &self.rec,
            "at the bottom of a Recurse, resumed",
        );
    }

    /// Calls `f` through `stack::grow(bytes)`, keeping `rec.chain` in step
    /// and checking what `grow` promises.
    fn grow_call(&self, bytes: usize, f: impl FnOnce() -> u64) -> u64 {
        // A linked segment may be a dead proc's: clear it first (`asan`).
        unpoison_dead_segments(&self.world);
        let before = procrt::stack::usage().expect("stack::usage inside a proc");
        let r = procrt::stack::grow(bytes, || {
            let inside = procrt::stack::usage().expect("stack::usage inside a proc");
            let sp = stack_pointer();
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
                let seg = (sp & !(size - 1), size);
                // The new segment may be this chain's spare, on which an
                // earlier unwind left stale redzones below `sp` (see
                // "AddressSanitizer and proc stacks"): clear them before
                // `f` puts frames there.
                asan::unpoison(seg.0, sp - seg.0);
                self.rec.chain.borrow_mut().push(seg);
                self.world.segments.borrow_mut().push(seg);
            }
            check_chain(&self.rec, "inside stack::grow");
            check_stack_limit(&self.world, &self.rec, "inside stack::grow");
            let (base, _) = *self
                .rec
                .chain
                .borrow()
                .last()
                .expect("chain has a first segment");
            // Room left above the segment's guard page and limit margin
            // (what `grow` measures from), with slack for this closure's
            // own frame.
            let room = sp.saturating_sub(base + self.world.guard + procrt::stack::LIMIT_MARGIN);
            if room + 1024 < bytes {
                violation!(
                    "stack::grow({bytes}) runs its closure with only {room} bytes left \
                     (linked a segment: {linked})"
                );
            }
            let r = f();
            if linked {
                self.rec.chain.borrow_mut().pop();
            }
            r
        });
        check_chain(&self.rec, "after stack::grow returned");
        r
    }
}

/// Checks `stack::remaining_stack()` (one load of the TCB's stack-limit
/// slot, which every switch must set for the context it resumes) against
/// the bottom of the segment the harness knows the proc runs on.
fn check_stack_limit(world: &World, rec: &Rec, when: &str) {
    let Some(left) = procrt::stack::remaining_stack() else {
        violation!("{when}: remaining_stack() is None inside a proc");
    };
    // Measured the way procrt does (a local's address), in the same frame.
    let probe = 0u8;
    let here = std::hint::black_box(&probe) as *const u8 as usize;
    let (base, size) = *rec
        .chain
        .borrow()
        .last()
        .expect("chain has a first segment");
    let expected = here.saturating_sub(base + world.guard);
    if left.abs_diff(expected) > 4096 {
        violation!(
            "{when}: remaining_stack() = {left}, but the proc runs {expected} bytes above the \
             bottom of its {size}-byte segment at {base:#x}: stale stack-limit slot?"
        );
    }
}

/// Checks that the runtime's count of the proc's segments matches the
/// harness's.
fn check_chain(rec: &Rec, when: &str) {
    let usage = procrt::stack::usage().expect("stack::usage inside a proc");
    let model = rec.chain.borrow().len();
    if usage.segments != model {
        violation!("{when}: stack::usage() = {usage:?}, but the proc has {model} segments linked");
    }
}

/// Writes a pattern into a `N`-byte frame, recurses `depth` times (through
/// `stack::grow` if `env.grow`), runs `env.at_bottom` at the deepest frame,
/// and verifies every frame on the way back.
#[inline(never)]
fn recurse<const N: usize>(depth: u32, seed: u64, env: &RecurseEnv) -> u64 {
    let mut buf = [0u8; N];
    let mut x = seed;
    for b in buf.iter_mut() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *b = (x >> 56) as u8;
    }
    std::hint::black_box(&mut buf);
    let below = if depth <= 1 {
        env.at_bottom();
        0
    } else if env.grow {
        env.grow_call(N + GROW_SLACK, || {
            recurse::<N>(depth - 1, seed.wrapping_add(1), env)
        })
    } else {
        recurse::<N>(depth - 1, seed.wrapping_add(1), env)
    };
    let mut x = seed;
    let mut sum = 0u64;
    for (i, b) in buf.iter().enumerate() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if *b != (x >> 56) as u8 {
            violation!("stack frame {depth} of a Recurse chain corrupted at byte {i} of {N}");
        }
        sum = sum.wrapping_add(*b as u64);
    }
    std::hint::black_box(sum.wrapping_add(below))
}

/// Marks the proc as panicking and raises `KnownPanic`, telling the panic
/// hook which segments to clear (see [`asan`]).
fn raise_known_panic(rec: &Rec) -> ! {
    rec.panicked.set(true);
    PANICKING_CHAIN.with(|c| c.borrow_mut().clone_from(&rec.chain.borrow()));
    std::panic::panic_any(KnownPanic)
}

// ---------------------------------------------------------------------------
// The interpreter
// ---------------------------------------------------------------------------

/// One proc's running state.
struct Interp {
    world: Rc<World>,
    rec: Rc<Rec>,
    segment: usize,
    h: u64,
    children: Vec<Option<Child>>,
    guards: Vec<Counted>,
}

impl Interp {
    fn new(world: &Rc<World>, rec: &Rc<Rec>, segment: usize) -> Self {
        // Identity as seen from inside the proc.
        let me = procrt::current();
        if !world.ids.borrow_mut().insert(me.id()) {
            violation!("proc id {:?} given twice", me.id());
        }
        if me.name() != rec.name.as_deref() {
            violation!("proc named {:?} sees name {:?}", rec.name, me.name());
        }
        rec.id.set(Some(me.id()));
        rec.started.set(true);
        let used = stack_used(segment);
        if used > ENTRY_STACK_MAX {
            violation!(
                "proc {:?} starts {used} bytes below the top of its {segment}-byte segment: \
                 smaller segment than asked for?",
                me.id()
            );
        }
        Interp {
            world: world.clone(),
            rec: rec.clone(),
            segment,
            h: CHECKSUM_SEED,
            children: Vec::new(),
            guards: Vec::new(),
        }
    }

    /// Runs `ops`; returns true when the root was told to end early.
    fn run(&mut self, ops: &[Op], is_root: bool) -> bool {
        for op in ops {
            check_alive(&self.rec);
            check_stack_limit(&self.world, &self.rec, "before an operation");
            self.world.progress.set(self.world.progress.get() + 1);
            self.h = mix(self.h, op.code());
            match op {
                Op::Spawn {
                    child,
                    stack,
                    named,
                } => self.spawn(child, *stack, *named),
                Op::Recurse {
                    depth,
                    frame,
                    bottom,
                    grow,
                } => self.recurse(*depth, *frame, *bottom, *grow),
                Op::Plain(raw) => match *raw {
                    RawOp::Spawn { .. } | RawOp::Recurse { .. } => unreachable!("parsed away"),
                    RawOp::Yield => procrt::yield_now(),
                    RawOp::Park => park_op(&self.world, &self.rec),
                    RawOp::Unpark(i) => {
                        let entry = {
                            let mut parked = self.world.parked.borrow_mut();
                            let n = parked.len();
                            (n > 0).then(|| parked.remove(i as usize % n))
                        };
                        if let Some(entry) = entry {
                            wake(entry);
                        }
                    }
                    RawOp::UnparkAll => unpark_all(&self.world),
                    RawOp::StashUnparker => {
                        let mut stash = self.world.stash.borrow_mut();
                        if stash.len() < MAX_STASH {
                            stash.push(procrt::unparker());
                        }
                    }
                    RawOp::UnparkStashed(i) => {
                        let u = {
                            let stash = self.world.stash.borrow();
                            let n = stash.len();
                            (n > 0).then(|| stash[i as usize % n].clone())
                        };
                        if let Some(u) = u {
                            u.unpark();
                        }
                    }
                    RawOp::TokenPark => {
                        let progress = self.world.progress.get();
                        procrt::unparker().unpark();
                        procrt::park();
                        if self.world.progress.get() != progress {
                            violation!("park after an unpark of oneself let other procs run");
                        }
                    }
                    RawOp::Join(i) => {
                        if let Some(c) = self.child_at(i).and_then(Option::take) {
                            join_child(c);
                        }
                    }
                    RawOp::DropHandle(i) => {
                        drop(self.child_at(i).and_then(Option::take));
                    }
                    RawOp::Guard { yield_in_drop } => {
                        self.guards
                            .push(Counted::new(&self.world, &self.rec, yield_in_drop));
                    }
                    RawOp::Panic => raise_known_panic(&self.rec),
                    RawOp::DropRuntimeEarly => {
                        if is_root {
                            self.world.stop_janitor.set(true);
                            return true;
                        }
                    }
                },
            }
            check_alive(&self.rec);
        }
        false
    }

    fn child_at(&mut self, i: u8) -> Option<&mut Option<Child>> {
        let n = self.children.len();
        (n > 0).then(|| &mut self.children[i as usize % n])
    }

    fn spawn(&mut self, program: &Rc<Program>, stack: Option<usize>, named: bool) {
        let index = self.world.records.borrow().len();
        let rec = Rc::new(Rec {
            name: named.then(|| format!("p{index}")),
            ..Rec::default()
        });
        self.world.records.borrow_mut().push(rec.clone());
        let token = Counted::new(&self.world, &rec, false);
        let (world, r, p) = (self.world.clone(), rec.clone(), program.clone());
        let body = move || child_main(world, r, p, token);
        unpoison_dead_segments(&self.world);
        let mut builder = procrt::Builder::new();
        if let Some(bytes) = stack {
            builder = builder.stack_size(bytes);
        }
        if let Some(name) = &rec.name {
            builder = builder.name(name.clone());
        }
        match builder.spawn(body) {
            Ok(handle) => self.children.push(Some(Child {
                handle,
                rec,
                expected: program.expected,
            })),
            Err(e) => violation!("spawn failed: {e}"),
        }
    }

    fn recurse(&mut self, depth: u32, frame: Frame, bottom: Bottom, grow: bool) {
        if depth == 0 {
            return;
        }
        let env = RecurseEnv {
            world: self.world.clone(),
            rec: self.rec.clone(),
            segment: self.segment,
            bottom,
            grow,
        };
        let seed = self.h;
        let sum = match frame {
            Frame::B128 => recurse::<128>(depth, seed, &env),
            Frame::B512 => recurse::<512>(depth, seed, &env),
            Frame::B2048 => recurse::<2048>(depth, seed, &env),
        };
        std::hint::black_box(sum);
    }

    /// Joins every child whose handle is still held.
    fn join_remaining(&mut self) {
        for c in std::mem::take(&mut self.children).into_iter().flatten() {
            join_child(c);
        }
    }
}

/// The body of every spawned proc.
fn child_main(world: Rc<World>, rec: Rc<Rec>, program: Rc<Program>, token: Counted) -> u64 {
    let _sentinel = Sentinel::new(&world, Some(&rec), program.segment, false);
    let _token = token;
    let mut ip = Interp::new(&world, &rec, program.segment);
    ip.run(&program.ops, false);
    ip.join_remaining();
    let h = ip.h;
    drop(ip); // guards drop here, possibly yielding
    rec.returned.set(true);
    h
}

/// What the root proc hands back to the harness.
struct RootOut {
    value: u64,
    ended_early: bool,
    /// Handles still held when the root ended early.
    children: Vec<Option<Child>>,
}

/// The body of the root proc.
///
/// The root's end returns straight to `block_on`: procs that are runnable
/// then stay where they are until a later `block_on` or the drop. A proc
/// suspended in a destructor's yield while unwinding from a panic would be
/// abandoned by the drop (documented: it "blocks again while unwinding"), so
/// the root's sentinel waits until there are none (after its own guards,
/// whose yields may start more of them).
fn root_main(world: Rc<World>, rec: Rc<Rec>, program: Rc<Program>) -> RootOut {
    let _sentinel = Sentinel::new(&world, Some(&rec), program.segment, true);
    let mut ip = Interp::new(&world, &rec, program.segment);
    let ended_early = ip.run(&program.ops, true);
    if !ended_early {
        ip.join_remaining();
        drain(&world);
    }
    let value = ip.h;
    let children = std::mem::take(&mut ip.children);
    drop(ip);
    rec.returned.set(true);
    RootOut {
        value,
        ended_early,
        children,
    }
}

// ---------------------------------------------------------------------------
// One input
// ---------------------------------------------------------------------------

/// Checks the runtime's counters against the harness's records.
fn check_counts(rt: &Runtime, world: &World, when: &str) {
    let live = rt.live_procs();
    // The root's end returns to block_on at once: a janitor told to stop
    // may not have run since.
    let unfinished = world.unfinished() + world.janitor_alive.get() as usize;
    let segments = rt.pool_stats().live_segments;
    // Each unfinished proc holds its chain and at most one spare segment.
    let chains = world.unfinished_chain_segments();
    if live != unfinished || segments < chains || segments > chains + unfinished {
        violation!(
            "{when}: live_procs() = {live}, live_segments = {segments}, but {unfinished} procs \
             are unfinished, holding {chains} linked segments"
        );
    }
}

fn run(input: Input) {
    let Input { config, ops } = input;
    let ops = &ops[..ops.len().min(MAX_RAW_OPS)];
    let first = config.first_segment.bytes();
    // Powers of two, at least `first` and at most a quarter of the
    // reservation: the runtime takes them as they are.
    let root_segment = match config.root_stack {
        RootStack::First => first,
        RootStack::Big => 1 << 20,
    };
    let root_program = {
        let mut parser = Parser {
            raw: ops.iter(),
            spawns: 0,
            first_segment: first,
        };
        Rc::new(parser.program(None, 0, root_segment))
    };

    let mut builder = Runtime::builder()
        .reservation(RESERVATION)
        .first_segment_size(first)
        .root_stack_size(root_segment)
        .cache_limit(if config.no_cache { 0 } else { 1 << 20 });
    if config.unguarded {
        // SAFETY: every proc's stack use is bounded: the interpreter's own
        // frames are shallow (checked at entry against ENTRY_STACK_MAX),
        // `Recurse` chains on one segment are limited to a quarter of it
        // (checked at their bottom against half of it), and grown chains
        // ask `stack::grow` for each frame's buffer plus GROW_SLACK (checked
        // inside each grow); segments are at least 32 KiB.
        builder = unsafe { builder.unguarded() };
    }
    let rt = builder
        .build()
        .unwrap_or_else(|e| violation!("cannot build the runtime: {e}"));

    let guard = if config.unguarded { 0 } else { 4096 };
    let world = Rc::new(World::new(first, root_segment, guard));
    // block_on names its root proc.
    let root_rec = Rc::new(Rec {
        name: Some("block_on".into()),
        ..Rec::default()
    });
    let outcome = {
        let (w, r, p) = (world.clone(), root_rec.clone(), root_program.clone());
        catch_unwind(AssertUnwindSafe(|| rt.block_on(move || root_main(w, r, p))))
    };
    if !root_rec.done.get() {
        violation!("block_on returned before the root proc ended");
    }

    let (leftover, ended_early) = match outcome {
        Ok(out) => {
            if root_program.expected != Expected::Value(out.value)
                || root_program.ends_early != out.ended_early
            {
                violation!(
                    "block_on gave {:#x} (early {}), expected {:?} (early {})",
                    out.value,
                    out.ended_early,
                    root_program.expected,
                    root_program.ends_early
                );
            }
            (out.children, out.ended_early)
        }
        Err(payload) => {
            if !payload.is::<KnownPanic>() || root_program.expected != Expected::Panic {
                violation!("block_on panicked unexpectedly");
            }
            (Vec::new(), true)
        }
    };

    if config.trim {
        let before = rt.pool_stats();
        rt.trim_stacks();
        let after = rt.pool_stats();
        if after.cached_segments != 0
            || after.cached_bytes != 0
            || after.live_segments != before.live_segments
        {
            violation!("trim_stacks went from {before:?} to {after:?}");
        }
    }
    if !ended_early {
        // The root waited for everything.
        if rt.live_procs() != 0 || rt.pool_stats().live_segments != 0 || world.unfinished() != 0 {
            violation!(
                "all procs ended, yet live_procs() = {}, live_segments = {}, unfinished = {}",
                rt.live_procs(),
                rt.pool_stats().live_segments,
                world.unfinished()
            );
        }
    } else {
        check_counts(&rt, &world, "after an early end");
        if config.after_early_end == AfterEarlyEnd::Drain {
            unpoison_dead_segments(&world);
            let w = world.clone();
            rt.block_on(move || {
                let _sentinel = Sentinel::new(&w, None, w.root_segment, false);
                drain(&w)
            });
            check_counts(&rt, &world, "after a draining block_on");
        }
    }

    world.shutting_down.set(true);
    // The drop unwinds the procs still alive (see `asan`).
    for &(base, size) in world.segments.borrow().iter() {
        asan::unpoison(base, size);
    }
    drop(rt);

    // Every proc ended: returned, panicked, or was cancelled.
    for rec in world.records.borrow().iter() {
        if rec.started.get() && !rec.done.get() {
            violation!(
                "proc {:?} was neither finished nor unwound by the drop",
                rec.id.get()
            );
        }
    }
    // Handles outlive the runtime: join them outside it.
    for c in leftover.into_iter().flatten() {
        if !c.handle.is_finished() {
            violation!(
                "proc {:?} not finished after the runtime's drop",
                c.rec.id.get()
            );
        }
        let r = c.handle.join();
        c.rec.joined.set(true);
        check_result(r, &c.rec, c.expected, "join after the runtime's drop");
    }
    // Unparkers outlive the runtime: using them is a no-op.
    let stash = std::mem::take(&mut *world.stash.borrow_mut());
    let parked = std::mem::take(&mut *world.parked.borrow_mut());
    for u in stash.iter().chain(parked.iter().map(|(u, _)| u)) {
        u.unpark();
    }
    drop((stash, parked));

    if let Some(i) = world.dropped.borrow().iter().position(|d| !d) {
        violation!(
            "counted value {i} of {} never dropped",
            world.dropped.borrow().len()
        );
    }
    drop(root_program);
    // The next input's runtime may map its stacks at the same addresses.
    for &(base, size) in world.segments.borrow().iter() {
        asan::unpoison(base, size);
    }
    if Rc::strong_count(&world) != 1 {
        violation!(
            "{} references to the shared state outlive the runtime (a closure or stack leaked)",
            Rc::strong_count(&world) - 1
        );
    }
}

fuzz_target!(init: install_panic_filter(), |input: Input| {
    run(input);
});
