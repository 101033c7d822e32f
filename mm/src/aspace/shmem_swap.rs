//! Swap of shmem folios (Linux 6.12's `shmem_writepage`,
//! `shmem_swapin_folio` and `shmem_unuse`): the pages of `MAP_SHARED`
//! anonymous memory, memfds, tmpfs files and System V segments go to swap
//! under reclaim and `MADV_PAGEOUT`, and come back on access.
//!
//! # Finding the object of a folio
//! A shmem folio's head keeps its first index in the owner word (set
//! whenever it enters a cache); its object is looked for among the
//! objects the address spaces of `mms` map, and the cache must still hold
//! that folio at that index.  A folio of an object no space maps (a
//! memfd or tmpfs file only read and written) is found among the objects
//! files hold, which the kernel's reclaim passes in
//! ([`MmCtx::shrink_node_files`]), so it is reclaimed in LRU order with
//! the rest, as Linux's LRU reaches it through `folio->mapping`.  Its mappings are found the
//! way truncate and collapse find them: every VMA of every space that
//! maps the object's index range ([`Mm::shmem_ranges`]).
//!
//! # Swap-out ([`shmem_pageout`])
//! Never for an object under `SHM_LOCK`, an mlocked folio or a folio in a
//! `VM_LOCKED` VMA, nor without an active swap area.  The folio is locked
//! and unmapped from every space (its entries simply cleared, as Linux's
//! `try_to_unmap` of a file folio: a later access faults it back from
//! the cache); anyone else holding it keeps it.  A naturally aligned run
//! of slots of the folio's order takes it whole; without one a large
//! folio is split to order 0 in the cache first, which Linux 6.12 does
//! not count in `swpout_fallback`, and each piece goes out alone in the
//! same call.  The folio enters the swap cache, a swap entry of the same
//! order replaces it in the object's cache (`Shmem:` drops), the folio is
//! written by the anonymous path's writer ([`super::swap::swap_writepage`]:
//! `pswpout`, per-size `swpout`) and freed unless a swap-in took it
//! meanwhile.  A write error puts it back into the object's cache.
//!
//! # Swap-in ([`MmCtx::shmem_swapin`])
//! Order 0, as Linux 6.12: a large swap entry is split into order-0
//! entries first, the page is read into a new folio (through the swap
//! cache, which serialises two swap-ins of one slot), the folio replaces
//! the entry in the object's cache and the slot is freed (`pswpin`).  A
//! folio still in the swap cache (its write-out not finished) comes back
//! whole when it matches the entry, else its page is copied.  Faults,
//! `read`/`write` on the object, collapse and swapoff all come here.

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_ORDER};
use crate::paging::PagingArch;
use crate::physmem::buddy::AllocFlags;
use crate::physmem::folio::{Folio, FolioRef};
use crate::physmem::frame_flags::PageFlags;
use crate::shmem::{Shmem, ShmemSwap, SwapSlots};
use crate::swap::cache::{key, unkey};
use crate::thp::{MthpStat, VmEvent};
use crate::vma::VmaSet;

use super::ctx::MmCtx;
use super::lru::test_clear_young_in;
use super::swap::{Pageout, swap_writepage};
use super::{Fault, Mm};

impl<'a> ShmemSwap<'a> for MmCtx<'a> {
    fn swap_in(&self, obj: &Shmem<'a>, index: u64) -> bool {
        self.shmem_swapin(obj, index).is_ok()
    }

    fn free_slots(&self, ty: u8, slot: u64, nr: u64) {
        self.swap_free_entries(ty, slot, nr);
    }
}

/// The object caching the shmem folio `f` among those the spaces of `mms`
/// map, with the folio's first index.
fn object_of<'a, A: PagingArch>(mms: &[&Mm<'a, A>], f: Folio<'a>) -> Option<(Arc<Shmem<'a>>, u64)> {
    let index = f.owner_raw();
    for m in mms {
        let objs: Vec<Arc<Shmem<'a>>> = m.shmem.lock().values().cloned().collect();
        for o in objs {
            if let Some(first) = o.caches(index, f.pfn()) {
                return Some((o, first));
            }
        }
    }
    None
}

