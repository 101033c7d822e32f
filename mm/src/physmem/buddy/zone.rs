//! The zone: free lists per (mobility type, order) behind the zone lock,
//! and the operations on them (push, unlink, take the smallest block and
//! split it, merge a freed block with its buddies, steal a pageblock from
//! the other type).  Everything in this file runs with the zone lock held;
//! the rest of the allocator only reaches the lists through it.
//!
//! There is one zone per NUMA node (see [`crate::physmem::node`]), each
//! holding only its node's frames: a merge never takes a buddy from
//! another node, and `BuddyAllocator::zone_of` finds a frame's zone.

use core::sync::atomic::Ordering::Relaxed;

use super::{MAX_ORDER, MOVABLE, NR_ORDERS, UNMOVABLE};
use crate::physmem::frame_flags::{FrameState, LIST_UNMOVABLE, order_of, word};
use crate::physmem::memmap::{
    Memmap, NO_FRAME, OWNER_PB_UNMOVABLE, PAGEBLOCK_FRAMES, PAGEBLOCK_ORDER,
};
use crate::physmem::node::NodeMap;
use crate::physmem::pcp::NR_MT;

/// Everything behind the zone lock.
pub(super) struct Zone {
    /// First block of each free list (`NO_FRAME` when empty).
    pub(super) head: [[u32; NR_ORDERS]; NR_MT],
    /// Blocks on each free list.
    pub(super) nr_free: [[u64; NR_ORDERS]; NR_MT],
    /// Pages on the free lists (the sum over `nr_free`), which
    /// [`ZoneGuard`](super::ZoneGuard) publishes when the lock is dropped.
    pub(super) free: u64,
    /// Frames handed to the allocator by `add_free_range`.
    pub(super) managed: u64,
    /// Frames in state `Reserved`.
    pub(super) reserved: u64,
    /// Allocations served without a per-CPU cache, by order.
    pub(super) direct_allocs: [u64; NR_ORDERS],
    /// Pageblocks stolen by the other mobility type.
    pub(super) steals: u64,
    /// The node whose frames this zone holds.
    pub(super) node: u8,
}

impl Zone {
    /// Pages on the free lists.
    pub(super) fn free_pages(&self) -> u64 {
        self.free
    }
}

#[inline]
const fn list_bit(mt: usize) -> u32 {
    if mt == UNMOVABLE { LIST_UNMOVABLE } else { 0 }
}

#[inline]
pub(super) const fn list_mt(w: u32) -> usize {
    if w & LIST_UNMOVABLE != 0 {
        UNMOVABLE
    } else {
        MOVABLE
    }
}

#[inline]
pub(super) fn pageblock_mt(mm: &Memmap<'_>, idx: u32) -> usize {
    if mm.pageblock_unmovable(idx) {
        UNMOVABLE
    } else {
        MOVABLE
    }
}

impl Zone {
    pub(super) const fn new(node: u8) -> Self {
        Self {
            node,
            head: [[NO_FRAME; NR_ORDERS]; NR_MT],
            nr_free: [[0; NR_ORDERS]; NR_MT],
            free: 0,
            managed: 0,
            reserved: 0,
            direct_allocs: [0; NR_ORDERS],
            steals: 0,
        }
    }

    /// Pushes the block at `idx` on list (`mt`, `order`) and labels it free.
    #[inline]
    pub(super) fn add(&mut self, mm: &Memmap<'_>, idx: u32, order: u32, mt: usize) {
        let o = order as usize;
        let d = mm.at(idx);
        d.set_state(word(FrameState::Free, order, list_bit(mt)));
        let old = self.head[mt][o];
        d.link_prev.store(NO_FRAME, Relaxed);
        d.link_next.store(old, Relaxed);
        if old != NO_FRAME {
            mm.at(old).link_prev.store(idx, Relaxed);
        }
        self.head[mt][o] = idx;
        self.nr_free[mt][o] += 1;
        self.free += 1 << o;
    }

    /// Unlinks the block at `idx` from list (`mt`, `order`); its state is
    /// left for the caller to change.
    #[inline]
    pub(super) fn del(&mut self, mm: &Memmap<'_>, idx: u32, order: u32, mt: usize) {
        let o = order as usize;
        let d = mm.at(idx);
        let prev = d.link_prev.load(Relaxed);
        let next = d.link_next.load(Relaxed);
        if prev == NO_FRAME {
            self.head[mt][o] = next;
        } else {
            mm.at(prev).link_next.store(next, Relaxed);
        }
        if next != NO_FRAME {
            mm.at(next).link_prev.store(prev, Relaxed);
        }
        self.nr_free[mt][o] -= 1;
        self.free -= 1 << o;
    }

