//! Memory compaction (Linux's mm/compaction.c), moving large folios
//! whole.
//!
//! One run covers one zone, a pfn span `[start, end)`, with two
//! scanners, pageblock by pageblock:
//! * the **migrate scanner** walks up from the bottom and isolates movable
//!   anonymous folios on the LRU;
//! * the **free scanner** walks down from the top, only through movable
//!   pageblocks, and takes free buddy blocks off the free lists into a
//!   per-order [`FreePool`] *as they are* (as large as the buddy has them),
//!   so a 16K or 64K source gets a destination of its own order from
//!   [`FreePool::take`] and stays 16K or 64K (Linux 6.9+; before, the
//!   free scanner split everything into order-0 pages and large folios
//!   could not move).
//!
//! The run ends when the scanners meet, or earlier when the request it
//! serves is met (a free block of the target order, or for a proactive
//! run a low enough fragmentation score).  What the pool still holds goes
//! back to the buddy.
//!
//! Which folios move (`skip_isolation_on_order` and friends): never one of
//! pageblock order or more (a PMD THP stays where it is, as in Linux);
//! not one of the target order or more unless the run is whole-zone
//! (`compact_memory`, proactive: order -1, here `order: None`); not an
//! mlocked one when `compact_unevictable_allowed` is 0.  Async runs (direct
//! compaction's first try) only take folios from movable pageblocks; sync
//! runs take movable folios out of unmovable pageblocks too.  The free
//! scanner never touches an unmovable pageblock, nor takes a free block of
//! the target order or more (of pageblock order or more for a whole-zone
//! run): that block is what compaction is trying to make.
//!
//! The move itself is a [`FolioMigrator`]'s job (the migration core in
//! `aspace::migrate`; host tests use a fake that moves unmapped folios).
//! Not implemented from Linux: the pageblock skip bits and cached scanner
//! positions (every run starts at both ends), deferred compaction, and
//! capture of a freed page by the direct compactor.

mod index;
mod pool;

#[cfg(test)]
mod tests;

pub use index::{
    ContigInfo, contig_info, extfrag_for_order, extfrag_index_text, fragmentation_index,
    score_wmarks, unusable_index, unusable_index_text, weighted_score,
};
pub use pool::FreePool;

use crate::physmem::buddy::{BuddyAllocator, MAX_ORDER, Migratetype, Wmark};
use core::sync::atomic::Ordering::Relaxed;

use crate::physmem::folio::{Folio, FolioRef};
use crate::physmem::frame_flags::{FrameState, PageFlags, order_of};
use crate::physmem::memmap::{PAGEBLOCK_FRAMES, PAGEBLOCK_ORDER};

/// Linux's `PAGE_ALLOC_COSTLY_ORDER`: above it, compaction checks the
/// fragmentation index and the low (not min) watermark.
pub const PAGE_ALLOC_COSTLY_ORDER: u32 = 3;
/// The order proactive compaction scores (Linux's `COMPACTION_HPAGE_ORDER`).
pub const COMPACTION_HPAGE_ORDER: u32 = PAGEBLOCK_ORDER;
/// `vm.extfrag_threshold` default and maximum.
pub const EXTFRAG_THRESHOLD_DEFAULT: u32 = 500;
pub const EXTFRAG_THRESHOLD_MAX: u32 = 1000;
/// `vm.compaction_proactiveness` default and maximum.
pub const PROACTIVENESS_DEFAULT: u32 = 20;
pub const PROACTIVENESS_MAX: u32 = 100;

// The hook compaction moves folios with, its errors and modes: the
// migration core's (`aspace::migrate::MmMigrator` implements it).  `src`
// comes isolated from the LRU (`LRU` clear, `ACTIVE` telling its list)
// with the isolation reference the caller holds and keeps; on `Err` the
// caller puts it back and frees `dst`.  `MigrateMode::Async` (direct
// compaction's first try) also limits the migrate scanner to movable
// pageblocks; `Sync` (`compact_memory`, kcompactd, a retry) scans all.
pub use crate::aspace::migrate::{FolioMigrator, MigrateError, MigrateMode};

