//! `Source<T>`: an fd that parks the calling proc instead of blocking.
//!
//! Every green I/O type wraps one. A blocking call is a non-blocking
//! syscall retried until it stops saying `EAGAIN`; in between, the proc
//! waits for readiness in the runtime's [`Reactor`] (see `driver.rs` for
//! the protocol). A stream read that drained the socket makes the next
//! read wait first instead of trying (`read_stream`; see "Drained reads
//! skip the `EAGAIN`" in `driver.rs`). Outside any proc (a plain thread,
//! or `main` before `block_on`) the wait is a `poll(2)` that blocks the
//! thread, so the same object works everywhere.
//!
//! Registration is lazy and follows the runtime: the first `EAGAIN` inside
//! a runtime registers the fd with that runtime's reactor; used later
//! inside another runtime on the same thread, it moves there.

use super::driver::{syscall, Dir, Reactor};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A registration: which reactor, under which token.
struct Reg {
    /// The reactor the fd is registered with.
    reactor: Rc<Reactor>,
    /// Its token there.
    token: u64,
}

/// An fd whose blocking calls park the calling proc.
///
/// # State
/// `reg` is `None` until the first wait inside a runtime, then names the
/// reactor of the runtime it last waited in. `nonblocking` is false until
/// the first call sets `O_NONBLOCK` (so `From<OwnedFd>` need not fail).
pub(crate) struct Source<T: AsFd> {
    /// The wrapped object; owns the fd.
    io: T,
    /// Where the fd is registered.
    reg: RefCell<Option<Reg>>,
    /// `O_NONBLOCK` has been set.
    nonblocking: Cell<bool>,
    /// Limit of each read-side call (read, recv, accept).
    pub(crate) read_timeout: Cell<Option<Duration>>,
    /// Limit of each write-side call (write, send, connect).
    pub(crate) write_timeout: Cell<Option<Duration>>,
}

/// The read and write timeout accessors of a green I/O type whose `src`
/// field is a [`Source`] (`GreenFd` and the sockets).
macro_rules! io_timeouts {
    () => {
        /// Limit of each read-side call; `None` (the default) waits forever.
        /// A zero duration is refused, as by std.
        pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
            $crate::io::source::check_timeout(t)?;
            self.src.read_timeout.set(t);
            Ok(())
        }

        /// Limit of each write-side call; `None` (the default) waits forever.
        /// A zero duration is refused, as by std.
        pub fn set_write_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
            $crate::io::source::check_timeout(t)?;
            self.src.write_timeout.set(t);
            Ok(())
        }

        /// The read timeout.
        pub fn read_timeout(&self) -> Option<std::time::Duration> {
            self.src.read_timeout.get()
        }

        /// The write timeout.
        pub fn write_timeout(&self) -> Option<std::time::Duration> {
            self.src.write_timeout.get()
        }
    };
}
pub(crate) use io_timeouts;

/// The error of a call that ran out of time.
pub(crate) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "procrt: I/O timed out")
}

/// Checks a timeout the way std's `set_read_timeout` does.
pub(crate) fn check_timeout(t: Option<Duration>) -> io::Result<()> {
    if t == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        ));
    }
    Ok(())
}

impl<T: AsFd> Source<T> {
    /// Wraps `io`; `O_NONBLOCK` is set by the first call.
    pub(crate) fn new(io: T) -> Source<T> {
        Source {
            io,
            reg: RefCell::new(None),
            nonblocking: Cell::new(false),
            read_timeout: Cell::new(None),
            write_timeout: Cell::new(None),
        }
    }

    /// Wraps `io`, which is already non-blocking.
    pub(crate) fn new_nonblocking(io: T) -> Source<T> {
        let s = Source::new(io);
        s.nonblocking.set(true);
        s
    }

    /// The wrapped object.
    pub(crate) fn get_ref(&self) -> &T {
        &self.io
    }

    /// Deregisters and returns the object (still non-blocking if a call set
    /// it).
    pub(crate) fn into_inner(self) -> T {
        self.deregister();
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is ManuallyDrop, so `Source::drop` never runs and
        // no field is dropped twice: `reg` (already None) and `io` are each
        // read out once, here; the other fields are `Copy`.
        unsafe {
            drop(std::ptr::read(&this.reg));
            std::ptr::read(&this.io)
        }
    }

    fn raw(&self) -> RawFd {
        self.io.as_fd().as_raw_fd()
    }

