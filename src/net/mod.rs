//! Green sockets: TCP and unix-domain streams, listeners and datagrams
//! whose blocking calls park the calling proc.
//!
//! Each type wraps its `std::net` / `std::os::unix::net` counterpart, made
//! non-blocking, in the I/O layer's readiness machinery (`io/source.rs`):
//! a call that would block parks the proc until epoll says the socket is
//! ready, then retries. The API follows std's: [`Read`](std::io::Read) and
//! [`Write`](std::io::Write) (also on `&T`), `shutdown`, `peer_addr`,
//! read and write timeouts (here they fail with
//! [`TimedOut`](std::io::ErrorKind::TimedOut); std on Unix says
//! `WouldBlock`), `AsFd`, `From<OwnedFd>`, and conversions from the std
//! types. Dropping a socket deregisters it and closes it.
//!
//! Outside any proc these types still work: a call that would block
//! blocks the thread in `poll(2)`.
//!
//! ```
//! use procrt::net::{TcpListener, TcpStream};
//! use std::io::{Read, Write};
//!
//! procrt::run(|| {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let server = procrt::spawn(move || {
//!         let (mut s, _) = listener.accept().unwrap();
//!         let mut buf = [0; 4];
//!         s.read_exact(&mut buf).unwrap();
//!         s.write_all(&buf).unwrap();
//!     })
//!     .unwrap();
//!     let mut c = TcpStream::connect(addr).unwrap();
//!     c.write_all(b"ping").unwrap();
//!     let mut buf = [0; 4];
//!     c.read_exact(&mut buf).unwrap();
//!     assert_eq!(&buf, b"ping");
//!     server.join().unwrap();
//! });
//! ```
//!
//! # Running out of file descriptors
//!
//! `accept` failing with `EMFILE` or `ENFILE` (or `ENOBUFS`/`ENOMEM`)
//! returns that error, and the listener backs off: its next `accept` first
//! waits 1 ms, doubling per consecutive failure up to 100 ms, so an accept
//! loop that logs and retries does not spin while the process is out of
//! fds. The pending connection stays in the backlog; the first success
//! resets the backoff.

/// `From<OwnedFd>`, `Into<OwnedFd>`, `AsFd` and `AsRawFd` of a socket type
/// `$t` wrapping the std type `$std` in its `src` field.
macro_rules! fd_conversions {
    ($t:ident, $std:ty) => {
        impl From<OwnedFd> for $t {
            fn from(fd: OwnedFd) -> Self {
                $t::from(<$std>::from(fd))
            }
        }

        impl From<$t> for OwnedFd {
            fn from(s: $t) -> OwnedFd {
                s.src.into_inner().into()
            }
        }

        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.src.get_ref().as_fd()
            }
        }

        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.src.get_ref().as_raw_fd()
            }
        }
    };
}

/// The accepting half of a listener type whose `src` is a `Source` of a
/// std listener and whose accepted sockets are `$stream`s. `SocketAddr`
/// is the address type of the module it is used in.
macro_rules! listener {
    ($stream:ident) => {
        /// Accepts a connection, parking until one comes (or the accept
        /// timeout passes: `TimedOut`).
        pub fn accept(&self) -> io::Result<($stream, SocketAddr)> {
            let deadline = self.src.deadline(Dir::Read);
            self.backoff.before(deadline)?;
            let r = self.src.do_io(Dir::Read, deadline, |l| l.accept());
            self.backoff.after(&r);
            let (s, a) = r?;
            // One ioctl now instead of two fcntls at the first call.
            s.set_nonblocking(true)?;
            Ok((
                $stream {
                    src: Source::new_nonblocking(s),
                },
                a,
            ))
        }

        /// An endless iterator of `accept` results.
        pub fn incoming(&self) -> impl Iterator<Item = io::Result<$stream>> + '_ {
            std::iter::repeat_with(move || self.accept().map(|(s, _)| s))
        }

        /// The bound address.
        pub fn local_addr(&self) -> io::Result<SocketAddr> {
            self.src.get_ref().local_addr()
        }

        /// Limit of each `accept`; `None` (the default) waits forever.
        pub fn set_accept_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
            $crate::io::source::check_timeout(t)?;
            self.src.read_timeout.set(t);
            Ok(())
        }

        /// The accept timeout.
        pub fn accept_timeout(&self) -> Option<std::time::Duration> {
            self.src.read_timeout.get()
        }
    };
}

/// `Read` and `Write` of a stream type `$t` (on `&$t`, and on `$t` through
/// it): reads go through `Source::read_stream` (a short read marks the
/// socket drained), writes through `Source::io`.
macro_rules! stream_io {
    ($t:ident) => {
        impl Read for &$t {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.src.read_stream(buf.len(), |mut s| s.read(buf))
            }
            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                let len = bufs.iter().map(|b| b.len()).sum();
                self.src.read_stream(len, |mut s| s.read_vectored(bufs))
            }
        }

        impl Write for &$t {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.src.io(Dir::Write, |mut s| s.write(buf))
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.src.io(Dir::Write, |mut s| s.write_vectored(bufs))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        impl Read for $t {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }
            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                (&*self).read_vectored(bufs)
            }
        }

        impl Write for $t {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                (&*self).write_vectored(bufs)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
    };
}

mod sys;
mod tcp;
mod unix;

pub use tcp::{TcpListener, TcpStream};
pub use unix::{UnixDatagram, UnixListener, UnixStream};

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

/// First wait after an accept ran out of fds.
const BACKOFF_MIN: Duration = Duration::from_millis(1);
/// Longest wait between accepts while out of fds.
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// The accept backoff of a listener (see "Running out of file
/// descriptors").
#[derive(Debug, Default)]
struct Backoff {
    /// No accept before this.
    until: Cell<Option<Instant>>,
    /// The last wait; zero after a success.
    step: Cell<Duration>,
}

impl Backoff {
    /// Waits out the backoff, or until `deadline` (`TimedOut`).
    fn before(&self, deadline: Option<Instant>) -> io::Result<()> {
        let Some(until) = self.until.get() else {
            return Ok(());
        };
        let end = deadline.map_or(until, |d| d.min(until));
        if crate::try_current().is_some() {
            crate::sleep_until(end);
        } else {
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
        }
        if deadline.is_some_and(|d| d < until) {
            return Err(crate::io::source::timed_out());
        }
        self.until.set(None);
        Ok(())
    }

    /// Records the outcome of an accept.
    fn after<T>(&self, r: &io::Result<T>) {
        match r {
            Ok(_) => self.step.set(Duration::ZERO),
            Err(e) if is_out_of_fds(e) => {
                let step = (self.step.get() * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                self.step.set(step);
                self.until.set(Instant::now().checked_add(step));
            }
            Err(_) => {}
        }
    }
}

/// Whether `e` says the process or system is out of fds or socket memory.
fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
