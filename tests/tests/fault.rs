//! The anonymous mTHP fault path over both entry formats, data checked
//! through the emulated MMU.

mod mmtest;

use mm::aspace::{Access, Fault};
use mm::paging::{PMD_LEVEL, PTE_LEVEL, PagingArch};
use mm::physmem::buddy::AllocFlags;
use mm::physmem::phys::PhysMem;
use mm::thp::{GlobalMode, MthpStat, OrderMode, VmEvent};
use mmtest::*;

/// 64K always: touching 4 MiB takes exactly 64 faults and yields 64 order-4
/// folios, contpte-mapped on arm64 (64 entries), 1024 plain PTEs on x86.
fn touch_4mib_with_64k_always<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm.mmap(0, 4 * MIB, RW, ANON).unwrap();
        assert_eq!(va % M2, 0, "2 MiB multiple gets a 2 MiB-aligned address");
        env.fill_pages(&mm, va, 4 * MIB, 0x1234);
        assert_eq!(env.faults.get(), 64);
        assert_eq!(env.mthp(4, MthpStat::AnonFaultAlloc), 64);
        assert_eq!(env.mthp(4, MthpStat::NrAnon), 64);
        assert_eq!(env.mthp(4, MthpStat::AnonFaultFallback), 0);
        let r = mm.thpmaps();
        let t = r.total();
        assert_eq!(t.anon_by_order[4], 4 * MIB, "{r}");
        assert_eq!(t.pmd_bytes, 0);
        if has_cont::<A>() {
            assert_eq!(t.cont_bytes, 4 * MIB, "{r}");
            assert_eq!(t.entries, 64, "{r}");
        } else {
            assert_eq!(t.cont_bytes, 0);
            assert_eq!(t.entries, 1024);
        }
        let f = env.folio_at(&mm, va + 5 * K4).unwrap();
        assert_eq!(f.order(), 4);
        assert_eq!(f.refcount(), 16);
        assert_eq!(f.large_mapcount(), 16);
        assert!(f.pages().all(|p| p.is_anon_exclusive()));
        assert_eq!(f.anon_owner(), Some((mm.id(), va / K4)));
        assert_eq!(mm.anon_rss(), 1024);
        env.check_pages(&mm, va, 4 * MIB, 0x1234);
        assert_eq!(env.faults.get(), 64, "reads hit mapped pages");
        env.check(&[&mm]);
        drop(mm);
        assert_eq!(env.mthp(4, MthpStat::NrAnon), 0);
    });
}

/// 2M always: one write fault maps a PMD; a read fault with use_zero_page
/// maps the huge zero folio; a later write splits it and copies 4K.
fn pmd_faults<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        let va = mm.mmap(0, 4 * MIB, RW, ANON).unwrap();
        env.write_u64(&mm, va + 0x1234 * 8, 77);
        assert_eq!(env.faults.get(), 1);
        let l = env.leaf(&mm, va).unwrap();
        assert_eq!(l.level, PMD_LEVEL);
        assert_eq!(env.event(VmEvent::ThpFaultAlloc), 1);
        assert_eq!(env.mthp(9, MthpStat::AnonFaultAlloc), 1);
        let f = env.folio_at(&mm, va).unwrap();
        assert_eq!(
            (
                f.order(),
                f.refcount(),
                f.large_mapcount(),
                f.entire_mapcount()
            ),
            (9, 1, 1, 1)
        );
        // Whole PMD readable and zero except the word written.
        env.check_zero(&mm, va + K4, M2 - K4);
        assert_eq!(env.read_u64(&mm, va + 0x1234 * 8), 77);
        assert_eq!(env.faults.get(), 1);
        // Read fault in the second 2 MiB: huge zero folio.
        assert_eq!(env.read_u64(&mm, va + M2 + 8), 0);
        let z = env.leaf(&mm, va + M2).unwrap();
        assert_eq!(z.level, PMD_LEVEL);
        assert!(z.attrs.special && !z.attrs.perms.write);
        assert_eq!(Some(z.pfn), env.ctx.huge_zero_pfn());
        assert_eq!(env.event(VmEvent::FaultHugeZeroPage), 1);
        let r = mm.thpmaps();
        assert_eq!(r.total().zero_bytes, M2, "{r}");
        assert_eq!(r.total().pmd_bytes, 2 * M2, "{r}");
        assert_eq!(r.total().entries, 2, "{r}");
        env.check(&[&mm]);
        // A write splits it (Linux 6.12): the written page gets a 4K
        // folio, the rest stays mapped to the zero frames by PTEs.
        env.write_u64(&mm, va + M2 + 16, 5);
        let l = env.leaf(&mm, va + M2).unwrap();
        assert_eq!(l.level, PTE_LEVEL);
        assert!(!l.attrs.special && l.attrs.perms.write);
        assert_eq!(env.event(VmEvent::ThpFaultAlloc), 1);
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 1);
        assert_eq!(env.folio_at(&mm, va + M2).unwrap().order(), 0);
        assert!(env.leaf(&mm, va + M2 + K4).unwrap().attrs.special);
        assert_eq!(env.read_u64(&mm, va + M2 + 8), 0);
        assert_eq!(env.read_u64(&mm, va + M2 + 16), 5);
        env.check_zero(&mm, va + M2 + K4, M2 - K4);
        env.check(&[&mm]);
        assert_eq!(mm.anon_rss(), 513);
        assert_eq!(mm.thpmaps().total().anon_by_order[9], M2);
    });
}

