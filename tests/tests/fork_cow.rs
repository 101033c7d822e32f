//! fork and copy-on-write over both entry formats.

mod mmtest;

use mm::paging::{PMD_LEVEL, PTE_LEVEL, PagingArch};
use mm::thp::{MthpStat, VmEvent};
use mmtest::*;

/// After fork each side keeps reading its own data after the other writes;
/// with `large_cow` off (Linux's behaviour) every first write to a shared
/// page copies one 4K page.
fn each_side_keeps_its_data<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        env.thp.config.set_large_cow(false);
        let parent = env.mm();
        let va = parent
            .mmap(0x7000_0000_0000, 256 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&parent, va, 256 * K4, 0xaaaa);
        let child = parent.fork().unwrap();
        env.check(&[&parent, &child]);
        assert_eq!(child.anon_rss(), 256);
        let f = env.folio_at(&parent, va).unwrap();
        assert_eq!((f.refcount(), f.large_mapcount()), (32, 32));
        assert!(f.pages().all(|p| !p.is_anon_exclusive()));
        // Both sides stay contpte-mapped after fork (whole-block wrprotect).
        if has_cont::<A>() {
            assert_eq!(parent.thpmaps().total().cont_bytes, 256 * K4);
            assert_eq!(child.thpmaps().total().cont_bytes, 256 * K4);
            assert_eq!(child.thpmaps().total().entries, 16);
        }
        env.check_pages(&child, va, 256 * K4, 0xaaaa);
        // Child writes page 3, parent writes page 5: two copies.
        env.write_u64(&child, va + 3 * K4, 1111);
        env.write_u64(&parent, va + 5 * K4, 2222);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 2);
        assert_eq!(env.event(VmEvent::FaultCowReuse), 0);
        assert_eq!(env.read_u64(&parent, va + 3 * K4), 0xaaaa ^ (va + 3 * K4));
        assert_eq!(env.read_u64(&child, va + 3 * K4), 1111);
        assert_eq!(env.read_u64(&child, va + 5 * K4), 0xaaaa ^ (va + 5 * K4));
        assert_eq!(env.read_u64(&parent, va + 5 * K4), 2222);
        env.check(&[&parent, &child]);
        // Many writes on both sides, then verify everything.
        for p in (0..256).step_by(7) {
            env.write_u64(&child, va + p * K4 + 8, p);
        }
        for p in (0..256).step_by(11) {
            env.write_u64(&parent, va + p * K4 + 16, p + 1000);
        }
        for p in 0..256u64 {
            let a = va + p * K4;
            let c8 = env.read_u64(&child, a + 8);
            let p16 = env.read_u64(&parent, a + 16);
            assert_eq!(c8, if p % 7 == 0 { p } else { 0 });
            assert_eq!(p16, if p % 11 == 0 { p + 1000 } else { 0 });
            assert_eq!(env.read_u64(&child, a + 16), 0);
            assert_eq!(env.read_u64(&parent, a + 8), 0);
        }
        env.check(&[&parent, &child]);
        drop(child);
        env.check(&[&parent]);
    });
}

