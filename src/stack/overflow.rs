//! Reporting a stack overflow: a `SIGSEGV` handler on an alternate stack.
//!
//! # Design
//!
//! A proc that runs past the bottom of a guarded segment touches the
//! `PROT_NONE` page below it and the kernel raises `SIGSEGV`. The handler
//! runs on an alternate signal stack (the proc's own stack has no room left),
//! asks the scheduler's [`Reporter`] whether the faulting address is the
//! guard page of the running proc's segment, and if so writes one line
//! naming the proc and its segment size to stderr and aborts. Any other
//! fault is passed to the handler that was installed before ours (std's,
//! which reports overflows of the thread's own stack), or to the default
//! action.
//!
//! The handler only reads thread-locals with constant initialisers (a plain
//! `%fs`-relative load), formats into a buffer on its own stack and calls
//! `write(2)` and `abort(3)`: all async-signal-safe.
//!
//! The stack layer does not know what a proc is; the scheduler registers a
//! [`Reporter`] (one process-wide function pointer) that does.

use std::cell::UnsafeCell;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

/// Called by the handler with the faulting address. Writes a description of
/// the overflow into `out` and returns the number of bytes written when the
/// address is the guard page of the running proc; returns `None` otherwise.
/// Must be async-signal-safe: no allocation, no locks.
pub(crate) type Reporter = fn(fault_addr: usize, out: &mut [u8]) -> Option<usize>;

/// The registered [`Reporter`], as a `usize` (0: none).
static REPORTER: AtomicUsize = AtomicUsize::new(0);

/// The `sigaction` that was installed before ours.
struct PrevAction(UnsafeCell<libc::sigaction>);
// SAFETY: written once inside `INSTALL.call_once`, before our handler is
// installed; only read afterwards.
unsafe impl Sync for PrevAction {}

// SAFETY: an all-zero sigaction is a valid value (SIG_DFL, empty mask).
static PREV: PrevAction = PrevAction(UnsafeCell::new(unsafe { std::mem::zeroed() }));
static INSTALL: Once = Once::new();

/// Size of the alternate signal stack we install on threads that have none.
const ALT_STACK_SIZE: usize = 64 * 1024;

/// Registers the function that recognises a guard-page hit.
pub(crate) fn set_reporter(r: Reporter) {
    REPORTER.store(r as usize, Ordering::Release);
}

/// Installs the `SIGSEGV` handler (once per process) and makes sure the
/// calling thread has an alternate signal stack.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: 1. a zeroed sigaction is valid; we fill in the fields we
        // use. 2. PREV is written before our handler is live, so the handler
        // never reads it half-written.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGSEGV, &sa, PREV.0.get());
        }
    });
    ensure_alt_stack();
}

/// Gives the calling thread an alternate signal stack if it has none (std
/// gives its own threads one; a thread made some other way may lack it).
fn ensure_alt_stack() {
    // SAFETY: 1. sigaltstack with a null new stack only reads the current
    // one. 2. The new stack is a fresh mapping we never free: a thread's
    // alternate stack must outlive every signal it may take.
    unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut old) != 0 {
            return;
        }
        if old.ss_flags & libc::SS_DISABLE == 0 {
            return;
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return;
        }
        let st = libc::stack_t {
            ss_sp: p,
            ss_flags: 0,
            ss_size: ALT_STACK_SIZE,
        };
        libc::sigaltstack(&st, std::ptr::null_mut());
    }
}

/// The `SIGSEGV` handler.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let r = REPORTER.load(Ordering::Acquire);
    if r != 0 {
        // SAFETY: REPORTER only ever holds a `Reporter` stored by
        // `set_reporter`.
        let report: Reporter = unsafe { std::mem::transmute::<usize, Reporter>(r) };
        let mut buf = [0u8; 512];
        if let Some(n) = report(addr, &mut buf) {
            // SAFETY: write(2) and abort(3) are async-signal-safe; `buf[..n]`
            // is initialised.
            unsafe {
                libc::write(2, buf.as_ptr().cast(), n.min(buf.len()));
                libc::abort();
            }
        }
    }
    // Not ours: hand it to the previous handler.
    // SAFETY: PREV was fully written before this handler was installed.
    let prev = unsafe { &*PREV.0.get() };
    if prev.sa_sigaction == libc::SIG_DFL || prev.sa_sigaction == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction
        // runs again and the kernel ends the process the ordinary way.
        // SAFETY: resetting a signal's action to SIG_DFL is always valid.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it
        // has this signature; we pass it the arguments we were given.
        unsafe {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(prev.sa_sigaction);
            f(sig, info, ctx);
        }
    } else {
        // SAFETY: a handler installed without SA_SIGINFO takes the signal
        // number only.
        unsafe {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev.sa_sigaction);
            f(sig);
        }
    }
}

/// A `fmt::Write`-like cursor over a fixed buffer, for the signal handler:
/// never allocates, silently truncates.
pub(crate) struct SignalBuf<'a> {
    /// The buffer.
    buf: &'a mut [u8],
    /// Bytes written so far.
    len: usize,
}

impl<'a> SignalBuf<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        SignalBuf { buf, len: 0 }
    }
    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl std::fmt::Write for SignalBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut rest = &mut self.buf[self.len..];
        let n = rest.write(s.as_bytes()).unwrap_or(0);
        self.len += n;
        Ok(())
    }
}
