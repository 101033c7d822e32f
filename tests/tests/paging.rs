//! The portable page-table layer driven over both real formats through the
//! emulated MMU and TLB model.

mod common;

use common::*;
use mm::cpu::{AtomicCpuSet, CpuSet};
use mm::emu::{Access, Fault, Flush};
use mm::paging::{
    Attrs, Entry, FolioSpan, PMD_LEVEL, PTE_LEVEL, PageTable, PagingArch, Perms, PtError,
    ROOT_LEVEL, Space, probe,
};
use mm::physmem::phys::PhysMem;

const VA: u64 = 0x7f00_0000_0000;

fn user_pt<A: PagingArch>(emu: &mm::emu::Emu) -> PageTable<'_, A> {
    PageTable::<A>::new(emu.env(), USER).unwrap()
}

/// A kernel table mapping 1 GiB + 2 MiB + 8 KiB at `KVA` to 4 GiB, all
/// aligned: one 1G, one 2M and two 4K leaves.  Returns it and the length.
fn mixed_kernel_pt<A: PagingArch>(emu: &mm::emu::Emu) -> (PageTable<'_, A>, u64, u64) {
    let mut pt = PageTable::<A>::new(emu.env(), Space::Kernel).unwrap();
    let kva = 0xffff_8000_0000_0000u64;
    let len = (1 << 30) + M2 + 0x2000;
    pt.map_range(kva, 0x1_0000_0000, len, Attrs::kernel(Perms::KERNEL_RW))
        .unwrap();
    (pt, kva, len)
}

/// Kernel-style map_range picks 1G/2M/4K leaves; translation follows them
/// and enforces rights.
fn map_and_translate<A: PagingArch>() {
    let emu = emu();
    let (mut pt, kva, len) = mixed_kernel_pt::<A>(&emu);
    let mut sizes = Vec::new();
    pt.for_each_leaf(&mut |va, l| sizes.push((va, l.level)));
    assert_eq!(
        sizes,
        vec![
            (kva, 2),
            (kva + (1 << 30), 1),
            (kva + (1 << 30) + M2, 0),
            (kva + (1 << 30) + M2 + 4096, 0)
        ]
    );
    let w = pt.lookup(kva + (1 << 30) + 0x1234);
    assert_eq!(w.level, PMD_LEVEL);
    let pa = emu.tlb.access::<A>(
        &emu.mem,
        pt.root(),
        Space::Kernel,
        kva + 0x1234_5678,
        Access::Write,
        false,
    );
    assert_eq!(pa, Ok(0x1_0000_0000 + 0x1234_5678));
    // Kernel pages: not from user mode, not executable.
    let user = emu.tlb.access::<A>(
        &emu.mem,
        pt.root(),
        Space::Kernel,
        kva + (1 << 30) + M2,
        Access::Read,
        true,
    );
    assert!(matches!(user, Err(Fault::Permission { .. })));
    let exec = emu
        .tlb
        .access::<A>(&emu.mem, pt.root(), Space::Kernel, kva, Access::Exec, false);
    assert!(matches!(exec, Err(Fault::Permission { .. })));
    assert!(matches!(
        emu.tlb.access::<A>(
            &emu.mem,
            pt.root(),
            Space::Kernel,
            kva + len,
            Access::Read,
            false
        ),
        Err(Fault::NotMapped { .. })
    ));
    assert_eq!(
        pt.map_range(kva, 0, 4096, Attrs::kernel(Perms::KERNEL_RO)),
        Err(PtError::Huge { level: 2 })
    );
    let last = kva + (1 << 30) + M2;
    assert_eq!(
        pt.map_range(last, 0, 4096, Attrs::kernel(Perms::KERNEL_RO)),
        Err(PtError::Exists)
    );
    pt.destroy();
    assert_eq!(emu.pt_in_use(), 0);
}

