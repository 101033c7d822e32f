//! The slot map of one swap area: a use count per slot and the cluster
//! allocator that hands out naturally aligned runs of slots, so a large
//! folio is written out whole (Linux 6.10's mTHP swap-out).
//!
//! # Counts
//! Each slot has a 16-bit count: the number of swap entries (PTEs) that
//! name it, plus [`HAS_CACHE`] while the swap cache holds a folio for it.
//! A slot is free when the count is 0.  Linux keeps a byte with
//! continuation pages past 62 references; a `u16` (2 bytes per 4 KiB slot)
//! reaches [`MAX_COUNT`] without continuations, which is more than the
//! number of address spaces this kernel can have.  Bad slots (the header
//! page and the header's bad-page list) hold [`BAD`] forever.
//!
//! # Clusters
//! Slots are grouped in clusters of [`CLUSTER_SLOTS`] (512, a PMD's worth,
//! as Linux with `THP_SWAP`).  A cluster is free (no slot in use) or
//! serves one order: runs of `2^order` slots, aligned to their size, come
//! from clusters of that order only, so order-0 churn never fragments the
//! clusters that 64K and 2 MiB folios need.  An order-9 (2 MiB) request
//! takes a wholly free cluster.  An allocation tries, in order: the
//! order's current cluster (a cursor, as Linux's per-CPU "next"), a free
//! cluster, then the order's non-full clusters; only then does it fail,
//! and the caller splits the folio (`swpout_fallback`).  Clusters holding
//! a bad slot (cluster 0 always has the header) serve order 0 only.
//! When a cluster's last slot is freed it becomes free again.
//!
//! # Lock
//! One spin lock per area around all of it: a leaf, taken under page-table
//! locks (zap and fork change counts) and the swap-cache lock.

use alloc::vec;
use alloc::vec::Vec;

use crate::sync::SpinLock as Mutex;

/// Slots per cluster (a PMD's worth of 4 KiB pages).
pub const CLUSTER_SLOTS: u64 = 512;
/// Order of the largest run (a PMD-size folio).
pub const MAX_ORDER: u32 = 9;
/// The slot is held by the swap cache (Linux's `SWAP_HAS_CACHE`).
pub const HAS_CACHE: u16 = 0x8000;
/// A bad slot: never allocated.
pub const BAD: u16 = 0x7fff;
/// Most references one slot can count.
pub const MAX_COUNT: u16 = 0x7ffe;
const COUNT_MASK: u16 = 0x7fff;

/// What a cluster is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Use {
    /// No slot in use (and none bad).
    Free,
    /// Serves runs of this order.
    Order(u8),
}

#[derive(Clone, Copy, Debug)]
struct Cluster {
    usage: Use,
    /// Slots of the cluster not free (bad ones included).
    used: u16,
    /// Where the next search for a run starts (an offset in the cluster,
    /// a multiple of the run size): just past the last run handed out, as
    /// Linux's per-cluster `next`, so filling a cluster in order costs one
    /// probe per run instead of a scan from its start.
    next: u16,
}

struct Inner {
    count: Vec<u16>,
    clusters: Vec<Cluster>,
    /// Free clusters, as a stack (popped from the end: low clusters first
    /// after `new`, most recently freed first later).
    free_clusters: Vec<u32>,
    /// Per order: the cluster allocations go to first.
    cursor: [Option<u32>; MAX_ORDER as usize + 1],
    /// Slots neither free nor bad.
    in_use: u64,
}

/// Why [`SwapMap::dup`] refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DupError {
    /// The slot is free or bad: the entry names nothing.
    NotInUse,
    /// The count would pass [`MAX_COUNT`].
    Overflow,
}

/// The slot map of one swap area.
pub struct SwapMap {
    slots: u64,
    usable: u64,
    inner: Mutex<Inner>,
}

