//! `GreenFd`: any fd (a pipe, an eventfd, a socket made elsewhere, a tty)
//! waiting for readiness by parking the calling proc.

use super::driver::Dir;
use super::source::{io_timeouts, Source};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

/// Wraps an fd so that blocking on it parks the calling proc, not the
/// thread. The first call sets `O_NONBLOCK` on the fd (on its open file
/// description: a `dup` of it, or the same file held by another process,
/// becomes non-blocking too; wrap only fds you own).
///
/// [`Read`] and [`Write`] use `read(2)`/`write(2)` on the fd; other calls
/// go through [`read_with`](GreenFd::read_with) and
/// [`write_with`](GreenFd::write_with), which retry a closure on
/// `WouldBlock`. Every call obeys the read or write timeout
/// ([`set_read_timeout`](GreenFd::set_read_timeout)), failing with
/// [`TimedOut`](io::ErrorKind::TimedOut). Dropping deregisters the fd, then
/// closes it (through `T`'s drop).
///
/// ```
/// use procrt::io::GreenFd;
/// use std::io::{Read, Write};
/// use std::os::fd::{FromRawFd, OwnedFd};
///
/// procrt::run(|| {
///     let mut fds = [0; 2];
///     assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
///     // SAFETY (of the example): pipe() just made both fds, owned here.
///     let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
///     let mut r = GreenFd::new(r);
///     let mut w = GreenFd::new(w);
///     let reader = procrt::spawn(move || {
///         let mut buf = [0; 5];
///         r.read_exact(&mut buf).unwrap(); // parks until the writer writes
///         buf
///     })
///     .unwrap();
///     w.write_all(b"hello").unwrap();
///     assert_eq!(&reader.join().unwrap(), b"hello");
/// });
/// ```
pub struct GreenFd<T: AsFd = OwnedFd> {
    /// The fd and its registration.
    src: Source<T>,
}

impl<T: AsFd> GreenFd<T> {
    /// Wraps `io`. Nothing is checked or changed until the first call.
    pub fn new(io: T) -> GreenFd<T> {
        GreenFd {
            src: Source::new(io),
        }
    }

    /// The wrapped object.
    pub fn get_ref(&self) -> &T {
        self.src.get_ref()
    }

    /// Unwraps the object, deregistered (its fd stays non-blocking if a
    /// call made it so).
    pub fn into_inner(self) -> T {
        self.src.into_inner()
    }

    io_timeouts!();

    /// Parks until the fd is readable (or hung up, or in error), or until
    /// `deadline` (`TimedOut`). May report readiness that a following
    /// call finds gone (another proc took the data): retry on
    /// `WouldBlock`, or use [`read_with`](GreenFd::read_with).
    pub fn wait_readable(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.src.wait_ready(Dir::Read, deadline)
    }

    /// Parks until the fd is writable; see [`wait_readable`](GreenFd::wait_readable).
    pub fn wait_writable(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.src.wait_ready(Dir::Write, deadline)
    }

    /// Runs `f` (a non-blocking read-side call on the object) until it
    /// stops failing with `WouldBlock`, parking for readability in
    /// between, within the read timeout.
    pub fn read_with<R>(&self, f: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.src.io(Dir::Read, f)
    }

    /// Like [`read_with`](GreenFd::read_with), for write-side calls.
    pub fn write_with<R>(&self, f: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.src.io(Dir::Write, f)
    }
}

/// `read(2)` on a raw fd.
fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: writes at most `buf.len()` bytes into `buf`.
    let n = super::driver::syscall!(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}

/// `write(2)` on a raw fd.
fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes from `buf`.
    let n = super::driver::syscall!(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}

impl<T: AsFd> Read for &GreenFd<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|io| read_fd(io.as_fd().as_raw_fd(), buf))
    }
}

impl<T: AsFd> Write for &GreenFd<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|io| write_fd(io.as_fd().as_raw_fd(), buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: AsFd> Read for GreenFd<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl<T: AsFd> Write for GreenFd<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: AsFd> AsFd for GreenFd<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.src.get_ref().as_fd()
    }
}

impl<T: AsFd> AsRawFd for GreenFd<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl From<OwnedFd> for GreenFd<OwnedFd> {
    fn from(fd: OwnedFd) -> Self {
        GreenFd::new(fd)
    }
}

impl From<GreenFd<OwnedFd>> for OwnedFd {
    fn from(g: GreenFd<OwnedFd>) -> OwnedFd {
        g.into_inner()
    }
}

impl<T: AsFd + std::fmt::Debug> std::fmt::Debug for GreenFd<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("GreenFd").field(self.src.get_ref()).finish()
    }
}