/// set_ptes of a 64K folio: 16 cont entries on arm64 (user), 16 plain on x86;
/// never cont in a kernel space.
fn set_ptes_64k_folio<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    assert!(pt.ptes_none(VA, 16));
    pt.set_ptes(VA, DATA_PFN, 16, user_rw()).unwrap();
    assert!(
        !pt.ptes_none(VA, 16) && !pt.ptes_none(VA + 15 * 4096, 1) && pt.ptes_none(VA + K64, 16)
    );
    assert_eq!(
        cont_count(&pt, VA, 16),
        if A::CONT_PTES == 16 { 16 } else { 0 }
    );
    for i in 0..16 {
        assert_eq!(
            touch(&emu, &pt, VA + i * 4096 + 8, Access::Write),
            Ok(((DATA_PFN + i) << 12) + 8)
        );
    }
    // One 64K TLB entry on arm64, sixteen 4K ones on x86.
    assert_eq!(
        emu.tlb.entries().len(),
        if A::CONT_PTES == 16 { 1 } else { 16 }
    );
    assert_sane(&emu, &pt);
    assert_eq!(
        pt.set_ptes(VA + 8 * 4096, DATA_PFN, 1, user_rw()),
        Err(PtError::Exists)
    );
    // Unaligned frames: no cont bit.
    pt.set_ptes(VA + K64, DATA_PFN + 1, 16, user_rw()).unwrap();
    assert_eq!(cont_count(&pt, VA + K64, 16), 0);
    // Partly covered blocks: only the full one gets it.
    pt.set_ptes(VA + 2 * K64 + 8 * 4096, DATA_PFN + 40, 32, user_rw())
        .unwrap();
    assert_eq!(
        cont_count(&pt, VA + 2 * K64, 48),
        if A::CONT_PTES == 16 { 16 } else { 0 }
    );
    assert_sane(&emu, &pt);
    pt.destroy();

    let mut kpt = PageTable::<A>::new(emu.env(), Space::Kernel).unwrap();
    kpt.set_ptes(
        0xffff_8000_0000_0000,
        DATA_PFN,
        16,
        Attrs::kernel(Perms::KERNEL_RW),
    )
    .unwrap();
    assert_eq!(cont_count(&kpt, 0xffff_8000_0000_0000, 16), 0);
    kpt.destroy();
    assert_eq!(emu.pt_in_use(), 0);
}

/// Single PTEs set one by one fold when the 16th completes the block.
fn fold_on_sixteenth<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    let folio = FolioSpan {
        first_pfn: DATA_PFN,
        nr: 16,
    };
    for i in 0..16u64 {
        let folded = pt
            .set_pte(VA + i * 4096, DATA_PFN + i, user_rw(), Some(folio))
            .unwrap();
        assert_eq!(folded, A::CONT_PTES == 16 && i == 15, "entry {i}");
        if i < 15 {
            assert_eq!(cont_count(&pt, VA, 16), 0);
            // Populate the TLB with 4K entries before the fold.
            touch(&emu, &pt, VA + i * 4096, Access::Write).unwrap();
        }
    }
    let cont = A::CONT_PTES == 16;
    assert_eq!(cont_count(&pt, VA, 16), if cont { 16 } else { 0 });
    assert_eq!(pt.stats().folds, cont as u64);
    // The fold is break-before-make: exactly one immediate flush of the block.
    let log = emu.tlb.take_log();
    if cont {
        assert_eq!(
            log,
            vec![Flush::Range {
                space: USER,
                start: VA,
                end: VA + K64,
                stride: 4096
            }]
        );
    } else {
        assert!(log.is_empty());
    }
    assert_sane(&emu, &pt);
    for i in 0..16 {
        touch(&emu, &pt, VA + i * 4096, Access::Write).unwrap();
    }
    assert_sane(&emu, &pt);

    // No fold when the frames are not all from the given folio, or with no folio.
    let small = FolioSpan {
        first_pfn: DATA_PFN + 16,
        nr: 8,
    };
    for i in 0..16u64 {
        let f = if i < 8 {
            small
        } else {
            FolioSpan {
                first_pfn: DATA_PFN + 24,
                nr: 8,
            }
        };
        assert!(
            !pt.set_pte(VA + K64 + i * 4096, DATA_PFN + 16 + i, user_rw(), Some(f))
                .unwrap()
        );
    }
    for i in 0..16u64 {
        assert!(
            !pt.set_pte(VA + 2 * K64 + i * 4096, DATA_PFN + 32 + i, user_rw(), None)
                .unwrap()
        );
    }
    // Different attributes in one entry: no fold.
    let folio = FolioSpan {
        first_pfn: DATA_PFN + 48,
        nr: 16,
    };
    for i in 0..16u64 {
        let attrs = if i == 3 {
            Attrs::user(Perms::USER_RO)
        } else {
            user_rw()
        };
        assert!(
            !pt.set_pte(
                VA + 3 * K64 + i * 4096,
                DATA_PFN + 48 + i,
                attrs,
                Some(folio)
            )
            .unwrap()
        );
    }
    assert_eq!(cont_count(&pt, VA + K64, 48), 0);
    assert_sane(&emu, &pt);
    pt.destroy();
}

