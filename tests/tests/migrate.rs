//! Migration of anonymous folios over both entry formats: every order
//! moves whole with its data, mappings (PTE, contpte, several spaces after
//! fork) come back on the new folio with the rights they had, faults on
//! migration entries wait, a failed copy rolls back, and the folio state
//! (swap cache, mlock, LRU) moves with it.

mod mmtest;

use std::sync::atomic::{AtomicBool, Ordering};

use mm::aspace::Access;
use mm::aspace::Mm;
use mm::aspace::migrate::{
    FolioMigrator, MigrateError, MigrateHooks, MigrateMode, MigrateReason, MmMigrator,
    migrate_folio, migrate_folio_hooked, migrate_pages,
};
use mm::paging::{Entry, PMD_LEVEL, PTE_LEVEL, PagingArch};
use mm::physmem::buddy::AllocFlags;
use mm::physmem::folio::Folio;
use mm::physmem::frame_flags::PageFlags;
use mm::thp::VmEvent;
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;

/// A destination folio of `order`.
fn dst<'a, A: PagingArch>(env: &Env<'a, A>, order: u32) -> Folio<'a> {
    env.buddy.alloc(order, AllocFlags::USER).unwrap()
}

/// Migrates the folio mapped at `va` in `mms[0]`; returns (old head pfn,
/// new folio).
fn migrate_at<'a, A: PagingArch>(
    env: &Env<'a, A>,
    mms: &[&Mm<'a, A>],
    va: u64,
) -> (u64, Folio<'a>) {
    let f = env.folio_at(mms[0], va).unwrap();
    let old = f.pfn();
    let d = dst(env, f.order());
    migrate_folio(mms, &f.get_ref(), d, MigrateMode::Sync).unwrap();
    (old, env.folio_at(mms[0], va).unwrap())
}

/// Whether `va` holds a migration entry.
fn is_migration<A: PagingArch>(mm: &Mm<'_, A>, va: u64) -> bool {
    mm.with_page_table(|pt| matches!(pt.lookup(va).entry, Entry::Swap(e) if e.is_migration()))
}

/// 4K, 16K, 64K and 2M folios move whole: order kept, data intact,
/// contiguous blocks folded again on arm64, frames back to baseline, the
/// counters as Linux's.
fn orders_move_whole<A: PagingArch>() {
    for order in [0, 2, 4, 9] {
        run::<A>(32 * MIB, |env| {
            env.only_order(order);
            let mm = env.mm();
            let len = 2 * M2;
            mm.mmap(VA, len, RW, ANON | MAP_FIXED).unwrap();
            env.fill_pages(&mm, VA, len, 0x1234);
            let at = VA + M2;
            let f = env.folio_at(&mm, at).unwrap();
            assert_eq!(f.order(), order);
            let free0 = env.buddy.stats().free;
            let (old, new) = migrate_at(env, &[&mm], at);
            assert_ne!(new.pfn(), old, "moved");
            assert_eq!(new.order(), order, "order kept");
            assert_eq!(env.buddy.stats().free, free0, "source freed");
            assert!(new.is_anon() && new.test(PageFlags::LRU));
            let l = env.leaf(&mm, at + f.size() - K4).unwrap();
            if order == 9 {
                assert_eq!(l.level, PMD_LEVEL, "PMD stays PMD");
                assert_eq!(l.pfn, new.pfn());
                assert_eq!(mm.thpmaps().total().anon_huge_bytes, len);
            } else {
                assert_eq!(l.level, PTE_LEVEL);
                assert_eq!(l.pfn, new.pfn() + f.nr_pages() - 1);
            }
            assert!(l.attrs.perms.write, "exclusive pages stay writable");
            if has_cont::<A>() && (4..9).contains(&order) {
                assert!(l.cont, "contpte block folded again");
            }
            env.check_pages(&mm, VA, len, 0x1234);
            assert_eq!(
                env.event(VmEvent::PgMigrateSuccess),
                0,
                "counted by the driver"
            );
            env.check(&[&mm]);
            // The batch driver counts as Linux: pages, and PMD-size apart.
            let g = env.folio_at(&mm, VA).unwrap();
            let (ok, failed) = migrate_pages(
                &[&mm],
                vec![g.get_ref()],
                |o| env.buddy.alloc(o, AllocFlags::USER).ok(),
                MigrateReason::Syscall,
            );
            assert_eq!((ok, failed), (g.nr_pages(), 0));
            assert_eq!(env.event(VmEvent::PgMigrateSuccess), g.nr_pages());
            assert_eq!(env.event(VmEvent::ThpMigrationSuccess), (order == 9) as u64);
            assert_eq!(env.folio_at(&mm, VA).unwrap().order(), order);
            env.check_pages(&mm, VA, len, 0x1234);
            env.check(&[&mm]);
            mm.munmap(VA, len).unwrap();
        });
    }
}

