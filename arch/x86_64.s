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
# A proc that is queued before it first runs (spawned from outside a proc,
# or on the scheduler's stack) gets the same frame, so that the first
# switch into it pops it like any other, and "returns" into
# procrt_proc_entry:
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
# A proc spawned from inside a proc runs at once, and gets no frame:
# procrt_start takes the top, the entry, its argument and the limit in
# registers and sets up what the nine pops would have (see there).

# Return-address prediction: the `ret` of procrt_switch returns into
# whichever context is resumed, while the return-stack buffer predicts the
# outgoing context's caller. When both contexts were suspended from the
# same call chain (two procs blocking in the same function) every return is
# predicted; when they were not, each return up the chain that differs is
# mispredicted. That is the price of symmetric switching (any proc straight
# to any other, one switch per hand-off) against an asymmetric
# resume/suspend pair, which keeps call and return balanced. The commonest
# unbalanced pair, a spawn whose child runs to its end before the parent
# resumes, is balanced by procrt_start and procrt_proc_entry below: in
# skynet (a million such spawns) they cut the time by about 30%, on x86_64
# and on i686.

    .text

# The two halves of a switch, as macros: procrt_switch is "save, swap
# stacks, restore"; procrt_start saves and then enters a fresh proc;
# procrt_proc_entry ends a proc with the second half.
#
# FP_CONTROL_PUSH: pushes a word holding MXCSR (low half) and the x87
# control word (bytes 4-5) and zero padding (which keeps the word
# deterministic), and keeps the two in eax/ecx for SWITCH_RESTORE's
# comparison. The loads have the size and address of the stores, so they
# forward. MXCSR bits 0-5 are sticky exception flags, caller-saved per the
# ABI: only the control bits (6-15) are kept, so a proc that does inexact
# arithmetic does not take the slow path on every switch.
.macro FP_CONTROL_PUSH
    pushq $0
    .cfi_adjust_cfa_offset 8
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movl (%rsp), %eax
    andl $0xffc0, %eax
    movzwl 4(%rsp), %ecx
.endm

# SWITCH_SAVE: on entry rdi = where to store the outgoing stack pointer and
# rsp points at the return address. Pushes the callee-saved registers, the
# stack limit and the control word of a frame (layout above) and stores rsp
# in (%rdi). Leaves the outgoing MXCSR control bits in eax and the x87
# control word in ecx (FP_CONTROL_PUSH), for SWITCH_RESTORE. CFI: the CFA
# stays "rsp + 8 + what was pushed", and each register's slot is recorded
# as it is pushed.
.macro SWITCH_SAVE
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

    FP_CONTROL_PUSH

    movq %rsp, (%rdi)
.endm

# SWITCH_RESTORE: on entry rsp points at a suspended frame (layout above),
# eax/ecx hold the outgoing MXCSR control bits and x87 control word, and
# the CFI describes that frame (CFA = rsp + 72, registers in their slots).
# Restores the floating-point control state (only when it differs:
# ldmxcsr and fldcw are microcoded and slow, and procs almost never change
# their rounding mode), the stack limit and the callee-saved registers,
# leaving rsp at the frame's return address, and returns to it. The
# out-of-line reload sits after that, at the same stack state
# (remember/restore_state).
.macro SWITCH_RESTORE
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

    # Restore its callee-saved registers.
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

    # Out of line: the incoming context runs with other MXCSR or x87
    # control bits.
    .cfi_restore_state
2:
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    jmp 1b
.endm

# extern "sysv64" fn procrt_switch(save_sp: *mut usize, new_sp: usize);
#
# On entry: rdi = where to store the outgoing context's stack pointer,
#           rsi = the incoming context's saved stack pointer,
#           rsp points at our return address on the outgoing stack.
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
    movq %rsi, %rsp
    SWITCH_RESTORE
    .cfi_endproc
    .size procrt_switch, .-procrt_switch