/// mprotect-style change of one entry unfolds only its block, with the BBM
/// flush of that block and no other flush.
fn wrprotect_one_unfolds_block<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    pt.set_ptes(VA, DATA_PFN, 32, user_rw()).unwrap();
    for i in 0..32 {
        touch(&emu, &pt, VA + i * 4096, Access::Write).unwrap();
    }
    emu.tlb.take_log();
    let mut g = pt.gather();
    pt.wrprotect_ptes(VA + 5 * 4096, 1, &mut g);
    g.finish();
    let log = emu.tlb.take_log();
    if A::CONT_PTES == 16 {
        assert_eq!(
            log,
            vec![Flush::Range {
                space: USER,
                start: VA,
                end: VA + K64,
                stride: 4096
            }]
        );
        assert_eq!(cont_count(&pt, VA, 16), 0);
        assert_eq!(
            cont_count(&pt, VA + K64, 16),
            16,
            "the other block stays folded"
        );
        assert_eq!(pt.stats().unfolds, 1);
    } else {
        assert_eq!(
            log,
            vec![Flush::Range {
                space: USER,
                start: VA + 5 * 4096,
                end: VA + 6 * 4096,
                stride: 4096
            }]
        );
    }
    assert_sane(&emu, &pt);
    assert!(matches!(
        touch(&emu, &pt, VA + 5 * 4096, Access::Write),
        Err(Fault::Permission { .. })
    ));
    assert_eq!(
        touch(&emu, &pt, VA + 5 * 4096, Access::Read),
        Ok((DATA_PFN + 5) << 12)
    );
    for i in (0..32).filter(|&i| i != 5) {
        touch(&emu, &pt, VA + i * 4096, Access::Write).unwrap();
    }
    // Whole-block wrprotect keeps the block folded; one gathered flush.
    let mut g = pt.gather();
    pt.wrprotect_ptes(VA + K64, 16, &mut g);
    assert_eq!(emu.tlb.flush_count(), 0);
    g.finish();
    assert_eq!(emu.tlb.flush_count(), 1);
    assert_eq!(
        cont_count(&pt, VA + K64, 16),
        if A::CONT_PTES == 16 { 16 } else { 0 }
    );
    assert_sane(&emu, &pt);
    assert!(matches!(
        touch(&emu, &pt, VA + K64, Access::Write),
        Err(Fault::Permission { .. })
    ));
    pt.destroy();
}

