//! Links: one connection to another node, the procs that read and write
//! it, and the messages that travel over it.
//!
//! # Design
//!
//! A [`Link`] owns one connected `SOCK_SEQPACKET` socket, wrapped in a
//! [`GreenFd`] so that waiting on it parks a proc, not the node. When a
//! link is made (by [`connect`](super::connect), a listener's `accept`, or
//! a worker's start), both ends first exchange a HELLO frame synchronously
//! (protocol version and the sender's node id), so a `Link` always knows
//! its peer. Then two procs serve it:
//!
//! - the **writer** takes whole messages from an unbounded queue and writes
//!   their fragments, so a message's fragments are never interleaved with
//!   another's, and messages leave in the order they were queued (sending
//!   never parks the sender; the writer parks while the socket is full).
//!   A one-packet message with nothing queued ahead of it skips the queue:
//!   the sending proc writes it at once, unless the socket is full;
//! - the **reader** receives packets, passes them through the link's
//!   [`Reassembler`], and dispatches each whole message in order: one
//!   port's messages keep their order end to end.
//!
//! ## Messages
//!
//! Each message is a frame whose `kind` says what it is; its payload is a
//! [`Wire`] encoding:
//!
//! | kind      | payload |
//! |-----------|---------|
//! | HELLO     | `(version: u32, node: u32)` |
//! | SEND      | `(port: String, type: u64, body: M)` |
//! | CALL      | `(port, req type: u64, resp type: u64, call: u64, timeout ms: u64, body: Req)` |
//! | REPLY     | `(call: u64, status: u8, body: Resp if status is OK)` |
//! | MONITOR   | `(monitor: u64, proc seq: u64, proc slot: u32)` |
//! | DEMONITOR | `(monitor: u64)` |
//! | DOWN      | `(monitor: u64, reason: ExitReason)` |
//!
//! Ports are named destinations registered with [`export`](super::export)
//! (an actor's mailbox), [`export_channel`](super::export_channel) (a
//! channel) or [`export_calls`](super::export_calls) (an actor answering
//! calls). `type` is a fingerprint of the Rust type's name (FNV-1a of
//! `std::any::type_name`), so a message meant for another type is refused
//! instead of decoded as garbage; the two ends must be built from the same
//! source with the same compiler (the usual case: a worker re-executes its
//! parent's binary).
//!
//! ## Bad input and failure
//!
//! What the peer sends is checked twice: by the reassembler (framing, fds,
//! sizes) and by the decoders (every length, tag and fd index). Anything
//! malformed closes the link with a reason written to stderr, and the
//! node runs on. A well-formed message for a port that does not exist, or
//! of the wrong type, is dropped with a line on stderr (a call gets a
//! `Gone` answer): that is the application's mistake, not the peer's
//! framing. When a link closes, for whatever reason:
//! - its pending calls fail with [`CallError::Gone`];
//! - every monitor this node holds on the peer's procs delivers
//!   [`ExitReason::NodeDown`] with the reason;
//! - monitors the peer held on this node's procs are taken back;
//! - the socket is shut down both ways, so the peer learns at once.
//!
//! Every fd of a rejected message is closed: fds are owned values from the
//! moment they are received, and dropped with the message.

use super::frame::{fragment, Frame, Packet, Reassembler, HEADER, MAX_PAYLOAD};
use super::sys::{recv_packet, send_packet};
use super::wire::{decode_message, Decoder, Encoder, Wire, WireError};
use crate::actor::{Addr, CallError, Reply};
use crate::chan::{channel, RecvTimeoutError, Sender};
use crate::io::GreenFd;
use crate::sched::{add_monitor, DownSink};
use crate::{Builder, Down, ExitReason, MonitorRef, ProcId};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// The version of the node protocol in HELLO.
const PROTOCOL: u32 = 1;

/// Frame kinds.
pub(crate) mod kind {
    pub(crate) const HELLO: u8 = 1;
    pub(crate) const SEND: u8 = 2;
    pub(crate) const CALL: u8 = 3;
    pub(crate) const REPLY: u8 = 4;
    pub(crate) const MONITOR: u8 = 5;
    pub(crate) const DEMONITOR: u8 = 6;
    pub(crate) const DOWN: u8 = 7;
}

/// REPLY statuses.
mod status {
    pub(super) const OK: u8 = 0;
    pub(super) const GONE: u8 = 1;
    pub(super) const PANICKED: u8 = 2;
    pub(super) const NO_REPLY: u8 = 3;
    pub(super) const TIMEOUT: u8 = 4;
}

