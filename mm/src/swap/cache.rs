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
//! # Indexes
//! Lookups by slot (every swap-entry fault) and removals (every swap-in
//! that frees its slots) must be cheap at every folio size, so neither
//! index is an ordered tree:
//! * by slot: per device type, one table of [`CLUSTER_SLOTS`] words per
//!   swap cluster (Linux 6.18's per-cluster swap table), allocated when
//!   the cluster's first slot is cached and freed with its last.  Every
//!   slot of a cached run holds the folio's head PFN, the slot's distance
//!   from the run's first and the run's length, so a lookup of any slot
//!   is one load.
//! * by head PFN: an open-addressing hash table ([`PfnIndex`]), for the
//!   paths that start from a folio (swap-out of a cached folio, freeing,
//!   migration).
//!
//! # Lock
//! One spin lock (`SwapCache::inner`), taken with no page-table lock held
//! or under one; the slot-map locks nest inside it.  Never held across I/O.

use alloc::vec;
use alloc::vec::Vec;

use crate::sync::SpinLock as Mutex;

use crate::paging::SwapEntry;
use crate::swap::map::CLUSTER_SLOTS;

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

// A slot word: the head PFN, the slot's distance from the run's first
// slot and the run's length less one; 0 is an empty slot.
const PFN_BITS: u32 = 40;
const RUN_BITS: u32 = 11;
/// Longest run one cache entry can cover (a PMD folio is 512 pages).
const MAX_RUN: u64 = 1 << RUN_BITS;
const VALID: u64 = 1 << 63;
/// On the word of an order-0 folio swap readahead read and no fault has
/// found yet (Linux's `PG_readahead`, kept here: the frame's flags word
/// has no bit left).
const READAHEAD: u64 = 1 << 62;

const fn slot_word(pfn: u64, delta: u64, nr: u64) -> u64 {
    VALID | pfn | (delta << PFN_BITS) | ((nr - 1) << (PFN_BITS + RUN_BITS))
}

/// (head PFN, distance from the first slot, pages) of a non-empty word.
const fn unslot_word(w: u64) -> (u64, u64, u64) {
    let mask = MAX_RUN - 1;
    let w = w & !READAHEAD;
    (
        w & ((1 << PFN_BITS) - 1),
        (w >> PFN_BITS) & mask,
        ((w >> (PFN_BITS + RUN_BITS)) & mask) + 1,
    )
}

/// The slot words of one swap cluster.
struct Table {
    words: alloc::boxed::Box<[u64]>,
    /// Non-empty words: the table is freed when none is left.
    used: u32,
}

/// Head PFN → first slot's key, open addressing with linear probing
/// (a PFN is never `EMPTY`).  At most half full, so probes stay short.
#[derive(Default)]
struct PfnIndex {
    /// (head PFN, key); `EMPTY` PFN for a free bucket.
    buckets: Vec<(u64, u64)>,
    len: usize,
}

const EMPTY: u64 = u64::MAX;

impl PfnIndex {
    const fn new() -> Self {
        PfnIndex {
            buckets: Vec::new(),
            len: 0,
        }
    }

