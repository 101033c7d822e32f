//! Folios: the typed handle for an allocated, naturally aligned run of
//! 2^order frames, and [`Page`], the handle for one frame of it.
//!
//! A [`Folio`] is a head index plus a reference to the allocator that owns
//! it (two words, `Copy`).  Holding one does not by itself hold a reference
//! count: like a raw `struct folio *`, it is a borrowed view, valid while
//! some reference the code can account for keeps the folio alive.  The
//! last reference dropped frees the folio through the allocator the handle
//! points to, so no global allocator is needed.
//!
//! # Who owns which reference
//! References come in two kinds, and every one has exactly one owner:
//! * **Owned by code**: a [`FolioRef`].  It holds one reference and drops
//!   it when it goes out of scope, so an error path (`?`, an early
//!   `return`) cannot leak or double-drop it.  The allocator's new folio
//!   becomes one with [`FolioRef::from_raw`]; [`Folio::get_ref`] and
//!   `Clone` take another reference from one the caller already has.
//! * **Owned by a mapping**: each PTE or PMD mapping owns one reference
//!   (see below).  These are not `FolioRef`s: page tables hold raw entries,
//!   and the rmap code (`aspace::rmap`) raises and drops them with the
//!   mapcounts.  A `FolioRef` whose reference becomes a mapping's is handed
//!   over with [`FolioRef::into_raw`] (no atomic operation: the count does
//!   not change, only its owner) — the fault and collapse paths do this
//!   when they pass the folio to `rmap_add_new`, once the entry is written,
//!   so until then a failure frees the folio by dropping the `FolioRef`.
//!   (The hand-over is at the call site rather than inside `rmap_add_new`
//!   because passing and returning the handle through it cost the arm64
//!   fault 6–38 instructions.)  Mapping
//!   references are dropped with [`Folio::put_many`] (or the batched
//!   forms) after the TLB flush that makes them unreachable.
//!
//! The folio *lock* (the `LOCKED` flag) is separate from references: a
//! [`FolioLockGuard`] (from [`Folio::try_lock`]) holds it and releases it
//! when dropped.  The guard does not hold a reference; whoever locks a
//! folio must keep a reference (its own, or a mapping's it has pinned down
//! with the page-table lock) until the guard is gone, and a folio must be
//! unlocked before its last reference goes (the allocator's debug checks
//! refuse to free a locked folio).  Where locals hold both, declare the
//! guard after the reference so it is dropped first.
//!
//! # Mapcounts and references (semantics notes §2.7)
//! * `large_mapcount` counts every PTE and PMD mapping of any page of the
//!   folio (Linux ≥ 6.11 `_large_mapcount`, without per-page mapcounts).
//! * `entire_mapcount` counts PMD mappings only.
//! * Each mapping owns one folio reference: raise the refcount before the
//!   mapcount when mapping, drop it after when unmapping, so that
//!   `refcount - large_mapcount` is the number of extra (pinning) references.
//! * `ANON_EXCLUSIVE` is per page, in each frame's own flags.

use core::fmt;
use core::sync::atomic::{
    Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed, Ordering::Release, fence,
};

use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::physmem::buddy::BuddyAllocator;
use crate::physmem::frame_flags::{PageFlags, TAILS_AE};
use crate::physmem::memmap::{FrameDesc, FrameDump, NO_FRAME, OWNER_ALLOCATOR_BITS};

/// Bits of the owner word holding the virtual page index (enough for 58-bit
/// virtual addresses); the address-space id sits above them, and the top two
/// bits belong to the allocator ([`OWNER_ALLOCATOR_BITS`]).
pub const OWNER_VPN_BITS: u32 = 46;
/// Bits of the address-space id.
pub const OWNER_MM_ID_BITS: u32 = 16;
/// Largest address-space id `set_anon_owner` accepts.
pub const MAX_MM_ID: u64 = (1 << OWNER_MM_ID_BITS) - 1;
const OWNER_USER_BITS: u64 = !OWNER_ALLOCATOR_BITS;

/// The owner-slot word of a large folio (Linux 6.15's `_mm_ids`): the
/// second frame's owner word, which a tail does not otherwise use.  Bits
/// 0..16 and 16..32 hold the address-space ids of slots 0 and 1, bit 32 is
/// the lock, bit 33 the maybe-shared mark; the allocator's top bits stay
/// its own.  The slots' mapcounts are the second frame's `mapcount`
/// (slot 0) and `entire_mapcount` (slot 1), also unused by a tail; a slot
/// with mapcount 0 is empty whatever its id.  So the tracking costs no
/// byte beyond the 32 of a descriptor.
pub(crate) const MM_IDS_LOCK: u64 = 1 << 32;
/// See [`MM_IDS_LOCK`].
pub(crate) const MM_IDS_SHARED: u64 = 1 << 33;
const _: () = assert!(2 * OWNER_MM_ID_BITS <= 32);
const _: () = assert!((MM_IDS_LOCK | MM_IDS_SHARED) & OWNER_ALLOCATOR_BITS == 0);