/// With `huge_zero_wp=alloc` (Linux 6.13's behaviour) a write to the huge
/// zero PMD replaces it with a PMD-mapped folio.
fn huge_zero_write_allocates_pmd<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        env.thp.config.set_huge_zero_wp_alloc(true);
        let mm = env.mm();
        let va = mm.mmap(0, 4 * MIB, RW, ANON).unwrap();
        let va = va.next_multiple_of(M2);
        assert_eq!(env.read_u64(&mm, va + 8), 0);
        assert_eq!(env.event(VmEvent::FaultHugeZeroPage), 1);
        env.write_u64(&mm, va + 16, 5);
        let l = env.leaf(&mm, va).unwrap();
        assert_eq!(l.level, PMD_LEVEL);
        assert!(!l.attrs.special && l.attrs.perms.write);
        assert_eq!(env.event(VmEvent::ThpFaultAlloc), 1);
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 0);
        assert_eq!(env.read_u64(&mm, va + 8), 0);
        assert_eq!(env.read_u64(&mm, va + 16), 5);
        env.check(&[&mm]);
        assert_eq!(mm.anon_rss(), 512);
        assert_eq!(mm.thpmaps().total().anon_by_order[9], M2);
    });
}

/// Huge zero write with the PMD size disabled in the meantime: the PMD is
/// split to zero PTEs and only the written page gets a 4K folio.
fn huge_zero_write_after_disable<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        let va = mm.mmap(0, M2, RW, ANON).unwrap();
        assert_eq!(env.read_u64(&mm, va + 3 * K4), 0);
        assert_eq!(env.leaf(&mm, va).unwrap().level, PMD_LEVEL);
        env.no_thp();
        env.write_u64(&mm, va + 3 * K4, 9);
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 1);
        let l = env.leaf(&mm, va + 3 * K4).unwrap();
        assert_eq!(l.level, PTE_LEVEL);
        assert!(!l.attrs.special);
        assert_eq!(env.folio_at(&mm, va + 3 * K4).unwrap().order(), 0);
        let z = env.leaf(&mm, va + 4 * K4).unwrap();
        assert!(z.attrs.special && z.level == PTE_LEVEL);
        env.check_zero(&mm, va + 4 * K4, M2 - 4 * K4);
        assert_eq!(env.read_u64(&mm, va + 3 * K4), 9);
        assert_eq!(mm.anon_rss(), 1);
        env.check(&[&mm]);
    });
}

/// A VMA too small or misaligned for an order falls back: 64K always with a
/// 48K VMA gives order-0 faults; a VMA starting off a 64K boundary gets
/// order 4 only for the aligned blocks it covers entirely.
fn small_and_misaligned_fallback<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let base = 0x7000_0000_0000u64;
        let va = mm
            .mmap(base, 48 << 10, RW, ANON | MAP_FIXED_NOREPLACE)
            .unwrap();
        assert_eq!(va, base);
        env.fill_pages(&mm, va, 48 << 10, 1);
        assert_eq!(env.faults.get(), 12);
        assert_eq!(env.mthp(4, MthpStat::AnonFaultAlloc), 0);
        assert_eq!(env.mthp(4, MthpStat::AnonFaultFallback), 0);
        // VMA [base2 + 16K, base2 + 176K): of the aligned 64K blocks only
        // [base2 + 64K, base2 + 128K) lies inside it.
        let base2 = 0x7100_0000_0000u64;
        let v2 = mm
            .mmap(base2 + 16 * 1024, 160 << 10, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&mm, v2, 160 << 10, 2);
        // 12 pages before +64K, one fault for the 64K block, 12 after.
        assert_eq!(env.mthp(4, MthpStat::AnonFaultAlloc), 1);
        assert_eq!(env.faults.get(), 12 + 12 + 1 + 12);
        assert_eq!(env.folio_at(&mm, base2 + K64).unwrap().order(), 4);
        assert_eq!(env.folio_at(&mm, base2 + 2 * K64).unwrap().order(), 0);
        assert_eq!(env.folio_at(&mm, v2).unwrap().order(), 0);
        let r = mm.thpmaps();
        assert_eq!(r.total().anon_by_order[4], K64, "{r}");
        env.check_pages(&mm, v2, 160 << 10, 2);
        env.check_pages(&mm, va, 48 << 10, 1);
        env.check(&[&mm]);
    });
}

