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
//! The runtime's own upkeep, which runs on whichever proc's stack the
//! scheduler is on (periodic timer, I/O and hibernation checks), uses
//! `try_grow` instead: where `grow` would panic because no segment can be
//! had (the limit, an exhausted pool, the kernel's map count), it returns
//! `None` and the check waits for a later pick. A panic there would land
//! in a proc that asked for nothing, or, on the way out of a proc that has
//! ended, reach no one and abort the process.
//!
//! The stack layer does not know procs: the scheduler records the running
//! proc's chain in a thread-local at every switch (`set_running_chain`), and
//! `grow` reads it from there.

use super::pool::{Segment, StackPool};
use crate::arch;
use std::cell::Cell;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Default per-proc stack limit: the total size of a proc's chain.
pub const DEFAULT_MAX_STACK: usize = 8 << 20;

/// Stack that runtime entry points (spawn, yield, park, join) make sure of
/// before they run: a proc on the smallest segment can call every one.
pub(crate) const ENTRY_STACK: usize = 2048;

/// Size of the segment an over-limit `grow` raises its panic on: room for
/// the panic hook (which may capture a backtrace) and the unwinder.
const OVERDRAFT: usize = 256 * 1024;

thread_local! {
    /// The running proc's chain, or null on a thread's own stack. Kept
    /// current by the scheduler at every switch (one store), like the limit
    /// slot is kept by the switch itself.
    static RUNNING: Cell<*const Chain> = const { Cell::new(std::ptr::null()) };
}

/// Records the chain of the context about to run (null: not a proc).
#[inline(always)]
pub(crate) fn set_running_chain(c: *const Chain) {
    RUNNING.with(|r| r.set(c));
}

/// A proc's stack: the segments it runs on, linked through their headers,
/// newest first, plus one spare.
///
/// `current` is the segment the proc runs on (or ran on when it was
/// switched out); following the `prev` links of segment headers from it
/// reaches `first`. `depth` counts the segments on that path; `reserved`
/// sums their sizes and never exceeds `max` (except for one overdraft
/// segment while an over-limit panic is raised). A `spare_size` of 0 means
/// no spare.
#[derive(Debug)]
pub(crate) struct Chain {
    /// The segment the proc started on.
    first: Segment,
    /// The newest segment.
    current: Cell<Segment>,
    /// Base of the segment released last, kept for the next growth.
    spare_base: Cell<usize>,
    /// Its size; 0 when there is no spare.
    spare_size: Cell<usize>,
    /// Segments from `first` to `current`, inclusive.
    depth: Cell<usize>,
    /// Bytes of those segments.
    reserved: Cell<usize>,
    /// Most bytes the chain may hold.
    max: usize,
    /// Bytes of every segment that are not usable above its limit: guard
    /// page, header, limit margin.
    overhead: usize,
    /// The pool the segments come from (the runtime's, which outlives
    /// every live chain).
    pool: *mut StackPool,
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
    /// A chain of one segment from `pool`, limited to `max` bytes. Inline:
    /// every spawn makes one, and a `Chain` returned through memory is
    /// read back wider than it was written (a store-forwarding stall).
    #[inline(always)]
    pub(crate) fn new(first: Segment, max: usize, pool: *mut StackPool) -> Chain {
        Chain {
            first,
            current: Cell::new(first),
            spare_base: Cell::new(0),
            spare_size: Cell::new(0),
            depth: Cell::new(1),
            reserved: Cell::new(first.size()),
            max: max.max(first.size()),
            overhead: first.size() - first.usable() + super::LIMIT_MARGIN,
            pool,
        }
    }

    /// The segment running now.
    pub(crate) fn current(&self) -> Segment {
        self.current.get()
    }

    /// The pool, for a few instructions that neither switch nor run user
    /// code.
    #[allow(clippy::mut_from_ref)]
    pub(super) fn pool(&self) -> &mut StackPool {
        // SAFETY: the pool outlives every live chain, is only touched from
        // this thread, and no other borrow of it is live while a chain
        // operation runs (they neither switch nor call out).
        unsafe { &mut *self.pool }
    }

