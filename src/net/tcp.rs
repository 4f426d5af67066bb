//! `TcpListener` and `TcpStream`.

use super::{sys, Backoff};
use crate::io::source::{check_timeout, Source};
use crate::io::Dir;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{self, Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// A TCP socket server whose `accept` parks the calling proc.
///
/// See the [module docs](crate::net) for an example and for what happens
/// when the process runs out of file descriptors.
#[derive(Debug)]
pub struct TcpListener {
    /// The std listener, non-blocking.
    src: Source<net::TcpListener>,
    /// Slows accepts down while out of fds.
    backoff: Backoff,
}

impl TcpListener {
    /// Binds to `addr` (the first address that binds, as std does). Binding
    /// does not block; a name is resolved with std's blocking resolver.
    ///
    /// The backlog is the system's maximum (`net.core.somaxconn`), not
    /// std's 128: a runtime with thousands of procs connecting at once
    /// should not see SYNs dropped while its acceptor waits its turn.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let l = net::TcpListener::bind(addr)?;
        sys::raise_backlog(l.as_raw_fd())?;
        Ok(TcpListener::from(l))
    }

    /// Accepts a connection, parking until one comes (or the accept
    /// timeout passes: `TimedOut`).
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let deadline = self.src.deadline(Dir::Read);
        self.backoff.before(deadline)?;
        let r = self.src.do_io(Dir::Read, deadline, |l| l.accept());
        self.backoff.after(&r);
        let (s, a) = r?;
        // One ioctl now instead of two fcntls at the first call.
        s.set_nonblocking(true)?;
        Ok((
            TcpStream {
                src: Source::new_nonblocking(s),
            },
            a,
        ))
    }

    /// An endless iterator of `accept` results.
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<TcpStream>> + '_ {
        std::iter::repeat_with(move || self.accept().map(|(s, _)| s))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.src.get_ref().local_addr()
    }

    /// Limit of each `accept`; `None` (the default) waits forever.
    pub fn set_accept_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        check_timeout(t)?;
        self.src.read_timeout.set(t);
        Ok(())
    }

    /// The accept timeout.
    pub fn accept_timeout(&self) -> Option<Duration> {
        self.src.read_timeout.get()
    }

    /// Unwraps the std listener (left non-blocking if a call made it so).
    pub fn into_std(self) -> net::TcpListener {
        self.src.into_inner()
    }
}

impl From<net::TcpListener> for TcpListener {
    fn from(l: net::TcpListener) -> Self {
        TcpListener {
            src: Source::new(l),
            backoff: Backoff::default(),
        }
    }
}

impl From<OwnedFd> for TcpListener {
    fn from(fd: OwnedFd) -> Self {
        TcpListener::from(net::TcpListener::from(fd))
    }
}

impl From<TcpListener> for OwnedFd {
    fn from(l: TcpListener) -> OwnedFd {
        l.into_std().into()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.src.get_ref().as_fd()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.src.get_ref().as_raw_fd()
    }
}

/// A TCP connection whose reads, writes and connect park the calling proc.
///
/// Behaves like [`std::net::TcpStream`]: a read after the peer's
/// `shutdown(Write)` returns 0; a peer's reset is a
/// [`ConnectionReset`](io::ErrorKind::ConnectionReset) error on this
/// stream alone; timeouts fail with [`TimedOut`](io::ErrorKind::TimedOut).
#[derive(Debug)]
pub struct TcpStream {
    /// The std stream, non-blocking.
    src: Source<net::TcpStream>,
}

impl TcpStream {
    /// Connects to `addr`, trying each address it resolves to in turn
    /// (names use std's blocking resolver); parks until connected.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        each_addr(addr, |a| TcpStream::connect_deadline(a, None))
    }

    /// Connects to `addr`, failing with `TimedOut` after `timeout`.
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        check_timeout(Some(timeout))?;
        TcpStream::connect_deadline(addr, Instant::now().checked_add(timeout))
    }

    fn connect_deadline(addr: &SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
        let family = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        let fd = sys::stream_socket(family)?;
        let src = Source::new_nonblocking(net::TcpStream::from(fd));
        let (storage, len) = sys::inet_sockaddr(addr);
        let sa = (&storage as *const libc::sockaddr_storage).cast();
        sys::connect(&src, sa, len, deadline, |s| s.take_error())?;
        Ok(TcpStream { src })
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.src.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.src.get_ref().local_addr()
    }

    /// Shuts down the read half, the write half or both (as std).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.src.get_ref().shutdown(how)
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.src.get_ref().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.src.get_ref().nodelay()
    }

    /// Reads without consuming, parking until data (or EOF) is there.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.src.io(Dir::Read, |s| s.peek(buf))
    }

    /// Limit of each read; `None` (the default) waits forever.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        check_timeout(t)?;
        self.src.read_timeout.set(t);
        Ok(())
    }

    /// Limit of each write; `None` (the default) waits forever.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        check_timeout(t)?;
        self.src.write_timeout.set(t);
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.src.read_timeout.get()
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.src.write_timeout.get()
    }

    /// The pending `SO_ERROR`, cleared.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.src.get_ref().take_error()
    }

    /// Unwraps the std stream (left non-blocking if a call made it so).
    pub fn into_std(self) -> net::TcpStream {
        self.src.into_inner()
    }
}

/// Tries `f` on each address `addr` resolves to; the last error if none
/// works.
pub(super) fn each_addr<T>(
    addr: impl ToSocketAddrs,
    mut f: impl FnMut(&SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match f(&a) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.src.read_stream(buf.len(), |mut s| s.read(buf))
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.src.read_stream(len, |mut s| s.read_vectored(bufs))
    }
}

impl Write for &TcpStream {
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

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for TcpStream {
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

impl From<net::TcpStream> for TcpStream {
    fn from(s: net::TcpStream) -> Self {
        TcpStream {
            src: Source::new(s),
        }
    }
}

impl From<OwnedFd> for TcpStream {
    fn from(fd: OwnedFd) -> Self {
        TcpStream::from(net::TcpStream::from(fd))
    }
}

impl From<TcpStream> for OwnedFd {
    fn from(s: TcpStream) -> OwnedFd {
        s.into_std().into()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.src.get_ref().as_fd()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.src.get_ref().as_raw_fd()
    }
}
