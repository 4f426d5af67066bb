//! Errors of the public API.

use crate::sched::ExitReason;
use std::any::Any;
use std::fmt;

/// Why a proc could not be spawned. Nothing is lost: the closure is dropped
/// and the runtime keeps running.
#[derive(Debug)]
pub struct SpawnError {
    kind: SpawnErrorKind,
}

/// The reason inside a [`SpawnError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnErrorKind {
    /// The stack reservation has no free block of the size asked for.
    PoolExhausted {
        /// Bytes of address space reserved for stacks.
        reserved: usize,
        /// Bytes of it in live segments.
        live: usize,
        /// Segment size asked for.
        requested: usize,
    },
    /// The kernel refused another guard page: the process reached
    /// `vm.max_map_count` mappings.
    MapLimit {
        /// Segments live when the kernel refused.
        live_segments: usize,
    },
    /// A segment larger than the pool can ever hold was asked for.
    StackTooLarge {
        /// Segment size asked for.
        requested: usize,
    },
    /// The runtime is being dropped and takes no new procs.
    ShuttingDown,
    /// `spawn` was called outside any runtime.
    NoRuntime,
    /// Another system call failed.
    Os(String),
}

impl SpawnError {
    pub(crate) fn new(kind: SpawnErrorKind) -> Self {
        SpawnError { kind }
    }

    /// The reason.
    pub fn kind(&self) -> &SpawnErrorKind {
        &self.kind
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SpawnErrorKind::PoolExhausted { reserved, live, requested } => write!(
                f,
                "stack pool exhausted: no free {requested}-byte segment in a {reserved}-byte \
                 reservation ({live} bytes live); raise Builder::reservation or use smaller segments"
            ),
            SpawnErrorKind::MapLimit { live_segments } => write!(
                f,
                "the kernel refused another guard page with {live_segments} guarded segments live \
                 (vm.max_map_count reached; each guarded segment costs two mappings): raise \
                 vm.max_map_count, keep fewer procs alive, or build the runtime unguarded"
            ),
            SpawnErrorKind::StackTooLarge { requested } => {
                write!(f, "a {requested}-byte stack segment is larger than the pool can hold")
            }
            SpawnErrorKind::ShuttingDown => write!(f, "the runtime is shutting down"),
            SpawnErrorKind::NoRuntime => {
                write!(f, "spawn called outside a procrt runtime (use Runtime::block_on)")
            }
            SpawnErrorKind::Os(e) => write!(f, "system call failed: {e}"),
        }
    }
}

impl std::error::Error for SpawnError {}

/// Why [`JoinHandle::join`](crate::JoinHandle::join) has no value.
pub enum JoinError {
    /// The proc panicked; this is the payload it panicked with.
    Panicked(Box<dyn Any + Send + 'static>),
    /// The runtime was dropped before the proc finished: it was unwound (or
    /// never started) and its destructors ran.
    Cancelled,
    /// A linked proc ended abnormally and this proc did not trap exits: it
    /// was unwound at its next blocking point (or never started) and its
    /// destructors ran. The reason is [`ExitReason::Linked`]; see
    /// [`link`](crate::link).
    Exited(ExitReason),
}

impl JoinError {
    /// True when the proc panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }

    /// True when the proc was cancelled by the runtime's drop.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// True when the proc was ended by an exit signal from a linked proc.
    pub fn is_exited(&self) -> bool {
        matches!(self, JoinError::Exited(_))
    }

    /// The panic's message, when the payload is a string (as `panic!`
    /// makes it).
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            JoinError::Panicked(p) => payload_str(&**p),
            JoinError::Cancelled | JoinError::Exited(_) => None,
        }
    }

    /// The panic payload, to pass to `std::panic::resume_unwind`.
    ///
    /// # Panics
    ///
    /// If the proc was cancelled or exited rather than panicked.
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self {
            JoinError::Panicked(p) => p,
            JoinError::Cancelled => panic!("JoinError::into_panic on a cancelled proc"),
            JoinError::Exited(_) => panic!("JoinError::into_panic on an exited proc"),
        }
    }
}

/// The text of a panic payload made by `panic!`, if it is one.
pub(crate) fn payload_str(p: &(dyn Any + Send)) -> Option<&str> {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        Some(s)
    } else {
        p.downcast_ref::<String>().map(|s| s.as_str())
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => match self.panic_message() {
                Some(m) => write!(f, "Panicked({m:?})"),
                None => write!(f, "Panicked(..)"),
            },
            JoinError::Cancelled => write!(f, "Cancelled"),
            JoinError::Exited(r) => write!(f, "Exited({r:?})"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => match self.panic_message() {
                Some(m) => write!(f, "proc panicked: {m}"),
                None => write!(f, "proc panicked"),
            },
            JoinError::Cancelled => write!(f, "proc cancelled: its runtime was dropped"),
            JoinError::Exited(r) => write!(f, "proc exited: {r}"),
        }
    }
}

impl std::error::Error for JoinError {}

/// Why a runtime could not be built.
#[derive(Debug)]
pub struct BuildError {
    msg: String,
}

impl BuildError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        BuildError { msg: msg.into() }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for BuildError {}
