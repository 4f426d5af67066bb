//! Actors: procs that own a state and handle messages from a bounded
//! mailbox, with request/reply, a registry of names and supervisors.
//!
//! ```
//! use procrt::actor::{spawn_actor, Context, Reply};
//! use std::time::Duration;
//!
//! enum Counter {
//!     Add(u64),
//!     Get(Reply<u64>),
//! }
//!
//! procrt::run(|| {
//!     let counter = spawn_actor(0u64, |n: &mut u64, msg: Counter, _: &Context<Counter>| {
//!         match msg {
//!             Counter::Add(k) => *n += k,
//!             Counter::Get(reply) => {
//!                 let _ = reply.send(*n);
//!             }
//!         }
//!     });
//!     counter.send(Counter::Add(2)).unwrap();
//!     counter.send(Counter::Add(3)).unwrap();
//!     let n = counter.call(Counter::Get, Duration::from_secs(1)).unwrap();
//!     assert_eq!(n, 5);
//! });
//! ```
//!
//! # Design
//!
//! An **actor** is a proc that owns a `state: S` and runs
//! `handler(&mut state, msg, &ctx)` for each message taken from its
//! **mailbox**, one message at a time, in the order the mailbox received
//! them. The mailbox is a [`sync_channel`](crate::chan::sync_channel) of
//! the capacity chosen in [`ActorBuilder::capacity`] (default
//! [`DEFAULT_CAPACITY`], 1024). [`Addr<M>`] is the actor's address: a
//! cloneable sender of `M`s. It is neither `Send` nor `Sync`, like every
//! other handle of a runtime that lives on one thread. Nothing here needs
//! a lock or an atomic, and nothing here uses `unsafe`.
//!
//! ## Life and death
//!
//! An actor ends in one of three ways:
//!
//! - **Every `Addr` is gone** (the registry holds one too, see below). The
//!   actor handles what is already queued, then returns its state, which
//!   is the value its [`JoinHandle`](crate::JoinHandle) gives.
//! - **It is asked to stop**, by [`Addr::stop`] or by its handler calling
//!   [`Context::stop`]. It handles no further message: it stops after
//!   the message it is handling, or as soon as it runs if it was idle, and
//!   returns its state. Messages still queued are dropped unhandled.
//! - **Its handler panics.** The panic ends the proc, as any panic does,
//!   and its `JoinHandle` gets the payload. An actor does not catch panics:
//!   a state that a handler left half-updated is not trusted. Restarting
//!   from a fresh state is the job of a [`Supervisor`].
//!
//! When an actor ends, however it ends, a guard that its proc owns marks it
//! dead ([`Addr::is_alive`]), drops its mailbox, so that later sends fail
//! and queued requests fail with [`CallError::Gone`], and removes its
//! registered names. The guard is built before the proc starts, so an actor
//! whose proc never ran (because its runtime was dropped first) is marked
//! dead as well.
//!
//! ## A full mailbox: backpressure
//!
//! The policy is backpressure. [`Addr::send`] parks the sender while the
//! mailbox is full, and [`Addr::try_send`] returns
//! [`TrySendError::Full`](crate::chan::TrySendError::Full) with the
//! message instead. The alternatives were rejected for these reasons:
//!
//! - *Unbounded mailboxes* turn a slow actor into memory growth without
//!   limit, and nothing signals the problem until the process is killed.
//! - *Dropping messages* (the newest or the oldest) loses them silently. A
//!   bank cannot drop a credit.
//! - *Failing the send* makes every sender write a retry loop. Parking
//!   does the same waiting better: a parked proc costs no CPU, and the
//!   channel wakes senders in arrival order as room appears.
//!
//! Parking has one hazard: a wait that cannot end. An actor that `send`s
//! to its own full mailbox, or a cycle of actors that `send` to each other
//! while every mailbox in the cycle is full, waits forever. If every other
//! proc is parked too, the runtime panics with "deadlock". Such senders
//! should use `try_send`, or [`Addr::call`], which waits for room only
//! until its timeout.
//!
//! ## Request/reply
//!
//! A request is an ordinary message that carries a [`Reply<R>`]. The
//! handler answers with `reply.send(value)`. [`Addr::call`] builds the
//! `Reply`, wraps it into a message with the closure it is given (often
//! just an enum variant, as in `addr.call(Msg::Get, timeout)`), posts it,
//! and waits for the answer with `recv_deadline`. The caller learns why no
//! answer came from a small token that the request's envelope shares with
//! the caller. The actor moves the token from *queued* to *taken* when it
//! takes the request, and to *panicked* if the handler unwinds. When the
//! reply channel is closed without an answer, the token's state gives the
//! [`CallError`]:
//!
//! | token | error | was the request handled? |
//! |---|---|---|
//! | queued (the actor ended first, or was already gone) | [`Gone`](CallError::Gone) | no |
//! | panicked | [`Panicked`](CallError::Panicked) | partly, maybe |
//! | taken (the handler dropped the `Reply`) | [`NoReply`](CallError::NoReply) | yes |
//! | no answer by the deadline | [`Timeout`](CallError::Timeout) | see below |
//!
//! On a timeout the caller marks the token *abandoned*. If the actor had
//! not yet taken the request, it drops it unhandled when it reaches it. A
//! `Timeout` therefore means one of two things: the request was not
//! handled and never will be, or it was taken and its outcome is unknown.
//! A caller that retries must make its requests idempotent. The bank
//! example does this with transfer ids.
//!
//! The timeout covers the whole call, including any wait for room in a
//! full mailbox. That wait uses a [`Select`](crate::chan::Select) send case
//! with `ready_timeout`, so the caller queues fairly behind the senders
//! that are parked already.
//!
//! ## Registry
//!
//! [`register`], [`whereis`], [`lookup`] and [`unregister`] map names to
//! addresses. The map is a thread-local: it belongs to the OS thread.
//! Only one runtime runs on a thread at a time, so while a runtime runs,
//! the registry is that runtime's. Lookups are type-checked:
//! `whereis::<M>` gives `None` when the name belongs to an actor of another
//! message type (and [`lookup`] says which type it has). The registry holds
//! a strong `Addr`, so a registered actor stays reachable after its other
//! addresses are gone, as a registered process does in Erlang. Names of
//! dead actors are removed when the actor ends (by the guard described
//! above). `whereis` also checks that the actor is alive, to cover an actor
//! whose end has not been cleaned up yet.
//!
//! ## Supervisors
//!
//! A [`Supervisor`] runs **one-for-one** with **transient** children. Each
//! child is a [`ChildSpec`]: a name, an `init: Fn() -> S` for a fresh state,
//! and a handler that is cloned for each incarnation. The supervisor starts
//! every child and registers it under its name. When a child panics, the
//! supervisor starts a new incarnation of that child alone, from a fresh
//! state, and registers it under the same name, so clients that look the
//! name up again find the new address. A child that ends normally (it was
//! stopped, or its handler called [`Context::stop`]) is not restarted.
//!
//! Old addresses are **not redirected**. An `Addr` names one incarnation's
//! mailbox. After a crash, sends to it fail and calls fail with
//! [`CallError::Gone`]. Redirecting was rejected for two reasons. The
//! client would not learn that the state behind the name was reset. And
//! messages meant for the incarnation that crashed, such as the second half
//! of a two-step exchange, would reach a fresh state that does not expect
//! them. Clients look the name up again and retry; the bank example shows
//! this.
//!
//! **Restart intensity**: at most `max_restarts` restarts within any
//! sliding `period` (default: 3 within 5 s), timed with
//! [`Instant`](std::time::Instant). The crash that would exceed the limit
//! makes the supervisor give up. It stops every child and waits up to
//! `shutdown_timeout` for them to end. Then it ends with
//! [`SupervisorError::GaveUp`], which [`SupervisorHandle::join`] returns.
//! An endless crash loop thus becomes one error that can be seen.
//!
//! The supervisor learns that a child ended without a monitor primitive.
//! For each incarnation it spawns a small **watcher** proc. The watcher
//! joins the child's `JoinHandle` and sends the outcome, tagged with the
//! child's index and incarnation number, to the supervisor's own channel.
//! The supervisor ignores reports about incarnations it has already
//! replaced.
//!
//! ## Rejected: an `Actor` trait
//!
//! An `impl Actor for X { type Msg; fn handle(..) }` style was rejected in
//! favour of a state plus a closure, which is how [`spawn`](crate::spawn)
//! is called already. A trait adds nothing that a closure over a state
//! lacks, and a closure can capture addresses and settings without a
//! struct to hold them.

mod addr;
mod call;
mod registry;
mod supervisor;

pub use addr::{spawn_actor, ActorBuilder, Addr, Context, DEFAULT_CAPACITY};
pub use call::{CallError, Reply};
pub use registry::{lookup, register, registered, unregister, whereis, LookupError, RegisterError};
pub use supervisor::{ChildSpec, Supervisor, SupervisorError, SupervisorHandle};