    /// Takes the spare if it has `bytes` usable above its limit and fits
    /// under `max`.
    #[inline(always)]
    pub(super) fn take_spare(&self, bytes: usize) -> Option<Segment> {
        let size = self.spare_size.get();
        if size != 0 && size - self.overhead >= bytes && self.reserved.get() + size <= self.max {
            self.spare_size.set(0);
            let cur = self.current.get();
            return Some(cur.with_base_and_size(self.spare_base.get(), size));
        }
        None
    }

    /// Gets a new segment for `bytes` from the pool: twice the current one
    /// at least. Over the chain's limit, gets a small overdraft segment
    /// instead and returns the panic message the caller must raise on it
    /// (there, the panic hook has room; on the nearly full old segment it
    /// might not).
    ///
    /// # Panics
    ///
    /// When the pool has no segment at all.
    #[cold]
    #[inline(never)]
    pub(super) fn fresh_segment(&self, bytes: usize) -> (Segment, Option<String>) {
        if self.spare_size.get() != 0 {
            self.free_spare();
        }
        self.take_within_limit(
            self.grown_size(bytes),
            &format_args!("asked to grow by {bytes} bytes"),
            "grow the stack",
        )
    }

    /// The size of a new segment for `bytes`: room for them above its
    /// limit, and twice the current segment at least.
    fn grown_size(&self, bytes: usize) -> usize {
        let need = self
            .pool()
            .segment_size_for(bytes.saturating_add(self.overhead));
        need.max(self.current.get().size().saturating_mul(2))
    }

    /// Like [`fresh_segment`](Self::fresh_segment), for a caller that can
    /// do without: `None` when the segment would take the chain past its
    /// limit or the pool cannot hand one out (no memory left in the
    /// reservation, or the kernel refuses another guard page). The spare
    /// stays as it is either way (the next `pop` replaces it).
    #[cold]
    #[inline(never)]
    pub(super) fn try_fresh_segment(&self, bytes: usize) -> Option<Segment> {
        let size = self.grown_size(bytes);
        if self.reserved.get().saturating_add(size) > self.max {
            return None;
        }
        self.pool().alloc(size).ok()
    }

    /// Links `seg` on top of the chain, the current segment left at `sp`.
    #[inline(always)]
    pub(super) fn push(&self, seg: Segment, sp: usize) {
        seg.set_prev(Some((self.current.get(), sp)));
        self.current.set(seg);
        self.depth.set(self.depth.get() + 1);
        self.reserved.set(self.reserved.get() + seg.size());
    }

    /// Unlinks the current segment, keeping it as the spare.
    #[inline(always)]
    pub(super) fn pop(&self) {
        let seg = self.current.get();
        let Some((prev, _)) = seg.prev() else {
            crate::fatal(format_args!("stack chain: unlink of the first segment"))
        };
        self.current.set(prev);
        self.depth.set(self.depth.get() - 1);
        self.reserved.set(self.reserved.get() - seg.size());
        if self.spare_size.get() != 0 {
            self.free_spare();
        }
        self.spare_base.set(seg.base_addr());
        self.spare_size.set(seg.size());
    }

    /// Unlinks the current segment and gives it back to the pool, leaving
    /// the spare as it is (for segments taken with [`Chain::take_exact`]).
    pub(super) fn pop_to_pool(&self) {
        let seg = self.current.get();
        let Some((prev, _)) = seg.prev() else {
            crate::fatal(format_args!("stack chain: unlink of the first segment"))
        };
        self.current.set(prev);
        self.depth.set(self.depth.get() - 1);
        self.reserved.set(self.reserved.get() - seg.size());
        // SAFETY: the segment was unlinked above; nothing runs on it now
        // (the caller returned from it).
        unsafe { self.pool().free(seg) };
    }

