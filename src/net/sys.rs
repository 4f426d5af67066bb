//! Socket system calls std does not offer without blocking: a
//! non-blocking `connect`.

use crate::io::source::Source;
use crate::io::{syscall, Dir};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Instant;

/// A new non-blocking, close-on-exec stream socket of `family`.
pub(super) fn stream_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd it returns is owned below.
    let fd = syscall!(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: just created, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Calls `listen` again on a listening socket with `SOMAXCONN`: Linux
/// then raises its backlog (capped by `net.core.somaxconn`).
pub(super) fn raise_backlog(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: plain syscall on an fd the caller owns.
    syscall!(unsafe { libc::listen(fd, libc::SOMAXCONN) }).map(drop)
}

/// `addr` as a `sockaddr_storage` and its length.
pub(super) fn inet_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for any
            // sockaddr_* (that is its purpose).
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// `path` as a `sockaddr_un` and its length.
pub(super) fn unix_sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero bytes are a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix socket path contains a NUL byte",
        ));
    }
    if bytes.len() >= sun.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "unix socket path is {} bytes; the limit is {}",
                bytes.len(),
                sun.sun_path.len() - 1
            ),
        ));
    }
    for (d, s) in sun.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let base = std::mem::size_of::<libc::sa_family_t>();
    Ok((sun, (base + bytes.len() + 1) as libc::socklen_t))
}

/// Connects the non-blocking socket `src` to the address at `addr`
/// (`len` bytes), parking until the connection is made or refused, or
/// until `deadline` (`TimedOut`). A unix socket whose listener's backlog is
/// full says `EAGAIN`: that is retried after short sleeps.
pub(super) fn connect<T: AsFd>(
    src: &Source<T>,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    deadline: Option<Instant>,
    take_error: impl Fn(&T) -> io::Result<Option<io::Error>>,
) -> io::Result<()> {
    let fd = src.get_ref().as_fd().as_raw_fd();
    let mut nap = std::time::Duration::from_micros(100);
    loop {
        // SAFETY: `addr` points to `len` valid bytes of a sockaddr (the
        // callers pass a live sockaddr_storage / sockaddr_un).
        match syscall!(unsafe { libc::connect(fd, addr, len) }) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(crate::io::source::timed_out());
                }
                if crate::try_current().is_some() {
                    crate::sleep(nap);
                } else {
                    std::thread::sleep(nap);
                }
                nap = (nap * 2).min(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
    src.wait(Dir::Write, deadline)?;
    match take_error(src.get_ref())? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
