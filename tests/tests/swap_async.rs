//! Asynchronous swap writeback (`MADV_PAGEOUT` does not wait for the
//! disk, as Linux): a swap device whose writes complete only when the test
//! says so, to cover the window while a write is in flight — a fault on
//! the folio, munmap, swapoff, and an I/O error at completion.

mod mmtest;

use std::sync::atomic::Ordering;

use mm::aspace::Access;
use mm::paging::{Entry, PagingArch};
use mm::physmem::frame_flags::PageFlags;
use mm::thp::{MthpStat, VmEvent};
use mmtest::swapdisk::MemDisk;
use mmtest::*;

/// A disk whose asynchronous writes stay in flight until [`complete`].
fn swapon<A: PagingArch>(env: &Env<'_, A>, slots: u64) -> &'static MemDisk {
    mmtest::swapdisk::swapon(env, slots, true)
}

/// Completes every write in flight (`fail`: with an error); how many.
fn complete<A: PagingArch>(env: &Env<'_, A>, disk: &MemDisk) -> usize {
    disk.complete(env)
}

fn is_swap_entry<A: PagingArch>(mm: &mm::aspace::Mm<'_, A>, va: u64) -> bool {
    mm.with_page_table(|pt| matches!(pt.lookup(va).entry, Entry::Swap(_)))
}

/// A space with `len` bytes of anonymous memory at a fixed address,
/// every page written with `tag`.
fn filled<'a, A: PagingArch>(env: &Env<'a, A>, len: u64, tag: u64) -> (mm::aspace::Mm<'a, A>, u64) {
    let mm = env.mm();
    let va = mm
        .mmap(0x7000_0000_0000, len, RW, ANON | MAP_FIXED)
        .unwrap();
    env.fill_pages(&mm, va, len, tag);
    (mm, va)
}

/// MADV_PAGEOUT returns with the writes in flight: the folios are
/// unmapped, locked in the swap cache, counted at submission.  The
/// completion leaves them clean in the swap cache (as Linux); the next
/// reclaim pass frees them without writing again, and the data then
/// comes back from the disk.
fn pageout_does_not_wait<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let disk = swapon(env, 4096);
        let mm = env.mm();
        let len = 64 * K4;
        let va = mm
            .mmap(0x7000_0000_0000, len, RW, ANON | MAP_FIXED)
            .unwrap();
        env.fill_pages(&mm, va, len, 0x41);
        let f = env.folio_at(&mm, va).unwrap();
        let free0 = env.buddy.stats().free;
        mm.madvise(va, len, MADV_PAGEOUT).unwrap();
        assert_eq!(disk.in_flight(), 4, "four writes in flight");
        assert_eq!(env.event(VmEvent::PswpOut), 64, "counted at submission");
        assert_eq!(env.mthp(4, MthpStat::Swpout), 4);
        assert_eq!(mm.swapents(), 64);
        assert!(f.test(PageFlags::LOCKED) && f.test(PageFlags::SWAPCACHE));
        assert_eq!(env.ctx.swap.cache.pages(), 64);
        assert_eq!(env.ctx.swap.writeback_pages(), 64, "Writeback:");
        assert_eq!(env.buddy.stats().free, free0, "held by the I/O");
        assert_eq!(complete(env, disk), 4);
        assert_eq!(env.ctx.swap.writeback_pages(), 0);
        assert!(!f.test(PageFlags::LOCKED) && !f.test(PageFlags::DIRTY));
        assert_eq!(env.ctx.swap.cache.pages(), 64, "kept, clean, in the cache");
        assert_eq!(env.buddy.stats().free, free0);
        let st = env
            .ctx
            .shrink_node(&[&mm], 64, mm::aspace::vmscan::Reclaimer::Direct);
        assert_eq!(st.reclaimed, 64);
        assert_eq!(env.event(VmEvent::PswpOut), 64, "not written again");
        env.ctx.lru_drain();
        assert_eq!(env.buddy.stats().free, free0 + 64, "freed by reclaim");
        assert_eq!(env.ctx.swap.cache.pages(), 0);
        env.check(&[&mm]);
        env.check_pages(&mm, va, len, 0x41);
        assert_eq!(env.event(VmEvent::PswpIn), 64);
        mm.munmap(va, len).unwrap();
        assert_eq!(env.ctx.swap.totals().1, env.ctx.swap.totals().0);
    });
}

/// A fault on a folio under writeback waits for the write and maps the
/// folio back from the swap cache without reading it; written data is
/// never lost.
fn fault_during_writeback<A: PagingArch + Sync>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let disk = swapon(env, 4096);
        let (mm, va) = filled(env, K64, 0x52);
        mm.madvise(va, K64, MADV_PAGEOUT).unwrap();
        assert!(is_swap_entry(&mm, va));
        std::thread::scope(|s| {
            let t = s.spawn(|| mm.handle_fault(va + 3 * K4, Access::Write));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!t.is_finished(), "the fault waits for the write");
            assert_eq!(complete(env, disk), 1);
            assert!(t.join().unwrap().is_ok());
        });
        assert_eq!(env.event(VmEvent::PswpIn), 0, "no read: from the cache");
        env.write_u64(&mm, va + 3 * K4, 0xfeed);
        assert_eq!(env.read_u64(&mm, va + 3 * K4), 0xfeed);
        for p in (0..16).filter(|&p| p != 3) {
            assert_eq!(env.read_u64(&mm, va + p * K4), 0x52 ^ (va + p * K4));
        }
        env.check(&[&mm]);
        mm.munmap(va, K64).unwrap();
        assert_eq!(env.ctx.swap.cache.pages(), 0);
        assert_eq!(env.ctx.swap.totals().1, env.ctx.swap.totals().0);
    });
}

