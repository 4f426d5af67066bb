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
# (for a proc queued before it first runs; one spawned from inside a proc
# gets no frame: procrt_start sets up what the pops would have)
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
# Return-address prediction: as on x86_64, the `ret` of procrt_switch is
# predicted when both contexts were suspended from the same call chain,
# and mispredicted otherwise (the price of symmetric switching);
# procrt_start and procrt_proc_entry keep a spawn that runs its child to
# the end predicted.

    .text

# The two halves of a switch, as macros, as in arch/x86_64.s: procrt_switch
# is "save, swap stacks, restore"; procrt_start saves and then enters a
# fresh proc; procrt_proc_entry ends a proc with the second half.
#
# FP_CONTROL_PUSH: pushes MXCSR and the x87 control word as two words
# (the zero upper half of the second keeps the frame deterministic), and
# keeps the two in eax/ecx for SWITCH_RESTORE's comparison. The loads have
# the size and address of the stores: they forward. MXCSR bits 0-5 are
# sticky exception flags, caller-saved: only the control bits (6-15) are
# kept.
.macro FP_CONTROL_PUSH
    pushl $0
    .cfi_adjust_cfa_offset 4
    pushl $0
    .cfi_adjust_cfa_offset 4
    stmxcsr (%esp)
    fnstcw 4(%esp)
    movl (%esp), %eax
    andl $0xffc0, %eax
    movzwl 4(%esp), %ecx
.endm

# SWITCH_SAVE: on entry 0(%esp) = the return address, 4(%esp) = where to
# store the outgoing stack pointer, 8(%esp) = the incoming saved stack
# pointer. Pushes the callee-saved registers, the stack limit and the
# control words of a frame (layout above) and stores esp through the first
# argument. Leaves the outgoing MXCSR control bits in eax, the x87 control
# word in ecx (FP_CONTROL_PUSH) and the incoming stack pointer in edx, for
# SWITCH_RESTORE.
.macro SWITCH_SAVE
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

    # The save pointer moves to edi (saved above, so free), as
    # FP_CONTROL_PUSH leaves its results in eax and ecx.
    movl %ecx, %edi
    FP_CONTROL_PUSH
    movl %esp, (%edi)
.endm

# SWITCH_RESTORE: on entry esp points at a suspended frame (layout above),
# eax/ecx hold the outgoing MXCSR control bits and x87 control word, and
# the CFI describes that frame (CFA = esp + 32, registers in their slots).
# Restores the floating-point control state (only when it differs:
# ldmxcsr and fldcw are microcoded and slow, and procs almost never change
# their rounding mode), the stack limit and the callee-saved registers,
# and returns to the frame's return address. The out-of-line reload sits
# after that, at the same stack state (remember/restore_state).
.macro SWITCH_RESTORE
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

    # Restore its callee-saved registers.
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

    # Out of line: the incoming context runs with other MXCSR or x87
    # control bits.
    .cfi_restore_state
2:
    ldmxcsr (%esp)
    fldcw 4(%esp)
    jmp 1b
.endm

# extern "C" fn procrt_switch(save_sp: *mut usize, new_sp: usize);
#
# On entry: 4(%esp) = where to store the outgoing context's stack pointer,
#           8(%esp) = the incoming context's saved stack pointer,
#           0(%esp) = our return address on the outgoing stack.
# On return: running on the incoming stack, with its callee-saved registers,
#           MXCSR, x87 control word and stack limit restored.
# Swapping stacks keeps the CFA rules true: the incoming stack holds a
# frame of the same layout.
    .globl procrt_switch
    .hidden procrt_switch
    .type procrt_switch,@function
    .p2align 4
procrt_switch:
    .cfi_startproc
    SWITCH_SAVE
    movl %edx, %esp
    SWITCH_RESTORE
    .cfi_endproc
    .size procrt_switch, .-procrt_switch