impl SwapMap {
    /// A map of `slots` slots (the area's pages, header included) with
    /// slot 0 and every slot in `bad` unusable.  Bad slots outside the
    /// area are ignored (the header parser refuses them first).
    pub fn new(slots: u64, bad: &[u64]) -> Self {
        let nclusters = slots.div_ceil(CLUSTER_SLOTS) as usize;
        let mut count = vec![0u16; (nclusters as u64 * CLUSTER_SLOTS) as usize];
        // The tail past the area's end is bad, so a short last cluster is
        // order-0 only, like one holding a bad page.
        for c in count.iter_mut().skip(slots as usize) {
            *c = BAD;
        }
        if slots > 0 {
            count[0] = BAD;
        }
        for &b in bad {
            if b < slots {
                count[b as usize] = BAD;
            }
        }
        let mut clusters = Vec::with_capacity(nclusters);
        let mut free_clusters = Vec::new();
        let mut bad_total = 0u64;
        for ci in 0..nclusters {
            let base = ci * CLUSTER_SLOTS as usize;
            let nbad = count[base..base + CLUSTER_SLOTS as usize]
                .iter()
                .filter(|&&c| c == BAD)
                .count() as u16;
            bad_total += nbad as u64;
            let usage = if nbad == 0 { Use::Free } else { Use::Order(0) };
            clusters.push(Cluster {
                usage,
                used: nbad,
                next: 0,
            });
        }
        for ci in (0..nclusters).rev() {
            if clusters[ci].usage == Use::Free {
                free_clusters.push(ci as u32);
            }
        }
        let usable = nclusters as u64 * CLUSTER_SLOTS - bad_total;
        // Order 0 starts in the first cluster it owns (the header's).
        let mut cursor = [None; MAX_ORDER as usize + 1];
        cursor[0] = clusters
            .iter()
            .position(|c| c.usage == Use::Order(0))
            .map(|c| c as u32);
        SwapMap {
            slots,
            usable,
            inner: Mutex::new(Inner {
                count,
                clusters,
                free_clusters,
                cursor,
                in_use: 0,
            }),
        }
    }

    /// Slots of the area, header and bad ones included.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// Usable slots (Linux's `si->pages`, what `SwapTotal` adds up).
    pub fn usable(&self) -> u64 {
        self.usable
    }

    /// Slots in use (by entries or the swap cache).
    pub fn in_use(&self) -> u64 {
        self.inner.lock().in_use
    }

    /// Free slots (`SwapFree`'s share of this area).
    pub fn free(&self) -> u64 {
        self.usable - self.in_use()
    }

    /// Wholly free clusters.
    pub fn free_clusters(&self) -> u64 {
        self.inner.lock().free_clusters.len() as u64
    }

    /// Allocates a naturally aligned run of `2^order` free slots for the
    /// swap cache (each marked [`HAS_CACHE`], count 0) and returns its
    /// first slot, or `None` if no such run exists.
    pub fn alloc(&self, order: u32) -> Option<u64> {
        if order > MAX_ORDER {
            return None;
        }
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let nr = 1usize << order;
        // 1. The order's current cluster.
        if let Some(ci) = inner.cursor[order as usize]
            && let Some(s) = inner.take_in(ci, order, nr)
        {
            return Some(s);
        }
        // 2. A free cluster becomes this order's.
        while let Some(ci) = inner.free_clusters.pop() {
            if inner.clusters[ci as usize].usage != Use::Free {
                continue; // stale: taken since it was pushed
            }
            inner.clusters[ci as usize].usage = Use::Order(order as u8);
            inner.cursor[order as usize] = Some(ci);
            if let Some(s) = inner.take_in(ci, order, nr) {
                return Some(s);
            }
        }
        // 3. Any non-full cluster of this order (a PMD run needs a free one).
        if order < MAX_ORDER {
            for ci in 0..inner.clusters.len() as u32 {
                let c = inner.clusters[ci as usize];
                if c.usage == Use::Order(order as u8)
                    && (c.used as u64) < CLUSTER_SLOTS
                    && let Some(s) = inner.take_in(ci, order, nr)
                {
                    inner.cursor[order as usize] = Some(ci);
                    return Some(s);
                }
            }
        }
        None
    }