/// After fork both spaces map the new folio (read-only, shared); COW still
/// gives each its own copy afterwards.
fn fork_shared_both_remapped<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let parent = env.mm();
        parent.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&parent, VA, 16 * K4, 7);
        let child = parent.fork().unwrap();
        let (_, new) = migrate_at(env, &[&parent, &child], VA);
        assert_eq!(new.order(), 4);
        for mm in [&parent, &child] {
            let l = env.leaf(mm, VA + 3 * K4).unwrap();
            assert_eq!(l.pfn, new.pfn() + 3);
            assert!(!l.attrs.perms.write, "shared: read-only");
        }
        assert!(!new.page(3).is_anon_exclusive());
        assert_eq!(new.large_mapcount(), 32);
        env.check(&[&parent, &child]);
        env.write_u64(&child, VA + 3 * K4, 99);
        env.check_pages(&parent, VA, 16 * K4, 7);
        assert_eq!(env.read_u64(&child, VA + 3 * K4), 99);
        env.check(&[&parent, &child]);
        drop(child);
        parent.munmap(VA, 16 * K4).unwrap();
    });
}

/// Writable, read-only exclusive and read-only shared mappings come back
/// as they were (WRITE / READ_EXCLUSIVE / READ entries).
fn rights_restored<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(0);
        let mm = env.mm();
        mm.mmap(VA, 4 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 4 * K4, 3);
        mm.mprotect(VA + K4, K4, PROT_READ).unwrap();
        let child = mm.fork().unwrap();
        // Page 2 is shared with the child; pages 0 and 1 are made
        // exclusive again in the parent (0 writable, 1 read-only).
        child.munmap(VA, 2 * K4).unwrap();
        env.write_u64(&mm, VA, 5);
        let f1 = env.folio_at(&mm, VA + K4).unwrap();
        let _ = f1;
        let (_, n0) = migrate_at(env, &[&mm, &child], VA);
        let (_, n1) = migrate_at(env, &[&mm, &child], VA + K4);
        let (_, n2) = migrate_at(env, &[&mm, &child], VA + 2 * K4);
        assert!(env.leaf(&mm, VA).unwrap().attrs.perms.write);
        assert!(n0.page(0).is_anon_exclusive());
        assert!(!env.leaf(&mm, VA + K4).unwrap().attrs.perms.write);
        assert!(!env.leaf(&mm, VA + 2 * K4).unwrap().attrs.perms.write);
        assert!(!n2.page(0).is_anon_exclusive(), "shared with the child");
        assert_eq!(env.leaf(&child, VA + 2 * K4).unwrap().pfn, n2.pfn());
        let _ = n1;
        assert_eq!(env.read_u64(&mm, VA), 5);
        env.check_pages(&mm, VA + K4, 2 * K4, 3);
        env.check(&[&mm, &child]);
        drop(child);
        mm.munmap(VA, 4 * K4).unwrap();
    });
}

struct FailCopy;
impl MigrateHooks for FailCopy {
    fn fail_copy(&self) -> bool {
        true
    }
}