    /// Takes a block of exactly `order` from `mt`'s lists, splitting the
    /// smallest larger block if needed.  The returned head is labelled
    /// `Body` so no concurrent merge mistakes it for a free buddy.
    #[inline]
    pub(super) fn take_smallest(&mut self, mm: &Memmap<'_>, order: u32, mt: usize) -> Option<u32> {
        for o in order..=MAX_ORDER {
            let idx = self.head[mt][o as usize];
            if idx == NO_FRAME {
                continue;
            }
            self.del(mm, idx, o, mt);
            let mut cur = o;
            while cur > order {
                cur -= 1;
                let buddy = idx + (1 << cur);
                // A half that is a pageblock or more follows its own tag.
                let bmt = if cur >= PAGEBLOCK_ORDER {
                    pageblock_mt(mm, buddy)
                } else {
                    mt
                };
                self.add(mm, buddy, cur, bmt);
            }
            mm.at(idx).set_state(word(FrameState::Body, 0, 0));
            return Some(idx);
        }
        None
    }

    pub(super) fn retag(mm: &Memmap<'_>, tag_idx: u32, mt: usize) {
        let o = &mm.at(tag_idx).owner;
        if mt == UNMOVABLE {
            o.fetch_or(OWNER_PB_UNMOVABLE, Relaxed);
        } else {
            o.fetch_and(!OWNER_PB_UNMOVABLE, Relaxed);
        }
    }

    /// Retags the pageblock whose tag frame is `tag_idx` as `mt` and moves
    /// every free block inside it onto `mt`'s lists.  Walks the pageblock by
    /// block heads (at most 512 steps).
    pub(super) fn move_pageblock(&mut self, mm: &Memmap<'_>, tag_idx: u32, mt: usize) {
        Self::retag(mm, tag_idx, mt);
        let end_pfn = (mm.pfn_of(tag_idx) | (PAGEBLOCK_FRAMES - 1)) + 1;
        let end = if end_pfn >= mm.end_pfn() {
            mm.len() as u32
        } else {
            mm.idx_of(end_pfn)
        };
        let mut i = tag_idx;
        while i < end {
            let w = mm.at(i).flags.load(Relaxed);
            match FrameState::from_word(w) {
                FrameState::Free => {
                    let o = order_of(w);
                    let from = list_mt(w);
                    if from != mt {
                        self.del(mm, i, o, from);
                        self.add(mm, i, o, mt);
                    }
                    i += 1 << o;
                }
                FrameState::Head | FrameState::Pcp => i += 1 << order_of(w),
                _ => i += 1,
            }
        }
    }

    /// `mt` ran dry: steal from the other type, starting with its largest
    /// free block.  Returns false if the other type is empty too.
    pub(super) fn steal(&mut self, mm: &Memmap<'_>, order: u32, mt: usize) -> bool {
        let other = 1 - mt;
        for o in (order..=MAX_ORDER).rev() {
            let idx = self.head[other][o as usize];
            if idx == NO_FRAME {
                continue;
            }
            if o >= PAGEBLOCK_ORDER {
                self.del(mm, idx, o, other);
                for k in 0..(1u32 << (o - PAGEBLOCK_ORDER)) {
                    let pb = idx + (k << PAGEBLOCK_ORDER);
                    Self::retag(mm, mm.tag_idx(pb), mt);
                }
                self.add(mm, idx, o, mt);
            } else {
                self.move_pageblock(mm, mm.tag_idx(idx), mt);
            }
            self.steals += 1;
            return true;
        }
        false
    }

    /// Takes a block of `order` for type `mt`, stealing if it must.
    #[inline]
    pub(super) fn rmqueue(&mut self, mm: &Memmap<'_>, order: u32, mt: usize) -> Option<u32> {
        if let Some(i) = self.take_smallest(mm, order, mt) {
            return Some(i);
        }
        if self.steal(mm, order, mt) {
            return self.take_smallest(mm, order, mt);
        }
        None
    }

    /// Returns the block at `idx` to the free lists, merging with free
    /// buddies as far as possible (never with a buddy on another node:
    /// node boundaries need not be aligned to `MAX_ORDER`).
    pub(super) fn free_block(
        &mut self,
        mm: &Memmap<'_>,
        nodes: &NodeMap,
        mut idx: u32,
        mut order: u32,
    ) {
        mm.at(idx).set_state(word(FrameState::Body, 0, 0));
        while order < MAX_ORDER {
            let bpfn = mm.pfn_of(idx) ^ (1 << order);
            if !mm.contains(bpfn) {
                break;
            }
            let bidx = mm.idx_of(bpfn);
            let bd = mm.at(bidx);
            let bw = bd.flags.load(Relaxed);
            if FrameState::from_word(bw) != FrameState::Free || order_of(bw) != order {
                break;
            }
            if nodes.nr_nodes() > 1 && nodes.node_of_pfn(bpfn) != self.node as usize {
                break;
            }
            self.del(mm, bidx, order, list_mt(bw));
            bd.set_state(word(FrameState::Body, 0, 0));
            idx = idx.min(bidx);
            order += 1;
        }
        self.add(mm, idx, order, pageblock_mt(mm, idx));
    }
}