    /// Adds one reference (a new swap entry naming `slot`, e.g. fork's
    /// copy or an unmap that writes the entry).
    pub fn dup(&self, slot: u64) -> Result<(), DupError> {
        let mut g = self.inner.lock();
        let c = g.count.get_mut(slot as usize).ok_or(DupError::NotInUse)?;
        if *c == 0 || *c == BAD {
            return Err(DupError::NotInUse);
        }
        if *c & COUNT_MASK >= MAX_COUNT {
            return Err(DupError::Overflow);
        }
        *c += 1;
        Ok(())
    }

    /// Adds one reference to each of `nr` slots from `slot` (an unmap
    /// writing entries for a whole folio).  The slots must be in use.
    pub fn dup_many(&self, slot: u64, nr: u64) {
        let mut g = self.inner.lock();
        for s in slot..slot + nr {
            let c = &mut g.count[s as usize];
            assert!(*c != 0 && *c != BAD && *c & COUNT_MASK < MAX_COUNT);
            *c += 1;
        }
    }

    /// Drops one entry reference from each of `nr` slots from `slot`.
    /// Returns how many of them are now held by the swap cache only (the
    /// caller may then drop the cached folio).
    pub fn put(&self, slot: u64, nr: u64) -> u64 {
        self.inner.lock().put(slot, nr)
    }

    /// The swap-in of a cached folio of slots `first..first + nr`: drops
    /// one entry reference from each of the `n` slots from `slot` (the
    /// entries it mapped) and, if no entry names any slot of the run any
    /// more, the cache's hold too, so they become free, returning true
    /// (the caller, holding the cache lock, then takes the folio out of
    /// the cache: [`Self::put`], the check and [`Self::put_cache`] in one
    /// hold).  The caller holds a page-table lock (preemption off).
    pub fn put_swapin(&self, slot: u64, n: u64, first: u64, nr: u64) -> bool {
        let mut g = self.inner.lock_nested();
        let whole = slot == first && n == nr;
        if whole {
            // The common case, one pass that vectorizes: every slot named
            // by exactly the entry mapped now, besides the cache.
            let run = &mut g.count[slot as usize..(slot + n) as usize];
            let sole = run.iter().fold(true, |a, &c| a & (c == HAS_CACHE | 1));
            if sole {
                run.fill(0);
                g.per_cluster(slot, n, |counts| counts.len() as u16);
                return true;
            }
        }
        let cache_only = g.put(slot, n);
        let unused = if whole {
            cache_only == nr
        } else {
            g.count[first as usize..(first + nr) as usize]
                .iter()
                .all(|&c| c == HAS_CACHE)
        };
        if unused {
            g.per_cluster(first, nr, |counts| {
                counts.fill(0);
                counts.len() as u16
            });
        }
        unused
    }

    /// The swap cache lets go of `nr` slots from `slot`; slots no entry
    /// names any more become free.
    pub fn put_cache(&self, slot: u64, nr: u64) {
        let mut g = self.inner.lock();
        g.per_cluster(slot, nr, |counts| {
            let (mut bad, mut freed) = (false, 0);
            for c in counts {
                bad |= *c & HAS_CACHE == 0;
                freed += (*c == HAS_CACHE) as u16;
                *c &= !HAS_CACHE;
            }
            assert!(!bad, "a swap slot of {slot}..+{nr} not cached");
            freed
        });
    }

    /// The swap cache takes `nr` slots from `slot` again (a swap-in that
    /// reads the slots into a new folio).  Fails, changing nothing, if any
    /// slot is free, bad or already cached.
    pub fn take_cache(&self, slot: u64, nr: u64) -> bool {
        let mut g = self.inner.lock();
        let range = slot as usize..(slot + nr) as usize;
        if range.end > g.count.len()
            || g.count[range.clone()]
                .iter()
                .any(|&c| c == 0 || c == BAD || c & HAS_CACHE != 0)
        {
            return false;
        }
        for c in &mut g.count[range] {
            *c |= HAS_CACHE;
        }
        true
    }

    /// References of `slot` from entries (the cache's not counted).
    pub fn count(&self, slot: u64) -> u16 {
        match self.inner.lock().count.get(slot as usize) {
            Some(&BAD) | None => 0,
            Some(&c) => c & COUNT_MASK,
        }
    }

