//! Swap readahead: a 4K swap-in from the device also reads the swap
//! entries around it, as Linux 6.12's VMA-based `swap_vma_readahead`
//! (`mm/swap_state.c`), so a sequential read of a swapped-out region costs
//! one major fault (and one merged request) per window instead of one per
//! page.
//!
//! # Window
//! `1 << min(vm.page-cluster, 5)` pages at most (`page-cluster` 0: no
//! readahead).  The size follows Linux's `__swapin_nr_pages`: a miss next
//! to the previous fault's page (or after readahead hits) grows it —
//! `hits + 2` rounded up to a power of two, at least 4 — and it never
//! shrinks faster than halving.  It lies after the fault when the previous
//! fault was the page before, before it when that was the page after,
//! else around it, and never leaves the VMA or the PTE table of the fault.
//! Only swap entries of the faulting entry's area in that table are read.
//! The state (last fault's page, window, hits) is one word per address
//! space ([`Mm::swap_ra`]): Linux keeps it per VMA (`swap_readahead_info`).
//!
//! # Readahead folios
//! Each entry of the window not in the swap cache gets an order-0 folio,
//! locked, put in the swap cache marked readahead
//! ([`SwapCache::insert_readahead`](crate::swap::cache::SwapCache::insert_readahead)),
//! added to the inactive LRU list and unmapped, and its read is queued
//! ([`SwapIo::read_async`](crate::swap::SwapIo::read_async)) under a plug,
//! so reads of consecutive slots merge into one request.  Only the
//! faulting page is waited for (its folio lock); the completion
//! ([`MmCtx::end_swap_read`]) marks each folio `UPTODATE` and unlocks it,
//! and a fault on a readahead page still being read sleeps on its lock
//! (the swap-cache hit path).  The first hit on a readahead folio counts
//! `swap_ra_hit` and a hit for the window ([`Mm::swap_ra_hit`]);
//! `swap_ra` counts the readahead pages read.  A readahead folio nobody
//! faults on stays clean in the swap cache until reclaim frees it without
//! I/O.  A failed read takes the folio out of the swap cache (nothing maps
//! it): the faulting page's fault gets `SIGBUS`, a readahead page is read
//! again by its own fault.
//!
//! Not done: Linux's cluster readahead (by slot, used when
//! `vma_ra_enabled` is 0 or a swap device is rotational); here readahead
//! is off when `/sys/kernel/mm/swap/vma_ra_enabled` is 0.

use core::sync::atomic::Ordering::Relaxed;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, align_down};
use crate::paging::{Entry, PagingArch, SwapEntry};
use crate::physmem::buddy::AllocFlags;
use crate::physmem::folio::FolioRef;
use crate::physmem::frame_flags::PageFlags;
use crate::physmem::watermark::VM_SYSCTL;
use crate::swap::SwapArea;
use crate::swap::cache::{key, unkey};
use crate::thp::{MthpStat, VmEvent};
use crate::vma::Vma;

use super::{Fault, Mm};

/// Largest window, log2 (Linux's `SWAP_RA_ORDER_CEILING`).
const RA_ORDER_CEILING: u64 = 5;
/// Largest window in pages.
const RA_MAX: usize = 1 << RA_ORDER_CEILING;
/// [`Mm::swap_ra`]: page number << 12 | window << 6 | hits.
const WIN_SHIFT: u32 = 6;
const FIELD_MASK: u64 = (1 << WIN_SHIFT) - 1;

const fn ra_val(vpn: u64, win: u64, hits: u64) -> u64 {
    (vpn << (2 * WIN_SHIFT)) | (win << WIN_SHIFT) | hits
}

/// (page number, window, hits) of a [`Mm::swap_ra`] word.
const fn ra_unval(v: u64) -> (u64, u64, u64) {
    (
        v >> (2 * WIN_SHIFT),
        (v >> WIN_SHIFT) & FIELD_MASK,
        v & FIELD_MASK,
    )
}

