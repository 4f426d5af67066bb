//! Request/reply: [`Reply`], [`Addr::call`], [`CallError`].

use super::addr::{Addr, Envelope};
use crate::chan::{channel, RecvTimeoutError, Select, SendError, Sender, TrySendError};
use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Where a request is, as far as its caller needs to know.
///
/// # State
/// ```text
///   Queued ──actor takes it──> Taken ──handler unwinds──> Panicked
///     └──caller times out──> Abandoned   (the actor then drops it unhandled)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Queued,
    Taken,
    Panicked,
    Abandoned,
}

/// Shared by a request's envelope and its caller.
pub(crate) struct CallToken(Cell<Stage>);

impl CallToken {
    fn new() -> Self {
        CallToken(Cell::new(Stage::Queued))
    }

    /// The actor takes the request: true if it should be handled, false if
    /// its caller gave up already.
    pub(crate) fn take(&self) -> bool {
        if self.0.get() == Stage::Abandoned {
            return false;
        }
        self.0.set(Stage::Taken);
        true
    }

    /// The handler unwound while handling the request.
    pub(crate) fn mark_panicked(&self) {
        self.0.set(Stage::Panicked);
    }

    /// The caller stopped waiting: a request not yet taken never will be.
    fn abandon(&self) {
        if self.0.get() == Stage::Queued {
            self.0.set(Stage::Abandoned);
        }
    }
}

/// The way back to a caller waiting in [`Addr::call`]. A request message
/// carries one. The handler answers with [`send`](Reply::send), or passes
/// the `Reply` on to another actor that answers instead.
///
/// A `Reply` dropped without an answer makes the call fail at once: with
/// [`CallError::Panicked`] if the handler that took the request panicked,
/// otherwise with [`CallError::NoReply`] (or [`CallError::Gone`] when the
/// request was never taken).
pub struct Reply<R> {
    tx: Sender<R>,
}

impl<R> Reply<R> {
    /// Answers the call. Returns the value back as `Err` when the caller
    /// is no longer waiting (its call timed out).
    pub fn send(self, value: R) -> Result<(), R> {
        self.tx.send(value).map_err(|SendError(v)| v)
    }
}

impl<R> fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").finish_non_exhaustive()
    }
}

/// Why [`Addr::call`] has no answer. The [module
/// docs](crate::actor#requestreply) tell how each case is detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No answer came before the timeout. Either the request was not taken
    /// and never will be (the actor drops it unhandled), or it was taken
    /// and its outcome is unknown.
    Timeout,
    /// The actor had ended, or ended before it took the request. The
    /// request was not handled. Its mailbox is closed, so later sends fail
    /// as well.
    Gone,
    /// The handler that took the request panicked before answering, which
    /// ended the actor. The request may have been partly handled.
    Panicked,
    /// The request was taken and its `Reply` dropped without an answer, with
    /// no panic.
    NoReply,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallError::Timeout => "call timed out waiting for the actor's reply",
            CallError::Gone => "the actor had ended before it took the request",
            CallError::Panicked => "the actor panicked while handling the request",
            CallError::NoReply => "the actor dropped the request's reply without answering",
        })
    }
}

impl std::error::Error for CallError {}

impl<M> Addr<M> {
    /// Sends a request and waits up to `timeout` for its answer.
    ///
    /// `request` wraps the [`Reply`] into a message. Often it is just the
    /// enum variant: `addr.call(Msg::Get, timeout)` for a
    /// `Msg::Get(Reply<u64>)`. The timeout covers the whole call, including
    /// a wait for room in a full mailbox. A call to an actor that has ended
    /// fails at once with [`CallError::Gone`]. An actor that panics, or
    /// that ends before taking the request, makes the call fail as soon as
    /// that happens, not at the timeout. An actor that calls itself waits
    /// until the timeout.
    ///
    /// ```
    /// use procrt::actor::{spawn_actor, CallError, Context, Reply};
    /// use std::time::Duration;
    ///
    /// enum Msg {
    ///     Double(u32, Reply<u32>),
    ///     Crash(Reply<u32>),
    /// }
    ///
    /// procrt::run(|| {
    ///     let addr = spawn_actor((), |_: &mut (), msg: Msg, _: &Context<Msg>| match msg {
    ///         Msg::Double(n, reply) => {
    ///             let _ = reply.send(2 * n);
    ///         }
    ///         Msg::Crash(_reply) => panic!("crash requested"),
    ///     });
    ///     let t = Duration::from_secs(1);
    ///     assert_eq!(addr.call(|r| Msg::Double(21, r), t), Ok(42));
    ///     assert_eq!(addr.call(Msg::Crash, t), Err(CallError::Panicked));
    ///     assert_eq!(addr.call(|r| Msg::Double(1, r), t), Err(CallError::Gone));
    /// });
    /// ```
    ///
    /// # Panics
    ///
    /// When it would have to park outside a proc.
    pub fn call<R>(
        &self,
        request: impl FnOnce(Reply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let deadline = Instant::now().checked_add(timeout);
        let (tx, rx) = channel();
        let token = Rc::new(CallToken::new());
        let envelope = Envelope::Call(request(Reply { tx }), token.clone());
        self.post(envelope, deadline)?;
        let answer = match deadline {
            Some(d) => rx.recv_deadline(d),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match answer {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => {
                token.abandon();
                Err(CallError::Timeout)
            }
            // The reply was dropped unanswered; the token says why.
            Err(RecvTimeoutError::Disconnected) => Err(match token.0.get() {
                Stage::Queued | Stage::Abandoned => CallError::Gone,
                Stage::Taken => CallError::NoReply,
                Stage::Panicked => CallError::Panicked,
            }),
        }
    }

    /// Queues `envelope`, waiting for room until `deadline` (forever if
    /// `None`).
    fn post(&self, mut envelope: Envelope<M>, deadline: Option<Instant>) -> Result<(), CallError> {
        let tx = self.sender();
        let Some(deadline) = deadline else {
            return tx.send(envelope).map_err(|_| CallError::Gone);
        };
        loop {
            match tx.try_send(envelope) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(CallError::Gone),
                Err(TrySendError::Full(e)) => envelope = e,
            }
            // Queue up behind the senders parked already; nothing runs
            // between `ready_timeout` returning and the next `try_send`.
            let left = deadline.saturating_duration_since(Instant::now());
            let mut sel = Select::new();
            sel.send(tx);
            if sel.ready_timeout(left).is_err() {
                return Err(CallError::Timeout);
            }
        }
    }
}
