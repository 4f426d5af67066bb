//! Starting nodes and connecting them: worker processes over socketpairs,
//! listeners on unix socket paths, and the credential check.
//!
//! # Design
//!
//! *Workers.* [`spawn_worker`] starts a node as a new process with
//! `posix_spawn`: no `fork` of a process that may have threads (a
//! `spawn_blocking` pool, a test harness), and nothing runs in the child
//! before `exec`. The child gets one end of a `SOCK_SEQPACKET` socketpair
//! as fd 3 (the file action `dup2` clears its close-on-exec flag; every
//! other procrt fd is close-on-exec) and two environment variables:
//! `PROCRT_NODE_ROLE`, the role the parent asked for, and
//! `PROCRT_NODE_FD=3`. The program, usually the parent's own binary run
//! again with the same arguments, asks [`role`] at the top of `main` and,
//! in a worker, calls [`connect_parent`] inside its runtime to get its
//! [`Link`] to the parent. A [`Worker`] handle can wait for the process
//! (parking on a pidfd, so the node keeps running) or kill it; dropping it
//! kills and reaps the process, so no worker outlives its handle as an
//! orphan or a zombie.
//!
//! *Listeners.* [`listen`] binds a `SOCK_SEQPACKET` socket to a filesystem
//! path, or to an abstract name when the path starts with `@`, for nodes
//! that start separately; [`connect`] reaches it. Before a connection
//! becomes a link, the listener reads the peer's credentials
//! (`SO_PEERCRED`, recorded by the kernel at `connect`) and checks them
//! against its [`Trust`] policy: by default, the same uid as this process.
//! A refused peer is disconnected before a single byte is read, and
//! `accept` returns `PermissionDenied` for it; the listener goes on.

use super::link::{establish, Link, LinkConfig};
use super::sys::{peer_cred, seqpacket_pair};
use crate::io::GreenFd;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment variable that names a worker's role.
pub const ROLE_ENV: &str = "PROCRT_NODE_ROLE";
/// The environment variable that names the fd of a worker's link.
pub const FD_ENV: &str = "PROCRT_NODE_FD";
/// The fd a worker's link arrives on.
const CHILD_FD: RawFd = 3;
/// How long a handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The role this process was started with by [`spawn_worker`], or `None`
/// in a process that is not a worker.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// Whether `connect_parent` has taken the inherited fd.
static PARENT_TAKEN: AtomicBool = AtomicBool::new(false);

/// In a worker: the link to the node that started it. Call it once,
/// inside the worker's runtime, after exporting the worker's ports: the
/// parent may send to them as soon as the handshake is done, and a message
/// for a port not yet exported is dropped.
///
/// # Errors
///
/// `NotFound` when this process is not a worker, `AlreadyExists` on a
/// second call, or the handshake's error.
pub fn connect_parent() -> io::Result<Link> {
    let fd: RawFd = std::env::var(FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "not a procrt worker (no PROCRT_NODE_FD)",
            )
        })?;
    if PARENT_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "connect_parent was called already",
        ));
    }
    // The fd must be a socket; anything else means a broken environment.
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `ty`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 || ty != libc::SOCK_SEQPACKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} from {FD_ENV} is not a SEQPACKET socket"),
        ));
    }
    // SAFETY: the parent gave us this fd for our exclusive use (PARENT_TAKEN
    // makes sure it is wrapped once); it is an open socket (checked above).
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    establish(sock, LinkConfig::default(), HANDSHAKE)
}

/// A worker node started by [`spawn_worker`].
#[derive(Debug)]
pub struct Worker {
    link: Link,
    pid: libc::pid_t,
    /// Readable once the process has exited (Linux 5.3+); `None` where
    /// pidfds are missing, and `wait` then polls.
    pidfd: Option<GreenFd<OwnedFd>>,
    /// The exit status, once reaped.
    status: std::cell::Cell<Option<i32>>,
}

/// Starts a worker node: this program again, with the same arguments, and
/// `role` in its environment (see the module docs). Returns once the
/// worker's runtime has answered the handshake.
///
/// # Errors
///
/// When the process cannot be started, or does not call
/// [`connect_parent`] within 10 seconds.
pub fn spawn_worker(role: &str) -> io::Result<Worker> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    spawn_worker_with(&exe, &args, role)
}

