//! The fault path's side of compaction, over both entry formats: after
//! memory is fragmented so no 64K block is free, a 64K fault asks the
//! context's compaction hook for exactly what the THP `defrag` mode and
//! `MADV_HUGEPAGE` say (Linux's `vma_thp_gfp_mask`, notes 5.6), counts
//! `compact_stall` / `compact_fail` only after a direct compaction that
//! ran, and falls back to 4K.  Under the default `madvise` a plain VMA
//! gets no compaction and no wake-up at all (trap 15).  The scanners
//! themselves are tested in `mm`'s `physmem::compaction` unit tests.

mod mmtest;

use std::cell::RefCell;

use mm::aspace::Access;
use mm::paging::PagingArch;
use mm::physmem::buddy::AllocFlags;
use mm::physmem::compaction::CompactRequest;
use mm::physmem::folio::FolioRef;
use mm::thp::{DefragMode, MthpStat, VmEvent};
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;

thread_local! {
    /// The hook's calls on this test's thread.
    static CALLS: RefCell<Vec<(u32, CompactRequest)>> = const { RefCell::new(Vec::new()) };
}

/// The test hook: records the request; a direct compaction "runs"
/// (returns true) without freeing anything.
fn hook(order: u32, req: CompactRequest) -> bool {
    CALLS.with(|c| c.borrow_mut().push((order, req)));
    matches!(req, CompactRequest::Direct { .. })
}

static HOOK: fn(u32, CompactRequest) -> bool = hook;

fn defrag_table<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.ctx.set_compact_hook(&HOOK);
        env.only_order(4);
        // Take all memory as 4K folios and give back every other one:
        // plenty free, nothing of 8K or more.
        let mut all = Vec::new();
        while let Ok(f) = env.buddy.alloc(0, AllocFlags::USER) {
            all.push(FolioRef::from_raw(f));
        }
        all.retain(|f| f.pfn() % 2 == 0);
        env.buddy.drain_all();
        use CompactRequest::{Direct, Wake};
        let cases = [
            (DefragMode::Madvise, false, None),
            (DefragMode::Madvise, true, Some(Direct { retry: true })),
            (DefragMode::Always, false, Some(Direct { retry: false })),
            (DefragMode::Always, true, Some(Direct { retry: true })),
            (DefragMode::Defer, true, Some(Wake)),
            (DefragMode::DeferMadvise, false, Some(Wake)),
            (DefragMode::DeferMadvise, true, Some(Direct { retry: true })),
            (DefragMode::Never, true, None),
        ];
        for (i, (mode, madvised, want)) in cases.into_iter().enumerate() {
            env.thp.config.set_defrag(mode);
            let mm = env.mm();
            let va = VA + i as u64 * M2;
            mm.mmap(va, K64, RW, ANON | MAP_FIXED).unwrap();
            if madvised {
                mm.madvise(va, K64, MADV_HUGEPAGE).unwrap();
            }
            CALLS.with(|c| c.borrow_mut().clear());
            let (stall, fail, success) = (
                env.event(VmEvent::CompactStall),
                env.event(VmEvent::CompactFail),
                env.event(VmEvent::CompactSuccess),
            );
            let fallback = env.mthp(4, MthpStat::AnonFaultFallback);
            env.touch(&mm, va, Access::Write).unwrap();
            let calls = CALLS.with(|c| c.borrow().clone());
            assert_eq!(
                calls,
                want.map(|r| (4, r)).into_iter().collect::<Vec<_>>(),
                "{mode:?} madvised {madvised}"
            );
            let direct = matches!(want, Some(Direct { .. }));
            assert_eq!(
                env.event(VmEvent::CompactStall) - stall,
                direct as u64,
                "{mode:?}"
            );
            assert_eq!(
                env.event(VmEvent::CompactFail) - fail,
                direct as u64,
                "{mode:?}"
            );
            assert_eq!(env.event(VmEvent::CompactSuccess), success);
            assert_eq!(env.mthp(4, MthpStat::AnonFaultFallback) - fallback, 1);
            assert_eq!(env.folio_at(&mm, va).unwrap().order(), 0);
            env.check(&[&mm]);
        }
        drop(all);
    });
}

/// `MADV_COLLAPSE` whose PMD-order allocation fails compacts directly
/// (Linux's `GFP_TRANSHUGE`, whatever `defrag` says), then gives up.
fn madv_collapse_compacts<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.ctx.set_compact_hook(&HOOK);
        env.no_thp();
        env.thp.config.set_defrag(DefragMode::Never);
        let mm = env.mm();
        mm.mmap(VA, M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 16 * K4, 5);
        let mut all = Vec::new();
        while let Ok(f) = env.buddy.alloc(0, AllocFlags::USER) {
            all.push(FolioRef::from_raw(f));
        }
        all.retain(|f| f.pfn() % 2 == 0);
        env.buddy.drain_all();
        CALLS.with(|c| c.borrow_mut().clear());
        let stall = env.event(VmEvent::CompactStall);
        assert!(mm.madvise(VA, M2, MADV_COLLAPSE).is_err());
        let calls = CALLS.with(|c| c.borrow().clone());
        assert_eq!(calls, [(9, CompactRequest::Direct { retry: true })]);
        assert_eq!(env.event(VmEvent::CompactStall) - stall, 1);
        env.check_pages(&mm, VA, 16 * K4, 5);
        env.check(&[&mm]);
        drop(all);
    });
}

both_formats!(defrag_table, madv_collapse_compacts);
