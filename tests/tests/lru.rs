//! The anonymous LRU and young-bit harvesting over both entry formats:
//! new folios land on the inactive list (order 0 through the CPU's add
//! batch), frees take them off (batched or listed), split pieces stay
//! listed with their state, isolate and putback, activation and
//! deactivation, `folio_referenced` on contpte blocks, PMD leaves and
//! folios shared after fork, and the two aging steps with their vmstat
//! counters.  The invariant checker (which now checks the lists too) runs
//! after each step.

mod mmtest;

use mm::aspace::{Access, FolioReferences, Mm, folio_referenced, split_folio_to_order};
use mm::paging::PagingArch;
use mm::physmem::folio::Folio;
use mm::physmem::frame_flags::PageFlags;
use mm::reclaim::LRU_BATCH;
use mm::thp::VmEvent;
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;

fn counts<A: PagingArch>(env: &Env<'_, A>) -> (u64, u64, u64) {
    let c = env.ctx.lru_counts();
    (c.inactive_pages, c.active_pages, c.batched_pages)
}

/// Young bits of the 16 entries of the block at `va` (arm64 contpte) or
/// of the entries of a folio of `n` pages.
fn young_bits<'a, A: PagingArch>(env: &Env<'a, A>, mm: &Mm<'a, A>, va: u64, n: u64) -> Vec<bool> {
    (0..n)
        .map(|i| env.leaf(mm, va + i * K4).unwrap().attrs.young)
        .collect()
}

/// Order-0 folios wait in the CPU's batch (up to 15), then move to the
/// inactive list; large folios go straight there.  Freeing takes them
/// off again, from a batch or a list.
fn new_folios_land_on_inactive<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        let mm = env.mm();
        env.no_thp();
        mm.mmap(VA, 64 * K4, RW, ANON | MAP_FIXED).unwrap();
        for i in 0..3 {
            env.touch(&mm, VA + i * K4, Access::Write).unwrap();
        }
        assert_eq!(counts(env), (0, 0, 3));
        let f = env.folio_at(&mm, VA).unwrap();
        assert!(f.test(PageFlags::LRU_BATCH) && !f.test(PageFlags::LRU));
        env.check(&[&mm]);
        // The 15th add drains the batch onto the inactive list.
        for i in 3..LRU_BATCH as u64 {
            env.touch(&mm, VA + i * K4, Access::Write).unwrap();
        }
        assert_eq!(counts(env), (LRU_BATCH as u64, 0, 0));
        assert!(f.test(PageFlags::LRU) && !f.test(PageFlags::ACTIVE));
        env.touch(&mm, VA + 20 * K4, Access::Write).unwrap();
        assert_eq!(counts(env), (LRU_BATCH as u64, 0, 1));
        env.check(&[&mm]);
        // Freeing: one listed page and the batched one.
        mm.munmap(VA, K4).unwrap();
        mm.munmap(VA + 20 * K4, K4).unwrap();
        assert_eq!(counts(env), (LRU_BATCH as u64 - 1, 0, 0));
        env.check(&[&mm]);
        // A 64K folio goes straight to the list.
        env.only_order(4);
        mm.mmap(VA + M2, K64, RW, ANON | MAP_FIXED).unwrap();
        env.touch(&mm, VA + M2, Access::Write).unwrap();
        let big = env.folio_at(&mm, VA + M2).unwrap();
        assert_eq!(big.order(), 4);
        assert!(big.test(PageFlags::LRU));
        assert_eq!(counts(env), (LRU_BATCH as u64 - 1 + 16, 0, 0));
        env.check(&[&mm]);
        drop(mm);
        assert_eq!(counts(env), (0, 0, 0));
    });
}

/// COW copies of order 0 join the LRU; the zap of a whole range frees
/// listed folios in batches.
fn cow_and_zap<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.no_thp();
        let mm = env.mm();
        mm.mmap(VA, 40 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 40 * K4, 1);
        env.ctx.lru_drain();
        assert_eq!(counts(env), (40, 0, 0));
        let child = mm.fork().unwrap();
        env.fill_pages(&child, VA, 4 * K4, 2);
        assert_eq!(counts(env), (40, 0, 4));
        env.check(&[&mm, &child]);
        drop(child);
        assert_eq!(counts(env), (40, 0, 0));
        mm.munmap(VA, 40 * K4).unwrap();
        assert_eq!(counts(env), (0, 0, 0));
        env.check(&[&mm]);
    });
}