/// A failed copy restores every entry onto the source: same frames, same
/// rights, data intact, the destination the caller's to free.
fn copy_failure_rolls_back<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 16 * K4, 11);
        let f = env.folio_at(&mm, VA).unwrap();
        let d = dst(env, 4);
        let r = migrate_folio_hooked(&[&mm], &f.get_ref(), d, MigrateMode::Sync, &FailCopy);
        assert_eq!(r, Err(MigrateError::CopyFailed));
        d.put();
        assert_eq!(env.folio_at(&mm, VA + 5 * K4).unwrap(), f);
        let l = env.leaf(&mm, VA + 15 * K4).unwrap();
        assert!(l.attrs.perms.write);
        if has_cont::<A>() {
            assert!(l.cont);
        }
        assert!(f.page(7).is_anon_exclusive());
        assert_eq!(mm.migents(), 0);
        env.check_pages(&mm, VA, 16 * K4, 11);
        env.check(&[&mm]);
        mm.munmap(VA, 16 * K4).unwrap();
    });
}

/// A PMD-mapped THP shared by fork comes back PMD-mapped in both spaces,
/// read-only; a failed copy puts the PMDs back on the source.
fn pmd_fork_and_rollback<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        let parent = env.mm();
        parent.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&parent, VA, M2, 37);
        let child = parent.fork().unwrap();
        let f = env.folio_at(&parent, VA).unwrap();
        let d = dst(env, 9);
        let r = migrate_folio_hooked(
            &[&parent, &child],
            &f.get_ref(),
            d,
            MigrateMode::Sync,
            &FailCopy,
        );
        assert_eq!(r, Err(MigrateError::CopyFailed));
        d.put();
        for mm in [&parent, &child] {
            let l = env.leaf(mm, VA).unwrap();
            assert_eq!(
                (l.level, l.pfn),
                (PMD_LEVEL, f.pfn()),
                "PMD back on the source"
            );
        }
        env.check(&[&parent, &child]);
        let (_, new) = migrate_at(env, &[&parent, &child], VA);
        assert_eq!(new.entire_mapcount(), 2);
        for mm in [&parent, &child] {
            let l = env.leaf(mm, VA + 5 * K4).unwrap();
            assert_eq!((l.level, l.pfn), (PMD_LEVEL, new.pfn()));
            assert!(!l.attrs.perms.write, "shared: read-only");
        }
        env.check(&[&parent, &child]);
        env.write_u64(&child, VA + 7 * K4, 5);
        env.check_pages(&parent, VA, M2, 37);
        assert_eq!(env.read_u64(&child, VA + 7 * K4), 5);
        env.check(&[&parent, &child]);
        drop(child);
        parent.munmap(VA, M2).unwrap();
    });
}

/// Faults on the migration entries from another thread while the source
/// is unmapped.
struct FaultWhileUnmapped<'f> {
    unmapped: &'f AtomicBool,
    done: &'f AtomicBool,
}
impl MigrateHooks for FaultWhileUnmapped<'_> {
    fn after_unmap(&self) {
        self.unmapped.store(true, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(100));
        // The fault (or mprotect) must still be waiting on the folio lock.
        assert!(!self.done.load(Ordering::SeqCst), "did not wait");
    }
}

/// A fault on a migration entry sleeps until the migration ends, then
/// finds the new folio (without the wait it would return at once: the
/// assertion in the hook checks it).
fn fault_waits_for_migration<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 16 * K4, 13);
        let f = env.folio_at(&mm, VA).unwrap();
        let d = dst(env, 4);
        let (unmapped, done) = (AtomicBool::new(false), AtomicBool::new(false));
        let m = &mm;
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                while !unmapped.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                assert!(is_migration(m, VA + 4 * K4));
                let r = m.handle_fault(VA + 4 * K4, Access::Write);
                done.store(true, Ordering::SeqCst);
                r
            });
            let hooks = FaultWhileUnmapped {
                unmapped: &unmapped,
                done: &done,
            };
            migrate_folio_hooked(&[&mm], &f.get_ref(), d, MigrateMode::Sync, &hooks).unwrap();
            t.join().unwrap().unwrap();
        });
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(env.folio_at(&mm, VA + 4 * K4).unwrap().pfn(), d.pfn());
        env.check_pages(&mm, VA, 16 * K4, 13);
        env.check(&[&mm]);
        mm.munmap(VA, 16 * K4).unwrap();
    });
}