# extern "C" fn procrt_start(save_sp: *mut usize, top: usize,
#     entry: EntryFn, arg: *mut u8, limit: usize);
#
# Saves the running context, like procrt_switch, and enters a fresh proc
# that has no frame (see procrt_start in arch/x86_64.s: the parent of a
# spawn, the `jmp` that keeps its return address on the return-stack
# buffer).
#
# On entry: 4(%esp) = where to store the outgoing stack pointer,
#           8(%esp) = the child's stack top (16-byte aligned),
#           12(%esp) = its entry function, 16(%esp) = the entry's argument,
#           20(%esp) = the child segment's stack limit,
#           0(%esp) = our return address on the outgoing stack.
# SWITCH_SAVE leaves the top in edx and pushes seven words, so the last
# three arguments are then at 40, 44 and 48(%esp). ebx, esi and edi were
# saved, so they are free: entry, argument and limit go there.
# Then:     running procrt_proc_entry on the child's stack, with esp = top,
#           ebx = entry, esi = arg, ebp = 0, the limit in %gs:0x30 and the
#           default MXCSR and x87 control word (loaded only when the
#           parent's differ: 0x1f80 and 0x037f, MXCSR_DEFAULT and
#           FPU_CW_DEFAULT of src/arch/native.rs).
#
# CFI: until esp moves, SWITCH_SAVE's rules describe the parent's frame;
# from then on this is the child's first frame, which has no caller
# (`DW_CFA_undefined eip`), with the CFA at esp.
    .globl procrt_start
    .hidden procrt_start
    .type procrt_start,@function
    .p2align 4
procrt_start:
    .cfi_startproc
    SWITCH_SAVE
    movl 40(%esp), %ebx
    movl 44(%esp), %esi
    movl 48(%esp), %edi
    movl %edx, %esp
    .cfi_def_cfa %esp, 0
    .cfi_undefined %eip
    .cfi_restore %ebp
    .cfi_restore %ebx
    .cfi_restore %esi
    .cfi_restore %edi
    movl %edi, %gs:0x30
    cmpl $0x1f80, %eax
    jne 2f
    cmpw $0x037f, %cx
    jne 2f
1:
    xorl %ebp, %ebp
    jmp procrt_proc_entry

    # Out of line: the parent runs with other MXCSR or x87 control bits;
    # the child starts with the defaults, loaded from two scratch words
    # below the top.
2:
    pushl $0x037f
    .cfi_adjust_cfa_offset 4
    pushl $0x1f80
    .cfi_adjust_cfa_offset 4
    ldmxcsr (%esp)
    fldcw 4(%esp)
    addl $8, %esp
    .cfi_adjust_cfa_offset -8
    jmp 1b
    .cfi_endproc
    .size procrt_start, .-procrt_start

# The first code a fresh proc runs: procrt_switch "returns" here into a
# prepared frame, or procrt_start jumps here.
#
# On entry: esp = top of the proc's first segment (16-byte aligned),
#           ebx = the entry function, `extern "C" fn(arg: *mut u8) -> usize`,
#           esi = its argument,
#           ebp = 0.
# The entry function returns when the proc has ended, with the saved stack
# pointer of the context to resume in eax; the second half of a switch
# resumes it (see procrt_proc_entry in arch/x86_64.s).
#
# CFI: `DW_CFA_undefined eip` says this frame has no caller, so backtraces
# stop here cleanly. Once esp is on the incoming frame, the CFI describes
# that frame as procrt_switch's does.
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
    # The outgoing control state, for SWITCH_RESTORE's comparison, read
    # through two scratch words on the dead stack.
    movl %eax, %edx
    FP_CONTROL_PUSH
    movl %edx, %esp
    .cfi_def_cfa %esp, 32
    .cfi_offset %eip, -4
    .cfi_offset %ebp, -8
    .cfi_offset %ebx, -12
    .cfi_offset %esi, -16
    .cfi_offset %edi, -20
    SWITCH_RESTORE
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

# ===========================================================================
# Split-stack support: __morestack, __morestack_non_split
# ===========================================================================
#
# Read the same section of arch/x86_64.s first; this one notes only where
# i386 differs.
#
# What a compiler's prologue expects
# ----------------------------------
#     F:  lea  -FRAME(%esp), %ecx      # only when FRAME >= 256
#         cmp  %gs:0x30, %ecx          # small frames compare %esp itself
#         jb   1f
#     ok: ...F's body...
#     1:  push $ARGS                   # bytes of F's stack arguments
#         push $FRAME                  # bytes F's frame needs
#         call __morestack             # pops both words on return (ret $8)
#         ret                          # or `ret $N` (c2 iw, 3 bytes) when F
#                                      # pops its arguments (a struct return)
#         jmp  ok                      # entered just after that ret
#
# eax, ecx and edx may carry arguments (regparm, fastcall, gcc's static
# chain in ecx); all three reach the body unchanged. F's result comes back
# in eax, edx (integers), st0 (float, double, long double: never touched)
# or xmm0 (vectors); eax, edx and xmm0 are kept across the release.
#
# What procrt provides, and what it does not: as on x86_64, with the slot
# at %gs:0x30.
#
# Not supported beyond the x86_64 list: unwinding through a split frame of
# a function that pops its own arguments (`ret $N`) reports a caller's esp
# N bytes too low; a caller whose CFA is esp-based then unwinds wrongly.
#
# extern "C" fn procrt_morestack_acquire(frame: usize, args: *const u8,
#     args_size: usize, boundary: usize) -> usize   (src/stack/morestack.rs)
# extern "C" fn procrt_morestack_release()
# extern "C-unwind" fn procrt_morestack_unwind(exception: *mut u8, linked: usize) -> !
    .hidden procrt_morestack_acquire
    .hidden procrt_morestack_release
    .hidden procrt_morestack_unwind