/// Starts `program` with `args` as a worker node with `role`.
///
/// # Errors
///
/// As [`spawn_worker`].
pub fn spawn_worker_with(
    program: &Path,
    args: &[impl AsRef<OsStr>],
    role: &str,
) -> io::Result<Worker> {
    let (mine, theirs) = seqpacket_pair()?;
    let cstr = |s: &OsStr| {
        CString::new(s.as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in an argument"))
    };
    let prog = cstr(program.as_os_str())?;
    let mut argv = vec![prog.clone()];
    for a in args {
        argv.push(cstr(a.as_ref())?);
    }
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k == ROLE_ENV || k == FD_ENV {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(CString::new(kv).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in the environment")
        })?);
    }
    envp.push(cstr(OsStr::new(&format!("{ROLE_ENV}={role}")))?);
    envp.push(cstr(OsStr::new(&format!("{FD_ENV}={CHILD_FD}")))?);
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|c| c.as_ptr() as *mut _).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut libc::c_char> = envp.iter().map(|c| c.as_ptr() as *mut _).collect();
    envp_p.push(std::ptr::null_mut());

    // dup2 of an fd onto itself keeps its close-on-exec flag: make sure the
    // source is not fd 3 already.
    let theirs = if theirs.as_raw_fd() == CHILD_FD {
        theirs.try_clone()?
    } else {
        theirs
    };
    let mut pid: libc::pid_t = 0;
    // SAFETY: the file-actions object is initialized before use and
    // destroyed after; argv/envp are NULL-terminated arrays of pointers to
    // live NUL-terminated strings (`argv`, `envp` outlive the call).
    let r = unsafe {
        let mut fa = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        let e = libc::posix_spawn_file_actions_init(fa.as_mut_ptr());
        if e != 0 {
            return Err(io::Error::from_raw_os_error(e));
        }
        let mut r =
            libc::posix_spawn_file_actions_adddup2(fa.as_mut_ptr(), theirs.as_raw_fd(), CHILD_FD);
        if r == 0 {
            r = libc::posix_spawn(
                &mut pid,
                prog.as_ptr(),
                fa.as_ptr(),
                std::ptr::null(),
                argv_p.as_ptr(),
                envp_p.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(fa.as_mut_ptr());
        r
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    drop(theirs);
    // SAFETY: pidfd_open has no memory arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = (pidfd >= 0).then(|| {
        // SAFETY: a non-negative pidfd_open result is a fresh fd we own.
        GreenFd::new(unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) })
    });
    let w = Worker {
        link: match establish(mine, LinkConfig::default(), HANDSHAKE) {
            Ok(l) => l,
            Err(e) => {
                // SAFETY: kill and waitpid on our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        },
        pid,
        pidfd,
        status: std::cell::Cell::new(None),
    };
    Ok(w)
}

impl Worker {
    /// The link to the worker.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The worker's process id (also its [`NodeId`](super::NodeId)).
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Sends `SIGKILL` to the worker (if it was not reaped yet).
    pub fn kill(&self) -> io::Result<()> {
        if self.status.get().is_some() {
            return Ok(());
        }
        // SAFETY: kill has no memory arguments; the pid is our unreaped
        // child, so it cannot have been reused.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reaps the worker without waiting: `Some(status)` once it exited.
    pub fn try_wait(&self) -> io::Result<Option<std::process::ExitStatus>> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(s) = self.status.get() {
            return Ok(Some(std::process::ExitStatus::from_raw(s)));
        }
        let mut st = 0;
        // SAFETY: waitpid writes the status into `st`.
        let r = unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) };
        match r {
            0 => Ok(None),
            r if r == self.pid => {
                self.status.set(Some(st));
                Ok(Some(std::process::ExitStatus::from_raw(st)))
            }
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Parks until the worker exits and returns its status; other procs
    /// run meanwhile.
    ///
    /// # Panics
    ///
    /// Outside a proc.
    pub fn wait(&self) -> io::Result<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            match &self.pidfd {
                Some(fd) => fd.wait_readable(None)?,
                None => crate::sleep(Duration::from_millis(5)),
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.status.get().is_none() {
            let _ = self.kill();
            let mut st = 0;
            // SAFETY: reaping our own child; after SIGKILL this returns
            // promptly.
            unsafe { libc::waitpid(self.pid, &mut st, 0) };
        }
    }
}

/// Whom a listener accepts, by the credentials the kernel records for the
/// connecting process.
pub enum Trust {
    /// Processes of the same user as this one (the default).
    SameUid,
    /// Processes of this user.
    Uid(u32),
    /// Any process that can reach the socket (its file permissions, or
    /// the abstract namespace's network namespace, are then the only
    /// guard).
    Anyone,
    /// Whatever the function accepts, given the peer's (pid, uid, gid).
    Custom(Box<dyn Fn(u32, u32, u32) -> bool>),
}

impl Trust {
    fn allows(&self, c: &libc::ucred) -> bool {
        match self {
            // SAFETY: getuid has no preconditions.
            Trust::SameUid => c.uid == unsafe { libc::getuid() },
            Trust::Uid(u) => c.uid == *u,
            Trust::Anyone => true,
            Trust::Custom(f) => f(c.pid as u32, c.uid, c.gid),
        }
    }
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::SameUid => write!(f, "SameUid"),
            Trust::Uid(u) => write!(f, "Uid({u})"),
            Trust::Anyone => write!(f, "Anyone"),
            Trust::Custom(_) => write!(f, "Custom(..)"),
        }
    }
}

