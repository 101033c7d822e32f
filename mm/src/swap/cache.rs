//! The swap cache: which folio holds the data of which swap slots, while
//! the folio is being written out, read back, or still shared between a
//! mapping and the slots (Linux's swap cache, `mm/swap_state.c`).
//!
//! A large folio is one entry covering its naturally aligned run of
//! `2^order` slots, so a lookup of any slot of the run finds it.  Each
//! cached folio holds one reference of its own (dropped when it leaves)
//! and its slots carry `HAS_CACHE` in their device's [`SwapMap`](super::map::SwapMap).
//! The head frame has [`PageFlags::SWAPCACHE`](crate::physmem::frame_flags::PageFlags::SWAPCACHE)
//! so the fault and zap paths test membership without the lock; the slot
//! of a cached folio is found through the reverse index, never stored in
//! the frame descriptor (which has no room for it).
//!
//! # Lock
//! One spin lock (`SwapCache::inner`), taken with no page-table lock held
//! or under one; the slot-map locks nest inside it.  Never held across I/O.

use alloc::collections::BTreeMap;

use crate::sync::SpinLock as Mutex;

use crate::paging::SwapEntry;

/// A slot as one key: device type above the offset.
#[inline]
pub const fn key(ty: u8, slot: u64) -> u64 {
    ((ty as u64) << SwapEntry::OFFSET_BITS) | slot
}

/// The type and slot of a key.
#[inline]
pub const fn unkey(k: u64) -> (u8, u64) {
    (
        (k >> SwapEntry::OFFSET_BITS) as u8,
        k & SwapEntry::OFFSET_MASK,
    )
}

#[derive(Default)]
struct Inner {
    /// First slot's key → (head PFN, pages).
    by_slot: BTreeMap<u64, (u64, u64)>,
    /// Head PFN → first slot's key.
    by_pfn: BTreeMap<u64, u64>,
    /// Pages cached (`SwapCached`).
    pages: u64,
}

/// The swap cache of every swap area.
#[derive(Default)]
pub struct SwapCache {
    inner: Mutex<Inner>,
}

/// A cached folio found by [`SwapCache::lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cached {
    /// Head frame of the folio.
    pub pfn: u64,
    /// Pages of the folio.
    pub nr: u64,
    /// Key of its first slot.
    pub first: u64,
}

impl SwapCache {
    pub const fn new() -> Self {
        SwapCache {
            inner: Mutex::new(Inner {
                by_slot: BTreeMap::new(),
                by_pfn: BTreeMap::new(),
                pages: 0,
            }),
        }
    }

    /// The folio caching slot `k` (a key), if any.
    pub fn lookup(&self, k: u64) -> Option<Cached> {
        let g = self.inner.lock();
        let (&first, &(pfn, nr)) = g.by_slot.range(..=k).next_back()?;
        (k < first + nr).then_some(Cached { pfn, nr, first })
    }

    /// [`Self::lookup`], running `get` on the folio's head PFN under the
    /// cache lock: a reference taken there cannot race with
    /// [`Self::remove_if`] freeing the folio.
    pub fn lookup_get(&self, k: u64, get: impl FnOnce(u64)) -> Option<Cached> {
        let g = self.inner.lock();
        let (&first, &(pfn, nr)) = g.by_slot.range(..=k).next_back()?;
        if k >= first + nr {
            return None;
        }
        get(pfn);
        Some(Cached { pfn, nr, first })
    }

    /// [`Self::remove`] if `keep_none()` (run under the cache lock, so no
    /// [`Self::lookup_get`] can take a reference meanwhile) says nobody
    /// else holds the folio.
    pub fn remove_if(&self, pfn: u64, keep_none: impl FnOnce() -> bool) -> Option<(u64, u64)> {
        let mut g = self.inner.lock();
        let &first = g.by_pfn.get(&pfn)?;
        if !keep_none() {
            return None;
        }
        g.by_pfn.remove(&pfn);
        let (_, nr) = g.by_slot.remove(&first).expect("both indexes agree");
        g.pages -= nr;
        Some((first, nr))
    }

    /// The first slot's key of the cached folio with head `pfn`.
    pub fn slot_of(&self, pfn: u64) -> Option<u64> {
        self.inner.lock().by_pfn.get(&pfn).copied()
    }

    /// Records folio `pfn` of `nr` pages as caching the slots from `first`.
    /// Returns false (and records nothing) if any of them is cached
    /// already or the folio is.
    pub fn insert(&self, first: u64, pfn: u64, nr: u64) -> bool {
        let mut g = self.inner.lock();
        if g.by_pfn.contains_key(&pfn) {
            return false;
        }
        if let Some((&f, &(_, n))) = g.by_slot.range(..first + nr).next_back()
            && f + n > first
        {
            return false;
        }
        g.by_slot.insert(first, (pfn, nr));
        g.by_pfn.insert(pfn, first);
        g.pages += nr;
        true
    }

    /// Moves the slots cached by folio `old` to folio `new` (migration),
    /// in one step under the cache lock, so a lookup finds one or the
    /// other.  False if `old` caches nothing or `new` already does.
    pub fn replace(&self, old: u64, new: u64) -> bool {
        let mut g = self.inner.lock();
        if g.by_pfn.contains_key(&new) {
            return false;
        }
        let Some(first) = g.by_pfn.remove(&old) else {
            return false;
        };
        g.by_pfn.insert(new, first);
        g.by_slot.get_mut(&first).expect("both indexes agree").0 = new;
        true
    }

    /// Forgets folio `pfn`; returns its first slot's key and pages.
    pub fn remove(&self, pfn: u64) -> Option<(u64, u64)> {
        let mut g = self.inner.lock();
        let first = g.by_pfn.remove(&pfn)?;
        let (_, nr) = g.by_slot.remove(&first).expect("both indexes agree");
        g.pages -= nr;
        Some((first, nr))
    }

    /// Pages in the cache (`SwapCached`).
    pub fn pages(&self) -> u64 {
        self.inner.lock().pages
    }

    /// Cached folios with slots on device `ty`, as (head PFN, first key):
    /// what swapoff must bring in and drop.
    pub fn on_device(&self, ty: u8) -> alloc::vec::Vec<(u64, u64)> {
        let g = self.inner.lock();
        g.by_slot
            .range(key(ty, 0)..key(ty + 1, 0))
            .map(|(&k, &(pfn, _))| (pfn, k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_entries_cover_their_slots() {
        let c = SwapCache::new();
        assert!(c.insert(key(1, 16), 1000, 16));
        assert!(!c.insert(key(1, 20), 2000, 1), "overlaps");
        assert!(c.insert(key(1, 32), 2000, 1));
        assert_eq!(c.lookup(key(1, 31)).map(|x| x.pfn), Some(1000));
        assert_eq!(c.lookup(key(1, 15)), None);
        assert_eq!(c.lookup(key(0, 20)), None);
        assert_eq!(c.pages(), 17);
        assert_eq!(c.on_device(1).len(), 2);
        assert_eq!(c.remove(1000), Some((key(1, 16), 16)));
        assert_eq!(c.lookup(key(1, 20)), None);
        assert_eq!(unkey(key(5, 77)), (5, 77));
    }
}
