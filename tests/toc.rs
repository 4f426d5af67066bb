//! `procrt::toc`: code units loaded with `dlopen`, lazy imports through a
//! TOC, reload while procs run, and every refusal.
//!
//! The fixtures are the `units/*` workspace members (see each one's
//! `lib.rs`): `counter` in versions 1 and 2 (same state layout), a version
//! with another `bump` signature, one whose state layout changed without a
//! `migrate`, one with a `migrate`, and `app`, which imports from
//! `counter`. The registry is process-wide, so each test runs in a fresh
//! child process (`util/units.rs`).

#[path = "util/units.rs"]
mod units;

use procrt::toc::{self, import, RelinkMode, StateTransfer, TocError, Unit};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use units::{isolated, isolated_crash, unit};

/// Splits a `bump` result into (version, count).
fn split(r: u64) -> (u64, u64) {
    (r >> 48, r & ((1 << 48) - 1))
}

#[test]
fn reload_while_procs_call_reaches_v2_and_loses_no_call() {
    isolated(
        "reload_while_procs_call_reaches_v2_and_loses_no_call",
        || {
            const WORKERS: u64 = 4;
            const CALLS: u64 = 200;
            let counter = Unit::load(unit("unit-counter-v1")).unwrap();
            let app = Unit::load(unit("unit-app")).unwrap();
            assert_eq!(counter.dependents(), vec!["app".to_string()]);
            let bump = Rc::new(import!("counter", fn bump(u64) -> u64).unwrap());
            let twice = Rc::new(import!("app", fn bump_twice(u64) -> u64).unwrap());
            let app_version = import!("app", fn provider_version() -> u64).unwrap();
            let seen = import!("app", fn reloads_seen() -> u64).unwrap();
            assert_eq!(app_version.call(|f| f()), 1);
            // (reloaded when the call was made, version, count) per call.
            let log: Rc<RefCell<Vec<(bool, u64, u64)>>> = Rc::default();
            let reloaded = Rc::new(Cell::new(false));
            let report = procrt::run({
                let (log, reloaded) = (log.clone(), reloaded.clone());
                let (bump, twice, counter) = (bump.clone(), twice.clone(), counter.clone());
                move || {
                    let workers: Vec<_> = (0..WORKERS)
                        .map(|w| {
                            let (bump, twice) = (bump.clone(), twice.clone());
                            let (log, reloaded) = (log.clone(), reloaded.clone());
                            procrt::spawn(move || {
                                for i in 0..CALLS {
                                    let before = reloaded.get();
                                    // Half the calls go host -> counter, half
                                    // host -> app -> counter (two bumps).
                                    let r = if (i + w) % 2 == 0 {
                                        bump.call(|f| f(1))
                                    } else {
                                        twice.call(|f| f(1))
                                    };
                                    let (v, n) = split(r);
                                    log.borrow_mut().push((before, v, n));
                                    procrt::yield_now();
                                }
                            })
                            .unwrap()
                        })
                        .collect();
                    // Let the workers make about a third of their calls.
                    while log.borrow().len() < (WORKERS * CALLS / 3) as usize {
                        procrt::yield_now();
                    }
                    let report = counter.reload(unit("unit-counter-v2")).unwrap();
                    reloaded.set(true);
                    for w in workers {
                        w.join().unwrap();
                    }
                    report
                }
            });
            let log = log.borrow();
            assert_eq!(log.len(), (WORKERS * CALLS) as usize, "every call returned");
            let before = log.iter().filter(|e| !e.0).count();
            assert!(
                before > 0 && before < log.len(),
                "the reload happened mid-run"
            );
            for &(after_reload, v, _) in log.iter() {
                assert_eq!(
                    v,
                    if after_reload { 2 } else { 1 },
                    "a call reached the wrong version"
                );
            }
            // No call lost: the state moved to v2, and every bump counted once.
            let twice_calls = log.len() as u64 / 2;
            let total = (log.len() as u64 - twice_calls) + 2 * twice_calls;
            let max = log.iter().map(|e| e.2).max().unwrap();
            assert_eq!(max, total, "the count in v2 includes every v1 call");
            let mut counts: Vec<u64> = log.iter().map(|e| e.2).collect();
            counts.sort_unstable();
            counts.dedup();
            assert_eq!(counts.len(), log.len(), "no two calls saw the same count");
            assert_eq!(report.generation, 2);
            assert_eq!(report.state, StateTransfer::Copied { bytes: 8 });
            // app's slot into bump and the host's bump import, eagerly.
            assert!(report.repointed >= 2, "{report:?}");
            assert_eq!(report.reset, 0);
            assert_eq!(
                report.dependents,
                vec!["app".to_string(), "host".to_string()]
            );
            // The dependent was re-pointed and told.
            assert_eq!(app_version.call(|f| f()), 2);
            assert_eq!(seen.call(|f| f()), (1 << 32) | 2);
            assert_eq!(bump.image().generation(), 2);
            assert_eq!(counter.images().len(), 2, "old and current");
            assert_eq!(app.image().generation(), 1, "app itself was not reloaded");
        },
    );
}

