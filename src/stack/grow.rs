//! Growing a proc's stack: linked segments, a spare, and `grow`.
//!
//! # Design
//!
//! Rust code makes no prologue checks, so a proc's stack grows where code
//! asks: [`grow(bytes, f)`](grow) runs `f` with at least `bytes` of stack. The
//! check is one load of the TCB's split-stack slot (which the switch keeps
//! equal to the running segment's limit) and one compare with the stack
//! pointer. When the segment has room, `f` runs in place. Otherwise a new
//! segment is linked to the proc's [`Chain`] (its header records the
//! previous segment and the stack pointer at the boundary), the slot is set
//! to the new limit, and `f` runs there through `procrt_call_on_segment`
//! (`arch/*.s`); on return the segment is unlinked and the old limit put
//! back.
//!
//! A panic in `f` is caught at the boundary (inside the new segment) and
//! resumed with `resume_unwind` on the old one, so no unwinder walks through
//! the hand-written frame; the segment is unlinked either way.
//!
//! ## No hot split
//!
//! A loop that calls `grow` across the same boundary would allocate and free
//! a segment per iteration (the "hot split" that made Go and Rust give up
//! segmented stacks). Each chain keeps the segment it released last as a
//! *spare*: the next `grow` that fits in it takes it back with no call into
//! the pool. New segments double: each is at least twice the size of the
//! one below it, so a deep recursion needs O(log depth) segments.
//!
//! ## Limits
//!
//! A chain has a maximum total size (the per-proc stack limit, 8 MiB by
//! default, like a thread's). Growing past it panics in that proc with a
//! message saying so: an ordinary, catchable panic that reaches `join`. The
//! panic is raised on the old segment, so code that calls `grow` when it is
//! already down to its last few hundred bytes may instead hit the guard
//! page (reported, never silent).
//!
//! The stack layer does not know procs: the scheduler registers a
//! [`ChainProvider`] that returns the running proc's chain and its pool.

use super::pool::{Segment, StackPool};
use crate::arch;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Default per-proc stack limit: the total size of a proc's chain.
pub const DEFAULT_MAX_STACK: usize = 8 << 20;

/// Stack that runtime entry points (spawn, yield, park, join) make sure of
/// before they run: a proc on the smallest segment can call every one.
pub(crate) const ENTRY_STACK: usize = 2048;

/// Size of the segment an over-limit `grow` raises its panic on: room for
/// the panic hook (which may capture a backtrace) and the unwinder.
const OVERDRAFT: usize = 256 * 1024;

/// Returns the running proc's chain and its pool, or `None` outside procs.
pub(crate) type ChainProvider = fn() -> Option<(*const Chain, *mut StackPool)>;

/// The registered [`ChainProvider`], as a `usize` (0: none).
static PROVIDER: AtomicUsize = AtomicUsize::new(0);

/// Registers the function that finds the running proc's chain.
pub(crate) fn set_chain_provider(p: ChainProvider) {
    PROVIDER.store(p as usize, Ordering::Release);
}

extern "C" {
    /// `arch/*.s`: run `f(arg)` with the stack pointer at `sp`.
    fn procrt_call_on_segment(arg: *mut u8, f: unsafe extern "C" fn(*mut u8), sp: usize);
}

/// A proc's stack: the segments it runs on, linked through their headers,
/// newest first, plus one spare.
///
/// `current` is the segment the proc runs on (or ran on when it was
/// switched out); following `prev` links from it reaches `first`. `depth`
/// counts the segments on that path; `reserved` sums their sizes and never
/// exceeds `max`.
#[derive(Debug)]
pub(crate) struct Chain {
    /// The segment the proc started on.
    first: Segment,
    /// The newest segment.
    current: Cell<Segment>,
    /// The segment released last, kept for the next growth.
    spare: Cell<Option<Segment>>,
    /// Segments from `first` to `current`, inclusive.
    depth: Cell<usize>,
    /// Bytes of those segments.
    reserved: Cell<usize>,
    /// Most bytes the chain may hold.
    max: usize,
}

/// A proc's stack use, as returned by [`usage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackUsage {
    /// Segments in the proc's chain.
    pub segments: usize,
    /// Bytes of those segments (address space, guard pages and headers
    /// included).
    pub reserved_bytes: usize,
    /// Bytes in use: on each segment, from its top down to the stack
    /// pointer (the caller's, or the one saved when it grew).
    pub used_bytes: usize,
    /// The proc's stack limit.
    pub max_bytes: usize,
}

impl Chain {
    /// A chain of one segment, limited to `max` bytes.
    pub(crate) fn new(first: Segment, max: usize) -> Chain {
        Chain {
            first,
            current: Cell::new(first),
            spare: Cell::new(None),
            depth: Cell::new(1),
            reserved: Cell::new(first.size()),
            max: max.max(first.size()),
        }
    }

