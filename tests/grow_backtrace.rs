//! Backtraces taken on a grown segment reach the frames below the segment
//! boundary, through `procrt_call_on_segment`, and stop at the proc's base.
//! Each check runs in a child process (the gdb one stops on a breakpoint).

mod util;

use util::{child_role, gdb_available, run_child, run_under_gdb};

/// Runs on the grown segment.
#[inline(never)]
fn above_the_boundary_zq() -> String {
    if child_role().as_deref() == Some("gdb") {
        // Stop here for gdb's `bt`.
        // SAFETY: int3 raises SIGTRAP, which gdb catches; nothing else.
        unsafe { std::arch::asm!("int3") };
        return String::new();
    }
    std::backtrace::Backtrace::force_capture().to_string()
}

/// Runs on the proc's first segment and grows.
#[inline(never)]
fn below_the_boundary_zq() -> String {
    let s = procrt::stack::grow(1 << 20, above_the_boundary_zq);
    std::hint::black_box(s)
}

/// The child: take the backtrace (or stop for gdb) on a grown segment.
fn child_body() {
    let rt = procrt::Runtime::new().unwrap();
    let bt = rt.block_on(|| {
        let h = procrt::Builder::new()
            .name("grower")
            .spawn(below_the_boundary_zq)
            .unwrap();
        h.join().unwrap()
    });
    println!("BACKTRACE-BEGIN\n{bt}\nBACKTRACE-END");
}

/// Frame names in a `std::backtrace` rendering (`N: name` lines).
fn frame_names(bt: &str) -> Vec<String> {
    bt.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (n, name) = l.split_once(": ")?;
            n.parse::<usize>().ok()?;
            Some(name.to_owned())
        })
        .collect()
}

#[test]
fn backtrace_on_a_grown_segment_includes_frames_below_the_boundary() {
    if child_role().is_some() {
        return child_body();
    }
    let out = run_child(
        "backtrace_on_a_grown_segment_includes_frames_below_the_boundary",
        "bt",
    );
    assert!(out.status.success(), "{}", out.describe());
    let bt = out
        .stdout
        .split("BACKTRACE-BEGIN")
        .nth(1)
        .and_then(|s| s.split("BACKTRACE-END").next())
        .unwrap_or_else(|| panic!("no backtrace printed: {}", out.describe()));
    let names = frame_names(bt);
    let pos = |needle: &str| names.iter().position(|n| n.contains(needle));
    let above = pos("above_the_boundary_zq").unwrap_or_else(|| panic!("no frame above: {bt}"));
    let call = pos("procrt_call_on_segment").unwrap_or_else(|| panic!("no boundary frame: {bt}"));
    let below =
        pos("below_the_boundary_zq").unwrap_or_else(|| panic!("no frame below the boundary: {bt}"));
    assert!(
        above < call && call < below,
        "frames out of order: {names:?}"
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("procrt_proc_entry"),
        "backtrace does not end at the proc's base: {names:?}"
    );
}

#[test]
fn gdb_bt_crosses_the_segment_boundary() {
    if child_role().is_some() {
        return child_body();
    }
    if !gdb_available() {
        eprintln!("gdb not installed: skipping gdb_bt_crosses_the_segment_boundary");
        return;
    }
    let out = run_under_gdb("gdb_bt_crosses_the_segment_boundary", "gdb", &["bt"]);
    let text = format!("{}\n{}", out.stdout, out.stderr);
    let frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    let pos = |needle: &str| frames.iter().position(|l| l.contains(needle));
    let above = pos("above_the_boundary_zq").unwrap_or_else(|| panic!("no frame above: {text}"));
    let below = pos("below_the_boundary_zq").unwrap_or_else(|| panic!("no frame below: {text}"));
    assert!(above < below, "{text}");
    assert!(
        frames
            .last()
            .is_some_and(|l| l.contains("procrt_proc_entry")),
        "bt does not end at procrt_proc_entry: {text}"
    );
    assert!(!text.contains("corrupt stack"), "{text}");
    assert!(!text.contains("Backtrace stopped"), "{text}");
}
