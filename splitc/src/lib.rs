//! C functions compiled with `-fsplit-stack`, for procrt's tests, examples
//! and benchmarks (`c/split.c`; `build.rs` says how they are built).
//!
//! Each function grows the stack by itself: its prologue compares the stack
//! pointer with the TCB slot and calls `__morestack` — procrt's, which this
//! crate does not define — when the frame does not fit. Every function but
//! [`split_stack_pointer`] has frames of about 1 KiB (`FRAME` bytes of
//! locals) and recurses `n` levels; the `expected_*` functions give the
//! results they must return.
//!
//! The declarations are `extern "C-unwind"`: the C is built with
//! `-fexceptions`, so a Rust panic raised in a callback may cross it.

use std::os::raw::c_double;

/// Bytes of locals in each level's frame (`WORDS` 8-byte words in
/// `c/split.c`).
pub const FRAME: usize = 8 * WORDS as usize;

/// Words of locals in each level's frame.
const WORDS: u64 = 125;

/// The result of `split_struct`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Triple {
    /// First field.
    pub a: i64,
    /// Second field.
    pub b: i64,
    /// Third field.
    pub c: i64,
}

extern "C-unwind" {
    /// Recurses `n + 1` levels of ~1 KiB frames; returns the sum of the
    /// bytes each level stored ([`expected_recurse`]), or `u64::MAX` when a
    /// frame was corrupted.
    pub fn split_recurse(n: u32, seed: u64) -> u64;
    /// Ten integer arguments (stack-passed beyond the sixth on x86_64, all
    /// of them on i386), `n + 1` levels: [`expected_args`], or `i64::MIN`
    /// when a frame was corrupted.
    #[allow(clippy::too_many_arguments)]
    pub fn split_args(
        n: u32,
        a: i64,
        b: i64,
        c: i64,
        d: i64,
        e: i64,
        f: i64,
        g: i64,
        h: i64,
        i: i64,
    ) -> i64;
    /// Returns `x + (n + 1) * inc` as a double (xmm0 / st0).
    pub fn split_double(n: u32, x: c_double, inc: c_double) -> c_double;
    /// Returns `x + (n + 1) * inc`, computed in long double (st0).
    pub fn split_long_double(n: u32, x: c_double, inc: c_double) -> c_double;
    /// Returns a struct in memory (`ret $4` on i386).
    pub fn split_struct(n: u32, x: i64) -> Triple;
    /// `a + b + c` of [`split_struct`]`(n, x)`.
    pub fn split_struct_sum(n: u32, x: i64) -> i64;
    /// Recurses `n` levels, then returns `back(x) + n + 1`.
    pub fn split_call_back(n: u32, back: extern "C-unwind" fn(u64) -> u64, x: u64) -> u64;
    /// Recurses `n` levels, then calls a function compiled without
    /// `-fsplit-stack` (x86_64; on i686 a split-stack copy of it, see
    /// `build.rs`); returns [`expected_nosplit`].
    pub fn split_calls_nosplit(n: u32, x: u64) -> u64;
    /// Returns `x + 1` from a 16 KiB frame of which it touches one word:
    /// a split on every call from a small segment.
    pub fn split_big_frame(x: u64) -> u64;
    /// Recurses `n` levels of 16-byte frames, then calls a function whose
    /// 240-byte frame (no stack check beyond the stack pointer's) calls
    /// [`split_big_frame`]: swept over `n`, it enters `__morestack` at
    /// the lowest point the ABI allows. Returns `x + 1 + n`.
    pub fn split_small_chain(n: u32, x: u64) -> u64;
    /// An address in the caller's newest frame.
    pub fn split_stack_pointer() -> usize;
}

/// What `split_recurse(n, seed)` returns: the wrapping sum, over levels
/// `l` in `0..=n` and words `k` in `0..WORDS`, of `seed + 131 l + k`, in
/// closed form.
pub fn expected_recurse(n: u32, seed: u64) -> u64 {
    let levels = n as u64 + 1;
    let level_sum = (n as u64) * (n as u64 + 1) / 2;
    let word_sum = WORDS * (WORDS - 1) / 2;
    levels
        .wrapping_mul(WORDS)
        .wrapping_mul(seed)
        .wrapping_add(level_sum.wrapping_mul(131).wrapping_mul(WORDS))
        .wrapping_add(levels.wrapping_mul(word_sum))
}

/// What `split_args(n, a, ..., i)` returns.
#[allow(clippy::too_many_arguments)]
pub fn expected_args(
    n: u32,
    a: i64,
    b: i64,
    c: i64,
    d: i64,
    e: i64,
    f: i64,
    g: i64,
    h: i64,
    i: i64,
) -> i64 {
    (0..=n as i64)
        .map(|k| {
            let level = n as i64 - k;
            let i = i + k;
            level + a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h + 9 * i
        })
        .sum()
}

/// What `split_struct(n, x)` returns.
pub fn expected_struct(n: u32, x: i64) -> Triple {
    let k = n as i64 + 1;
    Triple {
        a: x + k,
        b: 2 * x + 2 * k,
        c: 3 * x + 3 * k,
    }
}

/// What `split_calls_nosplit(n, x)` returns.
pub fn expected_nosplit(x: u64) -> u64 {
    (0..2048u64).map(|i| x.wrapping_add(i) as u8 as u64).sum()
}
