//! Collapse: replace the small folios mapping an aligned window by one new
//! folio — a PMD-mapped order-9 folio (Linux's `collapse_huge_page`) or,
//! beyond Linux's `MADV_COLLAPSE`, an mTHP folio of order 2–8 (Linux's
//! khugepaged mTHP collapse, 7.2).  Used by khugepaged (`khugepaged.rs`)
//! and by `MADV_COLLAPSE` / [`Mm::collapse_range`].
//!
//! # Steps and locking
//! 1. **Scan** under the mmap lock (read; khugepaged only *tries* it, as
//!    Linux, and skips a contended space) and the page-table lock: count
//!    empty / zero-page entries against `max_ptes_none`, entries of
//!    maybe-shared folios against `max_ptes_shared` (shared = another
//!    address space may map the folio: its owner slots, Linux 6.15's
//!    `folio_maybe_mapped_shared`), require a writable entry
//!    and, for khugepaged, a young one; refuse pinned or locked sources.
//! 2. **Allocate** the new folio with no lock held (khugepaged), counting
//!    `collapse_alloc` / `collapse_alloc_failed` for the order.
//! 3. **Lock** the mmap lock for writing — again only tried by khugepaged,
//!    since a holder preempted on this CPU would never let go of a spin
//!    lock — which keeps every fault of the space out, then the page-table
//!    lock (also only tried by khugepaged); revalidate the VMA and scan
//!    again.
//! 4. **Isolate** the sources: try-lock each source folio and re-check for
//!    pins (Linux's isolation; EAGAIN-class failures).  Nothing has changed
//!    yet, so a failure here restores nothing.
//! 5. **Clear and flush**: a PMD collapse unhooks the PTE table from the
//!    PMD and flushes the range at once (`pmdp_collapse_flush`); an mTHP
//!    collapse clears the window's PTEs and flushes.  From here no other
//!    CPU can write the old pages.
//! 6. **Copy** each source page; empty and zero-page entries give zeroed
//!    pages.  Copying cannot fail here (no machine checks), so the old
//!    mapping never needs restoring after this point; the one fallible step
//!    left (installing the PMD) puts the old table back if it fails.
//! 7. **Install**: the old PTE table, zeroed, becomes the PMD's deposit
//!    (so a later split never allocates) and the PMD leaf is written; an
//!    mTHP folio is `set_ptes`-mapped (contpte on arm64 from 64 KiB).
//! 8. **Free the sources**: their mappings are removed from the rmap and
//!    their references dropped after the flush; a source still mapped
//!    elsewhere (shared after fork) keeps its other mappings.

use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use crate::abi::errno::Errno;
use crate::addr::{PAGE_SIZE, PMD_ORDER};
use crate::paging::{Attrs, Entry, Leaf, PMD_LEVEL, PTE_LEVEL, PageTable, PagingArch, Step};
use crate::physmem::buddy::AllocFlags;
use crate::physmem::folio::{Folio, FolioLockGuard, FolioRef};
use crate::thp::{MthpStat, THP_ORDERS_ALL_ANON, VmEvent};
use crate::vma::{Vma, VmaSet};

use super::rmap::FreeBatch;
use super::{Mm, vma_perms};

/// Why a window was not collapsed (a subset of Linux's `scan_result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollapseError {
    /// Already mapped by one folio of at least the target order (a PMD
    /// leaf, or an mTHP folio): nothing to do, counts as success for
    /// `MADV_COLLAPSE`.
    AlreadyMapped,
    /// No PTE table under the PMD (nothing was ever mapped there).
    PmdNull,
    /// Every entry of the window is empty or the zero page (Linux reports
    /// `SCAN_PAGE_RO` then, for want of a writable entry).
    Empty,
    /// Too many empty or zero-page entries.
    ExceedNone,
    /// Too many swap entries (`max_ptes_swap`).
    ExceedSwap,
    /// Swap entries within the limit: swap them in, then try again.
    NeedSwapIn,
    /// Too many entries of maybe-shared folios.
    ExceedShared,
    /// No young entry (khugepaged only).
    NoReferenced,
    /// No writable entry (Linux's `SCAN_PAGE_RO`).
    PageRo,
    /// A source folio has extra references (pins).
    PageCount,
    /// A source folio is locked (being split or collapsed elsewhere).
    PageLock,
    /// The new folio could not be allocated.
    AllocFailed,
    /// The VMA changed or does not allow the collapse.
    VmaCheck,
    /// khugepaged only: the window holds a reservation
    /// (`aspace::reserve`), which becomes a large folio in place as it
    /// fills; copying it now would only waste the copy.
    Reserved,
}

