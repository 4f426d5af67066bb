//! The skynet benchmark as a test: a 10-ary tree of procs whose leaves
//! return their index; the root sums them. Guarded mode, default settings.
//! (<https://github.com/atemerev/skynet>.)

use procrt::{spawn, Runtime};

/// Sums the leaves `num .. num + size` of a `div`-ary tree of procs.
fn skynet(num: u64, size: u64, div: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let sub = size / div;
    let handles: Vec<_> = (0..div)
        .map(|i| spawn(move || skynet(num + i * sub, sub, div)).unwrap())
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn skynet_sums_every_leaf() {
    // The full million in release; a debug build is ten times slower per
    // spawn, so it climbs a smaller tree.
    let leaves: u64 = if cfg!(debug_assertions) {
        10_000
    } else {
        1_000_000
    };
    let rt = Runtime::new().unwrap();
    let sum = rt.block_on(move || skynet(0, leaves, 10));
    assert_eq!(sum, leaves * (leaves - 1) / 2);
    if leaves == 1_000_000 {
        assert_eq!(sum, 499_999_500_000);
    }
    let stats = rt.pool_stats();
    // Depth-first fan-out keeps about one root-to-leaf path of stacks
    // alive, far below the ~32k guarded segments the kernel allows.
    assert!(stats.peak_live_segments < 1_000, "{stats:?}");
    assert!(
        rt.peak_live_procs() < 1_000,
        "peak live procs {}",
        rt.peak_live_procs()
    );
    assert_eq!(stats.live_segments, 0, "{stats:?}");
    assert_eq!(rt.live_procs(), 0);
    // Every proc of the tree was spawned: 1 + 10 + 100 + ... + leaves.
    let procs = (0..)
        .map(|k| 10u64.pow(k))
        .take_while(|&n| n <= leaves)
        .sum::<u64>();
    assert_eq!(stats.total_allocs, procs, "{stats:?}");
}
