//! Shared anonymous memory (shmem objects) over both entry formats: fork
//! shares the folios, large folios by policy, PMD mappings, SIGBUS past
//! the object, mremap, and every frame back at the end.

mod mmtest;

use mm::aspace::{Access, Fault};
use mm::paging::{PMD_LEVEL, PTE_LEVEL, PagingArch};
use mm::shmem::policy::{ShmemHuge, ShmemOrderMode};
use mm::thp::{MthpStat, VmEvent};
use mmtest::*;

const SHARED: MapFlags = MAP_SHARED.union(MAP_ANONYMOUS);
const VA: u64 = 0x7000_0000_0000;

/// Parent and child see each other's writes through 64K folios; nothing
/// is copied, and each side maps whole folios (contpte on arm64).
fn fork_shares_64k_folios<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.thp
            .config
            .shmem
            .set_order_mode(4, ShmemOrderMode::Always)
            .unwrap();
        let parent = env.mm();
        let va = parent.mmap(VA, MIB, RW, SHARED | MAP_FIXED).unwrap();
        env.write_u64(&parent, va + 5 * K4, 0x1234);
        let f = env.folio_at(&parent, va).unwrap();
        assert_eq!(f.order(), 4);
        assert!(f.is_shmem() && !f.is_anon());
        // One fault mapped the whole folio.
        assert_eq!(env.leaf(&parent, va + 15 * K4).unwrap().pfn, f.pfn() + 15);
        assert_eq!(env.mthp(4, MthpStat::ShmemAlloc), 1);
        assert_eq!(parent.shmem_rss(), 16);
        assert_eq!(parent.anon_rss(), 0);
        if has_cont::<A>() {
            assert_eq!(parent.thpmaps().total().cont_bytes, K64);
        }
        let child = parent.fork().unwrap();
        env.check(&[&parent, &child]);
        assert_eq!(env.read_u64(&child, va + 5 * K4), 0x1234);
        assert_eq!(env.folio_at(&child, va).unwrap().pfn(), f.pfn());
        env.write_u64(&child, va + 6 * K4, 0x5678);
        env.write_u64(&child, va + 200 * K4, 0x9abc);
        assert_eq!(env.read_u64(&parent, va + 6 * K4), 0x5678);
        assert_eq!(env.read_u64(&parent, va + 200 * K4), 0x9abc);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 0);
        assert_eq!(
            env.thp
                .shmem
                .pages
                .load(core::sync::atomic::Ordering::Relaxed),
            32
        );
        env.check(&[&parent, &child]);
        // The child's exit leaves the parent's data; munmap in the parent
        // then frees everything (checked by `run`).
        drop(child);
        env.check(&[&parent]);
        assert_eq!(env.read_u64(&parent, va + 200 * K4), 0x9abc);
        parent.munmap(va, MIB).unwrap();
        assert_eq!(
            env.thp
                .shmem
                .pages
                .load(core::sync::atomic::Ordering::Relaxed),
            0
        );
        env.check(&[&parent]);
    });
}

/// PMD-size shmem folios are mapped by PMD leaves in both processes.
fn pmd_mapped_in_both<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        let sh = &env.thp.config.shmem;
        // Default: never; `always` on the top level enables PMD (inherit).
        sh.set_huge(ShmemHuge::Always).unwrap();
        let parent = env.mm();
        let va = parent.mmap(VA, 4 * MIB, RW, SHARED | MAP_FIXED).unwrap();
        env.write_u64(&parent, va + 8, 77);
        let l = parent.with_page_table(|pt| pt.lookup(va));
        assert_eq!(l.level, PMD_LEVEL);
        assert_eq!(env.event(VmEvent::ThpFileAlloc), 1);
        assert_eq!(env.event(VmEvent::ThpFileMapped), 1);
        let g = &env.thp.shmem;
        assert_eq!(
            g.pmd_mapped.load(core::sync::atomic::Ordering::Relaxed),
            512
        );
        assert_eq!(g.pmd_pages.load(core::sync::atomic::Ordering::Relaxed), 512);
        let child = parent.fork().unwrap();
        assert_eq!(env.read_u64(&child, va + 8), 77);
        assert_eq!(child.with_page_table(|pt| pt.lookup(va)).level, PMD_LEVEL);
        assert_eq!(env.event(VmEvent::ThpFileMapped), 2);
        env.check(&[&parent, &child]);
        // Unmapping half of the PMD in the child splits its mapping only.
        child.munmap(va, MIB).unwrap();
        assert_eq!(
            child.with_page_table(|pt| pt.lookup(va + MIB)).level,
            PTE_LEVEL
        );
        assert_eq!(env.read_u64(&child, va + MIB + 16), 0);
        env.write_u64(&parent, va + MIB + 16, 5);
        assert_eq!(env.read_u64(&child, va + MIB + 16), 5);
        env.check(&[&parent, &child]);
        drop(child);
        assert_eq!(
            g.pmd_mapped.load(core::sync::atomic::Ordering::Relaxed),
            512
        );
        drop(parent);
        assert_eq!(g.pmd_mapped.load(core::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(g.pages.load(core::sync::atomic::Ordering::Relaxed), 0);
    });
}

