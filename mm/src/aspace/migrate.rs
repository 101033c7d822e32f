//! Migration of anonymous folios, whole at every order: Linux's
//! `migrate_folio_unmap` → `move_to_new_folio` → `remove_migration_ptes`
//! for one folio ([`migrate_folio`]), the `migrate_pages` batch driver
//! ([`migrate_pages`]) and compaction's hook ([`FolioMigrator`]).
//!
//! # Steps of [`migrate_folio`]
//! 1. The source is locked (tried in [`MigrateMode::Async`], slept on in
//!    [`MigrateMode::Sync`]), and so is the new destination.  A partially
//!    mapped large folio on the deferred-split queue is refused with
//!    [`MigrateError::NeedsSplit`] (Linux splits those before migrating;
//!    [`migrate_pages`] does).
//! 2. Under the page-table locks of every space mapping it (the rmap walk,
//!    `rmap::rmap_walk`), a folio with references beyond its mappings, the
//!    caller's and the swap cache's is refused (`Again`: a pin, or someone
//!    about to map it).  Every PTE mapping becomes a migration entry
//!    (`rmap::try_to_migrate`: `WRITE`, `READ_EXCLUSIVE` or `READ`, the
//!    anon-exclusive bit moving into the entry).  A PMD mapping is split
//!    into a PTE table of 512 migration entries (its deposit), which the
//!    remap turns back into the PMD leaf (see docs/linux-differences.md:
//!    Linux writes one PMD migration entry instead).
//! 3. The page-table locks are dropped and the data copied: nobody can
//!    reach the folio meanwhile (a fault on a migration entry sleeps on
//!    the source's folio lock).  Then the folio state moves: `DIRTY`,
//!    `REFERENCED`, `LAZYFREE`, `MLOCKED` (and the `Mlocked:` pages), the
//!    swap-cache slots with the cache's reference, the rmap owner, the
//!    PMD-size deferred-split (underused shrinker) queue entry, and the
//!    LRU: the destination joins the list the source was on (active or
//!    inactive); the source, freed when the caller drops its reference,
//!    leaves it then.
//! 4. The locks are taken again and every migration entry still in place
//!    becomes a leaf on the destination's page
//!    (`rmap::remove_migration_ptes`) with the rights the entry records
//!    and the attributes and young/dirty bits the PTE had; `set_ptes`
//!    folds arm64 contiguous blocks again, and a space that had a PMD
//!    mapping gets it back when its 512 entries are all still there.  The
//!    entries' references and mapcounts move to the destination.
//! 5. A failure after the unmap (the copy) restores the entries onto the
//!    source instead, data untouched.
//!
//! # Migration entries while the locks are dropped
//! A migration entry holds its mapping's reference, large mapcount and
//! RSS on the page it names (Linux drops them at unmap; keeping them makes
//! every entry a mapping that zap, fork and the checker can account for).
//! Meanwhile:
//! * zap clears an entry and unmaps the page it names (reference,
//!   mapcount, RSS); the remap only restores entries still present;
//! * fork copies an entry (a `WRITE` one becomes `READ` in both, as
//!   Linux's `copy_nonpresent_pte`), the child's copy mapping the source
//!   page with its own reference; mremap moves entries as they are;
//! * mprotect waits for the migration to end (it holds the mmap lock for
//!   writing and sleeps on the folio lock): the remap cannot read VMAs, so
//!   rights must not change under it.
//!
//! Entries the remap cannot find (in a space not passed in `mms`, such as
//! a child forked meanwhile, or moved by mremap away from the rmap owner's
//! address) stay on the source page, which they keep alive.  A fault on
//! one finds the source unlocked and maps that page back
//! (`Mm::migration_entry_wait`): the data is the same, and the page was
//! exclusive to that mapping or shared read-only.
//!
//! # Lock order
//! Source folio lock, then destination folio lock (a new folio nobody
//! else can reach: only tried), then the page-table locks of the spaces
//! mapping the source, ascending mm id (`rmap_walk`), then the swap-cache
//! lock and the LRU locks.  No mmap lock is taken: faults sleep on the
//! folio lock holding their mmap lock for reading, and mprotect sleeps on
//! it holding the mmap lock for writing.  The copy runs holding only the
//! two folio locks.

