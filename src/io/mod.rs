//! Blocking I/O that parks procs, not the thread: the epoll reactor under
//! the scheduler, and [`GreenFd`], which makes any fd wait for readiness
//! by parking. Sockets are in [`net`](crate::net).
//!
//! A proc that reads a socket with nothing to read parks; the others keep
//! running; when nothing is runnable the runtime sleeps in `epoll_wait`
//! until an fd is ready, a timer is due or another thread sends work (see
//! [`Handle`](crate::Handle)). Calls with no readiness to wait on (files,
//! DNS, foreign libraries) go to [`spawn_blocking`](crate::spawn_blocking).
//!
//! The reactor's design note is in `src/io/driver.rs`; the scheduler's side
//! (when it polls, when it sleeps) in `src/sched/driver.rs`.

mod driver;
mod fd;
pub(crate) mod source;

pub(crate) use driver::{syscall, Dir, Reactor};
pub use fd::GreenFd;
