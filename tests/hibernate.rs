//! Hibernation: a proc that rests in a channel's `recv` for longer than
//! `hibernate_after` gives its stack pages back, and finds every byte of
//! its stack in place when a wake (or the runtime's drop, or an exit
//! signal) resumes it.

mod util;

use procrt::actor::spawn_actor;
use procrt::chan::{channel, Receiver, RecvTimeoutError, Sender};
use procrt::{link, sleep, spawn, JoinError, JoinHandle, Runtime};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::DropCounter;

/// The rest after which these tests' runtimes hibernate a proc.
const REST: Duration = Duration::from_millis(20);
/// Longest a test waits for hibernation to happen.
const PATIENCE: Duration = Duration::from_secs(10);

fn runtime() -> Runtime {
    Runtime::builder()
        .hibernate_after(Some(REST))
        .build()
        .expect("runtime")
}

/// Sleeps until at least `n` procs are hibernated (or `PATIENCE` passed);
/// returns how many are.
fn wait_hibernated(n: usize) -> usize {
    let start = Instant::now();
    while procrt::hibernated_procs() < n && start.elapsed() < PATIENCE {
        sleep(Duration::from_millis(5));
    }
    procrt::hibernated_procs()
}

/// Whether the page holding `addr` is resident (`mincore`).
fn resident(addr: usize) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut vec = 0u8;
    // SAFETY: one page of our own address space (a proc's stack segment,
    // which stays mapped), one byte of output.
    let r = unsafe { libc::mincore((addr & !(page - 1)) as *mut libc::c_void, page, &mut vec) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec & 1 == 1
}

/// Word `i` of the pattern seeded by `seed`.
fn pattern(seed: u64, i: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(i as u32 % 64)
        ^ i as u64
}

/// Fills `N` words of its own frame with a pattern, publishes their address,
/// waits in `recv`, and checks the pattern after the wake: returns the
/// received value plus the words' sum, or panics naming a changed word.
#[inline(never)]
fn rest_with<const N: usize>(seed: u64, rx: &Receiver<u64>, at: &Cell<usize>) -> u64 {
    let mut words = [0u64; N];
    for (i, w) in words.iter_mut().enumerate() {
        *w = pattern(seed, i);
    }
    let words = std::hint::black_box(words);
    at.set(words.as_ptr() as usize);
    let v = rx.recv().expect("sender kept alive");
    let words = std::hint::black_box(words);
    for (i, w) in words.iter().enumerate() {
        assert_eq!(
            *w,
            pattern(seed, i),
            "word {i} of proc seeded {seed} changed"
        );
    }
    v.wrapping_add(words.iter().fold(0u64, |a, w| a.wrapping_add(*w)))
}

/// The value `rest_with::<N>(seed, ..)` returns after receiving `v`.
fn expected<const N: usize>(seed: u64, v: u64) -> u64 {
    (0..N).fold(v, |a, i| a.wrapping_add(pattern(seed, i)))
}

/// Recurses `depth` frames of 512 bytes each on the first segment, then
/// rests on a segment of its own: `grow` asks for more than the first
/// segment has left. Returns `rest_with`'s value plus `1 + .. + depth`.
#[inline(never)]
fn deep_rest(depth: usize, seed: u64, rx: &Receiver<u64>, at: &Cell<usize>) -> u64 {
    if depth == 0 {
        return procrt::stack::grow(128 * 1024, || rest_with::<16>(seed, rx, at));
    }
    let pad = std::hint::black_box([depth as u8; 512]);
    let r = deep_rest(depth - 1, seed, rx, at);
    r.wrapping_add(std::hint::black_box(pad)[0] as u64)
}

#[test]
fn a_resting_proc_gives_its_page_back_and_wakes_intact() {
    let rt = runtime();
    rt.block_on(|| {
        let (tx, rx) = channel::<u64>();
        let at = Rc::new(Cell::new(0usize));
        let at2 = at.clone();
        let h = spawn(move || rest_with::<64>(7, &rx, &at2)).unwrap();
        assert_eq!(wait_hibernated(1), 1, "the resting proc was not hibernated");
        assert!(
            !resident(at.get()),
            "the hibernated proc's stack page is still resident"
        );
        tx.send(1000).unwrap();
        assert_eq!(h.join().unwrap(), expected::<64>(7, 1000));
        assert_eq!(procrt::hibernated_procs(), 0);
    });
    assert_eq!(rt.hibernated_procs(), 0);
}