# extern "sysv64" fn procrt_start(save_sp: *mut usize, top: usize,
#     entry: EntryFn, arg: *mut u8, limit: usize);
#
# Saves the running context, like procrt_switch, and enters a fresh proc
# that has no frame: the parent of a spawn, which waits while its child
# runs.
#
# On entry: rdi = where to store the outgoing context's stack pointer,
#           rsi = the child's stack top (16-byte aligned),
#           rdx = its entry function, rcx = the entry's argument,
#           r8 = the child segment's stack limit,
#           rsp points at our return address on the outgoing stack.
# Then:     running procrt_proc_entry on the child's stack, with rsp = top,
#           rbx = entry, r12 = arg, rbp = 0, the limit in %fs:0x70 and the
#           default MXCSR and x87 control word (loaded only when the
#           parent's differ: 0x1f80 and 0x037f, MXCSR_DEFAULT and
#           FPU_CW_DEFAULT of src/arch/native.rs). r9 carries the argument
#           across SWITCH_SAVE, which uses rcx. r13-r15 hold the parent's
#           values; a fresh proc does not read them.
#
# Return-address prediction: the way in is a `jmp`, so the return-stack
# buffer keeps the parent's return address on top while the child runs.
# When the child ends without blocking, its calls and returns balance
# above that entry, and the `ret` at the end of procrt_proc_entry that
# resumes the parent is predicted; so are the returns up the parent's
# chain after it. With a `ret` into the child, the way in and the way out
# would each be mispredicted, and so would every return up the parent's
# chain (it would pop the child's entries).
#
# Writing no frame saves the nine stores of one and their nine loads
# here: skynet, 21 interleaved runs, medians, 58.0 -> 55.8 ms (i686, where
# the arguments come on the stack anyway: 67.1 and 67.2 ms, 11 runs).
#
# CFI: until rsp moves, SWITCH_SAVE's rules describe the parent's frame.
# From then on this is the child's first frame, which has no caller
# (`DW_CFA_undefined rip`, as in procrt_proc_entry), with the CFA at rsp.
    .globl procrt_start
    .hidden procrt_start
    .type procrt_start,@function
    .p2align 4
procrt_start:
    .cfi_startproc
    movq %rcx, %r9
    SWITCH_SAVE
    movq %rsi, %rsp
    .cfi_def_cfa %rsp, 0
    .cfi_undefined %rip
    .cfi_restore %rbp
    .cfi_restore %rbx
    .cfi_restore %r12
    .cfi_restore %r13
    .cfi_restore %r14
    .cfi_restore %r15
    movq %r8, %fs:0x70
    cmpl $0x1f80, %eax
    jne 2f
    cmpw $0x037f, %cx
    jne 2f
1:
    movq %rdx, %rbx
    movq %r9, %r12
    xorl %ebp, %ebp
    jmp procrt_proc_entry

    # Out of line: the parent runs with other MXCSR or x87 control bits;
    # the child starts with the defaults. rax is free (its value was
    # pushed by SWITCH_SAVE); the scratch word lies below the top.
2:
    movabsq $0x037f00001f80, %rax
    pushq %rax
    .cfi_adjust_cfa_offset 8
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    popq %rax
    .cfi_adjust_cfa_offset -8
    jmp 1b
    .cfi_endproc
    .size procrt_start, .-procrt_start

# The first code a fresh proc runs: procrt_switch "returns" here into a
# prepared frame, or procrt_start jumps here.
#
# On entry: rsp = top of the proc's first segment (16-byte aligned),
#           rbx = the entry function,
#                 `extern "sysv64" fn(arg: *mut u8) -> usize`,
#           r12 = its argument,
#           rbp = 0.
# The entry function returns when the proc has ended, with the saved stack
# pointer of the context to resume in rax; its stack is dead from then on
# (the resumed context frees it). The second half of a switch resumes that
# context: the first half is not needed, as nothing will resume this one.
# Returning, rather than switching from deep in the entry function, keeps
# the return-stack buffer balanced (see procrt_start).
#
# CFI: `DW_CFA_undefined rip` says this frame has no caller, so gdb's `bt`
# and the unwinder behind std::backtrace stop here instead of walking into
# the stack's header as if it held frames. Panics never reach this frame:
# the entry function catches them (src/sched/proc.rs). Once rsp is on the
# incoming frame, the CFI describes that frame as procrt_switch's does.
    .globl procrt_proc_entry
    .hidden procrt_proc_entry
    .type procrt_proc_entry,@function
    .p2align 4
procrt_proc_entry:
    .cfi_startproc
    .cfi_undefined %rip
    movq %r12, %rdi
    callq *%rbx
    # The outgoing control state, for SWITCH_RESTORE's comparison, read
    # through a scratch word on the dead stack.
    movq %rax, %rsi
    FP_CONTROL_PUSH
    movq %rsi, %rsp
    .cfi_def_cfa %rsp, 72
    .cfi_offset %rip, -8
    .cfi_offset %rbp, -16
    .cfi_offset %rbx, -24
    .cfi_offset %r12, -32
    .cfi_offset %r13, -40
    .cfi_offset %r14, -48
    .cfi_offset %r15, -56
    SWITCH_RESTORE
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

