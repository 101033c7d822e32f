//! Shared memory objects: the page cache of `MAP_SHARED|MAP_ANONYMOUS`
//! mappings and memfds (Linux's shmem inode with its `address_space`).
//!
//! A [`Shmem`] is a size (Linux's `i_size`) and a map from page index to
//! the folio caching it.  A large folio is one entry, keyed by its first
//! index, which is always a multiple of its page count (as Linux's
//! multi-index xarray entries), so finding the folio of an index is one
//! ordered-map lookup of the greatest key at or below it.
//!
//! # References
//! The cache holds one reference on every folio it contains (Linux's
//! page-cache reference); each mapping holds its own, as for anonymous
//! folios (`aspace::rmap`).  Objects are shared through `Arc`: every
//! address space mapping one keeps a clone (see `Mm`'s shmem table), and a
//! memfd's open file keeps another.  When the last clone goes, the cache's
//! references drop and the folios return to the allocator.
//!
//! Shmem folios carry [`PageFlags::SHMEM`] (from insertion until they are
//! freed) and never `ANON`, so the anon paths (migration, NUMA balancing,
//! `move_pages`, the anonymous collapse, the deferred-split queue) leave
//! them alone.  khugepaged and `MADV_COLLAPSE` collapse them through the
//! cache instead (`collapse.rs`).  The head's owner word holds the
//! folio's first index (reclaim finds its object from there).
//!
//! # Swap
//! Every folio entering the cache goes on the anonymous LRU (shmem is
//! swap-backed, as Linux's), and leaves it when freed.  Reclaim and
//! `MADV_PAGEOUT` write folios to swap (`aspace::shmem_swap`): a
//! [`SwapSlots`] entry of the folio's size then takes its place in the
//! object (Linux's value entries in the xarray), holding one count on
//! each slot.  Every lookup handles them: a fault, [`Shmem::read`],
//! [`Shmem::write`] and [`Shmem::zero_bytes`] bring the page back through
//! the object's [`ShmemSwap`] (set by the first swap-out; order 0, the
//! large entry split first, as 6.12); truncate, hole punch and the
//! object's end free the slots; a collapse swaps its range in (or, for
//! khugepaged, refuses beyond `max_ptes_swap`).  Swapped pages stay
//! charged to a tmpfs `size=` (Linux's `info->alloced`) but leave
//! `Shmem:`.  `SHM_LOCK` ([`Shmem::set_unevictable`]) keeps them in.
//!
//! # Locking
//! One spin lock per object around the map and the size, taken with no
//! page-table lock held or under one (never the other way round: nothing
//! here takes a page-table lock).  It is a [`crate::sync::SpinLock`]
//! (preemption off while held) because it is taken both ways: a holder
//! preempted with it (a `read` of a tmpfs file) while another CPU spins on
//! it under a page-table lock that a third task spins on would stall both
//! CPUs, the swap map's deadlock of 4313a36.

pub(crate) mod collapse;
pub mod policy;
pub mod quota;
#[cfg(test)]
mod tests;
mod xarray;

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::physmem::folio::FolioRef;
use crate::physmem::frame_flags::PageFlags;

/// `F_SEAL_SEAL`: no more seals may be added.
pub const F_SEAL_SEAL: u32 = 0x0001;
/// `F_SEAL_SHRINK`: the size may not decrease.
pub const F_SEAL_SHRINK: u32 = 0x0002;
/// `F_SEAL_GROW`: the size may not increase.
pub const F_SEAL_GROW: u32 = 0x0004;
/// `F_SEAL_WRITE`: no writes (nor new writable shared mappings).
pub const F_SEAL_WRITE: u32 = 0x0008;
/// `F_SEAL_FUTURE_WRITE`: no new writes, existing mappings keep theirs.
pub const F_SEAL_FUTURE_WRITE: u32 = 0x0010;
/// `F_SEAL_EXEC` (6.3): the exec bits may not change.
pub const F_SEAL_EXEC: u32 = 0x0020;
/// Every seal Linux 6.12 knows.
pub const F_SEAL_ALL: u32 =
    F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC;

/// Largest object size (Linux's `MAX_LFS_FILESIZE` on 64-bit).
pub const MAX_SIZE: u64 = i64::MAX as u64;

/// System-wide shmem gauges, in pages (Linux's `NR_SHMEM`,
/// `NR_SHMEM_THPS`, `NR_SHMEM_PMDMAPPED`).
#[derive(Debug, Default)]
pub struct ShmemGauges {
    /// Pages in every shmem page cache (`Shmem:`).
    pub pages: AtomicU64,
    /// Of those, pages of PMD-size folios (`ShmemHugePages:`).
    pub pmd_pages: AtomicU64,
    /// Pages of shmem folios mapped by at least one PMD, once per folio
    /// (`ShmemPmdMapped:`).
    pub pmd_mapped: AtomicU64,
}

impl ShmemGauges {
    /// All zero.
    pub const fn new() -> Self {
        ShmemGauges {
            pages: AtomicU64::new(0),
            pmd_pages: AtomicU64::new(0),
            pmd_mapped: AtomicU64::new(0),
        }
    }

