//! TLB maintenance for `mm` (its `TlbOps` are implemented on top of these).
//!
//! User translations are tagged with the address space's PCID when the CPU
//! has PCIDs (`context::switch_user_root`), else untagged.  INVLPG and a CR3
//! reload act on the *current* PCID only, so flushing an address space that
//! is not loaded instead forgets its PCID's last root: the next
//! `switch_user_root` then loads it without NOFLUSH, dropping all its stale
//! entries.  One CPU runs today; on SMP these become shootdowns.
use core::arch::asm;

/// Above this many pages a full flush is cheaper than a run of INVLPGs.
const RANGE_LIMIT: u64 = 64;

fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nostack, preserves_flags)) };
    v
}

/// True if `asid`'s translations may be in the TLB under the current CR3
/// (always true without PCIDs: untagged entries belong to whatever is loaded).
fn is_current(asid: u16) -> bool {
    if !crate::context::has_pcid() {
        return true;
    }
    if (read_cr3() & 0xFFF) as u16 == asid & 0xFFF {
        return true;
    }
    crate::context::invalidate_asid(asid);
    false
}

/// Drop every non-global translation of address space `asid`.
pub fn flush_user_all(asid: u16) {
    if !is_current(asid) {
        return;
    }
    // Without bit 63 (NOFLUSH) a CR3 write drops the current PCID's
    // non-global entries (all non-global entries without PCIDs).
    let cr3 = read_cr3() & !(1 << 63);
    // SAFETY: reloading the current root only flushes TLB entries.
    unsafe { asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags)) };
}

/// Drop the user translations of `[start, end)` with page stride `stride`.
pub fn flush_user_range(asid: u16, start: u64, end: u64, stride: u64) {
    let stride = stride.max(4096);
    if (end - start) / stride > RANGE_LIMIT {
        flush_user_all(asid);
        return;
    }
    if is_current(asid) {
        flush_pages(start, end, stride);
    }
}

/// Drop kernel (global) translations of `[start, end)`: INVLPG also drops
/// global entries.
pub fn flush_kernel_range(start: u64, end: u64, stride: u64) {
    flush_pages(start, end, stride.max(4096));
}

fn flush_pages(start: u64, end: u64, stride: u64) {
    let mut va = start;
    while va < end {
        crate::cpu::invlpg(va);
        va += stride;
    }
}

/// Page-table stores are visible to the walker in program order on x86.
pub fn sync_tables() {}

/// Drop every translation, global ones included (toggling CR4.PGE).
pub fn flush_kernel_all() {
    let cr4 = crate::cpu::read_cr4();
    // SAFETY: clearing and restoring PGE only flushes the TLB (SDM 4.10.4.1).
    unsafe {
        crate::cpu::write_cr4(cr4 & !(1 << 7));
        crate::cpu::write_cr4(cr4);
    }
}
