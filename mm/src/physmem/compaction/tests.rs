//! Host tests of compaction: the scanners and the destination pool run on
//! a real allocator over emulated memory, with a fake migrator that moves
//! test-owned, unmapped folios (copies the data, moves the LRU place and
//! the owner's reference, frees the source), so no page tables are
//! needed.  The migration core's own tests cover mapped folios.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

use super::*;
use crate::addr::PAGE_SHIFT;
use crate::cpu::SingleCpu;
use crate::emu::EmuMem;
use crate::physmem::buddy::{AllocFlags, NR_ORDERS};
use crate::physmem::folio::FolioRef;
use crate::physmem::memmap::{FrameDesc, Memmap};

const BASE: u64 = 0x4000_0000;
const MIB: u64 = 1 << 20;

/// Test-owned folios, keyed by a number stored in their anon owner (the
/// "vpn") and written into every page.
struct Owned<'a> {
    alloc: &'a BuddyAllocator<'a>,
    folios: RefCell<BTreeMap<u64, Folio<'a>>>,
    /// Make every migration fail (as the kernel's stub does).
    fail: Cell<bool>,
    /// Destinations the migrator was handed (pfn, order).
    dsts: RefCell<Vec<(u64, u32)>>,
}

impl<'a> Owned<'a> {
    fn new(alloc: &'a BuddyAllocator<'a>) -> Self {
        Self {
            alloc,
            folios: RefCell::new(BTreeMap::new()),
            fail: Cell::new(false),
            dsts: RefCell::new(Vec::new()),
        }
    }

    /// Allocates a movable folio of `order` as a user folio (anonymous,
    /// on the LRU) filled with `key`'s pattern.
    fn make(&self, key: u64, order: u32) -> bool {
        let Ok(f) = self.alloc.alloc(order, AllocFlags::USER) else {
            return false;
        };
        f.set_anon_owner(1, key);
        assert!(self.alloc.lru().add(self.alloc, f.idx()));
        for i in 0..f.nr_pages() {
            self.alloc
                .phys()
                .store(f.pa() + (i << PAGE_SHIFT), pattern(key, i));
        }
        self.folios.borrow_mut().insert(key, f);
        true
    }

    fn free(&self, key: u64) {
        let f = self.folios.borrow_mut().remove(&key).unwrap();
        f.put();
    }

    /// (pfn, order) of every owned folio.
    fn layout(&self) -> BTreeMap<u64, (u64, u32)> {
        self.folios
            .borrow()
            .iter()
            .map(|(&k, f)| (k, (f.pfn(), f.order())))
            .collect()
    }

    /// Every owned folio holds its pattern, is on the LRU and has one
    /// reference.
    fn check_data(&self) {
        for (&k, f) in self.folios.borrow().iter() {
            assert!(
                f.test(PageFlags::LRU) || f.test(PageFlags::LRU_BATCH),
                "{k} off the LRU"
            );
            assert_eq!(f.refcount(), 1, "{k}");
            for i in 0..f.nr_pages() {
                assert_eq!(
                    self.alloc.phys().load(f.pa() + (i << PAGE_SHIFT)),
                    pattern(k, i)
                );
            }
        }
    }
}

fn pattern(key: u64, page: u64) -> u64 {
    0x5eed_0000_0000_0000 | (key << 16) | page
}

impl<'a> FolioMigrator<'a> for Owned<'a> {
    fn migrate_to(&self, src: Folio<'a>, dst: Folio<'a>) -> Result<(), MigrateError> {
        assert_eq!(src.order(), dst.order(), "destination of another order");
        assert_eq!(
            self.alloc.pageblock_migratetype(dst.pfn()),
            Migratetype::Movable,
            "destination in an unmovable pageblock"
        );
        self.dsts.borrow_mut().push((dst.pfn(), dst.order()));
        if self.fail.get() {
            return Err(MigrateError::Busy);
        }
        let (_, key) = src.anon_owner().unwrap();
        // The owner's reference and the isolation reference.
        assert_eq!(src.refcount(), 2);
        self.alloc.phys().copy(dst.pa(), src.pa(), src.size());
        dst.set_anon_owner(1, key);
        if src.is_mlocked() {
            src.munlock();
            dst.mlock();
        }
        // The list the source was on; `putback` takes a reference of its
        // own, the allocation's stays for the owner.
        dst.get();
        self.alloc
            .lru()
            .putback(FolioRef::from_raw(dst), src.test(PageFlags::ACTIVE));
        let old = self.folios.borrow_mut().insert(key, dst).unwrap();
        assert_eq!(old.pfn(), src.pfn());
        // The owner's reference; the caller drops the isolation one.
        src.put();
        Ok(())
    }
}