/// Limits of one link.
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    /// Largest message accepted, in bytes (default 64 MiB).
    pub max_message: usize,
    /// Most fds one message may carry (default 1024): the link's fd
    /// budget, counted over the fragments of the message being received (a
    /// link has at most one in reassembly). A message over it closes the
    /// link, and every fd received for it is closed.
    ///
    /// Fds of delivered messages belong to the receiving port. A port
    /// over an actor ([`export`](super::export)) has a bounded mailbox,
    /// and the reader waits while it is full, which stops reading the
    /// socket: the fds a peer can have in this node at once are then at
    /// most (mailbox capacity + 1) x `fd_budget`, plus what the kernel
    /// buffers. A port over an unbounded channel has no such bound; export
    /// bounded ports to peers you do not trust.
    pub fd_budget: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            max_message: 64 << 20,
            fd_budget: 1024,
        }
    }
}

/// A node's identity: the id of its OS process, unique among the nodes
/// running at one time on one machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// This node's id.
pub fn this_node() -> NodeId {
    NodeId(std::process::id())
}

/// A proc's name across nodes: its node and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GlobalId {
    /// The node the proc runs on.
    pub node: NodeId,
    seq: u64,
    slot: u32,
}

impl GlobalId {
    /// The global name of proc `id` of this node.
    pub fn local(id: ProcId) -> GlobalId {
        GlobalId {
            node: this_node(),
            seq: id.seq,
            slot: id.slot,
        }
    }

    /// The proc's id on its own node.
    pub fn proc_id(&self) -> ProcId {
        ProcId {
            seq: self.seq,
            slot: self.slot,
        }
    }
}

impl fmt::Display for GlobalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}@{}", self.seq, self.node.0)
    }
}

impl Wire for GlobalId {
    const MIN_SIZE: usize = 16;
    fn encode(self, e: &mut Encoder) {
        (self.node.0, self.seq, self.slot).encode(e)
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        let (node, seq, slot) = <(u32, u64, u32)>::decode(d)?;
        Ok(GlobalId {
            node: NodeId(node),
            seq,
            slot,
        })
    }
}

impl Wire for ExitReason {
    const MIN_SIZE: usize = 1;
    fn encode(self, e: &mut Encoder) {
        match self {
            ExitReason::Normal => 0u8.encode(e),
            ExitReason::Panicked(m) => (1u8, m).encode(e),
            ExitReason::Cancelled => 2u8.encode(e),
            ExitReason::Linked { by, reason } => {
                (3u8, by.seq, by.slot).encode(e);
                (*reason).encode(e);
            }
            ExitReason::NoProc => 4u8.encode(e),
            ExitReason::NodeDown(why) => (5u8, why).encode(e),
        }
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match u8::decode(d)? {
            0 => ExitReason::Normal,
            1 => ExitReason::Panicked(String::decode(d)?),
            2 => ExitReason::Cancelled,
            3 => {
                let (seq, slot) = <(u64, u32)>::decode(d)?;
                let reason = ExitReason::decode(d)?;
                // A `Linked` reason is never nested (see `ExitReason`).
                if matches!(reason, ExitReason::Linked { .. }) {
                    return Err(WireError::BadTag(3));
                }
                ExitReason::Linked {
                    by: ProcId { seq, slot },
                    reason: Box::new(reason),
                }
            }
            4 => ExitReason::NoProc,
            5 => ExitReason::NodeDown(String::decode(d)?),
            t => return Err(WireError::BadTag(t.into())),
        })
    }
}

/// What a remote monitor delivers: proc `id` on another node ended, or
/// its node went out of reach ([`ExitReason::NodeDown`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteDown {
    /// The proc.
    pub id: GlobalId,
    /// Why it ended, or why its node is out of reach.
    pub reason: ExitReason,
}

/// The fingerprint of type `T` that SEND and CALL messages carry and
/// ports check: FNV-1a of `std::any::type_name::<T>()`. Stable for one
/// build of one program; a peer written by hand (a test, another
/// language) sends this value.
pub fn fingerprint<T>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::any::type_name::<T>().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A message queued for the writer, already split into packets.
struct Outgoing {
    packets: Vec<Packet>,
}

impl Outgoing {
    fn new(kind: u8, e: Encoder) -> Outgoing {
        let (bytes, fds) = e.finish();
        Outgoing {
            packets: fragment(kind, 0, &bytes, fds, MAX_PAYLOAD),
        }
    }
}