    pub(crate) fn add_folio(&self, nr: u64, sign: i64) {
        let apply = |a: &AtomicU64, n: u64| {
            if sign > 0 {
                a.fetch_add(n, Relaxed);
            } else {
                a.fetch_sub(n, Relaxed);
            }
        };
        apply(&self.pages, nr);
        if nr == 1 << crate::addr::PMD_ORDER {
            apply(&self.pmd_pages, nr);
        }
    }
}

/// A swap entry in the cache: the pages of a folio written to swap
/// (Linux's value entry in the shmem xarray, multi-index when `nr > 1`).
/// The entry holds one count on each of its slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwapSlots {
    /// Swap area type.
    pub ty: u8,
    /// First slot (aligned to `nr`).
    pub slot: u64,
    /// Pages (a power of two; the entry's first index is aligned to it).
    pub nr: u64,
}

/// What a shmem object needs from the swap layer once some of its pages
/// went to swap (set by the swap-out, `aspace::shmem_swap`): bringing a
/// page back for `read`/`write`, and dropping the counts of slots the
/// object no longer names (truncate, hole punch, the object's end).
pub trait ShmemSwap<'a>: Sync {
    /// Brings page `index` of `obj` back into its cache (order 0, as
    /// Linux 6.12's `shmem_swapin_folio`).  False on failure (no memory,
    /// I/O error); true also when the entry went meanwhile.
    fn swap_in(&self, obj: &Shmem<'a>, index: u64) -> bool;
    /// Drops one count from each of the `nr` slots from `slot` of area
    /// `ty`.
    fn free_slots(&self, ty: u8, slot: u64, nr: u64);
}

/// [`Shmem::find_unlocked`]'s refusal: the folio is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A shared memory object (see the module doc).
pub struct Shmem<'a> {
    id: u64,
    /// The `huge=` option of the tmpfs mount the object's file lives on;
    /// `None` for anonymous shmem (`MAP_SHARED|MAP_ANONYMOUS`, memfd,
    /// System V), which follows the per-size `shmem_enabled` knobs.
    mount_huge: Option<policy::ShmemHuge>,
    /// Bumped (under the lock) whenever a folio leaves the cache or is
    /// replaced: a fault that saw the same value before its lookup and
    /// under its page-table lock knows its folio is still cached
    /// ([`Self::generation`]).
    removals: AtomicU64,
    inner: crate::sync::SpinLock<Inner<'a>>,
    /// Where the cached pages are counted, if anywhere.
    gauges: Option<&'a ShmemGauges>,
    /// The limits of the tmpfs mount the object's file lives on: the
    /// cached pages are charged there, and the file's inode, which the
    /// object gives back when it goes.
    quota: Option<Arc<quota::ShmemQuota>>,
    /// `SHM_LOCK`ed (Linux's `VM_LOCKED` on the shmem inode): never
    /// swapped out.
    unevictable: AtomicBool,
}

struct Inner<'a> {
    /// Bytes (`i_size`).
    size: u64,
    /// Page index → folio (holding the cache's reference), large folios
    /// as one entry.
    folios: xarray::FolioIndex<'a>,
    /// Pages cached (sum of the folios' page counts).
    pages: u64,
    /// `F_SEAL_*` bits.
    seals: u32,
    /// First index → the swap entry caching those pages (never
    /// overlapping a folio of `folios`).
    swapped: BTreeMap<u64, SwapSlots>,
    /// Pages in `swapped` (Linux's `info->swapped`).
    swapped_pages: u64,
    /// The swap layer, set by the first swap-out.
    backend: Option<&'a dyn ShmemSwap<'a>>,
}

/// What removing a range from the cache did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Truncated {
    /// Folios removed whole.
    pub removed: u64,
    /// Large folios cut by the range that stayed whole (their bytes in the
    /// range were zeroed; see [`Shmem::remove_range`]).
    pub zeroed: u64,
    /// Large folios cut by the range that were split to order 0 and lost
    /// their pieces inside it ([`Shmem::truncate_range`]).
    pub split: u64,
}

impl<'a> Shmem<'a> {
    /// A new, empty object of `size` bytes, with seals `seals` (memfd
    /// without `MFD_ALLOW_SEALING` starts with `F_SEAL_SEAL`).
    pub fn new(size: u64, seals: u32) -> Self {
        Self::with_gauges(size, seals, None)
    }

    /// [`Self::new`], counting the cached pages in `gauges`.
    pub fn with_gauges(size: u64, seals: u32, gauges: Option<&'a ShmemGauges>) -> Self {
        Self::build(size, seals, gauges, None, None)
    }

    fn build(
        size: u64,
        seals: u32,
        gauges: Option<&'a ShmemGauges>,
        mount_huge: Option<policy::ShmemHuge>,
        quota: Option<Arc<quota::ShmemQuota>>,
    ) -> Self {
        Shmem {
            gauges,
            quota,
            id: NEXT_ID.fetch_add(1, Relaxed),
            mount_huge,
            removals: AtomicU64::new(0),
            unevictable: AtomicBool::new(false),
            inner: crate::sync::SpinLock::new(Inner {
                size,
                folios: xarray::FolioIndex::new(),
                pages: 0,
                seals,
                swapped: BTreeMap::new(),
                swapped_pages: 0,
                backend: None,
            }),
        }
    }

