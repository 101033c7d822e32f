//! Page-table steps of a PMD collapse (Linux's `pmdp_collapse_flush` and
//! the failure path that puts the PTE table back).

use super::arch::{Entry, PMD_LEVEL, level_index};
use super::table::{PageTable, PtError, TableAt};
use super::{PagingArch, tlb::TlbOps};
use crate::addr::{PAGE_SIZE, PMD_SIZE};

impl<'a, A: PagingArch> PageTable<'a, A> {
    /// Unhook the PTE table under the 2 MiB-aligned `va` from its PMD and
    /// flush the range from the TLB at once (every 4 KiB entry, and the
    /// walk caches), so no CPU can reach the old pages through it any more.
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
        let tlb: &dyn TlbOps = self.env.tlb;
        tlb.flush_range(
            self.space,
            self.cpus.begin_flush(),
            va,
            va + PMD_SIZE,
            PAGE_SIZE,
        );
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
}