    #[inline]
    fn home(&self, pfn: u64) -> usize {
        // Fibonacci hashing: the top bits of the product.
        let bits = self.buckets.len().trailing_zeros();
        (pfn.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    /// The bucket holding `pfn`, if any.
    fn find(&self, pfn: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut i = self.home(pfn);
        loop {
            match self.buckets[i].0 {
                p if p == pfn => return Some(i),
                EMPTY => return None,
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn get(&self, pfn: u64) -> Option<u64> {
        self.find(pfn).map(|i| self.buckets[i].1)
    }

    /// Records `pfn` (not present) → `k`.
    fn insert(&mut self, pfn: u64, k: u64) {
        if (self.len + 1) * 2 > self.buckets.len() {
            let cap = (self.buckets.len() * 2).max(64);
            let old = core::mem::replace(&mut self.buckets, vec![(EMPTY, 0); cap]);
            for (p, v) in old {
                if p != EMPTY {
                    self.place(p, v);
                }
            }
        }
        self.place(pfn, k);
        self.len += 1;
    }

    fn place(&mut self, pfn: u64, k: u64) {
        let mask = self.buckets.len() - 1;
        let mut i = self.home(pfn);
        while self.buckets[i].0 != EMPTY {
            i = (i + 1) & mask;
        }
        self.buckets[i] = (pfn, k);
    }

    /// Forgets `pfn`; returns its key.  Backward-shift deletion: the
    /// entries after the hole that would be found through it move up, so
    /// no tombstones build up.
    fn remove(&mut self, pfn: u64) -> Option<u64> {
        let mut hole = self.find(pfn)?;
        let k = self.buckets[hole].1;
        let mask = self.buckets.len() - 1;
        let mut i = (hole + 1) & mask;
        loop {
            let p = self.buckets[i].0;
            if p == EMPTY {
                break;
            }
            let home = self.home(p);
            // Movable unless its home lies in (hole, i] (cyclically).
            if (i.wrapping_sub(home) & mask) >= (i.wrapping_sub(hole) & mask) {
                self.buckets[hole] = self.buckets[i];
                hole = i;
            }
            i = (i + 1) & mask;
        }
        self.buckets[hole].0 = EMPTY;
        self.len -= 1;
        Some(k)
    }
}

struct Inner {
    /// Per device type, per cluster: the slot words (see the module docs).
    by_slot: Vec<Vec<Option<Table>>>,
    /// Head PFN → first slot's key.
    by_pfn: PfnIndex,
    /// The last table emptied, all zero, kept for the next cluster that
    /// needs one: a swap-in from the disk caches and frees one folio per
    /// fault, which would otherwise allocate and free a table each time.
    spare: Option<alloc::boxed::Box<[u64]>>,
    /// Pages cached (`SwapCached`).
    pages: u64,
}

impl Inner {
    /// The word of slot key `k` (0: not cached).
    #[inline]
    fn word(&self, k: u64) -> u64 {
        let (ty, slot) = unkey(k);
        let c = (slot / CLUSTER_SLOTS) as usize;
        match self.by_slot.get(ty as usize).and_then(|t| t.get(c)) {
            Some(Some(t)) => t.words[(slot % CLUSTER_SLOTS) as usize],
            _ => 0,
        }
    }

    /// The cached entry covering slot key `k`.
    #[inline]
    fn lookup(&self, k: u64) -> Option<Cached> {
        let w = self.word(k);
        if w == 0 {
            return None;
        }
        let (pfn, delta, nr) = unslot_word(w);
        Some(Cached {
            pfn,
            nr,
            first: k - delta,
            readahead: w & READAHEAD != 0,
        })
    }

    /// Sets the readahead bit of cached slot `k`'s word to `bit`
    /// (`READAHEAD` or 0); whether it was set.
    fn mark(&mut self, k: u64, bit: u64) -> bool {
        let (ty, slot) = unkey(k);
        let c = (slot / CLUSTER_SLOTS) as usize;
        match self.by_slot.get_mut(ty as usize).and_then(|t| t.get_mut(c)) {
            Some(Some(t)) => {
                let w = &mut t.words[(slot % CLUSTER_SLOTS) as usize];
                let was = *w & READAHEAD != 0;
                if *w != 0 {
                    *w = (*w & !READAHEAD) | bit;
                }
                was
            }
            _ => false,
        }
    }

    /// Whether any of the `nr` slots from key `first` is cached (a table
    /// at a time: an absent table caches none of its slots).
    fn any_cached(&self, first: u64, nr: u64) -> bool {
        let (ty, slot0) = unkey(first);
        let Some(tables) = self.by_slot.get(ty as usize) else {
            return false;
        };
        let mut s = slot0;
        while s < slot0 + nr {
            let lo = s % CLUSTER_SLOTS;
            let n = (CLUSTER_SLOTS - lo).min(slot0 + nr - s);
            if let Some(Some(t)) = tables.get((s / CLUSTER_SLOTS) as usize)
                && t.words[lo as usize..(lo + n) as usize]
                    .iter()
                    .any(|&w| w != 0)
            {
                return true;
            }
            s += n;
        }
        false
    }

    /// Writes the words of the `nr` slots from key `first` (cluster by
    /// cluster) for folio `pfn`, with `mark` (0 or `READAHEAD`),
    /// allocating tables as needed.
    fn fill(&mut self, first: u64, nr: u64, pfn: u64, mark: u64) {
        let (ty, slot0) = unkey(first);
        let tables = {
            let ty = ty as usize;
            if self.by_slot.len() <= ty {
                self.by_slot.resize_with(ty + 1, Vec::new);
            }
            &mut self.by_slot[ty]
        };
        let mut s = slot0;
        while s < slot0 + nr {
            let c = (s / CLUSTER_SLOTS) as usize;
            let lo = (s % CLUSTER_SLOTS) as usize;
            let n = ((CLUSTER_SLOTS - lo as u64).min(slot0 + nr - s)) as usize;
            if tables.len() <= c {
                tables.resize_with(c + 1, || None);
            }
            let t = tables[c].get_or_insert_with(|| Table {
                words: self
                    .spare
                    .take()
                    .unwrap_or_else(|| vec![0u64; CLUSTER_SLOTS as usize].into_boxed_slice()),
                used: 0,
            });
            let d0 = s - slot0;
            for (i, w) in t.words[lo..lo + n].iter_mut().enumerate() {
                *w = slot_word(pfn, d0 + i as u64, nr) | mark;
            }
            t.used += n as u32;
            s += n as u64;
        }
    }

    /// Empties the words of the `nr` slots from key `first`, all cached,
    /// freeing (or keeping as the spare) each table left empty.
    fn clear(&mut self, first: u64, nr: u64) {
        let (ty, slot0) = unkey(first);
        let tables = &mut self.by_slot[ty as usize];
        let mut s = slot0;
        while s < slot0 + nr {
            let c = (s / CLUSTER_SLOTS) as usize;
            let lo = (s % CLUSTER_SLOTS) as usize;
            let n = ((CLUSTER_SLOTS - lo as u64).min(slot0 + nr - s)) as usize;
            let t = tables[c].as_mut().expect("cached slots have a table");
            for w in &mut t.words[lo..lo + n] {
                *w = 0;
            }
            t.used -= n as u32;
            if t.used == 0 {
                let empty = tables[c].take().map(|t| t.words);
                if self.spare.is_none() {
                    self.spare = empty;
                }
            }
            s += n as u64;
        }
    }

    /// Forgets the folio with head `pfn`; returns its first slot's key
    /// and pages.
    fn remove(&mut self, pfn: u64) -> Option<(u64, u64)> {
        let first = self.by_pfn.remove(pfn)?;
        let (_, _, nr) = unslot_word(self.word(first));
        self.clear(first, nr);
        self.pages -= nr;
        Some((first, nr))
    }
}

/// The cache lock held ([`SwapCache::lock_nested`]).
pub struct CacheGuard<'l>(crate::sync::PtLockGuard<'l, Inner>);

impl CacheGuard<'_> {
    /// [`SwapCache::lookup`] under this hold.
    #[inline]
    pub fn lookup(&self, k: u64) -> Option<Cached> {
        self.0.lookup(k)
    }

    /// [`SwapCache::remove`] under this hold.
    pub fn remove(&mut self, pfn: u64) -> Option<(u64, u64)> {
        self.0.remove(pfn)
    }

    /// [`SwapCache::take_readahead`] under this hold.
    pub fn take_readahead(&mut self, k: u64) -> bool {
        self.0.mark(k, 0)
    }
}

/// The swap cache of every swap area.
pub struct SwapCache {
    inner: Mutex<Inner>,
}

impl Default for SwapCache {
    fn default() -> Self {
        Self::new()
    }
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
    /// Read by swap readahead and not found by a fault since
    /// ([`SwapCache::take_readahead`]).
    pub readahead: bool,
}

impl SwapCache {
    pub const fn new() -> Self {
        SwapCache {
            inner: Mutex::new(Inner {
                by_slot: Vec::new(),
                by_pfn: PfnIndex::new(),
                spare: None,
                pages: 0,
            }),
        }
    }

    /// The folio caching slot `k` (a key), if any.
    pub fn lookup(&self, k: u64) -> Option<Cached> {
        self.inner.lock().lookup(k)
    }

    /// The cache lock for a caller that holds a page-table lock (so runs
    /// with preemption off already): the swap-in of a cache hit, which
    /// looks its folio up, maps it and takes it out of the cache in one
    /// hold, so the folio cannot leave meanwhile and needs no reference
    /// of the caller's.
    pub fn lock_nested(&self) -> CacheGuard<'_> {
        CacheGuard(self.inner.lock_nested())
    }

    /// [`Self::lookup`], running `get` on the folio's head PFN under the
    /// cache lock: a reference taken there cannot race with
    /// [`Self::remove_if`] freeing the folio.
    pub fn lookup_get(&self, k: u64, get: impl FnOnce(u64)) -> Option<Cached> {
        let g = self.inner.lock();
        let c = g.lookup(k)?;
        get(c.pfn);
        Some(c)
    }

    /// [`Self::remove`] if `keep_none()` (run under the cache lock, so no
    /// [`Self::lookup_get`] can take a reference meanwhile) says nobody
    /// else holds the folio.
    pub fn remove_if(&self, pfn: u64, keep_none: impl FnOnce() -> bool) -> Option<(u64, u64)> {
        let mut g = self.inner.lock();
        g.by_pfn.find(pfn)?;
        if !keep_none() {
            return None;
        }
        g.remove(pfn)
    }

    /// The first slot's key of the cached folio with head `pfn`.
    pub fn slot_of(&self, pfn: u64) -> Option<u64> {
        self.inner.lock().by_pfn.get(pfn)
    }

    /// Records folio `pfn` of `nr` pages as caching the slots from `first`.
    /// Returns false (and records nothing) if any of them is cached
    /// already or the folio is.
    pub fn insert(&self, first: u64, pfn: u64, nr: u64) -> bool {
        self.insert_marked(first, pfn, nr, 0)
    }

    /// [`Self::insert`] for the order-0 folio `pfn` swap readahead reads
    /// into slot `k`, marked readahead.
    pub fn insert_readahead(&self, k: u64, pfn: u64) -> bool {
        self.insert_marked(k, pfn, 1, READAHEAD)
    }

    /// [`Self::insert`] with `mark` (0 or `READAHEAD`) on the words.
    fn insert_marked(&self, first: u64, pfn: u64, nr: u64, mark: u64) -> bool {
        let fits = (1..=MAX_RUN).contains(&nr) && pfn < 1 << PFN_BITS;
        debug_assert!(fits, "{nr} pages at PFN {pfn:#x}");
        if !fits {
            return false;
        }
        let mut g = self.inner.lock();
        if g.by_pfn.find(pfn).is_some() || g.any_cached(first, nr) {
            return false;
        }
        g.fill(first, nr, pfn, mark);
        g.by_pfn.insert(pfn, first);
        g.pages += nr;
        true
    }

    /// Clears the readahead mark of slot `k`'s folio: whether it was set
    /// (the first fault to find a readahead folio counts the hit).
    pub fn take_readahead(&self, k: u64) -> bool {
        self.inner.lock().mark(k, 0)
    }

    /// Moves the slots cached by folio `old` to folio `new` (migration),
    /// in one step under the cache lock, so a lookup finds one or the
    /// other.  False if `old` caches nothing or `new` already does.
    pub fn replace(&self, old: u64, new: u64) -> bool {
        let mut g = self.inner.lock();
        if g.by_pfn.find(new).is_some() || new >= 1 << PFN_BITS {
            return false;
        }
        let Some(first) = g.by_pfn.remove(old) else {
            return false;
        };
        let (_, _, nr) = unslot_word(g.word(first));
        g.clear(first, nr);
        g.fill(first, nr, new, 0);
        g.by_pfn.insert(new, first);
        true
    }

    /// Forgets folio `pfn`; returns its first slot's key and pages.
    pub fn remove(&self, pfn: u64) -> Option<(u64, u64)> {
        self.inner.lock().remove(pfn)
    }

    /// Pages in the cache (`SwapCached`).
    pub fn pages(&self) -> u64 {
        self.inner.lock().pages
    }

    /// Cached folios with slots on device `ty`, as (head PFN, first key),
    /// by slot: what swapoff must bring in and drop.
    pub fn on_device(&self, ty: u8) -> Vec<(u64, u64)> {
        let g = self.inner.lock();
        let mut out = Vec::new();
        let Some(tables) = g.by_slot.get(ty as usize) else {
            return out;
        };
        for (c, t) in tables.iter().enumerate() {
            let Some(t) = t else { continue };
            for (i, &w) in t.words.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                let (pfn, delta, _) = unslot_word(w);
                if delta == 0 {
                    out.push((pfn, key(ty, c as u64 * CLUSTER_SLOTS + i as u64)));
                }
            }
        }
        out
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

    /// A readahead folio is marked until the first fault takes the mark;
    /// the mark does not disturb the run fields, and migration drops it.
    #[test]
    fn readahead_mark_is_taken_once() {
        let c = SwapCache::new();
        assert!(c.insert_readahead(key(2, 7), 3000));
        assert!(!c.insert_readahead(key(2, 7), 3001), "slot cached");
        let got = c.lookup(key(2, 7)).expect("cached");
        assert_eq!((got.pfn, got.nr, got.first), (3000, 1, key(2, 7)));
        assert!(got.readahead);
        assert_eq!(c.slot_of(3000), Some(key(2, 7)));
        assert!(c.take_readahead(key(2, 7)));
        assert!(!c.take_readahead(key(2, 7)), "taken once");
        assert!(!c.lookup(key(2, 7)).expect("still cached").readahead);
        assert!(!c.take_readahead(key(2, 8)), "not cached");
        assert!(c.insert_readahead(key(2, 9), 3002));
        assert!(c.replace(3002, 3003));
        assert!(!c.lookup(key(2, 9)).expect("moved").readahead);
        assert_eq!(c.remove(3000), Some((key(2, 7), 1)));
        assert_eq!(c.remove(3003), Some((key(2, 9), 1)));
        assert_eq!(c.pages(), 0);
    }

    /// Many folios in and out, in a scrambled order, against a plain
    /// list: every slot finds its folio (or none) and nothing is left.
    #[test]
    fn agrees_with_a_list_through_churn() {
        let c = SwapCache::new();
        let mut live: Vec<(u64, u64, u64)> = Vec::new(); // (first key, pfn, nr)
        let mut x = 12345u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..4000u64 {
            let r = rnd();
            if r % 3 != 0 || live.is_empty() {
                let nr = [1u64, 4, 16, 512][(r >> 8) as usize % 4];
                let ty = (r >> 16) as u8 % 2;
                let slot = (r >> 20) % 4096 / nr * nr;
                let pfn = 1 + round * 1024 + (r >> 40) % 7;
                let free = !live.iter().any(|&(f, p, n)| {
                    p == pfn
                        || (unkey(f).0 == ty && f < key(ty, slot) + nr && key(ty, slot) < f + n)
                });
                assert_eq!(c.insert(key(ty, slot), pfn, nr), free, "round {round}");
                if free {
                    live.push((key(ty, slot), pfn, nr));
                }
            } else {
                let i = (r >> 8) as usize % live.len();
                let (f, p, n) = live.swap_remove(i);
                if r & 1 == 0 {
                    assert_eq!(c.remove(p), Some((f, n)));
                } else {
                    let q = p + (1 << 30);
                    assert!(c.replace(p, q));
                    assert_eq!(c.slot_of(p), None);
                    assert_eq!(c.remove_if(q, || false), None, "kept");
                    assert_eq!(c.remove_if(q, || true), Some((f, n)));
                }
            }
            if round % 97 == 0 {
                for ty in 0..2u8 {
                    for s in (0..4096).step_by(3) {
                        let want = live
                            .iter()
                            .find(|&&(f, _, n)| key(ty, s) >= f && key(ty, s) < f + n)
                            .map(|&(f, p, n)| Cached {
                                pfn: p,
                                nr: n,
                                first: f,
                                readahead: false,
                            });
                        assert_eq!(c.lookup(key(ty, s)), want);
                    }
                    let mut dev: Vec<(u64, u64)> = live
                        .iter()
                        .filter(|&&(f, _, _)| unkey(f).0 == ty)
                        .map(|&(f, p, _)| (p, f))
                        .collect();
                    dev.sort_by_key(|&(_, f)| f);
                    assert_eq!(c.on_device(ty), dev);
                }
                for &(f, p, _) in &live {
                    assert_eq!(c.slot_of(p), Some(f));
                }
            }
            assert_eq!(c.pages(), live.iter().map(|l| l.2).sum::<u64>());
        }
        for (_, p, _) in live.drain(..) {
            assert!(c.remove(p).is_some());
        }
        assert_eq!(c.pages(), 0);
        let g = c.inner.lock();
        assert!(
            g.by_slot.iter().flatten().all(|t| t.is_none()),
            "tables freed"
        );
        assert_eq!(g.by_pfn.len, 0);
    }
}
