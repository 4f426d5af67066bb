//! `UnixListener`, `UnixStream` and `UnixDatagram`.

use super::{sys, Backoff};
use crate::io::source::{io_timeouts, Source};
use crate::io::Dir;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{self, SocketAddr};
use std::path::Path;

/// A unix-domain stream server whose `accept` parks the calling proc.
/// Out of fds, it backs off as [`TcpListener`](crate::net::TcpListener)
/// does.
#[derive(Debug)]
pub struct UnixListener {
    /// The std listener, non-blocking.
    src: Source<net::UnixListener>,
    /// Slows accepts down while out of fds.
    backoff: Backoff,
}

impl UnixListener {
    /// Binds to the filesystem path `path` (which must not exist).
    /// The backlog is the system's maximum, as for
    /// [`TcpListener::bind`](crate::net::TcpListener::bind).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let l = net::UnixListener::bind(path)?;
        sys::raise_backlog(l.as_raw_fd())?;
        Ok(UnixListener::from(l))
    }

    listener!(UnixStream);
}

impl From<net::UnixListener> for UnixListener {
    fn from(l: net::UnixListener) -> Self {
        UnixListener {
            src: Source::new(l),
            backoff: Backoff::default(),
        }
    }
}

fd_conversions!(UnixListener, net::UnixListener);

/// A unix-domain stream whose reads, writes and connect park the calling
/// proc; otherwise like [`std::os::unix::net::UnixStream`].
#[derive(Debug)]
pub struct UnixStream {
    /// The std stream, non-blocking.
    src: Source<net::UnixStream>,
}

impl UnixStream {
    /// Connects to the socket at `path`, parking until connected. A full
    /// backlog (`EAGAIN`) is retried after short sleeps.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let (sun, len) = sys::unix_sockaddr(path.as_ref())?;
        let fd = sys::stream_socket(libc::AF_UNIX)?;
        let src = Source::new_nonblocking(net::UnixStream::from(fd));
        let sa = (&sun as *const libc::sockaddr_un).cast();
        let deadline = src.deadline(Dir::Write);
        sys::connect(&src, sa, len, deadline, |s| s.take_error())?;
        Ok(UnixStream { src })
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = net::UnixStream::pair()?;
        Ok((UnixStream::from(a), UnixStream::from(b)))
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

    /// The pending `SO_ERROR`, cleared.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.src.get_ref().take_error()
    }

    io_timeouts!();
}

stream_io!(UnixStream);

impl From<net::UnixStream> for UnixStream {
    fn from(s: net::UnixStream) -> Self {
        UnixStream {
            src: Source::new(s),
        }
    }
}

fd_conversions!(UnixStream, net::UnixStream);

/// A unix-domain datagram socket whose sends and receives park the calling
/// proc; otherwise like [`std::os::unix::net::UnixDatagram`].
#[derive(Debug)]
pub struct UnixDatagram {
    /// The std socket, non-blocking.
    src: Source<net::UnixDatagram>,
}

impl UnixDatagram {
    /// A socket bound to `path`.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        net::UnixDatagram::bind(path).map(UnixDatagram::from)
    }

    /// An unbound socket.
    pub fn unbound() -> io::Result<UnixDatagram> {
        net::UnixDatagram::unbound().map(UnixDatagram::from)
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = net::UnixDatagram::pair()?;
        Ok((UnixDatagram::from(a), UnixDatagram::from(b)))
    }

    /// Sets the default peer (does not block for datagram sockets).
    pub fn connect(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.src.get_ref().connect(path)
    }

    /// Receives one datagram, parking until one comes.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.src.io(Dir::Read, |s| s.recv(buf))
    }

    /// Receives one datagram and its sender's address.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.src.io(Dir::Read, |s| s.recv_from(buf))
    }

    /// Sends one datagram to the connected peer, parking while the
    /// peer's queue is full.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.src.io(Dir::Write, |s| s.send(buf))
    }

    /// Sends one datagram to `path`.
    pub fn send_to(&self, buf: &[u8], path: impl AsRef<Path>) -> io::Result<usize> {
        let path = path.as_ref();
        self.src.io(Dir::Write, |s| s.send_to(buf, path))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.src.get_ref().local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.src.get_ref().peer_addr()
    }

    /// Shuts down the read half, the write half or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.src.get_ref().shutdown(how)
    }

    io_timeouts!();
}

impl From<net::UnixDatagram> for UnixDatagram {
    fn from(s: net::UnixDatagram) -> Self {
        UnixDatagram {
            src: Source::new(s),
        }
    }
}

fd_conversions!(UnixDatagram, net::UnixDatagram);