#[inline]
fn mm_ids_slot(w: u64, i: usize) -> u64 {
    (w >> (i as u32 * OWNER_MM_ID_BITS)) & MAX_MM_ID
}

/// A snapshot of a large folio's owner slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmIds {
    /// (address-space id, mappings by it) of each non-empty slot.
    pub slots: [Option<(u64, i32)>; 2],
    /// Maybe mapped by more than one address space.
    pub shared: bool,
}

impl MmIds {
    /// Mappings by `mm_id` if it holds a slot, else 0.
    pub fn mapcount_of(&self, mm_id: u64) -> i32 {
        let id = mm_id & MAX_MM_ID;
        self.slots
            .iter()
            .flatten()
            .find(|s| s.0 == id)
            .map_or(0, |s| s.1)
    }
}

/// An allocated folio.
#[derive(Clone, Copy)]
pub struct Folio<'a> {
    alloc: &'a BuddyAllocator<'a>,
    idx: u32,
}

impl<'a> Folio<'a> {
    /// Only the allocator makes folios, from a head index it validated.
    #[inline]
    pub(crate) fn from_head(alloc: &'a BuddyAllocator<'a>, idx: u32) -> Self {
        Self { alloc, idx }
    }

    #[inline]
    pub(crate) fn idx(&self) -> u32 {
        self.idx
    }

