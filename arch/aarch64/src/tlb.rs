//! TLB maintenance for `mm` (its `TlbOps` are implemented on top of these).
//!
//! User translations are non-global and tagged with the address space's
//! hardware ASID (TTBR0_EL1 bits 63:48, TCR_EL1.A1 = 0); kernel ones are
//! global.  The user flushes take the kernel's key of the space and TLBI
//! the ASID `crate::asid` gave it (see there for the race with a rollover).
//! Every operation is broadcast to the inner-shareable domain (`…IS`) and
//! completed with DSB ISH + ISB, so it is already SMP-correct.
use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

/// Every TLBI here is broadcast (`…IS`): no shootdown IPIs are needed.
pub const BROADCAST: bool = true;

/// Above this many pages one ASID-wide flush is cheaper than a run of
/// single-page TLBIs (without FEAT_TLBIRANGE).
const RANGE_LIMIT: u64 = 64;

/// Pages one run of range TLBIs can cover: SCALE 0..=3 each clear five
/// bits of the page count (see [`flush_user_pages_ranged`]).
const MAX_RANGE_PAGES: u64 = (1 << 21) - 1;

/// FEAT_TLBIRANGE: 0 unknown, 1 absent, 2 present.
static RANGE_TLBI: AtomicU8 = AtomicU8::new(0);

/// Whether the CPU has range TLBIs (ID_AA64ISAR0_EL1.TLB = 0b0010), as
/// QEMU's `max` CPU and cores since Armv8.4 do.  As Linux: a range flush
/// then costs one `tlbi rvae1is` per five bits of the page count instead
/// of one TLBI per page or the loss of the whole ASID.  Under QEMU TCG the
/// ASID-wide flush also empties the kernel's software-TLB entries (QEMU
/// does not tag them by ASID), which the next kernel accesses re-walk.
pub fn has_range_tlbi() -> bool {
    match RANGE_TLBI.load(Ordering::Relaxed) {
        0 => {
            use aarch64_cpu::registers::{ID_AA64ISAR0_EL1, Readable};
            // ID_AA64ISAR0_EL1.TLB (bits 59:56; the crate names only RNDR):
            // 2 = TLBI by range as well as the outer-shareable forms.
            let yes = (ID_AA64ISAR0_EL1.get() >> 56) & 0xf >= 2;
            RANGE_TLBI.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        v => v == 2,
    }
}

/// Invalidate `pages` 4 KiB pages of `asid` from `start` with range TLBIs
/// (FEAT_TLBIRANGE, 4 KiB granule).  One operation covers
/// `(NUM + 1) << (5 * SCALE + 1)` pages from its base address; walking the
/// page count's bits from the bottom, a lone odd page takes a plain TLBI
/// and each SCALE then clears the next five bits, so at most five TLBIs
/// cover up to [`MAX_RANGE_PAGES`].  The caller issues the barriers.
///
/// # Safety
/// Range TLBIs must exist ([`has_range_tlbi`]).
unsafe fn flush_user_pages_ranged(asid: u16, start: u64, pages: u64) {
    debug_assert!(pages <= MAX_RANGE_PAGES);
    let asid = (asid as u64) << 48;
    let mut va = start;
    let mut left = pages;
    if left & 1 == 1 {
        let arg = asid | ((va >> 12) & ((1 << 44) - 1));
        // SAFETY: dropping TLB entries is always safe.
        unsafe { asm!("tlbi vae1is, {}", in(reg) arg, options(nostack, preserves_flags)) };
        va += 4096;
        left -= 1;
    }
    let mut scale = 0u64;
    while left != 0 {
        let shift = 5 * scale + 1;
        let units = (left >> shift) & 31;
        if units != 0 {
            // TG = 0b01 (4 KiB), SCALE, NUM = units - 1, TTL = 0 (any
            // level), BaseADDR = VA[48:12].
            let arg = asid
                | (1 << 46)
                | (scale << 44)
                | ((units - 1) << 39)
                | ((va >> 12) & ((1 << 37) - 1));
            // SAFETY: as above; the caller checked FEAT_TLBIRANGE.
            unsafe {
                asm!(".arch_extension tlb-rmi", "tlbi rvae1is, {}", in(reg) arg,
                    options(nostack, preserves_flags))
            };
            va += (units << shift) << 12;
            left -= units << shift;
        }
        scale += 1;
    }
}

/// Make page-table stores visible to the table walker before the entries
/// are used (required after writing a new valid entry).
pub fn sync_tables() {
    // SAFETY: barriers have no architectural side effects beyond ordering.
    unsafe { asm!("dsb ishst", "isb", options(nostack, preserves_flags)) };
}

/// Drop every translation of the address space with key `asid` (tagged
/// with its current hardware ASID, see `crate::asid`; nothing when it
/// never ran).  `_tlb_gen` (the space's flush generation, which x86
/// records per PCID) is not needed: the TLBI reaches every CPU.
pub fn flush_user_all(asid: u16, _tlb_gen: u64) {
    let Some(hw) = crate::asid::flush_asid(asid) else {
        return;
    };
    tlbi_hw_asid(hw);
}

/// Broadcast `tlbi aside1is` of hardware ASID `hw`, with its barriers.
fn tlbi_hw_asid(hw: u64) {
    let arg = hw << 48;
    // SAFETY: dropping TLB entries is always safe; later accesses re-walk.
    unsafe {
        asm!("dsb ishst", "tlbi aside1is, {}", "dsb ish", "isb", in(reg) arg,
            options(nostack, preserves_flags))
    };
}

/// Drop the translations of `[start, end)` (page stride `stride`) of the
/// address space with key `asid` (its current hardware ASID's).
pub fn flush_user_range(asid: u16, start: u64, end: u64, stride: u64, _tlb_gen: u64) {
    let Some(hw) = crate::asid::flush_asid(asid) else {
        return;
    };
    let asid = hw as u16;
    let stride = stride.max(4096);
    let pages = (end - start) >> 12;
    if pages > 1 && pages <= MAX_RANGE_PAGES && has_range_tlbi() {
        // SAFETY: the DSB before makes the cleared entries visible to the
        // walker, the DSB after waits for completion; FEAT_TLBIRANGE was
        // checked.  A range TLBI drops entries of any size in the range,
        // so the stride does not matter.
        unsafe {
            asm!("dsb ishst", options(nostack, preserves_flags));
            flush_user_pages_ranged(asid, start, pages);
            asm!("dsb ish", "isb", options(nostack, preserves_flags));
        }
        return;
    }
    if (end - start) / stride > RANGE_LIMIT {
        tlbi_hw_asid(hw);
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
