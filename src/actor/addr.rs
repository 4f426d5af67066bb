//! The actor itself: its mailbox loop, [`Addr`], [`Context`],
//! [`ActorBuilder`].

use super::call::CallToken;
use super::registry;
use crate::chan::{sync_channel, Receiver, SendError, Sender, TrySendError};
use crate::{Builder, JoinHandle, ProcId, SpawnError};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};

/// The mailbox capacity of an actor unless [`ActorBuilder::capacity`] says
/// otherwise.
pub const DEFAULT_CAPACITY: usize = 1024;

/// What travels through a mailbox.
pub(crate) enum Envelope<M> {
    /// A message sent with `send`/`try_send`.
    Msg(M),
    /// A request sent by `call`, with the token its caller watches.
    Call(M, Rc<CallToken>),
    /// Wakes an idle actor so that it sees its stop flag.
    Stop,
}

impl<M> Envelope<M> {
    /// The user's message back, for a failed send.
    fn into_msg(self) -> M {
        match self {
            Envelope::Msg(m) | Envelope::Call(m, _) => m,
            Envelope::Stop => unreachable!("procrt: a stop envelope handed back as a message"),
        }
    }
}

/// What is known about one actor without its message type. The actor's
/// addresses, its proc, the registry and its supervisor share it.
pub(crate) struct Status {
    /// False once the actor's proc has ended (or will never run).
    alive: Cell<bool>,
    /// Set by `Addr::stop`/`Context::stop`: end after the current message.
    stop: Cell<bool>,
    /// The actor's proc, known once spawned.
    id: Cell<Option<ProcId>>,
    /// The proc's name, if it was given one.
    name: Option<Rc<str>>,
    /// Names it is registered under (so its end removes them quickly).
    pub(crate) names: RefCell<Vec<String>>,
}

impl Status {
    /// Whether the actor's proc is still running.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.get()
    }
}

/// What an actor's addresses share: the mailbox's sending half.
struct AddrInner<M> {
    tx: Sender<Envelope<M>>,
    status: Rc<Status>,
    capacity: usize,
}

/// The address of an actor that handles messages of type `M`: a handle
/// that sends to its mailbox.
///
/// Clones are cheap and refer to the same actor. When every clone (and the
/// registry's copy) is dropped, the actor handles what is queued and ends.
/// An `Addr` is neither `Send` nor `Sync`: the actor lives on this thread's
/// runtime. Two addresses are equal when they name the same actor
/// incarnation; a supervisor's restart makes a new one (see the
/// [module docs](crate::actor#supervisors)).
pub struct Addr<M> {
    inner: Rc<AddrInner<M>>,
}

impl<M> Addr<M> {
    /// Sends `msg`. While the mailbox is full, the calling proc parks until
    /// there is room (backpressure, see the [module
    /// docs](crate::actor#a-full-mailbox-backpressure)). Fails, handing
    /// `msg` back, when the actor has ended.
    ///
    /// A message accepted here may still go unhandled: if the actor stops
    /// or panics before it reaches the message, the message is dropped.
    ///
    /// # Panics
    ///
    /// When it would have to park outside a proc.
    pub fn send(&self, msg: M) -> Result<(), SendError<M>> {
        self.inner
            .tx
            .send(Envelope::Msg(msg))
            .map_err(|SendError(e)| SendError(e.into_msg()))
    }

    /// Sends `msg` if the mailbox has room now; never parks. Returns
    /// [`TrySendError::Full`] with the message when the mailbox is full,
    /// and [`TrySendError::Disconnected`] when the actor has ended.
    ///
    /// ```
    /// use procrt::actor::{ActorBuilder, Context};
    /// use procrt::chan::TrySendError;
    ///
    /// procrt::run(|| {
    ///     let (addr, _h) = ActorBuilder::new()
    ///         .capacity(1)
    ///         .spawn((), |_: &mut (), _: u32, _: &Context<u32>| {})
    ///         .unwrap();
    ///     // The actor has not run since: the first message fills its mailbox.
    ///     assert!(addr.try_send(1).is_ok());
    ///     assert_eq!(addr.try_send(2), Err(TrySendError::Full(2)));
    /// });
    /// ```
    pub fn try_send(&self, msg: M) -> Result<(), TrySendError<M>> {
        self.inner
            .tx
            .try_send(Envelope::Msg(msg))
            .map_err(|e| match e {
                TrySendError::Full(e) => TrySendError::Full(e.into_msg()),
                TrySendError::Disconnected(e) => TrySendError::Disconnected(e.into_msg()),
            })
    }

