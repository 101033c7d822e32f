//! aarch64 support for QEMU `virt`: boot hand-off, kernel page tables,
//! exceptions, GIC + generic timer, PL011 console, semihosting exit.
//! The exported API is described in `arch/API.md`.
//!
//! Everything touching hardware is built only for `aarch64-unknown-none`
//! (`cfg(all(target_arch = "aarch64", target_os = "none"))`); on the host
//! the crate holds just the portable types and constants below.
//!
//! Virtual memory layout (48-bit VAs, 4K granule, 4 levels):
//! | range | what |
//! |---|---|
//! | `0x0000_0000_0000_0000..` (TTBR0) | empty; user space later |
//! | `PHYS_OFFSET + pa` = `0xFFFF_0000_0000_0000..` | direct map of all RAM |
//! | `DEVICE_VA_BASE + pa` = `0xFFFF_FFFE_0000_0000..` | device MMIO (pa < 4 GiB) |
//! | `KIMAGE_VOFFSET + pa` = `0xFFFF_FFFF_0000_0000..` | kernel image (at pa 0x4020_0000) |
#![no_std]
pub mod pte;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
extern crate alloc;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod asid;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod boot;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod console;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod context;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod cpu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod dt;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod fpu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod gic;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod mem;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod paging;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod percpu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod pmu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod probe;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod profile;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod psci;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod regs;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod smp;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod timer;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod tlb;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod trap;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod user;
// Only in kernels built with the self-tests (the kernel forwards its
// `selftest` feature).
#[cfg(all(target_arch = "aarch64", target_os = "none", feature = "selftest"))]
mod selftests;

/// Direct-map base: `va = pa + PHYS_OFFSET`.
pub const PHYS_OFFSET: u64 = 0xFFFF_0000_0000_0000;
/// The kernel image is linked at `KIMAGE_VOFFSET + pa` (see boot/aarch64/linker.ld).
pub const KIMAGE_VOFFSET: u64 = 0xFFFF_FFFF_0000_0000;
/// Device MMIO is mapped at `DEVICE_VA_BASE + pa` for pa below 4 GiB.
pub const DEVICE_VA_BASE: u64 = 0xFFFF_FFFE_0000_0000;
pub const NAME: &str = "aarch64";

pub use arch_common::{Access, FaultInfo, KernelLayout, MmioDevice, Translation};

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use hw::*;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hw {
    use crate::{FaultInfo, KernelLayout, Translation};

    pub use crate::asid::{asid_allocs, asid_rollovers, set_asid_limit, unflushed_loads};
    pub use crate::context::{
        Context, asid_bits, current_user_root, current_user_root_pa, invalidate_asid,
        kernel_half_root, set_irq_exit_hook, set_thread_stack, switch_context, switch_user_root,
        user_root_off,
    };
    pub use crate::cpu::{
        cpu_relax, exit, frame_pointer, halt, irq_disable, irq_enable, irq_restore, irq_save,
    };
    pub use crate::fpu::FpuState;
    pub use crate::mem::{copy_bytes, zero_bytes};
    pub use crate::paging::{KERNEL_MAP_BASE, KERNEL_MAP_SIZE, kernel_root};
    pub use crate::probe::{probe_exec, probe_read, probe_write};
    pub use crate::smp::{
        cpu_id, cpu_online, cpu_ticks, ipi_count, nr_cpus_online, nr_cpus_possible, send_ipi,
        set_ipi_hook, start_secondaries,
    };
    pub use crate::timer::{now_ns, set_tick_hook, ticks, timer_hz, timer_init};
    pub use crate::user::{
        EFault, USER_TOP, UserFrame, copy_from_user, copy_to_user, enter_user, pan_enabled,
        set_syscall_handler, set_user_exception_handler, set_user_tls, smap_enabled, smep_enabled,
        user_init, user_tls,
    };
    pub use arch_common::backtrace::{MAX_FRAMES, walk_frames};

    /// Polled serial output; usable from any context, including panics.
    pub fn console_write(s: &str) {
        crate::console::write_str(s);
    }

    /// Install the exception vectors (the entry code already did; this
    /// re-installs them so the kernel's call order does not matter).
    pub fn init_interrupts() {
        crate::trap::install_vectors();
    }

    /// The virtio-mmio transports the device tree describes.
    pub fn virtio_mmio_devices() -> &'static [arch_common::MmioDevice] {
        crate::boot::PLATFORM
            .get()
            .map_or(&[], |p| p.virtio.as_slice())
    }

    /// Enable device interrupt `irq` (a GIC SPI id, as in
    /// [`virtio_mmio_devices`]), level-sensitive, delivered to this CPU.
    pub fn enable_device_irq(irq: u32) -> bool {
        crate::gic::enable_spi(irq)
    }

    /// Device interrupts go to `f(irq)`, IRQs masked, before the EOI.
    pub fn set_device_irq_hook(f: fn(u32)) {
        crate::gic::DEVICE_HOOK.set(f);
    }

    /// Route data/instruction aborts to `f` first; `true` = resolved, retry.
    pub fn set_fault_handler(f: fn(&FaultInfo) -> bool) {
        crate::trap::set_fault_handler(f);
    }

    /// Set the lowest usable address of the kernel stack now in use on this
    /// CPU (which must have an unmapped guard page below it), for
    /// stack-overflow reports.
    pub fn set_kernel_stack_limit(bottom: u64) {
        crate::trap::set_stack_limit(bottom);
    }

    /// Invalidate the TLB entries for the page at `va` (all ASIDs).
    pub fn flush_tlb_page(va: u64) {
        crate::regs::tlbi_va(va);
    }

    /// Walk the live tables (TTBR1 for upper-half VAs, TTBR0 otherwise).
    pub fn kernel_translate(va: u64) -> Option<Translation> {
        crate::paging::walk(crate::paging::live_root(va), va)
    }

    pub fn kernel_layout() -> KernelLayout {
        crate::paging::kernel_layout()
    }

    /// 1 GiB level-1 blocks: always available with the 4K granule, which
    /// the kernel uses; checked against ID_AA64MMFR0_EL1.TGran4 anyway.
    pub fn has_1g_pages() -> bool {
        use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable};
        !ID_AA64MMFR0_EL1.matches_all(ID_AA64MMFR0_EL1::TGran4::NotSupported)
    }
}
