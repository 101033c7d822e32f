//! Compaction's access to the zone (Linux's `__isolate_free_page` and
//! the pageblock queries of mm/compaction.c): taking free blocks off the
//! free lists into a caller-owned pool, turning a pooled block into a new
//! folio, and returning what is left.
//!
//! An isolated block is off every free list with its head relabelled
//! `Body`, exactly like a block `Zone::take_smallest` just took: no merge
//! mistakes it for a free buddy (merging only looks for `Free` heads) and
//! no allocation can find it.  Its owner must either turn it into a folio
//! ([`BuddyAllocator::prep_isolated`]) or give it back
//! ([`BuddyAllocator::putback_isolated`]); until then the frames count as
//! allocated in [`BuddyAllocator::stats`].
//!
//! The zone lock is reached through [`BuddyAllocator::zone_of`] only, so
//! splitting the zone per NUMA node changes one line here.

use core::sync::atomic::Ordering::Relaxed;

use super::zone::{list_mt, pageblock_mt};
use super::{AllocFlags, BuddyAllocator, MAX_ORDER, MOVABLE, Migratetype, NR_ORDERS};
use crate::physmem::folio::Folio;
use crate::physmem::frame_flags::{FrameState, order_of, word};
use crate::physmem::memmap::PAGEBLOCK_FRAMES;

/// Free blocks per order in the zone's free lists, both mobility types
/// together: what the fragmentation indices are computed from.
pub type FreeCounts = [u64; NR_ORDERS];

impl<'a> BuddyAllocator<'a> {
    /// The pfn span `[start, end)` of the zone holding `pfn` (its node's
    /// ranges, from the lowest to the highest, within the memmap; the
    /// whole memmap with one node): what one compaction run covers.
    pub fn zone_span(&self, pfn: u64) -> (u64, u64) {
        let (lo, hi) = (self.memmap.base_pfn(), self.memmap.end_pfn());
        if self.nodes.nr_nodes() == 1 {
            return (lo, hi);
        }
        let node = self.nodes.node_of_pfn(pfn);
        let mut span: Option<(u64, u64)> = None;
        for r in self
            .nodes
            .ranges()
            .iter()
            .filter(|r| r.node as usize == node)
        {
            span = Some(match span {
                None => (r.start_pfn, r.end_pfn),
                Some((a, b)) => (a.min(r.start_pfn), b.max(r.end_pfn)),
            });
        }
        let (a, b) = span.unwrap_or((lo, hi));
        (a.max(lo), b.min(hi).max(a.max(lo)))
    }

    /// The mobility type of the pageblock holding `pfn`.
    pub fn pageblock_migratetype(&self, pfn: u64) -> Migratetype {
        Migratetype::from_index(pageblock_mt(&self.memmap, self.memmap.idx_of(pfn)))
    }

    /// Free blocks per order of the zone holding `pfn` (both types).
    pub fn zone_free_counts(&self, pfn: u64) -> FreeCounts {
        let _irq = self.cpu.irq_guard();
        let z = self.zone_of(pfn).lock();
        let mut c = [0; NR_ORDERS];
        for (o, n) in c.iter_mut().enumerate() {
            *n = z.nr_free[0][o] + z.nr_free[1][o];
        }
        c
    }

    /// True if the zone's movable free lists (or any list, for a block of
    /// a pageblock or more, which a steal would retag whole) hold a block
    /// of `order` or larger: an allocation of `order` would succeed now
    /// (the free-list half of Linux's `__compact_finished`).
    pub fn has_free_block(&self, pfn: u64, order: u32) -> bool {
        let _irq = self.cpu.irq_guard();
        let z = self.zone_of(pfn).lock();
        (order..=MAX_ORDER).any(|o| {
            z.nr_free[MOVABLE][o as usize] != 0
                || (o >= crate::physmem::memmap::PAGEBLOCK_ORDER
                    && z.nr_free[1 - MOVABLE][o as usize] != 0)
        })
    }

    /// The free scanner's work on one pageblock part `[start, end)` (inside
    /// one pageblock): if the pageblock is movable, takes every free block
    /// whose head lies in the range and whose order is below `limit` off
    /// the free lists and hands it to `take(pfn, order)`, all under one
    /// zone-lock hold.  Returns the pages scanned (Linux's
    /// `compact_free_scanned` counts the same way: a skipped free or
    /// allocated block counts its size).  Unmovable pageblocks are not
    /// touched (Linux's `suitable_migration_target`).
    pub fn isolate_free_range(
        &self,
        start: u64,
        end: u64,
        limit: u32,
        mut take: impl FnMut(u64, u32),
    ) -> u64 {
        let mm = &self.memmap;
        debug_assert!(start < end && (start ^ (end - 1)) < PAGEBLOCK_FRAMES);
        if self.pageblock_migratetype(start) != Migratetype::Movable {
            return 0;
        }
        let _irq = self.cpu.irq_guard();
        let mut z = self.lock_zone_of(start);
        let mut pfn = start;
        let mut scanned = 0;
        while pfn < end {
            let idx = mm.idx_of(pfn);
            let w = mm.at(idx).flags.load(Relaxed);
            let step = match FrameState::from_word(w) {
                FrameState::Free => {
                    let o = order_of(w);
                    if o < limit {
                        z.del(mm, idx, o, list_mt(w));
                        mm.at(idx).set_state(word(FrameState::Body, 0, 0));
                        take(pfn, o);
                    }
                    1u64 << o
                }
                FrameState::Head | FrameState::Pcp => 1u64 << order_of(w),
                _ => 1,
            };
            scanned += step.min(end - pfn);
            pfn += step;
        }
        scanned
    }

    /// Turns the isolated block `[pfn, pfn + 2^order)` (taken by
    /// [`Self::isolate_free_range`], possibly a piece of a larger one)
    /// into a new movable folio with one reference, as an allocation
    /// would (poison checked, head written, not zeroed).
    pub fn prep_isolated(&self, pfn: u64, order: u32) -> Folio<'_> {
        let idx = self.memmap.idx_of(pfn);
        debug_assert_eq!(self.memmap.at(idx).state(), FrameState::Body);
        let cpu = self.cpu.irq_guard_on_cpu().1;
        self.prep_new_folio(idx, order, AllocFlags::USER, MOVABLE, cpu)
    }

    /// Gives isolated blocks (pfn, order) back to the free lists, merging
    /// with their free buddies.
    pub fn putback_isolated(&self, blocks: impl IntoIterator<Item = (u64, u32)>) {
        let mm = &self.memmap;
        let _irq = self.cpu.irq_guard();
        for (pfn, order) in blocks {
            self.lock_zone_of(pfn)
                .free_block(mm, &self.nodes, mm.idx_of(pfn), order);
        }
    }
}
