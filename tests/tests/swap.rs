//! Swap-out and swap-in over both entry formats, on an in-memory swap
//! area: data survives at every folio order, large folios go out whole,
//! fork shares swap entries, zap gives slots back, I/O errors are SIGBUS.

mod mmtest;

use std::sync::atomic::Ordering;

use mm::aspace::Access;
use mm::aspace::Fault;
use mm::aspace::swap::{Pageout, pageout_folio};
use mm::paging::{Entry, PagingArch};
use mm::thp::{MthpStat, VmEvent};
use mmtest::swapdisk::MemDisk;
use mmtest::*;

/// A disk whose writes complete at once.
fn swapon<A: PagingArch>(env: &Env<'_, A>, slots: u64) -> &'static MemDisk {
    mmtest::swapdisk::swapon(env, slots, false)
}

fn is_swap_entry<A: PagingArch>(env: &Env<'_, A>, mm: &mm::aspace::Mm<'_, A>, va: u64) -> bool {
    let _ = env;
    mm.with_page_table(|pt| matches!(pt.lookup(va).entry, Entry::Swap(_)))
}

/// 4K, 64K and 2M folios go out whole and come back with their data;
/// slots and frames return to baseline.
fn round_trip_at_order<A: PagingArch>(order: u32) {
    run::<A>(32 * MIB, |env| {
        env.only_order(order);
        swapon(env, 4096);
        let mm = env.mm();
        let len = 4 * M2;
        let va = mm
            .mmap(0x7000_0000_0000, len, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&mm, va, len, 0x5a5a);
        let free0 = env.buddy.stats().free;
        let f = env.folio_at(&mm, va + 5 * K64).unwrap();
        assert_eq!(f.order(), order);
        let nr = f.nr_pages();
        let at = va + 5 * K64 - ((5 * K64) % (nr * K4));
        assert_eq!(pageout_folio(&[&mm], &f.get_ref()), Pageout::Freed(nr));
        assert_eq!(env.buddy.stats().free, free0 + nr, "folio freed");
        assert_eq!(mm.swapents(), nr);
        assert!(is_swap_entry(env, &mm, at) && is_swap_entry(env, &mm, at + (nr - 1) * K4));
        assert_eq!(env.event(VmEvent::PswpOut), nr);
        if order > 0 {
            assert_eq!(env.mthp(order, MthpStat::Swpout), 1);
            assert_eq!(env.mthp(order, MthpStat::SwpoutFallback), 0);
        }
        let (total, free) = env.ctx.swap.totals();
        assert_eq!(total - free, nr, "one slot per page");
        env.check(&[&mm]);
        // Back in: data intact.
        env.check_pages(&mm, va, len, 0x5a5a);
        assert_eq!(mm.swapents(), 0);
        let back = env.folio_at(&mm, at).unwrap();
        // mTHP orders come back whole; a PMD folio comes back as 4K pages
        // (Linux never swaps in at the PMD order).
        let want = if order == 9 { 0 } else { order };
        assert_eq!(back.order(), want);
        // 4K pages come back with swap readahead (page-cluster 3), as
        // Linux: windows of 1, 2, 4 and then 8 pages, one major fault each
        // (1 + 1 + 1 + 64 for 512 pages); the others are readahead hits.
        let maj = if order == 9 { 67 } else { nr >> want };
        assert_eq!(env.event(VmEvent::PgMajFault), maj, "one per read");
        assert_eq!(env.event(VmEvent::SwapRa), (nr >> want) - maj);
        assert_eq!(env.event(VmEvent::SwapRaHit), (nr >> want) - maj);
        assert_eq!(env.event(VmEvent::PswpIn), nr);
        let (total, free) = env.ctx.swap.totals();
        assert_eq!(total, free, "slots freed once nothing names them");
        assert_eq!(env.ctx.swap.cache.pages(), 0);
        env.check(&[&mm]);
        mm.munmap(va, len).unwrap();
    });
}

fn round_trip_4k<A: PagingArch>() {
    round_trip_at_order::<A>(0);
}
fn round_trip_64k<A: PagingArch>() {
    round_trip_at_order::<A>(4);
}
fn round_trip_2m<A: PagingArch>() {
    round_trip_at_order::<A>(9);
}

/// A folio shared by fork is unmapped from both; each side swaps in and
/// keeps its own data after writing.
fn fork_shares_swap_entries<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        swapon(env, 4096);
        let parent = env.mm();
        let va = parent
            .mmap(0x7000_0000_0000, 64 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&parent, va, 64 * K4, 0x77);
        let child = parent.fork().unwrap();
        let f = env.folio_at(&parent, va).unwrap();
        assert_eq!(
            pageout_folio(&[&parent, &child], &f.get_ref()),
            Pageout::Freed(16)
        );
        assert_eq!((parent.swapents(), child.swapents()), (16, 16));
        env.check(&[&parent, &child]);
        // Swapped out after fork: a second fork copies the entries.
        let grandchild = child.fork().unwrap();
        assert_eq!(grandchild.swapents(), 16);
        env.write_u64(&child, va + 3 * K4, 1234);
        env.check_pages(&parent, va, 16 * K4, 0x77);
        assert_eq!(env.read_u64(&child, va + 3 * K4), 1234);
        assert_eq!(env.read_u64(&grandchild, va + 3 * K4), 0x77 ^ (va + 3 * K4));
        env.check(&[&parent, &child, &grandchild]);
        drop(grandchild);
        drop(child);
        drop(parent);
        let (total, free) = env.ctx.swap.totals();
        assert_eq!(total, free);
        assert_eq!(env.ctx.swap.cache.pages(), 0);
    });
}

