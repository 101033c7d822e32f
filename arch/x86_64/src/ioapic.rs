//! Device interrupts through the IOAPIC(s) the ACPI MADT lists
//! (`acpi::DEVICES`): GSI `g` is delivered on vector
//! [`DEVICE_VECTOR_BASE`]` + g` to CPU 0, level-triggered and active high,
//! which is what QEMU `microvm` wires its virtio-mmio lines as.  The legacy
//! 8259s stay masked (timer.rs).
//!
//! The register windows sit in the uncached fixmap right after the local
//! APIC page (`paging::init` maps them).  `enable` runs on CPU 0 with
//! interrupts enabled or not; nothing else writes the redirection table,
//! so there is no lock.
use crate::acpi::{DEVICES, MAX_IOAPICS};
use crate::paging::FIXMAP_BASE;

/// The first vector of device interrupts; GSIs below [`NR_DEVICE_VECTORS`]
/// get one each (trap.rs has their stubs).
pub const DEVICE_VECTOR_BASE: u8 = 0x30;
pub const NR_DEVICE_VECTORS: u32 = 48;

/// Fixmap address of IOAPIC `i`'s register window.
pub const fn va(i: usize) -> u64 {
    FIXMAP_BASE + 0x1000 * (1 + i as u64)
}

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const IOAPICVER: u32 = 0x01;
const REDTBL: u32 = 0x10;
const RTE_LEVEL: u32 = 1 << 15;

fn read(i: usize, reg: u32) -> u32 {
    // SAFETY: `va(i)` maps IOAPIC `i`'s registers uncached (paging::init
    // maps exactly the IOAPICs in `DEVICES`, and callers pass such an `i`);
    // the select/window pair is accessed as aligned 32-bit words.
    unsafe {
        core::ptr::write_volatile((va(i) + IOREGSEL) as *mut u32, reg);
        core::ptr::read_volatile((va(i) + IOWIN) as *const u32)
    }
}

fn write(i: usize, reg: u32, v: u32) {
    // SAFETY: as in `read`.
    unsafe {
        core::ptr::write_volatile((va(i) + IOREGSEL) as *mut u32, reg);
        core::ptr::write_volatile((va(i) + IOWIN) as *mut u32, v);
    }
}

/// Route GSI `gsi` to CPU 0 (LAPIC id `dest`) on its device vector and
/// unmask it.  False if no IOAPIC serves it or it has no vector.
pub fn enable(gsi: u32, dest: u32) -> bool {
    let Some(d) = DEVICES.get() else {
        return false;
    };
    if gsi >= NR_DEVICE_VECTORS {
        return false;
    }
    for (i, &(_, base)) in d.ioapics[..d.nr_ioapics.min(MAX_IOAPICS)]
        .iter()
        .enumerate()
    {
        let pins = (read(i, IOAPICVER) >> 16 & 0xff) + 1;
        if !(base..base + pins).contains(&gsi) {
            continue;
        }
        let pin = gsi - base;
        let vector = u32::from(DEVICE_VECTOR_BASE) + gsi;
        // Destination first, then the low word, which unmasks (bit 16 clear).
        write(i, REDTBL + 2 * pin + 1, dest << 24);
        write(i, REDTBL + 2 * pin, RTE_LEVEL | vector);
        return true;
    }
    false
}

/// The kernel's handler of device interrupts (`set_device_irq_hook`).
pub static HOOK: arch_common::DeviceIrqHook = arch_common::DeviceIrqHook::new();

/// A device vector arrived: the hook runs before the EOI, so the device
/// has lowered its level-triggered line by the time the EOI lets the
/// IOAPIC deliver that pin again.
pub fn on_vector(vector: u8) {
    HOOK.run(u32::from(vector - DEVICE_VECTOR_BASE));
    crate::timer::apic_write(crate::timer::APIC_EOI, 0);
}
