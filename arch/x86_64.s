# procrt context switch for x86_64 (System V ABI, Linux, glibc). AT&T syntax.
#
# This file and arch/i686.s export the same symbols with the same meaning;
# read them side by side. src/arch/mod.rs declares the Rust signatures and
# pulls this file in with global_asm!.
#
# Calling convention
# ------------------
# Every routine here is an ordinary `extern "sysv64"` function. The caller
# has already saved the caller-saved registers it cares about (rax, rcx, rdx,
# rsi, rdi, r8-r11, xmm0-15, st0-7), so a switch saves only what the ABI says
# a callee must preserve:
#
#   - rbx, rbp, r12, r13, r14, r15         (callee-saved integer registers)
#   - MXCSR control bits and the x87 control word (callee-saved per the
#     ABI, section 3.2.1: "the control bits of the MXCSR register and the x87
#     status word are callee-saved"); a proc that changes its rounding mode
#     keeps it, and does not leak it to other procs
#   - the split-stack limit in the glibc TCB, %fs:0x70 (`__private_ss` of
#     tcbhead_t, asserted by glibc's sysdeps/x86_64/nptl/tls.h). It belongs
#     to the stack that is running, so it is saved and restored with it: the
#     switch writes the incoming proc's limit in the same routine, with one
#     fs-relative store and no call to __tls_get_addr.
#
# A suspended context: its saved stack pointer points at this frame
# ------------------------------------------------------------------
#
#     high  +------------------------------+
#           | ...  the context's frames    |
#           +------------------------------+
#   sp+64   | return address               |  into the caller of procrt_switch
#   sp+56   | rbp                          |
#   sp+48   | rbx                          |
#   sp+40   | r12                          |
#   sp+32   | r13                          |
#   sp+24   | r14                          |
#   sp+16   | r15                          |
#   sp+8    | stack limit (%fs:0x70)       |
#   sp+0    | MXCSR (4) | x87 CW (2) | 0(2)|
#     low   +------------------------------+  <- saved stack pointer
#
# A fresh proc, as src/arch/mod.rs prepares it
# --------------------------------------------
# The same frame, so that the first switch into the proc pops it like any
# other, and "returns" into procrt_proc_entry:
#
#     high  +------------------------------+  <- top: 16-byte aligned
#   sp+64   | procrt_proc_entry            |  "return address"
#   sp+56   | 0                            |  rbp: ends frame-pointer walks
#   sp+48   | entry function               |  rbx
#   sp+40   | entry argument               |  r12
#   sp+32   | 0                            |  r13
#   sp+24   | 0                            |  r14
#   sp+16   | 0                            |  r15
#   sp+8    | the segment's stack limit    |
#   sp+0    | 0x1f80 | 0x037f | 0          |  default MXCSR and x87 CW
#     low   +------------------------------+  <- initial saved sp = top - 72
#
# Alignment: after the nine pops the stack pointer equals `top`, which is
# 16-byte aligned, so procrt_proc_entry's `call` leaves the entry function
# with rsp = 8 (mod 16), as the ABI requires at a function's first
# instruction.
#
# Return-address prediction: the `ret` below returns into whichever
# context is resumed, while the return-stack buffer predicts the outgoing
# context's caller. When both contexts were suspended from the same call
# chain (two procs blocking in the same function) every return is predicted;
# when they were not, each return up the chain that differs is
# mispredicted. That is the price of symmetric switching (any proc straight
# to any other, one switch per hand-off) against an asymmetric
# resume/suspend pair, which keeps call and return balanced.

    .text

# extern "sysv64" fn procrt_switch(save_sp: *mut usize, new_sp: usize);
#
# On entry: rdi = where to store the outgoing context's stack pointer,
#           rsi = the incoming context's saved stack pointer,
#           rsp points at our return address on the outgoing stack.
# On return: running on the incoming stack, with its callee-saved registers,
#           MXCSR, x87 control word and stack limit restored.
    .globl procrt_switch
    .hidden procrt_switch
    .type procrt_switch,@function
    .p2align 4