impl CollapseError {
    /// `MADV_COLLAPSE`'s errno for this result (Linux's
    /// `madvise_collapse_errno`).
    pub fn errno(self) -> Errno {
        match self {
            CollapseError::AllocFailed => Errno::ENOMEM,
            CollapseError::ExceedNone => Errno::EBUSY,
            CollapseError::PageCount | CollapseError::PageLock => Errno::EAGAIN,
            _ => Errno::EINVAL,
        }
    }
}

/// The scan limits of one collapse.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(super) max_none: u64,
    pub(super) max_swap: u64,
    max_shared: u64,
    /// khugepaged's rules (young check); `MADV_COLLAPSE` has none of the
    /// limits and no young check.
    pub(super) khugepaged: bool,
}

impl Limits {
    /// `MADV_COLLAPSE` / `collapse_range`: no limits.
    pub(crate) const MADVISE: Limits = Limits {
        max_none: u64::MAX,
        max_swap: u64::MAX,
        max_shared: u64::MAX,
        khugepaged: false,
    };

    /// khugepaged's limits for `order` from the knobs: the PMD order uses
    /// them as they are; an mTHP order takes `max_ptes_none` only as 0 or
    /// 511 (scaled to 2^order − 1; any other value acts as 0, which avoids
    /// collapses "creeping" up the orders), and tolerates no shared and no
    /// swap entry.
    pub(crate) fn khugepaged(thp: &crate::thp::Thp, order: u32) -> Limits {
        let k = &thp.config.khugepaged;
        let none = k.max_ptes_none.load(Relaxed) as u64;
        if order == PMD_ORDER {
            return Limits {
                max_none: none,
                max_swap: k.max_ptes_swap.load(Relaxed) as u64,
                max_shared: k.max_ptes_shared.load(Relaxed) as u64,
                khugepaged: true,
            };
        }
        Limits {
            max_none: if none == 511 { (1 << order) - 1 } else { 0 },
            max_swap: 0,
            max_shared: 0,
            khugepaged: true,
        }
    }
}

/// The present leaf a raw PTE word holds, if any.
#[inline(always)]
fn leaf<A: PagingArch>(raw: u64) -> Option<Leaf> {
    A::decode(raw, PTE_LEVEL).leaf()
}

/// The attributes of a freshly collapsed folio in a VMA with `v`'s rights.
fn collapsed_attrs(v: &Vma) -> Attrs {
    let mut a = Attrs::user(vma_perms(v.flags));
    a.dirty = true;
    a
}