# extern "C" fn __morestack_non_split()  -- not callable from Rust.
#
# On entry: as __morestack below. Adds 16 KiB to the requested frame; when
# the current segment has that much above the slot, enters F's body in
# place: the body's address replaces the argument-size word, and after
# dropping our return address and the frame-size word, `ret` jumps there
# with esp at F's entry value.
    .globl __morestack_non_split
    .hidden __morestack_non_split
    .type __morestack_non_split,@function
    .p2align 4
__morestack_non_split:
    .cfi_startproc
    addl $0x4000, 4(%esp)
    pushl %eax
    .cfi_adjust_cfa_offset 4
    # 0(%esp) eax, 4 our return address, 8 frame, 12 args, 16 F's return
    # address: F's entry esp is esp + 16.
    leal 16(%esp), %eax
    subl 8(%esp), %eax
    cmpl %gs:0x30, %eax
    jb 2f
    .cfi_remember_state
    # Enter the body: skip F's `ret` (c3) or `ret $N` (c2 iw).
    movl 4(%esp), %eax
    cmpb $0xc3, (%eax)
    je 1f
    addl $2, %eax
1:
    incl %eax
    movl %eax, 12(%esp)
    popl %eax
    .cfi_adjust_cfa_offset -4
    # From here the word at esp is the body's address, taken for the
    # return address (for the one instruction left).
    addl $8, %esp
    .cfi_def_cfa_offset 4
    ret
    .cfi_restore_state
2:
    popl %eax
    # Absolute, not adjusted: the assembler's running offset does not
    # follow .cfi_restore_state.
    .cfi_def_cfa_offset 4
    jmp __morestack
    .cfi_endproc
    .size __morestack_non_split, .-__morestack_non_split

# extern "C" fn __morestack()  -- not callable from Rust.
#
# On entry: 0(%esp) our return address (F's `ret`), 4(%esp) F's frame
# size, 8(%esp) bytes of F's stack arguments, 12(%esp) F's return
# address, 16(%esp) F's stack arguments; eax, ecx, edx may hold arguments.
#
# Our frame, on the old segment (ebp is 12 mod 16):
#
#     ebp+20  F's stack arguments        ebp+16  F's return address
#     ebp+12  bytes of stack arguments   ebp+8   F's frame size
#     ebp+4   our return address         ebp+0   saved ebp
#     ebp-4   the slot's value on entry
#     ebp-8   new stack pointer from procrt_morestack_acquire (0: in place)
#     ebp-12  eax    ebp-16 ecx    ebp-20 edx
#     ebp-24  address of F's body
#     ebp-40  xmm0   ebp-56 xmm1   ebp-72 xmm2   ebp-76 (padding) <- esp
#
# CFI: CFA = ebp + 8; the return address column (8, eip) is at CFA + 8
# (F's return address) and the caller's esp is CFA + 12
# (`DW_CFA_val_offset_sf esp, -3`: -3 times the data alignment, -4), so
# the unwinder steps from F's body to F's caller, as on x86_64.
    .globl __morestack
    .hidden __morestack
    .type __morestack,@function
    .p2align 4
__morestack:
    .cfi_startproc
    .cfi_personality 0x9b, procrt_gcc_personality_ref
    .cfi_lsda 0x1b, .Lmorestack_lsda
    pushl %ebp
    .cfi_def_cfa_offset 8
    .cfi_offset %ebp, -8
    movl %esp, %ebp
    .cfi_def_cfa_register %ebp
    .cfi_offset 8, 8
    # 0x15: DW_CFA_val_offset_sf, register 4 (esp), factored offset -3
    # (sleb128 0x7d): esp of the caller = CFA + 12.
    .cfi_escape 0x15, 0x04, 0x7d
    subl $76, %esp

    movl %eax, -12(%ebp)
    movl %ecx, -16(%ebp)
    movl %edx, -20(%ebp)
    movl %gs:0x30, %eax
    movl %eax, -4(%ebp)
    movups %xmm0, -40(%ebp)
    movups %xmm1, -56(%ebp)
    movups %xmm2, -72(%ebp)

    # The body: one byte past our return address (c3), or three (c2 iw).
    movl 4(%ebp), %eax
    cmpb $0xc3, (%eax)
    je 1f
    addl $2, %eax