    /// Asks the actor to stop. After this call the actor handles no
    /// further message: an idle actor stops as soon as it runs, and a busy
    /// one stops when it finishes the message it is handling. Either way it
    /// returns its state to its `JoinHandle`, and messages still queued are
    /// dropped unhandled (their calls fail with [`CallError::Gone`]). A
    /// supervisor does not restart an actor that stopped this way. Never
    /// parks; does nothing to an actor that has ended.
    ///
    /// [`CallError::Gone`]: super::CallError::Gone
    pub fn stop(&self) {
        self.inner.status.stop.set(true);
        // Wakes an idle actor. A full mailbox means a busy actor, which
        // looks at the flag before its next message anyway.
        let _ = self.inner.tx.try_send(Envelope::Stop);
    }

    /// True until the actor's proc ends.
    pub fn is_alive(&self) -> bool {
        self.inner.status.is_alive()
    }

    /// The id of the actor's proc.
    pub fn id(&self) -> ProcId {
        self.inner
            .status
            .id
            .get()
            .expect("procrt: actor address used before its proc was spawned")
    }

    /// The actor proc's name, if it was given one (see
    /// [`ActorBuilder::name`]).
    pub fn name(&self) -> Option<&str> {
        self.inner.status.name.as_deref()
    }

    /// The mailbox's capacity.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The mailbox's sending half (for `call`).
    pub(crate) fn sender(&self) -> &Sender<Envelope<M>> {
        &self.inner.tx
    }

    /// The shared status (for the registry and supervisors).
    pub(crate) fn status(&self) -> &Rc<Status> {
        &self.inner.status
    }
}

impl<M> Clone for Addr<M> {
    fn clone(&self) -> Self {
        Addr {
            inner: self.inner.clone(),
        }
    }
}

impl<M> PartialEq for Addr<M> {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<M> Eq for Addr<M> {}

impl<M> fmt::Debug for Addr<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.status;
        f.debug_struct("Addr")
            .field("id", &s.id.get())
            .field("name", &s.name)
            .field("alive", &s.alive.get())
            .finish()
    }
}

/// An address without its message type: what the registry stores and
/// what a supervisor keeps of each child.
pub(crate) trait ErasedAddr {
    /// The actor's status.
    fn status(&self) -> &Rc<Status>;
    /// [`Addr::stop`].
    fn stop(&self);
    /// The `Addr<M>` itself, to downcast.
    fn as_any(&self) -> &dyn Any;
    /// `std::any::type_name` of `M`.
    fn msg_type(&self) -> &'static str;
    /// Another address of the same actor.
    fn clone_box(&self) -> Box<dyn ErasedAddr>;
}

impl<M: 'static> ErasedAddr for Addr<M> {
    fn status(&self) -> &Rc<Status> {
        Addr::status(self)
    }
    fn stop(&self) {
        Addr::stop(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn msg_type(&self) -> &'static str {
        std::any::type_name::<M>()
    }
    fn clone_box(&self) -> Box<dyn ErasedAddr> {
        Box::new(self.clone())
    }
}

/// What a handler gets besides its state and the message: the actor's own
/// identity and a way to stop it.
pub struct Context<M> {
    me: Weak<AddrInner<M>>,
    status: Rc<Status>,
}

impl<M> Context<M> {
    /// The actor's own address, or `None` when no address is left (the
    /// actor is handling the last queued messages before it ends). The
    /// context holds only a weak reference, so an actor never keeps itself
    /// alive. To send to yourself from a handler, use
    /// [`try_send`](Addr::try_send): a `send` to your own full mailbox
    /// would wait forever.
    pub fn addr(&self) -> Option<Addr<M>> {
        self.me.upgrade().map(|inner| Addr { inner })
    }

    /// Ends the actor after this message. Queued messages are dropped
    /// unhandled, and the actor's `JoinHandle` gets its state. A supervisor
    /// does not restart it.
    pub fn stop(&self) {
        self.status.stop.set(true);
    }

