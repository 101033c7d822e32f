/*
 * Secondary CPU start-up code (AT&T syntax, included by smp.rs).
 *
 * `ap_tramp_start .. ap_tramp_end` is position-dependent on AP_TRAMP_PA:
 * smp.rs copies it to that physical page (below 1 MiB, as a SIPI vector
 * names a page number below 0x100) before each start.  A started CPU
 * begins in real mode at AP_TRAMP_PA:0 (CS = AP_TRAMP_PA >> 4, IP = 0):
 *
 *   1. load the trampoline's GDT, set CR0.PE, far-jump to 32-bit code,
 *   2. CR4.PAE, CR3 = the trampoline's own small page table (identity map
 *      of the first 2 MiB for this code, plus the kernel image's PML4 slot
 *      copied from the kernel's root), EFER.LME|NXE (the kernel's entries
 *      use NX), CR0.PG, far-jump to 64-bit code,
 *   3. load the values smp.rs left in the data block and jump to
 *      `x86_ap_entry64` in the kernel image, which switches to the
 *      kernel's root and its stack before touching memory.
 *
 * The data block (`ap_tramp_data`) is written by the boot CPU through the
 * direct map: kernel CR3, stack top, logical CPU id.
 */
.set AP_TRAMP_PA, 0x8000
.set AP_TRAMP_PML4, AP_TRAMP_PA + 0x1000

        .section .rodata.ap_trampoline, "a", @progbits
        .balign 4096
        .global ap_tramp_start
        .code16
ap_tramp_start:
        cli
        cld
        mov     %cs, %ax
        mov     %ax, %ds
        lgdtl   (ap_tramp_gdt_ptr - ap_tramp_start)
        mov     %cr0, %eax
        or      $1, %eax
        mov     %eax, %cr0
        ljmpl   $0x08, $(AP_TRAMP_PA + ap_tramp_pm32 - ap_tramp_start)

        .code32
ap_tramp_pm32:
        mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     %cr4, %eax
        or      $0x20, %eax                     /* PAE */
        mov     %eax, %cr4
        mov     $AP_TRAMP_PML4, %eax
        mov     %eax, %cr3
        mov     $0xC0000080, %ecx               /* EFER */
        rdmsr
        or      $0x900, %eax                    /* LME | NXE */
        wrmsr
        mov     %cr0, %eax
        or      $0x80000001, %eax               /* PG | PE */
        mov     %eax, %cr0
        ljmp    $0x18, $(AP_TRAMP_PA + ap_tramp_lm64 - ap_tramp_start)

        .code64
ap_tramp_lm64:
        mov     ap_tramp_cr3(%rip), %rax
        mov     ap_tramp_stack(%rip), %rsi
        mov     ap_tramp_cpu(%rip), %rdi
        mov     ap_tramp_entry(%rip), %rbx
        jmp     *%rbx

        .balign 8
ap_tramp_gdt:
        .quad   0
        .quad   0x00CF9A000000FFFF              /* 0x08: 32-bit code */
        .quad   0x00CF92000000FFFF              /* 0x10: data */
        .quad   0x00AF9A000000FFFF              /* 0x18: 64-bit code */
ap_tramp_gdt_end:
ap_tramp_gdt_ptr:
        .word   ap_tramp_gdt_end - ap_tramp_gdt - 1
        .long   AP_TRAMP_PA + ap_tramp_gdt - ap_tramp_start

        .balign 8
        .global ap_tramp_data
ap_tramp_data:
ap_tramp_cr3:
        .quad   0
ap_tramp_stack:
        .quad   0
ap_tramp_cpu:
        .quad   0
ap_tramp_entry:
        .quad   0
        .global ap_tramp_end
ap_tramp_end:

/*
 * First code in the kernel image: RAX = the kernel's root, RSI = stack
 * top, RDI = logical CPU id.  The stack lives outside the trampoline's
 * identity table, so CR3 is switched before the first push.
 */
        .text
        .global x86_ap_entry64
x86_ap_entry64:
        mov     %rax, %cr3
        mov     %rsi, %rsp
        xor     %ebp, %ebp
        movabs  $x86_ap_rust_entry, %rax
        call    *%rax
1:      cli
        hlt
        jmp     1b
