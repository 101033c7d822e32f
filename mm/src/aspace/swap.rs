//! Swap-out and swap-in of anonymous folios, whole at every order
//! (Linux's `shrink_folio_list` → `add_to_swap` → `try_to_unmap` →
//! `pageout` for one folio, and `do_swap_page`), plus what zap, fork and
//! swapoff do with swap entries.
//!
//! # Swap-out ([`pageout_folio`])
//! 1. The folio is locked (tried: a busy folio is kept).
//! 2. It gets a naturally aligned run of `2^order` slots and enters the
//!    swap cache.  No such run: a large folio is split to order 0 first,
//!    counted in `swpout_fallback` (and `thp_swpout_fallback` at PMD
//!    size), as Linux; a partially mapped one is split first too (its
//!    unmapped pages need no I/O).
//! 3. Every mapping, in every address space, becomes a swap entry
//!    (`rmap::try_to_unmap_swap`; a PMD mapping is split into PTEs, the
//!    folio stays whole).
//! 4. The folio is written as one request, then leaves the swap cache and
//!    is freed — unless someone took a reference meanwhile (a fault that
//!    found it in the cache), in which case it stays cached and mapped
//!    back by that fault.  A write error keeps it cached: the entries then
//!    bring it back from memory, so no wrong data is ever read.
//!
//! # Asynchronous writeback (`MADV_PAGEOUT`)
//! `MADV_PAGEOUT` does not wait for the disk, as Linux (whose `pageout`
//! submits the bio and returns): step 4 is split at the write, and step
//! 3's TLB flush is shared by a batch of folios
//! ([`pageout_unmap`] each, one flush, then [`pageout_write`] each:
//! `aspace/pageout.rs`).  The request is queued ([`SwapIo::write_async`](crate::swap::SwapIo::write_async))
//! and the caller goes on with the next folio while the device writes
//! this one; the I/O holds a reference of its own and the folio stays
//! locked, unmapped, in the swap cache until the write's completion
//! ([`MmCtx::end_swap_write`](super::ctx::MmCtx::end_swap_write), task
//! context) does the rest of step 4 ([`release_after_writeback`]) and
//! unlocks it.  The folio lock stands for Linux's `PG_writeback` here
//! (the flags word has no bit left for a separate one): everything that
//! needs the folio stable (split, migration, compaction, collapse, the
//! slot-freeing `try_free_swap_cache`) already tries the lock and skips a
//! locked folio, and what must have it (swap-in, swapoff) sleeps on it,
//! so a fault on a folio under writeback waits for the write and then
//! maps it back from the cache without reading it.  Reclaim (kswapd,
//! direct) keeps writing synchronously: it needs the memory back now.
//!
//! # Swap-in ([`Mm::do_swap_page`])
//! A swap-cache hit is served from the fault's first walk, with the
//! page-table lock shared and the PTE table's lock held (Linux's split
//! PTL): [`Mm::swap_hit_shared`] looks the slot up, tries the folio lock
//! and maps it ([`Mm::map_cached`]) under one cache-lock hold, which also
//! frees the slots.  A miss, or a folio whose lock is taken (I/O, another
//! swap-in), goes the sleeping way below.
//!
//! A fault on a swap entry looks in the swap cache first.  On a miss it
//! reads the slots into a new folio: of the largest order the fault
//! policy allows (below the PMD order, as Linux: a PMD THP comes back
//! PTE-mapped) whose aligned block holds swap entries of consecutive,
//! equally aligned slots with equal exclusive bits, else order 0 (Linux
//! 6.12's `alloc_swap_folio` rules).  An order-0 read also reads the swap
//! entries around the fault, asynchronously (swap readahead,
//! `swap_readahead.rs`).  The folio is then mapped by all the
//! entries of its block that still name its slots (the whole folio in one
//! go when all do, as Linux 6.11+), writable where the entry was
//! exclusive and the VMA is writable.  Slots no entry names any more are
//! freed at once and the folio leaves the cache: the policy of Linux's
//! synchronous-device path, chosen here for every device (so `SwapFree`
//! recovers as soon as memory is back; a clean folio swapped out again is
//! written again).  A folio that leaves the swap cache while mapped is
//! marked `DIRTY`, as Linux's `folio_free_swap`: memory now holds the only
//! copy, so `MADV_FREE` and reclaim must not treat it as clean.
//!
//! # Waiting
//! A fault that finds a folio locked (being written or read) sleeps in
//! `Folio::lock_sleeping`; any unlock wakes it (the folio's `WAITERS`
//! flag, Linux's `PG_waiters`).

use alloc::vec::Vec;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_ORDER, PMD_SIZE, align_down};
use crate::paging::{
    Attrs, ENTRIES_PER_TABLE, Entry, PTE_LEVEL, PageTable, PagingArch, SwapEntry, Walk,
};
use crate::physmem::buddy::AllocFlags;
use crate::physmem::folio::{Folio, FolioLockGuard, FolioRef};
use crate::physmem::frame_flags::PageFlags;
use crate::swap::SwapArea;
use crate::swap::cache::{CacheGuard, key, unkey};
use crate::thp::{MthpStat, VmEvent};
use crate::vma::Vma;

use super::rmap::{rmap_walk, try_to_unmap_swap};
use super::{Access, Fault, Mm, vma_perms};