/// Where a space maps object pages (one VMA's part of an object range):
/// what [`Mm::shmem_ranges`] lists.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShmemRange {
    /// The addresses mapping the pages, `[start, end)`.
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Where the range's first object page `first` is or would be mapped.
    pub(crate) fva: u64,
    /// The VMA is `VM_LOCKED`.
    pub(crate) locked: bool,
    /// A `MAP_SHARED` VMA.  A private one maps the object's pages
    /// read-only beside its own anonymous copies, which an unmap of the
    /// object's pages must leave alone ([`Mm::zap_file_pages`]).
    pub(crate) shared: bool,
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// The ranges of this space that map the object pages `[first, end)`
    /// of object `id`.  The one walk from object pages to mappings
    /// (truncate, hole punch, collapse, reclaim).
    pub(crate) fn shmem_ranges(vmas: &VmaSet, id: u64, first: u64, end: u64) -> Vec<ShmemRange> {
        let mut out = Vec::new();
        for v in vmas.iter().filter(|v| v.shmem == Some(id)) {
            let (vs, ve) = (v.pgoff, v.pgoff + (v.len() >> PAGE_SHIFT));
            let (s, e) = (first.max(vs), end.min(ve));
            if s < e {
                let a = v.start + ((s - vs) << PAGE_SHIFT);
                let b = v.start + ((e - vs) << PAGE_SHIFT);
                out.push(ShmemRange {
                    start: a,
                    end: b,
                    fva: a.wrapping_sub((s - first) << PAGE_SHIFT),
                    locked: v.flags.contains(crate::vma::VmFlags::LOCKED),
                    shared: v.flags.contains(crate::vma::VmFlags::SHARED),
                });
            }
        }
        out
    }

    /// Unmaps the object's pages in `r` (the caller holds the page-table
    /// lock `pt`): every entry of a shared VMA, only the page-cache
    /// entries of a private one (its copies stay).
    pub(crate) fn shmem_zap(
        &self,
        pt: &mut crate::paging::PageTable<'a, A>,
        r: &ShmemRange,
        free_tables: bool,
    ) {
        if r.shared {
            self.zap_range(pt, r.start, r.end, free_tables);
        } else {
            self.zap_file_pages(pt, r.start, r.end);
        }
    }
}

/// [`super::lru::folio_referenced`] for a shmem folio: the spaces of
/// `mms` with a young mapping of it (cleared on the way).  An object not
/// found, or a space whose mmap lock is busy, counts as one reference
/// (keep the folio this round).
pub(crate) fn shmem_referenced<'a, A: PagingArch>(mms: &[&Mm<'a, A>], f: Folio<'a>) -> usize {
    let Some((obj, first)) = object_of(mms, f) else {
        return 1;
    };
    let end = first + f.nr_pages();
    let mut spaces = 0;
    for m in mms {
        let Some(vmas) = m.mmap_try_read() else {
            spaces += 1;
            continue;
        };
        let ranges = Mm::<A>::shmem_ranges(&vmas, obj.id(), first, end);
        if ranges.is_empty() {
            continue;
        }
        let mut pt = m.lock_pt();
        let mut young = false;
        for r in ranges {
            young |= test_clear_young_in(&mut pt, f, r.fva, r.start, r.end);
        }
        spaces += young as usize;
    }
    spaces
}

/// Pages out the shmem folio `folio` (held by the caller: an LRU
/// isolation or `MADV_PAGEOUT`), unmapping it from the spaces of `mms`
/// (see the module docs).  On [`Pageout::Freed`] the caller's reference
/// is the last one.
pub(crate) fn shmem_pageout<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    folio: &FolioRef<'a>,
) -> Pageout {
    let Some(m0) = mms.first() else {
        return Pageout::Kept;
    };
    let Some((obj, _)) = object_of(mms, **folio) else {
        return Pageout::Kept;
    };
    shmem_pageout_of(m0.ctx, mms, &obj, folio)
}

