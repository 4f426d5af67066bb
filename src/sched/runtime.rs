//! The runtime: run queues, switching, spawn, exit, `block_on`, and drop.

use super::hibernate::{Hibernation, DEFAULT_HIBERNATE_AFTER};
use super::monitor::{self, ExitReason, LinkExit};
use super::proc::{new_proc, proc_main, Cancelled, ProcId, ProcRef, State};
use super::queue::RunQueue;
use super::timer;
use super::JoinHandle;
use crate::arch::{self, Context};
use crate::error::{BuildError, JoinError, SpawnError, SpawnErrorKind};
use crate::stack::{self, Chain, PoolConfig, PoolStats, StackPool};
use std::cell::{Cell, UnsafeCell};
use std::collections::BinaryHeap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest an idle runtime polls before it sleeps, by default (see
/// [`RuntimeBuilder::idle_spin`]).
pub const DEFAULT_IDLE_SPIN: Duration = Duration::from_micros(50);

/// After this many consecutive picks from the LIFO end, the next pick is
/// made from the yield queue (or the oldest started proc), so that no proc
/// waits behind a busy chain forever. 61, like Go's global-queue check: a
/// prime, so it does not resonate with loops of a round length.
const FAIR_STREAK: u32 = 61;

/// Default first segment of the root proc that `block_on` runs: it plays
/// the part of a thread's `main`, so it gets more room than an ordinary proc
/// (address space: only the pages it touches cost memory).
const ROOT_SEGMENT: usize = 1 << 20;

/// Stack the periodic timer check makes sure of: the wakes it makes, and a
/// hibernated sleeper's `RESTORE_STACK` (4 KiB) on top of them.
const TIMER_STACK: usize = 8 * 1024;

/// Rounds of resuming cancelled procs before a runtime's drop abandons the
/// ones that still block.
const CANCEL_ROUNDS: usize = 3;

/// Process-wide proc id counter: ids are unique across runtimes (the slot
/// in a `ProcId` is only a lookup hint). A runtime takes a block of
/// `ID_BLOCK` numbers at a time and hands them out itself, instead of a
/// locked read-modify-write (a full barrier) per spawn: skynet, 9
/// interleaved runs, 83.2 -> 81.7 ms. Numbers a runtime does not use are
/// skipped; 2^64 leaves room for that.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Sequence numbers a runtime takes from `NEXT_ID` at once.
const ID_BLOCK: u64 = 4096;

thread_local! {
    /// The runtime running on this thread (inside `block_on` or `drop`).
    static CURRENT_RT: Cell<*const Rt> = const { Cell::new(std::ptr::null()) };
}

/// The runtime running on this thread, or null.
#[inline(always)]
pub(crate) fn rt_ptr() -> *const Rt {
    CURRENT_RT.with(|c| c.get())
}

/// Runs `f` with the runtime running on this thread.
///
/// # Panics
///
/// Outside any runtime, with a message naming `what`.
#[inline(always)]
pub(crate) fn with_rt<R>(what: &str, f: impl FnOnce(&Rt) -> R) -> R {
    let p = rt_ptr();
    if p.is_null() {
        panic!("procrt: {what} called outside a procrt runtime (use Runtime::block_on)");
    }
    // SAFETY: CURRENT_RT is non-null only while `block_on` or `drop` of that
    // runtime is on this thread's stack, so the Rt is alive.
    f(unsafe { &*p })
}

/// The state of one runtime, shared by raw pointer with its procs. Only
/// touched from its own thread; every `UnsafeCell` is borrowed for a few
/// instructions that neither switch nor call user code.
pub(crate) struct Rt {
    /// The stack segments.
    pool: UnsafeCell<StackPool>,
    /// The context of the thread's own stack (the scheduler loop).
    sched_ctx: Context,
    /// The running proc; `None` on the scheduler's stack.
    current: Cell<Option<ProcRef>>,
    /// Spawned and woken procs: pushed and popped at the front.
    lifo: RunQueue,
    /// Procs that yielded: pushed at the back, popped at the front.
    fifo: RunQueue,
    /// Consecutive picks from the front of `lifo`.
    streak: Cell<u32>,
    /// A proc that ended and whose segment the next context reaps.
    zombie: Cell<Option<ProcRef>>,
    /// Every live proc (not yet reaped), by slot; a `ProcId` carries its
    /// proc's slot, so `lookup` is one index and one compare.
    live: UnsafeCell<Vec<Option<ProcRef>>>,
    /// Free slots of `live`.
    free_slots: UnsafeCell<Vec<usize>>,
    /// Number of live procs.
    live_count: Cell<usize>,
    /// The largest `live_count` has been.
    peak_live: Cell<usize>,
    /// Default first segment size of a new proc.
    first_segment: usize,
    /// Default stack limit of a new proc.
    max_stack: usize,
    /// First segment size of block_on's root proc.
    root_segment: usize,
    /// The runtime is being dropped.
    shutting_down: Cell<bool>,
    /// The id of the proc `block_on` is running, if any.
    root: Cell<Option<ProcId>>,
    /// Armed (and stale) timers, earliest first.
    timers: UnsafeCell<BinaryHeap<timer::Entry>>,
    /// Last timer `seq` handed out.
    timer_seq: Cell<u64>,
    /// Picks since the timers were last checked.
    ticks: Cell<u32>,
    /// The next sequence number of this runtime's block, and the block's
    /// end (see `NEXT_ID`).
    next_seq: Cell<u64>,
    seq_end: Cell<u64>,
    /// The I/O driver (epoll, injection queue), opened on first use.
    driver: super::driver::Driver,
    /// Stacks of procs that rest long, given back (see `hibernate.rs`).
    hibernation: Hibernation,
}

/// A single-threaded scheduler of procs and the stack pool they run on.
///
/// Everything runs on the thread that calls [`block_on`](Runtime::block_on):
/// procs need not be `Send`. A `Runtime` is neither `Send` nor `Sync`.
///
/// ```
/// let rt = procrt::Runtime::new().unwrap();
/// let sum = rt.block_on(|| {
///     let hs: Vec<_> = (1..=10u64).map(|i| procrt::spawn(move || i * i).unwrap()).collect();
///     hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
/// });
/// assert_eq!(sum, 385);
/// ```
///
/// # Dropping
///
/// Procs still alive when the runtime is dropped are cancelled: a proc that
/// never started has its closure dropped; a started one is resumed at the
/// point where it blocked with a panic that unwinds its stack, so its
/// destructors run; its `JoinHandle` then yields [`JoinError::Cancelled`].
/// A proc that blocks again while unwinding (a destructor that parks) is
/// resumed up to three times; after that it is abandoned: its stack is
/// leaked, never reused, and a line on stderr says so.
pub struct Runtime {
    /// Boxed so its address, held by procs, never moves.
    rt: Box<Rt>,
    /// Not Send, not Sync.
    _not_send: PhantomData<*const ()>,
}

/// Settings for a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeBuilder {
    pool: PoolConfig,
    first_segment: usize,
    max_stack: usize,
    root_segment: usize,
    hibernate_after: Option<Duration>,
    idle_spin: Duration,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            pool: PoolConfig::default(),
            first_segment: stack::DEFAULT_SEGMENT,
            max_stack: stack::DEFAULT_MAX_STACK,
            root_segment: ROOT_SEGMENT,
            // Fuzzing builds run under ASan, which would see the copy of a
            // stack (its redzones) as a bad read.
            hibernate_after: if cfg!(fuzzing) {
                None
            } else {
                Some(DEFAULT_HIBERNATE_AFTER)
            },
            idle_spin: DEFAULT_IDLE_SPIN,
        }
    }
}

