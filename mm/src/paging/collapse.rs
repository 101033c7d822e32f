//! Page-table steps of a PMD collapse (Linux's `pmdp_collapse_flush` and
//! the failure path that puts the PTE table back).

use super::arch::{Entry, PMD_LEVEL, level_index};
use super::table::{PageTable, PtError, TableAt};
use super::{PagingArch, tlb::TlbOps};
use crate::addr::{PAGE_SIZE, PMD_SIZE};

impl<'a, A: PagingArch> PageTable<'a, A> {
    /// Unhook the PTE table under the 2 MiB-aligned `va` from its PMD and
    /// flush the space from the TLB at once (every 4 KiB entry of the range,
    /// and the walk caches), so no CPU can reach the old pages through it any more.
    /// The table page keeps its entries for the caller to read (and to put
    /// back with [`Self::collapse_restore_table`] on failure).  Returns the
    /// table's physical address; `NotMapped` if the PMD holds no table.
    pub fn collapse_detach_table(&mut self, va: u64) -> Result<u64, PtError> {
        let va = va & !(PMD_SIZE - 1);
        let TableAt::Table(t) = self.table_at(va, PMD_LEVEL) else {
            return Err(PtError::NotMapped);
        };
        let slot = t + 8 * level_index(va, PMD_LEVEL) as u64;
        let Entry::Table { pa } = self.read(slot, PMD_LEVEL) else {
            return Err(PtError::NotMapped);
        };
        self.take(slot);
        // 512 pages is past the gather's threshold: one flush of the whole
        // space, as Linux's `pmdp_collapse_flush` ends up doing (x86 above
        // its 33-page ceiling, arm64 at `MAX_DVM_OPS`).  Per-page
        // invalidations cost about 0.8 µs each under TCG.
        let tlb: &dyn TlbOps = self.env.tlb;
        let to = self.cpus.begin_flush();
        if PMD_SIZE / PAGE_SIZE > super::tlb::FULL_FLUSH_THRESHOLD {
            tlb.flush_all(self.space, to);
        } else {
            tlb.flush_range(self.space, to, va, va + PMD_SIZE, PAGE_SIZE);
        }
        Ok(pa)
    }

    /// Put back a table unhooked by [`Self::collapse_detach_table`] (the
    /// PMD must still be empty).
    pub fn collapse_restore_table(&mut self, va: u64, pa: u64) -> Result<(), PtError> {
        let va = va & !(PMD_SIZE - 1);
        let TableAt::Table(t) = self.table_at(va, PMD_LEVEL) else {
            return Err(PtError::NotMapped);
        };
        let slot = t + 8 * level_index(va, PMD_LEVEL) as u64;
        let new = A::encode(Entry::Table { pa }, PMD_LEVEL);
        if self.mem().cmpxchg(slot, 0, new) != 0 {
            return Err(PtError::Exists);
        }
        self.env.tlb.sync_tables();
        Ok(())
    }

    /// Replace the PTE table under the 2 MiB-aligned `va` (holding only
    /// non-present entries the caller has accounted for: a migration's
    /// entries for one PMD-size folio) by a PMD leaf mapping the 512
    /// frames from `pfn` with `attrs`; the table, zeroed, becomes the
    /// leaf's deposit.  Migration's remap of a folio that was PMD-mapped.
    /// On error nothing changed.
    pub fn replace_table_with_pmd_leaf(
        &mut self,
        va: u64,
        pfn: u64,
        attrs: super::arch::Attrs,
    ) -> Result<(), PtError> {
        let va = va & !(PMD_SIZE - 1);
        let t = self.collapse_detach_table(va)?;
        let saved: alloc::vec::Vec<u64> = (0..512).map(|i| self.mem().load(t + 8 * i)).collect();
        self.mem().zero(t, PAGE_SIZE);
        let r = self.set_pmd_leaf(va, pfn, attrs, t);
        if r.is_err() {
            for (i, &e) in saved.iter().enumerate() {
                self.mem().store(t + 8 * i as u64, e);
            }
            let back = self.collapse_restore_table(va, t);
            debug_assert!(back.is_ok());
        }
        r
    }
}
