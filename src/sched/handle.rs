//! The public face of the scheduler: spawn, join, yield, park.

use super::proc::{ProcCell, ProcId, ProcRef, State};
use super::runtime::{rt_ptr, with_rt};
use crate::error::{JoinError, SpawnError, SpawnErrorKind};
use crate::stack;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Closures bigger than this are boxed at once by `spawn`.
const LARGE: usize = 1024;

/// Spawns a proc running `f` on this thread's runtime, with default options.
///
/// The new proc starts at once: the caller resumes when the child first
/// blocks, yields or ends. This runs fan-out depth-first and keeps few
/// stacks alive (see the scheduling policy in [`Runtime`](crate::Runtime)).
/// `f` need not be `Send`: every proc runs on this thread.
///
/// Returns an error, and drops `f`, when no stack can be had for it (see
/// [`SpawnError`]); the runtime keeps running.
///
/// # Panics
///
/// Outside a runtime (use [`Runtime::block_on`](crate::Runtime::block_on)).
pub fn spawn<F, T>(f: F) -> Result<JoinHandle<T>, SpawnError>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    Builder::new().spawn(f)
}

/// Options for one proc: a name and a first segment size.
///
/// ```
/// procrt::run(|| {
///     let h = procrt::Builder::new()
///         .name("worker")
///         .stack_size(16 * 1024)
///         .spawn(|| procrt::current().name().map(str::to_owned))
///         .unwrap();
///     assert_eq!(h.join().unwrap().as_deref(), Some("worker"));
/// });
/// ```
#[derive(Clone, Debug, Default)]
pub struct Builder {
    name: Option<Rc<str>>,
    stack_size: Option<usize>,
    max_stack: Option<usize>,
}

impl Builder {
    /// Default options: no name, the runtime's first segment size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the proc (shown by [`current`] and in overflow reports).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Rc::from(name.into()));
        self
    }

    /// Size of the proc's first segment, rounded up to a power of two and
    /// to the pool's minimum.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// The proc's stack limit: the most bytes its chain of segments may
    /// hold when it grows (default: the runtime's, 8 MiB unless set with
    /// [`RuntimeBuilder::max_stack`](crate::RuntimeBuilder::max_stack)).
    /// Growing past it panics in the proc.
    pub fn max_stack(mut self, bytes: usize) -> Self {
        self.max_stack = Some(bytes);
        self
    }

    /// Spawns the proc; see [`spawn`].
    pub fn spawn<F, T>(self, f: F) -> Result<JoinHandle<T>, SpawnError>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let rt = rt_ptr();
        if rt.is_null() {
            return Err(SpawnError::new(SpawnErrorKind::NoRuntime));
        }
        // SAFETY: non-null CURRENT_RT means its runtime is alive on this
        // thread's stack.
        let rt = unsafe { &*rt };
        let size = self.stack_size.unwrap_or_else(|| rt.first_segment());
        let max = self.max_stack.unwrap_or_else(|| rt.max_stack());
        // A large closure is boxed before it is moved again: debug builds
        // copy it at every step below.
        if std::mem::size_of::<F>() > LARGE {
            let boxed = Box::new(f);
            return stack::grow(stack::ENTRY_STACK, move || {
                rt.spawn_proc(boxed, self.name, size, max)
            });
        }
        stack::grow(
            stack::ENTRY_STACK + 4 * std::mem::size_of::<F>(),
            move || rt.spawn_proc(f, self.name, size, max),
        )
    }
}

/// An owned permission to join a proc: [`join`](JoinHandle::join) waits for
/// it and returns its value, or why there is none. Dropping the handle
/// detaches the proc, which runs on.
pub struct JoinHandle<T> {
    p: ProcRef,
    _marker: PhantomData<(Rc<()>, T)>,
}

