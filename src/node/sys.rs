//! The system calls under a link: `SOCK_SEQPACKET` sockets, `sendmsg` and
//! `recvmsg` with `SCM_RIGHTS`, and the peer's credentials.
//!
//! # Design
//!
//! Every received fd becomes an `OwnedFd` the moment `recvmsg` returns,
//! before any check, so that every way out of the receive path, an error
//! included, closes it. Fds are received with `MSG_CMSG_CLOEXEC`, so a
//! child started by another thread between the receive and the check never
//! inherits one. The control buffer holds exactly [`MAX_FDS_PER_PACKET`]
//! fds (Linux's `SCM_MAX_FD`, the most a sender can attach to one packet);
//! a packet whose fds do not fit comes back with `MSG_CTRUNC`, which the
//! frame layer refuses. The kernel closes the fds it could not deliver.
//!
//! Sockets are non-blocking; `WouldBlock` goes back to the caller, which
//! parks until the fd is ready.

use super::frame::{RecvFlags, MAX_FDS_PER_PACKET};
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A connected pair of non-blocking, close-on-exec `SOCK_SEQPACKET`
/// sockets.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both are fresh fds that we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Bytes of control buffer for `n` fds.
fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    unsafe { libc::CMSG_SPACE((n * size_of::<RawFd>()) as u32) as usize }
}

/// A control buffer aligned for `cmsghdr`.
fn cmsg_buf(n: usize) -> Vec<u64> {
    vec![0u64; cmsg_space(n).div_ceil(8)]
}

/// Sends one packet with its fds. The fds are only borrowed: the kernel
/// duplicates them into the message, and the caller closes its copies
/// after a successful send.
pub fn send_packet(fd: BorrowedFd<'_>, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    assert!(
        fds.len() <= MAX_FDS_PER_PACKET,
        "procrt: too many fds for one packet"
    );
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = cmsg_buf(fds.len());
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space(fds.len()) as _;
        // SAFETY: msg_control points at a zeroed buffer of msg_controllen
        // bytes, aligned for cmsghdr, with room for one header and
        // fds.len() descriptors (CMSG_SPACE); CMSG_FIRSTHDR is non-null
        // because msg_controllen >= size_of::<cmsghdr>().
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * size_of::<RawFd>()) as u32) as _;
            let data = libc::CMSG_DATA(c) as *mut RawFd;
            for (i, f) in fds.iter().enumerate() {
                data.add(i).write_unaligned(f.as_raw_fd());
            }
        }
    }
    // SAFETY: msg describes live buffers (iov over `bytes`, control over
    // `control`), valid for the call.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != bytes.len() {
        // SEQPACKET sends whole packets or fails; a short count would be a
        // kernel contract break, and the peer would see a torn packet.
        return Err(io::Error::other(format!(
            "sendmsg sent {n} of {} bytes",
            bytes.len()
        )));
    }
    Ok(())
}

/// A received packet: its length in the buffer, its fds, and what the
/// kernel said about it.
#[derive(Debug)]
pub struct Received {
    /// Bytes of the packet in the buffer (`0` with `eof`).
    pub len: usize,
    /// The fds it carried, owned (close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// `MSG_TRUNC` / `MSG_CTRUNC`.
    pub flags: RecvFlags,
    /// The peer closed the connection (a zero-length read with no
    /// packet).
    pub eof: bool,
}

/// Receives one packet into `buf`. `buf` should be one byte longer than
/// the largest legal packet, so that an oversized one shows as `MSG_TRUNC`.
pub fn recv_packet(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = cmsg_buf(MAX_FDS_PER_PACKET);
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_space(MAX_FDS_PER_PACKET) as _;
    // SAFETY: msg describes live, writable buffers valid for the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed cmsghdrs; CMSG_FIRSTHDR/NXTHDR walk them and return null
    // at the end. Each SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4
    // descriptors newly installed in our table, which we take ownership of
    // at once.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let flags = RecvFlags {
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    };
    Ok(Received {
        len: n as usize,
        eof: n == 0 && fds.is_empty() && !flags.truncated,
        fds,
        flags,
    })
}

/// The credentials (pid, uid, gid) of the process at the other end of a
/// connected unix socket, as the kernel recorded them at connect time.
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<libc::ucred> {
    // SAFETY: an all-zero ucred is valid; getsockopt writes at most `len`
    // bytes into it.
    let mut cred: libc::ucred = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn packets_carry_fds_and_keep_boundaries() {
        let (a, b) = seqpacket_pair().unwrap();
        let (pr, pw) = {
            let mut p = [0; 2];
            // SAFETY: `p` has room for two fds.
            assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: pipe2 succeeded; both are ours.
            unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
        };
        send_packet(a.as_fd(), b"one", &[pw]).unwrap();
        send_packet(a.as_fd(), b"two!", &[]).unwrap();
        let mut buf = [0u8; 64];
        let r = recv_packet(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..r.len], b"one");
        assert_eq!(r.fds.len(), 1);
        assert_eq!(r.flags, RecvFlags::default());
        // The received fd is the pipe's write end: what we write arrives.
        let w = std::fs::File::from(r.fds.into_iter().next().unwrap());
        std::io::Write::write_all(&mut &w, b"hi").unwrap();
        let mut got = [0u8; 2];
        std::io::Read::read_exact(&mut std::fs::File::from(pr), &mut got).unwrap();
        assert_eq!(&got, b"hi");
        let r = recv_packet(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..r.len], b"two!");
        // Empty socket: WouldBlock (non-blocking).
        assert_eq!(
            recv_packet(b.as_fd(), &mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(peer_cred(b.as_fd()).unwrap().uid, uid);
        drop(a);
        assert!(recv_packet(b.as_fd(), &mut buf).unwrap().eof);
    }

    #[test]
    fn oversized_packets_are_flagged_and_a_full_fd_load_arrives() {
        let (a, b) = seqpacket_pair().unwrap();
        send_packet(a.as_fd(), &[0u8; 100], &[]).unwrap();
        let mut small = [0u8; 10];
        let r = recv_packet(b.as_fd(), &mut small).unwrap();
        assert!(r.flags.truncated);
        // The most one packet may carry, SCM_MAX_FD, arrive whole.
        let max: Vec<OwnedFd> = (0..MAX_FDS_PER_PACKET)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        send_packet(a.as_fd(), b"x", &max).unwrap();
        drop(max);
        let r = recv_packet(b.as_fd(), &mut [0u8; 16]).unwrap();
        assert_eq!(r.fds.len(), MAX_FDS_PER_PACKET);
        assert_eq!(r.flags, RecvFlags::default());
    }
}
