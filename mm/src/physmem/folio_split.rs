//! Splitting a folio's *metadata* into naturally aligned sub-folios (the
//! descriptor side of Linux's `__split_folio_to_order`).  The address-space
//! side is in `aspace::split`, which finds, unmaps and remaps the mappings
//! through the reverse map (`aspace::rmap`).
//!
//! Kept in its own file (rather than in `folio.rs`) because it only adds a
//! crate-internal method: the allocator's descriptor layout is the contract
//! it relies on (a head holds state, order, folio flags and the counters; a
//! tail is a `Body` frame holding only its own page flags, and finds its
//! head by probing aligned candidates, so a split only rewrites the new
//! heads' words).

use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use crate::physmem::folio::{Folio, FolioLockGuard};
use crate::physmem::frame_flags::{FrameState, PageFlags, TAILS_AE, word};

/// Folio flags a sub-folio inherits from the folio it was split from.  The
/// queue flags must already be clear, `LARGE` is recomputed per sub-folio
/// and `ANON_EXCLUSIVE` is per page (kept in each frame's own word).  The
/// LRU state (`ACTIVE`, `REFERENCED`) is inherited, as Linux's split; `LRU`
/// itself stays on the first sub-folio only, which keeps the old head's
/// place on the list until `Lru::split_pieces` links the others.
const INHERITED: PageFlags = PageFlags::ANON
    .union(PageFlags::LOCKED)
    .union(PageFlags::DIRTY)
    .union(PageFlags::UPTODATE)
    .union(PageFlags::KERNEL)
    // As Linux's split passes `PG_mlocked` to every new folio: the pages
    // stay locked and counted in `Mlocked:`, whatever size they now form.
    .union(PageFlags::MLOCKED)
    // A shmem folio's pieces stay in its page cache.
    .union(PageFlags::SHMEM)
    .union(PageFlags::ACTIVE)
    .union(PageFlags::REFERENCED);

impl<'a> FolioLockGuard<'a> {
    /// Turn this locked folio into sub-folios of `orders` (address order;
    /// each naturally aligned, together covering the folio exactly).
    /// Returns the sub-folios, each locked with its own guard (the lock
    /// this guard held passes to them); the first has the same head.
    ///
    /// Preconditions (the caller's split protocol): the folio is not
    /// mapped anywhere, not on the deferred-split queue, and its refcount is
    /// exactly the caller's one reference.  Afterwards every sub-folio is
    /// locked, unmapped, and holds refcount 1 — the first one the caller's
    /// original reference, every other one a new reference the caller now
    /// owns and must drop (after the sub-folio's guard).  Per-page
    /// anon-exclusive bits stay where they are.
    pub(crate) fn split_meta(self, orders: &[u32]) -> Vec<FolioLockGuard<'a>> {
        let this = self.into_raw();
        let old = this.order();
        debug_assert_eq!(
            orders.iter().map(|&o| 1u64 << o).sum::<u64>(),
            1u64 << old,
            "split plan does not cover the folio"
        );
        debug_assert!(this.test(PageFlags::LOCKED));
        debug_assert!(!this.test(PageFlags::DEFERRED_SPLIT));
        debug_assert!(!this.test(PageFlags::LRU_BATCH));
        debug_assert_eq!(this.large_mapcount(), 0);
        debug_assert_eq!(this.refcount(), 1);
        let mm = this.allocator().memmap();
        let inherit = this.flags() & INHERITED;
        let mut out = Vec::with_capacity(orders.len());
        let mut off = 0u32;
        // The first head is rewritten last: until then it still describes
        // the whole folio, so a racy `head_of` probe never finds a hole.
        let mut first_word = 0;
        for &o in orders {
            let idx = this.idx() + off;
            debug_assert!(off.is_multiple_of(1 << o), "sub-folio not aligned");
            let d = mm.at(idx);
            let own_ae = d.page_flags() & PageFlags::ANON_EXCLUSIVE;
            let mut pf = inherit | own_ae;
            if o > 0 {
                pf |= PageFlags::LARGE;
            }
            let tails_ae = o > 0
                && (idx + 1..idx + (1 << o))
                    .any(|t| mm.at(t).page_flags().contains(PageFlags::ANON_EXCLUSIVE));
            let w = word(FrameState::Head, o, pf.bits()) | if tails_ae { TAILS_AE } else { 0 };
            if off == 0 {
                first_word = w | (this.flags() & PageFlags::LRU).bits();
            } else {
                d.refcount.store(1, Relaxed);
                d.mapcount.store(0, Relaxed);
                d.entire_mapcount.store(0, Relaxed);
                d.set_fresh(w);
            }
            if o > 0 {
                // Unmapped while split: each sub-folio's slots start empty.
                mm.at(idx + 1).reset_mm_ids();
            }
            out.push(FolioLockGuard::assume_locked(Folio::from_head(
                this.allocator(),
                idx,
            )));
            off += 1 << o;
        }
        let h = mm.at(this.idx());
        h.entire_mapcount.store(0, Relaxed);
        h.set_fresh(first_word);
        out
    }
}
