//! Two procs bounce a counter back and forth over a pair of channels.
//!
//! ```text
//! cargo run --release --example ping_pong             # 1,000,000 round trips
//! cargo run --release --example ping_pong -- --short  # 10,000, for CI
//! ```
//!
//! Each round trip is two messages and two switches: the pinger sends and
//! blocks in `recv`, the ponger (woken onto the front of the run queue) runs,
//! replies and blocks in turn. The program checks the final count.

use procrt::chan::channel;
use std::time::Instant;

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let rounds: u64 = if short { 10_000 } else { 1_000_000 };
    let (elapsed, last) = procrt::run(move || {
        let (to_pong, pong_rx) = channel::<u64>();
        let (to_ping, ping_rx) = channel::<u64>();
        let ponger = procrt::Builder::new()
            .name("pong")
            .spawn(move || {
                // Reply with n + 1 until the pinger hangs up.
                for n in pong_rx {
                    if to_ping.send(n + 1).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn pong");
        let start = Instant::now();
        let mut n = 0;
        for _ in 0..rounds {
            to_pong.send(n).expect("pong hung up");
            n = ping_rx.recv().expect("pong hung up") + 1;
        }
        let elapsed = start.elapsed();
        drop(to_pong);
        ponger.join().expect("pong panicked");
        (elapsed, n)
    });
    if last != 2 * rounds {
        eprintln!("ping_pong: counter is {last}, expected {}", 2 * rounds);
        std::process::exit(1);
    }
    println!(
        "ping_pong: {rounds} round trips, counter {last}, {:.1} ms, {:.1} ns per round trip",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / rounds as f64
    );
}
