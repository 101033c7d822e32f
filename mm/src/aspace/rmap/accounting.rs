//! Mapping accounting for anonymous folios: references, the large and
//! entire mapcounts, anon-exclusive bits, the rmap owner, the per-order
//! gauges and the deferred-split queue.
//!
//! # The rule (semantics notes §2.7)
//! Every mapping owns one folio reference, and the large mapcount counts
//! every mapping:
//! * a PTE mapping of one page: +1 reference, +1 large mapcount;
//! * a PMD mapping of the whole folio: +1 reference, +1 large mapcount and
//!   +1 entire mapcount (one mapping, so one reference — as Linux).
//!
//! Splitting a PMD mapping into 512 PTE mappings therefore adds 511 to both
//! the refcount and the large mapcount and drops the entire mapcount by one.
//! References are raised before mapcounts on map and dropped after them on
//! unmap (and, on unmap, only after the TLB flush, so a freed folio is
//! never reachable through a stale TLB entry — see [`PutList`]).  Thus
//! `refcount - large_mapcount` is always the number of extra references
//! (pins, or the fault path's own while it works).
//!
//! All of this runs under the page-table lock of the address space whose
//! mapping changes; the counters are atomics because other address spaces
//! (fork's sharing) change them under their own locks.

use alloc::vec::Vec;

use crate::physmem::folio::Folio;
use crate::physmem::frame_flags::PageFlags;
use crate::thp::MthpStat;

use crate::aspace::ctx::MmCtx;

/// Folio references to drop once the gather that unmapped them finished.
#[derive(Default)]
pub(crate) struct PutList<'a> {
    puts: Vec<(Folio<'a>, u32)>,
}

impl<'a> PutList<'a> {
    pub(crate) fn new() -> Self {
        PutList { puts: Vec::new() }
    }
    pub(crate) fn push(&mut self, f: Folio<'a>, n: u32) {
        self.puts.push((f, n));
    }
    /// Drop the references.  Call only after `TlbGather::finish`.  The
    /// folios whose last references these were go back to the allocator
    /// in batches.
    pub(crate) fn release(self) {
        let mut freed = FreeBatch::new();
        for (f, n) in self.puts {
            freed.put(f, n);
        }
        freed.finish();
    }
}

/// Drops folio references, collecting the folios whose last references
/// they were and handing them to the allocator's batch release
/// (`release_folios`) a fixed-size batch at a time, with no heap
/// allocation on the way (zap and collapse run it for every unmap).
pub(crate) struct FreeBatch<'a> {
    alloc: Option<&'a crate::physmem::buddy::BuddyAllocator<'a>>,
    idx: [u32; 32],
    n: usize,
}

impl<'a> FreeBatch<'a> {
    pub(crate) fn new() -> Self {
        FreeBatch {
            alloc: None,
            idx: [0; 32],
            n: 0,
        }
    }