/// What a successful scan found: the window's entries (by page index) and its distinct source folios (zero pages excluded), each
/// with the number of its pages the window maps, in order of first
/// appearance.  Install works from the folio list, so isolating, unmapping
/// and freeing take no folio lookups per entry.
struct Window<'a> {
    /// Raw PTE words: decoded where used, so each pass computes only the
    /// fields it reads, and a failed install restores them bit for bit.
    entries: Vec<u64>,
    folios: Vec<(Folio<'a>, u64)>,
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// The window's raw entries (by page index); `PmdNull` if there
    /// is no PTE table (or a PMD leaf: `AlreadyMapped`).
    fn window_entries(
        &self,
        pt: &PageTable<'a, A>,
        va: u64,
        order: u32,
    ) -> Result<Vec<u64>, CollapseError> {
        let run = match pt.walk_range(va, va + (PAGE_SIZE << order)).next() {
            Some(Step::Leaf(h)) if h.level == PMD_LEVEL => {
                return Err(CollapseError::AlreadyMapped);
            }
            Some(Step::Ptes(run)) => run,
            _ => return Err(CollapseError::PmdNull),
        };
        debug_assert_eq!(run.len(), 1 << order, "window in one PTE table");
        // One bulk read of the window's entries instead of a load call per
        // entry.
        let mut raw = alloc::vec![0u64; run.len()];
        run.raw_words(0, &mut raw);
        Ok(raw)
    }

    /// Scan the window at `va` for a collapse to `order` under `lim`
    /// (page-table lock held).  Counts the refusal statistics.
    fn collapse_scan(
        &self,
        pt: &PageTable<'a, A>,
        va: u64,
        order: u32,
        lim: Limits,
    ) -> Result<Window<'a>, CollapseError> {
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        let e = self.window_entries(pt, va, order)?;
        let n = e.len() as u64;
        // mTHP: already one folio of at least the target order, page for
        // page?  (A PTE-mapped PMD folio is collapsed like any other source:
        // the copy gives a PMD mapping, as Linux does for anonymous memory.)
        if order < PMD_ORDER
            && let Some(l0) = e.first().and_then(|&r| leaf::<A>(r))
            && !ctx.is_zero_pfn(l0.pfn)
            && let Some(f) = ctx.folio(l0.pfn)
            && f.order() >= order
            && e.iter()
                .enumerate()
                .all(|(i, &r)| leaf::<A>(r).is_some_and(|l| l.pfn == l0.pfn + i as u64))
        {
            return Err(CollapseError::AlreadyMapped);
        }
        let mut none = 0u64;
        let mut swap = 0u64;
        let mut shared = 0u64;
        let (mut young, mut writable) = (false, false);
        // Distinct source folios with their entry count in the window.
        let mut folios: Vec<(Folio<'a>, u64)> = Vec::with_capacity(e.len());
        for &r in &e {
            let Some(l) = leaf::<A>(r) else {
                match A::decode(r, PTE_LEVEL) {
                    // A folio being migrated: locked, try again later.
                    Entry::Swap(s) if s.is_migration() => return Err(CollapseError::PageLock),
                    Entry::Swap(_) => swap += 1,
                    _ => none += 1,
                }
                continue;
            };
            if ctx.is_zero_pfn(l.pfn) {
                none += 1;
                continue;
            }
            young |= l.attrs.young;
            writable |= l.attrs.perms.write;
            let Some(f) = ctx.folio(l.pfn) else {
                return Err(CollapseError::VmaCheck);
            };
            // Each page is mapped at most once per address space, so only a
            // large folio can show up again; its pages are usually the
            // previous entries, so the last folio is checked first.  This
            // keeps the scan linear (a search per entry was a third of a
            // PMD collapse under TCG).
            match folios.last_mut() {
                Some((g, c)) if *g == f => *c += 1,
                _ if f.nr_pages() > 1 => match folios.iter_mut().find(|(g, _)| *g == f) {
                    Some((_, c)) => *c += 1,
                    None => folios.push((f, 1)),
                },
                _ => folios.push((f, 1)),
            }
        }
        if lim.khugepaged
            && folios
                .iter()
                .any(|(f, _)| f.test(crate::physmem::frame_flags::PageFlags::RESERVATION))
        {
            return Err(CollapseError::Reserved);
        }
        if none > lim.max_none {
            stats.inc(order, MthpStat::CollapseExceedNonePte);
            if order == PMD_ORDER {
                stats.count(VmEvent::ThpScanExceedNonePte);
            }
            return Err(CollapseError::ExceedNone);
        }
        for &(f, c) in &folios {
            if f.maybe_mapped_shared() {
                shared += c;
            }
        }
        if shared > lim.max_shared {
            stats.inc(order, MthpStat::CollapseExceedSharedPte);
            if order == PMD_ORDER {
                stats.count(VmEvent::ThpScanExceedSharePte);
            }
            return Err(CollapseError::ExceedShared);
        }
        if swap > lim.max_swap {
            stats.inc(order, MthpStat::CollapseExceedSwapPte);
            if order == PMD_ORDER {
                stats.count(VmEvent::ThpScanExceedSwapPte);
            }
            return Err(CollapseError::ExceedSwap);
        }
        if swap > 0 {
            // Within `max_ptes_swap`: the caller swaps them in and tries
            // again (Linux's `__collapse_huge_page_swapin`).
            return Err(CollapseError::NeedSwapIn);
        }
        for &(f, _) in &folios {
            if f.test(crate::physmem::frame_flags::PageFlags::LOCKED) {
                return Err(CollapseError::PageLock);
            }
            if f.extra_refs() != 0 {
                return Err(CollapseError::PageCount);
            }
        }
        if none == n {
            // Nothing mapped at all: only MADV_COLLAPSE gets this far.
            return Err(CollapseError::Empty);
        }
        if !writable {
            return Err(CollapseError::PageRo);
        }
        if lim.khugepaged && !young {
            return Err(CollapseError::NoReferenced);
        }
        Ok(Window { entries: e, folios })
    }

    /// Allocate the new folio for a collapse to `order`.  Owned, so every
    /// refusal after this frees it by returning.  A failed allocation may
    /// compact directly first (no page-table lock is held here): always
    /// for `MADV_COLLAPSE`, for khugepaged when `khugepaged/defrag` is 1
    /// (Linux's `GFP_TRANSHUGE` in both cases).
    pub(super) fn collapse_alloc(
        &self,
        order: u32,
        lim: Limits,
    ) -> Result<FolioRef<'a>, CollapseError> {
        let stats = &self.ctx.thp.stats;
        let mut got = self.ctx.buddy.alloc(order, AllocFlags::USER);
        if got.is_err()
            && (!lim.khugepaged
                || self
                    .ctx
                    .thp
                    .config
                    .khugepaged
                    .defrag
                    .load(core::sync::atomic::Ordering::Relaxed))
        {
            let req = crate::physmem::compaction::CompactRequest::Direct { retry: true };
            got = self.ctx.alloc_after_compaction(order, req);
        }
        match got {
            Ok(f) => {
                stats.inc(order, MthpStat::CollapseAlloc);
                if order == PMD_ORDER {
                    stats.count(VmEvent::ThpCollapseAlloc);
                }
                Ok(FolioRef::from_raw(f))
            }
            Err(_) => {
                stats.inc(order, MthpStat::CollapseAllocFailed);
                if order == PMD_ORDER {
                    stats.count(VmEvent::ThpCollapseAllocFailed);
                }
                Err(CollapseError::AllocFailed)
            }
        }
    }

    /// Whether `v` can take an order-`order` folio at `va`.
    fn collapse_vma_ok(v: &Vma, va: u64, order: u32) -> bool {
        let size = PAGE_SIZE << order;
        v.is_anonymous() && v.start <= va && va + size <= v.end && va.is_multiple_of(size)
    }

    /// Collapse the window at `va` to an order-`order` folio.  With `held`
    /// the caller holds the mmap lock for writing (`MADV_COLLAPSE`) and the
    /// allocation happens under it; without, the locks are tried as
    /// khugepaged does (see the module doc), and the VMA must allow the
    /// order by the THP knobs.
    pub(crate) fn collapse_window(
        &self,
        va: u64,
        order: u32,
        lim: Limits,
        held: Option<&VmaSet>,
    ) -> Result<(), CollapseError> {
        if let Some(vmas) = held {
            let v = *vmas.find(va).ok_or(CollapseError::VmaCheck)?;
            if !Self::collapse_vma_ok(&v, va, order) {
                return Err(CollapseError::VmaCheck);
            }
            // Scan, allocate with the page-table lock dropped (it keeps
            // preemption off), scan again: with the mmap lock held for
            // writing only the accessed/dirty bits can change meanwhile.
            self.scan_swapping_in(&v, va, order, lim)?;
            let new = self.collapse_alloc(order, lim)?;
            let mut pt = self.lock_pt();
            let w = self.collapse_scan(&pt, va, order, lim)?;
            return self.collapse_install(&v, &mut pt, va, order, new, w);
        }
        let eligible = |v: &Vma| {
            Self::collapse_vma_ok(v, va, order)
                && self.ctx.thp.config.allowable_orders(self.thp_hints(v))
                    & THP_ORDERS_ALL_ANON
                    & (1 << order)
                    != 0
        };
        {
            let vmas = self.mmap_read();
            let v = vmas.find(va).ok_or(CollapseError::VmaCheck)?;
            if !eligible(v) {
                return Err(CollapseError::VmaCheck);
            }
            self.scan_swapping_in(v, va, order, lim)?;
        }
        let new = self.collapse_alloc(order, lim)?;
        let vmas = self.mmap_write();
        let v = match vmas.find(va) {
            Some(v) if eligible(v) => *v,
            _ => return Err(CollapseError::VmaCheck),
        };
        let mut pt = self.lock_pt();
        let w = self.collapse_scan(&pt, va, order, lim)?;
        self.collapse_install(&v, &mut pt, va, order, new, w)
    }

    /// The first scan of a collapse (mmap lock held): when the window has
    /// swap entries within `max_ptes_swap`, they are swapped in (Linux's
    /// `__collapse_huge_page_swapin`) and the window scanned again.
    fn scan_swapping_in(
        &self,
        v: &Vma,
        va: u64,
        order: u32,
        lim: Limits,
    ) -> Result<(), CollapseError> {
        match self.collapse_scan(&self.lock_pt(), va, order, lim) {
            Err(CollapseError::NeedSwapIn) => {}
            r => return r.map(|_| ()),
        }
        let n = 1usize << order;
        let found: Vec<(u64, crate::paging::SwapEntry)> = {
            let pt = self.lock_pt();
            match pt.pte_run(va, n) {
                Some(run) => (0..run.len())
                    .filter_map(|i| match run.entry(i) {
                        Entry::Swap(e) if e.is_swap() => Some((run.va(i), e)),
                        _ => None,
                    })
                    .collect(),
                None => Vec::new(),
            }
        };
        for (at, e) in found {
            self.do_swap_page(v, at, super::Access::Read, e)
                .map_err(|_| CollapseError::NeedSwapIn)?;
        }
        self.collapse_scan(&self.lock_pt(), va, order, lim)
            .map(|_| ())
    }

    /// Steps 4–8 of the module doc, with the mmap lock held for writing and
    /// the page-table lock held, after a successful scan that returned `e`
    /// under the same page-table lock hold (so only A/D bits may have
    /// changed since).  Consumes `new`: it becomes the new mapping's
    /// reference, or is freed on failure.
    fn collapse_install(
        &self,
        v: &Vma,
        pt: &mut PageTable<'a, A>,
        va: u64,
        order: u32,
        new: FolioRef<'a>,
        w: Window<'a>,
    ) -> Result<(), CollapseError> {
        let ctx = self.ctx;
        let mem = ctx.mem;
        let Window { entries: e, folios } = w;
        let n = e.len();
        // Isolate: lock every source folio and check it is not pinned.  The
        // sources' mappings keep them alive (the page-table lock holds the
        // mappings), and a refusal unlocks them by dropping the guards.
        let mut locked: Vec<FolioLockGuard<'a>> = Vec::with_capacity(folios.len());
        for &(f, _) in &folios {
            locked.push(f.try_lock().ok_or(CollapseError::PageLock)?);
            if f.extra_refs() != 0 {
                return Err(CollapseError::PageCount);
            }
        }
        // Clear and flush.
        let pmd = order == PMD_ORDER;
        let table = if pmd {
            Some(
                pt.collapse_detach_table(va)
                    .expect("a PTE table is there under the lock"),
            )
        } else {
            let mut g = pt.gather();
            pt.get_and_clear_ptes(va, n, &mut g);
            g.finish();
            None
        };
        // Copy (entries as scanned: the PTL kept them; only A/D may differ).
        for (i, &r) in e.iter().enumerate() {
            let dst = new.pa() + i as u64 * PAGE_SIZE;
            match leaf::<A>(r) {
                Some(l) if !ctx.is_zero_pfn(l.pfn) => mem.copy(dst, l.pfn * PAGE_SIZE, PAGE_SIZE),
                _ => mem.zero(dst, PAGE_SIZE),
            }
        }
        // Install.
        let attrs = collapsed_attrs(v);
        let installed = match table {
            Some(t) => {
                mem.zero(t, PAGE_SIZE);
                let r = pt.set_pmd_leaf(va, new.pfn(), attrs, t);
                if r.is_err() {
                    // Put the old table back exactly: its entries are gone
                    // (zeroed above), so rewrite them first.
                    for (i, &r) in e.iter().enumerate() {
                        if r != 0 {
                            mem.store(t + 8 * i as u64, r);
                        }
                    }
                    let back = pt.collapse_restore_table(va, t);
                    debug_assert!(back.is_ok());
                }
                r.is_ok()
            }
            None => pt.set_ptes(va, new.pfn(), n, attrs).is_ok(),
        };
        if !installed {
            debug_assert!(pmd, "the mTHP window's entries were just cleared");
            return Err(CollapseError::VmaCheck);
        }
        let new = new.into_raw();
        ctx.rmap_add_new(new, self.id, va, pmd);
        self.mlock_new_folio(v, new);
        // Unmap the sources: a folio whose every mapping was in the window
        // goes in one step; one also mapped elsewhere (shared, or a large
        // folio straddling the window) drops its window pages run by run.
        // RSS changes once, by the new folio's pages minus the sources'.
        let mut unmapped = 0;
        for &(f, c) in &folios {
            self.munlock_vma_folio(v, f);
            if f.large_mapcount() as u64 == c && f.entire_mapcount() == 0 {
                ctx.rmap_remove_all_ptes(f, self.id, c);
            } else {
                self.collapse_unmap_runs(&e, f);
            }
            unmapped += c;
        }
        self.rss_add(n as u64 - unmapped);
        // Each source is unlocked before its window references go (a
        // folio is never freed locked).
        let mut freed = FreeBatch::new();
        for (lock, &(f, c)) in locked.into_iter().zip(&folios) {
            drop(lock);
            freed.put(f, c as u32);
        }
        freed.finish();
        Ok(())
    }

    /// The window's PTE mappings of `f` went away, `f` being mapped
    /// elsewhere too: one rmap update per run of its pages.
    fn collapse_unmap_runs(&self, e: &[u64], f: Folio<'a>) {
        let (lo, hi) = (f.pfn(), f.pfn() + f.nr_pages());
        let mut i = 0;
        while i < e.len() {
            let Some(l) = leaf::<A>(e[i]).filter(|l| (lo..hi).contains(&l.pfn)) else {
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < e.len()
                && leaf::<A>(e[j]).is_some_and(|m| m.pfn == l.pfn + (j - i) as u64 && m.pfn < hi)
            {
                j += 1;
            }
            self.ctx
                .rmap_remove_ptes(f, self.id, l.pfn - lo, (j - i) as u64);
            i = j;
        }
    }

    /// Collapse `[start, start + len)` to folios of `order` (2..=9),
    /// synchronously, ignoring the `enabled` knobs and the `max_ptes_*`
    /// limits — `MADV_COLLAPSE` generalised to mTHP orders (beyond Linux,
    /// whose `MADV_COLLAPSE` is PMD-only).  Each naturally aligned window
    /// lying fully inside the range and one VMA is collapsed; windows
    /// already mapped by a folio of at least `order` count as done, and for
    /// mTHP orders windows with nothing mapped are left empty (for the PMD
    /// order they fail with EINVAL, as `MADV_COLLAPSE`).
    /// Returns Ok only if every window ended up collapsed; otherwise the
    /// errno of the last failure (ENOMEM, EBUSY, EAGAIN, EINVAL); EINVAL if
    /// no window fits in the range.
    pub fn collapse_range(&self, start: u64, len: u64, order: u32) -> Result<(), Errno> {
        if !(2..=PMD_ORDER).contains(&order) || !start.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        let vmas = self.mmap_write();
        if vmas
            .find_intersecting(start, end)
            .any(|v| self.thp_hints(v).nohugepage)
        {
            return Err(Errno::EINVAL);
        }
        self.collapse_ranges_locked(&vmas, core::slice::from_ref(&(start..end)), order)
    }

    /// The windows of `order` inside `ranges`, collapsed one by one with
    /// the mmap lock (`vmas`) held for writing.
    pub(crate) fn collapse_ranges_locked(
        &self,
        vmas: &VmaSet,
        ranges: &[core::ops::Range<u64>],
        order: u32,
    ) -> Result<(), Errno> {
        let (windows, last) = self.collapse_windows_locked(vmas, ranges, order);
        collapse_result(windows, last)
    }

    /// [`Self::collapse_ranges_locked`]'s work: how many windows there
    /// were, and the last failure.
    pub(crate) fn collapse_windows_locked(
        &self,
        vmas: &VmaSet,
        ranges: &[core::ops::Range<u64>],
        order: u32,
    ) -> (u64, Option<CollapseError>) {
        let size = PAGE_SIZE << order;
        let mut last: Option<CollapseError> = None;
        let mut windows = 0;
        for r in ranges {
            let mut va = r.start.div_ceil(size) * size;
            while va + size <= r.end {
                windows += 1;
                match self.collapse_window(va, order, Limits::MADVISE, Some(vmas)) {
                    Ok(()) | Err(CollapseError::AlreadyMapped) => {}
                    Err(CollapseError::Empty | CollapseError::PmdNull) if order < PMD_ORDER => {}
                    Err(e) => last = Some(e),
                }
                va += size;
            }
        }
        (windows, last)
    }
}

/// What a collapse of `windows` windows whose last failure was `last`
/// returns: Ok only if every window ended up collapsed.
pub(crate) fn collapse_result(windows: u64, last: Option<CollapseError>) -> Result<(), Errno> {
    if windows == 0 {
        // No aligned window fits (Linux: the VMA is not suitable for
        // the order, or the aligned range is inverted): EINVAL.
        return Err(Errno::EINVAL);
    }
    match last {
        None => Ok(()),
        Some(e) => Err(e.errno()),
    }
}
