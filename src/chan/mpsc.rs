//! The channel itself: `Shared` state, `Sender`, `Receiver`.

use super::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError, Unparker};
use crate::sched::{park_resting, rest, rest_until, unparker};
use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What senders and the receiver share.
///
/// # State
/// `queue` holds sent, unreceived messages, oldest first; with a bound `n >
/// 0` it never holds more than `n`. `recv_waiter` is set while the receiver
/// is parked in `recv`; for a rendezvous channel (`n = 0`) a message may be
/// queued only while it is set, and queuing one clears it, so the queue
/// holds at most one message there. `send_waiters` are senders parked on a
/// full (or receiver-less rendezvous) channel, in arrival order.
///
/// # Borrowing
/// A channel lives on one thread (it is neither `Send` nor `Sync`), and
/// every access to `queue` is a single `VecDeque` call (or a `take`) that
/// runs no user code: moving a `T` in or out never calls into `T`, and
/// messages are dropped only after they left the queue. So no borrow of
/// `queue` can overlap another, and `UnsafeCell` replaces a `RefCell`'s
/// flag checks on the hot path. The waiter slot is a `Cell` (taken and put
/// back whole); the senders' wait list, off the hot path, stays a
/// `RefCell`.
struct Shared<T> {
    /// Sent and not yet received.
    queue: UnsafeCell<VecDeque<T>>,
    /// Most messages the queue may hold: `usize::MAX` for an unbounded
    /// channel, 0 for a rendezvous.
    cap: usize,
    /// Live `Sender`s.
    senders: Cell<usize>,
    /// The `Receiver` is alive.
    receiver_alive: Cell<bool>,
    /// The receiver, while it is parked waiting for a message.
    recv_waiter: Cell<Option<Unparker>>,
    /// Senders parked until there is room (or a receiver, for rendezvous).
    send_waiters: RefCell<VecDeque<Unparker>>,
}

impl<T> Shared<T> {
    /// Number of queued messages.
    #[inline(always)]
    fn len(&self) -> usize {
        // SAFETY: a single call that runs no user code (see "Borrowing").
        unsafe { (*self.queue.get()).len() }
    }

    /// Whether the receiver is parked in `recv` (or registered by a select).
    fn receiver_waits(&self) -> bool {
        let w = self.recv_waiter.take();
        let waits = w.is_some();
        self.recv_waiter.set(w);
        waits
    }

    /// Whether a message may be queued now.
    #[inline(always)]
    fn has_room(&self) -> bool {
        if self.cap == 0 {
            self.len() == 0 && self.receiver_waits()
        } else {
            self.len() < self.cap
        }
    }

    /// Queues `t` and wakes the receiver if it waits.
    #[inline(always)]
    fn push(&self, t: T) {
        // SAFETY: a single call that runs no user code (see "Borrowing").
        unsafe { (*self.queue.get()).push_back(t) };
        if let Some(u) = self.recv_waiter.take() {
            u.unpark();
        }
    }

    /// Wakes the sender that waited longest, if any.
    fn wake_one_sender(&self) {
        let waiter = self.send_waiters.borrow_mut().pop_front();
        if let Some(u) = waiter {
            u.unpark();
        }
    }

    /// Wakes every parked sender (the receiver is gone, or room appeared
    /// for a rendezvous), except proc `skip`'s own entries, which stay
    /// queued: a select that waits to send and to receive on the same
    /// rendezvous channel must not wake itself (it would never park).
    fn wake_all_senders(&self, skip: Option<crate::ProcId>) {
        let waiters = std::mem::take(&mut *self.send_waiters.borrow_mut());
        let mut kept = VecDeque::new();
        for u in waiters {
            if Some(u.id()) == skip {
                kept.push_back(u);
            } else {
                u.unpark();
            }
        }
        if !kept.is_empty() {
            self.send_waiters.borrow_mut().extend(kept);
        }
    }

    /// Takes the oldest message, making room for a parked sender.
    #[inline(always)]
    fn pop(&self) -> Option<T> {
        // SAFETY: a single call that runs no user code (see "Borrowing").
        let t = unsafe { (*self.queue.get()).pop_front() }?;
        if self.cap != usize::MAX {
            self.wake_one_sender();
        }
        Some(t)
    }

    /// Takes every queued message out (to be dropped by the caller, after
    /// the queue is no longer borrowed).
    fn take_all(&self) -> VecDeque<T> {
        // SAFETY: a single call that runs no user code (see "Borrowing").
        unsafe { std::mem::take(&mut *self.queue.get()) }
    }
}

/// Unregisters proc `id` as the waiting receiver when dropped, also when
/// unwinding out of `park` (a rendezvous sender must not hand a message to
/// a receiver that no longer waits).
struct StopWaiting<'a, T> {
    shared: &'a Shared<T>,
    id: crate::ProcId,
}