#[test]
fn many_procs_wake_intact_in_any_order() {
    const SMALL: u64 = 150;
    const DEEP: u64 = 20;
    const BIG: u64 = 10;
    let rt = runtime();
    rt.block_on(|| {
        let mut procs: Vec<(u64, Sender<u64>, JoinHandle<u64>, u64)> = Vec::new();
        for seed in 0..SMALL + DEEP + BIG {
            let (tx, rx) = channel::<u64>();
            let at = Cell::new(0);
            let (h, want) = if seed < SMALL {
                let h = spawn(move || rest_with::<32>(seed, &rx, &at)).unwrap();
                (h, expected::<32>(seed, seed * 3))
            } else if seed < SMALL + DEEP {
                let h = spawn(move || deep_rest(20, seed, &rx, &at)).unwrap();
                (h, expected::<16>(seed, seed * 3) + 20 * 21 / 2)
            } else {
                // 1,280 words (10 KiB) live on the segment it parks on
                // (`grow` makes room for them and the park together): more
                // than a hibernation copies, so these stay as they are.
                let h = spawn(move || {
                    procrt::stack::grow(256 * 1024, || rest_with::<1280>(seed, &rx, &at))
                })
                .unwrap();
                (h, expected::<1280>(seed, seed * 3))
            };
            procs.push((seed, tx, h, want));
        }
        let n = wait_hibernated((SMALL + DEEP) as usize);
        assert_eq!(
            n,
            (SMALL + DEEP) as usize,
            "every small and deep proc hibernates, no big one"
        );
        // Wake them in a scrambled order; each checks its own stack.
        let mut order: Vec<usize> = (0..procs.len()).collect();
        let mut x = 12345u64;
        for i in (1..order.len()).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (x >> 33) as usize % (i + 1));
        }
        let mut handles: Vec<Option<(u64, JoinHandle<u64>, u64)>> = Vec::new();
        for (seed, tx, h, want) in procs {
            handles.push(Some((seed, h, want)));
            tx.send(seed * 3).unwrap();
        }
        for i in order {
            let (seed, h, want) = handles[i].take().unwrap();
            assert_eq!(h.join().unwrap(), want, "proc seeded {seed}");
        }
        assert_eq!(procrt::hibernated_procs(), 0);
    });
}

#[test]
fn an_actor_hibernates_between_calls() {
    let rt = runtime();
    rt.block_on(|| {
        let addr = spawn_actor(
            0u64,
            |n: &mut u64, (k, reply): (u64, procrt::actor::Reply<u64>), _| {
                *n += k;
                let _ = reply.send(*n);
            },
        );
        for round in 1..=3u64 {
            assert_eq!(
                wait_hibernated(1),
                1,
                "round {round}: the idle actor did not hibernate"
            );
            let got = addr.call(|r| (round, r), Duration::from_secs(10)).unwrap();
            assert_eq!(got, (1..=round).sum::<u64>());
        }
    });
}

#[test]
fn dropping_the_runtime_unwinds_hibernated_procs() {
    let dropped = Rc::new(Cell::new(0usize));
    let rt = runtime();
    let d = dropped.clone();
    let senders = rt.block_on(move || {
        let mut senders = Vec::new();
        for seed in 0..20u64 {
            let (tx, rx) = channel::<u64>();
            let guard = DropCounter::new(&d);
            spawn(move || {
                let _guard = guard;
                let at = Cell::new(0);
                rest_with::<32>(seed, &rx, &at)
            })
            .unwrap();
            senders.push(tx);
        }
        assert_eq!(wait_hibernated(20), 20);
        senders
    });
    assert_eq!(rt.hibernated_procs(), 20);
    assert_eq!(dropped.get(), 0);
    drop(rt);
    assert_eq!(
        dropped.get(),
        20,
        "every cancelled proc ran its destructors"
    );
    drop(senders);
}

#[test]
fn an_exit_signal_ends_a_hibernated_proc() {
    let rt = runtime();
    rt.block_on(|| {
        let (tx, rx) = channel::<u64>();
        let rester = spawn(move || {
            let at = Cell::new(0);
            rest_with::<32>(1, &rx, &at)
        })
        .unwrap();
        let rester_id = rester.id();
        assert_eq!(wait_hibernated(1), 1);
        let killer = spawn(move || {
            link(rester_id);
            panic!("killer goes down");
        })
        .unwrap();
        assert!(matches!(killer.join(), Err(JoinError::Panicked(_))));
        match rester.join() {
            Err(JoinError::Exited(_)) => {}
            other => panic!("expected the linked rester to exit, got {other:?}"),
        }
        drop(tx);
        assert_eq!(procrt::hibernated_procs(), 0);
    });
}

