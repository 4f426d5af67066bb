//! Supervisors: one-for-one restarts of transient children, with a limit
//! on restart intensity.

use super::addr::{ActorBuilder, Context, ErasedAddr};
use super::registry::{self, RegisterError};
use crate::chan::{channel, Receiver, RecvTimeoutError, Sender};
use crate::{Builder, JoinError, JoinHandle, ProcId, SpawnError};
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Waits for one incarnation's proc to end.
type Join = Box<dyn FnOnce() -> Result<(), JoinError>>;

/// Starts one incarnation of a child.
type StartFn = dyn Fn(ActorBuilder) -> Result<(Box<dyn ErasedAddr>, Join), SpawnError>;

/// How to start, and restart, one child of a [`Supervisor`]: a name (under
/// which each incarnation is registered), a function that makes a fresh
/// state, and the handler.
///
/// Each incarnation runs `init()` inside its own proc, so a panic in
/// `init` counts as a crash of the child. Each incarnation also gets its
/// own clone of `handler`.
pub struct ChildSpec {
    name: String,
    builder: ActorBuilder,
    start: Box<StartFn>,
}

impl ChildSpec {
    /// A child named `name`, started from `init()` with `handler`. The
    /// child's proc has the same name.
    pub fn new<S, M, I, H>(name: impl Into<String>, init: I, handler: H) -> ChildSpec
    where
        S: 'static,
        M: 'static,
        I: Fn() -> S + 'static,
        H: FnMut(&mut S, M, &Context<M>) + Clone + 'static,
    {
        let name = name.into();
        let init = Rc::new(init);
        let start = move |b: ActorBuilder| -> Result<(Box<dyn ErasedAddr>, Join), SpawnError> {
            let init = init.clone();
            let (addr, handle) = b.spawn_with(move || init(), handler.clone())?;
            let join: Join = Box::new(move || handle.join().map(drop));
            Ok((Box::new(addr), join))
        };
        ChildSpec {
            builder: ActorBuilder::new().name(name.clone()),
            name,
            start: Box::new(start),
        }
    }

    /// The child's mailbox capacity (see [`ActorBuilder::capacity`]).
    pub fn capacity(mut self, messages: usize) -> Self {
        self.builder = self.builder.capacity(messages);
        self
    }

    /// The first segment size of the child's proc (see
    /// [`ActorBuilder::stack_size`]).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.builder = self.builder.stack_size(bytes);
        self
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}

/// Why a supervisor ended, or could not start, with an error.
#[derive(Debug)]
pub enum SupervisorError {
    /// A child crashed once more after `max_restarts` restarts within
    /// `period`, so the supervisor stopped every child and ended.
    GaveUp {
        /// The child whose crash exceeded the limit.
        child: String,
        /// The limit: restarts allowed within `period`.
        max_restarts: u32,
        /// The sliding window of the limit.
        period: Duration,
        /// How that last crash ended the child's proc (its panic payload).
        cause: JoinError,
    },
    /// A proc could not be spawned: a child, a child's watcher, or (with the
    /// supervisor's own name as `child`) the supervisor itself.
    Spawn {
        /// The child's name.
        child: String,
        /// Why.
        error: SpawnError,
    },
    /// A child's name is registered to another live actor.
    Name {
        /// The child's name.
        child: String,
        /// Why.
        error: RegisterError,
    },
    /// The supervisor's own proc panicked or was cancelled (its runtime
    /// was dropped).
    Supervisor(JoinError),
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::GaveUp {
                child,
                max_restarts,
                period,
                cause,
            } => write!(
                f,
                "supervisor gave up: child {child:?} crashed again after {max_restarts} \
                 restarts within {period:?} ({cause})"
            ),
            SupervisorError::Spawn { child, error } => {
                write!(f, "supervisor could not spawn {child:?}: {error}")
            }
            SupervisorError::Name { child, error } => {
                write!(f, "supervisor could not register {child:?}: {error}")
            }
            SupervisorError::Supervisor(e) => write!(f, "supervisor proc failed: {e}"),
        }
    }
}

impl std::error::Error for SupervisorError {}