use alloc::vec::Vec;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_ORDER};
use crate::paging::{Attrs, PagingArch};
use crate::physmem::buddy::AllocFlags;
use crate::physmem::folio::{Folio, FolioLockGuard, FolioRef};
use crate::physmem::frame_flags::PageFlags;
use crate::thp::VmEvent;

use super::Mm;
use super::rmap::{
    RmapWalk, SavedPte, remove_migration_pte, remove_migration_ptes, rmap_walk, try_to_migrate,
    try_to_migrate_pte, try_to_migrate_pte_gathered,
};

/// Why one folio could not be migrated (Linux's errno kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateError {
    /// Transient: the folio is locked, or held by an extra reference that
    /// may go away (Linux's `-EAGAIN`; the batch driver retries).
    Again,
    /// Not migratable: not anonymous, the zero page, a different order
    /// than the destination, or mapped where the rmap walk cannot reach
    /// (Linux's `-EBUSY`).
    Busy,
    /// No destination folio could be allocated (Linux's `-ENOMEM`).
    NoMem,
    /// A partially mapped large folio: Linux splits it before migrating
    /// ([`migrate_pages`] does, then migrates the pieces).
    NeedsSplit,
    /// The copy failed (only by test injection: memory copies cannot
    /// fail here); everything was restored onto the source.
    CopyFailed,
}

/// How hard [`migrate_folio`] tries (Linux's `enum migrate_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateMode {
    /// Never sleeps: a locked folio is `Again`.
    Async,
    /// May sleep on the folio lock.
    Sync,
}

/// Why [`migrate_pages`] runs (Linux's `enum migrate_reason`, the cases
/// that change what it does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateReason {
    /// Compaction.
    Compaction,
    /// `move_pages`, `migrate_pages(2)`, `mbind`.
    Syscall,
    /// NUMA balancing: a large folio is never split (Linux's
    /// `MR_NUMA_MISPLACED`).
    NumaMisplaced,
}

/// Moves one movable folio into a free destination folio of the same
/// order (compaction's hook).  On `Err` the caller still owns `dst` and
/// frees it.
pub trait FolioMigrator<'a> {
    fn migrate_to(&self, src: Folio<'a>, dst: Folio<'a>) -> Result<(), MigrateError>;
}

/// The [`FolioMigrator`] over a set of address spaces (normally all of
/// the context's live ones).
pub struct MmMigrator<'m, 'a, A: PagingArch> {
    pub mms: &'m [&'m Mm<'a, A>],
    pub mode: MigrateMode,
}

impl<'a, A: PagingArch> FolioMigrator<'a> for MmMigrator<'_, 'a, A> {
    /// `src` comes with a reference the caller holds and keeps
    /// (compaction's isolation reference, as Linux's `migrate_pages`
    /// takes isolated folios; on the LRU or isolated from it): if it is
    /// an anonymous folio below the PMD order (compaction never moves PMD
    /// THPs, as Linux) of `dst`'s order, [`migrate_folio`] with that
    /// reference, counted in `pgmigrate_*` as [`migrate_pages`] counts.
    /// On success `dst` is consumed (its mappings and LRU place hold it)
    /// and the caller's dropping its reference frees the source.
    fn migrate_to(&self, src: Folio<'a>, dst: Folio<'a>) -> Result<(), MigrateError> {
        let Some(first) = self.mms.first() else {
            return Err(MigrateError::Busy);
        };
        if !src.is_anon() || src.order() >= PMD_ORDER || src.order() != dst.order() {
            return Err(MigrateError::Busy);
        }
        // The caller's reference, lent for the call and handed back below.
        let r = FolioRef::from_raw(src);
        let res = migrate_folio(self.mms, &r, dst, self.mode);
        count_result(first.ctx, src, res.is_ok());
        let _ = r.into_raw();
        res
    }
}

/// Test injection for [`migrate_folio_hooked`].
pub trait MigrateHooks {
    /// Runs after the unmap, with no page-table lock held and the source
    /// locked: a test faults on a migration entry here.
    fn after_unmap(&self) {}
    /// Makes the copy fail (to test the rollback).
    fn fail_copy(&self) -> bool {
        false
    }
}

struct NoHooks;
impl MigrateHooks for NoHooks {}

