/*
 * x86_64 PVH entry: 32-bit protected mode -> long mode -> higher-half Rust.
 *
 * Included into the arch crate with global_asm!(..., options(att_syntax)); no C preprocessor.
 *
 * Entry state (PVH): 32-bit protected mode, paging off, flat CS/DS/ES/SS,
 * EBX = physical address of hvm_start_info, no stack, IF = 0.
 *
 * Steps:
 *   1. check the start-info magic (exit QEMU with failure if it is wrong),
 *   2. zero .bss (the Rust statics, boot stack and IST stacks live there),
 *   3. build the early page tables: identity map of the low 4 GiB with 2 MiB
 *      pages, and the first 1 GiB of physical memory again at
 *      0xFFFFFFFF80000000 (where the image is linked),
 *   4. enable PAE, long mode and paging, load a minimal GDT and far-jump to
 *      64-bit code,
 *   5. switch to the higher-half boot stack and call the Rust entry with the
 *      start-info physical address in RDI.
 */

.set START_INFO_MAGIC, 0x336ec578
.set MSR_EFER, 0xC0000080
.set EFER_LME, 0x100
.set CR4_PAE, 0x20
.set CR0_PG_PE, 0x80000001
.set PTE_P_RW, 0x3
.set PDE_LARGE, 0x83

        .section .text.boot, "ax", @progbits
        .code32
        .global pvh_start
pvh_start:
        cli
        cld
        /* EBX is the start info; ESI keeps it across the string ops. */
        mov     %ebx, %esi
        cmpl    $START_INFO_MAGIC, (%ebx)
        jne     .Lbad_magic

        /* Zero .bss (page-aligned both ends, so a multiple of 4 bytes). */
        mov     $__bss_start_phys, %edi
        mov     $__bss_end_phys, %ecx
        sub     %edi, %ecx
        shr     $2, %ecx
        xor     %eax, %eax
        rep stosl

        /* Zero the early page tables (NOLOAD, so not zeroed by the loader). */
        mov     $early_pt_start, %edi
        mov     $early_pt_end, %ecx
        sub     %edi, %ecx
        shr     $2, %ecx
        xor     %eax, %eax
        rep stosl

        /* PML4[0] -> identity PDPT, PML4[511] -> higher-half PDPT. */
        mov     $early_pdpt_low, %eax
        or      $PTE_P_RW, %eax
        mov     %eax, early_pml4
        mov     $early_pdpt_high, %eax
        or      $PTE_P_RW, %eax
        mov     %eax, early_pml4 + 511 * 8

        /* Identity PDPT[0..4] -> the four PDs; high PDPT[510] -> PD 0. */
        mov     $early_pd, %eax
        or      $PTE_P_RW, %eax
        mov     %eax, early_pdpt_low
        mov     %eax, early_pdpt_high + 510 * 8
        add     $0x1000, %eax
        mov     %eax, early_pdpt_low + 8
        add     $0x1000, %eax
        mov     %eax, early_pdpt_low + 16
        add     $0x1000, %eax
        mov     %eax, early_pdpt_low + 24

        /* 2048 PD entries of 2 MiB: entry i maps physical i * 2 MiB. */
        xor     %ecx, %ecx
1:      mov     %ecx, %eax
        shl     $21, %eax
        or      $PDE_LARGE, %eax
        mov     %eax, early_pd(, %ecx, 8)
        inc     %ecx
        cmp     $2048, %ecx
        jne     1b

        /* PAE, then long mode, then paging. */
        mov     %cr4, %eax
        or      $CR4_PAE, %eax
        mov     %eax, %cr4
        mov     $early_pml4, %eax
        mov     %eax, %cr3
        mov     $MSR_EFER, %ecx
        rdmsr
        or      $EFER_LME, %eax
        wrmsr
        mov     %cr0, %eax
        or      $CR0_PG_PE, %eax
        mov     %eax, %cr0

        lgdt    early_gdt_ptr
        ljmp    $0x08, $long_start

.Lbad_magic:
        /* Not a PVH start (or a broken one): say so on COM1 and fail. */
        mov     $0x3f8, %dx
        mov     $0x50, %al
        out     %al, %dx
        mov     $0x56, %al
        out     %al, %dx
        mov     $0x48, %al
        out     %al, %dx
        mov     $0x3f, %al
        out     %al, %dx
        mov     $0x0a, %al
        out     %al, %dx
        mov     $0xf4, %dx
        mov     $0x11, %eax
        out     %eax, %dx
2:      hlt
        jmp     2b

        .code64
long_start:
        mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        xor     %eax, %eax
        mov     %ax, %fs
        mov     %ax, %gs
        /* Continue in the higher half, on the boot stack (in .bss). */
        movabs  $boot_stack_top, %rsp
        xor     %ebp, %ebp
        mov     %esi, %edi
        movabs  $x86_64_boot_entry, %rax
        call    *%rax
3:      cli
        hlt
        jmp     3b

        .balign 8
early_gdt:
        .quad   0
        .quad   0x00AF9A000000FFFF      /* 0x08: 64-bit kernel code */
        .quad   0x00CF92000000FFFF      /* 0x10: kernel data */
early_gdt_end:
early_gdt_ptr:
        .word   early_gdt_end - early_gdt - 1
        .long   early_gdt

        /* PVH note: XEN_ELFNOTE_PHYS32_ENTRY (18), 8-byte descriptor. */
        .section .note.Xen, "a", @note
        .balign 4
        .long   4               /* namesz */
        .long   8               /* descsz */
        .long   18              /* type */
        .asciz  "Xen"
        .balign 4
        .quad   pvh_start

        /* Early page tables: PML4, two PDPTs, four PDs. */
        .section .bss.boot, "aw", @nobits
        .balign 4096
early_pt_start:
early_pml4:
        .skip   4096
early_pdpt_low:
        .skip   4096
early_pdpt_high:
        .skip   4096
early_pd:
        .skip   4 * 4096
early_pt_end:

        /*
         * Boot stack (64 KiB) with a 4 KiB guard page below it that the
         * kernel page tables leave unmapped, and the double-fault IST stack.
         */
        .section .bss.stack, "aw", @nobits
        .balign 4096
        .global boot_stack_guard
boot_stack_guard:
        .skip   4096
        .global boot_stack_bottom
boot_stack_bottom:
        .skip   65536
        .global boot_stack_top
boot_stack_top:
        .global df_stack_bottom
df_stack_bottom:
        .skip   16384
        .global df_stack_top
df_stack_top:

        .text
