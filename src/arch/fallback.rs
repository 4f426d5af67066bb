//! The switch on targets without hand-written assembly: corosensei.
//!
//! A proc's context is a corosensei `Coroutine` running on the proc's
//! segment. Coroutines are asymmetric: the scheduler resumes a proc and the
//! proc suspends back to the scheduler, so [`DIRECT_SWITCH`] is false and
//! the scheduler routes every proc-to-proc hand-off through its own stack.
//! There is no split-stack TCB slot here: the limit functions keep the value
//! in a thread-local instead, so `stack::remaining` still works.

use super::EntryFn;
use corosensei::stack::{Stack, StackPointer};
use corosensei::{Coroutine, Yielder};
use std::cell::{Cell, UnsafeCell};

/// Procs cannot switch to each other directly.
pub(crate) const DIRECT_SWITCH: bool = false;

/// A proc's segment as corosensei sees it. It owns nothing: the segment
/// belongs to the proc's pool.
pub(crate) struct SegmentStack {
    /// Highest usable address, 16-byte aligned.
    base: usize,
    /// Lowest usable address, 16-byte aligned.
    limit: usize,
}

// SAFETY: the segment lies in the pool's reservation, stays allocated while
// the coroutine lives (the proc owns both), and has a guard page below it in
// guarded mode.
unsafe impl Stack for SegmentStack {
    fn base(&self) -> StackPointer {
        StackPointer::new(self.base).expect("non-null stack base")
    }
    fn limit(&self) -> StackPointer {
        StackPointer::new(self.limit).expect("non-null stack limit")
    }
}

type Co = Coroutine<(), (), (), SegmentStack>;

/// A context: the scheduler's own stack, or a proc's coroutine.
pub(crate) enum Context {
    /// The thread's stack: it resumes coroutines.
    Sched,
    /// A proc.
    Proc {
        /// The coroutine; `None` never happens after `prepare`.
        co: UnsafeCell<Co>,
        /// The yielder the running coroutine suspends with, set when it
        /// first runs. Boxed: the `Context` moves after `prepare`.
        yielder: Box<Cell<*const Yielder<(), ()>>>,
        /// The split-stack limit of the proc.
        limit: usize,
    },
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Context::Sched => f.write_str("Context::Sched"),
            Context::Proc { .. } => f.write_str("Context::Proc"),
        }
    }
}

thread_local! {
    /// Stand-in for the TCB's split-stack slot.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
}

impl Context {
    /// The scheduler's context.
    pub(crate) fn current() -> Self {
        Context::Sched
    }

    /// No prefetch here: corosensei owns the stack layout.
    #[inline(always)]
    pub(crate) fn prefetch(&self) {}

    /// corosensei keeps the saved stack pointer to itself: `None`, so no
    /// proc on this target is ever hibernated.
    pub(crate) fn saved_sp(&self) -> Option<usize> {
        None
    }

    /// A coroutine that calls `entry(arg)` on the stack below `top`.
    ///
    /// # Safety
    ///
    /// `top` must be 16-byte aligned and the memory down to `limit` a stack
    /// that nothing else uses, alive as long as the context.
    pub(crate) unsafe fn prepare(top: usize, limit: usize, entry: EntryFn, arg: *mut u8) -> Self {
        let yielder: Box<Cell<*const Yielder<(), ()>>> = Box::new(Cell::new(std::ptr::null()));
        let slot: *const Cell<*const Yielder<(), ()>> = &*yielder;
        let arg = arg as usize;
        let stack = SegmentStack {
            base: top,
            limit: limit & !15,
        };
        let co = Coroutine::with_stack(stack, move |y: &Yielder<(), ()>, ()| {
            // SAFETY: `slot` points into the Box that the context keeps
            // alive as long as the coroutine.
            unsafe { (*slot).set(y) };
            // SAFETY: the caller of `prepare` handed us a valid entry.
            unsafe { entry(arg as *mut u8) }
        });
        Context::Proc {
            co: UnsafeCell::new(co),
            yielder,
            limit,
        }
    }
}

