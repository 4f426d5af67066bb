//! Work and wake-ups from other OS threads: the injection queue.
//!
//! # Design
//!
//! A runtime and its procs live on one thread and share state without
//! atomics. Another thread reaches them only through [`Remote`]: a
//! `crossbeam-queue` `SegQueue` of [`Msg`]s (spawn a `Send` closure; wake a
//! proc by id) plus an eventfd the runtime's epoll watches. The protocol:
//!
//! - a sender pushes its message, then, if `pending` was false, sets it and
//!   writes 1 to the eventfd (so a burst of sends costs one write);
//! - the runtime clears `pending` *before* it pops the queue empty, so a
//!   message pushed after that pop finds `pending` false and writes again:
//!   no message is left behind while the runtime sleeps.
//!
//! The runtime checks `pending` (one relaxed load) wherever it checks its
//! timers while busy, and sleeps in `epoll_wait`, which the eventfd ends,
//! when idle. A wake names a proc by [`ProcId`]; the runtime looks it up
//! (O(1), by the slot the id carries) and does nothing if it ended.
//!
//! When the runtime is dropped, `closed` is set and the queue drained
//! (closures dropped unrun). A [`Handle`] that outlives its runtime keeps
//! the `Remote` (and the eventfd) alive by `Arc`: waking is then a no-op
//! and spawning returns an error. A spawn racing with the drop may be
//! accepted and then dropped unrun, like a message sent to a process that
//! dies.
//!
//! Rejected: a `Mutex<VecDeque>` (a sender would contend with the runtime
//! on every message); a pipe instead of an eventfd (two fds, and a full
//! pipe blocks or drops writes).

use super::proc::ProcId;
use crate::error::{SpawnError, SpawnErrorKind};
use crossbeam_queue::SegQueue;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A message from another thread.
pub(crate) enum Msg {
    /// Spawn a proc running this closure.
    Spawn(Box<dyn FnOnce() + Send>),
    /// Wake this proc if it is still alive.
    Wake(ProcId),
}

/// The part of a runtime other threads may touch.
pub(crate) struct Remote {
    /// Messages not yet taken by the runtime.
    queue: SegQueue<Msg>,
    /// Written (1) when `pending` goes from false to true.
    wake_fd: OwnedFd,
    /// A message was pushed since the runtime last drained the queue.
    pending: AtomicBool,
    /// The runtime is gone (or going): messages are refused.
    closed: AtomicBool,
}