    /// The segment running now.
    pub(crate) fn current(&self) -> Segment {
        self.current.get()
    }

    /// Links a segment with at least `bytes` usable above its limit, at the
    /// stack pointer `sp` of the current one.
    ///
    /// When the chain would exceed its limit, the segment is linked anyway
    /// (an overdraft of one segment) and the returned message says why `f`
    /// must not run: the caller raises it as a panic *on the new segment*,
    /// where the panic hook has room, not on the nearly full old one.
    ///
    /// # Panics
    ///
    /// When the pool has no segment at all.
    #[inline]
    fn link(&self, pool: &mut StackPool, bytes: usize, sp: usize) -> (Segment, Option<String>) {
        let mut refused = None;
        let cur = self.current.get();
        // Usable bytes above the limit are size - overhead on every segment.
        let overhead = cur.size() - cur.usable() + super::LIMIT_MARGIN;
        let seg = match self.spare.take() {
            Some(s)
                if s.size() - overhead >= bytes
                    && self.reserved.get().saturating_add(s.size()) <= self.max =>
            {
                s
            }
            spare => {
                let need = pool.segment_size_for(bytes.saturating_add(overhead));
                if let Some(s) = spare {
                    // SAFETY: the spare is a dead segment of this chain's pool.
                    unsafe { pool.free(s) };
                }
                let size = need.max(cur.size().saturating_mul(2));
                let size = if self.reserved.get().saturating_add(size) > self.max {
                    refused = Some(format!(
                        "procrt: stack limit of {} bytes exceeded (the proc holds {} bytes in {} \
                         segments and asked to grow by {} bytes); raise it with Builder::max_stack",
                        self.max,
                        self.reserved.get(),
                        self.depth.get(),
                        bytes
                    ));
                    // The overdraft only has to hold the panic machinery.
                    pool.segment_size_for(OVERDRAFT)
                } else {
                    size
                };
                pool.alloc(size)
                    .unwrap_or_else(|e| panic!("procrt: cannot grow the stack: {e}"))
            }
        };
        seg.set_prev(Some((cur, sp)));
        self.current.set(seg);
        self.depth.set(self.depth.get() + 1);
        self.reserved.set(self.reserved.get() + seg.size());
        (seg, refused)
    }

    /// Unlinks the current segment, keeping it as the spare.
    #[inline]
    fn unlink(&self, pool: &mut StackPool) {
        let seg = self.current.get();
        let (prev, _) = seg.prev().unwrap_or_else(|| {
            crate::fatal(format_args!("stack chain: unlink of the first segment"))
        });
        self.current.set(prev);
        self.depth.set(self.depth.get() - 1);
        self.reserved.set(self.reserved.get() - seg.size());
        if let Some(old) = self.spare.replace(Some(seg)) {
            // SAFETY: the old spare is a dead segment of this pool.
            unsafe { pool.free(old) };
        }
    }

    /// Returns every segment to the pool.
    ///
    /// # Safety
    ///
    /// The proc has ended: nothing runs on the chain any more.
    pub(crate) unsafe fn release(&self, pool: &mut StackPool) {
        if let Some(s) = self.spare.take() {
            // SAFETY: the spare is dead.
            unsafe { pool.free(s) };
        }
        let mut seg = Some(self.current.get());
        while let Some(s) = seg {
            seg = s.prev().map(|(p, _)| p);
            // SAFETY: the proc has ended (caller's contract).
            unsafe { pool.free(s) };
        }
        self.depth.set(0);
        self.reserved.set(0);
    }

    /// Stack use, with `sp` the stack pointer on the current segment.
    fn usage(&self, sp: usize) -> StackUsage {
        let mut used = 0;
        let mut seg = self.current.get();
        let mut at = sp;
        loop {
            used += seg.top().saturating_sub(at);
            match seg.prev() {
                Some((p, psp)) => {
                    seg = p;
                    at = psp;
                }
                None => break,
            }
        }
        debug_assert_eq!(seg, self.first, "chain does not end at its first segment");
        StackUsage {
            segments: self.depth.get(),
            reserved_bytes: self.reserved.get(),
            used_bytes: used,
            max_bytes: self.max,
        }
    }
}

