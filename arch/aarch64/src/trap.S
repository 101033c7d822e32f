/*
 * Exception vectors, the trap frame, and the small assembly helpers that need
 * fixed instruction addresses (fault probes, semihosting, PSCI).
 *
 * Trap frame (816 bytes, 16-aligned; `TrapFrame` in exception.rs):
 *     0  x0..x30          248 sp            256 elr     264 spsr
 *   272  esr              280 far           288 fpcr    296 fpsr
 *   304  q0..q31 (512 bytes)
 * FP/SIMD registers are saved because the Rust handlers use them freely.
 * `sp` is SP_EL0 for exceptions from EL0, else the interrupted SP_EL1.
 *
 * Kinds passed to `arch_exception(frame, kind)`: the vector index 0..15
 * (EL1t sync/irq/fiq/serror, EL1h ..., EL0 AArch64 ..., EL0 AArch32 ...),
 * and KIND_OVERFLOW (16) for a synchronous exception at EL1h taken with SP
 * within a page of this CPU's current stack limit (`PerCpu::stack_limit`,
 * through TPIDR_EL1): the handler then runs on this CPU's emergency stack,
 * and the faulting SP is in SP_EL0.
 */

.equ FRAME_SIZE, 816
.equ KIND_OVERFLOW, 16
.equ PERCPU_STACK_LIMIT, 0
.equ PERCPU_EMERGENCY_TOP, 16

.macro VENTRY kind
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp]
    mov     x0, #\kind
    b       arch_exc_common
.endm

.section .text.vectors, "ax"
.balign 2048
.global arch_exception_vectors
arch_exception_vectors:
    VENTRY 0
    VENTRY 1
    VENTRY 2
    VENTRY 3

    /* EL1h synchronous: check for a stack overflow first, against this
     * CPU's limit (TPIDR_EL1 = its PerCpu, percpu.rs: +0 stack limit,
     * +16 emergency stack top).  x0 is parked in SP_EL0, free at EL1 (an
     * EL0 context's SP_EL0 is in its trap frame). */
    .balign 0x80
    msr     sp_el0, x0
    mrs     x0, tpidr_el1
    ldr     x0, [x0, #PERCPU_STACK_LIMIT]
    sub     x0, sp, x0
    add     x0, x0, #4096
    cmp     x0, #(2 << 12)          /* limit - 4K <= sp < limit + 4K */
    b.lo    .Loverflow
    mrs     x0, sp_el0
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp]
    mov     x0, #4
    b       arch_exc_common