/// A fault after the write completed maps the clean folio back whole
/// from the swap cache, with no read (Linux's swap-cache hit right after
/// `MADV_PAGEOUT`), and its slots are freed.
fn fault_after_writeback_hits_cache<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let disk = swapon(env, 4096);
        let (mm, va) = filled(env, K64, 0x74);
        let f = env.folio_at(&mm, va).unwrap();
        mm.madvise(va, K64, MADV_PAGEOUT).unwrap();
        assert_eq!(complete(env, disk), 1);
        assert_eq!(env.ctx.swap.totals().0 - env.ctx.swap.totals().1, 16);
        env.touch(&mm, va + 5 * K4, Access::Read).unwrap();
        assert_eq!(env.event(VmEvent::PswpIn), 0, "no read: from the cache");
        assert_eq!(env.folio_at(&mm, va).map(|g| g.pfn()), Some(f.pfn()));
        assert_eq!(mm.swapents(), 0, "mapped back whole");
        assert_eq!(env.ctx.swap.cache.pages(), 0);
        assert_eq!(env.ctx.swap.totals().1, env.ctx.swap.totals().0);
        env.check_pages(&mm, va, K64, 0x74);
        env.check(&[&mm]);
        mm.munmap(va, K64).unwrap();
    });
}

/// munmap while the write is in flight: the I/O's reference keeps the
/// pages until the completion, which then frees the folio and its slots.
fn munmap_during_writeback<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let disk = swapon(env, 4096);
        let (mm, va) = filled(env, K64, 0x63);
        let f = env.folio_at(&mm, va).unwrap();
        mm.madvise(va, K64, MADV_PAGEOUT).unwrap();
        mm.munmap(va, K64).unwrap();
        assert_eq!(mm.swapents(), 0);
        assert!(
            f.refcount() > 0 && f.test(PageFlags::LOCKED),
            "held by the I/O"
        );
        let free0 = env.buddy.stats().free;
        assert_eq!(complete(env, disk), 1);
        assert_eq!(env.buddy.stats().free, free0 + 16, "freed at completion");
        assert_eq!(env.ctx.swap.cache.pages(), 0);
        assert_eq!(env.ctx.swap.totals().1, env.ctx.swap.totals().0);
    });
}

/// swapoff while a write is in flight: the cache cannot be drained until
/// the write completes; then everything is back and the area empties.
fn swapoff_during_writeback<A: PagingArch + Sync>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let disk = swapon(env, 4096);
        let (mm, va) = filled(env, 2 * K64, 0x74);
        mm.madvise(va, 2 * K64, MADV_PAGEOUT).unwrap();
        let area = env.ctx.swap.area(0).unwrap();
        area.closing.store(true, Ordering::Release);
        std::thread::scope(|s| {
            let t = s.spawn(|| mm.swapoff_unuse(0));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!t.is_finished(), "swapoff waits for the writes");
            assert_eq!(complete(env, disk), 2);
            assert!(t.join().unwrap().is_ok());
        });
        assert_eq!(mm.swapents(), 0);
        assert!(env.ctx.swapoff_drain_cache(0));
        assert!(env.ctx.swap.deactivate(0).is_some());
        env.check_pages(&mm, va, 2 * K64, 0x74);
        env.check(&[&mm]);
        mm.munmap(va, 2 * K64).unwrap();
    });
}

/// An I/O error at completion keeps the folio dirty in the swap cache:
/// the fault brings it back from memory, the data intact.
fn write_error_at_completion<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let disk = swapon(env, 4096);
        let (mm, va) = filled(env, K64, 0x85);
        let f = env.folio_at(&mm, va).unwrap();
        mm.madvise(va, K64, MADV_PAGEOUT).unwrap();
        disk.fail.store(true, Ordering::Relaxed);
        assert_eq!(complete(env, disk), 1);
        disk.fail.store(false, Ordering::Relaxed);
        assert!(f.test(PageFlags::SWAPCACHE) && f.test(PageFlags::DIRTY));
        assert!(!f.test(PageFlags::LOCKED));
        assert!(is_swap_entry(&mm, va));
        env.touch(&mm, va, Access::Read).unwrap();
        assert_eq!(env.event(VmEvent::PswpIn), 0, "from memory, not the disk");
        env.check_pages(&mm, va, K64, 0x85);
        env.check(&[&mm]);
        mm.munmap(va, K64).unwrap();
        assert_eq!(env.ctx.swap.cache.pages(), 0);
        assert_eq!(env.ctx.swap.totals().1, env.ctx.swap.totals().0);
    });
}

both_formats!(
    pageout_does_not_wait,
    fault_during_writeback,
    fault_after_writeback_hits_cache,
    munmap_during_writeback,
    swapoff_during_writeback,
    write_error_at_completion,
);
