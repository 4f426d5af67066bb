//! A hostile peer: packets that lie about their fds and lengths, carry too
//! many fds, are truncated or oversized, or hold malformed messages. Each
//! closes that link with a reason, leaks no fd (counted in /proc/self/fd),
//! and the node keeps serving a well-behaved peer. Also: a peer refused by
//! the credential check.
//!
//! One test function, so that nothing else in this binary opens or closes
//! fds while they are counted.

use procrt::chan::channel;
use procrt::node::frame::{fragment, Packet, HEADER};
use procrt::node::sys::{recv_packet, send_packet};
use procrt::node::{self, Encoder, LinkConfig, Trust, Wire};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count() - 1
}

/// A blocking SEQPACKET socket connected to `name` (abstract namespace).
fn raw_connect(name: &str) -> OwnedFd {
    // SAFETY: plain socket/connect calls with a valid sockaddr_un.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut a: libc::sockaddr_un = std::mem::zeroed();
        a.sun_family = libc::AF_UNIX as _;
        for (i, b) in name.bytes().enumerate() {
            a.sun_path[1 + i] = b as _;
        }
        let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
        assert_eq!(
            libc::connect(fd, (&a as *const libc::sockaddr_un).cast(), len as _),
            0
        );
        OwnedFd::from_raw_fd(fd)
    }
}

fn devnulls(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect()
}

fn message(kind: u8, e: Encoder) -> Vec<Packet> {
    let (b, f) = e.finish();
    fragment(kind, 0, &b, f, 60_000)
}

/// Reads the node's HELLO and answers with one.
fn handshake(s: &OwnedFd) {
    let mut buf = vec![0u8; 70_000];
    let r = recv_packet(s.as_fd(), &mut buf).unwrap();
    assert!(r.len >= HEADER && buf[3] == 1, "expected a HELLO");
    let mut e = Encoder::new();
    (1u32, 4_000_000u32).encode(&mut e);
    for p in message(1, e) {
        send_packet(s.as_fd(), &p.bytes, &p.fds).unwrap();
    }
}

/// Waits until the node shuts the socket (EOF).
fn wait_eof(s: &OwnedFd) {
    let mut buf = vec![0u8; 70_000];
    loop {
        match recv_packet(s.as_fd(), &mut buf) {
            Ok(r) if r.eof => return,
            Ok(_) => {}
            Err(e) => panic!("hostile peer: {e}"),
        }
    }
}

/// A raw packet: a header with the given fields, then `payload`.
fn raw(kind: u8, flags: u8, nfds: u16, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0x7270u16.to_le_bytes());
    p.push(1);
    p.push(kind);
    p.push(flags);
    p.push(0);
    p.extend_from_slice(&nfds.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&len.to_le_bytes());
    p.extend_from_slice(payload);
    p
}

