//! Hot code reload: an actor whose message handler lives in a code unit,
//! and the unit swapped while messages flow.
//!
//! ```text
//! cargo run --release --example hot_reload             # 3 x 200,000 messages
//! cargo run --release --example hot_reload -- --short  # 3 x 2,000, for CI
//! ```
//!
//! The example builds the fixture units (`units/*`, `cdylib`s) with cargo,
//! loads `counter` version 1 and `app` (which imports `counter::bump`
//! through its TOC), and starts an actor whose handler calls
//! `app::bump_twice`, i.e. host -> app -> counter, twice per message.
//! Three producer procs send it messages. When a third of them are handled,
//! the main proc reloads `counter` with version 2. The handler itself never
//! changes: the reload re-points the TOC slots (app's and the program's),
//! copies the counter's state into the new image, and tells `app`.
//!
//! It prints how many messages each version handled, and checks that every
//! message was handled, that after the first answer from version 2 none
//! came from version 1, and that the count carried over (it exits 1 if
//! not).

#[path = "../tests/util/units.rs"]
mod units;

use procrt::actor::{spawn_actor, Context};
use procrt::toc::{import, Unit};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

/// What the handler records: messages handled per counter version, the
/// last count, and whether an answer from an older version ever followed
/// one from a newer version.
#[derive(Default, Debug)]
struct Tally {
    handled: u64,
    by_version: BTreeMap<u64, u64>,
    last_count: u64,
    newest: u64,
    went_back: bool,
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let per_producer: u64 = if short { 2_000 } else { 200_000 };
    const PRODUCERS: u64 = 3;
    let total = PRODUCERS * per_producer;

    let counter = Unit::load(units::unit("unit-counter-v1")).expect("load counter v1");
    let _app = Unit::load(units::unit("unit-app")).expect("load app");
    let handler = import!("app", fn bump_twice(u64) -> u64).expect("import app::bump_twice");
    let seen = import!("app", fn reloads_seen() -> u64).expect("import app::reloads_seen");
    println!(
        "hot_reload: loaded counter generation {} (table at {:#x}) and app; counter's dependents: {:?}",
        counter.image().generation(),
        counter.image().table_addr(),
        counter.dependents()
    );

    let tally = Rc::new(RefCell::new(Tally::default()));
    let (report, reload_time, handled_at_reload) = procrt::run({
        let (tally, counter) = (tally.clone(), counter.clone());
        move || {
            // The actor's handler: one call into app, which calls counter.
            let addr = spawn_actor((), {
                let tally = tally.clone();
                move |_: &mut (), by: u64, _: &Context<u64>| {
                    let r = handler.call(|f| f(by));
                    let (version, count) = (r >> 48, r & ((1 << 48) - 1));
                    let mut t = tally.borrow_mut();
                    t.handled += 1;
                    *t.by_version.entry(version).or_default() += 1;
                    t.went_back |= version < t.newest;
                    t.newest = t.newest.max(version);
                    t.last_count = count;
                }
            });
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|_| {
                    let addr = addr.clone();
                    procrt::spawn(move || {
                        for i in 0..per_producer {
                            addr.send(1).expect("the actor is alive");
                            if i % 16 == 0 {
                                procrt::yield_now();
                            }
                        }
                    })
                    .expect("spawn producer")
                })
                .collect();
            drop(addr);
            while tally.borrow().handled < total / 3 {
                procrt::yield_now();
            }
            let handled_at_reload = tally.borrow().handled;
            let start = Instant::now();
            let report = counter
                .reload(units::unit("unit-counter-v2"))
                .expect("reload counter v2");
            let reload_time = start.elapsed();
            for p in producers {
                p.join().expect("producer");
            }
            while tally.borrow().handled < total {
                procrt::yield_now();
            }
            (report, reload_time, handled_at_reload)
        }
    });

    let t = tally.borrow();
    println!(
        "hot_reload: reloaded counter to generation {} after {handled_at_reload} of {total} messages: \
         {:.1} us in all (copy, dlopen, checks, state {:?}); {} slot(s) re-pointed in {:.2} us, \
         {} pre-linked; dependents: {:?}; app's on_reload ran {} time(s)",
        report.generation,
        reload_time.as_secs_f64() * 1e6,
        report.state,
        report.repointed,
        report.relink_time.as_secs_f64() * 1e6,
        report.prelinked,
        report.dependents,
        seen.call(|f| f()) >> 32,
    );
    for (version, n) in &t.by_version {
        println!("hot_reload: counter version {version} handled {n} message(s)");
    }
    println!(
        "hot_reload: final count {} (2 bumps per message)",
        t.last_count
    );
    let mut ok = true;
    if t.handled != total || t.by_version.values().sum::<u64>() != total {
        eprintln!("hot_reload: handled {} of {total} messages", t.handled);
        ok = false;
    }
    if t.went_back {
        eprintln!("hot_reload: an answer from version 1 came after one from version 2");
        ok = false;
    }
    if t.last_count != 2 * total {
        eprintln!(
            "hot_reload: final count {}, expected {} (state lost?)",
            t.last_count,
            2 * total
        );
        ok = false;
    }
    if t.by_version.keys().copied().collect::<Vec<_>>() != [1, 2] {
        eprintln!(
            "hot_reload: versions seen {:?}, expected [1, 2]",
            t.by_version.keys()
        );
        ok = false;
    }
    if !ok {
        std::process::exit(1);
    }
}
