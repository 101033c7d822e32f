//! Harvesting the accessed ("young") bit for reclaim: Linux's
//! `ptep_clear_flush_young` / `pmdp_clear_flush_young` and arm64's
//! `contpte_ptep_test_and_clear_young`.

use super::arch::{Entry, PMD_LEVEL, PTE_LEVEL, PagingArch, level_index};
use super::table::PageTable;
use super::tlb::TlbGather;
use crate::addr::{PAGE_SIZE, PMD_SIZE};

impl<'a, A: PagingArch> PageTable<'a, A> {
    /// Tests and clears the young bit of the leaf that maps `va`; returns
    /// whether it was young.  Never splits or unfolds anything:
    /// * a PMD leaf: its one young bit;
    /// * a PTE in a contiguous block (arm64 contpte): the block is one
    ///   unit, as Linux's `contpte_ptep_test_and_clear_young`: the access
    ///   flag is cleared on all of its entries and the result is their OR,
    ///   so a caller going through the block's pages sees "young" once and
    ///   "old" for the rest;
    /// * any other PTE: its own bit.
    ///
    /// The TLB: where the MMU sets the bit itself (`HW_YOUNG`, x86) no
    /// flush is gathered, as Linux's x86 `ptep_clear_flush_young`: a stale
    /// TLB entry only hides some accesses until it is evicted, which
    /// reclaim tolerates.  Without hardware access flags (arm64 here) an
    /// access through a cached young entry would never fault and never be
    /// seen, so a flush of the entry (the whole block, or the PMD) is
    /// gathered when it was young.  A missing entry, a swap entry and an
    /// address above the PMD level read as not young.
    pub fn test_and_clear_young(&mut self, va: u64, g: &mut TlbGather<'a>) -> bool {
        let w = self.lookup(va);
        let Entry::Leaf(l) = w.entry else {
            return false;
        };
        let clear = |mut l: super::arch::Leaf| {
            l.attrs.young = false;
            l
        };
        if w.level == PMD_LEVEL {
            let young = self
                .modify_leaf(w.slot, PMD_LEVEL, clear)
                .is_some_and(|(old, _)| old.attrs.young);
            if young && !A::HW_YOUNG {
                let base = va & !(PMD_SIZE - 1);
                g.add_range(base, base + PMD_SIZE, PMD_SIZE);
            }
            return young;
        }
        if w.level != PTE_LEVEL {
            return false;
        }
        let table = w.table_pa();
        let idx = level_index(va, PTE_LEVEL);
        let cp = A::CONT_PTES;
        let (first, count) = if l.cont && cp > 1 {
            (idx - idx % cp, cp)
        } else {
            (idx, 1)
        };
        let mut young = false;
        for i in first..first + count {
            if let Some((old, _)) = self.modify_leaf(table + 8 * i as u64, PTE_LEVEL, clear) {
                young |= old.attrs.young;
            }
        }
        if young && !A::HW_YOUNG {
            let start = (va & !(PAGE_SIZE - 1)) - (idx - first) as u64 * PAGE_SIZE;
            g.add_range(start, start + count as u64 * PAGE_SIZE, PAGE_SIZE);
        }
        young
    }
}