    #[inline]
    fn head(&self) -> &'a FrameDesc {
        self.alloc.memmap().at(self.idx)
    }

    /// The allocator the folio came from (and returns to).
    pub fn allocator(&self) -> &'a BuddyAllocator<'a> {
        self.alloc
    }

    #[inline]
    pub fn order(&self) -> u32 {
        self.head().order()
    }

    #[inline]
    pub fn nr_pages(&self) -> u64 {
        1 << self.order()
    }

    /// Size in bytes.
    #[inline]
    pub fn size(&self) -> u64 {
        PAGE_SIZE << self.order()
    }

    /// PFN of the first frame.
    #[inline]
    pub fn pfn(&self) -> u64 {
        self.alloc.memmap().pfn_of(self.idx)
    }

    /// Physical address of the first byte.
    #[inline]
    pub fn pa(&self) -> u64 {
        self.pfn() << PAGE_SHIFT
    }

    /// Page `i` of the folio.
    ///
    /// # Panics
    /// If `i >= nr_pages()`.
    #[inline]
    pub fn page(&self, i: u64) -> Page<'a> {
        assert!(
            i < self.nr_pages(),
            "page {i} of an order-{} folio",
            self.order()
        );
        Page {
            folio: *self,
            idx: self.idx + i as u32,
        }
    }

    /// Page 0 of the folio (the head), without [`Self::page`]'s bound check.
    #[inline]
    pub fn first_page(&self) -> Page<'a> {
        Page {
            folio: *self,
            idx: self.idx,
        }
    }

    /// The page containing physical address `pa`, if inside the folio.
    pub fn page_at(&self, pa: u64) -> Option<Page<'a>> {
        let i = (pa >> PAGE_SHIFT).checked_sub(self.pfn())?;
        (i < self.nr_pages()).then(|| self.page(i))
    }

    /// All pages in order.
    pub fn pages(&self) -> impl Iterator<Item = Page<'a>> + 'a {
        let f = *self;
        (0..f.nr_pages()).map(move |i| f.page(i))
    }

    // ----- flags ------------------------------------------------------

    #[inline]
    pub fn flags(&self) -> PageFlags {
        self.head().page_flags()
    }

    #[inline]
    pub fn test(&self, f: PageFlags) -> bool {
        self.flags().contains(f)
    }

    /// Sets `f` (atomically; other bits are untouched).
    #[inline]
    pub fn set_flags(&self, f: PageFlags) {
        self.head().flags.fetch_or(f.bits(), Relaxed);
    }

    #[inline]
    pub fn clear_flags(&self, f: PageFlags) {
        self.head().flags.fetch_and(!f.bits(), Relaxed);
    }

    /// Sets `f`; returns whether all of it was already set.
    #[inline]
    pub fn test_and_set(&self, f: PageFlags) -> bool {
        self.head().flags.fetch_or(f.bits(), Acquire) & f.bits() == f.bits()
    }

    /// Clears `f`; returns whether any of it was set.
    #[inline]
    pub fn test_and_clear(&self, f: PageFlags) -> bool {
        self.head().flags.fetch_and(!f.bits(), Relaxed) & f.bits() != 0
    }

    /// Takes the folio lock if it is free.
    #[inline]
    pub fn trylock(&self) -> bool {
        !self.test_and_set(PageFlags::LOCKED)
    }

    /// Takes the folio lock if it is free, as a guard that releases it when
    /// dropped, so no early return can leave the folio locked.  The caller
    /// keeps a reference for as long as the guard lives.
    #[inline]
    pub fn try_lock(&self) -> Option<FolioLockGuard<'a>> {
        // Lazily: an eagerly built guard would be dropped on failure and
        // release the other holder's lock.
        self.trylock().then(|| FolioLockGuard { folio: *self })
    }

    /// Releases the folio lock, waking whoever sleeps in
    /// [`Self::lock_sleeping`] (only if someone said so with `WAITERS`,
    /// Linux's `PG_waiters`, so an uncontended unlock stays one atomic).
    #[inline]
    pub fn unlock(&self) {
        let old = self
            .head()
            .flags
            .fetch_and(!(PageFlags::LOCKED | PageFlags::WAITERS).bits(), Release);
        debug_assert!(
            old & PageFlags::LOCKED.bits() != 0,
            "unlocking an unlocked folio: {}",
            self.dump()
        );
        if old & PageFlags::WAITERS.bits() != 0 {
            self.alloc.cpu_ops().wake(self.wait_key());
        }
    }

    /// The key faults sleep on while the folio is locked.
    fn wait_key(&self) -> usize {
        self.pfn() as usize
    }

    /// Takes the folio lock, sleeping (`CpuOps::wait`) while another
    /// holder has it: swap-in waiting for a swap-out or read in flight.
    /// The caller holds a reference and no spin lock.  Whoever unlocks
    /// sees `WAITERS` and wakes the key, so no unlock path has to know
    /// about sleepers.
    ///
    /// The wait's condition sets `WAITERS` itself, in the same atomic
    /// operation that reads `LOCKED`, each time it is asked: an unlock
    /// clears `WAITERS` and wakes every sleeper, and one that wakes to
    /// find a third party already holding the lock goes back to sleep
    /// inside `wait` — had it not set the bit again, that holder's unlock
    /// would wake nobody and the sleeper would never run again (the
    /// hung OOM victim of `exhaust-swap`).  A bit left set on a free
    /// folio costs one spurious wake-up at most.
    pub fn lock_sleeping(&self) -> FolioLockGuard<'a> {
        loop {
            if let Some(g) = self.try_lock() {
                return g;
            }
            let f = *self;
            self.alloc.cpu_ops().wait(self.wait_key(), &move || {
                let old = f.head().flags.fetch_or(PageFlags::WAITERS.bits(), AcqRel);
                old & PageFlags::LOCKED.bits() == 0
            });
        }
    }

    /// Whether the folio is mlocked as a whole (Linux's
    /// `folio_test_mlocked`).  Reclaim skips mlocked folios.
    pub fn is_mlocked(&self) -> bool {
        self.test(PageFlags::MLOCKED)
    }

    /// Mark the folio mlocked (Linux's `mlock_folio` /
    /// `mlock_new_folio`).  Returns whether it was not already, in which
    /// case its pages were added to `Mlocked:` and the caller counts
    /// `unevictable_pgs_mlocked`.
    ///
    /// There is no `mlock_count`: one flag, whoever locked it.  A folio
    /// locked through two address spaces (the same page mlocked by both
    /// sides of a fork: the child never inherits the lock, so it must have
    /// locked it itself) loses the flag when the *first* of them munlocks,
    /// munmaps or exits, and the other side's lock then rests on its
    /// `VM_LOCKED` VMA alone: reclaim's unmap must refuse any mapping in a
    /// locked VMA (as Linux's `try_to_unmap_one` does, which is also what
    /// keeps a partially covered large folio resident), so the pages stay
    /// resident and only `Mlocked:` undercounts them.  Linux's count is
    /// best-effort too and relies on the same rescue.
    pub fn mlock(&self) -> bool {
        if self.test_and_set(PageFlags::MLOCKED) {
            return false;
        }
        self.allocator().mlocked_add(self.nr_pages(), true);
        true
    }

    /// Clear the mlock mark (Linux's `munlock_folio`).  Returns whether it
    /// was set, in which case its pages left `Mlocked:` and the caller
    /// counts `unevictable_pgs_munlocked`.
    pub fn munlock(&self) -> bool {
        if !self.test_and_clear(PageFlags::MLOCKED) {
            return false;
        }
        self.allocator().mlocked_add(self.nr_pages(), false);
        true
    }

    #[inline]
    pub fn is_large(&self) -> bool {
        self.order() > 0
    }

    #[inline]
    pub fn is_anon(&self) -> bool {
        self.test(PageFlags::ANON)
    }

    /// In a shmem object's page cache (`crate::shmem`).
    #[inline]
    pub fn is_shmem(&self) -> bool {
        self.test(PageFlags::SHMEM)
    }

    // ----- references -------------------------------------------------

    #[inline]
    pub fn refcount(&self) -> u32 {
        self.head().refcount.load(Relaxed)
    }

    /// Takes another reference.  The caller must already hold one.
    #[inline]
    pub fn get(&self) {
        let old = self.head().refcount.fetch_add(1, Relaxed);
        if old == 0 {
            panic!("folio get on a free folio: {}", self.dump());
        }
    }

    /// Takes another reference, owned by the returned handle.  The caller
    /// must already hold one (references are only taken from live ones).
    #[inline]
    pub fn get_ref(&self) -> FolioRef<'a> {
        self.get();
        FolioRef { folio: *self }
    }

    /// Takes a reference unless the folio is being freed (refcount 0):
    /// for a caller that found the folio by its frame and holds no
    /// reference yet (compaction's scanner).  The folio may have been
    /// freed and reallocated in between: the caller checks what it got.
    pub fn try_get_ref(&self) -> Option<FolioRef<'a>> {
        self.head()
            .refcount
            .fetch_update(Acquire, Relaxed, |r| (r != 0).then_some(r + 1))
            .ok()
            .map(|_| FolioRef { folio: *self })
    }

    /// Takes `n` references at once (mapping `n` PTEs of the folio).
    #[inline]
    pub fn get_many(&self, n: u32) {
        let old = self.head().refcount.fetch_add(n, Relaxed);
        if old == 0 {
            panic!("folio get on a free folio: {}", self.dump());
        }
    }

    /// Marks `PageAnonExclusive` on page `first + i` for every bit `i` set
    /// in `bits` (bit `i % 64` of word `i / 64`): a swap-in mapping a run
    /// of pages, with the tails' hint for the free path set once rather
    /// than checked per page as [`Page::set_anon_exclusive`] does.
    pub fn set_anon_exclusive_bits(&self, first: u64, bits: &[u64]) {
        let nr = self.nr_pages();
        let memmap = self.alloc.memmap();
        let mut tails = false;
        for (wi, &word) in bits.iter().enumerate() {
            let i0 = first + wi as u64 * 64;
            let lo = word.trailing_zeros() % 64;
            let len = (word >> lo).trailing_ones();
            if word != 0 && word >> lo == u64::MAX >> (64 - len) {
                // One run of pages (a whole run of exclusive entries: all
                // of a 64K folio's, a word of a 2M one's): one pass over
                // their descriptors.
                let i = i0 + lo as u64;
                assert!(
                    i + len as u64 <= nr,
                    "pages {i}.. of an order-{} folio",
                    self.order()
                );
                for d in memmap.range(self.idx + i as u32, len) {
                    d.flags.fetch_or(PageFlags::ANON_EXCLUSIVE.bits(), Relaxed);
                }
                tails |= i + len as u64 > 1;
                continue;
            }
            let mut b = word;
            while b != 0 {
                let i = first + wi as u64 * 64 + b.trailing_zeros() as u64;
                assert!(i < nr, "page {i} of an order-{} folio", self.order());
                memmap
                    .at(self.idx + i as u32)
                    .flags
                    .fetch_or(PageFlags::ANON_EXCLUSIVE.bits(), Relaxed);
                tails |= i != 0;
                b &= b - 1;
            }
        }
        let h = &self.head().flags;
        if tails && h.load(Relaxed) & TAILS_AE == 0 {
            h.fetch_or(TAILS_AE, Relaxed);
        }
    }

    /// Drops a reference; the last one frees the folio.
    ///
    /// # Panics
    /// On a folio whose refcount is already 0 (double put), and — from the
    /// allocator's debug checks — on freeing a folio still mapped, locked or
    /// queued for deferred split.
    #[inline]
    pub fn put(self) {
        self.put_many(1);
    }

    /// Drops `n` references.
    #[inline]
    pub fn put_many(self, n: u32) {
        let rc = &self.head().refcount;
        // Dropping the last references needs no read-modify-write: a holder
        // of every reference has no one to race with, because references are
        // only ever taken from an existing one.  That saves an atomic RMW
        // (~6 ns) on every free.  The one speculative "get unless zero" is
        // LRU isolation, which only looks at folios on the LRU side
        // (`LRU` / `LRU_BATCH`, which become `LRU` without a reference when
        // a batch drains): those take the decrement below.
        if rc.load(Acquire) == n && !self.lru_side() {
            rc.store(0, Relaxed);
            self.alloc.release_folio(self.idx);
            return;
        }
        let old = rc.fetch_sub(n, Release);
        if old == n {
            // Pair with every other CPU's releasing decrement before we
            // reuse the memory.
            fence(Acquire);
            self.alloc.release_folio(self.idx);
        } else if old < n {
            self.put_below_zero(old, n);
        }
    }

    /// [`Self::put_many`] that leaves the freeing to the caller: returns
    /// the folio's index when these were its last references, to be
    /// passed (with others) to the allocator's batch release.
    #[inline]
    pub(crate) fn put_many_deferred(self, n: u32) -> Option<u32> {
        let rc = &self.head().refcount;
        if rc.load(Acquire) == n && !self.lru_side() {
            rc.store(0, Relaxed);
            return Some(self.idx);
        }
        let old = rc.fetch_sub(n, Release);
        if old == n {
            fence(Acquire);
            Some(self.idx)
        } else {
            if old < n {
                self.put_below_zero(old, n);
            }
            None
        }
    }

    /// On an LRU list or in an add batch, where isolation may take a
    /// speculative reference (see [`Self::put_many`]).
    #[inline]
    fn lru_side(&self) -> bool {
        self.head().flags.load(Relaxed) & crate::reclaim::lru::F_LRU_ANY != 0
    }

    #[cold]
    #[inline(never)]
    fn put_below_zero(self, old: u32, n: u32) -> ! {
        panic!(
            "folio put below zero (double free?): had {old}, dropping {n}: {}",
            self.alloc.memmap().dump(self.pfn())
        );
    }

    // ----- mapcounts --------------------------------------------------

    /// Every PTE and PMD mapping of any page of the folio.
    #[inline]
    pub fn large_mapcount(&self) -> i32 {
        self.head().mapcount.load(Relaxed)
    }

    /// Adds `delta` (negative to unmap) to the large mapcount; returns the
    /// new value.
    #[inline]
    pub fn add_large_mapcount(&self, delta: i32) -> i32 {
        let new = self.head().mapcount.fetch_add(delta, Relaxed) + delta;
        debug_assert!(new >= 0, "large mapcount below zero: {}", self.dump());
        new
    }

    /// Adds `delta` mappings (negative to unmap) made by address space
    /// `mm_id` to the large mapcount and, for a large folio, to the
    /// owner slots (Linux 6.15's mm ids, see [`MmIds`]); returns the new
    /// large mapcount.  The slots and the large mapcount change together
    /// under the slot word's lock bit, so the "one owner holds every
    /// mapping" test below always sees counts that add up.
    ///
    /// Mapping: the owner of a slot adds to it; a newcomer takes an empty
    /// slot (marking the folio maybe-shared if anything else maps it) or,
    /// with both slots taken, marks it maybe-shared and gets no slot.
    /// Unmapping: the owner's slot drops; when it empties (or the space had
    /// no slot), the maybe-shared mark goes if one remaining slot holds
    /// every remaining mapping.  A slot counts its space's mappings exactly
    /// unless the space mapped some while it had no slot (then the folio
    /// is marked shared and the slot may count fewer); so "not shared and
    /// one slot holds them all" is exact, and "exclusive" is never wrong.
    pub fn add_mapcount_mm(&self, mm_id: u64, delta: i32) -> i32 {
        if self.order() == 0 {
            return self.add_large_mapcount(delta);
        }
        let s = self.alloc.memmap().at(self.idx + 1);
        let mut w = loop {
            let old = s.owner.fetch_or(MM_IDS_LOCK, Acquire);
            if old & MM_IDS_LOCK == 0 {
                break old;
            }
            while s.owner.load(Relaxed) & MM_IDS_LOCK != 0 {
                crate::sync::pause();
            }
        };
        let total = self.head().mapcount.load(Relaxed) + delta;
        debug_assert!(total >= 0, "large mapcount below zero: {}", self.dump());
        self.head().mapcount.store(total, Relaxed);
        let cnt = [&s.mapcount, &s.entire_mapcount];
        let mut c = [cnt[0].load(Relaxed), cnt[1].load(Relaxed)];
        let id = mm_id & MAX_MM_ID;
        let slot = (0..2).find(|&i| c[i] > 0 && mm_ids_slot(w, i) == id);
        if delta > 0 {
            match slot.or_else(|| (0..2).find(|&i| c[i] == 0)) {
                Some(i) => {
                    if c[i] == 0 {
                        let sh = i as u32 * OWNER_MM_ID_BITS;
                        w = (w & !(MAX_MM_ID << sh)) | (id << sh);
                        if total > delta {
                            w |= MM_IDS_SHARED;
                        }
                    }
                    c[i] += delta;
                    cnt[i].store(c[i], Relaxed);
                }
                None => w |= MM_IDS_SHARED,
            }
        } else if delta < 0 {
            if let Some(i) = slot {
                // Below zero when the space took the slot while it already
                // had mappings from a time it had none (a third space, with
                // the folio marked shared): the slot is just freed then.
                c[i] = (c[i] + delta).max(0);
                cnt[i].store(c[i], Relaxed);
            }
            if slot.is_none_or(|i| c[i] == 0) && c.contains(&total) {
                w &= !MM_IDS_SHARED;
            }
        }
        s.owner.store(w & !MM_IDS_LOCK, Release);
        total
    }

    /// Linux's `folio_maybe_mapped_shared`: some address space other than
    /// one maps the folio, or may (a third space that got no slot, until
    /// one slot again holds every mapping).  Never a false "exclusive".
    #[inline]
    pub fn maybe_mapped_shared(&self) -> bool {
        let total = self.large_mapcount();
        if self.order() == 0 || total <= 1 {
            return total > 1;
        }
        self.mm_ids().shared
    }

    /// True if `mm_id` holds every mapping of the folio (and there is at
    /// least one): exclusive to that address space.
    pub fn mapped_exclusively_by(&self, mm_id: u64) -> bool {
        if self.order() == 0 {
            return self.large_mapcount() == 1;
        }
        let ids = self.mm_ids();
        let total = self.large_mapcount();
        total > 0 && !ids.shared && ids.mapcount_of(mm_id) == total
    }

    /// A snapshot of the owner slots (all empty for an order-0 folio).
    pub fn mm_ids(&self) -> MmIds {
        if self.order() == 0 {
            return MmIds::default();
        }
        let s = self.alloc.memmap().at(self.idx + 1);
        let w = s.owner.load(Acquire);
        let c = [s.mapcount.load(Relaxed), s.entire_mapcount.load(Relaxed)];
        MmIds {
            slots: [0, 1].map(|i| (c[i] > 0).then_some((mm_ids_slot(w, i), c[i]))),
            shared: w & MM_IDS_SHARED != 0,
        }
    }

    /// PMD mappings of the whole folio.
    #[inline]
    pub fn entire_mapcount(&self) -> i32 {
        self.head().entire_mapcount.load(Relaxed)
    }

    /// Adds `delta` to the entire (PMD) mapcount; returns the new value.
    #[inline]
    pub fn add_entire_mapcount(&self, delta: i32) -> i32 {
        let new = self.head().entire_mapcount.fetch_add(delta, Relaxed) + delta;
        debug_assert!(new >= 0, "entire mapcount below zero: {}", self.dump());
        new
    }

    #[inline]
    pub fn is_mapped(&self) -> bool {
        self.large_mapcount() > 0
    }

    /// References beyond one per mapping: pins, or the caller's own.
    #[inline]
    pub fn extra_refs(&self) -> i64 {
        self.refcount() as i64 - self.large_mapcount() as i64
    }

    // ----- reverse-map owner ------------------------------------------

    /// Marks the folio anonymous and records its owner: address space
    /// `mm_id` (≤ [`MAX_MM_ID`]) maps page 0 at virtual page index `vpn`
    /// (`va >> 12`, < 2^46).
    #[inline]
    pub fn set_anon_owner(&self, mm_id: u64, vpn: u64) {
        self.set_anon_owner_flags(mm_id, vpn, PageFlags::empty());
    }

    /// [`Self::set_anon_owner`] that also sets `extra` in the same atomic
    /// operation (a new folio's LRU flag, on the fault path).
    #[inline]
    pub(crate) fn set_anon_owner_flags(&self, mm_id: u64, vpn: u64, extra: PageFlags) {
        assert!(mm_id <= MAX_MM_ID && vpn < (1 << OWNER_VPN_BITS));
        self.set_owner_raw((mm_id << OWNER_VPN_BITS) | vpn);
        self.set_flags(PageFlags::ANON | extra);
    }

    /// `(mm_id, vpn)` of an anonymous folio.
    #[inline]
    pub fn anon_owner(&self) -> Option<(u64, u64)> {
        if !self.is_anon() {
            return None;
        }
        let w = self.owner_raw();
        Some((w >> OWNER_VPN_BITS, w & ((1 << OWNER_VPN_BITS) - 1)))
    }

    /// The raw owner (62 bits; for non-anonymous owners later).  Only
    /// meaningful after the folio's user set it: allocation does not clear
    /// it, so that the allocator's bits never need a plain store.
    #[inline]
    pub fn owner_raw(&self) -> u64 {
        self.head().owner.load(Relaxed) & OWNER_USER_BITS
    }

    /// Sets the raw owner (`w` must fit in 62 bits).
    #[inline]
    pub fn set_owner_raw(&self, w: u64) {
        assert!(
            w & OWNER_ALLOCATOR_BITS == 0,
            "owner {w:#x} overlaps the allocator's bits"
        );
        let _ = self.head().owner.fetch_update(Relaxed, Relaxed, |old| {
            Some((old & OWNER_ALLOCATOR_BITS) | w)
        });
    }

    /// A snapshot of the head descriptor.
    pub fn dump(&self) -> FrameDump {
        self.alloc.memmap().dump(self.pfn())
    }
}

