//! `spawn_blocking`: run a blocking function on a thread pool while the
//! calling proc parks.
//!
//! # Design
//!
//! One process-wide pool of at most [`MAX_THREADS`] OS threads, started
//! lazily: a job goes to an idle worker if there is one, else to a new
//! worker while there are fewer than `MAX_THREADS`, else it waits in the
//! pool's FIFO queue. A worker idle for [`KEEP_ALIVE`] exits. The job runs
//! `f` under `catch_unwind`, stores the outcome in a slot shared with the
//! caller, and wakes the caller through its runtime's injection queue (a
//! [`RemoteUnparker`](super::remote::RemoteUnparker)); the caller parks
//! until the slot is filled and resumes a panic of `f` as its own.
//!
//! The pool is shared by every runtime of the process (like tokio's
//! blocking pool, which a runtime owns; here runtimes are many and small).
//! The `Handle` a job holds keeps its runtime from reporting a deadlock
//! while the job runs.
//!
//! Rejected: a thread per call (unbounded threads under load); running `f`
//! inline when the pool is busy (it would block every proc).

use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Most worker threads alive at once.
pub(crate) const MAX_THREADS: usize = 16;

/// A worker idle this long exits.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A queued job.
type Job = Box<dyn FnOnce() + Send>;

/// The pool's state, under its mutex.
struct PoolState {
    /// Jobs not yet taken by a worker.
    queue: VecDeque<Job>,
    /// Workers alive.
    threads: usize,
    /// Workers waiting for a job.
    idle: usize,
}

/// The process-wide blocking pool.
struct Pool {
    /// Queue and counts.
    state: Mutex<PoolState>,
    /// Signalled when a job is queued.
    work: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(PoolState {
            queue: VecDeque::new(),
            threads: 0,
            idle: 0,
        }),
        work: Condvar::new(),
    })
}

impl Pool {
    /// Queues `job`, starting a worker if none is idle and the pool has
    /// room. Fails only if no worker exists and none can be started.
    fn submit(&'static self, job: Job) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.queue.push_back(job);
        if st.idle > 0 {
            self.work.notify_one();
            return Ok(());
        }
        if st.threads >= MAX_THREADS {
            return Ok(());
        }
        let spawned = std::thread::Builder::new()
            .name("procrt-blocking".into())
            .spawn(move || self.work_loop());
        match spawned {
            Ok(_) => {
                st.threads += 1;
                Ok(())
            }
            Err(e) if st.threads == 0 => {
                st.queue.pop_back();
                Err(e)
            }
            // The running workers will get to it.
            Err(_) => Ok(()),
        }
    }

    /// A worker: runs jobs until idle for KEEP_ALIVE.
    fn work_loop(&'static self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                job();
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout(st, KEEP_ALIVE)
                .unwrap_or_else(|e| e.into_inner());
            st = next;
            st.idle -= 1;
            if timeout.timed_out() && st.queue.is_empty() {
                st.threads -= 1;
                return;
            }
        }
    }
}

/// Runs `f` on a pool thread and parks the calling proc until it returns;
/// returns its value. Other procs run meanwhile. A panic in `f` is resumed
/// in the caller. Outside a proc, `f` simply runs on the calling thread.
///
/// Use it for calls that block the thread and have no readiness to wait
/// on: file system calls, DNS lookups, CPU-heavy work, foreign libraries.
/// At most 16 run at once (process-wide); more wait in a
/// queue.
///
/// ```
/// let n = procrt::run(|| procrt::spawn_blocking(|| std::fs::read_dir(".").unwrap().count()));
/// assert!(n > 0);
/// ```
///
/// # Panics
///
/// When no pool thread exists and none can be started (the message names
/// the OS error), and as `f` panics.
pub fn spawn_blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if crate::try_current().is_none() {
        return f();
    }
    type Slot<R> = Arc<Mutex<Option<std::thread::Result<R>>>>;
    let slot: Slot<R> = Arc::new(Mutex::new(None));
    let waker = super::remote::remote_unparker();
    let theirs = slot.clone();
    let job = Box::new(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        *theirs.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        waker.unpark();
    });
    if let Err(e) = pool().submit(job) {
        panic!("procrt: spawn_blocking cannot start a pool thread: {e}");
    }
    loop {
        if let Some(r) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return r.unwrap_or_else(|p| resume_unwind(p));
        }
        super::park();
    }
}
