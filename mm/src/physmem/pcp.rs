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
//! room for [`PCP_MIN_HIGH`] blocks (four 2 MiB blocks per type at the PMD
//! order).  Refill and drain move a quarter of that (`batch`, at least two
//! blocks, as in Linux) under a single zone-lock hold.  The floor matters
//! for mTHP: with room for one block, a CPU that allocates and frees 2 MiB
//! folios in random order went to the zone (lock, merge, split) on almost
//! every operation; with four blocks and batches of two, the cache absorbs
//! most of that churn, at the cost of up to 8 MiB per type and CPU held
//! back (returned whenever an allocation would otherwise fail).
//!
//! # Exclusion
//! A CPU's cache has no lock: only its own CPU uses it, with interrupts
//! masked through [`CpuOps`](crate::cpu::CpuOps) — the classic Linux design (`local_irq_save`
//! around the pcp lists) rather than today's pcp spinlock.  An atomic
//! read-modify-write costs about 6 ns on the development host, and a lock
//! per allocation plus one per free would triple the cost of the
//! order-0 fast path.  Refill and drain take the zone lock for a whole
//! batch.  Another CPU's cache is drained by running
//! `BuddyAllocator::drain_local` on that CPU (`CpuOps::call_on_others`,
//! an IPI in the kernel), or directly once that CPU is quiescent.
//! Debug builds enforce the rule with a busy flag and panic on violation.

use core::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use crate::physmem::buddy::NR_ORDERS;
use crate::physmem::frame_flags::{FrameState, LIST_UNMOVABLE, word};
use crate::physmem::memmap::{Memmap, NO_FRAME};

/// Highest order with a per-CPU cache (the PMD order).
pub const PCP_MAX_ORDER: u32 = 9;
pub(crate) const NR_PCP_ORDERS: usize = PCP_MAX_ORDER as usize + 1;
/// Page budget of one cache list of order 1 and up before it drains back
/// to the zone.
pub const PCP_HIGH_PAGES: u32 = 256;
/// Page budget of the order-0 lists: 4 MiB, so the 512 order-0 frees of a
/// PMD collapse or of a 2 MiB munmap stay in the cache for the faults that
/// follow instead of going through the zone and back (which was half of a
/// collapse's freeing work).  Linux's per-CPU lists reach that size by
/// auto-tuning `high` up when a CPU frees in bulk.  Only order 0 gets it:
/// larger folios come and go a few per 2 MiB, and a 4 MiB budget on every
/// order would park tens of MiB per CPU.
pub const PCP_HIGH_PAGES_ORDER0: u32 = 1024;
/// Pages moved per refill or drain (independent of `high`: refills take
/// only what a burst needs, which keeps small machines from scattering
/// their large blocks over every order's cache).
pub const PCP_BATCH_PAGES: u32 = 64;
/// Number of mobility types (unmovable, movable).
pub(crate) const NR_MT: usize = 2;

/// Fewest blocks a cache list may hold, whatever the order.
pub const PCP_MIN_HIGH: u32 = 4;

/// Blocks a list may hold before a free drains `batch` of them.
#[inline]
pub const fn pcp_high(order: u32) -> u32 {
    if order == 0 {
        return PCP_HIGH_PAGES_ORDER0;
    }
    let b = PCP_HIGH_PAGES >> order;
    if b < PCP_MIN_HIGH { PCP_MIN_HIGH } else { b }
}

/// [`pcp_high`] of each cached order, for the free fast path (one load
/// instead of a variable shift and a compare).
pub(crate) const PCP_HIGH: [u32; NR_PCP_ORDERS] = {
    let mut t = [0; NR_PCP_ORDERS];
    let mut o = 0;
    while o < NR_PCP_ORDERS {
        t[o] = pcp_high(o as u32);
        o += 1;
    }
    t
};

/// Blocks moved per refill or drain.
#[inline]
pub const fn pcp_batch(order: u32) -> u32 {
    let b = PCP_BATCH_PAGES >> order;
    if b < 2 { 2 } else { b }
}

/// What the allocator needs from the CPU layer.
///
/// The allocator calls `irq_save` before taking any of its locks and
/// `irq_restore` after releasinges the most recently freed (cache-hot) block.  A stack rather than
/// Linux's doubly linked list because push and pop then touch only the
/// block's own descriptor, never a neighbour's: with random frees over a
/// large memmap that neighbour is a cache miss.  The price is that a drain
/// returns the hottest blocks instead of the coldest.
///
/// No lock: only the owning CPU touches its lists, with interrupts masked.
/// The fields are atomics only so the structure can be shared (`&`) without
/// `unsafe`; every access is a relaxed load or store, i.e. a plain move.
/// Debug builds check the ownership rule with a busy flag.
pub(crate) struct PcpLists {
    head: [[AtomicU32; NR_PCP_ORDERS]; NR_MT],
    count: [[AtomicU32; NR_PCP_ORDERS]; NR_MT],
    /// Allocations served on this CPU, by order (summed by `stats`).
    allocs: [AtomicU64; NR_ORDERS],
    /// Debug builds: set while some CPU is inside this cache.
    busy: AtomicBool,
}

