//! Reservation-based allocation with in-place promotion (issue 17, part 3;
//! `mm::aspace::reserve`): population in any order, promotion with no
//! copy, and every way a reservation breaks, on both PTE formats.

mod mmtest;

use mm::abi::uapi::{MADV_DONTNEED, PROT_READ};
use mm::paging::{PMD_LEVEL, PTE_LEVEL, PagingArch};
use mm::physmem::buddy::Wmark;
use mm::physmem::frame_flags::PageFlags;
use mm::thp::MthpStat;
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;

/// Page indices `0..n` in a fixed pseudo-random order.
fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn reserve_only<A: PagingArch>(env: &Env<'_, A>, order: u32) {
    env.only_order(order);
    assert!(env.thp.config.set_reserve(order, true));
}

/// Four 64K blocks filled page by page in random order: RSS grows one page
/// per fault (as with 4K pages), each block is one order-4 folio whose
/// pages sit at their own offsets, and it becomes an ordinary folio
/// (contpte-mapped on arm64) when its last page is mapped.
fn random_order_64k<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        reserve_only(env, 4);
        let mm = env.mm();
        let va = mm.mmap(VA, 4 * K64, RW, ANON | MAP_FIXED).unwrap();
        let free0 = env.buddy.stats().free;
        let tables0 = env.ctx.pt_pages_in_use() as u64;
        for (k, i) in shuffled(64, 7).into_iter().enumerate() {
            let at = va + i * K4;
            env.write_u64(&mm, at, 0x5eed ^ at);
            assert_eq!(mm.anon_rss(), k as u64 + 1);
            let f = env.folio_at(&mm, at).unwrap();
            assert_eq!(f.order(), 4);
            assert_eq!(env.leaf(&mm, at).unwrap().pfn, f.pfn() + i % 16);
            if k % 9 == 0 {
                env.check(&[&mm]);
            }
        }
        // Four blocks reserved whole (and the page tables), nothing more.
        let tables = env.ctx.pt_pages_in_use() as u64 - tables0;
        assert_eq!(free0 - env.buddy.stats().free, 64 + tables);
        assert_eq!(env.mthp(4, MthpStat::ReserveAlloc), 4);
        assert_eq!(env.mthp(4, MthpStat::ReservePromote), 4);
        assert_eq!(env.mthp(4, MthpStat::ReserveBreak), 0);
        assert_eq!(env.mthp(4, MthpStat::NrAnonPartiallyMapped), 0);
        assert_eq!(env.mthp(4, MthpStat::AnonFaultAlloc), 0);
        for b in 0..4 {
            let f = env.folio_at(&mm, va + b * K64).unwrap();
            assert!(!f.test(PageFlags::RESERVATION));
            assert_eq!(f.large_mapcount(), 16);
        }
        if has_cont::<A>() {
            let n = mm.with_page_table(|pt| common_cont(pt, va, 64));
            assert_eq!(n, 64, "every block contpte-mapped after promotion");
        }
        for p in (va..va + 4 * K64).step_by(K4 as usize) {
            assert_eq!(env.read_u64(&mm, p), 0x5eed ^ p);
        }
        env.check(&[&mm]);
    });
}

fn common_cont<A: PagingArch>(pt: &mm::paging::PageTable<'_, A>, va: u64, n: u64) -> usize {
    (0..n)
        .filter(|i| {
            pt.read_pte(va + i * K4)
                .and_then(|e| e.leaf())
                .is_some_and(|l| l.cont)
        })
        .count()
}