    /// True once [`stop`](Self::stop) or [`Addr::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.status.stop.get()
    }

    /// The id of the actor's proc.
    pub fn id(&self) -> ProcId {
        self.status
            .id
            .get()
            .unwrap_or_else(|| crate::current().id())
    }

    /// The actor proc's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.status.name.as_deref()
    }
}

impl<M> fmt::Debug for Context<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.status.id.get())
            .field("name", &self.status.name)
            .finish()
    }
}

/// The receiving half of a mailbox, owned by the actor's proc. Dropping it,
/// however the proc ends (or if the proc never runs), marks the actor dead,
/// closes the mailbox and removes the actor's registered names.
struct Mailbox<M> {
    rx: Option<Receiver<Envelope<M>>>,
    status: Rc<Status>,
}

impl<M> Drop for Mailbox<M> {
    fn drop(&mut self) {
        self.status.alive.set(false);
        // Queued messages are dropped here: requests among them were never
        // taken, so their callers get `Gone`.
        drop(self.rx.take());
        registry::forget(&self.status);
    }
}

/// Marks a request's token *panicked* if the handler unwinds; forgotten
/// when the handler returns.
struct PanicMark<'a>(&'a CallToken);

impl Drop for PanicMark<'_> {
    fn drop(&mut self) {
        self.0.mark_panicked();
    }
}

/// The actor's proc: the mailbox loop.
fn run<S, M, H>(mut state: S, mut handler: H, mailbox: Mailbox<M>, ctx: Context<M>) -> S
where
    H: FnMut(&mut S, M, &Context<M>),
{
    let rx = mailbox.rx.as_ref().expect("procrt: actor mailbox taken");
    while !ctx.status.stop.get() {
        let Ok(envelope) = rx.recv() else {
            // Every address is gone and the mailbox is drained.
            break;
        };
        if ctx.status.stop.get() {
            // Asked to stop while idle: this message goes unhandled too.
            break;
        }
        match envelope {
            Envelope::Msg(m) => handler(&mut state, m, &ctx),
            Envelope::Call(m, token) => {
                // A request whose caller gave up before we got here is
                // dropped unhandled (see "Request/reply" in the module docs).
                if token.take() {
                    let mark = PanicMark(&token);
                    handler(&mut state, m, &ctx);
                    std::mem::forget(mark);
                }
            }
            // The loop condition reads the flag it was sent for.
            Envelope::Stop => {}
        }
    }
    drop(mailbox);
    state
}

/// Spawns an actor with default options ([`ActorBuilder::new`]) and returns
/// its address. The actor's proc is detached. To get its `JoinHandle` (its
/// final state, or its panic), use [`ActorBuilder::spawn`].
///
/// `handler` runs once per message, with the actor's state and its
/// [`Context`]. Annotate the closure's parameter types, as below: the
/// message type is rarely inferred otherwise.
///
/// ```
/// use procrt::actor::{spawn_actor, Context};
/// use std::cell::RefCell;
/// use std::rc::Rc;
///
/// procrt::run(|| {
///     let seen = Rc::new(RefCell::new(Vec::new()));
///     let log = seen.clone();
///     let addr = spawn_actor(0, move |count: &mut u32, word: &'static str, _: &Context<_>| {
///         *count += 1;
///         log.borrow_mut().push(format!("{count}: {word}"));
///     });
///     addr.send("hello").unwrap();
///     addr.send("world").unwrap();
///     procrt::yield_now(); // the actor runs and empties its mailbox
///     assert_eq!(*seen.borrow(), ["1: hello", "2: world"]);
/// });
/// ```
///
/// # Panics
///
/// When the proc cannot be spawned (outside a runtime, or out of stacks);
/// [`ActorBuilder::spawn`] returns the error instead.
pub fn spawn_actor<S, M, H>(state: S, handler: H) -> Addr<M>
where
    S: 'static,
    M: 'static,
    H: FnMut(&mut S, M, &Context<M>) + 'static,
{
    match ActorBuilder::new().spawn(state, handler) {
        Ok((addr, _detached)) => addr,
        Err(e) => panic!("procrt: spawn_actor: {e}"),
    }
}

