//! Process memory figures read from `/proc/self`.
//!
//! - [`rss_bytes`]: resident set size now, the second field of
//!   `/proc/self/statm` (resident pages) times the page size. Cheap enough
//!   to read before and after spawning many procs.
//! - [`peak_rss_kib`]: the high-water mark of the resident set, `VmHWM` in
//!   `/proc/self/status`, in KiB. It covers the whole process lifetime, which
//!   is why `compare` runs every workload in a child process of its own.

use std::fs;

/// Bytes per page (`sysconf(_SC_PAGESIZE)`), 4096 if it cannot be had.
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes an integer and reads a constant of the system.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Resident set size in bytes now (`/proc/self/statm`, field 2).
pub fn rss_bytes() -> u64 {
    let statm = fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

/// Peak resident set size in KiB (`VmHWM` in `/proc/self/status`); 0 when
/// it cannot be read.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