/// Isolation takes the oldest first, off the list with a reference;
/// putback returns it to the list asked for; activation and deactivation
/// move mapped folios and count.
fn isolate_putback_activate<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 4 * K64, RW, ANON | MAP_FIXED).unwrap();
        for i in 0..4 {
            env.touch(&mm, VA + i * K64, Access::Write).unwrap();
        }
        let oldest = env.folio_at(&mm, VA).unwrap();
        let second = env.folio_at(&mm, VA + K64).unwrap();
        let rc = oldest.refcount();
        let got = env.ctx.lru_isolate(20, false);
        assert_eq!(got.len(), 2, "two 64K folios cover 20 pages");
        assert_eq!(*got[0], oldest);
        assert_eq!(*got[1], second);
        assert!(!oldest.test(PageFlags::LRU));
        assert_eq!(oldest.refcount(), rc + 1);
        assert_eq!(counts(env), (32, 0, 0));
        // The checker accepts isolated folios (they hold a reference).
        env.check(&[&mm]);
        let mut it = got.into_iter();
        env.ctx.lru_putback(it.next().unwrap(), true);
        env.ctx.lru_putback(it.next().unwrap(), false);
        assert_eq!(oldest.refcount(), rc);
        assert!(oldest.test(PageFlags::LRU) && oldest.test(PageFlags::ACTIVE));
        assert_eq!(counts(env), (48, 16, 0));
        env.check(&[&mm]);
        // Activate / deactivate a mapped folio.
        let third = env.folio_at(&mm, VA + 2 * K64).unwrap();
        env.ctx.folio_activate(third);
        assert_eq!(env.event(VmEvent::PgActivate), 16);
        assert_eq!(counts(env), (32, 32, 0));
        third.set_flags(PageFlags::REFERENCED);
        env.ctx.folio_deactivate(third);
        assert!(!third.test(PageFlags::ACTIVE) && !third.test(PageFlags::REFERENCED));
        assert_eq!(env.event(VmEvent::PgDeactivate), 16);
        assert_eq!(counts(env), (48, 16, 0));
        env.check(&[&mm]);
        // An isolated folio whose mapping goes is freed by the last put.
        let got = env.ctx.lru_isolate(16, true);
        assert_eq!(*got[0], oldest);
        mm.munmap(VA, K64).unwrap();
        env.ctx.lru_putback(got.into_iter().next().unwrap(), true);
        assert_eq!(counts(env), (48, 0, 0));
        env.check(&[&mm]);
    });
}

/// Split pieces stay on the list of the folio, with its state, in its
/// place; pages are counted once.
fn split_pieces_stay_listed<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, M2, 7);
        let f = env.folio_at(&mm, VA).unwrap();
        env.ctx.folio_activate(f);
        assert_eq!(counts(env), (0, 512, 0));
        f.get();
        split_folio_to_order(&[&mm], f, 4).unwrap();
        f.put();
        assert_eq!(counts(env), (0, 512, 0));
        let c = env.ctx.lru_counts();
        assert_eq!(c.active_folios, 32);
        for i in 0..32 {
            let p = env.folio_at(&mm, VA + i * K64).unwrap();
            assert!(p.test(PageFlags::LRU) && p.test(PageFlags::ACTIVE));
        }
        env.check(&[&mm]);
        // Pieces keep the folio's place: isolating from the tail gets
        // them in address order.
        let got = env.ctx.lru_isolate(32, true);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].pfn(), f.pfn());
        assert_eq!(got[1].pfn(), f.pfn() + 16);
        for g in got {
            env.ctx.lru_putback(g, true);
        }
        // Split to order 0 (pieces of zero pages would be freed; the data
        // keeps them).
        let g = env.folio_at(&mm, VA + K64).unwrap();
        g.get();
        split_folio_to_order(&[&mm], g, 0).unwrap();
        g.put();
        assert_eq!(counts(env), (0, 512, 0));
        assert_eq!(env.ctx.lru_counts().active_folios, 31 + 16);
        env.check(&[&mm]);
        env.check_pages(&mm, VA, M2, 7);
    });
}