/// Proof of (debug-checked) exclusive use of one CPU's cache.
pub(crate) struct PcpRef<'p> {
    p: &'p PcpLists,
}

impl Drop for PcpRef<'_> {
    #[inline]
    fn drop(&mut self) {
        if cfg!(debug_assertions) {
            self.p.busy.store(false, Release);
        }
    }
}

impl core::ops::Deref for PcpRef<'_> {
    type Target = PcpLists;
    #[inline]
    fn deref(&self) -> &PcpLists {
        self.p
    }
}

impl PcpLists {
    pub(crate) const fn new() -> Self {
        Self {
            head: [const { [const { AtomicU32::new(NO_FRAME) }; NR_PCP_ORDERS] }; NR_MT],
            count: [const { [const { AtomicU32::new(0) }; NR_PCP_ORDERS] }; NR_MT],
            allocs: [const { AtomicU64::new(0) }; NR_ORDERS],
            busy: AtomicBool::new(false),
        }
    }

    /// Enters the cache.  The caller runs on the owning CPU with interrupts
    /// masked, or the owner is quiescent (offline, or a joined host thread).
    /// Debug builds panic if that rule is broken (two CPUs sharing an id,
    /// an interrupt handler allocating without masking).
    #[inline]
    pub(crate) fn enter(&self, cpu: usize) -> PcpRef<'_> {
        if cfg!(debug_assertions) && self.busy.swap(true, Acquire) {
            panic!(
                "buddy: per-CPU cache of cpu {cpu} entered twice (shared cpu id or unmasked interrupt)"
            );
        }
        PcpRef { p: self }
    }

    /// Counts one allocation of `order` (owner only).
    #[inline]
    pub(crate) fn count_alloc(&self, order: u32) {
        let c = &self.allocs[order as usize];
        c.store(c.load(Relaxed) + 1, Relaxed);
    }

    pub(crate) fn allocs(&self, order: usize) -> u64 {
        self.allocs[order].load(Relaxed)
    }

    /// Pages held by this CPU's cache.
    pub(crate) fn pages(&self) -> u64 {
        let mut n = 0;
        for mt in 0..NR_MT {
            for o in 0..NR_PCP_ORDERS {
                n += (self.count[mt][o].load(Relaxed) as u64) << o;
            }
        }
        n
    }

    /// Parks the free block at `idx` on top of stack (`mt`, `order`);
    /// returns the stack's new length (saves the caller a reload of the
    /// counter it just stored, which waits on store forwarding).  `keep`
    /// is the block's `POISONED` mark (0 or the bit), which the caller
    /// knows: the block's flags word is written, not read.
    #[inline]
    pub(crate) fn push(&self, mm: &Memmap<'_>, mt: usize, order: u32, idx: u32, keep: u32) -> u32 {
        let o = order as usize;
        let d = mm.at(idx);
        let list = if mt == 0 { LIST_UNMOVABLE } else { 0 };
        d.set_fresh(word(FrameState::Pcp, order, list | keep));
        d.link_next.store(self.head[mt][o].load(Relaxed), Relaxed);
        self.head[mt][o].store(idx, Relaxed);
        let c = &self.count[mt][o];
        let n = c.load(Relaxed) + 1;
        c.store(n, Relaxed);
        n
    }

    /// Takes the top (hottest) block of stack (`mt`, `order`).  The block
    /// keeps state `Pcp` until the caller re-labels it.
    #[inline]
    pub(crate) fn pop(&self, mm: &Memmap<'_>, mt: usize, order: u32) -> Option<u32> {
        let o = order as usize;
        let idx = self.head[mt][o].load(Relaxed);
        if idx == NO_FRAME {
            return None;
        }
        self.head[mt][o].store(mm.at(idx).link_next.load(Relaxed), Relaxed);
        let c = &self.count[mt][o];
        c.store(c.load(Relaxed) - 1, Relaxed);
        Some(idx)
    }

    /// Calls `f(mt, order, idx)` for every cached block (invariant checks).
    pub(crate) fn for_each(&self, mm: &Memmap<'_>, mut f: impl FnMut(usize, u32, u32)) {
        for mt in 0..NR_MT {
            for o in 0..NR_PCP_ORDERS {
                let mut i = self.head[mt][o].load(Relaxed);
                while i != NO_FRAME {
                    f(mt, o as u32, i);
                    i = mm.at(i).link_next.load(Relaxed);
                }
            }
        }
    }
}

/// One CPU's cache on its own cache line, so CPUs do not false-share.
#[repr(align(64))]
pub(crate) struct PcpSlot(pub(crate) PcpLists);
