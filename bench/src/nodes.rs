//! Node workloads, procrt only (the peers have no nodes): a message round
//! trip between procs on two nodes, and the prefork HTTP server's requests
//! per second with 0, 1 or 2 worker nodes (0: the acceptor serves the
//! connections itself, the single-node figure).
//!
//! A worker node is this binary run again (`procrt::node::spawn_worker`);
//! `main` calls [`worker_main`] first, which plays the worker's role when
//! the environment names one.

use crate::{warmup_round_trips, Failure, Outcome, Report};
use procrt::chan::channel;
use procrt::net::{TcpListener, TcpStream};
use procrt::node;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// Client threads (one keep-alive connection each) that load the prefork
/// server.
pub const PREFORK_CONNS: usize = 8;
/// Most worker nodes `prefork --workers` accepts.
pub const MAX_WORKERS: usize = 16;

/// Plays the worker role named in the environment; false when this
/// process is not a worker.
pub fn worker_main() -> bool {
    let Some(role) = node::role() else {
        return false;
    };
    match role.as_str() {
        "bench-pong" => procrt::run(|| {
            let (tx, rx) = channel::<u64>();
            node::export_channel("ping", tx);
            let parent = node::connect_parent().expect("bench-pong: no link to the parent");
            let pong = parent.addr::<u64>("pong");
            procrt::spawn(move || {
                for v in rx {
                    if pong.send(v).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn");
            parent.wait_closed();
        }),
        "bench-prefork" => procrt::run(|| {
            let (tx, rx) = channel::<OwnedFd>();
            node::export_channel("conn", tx);
            let parent = node::connect_parent().expect("bench-prefork: no link to the parent");
            procrt::spawn(move || {
                for fd in rx {
                    let _ = procrt::spawn(move || serve_http(TcpStream::from(fd)));
                }
            })
            .expect("spawn");
            parent.wait_closed();
        }),
        other => {
            eprintln!("procrt-bench: unknown worker role {other}");
            std::process::exit(2);
        }
    }
    true
}

/// `nodepingpong N`: procs on two nodes; one `u64` each way per round
/// trip, through the parent's port "pong" and the worker's "ping".
pub fn pingpong(round_trips: u64) -> Result<Report, Failure> {
    procrt::run(move || {
        let (tx, rx) = channel::<u64>();
        node::export_channel("pong", tx);
        let w = node::spawn_worker("bench-pong")
            .map_err(|e| Failure::Failed(format!("cannot start a worker node: {e}")))?;
        let ping = w.link().addr::<u64>("ping");
        let round_trip = |i: u64| -> Result<(), Failure> {
            ping.send(i).map_err(|e| Failure::Failed(e.to_string()))?;
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(v) if v == i => Ok(()),
                other => Err(Failure::Failed(format!(
                    "nodepingpong: expected {i}, got {other:?}"
                ))),
            }
        };
        for i in 0..warmup_round_trips(round_trips) {
            round_trip(i)?;
        }
        let start = Instant::now();
        for i in 0..round_trips {
            round_trip(i)?;
        }
        let ns = start.elapsed().as_nanos() as f64 / round_trips as f64;
        Ok(Report::new(Outcome::NodePingpong { ns_per_rt: ns }).with("worker_pid", w.pid()))
    })
}

/// Answers HTTP/1.1 keep-alive requests until the client closes.
fn serve_http(stream: TcpStream) {
    const BODY: &str = "hello from procrt\n";
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    loop {
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        if r.get_mut().write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// One client connection: `n` requests, each answer checked.
fn client(addr: std::net::SocketAddr, n: usize) -> Result<(), String> {
    let s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    for _ in 0..n {
        w.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut len = None;
        loop {
            line.clear();
            r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = v.trim().parse::<usize>().ok();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let len = len.ok_or("a response without Content-Length")?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        if body != b"hello from procrt\n" {
            return Err("a wrong response body".into());
        }
    }
    Ok(())
}

/// `prefork W --requests R`: an acceptor node passes each accepted TCP
/// connection to one of W worker nodes (W = 0: serves it itself);
/// `PREFORK_CONNS` client threads send R requests in all.
pub fn prefork(workers: usize, requests: usize) -> Result<Report, Failure> {
    procrt::run(move || {
        let mut nodes = Vec::new();
        for _ in 0..workers {
            nodes.push(
                node::spawn_worker("bench-prefork")
                    .map_err(|e| Failure::Failed(format!("cannot start a worker node: {e}")))?,
            );
        }
        let ports: Vec<_> = nodes
            .iter()
            .map(|w| w.link().addr::<OwnedFd>("conn"))
            .collect();
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| Failure::Failed(format!("bind: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::Failed(e.to_string()))?;
        let _acceptor = procrt::spawn(move || {
            let mut next = 0;
            while let Ok((s, _)) = listener.accept() {
                if ports.is_empty() {
                    let _ = procrt::spawn(move || serve_http(s));
                } else {
                    let _ = ports[next % ports.len()].send(OwnedFd::from(s));
                    next += 1;
                }
            }
        })
        .map_err(|e| Failure::Failed(e.to_string()))?;
        let per_conn = (requests / PREFORK_CONNS).max(1);
        let start = Instant::now();
        let result = procrt::spawn_blocking(move || {
            let hs: Vec<_> = (0..PREFORK_CONNS)
                .map(|_| std::thread::spawn(move || client(addr, per_conn)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a client thread panicked".into()))
                })
                .collect::<Result<Vec<()>, String>>()
        });
        let secs = start.elapsed().as_secs_f64();
        result.map_err(Failure::Failed)?;
        let total = per_conn * PREFORK_CONNS;
        Ok(Report::new(Outcome::Prefork {
            workers,
            requests_per_sec: total as f64 / secs,
        })
        .with("requests", total)
        .with("conns", PREFORK_CONNS))
    })
}