impl Remote {
    /// A new queue and its eventfd.
    pub(crate) fn new() -> io::Result<Remote> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = crate::io::syscall!(unsafe {
            libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)
        })?;
        Ok(Remote {
            queue: SegQueue::new(),
            // SAFETY: `fd` was just created and nobody else owns it.
            wake_fd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// The eventfd the runtime's epoll watches.
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.wake_fd.as_raw_fd()
    }

    /// Queues `msg` and wakes the runtime; gives it back if the runtime is
    /// gone.
    fn send(&self, msg: Msg) -> Result<(), Msg> {
        if self.closed.load(Ordering::Acquire) {
            return Err(msg);
        }
        self.queue.push(msg);
        if !self.pending.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: `wake_fd` is open for as long as `self` lives; we
            // write 8 bytes from a live u64. A full counter (EAGAIN, after
            // 2^64 - 2 unread writes) still leaves the fd readable.
            unsafe {
                libc::write(
                    self.wake_fd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
        Ok(())
    }

    /// Whether messages may be waiting (one relaxed load).
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// Resets the eventfd's counter (after epoll reported it).
    pub(crate) fn clear_wake_fd(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from an open, non-blocking
        // eventfd; EAGAIN (already zero) is fine.
        unsafe {
            libc::read(
                self.wake_fd.as_raw_fd(),
                (&mut buf as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Takes every queued message (clearing `pending` first; see the
    /// protocol above).
    pub(crate) fn drain(&self, mut f: impl FnMut(Msg)) {
        self.pending.store(false, Ordering::SeqCst);
        while let Some(m) = self.queue.pop() {
            f(m);
        }
    }

    /// Refuses further messages and drops the queued ones.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        while self.queue.pop().is_some() {}
    }
}

/// A handle to a runtime that other OS threads may hold: it spawns procs
/// (from `Send` closures) and wakes parked procs by id. `Send`, `Sync`
/// and cheap to clone. Get one with [`Runtime::handle`](crate::Runtime::handle)
/// or, inside a proc, [`handle`].
///
/// ```
/// use std::sync::mpsc;
/// let rt = procrt::Runtime::new().unwrap();
/// let handle = rt.handle().unwrap();
/// let (tx, rx) = mpsc::channel();
/// std::thread::spawn(move || {
///     handle.spawn(move || tx.send(procrt::current().id()).unwrap()).unwrap();
/// });
/// // The root proc waits, parked, until the injected proc has run.
/// let id = rt.block_on(move || loop {
///     if let Ok(id) = rx.try_recv() {
///         break id;
///     }
///     procrt::sleep(std::time::Duration::from_millis(1));
/// });
/// assert!(id.as_u64() > 0);
/// ```
///
/// A handle that outlives its runtime is harmless: `unpark` does nothing
/// and `spawn` returns an error.
#[derive(Clone)]
pub struct Handle {
    /// The runtime's injection queue.
    remote: Arc<Remote>,
}

impl Handle {
    pub(crate) fn from_remote(remote: Arc<Remote>) -> Handle {
        Handle { remote }
    }

    /// Spawns a proc running `f` on the runtime (it starts when the runtime
    /// next looks at its queue: at once if it is idle, within 64 picks if
    /// busy). The proc is detached; send its result back over a
    /// `std::sync::mpsc` channel or similar.
    ///
    /// Returns [`SpawnErrorKind::ShuttingDown`] when the runtime is gone.
    /// A spawn the runtime accepts but cannot give a stack to (the stack
    /// pool is exhausted) is reported on stderr and the closure dropped.
    pub fn spawn<F>(&self, f: F) -> Result<(), SpawnError>
    where
        F: FnOnce() + Send + 'static,
    {
        self.remote
            .send(Msg::Spawn(Box::new(f)))
            .map_err(|_| SpawnError::new(SpawnErrorKind::ShuttingDown))
    }

    /// Wakes the proc `id` if it is parked (or leaves it a wake token, as
    /// [`Unparker::unpark`](crate::Unparker::unpark) does). Does nothing if
    /// the proc ended or the runtime is gone.
    pub fn unpark(&self, id: ProcId) {
        let _ = self.remote.send(Msg::Wake(id));
    }

    /// Whether the runtime is gone.
    pub fn is_closed(&self) -> bool {
        self.remote.closed.load(Ordering::Acquire)
    }

    /// A `Send` unparker for the proc `id`.
    pub fn unparker(&self, id: ProcId) -> RemoteUnparker {
        RemoteUnparker {
            handle: self.clone(),
            id,
        }
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Wakes one proc from any thread: the `Send + Sync` sibling of
/// [`Unparker`](crate::Unparker). Get one with [`remote_unparker`].
#[derive(Clone, Debug)]
pub struct RemoteUnparker {
    /// The proc's runtime.
    handle: Handle,
    /// The proc to wake.
    id: ProcId,
}

impl RemoteUnparker {
    /// Wakes the proc if it is parked, or makes its next `park` return at
    /// once. Does nothing once the proc or its runtime has ended.
    pub fn unpark(&self) {
        self.handle.unpark(self.id);
    }

    /// The id of the proc this unparks.
    pub fn id(&self) -> ProcId {
        self.id
    }
}

/// A [`Handle`] to the runtime running the calling proc.
///
/// # Panics
///
/// Outside a runtime, or when the runtime cannot open its wake-up fd
/// (the process is out of file descriptors).
pub fn handle() -> Handle {
    super::runtime::with_rt("handle", |rt| {
        rt.driver()
            .remote()
            .map(Handle::from_remote)
            .unwrap_or_else(|e| panic!("procrt: cannot open the runtime's wake-up fd: {e}"))
    })
}

/// A `Send` unparker for the calling proc: another thread can wake it.
///
/// # Panics
///
/// Outside a proc; as [`handle`].
pub fn remote_unparker() -> RemoteUnparker {
    let id = crate::current().id();
    handle().unparker(id)
}
