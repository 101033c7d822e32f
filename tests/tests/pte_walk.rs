//! The range cursor (`PageTable::walk_range`) and `PteRun::folio_pte_batch`
//! over both real entry formats: holes, PMD leaves, PMD and PTE swap
//! entries, PROT_NONE leaves, contiguous blocks, and frames that are no
//! folio (the zero page).

mod common;

use common::*;
use mm::paging::{
    Attrs, BatchMatch, Entry, FolioSpan, Leaf, PMD_LEVEL, PTE_LEVEL, PUD_LEVEL, PageTable,
    PagingArch, Perms, Step, SwapEntry, level_index,
};

const VA: u64 = 0x7f00_0000_0000;

fn user_pt<A: PagingArch>(emu: &mm::emu::Emu) -> PageTable<'_, A> {
    PageTable::<A>::new(emu.env(), USER).unwrap()
}

/// Write `e` raw over the PTE leaf for `va`, found by the MMU model's walk.
fn store_pte<A: PagingArch>(emu: &mm::emu::Emu, pt: &PageTable<'_, A>, va: u64, e: Entry) {
    let (slot, l) = mm::emu::walk_leaf::<A>(&emu.mem, pt.root(), va).unwrap();
    assert_eq!(l.level, PTE_LEVEL);
    mm::physmem::phys::PhysMem::store(&emu.mem, slot, A::encode(e, PTE_LEVEL));
}

fn span(first_pfn: u64, nr: u64) -> FolioSpan {
    FolioSpan { first_pfn, nr }
}

fn swap_entry() -> SwapEntry {
    SwapEntry::swap(1, 0x1234, true).unwrap()
}

/// The steps of a walk, as (kind, start, end) for comparison.
fn steps<A: PagingArch>(
    pt: &PageTable<'_, A>,
    start: u64,
    end: u64,
) -> Vec<(&'static str, u64, u64)> {
    pt.walk_range(start, end)
        .map(|s| match s {
            Step::Hole { start, end, .. } => ("hole", start, end),
            Step::Leaf(h) => {
                assert_eq!(h.level, PMD_LEVEL);
                assert_eq!(h.base(), h.start);
                assert!(h.whole());
                ("pmd", h.start, h.end)
            }
            Step::NonPresent {
                start, end, level, ..
            } => {
                assert_eq!(level, PMD_LEVEL);
                ("pmd-swap", start, end)
            }
            Step::Ptes(r) => ("ptes", r.start(), r.end()),
        })
        .collect()
}

