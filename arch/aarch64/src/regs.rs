//! System-register access and barriers.
//!
//! Reads of the registers the `aarch64-cpu` crate knows (ID, TTBR, TCR,
//! SCTLR, DAIF, timer, TPIDR, SP_EL0) and the timer's writes go through
//! that crate, with its named fields.  These macros remain for the
//! registers it lacks (GICv3 `ICC_*_EL1`, the PMU, FPCR, DCZID) and for
//! every write that changes translation or exception routing (TTBR0/1,
//! TCR, SCTLR, VBAR): the crate's writes are safe methods, and such a write
//! must sit in an `unsafe` block with its `// SAFETY:` argument.
//!
//! `read_sysreg!` is safe (reading the registers used here has no side
//! effects); `write_sysreg!` expands to an `asm!` that the caller must wrap in
//! `unsafe` with its own justification, since writes can change translation,
//! exception routing or interrupt state.

/// Read a system register by name (or `s3_…` encoding).
macro_rules! read_sysreg {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: `mrs` of an EL0/EL1-readable register has no side effects
        // and touches no memory.
        unsafe {
            core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v,
                options(nomem, nostack, preserves_flags))
        };
        v
    }};
}

/// Write a system register.  Must be used inside an `unsafe` block.
macro_rules! write_sysreg {
    ($reg:literal, $val:expr) => {
        core::arch::asm!(concat!("msr ", $reg, ", {}"), in(reg) ($val as u64),
            options(nostack, preserves_flags))
    };
}

pub(crate) use {read_sysreg, write_sysreg};

/// Instruction synchronisation barrier.
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier has no effect other than ordering.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

/// Inner-shareable store barrier (before a table walker may see new entries).
#[inline(always)]
pub fn dsb_ishst() {
    // SAFETY: a barrier has no effect other than ordering.
    unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// Full barrier over the inner-shareable domain: every earlier memory
/// access (page-table stores included) completes before any later one.
#[inline(always)]
pub fn dsb_ish() {
    // SAFETY: a barrier has no effect other than ordering.
    unsafe { core::arch::asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// Invalidate all EL1&0 TLB entries on this CPU and wait for completion.
#[inline(always)]
pub fn tlbi_vmalle1() {
    // SAFETY: dropping TLB entries is always safe; later accesses re-walk.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Invalidate the TLB entries for the page at `va`, for every ASID, on all
/// CPUs of the inner-shareable domain, and wait for completion.
#[inline(always)]
pub fn tlbi_va(va: u64) {
    let arg = (va >> 12) & ((1 << 44) - 1);
    // SAFETY: dropping TLB entries is always safe; later accesses re-walk.
    unsafe {
        core::arch::asm!("dsb ishst", "tlbi vaae1is, {}", "dsb ish", "isb", in(reg) arg,
            options(nostack, preserves_flags))
    };
}

/// Current exception level (1 or 2).
pub fn current_el() -> u64 {
    (read_sysreg!("CurrentEL") >> 2) & 3
}