/// get_and_clear gathers dirty/young from any entry of a contiguous block.
fn get_and_clear_gathers_dirty<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    let clean = Attrs {
        dirty: false,
        ..user_rw()
    };
    pt.set_ptes(VA, DATA_PFN, 32, clean).unwrap();
    // Dirty one entry of each block: by hardware on x86, by the fault path's
    // dirty-marking update on arm64 (a write to a clean entry faults there).
    for blk in 0..2u64 {
        let va = VA + blk * K64 + 9 * 4096;
        match touch(&emu, &pt, va, Access::Write) {
            Ok(_) => assert!(A::HW_DIRTY),
            Err(Fault::Permission { .. }) => {
                assert!(!A::HW_DIRTY);
                let mut g = pt.gather();
                pt.update_pte(va, user_rw(), &mut g).unwrap();
                g.finish();
                assert_eq!(pt.stats().unfolds, 0, "setting dirty does not unfold");
                touch(&emu, &pt, va, Access::Write).unwrap();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_sane(&emu, &pt);
    emu.tlb.take_log();
    // Partial clear of block 0 (entry 2 only) still reports the block's dirty.
    let mut g = pt.gather();
    let r = pt.get_and_clear_ptes(VA + 2 * 4096, 1, &mut g);
    g.finish();
    assert_eq!((r.present, r.young), (1, true));
    assert_eq!(r.dirty, A::CONT_PTES == 16, "x86 tracks dirty per entry");
    assert_eq!(emu.tlb.flush_count(), 1);
    assert!(pt.ptes_none(VA + 2 * 4096, 1) && !pt.ptes_none(VA + 3 * 4096, 1));
    // Whole block 1: no unfold, dirty found, one flush.
    let unfolds = pt.stats().unfolds;
    let mut g = pt.gather();
    let r = pt.get_and_clear_ptes(VA + K64, 16, &mut g);
    g.finish();
    assert_eq!((r.present, r.young, r.dirty), (16, true, true));
    assert_eq!(pt.stats().unfolds, unfolds);
    assert!(pt.ptes_none(VA + K64, 16));
    assert_sane(&emu, &pt);
    assert!(matches!(
        touch(&emu, &pt, VA + K64, Access::Read),
        Err(Fault::NotMapped { level: 0 })
    ));
    pt.destroy();
}

/// clear_young on one entry of a block clears the block, never unfolds.
fn clear_young_keeps_block<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    pt.set_ptes(VA, DATA_PFN, 16, user_rw()).unwrap();
    touch(&emu, &pt, VA, Access::Read).unwrap();
    let mut g = pt.gather();
    assert!(pt.clear_young_ptes(VA + 4 * 4096, 1, &mut g));
    g.finish();
    assert_eq!(pt.stats().unfolds, 0);
    assert_eq!(
        cont_count(&pt, VA, 16),
        if A::CONT_PTES == 16 { 16 } else { 0 }
    );
    let young: Vec<bool> = (0..16)
        .map(|i| {
            pt.read_pte(VA + i * 4096)
                .unwrap()
                .leaf()
                .unwrap()
                .attrs
                .young
        })
        .collect();
    if A::CONT_PTES == 16 {
        assert!(young.iter().all(|y| !y));
        // Without hardware AF the next access faults so it can be recorded.
        assert!(matches!(
            touch(&emu, &pt, VA, Access::Read),
            Err(Fault::AccessFlag { .. })
        ));
    } else {
        assert_eq!(young.iter().filter(|y| !**y).count(), 1);
        touch(&emu, &pt, VA + 4 * 4096, Access::Read).unwrap();
        assert!(
            pt.read_pte(VA + 4 * 4096)
                .unwrap()
                .leaf()
                .unwrap()
                .attrs
                .young,
            "MMU set A again"
        );
    }
    assert_sane(&emu, &pt);
    pt.destroy();
}

/// A PMD leaf with its deposit splits into 512 PTEs with the same rights,
/// young and dirty, without allocating, with translations unchanged.
fn pmd_leaf_and_split<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    let pva = VA + 4 * M2;
    let pfn = DATA_PFN + 512 * 3;
    let dep = mm::paging::PtAlloc::alloc_pt(&emu).unwrap();
    assert_eq!(
        pt.set_pmd_leaf(pva + 4096, pfn, user_rw(), dep),
        Err(PtError::Misaligned)
    );
    let attrs = Attrs {
        perms: Perms::USER_RO,
        ..user_rw()
    };
    pt.set_pmd_leaf(pva, pfn, attrs, dep).unwrap();
    assert_eq!(pt.deposited(), 1);
    assert!(!pt.ptes_none(pva + 8 * 4096, 4));
    let w = pt.lookup(pva + 0x1234);
    assert_eq!((w.level, w.entry.leaf().unwrap().pfn), (PMD_LEVEL, pfn));
    assert_eq!(
        pt.set_ptes(pva, pfn, 1, user_rw()),
        Err(PtError::Huge { level: PMD_LEVEL })
    );
    assert_eq!(
        touch(&emu, &pt, pva + 0x10_0008, Access::Read),
        Ok((pfn << 12) + 0x10_0008)
    );
    assert_eq!(emu.tlb.entries()[0].size, M2);
    // The faulting write drops the cached entry (a permission fault
    // invalidates it), so read again to have a 2M entry cached for the split.
    assert!(matches!(
        touch(&emu, &pt, pva, Access::Write),
        Err(Fault::Permission { .. })
    ));
    touch(&emu, &pt, pva, Access::Read).unwrap();

    let in_use = emu.pt_in_use();
    emu.pool.set_limit(Some(in_use));
    emu.tlb.take_log();
    pt.split_pmd(pva + 0x5000).unwrap();
    emu.pool.set_limit(None);
    assert_eq!(emu.pt_in_use(), in_use, "split allocates nothing");
    assert_eq!(pt.deposited(), 0);
    assert_eq!(
        emu.tlb.take_log(),
        vec![Flush::Range {
            space: USER,
            start: pva,
            end: pva + M2,
            stride: M2
        }]
    );
    let mut n = 0;
    pt.for_each_leaf(&mut |va, l| {
        assert_eq!(l.level, PTE_LEVEL);
        assert_eq!(l.pfn, pfn + (va - pva) / 4096);
        assert_eq!(l.attrs, attrs);
        assert_eq!(l.cont, A::CONT_PTES == 16);
        n += 1;
    });
    assert_eq!(n, 512);
    assert_sane(&emu, &pt);
    for i in (0..512).step_by(37) {
        assert_eq!(
            touch(&emu, &pt, pva + i * 4096 + 16, Access::Read),
            Ok(((pfn + i) << 12) + 16)
        );
    }
    assert_eq!(pt.split_pmd(pva), Err(PtError::NotMapped));
    pt.destroy();
    assert_eq!(emu.pt_in_use(), 0);
}

/// zap_pmd gathers the flush and frees the deposit only after it.
fn zap_pmd_frees_deposit_after_flush<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    let dep = mm::paging::PtAlloc::alloc_pt(&emu).unwrap();
    pt.set_pmd_leaf(VA, DATA_PFN, user_rw(), dep).unwrap();
    touch(&emu, &pt, VA, Access::Write).unwrap();
    emu.tlb.take_log();
    let mut g = pt.gather();
    let old = pt.zap_pmd(VA, &mut g).unwrap().unwrap();
    assert!(old.attrs.young && old.attrs.dirty);
    assert!(emu.pool.is_live(dep), "freed only after the flush");
    assert_eq!(emu.tlb.flush_count(), 0);
    g.finish();
    assert!(!emu.pool.is_live(dep));
    assert_eq!(
        emu.tlb.take_log(),
        vec![Flush::Range {
            space: USER,
            start: VA,
            end: VA + M2,
            stride: M2
        }]
    );
    assert_sane(&emu, &pt);
    assert_eq!(pt.deposited(), 0);
    pt.destroy();
    assert_eq!(emu.pt_in_use(), 0);
}

