//! TLB maintenance for `mm` (its `TlbOps` are implemented on top of these).
//!
//! The kernel does not use PCIDs yet, so an address space's translations
//! are tagged by nothing: INVLPG drops the current address space's entry for
//! one page (and any global one), and reloading CR3 drops every non-global
//! entry.  Flushing a *non-current* user address space is therefore a no-op
//! that is still correct: its entries were dropped when CR3 last changed.
//! One CPU runs today; on SMP these become shootdowns.
use core::arch::asm;

/// Above this many pages a full flush is cheaper than a run of INVLPGs.
const RANGE_LIMIT: u64 = 64;

fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nostack, preserves_flags)) };
    v
}

/// Drop every non-global translation (the user half and nothing else, since
/// kernel mappings are global).
pub fn flush_user_all() {
    // SAFETY: writing CR3 with its own value only flushes non-global TLB entries.
    unsafe { asm!("mov cr3, {}", in(reg) read_cr3(), options(nostack, preserves_flags)) };
}

/// Drop the translations of `[start, end)` with page stride `stride`.
pub fn flush_range(start: u64, end: u64, stride: u64) {
    let stride = stride.max(4096);
    if (end - start) / stride > RANGE_LIMIT {
        flush_user_all();
        return;
    }
    let mut va = start;
    while va < end {
        crate::cpu::invlpg(va);
        va += stride;
    }
}

/// Page-table stores are visible to the walker in program order on x86.
pub fn sync_tables() {}