/// mprotect meeting migration entries waits for the migration to end (the
/// remap restores the rights the entries recorded), then changes the new
/// folio's mappings: without the wait the pages would come back writable
/// after `PROT_READ` returned (the hook's assertion checks the wait).
fn mprotect_waits_for_migration<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 16 * K4, 47);
        let f = env.folio_at(&mm, VA).unwrap();
        let d = dst(env, 4);
        let (unmapped, done) = (AtomicBool::new(false), AtomicBool::new(false));
        let m = &mm;
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                while !unmapped.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                let r = m.mprotect(VA, 16 * K4, PROT_READ);
                done.store(true, Ordering::SeqCst);
                r
            });
            let hooks = FaultWhileUnmapped {
                unmapped: &unmapped,
                done: &done,
            };
            migrate_folio_hooked(&[&mm], &f.get_ref(), d, MigrateMode::Sync, &hooks).unwrap();
            t.join().unwrap().unwrap();
        });
        for p in (VA..VA + 16 * K4).step_by(K4 as usize) {
            let l = env.leaf(&mm, p).unwrap();
            assert!(!l.attrs.perms.write, "read-only after mprotect at {p:#x}");
            assert_eq!(l.pfn, d.pfn() + (p - VA) / K4);
        }
        env.check_pages(&mm, VA, 16 * K4, 47);
        env.check(&[&mm]);
        mm.munmap(VA, 16 * K4).unwrap();
    });
}

/// munmap (zap) of part of the folio while it is unmapped: those entries
/// are gone, the remap restores only the others, nothing leaks.
struct ZapWhileUnmapped<'m, 'a, A: PagingArch> {
    mm: &'m Mm<'a, A>,
}
impl<A: PagingArch> MigrateHooks for ZapWhileUnmapped<'_, '_, A> {
    fn after_unmap(&self) {
        // Migration entries: not swap entries, shown as swapped in
        // pagemap, still mappings to the checker.
        assert_eq!((self.mm.swapents(), self.mm.migents()), (0, 16));
        assert!(is_migration(self.mm, VA + 5 * K4));
        let pm = self.mm.pagemap(VA + 5 * K4, 1, false)[0];
        assert_ne!(pm & mm::abi::pagemap::PM_SWAP, 0);
        assert_eq!(pm & mm::abi::pagemap::PM_PRESENT, 0);
        mm::aspace::check_invariants(&[self.mm]).unwrap();
        self.mm.munmap(VA, 4 * K4).unwrap();
        mm::aspace::check_invariants(&[self.mm]).unwrap();
    }
}

fn zap_during_migration<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 16 * K4, 17);
        let f = env.folio_at(&mm, VA).unwrap();
        let d = dst(env, 4);
        let free0 = env.buddy.stats().free;
        migrate_folio_hooked(
            &[&mm],
            &f.get_ref(),
            d,
            MigrateMode::Sync,
            &ZapWhileUnmapped { mm: &mm },
        )
        .unwrap();
        assert_eq!(env.buddy.stats().free, free0 + 16, "source freed");
        assert_eq!(d.large_mapcount(), 12);
        assert_eq!(mm.anon_rss(), 12);
        env.check_pages(&mm, VA + 4 * K4, 12 * K4, 17);
        env.check(&[&mm]);
        mm.munmap(VA, 16 * K4).unwrap();
    });
}

/// mremap moving part of the folio's entries away: the remap cannot find
/// them; a fault there maps the source page back, with its data.
struct MoveWhileUnmapped<'m, 'a, A: PagingArch> {
    mm: &'m Mm<'a, A>,
}
impl<A: PagingArch> MigrateHooks for MoveWhileUnmapped<'_, '_, A> {
    fn after_unmap(&self) {
        let to = VA + 64 * M2;
        let r = self.mm.mremap(
            VA + 8 * K4,
            8 * K4,
            8 * K4,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            to,
        );
        assert_eq!(r, Ok(to));
    }
}