/// A batch over many pages and blocks issues exactly one flush.
fn one_flush_per_batch<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    pt.set_ptes(VA, DATA_PFN, 64, user_rw()).unwrap();
    for i in 0..64 {
        touch(&emu, &pt, VA + i * 4096, Access::Write).unwrap();
    }
    emu.tlb.take_log();
    let mut g = pt.gather();
    pt.wrprotect_ptes(VA, 16, &mut g);
    pt.wrprotect_ptes(VA + K64, 16, &mut g);
    pt.clear_young_ptes(VA, 32, &mut g);
    g.finish();
    // 32 pages: at the threshold, still a range flush.
    assert_eq!(
        emu.tlb.take_log(),
        vec![Flush::Range {
            space: USER,
            start: VA,
            end: VA + 2 * K64,
            stride: 4096
        }]
    );
    assert_sane(&emu, &pt);
    let mut g = pt.gather();
    let r = pt.get_and_clear_ptes(VA, 64, &mut g);
    g.finish();
    assert_eq!(r.present, 64);
    assert_eq!(
        emu.tlb.take_log(),
        vec![Flush::All { space: USER }],
        "64 pages > threshold"
    );
    assert_sane(&emu, &pt);
    // Setting empty entries needs no flush at all.
    pt.set_ptes(VA, DATA_PFN, 64, user_rw()).unwrap();
    assert_eq!(emu.tlb.flush_count(), 0);
    pt.destroy();
}

/// The TLB model catches a missing flush and a broken break-before-make.
fn model_catches_missing_flush<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    pt.set_ptes(VA, DATA_PFN, 16, user_rw()).unwrap();
    touch(&emu, &pt, VA, Access::Write).unwrap();
    // Write-protect behind the page-table layer's back: no flush.
    let (slot, _) = mm::emu::walk_leaf::<A>(&emu.mem, pt.root(), VA).unwrap();
    let mut l = pt.read_pte(VA).unwrap().leaf().unwrap();
    l.attrs.perms.write = false;
    mm::physmem::phys::PhysMem::store(&emu.mem, slot, A::encode(mm::paging::Entry::Leaf(l), 0));
    let err = emu
        .tlb
        .check_coherent::<A>(&emu.mem, pt.root(), USER)
        .unwrap_err();
    assert!(err.contains("rights reduced"), "{err}");
    if A::CONT_PTES == 16 {
        // Unfold without the flush: the cached 64K entry no longer matches.
        emu.tlb.reset();
        touch(&emu, &pt, VA + 4096, Access::Read).unwrap();
        for i in 0..16u64 {
            let s = slot + 8 * i;
            let raw = mm::physmem::phys::PhysMem::load(&emu.mem, s);
            mm::physmem::phys::PhysMem::store(&emu.mem, s, raw & !arch_aarch64::pte::CONT);
        }
        let err = emu
            .tlb
            .check_coherent::<A>(&emu.mem, pt.root(), USER)
            .unwrap_err();
        assert!(err.contains("entry size"), "{err}");
        // A walk now caches a 4K entry next to the stale 64K one: conflict.
        emu.tlb
            .access::<A>(&emu.mem, pt.root(), USER, VA + 4096, Access::Read, true)
            .unwrap();
        let cached = emu.tlb.entries();
        assert_eq!(cached.len(), 1);
        let err = mm::emu::check_cont_blocks(&pt);
        assert!(err.is_ok(), "all-or-none still holds");
        mm::physmem::phys::PhysMem::store(
            &emu.mem,
            slot,
            mm::physmem::phys::PhysMem::load(&emu.mem, slot) | arch_aarch64::pte::CONT,
        );
        assert!(
            mm::emu::check_cont_blocks(&pt)
                .unwrap_err()
                .contains("only 1 of 16")
        );
    }
    emu.tlb.reset();
    pt.destroy();
}

/// unmap_range frees emptied tables through the gather; destroy frees all.
fn tables_freed<A: PagingArch>() {
    let emu = emu();
    assert_eq!(emu.pt_in_use(), 0);
    let mut pt = user_pt::<A>(&emu);
    pt.set_ptes(VA, DATA_PFN, 600, user_rw()).unwrap(); // spans two PTE tables
    let dep = mm::paging::PtAlloc::alloc_pt(&emu).unwrap();
    pt.set_pmd_leaf(VA + 4 * M2, DATA_PFN + 1024, user_rw(), dep)
        .unwrap();
    let built = emu.pt_in_use();
    assert_eq!(built, pt.table_pages() + 1);
    let mut g = pt.gather();
    pt.unmap_range(VA, 4 * M2, &mut g).unwrap();
    assert_eq!(emu.pt_in_use(), built, "nothing freed before the flush");
    g.finish();
    assert_eq!(emu.pt_in_use(), built - 2, "both PTE tables freed");
    assert_eq!(emu.tlb.flush_count(), 1);
    let mut g = pt.gather();
    pt.unmap_range(VA + 4 * M2, M2, &mut g).unwrap();
    g.finish();
    assert_eq!(pt.deposited(), 0);
    // Now the PMD table, PUD table and their parent chain are empty too.
    pt.destroy();
    assert_eq!(emu.pt_in_use(), 0);

    let mut pt = user_pt::<A>(&emu);
    for k in 0..8u64 {
        pt.set_ptes(VA + k * (1 << 30), DATA_PFN, 16, user_rw())
            .unwrap();
        let dep = mm::paging::PtAlloc::alloc_pt(&emu).unwrap();
        pt.set_pmd_leaf(VA + k * (1 << 30) + M2, DATA_PFN + 512, user_rw(), dep)
            .unwrap();
    }
    pt.split_pmd(VA + M2).unwrap();
    pt.destroy();
    assert_eq!(emu.pt_in_use(), 0, "destroy frees every table and deposit");
}

