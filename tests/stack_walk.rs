//! Walking a proc's stack: std's backtrace and gdb's `bt` see the proc's
//! own frames and stop cleanly at `procrt_proc_entry`, the first frame of
//! every proc (its CFI marks the return address undefined).

mod util;

use std::backtrace::Backtrace;
use util::{frame_names, run_under_gdb, SIGTRAP};

#[inline(never)]
fn stack_walk_marker_inner() -> String {
    let bt = Backtrace::force_capture();
    std::hint::black_box(format!("{bt}"))
}

#[inline(never)]
fn stack_walk_marker_outer() -> String {
    let s = stack_walk_marker_inner();
    std::hint::black_box(s)
}

/// Whether this test binary carries debug info for its own functions.
fn has_debug_info() -> bool {
    let bt = format!("{}", Backtrace::force_capture());
    bt.contains("stack_walk.rs")
}

#[test]
fn backtrace_in_a_proc_ends_at_proc_entry() {
    if !has_debug_info() {
        println!("no debug info in this build: symbol names cannot be checked");
        return;
    }
    let bt = procrt::run(|| {
        let h = procrt::spawn(|| {
            procrt::yield_now();
            stack_walk_marker_outer()
        })
        .unwrap();
        h.join().unwrap()
    });
    let names = frame_names(&bt);
    let pos = |needle: &str| names.iter().position(|n| n.contains(needle));
    let inner = pos("stack_walk_marker_inner").unwrap_or_else(|| panic!("no inner frame:\n{bt}"));
    let outer = pos("stack_walk_marker_outer").unwrap_or_else(|| panic!("no outer frame:\n{bt}"));
    let main = pos("proc_main").unwrap_or_else(|| panic!("no proc_main frame:\n{bt}"));
    assert!(inner < outer && outer < main, "frames out of order:\n{bt}");
    let last = names.last().unwrap();
    assert!(
        last.contains("procrt_proc_entry"),
        "the walk did not end at procrt_proc_entry (last frame {last:?}):\n{bt}"
    );
    // Nothing of the scheduler's stack (block_on, the test harness) is
    // reached from a proc's stack.
    assert!(
        pos("block_on").is_none(),
        "walked off the proc's stack:\n{bt}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.contains("procrt_proc_entry"))
            .count(),
        1,
        "{bt}"
    );
}

#[test]
fn backtrace_in_the_root_proc_ends_at_proc_entry() {
    if !has_debug_info() {
        println!("no debug info in this build: symbol names cannot be checked");
        return;
    }
    let bt = procrt::run(stack_walk_marker_outer);
    let names = frame_names(&bt);
    assert!(
        names.iter().any(|n| n.contains("stack_walk_marker_inner")),
        "{bt}"
    );
    assert!(
        names
            .last()
            .is_some_and(|n| n.contains("procrt_proc_entry")),
        "{bt}"
    );
}