/// A call's answer, as the reader hands it to the waiting caller.
struct Answer {
    status: u8,
    bytes: Vec<u8>,
    /// Where the body starts in `bytes`.
    at: usize,
    fds: Vec<OwnedFd>,
}

/// The shared state of one link.
pub(crate) struct LinkInner {
    peer: NodeId,
    fd: GreenFd<OwnedFd>,
    config: LinkConfig,
    /// The writer's queue; `None` once the link is closed.
    out: RefCell<Option<Sender<Outgoing>>>,
    /// Messages queued for the writer or being written by it. While it is
    /// 0, a one-packet message is sent at once by the proc that sends it
    /// (nothing is ahead of it, so order holds), saving the hand-off.
    pending: Cell<usize>,
    /// Why the link closed, once it has.
    closed: RefCell<Option<String>>,
    /// Procs waiting in `wait_closed`.
    close_waiters: RefCell<Vec<crate::Unparker>>,
    /// Numbers for calls and monitors made from this side.
    next_id: Cell<u64>,
    /// Calls waiting for a REPLY, by call number.
    calls: RefCell<HashMap<u64, Sender<Answer>>>,
    /// Monitors this node holds on the peer's procs, by monitor number.
    remote_monitors: RefCell<HashMap<u64, (GlobalId, Sender<RemoteDown>)>>,
    /// Monitors the peer holds on this node's procs, by the peer's number.
    served_monitors: RefCell<HashMap<u64, MonitorRef>>,
    /// The number of a served monitor whose Down went out while it was
    /// being made (its proc was not alive), so that it is not entered.
    down_early: Cell<Option<u64>>,
}

/// A connection to another node. Clones refer to the same link.
#[derive(Clone)]
pub struct Link {
    inner: Rc<LinkInner>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.inner.peer)
            .field("closed", &*self.inner.closed.borrow())
            .finish()
    }
}

/// The error of sending on a link that has closed: the reason it closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkClosed(pub String);

impl fmt::Display for LinkClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node link closed: {}", self.0)
    }
}

impl std::error::Error for LinkClosed {}

thread_local! {
    /// This thread's links by peer, for remote monitors by `GlobalId`.
    static LINKS: RefCell<HashMap<NodeId, Weak<LinkInner>>> = RefCell::new(HashMap::new());
    /// Ports messages are sent to.
    static SEND_PORTS: RefCell<HashMap<String, Rc<dyn SendPort>>> = RefCell::new(HashMap::new());
    /// Ports that answer calls.
    static CALL_PORTS: RefCell<HashMap<String, Rc<dyn CallPort>>> = RefCell::new(HashMap::new());
}

/// Receives packets until one completes a message.
fn recv_frame(fd: &GreenFd<OwnedFd>, r: &mut Reassembler, buf: &mut [u8]) -> Result<Frame, String> {
    loop {
        let got = fd
            .read_with(|s| recv_packet(s.as_fd(), buf))
            .map_err(|e| format!("receive failed: {e}"))?;
        if got.eof {
            return Err("the peer closed the connection".into());
        }
        let packet = &buf[..got.len.min(buf.len())];
        match r.push(packet, got.fds, got.flags) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(format!("malformed packet: {e}")),
        }
    }
}

/// Writes one message, fragment by fragment.
fn write_message(fd: &GreenFd<OwnedFd>, m: Outgoing) -> io::Result<()> {
    for p in m.packets {
        fd.write_with(|s| send_packet(s.as_fd(), &p.bytes, &p.fds))?;
    }
    Ok(())
}