impl RuntimeBuilder {
    /// Default settings: guarded segments, 64 KiB first segments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size of a new proc's first segment (address space; only touched
    /// pages cost memory). Rounded up to a power of two, at least
    /// [`MIN_SEGMENT_GUARDED`](crate::stack::MIN_SEGMENT_GUARDED) (8 KiB) in
    /// guarded mode and
    /// [`MIN_SEGMENT_UNGUARDED`](crate::stack::MIN_SEGMENT_UNGUARDED) (4 KiB)
    /// without guard pages.
    pub fn first_segment_size(mut self, bytes: usize) -> Self {
        self.first_segment = bytes;
        self
    }

    /// Default stack limit of a proc: the most bytes its chain of segments
    /// may hold (default 8 MiB, like a thread's). Growing past it panics in
    /// that proc. [`Builder::max_stack`](crate::Builder::max_stack) sets it
    /// per proc.
    pub fn max_stack(mut self, bytes: usize) -> Self {
        self.max_stack = bytes;
        self
    }

    /// First segment size of the root proc that
    /// [`block_on`](Runtime::block_on) runs (default 1 MiB, like a small
    /// `main` thread; only touched pages cost memory). It is kept between
    /// the first segment size and a quarter of the reservation.
    pub fn root_stack_size(mut self, bytes: usize) -> Self {
        self.root_segment = bytes;
        self
    }

    /// How long a proc must wait in a channel operation (`recv`, a `send`
    /// on a full channel, `select`), for I/O readiness, or in `sleep`,
    /// before the runtime may *hibernate* its stack: copy the few hundred
    /// live bytes to the heap and give the stack's pages back to the
    /// kernel, until a wake puts them back (default
    /// [`DEFAULT_HIBERNATE_AFTER`], half a second; `None`: never). An idle
    /// actor then costs about a kilobyte instead of a page; waking a
    /// hibernated one costs a page fault and the copy back, about 1.5 µs.
    /// `park`, `park_timeout`, `join` and `spawn_blocking` never hibernate.
    ///
    /// Code that lets another proc or thread read or write a proc's stack
    /// (through a raw pointer) while that proc waits in one of those must
    /// turn hibernation off: the bytes are elsewhere meanwhile.
    ///
    /// ```
    /// use std::time::Duration;
    /// let rt = procrt::Runtime::builder()
    ///     .hibernate_after(Some(Duration::from_millis(20)))
    ///     .build()
    ///     .unwrap();
    /// let n = rt.block_on(|| {
    ///     let (tx, rx) = procrt::chan::channel::<u32>();
    ///     let h = procrt::spawn(move || rx.recv().unwrap()).unwrap();
    ///     procrt::sleep(Duration::from_millis(100)); // it rests in recv
    ///     let n = procrt::hibernated_procs();
    ///     tx.send(7).unwrap();
    ///     assert_eq!(h.join().unwrap(), 7);
    ///     n
    /// });
    /// assert_eq!(n, 1);
    /// ```
    pub fn hibernate_after(mut self, rest: Option<Duration>) -> Self {
        self.hibernate_after = rest;
        self
    }

    /// Longest an idle runtime polls for I/O before it goes to sleep in
    /// the kernel (default [`DEFAULT_IDLE_SPIN`], 50 µs; `Duration::ZERO`:
    /// never). It spins only when its last wait was shorter than this, so
    /// that the next event is likely to come within the spin: a ping-pong
    /// over a socket then skips a sleep and a wake-up per message (on the
    /// test machine, an echo round trip over loopback fell from about 60 to
    /// 10 µs), while a runtime whose events come further apart never spins.
    pub fn idle_spin(mut self, spin: Duration) -> Self {
        self.idle_spin = spin;
        self
    }