/// What [`pageout_folio`] did with a folio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pageout {
    /// Written (or already clean) and freed: this many pages came back.
    Freed(u64),
    /// Unmapped to swap entries but still held (by a pin or a fault that
    /// found it in the swap cache); it stays in the swap cache.
    Cached,
    /// Split first (no aligned run of slots, or only partly mapped): the
    /// caller may page out the pieces.
    Split,
    /// Left as it was: not anonymous, locked, pinned, no swap space, or a
    /// mapping the walk could not reach.
    Kept,
    /// The write failed: the folio stays in the swap cache, mapped by
    /// swap entries that bring it back from memory.
    IoError,
    /// Unmapped and its write is in flight (`MADV_PAGEOUT`'s
    /// [`pageout_write`] without waiting): the
    /// I/O holds a reference and the folio lock until its completion.
    Writeback,
}

/// Pages out one anonymous folio, held by the caller's reference `folio`
/// (from LRU isolation or `MADV_PAGEOUT`), from every address space of
/// `mms` that maps it (normally all of the context's).  See the module
/// docs for the steps.  On [`Pageout::Freed`] the caller's reference is
/// the last one: dropping it frees the folio.  On [`Pageout::Split`] it
/// names the first piece.
pub fn pageout_folio<'a, A: PagingArch>(mms: &[&Mm<'a, A>], folio: &FolioRef<'a>) -> Pageout {
    match pageout_unmap(mms, folio, None) {
        Unmap::Done(p) => p,
        Unmap::Unmapped(u) => pageout_write(mms[0].ctx, u, false),
    }
}

/// A folio [`pageout_unmap`] left locked, in the swap cache at `slot` of
/// `area`, with no mapping left in any page table: what
/// [`pageout_write`] needs to finish its swap-out.
pub(crate) struct Unmapped<'a> {
    f: Folio<'a>,
    lock: FolioLockGuard<'a>,
    area: alloc::sync::Arc<SwapArea>,
    slot: u64,
}

/// What [`pageout_unmap`] did.
pub(crate) enum Unmap<'a> {
    /// Nothing more to do: the outcome.
    Done(Pageout),
    /// Unmapped: write it out (or release it) with [`pageout_write`] —
    /// once no TLB holds its old mappings any more.
    Unmapped(Unmapped<'a>),
}

/// A batch of unmaps whose TLB flush is still pending, in the one space
/// `MADV_PAGEOUT` works on: its cleared entries are gathered here instead
/// of being flushed folio by folio (Linux's deferred `try_to_unmap_flush`).
pub(crate) struct DeferredFlush<'a> {
    /// The id of the space whose entries `gather` collects.
    pub(crate) mm: u64,
    pub(crate) gather: crate::paging::TlbGather<'a>,
}

/// Steps 1–3 of a swap-out (module docs): lock, slots and swap cache,
/// unmap everywhere.  With `deferred`, entries cleared in its space are
/// flushed only when the caller finishes its gather, which it must do
/// before [`pageout_write`] (a CPU could otherwise still write the folio
/// through a stale TLB entry while it is written out, or after it is
/// freed); the caller then also vouches that the space's VMA at the
/// folio is not `VM_LOCKED` (`MADV_PAGEOUT` refuses locked VMAs and holds
/// the mmap lock for reading).
pub(crate) fn pageout_unmap<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    folio: &FolioRef<'a>,
    deferred: Option<&mut DeferredFlush<'a>>,
) -> Unmap<'a> {
    use Unmap::Done;
    let Some(first) = mms.first() else {
        return Done(Pageout::Kept);
    };
    let ctx = first.ctx;
    let f: Folio<'a> = **folio;
    if f.is_shmem() {
        return Done(super::shmem_swap::shmem_pageout(mms, folio));
    }
    if !f.is_anon() || f.test(PageFlags::ZERO_PAGE) || ctx.is_zero_pfn(f.pfn()) {
        return Done(Pageout::Kept);
    }
    let order = f.order();
    let nr = f.nr_pages();
    let Some(lock) = f.try_lock() else {
        return Done(Pageout::Kept);
    };
    // Never reclaim mlocked memory (notes §4.2), whole folios or pages
    // mapped in a locked VMA that only partly covers a folio.
    if f.is_mlocked() {
        return Done(Pageout::Kept);
    }
    if f.test(PageFlags::LAZYFREE) {
        return Done(discard_lazyfree(mms, f, lock));
    }
    let cached = f.test(PageFlags::SWAPCACHE);
    let (ty, slot) = if cached {
        match ctx.swap.cache.slot_of(f.pfn()) {
            Some(k) => unkey(k),
            None => return Done(Pageout::Kept),
        }
    } else {
        // Partly mapped: split now, the unmapped pages need no I/O.
        if order > 0 && f.entire_mapcount() == 0 && (f.large_mapcount() as u64) < nr {
            drop(lock);
            return Done(split_for_swap(mms, f, false));
        }
        match ctx.swap.alloc(order) {
            Some(s) => s,
            None if order > 0 => {
                // No aligned run (or no swap at all: Linux's MADV_PAGEOUT
                // still splits then, §0.5 of the notes).
                drop(lock);
                return Done(split_for_swap(mms, f, true));
            }
            None => return Done(Pageout::Kept),
        }
    };
    let Some(area) = ctx.swap.area(ty) else {
        return Done(Pageout::Kept);
    };
    if !cached {
        if !ctx.swap.cache.insert(key(ty, slot), f.pfn(), nr) {
            area.map.put_cache(slot, nr);
            return Done(Pageout::Kept);
        }
        f.get(); // the swap cache's reference
        f.set_flags(PageFlags::SWAPCACHE | PageFlags::DIRTY);
    }
    // Unmap everywhere.
    if f.large_mapcount() > 0 {
        let va = f
            .anon_owner()
            .map(|(_, vpn)| vpn << PAGE_SHIFT)
            .unwrap_or(0);
        let vma_checked = deferred.is_some();
        let unmapped = match rmap_walk(mms, f, va) {
            // Ours, the cache's and one per mapping: anything more is a pin.
            Ok(mut walk)
                if f.extra_refs() == 2
                    && (vma_checked || !walk.mappers.iter().any(|m| m.maybe_locked_at(va))) =>
            {
                // Under the walk's locks: an unmap that ran since the check
                // above took the last mappings and uncounted the folio.
                let mapped = f.large_mapcount() > 0;
                let g = deferred.map(|d| (d.mm, &mut d.gather));
                if try_to_unmap_swap(&mut walk, f, ty, slot, &area.map, g) {
                    f.set_flags(PageFlags::DIRTY);
                }
                if mapped {
                    ctx.after_unmap_swap(f);
                }
                true
            }
            _ => false,
        };
        if !unmapped {
            if !cached {
                leave_cache(ctx, &area, f, slot);
            }
            return Done(Pageout::Kept);
        }
    }
    Unmap::Unmapped(Unmapped {
        f,
        lock,
        area,
        slot,
    })
}

