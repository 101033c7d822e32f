//! munmap / mprotect / madvise on populated address spaces, over both entry
//! formats: partial operations on contiguous blocks and PMD mappings,
//! deferred split, errno values.

mod mmtest;

use mm::abi::errno::Errno;
use mm::aspace::{Access, Fault};
use mm::paging::{PMD_LEVEL, PTE_LEVEL, PagingArch};
use mm::thp::{GlobalMode, MthpStat, OrderMode, VmEvent};
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;

fn cont_entries<'a, A: PagingArch>(
    env: &Env<'a, A>,
    mm: &mm::aspace::Mm<'a, A>,
    va: u64,
    n: u64,
) -> u64 {
    (0..n)
        .filter(|i| env.leaf(mm, va + i * K4).is_some_and(|l| l.cont))
        .count() as u64
}

fn cp_of<A: PagingArch>() -> u64 {
    if has_cont::<A>() { 16 } else { 0 }
}

/// Unmapping half of a 64K folio leaves the other half readable, unfolds
/// the block (arm64) and queues the folio for deferred split; unmapping the
/// rest frees it and takes it off the queue.
fn unmap_half_of_64k_folio<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm.mmap(VA, 2 * K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 2 * K64, 5);
        let f = env.folio_at(&mm, va).unwrap();
        mm.munmap(va, 8 * K4).unwrap();
        env.check_pages(&mm, va + 8 * K4, 8 * K4 + K64, 5);
        assert_eq!(cont_entries(env, &mm, va, 16), 0);
        if has_cont::<A>() {
            assert_eq!(
                cont_entries(env, &mm, va + K64, 16),
                16,
                "neighbour block stays folded"
            );
        }
        assert_eq!(env.event(VmEvent::ContpteUnfold), cp_of::<A>() / 16);
        assert_eq!((f.refcount(), f.large_mapcount()), (8, 8));
        assert_eq!(env.ctx.deferred_split_len(), 1);
        assert!(env.ctx.deferred_split_queued(f));
        assert_eq!(env.mthp(4, MthpStat::SplitDeferred), 1);
        assert_eq!(env.mthp(4, MthpStat::NrAnonPartiallyMapped), 1);
        assert_eq!(env.touch(&mm, va, Access::Read), Err(Fault::Segv));
        let r = mm.thpmaps();
        assert_eq!(r.total().anon_by_order[4], K64 + 8 * K4, "{r}");
        env.check(&[&mm]);
        mm.munmap(va + 8 * K4, 8 * K4).unwrap();
        assert_eq!(env.ctx.deferred_split_len(), 0);
        assert_eq!(env.mthp(4, MthpStat::NrAnonPartiallyMapped), 0);
        assert_eq!(env.mthp(4, MthpStat::NrAnon), 1);
        assert_eq!(env.mthp(4, MthpStat::SplitDeferred), 1);
        env.check_pages(&mm, va + K64, K64, 5);
        env.check(&[&mm]);
    });
}