    /// Whether any swap entry names one of the `nr` slots from `slot` (one
    /// lock round for a folio's run, where [`Self::count`] per slot took
    /// it once per page).
    pub fn any_count(&self, slot: u64, nr: u64) -> bool {
        let g = self.inner.lock();
        (slot..slot + nr).any(|s| match g.count.get(s as usize) {
            Some(&BAD) | None => false,
            Some(&c) => c & COUNT_MASK != 0,
        })
    }

    /// The swap cache holds `slot`.
    pub fn has_cache(&self, slot: u64) -> bool {
        let g = self.inner.lock();
        matches!(g.count.get(slot as usize), Some(&c) if c != BAD && c & HAS_CACHE != 0)
    }

    /// Every slot in use (by entries or the cache), ascending: swapoff's
    /// work list and the checker's.
    pub fn used_slots(&self) -> Vec<u64> {
        let g = self.inner.lock();
        (0..g.count.len() as u64)
            .filter(|&s| {
                let c = g.count[s as usize];
                c != 0 && c != BAD
            })
            .collect()
    }
}

impl Inner {
    /// [`SwapMap::put`] under the map's lock.
    fn put(&mut self, slot: u64, nr: u64) -> u64 {
        let mut cache_only = 0;
        self.per_cluster(slot, nr, |counts| {
            let (mut bad, mut freed) = (false, 0);
            for c in counts {
                bad |= *c & COUNT_MASK == 0 || *c == BAD;
                *c = c.wrapping_sub(1);
                cache_only += (*c == HAS_CACHE) as u64;
                freed += (*c == 0) as u16;
            }
            assert!(!bad, "a swap slot of {slot}..+{nr} put too often");
            freed
        });
        cache_only
    }

    /// Runs `f` on the counts of the `nr` slots from `slot`, a cluster's
    /// part at a time (one part for a folio's run), and releases the slots
    /// it says became free in that part.
    fn per_cluster(&mut self, slot: u64, nr: u64, mut f: impl FnMut(&mut [u16]) -> u16) {
        let mut s = slot;
        while s < slot + nr {
            let ci = s / CLUSTER_SLOTS;
            let end = ((ci + 1) * CLUSTER_SLOTS).min(slot + nr);
            let freed = f(&mut self.count[s as usize..end as usize]);
            if freed != 0 {
                self.release(ci, freed);
            }
            s = end;
        }
    }

    /// A free aligned run of `nr` slots in cluster `ci` (of `order`),
    /// taken for the cache.
    fn take_in(&mut self, ci: u32, order: u32, nr: usize) -> Option<u64> {
        let c = self.clusters[ci as usize];
        if c.usage != Use::Order(order as u8) || c.used as u64 + nr as u64 > CLUSTER_SLOTS {
            return None;
        }
        let base = ci as usize * CLUSTER_SLOTS as usize;
        let runs = CLUSTER_SLOTS as usize / nr;
        // From the hint on, wrapping once around the cluster.
        let first = (c.next as usize / nr) % runs;
        for k in 0..runs {
            let s = base + ((first + k) % runs) * nr;
            if self.count[s..s + nr].iter().all(|&c| c == 0) {
                for c in &mut self.count[s..s + nr] {
                    *c = HAS_CACHE;
                }
                let cl = &mut self.clusters[ci as usize];
                cl.used += nr as u16;
                cl.next = ((s - base + nr) % CLUSTER_SLOTS as usize) as u16;
                self.in_use += nr as u64;
                return Some(s as u64);
            }
        }
        None
    }