    /// An empty file of a tmpfs mounted with `huge`, counted in
    /// `gauges`; sealed with `F_SEAL_SEAL` as Linux's non-memfd shmem
    /// files.  `quota` is the mount's, with this file's inode already
    /// charged (given back when the object goes).
    pub fn on_mount(
        gauges: Option<&'a ShmemGauges>,
        huge: policy::ShmemHuge,
        quota: Option<Arc<quota::ShmemQuota>>,
    ) -> Self {
        Self::build(0, F_SEAL_SEAL, gauges, Some(huge), quota)
    }

    /// The limits of the object's tmpfs mount (`None`: no mount, or a
    /// memfd / anonymous object, which Linux's internal mount leaves
    /// unlimited).
    pub fn quota(&self) -> Option<&Arc<quota::ShmemQuota>> {
        self.quota.as_ref()
    }

    /// Whether `nr` more pages fit in the mount's `size=` now (a fault
    /// tries lower orders, down to 0, when a large folio does not).
    pub fn quota_allows(&self, nr: u64) -> bool {
        self.quota.as_ref().is_none_or(|q| q.allows(nr))
    }

    fn uncharge(&self, nr: u64) {
        if let Some(q) = &self.quota {
            q.uncharge(nr);
        }
    }

    /// The `huge=` option of the object's tmpfs mount (`None`: anonymous
    /// shmem).
    pub fn mount_huge(&self) -> Option<policy::ShmemHuge> {
        self.mount_huge
    }

    /// The removal generation: unchanged between two reads means no
    /// folio left the cache or was replaced in between.
    pub fn generation(&self) -> u64 {
        self.removals.load(core::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.removals
            .fetch_add(1, core::sync::atomic::Ordering::AcqRel);
    }

    /// A unique identifier (the VMAs mapping the object name it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.lock().size
    }

    /// Size in pages, rounded up.
    pub fn size_pages(&self) -> u64 {
        self.size().div_ceil(PAGE_SIZE)
    }

    /// Pages cached.
    pub fn cached_pages(&self) -> u64 {
        self.inner.lock().pages
    }

    /// The seals.
    pub fn seals(&self) -> u32 {
        self.inner.lock().seals
    }

    /// `F_ADD_SEALS` once the caller checked the file may take them: EPERM
    /// when `F_SEAL_SEAL` is set, EINVAL for unknown bits.  (`F_SEAL_WRITE`
    /// with writable shared mappings, EBUSY on Linux, is the caller's
    /// check: it knows the mappings.)
    pub fn add_seals(&self, seals: u32) -> Result<(), crate::abi::errno::Errno> {
        use crate::abi::errno::Errno;
        if seals & !F_SEAL_ALL != 0 {
            return Err(Errno::EINVAL);
        }
        let mut g = self.inner.lock();
        if g.seals & F_SEAL_SEAL != 0 {
            return Err(Errno::EPERM);
        }
        g.seals |= seals;
        Ok(())
    }

    /// Set the size (`ftruncate`).  Returns the old size.  Cached folios
    /// past the new end are *not* removed here: the caller unmaps them
    /// from every mapping first and then calls [`Self::remove_range`].
    pub fn set_size(&self, size: u64) -> u64 {
        let mut g = self.inner.lock();
        core::mem::replace(&mut g.size, size)
    }

    /// The folio caching page `index`, with a reference for the caller,
    /// and the folio's first index.
    pub fn find(&self, index: u64) -> Option<(u64, FolioRef<'a>)> {
        let g = self.inner.lock();
        g.find(index).map(|(first, f)| (first, f.get_ref()))
    }

    /// [`Self::find`] for a fault: `Err` if the folio is locked (a
    /// collapse is replacing it: the access retries, as Linux's fault
    /// waits on the folio lock), without taking a reference then, so the
    /// retries do not hold the collapse up.
    pub fn find_unlocked(&self, index: u64) -> Result<Option<(u64, FolioRef<'a>)>, Locked> {
        let g = self.inner.lock();
        match g.find(index) {
            Some((_, f)) if f.folio().test(PageFlags::LOCKED) => Err(Locked),
            hit => Ok(hit.map(|(first, f)| (first, f.get_ref()))),
        }
    }

    /// Orders of `orders` (bit mask) whose naturally aligned block of
    /// indices around `index` holds no cached folio at all (Linux's
    /// `shmem_suitable_orders`: an order with any entry in its block is
    /// not a candidate).
    pub fn empty_orders(&self, index: u64, orders: u32) -> u32 {
        let g = self.inner.lock();
        let mut out = 0;
        let mut o = orders;
        while o != 0 {
            let order = o.trailing_zeros();
            o &= o - 1;
            let nr = 1u64 << order;
            let first = index & !(nr - 1);
            if !g.overlaps(first, nr) {
                out |= 1 << order;
            }
        }
        out
    }