/// [`shmem_pageout`] of a folio of the object `obj` (which no space of
/// `mms` need map: [`MmCtx::shrink_node_files`]).
pub(crate) fn shmem_pageout_of<'a, A: PagingArch>(
    ctx: &'a MmCtx<'a>,
    mms: &[&Mm<'a, A>],
    obj: &Arc<Shmem<'a>>,
    folio: &FolioRef<'a>,
) -> Pageout {
    let f = **folio;
    if !ctx.swap.active() || f.is_mlocked() || obj.unevictable() {
        return Pageout::Kept;
    }
    let Some(first) = obj.caches(f.owner_raw(), f.pfn()) else {
        return Pageout::Kept;
    };
    let Some(lock) = f.try_lock() else {
        return Pageout::Kept;
    };
    if obj.caches(first, f.pfn()) != Some(first) {
        return Pageout::Kept;
    }
    let nr = f.nr_pages();
    // Unmap from every space (the fault finds the folio locked and
    // retries, so nothing maps it again until it is unlocked).
    if f.is_mapped() {
        for m in mms {
            let Some(vmas) = m.mmap_try_read() else {
                return Pageout::Kept;
            };
            let ranges = Mm::<A>::shmem_ranges(&vmas, obj.id(), first, first + nr);
            if ranges.iter().any(|r| r.locked) {
                return Pageout::Kept;
            }
            if ranges.is_empty() {
                continue;
            }
            let mut pt = m.lock_pt();
            for r in &ranges {
                m.shmem_zap(&mut pt, r, false);
            }
        }
    }
    // Mapped elsewhere (a space not in `mms`) or held by someone else:
    // keep it (the mappings gone refault it from the cache).
    if f.is_mapped() || f.refcount() != 2 {
        return Pageout::Kept;
    }
    let order = f.order();
    let Some((ty, slot)) = ctx.swap.alloc(order) else {
        if order == 0 {
            return Pageout::Kept;
        }
        // No aligned run: split in the cache and write the pieces out one
        // by one (not counted in `swpout_fallback` by Linux 6.12).
        let Ok(others) = obj.split_cached(first, lock) else {
            return Pageout::Kept;
        };
        ctx.thp.stats.inc(order, MthpStat::Split);
        if order == PMD_ORDER {
            ctx.thp.stats.count(VmEvent::ThpSplitPage);
        }
        let mut freed = 0;
        for (_, p) in others {
            let r = p.get_ref();
            if let Pageout::Freed(n) = shmem_pageout_of(ctx, mms, obj, &r) {
                freed += n;
            }
        }
        return match shmem_pageout_of(ctx, mms, obj, folio) {
            Pageout::Freed(n) => Pageout::Freed(n + freed),
            _ => Pageout::Split,
        };
    };
    let Some(area) = ctx.swap.area(ty) else {
        return Pageout::Kept;
    };
    if !ctx.swap.cache.insert(key(ty, slot), f.pfn(), nr) {
        area.map.put_cache(slot, nr);
        return Pageout::Kept;
    }
    // The object's swap entry holds one count per slot.
    area.map.dup_many(slot, nr);
    let slots = SwapSlots { ty, slot, nr };
    let Some(cache_ref) = obj.swap_out_replace(first, f.pfn(), slots, ctx) else {
        ctx.swap.cache.remove(f.pfn());
        area.map.put(slot, nr);
        area.map.put_cache(slot, nr);
        return Pageout::Kept;
    };
    // The page cache's reference becomes the swap cache's.
    let _ = cache_ref.into_raw();
    f.set_flags(PageFlags::SWAPCACHE | PageFlags::DIRTY);
    if swap_writepage(ctx, &area, slot, f).is_err() {
        // Back into the object's cache: the data is only in memory.
        ctx.swap.cache.remove(f.pfn());
        f.clear_flags(PageFlags::SWAPCACHE);
        f.set_flags(PageFlags::DIRTY);
        if obj
            .swap_in_replace(first, slots, FolioRef::from_raw(f))
            .is_ok()
        {
            area.map.put(slot, nr);
        }
        area.map.put_cache(slot, nr);
        drop(lock);
        return Pageout::IoError;
    }
    // Freed unless a swap-in took it from the swap cache meanwhile (it
    // then moves it back into the object's cache itself).
    let out = super::swap::release_after_writeback(ctx, &area, f, slot, false);
    drop(lock);
    out
}

