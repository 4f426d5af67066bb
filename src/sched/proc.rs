//! The proc control block and the code a proc starts and ends in.

use super::blocks;
use super::monitor::{self, ExitReason, LinkExit, Watch};
use super::queue::Link;
use super::runtime::{rt_ptr, Rt};
use crate::arch::Context;
use crate::error::JoinError;
use crate::stack::{Chain, Segment};
use std::alloc::Layout;
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::rc::Rc;

/// A proc's identity, unique within its process for the process's lifetime.
///
/// It is a process-wide sequence number, never reused, together with the
/// proc's slot in its runtime's table of live procs, so that the runtime
/// finds a proc by id in O(1) (see `monitor.rs`). Ids compare and order as
/// their sequence numbers: in spawn order among the procs of one runtime.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcId {
    /// From the process-wide counter; unique on its own.
    pub(crate) seq: u64,
    /// Index in the runtime's live table while the proc is alive.
    pub(crate) slot: u32,
}

impl ProcId {
    /// The number behind the id: unique within the process.
    pub fn as_u64(self) -> u64 {
        self.seq
    }
}

impl fmt::Debug for ProcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProcId").field(&self.seq).finish()
    }
}

impl fmt::Display for ProcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.seq)
    }
}

/// Where a proc is in its life.
///
/// # State
/// ```text
///   spawn ──> Runnable ──pick──> Running ──yield/wake──> Runnable
///                                   │  ├──park──> Parked ──unpark──> Runnable
///                                   │  └──recv──> Resting ──sweep──> RestingSeen
///                                   │                       ──sweep──> Hibernated
///                                   │      (any of the three) ──unpark──> Runnable
///                                   └──returns/panics──> Done
/// ```
/// `Resting` is a park at a point where nothing outside the proc reads or
/// writes its stack (a channel `recv`), so that the stack may be
/// hibernated: see `hibernate.rs`. A runtime's drop moves every proc to
/// `Done`, unwinding the started ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    /// In one of the run queues.
    Runnable,
    /// On the CPU.
    Running,
    /// Finished; its result is in the result slot.
    Done,
    /// Waiting for an unpark. The parked states come last, so that
    /// "parked at all" is one compare on the wake path.
    Parked,
    /// Waiting for an unpark where its stack may be hibernated.
    Resting,
    /// Resting, and found so by one hibernation sweep: the next one
    /// hibernates it.
    RestingSeen,
    /// Resting with its stack copied out and its pages given back: the
    /// stack must be restored before anything touches it.
    Hibernated,
}

impl State {
    /// Waiting for an unpark, in any of the parked states.
    #[inline(always)]
    pub(crate) fn is_parked(self) -> bool {
        self as u8 >= State::Parked as u8
    }
}

/// The panic payload that unwinds a proc when its runtime is dropped.
pub(crate) struct Cancelled;