    /// Drop `n` references to `f`.
    pub(crate) fn put(&mut self, f: Folio<'a>, n: u32) {
        if let Some(i) = f.put_many_deferred(n) {
            self.alloc = Some(f.allocator());
            self.idx[self.n] = i;
            self.n += 1;
            if self.n == self.idx.len() {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        if let Some(a) = self.alloc
            && self.n > 0
        {
            a.release_folios(&self.idx[..self.n]);
        }
        self.n = 0;
    }

    /// Free what is still collected (dropping the batch does the same).
    pub(crate) fn finish(self) {}
}

impl Drop for FreeBatch<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl<'a> MmCtx<'a> {
    /// A freshly allocated folio (holding the allocation's one reference)
    /// becomes anonymous, owned by `mm_id` at `va` (the folio's first
    /// page), every page anon-exclusive, and mapped by all its pages' PTEs
    /// or, with `pmd`, by one PMD — entries the caller has just written.
    /// Returns the folio's order.
    /// The allocation's reference becomes the first mapping's: the caller
    /// hands it over with [`FolioRef::into_raw`](crate::physmem::folio::FolioRef::into_raw)
    /// (not dropped and taken again).
    pub(crate) fn rmap_add_new(&self, f: Folio<'a>, mm_id: u64, va: u64, pmd: bool) -> u32 {
        // The order is read once: every 4K fault comes through here.
        let order = f.order();
        // The LRU flag goes with `ANON` in one atomic operation; the folio
        // joins the list (or the CPU's add batch) at the end.
        let lru = crate::reclaim::lru::new_folio_flag(order);
        f.set_anon_owner_flags(mm_id, va >> crate::addr::PAGE_SHIFT, lru);
        if order == 0 {
            f.first_page().set_anon_exclusive();
        } else {
            for p in f.pages() {
                p.set_anon_exclusive();
            }
        }
        if pmd {
            f.add_entire_mapcount(1);
            f.add_mapcount_mm(mm_id, 1);
            // Queued so the shrinker can find it if it turns out underused
            // (Linux's `deferred_split_folio(folio, false)` at PMD fault).
            self.deferred_split_add_pmd(f);
        } else if order == 0 {
            // No owner slots below order 1 (`add_mapcount_mm` would look
            // the order up again to learn that).
            f.add_large_mapcount(1);
        } else {
            let n = 1u32 << order;
            f.get_many(n - 1);
            f.add_mapcount_mm(mm_id, n as i32);
        }
        self.thp.stats.inc(order, MthpStat::NrAnon);
        // New anonymous folios start on the inactive list (Linux's
        // `folio_add_lru_vma` after `folio_add_new_anon_rmap`).  Every
        // caller holds a page-table lock, so preemption is off.
        self.lru().add_new_flagged(self.buddy, f.idx());
        order
    }

    /// A freshly allocated folio becomes a reservation (`aspace::reserve`)
    /// of space `mm_id` for the block at `base`, with page `page` mapped
    /// (the allocation's reference becomes that mapping's): anonymous, that
    /// page anon-exclusive (each page becomes so as it is mapped), on the LRU, and queued as partially mapped so
    /// the shrinker can take its unused pages back under pressure (without
    /// Linux's `split_deferred` counts: nothing was unmapped).
    pub(crate) fn rmap_add_reservation(&self, f: Folio<'a>, mm_id: u64, base: u64, page: u64) {
        let order = f.order();
        let lru = crate::reclaim::lru::new_folio_flag(order);
        f.set_anon_owner_flags(
            mm_id,
            base >> crate::addr::PAGE_SHIFT,
            lru | PageFlags::RESERVATION,
        );
        f.page(page).set_anon_exclusive();
        f.add_mapcount_mm(mm_id, 1);
        self.thp.stats.inc(order, MthpStat::NrAnon);
        self.lru().add_new_flagged(self.buddy, f.idx());
        self.deferred_split_queue(f, false);
    }

    /// The 512 PTE mappings of the PMD-size folio `f` in space `mm_id`
    /// became one PMD mapping in place (a promoted reservation; the TLB
    /// was flushed): the entire mapcount and one reference replace them.
    /// Queued as a PMD fault's folio is, for the underused shrinker.
    pub(crate) fn rmap_promote_pmd(&self, f: Folio<'a>, mm_id: u64) {
        let extra = f.nr_pages() as u32 - 1;
        f.add_entire_mapcount(1);
        f.add_mapcount_mm(mm_id, -(extra as i32));
        f.put_many(extra);
        self.deferred_split_add_pmd(f);
    }

    /// Page `page` of the reservation `f` was just mapped in space `mm_id`.
    /// Returns the folio's mappings now.
    pub(crate) fn rmap_reservation_page(&self, f: Folio<'a>, mm_id: u64, page: u64) -> i32 {
        f.get();
        f.page(page).set_anon_exclusive();
        f.add_mapcount_mm(mm_id, 1)
    }

    /// Break the reservation `f`, if it is one (see `aspace::reserve`):
    /// it stays an ordinary partially mapped folio, queued for split.
    pub(crate) fn reservation_break(&self, f: Folio<'a>) {
        if f.test(PageFlags::RESERVATION) && f.test_and_clear(PageFlags::RESERVATION) {
            self.thp.stats.inc(f.order(), MthpStat::ReserveBreak);
        }
    }

    /// fork shares `n` pages from page `first` of `f` with child `mm_id`
    /// by PTEs: the pages are no longer exclusive (and a reservation is
    /// no longer one).
    pub(crate) fn rmap_dup_ptes(&self, f: Folio<'a>, mm_id: u64, first: u64, n: u64) {
        self.reservation_break(f);
        f.get_many(n as u32);
        f.add_mapcount_mm(mm_id, n as i32);
        for i in first..first + n {
            f.page(i).clear_anon_exclusive();
        }
    }

    /// fork shares a PMD-mapped folio with child `mm_id`.
    pub(crate) fn rmap_dup_pmd(&self, f: Folio<'a>, mm_id: u64) {
        f.get();
        f.add_mapcount_mm(mm_id, 1);
        f.add_entire_mapcount(1);
        for p in f.pages() {
            p.clear_anon_exclusive();
        }
    }

    /// A PMD mapping of `f` in space `mm_id` becomes 512 PTE mappings.
    pub(crate) fn rmap_split_pmd(&self, f: Folio<'a>, mm_id: u64) {
        let extra = f.nr_pages() as u32 - 1;
        f.get_many(extra);
        f.add_mapcount_mm(mm_id, extra as i32);
        let left = f.add_entire_mapcount(-1);
        self.shmem_pmd_unmapped(f, left);
    }

    /// `n` PTE mappings of pages of the shmem folio `f` were written
    /// (Linux's `folio_add_file_rmap_ptes`): one reference and one
    /// mapcount each, in space `mm_id`'s owner slot (so smaps and pagemap
    /// tell a shmem folio mapped by two processes from one mapped by
    /// one); no anon-exclusive bits, no rmap owner.
    pub(crate) fn rmap_add_shmem_ptes(&self, f: Folio<'a>, mm_id: u64, n: u64) {
        f.get_many(n as u32);
        f.add_mapcount_mm(mm_id, n as i32);
    }

    /// A PMD mapping of the shmem folio `f` was written
    /// (`folio_add_file_rmap_pmd`); its first one counts the folio in
    /// `ShmemPmdMapped`.
    pub(crate) fn rmap_add_shmem_pmd(&self, f: Folio<'a>, mm_id: u64) {
        f.get();
        f.add_mapcount_mm(mm_id, 1);
        if f.add_entire_mapcount(1) == 1 {
            self.thp
                .shmem
                .pmd_mapped
                .fetch_add(f.nr_pages(), core::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A PMD mapping of `f` went, `left` remain: the last one of a shmem
    /// folio leaves `ShmemPmdMapped`.
    fn shmem_pmd_unmapped(&self, f: Folio<'a>, left: i32) {
        if left == 0 && f.is_shmem() {
            self.thp
                .shmem
                .pmd_mapped
                .fetch_sub(f.nr_pages(), core::sync::atomic::Ordering::Relaxed);
        }
    }

    /// `n` PTE mappings of pages `first..first + n` of `f` in space `mm_id`
    /// went away; the
    /// caller drops `n` references after the flush.  Unmapped pages lose
    /// anon-exclusive (they are mapped nowhere now, and nothing here can
    /// map them again).  A large folio left partly mapped is queued for
    /// deferred split — Linux's test: fewer mappings than pages and no PMD
    /// mapping — and one left unmapped is unqueued and stops counting as
    /// a live anonymous THP.
    pub(crate) fn rmap_remove_ptes(&self, f: Folio<'a>, mm_id: u64, first: u64, n: u64) {
        for i in first..first + n {
            f.page(i).clear_anon_exclusive();
        }
        let left = f.add_mapcount_mm(mm_id, -(n as i32));
        self.after_unmap(f, left);
    }

    /// The last `n` mappings of `f`, all by PTEs, went away (the caller
    /// checked `large_mapcount() == n` and no PMD mapping, under the
    /// locks that keep it so) and the caller drops their references next.
    /// [`Self::rmap_remove_ptes`] without the run bookkeeping; an order-0
    /// folio keeps its anon-exclusive bit, which the allocator rewrites
    /// when the frame is freed (nothing can map it in between).
    pub(crate) fn rmap_remove_all_ptes(&self, f: Folio<'a>, mm_id: u64, n: u64) {
        if f.nr_pages() > 1 {
            for p in f.pages() {
                p.clear_anon_exclusive();
            }
        }
        let left = f.add_mapcount_mm(mm_id, -(n as i32));
        debug_assert_eq!(left, 0, "not the last mappings: {}", f.dump());
        self.after_unmap(f, left);
    }

    /// A PMD mapping of `f` went away; the caller drops one reference after
    /// the flush.
    pub(crate) fn rmap_remove_pmd(&self, f: Folio<'a>, mm_id: u64) {
        let entire = f.add_entire_mapcount(-1);
        self.shmem_pmd_unmapped(f, entire);
        let left = f.add_mapcount_mm(mm_id, -1);
        if f.entire_mapcount() == 0 && left == 0 {
            for p in f.pages() {
                p.clear_anon_exclusive();
            }
        }
        self.after_unmap(f, left);
    }

    fn after_unmap(&self, f: Folio<'a>, left: i32) {
        if f.is_shmem() {
            // The page cache keeps it; never split for being partly mapped.
            return;
        }
        // An unmapped page of a reservation must never be handed out again.
        self.reservation_break(f);
        if left == 0 {
            self.deferred_split_remove(f);
            self.thp.stats.dec(f.order(), MthpStat::NrAnon);
        } else if f.order() >= 2 && (left as u64) < f.nr_pages() && f.entire_mapcount() == 0 {
            self.deferred_split_folio(f);
        }
    }
}
