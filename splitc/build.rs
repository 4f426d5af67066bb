//! Compiles `c/split.c` with `-fsplit-stack` (every function checks its
//! frame against the TCB slot and calls `__morestack`) into a static
//! library linked into whatever depends on this crate (procrt's tests,
//! examples and benches: it is only their dev-dependency). On x86_64,
//! `c/nosplit.c` is compiled without split-stack beside it.
//!
//! `__morestack` itself comes from procrt; this crate does not depend on
//! procrt, so that procrt's own unit-test build does not link two copies.
//!
//! Linker constraints (rustc links with lld on both targets):
//! - lld rewrites the prologue of a split-stack function that calls a
//!   function from an object without split-stack (to ask for 16 KiB more
//!   and call `__morestack_non_split`). On i386 it cannot ("target doesn't
//!   support split stacks") and fails the link: there, split code must not
//!   call non-split code directly, so `nosplit.c` is x86_64 only.
//! - On i386, position-independent code reaches its data through a PC
//!   thunk (`__x86.get_pc_thunk.*`), which lld counts as non-split code
//!   (the copy it keeps may come from a non-split object). So the split
//!   code is compiled with hidden visibility (direct calls, no PLT) and
//!   takes no constants from memory.

fn main() {
    println!("cargo:rerun-if-changed=c/split.c");
    println!("cargo:rerun-if-changed=c/nosplit.c");
    let x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64");
    cc::Build::new()
        .file("c/split.c")
        .flag("-fsplit-stack")
        // Unwind tables and cleanups, so a Rust panic can cross C frames.
        .flag("-fexceptions")
        .flag("-fvisibility=hidden")
        // Keep each level a real call with a real frame.
        .flag("-fno-optimize-sibling-calls")
        .flag("-fno-inline")
        .opt_level(2)
        .compile("procrt_split");
    if x86_64 {
        cc::Build::new()
            .file("c/nosplit.c")
            .flag("-fexceptions")
            .opt_level(2)
            .compile("procrt_nosplit");
    }
}