/// An arm64 contpte block is harvested once: all 16 access flags
/// cleared, one young mapping reported; on x86 every PTE of the folio is
/// cleared and the folio still counts one space.
fn referenced_contpte_64k<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, K64, 3);
        let f: Folio<'_> = env.folio_at(&mm, VA).unwrap();
        assert_eq!(f.order(), 4);
        if has_cont::<A>() {
            assert!(env.leaf(&mm, VA).unwrap().cont, "contpte-mapped");
        }
        assert!(young_bits(env, &mm, VA, 16).iter().all(|&y| y));
        assert_eq!(folio_referenced(&[&mm], f), 1);
        assert!(
            young_bits(env, &mm, VA, 16).iter().all(|&y| !y),
            "all 16 cleared"
        );
        if has_cont::<A>() {
            assert!(env.leaf(&mm, VA).unwrap().cont, "never unfolded");
        }
        assert_eq!(folio_referenced(&[&mm], f), 0);
        env.check(&[&mm]);
        // arm64: the block was flushed, so the next access faults on the
        // access flag and makes the whole block young again.
        if !A::HW_YOUNG {
            env.touch(&mm, VA + 5 * K4, Access::Read).unwrap();
            assert!(young_bits(env, &mm, VA, 16).iter().all(|&y| y));
            assert_eq!(folio_referenced(&[&mm], f), 1);
        }
        env.check(&[&mm]);
    });
}

/// A PMD-mapped 2M folio: the PMD's young bit, once.
fn referenced_pmd_2m<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.touch(&mm, VA, Access::Write).unwrap();
        let f = env.folio_at(&mm, VA).unwrap();
        assert_eq!(mm.thpmaps().total().pmd_bytes, M2);
        assert!(env.leaf(&mm, VA).unwrap().attrs.young);
        assert_eq!(folio_referenced(&[&mm], f), 1);
        assert!(!env.leaf(&mm, VA).unwrap().attrs.young);
        assert_eq!(mm.thpmaps().total().pmd_bytes, M2, "still PMD-mapped");
        assert_eq!(folio_referenced(&[&mm], f), 0);
        env.check(&[&mm]);
    });
}

/// Shared after fork: two spaces young → 2; check_references activates
/// at once (more than one young mapping).
fn referenced_shared_after_fork<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, K64, 5);
        let child = mm.fork().unwrap();
        env.check_pages(&child, VA, K64, 5);
        let f = env.folio_at(&mm, VA).unwrap();
        assert_eq!(env.folio_at(&child, VA), Some(f));
        assert_eq!(folio_referenced(&[&mm, &child], f), 2);
        assert_eq!(folio_referenced(&[&mm, &child], f), 0);
        // Young in both again (arm64 faults the flags back; x86 needs
        // the TLB entries gone for the MMU to set them).
        env.tlb.reset();
        env.check_pages(&mm, VA, K4, 5);
        env.check_pages(&child, VA, K4, 5);
        let got = env.ctx.lru_isolate(16, false);
        assert_eq!(*got[0], f);
        assert_eq!(
            env.ctx.check_references(&[&mm, &child], f),
            FolioReferences::Activate
        );
        assert!(f.test(PageFlags::ACTIVE) && f.test(PageFlags::REFERENCED));
        assert_eq!(env.event(VmEvent::PgActivate), 16);
        env.ctx.lru_putback(got.into_iter().next().unwrap(), true);
        assert_eq!(counts(env), (0, 16, 0));
        env.check(&[&mm, &child]);
    });
}

