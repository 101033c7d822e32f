//! Taking a folio out of every page table that maps it and putting it
//! back: the two halves of anything that must change a folio while nobody
//! can reach it (split today; migration and reclaim later).
//!
//! [`try_to_unmap`] clears every mapping found by an [`RmapWalk`] and
//! remembers each entry's attributes; [`restore_mappings`] writes them back
//! for whatever folios the pages belong to by then.  In between, the
//! page-table locks the walk holds keep anyone from faulting the range back
//! in: the role Linux's migration entries play.

use alloc::vec::Vec;

use crate::addr::PAGE_SIZE;
use crate::aspace::Mm;
use crate::aspace::ctx::MmCtx;
use crate::paging::{
    Attrs, BatchMatch, Entry, FolioSpan, Leaf, PMD_LEVEL, PTE_LEVEL, PageTable, PagingArch, PteRun,
    Step, SwapEntry, TlbGather,
};
use crate::physmem::folio::Folio;
use crate::thp::VmEvent;

use super::RmapWalk;

/// One PTE mapping of a folio, cleared by [`try_to_unmap`] and to be
/// written back by [`restore_mappings`].
#[derive(Clone, Copy)]
pub(crate) struct SavedPte {
    /// Index into the walk's address spaces.
    pub(crate) mm: usize,
    /// Page index in the folio.
    pub(crate) page: u64,
    pub(crate) attrs: Attrs,
}

/// Where [`clear_folio_ptes`] cleared a run: entry `i` of `run`, the PTE
/// table it lies in (still hooked in under the same lock hold).
struct RunAt<'r, 'a, A: PagingArch> {
    run: &'r PteRun<'a, A>,
    i: usize,
}

impl<A: PagingArch> RunAt<'_, '_, A> {
    fn va(&self) -> u64 {
        self.run.va(self.i)
    }
}

/// The one walk both unmaps share: in every space of `walk`, a PMD
/// mapping of `folio` is split into PTEs first (its deposit makes that
/// infallible), then each run of PTEs mapping consecutive pages of the
/// folio in place is cleared with one `get_and_clear_ptes`, and `on_run`
/// gets (space index, space, its table, the run's address, its first page
/// in the folio, the entries' attributes before the clear with the
/// young/dirty bits of the cleared block ORed in).  One gathered flush per
/// space, after all its runs — except in the space `deferred` names (its
/// id), whose cleared entries go to that gather for the caller to flush.
/// Returns the entries cleared.
fn clear_folio_ptes<'a, A: PagingArch>(
    walk: &mut RmapWalk<'_, 'a, A>,
    folio: Folio<'a>,
    mut deferred: Option<(u64, &mut TlbGather<'a>)>,
    mut on_run: impl FnMut(usize, &Mm<'a, A>, &mut PageTable<'a, A>, RunAt<'_, 'a, A>, u64, &[Attrs]),
) -> u32 {
    let va = walk.va;
    let nr = folio.nr_pages();
    let span = FolioSpan {
        first_pfn: folio.pfn(),
        nr,
    };
    let mut cleared = 0;
    // The run's attributes: on the stack up to a 64K folio's 16 entries
    // (no heap allocation per folio on the swap-out path), else on the heap.
    let mut small = [Attrs::default(); 16];
    let mut big: Vec<Attrs> = Vec::new();
    for (k, (m, pt)) in walk.mappers.iter().zip(walk.guards.iter_mut()).enumerate() {
        // Table by table: a folio moved by mremap to an address that is not
        // a multiple of its size may straddle two PTE tables.
        let mut local = None;
        let g: &mut TlbGather<'a> = match deferred.as_mut() {
            Some((id, g)) if *id == m.id() => g,
            _ => local.insert(pt.gather()),
        };
        let mut steps = pt.walk_range(va, va + nr * PAGE_SIZE);
        let mut split = false;
        while let Some(step) = steps.next() {
            let run = match step {
                // The folio mapped by a PMD at `va`: into PTEs first, then
                // the same step again, as its PTE table.
                Step::Leaf(h) if h.level == PMD_LEVEL && h.start == va && !split => {
                    m.split_pmd_locked(pt, va);
                    split = true;
                    steps.again();
                    continue;
                }
                Step::Ptes(run) => run,
                _ => continue,
            };
            let mut i = 0;
            while i < run.len() {
                let page = (run.va(i) - va) / PAGE_SIZE;
                let Some(l) = run.leaf(i).filter(|l| l.pfn == folio.pfn() + page) else {
                    i += 1;
                    continue;
                };
                // A one-page folio's batch is its one entry (it is in no
                // contiguous block: those map 16 pages of one folio).
                let b_nr = if nr == 1 {
                    1
                } else {
                    match run.folio_pte_batch(i, span, BatchMatch::Frames) {
                        Some(b) => b.nr,
                        None => {
                            i += 1;
                            continue;
                        }
                    }
                };
                let attrs: &mut [Attrs] = if b_nr <= small.len() {
                    &mut small[..b_nr]
                } else {
                    big.resize(b_nr, Attrs::default());
                    &mut big[..]
                };
                attrs[0] = l.attrs;
                for (j, a) in attrs.iter_mut().enumerate().skip(1) {
                    *a = run.leaf(i + j).expect("in the batch").attrs;
                }
                let r = pt.get_and_clear_ptes_in_run(&run, i, b_nr, g);
                // A contiguous block records young/dirty once for all entries.
                for a in attrs.iter_mut() {
                    a.young |= r.young;
                    a.dirty |= r.dirty;
                }
                on_run(k, m, pt, RunAt { run: &run, i }, page, attrs);
                cleared += b_nr as u32;
                i += b_nr;
            }
        }
        if let Some(g) = local {
            g.finish();
        }
    }
    cleared
}