/// In address order: a PTE table (cut at the range start), a PMD leaf, a
/// PMD swap entry, an absent PMD, a PUD-level hole, and a PTE table cut
/// at the range end; the PTE runs read back what was stored, swap
/// entries and PROT_NONE leaves included.
fn cursor_steps<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    // Table 0: pages 500..512 of the first 2 MiB.
    pt.set_ptes(VA + 500 * 4096, DATA_PFN, 4, user_rw())
        .unwrap();
    let none = Attrs::user(Perms::NONE);
    pt.set_ptes(VA + 505 * 4096, DATA_PFN + 8, 1, none).unwrap();
    pt.set_ptes(VA + 510 * 4096, DATA_PFN + 9, 1, user_rw())
        .unwrap();
    store_pte::<A>(&emu, &pt, VA + 510 * 4096, Entry::Swap(swap_entry()));
    // A PMD leaf, then a PMD swap entry.
    let dep = mm::paging::PtAlloc::alloc_pt(&emu).unwrap();
    pt.set_pmd_leaf(VA + M2, DATA_PFN + 512, user_rw(), dep)
        .unwrap();
    let pmd_table = pt.ensure_table(VA + 2 * M2, PMD_LEVEL).unwrap();
    let slot = pmd_table + 8 * level_index(VA + 2 * M2, PMD_LEVEL) as u64;
    mm::physmem::phys::PhysMem::store(
        &emu.mem,
        slot,
        A::encode(Entry::Swap(swap_entry()), PMD_LEVEL),
    );
    // Nothing at VA + 3 MiB*2; the next 1 GiB has no PMD table at all.
    let g1 = 1u64 << 30;
    let far = VA + g1;
    pt.set_ptes(far + 3 * 4096, DATA_PFN + 1024, 2, user_rw())
        .unwrap();
    let start = VA + 500 * 4096;
    let end = far + 8 * 4096;
    let got = steps(&pt, start, end);
    assert_eq!(
        got,
        vec![
            ("ptes", start, VA + M2),
            ("pmd", VA + M2, VA + 2 * M2),
            ("pmd-swap", VA + 2 * M2, VA + 3 * M2),
            ("hole", VA + 3 * M2, VA + 4 * M2),
        ]
        .into_iter()
        .chain((4..512).map(|i| ("hole", VA + i * M2, VA + (i + 1) * M2)))
        .chain([("ptes", far, end)])
        .collect::<Vec<_>>()
    );
    // VA is 1 GiB aligned, so the PMD table covers exactly that gigabyte;
    // from `far` on it is a new PUD entry.
    assert_eq!(level_index(far, PUD_LEVEL), level_index(VA, PUD_LEVEL) + 1);
    let Some(Step::Ptes(r)) = pt.walk_range(start, VA + M2).next() else {
        panic!("no PTE run");
    };
    assert_eq!(r.len(), 12);
    assert_eq!(r.leaf(0).unwrap().pfn, DATA_PFN);
    assert_eq!(r.entry(4), Entry::Absent);
    let pn = r.leaf(5).unwrap();
    assert_eq!((pn.pfn, pn.attrs.perms), (DATA_PFN + 8, Perms::NONE));
    assert_eq!(r.entry(10), Entry::Swap(swap_entry()));
    assert!(r.leaf(10).is_none());
    // A hole above a missing PUD entry is one step for the whole 1 GiB.
    let far2 = VA + 5 * g1;
    let mut w = pt.walk_range(far2, far2 + 4096);
    let Some(Step::Hole { start, end, level }) = w.next() else {
        panic!("expected a hole");
    };
    assert_eq!((start, end, level), (far2, far2 + 4096, PUD_LEVEL));
    assert!(w.next().is_none());
    // `again` walks the last step once more (after a change).
    let mut w = pt.walk_range(VA + M2, VA + 2 * M2);
    assert!(matches!(w.next(), Some(Step::Leaf(_))));
    w.again();
    assert!(matches!(w.next(), Some(Step::Leaf(_))));
    assert!(w.next().is_none());
    // pte_run stops at the table end.
    let r = pt.pte_run(VA + 510 * 4096, 100).unwrap();
    assert_eq!((r.start(), r.len()), (VA + 510 * 4096, 2));
    assert!(pt.pte_run(VA + M2, 1).is_none());
}