/// Step 4 of a swap-out (module docs) for a folio [`pageout_unmap`]
/// unmapped, whose old mappings no TLB holds any more: the write (not
/// waited for with `nowait`), or the release of a clean folio.
pub(crate) fn pageout_write<'a>(
    ctx: &super::ctx::MmCtx<'a>,
    u: Unmapped<'a>,
    nowait: bool,
) -> Pageout {
    let Unmapped {
        f,
        lock,
        area,
        slot,
    } = u;
    if f.test(PageFlags::DIRTY) {
        if nowait {
            match swap_writepage_async(ctx, &area, slot, f) {
                Ok(true) => {
                    // The lock is the I/O's now (its completion unlocks).
                    core::mem::forget(lock);
                    return Pageout::Writeback;
                }
                Ok(false) => {}
                Err(_) => {
                    drop(lock);
                    return Pageout::IoError;
                }
            }
        } else if swap_writepage(ctx, &area, slot, f).is_err() {
            drop(lock);
            return Pageout::IoError;
        }
    }
    let out = release_after_writeback(ctx, &area, f, slot, true);
    drop(lock);
    out
}

/// The end of a swap-out once the locked folio `f` is written (or was
/// clean): it leaves the swap cache, its slots lose `HAS_CACHE`, and the
/// cache's reference goes, leaving the caller's as the last
/// ([`Pageout::Freed`]) — unless someone found it in the cache meanwhile
/// and holds it (or, with `unmapped`, an anonymous folio was mapped back),
/// when it stays cached ([`Pageout::Cached`]).  `Freed` assumes one
/// reference beyond the cache's: the caller's, or the I/O's at the
/// completion of an asynchronous write.  Shared by anonymous and shmem
/// swap-out.
pub(crate) fn release_after_writeback<'a>(
    ctx: &super::ctx::MmCtx<'a>,
    area: &SwapArea,
    f: Folio<'a>,
    slot: u64,
    unmapped: bool,
) -> Pageout {
    let nr = f.nr_pages();
    if ctx
        .swap
        .cache
        .remove_if(f.pfn(), || {
            f.refcount() == 2 && (!unmapped || f.large_mapcount() == 0)
        })
        .is_some()
    {
        f.clear_flags(PageFlags::SWAPCACHE);
        area.map.put_cache(slot, nr);
        f.put();
        Pageout::Freed(nr)
    } else {
        Pageout::Cached
    }
}

/// Starts writing the locked, unmapped folio `f` to its slots from `slot`
/// of `area` and counts it at submission, as Linux.  `Ok(true)`: in
/// flight, with a reference of the I/O's taken (the completion,
/// [`MmCtx::end_swap_write`](super::ctx::MmCtx::end_swap_write), drops it
/// and the folio lock); `Ok(false)`: written already (`DIRTY` cleared).
fn swap_writepage_async<'a>(
    ctx: &super::ctx::MmCtx<'a>,
    area: &SwapArea,
    slot: u64,
    f: Folio<'a>,
) -> Result<bool, crate::swap::SwapIoError> {
    let nr = f.nr_pages();
    f.get(); // the I/O's
    // Counted before the submission: the completion may run first.
    ctx.swap.writeback_account(nr, true);
    let r = area.io.write_async(ctx.mem, slot, f.pa(), nr);
    if !matches!(r, Ok(true)) {
        ctx.swap.writeback_account(nr, false);
        f.put_many(1);
    }
    let in_flight = r?;
    if !in_flight {
        f.clear_flags(PageFlags::DIRTY);
    }
    count_swpout(ctx, f);
    Ok(in_flight)
}

/// `pswpout`, per-size `swpout` and `thp_swpout` for a write of `f`.
fn count_swpout(ctx: &super::ctx::MmCtx<'_>, f: Folio<'_>) {
    let stats = &ctx.thp.stats;
    stats.count_n(VmEvent::PswpOut, f.nr_pages());
    stats.inc(f.order(), MthpStat::Swpout);
    if f.order() == PMD_ORDER {
        stats.count(VmEvent::ThpSwpout);
    }
}