/// Makes a link over a connected socket: exchanges HELLOs, then starts the
/// reader and writer procs. Fails when the peer does not answer with a
/// HELLO within `timeout`.
pub(crate) fn establish(sock: OwnedFd, config: LinkConfig, timeout: Duration) -> io::Result<Link> {
    let fd = GreenFd::new(sock);
    fd.set_read_timeout(Some(timeout))?;
    fd.set_write_timeout(Some(timeout))?;
    let mut e = Encoder::new();
    (PROTOCOL, this_node().0).encode(&mut e);
    write_message(&fd, Outgoing::new(kind::HELLO, e))?;
    let mut reasm = Reassembler::new(config.max_message, config.fd_budget);
    let mut buf = vec![0u8; HEADER + MAX_PAYLOAD + 1];
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("node handshake failed: {why}"),
        )
    };
    let hello = recv_frame(&fd, &mut reasm, &mut buf).map_err(bad)?;
    if hello.kind != kind::HELLO {
        return Err(bad(format!(
            "expected HELLO, got frame kind {}",
            hello.kind
        )));
    }
    let (version, peer) =
        decode_message::<(u32, u32)>(&hello.bytes, hello.fds).map_err(|e| bad(e.to_string()))?;
    if version != PROTOCOL {
        return Err(bad(format!(
            "peer speaks protocol {version}, this node {PROTOCOL}"
        )));
    }
    fd.set_read_timeout(None)?;
    fd.set_write_timeout(None)?;
    let (tx, rx) = channel::<Outgoing>();
    let inner = Rc::new(LinkInner {
        peer: NodeId(peer),
        fd,
        config,
        out: RefCell::new(Some(tx)),
        pending: Cell::new(0),
        closed: RefCell::new(None),
        close_waiters: RefCell::new(Vec::new()),
        next_id: Cell::new(1),
        calls: RefCell::new(HashMap::new()),
        remote_monitors: RefCell::new(HashMap::new()),
        served_monitors: RefCell::new(HashMap::new()),
        down_early: Cell::new(None),
    });
    LINKS.with(|l| l.borrow_mut().insert(NodeId(peer), Rc::downgrade(&inner)));
    let link = Link { inner };
    // The writer holds only a weak reference, so that it never keeps a
    // closed link alive; the reader holds a strong one while it runs.
    let w = Rc::downgrade(&link.inner);
    Builder::new()
        .name(format!("node-writer-{peer}"))
        .stack_size(32 * 1024)
        .spawn(move || writer(w, rx))
        .map_err(io::Error::other)?;
    let r = link.clone();
    Builder::new()
        .name(format!("node-reader-{peer}"))
        .stack_size(64 * 1024)
        .spawn(move || reader(r, reasm, buf))
        .map_err(io::Error::other)?;
    Ok(link)
}

/// The writer proc: writes queued messages until the queue closes.
fn writer(link: Weak<LinkInner>, rx: crate::chan::Receiver<Outgoing>) {
    for m in rx.iter() {
        let Some(l) = link.upgrade() else { return };
        let r = write_message(&l.fd, m);
        l.pending.set(l.pending.get() - 1);
        if let Err(e) = r {
            Link { inner: l }.close(format!("send failed: {e}"));
            return;
        }
    }
}

/// The reader proc: dispatches whole messages until the link closes.
fn reader(link: Link, mut reasm: Reassembler, mut buf: Vec<u8>) {
    loop {
        if link.is_closed() {
            return;
        }
        let frame = match recv_frame(&link.inner.fd, &mut reasm, &mut buf) {
            Ok(f) => f,
            Err(why) => {
                link.close(why);
                return;
            }
        };
        if let Err(why) = link.dispatch(frame) {
            link.close(why);
            return;
        }
    }
}

impl Link {
    /// The node at the other end.
    pub fn peer(&self) -> NodeId {
        self.inner.peer
    }

    /// The limits this link enforces.
    pub fn config(&self) -> LinkConfig {
        self.inner.config
    }

