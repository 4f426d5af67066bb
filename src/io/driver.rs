//! The reactor: one epoll instance per runtime, and the readiness of every
//! fd a proc has waited on.
//!
//! # Design
//!
//! **epoll through `libc`, not mio.** The reactor needs five calls
//! (`epoll_create1`, `epoll_ctl`, `epoll_wait`, `eventfd`, `read`), all on
//! Linux, which is the only OS procrt's switch supports. mio would add a
//! dependency tree, its own `Token`/`Registry` layer and a `Waker` whose
//! eventfd we could not fold into our injection protocol, to save about a
//! hundred lines that are easy to check against the man pages. `libc` is
//! already a dependency (DESIGN.md lists epoll and eventfd under it).
//!
//! **Edge-triggered, registered once.** An fd is added on the first
//! `EAGAIN` a proc meets on it, with `EPOLLIN | EPOLLOUT | EPOLLRDHUP |
//! EPOLLET`, and stays until its owner drops it (or moves to another
//! runtime). Each registration is a [`Slot`] holding two readiness bits
//! (readable, writable), a sticky hang-up bit (see below) and two waiter
//! lists. The protocol of one blocking
//! call, after the non-blocking syscall said `EAGAIN`:
//!
//! 1. clear the direction's readiness bit (the kernel just said "not
//!    ready"; no event can have been handled since, because the driver
//!    only runs while no proc does);
//! 2. until the bit is set again, put the proc's `Unparker` on the
//!    direction's waiter list and park (with the call's deadline);
//! 3. retry the syscall.
//!
//! An event sets the bits it names and wakes every waiter of those
//! directions, at the back of the scheduler's FIFO queue (not the LIFO
//! front where a channel wake goes): procs are served in the order their
//! fds became ready, so fresh readiness cannot keep pushing older waiters
//! back. With LIFO wakes, `procrt-bench echo 1000` had a p99 two to eight
//! times tokio's; with FIFO wakes it is level with it. Adding an fd that is already ready makes epoll report it at
//! once (an edge is raised for the current state on `EPOLL_CTL_ADD`), so
//! lazy registration loses nothing. Hang-up and error set both bits: the
//! retried syscall then returns EOF or the error.
//!
//! **Drained reads skip the `EAGAIN`.** A stream read (TCP, unix stream)
//! that returns fewer bytes than it asked for, but not 0, has drained the
//! socket's receive queue: it clears the read bit ([`Reactor::clear_drained`])
//! and the next read of that fd waits for an edge *before* its syscall
//! instead of making one that says `EAGAIN` (what tokio's `poll_read`
//! does). Data that arrives after the read raises a new edge, so nothing
//! is lost. The exception is a hang-up seen before the read: the EOF is
//! still to be read and no further edge will come, so a hang-up or error
//! event also sets a sticky `READ_CLOSED` bit that keeps the read bit set.
//! A datagram socket, a tty or an arbitrary fd may return a short read with
//! more to come, so only stream sockets do this. An echo server then makes
//! two syscalls per message (`recv`, `send`) instead of three.
//!
//! **Tokens.** `epoll_event.u64 = gen << 32 | index`: a slot's generation
//! grows each time it is freed, so an event still queued for a dropped fd
//! whose slot was reused is recognised as stale and ignored.
//! [`WAKE_TOKEN`] (`u64::MAX`) is the runtime's wake-up eventfd, registered
//! level-triggered: see `sched/remote.rs`.
//!
//! Rejected: level-triggered registration (every wait of a ready fd would
//! report it again until read; with many idle-but-readable fds the wait
//! loops); `EPOLLONESHOT` (one `epoll_ctl` per wait: a syscall on every
//! blocking call); one epoll per thread shared by runtimes (a runtime must
//! sleep only on its own fds).

use crate::Unparker;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The token of the runtime's wake-up eventfd.
pub(crate) const WAKE_TOKEN: u64 = u64::MAX;

/// A `Slot::ready` bit: the peer hung up or the socket failed. Final, so
/// [`Reactor::clear_drained`] leaves the read bit set once it is.
const READ_CLOSED: u8 = 4;

/// Events fetched by one `epoll_wait`; more wait for the next one (edge-
/// triggered events stay on epoll's ready list until fetched). 1,024
/// measured no better than 256 on `procrt-bench echo 100` and `echo 1000`
/// (11 interleaved runs each, throughput and p99 within noise).
const EVENTS: usize = 256;

/// Turns a `-1` return into the thread's `errno` as an `io::Error`.
macro_rules! syscall {
    ($e:expr) => {{
        let r = $e;
        if r == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }};
}
pub(crate) use syscall;