# ===========================================================================
# Split-stack support: __morestack, __morestack_non_split
# ===========================================================================
#
# What a compiler's prologue expects
# ----------------------------------
# gcc and clang with -fsplit-stack begin every function F with a check of
# the stack pointer against the limit in the TCB slot %fs:0x70:
#
#     F:  lea  -FRAME(%rsp), %r11      # only when FRAME >= 256; small
#         cmp  %fs:0x70, %r11          #   frames compare %rsp itself
#         jb   1f                      # out of line: the slow path
#     ok: ...F's body...
#     1:  mov  $FRAME, %r10            # bytes F's frame needs
#         mov  $ARGS, %r11             # bytes of F's stack-passed arguments
#         call __morestack
#         ret                          # <- the return address points here
#         jmp  ok                      # entered just after that one-byte
#                                      # ret (gcc puts a jump to the body
#                                      # there; LLVM the body itself)
#
# A function whose frame is under 256 bytes compares %rsp with the slot
# before it allocates: it relies on 256 bytes of slack below the limit.
# Its own calls push return addresses below that, so on entry to
# __morestack %rsp may sit up to 256 + 16 bytes below the slot.
#
# What procrt provides
# --------------------
# - The slot holds the running segment's limit, `bottom + LIMIT_MARGIN`
#   (src/stack/mod.rs): 256 bytes of slack for small frames, 16 for the two
#   return addresses, and room for __morestack's own frame and the Rust
#   code it calls on the old segment (the role of libgcc's BACKOFF). The
#   switch saves and restores it with each stack (procrt_switch above).
# - __morestack: gets a segment from the running proc's chain (the spare
#   when it fits, else the pool, doubling, within the proc's max_stack:
#   the same `Chain` as stack::grow), copies F's stack-passed arguments to
#   it, sets the slot to its limit, calls F's body there, and when the
#   body returns, unlinks the segment (it becomes the chain's spare),
#   restores the slot and returns, through F's `ret`, to F's caller.
#   The registers that carry F's arguments (rdi, rsi, rdx, rcx, r8, r9,
#   rax: the vector count of a varargs call or gcc's copy of the static
#   chain, xmm0-7) reach the body unchanged; the registers that carry its
#   result (rax, rdx, xmm0, xmm1) reach the caller unchanged. The x87
#   stack (st0, st1: long double results) is never touched: the Rust code
#   called on the way back is SSE-only and makes no x87 instruction.
# - Outside any proc (no running chain: the scheduler's own stack, a
#   thread that never ran procrt) the slot is 0, so the prologue check
#   always passes and split code runs without splitting. Should the slot
#   hold something else there, __morestack runs the body in place (on the
#   current stack, arguments copied below its frame) with the slot set to
#   0 for the duration: it never calls into a pool that does not exist.
# - Unwinding: __morestack's CFI skips F's `ret` (the caller of
#   __morestack's frame is F's caller), so backtraces and unwinders walk
#   from F's body on the new segment to F's caller on the old one. A
#   landing pad (personality __gcc_personality_v0, the C personality from
#   libgcc_s, and the call-site table below) runs when an exception or a
#   Rust panic unwinds through the body: it restores the slot, unlinks the
#   segment and resumes unwinding (procrt_morestack_unwind).
# - __morestack_non_split: gold and lld turn a split function's call of
#   __morestack into a call of __morestack_non_split when the function
#   calls code compiled without split-stack (and lld makes a small-frame
#   function call it every time). It asks for 16 KiB more than the frame;
#   when the current segment already has that much, it enters F's body in
#   place, with no new segment.
#
# What is not supported
# ---------------------
# - A shared object that carries its own copy of libgcc's split-stack
#   runtime (libgcc.a's morestack.o linked into it, e.g. a library linked
#   by `gcc -fsplit-stack`): its __morestack, hidden in that object, would
#   call libgcc's allocator (__generic_morestack) on procrt's stacks.
#   Split code must bind to this __morestack: link it statically into the
#   executable with procrt (libgcc.a's copy is pulled only for an
#   undefined __morestack, and procrt's is defined first).
# - musl: its TCB has no __private_ss slot (see src/arch/mod.rs: the
#   fallback has no split-stack support at all).
# - __morestack_large_model (the large code model's variant) and x32's
#   %fs:0x40 slot.
# - Over the proc's max_stack, __morestack cannot raise a catchable panic
#   (split C code is not expected to be unwound through by its caller): it
#   ends the process with a message saying so, like a stack overflow.
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
# On entry: as __morestack below.
# If [F's entry rsp - r10 - 16 KiB] is still above the slot, returns
# straight into F's body: `incq (%rsp)` moves the return address past F's
# one-byte `ret`, and `ret` enters the body with rsp at F's entry value
# (this one return is mispredicted). Otherwise falls into __morestack with
# the 16 KiB added to the request.
    .globl __morestack_non_split
    .hidden __morestack_non_split
    .type __morestack_non_split,@function
    .p2align 4
