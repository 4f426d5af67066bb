//! `__morestack_non_split`, called by hand-written prologues of the shape
//! lld leaves after rewriting a small-frame prologue (`stc; jae`: the call
//! is made every time): the in-place path when the segment has
//! 16 KiB to spare, the split path when it has not; on i686 also through
//! a function that pops its own argument (`ret $4`), whose body starts
//! three bytes past the return address instead of one. (No linker routes
//! real split code through `__morestack_non_split` on i686: lld refuses
//! and ld.bfd never rewrites.)

use procrt::stack;
use procrt::{Builder, Runtime};

// extern "C" fn nonsplit_probe(x: u64, _: u64, _: u64, _: u64, _: u64,
//     _: u64, y: u64) -> Pair
// returns (x + y, the body's stack pointer); y is passed on the stack.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    "    .text",
    "    .globl nonsplit_probe",
    "    .type nonsplit_probe,@function",
    "nonsplit_probe:",
    "    .cfi_startproc",
    // lld's rewrite of a small-frame prologue that calls code without
    // split-stack: `stc` makes the `jae` fall through every time.
    "    stc",
    "    jae 1f",
    "    movq $0, %r10",
    "    movq $8, %r11",
    "    call __morestack_non_split",
    "    ret",
    "1:",
    "    movq 8(%rsp), %rax",
    "    addq %rdi, %rax",
    "    movq %rsp, %rdx",
    "    ret",
    "    .cfi_endproc",
    "    .size nonsplit_probe, .-nonsplit_probe",
    options(att_syntax)
);

/// `nonsplit_probe`'s result: rax, rdx.
#[cfg(target_arch = "x86_64")]
#[repr(C)]
struct Pair(u64, u64);

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn nonsplit_probe(x: u64, a: u64, b: u64, c: u64, d: u64, e: u64, y: u64) -> Pair;
}

/// Calls the probe: (x + y, the body's stack pointer).
#[cfg(target_arch = "x86_64")]
fn probe(x: u32, y: u32) -> (u32, usize) {
    // SAFETY: the probe reads its arguments and returns; __morestack_non_split
    // enters its body in place or on a new segment of the running proc.
    let p = unsafe { nonsplit_probe(x as u64, 0, 0, 0, 0, 0, y as u64) };
    (p.0 as u32, p.1 as usize)
}

// extern "stdcall" fn nonsplit_probe_pop(xy: u32) -> u64: returns
// (x + y in the low half, the body's esp in the high half) where the
// argument packs x and y as 16-bit halves; pops its argument (`ret $4`).
#[cfg(target_arch = "x86")]
std::arch::global_asm!(
    "    .text",
    "    .globl nonsplit_probe_pop",
    "    .type nonsplit_probe_pop,@function",
    "nonsplit_probe_pop:",
    "    .cfi_startproc",
    // As lld's x86_64 rewrite: always call __morestack_non_split.
    "    stc",
    "    jae 1f",
    "    pushl $4",
    "    pushl $0",
    "    call __morestack_non_split",
    "    ret $4",
    "1:",
    "    movl 4(%esp), %eax",
    "    movl %eax, %ecx",
    "    shrl $16, %ecx",
    "    andl $0xffff, %eax",
    "    addl %ecx, %eax",
    "    movl %esp, %edx",
    "    ret $4",
    "    .cfi_endproc",
    "    .size nonsplit_probe_pop, .-nonsplit_probe_pop",
    options(att_syntax)
);

#[cfg(target_arch = "x86")]
extern "stdcall" {
    fn nonsplit_probe_pop(xy: u32) -> u64;
}

/// Calls the probe: (x + y, the body's stack pointer).
#[cfg(target_arch = "x86")]
fn probe(x: u32, y: u32) -> (u32, usize) {
    // SAFETY: as on x86_64; the probe pops its own argument.
    let r = unsafe { nonsplit_probe_pop((x & 0xffff) | (y << 16)) };
    (r as u32, (r >> 32) as usize)
}

fn small_runtime() -> Runtime {
    Runtime::builder()
        .first_segment_size(stack::MIN_SEGMENT_GUARDED)
        .build()
        .unwrap()
}

#[test]
fn with_16_kib_to_spare_the_body_runs_in_place() {
    let rt = small_runtime();
    let (sum, body_sp, here, segments) = rt.block_on(|| {
        Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                let here = caller_sp();
                let (sum, sp) = probe(1200, 34);
                (sum, sp, here, stack::usage().unwrap().segments)
            })
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(sum, 1234);
    assert_eq!(segments, 1);
    // The body ran next to the caller, on the same segment.
    assert!(body_sp.abs_diff(here) < 4096, "{body_sp:#x} vs {here:#x}");
}

#[test]
fn without_16_kib_to_spare_the_body_runs_on_a_new_segment() {
    let rt = small_runtime();
    let before = rt.pool_stats();
    let (sum, body_sp, sp, segments) = rt.block_on(|| {
        Builder::new()
            .stack_size(stack::MIN_SEGMENT_GUARDED)
            .spawn(|| {
                let here = caller_sp();
                let (sum, sp) = probe(4000, 321);
                (sum, sp, here, stack::usage().unwrap().segments)
            })
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(sum, 4321);
    assert_eq!(segments, 1, "the segment was not unlinked");
    // The body ran on another segment: outside the caller's block (a
    // segment is a block of the pool aligned to its size).
    let block = sp & !(stack::MIN_SEGMENT_GUARDED - 1);
    assert!(
        !(block..block + stack::MIN_SEGMENT_GUARDED).contains(&body_sp),
        "{body_sp:#x} vs {sp:#x}"
    );
    let after = rt.pool_stats();
    assert_eq!(after.live_segments, before.live_segments);
    assert!(
        after.total_allocs > before.total_allocs + 1,
        "no segment taken: {after:?}"
    );
}

/// An address in the caller's frame.
#[inline(never)]
fn caller_sp() -> usize {
    let x = 0u8;
    std::hint::black_box(&x) as *const u8 as usize
}