/// A direction a proc waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// `read`, `recv`, `accept`: `EPOLLIN` (and hang-ups, errors).
    Read,
    /// `write`, `send`, `connect`: `EPOLLOUT` (and hang-ups, errors).
    Write,
}

impl Dir {
    /// The readiness bit of this direction in [`Slot::ready`].
    fn bit(self) -> u8 {
        match self {
            Dir::Read => 1,
            Dir::Write => 2,
        }
    }
}

/// One registered fd.
///
/// A live slot has `fd >= 0`; a free slot has `fd == -1`, empty waiter
/// lists, and is on the free list.
struct Slot {
    /// Bumped each time the slot is freed; the high half of its tokens.
    gen: u32,
    /// The registered fd, or -1 when the slot is free.
    fd: RawFd,
    /// Readiness bits (`Dir::bit`) seen since each was last cleared, and
    /// [`READ_CLOSED`].
    ready: u8,
    /// Procs waiting to read.
    readers: Vec<Unparker>,
    /// Procs waiting to write.
    writers: Vec<Unparker>,
}

/// A runtime's epoll instance and its registrations. Single-threaded:
/// shared by `Rc` between the runtime and the I/O objects registered with
/// it, so an object that outlives its runtime can still deregister.
pub(crate) struct Reactor {
    /// The epoll fd.
    epfd: OwnedFd,
    /// Registrations, by token index.
    slots: RefCell<Vec<Slot>>,
    /// Free indices of `slots`.
    free: RefCell<Vec<u32>>,
    /// Procs now on some waiter list: when 0, a busy runtime skips the
    /// non-blocking poll between picks.
    waiting: Cell<usize>,
    /// The buffer `epoll_wait` fills.
    events: RefCell<Vec<libc::epoll_event>>,
    /// The waiters one poll wakes (kept to reuse its allocation).
    woken: RefCell<Vec<Unparker>>,
}