/// The control block. Lives in a heap allocation shared (by manual count)
/// between the runtime, the proc's `JoinHandle` and its `Unparker`s; the
/// typed result slot follows it (`ProcCell<T>`).
///
/// # Layout
/// Fields are in the order of use: everything a park, a wake and a switch
/// touch (count, state and flags, saved context, queue links, runtime, id)
/// lies in the first 64 bytes, and the block is aligned to 64, so a message
/// hop between two procs touches one cache line of each control block.
/// With thousands of procs (a ring of 10,000) these lines are cold, and
/// each extra one is a miss per hop.
#[repr(C, align(64))]
pub(crate) struct Proc {
    /// Owners of this allocation: the runtime while the proc is live, the
    /// join handle, each unparker.
    refs: Cell<usize>,
    /// Where the proc is in its life.
    pub(crate) state: Cell<State>,
    /// An unpark arrived while the proc was not parked (the park token).
    pub(crate) notified: Cell<bool>,
    /// The runtime is being dropped, or an exit signal from a linked proc
    /// is pending (see `monitor.rs`): unwind at the next blocking point.
    pub(crate) cancel: Cell<bool>,
    /// The proc has begun running its closure.
    pub(crate) started: Cell<bool>,
    /// Waiting at the LIFO front because it spawned a child that runs first.
    pub(crate) in_spawn: Cell<bool>,
    /// Blocked while cancelled and already unwinding: abandoned by drop.
    pub(crate) stuck: Cell<bool>,
    /// The cancellation (or exit signal) panic was raised in this proc (per
    /// proc: the thread-wide `std::thread::panicking` counts every proc's
    /// unwinding).
    pub(crate) cancel_raised: Cell<bool>,
    /// Its last timed park ended because the deadline passed.
    pub(crate) timed_out: Cell<bool>,
    /// The saved context while the proc is not running.
    pub(crate) ctx: Context,
    /// Its place in a run queue while it is Runnable (see `queue.rs`).
    pub(crate) link: Link,
    /// The runtime it belongs to. Valid while `state != Done`.
    pub(crate) rt: *const Rt,
    /// The proc's id.
    pub(crate) id: ProcId,
    /// The unit image it is running in (0: host code); see `toc::current`.
    /// Read at every switch: first in the second line, which the first
    /// line's miss usually brings in with it (adjacent-line prefetch).
    pub(crate) unit: Cell<usize>,
    /// Type-specific operations on the allocation.
    vtable: &'static ProcVTable,
    /// The proc's name, if it was given one.
    pub(crate) name: Option<Rc<str>>,
    /// Its stack: the segments it runs on.
    pub(crate) chain: Chain,
    /// The chain's segments went back to the pool (or were abandoned).
    pub(crate) released: Cell<bool>,
    /// The `seq` of its armed timer; 0 when none is armed.
    pub(crate) timer: Cell<u64>,
    /// The proc waiting in `join` for this one.
    pub(crate) joiner: Cell<Option<ProcRef>>,
    /// Until the proc starts: its closure, on its stack. While it is
    /// `Hibernated`: the heap copy of its stack's live bytes (see
    /// `hibernate.rs`). Null otherwise.
    pub(crate) stash: Cell<*mut u8>,
    /// Index in the runtime's table of live procs; `usize::MAX` once it
    /// left the table.
    pub(crate) slot: Cell<usize>,
    /// Monitors, links and exit trapping; `None` for a proc that uses none
    /// (see `monitor.rs`). Every end of a proc takes it, so the control
    /// block's drop need not look at it.
    pub(crate) watch: ManuallyDrop<Cell<Option<Box<Watch>>>>,
}

// The hot fields end within the first cache line (see `Proc`'s layout)
// where the switch is procrt's own (`arch/*.s`); the fallback's context is
// larger.
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "x86")
))]
const _: () = assert!(std::mem::offset_of!(Proc, id) + std::mem::size_of::<ProcId>() <= 64);

/// Operations that depend on the closure and result types.
pub(crate) struct ProcVTable {
    /// Drops a closure that never ran.
    pub(crate) drop_closure: unsafe fn(*mut u8),
    /// Stores `Err(e)` in the result slot.
    pub(crate) set_error: unsafe fn(NonNull<Proc>, JoinError),
    /// Frees the allocation.
    pub(crate) dealloc: unsafe fn(NonNull<Proc>),
}

/// The allocation behind a proc: control block, then result slot.
#[repr(C)]
pub(crate) struct ProcCell<T> {
    /// Must stay first: a `NonNull<Proc>` is a `NonNull<ProcCell<T>>`.
    pub(crate) proc: Proc,
    /// The proc's outcome, written once when it ends.
    pub(crate) result: UnsafeCell<Option<Result<T, JoinError>>>,
}

/// A counted-by-hand pointer to a live `Proc` allocation. Copying it does
/// not count; [`ProcRef::retain`] and [`ProcRef::release`] do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcRef(pub(crate) NonNull<Proc>);