/// Past the object's size: SIGBUS (an in-place mremap grows the VMA, not
/// the object).  A moving mremap keeps the data; `MADV_DONTNEED` keeps it
/// in the cache; `MADV_FREE` is EINVAL.
fn sigbus_mremap_and_madvise<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        let mm = env.mm();
        let va = mm.mmap(VA, 4 * K4, RW, SHARED | MAP_FIXED).unwrap();
        env.write_u64(&mm, va, 11);
        let grown = mm
            .mremap(va, 4 * K4, 8 * K4, MremapFlags::empty(), 0)
            .unwrap();
        assert_eq!(grown, va);
        assert_eq!(
            env.touch(&mm, va + 5 * K4, Access::Read),
            Err(Fault::Sigbus)
        );
        let to = mm
            .mremap(
                va,
                8 * K4,
                8 * K4,
                MREMAP_MAYMOVE | MREMAP_FIXED,
                VA + 64 * MIB,
            )
            .unwrap();
        assert_eq!(env.read_u64(&mm, to), 11);
        mm.madvise(to, 4 * K4, MADV_DONTNEED).unwrap();
        assert_eq!(env.read_u64(&mm, to), 11);
        assert_eq!(
            mm.madvise(to, 4 * K4, MADV_FREE),
            Err(mm::abi::errno::Errno::EINVAL)
        );
        // mprotect read-only then back: writes still reach the shared page.
        mm.mprotect(to, 4 * K4, PROT_READ).unwrap();
        assert_eq!(env.touch(&mm, to, Access::Write), Err(Fault::Segv));
        mm.mprotect(to, 4 * K4, RW).unwrap();
        env.write_u64(&mm, to, 12);
        env.check(&[&mm]);
        let child = mm.fork().unwrap();
        assert_eq!(env.read_u64(&child, to), 12);
        env.check(&[&mm, &child]);
    });
}

/// A memfd-like object mapped in two processes, PMD-mapped: a punched
/// hole inside the PMD folio splits it (after unmapping it everywhere)
/// and drops the pages inside; a truncate makes the tail SIGBUS in both;
/// a `MAP_LOCKED` shared mapping faults in and goes cleanly.
fn truncate_mapped_object<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        use std::sync::Arc;
        env.thp.config.shmem.set_huge(ShmemHuge::Always).unwrap();
        let obj = Arc::new(mm::shmem::Shmem::with_gauges(
            4 * MIB,
            0,
            Some(&env.thp.shmem),
        ));
        let a = env.mm();
        let va = a
            .mmap_shmem(
                VA,
                4 * MIB,
                RW,
                MAP_SHARED | MAP_FIXED,
                obj.clone(),
                0,
                true,
            )
            .unwrap();
        env.fill_pages(&a, va, 4 * MIB, 3);
        let b = a.fork().unwrap();
        // The child maps the object 2 MiB further in, read-only, locked.
        let vb = b
            .mmap_shmem(
                VA + 64 * MIB,
                2 * MIB,
                PROT_READ,
                MAP_SHARED | MAP_FIXED | MAP_LOCKED,
                obj.clone(),
                2 * MIB,
                true,
            )
            .unwrap();
        assert_eq!(env.read_u64(&b, vb), 3 ^ (va + 2 * MIB));
        env.check(&[&a, &b]);
        let drop_pages = |first: u64, end: u64| {
            let (s, e) = obj.folio_span(first, end);
            for m in [&a, &b] {
                m.shmem_unmap_range(obj.id(), s, e);
            }
            let (t, gone) = obj.truncate_range(first, end, env.mem);
            for m in [&a, &b] {
                m.shmem_unmap_range(obj.id(), first, end);
            }
            drop(gone);
            t
        };
        // Punch 16 pages at 1 MiB: the first PMD folio is split.
        let t = drop_pages(256, 272);
        assert_eq!(t.split, 1);
        assert_eq!(obj.cached_pages(), 1024 - 16);
        assert_eq!(env.read_u64(&a, va + MIB), 0);
        assert_eq!(env.read_u64(&b, va + MIB + 8 * K4), 0);
        assert_eq!(env.read_u64(&a, va + MIB - K4), 3 ^ (va + MIB - K4));
        assert_eq!(
            env.read_u64(&b, va + MIB + 16 * K4),
            3 ^ (va + MIB + 16 * K4)
        );
        env.check(&[&a, &b]);
        // Truncate to 3 MiB: the second PMD folio is split too.
        obj.set_size(3 * MIB);
        let t = drop_pages(768, 1024);
        assert_eq!(t.split, 1);
        assert_eq!(
            env.touch(&a, va + 3 * MIB, Access::Read),
            Err(Fault::Sigbus)
        );
        assert_eq!(
            env.touch(&b, vb + MIB + K4, Access::Read),
            Err(Fault::Sigbus)
        );
        assert_eq!(env.read_u64(&b, vb + MIB - K4), 3 ^ (va + 3 * MIB - K4));
        env.check(&[&a, &b]);
        drop(obj);
        drop(b);
        env.check(&[&a]);
        drop(a);
        assert_eq!(
            env.thp
                .shmem
                .pages
                .load(core::sync::atomic::Ordering::Relaxed),
            0
        );
    });
}

