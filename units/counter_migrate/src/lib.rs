//! Fixture unit `counter`, version 4: the changed layout of version 3 plus a `migrate` that carries the call count over.

use std::sync::atomic::{AtomicU64, Ordering};

const VERSION: u64 = 4;

procrt_toc_abi::state! {
    /// A changed layout: one more field.
    pub struct Counter { pub calls: AtomicU64, pub migrated_from: AtomicU64 }
    static COUNTER = Counter { calls: AtomicU64::new(0), migrated_from: AtomicU64::new(0) };
}

include!("../../counter_common.rs");

/// Reads the old layout (`Counter { calls: AtomicU64 }`, versions 1 and 2)
/// and fills the new one.
extern "C" fn migrate(old: *const u8, _old_hash: u64, old_size: usize) -> i32 {
    if old_size != std::mem::size_of::<AtomicU64>() {
        return 1;
    }
    // SAFETY: the loader passes the old image's state static, `old_size`
    // bytes laid out as `calls: AtomicU64` (checked by its size above).
    let calls = unsafe { (*(old as *const AtomicU64)).load(Ordering::Relaxed) };
    COUNTER.calls.store(calls, Ordering::Relaxed);
    COUNTER.migrated_from.store(calls, Ordering::Relaxed);
    0
}

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
    migrate: migrate,
}
