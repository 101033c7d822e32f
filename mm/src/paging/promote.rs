//! Page-table steps of reservation-based allocation (`aspace::reserve`):
//! find what a block already maps, and promote a PTE table whose 512
//! entries map one PMD-size folio in place to a PMD leaf, with no copy.

use super::arch::{Entry, PTE_LEVEL, level_index};
use super::table::{PageTable, PtError, TableAt, Walk};
use super::{Attrs, PagingArch};
use crate::addr::{PAGE_SIZE, PMD_SIZE};

/// Entries in one PTE table.
const PTES: u64 = 512;

impl<'a, A: PagingArch> PageTable<'a, A> {
    /// The first non-empty entry among the `n` PTEs from `va` (which must
    /// lie in one PTE table), with its address; `None` when all are empty
    /// or there is no PTE table there.
    pub fn first_pte_in(&self, va: u64, n: usize) -> Option<(u64, Entry)> {
        self.first_pte_in_walked(None, 0, va, n)
    }

    /// [`Self::first_pte_in`] given `w`, a walk to `walked` under this lock
    /// hold, if any: no second walk when the block lies in that table.
    pub fn first_pte_in_walked(
        &self,
        w: Option<&Walk>,
        walked: u64,
        va: u64,
        n: usize,
    ) -> Option<(u64, Entry)> {
        let (t, idx0) = match w.and_then(|w| super::batch::walked_run(w, walked, va, n)) {
            Some(known) => known,
            None => match self.table_at(va, PTE_LEVEL) {
                TableAt::Table(t) => (t, level_index(va, PTE_LEVEL)),
                _ => return None,
            },
        };
        let mem = self.mem();
        (0..n).find_map(|i| {
            let raw = mem.load(t + 8 * (idx0 + i) as u64);
            (raw != 0).then(|| (va + i as u64 * PAGE_SIZE, A::decode(raw, PTE_LEVEL)))
        })
    }

    /// If the PTE table under the 2 MiB-aligned `va` maps the 512 frames
    /// from `pfn` in order, all present with equal rights, replace it by
    /// one PMD leaf for them (young and dirty gathered from every entry
    /// after the entries can no longer change): the table is unhooked and
    /// the space flushed first (break-before-make), its entries checked in
    /// one pass, then it is zeroed and kept as the leaf's deposit.
    /// `Ok(false)`: the table does not qualify; it is hooked back
    /// unchanged (a flush wasted, in a case the caller makes rare).  The
    /// caller holds the page-table lock exclusively.
    pub fn promote_to_pmd_leaf(&mut self, va: u64, pfn: u64) -> Result<bool, PtError> {
        let va = va & !(PMD_SIZE - 1);
        if !pfn.is_multiple_of(PTES) || !A::leaf_allowed(super::PMD_LEVEL) {
            return Ok(false);
        }
        let TableAt::Table(t) = self.table_at(va, PTE_LEVEL) else {
            return Ok(false);
        };
        let Entry::Leaf(first) = self.read(t, PTE_LEVEL) else {
            return Ok(false);
        };
        if first.pfn != pfn || first.attrs.special || !first.attrs.perms.accessible() {
            return Ok(false);
        }
        let detached = self.collapse_detach_table(va)?;
        debug_assert_eq!(detached, t);
        let mem = self.mem();
        let key = first.attrs.fold_key();
        let (mut young, mut dirty) = (false, false);
        let fits = (0..PTES).all(|i| match A::decode(mem.load(t + 8 * i), PTE_LEVEL) {
            Entry::Leaf(l) if l.pfn == pfn + i && l.attrs.fold_key() == key => {
                young |= l.attrs.young;
                dirty |= l.attrs.dirty;
                true
            }
            _ => false,
        });
        if !fits {
            self.collapse_restore_table(va, t)?;
            return Ok(false);
        }
        mem.zero(t, PAGE_SIZE);
        let attrs = Attrs {
            young,
            dirty,
            ..key
        };
        if let Err(e) = self.set_pmd_leaf(va, pfn, attrs, t) {
            // Cannot happen (the PMD was just emptied under the lock); put
            // the entries back as they were.
            let leaf = |i: u64| {
                Entry::Leaf(super::Leaf {
                    pfn: pfn + i,
                    level: PTE_LEVEL,
                    attrs,
                    cont: false,
                })
            };
            for i in 0..PTES {
                mem.store(t + 8 * i, A::encode(leaf(i), PTE_LEVEL));
            }
            let back = self.collapse_restore_table(va, t);
            debug_assert!(back.is_ok());
            return Err(e);
        }
        Ok(true)
    }
}