/// Writes the locked folio `f` to its slots from `slot` of `area` as one
/// request and counts it (`pswpout`, per-size `swpout`, `thp_swpout`):
/// the one writer of anonymous and shmem folios (Linux's
/// `swap_writepage`).  `DIRTY` is cleared on success.
pub(crate) fn swap_writepage<'a>(
    ctx: &super::ctx::MmCtx<'a>,
    area: &SwapArea,
    slot: u64,
    f: Folio<'a>,
) -> Result<(), crate::swap::SwapIoError> {
    let nr = f.nr_pages();
    ctx.swap.writeback_account(nr, true);
    let r = area.io.write(ctx.mem, slot, f.pa(), nr);
    ctx.swap.writeback_account(nr, false);
    r?;
    f.clear_flags(PageFlags::DIRTY);
    count_swpout(ctx, f);
    Ok(())
}

/// Reclaim of a lazyfree folio (`MADV_FREE`, notes §3.3): every mapping
/// is cleared; if any was written since (dirty), they are all put back and
/// the folio is swap-backed again; else it is freed without I/O
/// (`pglazyfreed`).  A PMD mapping is split into PTEs first (Linux 6.11
/// drops a clean one whole; the folio is freed either way).
fn discard_lazyfree<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    f: Folio<'a>,
    lock: FolioLockGuard<'a>,
) -> Pageout {
    let ctx = mms[0].ctx;
    let va = f
        .anon_owner()
        .map(|(_, vpn)| vpn << PAGE_SHIFT)
        .unwrap_or(0);
    if f.large_mapcount() > 0 {
        let Ok(mut walk) = rmap_walk(mms, f, va) else {
            return Pageout::Kept;
        };
        if walk.mappers.iter().any(|m| m.maybe_locked_at(va)) {
            return Pageout::Kept;
        }
        // Only ours beyond the mappings.
        if f.extra_refs() != 1 {
            return Pageout::Kept;
        }
        // As in `pageout_folio_impl`: an unmap since the check above may
        // have taken the last mappings (and uncounted the folio).
        let mapped = f.large_mapcount() > 0;
        let saved = super::rmap::try_to_unmap(&mut walk, f);
        if f.test(PageFlags::DIRTY) || saved.iter().any(|s| s.attrs.dirty) {
            super::rmap::restore_mappings(ctx, &mut walk, &saved, f.pfn(), |_| f, false);
            f.clear_flags(PageFlags::LAZYFREE);
            return Pageout::Kept;
        }
        for s in &saved {
            walk.mappers[s.mm].rss_sub(1);
        }
        if mapped {
            ctx.after_unmap_swap(f);
        }
    }
    ctx.thp.stats.count_n(VmEvent::PgLazyFreed, f.nr_pages());
    drop(lock);
    Pageout::Freed(f.nr_pages())
}

/// Takes `f` (locked, just added with slots from `slot`) out of the swap
/// cache again and gives the slots back.
fn leave_cache<'a>(ctx: &super::ctx::MmCtx<'a>, area: &SwapArea, f: Folio<'a>, slot: u64) {
    if ctx.swap.cache.remove(f.pfn()).is_some() {
        f.clear_flags(PageFlags::SWAPCACHE);
        f.set_flags(PageFlags::DIRTY);
        area.map.put_cache(slot, f.nr_pages());
        f.put();
    }
}

/// Splits `f` to order 0 before swap-out (`fallback`: for want of an
/// aligned run of slots, counted as Linux counts it).
fn split_for_swap<'a, A: PagingArch>(mms: &[&Mm<'a, A>], f: Folio<'a>, fallback: bool) -> Pageout {
    let ctx = mms[0].ctx;
    if fallback {
        ctx.thp.stats.inc(f.order(), MthpStat::SwpoutFallback);
        if f.order() == PMD_ORDER {
            ctx.thp.stats.count(VmEvent::ThpSwpoutFallback);
        }
    }
    match super::split::split_folio_to_order(mms, f, 0) {
        Ok(()) => Pageout::Split,
        Err(_) => Pageout::Kept,
    }
}

impl<'a> super::ctx::MmCtx<'a> {
    /// The completion of an asynchronous swap write
    /// ([`SwapIo::write_async`](crate::swap::SwapIo::write_async)) of the
    /// folio at physical `pa`, in task context.  On success `DIRTY` is
    /// cleared and the clean folio stays in the swap cache, as Linux 6.12
    /// keeps a folio whose writeback ended: a fault on its entries maps it
    /// back without a read (`SwapCached` counts it meanwhile), and it goes
    /// to the inactive list (Linux rotates it to the tail) for the next
    /// reclaim pass, which frees it without I/O.  Only a folio no swap
    /// entry names any more (its range unmapped during the write) is freed
    /// now ([`release_after_writeback`]): nothing could find it.  On an
    /// error it stays dirty in the cache (the swap entries bring it back
    /// from memory: never lost, never read wrong).  Then the folio lock
    /// the write held is released (waking faults that wait for it) and
    /// the I/O's reference dropped.
    pub fn end_swap_write(&self, pa: u64, ok: bool) {
        let Some(f) = self.folio(pa >> PAGE_SHIFT) else {
            return;
        };
        debug_assert!(f.test(PageFlags::LOCKED), "writeback without the lock");
        self.swap.writeback_account(f.nr_pages(), false);
        if ok {
            f.clear_flags(PageFlags::DIRTY);
            let area = self
                .swap
                .cache
                .slot_of(f.pfn())
                .and_then(|k| Some((self.swap.area(unkey(k).0)?, unkey(k).1)));
            if let Some((area, slot)) = area {
                if !area.map.any_count(slot, f.nr_pages()) {
                    release_after_writeback(self, &area, f, slot, true);
                } else if !f.is_mapped() {
                    let _ = self.lru().move_to(f, false);
                }
            }
        } else {
            f.set_flags(PageFlags::DIRTY);
        }
        f.unlock();
        f.put();
    }