impl<T> Drop for StopWaiting<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        // Usually a sender took the waiter already.
        if let Some(u) = self.shared.recv_waiter.take() {
            if u.id() != self.id {
                self.shared.recv_waiter.set(Some(u));
            }
        }
    }
}

/// Removes proc `id`'s entry from the senders' queue when dropped.
struct Withdraw<'a, T> {
    shared: &'a Shared<T>,
    id: crate::ProcId,
}

impl<T> Drop for Withdraw<'_, T> {
    fn drop(&mut self) {
        let id = self.id;
        self.shared
            .send_waiters
            .borrow_mut()
            .retain(|w| w.id() != id);
    }
}

/// The sending half of a channel. Clone it for more senders.
pub struct Sender<T> {
    shared: Rc<Shared<T>>,
}

/// The receiving half of a channel.
pub struct Receiver<T> {
    shared: Rc<Shared<T>>,
    /// One receiver: not `Sync`, and `recv` takes `&self` like std's.
    _not_sync: PhantomData<Cell<()>>,
}

/// An unbounded channel: `send` never blocks.
///
/// ```
/// use procrt::chan::channel;
/// procrt::run(|| {
///     let (tx, rx) = channel();
///     let producer = procrt::spawn(move || {
///         for i in 0..3 {
///             tx.send(i).unwrap();
///         }
///     })
///     .unwrap();
///     assert_eq!(rx.iter().collect::<Vec<_>>(), [0, 1, 2]);
///     producer.join().unwrap();
/// });
/// ```
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    make(None)
}

/// A channel holding at most `bound` messages: `send` parks while it is
/// full. With `bound == 0` every `send` waits until the receiver is waiting
/// to take the message (a rendezvous).
///
/// ```
/// use procrt::chan::sync_channel;
/// procrt::run(|| {
///     let (tx, rx) = sync_channel(1);
///     let h = procrt::spawn(move || {
///         tx.send(1).unwrap();
///         tx.send(2).unwrap(); // parks until the receiver takes 1
///     })
///     .unwrap();
///     assert_eq!(rx.recv(), Ok(1));
///     assert_eq!(rx.recv(), Ok(2));
///     h.join().unwrap();
/// });
/// ```
pub fn sync_channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    make(Some(bound))
}

fn make<T>(bound: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let cap = bound.unwrap_or(usize::MAX);
    let shared = Rc::new(Shared {
        queue: UnsafeCell::new(VecDeque::with_capacity(bound.unwrap_or(0).min(1024))),
        cap,
        senders: Cell::new(1),
        receiver_alive: Cell::new(true),
        recv_waiter: Cell::new(None),
        send_waiters: RefCell::new(VecDeque::new()),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            _not_sync: PhantomData,
        },
    )
}

impl<T> Sender<T> {
    /// Sends `t`, parking while a bounded channel is full (for a rendezvous
    /// channel, until the receiver waits for it). Fails, giving `t` back,
    /// when the receiver is gone.
    ///
    /// # Panics
    ///
    /// When it would have to park outside a proc.
    #[inline(always)]
    pub fn send(&self, t: T) -> Result<(), SendError<T>> {
        let s = &*self.shared;
        if s.receiver_alive.get() && s.has_room() {
            s.push(t);
            return Ok(());
        }
        self.send_slow(t)
    }

    /// `send` when the channel is full or the receiver gone.
    #[cold]
    #[inline(never)]
    fn send_slow(&self, t: T) -> Result<(), SendError<T>> {
        let s = &*self.shared;
        loop {
            if !s.receiver_alive.get() {
                return Err(SendError(t));
            }
            if s.has_room() {
                s.push(t);
                return Ok(());
            }
            let me = unparker();
            let id = me.id();
            s.send_waiters.borrow_mut().push_back(me);
            // Withdraw when done waiting, also when unwinding out of `park`
            // (the proc was ended by a link or cancelled): a stale entry
            // would swallow a wake-up meant for a sender that still waits.
            let _withdraw = Withdraw { shared: s, id };
            rest();
        }
    }

    /// Sends `t` if that needs no waiting.
    pub fn try_send(&self, t: T) -> Result<(), TrySendError<T>> {
        let s = &*self.shared;
        if !s.receiver_alive.get() {
            Err(TrySendError::Disconnected(t))
        } else if s.has_room() {
            s.push(t);
            Ok(())
        } else {
            Err(TrySendError::Full(t))
        }
    }
}

/// Hooks for `select`: readiness and waiter registration.
impl<T> Sender<T> {
    /// Whether `try_send` would not return `Full` now.
    pub(super) fn send_ready(&self) -> bool {
        let s = &*self.shared;
        !s.receiver_alive.get() || s.has_room()
    }