/// A 2 MiB block filled page by page in random order is PMD-mapped in
/// place when the last page arrives: the same frames (no copy), the data
/// intact, the PTE table kept as the deposit.
fn promote_2m_in_place<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        reserve_only(env, 9);
        let mm = env.mm();
        let va = mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        let order = shuffled(512, 11);
        let mut first_pfn = None;
        for (k, &i) in order.iter().enumerate() {
            let at = va + i * K4;
            env.write_u64(&mm, at + 8, i + 1);
            let l = env.leaf(&mm, at).unwrap();
            let base = if l.level == PMD_LEVEL {
                l.pfn
            } else {
                l.pfn - i
            };
            assert_eq!(
                *first_pfn.get_or_insert(base),
                base,
                "page {i} out of place"
            );
            if k < 511 {
                assert_eq!(l.level, PTE_LEVEL);
                assert_eq!(mm.anon_rss(), k as u64 + 1);
            }
            if k == 256 {
                env.check(&[&mm]);
            }
        }
        let l = env.leaf(&mm, va).unwrap();
        assert_eq!(l.level, PMD_LEVEL);
        assert_eq!(Some(l.pfn), first_pfn, "promoted in place, not copied");
        assert_eq!(mm.anon_rss(), 512);
        assert_eq!(env.mthp(9, MthpStat::ReservePromote), 1);
        let f = env.folio_at(&mm, va).unwrap();
        assert_eq!((f.entire_mapcount(), f.large_mapcount()), (1, 1));
        assert_eq!(f.refcount(), 1);
        for i in 0..512 {
            assert_eq!(env.read_u64(&mm, va + i * K4 + 8), i + 1);
        }
        env.check(&[&mm]);
        // The promoted PMD behaves as a fault's: munmap of half splits it.
        mm.munmap(va, M2 / 2).unwrap();
        env.check(&[&mm]);
    });
}

/// A read in a reserved block takes its page from the reservation (zeroed)
/// instead of the zero page, so the block can still fill; a read in an
/// unreserved block maps the zero page and reserves nothing.
fn reads_populate_reservation<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        reserve_only(env, 4);
        let mm = env.mm();
        let va = mm.mmap(VA, 2 * K64, RW, ANON | MAP_FIXED).unwrap();
        assert_eq!(env.read_u64(&mm, va + K64), 0);
        assert_eq!(mm.anon_rss(), 0);
        env.write_u64(&mm, va, 1);
        for i in 1..16 {
            assert_eq!(env.read_u64(&mm, va + i * K4), 0);
        }
        assert_eq!(mm.anon_rss(), 16);
        assert_eq!(env.mthp(4, MthpStat::ReservePromote), 1);
        assert_eq!(env.mthp(4, MthpStat::ReserveAlloc), 1);
        env.check(&[&mm]);
    });
}

/// An unmap inside a reservation breaks it: the unmapped page is never
/// handed out again (the next fault there gets a new zeroed page, not the
/// old frame), the folio stays queued as partially mapped.
fn unmap_breaks<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        reserve_only(env, 4);
        let mm = env.mm();
        let va = mm.mmap(VA, K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 4 * K4, 3);
        let f = env.folio_at(&mm, va).unwrap();
        let old = env.leaf(&mm, va + K4).unwrap().pfn;
        mm.madvise(va + K4, K4, MADV_DONTNEED).unwrap();
        assert_eq!(env.mthp(4, MthpStat::ReserveBreak), 1);
        assert!(!f.test(PageFlags::RESERVATION));
        env.write_u64(&mm, va + 5 * K4, 9);
        assert_eq!(env.read_u64(&mm, va + K4), 0);
        assert_ne!(env.leaf(&mm, va + K4).unwrap().pfn, old);
        assert_ne!(env.folio_at(&mm, va + 5 * K4).unwrap().pfn(), f.pfn());
        assert_eq!(env.mthp(4, MthpStat::ReservePromote), 0);
        env.check(&[&mm]);
    });
}

/// fork breaks a partially populated reservation: parent and child then
/// fault independent pages, and their data stays apart.
fn fork_breaks<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        reserve_only(env, 4);
        let parent = env.mm();
        let va = parent.mmap(VA, K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&parent, va, 3 * K4, 5);
        let child = parent.fork().unwrap();
        assert_eq!(env.mthp(4, MthpStat::ReserveBreak), 1);
        env.write_u64(&parent, va + 8 * K4, 1);
        env.write_u64(&child, va + 8 * K4, 2);
        env.write_u64(&child, va, 3);
        assert_eq!(env.read_u64(&parent, va + 8 * K4), 1);
        assert_eq!(env.read_u64(&child, va + 8 * K4), 2);
        assert_eq!(env.read_u64(&parent, va), 5 ^ va);
        assert_eq!(env.read_u64(&child, va + K4), 5 ^ (va + K4));
        assert_eq!(env.mthp(4, MthpStat::ReservePromote), 0);
        env.check(&[&parent, &child]);
    });
}