    /// The bookkeeping of a folio whose last mappings became swap entries
    /// (the deferred-split queue and `nr_anon`, as any unmap).  Only for a
    /// caller that found the folio still mapped under its reverse-map
    /// walk's locks: reclaim looks at a folio without the mmap locks of
    /// its spaces, so an exit or `munmap` may remove the last mappings
    /// before the walk, and that unmap has done this bookkeeping already.
    fn after_unmap_swap(&self, f: Folio<'a>) {
        if f.large_mapcount() == 0 {
            self.deferred_split_remove(f);
            self.thp.stats.dec(f.order(), MthpStat::NrAnon);
        }
    }

    /// A slot of the cached folio at `first` (a key) lost its last entry:
    /// if no entry names any of the folio's slots any more, the folio
    /// leaves the swap cache (freed if nothing maps it).  Only tried: a
    /// locked folio (I/O in flight) is left for its holder.
    pub(crate) fn try_free_swap_cache(&self, k: u64) {
        let (ty, _) = unkey(k);
        let Some(area) = self.swap.area(ty) else {
            return;
        };
        let mut held: Option<FolioRef<'a>> = None;
        let Some(c) = self.swap.cache.lookup_get(k, |pfn| {
            if let Some(f) = self.folio(pfn) {
                held = Some(f.get_ref());
            }
        }) else {
            return;
        };
        let Some(f) = held else { return };
        let Some(lock) = f.try_lock() else { return };
        let (_, first) = unkey(c.first);
        if (first..first + c.nr).any(|s| area.map.count(s) != 0) {
            return;
        }
        // Ours and the cache's, beyond the mappings.
        if self
            .swap
            .cache
            .remove_if(f.pfn(), || f.extra_refs() == 2)
            .is_some()
        {
            f.clear_flags(PageFlags::SWAPCACHE);
            f.set_flags(PageFlags::DIRTY);
            area.map.put_cache(first, c.nr);
            f.put();
        }
        drop(lock);
    }

    /// Takes the locked folio `f` out of the swap cache if only the cache
    /// and its mappings (and the caller) hold it; its slots go back when
    /// no entry names them.  False if someone else holds it.
    pub(crate) fn drop_swap_cache(&self, f: Folio<'a>) -> bool {
        let Some(k) = self.swap.cache.slot_of(f.pfn()) else {
            return true;
        };
        let (ty, first) = unkey(k);
        let Some(area) = self.swap.area(ty) else {
            return false;
        };
        if self
            .swap
            .cache
            .remove_if(f.pfn(), || f.extra_refs() == 2)
            .is_none()
        {
            return false;
        }
        f.clear_flags(PageFlags::SWAPCACHE);
        f.set_flags(PageFlags::DIRTY);
        area.map.put_cache(first, f.nr_pages());
        f.put();
        true
    }

    /// swapoff's last step, after every space's entries of area `ty` came
    /// back: drops the folios still cached for it.  True when the area is
    /// empty (no slot in use); false while some folio is still locked by
    /// I/O in flight (try again).
    pub fn swapoff_drain_cache(&self, ty: u8) -> bool {
        for (_, k) in self.swap.cache.on_device(ty) {
            self.try_free_swap_cache(k);
        }
        self.swap.area(ty).is_none_or(|a| a.map.in_use() == 0)
    }

    /// Drops the references of `n` swap entries from slot `slot` of area
    /// `ty` (zap), freeing cached folios their slots no longer need.
    pub(crate) fn swap_free_entries(&self, ty: u8, slot: u64, n: u64) {
        let Some(area) = self.swap.area(ty) else {
            debug_assert!(false, "swap entry of inactive area {ty}");
            return;
        };
        if area.map.put(slot, n) > 0 {
            // Some slot is held by the cache alone: one check per folio.
            let mut s = slot;
            while s < slot + n {
                let k = key(ty, s);
                match self.swap.cache.lookup(k) {
                    Some(c) => {
                        self.try_free_swap_cache(k);
                        s = unkey(c.first).1 + c.nr;
                    }
                    None => s += 1,
                }
            }
        }
    }
}