#[test]
fn hostile_peers_lose_their_link_and_leak_nothing() {
    let name = format!("procrt-hostile-{}", std::process::id());
    procrt::run(move || {
        let (tx, rx) = channel::<u64>();
        node::export_channel("ok", tx);
        let listener = node::listen(format!("@{name}"))
            .unwrap()
            .link_config(LinkConfig {
                max_message: 1 << 20,
                fd_budget: 300,
            });

        // A good peer, linked first and served throughout.
        let n = name.clone();
        let good = std::thread::spawn(move || {
            let s = raw_connect(&n);
            handshake(&s);
            s
        });
        let good_link = listener.accept().unwrap();
        let good = good.join().unwrap();
        let baseline = open_fds();

        type Attack = fn(&OwnedFd);
        let attacks: Vec<(&str, Attack, &str)> = vec![
            (
                "more fds announced than sent",
                |s| {
                    let fds = devnulls(1);
                    send_packet(s.as_fd(), &raw(2, 3, 3, 0, b""), &fds).unwrap();
                },
                "header says 3 fds, 1 arrived",
            ),
            (
                "254 fds, as 253 + 1 over the budget of 300 in one message",
                |s| {
                    // One packet cannot carry 254: the kernel refuses (SCM_MAX_FD).
                    let fds = devnulls(254);
                    let e = send_packet_unchecked(s, &fds);
                    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
                    let a = devnulls(253);
                    send_packet(s.as_fd(), &raw(2, 1, 253, 0, b""), &a).unwrap();
                    let b = devnulls(253);
                    send_packet(s.as_fd(), &raw(2, 2, 253, 0, b""), &b).unwrap();
                },
                "fd budget",
            ),
            (
                "a packet shorter than a header",
                |s| {
                    send_packet(s.as_fd(), &[0x70, 0x72, 1], &devnulls(2)).unwrap();
                },
                "shorter than a header",
            ),
            (
                "an oversized packet",
                |s| {
                    send_packet(s.as_fd(), &raw(2, 3, 0, 100_000, &vec![0; 100_000]), &[]).unwrap();
                },
                "MSG_TRUNC",
            ),
            (
                "a length that lies",
                |s| {
                    send_packet(s.as_fd(), &raw(2, 3, 0, 1000, &[0; 10]), &[]).unwrap();
                },
                "header says 1000 payload bytes",
            ),
            (
                "a message that lies about a string length, with fds",
                |s| {
                    let mut body = Vec::new();
                    body.extend_from_slice(&u32::MAX.to_le_bytes());
                    body.extend_from_slice(b"ok");
                    send_packet(
                        s.as_fd(),
                        &raw(2, 3, 2, body.len() as u32, &body),
                        &devnulls(2),
                    )
                    .unwrap();
                },
                "malformed SEND message",
            ),
            (
                "a message too large",
                |s| {
                    // A FIRST fragment, then continuations past the 1 MiB limit
                    // (the node closes the link after the 18th: later sends may
                    // fail, which is fine).
                    send_packet(s.as_fd(), &raw(2, 1, 0, 60_000, &vec![0; 60_000]), &[]).unwrap();
                    for _ in 0..20 {
                        let _ =
                            send_packet(s.as_fd(), &raw(2, 0, 0, 60_000, &vec![0; 60_000]), &[]);
                    }
                },
                "exceeds the size limit",
            ),
            (
                "an unknown message kind",
                |s| {
                    send_packet(s.as_fd(), &raw(99, 3, 1, 0, b""), &devnulls(1)).unwrap();
                },
                "unknown message kind 99",
            ),
        ];
        for (what, attack, expect) in attacks {
            let n = name.clone();
            let t = std::thread::spawn(move || {
                let s = raw_connect(&n);
                handshake(&s);
                attack(&s);
                wait_eof(&s);
            });
            let link = listener.accept().unwrap();
            let why = link.wait_closed();
            t.join().unwrap();
            assert!(
                why.contains(expect),
                "{what}: closed with '{why}', expected '{expect}'"
            );
            drop(link);
            // The link's reader and writer procs end; their fds close.
            for _ in 0..10 {
                procrt::yield_now();
            }
            assert_eq!(open_fds(), baseline, "{what}: fds leaked");
        }

        // The good peer is still served.
        assert!(!good_link.is_closed());
        let mut e = Encoder::new();
        ("ok".to_string(), node::fingerprint::<u64>(), 42u64).encode(&mut e);
        for p in message(2, e) {
            send_packet(good.as_fd(), &p.bytes, &p.fds).unwrap();
        }
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(42));

        // The credential check: a listener that trusts another uid only.
        // SAFETY: getuid has no preconditions.
        let other = unsafe { libc::getuid() } + 1;
        let name2 = format!("{name}-cred");
        let strict = node::listen(format!("@{name2}"))
            .unwrap()
            .trust(Trust::Uid(other));
        let t = std::thread::spawn(move || {
            let s = raw_connect(&name2);
            wait_eof(&s);
        });
        let err = strict.accept().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        t.join().unwrap();
        drop(good);
        good_link.wait_closed();
    });
}

/// `sendmsg` with any number of fds (`send_packet` refuses more than 253
/// itself).
fn send_packet_unchecked(s: &OwnedFd, fds: &[OwnedFd]) -> std::io::Error {
    let bytes = raw(2, 3, fds.len() as u16, 0, b"");
    let raw_fds: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: a msghdr over live buffers: one iovec, and a control buffer
    // sized by CMSG_SPACE for the fds.
    unsafe {
        let space = libc::CMSG_SPACE((raw_fds.len() * 4) as u32) as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut _,
            iov_len: bytes.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN((raw_fds.len() * 4) as u32) as _;
        std::ptr::copy_nonoverlapping(
            raw_fds.as_ptr(),
            libc::CMSG_DATA(c) as *mut i32,
            raw_fds.len(),
        );
        assert!(
            libc::sendmsg(s.as_raw_fd(), &msg, 0) < 0,
            "the kernel took more than 253 fds"
        );
    }
    std::io::Error::last_os_error()
}