impl PartialEq for Folio<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.idx == other.idx && core::ptr::eq(self.alloc, other.alloc)
    }
}

impl Eq for Folio<'_> {}

impl fmt::Debug for Folio<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Folio({})", self.dump())
    }
}

/// One folio reference, owned: dropping it drops the reference (freeing
/// the folio if it was the last), cloning takes another.  Dereferences to
/// the borrowed [`Folio`] view.  See the module doc for when a reference
/// is a `FolioRef` and when it belongs to a mapping.
#[must_use = "dropping a FolioRef drops its reference at once"]
pub struct FolioRef<'a> {
    folio: Folio<'a>,
}

impl<'a> FolioRef<'a> {
    /// Takes ownership of a reference the caller holds on `folio` (a fresh
    /// allocation's, or one `into_raw` handed out), so that it is dropped
    /// on every path from here.
    #[inline]
    pub fn from_raw(folio: Folio<'a>) -> Self {
        Self { folio }
    }

    /// Gives the reference away without dropping it: the caller now
    /// accounts for it by other means — normally a page-table mapping it
    /// was just written into (the mapping owns it from then on).  No
    /// atomic operation happens, which is what keeps the fault path's
    /// allocate-and-map as cheap as a hand-written `put` on failure.
    #[inline]
    pub fn into_raw(self) -> Folio<'a> {
        let f = self.folio;
        core::mem::forget(self);
        f
    }

    /// The borrowed view (also reachable through `Deref`).
    #[inline]
    pub fn folio(&self) -> Folio<'a> {
        self.folio
    }
}