/// Whether the `nr` PTEs from `base` are swap entries of area `e.ty` naming
/// slots `slot0..` with `e`'s exclusive bit.
fn swap_run_matches<'a, A: PagingArch>(
    pt: &crate::paging::PageTable<'a, A>,
    base: u64,
    nr: u64,
    e: SwapEntry,
    slot0: u64,
) -> bool {
    let Some(run) = pt.pte_run(base, nr as usize) else {
        return false;
    };
    run.len() as u64 == nr
        && (0..nr as usize).all(|i| {
            matches!(run.entry(i), Entry::Swap(x)
                if x.ty == e.ty && x.offset == slot0 + i as u64 && x.exclusive == e.exclusive)
        })
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Whether the VMA at `va` may be `VM_LOCKED`, for reclaim, which must
    /// not unmap pages of a locked VMA (Linux's `try_to_unmap_one` bails
    /// out on one).  The mmap lock is only tried (reclaim may hold
    /// page-table locks, which rank below it); a writer holding it makes
    /// the answer "maybe", and the folio is kept this round.
    pub(crate) fn maybe_locked_at(&self, va: u64) -> bool {
        match self.mmap_try_read() {
            Some(v) => v
                .find(va)
                .is_some_and(|v| v.flags.contains(crate::vma::VmFlags::LOCKED)),
            None => true,
        }
    }

    /// A fault on the swap entry `e` at `addr` in `vma` (mmap lock held
    /// for reading, no page-table lock).  `Ok` means retry the access.
    pub(crate) fn do_swap_page(
        &self,
        vma: &Vma,
        addr: u64,
        access: Access,
        e: SwapEntry,
    ) -> Result<(), Fault> {
        let ctx = self.ctx;
        let Some(area) = ctx.swap.area(e.ty) else {
            return Err(Fault::Sigbus);
        };
        let va = align_down(addr, PAGE_SIZE);
        let k = key(e.ty, e.offset);
        let mut held: Option<FolioRef<'a>> = None;
        let hit = ctx.swap.cache.lookup_get(k, |pfn| {
            if let Some(f) = ctx.folio(pfn) {
                held = Some(f.get_ref());
            }
        });
        let folio = match (hit, held) {
            (Some(c), Some(f)) => {
                if c.readahead {
                    self.swap_ra_hit(va, k);
                }
                f
            }
            _ => match self.swapin_read(vma, va, e, &area)? {
                Some(f) => f,
                None => return Ok(()),
            },
        };
        let f = *folio;
        let lock = f.lock_sleeping();
        let r = self.map_swapped(vma, va, access, e, &area, f);
        drop(lock);
        drop(folio);
        if r? {
            self.swapin_wp(vma, addr)?;
        }
        Ok(())
    }

    /// A write fault whose swap-in mapped the page read-only (shared after
    /// fork) copies now, in the same fault, as Linux's `do_wp_page` call.
    pub(super) fn swapin_wp(&self, vma: &Vma, addr: u64) -> Result<(), Fault> {
        let mut pt = self.lock_pt();
        let w = pt.lookup(addr);
        if let Entry::Leaf(l) = w.entry
            && w.level == PTE_LEVEL
            && !l.attrs.perms.write
        {
            return self.pte_fault(vma, &mut pt, addr, l, Access::Write);
        }
        Ok(())
    }

    /// A swap-cache hit served from the fault's shared walk `w` of `pt`
    /// (page-table lock shared, Linux's split PTL): one walk, one cache
    /// lock hold, no sleeping.  The PTE table's lock is taken, the entry
    /// checked again under it, and the folio caching `e`'s slot looked up
    /// under the cache lock and its lock *tried* (Linux sleeps in
    /// `folio_lock_or_retry`; a busy folio, under I/O or another fault's
    /// swap-in, goes to [`Self::do_swap_page`], which sleeps on it); it is
    /// then mapped as there ([`Self::map_cached`]) with the cache lock
    /// still held, so it needs no reference of ours.  `None`: not served
    /// here (a miss, a busy folio, an entry mremap moved away from its
    /// folio), take the sleeping path.  `Some(Ok(true))`: mapped read-only
    /// for a write, [`Self::swapin_wp`] with no lock held.
    pub(super) fn swap_hit_shared(
        &self,
        vma: &Vma,
        pt: &PageTable<'a, A>,
        w: &Walk,
        addr: u64,
        access: Access,
        e: SwapEntry,
    ) -> Option<Result<bool, Fault>> {
        let ctx = self.ctx;
        let va = align_down(addr, PAGE_SIZE);
        let _ptl = self.lock_pte_table(w.table_pa());
        // Read before the table's lock: another fault of this table may
        // have resolved it since.
        if pt.pte_run_walked(w, va, va, 1)?.raw(0) != A::encode(Entry::Swap(e), PTE_LEVEL) {
            return Some(Ok(false));
        }
        ctx.swap
            .with_area(e.ty, |area| {
                let mut cache = ctx.swap.cache.lock_nested();
                let c = cache.lookup(key(e.ty, e.offset))?;
                let f = ctx.folio(c.pfn)?;
                let lock = f.try_lock()?;
                // A readahead folio's first hit (the mark goes under this
                // hold, before `map_cached` may take it out of the cache).
                let ra_hit = c.readahead && cache.take_readahead(key(e.ty, e.offset));
                let (_, first_slot) = unkey(c.first);
                let r = self.map_cached(
                    vma, pt, w, va, access, e, area, f, &mut cache, first_slot, c.nr,
                );
                // The folio lock last: its release may wake a sleeper.  The
                // folio cannot go meanwhile: it leaves the cache only under
                // its lock.
                drop(cache);
                drop(lock);
                if ra_hit {
                    self.count_ra_hit(va);
                }
                r.ok().map(Ok)
            })
            .flatten()
    }

    /// Reads the slots of `e` (not in the swap cache) into a new folio,
    /// which enters the swap cache; see the module docs for the order.
    /// `None`: the entries changed meanwhile (retry the access).
    fn swapin_read(
        &self,
        vma: &Vma,
        va: u64,
        e: SwapEntry,
        area: &SwapArea,
    ) -> Result<Option<FolioRef<'a>>, Fault> {
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        let orders = self.fault_orders(vma, va) & ((1 << PMD_ORDER) - 1) & !1;
        // Candidate orders, highest first, whose block holds matching entries.
        let mut cands: Vec<u32> = Vec::new();
        if orders != 0 {
            let pt = self.lock_pt();
            let mut o = orders;
            while o != 0 {
                let ord = 31 - o.leading_zeros();
                o &= !(1 << ord);
                let nr = 1u64 << ord;
                let base = align_down(va, nr * PAGE_SIZE);
                let idx = (va - base) / PAGE_SIZE;
                if e.offset < idx || !(e.offset - idx).is_multiple_of(nr) {
                    continue;
                }
                if swap_run_matches(&pt, base, nr, e, e.offset - idx) {
                    cands.push(ord);
                }
            }
        }
        cands.push(0);
        for ord in cands {
            if ord == 0
                && let Some(r) = self.swapin_readahead(vma, va, e, area)
            {
                return r;
            }
            let nr = 1u64 << ord;
            let base = align_down(va, nr * PAGE_SIZE);
            let slot0 = e.offset - (va - base) / PAGE_SIZE;
            let Ok(raw) = ctx.buddy.alloc(ord, AllocFlags::USER) else {
                if ord > 0 {
                    stats.inc(ord, MthpStat::SwpinFallback);
                    continue;
                }
                return Err(Fault::Oom);
            };
            let f = FolioRef::from_raw(raw);
            // Locked before the swap cache can show it (as Linux locks a
            // folio before adding it): a fault of another thread that finds
            // it there waits for the read instead of taking the lock first.
            // Dropped before `f` on every way out.
            let lock = f.try_lock().expect("a new folio is unlocked");
            if !area.map.take_cache(slot0, nr) {
                if ord > 0 {
                    continue; // part of the run is cached or gone: try smaller
                }
                return Ok(None);
            }
            if !ctx.swap.cache.insert(key(e.ty, slot0), f.pfn(), nr) {
                area.map.put_cache(slot0, nr);
                if ord > 0 {
                    continue;
                }
                return Ok(None);
            }
            f.set_anon_owner(self.id, base >> PAGE_SHIFT);
            f.set_flags(PageFlags::SWAPCACHE);
            f.get(); // the cache's
            // On the inactive list from the start, as Linux adds a folio
            // read into the swap cache.
            ctx.lru_add(*f);
            let read = area.io.read(ctx.mem, slot0, f.pa(), nr);
            if read.is_err() {
                leave_cache(ctx, area, *f, slot0);
                drop(lock);
                return Err(Fault::Sigbus);
            }
            stats.count_n(VmEvent::PswpIn, nr);
            stats.count(VmEvent::PgMajFault);
            self.majfaults
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            stats.inc(ord, MthpStat::Swpin);
            drop(lock);
            return Ok(Some(f));
        }
        Ok(None)
    }

    /// Maps the cached folio `f` (locked, referenced by the caller) for the
    /// swap-entry fault at `va` under the page-table lock, exclusive (the
    /// sleeping path of [`Self::do_swap_page`]).  `Ok(true)`: mapped
    /// read-only for a write access.
    fn map_swapped(
        &self,
        vma: &Vma,
        va: u64,
        access: Access,
        e: SwapEntry,
        area: &SwapArea,
        f: Folio<'a>,
    ) -> Result<bool, Fault> {
        let ctx = self.ctx;
        let pt = self.lock_pt();
        let w = pt.lookup(va);
        if w.level != PTE_LEVEL || w.entry != Entry::Swap(e) {
            return Ok(false); // resolved or changed meanwhile
        }
        let mut cache = ctx.swap.cache.lock_nested();
        // Still the folio caching this slot?
        let Some(c) = cache.lookup(key(e.ty, e.offset)) else {
            return Ok(false);
        };
        if c.pfn != f.pfn() {
            return Ok(false);
        }
        let first_slot = unkey(c.first).1;
        match self.map_cached(
            vma, &pt, &w, va, access, e, area, f, &mut cache, first_slot, c.nr,
        ) {
            Ok(ro_write) => Ok(ro_write),
            Err(()) => {
                // mremap moved the entry away from where the folio lives:
                // give this page a copy of its own.
                drop(cache);
                drop(pt);
                self.swapin_copy(vma, va, e, f.page(e.offset - first_slot).pfn())
                    .map(|()| false)
            }
        }
    }

    /// Maps the locked folio `f`, cached for slots `first_slot..+nr` of
    /// `area`, for the fault on swap entry `e` at `va`: the whole folio
    /// when every entry of its block still names its slot, else the
    /// faulting page; writable where the entries were exclusive and the
    /// VMA is writable.  The caller holds the page-table lock (exclusive,
    /// or shared with the PTE table's lock), checked that the entry at
    /// `va`, in the table `w` reached, is still `e`, and found `f` under
    /// the cache lock `cache`, still held.  Slots no entry names any more
    /// are freed and the folio leaves the swap cache (module docs), its
    /// reference becoming one of the new mappings'.  `Ok(true)`: mapped
    /// read-only for a write access; `Err(())`: the folio does not live at
    /// this address (mremap moved the entry), nothing done.
    #[allow(clippy::too_many_arguments)]
    fn map_cached(
        &self,
        vma: &Vma,
        pt: &PageTable<'a, A>,
        w: &Walk,
        va: u64,
        access: Access,
        e: SwapEntry,
        area: &SwapArea,
        f: Folio<'a>,
        cache: &mut CacheGuard<'_>,
        first_slot: u64,
        nr: u64,
    ) -> Result<bool, ()> {
        let ctx = self.ctx;
        let idx = e.offset - first_slot;
        let base = va.wrapping_sub(idx * PAGE_SIZE);
        let owner = f.anon_owner();
        if owner.is_some_and(|(_, vpn)| vpn != base >> PAGE_SHIFT) {
            return Err(());
        }
        // The folio's entries, read from the table the walk above reached
        // (a run never leaves it: the folio's block is naturally aligned).
        // Whole when every entry of the block still names its slot.
        let mut excl = [0u64; ENTRIES_PER_TABLE / 64];
        let whole = (nr > 1 && base >= vma.start && base + nr * PAGE_SIZE <= vma.end)
            .then(|| pt.pte_run_walked(w, va, base, nr as usize))
            .flatten()
            .and_then(|run| run.swap_run(e.ty, first_slot, &mut excl));
        let (at, page0, n, all_excl) = match whole {
            Some(all_excl) => (base, 0, nr, all_excl),
            None => {
                excl = [0; ENTRIES_PER_TABLE / 64];
                excl[0] = e.exclusive as u64;
                (va, idx, 1, e.exclusive)
            }
        };
        let mut attrs = Attrs::user(vma_perms(vma.flags));
        attrs.perms.write &= all_excl;
        attrs.dirty = access == Access::Write && attrs.perms.write;
        pt.set_ptes_over_swap_walked(w, va, at, f.pfn() + page0, n as usize, attrs)
            .expect("swap entries checked above, table present");
        if owner.is_none() {
            f.set_anon_owner(self.id, base >> PAGE_SHIFT);
        }
        f.set_anon_exclusive_bits(page0, &excl[..n.div_ceil(64) as usize]);
        let now = f.add_mapcount_mm(self.id, n as i32);
        if now == n as i32 {
            ctx.thp.stats.inc(f.order(), MthpStat::NrAnon);
        }
        if now as u64 >= nr {
            // As many mappings as pages: most likely every page is mapped
            // again (this kernel keeps no per-page mapcounts to be sure),
            // so the folio leaves the deferred-split queue rather than be
            // split while fully in use.
            ctx.deferred_split_remove(f);
        } else if f.order() >= 2 && (now as u64) < nr && f.entire_mapcount() == 0 {
            ctx.deferred_split_folio(f);
        }
        self.rss_add(n);
        self.swapents_sub(n);
        // No entry names the slots any more: they are freed and the folio
        // leaves the cache (module docs), in this cache-lock hold.
        let uncached = area.map.put_swapin(first_slot + page0, n, first_slot, nr);
        if uncached {
            let out = cache.remove(f.pfn());
            debug_assert!(out.is_some(), "found under this hold");
            f.clear_flags(PageFlags::SWAPCACHE);
            f.set_flags(PageFlags::DIRTY);
        }
        // The mappings' references, the cache's among them if it let go:
        // one atomic, none for a whole 4K hit.
        let refs = n as u32 - uncached as u32;
        if refs > 0 {
            f.get_many(refs);
        }
        Ok(access == Access::Write && !attrs.perms.write)
    }

    /// Gives the swap entry `e` at `va` a private order-0 copy of frame
    /// `src` (a cached folio that cannot be mapped here).
    fn swapin_copy(&self, vma: &Vma, va: u64, e: SwapEntry, src: u64) -> Result<(), Fault> {
        let ctx = self.ctx;
        let new = ctx
            .buddy
            .alloc(0, AllocFlags::USER)
            .map(FolioRef::from_raw)
            .map_err(|_| Fault::Oom)?;
        ctx.mem.copy(new.pa(), src << PAGE_SHIFT, PAGE_SIZE);
        let mut pt = self.lock_pt();
        if pt.lookup(va).entry != Entry::Swap(e) {
            return Ok(());
        }
        pt.take_swap_pte(va);
        let attrs = Attrs::user(vma_perms(vma.flags));
        pt.set_ptes(va, new.pfn(), 1, attrs)
            .expect("entry taken above");
        let f = new.into_raw();
        ctx.rmap_add_new(f, self.id, va, false);
        self.rss_add(1);
        self.swapents_sub(1);
        drop(pt);
        ctx.swap_free_entries(e.ty, e.offset, 1);
        Ok(())
    }
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// swapoff's work in this space (Linux's `unuse_mm`): every swap entry
    /// of area `ty` is swapped in, at the order the swap-in rules allow.
    /// Returns the entries brought back; a read error stops it (the area
    /// then stays on, as Linux's swapoff fails).
    pub fn swapoff_unuse(&self, ty: u8) -> Result<u64, Fault> {
        // The shmem objects this space maps first (Linux's `shmem_unuse`).
        let shmem = self.shmem_swapoff(ty)?;
        if self.swapents() == 0 {
            return Ok(shmem);
        }
        let vmas = self.mmap_read();
        let mut brought = 0;
        for vma in vmas.iter() {
            // One PTE table at a time: collect, then swap in unlocked.
            let mut va = vma.start;
            while va < vma.end {
                let next = (align_down(va, PMD_SIZE) + PMD_SIZE).min(vma.end);
                let found: Vec<(u64, SwapEntry)> = {
                    let pt = self.lock_pt();
                    match pt.pte_run(va, ((next - va) / PAGE_SIZE) as usize) {
                        Some(run) => (0..run.len())
                            .filter_map(|i| match run.entry(i) {
                                Entry::Swap(e) if e.ty == ty => Some((run.va(i), e)),
                                _ => None,
                            })
                            .collect(),
                        None => Vec::new(),
                    }
                };
                for (at, e) in found {
                    let still = self.with_page_table(|pt| pt.lookup(at).entry == Entry::Swap(e));
                    if still {
                        self.do_swap_page(vma, at, Access::Read, e)?;
                        brought += 1;
                    }
                }
                va = next;
            }
        }
        Ok(brought + shmem)
    }
}