/// What an allocation that failed at order > 0 asks of compaction
/// (the compaction half of the gfp mask Linux's `vma_thp_gfp_mask` picks
/// from the THP `defrag` mode; see `thp::DefragMode::fault_compaction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactRequest {
    /// Compact in the allocating thread.  `retry`: after the first
    /// (async) attempt fails, try once more synchronously (the madvised
    /// `GFP_TRANSHUGE` cases); otherwise one async attempt
    /// (`__GFP_NORETRY`).
    Direct { retry: bool },
    /// Wake kswapd and kcompactd and fail fast (`__GFP_KSWAPD_RECLAIM`).
    Wake,
}

/// The context's compaction hook: `(order, request)` → whether a direct
/// compaction ran (see `MmCtx::set_compact_hook`).
pub type CompactHook = dyn Fn(u32, CompactRequest) -> bool + Sync;

/// What one run is for (Linux's `struct compact_control`, the inputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactControl {
    /// The order the run is for; `None` is Linux's order -1, the whole
    /// zone (`compact_memory`, proactive).
    pub order: Option<u32>,
    pub mode: MigrateMode,
    /// `vm.compact_unevictable_allowed`: mlocked folios may move.
    pub unevictable_allowed: bool,
    /// Proactive run: stop once the zone's fragmentation score is at or
    /// below this (Linux checks it at each pageblock boundary).
    pub proactive_low: Option<u32>,
}

impl CompactControl {
    /// The whole-zone synchronous run `echo 1 > compact_memory` does.
    pub const fn whole_zone(unevictable_allowed: bool) -> Self {
        Self {
            order: None,
            mode: MigrateMode::Sync,
            unevictable_allowed,
            proactive_low: None,
        }
    }

    /// A run for an allocation of `order`.
    pub const fn for_order(order: u32, mode: MigrateMode, unevictable_allowed: bool) -> Self {
        Self {
            order: Some(order),
            mode,
            unevictable_allowed,
            proactive_low: None,
        }
    }

    /// Free blocks of this order or more are not taken as destinations.
    fn free_limit(&self) -> u32 {
        match self.order {
            Some(o) if o > 0 => o,
            _ => PAGEBLOCK_ORDER,
        }
    }
}

/// How a run ended (Linux's `enum compact_result`, the values that matter
/// here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactStatus {
    /// Not tried: too little free memory, or the failure would be for
    /// lack of memory rather than fragmentation (`compaction_suitable`).
    Skipped,
    /// The request can be met now (also without running at all).
    Success,
    /// The scanners met without meeting the request.
    Complete,
}

/// What one run did, for `/proc/vmstat`'s `compact_*` counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactResult {
    pub status: CompactStatus,
    /// Pages the migrate scanner looked at (`compact_migrate_scanned`).
    pub migrate_scanned: u64,
    /// Pages the free scanner looked at (`compact_free_scanned`).
    pub free_scanned: u64,
    /// Pages isolated, sources and free blocks together
    /// (`compact_isolated`).
    pub isolated: u64,
    /// Folios moved.
    pub migrated: u64,
    /// Folios the migrator failed to move; they were put back.  (The one
    /// folio that finds no destination when the scanners meet is put back
    /// without counting, as Linux's `compaction_alloc` failing ends the
    /// run rather than failing a migration.)
    pub failed: u64,
}

impl CompactResult {
    const fn new(status: CompactStatus) -> Self {
        Self {
            status,
            migrate_scanned: 0,
            free_scanned: 0,
            isolated: 0,
            migrated: 0,
            failed: 0,
        }
    }

    /// Adds the scanners' counters to `/proc/vmstat`
    /// (`compact_{migrate,free}_scanned`, `compact_isolated`, and for
    /// kcompactd's runs also `compact_daemon_{migrate,free}_scanned`).
    pub fn count(&self, stats: &crate::thp::ThpStats, daemon: bool) {
        use crate::thp::VmEvent as E;
        stats.count_n(E::CompactMigrateScanned, self.migrate_scanned);
        stats.count_n(E::CompactFreeScanned, self.free_scanned);
        stats.count_n(E::CompactIsolated, self.isolated);
        if daemon {
            stats.count_n(E::CompactDaemonMigrateScanned, self.migrate_scanned);
            stats.count_n(E::CompactDaemonFreeScanned, self.free_scanned);
        }
    }

    /// Adds `o`'s counters to these (a run over several zones).
    pub fn add(&mut self, o: &CompactResult) {
        self.migrate_scanned += o.migrate_scanned;
        self.free_scanned += o.free_scanned;
        self.isolated += o.isolated;
        self.migrated += o.migrated;
        self.failed += o.failed;
    }
}