impl<'a> core::ops::Deref for FolioRef<'a> {
    type Target = Folio<'a>;

    #[inline]
    fn deref(&self) -> &Folio<'a> {
        &self.folio
    }
}

impl Clone for FolioRef<'_> {
    #[inline]
    fn clone(&self) -> Self {
        self.folio.get_ref()
    }
}

impl Drop for FolioRef<'_> {
    #[inline]
    fn drop(&mut self) {
        self.folio.put();
    }
}

impl fmt::Debug for FolioRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FolioRef({})", self.folio.dump())
    }
}

/// The folio lock, held: dropping the guard releases it.  Holds no
/// reference (see the module doc).
#[must_use = "dropping a FolioLockGuard unlocks the folio at once"]
pub struct FolioLockGuard<'a> {
    folio: Folio<'a>,
}

impl<'a> FolioLockGuard<'a> {
    /// A guard for a lock the caller already holds and hands over (the
    /// split protocol's sub-folios come out of `split_meta` locked).
    #[inline]
    pub(crate) fn assume_locked(folio: Folio<'a>) -> Self {
        debug_assert!(
            folio.test(PageFlags::LOCKED),
            "not locked: {}",
            folio.dump()
        );
        Self { folio }
    }

    /// Keeps the folio locked but stops the guard from releasing it: the
    /// caller takes over the unlock (or hands the lock on, as a split does
    /// to its sub-folios).
    #[inline]
    pub(crate) fn into_raw(self) -> Folio<'a> {
        let f = self.folio;
        core::mem::forget(self);
        f
    }

    /// The locked folio.
    #[inline]
    pub fn folio(&self) -> Folio<'a> {
        self.folio
    }
}

