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
//! - `link`: a [`Link`] is one connection, served by a reader and a writer
//!   proc; ports ([`export`], [`export_channel`], [`export_calls`]) are
//!   named destinations for typed messages ([`RemoteAddr`]) and calls
//!   ([`RemoteCaller`]); monitors reach across ([`Link::monitor`],
//!   [`RemoteDown`]), and a link that closes delivers
//!   [`ExitReason::NodeDown`](crate::ExitReason::NodeDown) to them.
//! - `process`: starting worker nodes ([`spawn_worker`], [`role`],
//!   [`connect_parent`]) and connecting separate ones ([`listen`],
//!   [`connect`]) with a credential check ([`Trust`]).
//!
//! The decode path (frame and wire) is pure: it takes bytes and a list of
//! fds and returns values or an error, so it is fuzzed without sockets
//! (`fuzz/fuzz_targets/frame_decode.rs`).
//!
//! A node is one runtime on one thread: links, ports and the table of links
//! by node belong to the thread that made them.
//!
//! ```no_run
//! use procrt::node::{self, Wire};
//! use std::time::Duration;
//!
//! fn main() {
//!     if node::role().as_deref() == Some("echo") {
//!         // The worker: answer on port "echo" until the parent goes away.
//!         procrt::run(|| {
//!             let parent = node::connect_parent().unwrap();
//!             let (tx, rx) = procrt::chan::channel::<(u64, String)>();
//!             node::export_channel("in", tx);
//!             let out = parent.addr::<String>("out");
//!             procrt::spawn(move || for (n, s) in rx { out.send(format!("{n}: {s}")).unwrap() }).unwrap();
//!             parent.wait_closed();
//!         });
//!         return;
//!     }
//!     procrt::run(|| {
//!         let (tx, rx) = procrt::chan::channel::<String>();
//!         node::export_channel("out", tx);
//!         let w = node::spawn_worker("echo").unwrap();
//!         w.link().addr::<(u64, String)>("in").send((1, "hi".into())).unwrap();
//!         assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "1: hi");
//!     });
//! }
//! ```

pub mod frame;
mod link;
mod process;
pub mod sys;
pub mod wire;

pub use frame::{Frame, FrameError, Reassembler, RecvFlags};
pub use link::{
    export, export_calls, export_channel, fingerprint, link_to, monitor_remote, this_node,
    unexport, GlobalId, Link, LinkClosed, LinkConfig, NodeId, RemoteAddr, RemoteCaller, RemoteDown,
};
pub use process::{
    connect, connect_parent, listen, role, spawn_worker, spawn_worker_with, NodeListener, Trust,
    Worker, FD_ENV, ROLE_ENV,
};
pub use wire::{decode_message, encode_message, Bytes, Decoder, Encoder, Wire, WireError};