    /// Insert the new folio `f` (holding the allocation's reference, which
    /// becomes the cache's) at its naturally aligned block around `index`.
    /// Gives `f` back when any index of the block is cached already (a
    /// racing fault filled it; the caller then looks up again), or when
    /// its pages do not fit in the mount's `size=` (the lookup then finds
    /// nothing: ENOSPC, SIGBUS for a fault).
    pub fn insert(&self, index: u64, f: FolioRef<'a>) -> Result<u64, FolioRef<'a>> {
        let nr = f.nr_pages();
        let first = index & !(nr - 1);
        let mut g = self.inner.lock();
        // A swapped-out page there: the caller swaps it in instead.
        if g.swap_overlaps(first, nr) {
            return Err(f);
        }
        if self.quota.as_ref().is_some_and(|q| !q.try_charge(nr)) {
            return Err(f);
        }
        // Flags first: `f` is unreachable until inserted.  Given back, it
        // is freed by the caller (the allocator rewrites a frame's flags).
        f.set_flags(PageFlags::SHMEM | PageFlags::UPTODATE | PageFlags::DIRTY);
        f.set_owner_raw(first);
        let folio = f.folio();
        if let Err(f) = g.folios.insert(first, f) {
            self.uncharge(nr);
            return Err(f);
        }
        g.pages += nr;
        if let Some(c) = self.gauges {
            c.add_folio(nr, 1);
        }
        lru_add(folio);
        Ok(first)
    }

    /// `SHM_LOCK` (true) / `SHM_UNLOCK`: a locked object is never swapped
    /// out (its pages stay on the LRU, as Linux's unevictable mapping is
    /// only skipped by `shmem_writepage`).
    pub fn set_unevictable(&self, on: bool) {
        self.unevictable.store(on, Relaxed);
    }

    /// Whether `SHM_LOCK` holds the object in memory.
    pub fn unevictable(&self) -> bool {
        self.unevictable.load(Relaxed)
    }

    /// Pages of the object out on swap (Linux's `info->swapped`).
    pub fn swapped_pages(&self) -> u64 {
        self.inner.lock().swapped_pages
    }

    /// Pages out on swap among the indices `[start, end)` (smaps's `Swap:`
    /// of a shared shmem VMA, Linux's `shmem_partial_swap_usage`).
    pub fn swapped_in(&self, start: u64, end: u64) -> u64 {
        let g = self.inner.lock();
        if g.swapped_pages == 0 {
            return 0;
        }
        g.swap_keys_overlapping(start, end)
            .into_iter()
            .map(|k| {
                let s = g.swapped[&k];
                (k + s.nr).min(end) - k.max(start)
            })
            .sum()
    }

    /// The swap entry covering page `index`, with its first index.
    pub fn find_swap(&self, index: u64) -> Option<(u64, SwapSlots)> {
        self.inner.lock().swap_find(index)
    }

    /// Every swap entry, with its first index (swapoff's walk).
    pub fn swap_entries(&self) -> Vec<(u64, SwapSlots)> {
        let g = self.inner.lock();
        g.swapped.iter().map(|(&k, &s)| (k, s)).collect()
    }

    /// Swap-out's cache step: the folio `pfn` caching `[first, first +
    /// slots.nr)` leaves the cache and the swap entry `slots` takes its
    /// place (the slots' counts for the entry are the caller's).  Returns
    /// the cache's reference; `None` if the folio is no longer there.
    pub(crate) fn swap_out_replace(
        &self,
        first: u64,
        pfn: u64,
        slots: SwapSlots,
        backend: &'a dyn ShmemSwap<'a>,
    ) -> Option<FolioRef<'a>> {
        let mut g = self.inner.lock();
        if g.folios
            .get(first)
            .is_none_or(|f| f.pfn() != pfn || f.nr_pages() != slots.nr)
        {
            return None;
        }
        let f = g.folios.remove(first).expect("checked above");
        self.bump();
        g.pages -= slots.nr;
        if let Some(c) = self.gauges {
            c.add_folio(slots.nr, -1);
        }
        g.swapped.insert(first, slots);
        g.swapped_pages += slots.nr;
        g.backend = Some(backend);
        Some(f)
    }

    /// Swap-in's first step for page `index`: a large swap entry covering
    /// it is split into order-0 entries (Linux 6.12's
    /// `shmem_split_large_entry`: swap-in is order 0).  Returns the entry
    /// of `index` then.
    pub(crate) fn split_swap_entry(&self, index: u64) -> Option<SwapSlots> {
        let mut g = self.inner.lock();
        let (first, s) = g.swap_find(index)?;
        if s.nr > 1 {
            g.swapped.remove(&first);
            for i in 0..s.nr {
                g.swapped.insert(
                    first + i,
                    SwapSlots {
                        ty: s.ty,
                        slot: s.slot + i,
                        nr: 1,
                    },
                );
            }
        }
        g.swap_find(index).map(|(_, s)| s)
    }

