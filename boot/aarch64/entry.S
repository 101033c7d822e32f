/*
 * aarch64 entry: QEMU `-M virt -kernel <elf>` jumps here at the *physical*
 * address of `_start` with the MMU and caches off, at EL1 (or EL2 with
 * `virtualization=on`).  x0 is 0 for ELF kernels: the DTB is at 0x4000_0000.
 * Booted as a Linux `Image` (the objcopy'd binary, needed for `-initrd`),
 * x0 holds the DTB's physical address.
 *
 * Steps, before any Rust runs:
 *   1. CPACR_EL1.FPEN = 0b11 (Rust code uses FP/SIMD registers);
 *   2. at EL2: configure EL2 so EL1 runs unhindered, then ERET to EL1;
 *   3. zero .bss (the early tables and the boot stack live there);
 *   4. build the early tables (one L0 table used for both halves):
 *        L0[0]   -> L1 "low": 1 GiB blocks, PA 0..512 GiB (block 0 is the
 *                   device GiB, Device-nGnRnE; the rest Normal WB).  Seen
 *                   through TTBR0 it is an identity map (needed for the few
 *                   instructions between enabling the MMU and jumping high),
 *                   through TTBR1 it is the direct map at PHYS_OFFSET.
 *        L0[511] -> L1 "kernel": entries 508..511 map PA 0..4 GiB at
 *                   KIMAGE_VOFFSET, so the kernel runs at its link address;
 *   5. MAIR/TCR/TTBR0/TTBR1, enable MMU + caches, branch to the link address;
 *   6. set up the boot stack, TPIDR_EL1 (CPU 0's per-CPU data) and VBAR_EL1,
 *      call `arch_early_main(entry_el)`.
 */

.equ EARLY_BLOCK_NORMAL, 0x705                  /* valid block, AttrIdx 1, SH inner, AF */
.equ EARLY_BLOCK_DEVICE, 0x0060000000000401     /* valid block, AttrIdx 0, AF, PXN, UXN */
.equ MAIR_VALUE, 0x44FF00                       /* idx0 Device-nGnRnE, idx1 Normal WB, idx2 Normal NC */
/* T0SZ=T1SZ=16, 4K granules, inner/outer WB RA WA, inner shareable; IPS added at run time */
.equ TCR_VALUE, 0xB5103510
.equ SCTLR_EL1_RES1, 0x30D00800
/* RES1 | M | C | SA | I | nTWI | nTWE */
.equ SCTLR_EL1_ON, 0x30D5180D
.equ BOOT_STACK_SIZE, 0x10000
.equ EMERGENCY_STACK_SIZE, 0x4000

.section .text.boot, "ax"
.global _start
.type _start, %function
_start:
    /*
     * The 64-byte arm64 Linux `Image` header, so the flat binary made with
     * `llvm-objcopy -O binary` boots like a Linux kernel (QEMU then loads it
     * at RAM base + text_offset = 0x4020_0000, passes the DTB address in
     * x0 and fills /chosen linux,initrd-start/end for `-initrd`).  For ELF
     * boots the first word simply branches over the header.
     */
    b       .Lreal_start                /* code0 */
    .long   0                           /* code1 */
    .quad   0x200000                    /* text_offset: KIMAGE_PHYS - RAM base */
    .quad   __kernel_image_size         /* image_size, .bss included (linker.ld) */
    .quad   0x2                         /* flags: little-endian, 4K pages */
    .quad   0, 0, 0                     /* res2..res4 */
    .ascii  "ARM\x64"                  /* magic */
    .long   0                           /* res5 */
.Lreal_start:
    mov     x20, x0                     /* DTB address (0 for ELF boots) */
    mov     x9, #(3 << 20)
    msr     cpacr_el1, x9
    isb

    mrs     x19, CurrentEL
    ubfx    x19, x19, #2, #2
    cmp     x19, #2
    b.lo    .Lat_el1
    b.eq    .Lat_el2
    /* EL3 is not supported (QEMU `secure=on`). */
.Lpark:
    wfe
    b       .Lpark

.Lat_el2:
    bl      arch_el2_setup
    adr     x9, .Lat_el1
    msr     elr_el2, x9
    eret

