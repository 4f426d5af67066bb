//! `frame_decode`: the receive path of a node link, fed bytes and fake fds.
//!
//! The input is a list of packets, each as a little record:
//! `[kernel flags: u8][fds: u8][len: u16 LE][len bytes]`. For each packet
//! the harness makes that many real fds (`dup`s of one `/dev/null` fd, so
//! that a leak shows), tells the [`Reassembler`] what the kernel would have
//! said (bit 0: `MSG_TRUNC`, bit 1: `MSG_CTRUNC`), and pushes it. A
//! completed message is decoded as several `Wire` types, one of them
//! holding fds. A refused packet ends the "link": the harness starts a new
//! reassembler, as a node starts a new link.
//!
//! # Invariants checked
//!
//! - Nothing panics and nothing allocates without bound (libFuzzer's
//!   `-rss_limit_mb` and `-malloc_limit_mb` catch the latter): lengths are
//!   never trusted.
//! - No fd leaks: after every input, the process has exactly the fds it had
//!   before (counted in `/proc/self/fd`; libFuzzer runs inputs on one
//!   thread). Every fd of a refused packet, of a partial message dropped
//!   with its link, and of a message that fails to decode is closed.
//! - A message that decodes re-encodes to the same bytes (the encoding is
//!   canonical).

#![no_main]

use libfuzzer_sys::fuzz_target;
use procrt::node::{decode_message, encode_message, Reassembler, RecvFlags, Wire};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// The fd every fake fd is a `dup` of.
fn devnull() -> &'static std::fs::File {
    static F: OnceLock<std::fs::File> = OnceLock::new();
    F.get_or_init(|| std::fs::File::open("/dev/null").expect("open /dev/null"))
}

fn fake_fd() -> OwnedFd {
    // SAFETY: dup of a live fd; a non-negative result is ours.
    let fd = unsafe { libc::fcntl(devnull().as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    assert!(fd >= 0, "dup failed");
    // SAFETY: as above.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Decodes as `T`; if that works, checks that re-encoding gives the same
/// bytes and as many fds.
fn try_as<T: Wire>(bytes: &[u8], fds: Vec<OwnedFd>) {
    let n = fds.len();
    if let Ok(v) = decode_message::<T>(bytes, fds) {
        let (b, f) = encode_message(v);
        if b != bytes || f.len() != n {
            eprintln!("frame_decode: invariant violated: re-encoding differs");
            std::process::abort();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = devnull();
    let before = open_fds();
    {
        let mut r = Reassembler::new(4096, 300);
        let mut rest = data;
        while rest.len() >= 4 {
            let kflags = rest[0];
            let nfds = rest[1] as usize;
            let len = u16::from_le_bytes([rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            let len = len.min(rest.len());
            let (packet, tail) = rest.split_at(len);
            rest = tail;
            let fds: Vec<OwnedFd> = (0..nfds).map(|_| fake_fd()).collect();
            let flags = RecvFlags {
                truncated: kflags & 1 != 0,
                fds_truncated: kflags & 2 != 0,
            };
            match r.push(packet, fds, flags) {
                Ok(Some(frame)) => {
                    // Each decode attempt owns its fds; give each its own
                    // copies so all of them run.
                    let copies = |n: usize| (0..n).map(|_| fake_fd()).collect::<Vec<_>>();
                    let n = frame.fds.len();
                    try_as::<(u8, String, Option<u64>)>(&frame.bytes, copies(n));
                    try_as::<Vec<(u32, bool)>>(&frame.bytes, copies(n));
                    try_as::<(String, Vec<OwnedFd>)>(&frame.bytes, copies(n));
                    try_as::<Vec<Option<Vec<u8>>>>(&frame.bytes, frame.fds);
                }
                Ok(None) => {}
                // The link is closed; a new one starts.
                Err(_) => r = Reassembler::new(4096, 300),
            }
        }
    }
    let after = open_fds();
    if after != before {
        eprintln!("frame_decode: invariant violated: {before} fds before, {after} after");
        std::process::abort();
    }
});
