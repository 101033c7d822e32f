//! Folio split (uniform and non-uniform), pins, the deferred-split
//! shrinker and the underused shrinker, over both entry formats, with the
//! data and the invariants checked after every split.

mod mmtest;

use std::sync::atomic::Ordering::Relaxed;

use mm::abi::errno::Errno;
use mm::aspace::{Mm, folio_split, split_folio_to_order};
use mm::paging::PagingArch;
use mm::physmem::folio::Folio;
use mm::thp::{MthpStat, VmEvent};
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;

/// The distinct folios mapped in `[va, va + len)`, in address order.
fn folios<'a, A: PagingArch>(
    env: &Env<'a, A>,
    mm: &Mm<'a, A>,
    va: u64,
    len: u64,
) -> Vec<Folio<'a>> {
    let mut out: Vec<Folio<'a>> = Vec::new();
    for p in (va..va + len).step_by(K4 as usize) {
        if let Some(f) = env.folio_at(mm, p)
            && out.last() != Some(&f)
        {
            out.push(f);
        }
    }
    out
}

fn pmd_folio<'a, A: PagingArch>(env: &Env<'a, A>, mm: &Mm<'a, A>, tag: u64) -> Folio<'a> {
    env.only_order(9);
    mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
    env.fill_pages(mm, VA, M2, tag);
    let f = env.folio_at(mm, VA).unwrap();
    assert_eq!(f.order(), 9);
    assert_eq!(mm.thpmaps().total().pmd_bytes, M2);
    f
}

/// Splitting a PMD folio to each order 0, 2..8 leaves exactly 2^(9-i)
/// order-i folios, contpte-mapped on arm64 from 64K up, with the data.
fn split_pmd_to_each_order<A: PagingArch>() {
    for new in [0u32, 2, 3, 4, 5, 6, 7, 8] {
        run::<A>(16 * MIB, |env| {
            let mm = env.mm();
            let f = pmd_folio(env, &mm, new as u64 + 1);
            f.get();
            split_folio_to_order(&[&mm], f, new).unwrap();
            assert_eq!(f.order(), new);
            f.put();
            let fs = folios(env, &mm, VA, M2);
            assert_eq!(fs.len(), 1 << (9 - new), "order {new}");
            assert!(
                fs.iter()
                    .all(|g| g.order() == new && g.large_mapcount() == 1 << new)
            );
            env.check_pages(&mm, VA, M2, new as u64 + 1);
            env.check(&[&mm]);
            let t = mm.thpmaps().total();
            assert_eq!(t.anon_by_order[new as usize], M2);
            assert_eq!(t.pmd_bytes, 0);
            let cont = if has_cont::<A>() && new >= 4 { M2 } else { 0 };
            assert_eq!(t.cont_bytes, cont, "order {new}");
            assert_eq!(env.mthp(9, MthpStat::Split), 1);
            assert_eq!(env.mthp(9, MthpStat::NrAnon), 0);
            assert_eq!(
                env.mthp(new, MthpStat::NrAnon),
                if new > 0 { 1 << (9 - new) } else { 0 }
            );
            assert_eq!(env.event(VmEvent::ThpSplitPage), 1);
            assert_eq!(env.event(VmEvent::ThpSplitPmd), 1);
            // Writes still work (exclusive pages stay writable).
            env.fill_pages(&mm, VA, M2, 99);
            env.check_pages(&mm, VA, M2, 99);
            env.check(&[&mm]);
        });
    }
}

/// Non-uniform split at page 3 to order 0: orders 0,0,0,0,2,3,…,8.
fn non_uniform_split<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        let mm = env.mm();
        let f = pmd_folio(env, &mm, 7);
        f.get();
        folio_split(&[&mm], f, 0, 3).unwrap();
        f.put();
        let orders: Vec<u32> = folios(env, &mm, VA, M2).iter().map(|f| f.order()).collect();
        assert_eq!(orders, vec![0, 0, 0, 0, 2, 3, 4, 5, 6, 7, 8]);
        env.check_pages(&mm, VA, M2, 7);
        env.check(&[&mm]);
        // A PTE-mapped order-8 folio splits again.
        let g = env.folio_at(&mm, VA + M2 / 2).unwrap();
        g.get();
        folio_split(&[&mm], g, 2, 200).unwrap();
        g.put();
        env.check_pages(&mm, VA, M2, 7);
        env.check(&[&mm]);
    });
}

