//! Green sockets and fds: procs park on readiness while others run;
//! timeouts, half-close, reset; TCP, unix streams and datagrams, pipes.

mod util;

use procrt::io::GreenFd;
use procrt::net::{TcpListener, TcpStream, UnixDatagram, UnixListener, UnixStream};
use procrt::{spawn, yield_now};
use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just made and are owned here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A fresh path for a unix socket in the temp dir.
fn sock_path(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("procrt-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn many_procs_park_on_many_fds() {
    const N: usize = 300;
    procrt::run(|| {
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for i in 0..N {
            if i % 2 == 0 {
                let (a, b) = UnixStream::pair().unwrap();
                readers.push(spawn(move || {
                    let mut buf = [0u8; 8];
                    (&a).read_exact(&mut buf).unwrap();
                    u64::from_le_bytes(buf)
                }));
                writers.push(Box::new(b) as Box<dyn Write>);
            } else {
                let (r, w) = pipe();
                let r = GreenFd::new(r);
                readers.push(spawn(move || {
                    let mut buf = [0u8; 8];
                    (&r).read_exact(&mut buf).unwrap();
                    u64::from_le_bytes(buf)
                }));
                writers.push(Box::new(GreenFd::new(w)));
            }
        }
        // Every reader is parked now; wake them in reverse order.
        for (i, w) in writers.iter_mut().enumerate().rev() {
            w.write_all(&(i as u64 * 7).to_le_bytes()).unwrap();
            if i % 16 == 0 {
                yield_now();
            }
        }
        for (i, r) in readers.into_iter().enumerate() {
            assert_eq!(r.unwrap().join().unwrap(), i as u64 * 7);
        }
    });
}

#[test]
fn a_proc_blocked_on_a_socket_does_not_stall_others() {
    procrt::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let got = Rc::new(Cell::new(false));
        let g = got.clone();
        let reader = spawn(move || {
            let mut buf = [0u8; 3];
            (&a).read_exact(&mut buf).unwrap();
            g.set(true);
            buf
        })
        .unwrap();
        // Others run, sleep and yield while the reader is parked.
        let counter = Rc::new(Cell::new(0u32));
        let workers: Vec<_> = (0..10)
            .map(|_| {
                let c = counter.clone();
                spawn(move || {
                    for _ in 0..100 {
                        c.set(c.get() + 1);
                        yield_now();
                    }
                    procrt::sleep(Duration::from_millis(5));
                })
                .unwrap()
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(counter.get(), 1000);
        assert!(!got.get(), "the reader returned without data");
        (&b).write_all(b"abc").unwrap();
        assert_eq!(&reader.join().unwrap(), b"abc");
    });
}

#[test]
fn timeouts_end_reads_accepts_and_writes() {
    procrt::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 4];
        let e = (&a).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(30));
        // The stream still works after a timeout.
        (&b).write_all(b"late").unwrap();
        (&a).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"late");
        assert!(a.set_read_timeout(Some(Duration::ZERO)).is_err());

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_accept_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        assert_eq!(l.accept().unwrap_err().kind(), ErrorKind::TimedOut);

        // A writer whose peer never reads fills the buffer, then times out.
        b.set_write_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let e = loop {
            if let Err(e) = (&b).write(&chunk) {
                break e;
            }
        };
        assert_eq!(e.kind(), ErrorKind::TimedOut);
    });
}

#[test]
fn tcp_echo_and_half_close_behave_like_std() {
    procrt::run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = spawn(move || {
            let (s, peer) = l.accept().unwrap();
            assert_eq!(s.peer_addr().unwrap(), peer);
            // Read to EOF (the client shut its write half), then answer.
            let mut all = Vec::new();
            (&s).read_to_end(&mut all).unwrap();
            (&s).write_all(&all).unwrap();
            (&s).write_all(b"!").unwrap();
        })
        .unwrap();
        let c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        let msg: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        // A large write parks while the server has not read yet.
        (&c).write_all(&msg).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        (&c).read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), msg.len() + 1);
        assert_eq!(&back[..msg.len()], &msg[..]);
        // After EOF, reads keep returning 0, as std's do.
        assert_eq!((&c).read(&mut [0u8; 8]).unwrap(), 0);
        server.join().unwrap();
    });
}

/// A short read clears the read readiness so the next read waits for an
/// edge before its syscall (see `driver.rs`). When data and the peer's FIN
/// were both seen by one poll before the read, the short read must not
/// clear it: the EOF is still to be read and no new edge will announce it.
#[test]
fn a_short_read_before_a_seen_hang_up_still_finds_eof() {
    procrt::run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        short_read_then_eof(s, move || {
            (&c).write_all(b"abc").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
        });
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        short_read_then_eof(a, move || {
            (&b).write_all(b"abc").unwrap();
            b.shutdown(Shutdown::Write).unwrap();
        });
    });
}

