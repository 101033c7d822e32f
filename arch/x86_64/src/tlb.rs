//! TLB maintenance for `mm` (its `TlbOps` are implemented on top of these).
//!
//! User translations are tagged with the address space's PCID when the CPU
//! has PCIDs (`context::switch_user_root`), else untagged.  INVLPG and a CR3
//! reload act on the *current* PCID only.  A flush of an address space
//! that is not loaded here does nothing: its PCID may still hold entries
//! from when this CPU last ran it, but this CPU's record of the space's
//! flush generation is then behind the flush's, so the next
//! `switch_user_root` of it flushes the PCID whole.
use core::sync::atomic::{AtomicU64, Ordering};

/// INVLPG and CR3 writes act on this CPU only: other CPUs' TLBs are
/// reached by shootdown IPIs (the kernel's `mem::shootdown`).
pub const BROADCAST: bool = false;
use x86_64::registers::control::{Cr3, Cr4, Cr4Flags};

/// Most pages a range flush invalidates one by one (INVLPG) before it
/// drops the whole address space instead: Linux's
/// `tlb_single_page_flush_ceiling`, 33 by default, the hardware trade-off
/// (with PCIDs and global pages a full flush keeps other spaces' and the
/// kernel's entries).  Under QEMU TCG the trade-off reverses: QEMU ignores
/// PCIDs and the global bit, so every CR3 write empties its whole software
/// TLB and each kernel translation is walked again on next use, while an
/// INVLPG is one cheap call; [`flush_ceiling`] is then a PMD's worth (512),
/// which took `MADV_COLLAPSE` of 2 MiB from ~655 to ~585 µs.  Settable at
/// boot with `tlb_flush_ceiling=` ([`set_flush_ceiling`]).
static FLUSH_CEILING: AtomicU64 = AtomicU64::new(0);

/// Linux's default ceiling.
pub const DEFAULT_FLUSH_CEILING: u64 = 33;
/// The ceiling under QEMU TCG.
pub const TCG_FLUSH_CEILING: u64 = 512;

/// The current ceiling (see [`FLUSH_CEILING`]).
pub fn flush_ceiling() -> u64 {
    match FLUSH_CEILING.load(Ordering::Relaxed) {
        0 => {
            let c = if crate::cpu::features().tcg {
                TCG_FLUSH_CEILING
            } else {
                DEFAULT_FLUSH_CEILING
            };
            FLUSH_CEILING.store(c, Ordering::Relaxed);
            c
        }
        c => c,
    }
}

/// Whether this runs under QEMU TCG (from the CPUID hypervisor signature).
pub fn under_tcg() -> bool {
    crate::cpu::features().tcg
}

/// Override the ceiling (pages; 0 is treated as 1).
pub fn set_flush_ceiling(pages: u64) {
    FLUSH_CEILING.store(pages.max(1), Ordering::Relaxed);
}

/// True if `asid`'s translations may be in the TLB under the current CR3
/// (always true without PCIDs: untagged entries belong to whatever is
/// loaded).  When false, nothing needs flushing now: see the module
/// documentation.
fn is_current(asid: u16) -> bool {
    !crate::context::has_pcid() || Cr3::read_raw().1 == asid & 0xFFF
}

/// Drop every non-global translation of address space `asid`, for its
/// flush of generation `tlb_gen` (`mm::cpu::FlushTargets`).
pub fn flush_user_all(asid: u16, tlb_gen: u64) {
    if !is_current(asid) {
        return;
    }
    // Without bit 63 (NOFLUSH) a CR3 write drops the current PCID's
    // non-global entries (all non-global entries without PCIDs).
    let (frame, low) = Cr3::read_raw();
    // SAFETY: reloading the current root (same PCID) only flushes TLB entries.
    unsafe { Cr3::write_raw(frame, low) };
    crate::context::note_flushed(asid, tlb_gen);
}

/// Drop the user translations of `[start, end)` with page stride `stride`
/// (`tlb_gen`: as [`flush_user_all`]).
pub fn flush_user_range(asid: u16, start: u64, end: u64, stride: u64, tlb_gen: u64) {
    let stride = stride.max(4096);
    if (end - start) / stride > flush_ceiling() {
        flush_user_all(asid, tlb_gen);
        return;
    }
    if is_current(asid) {
        flush_pages(start, end, stride);
        crate::context::note_flushed(asid, tlb_gen);
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
    let cr4 = Cr4::read();
    // SAFETY: clearing and restoring PGE only flushes the TLB (SDM 4.10.4.1).
    unsafe {
        Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL);
        Cr4::write(cr4);
    }
}
