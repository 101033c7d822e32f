//! The GDT and TSS, built with the `x86_64` crate's descriptor types.
//!
//! Layout (the user selectors are ordered for SYSCALL/SYSRET):
//! `0x08` kernel code, `0x10` kernel data, `0x18` user code32 (unused, null),
//! `0x20` user data, `0x28` user code64, `0x30` the 64-bit TSS (two slots).
//! The TSS carries IST1, the double-fault stack, and RSP0.  Each CPU has
//! its own GDT and TSS inside its `percpu::PerCpu` (CPU 0's too, from the
//! first lines of boot): `cpu_id()` finds the CPU from the GDTR base.  `init` checks that the
//! selectors the crate hands out are these constants (the syscall and
//! `iretq` paths and `STAR` use the constants).
use crate::percpu::PERCPU;
use core::ptr::addr_of;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::{lgdt, load_tss};
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x20 | 3;
pub const USER_CS: u16 = 0x28 | 3;
pub const TSS_SEL: u16 = 0x30;

/// IST index (1-based, as the IDT encodes it) of the double-fault stack.
pub const IST_DOUBLE_FAULT: u8 = 1;

unsafe extern "C" {
    static df_stack_top: u8;
    static boot_stack_top: u8;
}

/// Build CPU 0's GDT (with its TSS) in its `PerCpu`, load it, reload the
/// segment registers and the task register.  Runs once on the boot CPU
/// before interrupts are on; from here on `cpu_id()` reads the GDTR.
pub fn init() {
    // SAFETY: the double-fault stack is a static reserved for CPU 0.
    let ist = VirtAddr::from_ptr(addr_of!(df_stack_top)).as_u64();
    init_cpu(
        0,
        ist,
        VirtAddr::from_ptr(addr_of!(boot_stack_top)).as_u64(),
    );
}

/// A secondary CPU's own GDT and TSS (each CPU needs its own: loading a
/// TSS marks its descriptor busy, RSP0 follows the thread running on that
/// CPU, and the IST stacks must not be shared), with the same selectors as
/// the boot CPU's; IST1 is `ist_top`.  Runs on CPU `cpu` itself.
pub(crate) fn init_secondary(cpu: usize, ist_top: u64) {
    init_cpu(cpu, ist_top, 0);
}

/// Fill CPU `cpu`'s TSS and GDT (both in its `PerCpu`) and load them on
/// the running CPU, which must be `cpu` and must not have loaded them yet.
fn init_cpu(cpu: usize, ist_top: u64, rsp0: u64) {
    let pc = &PERCPU[cpu];
    let tss = pc.tss.get();
    // SAFETY: nothing uses this CPU's TSS before it is loaded below; the
    // writes go through the raw pointer (the struct is packed).
    unsafe {
        core::ptr::write_unaligned(
            &raw mut (*tss).interrupt_stack_table[usize::from(IST_DOUBLE_FAULT - 1)],
            VirtAddr::new(ist_top),
        );
        core::ptr::write_unaligned(
            &raw mut (*tss).privilege_stack_table[0],
            VirtAddr::new(rsp0),
        );
    }
    // SAFETY: the TSS is in a static, and from here on only reached through
    // raw pointers (`set_kernel_stack`) and by the CPU.
    let built = unsafe { build(tss) };
    let raw = pc.gdt.get();
    // SAFETY: this CPU's GDT is not loaded yet (the caller's contract), so
    // nothing reads it while it is written.
    unsafe {
        for (d, e) in (*raw).iter_mut().zip(built.entries()) {
            *d = e.raw();
        }
    }
    let ptr = DescriptorTablePointer {
        limit: (built.entries().len() * 8 - 1) as u16,
        base: VirtAddr::from_ptr(raw),
    };
    // SAFETY: the table is in a static (lives forever), holds the
    // descriptors `build` checked, and is never written again.
    unsafe { lgdt(&ptr) };
    reload_segments();
    debug_assert_eq!(crate::percpu::cpu_id(), cpu);
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

/// Reload every segment register and TR from the GDT just loaded.
fn reload_segments() {
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

/// Set the stack the RUNNING CPU switches to on an interrupt from user
/// mode (its TSS.RSP0; the SYSCALL entry reads the same field).
pub fn set_kernel_stack(top: u64) {
    let irq = crate::cpu::irq_save();
    let tss = crate::percpu::this().tss.get();
    // SAFETY: a single store into this CPU's TSS (packed: unaligned write);
    // the CPU reads it only on a privilege change, which cannot happen
    // concurrently on this CPU (interrupts masked: the thread cannot move
    // to another CPU between finding the TSS and the store).
    unsafe {
        core::ptr::write_unaligned(
            &raw mut (*tss).privilege_stack_table[0],
            VirtAddr::new_truncate(top),
        );
    }
    crate::cpu::irq_restore(irq);
}

/// The running CPU's TSS.RSP0 (what `set_kernel_stack` last wrote here).
pub fn kernel_stack() -> u64 {
    let irq = crate::cpu::irq_save();
    let tss = crate::percpu::this().tss.get();
    // SAFETY: a read of this CPU's TSS field (packed: unaligned read).
    let v = unsafe { core::ptr::read_unaligned(&raw const (*tss).privilege_stack_table[0]) };
    crate::cpu::irq_restore(irq);
    v.as_u64()
}

/// Address of CPU `cpu`'s TSS.RSP0 (its SYSCALL entry loads the kernel
/// stack from it).
pub(crate) fn rsp0_ptr(cpu: usize) -> u64 {
    let tss = PERCPU[cpu].tss.get();
    // SAFETY: only the address of the field is taken, nothing is read.
    unsafe { (&raw const (*tss).privilege_stack_table) as u64 }
}
