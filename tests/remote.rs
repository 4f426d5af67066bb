//! Other threads: spawning and waking through `Runtime::handle`;
//! `spawn_blocking`; an idle runtime burns no CPU.

use procrt::net::UnixStream;
use procrt::{park, spawn, spawn_blocking, Runtime};
use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

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
fn a_runtime_stops_spinning_when_traffic_stops() {
    // A thread echoes 2,000 one-byte messages as fast as it can: the
    // runtime's waits are short, so it spins between them (`idle_spin`).
    let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let (quiet_tx, quiet_rx) = mpsc::channel::<()>();
    let echo = std::thread::spawn(move || {
        let mut theirs = theirs;
        let mut b = [0u8; 1];
        for _ in 0..2000 {
            theirs.read_exact(&mut b).unwrap();
            theirs.write_all(&b).unwrap();
        }
        // Keep the socket open, silent, until the test is done.
        quiet_rx.recv().unwrap();
    });
    let rt = Runtime::builder()
        .idle_spin(Duration::from_micros(50))
        .build()
        .unwrap();
    rt.block_on(move || {
        let mut s = UnixStream::from(std::os::fd::OwnedFd::from(mine));
        for i in 0..2000u32 {
            s.write_all(&[i as u8]).unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            assert_eq!(b[0], i as u8);
        }
        // A reader waits on the now silent socket (so the runtime has an
        // fd to poll), and the root sleeps: after at most one spin the
        // runtime sleeps in the kernel.
        let reader = spawn(move || {
            let mut b = [0u8; 1];
            (&s).read(&mut b).unwrap()
        })
        .unwrap();
        let before = thread_cpu();
        procrt::sleep(Duration::from_millis(200));
        let used = thread_cpu() - before;
        assert!(
            used < Duration::from_millis(40),
            "a quiet runtime after a burst used {used:?} of CPU in 200 ms"
        );
        quiet_tx.send(()).unwrap();
        // The thread ends and closes its end: the reader sees EOF.
        assert_eq!(reader.join().unwrap(), 0);
    });
    echo.join().unwrap();
}

