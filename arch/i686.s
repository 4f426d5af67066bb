# procrt context switch for i686 (System V i386 ABI, Linux, glibc). AT&T syntax.
#
# This file and arch/x86_64.s export the same symbols with the same meaning;
# read them side by side. src/arch/mod.rs declares the Rust signatures and
# pulls this file in with global_asm!.
#
# Calling convention
# ------------------
# Every routine here is an ordinary cdecl `extern "C"` function: arguments on
# the stack, eax/ecx/edx caller-saved. A switch saves only what the i386 ABI
# says a callee must preserve:
#
#   - ebx, esi, edi, ebp                   (callee-saved integer registers)
#   - MXCSR control bits and the x87 control word (Rust's i686 target has
#     SSE2, so MXCSR exists and governs SSE float arithmetic)
#   - the split-stack limit in the glibc TCB, %gs:0x30 (`__private_ss` of
#     tcbhead_t, asserted by glibc's sysdeps/i386/nptl/tls.h), saved and
#     restored with the stack it belongs to, written in this routine with
#     one gs-relative store.
#
# ebx is also the register position-independent i386 code keeps its GOT
# address in; saving it here is what keeps each context's notion of "its
# table" intact across switches.
#
# A suspended context: its saved stack pointer points at this frame
# ------------------------------------------------------------------
#
#     high  +------------------------------+
#           | ...  the context's frames    |
#           +------------------------------+
#   sp+28   | return address               |  into the caller of procrt_switch
#   sp+24   | ebp                          |
#   sp+20   | ebx                          |
#   sp+16   | esi                          |
#   sp+12   | edi                          |
#   sp+8    | stack limit (%gs:0x30)       |
#   sp+4    | x87 CW (2) | 0 (2)           |
#   sp+0    | MXCSR                        |
#     low   +------------------------------+  <- saved stack pointer
#
# A fresh proc, as src/arch/mod.rs prepares it
# --------------------------------------------
#
#     high  +------------------------------+  <- top: 16-byte aligned
#   sp+28   | procrt_proc_entry            |  "return address"
#   sp+24   | 0                            |  ebp: ends frame-pointer walks
#   sp+20   | entry function               |  ebx
#   sp+16   | entry argument               |  esi
#   sp+12   | 0                            |  edi
#   sp+8    | the segment's stack limit    |
#   sp+4    | 0x037f                       |  default x87 CW
#   sp+0    | 0x1f80                       |  default MXCSR
#     low   +------------------------------+  <- initial saved sp = top - 32
#
# Alignment: after the pops the stack pointer equals `top` (16-byte aligned);
# procrt_proc_entry subtracts 12 and pushes the argument, so its `call` is
# made with esp = 0 (mod 16), as the i386 ABI requires.
#
# Return-address prediction: as on x86_64, the `ret` below is predicted
# when both contexts were suspended from the same call chain, and
# mispredicted otherwise (the price of symmetric switching).

    .text

# extern "C" fn procrt_switch(save_sp: *mut usize, new_sp: usize);
#
# On entry: 4(%esp) = where to store the outgoing context's stack pointer,
#           8(%esp) = the incoming context's saved stack pointer,
#           0(%esp) = our return address on the outgoing stack.
# On return: running on the incoming stack, with its callee-saved registers,
#           MXCSR, x87 control word and stack limit restored.
    .globl procrt_switch
    .hidden procrt_switch
    .type procrt_switch,@function
    .p2align 4
procrt_switch:
    .cfi_startproc
    # Fetch both arguments before the pushes move them.
    movl 4(%esp), %ecx
    movl 8(%esp), %edx

    # Save the callee-saved registers on the outgoing stack.
    pushl %ebp
    .cfi_adjust_cfa_offset 4
    .cfi_rel_offset %ebp, 0
    pushl %ebx
    .cfi_adjust_cfa_offset 4
    .cfi_rel_offset %ebx, 0
    pushl %esi
    .cfi_adjust_cfa_offset 4
    .cfi_rel_offset %esi, 0
    pushl %edi
    .cfi_adjust_cfa_offset 4
    .cfi_rel_offset %edi, 0

    # Save the outgoing stack's split-stack limit.
    movl %gs:0x30, %eax
    pushl %eax
    .cfi_adjust_cfa_offset 4

    # Save MXCSR and the x87 control word into two zeroed words (the zero
    # upper half of the second keeps the frame deterministic).
    pushl $0
    .cfi_adjust_cfa_offset 4
    pushl $0
    .cfi_adjust_cfa_offset 4
    stmxcsr (%esp)
    fnstcw 4(%esp)

    # Swap stacks. The incoming stack holds a frame of the same layout, so
    # the CFA rules above stay true after the move. ecx is free once used.
    # MXCSR bits 0-5 are sticky exception flags, caller-saved: only the
    # control bits (6-15) are compared.
    movl %esp, (%ecx)
    movl (%esp), %eax
    andl $0xffc0, %eax
    movzwl 4(%esp), %ecx
    movl %edx, %esp

    # Restore the incoming context's floating-point control state, but only
    # when it differs: ldmxcsr and fldcw are microcoded and slow, and
    # procs almost never change their rounding mode. eax/ecx hold the
    # outgoing values (same-size loads of the stores above: they forward).
    movl (%esp), %edx
    andl $0xffc0, %edx
    cmpl %edx, %eax
    jne 2f
    cmpw 4(%esp), %cx
    jne 2f
    .cfi_remember_state
