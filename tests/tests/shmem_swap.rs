//! Swap of shmem folios over both entry formats, on an in-memory swap
//! area: `MADV_PAGEOUT` and reclaim write 4K, 64K and 2 MiB shmem folios
//! out whole (`Shmem` drops, slots are used), faults in another process,
//! `read` and `write` bring pages back at order 0, truncate and the
//! object's end free the slots, swapoff brings everything back, no run of
//! slots splits without `swpout_fallback`, `SHM_LOCK` keeps the pages,
//! and collapse swaps in.

mod mmtest;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mm::aspace::Mm;
use mm::paging::PagingArch;
use mm::shmem::Shmem;
use mm::shmem::policy::ShmemOrderMode;
use mm::thp::{MthpStat, VmEvent};
use mmtest::swapdisk::swap_used;
use mmtest::*;

/// Activates a disk whose writes complete at once.
fn swapon<A: PagingArch>(env: &Env<'_, A>, slots: u64) {
    mmtest::swapdisk::swapon(env, slots, false);
}

const VA: u64 = 0x7000_0000_0000;

fn shmem_pages<A: PagingArch>(env: &Env<'_, A>) -> u64 {
    env.thp.shmem.pages.load(Ordering::Relaxed)
}

/// Shmem folios of `order` only (`Always` at that size).
fn shmem_order<A: PagingArch>(env: &Env<'_, A>, order: u32) {
    if order > 0 {
        env.thp
            .config
            .shmem
            .set_order_mode(order, ShmemOrderMode::Always)
            .unwrap();
    }
}

/// An object of `len` bytes mapped shared and writable at `VA` in `mm`.
fn map_object<'a, A: PagingArch>(env: &Env<'a, A>, mm: &Mm<'a, A>, len: u64) -> Arc<Shmem<'a>> {
    let obj = Arc::new(Shmem::with_gauges(len, 0, Some(&env.thp.shmem)));
    mm.mmap_shmem(VA, len, RW, MAP_SHARED | MAP_FIXED, obj.clone(), 0, true)
        .unwrap();
    obj
}