/// Runs `f` on an allocator over `mib` MiB, all free.
fn with_alloc(mib: u64, f: impl FnOnce(&BuddyAllocator<'_>)) {
    let n = (mib * MIB) >> PAGE_SHIFT;
    let d: Vec<FrameDesc> = (0..n).map(|_| FrameDesc::new()).collect();
    let mem = EmuMem::new(BASE, mib * MIB);
    let a = BuddyAllocator::new(Memmap::new(&d, BASE >> PAGE_SHIFT), &mem, &SingleCpu);
    a.add_free_range(BASE, BASE + mib * MIB);
    f(&a);
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Fills memory with a random mix of 4K/16K/64K folios (plus the PMD
/// folios in `pmd`, allocated first, so low), then frees a random half
/// of the small ones.  Returns the next key.
fn churn(o: &Owned<'_>, seed: u64, pmd: u32) -> u64 {
    let mut rng = Rng(seed);
    let mut key = 0;
    for _ in 0..pmd {
        assert!(o.make(key, PAGEBLOCK_ORDER));
        key += 1;
    }
    let first_small = key;
    loop {
        let order = [0, 2, 4][(rng.next() % 3) as usize];
        if !o.make(key, order) && !o.make(key, 0) {
            break;
        }
        key += 1;
    }
    for k in first_small..key {
        if rng.next().is_multiple_of(2) {
            o.free(k);
        }
    }
    o.alloc.drain_all();
    key
}

fn free_blocks_at_least(a: &BuddyAllocator<'_>, order: u32) -> u64 {
    let c = a.zone_free_counts(BASE >> PAGE_SHIFT);
    (order as usize..NR_ORDERS)
        .map(|o| c[o] << (o as u32 - order))
        .sum()
}

fn compact<'a>(a: &'a BuddyAllocator<'a>, o: &Owned<'a>, cc: &CompactControl) -> CompactResult {
    let (s, e) = a.zone_span(BASE >> PAGE_SHIFT);
    compact_zone(a, o, s, e, cc)
}

fn check(a: &BuddyAllocator<'_>) {
    if let Err(e) = a.check_invariants() {
        panic!("invariants broken:\n{e}");
    }
}

/// After a fragmenting churn, a whole-zone run turns scattered free
/// order-0 pages into free 64K and 2M blocks; every moved 16K/64K folio
/// keeps its order and data; the PMD folios stay; free frames are back to
/// what they were (the pool returned everything).
#[test]
fn whole_zone_run_makes_64k_and_2m_blocks() {
    with_alloc(32, |a| {
        let o = Owned::new(a);
        churn(&o, 0x1234_5678, 2);
        let free_before = a.stats().free;
        let m64_before = free_blocks_at_least(a, 4);
        let o0_before = a.buddyinfo().blocks(0);
        let m2_before = free_blocks_at_least(a, PAGEBLOCK_ORDER);
        let before = o.layout();
        let r = compact(a, &o, &CompactControl::whole_zone(true));
        check(a);
        o.check_data();
        assert_eq!(a.stats().free, free_before, "frames leaked: {r:?}");
        assert_eq!(r.status, CompactStatus::Complete);
        assert!(r.migrated > 0 && r.failed == 0, "{r:?}");
        assert!(r.migrate_scanned > 0 && r.free_scanned > 0 && r.isolated > 0);
        let m64 = free_blocks_at_least(a, 4);
        let m2 = free_blocks_at_least(a, PAGEBLOCK_ORDER);
        // About half of 32 MiB is free: most of it should now be whole
        // pageblocks, where before the churn left none.
        assert_eq!(m2_before, 0);
        assert!(m2 >= 5, "2M blocks {m2_before} -> {m2}: {r:?}");
        assert!(m64 > m64_before, "64K blocks {m64_before} -> {m64}");
        let o0 = a.buddyinfo().blocks(0);
        assert!(o0 * 4 < o0_before, "free 4K blocks {o0_before} -> {o0}");
        let after = o.layout();
        let mut moved_large = 0;
        for (k, (pfn, order)) in &before {
            let (npfn, norder) = after[k];
            assert_eq!(*order, norder, "folio {k} changed order");
            if *order >= PAGEBLOCK_ORDER {
                assert_eq!(*pfn, npfn, "a PMD folio moved");
            } else if *pfn != npfn && *order > 0 {
                moved_large += 1;
            }
        }
        assert!(moved_large > 0, "no 16K/64K folio moved");
        // Moved folios only go up: the free scanner works from the top.
        let dsts = o.dsts.borrow();
        assert!(dsts.iter().all(|&(pfn, _)| pfn >= BASE >> PAGE_SHIFT));
    });
}

/// A run for order 4 moves only folios below order 4 (16K and 4K),
/// stops once a free 64K block exists, and never takes a 64K-or-larger
/// free block as a destination.
#[test]
fn targeted_run_stops_at_success_and_skips_target_order() {
    with_alloc(16, |a| {
        let o = Owned::new(a);
        // Fill with 4K and 64K folios, free 4K ones in a pattern that
        // leaves no free 64K block: one free page per 16.
        let mut key = 0;
        while o.make(key, if key % 4 == 0 { 4 } else { 0 }) || o.make(key, 0) {
            key += 1;
        }
        let keys: Vec<u64> = o.folios.borrow().keys().copied().collect();
        for k in keys {
            if k % 4 != 0 && k % 3 == 0 {
                o.free(k);
            }
        }
        a.drain_all();
        assert_eq!(free_blocks_at_least(a, 4), 0);
        let before = o.layout();
        let free_before = a.stats().free;
        let r = compact(
            a,
            &o,
            &CompactControl::for_order(4, MigrateMode::Sync, true),
        );
        check(a);
        o.check_data();
        assert_eq!(a.stats().free, free_before);
        assert_eq!(r.status, CompactStatus::Success, "{r:?}");
        assert!(free_blocks_at_least(a, 4) >= 1);
        for (k, (pfn, order)) in o.layout() {
            if order >= 4 {
                assert_eq!(before[&k].0, pfn, "a 64K folio moved in an order-4 run");
            }
        }
        assert!(o.dsts.borrow().iter().all(|&(_, ord)| ord < 4));
    });
}

/// The free scanner never touches an unmovable pageblock: its free
/// blocks stay exactly as they were, and no destination lies in it.
/// Async runs leave movable folios in unmovable pageblocks alone.
#[test]
fn unmovable_pageblocks_untouched() {
    with_alloc(16, |a| {
        let o = Owned::new(a);
        // Kernel pages: the first steal retags a whole 4 MiB block
        // unmovable; free every other page to leave holes in it.
        let mut kernel = Vec::new();
        while let Ok(f) = a.alloc(0, AllocFlags::KERNEL) {
            kernel.push(f);
            if kernel.len() == 1024 {
                break;
            }
        }
        let unmov: BTreeSet<u64> = kernel.iter().map(|f| f.pfn() >> PAGEBLOCK_ORDER).collect();
        let mut keep = Vec::new();
        for (i, f) in kernel.into_iter().enumerate() {
            if i % 2 == 0 {
                f.put();
            } else {
                keep.push(f);
            }
        }
        churn(&o, 99, 0);
        let in_unmovable = |a: &BuddyAllocator<'_>| {
            let mut v = Vec::new();
            a.for_each_free_block(|pfn, ord, _| {
                if unmov.contains(&(pfn >> PAGEBLOCK_ORDER)) {
                    v.push((pfn, ord));
                }
            });
            v.sort();
            v
        };
        let holes = in_unmovable(a);
        assert!(!holes.is_empty());
        let before = o.layout();
        let r = compact(
            a,
            &o,
            &CompactControl::for_order(9, MigrateMode::Async, true),
        );
        check(a);
        o.check_data();
        assert_eq!(in_unmovable(a), holes, "{r:?}");
        // Async: folios inside unmovable pageblocks stayed.
        for (k, (pfn, _)) in o.layout() {
            if unmov.contains(&(before[&k].0 >> PAGEBLOCK_ORDER)) {
                assert_eq!(before[&k].0, pfn);
            }
        }
        let r = compact(a, &o, &CompactControl::whole_zone(true));
        check(a);
        o.check_data();
        assert!(r.status != CompactStatus::Skipped);
        for f in keep {
            f.put();
        }
    });
}

/// A migrator that fails everything (the kernel's stub until the
/// migration core lands): nothing moves, every folio is back on the LRU
/// with its data, the destinations and the pool went back to the buddy,
/// and the scanners still counted their work.
#[test]
fn failed_migrations_put_everything_back() {
    with_alloc(16, |a| {
        let o = Owned::new(a);
        churn(&o, 7, 1);
        o.fail.set(true);
        let before = o.layout();
        let free_before = a.stats().free;
        let buddy_before = a.buddyinfo();
        let lru_before = a.lru().counts(a);
        let r = compact(a, &o, &CompactControl::whole_zone(true));
        check(a);
        o.check_data();
        assert_eq!(o.layout(), before);
        assert_eq!(a.stats().free, free_before);
        assert_eq!(a.buddyinfo(), buddy_before);
        let lru = a.lru().counts(a);
        assert_eq!(
            lru.inactive_pages + lru.active_pages,
            lru_before.inactive_pages + lru_before.active_pages + lru_before.batched_pages
        );
        assert_eq!(r.migrated, 0);
        assert!(
            r.failed > 0 && r.migrate_scanned > 0 && r.free_scanned > 0,
            "{r:?}"
        );
    });
}

/// Mlocked folios stay when `compact_unevictable_allowed` is 0 and move
/// when it is 1.
#[test]
fn mlocked_folios_follow_unevictable_allowed() {
    with_alloc(16, |a| {
        let o = Owned::new(a);
        let next = churn(&o, 3, 0);
        for f in o.folios.borrow().values() {
            f.mlock();
        }
        let before = o.layout();
        let r = compact(a, &o, &CompactControl::whole_zone(false));
        assert_eq!(r.migrated, 0);
        assert_eq!(o.layout(), before);
        let r = compact(a, &o, &CompactControl::whole_zone(true));
        assert!(r.migrated > 0);
        check(a);
        o.check_data();
        assert_eq!(
            a.mlocked_pages(),
            o.layout().values().map(|&(_, ord)| 1 << ord).sum::<u64>()
        );
        for k in 0..next {
            if o.folios.borrow().contains_key(&k) {
                o.folios.borrow()[&k].munlock();
            }
        }
    });
}

#[test]
fn pool_takes_smallest_and_splits() {
    let mut p = FreePool::new();
    p.add(0x100, 4);
    p.add(0x200, 1);
    assert!(p.has(4) && !p.has(5));
    assert_eq!(p.take(1), Some(0x200));
    // 64K split for a 4K: the 4K at the bottom, 4K + 8K + 16K + 32K back.
    assert_eq!(p.take(0), Some(0x100));
    assert_eq!(p.pages(), 15);
    let mut left: Vec<(u64, u32)> = p.drain().collect();
    left.sort();
    assert_eq!(left, [(0x101, 0), (0x102, 1), (0x104, 2), (0x108, 3)]);
    assert_eq!(p.pages(), 0);
    assert_eq!(p.take(0), None);
}

/// Indices against hand-computed values: free blocks 8 x 4K, 2 x 8K,
/// 1 x 16K (16 pages in 11 blocks).
#[test]
fn indices_match_hand_computed() {
    let mut c = [0u64; NR_ORDERS];
    c[0] = 8;
    c[1] = 2;
    c[2] = 1;
    assert_eq!(
        contig_info(&c, 1),
        ContigInfo {
            free_pages: 16,
            free_blocks_total: 11,
            free_blocks_suitable: 4
        }
    );
    // Order 3: none suitable; 1000 - (1000 + 16 * 1000 / 8) / 11 = 728.
    assert_eq!(fragmentation_index(&c, 3), 728);
    // Order 4: 1000 - (1000 + 16000 / 16) / 11 = 819.
    assert_eq!(fragmentation_index(&c, 4), 819);
    assert_eq!(fragmentation_index(&c, 2), -1000);
    assert_eq!(fragmentation_index(&[0; NR_ORDERS], 3), 0);
    assert_eq!(unusable_index(&c, 0), 0);
    assert_eq!(unusable_index(&c, 1), 500);
    assert_eq!(unusable_index(&c, 2), 750);
    assert_eq!(unusable_index(&c, 3), 1000);
    assert_eq!(unusable_index(&[0; NR_ORDERS], 0), 1000);
    assert_eq!(extfrag_for_order(&c, 2), 75);
    assert_eq!(
        unusable_index_text(&c, 0, "Normal"),
        "Node 0, zone   Normal 0.000 0.500 0.750 1.000 1.000 1.000 1.000 1.000 1.000 1.000 1.000 \n"
    );
    let t = extfrag_index_text(&c, 0, "DMA32");
    assert!(
        t.starts_with("Node 0, zone    DMA32 -1.000 -1.000 -1.000  0.728  0.819 "),
        "{t:?}"
    );
    assert!(t.ends_with(" \n"));
    assert_eq!(score_wmarks(PROACTIVENESS_DEFAULT), (80, 90));
    assert_eq!(score_wmarks(100), (5, 15));
    assert_eq!(score_wmarks(0), (100, 100));
    assert_eq!(weighted_score(50, 1000, 1000), 49);
}

/// `compaction_suitable`: already satisfiable is success; too little
/// free memory, or a fragmentation index at or below the threshold
/// (failure for lack of memory), is skipped.
#[test]
fn suitability() {
    with_alloc(16, |a| {
        let pfn = BASE >> PAGE_SHIFT;
        assert_eq!(
            compaction_suitable(a, pfn, 9, 500),
            Some(CompactStatus::Success)
        );
        // Take everything, then free 16 scattered pages.
        let mut all = Vec::new();
        while let Ok(f) = a.alloc(0, AllocFlags::USER) {
            all.push(f);
        }
        let mut freed = 0;
        all.retain(|f| {
            let free = f.pfn() % 64 == 0 && freed < 16;
            if free {
                freed += 1;
                f.put();
            }
            !free
        });
        a.drain_all();
        // 16 pages < 2 << 4: skipped.
        assert_eq!(
            compaction_suitable(a, pfn, 4, 500),
            Some(CompactStatus::Skipped)
        );
        // Order 2 (not costly, 16 >= 2 << 2): may help.
        assert_eq!(compaction_suitable(a, pfn, 2, 500), None);
        // Order 3: 16 >= 2 << 3 but not above the costly order: may help.
        assert_eq!(compaction_suitable(a, pfn, 3, 500), None);
        for f in all {
            f.put();
        }
        // Free memory in four 1M blocks: a 2M allocation fails for lack
        // of memory more than for fragmentation (index 1000 - 1000/4 -
        // 1000 * 256/512 = 250).
        let mut all = Vec::new();
        while let Ok(f) = a.alloc(8, AllocFlags::USER) {
            all.push(f);
        }
        let mut n = 0;
        all.retain(|f| {
            let free = n < 4 && f.pfn() % 512 == 0;
            if free {
                n += 1;
                f.put();
            }
            !free
        });
        a.drain_all();
        assert_eq!(fragmentation_index(&a.zone_free_counts(pfn), 9), 250);
        assert_eq!(
            compaction_suitable(a, pfn, 9, 500),
            Some(CompactStatus::Skipped)
        );
        assert_eq!(compaction_suitable(a, pfn, 9, 249), None);
        // One 1M block: Linux's formula goes negative (1000 - 1000 - 500),
        // which is not in 0..=threshold, and prints as " 0.-500".
        for f in all.drain(..4) {
            f.put();
        }
        let c = [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(fragmentation_index(&c, 9), -500);
        assert!(extfrag_index_text(&c, 0, "Normal").ends_with(" 0.-500  0.-250 \n"));
        for f in all {
            f.put();
        }
    });
}

/// The `defrag` table of notes 5.6 (Linux's `vma_thp_gfp_mask`).
#[test]
fn defrag_modes_pick_linux_requests() {
    use crate::thp::DefragMode as D;
    let direct = |retry| Some(CompactRequest::Direct { retry });
    let wake = Some(CompactRequest::Wake);
    let want = [
        (D::Always, direct(true), direct(false)),
        (D::Defer, wake, wake),
        (D::DeferMadvise, direct(true), wake),
        (D::Madvise, direct(true), None),
        (D::Never, None, None),
    ];
    for (mode, madvised, other) in want {
        assert_eq!(mode.fault_compaction(true), madvised, "{mode:?}");
        assert_eq!(mode.fault_compaction(false), other, "{mode:?}");
    }
}