    /// Sets `O_NONBLOCK` once.
    fn ensure_nonblocking(&self) -> io::Result<()> {
        if self.nonblocking.get() {
            return Ok(());
        }
        let fd = self.raw();
        // SAFETY: fcntl on an fd we own; an invalid one gives EBADF.
        let flags = syscall!(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
        if flags & libc::O_NONBLOCK == 0 {
            // SAFETY: as above.
            syscall!(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
        }
        self.nonblocking.set(true);
        Ok(())
    }

    fn deregister(&self) {
        if let Some(r) = self.reg.borrow_mut().take() {
            r.reactor.deregister(r.token);
        }
    }

    /// The deadline of a call in `dir` starting now.
    pub(crate) fn deadline(&self, dir: Dir) -> Option<Instant> {
        let t = match dir {
            Dir::Read => self.read_timeout.get(),
            Dir::Write => self.write_timeout.get(),
        };
        t.and_then(|t| Instant::now().checked_add(t))
    }

    /// Runs `f` until it stops failing with `WouldBlock` (waiting for
    /// readiness in `dir` in between) or `deadline` passes (`TimedOut`).
    /// `Interrupted` is retried.
    pub(crate) fn do_io<R>(
        &self,
        dir: Dir,
        deadline: Option<Instant>,
        mut f: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.ensure_nonblocking()?;
        loop {
            match f(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
            self.wait(dir, deadline)?;
        }
    }

    /// Runs `f` with the call's own timeout (see `read_timeout`).
    pub(crate) fn io<R>(&self, dir: Dir, f: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.do_io(dir, self.deadline(dir), f)
    }

    /// A stream socket's read of up to `len` bytes, as `io(Dir::Read, f)`,
    /// except around a drained receive queue (see "Drained reads skip the
    /// `EAGAIN`" in `driver.rs`): a previous short read that cleared the
    /// read bit makes this one wait for readiness first, and a short read
    /// now clears it. Only for stream sockets, whose short read means the
    /// queue is empty.
    pub(crate) fn read_stream(
        &self,
        len: usize,
        f: impl FnMut(&T) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let deadline = self.deadline(Dir::Read);
        let reg = self.current_token();
        if let Some((reactor, token)) = &reg {
            if !reactor.is_ready(*token, Dir::Read) {
                self.wait(Dir::Read, deadline)?;
            }
        }
        let r = self.do_io(Dir::Read, deadline, f);
        if let Ok(n) = r {
            if n > 0 && n < len {
                // Registered by the wait of the call if it made one.
                if let Some((reactor, token)) = reg.or_else(|| self.current_token()) {
                    reactor.clear_drained(token);
                }
            }
        }
        r
    }

    /// The reactor of the running runtime and the fd's token there, if the
    /// fd is registered with it.
    fn current_token(&self) -> Option<(Rc<Reactor>, u64)> {
        let reg = self.reg.borrow();
        let r = reg.as_ref()?;
        let reactor = crate::sched::current_reactor()?.ok()?;
        Rc::ptr_eq(&r.reactor, &reactor).then_some((reactor, r.token))
    }

    /// Waits until the fd is ready in `dir` (after a `WouldBlock`), or
    /// until `deadline` (`TimedOut`).
    pub(crate) fn wait(&self, dir: Dir, deadline: Option<Instant>) -> io::Result<()> {
        let reactor = match crate::sched::current_reactor() {
            None => return poll_fd(self.raw(), dir, deadline),
            Some(r) => r?,
        };
        let token = self.token_in(&reactor)?;
        reactor.clear_ready(token, dir);
        let me = crate::unparker();
        let id = me.id();
        let mut me = Some(me);
        loop {
            if reactor.is_ready(token, dir) {
                return Ok(());
            }
            if let Some(d) = deadline {
                if Instant::now() >= d {
                    return Err(timed_out());
                }
            }
            reactor.add_waiter(token, dir, me.take().unwrap_or_else(crate::unparker));
            /// Takes the proc off the waiter list however the park ends
            /// (a cancellation unwinds through here).
            struct Unwait<'a>(&'a Reactor, u64, Dir, crate::ProcId);
            impl Drop for Unwait<'_> {
                fn drop(&mut self) {
                    self.0.remove_waiter(self.1, self.2, self.3);
                }
            }
            let unwait = Unwait(&reactor, token, dir, id);
            match deadline {
                Some(d) => {
                    crate::sched::rest_until(d);
                }
                None => crate::sched::rest(),
            }
            drop(unwait);
            // A deregistration (the fd moved runtimes meanwhile) ends the
            // wait: the caller's retry finds out.
            if !self.is_registered_with(&reactor, token) {
                return Ok(());
            }
        }
    }

    /// Waits for readiness without a failed call first: asks the kernel
    /// (`poll(2)`, timeout 0) and waits only if the fd is not ready now.
    pub(crate) fn wait_ready(&self, dir: Dir, deadline: Option<Instant>) -> io::Result<()> {
        if poll_fd(self.raw(), dir, Some(Instant::now())).is_ok() {
            return Ok(());
        }
        self.wait(dir, deadline)
    }

    /// The fd's token in `reactor`, registering it (and leaving a previous
    /// reactor) if needed.
    fn token_in(&self, reactor: &Rc<Reactor>) -> io::Result<u64> {
        if let Some(r) = &*self.reg.borrow() {
            if Rc::ptr_eq(&r.reactor, reactor) {
                return Ok(r.token);
            }
        }
        self.deregister();
        let token = reactor.register(self.raw())?;
        *self.reg.borrow_mut() = Some(Reg {
            reactor: reactor.clone(),
            token,
        });
        Ok(token)
    }

    fn is_registered_with(&self, reactor: &Rc<Reactor>, token: u64) -> bool {
        self.reg
            .borrow()
            .as_ref()
            .is_some_and(|r| Rc::ptr_eq(&r.reactor, reactor) && r.token == token)
    }
}

impl<T: AsFd> Drop for Source<T> {
    fn drop(&mut self) {
        // Before `io` closes the fd.
        self.deregister();
    }
}

impl<T: AsFd + std::fmt::Debug> std::fmt::Debug for Source<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.io.fmt(f)
    }
}

/// Blocks the thread in `poll(2)` until `fd` is ready in `dir` or
/// `deadline` passes (`TimedOut`).
fn poll_fd(fd: RawFd, dir: Dir, deadline: Option<Instant>) -> io::Result<()> {
    let events = match dir {
        Dir::Read => libc::POLLIN,
        Dir::Write => libc::POLLOUT,
    };
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
            }
        };
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match syscall!(unsafe { libc::poll(&mut p, 1, timeout) }) {
            Ok(0) if timeout == 0 => return Err(timed_out()),
            Ok(0) => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
