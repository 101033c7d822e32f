//! `MADV_COLD` and `MADV_PAGEOUT` on large folios (Linux 6.10+ rules,
//! notes §3.2): a folio the range covers entirely and that is mapped
//! exactly once (by this space, page for page, or by one PMD) is handled
//! whole, never split; a folio the range covers only partly is split to
//! order 0 first if it is exclusive to this space, else skipped; a folio
//! mapped more than once (after fork) is skipped.  `MADV_PAGEOUT` writes
//! the folios out now (ignoring how recently they were used, without
//! waiting for the disk), up to [`PAGEOUT_BATCH`] at a time: they are
//! unmapped one by one ([`super::swap::pageout_unmap`]), then one TLB
//! flush covers the batch, and only then are their writes submitted
//! ([`super::swap::pageout_write`]) — Linux's deferred
//! `try_to_unmap_flush` before `pageout`.  `MADV_COLD` clears their young
//! bits and moves them to the inactive list so reclaim takes them first.

use alloc::vec::Vec;

use crate::addr::{PAGE_SIZE, PMD_SIZE};
use crate::paging::{PMD_LEVEL, PageTable, PagingArch, Step};
use crate::physmem::folio::FolioRef;
use crate::physmem::frame_flags::PageFlags;
use crate::thp::VmEvent;

use super::Mm;
use super::ctx::MmCtx;
use super::swap::{DeferredFlush, Pageout, Unmap, Unmapped, pageout_unmap, pageout_write};

/// Folios `MADV_PAGEOUT` unmaps before one TLB flush and their writes:
/// as many as one reclaim batch of Linux's (`SWAP_CLUSTER_MAX`).
pub(crate) const PAGEOUT_BATCH: usize = 32;

/// Folios `MADV_PAGEOUT` unmapped in this space (each locked and held)
/// whose cleared entries wait in `flush` for one TLB flush.
struct PageoutBatch<'a> {
    flush: DeferredFlush<'a>,
    held: Vec<(Unmapped<'a>, FolioRef<'a>)>,
}

impl<'a> PageoutBatch<'a> {
    /// Flushes the batch's cleared entries from every TLB, then writes
    /// its folios out: no CPU can change a folio through a stale entry
    /// while (or after) its data goes to disk.
    fn write(&mut self, ctx: &MmCtx<'a>) {
        self.flush.gather.flush_now();
        for (u, f) in self.held.drain(..) {
            pageout_write(ctx, u, true);
            drop(f);
        }
    }
}