__morestack_non_split:
    .cfi_startproc
    addq $0x4000, %r10
    pushq %rax
    .cfi_adjust_cfa_offset 8
    # F's entry rsp: above our return address and the saved rax.
    leaq 16(%rsp), %rax
    subq %r10, %rax
    cmpq %fs:0x70, %rax
    popq %rax
    .cfi_adjust_cfa_offset -8
    # popq leaves the flags of the compare.
    jb __morestack
    incq (%rsp)
    ret
    .cfi_endproc
    .size __morestack_non_split, .-__morestack_non_split

# extern "C" fn __morestack()  -- not callable from Rust.
#
# On entry: r10 = F's frame size, r11 = bytes of F's stack arguments,
#           the argument registers hold F's arguments,
#           rsp points at our return address (F's `ret`), F's own return
#           address above it, F's stack arguments above that.
#
# Our frame, on the old segment (rbp is 8 mod 16):
#
#     rbp+24  F's stack arguments (r11 bytes)
#     rbp+16  F's return address, into F's caller
#     rbp+8   our return address: F's `ret` instruction
#     rbp+0   saved rbp
#     rbp-8   the slot's value on entry
#     rbp-16  new stack pointer from procrt_morestack_acquire (0: in place)
#     rbp-24  r11 (bytes of stack arguments)
#     rbp-32  rax    rbp-40 rdi    rbp-48 rsi    rbp-56 rdx
#     rbp-64  rcx    rbp-72 r8     rbp-80 r9     rbp-88 (padding)
#     rbp-104 xmm0 ... rbp-216 xmm7 (16 bytes each)  <- rsp, 16-aligned
#
# The new segment, as the body sees it on entry:
#
#     new_sp + args  (segment top: the header above)
#     new_sp         copy of F's stack arguments; new_sp is 16-aligned
#     new_sp - 8     return address into __morestack   <- rsp
#
# CFI: CFA = rbp + 16 from the second instruction on, valid on either
# segment. The return address column (16, rip) is at CFA + 0, which is F's
# return address, and the caller's rsp is CFA + 8
# (`DW_CFA_val_offset_sf rsp, -1`: -1 times the data alignment, -8): the
# unwinder steps from F's body straight to F's caller, over F's `ret` that
# the return path goes through. No `.cfi_signal_frame` here: it would make
# the unwinder take F's caller's return address as an exact address, and
# its landing pads are found from the address minus one. gdb accepts the
# change of stacks because this frame is named __morestack.
    .globl __morestack
    .hidden __morestack
    .type __morestack,@function
    .p2align 4
__morestack:
    .cfi_startproc
    .cfi_personality 0x9b, procrt_gcc_personality_ref
    .cfi_lsda 0x1b, .Lmorestack_lsda
    pushq %rbp
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    movq %rsp, %rbp
    .cfi_def_cfa_register %rbp
    .cfi_offset 16, 0
    # 0x15: DW_CFA_val_offset_sf, register 7 (rsp), factored offset -1
    # (sleb128 0x7f): rsp of the caller = CFA + 8.
    .cfi_escape 0x15, 0x07, 0x7f
    subq $216, %rsp

    # Keep what we must give back: the slot, and F's arguments.
    movq %r11, -24(%rbp)
    movq %fs:0x70, %r11
    movq %r11, -8(%rbp)
    movq %rax, -32(%rbp)
    movq %rdi, -40(%rbp)
    movq %rsi, -48(%rbp)
    movq %rdx, -56(%rbp)
    movq %rcx, -64(%rbp)
    movq %r8, -72(%rbp)
    movq %r9, -80(%rbp)
    movups %xmm0, -104(%rbp)
    movups %xmm1, -120(%rbp)
    movups %xmm2, -136(%rbp)
    movups %xmm3, -152(%rbp)
    movups %xmm4, -168(%rbp)
    movups %xmm5, -184(%rbp)
    movups %xmm6, -200(%rbp)
    movups %xmm7, -216(%rbp)

    # new_sp = procrt_morestack_acquire(frame, &F's stack arguments,
    #                                   their size, boundary)
    # It links a segment to the running proc's chain, copies the arguments
    # to its top, sets the slot to its limit; or returns 0 outside procs.
    # rsp is 16-aligned here, as the call requires.
    movq %r10, %rdi
    leaq 24(%rbp), %rsi
    movq -24(%rbp), %rdx
    movq %rbp, %rcx
    call procrt_morestack_acquire
    movq %rax, -16(%rbp)
    testq %rax, %rax
    jz 3f
    movq %rax, %rsp

    # Enter F's body, one byte past our return address (F's `ret`), with
    # F's arguments back in their registers.