/// Counts one folio's final outcome in `/proc/vmstat` (Linux counts
/// pages, and PMD-size folios apart).
fn count_result(ctx: &super::MmCtx<'_>, f: Folio<'_>, ok: bool) {
    let stats = &ctx.thp.stats;
    let (pages, thp) = if ok {
        (VmEvent::PgMigrateSuccess, VmEvent::ThpMigrationSuccess)
    } else {
        (VmEvent::PgMigrateFail, VmEvent::ThpMigrationFail)
    };
    stats.count_n(pages, f.nr_pages());
    if f.order() == PMD_ORDER {
        stats.count(thp);
    }
}

/// Migrates the anonymous folio `src` (the caller's reference, e.g. from
/// LRU isolation) into `dst`, a newly allocated folio of the same order
/// (its allocation reference, unmapped, unlocked), in every address space
/// of `mms` that maps it (normally all of the context's).  See the module
/// docs for the steps.  On `Ok` the caller's reference to `src` is the
/// last one unless a mapping the remap could not reach still holds it
/// (module docs): dropping it frees the source; `dst` is held by its
/// mappings and its LRU place.  On `Err` nothing changed and the caller
/// still owns `dst`.
pub fn migrate_folio<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    src: &FolioRef<'a>,
    dst: Folio<'a>,
    mode: MigrateMode,
) -> Result<(), MigrateError> {
    migrate_folio_hooked(mms, src, dst, mode, &NoHooks)
}

/// [`migrate_folio`] with test injection points.
pub fn migrate_folio_hooked<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    src: &FolioRef<'a>,
    dst: Folio<'a>,
    mode: MigrateMode,
    hooks: &dyn MigrateHooks,
) -> Result<(), MigrateError> {
    let Some(first) = mms.first() else {
        return Err(MigrateError::Busy);
    };
    let ctx = first.ctx;
    let f: Folio<'a> = **src;
    if !f.is_anon()
        || f.test(PageFlags::ZERO_PAGE)
        || ctx.is_zero_pfn(f.pfn())
        || f.order() != dst.order()
        || dst.is_mapped()
    {
        return Err(MigrateError::Busy);
    }
    let lock: FolioLockGuard<'a> = match mode {
        MigrateMode::Async => f.try_lock().ok_or(MigrateError::Again)?,
        MigrateMode::Sync => f.lock_sleeping(),
    };
    if !f.is_anon() {
        return Err(MigrateError::Busy); // freed and reused meanwhile
    }
    if f.is_large() && f.test(PageFlags::PARTIALLY_MAPPED) {
        return Err(MigrateError::NeedsSplit);
    }
    let dlock = dst.try_lock().ok_or(MigrateError::Busy)?;
    let cached = f.test(PageFlags::SWAPCACHE);
    // Ours and the swap cache's, beyond one per mapping.
    let expected = 1 + cached as i64;
    let va = f
        .anon_owner()
        .map(|(_, vpn)| vpn << PAGE_SHIFT)
        .unwrap_or(0);
    // Unmap everywhere into migration entries; the locks are dropped for
    // the copy and taken again for the remap.
    let mut unmapped = Unmapped::unmap(mms, f, va, expected)?;
    hooks.after_unmap();
    // Copy with no page-table lock held.
    if hooks.fail_copy() {
        unmapped.remap(f, f);
        return Err(MigrateError::CopyFailed);
    }
    ctx.mem.copy(dst.pa(), f.pa(), f.size());
    move_folio_state(ctx, f, dst);
    let restored = unmapped.remap(f, dst);
    finish_migration(ctx, f, dst, restored, lock, dlock);
    Ok(())
}