#[test]
fn park_join_and_a_disabled_runtime_keep_their_stacks() {
    // Off: nothing hibernates.
    let rt = Runtime::builder().hibernate_after(None).build().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel::<u64>();
        let h = spawn(move || rx.recv().unwrap()).unwrap();
        sleep(REST * 10);
        assert_eq!(procrt::hibernated_procs(), 0);
        tx.send(5).unwrap();
        assert_eq!(h.join().unwrap(), 5);
    });
    // On: `park` (whose callers may share their stack through `unsafe`
    // code) and `join` are not rests.
    let rt = runtime();
    rt.block_on(|| {
        let go = Rc::new(Cell::new(false));
        let waker = Rc::new(RefCell::new(None));
        let (go2, waker2) = (go.clone(), waker.clone());
        let parker = spawn(move || {
            *waker2.borrow_mut() = Some(procrt::unparker());
            while !go2.get() {
                procrt::park();
            }
        })
        .unwrap();
        let (tx, rx) = channel::<u64>();
        let sleeper = spawn(move || rx.recv().unwrap()).unwrap();
        let joiner = spawn(move || sleeper.join().unwrap()).unwrap();
        // The receiver rests (and hibernates), the parker and the joiner
        // do not.
        assert_eq!(wait_hibernated(1), 1);
        sleep(REST * 5);
        assert_eq!(procrt::hibernated_procs(), 1);
        tx.send(6).unwrap();
        assert_eq!(joiner.join().unwrap(), 6);
        go.set(true);
        waker.borrow().as_ref().expect("parker started").unpark();
        parker.join().unwrap();
    });
}

#[test]
fn timed_waits_selects_sleeps_and_io_waits_hibernate_and_wake_intact() {
    use procrt::chan::Select;
    use procrt::net::UnixStream;
    use std::io::{Read, Write};
    let rt = runtime();
    rt.block_on(|| {
        // A recv with a timeout that the message beats.
        let (tx1, rx1) = channel::<u64>();
        let timed = spawn(move || {
            let at = Cell::new(0);
            let words = std::hint::black_box([0x5a5a_u64; 16]);
            at.set(words.as_ptr() as usize);
            let v = rx1.recv_timeout(Duration::from_secs(60)).unwrap();
            assert!(std::hint::black_box(words).iter().all(|&w| w == 0x5a5a));
            v
        })
        .unwrap();
        // A select over two channels.
        let (tx2, rx2) = channel::<u64>();
        let (_tx3, rx3) = channel::<u64>();
        let selector = spawn(move || {
            let words = std::hint::black_box([0x77_u64; 16]);
            let mut sel = Select::new();
            let a = sel.recv(&rx2);
            let _b = sel.recv(&rx3);
            let i = sel.ready();
            assert_eq!(i, a);
            let v = rx2.try_recv().unwrap();
            assert!(std::hint::black_box(words).iter().all(|&w| w == 0x77));
            v
        })
        .unwrap();
        // A sleep past many sweeps.
        let sleeper = spawn(|| {
            let words = std::hint::black_box([0x33_u64; 16]);
            let start = Instant::now();
            sleep(REST * 50);
            assert!(start.elapsed() >= REST * 50);
            assert!(std::hint::black_box(words).iter().all(|&w| w == 0x33));
            8u64
        })
        .unwrap();
        // A read on a socket nobody writes to yet, into a stack buffer.
        let (a, mut b) = UnixStream::pair().unwrap();
        let reader = spawn(move || {
            let mut a = a;
            let mut buf = [0u8; 5];
            a.read_exact(&mut buf).unwrap();
            u64::from(buf.iter().map(|&x| x as u32).sum::<u32>())
        })
        .unwrap();
        assert_eq!(wait_hibernated(4), 4, "all four waits hibernate");
        tx1.send(1).unwrap();
        tx2.send(2).unwrap();
        b.write_all(&[1, 2, 3, 4, 5]).unwrap();
        assert_eq!(timed.join().unwrap(), 1);
        assert_eq!(selector.join().unwrap(), 2);
        assert_eq!(reader.join().unwrap(), 15);
        assert_eq!(sleeper.join().unwrap(), 8);
        assert_eq!(procrt::hibernated_procs(), 0);
    });
}