    /// Swap-in's last step: the folio `f` (holding what becomes the
    /// cache's reference) replaces the swap entry `slots` at `first`.
    /// Gives `f` back if that entry is no longer there (truncated, or
    /// brought back by someone else); the caller then drops the entry's
    /// slot counts only on success.
    pub(crate) fn swap_in_replace(
        &self,
        first: u64,
        slots: SwapSlots,
        f: FolioRef<'a>,
    ) -> Result<(), FolioRef<'a>> {
        let mut g = self.inner.lock();
        if g.swapped.get(&first) != Some(&slots) || f.nr_pages() != slots.nr {
            return Err(f);
        }
        g.swapped.remove(&first);
        g.swapped_pages -= slots.nr;
        f.set_flags(PageFlags::SHMEM | PageFlags::UPTODATE | PageFlags::DIRTY);
        f.set_owner_raw(first);
        if let Err(f) = g.folios.insert(first, f) {
            unreachable!("a swap entry's pages are never cached: {:?}", f.pfn());
        }
        g.pages += slots.nr;
        if let Some(c) = self.gauges {
            c.add_folio(slots.nr, 1);
        }
        Ok(())
    }

    /// The cache's own invariants (the address-space checker's part):
    /// every folio sits at its aligned first index, which its owner word
    /// names; swap entries are
    /// aligned, never overlap a folio, and add up to the swapped count.
    pub fn check_cache(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        let g = self.inner.lock();
        let mut pages = 0;
        for (i, f) in g.folios.iter() {
            pages += f.nr_pages();
            if !i.is_multiple_of(f.nr_pages()) || f.owner_raw() != i {
                return Err(format!(
                    "folio {:#x} at index {i}: owner {}",
                    f.pfn(),
                    f.owner_raw()
                ));
            }
            if !f.test(PageFlags::SHMEM) {
                return Err(format!("folio {:#x} at index {i} lacks SHMEM", f.pfn()));
            }
        }
        if pages != g.pages {
            return Err(format!("{pages} pages cached, counted {}", g.pages));
        }
        let mut swapped = 0;
        for (&i, s) in &g.swapped {
            swapped += s.nr;
            if !i.is_multiple_of(s.nr) || !s.slot.is_multiple_of(s.nr) {
                return Err(format!("swap entry {s:?} at index {i} misaligned"));
            }
            if g.folios.overlaps(i, s.nr) {
                return Err(format!("swap entry {s:?} at index {i} overlaps a folio"));
            }
        }
        if swapped != g.swapped_pages {
            return Err(format!(
                "{swapped} pages swapped, counted {}",
                g.swapped_pages
            ));
        }
        Ok(())
    }

    /// Whether the folio `pfn` caches page `index`; its first index.
    pub(crate) fn caches(&self, index: u64, pfn: u64) -> Option<u64> {
        let g = self.inner.lock();
        g.find(index)
            .filter(|(_, f)| f.pfn() == pfn)
            .map(|(first, _)| first)
    }

    /// Swap-out's split (Linux's `shmem_writepage` when no aligned run of
    /// slots is free): the unmapped large folio at `first`, locked by the
    /// caller (`lock`), is split to order 0 in place in the cache; the
    /// pieces join the LRU beside it.  The caller's reference (the only
    /// one beside the cache's) names the first piece; each piece holds the
    /// cache's.
    /// Returns the other pieces with their indices (unlocked), or the lock
    /// back if the folio is no longer cached there.
    pub(crate) fn split_cached(
        &self,
        first: u64,
        lock: crate::physmem::folio::FolioLockGuard<'a>,
    ) -> Result<
        Vec<(u64, crate::physmem::folio::Folio<'a>)>,
        crate::physmem::folio::FolioLockGuard<'a>,
    > {
        let f = lock.folio();
        let nr = f.nr_pages();
        let mut g = self.inner.lock();
        if g.folios.get(first).is_none_or(|c| c.pfn() != f.pfn()) {
            return Err(lock);
        }
        self.bump();
        // The split wants the caller's reference alone: the cache's goes
        // now and is taken again on the first piece below.
        drop(g.folios.remove(first).expect("checked above"));
        if let Some(c) = self.gauges {
            c.add_folio(nr, -1);
        }
        let subs = lock.split_meta(&alloc::vec![0u32; nr as usize]);
        let heads: Vec<u32> = subs.iter().map(|s| s.folio().idx()).collect();
        f.allocator().lru().split_pieces(f.allocator(), &heads);
        let mut others = Vec::new();
        for (i, sub) in subs.iter().enumerate() {
            let p = sub.folio();
            let idx = first + i as u64;
            p.set_owner_raw(idx);
            p.set_flags(PageFlags::SHMEM | PageFlags::UPTODATE | PageFlags::DIRTY);
            if let Some(c) = self.gauges {
                c.add_folio(1, 1);
            }
            // Each other piece's one reference is the cache's.
            let cache_ref = if i == 0 {
                p.get_ref()
            } else {
                FolioRef::from_raw(p)
            };
            if g.folios.insert(idx, cache_ref).is_err() {
                unreachable!("a piece of the folio just removed");
            }
            if i > 0 {
                others.push((idx, p));
            }
        }
        drop(g);
        drop(subs);
        Ok(others)
    }

    /// Every cached folio with its first index (references for the caller).
    pub fn folios(&self) -> Vec<(u64, FolioRef<'a>)> {
        let g = self.inner.lock();
        g.folios.iter().map(|(i, f)| (i, f.clone())).collect()
    }

    /// Remove the pages `[start, end)` (page indices) from the cache, as
    /// Linux's `shmem_undo_range` once every mapping of the range is gone:
    /// folios inside the range are dropped whole; a large folio the range
    /// cuts keeps its place and has the bytes of the range zeroed (through
    /// `mem`) — the caller may first split it with
    /// [`Self::replace_split`] so that its pieces inside are dropped.
    /// The removed folios are returned (with the cache's references) so
    /// the caller drops them with no lock held.
    pub fn remove_range(
        &self,
        start: u64,
        end: u64,
        mem: &dyn crate::physmem::phys::PhysMem,
    ) -> (Truncated, Vec<FolioRef<'a>>) {
        let mut out = Truncated::default();
        let mut gone = Vec::new();
        let mut g = self.inner.lock();
        self.bump();
        let freed = g.remove_swap_range(start, end);
        if let Some(q) = &self.quota {
            q.uncharge(freed.iter().map(|s| s.nr).sum());
        }
        let keys: Vec<u64> = g.keys_overlapping(start, end);
        for first in keys {
            let nr = g.folios.get(first).expect("listed").nr_pages();
            if first >= start && first + nr <= end {
                let f = g.folios.remove(first).expect("listed");
                g.pages -= nr;
                self.uncharge(nr);
                if let Some(c) = self.gauges {
                    c.add_folio(nr, -1);
                }
                gone.push(f);
                out.removed += 1;
            } else {
                let f = &g.folios.get(first).expect("listed");
                let (s, e) = (start.max(first), end.min(first + nr));
                mem.zero(f.pa() + ((s - first) << PAGE_SHIFT), (e - s) << PAGE_SHIFT);
                out.zeroed += 1;
            }
        }
        let backend = g.backend;
        drop(g);
        // The slots go back with no lock of the object held.
        if let Some(b) = backend {
            for s in freed {
                b.free_slots(s.ty, s.slot, s.nr);
            }
        }
        (out, gone)
    }

    /// The index span `[start, end)` widened to whole folios: what must be
    /// unmapped from every mapping before [`Self::truncate_range`] so that
    /// a large folio the range cuts can be split.
    pub fn folio_span(&self, start: u64, end: u64) -> (u64, u64) {
        let g = self.inner.lock();
        let s = g.find(start).map_or(start, |(first, _)| first);
        let e = match end.checked_sub(1).and_then(|l| g.find(l)) {
            Some((first, f)) => (first + f.nr_pages()).max(end),
            None => end,
        };
        (s, e)
    }

    /// Truncate or punch the pages `[start, end)` out of the cache, as
    /// Linux 6.12's `shmem_undo_range` with `truncate_inode_partial_folio`,
    /// once every mapping of [`Self::folio_span`] is gone: folios inside
    /// are dropped whole; a large folio the range cuts has the range's
    /// bytes zeroed, then is split to order 0 and its pieces inside the
    /// range dropped.  If it cannot be split (someone else holds a
    /// reference: a fault in progress), it stays whole with the range
    /// reading as zero, as Linux.  The dropped folios come back with the
    /// cache's references, to drop with no lock held; `Truncated::split`
    /// counts the folios split.
    pub fn truncate_range(
        &self,
        start: u64,
        end: u64,
        mem: &dyn crate::physmem::phys::PhysMem,
    ) -> (Truncated, Vec<FolioRef<'a>>) {
        let (mut out, mut gone) = self.remove_range(start, end, mem);
        let mut g = self.inner.lock();
        self.bump();
        for first in g.keys_overlapping(start, end) {
            let nr = g.folios.get(first).expect("listed").nr_pages();
            if nr == 1 || (first >= start && first + nr <= end) {
                continue;
            }
            let f = g.folios.get(first).expect("listed").folio();
            // Only the cache's reference, and nobody mapping it; checked
            // and locked under the LRU lock (isolation takes speculative
            // references, never of a locked folio).
            if f.is_mapped() {
                continue;
            }
            let Some(lock) = f.allocator().lru().lock_folio_checked(f, 1) else {
                continue;
            };
            let old = g.folios.remove(first).expect("listed");
            let _ = old.into_raw();
            if let Some(c) = self.gauges {
                c.add_folio(nr, -1);
            }
            let orders = alloc::vec![0u32; nr as usize];
            let subs = lock.split_meta(&orders);
            // The pieces join the LRU where the folio was.
            let heads: Vec<u32> = subs.iter().map(|s| s.folio().idx()).collect();
            f.allocator().lru().split_pieces(f.allocator(), &heads);
            // The first piece keeps the cache's reference, each other one
            // holds a new one: every piece's reference becomes its own.
            let pieces: Vec<_> = subs.iter().map(|s| FolioRef::from_raw(s.folio())).collect();
            drop(subs);
            for (i, p) in pieces.into_iter().enumerate() {
                let idx = first + i as u64;
                p.set_owner_raw(idx);
                if idx >= start && idx < end {
                    g.pages -= 1;
                    self.uncharge(1);
                    gone.push(p);
                } else {
                    if let Some(c) = self.gauges {
                        c.add_folio(1, 1);
                    }
                    if g.folios.insert(idx, p).is_err() {
                        unreachable!("a piece of the folio just removed");
                    }
                }
            }
            out.split += 1;
            out.zeroed -= 1;
        }
        (out, gone)
    }

    /// Replace the cached large folio at `first` by the folios it was just
    /// split into (`pieces`, each with one reference for the cache, in
    /// index order, covering the same pages).
    pub fn replace_split(&self, first: u64, pieces: Vec<FolioRef<'a>>) {
        let mut g = self.inner.lock();
        self.bump();
        let old = g.folios.remove(first);
        if let (Some(c), Some(o)) = (self.gauges, old.as_ref()) {
            c.add_folio(o.nr_pages(), -1);
            for p in &pieces {
                c.add_folio(p.nr_pages(), 1);
            }
        }
        debug_assert!(old.is_some(), "no folio at index {first}");
        // The split turned the old reference into the head piece's.
        if let Some(old) = old {
            let _ = old.into_raw();
        }
        let mut i = first;
        for p in pieces {
            p.set_flags(PageFlags::SHMEM | PageFlags::UPTODATE | PageFlags::DIRTY);
            p.set_owner_raw(i);
            let nr = p.nr_pages();
            if g.folios.insert(i, p).is_err() {
                unreachable!("a piece of the folio just removed");
            }
            i += nr;
        }
    }

    /// Zero the bytes `[off, off + len)` of cached pages (holes stay
    /// holes): the partial pages at the ends of a punched hole.
    ///
    /// A page out on swap is brought back first, as Linux's
    /// `shmem_get_partial_folio` does (else its old bytes would come back
    /// with it later); if that fails it keeps them.
    pub fn zero_bytes(&self, off: u64, len: u64, mem: &dyn crate::physmem::phys::PhysMem) {
        let mut g = self.inner.lock();
        let end = off.saturating_add(len);
        let mut pos = off;
        let mut tried = u64::MAX;
        while pos < end {
            let index = pos >> PAGE_SHIFT;
            let in_page = pos & (PAGE_SIZE - 1);
            let chunk = (PAGE_SIZE - in_page).min(end - pos);
            match g.find(index) {
                Some((first, f)) => {
                    mem.zero(f.pa() + ((index - first) << PAGE_SHIFT) + in_page, chunk);
                }
                None if tried != index && g.swap_find(index).is_some() => {
                    let backend = g.backend;
                    drop(g);
                    tried = index;
                    if let Some(b) = backend {
                        b.swap_in(self, index);
                    }
                    g = self.inner.lock();
                    continue;
                }
                None => {}
            }
            pos += chunk;
        }
    }

    /// Read `buf.len()` bytes at byte offset `off` (holes read as zeroes),
    /// clamped to the size; returns the bytes read (`pread` on a memfd).
    ///
    /// A page out on swap is brought back first (Linux's `shmem_file_read_iter`
    /// through `shmem_get_folio`); if that fails the read stops short
    /// there.
    pub fn read(&self, off: u64, buf: &mut [u8], mem: &dyn crate::physmem::phys::PhysMem) -> usize {
        let mut g = self.inner.lock();
        if off >= g.size {
            return 0;
        }
        let n = (buf.len() as u64).min(g.size - off) as usize;
        let mut done = 0usize;
        while done < n {
            let pos = off + done as u64;
            let index = pos >> PAGE_SHIFT;
            let in_page = (pos & (PAGE_SIZE - 1)) as usize;
            let chunk = (PAGE_SIZE as usize - in_page).min(n - done);
            match g.find(index) {
                Some((first, f)) => {
                    let pa = f.pa() + ((index - first) << PAGE_SHIFT) + in_page as u64;
                    mem.read(pa, &mut buf[done..done + chunk]);
                }
                None if g.swap_find(index).is_some() => {
                    let backend = g.backend;
                    drop(g);
                    if !backend.is_some_and(|b| b.swap_in(self, index)) {
                        return done;
                    }
                    g = self.inner.lock();
                    continue;
                }
                None => buf[done..done + chunk].fill(0),
            }
            done += chunk;
        }
        n
    }

    /// Make sure page `index` is cached for a write, allocating an
    /// order-0 folio (zeroed) with `alloc` if it is a hole.  Writes never
    /// allocate large folios (Linux 6.12's `write()` on shmem uses the
    /// huge policy only through the internal mount's PMD order; this
    /// kernel keeps writes at 4K).  False when `alloc` fails or the
    /// mount's `size=` is reached.
    fn fill_for_write(&self, index: u64, alloc: &mut dyn FnMut() -> Option<FolioRef<'a>>) -> bool {
        loop {
            let g = self.inner.lock();
            if g.find(index).is_some() {
                return true;
            }
            if g.swap_find(index).is_none() {
                break;
            }
            let backend = g.backend;
            drop(g);
            if !backend.is_some_and(|b| b.swap_in(self, index)) {
                return false;
            }
        }
        if !self.quota_allows(1) {
            return false;
        }
        let Some(f) = alloc() else {
            return false;
        };
        // On Err a racing write or fault cached the page (it serves), or
        // the quota refused it (the next round stops at `quota_allows`).
        let _ = self.insert(index, f);
        true
    }

    /// Write `buf` at byte offset `off`, growing the size past the end
    /// (`pwrite` on a memfd; the caller checked seals and limits).  Holes
    /// get zeroed 4K folios from `alloc`.  Returns the bytes written
    /// (short only when `alloc` fails or the mount's `size=` is reached;
    /// 0 then means ENOMEM, or ENOSPC if [`Self::quota_allows`] says no).
    pub fn write(
        &self,
        off: u64,
        buf: &[u8],
        mem: &dyn crate::physmem::phys::PhysMem,
        alloc: &mut dyn FnMut() -> Option<FolioRef<'a>>,
    ) -> usize {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            let index = pos >> PAGE_SHIFT;
            let in_page = (pos & (PAGE_SIZE - 1)) as usize;
            let chunk = (PAGE_SIZE as usize - in_page).min(buf.len() - done);
            if !self.fill_for_write(index, alloc) {
                break;
            }
            // Copied under the lock, as a lookup: a collapse replacing the
            // folio meanwhile copies it under the same lock, so the bytes
            // land in the folio the cache holds after both
            // (`collapse.rs`).  A truncate racing in between leaves a hole:
            // fill it again.
            let g = self.inner.lock();
            let Some((first, f)) = g.find(index) else {
                continue;
            };
            let pa = f.pa() + ((index - first) << PAGE_SHIFT) + in_page as u64;
            mem.write(pa, &buf[done..done + chunk]);
            drop(g);
            done += chunk;
        }
        if done > 0 {
            let mut g = self.inner.lock();
            g.size = g.size.max(off + done as u64);
        }
        done
    }
}