/// The next window in pages (Linux's `__swapin_nr_pages`): from the last
/// fault's page `prev`, this fault's `cur`, the readahead hits since the
/// last miss, the largest window and the last one.
pub(crate) fn ra_pages(prev: u64, cur: u64, hits: u64, max: u64, prev_win: u64) -> u64 {
    let mut pages = hits + 2;
    if pages == 2 {
        // No hits to judge by: grow only next to the last fault.
        if cur != prev.wrapping_add(1) && cur.wrapping_add(1) != prev {
            pages = 1;
        }
    } else {
        pages = pages.next_power_of_two().max(4);
    }
    pages.min(max).max(prev_win / 2)
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// The readahead window for a miss at `va` in `vma`, as `[start, end)`
    /// (Linux's `swap_vma_ra_win`); records the fault for the next one.
    /// `None`: one page only (no readahead).
    fn swap_ra_window(&self, vma: &Vma, va: u64) -> Option<(u64, u64)> {
        if !self.ctx.swap.vma_ra_enabled.load(Relaxed) {
            return None;
        }
        let max = 1u64 << VM_SYSCTL.page_cluster().min(RA_ORDER_CEILING);
        if max == 1 {
            return None;
        }
        let fpn = va >> PAGE_SHIFT;
        let (pn, prev_win, hits) = ra_unval(self.swap_ra.load(Relaxed));
        let win = ra_pages(pn, fpn, hits, max, prev_win);
        self.swap_ra.store(ra_val(fpn, win, 0), Relaxed);
        if win <= 1 {
            return None;
        }
        let (lo, hi) = if fpn == pn + 1 {
            (fpn, fpn + win)
        } else if pn == fpn + 1 {
            (fpn + 1 - win, fpn + 1)
        } else {
            let left = (win - 1) / 2;
            (fpn - left, fpn + win - left)
        };
        let pmd = align_down(va, PMD_SIZE);
        let start = (lo << PAGE_SHIFT).max(vma.start).max(pmd);
        let end = (hi << PAGE_SHIFT).min(vma.end).min(pmd + PMD_SIZE);
        Some((start, end))
    }

    /// An order-0 swap-in of `e` at `va` with readahead (module docs):
    /// `None` when the window is one page (the caller reads it alone),
    /// else `swapin_read`'s result for the faulting page.
    pub(super) fn swapin_readahead(
        &self,
        vma: &Vma,
        va: u64,
        e: SwapEntry,
        area: &SwapArea,
    ) -> Option<Result<Option<FolioRef<'a>>, Fault>> {
        let (start, end) = self.swap_ra_window(vma, va)?;
        // The window's swap entries of `e`'s area, from the fault's table.
        let mut ents = [(0u64, 0u64); RA_MAX];
        let mut n = 0;
        {
            let pt = self.lock_pt();
            let run = pt.pte_run(start, ((end - start) / PAGE_SIZE) as usize)?;
            for i in 0..run.len() {
                if let Entry::Swap(x) = run.entry(i)
                    && x.ty == e.ty
                    && n < RA_MAX
                {
                    ents[n] = (run.va(i), x.offset);
                    n += 1;
                }
            }
        }
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        let mut target: Option<Result<Option<FolioRef<'a>>, Fault>> = None;
        area.io.plug();
        for &(at, slot) in &ents[..n] {
            let is_target = at == va;
            if is_target && slot != e.offset {
                target = Some(Ok(None)); // changed since the fault read it
                continue;
            }
            let r = self.swapin_async(area, e.ty, at, slot, !is_target);
            if is_target {
                target = Some(r);
            } else if let Ok(Some(_)) = r {
                stats.count(VmEvent::SwapRa);
            } else if let Err(Fault::Oom) = r {
                break; // no memory for more readahead
            }
        }
        area.io.unplug();
        let r = target.unwrap_or(Ok(None));
        let Ok(Some(f)) = r else {
            return Some(r);
        };
        // Wait for the faulting page's read (the completion unlocks).
        let lock = f.lock_sleeping();
        if !f.test(PageFlags::UPTODATE) {
            drop(lock);
            return Some(Err(Fault::Sigbus));
        }
        drop(lock);
        stats.count(VmEvent::PgMajFault);
        self.majfaults.fetch_add(1, Relaxed);
        stats.inc(0, MthpStat::Swpin);
        Some(Ok(Some(f)))
    }

    /// Queues the read of slot `slot` (area `ty`, named by the PTE at `at`)
    /// into a new order-0 folio that enters the swap cache (marked
    /// readahead with `ra`), locked until the read completes.  `Ok(None)`:
    /// cached already, or the slot is free or changed.
    fn swapin_async(
        &self,
        area: &SwapArea,
        ty: u8,
        at: u64,
        slot: u64,
        ra: bool,
    ) -> Result<Option<FolioRef<'a>>, Fault> {
        let ctx = self.ctx;
        let k = key(ty, slot);
        // The slot first: it refuses a cached slot, so no folio is
        // allocated for a page that is in memory.
        if !area.map.take_cache(slot, 1) {
            return Ok(None);
        }
        let Ok(raw) = ctx.buddy.alloc(0, AllocFlags::USER) else {
            area.map.put_cache(slot, 1);
            return Err(Fault::Oom);
        };
        let f = FolioRef::from_raw(raw);
        // Locked before the swap cache shows it (see `swapin_read`); the
        // lock is the read's from its submission on.
        let lock = f.try_lock().expect("a new folio is unlocked");
        let inserted = if ra {
            ctx.swap.cache.insert_readahead(k, f.pfn())
        } else {
            ctx.swap.cache.insert(k, f.pfn(), 1)
        };
        if !inserted {
            area.map.put_cache(slot, 1);
            return Ok(None);
        }
        f.set_anon_owner(self.id, at >> PAGE_SHIFT);
        f.clear_flags(PageFlags::UPTODATE);
        f.set_flags(PageFlags::SWAPCACHE);
        f.get(); // the cache's
        // On the inactive list from the start, as Linux adds a folio read
        // into the swap cache.
        ctx.lru_add(*f);
        ctx.thp.stats.count(VmEvent::PswpIn);
        f.get(); // the read's, dropped by its completion
        core::mem::forget(lock);
        match area.io.read_async(ctx.mem, slot, f.pa(), 1) {
            Ok(true) => {}
            Ok(false) => ctx.end_swap_read(f.pa(), true),
            Err(_) => ctx.end_swap_read(f.pa(), false),
        }
        Ok(Some(f))
    }

    /// A swap-cache hit on the readahead folio caching slot key `k`, at
    /// `va`: the first one counts `swap_ra_hit` and a hit for the window
    /// (Linux's `swap_cache_get_folio`).
    pub(super) fn swap_ra_hit(&self, va: u64, k: u64) {
        if self.ctx.swap.cache.take_readahead(k) {
            self.count_ra_hit(va);
        }
    }

    /// Counts a first hit at `va` on a readahead folio whose mark the
    /// caller took (`swap_ra_hit`, or the swap-cache-hit fast path under
    /// its cache hold).
    pub(super) fn count_ra_hit(&self, va: u64) {
        self.ctx.thp.stats.count(VmEvent::SwapRaHit);
        let (_, win, hits) = ra_unval(self.swap_ra.load(Relaxed));
        self.swap_ra.store(
            ra_val(va >> PAGE_SHIFT, win, (hits + 1).min(FIELD_MASK)),
            Relaxed,
        );
    }
}

