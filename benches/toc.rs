//! The cost of a call through a code unit's TOC, beside a direct call, an
//! indirect call through a plain function pointer, and a `dlsym` lookup per
//! call; and the cost of a reload, eager against reset. Run with
//! `cargo bench --bench toc` (it builds the fixture units first).
//!
//! What each case measures (one iteration = one call of `add(acc, i)`):
//!
//! - `unit/direct`: inside the `app` unit, a call of a local
//!   `#[inline(never)]` function: the floor.
//! - `unit/fn_pointer`: inside `app`, a call through a plain function
//!   pointer to `counter::add`, reloaded from memory before each call
//!   (`black_box`), as a slot is.
//! - `unit/toc_slot`: inside `app`, a call of its import `counter::add`: one
//!   load of the TOC slot and one indirect call, into another image. This
//!   is the inter-unit call the design is about; the aim is within 1.2x of
//!   `unit/fn_pointer`.
//! - `host/import_get`: from the program, `Import::get()` then the call
//!   (the raw host-side TOC call).
//! - `host/import_call`: from the program, the tracked `Import::call`,
//!   which also makes `counter` the proc's current unit for the call (two
//!   thread-local stores, the proc's word, an atomic count, and back).
//! - `host/dlsym_per_call`: `dlsym(handle, "procrt_fixture_counter_add")`
//!   then the call, every time: what a reloader that looks symbols up per
//!   call (hot-lib-reloader) pays.
//!
//! The unit loops run inside the unit (`loop_*` exports of `app`), timed
//! around one call with `iter_custom`.
//!
//! After criterion, a plain measurement of reloads: `counter` is reloaded
//! 20 times in each [`RelinkMode`], alternating versions 1 and 2, with
//! `app`'s three slots and one host slot into it. It prints the median
//! whole reload (copy the file, `dlopen`, checks, state copy, relink), the
//! median relink step alone, and the median first call through `app`
//! afterwards (with `Reset`, that call goes through the resolver); then the
//! relink step per slot with 1,000 more host slots into `counter`.

#[path = "../tests/util/units.rs"]
mod units;

use criterion::Criterion;
use procrt::toc::{import, RelinkMode, Unit};
use std::ffi::CString;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn call_benches(c: &mut Criterion) {
    let _counter = Unit::load(units::unit("unit-counter-v1")).expect("load counter");
    let _app = Unit::load(units::unit("unit-app")).expect("load app");
    let loop_direct = import!("app", fn loop_direct(u64) -> u64).unwrap();
    let loop_indirect =
        import!("app", fn loop_indirect(u64, extern "C" fn(u64, u64) -> u64) -> u64).unwrap();
    let loop_toc = import!("app", fn loop_toc(u64) -> u64).unwrap();
    let add = import!("counter", fn add(u64, u64) -> u64).unwrap();
    let add_ptr = add.get();
    loop_toc.get()(1); // resolve app's slot outside the timing

    let mut g = c.benchmark_group("unit");
    let time = |f: &dyn Fn(u64) -> u64, iters: u64| {
        let start = Instant::now();
        black_box(f(iters));
        start.elapsed()
    };
    g.bench_function("direct", |b| {
        b.iter_custom(|n| time(&|n| loop_direct.get()(n), n))
    });
    g.bench_function("fn_pointer", |b| {
        b.iter_custom(|n| time(&|n| loop_indirect.get()(n, add_ptr), n))
    });
    g.bench_function("toc_slot", |b| {
        b.iter_custom(|n| time(&|n| loop_toc.get()(n), n))
    });
    g.finish();

    let mut g = c.benchmark_group("host");
    g.bench_function("import_get", |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            let mut acc = 0u64;
            for i in 0..n {
                acc = black_box(&add).get()(acc, i);
            }
            black_box(acc);
            start.elapsed()
        })
    });
    g.bench_function("import_call", |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            let mut acc = 0u64;
            for i in 0..n {
                acc = black_box(&add).call(|f| f(acc, i));
            }
            black_box(acc);
            start.elapsed()
        })
    });
    // The same library, opened directly (Unit::load opened its own copy).
    let path = CString::new(
        units::unit("unit-counter-v1")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a fixture cdylib whose initializers are std's.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen of the fixture failed");
    let sym = c"procrt_fixture_counter_add";
    g.bench_function("dlsym_per_call", |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            let mut acc = 0u64;
            for i in 0..n {
                // SAFETY: a live handle and a NUL-terminated name.
                let p = unsafe { libc::dlsym(handle, sym.as_ptr()) };
                // SAFETY: the symbol is `extern "C" fn(u64, u64) -> u64`.
                let f = unsafe {
                    std::mem::transmute::<*mut libc::c_void, extern "C" fn(u64, u64) -> u64>(p)
                };
                acc = f(acc, i);
            }
            black_box(acc);
            start.elapsed()
        })
    });
    g.finish();
}

/// The median of `v`.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn reload_measurement() {
    let counter = Unit::find("counter").expect("counter is loaded");
    let provider_version = import!("app", fn provider_version() -> u64).unwrap();
    let bump = import!("app", fn bump_twice(u64) -> u64).unwrap();
    let add_via_app = import!("app", fn loop_toc(u64) -> u64).unwrap();
    let versions = [
        units::unit("unit-counter-v2"),
        units::unit("unit-counter-v1"),
    ];
    println!();
    println!("reload measurement: 20 reloads of `counter` per mode, medians");
    for mode in [RelinkMode::Eager, RelinkMode::Reset] {
        let (mut whole, mut relink, mut first) = (vec![], vec![], vec![]);
        for i in 0..20 {
            // Every slot of app into counter resolved before the reload.
            provider_version.get()();
            bump.get()(1);
            add_via_app.get()(1);
            let start = Instant::now();
            let r = counter.reload_with(&versions[i % 2], mode).expect("reload");
            whole.push(start.elapsed());
            relink.push(r.relink_time);
            let start = Instant::now();
            black_box(provider_version.get()());
            first.push(start.elapsed());
        }
        println!(
            "  {mode:?}: whole reload {:.1} us, relink step {:.0} ns, first call through app afterwards {:.0} ns",
            median(whole).as_secs_f64() * 1e6,
            median(relink).as_secs_f64() * 1e9,
            median(first).as_secs_f64() * 1e9,
        );
    }
    // The relink step per slot, with enough slots to see past the fixed
    // cost: 1,000 host imports of counter::add (host slots are always
    // re-pointed eagerly).
    let many: Vec<_> = (0..1000)
        .map(|_| import!("counter", fn add(u64, u64) -> u64).unwrap())
        .collect();
    let mut relink = vec![];
    for i in 0..20 {
        let r = counter.reload(&versions[i % 2]).expect("reload");
        relink.push(r.relink_time.as_secs_f64() * 1e9 / r.repointed as f64);
    }
    relink.sort_by(f64::total_cmp);
    println!(
        "  Eager with {} host slots into counter: relink step {:.1} ns per slot",
        many.len(),
        relink[relink.len() / 2]
    );
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30)
}

// What criterion_group!/criterion_main! expand to, written out (see
// benches/switch.rs).
fn main() {
    let mut c = config().configure_from_args();
    call_benches(&mut c);
    c.final_summary();
    // `cargo bench -- <filter>` and `cargo test --benches` skip nothing
    // here: the measurement is short.
    reload_measurement();
}
