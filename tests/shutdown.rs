//! Dropping a runtime with procs still alive: each is cancelled, unwound at
//! its blocking point with its destructors run once, and its `JoinHandle`
//! says `Cancelled`.

mod util;

use procrt::{
    park, spawn, unparker, yield_now, Builder, JoinError, JoinHandle, Runtime, SpawnErrorKind,
    Unparker,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use util::DropCounter;

/// The system allocator, except that once [`POISON`] is set, freed memory
/// is filled with `0xab` and never reused: a read through a dangling
/// pointer then sees garbage instead of the plausible old contents. Only
/// child processes set it.
struct PoisoningAlloc;

static POISON: AtomicBool = AtomicBool::new(false);

// SAFETY: every method forwards to `System` with the caller's arguments,
// except that `dealloc` may keep (leak) a block instead of freeing it, which
// no caller can observe.
unsafe impl GlobalAlloc for PoisoningAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if POISON.load(Ordering::Relaxed) {
            // SAFETY: the caller hands back `layout.size()` bytes at `ptr`
            // that it no longer uses; we keep them, poisoned.
            unsafe { std::ptr::write_bytes(ptr, 0xab, layout.size()) };
            return;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: PoisoningAlloc = PoisoningAlloc;

/// Handles of procs, carried out of `block_on` (everything runs on one
/// thread, so an `Rc` does).
type Handles = Rc<RefCell<Vec<JoinHandle<()>>>>;

/// Asserts that every handle reports a cancelled proc.
fn assert_all_cancelled(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        assert!(
            h.is_finished(),
            "proc {:?} not finished after its runtime dropped",
            h.id()
        );
        match h.join() {
            Err(e @ JoinError::Cancelled) => {
                assert!(e.is_cancelled());
                assert!(!e.is_panic());
                assert_eq!(e.panic_message(), None);
            }
            Err(e) => panic!("expected Cancelled, got {e:?}"),
            Ok(()) => panic!("a proc parked forever returned"),
        }
    }
}

#[test]
fn dropping_the_runtime_cancels_parked_and_runnable_procs() {
    const PARKED: usize = 20;
    const YIELDED_THEN_PARKED: usize = 10;
    const JOINERS: usize = 5;
    let counters: Vec<Rc<Cell<usize>>> = (0..PARKED + YIELDED_THEN_PARKED + JOINERS + 1)
        .map(|_| Rc::default())
        .collect();
    let handles: Handles = Rc::default();
    let woken_from_outside: Rc<RefCell<Option<Unparker>>> = Rc::default();

    let rt = Runtime::new().unwrap();
    let (c, hs, wo) = (
        counters.clone(),
        handles.clone(),
        woken_from_outside.clone(),
    );
    rt.block_on(move || {
        let mut parked_handles = Vec::new();
        for counter in &c[..PARKED] {
            let g = DropCounter::new(counter);
            parked_handles.push(
                spawn(move || {
                    let _g = g;
                    loop {
                        park();
                    }
                })
                .unwrap(),
            );
        }
        for counter in &c[PARKED..PARKED + YIELDED_THEN_PARKED] {
            let g = DropCounter::new(counter);
            hs.borrow_mut().push(
                spawn(move || {
                    let _g = g;
                    for _ in 0..3 {
                        yield_now();
                    }
                    loop {
                        park();
                    }
                })
                .unwrap(),
            );
        }
        // Procs blocked in `join` on a proc that never ends.
        for counter in &c[PARKED + YIELDED_THEN_PARKED..][..JOINERS] {
            let g = DropCounter::new(counter);
            let target = parked_handles.pop().unwrap();
            hs.borrow_mut().push(
                spawn(move || {
                    let _g = g;
                    let _ = target.join();
                    unreachable!("joined a proc that parks forever");
                })
                .unwrap(),
            );
        }
        // One that is woken from outside block_on: runnable when the
        // runtime drops.
        let g = DropCounter::new(c.last().unwrap());
        let wo2 = wo.clone();
        hs.borrow_mut().push(
            spawn(move || {
                let _g = g;
                *wo2.borrow_mut() = Some(unparker());
                loop {
                    park();
                }
            })
            .unwrap(),
        );
        hs.borrow_mut().extend(parked_handles);
    });

    let total = PARKED + YIELDED_THEN_PARKED + JOINERS + 1;
    assert_eq!(rt.live_procs(), total);
    // One segment per parked proc, none leaked by the root.
    assert_eq!(rt.pool_stats().live_segments, total);
    assert!(
        counters.iter().all(|c| c.get() == 0),
        "a destructor ran before the drop"
    );
    woken_from_outside.borrow().as_ref().unwrap().unpark();

    drop(rt);
    for (i, c) in counters.iter().enumerate() {
        assert_eq!(c.get(), 1, "destructor of proc {i} ran {} times", c.get());
    }
    let hs = std::mem::take(&mut *handles.borrow_mut());
    // JOINERS of the PARKED handles were moved into the joiners.
    assert_eq!(hs.len(), total - JOINERS);
    assert_all_cancelled(hs);
    // The unparker outlives its proc and its runtime: a no-op.
    woken_from_outside.borrow().as_ref().unwrap().unpark();
}

#[test]
fn cancellation_unwinds_the_whole_stack_innermost_first() {
    let order = Rc::new(RefCell::new(Vec::new()));

    struct Note(Rc<RefCell<Vec<u32>>>, u32);
    impl Drop for Note {
        fn drop(&mut self) {
            self.0.borrow_mut().push(self.1);
        }
    }

    #[inline(never)]
    fn descend(order: Rc<RefCell<Vec<u32>>>, depth: u32) {
        let _n = Note(order.clone(), depth);
        if depth == 5 {
            loop {
                park();
            }
        }
        descend(order, depth + 1);
    }

    let handles: Handles = Rc::default();
    let rt = Runtime::new().unwrap();
    let (o, hs) = (order.clone(), handles.clone());
    rt.block_on(move || hs.borrow_mut().push(spawn(move || descend(o, 0)).unwrap()));
    assert!(order.borrow().is_empty());
    drop(rt);
    assert_eq!(*order.borrow(), [5, 4, 3, 2, 1, 0]);
    assert_all_cancelled(std::mem::take(&mut *handles.borrow_mut()));
}

#[test]
fn spawn_while_the_runtime_drops_is_refused() {
    struct SpawnOnDrop(Rc<RefCell<Option<SpawnErrorKind>>>);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let r = spawn(|| ());
            *self.0.borrow_mut() = Some(r.map(|_| ()).unwrap_err().kind().clone());
        }
    }
    let seen: Rc<RefCell<Option<SpawnErrorKind>>> = Rc::default();
    let s = seen.clone();
    let rt = Runtime::new().unwrap();
    rt.block_on(move || {
        drop(
            spawn(move || {
                let _g = SpawnOnDrop(s);
                loop {
                    park();
                }
            })
            .unwrap(),
        )
    });
    drop(rt);
    assert_eq!(*seen.borrow(), Some(SpawnErrorKind::ShuttingDown));
}