/// An extra reference (a pin) makes the split fail with EAGAIN and leaves
/// everything as it was; bad targets are EINVAL.
fn pinned_folio_refuses<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        let mm = env.mm();
        let f = pmd_folio(env, &mm, 3);
        f.get();
        f.get(); // the pin
        assert_eq!(split_folio_to_order(&[&mm], f, 0), Err(Errno::EAGAIN));
        assert_eq!(env.mthp(9, MthpStat::SplitFailed), 1);
        assert_eq!(env.event(VmEvent::ThpSplitPageFailed), 1);
        assert_eq!(mm.thpmaps().total().pmd_bytes, M2);
        assert_eq!(split_folio_to_order(&[&mm], f, 1), Err(Errno::EINVAL));
        assert_eq!(split_folio_to_order(&[&mm], f, 9), Err(Errno::EINVAL));
        assert_eq!(folio_split(&[&mm], f, 0, 512), Err(Errno::EINVAL));
        f.put(); // unpin
        split_folio_to_order(&[&mm], f, 4).unwrap();
        f.put();
        env.check_pages(&mm, VA, M2, 3);
        env.check(&[&mm]);
        // The huge zero folio is not splittable.
        env.only_order(9);
        let z = mm.mmap(VA + 2 * M2, M2, RW, ANON | MAP_FIXED).unwrap();
        assert_eq!(env.read_u64(&mm, z), 0);
        let hz = env
            .buddy
            .folio_from_pfn(env.ctx.huge_zero_pfn().unwrap())
            .unwrap();
        assert_eq!(split_folio_to_order(&[&mm], hz, 0), Err(Errno::EINVAL));
    });
}

/// A folio shared after fork: splitting needs both spaces (EBUSY with one),
/// and then every mapping in both is rewritten; the data stays per side.
fn split_shared_after_fork<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let p = env.mm();
        p.mmap(VA, 4 * K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&p, VA, 4 * K64, 5);
        let c = p.fork().unwrap();
        env.fill_pages(&c, VA + K64, K64, 6); // child COWs the second folio
        let f = env.folio_at(&p, VA).unwrap();
        f.get();
        assert_eq!(split_folio_to_order(&[&p], f, 2), Err(Errno::EBUSY));
        split_folio_to_order(&[&c, &p], f, 2).unwrap();
        f.put();
        assert_eq!(env.folio_at(&c, VA + 8 * K4).unwrap().order(), 2);
        assert_eq!(env.folio_at(&p, VA + 8 * K4).unwrap().order(), 2);
        env.check_pages(&p, VA, 4 * K64, 5);
        env.check_pages(&c, VA, K64, 5);
        env.check_pages(&c, VA + K64, K64, 6);
        env.check(&[&p, &c]);
        // split_huge_pages over the whole range in both.
        let n = p.split_huge_pages_in(&[&p, &c], VA, VA + 4 * K64, 0);
        // Four order-2 pieces of the first folio and three order-4 folios.
        assert_eq!(n.found, 7, "{n:?}");
        assert_eq!(n.split, 7);
        env.check_pages(&p, VA, 4 * K64, 5);
        env.check(&[&p, &c]);
    });
}

/// The shrinker splits a half-unmapped PMD folio: the unmapped half is
/// freed at once, the mapped half stays with its data.
fn shrinker_splits_half_unmapped<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        let mm = env.mm();
        let f = pmd_folio(env, &mm, 4);
        mm.munmap(VA + M2 / 2, M2 / 2).unwrap();
        assert!(env.ctx.deferred_split_queued(f));
        assert_eq!(env.mthp(9, MthpStat::NrAnonPartiallyMapped), 1);
        let free0 = env.buddy.stats().free;
        let r = env.ctx.deferred_split_scan(&[&mm], 16);
        assert_eq!((r.split, r.failed), (1, 0), "{r:?}");
        assert_eq!(env.buddy.stats().free - free0, 256, "unmapped half freed");
        assert_eq!(env.mthp(9, MthpStat::NrAnonPartiallyMapped), 0);
        assert_eq!(env.mthp(9, MthpStat::Split), 1);
        assert_eq!(env.ctx.deferred_split_len(), 0);
        env.check_pages(&mm, VA, M2 / 2, 4);
        env.check(&[&mm]);
    });
}