#[test]
fn a_runtime_of_hibernated_procs_sleeps() {
    let rt = runtime();
    rt.block_on(|| {
        let mut senders = Vec::new();
        for _ in 0..50 {
            let (tx, rx) = channel::<u64>();
            spawn(move || rx.recv().unwrap()).unwrap();
            senders.push(tx);
        }
        assert_eq!(wait_hibernated(50), 50);
        // Sweeps stop once everything is hibernated: while the root sleeps
        // the thread blocks once or twice, not every `REST`.
        let before = blocked_count();
        sleep(Duration::from_millis(300));
        let blocked = blocked_count() - before;
        assert!(
            blocked <= 6,
            "a runtime of hibernated procs woke {blocked} times in 300 ms"
        );
        for tx in &senders {
            tx.send(1).unwrap();
        }
    });
}

/// Times this thread has blocked (voluntary context switches).
fn blocked_count() -> i64 {
    // SAFETY: all-zero is a valid rusage, filled by getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a valid out-pointer.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(r, 0);
    ru.ru_nvcsw as i64
}

/// Debug builds check, when they restore a stack, that nothing wrote to its
/// pages while they were given back: here a proc breaks the contract (it
/// writes, through a raw pointer, into a hibernated proc's stack), and the
/// process ends with a message naming the proc and the address.
#[cfg(debug_assertions)]
#[test]
fn a_write_into_a_hibernated_stack_is_caught() {
    const ROLE: &str = "write-into-hibernated";
    if util::child_role().as_deref() == Some(ROLE) {
        let rt = runtime();
        rt.block_on(|| {
            let (tx, rx) = channel::<u64>();
            let at = Rc::new(Cell::new(0usize));
            let at2 = at.clone();
            let h = spawn(move || {
                println!("id={}", procrt::current().id());
                let mut word = std::hint::black_box([0u64; 4]);
                at2.set(word.as_mut_ptr() as usize);
                let v = rx.recv().unwrap();
                v + std::hint::black_box(word)[0]
            })
            .unwrap();
            assert_eq!(wait_hibernated(1), 1);
            // SAFETY: deliberately not: the word lies on a hibernated
            // stack, which the contract forbids touching. The page is
            // still mapped, so the write itself is defined; the restore
            // must notice it.
            unsafe { *(at.get() as *mut u64) = 0xbad };
            tx.send(1).unwrap();
            h.join().unwrap()
        });
        println!("child: survived");
        return;
    }
    let out = util::run_child("a_write_into_a_hibernated_stack_is_caught", ROLE);
    assert_eq!(out.signal(), Some(util::SIGABRT), "{}", out.describe());
    let id = out
        .stdout
        .lines()
        .find_map(|l| l.split_once("id=").map(|(_, id)| id.trim().to_owned()))
        .unwrap_or_else(|| panic!("child printed no id: {}", out.describe()));
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("hibernated proc"))
        .unwrap_or_else(|| panic!("no report: {}", out.describe()));
    assert!(
        line.contains(&format!(
            "the stack of hibernated proc {id} was written at 0x"
        )),
        "{line}"
    );
}