1:
    movq -32(%rbp), %rax
    movq -40(%rbp), %rdi
    movq -48(%rbp), %rsi
    movq -56(%rbp), %rdx
    movq -64(%rbp), %rcx
    movq -72(%rbp), %r8
    movq -80(%rbp), %r9
    movups -104(%rbp), %xmm0
    movups -120(%rbp), %xmm1
    movups -136(%rbp), %xmm2
    movups -152(%rbp), %xmm3
    movups -168(%rbp), %xmm4
    movups -184(%rbp), %xmm5
    movups -200(%rbp), %xmm6
    movups -216(%rbp), %xmm7
    movq 8(%rbp), %r11
    incq %r11
.Lmorestack_call_body:
    call *%r11
.Lmorestack_body_returned:

    # F's result is in rax, rdx, xmm0, xmm1 (and st0, st1, untouched).
    # Unlink the segment unless we ran in place; the release runs on the
    # segment it unlinks, which stays mapped as the chain's spare.
    cmpq $0, -16(%rbp)
    je 2f
    subq $48, %rsp
    movq %rax, 0(%rsp)
    movq %rdx, 8(%rsp)
    movups %xmm0, 16(%rsp)
    movups %xmm1, 32(%rsp)
    call procrt_morestack_release
    movq 0(%rsp), %rax
    movq 8(%rsp), %rdx
    movups 16(%rsp), %xmm0
    movups 32(%rsp), %xmm1
2:
    # Restore the slot and return to F's `ret`, which returns to F's
    # caller: every call so far is matched by its return.
    movq -8(%rbp), %r11
    movq %r11, %fs:0x70
    movq %rbp, %rsp
    .cfi_remember_state
    popq %rbp
    .cfi_restore %rbp
    .cfi_def_cfa %rsp, 8
    .cfi_restore 16
    .cfi_restore %rsp
    ret

    # In place (no running chain): copy F's stack arguments below our
    # frame, 16-aligned, and run the body with the slot at 0 (no checks).
    .cfi_restore_state
3:
    movq -24(%rbp), %rcx
    movq %rsp, %rdi
    subq %rcx, %rdi
    andq $-16, %rdi
    movq %rdi, %rsp
    leaq 24(%rbp), %rsi
    rep movsb
    movq $0, %fs:0x70
    jmp 1b

    # Landing pad: an exception or a panic unwinds through F's body.
    # rax = the exception object, rbp = our frame (restored by the
    # unwinder), rsp = new_sp. Put the slot back, then unlink the segment
    # and resume unwinding from Rust; the Rust function runs on the
    # segment it unlinks, still mapped (the chain's spare).
.Lmorestack_landing_pad:
    movq -8(%rbp), %r11
    movq %r11, %fs:0x70
    movq %rax, %rdi
    movq -16(%rbp), %rsi
    andq $-16, %rsp
    call procrt_morestack_unwind
    ud2
    .cfi_endproc
    .size __morestack, .-__morestack

# The language-specific data area of __morestack, read by
# __gcc_personality_v0: one call-site record covering the call of F's
# body, whose landing pad is .Lmorestack_landing_pad and whose action is 0
# (a cleanup). Any other address in __morestack has no record: the
# personality lets the unwinder pass.
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

# The personality, reached indirectly (encoding 0x9b: DW_EH_PE_indirect |
# DW_EH_PE_pcrel | DW_EH_PE_sdata4) through this word, which the dynamic
# linker fills with the address of __gcc_personality_v0 (libgcc_s).
    .section .data.rel.ro.procrt_gcc_personality_ref,"aw",@progbits
    .p2align 3
    .hidden procrt_gcc_personality_ref
    .type procrt_gcc_personality_ref,@object
    .size procrt_gcc_personality_ref, 8
procrt_gcc_personality_ref:
    .quad __gcc_personality_v0
    .text