#[test]
fn other_threads_spawn_procs_through_a_handle() {
    let rt = Runtime::new().unwrap();
    let handle = rt.handle().unwrap();
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let h = handle.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let tx = tx.clone();
                    h.spawn(move || {
                        // Runs as a proc: it can park and spawn.
                        let id = procrt::current().id();
                        let inner = spawn(move || t * 1000 + i).unwrap();
                        tx.send((inner.join().unwrap(), id)).unwrap();
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let got = rt.block_on(move || {
        // The root parks in the driver until all 400 procs have reported.
        let me = procrt::remote_unparker();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let v: Vec<_> = rx.iter().collect();
            done_tx.send(v).unwrap();
            me.unpark();
        });
        loop {
            if let Ok(v) = done_rx.try_recv() {
                break v;
            }
            park();
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    let mut vals: Vec<u32> = got.iter().map(|(v, _)| *v).collect();
    vals.sort();
    let want: Vec<u32> = (0..4)
        .flat_map(|t| (0..100).map(move |i| t * 1000 + i))
        .collect();
    assert_eq!(vals, want);
}

#[test]
fn other_threads_wake_parked_procs() {
    procrt::run(|| {
        let woken = Rc::new(Cell::new(0));
        let mut unparkers = Vec::new();
        let mut hs = Vec::new();
        for _ in 0..50 {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let w = woken.clone();
            hs.push(
                spawn(move || {
                    // Park until the other thread has sent and woken us.
                    while rx.try_recv().is_err() {
                        park();
                    }
                    w.set(w.get() + 1);
                })
                .unwrap(),
            );
            unparkers.push((procrt::handle().unparker(hs.last().unwrap().id()), tx));
        }
        let t = std::thread::spawn(move || {
            for (u, tx) in unparkers {
                tx.send(()).unwrap();
                u.unpark();
            }
        });
        for h in hs {
            h.join().unwrap();
        }
        t.join().unwrap();
        assert_eq!(woken.get(), 50);
    });
}

#[test]
fn a_handle_outliving_its_runtime_is_harmless() {
    let rt = Runtime::new().unwrap();
    let handle = rt.handle().unwrap();
    let id = rt.block_on(|| procrt::current().id());
    assert!(!handle.is_closed());
    drop(rt);
    assert!(handle.is_closed());
    handle.unpark(id);
    let e = handle.spawn(|| unreachable!()).unwrap_err();
    assert_eq!(e.kind(), &procrt::SpawnErrorKind::ShuttingDown);
    // From another thread too.
    std::thread::spawn(move || {
        handle.unpark(id);
        assert!(handle.spawn(|| {}).is_err());
    })
    .join()
    .unwrap();
}

#[test]
fn spawn_blocking_parks_the_caller_while_others_run() {
    procrt::run(|| {
        // Four jobs that finish only when all four run at once: they are
        // on pool threads, and their callers are parked, not blocking.
        let barrier = Arc::new(Barrier::new(4));
        let ticks = Rc::new(Cell::new(0u32));
        let t2 = ticks.clone();
        let ticker = spawn(move || {
            for _ in 0..20 {
                t2.set(t2.get() + 1);
                procrt::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
        let hs: Vec<_> = (0..4u64)
            .map(|i| {
                let b = barrier.clone();
                spawn(move || {
                    spawn_blocking(move || {
                        b.wait();
                        std::thread::sleep(Duration::from_millis(30));
                        i * 2
                    })
                })
                .unwrap()
            })
            .collect();
        let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 12);
        ticker.join().unwrap();
        assert_eq!(ticks.get(), 20);
        // A panic in the job comes back to the caller.
        let h = spawn(|| spawn_blocking(|| -> u32 { panic!("job failed") })).unwrap();
        let p = match h.join() {
            Err(procrt::JoinError::Panicked(p)) => p,
            other => panic!("expected a panic, got {other:?}"),
        };
        assert_eq!(p.downcast_ref::<&str>(), Some(&"job failed"));
    });
    // Outside a proc it simply runs.
    assert_eq!(spawn_blocking(|| 5), 5);
}

#[test]
fn many_spawn_blocking_calls_queue_on_the_bounded_pool() {
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static MAX_SEEN: AtomicUsize = AtomicUsize::new(0);
    procrt::run(|| {
        let hs: Vec<_> = (0..64)
            .map(|i| {
                spawn(move || {
                    spawn_blocking(move || {
                        let n = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                        MAX_SEEN.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        RUNNING.fetch_sub(1, Ordering::SeqCst);
                        i
                    })
                })
                .unwrap()
            })
            .collect();
        let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, (0..64).sum());
    });
    assert!(MAX_SEEN.load(Ordering::SeqCst) <= 16);
}

#[test]
fn an_idle_runtime_burns_no_cpu() {
    procrt::run(|| {
        // A reader parked on a socket nobody writes to yet, a handle held
        // by another thread, and a root that sleeps: the runtime waits in
        // epoll_wait.
        let (a, b) = UnixStream::pair().unwrap();
        let reader = spawn(move || {
            let mut buf = [0u8; 1];
            (&a).read_exact(&mut buf).unwrap();
        })
        .unwrap();
        let me = procrt::remote_unparker();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let waker = std::thread::spawn(move || {
            go_rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(200));
            me.unpark();
        });

        // 1. Timer-bound idle: epoll_wait with a timeout.
        let before = thread_cpu();
        procrt::sleep(Duration::from_millis(200));
        let used = thread_cpu() - before;
        assert!(
            used < Duration::from_millis(40),
            "idle with a timer used {used:?} of CPU"
        );

        // 2. Unbounded idle: epoll_wait(-1) until another thread wakes us.
        let before = thread_cpu();
        go_tx.send(()).unwrap();
        park();
        let used = thread_cpu() - before;
        assert!(
            used < Duration::from_millis(40),
            "idle without a timer used {used:?} of CPU"
        );
        waker.join().unwrap();

        (&b).write_all(b"x").unwrap();
        reader.join().unwrap();
    });
}

#[test]
fn handles_and_remote_unparkers_are_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<procrt::Handle>();
    check::<procrt::RemoteUnparker>();
}

#[test]
fn injected_procs_start_while_the_runtime_is_busy() {
    use std::sync::atomic::AtomicBool;
    procrt::run(|| {
        // Procs on small segments that never let the runtime idle: the
        // injected proc is spawned by the busy-path poll, on their stacks.
        let started = Arc::new(AtomicBool::new(false));
        let busy: Vec<_> = (0..4)
            .map(|_| {
                let s = started.clone();
                procrt::Builder::new()
                    .stack_size(8192)
                    .spawn(move || {
                        let mut spins = 0u64;
                        while !s.load(Ordering::SeqCst) {
                            procrt::yield_now();
                            spins += 1;
                        }
                        spins
                    })
                    .unwrap()
            })
            .collect();
        let h = procrt::handle();
        let s = started.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            h.spawn(move || s.store(true, Ordering::SeqCst)).unwrap();
        });
        for b in busy {
            assert!(b.join().unwrap() > 0);
        }
    });
}