/// A folio in the swap cache (swapped in by the parent, still named by
/// the child's swap entries) migrates with its cache entry: the child's
/// swap-in then finds the new folio, no I/O.
fn migrate_swap_cache_folio<A: PagingArch>() {
    use mm::aspace::migrate::{MigrateMode, migrate_folio};
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        swapon(env, 4096);
        let parent = env.mm();
        let va = parent
            .mmap(0x7000_0000_0000, 16 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&parent, va, 16 * K4, 0x31);
        let child = parent.fork().unwrap();
        let f = env.folio_at(&parent, va).unwrap();
        assert_eq!(
            pageout_folio(&[&parent, &child], &f.get_ref()),
            Pageout::Freed(16)
        );
        env.check_pages(&parent, va, 16 * K4, 0x31);
        let f = env.folio_at(&parent, va).unwrap();
        assert!(f.test(mm::physmem::frame_flags::PageFlags::SWAPCACHE));
        let d = env
            .buddy
            .alloc(4, mm::physmem::buddy::AllocFlags::USER)
            .unwrap();
        migrate_folio(&[&parent, &child], &f.get_ref(), d, MigrateMode::Sync).unwrap();
        assert_eq!(env.folio_at(&parent, va).unwrap(), d);
        assert!(d.test(mm::physmem::frame_flags::PageFlags::SWAPCACHE));
        assert_eq!(env.ctx.swap.cache.pages(), 16);
        env.check(&[&parent, &child]);
        let reads = env.event(VmEvent::PswpIn);
        env.check_pages(&child, va, 16 * K4, 0x31);
        assert_eq!(env.event(VmEvent::PswpIn), reads, "found in the cache");
        assert_eq!(env.folio_at(&child, va).unwrap(), d);
        env.check(&[&parent, &child]);
        drop(child);
        drop(parent);
        let (total, free) = env.ctx.swap.totals();
        assert_eq!(total, free);
        assert_eq!(env.ctx.swap.cache.pages(), 0);
    });
}

/// munmap of swapped-out memory gives the slots back without reading.
fn munmap_frees_slots<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        swapon(env, 4096);
        let mm = env.mm();
        let va = mm
            .mmap(0x7000_0000_0000, 64 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&mm, va, 64 * K4, 1);
        for i in 0..4 {
            let f = env.folio_at(&mm, va + i * K64).unwrap();
            assert_eq!(pageout_folio(&[&mm], &f.get_ref()), Pageout::Freed(16));
        }
        assert_eq!(mm.swapents(), 64);
        mm.munmap(va + K4, 62 * K4).unwrap();
        assert_eq!(mm.swapents(), 2);
        assert_eq!(env.ctx.swap.totals().1 + 2, env.ctx.swap.totals().0);
        assert_eq!(env.event(VmEvent::PswpIn), 0);
        env.check_pages(&mm, va, K4, 1);
        mm.munmap(va, 64 * K4).unwrap();
        assert_eq!(mm.swapents(), 0);
        assert_eq!(env.ctx.swap.totals().1, env.ctx.swap.totals().0);
    });
}

