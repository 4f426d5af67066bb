//! `procrt-bench`: channel workloads on procrt against tokio, may and OS
//! threads, one workload per process.
//!
//! ```text
//! procrt-bench [IMPL] pingpong N      [--chan bounded|unbounded]
//! procrt-bench [IMPL] skynet          [--via join|chan]
//! procrt-bench [IMPL] skynet10k       [--via join|chan]
//! procrt-bench [IMPL] ring N          [--procs P] [--chan bounded|unbounded]
//! procrt-bench [IMPL] idle N          [--unguarded] [--segment BYTES]
//! procrt-bench [IMPL] echo C          [--messages M]
//! procrt-bench nodepingpong N
//! procrt-bench prefork W              [--requests R]
//! procrt-bench compare [--quick] [--runs R]
//! ```
//!
//! `IMPL` is `procrt` (the default), `tokio`, `may` or `threads`. Each
//! workload prints exactly one line on stdout, `RESULT IMPL WORKLOAD
//! key=value...`, and one companion line on stderr, `INFO IMPL WORKLOAD
//! key=value...` (the variant chosen, how many procs fit, the peak RSS).
//! Exit status: 0 done, 1 failed (a wrong sum, a crash), 2 bad arguments,
//! 3 skipped (a workload an implementation does not sensibly run; the
//! reason is on stderr).
//!
//! # What each workload measures
//!
//! Every timing starts after the runtime is up (inside `block_on`, inside
//! the first coroutine, inside the first thread), and stops before it is
//! torn down.
//!
//! - **pingpong N**: two procs and two channels; one message each way per
//!   round trip. After `N / 10` (at most 10,000) warm-up round trips, the
//!   pinger times N round trips: `ns_per_rt` is nanoseconds per round trip.
//! - **skynet** / **skynet10k**: a 10-ary tree of procs with 1,000,000
//!   (10,000) leaves, 1,111,111 (11,111) procs in all. A leaf returns its
//!   number; an inner proc spawns its ten children and sums their results,
//!   through their join handles (`--via join`) or through a channel they
//!   all send on (`--via chan`). `total_ms` is the time to the root's sum,
//!   which must be 499999500000 (49995000). `peak_rss_kib` on the INFO
//!   line is the process's peak resident set (`VmHWM`).
//! - **ring N**: P procs (10,000; 1,000 for OS threads) in a ring, each
//!   with a channel; a proc receives a hop count, forwards it less one to
//!   the next proc, and the proc that receives 0 reports back. One lap (P
//!   hops) warms up; then `ns_per_hop` is the time from injecting N to that
//!   report, over N. A stop token sent round the ring ends the procs.
//! - **idle N**: N procs each parked in `recv` on a channel of its own.
//!   `rss_per_proc` is the growth of the resident set (`/proc/self/statm`)
//!   from just before the first spawn to the moment all are parked and
//!   idle, over the number that fit, in bytes. For procrt, idle means
//!   hibernated: the root waits (at most four `DEFAULT_HIBERNATE_AFTER`,
//!   2 s) until the runtime has given back the stack pages of procs resting
//!   in `recv`; `rss_per_proc_fresh` (INFO) is the growth right after they
//!   parked. The peers' memory does not change with waiting. The vectors holding the senders and
//!   handles are filled before the first reading, so they do not count.
//!   procrt runs guarded by default (at most ~32k live segments, the
//!   `vm.max_map_count` limit: a spawn past it fails and `n` says how many
//!   fit) or `--unguarded` (4 KiB first segments unless `--segment`).
//!
//! - **echo C**: a TCP echo server (procrt, or tokio's current-thread
//!   runtime) driven over loopback by one client with C connections:
//!   `msgs_per_sec`, `p50_us`, `p99_us`; see [`echo`].
//!
//! - **nodepingpong N** (procrt only): pingpong between procs on two nodes
//!   (OS processes linked by a unix socket): `ns_per_rt`. Beside it, the
//!   single-node `pingpong`.
//! - **prefork W** (procrt only): an acceptor node hands each accepted TCP
//!   connection, as a file descriptor in a message, to one of W worker
//!   nodes that answer HTTP keep-alive requests (W = 0: it serves them
//!   itself); 8 client threads send R requests in all: `requests_per_sec`.
//!   See [`nodes`].
//!
//! # How memory is measured
//!
//! Resident set size from `/proc/self/statm` (current) and `VmHWM` from
//! `/proc/self/status` (peak); see [`mem`]. Both are per process, so
//! `compare` re-executes this binary for every run of every workload: the
//! figures of one run do not leak into the next, and a crash costs one
//! cell of the table, not the table.