    /// Bytes of address space to reserve for all stacks. Default: 64 GiB on
    /// 64-bit targets, 1 GiB on 32-bit ones (halved until the kernel
    /// accepts it).
    pub fn reservation(mut self, bytes: usize) -> Self {
        self.pool.reservation = bytes;
        self.pool.default_reservation = false;
        self
    }

    /// High-water mark of the cache of released segments, in bytes
    /// (default 64 MiB). Segments released beyond it give their memory back
    /// to the kernel.
    pub fn cache_limit(mut self, bytes: usize) -> Self {
        self.pool.cache_limit = bytes;
        self
    }

    /// Drops guard pages: segments cost no kernel mappings, so millions of
    /// procs can be alive at once (guarded mode stops near 32k, at
    /// `vm.max_map_count`).
    ///
    /// # Safety
    ///
    /// Nothing then detects a stack overflow: a proc that runs past the
    /// bottom of its segment writes into whatever block lies below it,
    /// another proc's stack or the pool's bookkeeping. The caller promises
    /// that every proc stays within its segment (for instance by calling
    /// only code whose stack use is known to fit the segment size chosen).
    pub unsafe fn unguarded(mut self) -> Self {
        self.pool.guarded = false;
        self
    }

    /// Reserves the stack pool and makes the runtime.
    pub fn build(self) -> Result<Runtime, BuildError> {
        let min = if self.pool.guarded {
            stack::MIN_SEGMENT_GUARDED
        } else {
            stack::MIN_SEGMENT_UNGUARDED
        };
        if self.first_segment > self.pool.reservation {
            return Err(BuildError::new(format!(
                "first segment size {} exceeds the reservation of {} bytes",
                self.first_segment, self.pool.reservation
            )));
        }
        let pool = StackPool::new(self.pool).map_err(|e| BuildError::new(e.to_string()))?;
        let first_segment = pool.segment_size_for(self.first_segment.max(min));
        let quarter = (pool.stats().reserved_bytes / 4).max(first_segment);
        let root_segment = pool.segment_size_for(self.root_segment.min(quarter).max(first_segment));
        stack::install_overflow_handler();
        prime_unwinder();
        stack::set_reporter(super::report_overflow);
        Ok(Runtime {
            rt: Box::new(Rt {
                pool: UnsafeCell::new(pool),
                sched_ctx: Context::current(),
                current: Cell::new(None),
                lifo: RunQueue::default(),
                fifo: RunQueue::default(),
                streak: Cell::new(0),
                zombie: Cell::new(None),
                live: UnsafeCell::new(Vec::new()),
                free_slots: UnsafeCell::new(Vec::new()),
                live_count: Cell::new(0),
                peak_live: Cell::new(0),
                first_segment,
                max_stack: self.max_stack,
                root_segment,
                shutting_down: Cell::new(false),
                root: Cell::new(None),
                timers: UnsafeCell::new(BinaryHeap::new()),
                timer_seq: Cell::new(0),
                ticks: Cell::new(0),
                next_seq: Cell::new(0),
                seq_end: Cell::new(0),
                driver: super::driver::Driver::new(self.idle_spin),
                hibernation: Hibernation::new(self.hibernate_after),
            }),
            _not_send: PhantomData,
        })
    }
}

/// Unwinds once, on the caller's own (large) stack, when the first runtime
/// is built. The first unwind of a process resolves `_Unwind_RaiseException`
/// and friends through the dynamic linker's lazy binding, whose resolver
/// saves the whole XSAVE area on the stack (several KiB): done for the
/// first time by a proc panicking on a small segment, that overflowed it.
/// `resume_unwind` runs no panic hook, so this prints nothing.
fn prime_unwinder() {
    static PRIMED: std::sync::Once = std::sync::Once::new();
    PRIMED.call_once(|| {
        let _ = std::panic::catch_unwind(|| std::panic::resume_unwind(Box::new(())));
    });
}

/// Restores `CURRENT_RT` when `block_on` or `drop` leaves, even by panic.
struct EnterGuard(*const Rt);

impl EnterGuard {
    fn enter(rt: &Rt) -> EnterGuard {
        EnterGuard(CURRENT_RT.with(|c| c.replace(rt)))
    }
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        CURRENT_RT.with(|c| c.set(self.0));
    }
}

impl Runtime {
    /// A runtime with default settings (see [`RuntimeBuilder`]).
    pub fn new() -> Result<Runtime, BuildError> {
        RuntimeBuilder::new().build()
    }

