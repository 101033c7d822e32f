//! Unmapping (munmap, `MADV_DONTNEED`, `MAP_FIXED` replacement, exit):
//! Linux's `zap_pte_range` / `zap_huge_pmd`.
//!
//! Entries are cleared in batches per folio (a run of consecutive pages of
//! one folio costs one `get_and_clear_ptes` and one mapcount update); a PMD
//! leaf the range covers entirely is removed whole, one it cuts is split
//! first.  Every TLB flush is gathered and done once at the end, and only
//! then are the folios' references dropped, so no freed frame is ever
//! reachable through a stale TLB entry.  munmap gathers all its ranges and
//! the gap tables around them into one gather ([`Mm::zap_range_into`],
//! [`Mm::free_gap_tables_into`]): one flush, so one shootdown round, as
//! Linux's `unmap_region` does with one mmu_gather; the freed tables go
//! back only after it, once every target CPU has acknowledged.

use crate::addr::{PAGE_SIZE, align_down};
use crate::paging::{
    BatchMatch, Entry, HugeLeaf, PMD_LEVEL, PageTable, PagingArch, PteRun, Step, TlbGather,
};

use super::Mm;
use super::rmap::PutList;

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Remove every mapping in `[start, end)` (page aligned).  With
    /// `free_tables`, page-table pages the range empties entirely are freed
    /// too (munmap and exit; `MADV_DONTNEED` keeps them, as Linux).
    pub(crate) fn zap_range(
        &self,
        pt: &mut PageTable<'a, A>,
        start: u64,
        end: u64,
        free_tables: bool,
    ) {
        if start >= end {
            return;
        }
        let mut g = pt.gather();
        let mut puts = PutList::new();
        self.zap_range_into(pt, start, end, free_tables, &mut g, &mut puts);
        g.finish();
        puts.release();
    }

    /// [`Self::zap_range`] into the caller's gather and put list: the
    /// caller must `finish` the gather and only then release the puts (so
    /// no folio is freed while a TLB may still map it).
    pub(crate) fn zap_range_into(
        &self,
        pt: &mut PageTable<'a, A>,
        start: u64,
        end: u64,
        free_tables: bool,
        g: &mut TlbGather<'a>,
        puts: &mut PutList<'a>,
    ) {
        if start >= end {
            return;
        }
        let mut walk = pt.walk_range(start, end);
        while let Some(step) = walk.next() {
            match step {
                Step::Hole { .. } => {}
                Step::Leaf(h) if h.level == PMD_LEVEL => {
                    let (base, l) = (h.base(), h.leaf);
                    if h.whole() {
                        pt.zap_pmd(base, g)
                            .expect("a PMD leaf is there under the lock");
                        if !self.ctx.is_zero_pfn(l.pfn)
                            && let Some(f) = self.ctx.folio(l.pfn)
                        {
                            self.ctx.rmap_remove_pmd(f, self.id);
                            self.rss_sub_folio(f, f.nr_pages());
                            puts.push(f, 1);
                        }
                    } else {
                        self.split_pmd_locked(pt, base);
                        walk.again();
                    }
                }
                Step::Ptes(run) => {
                    self.zap_ptes(pt, run, g, puts);
                    puts.release_if_full(g);
                }
                Step::Leaf(HugeLeaf { start, .. }) | Step::NonPresent { start, .. } => {
                    debug_assert!(false, "unexpected entry at {start:#x}");
                }
            }
        }
        if free_tables {
            // Every leaf in the range is gone, so this only frees the table
            // pages the range covers entirely (their flush is gathered).
            let r = pt.unmap_range(start, end - start, g);
            debug_assert!(r.is_ok(), "{r:?}");
        }
    }

    /// Free the page-table pages lying wholly inside `[floor, ceiling)`, a
    /// range that holds no VMA and therefore no leaf (only empty tables).
    /// The tables go into the caller's gather `g` (freed when it finishes,
    /// after its one flush).
    pub(crate) fn free_gap_tables_into(
        &self,
        pt: &mut PageTable<'a, A>,
        floor: u64,
        ceiling: u64,
        g: &mut TlbGather<'a>,
    ) {
        let floor = floor.next_multiple_of(PAGE_SIZE);
        let ceiling = align_down(ceiling, PAGE_SIZE);
        if floor >= ceiling {
            return;
        }
        let r = pt.unmap_range(floor, ceiling - floor, g);
        debug_assert!(r.is_ok(), "{r:?}");
    }

    /// Clear the swap entries of `[start, end)` (`MADV_FREE`: their data
    /// is discarded at once; migration entries stay, as Linux).
    pub(crate) fn zap_swap_range(&self, pt: &mut PageTable<'a, A>, start: u64, end: u64) {
        for step in pt.walk_range(start, end) {
            if let Step::Ptes(run) = step {
                self.zap_swap_ptes(pt, &run, None);
            }
        }
    }

    /// Clear the swap entries of `run`, dropping their slot references
    /// (runs of consecutive slots together), as Linux's
    /// `free_swap_and_cache_nr`.  With `puts`, migration entries too: each
    /// still maps the page it names (see `aspace::migrate`), so it is
    /// unmapped like a PTE, its reference dropped after the flush, and a
    /// migration in flight does not restore it.  Only looked for while the
    /// space has any.
    fn zap_swap_ptes(
        &self,
        pt: &mut PageTable<'a, A>,
        run: &PteRun<'a, A>,
        mut puts: Option<&mut PutList<'a>>,
    ) {
        let mut pending: Option<(u8, u64, u64)> = None;
        let flush = |p: Option<(u8, u64, u64)>| {
            if let Some((ty, slot, n)) = p {
                self.ctx.swap_free_entries(ty, slot, n);
            }
        };
        for i in 0..run.len() {
            let Entry::Swap(e) = run.entry(i) else {
                continue;
            };
            if e.is_migration()
                && let Some(puts) = puts.as_deref_mut()
            {
                pt.take_swap_pte(run.va(i));
                self.migents_sub(1);
                if let Some(f) = self.ctx.folio(e.offset) {
                    self.ctx.rmap_remove_ptes(f, self.id, e.offset - f.pfn(), 1);
                    self.rss_sub(1);
                    puts.push(f, 1);
                }
                continue;
            }
            if !e.is_swap() {
                continue;
            }
            pt.take_swap_pte(run.va(i));
            self.swapents_sub(1);
            match &mut pending {
                Some((ty, slot, n)) if *ty == e.ty && *slot + *n == e.offset => *n += 1,
                p => flush(p.replace((e.ty, e.offset, 1))),
            }
        }
        flush(pending);
    }

    /// Zap the PTEs of `run`, one batch per run of a folio's pages.
    fn zap_ptes(
        &self,
        pt: &mut PageTable<'a, A>,
        run: PteRun<'a, A>,
        g: &mut TlbGather<'a>,
        puts: &mut PutList<'a>,
    ) {
        let ctx = self.ctx;
        if self.has_nonpresent() {
            self.zap_swap_ptes(pt, &run, Some(puts));
        }
        self.for_each_pte_batch(&run, BatchMatch::Frames, false, |i, b, folio| {
            let (l, nr) = (b.first, b.nr);
            pt.get_and_clear_ptes(run.va(i), nr, g);
            match folio {
                Some(f) => {
                    ctx.rmap_remove_ptes(f, self.id, l.pfn - f.pfn(), nr as u64);
                    self.rss_sub_folio(f, nr as u64);
                    puts.push(f, nr as u32);
                }
                None => debug_assert!(
                    ctx.is_zero_pfn(l.pfn),
                    "PTE at {:#x} maps pfn {:#x}, no folio",
                    run.va(i),
                    l.pfn
                ),
            }
            nr
        });
    }
}