/// Linux's `compaction_suitable` for the zone holding `pfn` and an
/// allocation of `order`: `Success` if a block of `order` is free already,
/// `Skipped` if free memory is below the watermark (min, or low above
/// [`PAGE_ALLOC_COSTLY_ORDER`]) plus `2 << order` (room for the copies),
/// or if above the costly order the fragmentation index is in
/// `0..=extfrag_threshold` (failure would be for lack of memory); else
/// `None`: compaction may help.
pub fn compaction_suitable(
    alloc: &BuddyAllocator<'_>,
    pfn: u64,
    order: u32,
    extfrag_threshold: u32,
) -> Option<CompactStatus> {
    let w = if order > PAGE_ALLOC_COSTLY_ORDER {
        Wmark::Low
    } else {
        Wmark::Min
    };
    let nid = alloc.node_of_pfn(pfn);
    let free = alloc.node_free(nid);
    if alloc.has_free_block(pfn, order)
        && free >= alloc.node_watermark(nid, Wmark::Min) + (1 << order)
    {
        return Some(CompactStatus::Success);
    }
    if free < alloc.node_watermark(nid, w) + (2 << order) {
        return Some(CompactStatus::Skipped);
    }
    if order > PAGE_ALLOC_COSTLY_ORDER {
        let fi = fragmentation_index(&alloc.zone_free_counts(pfn), order);
        if (0..=extfrag_threshold as i32).contains(&fi) {
            return Some(CompactStatus::Skipped);
        }
    }
    None
}

/// The zone's proactive-compaction score (Linux's
/// `fragmentation_score_zone_weighted` for a node of one zone): the
/// percentage of free memory unusable for [`COMPACTION_HPAGE_ORDER`],
/// weighted by the zone's share of the node.
pub fn fragmentation_score(alloc: &BuddyAllocator<'_>, pfn: u64) -> u32 {
    let present = alloc.node_managed(alloc.node_of_pfn(pfn)).0;
    let score = extfrag_for_order(&alloc.zone_free_counts(pfn), COMPACTION_HPAGE_ORDER);
    weighted_score(score, present, present)
}

/// Compacts the zone `[start, end)` with `cc` (Linux's `compact_zone`);
/// the caller has checked [`compaction_suitable`] where it applies.
pub fn compact_zone<'a>(
    alloc: &'a BuddyAllocator<'a>,
    migrator: &dyn FolioMigrator<'a>,
    start: u64,
    end: u64,
    cc: &CompactControl,
) -> CompactResult {
    if start >= end {
        return CompactResult::new(CompactStatus::Complete);
    }
    // Order-0 folios wait in add batches; the scanner only sees listed ones.
    alloc.lru().drain_all(alloc);
    let mut run = Run {
        alloc,
        migrator,
        cc,
        start,
        end,
        free_pb: (end - 1) / PAGEBLOCK_FRAMES + 1,
        pool: FreePool::new(),
        r: CompactResult::new(CompactStatus::Complete),
    };
    let mut pb = start / PAGEBLOCK_FRAMES;
    while pb < run.free_pb {
        let moved = run.migrate_pageblock(pb);
        pb += 1;
        if moved {
            // The sources went to this CPU's cache: merge them into the
            // buddy so the finish check sees them (Linux drains there too).
            alloc.drain_local();
        }
        if finished(alloc, cc, start) {
            run.r.status = CompactStatus::Success;
            break;
        }
    }
    alloc.putback_isolated(run.pool.drain());
    alloc.drain_all();
    if run.r.status != CompactStatus::Success && finished(alloc, cc, start) {
        run.r.status = CompactStatus::Success;
    }
    run.r
}

/// The part of pageblock `pb` inside `[start, end)`.
fn pb_span(pb: u64, start: u64, end: u64) -> (u64, u64) {
    (
        (pb * PAGEBLOCK_FRAMES).max(start),
        ((pb + 1) * PAGEBLOCK_FRAMES).min(end),
    )
}

/// Linux's `__compact_finished`, the parts that apply: the request is met.
fn finished(alloc: &BuddyAllocator<'_>, cc: &CompactControl, pfn: u64) -> bool {
    if let Some(low) = cc.proactive_low {
        return fragmentation_score(alloc, pfn) <= low;
    }
    match cc.order {
        Some(o) => alloc.has_free_block(pfn, o),
        None => false,
    }
}

