//! Collapse: khugepaged passes (PMD and mTHP), `MADV_COLLAPSE` and
//! `Mm::collapse_range`, over both entry formats, with the data and the
//! invariants checked after every collapse (and the frames by the harness).

mod mmtest;

use std::sync::atomic::Ordering::Relaxed;

use mm::abi::errno::Errno;
use mm::aspace::{Mm, PassStats, khugepaged_full_scan};
use mm::paging::{PMD_LEVEL, PagingArch};
use mm::physmem::buddy::AllocFlags;
use mm::thp::{GlobalMode, MthpStat, OrderMode, VmEvent};
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;

/// One full khugepaged scan over `mms`.
fn full_scan<'a, A: PagingArch>(env: &Env<'a, A>, mms: &[&Mm<'a, A>]) -> PassStats {
    scan_ctx(env.ctx, mms)
}

fn scan_ctx<'a, A: PagingArch>(ctx: &mm::aspace::MmCtx<'a>, mms: &[&Mm<'a, A>]) -> PassStats {
    khugepaged_full_scan(
        ctx,
        &mut |id, f| match mms.iter().find(|m| m.id() == id) {
            Some(m) => {
                f(m);
                true
            }
            None => false,
        },
        Some(&mut |f| mms.iter().for_each(|m| f(m))),
        64,
    )
}

/// Global `madvise`, the PMD size inheriting, every mTHP size never: faults
/// outside `MADV_HUGEPAGE` regions get 4K pages.
fn madvise_pmd_only<A: PagingArch>(env: &Env<'_, A>) {
    env.only_order(0);
    env.knobs(GlobalMode::Madvise, &[(9, OrderMode::Inherit)]);
}

fn is_pmd<'a, A: PagingArch>(env: &Env<'a, A>, mm: &Mm<'a, A>, va: u64) -> bool {
    env.leaf(mm, va).is_some_and(|l| l.level == PMD_LEVEL)
}

/// Four PMD ranges of 4K pages become PMD-mapped within two full scans.
fn four_ranges_collapse<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        madvise_pmd_only(env);
        let mm = env.mm();
        mm.mmap(VA, 4 * M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 4 * M2, 1);
        assert_eq!(mm.thpmaps().total().anon_by_order[0], 4 * M2);
        mm.madvise(VA, 4 * M2, MADV_HUGEPAGE).unwrap();
        assert!(mm.khugepaged_registered());
        assert_eq!(env.ctx.khugepaged_mm_ids(), vec![mm.id()]);
        let mut scans = 0;
        while mm.thpmaps().total().pmd_bytes < 4 * M2 && scans < 2 {
            full_scan(env, &[&mm]);
            scans += 1;
        }
        assert_eq!(
            mm.thpmaps().total().pmd_bytes,
            4 * M2,
            "after {scans} full scans"
        );
        assert_eq!(env.thp.stats.pages_collapsed(), 4);
        assert!(env.thp.stats.full_scans() >= 1);
        assert_eq!(env.mthp(9, MthpStat::CollapseAlloc), 4);
        assert_eq!(env.event(VmEvent::ThpCollapseAlloc), 4);
        assert_eq!(env.mthp(9, MthpStat::NrAnon), 4);
        env.check_pages(&mm, VA, 4 * M2, 1);
        env.check(&[&mm]);
        // Collapsed folios split like faulted ones.
        mm.munmap(VA + 4 * K4, K4).unwrap();
        env.check_pages(&mm, VA, 4 * K4, 1);
        env.check(&[&mm]);
        drop(mm);
        assert!(env.ctx.khugepaged_mm_ids().is_empty());
    });
}

/// An empty range is left alone; a single populated PTE collapses with
/// max_ptes_none 511 (the rest reads zero).
fn empty_and_single_pte<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        madvise_pmd_only(env);
        let mm = env.mm();
        mm.mmap(VA, 2 * M2, RW, ANON | MAP_FIXED).unwrap();
        mm.madvise(VA, 2 * M2, MADV_HUGEPAGE).unwrap();
        full_scan(env, &[&mm]);
        assert_eq!(mm.thpmaps().total().mapped_bytes(), 0);
        assert_eq!(env.mthp(9, MthpStat::CollapseAlloc), 0);
        // One 4K page in the second range (no THP for the fault itself).
        mm.madvise(VA + M2, M2, MADV_NOHUGEPAGE).unwrap();
        env.write_u64(&mm, VA + M2 + 5 * K4, 77);
        mm.madvise(VA + M2, M2, MADV_HUGEPAGE).unwrap();
        full_scan(env, &[&mm]);
        assert!(is_pmd(env, &mm, VA + M2));
        assert!(!is_pmd(env, &mm, VA));
        assert_eq!(env.read_u64(&mm, VA + M2 + 5 * K4), 77);
        env.check_zero(&mm, VA + M2 + 6 * K4, 100 * K4);
        env.check(&[&mm]);
    });
}