    /// Gets a segment of exactly `size` bytes (a power of two) from the
    /// pool, bypassing the spare and the doubling rule; over the chain's
    /// limit, an overdraft segment and the panic message, as in
    /// [`fresh_segment`](Self::fresh_segment).
    ///
    /// # Panics
    ///
    /// When the pool has no segment at all.
    #[cold]
    pub(super) fn take_exact(&self, size: usize) -> (Segment, Option<String>) {
        self.take_within_limit(
            size,
            &format_args!("asked for a foreign segment of {size} bytes"),
            "get a foreign segment",
        )
    }

    /// Takes a segment of `size` bytes from the pool, or, when that would
    /// take the chain past its limit, an overdraft segment and the panic
    /// message (`asked` says what the proc asked for, `what` what failed).
    ///
    /// # Panics
    ///
    /// When the pool has no segment at all.
    fn take_within_limit(
        &self,
        size: usize,
        asked: &fmt::Arguments<'_>,
        what: &str,
    ) -> (Segment, Option<String>) {
        let pool = self.pool();
        let (size, refused) = if self.reserved.get().saturating_add(size) > self.max {
            let msg = format!(
                "procrt: stack limit of {} bytes exceeded (the proc holds {} bytes in {} \
                 segments and {asked}); raise it with Builder::max_stack",
                self.max,
                self.reserved.get(),
                self.depth.get(),
            );
            (pool.segment_size_for(OVERDRAFT), Some(msg))
        } else {
            (size, None)
        };
        let seg = pool
            .alloc(size)
            .unwrap_or_else(|e| panic!("procrt: cannot {what}: {e}"));
        (seg, refused)
    }

    /// Gives the spare back to the pool (the newer one replaces it).
    #[cold]
    fn free_spare(&self) {
        let spare = self
            .current
            .get()
            .with_base_and_size(self.spare_base.get(), self.spare_size.get());
        self.spare_size.set(0);
        // SAFETY: the spare is a dead segment of this chain's pool.
        unsafe { self.pool().free(spare) };
    }

