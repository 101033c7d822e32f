//! Thin wrappers around privileged x86 instructions, and CPU feature flags.
//!
//! Every function here is one instruction (or a fixed short sequence) whose
//! safety condition is documented at its definition.  Callers in this crate
//! run at CPL 0.
//!
//! Control registers, MSRs, port I/O, INVLPG and the interrupt flag go
//! through the `x86_64` crate's typed wrappers (`Cr0Flags`, `Cr4Flags`,
//! `EferFlags`, `Port`, …); what is left here are the helpers several
//! modules share.
use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count, CpuidResult};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::{interrupts, tlb};
use x86_64::registers::control::{Cr2, Cr3};
use x86_64::registers::model_specific::Msr;

/// Read a model-specific register by number (for the MSRs the `x86_64`
/// crate has no type for: x2APIC registers, the PMU's).
///
/// # Safety
/// The MSR must exist on this CPU (otherwise #GP).
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: caller guarantees the MSR exists.
    unsafe { Msr::new(msr).read() }
}

/// Write a model-specific register by number.
///
/// # Safety
/// The MSR must exist and the value must be valid and keep the kernel's
/// invariants (e.g. EFER.LME stays set).
#[inline]
pub unsafe fn wrmsr(msr: u32, val: u64) {
    // SAFETY: caller guarantees the MSR and value are valid.
    unsafe { Msr::new(msr).write(val) }
}

/// IA32_EFER by number (the PMU self-test reads it raw; everything else
/// uses `x86_64::registers::model_specific::Efer`).
#[cfg(feature = "selftest")]
pub const MSR_EFER: u32 = 0xC000_0080;

/// CR3 as one number: the root table's address with the PCID (or PCD/PWT)
/// in bits 11:0.
#[inline]
pub fn read_cr3() -> u64 {
    let (frame, low) = Cr3::read_raw();
    frame.start_address().as_u64() | u64::from(low)
}

/// The faulting linear address of the last page fault.
#[inline]
pub fn read_cr2() -> u64 {
    Cr2::read_raw()
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

/// Flush the TLB entry of one page (INVLPG; a non-canonical `va` is
/// truncated, and INVLPG of it would have been a no-op anyway).
#[inline]
pub fn invlpg(va: u64) {
    tlb::flush(VirtAddr::new_truncate(va));
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

/// The running function's frame pointer (RBP): the address of its frame
/// record, where a stack walk ([`arch_common::backtrace::walk_frames`])
/// starts.  Inlined, so the record is the caller's own.
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let fp: u64;
    // SAFETY: only copies a register.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags))
    };
    fp
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
    x86_64::instructions::hlt();
}

/// STI (the IDT is installed before the kernel enables interrupts).
#[inline]
pub fn irq_enable() {
    interrupts::enable();
}

#[inline]
pub fn irq_disable() {
    interrupts::disable();
}

/// Mask interrupts; returns whether they were enabled before.
#[inline]
pub fn irq_save() -> bool {
    let was = interrupts::are_enabled();
    interrupts::disable();
    was
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
