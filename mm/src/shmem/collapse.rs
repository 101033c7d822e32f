//! The page-cache half of a shmem collapse (Linux's `collapse_file` for
//! shmem): look at the PMD-size index range, then replace the small
//! folios caching it by one new PMD-size folio.  The address-space half
//! (unmapping the sources from every space, mapping the new folio) is
//! `aspace::shmem_collapse`.
//!
//! # Why a replace cannot lose a write
//! Between the scan and the replace the caller unmaps the range from
//! every address space.  The replace then runs under the object's lock,
//! the lock every lookup takes: it requires the range to hold exactly the
//! folios the scan saw, and each of them to hold only the cache's
//! reference and the scan's (no mapping, no fault between its lookup and
//! its mapping, no pin).  Any fault that found a source before the replace
//! holds a reference until it has mapped it, so it shows up there; any
//! fault after the replace finds the new folio.  `write(2)` copies under
//! the same lock ([`Shmem::write`]).  So the copy made under the lock is
//! the last word of every source.

use alloc::vec::Vec;

use crate::addr::{PAGE_SHIFT, PMD_ORDER};
use crate::physmem::folio::FolioRef;
use crate::physmem::frame_flags::PageFlags;
use crate::physmem::phys::PhysMem;

use super::Shmem;

/// Pages of a PMD-size index range.
const HPAGE_NR: u64 = 1 << PMD_ORDER;

/// What [`Shmem::collapse_scan`] found in a PMD-size index range.
pub(crate) enum FileScan<'a> {
    /// One PMD-size folio caches the range already (Linux's
    /// `SCAN_PTE_MAPPED_HUGEPAGE`: only the page tables need fixing).
    Huge(FolioRef<'a>),
    /// The folios caching parts of the range (first index, a reference
    /// for the caller), and how many pages they hold.
    Small {
        folios: Vec<(u64, FolioRef<'a>)>,
        present: u64,
        /// Pages out on swap in the range (khugepaged's `max_ptes_swap`
        /// applies to them, as Linux's `hpage_collapse_scan_file`).
        swapped: u64,
    },
}

/// Why [`Shmem::collapse_replace`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplaceError {
    /// The range changed since the scan: a folio was added, removed or
    /// replaced (a fault filled a hole, a truncate or hole punch ran).
    Changed,
    /// A source is still mapped or referenced by someone else.
    Busy,
    /// The holes the new folio fills do not fit in the mount's `size=`
    /// (Linux's failed `shmem_charge`).
    NoSpace,
}

impl<'a> Shmem<'a> {
    /// The cached folios of the PMD-size range at `first` (a multiple of
    /// 512), with a reference each for the caller.
    pub(crate) fn collapse_scan(&self, first: u64) -> FileScan<'a> {
        debug_assert!(first.is_multiple_of(HPAGE_NR));
        let g = self.inner.lock();
        if let Some(f) = g.folios.get(first)
            && f.order() == PMD_ORDER
        {
            return FileScan::Huge(f.get_ref());
        }
        let mut folios = Vec::new();
        let mut present = 0;
        for i in g.folios.heads_in(first, first + HPAGE_NR) {
            let f = g.folios.get(i).expect("listed");
            present += f.nr_pages();
            folios.push((i, f.get_ref()));
        }
        let swapped = g
            .swap_keys_overlapping(first, first + HPAGE_NR)
            .into_iter()
            .map(|k| g.swapped[&k].nr)
            .sum();
        FileScan::Small {
            folios,
            present,
            swapped,
        }
    }

    /// Replace the folios `sources` (as [`Self::collapse_scan`] returned
    /// them) of the PMD-size range at `first` by `new`, a PMD-size folio
    /// whose pages outside the sources the caller zeroed: copy each source
    /// into it and put it in the cache in their place (see the module doc
    /// for why this runs under the object's lock).  The sources come back
    /// with the cache's references, to drop with no lock held; on a
    /// refusal `new` comes back too.
    pub(crate) fn collapse_replace(
        &self,
        first: u64,
        sources: &[(u64, FolioRef<'a>)],
        new: FolioRef<'a>,
        mem: &dyn PhysMem,
    ) -> Result<Vec<FolioRef<'a>>, (ReplaceError, FolioRef<'a>)> {
        let mut g = self.inner.lock();
        let heads = g.folios.heads_in(first, first + HPAGE_NR);
        let same = heads.len() == sources.len()
            && heads
                .iter()
                .zip(sources)
                .all(|(&i, (j, f))| i == *j && g.folios.get(i).is_some_and(|c| c.pfn() == f.pfn()));
        // A source went to swap meanwhile (its swap entry is swapped in
        // by the next attempt).
        if !same || g.swap_overlaps(first, HPAGE_NR) {
            return Err((ReplaceError::Changed, new));
        }
        // The cache's reference and the caller's, nothing else.
        if sources
            .iter()
            .any(|(_, f)| f.folio().refcount() != 2 || f.folio().is_mapped())
        {
            return Err((ReplaceError::Busy, new));
        }
        let present: u64 = sources.iter().map(|(_, f)| f.nr_pages()).sum();
        if self
            .quota
            .as_ref()
            .is_some_and(|q| !q.try_charge(HPAGE_NR - present))
        {
            return Err((ReplaceError::NoSpace, new));
        }
        let mut gone = Vec::with_capacity(sources.len());
        for (i, f) in sources {
            let nr = f.nr_pages();
            mem.copy(
                new.pa() + ((i - first) << PAGE_SHIFT),
                f.pa(),
                nr << PAGE_SHIFT,
            );
            gone.push(g.folios.remove(*i).expect("checked above"));
            if let Some(c) = self.gauges {
                c.add_folio(nr, -1);
            }
        }
        new.set_flags(PageFlags::SHMEM | PageFlags::UPTODATE | PageFlags::DIRTY);
        new.set_owner_raw(first);
        let folio = new.folio();
        if g.folios.insert(first, new).is_err() {
            unreachable!("the range was just emptied");
        }
        g.pages += HPAGE_NR - present;
        if let Some(c) = self.gauges {
            c.add_folio(HPAGE_NR, 1);
        }
        super::lru_add(folio);
        self.bump();
        Ok(gone)
    }
}
