/*
 * Secondary CPU entry: PSCI CPU_ON starts a CPU here, at the *physical*
 * address of `arch_secondary_entry`, MMU and caches off, at the EL the boot
 * CPU was entered at (EL2 with `virtualization=on`), x0 = the context id:
 * the physical address of this CPU's start block (smp.rs `StartBlock`):
 *     0 MAIR   8 TCR   16 TTBR0 for the switch (the boot CPU's early
 *     identity tables, `early_l0`)   24 TTBR1 (the kernel's root)
 *    32 SCTLR  40 stack top (VA)   48 the empty TTBR0 table   56 CPU id
 *    64 its PerCpu (VA, for TPIDR_EL1)
 *
 * 1. FP/SIMD on (CPACR_EL1), EL2 → EL1 as the boot CPU does (entry.S's
 *    `arch_el2_setup`);
 * 2. the boot CPU's MAIR/TCR/SCTLR, TTBR1 = the kernel, TTBR0 = the early
 *    identity map just for the branch to the link address;
 * 3. at the link address: the stack, TPIDR_EL1 (before any exception can
 *    be taken: the vectors read it), VBAR_EL1, TTBR0 = the empty table
 *    (the identity map is gone again) and `arch_secondary_main(cpu)`.
 */
.section .text.smp, "ax"
.balign 8
.global arch_secondary_entry
arch_secondary_entry:
    mov     x19, x0
    mov     x9, #(3 << 20)
    msr     cpacr_el1, x9
    isb
    mrs     x9, CurrentEL
    ubfx    x9, x9, #2, #2
    cmp     x9, #2
    b.ne    1f
    bl      arch_el2_setup
    adr     x9, 1f
    msr     elr_el2, x9
    eret
1:
    ldp     x1, x2, [x19]
    ldp     x3, x4, [x19, #16]
    ldr     x5, [x19, #32]
    msr     mair_el1, x1
    msr     tcr_el1, x2
    msr     ttbr0_el1, x3
    msr     ttbr1_el1, x4
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    msr     sctlr_el1, x5
    isb
    ldr     x9, =2f
    br      x9
2:
    /* At the link address; x19 is still readable through the identity map. */
    ldp     x5, x6, [x19, #40]
    ldp     x7, x8, [x19, #56]
    mov     sp, x5
    msr     tpidr_el1, x8           /* this CPU's PerCpu (percpu.rs) */
    adrp    x9, arch_exception_vectors
    add     x9, x9, :lo12:arch_exception_vectors
    msr     vbar_el1, x9
    msr     ttbr0_el1, x6
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    mov     x0, x7
    mov     x29, xzr
    mov     x30, xzr
    bl      arch_secondary_main
3:
    wfe
    b       3b
.ltorg
