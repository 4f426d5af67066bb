//! Green sockets: TCP and unix-domain streams, listeners and datagrams
//! whose blocking calls park the calling proc.
//!
//! Each type wraps its `std::net` / `std::os::unix::net` counterpart, made
//! non-blocking, in the I/O layer's readiness machinery (`io/source.rs`):
//! a call that would block parks the proc until epoll says the socket is
//! ready, then retries. The API follows std's: [`Read`](std::io::Read) and
//! [`Write`](std::io::Write) (also on `&T`), `shutdown`, `peer_addr`,
//! read and write timeouts (here they fail with
//! [`TimedOut`](std::io::ErrorKind::TimedOut); std on Unix says
//! `WouldBlock`), `AsFd`, `From<OwnedFd>`, and conversions from the std
//! types. Dropping a socket deregisters it and closes it.
//!
//! Outside any proc these types still work: a call that would block
//! blocks the thread in `poll(2)`.
//!
//! ```
//! use procrt::net::{TcpListener, TcpStream};
//! use std::io::{Read, Write};
//!
//! procrt::run(|| {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let server = procrt::spawn(move || {
//!         let (mut s, _) = listener.accept().unwrap();
//!         let mut buf = [0; 4];
//!         s.read_exact(&mut buf).unwrap();
//!         s.write_all(&buf).unwrap();
//!     })
//!     .unwrap();
//!     let mut c = TcpStream::connect(addr).unwrap();
//!     c.write_all(b"ping").unwrap();
//!     let mut buf = [0; 4];
//!     c.read_exact(&mut buf).unwrap();
//!     assert_eq!(&buf, b"ping");
//!     server.join().unwrap();
//! });
//! ```
//!
//! # Running out of file descriptors
//!
//! `accept` failing with `EMFILE` or `ENFILE` (or `ENOBUFS`/`ENOMEM`)
//! returns that error, and the listener backs off: its next `accept` first
//! waits 1 ms, doubling per consecutive failure up to 100 ms, so an accept
//! loop that logs and retries does not spin while the process is out of
//! fds. The pending connection stays in the backlog; the first success
//! resets the backoff.

mod sys;
mod tcp;
mod unix;

pub use tcp::{TcpListener, TcpStream};
pub use unix::{UnixDatagram, UnixListener, UnixStream};

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

/// First wait after an accept ran out of fds.
const BACKOFF_MIN: Duration = Duration::from_millis(1);
/// Longest wait between accepts while out of fds.
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// The accept backoff of a listener (see "Running out of file
/// descriptors").
#[derive(Debug, Default)]
struct Backoff {
    /// No accept before this.
    until: Cell<Option<Instant>>,
    /// The last wait; zero after a success.
    step: Cell<Duration>,
}

impl Backoff {
    /// Waits out the backoff, or until `deadline` (`TimedOut`).
    fn before(&self, deadline: Option<Instant>) -> io::Result<()> {
        let Some(until) = self.until.get() else {
            return Ok(());
        };
        let end = deadline.map_or(until, |d| d.min(until));
        if crate::try_current().is_some() {
            crate::sleep_until(end);
        } else {
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
        }
        if deadline.is_some_and(|d| d < until) {
            return Err(crate::io::source::timed_out());
        }
        self.until.set(None);
        Ok(())
    }

    /// Records the outcome of an accept.
    fn after<T>(&self, r: &io::Result<T>) {
        match r {
            Ok(_) => self.step.set(Duration::ZERO),
            Err(e) if is_out_of_fds(e) => {
                let step = (self.step.get() * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                self.step.set(step);
                self.until.set(Instant::now().checked_add(step));
            }
            Err(_) => {}
        }
    }
}

/// Whether `e` says the process or system is out of fds or socket memory.
fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
