//! The address-space side of the anonymous LRU (`reclaim::lru`): adding
//! new folios, young-bit harvesting through the reverse map
//! ([`folio_referenced`]), and the two aging steps reclaim drives —
//! [`MmCtx::shrink_active`] (Linux's `shrink_active_list` for anon) and
//! [`MmCtx::check_references`] (`folio_check_references`, semantics notes
//! §2.4) — with the `pgrefill`, `pgdeactivate` and `pgactivate` counters.

use alloc::vec::Vec;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::paging::{PMD_LEVEL, PageTable, PagingArch, Step};
use crate::physmem::folio::{Folio, FolioRef};
use crate::physmem::frame_flags::PageFlags;
use crate::reclaim::lru::{Lru, LruCounts, Moved};
use crate::thp::VmEvent;

use super::Mm;
use super::ctx::MmCtx;
use super::rmap::rmap_walk;

/// What [`MmCtx::check_references`] decided for an inactive folio
/// (Linux's `enum folio_references`, anonymous cases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolioReferences {
    /// Young again and seen before (`REFERENCED`), or young in more than
    /// one address space: back to the active list (`ACTIVE` is now set;
    /// `pgactivate` counted).
    Activate,
    /// Young for the first time: `REFERENCED` is now set; keep it on the
    /// inactive list for another round.
    Keep,
    /// Not young anywhere: reclaim it.
    Reclaim,
}

/// What one [`MmCtx::shrink_active`] did (pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShrinkActive {
    /// Pages isolated from the active list and looked at (`pgrefill`).
    pub scanned: u64,
    /// Pages moved to the inactive list (`pgdeactivate`).
    pub deactivated: u64,
    /// Of the scanned pages, those of folios that were young somewhere
    /// (they are deactivated too, their young bits now clear: see
    /// [`MmCtx::shrink_active`]).
    pub referenced: u64,
}

/// Tests and clears the young bits of every mapping of `folio` and
/// returns the number of address spaces with at least one young entry
/// (Linux's `folio_referenced`: it counts mappings, VMAs, not PTEs; here
/// an address space maps an anonymous folio in one place, its rmap owner
/// address, so spaces are the unit).
///
/// The mappings are found and locked with the reverse map's walk
/// (`rmap_walk`), in the spaces of `mms` (normally every live one).  Per
/// entry [`crate::paging::PageTable::test_and_clear_young`] does the work:
/// a PMD leaf once, an arm64 contiguous block once for all 16 entries (the
/// walk then skips the block's other entries, which that call already
/// cleared), other PTEs one by one.  Nothing is split or unfolded.  The
/// caller holds a reference to the folio (normally its isolation's).
///
/// An unmapped folio (only in the swap cache) counts 0.  If the walk
/// cannot account for every mapping (some lie in a space not in `mms`, or
/// moved by mremap) the folio counts as referenced by one space, so
/// reclaim keeps it for now (Linux's -1 from an unstable rmap: keep).
pub fn folio_referenced<'a, A: PagingArch>(mms: &[&Mm<'a, A>], folio: Folio<'a>) -> usize {
    if !folio.is_mapped() {
        return 0;
    }
    if folio.is_shmem() {
        return super::shmem_swap::shmem_referenced(mms, folio);
    }
    let Some((_, vpn)) = folio.anon_owner() else {
        return 0;
    };
    let va = vpn << PAGE_SHIFT;
    let Ok(mut walk) = rmap_walk(mms, folio, va) else {
        return 1;
    };
    let end = va + folio.size();
    let mut spaces = 0;
    for pt in walk.guards.iter_mut() {
        spaces += test_clear_young_in(pt, folio, va, va, end) as usize;
    }
    drop(walk);
    spaces
}