/// MADV_PAGEOUT writes the folios out whole; a forked child and the
/// parent fault them back (order 0, one major fault per page); nothing
/// leaks.
fn round_trip_at_order<A: PagingArch>(order: u32) {
    run::<A>(64 * MIB, |env| {
        shmem_order(env, order);
        swapon(env, 4096);
        let mm = env.mm();
        let len = 4 * MIB;
        let obj = map_object(env, &mm, len);
        env.fill_pages(&mm, VA, len, 0x5a5a);
        assert_eq!(env.folio_at(&mm, VA).unwrap().order(), order);
        let npages = len / K4;
        assert_eq!(shmem_pages(env), npages);
        let free0 = env.buddy.stats().free;
        mm.madvise(VA, len, MADV_PAGEOUT).unwrap();
        assert_eq!(shmem_pages(env), 0, "Shmem drops");
        assert_eq!(obj.swapped_pages(), npages);
        assert_eq!(obj.cached_pages(), 0);
        assert_eq!(swap_used(env), npages, "one slot per page");
        assert_eq!(env.event(VmEvent::PswpOut), npages);
        if order > 0 {
            assert_eq!(env.mthp(order, MthpStat::Swpout), npages >> order);
            assert_eq!(env.mthp(order, MthpStat::SwpoutFallback), 0);
        }
        // (PMD mappings also give their deposited tables back.)
        assert!(env.buddy.stats().free >= free0 + npages, "folios freed");
        assert_eq!(mm.shmem_rss(), 0);
        assert_eq!(
            mm.thpmaps().vma_at(VA).unwrap().swap,
            len,
            "smaps Swap: counts the object's swapped pages"
        );
        env.check(&[&mm]);
        let child = mm.fork().unwrap();
        env.check_pages(&child, VA, len, 0x5a5a);
        assert_eq!(
            env.folio_at(&child, VA).unwrap().order(),
            0,
            "order-0 swap-in"
        );
        assert_eq!(env.event(VmEvent::PswpIn), npages);
        assert_eq!(env.event(VmEvent::PgMajFault), npages);
        env.check_pages(&mm, VA, len, 0x5a5a);
        assert_eq!(
            env.event(VmEvent::PgMajFault),
            npages,
            "the parent finds them cached"
        );
        assert_eq!(swap_used(env), 0, "slots freed at swap-in");
        assert_eq!(env.ctx.swap.cache.pages(), 0);
        assert_eq!(obj.swapped_pages(), 0);
        assert_eq!(shmem_pages(env), npages);
        env.check(&[&mm, &child]);
        drop(child);
        drop(obj);
        drop(mm);
        assert_eq!(shmem_pages(env), 0);
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

/// `read` and `write` on the object bring swapped pages back; truncate of
/// a swapped range (a large entry cut in the middle) frees its slots; the
/// object's end frees the rest.
fn read_write_truncate<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        shmem_order(env, 4);
        swapon(env, 4096);
        let mm = env.mm();
        let len = MIB;
        let obj = map_object(env, &mm, len);
        env.fill_pages(&mm, VA, len, 0x77);
        mm.madvise(VA, len, MADV_PAGEOUT).unwrap();
        assert_eq!(obj.swapped_pages(), 256);
        // pread of page 5.
        let mut b = [0u8; 8];
        assert_eq!(obj.read(5 * K4, &mut b, env.mem), 8);
        assert_eq!(u64::from_le_bytes(b), 0x77 ^ (VA + 5 * K4));
        assert_eq!(obj.swapped_pages(), 255, "one page back, order 0");
        assert_eq!(swap_used(env), 255);
        // pwrite of page 40.
        let v = 0xdead_beefu64.to_le_bytes();
        let mut alloc = || None;
        assert_eq!(obj.write(40 * K4 + 8, &v, env.mem, &mut alloc), 8);
        assert_eq!(obj.swapped_pages(), 254);
        assert_eq!(env.read_u64(&mm, VA + 40 * K4 + 8), 0xdead_beef);
        assert_eq!(env.read_u64(&mm, VA + 40 * K4), 0x77 ^ (VA + 40 * K4));
        env.check(&[&mm]);
        // Punch pages [100, 200): cuts the swapped 64K entries at 96 and 192.
        mm.shmem_unmap_range(obj.id(), 100, 200);
        let _ = obj.truncate_range(100, 200, env.mem);
        assert_eq!(obj.swapped_pages(), 154);
        assert_eq!(swap_used(env), 154, "the punched slots are free");
        assert_eq!(env.read_u64(&mm, VA + 150 * K4), 0);
        assert_eq!(env.read_u64(&mm, VA + 99 * K4), 0x77 ^ (VA + 99 * K4));
        assert_eq!(env.read_u64(&mm, VA + 200 * K4), 0x77 ^ (VA + 200 * K4));
        env.check(&[&mm]);
        mm.munmap(VA, len).unwrap();
        drop(obj);
        assert_eq!(swap_used(env), 0, "the object's end frees its slots");
        assert_eq!(shmem_pages(env), 0);
    });
}

/// No aligned run of slots for a 64K folio: it is split in the cache and
/// its pieces go out one by one, with no `swpout_fallback` (Linux 6.12).
fn no_run_splits_without_fallback<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        shmem_order(env, 4);
        swapon(env, 512);
        // One order-0 slot makes the only cluster an order-0 one.
        let area = env.ctx.swap.area(0).unwrap();
        let s = area.map.alloc(0).unwrap();
        let mm = env.mm();
        let obj = map_object(env, &mm, K64);
        env.fill_pages(&mm, VA, K64, 0x11);
        mm.madvise(VA, K64, MADV_PAGEOUT).unwrap();
        assert_eq!(obj.swapped_pages(), 16);
        assert_eq!(env.event(VmEvent::PswpOut), 16);
        assert_eq!(env.mthp(4, MthpStat::Swpout), 0);
        assert_eq!(env.mthp(4, MthpStat::SwpoutFallback), 0);
        assert_eq!(env.mthp(4, MthpStat::Split), 1);
        env.check(&[&mm]);
        env.check_pages(&mm, VA, K64, 0x11);
        area.map.put_cache(s, 1);
        assert_eq!(swap_used(env), 0);
        env.check(&[&mm]);
    });
}