/// A small deterministic generator for the churn test.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Tokens hop between procs at random while hibernation is quick (1 ms):
/// procs are hibernated and woken all the time, in `recv`, in
/// `recv_timeout`, in `select`, in `sleep` and on grown segments, and each
/// checks its own stack after every wait.
#[test]
fn procs_hibernated_and_woken_at_random_keep_their_stacks() {
    use procrt::chan::Select;
    const PROCS: usize = 24;
    const TOKENS: u64 = 6;
    const HOPS: u64 = 600;
    let rt = Runtime::builder()
        .hibernate_after(Some(Duration::from_millis(1)))
        .build()
        .unwrap();
    let (hops, seen) = rt.block_on(|| {
        let hops = Rc::new(Cell::new(0u64));
        let mut txs = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..PROCS {
            let (tx, rx) = channel::<u64>();
            txs.push(tx);
            rxs.push(rx);
        }
        let txs = Rc::new(txs);
        let mut handles = Vec::new();
        for (i, rx) in rxs.into_iter().enumerate() {
            let txs = txs.clone();
            let hops = hops.clone();
            handles.push(
                spawn(move || {
                    let mut rng = Lcg(i as u64 + 1);
                    let (_never_tx, never) = channel::<u64>();
                    let mut n = 0u64;
                    loop {
                        n += 1;
                        let seed = (i as u64) << 32 | n;
                        let token = match rng.next(4) {
                            0 => {
                                let at = Cell::new(0);
                                // `rest_with` adds its words' sum: take it off.
                                rest_with::<24>(seed, &rx, &at)
                                    .wrapping_sub(expected::<24>(seed, 0))
                            }
                            1 => {
                                let at = Cell::new(0);
                                procrt::stack::grow(64 * 1024, || {
                                    deep_rest(3, seed, &rx, &at)
                                        .wrapping_sub(expected::<16>(seed, 0) + 6)
                                })
                            }
                            2 => loop {
                                let words = std::hint::black_box([seed; 8]);
                                match rx.recv_timeout(Duration::from_millis(3)) {
                                    Ok(t) => {
                                        assert!(words.iter().all(|&w| w == seed));
                                        break t;
                                    }
                                    Err(e) => {
                                        assert!(matches!(e, RecvTimeoutError::Timeout), "{e:?}")
                                    }
                                }
                                assert!(std::hint::black_box(words).iter().all(|&w| w == seed));
                            },
                            _ => {
                                let words = std::hint::black_box([!seed; 8]);
                                let mut sel = Select::new();
                                let mine = sel.recv(&rx);
                                let _other = sel.recv(&never);
                                assert_eq!(sel.ready(), mine);
                                assert!(std::hint::black_box(words).iter().all(|&w| w == !seed));
                                rx.try_recv().unwrap()
                            }
                        };
                        if token == u64::MAX {
                            return n;
                        }
                        // Hold the token a moment (a sleep that may
                        // hibernate too), then pass it on or end the game.
                        let words = std::hint::black_box([seed ^ 1; 8]);
                        sleep(Duration::from_micros(rng.next(2500)));
                        assert!(std::hint::black_box(words).iter().all(|&w| w == seed ^ 1));
                        hops.set(hops.get() + 1);
                        if hops.get() >= HOPS {
                            for tx in txs.iter() {
                                let _ = tx.send(u64::MAX);
                            }
                        } else {
                            let to = rng.next(PROCS as u64) as usize;
                            txs[to].send(token + 1).unwrap();
                        }
                    }
                })
                .unwrap(),
            );
        }
        for t in 0..TOKENS {
            txs[t as usize * 3 % PROCS].send(0).unwrap();
        }
        let mut seen = 0;
        while hops.get() < HOPS {
            seen = seen.max(procrt::hibernated_procs());
            sleep(Duration::from_micros(300));
        }
        for h in handles {
            h.join().unwrap();
        }
        (hops.get(), seen)
    });
    assert!(hops >= HOPS);
    assert!(seen > 0, "no proc was ever hibernated");
    assert_eq!(rt.hibernated_procs(), 0);
}

/// On a runtime that never goes idle (procs keep yielding), sweeps go on
/// in steps from the scheduler's periodic check, and reach every resting
/// proc, even with more of them than one step looks at.
#[test]
fn a_busy_runtime_hibernates_in_steps() {
    const RESTING: usize = 3000;
    let rt = runtime();
    rt.block_on(|| {
        let stop = Rc::new(Cell::new(false));
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                spawn(move || {
                    let mut n = 0u64;
                    while !stop.get() {
                        procrt::yield_now();
                        n += 1;
                    }
                    n
                })
                .unwrap()
            })
            .collect();
        let mut resting = Vec::new();
        for seed in 0..RESTING as u64 {
            let (tx, rx) = channel::<u64>();
            let h = spawn(move || {
                let at = Cell::new(0);
                rest_with::<8>(seed, &rx, &at)
            })
            .unwrap();
            resting.push((seed, tx, h));
        }
        let start = Instant::now();
        while procrt::hibernated_procs() < RESTING && start.elapsed() < PATIENCE {
            procrt::yield_now();
        }
        assert_eq!(procrt::hibernated_procs(), RESTING);
        stop.set(true);
        for h in spinners {
            assert!(h.join().unwrap() > 0);
        }
        for (seed, tx, h) in resting {
            tx.send(seed).unwrap();
            assert_eq!(h.join().unwrap(), expected::<8>(seed, seed));
        }
    });
}