/// Clears every mapping of `folio` in the walk's address spaces
/// ([`clear_folio_ptes`]), then drops the mappings' large mapcount and
/// references; the caller's own reference keeps the folio alive.  Returns
/// the cleared entries in address order per space.
///
/// Nothing here fails: the walk already proved it holds every mapping.
pub(crate) fn try_to_unmap<'a, A: PagingArch>(
    walk: &mut RmapWalk<'_, 'a, A>,
    folio: Folio<'a>,
) -> Vec<SavedPte> {
    let mut saved: Vec<SavedPte> = Vec::new();
    let maps = clear_folio_ptes(walk, folio, None, |k, m, _, _, page, attrs| {
        folio.add_mapcount_mm(m.id, -(attrs.len() as i32));
        saved.extend(attrs.iter().enumerate().map(|(j, &a)| SavedPte {
            mm: k,
            page: page + j as u64,
            attrs: a,
        }));
    });
    // Unmapped everywhere (the mapcounts dropped run by run, each from its
    // space's owner slot): drop the mappings' references (the caller's one
    // keeps it alive).
    if maps > 0 {
        folio.put_many(maps);
    }
    saved
}

/// Replaces every mapping of `folio` (in the swap cache at slots `slot..`
/// of area `ty`) by swap entries, as Linux's `try_to_unmap_one` for an
/// anonymous folio being reclaimed: the PTEs are cleared as for
/// [`try_to_unmap`] (PMD mappings split into PTEs, the folio itself stays
/// whole), each becomes the swap entry of its page, exclusive when the
/// page was anon-exclusive (the page then stops being so), and each entry
/// takes a reference on its slot.  RSS moves to the swap-entry count; the
/// mappings' references and large mapcount are dropped.  Returns whether
/// any cleared entry (or contiguous block) was dirty.  With `deferred`
/// (a space id and a gather of that space's), the flush of that space's
/// cleared entries is left to the caller (see [`clear_folio_ptes`]).
pub(crate) fn try_to_unmap_swap<'a, A: PagingArch>(
    walk: &mut RmapWalk<'_, 'a, A>,
    folio: Folio<'a>,
    ty: u8,
    slot: u64,
    map: &crate::swap::SwapMap,
    deferred: Option<(u64, &mut TlbGather<'a>)>,
) -> bool {
    let mut dirty = false;
    let entries = clear_folio_ptes(walk, folio, deferred, |_, m, pt, at, page, attrs| {
        let n = attrs.len();
        dirty |= attrs.iter().any(|a| a.dirty);
        let excl = |k: usize| folio.page(page + k as u64).is_anon_exclusive();
        // Into the entries just cleared, through the run the walk reached.
        pt.set_swap_entries_in_run(at.run, at.i, n, |k| {
            SwapEntry::swap(ty, slot + page + k as u64, excl(k))
                .expect("a swap slot fits a swap entry")
        });
        for k in 0..n as u64 {
            folio.page(page + k).clear_anon_exclusive();
        }
        map.dup_many(slot + page, n as u64);
        folio.add_mapcount_mm(m.id, -(n as i32));
        m.rss_sub(n as u64);
        m.swapents_add(n as u64);
    });
    if entries > 0 {
        folio.put_many(entries);
    }
    dirty
}