/// In a proc: `r` waits for data (nothing yet), then `send` writes 3
/// bytes and shuts down before the runtime polls again, so one event
/// brings both; `r` reads 3 bytes (a short read), then EOF.
fn short_read_then_eof<R: 'static>(r: R, send: impl FnOnce())
where
    for<'a> &'a R: Read,
{
    let reader = spawn(move || {
        let mut buf = [0u8; 64];
        assert_eq!((&r).read(&mut buf).unwrap(), 3);
        // A wait here would never end: no edge follows the hang-up.
        // (The caller set a read timeout: a wrong wait fails, not hangs.)
        assert_eq!((&r).read(&mut buf).unwrap(), 0);
        assert_eq!((&r).read(&mut buf).unwrap(), 0);
    })
    .unwrap();
    send();
    reader.join().unwrap();
}

#[test]
fn a_peer_reset_is_an_error_for_that_proc_alone() {
    procrt::run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let victim = TcpStream::connect(addr).unwrap();
        let (s1, _) = l.accept().unwrap();
        let healthy = TcpStream::connect(addr).unwrap();
        let (s2, _) = l.accept().unwrap();
        let reader = spawn(move || {
            let mut buf = [0u8; 16];
            (&s1).read(&mut buf)
        })
        .unwrap();
        // SO_LINGER 0 makes close send RST.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a live socket with a valid linger struct.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&victim),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        drop(victim);
        let e = reader.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
        // The other connection is unaffected.
        (&healthy).write_all(b"ok").unwrap();
        let mut buf = [0u8; 2];
        (&s2).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ok");
    });
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    procrt::run(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = TcpStream::connect(addr).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    });
}

#[test]
fn unix_listener_stream_and_datagram() {
    let path = sock_path("stream");
    let dpath = sock_path("dgram");
    let (p2, d2) = (path.clone(), dpath.clone());
    procrt::run(move || {
        let l = UnixListener::bind(&p2).unwrap();
        let server = spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut line = [0u8; 5];
            (&s).read_exact(&mut line).unwrap();
            (&s).write_all(&line).unwrap();
        })
        .unwrap();
        let c = UnixStream::connect(&p2).unwrap();
        (&c).write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        (&c).read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        server.join().unwrap();

        let d = UnixDatagram::bind(&d2).unwrap();
        let receiver = spawn(move || {
            let mut buf = [0u8; 16];
            let (n, _) = d.recv_from(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .unwrap();
        let s = UnixDatagram::unbound().unwrap();
        s.send_to(b"dgram", &d2).unwrap();
        assert_eq!(receiver.join().unwrap(), b"dgram");
    });
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(dpath);
}

#[test]
fn sockets_work_outside_procs_and_move_between_runtimes() {
    // Made outside any runtime: blocks the thread in poll(2) there.
    // (Green sockets are not Send: the peer on the other thread is std's.)
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let a = UnixStream::from(a);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        (&b).write_all(b"1").unwrap();
        b
    });
    let mut buf = [0u8; 1];
    (&a).read_exact(&mut buf).unwrap();
    let b = UnixStream::from(t.join().unwrap());
    // Then used in one runtime, then in another.
    let (a, b) = procrt::run(move || {
        let r = spawn(move || {
            let mut buf = [0u8; 1];
            (&a).read_exact(&mut buf).unwrap();
            a
        })
        .unwrap();
        (&b).write_all(b"2").unwrap();
        (r.join().unwrap(), b)
    });
    procrt::run(move || {
        let r = spawn(move || {
            let mut buf = [0u8; 1];
            (&a).read_exact(&mut buf).unwrap();
            buf[0]
        })
        .unwrap();
        (&b).write_all(b"3").unwrap();
        assert_eq!(r.join().unwrap(), b'3');
    });
}

#[test]
fn dropping_a_runtime_cancels_procs_parked_on_fds() {
    let (a, b) = UnixStream::pair().unwrap();
    let rt = procrt::Runtime::new().unwrap();
    let h = rt.block_on(move || {
        spawn(move || {
            let mut buf = [0u8; 1];
            let _ = (&a).read(&mut buf);
        })
        .unwrap()
    });
    assert_eq!(rt.live_procs(), 1);
    drop(rt);
    assert!(matches!(h.join(), Err(procrt::JoinError::Cancelled)));
    drop(b);
}
