//! Thin wrappers around privileged x86 instructions, and CPU feature flags.
//!
//! Every function here is one instruction (or a fixed short sequence) whose
//! safety condition is documented at its definition.  Callers in this crate
//! run at CPL 0.
use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count, CpuidResult};
use spin::Once;

/// Write a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device this kernel owns; the write must not
/// break an invariant the rest of the kernel relies on.
#[inline]
pub unsafe fn outb(port: u16, val: u8) {
    // SAFETY: caller guarantees the port write is harmless (see above).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") val, options(nomem, nostack, preserves_flags))
    };
}

/// Write a dword to an I/O port.
///
/// # Safety
/// As for [`outb`].
#[inline]
pub unsafe fn outl(port: u16, val: u32) {
    // SAFETY: caller guarantees the port write is harmless (see above).
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") val, options(nomem, nostack, preserves_flags))
    };
}

/// Read a byte from an I/O port.
///
/// # Safety
/// As for [`outb`] (some device registers have read side effects).
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: caller guarantees the port read is harmless (see above).
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Read a model-specific register.
///
/// # Safety
/// The MSR must exist on this CPU (otherwise #GP).
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: caller guarantees the MSR exists.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Write a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must be valid and keep the kernel's
/// invariants (e.g. EFER.LME stays set).
#[inline]
pub unsafe fn wrmsr(msr: u32, val: u64) {
    // SAFETY: caller guarantees the MSR and value are valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") val as u32, in("edx") (val >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

pub const MSR_EFER: u32 = 0xC000_0080;
pub const MSR_APIC_BASE: u32 = 0x1B;
pub const EFER_NXE: u64 = 1 << 11;

pub const CR0_WP: u64 = 1 << 16;
pub const CR4_PGE: u64 = 1 << 7;
pub const CR4_SMEP: u64 = 1 << 20;

macro_rules! cr_rw {
    ($read:ident, $write:ident, $reg:literal) => {
        #[inline]
        pub fn $read() -> u64 {
            let v: u64;
            // SAFETY: reading a control register has no side effects at CPL 0.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }

        /// # Safety
        /// The new value must keep paging, protection and the current
        /// mappings of code, stack and data valid.
        #[inline]
        pub unsafe fn $write(v: u64) {
            // SAFETY: caller guarantees the value is valid (see above).
            unsafe { asm!(concat!("mov ", $reg, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
        }
    };
}
cr_rw!(read_cr0, write_cr0, "cr0");
cr_rw!(read_cr3, write_cr3, "cr3");
cr_rw!(read_cr4, write_cr4, "cr4");

/// The faulting linear address of the last page fault.
#[inline]
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects at CPL 0.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Read the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the TSC; CR4.TSD is clear so it never faults.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Flush the TLB entry of one page.
#[inline]
pub fn invlpg(va: u64) {
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

pub fn cpuid(leaf: u32) -> CpuidResult {
    // SAFETY: CPUID exists on every x86_64 CPU and has no side effects.
    #[allow(unused_unsafe)]
    unsafe {
        __cpuid(leaf)
    }
}

pub fn cpuid_count(leaf: u32, sub: u32) -> CpuidResult {
    // SAFETY: as for `cpuid`.
    #[allow(unused_unsafe)]
    unsafe {
        __cpuid_count(leaf, sub)
    }
}

/// CPU features the arch code cares about, read once at boot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    pub max_leaf: u32,
    pub max_ext_leaf: u32,
    pub pdpe1gb: bool,
    pub nx: bool,
    pub pge: bool,
    pub smep: bool,
    pub smap: bool,
    pub x2apic: bool,
    pub invariant_tsc: bool,
    pub hypervisor: bool,
    pub max_hv_leaf: u32,
    /// QEMU's TCG emulator (hypervisor signature `TCGTCGTCGTCG`).
    pub tcg: bool,
}

static FEATURES: Once<Features> = Once::new();

pub fn features() -> &'static Features {
    FEATURES.call_once(|| {
        let l0 = cpuid(0);
        let e0 = cpuid(0x8000_0000);
        let mut f = Features {
            max_leaf: l0.eax,
            max_ext_leaf: e0.eax,
            ..Features::default()
        };
        if f.max_leaf >= 1 {
            let l1 = cpuid(1);
            f.pge = l1.edx & (1 << 13) != 0;
            f.x2apic = l1.ecx & (1 << 21) != 0;
            f.hypervisor = l1.ecx & (1 << 31) != 0;
        }
        if f.max_leaf >= 7 {
            let l7 = cpuid_count(7, 0);
            f.smep = l7.ebx & (1 << 7) != 0;
            f.smap = l7.ebx & (1 << 20) != 0;
        }
        if f.max_ext_leaf >= 0x8000_0001 {
            let e1 = cpuid(0x8000_0001);
            f.nx = e1.edx & (1 << 20) != 0;
            f.pdpe1gb = e1.edx & (1 << 26) != 0;
        }
        if f.max_ext_leaf >= 0x8000_0007 {
            f.invariant_tsc = cpuid(0x8000_0007).edx & (1 << 8) != 0;
        }
        if f.hypervisor {
            let h = cpuid(0x4000_0000).eax;
            f.max_hv_leaf = if (0x4000_0000..0x4000_0100).contains(&h) {
                h
            } else {
                0
            };
            let r = cpuid(0x4000_0000);
            f.tcg = (r.ebx, r.ecx, r.edx) == (0x5447_4354, 0x4354_4743, 0x4743_5447);
        }
        f
    })
}

/// Whether the CPU can map 1 GiB pages (CPUID.80000001h:EDX.Page1GB).
pub fn has_1g_pages() -> bool {
    features().pdpe1gb
}

/// Spin-loop hint.
#[inline]
pub fn cpu_relax() {
    core::hint::spin_loop();
}

/// Wait for the next interrupt (returns immediately if one is pending and
/// interrupts are enabled).
#[inline]
pub fn halt() {
    // SAFETY: HLT only stops the CPU until the next interrupt.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
}

#[inline]
pub fn irq_enable() {
    // SAFETY: the IDT is installed before the kernel enables interrupts.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

#[inline]
pub fn irq_disable() {
    // SAFETY: masking interrupts is always allowed at CPL 0.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Mask interrupts; returns whether they were enabled before.
#[inline]
pub fn irq_save() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack, then masks interrupts.
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) flags, options(nomem)) };
    flags & (1 << 9) != 0
}

/// Restore the state returned by [`irq_save`].
#[inline]
pub fn irq_restore(enabled: bool) {
    if enabled {
        irq_enable();
    } else {
        irq_disable();
    }
}