/// The run of `saved` entries from `i` that one `set_ptes` can write
/// back: same space, consecutive pages, the same foldable attributes, and
/// `more(entry)` true for each after the first, at most `max` entries.
/// Returns its end and the
/// attributes with the run's young and dirty bits ORed in.
fn saved_run(
    saved: &[SavedPte],
    i: usize,
    max: usize,
    more: impl Fn(&SavedPte) -> bool,
) -> (usize, Attrs) {
    let s0 = saved[i];
    let key = s0.attrs.fold_key();
    let mut attrs = s0.attrs;
    let mut j = i + 1;
    while let Some(s) = saved.get(j).filter(|_| j - i < max) {
        if s.mm != s0.mm
            || s.page != s0.page + (j - i) as u64
            || s.attrs.fold_key() != key
            || !more(s)
        {
            break;
        }
        attrs.young |= s.attrs.young;
        attrs.dirty |= s.attrs.dirty;
        j += 1;
    }
    (j, attrs)
}

/// Writes back the entries [`try_to_unmap`] cleared, for the folio each
/// page belongs to now (`folio_of(page)`, `page` counted from `first_pfn`,
/// the old folio's first frame), one `set_ptes` per run of consecutive
/// pages of one folio with the same attributes, taking a reference and a
/// large mapcount per entry.  So after a split, arm64 sub-folios of 64 KiB
/// or more come back contpte-mapped and smaller ones as plain PTEs.
///
/// With `zero_remap` (anonymous splits down to order 0, as Linux's
/// `remap_page` with `RMP_USE_SHARED_ZEROPAGE`), an order-0 folio whose
/// page is entirely zero is mapped to the shared zero page instead and
/// loses its anon-exclusive bit and its RSS, so it is freed when the
/// caller drops its reference.
pub(crate) fn restore_mappings<'a, A: PagingArch>(
    ctx: &MmCtx<'a>,
    walk: &mut RmapWalk<'_, 'a, A>,
    saved: &[SavedPte],
    first_pfn: u64,
    folio_of: impl Fn(u64) -> Folio<'a>,
    zero_remap: bool,
) {
    let va = walk.va;
    let stats = &ctx.thp.stats;
    let zero_pfn = ctx.zero_pfn();
    let mut i = 0;
    while i < saved.len() {
        let s0 = saved[i];
        let sub = folio_of(s0.page);
        let (m, pt) = (walk.mappers[s0.mm], &mut walk.guards[s0.mm]);
        let at_va = va + s0.page * PAGE_SIZE;
        if zero_remap && sub.order() == 0 && ctx.mem.is_zero(sub.pa(), PAGE_SIZE) {
            let mut a = crate::aspace::fault::zero_attrs_for(s0.attrs.perms);
            a.young = s0.attrs.young;
            pt.set_ptes(at_va, zero_pfn, 1, a)
                .expect("entry cleared above in an existing table");
            sub.page(0).clear_anon_exclusive();
            m.rss_sub(1);
            stats.count(VmEvent::ZeroPageMap);
            i += 1;
            continue;
        }
        let (j, attrs) = saved_run(saved, i, usize::MAX, |s| folio_of(s.page) == sub);
        let n = (j - i) as u32;
        sub.get_many(n);
        sub.add_mapcount_mm(m.id, n as i32);
        pt.set_ptes(at_va, first_pfn + s0.page, n as usize, attrs)
            .expect("entries cleared above in an existing table");
        i = j;
    }
}