    /// Returns every segment to the pool.
    ///
    /// # Safety
    ///
    /// The proc has ended: nothing runs on the chain any more.
    pub(crate) unsafe fn release(&self) {
        if self.spare_size.get() != 0 {
            self.free_spare();
        }
        let pool = self.pool();
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

/// The running proc's chain, or `None` on a thread's own stack.
#[inline(always)]
pub(super) fn running_chain() -> Option<&'static Chain> {
    let c = RUNNING.with(|r| r.get());
    // SAFETY: the scheduler sets RUNNING to the chain of the proc it
    // switches to (null otherwise); the chain lives in the proc's control
    // block, alive while the proc runs, and the reference is used only
    // while it does.
    (!c.is_null()).then(|| unsafe { &*c })
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
    if arch::stack_pointer().saturating_sub(limit) >= bytes {
        return f();
    }
    grow_slow(bytes, f)
}

/// What crosses a segment boundary: the closure in, its outcome out.
struct Crossing<F, R> {
    /// The closure; moved out on the new segment.
    f: std::mem::ManuallyDrop<F>,
    /// Its outcome, written on the new segment.
    out: std::mem::MaybeUninit<std::thread::Result<R>>,
    /// Set when the chain is over its limit: the panic to raise instead.
    refused: Option<String>,
}

/// Runs on the new segment; catches everything, so nothing unwinds through
/// `procrt_call_on_segment`.
///
/// # Safety
///
/// `arg` is a live `Crossing<F, R>` whose `f` has not been taken.
unsafe extern "C" fn on_segment<F: FnOnce() -> R, R>(arg: *mut u8) {
    // SAFETY: the caller's contract: grow_slow's Crossing, waiting for us.
    let c = unsafe { &mut *arg.cast::<Crossing<F, R>>() };
    // SAFETY: `f` is taken exactly once, here.
    let f = unsafe { std::mem::ManuallyDrop::take(&mut c.f) };
    let out = match c.refused.take() {
        None => catch_unwind(AssertUnwindSafe(f)),
        // Over the limit: raise the panic here, where there is room for
        // the hook, instead of running f.
        Some(msg) => {
            drop(f);
            catch_unwind(move || -> R { panic!("{msg}") })
        }
    };
    c.out.write(out);
}

/// The crossing part of [`grow`].
#[inline(never)]
fn grow_slow<R, F: FnOnce() -> R>(bytes: usize, f: F) -> R {
    let Some(chain) = running_chain() else {
        return f();
    };
    let (seg, refused) = match chain.take_spare(bytes) {
        Some(s) => (s, None),
        None => chain.fresh_segment(bytes),
    };
    run_and_unlink(chain, seg, refused, f)
}

/// The end of both slow paths: runs `f` on `seg` ([`run_linked`]), unlinks
/// `seg` as the spare, and resumes a panic of `f`.
#[inline(always)]
fn run_and_unlink<R, F: FnOnce() -> R>(
    chain: &Chain,
    seg: Segment,
    refused: Option<String>,
    f: F,
) -> R {
    let out = run_linked(chain, seg, refused, f);
    // Still the same proc: a proc's grow returns on the proc that called it.
    chain.pop();
    match out {
        Ok(v) => v,
        Err(payload) => resume_unwind(payload),
    }
}

/// Like [`grow`], for the runtime's own upkeep, which can wait for a
/// better moment: `None`, without running `f`, where `grow` would panic
/// because no segment can be had (the proc is at its stack limit, the
/// pool's reservation is used up, or the kernel refuses another guard page
/// at `vm.max_map_count`). A panic in `f` continues in the caller.
///
/// The scheduler runs its periodic checks (timers, I/O, hibernation
/// sweeps) on whichever proc's stack it is on, also on the way out of a
/// proc that has ended, where a panic could not be delivered to anyone: a
/// check that cannot get stack is put off to a later pick instead.
#[inline(always)]
pub(crate) fn try_grow<R, F: FnOnce() -> R>(bytes: usize, f: F) -> Option<R> {
    let limit = arch::stack_limit();
    if arch::stack_pointer().saturating_sub(limit) >= bytes {
        return Some(f());
    }
    try_grow_slow(bytes, f)
}

/// The crossing part of [`try_grow`].
#[inline(never)]
fn try_grow_slow<R, F: FnOnce() -> R>(bytes: usize, f: F) -> Option<R> {
    let Some(chain) = running_chain() else {
        return Some(f());
    };
    let seg = match chain.take_spare(bytes) {
        Some(s) => s,
        None => chain.try_fresh_segment(bytes)?,
    };
    Some(run_and_unlink(chain, seg, None, f))
}

/// Links `seg` to `chain`, runs `f` on it with the slot set to its limit
/// (or raises `refused` there instead), and puts the slot back. The caller
/// unlinks `seg` afterwards ([`Chain::pop`] or [`Chain::pop_to_pool`]) and
/// resumes a caught panic.
#[inline(always)]
pub(super) fn run_linked<R, F: FnOnce() -> R>(
    chain: &Chain,
    seg: Segment,
    refused: Option<String>,
    f: F,
) -> std::thread::Result<R> {
    chain.push(seg, arch::stack_pointer());
    let mut crossing = Crossing::<F, R> {
        f: std::mem::ManuallyDrop::new(f),
        out: std::mem::MaybeUninit::uninit(),
        refused,
    };
    let old_limit = arch::stack_limit();
    // SAFETY: 1. the slot now describes the segment we are about to run on.
    // 2. `seg` was just linked: its usable area is ours, its top 16-byte
    // aligned. 3. on_segment never unwinds (it catches), and `crossing`
    // outlives the call.
    unsafe {
        arch::set_stack_limit(seg.limit());
        arch::call_on_segment(
            (&mut crossing as *mut Crossing<F, R>).cast(),
            on_segment::<F, R>,
            seg.top(),
            seg.bottom(),
        );
        arch::set_stack_limit(old_limit);
    }
    // SAFETY: on_segment always writes the outcome before returning.
    unsafe { crossing.out.assume_init() }
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
    Some(running_chain()?.usage(arch::stack_pointer()))
}