impl<'a> super::ctx::MmCtx<'a> {
    /// The completion of an asynchronous swap read
    /// ([`SwapIo::read_async`](crate::swap::SwapIo::read_async)) into the
    /// locked, cached order-0 folio at physical `pa`, in task context: on
    /// success it is `UPTODATE`, and freed now if no swap entry names its
    /// slot any more (zapped during the read, and nobody else holds it);
    /// on an error it leaves the swap cache (never mapped with wrong
    /// data).  Then the lock (waking faults waiting for the read) and the
    /// read's reference go.
    pub fn end_swap_read(&self, pa: u64, ok: bool) {
        let Some(f) = self.folio(pa >> PAGE_SHIFT) else {
            return;
        };
        debug_assert!(f.test(PageFlags::LOCKED), "swap read without the lock");
        let cached = self
            .swap
            .cache
            .slot_of(f.pfn())
            .and_then(|k| Some((self.swap.area(unkey(k).0)?, unkey(k).1)));
        if ok {
            f.set_flags(PageFlags::UPTODATE);
            if let Some((area, slot)) = cached
                && !area.map.any_count(slot, 1)
            {
                super::swap::release_after_writeback(self, &area, f, slot, true);
            }
        } else if let Some((area, slot)) = cached
            && self.swap.cache.remove(f.pfn()).is_some()
        {
            f.clear_flags(PageFlags::SWAPCACHE);
            area.map.put_cache(slot, 1);
            f.put();
        }
        f.unlock();
        f.put();
    }
}

#[cfg(test)]
mod tests {
    use super::ra_pages;

    /// A sequential read grows the window 1, 2, 4, 8 (Linux's sequence:
    /// 514 major faults for 4096 pages at page-cluster 3).
    #[test]
    fn window_grows_on_sequential_misses_and_hits() {
        assert_eq!(ra_pages(0, 10, 0, 8, 0), 1, "first fault: not adjacent");
        assert_eq!(ra_pages(10, 11, 0, 8, 1), 2, "adjacent miss");
        assert_eq!(ra_pages(12, 13, 1, 8, 2), 4, "one hit");
        assert_eq!(ra_pages(16, 17, 3, 8, 4), 8, "three hits");
        assert_eq!(ra_pages(24, 25, 7, 8, 8), 8, "capped");
        assert_eq!(ra_pages(100, 7, 0, 8, 8), 4, "halves at most");
        assert_eq!(ra_pages(0, 1, 0, 1, 0), 1, "page-cluster 0");
    }
}