impl ProcRef {
    /// The control block.
    ///
    /// The lifetime is not tied to `self` (a `ProcRef` is a copyable
    /// pointer); it is as long as some count is held, which every caller
    /// ensures (the runtime's for queue entries and `current`, a handle's
    /// for its own).
    #[inline(always)]
    pub(crate) fn get<'a>(self) -> &'a Proc {
        // SAFETY: a ProcRef is only made from an allocation whose count is
        // held by someone for as long as the ProcRef is used.
        unsafe { self.0.as_ref() }
    }

    /// [`release`](Self::release) for an owner that knows the result
    /// type `T` (a join handle): the last release frees the allocation
    /// without the vtable's indirect call.
    ///
    /// # Safety
    ///
    /// As `release`, and the proc's result type is `T`.
    #[inline(always)]
    pub(crate) unsafe fn release_typed<T>(self) {
        if self.drop_count() {
            // SAFETY: that was the last owner; the caller vouches for T.
            unsafe { dealloc_cell::<T>(self.0) };
        }
    }

    /// Takes one owner's count off; true when it was the last.
    #[inline(always)]
    fn drop_count(self) -> bool {
        let p = self.get();
        let n = p.refs.get() - 1;
        p.refs.set(n);
        n == 0
    }

    /// Adds an owner.
    #[inline(always)]
    pub(crate) fn retain(self) -> Self {
        let p = self.get();
        p.refs.set(p.refs.get() + 1);
        self
    }

    /// Drops an owner; frees the allocation with the last one.
    ///
    /// # Safety
    ///
    /// The caller owned one count and does not use `self` afterwards.
    #[inline(always)]
    pub(crate) unsafe fn release(self) {
        if self.drop_count() {
            let dealloc = self.get().vtable.dealloc;
            // SAFETY: that was the last owner.
            unsafe { dealloc(self.0) };
        }
    }
}

/// The vtable of a proc running a closure `F` that returns `T`.
struct VTableOf<F, T>(std::marker::PhantomData<(F, T)>);

impl<F: FnOnce() -> T, T: 'static> VTableOf<F, T> {
    /// One static table per `(F, T)`: `&Self::VTABLE` is promoted.
    const VTABLE: ProcVTable = ProcVTable {
        drop_closure: Self::drop_closure,
        set_error: Self::set_error,
        dealloc: Self::dealloc,
    };

    unsafe fn drop_closure(c: *mut u8) {
        // SAFETY: `c` points at the `F` spawn wrote (caller's contract).
        unsafe { std::ptr::drop_in_place(c.cast::<F>()) };
    }

    unsafe fn set_error(p: NonNull<Proc>, e: JoinError) {
        let cell = p.cast::<ProcCell<T>>();
        // SAFETY: `p` heads a ProcCell<T> (the vtable is chosen with T); the
        // slot is only written by its proc's end, which has not come.
        unsafe { *(*cell.as_ptr()).result.get() = Some(Err(e)) };
    }

    unsafe fn dealloc(p: NonNull<Proc>) {
        // SAFETY: forwarded (the vtable was chosen with this T).
        unsafe { dealloc_cell::<T>(p) }
    }
}

/// Frees the allocation of a proc whose result type is `T`: what the
/// vtable's `dealloc` does, callable without it where `T` is known (a
/// join handle's release: a direct call instead of an indirect one). Out
/// of line: inlined into a join loop, it cost skynet more than the call.
///
/// # Safety
///
/// `p` heads a `ProcCell<T>` made by `new_proc`, and this is its last
/// owner.
#[inline(never)]
unsafe fn dealloc_cell<T>(p: NonNull<Proc>) {
    let cell = p.cast::<ProcCell<T>>().as_ptr();
    // SAFETY: new_proc made this ProcCell<T> in a block from
    // `blocks::alloc` with its layout; this is the last owner.
    unsafe {
        debug_assert!(
            (*cell).proc.watch.take().is_none(),
            "a proc's monitors and links outlived it"
        );
        std::ptr::drop_in_place(cell);
        blocks::free(cell.cast(), Layout::new::<ProcCell<T>>());
    }
}

