//! `procrt-bench compare [--quick] [--runs R]`: every workload on every
//! implementation, each run a child process of its own (this binary run
//! again), interleaved (run 1 of every case, then run 2, ...), then a table
//! of medians with procrt's ratio to each peer, the aims checked, and one
//! `RESULT compare WORKLOAD ...` line per workload.
//!
//! Within a run, the implementations of one workload take turns to go
//! first ([`run_order`]). A run that follows a peer's memory-hungry one is
//! slower on this VM (the kernel reclaims in the background: a procrt
//! skynet right after a `may pingpong` took 59 to 97 ms, against 55 to 59
//! alone), and with a fixed order the same implementation was always the
//! one that came right after the previous workload's peers.
//!
//! A child that runs longer than [`CHILD_TIMEOUT`] is killed and counts as
//! failed; one that exits 3 was skipped (the reason is its stderr). Every
//! count below is fixed, so the whole comparison is bounded: at most
//! cases x runs x [`CHILD_TIMEOUT`], in practice a few minutes.

use crate::Imp;
use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a single child may run.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Runs per case unless `--runs` or `--quick`.
const DEFAULT_RUNS: usize = 5;
/// Most runs `--runs` accepts.
const MAX_RUNS: usize = 50;
/// A case that failed this often is not run again (a crash at the
/// `vm.max_map_count` limit repeats every time, and costs seconds).
const MAX_FAILURES: usize = 2;
/// Characters of a failed child's last stderr line kept for the notes.
const FAILURE_TEXT: usize = 240;
/// The guarded idle aim, bytes per proc (4.6 KiB).
const IDLE_GUARDED_AIM: f64 = 4.6 * 1024.0;
/// The skynet peak-memory aim, KiB (16 MiB).
const SKYNET_RSS_AIM_KIB: f64 = 16.0 * 1024.0;

/// The echo cases: connections, and the names of their three rows.
const ECHO_ROWS: [(usize, [&str; 3]); 3] = [
    (1, ["echo1_tput", "echo1_p50", "echo1_p99"]),
    (100, ["echo100_tput", "echo100_p50", "echo100_p99"]),
    (1000, ["echo1000_tput", "echo1000_p50", "echo1000_p99"]),
];

/// Sizes of one comparison.
struct Sizes {
    runs: usize,
    round_trips: u64,
    thread_round_trips: u64,
    full_skynet: bool,
    hops: u64,
    thread_hops: u64,
    idle: usize,
    thread_idle: usize,
    /// Echo round trips per run, shared among the connections.
    echo_messages: usize,
    /// Round trips of the cross-node pingpong.
    node_round_trips: u64,
    /// Requests per prefork run.
    prefork_requests: usize,
}

impl Sizes {
    fn full(runs: usize) -> Sizes {
        Sizes {
            runs,
            round_trips: 1_000_000,
            thread_round_trips: 100_000,
            full_skynet: true,
            hops: 1_000_000,
            thread_hops: 200_000,
            idle: 100_000,
            thread_idle: 10_000,
            echo_messages: crate::echo::ECHO_MESSAGES,
            node_round_trips: 50_000,
            prefork_requests: 40_000,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            runs: 1,
            round_trips: 100_000,
            thread_round_trips: 10_000,
            full_skynet: false,
            hops: 100_000,
            thread_hops: 20_000,
            idle: 10_000,
            thread_idle: 2_000,
            echo_messages: 5_000,
            node_round_trips: 5_000,
            prefork_requests: 4_000,
        }
    }
}

/// One command line to run `runs` times.
struct Case {
    args: Vec<String>,
    /// Parsed `RESULT` and `INFO` fields of each successful run.
    samples: Vec<HashMap<String, String>>,
    skipped: Option<String>,
    failures: Vec<String>,
}

/// Where a table row takes each column's number from.
struct Row {
    workload: &'static str,
    unit: &'static str,
    field: &'static str,
    /// Case index per implementation, in `Imp::ALL` order.
    cases: [Option<usize>; 4],
}

