//! Hibernation: giving back the stack pages of procs that wait for long.
//!
//! # Design
//!
//! A parked proc costs the pages its stack touched: at least one, 4 KiB,
//! although an actor waiting in `recv` uses a few hundred bytes of it (a
//! release build on x86_64: about 370 bytes from the top of its segment,
//! header and switch frame included). Erlang offers `hibernate` for
//! processes that wait long; Go shrinks the stacks of idle goroutines at
//! each collection. procrt does the first automatically:
//!
//! - A proc that waits in one of the runtime's own blocking primitives is
//!   `Resting`, not `Parked`: a channel's `recv` (also with a timeout), a
//!   `send` on a full channel, a `select`, a wait for I/O readiness, and
//!   `sleep`. While it waits, nothing outside the proc reads or writes its
//!   stack: each of these keeps the proc's unparker and whatever is handed
//!   over (messages, readiness, timer entries) in shared heap state; the
//!   kernel writes a read buffer only during the `read` the proc makes
//!   after its wake; and spawn takes `'static` closures, so no other proc
//!   holds a reference into the stack. The public `park` and
//!   `park_timeout`, `join` and `spawn_blocking` stay `Parked` and are
//!   never hibernated: a user's protocol around `park` may share its stack
//!   through `unsafe` code.
//! - A *sweep* passes over the live procs, a pass starting at most every
//!   `hibernate_after` (default [`DEFAULT_HIBERNATE_AFTER`], set on the
//!   runtime's builder): a `Resting` proc becomes `RestingSeen`; one found
//!   `RestingSeen` by the next pass has rested a whole period without a
//!   wake, and is hibernated: the live part of its stack, from its saved stack pointer
//!   to the end of its segment (frames, closure, segment header), is copied
//!   to the heap, exactly as many bytes as are live, and the pages under it
//!   are given back with `madvise(MADV_DONTNEED)`. The copy's address is
//!   kept in the control block (the word that held the closure before the
//!   proc started). Page ranges are sorted and merged in batches, so that
//!   neighbouring segments cost one system call, not one each.
//! - A wake (`make_runnable`), or the runtime's drop resuming the proc,
//!   restores the bytes to the same addresses before anything else: the
//!   first write faults in a fresh zero page. Every pointer into the stack
//!   is valid again, because the stack never moved.
//!
//! Measured with `procrt-bench idle 100000 --unguarded` (procs each
//! resting in `recv` on a channel of its own; release, x86_64): resident
//! memory per proc 4,679 bytes without hibernation, 951 with it (tokio's
//! task and channel: 1,288), so the copy is about 370 bytes; guarded, 957
//! bytes (32,748 procs, the mapping limit). Waking and ending a proc took
//! 3.7 µs without and 5.1 µs with hibernation: the page fault and the copy
//! back cost about 1.5 µs per wake, which a proc that rested at least
//! `hibernate_after` does not notice.
//!
//! When sweeps run: a sweep is a *pass* over the live-proc table, started
//! at most every `hibernate_after`. On a busy runtime the scheduler's
//! periodic check looks at the clock every `SWEEP_CHECK_EVERY` picks and
//! starts a pass when one is due; the pass then goes on by `SWEEP_STEP`
//! slots at each check, so that a runtime with a million procs never
//! stops for the whole table at once (1,024 control blocks read per step,
//! against the 4,096 picks between two checks). An idle runtime has nothing better to do:
//! it finishes a pass in one go, and it folds the next pass into its wait,
//! but only while there is something to sweep (procs ran since the last
//! pass, or the last one marked procs), so a runtime that stays idle sleeps
//! for good after at most two passes. A pass reads the state of every live
//! proc: O(live procs) per period.
//!
//! A sweep allocates nothing but the copies (with a fallible allocation: a
//! proc whose copy cannot be had is left as it is), because a guarded
//! runtime can be at the kernel's mapping limit, where `malloc` cannot map
//! a large block and a failed Rust allocation aborts.
//!
//! Not hibernated: the running proc; a proc whose saved stack pointer is not
//! in its chain's current segment (it parked on a foreign stack); one with
//! more than `MAX_COPY` bytes live (the copy would cost more than the pages
//! it frees are worth to a proc that may wake soon); and any proc on the
//! corosensei fallback, whose saved context procrt cannot see.
//!
//! The promise this rests on, for code using `unsafe`: while a proc waits in
//! one of those primitives, no other proc or thread may read or write
//! memory on its stack (say, through a raw pointer the proc handed out
//! before it waited). Such code must turn hibernation off with
//! `hibernate_after(None)`. Debug builds check, when restoring, that
//! nothing wrote to the given-back pages. Fuzzing builds (`cfg(fuzzing)`) default to off: under ASan, the copy of
//! a stack reads its poisoned redzones.
//!
//! Rejected: protecting hibernated pages (`PROT_NONE`) to catch a stray
//! access: every hibernation and restore would split or merge the stack
//! mapping, and 100k hibernated procs would meet `vm.max_map_count`.