/// Options for one actor: its proc's name and stack, its mailbox's
/// capacity.
///
/// ```
/// use procrt::actor::{ActorBuilder, Context};
///
/// procrt::run(|| {
///     let (addr, handle) = ActorBuilder::new()
///         .name("summer")
///         .capacity(16)
///         .spawn(0u64, |sum: &mut u64, n: u64, _: &Context<u64>| *sum += n)
///         .unwrap();
///     for n in 1..=10 {
///         addr.send(n).unwrap();
///     }
///     drop(addr); // the last address: the actor drains its mailbox and ends
///     assert_eq!(handle.join().unwrap(), 55);
/// });
/// ```
#[derive(Clone, Debug)]
pub struct ActorBuilder {
    name: Option<Rc<str>>,
    capacity: usize,
    stack_size: Option<usize>,
}

impl Default for ActorBuilder {
    fn default() -> Self {
        ActorBuilder {
            name: None,
            capacity: DEFAULT_CAPACITY,
            stack_size: None,
        }
    }
}

impl ActorBuilder {
    /// Default options: no name, a mailbox of [`DEFAULT_CAPACITY`], the
    /// runtime's first segment size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the actor's proc (shown by [`current`](crate::current), by
    /// [`Addr::name`] and in overflow reports). This is not a registry
    /// name: see [`register`](super::register).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Rc::from(name.into()));
        self
    }

    /// How many messages the mailbox holds before senders park (see the
    /// [module docs](crate::actor#a-full-mailbox-backpressure)). `0` makes
    /// every send a rendezvous with the actor.
    pub fn capacity(mut self, messages: usize) -> Self {
        self.capacity = messages;
        self
    }

    /// The first segment size of the actor's proc (see
    /// [`Builder::stack_size`]).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns the actor. Returns its address and its proc's `JoinHandle`.
    /// The handle gives the final state when the actor ends normally (see
    /// [`spawn_actor`] and the [module docs](crate::actor#life-and-death)),
    /// or the payload when a handler panics. Dropping the handle detaches
    /// the actor.
    ///
    /// Like [`spawn`](crate::spawn), this starts the actor's proc at once.
    /// The proc parks on its empty mailbox, and then this call returns.
    pub fn spawn<S, M, H>(
        self,
        state: S,
        handler: H,
    ) -> Result<(Addr<M>, JoinHandle<S>), SpawnError>
    where
        S: 'static,
        M: 'static,
        H: FnMut(&mut S, M, &Context<M>) + 'static,
    {
        self.spawn_with(move || state, handler)
    }

    /// Like [`spawn`](Self::spawn), but the state is made by `init` inside
    /// the actor's proc, so a panic in `init` is the actor's own (a
    /// supervisor counts it as a crash).
    pub(crate) fn spawn_with<S, M, I, H>(
        self,
        init: I,
        handler: H,
    ) -> Result<(Addr<M>, JoinHandle<S>), SpawnError>
    where
        S: 'static,
        M: 'static,
        I: FnOnce() -> S + 'static,
        H: FnMut(&mut S, M, &Context<M>) + 'static,
    {
        let (tx, rx) = sync_channel(self.capacity);
        let status = Rc::new(Status {
            alive: Cell::new(true),
            stop: Cell::new(false),
            id: Cell::new(None),
            name: self.name.clone(),
            names: RefCell::new(Vec::new()),
        });
        let inner = Rc::new(AddrInner {
            tx,
            status: status.clone(),
            capacity: self.capacity,
        });
        let ctx = Context {
            me: Rc::downgrade(&inner),
            status: status.clone(),
        };
        // Built outside the proc: if the proc never runs, dropping the
        // closure drops this, and the actor is marked dead all the same.
        let mailbox = Mailbox {
            rx: Some(rx),
            status: status.clone(),
        };
        let mut b = Builder::new();
        if let Some(name) = &self.name {
            b = b.name(&**name);
        }
        if let Some(bytes) = self.stack_size {
            b = b.stack_size(bytes);
        }
        let handle = b.spawn(move || {
            let state = init();
            run(state, handler, mailbox, ctx)
        })?;
        status.id.set(Some(handle.id()));
        Ok((Addr { inner }, handle))
    }
}