#[test]
fn backtrace_crosses_a_grown_segment_to_proc_entry() {
    if !has_debug_info() {
        println!("no debug info in this build: symbol names cannot be checked");
        return;
    }
    // The inner marker runs on a second segment (a 1 MiB grow never fits the
    // first); the walk must cross back to the outer frames on the first.
    let (bt, segments) = procrt::run(|| {
        procrt::spawn(grow_walk_marker_outer)
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(segments, 2, "the inner marker did not run on a new segment");
    let names = frame_names(&bt);
    let pos = |needle: &str| names.iter().position(|n| n.contains(needle));
    let inner = pos("grow_walk_marker_inner").unwrap_or_else(|| panic!("no inner frame:\n{bt}"));
    let outer = pos("grow_walk_marker_outer").unwrap_or_else(|| panic!("no outer frame:\n{bt}"));
    assert!(inner < outer, "{bt}");
    assert!(pos("proc_main").is_some_and(|m| m > outer), "{bt}");
    assert!(
        names
            .last()
            .is_some_and(|n| n.contains("procrt_proc_entry")),
        "the walk did not end at procrt_proc_entry:\n{bt}"
    );
}

#[inline(never)]
fn grow_walk_marker_inner() -> (String, usize) {
    let segments = procrt::stack::usage().unwrap().segments;
    let bt = format!("{}", Backtrace::force_capture());
    std::hint::black_box((bt, segments))
}

#[inline(never)]
fn grow_walk_marker_outer() -> (String, usize) {
    let r = procrt::stack::grow(1 << 20, grow_walk_marker_inner);
    std::hint::black_box(r)
}

const GDB_ROLE: &str = "gdb-trap";

#[inline(never)]
fn gdb_marker_trap() {
    // SAFETY: int3 raises SIGTRAP; this only runs under gdb, which stops
    // the process there and never resumes it.
    unsafe { std::arch::asm!("int3", options(nomem, nostack)) };
    std::hint::black_box(());
}

#[inline(never)]
fn gdb_marker_caller() {
    gdb_marker_trap();
    std::hint::black_box(());
}

#[inline(never)]
fn gdb_marker_grower() {
    procrt::stack::grow(1 << 20, gdb_marker_caller);
    std::hint::black_box(());
}

/// The child's part of the gdb tests: a proc calls `entry`, which traps.
fn gdb_child(entry: fn()) {
    procrt::run(move || {
        procrt::Builder::new()
            .name("traced")
            .spawn(move || {
                procrt::yield_now();
                entry();
            })
            .unwrap()
            .join()
            .unwrap()
    });
    println!("child: survived the trap");
}

/// Runs `test` under gdb as the child playing `role`, takes `bt` at the
/// trap, and checks it lists `markers` innermost first and ends cleanly at
/// `procrt_proc_entry`. Returns false when gdb is missing.
fn check_gdb_backtrace(test: &str, role: &str, markers: &[&str]) -> bool {
    if !util::gdb_available() {
        println!("{test}: skipped, no gdb on PATH");
        return false;
    }
    if !has_debug_info() {
        println!("no debug info in this build: symbol names cannot be checked");
        return false;
    }
    let out = run_under_gdb(test, role, &["bt"]);
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert!(
        text.contains("SIGTRAP"),
        "the child did not stop at the trap (signal {SIGTRAP}): {}",
        out.describe()
    );
    let frames: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with('#')).collect();
    let mut last_pos = None;
    for m in markers {
        let p = frames
            .iter()
            .position(|f| f.contains(m))
            .unwrap_or_else(|| panic!("no frame {m}: {}", out.describe()));
        assert!(
            last_pos < Some(p),
            "frame {m} out of order: {}",
            out.describe()
        );
        last_pos = Some(p);
    }
    let last = frames.last().copied().unwrap_or_default();
    assert!(
        last.contains("procrt_proc_entry"),
        "gdb's bt did not end at procrt_proc_entry (last {last:?}): {}",
        out.describe()
    );
    assert!(
        !text.contains("previous frame inner to this frame"),
        "{}",
        out.describe()
    );
    assert!(!text.contains("corrupt stack"), "{}", out.describe());
    assert!(!text.contains("Backtrace stopped"), "{}", out.describe());
    true
}

#[test]
fn gdb_backtrace_in_a_proc_ends_at_proc_entry() {
    if util::child_role().as_deref() == Some(GDB_ROLE) {
        return gdb_child(gdb_marker_caller);
    }
    check_gdb_backtrace(
        "gdb_backtrace_in_a_proc_ends_at_proc_entry",
        GDB_ROLE,
        &["gdb_marker_trap", "gdb_marker_caller", "proc_main"],
    );
}

#[test]
fn gdb_backtrace_crosses_a_grown_segment() {
    const ROLE: &str = "gdb-trap-grown";
    if util::child_role().as_deref() == Some(ROLE) {
        return gdb_child(gdb_marker_grower);
    }
    check_gdb_backtrace(
        "gdb_backtrace_crosses_a_grown_segment",
        ROLE,
        &[
            "gdb_marker_trap",
            "gdb_marker_caller",
            "gdb_marker_grower",
            "proc_main",
        ],
    );
}