/// Once the other side is gone a write reuses the page in place (no copy):
/// for large folios by the exclusive-mapping rule (the whole folio, every
/// PTE made writable at once), for small ones by the single-reference
/// rule.
fn exclusive_reuse_after_child_exits<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let parent = env.mm();
        let va = parent
            .mmap(0x7000_0000_0000, 32 * K4 + 2 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        // Two 64K folios and two order-0 pages (the tail is too small).
        env.fill_pages(&parent, va, 34 * K4, 7);
        assert_eq!(env.folio_at(&parent, va + 33 * K4).unwrap().order(), 0);
        let child = parent.fork().unwrap();
        env.check_pages(&child, va, 34 * K4, 7);
        child.destroy();
        let before = env.leaf(&parent, va + 3 * K4).unwrap().pfn;
        env.write_u64(&parent, va + 3 * K4, 42);
        env.write_u64(&parent, va + 33 * K4, 43);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 0);
        assert_eq!(env.event(VmEvent::FaultCowReuse), 2);
        assert_eq!(env.leaf(&parent, va + 3 * K4).unwrap().pfn, before);
        // The whole 64K folio was reused: every page anon-exclusive and
        // writable, so a write to another of its pages takes no fault; the
        // second folio's pages were left alone.
        let f = env.folio_at(&parent, va).unwrap();
        assert!(f.pages().all(|p| p.is_anon_exclusive()));
        assert!(env.leaf(&parent, va + 15 * K4).unwrap().attrs.perms.write);
        assert!(!env.leaf(&parent, va + 16 * K4).unwrap().attrs.perms.write);
        env.write_u64(&parent, va + 4 * K4 + 8, 44);
        assert_eq!(env.event(VmEvent::FaultCowReuse), 2);
        if has_cont::<A>() {
            assert!(env.leaf(&parent, va).unwrap().cont);
        }
        assert_eq!(env.read_u64(&parent, va + 3 * K4), 42);
        env.check_pages(&parent, va + 4 * K4, 29 * K4, 7);
        env.check(&[&parent]);
    });
}

/// A PMD-mapped folio stays PMD-mapped on both sides of fork; with
/// `large_cow` off a write in the child splits the child's PMD and copies
/// one page; once the child is
/// gone the parent reuses its PMD in place.
fn pmd_fork<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        env.thp.config.set_large_cow(false);
        let parent = env.mm();
        let va = parent.mmap(0, M2, RW, ANON).unwrap();
        env.fill_pages(&parent, va, M2, 3);
        assert_eq!(env.faults.get(), 1);
        let child = parent.fork().unwrap();
        assert_eq!(env.leaf(&child, va).unwrap().level, PMD_LEVEL);
        assert_eq!(parent.thpmaps().total().pmd_bytes, M2);
        assert_eq!(child.thpmaps().total().pmd_bytes, M2);
        let f = env.folio_at(&parent, va).unwrap();
        assert_eq!(
            (f.refcount(), f.large_mapcount(), f.entire_mapcount()),
            (2, 2, 2)
        );
        env.check(&[&parent, &child]);
        env.check_pages(&child, va, M2, 3);
        env.write_u64(&child, va + 100 * K4, 5);
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 1);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 1);
        assert_eq!(env.leaf(&child, va).unwrap().level, PTE_LEVEL);
        assert_eq!(env.leaf(&parent, va).unwrap().level, PMD_LEVEL);
        assert_eq!(
            (f.refcount(), f.large_mapcount(), f.entire_mapcount()),
            (512, 512, 1)
        );
        assert_eq!(env.read_u64(&child, va + 100 * K4), 5);
        assert_eq!(env.read_u64(&parent, va + 100 * K4), 3 ^ (va + 100 * K4));
        env.check(&[&parent, &child]);
        drop(child);
        assert_eq!((f.refcount(), f.large_mapcount()), (1, 1));
        env.write_u64(&parent, va + 7 * K4, 8);
        assert_eq!(env.event(VmEvent::FaultCowReuse), 1);
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 1);
        let l = env.leaf(&parent, va).unwrap();
        assert!(l.level == PMD_LEVEL && l.attrs.perms.write);
        env.check_pages(&parent, va + 8 * K4, M2 - 8 * K4, 3);
        env.check(&[&parent]);
    });
}

/// Zero-page entries are copied as they are; each side's write gets its own
/// page.  The huge zero PMD is shared too.
fn zero_pages_across_fork<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        let parent = env.mm();
        let va = parent.mmap(0, 2 * M2, RW, ANON).unwrap();
        env.no_thp();
        assert_eq!(env.read_u64(&parent, va), 0);
        env.only_order(9);
        assert_eq!(env.read_u64(&parent, va + M2), 0);
        let child = parent.fork().unwrap();
        assert_eq!(child.thpmaps().total().zero_bytes, M2 + K4);
        env.write_u64(&child, va, 1);
        env.write_u64(&child, va + M2 + K4, 2);
        assert_eq!(env.read_u64(&parent, va), 0);
        assert_eq!(env.read_u64(&parent, va + M2 + K4), 0);
        assert_eq!(env.read_u64(&child, va), 1);
        assert_eq!(env.read_u64(&child, va + M2 + K4), 2);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 0);
        env.check(&[&parent, &child]);
    });
}