/// mprotect of one page inside a contiguous block unfolds only that block
/// (the neighbour stays folded); a write there then segfaults; restoring
/// write lets the (still exclusive) page be written without a copy.
fn mprotect_one_page_in_block<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm.mmap(VA, 2 * K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 2 * K64, 6);
        let cp = if has_cont::<A>() { 16 } else { 0 };
        assert_eq!(cont_entries(env, &mm, va, 32), 2 * cp);
        mm.mprotect(va + 3 * K4, K4, PROT_READ).unwrap();
        assert_eq!(mm.vmas().len(), 3);
        assert_eq!(cont_entries(env, &mm, va, 16), 0);
        assert_eq!(cont_entries(env, &mm, va + K64, 16), cp);
        assert_eq!(env.event(VmEvent::ContpteUnfold), cp / 16);
        assert_eq!(env.touch(&mm, va + 3 * K4, Access::Write), Err(Fault::Segv));
        env.check_pages(&mm, va, 2 * K64, 6);
        env.write_u64(&mm, va + 4 * K4, 1);
        env.check(&[&mm]);
        let r = mm.thpmaps();
        if has_cont::<A>() {
            // 16 single PTEs + one block.
            assert_eq!(r.total().entries, 17, "{r}");
        }
        mm.mprotect(va + 3 * K4, K4, RW).unwrap();
        assert_eq!(mm.vmas().len(), 1);
        env.write_u64(&mm, va + 3 * K4, 2);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 0);
        assert_eq!(env.read_u64(&mm, va + 3 * K4), 2);
        // Making everything read-only keeps whole blocks folded.
        mm.mprotect(va, 2 * K64, PROT_READ).unwrap();
        assert_eq!(cont_entries(env, &mm, va + K64, 16), cp);
        assert_eq!(env.touch(&mm, va + K64, Access::Write), Err(Fault::Segv));
        env.check(&[&mm]);
        // PROT_NONE keeps the frames; back to RW restores the data.
        mm.mprotect(va, 2 * K64, PROT_NONE).unwrap();
        assert_eq!(env.touch(&mm, va + K64, Access::Read), Err(Fault::Segv));
        env.check(&[&mm]);
        mm.mprotect(va, 2 * K64, RW).unwrap();
        env.check_pages(&mm, va + K64, K64, 6);
        env.write_u64(&mm, va + K64, 3);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 0);
        env.check(&[&mm]);
    });
}

/// Partial mprotect and munmap of a PMD-mapped range split the PMD; the
/// data is preserved.
fn partial_ops_split_pmd<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        let va = mm.mmap(0, 2 * M2, RW, ANON).unwrap();
        env.fill_pages(&mm, va, 2 * M2, 8);
        assert_eq!(mm.thpmaps().total().pmd_bytes, 2 * M2);
        mm.mprotect(va + MIB + K4, K4, PROT_READ).unwrap();
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 1);
        assert_eq!(env.leaf(&mm, va).unwrap().level, PTE_LEVEL);
        assert_eq!(env.leaf(&mm, va + M2).unwrap().level, PMD_LEVEL);
        if has_cont::<A>() {
            // The split PMD is contpte-mapped except the changed block.
            assert_eq!(mm.thpmaps().total().cont_bytes, M2 - K64);
        }
        assert_eq!(
            env.touch(&mm, va + MIB + K4, Access::Write),
            Err(Fault::Segv)
        );
        env.check_pages(&mm, va, 2 * M2, 8);
        env.check(&[&mm]);
        mm.munmap(va + M2 + 12 * K4, K4).unwrap();
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 2);
        let f = env.folio_at(&mm, va + M2).unwrap();
        assert_eq!(f.large_mapcount(), 511);
        assert!(env.ctx.deferred_split_queued(f));
        env.check_pages(&mm, va + M2, 12 * K4, 8);
        env.check_pages(&mm, va + M2 + 13 * K4, M2 - 13 * K4, 8);
        env.check(&[&mm]);
        // Unmapping a whole, aligned PMD range needs no split.
        let v2 = mm.mmap(0, M2, RW, ANON).unwrap();
        env.write_u64(&mm, v2, 1);
        mm.munmap(v2, M2).unwrap();
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 2);
        env.check(&[&mm]);
    });
}

/// MADV_DONTNEED zaps; the range re-faults zero-filled.
fn madv_dontneed<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.knobs(GlobalMode::Always, &[(4, OrderMode::Always)]);
        let mm = env.mm();
        let va = mm.mmap(0, 2 * M2, RW, ANON).unwrap();
        env.fill_pages(&mm, va, M2, 1);
        env.no_thp();
        env.fill_pages(&mm, va + M2, K64, 1);
        mm.madvise(va + 4 * K4, 8 * K4, MADV_DONTNEED).unwrap();
        mm.madvise(va + M2, K64, MADV_DONTNEED).unwrap();
        assert_eq!(mm.vmas().len(), 1);
        env.check_zero(&mm, va + 4 * K4, 8 * K4);
        env.check_zero(&mm, va + M2, K64);
        env.check_pages(&mm, va, 4 * K4, 1);
        env.check_pages(&mm, va + 12 * K4, M2 - 12 * K4, 1);
        assert_eq!(mm.anon_rss(), 512 - 8);
        env.check(&[&mm]);
        assert_eq!(mm.madvise(va + 1, K4, MADV_DONTNEED), Err(Errno::EINVAL));
    });
}