/// A read error gives SIGBUS, never wrong data; the entry stays.
fn read_error_is_sigbus<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.no_thp();
        let disk = swapon(env, 512);
        let mm = env.mm();
        let va = mm
            .mmap(0x7000_0000_0000, 4 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&mm, va, 4 * K4, 9);
        let f = env.folio_at(&mm, va).unwrap();
        assert_eq!(pageout_folio(&[&mm], &f.get_ref()), Pageout::Freed(1));
        disk.fail.store(true, Ordering::Relaxed);
        assert_eq!(env.touch(&mm, va, Access::Read), Err(Fault::Sigbus));
        assert!(is_swap_entry(env, &mm, va));
        disk.fail.store(false, Ordering::Relaxed);
        env.check_pages(&mm, va, 4 * K4, 9);
        mm.munmap(va, 4 * K4).unwrap();
    });
}

/// A 64K folio filled with `salt` at a fixed address, on a swap area of
/// one cluster, which the header makes order-0 only: no aligned run.
fn one_64k_folio_no_run<'a, A: PagingArch>(
    env: &Env<'a, A>,
    salt: u64,
) -> (mm::aspace::Mm<'a, A>, u64) {
    env.only_order(4);
    swapon(env, 512);
    let mm = env.mm();
    let va = mm
        .mmap(0x7000_0000_0000, 16 * K4, RW, ANON | MAP_FIXED)
        .unwrap();
    env.fill_pages(&mm, va, 16 * K4, salt);
    (mm, va)
}

/// No aligned run of slots for a 64K folio: it is split and counted.
fn no_run_splits_and_counts<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        let (mm, va) = one_64k_folio_no_run(env, 3);
        let f = env.folio_at(&mm, va).unwrap();
        assert_eq!(pageout_folio(&[&mm], &f.get_ref()), Pageout::Split);
        assert_eq!(env.mthp(4, MthpStat::SwpoutFallback), 1);
        let g = env.folio_at(&mm, va + 2 * K4).unwrap();
        assert_eq!(g.order(), 0);
        assert_eq!(pageout_folio(&[&mm], &g.get_ref()), Pageout::Freed(1));
        env.check_pages(&mm, va, 16 * K4, 3);
        env.check(&[&mm]);
        mm.munmap(va, 16 * K4).unwrap();
    });
}

/// MADV_PAGEOUT with no aligned run of slots: the 64K folio is split
/// (counted as a fallback) and every piece still goes out, as Linux's
/// reclaim list takes a split folio's pieces.  (Before the retry pass in
/// `madvise_reclaim`, the 16 pieces stayed mapped.)
fn madvise_pageout_takes_split_pieces<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        let (mm, va) = one_64k_folio_no_run(env, 5);
        mm.madvise(va, 16 * K4, MADV_PAGEOUT).unwrap();
        assert_eq!(env.mthp(4, MthpStat::SwpoutFallback), 1);
        assert_eq!(mm.swapents(), 16);
        env.check_pages(&mm, va, 16 * K4, 5);
        env.check(&[&mm]);
        mm.munmap(va, 16 * K4).unwrap();
    });
}