/// Whether an entry of `pt` in `[lo, hi)` maps frames of `f` in place
/// (page `i` at `fva + i` pages, or a PMD leaf of the whole folio at
/// `fva`) and was young; the young bits are cleared.  An arm64 contiguous
/// block is tested once for its 16 entries.
pub(crate) fn test_clear_young_in<'a, A: PagingArch>(
    pt: &mut PageTable<'a, A>,
    f: Folio<'a>,
    fva: u64,
    lo: u64,
    hi: u64,
) -> bool {
    let frames = f.pfn()..f.pfn() + f.nr_pages();
    let mut at: Vec<u64> = Vec::new();
    for step in pt.walk_range(lo, hi) {
        match step {
            Step::Leaf(h) if h.level == PMD_LEVEL && h.leaf.pfn == f.pfn() && h.start == fva => {
                at.push(h.start);
            }
            Step::Ptes(run) => {
                let mut i = 0;
                while i < run.len() {
                    let here = run.va(i);
                    match run.leaf(i) {
                        Some(l)
                            if frames.contains(&l.pfn)
                                && l.pfn - f.pfn() == here.wrapping_sub(fva) / PAGE_SIZE =>
                        {
                            at.push(here);
                            if l.cont && A::CONT_PTES > 1 {
                                let cp = A::CONT_PTES as u64;
                                let in_block = (here / PAGE_SIZE) % cp;
                                i += (cp - in_block) as usize;
                                continue;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {}
        }
    }
    let mut g = pt.gather();
    let mut young = false;
    for a in at {
        young |= pt.test_and_clear_young(a, &mut g);
    }
    g.finish();
    young
}

impl<'a> MmCtx<'a> {
    /// The node's anonymous LRU.
    #[inline]
    pub fn lru(&self) -> &'a Lru {
        self.buddy.lru()
    }

    /// Adds `f` (anonymous, referenced by the caller) to the inactive
    /// list (order 0 through the CPU's add batch), for folios that enter
    /// the LRU without `rmap_add_new` (which adds every new mapped folio
    /// itself): e.g. one read into the swap cache (Linux adds it there,
    /// before it is mapped).  Nothing happens, and false is returned, if
    /// it is on the LRU side already (listed or batched) or marked active.
    /// The folio must be new to the LRU: an isolated inactive folio looks
    /// the same as a new one and would be added behind its isolator's
    /// back (Linux's `folio_add_lru` has the same precondition).  Any
    /// context but an interrupt handler.
    pub fn lru_add(&self, f: Folio<'a>) -> bool {
        self.lru().add(self.buddy, f.idx())
    }

    /// Moves every CPU's add batch onto the lists (Linux's
    /// `lru_add_drain_all`); reclaim calls it before it scans.
    pub fn lru_drain(&self) {
        self.lru().drain_all(self.buddy);
    }

    /// Isolates up to `nr_pages` pages of folios from the tail of the
    /// active or inactive list; see [`Lru::isolate`].
    pub fn lru_isolate(&self, nr_pages: u64, active: bool) -> Vec<FolioRef<'a>> {
        self.lru().isolate(self.buddy, nr_pages, active)
    }

    /// Puts an isolated folio back on the head of a list, dropping the
    /// isolation reference; see [`Lru::putback`].
    pub fn lru_putback(&self, f: FolioRef<'a>, active: bool) {
        self.lru().putback(f, active)
    }

    /// Linux's `folio_activate`: `f` (referenced by the caller) goes to the
    /// head of the active list, counting `pgactivate`; an isolated one is
    /// only marked `ACTIVE` (for its putback), a batched one is drained
    /// first.
    pub fn folio_activate(&self, f: Folio<'a>) {
        if let Moved::Yes(nr) = self.lru().move_to(f, true) {
            self.thp.stats.count_n(VmEvent::PgActivate, nr);
        }
    }

    /// Linux's `folio_deactivate` (`MADV_COLD`, usable on a mapped folio
    /// the caller holds a reference to): an active folio goes to the head
    /// of the inactive list with `ACTIVE` and `REFERENCED` cleared,
    /// counting `pgdeactivate`.  An inactive one stays where it is (as
    /// Linux) but loses `REFERENCED`; `MADV_COLD` clears the young bits
    /// itself.
    pub fn folio_deactivate(&self, f: Folio<'a>) {
        if let Moved::Yes(nr) = self.lru().move_to(f, false) {
            self.thp.stats.count_n(VmEvent::PgDeactivate, nr);
        }
    }

    /// Sizes of the lists (`/proc/meminfo`'s `Active(anon)` and
    /// `Inactive(anon)`: batched folios count as inactive).
    pub fn lru_counts(&self) -> LruCounts {
        self.lru().counts(self.buddy)
    }

    /// Linux's `shrink_active_list` for the anon lists: isolates up to
    /// `nr_pages` pages from the active tail (counted in `pgrefill`),
    /// harvests each folio's young bits ([`folio_referenced`], which
    /// clears them), and moves the folios to the inactive head, counted
    /// in `pgdeactivate`.
    ///
    /// Referenced anon folios are deactivated too, as Linux does: only
    /// executable *file* folios get another trip round the active list
    /// there, and anon ones are not (use-once streaming does not evict
    /// anon memory, and JIT heaps are `VM_EXEC` anon).  Their
    /// `REFERENCED` flag stays, so if they are young again when the
    /// inactive scan reaches them, [`Self::check_references`] activates
    /// them at once.
    pub fn shrink_active<A: PagingArch>(&self, mms: &[&Mm<'a, A>], nr_pages: u64) -> ShrinkActive {
        let mut out = ShrinkActive::default();
        self.lru_drain();
        let taken = self.lru_isolate(nr_pages, true);
        for f in taken {
            let nr = f.nr_pages();
            out.scanned += nr;
            if folio_referenced(mms, *f) > 0 {
                out.referenced += nr;
            }
            f.clear_flags(PageFlags::ACTIVE);
            out.deactivated += nr;
            self.lru_putback(f, false);
        }
        self.thp.stats.count_n(VmEvent::PgRefill, out.scanned);
        self.thp
            .stats
            .count_n(VmEvent::PgDeactivate, out.deactivated);
        out
    }

    /// The inactive-list decision for `f` (isolated by the caller, or at
    /// least referenced), Linux's `folio_check_references` for anon
    /// folios (semantics notes §2.4): harvest the young bits
    /// ([`folio_referenced`]); young somewhere → set `REFERENCED`, and if
    /// it was already set or more than one space had it young, activate
    /// (`ACTIVE` set, `pgactivate` counted; an isolated folio is put back
    /// on the active list by its caller, a listed one is moved now),
    /// otherwise keep; not young anywhere → reclaim (`REFERENCED`
    /// cleared on the way).
    pub fn check_references<A: PagingArch>(
        &self,
        mms: &[&Mm<'a, A>],
        f: Folio<'a>,
    ) -> FolioReferences {
        let referenced_ptes = folio_referenced(mms, f);
        let referenced_folio = f.test(PageFlags::REFERENCED);
        f.clear_flags(PageFlags::REFERENCED);
        if referenced_ptes == 0 {
            return FolioReferences::Reclaim;
        }
        f.set_flags(PageFlags::REFERENCED);
        if referenced_folio || referenced_ptes > 1 {
            self.folio_activate(f);
            return FolioReferences::Activate;
        }
        FolioReferences::Keep
    }
}