/// The end of a migration whose remap restored `restored` entries onto
/// `dst`: the gauges and deferred-split queues of both folios, the folio
/// locks dropped, a source still mapped (entries the remap could not
/// reach) back on the LRU, and `dst`'s allocation reference dropped (its
/// mappings, LRU place and swap cache hold it now).
fn finish_migration<'a>(
    ctx: &super::MmCtx<'a>,
    f: Folio<'a>,
    dst: Folio<'a>,
    restored: u64,
    lock: FolioLockGuard<'a>,
    dlock: FolioLockGuard<'a>,
) {
    if restored > 0 {
        ctx.thp.stats.inc(dst.order(), crate::thp::MthpStat::NrAnon);
    }
    // The source's bookkeeping as any unmap (the gauge, the deferred-split
    // queue), unless entries the remap did not reach still map it.
    let left = f.large_mapcount();
    if left == 0 {
        if restored > 0 {
            ctx.deferred_split_remove(f);
            ctx.thp.stats.dec(f.order(), crate::thp::MthpStat::NrAnon);
        }
    } else if restored > 0
        && f.order() >= 2
        && (left as u64) < f.nr_pages()
        && f.entire_mapcount() == 0
    {
        ctx.deferred_split_folio(f);
    }
    let d = dst.large_mapcount();
    if d == 0 {
        ctx.deferred_split_remove(dst);
    } else if f.order() >= 2 && (d as u64) < dst.nr_pages() && dst.entire_mapcount() == 0 {
        ctx.deferred_split_folio(dst);
    }
    drop(dlock);
    drop(lock);
    // A source still mapped (entries the remap could not reach) stays a
    // live anonymous folio: back on the LRU if the caller had isolated it.
    if left > 0 && !f.test(PageFlags::LRU) && !f.test(PageFlags::LRU_BATCH) {
        ctx.lru_putback(f.get_ref(), f.test(PageFlags::ACTIVE));
    }
    // The allocation's reference: the mappings, the LRU and the swap cache
    // hold the destination now.
    dst.put();
}

/// What the unmap of [`migrate_folio`] left for the remap.
enum Unmapped<'m, 'a, A: PagingArch> {
    /// Not mapped anywhere.
    Nothing,
    /// An order-0 folio mapped once, in the only candidate space (the
    /// common `move_pages` and NUMA-balancing case): one PTE, found and
    /// restored without the walk's vectors.
    Pte {
        m: &'m Mm<'a, A>,
        va: u64,
        attrs: crate::paging::Attrs,
    },
    /// Every mapping the rmap walk found (its locks dropped for the copy).
    Walk {
        walk: RmapWalk<'m, 'a, A>,
        saved: Vec<SavedPte>,
        pmd: Vec<bool>,
    },
}

impl<'m, 'a, A: PagingArch> Unmapped<'m, 'a, A> {
    /// Step 2 of [`migrate_folio`]: under the page-table locks of every
    /// space mapping `f` (at its rmap owner address `va`), refuses a folio
    /// with references beyond its mappings and `expected`, then turns every
    /// mapping into a migration entry.
    fn unmap(
        mms: &[&'m Mm<'a, A>],
        f: Folio<'a>,
        va: u64,
        expected: i64,
    ) -> Result<Self, MigrateError> {
        if !f.is_mapped() {
            return if f.extra_refs() == expected {
                Ok(Self::Nothing)
            } else {
                Err(MigrateError::Again)
            };
        }
        if let [m] = mms
            && f.order() == 0
            && f.large_mapcount() == 1
        {
            let mut pt = m.lock_pt();
            if f.large_mapcount() == 1
                && pt
                    .read_pte(va)
                    .and_then(|e| e.leaf())
                    .is_some_and(|l| l.pfn == f.pfn())
            {
                if f.extra_refs() != expected {
                    return Err(MigrateError::Again);
                }
                let attrs = try_to_migrate_pte(m, &mut pt, f, va).expect("the PTE was read above");
                return Ok(Self::Pte { m, va, attrs });
            }
            // Mapped elsewhere: the walk finds out where, or refuses.
        }
        let mut walk = rmap_walk(mms, f, va).map_err(|_| MigrateError::Busy)?;
        if f.extra_refs() != expected {
            return Err(MigrateError::Again);
        }
        let (saved, pmd) = try_to_migrate(&mut walk, f);
        walk.guards.clear();
        Ok(Self::Walk { walk, saved, pmd })
    }

    /// Step 4 (or 5, with `target == src`): the locks again, and every
    /// migration entry still in place becomes a leaf on `target`.  Returns
    /// the entries restored (a PMD counting 512).
    fn remap(&mut self, src: Folio<'a>, target: Folio<'a>) -> u64 {
        match self {
            Self::Nothing => 0,
            Self::Pte { m, va, attrs } => {
                let mut pt = m.lock_pt();
                if pt.live() {
                    remove_migration_pte(m, &mut pt, *va, *attrs, src, target)
                } else {
                    0
                }
            }
            Self::Walk { walk, saved, pmd } => {
                relock(walk);
                let restored = remove_migration_ptes(walk, saved, pmd, src, target);
                walk.guards.clear();
                restored
            }
        }
    }
}

