//! Per-CPU caches of free blocks ("pcp" lists, after Linux's per-CPU pages)
//! and the hook through which the allocator learns the CPU id and masks
//! interrupts.
//!
//! Every order from 0 to [`PCP_MAX_ORDER`] (2 MiB) has a cache, per
//! mobility type.  That covers order 0, all anonymous mTHP orders (2..=9)
//! and order 1 (kernel stacks); caching order 1 costs two list heads and
//! keeps the indexing uniform.  Larger orders are rare and go straight to
//! the zone.
//!
//! A cache is sized in pages, not blocks, so high orders cannot hoard much:
//! at most [`PCP_HIGH_PAGES`] pages (1 MiB) per order and type, but always
//! room for one block, so one 2 MiB block per type can stay hot.  Refill and
//! drain move a quarter of that (`batch`) under a single zone-lock hold.
//!
//! # Locking
//! Each CPU's lists sit behind their own `spin::Mutex`, although only that
//! CPU allocates from them: the lock is uncontended in the fast path (one
//! atomic swap) and lets another CPU drain a remote cache safely
//! (`drain_cpu`).  Lock order: a pcp lock, then the zone lock; never two pcp
//! locks except in ascending CPU order (the invariant checker).  Both locks
//! are taken with interrupts masked through [`CpuOps`], so an interrupt
//! handler that allocates cannot deadlock against the code it interrupted.

use crate::buddy::NR_ORDERS;
use crate::frame_flags::{FrameState, LIST_UNMOVABLE, word};
use crate::memmap::{Memmap, NO_FRAME};

/// Number of CPUs that get a cache; allocations on a CPU id beyond this go
/// straight to the zone (correct, just slower).
pub const MAX_CPUS: usize = 8;
/// Highest order with a per-CPU cache (the PMD order).
pub const PCP_MAX_ORDER: u32 = 9;
pub(crate) const NR_PCP_ORDERS: usize = PCP_MAX_ORDER as usize + 1;
/// Page budget of one cache list before it drains back to the zone.
pub const PCP_HIGH_PAGES: u32 = 256;
/// Number of mobility types (unmovable, movable).
pub(crate) const NR_MT: usize = 2;

/// Blocks a list may hold before a free drains `batch` of them.
#[inline]
pub const fn pcp_high(order: u32) -> u32 {
    let b = PCP_HIGH_PAGES >> order;
    if b == 0 { 1 } else { b }
}

/// Blocks moved per refill or drain.
#[inline]
pub const fn pcp_batch(order: u32) -> u32 {
    let b = pcp_high(order) / 4;
    if b == 0 { 1 } else { b }
}

/// What the allocator needs from the CPU layer.
///
/// The allocator calls `irq_save` before taking any of its locks and
/// `irq_restore` after releasing them, and calls `cpu_id` with interrupts
/// masked (so, with no preemption in this kernel, the id stays valid).
/// Choosing a hook over "callers must mask interrupts" keeps every entry
/// point safe to call from anywhere, including `Folio::put` deep in other
/// code.
pub trait CpuOps: Sync {
    /// The id of the running CPU (0-based; ids ≥ [`MAX_CPUS`] bypass the caches).
    fn cpu_id(&self) -> usize;
    /// Masks interrupts on this CPU; returns the state to restore.
    fn irq_save(&self) -> usize;
    /// Restores the state `irq_save` returned.
    fn irq_restore(&self, saved: usize);
}

/// One CPU and no interrupts to mask: the host tests, and the kernel before
/// it brings up interrupts.
pub struct SingleCpu;

impl CpuOps for SingleCpu {
    fn cpu_id(&self) -> usize {
        0
    }
    fn irq_save(&self) -> usize {
        0
    }
    fn irq_restore(&self, _saved: usize) {}
}

/// Interrupts masked for the guard's lifetime.
pub(crate) struct IrqGuard<'a> {
    ops: &'a dyn CpuOps,
    saved: usize,
}

impl<'a> IrqGuard<'a> {
    #[inline]
    pub(crate) fn new(ops: &'a dyn CpuOps) -> Self {
        let saved = ops.irq_save();
        Self { ops, saved }
    }
}

impl Drop for IrqGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.ops.irq_restore(self.saved);
    }
}