/// Whether the folio whose head word is `w` is a candidate: anonymous, on
/// the LRU, and not mlocked unless `compact_unevictable_allowed`.
fn movable(w: u32, cc: &CompactControl) -> bool {
    let f = PageFlags::from_bits_truncate(w);
    f.contains(PageFlags::ANON | PageFlags::LRU)
        && (cc.unevictable_allowed || !f.contains(PageFlags::MLOCKED))
}

/// One run's state (Linux's `struct compact_control`, the working part).
struct Run<'a, 'r> {
    alloc: &'a BuddyAllocator<'a>,
    migrator: &'r dyn FolioMigrator<'a>,
    cc: &'r CompactControl,
    start: u64,
    end: u64,
    /// The lowest pageblock the free scanner has taken (one past the top
    /// before it starts); the migrate scanner stays below it.
    free_pb: u64,
    pool: FreePool,
    r: CompactResult,
}

impl<'a> Run<'a, '_> {
    /// The migrate scanner over pageblock `pb`: isolates each movable
    /// folio, takes a destination of its order from the pool and migrates
    /// it.  Returns true if something moved.
    fn migrate_pageblock(&mut self, pb: u64) -> bool {
        let (s, e) = pb_span(pb, self.start, self.end);
        let alloc = self.alloc;
        if self.cc.mode == MigrateMode::Async
            && alloc.pageblock_migratetype(s) != Migratetype::Movable
        {
            return false;
        }
        let mm = alloc.memmap();
        let mut moved = false;
        let mut pfn = s;
        while pfn < e {
            let w = mm.desc(pfn).map_or(0, |d| d.flags.load(Relaxed));
            // A racy snapshot: a stale order only makes the scan skip less
            // or more; isolation checks again under the LRU lock.
            let order = order_of(w).min(MAX_ORDER);
            let mut step = 1u64;
            match FrameState::from_word(w) {
                FrameState::Free | FrameState::Pcp => step = 1 << order,
                FrameState::Head => {
                    step = 1 << order;
                    if order < PAGEBLOCK_ORDER
                        && self.cc.order.is_none_or(|t| order < t)
                        && movable(w, self.cc)
                        && let Some(src) = alloc.lru().isolate_folio(alloc, pfn)
                    {
                        step = src.nr_pages();
                        self.r.isolated += step;
                        match self.migrate_one(src, pb) {
                            Some(ok) => moved |= ok,
                            None => {
                                // No destination left above: the scanners met.
                                self.r.migrate_scanned += e - pfn;
                                self.free_pb = pb + 1;
                                return moved;
                            }
                        }
                    }
                }
                _ => {}
            }
            self.r.migrate_scanned += step.min(e - pfn);
            pfn += step;
        }
        moved
    }

    /// Migrates the isolated `src` into a destination from the pool; puts
    /// it back on failure.  `Some(moved)`, or `None` when no destination
    /// could be found.
    fn migrate_one(&mut self, src: FolioRef<'a>, pb: u64) -> Option<bool> {
        let alloc = self.alloc;
        let active = src.test(PageFlags::ACTIVE);
        let Some(dst) = self.dest(src.order(), pb) else {
            alloc.lru().putback(src, active);
            return None;
        };
        match self.migrator.migrate_to(*src, dst) {
            Ok(()) => {
                self.r.migrated += 1;
                // The isolation reference: the source's last, normally.
                drop(src);
                Some(true)
            }
            Err(_) => {
                self.r.failed += 1;
                // `dst` is ours again: back to the buddy.
                dst.put();
                alloc.lru().putback(src, active);
                Some(false)
            }
        }
    }

    /// A destination folio of `order` from the pool, running the free
    /// scanner down over the pageblocks above the migrate scanner's `pb`
    /// until the pool has one; `None` when the scanners met first.
    fn dest(&mut self, order: u32, pb: u64) -> Option<Folio<'a>> {
        let limit = self.cc.free_limit();
        while !self.pool.has(order) && self.free_pb > pb + 1 {
            self.free_pb -= 1;
            let (s, e) = pb_span(self.free_pb, self.start, self.end);
            let (pool, mut isolated) = (&mut self.pool, 0);
            self.r.free_scanned += self.alloc.isolate_free_range(s, e, limit, |p, o| {
                pool.add(p, o);
                isolated += 1u64 << o;
            });
            self.r.isolated += isolated;
        }
        let pfn = self.pool.take(order)?;
        Some(self.alloc.prep_isolated(pfn, order))
    }
}
