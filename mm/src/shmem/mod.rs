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
//! freed) and never `ANON`, so the anon
//! paths (swap-out, migration, NUMA balancing, `move_pages`, the anonymous
//! collapse, the deferred-split queue) leave them alone; they are not on
//! the LRU (no shmem reclaim yet).  khugepaged and `MADV_COLLAPSE`
//! collapse them through the cache instead (`collapse.rs`).
//!
//! # Locking
//! One spin lock per object around the map and the size, taken with no
//! page-table lock held or under one (never the other way round: nothing
//! here takes a page-table lock).

pub(crate) mod collapse;
pub mod policy;
pub mod quota;
#[cfg(test)]
mod tests;
mod xarray;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use spin::Mutex;

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
    inner: Mutex<Inner<'a>>,
    /// Where the cached pages are counted, if anywhere.
    gauges: Option<&'a ShmemGauges>,
    /// The limits of the tmpfs mount the object's file lives on: the
    /// cached pages are charged there, and the file's inode, which the
    /// object gives back when it goes.
    quota: Option<Arc<quota::ShmemQuota>>,
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
            inner: Mutex::new(Inner {
                size,
                folios: xarray::FolioIndex::new(),
                pages: 0,
                seals,
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
        if self.quota.as_ref().is_some_and(|q| !q.try_charge(nr)) {
            return Err(f);
        }
        // Flags first: `f` is unreachable until inserted.  Given back, it
        // is freed by the caller (the allocator rewrites a frame's flags).
        f.set_flags(PageFlags::SHMEM | PageFlags::UPTODATE | PageFlags::DIRTY);
        if let Err(f) = g.folios.insert(first, f) {
            self.uncharge(nr);
            return Err(f);
        }
        g.pages += nr;
        if let Some(c) = self.gauges {
            c.add_folio(nr, 1);
        }
        Ok(first)
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
            // Only the cache's reference, and nobody mapping it.
            if f.refcount() != 1 || f.is_mapped() {
                continue;
            }
            let Some(lock) = f.try_lock() else {
                continue;
            };
            let old = g.folios.remove(first).expect("listed");
            let _ = old.into_raw();
            if let Some(c) = self.gauges {
                c.add_folio(nr, -1);
            }
            let orders = alloc::vec![0u32; nr as usize];
            let subs = lock.split_meta(&orders);
            // The first piece keeps the cache's reference, each other one
            // holds a new one: every piece's reference becomes its own.
            let pieces: Vec<_> = subs.iter().map(|s| FolioRef::from_raw(s.folio())).collect();
            drop(subs);
            for (i, p) in pieces.into_iter().enumerate() {
                let idx = first + i as u64;
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
            let nr = p.nr_pages();
            if g.folios.insert(i, p).is_err() {
                unreachable!("a piece of the folio just removed");
            }
            i += nr;
        }
    }

    /// Zero the bytes `[off, off + len)` of cached pages (holes stay
    /// holes): the partial pages at the ends of a punched hole.
    pub fn zero_bytes(&self, off: u64, len: u64, mem: &dyn crate::physmem::phys::PhysMem) {
        let g = self.inner.lock();
        let end = off.saturating_add(len);
        let mut pos = off;
        while pos < end {
            let index = pos >> PAGE_SHIFT;
            let in_page = pos & (PAGE_SIZE - 1);
            let chunk = (PAGE_SIZE - in_page).min(end - pos);
            if let Some((first, f)) = g.find(index) {
                mem.zero(f.pa() + ((index - first) << PAGE_SHIFT) + in_page, chunk);
            }
            pos += chunk;
        }
    }

    /// Read `buf.len()` bytes at byte offset `off` (holes read as zeroes),
    /// clamped to the size; returns the bytes read (`pread` on a memfd).
    pub fn read(&self, off: u64, buf: &mut [u8], mem: &dyn crate::physmem::phys::PhysMem) -> usize {
        let g = self.inner.lock();
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
        if self.inner.lock().find(index).is_some() {
            return true;
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
        self.folios.overlaps(first, nr)
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
            q.uncharge(g.pages);
            q.put_inode();
        }
        // The cache's references drop with the map.  `SHMEM` stays on the
        // folios (a racing mapping may still hold one, and is accounted as
        // shmem until it goes); the allocator rewrites the flags when a
        // frame is allocated again.
    }
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