#[test]
fn lazy_imports_resolve_on_first_call() {
    isolated("lazy_imports_resolve_on_first_call", || {
        let _counter = Unit::load(unit("unit-counter-v1")).unwrap();
        let app = Unit::load(unit("unit-app")).unwrap();
        assert_eq!(app.toc().slots(), (0, 3), "slots start at their resolvers");
        let twice = import!("app", fn bump_twice(u64) -> u64).unwrap();
        assert_eq!(split(twice.call(|f| f(5))), (1, 10));
        assert_eq!(app.toc().slots(), (1, 3), "bump resolved, nothing else");
        let v = import!("app", fn provider_version() -> u64).unwrap();
        assert_eq!(v.call(|f| f()), 1);
        assert_eq!(app.toc().slots(), (2, 3));
        assert_eq!(
            split(twice.call(|f| f(1))),
            (1, 12),
            "resolved slot, same target"
        );
    });
}

#[test]
fn reset_mode_puts_dependents_back_on_their_resolvers() {
    isolated("reset_mode_puts_dependents_back_on_their_resolvers", || {
        let counter = Unit::load(unit("unit-counter-v1")).unwrap();
        let app = Unit::load(unit("unit-app")).unwrap();
        let twice = import!("app", fn bump_twice(u64) -> u64).unwrap();
        let v = import!("app", fn provider_version() -> u64).unwrap();
        let bump = import!("counter", fn bump(u64) -> u64).unwrap();
        twice.call(|f| f(1));
        assert_eq!(v.call(|f| f()), 1);
        assert_eq!(app.toc().slots(), (2, 3));
        let report = counter
            .reload_with(unit("unit-counter-v2"), RelinkMode::Reset)
            .unwrap();
        assert_eq!(report.reset, 2, "app's two resolved slots: {report:?}");
        assert_eq!(
            report.repointed, 1,
            "the host's slot has no resolver: {report:?}"
        );
        assert_eq!(app.toc().slots(), (0, 3));
        assert_eq!(v.call(|f| f()), 2, "re-resolved against v2");
        assert_eq!(
            split(twice.call(|f| f(1))),
            (2, 4),
            "state copied, then two bumps"
        );
        assert_eq!(split(bump.call(|f| f(1))), (2, 5));
        assert_eq!(app.toc().slots(), (2, 3));
    });
}