/// The page-table locks of the walk's spaces (ascending mm id, as
/// `rmap_walk` took them) again, for the remap.
fn relock<A: PagingArch>(walk: &mut RmapWalk<'_, '_, A>) {
    debug_assert!(walk.guards.is_empty());
    walk.guards
        .extend(walk.mappers.iter().map(|&m| m.lock_pt()));
}

/// Step 3's state move from `src` to `dst` (both locked, `src` unmapped).
fn move_folio_state<'a>(ctx: &super::MmCtx<'a>, src: Folio<'a>, dst: Folio<'a>) {
    let carried = src.flags()
        & (PageFlags::DIRTY | PageFlags::REFERENCED | PageFlags::LAZYFREE | PageFlags::UPTODATE);
    dst.set_flags(carried);
    dst.set_owner_raw(src.owner_raw());
    dst.set_flags(PageFlags::ANON);
    if src.is_mlocked() {
        src.munlock();
        dst.mlock();
    }
    if src.test(PageFlags::SWAPCACHE) && ctx.swap.cache.replace(src.pfn(), dst.pfn()) {
        dst.get(); // the cache's reference moves
        dst.set_flags(PageFlags::SWAPCACHE);
        src.clear_flags(PageFlags::SWAPCACHE);
        src.put();
    }
    if src.order() == PMD_ORDER && ctx.deferred_split_remove(src) {
        ctx.deferred_split_add_pmd(dst);
    }
    // The list the source was on; it leaves it when it is freed.
    let active = src.test(PageFlags::ACTIVE);
    ctx.lru_putback(dst.get_ref(), active);
}

/// Linux's `migrate_pages`: migrates each folio of `folios` (the caller's
/// references, e.g. isolated from the LRU) into a destination from
/// `alloc_dst(order)` (`None`: none of that order), up to 10 passes while
/// some fail with `Again` (the first 3 not sleeping on folio locks).  A
/// large folio with no destination of its order (unless `reason` is NUMA
/// balancing), or partially mapped, is split to order 0 and its pieces
/// migrated.  Counts `pgmigrate_*` and `thp_migration_*`.  Returns (pages
/// migrated, folios not migrated — a split folio counts as one failure,
/// as Linux).  The references are dropped: a migrated source is freed;
/// one that stays and is off the LRU (isolated by the caller) goes back
/// on the list its `ACTIVE` flag names (Linux's `putback_movable_pages`).
pub fn migrate_pages<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    folios: Vec<FolioRef<'a>>,
    mut alloc_dst: impl FnMut(u32) -> Option<Folio<'a>>,
    reason: MigrateReason,
) -> (u64, u64) {
    let Some(first) = mms.first() else {
        return (0, folios.len() as u64);
    };
    let ctx = first.ctx;
    let stats = &ctx.thp.stats;
    let (mut pages_ok, mut failed) = (0u64, 0u64);
    let mut todo = folios;
    for pass in 0..10 {
        if todo.is_empty() {
            break;
        }
        let mode = if pass < 3 {
            MigrateMode::Async
        } else {
            MigrateMode::Sync
        };
        if pass == 0
            && let [m] = mms
        {
            pages_ok += migrate_small_batches(m, &mut todo, &mut alloc_dst);
        }
        let mut retry: Vec<FolioRef<'a>> = Vec::new();
        let mut pieces: Vec<FolioRef<'a>> = Vec::new();
        for f in todo.drain(..) {
            let order = f.order();
            let split = |f: &FolioRef<'a>, pieces: &mut Vec<FolioRef<'a>>| -> bool {
                if reason == MigrateReason::NumaMisplaced || order == 0 {
                    return false;
                }
                let head = **f;
                let nr = head.nr_pages();
                if super::split::split_folio_to_order(mms, head, 0).is_err() {
                    return false;
                }
                if order == PMD_ORDER {
                    stats.count(VmEvent::ThpMigrationSplit);
                }
                // Every piece is an order-0 folio now; the first is ours.
                for i in 1..nr {
                    if let Some(p) = ctx.folio(head.pfn() + i)
                        && let Some(r) = p.try_get_ref()
                    {
                        pieces.push(r);
                    }
                }
                true
            };
            let Some(dst) = alloc_dst(order) else {
                if split(&f, &mut pieces) {
                    failed += 1;
                    pieces.push(f);
                } else {
                    count_result(ctx, *f, false);
                    failed += 1;
                    release(ctx, f);
                }
                continue;
            };
            match migrate_folio(mms, &f, dst, mode) {
                Ok(()) => {
                    count_result(ctx, *f, true);
                    pages_ok += f.nr_pages();
                }
                Err(e) => {
                    free_unused(dst);
                    match e {
                        MigrateError::Again if pass < 9 => retry.push(f),
                        MigrateError::NeedsSplit if split(&f, &mut pieces) => {
                            failed += 1;
                            pieces.push(f);
                        }
                        _ => {
                            count_result(ctx, *f, false);
                            failed += 1;
                            release(ctx, f);
                        }
                    }
                }
            }
        }
        // Split pieces go through the order-0 path on the next pass (their
        // failures are not counted again: the folio already was).
        for p in pieces {
            if let Some(dst) = alloc_dst(0) {
                match migrate_folio(mms, &p, dst, MigrateMode::Sync) {
                    Ok(()) => {
                        count_result(ctx, *p, true);
                        pages_ok += 1;
                    }
                    Err(_) => {
                        free_unused(dst);
                        count_result(ctx, *p, false);
                        release(ctx, p);
                    }
                }
            } else {
                count_result(ctx, *p, false);
                release(ctx, p);
            }
        }
        todo = retry;
    }
    (pages_ok, failed)
}