/// Settings and children of a one-for-one supervisor (see the [module
/// docs](crate::actor#supervisors)); [`spawn`](Supervisor::spawn) starts it.
///
/// ```
/// use procrt::actor::{whereis, ChildSpec, Context, Supervisor};
/// use std::time::Duration;
///
/// fn worker(count: &mut u32, msg: &'static str, _: &Context<&'static str>) {
///     *count += 1;
///     if msg == "crash" {
///         panic!("worker crashed after {count} messages");
///     }
/// }
///
/// procrt::run(|| {
///     let sup = Supervisor::new()
///         .max_restarts(2)
///         .period(Duration::from_secs(1))
///         .child(ChildSpec::new("worker", || 0u32, worker))
///         .spawn()
///         .unwrap();
///     for _ in 0..2 {
///         let w = whereis::<&'static str>("worker").unwrap();
///         w.send("crash").unwrap();
///         procrt::yield_now(); // the worker crashes, the supervisor restarts it
///     }
///     assert_eq!(sup.restarts(), 2);
///     // A third crash within the period is one too many.
///     whereis::<&'static str>("worker").unwrap().send("crash").unwrap();
///     let err = sup.join().unwrap_err();
///     assert!(err.to_string().contains("gave up"), "{err}");
///     assert!(whereis::<&'static str>("worker").is_none());
/// });
/// ```
#[derive(Debug)]
pub struct Supervisor {
    name: String,
    max_restarts: u32,
    period: Duration,
    shutdown_timeout: Duration,
    children: Vec<ChildSpec>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            name: "supervisor".to_owned(),
            max_restarts: 3,
            period: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            children: Vec::new(),
        }
    }
}

impl Supervisor {
    /// No children; at most 3 restarts within 5 s; 5 s for children to stop
    /// when the supervisor shuts down.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the supervisor's proc (default `"supervisor"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The most restarts allowed within any [`period`](Self::period). The
    /// crash after that many gives up. `0` gives up at the first crash.
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }

    /// The sliding window of the restart-intensity limit.
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// How long a shutdown waits for children to end. A child whose handler
    /// does not return within this time (it is stuck in a long wait) is
    /// left running, detached; it stops after its current message.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Adds a child. Children start in the order they were added.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }

    /// Starts every child and registers it under its name, then spawns the
    /// supervisor's proc. When this returns `Ok`, every child is running
    /// and can be found with [`whereis`](super::whereis). If a child cannot
    /// be started, the children started already are stopped and the error
    /// is returned.
    ///
    /// The supervisor ends in three cases. [`SupervisorHandle::stop`] makes
    /// it stop its children and end with `Ok`. Its last child ending
    /// normally also ends it with `Ok`. Giving up ends it with
    /// [`SupervisorError::GaveUp`]. Dropping the handle detaches the
    /// supervisor, which runs on.
    pub fn spawn(self) -> Result<SupervisorHandle, SupervisorError> {
        let (events_tx, events) = channel();
        let restarts = Rc::new(Cell::new(0));
        let mut sup = Sup {
            max_restarts: self.max_restarts,
            period: self.period,
            shutdown_timeout: self.shutdown_timeout,
            children: self
                .children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    generation: 0,
                    running: None,
                })
                .collect(),
            events,
            events_tx: events_tx.clone(),
            restarts: restarts.clone(),
            recent: VecDeque::new(),
        };
        // On an error `sup` is dropped, which stops the children started.
        for index in 0..sup.children.len() {
            sup.start(index)?;
        }
        let name = self.name;
        let join = Builder::new()
            .name(name.clone())
            .spawn(move || sup.run())
            .map_err(|error| SupervisorError::Spawn { child: name, error })?;
        Ok(SupervisorHandle {
            join,
            events: events_tx,
            restarts,
        })
    }
}

/// A running supervisor: its restart count, a way to stop it, and its end.
pub struct SupervisorHandle {
    join: JoinHandle<Result<(), SupervisorError>>,
    events: Sender<Event>,
    restarts: Rc<Cell<u64>>,
}

impl SupervisorHandle {
    /// Restarts so far, over all children.
    pub fn restarts(&self) -> u64 {
        self.restarts.get()
    }

    /// Asks the supervisor to stop its children (in reverse start order),
    /// wait for them (up to its shutdown timeout), and end with `Ok`.
    /// Never parks.
    pub fn stop(&self) {
        let _ = self.events.send(Event::Stop);
    }

    /// True once the supervisor's proc has ended.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// The supervisor's proc.
    pub fn id(&self) -> ProcId {
        self.join.id()
    }

    /// Waits for the supervisor to end and returns how it ended.
    ///
    /// # Panics
    ///
    /// When called outside a proc while the supervisor runs.
    pub fn join(self) -> Result<(), SupervisorError> {
        self.join
            .join()
            .unwrap_or_else(|e| Err(SupervisorError::Supervisor(e)))
    }
}

impl fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("id", &self.join.id())
            .field("restarts", &self.restarts.get())
            .finish()
    }
}

/// What reaches the supervisor's proc.
enum Event {
    /// A watcher saw incarnation `generation` of child `index` end.
    Exit {
        index: usize,
        generation: u64,
        outcome: Result<(), JoinError>,
    },
    /// `SupervisorHandle::stop`.
    Stop,
}