#[test]
fn signature_mismatch_is_refused_with_a_clear_error() {
    isolated("signature_mismatch_is_refused_with_a_clear_error", || {
        let counter = Unit::load(unit("unit-counter-v1")).unwrap();
        // The host declares the wrong type.
        let e = import!("counter", fn bump(u32) -> u64).unwrap_err();
        assert!(matches!(e, TocError::SignatureMismatch { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("signature mismatch") && msg.contains("counter::bump"),
            "{msg}"
        );
        // A new version changes an export's signature that others import.
        let bump = import!("counter", fn bump(u64) -> u64).unwrap();
        let e = counter.reload(unit("unit-counter-badsig")).unwrap_err();
        match &e {
            TocError::SignatureMismatch {
                importer,
                provider,
                name,
                ..
            } => assert_eq!(
                (&**importer, &**provider, &**name),
                ("host", "counter", "bump")
            ),
            other => panic!("expected a signature mismatch, got {other:?}"),
        }
        assert_eq!(split(bump.call(|f| f(1))), (1, 1), "v1 still runs");
        assert_eq!(counter.images().len(), 1, "the refused image is gone");
        // A unit whose import does not match its loaded provider.
        drop(bump);
        let counter2 = Unit::find("counter").unwrap();
        assert_eq!(counter2.name(), "counter");
    });
}

#[test]
fn a_provider_that_breaks_an_importer_is_refused_at_load() {
    isolated(
        "a_provider_that_breaks_an_importer_is_refused_at_load",
        || {
            // app declares counter::bump(u64) -> u64 before counter is loaded.
            let _app = Unit::load(unit("unit-app")).unwrap();
            let e = Unit::load(unit("unit-counter-badsig")).unwrap_err();
            match &e {
                TocError::SignatureMismatch { importer, name, .. } => {
                    assert_eq!((&**importer, &**name), ("app", "bump"))
                }
                other => panic!("expected a signature mismatch, got {other:?}"),
            }
            assert!(Unit::find("counter").is_none());
            Unit::load(unit("unit-counter-v1")).unwrap();
            let e = Unit::load(unit("unit-counter-v2")).unwrap_err();
            assert!(matches!(e, TocError::AlreadyLoaded { .. }), "{e}");
            let e = Unit::load("/nonexistent/libnothing.so").unwrap_err();
            assert!(matches!(e, TocError::Copy { .. }), "{e}");
        },
    );
}

#[test]
fn stripped_units_reload_is_refused() {
    isolated("stripped_units_reload_is_refused", || {
        let counter = Unit::load(unit("unit-counter-v1")).unwrap();
        let _app = Unit::load(unit("unit-app")).unwrap();
        let twice = import!("app", fn bump_twice(u64) -> u64).unwrap();
        let bump = import!("counter", fn bump(u64) -> u64).unwrap();
        twice.call(|f| f(1));
        // Into counter: app's bump slot and the host's bump import.
        assert_eq!(counter.toc().relink_entries(), 2);
        assert_eq!(counter.toc().strip_relink(), 2);
        assert!(counter.toc().is_stripped());
        assert_eq!(counter.toc().relink_entries(), 0);
        let e = counter.reload(unit("unit-counter-v2")).unwrap_err();
        assert!(matches!(e, TocError::RelinkStripped { .. }), "{e:?}");
        assert!(e.to_string().contains("relink index was stripped"), "{e}");
        assert_eq!(split(bump.call(|f| f(1))), (1, 3), "v1 keeps running");
        assert_eq!(split(twice.call(|f| f(1))), (1, 5));
    });
}

#[test]
fn layout_change_without_migrate_is_refused_and_old_code_keeps_running() {
    isolated(
        "layout_change_without_migrate_is_refused_and_old_code_keeps_running",
        || {
            let counter = Unit::load(unit("unit-counter-v1")).unwrap();
            let bump = Rc::new(import!("counter", fn bump(u64) -> u64).unwrap());
            let results = procrt::run({
                let bump = bump.clone();
                move || {
                    let worker = {
                        let bump = bump.clone();
                        procrt::spawn(move || {
                            (0..10)
                                .map(|_| {
                                    let r = split(bump.call(|f| f(1)));
                                    procrt::yield_now();
                                    r
                                })
                                .collect::<Vec<_>>()
                        })
                        .unwrap()
                    };
                    procrt::yield_now();
                    let e = counter.reload(unit("unit-counter-layout")).unwrap_err();
                    assert!(matches!(e, TocError::StateLayoutChanged { .. }), "{e:?}");
                    assert!(e.to_string().contains("exports no `migrate`"), "{e}");
                    assert_eq!(counter.images().len(), 1);
                    worker.join().unwrap()
                }
            });
            let expected: Vec<(u64, u64)> = (1..=10).map(|n| (1, n)).collect();
            assert_eq!(results, expected, "every call ran in v1, none lost");
            // With a migrate, the same layout change goes through.
            let counter = Unit::find("counter").unwrap();
            let report = counter.reload(unit("unit-counter-migrate")).unwrap();
            assert!(
                matches!(report.state, StateTransfer::Migrated { .. }),
                "{report:?}"
            );
            assert_eq!(
                split(bump.call(|f| f(1))),
                (4, 11),
                "v4 continues the count"
            );
        },
    );
}

/// The host side of `counter::pause`: switches procs in the middle of a
/// call into the unit, and records the current unit as seen from inside.
extern "C" fn yield_inside() {
    let now = toc::current().map(|i| (i.name().to_string(), i.generation()));
    INSIDE.with(|c| c.borrow_mut().push(now));
    procrt::yield_now();
}

extern "C" fn do_nothing() {}

thread_local! {
    static INSIDE: RefCell<Vec<Option<(String, u64)>>> = const { RefCell::new(Vec::new()) };
}

#[test]
fn a_proc_inside_old_code_finishes_there_and_a_third_load_waits_for_it() {
    isolated(
        "a_proc_inside_old_code_finishes_there_and_a_third_load_waits_for_it",
        || {
            let counter = Unit::load(unit("unit-counter-v1")).unwrap();
            let pause = Rc::new(import!("counter", fn pause(extern "C" fn()) -> u64).unwrap());
            assert!(toc::current().is_none());
            procrt::run(move || {
                let inside = {
                    let pause = pause.clone();
                    procrt::spawn(move || {
                        // Suspended inside v1 while the main proc reloads.
                        let first = pause.call(|f| f(yield_inside));
                        assert!(toc::current().is_none(), "back in host code");
                        let second = pause.call(|f| f(do_nothing));
                        (first, second)
                    })
                    .unwrap()
                };
                // The child ran until its yield inside counter v1.
                assert!(
                    toc::current().is_none(),
                    "each proc has its own current unit"
                );
                assert_eq!(counter.image().active_calls(), 1);
                let r = counter.reload(unit("unit-counter-v2")).unwrap();
                assert_eq!((r.generation, r.purged), (2, None));
                // A third version would purge v1, where the child still is.
                let e = counter.reload(unit("unit-counter-v1")).unwrap_err();
                match e {
                    TocError::OldCodeInUse {
                        generation, calls, ..
                    } => assert_eq!((generation, calls), (1, 1)),
                    other => panic!("expected OldCodeInUse, got {other:?}"),
                }
                let (first, second) = inside.join().unwrap();
                assert_eq!(first, 1001, "the call begun in v1 finished in v1");
                assert_eq!(second, 2002, "the next call reached v2");
                // Now v1 can go.
                let r = counter.reload(unit("unit-counter-v1")).unwrap();
                assert_eq!((r.generation, r.purged), (3, Some(1)));
                let gens: Vec<u64> = counter.images().iter().map(|i| i.generation()).collect();
                assert_eq!(gens, vec![2, 3]);
                assert_eq!(
                    pause.call(|f| f(do_nothing)),
                    1001,
                    "generation 3 is v1's code"
                );
            });
            let inside = INSIDE.with(|c| c.borrow().clone());
            assert_eq!(inside, vec![Some(("counter".to_string(), 1))]);
        },
    );
}

#[test]
fn a_lazy_import_without_its_provider_ends_the_process_with_a_clear_message() {
    let name = "a_lazy_import_without_its_provider_ends_the_process_with_a_clear_message";
    let out = isolated_crash(name, || {
        let _app = Unit::load(unit("unit-app")).unwrap();
        let v = import!("app", fn provider_version() -> u64).unwrap();
        // app's slot for counter::version resolves now, and cannot.
        v.call(|f| f());
        unreachable!("the call must not return");
    });
    if let Some((status, stderr)) = out {
        assert!(!status.success());
        assert!(
            stderr.contains("lazily resolved import failed")
                && stderr.contains(
                    "`app` called its import `counter::version`, but no unit `counter` is loaded"
                ),
            "{stderr}"
        );
    }
}

#[test]
fn reloading_a_dependent_prelinks_its_new_slots_by_pointer() {
    isolated(
        "reloading_a_dependent_prelinks_its_new_slots_by_pointer",
        || {
            let counter = Unit::load(unit("unit-counter-v1")).unwrap();
            let app = Unit::load(unit("unit-app")).unwrap();
            let twice = import!("app", fn bump_twice(u64) -> u64).unwrap();
            let version = import!("app", fn provider_version() -> u64).unwrap();
            assert_eq!(split(twice.call(|f| f(1))), (1, 2));
            assert_eq!(version.call(|f| f()), 1);
            assert_eq!(app.toc().slots(), (2, 3));
            // A fresh image of app: its slots take the old image's targets.
            let r = app.reload(unit("unit-app")).unwrap();
            assert_eq!((r.generation, r.prelinked), (2, 2), "{r:?}");
            assert_eq!(r.state, StateTransfer::Fresh);
            assert_eq!(r.repointed, 2, "the host's two imports from app: {r:?}");
            assert_eq!(
                app.toc().slots(),
                (2, 3),
                "resolved without a resolver call"
            );
            assert_eq!(twice.image().generation(), 2);
            assert_eq!(split(twice.call(|f| f(1))), (1, 4));
            // Reloading the provider re-points the old and the new app image's
            // slots (both are live) into counter.
            let r = counter.reload(unit("unit-counter-v2")).unwrap();
            assert_eq!(r.repointed, 4, "{r:?}");
            assert_eq!(version.call(|f| f()), 2);
            assert_eq!(split(twice.call(|f| f(1))), (2, 6));
        },
    );
}
