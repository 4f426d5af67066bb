//! A token travels around a ring of procs connected by channels.
//!
//! ```text
//! cargo run --release --example ring              # 10,000 procs, 1,000,000 hops
//! cargo run --release --example ring -- --short   # 1,000 procs, 100,000 hops
//! ```
//!
//! Proc `i` receives the token from proc `i - 1` and passes it to `i + 1`;
//! the token carries the number of hops left. When it reaches 0 the proc
//! holding it drops its sender, and the hang-up travels round the ring:
//! every proc ends, and the root checks how many hops each one made.

use procrt::chan::{channel, Receiver, Sender};
use std::time::Instant;

/// Forwards tokens from `rx` to `tx` until the ring is broken; returns how
/// many it forwarded or consumed.
fn member(rx: Receiver<u64>, tx: Sender<u64>) -> u64 {
    let mut seen = 0;
    for left in rx.iter() {
        seen += 1;
        if left == 0 || tx.send(left - 1).is_err() {
            break;
        }
    }
    seen
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let (procs, hops): (usize, u64) = if short {
        (1_000, 100_000)
    } else {
        (10_000, 1_000_000)
    };
    let rt = procrt::Runtime::builder()
        .first_segment_size(16 * 1024)
        .build()
        .expect("runtime");
    let (elapsed, seen) = rt.block_on(move || {
        // Channel i feeds proc i; proc i sends on channel i + 1; the root
        // feeds channel 0 and the last proc sends back to the root.
        let (first_tx, mut rx) = channel::<u64>();
        let mut handles = Vec::with_capacity(procs);
        for _ in 0..procs {
            let (tx, next_rx) = channel::<u64>();
            let my_rx = std::mem::replace(&mut rx, next_rx);
            handles.push(procrt::spawn(move || member(my_rx, tx)).expect("spawn ring member"));
        }
        let start = Instant::now();
        first_tx.send(hops).expect("ring broken");
        // The token comes back to the root whenever it completes a lap.
        let mut at_root = 0;
        for left in rx.iter() {
            at_root += 1;
            if left == 0 || first_tx.send(left - 1).is_err() {
                break;
            }
        }
        drop(first_tx);
        drop(rx);
        let seen: u64 = handles
            .into_iter()
            .map(|h| h.join().expect("member panicked"))
            .sum::<u64>()
            + at_root;
        (start.elapsed(), seen)
    });
    // hops + 1 receptions in all: the initial send and one per hop.
    if seen != hops + 1 {
        eprintln!("ring: {seen} receptions, expected {}", hops + 1);
        std::process::exit(1);
    }
    println!(
        "ring: {procs} procs, {hops} hops, {:.1} ms, {:.1} ns per hop; peak live procs {}, peak segments {}",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / hops as f64,
        rt.peak_live_procs(),
        rt.pool_stats().peak_live_segments
    );
}
