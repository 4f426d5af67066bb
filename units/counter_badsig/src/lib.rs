//! Fixture unit `counter` whose `bump` takes a `u32`: its signature hash
//! differs from what importers declare, so loading it as `counter` must be
//! refused.

use std::sync::atomic::{AtomicU64, Ordering};

const VERSION: u64 = 9;

procrt_toc_abi::state! {
    /// Same layout as versions 1 and 2.
    pub struct Counter { pub calls: AtomicU64 }
    static COUNTER = Counter { calls: AtomicU64::new(0) };
}

/// The changed signature.
pub extern "C" fn bump(by: u32) -> u64 {
    let n = COUNTER.calls.fetch_add(u64::from(by), Ordering::Relaxed) + u64::from(by);
    (VERSION << 48) | n
}

/// This version's number.
pub extern "C" fn version() -> u64 {
    VERSION
}

/// `a + b`.
pub extern "C" fn add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// As in version 1.
pub extern "C" fn pause(host: extern "C" fn()) -> u64 {
    host();
    VERSION * 1000 + VERSION
}

procrt_toc_abi::unit! {
    name: "counter",
    exports: {
        fn bump(by: u32) -> u64;
        fn version() -> u64;
        fn add(a: u64, b: u64) -> u64;
        fn pause(host: extern "C" fn()) -> u64;
    },
    imports: {},
    state: COUNTER,
}
