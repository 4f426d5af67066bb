//! A backtrace taken on a grown segment reaches the frames below the
//! segment boundary, through `procrt_call_on_segment`, and stops at the
//! proc's base; checked in a child process. (gdb's `bt` across a boundary
//! is checked in `stack_walk.rs`.)

mod util;

use util::{child_role, frame_names, run_child};

/// Runs on the grown segment.
#[inline(never)]
fn above_the_boundary_zq() -> String {
    std::backtrace::Backtrace::force_capture().to_string()
}

/// Runs on the proc's first segment and grows.
#[inline(never)]
fn below_the_boundary_zq() -> String {
    let s = procrt::stack::grow(1 << 20, above_the_boundary_zq);
    std::hint::black_box(s)
}

/// The child: take the backtrace on a grown segment.
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