/// Out of memory: set_ptes fails without writing an entry.
fn no_mem_is_clean<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    emu.pool.set_limit(Some(2));
    assert_eq!(
        pt.set_ptes(VA, DATA_PFN, 16, user_rw()),
        Err(PtError::NoMem)
    );
    emu.pool.set_limit(None);
    assert!(pt.ptes_none(VA, 16));
    let mut n = 0;
    pt.for_each_leaf(&mut |_, _| n += 1);
    assert_eq!(n, 0);
    pt.destroy();
    assert_eq!(emu.pt_in_use(), 0);
}

/// update_pte: COW-reuse style upgrade of one entry needs no flush outside
/// a block; inside a block a rights change unfolds it.
fn update_single_entry<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    let ro = Attrs::user(Perms::USER_RO);
    pt.set_ptes(VA, DATA_PFN, 16, ro).unwrap();
    touch(&emu, &pt, VA + 3 * 4096, Access::Read).unwrap();
    emu.tlb.take_log();
    let mut g = pt.gather();
    let old = pt.update_pte(VA + 3 * 4096, user_rw(), &mut g).unwrap();
    g.finish();
    assert_eq!(old.attrs.perms, Perms::USER_RO);
    let flushes = emu.tlb.take_log();
    if A::CONT_PTES == 16 {
        assert_eq!(flushes.len(), 1, "BBM unfold");
        assert_eq!(cont_count(&pt, VA, 16), 0);
    } else {
        assert!(flushes.is_empty(), "upgrade needs no flush");
    }
    // The stale read-only entry (x86) only causes a spurious fault, retried.
    assert_eq!(
        touch(&emu, &pt, VA + 3 * 4096, Access::Write),
        Ok((DATA_PFN + 3) << 12)
    );
    assert!(matches!(
        touch(&emu, &pt, VA + 4 * 4096, Access::Write),
        Err(Fault::Permission { .. })
    ));
    assert_sane(&emu, &pt);
    assert_eq!(
        pt.update_pte(VA + K64, ro, &mut pt.gather()),
        Err(PtError::NotMapped)
    );
    pt.destroy();
}

/// The read-only walker the arch crates use on the live tables (`probe`,
/// over a raw root and a load function) stops where `lookup` does, hands
/// back the raw word of that entry and shows each table entry passed
/// through, root first.
fn probe_matches_lookup<A: PagingArch>() {
    let emu = emu();
    let (pt, kva, len) = mixed_kernel_pt::<A>(&emu);
    let load = |pa| emu.mem.load(pa);
    for (va, tables) in [
        (kva + 0x1234_5678, vec![ROOT_LEVEL]),
        (kva + (1 << 30) + 0x1234, vec![ROOT_LEVEL, 2]),
        (kva + (1 << 30) + M2 + 0x1008, vec![ROOT_LEVEL, 2, 1]),
        // Holes: past the last 4K leaf, in an empty root slot, in user space.
        (kva + len, vec![ROOT_LEVEL, 2, 1]),
        (kva + (1 << 39), vec![]),
        (VA, vec![]),
    ] {
        let w = pt.lookup(va);
        let mut seen = Vec::new();
        let p = probe::<A>(pt.root(), va, load, |level, raw| {
            assert!(matches!(A::decode(raw, level), Entry::Table { .. }));
            seen.push(level);
        });
        assert_eq!((p.level, p.entry), (w.level, w.entry), "va {va:#x}");
        assert_eq!(A::decode(p.raw, p.level), p.entry);
        assert_eq!(seen, tables, "tables passed for {va:#x}");
        if let Entry::Leaf(l) = p.entry {
            let size = mm::paging::level_size(l.level);
            assert_eq!(
                (l.pfn << 12) + (va & (size - 1)),
                0x1_0000_0000 + (va - kva)
            );
        } else {
            assert_eq!(p.entry, Entry::Absent, "va {va:#x}");
        }
    }
}

