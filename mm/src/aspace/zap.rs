//! Unmapping (munmap, `MADV_DONTNEED`, `MAP_FIXED` replacement, exit):
//! Linux's `zap_pte_range` / `zap_huge_pmd`.
//!
//! Entries are cleared in batches per folio (a run of consecutive pages of
//! one folio costs one `get_and_clear_ptes` and one mapcount update); a PMD
//! leaf the range covers entirely is removed whole, one it cuts is split
//! first.  Every TLB flush is gathered and done once at the end, and only
//! then are the folios' references dropped, so no freed frame is ever
//! reachable through a stale TLB entry.

use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, align_down};
use crate::paging::{Entry, PMD_LEVEL, PTE_LEVEL, PageTable, PagingArch, TlbGather, level_size};

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
        let mut va = start;
        while va < end {
            let w = pt.lookup(va);
            let size = level_size(w.level.max(PMD_LEVEL));
            let next = align_down(va, size).saturating_add(size).min(end);
            match w.entry {
                Entry::Absent if w.level >= PMD_LEVEL => va = next,
                Entry::Leaf(l) if w.level == PMD_LEVEL => {
                    let base = align_down(va, PMD_SIZE);
                    if va == base && end - base >= PMD_SIZE {
                        pt.zap_pmd(base, &mut g)
                            .expect("a PMD leaf is there under the lock");
                        if !self.ctx.is_zero_pfn(l.pfn)
                            && let Some(f) = self.ctx.folio(l.pfn)
                        {
                            self.ctx.rmap_remove_pmd(f);
                            self.rss_sub(f.nr_pages());
                            puts.push(f, 1);
                        }
                        va = base + PMD_SIZE;
                    } else {
                        self.split_pmd_locked(pt, base);
                    }
                }
                _ if w.level == PTE_LEVEL => {
                    self.zap_ptes(pt, va, next, w.slot, &mut g, &mut puts);
                    va = next;
                }
                _ => {
                    debug_assert!(false, "unexpected entry {:?} at {va:#x}", w.entry);
                    va = next;
                }
            }
        }
        if free_tables {
            // Every leaf in the range is gone, so this only frees the table
            // pages the range covers entirely (their flush is gathered).
            let r = pt.unmap_range(start, end - start, &mut g);
            debug_assert!(r.is_ok(), "{r:?}");
        }
        g.finish();
        puts.release();
    }

    /// Free the page-table pages lying wholly inside `[floor, ceiling)`, a
    /// range that holds no VMA and therefore no leaf (only empty tables).
    pub(crate) fn free_gap_tables(&self, pt: &mut PageTable<'a, A>, floor: u64, ceiling: u64) {
        let floor = floor.next_multiple_of(PAGE_SIZE);
        let ceiling = align_down(ceiling, PAGE_SIZE);
        if floor >= ceiling {
            return;
        }
        let mut g = pt.gather();
        let r = pt.unmap_range(floor, ceiling - floor, &mut g);
        debug_assert!(r.is_ok(), "{r:?}");
        g.finish();
    }

    /// Zap the PTEs of `[va, end)`, which lie in the one PTE table whose
    /// entry for `va` is at `slot`.
    fn zap_ptes(
        &self,
        pt: &mut PageTable<'a, A>,
        va: u64,
        end: u64,
        slot: u64,
        g: &mut TlbGather<'a>,
        puts: &mut PutList<'a>,
    ) {
        let ctx = self.ctx;
        let n = ((end - va) >> PAGE_SHIFT) as usize;
        let read = |i: usize| A::decode(ctx.mem.load(slot + 8 * i as u64), PTE_LEVEL).leaf();
        let mut i = 0;
        while i < n {
            let Some(l) = read(i) else {
                i += 1;
                continue;
            };
            let at = va + i as u64 * PAGE_SIZE;
            if ctx.is_zero_pfn(l.pfn) {
                pt.get_and_clear_ptes(at, 1, g);
                i += 1;
                continue;
            }
            let Some(f) = ctx.folio(l.pfn) else {
                debug_assert!(false, "PTE at {at:#x} maps pfn {:#x}, no folio", l.pfn);
                pt.get_and_clear_ptes(at, 1, g);
                i += 1;
                continue;
            };
            let folio_end = f.pfn() + f.nr_pages();
            let mut j = i + 1;
            while j < n
                && l.pfn + ((j - i) as u64) < folio_end
                && read(j).is_some_and(|m| m.pfn == l.pfn + (j - i) as u64)
            {
                j += 1;
            }
            let nr = (j - i) as u64;
            pt.get_and_clear_ptes(at, nr as usize, g);
            ctx.rmap_remove_ptes(f, l.pfn - f.pfn(), nr);
            self.rss_sub(nr);
            puts.push(f, nr as u32);
            i = j;
        }
    }
}