impl<T: 'static> JoinHandle<T> {
    /// Wraps the join handle's count (taken by `new_proc`).
    pub(crate) fn from_ref(p: ProcRef) -> Self {
        JoinHandle {
            p,
            _marker: PhantomData,
        }
    }

    /// The proc's id.
    pub fn id(&self) -> ProcId {
        self.p.get().id
    }

    /// True once the proc has ended (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.p.get().state.get() == State::Done
    }

    /// Waits for the proc to end and returns its value. A panic in the proc
    /// comes back as [`JoinError::Panicked`] with its payload; the caller
    /// keeps running. The waiting proc parks: it costs nothing meanwhile.
    ///
    /// # Panics
    ///
    /// When called outside a proc on a proc that has not finished.
    pub fn join(self) -> Result<T, JoinError> {
        let p = self.p.get();
        if p.state.get() != State::Done {
            with_rt("JoinHandle::join", |rt| {
                let me = rt
                    .current()
                    .expect("procrt: JoinHandle::join on an unfinished proc outside any proc");
                p.joiner.set(Some(me.retain()));
                stack::grow(stack::ENTRY_STACK + 4 * std::mem::size_of::<T>(), || {
                    while p.state.get() != State::Done {
                        rt.park_current(State::Parked);
                    }
                });
            });
        }
        let cell = self.p.0.cast::<ProcCell<T>>();
        // SAFETY: the proc is Done, so its result slot was written and is no
        // longer touched by anyone else; the allocation is a ProcCell<T>
        // (made by spawn with this T) kept alive by our count.
        let r = unsafe { (*(*cell.as_ptr()).result.get()).take() };
        r.expect("procrt: finished proc has no result")
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // SAFETY: the handle's count, released once; spawn made the proc
        // with result type T.
        unsafe { self.p.release_typed::<T>() };
    }
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.p.get().id)
            .finish()
    }
}

/// Lets other procs run; the caller goes to the back of the yield queue.
/// Outside a proc it does nothing.
pub fn yield_now() {
    let rt = rt_ptr();
    if !rt.is_null() {
        // SAFETY: non-null CURRENT_RT means its runtime is alive.
        stack::grow(stack::ENTRY_STACK, || unsafe { (*rt).yield_current() })
    }
}

/// Blocks the calling proc until its [`Unparker`] is used. If an unpark
/// came since the last `park`, returns at once (a token, as in
/// `std::thread::park`). May also return spuriously: call it in a loop
/// that checks the condition waited for.
///
/// # Panics
///
/// Outside a proc.
pub fn park() {
    park_as(State::Parked)
}

/// [`park`] in state `parked` (`Parked` or `Resting`).
fn park_as(parked: State) {
    with_rt("park", |rt| {
        stack::grow(stack::ENTRY_STACK, || rt.park_current(parked))
    })
}

/// Parks until unparked or until `deadline`, in state `parked`; true when
/// the deadline passed.
fn park_until_as(deadline: Instant, parked: State) -> bool {
    with_rt("park_timeout", |rt| {
        stack::grow(stack::ENTRY_STACK, || rt.park_until(deadline, parked))
    })
}

/// For blocking primitives: hands the calling proc's [`Unparker`] to
/// `register` (which records it where a waker will find it and returns a
/// guard that withdraws it), then parks; the guard is dropped when the park
/// ends, also when the proc unwinds out of it. One runtime lookup for both.
///
/// The proc *rests*: the caller promises that while it waits nothing
/// outside the proc reads or writes its stack (the waker and anything it
/// hands over live in shared heap state), so the runtime may hibernate the
/// stack if the wait is long (see `hibernate.rs`).
///
/// # Panics
///
/// Outside a proc.
#[inline]
pub(crate) fn park_resting<G>(register: impl FnOnce(Unparker) -> G) {
    with_rt("park", |rt| {
        let me = rt.current().expect("procrt: park called outside a proc");
        let _guard = register(Unparker { p: me.retain() });
        stack::grow(stack::ENTRY_STACK, || rt.park_proc(me, State::Resting))
    })
}

/// Procs of the current runtime whose stacks are hibernated now (0 outside
/// a runtime): see [`RuntimeBuilder::hibernate_after`](crate::RuntimeBuilder::hibernate_after).
pub fn hibernated_procs() -> usize {
    let rt = rt_ptr();
    if rt.is_null() {
        return 0;
    }
    // SAFETY: non-null only while `block_on` or the drop of that runtime
    // is on this thread's stack, so the Rt is alive.
    unsafe { &*rt }.hibernation().count()
}

/// Like [`park`], but for at most `timeout`: returns true when the time ran
/// out, false when the proc was unparked (or a token was waiting). May also
/// return spuriously.
///
/// # Panics
///
/// Outside a proc.
pub fn park_timeout(timeout: Duration) -> bool {
    match Instant::now().checked_add(timeout) {
        Some(deadline) => park_until_as(deadline, State::Parked),
        None => {
            park();
            false
        }
    }
}

/// [`park`] for the runtime's own blocking primitives, whose wakers keep
/// everything they hand over in shared heap state and never touch the
/// waiting proc's stack: the proc *rests*, so its stack may be hibernated
/// if the wait is long (see `hibernate.rs`). The public `park` cannot
/// promise that for its callers.
///
/// # Panics
///
/// Outside a proc.
pub(crate) fn rest() {
    park_as(State::Resting)
}