/// One child: its spec and its current incarnation.
struct Child {
    spec: ChildSpec,
    /// Incarnations started so far; a watcher's report names one.
    generation: u64,
    /// The current incarnation's address, while it runs.
    running: Option<Box<dyn ErasedAddr>>,
}

/// The supervisor's state, owned by its proc.
struct Sup {
    max_restarts: u32,
    period: Duration,
    shutdown_timeout: Duration,
    children: Vec<Child>,
    events: Receiver<Event>,
    /// For the watchers.
    events_tx: Sender<Event>,
    restarts: Rc<Cell<u64>>,
    /// Times of the restarts within the last `period`, oldest first.
    recent: VecDeque<Instant>,
}

impl Sup {
    /// Starts a new incarnation of child `index`: spawns it, registers it,
    /// spawns its watcher.
    fn start(&mut self, index: usize) -> Result<(), SupervisorError> {
        let events = self.events_tx.clone();
        let child = &mut self.children[index];
        child.generation += 1;
        let generation = child.generation;
        let name = &child.spec.name;
        let (addr, join) = (child.spec.start)(child.spec.builder.clone()).map_err(|error| {
            SupervisorError::Spawn {
                child: name.clone(),
                error,
            }
        })?;
        // A child whose `init` panicked is dead already; its watcher
        // reports the crash.
        if addr.status().is_alive() {
            if let Err(error) = registry::register_erased(name, addr.clone_box()) {
                addr.stop();
                return Err(SupervisorError::Name {
                    child: name.clone(),
                    error,
                });
            }
        }
        let watcher = Builder::new()
            .name(format!("{name} watcher"))
            .spawn(move || {
                let outcome = join();
                let _ = events.send(Event::Exit {
                    index,
                    generation,
                    outcome,
                });
            });
        if let Err(error) = watcher {
            addr.stop();
            return Err(SupervisorError::Spawn {
                child: name.clone(),
                error,
            });
        }
        child.running = Some(addr);
        Ok(())
    }

    /// The supervisor's proc.
    fn run(mut self) -> Result<(), SupervisorError> {
        loop {
            let Ok(event) = self.events.recv() else {
                // Unreachable: `self.events_tx` keeps the channel open.
                return Ok(());
            };
            let (index, outcome) = match event {
                Event::Stop => {
                    self.shutdown();
                    return Ok(());
                }
                Event::Exit {
                    index,
                    generation,
                    outcome,
                } => {
                    let child = &mut self.children[index];
                    if child.generation != generation || child.running.is_none() {
                        continue; // a report about an incarnation replaced already
                    }
                    child.running = None;
                    (index, outcome)
                }
            };
            match outcome {
                // Transient children: a normal end is not restarted (nor
                // is a cancellation: the runtime is going away).
                Ok(()) | Err(JoinError::Cancelled) => {
                    if self.children.iter().all(|c| c.running.is_none()) {
                        return Ok(());
                    }
                }
                Err(cause) => {
                    let now = Instant::now();
                    while self
                        .recent
                        .front()
                        .is_some_and(|&t| now.duration_since(t) >= self.period)
                    {
                        self.recent.pop_front();
                    }
                    if self.recent.len() >= self.max_restarts as usize {
                        self.shutdown();
                        return Err(SupervisorError::GaveUp {
                            child: self.children[index].spec.name.clone(),
                            max_restarts: self.max_restarts,
                            period: self.period,
                            cause,
                        });
                    }
                    self.recent.push_back(now);
                    self.restarts.set(self.restarts.get() + 1);
                    if let Err(e) = self.start(index) {
                        self.shutdown();
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Stops every running child, youngest first, and waits for them to
    /// end, at most `shutdown_timeout`.
    fn shutdown(&mut self) {
        for c in self.children.iter().rev() {
            if let Some(addr) = &c.running {
                addr.stop();
            }
        }
        let deadline = Instant::now().checked_add(self.shutdown_timeout);
        while self.children.iter().any(|c| c.running.is_some()) {
            let event = match deadline {
                Some(d) => self.events.recv_deadline(d),
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(Event::Exit {
                    index, generation, ..
                }) => {
                    let c = &mut self.children[index];
                    if c.generation == generation {
                        c.running = None;
                    }
                }
                Ok(Event::Stop) => {}
                Err(_) => break,
            }
        }
    }
}

impl Drop for Sup {
    /// A supervisor that ends, however it ends, leaves no child running
    /// that it started (those stuck past the shutdown timeout stop after
    /// their current message).
    fn drop(&mut self) {
        for c in self.children.iter().rev() {
            if let Some(addr) = &c.running {
                addr.stop();
            }
        }
    }
}