/// The running proc's chain and pool, from the registered provider.
fn running_chain() -> Option<(&'static Chain, &'static mut StackPool)> {
    let p = PROVIDER.load(Ordering::Acquire);
    if p == 0 {
        return None;
    }
    // SAFETY: PROVIDER only holds a ChainProvider stored by set_chain_provider.
    let provider: ChainProvider = unsafe { std::mem::transmute::<usize, ChainProvider>(p) };
    let (c, pool) = provider()?;
    // SAFETY: the provider returns the running proc's chain and its
    // runtime's pool, both alive while the proc runs; the references are
    // used only within the current `grow` call, on this thread, and the
    // pool is not borrowed elsewhere meanwhile (nothing here switches).
    Some(unsafe { (&*c, &mut *pool) })
}

/// The stack pointer, approximately (the address of a local).
#[inline(always)]
fn stack_pointer() -> usize {
    let probe = 0u8;
    std::hint::black_box(&probe) as *const u8 as usize
}

/// Runs `f` with at least `bytes` of stack, growing the running proc's
/// stack by a segment if the current one has less left.
///
/// When the segment has room this costs a load and a compare. Otherwise a
/// segment is linked (the proc's spare when it fits: no allocation), `f`
/// runs on it, and it is unlinked when `f` returns or panics; a panic
/// continues in the caller. Outside procs `f` simply runs.
///
/// # Panics
///
/// When growing would take the proc past its stack limit
/// (`Builder::max_stack`), or the pool has no memory left; and whenever `f`
/// panics.
///
/// ```
/// fn depth(n: u64) -> u64 {
///     if n == 0 { return 0 }
///     // Every 16 levels, make sure of 32 KiB more.
///     if n % 16 == 0 { procrt::stack::grow(32 * 1024, || 1 + depth(n - 1)) } else { 1 + depth(n - 1) }
/// }
/// let d = procrt::run(|| depth(20_000));
/// assert_eq!(d, 20_000);
/// ```
#[inline(always)]
pub fn grow<R, F: FnOnce() -> R>(bytes: usize, f: F) -> R {
    let limit = arch::stack_limit();
    if stack_pointer().saturating_sub(limit) >= bytes {
        return f();
    }
    grow_slow(bytes, f)
}

/// The crossing part of [`grow`].
#[inline(never)]
fn grow_slow<R, F: FnOnce() -> R>(bytes: usize, f: F) -> R {
    let Some((chain, pool)) = running_chain() else {
        return f();
    };
    let (seg, refused) = chain.link(pool, bytes, stack_pointer());

    /// What crosses the boundary: the closure in, its outcome out.
    struct Crossing<F, R> {
        f: Option<F>,
        out: Option<std::thread::Result<R>>,
        refused: Option<String>,
    }
    /// Runs on the new segment; catches everything so nothing unwinds
    /// through `procrt_call_on_segment`.
    unsafe extern "C" fn on_segment<F: FnOnce() -> R, R>(arg: *mut u8) {
        // SAFETY: `arg` is the Crossing in grow_slow's frame, which waits
        // for this call to return.
        let c = unsafe { &mut *arg.cast::<Crossing<F, R>>() };
        let f = c.f.take().expect("closure crossed twice");
        c.out = Some(match c.refused.take() {
            // Over the limit: raise the panic here, where there is room
            // for the hook, instead of running f.
            Some(msg) => catch_unwind(move || -> R { panic!("{msg}") }),
            None => catch_unwind(AssertUnwindSafe(f)),
        });
    }

    let mut crossing = Crossing {
        f: Some(f),
        out: None,
        refused,
    };
    let old_limit = arch::stack_limit();
    // SAFETY: 1. the slot now describes the segment we are about to run on.
    // 2. `seg` was just linked: its usable area is ours, its top 16-byte
    // aligned. 3. on_segment never unwinds (it catches), and `crossing`
    // outlives the call.
    unsafe {
        arch::set_stack_limit(seg.limit());
        procrt_call_on_segment(
            (&mut crossing as *mut Crossing<F, R>).cast(),
            on_segment::<F, R>,
            seg.top(),
        );
        arch::set_stack_limit(old_limit);
    }
    // Still the same proc (a proc's grow returns on the proc that called
    // it), so the same chain and pool.
    chain.unlink(pool);
    match crossing.out.expect("segment call returned no outcome") {
        Ok(v) => v,
        Err(payload) => resume_unwind(payload),
    }
}

/// The running proc's stack use, or `None` outside procs.
///
/// ```
/// procrt::run(|| {
///     let u = procrt::stack::usage().unwrap();
///     assert_eq!(u.segments, 1);
///     let inner = procrt::stack::grow(1 << 20, || procrt::stack::usage().unwrap());
///     assert_eq!(inner.segments, 2);
///     assert!(inner.used_bytes > u.used_bytes);
/// });
/// ```
pub fn usage() -> Option<StackUsage> {
    let (chain, _) = running_chain()?;
    Some(chain.usage(stack_pointer()))
}