impl<'a> core::ops::Deref for FolioLockGuard<'a> {
    type Target = Folio<'a>;

    #[inline]
    fn deref(&self) -> &Folio<'a> {
        &self.folio
    }
}

impl Drop for FolioLockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.folio.unlock();
    }
}

/// One page of a folio.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Page<'a> {
    folio: Folio<'a>,
    idx: u32,
}

impl<'a> Page<'a> {
    #[inline]
    fn desc(&self) -> &'a FrameDesc {
        self.folio.alloc.memmap().at(self.idx)
    }

    #[inline]
    pub fn folio(&self) -> Folio<'a> {
        self.folio
    }

    /// Index of the page within its folio.
    #[inline]
    pub fn index(&self) -> u64 {
        (self.idx - self.folio.idx) as u64
    }

    #[inline]
    pub fn pfn(&self) -> u64 {
        self.folio.alloc.memmap().pfn_of(self.idx)
    }

    #[inline]
    pub fn pa(&self) -> u64 {
        self.pfn() << PAGE_SHIFT
    }

    #[inline]
    pub fn is_anon_exclusive(&self) -> bool {
        self.desc().page_flags().contains(PageFlags::ANON_EXCLUSIVE)
    }

    #[inline]
    pub fn set_anon_exclusive(&self) {
        self.desc()
            .flags
            .fetch_or(PageFlags::ANON_EXCLUSIVE.bits(), Relaxed);
        if self.idx != self.folio.idx {
            // Tell the free path this folio's tails need their flags
            // cleared (it does not touch tails otherwise).  The head is hot
            // and the hint is set once, so the load saves an atomic per page.
            let h = &self.folio.head().flags;
            if h.load(Relaxed) & TAILS_AE == 0 {
                h.fetch_or(TAILS_AE, Relaxed);
            }
        }
    }

    #[inline]
    pub fn clear_anon_exclusive(&self) {
        self.desc()
            .flags
            .fetch_and(!PageFlags::ANON_EXCLUSIVE.bits(), Relaxed);
    }
}