mod compare;
mod echo;
mod mem;
mod nodes;
mod on_may;
mod on_procrt;
mod on_threads;
mod on_tokio;

use std::process::ExitCode;

/// Leaves of the full skynet tree.
pub const SKYNET_LEAVES: u64 = 1_000_000;
/// Leaves of `skynet10k`.
pub const SKYNET10K_LEAVES: u64 = 10_000;
/// Procs in the ring (green threads).
pub const RING_PROCS: usize = 10_000;
/// The ring's stop token: a proc passes it on and leaves.
pub const RING_STOP: u64 = u64::MAX;
/// Upper bounds on counts taken from the command line, so that no loop
/// runs unbounded: round trips, hops, idle procs.
pub const MAX_ROUND_TRIPS: u64 = 100_000_000;
/// See [`MAX_ROUND_TRIPS`].
pub const MAX_HOPS: u64 = 100_000_000;
/// See [`MAX_ROUND_TRIPS`].
pub const MAX_IDLE: usize = 2_000_000;
/// See [`MAX_ROUND_TRIPS`]; also bounds the ring.
pub const MAX_PROCS: usize = 1_000_000;

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imp {
    Procrt,
    Tokio,
    May,
    Threads,
}

impl Imp {
    pub const ALL: [Imp; 4] = [Imp::Procrt, Imp::Tokio, Imp::May, Imp::Threads];

    pub fn name(self) -> &'static str {
        match self {
            Imp::Procrt => "procrt",
            Imp::Tokio => "tokio",
            Imp::May => "may",
            Imp::Threads => "threads",
        }
    }

    fn parse(s: &str) -> Option<Imp> {
        Imp::ALL.into_iter().find(|i| i.name() == s)
    }
}

/// Which channel a workload uses where there is a choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChanKind {
    /// Holds one message (`sync_channel(1)`, `tokio::sync::mpsc::channel(1)`).
    Bounded,
    /// Unbounded (`channel()`, `unbounded_channel()`).
    Unbounded,
}

impl ChanKind {
    pub fn name(self) -> &'static str {
        match self {
            ChanKind::Bounded => "bounded1",
            ChanKind::Unbounded => "unbounded",
        }
    }
}

/// How a skynet node collects its children's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Join,
    Chan,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Join => "join",
            Via::Chan => "chan",
        }
    }
}

/// One workload with its parameters.
#[derive(Clone, Debug)]
pub enum Workload {
    Pingpong {
        round_trips: u64,
        chan: Option<ChanKind>,
    },
    Skynet {
        leaves: u64,
        via: Option<Via>,
    },
    Ring {
        hops: u64,
        procs: Option<usize>,
        chan: Option<ChanKind>,
    },
    Idle {
        n: usize,
        unguarded: bool,
        segment: Option<usize>,
    },
    Echo {
        conns: usize,
        messages: Option<usize>,
    },
    NodePingpong {
        round_trips: u64,
    },
    Prefork {
        workers: usize,
        requests: Option<usize>,
    },
}

impl Workload {
    /// The workload's name on the RESULT line.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Pingpong { .. } => "pingpong",
            Workload::Skynet { leaves, .. } if *leaves == SKYNET10K_LEAVES => "skynet10k",
            Workload::Skynet { .. } => "skynet",
            Workload::Ring { .. } => "ring",
            Workload::Idle { .. } => "idle",
            Workload::Echo { .. } => "echo",
            Workload::NodePingpong { .. } => "nodepingpong",
            Workload::Prefork { .. } => "prefork",
        }
    }
}

/// What a workload measured.
#[derive(Clone, Debug)]
pub enum Outcome {
    Pingpong {
        ns_per_rt: f64,
    },
    Skynet {
        total_ms: f64,
        sum: u64,
    },
    Ring {
        ns_per_hop: f64,
    },
    Idle {
        rss_per_proc: u64,
        n: usize,
    },
    Echo {
        conns: usize,
        msgs_per_sec: f64,
        p50_us: f64,
        p99_us: f64,
    },
    NodePingpong {
        ns_per_rt: f64,
    },
    Prefork {
        workers: usize,
        requests_per_sec: f64,
    },
}

/// A workload's outcome plus the companion facts for the INFO line.
#[derive(Clone, Debug)]
pub struct Report {
    pub outcome: Outcome,
    /// `key=value` pairs printed on stderr after the RESULT line.
    pub info: Vec<(&'static str, String)>,
}

impl Report {
    pub fn new(outcome: Outcome) -> Report {
        Report {
            outcome,
            info: Vec::new(),
        }
    }