.Lat_el1:
    /* MMU off: make sure (at EL1 it is reset off, but be explicit). */
    ldr     x9, =SCTLR_EL1_RES1
    msr     sctlr_el1, x9
    isb

    /* Zero .bss (page-aligned at both ends). */
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
2:
    stp     xzr, xzr, [x0], #16
    cmp     x0, x1
    b.lo    2b

    /* Early tables. */
    adrp    x0, early_l0
    adrp    x1, early_l1_low
    adrp    x2, early_l1_kernel
    orr     x3, x1, #3
    str     x3, [x0]
    orr     x3, x2, #3
    str     x3, [x0, #(511 * 8)]

    ldr     x3, =EARLY_BLOCK_DEVICE
    str     x3, [x1]
    ldr     x5, =EARLY_BLOCK_NORMAL
    mov     x4, #1
3:
    orr     x3, x5, x4, lsl #30
    str     x3, [x1, x4, lsl #3]
    add     x4, x4, #1
    cmp     x4, #512
    b.lo    3b

    /* kernel L1 entries 508..511 = low L1 entries 0..3 */
    add     x6, x2, #(508 * 8)
    ldp     x3, x4, [x1]
    stp     x3, x4, [x6]
    ldp     x3, x4, [x1, #16]
    stp     x3, x4, [x6, #16]

    /* The tables were written with the MMU (so the D-cache) off: drop any
     * stale cache lines covering them before the walker reads them cached. */
    dsb     sy
    mrs     x9, ctr_el0
    ubfx    x9, x9, #16, #4
    mov     x10, #4
    lsl     x10, x10, x9            /* D-cache line size in bytes */
    adrp    x0, early_l0
    add     x1, x0, #(3 * 4096)
4:
    dc      ivac, x0
    add     x0, x0, x10
    cmp     x0, x1
    b.lo    4b
    dsb     sy

    /* Translation controls. */
    ldr     x9, =MAIR_VALUE
    msr     mair_el1, x9
    mrs     x10, id_aa64mmfr0_el1
    and     x10, x10, #0xf          /* PARange */
    mov     x11, #5                 /* at most 48 bits (no LPA2 here) */
    cmp     x10, x11
    csel    x10, x11, x10, hi
    ldr     x9, =TCR_VALUE
    orr     x9, x9, x10, lsl #32
    msr     tcr_el1, x9
    adrp    x0, early_l0
    msr     ttbr0_el1, x0
    msr     ttbr1_el1, x0
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb

    ldr     x9, =SCTLR_EL1_ON
    msr     sctlr_el1, x9
    isb

    ldr     x9, =.Lhigh
    br      x9

.Lhigh:
    /* Now running at the link address through TTBR1. */
    adrp    x9, boot_stack_top
    add     x9, x9, :lo12:boot_stack_top
    mov     sp, x9
    /* TPIDR_EL1 = CPU 0's per-CPU data (arch/aarch64/src/percpu.rs, id 0
     * from the zeroed .bss), with its emergency stack, before any exception. */
    adrp    x9, arch_percpu
    add     x9, x9, :lo12:arch_percpu
    adrp    x10, emergency_stack_top
    add     x10, x10, :lo12:emergency_stack_top
    str     x10, [x9, #16]
    msr     tpidr_el1, x9
    adrp    x9, arch_exception_vectors
    add     x9, x9, :lo12:arch_exception_vectors
    msr     vbar_el1, x9
    isb
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19                 /* the EL we were entered at */
    mov     x1, x20                 /* DTB physical address, or 0 */
    bl      arch_early_main
.Lhang:
    wfe
    b       .Lhang

/*
 * Configure EL2 so that EL1 runs unhindered and set SPSR_EL2 for an ERET to
 * EL1h with D, A, I and F masked; the caller sets ELR_EL2 and ERETs.
 * Position independent, MMU off, no stack; clobbers x9 only.  Shared by the
 * boot CPU (above) and the secondaries (arch/aarch64/src/smp.S).
 */
.global arch_el2_setup
arch_el2_setup:
    /* EL1 is AArch64, no traps of EL1 to EL2, no stage 2. */
    mov     x9, #(1 << 31)
    msr     hcr_el2, x9
    /* EL1 may use the physical counter and timer; no virtual offset. */
    mrs     x9, cnthctl_el2
    orr     x9, x9, #3
    msr     cnthctl_el2, x9
    msr     cntvoff_el2, xzr
    /* EL1 reads of MIDR/MPIDR see the real values. */
    mrs     x9, midr_el1
    msr     vpidr_el2, x9
    mrs     x9, mpidr_el1
    msr     vmpidr_el2, x9
    /* No FP/SIMD or system-register traps to EL2. */
    mov     x9, #0x33ff
    msr     cptr_el2, x9
    msr     hstr_el2, xzr
    /* GICv3 system-register interface: let EL1 use it (ICC_SRE_EL2.{Enable,SRE}). */
    mrs     x9, id_aa64pfr0_el1
    ubfx    x9, x9, #24, #4
    cbz     x9, 1f
    mrs     x9, s3_4_c12_c9_5
    orr     x9, x9, #0xf
    msr     s3_4_c12_c9_5, x9
    isb
1:
    ldr     x9, =SCTLR_EL1_RES1
    msr     sctlr_el1, x9
    /* EL1h with D, A, I and F masked. */
    mov     x9, #0x3c5
    msr     spsr_el2, x9
    ret
.ltorg

/* Early tables: three pages, consecutive (the cache invalidation above relies on it). */
.section .bss.early_pt, "aw", %nobits
.balign 4096
.global early_l0
early_l0:
    .space 4096
early_l1_low:
    .space 4096
early_l1_kernel:
    .space 4096

/* Boot stack with a guard page below it; kept first in .bss by the linker script. */
.section .bss.boot_stack, "aw", %nobits
.balign 4096
.global boot_stack_guard
boot_stack_guard:
    .space 4096
.global boot_stack_bottom
boot_stack_bottom:
    .space BOOT_STACK_SIZE
.global boot_stack_top
boot_stack_top:

/* Stack for reporting a kernel stack overflow (see trap.S). */
.section .bss.emergency_stack, "aw", %nobits
.balign 16
.global emergency_stack_bottom
emergency_stack_bottom:
    .space EMERGENCY_STACK_SIZE
.global emergency_stack_top
emergency_stack_top:
