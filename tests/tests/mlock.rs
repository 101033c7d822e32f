//! mlock over both entry formats: which folios are mlocked whole (Linux
//! 6.7+'s large-folio rules), the `Mlocked` gauge and the
//! `unevictable_pgs_*` events, limits and errno values, fork, munmap,
//! exit.  Each test fails with the folio walk, the fault-time mlock or the
//! munlock on unmap taken out.

mod mmtest;

use mm::abi::errno::Errno;
use mm::paging::{PMD_LEVEL, PTE_LEVEL, PagingArch};
use mm::thp::VmEvent;
use mm::vma::{MlockRights, VmFlags};
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;

fn mlocked<A: PagingArch>(env: &Env<'_, A>) -> u64 {
    env.buddy.mlocked_pages()
}

fn vma_flags<A: PagingArch>(mm: &mm::aspace::Mm<'_, A>, va: u64) -> VmFlags {
    mm.vmas().find(va).unwrap().flags
}

/// mlock of present 64K folios wholly inside the range mlocks each whole;
/// munlock returns the gauge to zero; both events count pages.
fn mlock_present_64k_folios<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm.mmap(VA, 64 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 64 * K4, 1);
        assert_eq!(env.folio_at(&mm, va).unwrap().order(), 4);
        assert_eq!(mlocked(env), 0);
        mm.mlock(va, 64 * K4).unwrap();
        assert_eq!(mlocked(env), 64);
        assert_eq!(env.event(VmEvent::UnevictablePgsMlocked), 64);
        for p in (0..64).step_by(16) {
            assert!(env.folio_at(&mm, va + p * K4).unwrap().is_mlocked());
        }
        assert_eq!(mm.locked_vm(), 64);
        assert!(vma_flags(&mm, va).contains(VmFlags::LOCKED));
        mm.munlock(va, 64 * K4).unwrap();
        assert_eq!(mlocked(env), 0);
        assert_eq!(env.event(VmEvent::UnevictablePgsMunlocked), 64);
        assert_eq!(mm.locked_vm(), 0);
        env.check(&[&mm]);
    });
}

/// A range covering only part of a 64K folio leaves it unlocked (trap 9),
/// while order-0 pages and folios wholly inside are locked; the VMA is
/// split at the edges and merged back by munlock.
fn partial_cover_is_not_mlocked<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm.mmap(VA, 32 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 32 * K4, 2);
        // Pages 8..24: half of folio 0, half of folio 1.
        mm.mlock(va + 8 * K4, 16 * K4).unwrap();
        assert_eq!(mm.vmas().len(), 3);
        assert_eq!(mlocked(env), 0);
        assert!(!env.folio_at(&mm, va).unwrap().is_mlocked());
        // Extending the lock to pages 0..24 walks only pages 0..8, the
        // part whose VMA flags change, and that is still part of folio 0
        // (as Linux: `mlock_fixup` skips VMAs already locked).
        mm.mlock(va, 24 * K4).unwrap();
        assert_eq!(mlocked(env), 0);
        // Locked afresh over 0..24: folio 0 is inside, folio 1 half.
        mm.munlock(va, 32 * K4).unwrap();
        mm.mlock(va, 24 * K4).unwrap();
        assert_eq!(mlocked(env), 16);
        assert!(env.folio_at(&mm, va).unwrap().is_mlocked());
        assert!(!env.folio_at(&mm, va + 16 * K4).unwrap().is_mlocked());
        // munlock has no coverage rule; the VMAs merge back.
        mm.munlock(va + 12 * K4, 8 * K4).unwrap();
        assert_eq!(mlocked(env), 0);
        mm.munlock(va, 32 * K4).unwrap();
        assert_eq!(mm.vmas().len(), 1);
        env.check(&[&mm]);
    });
}

/// A PMD-mapped THP in a locked VMA is mlocked whole; locking half of it
/// splits the PMD with the VMA and leaves the folio unlocked.
fn pmd_thp<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        let va = mm.mmap(0x7000_0000_0000, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, M2, 3);
        assert_eq!(mm.with_page_table(|pt| pt.lookup(va).level), PMD_LEVEL);
        mm.mlock(va, M2).unwrap();
        assert_eq!(mlocked(env), 512);
        mm.munlock(va, M2).unwrap();
        assert_eq!(mlocked(env), 0);
        mm.mlock(va, M2 / 2).unwrap();
        assert_eq!(mm.with_page_table(|pt| pt.lookup(va).level), PTE_LEVEL);
        assert_eq!(mlocked(env), 0);
        env.check_pages(&mm, va, M2, 3);
        env.check(&[&mm]);
    });
}

/// New folios faulted into a locked VMA are mlocked: `MAP_LOCKED`
/// populates at once; `MLOCK_ONFAULT` populates nothing and locks each
/// folio as it faults in.
fn fault_time_mlock<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm
            .mmap(VA, 32 * K4, RW, ANON | MAP_FIXED | MAP_LOCKED)
            .unwrap();
        assert_eq!(mm.anon_rss(), 32);
        assert_eq!(mlocked(env), 32);
        let vb = mm.mmap(VA + MIB, 32 * K4, RW, ANON | MAP_FIXED).unwrap();
        mm.mlock2(vb, 32 * K4, 1).unwrap();
        assert_eq!(mm.anon_rss(), 32);
        assert!(vma_flags(&mm, vb).contains(VmFlags::LOCKED | VmFlags::LOCKONFAULT));
        env.write_u64(&mm, vb + 17 * K4, 5);
        assert_eq!(mlocked(env), 48);
        assert_eq!(env.event(VmEvent::UnevictablePgsMlocked), 48);
        // munmap munlocks (counted), then frees.
        mm.munmap(va, 32 * K4).unwrap();
        assert_eq!(mlocked(env), 16);
        assert_eq!(env.event(VmEvent::UnevictablePgsMunlocked), 32);
        // Exit (drop) of a locked mapping munlocks too.
        drop(mm);
        assert_eq!(mlocked(env), 0);
        assert_eq!(env.event(VmEvent::UnevictablePgsMunlocked), 48);
    });
}

/// Locks are not inherited: the child's VMAs are unlocked; its COW copies
/// are not mlocked; the parent's COW in its locked VMA mlocks the copy
/// and munlocks the original.
fn fork_drops_locks<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.no_thp();
        let parent = env.mm();
        let va = parent.mmap(VA, 8 * K4, RW, ANON | MAP_FIXED).unwrap();
        let vb = parent
            .mmap(VA + 8 * K4, 8 * K4, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&parent, va, 16 * K4, 4);
        parent.mlock(va, 8 * K4).unwrap();
        parent.mlockall(2).unwrap(); // MCL_FUTURE
        assert_eq!(mlocked(env), 8);
        let child = parent.fork().unwrap();
        assert!(!vma_flags(&child, va).contains(VmFlags::LOCKED));
        assert_eq!(child.locked_vm(), 0);
        assert_eq!(child.vmas().len(), 1, "unlocked VMAs merge");
        assert!(child.vmas().def_flags().is_empty());
        let _ = vb;
        env.write_u64(&child, va, 9);
        assert!(!env.folio_at(&child, va).unwrap().is_mlocked());
        assert_eq!(mlocked(env), 8);
        env.write_u64(&parent, va + K4, 9);
        assert!(env.folio_at(&parent, va + K4).unwrap().is_mlocked());
        assert!(!env.folio_at(&child, va + K4).unwrap().is_mlocked());
        assert_eq!(mlocked(env), 8);
        // The parent's MCL_FUTURE applies to its new mappings only.
        let vc = parent.mmap(0, 4 * K4, RW, ANON).unwrap();
        assert!(vma_flags(&parent, vc).contains(VmFlags::LOCKED));
        assert_eq!(mlocked(env), 12);
        let vd = child.mmap(0, 4 * K4, RW, ANON).unwrap();
        assert!(!vma_flags(&child, vd).contains(VmFlags::LOCKED));
        parent.munlockall().unwrap();
        assert_eq!(mlocked(env), 0);
        env.check(&[&parent, &child]);
    });
}

/// PROT_NONE: the VMA is locked, populate fails, mlock says ENOMEM;
/// `MLOCK_ONFAULT` succeeds.
fn prot_none<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.no_thp();
        let mm = env.mm();
        let va = mm.mmap(VA, 4 * K4, PROT_NONE, ANON | MAP_FIXED).unwrap();
        assert_eq!(mm.mlock(va, 4 * K4), Err(Errno::ENOMEM));
        assert!(vma_flags(&mm, va).contains(VmFlags::LOCKED));
        assert_eq!(mm.locked_vm(), 4);
        mm.munlock(va, 4 * K4).unwrap();
        assert_eq!(mm.mlock2(va, 4 * K4, 1), Ok(()));
        mm.munlock(va, 4 * K4).unwrap();
        // Made writable, a locked VMA is populated (and its folios
        // mlocked); an on-fault one is not.
        mm.mlock(va, 2 * K4).unwrap_err();
        assert_eq!(mm.anon_rss(), 0);
        mm.mprotect(va, 4 * K4, RW).unwrap();
        assert_eq!(mm.anon_rss(), 2);
        assert_eq!(mlocked(env), 2);
        env.check(&[&mm]);
    });
}