/// A user root linked to the kernel half translates kernel addresses
/// through the kernel's own tables (so a mapping the kernel adds later
/// under a linked slot is seen too), while enumeration and teardown of the
/// user table touch only its lower half.
fn link_kernel_half_shares_tables<A: PagingArch>() {
    let emu = emu();
    let mut kpt = PageTable::<A>::new(emu.env(), Space::Kernel).unwrap();
    let kva = 0xffff_8000_0000_0000u64;
    kpt.map_range(kva, 0x1_0000_0000, M2, Attrs::kernel(Perms::KERNEL_RW))
        .unwrap();
    let kernel_tables = emu.pt_in_use();
    let mut upt = user_pt::<A>(&emu);
    assert_eq!(upt.link_kernel_half(kpt.root()), 1);
    upt.set_ptes(VA, DATA_PFN, 1, user_rw()).unwrap();
    assert_eq!(
        touch::<A>(&emu, &upt, VA, Access::Write),
        Ok(DATA_PFN << 12)
    );
    let kernel_read = |va| {
        emu.tlb
            .access::<A>(&emu.mem, upt.root(), USER, va, Access::Read, false)
    };
    assert_eq!(kernel_read(kva + 0x1234), Ok(0x1_0000_1234));
    // A later kernel mapping in the same root slot: no relink needed.
    kpt.map_range(
        kva + M2,
        0x2_0000_0000,
        0x1000,
        Attrs::kernel(Perms::KERNEL_RW),
    )
    .unwrap();
    assert_eq!(kernel_read(kva + M2 + 8), Ok(0x2_0000_0008));
    // Kernel pages stay out of reach of user mode.
    let from_user = emu
        .tlb
        .access::<A>(&emu.mem, upt.root(), USER, kva, Access::Read, true);
    assert!(matches!(from_user, Err(Fault::Permission { .. })));
    let mut leaves = Vec::new();
    upt.for_each_leaf(&mut |va, _| leaves.push(va));
    assert_eq!(leaves, vec![VA]);
    let kernel_tables = kernel_tables + 1; // the PTE table under kva + M2
    upt.destroy();
    assert_eq!(
        emu.pt_in_use(),
        kernel_tables,
        "the user teardown freed kernel tables"
    );
    assert_eq!(
        kernel_read_after(&emu, &kpt, kva + 0x1234),
        Ok(0x1_0000_1234)
    );
}

/// Kernel run-time mappings (thread stacks with guard pages) go through
/// the engine like user ones: `map_range_max` keeps to the leaf size it is
/// given, unmapping a stack frees the tables it covered and emptied but never the table
/// right under the root (a user root linked before the stack was mapped
/// still reaches the next one through it), and the flush is a kernel one.
fn kernel_stack_map_unmap<A: PagingArch>() {
    let emu = emu();
    let mut kpt = PageTable::<A>::new(emu.env(), Space::Kernel).unwrap();
    let base = 0xffff_fe80_0000_0000u64;
    // The region's root entry exists before any user root links the half.
    kpt.ensure_table(base, 2).unwrap();
    let mut upt = user_pt::<A>(&emu);
    assert_eq!(upt.link_kernel_half(kpt.root()), 1);
    let tables = emu.pt_in_use();
    // A 2 MiB-aligned 2 MiB range with 4 KiB leaves only: 512 leaves.
    let stack = base + 0x20_0000;
    assert_eq!(
        kpt.map_range_max(stack, 0x4000_0000, M2, Attrs::kernel(Perms::KERNEL_RW), 0),
        Ok(0x1000)
    );
    let mut n = 0;
    kpt.for_each_leaf(&mut |_, l| {
        assert_eq!(l.level, 0);
        n += 1;
    });
    assert_eq!(n, 512);
    assert_eq!(
        emu.tlb.access::<A>(
            &emu.mem,
            upt.root(),
            Space::Kernel,
            stack + 0x1008,
            Access::Write,
            false
        ),
        Ok(0x4000_1008)
    );
    emu.tlb.take_log();
    let mut g = kpt.gather();
    kpt.unmap_range(stack, M2, &mut g).unwrap();
    g.finish();
    let log = emu.tlb.take_log();
    assert!(!log.is_empty(), "no flush after a kernel unmap");
    assert!(
        log.iter().all(|f| matches!(
            f,
            Flush::All {
                space: Space::Kernel
            } | Flush::Range {
                space: Space::Kernel,
                ..
            }
        )),
        "kernel unmap flushed as a kernel space: {log:?}"
    );
    // The PTE table was emptied and freed; the PMD table stays, as the
    // range did not cover all of it (tables are freed only under a range
    // that spans them).
    assert_eq!(emu.pt_in_use(), tables + 1, "the PTE table was freed");
    assert!(matches!(kpt.lookup(base).entry, Entry::Absent));
    // The next stack is seen through the root entry the user root copied.
    kpt.map_range(
        base + 0x1000,
        0x5000_0000,
        0x1000,
        Attrs::kernel(Perms::KERNEL_RW),
    )
    .unwrap();
    assert_eq!(
        emu.tlb.access::<A>(
            &emu.mem,
            upt.root(),
            Space::Kernel,
            base + 0x1010,
            Access::Read,
            false
        ),
        Ok(0x5000_0010)
    );
    // Even unmapping the whole root slot keeps its table (fails without
    // the rule: the user root would then point at a freed page).
    let mut g = kpt.gather();
    kpt.unmap_range(base, 1 << 39, &mut g).unwrap();
    g.finish();
    assert!(matches!(kpt.lookup(base).entry, Entry::Absent));
    assert_eq!(
        kpt.lookup(base).level,
        2,
        "the root entry of the region went"
    );
    upt.destroy();
    kpt.destroy();
    assert_eq!(emu.pt_in_use(), 0);
}