    pub fn with(mut self, key: &'static str, value: impl ToString) -> Report {
        self.info.push((key, value.to_string()));
        self
    }
}

/// Why a workload did not produce a result.
#[derive(Debug)]
pub enum Failure {
    /// The implementation does not sensibly run this workload.
    Skipped(String),
    /// It ran and went wrong.
    Failed(String),
}

/// The expected skynet sum for `leaves` leaves: 0 + 1 + ... + (leaves - 1).
pub fn skynet_expected(leaves: u64) -> u64 {
    leaves * (leaves - 1) / 2
}

/// Warm-up round trips before timing `round_trips` of them.
pub fn warmup_round_trips(round_trips: u64) -> u64 {
    (round_trips / 10).min(10_000)
}

fn usage() -> &'static str {
    "usage:\n  \
     procrt-bench [procrt|tokio|may|threads] pingpong N [--chan bounded|unbounded]\n  \
     procrt-bench [procrt|tokio|may|threads] skynet|skynet10k [--via join|chan]\n  \
     procrt-bench [procrt|tokio|may|threads] ring N [--procs P] [--chan bounded|unbounded]\n  \
     procrt-bench [procrt|tokio|may|threads] idle N [--unguarded] [--segment BYTES]\n  \
     procrt-bench [procrt|tokio] echo C [--messages M]\n  \
     procrt-bench [procrt] nodepingpong N\n  \
     procrt-bench [procrt] prefork W [--requests R]\n  \
     procrt-bench compare [--quick] [--runs R]"
}

