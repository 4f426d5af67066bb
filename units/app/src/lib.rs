//! Fixture unit `app`: imports from `counter` through its TOC, so it is a
//! dependent of `counter`; counts the reloads it is told of. Also holds the
//! loops the benchmark times (a TOC call, a direct call and a call through
//! a plain function pointer, all made from inside a unit).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reloads of a provider that `on_reload` was told of.
static RELOADS_SEEN: AtomicU64 = AtomicU64::new(0);
/// The generation in the last `on_reload`.
static LAST_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Two calls to `counter::bump` through the TOC; returns the second.
pub extern "C" fn bump_twice(by: u64) -> u64 {
    bump(by);
    bump(by)
}

/// `counter::version()`, through the TOC.
pub extern "C" fn provider_version() -> u64 {
    version()
}

/// `RELOADS_SEEN << 32 | LAST_GENERATION`.
pub extern "C" fn reloads_seen() -> u64 {
    (RELOADS_SEEN.load(Ordering::Relaxed) << 32) | LAST_GENERATION.load(Ordering::Relaxed)
}

extern "C" fn on_reload(_provider: procrt_toc_abi::AbiStr, generation: u64) {
    RELOADS_SEEN.fetch_add(1, Ordering::Relaxed);
    LAST_GENERATION.store(generation, Ordering::Relaxed);
}

/// `n` calls of `counter::add` through the TOC slot.
pub extern "C" fn loop_toc(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        acc = add(acc, black_box(i));
    }
    acc
}

#[inline(never)]
extern "C" fn local_add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// `n` direct calls of a local (not inlined) function.
pub extern "C" fn loop_direct(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        acc = local_add(acc, black_box(i));
    }
    acc
}

/// `n` calls through a plain function pointer kept in memory (reloaded from
/// memory before each call, as a TOC slot is).
pub extern "C" fn loop_indirect(n: u64, f: extern "C" fn(u64, u64) -> u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        acc = black_box(f)(acc, black_box(i));
    }
    acc
}

procrt_toc_abi::unit! {
    name: "app",
    exports: {
        fn bump_twice(by: u64) -> u64;
        fn provider_version() -> u64;
        fn reloads_seen() -> u64;
        fn loop_toc(n: u64) -> u64;
        fn loop_direct(n: u64) -> u64;
        fn loop_indirect(n: u64, f: extern "C" fn(u64, u64) -> u64) -> u64;
    },
    imports: {
        from "counter" {
            fn bump(by: u64) -> u64;
            fn version() -> u64;
            fn add(a: u64, b: u64) -> u64;
        }
    },
    on_reload: on_reload,
}