fn mremap_during_migration<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 16 * K4, 19);
        let f = env.folio_at(&mm, VA).unwrap();
        let d = dst(env, 4);
        let fr = f.get_ref();
        migrate_folio_hooked(
            &[&mm],
            &fr,
            d,
            MigrateMode::Sync,
            &MoveWhileUnmapped { mm: &mm },
        )
        .unwrap();
        drop(fr);
        let to = VA + 64 * M2;
        assert_eq!(mm.migents(), 8, "moved entries left for their faults");
        env.check(&[&mm]);
        for i in 0..8 {
            assert_eq!(env.read_u64(&mm, to + i * K4), 19 ^ (VA + (8 + i) * K4));
        }
        assert_eq!(mm.migents(), 0);
        env.check_pages(&mm, VA, 8 * K4, 19);
        env.check(&[&mm]);
        mm.munmap(VA, 8 * K4).unwrap();
        mm.munmap(to, 8 * K4).unwrap();
    });
}

/// fork while the folio is unmapped: the child's copies are `READ`
/// entries on the source page (the caller did not pass the child); the
/// parent's come back read-only on the new folio, the child's fault maps
/// the source page back; both read the same data, COW keeps them apart.
struct ForkWhileUnmapped<'m, 'a, A: PagingArch> {
    mm: &'m Mm<'a, A>,
    child: std::cell::RefCell<Option<Mm<'a, A>>>,
}
impl<A: PagingArch> MigrateHooks for ForkWhileUnmapped<'_, '_, A> {
    fn after_unmap(&self) {
        *self.child.borrow_mut() = Some(self.mm.fork().unwrap());
    }
}

fn fork_during_migration<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 16 * K4, 43);
        let f = env.folio_at(&mm, VA).unwrap();
        let d = dst(env, 4);
        let hook = ForkWhileUnmapped {
            mm: &mm,
            child: std::cell::RefCell::new(None),
        };
        // Isolated by the caller, as reclaim or compaction would.
        env.ctx.lru_drain();
        let iso = env.ctx.lru_isolate(16, false);
        let src = iso.into_iter().find(|r| **r == f).unwrap();
        migrate_folio_hooked(&[&mm], &src, d, MigrateMode::Sync, &hook).unwrap();
        drop(src);
        let child = hook.child.into_inner().unwrap();
        assert!(
            f.test(PageFlags::LRU),
            "still mapped by the child: back on the LRU"
        );
        let l = env.leaf(&mm, VA + 2 * K4).unwrap();
        assert_eq!(l.pfn, d.pfn() + 2);
        assert!(!l.attrs.perms.write, "WRITE became READ at fork");
        assert_eq!(child.migents(), 16);
        env.check(&[&mm, &child]);
        env.check_pages(&child, VA, 16 * K4, 43);
        assert_eq!(child.migents(), 0);
        assert_eq!(
            env.leaf(&child, VA).unwrap().pfn,
            f.pfn(),
            "source page mapped back"
        );
        env.write_u64(&mm, VA, 1);
        env.write_u64(&child, VA + K4, 2);
        assert_eq!(env.read_u64(&child, VA), 43 ^ VA);
        assert_eq!(env.read_u64(&mm, VA + K4), 43 ^ (VA + K4));
        env.check(&[&mm, &child]);
        drop(child);
        mm.munmap(VA, 16 * K4).unwrap();
    });
}

/// An mlocked folio stays mlocked (and counted once in `Mlocked:`).
fn mlocked_stays_mlocked<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 16 * K4, 23);
        mm.mlock(VA, 16 * K4).unwrap();
        let locked = env.buddy.mlocked_pages();
        assert_eq!(locked, 16);
        let (_, new) = migrate_at(env, &[&mm], VA);
        assert!(new.is_mlocked());
        assert_eq!(env.buddy.mlocked_pages(), locked);
        env.check_pages(&mm, VA, 16 * K4, 23);
        env.check(&[&mm]);
        mm.munmap(VA, 16 * K4).unwrap();
        assert_eq!(env.buddy.mlocked_pages(), 0);
    });
}