.Loverflow:
    /* A frame on this CPU's emergency stack; the faulting SP goes to SP_EL0. */
    mrs     x0, tpidr_el1
    ldr     x0, [x0, #PERCPU_EMERGENCY_TOP]
    sub     x0, x0, #FRAME_SIZE
    str     x1, [x0, #8]
    mov     x1, sp
    mov     sp, x0
    mrs     x0, sp_el0
    str     x0, [sp]
    msr     sp_el0, x1
    ldr     x1, [sp, #8]
    mov     x0, #KIND_OVERFLOW
    b       arch_exc_common

    VENTRY 5
    VENTRY 6
    VENTRY 7
    VENTRY 8
    VENTRY 9
    VENTRY 10
    VENTRY 11
    VENTRY 12
    VENTRY 13
    VENTRY 14
    VENTRY 15

arch_exc_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mov     x19, x0                 /* kind, callee-saved across the call */
    add     x9, sp, #FRAME_SIZE
    cmp     x19, #8
    b.lo    1f
    cmp     x19, #15
    b.hi    1f
    mrs     x9, sp_el0              /* from EL0: the user stack pointer */
1:
    str     x9, [sp, #248]
    mrs     x9, elr_el1
    mrs     x10, spsr_el1
    stp     x9, x10, [sp, #256]
    mrs     x9, esr_el1
    mrs     x10, far_el1
    stp     x9, x10, [sp, #272]
    mrs     x9, fpcr
    mrs     x10, fpsr
    stp     x9, x10, [sp, #288]
    add     x9, sp, #304
    stp     q0, q1, [x9, #0]
    stp     q2, q3, [x9, #32]
    stp     q4, q5, [x9, #64]
    stp     q6, q7, [x9, #96]
    stp     q8, q9, [x9, #128]
    stp     q10, q11, [x9, #160]
    stp     q12, q13, [x9, #192]
    stp     q14, q15, [x9, #224]
    stp     q16, q17, [x9, #256]
    stp     q18, q19, [x9, #288]
    stp     q20, q21, [x9, #320]
    stp     q22, q23, [x9, #352]
    stp     q24, q25, [x9, #384]
    stp     q26, q27, [x9, #416]
    stp     q28, q29, [x9, #448]
    stp     q30, q31, [x9, #480]

    mov     x0, sp
    mov     x1, x19
    mov     x29, xzr
    bl      arch_exception

/* The restore path; `arch_enter_user` (user.rs) enters here with SP = a
 * frame and x19 = 8 (EL0) to start a user context. */
.global arch_exc_return
arch_exc_return:
    add     x9, sp, #304
    ldp     q0, q1, [x9, #0]
    ldp     q2, q3, [x9, #32]
    ldp     q4, q5, [x9, #64]
    ldp     q6, q7, [x9, #96]
    ldp     q8, q9, [x9, #128]
    ldp     q10, q11, [x9, #160]
    ldp     q12, q13, [x9, #192]
    ldp     q14, q15, [x9, #224]
    ldp     q16, q17, [x9, #256]
    ldp     q18, q19, [x9, #288]
    ldp     q20, q21, [x9, #320]
    ldp     q22, q23, [x9, #352]
    ldp     q24, q25, [x9, #384]
    ldp     q26, q27, [x9, #416]
    ldp     q28, q29, [x9, #448]
    ldp     q30, q31, [x9, #480]
    ldp     x9, x10, [sp, #288]
    msr     fpcr, x9
    msr     fpsr, x10
    ldp     x9, x10, [sp, #256]
    msr     elr_el1, x9
    msr     spsr_el1, x10
    cmp     x19, #8
    b.lo    2f
    cmp     x19, #15
    b.hi    2f
    ldr     x9, [sp, #248]
    msr     sp_el0, x9
2:
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #FRAME_SIZE
    eret

/*
 * Fault probes.  Each faulting instruction has an `.ex_table` entry
 * {instruction, fixup}; for probe_exec the entry names the `blr` and the
 * handler matches it against LR - 4 (the fault is at the branch target).
 * All return 0 on success, 1 if a fault was caught (x0 set by the fixup).
 */
.section .text.probe, "ax"

/* u64 arch_probe_read(va, *mut u64 out) */
.global arch_probe_read
arch_probe_read:
.Lpr_insn:
    ldr     x2, [x0]
    str     x2, [x1]
    mov     x0, #0
    ret
.Lpr_fix:
    mov     x0, #1
    ret

/* u64 arch_probe_write(va, value) */
.global arch_probe_write
arch_probe_write:
.Lpw_insn:
    str     x1, [x0]
    mov     x0, #0
    ret
.Lpw_fix:
    mov     x0, #1
    ret

/* u64 arch_probe_exec(va) */
.global arch_probe_exec
arch_probe_exec:
    stp     x29, x30, [sp, #-16]!
    mov     x29, sp
.Lpx_insn:
    blr     x0
    mov     x0, #0
    ldp     x29, x30, [sp], #16
    ret
.Lpx_fix:
    mov     x0, #1
    ldp     x29, x30, [sp], #16
    ret

/* A function that only returns: a known-good target for probe_exec. */
.global arch_probe_ret
arch_probe_ret:
    ret

.section .ex_table, "a"
.balign 8
    .quad .Lpr_insn, .Lpr_fix
    .quad .Lpw_insn, .Lpw_fix
    .quad .Lpx_insn, .Lpx_fix

/*
 * Leaving QEMU.  Both instructions may be UNDEFINED (HLT without
 * `-semihosting`, HVC/SMC without a PSCI conduit): the exception handler
 * recognises their addresses and skips them, so `exit` never recurses.
 */
.section .text.exit, "ax"

/* arch_semihost_exit(code): SYS_EXIT with ADP_Stopped_ApplicationExit. */
.global arch_semihost_exit
arch_semihost_exit:
    sub     sp, sp, #16
    mov     x1, #0x0026
    movk    x1, #0x2, lsl #16
    stp     x1, x0, [sp]
    mov     x1, sp
    mov     x0, #0x18
.global arch_semihost_hlt
arch_semihost_hlt:
    hlt     #0xf000
    add     sp, sp, #16
    ret

/* u64 arch_psci_call_hvc(fn, a1, a2, a3) / arch_psci_call_smc(...) */
.global arch_psci_call_hvc
arch_psci_call_hvc:
.global arch_psci_hvc_insn
arch_psci_hvc_insn:
    hvc     #0
    ret

.global arch_psci_call_smc
arch_psci_call_smc:
.global arch_psci_smc_insn
arch_psci_smc_insn:
    smc     #0
    ret