1:
    incl %eax
    movl %eax, -24(%ebp)

    # new_sp = procrt_morestack_acquire(frame, &F's stack arguments,
    #                                   their size, boundary)
    # esp is 16-aligned at the call (ebp - 76 - 16).
    pushl %ebp
    pushl 12(%ebp)
    leal 20(%ebp), %eax
    pushl %eax
    pushl 8(%ebp)
    call procrt_morestack_acquire
    addl $16, %esp
    movl %eax, -8(%ebp)
    testl %eax, %eax
    jz 3f
    movl %eax, %esp

    # Enter F's body with its argument registers restored.
2:
    movl -12(%ebp), %eax
    movl -16(%ebp), %ecx
    movl -20(%ebp), %edx
    movups -40(%ebp), %xmm0
    movups -56(%ebp), %xmm1
    movups -72(%ebp), %xmm2
.Lmorestack_call_body:
    call *-24(%ebp)
.Lmorestack_body_returned:

    # The result is in eax, edx, xmm0 (and st0, untouched). The body may
    # have popped its arguments (ret $N): realign before calling Rust.
    cmpl $0, -8(%ebp)
    je 4f
    andl $-16, %esp
    subl $32, %esp
    movl %eax, 0(%esp)
    movl %edx, 4(%esp)
    movups %xmm0, 16(%esp)
    call procrt_morestack_release
    movl 0(%esp), %eax
    movl 4(%esp), %edx
    movups 16(%esp), %xmm0
4:
    movl -4(%ebp), %ecx
    movl %ecx, %gs:0x30
    movl %ebp, %esp
    .cfi_remember_state
    popl %ebp
    .cfi_restore %ebp
    .cfi_def_cfa %esp, 4
    .cfi_restore 8
    .cfi_restore %esp
    # Drop the frame-size and argument-size words as we return to F's
    # `ret`, which returns to F's caller.
    ret $8

    # In place (no running chain): copy F's stack arguments (a multiple
    # of 4 bytes) below our frame, 16-aligned, and run the body with the
    # slot at 0.
    .cfi_restore_state
3:
    movl 12(%ebp), %ecx
    movl %esp, %edx
    subl %ecx, %edx
    andl $-16, %edx
    movl %edx, %esp
5:
    subl $4, %ecx
    jb 6f
    movl 20(%ebp,%ecx), %eax
    movl %eax, (%edx,%ecx)
    jmp 5b
6:
    movl $0, %gs:0x30
    jmp 2b

    # Landing pad: eax = the exception object, ebp = our frame. Put the
    # slot back, then unlink the segment and resume unwinding from Rust.
.Lmorestack_landing_pad:
    movl -4(%ebp), %ecx
    movl %ecx, %gs:0x30
    andl $-16, %esp
    subl $8, %esp
    pushl -8(%ebp)
    pushl %eax
    call procrt_morestack_unwind
    ud2
    .cfi_endproc
    .size __morestack, .-__morestack

# The LSDA read by __gcc_personality_v0: one cleanup covering the call of
# F's body (see arch/x86_64.s).
    .section .gcc_except_table,"a",@progbits
    .p2align 2
.Lmorestack_lsda:
    .byte 0xff                      # @LPStart encoding: omitted (function start)
    .byte 0xff                      # @TType encoding: omitted (no types)
    .byte 0x01                      # call-site encoding: DW_EH_PE_uleb128
    .uleb128 .Lmorestack_cs_end - .Lmorestack_cs_begin
.Lmorestack_cs_begin:
    .uleb128 .Lmorestack_call_body - __morestack                # start
    .uleb128 .Lmorestack_body_returned - .Lmorestack_call_body  # length
    .uleb128 .Lmorestack_landing_pad - __morestack              # landing pad
    .uleb128 0                                                  # action: cleanup
.Lmorestack_cs_end:

# The word through which the personality is reached (encoding 0x9b),
# filled by the dynamic linker with __gcc_personality_v0's address.
    .section .data.rel.ro.procrt_gcc_personality_ref,"aw",@progbits
    .p2align 2
    .hidden procrt_gcc_personality_ref
    .type procrt_gcc_personality_ref,@object
    .size procrt_gcc_personality_ref, 4
procrt_gcc_personality_ref:
    .long __gcc_personality_v0
    .text