impl<'a> Inner<'a> {
    fn find(&self, index: u64) -> Option<(u64, &FolioRef<'a>)> {
        self.folios.find(index)
    }

    fn overlaps(&self, first: u64, nr: u64) -> bool {
        self.folios.overlaps(first, nr) || self.swap_overlaps(first, nr)
    }

    fn swap_find(&self, index: u64) -> Option<(u64, SwapSlots)> {
        self.swapped
            .range(..=index)
            .next_back()
            .filter(|&(&f, s)| index < f + s.nr)
            .map(|(&f, &s)| (f, s))
    }

    fn swap_overlaps(&self, first: u64, nr: u64) -> bool {
        !self
            .swap_keys_overlapping(first, first.saturating_add(nr))
            .is_empty()
    }

    /// First indices of the swap entries with a page in `[start, end)`.
    fn swap_keys_overlapping(&self, start: u64, end: u64) -> Vec<u64> {
        if start >= end {
            return Vec::new();
        }
        let head = self.swap_find(start).map(|(f, _)| f);
        head.into_iter()
            .chain(self.swapped.range(start..end).map(|(&k, _)| k))
            .filter(|&k| k >= start || Some(k) == head)
            .fold(Vec::new(), |mut v, k| {
                if v.last() != Some(&k) {
                    v.push(k);
                }
                v
            })
    }