/// A destructor that parks again: run while its proc is being cancelled,
/// it blocks the unwinding for good.
struct ParkOnDrop;

impl Drop for ParkOnDrop {
    fn drop(&mut self) {
        park();
    }
}

/// Spawns, in a fresh runtime, two parked procs with drop counters and one
/// whose unwinding blocks (at position `stuck_at` among the three), then
/// drops the runtime. Returns how many counters were dropped, and the
/// handles.
fn drop_with_a_stuck_proc(stuck_at: usize) -> (usize, Vec<JoinHandle<()>>) {
    let dropped = Rc::new(Cell::new(0));
    let handles: Handles = Rc::default();
    let rt = Runtime::new().unwrap();
    let (d, hs) = (dropped.clone(), handles.clone());
    rt.block_on(move || {
        for i in 0..3 {
            let h = if i == stuck_at {
                spawn(|| {
                    let _stuck = ParkOnDrop;
                    loop {
                        park();
                    }
                })
            } else {
                let g = DropCounter::new(&d);
                spawn(move || {
                    let _g = g;
                    loop {
                        yield_now();
                        park();
                    }
                })
            };
            hs.borrow_mut().push(h.unwrap());
        }
    });
    assert_eq!(rt.live_procs(), 3);
    // Returns: the stuck proc is abandoned, not waited for.
    drop(rt);
    let hs = std::mem::take(&mut *handles.borrow_mut());
    (dropped.get(), hs)
}

#[test]
fn a_destructor_that_blocks_while_cancelled_is_abandoned() {
    // The stuck proc is the last one cancelled: the others are unwound
    // before it blocks.
    let (dropped, handles) = drop_with_a_stuck_proc(2);
    assert_eq!(dropped, 2);
    assert_all_cancelled(handles);
}

#[test]
fn a_stuck_proc_does_not_keep_later_procs_from_unwinding() {
    // The stuck proc is cancelled first, and stays suspended in the middle
    // of its unwinding; the procs cancelled after it must still be unwound
    // (their destructors run), not abandoned with it.
    let (dropped, handles) = drop_with_a_stuck_proc(0);
    assert_eq!(
        dropped, 2,
        "procs cancelled after a stuck one were abandoned"
    );
    assert_all_cancelled(handles);
}

const WAKE_DETACHED: &str = "wake-detached-during-drop";