    /// Settings for a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::new()
    }

    /// Runs `f` as this runtime's root proc, and runs every proc it spawns,
    /// until `f` returns; returns its value. A panic in `f` is resumed here.
    /// The root proc is named `"block_on"` and, playing the part of a
    /// thread's `main`, starts on a larger segment than other procs
    /// ([`RuntimeBuilder::root_stack_size`], 1 MiB by default).
    /// Procs still alive when `f` returns stay in the runtime: a later
    /// `block_on` runs them on, and dropping the runtime cancels them.
    ///
    /// # Panics
    ///
    /// When called from inside a proc, when the root proc's stack cannot be
    /// allocated, and when every proc is parked with nothing left that could
    /// wake one (a deadlock).
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        assert!(
            rt_ptr().is_null(),
            "procrt: block_on called inside a proc or another block_on; use spawn and join"
        );
        let rt = &*self.rt;
        let _enter = EnterGuard::enter(rt);
        let root = rt
            .spawn_proc(f, Some(Rc::from("block_on")), rt.root_segment, rt.max_stack)
            .unwrap_or_else(|e| panic!("procrt: cannot start the root proc: {e}"));
        /// Forgets the root when block_on leaves, even by panic.
        struct RootGuard<'a>(&'a Cell<Option<ProcId>>);
        impl Drop for RootGuard<'_> {
            fn drop(&mut self) {
                self.0.set(None);
            }
        }
        rt.root.set(Some(root.id()));
        let _root = RootGuard(&rt.root);
        while !root.is_finished() {
            match rt.next_runnable() {
                Some(p) => rt.resume_from_sched(p),
                // Nothing to run: wait in the driver (see driver.rs).
                None => {
                    if !rt.idle() {
                        panic!(
                            "procrt: deadlock: every proc is parked and nothing can wake one \
                             (root proc {} never finished)",
                            root.id()
                        )
                    }
                }
            }
        }
        match root.join() {
            Ok(v) => v,
            Err(JoinError::Panicked(p)) => std::panic::resume_unwind(p),
            Err(JoinError::Cancelled) => unreachable!("root proc cancelled while block_on runs"),
            Err(JoinError::Exited(reason)) => {
                panic!("procrt: the root proc was ended by an exit signal: {reason}")
            }
        }
    }

    /// A `Send + Clone` handle through which other OS threads spawn procs
    /// on this runtime and wake its procs (see [`Handle`](crate::Handle)).
    /// Opens the runtime's wake-up eventfd and epoll instance if not yet
    /// open: fails only when the process is out of file descriptors.
    pub fn handle(&self) -> std::io::Result<crate::Handle> {
        let rt = &*self.rt;
        rt.driver().remote().map(crate::Handle::from_remote)
    }

    /// Counters of the stack pool.
    pub fn pool_stats(&self) -> PoolStats {
        // SAFETY: no proc is running (we are not in block_on: `&self` here
        // is outside it, or on a proc's stack where the pool is not
        // borrowed across this call).
        unsafe { (*self.rt.pool.get()).stats() }
    }

    /// Procs whose stacks are hibernated now: they waited for longer than
    /// [`hibernate_after`](RuntimeBuilder::hibernate_after).
    pub fn hibernated_procs(&self) -> usize {
        self.rt.hibernation.count()
    }

    /// Procs alive now (spawned and not yet ended).
    pub fn live_procs(&self) -> usize {
        self.rt.live_count.get()
    }

    /// The most procs that have been alive at once.
    pub fn peak_live_procs(&self) -> usize {
        self.rt.peak_live.get()
    }

    /// Gives the memory of cached segments back to the kernel.
    pub fn trim_stacks(&self) {
        // SAFETY: the pool is borrowed only for this call, which neither
        // switches nor runs user code.
        unsafe { (*self.rt.pool.get()).trim() }
    }
}

impl Rt {
    /// The running proc, `None` on the scheduler's stack.
    #[inline(always)]
    pub(crate) fn current(&self) -> Option<ProcRef> {
        self.current.get()
    }

    /// Records the context about to run: the proc (or `None` for the
    /// scheduler's stack), and its chain for `stack::grow`.
    #[inline(always)]
    fn set_current(&self, p: Option<ProcRef>) {
        self.current.set(p);
        stack::set_running_chain(p.map_or(std::ptr::null(), |p| &p.get().chain as *const Chain));
        crate::toc::set_running_unit(p.map(|p| &p.get().unit));
    }

    /// The pool, for the duration of `f` (which must not switch).
    fn with_pool<R>(&self, f: impl FnOnce(&mut StackPool) -> R) -> R {
        // SAFETY: only this thread touches the pool, and no caller switches
        // or runs user code while borrowing it.
        f(unsafe { &mut *self.pool.get() })
    }

    /// Default first segment size.
    pub(crate) fn first_segment(&self) -> usize {
        self.first_segment
    }

    /// The pool, for chains to keep (it outlives every live proc).
    pub(crate) fn pool_ptr(&self) -> *mut StackPool {
        self.pool.get()
    }

    /// Default stack limit.
    pub(crate) fn max_stack(&self) -> usize {
        self.max_stack
    }

    /// The I/O driver.
    #[inline(always)]
    pub(super) fn driver(&self) -> &super::driver::Driver {
        &self.driver
    }

    /// Spawns a detached proc from a closure another thread sent, without
    /// starting it at once even if a proc is running: the injection queue
    /// is drained inside `next_runnable`, in the middle of a switch.
    pub(super) fn spawn_queued(&self, f: Box<dyn FnOnce() + Send>) -> Result<(), SpawnError> {
        let running = self.current.replace(None);
        let r = self.spawn_proc(f, None, self.first_segment, self.max_stack);
        self.current.set(running);
        r.map(drop)
    }