/// Without `CAP_IPC_LOCK`: EPERM for a zero limit, ENOMEM over the limit
/// for mlock (pages already locked in the range not counted twice),
/// EAGAIN for `MAP_LOCKED` and `MCL_FUTURE` mappings over it.
fn limits<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.no_thp();
        let mm = env.mm();
        let va = mm.mmap(VA, 32 * K4, RW, ANON | MAP_FIXED).unwrap();
        mm.set_mlock_rights(MlockRights {
            limit: 0,
            cap_ipc_lock: false,
        });
        assert_eq!(mm.mlock(va, K4), Err(Errno::EPERM));
        assert_eq!(mm.mlockall(1), Err(Errno::EPERM));
        assert_eq!(mm.mmap(0, K4, RW, ANON | MAP_LOCKED), Err(Errno::EPERM));
        assert_eq!(mm.munlock(va, K4), Ok(()));
        mm.set_mlock_rights(MlockRights {
            limit: 16 * K4,
            cap_ipc_lock: false,
        });
        assert_eq!(mm.mlock(va, 17 * K4), Err(Errno::ENOMEM));
        assert_eq!(mm.locked_vm(), 0);
        mm.mlock(va, 16 * K4).unwrap();
        // Relocking the same pages does not count them twice.
        mm.mlock(va, 16 * K4).unwrap();
        assert_eq!(mm.mlock(va + 16 * K4, K4), Err(Errno::ENOMEM));
        assert_eq!(mm.mmap(0, K4, RW, ANON | MAP_LOCKED), Err(Errno::EAGAIN));
        assert_eq!(mm.mlockall(1), Err(Errno::ENOMEM));
        mm.mlockall(2).unwrap();
        assert_eq!(mm.mmap(0, K4, RW, ANON), Err(Errno::EAGAIN));
        mm.munlockall().unwrap();
        assert_eq!(mm.mmap(0, K4, RW, ANON).map(|_| ()), Ok(()));
        // With the capability, no limit applies.
        mm.set_mlock_rights(MlockRights {
            limit: 0,
            cap_ipc_lock: true,
        });
        mm.mlock(va, 32 * K4).unwrap();
        assert_eq!(mm.locked_vm(), 32);
        env.check(&[&mm]);
    });
}

/// `MADV_DONTNEED_LOCKED` zaps a locked range and munlocks what it took;
/// the other madvise advice that drops pages stays EINVAL there.
fn madvise_on_locked<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.no_thp();
        let mm = env.mm();
        let va = mm
            .mmap(VA, 8 * K4, RW, ANON | MAP_FIXED | MAP_LOCKED)
            .unwrap();
        assert_eq!(mlocked(env), 8);
        for adv in [MADV_DONTNEED, MADV_FREE, MADV_COLD, MADV_PAGEOUT] {
            assert_eq!(mm.madvise(va, 8 * K4, adv), Err(Errno::EINVAL));
        }
        mm.madvise(va, 4 * K4, MADV_DONTNEED_LOCKED).unwrap();
        assert_eq!(mlocked(env), 4);
        assert_eq!(env.event(VmEvent::UnevictablePgsMunlocked), 4);
        env.check(&[&mm]);
    });
}

/// mremap of a locked mapping: a shrunk tail is munlocked as it goes; a
/// grown locked mapping has its new part populated and mlocked; a moved
/// one keeps its folios mlocked.
fn mremap_locked<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.no_thp();
        let mm = env.mm();
        let va = mm
            .mmap(VA, 8 * K4, RW, ANON | MAP_FIXED | MAP_LOCKED)
            .unwrap();
        assert_eq!(mlocked(env), 8);
        mm.mremap(va, 8 * K4, 4 * K4, MremapFlags::from_raw(0).unwrap(), 0)
            .unwrap();
        assert_eq!(mlocked(env), 4);
        assert_eq!(env.event(VmEvent::UnevictablePgsMunlocked), 4);
        mm.mremap(va, 4 * K4, 6 * K4, MremapFlags::from_raw(0).unwrap(), 0)
            .unwrap();
        assert_eq!(mm.anon_rss(), 6);
        assert_eq!(mlocked(env), 6);
        // A neighbour above forces the next growth to move.
        mm.mmap(va + 6 * K4, K4, RW, ANON | MAP_FIXED).unwrap();
        let to = mm
            .mremap(va, 6 * K4, 16 * K4, MremapFlags::from_raw(1).unwrap(), 0)
            .unwrap();
        assert_ne!(to, va);
        assert_eq!(mm.anon_rss(), 16);
        assert_eq!(mlocked(env), 16);
        assert_eq!(mm.locked_vm(), 16);
        env.check(&[&mm]);
    });
}

both_formats!(
    mremap_locked,
    mlock_present_64k_folios,
    partial_cover_is_not_mlocked,
    pmd_thp,
    fault_time_mlock,
    fork_drops_locks,
    prot_none,
    limits,
    madvise_on_locked,
);