/// max_ptes_none 256: 257 empty entries are refused, 256 collapse.
fn max_ptes_none_boundary<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        madvise_pmd_only(env);
        env.thp.config.khugepaged.max_ptes_none.store(256, Relaxed);
        let mm = env.mm();
        mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 255 * K4, 3);
        mm.madvise(VA, M2, MADV_HUGEPAGE).unwrap();
        full_scan(env, &[&mm]);
        assert!(!is_pmd(env, &mm, VA));
        assert_eq!(env.mthp(9, MthpStat::CollapseExceedNonePte), 1);
        assert_eq!(env.event(VmEvent::ThpScanExceedNonePte), 1);
        assert_eq!(env.mthp(9, MthpStat::CollapseAlloc), 0);
        env.fill_pages(&mm, VA + 255 * K4, K4, 3);
        full_scan(env, &[&mm]);
        assert!(is_pmd(env, &mm, VA));
        env.check_pages(&mm, VA, 256 * K4, 3);
        env.check_zero(&mm, VA + 256 * K4, 256 * K4);
        env.check(&[&mm]);
    });
}

/// After fork the child's COW of pages moves its shared count across
/// max_ptes_shared (256): 257 shared refused, 256 collapsed; the parent
/// keeps its own pages and data.
fn max_ptes_shared_after_fork<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        madvise_pmd_only(env);
        let p = env.mm();
        p.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&p, VA, M2, 4);
        p.madvise(VA, M2, MADV_HUGEPAGE).unwrap();
        let c = p.fork().unwrap();
        assert!(c.khugepaged_registered());
        env.fill_pages(&c, VA, 255 * K4, 5);
        full_scan(env, &[&p, &c]);
        assert!(!is_pmd(env, &c, VA));
        // Parent and child each see 257 entries of shared folios.
        assert_eq!(env.mthp(9, MthpStat::CollapseExceedSharedPte), 2);
        env.fill_pages(&c, VA + 255 * K4, K4, 5);
        full_scan(env, &[&p, &c]);
        assert!(is_pmd(env, &c, VA), "child collapses at the limit");
        assert!(!is_pmd(env, &p, VA), "parent's entries are all read-only");
        env.check_pages(&c, VA, 256 * K4, 5);
        env.check_pages(&c, VA + 256 * K4, 256 * K4, 4);
        env.check_pages(&p, VA, M2, 4);
        env.check(&[&p, &c]);
        // The parent's pages are its own again: writes reuse them.
        let copies = env.event(VmEvent::FaultCowCopy);
        env.fill_pages(&p, VA, M2, 6);
        assert_eq!(env.event(VmEvent::FaultCowCopy), copies);
        env.check(&[&p, &c]);
    });
}

/// A range of PTE-mapped 64K folios collapses into one PMD folio.
fn pte_mapped_large_folios_collapse<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        env.knobs(GlobalMode::Madvise, &[(9, OrderMode::Madvise)]);
        let mm = env.mm();
        mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, M2, 7);
        assert_eq!(mm.thpmaps().total().anon_by_order[4], M2);
        mm.madvise(VA, M2, MADV_HUGEPAGE).unwrap();
        full_scan(env, &[&mm]);
        assert!(is_pmd(env, &mm, VA));
        assert_eq!(env.mthp(4, MthpStat::NrAnon), 0);
        assert_eq!(env.mthp(9, MthpStat::NrAnon), 1);
        env.check_pages(&mm, VA, M2, 7);
        env.check(&[&mm]);
    });
}