/// mprotect splitting the VMA inside a reserved block: the next fault
/// there finds the block outside its VMA and breaks the reservation.
fn mprotect_split_breaks<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        reserve_only(env, 4);
        let mm = env.mm();
        let va = mm.mmap(VA, K64, RW, ANON | MAP_FIXED).unwrap();
        env.write_u64(&mm, va, 1);
        mm.mprotect(va + 8 * K4, 8 * K4, PROT_READ).unwrap();
        env.write_u64(&mm, va + K4, 2);
        assert_eq!(env.mthp(4, MthpStat::ReserveBreak), 1);
        assert_eq!(env.read_u64(&mm, va + 9 * K4), 0);
        assert_eq!(env.read_u64(&mm, va + K4), 2);
        env.check(&[&mm]);
    });
}

/// mremap moving a partly populated reservation breaks it (its pages need
/// no longer sit at their own offsets in an aligned block); the moved
/// data stays, new faults in the old and new places get fresh pages.
fn mremap_breaks<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        reserve_only(env, 4);
        let mm = env.mm();
        let va = mm.mmap(VA, K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 3 * K4, 2);
        let to = VA + 16 * MIB + 5 * K4;
        let got = mm
            .mremap(va, K64, K64, MREMAP_MAYMOVE | MREMAP_FIXED, to)
            .unwrap();
        assert_eq!(got, to);
        assert_eq!(env.mthp(4, MthpStat::ReserveBreak), 1);
        for i in 0..3 {
            assert_eq!(env.read_u64(&mm, to + i * K4), 2 ^ (va + i * K4));
        }
        env.write_u64(&mm, to + 9 * K4, 7);
        assert_eq!(env.read_u64(&mm, to + 9 * K4), 7);
        env.check(&[&mm]);
    });
}

/// Under pressure (free memory below the high watermark) the
/// deferred-split shrinker breaks reservations and gives their unused
/// pages back; above it, it leaves them alone.
fn pressure_breaks<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        reserve_only(env, 9);
        let mm = env.mm();
        let va = mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 3 * K4, 4);
        let c = env.ctx.deferred_split_scan(&[&mm], 8);
        assert_eq!((c.split, env.mthp(9, MthpStat::ReserveBreak)), (0, 0));
        let free = env.buddy.stats().free;
        env.buddy.set_watermarks(free, free + 1, free + 2);
        assert!(env.buddy.below(Wmark::High));
        let c = env.ctx.deferred_split_scan(&[&mm], 8);
        env.buddy.set_watermarks(0, 0, 0);
        assert_eq!(c.split, 1);
        assert_eq!(env.mthp(9, MthpStat::ReserveBreak), 1);
        assert_eq!(env.buddy.stats().free - free, 512 - 3);
        env.check_pages(&mm, va, 3 * K4, 4);
        env.write_u64(&mm, va + 100 * K4, 1);
        assert_eq!(env.folio_at(&mm, va + 100 * K4).unwrap().order(), 0);
        env.check(&[&mm]);
    });
}

/// khugepaged leaves a reservation alone (it becomes a PMD folio in place
/// as it fills; a copy now would be wasted): the block stays reserved and
/// still promotes in place when filled.
fn khugepaged_skips<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        reserve_only(env, 9);
        let mm = env.mm();
        let va = mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 8 * K4, 6);
        let f = env.folio_at(&mm, va).unwrap();
        let p = full_scan(env, &[&mm]);
        assert_eq!(p.collapsed, 0);
        assert!(f.test(PageFlags::RESERVATION));
        env.fill_pages(&mm, va, M2, 6);
        let l = env.leaf(&mm, va).unwrap();
        assert_eq!((l.level, l.pfn), (PMD_LEVEL, f.pfn()));
        env.check(&[&mm]);
    });
}

/// Reservation mode off (the default) changes nothing: a 64K fault
/// allocates and maps the whole folio, as Linux.
fn off_by_default<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        assert_eq!(env.thp.config.reserve_orders(), 0);
        let mm = env.mm();
        let va = mm.mmap(VA, K64, RW, ANON | MAP_FIXED).unwrap();
        env.write_u64(&mm, va, 1);
        assert_eq!(mm.anon_rss(), 16);
        assert_eq!(env.mthp(4, MthpStat::ReserveAlloc), 0);
        env.check(&[&mm]);
    });
}

both_formats!(
    random_order_64k,
    promote_2m_in_place,
    reads_populate_reservation,
    unmap_breaks,
    fork_breaks,
    mprotect_split_breaks,
    pressure_breaks,
    mremap_breaks,
    khugepaged_skips,
    off_by_default,
);
