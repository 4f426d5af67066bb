//! Nodes: single-threaded OS processes full of procs, connected by unix
//! sockets that carry capabilities.
//!
//! # Design
//!
//! A node is one OS process running one procrt runtime; several nodes use
//! several cores and fail apart. Nodes talk over `SOCK_SEQPACKET` unix
//! sockets, which keep message boundaries and carry file descriptors
//! (`SCM_RIGHTS`), so a capability (an open file, a socket, a pipe, a
//! memfd) is a field of a message like any other.
//!
//! The layers, bottom up:
//! - [`sys`]: `socketpair`, `sendmsg`/`recvmsg` with `SCM_RIGHTS` and
//!   `MSG_CMSG_CLOEXEC`, `SO_PEERCRED`. Every received fd is owned at once,
//!   so every error path closes it.
//! - [`frame`]: messages as packets with a 16-byte header, split into
//!   fragments when they exceed a packet or carry more than 253 fds, and
//!   put back together by a [`Reassembler`] that checks every packet
//!   (truncation, lengths, fd counts, sequence, size and fd budget). Any
//!   refusal closes the link: a peer that breaks framing is broken or
//!   hostile, and nothing it sends afterwards can be trusted.
//! - [`wire`]: the [`Wire`] trait, a positional encoding of values into
//!   bytes plus fds, and a decoder that never trusts a length.
//!
//! The decode path (frame and wire) is pure: it takes bytes and a list of
//! fds and returns values or an error, so it is fuzzed without sockets
//! (`fuzz/fuzz_targets/frame_decode.rs`).

pub mod frame;
pub mod sys;
pub mod wire;

pub use frame::{Frame, FrameError, Reassembler, RecvFlags};
pub use wire::{decode_message, encode_message, Bytes, Decoder, Encoder, Wire, WireError};
