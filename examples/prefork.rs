//! A prefork HTTP server over nodes: one node accepts TCP connections and
//! passes each accepted socket, as a file descriptor inside a message, to
//! one of N worker nodes (processes), which serve it. The workers use the
//! other cores; the acceptor only accepts and hands out.
//!
//! ```text
//! cargo run --release --example prefork                    # serve on 127.0.0.1:8080 with 2 workers
//! curl http://127.0.0.1:8080/
//! cargo run --release --example prefork -- --workers 4 --addr 127.0.0.1:9000
//! cargo run --release --example prefork -- --short         # CI: serve, load it, check, exit
//! ```
//!
//! `--short` starts the server on a free port, drives it with 4 client
//! threads (keep-alive connections, 2,000 requests in all), checks every
//! response, checks that every worker served some, and prints the
//! requests per second.

use procrt::net::{TcpListener, TcpStream};
use procrt::node;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// A worker: serve each connection that arrives on port "conn".
fn worker() {
    procrt::run(|| {
        let (tx, rx) = procrt::chan::channel::<OwnedFd>();
        node::export_channel("conn", tx);
        let parent = node::connect_parent().expect("prefork worker: no link to the acceptor");
        let served = procrt::spawn(move || {
            for fd in rx {
                let stream = TcpStream::from(fd);
                if let Err(e) = procrt::spawn(move || serve(stream)) {
                    eprintln!("prefork worker: cannot spawn: {e}");
                }
            }
        })
        .expect("spawn");
        parent.wait_closed();
        drop(served);
    });
}

/// Answers HTTP/1.1 requests on one keep-alive connection until the client
/// closes it.
fn serve(stream: TcpStream) {
    let body = format!("hello from worker {}\n", std::process::id());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
        body.len()
    );
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // Read one request: lines up to the empty one.
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        if r.get_mut().write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

struct Args {
    workers: usize,
    addr: String,
    short: bool,
}

fn parse() -> Args {
    let mut a = Args {
        workers: 2,
        addr: "127.0.0.1:8080".into(),
        short: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--short" => a.short = true,
            "--workers" => a.workers = it.next().and_then(|v| v.parse().ok()).expect("--workers N"),
            "--addr" => a.addr = it.next().expect("--addr HOST:PORT"),
            other => panic!("prefork: unknown argument {other}"),
        }
    }
    a
}

/// One client thread: `n` requests on one keep-alive connection; returns
/// the worker pids that answered.
fn client(addr: std::net::SocketAddr, n: usize) -> Vec<u32> {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut pids = Vec::new();
    for _ in 0..n {
        w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut len = 0;
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let body = String::from_utf8(body).unwrap();
        let pid = body
            .trim()
            .strip_prefix("hello from worker ")
            .expect("a worker's answer");
        pids.push(pid.parse().unwrap());
    }
    pids
}

fn main() {
    if node::role().as_deref() == Some("prefork-worker") {
        worker();
        return;
    }
    let args = parse();
    let addr = if args.short {
        "127.0.0.1:0".to_string()
    } else {
        args.addr.clone()
    };
    procrt::run(move || {
        let workers: Vec<node::Worker> = (0..args.workers.max(1))
            .map(|_| node::spawn_worker("prefork-worker").expect("start a worker"))
            .collect();
        let listener = TcpListener::bind(&addr).expect("bind");
        let local = listener.local_addr().unwrap();
        let pids: Vec<u32> = workers.iter().map(|w| w.pid()).collect();
        println!(
            "prefork: listening on http://{local} with {} workers (pids {pids:?})",
            workers.len()
        );
        let ports: Vec<_> = workers
            .iter()
            .map(|w| w.link().addr::<OwnedFd>("conn"))
            .collect();
        let acceptor = procrt::spawn(move || {
            let mut next = 0;
            loop {
                match listener.accept() {
                    Ok((s, _)) => {
                        // The socket leaves this process inside the message.
                        if let Err(e) = ports[next % ports.len()].send(OwnedFd::from(s)) {
                            eprintln!("prefork: worker gone: {e}");
                        }
                        next += 1;
                    }
                    Err(e) => eprintln!("prefork: accept: {e}"),
                }
            }
        })
        .expect("spawn the acceptor");
        if !args.short {
            acceptor.join().ok();
            return;
        }
        // Short mode: load the server from client threads; the acceptor
        // keeps running while this proc waits for them.
        let total = 2_000;
        let threads = 4;
        let start = Instant::now();
        let answered = procrt::spawn_blocking(move || {
            let hs: Vec<_> = (0..threads)
                .map(|_| std::thread::spawn(move || client(local, total / threads)))
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<Vec<u32>>()
        });
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(answered.len(), total);
        for p in &pids {
            let n = answered.iter().filter(|a| *a == p).count();
            println!("prefork: worker {p} served {n} requests");
            assert!(n > 0, "worker {p} served nothing");
        }
        assert!(answered.iter().all(|a| pids.contains(a)));
        println!(
            "prefork: {total} requests over {threads} connections in {:.1} ms: {:.0} requests/s",
            secs * 1e3,
            total as f64 / secs
        );
        drop(acceptor);
        drop(workers);
    });
}