/// mTHP collapse (order 4 only): only populated windows collapse, at the
/// target order; with max_ptes_none 0 only full windows do.
fn mthp_collapse_populated_windows<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.no_thp();
        let mm = env.mm();
        mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        for p in [0u64, 5, 40, 300] {
            env.write_u64(&mm, VA + p * K4, p + 1);
        }
        env.fill_pages(&mm, VA + 64 * K4, 16 * K4, 8);
        env.only_order(4);
        env.thp.config.khugepaged.max_ptes_none.store(0, Relaxed);
        mm.madvise(VA, M2, MADV_HUGEPAGE).unwrap();
        full_scan(env, &[&mm]);
        let r = mm.thpmaps().total();
        assert_eq!(r.anon_by_order[4], K64, "only the full window: {r}");
        env.thp.config.khugepaged.max_ptes_none.store(511, Relaxed);
        full_scan(env, &[&mm]);
        let r = mm.thpmaps().total();
        assert_eq!(r.anon_by_order[4], 4 * K64, "{r}");
        assert_eq!(r.anon_by_order[0], 0);
        assert_eq!(r.pmd_bytes, 0);
        assert_eq!(env.mthp(4, MthpStat::CollapseAlloc), 4);
        for p in [0u64, 5, 40, 300] {
            assert_eq!(env.read_u64(&mm, VA + p * K4), p + 1);
            assert_eq!(env.folio_at(&mm, VA + p * K4).unwrap().order(), 4);
        }
        env.check_pages(&mm, VA + 64 * K4, 16 * K4, 8);
        assert!(
            env.leaf(&mm, VA + 100 * K4).is_none(),
            "empty window left alone"
        );
        if has_cont::<A>() {
            assert_eq!(r.cont_bytes, 4 * K64);
        }
        env.check(&[&mm]);
    });
}

/// MADV_COLLAPSE works with THP "never", to PMD order; its errors.
fn madv_collapse<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.no_thp();
        env.knobs(GlobalMode::Never, &[]);
        let mm = env.mm();
        mm.mmap(VA, 3 * M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 64 * K4, 2);
        mm.madvise(VA, M2, MADV_COLLAPSE).unwrap();
        assert!(is_pmd(env, &mm, VA));
        assert_eq!(
            env.thp.stats.pages_collapsed(),
            0,
            "khugepaged's counter only"
        );
        env.check_pages(&mm, VA, 64 * K4, 2);
        env.check(&[&mm]);
        // Already PMD-mapped: success.
        mm.madvise(VA, M2, MADV_COLLAPSE).unwrap();
        // Nothing mapped (no PTE table): EINVAL.
        assert_eq!(mm.madvise(VA + M2, M2, MADV_COLLAPSE), Err(Errno::EINVAL));
        // A pinned source: EAGAIN, nothing changed.
        env.fill_pages(&mm, VA + M2, 8 * K4, 3);
        let f = env.folio_at(&mm, VA + M2).unwrap();
        f.get();
        assert_eq!(mm.madvise(VA + M2, M2, MADV_COLLAPSE), Err(Errno::EAGAIN));
        assert!(!is_pmd(env, &mm, VA + M2));
        f.put();
        // Out of memory for the new folio: ENOMEM.
        let mut hog = Vec::new();
        while let Ok(h) = env.buddy.alloc(9, AllocFlags::USER) {
            hog.push(h);
        }
        assert_eq!(mm.madvise(VA + M2, M2, MADV_COLLAPSE), Err(Errno::ENOMEM));
        assert_eq!(env.mthp(9, MthpStat::CollapseAllocFailed), 1);
        hog.into_iter().for_each(|h| h.put());
        mm.madvise(VA + M2, M2, MADV_COLLAPSE).unwrap();
        env.check_pages(&mm, VA + M2, 8 * K4, 3);
        // MADV_NOHUGEPAGE: EINVAL.
        env.fill_pages(&mm, VA + 2 * M2, 8 * K4, 4);
        mm.madvise(VA + 2 * M2, M2, MADV_NOHUGEPAGE).unwrap();
        assert_eq!(
            mm.madvise(VA + 2 * M2, M2, MADV_COLLAPSE),
            Err(Errno::EINVAL)
        );
        // Beyond Linux: collapse to 64K folios.
        mm.madvise(VA + 2 * M2, M2, MADV_HUGEPAGE).unwrap();
        mm.collapse_range(VA + 2 * M2, M2, 4).unwrap();
        assert_eq!(env.folio_at(&mm, VA + 2 * M2).unwrap().order(), 4);
        env.check_pages(&mm, VA + 2 * M2, 8 * K4, 4);
        assert_eq!(mm.collapse_range(VA, M2, 1), Err(Errno::EINVAL));
        env.check(&[&mm]);
    });
}