/// Parses a count in `1..=max`, accepting `_` separators (`1_000_000`).
fn parse_count<T>(what: &str, s: Option<String>, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + Default + std::fmt::Display + Copy,
{
    let s = s.ok_or_else(|| format!("{what}: a number is missing"))?;
    let v: T = s
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{what}: not a number: {s}"))?;
    if v <= T::default() || v > max {
        return Err(format!("{what}: {v} is not in 1..={max}"));
    }
    Ok(v)
}

fn parse_chan(s: Option<String>) -> Result<ChanKind, String> {
    match s.as_deref() {
        Some("bounded") => Ok(ChanKind::Bounded),
        Some("unbounded") => Ok(ChanKind::Unbounded),
        other => Err(format!(
            "--chan: expected bounded or unbounded, got {other:?}"
        )),
    }
}

fn parse_via(s: Option<String>) -> Result<Via, String> {
    match s.as_deref() {
        Some("join") => Ok(Via::Join),
        Some("chan") => Ok(Via::Chan),
        other => Err(format!("--via: expected join or chan, got {other:?}")),
    }
}

/// Parses `WORKLOAD ARGS...` (the implementation already taken off).
fn parse_workload(mut args: impl Iterator<Item = String>) -> Result<Workload, String> {
    let name = args.next().ok_or("no workload given")?;
    let mut w = match name.as_str() {
        "pingpong" => Workload::Pingpong {
            round_trips: parse_count("pingpong N", args.next(), MAX_ROUND_TRIPS)?,
            chan: None,
        },
        "skynet" => Workload::Skynet {
            leaves: SKYNET_LEAVES,
            via: None,
        },
        "skynet10k" => Workload::Skynet {
            leaves: SKYNET10K_LEAVES,
            via: None,
        },
        "ring" => Workload::Ring {
            hops: parse_count("ring N", args.next(), MAX_HOPS)?,
            procs: None,
            chan: None,
        },
        "idle" => Workload::Idle {
            n: parse_count("idle N", args.next(), MAX_IDLE)?,
            unguarded: false,
            segment: None,
        },
        "echo" => Workload::Echo {
            conns: parse_count("echo C", args.next(), echo::MAX_CONNS)?,
            messages: None,
        },
        "nodepingpong" => Workload::NodePingpong {
            round_trips: parse_count("nodepingpong N", args.next(), MAX_ROUND_TRIPS)?,
        },
        "prefork" => {
            let s = args.next().ok_or("prefork W: a number is missing")?;
            let workers: usize = s
                .parse()
                .map_err(|_| format!("prefork W: not a number: {s}"))?;
            if workers > nodes::MAX_WORKERS {
                return Err(format!(
                    "prefork W: {workers} is not in 0..={}",
                    nodes::MAX_WORKERS
                ));
            }
            Workload::Prefork {
                workers,
                requests: None,
            }
        }
        other => return Err(format!("unknown workload: {other}")),
    };
    while let Some(flag) = args.next() {
        match (&mut w, flag.as_str()) {
            (Workload::Pingpong { chan, .. }, "--chan")
            | (Workload::Ring { chan, .. }, "--chan") => *chan = Some(parse_chan(args.next())?),
            (Workload::Skynet { via, .. }, "--via") => *via = Some(parse_via(args.next())?),
            (Workload::Ring { procs, .. }, "--procs") => {
                *procs = Some(parse_count("--procs", args.next(), MAX_PROCS)?)
            }
            (Workload::Idle { unguarded, .. }, "--unguarded") => *unguarded = true,
            (Workload::Idle { segment, .. }, "--segment") => {
                *segment = Some(parse_count("--segment", args.next(), 1usize << 30)?)
            }
            (Workload::Prefork { requests, .. }, "--requests") => {
                *requests = Some(parse_count("--requests", args.next(), 10_000_000usize)?)
            }
            (Workload::Echo { messages, .. }, "--messages") => {
                *messages = Some(parse_count("--messages", args.next(), 10_000_000usize)?)
            }
            (_, other) => return Err(format!("{name}: unknown argument: {other}")),
        }
    }
    Ok(w)
}

/// Runs one workload on one implementation in this process.
fn run_one(imp: Imp, w: &Workload) -> Result<Report, Failure> {
    match imp {
        Imp::Procrt => on_procrt::run(w),
        Imp::Tokio => on_tokio::run(w),
        Imp::May => on_may::run(w),
        Imp::Threads => on_threads::run(w),
    }
}

/// The RESULT line's `key=value` part.
fn result_fields(o: &Outcome) -> String {
    match o {
        Outcome::Pingpong { ns_per_rt } => format!("ns_per_rt={ns_per_rt:.1}"),
        Outcome::Skynet { total_ms, sum } => format!("total_ms={total_ms:.3} sum={sum}"),
        Outcome::Ring { ns_per_hop } => format!("ns_per_hop={ns_per_hop:.1}"),
        Outcome::Idle { rss_per_proc, n } => format!("rss_per_proc={rss_per_proc} n={n}"),
        Outcome::Echo {
            conns,
            msgs_per_sec,
            p50_us,
            p99_us,
        } => format!(
            "conns={conns} msgs_per_sec={msgs_per_sec:.0} p50_us={p50_us:.1} p99_us={p99_us:.1}"
        ),
        Outcome::NodePingpong { ns_per_rt } => format!("ns_per_rt={ns_per_rt:.1}"),
        Outcome::Prefork {
            workers,
            requests_per_sec,
        } => format!("workers={workers} requests_per_sec={requests_per_sec:.0}"),
    }
}

fn main() -> ExitCode {
    // A worker node started by a node workload plays its role and exits.
    if nodes::worker_main() {
        return ExitCode::SUCCESS;
    }
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("compare") {
        args.next();
        return compare::main(args);
    }
    if matches!(
        args.peek().map(String::as_str),
        Some("-h" | "--help") | None
    ) {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    }
    let imp = match args.peek().and_then(|s| Imp::parse(s)) {
        Some(imp) => {
            args.next();
            imp
        }
        None => Imp::Procrt,
    };
    let w = match parse_workload(args) {
        Ok(w) => w,
        Err(msg) => {
            eprintln!("procrt-bench: {msg}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    match run_one(imp, &w) {
        Ok(report) => {
            println!(
                "RESULT {} {} {}",
                imp.name(),
                w.name(),
                result_fields(&report.outcome)
            );
            let mut info = format!("INFO {} {}", imp.name(), w.name());
            for (k, v) in &report.info {
                info.push_str(&format!(" {k}={v}"));
            }
            info.push_str(&format!(" peak_rss_kib={}", mem::peak_rss_kib()));
            eprintln!("{info}");
            if let Outcome::Skynet { sum, .. } = report.outcome {
                if let Workload::Skynet { leaves, .. } = w {
                    if sum != skynet_expected(leaves) {
                        eprintln!(
                            "procrt-bench: WRONG SUM: got {sum}, expected {}",
                            skynet_expected(leaves)
                        );
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Skipped(why)) => {
            eprintln!("SKIP {} {}: {why}", imp.name(), w.name());
            ExitCode::from(3)
        }
        Err(Failure::Failed(why)) => {
            eprintln!("FAIL {} {}: {why}", imp.name(), w.name());
            ExitCode::FAILURE
        }
    }
}
