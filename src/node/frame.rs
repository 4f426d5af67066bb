//! Framing: messages as `SOCK_SEQPACKET` packets, and their reassembly.
//!
//! # Design
//!
//! A unix `SOCK_SEQPACKET` socket keeps packet boundaries and order, and
//! carries fds beside a packet's bytes (`SCM_RIGHTS`). A message larger
//! than one packet (or with more fds than one packet may carry) is split
//! into *fragments*, each one packet, each starting with a 16-byte header:
//!
//! ```text
//!  0      2   3    4     5     6      8        12       16
//!  +------+---+----+-----+-----+------+--------+--------+----------
//!  | magic|ver|kind|flags| rsvd| nfds | chan   | len    | payload
//!  +------+---+----+-----+-----+------+--------+--------+----------
//!  u16 LE  u8  u8   u8    u8=0  u16 LE u32 LE   u32 LE   len bytes
//! ```
//!
//! `flags` marks the FIRST and LAST fragment of a message (a one-packet
//! message has both); `nfds` is the number of fds the packet carries,
//! `len` the payload bytes in it; `kind` and `chan` are the node layer's
//! (what the message is, and where it goes). The sender writes all
//! fragments of one message before any packet of the next (the node's
//! writer is one proc per link), so a link has at most one message in
//! reassembly, and a message's fragments share `kind` and `chan`.
//!
//! # Checks on receive
//!
//! [`Reassembler::push`] is the whole receive-side check, pure and fuzzed
//! (`fuzz/fuzz_targets/frame_decode.rs`). A packet is refused when:
//! the kernel truncated it (`MSG_TRUNC`) or its fds (`MSG_CTRUNC`); it is
//! shorter than a header; magic, version or reserved byte are wrong; `len`
//! differs from the payload's real length; `nfds` differs from the fds that
//! really arrived; the FIRST/LAST sequence is broken, or a continuation
//! changes `kind` or `chan`; the message grows past the size limit or its
//! fds past the link's fd budget. A refusal is fatal to the link (the peer
//! is broken or hostile), and every fd of the packet and of the partial
//! message is closed when the error is returned: they are owned values,
//! dropped with it.

use std::fmt;
use std::os::fd::OwnedFd;

/// `"pr"`: the first two bytes of every packet.
pub const MAGIC: u16 = 0x7270;
/// Version of this framing.
pub const VERSION: u8 = 1;
/// Bytes of the header before each packet's payload.
pub const HEADER: usize = 16;
/// Most fds one packet may carry: Linux's `SCM_MAX_FD`.
pub const MAX_FDS_PER_PACKET: usize = 253;
/// Payload bytes per fragment. Packets of 64 KiB fit the default socket
/// buffers (`net.core.wmem_default` is about 208 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024 - HEADER;

/// This fragment starts a message.
pub const FIRST: u8 = 1;
/// This fragment ends a message.
pub const LAST: u8 = 2;

/// A whole message, as the node layer sees it.
#[derive(Debug)]
pub struct Frame {
    /// What the message is (the node layer's codes).
    pub kind: u8,
    /// Where it goes (the node layer's codes).
    pub chan: u32,
    /// The payload, all fragments joined.
    pub bytes: Vec<u8>,
    /// Every fd the fragments carried, in order.
    pub fds: Vec<OwnedFd>,
}

/// One packet to send: header and payload in `bytes`, and its fds.
#[derive(Debug)]
pub struct Packet {
    /// Header, then payload.
    pub bytes: Vec<u8>,
    /// At most [`MAX_FDS_PER_PACKET`].
    pub fds: Vec<OwnedFd>,
}