1:
    addl $8, %esp
    .cfi_adjust_cfa_offset -8

    # Restore its split-stack limit into the TCB slot.
    popl %eax
    .cfi_adjust_cfa_offset -4
    movl %eax, %gs:0x30

    # Restore its callee-saved registers and return into it.
    popl %edi
    .cfi_adjust_cfa_offset -4
    .cfi_restore %edi
    popl %esi
    .cfi_adjust_cfa_offset -4
    .cfi_restore %esi
    popl %ebx
    .cfi_adjust_cfa_offset -4
    .cfi_restore %ebx
    popl %ebp
    .cfi_adjust_cfa_offset -4
    .cfi_restore %ebp
    ret

    # Out of line: the incoming context runs with other MXCSR or x87 control
    # bits. Same stack state as at 1: above.
    .cfi_restore_state
2:
    ldmxcsr (%esp)
    fldcw 4(%esp)
    jmp 1b
    .cfi_endproc
    .size procrt_switch, .-procrt_switch

# The first code a fresh proc runs: procrt_switch "returns" here.
#
# On entry: esp = top of the proc's first segment (16-byte aligned),
#           ebx = the entry function, `extern "C" fn(arg: *mut u8) -> !`,
#           esi = its argument,
#           ebp = 0.
# The entry function never returns; `ud2` makes a return a loud fault.
#
# CFI: `DW_CFA_undefined eip` says this frame has no caller, so backtraces
# stop here cleanly.
    .globl procrt_proc_entry
    .hidden procrt_proc_entry
    .type procrt_proc_entry,@function
    .p2align 4
procrt_proc_entry:
    .cfi_startproc
    .cfi_undefined %eip
    subl $12, %esp
    pushl %esi
    calll *%ebx
    ud2
    .cfi_endproc
    .size procrt_proc_entry, .-procrt_proc_entry

# extern "C" fn procrt_call_on_segment(arg: *mut u8, f: extern "C" fn(*mut u8), sp: usize);
#
# Runs f(arg) with the stack pointer at `sp` (the top of a freshly linked
# segment, 16-byte aligned), then returns on the original stack.
#
# On entry: 4(%esp) = arg, 8(%esp) = f, 12(%esp) = new stack pointer,
#           0(%esp) = our return address on the old segment.
# f must not unwind (the Rust side catches and resumes panics).
#
# CFI: as on x86_64, the CFA is ebp-based (CFA = ebp + 8) while esp lives on
# the new segment, so unwinders walk from f's frames into the caller's on
# the old segment; `.cfi_signal_frame` lets gdb accept the unordered
# addresses. gdb prints this frame as `<signal handler called>`.
    .globl procrt_call_on_segment
    .hidden procrt_call_on_segment
    .type procrt_call_on_segment,@function
    .p2align 4
procrt_call_on_segment:
    .cfi_startproc
    .cfi_signal_frame
    pushl %ebp
    .cfi_adjust_cfa_offset 4
    .cfi_rel_offset %ebp, 0
    movl %esp, %ebp
    .cfi_def_cfa_register %ebp

    # Load the arguments (relative to ebp now), move to the new segment,
    # and call f(arg) with esp = 0 (mod 16) at the call.
    movl 8(%ebp), %eax
    movl 12(%ebp), %ecx
    movl 16(%ebp), %edx
    movl %edx, %esp
    subl $12, %esp
    pushl %eax
    calll *%ecx

    # Back to the old segment.
    movl %ebp, %esp
    .cfi_def_cfa_register %esp
    popl %ebp
    .cfi_adjust_cfa_offset -4
    .cfi_restore %ebp
    ret
    .cfi_endproc
    .size procrt_call_on_segment, .-procrt_call_on_segment
