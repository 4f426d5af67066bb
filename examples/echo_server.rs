//! A TCP echo server: one proc per connection, all on one thread.
//!
//! ```text
//! cargo run --release --example echo_server                 # serve on 127.0.0.1:7878
//! cargo run --release --example echo_server -- 0.0.0.0:9000 # another address
//! nc 127.0.0.1 7878                                         # type lines, see them back
//! cargo run --release --example echo_server -- --client     # 100 procs x 1,000 lines
//! cargo run --release --example echo_server -- --client 127.0.0.1:7878 --connections 500 --messages 200
//! cargo run --release --example echo_server -- --short      # server + client in one process, checked
//! ```
//!
//! Each accepted connection gets its own proc that reads and writes back
//! until the peer closes; a read with nothing to read parks that proc, and
//! the runtime sleeps in epoll when every proc waits. The client mode
//! opens `--connections` connections, each in its own proc, sends
//! `--messages` lines on each, checks every echo byte for byte, and prints
//! the throughput and round-trip latency (median and p99). `--short` runs a
//! server and a client (50 connections x 100 lines) in one runtime and
//! exits non-zero if any echo is wrong.

use procrt::net::{TcpListener, TcpStream};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DEFAULT_ADDR: &str = "127.0.0.1:7878";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| -> Option<usize> {
        let i = args.iter().position(|a| a == f)?;
        match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(v) => Some(v),
            None => fail(&format!("{f} needs a number")),
        }
    };
    let addr = args
        .iter()
        .enumerate()
        .find(|(i, a)| {
            !a.starts_with("--")
                && (*i == 0 || !matches!(args[i - 1].as_str(), "--connections" | "--messages"))
        })
        .map(|(_, a)| a.clone())
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    if flag("--short") {
        short();
    } else if flag("--client") {
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| fail(&format!("bad address {addr}: {e}")));
        let conns = value("--connections").unwrap_or(100);
        let msgs = value("--messages").unwrap_or(1000);
        let stats = procrt::run(move || client(addr, conns, msgs));
        match stats {
            Ok(s) => s.print(conns, msgs),
            Err(e) => fail(&e),
        }
    } else {
        procrt::run(move || {
            let l = TcpListener::bind(&addr)
                .unwrap_or_else(|e| fail(&format!("cannot bind {addr}: {e}")));
            println!(
                "echo_server: listening on {}; try `nc {}`",
                l.local_addr().unwrap(),
                l.local_addr().unwrap().to_string().replace(':', " ")
            );
            serve(l);
        });
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("echo_server: {msg}");
    std::process::exit(1)
}

/// Accepts forever, a proc per connection.
fn serve(l: TcpListener) {
    loop {
        match l.accept() {
            Ok((s, _)) => {
                if let Err(e) = procrt::spawn(move || echo(s)) {
                    eprintln!("echo_server: cannot start a proc for a connection: {e}");
                }
            }
            // Out of fds, a reset before accept...: the listener backs off
            // by itself; log and go on.
            Err(e) => eprintln!("echo_server: accept: {e}"),
        }
    }
}

/// Writes back what it reads until EOF or an error.
fn echo(s: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut &s, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if (&s).write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// What the client measured.
struct Stats {
    elapsed: Duration,
    bytes: usize,
    rtts: Vec<Duration>,
}

impl Stats {
    fn print(mut self, conns: usize, msgs: usize) {
        self.rtts.sort();
        let q = |p: f64| self.rtts[((self.rtts.len() - 1) as f64 * p) as usize];
        println!(
            "echo_server client: {conns} connections x {msgs} lines, {} bytes echoed in {:.1} ms: {:.0} lines/s, rtt median {:?} p99 {:?}",
            self.bytes,
            self.elapsed.as_secs_f64() * 1e3,
            (conns * msgs) as f64 / self.elapsed.as_secs_f64(),
            q(0.5),
            q(0.99)
        );
    }
}

/// `conns` procs, each sending `msgs` lines and checking their echoes.
fn client(addr: SocketAddr, conns: usize, msgs: usize) -> Result<Stats, String> {
    let start = Instant::now();
    let hs: Vec<_> = (0..conns)
        .map(|c| {
            procrt::spawn(move || -> Result<(usize, Vec<Duration>), String> {
                let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                let mut r = BufReader::new(&s);
                let mut line = String::new();
                let mut rtts = Vec::with_capacity(msgs);
                let mut bytes = 0;
                for m in 0..msgs {
                    let msg = format!("connection {c} line {m}\n");
                    let t = Instant::now();
                    (&s).write_all(msg.as_bytes())
                        .map_err(|e| format!("write: {e}"))?;
                    line.clear();
                    r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
                    rtts.push(t.elapsed());
                    if line != msg {
                        return Err(format!("connection {c}: sent {msg:?}, got back {line:?}"));
                    }
                    bytes += msg.len();
                }
                Ok((bytes, rtts))
            })
            .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut stats = Stats {
        elapsed: Duration::ZERO,
        bytes: 0,
        rtts: Vec::new(),
    };
    for h in hs {
        let (b, r) = h
            .join()
            .map_err(|e| format!("client proc failed: {e:?}"))??;
        stats.bytes += b;
        stats.rtts.extend(r);
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Server and client in one runtime, briefly; exits non-zero on any error.
fn short() {
    let (conns, msgs) = (50, 100);
    let r = procrt::run(move || {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        let server = procrt::spawn(move || serve(l)).map_err(|e| e.to_string())?;
        let stats = client(addr, conns, msgs);
        drop(server); // detached; the runtime's drop cancels it
        stats
    });
    match r {
        Ok(s) => {
            assert_eq!(s.rtts.len(), conns * msgs);
            s.print(conns, msgs);
            println!("echo_server --short: every echo checked");
        }
        Err(e) => fail(&e),
    }
}