impl fmt::Debug for Page<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Page(pfn {:#x}, #{} of {:?})",
            self.pfn(),
            self.index(),
            self.folio
        )
    }
}

/// An intrusive FIFO of folios — the deferred-split queue — threaded
/// through the link fields of each large folio's *second* frame (head +
/// 1), since the head's links are the LRU's.  The links hold head indices.
/// Membership is the folio's `DEFERRED_SPLIT` flag, so a folio is on at
/// most one such list.  An order-0 folio has no second frame and uses its
/// head's links: the deferred-split queue never holds one, and other
/// users (tests holding raw allocations) queue folios that are not on the
/// LRU.
///
/// The list is plain data: the owner wraps it in a lock, and that lock
/// protects the link fields of every queued folio.  Queued folios hold no
/// reference; they must be removed before their last `put` (the allocator's
/// debug checks catch it otherwise).
pub struct FolioList {
    head: u32,
    tail: u32,
    len: usize,
}

/// The descriptor carrying [`FolioList`] links for the folio headed at
/// `idx`: its second frame if large, else the head itself.
#[inline]
fn link_node(mm: &crate::physmem::memmap::Memmap<'_>, idx: u32) -> u32 {
    if mm.at(idx).order() > 0 { idx + 1 } else { idx }
}

impl FolioList {
    pub const fn new() -> Self {
        Self {
            head: NO_FRAME,
            tail: NO_FRAME,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `f`; false (and no change) if it is already queued.
    pub fn push_back(&mut self, f: Folio<'_>) -> bool {
        if f.test_and_set(PageFlags::DEFERRED_SPLIT) {
            return false;
        }
        let mm = f.alloc.memmap();
        debug_assert!(
            f.is_large() || !f.test(PageFlags::LRU),
            "queueing an order-0 folio that is on the LRU: {}",
            f.dump()
        );
        let d = mm.at(link_node(&mm, f.idx));
        d.link_next.store(NO_FRAME, Relaxed);
        d.link_prev.store(self.tail, Relaxed);
        if self.tail == NO_FRAME {
            self.head = f.idx;
        } else {
            mm.at(link_node(&mm, self.tail))
                .link_next
                .store(f.idx, Relaxed);
        }
        self.tail = f.idx;
        self.len += 1;
        true
    }

    /// Unlinks `f`; false if it was not queued.
    pub fn remove(&mut self, f: Folio<'_>) -> bool {
        if !f.test(PageFlags::DEFERRED_SPLIT) {
            return false;
        }
        let mm = f.alloc.memmap();
        let d = mm.at(link_node(&mm, f.idx));
        let prev = d.link_prev.load(Relaxed);
        let next = d.link_next.load(Relaxed);
        if prev == NO_FRAME {
            self.head = next;
        } else {
            mm.at(link_node(&mm, prev)).link_next.store(next, Relaxed);
        }
        if next == NO_FRAME {
            self.tail = prev;
        } else {
            mm.at(link_node(&mm, next)).link_prev.store(prev, Relaxed);
        }
        d.link_prev.store(NO_FRAME, Relaxed);
        d.link_next.store(NO_FRAME, Relaxed);
        f.clear_flags(PageFlags::DEFERRED_SPLIT);
        self.len -= 1;
        true
    }

    /// Removes and returns the oldest folio (`alloc` must be the allocator
    /// every queued folio came from).
    pub fn pop_front<'a>(&mut self, alloc: &'a BuddyAllocator<'a>) -> Option<Folio<'a>> {
        if self.head == NO_FRAME {
            return None;
        }
        let f = Folio::from_head(alloc, self.head);
        self.remove(f);
        Some(f)
    }

    /// The queued folios, oldest first.
    pub fn iter<'a>(&self, alloc: &'a BuddyAllocator<'a>) -> impl Iterator<Item = Folio<'a>> + 'a {
        let mut i = self.head;
        core::iter::from_fn(move || {
            if i == NO_FRAME {
                return None;
            }
            let f = Folio::from_head(alloc, i);
            let mm = alloc.memmap();
            i = mm.at(link_node(&mm, i)).link_next.load(Relaxed);
            Some(f)
        })
    }
}

impl Default for FolioList {
    fn default() -> Self {
        Self::new()
    }
}