    /// Parks-to-be: wake `u` when the channel may have room.
    pub(super) fn add_send_waiter(&self, u: Unparker) {
        self.shared.send_waiters.borrow_mut().push_back(u);
    }

    /// Withdraws the waiter of proc `id`.
    pub(super) fn remove_send_waiter(&self, id: crate::ProcId) {
        self.shared
            .send_waiters
            .borrow_mut()
            .retain(|w| w.id() != id);
    }

    /// A select that may have been woken for room here took another case:
    /// pass the wake-up on to the next parked sender, so the room is not
    /// left unused while a sender sleeps.
    pub(super) fn pass_on_room(&self) {
        if self.shared.has_room() && self.shared.receiver_alive.get() {
            self.shared.wake_one_sender();
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        let s = &self.shared;
        s.senders.set(s.senders.get() + 1);
        Sender { shared: s.clone() }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let s = &*self.shared;
        let n = s.senders.get() - 1;
        s.senders.set(n);
        if n == 0 {
            // The receiver learns the channel is disconnected.
            if let Some(u) = s.recv_waiter.take() {
                u.unpark();
            }
        }
    }
}

impl<T> Receiver<T> {
    /// Receives the oldest message, parking while the channel is empty.
    /// Fails once the channel is empty and every sender is gone.
    ///
    /// # Panics
    ///
    /// When it would have to park outside a proc.
    #[inline]
    pub fn recv(&self) -> Result<T, RecvError> {
        match self.shared.pop() {
            Some(t) => Ok(t),
            None => self.recv_slow(),
        }
    }

    /// `recv` when the channel is empty: park until a message or the last
    /// sender's drop.
    #[inline(never)]
    fn recv_slow(&self) -> Result<T, RecvError> {
        let s = &*self.shared;
        loop {
            if s.senders.get() == 0 {
                return Err(RecvError);
            }
            park_resting(|me| self.wait_as(me));
            if let Some(t) = s.pop() {
                return Ok(t);
            }
        }
    }

    /// Receives a message if one is there.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let s = &*self.shared;
        match s.pop() {
            Some(t) => Ok(t),
            None if s.senders.get() == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Like [`recv`](Self::recv), but waits at most `timeout`.
    ///
    /// # Panics
    ///
    /// When it would have to park outside a proc.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.recv_deadline(deadline),
            None => self
                .recv()
                .map_err(|RecvError| RecvTimeoutError::Disconnected),
        }
    }

    /// Like [`recv`](Self::recv), but waits at most until `deadline`.
    ///
    /// # Panics
    ///
    /// When it would have to park outside a proc.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        let s = &*self.shared;
        loop {
            if let Some(t) = s.pop() {
                return Ok(t);
            }
            if s.senders.get() == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            if Instant::now() >= deadline {
                // No longer waiting: a rendezvous sender must not hand over.
                drop(s.recv_waiter.take());
                return Err(RecvTimeoutError::Timeout);
            }
            let _waiting = self.wait();
            rest_until(deadline);
        }
    }

    /// Registers the calling proc as the waiting receiver; a rendezvous
    /// channel now has room, so parked senders are told.
    #[must_use = "the receiver stops counting as waiting when this is dropped"]
    fn wait(&self) -> StopWaiting<'_, T> {
        self.wait_as(unparker())
    }

    /// `wait` with the calling proc's unparker at hand.
    #[inline(always)]
    fn wait_as(&self, me: Unparker) -> StopWaiting<'_, T> {
        let s = &*self.shared;
        let id = me.id();
        drop(s.recv_waiter.replace(Some(me)));
        if s.cap == 0 {
            s.wake_all_senders(Some(id));
        }
        StopWaiting { shared: s, id }
    }

    /// Whether `try_recv` would not return `Empty` now.
    pub(super) fn recv_ready(&self) -> bool {
        let s = &*self.shared;
        s.len() != 0 || s.senders.get() == 0
    }

    /// Registers the calling proc as the waiting receiver (see `wait`).
    pub(super) fn add_recv_waiter(&self) {
        // The select withdraws itself (`remove_recv_waiter`), also when
        // unwinding.
        std::mem::forget(self.wait());
    }

    /// Withdraws the waiting receiver.
    pub(super) fn remove_recv_waiter(&self) {
        drop(self.shared.recv_waiter.take());
    }

    /// An iterator that receives until the channel is disconnected.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// An iterator over the messages there now, without waiting.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.receiver_alive.set(false);
        drop(s.recv_waiter.take());
        // Senders fail from now on; unreceived messages are dropped.
        s.wake_all_senders(None);
        drop(s.take_all());
    }
}

/// Receives until the channel is disconnected; see [`Receiver::iter`].
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

/// The messages there now; see [`Receiver::try_iter`].
pub struct TryIter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// Receives until the channel is disconnected, owning the receiver.
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}