/// MADV_NOHUGEPAGE gives order-0 faults even with "always"; MADV_HUGEPAGE
/// enables "madvise" sizes.
fn madv_hugepage_and_nohugepage<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm.mmap(VA, 4 * K64, RW, ANON | MAP_FIXED).unwrap();
        mm.madvise(va, 2 * K64, MADV_NOHUGEPAGE).unwrap();
        assert_eq!(mm.vmas().len(), 2);
        env.fill_pages(&mm, va, 4 * K64, 1);
        assert_eq!(env.mthp(4, MthpStat::AnonFaultAlloc), 2);
        assert_eq!(env.folio_at(&mm, va).unwrap().order(), 0);
        assert_eq!(env.folio_at(&mm, va + 2 * K64).unwrap().order(), 4);
        // madvise mode: only MADV_HUGEPAGE'd VMAs get large folios.
        env.knobs(GlobalMode::Never, &[(4, OrderMode::Madvise)]);
        let v2 = mm
            .mmap(0x7100_0000_0000, 4 * K64, RW, ANON | MAP_FIXED)
            .unwrap();
        env.write_u64(&mm, v2, 1);
        assert_eq!(env.folio_at(&mm, v2).unwrap().order(), 0);
        mm.madvise(v2, 4 * K64, MADV_HUGEPAGE).unwrap();
        assert!(mm.khugepaged_registered());
        env.write_u64(&mm, v2 + K64, 1);
        assert_eq!(env.folio_at(&mm, v2 + K64).unwrap().order(), 4);
        // Inherit + global madvise behaves the same.
        env.knobs(GlobalMode::Madvise, &[(4, OrderMode::Inherit)]);
        env.write_u64(&mm, v2 + 2 * K64, 1);
        assert_eq!(env.folio_at(&mm, v2 + 2 * K64).unwrap().order(), 4);
        env.check(&[&mm]);
    });
}

/// madvise on part of a PMD mapping splits it at the new VMA boundary.
fn madvise_splits_pmd_at_vma_boundary<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        let va = mm.mmap(0, M2, RW, ANON).unwrap();
        env.fill_pages(&mm, va, M2, 2);
        mm.madvise(va, MIB, MADV_NOHUGEPAGE).unwrap();
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 1);
        env.check_pages(&mm, va, M2, 2);
        env.check(&[&mm]);
        // Already NOHUGEPAGE: no VMA change, nothing split.
        mm.madvise(va, MIB, MADV_NOHUGEPAGE).unwrap();
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 1);
    });
}

/// MAP_FIXED over a populated mapping zaps it; the new mapping reads zero.
fn map_fixed_replaces<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm.mmap(VA, 4 * K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 4 * K64, 1);
        mm.mmap(va + 8 * K4, K64, PROT_READ, ANON | MAP_FIXED)
            .unwrap();
        assert_eq!(mm.vmas().len(), 3);
        env.check_zero(&mm, va + 8 * K4, K64);
        env.check_pages(&mm, va, 8 * K4, 1);
        env.check_pages(&mm, va + 24 * K4, 40 * K4, 1);
        assert_eq!(env.ctx.deferred_split_len(), 2);
        assert_eq!(
            mm.mmap(va, K4, RW, ANON | MAP_FIXED_NOREPLACE),
            Err(Errno::EEXIST)
        );
        env.check(&[&mm]);
    });
}