/// Makes the allocation for a proc running `F`, with the id made of `seq`
/// and its slot in the runtime's live table, where it enters it. Returns it
/// with two counts: the runtime's and the join handle's.
// Inline into its one caller, spawn: a `Segment` or `Chain` passed or
// returned through memory is read back wider than it was written, and the
// store-forwarding stall showed at the top of skynet's profile.
#[inline(always)]
pub(crate) fn new_proc<F: FnOnce() -> T, T: 'static>(
    seq: u64,
    name: Option<Rc<str>>,
    rt: *const Rt,
    ctx: Context,
    segment: Segment,
    max_stack: usize,
    closure: *mut u8,
) -> ProcRef {
    // SAFETY: `rt` is the live runtime spawning this proc.
    let rtr = unsafe { &*rt };
    let chain = Chain::new(segment, max_stack, rtr.pool_ptr());
    let mem = blocks::alloc(Layout::new::<ProcCell<T>>()).cast::<ProcCell<T>>();
    // SAFETY: non-null: blocks::alloc never returns null.
    let p = ProcRef(unsafe { NonNull::new_unchecked(mem) }.cast());
    // The id names the slot, so the slot is taken first; the table only
    // stores the pointer, and nothing reads the block before it is written
    // below (nothing in between can panic or switch).
    let slot = rtr.insert_live(p);
    // Exact: insert_live stops the table at 2^32 slots.
    let id = ProcId {
        seq,
        slot: slot as u32,
    };
    let value = ProcCell::<T> {
        proc: Proc {
            refs: Cell::new(2),
            vtable: &VTableOf::<F, T>::VTABLE,
            id,
            name,
            state: Cell::new(State::Runnable),
            ctx,
            link: Link::default(),
            chain,
            released: Cell::new(false),
            rt,
            notified: Cell::new(false),
            cancel: Cell::new(false),
            started: Cell::new(false),
            stuck: Cell::new(false),
            cancel_raised: Cell::new(false),
            in_spawn: Cell::new(false),
            timer: Cell::new(0),
            timed_out: Cell::new(false),
            joiner: Cell::new(None),
            stash: Cell::new(closure),
            slot: Cell::new(slot),
            watch: ManuallyDrop::new(Cell::new(None)),
            unit: Cell::new(0),
        },
        result: UnsafeCell::new(None),
    };
    // SAFETY: `mem` is a fresh block with the layout of ProcCell<T>.
    unsafe { mem.write(value) };
    p
}

impl Proc {
    /// Drops a closure that never ran (the runtime is being dropped).
    ///
    /// # Safety
    ///
    /// The proc never started and its segment is still live.
    pub(crate) unsafe fn drop_unstarted(&self) {
        let c = self.stash.replace(std::ptr::null_mut());
        if !c.is_null() {
            // SAFETY: `c` is the closure written at spawn and never read.
            unsafe { (self.vtable.drop_closure)(c) };
        }
    }

    /// Records `e` as the proc's outcome.
    pub(crate) fn set_error(&self, e: JoinError) {
        // SAFETY: `self` heads its ProcCell; the vtable matches its type.
        unsafe { (self.vtable.set_error)(NonNull::from(self), e) };
    }
}

