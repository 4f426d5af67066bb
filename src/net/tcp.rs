//! `TcpListener` and `TcpStream`.

use super::{sys, Backoff};
use crate::io::source::{check_timeout, io_timeouts, Source};
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

    listener!(TcpStream);

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

fd_conversions!(TcpListener, net::TcpListener);

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

    io_timeouts!();

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

stream_io!(TcpStream);

impl From<net::TcpStream> for TcpStream {
    fn from(s: net::TcpStream) -> Self {
        TcpStream {
            src: Source::new(s),
        }
    }
}

fd_conversions!(TcpStream, net::TcpStream);
