//! The floor under every hand-off between procs: two contexts that do
//! nothing but switch to each other with `procrt_switch`.
//!
//! # Design
//!
//! A round trip between two procs (a ping-pong over channels, a yield to a
//! partner) is two switches plus bookkeeping. This measures the two
//! switches alone, with no scheduler, queue or channel, so that a
//! benchmark can tell how much of a round trip is the switch itself
//! (`benches/switch.rs`, `procrt/switch_round_trip_*`).
//!
//! The caller's context and a partner on a small heap stack take turns,
//! each calling the same non-inlined `hop`, which calls `switch`. Two
//! shapes:
//!
//! - [`Shape::OneLoop`]: both sides run the same loop function, so every
//!   return after a switch goes where the CPU's return-stack buffer
//!   predicts (it holds the other side's identical chain).
//! - [`Shape::TwoLoops`]: the partner runs a different loop function, as
//!   the two procs of a ping-pong do. A switch is symmetric (the resumed
//!   side returns into its own chain while the buffer holds the other
//!   side's), so each switch mispredicts one return: the one from `hop`
//!   into the loop.
//!
//! Nothing here is unsafe to call: the partner's stack is owned by the
//! measuring function, and the partner has returned (through `exit`)
//! before that function returns.

use super::{exit, switch, Context, Exit};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Which loop the partner runs; see the module note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Both sides run the same loop function.
    OneLoop,
    /// The partner runs a loop function of its own.
    TwoLoops,
}

/// What both sides share: their contexts, the shape and how many round
/// trips to make.
struct Pair {
    /// `[caller, partner]`.
    ctx: [Context; 2],
    shape: Shape,
    round_trips: u64,
    /// Set by the caller before its last switch: the partner's loop ends.
    done: Cell<bool>,
}

/// One switch to the other side; returns when it switches back.
#[inline(never)]
fn hop(pair: &Pair, me: usize) {
    // SAFETY: `me` is the running side and the other one is suspended
    // (prepared or switched away from) on a live stack: the two take turns
    // and neither ends before the caller's last switch.
    unsafe { switch(&pair.ctx[me], &pair.ctx[1 - me]) }
}

/// The loop of [`Shape::OneLoop`] (both sides) and the caller's loop of
/// [`Shape::TwoLoops`]: `n` hops.
#[inline(never)]
fn common_loop(pair: &Pair, me: usize, n: u64) {
    for _ in 0..n {
        hop(pair, me);
    }
}

/// The partner's loop of [`Shape::TwoLoops`]: hops until told to stop.
#[inline(never)]
fn partner_loop(pair: &Pair) {
    while !pair.done.get() {
        hop(pair, 1);
    }
}

/// The partner's entry function.
unsafe extern "C" fn partner(arg: *mut u8) -> Exit {
    // SAFETY: `arg` is the `Pair` in `round_trips`' frame, which waits for
    // this function to return before it returns itself.
    let pair = unsafe { &*(arg as *const Pair) };
    match pair.shape {
        // The caller's `round_trips` switches, plus its final one, which
        // finds this loop's last `hop` and ends it.
        Shape::OneLoop => common_loop(pair, 1, pair.round_trips),
        Shape::TwoLoops => partner_loop(pair),
    }
    // SAFETY: this partner is running and ends here; the caller is
    // suspended in its final `hop` and resumes from it.
    unsafe { exit(&pair.ctx[1], &pair.ctx[0]) }
}

/// Runs `n` round trips (2n switches) between the calling thread's context
/// and a partner, and returns the time they took.
pub fn round_trips(n: u64, shape: Shape) -> Duration {
    // 16 KiB: the loops need a few hundred bytes.
    let mut stack = vec![0u128; 1024];
    let top = (stack.as_mut_ptr() as usize + stack.len() * 16) & !15;
    let mut pair = Pair {
        ctx: [Context::current(), Context::default()],
        shape,
        round_trips: n,
        done: Cell::new(false),
    };
    // Every later use, the partner's included, goes through this pointer.
    let raw = &raw mut pair;
    // SAFETY: `raw` points at `pair`, alive and not otherwise borrowed.
    // `stack` is ours, 16-byte aligned at `top`, used by nothing else, and
    // outlives the partner, which ends before this function returns. A
    // limit of 0 means "no limit known" to split-stack code, and none runs
    // on the partner.
    unsafe { (*raw).ctx[1] = Context::prepare(top, 0, partner, raw.cast()) };
    // SAFETY: as above; only shared references are made from here on.
    let pair = unsafe { &*raw };
    let start = Instant::now();
    common_loop(pair, 0, n);
    let elapsed = start.elapsed();
    // The partner waits in its last hop: let it leave its loop and end.
    pair.done.set(true);
    hop(pair, 0);
    drop(stack);
    elapsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_run_and_return() {
        // The partner ends through `exit` and the caller resumes after its
        // final hop; a lost or extra switch would hang or crash here.
        for shape in [Shape::OneLoop, Shape::TwoLoops] {
            for n in [0, 1, 1000] {
                let limit = super::super::stack_limit();
                round_trips(n, shape);
                assert_eq!(super::super::stack_limit(), limit, "{shape:?} {n}");
            }
        }
    }
}