/// A populated neighbour page blocks the larger order: the fault takes the
/// largest order whose aligned block is entirely empty.
fn occupied_block_falls_to_lower_order<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.knobs(
            GlobalMode::Never,
            &[
                (2, OrderMode::Always),
                (3, OrderMode::Always),
                (4, OrderMode::Always),
                (9, OrderMode::Never),
            ],
        );
        let mm = env.mm();
        let va = mm.mmap(0, M2, RW, ANON).unwrap();
        // A read maps the zero page at page 5: block 0..16 is not empty.
        assert_eq!(env.read_u64(&mm, va + 5 * K4), 0);
        env.write_u64(&mm, va + 9 * K4, 1);
        // Pages 8..16 (order 3) are empty.
        assert_eq!(env.folio_at(&mm, va + 9 * K4).unwrap().order(), 3);
        env.write_u64(&mm, va + 2 * K4, 1);
        // 0..4 contains no populated page: order 2.
        assert_eq!(env.folio_at(&mm, va + 2 * K4).unwrap().order(), 2);
        env.write_u64(&mm, va + 6 * K4, 1);
        // 4..8 holds the zero page at 5: order 0.
        assert_eq!(env.folio_at(&mm, va + 6 * K4).unwrap().order(), 0);
        assert_eq!(env.mthp(4, MthpStat::AnonFaultFallback), 0);
        env.check(&[&mm]);
    });
}

/// Allocation failure falls back order by order and counts
/// anon_fault_fallback for each order that failed.
fn alloc_failure_falls_back<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.knobs(
            GlobalMode::Never,
            &[
                (2, OrderMode::Always),
                (3, OrderMode::Always),
                (4, OrderMode::Always),
                (9, OrderMode::Always),
            ],
        );
        let mm = env.mm();
        let va = mm.mmap(0, 4 * MIB, RW, ANON).unwrap();
        // Take every frame, then give back the first 4 of every 16: free
        // memory is then order-2 blocks only.
        let mut held = Vec::new();
        while let Ok(f) = env.buddy.alloc(0, AllocFlags::USER) {
            held.push(f);
        }
        let mut kept = Vec::new();
        for f in held {
            if f.pfn() % 16 < 4 {
                f.put();
            } else {
                kept.push(f);
            }
        }
        env.write_u64(&mm, va + 40 * K4, 3);
        assert_eq!(env.mthp(9, MthpStat::AnonFaultFallback), 1);
        assert_eq!(env.event(VmEvent::ThpFaultFallback), 1);
        assert_eq!(env.mthp(4, MthpStat::AnonFaultFallback), 1);
        assert_eq!(env.mthp(3, MthpStat::AnonFaultFallback), 1);
        assert_eq!(env.mthp(2, MthpStat::AnonFaultAlloc), 1);
        assert_eq!(env.folio_at(&mm, va + 40 * K4).unwrap().order(), 2);
        assert_eq!(env.read_u64(&mm, va + 40 * K4), 3);
        env.check(&[&mm]);
        // Exhaust everything: the fault reports OOM.
        let mut rest = Vec::new();
        while let Ok(f) = env.buddy.alloc(0, AllocFlags::USER) {
            rest.push(f);
        }
        assert_eq!(env.touch(&mm, va + 3 * MIB, Access::Write), Err(Fault::Oom));
        for f in rest.into_iter().chain(kept) {
            f.put();
        }
        env.check(&[&mm]);
    });
}