    /// Whether the link has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.borrow().is_some()
    }

    /// Why the link closed, once it has.
    pub fn closed_reason(&self) -> Option<String> {
        self.inner.closed.borrow().clone()
    }

    /// Parks until the link closes; returns why it closed.
    ///
    /// # Panics
    ///
    /// Outside a proc.
    pub fn wait_closed(&self) -> String {
        loop {
            if let Some(why) = self.closed_reason() {
                return why;
            }
            let me = crate::unparker();
            self.inner.close_waiters.borrow_mut().push(me);
            crate::park();
        }
    }

    /// Closes the link (see the module docs for what follows). Does nothing
    /// if it is closed already.
    pub fn close(&self, reason: impl Into<String>) {
        let i = &*self.inner;
        if i.closed.borrow().is_some() {
            return;
        }
        let reason = reason.into();
        eprintln!("procrt: link to {} closed: {reason}", i.peer);
        *i.closed.borrow_mut() = Some(reason.clone());
        drop(i.out.borrow_mut().take());
        // SAFETY: shutdown on a socket fd we own; no memory is involved.
        unsafe {
            libc::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(i.fd.get_ref()),
                libc::SHUT_RDWR,
            )
        };
        let calls = std::mem::take(&mut *i.calls.borrow_mut());
        drop(calls);
        let monitors = std::mem::take(&mut *i.remote_monitors.borrow_mut());
        for (_, (id, tx)) in monitors {
            let _ = tx.try_send(RemoteDown {
                id,
                reason: ExitReason::NodeDown(reason.clone()),
            });
        }
        let served = std::mem::take(&mut *i.served_monitors.borrow_mut());
        for (_, m) in served {
            crate::demonitor(m);
        }
        LINKS.with(|l| {
            let mut l = l.borrow_mut();
            if l.get(&i.peer)
                .is_some_and(|w| w.as_ptr() == Rc::as_ptr(&self.inner))
            {
                l.remove(&i.peer);
            }
        });
        for u in std::mem::take(&mut *i.close_waiters.borrow_mut()) {
            u.unpark();
        }
    }

    /// Sends a message: at once when it is one packet and nothing is
    /// queued ahead of it and the socket has room, else through the
    /// writer's queue. Never parks.
    fn queue(&self, kind: u8, e: Encoder) -> Result<(), LinkClosed> {
        let i = &*self.inner;
        let closed = || LinkClosed(self.closed_reason().unwrap_or_else(|| "writer gone".into()));
        if i.out.borrow().is_none() {
            return Err(closed());
        }
        let m = Outgoing::new(kind, e);
        if i.pending.get() == 0 && m.packets.len() == 1 {
            let p = &m.packets[0];
            match send_packet(i.fd.get_ref().as_fd(), &p.bytes, &p.fds) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.close(format!("send failed: {e}"));
                    return Err(closed());
                }
            }
        }
        let out = i.out.borrow();
        match &*out {
            Some(tx) if tx.send(m).is_ok() => {
                i.pending.set(i.pending.get() + 1);
                Ok(())
            }
            _ => Err(closed()),
        }
    }

    fn next_id(&self) -> u64 {
        let n = self.inner.next_id.get();
        self.inner.next_id.set(n + 1);
        n
    }

    /// An address for the port `name` on the peer, to which messages of
    /// type `M` are sent.
    pub fn addr<M: Wire>(&self, name: &str) -> RemoteAddr<M> {
        RemoteAddr {
            link: self.clone(),
            port: name.to_owned(),
            _m: PhantomData,
        }
    }

    /// A caller for the port `name` on the peer, which answers `Req` with
    /// `Resp` (see [`export_calls`](super::export_calls)).
    pub fn caller<Req: Wire, Resp: Wire>(&self, name: &str) -> RemoteCaller<Req, Resp> {
        RemoteCaller {
            link: self.clone(),
            port: name.to_owned(),
            _m: PhantomData,
        }
    }

    /// Monitors proc `id`, which runs on this link's peer: one
    /// [`RemoteDown`] is sent on `to` when it ends, or when the link closes
    /// first ([`ExitReason::NodeDown`]), or at once if the link is closed.
    pub fn monitor(&self, id: GlobalId, to: &Sender<RemoteDown>) {
        let n = self.next_id();
        let mut e = Encoder::new();
        (n, id.seq, id.slot).encode(&mut e);
        self.inner
            .remote_monitors
            .borrow_mut()
            .insert(n, (id, to.clone()));
        if let Err(LinkClosed(why)) = self.queue(kind::MONITOR, e) {
            self.inner.remote_monitors.borrow_mut().remove(&n);
            let _ = to.try_send(RemoteDown {
                id,
                reason: ExitReason::NodeDown(why),
            });
        }
    }

    /// Handles one whole message from the peer. An `Err` closes the link.
    fn dispatch(&self, f: Frame) -> Result<(), String> {
        let mut d = Decoder::new(&f.bytes, f.fds);
        let malformed = |what: &str, e: WireError| format!("malformed {what} message: {e}");
        match f.kind {
            kind::SEND => {
                let (port, ty) =
                    <(String, u64)>::decode(&mut d).map_err(|e| malformed("SEND", e))?;
                let p = SEND_PORTS.with(|p| p.borrow().get(&port).cloned());
                match p {
                    Some(p) if p.fingerprint() == ty => p
                        .deliver(d)
                        .map_err(|e| malformed(&format!("SEND to port '{port}'"), e)),
                    Some(_) => {
                        eprintln!(
                            "procrt: {}: message for port '{port}' has another type; dropped",
                            self.peer()
                        );
                        Ok(())
                    }
                    None => {
                        eprintln!(
                            "procrt: {}: message for unknown port '{port}'; dropped",
                            self.peer()
                        );
                        Ok(())
                    }
                }
            }
            kind::CALL => {
                let (port, req_ty, resp_ty, call, timeout_ms) =
                    <(String, u64, u64, u64, u64)>::decode(&mut d)
                        .map_err(|e| malformed("CALL", e))?;
                let p = CALL_PORTS.with(|p| p.borrow().get(&port).cloned());
                match p {
                    Some(p) if p.fingerprints() == (req_ty, resp_ty) => {
                        let timeout = Duration::from_millis(timeout_ms);
                        p.call(self.clone(), call, timeout, d)
                            .map_err(|e| malformed(&format!("CALL to port '{port}'"), e))
                    }
                    other => {
                        let why = if other.is_some() {
                            "has other types"
                        } else {
                            "is unknown"
                        };
                        eprintln!(
                            "procrt: {}: call to port '{port}', which {why}; answered Gone",
                            self.peer()
                        );
                        self.reply_status(call, status::GONE);
                        Ok(())
                    }
                }
            }
            kind::REPLY => {
                let (call, st) = <(u64, u8)>::decode(&mut d).map_err(|e| malformed("REPLY", e))?;
                if st > status::TIMEOUT {
                    return Err(format!("REPLY with unknown status {st}"));
                }
                let at = f.bytes.len() - d.remaining();
                let waiting = self.inner.calls.borrow_mut().remove(&call);
                if let Some(tx) = waiting {
                    // Take the fds back out of the decoder for the caller.
                    let fds = d.into_fds();
                    let _ = tx.send(Answer {
                        status: st,
                        bytes: f.bytes,
                        at,
                        fds,
                    });
                }
                // Else the caller gave up (timeout); the fds close here.
                Ok(())
            }
            kind::MONITOR => {
                let (n, seq, slot) =
                    <(u64, u64, u32)>::decode(&mut d).map_err(|e| malformed("MONITOR", e))?;
                d.finish().map_err(|e| malformed("MONITOR", e))?;
                let sink = LinkSink {
                    link: Rc::downgrade(&self.inner),
                    n,
                };
                let m = add_monitor(ProcId { seq, slot }, Box::new(sink));
                // The Down went out at once if the proc was not alive: then
                // there is nothing to remember.
                if self.inner.down_early.take() != Some(n) {
                    self.inner.served_monitors.borrow_mut().insert(n, m);
                }
                Ok(())
            }
            kind::DEMONITOR => {
                let n = u64::decode(&mut d).map_err(|e| malformed("DEMONITOR", e))?;
                d.finish().map_err(|e| malformed("DEMONITOR", e))?;
                let m = self.inner.served_monitors.borrow_mut().remove(&n);
                if let Some(m) = m {
                    crate::demonitor(m);
                }
                Ok(())
            }
            kind::DOWN => {
                let n = u64::decode(&mut d).map_err(|e| malformed("DOWN", e))?;
                let reason = ExitReason::decode(&mut d).map_err(|e| malformed("DOWN", e))?;
                d.finish().map_err(|e| malformed("DOWN", e))?;
                let m = self.inner.remote_monitors.borrow_mut().remove(&n);
                if let Some((id, tx)) = m {
                    let _ = tx.try_send(RemoteDown { id, reason });
                }
                Ok(())
            }
            kind::HELLO => Err("a second HELLO".into()),
            k => Err(format!("unknown message kind {k}")),
        }
    }

    /// Answers call `call` with a status and no body.
    fn reply_status(&self, call: u64, st: u8) {
        let mut e = Encoder::new();
        (call, st).encode(&mut e);
        let _ = self.queue(kind::REPLY, e);
    }
}