/// Rests (like [`rest`]) until unparked or until `deadline`; true when the
/// deadline passed.
pub(crate) fn rest_until(deadline: Instant) -> bool {
    park_until_as(deadline, State::Resting)
}

/// Blocks the calling proc for `dur`; other procs run meanwhile. An idle
/// runtime sleeps in the kernel until the earliest deadline.
///
/// ```
/// use std::time::{Duration, Instant};
/// procrt::run(|| {
///     let t = Instant::now();
///     procrt::sleep(Duration::from_millis(5));
///     assert!(t.elapsed() >= Duration::from_millis(5));
/// });
/// ```
///
/// # Panics
///
/// Outside a proc.
pub fn sleep(dur: Duration) {
    match Instant::now().checked_add(dur) {
        Some(deadline) => sleep_until(deadline),
        None => loop {
            park();
        },
    }
}

/// Blocks the calling proc until `deadline`.
///
/// # Panics
///
/// Outside a proc.
pub fn sleep_until(deadline: Instant) {
    while Instant::now() < deadline {
        rest_until(deadline);
    }
}

/// A handle that wakes one proc from [`park`]. Cloneable, not `Send`: it
/// wakes procs of this thread's runtime.
pub struct Unparker {
    p: ProcRef,
}

/// The [`Unparker`] of the calling proc.
///
/// # Panics
///
/// Outside a proc.
pub fn unparker() -> Unparker {
    with_rt("unparker", |rt| {
        let me = rt
            .current()
            .expect("procrt: unparker called outside a proc");
        Unparker { p: me.retain() }
    })
}

impl Unparker {
    /// Wakes the proc if it is parked, or makes its next `park` return at
    /// once. Does nothing once the proc has ended.
    #[inline]
    pub fn unpark(&self) {
        let p = self.p.get();
        if p.state.get() == State::Done {
            return;
        }
        // SAFETY: a proc that is not Done belongs to a live runtime (drop
        // marks every proc Done before the runtime goes away), on this thread.
        unsafe { (*p.rt).wake(self.p) }
    }

    /// The id of the proc this unparks.
    pub fn id(&self) -> ProcId {
        self.p.get().id
    }

    /// Like `unpark`, but the proc queues behind every runnable proc (the
    /// I/O driver's wake; see `Rt::wake_fifo`).
    pub(crate) fn unpark_fifo(&self) {
        let p = self.p.get();
        if p.state.get() == State::Done {
            return;
        }
        // SAFETY: as in `unpark`.
        unsafe { (*p.rt).wake_fifo(self.p) }
    }
}

impl Clone for Unparker {
    fn clone(&self) -> Self {
        Unparker { p: self.p.retain() }
    }
}

impl Drop for Unparker {
    // Inline: a channel drops one per message that wakes a receiver, and
    // across crates (a channel of the caller's type) it was a call.
    #[inline]
    fn drop(&mut self) {
        // SAFETY: our count, released once.
        unsafe { self.p.release() };
    }
}

impl std::fmt::Debug for Unparker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unparker")
            .field("id", &self.p.get().id)
            .finish()
    }
}

/// The running proc's identity.
#[derive(Clone, Debug)]
pub struct ProcInfo {
    id: ProcId,
    name: Option<Rc<str>>,
}

impl ProcInfo {
    /// The proc's id.
    pub fn id(&self) -> ProcId {
        self.id
    }
    /// The proc's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// The running proc's id and name.
///
/// # Panics
///
/// Outside a proc; see [`try_current`].
pub fn current() -> ProcInfo {
    try_current().expect("procrt: current called outside a proc")
}

/// The running proc's id and name, or `None` outside any proc.
pub fn try_current() -> Option<ProcInfo> {
    let rt = rt_ptr();
    if rt.is_null() {
        return None;
    }
    // SAFETY: non-null CURRENT_RT means its runtime is alive.
    let me = unsafe { (*rt).current() }?;
    let p = me.get();
    Some(ProcInfo {
        id: p.id,
        name: p.name.clone(),
    })
}

/// Runs `f` as the root proc of a fresh default [`Runtime`](crate::Runtime)
/// and returns its value; the runtime is dropped afterwards (cancelling any
/// procs still alive).
///
/// # Panics
///
/// When the runtime cannot be built, or as
/// [`Runtime::block_on`](crate::Runtime::block_on).
pub fn run<F, T>(f: F) -> T
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let rt = crate::Runtime::new().unwrap_or_else(|e| panic!("procrt: cannot build runtime: {e}"));
    rt.block_on(f)
}
