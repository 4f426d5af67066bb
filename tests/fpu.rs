//! Floating-point control state (the SSE MXCSR and the x87 control word) is
//! per proc: the x86 ABIs make their control bits callee-saved, so the
//! switch saves and restores them with the other callee-saved registers.
#![cfg(any(target_arch = "x86", target_arch = "x86_64"))]

use procrt::{spawn, yield_now};
use std::cell::Cell;
use std::rc::Rc;

/// MXCSR after reset: all exceptions masked, round to nearest.
const MXCSR_DEFAULT: u32 = 0x1f80;
/// MXCSR rounding-control field (bits 13-14); both set: toward zero.
const MXCSR_ROUND_TOWARD_ZERO: u32 = 0x6000;
/// x87 control word after `fninit`: exceptions masked, 64-bit precision,
/// round to nearest.
const FPU_CW_DEFAULT: u16 = 0x037f;
/// x87 control word: precision control 24-bit (bits 8-9 = 00), rounding
/// toward zero (bits 10-11 = 11).
const FPU_CW_ODD: u16 = 0x0c7f;

/// MXCSR's exception flags (bits 0-5): sticky status, set by arithmetic
/// (1/3 sets "precision"), not part of the control state.
const MXCSR_FLAGS: u32 = 0x3f;

/// The control bits of MXCSR (its exception flags masked off).
fn mxcsr() -> u32 {
    mxcsr_raw() & !MXCSR_FLAGS
}

fn mxcsr_raw() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: stmxcsr stores the 4-byte MXCSR into `v`, which we own; SSE
    // is part of both targets' baseline.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
    v
}

fn set_mxcsr(v: u32) {
    // SAFETY: ldmxcsr reads 4 bytes from `v`; the values used here only
    // change the rounding mode (no exception is unmasked).
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, preserves_flags)) };
}