/// Replaces every mapping of `folio` in the walk's spaces by a migration
/// entry (Linux's `try_to_migrate`): the PTEs are cleared as for
/// [`try_to_unmap`] (a PMD mapping is split into PTEs first, the folio
/// stays whole) and each becomes a migration entry naming its page,
/// `WRITE` if the PTE was writable, else `READ_EXCLUSIVE` if the page was
/// anon-exclusive, else `READ`; the page's anon-exclusive bit moves into
/// the entry.  Unlike a swap entry, a migration entry keeps its mapping's
/// folio reference, large mapcount and RSS: it still counts as a mapping
/// of the page it names, so a zap of it meanwhile just unmaps that page
/// (see `aspace::migrate`).  Returns the cleared entries in address order
/// per space, with their attributes for [`remove_migration_ptes`], and
/// for each space of the walk whether it mapped the folio with a PMD.
pub(crate) fn try_to_migrate<'a, A: PagingArch>(
    walk: &mut RmapWalk<'_, 'a, A>,
    folio: Folio<'a>,
) -> (Vec<SavedPte>, Vec<bool>) {
    let va = walk.va;
    let pmd: Vec<bool> = walk
        .guards
        .iter()
        .map(|pt| {
            let w = pt.lookup(va);
            w.level == PMD_LEVEL && w.entry.leaf().is_some_and(|l| l.pfn == folio.pfn())
        })
        .collect();
    let mut saved: Vec<SavedPte> = Vec::with_capacity(folio.nr_pages() as usize);
    // A PMD mapping becomes its deposited table filled with the 512
    // migration entries at once, with no PTE leaves in between (what
    // `split_pmd_locked` and the run loop below would write and clear).
    for (k, (m, pt)) in walk.mappers.iter().zip(walk.guards.iter_mut()).enumerate() {
        if !pmd[k] {
            continue;
        }
        m.ctx.rmap_split_pmd(folio, m.id);
        let old = pt
            .split_pmd_with(va, |old, i| {
                let p = folio.page(i);
                let e = SwapEntry::migration(p.pfn(), old.attrs.perms.write, p.is_anon_exclusive())
                    .expect("a frame number fits a migration entry");
                Entry::Swap(e)
            })
            .expect("a PMD leaf of the folio, found above under the lock, has a deposit");
        m.ctx.thp.stats.count(VmEvent::ThpSplitPmd);
        for p in folio.pages() {
            p.clear_anon_exclusive();
        }
        saved.extend((0..folio.nr_pages()).map(|page| SavedPte {
            mm: k,
            page,
            attrs: old.attrs,
        }));
        m.migents_add(folio.nr_pages());
    }
    clear_folio_ptes(walk, folio, None, |k, m, pt, at, page, attrs| {
        set_migration_run(m, pt, at.va(), folio, page, attrs);
        saved.extend(attrs.iter().enumerate().map(|(j, &a)| SavedPte {
            mm: k,
            page: page + j as u64,
            attrs: a,
        }));
    });
    (saved, pmd)
}

/// The migration entries for a run of `attrs.len()` pages of `folio` from
/// `page`, at `at` in `m`'s table `pt`, whose PTEs were just cleared: one
/// batched write (the anon-exclusive bits read into the entries, then
/// cleared on the pages).
#[inline]
fn set_migration_run<'a, A: PagingArch>(
    m: &Mm<'a, A>,
    pt: &mut PageTable<'a, A>,
    at: u64,
    folio: Folio<'a>,
    page: u64,
    attrs: &[Attrs],
) {
    pt.set_swap_entries(at, attrs.len(), |j| {
        let p = folio.page(page + j as u64);
        SwapEntry::migration(p.pfn(), attrs[j].perms.write, p.is_anon_exclusive())
    })
    .expect("entries cleared above, table present; a frame number fits");
    for j in 0..attrs.len() {
        folio.page(page + j as u64).clear_anon_exclusive();
    }
    m.migents_add(attrs.len() as u64);
}

/// [`try_to_migrate`] for an order-0 `folio` mapped once, by the PTE at
/// `va` in `m`, whose page-table lock `pt` the caller holds (it checked
/// the mapcount): no walk vectors, one entry.  Returns the PTE's
/// attributes for [`remove_migration_pte`], or `None` (nothing changed)
/// when `va` does not map the folio.
pub(crate) fn try_to_migrate_pte<'a, A: PagingArch>(
    m: &Mm<'a, A>,
    pt: &mut PageTable<'a, A>,
    folio: Folio<'a>,
    va: u64,
) -> Option<Attrs> {
    let mut g = pt.gather();
    let attrs = try_to_migrate_pte_gathered(m, pt, folio, va, &mut g);
    g.finish();
    attrs
}