/// No destination of the folio's order: split and migrated as 4K pieces
/// (counted as one failure, and `thp_migration_split` at PMD size); NUMA
/// balancing never splits.
fn no_destination_splits<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, M2, 29);
        let f = env.folio_at(&mm, VA).unwrap();
        let only_4k = |o: u32| (o == 0).then(|| env.buddy.alloc(0, AllocFlags::USER).ok())?;
        // Isolated from the LRU by the caller: put back when not moved.
        env.ctx.lru_drain();
        let isolated = env.ctx.lru_isolate(512, false);
        assert!(isolated.iter().any(|r| **r == f));
        let (ok, failed) = migrate_pages(&[&mm], isolated, only_4k, MigrateReason::NumaMisplaced);
        assert_eq!((ok, failed), (0, 1));
        assert_eq!(env.folio_at(&mm, VA).unwrap(), f, "not split");
        assert!(f.test(PageFlags::LRU), "back on the LRU");
        env.check(&[&mm]);
        assert_eq!(env.event(VmEvent::ThpMigrationFail), 1);
        let (ok, failed) =
            migrate_pages(&[&mm], vec![f.get_ref()], only_4k, MigrateReason::Syscall);
        assert_eq!((ok, failed), (512, 1));
        assert_eq!(env.event(VmEvent::ThpMigrationSplit), 1);
        assert_eq!(env.event(VmEvent::PgMigrateSuccess), 512);
        assert_eq!(env.folio_at(&mm, VA + 100 * K4).unwrap().order(), 0);
        env.check_pages(&mm, VA, M2, 29);
        env.check(&[&mm]);
        mm.munmap(VA, M2).unwrap();
    });
}

/// A partially mapped folio on the deferred-split queue is split before
/// migrating, as Linux: its mapped pieces move at 4K.
fn partially_mapped_split_first<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 16 * K4, 41);
        mm.munmap(VA, 4 * K4).unwrap();
        let f = env.folio_at(&mm, VA + 4 * K4).unwrap();
        assert!(f.test(PageFlags::PARTIALLY_MAPPED));
        let d = dst(env, 4);
        assert_eq!(
            migrate_folio(&[&mm], &f.get_ref(), d, MigrateMode::Sync),
            Err(MigrateError::NeedsSplit)
        );
        d.put();
        let (ok, failed) = migrate_pages(
            &[&mm],
            vec![f.get_ref()],
            |o| env.buddy.alloc(o, AllocFlags::USER).ok(),
            MigrateReason::Syscall,
        );
        assert_eq!(failed, 1, "a split folio counts as a failure");
        assert!(ok >= 12, "the mapped pieces moved: {ok}");
        assert_eq!(env.event(VmEvent::PgMigrateSuccess), ok);
        for p in (VA + 4 * K4..VA + 16 * K4).step_by(K4 as usize) {
            assert_eq!(env.folio_at(&mm, p).unwrap().order(), 0);
        }
        env.check_pages(&mm, VA + 4 * K4, 12 * K4, 41);
        env.check(&[&mm]);
        mm.munmap(VA, 16 * K4).unwrap();
    });
}

/// Extra references (a pin) make the migration fail with `Again`,
/// nothing changed; compaction's hook refuses PMD THPs.
fn pinned_and_hook<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 16 * K4, 31);
        let f = env.folio_at(&mm, VA).unwrap();
        let pin = f.get_ref();
        let d = dst(env, 4);
        assert_eq!(
            migrate_folio(&[&mm], &f.get_ref(), d, MigrateMode::Async),
            Err(MigrateError::Again)
        );
        drop(pin);
        let mms = [&mm];
        let hook = MmMigrator {
            mms: &mms,
            mode: MigrateMode::Async,
        };
        // The caller's reference (compaction's isolation one) is lent.
        let held = f.get_ref();
        hook.migrate_to(f, d).unwrap();
        drop(held);
        assert_eq!(env.folio_at(&mm, VA).unwrap(), d);
        assert_eq!(env.event(VmEvent::PgMigrateSuccess), 16);
        env.check_pages(&mm, VA, 16 * K4, 31);
        env.check(&[&mm]);
        mm.munmap(VA, 16 * K4).unwrap();
    });
}

