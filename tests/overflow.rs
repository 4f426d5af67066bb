//! A proc that overflows its guarded segment ends the process with a line
//! naming it; any other fault is not reported as an overflow. Each crash
//! happens in a child process (this test binary, re-run with a role).

mod util;

use procrt::{spawn, Builder, Runtime};
use util::{run_child, ChildOutput, SIGABRT, SIGSEGV};

/// Recurses without bound, half a KiB of stack per frame. The frame's
/// buffer is written and passed to `black_box`, and the call is not in tail
/// position, so no optimiser can shrink it to a loop.
#[inline(never)]
fn dive(depth: usize) -> usize {
    let mut buf = [0u8; 512];
    buf[depth % 512] = depth as u8;
    std::hint::black_box(&mut buf);
    if std::hint::black_box(depth) == usize::MAX {
        return 0;
    }
    dive(depth + 1) + buf[(depth * 7) % 512] as usize
}

/// Runs `body` when this process is the child playing `role`; then returns
/// `None` (the child must have died in `body`; if it gets here the parent
/// sees a clean exit and fails). Otherwise runs the child and returns what
/// it did.
fn in_child(test: &str, role: &str, body: impl FnOnce()) -> Option<ChildOutput> {
    if util::child_role().as_deref() == Some(role) {
        body();
        println!("child: survived");
        return None;
    }
    Some(run_child(test, role))
}

/// The id the child printed on stdout as `id=#N`.
fn printed_id(out: &ChildOutput) -> String {
    out.stdout
        .lines()
        // libtest may print "test name ... " before it on the same line.
        .find_map(|l| l.split_once("id=").map(|(_, id)| id.trim()))
        .unwrap_or_else(|| panic!("child printed no id: {}", out.describe()))
        .to_owned()
}

#[test]
fn overflow_names_the_proc() {
    let Some(out) = in_child("overflow_names_the_proc", "overflow-named", || {
        procrt::run(|| {
            let h = Builder::new()
                .name("deep-diver")
                .stack_size(16 * 1024)
                .spawn(|| {
                    println!("id={}", procrt::current().id());
                    dive(0)
                })
                .unwrap();
            h.join().unwrap()
        });
    }) else {
        return;
    };
    assert_eq!(out.signal(), Some(SIGABRT), "{}", out.describe());
    let id = printed_id(&out);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("stack overflow in proc "))
        .unwrap_or_else(|| panic!("no overflow report: {}", out.describe()));
    assert!(
        line.starts_with("procrt: stack overflow in proc #"),
        "{line}"
    );
    assert!(line.contains(&format!("proc {id} 'deep-diver'")), "{line}");
    assert!(line.contains("guard page hit at 0x"), "{line}");
    assert!(line.contains("below its 16384-byte segment"), "{line}");
    assert!(line.contains("bytes usable)"), "{line}");
    assert!(line.ends_with("aborting"), "{line}");
    // The usable bytes are fewer than the segment: the guard page and the
    // header come off it.
    let usable: usize = line
        .split(" (")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no usable byte count in {line}"));
    assert!(usable > 0 && usable < 16 * 1024 - 4096 + 1, "{line}");
    // Reported once, and by procrt rather than std.
    assert_eq!(
        out.stderr.matches("stack overflow in proc").count(),
        1,
        "{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("has overflowed its stack"),
        "{}",
        out.describe()
    );
}

#[test]
fn overflow_of_an_unnamed_proc_gives_its_id() {
    let Some(out) = in_child(
        "overflow_of_an_unnamed_proc_gives_its_id",
        "overflow-unnamed",
        || {
            let rt = Runtime::builder()
                .first_segment_size(32 * 1024)
                .build()
                .unwrap();
            rt.block_on(|| {
                // A few procs alive around it, so that the one that overflows is
                // not the only candidate.
                let _others: Vec<_> = (0..4).map(|_| spawn(procrt::park).unwrap()).collect();
                let h = spawn(|| {
                    println!("id={}", procrt::current().id());
                    dive(0)
                })
                .unwrap();
                h.join().unwrap()
            });
        },
    ) else {
        return;
    };
    assert_eq!(out.signal(), Some(SIGABRT), "{}", out.describe());
    let id = printed_id(&out);
    assert!(
        out.stderr.contains(&format!(
            "stack overflow in proc {id}: guard page hit at 0x"
        )),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("below its 32768-byte segment"),
        "{}",
        out.describe()
    );
}

#[test]
fn a_stray_pointer_is_not_reported_as_overflow() {
    let Some(out) = in_child(
        "a_stray_pointer_is_not_reported_as_overflow",
        "stray-pointer",
        || {
            procrt::run(|| {
                Builder::new()
                    .name("careless")
                    .spawn(|| {
                        let p = std::hint::black_box(0x10usize) as *mut u64;
                        // SAFETY: not safe at all: writing to address 0x10 must
                        // fault; that fault is what this child is for.
                        unsafe { std::ptr::write_volatile(p, 1) };
                    })
                    .unwrap()
                    .join()
                    .unwrap()
            });
        },
    ) else {
        return;
    };
    assert_eq!(out.signal(), Some(SIGSEGV), "{}", out.describe());
    assert!(
        !out.stderr.contains("stack overflow in proc"),
        "{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("overflowed its stack"),
        "{}",
        out.describe()
    );
}

#[test]
fn overflow_outside_any_proc_is_left_to_std() {
    // procrt's handler is installed (a runtime was built) but the thread's
    // own stack overflows, not a proc's: std's handler reports it.
    let Some(out) = in_child(
        "overflow_outside_any_proc_is_left_to_std",
        "thread-overflow",
        || {
            let _rt = Runtime::new().unwrap();
            std::thread::Builder::new()
                .name("plain-thread".into())
                .stack_size(256 * 1024)
                .spawn(|| {
                    let _rt = Runtime::new().unwrap();
                    dive(0)
                })
                .unwrap()
                .join()
                .unwrap();
        },
    ) else {
        return;
    };
    assert_eq!(out.signal(), Some(SIGABRT), "{}", out.describe());
    assert!(
        !out.stderr.contains("stack overflow in proc"),
        "{}",
        out.describe()
    );
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("has overflowed its stack"));
    assert!(
        line.is_some_and(|l| l.contains("'plain-thread'")),
        "{}",
        out.describe()
    );
}