/// [`try_to_migrate_pte`] with the flush left to the caller's gather `g`
/// (of `pt`), so a batch of folios is unmapped with one flush (Linux's
/// `TTU_BATCH_FLUSH` in `migrate_pages_batch`).  The caller must finish
/// `g` before it copies any of the folios: until then another CPU may
/// still reach the old pages through its TLB.
pub(crate) fn try_to_migrate_pte_gathered<'a, A: PagingArch>(
    m: &Mm<'a, A>,
    pt: &mut PageTable<'a, A>,
    folio: Folio<'a>,
    va: u64,
    g: &mut crate::paging::TlbGather<'a>,
) -> Option<Attrs> {
    debug_assert_eq!(folio.order(), 0);
    // One walk: the entry is read, cleared and rewritten at its slot.
    let slot = pt.pte_slot(va)?;
    let Entry::Leaf(l) = pt.read(slot, PTE_LEVEL) else {
        return None;
    };
    if l.pfn != folio.pfn() {
        return None;
    }
    let mut attrs = l.attrs;
    if l.cont {
        // Never for an order-0 folio (a block maps one large folio); the
        // general path unfolds.
        let r = pt.get_and_clear_ptes(va, 1, g);
        attrs.young |= r.young;
        attrs.dirty |= r.dirty;
        set_migration_run(m, pt, va, folio, 0, &[attrs]);
        return Some(attrs);
    }
    // The young/dirty bits the MMU set up to the clear.
    if let Entry::Leaf(now) = A::decode(pt.take(slot), PTE_LEVEL) {
        attrs.young |= now.attrs.young;
        attrs.dirty |= now.attrs.dirty;
    }
    g.add_range(va, va + PAGE_SIZE, PAGE_SIZE);
    let p = folio.page(0);
    let e = SwapEntry::migration(p.pfn(), attrs.perms.write, p.is_anon_exclusive())
        .expect("a frame number fits");
    pt.store_pte(slot, Entry::Swap(e));
    p.clear_anon_exclusive();
    m.migents_add(1);
    Some(attrs)
}

/// [`remove_migration_ptes`] for what [`try_to_migrate_pte`] did: the
/// entry at `va`, if still there, becomes a leaf on `target` with the
/// saved `attrs`.  The caller holds `m`'s page-table lock `pt` (of a
/// live space).  Returns the entries restored (0 or 1).
pub(crate) fn remove_migration_pte<'a, A: PagingArch>(
    m: &Mm<'a, A>,
    pt: &mut PageTable<'a, A>,
    va: u64,
    attrs: Attrs,
    src: Folio<'a>,
    target: Folio<'a>,
) -> u64 {
    // One walk, as in `try_to_migrate_pte_gathered`.
    let Some(slot) = pt.pte_slot(va) else {
        return 0;
    };
    let Entry::Swap(e) = pt.read(slot, PTE_LEVEL) else {
        return 0;
    };
    if e.migration_pfn() != Some(src.pfn()) {
        return 0;
    }
    let leaf = Leaf {
        pfn: target.pfn(),
        level: PTE_LEVEL,
        attrs: migration_leaf_attrs(e, attrs),
        cont: false,
    };
    pt.store_pte(slot, Entry::Leaf(leaf));
    pt.sync_tables();
    move_migration_refs(m, 0, 1, e.ty, src, target);
    1
}

/// One run of the remap: the `n` migration entries of type `ty` at `at`,
/// naming pages `page..` of `src` (checked in place by the caller), become
/// leaves on the same pages of `target` with `attrs` (one `set_ptes`, so
/// contiguous blocks fold again); references and mapcounts move from
/// `src` to `target`, and anon-exclusive bits come back from the type.
#[allow(clippy::too_many_arguments)]
#[inline]
fn restore_migration_run<'a, A: PagingArch>(
    m: &Mm<'a, A>,
    pt: &mut PageTable<'a, A>,
    at: u64,
    page: u64,
    n: u64,
    ty: u8,
    attrs: Attrs,
    src: Folio<'a>,
    target: Folio<'a>,
) {
    let e0 = SwapEntry {
        ty,
        offset: src.pfn() + page,
        exclusive: false,
    };
    let taken = pt.take_swap_ptes(at, n as usize);
    debug_assert_eq!(taken as u64, n, "the entries were read in place above");
    pt.set_ptes(
        at,
        target.pfn() + page,
        n as usize,
        migration_leaf_attrs(e0, attrs),
    )
    .expect("entries taken above in an existing table");
    move_migration_refs(m, page, n, ty, src, target);
}