/// Sends a DOWN to the peer when a local proc it monitors ends.
struct LinkSink {
    link: Weak<LinkInner>,
    n: u64,
}

impl DownSink for LinkSink {
    fn deliver(&self, d: Down) {
        let Some(inner) = self.link.upgrade() else {
            return;
        };
        let link = Link { inner };
        if link
            .inner
            .served_monitors
            .borrow_mut()
            .remove(&self.n)
            .is_none()
        {
            // Still inside `add_monitor` (see `dispatch`).
            link.inner.down_early.set(Some(self.n));
        }
        let mut e = Encoder::new();
        self.n.encode(&mut e);
        d.reason.encode(&mut e);
        let _ = link.queue(kind::DOWN, e);
    }
}

/// A destination for SEND messages.
trait SendPort {
    fn fingerprint(&self) -> u64;
    /// Decodes the body (all of `d`) and delivers it.
    fn deliver(&self, d: Decoder<'_>) -> Result<(), WireError>;
}

/// A port over a channel.
struct ChannelPort<T>(Sender<T>);

impl<T: Wire + 'static> SendPort for ChannelPort<T> {
    fn fingerprint(&self) -> u64 {
        fingerprint::<T>()
    }
    fn deliver(&self, mut d: Decoder<'_>) -> Result<(), WireError> {
        let v = T::decode(&mut d)?;
        d.finish()?;
        // A dropped receiver drops the message, like a stopped actor.
        let _ = self.0.send(v);
        Ok(())
    }
}

