//! x86_64 support for the kernel: PVH boot hand-off, kernel page tables,
//! exceptions, the LAPIC timer and the serial console.
//!
//! The crate root exports the API in `arch/API.md`.  Everything that touches
//! hardware (and all asm) is compiled only for the bare-metal target
//! (`target_os = "none"`), so on the host this crate is nearly empty and
//! only its portable modules build.
#![no_std]

// Portable modules (built on the host too) go here, e.g. `pub mod pte;`.
pub mod pte;

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod acpi;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod context;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod fpu;
#[cfg(target_os = "none")]
mod gdt;
#[cfg(target_os = "none")]
mod ioapic;
#[cfg(target_os = "none")]
pub mod mem;
#[cfg(target_os = "none")]
mod paging;
#[cfg(target_os = "none")]
mod percpu;
#[cfg(target_os = "none")]
pub mod pmu;
#[cfg(target_os = "none")]
mod probe;
#[cfg(target_os = "none")]
mod smp;
#[cfg(target_os = "none")]
mod timer;
#[cfg(target_os = "none")]
pub mod tlb;
#[cfg(target_os = "none")]
mod trap;
#[cfg(target_os = "none")]
mod user;
// Only in kernels built with the self-tests (the kernel forwards its
// `selftest` feature).
#[cfg(all(target_os = "none", feature = "selftest"))]
mod selftests;

#[cfg(target_os = "none")]
pub use arch_common::backtrace::{MAX_FRAMES, walk_frames};
#[cfg(target_os = "none")]
pub use context::{
    Context, asid_allocs, asid_bits, asid_rollovers, current_user_root, current_user_root_pa,
    gen_flushes, has_pcid, invalidate_asid, kernel_half_root, set_irq_exit_hook, set_thread_stack,
    switch_context, switch_user_root, user_root_off,
};
#[cfg(target_os = "none")]
pub use cpu::invlpg as flush_tlb_page;
#[cfg(target_os = "none")]
pub use cpu::{
    cpu_relax, frame_pointer, halt, has_1g_pages, irq_disable, irq_enable, irq_restore, irq_save,
};
#[cfg(target_os = "none")]
pub use fpu::FpuState;
#[cfg(target_os = "none")]
pub use gdt::{KERNEL_CS, KERNEL_DS, USER_CS, USER_DS, kernel_stack, set_kernel_stack};
#[cfg(target_os = "none")]
pub use mem::{copy_bytes, zero_bytes};
#[cfg(target_os = "none")]
pub use paging::{
    KERNEL_MAP_BASE, KERNEL_MAP_SIZE, KernelLayout, PHYS_OFFSET, Translation, kernel_layout,
    kernel_root, kernel_translate,
};
#[cfg(target_os = "none")]
pub use percpu::cpu_id;
#[cfg(target_os = "none")]
pub use probe::{probe_exec, probe_read, probe_write};
#[cfg(target_os = "none")]
pub use smp::{
    cpu_online, cpu_ticks, ipi_count, nr_cpus_online, nr_cpus_possible, send_ipi, set_ipi_hook,
    start_secondaries,
};
#[cfg(target_os = "none")]
pub use timer::{now_ns, ticks, timer_hz, timer_init, tsc_hz};
#[cfg(target_os = "none")]
pub use trap::{Access, FaultInfo, set_fault_handler, set_tick_hook};
#[cfg(target_os = "none")]
pub use user::{
    EFault, USER_TOP, UserFrame, copy_from_user, copy_to_user, enter_user, refuse_smap,
    set_syscall_handler, set_user_exception_handler, set_user_tls, smap_enabled, smep_enabled,
    user_init, user_tls,
};

/// Architecture name.
#[cfg(target_os = "none")]
pub const NAME: &str = "x86_64";

/// Polled serial output; usable from any context, including panics.
#[cfg(target_os = "none")]
pub fn console_write(s: &str) {
    console::write(s);
}

/// The virtio-mmio transports the ACPI DSDT describes (`microvm`; none on
/// `q35`).
#[cfg(target_os = "none")]
pub fn virtio_mmio_devices() -> &'static [arch_common::MmioDevice] {
    acpi::DEVICES.get().map_or(&[], |d| d.virtio.as_slice())
}

/// Enable device interrupt `irq` (an IOAPIC GSI, as in
/// [`virtio_mmio_devices`]), level-triggered, delivered to CPU 0.
#[cfg(target_os = "none")]
pub fn enable_device_irq(irq: u32) -> bool {
    ioapic::enable(irq, smp::boot_cpu_apic_id())
}

/// Device interrupts go to `f(irq)`, IRQs masked, before the EOI.
#[cfg(target_os = "none")]
pub fn set_device_irq_hook(f: fn(u32)) {
    ioapic::HOOK.set(f);
}

/// Install the exception vectors (already done at boot; this reloads the
/// IDT and is idempotent).
#[cfg(target_os = "none")]
pub fn init_interrupts() {
    trap::init();
}

/// End the QEMU run through isa-debug-exit (port 0xf4): status 33 on
/// success, 35 on failure.  Without the device, halt forever.
#[cfg(target_os = "none")]
pub fn exit(success: bool) -> ! {
    let mut port = x86_64::instructions::port::PortWriteOnly::<u32>::new(0xf4);
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit (or nothing at all).
    unsafe { port.write(if success { 0x10 } else { 0x11 }) };
    loop {
        cpu::irq_disable();
        cpu::halt();
    }
}