/// What to do with one folio of the range.
enum Plan<'a> {
    /// Covered and mapped once: handle whole.
    Whole(FolioRef<'a>, u64),
    /// Partly covered, exclusive to this space: split to order 0 first.
    Split(FolioRef<'a>),
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// The folios of `[start, end)` and what the advice does with each.
    /// With `free` (`MADV_FREE`), a covered folio mapped more than once is
    /// still taken unless it is dirty or in the swap cache (the other
    /// mappings' dirty bits save it at reclaim), as Linux.
    fn advice_plan(
        &self,
        pt: &PageTable<'a, A>,
        start: u64,
        end: u64,
        free: bool,
    ) -> Vec<Plan<'a>> {
        let ctx = self.ctx;
        let mut out = Vec::new();
        // Shmem folios too, for `MADV_PAGEOUT` and `MADV_COLD` (Linux
        // reclaims them through `shmem_writepage`); never split here.
        let folio_of = |pfn: u64| {
            (!ctx.is_zero_pfn(pfn))
                .then(|| ctx.folio(pfn))
                .flatten()
                .filter(|f| f.is_anon() || (f.is_shmem() && !free))
        };
        // One descent per PTE table (not per page): the entries of each
        // table the range reaches are read in a row.
        let mut next = start; // below this, folios were handled already
        for step in pt.walk_range(start, end) {
            let run = match step {
                Step::Leaf(h) if h.level == PMD_LEVEL => {
                    let base = h.base();
                    if let Some(f) = folio_of(h.leaf.pfn) {
                        let once = f.large_mapcount() == 1;
                        if once && base >= start && base + PMD_SIZE <= end {
                            out.push(Plan::Whole(f.get_ref(), base));
                        } else if once && f.is_anon() {
                            out.push(Plan::Split(f.get_ref()));
                        }
                    }
                    next = base + PMD_SIZE;
                    continue;
                }
                Step::Ptes(run) => run,
                _ => continue,
            };
            let mut i = (next.max(run.start()) - run.start()) / PAGE_SIZE;
            while (i as usize) < run.len() {
                let va = run.va(i as usize);
                i += 1;
                let Some(l) = run.leaf(i as usize - 1) else {
                    continue;
                };
                let Some(f) = folio_of(l.pfn) else { continue };
                let nr = f.nr_pages();
                let fva = va - (l.pfn - f.pfn()) * PAGE_SIZE;
                // A single page is in place where it is mapped; a folio
                // inside this table is read from the run at hand.
                let in_place = nr == 1
                    || if fva >= run.start() && fva + nr * PAGE_SIZE <= run.end() {
                        let k = ((fva - run.start()) / PAGE_SIZE) as usize;
                        (0..nr as usize)
                            .all(|j| run.leaf(k + j).is_some_and(|m| m.pfn == f.pfn() + j as u64))
                    } else {
                        mapped_in_place(pt, fva, f.pfn(), nr)
                    };
                let covered = in_place && fva >= start && fva + nr * PAGE_SIZE <= end;
                let shared_ok = free && !f.test(PageFlags::DIRTY) && !f.test(PageFlags::SWAPCACHE);
                if covered && (f.large_mapcount() as u64 == nr || shared_ok) {
                    out.push(Plan::Whole(f.get_ref(), fva));
                } else if nr > 1 && !covered && f.is_anon() && f.mapped_exclusively_by(self.id) {
                    out.push(Plan::Split(f.get_ref()));
                }
                if in_place {
                    next = next.max(fva + nr * PAGE_SIZE);
                    i = i.max((next.min(run.end()) - run.start()) / PAGE_SIZE);
                }
            }
        }
        out
    }

    /// `MADV_PAGEOUT`, `MADV_COLD` or `MADV_FREE` over `ranges` (mmap lock
    /// held for reading): partly covered exclusive folios are split first,
    /// then the whole folios (the pieces included) get the advice.
    pub(crate) fn madvise_reclaim(&self, ranges: &[core::ops::Range<u64>], advice: Reclaim) {
        for r in ranges {
            if advice == Reclaim::Free && self.swapents() > 0 {
                // Swapped-out data is simply dropped (notes §3.3).
                let mut pt = self.lock_pt();
                self.zap_swap_range(&mut pt, r.start, r.end);
            }
            // Pass 0 splits, pass 1 applies the advice, pass 2 (only when
            // `MADV_PAGEOUT`'s pass 1 left something mapped) applies it
            // again: see `retry` below.
            let mut retry = false;
            // Pass 0's plan when it had nothing to split: pass 1 takes it
            // as it is instead of walking the range again (every folio's
            // reference taken and dropped twice had cost ~2% of a 4K
            // swap-out).  Either plan is as old as the other by the time
            // each folio's own lock and checks run.
            let mut carried = None;
            for pass in 0..3 {
                if pass == 2 && !retry {
                    break;
                }
                let (plan, gather) = {
                    let pt = self.lock_pt();
                    let plan = match carried.take() {
                        Some(plan) => plan,
                        None => self.advice_plan(&pt, r.start, r.end, advice == Reclaim::Free),
                    };
                    if pass == 0 && !plan.iter().any(|p| matches!(p, Plan::Split(_))) {
                        carried = Some(plan);
                        continue;
                    }
                    (plan, pt.gather())
                };
                let mut batch = PageoutBatch {
                    flush: DeferredFlush {
                        mm: self.id,
                        gather,
                    },
                    held: Vec::new(),
                };
                for p in plan {
                    match (p, pass) {
                        (Plan::Split(f), 0) => {
                            let _ = super::split::split_folio_to_order(&[self], *f, 0);
                        }
                        (Plan::Whole(f, at), 1 | 2) => match advice {
                            // A folio split for want of an aligned run of
                            // slots leaves its pieces mapped, and one kept
                            // for a moment's reason (its lock or an extra
                            // reference held by khugepaged, compaction or
                            // another CPU's fault) stays resident: the
                            // next pass takes the pieces, as Linux's
                            // reclaim list takes a split folio's tails,
                            // and tries the kept ones once more.  Pinned
                            // or mlocked folios are only looked at again.
                            Reclaim::Pageout => {
                                match pageout_unmap(&[self], &f, Some(&mut batch.flush)) {
                                    Unmap::Unmapped(u) => {
                                        batch.held.push((u, f));
                                        if batch.held.len() == PAGEOUT_BATCH {
                                            batch.write(self.ctx);
                                        }
                                    }
                                    Unmap::Done(out) => {
                                        retry |= matches!(out, Pageout::Split | Pageout::Kept);
                                    }
                                }
                            }
                            Reclaim::Cold => self.deactivate_folio(f, at),
                            Reclaim::Free => self.lazyfree_folio(f, at),
                        },
                        _ => {}
                    }
                }
                batch.write(self.ctx);
                batch.flush.gather.finish();
            }
        }
    }

    /// Clears the young bits (and with `dirty`, the dirty bits) of the
    /// folio `f` mapped once here at `at`, by its PMD or its PTEs.
    fn clear_folio_bits(&self, f: &FolioRef<'a>, at: u64, dirty: bool) {
        let mut pt = self.lock_pt();
        let w = pt.lookup(at);
        let mut g = pt.gather();
        if w.level == PMD_LEVEL {
            if let Some(mut l) = w.entry.leaf() {
                l.attrs.young = false;
                l.attrs.dirty &= !dirty;
                let _ = pt.update_pmd(at, l.attrs, &mut g);
            }
        } else if dirty {
            pt.mkclean_old_ptes(at, f.nr_pages() as usize, &mut g);
        } else {
            pt.clear_young_ptes(at, f.nr_pages() as usize, &mut g);
        }
        g.finish();
    }

    /// `MADV_COLD` on one folio mapped once at `at`: its young bits are
    /// cleared (the next reclaim pass sees it as unused) and it goes to
    /// the inactive list, losing `REFERENCED` (Linux's `folio_deactivate`).
    fn deactivate_folio(&self, f: FolioRef<'a>, at: u64) {
        self.clear_folio_bits(&f, at, false);
        self.ctx.folio_deactivate(*f);
    }

    /// `MADV_FREE` on one folio at `at` (notes §3.3): out of the swap
    /// cache, young and dirty cleared in its entries, `DIRTY` cleared, and
    /// marked lazyfree: reclaim discards it unless written again.
    fn lazyfree_folio(&self, f: FolioRef<'a>, at: u64) {
        let ctx = self.ctx;
        let Some(lock) = f.try_lock() else { return };
        if f.test(PageFlags::SWAPCACHE) && !ctx.drop_swap_cache(*f) {
            return;
        }
        self.clear_folio_bits(&f, at, true);
        f.clear_flags(PageFlags::DIRTY);
        f.set_flags(PageFlags::LAZYFREE);
        ctx.thp.stats.count_n(VmEvent::PgLazyFree, f.nr_pages());
        drop(lock);
    }
}

/// Whether the `nr` pages from `va` map frames `pfn..pfn + nr` in order:
/// one PTE table's entries read in a row when the range lies in one
/// table (the usual case), else a walk per page.
fn mapped_in_place<A: PagingArch>(pt: &PageTable<'_, A>, va: u64, pfn: u64, nr: u64) -> bool {
    if let Some(run) = pt.pte_run(va, nr as usize)
        && run.len() as u64 == nr
    {
        return (0..run.len()).all(|i| run.leaf(i).is_some_and(|m| m.pfn == pfn + i as u64));
    }
    (0..nr).all(|i| {
        pt.lookup(va.wrapping_add(i * PAGE_SIZE))
            .entry
            .leaf()
            .is_some_and(|m| m.pfn == pfn + i)
    })
}

/// Which reclaim advice [`Mm::madvise_reclaim`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reclaim {
    Pageout,
    Cold,
    Free,
}