    /// Removes the swap entries of `[start, end)` (a large one the range
    /// cuts is split to order 0 first) and returns them: their slots'
    /// counts are the caller's to drop.
    fn remove_swap_range(&mut self, start: u64, end: u64) -> Vec<SwapSlots> {
        let mut out = Vec::new();
        for k in self.swap_keys_overlapping(start, end) {
            let s = self.swapped.remove(&k).expect("listed");
            if k >= start && k + s.nr <= end {
                self.swapped_pages -= s.nr;
                out.push(s);
                continue;
            }
            for i in 0..s.nr {
                let one = SwapSlots {
                    ty: s.ty,
                    slot: s.slot + i,
                    nr: 1,
                };
                if (start..end).contains(&(k + i)) {
                    self.swapped_pages -= 1;
                    out.push(one);
                } else {
                    self.swapped.insert(k + i, one);
                }
            }
        }
        out
    }

    fn keys_overlapping(&self, start: u64, end: u64) -> Vec<u64> {
        let head = self.find(start).map(|(first, _)| first);
        head.into_iter()
            .chain(
                self.folios
                    .heads_in(start, end)
                    .into_iter()
                    .filter(|&k| Some(k) != head),
            )
            .collect()
    }
}

impl Drop for Shmem<'_> {
    fn drop(&mut self) {
        let g = self.inner.get_mut();
        for (_, f) in g.folios.iter() {
            if let Some(c) = self.gauges {
                c.add_folio(f.nr_pages(), -1);
            }
        }
        if let Some(q) = &self.quota {
            q.uncharge(g.pages + g.swapped_pages);
            q.put_inode();
        }
        // The swap entries' slots go back.
        if let Some(b) = g.backend {
            for s in core::mem::take(&mut g.swapped).into_values() {
                b.free_slots(s.ty, s.slot, s.nr);
            }
        }
        // The cache's references drop with the map.  `SHMEM` stays on the
        // folios (a racing mapping may still hold one, and is accounted as
        // shmem until it goes); the allocator rewrites the flags when a
        // frame is allocated again.
    }
}

/// Puts the new cache folio `f` on the (anonymous, swap-backed) LRU, as
/// Linux's `shmem_add_to_page_cache` caller adds it (`folio_add_lru`).
fn lru_add(f: crate::physmem::folio::Folio<'_>) {
    let a = f.allocator();
    a.lru().add(a, f.idx());
}

impl core::fmt::Debug for Shmem<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let g = self.inner.lock();
        write!(
            f,
            "Shmem {{ id: {}, size: {}, pages: {}, seals: {:#x} }}",
            self.id, g.size, g.pages, g.seals
        )
    }
}