/// `migrate_range` over a range split by mprotect in the middle of a 64K
/// folio: every folio moves once (the one split across the two VMAs is
/// met twice by the walk), whole, data intact, frames back to baseline.
fn migrate_range_moves_each_folio_once<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let len = 4 * 16 * K4;
        mm.mmap(VA, len, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, len, 41);
        let before: Vec<u64> = (0..4)
            .map(|k| env.folio_at(&mm, VA + k * 16 * K4).unwrap().pfn())
            .collect();
        // Two VMAs meeting inside the second folio (rights unchanged for
        // the data check: read-write both sides, only the flags differ).
        mm.mprotect(
            VA + 24 * K4,
            len - 24 * K4,
            RW.union(mm::abi::uapi::PROT_EXEC),
        )
        .unwrap();
        let (pages, failed) = mm::aspace::move_pages::migrate_range(&[&mm], VA, VA + len, None);
        assert_eq!((pages, failed), (64, 0));
        for k in 0..4 {
            let f = env.folio_at(&mm, VA + k * 16 * K4).unwrap();
            assert_eq!(f.order(), 4, "folio {k} kept its order");
            assert_ne!(f.pfn(), before[k as usize], "folio {k} moved");
        }
        assert_eq!(env.event(VmEvent::PgMigrateSuccess), 64);
        env.check_pages(&mm, VA, len, 41);
        env.check(&[&mm]);
        mm.munmap(VA, len).unwrap();
    });
}

/// A 4K folio mapped once in the only space passed takes the single-PTE
/// path (no rmap walk): its rollback after a failed copy, a fork while it
/// is unmapped (the child's entry stays on the source, the parent comes
/// back read-only on the destination), and a zap while it is unmapped
/// (nothing to restore, both folios freed) end as the walk's path does.
fn single_pte_path<A: PagingArch>() {
    struct ZapOne<'m, 'a, A: PagingArch>(&'m Mm<'a, A>);
    impl<A: PagingArch> MigrateHooks for ZapOne<'_, '_, A> {
        fn after_unmap(&self) {
            assert_eq!(self.0.migents(), 1);
            assert!(is_migration(self.0, VA));
            self.0.munmap(VA, K4).unwrap();
        }
    }
    run::<A>(32 * MIB, |env| {
        env.only_order(0);
        let mm = env.mm();
        mm.mmap(VA, 4 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 4 * K4, 23);
        // Rollback.
        let f = env.folio_at(&mm, VA + K4).unwrap();
        let d = dst(env, 0);
        let r = migrate_folio_hooked(&[&mm], &f.get_ref(), d, MigrateMode::Sync, &FailCopy);
        assert_eq!(r, Err(MigrateError::CopyFailed));
        d.put();
        let l = env.leaf(&mm, VA + K4).unwrap();
        assert_eq!(l.pfn, f.pfn());
        assert!(l.attrs.perms.write && f.page(0).is_anon_exclusive());
        assert_eq!(mm.migents(), 0);
        // Fork while unmapped.
        let d = dst(env, 0);
        let hook = ForkWhileUnmapped {
            mm: &mm,
            child: std::cell::RefCell::new(None),
        };
        migrate_folio_hooked(&[&mm], &f.get_ref(), d, MigrateMode::Sync, &hook).unwrap();
        let child = hook.child.into_inner().unwrap();
        let l = env.leaf(&mm, VA + K4).unwrap();
        assert_eq!(l.pfn, d.pfn());
        assert!(!l.attrs.perms.write, "WRITE became READ at fork");
        assert_eq!(child.migents(), 1);
        env.check(&[&mm, &child]);
        assert_eq!(env.read_u64(&child, VA + K4), 23 ^ (VA + K4));
        assert_eq!(env.leaf(&child, VA + K4).unwrap().pfn, f.pfn());
        drop(child);
        // Zap while unmapped.
        let free0 = env.buddy.stats().free;
        let g = env.folio_at(&mm, VA).unwrap();
        let d = dst(env, 0);
        migrate_folio_hooked(&[&mm], &g.get_ref(), d, MigrateMode::Sync, &ZapOne(&mm)).unwrap();
        assert_eq!(
            env.buddy.stats().free,
            free0 + 1,
            "source and destination freed"
        );
        assert_eq!(mm.migents(), 0);
        env.check_pages(&mm, VA + K4, 3 * K4, 23);
        env.check(&[&mm]);
        mm.munmap(VA, 4 * K4).unwrap();
    });
}