impl Reactor {
    /// A new epoll instance, watching `wake_fd` (level-triggered) under
    /// [`WAKE_TOKEN`].
    pub(crate) fn new(wake_fd: RawFd) -> io::Result<Reactor> {
        // SAFETY: plain syscall; the fd it returns is owned below.
        let fd = syscall!(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just created and is owned by nobody else.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE_TOKEN,
        };
        // SAFETY: both fds are open; `ev` is a valid epoll_event.
        syscall!(unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, wake_fd, &mut ev) })?;
        Ok(Reactor {
            epfd,
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            waiting: Cell::new(0),
            events: RefCell::new(Vec::with_capacity(EVENTS)),
            woken: RefCell::new(Vec::new()),
        })
    }

    /// Procs now waiting on an fd.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.get()
    }

    /// Adds `fd` (edge-triggered, both directions); returns its token.
    /// Both readiness bits start set: the caller retries its syscall once
    /// before it waits.
    pub(crate) fn register(&self, fd: RawFd) -> io::Result<u64> {
        let mut slots = self.slots.borrow_mut();
        let index = match self.free.borrow_mut().pop() {
            Some(i) => i as usize,
            None => {
                if slots.len() >= u32::MAX as usize {
                    return Err(io::Error::other(
                        "procrt: more than 2^32 - 1 registered fds",
                    ));
                }
                slots.push(Slot {
                    gen: 0,
                    fd: -1,
                    ready: 0,
                    readers: Vec::new(),
                    writers: Vec::new(),
                });
                slots.len() - 1
            }
        };
        let slot = &mut slots[index];
        let token = (u64::from(slot.gen) << 32) | index as u64;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `epfd` is open; an invalid `fd` is reported as EBADF;
        // `ev` is a valid epoll_event.
        let r = syscall!(unsafe {
            libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev)
        });
        if let Err(e) = r {
            self.free.borrow_mut().push(index as u32);
            return Err(e);
        }
        slot.fd = fd;
        slot.ready = Dir::Read.bit() | Dir::Write.bit();
        Ok(token)
    }

    /// Removes a registration; waiters still on it are woken (their retry
    /// then fails on the closed fd, or re-registers).
    pub(crate) fn deregister(&self, token: u64) {
        let woken = {
            let mut slots = self.slots.borrow_mut();
            let Some(slot) = live_slot(&mut slots, token) else {
                crate::fatal(format_args!("deregistering a stale fd token {token:#x}"));
            };
            // SAFETY: `epfd` is open; the fd is still open (its owner calls
            // this before closing it). Errors (ENOENT after a dup'ed fd was
            // closed elsewhere) leave nothing to undo.
            unsafe {
                libc::epoll_ctl(
                    self.epfd.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    slot.fd,
                    std::ptr::null_mut(),
                )
            };
            slot.fd = -1;
            slot.ready = 0;
            slot.gen = slot.gen.wrapping_add(1);
            let mut w = std::mem::take(&mut slot.readers);
            w.append(&mut slot.writers);
            self.free.borrow_mut().push(token as u32);
            w
        };
        self.waiting.set(self.waiting.get() - woken.len());
        for u in woken {
            u.unpark();
        }
    }

    /// Whether the slot's `dir` bit is set.
    pub(crate) fn is_ready(&self, token: u64, dir: Dir) -> bool {
        let mut slots = self.slots.borrow_mut();
        live_slot(&mut slots, token).is_some_and(|s| s.ready & dir.bit() != 0)
    }

    /// Clears the slot's `dir` bit (the syscall just said `EAGAIN`).
    pub(crate) fn clear_ready(&self, token: u64, dir: Dir) {
        let mut slots = self.slots.borrow_mut();
        if let Some(s) = live_slot(&mut slots, token) {
            s.ready &= !dir.bit();
        }
    }

    /// Clears the slot's read bit after a stream read that returned less
    /// than it asked for (its receive queue was drained), unless the peer
    /// hung up: the EOF after the data is still to be read, and no new edge
    /// would announce it.
    pub(crate) fn clear_drained(&self, token: u64) {
        let mut slots = self.slots.borrow_mut();
        if let Some(s) = live_slot(&mut slots, token) {
            if s.ready & READ_CLOSED == 0 {
                s.ready &= !Dir::Read.bit();
            }
        }
    }

    /// Puts `u` on the slot's `dir` waiter list.
    pub(crate) fn add_waiter(&self, token: u64, dir: Dir, u: Unparker) {
        let mut slots = self.slots.borrow_mut();
        let Some(s) = live_slot(&mut slots, token) else {
            // Deregistered meanwhile: nothing will wake it; wake it now.
            drop(slots);
            u.unpark();
            return;
        };
        match dir {
            Dir::Read => s.readers.push(u),
            Dir::Write => s.writers.push(u),
        }
        self.waiting.set(self.waiting.get() + 1);
    }

    /// Takes the proc `id` off the slot's `dir` waiter list, if it is
    /// still there (an event or a deregistration may have taken it).
    pub(crate) fn remove_waiter(&self, token: u64, dir: Dir, id: crate::ProcId) {
        let removed = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = live_slot(&mut slots, token) else {
                return;
            };
            let list = match dir {
                Dir::Read => &mut s.readers,
                Dir::Write => &mut s.writers,
            };
            list.iter()
                .position(|u| u.id() == id)
                .map(|i| list.swap_remove(i))
        };
        if removed.is_some() {
            self.waiting.set(self.waiting.get() - 1);
        }
    }

    /// Waits up to `timeout_ms` (-1: forever, 0: just look) for events,
    /// marks readiness and wakes the waiters. Returns whether the wake-up
    /// eventfd was among the events (the caller drains the injection
    /// queue). `EINTR` counts as an empty wait.
    pub(crate) fn poll(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut events = self.events.borrow_mut();
        events.clear();
        // SAFETY: `events` has room for EVENTS entries; the kernel writes
        // at most that many and returns how many it wrote.
        let n = match syscall!(unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as i32,
                timeout_ms,
            )
        }) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        // SAFETY: the kernel initialised the first `n` entries.
        unsafe { events.set_len(n) };
        let mut woke_remote = false;
        let mut woken = std::mem::take(&mut *self.woken.borrow_mut());
        {
            let mut slots = self.slots.borrow_mut();
            for ev in events.iter() {
                let (token, bits) = (ev.u64, ev.events);
                if token == WAKE_TOKEN {
                    woke_remote = true;
                    continue;
                }
                let Some(s) = live_slot(&mut slots, token) else {
                    continue; // stale: the fd was dropped after the event
                };
                let err = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
                let readable = (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP) as u32 | err;
                if bits & (libc::EPOLLRDHUP as u32 | err) != 0 {
                    s.ready |= READ_CLOSED;
                }
                if bits & readable != 0 {
                    s.ready |= Dir::Read.bit();
                    woken.append(&mut s.readers);
                }
                if bits & (libc::EPOLLOUT as u32 | err) != 0 {
                    s.ready |= Dir::Write.bit();
                    woken.append(&mut s.writers);
                }
            }
        }
        drop(events);
        self.waiting.set(self.waiting.get() - woken.len());
        // FIFO: served in the order their fds became ready.
        for u in woken.drain(..) {
            u.unpark_fifo();
        }
        *self.woken.borrow_mut() = woken;
        Ok(woke_remote)
    }
}

/// The live slot a token names, or `None` if it was freed since.
fn live_slot(slots: &mut [Slot], token: u64) -> Option<&mut Slot> {
    let s = slots.get_mut((token & 0xffff_ffff) as usize)?;
    (s.gen == (token >> 32) as u32 && s.fd >= 0).then_some(s)
}
