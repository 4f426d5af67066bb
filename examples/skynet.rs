//! skynet: a 10-ary tree of procs. Each leaf returns its own number; each
//! inner node spawns its ten children and returns the sum of their results.
//! With a million leaves the root's sum is 499999500000.
//!
//! ```text
//! cargo run --release --example skynet                     # 1,000,000 leaves
//! cargo run --release --example skynet -- --short          # 10,000 leaves
//! cargo run --release --example skynet -- --leaves 100000  # any power of ten
//! cargo run --release --example skynet -- --unguarded      # no guard pages
//! cargo run --release --example skynet -- --segment 65536  # first segment bytes
//! ```
//!
//! `procrt::spawn` starts a child at once, so the tree runs depth-first:
//! a child's subtree finishes before its parent spawns the next child, and
//! the live procs are one root-to-leaf path (7 with a million leaves: the
//! root proc and six levels below it). The example prints that peak, and
//! the peak number of live stack segments, from the runtime's counters.

use std::process::ExitCode;
use std::time::Instant;

/// First segment size used unless `--segment` says otherwise: the
/// runtime's default (64 KiB). 16 KiB was measured too, in 20 to 30
/// interleaved release runs of a million leaves. It made no difference
/// beyond the run-to-run noise, so the example keeps the default.
const DEFAULT_SEGMENT: usize = procrt::stack::DEFAULT_SEGMENT;

/// Smallest first segment `--unguarded` accepts: the stack use measured
/// below, with room to spare.
const UNGUARDED_MIN_SEGMENT: usize = 16 * 1024;

struct Args {
    leaves: u64,
    unguarded: bool,
    segment: usize,
}

fn usage() -> String {
    "usage: skynet [--short] [--leaves N (a power of 10)] [--unguarded] [--segment BYTES]"
        .to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        leaves: 1_000_000,
        unguarded: false,
        segment: DEFAULT_SEGMENT,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--short" => args.leaves = 10_000,
            "--leaves" => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("--leaves needs a value\n{}", usage()))?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--leaves: not a number: {v}"))?;
                if !is_power_of_ten(n) || n > 1_000_000_000 {
                    return Err(format!("--leaves: {n} is not a power of 10 up to 10^9"));
                }
                args.leaves = n;
            }
            "--unguarded" => args.unguarded = true,
            "--segment" => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("--segment needs a value\n{}", usage()))?;
                args.segment = v
                    .parse()
                    .map_err(|_| format!("--segment: not a number: {v}"))?;
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument: {other}\n{}", usage())),
        }
    }
    Ok(args)
}

fn is_power_of_ten(mut n: u64) -> bool {
    if n == 0 {
        return false;
    }
    while n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

/// The subtree of `size` leaves whose first leaf is number `num`.
fn skynet(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / 10;
    let children: Vec<_> = (0..10)
        .map(|i| {
            procrt::spawn(move || skynet(num + i * step, step))
                .unwrap_or_else(|e| panic!("skynet: spawn failed: {e}"))
        })
        .collect();
    children
        .into_iter()
        .map(|h| h.join().expect("skynet: child failed"))
        .sum()
}

fn main() -> ExitCode {
    let mut args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };

    if args.unguarded && args.segment < UNGUARDED_MIN_SEGMENT {
        eprintln!(
            "skynet: --unguarded needs segments of at least {UNGUARDED_MIN_SEGMENT} bytes \
             (nothing would catch an overflow); using that"
        );
        args.segment = UNGUARDED_MIN_SEGMENT;
    }
    let builder = procrt::Runtime::builder().first_segment_size(args.segment);
    let builder = if args.unguarded {
        // SAFETY: unguarded() drops the guard page below each segment, so
        // nothing would detect a proc running past the bottom of its stack.
        // We promise that every proc stays inside its first segment, which
        // is at least 16 KiB here. Each proc runs `skynet` once: a few
        // frames of spawn, join and a Vec of ten handles. There is no
        // recursion inside one proc (a child is a new proc on its own
        // segment) and no foreign code. Painting the stack showed that
        // skynet's deepest point is about 6 KiB below a proc's top in a
        // debug build and about 1.2 KiB in release.
        unsafe { builder.unguarded() }
    } else {
        builder
    };
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skynet: cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    let leaves = args.leaves;
    let start = Instant::now();
    let sum = rt.block_on(move || skynet(0, leaves));
    let elapsed = start.elapsed();

    let expected = leaves * (leaves - 1) / 2;
    let stats = rt.pool_stats();
    let mode = if args.unguarded {
        "unguarded"
    } else {
        "guarded"
    };
    println!("skynet: {leaves} leaves, sum {sum}");
    println!("elapsed:             {:.3} ms", elapsed.as_secs_f64() * 1e3);
    println!("procs spawned:       {}", procs_in_tree(leaves));
    println!("peak live procs:     {}", rt.peak_live_procs());
    println!("peak live segments:  {}", stats.peak_live_segments);
    println!(
        "mode:                {mode}, first segment {} bytes asked",
        args.segment
    );
    if sum != expected {
        eprintln!("skynet: WRONG SUM: got {sum}, expected {expected}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Procs in a 10-ary tree of `leaves` leaves, counting the root (which
/// `block_on` runs as a proc too).
fn procs_in_tree(leaves: u64) -> u64 {
    let mut total = 0;
    let mut level = 1;
    while level <= leaves {
        total += level;
        level *= 10;
    }
    total
}