/// A port over an actor's mailbox.
struct ActorPort<M>(Addr<M>);

impl<M: Wire + 'static> SendPort for ActorPort<M> {
    fn fingerprint(&self) -> u64 {
        fingerprint::<M>()
    }
    fn deliver(&self, mut d: Decoder<'_>) -> Result<(), WireError> {
        let v = M::decode(&mut d)?;
        d.finish()?;
        // Parks while the mailbox is full: backpressure reaches the peer's
        // writer through the socket, and order is kept.
        let _ = self.0.send(v);
        Ok(())
    }
}

/// A destination for CALL messages.
trait CallPort {
    fn fingerprints(&self) -> (u64, u64);
    /// Decodes the request (all of `d`) and answers it from a proc of its
    /// own, so that the reader goes on.
    fn call(
        &self,
        link: Link,
        call: u64,
        timeout: Duration,
        d: Decoder<'_>,
    ) -> Result<(), WireError>;
}

/// A call port over an actor.
struct ActorCallPort<Req, Resp, M> {
    addr: Addr<M>,
    wrap: Rc<dyn Fn(Req, Reply<Resp>) -> M>,
}

impl<Req: Wire + 'static, Resp: Wire + 'static, M: 'static> CallPort
    for ActorCallPort<Req, Resp, M>
{
    fn fingerprints(&self) -> (u64, u64) {
        (fingerprint::<Req>(), fingerprint::<Resp>())
    }
    fn call(
        &self,
        link: Link,
        call: u64,
        timeout: Duration,
        mut d: Decoder<'_>,
    ) -> Result<(), WireError> {
        let req = Req::decode(&mut d)?;
        d.finish()?;
        let addr = self.addr.clone();
        let wrap = self.wrap.clone();
        let spawned = Builder::new().name("node-call").spawn(move || {
            let answer = addr.call(|r| wrap(req, r), timeout);
            let mut e = Encoder::new();
            match answer {
                Ok(resp) => {
                    (call, status::OK).encode(&mut e);
                    resp.encode(&mut e);
                }
                Err(err) => {
                    let st = match err {
                        CallError::Gone => status::GONE,
                        CallError::Panicked => status::PANICKED,
                        CallError::NoReply => status::NO_REPLY,
                        CallError::Timeout => status::TIMEOUT,
                    };
                    (call, st).encode(&mut e);
                }
            }
            let _ = link.queue(kind::REPLY, e);
        });
        if let Err(e) = spawned {
            eprintln!("procrt: cannot answer a node call: {e}");
        }
        Ok(())
    }
}

/// Makes the actor `addr` reachable from other nodes as port `name`: a
/// [`RemoteAddr<M>`](RemoteAddr) for that name sends to its mailbox. A
/// port of the same name is replaced.
pub fn export<M: Wire + 'static>(name: &str, addr: Addr<M>) {
    SEND_PORTS.with(|p| {
        p.borrow_mut()
            .insert(name.to_owned(), Rc::new(ActorPort(addr)))
    });
}

/// Makes a channel reachable from other nodes as port `name`.
pub fn export_channel<T: Wire + 'static>(name: &str, tx: Sender<T>) {
    SEND_PORTS.with(|p| {
        p.borrow_mut()
            .insert(name.to_owned(), Rc::new(ChannelPort(tx)))
    });
}

/// Makes the actor `addr` answer calls from other nodes as port `name`:
/// each request is wrapped by `wrap` into the actor's message type with a
/// [`Reply`], like a local [`Addr::call`].
pub fn export_calls<Req, Resp, M>(
    name: &str,
    addr: Addr<M>,
    wrap: impl Fn(Req, Reply<Resp>) -> M + 'static,
) where
    Req: Wire + 'static,
    Resp: Wire + 'static,
    M: 'static,
{
    let port = ActorCallPort {
        addr,
        wrap: Rc::new(wrap),
    };
    CALL_PORTS.with(|p| p.borrow_mut().insert(name.to_owned(), Rc::new(port)));
}