/// A read fault maps the zero page read-only; a later write replaces it
/// with a zeroed page; data correct.
fn zero_page_then_write<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm.mmap(0, 16 * K4, RW, ANON).unwrap();
        for i in 0..16 {
            assert_eq!(env.read_u64(&mm, va + i * K4 + 64), 0);
        }
        let l = env.leaf(&mm, va).unwrap();
        assert!(l.attrs.special && !l.attrs.perms.write);
        assert_eq!(l.pfn, env.ctx.zero_pfn());
        assert_eq!(env.event(VmEvent::FaultZeroPage), 16);
        assert_eq!(mm.anon_rss(), 0);
        assert_eq!(mm.thpmaps().total().zero_bytes, 64 << 10);
        env.write_u64(&mm, va + 3 * K4 + 64, 0xfeed);
        let l = env.leaf(&mm, va + 3 * K4).unwrap();
        assert!(!l.attrs.special && l.attrs.perms.write);
        assert_eq!(env.folio_at(&mm, va + 3 * K4).unwrap().order(), 0);
        assert_eq!(env.read_u64(&mm, va + 3 * K4 + 64), 0xfeed);
        assert_eq!(env.read_u64(&mm, va + 3 * K4 + 72), 0);
        assert_eq!(env.read_u64(&mm, va + 4 * K4 + 64), 0);
        assert_eq!(mm.anon_rss(), 1);
        // The zero page itself is untouched.
        assert!(env.mem.is_zero(env.ctx.zero_pfn() * K4, K4));
        env.check(&[&mm]);
    });
}

/// `/proc/<pid>/pagemap` and `/proc/kpageflags` as Linux reports them: a
/// PMD-mapped 2 MiB folio, 64K folios and a 4K page show present,
/// consecutive frames, exclusive until a fork shares them; the frames are
/// compound heads and tails with `THP` and `ANON`; the zero page is
/// `ZERO_PAGE` and not exclusive; holes in a VMA carry only the soft-dirty
/// bit (when asked for), pages outside any VMA nothing.
fn pagemap_and_kpageflags<A: PagingArch>() {
    use mm::abi::kpageflags::*;
    use mm::abi::pagemap::*;
    run::<A>(32 * MIB, |env| {
        env.knobs(
            GlobalMode::Always,
            &[(4, OrderMode::Always), (9, OrderMode::Inherit)],
        );
        let mm = env.mm();
        const VA: u64 = 0x7000_0000_0000;
        mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        // 128K: too small for 2M, two 64K folios.
        mm.mmap(VA + 4 * M2, 2 * K64, RW, ANON | MAP_FIXED).unwrap();
        // 4K only, then a read fault: the zero page.
        mm.mmap(VA + 8 * M2, 2 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, M2, 1);
        env.fill_pages(&mm, VA + 4 * M2, 2 * K64, 2);
        env.write_u64(&mm, VA + 8 * M2, 7);
        assert_eq!(env.read_u64(&mm, VA + 8 * M2 + K4), 0);

        let pm = mm.pagemap(VA, 512, false);
        assert_eq!(pm.len(), 512);
        let pfn0 = pm[0] & PM_PFN_MASK;
        for (i, &e) in pm.iter().enumerate() {
            assert_eq!(
                e & !PM_PFN_MASK,
                PM_PRESENT | PM_MMAP_EXCLUSIVE,
                "page {i}: {e:#x}"
            );
            assert_eq!(e & PM_PFN_MASK, pfn0 + i as u64);
        }
        let k = |pfn: u64| env.buddy.kpageflags(pfn);
        let bit = |b: u32| 1u64 << b;
        let thp_anon = bit(KPF_THP) | bit(KPF_ANON) | bit(KPF_MMAP);
        assert_eq!(
            k(pfn0) & (thp_anon | bit(KPF_COMPOUND_HEAD)),
            thp_anon | bit(KPF_COMPOUND_HEAD)
        );
        for i in 1..512 {
            assert_eq!(
                k(pfn0 + i) & (thp_anon | bit(KPF_COMPOUND_TAIL)),
                thp_anon | bit(KPF_COMPOUND_TAIL)
            );
            assert_eq!(k(pfn0 + i) & bit(KPF_COMPOUND_HEAD), 0);
        }
        let pm = mm.pagemap(VA + 4 * M2, 32, false);
        for half in [0, 16] {
            let head = pm[half] & PM_PFN_MASK;
            assert_eq!(head % 16, 0, "64K folios are naturally aligned");
            assert_ne!(k(head) & bit(KPF_COMPOUND_HEAD), 0);
            for i in 1..16 {
                assert_eq!(pm[half + i] & PM_PFN_MASK, head + i as u64);
                assert_ne!(k(head + i as u64) & bit(KPF_COMPOUND_TAIL), 0);
                assert_ne!(k(head + i as u64) & bit(KPF_THP), 0);
            }
        }
        let pm = mm.pagemap(VA + 8 * M2, 3, true);
        let small = pm[0] & PM_PFN_MASK;
        assert_eq!(
            pm[0] & !PM_PFN_MASK,
            PM_PRESENT | PM_MMAP_EXCLUSIVE | PM_SOFT_DIRTY
        );
        assert_eq!(k(small) & (bit(KPF_COMPOUND_HEAD) | bit(KPF_THP)), 0);
        assert_ne!(k(small) & bit(KPF_ANON), 0);
        assert_eq!(pm[1], PM_PRESENT | PM_SOFT_DIRTY | env.ctx.zero_pfn());
        assert_ne!(k(env.ctx.zero_pfn()) & bit(KPF_ZERO_PAGE), 0);
        assert_eq!(pm[2], 0, "outside every VMA");
        // A hole inside a VMA: soft-dirty only when asked for.
        mm.madvise(VA + 8 * M2, K4, MADV_DONTNEED).unwrap();
        assert_eq!(mm.pagemap(VA + 8 * M2, 1, true), [PM_SOFT_DIRTY]);
        assert_eq!(mm.pagemap(VA + 8 * M2, 1, false), [0]);
        // Beyond user space: nothing.
        assert!(mm.pagemap(0x7fff_ffff_f000, 4, false).is_empty());
        // A fork shares every page: no longer exclusive, in either space.
        let child = mm.fork().unwrap();
        for m in [&mm, &child] {
            for e in m
                .pagemap(VA, 512, false)
                .into_iter()
                .chain(m.pagemap(VA + 4 * M2, 32, false))
            {
                assert_eq!(e & (PM_PRESENT | PM_MMAP_EXCLUSIVE), PM_PRESENT);
            }
        }
        drop(child);
        // Free memory: the head of some free block is BUDDY; frames beyond
        // the memmap have no page.
        let free_heads = (RAM_BASE / K4..env.buddy.kpageflags_end())
            .filter(|&p| k(p) == bit(KPF_BUDDY))
            .count();
        assert!(free_heads > 0);
        assert_eq!(k(env.buddy.kpageflags_end()), bit(KPF_NOPAGE));
        env.check(&[&mm]);
    });
}