/// Reclaim takes cold shmem folios (their young bits found through the
/// object's mappings); `SHM_LOCK` keeps them; swapoff brings them back.
fn reclaim_lock_and_swapoff<A: PagingArch>() {
    use mm::aspace::vmscan::Reclaimer;
    run::<A>(64 * MIB, |env| {
        shmem_order(env, 4);
        swapon(env, 4096);
        let mm = env.mm();
        let len = 2 * MIB;
        let obj = map_object(env, &mm, len);
        env.fill_pages(&mm, VA, len, 0x22);
        obj.set_unevictable(true);
        mm.madvise(VA, len, MADV_PAGEOUT).unwrap();
        assert_eq!(obj.swapped_pages(), 0, "SHM_LOCK keeps them");
        obj.set_unevictable(false);
        // Young everywhere: the first pass only ages them.
        mm.madvise(VA, len, MADV_COLD).unwrap();
        let st = env.ctx.shrink_node(&[&mm], 512, Reclaimer::Direct);
        assert!(st.reclaimed >= 256, "{st:?}");
        assert!(obj.swapped_pages() >= 256);
        assert_eq!(env.mthp(4, MthpStat::Swpout) * 16, obj.swapped_pages());
        env.check(&[&mm]);
        let area = env.ctx.swap.area(0).unwrap();
        area.closing.store(true, Ordering::Release);
        let back = obj.swapped_pages();
        assert_eq!(mm.swapoff_unuse(0), Ok(back));
        assert!(env.ctx.swapoff_drain_cache(0));
        assert!(env.ctx.swap.deactivate(0).is_some());
        assert_eq!(obj.swapped_pages(), 0);
        assert_eq!(shmem_pages(env), len / K4);
        env.check_pages(&mm, VA, len, 0x22);
        env.check(&[&mm]);
    });
}

/// MADV_COLLAPSE on a shmem range with swapped pages swaps them in and
/// collapses to one PMD-size folio.
fn collapse_swaps_in<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        shmem_order(env, 4);
        swapon(env, 4096);
        let mm = env.mm();
        let obj = map_object(env, &mm, M2);
        env.fill_pages(&mm, VA, M2, 0x44);
        mm.madvise(VA + 3 * K64, 2 * K64, MADV_PAGEOUT).unwrap();
        assert_eq!(obj.swapped_pages(), 32);
        mm.madvise(VA, M2, MADV_COLLAPSE).unwrap();
        assert_eq!(obj.swapped_pages(), 0);
        assert_eq!(swap_used(env), 0);
        assert_eq!(env.folio_at(&mm, VA).unwrap().order(), 9);
        env.check_pages(&mm, VA, M2, 0x44);
        env.check(&[&mm]);
    });
}

/// khugepaged on a shmem range with swapped pages: more than
/// `max_ptes_swap` refuse (`thp_scan_exceed_swap_pte`), fewer are swapped
/// in and the range collapses (Linux's `hpage_collapse_scan_file`).
fn khugepaged_max_ptes_swap<A: PagingArch>() {
    use mm::shmem::policy::ShmemHuge;
    use mm::thp::{GlobalMode, OrderMode};
    run::<A>(64 * MIB, |env| {
        env.knobs(GlobalMode::Always, &[(9, OrderMode::Inherit)]);
        swapon(env, 4096);
        let mm = env.mm();
        let obj = map_object(env, &mm, M2);
        env.fill_pages(&mm, VA, M2, 0x55);
        mm.madvise(VA, 128 * K4, MADV_PAGEOUT).unwrap();
        assert_eq!(obj.swapped_pages(), 128);
        env.thp.config.shmem.set_huge(ShmemHuge::Advise).unwrap();
        mm.madvise(VA, M2, MADV_HUGEPAGE).unwrap();
        let k = &env.thp.config.khugepaged;
        k.max_ptes_swap.store(64, Ordering::Relaxed);
        full_scan(env, &[&mm]);
        assert_eq!(env.thp.stats.pages_collapsed(), 0);
        assert!(env.event(VmEvent::ThpScanExceedSwapPte) > 0);
        assert_eq!(obj.swapped_pages(), 128);
        k.max_ptes_swap.store(511, Ordering::Relaxed);
        full_scan(env, &[&mm]);
        assert_eq!(env.thp.stats.pages_collapsed(), 1);
        assert_eq!(obj.swapped_pages(), 0);
        assert_eq!(swap_used(env), 0);
        env.check_pages(&mm, VA, M2, 0x55);
        env.check(&[&mm]);
    });
}