fn args_of(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// Runs one child: `(stdout, stderr, exit code)`, or an error when it could
/// not start or ran out of time (it is killed then).
fn run_child(args: &[String]) -> Result<(String, String, Option<i32>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > CHILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {CHILD_TIMEOUT:?}; killed"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("wait failed: {e}")),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok((stdout, stderr, status.code()))
}

/// `key=value` fields of the first line starting with `prefix`.
fn fields(text: &str, prefix: &str, into: &mut HashMap<String, String>) -> bool {
    let Some(line) = text.lines().find(|l| l.starts_with(prefix)) else {
        return false;
    };
    for (k, v) in line.split_whitespace().filter_map(|f| f.split_once('=')) {
        into.insert(k.to_owned(), v.to_owned());
    }
    true
}

/// The order of run `run` (from 0): the cases of each workload (the
/// consecutive cases with the same workload name) start at a different
/// implementation each run, so that none always comes first, right after
/// the previous workload's cases.
fn run_order(cases: &[Case], run: usize) -> Vec<usize> {
    let mut order = Vec::with_capacity(cases.len());
    let mut start = 0;
    while start < cases.len() {
        let workload = cases[start].args.get(1);
        let n = cases[start..]
            .iter()
            .take_while(|c| c.args.get(1) == workload)
            .count();
        order.extend((0..n).map(|i| start + (i + run) % n));
        start += n;
    }
    order
}

fn run_case(case: &mut Case) {
    let cmd = case.args.join(" ");
    match run_child(&case.args) {
        Ok((_, stderr, Some(3))) => {
            case.skipped = Some(
                stderr
                    .lines()
                    .find(|l| l.starts_with("SKIP"))
                    .unwrap_or("skipped")
                    .to_owned(),
            );
        }
        Ok((stdout, stderr, Some(0))) => {
            let mut m = HashMap::new();
            let ok = fields(&stdout, "RESULT ", &mut m);
            fields(&stderr, "INFO ", &mut m);
            if ok {
                case.samples.push(m);
            } else {
                case.failures.push(format!("{cmd}: no RESULT line"));
            }
            for l in stderr.lines().filter(|l| !l.starts_with("INFO ")) {
                eprintln!("  [{cmd}] {l}");
            }
        }
        Ok((_, stderr, code)) => {
            // The last line says why (a FAIL line, a panic, an abort),
            // shortened: nested panics repeat themselves.
            let last = stderr.lines().last().unwrap_or("no message");
            let last: String = last.chars().take(FAILURE_TEXT).collect();
            case.failures.push(format!("{cmd}: exit {code:?}: {last}"));
        }
        Err(e) => case.failures.push(format!("{cmd}: {e}")),
    }
}

/// The first three fields of `/proc/loadavg` (1, 5, 15 minutes): the
/// machine is shared, so the table says how busy it was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The median of `field` over a case's samples.
fn case_median(case: &Case, field: &str) -> Option<f64> {
    median(
        case.samples
            .iter()
            .filter_map(|m| m.get(field)?.parse().ok())
            .collect(),
    )
}

/// What a cell shows when there is no number.
fn cell_status(case: Option<&Case>) -> &'static str {
    match case {
        None => "n/a",
        Some(c) if c.skipped.is_some() => "skip",
        Some(c) if !c.failures.is_empty() && c.samples.is_empty() => "FAIL",
        Some(_) => "n/a",
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 1e5 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let mut quick = false;
    let mut runs = None;
    let mut args = args;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--runs" => match args.next().and_then(|v| v.parse::<usize>().ok()) {
                Some(r) if (1..=MAX_RUNS).contains(&r) => runs = Some(r),
                _ => {
                    eprintln!("compare: --runs needs a number in 1..={MAX_RUNS}");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("compare: unknown argument: {other}");
                return ExitCode::from(2);
            }
        }
    }
    let mut sizes = if quick {
        Sizes::quick()
    } else {
        Sizes::full(DEFAULT_RUNS)
    };
    if let Some(r) = runs {
        sizes.runs = r;
    }
    let started = Instant::now();
    let load_before = loadavg();

    // The cases, and the rows that read them.
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |imp: Imp, args: String| -> usize {
        cases.push(Case {
            args: args_of(&format!("{} {args}", imp.name())),
            samples: Vec::new(),
            skipped: None,
            failures: Vec::new(),
        });
        cases.len() - 1
    };
    let per_imp = |f: &mut dyn FnMut(Imp) -> Option<usize>| -> [Option<usize>; 4] {
        let mut out = [None; 4];
        for (slot, imp) in out.iter_mut().zip(Imp::ALL) {
            *slot = f(imp);
        }
        out
    };
    let mut rows = Vec::new();
    let s = &sizes;
    let pingpong = per_imp(&mut |imp| {
        let n = if imp == Imp::Threads {
            s.thread_round_trips
        } else {
            s.round_trips
        };
        Some(add(imp, format!("pingpong {n}")))
    });
    rows.push(Row {
        workload: "pingpong",
        unit: "ns/rt",
        field: "ns_per_rt",
        cases: pingpong,
    });
    if s.full_skynet {
        let skynet = per_imp(&mut |imp| Some(add(imp, "skynet".into())));
        rows.push(Row {
            workload: "skynet",
            unit: "ms",
            field: "total_ms",
            cases: skynet,
        });
        rows.push(Row {
            workload: "skynet_peak_rss",
            unit: "KiB",
            field: "peak_rss_kib",
            cases: skynet,
        });
    }
    let skynet10k = per_imp(&mut |imp| Some(add(imp, "skynet10k".into())));
    rows.push(Row {
        workload: "skynet10k",
        unit: "ms",
        field: "total_ms",
        cases: skynet10k,
    });
    rows.push(Row {
        workload: "skynet10k_peak_rss",
        unit: "KiB",
        field: "peak_rss_kib",
        cases: skynet10k,
    });
    let ring = per_imp(&mut |imp| {
        let n = if imp == Imp::Threads {
            s.thread_hops
        } else {
            s.hops
        };
        Some(add(imp, format!("ring {n}")))
    });
    rows.push(Row {
        workload: "ring",
        unit: "ns/hop",
        field: "ns_per_hop",
        cases: ring,
    });
    let idle = per_imp(&mut |imp| {
        let n = if imp == Imp::Threads {
            s.thread_idle
        } else {
            s.idle
        };
        Some(add(imp, format!("idle {n}")))
    });
    let idle_unguarded = add(Imp::Procrt, format!("idle {} --unguarded", s.idle));
    let mut unguarded_row = idle;
    unguarded_row[0] = Some(idle_unguarded);
    rows.push(Row {
        workload: "idle_unguarded",
        unit: "B/proc",
        field: "rss_per_proc",
        cases: unguarded_row,
    });
    rows.push(Row {
        workload: "idle_guarded",
        unit: "B/proc",
        field: "rss_per_proc",
        cases: idle,
    });

    // The echo server: procrt and tokio only (the same client drives both).
    for (conns, [tput, p50, p99]) in ECHO_ROWS {
        let per_conn = (s.echo_messages / conns).max(5);
        let mut cases = [None; 4];
        for (i, imp) in [Imp::Procrt, Imp::Tokio].into_iter().enumerate() {
            cases[i] = Some(add(imp, format!("echo {conns} --messages {per_conn}")));
        }
        for (workload, unit, field) in [
            (tput, "msg/s", "msgs_per_sec"),
            (p50, "us", "p50_us"),
            (p99, "us", "p99_us"),
        ] {
            rows.push(Row {
                workload,
                unit,
                field,
                cases,
            });
        }
    }

    // Nodes: procrt only (the peers have no nodes); the rows stand beside
    // the single-node pingpong above.
    let mut procrt_only =
        |workload: &'static str, unit: &'static str, field: &'static str, args: String| {
            let mut cases = [None; 4];
            cases[0] = Some(add(Imp::Procrt, args));
            rows.push(Row {
                workload,
                unit,
                field,
                cases,
            });
        };
    procrt_only(
        "node_pingpong",
        "ns/rt",
        "ns_per_rt",
        format!("nodepingpong {}", s.node_round_trips),
    );
    for (w, name) in [
        (0, "prefork_0_workers"),
        (1, "prefork_1_worker"),
        (2, "prefork_2_workers"),
    ] {
        procrt_only(
            name,
            "req/s",
            "requests_per_sec",
            format!("prefork {w} --requests {}", s.prefork_requests),
        );
    }

    // Run them, interleaved.
    let total = cases.len() * sizes.runs;
    eprintln!(
        "compare: {} cases x {} runs = {total} child processes",
        cases.len(),
        sizes.runs
    );
    for run in 0..sizes.runs {
        for i in run_order(&cases, run) {
            let case = &mut cases[i];
            if case.skipped.is_some() || case.failures.len() >= MAX_FAILURES {
                continue;
            }
            eprintln!(
                "compare: run {}/{}: {}",
                run + 1,
                sizes.runs,
                case.args.join(" ")
            );
            run_case(case);
        }
    }

    // The table.
    let imp_names: Vec<&str> = Imp::ALL.iter().map(|i| i.name()).collect();
    println!(
        "procrt-bench compare{}: medians of {} run(s) per cell, each run its own process; \
         load average {load_before} before, {} after",
        if quick { " --quick" } else { "" },
        sizes.runs,
        loadavg()
    );
    let mut header = format!("{:<20} {:<7}", "workload", "unit");
    for name in &imp_names {
        header.push_str(&format!(" {name:>10}"));
    }
    for name in &imp_names[1..] {
        header.push_str(&format!(" {:>15}", format!("procrt/{name}")));
    }
    println!("{header}");
    let mut medians: Vec<[Option<f64>; 4]> = Vec::new();
    for row in &rows {
        let m: [Option<f64>; 4] =
            std::array::from_fn(|i| row.cases[i].and_then(|c| case_median(&cases[c], row.field)));
        let mut line = format!("{:<20} {:<7}", row.workload, row.unit);
        for (i, v) in m.iter().enumerate() {
            let cell = match v {
                Some(v) => fmt_num(*v),
                None => cell_status(row.cases[i].map(|c| &cases[c])).to_owned(),
            };
            line.push_str(&format!(" {cell:>10}"));
        }
        for v in &m[1..] {
            let cell = match (m[0], v) {
                (Some(p), Some(q)) if *q > 0.0 => format!("{:.3}x", p / q),
                _ => "-".to_owned(),
            };
            line.push_str(&format!(" {cell:>15}"));
        }
        println!("{line}");
        medians.push(m);
    }

    // Notes: variants, how many procs fit, skips and failures.
    println!("notes:");
    for case in &cases {
        let cmd = case.args.join(" ");
        if let Some(first) = case.samples.first() {
            let mut facts = Vec::new();
            for k in [
                "chan",
                "via",
                "mode",
                "procs",
                "n",
                "asked",
                "first_segment",
            ] {
                if let Some(v) = first.get(k) {
                    facts.push(format!("{k}={v}"));
                }
            }
            if case.samples.len() < sizes.runs {
                facts.push(format!("ok_runs={}/{}", case.samples.len(), sizes.runs));
            }
            println!("  {cmd}: {}", facts.join(" "));
        }
        if let Some(why) = &case.skipped {
            println!("  {cmd}: {why}");
        }
        if let Some(f) = case.failures.first() {
            let more = case.failures.len() - 1;
            let more = if more > 0 {
                format!(" (and {more} more failed run(s))")
            } else {
                String::new()
            };
            println!("  FAILED {f}{more}");
        }
    }

    // The aims, from the same medians.
    let get = |workload: &str, i: usize| -> Option<f64> {
        rows.iter()
            .position(|r| r.workload == workload)
            .and_then(|r| medians[r][i])
    };
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "unknown (no figure)",
    };
    let ratio = |w: &str| Some(get(w, 0)? / get(w, 1)?);
    println!("aims:");
    let r = ratio("pingpong");
    println!(
        "  pingpong <= 0.1x tokio: {} ({})",
        verdict(r.map(|r| r <= 0.1)),
        r.map_or("-".into(), |r| format!("{r:.3}x"))
    );
    if s.full_skynet {
        let r = ratio("skynet");
        let rss = get("skynet_peak_rss", 0);
        println!(
            "  skynet <= 0.1x tokio: {} ({}); peak RSS < 16 MiB: {} ({} KiB)",
            verdict(r.map(|r| r <= 0.1)),
            r.map_or("-".into(), |r| format!("{r:.3}x")),
            verdict(rss.map(|k| k < SKYNET_RSS_AIM_KIB)),
            rss.map_or("-".into(), |k| format!("{k:.0}"))
        );
    }
    let r = ratio("ring");
    println!(
        "  ring <= 0.3x tokio: {} ({})",
        verdict(r.map(|r| r <= 0.3)),
        r.map_or("-".into(), |r| format!("{r:.3}x"))
    );
    let r = ratio("idle_unguarded");
    println!(
        "  idle unguarded <= tokio per task: {} ({})",
        verdict(r.map(|r| r <= 1.0)),
        r.map_or("-".into(), |r| format!("{r:.3}x"))
    );
    let g = get("idle_guarded", 0);
    println!(
        "  idle guarded <= 4.6 KiB: {} ({} B)",
        verdict(g.map(|g| g <= IDLE_GUARDED_AIM)),
        g.map_or("-".into(), |g| format!("{g:.0}"))
    );
    for (conns, [tput, _, p99]) in ECHO_ROWS {
        let t = ratio(tput);
        let p = ratio(p99);
        println!(
            "  echo {conns} conns: throughput >= tokio: {} ({}); p99 < tokio: {} ({})",
            verdict(t.map(|r| r >= 1.0)),
            t.map_or("-".into(), |r| format!("{r:.3}x")),
            verdict(p.map(|r| r < 1.0)),
            p.map_or("-".into(), |r| format!("{r:.3}x"))
        );
    }
    println!("compare took {:.1} s", started.elapsed().as_secs_f64());

    // One summary line per workload.
    for (row, m) in rows.iter().zip(&medians) {
        let mut line = format!("RESULT compare {} unit={}", row.workload, row.unit);
        for (name, v) in imp_names.iter().zip(m) {
            line.push_str(&format!(
                " {name}={}",
                v.map_or("na".to_owned(), |v| format!("{v:.3}"))
            ));
        }
        for (name, v) in imp_names[1..].iter().zip(&m[1..]) {
            let r = match (m[0], v) {
                (Some(p), Some(q)) if *q > 0.0 => format!("{:.4}", p / q),
                _ => "na".to_owned(),
            };
            line.push_str(&format!(" procrt/{name}={r}"));
        }
        println!("{line}");
    }
    let failed = cases.iter().any(|c| !c.failures.is_empty());
    if failed {
        eprintln!("compare: some runs failed (see notes)");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(args: &str) -> Case {
        Case {
            args: args_of(args),
            samples: Vec::new(),
            skipped: None,
            failures: Vec::new(),
        }
    }

    #[test]
    fn each_workload_starts_with_another_implementation_each_run() {
        let cases: Vec<Case> = [
            "procrt pingpong 10",
            "tokio pingpong 10",
            "threads pingpong 1",
            "procrt skynet",
            "tokio skynet",
            "procrt nodepingpong 5",
        ]
        .iter()
        .map(|a| case(a))
        .collect();
        assert_eq!(run_order(&cases, 0), [0, 1, 2, 3, 4, 5]);
        assert_eq!(run_order(&cases, 1), [1, 2, 0, 4, 3, 5]);
        assert_eq!(run_order(&cases, 2), [2, 0, 1, 3, 4, 5]);
        assert_eq!(run_order(&cases, 3), [0, 1, 2, 4, 3, 5]);
    }
}