/// `migrate_pages` over more 4K folios than one batch holds, each mapped
/// once in the one space passed (the `move_pages` case): they go through
/// the batched unmap/copy/remap, all but a pinned one move (the pinned one
/// is left to the one-by-one path, which fails it after its retries), the
/// data is intact, every moved folio is on the LRU at its new frame, and
/// the free frames come back to what they were.
fn small_folios_batched<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(0);
        let mm = env.mm();
        let n = 200u64;
        mm.mmap(VA, n * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, n * K4, 57);
        let before: Vec<u64> = (0..n)
            .map(|i| env.folio_at(&mm, VA + i * K4).unwrap().pfn())
            .collect();
        let pinned = env.folio_at(&mm, VA + 70 * K4).unwrap();
        let pin = pinned.get_ref();
        let free0 = env.buddy.stats().free;
        let folios = (0..n)
            .map(|i| env.folio_at(&mm, VA + i * K4).unwrap().get_ref())
            .collect();
        env.tlb.take_log();
        let (ok, failed) = migrate_pages(
            &[&mm],
            folios,
            |o| env.buddy.alloc(o, AllocFlags::USER).ok(),
            MigrateReason::Syscall,
        );
        assert_eq!((ok, failed), (n - 1, 1));
        // The batch is what was taken: a gathered flush per 64 unmaps (and
        // the pinned one's rollback), not one per folio.  Checked once: with
        // batches of 1, 199 flushes.
        let flushes = env.tlb.flush_count();
        assert!(flushes <= 8, "{flushes} TLB flushes for {n} folios");
        assert_eq!(env.event(VmEvent::PgMigrateSuccess), n - 1);
        assert_eq!(env.event(VmEvent::PgMigrateFail), 1);
        for i in 0..n {
            let f = env.folio_at(&mm, VA + i * K4).unwrap();
            if i == 70 {
                assert_eq!(f.pfn(), before[i as usize], "the pinned folio stays");
            } else {
                assert_ne!(f.pfn(), before[i as usize], "folio {i} moved");
                assert!(f.test(PageFlags::LRU), "folio {i} on the LRU");
                let l = env.leaf(&mm, VA + i * K4).unwrap();
                assert!(l.attrs.perms.write, "exclusive pages stay writable");
            }
        }
        assert_eq!(mm.migents(), 0);
        assert_eq!(env.buddy.stats().free, free0, "sources freed");
        drop(pin);
        env.check_pages(&mm, VA, n * K4, 57);
        env.check(&[&mm]);
        mm.munmap(VA, n * K4).unwrap();
    });
}

both_formats!(
    small_folios_batched,
    migrate_range_moves_each_folio_once,
    orders_move_whole,
    fork_shared_both_remapped,
    rights_restored,
    copy_failure_rolls_back,
    pmd_fork_and_rollback,
    fault_waits_for_migration,
    mprotect_waits_for_migration,
    zap_during_migration,
    mremap_during_migration,
    fork_during_migration,
    mlocked_stays_mlocked,
    no_destination_splits,
    partially_mapped_split_first,
    pinned_and_hook,
    single_pte_path,
);