/// The policy at fault: `advise` needs `MADV_HUGEPAGE` on the VMA;
/// per-size `within_size` takes a 64K folio only where the aligned block
/// lies within the object; `deny` turns everything off.
fn policy_at_fault<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        let sh = &env.thp.config.shmem;
        sh.set_huge(ShmemHuge::Advise).unwrap();
        let mm = env.mm();
        let va = mm.mmap(VA, 4 * MIB, RW, SHARED | MAP_FIXED).unwrap();
        env.write_u64(&mm, va, 1);
        assert_eq!(env.folio_at(&mm, va).unwrap().order(), 0);
        mm.madvise(va + 2 * MIB, 2 * MIB, MADV_HUGEPAGE).unwrap();
        env.write_u64(&mm, va + 2 * MIB, 2);
        assert_eq!(
            mm.with_page_table(|pt| pt.lookup(va + 2 * MIB)).level,
            PMD_LEVEL
        );
        mm.munmap(va, 4 * MIB).unwrap();
        sh.set_huge(ShmemHuge::Never).unwrap();
        sh.set_order_mode(4, ShmemOrderMode::WithinSize).unwrap();
        // 100 pages: blocks 0..96 fit, the one at 96 does not.
        let va = mm.mmap(VA, 100 * K4, RW, SHARED | MAP_FIXED).unwrap();
        env.write_u64(&mm, va, 1);
        assert_eq!(env.folio_at(&mm, va).unwrap().order(), 4);
        env.write_u64(&mm, va + 97 * K4, 1);
        assert_eq!(env.folio_at(&mm, va + 97 * K4).unwrap().order(), 0);
        assert_eq!(env.mthp(4, MthpStat::ShmemAlloc), 1);
        // Order 1 (8K) exists for shmem, unlike anonymous memory.
        sh.set_order_mode(1, ShmemOrderMode::Always).unwrap();
        env.write_u64(&mm, va + 99 * K4, 1);
        let f = env.folio_at(&mm, va + 99 * K4).unwrap();
        assert_eq!(f.order(), 1);
        assert_eq!(env.leaf(&mm, va + 98 * K4).unwrap().pfn, f.pfn());
        sh.set_huge(ShmemHuge::Deny).unwrap();
        env.write_u64(&mm, va + 32 * K4, 1);
        assert_eq!(env.folio_at(&mm, va + 32 * K4).unwrap().order(), 0);
        env.check(&[&mm]);
    });
}

/// A shared mapping that may not become writable (a file open read-only,
/// a write-sealed memfd, `SHM_RDONLY`): it reads the object's folios,
/// refuses `PROT_WRITE` at mmap and at mprotect (EACCES).  A private
/// read-only one maps the same folios read-only and may become writable
/// (`shmem_private.rs` tests its copies).
fn read_only_mappings<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        use mm::abi::errno::Errno;
        use std::sync::Arc;
        let obj = Arc::new(mm::shmem::Shmem::with_gauges(MIB, 0, Some(&env.thp.shmem)));
        let a = env.mm();
        let va = a
            .mmap_shmem(VA, MIB, RW, MAP_SHARED | MAP_FIXED, obj.clone(), 0, true)
            .unwrap();
        env.write_u64(&a, va + K4, 0x77);
        let ro = a
            .mmap_shmem(0, MIB, PROT_READ, MAP_SHARED, obj.clone(), 0, false)
            .unwrap();
        let private = a
            .mmap_shmem(0, MIB, PROT_READ, MAP_PRIVATE, obj.clone(), 0, true)
            .unwrap();
        assert_eq!(env.read_u64(&a, ro + K4), 0x77);
        assert_eq!(env.read_u64(&a, private + K4), 0x77);
        assert_eq!(
            env.leaf(&a, private + K4).unwrap().pfn,
            env.leaf(&a, va + K4).unwrap().pfn
        );
        assert_eq!(a.mprotect(ro, MIB, RW), Err(Errno::EACCES));
        assert_eq!(a.mprotect(private, MIB, RW), Ok(()));
        assert!(!env.leaf(&a, private + K4).unwrap().attrs.perms.write);
        assert_eq!(a.mprotect(va, MIB, PROT_READ), Ok(()));
        assert_eq!(a.mprotect(va, MIB, RW), Ok(()));
        assert_eq!(
            a.mmap_shmem(0, MIB, RW, MAP_SHARED, obj.clone(), 0, false),
            Err(Errno::EACCES)
        );
        assert!(
            a.mmap_shmem(0, MIB, RW, MAP_PRIVATE, obj.clone(), 0, true)
                .is_ok()
        );
        env.check(&[&a]);
    });
}

both_formats!(
    read_only_mappings,
    policy_at_fault,
    fork_shares_64k_folios,
    pmd_mapped_in_both,
    sigbus_mremap_and_madvise,
    truncate_mapped_object,
);
