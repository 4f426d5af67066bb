//! Fixture unit `counter`, version 3, whose state gained a field and which exports **no** `migrate`: its reload must be refused and version 2 keep running.

use std::sync::atomic::{AtomicU64, Ordering};

const VERSION: u64 = 3;

procrt_toc_abi::state! {
    /// A changed layout: one more field.
    pub struct Counter { pub calls: AtomicU64, pub migrated_from: AtomicU64 }
    static COUNTER = Counter { calls: AtomicU64::new(0), migrated_from: AtomicU64::new(0) };
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