    /// The earliest armed (or stale) timer's deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        // SAFETY: touched only by this thread, briefly, without switching.
        unsafe { (*self.timers.get()).peek().map(|e| e.deadline) }
    }

    /// Wakes the procs whose timers are due at `now`.
    #[cold]
    pub(super) fn fire_timers(&self, now: Instant) {
        // Woken procs go to the LIFO front, so the due batch is woken
        // latest deadline first: the earliest ends up in front and runs
        // first (sleepers due together wake in deadline order).
        let mut due = Vec::new();
        {
            // SAFETY: as in next_deadline; `fire` does not touch the heap.
            let heap = unsafe { &mut *self.timers.get() };
            while heap.peek().is_some_and(|e| e.deadline <= now) {
                let e = heap.pop().expect("peeked entry");
                if let Some(p) = e.fire() {
                    due.push(p);
                }
            }
        }
        for p in due.into_iter().rev() {
            self.wake(p);
        }
    }

    /// Arms a timer for the running proc `me`; returns its seq.
    fn arm_timer(&self, me: ProcRef, deadline: Instant) -> u64 {
        let seq = self.timer_seq.get() + 1;
        self.timer_seq.set(seq);
        me.get().timer.set(seq);
        me.get().timed_out.set(false);
        let entry = timer::Entry {
            deadline,
            seq,
            proc: me.retain(),
        };
        // SAFETY: as in next_deadline.
        unsafe { (*self.timers.get()).push(entry) };
        seq
    }

    /// Parks the running proc until a wake or until `deadline`, whichever
    /// comes first; returns true if the deadline passed. Returns at once
    /// (false) if a wake token was waiting. `parked` as in
    /// [`park_proc`](Self::park_proc).
    pub(crate) fn park_until(&self, deadline: Instant, parked: State) -> bool {
        debug_assert!(matches!(parked, State::Parked | State::Resting));
        let me = self
            .current
            .get()
            .expect("procrt: park called outside a proc");
        let p = me.get();
        if p.cancel.get() {
            self.cancel_point(me);
            return false;
        }
        if p.notified.replace(false) {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
        self.arm_timer(me, deadline);
        p.state.set(parked);
        self.switch_from(me);
        // Disarm: a stale entry is dropped when it comes up.
        p.timer.set(0);
        let timed_out = p.timed_out.replace(false);
        if p.cancel.get() {
            self.cancel_point(me);
        }
        timed_out
    }

    /// Picks the next proc to run; see the scheduling policy in `mod.rs`.
    #[inline]
    pub(crate) fn next_runnable(&self) -> Option<ProcRef> {
        let ticks = self.ticks.get().wrapping_add(1);
        self.ticks.set(ticks);
        if ticks % timer::CHECK_EVERY == 0 {
            self.periodic_checks();
        }
        let streak = self.streak.get();
        if streak >= FAIR_STREAK {
            return self.fair_pick();
        }
        if let Some(p) = self.lifo.pop_front() {
            self.streak.set(streak + 1);
            return Some(p);
        }
        self.streak.set(0);
        self.fifo.pop_front()
    }

    /// Every `CHECK_EVERY` picks: fires the timers that are due, if any are
    /// armed, and polls the I/O driver (see `io_tick`).
    ///
    /// These run on the stack of the proc that is switching away, also of
    /// one that has ended (from `exit`), where a panic would reach no one:
    /// each check that needs more stack gets it with `stack::try_grow`, and
    /// waits for a later pick (or for `idle`, on the scheduler's own stack)
    /// when no segment can be had (the pool or `vm.max_map_count` is used
    /// up). Firing timers may put back a hibernated proc's stack, which
    /// takes `RESTORE_STACK` of its own.
    #[cold]
    fn periodic_checks(&self) {
        if let Some(deadline) = self.next_deadline() {
            let now = Instant::now();
            // Only when one is due: a crossing leaves the proc a spare
            // segment, which checks with nothing to do should not cost.
            if deadline <= now {
                let _ = stack::try_grow(TIMER_STACK, || self.fire_timers(now));
            }
        }
        self.io_tick();
        self.hibernation_tick(self.ticks.get());
    }

    /// The pick after a streak of `FAIR_STREAK` LIFO picks: the FIFO head,
    /// else the oldest started LIFO entry (not one waiting inside spawn),
    /// else the LIFO front as usual. Starts a new streak.
    #[cold]
    fn fair_pick(&self) -> Option<ProcRef> {
        self.streak.set(0);
        if let Some(p) = self.fifo.pop_front() {
            return Some(p);
        }
        if self.lifo.has_two()
            && self
                .lifo
                .back()
                .is_some_and(|p| p.get().started.get() && !p.get().in_spawn.get())
        {
            return self.lifo.pop_back();
        }
        let p = self.lifo.pop_front()?;
        self.streak.set(1);
        Some(p)
    }

    /// Makes a parked proc runnable (LIFO), or leaves the park token for a
    /// proc that is not parked.
    #[inline]
    pub(crate) fn wake(&self, p: ProcRef) {
        if self.make_runnable(p) {
            self.lifo.push_front(p);
        }
    }

    /// Like [`wake`](Self::wake), but a parked proc goes to the back of
    /// the FIFO queue, behind every runnable proc: the I/O driver's wake,
    /// so that procs whose fds became ready are served in the order they
    /// became ready, and a stream of fresh readiness cannot keep pushing
    /// older ones back (as LIFO wakes would: the p99 of an echo server).
    pub(crate) fn wake_fifo(&self, p: ProcRef) {
        if self.make_runnable(p) {
            self.fifo.push_back(p);
        }
    }

    /// The state change of a wake: a parked proc becomes runnable (true:
    /// the caller queues it) and the top of its stack is prefetched (see
    /// "Scheduling policy" in `mod.rs`), or put back if it was hibernated;
    /// a running or runnable proc gets the park token; an ended one
    /// nothing.
    #[inline(always)]
    fn make_runnable(&self, p: ProcRef) -> bool {
        let pr = p.get();
        let state = pr.state.get();
        if state.is_parked() {
            if state == State::Hibernated {
                return self.wake_hibernated(p);
            }
            pr.state.set(State::Runnable);
            pr.ctx.prefetch();
            return true;
        }
        if state != State::Done {
            // Running or Runnable.
            pr.notified.set(true);
        }
        false
    }

    /// From the scheduler's stack: run `p` until the CPU comes back here.
    fn resume_from_sched(&self, p: ProcRef) {
        p.get().state.set(State::Running);
        self.set_current(Some(p));
        // SAFETY: `p` is live and suspended (it was queued), and we are the
        // running context: the scheduler's own stack.
        unsafe { arch::switch(&self.sched_ctx, &p.get().ctx) };
        self.after_switch();
    }

    /// Switches away from the running proc `me`, whose state the caller has
    /// set (Parked or Runnable), to the next runnable proc or to the
    /// scheduler. Returns when `me` is resumed.
    #[inline(always)]
    fn switch_from(&self, me: ProcRef) {
        let next = if arch::DIRECT_SWITCH {
            self.next_runnable()
        } else {
            None
        };
        let to = match next {
            Some(n) if n == me => {
                me.get().state.set(State::Running);
                return;
            }
            Some(n) => {
                n.get().state.set(State::Running);
                self.set_current(Some(n));
                &n.get().ctx
            }
            None => {
                self.set_current(None);
                &self.sched_ctx
            }
        };
        // SAFETY: `me` is the running proc; `to` is a live suspended context
        // (a queued proc, or the scheduler's stack, which is suspended
        // whenever a proc runs).
        unsafe { arch::switch(&me.get().ctx, to) };
        self.after_switch();
    }

    /// Run by every context right after it is switched into: reap the proc
    /// that ended just before.
    #[inline(always)]
    pub(crate) fn after_switch(&self) {
        if let Some(z) = self.zombie.take() {
            self.reap(z);
        }
    }

    /// Frees an ended proc's segment and drops the runtime's count on it.
    #[cold]
    fn reap(&self, z: ProcRef) {
        let p = z.get();
        if !p.released.replace(true) {
            // SAFETY: the proc has ended and nothing runs on its chain.
            unsafe { p.chain.release() };
        }
        self.remove_live(z);
        // SAFETY: the runtime's count, taken at spawn, released once here.
        unsafe { z.release() };
    }

    /// A fresh proc sequence number: unique in the process, increasing
    /// within this runtime.
    #[inline(always)]
    fn next_seq(&self) -> u64 {
        let seq = self.next_seq.get();
        if seq == self.seq_end.get() {
            return self.next_seq_block();
        }
        self.next_seq.set(seq + 1);
        seq
    }

    /// `next_seq` with the block used up: takes the next one.
    #[cold]
    fn next_seq_block(&self) -> u64 {
        let seq = NEXT_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
        self.next_seq.set(seq + 1);
        self.seq_end.set(seq + ID_BLOCK);
        seq
    }

    /// Puts `p` in the live table and returns its slot. `new_proc` calls it
    /// before it writes the control block, whose id names the slot: it
    /// only stores the pointer.
    #[inline(always)]
    pub(crate) fn insert_live(&self, p: ProcRef) -> usize {
        // SAFETY: touched only by this thread, briefly, without switching.
        let (live, free) = unsafe { (&mut *self.live.get(), &mut *self.free_slots.get()) };
        let slot = match free.pop() {
            Some(s) => {
                live[s] = Some(p);
                s
            }
            None => {
                if live.len() > u32::MAX as usize {
                    // A ProcId holds its slot in 32 bits.
                    crate::fatal(format_args!("more than 2^32 live procs"));
                }
                live.push(Some(p));
                live.len() - 1
            }
        };
        let n = self.live_count.get() + 1;
        self.live_count.set(n);
        self.peak_live.set(self.peak_live.get().max(n));
        slot
    }

    /// The live proc with this id in this runtime: O(1), by the slot the id
    /// carries. `None` if it ended (or is ending), or belongs to another
    /// runtime.
    pub(crate) fn lookup(&self, id: ProcId) -> Option<ProcRef> {
        // SAFETY: touched only by this thread, briefly, without switching.
        let live = unsafe { &*self.live.get() };
        let p = (*live.get(id.slot as usize)?)?;
        (p.get().id == id && p.get().state.get() != State::Done).then_some(p)
    }

    /// Runs `f` on the procs in the live table's slots `from..`, at most
    /// `budget` slots; returns the slot after the last one looked at, or
    /// `None` when that was the table's end.
    pub(super) fn for_each_live_from(
        &self,
        from: usize,
        budget: usize,
        mut f: impl FnMut(ProcRef),
    ) -> Option<usize> {
        // SAFETY: touched only by this thread; `f` neither switches nor
        // spawns nor ends procs (the table does not change under it).
        let live = unsafe { &*self.live.get() };
        let to = from.saturating_add(budget).min(live.len());
        for p in live.get(from..to).unwrap_or(&[]).iter().flatten() {
            f(*p);
        }
        (to < live.len()).then_some(to)
    }

    /// Whether a proc is queued to run.
    pub(super) fn has_runnable(&self) -> bool {
        !self.lifo.is_empty() || !self.fifo.is_empty()
    }

    /// The hibernation state.
    #[inline(always)]
    pub(super) fn hibernation(&self) -> &Hibernation {
        &self.hibernation
    }

    /// The scheduler's pick counter.
    #[inline(always)]
    pub(super) fn ticks(&self) -> u32 {
        self.ticks.get()
    }

    /// The runtime is being dropped.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    fn remove_live(&self, p: ProcRef) {
        // SAFETY: as in insert_live.
        let (live, free) = unsafe { (&mut *self.live.get(), &mut *self.free_slots.get()) };
        let slot = p.get().slot.replace(usize::MAX);
        debug_assert!(live[slot] == Some(p), "live table out of step");
        live[slot] = None;
        free.push(slot);
        self.live_count.set(self.live_count.get() - 1);
    }

    /// Ends the running proc `me` for good: wakes its joiner, leaves it to be
    /// reaped, and picks the next context. Returns the [`arch::Exit`] that
    /// `me`'s entry function returns to leave for that context.
    ///
    /// # Safety
    ///
    /// `me` is the running proc, it is called from `me`'s entry function,
    /// and nothing on its stack needs dropping.
    #[inline]
    pub(crate) unsafe fn exit(&self, me: ProcRef) -> arch::Exit {
        let p = me.get();
        p.state.set(State::Done);
        if let Some(j) = p.joiner.take() {
            self.wake(j);
            // SAFETY: the count `join` took on its own proc for us.
            unsafe { j.release() };
        }
        debug_assert!(self.zombie.get().is_none(), "two zombies at once");
        self.zombie.set(Some(me));
        // The root's end goes back to block_on, which returns.
        let is_root = self.root.get() == Some(p.id);
        let next = if arch::DIRECT_SWITCH && !is_root {
            self.next_runnable()
        } else {
            None
        };
        let to = match next {
            Some(n) => {
                n.get().state.set(State::Running);
                self.set_current(Some(n));
                &n.get().ctx
            }
            None => {
                self.set_current(None);
                &self.sched_ctx
            }
        };
        // SAFETY: `me` is running and will never be resumed (the caller's
        // contract); `to` is a live suspended context, resumed when the
        // entry function returns.
        unsafe { arch::exit(&p.ctx, to) }
    }

    /// Parks the running proc until a [`wake`](Self::wake), in state
    /// `parked` (see [`park_proc`](Self::park_proc)). Returns at once if a
    /// wake came since the last park (the token).
    #[inline(always)]
    pub(crate) fn park_current(&self, parked: State) {
        let me = self
            .current
            .get()
            .expect("procrt: park called outside a proc");
        self.park_proc(me, parked);
    }

    /// [`park_current`](Self::park_current) for a caller that holds the
    /// running proc `me` already. `parked` is the state it waits in:
    /// `Parked`, or `Resting` where the caller promises that nothing
    /// outside the proc touches its stack until the wake (see
    /// `hibernate.rs`).
    #[inline(always)]
    pub(crate) fn park_proc(&self, me: ProcRef, parked: State) {
        debug_assert!(matches!(parked, State::Parked | State::Resting));
        let p = me.get();
        if p.cancel.get() {
            self.cancel_point(me);
            return;
        }
        if p.notified.replace(false) {
            return;
        }
        p.state.set(parked);
        self.switch_from(me);
        if p.cancel.get() {
            self.cancel_point(me);
        }
    }

    /// Puts the running proc at the back of the yield queue and runs others.
    pub(crate) fn yield_current(&self) {
        let Some(me) = self.current.get() else { return };
        if me.get().cancel.get() {
            self.cancel_point(me);
            return;
        }
        me.get().state.set(State::Runnable);
        self.fifo.push_back(me);
        self.switch_from(me);
        if me.get().cancel.get() {
            self.cancel_point(me);
        }
    }

    /// A cancelled proc reached a blocking point: unwind it, or, if it is
    /// already unwinding (a destructor blocks), leave it stuck for drop to
    /// abandon. Outside a drop, `cancel` means an exit signal from a linked
    /// proc (see `monitor.rs`): it is raised once, or dropped if the thread
    /// is panicking.
    #[cold]
    pub(crate) fn cancel_point(&self, me: ProcRef) {
        let p = me.get();
        if p.cancel_raised.get() {
            // Blocking again after the cancellation was raised: a
            // destructor blocks while unwinding (or the proc caught the
            // cancellation). Raising again could abort; leave it to drop.
            p.stuck.set(true);
            p.state.set(State::Parked);
            self.switch_from(me);
            return;
        }
        if !self.shutting_down.get() {
            // An exit signal. Cleared first, so that destructors blocking
            // while the proc unwinds block normally.
            p.cancel.set(false);
            let Some(reason) = monitor::take_pending(p) else {
                return;
            };
            if std::thread::panicking() {
                // A second panic during an unwind would abort.
                return;
            }
            p.cancel_raised.set(true);
            std::panic::resume_unwind(Box::new(LinkExit(reason)));
        }
        p.cancel_raised.set(true);
        std::panic::resume_unwind(Box::new(Cancelled));
    }

    /// Spawns a proc running `f` on a first segment of `segment` bytes.
    ///
    /// Inside a proc the new proc starts at once and the caller resumes when
    /// it first blocks, yields or ends (see the policy in `mod.rs`); from the
    /// scheduler's stack it is queued.
    pub(crate) fn spawn_proc<F, T>(
        &self,
        f: F,
        name: Option<Rc<str>>,
        segment: usize,
        max_stack: usize,
    ) -> Result<JoinHandle<T>, SpawnError>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        // A closure too big or too aligned for the top of the stack is boxed.
        let min_usable = self.with_pool(|p| p.min_segment()) / 4;
        if std::mem::size_of::<F>() > min_usable || std::mem::align_of::<F>() > 16 {
            let boxed = Box::new(f);
            return self.spawn_inline(boxed, name, segment, max_stack);
        }
        self.spawn_inline(f, name, segment, max_stack)
    }

    fn spawn_inline<F, T>(
        &self,
        f: F,
        name: Option<Rc<str>>,
        segment: usize,
        max_stack: usize,
    ) -> Result<JoinHandle<T>, SpawnError>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        if self.shutting_down.get() {
            return Err(SpawnError::new(SpawnErrorKind::ShuttingDown));
        }
        // The default size is one the pool hands out already (see `build`).
        let size = if segment == self.first_segment {
            segment
        } else {
            self.with_pool(|p| p.segment_size_for(segment))
        };
        let seg = self.with_pool(|p| p.alloc(size))?;
        // The closure sits at the top of the stack, the first frame below it.
        let closure = (seg.top() - std::mem::size_of::<F>()) & !15;
        let (limit, entry, arg): (usize, arch::EntryFn, *mut u8) =
            (seg.limit(), proc_main::<F, T>, closure as *mut u8);
        // A spawn inside a proc runs the child at once (direct switching
        // only); otherwise the child is queued.
        let parent = if arch::DIRECT_SWITCH {
            self.current.get()
        } else {
            None
        };
        // SAFETY: 1. [closure, top) lies in the fresh segment's usable area
        // (size_of F <= min_segment / 4) and is 16-byte aligned, enough for F
        // (align <= 16). 2. Below `closure` lies the rest of the same fresh
        // segment, for the frame `prepare` writes or the child's first
        // frames (the contract of both).
        let ctx = unsafe {
            std::ptr::write(closure as *mut F, f);
            match parent {
                Some(_) => Context::unprepared(closure, limit, entry, arg),
                None => Context::prepare(closure, limit, entry, arg),
            }
        };
        let seq = self.next_seq();
        // Also enters the proc in the live table.
        let p = new_proc::<F, T>(seq, name, self, ctx, seg, max_stack, arg);
        let handle = JoinHandle::from_ref(p);
        match parent {
            Some(me) => {
                // Start the child now; the parent waits at the LIFO front.
                me.get().state.set(State::Runnable);
                me.get().in_spawn.set(true);
                self.lifo.push_front(me);
                p.get().state.set(State::Running);
                self.set_current(Some(p));
                // SAFETY: `me` is running; `p`'s context was made by
                // `unprepared` with these arguments and never ran.
                unsafe { arch::start(&me.get().ctx, &p.get().ctx, closure, limit, entry, arg) };
                self.after_switch();
                me.get().in_spawn.set(false);
                if me.get().cancel.get() {
                    self.cancel_point(me);
                }
            }
            None => {
                self.lifo.push_front(p);
            }
        }
        Ok(handle)
    }

    /// Cancels every live proc (see `Runtime`'s "Dropping").
    fn shutdown(&self) {
        self.shutting_down.set(true);
        // Timers hold counts on procs; no cancelled proc waits for one.
        // SAFETY: touched only by this thread; nothing switches meanwhile.
        let timers = std::mem::take(unsafe { &mut *self.timers.get() });
        for e in timers {
            e.fire();
        }
        for round in 0..=CANCEL_ROUNDS {
            // Each snapshot entry holds a count: resuming one proc can end
            // and reap others further down the list.
            // SAFETY: a snapshot; the table is not borrowed across switches.
            let procs: Vec<ProcRef> = unsafe {
                (*self.live.get())
                    .iter()
                    .flatten()
                    .map(|p| p.retain())
                    .collect()
            };
            /// Releases the snapshot's counts when the round ends.
            struct Held(Vec<ProcRef>);
            impl Drop for Held {
                fn drop(&mut self) {
                    for p in self.0.drain(..) {
                        // SAFETY: the count taken for the snapshot.
                        unsafe { p.release() };
                    }
                }
            }
            let held = Held(procs);
            let procs = &held.0;
            if procs.is_empty() {
                break;
            }
            for p in procs {
                p.get().cancel.set(true);
            }
            // The queues are rebuilt below, as procs are resumed.
            self.lifo.clear();
            self.fifo.clear();
            for &p in procs {
                let pr = p.get();
                if pr.state.get() == State::Done || pr.slot.get() == usize::MAX {
                    continue;
                }
                if !pr.started.get() {
                    // SAFETY: never started: its closure is still on its
                    // live segment.
                    unsafe { pr.drop_unstarted() };
                    pr.set_error(JoinError::Cancelled);
                    pr.state.set(State::Done);
                    if let Some(w) = pr.watch.take() {
                        monitor::proc_ended(self, p, w, ExitReason::Cancelled);
                    }
                    if let Some(j) = pr.joiner.take() {
                        // SAFETY: the count `join` took for us.
                        unsafe { j.release() };
                    }
                    self.reap(p);
                    continue;
                }
                if round == CANCEL_ROUNDS || (pr.stuck.get() && round > 0) {
                    if round == CANCEL_ROUNDS {
                        eprintln!(
                            "procrt: proc {} still blocks while being cancelled; its stack is abandoned",
                            pr.id
                        );
                        pr.set_error(JoinError::Cancelled);
                        pr.state.set(State::Done);
                        if let Some(w) = pr.watch.take() {
                            monitor::proc_ended(self, p, w, ExitReason::Cancelled);
                        }
                        self.with_pool(|pool| pool.leak());
                        pr.released.set(true);
                        if let Some(j) = pr.joiner.take() {
                            // SAFETY: the count `join` took for us.
                            unsafe { j.release() };
                        }
                        self.remove_live(p);
                        // SAFETY: the runtime's count.
                        unsafe { p.release() };
                    }
                    continue;
                }
                pr.stuck.set(false);
                if pr.state.get() == State::Hibernated {
                    // Resumed without a wake: put its stack back first.
                    self.restore(p);
                }
                // Resume it; procs it wakes run too before we come back.
                self.resume_from_sched(p);
                while let Some(q) = self.next_runnable() {
                    self.resume_from_sched(q);
                }
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let rt = &*self.rt;
        let _enter = EnterGuard::enter(rt);
        rt.shutdown();
    }
}
