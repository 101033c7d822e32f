//! The GDT and TSS.
//!
//! Layout (the user selectors are ordered for a later SYSCALL/SYSRET):
//! `0x08` kernel code, `0x10` kernel data, `0x18` user code32 (unused, null),
//! `0x20` user data, `0x28` user code64, `0x30` the 64-bit TSS (two slots).
//! The TSS carries IST1, the double-fault stack.
use core::arch::asm;
use core::ptr::addr_of;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x20 | 3;
pub const USER_CS: u16 = 0x28 | 3;
pub const TSS_SEL: u16 = 0x30;

/// IST index (1-based, as the IDT encodes it) of the double-fault stack.
pub const IST_DOUBLE_FAULT: u8 = 1;

#[repr(C, packed(4))]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

static mut TSS: Tss = Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: core::mem::size_of::<Tss>() as u16,
};

static mut GDT: [u64; 8] = [
    0,
    0x00AF_9A00_0000_FFFF, // kernel code: P, DPL0, code, L
    0x00CF_9200_0000_FFFF, // kernel data: P, DPL0, data, writable
    0,                     // user code32: not used
    0x00CF_F200_0000_FFFF, // user data: P, DPL3
    0x00AF_FA00_0000_FFFF, // user code64: P, DPL3, L
    0,                     // TSS low, filled in by `init`
    0,                     // TSS high
];

#[repr(C, packed(2))]
struct DescPtr {
    limit: u16,
    base: u64,
}

unsafe extern "C" {
    static df_stack_top: u8;
    static boot_stack_top: u8;
}

/// Build the TSS descriptor, load the GDT, reload the segment registers and
/// the task register.  Runs once on the boot CPU before interrupts are on.
pub fn init() {
    // SAFETY: single-threaded early boot; nothing else references GDT/TSS yet.
    // The TSS is a static, so the descriptor's base stays valid forever.
    unsafe {
        let tss = &raw mut TSS;
        (*tss).ist[usize::from(IST_DOUBLE_FAULT - 1)] = addr_of!(df_stack_top) as u64;
        (*tss).rsp[0] = addr_of!(boot_stack_top) as u64;
        let base = tss as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        let low = (limit & 0xFFFF)
            | ((base & 0xFF_FFFF) << 16)
            | (0x89 << 40) // present, DPL0, available 64-bit TSS
            | (((limit >> 16) & 0xF) << 48)
            | (((base >> 24) & 0xFF) << 56);
        let gdt = &raw mut GDT;
        (*gdt)[6] = low;
        (*gdt)[7] = base >> 32;
        let ptr = DescPtr {
            limit: (core::mem::size_of::<[u64; 8]>() - 1) as u16,
            base: gdt as u64,
        };
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:e}",
            "mov es, {ds:e}",
            "mov ss, {ds:e}",
            "xor {tmp:e}, {tmp:e}",
            "mov fs, {tmp:e}",
            "mov gs, {tmp:e}",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            cs = const KERNEL_CS as u64,
            ds = in(reg) u32::from(KERNEL_DS),
            tss = in(reg) TSS_SEL,
            tmp = out(reg) _,
        );
    }
}

/// Set the stack the CPU switches to on an interrupt from user mode.
pub fn set_kernel_stack(top: u64) {
    // SAFETY: a single aligned store into the TSS; the CPU reads it only on a
    // privilege change, which cannot happen concurrently on this CPU.
    unsafe {
        let tss = &raw mut TSS;
        core::ptr::write_unaligned(&raw mut (*tss).rsp[0], top);
    }
}

/// Address of TSS.RSP0 (the syscall entry loads the kernel stack from it).
pub(crate) fn rsp0_ptr() -> u64 {
    let tss = &raw const TSS;
    // SAFETY: only the address of the field is taken, nothing is read.
    unsafe { (&raw const (*tss).rsp) as u64 }
}
