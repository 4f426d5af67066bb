// The body shared by the `counter` fixture units: each includes it after
// defining `VERSION` and a state static `COUNTER` with a `calls` field.

/// Adds `by` to the call count; returns `VERSION << 48 | the new count`.
pub extern "C" fn bump(by: u64) -> u64 {
    let n = COUNTER.calls.fetch_add(by, Ordering::Relaxed) + by;
    (VERSION << 48) | n
}

/// This version's number.
pub extern "C" fn version() -> u64 {
    VERSION
}

/// `a + b` (the benchmark's callee).
pub extern "C" fn add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// Calls back into the host (which may switch procs) in the middle of a
/// call, then returns the version of the code that finishes the call.
pub extern "C" fn pause(host: extern "C" fn()) -> u64 {
    let before = VERSION;
    host();
    // Still this image's code, whatever was reloaded meanwhile.
    before * 1000 + VERSION
}

/// `add` under an exported symbol name, for the benchmark's `dlsym`-per-call
/// case (unit exports are otherwise reached only through the unit table).
#[no_mangle]
pub extern "C" fn procrt_fixture_counter_add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}