/// Order-0 folios [`migrate_small_batch`] unmaps and remaps together
/// (Linux's `NR_MAX_BATCHED_MIGRATION` is 512 pages; a smaller batch
/// keeps the locks held and the folios unreachable for less time).
const SMALL_BATCH: usize = 64;

/// The first pass of [`migrate_pages`] over one address space `m`: the
/// order-0 folios of `todo` mapped once go through
/// [`migrate_small_batch`] in groups; what a group cannot take stays in
/// `todo` (in order) for the one-by-one path.  Returns the pages migrated.
fn migrate_small_batches<'a, A: PagingArch>(
    m: &Mm<'a, A>,
    todo: &mut Vec<FolioRef<'a>>,
    alloc_dst: &mut impl FnMut(u32) -> Option<Folio<'a>>,
) -> u64 {
    let mut rest = Vec::with_capacity(todo.len());
    let mut group = Vec::with_capacity(SMALL_BATCH.min(todo.len()));
    let mut pages = 0;
    for f in todo.drain(..) {
        if f.order() != 0 || f.large_mapcount() != 1 {
            rest.push(f);
            continue;
        }
        group.push(f);
        if group.len() == SMALL_BATCH {
            pages += migrate_small_batch(m, &mut group, alloc_dst, &mut rest);
        }
    }
    if !group.is_empty() {
        pages += migrate_small_batch(m, &mut group, alloc_dst, &mut rest);
    }
    *todo = rest;
    pages
}

/// One folio of [`migrate_small_batch`], locked with its destination.
struct SmallMove<'a> {
    f: FolioRef<'a>,
    dst: Folio<'a>,
    lock: FolioLockGuard<'a>,
    dlock: FolioLockGuard<'a>,
    /// Where the folio's one PTE is (its rmap owner address).
    va: u64,
    /// That PTE's attributes, for the remap.
    attrs: Attrs,
}

impl<'a> SmallMove<'a> {
    /// Gives up on this folio: locks dropped, destination freed, the
    /// folio left for the one-by-one path.
    fn give_back(self, rest: &mut Vec<FolioRef<'a>>) {
        drop(self.dlock);
        drop(self.lock);
        free_unused(self.dst);
        rest.push(self.f);
    }
}