/// `PR_SET_THP_DISABLE` (`Mm::set_thp_disabled`): order-0 faults even
/// where 64K and 2M are "always", khugepaged and `MADV_COLLAPSE` (EINVAL)
/// leave the space alone, smaps says not eligible, a fork inherits the
/// setting; switched back on, faults and collapse make large folios again.
fn thp_disabled_for_the_space<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        env.knobs(
            GlobalMode::Always,
            &[(4, OrderMode::Always), (9, OrderMode::Inherit)],
        );
        let mm = env.mm();
        mm.mmap(VA, 4 * M2, RW, ANON | MAP_FIXED).unwrap();
        assert!(mm.thpmaps().vma_at(VA).unwrap().thp_eligible);
        mm.set_thp_disabled(true);
        assert!(mm.thp_disabled());
        assert!(!mm.thpmaps().vma_at(VA).unwrap().thp_eligible);
        env.fill_pages(&mm, VA, 2 * M2, 1);
        let t = mm.thpmaps().total();
        assert_eq!(t.anon_by_order[0], 2 * M2, "{t:?}");
        assert_eq!(t.pmd_bytes, 0);
        assert_eq!(mm.madvise(VA, M2, MADV_COLLAPSE), Err(Errno::EINVAL));
        mm.madvise(VA, 4 * M2, MADV_HUGEPAGE).unwrap();
        full_scan(env, &[&mm]);
        full_scan(env, &[&mm]);
        assert_eq!(mm.thpmaps().total().pmd_bytes, 0);
        assert_eq!(mm.collapse_range(VA, M2, 4), Err(Errno::EINVAL));
        let child = mm.fork().unwrap();
        assert!(child.thp_disabled());
        drop(child);
        mm.set_thp_disabled(false);
        env.fill_pages(&mm, VA + 2 * M2, M2, 2);
        assert!(is_pmd(env, &mm, VA + 2 * M2));
        // The fork write-protected the parent's PTEs; rewriting makes them
        // writable again (a window of read-only entries would fail with
        // EINVAL, Linux's SCAN_PAGE_RO).
        env.fill_pages(&mm, VA, M2, 1);
        mm.madvise(VA, M2, MADV_COLLAPSE).unwrap();
        assert!(is_pmd(env, &mm, VA));
        env.check_pages(&mm, VA, 2 * M2, 1);
        env.check_pages(&mm, VA + 2 * M2, M2, 2);
        env.check(&[&mm]);
    });
}

/// With two threads: one faults/writes in the range while khugepaged
/// passes run on the other; data and invariants hold throughout.
fn concurrent_faults_and_scans<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        madvise_pmd_only(env);
        env.thp.config.khugepaged.pages_to_scan.store(512, Relaxed);
        let mm = env.mm();
        mm.mmap(VA, 4 * M2, RW, ANON | MAP_FIXED).unwrap();
        mm.madvise(VA, 4 * M2, MADV_NOHUGEPAGE).unwrap();
        env.fill_pages(&mm, VA, 4 * M2, 1);
        mm.madvise(VA, 4 * M2, MADV_HUGEPAGE).unwrap();
        let ctx = env.ctx;
        let m = &mm;
        std::thread::scope(|s| {
            s.spawn(move || {
                for _ in 0..8 {
                    scan_ctx(ctx, &[m]);
                }
            });
            // Faults through the fault path (not the TLB model, which is
            // not shared between threads) on the same range.
            for round in 0..4u64 {
                for p in (VA..VA + 4 * M2).step_by((17 * K4) as usize) {
                    mm.handle_fault(p, mm::aspace::Access::Write).unwrap();
                }
                let _ = round;
            }
        });
        env.check_pages(&mm, VA, 4 * M2, 1);
        env.check(&[&mm]);
    });
}

both_formats!(
    four_ranges_collapse,
    empty_and_single_pte,
    max_ptes_none_boundary,
    max_ptes_shared_after_fork,
    pte_mapped_large_folios_collapse,
    mthp_collapse_populated_windows,
    madv_collapse,
    thp_disabled_for_the_space,
    concurrent_faults_and_scans,
);
