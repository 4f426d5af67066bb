//! The code-unit fixtures (`units/*`, `cdylib`s) for `procrt::toc`, built
//! for the target this binary was built for, and a way to run a test in a
//! fresh process (the TOC registry is process-wide, and each test wants its
//! own `counter`).
//!
//! The units are built with the `cargo` that built this binary, in release
//! mode, into `<target dir>/toc-units` (a target directory of their own, so
//! that the build neither waits for the lock of the outer `cargo test` nor
//! disturbs its fingerprints).

// Each user uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The fixture packages.
pub(crate) const UNITS: &[&str] = &[
    "unit-counter-v1",
    "unit-counter-v2",
    "unit-counter-badsig",
    "unit-counter-layout",
    "unit-counter-migrate",
    "unit-app",
];

/// Set in a child process to the directory the parent built the units in.
const DIR_ENV: &str = "PROCRT_TOC_UNITS_DIR";

/// The target triple to build the units for, if not the host's.
fn triple() -> Option<&'static str> {
    if cfg!(target_arch = "x86") {
        Some("i686-unknown-linux-gnu")
    } else {
        None
    }
}

/// Builds the units (once per process) and returns their directory.
pub(crate) fn units_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os(DIR_ENV) {
            return PathBuf::from(d);
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("toc-units");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root)
            .args(["build", "--release", "--quiet", "--target-dir"])
            .arg(&target)
            .stdin(Stdio::null());
        for u in UNITS {
            cmd.args(["-p", u]);
        }
        if let Some(t) = triple() {
            cmd.args(["--target", t]);
        }
        let status = cmd
            .status()
            .expect("cannot run cargo to build the toc units");
        assert!(
            status.success(),
            "building the toc fixture units failed: {status}"
        );
        match triple() {
            Some(t) => target.join(t).join("release"),
            None => target.join("release"),
        }
    })
}

/// The library of the fixture package `pkg` (e.g. `unit-counter-v1`).
pub(crate) fn unit(pkg: &str) -> PathBuf {
    units_dir().join(format!("lib{}.so", pkg.replace('-', "_")))
}

/// Runs `body` in a fresh process: this test binary re-run with only the
/// test `name` selected. In that child, runs `body`; in the parent, builds
/// the units, starts the child, and fails unless it succeeded.
pub(crate) fn isolated(name: &str, body: impl FnOnce()) {
    const ROLE: &str = "PROCRT_TOC_CHILD";
    if std::env::var_os(ROLE).is_some_and(|r| r == name) {
        body();
        return;
    }
    let dir = units_dir();
    let out = Command::new(std::env::current_exe().expect("current_exe"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, name)
        .env(DIR_ENV, dir)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start the test binary as a child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child for {name} failed: {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
}

/// Like [`isolated`], for a body that must end the process: returns the
/// child's exit status and stderr.
pub(crate) fn isolated_crash(
    name: &str,
    body: impl FnOnce(),
) -> Option<(std::process::ExitStatus, String)> {
    const ROLE: &str = "PROCRT_TOC_CHILD";
    if std::env::var_os(ROLE).is_some_and(|r| r == name) {
        body();
        return None;
    }
    let dir = units_dir();
    let out = Command::new(std::env::current_exe().expect("current_exe"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, name)
        .env(DIR_ENV, dir)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("cannot start the test binary as a child process");
    Some((
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