impl Context {
    /// A context for a fresh proc that [`start`] enters: the same
    /// coroutine as [`prepare`](Self::prepare) makes.
    ///
    /// # Safety
    ///
    /// As [`prepare`](Self::prepare).
    pub(crate) unsafe fn unprepared(
        top: usize,
        limit: usize,
        entry: EntryFn,
        arg: *mut u8,
    ) -> Self {
        // SAFETY: the caller's contract is `prepare`'s.
        unsafe { Self::prepare(top, limit, entry, arg) }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Context::Proc { co, .. } = self {
            let co = co.get_mut();
            if co.started() && !co.done() {
                // A proc that ended is suspended for good in its last switch;
                // there is nothing on its stack to unwind.
                // SAFETY: the scheduler never resumes an ended proc, and its
                // frames hold nothing that needs dropping.
                unsafe { co.force_reset() };
            }
        }
    }
}

/// Switches from `from` to `to`: the scheduler resumes a proc, or a proc
/// suspends to the scheduler.
///
/// # Safety
///
/// `from` is the running context and `to` a suspended one; one of them is
/// the scheduler's.
pub(crate) unsafe fn switch(from: &Context, to: &Context) {
    match (from, to) {
        (_, Context::Proc { co, limit, .. }) => {
            let saved = LIMIT.with(|l| l.replace(*limit));
            // SAFETY: only the scheduler resumes a proc, and a proc is not
            // resumed while running (the caller's contract).
            let _ = unsafe { &mut *co.get() }.resume(());
            LIMIT.with(|l| l.set(saved));
        }
        (Context::Proc { yielder, .. }, Context::Sched) => {
            let y = yielder.get();
            assert!(!y.is_null(), "procrt: suspend before the proc started");
            // SAFETY: the yielder was set by the running coroutine and lives
            // on its stack while it runs.
            unsafe { (*y).suspend(()) };
        }
        (Context::Sched, Context::Sched) => {}
    }
}

/// Enters the fresh proc `to` (made by [`Context::unprepared`]): here a
/// plain [`switch`], as corosensei's coroutine holds its own first frame.
/// Unused while [`DIRECT_SWITCH`] is false (a spawn queues its child).
///
/// # Safety
///
/// As [`switch`]; `to` never ran.
pub(crate) unsafe fn start(
    from: &Context,
    to: &Context,
    top: usize,
    limit: usize,
    entry: EntryFn,
    arg: *mut u8,
) {
    let _ = (top, limit, entry, arg);
    // SAFETY: the caller's contract is `switch`'s.
    unsafe { switch(from, to) }
}

/// What a proc's entry function returns: nothing here, since it never
/// returns (the proc's last switch suspends its coroutine for good).
pub(crate) type Exit = ();

/// Ends the running proc `from` for good by switching to `to`; never
/// returns (the scheduler never resumes an ended proc).
///
/// # Safety
///
/// `from` is the running proc, which has ended, and `to` the scheduler.
pub(crate) unsafe fn exit(from: &Context, to: &Context) -> Exit {
    // SAFETY: the caller's contract is `switch`'s.
    unsafe { switch(from, to) };
    crate::fatal(format_args!("a proc was resumed after it ended"))
}

/// Runs `f(arg)` on the stack `[bottom, top)`, then returns on the current
/// stack (corosensei's `on_stack`).
///
/// # Safety
///
/// `top` must be 16-byte aligned, `[bottom, top)` a stack nothing else
/// uses, and `f` must not unwind.
pub(crate) unsafe fn call_on_segment(
    arg: *mut u8,
    f: unsafe extern "C" fn(*mut u8),
    top: usize,
    bottom: usize,
) {
    let stack = SegmentStack {
        base: top,
        limit: (bottom + 15) & !15,
    };
    let arg = arg as usize;
    // SAFETY: forwarded to the caller.
    corosensei::on_stack(stack, move || unsafe { f(arg as *mut u8) })
}

/// The stack pointer, to within a few bytes (the address of a local).
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let probe = 0u8;
    std::hint::black_box(&probe) as *const u8 as usize
}

/// The current stack limit (thread-local stand-in for the TCB slot).
pub(crate) fn stack_limit() -> usize {
    LIMIT.with(|l| l.get())
}

/// Sets the current stack limit.
#[cfg_attr(not(test), allow(dead_code))]
///
/// # Safety
///
/// `limit` must describe the running stack.
pub(crate) unsafe fn set_stack_limit(limit: usize) {
    LIMIT.with(|l| l.set(limit));
}