/// The bookkeeping of `n` restored migration entries of type `ty` for
/// pages `page..` of `src`, now mapping `target`: anon-exclusive bits back
/// from the type, references and mapcounts moved from `src` to `target`.
#[inline]
fn move_migration_refs<'a, A: PagingArch>(
    m: &Mm<'a, A>,
    page: u64,
    n: u64,
    ty: u8,
    src: Folio<'a>,
    target: Folio<'a>,
) {
    if ty != SwapEntry::MIGRATION_READ {
        for k in 0..n {
            target.page(page + k).set_anon_exclusive();
        }
    }
    if target != src {
        target.get_many(n as u32);
        target.add_mapcount_mm(m.id, n as i32);
        src.add_mapcount_mm(m.id, -(n as i32));
        src.put_many(n as u32);
    }
    m.migents_sub(n);
}

/// How many pages [`migration_types`] reads at once (a stack buffer: a
/// 4K folio's remap allocates nothing); a multiple of every contiguous
/// block, so a run cut at a chunk boundary still folds.
const TYPES_CHUNK: usize = 64;

/// The types of the migration entries still in place for `out.len()`
/// pages from `va`, entry `i` naming frame `pfn + i` (`None` where there
/// is none, or another entry), read in one walk: the remap's check of a
/// run.
fn migration_types<A: PagingArch>(
    pt: &PageTable<'_, A>,
    va: u64,
    pfn: u64,
    out: &mut [Option<u8>],
) {
    out.fill(None);
    for step in pt.walk_range(va, va + out.len() as u64 * PAGE_SIZE) {
        let Step::Ptes(run) = step else { continue };
        let first = ((run.va(0) - va) / PAGE_SIZE) as usize;
        for i in 0..run.len() {
            if let Entry::Swap(e) = run.entry(i)
                && e.migration_pfn() == Some(pfn + (first + i) as u64)
            {
                out[first + i] = Some(e.ty);
            }
        }
    }
}

/// The migration entry naming frame `pfn` at `va`, if it is still there.
pub(crate) fn migration_entry_at<A: PagingArch>(
    pt: &PageTable<'_, A>,
    va: u64,
    pfn: u64,
) -> Option<SwapEntry> {
    match pt.read_pte(va) {
        Some(Entry::Swap(e)) if e.migration_pfn() == Some(pfn) => Some(e),
        _ => None,
    }
}

/// The leaf a migration entry `e` becomes, from the attributes the
/// mapping had when it was unmapped: writable only if the entry says so
/// (fork and mprotect turn `WRITE` into a read type).
pub(crate) fn migration_leaf_attrs(e: SwapEntry, mut attrs: Attrs) -> Attrs {
    attrs.perms.write = e.ty == SwapEntry::MIGRATION_WRITE;
    attrs
}

