//! Channels between procs of one runtime.
//!
//! # Design
//!
//! A channel is a queue shared (`Rc`) by its senders and its one receiver,
//! with the semantics of `std::sync::mpsc` where they overlap, and std's
//! own error types (`SendError`, `RecvError`, `TrySendError`,
//! `TryRecvError`, `RecvTimeoutError`), so code written against std reads
//! the same:
//!
//! - [`channel`] is unbounded: `send` never blocks.
//! - [`sync_channel(n)`](sync_channel) holds at most `n` messages: `send`
//!   parks while it is full. `n = 0` is a rendezvous: `send` parks until the
//!   receiver is waiting for the message.
//! - `recv` parks while the channel is empty. When every sender is gone,
//!   messages already sent are still delivered, then `recv` fails; when the
//!   receiver is gone, `send` fails and hands the message back.
//!
//! Everything runs on one thread, so there are no atomics and no locks: a
//! channel is a `VecDeque` plus the parked procs' [`Unparker`]s (one for the
//! receiver, a FIFO for senders waiting on a full channel). A send to a
//! parked receiver wakes it onto the LIFO front of the run queue, so it is
//! the next proc to run when the sender blocks: a ping-pong costs one
//! switch per message. Switching straight to the receiver inside `send` was
//! measured and rejected: the sender usually has more to do (it will block
//! in its own `recv` in a moment), and switching there costs a second
//! switch per hop of a ring. With it (the sender waiting at the LIFO
//! front), callgrind counted 17% fewer instructions per ping-pong round
//! trip but 12% more per ring hop, and the clock, 9 interleaved runs,
//! medians, said 43.8 -> 58.3 ns per round trip and 45.1 -> 91.2 ns per
//! hop: slower on both.
//!
//! A proc cancelled while parked in a channel (its runtime is dropped)
//! leaves an `Unparker` behind; unparking an ended proc does nothing.
//!
//! Channel handles are neither `Send` nor `Sync`: they connect procs of
//! one runtime.

mod monitor;
mod mpsc;
mod select;

pub use monitor::{monitor, trap_exits};
pub use mpsc::{channel, sync_channel, IntoIter, Iter, Receiver, Sender, TryIter};
pub use select::{ReadyTimeoutError, Select};
pub use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};

use crate::sched::Unparker;