/// A folio's run is one batch under every match mode; it stops at the
/// folio's end, at a frame that does not follow, at a swap entry and at
/// an absent entry, and (under `Attrs`) at changed rights.
fn batch_bounds<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    let pfn = DATA_PFN + 64;
    // Pages 0..32 map a 32-page folio; page 32 the next frame but another
    // folio; 40..44 the same frames as 0..4 again (not following).
    pt.set_ptes(VA, pfn, 33, user_rw()).unwrap();
    pt.set_ptes(VA + 40 * 4096, pfn + 4, 4, user_rw()).unwrap();
    let run = pt.pte_run(VA, 64).unwrap();
    let f = span(pfn, 32);
    for m in [
        BatchMatch::Frames,
        BatchMatch::Attrs,
        BatchMatch::AttrsButWrite,
    ] {
        let b = run.folio_pte_batch(0, f, m).unwrap();
        assert_eq!(b.nr, 32, "{m:?}");
        assert!(b.young && b.dirty && b.writable);
        assert_eq!(b.first.pfn, pfn);
        // From the middle, to the folio's end.
        assert_eq!(run.folio_pte_batch(20, f, m).unwrap().nr, 12);
        // A sub-run of the table: the run's end bounds it.
        assert_eq!(run.slice(0, 7).folio_pte_batch(3, f, m).unwrap().nr, 4);
    }
    assert_eq!(
        run.folio_pte_batch(40, span(pfn, 32), BatchMatch::Frames)
            .unwrap()
            .nr,
        4
    );
    assert!(run.folio_pte_batch(34, f, BatchMatch::Frames).is_none());
    // A swap entry ends a batch and starts none.
    store_pte::<A>(&emu, &pt, VA + 10 * 4096, Entry::Swap(swap_entry()));
    assert_eq!(
        run.folio_pte_batch(0, f, BatchMatch::Frames).unwrap().nr,
        10
    );
    assert!(run.folio_pte_batch(10, f, BatchMatch::Frames).is_none());
    assert_eq!(
        run.folio_pte_batch(11, f, BatchMatch::Frames).unwrap().nr,
        21
    );
}

/// Changed rights: `Attrs` stops, `AttrsButWrite` goes on and reports any
/// writable entry, `Frames` ignores rights.  PROT_NONE leaves batch with
/// each other, not with accessible ones.  Young and dirty never stop a
/// batch and are gathered over it.
fn batch_rights<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    let pfn = DATA_PFN + 128;
    let f = span(pfn, 8);
    let ro = Attrs {
        young: false,
        dirty: false,
        ..Attrs::user(Perms::USER_RO)
    };
    pt.set_ptes(VA, pfn, 3, ro).unwrap();
    pt.set_ptes(VA + 3 * 4096, pfn + 3, 1, user_rw()).unwrap();
    pt.set_ptes(VA + 4 * 4096, pfn + 4, 1, ro).unwrap();
    let run = pt.pte_run(VA, 8).unwrap();
    let b = run.folio_pte_batch(0, f, BatchMatch::Attrs).unwrap();
    assert_eq!(
        (b.nr, b.young, b.dirty, b.writable),
        (3, false, false, false)
    );
    let b = run
        .folio_pte_batch(0, f, BatchMatch::AttrsButWrite)
        .unwrap();
    assert_eq!((b.nr, b.young, b.dirty, b.writable), (5, true, true, true));
    assert_eq!(run.folio_pte_batch(0, f, BatchMatch::Frames).unwrap().nr, 5);
    // PROT_NONE.
    let mut pt = user_pt::<A>(&emu);
    let none = Attrs::user(Perms::NONE);
    pt.set_ptes(VA, pfn, 4, none).unwrap();
    pt.set_ptes(VA + 4 * 4096, pfn + 4, 4, user_rw()).unwrap();
    let run = pt.pte_run(VA, 8).unwrap();
    let b = run.folio_pte_batch(0, f, BatchMatch::Attrs).unwrap();
    assert_eq!((b.nr, b.writable), (4, false));
    assert_eq!(b.first.attrs.perms, Perms::NONE);
    assert_eq!(
        run.folio_pte_batch(0, f, BatchMatch::AttrsButWrite)
            .unwrap()
            .nr,
        4
    );
    assert_eq!(run.folio_pte_batch(0, f, BatchMatch::Frames).unwrap().nr, 8);
}

/// The zero page is no folio: with its one-frame span every entry mapping
/// it is a batch of its own, even where the next entry maps it too.
fn batch_zero_page<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    let zero = DATA_PFN + 7;
    let attrs = Attrs {
        special: true,
        ..Attrs::user(Perms::USER_RO)
    };
    for i in 0..4 {
        pt.set_ptes(VA + i * 4096, zero, 1, attrs).unwrap();
    }
    // The frame after the zero page's, right after it.
    pt.set_ptes(VA + 4 * 4096, zero + 1, 1, attrs).unwrap();
    let run = pt.pte_run(VA, 8).unwrap();
    for i in 0..4 {
        let b = run
            .folio_pte_batch(i, span(zero, 1), BatchMatch::Attrs)
            .unwrap();
        assert_eq!((b.nr, b.first.pfn), (1, zero));
    }
    assert_eq!(
        run.folio_pte_batch(3, span(zero, 1), BatchMatch::Frames)
            .unwrap()
            .nr,
        1
    );
}