/// Writes back the migration entries [`try_to_migrate`] wrote that are
/// still in place (a zap may have removed some, mremap moved some), as
/// leaves on the same pages of `target`: the destination folio after a
/// copy, or `src` itself to roll back.  One `set_ptes` per run of
/// consecutive pages of one space with equal attributes and entry type, so
/// arm64 contiguous blocks fold again where the new frames qualify.  Each
/// restored entry's reference and large mapcount move from `src` to
/// `target` (nothing moves when they are the same folio), and the page's
/// anon-exclusive bit comes back from the entry type.  A space that
/// mapped the folio with a PMD (`pmd[k]`) gets a PMD leaf back when all
/// its 512 entries are still there, alike (the PTE table becomes the
/// leaf's deposit again), so `AnonHugePages` survives.  Returns the
/// entries restored (a PMD counting 512).
pub(crate) fn remove_migration_ptes<'a, A: PagingArch>(
    walk: &mut RmapWalk<'_, 'a, A>,
    saved: &[SavedPte],
    pmd: &[bool],
    src: Folio<'a>,
    target: Folio<'a>,
) -> u64 {
    let va = walk.va;
    let mut restored = 0;
    let whole: Vec<bool> = (0..walk.mappers.len())
        .map(|k| {
            let done = pmd.get(k) == Some(&true)
                && walk.guards[k].live()
                && restore_migration_pmd(walk, k, saved, src, target);
            if done {
                restored += src.nr_pages();
            }
            done
        })
        .collect();
    let mut types = [None; TYPES_CHUNK];
    let mut i = 0;
    while i < saved.len() {
        let s0 = saved[i];
        let (m, pt) = (walk.mappers[s0.mm], &mut walk.guards[s0.mm]);
        // The saved entries one `set_ptes` could write back if all were
        // still there (at most a chunk), and which of them are, in one walk.
        if !pt.live() || whole[s0.mm] {
            // Nothing of this space to restore one by one.
            i += saved[i..].iter().take_while(|s| s.mm == s0.mm).count();
            continue;
        }
        let (end, _) = saved_run(saved, i, TYPES_CHUNK, |_| true);
        let types = &mut types[..end - i];
        migration_types(pt, va + s0.page * PAGE_SIZE, src.pfn() + s0.page, types);
        // Each stretch of entries in place with one type is one run.
        let mut x = 0;
        while x < types.len() {
            let Some(ty) = types[x] else {
                x += 1;
                continue;
            };
            let mut y = x + 1;
            while y < types.len() && types[y] == Some(ty) {
                y += 1;
            }
            let first = saved[i + x];
            let mut attrs = first.attrs;
            for s in &saved[i + x + 1..i + y] {
                attrs.young |= s.attrs.young;
                attrs.dirty |= s.attrs.dirty;
            }
            let n = (y - x) as u64;
            let at = va + first.page * PAGE_SIZE;
            restore_migration_run(m, pt, at, first.page, n, ty, attrs, src, target);
            restored += n;
            x = y;
        }
        i = end;
    }
    restored
}

/// The PMD case of [`remove_migration_ptes`] for space `k`: if its 512
/// entries of `src` are all in place with one type and equal attributes,
/// the PTE table they fill becomes a PMD leaf on `target`.  The 512
/// entries' references and mapcounts become one PMD mapping's.
fn restore_migration_pmd<'a, A: PagingArch>(
    walk: &mut RmapWalk<'_, 'a, A>,
    k: usize,
    saved: &[SavedPte],
    src: Folio<'a>,
    target: Folio<'a>,
) -> bool {
    let va = walk.va;
    let nr = src.nr_pages();
    let mine: Vec<&SavedPte> = saved.iter().filter(|s| s.mm == k).collect();
    if mine.len() as u64 != nr || !va.is_multiple_of(crate::addr::PMD_SIZE) {
        return false;
    }
    let (m, pt) = (walk.mappers[k], &mut walk.guards[k]);
    let key = mine[0].attrs.fold_key();
    let mut types = alloc::vec![None; nr as usize];
    migration_types(pt, va, src.pfn(), &mut types);
    let Some(ty) = types[0] else {
        return false;
    };
    let e0 = SwapEntry {
        ty,
        offset: src.pfn(),
        exclusive: false,
    };
    let mut attrs = mine[0].attrs;
    for (i, s) in mine.iter().enumerate() {
        if s.page != i as u64 || s.attrs.fold_key() != key || types[i] != Some(ty) {
            return false;
        }
        attrs.young |= s.attrs.young;
        attrs.dirty |= s.attrs.dirty;
    }
    if pt
        .replace_table_with_pmd_leaf(va, target.pfn(), migration_leaf_attrs(e0, attrs))
        .is_err()
    {
        return false;
    }
    if e0.ty != SwapEntry::MIGRATION_READ {
        for p in target.pages() {
            p.set_anon_exclusive();
        }
    }
    // 512 PTE mappings of `src` become one PMD mapping of `target`.
    target.get();
    target.add_entire_mapcount(1);
    target.add_mapcount_mm(m.id, 1);
    src.add_mapcount_mm(m.id, -(nr as i32));
    src.put_many(nr as u32);
    m.migents_sub(nr);
    true
}