use super::proc::{ProcRef, State};
use super::runtime::Rt;
use crate::stack;
use std::alloc::Layout;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a proc must rest (in `recv`, `select`, an I/O wait, `sleep`)
/// before its stack may be hibernated
/// (the default of [`RuntimeBuilder::hibernate_after`](crate::RuntimeBuilder::hibernate_after)).
/// A proc is hibernated between one and two of these after it parked.
pub const DEFAULT_HIBERNATE_AFTER: Duration = Duration::from_millis(500);

/// Picks between two looks at the clock for a sweep on a busy runtime.
const SWEEP_CHECK_EVERY: u32 = 4096;

/// Live-table slots a busy runtime's sweep looks at per check.
const SWEEP_STEP: usize = 1024;

/// Most live stack bytes a hibernation copies.
const MAX_COPY: usize = 8 * 1024;

/// Page ranges a sweep gathers before it gives them back (sorted and
/// merged within each batch). On the stack: a sweep allocates nothing but
/// the copies, because a process at its mapping limit (guarded mode can
/// reach `vm.max_map_count`) cannot get a large allocation from `malloc`.
const BATCH: usize = 256;

/// Stack a sweep makes sure of: it may run on the stack of a proc that is
/// switching away (the batch of ranges, the allocator, `madvise`).
const SWEEP_STACK: usize = 16 * 1024;

/// Stack a restore makes sure of: it may run on the stack of the proc that
/// wakes the hibernated one (a copy and a free).
const RESTORE_STACK: usize = 4 * 1024;

/// A runtime's hibernation state.
pub(super) struct Hibernation {
    /// Rest needed before hibernation; `None`: never hibernate.
    after: Option<Duration>,
    /// When the last pass started (the runtime's start before the first).
    last_pass: Cell<Instant>,
    /// The next slot of the pass in progress; `None` between passes.
    cursor: Cell<Option<usize>>,
    /// The pass in progress has marked procs so far.
    marking: Cell<bool>,
    /// The scheduler's pick counter when the last pass ended: a different
    /// value means procs ran since, and may have come to rest.
    swept_at_tick: Cell<u32>,
    /// The last pass marked procs `RestingSeen`: the next one may
    /// hibernate them.
    marked: Cell<bool>,
    /// Procs hibernated now.
    count: Cell<usize>,
    /// The system's page size.
    page: usize,
}

impl Hibernation {
    /// Hibernation after `after` of rest, or never.
    pub(super) fn new(after: Option<Duration>) -> Self {
        Hibernation {
            after,
            last_pass: Cell::new(Instant::now()),
            cursor: Cell::new(None),
            marking: Cell::new(false),
            swept_at_tick: Cell::new(0),
            marked: Cell::new(false),
            count: Cell::new(0),
            page: stack::page_size(),
        }
    }

    /// Procs whose stacks are hibernated now.
    pub(super) fn count(&self) -> usize {
        self.count.get()
    }
}

/// Page ranges waiting to be given back.
struct Ranges {
    buf: [(usize, usize); BATCH],
    len: usize,
}

impl Ranges {
    fn push(&mut self, r: (usize, usize)) {
        if self.len == BATCH {
            self.flush();
        }
        self.buf[self.len] = r;
        self.len += 1;
    }

    /// Gives back the gathered ranges, neighbours merged.
    fn flush(&mut self) {
        let rs = &mut self.buf[..self.len];
        rs.sort_unstable();
        let mut merged: Option<(usize, usize)> = None;
        for &(lo, hi) in rs.iter() {
            merged = match merged {
                Some((mlo, mhi)) if lo <= mhi => Some((mlo, mhi.max(hi))),
                Some(m) => {
                    give_back(m);
                    Some((lo, hi))
                }
                None => Some((lo, hi)),
            };
        }
        if let Some(m) = merged {
            give_back(m);
        }
        self.len = 0;
    }
}

