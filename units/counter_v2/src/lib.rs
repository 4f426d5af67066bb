//! Fixture unit `counter`, version 2: a call counter kept across reloads.
//! Versions 1 and 2 have the same state layout, so a reload copies it.

use std::sync::atomic::{AtomicU64, Ordering};

const VERSION: u64 = 2;

procrt_toc_abi::state! {
    /// What survives a reload.
    pub struct Counter { pub calls: AtomicU64 }
    static COUNTER = Counter { calls: AtomicU64::new(0) };
}

include!("../../counter_common.rs");

procrt_toc_abi::unit! {
    name: "counter",
    exports: {
        fn bump(by: u64) -> u64;
        fn version() -> u64;
        fn add(a: u64, b: u64) -> u64;
        fn pause(host: extern "C" fn()) -> u64;
    },
    imports: {},
    state: COUNTER,
}