/// Why a packet was refused (the link is then closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The packet was longer than the receive buffer (`MSG_TRUNC`).
    PacketTruncated,
    /// The packet carried more fds than the control buffer holds
    /// (`MSG_CTRUNC`): more than [`MAX_FDS_PER_PACKET`].
    FdsTruncated,
    /// Fewer bytes than a header.
    Short(usize),
    /// Wrong magic number.
    BadMagic(u16),
    /// A framing version this node does not speak.
    BadVersion(u8),
    /// The reserved byte is not zero, or `flags` has unknown bits.
    BadFlags(u8),
    /// `len` says one payload length, the packet has another.
    LengthMismatch {
        /// What the header said.
        said: u32,
        /// What arrived.
        got: usize,
    },
    /// `nfds` says one fd count, another arrived.
    FdCountMismatch {
        /// What the header said.
        said: u16,
        /// What arrived.
        got: usize,
    },
    /// A continuation without a FIRST, a FIRST inside a message, or a
    /// continuation with another kind or channel.
    BadSequence,
    /// The message grew past the size limit.
    TooLarge(usize),
    /// The message's fds went past the link's fd budget.
    FdBudget(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::PacketTruncated => write!(f, "packet truncated (MSG_TRUNC)"),
            FrameError::FdsTruncated => write!(f, "fds truncated (MSG_CTRUNC)"),
            FrameError::Short(n) => write!(f, "packet of {n} bytes is shorter than a header"),
            FrameError::BadMagic(m) => write!(f, "bad magic {m:#06x}"),
            FrameError::BadVersion(v) => write!(f, "unsupported framing version {v}"),
            FrameError::BadFlags(b) => write!(f, "bad flags or reserved byte {b:#04x}"),
            FrameError::LengthMismatch { said, got } => {
                write!(f, "header says {said} payload bytes, packet has {got}")
            }
            FrameError::FdCountMismatch { said, got } => {
                write!(f, "header says {said} fds, {got} arrived")
            }
            FrameError::BadSequence => write!(f, "fragments out of sequence"),
            FrameError::TooLarge(n) => write!(f, "message of {n} bytes exceeds the size limit"),
            FrameError::FdBudget(n) => {
                write!(f, "message with {n} fds exceeds the link's fd budget")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Writes a packet header.
fn header(kind: u8, flags: u8, nfds: usize, chan: u32, len: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    h[2] = VERSION;
    h[3] = kind;
    h[4] = flags;
    h[5] = 0;
    h[6..8].copy_from_slice(&(nfds as u16).to_le_bytes());
    h[8..12].copy_from_slice(&chan.to_le_bytes());
    h[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    h
}

/// Splits a message into packets of at most `max_payload` payload bytes
/// and [`MAX_FDS_PER_PACKET`] fds. Fds ride on the first packets; a
/// message with more fds than its byte fragments can carry gets extra
/// fragments with no payload.
pub fn fragment(
    kind: u8,
    chan: u32,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    max_payload: usize,
) -> Vec<Packet> {
    assert!(max_payload > 0, "procrt: fragments need room for payload");
    let byte_packets = bytes.len().div_ceil(max_payload).max(1);
    let fd_packets = fds.len().div_ceil(MAX_FDS_PER_PACKET);
    let n = byte_packets.max(fd_packets);
    let mut fds = fds.into_iter();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = (i * max_payload).min(bytes.len());
        let end = ((i + 1) * max_payload).min(bytes.len());
        let chunk = &bytes[start..end];
        let pfds: Vec<OwnedFd> = fds.by_ref().take(MAX_FDS_PER_PACKET).collect();
        let mut flags = 0;
        if i == 0 {
            flags |= FIRST;
        }
        if i == n - 1 {
            flags |= LAST;
        }
        let mut b = Vec::with_capacity(HEADER + chunk.len());
        b.extend_from_slice(&header(kind, flags, pfds.len(), chan, chunk.len()));
        b.extend_from_slice(chunk);
        out.push(Packet {
            bytes: b,
            fds: pfds,
        });
    }
    out
}

/// What the kernel said about a received packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvFlags {
    /// `MSG_TRUNC`: the packet did not fit the buffer.
    pub truncated: bool,
    /// `MSG_CTRUNC`: its fds did not fit the control buffer.
    pub fds_truncated: bool,
}

/// A message being put back together from fragments.
#[derive(Debug)]
struct Partial {
    kind: u8,
    chan: u32,
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// The receive side of one link: checks each packet and joins fragments.
#[derive(Debug)]
pub struct Reassembler {
    partial: Option<Partial>,
    max_message: usize,
    fd_budget: usize,
}

impl Reassembler {
    /// A reassembler that refuses messages above `max_message` bytes or
    /// `fd_budget` fds.
    pub fn new(max_message: usize, fd_budget: usize) -> Self {
        Reassembler {
            partial: None,
            max_message,
            fd_budget,
        }
    }

    /// Fds held by a message in reassembly.
    pub fn pending_fds(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.fds.len())
    }

    /// Takes one received packet: `Ok(Some(frame))` when it completes a
    /// message, `Ok(None)` when more fragments are due. On error the
    /// packet's fds and the partial message's are closed, and the
    /// reassembler is empty (the caller closes the link anyway).
    pub fn push(
        &mut self,
        packet: &[u8],
        fds: Vec<OwnedFd>,
        flags: RecvFlags,
    ) -> Result<Option<Frame>, FrameError> {
        let r = self.check_and_add(packet, fds, flags);
        if r.is_err() {
            self.partial = None;
        }
        r
    }

    fn check_and_add(
        &mut self,
        packet: &[u8],
        fds: Vec<OwnedFd>,
        flags: RecvFlags,
    ) -> Result<Option<Frame>, FrameError> {
        if flags.truncated {
            return Err(FrameError::PacketTruncated);
        }
        if flags.fds_truncated {
            return Err(FrameError::FdsTruncated);
        }
        if packet.len() < HEADER {
            return Err(FrameError::Short(packet.len()));
        }
        let magic = u16::from_le_bytes([packet[0], packet[1]]);
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        if packet[2] != VERSION {
            return Err(FrameError::BadVersion(packet[2]));
        }
        let kind = packet[3];
        let pflags = packet[4];
        if packet[5] != 0 {
            return Err(FrameError::BadFlags(packet[5]));
        }
        if pflags & !(FIRST | LAST) != 0 {
            return Err(FrameError::BadFlags(pflags));
        }
        let nfds = u16::from_le_bytes([packet[6], packet[7]]);
        let chan = u32::from_le_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let len = u32::from_le_bytes([packet[12], packet[13], packet[14], packet[15]]);
        let payload = &packet[HEADER..];
        if len as usize != payload.len() {
            return Err(FrameError::LengthMismatch {
                said: len,
                got: payload.len(),
            });
        }
        if nfds as usize != fds.len() {
            return Err(FrameError::FdCountMismatch {
                said: nfds,
                got: fds.len(),
            });
        }
        let mut p = match (self.partial.take(), pflags & FIRST != 0) {
            (None, true) => Partial {
                kind,
                chan,
                bytes: Vec::new(),
                fds: Vec::new(),
            },
            (Some(p), false) if p.kind == kind && p.chan == chan => p,
            _ => return Err(FrameError::BadSequence),
        };
        let size = p.bytes.len() + payload.len();
        if size > self.max_message {
            return Err(FrameError::TooLarge(size));
        }
        let nfds = p.fds.len() + fds.len();
        if nfds > self.fd_budget {
            return Err(FrameError::FdBudget(nfds));
        }
        p.bytes.extend_from_slice(payload);
        p.fds.extend(fds);
        if pflags & LAST != 0 {
            return Ok(Some(Frame {
                kind: p.kind,
                chan: p.chan,
                bytes: p.bytes,
                fds: p.fds,
            }));
        }
        self.partial = Some(p);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devnull() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn reassemble(packets: Vec<Packet>) -> Result<Vec<Frame>, FrameError> {
        let mut r = Reassembler::new(1 << 30, 10_000);
        let mut out = vec![];
        for p in packets {
            if let Some(f) = r.push(&p.bytes, p.fds, RecvFlags::default())? {
                out.push(f);
            }
        }
        Ok(out)
    }

    #[test]
    fn fragments_join_back_with_their_fds() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let fds: Vec<OwnedFd> = (0..600).map(|_| devnull()).collect();
        let packets = fragment(7, 42, &bytes, fds, 1000);
        // 10 byte fragments; 600 fds need 3 packets of at most 253.
        assert_eq!(packets.len(), 10);
        assert!(packets.iter().all(|p| p.fds.len() <= MAX_FDS_PER_PACKET));
        let frames = reassemble(packets).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].kind, frames[0].chan), (7, 42));
        assert_eq!(frames[0].bytes, bytes);
        assert_eq!(frames[0].fds.len(), 600);

        // Few bytes, many fds: empty continuation fragments carry them.
        let packets = fragment(1, 1, b"x", (0..300).map(|_| devnull()).collect(), 1000);
        assert_eq!(packets.len(), 2);
        let frames = reassemble(packets).unwrap();
        assert_eq!(frames[0].fds.len(), 300);
        // An empty message is one packet.
        assert_eq!(fragment(1, 1, b"", vec![], 1000).len(), 1);
    }

    #[test]
    fn hostile_packets_are_refused() {
        let mut r = Reassembler::new(100, 2);
        let ok = fragment(1, 1, b"abc", vec![], 1000).remove(0);
        let f = RecvFlags::default();
        assert_eq!(
            r.push(&ok.bytes[..5], vec![], f).unwrap_err(),
            FrameError::Short(5)
        );
        // Announces one fd, sends none; and the reverse.
        let mut b = ok.bytes.clone();
        b[6] = 1;
        assert_eq!(
            r.push(&b, vec![], f).unwrap_err(),
            FrameError::FdCountMismatch { said: 1, got: 0 }
        );
        assert_eq!(
            r.push(&ok.bytes, vec![devnull()], f).unwrap_err(),
            FrameError::FdCountMismatch { said: 0, got: 1 }
        );
        // Lies about the length.
        let mut b = ok.bytes.clone();
        b[12] = 200;
        assert!(matches!(
            r.push(&b, vec![], f),
            Err(FrameError::LengthMismatch { .. })
        ));
        // Truncated by the kernel.
        let t = RecvFlags {
            truncated: true,
            ..f
        };
        assert_eq!(
            r.push(&ok.bytes, vec![], t).unwrap_err(),
            FrameError::PacketTruncated
        );
        let t = RecvFlags {
            fds_truncated: true,
            ..f
        };
        assert_eq!(
            r.push(&ok.bytes, vec![], t).unwrap_err(),
            FrameError::FdsTruncated
        );
        // Oversized message, fd budget.
        let big = fragment(1, 1, &[0; 101], vec![], 1000).remove(0);
        assert_eq!(
            r.push(&big.bytes, vec![], f).unwrap_err(),
            FrameError::TooLarge(101)
        );
        let many = fragment(1, 1, b"", (0..3).map(|_| devnull()).collect(), 1000).remove(0);
        assert_eq!(
            r.push(&many.bytes, many.fds, f).unwrap_err(),
            FrameError::FdBudget(3)
        );
        // Broken sequence: a continuation first; two FIRSTs.
        let two = fragment(1, 1, &[0; 20], vec![], 10);
        assert_eq!(
            r.push(&two[1].bytes, vec![], f).unwrap_err(),
            FrameError::BadSequence
        );
        assert!(r.push(&two[0].bytes, vec![], f).unwrap().is_none());
        assert_eq!(
            r.push(&two[0].bytes, vec![], f).unwrap_err(),
            FrameError::BadSequence
        );
        // And a good message still goes through afterwards.
        assert_eq!(r.push(&ok.bytes, vec![], f).unwrap().unwrap().bytes, b"abc");
    }
}
