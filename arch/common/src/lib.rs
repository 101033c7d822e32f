//! The types both arch crates export with the same meaning (see
//! `arch/API.md`): what a fault handler is told, what a walk of the kernel
//! tables reports, the kernel's virtual layout, and the PMU's portable
//! types, the CPU bookkeeping of SMP (`smp::CpuTable`), and the
//! frame-pointer walk of the panic report (`backtrace`: both lay out frame
//! records alike).  One definition here instead of a copy per arch crate.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod backtrace;
pub mod pmu;
pub mod smp;
pub mod tables;

/// The kind of access that faulted: `mm`'s own type, so the fault handler
/// passes it to the memory manager as it is.
pub use mm::aspace::Access;

/// A data or instruction abort, as handed to the fault handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInfo {
    /// Faulting virtual address (x86 CR2, or the probed address of a
    /// non-canonical probe; arm64 FAR_EL1).
    pub addr: u64,
    /// Address of the faulting instruction (x86 RIP, arm64 ELR_EL1).
    pub pc: u64,
    pub access: Access,
    /// The access came from user mode (x86 CPL 3, arm64 EL0).
    pub user: bool,
    /// The translation was present: a permission fault (or, on arm64, an
    /// access-flag fault), not a missing page.
    pub permission: bool,
}

/// Result of walking the live kernel tables for one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address of the byte at the queried VA.
    pub pa: u64,
    /// Size of the leaf mapping it: 4 KiB, 2 MiB or 1 GiB.
    pub size: u64,
    pub writable: bool,
    /// Executable by the kernel (x86 NX clear, arm64 PXN clear).
    pub executable: bool,
    /// Accessible from user mode (x86 U/S, arm64 AP\[1\]).
    pub user: bool,
}

/// Virtual layout of the running kernel (all ranges half-open).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    pub text: core::ops::Range<u64>,
    pub rodata: core::ops::Range<u64>,
    pub data: core::ops::Range<u64>,
    pub bss: core::ops::Range<u64>,
    /// The boot stack (the kernel runs on it).
    pub stack: core::ops::Range<u64>,
    /// The unmapped page just below `stack`.
    pub stack_guard: core::ops::Range<u64>,
    /// Direct-map VAs from the lowest to the highest RAM address.
    pub direct_map: core::ops::Range<u64>,
    /// Largest leaf size used by the direct map.
    pub direct_map_leaf: u64,
}

/// A virtio-mmio transport the firmware describes (arm64: a `virtio,mmio`
/// device-tree node; x86 `microvm`: a resource template in the ACPI DSDT).
/// `irq` is what `enable_device_irq` takes: the GIC interrupt id on arm64
/// (32 + the SPI number), the IOAPIC global system interrupt on x86.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmioDevice {
    pub base: u64,
    pub size: u64,
    pub irq: u32,
}

/// Most virtio-mmio transports kept (QEMU `virt` describes 32, `microvm`
/// 24; only those with a device behind them matter, and the kernel drives one).
pub const MAX_MMIO_DEVICES: usize = 32;

/// The transports found at boot, in firmware order.  Filled once by the
/// arch crate before the kernel runs, read-only after.
#[derive(Clone, Copy, Debug)]
pub struct MmioDevices {
    list: [MmioDevice; MAX_MMIO_DEVICES],
    n: usize,
}

impl MmioDevices {
    pub const fn new() -> Self {
        MmioDevices {
            list: [MmioDevice {
                base: 0,
                size: 0,
                irq: 0,
            }; MAX_MMIO_DEVICES],
            n: 0,
        }
    }

    /// Keep `d` unless the list is full or already has its base.
    pub fn push(&mut self, d: MmioDevice) {
        if self.n < MAX_MMIO_DEVICES && !self.as_slice().iter().any(|e| e.base == d.base) {
            self.list[self.n] = d;
            self.n += 1;
        }
    }

    pub fn as_slice(&self) -> &[MmioDevice] {
        &self.list[..self.n]
    }
}

impl Default for MmioDevices {
    fn default() -> Self {
        Self::new()
    }
}

/// The kernel's device-interrupt handler (`set_device_irq_hook`), set once
/// at boot; the arch crates' interrupt entry runs it before the EOI.
pub struct DeviceIrqHook(spin::Once<fn(u32)>);

impl DeviceIrqHook {
    pub const fn new() -> Self {
        DeviceIrqHook(spin::Once::new())
    }

    /// The first handler set stays (there is one device driver).
    pub fn set(&self, f: fn(u32)) {
        self.0.call_once(|| f);
    }

    /// Run the handler for `irq`, if one is set.
    pub fn run(&self, irq: u32) {
        if let Some(f) = self.0.get() {
            f(irq);
        }
    }
}

impl Default for DeviceIrqHook {
    fn default() -> Self {
        Self::new()
    }
}