/// The last mapping of a large folio is copied rather than reused (Linux:
/// better to free the large folio), which frees it.
fn last_mapping_of_large_folio_is_copied<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let parent = env.mm();
        let va = parent
            .mmap(0x7000_0000_0000, 16 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&parent, va, 16 * K4, 9);
        let child = parent.fork().unwrap();
        child.munmap(va, 16 * K4).unwrap();
        parent.munmap(va + K4, 15 * K4).unwrap();
        let f = env.folio_at(&parent, va).unwrap();
        assert_eq!((f.refcount(), f.large_mapcount()), (1, 1));
        assert_eq!(env.ctx.deferred_split_len(), 1);
        env.write_u64(&parent, va, 10);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 1);
        assert_eq!(env.ctx.deferred_split_len(), 0);
        assert_eq!(env.mthp(4, MthpStat::NrAnon), 0);
        assert_eq!(env.read_u64(&parent, va), 10);
        env.check(&[&parent, &child]);
    });
}

/// MADV_DONTFORK: the child has no such VMA; MADV_WIPEONFORK: the child
/// reads zeroes.
fn dontfork_and_wipeonfork<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.no_thp();
        let parent = env.mm();
        let a = parent.mmap(0, 4 * K4, RW, ANON).unwrap();
        let b = parent.mmap(0, 4 * K4, RW, ANON).unwrap();
        env.fill_pages(&parent, a, 4 * K4, 1);
        env.fill_pages(&parent, b, 4 * K4, 2);
        parent.madvise(a, 4 * K4, MADV_DONTFORK).unwrap();
        parent.madvise(b, 4 * K4, MADV_WIPEONFORK).unwrap();
        let child = parent.fork().unwrap();
        assert_eq!(
            env.touch(&child, a, mm::aspace::Access::Read),
            Err(mm::aspace::Fault::Segv)
        );
        env.check_zero(&child, b, 4 * K4);
        env.check_pages(&parent, a, 4 * K4, 1);
        env.check_pages(&parent, b, 4 * K4, 2);
        env.check(&[&parent, &child]);
    });
}

/// Grand-children: three address spaces share pages; writes in each stay
/// private.
fn three_generations<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let a = env.mm();
        let va = a
            .mmap(0x7000_0000_0000, 64 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&a, va, 64 * K4, 1);
        let b = a.fork().unwrap();
        env.write_u64(&b, va + K4, 2);
        let c = b.fork().unwrap();
        env.write_u64(&c, va + 2 * K4, 3);
        env.write_u64(&a, va + 2 * K4, 4);
        env.check(&[&a, &b, &c]);
        assert_eq!(env.read_u64(&a, va + K4), 1 ^ (va + K4));
        assert_eq!(env.read_u64(&b, va + K4), 2);
        assert_eq!(env.read_u64(&c, va + K4), 2);
        assert_eq!(env.read_u64(&c, va + 2 * K4), 3);
        assert_eq!(env.read_u64(&a, va + 2 * K4), 4);
        assert_eq!(env.read_u64(&b, va + 2 * K4), 1 ^ (va + 2 * K4));
        drop(b);
        env.check(&[&a, &c]);
        drop(a);
        env.check_pages(&c, va + 3 * K4, 61 * K4, 1);
        env.check(&[&c]);
    });
}

both_formats!(
    each_side_keeps_its_data,
    exclusive_reuse_after_child_exits,
    pmd_fork,
    zero_pages_across_fork,
    last_mapping_of_large_folio_is_copied,
    dontfork_and_wipeonfork,
    three_generations,
);