/// MADV_PAGEOUT: covered exclusive 64K folios go out whole, a partly
/// covered one is split first, a folio shared after fork is skipped.
fn madvise_pageout_rules<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        swapon(env, 4096);
        let mm = env.mm();
        let va = mm
            .mmap(0x7000_0000_0000, 64 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&mm, va, 64 * K4, 0x11);
        // Folio 0 whole, folio 1 only its first half.
        mm.madvise(va, K64 + 8 * K4, MADV_PAGEOUT).unwrap();
        assert_eq!(env.mthp(4, MthpStat::Swpout), 1);
        assert_eq!(env.mthp(4, MthpStat::Split), 1);
        assert_eq!(env.mthp(4, MthpStat::SwpoutFallback), 0);
        assert_eq!(mm.swapents(), 16 + 8);
        assert!(!is_swap_entry(env, &mm, va + K64 + 8 * K4));
        env.check(&[&mm]);
        // Shared after fork: skipped.
        let child = mm.fork().unwrap();
        mm.madvise(va + 2 * K64, K64, MADV_PAGEOUT).unwrap();
        assert_eq!(env.mthp(4, MthpStat::Swpout), 1);
        env.check_pages(&mm, va, 64 * K4, 0x11);
        env.check_pages(&child, va, 64 * K4, 0x11);
        env.check(&[&mm, &child]);
        drop(child);
        mm.munmap(va, 64 * K4).unwrap();
        assert_eq!(env.ctx.swap.totals().1, env.ctx.swap.totals().0);
    });
}

/// A PMD-mapped 2M folio goes out whole (the mapping is split, not the
/// folio) and MADV_COLD keeps it whole.
fn pageout_pmd_whole<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        swapon(env, 4096);
        let mm = env.mm();
        let va = mm.mmap(0x7000_0000_0000, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, M2, 0x22);
        mm.madvise(va, M2, MADV_COLD).unwrap();
        assert_eq!(env.folio_at(&mm, va).unwrap().order(), 9);
        mm.madvise(va, M2, MADV_PAGEOUT).unwrap();
        assert_eq!(env.mthp(9, MthpStat::Swpout), 1);
        assert_eq!(env.event(VmEvent::ThpSwpout), 1);
        assert_eq!(env.mthp(9, MthpStat::Split), 0);
        assert_eq!(mm.swapents(), 512);
        env.check_pages(&mm, va, M2, 0x22);
        env.check(&[&mm]);
        mm.munmap(va, M2).unwrap();
    });
}

/// swapoff with everything swapped out brings it all back, in large
/// folios where the entries allow; the area is then empty.
fn swapoff_brings_everything_back<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        swapon(env, 4096);
        let mm = env.mm();
        let va = mm
            .mmap(0x7000_0000_0000, 128 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&mm, va, 128 * K4, 0x33);
        mm.madvise(va, 128 * K4, MADV_PAGEOUT).unwrap();
        assert_eq!(mm.swapents(), 128);
        let area = env.ctx.swap.area(0).unwrap();
        area.closing.store(true, Ordering::Release);
        assert_eq!(mm.swapoff_unuse(0), Ok(8), "one swap-in per 64K folio");
        assert_eq!(mm.swapents(), 0);
        assert!(env.ctx.swapoff_drain_cache(0));
        assert!(env.ctx.swap.deactivate(0).is_some());
        assert_eq!(env.folio_at(&mm, va).unwrap().order(), 4);
        env.check_pages(&mm, va, 128 * K4, 0x33);
        env.check(&[&mm]);
        mm.munmap(va, 128 * K4).unwrap();
    });
}

/// MADV_COLLAPSE swaps the window's swapped-out pages in and collapses.
fn collapse_swaps_in<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        swapon(env, 4096);
        let mm = env.mm();
        let va = mm.mmap(0x7000_0000_0000, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, M2, 0x44);
        mm.madvise(va + 3 * K64, 2 * K64, MADV_PAGEOUT).unwrap();
        assert_eq!(mm.swapents(), 32);
        mm.madvise(va, M2, MADV_COLLAPSE).unwrap();
        assert_eq!(mm.swapents(), 0);
        assert_eq!(env.folio_at(&mm, va).unwrap().order(), 9);
        env.check_pages(&mm, va, M2, 0x44);
        assert_eq!(env.ctx.swap.totals().1, env.ctx.swap.totals().0);
        env.check(&[&mm]);
        mm.munmap(va, M2).unwrap();
    });
}