    /// `n` slots of cluster `ci` just became free.
    fn release(&mut self, ci: u64, n: u16) {
        self.in_use -= n as u64;
        let ci = ci as usize;
        let cl = &mut self.clusters[ci];
        cl.used -= n;
        if cl.used == 0 {
            cl.usage = Use::Free;
            cl.next = 0;
            for cur in self.cursor.iter_mut() {
                if *cur == Some(ci as u32) {
                    *cur = None;
                }
            }
            self.free_clusters.push(ci as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_slot_is_bad_and_runs_are_aligned() {
        let m = SwapMap::new(4 * CLUSTER_SLOTS, &[]);
        assert_eq!(m.usable(), 4 * CLUSTER_SLOTS - 1);
        let a = m.alloc(4).unwrap();
        assert_eq!(a % 16, 0);
        assert!(
            a >= CLUSTER_SLOTS,
            "cluster 0 holds the header: order 0 only"
        );
        let b = m.alloc(9).unwrap();
        assert_eq!(b % 512, 0);
        assert_ne!(a / 512, b / 512);
        let z = m.alloc(0).unwrap();
        assert_eq!(z, 1, "order 0 fills the header's cluster first");
        assert_eq!(m.in_use(), 16 + 512 + 1);
    }

    #[test]
    fn counts_free_slots_and_clusters() {
        let m = SwapMap::new(2 * CLUSTER_SLOTS, &[]);
        let s = m.alloc(4).unwrap();
        m.dup_many(s, 16);
        m.dup(s).unwrap(); // a fork of the first entry
        assert_eq!(m.count(s), 2);
        // Unmapped and written: the cache lets go; entries keep the slots.
        m.put_cache(s, 16);
        assert_eq!(m.in_use(), 16);
        assert_eq!(m.put(s, 16), 0);
        assert_eq!(m.in_use(), 1);
        assert_eq!(m.put(s, 1), 0);
        assert_eq!(m.in_use(), 0);
        assert_eq!(m.free_clusters(), 1, "cluster 1 is free again");
        assert_eq!(m.dup(s), Err(DupError::NotInUse));
    }

    #[test]
    fn pmd_needs_a_free_cluster_and_orders_do_not_mix() {
        let m = SwapMap::new(3 * CLUSTER_SLOTS, &[]);
        // Cluster 1 becomes order 0's only once cluster 0 is full.
        let mut small = Vec::new();
        for _ in 0..511 {
            small.push(m.alloc(0).unwrap());
        }
        let s = m.alloc(0).unwrap();
        assert_eq!(s / 512, 1, "cluster 0 full: takes the lowest free cluster");
        assert_eq!(m.alloc(9).unwrap() / 512, 2);
        assert_eq!(m.alloc(9), None, "no free cluster left");
        assert_eq!(m.alloc(2), None, "clusters serve one order");
        m.put_cache(s, 1);
        assert_eq!(m.alloc(2).unwrap() / 512, 1, "cluster 1 was freed");
    }

    #[test]
    fn bad_slots_are_never_handed_out() {
        let m = SwapMap::new(CLUSTER_SLOTS + 100, &[3, 600, 9999]);
        assert_eq!(m.usable(), CLUSTER_SLOTS + 100 - 3);
        let mut got = Vec::new();
        while let Some(s) = m.alloc(0) {
            assert!(!got.contains(&s), "slot {s} twice");
            got.push(s);
        }
        assert_eq!(got.len() as u64, m.usable());
        assert!(!got.contains(&0) && !got.contains(&3) && !got.contains(&600));
        assert!(got.iter().all(|&s| s < CLUSTER_SLOTS + 100));
        assert_eq!(m.alloc(4), None);
    }

    #[test]
    fn freed_runs_behind_the_hint_are_found_again() {
        let m = SwapMap::new(2 * CLUSTER_SLOTS, &[]);
        let runs: Vec<u64> = (0..32).map(|_| m.alloc(4).unwrap()).collect();
        assert!(
            runs.windows(2).all(|w| w[1] == w[0] + 16),
            "handed out in order"
        );
        assert_eq!(m.alloc(4), None, "the one usable cluster is full");
        m.put_cache(runs[5], 16);
        assert_eq!(m.alloc(4), Some(runs[5]), "found by wrapping around");
    }

    #[test]
    fn take_cache_refuses_free_and_cached_slots() {
        let m = SwapMap::new(2 * CLUSTER_SLOTS, &[]);
        let s = m.alloc(2).unwrap();
        assert!(!m.take_cache(s, 4), "already cached");
        m.dup_many(s, 4);
        m.put_cache(s, 4);
        assert!(m.take_cache(s, 4));
        assert!(m.has_cache(s + 3));
        assert_eq!(m.put(s, 4), 4, "cache only now");
        m.put_cache(s, 4);
        assert!(!m.take_cache(s, 4), "free slots");
        assert_eq!(m.in_use(), 0);
    }
}