fn fpu_cw() -> u16 {
    let mut v: u16 = 0;
    // SAFETY: fnstcw stores the 2-byte x87 control word into `v`.
    unsafe { std::arch::asm!("fnstcw [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
    v
}

fn set_fpu_cw(v: u16) {
    // SAFETY: fldcw reads 2 bytes from `v`; the values used here keep every
    // x87 exception masked.
    unsafe { std::arch::asm!("fldcw [{}]", in(reg) &v, options(nostack, preserves_flags)) };
}

/// 1/3 in f32 through SSE, with the current rounding mode. `black_box`
/// keeps the division at run time.
fn third() -> f32 {
    std::hint::black_box(1.0f32) / std::hint::black_box(3.0f32)
}

#[test]
fn rounding_mode_is_per_proc() {
    let outside_mxcsr = mxcsr();
    let outside_cw = fpu_cw();
    let seen = Rc::new(Cell::new((0u32, 0u16)));
    let s = seen.clone();
    let (mine_before, mine_after, nearest, toward_zero) = procrt::run(move || {
        // Procs start with the default control state.
        assert_eq!(mxcsr(), MXCSR_DEFAULT);
        assert_eq!(fpu_cw(), FPU_CW_DEFAULT);
        let nearest = third();
        let changer = spawn(|| {
            set_mxcsr(MXCSR_DEFAULT | MXCSR_ROUND_TOWARD_ZERO);
            set_fpu_cw(FPU_CW_ODD);
            let before = (mxcsr(), fpu_cw());
            let toward_zero = third();
            yield_now();
            let after = (mxcsr(), fpu_cw());
            // Rounding still toward zero after others ran.
            assert_eq!(third().to_bits(), toward_zero.to_bits());
            set_mxcsr(MXCSR_DEFAULT);
            set_fpu_cw(FPU_CW_DEFAULT);
            (before, after, toward_zero)
        })
        .unwrap();
        // The changer yielded with its own state: ours is untouched.
        assert_eq!(mxcsr(), MXCSR_DEFAULT);
        assert_eq!(third().to_bits(), nearest.to_bits());
        let reader = spawn(move || {
            s.set((mxcsr(), fpu_cw()));
            yield_now();
            // And after the changer ran again.
            assert_eq!((mxcsr(), fpu_cw()), (MXCSR_DEFAULT, FPU_CW_DEFAULT));
        })
        .unwrap();
        let (before, after, toward_zero) = changer.join().unwrap();
        reader.join().unwrap();
        (before, after, nearest, toward_zero)
    });
    let want = (MXCSR_DEFAULT | MXCSR_ROUND_TOWARD_ZERO, FPU_CW_ODD);
    assert_eq!(mine_before, want);
    assert_eq!(
        mine_after, want,
        "the proc lost its control state across a yield"
    );
    assert_eq!(
        seen.get(),
        (MXCSR_DEFAULT, FPU_CW_DEFAULT),
        "control state leaked to another proc"
    );
    // 1/3 rounded to nearest is just above 1/3 in f32; toward zero, one ulp
    // below it.
    assert_eq!(nearest.to_bits(), toward_zero.to_bits() + 1);
    // The thread's own state is what it was before block_on.
    assert_eq!(mxcsr(), outside_mxcsr);
    assert_eq!(fpu_cw(), outside_cw);
}

#[test]
fn a_proc_ending_with_a_changed_mode_does_not_leak_it() {
    let outside = (mxcsr(), fpu_cw());
    let after = procrt::run(|| {
        // The child ends without blocking: its end resumes the root through
        // procrt_proc_entry's half switch, which must restore both words.
        spawn(|| {
            set_mxcsr(MXCSR_DEFAULT | MXCSR_ROUND_TOWARD_ZERO);
            set_fpu_cw(FPU_CW_ODD);
        })
        .unwrap()
        .join()
        .unwrap();
        let in_root = (mxcsr(), fpu_cw());
        // The same, with only the x87 control word changed.
        spawn(|| set_fpu_cw(FPU_CW_ODD)).unwrap().join().unwrap();
        let in_root_again = (mxcsr(), fpu_cw());
        let in_next = spawn(|| (mxcsr(), fpu_cw())).unwrap().join().unwrap();
        (in_root, in_root_again, in_next)
    });
    let default = (MXCSR_DEFAULT, FPU_CW_DEFAULT);
    assert_eq!(after, (default, default, default));
    assert_eq!((mxcsr(), fpu_cw()), outside);
}

#[test]
fn a_child_starts_with_the_default_mode_whatever_its_parent_runs_with() {
    // A spawn inside a proc enters the child at once (procrt_start), with no
    // prepared frame: the defaults must be loaded when the parent's words
    // differ, and the parent's own come back when the child ends.
    let outside = (mxcsr(), fpu_cw());
    let cases = [
        (MXCSR_DEFAULT | MXCSR_ROUND_TOWARD_ZERO, FPU_CW_ODD),
        (MXCSR_DEFAULT | MXCSR_ROUND_TOWARD_ZERO, FPU_CW_DEFAULT),
        (MXCSR_DEFAULT, FPU_CW_ODD),
    ];
    let seen = procrt::run(move || {
        cases.map(|(parent_mxcsr, parent_cw)| {
            set_mxcsr(parent_mxcsr);
            set_fpu_cw(parent_cw);
            // Ends without blocking: comes back through procrt_proc_entry.
            let ended = spawn(|| (mxcsr(), fpu_cw())).unwrap().join().unwrap();
            let parent_after_end = (mxcsr(), fpu_cw());
            // Blocks first: the parent resumes through a plain switch.
            let blocked = spawn(|| {
                let first = (mxcsr(), fpu_cw());
                yield_now();
                first
            })
            .unwrap();
            let parent_while_child_waits = (mxcsr(), fpu_cw());
            let blocked = blocked.join().unwrap();
            set_mxcsr(MXCSR_DEFAULT);
            set_fpu_cw(FPU_CW_DEFAULT);
            (ended, blocked, parent_after_end, parent_while_child_waits)
        })
    });
    let default = (MXCSR_DEFAULT, FPU_CW_DEFAULT);
    for ((ended, blocked, after_end, while_waits), parent) in seen.into_iter().zip(cases) {
        assert_eq!(ended, default, "child of a parent in mode {parent:x?}");
        assert_eq!(blocked, default, "child of a parent in mode {parent:x?}");
        assert_eq!(after_end, parent, "the parent's mode after its child ended");
        assert_eq!(
            while_waits, parent,
            "the parent's mode while its child waits"
        );
    }
    assert_eq!((mxcsr(), fpu_cw()), outside);
}