/// One CPU's cached free blocks: a doubly linked list per (type, order)
/// threaded through the descriptors' link fields (state `Pcp`).  Allocation
/// takes the most recently freed (cache-hot) block from the front; drains
/// return the coldest from the back.
pub(crate) struct PcpLists {
    head: [[u32; NR_PCP_ORDERS]; NR_MT],
    tail: [[u32; NR_PCP_ORDERS]; NR_MT],
    count: [[u32; NR_PCP_ORDERS]; NR_MT],
    /// Allocations served on this CPU, by order (summed by `stats`).
    pub(crate) allocs: [u64; NR_ORDERS],
}

impl PcpLists {
    pub(crate) const fn new() -> Self {
        Self {
            head: [[NO_FRAME; NR_PCP_ORDERS]; NR_MT],
            tail: [[NO_FRAME; NR_PCP_ORDERS]; NR_MT],
            count: [[0; NR_PCP_ORDERS]; NR_MT],
            allocs: [0; NR_ORDERS],
        }
    }

    #[inline]
    pub(crate) fn count(&self, mt: usize, order: u32) -> u32 {
        self.count[mt][order as usize]
    }

    /// Pages held by this CPU's cache.
    pub(crate) fn pages(&self) -> u64 {
        let mut n = 0;
        for mt in 0..NR_MT {
            for o in 0..NR_PCP_ORDERS {
                n += (self.count[mt][o] as u64) << o;
            }
        }
        n
    }

    /// Parks the free block at `idx` at the front of list (`mt`, `order`).
    #[inline]
    pub(crate) fn push(&mut self, mm: &Memmap<'_>, mt: usize, order: u32, idx: u32) {
        let o = order as usize;
        let d = mm.at(idx);
        let list = if mt == 0 { LIST_UNMOVABLE } else { 0 };
        d.set_state(mm.is_tag_frame(idx), word(FrameState::Pcp, order, list));
        let old = self.head[mt][o];
        d.link_prev
            .store(NO_FRAME, core::sync::atomic::Ordering::Relaxed);
        d.link_next
            .store(old, core::sync::atomic::Ordering::Relaxed);
        if old == NO_FRAME {
            self.tail[mt][o] = idx;
        } else {
            mm.at(old)
                .link_prev
                .store(idx, core::sync::atomic::Ordering::Relaxed);
        }
        self.head[mt][o] = idx;
        self.count[mt][o] += 1;
    }

    /// Takes the hottest block of list (`mt`, `order`).  The block keeps
    /// state `Pcp` until the caller re-labels it.
    #[inline]
    pub(crate) fn pop_front(&mut self, mm: &Memmap<'_>, mt: usize, order: u32) -> Option<u32> {
        let o = order as usize;
        let idx = self.head[mt][o];
        if idx == NO_FRAME {
            return None;
        }
        let next = mm
            .at(idx)
            .link_next
            .load(core::sync::atomic::Ordering::Relaxed);
        self.head[mt][o] = next;
        if next == NO_FRAME {
            self.tail[mt][o] = NO_FRAME;
        } else {
            mm.at(next)
                .link_prev
                .store(NO_FRAME, core::sync::atomic::Ordering::Relaxed);
        }
        self.count[mt][o] -= 1;
        Some(idx)
    }

    /// Takes the coldest block of list (`mt`, `order`).
    #[inline]
    pub(crate) fn pop_back(&mut self, mm: &Memmap<'_>, mt: usize, order: u32) -> Option<u32> {
        let o = order as usize;
        let idx = self.tail[mt][o];
        if idx == NO_FRAME {
            return None;
        }
        let prev = mm
            .at(idx)
            .link_prev
            .load(core::sync::atomic::Ordering::Relaxed);
        self.tail[mt][o] = prev;
        if prev == NO_FRAME {
            self.head[mt][o] = NO_FRAME;
        } else {
            mm.at(prev)
                .link_next
                .store(NO_FRAME, core::sync::atomic::Ordering::Relaxed);
        }
        self.count[mt][o] -= 1;
        Some(idx)
    }

    /// Calls `f(idx, order)` for every cached block (invariant checks).
    pub(crate) fn for_each(&self, mm: &Memmap<'_>, mut f: impl FnMut(usize, u32, u32)) {
        for mt in 0..NR_MT {
            for o in 0..NR_PCP_ORDERS {
                let mut i = self.head[mt][o];
                while i != NO_FRAME {
                    f(mt, o as u32, i);
                    i = mm
                        .at(i)
                        .link_next
                        .load(core::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}

/// A pcp lock on its own cache line, so CPUs do not false-share.
#[repr(align(64))]
pub(crate) struct PcpSlot(pub(crate) spin::Mutex<PcpLists>);