impl Rt {
    /// From the scheduler's periodic check, every `CHECK_EVERY` picks:
    /// every `SWEEP_CHECK_EVERY` picks, goes on with a pass or starts one
    /// that is due, for `SWEEP_STEP` slots.
    #[inline]
    pub(super) fn hibernation_tick(&self, ticks: u32) {
        if self.hibernation().after.is_some() && ticks % SWEEP_CHECK_EVERY == 0 {
            self.sweep_if_due(Instant::now(), SWEEP_STEP);
        }
    }

    /// When an idle runtime should wake up for a sweep: now while a pass is
    /// in progress; `None` when hibernation is off, or when nothing ran and
    /// nothing was marked since the last pass (nothing new can be resting).
    ///
    /// "Nothing ran": the pick counter moved by at most one, the empty pick
    /// of `block_on`'s loop that led back into `idle` after the pass. A
    /// proc that ran adds at least two (its pick and the pick when it
    /// stopped).
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        let h = self.hibernation();
        let after = h.after?;
        if h.cursor.get().is_some() {
            return Some(h.last_pass.get());
        }
        let ran = self.ticks().wrapping_sub(h.swept_at_tick.get()) > 1;
        (ran || h.marked.get()).then(|| h.last_pass.get() + after)
    }

    /// Goes on with the pass in progress, or starts one if `after` has
    /// passed since the last one started, for at most `budget` slots of
    /// the live table (never while the runtime is being dropped: it
    /// resumes every proc).
    #[cold]
    pub(super) fn sweep_if_due(&self, now: Instant, budget: usize) {
        let h = self.hibernation();
        let Some(after) = h.after else { return };
        if self.shutting_down() {
            return;
        }
        let (from, starts) = match h.cursor.get() {
            Some(c) => (c, false),
            None if now.saturating_duration_since(h.last_pass.get()) >= after => (0, true),
            None => return,
        };
        // On a proc's stack that cannot get SWEEP_STACK (the pool or the
        // kernel's map count is used up, or the proc is at its limit), the
        // step waits for a later check: nothing is changed before it runs.
        let _ = stack::try_grow(SWEEP_STACK, || {
            if starts {
                h.last_pass.set(now);
                h.marking.set(false);
            }
            let to = self.sweep(from, budget);
            if to.is_some() {
                h.cursor.set(to);
            } else {
                h.cursor.set(None);
                h.marked.set(h.marking.get());
                h.swept_at_tick.set(self.ticks());
            }
        });
    }

    /// Sweeps live-table slots from `from`, at most `budget` of them:
    /// marks resting procs, hibernates the ones marked by the pass before.
    /// Returns the slot to go on from, `None` at the table's end.
    fn sweep(&self, from: usize, budget: usize) -> Option<usize> {
        let current = self.current();
        let mut marked = false;
        let mut ranges = Ranges {
            buf: [(0, 0); BATCH],
            len: 0,
        };
        let next = self.for_each_live_from(from, budget, |p| match p.get().state.get() {
            State::Resting => {
                p.get().state.set(State::RestingSeen);
                marked = true;
            }
            State::RestingSeen if Some(p) != current => {
                // Declined: it stays RestingSeen, and the next pass
                // declines again, cheaply.
                if let Some(r) = self.copy_out(p) {
                    ranges.push(r);
                }
            }
            _ => {}
        });
        ranges.flush();
        if marked {
            self.hibernation().marking.set(true);
        }
        next
    }

    /// The live part of `p`'s stack, `[sp, end)`, if it can be hibernated.
    fn live_range(p: ProcRef) -> Option<(usize, usize)> {
        let pr = p.get();
        let sp = pr.ctx.saved_sp()?;
        let seg = pr.chain.current();
        let end = seg.base_addr() + seg.size();
        (sp >= seg.bottom() && sp < seg.top() && end - sp <= MAX_COPY).then_some((sp, end))
    }

    /// Copies the live part of `p`'s stack to the heap and marks it
    /// `Hibernated`; returns the page range to give back, or `None` (and
    /// changes nothing) when `p` cannot be hibernated or the copy cannot be
    /// allocated.
    fn copy_out(&self, p: ProcRef) -> Option<(usize, usize)> {
        let h = self.hibernation();
        let (sp, end) = Self::live_range(p)?;
        // Whole pages only: the one holding `sp` is partly dead stack below
        // it, which may be zeroed. Segments are at least a page and aligned
        // to their size, so on x86 both ends hold; checked, not assumed.
        let lo = sp & !(h.page - 1);
        if lo < p.get().chain.current().bottom() || end % h.page != 0 {
            return None;
        }
        let layout = copy_layout(end - sp);
        // SAFETY: the layout has a non-zero size (sp < end).
        let copy = unsafe { std::alloc::alloc(layout) };
        if copy.is_null() {
            return None;
        }
        // SAFETY: [sp, end) is the live part of a suspended proc's current
        // segment: mapped read-write, and nothing writes it while the proc
        // rests (see the design note). `copy` is a fresh block of that size.
        unsafe { std::ptr::copy_nonoverlapping(sp as *const u8, copy, end - sp) };
        let pr = p.get();
        pr.stash.set(copy);
        pr.state.set(State::Hibernated);
        h.count.set(h.count.get() + 1);
        Some((lo, end))
    }

    /// `make_runnable` of a hibernated proc: puts its stack back and makes
    /// it runnable (true: the caller queues it). Out of line, so that the
    /// wake inlined into every channel operation stays small.
    #[cold]
    #[inline(never)]
    pub(super) fn wake_hibernated(&self, p: ProcRef) -> bool {
        self.restore(p);
        p.get().state.set(State::Runnable);
        true
    }

    /// Puts back the stack of the hibernated proc `p` (state `Hibernated`),
    /// leaving it `Resting`; the caller moves it on.
    #[cold]
    #[inline(never)]
    pub(super) fn restore(&self, p: ProcRef) {
        stack::grow(RESTORE_STACK, || {
            let h = self.hibernation();
            let pr = p.get();
            // The same range copy_out took: a hibernated proc's saved stack
            // pointer and chain do not change.
            let Some((sp, end)) = Self::live_range(p) else {
                crate::fatal(format_args!(
                    "hibernated proc {} lost its stack range",
                    pr.id
                ))
            };
            let copy = pr.stash.replace(std::ptr::null_mut());
            if copy.is_null() {
                crate::fatal(format_args!(
                    "proc {} hibernated without a saved stack",
                    pr.id
                ))
            }
            if cfg!(debug_assertions) {
                // SAFETY: the range is the proc's own and mapped (zero
                // pages since it was given back).
                let now = unsafe { std::slice::from_raw_parts(sp as *const u8, end - sp) };
                if let Some(i) = now.iter().position(|&b| b != 0) {
                    crate::fatal(format_args!(
                        "the stack of hibernated proc {} was written at {:#x} while it rested",
                        pr.id,
                        sp + i
                    ));
                }
            }
            // SAFETY: [sp, end) is where the copy came from: the proc's
            // segment, still allocated to it (a resting proc keeps its
            // chain), mapped read-write; `copy` holds `end - sp` bytes.
            unsafe { std::ptr::copy_nonoverlapping(copy, sp as *mut u8, end - sp) };
            // SAFETY: allocated in copy_out with this layout.
            unsafe { std::alloc::dealloc(copy, copy_layout(end - sp)) };
            pr.state.set(State::Resting);
            h.count.set(h.count.get() - 1);
        });
    }
}

/// The layout of a stack copy of `len` bytes.
fn copy_layout(len: usize) -> Layout {
    Layout::from_size_align(len, 16).expect("a stack copy's layout")
}

/// Gives the pages `[lo, hi)` back to the kernel; they read as zeros after.
fn give_back((lo, hi): (usize, usize)) {
    // SAFETY: the range covers only stack pages of hibernated procs, whose
    // live bytes were copied out; dropping them loses nothing.
    let r = unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED) };
    if r != 0 {
        // The range is the pool's own and page-aligned: a refusal means
        // procrt's bookkeeping is wrong.
        let err = std::io::Error::last_os_error();
        crate::fatal(format_args!(
            "madvise(MADV_DONTNEED) of hibernated stacks [{lo:#x}, {hi:#x}) failed: {err}"
        ));
    }
}