procrt_switch:
    .cfi_startproc
    # Save the callee-saved registers on the outgoing stack. The CFI tells an
    # unwinder where each one is while we are between the pushes and pops.
    pushq %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    pushq %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    pushq %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r12, 0
    pushq %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r13, 0
    pushq %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r14, 0
    pushq %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r15, 0

    # Save the outgoing stack's split-stack limit.
    movq %fs:0x70, %rax
    pushq %rax
    .cfi_adjust_cfa_offset 8

    # Save MXCSR and the x87 control word into a zeroed word (the zero
    # padding keeps the word deterministic).
    pushq $0
    .cfi_adjust_cfa_offset 8
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    # Keep the values just saved in eax/ecx for the comparison below. The
    # loads have the size and address of the stores, so they forward.
    # MXCSR bits 0-5 are sticky exception flags, caller-saved per the ABI:
    # only the control bits (6-15) are compared, so a proc that does inexact
    # arithmetic does not take the slow path on every switch.
    movl (%rsp), %eax
    andl $0xffc0, %eax
    movzwl 4(%rsp), %ecx

    # Swap stacks. The incoming stack holds a frame of the same layout, so
    # the CFA rules above stay true after the move.
    movq %rsp, (%rdi)
    movq %rsi, %rsp

    # Restore the incoming context's floating-point control state, but only
    # when it differs: ldmxcsr and fldcw are microcoded and slow, and
    # procs almost never change their rounding mode.
    movl (%rsp), %edx
    andl $0xffc0, %edx
    cmpl %edx, %eax
    jne 2f
    cmpw 4(%rsp), %cx
    jne 2f
    .cfi_remember_state
1:
    addq $8, %rsp
    .cfi_adjust_cfa_offset -8

    # Restore its split-stack limit into the TCB slot.
    popq %rax
    .cfi_adjust_cfa_offset -8
    movq %rax, %fs:0x70

    # Restore its callee-saved registers and return into it.
    popq %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r15
    popq %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r14
    popq %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r13
    popq %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r12
    popq %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    ret

    # Out of line: the incoming context runs with other MXCSR or x87 control
    # bits. Same stack state as at 1: above.
    .cfi_restore_state
2:
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    jmp 1b
    .cfi_endproc
    .size procrt_switch, .-procrt_switch

# The first code a fresh proc runs: procrt_switch "returns" here.
#
# On entry: rsp = top of the proc's first segment (16-byte aligned),
#           rbx = the entry function, `extern "sysv64" fn(arg: *mut u8) -> !`,
#           r12 = its argument,
#           rbp = 0.
# The entry function never returns: a proc ends by switching away for the
# last time. `ud2` makes a return a loud fault instead of a jump into
# whatever follows.
#
# CFI: `DW_CFA_undefined rip` says this frame has no caller, so gdb's `bt`
# and the unwinder behind std::backtrace stop here instead of walking into
# the stack's header as if it held frames. Panics never reach this frame:
# the entry function catches them (src/sched/proc.rs).
    .globl procrt_proc_entry
    .hidden procrt_proc_entry
    .type procrt_proc_entry,@function
    .p2align 4
procrt_proc_entry:
    .cfi_startproc
    .cfi_undefined %rip
    movq %r12, %rdi
    callq *%rbx
    ud2
    .cfi_endproc
    .size procrt_proc_entry, .-procrt_proc_entry

# extern "sysv64" fn procrt_call_on_segment(arg: *mut u8, f: extern "sysv64" fn(*mut u8), sp: usize);
#
# Runs f(arg) with the stack pointer at `sp` (the top of a freshly linked
# segment, 16-byte aligned), then returns on the original stack. This is
# how `stack::grow` moves a proc onto a new segment.
#
# On entry: rdi = arg, rsi = f, rdx = new stack pointer,
#           rsp points at our return address on the old segment.
# f must not unwind: the Rust side catches panics inside f and resumes them
# after we return (src/stack/grow.rs), as DESIGN.md asks at each segment
# boundary.
#
#     old segment                      new segment
#     +----------------------+         +----------------------+ <- sp
#     | caller's frames      |         | f's frames ...       |
#     | return address       |         |                      |
#     | saved rbp            | <- rbp  |                      |
#     +----------------------+         +----------------------+
#
# CFI: after the prologue the CFA is defined by rbp (CFA = rbp + 16), which
# stays valid while rsp lives on the new segment, so an unwinder (gdb's
# `bt`, std::backtrace) walks from f's frames through this one into the
# caller's frames on the old segment. `.cfi_signal_frame` tells gdb that
# this frame's caller may sit at a lower address than its callee (the
# segments are unordered) without calling the stack corrupt.
# gdb prints this frame as `<signal handler called>`; the frames above it
# are on the new segment, the ones below on the old.
    .globl procrt_call_on_segment
    .hidden procrt_call_on_segment
    .type procrt_call_on_segment,@function
    .p2align 4
procrt_call_on_segment:
    .cfi_startproc
    .cfi_signal_frame
    pushq %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    movq %rsp, %rbp
    .cfi_def_cfa_register %rbp

    # Move to the new segment and call f(arg); the call leaves rsp = 8
    # (mod 16) at f's entry because rdx is 16-byte aligned.
    movq %rdx, %rsp
    callq *%rsi

    # Back to the old segment.
    movq %rbp, %rsp
    .cfi_def_cfa_register %rsp
    popq %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    ret
    .cfi_endproc
    .size procrt_call_on_segment, .-procrt_call_on_segment