/// Bad arguments return Linux's errno through the Mm API (the full table is
/// in mm::vma's tests).
fn bad_arguments<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        let mm = env.mm();
        assert_eq!(mm.mmap(0, 0, RW, ANON), Err(Errno::EINVAL));
        assert_eq!(mm.mmap(0, K4, RW, MAP_PRIVATE), Err(Errno::EBADF));
        assert_eq!(mm.mmap(0, u64::MAX, RW, ANON), Err(Errno::ENOMEM));
        assert_eq!(
            mm.mmap(VA + 1, K4, RW, ANON | MAP_FIXED),
            Err(Errno::EINVAL)
        );
        assert_eq!(mm.mmap(0x1000, K4, RW, ANON | MAP_FIXED), Err(Errno::EPERM));
        assert_eq!(
            mm.mmap(0, K4, RW, MAP_DROPPABLE | MAP_ANONYMOUS),
            Err(Errno::EINVAL)
        );
        // Shared anonymous memory is a shmem object (tests/shmem.rs).
        let shared = mm.mmap(0, K4, RW, MAP_SHARED | MAP_ANONYMOUS).unwrap();
        mm.munmap(shared, K4).unwrap();
        assert_eq!(mm.munmap(VA + 1, K4), Err(Errno::EINVAL));
        assert_eq!(mm.munmap(VA, 0), Err(Errno::EINVAL));
        assert_eq!(mm.munmap(0xffff_ffff_ffff_f000, K4), Err(Errno::EINVAL));
        assert_eq!(mm.mprotect(VA, K4, PROT_READ), Err(Errno::ENOMEM));
        let va = mm.mmap(VA, 2 * K4, PROT_READ, ANON | MAP_FIXED).unwrap();
        assert_eq!(
            mm.mprotect(va, K4, Prot::from_raw(0x80)),
            Err(Errno::EINVAL)
        );
        assert_eq!(mm.mprotect(va + 1, K4, PROT_READ), Err(Errno::EINVAL));
        assert_eq!(mm.mprotect(va, 3 * K4, PROT_READ), Err(Errno::ENOMEM));
        assert_eq!(Advice::from_raw(9999), Err(Errno::EINVAL));
        assert_eq!(mm.madvise(va, 4 * K4, MADV_DONTNEED), Err(Errno::ENOMEM));
        assert_eq!(mm.madvise(va, K4, MADV_COLLAPSE), Err(Errno::EINVAL));
        assert_eq!(mm.munmap(va, K4), Ok(()));
        env.check(&[&mm]);
    });
}

/// Tearing down an address space with every kind of mapping returns all
/// frames and tables (checked by the harness), and the report prints.
fn teardown_and_report<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.knobs(
            GlobalMode::Always,
            &[(4, OrderMode::Always), (2, OrderMode::Always)],
        );
        let mm = env.mm();
        let a = mm.mmap(0, 2 * M2, RW, ANON).unwrap();
        env.fill_pages(&mm, a, M2, 1);
        env.read_u64(&mm, a + M2);
        let b = mm.mmap(VA, 20 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, b, 20 * K4, 2);
        env.read_u64(&mm, b + 3 * K4);
        let r = mm.thpmaps();
        let s = format!("{r}");
        assert!(s.contains("2048K:2048K"), "{s}");
        assert!(s.contains("64K:64K"), "{s}");
        assert!(s.contains("16K:16K"), "{s}");
        let child = mm.fork().unwrap();
        env.check(&[&mm, &child]);
        assert!(env.ctx.pt_pages_in_use() > 0);
    });
}

/// Address spaces get distinct ASIDs and mm ids, recycled on exit; EAGAIN
/// when the ASIDs run out.  `Mm` can be shared between CPUs.
fn ids_recycled<A: PagingArch>() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<mm::aspace::Mm<'static, A>>();
    send_sync::<mm::aspace::MmCtx<'static>>();
    run_with::<A>(16 * MIB, 2, |env| {
        let a = env.mm();
        let b = env.mm();
        assert_ne!(a.asid(), b.asid());
        assert_ne!(a.id(), b.id());
        assert!(matches!(
            mm::aspace::Mm::<A>::new(env.ctx),
            Err(Errno::EAGAIN)
        ));
        assert_eq!(a.fork().err(), Some(Errno::EAGAIN));
        let asid = a.asid();
        drop(a);
        let c = env.mm();
        assert_eq!(c.asid(), asid);
    });
}

both_formats!(
    unmap_half_of_64k_folio,
    mprotect_one_page_in_block,
    partial_ops_split_pmd,
    madv_dontneed,
    madv_hugepage_and_nohugepage,
    madvise_splits_pmd_at_vma_boundary,
    map_fixed_replaces,
    bad_arguments,
    teardown_and_report,
    ids_recycled,
);