/// A `sockaddr_un` for `path` (`@name`: the abstract namespace).
fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { MaybeUninit::zeroed().assume_init() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    let (abstract_ns, name) = match bytes.first() {
        Some(b'@') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    // Abstract names start with a NUL; paths end with one.
    if name.len() + 1 > a.sun_path.len() || name.is_empty() || (!abstract_ns && name.contains(&0)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad unix socket path {path:?}"),
        ));
    }
    let off = usize::from(abstract_ns);
    for (i, b) in name.iter().enumerate() {
        a.sun_path[off + i] = *b as libc::c_char;
    }
    let base = std::mem::size_of::<libc::sa_family_t>();
    let len = if abstract_ns {
        base + 1 + name.len()
    } else {
        base + name.len() + 1
    };
    Ok((a, len as libc::socklen_t))
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket has no memory arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Accepts links from nodes that [`connect`] to its path.
#[derive(Debug)]
pub struct NodeListener {
    fd: GreenFd<OwnedFd>,
    trust: Trust,
    config: LinkConfig,
}

/// Listens for nodes on `path` (a filesystem path, or `@name` for the
/// abstract namespace). Trusts the same uid; see [`NodeListener::trust`].
pub fn listen(path: impl AsRef<Path>) -> io::Result<NodeListener> {
    let fd = seqpacket_socket()?;
    let (a, len) = sockaddr(path.as_ref())?;
    // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen has no memory arguments.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NodeListener {
        fd: GreenFd::new(fd),
        trust: Trust::SameUid,
        config: LinkConfig::default(),
    })
}

impl NodeListener {
    /// Sets whom to accept.
    pub fn trust(mut self, t: Trust) -> Self {
        self.trust = t;
        self
    }

    /// Sets the limits of accepted links.
    pub fn link_config(mut self, c: LinkConfig) -> Self {
        self.config = c;
        self
    }

    /// Parks until a node connects, checks its credentials, and makes the
    /// link.
    ///
    /// # Errors
    ///
    /// `PermissionDenied` for a peer the trust policy refuses (it is
    /// disconnected; call `accept` again for the next), a handshake
    /// error, or the `accept4` error.
    pub fn accept(&self) -> io::Result<Link> {
        let sock = self.fd.read_with(|l| {
            // SAFETY: accept4 with null address arguments.
            let fd = unsafe {
                libc::accept4(
                    l.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh fd we own.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })?;
        let cred = peer_cred(sock.as_fd())?;
        if !self.trust.allows(&cred) {
            eprintln!(
                "procrt: refused a node connection from pid {} (uid {}, gid {}): not trusted ({:?})",
                cred.pid, cred.uid, cred.gid, self.trust
            );
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("peer pid {} uid {} is not trusted", cred.pid, cred.uid),
            ));
        }
        establish(sock, self.config, HANDSHAKE)
    }
}

/// Connects to a node listening on `path`. While the listener's backlog
/// is full, retries (every millisecond, parking in between) for up to the
/// handshake timeout.
pub fn connect(path: impl AsRef<Path>) -> io::Result<Link> {
    let (a, len) = sockaddr(path.as_ref())?;
    let deadline = std::time::Instant::now() + HANDSHAKE;
    loop {
        let fd = seqpacket_socket()?;
        // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
        let r =
            unsafe { libc::connect(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) };
        if r == 0 {
            return establish(fd, LinkConfig::default(), HANDSHAKE);
        }
        let e = io::Error::last_os_error();
        // A unix socket's non-blocking connect does not go on in the
        // background: EAGAIN means the backlog is full, try again.
        if e.raw_os_error() != Some(libc::EAGAIN) || std::time::Instant::now() >= deadline {
            return Err(e);
        }
        crate::sleep(Duration::from_millis(1));
    }
}