/// The inactive decision over two rounds, and shrink_active's counters.
fn check_references_and_shrink_active<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 2 * K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 2 * K64, 1);
        let a = env.folio_at(&mm, VA).unwrap();
        let b = env.folio_at(&mm, VA + K64).unwrap();
        // First sighting: keep, REFERENCED set.
        assert_eq!(env.ctx.check_references(&[&mm], a), FolioReferences::Keep);
        assert!(a.test(PageFlags::REFERENCED) && !a.test(PageFlags::ACTIVE));
        // Not young since: reclaim.
        assert_eq!(
            env.ctx.check_references(&[&mm], a),
            FolioReferences::Reclaim
        );
        assert!(!a.test(PageFlags::REFERENCED));
        // Young, seen, young again: activate (moved now: it is listed).
        assert_eq!(env.ctx.check_references(&[&mm], b), FolioReferences::Keep);
        env.tlb.reset();
        env.check_pages(&mm, VA + K64, K4, 1);
        assert_eq!(
            env.ctx.check_references(&[&mm], b),
            FolioReferences::Activate
        );
        assert_eq!(counts(env), (16, 16, 0));
        assert_eq!(env.event(VmEvent::PgActivate), 16);
        env.check(&[&mm]);
        // shrink_active: b is scanned and deactivated (anon folios are
        // deactivated even when referenced, as Linux).
        env.tlb.reset();
        env.check_pages(&mm, VA + K64, K4, 1);
        let s = env.ctx.shrink_active(&[&mm], 32);
        assert_eq!((s.scanned, s.deactivated, s.referenced), (16, 16, 16));
        assert_eq!(env.event(VmEvent::PgRefill), 16);
        assert_eq!(env.event(VmEvent::PgDeactivate), 16);
        assert_eq!(counts(env), (32, 0, 0));
        assert!(b.test(PageFlags::REFERENCED) && !b.test(PageFlags::ACTIVE));
        env.check(&[&mm]);
    });
}

both_formats!(
    new_folios_land_on_inactive,
    cow_and_zap,
    isolate_putback_activate,
    split_pieces_stay_listed,
    referenced_contpte_64k,
    referenced_pmd_2m,
    referenced_shared_after_fork,
    check_references_and_shrink_active,
    lru_add_new_folio,
    madvise_cold_deactivates,
);

/// `MADV_COLD` on an active folio it covers whole: young bits cleared,
/// the folio moved to the inactive list without `REFERENCED`, counted in
/// `pgdeactivate`; nothing split.
fn madvise_cold_deactivates<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, K64, 9);
        let f = env.folio_at(&mm, VA).unwrap();
        env.ctx.folio_activate(f);
        f.set_flags(PageFlags::REFERENCED);
        assert_eq!(counts(env), (0, 16, 0));
        mm.madvise(VA, K64, MADV_COLD).unwrap();
        assert_eq!(counts(env), (16, 0, 0));
        assert!(!f.test(PageFlags::ACTIVE) && !f.test(PageFlags::REFERENCED));
        assert_eq!(env.event(VmEvent::PgDeactivate), 16);
        assert!(young_bits(env, &mm, VA, 16).iter().all(|&y| !y));
        assert_eq!(env.folio_at(&mm, VA), Some(f));
        env.check(&[&mm]);
        env.check_pages(&mm, VA, K64, 9);
    });
}

/// `lru_add` (the swap-in entry point) adds a folio new to the LRU once:
/// a raw order-0 allocation goes through the batch, a large one straight
/// to the list, and a second call does nothing.
fn lru_add_new_folio<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        use mm::physmem::buddy::AllocFlags;
        use mm::physmem::folio::FolioRef;
        let small = FolioRef::from_raw(env.buddy.alloc(0, AllocFlags::USER).unwrap());
        let big = FolioRef::from_raw(env.buddy.alloc(4, AllocFlags::USER).unwrap());
        small.set_anon_owner(1, 0x100);
        big.set_anon_owner(1, 0x200);
        assert!(env.ctx.lru_add(*small));
        assert!(!env.ctx.lru_add(*small));
        assert!(env.ctx.lru_add(*big));
        assert!(!env.ctx.lru_add(*big));
        assert_eq!(counts(env), (16, 0, 1));
        assert!(small.test(PageFlags::LRU_BATCH));
        assert!(big.test(PageFlags::LRU));
        // The last references go: both leave the LRU.
        drop(small);
        drop(big);
        assert_eq!(counts(env), (0, 0, 0));
    });
}