/// Accesses the VMA forbids, and addresses outside every VMA, are SIGSEGV.
fn segv_cases<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        let mm = env.mm();
        let ro = mm.mmap(0, 8 * K4, PROT_READ, ANON).unwrap();
        assert_eq!(env.read_u64(&mm, ro), 0);
        assert_eq!(env.touch(&mm, ro, Access::Write), Err(Fault::Segv));
        assert_eq!(env.touch(&mm, ro, Access::Exec), Err(Fault::Segv));
        let none = mm.mmap(0, 8 * K4, PROT_NONE, ANON).unwrap();
        assert_eq!(env.touch(&mm, none, Access::Read), Err(Fault::Segv));
        assert_eq!(env.touch(&mm, 0x1000_0000, Access::Read), Err(Fault::Segv));
        assert_eq!(mm.handle_fault(0, Access::Read), Err(Fault::Segv));
        assert!(env.event(VmEvent::FaultSegv) >= 4);
        env.check(&[&mm]);
    });
}

/// MAP_POPULATE faults everything in (writable mapping: write faults, so
/// real folios; read-only mapping: zero pages).
fn map_populate<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm
            .mmap(
                0x7000_0000_0000,
                256 * K4,
                RW,
                ANON | MAP_POPULATE | MAP_FIXED,
            )
            .unwrap();
        assert_eq!(mm.anon_rss(), 256);
        assert_eq!(env.mthp(4, MthpStat::AnonFaultAlloc), 16);
        let ro = mm.mmap(0, 8 * K4, PROT_READ, ANON | MAP_POPULATE).unwrap();
        assert_eq!(mm.thpmaps().vma_at(ro).unwrap().zero_bytes, 8 * K4);
        env.fill_pages(&mm, va, 256 * K4, 4);
        assert_eq!(env.faults.get(), 0, "populated: no faults");
        env.check(&[&mm]);
    });
}

both_formats!(
    touch_4mib_with_64k_always,
    pmd_faults,
    huge_zero_write_after_disable,
    huge_zero_write_allocates_pmd,
    small_and_misaligned_fallback,
    occupied_block_falls_to_lower_order,
    alloc_failure_falls_back,
    zero_page_then_write,
    pagemap_and_kpageflags,
    segv_cases,
    map_populate,
);