/// Flushes of a user space go to its CPU set as it is when the flush is
/// issued (a CPU that loaded the root while the batch was gathered is
/// reached too), kernel flushes to every CPU.
fn gather_targets_the_space_cpus<A: PagingArch>() {
    let set = AtomicCpuSet::new(CpuSet::EMPTY);
    set.insert(1);
    set.insert(3);
    let emu = emu();
    let mut pt = user_pt::<A>(&emu).with_cpus(&set);
    pt.set_ptes(VA, DATA_PFN, 4, user_rw()).unwrap();
    emu.tlb.take_log();
    let mut g = pt.gather();
    pt.get_and_clear_ptes(VA, 2, &mut g);
    set.insert(5);
    g.finish();
    assert_eq!(emu.tlb.targets(), vec![CpuSet::from_bits(0b10_1010)]);
    let mut g = pt.gather();
    pt.get_and_clear_ptes(VA + 0x2000, 2, &mut g);
    g.finish();
    assert_eq!(emu.tlb.targets().len(), 2);
    pt.destroy();
    let mut kpt = PageTable::<A>::new(emu.env(), Space::Kernel).unwrap();
    let kva = 0xffff_8000_0000_0000u64;
    kpt.map_range(kva, 0x1_0000_0000, 0x1000, Attrs::kernel(Perms::KERNEL_RW))
        .unwrap();
    emu.tlb.take_log();
    let mut g = kpt.gather();
    kpt.unmap_range(kva, 0x1000, &mut g).unwrap();
    g.finish();
    assert_eq!(emu.tlb.targets(), vec![CpuSet::ALL]);
    kpt.destroy();
}

fn kernel_read_after<A: PagingArch>(
    emu: &mm::emu::Emu,
    kpt: &PageTable<'_, A>,
    va: u64,
) -> Result<u64, Fault> {
    emu.tlb
        .access::<A>(&emu.mem, kpt.root(), Space::Kernel, va, Access::Read, false)
}

/// In-place promotion (reservations): a PTE table mapping 512 aligned
/// consecutive frames with equal rights becomes one PMD leaf on the same
/// frames with the entries' young/dirty; one entry with other rights
/// leaves the table as it was, reachable again.
fn promote_in_place<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    let pfn = DATA_PFN;
    pt.set_ptes(VA, pfn, 511, user_rw()).unwrap();
    let ro = Attrs::user(Perms::USER_RO);
    pt.set_ptes(VA + 511 * 4096, pfn + 511, 1, ro).unwrap();
    touch(&emu, &pt, VA + 5 * 4096, Access::Write).unwrap();
    assert_eq!(pt.promote_to_pmd_leaf(VA, pfn), Ok(false));
    assert_eq!(pt.lookup(VA + 511 * 4096).level, PTE_LEVEL);
    assert_eq!(
        touch(&emu, &pt, VA + 7 * 4096, Access::Read),
        Ok((pfn + 7) * 4096)
    );
    assert_sane(&emu, &pt);
    let mut g = pt.gather();
    pt.get_and_clear_ptes(VA + 511 * 4096, 1, &mut g);
    g.finish();
    pt.set_ptes(VA + 511 * 4096, pfn + 511, 1, user_rw())
        .unwrap();
    assert_eq!(pt.promote_to_pmd_leaf(VA, pfn), Ok(true));
    let w = pt.lookup(VA + 300 * 4096);
    assert_eq!(w.level, PMD_LEVEL);
    let l = w.entry.leaf().unwrap();
    assert_eq!(l.pfn, pfn);
    assert!(l.attrs.perms.write);
    assert!(l.attrs.dirty, "the write to page 5 carried into the PMD");
    assert_eq!(
        touch(&emu, &pt, VA + 300 * 4096 + 8, Access::Read),
        Ok((pfn + 300) * 4096 + 8)
    );
    assert_eq!(pt.deposited(), 1);
    assert_sane(&emu, &pt);
}

both!(
    gather_targets_the_space_cpus,
    link_kernel_half_shares_tables,
    kernel_stack_map_unmap,
    probe_matches_lookup,
    map_and_translate,
    set_ptes_64k_folio,
    fold_on_sixteenth,
    wrprotect_one_unfolds_block,
    get_and_clear_gathers_dirty,
    clear_young_keeps_block,
    pmd_leaf_and_split,
    zap_pmd_frees_deposit_after_flush,
    one_flush_per_batch,
    model_catches_missing_flush,
    tables_freed,
    no_mem_is_clean,
    update_single_entry,
    promote_in_place,
);