/// The child's part of `a_destructor_may_wake_a_detached_proc_during_drop`.
fn wake_detached_during_drop() {
    POISON.store(true, Ordering::Relaxed);
    // Proc A parks holding a guard that, when A is unwound, unparks proc B.
    // B is detached (no JoinHandle) and parked; its only other owner is
    // that unparker. A is spawned first, so the runtime's drop cancels A
    // first; A's guard wakes B, B runs, is cancelled and reaped, and is
    // freed: the drop must not touch B again.
    struct UnparkOnDrop(Rc<RefCell<Option<Unparker>>>);
    impl Drop for UnparkOnDrop {
        fn drop(&mut self) {
            if let Some(u) = self.0.borrow_mut().take() {
                u.unpark();
            }
        }
    }
    let b_cancelled = Rc::new(Cell::new(0));
    let rt = Runtime::new().unwrap();
    let bc = b_cancelled.clone();
    rt.block_on(move || {
        let cell: Rc<RefCell<Option<Unparker>>> = Rc::default();
        let guard = UnparkOnDrop(cell.clone());
        drop(
            spawn(move || {
                let _g = guard;
                loop {
                    park();
                }
            })
            .unwrap(),
        );
        let g = DropCounter::new(&bc);
        drop(
            spawn(move || {
                let _g = g;
                *cell.borrow_mut() = Some(unparker());
                drop(cell);
                loop {
                    park();
                }
            })
            .unwrap(),
        );
    });
    assert_eq!(rt.live_procs(), 2);
    drop(rt);
    assert_eq!(b_cancelled.get(), 1);
    println!("child: drop finished");
}

#[test]
fn a_destructor_may_wake_a_detached_proc_during_drop() {
    if util::child_role().as_deref() == Some(WAKE_DETACHED) {
        wake_detached_during_drop();
        return;
    }
    let out = util::run_child(
        "a_destructor_may_wake_a_detached_proc_during_drop",
        WAKE_DETACHED,
    );
    assert!(
        out.status.success() && out.stdout.contains("child: drop finished"),
        "the runtime's drop touched a freed proc: {}",
        out.describe()
    );
}

#[test]
fn block_on_returns_when_its_root_ends_though_others_still_yield() {
    // "Runs f ... until f returns": a proc that keeps yielding stays in the
    // runtime (runnable) and is cancelled by the drop. The yielder gives up
    // after a budget, so a block_on that waits for it ends too, and the
    // test fails instead of hanging.
    const BUDGET: u32 = 100_000;
    let yields = Rc::new(Cell::new(0u32));
    let dropped = Rc::new(Cell::new(0));
    let handles: Handles = Rc::default();
    let rt = Runtime::new().unwrap();
    let (y, d, hs) = (yields.clone(), dropped.clone(), handles.clone());
    let v = rt.block_on(move || {
        let g = DropCounter::new(&d);
        hs.borrow_mut().push(
            Builder::new()
                .name("spinner")
                .spawn(move || {
                    let _g = g;
                    while y.get() < BUDGET {
                        y.set(y.get() + 1);
                        yield_now();
                    }
                })
                .unwrap(),
        );
        "root done"
    });
    assert_eq!(v, "root done");
    assert!(
        yields.get() < BUDGET,
        "block_on kept running a yielding proc after its root returned ({} yields)",
        yields.get()
    );
    assert_eq!(rt.live_procs(), 1);
    drop(rt);
    assert_eq!(dropped.get(), 1);
    assert_all_cancelled(std::mem::take(&mut *handles.borrow_mut()));
}

#[test]
fn a_runtime_dropped_inside_a_proc_of_another_cancels_its_procs() {
    // Runtime B is left with a parked proc, then moved into a proc of
    // runtime A and dropped there: B's proc is unwound, and A goes on.
    let dropped = Rc::new(Cell::new(0));
    let b = Runtime::new().unwrap();
    let d = dropped.clone();
    b.block_on(move || {
        let g = DropCounter::new(&d);
        drop(
            spawn(move || {
                let _g = g;
                loop {
                    park();
                }
            })
            .unwrap(),
        );
    });
    assert_eq!(b.live_procs(), 1);
    let a = Runtime::new().unwrap();
    let d = dropped.clone();
    let (seen, me_before, me_after) = a.block_on(move || {
        let me_before = procrt::current().id();
        drop(b);
        let me_after = procrt::current().id();
        // A still schedules its own procs.
        let v = spawn(|| {
            yield_now();
            6
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(v, 6);
        (d.get(), me_before, me_after)
    });
    assert_eq!(seen, 1, "B's proc was not unwound");
    assert_eq!(me_before, me_after);
    assert_eq!(dropped.get(), 1);
}