/// A private mapping of the object beside the shared one: swapping the
/// object's folios out unmaps its read-only file pages there but keeps
/// the private copies (an unmap of every entry of the range loses them:
/// found merging the private-mapping and shmem-swap work; checked to fail
/// that way).  Both mappings read right afterwards: the copies their own
/// data, the other private pages and the shared mapping the object's;
/// with the copies dropped, the private mapping's read faults swap the
/// object's pages back in.
fn private_copies_survive_object_swapout<A: PagingArch>() {
    const PRIV: u64 = 0x7100_0000_0000;
    run::<A>(64 * MIB, |env| {
        shmem_order(env, 4);
        swapon(env, 4096);
        let mm = env.mm();
        let len = MIB;
        let obj = map_object(env, &mm, len);
        env.fill_pages(&mm, VA, len, 0x5a5a);
        mm.mmap_shmem(PRIV, len, RW, MAP_PRIVATE | MAP_FIXED, obj.clone(), 0, true)
            .unwrap();
        // Read every private page (the object's folios mapped read-only),
        // then copy the first half by writing it.
        for off in (0..len).step_by(K4 as usize) {
            assert_eq!(env.read_u64(&mm, PRIV + off), 0x5a5a ^ (VA + off));
        }
        env.fill_pages(&mm, PRIV, len / 2, 0x77);
        // Folios still mapped by the private VMA too are mapped twice and
        // stay (Linux skips folios likely mapped shared); the copied half,
        // mapped once, goes out.
        mm.madvise(VA, len, MADV_PAGEOUT).unwrap();
        assert_eq!(
            obj.swapped_pages(),
            len / 2 / K4,
            "the copied half went out"
        );
        assert_eq!(obj.cached_pages(), len / 2 / K4);
        env.check_pages(&mm, PRIV, len / 2, 0x77);
        // Copies dropped: the private mapping faults the object's pages,
        // which are out on swap, back in (a hole would read zero).
        mm.madvise(PRIV, len / 2, MADV_DONTNEED).unwrap();
        for off in (0..len / 2).step_by(K4 as usize) {
            assert_eq!(env.read_u64(&mm, PRIV + off), 0x5a5a ^ (VA + off));
        }
        for off in (len / 2..len).step_by(K4 as usize) {
            assert_eq!(env.read_u64(&mm, PRIV + off), 0x5a5a ^ (VA + off));
        }
        env.check_pages(&mm, VA, len, 0x5a5a);
        env.check(&[&mm]);
        mm.munmap(PRIV, len).unwrap();
        mm.munmap(VA, len).unwrap();
        drop(obj);
        assert_eq!(swap_used(env), 0);
    });
}

/// An object no space maps any more (a file only held open) is out of
/// reach of LRU reclaim over the spaces alone; given as a file-held
/// object (`shrink_node_files`), its folios go out whole in LRU order, and
/// `read` brings the data back.
fn unmapped_object_reclaimed<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        shmem_order(env, 4);
        swapon(env, 4096);
        let mm = env.mm();
        let len = MIB;
        let obj = map_object(env, &mm, len);
        env.fill_pages(&mm, VA, len, 0x99);
        mm.munmap(VA, len).unwrap();
        let st = env
            .ctx
            .shrink_node(&[&mm], 512, mm::aspace::vmscan::Reclaimer::Direct);
        assert_eq!(st.reclaimed, 0, "the spaces do not lead to the object");
        let st = env.ctx.shrink_node_files(
            &[&mm],
            core::slice::from_ref(&obj),
            len / K4,
            mm::aspace::vmscan::Reclaimer::Direct,
        );
        assert_eq!(st.reclaimed, len / K4, "every folio went out");
        assert_eq!(obj.swapped_pages(), len / K4);
        assert_eq!(obj.cached_pages(), 0);
        assert_eq!(env.mthp(4, MthpStat::Swpout), len / (16 * K4));
        for off in (0..len).step_by(K4 as usize) {
            let mut b = [0u8; 8];
            assert_eq!(obj.read(off, &mut b, env.mem), 8);
            assert_eq!(u64::from_le_bytes(b), 0x99 ^ (VA + off), "page {off:#x}");
        }
        assert_eq!(obj.swapped_pages(), 0);
        assert_eq!(swap_used(env), 0);
        env.check(&[&mm]);
    });
}

both_formats!(
    unmapped_object_reclaimed,
    private_copies_survive_object_swapout,
    khugepaged_max_ptes_swap,
    round_trip_4k,
    round_trip_64k,
    round_trip_2m,
    read_write_truncate,
    no_run_splits_without_fallback,
    reclaim_lock_and_swapoff,
    collapse_swaps_in,
);
