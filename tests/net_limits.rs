//! Limits: thousands of connections at once; running out of fds on accept.

mod util;

use procrt::net::{TcpListener, TcpStream};
use procrt::{park, spawn, unparker, Unparker};
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::{child_role, run_child};

/// Connections open at once in the big echo test.
const CONNECTIONS: usize = 5000;

/// Raises the soft fd limit to the hard one; returns the new soft limit.
fn raise_fd_limit() -> u64 {
    // SAFETY: all-zero is a valid rlimit; getrlimit fills it.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    rl.rlim_cur = rl.rlim_max;
    // SAFETY: as above; raising the soft limit up to the hard one is allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
    rl.rlim_cur as u64
}

/// Sets the soft fd limit.
fn set_soft_fd_limit(n: u64) {
    // SAFETY: all-zero is a valid rlimit; getrlimit fills it.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    rl.rlim_cur = n as libc::rlim_t;
    // SAFETY: as above; lowering the soft limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
}

/// CPU time (user + system) this thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: all-zero is a valid rusage; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn five_thousand_concurrent_connections_echo() {
    // Two fds per connection (both ends live here) plus a margin.
    let limit = raise_fd_limit();
    let n = if limit >= 2 * CONNECTIONS as u64 + 200 {
        CONNECTIONS
    } else {
        let n = ((limit.saturating_sub(200)) / 2) as usize;
        eprintln!("fd limit {limit}: testing {n} connections instead of {CONNECTIONS}");
        n
    };
    assert!(n >= 100, "fd hard limit {limit} is too low for this test");
    procrt::run(move || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let acceptor = spawn(move || {
            let mut handlers = Vec::with_capacity(n);
            for _ in 0..n {
                let (s, _) = l.accept().unwrap();
                handlers.push(
                    spawn(move || {
                        let mut buf = [0u8; 512];
                        let mut total = 0;
                        loop {
                            match (&s).read(&mut buf).unwrap() {
                                0 => return total,
                                k => {
                                    (&s).write_all(&buf[..k]).unwrap();
                                    total += k;
                                }
                            }
                        }
                    })
                    .unwrap(),
                );
            }
            handlers
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
        })
        .unwrap();
        // Every client holds its connection until all n are open and
        // have echoed once.
        let open = Rc::new(Cell::new(0usize));
        let waiters: Rc<RefCell<Vec<Unparker>>> = Rc::new(RefCell::new(Vec::new()));
        let clients: Vec<_> = (0..n)
            .map(|i| {
                let (open, waiters) = (open.clone(), waiters.clone());
                spawn(move || {
                    let c = TcpStream::connect(addr).unwrap();
                    let msg = format!("client {i:05} says hello").into_bytes();
                    (&c).write_all(&msg).unwrap();
                    let mut back = vec![0u8; msg.len()];
                    (&c).read_exact(&mut back).unwrap();
                    assert_eq!(back, msg);
                    open.set(open.get() + 1);
                    if open.get() == n {
                        for u in waiters.borrow_mut().drain(..) {
                            u.unpark();
                        }
                    } else {
                        waiters.borrow_mut().push(unparker());
                        while open.get() < n {
                            park();
                        }
                    }
                    msg.len()
                })
                .unwrap()
            })
            .collect();
        let sent: usize = clients.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(open.get(), n);
        assert_eq!(acceptor.join().unwrap(), sent);
    });
}

#[test]
fn accept_out_of_fds_errors_then_recovers_without_spinning() {
    const NAME: &str = "accept_out_of_fds_errors_then_recovers_without_spinning";
    if child_role().as_deref() == Some("emfile") {
        emfile_child();
        return;
    }
    let out = run_child(NAME, "emfile");
    assert!(
        out.status.success() && out.stdout.contains("EMFILE-OK"),
        "{}",
        out.describe()
    );
}

/// In a child: fill the fd table, check that accept fails with EMFILE,
/// backs off instead of spinning, and works again once fds are freed.
fn emfile_child() {
    procrt::run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Two clients connect while there are fds; the kernel completes
        // the handshakes, and the connections wait in the backlog.
        let c1 = TcpStream::connect(addr).unwrap();
        let c2 = TcpStream::connect(addr).unwrap();
        set_soft_fd_limit(256);
        let mut filler = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => filler.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("unexpected error filling the fd table: {e}"),
            }
        }
        let e = l.accept().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");

        // An accept loop that retries at once: the listener backs off.
        let t = Instant::now();
        let cpu = thread_cpu();
        let mut attempts = 0;
        while t.elapsed() < Duration::from_millis(300) {
            let e = l.accept().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
            attempts += 1;
        }
        let used = thread_cpu() - cpu;
        assert!(
            attempts <= 20,
            "{attempts} accepts in 300 ms: the listener spins"
        );
        assert!(
            used < Duration::from_millis(100),
            "{used:?} of CPU in 300 ms"
        );

        // Free a few fds: the waiting connections are accepted and work.
        filler.truncate(filler.len() - 4);
        for c in [&c1, &c2] {
            let (s, _) = l.accept().unwrap();
            let mut w: &TcpStream = c;
            w.write_all(b"hi").unwrap();
            let mut buf = [0u8; 2];
            (&s).read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hi");
        }
        println!("EMFILE-OK attempts={attempts} cpu={used:?}");
    });
}