impl<'a> MmCtx<'a> {
    /// Brings page `index` of `obj` back from swap (see the module docs);
    /// `Ok` also when it is no longer swapped out.  `Oom` without memory,
    /// `Sigbus` on a read error.
    pub fn shmem_swapin(&self, obj: &Shmem<'a>, index: u64) -> Result<(), Fault> {
        let Some((first, s)) = obj.find_swap(index) else {
            return Ok(());
        };
        let Some(area) = self.swap.area(s.ty) else {
            return Err(Fault::Sigbus);
        };
        let k = key(s.ty, s.slot + (index - first));
        let mut held: Option<FolioRef<'a>> = None;
        let hit = self.swap.cache.lookup_get(k, |pfn| {
            if let Some(f) = self.folio(pfn) {
                held = Some(f.get_ref());
            }
        });
        if let (Some(c), Some(f)) = (hit, held) {
            let lock = f.lock_sleeping();
            if !f.test(PageFlags::SWAPCACHE) || self.swap.cache.slot_of(f.pfn()) != Some(c.first) {
                // Moved back or freed meanwhile: look again.
                return Ok(());
            }
            if c.first == key(s.ty, s.slot) && c.nr == s.nr {
                // The whole folio comes back (its write-out is over).
                if self.swap.cache.remove(f.pfn()).is_none() {
                    return Ok(());
                }
                f.clear_flags(PageFlags::SWAPCACHE);
                f.set_flags(PageFlags::DIRTY);
                let cache_ref = FolioRef::from_raw(*f);
                if obj.swap_in_replace(first, s, cache_ref).is_ok() {
                    area.map.put(s.slot, s.nr);
                }
                area.map.put_cache(s.slot, s.nr);
                drop(lock);
                return Ok(());
            }
            // A cached folio that is not this entry's whole: copy the page.
            let src = f.pfn() + (unkey(k).1 - unkey(c.first).1);
            drop(lock);
            let Some(s1) = obj.split_swap_entry(index) else {
                return Ok(());
            };
            let new = self
                .buddy
                .alloc(0, AllocFlags::USER)
                .map(FolioRef::from_raw)
                .map_err(|_| Fault::Oom)?;
            self.mem.copy(new.pa(), src << PAGE_SHIFT, PAGE_SIZE);
            // Ours goes before the slot does: the cached folio is freed
            // with its last slot.
            drop(f);
            self.lru_add(*new);
            if obj.swap_in_replace(index, s1, new).is_ok() {
                self.swap_free_entries(s1.ty, s1.slot, 1);
            }
            return Ok(());
        }
        // Read it: order 0, the large entry split first.
        let Some(s1) = obj.split_swap_entry(index) else {
            return Ok(());
        };
        let f = self
            .buddy
            .alloc(0, AllocFlags::USER)
            .map(FolioRef::from_raw)
            .map_err(|_| Fault::Oom)?;
        if !area.map.take_cache(s1.slot, 1) {
            return Ok(()); // cached by someone else meanwhile: look again
        }
        if !self.swap.cache.insert(key(s1.ty, s1.slot), f.pfn(), 1) {
            area.map.put_cache(s1.slot, 1);
            return Ok(());
        }
        let lock = f.try_lock().expect("a new folio is unlocked");
        f.set_flags(PageFlags::SWAPCACHE);
        f.get(); // the swap cache's
        self.lru_add(*f);
        let read = area.io.read(self.mem, s1.slot, f.pa(), 1);
        self.swap.cache.remove(f.pfn());
        f.clear_flags(PageFlags::SWAPCACHE);
        let cache_ref = FolioRef::from_raw(*f);
        if read.is_err() {
            area.map.put_cache(s1.slot, 1);
            drop(lock);
            drop(cache_ref);
            return Err(Fault::Sigbus);
        }
        let stats = &self.thp.stats;
        stats.count(VmEvent::PswpIn);
        stats.inc(0, MthpStat::Swpin);
        if obj.swap_in_replace(index, s1, cache_ref).is_ok() {
            area.map.put(s1.slot, 1);
        }
        area.map.put_cache(s1.slot, 1);
        drop(lock);
        Ok(())
    }

    /// swapoff's work on one object (Linux's `shmem_unuse_inode`): every
    /// page of area `ty` comes back (order 0).  Returns the pages
    /// brought back.
    pub fn shmem_unuse(&self, obj: &Shmem<'a>, ty: u8) -> Result<u64, Fault> {
        let mut n = 0;
        for (first, s) in obj.swap_entries() {
            if s.ty != ty {
                continue;
            }
            for i in first..first + s.nr {
                self.shmem_swapin(obj, i)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// [`MmCtx::shmem_unuse`] on every object this space maps.
    pub fn shmem_swapoff(&self, ty: u8) -> Result<u64, Fault> {
        let objs: Vec<Arc<Shmem<'a>>> = self.shmem.lock().values().cloned().collect();
        let mut n = 0;
        for o in objs {
            n += self.ctx.shmem_unuse(&o, ty)?;
        }
        Ok(n)
    }
}
