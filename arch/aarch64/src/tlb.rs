//! TLB maintenance for `mm` (its `TlbOps` are implemented on top of these).
//!
//! User translations are non-global and tagged with the address space's
//! ASID (TTBR0_EL1 bits 63:48, TCR_EL1.A1 = 0); kernel ones are global.
//! Every operation is broadcast to the inner-shareable domain (`…IS`) and
//! completed with DSB ISH + ISB, so it is already SMP-correct.
use core::arch::asm;

/// Above this many pages one ASID-wide flush is cheaper.
const RANGE_LIMIT: u64 = 64;

/// Make page-table stores visible to the table walker before the entries
/// are used (required after writing a new valid entry).
pub fn sync_tables() {
    // SAFETY: barriers have no architectural side effects beyond ordering.
    unsafe { asm!("dsb ishst", "isb", options(nostack, preserves_flags)) };
}

/// Drop every translation tagged with `asid`.
pub fn flush_user_all(asid: u16) {
    let arg = (asid as u64) << 48;
    // SAFETY: dropping TLB entries is always safe; later accesses re-walk.
    unsafe {
        asm!("dsb ishst", "tlbi aside1is, {}", "dsb ish", "isb", in(reg) arg,
            options(nostack, preserves_flags))
    };
}

/// Drop the translations of `[start, end)` (page stride `stride`) for `asid`.
pub fn flush_user_range(asid: u16, start: u64, end: u64, stride: u64) {
    let stride = stride.max(4096);
    if (end - start) / stride > RANGE_LIMIT {
        flush_user_all(asid);
        return;
    }
    // SAFETY: as above; the DSB before makes the cleared entries visible to
    // the walker before the invalidation, the DSB after waits for completion.
    unsafe {
        asm!("dsb ishst", options(nostack, preserves_flags));
        let mut va = start;
        while va < end {
            let arg = ((asid as u64) << 48) | ((va >> 12) & ((1 << 44) - 1));
            asm!("tlbi vae1is, {}", in(reg) arg, options(nostack, preserves_flags));
            va += stride;
        }
        asm!("dsb ish", "isb", options(nostack, preserves_flags));
    }
}

/// Drop kernel (global) translations of `[start, end)`.
pub fn flush_kernel_range(start: u64, end: u64, stride: u64) {
    let stride = stride.max(4096);
    // SAFETY: as above.
    unsafe {
        asm!("dsb ishst", options(nostack, preserves_flags));
        let mut va = start;
        while va < end {
            let arg = (va >> 12) & ((1 << 44) - 1);
            asm!("tlbi vaae1is, {}", in(reg) arg, options(nostack, preserves_flags));
            va += stride;
        }
        asm!("dsb ish", "isb", options(nostack, preserves_flags));
    }
}

/// Drop every EL1&0 translation, global ones included.
pub fn flush_kernel_all() {
    // SAFETY: dropping TLB entries is always safe; later accesses re-walk.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}
