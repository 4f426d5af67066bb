//! **echo C**: a TCP echo server on procrt or on tokio's current-thread
//! runtime, each in a thread of its own, driven over loopback by the same
//! client: C connections, each a proc of a procrt runtime on another
//! thread, each doing `--messages M` round trips (default
//! `ECHO_MESSAGES / C`, at least 10) of a [`MSG`]-byte message: write it,
//! read the echo back, check it. The run stops early at [`DEADLINE`].
//!
//! `msgs_per_sec` is round trips completed over the time from the first
//! connect to the last echo; `p50_us` / `p99_us` are the median and 99th
//! percentile of every round trip's latency. Server and client both set
//! `TCP_NODELAY`. The server side is what differs between the two
//! implementations; the client is identical, so a difference is the
//! server's (the machine's cores are shared by both sides, as in any
//! loopback test).

use crate::{Failure, Imp, Outcome, Report};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bytes per message.
pub const MSG: usize = 64;
/// Round trips per run, shared among the connections.
pub const ECHO_MESSAGES: usize = 100_000;
/// Most connections `echo C` accepts.
pub const MAX_CONNS: usize = 10_000;
/// A run stops (and reports what it completed) after this long.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Runs the echo workload with `conns` connections and `messages` round
/// trips per connection (None: the default share).
pub fn run(imp: Imp, conns: usize, messages: Option<usize>) -> Result<Report, Failure> {
    let messages = messages.unwrap_or((ECHO_MESSAGES / conns).max(10));
    let addr = match imp {
        Imp::Procrt => start_procrt_server(),
        Imp::Tokio => start_tokio_server(),
        other => {
            return Err(Failure::Skipped(format!(
                "echo compares procrt's server with tokio's; {} has none here",
                other.name()
            )))
        }
    }
    .map_err(Failure::Failed)?;
    raise_fd_limit(conns);
    let (done, elapsed, mut rtts) = client(addr, conns, messages).map_err(Failure::Failed)?;
    if rtts.is_empty() {
        return Err(Failure::Failed("no round trip completed".into()));
    }
    rtts.sort_unstable();
    let q = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize] as f64 / 1e3;
    Ok(Report::new(Outcome::Echo {
        conns,
        msgs_per_sec: done as f64 / elapsed.as_secs_f64(),
        p50_us: q(0.5),
        p99_us: q(0.99),
    })
    .with("messages_per_conn", messages)
    .with("completed", done)
    .with("msg_bytes", MSG)
    .with("client", "procrt"))
}

/// Raises the soft fd limit to the hard one when `conns` connections (two
/// fds each, both ends in this process) need it.
fn raise_fd_limit(conns: usize) {
    // SAFETY: all-zero is a valid rlimit, filled by getrlimit.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0
        && (rl.rlim_cur as u64) < 2 * conns as u64 + 100
    {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: as above; raising the soft limit to the hard one is allowed.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    }
}

/// A procrt echo server on its own thread; returns its address.
fn start_procrt_server() -> Result<SocketAddr, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        procrt::run(move || {
            let l = match procrt::net::TcpListener::bind("127.0.0.1:0") {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(format!("bind: {e}")));
                    return;
                }
            };
            let _ = tx.send(l.local_addr().map_err(|e| e.to_string()));
            loop {
                let Ok((s, _)) = l.accept() else { continue };
                let _ = s.set_nodelay(true);
                let _ = procrt::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match (&s).read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if (&s).write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        })
    });
    rx.recv().map_err(|_| "the server thread died".to_owned())?
}

/// A tokio current-thread echo server on its own thread.
fn start_tokio_server() -> Result<SocketAddr, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(format!("tokio runtime: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            let l = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(format!("bind: {e}")));
                    return;
                }
            };
            let _ = tx.send(l.local_addr().map_err(|e| e.to_string()));
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
    });
    rx.recv().map_err(|_| "the server thread died".to_owned())?
}

/// The client: `conns` procs on a procrt runtime in a thread of its own.
/// Returns round trips done, the time taken, and each round trip's
/// latency in nanoseconds.
fn client(
    addr: SocketAddr,
    conns: usize,
    messages: usize,
) -> Result<(usize, Duration, Vec<u64>), String> {
    let t = std::thread::spawn(move || {
        procrt::run(move || {
            let start = Instant::now();
            let stop = start + DEADLINE;
            let hs: Vec<_> = (0..conns)
                .map(|c| {
                    procrt::spawn(move || -> Result<Vec<u64>, String> {
                        let s = procrt::net::TcpStream::connect(addr)
                            .map_err(|e| format!("connect: {e}"))?;
                        s.set_nodelay(true).map_err(|e| e.to_string())?;
                        let mut msg = [0u8; MSG];
                        let mut back = [0u8; MSG];
                        let mut rtts = Vec::with_capacity(messages);
                        for m in 0..messages {
                            if Instant::now() >= stop {
                                break;
                            }
                            msg[..8].copy_from_slice(&(c as u64).to_le_bytes());
                            msg[8..16].copy_from_slice(&(m as u64).to_le_bytes());
                            let t = Instant::now();
                            (&s).write_all(&msg).map_err(|e| format!("write: {e}"))?;
                            (&s).read_exact(&mut back)
                                .map_err(|e| format!("read: {e}"))?;
                            rtts.push(t.elapsed().as_nanos() as u64);
                            if back != msg {
                                return Err(format!("connection {c}: wrong echo"));
                            }
                        }
                        Ok(rtts)
                    })
                    .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?;
            let mut all = Vec::with_capacity(conns * messages);
            for h in hs {
                all.extend(h.join().map_err(|e| format!("client proc: {e:?}"))??);
            }
            Ok((all.len(), start.elapsed(), all))
        })
    });
    t.join()
        .map_err(|_| "the client thread panicked".to_owned())?
}
