//! Helpers shared by the integration tests.
//!
//! Tests that end the process (a stack overflow, a stray pointer, a
//! breakpoint under gdb) re-run the test binary itself in a child process:
//! the parent calls [`run_child`] with the test's own name and a *role*; the
//! child finds the role in [`CHILD_ENV`] (see [`child_role`]), does the
//! dangerous thing, and the parent checks how the child died and what it
//! printed.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::cell::Cell;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::rc::Rc;

/// Environment variable that tells a re-run test binary which role to play.
pub(crate) const CHILD_ENV: &str = "PROCRT_TEST_CHILD";

/// `SIGTRAP`, `SIGABRT` and `SIGSEGV` on Linux (x86 and x86_64). `libc` is
/// not a dev-dependency, so the numbers are spelled out here.
pub(crate) const SIGTRAP: i32 = 5;
pub(crate) const SIGABRT: i32 = 6;
pub(crate) const SIGSEGV: i32 = 11;

/// The role this process was started to play, if it is a child made by
/// [`run_child`] or [`run_under_gdb`].
pub(crate) fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// How a child process ended and what it printed.
#[derive(Debug)]
pub(crate) struct ChildOutput {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Everything it wrote to stdout.
    pub(crate) stdout: String,
    /// Everything it wrote to stderr.
    pub(crate) stderr: String,
}

impl ChildOutput {
    /// The signal that killed the child, if one did.
    pub(crate) fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// A description for assertion messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "child {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// The libtest arguments that run exactly the test `test_name`, alone, on
/// one thread, with its output shown.
fn exact_test_args(test_name: &str) -> [&str; 4] {
    [test_name, "--exact", "--nocapture", "--test-threads=1"]
}

/// Re-runs this test binary in a child process with only the test
/// `test_name` selected and [`CHILD_ENV`] set to `role`, and waits for it.
pub(crate) fn run_child(test_name: &str, role: &str) -> ChildOutput {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(exact_test_args(test_name))
        .env(CHILD_ENV, role)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("cannot start the test binary as a child process");
    ChildOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether a `gdb` can be started.
pub(crate) fn gdb_available() -> bool {
    Command::new("gdb")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Like [`run_child`], but the child runs under `gdb -batch`, which runs it
/// until it stops (a signal such as `SIGTRAP`) and then executes each of
/// `commands` (`bt`, ...). gdb's own output is in `stdout`.
pub(crate) fn run_under_gdb(test_name: &str, role: &str, commands: &[&str]) -> ChildOutput {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new("gdb");
    cmd.arg("-nx")
        .arg("-batch")
        .args(["-iex", "set debuginfod enabled off"])
        .args(["-iex", "set auto-load safe-path /"])
        .args(["-ex", "set pagination off"])
        .args(["-ex", "set print thread-events off"])
        .args(["-ex", "run"]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    // Do not leave the child behind when gdb leaves.
    cmd.args(["-ex", "kill"]);
    cmd.arg("--args").arg(exe).args(exact_test_args(test_name));
    let out = cmd
        .env(CHILD_ENV, role)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("cannot start gdb");
    ChildOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Counts its own drops in a shared cell: tells whether the destructors of
/// a proc's values ran, and how many times.
pub(crate) struct DropCounter(pub Rc<Cell<usize>>);

impl DropCounter {
    /// A counter that adds one to `count` when dropped.
    pub(crate) fn new(count: &Rc<Cell<usize>>) -> Self {
        DropCounter(count.clone())
    }
}

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// The function names of a formatted std backtrace, innermost first
/// (frames print as `  N: name`, locations as `at file:line`).
pub(crate) fn frame_names(bt: &str) -> Vec<String> {
    bt.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (n, name) = l.split_once(": ")?;
            n.parse::<usize>().ok()?;
            Some(name.trim().to_owned())
        })
        .collect()
}