/// Linux's `migrate_pages_batch` for order-0 folios each mapped by one PTE
/// of the one space `m` (the `move_pages`/`mbind` case), never sleeping:
/// every folio of `group` and a destination are locked (tried), one
/// page-table lock hold turns all their PTEs into migration entries with
/// one gathered TLB flush, the pages are copied with no page-table lock
/// held, and one more hold maps the destinations.  Per folio the steps
/// and their checks are [`migrate_folio`]'s (`Unmapped::Pte`); a folio
/// that fails one of them before its unmap (locked elsewhere, an extra
/// reference, no longer where its owner says, no destination) goes to
/// `rest` untouched, for [`migrate_folio`] to retry or refuse.  Empties
/// `group`; returns the pages migrated (counted as [`migrate_pages`] does).
fn migrate_small_batch<'a, A: PagingArch>(
    m: &Mm<'a, A>,
    group: &mut Vec<FolioRef<'a>>,
    alloc_dst: &mut impl FnMut(u32) -> Option<Folio<'a>>,
    rest: &mut Vec<FolioRef<'a>>,
) -> u64 {
    let ctx = m.ctx;
    // Destinations first, holding no folio lock: an allocation may reclaim
    // or compact, which must not find folios of ours locked.
    let mut pairs: Vec<(FolioRef<'a>, Folio<'a>)> = Vec::with_capacity(group.len());
    for f in group.drain(..) {
        let folio: Folio<'a> = *f;
        if !folio.is_anon() || folio.test(PageFlags::ZERO_PAGE) || ctx.is_zero_pfn(folio.pfn()) {
            rest.push(f);
            continue;
        }
        match alloc_dst(0) {
            Some(dst) => pairs.push((f, dst)),
            None => rest.push(f),
        }
    }
    let mut moves: Vec<SmallMove<'a>> = Vec::with_capacity(pairs.len());
    for (f, dst) in pairs {
        let folio: Folio<'a> = *f;
        let Some(lock) = folio.try_lock() else {
            free_unused(dst);
            rest.push(f);
            continue;
        };
        let Some(dlock) = dst.try_lock() else {
            drop(lock);
            free_unused(dst);
            rest.push(f);
            continue;
        };
        let va = folio
            .anon_owner()
            .map(|(_, vpn)| vpn << PAGE_SHIFT)
            .unwrap_or(0);
        moves.push(SmallMove {
            f,
            dst,
            lock,
            dlock,
            va,
            attrs: Attrs::default(),
        });
    }
    if moves.is_empty() {
        return 0;
    }
    // Unmap all under one hold, one flush; the flush completes before any
    // copy (another CPU may write through a stale entry until then).
    let mut unmapped: Vec<SmallMove<'a>> = Vec::with_capacity(moves.len());
    {
        let mut pt = m.lock_pt();
        if !pt.live() {
            drop(pt);
            moves.into_iter().for_each(|mv| mv.give_back(rest));
            return 0;
        }
        let mut g = pt.gather();
        for mut mv in moves {
            let f: Folio<'a> = *mv.f;
            // Ours and the swap cache's references, beyond the one mapping.
            let expected = 1 + f.test(PageFlags::SWAPCACHE) as i64;
            let attrs = (f.is_anon() && f.large_mapcount() == 1 && f.extra_refs() == expected)
                .then(|| try_to_migrate_pte_gathered(m, &mut pt, f, mv.va, &mut g))
                .flatten();
            match attrs {
                Some(a) => {
                    mv.attrs = a;
                    unmapped.push(mv);
                }
                None => mv.give_back(rest),
            }
        }
        g.finish();
    }
    for mv in &unmapped {
        ctx.mem.copy(mv.dst.pa(), mv.f.pa(), PAGE_SIZE);
        move_folio_state(ctx, *mv.f, mv.dst);
    }
    let mut restored: Vec<u64> = Vec::with_capacity(unmapped.len());
    {
        let mut pt = m.lock_pt();
        for mv in &unmapped {
            restored.push(if pt.live() {
                remove_migration_pte(m, &mut pt, mv.va, mv.attrs, *mv.f, mv.dst)
            } else {
                0
            });
        }
    }
    let pages = unmapped.len() as u64;
    for (mv, r) in unmapped.into_iter().zip(restored) {
        let f: Folio<'a> = *mv.f;
        finish_migration(ctx, f, mv.dst, r, mv.lock, mv.dlock);
        count_result(ctx, f, true);
        // The caller's reference: the last one, which frees the source.
        drop(mv.f);
    }
    pages
}

/// Drops the reference to a folio that was not migrated, putting it back
/// on the LRU if the caller had isolated it.
fn release<'a>(ctx: &super::MmCtx<'a>, f: FolioRef<'a>) {
    if f.test(PageFlags::LRU) || f.test(PageFlags::LRU_BATCH) {
        drop(f);
    } else {
        let active = f.test(PageFlags::ACTIVE);
        ctx.lru_putback(f, active);
    }
}