/// Where a fresh proc's context lands: runs the closure at `arg` and ends the
/// proc. Monomorphised per closure type; its address goes into the proc's
/// first frame. It returns, to `procrt_proc_entry`, the [`Exit`] naming the
/// context to resume; returning instead of switching from here keeps the
/// CPU's return-stack buffer balanced (see `arch/x86_64.s`).
///
/// [`Exit`]: crate::arch::Exit
///
/// # Safety
///
/// Only entered by the first switch into a proc whose stack holds a `F` at
/// `arg` and whose allocation is a `ProcCell<T>`.
pub(crate) unsafe extern "C" fn proc_main<F, T>(arg: *mut u8) -> crate::arch::Exit
where
    F: FnOnce() -> T,
    T: 'static,
{
    let rt = rt_ptr();
    // SAFETY: a proc only runs inside its runtime's `block_on` (or drop),
    // which keeps the thread-local pointer valid meanwhile.
    let rt = unsafe { &*rt };
    rt.after_switch();
    let me = rt.current().expect("proc_main: no current proc");
    let p = me.get();
    p.started.set(true);
    p.stash.set(std::ptr::null_mut());
    // SAFETY: spawn wrote an `F` at `arg`; it is read exactly once, here.
    let f = unsafe { std::ptr::read(arg.cast::<F>()) };
    // Ended by a linked proc before it started: `f` never runs. Only a
    // proc that spawn queued can be: with direct switching a child runs
    // before its parent holds its id (the root, queued by block_on, is
    // started before anyone has its id).
    if !crate::arch::DIRECT_SWITCH && p.cancel.get() && monitor::exit_pending(p) {
        // SAFETY: `me` is running, and nothing on this stack but `f`,
        // which it takes, needs dropping.
        return unsafe { end_unstarted(rt, me, f) };
    }
    let cell = me.0.cast::<ProcCell<T>>();
    // The outcome is produced and stored inside this closure, so no `T`
    // lives in proc_main's own frame; debug builds copy a result several
    // times on its way to the slot, so room for that is made first.
    crate::stack::grow(8 * std::mem::size_of::<T>(), move || {
        let outcome = catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
            if payload.is::<Cancelled>() {
                JoinError::Cancelled
            } else {
                match payload.downcast::<LinkExit>() {
                    Ok(exit) => JoinError::Exited(exit.0),
                    Err(payload) => JoinError::Panicked(payload),
                }
            }
        });
        // SAFETY: the allocation is a ProcCell<T> (spawn made it so) and
        // the runtime's count keeps it alive; only this proc writes its
        // result.
        unsafe { *(*cell.as_ptr()).result.get() = Some(outcome) };
    });
    // SAFETY: a peek at the cell, which nothing else touches meanwhile.
    if unsafe { (*p.watch.as_ptr()).is_some() } {
        // After the store, out of line: a `T` more on the way to the slot
        // would need stack that debug builds do not have (see above), and
        // every byte of this frame counts on a proc's first segment.
        // SAFETY: `cell` is this proc's ProcCell<T>, its result just
        // written.
        unsafe { report_end::<T>(rt, me, cell) };
    }
    // SAFETY: we are `me`'s entry function, and its stack holds nothing
    // that needs dropping any more (`f` and `outcome` are consumed).
    unsafe { rt.exit(me) }
}

/// Sends the `Down`s and exit signals of the proc `me`, which has ended
/// and stored its outcome.
///
/// # Safety
///
/// `cell` is `me`'s `ProcCell<T>`, with its result written.
#[cold]
#[inline(never)]
unsafe fn report_end<T>(rt: &Rt, me: ProcRef, cell: NonNull<ProcCell<T>>) {
    let Some(w) = me.get().watch.take() else {
        return;
    };
    // SAFETY: the caller's contract; nothing else touches the slot before
    // the proc is Done. Read in place: no `T` is moved.
    let e = unsafe { (*(*cell.as_ptr()).result.get()).as_ref() };
    let reason = ExitReason::of(e.and_then(|r| r.as_ref().err()));
    monitor::proc_ended(rt, me, w, reason);
}

/// Ends the running proc `me`, killed by a linked proc before its closure
/// `f` ran, with `JoinError::Exited`; `f` is dropped unrun (a panic in its
/// drop is not the proc's reason and is dropped).
///
/// # Safety
///
/// As [`Rt::exit`]: `me` is running, this is called from its entry
/// function, and nothing on its stack but `f` needs dropping.
#[cold]
#[inline(never)]
unsafe fn end_unstarted<F>(rt: &Rt, me: ProcRef, f: F) -> crate::arch::Exit {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(f)));
    let p = me.get();
    let reason = monitor::exit_before_start(p);
    if let Some(w) = p.watch.take() {
        monitor::proc_ended(rt, me, w, reason.clone());
    }
    p.set_error(JoinError::Exited(reason));
    // SAFETY: the caller's contract; `f` is gone.
    unsafe { rt.exit(me) }
}