/// Contiguous blocks (arm64 folds them; on x86 the same entries are plain):
/// a batch over a 64-page folio covers its four blocks, and young/dirty
/// recorded in a block entry outside the batch count for it.
fn batch_contpte<A: PagingArch>() {
    let emu = emu();
    let mut pt = user_pt::<A>(&emu);
    let pfn = DATA_PFN + 256;
    let clean = Attrs {
        young: false,
        dirty: false,
        ..user_rw()
    };
    pt.set_ptes(VA, pfn, 64, clean).unwrap();
    let cp = A::CONT_PTES as u64;
    assert_eq!(cont_count(&pt, VA, 64), if cp > 1 { 64 } else { 0 });
    let f = span(pfn, 64);
    let run = pt.pte_run(VA, 64).unwrap();
    let b = run.folio_pte_batch(0, f, BatchMatch::Attrs).unwrap();
    assert_eq!((b.nr, b.young, b.dirty), (64, false, false));
    // The MMU recorded an access in entry 1 and a write in entry 30 (of
    // blocks 0 and 1 on arm64).
    for (i, young, dirty) in [(1u64, true, false), (30, false, true)] {
        let l = pt.read_pte(VA + i * 4096).unwrap().leaf().unwrap();
        let mut a = l.attrs;
        a.young |= young;
        a.dirty |= dirty;
        store_pte::<A>(
            &emu,
            &pt,
            VA + i * 4096,
            Entry::Leaf(Leaf { attrs: a, ..l }),
        );
    }
    // A batch of entries 4..8 (inside block 0) sees block 0's young on arm64.
    let b = run
        .slice(4, 8)
        .folio_pte_batch(0, f, BatchMatch::Attrs)
        .unwrap();
    assert_eq!(b.nr, 4);
    assert_eq!((b.young, b.dirty), (cp > 1, false));
    // Entries 17..20 end inside block 1, whose entry 30 is dirty.
    let b = run
        .slice(17, 20)
        .folio_pte_batch(0, f, BatchMatch::Attrs)
        .unwrap();
    assert_eq!((b.nr, b.young, b.dirty), (3, false, cp > 1));
    // The whole run sees both everywhere.
    let b = run.folio_pte_batch(0, f, BatchMatch::Attrs).unwrap();
    assert_eq!((b.nr, b.young, b.dirty), (64, true, true));
    // Blocks 2 and 3 alone: neither.
    let b = run.folio_pte_batch(32, f, BatchMatch::Attrs).unwrap();
    assert_eq!((b.nr, b.young, b.dirty), (32, false, false));
    // A wrprotected block: under Attrs a block's batch ends at its edge.
    let mut g = pt.gather();
    pt.wrprotect_ptes(VA + 16 * 4096, 16, &mut g);
    g.finish();
    let run = pt.pte_run(VA, 64).unwrap();
    assert_eq!(run.folio_pte_batch(0, f, BatchMatch::Attrs).unwrap().nr, 16);
    assert_eq!(
        run.folio_pte_batch(16, f, BatchMatch::Attrs).unwrap().nr,
        16
    );
    assert_eq!(
        run.folio_pte_batch(0, f, BatchMatch::AttrsButWrite)
            .unwrap()
            .nr,
        64
    );
    assert_eq!(cont_count(&pt, VA, 64), if cp > 1 { 64 } else { 0 });
}

both!(
    cursor_steps,
    batch_bounds,
    batch_rights,
    batch_zero_page,
    batch_contpte
);
