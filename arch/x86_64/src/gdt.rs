//! The GDT and TSS, built with the `x86_64` crate's descriptor types.
//!
//! Layout (the user selectors are ordered for SYSCALL/SYSRET):
//! `0x08` kernel code, `0x10` kernel data, `0x18` user code32 (unused, null),
//! `0x20` user data, `0x28` user code64, `0x30` the 64-bit TSS (two slots).
//! The TSS carries IST1, the double-fault stack.  `init` checks that the
//! selectors the crate hands out are these constants (the syscall and
//! `iretq` paths and `STAR` use the constants).
use core::ptr::addr_of;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x20 | 3;
pub const USER_CS: u16 = 0x28 | 3;
pub const TSS_SEL: u16 = 0x30;

/// IST index (1-based, as the IDT encodes it) of the double-fault stack.
pub const IST_DOUBLE_FAULT: u8 = 1;

static mut TSS: TaskStateSegment = TaskStateSegment::new();

static GDT: spin::Once<GlobalDescriptorTable<8>> = spin::Once::new();

unsafe extern "C" {
    static df_stack_top: u8;
    static boot_stack_top: u8;
}

/// Build the GDT (with the TSS descriptor), load it, reload the segment
/// registers and the task register.  Runs once on the boot CPU before
/// interrupts are on.
pub fn init() {
    let tss = &raw mut TSS;
    // SAFETY: single-threaded early boot; nothing else uses the TSS yet.
    unsafe {
        (*tss).interrupt_stack_table[usize::from(IST_DOUBLE_FAULT - 1)] =
            VirtAddr::from_ptr(addr_of!(df_stack_top));
        (*tss).privilege_stack_table[0] = VirtAddr::from_ptr(addr_of!(boot_stack_top));
    }
    // SAFETY: the TSS is a static, only written through raw pointers.
    let gdt = GDT.call_once(|| unsafe { build(tss) });
    load(gdt);
}

/// A secondary CPU's own GDT and TSS (each CPU needs its own: loading a
/// TSS marks its descriptor busy, and the IST stacks must not be shared),
/// with the same selectors as the boot CPU's; IST1 is `ist_top`.
/// Both are leaked: a CPU keeps them for as long as it runs.
pub(crate) fn init_secondary(ist_top: u64) {
    let tss = alloc::boxed::Box::leak(alloc::boxed::Box::new(TaskStateSegment::new()));
    tss.interrupt_stack_table[usize::from(IST_DOUBLE_FAULT - 1)] = VirtAddr::new(ist_top);
    let tss: *mut TaskStateSegment = tss;
    // SAFETY: the TSS is leaked, so the descriptor's base stays valid
    // forever, and from here on it is only reached through that pointer.
    let gdt = alloc::boxed::Box::leak(alloc::boxed::Box::new(unsafe { build(tss) }));
    load(gdt);
}

/// The descriptor table with `tss` in the TSS slot, checked against the
/// selector constants.
///
/// # Safety
/// `tss` must stay valid for as long as the table is loaded on any CPU,
/// and no reference to it may exist while a CPU uses it.
unsafe fn build(tss: *mut TaskStateSegment) -> GlobalDescriptorTable<8> {
    let mut gdt = GlobalDescriptorTable::empty();
    // SAFETY: the caller's contract.
    let tss_desc = unsafe { Descriptor::tss_segment_unchecked(tss) };
    let sels = [
        gdt.append(Descriptor::kernel_code_segment()),
        gdt.append(Descriptor::kernel_data_segment()),
        gdt.append(Descriptor::UserSegment(0)), // user code32: not used
        gdt.append(Descriptor::user_data_segment()),
        gdt.append(Descriptor::user_code_segment()),
        gdt.append(tss_desc),
    ];
    let want = [KERNEL_CS, KERNEL_DS, 0x18, USER_DS, USER_CS, TSS_SEL];
    assert!(
        sels.iter().map(|s| s.0).eq(want),
        "GDT layout: selectors {:?}",
        sels
    );
    gdt
}

/// Load `gdt` on this CPU and reload every segment register and TR.
fn load(gdt: &'static GlobalDescriptorTable<8>) {
    gdt.load();
    // SAFETY: the selectors are the descriptors just loaded (checked in
    // `build`): a 64-bit code segment, flat data segments, null for FS/GS,
    // and the TSS, which is available (not busy) the first time it is
    // loaded (each CPU loads its own once).
    unsafe {
        CS::set_reg(SegmentSelector(KERNEL_CS));
        DS::set_reg(SegmentSelector(KERNEL_DS));
        ES::set_reg(SegmentSelector(KERNEL_DS));
        SS::set_reg(SegmentSelector(KERNEL_DS));
        FS::set_reg(SegmentSelector(0));
        GS::set_reg(SegmentSelector(0));
        load_tss(SegmentSelector(TSS_SEL));
    }
}

/// Set the stack the CPU switches to on an interrupt from user mode.
pub fn set_kernel_stack(top: u64) {
    // SAFETY: a single store into the TSS (packed: unaligned write); the CPU
    // reads it only on a privilege change, which cannot happen concurrently
    // on this CPU.
    unsafe {
        let tss = &raw mut TSS;
        core::ptr::write_unaligned(
            &raw mut (*tss).privilege_stack_table[0],
            VirtAddr::new_truncate(top),
        );
    }
}

/// Address of TSS.RSP0 (the syscall entry loads the kernel stack from it).
pub(crate) fn rsp0_ptr() -> u64 {
    let tss = &raw const TSS;
    // SAFETY: only the address of the field is taken, nothing is read.
    unsafe { (&raw const (*tss).privilege_stack_table) as u64 }
}