/// Frees a destination folio [`migrate_folio`] did not use.
fn free_unused(dst: Folio<'_>) {
    dst.put();
}

/// A destination allocator for [`migrate_pages`] from the context's buddy
/// allocator (movable user memory, no reclaim).
pub fn alloc_from_buddy<'a>(
    ctx: &'a super::MmCtx<'a>,
) -> impl FnMut(u32) -> Option<Folio<'a>> + 'a {
    move |order| ctx.buddy.alloc(order, AllocFlags::USER).ok()
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// A fault on the migration entry `e` at `addr` in `vma` (Linux's
    /// `migration_entry_wait`), with `f` the folio it names, referenced
    /// under the page-table lock: sleeps until the migration holding the
    /// folio lock ends, then lets the access retry.  An entry still there
    /// once the lock is ours is one the remap could not reach (module
    /// docs): it is mapped back onto the page it names, which its own
    /// reference and mapcount still hold.
    pub(crate) fn migration_entry_wait(
        &self,
        vma: &crate::vma::Vma,
        addr: u64,
        f: FolioRef<'a>,
        e: crate::paging::SwapEntry,
    ) -> Result<(), super::Fault> {
        let va = crate::addr::align_down(addr, crate::addr::PAGE_SIZE);
        let lock = f.lock_sleeping();
        let mut pt = self.lock_pt();
        if pt.live() && super::rmap::migration_entry_at(&pt, va, e.offset) == Some(e) {
            self.restore_orphan(&mut pt, va, e, super::vma_perms(vma.flags));
        }
        drop(pt);
        drop(lock);
        drop(f);
        Ok(())
    }

    /// Maps the migration entry `e` at `va`, which no migration will
    /// restore (its folio is locked by the caller), back onto the page it
    /// names, with the rights `perms` of its VMA (write only if the entry
    /// was writable).
    pub(crate) fn restore_orphan(
        &self,
        pt: &mut crate::paging::PageTable<'a, A>,
        va: u64,
        e: crate::paging::SwapEntry,
        perms: crate::paging::Perms,
    ) {
        let Some(f) = self.ctx.folio(e.offset) else {
            return;
        };
        pt.take_swap_pte(va);
        let mut attrs = crate::paging::Attrs::user(perms);
        attrs.young = true;
        let attrs = super::rmap::migration_leaf_attrs(e, attrs);
        let attrs = crate::paging::Attrs {
            perms: crate::paging::Perms {
                write: attrs.perms.write && perms.write,
                ..attrs.perms
            },
            ..attrs
        };
        pt.set_ptes(va, e.offset, 1, attrs)
            .expect("entry taken above, table present");
        if e.ty != crate::paging::SwapEntry::MIGRATION_READ {
            f.page(e.offset - f.pfn()).set_anon_exclusive();
        }
        self.migents_sub(1);
    }
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Sleeps until no migration entry is left in `[start, end)` (mprotect,
    /// holding the mmap lock for writing: the remap keeps the rights an
    /// entry recorded, so they must not change under a migration).  One an
    /// ended migration left behind is mapped back onto its page.
    pub(crate) fn wait_migration_entries(&self, vmas: &crate::vma::VmaSet, start: u64, end: u64) {
        use crate::paging::{Entry, Step};
        while self.migents() > 0 {
            let found = {
                let pt = self.lock_pt();
                let mut found = None;
                'walk: for step in pt.walk_range(start, end) {
                    let Step::Ptes(run) = step else { continue };
                    for i in 0..run.len() {
                        if let Entry::Swap(e) = run.entry(i)
                            && e.is_migration()
                            && let Some(f) = self.ctx.folio(e.offset)
                        {
                            found = Some((run.va(i), e, f.get_ref()));
                            break 'walk;
                        }
                    }
                }
                found
            };
            let Some((va, e, f)) = found else { return };
            let lock = f.lock_sleeping();
            let mut pt = self.lock_pt();
            if super::rmap::migration_entry_at(&pt, va, e.offset) == Some(e)
                && let Some(v) = vmas.find(va)
            {
                self.restore_orphan(&mut pt, va, e, super::vma_perms(v.flags));
            }
            drop(pt);
            drop(lock);
        }
    }
}
