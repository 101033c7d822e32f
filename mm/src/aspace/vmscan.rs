//! Reclaim of anonymous memory (Linux's `mm/vmscan.c` for the anon LRU):
//! what kswapd and direct reclaim run.
//!
//! [`MmCtx::shrink_node`] takes folios from the tail of the inactive list
//! in batches of [`SWAP_CLUSTER_MAX`] pages, ages the active list when the
//! inactive one is smaller (Linux's `inactive_is_low` with ratio 1, what it
//! uses below 1 GiB of anon per node and close enough above), decides per
//! folio from its young bits (`check_references`: activate, keep, or
//! reclaim) and pages the rest out whole ([`super::swap::pageout_folio`]:
//! swap-out without splitting at every order, lazyfree discard; shmem
//! folios, which share the anonymous lists as Linux's swap-backed pages,
//! go through `shmem_swap.rs`).  Folios
//! it keeps go back on their list; mlocked ones go to the active list and
//! stay (there is no separate unevictable list: `Unevictable:` counts them
//! apart, reclaim never takes them).
//!
//! Without a swap area anonymous memory cannot be reclaimed (Linux does
//! not scan it then); only lazyfree (`MADV_FREE`) folios are, which Linux
//! keeps on the file list for that reason, so the scan still runs and
//! returns every other folio untouched.

use crate::paging::PagingArch;
use crate::physmem::frame_flags::PageFlags;
use crate::thp::VmEvent;

use super::Mm;
use super::ctx::MmCtx;
use super::lru::FolioReferences;
use super::swap::{Pageout, pageout_folio};

/// Pages per isolation batch (Linux's `SWAP_CLUSTER_MAX`).
pub const SWAP_CLUSTER_MAX: u64 = 32;

/// Who reclaims, for the `pgscan_*` / `pgsteal_*` counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaimer {
    Kswapd,
    Direct,
}

/// What one [`MmCtx::shrink_node`] did, in pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimStats {
    /// Inactive pages looked at.
    pub scanned: u64,
    /// Pages freed.
    pub reclaimed: u64,
    /// Pages written to swap.
    pub written: u64,
    /// Pages found young again and activated.
    pub activated: u64,
}

impl<'a> MmCtx<'a> {
    /// Reclaims up to `nr_to_reclaim` pages of anonymous memory mapped in
    /// `mms` (every live address space: the reverse map must reach every
    /// mapping).  Stops early when two passes over the lists' worth of
    /// pages freed nothing more.  Call with no lock held: it sleeps for
    /// swap I/O.
    pub fn shrink_node<A: PagingArch>(
        &'a self,
        mms: &[&Mm<'a, A>],
        nr_to_reclaim: u64,
        who: Reclaimer,
    ) -> ReclaimStats {
        self.shrink_node_files(mms, &[], nr_to_reclaim, who)
    }

    /// [`Self::shrink_node`], also reaching the shmem folios of `files`
    /// (the objects files and segments hold) when no space of `mms` maps
    /// them: a shmem folio's object is otherwise found through the spaces
    /// mapping it, and a memfd only read and written would never be
    /// reclaimed, where Linux reaches it from its LRU through
    /// `folio->mapping`.  So such folios go in LRU order with the rest.
    pub fn shrink_node_files<A: PagingArch>(
        &'a self,
        mms: &[&Mm<'a, A>],
        files: &[alloc::sync::Arc<crate::shmem::Shmem<'a>>],
        nr_to_reclaim: u64,
        who: Reclaimer,
    ) -> ReclaimStats {
        let mut st = ReclaimStats::default();
        // No free slot: nothing anonymous can go (lazyfree folios aside,
        // which are not worth a scan of every list each time a fault runs
        // out of memory with swap full).
        let (_, swap_free) = self.swap.totals();
        let swap = swap_free > 0;
        if self.swap.active() && !swap {
            return st;
        }
        self.lru_drain();
        let c = self.lru_counts();
        // At most twice the lists; kswapd at most 64 pages looked at per
        // page asked for (Linux scans `lru_size >> priority` per round).  A
        // direct reclaimer, whose failure means the OOM killer, goes on to
        // the whole lists, as Linux's priority reaches 0 first: young
        // folios are only kept once, and 64 × 128 pages are just 16 PMD
        // folios, so a capped pass over freshly touched 2 MiB folios found
        // nothing old and gave up while the list held plenty.
        let lists = 2 * (c.active_pages + c.inactive_pages) + SWAP_CLUSTER_MAX;
        let budget = match who {
            Reclaimer::Kswapd => lists.min(64 * nr_to_reclaim.max(SWAP_CLUSTER_MAX)),
            Reclaimer::Direct => lists,
        };
        while st.reclaimed < nr_to_reclaim && st.scanned < budget {
            let c = self.lru_counts();
            if c.inactive_pages < c.active_pages {
                self.shrink_active(mms, SWAP_CLUSTER_MAX);
            }
            let batch = self.lru_isolate(SWAP_CLUSTER_MAX, false);
            if batch.is_empty() {
                if c.active_pages == 0 {
                    break;
                }
                self.shrink_active(mms, 4 * SWAP_CLUSTER_MAX);
                st.scanned += SWAP_CLUSTER_MAX; // progress for the budget
                continue;
            }
            for f in batch {
                let nr = f.nr_pages();
                st.scanned += nr;
                if f.is_mlocked() {
                    f.set_flags(PageFlags::ACTIVE);
                    self.lru_putback(f, true);
                    continue;
                }
                if !swap && !f.test(PageFlags::LAZYFREE) {
                    self.lru_putback(f, false);
                    continue;
                }
                match self.check_references(mms, *f) {
                    FolioReferences::Activate => {
                        st.activated += nr;
                        self.lru_putback(f, true);
                    }
                    FolioReferences::Keep => self.lru_putback(f, false),
                    FolioReferences::Reclaim => {
                        let lazy = f.test(PageFlags::LAZYFREE);
                        let file = (f.is_shmem() && !f.is_mapped())
                            .then(|| {
                                files
                                    .iter()
                                    .find(|o| o.caches(f.owner_raw(), f.pfn()).is_some())
                            })
                            .flatten();
                        let out = match file {
                            Some(o) => super::shmem_swap::shmem_pageout_of(self, mms, o, &f),
                            None => pageout_folio(mms, &f),
                        };
                        match out {
                            Pageout::Freed(n) => {
                                st.reclaimed += n;
                                if !lazy {
                                    st.written += n;
                                }
                                drop(f); // the last reference: freed
                            }
                            // The first piece is ours; the others are on
                            // the list already.
                            Pageout::Split => self.lru_putback(f, false),
                            Pageout::Cached
                            | Pageout::Kept
                            | Pageout::IoError
                            | Pageout::Writeback => self.lru_putback(f, false),
                        }
                    }
                }
            }
        }
        let stats = &self.thp.stats;
        let (scan, steal) = match who {
            Reclaimer::Kswapd => (VmEvent::PgscanKswapd, VmEvent::PgstealKswapd),
            Reclaimer::Direct => (VmEvent::PgscanDirect, VmEvent::PgstealDirect),
        };
        stats.count_n(scan, st.scanned);
        stats.count_n(steal, st.reclaimed);
        stats.count_n(VmEvent::PgscanAnon, st.scanned);
        stats.count_n(VmEvent::PgstealAnon, st.reclaimed);
        stats.count_n(VmEvent::NrVmscanWrite, st.written);
        st
    }
}