/// Removes the port `name` (both kinds). Messages for it are dropped from
/// now on.
pub fn unexport(name: &str) {
    SEND_PORTS.with(|p| p.borrow_mut().remove(name));
    CALL_PORTS.with(|p| p.borrow_mut().remove(name));
}

/// The link to `node`, if one is open.
pub fn link_to(node: NodeId) -> Option<Link> {
    LINKS
        .with(|l| l.borrow().get(&node).and_then(Weak::upgrade))
        .map(|inner| Link { inner })
}

/// Monitors a proc on another node, through the open link to its node;
/// without one, `to` gets `NodeDown` at once. See [`Link::monitor`].
pub fn monitor_remote(id: GlobalId, to: &Sender<RemoteDown>) {
    match link_to(id.node) {
        Some(l) => l.monitor(id, to),
        None => {
            let _ = to.try_send(RemoteDown {
                id,
                reason: ExitReason::NodeDown(format!("no link to {}", id.node)),
            });
        }
    }
}

/// Sends messages of type `M` to a port on another node.
pub struct RemoteAddr<M> {
    link: Link,
    port: String,
    _m: PhantomData<fn(M)>,
}

impl<M> Clone for RemoteAddr<M> {
    fn clone(&self) -> Self {
        RemoteAddr {
            link: self.link.clone(),
            port: self.port.clone(),
            _m: PhantomData,
        }
    }
}

impl<M: Wire> RemoteAddr<M> {
    /// Queues `msg` for the peer; never parks. Messages sent through one
    /// link arrive in the order they were sent. Fails when the link has
    /// closed. Delivery is not confirmed: a message for a port the peer
    /// does not have is dropped there.
    pub fn send(&self, msg: M) -> Result<(), LinkClosed>
    where
        M: 'static,
    {
        let mut e = Encoder::new();
        (self.port.clone(), fingerprint::<M>()).encode(&mut e);
        msg.encode(&mut e);
        self.link.queue(kind::SEND, e)
    }

    /// The link this address sends over.
    pub fn link(&self) -> &Link {
        &self.link
    }
}

/// Calls a port on another node that answers `Req` with `Resp`.
pub struct RemoteCaller<Req, Resp> {
    link: Link,
    port: String,
    _m: PhantomData<fn(Req) -> Resp>,
}

impl<Req: Wire + 'static, Resp: Wire + 'static> RemoteCaller<Req, Resp> {
    /// Sends `req` and parks until the answer, at most `timeout` (which
    /// also bounds the remote actor's [`Addr::call`]). Errors are those of
    /// a local call; [`CallError::Gone`] also when the link closes, the
    /// port does not exist, or its types differ.
    ///
    /// # Panics
    ///
    /// Outside a proc.
    pub fn call(&self, req: Req, timeout: Duration) -> Result<Resp, CallError> {
        let deadline = Instant::now().checked_add(timeout);
        let call = self.link.next_id();
        let (tx, rx) = channel::<Answer>();
        let mut e = Encoder::new();
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        (
            self.port.clone(),
            fingerprint::<Req>(),
            fingerprint::<Resp>(),
            call,
            ms,
        )
            .encode(&mut e);
        req.encode(&mut e);
        self.link.inner.calls.borrow_mut().insert(call, tx);
        if self.link.queue(kind::CALL, e).is_err() {
            self.link.inner.calls.borrow_mut().remove(&call);
            return Err(CallError::Gone);
        }
        let answer = match deadline {
            Some(d) => rx.recv_deadline(d),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match answer {
            Ok(a) => match a.status {
                status::OK => match decode_message::<Resp>(&a.bytes[a.at..], a.fds) {
                    Ok(r) => Ok(r),
                    Err(err) => {
                        self.link.close(format!("malformed REPLY body: {err}"));
                        Err(CallError::Gone)
                    }
                },
                status::PANICKED => Err(CallError::Panicked),
                status::NO_REPLY => Err(CallError::NoReply),
                status::TIMEOUT => Err(CallError::Timeout),
                _ => Err(CallError::Gone),
            },
            Err(RecvTimeoutError::Timeout) => {
                self.link.inner.calls.borrow_mut().remove(&call);
                Err(CallError::Timeout)
            }
            Err(RecvTimeoutError::Disconnected) => Err(CallError::Gone),
        }
    }
}