/// MADV_FREE: old data until reclaim, zero after it; one write keeps the
/// whole folio.  Needs no swap.
fn madvise_free_is_lazy<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm
            .mmap(0x7000_0000_0000, 32 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&mm, va, 32 * K4, 0x55);
        mm.madvise(va, 32 * K4, MADV_FREE).unwrap();
        assert_eq!(env.event(VmEvent::PgLazyFree), 32);
        env.check_pages(&mm, va, 32 * K4, 0x55);
        // Folio 1 written again: kept whole.
        env.write_u64(&mm, va + K64 + 5 * K4, 7);
        let (f0, f1) = (
            env.folio_at(&mm, va).unwrap(),
            env.folio_at(&mm, va + K64).unwrap(),
        );
        assert_eq!(pageout_folio(&[&mm], &f0.get_ref()), Pageout::Freed(16));
        assert_eq!(pageout_folio(&[&mm], &f1.get_ref()), Pageout::Kept);
        assert_eq!(env.event(VmEvent::PgLazyFreed), 16);
        env.check(&[&mm]);
        env.check_zero(&mm, va, K64);
        assert_eq!(env.read_u64(&mm, va + K64 + 5 * K4), 7);
        assert_eq!(env.read_u64(&mm, va + K64), 0x55 ^ (va + K64));
        assert_eq!(env.folio_at(&mm, va + K64).unwrap().order(), 4);
        env.check(&[&mm]);
        mm.munmap(va, 32 * K4).unwrap();
    });
}

/// Reclaim swaps out unused folios whole (first sighting young: kept; the
/// next pass reclaims), keeps mlocked ones, and the data survives.
fn shrink_node_reclaims_whole_folios<A: PagingArch>() {
    use mm::aspace::vmscan::Reclaimer;
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        swapon(env, 4096);
        let mm = env.mm();
        let va = mm
            .mmap(0x7000_0000_0000, 4 * MIB, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&mm, va, 4 * MIB, 0x66);
        mm.mlock(va, K64).unwrap();
        let st = env.ctx.shrink_node(&[&mm], 512, Reclaimer::Direct);
        assert!(st.reclaimed >= 512, "{st:?}");
        assert_eq!(st.reclaimed, st.written);
        assert_eq!(env.mthp(4, MthpStat::SwpoutFallback), 0);
        assert_eq!(env.mthp(4, MthpStat::Swpout) * 16, st.written);
        assert_eq!(env.event(VmEvent::PgstealDirect), st.reclaimed);
        assert!(!is_swap_entry(env, &mm, va), "mlocked folio kept");
        assert_eq!(mm.swapents(), st.written);
        env.check(&[&mm]);
        env.check_pages(&mm, va, 4 * MIB, 0x66);
        env.check(&[&mm]);
        mm.munmap(va, 4 * MIB).unwrap();
    });
}

/// A folio read back from swap and out of the swap cache holds the only
/// copy of its data: the other process's MADV_FREE must not let reclaim
/// discard it (found by the storm; fails if leaving the cache does not
/// mark the folio dirty).
fn swapped_in_folio_is_dirty<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        swapon(env, 4096);
        let parent = env.mm();
        let va = parent
            .mmap(0x7000_0000_0000, 16 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&parent, va, 16 * K4, 0x99);
        let f = env.folio_at(&parent, va).unwrap();
        assert_eq!(pageout_folio(&[&parent], &f.get_ref()), Pageout::Freed(16));
        let child = parent.fork().unwrap();
        // Both read it back: read-only, clean PTEs in both.
        env.check_pages(&parent, va, 16 * K4, 0x99);
        env.check_pages(&child, va, 16 * K4, 0x99);
        child.madvise(va, 16 * K4, MADV_FREE).unwrap();
        let f = env.folio_at(&parent, va).unwrap();
        let _ = pageout_folio(&[&parent, &child], &f.get_ref());
        env.check_pages(&parent, va, 16 * K4, 0x99);
        env.check(&[&parent, &child]);
        drop(child);
        parent.munmap(va, 16 * K4).unwrap();
    });
}

both_formats!(
    swapped_in_folio_is_dirty,
    shrink_node_reclaims_whole_folios,
    madvise_free_is_lazy,
    collapse_swaps_in,
    swapoff_brings_everything_back,
    madvise_pageout_rules,
    pageout_pmd_whole,
    round_trip_4k,
    round_trip_64k,
    round_trip_2m,
    fork_shares_swap_entries,
    migrate_swap_cache_folio,
    munmap_frees_slots,
    read_error_is_sigbus,
    no_run_splits_and_counts,
    madvise_pageout_takes_split_pieces,
);
