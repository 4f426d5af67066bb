//! Property tests of stack growth: random programs of nested `grow` calls,
//! frames of 0 to 64 KiB, yields between procs, panics at random depths.
//!
//! Each case runs 1 to 4 procs, each interpreting its own program. Every
//! frame writes a pattern into its locals and checks it on the way back
//! (a frame overwritten by another proc or by the growth machinery is
//! caught there); every live frame's address range is registered and must
//! not overlap another proc's (segments of different procs never overlap);
//! each proc's outcome is compared with a model; afterwards every chain is
//! back to one segment and the pool holds no live segment.

use proptest::prelude::*;
use std::cell::RefCell;

/// One step of a proc's program.
#[derive(Clone, Debug)]
enum Step {
    /// Call `grow(bytes)` and run the rest of the program inside it.
    Grow(usize),
    /// Push a frame of one of the `FRAME_SIZES` (by index), grown for first,
    /// and run the rest of the program from inside it.
    Frame(usize),
    /// Let the other procs run.
    Yield,
    /// Panic here with a payload naming the proc and step.
    Panic,
}

/// Frame sizes a program can push: 0 to 64 KiB.
const FRAME_SIZES: [usize; 6] = [0, 64, 1024, 4096, 16384, 65536];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0usize..=65536).prop_map(Step::Grow),
        4 => (0..FRAME_SIZES.len()).prop_map(Step::Frame),
        2 => Just(Step::Yield),
        1 => Just(Step::Panic),
    ]
}

fn program() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 0..24)
}

thread_local! {
    /// Address ranges of the frames alive now: (proc, lo, hi).
    static LIVE: RefCell<Vec<(usize, usize, usize)>> = const { RefCell::new(Vec::new()) };
}

/// The byte a frame of proc `p` at step `i` stores at offset `k`.
fn pattern(p: usize, i: usize, k: usize) -> u8 {
    (p.wrapping_mul(131) ^ i.wrapping_mul(31) ^ k) as u8
}

/// Pushes a frame of `N` bytes, registers it, runs the rest, checks it.
#[inline(never)]
fn frame<const N: usize>(p: usize, prog: &[Step], i: usize) -> u64 {
    let mut buf = [0u8; N];
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern(p, i, k);
    }
    // By reference: a by-value black_box would copy the array (a second
    // N bytes of frame).
    std::hint::black_box(&mut buf);
    let lo = buf.as_ptr() as usize;
    let hi = lo + N;
    if N > 0 {
        LIVE.with(|l| {
            let mut l = l.borrow_mut();
            for &(q, a, b) in l.iter() {
                assert!(
                    q == p || hi <= a || b <= lo,
                    "proc {p}'s frame [{lo:#x},{hi:#x}) overlaps proc {q}'s [{a:#x},{b:#x})"
                );
            }
            l.push((p, lo, hi));
        });
    }
    // Unregister on the way out even when the rest panics.
    struct Unregister(usize, usize);
    impl Drop for Unregister {
        fn drop(&mut self) {
            LIVE.with(|l| {
                l.borrow_mut()
                    .retain(|&(q, a, _)| !(q == self.0 && a == self.1))
            });
        }
    }
    let _u = Unregister(p, lo);
    let rest = run(p, prog, i + 1);
    for (k, &b) in buf.iter().enumerate() {
        assert_eq!(
            b,
            pattern(p, i, k),
            "proc {p}: frame of step {i} corrupted at byte {k}"
        );
    }
    rest + N as u64
}

/// Interprets `prog` from step `i` for proc `p`; returns the model's value.
fn run(p: usize, prog: &[Step], i: usize) -> u64 {
    let Some(s) = prog.get(i) else { return 0 };
    match *s {
        Step::Grow(bytes) => procrt::stack::grow(bytes, || run(p, prog, i + 1)) + 1,
        Step::Frame(f) => {
            let n = FRAME_SIZES[f];
            // Room for the frame plus the interpreter's own frames.
            procrt::stack::grow(n + 16 * 1024, || match f {
                0 => frame::<0>(p, prog, i),
                1 => frame::<64>(p, prog, i),
                2 => frame::<1024>(p, prog, i),
                3 => frame::<4096>(p, prog, i),
                4 => frame::<16384>(p, prog, i),
                _ => frame::<65536>(p, prog, i),
            })
        }
        Step::Yield => {
            procrt::yield_now();
            run(p, prog, i + 1)
        }
        Step::Panic => std::panic::panic_any(format!("proc {p} step {i}")),
    }
}

/// What proc `p` running `prog` must produce: its value, or the panic
/// message of its first `Panic` step.
fn model(p: usize, prog: &[Step]) -> Result<u64, String> {
    let mut v = 0;
    for (i, s) in prog.iter().enumerate() {
        match *s {
            Step::Grow(_) => v += 1,
            Step::Frame(f) => v += FRAME_SIZES[f] as u64,
            Step::Yield => {}
            Step::Panic => return Err(format!("proc {p} step {i}")),
        }
    }
    Ok(v)
}

fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let expected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("proc "));
            if !expected {
                prev(info);
            }
        }));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn nested_grow_programs_keep_frames_intact(progs in prop::collection::vec(program(), 1..5)) {
        quiet_panics();
        let rt = procrt::Runtime::builder()
            .first_segment_size(procrt::stack::MIN_SEGMENT_GUARDED)
            .build()
            .unwrap();
        let before = rt.pool_stats();
        let outcomes = {
            let progs = progs.clone();
            rt.block_on(move || {
                let handles: Vec<_> = progs
                    .into_iter()
                    .enumerate()
                    .map(|(p, prog)| {
                        procrt::Builder::new()
                            .stack_size(procrt::stack::MIN_SEGMENT_GUARDED)
                            .max_stack(64 << 20)
                            .spawn(move || {
                                let v = run(p, &prog, 0);
                                let u = procrt::stack::usage().unwrap();
                                assert_eq!(u.segments, 1, "proc {p}: chain not back to one segment");
                                v
                            })
                            .unwrap()
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().map_err(|e| e.panic_message().unwrap_or("?").to_owned()))
                    .collect::<Vec<_>>()
            })
        };
        for (p, prog) in progs.iter().enumerate() {
            prop_assert_eq!(&outcomes[p], &model(p, prog), "proc {}", p);
        }
        let after = rt.pool_stats();
        prop_assert_eq!(after.live_segments, before.live_segments);
        prop_assert_eq!(after.live_bytes, before.live_bytes);
        prop_assert!(LIVE.with(|l| l.borrow().is_empty()));
    }
}