/// With `shrink_underused` and max_ptes_none 256, a PMD folio with only 10
/// pages written is split and its zero pages go to the shared zero page;
/// one with 300 written stays.  With 511 (the default) nothing is split.
fn shrinker_splits_underused<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        mm.mmap(VA, 2 * M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 10 * K4, 8);
        env.fill_pages(&mm, VA + M2, 300 * K4, 9);
        assert_eq!(env.ctx.deferred_split_len(), 2);
        let r = env.ctx.deferred_split_scan(&[&mm], 2);
        assert_eq!(r.underused, 0, "max_ptes_none 511 disables it");
        env.thp.config.khugepaged.max_ptes_none.store(256, Relaxed);
        let r = env.ctx.deferred_split_scan(&[&mm], 2);
        assert_eq!((r.underused, r.split), (1, 0), "{r:?}");
        assert_eq!(env.event(VmEvent::ThpUnderusedSplitPage), 1);
        let t = mm.thpmaps().vma_at(VA).unwrap().clone();
        assert_eq!(t.anon_by_order[0], 10 * K4);
        assert_eq!(t.zero_bytes, M2 - 10 * K4);
        assert_eq!(t.pmd_bytes, M2);
        env.check_pages(&mm, VA, 10 * K4, 8);
        env.check_zero(&mm, VA + 10 * K4, M2 - 10 * K4);
        env.check_pages(&mm, VA + M2, 300 * K4, 9);
        env.check(&[&mm]);
        env.fill_pages(&mm, VA, M2, 10);
        env.check_pages(&mm, VA, M2, 10);
        env.check(&[&mm]);
    });
}

both_formats!(
    split_pmd_to_each_order,
    non_uniform_split,
    pinned_folio_refuses,
    split_shared_after_fork,
    shrinker_splits_half_unmapped,
    shrinker_splits_underused,
);

/// `split_huge_pages` (the debugfs form) on a PMD-mapped folio.
fn split_huge_pages_pmd<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        let mm = env.mm();
        pmd_folio(env, &mm, 12);
        let n = mm.split_huge_pages(VA, VA + M2, 4);
        assert_eq!((n.found, n.split), (1, 1));
        assert_eq!(env.mthp(9, MthpStat::Split), 1);
        env.check_pages(&mm, VA, M2, 12);
        env.check(&[&mm]);
    });
}

/// A 64K folio moved by mremap to an address where it straddles two PTE
/// tables splits cleanly: every page unmapped and remapped in both tables,
/// data intact (the split used to walk only the first table and leave the
/// rest mapped).
fn split_folio_straddling_tables<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, K64, 21);
        let f = env.folio_at(&mm, VA).unwrap();
        assert_eq!(f.order(), 4);
        let new = VA + 4 * M2 - K64 / 2;
        let got = mm
            .mremap(VA, K64, K64, MREMAP_MAYMOVE | MREMAP_FIXED, new)
            .unwrap();
        assert_eq!(got, new);
        assert_eq!(env.folio_at(&mm, new + K64 - K4), Some(f));
        f.get();
        split_folio_to_order(&[&mm], f, 0).unwrap();
        f.put();
        let fs = folios(env, &mm, new, K64);
        assert_eq!(fs.len(), 16);
        assert!(fs.iter().all(|g| g.order() == 0));
        for i in 0..16 {
            let (old, now) = (VA + i * K4, new + i * K4);
            assert_eq!(env.read_u64(&mm, now), 21 ^ old, "page {i}");
        }
        env.check(&[&mm]);
    });
}

mod more {
    use super::*;
    both_formats!(split_huge_pages_pmd, split_folio_straddling_tables);
}
