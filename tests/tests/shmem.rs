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

both_formats!(
    fork_shares_64k_folios,
    pmd_mapped_in_both,
    sigbus_mremap_and_madvise
);
