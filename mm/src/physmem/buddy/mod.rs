//! The folio buddy allocator.
//!
//! Free memory is kept as naturally aligned power-of-two blocks of order
//! 0..=[`MAX_ORDER`] (4 KiB..4 MiB) on intrusive, doubly linked free lists —
//! one per (mobility type, order) — threaded through the frame descriptors,
//! so the allocator never allocates and every insert/remove is O(1).
//! Allocation takes the smallest block that fits and splits it; freeing
//! merges a block with its buddy (the block its address differs from in
//! exactly bit `order`) for as long as the buddy is a free block of the same
//! order.  Only a block's head descriptor records that it is free (state
//! `Free` + order), so splitting and merging touch O(1) descriptors.  The
//! same holds for allocated folios: only the head is written when a folio is
//! handed out or freed, and the other frames keep the `Body` state they had
//! while free (see `Memmap::head_of` for how a tail finds its head), so a
//! 2 MiB folio costs no more descriptor traffic than a 4 KiB one.
//!
//! # Mobility grouping
//! Memory is divided into 2 MiB pageblocks, each tagged movable (user
//! folios) or unmovable (kernel data, page tables).  Each type allocates from
//! its own lists; when a type runs dry it steals a *whole* pageblock from the
//! other type — the largest free block first, as Linux does — and retags it,
//! so unmovable kernel allocations clump into few pageblocks instead of
//! pinning one page in every 2 MiB region that a PMD-sized folio needs.
//! (Linux only steals a whole block when enough of it is free; stealing
//! always is the simplification.)  Freed blocks go to the buddy list of
//! their pageblock's current type; a per-CPU cache keeps a freed folio on
//! the list of the type it was allocated as (its `KERNEL` flag), which
//! differs only if a steal retagged the pageblock meanwhile, and saves the
//! free fast path reading the pageblock's tag.
//!
//! # Locking and SMP
//! `zone` (a `spin::Mutex`) protects the free lists, their counts and the
//! descriptors of every frame in state `Free` (including their link fields).
//! Each CPU's cache (see [`crate::physmem::pcp`]) has no lock: only its own CPU
//! touches its lists and the `Pcp`-state descriptors on them, with
//! interrupts masked through [`CpuOps`] (also around every zone-lock hold).
//! A CPU holding its cache may take the zone lock, never the reverse (the
//! zone lock is a leaf: nothing is acquired while holding it).  Preparing a
//! new folio and poisoning a freed one happen outside all locks: the block
//! is then owned by exactly one CPU (its state is neither `Free` nor `Pcp`,
//! so no merge can touch it).
//!
//! # Reaching the allocator from a folio
//! A [`Folio`] carries a reference to its allocator, so `put()` needs no
//! global: the kernel keeps one allocator in a `'static` and its folios are
//! `Folio<'static>`; host tests build as many allocators as they like.
//!
//! # Files
//! The allocator is one type, [`BuddyAllocator`], whose methods are
//! grouped by what they serve, one file each:
//! * `zone.rs`: the free lists behind the zone lock (insert, remove,
//!   split, merge, pageblock steal);
//! * `init.rs`: boot-time hand-over of RAM and reserved ranges;
//! * `alloc.rs`: the allocation paths, per-CPU cache first;
//! * `free.rs`: the free paths and draining the per-CPU caches;
//! * `isolate.rs`: compaction's access (isolating free blocks into its
//!   pool, turning them into folios, giving them back);
//! * `report.rs`: counters and the `/proc/buddyinfo`, `/proc/pagetypeinfo`
//!   views;
//! * `debug.rs`: the checks that catch misuse (bad frees, use after free
//!   through poisoning, the structural invariants).

mod alloc;
mod debug;
mod free;
mod init;
mod isolate;
mod report;
mod zone;

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bitflags::bitflags;
use spin::Mutex;

use crate::cpu::{CpuHook, CpuOps, IrqGuard, MAX_CPUS};
use crate::physmem::folio::Folio;
use crate::physmem::memmap::Memmap;
use crate::physmem::pcp::{PcpLists, PcpSlot};
use crate::physmem::phys::PhysMem;

pub use isolate::FreeCounts;
pub use report::{BuddyInfo, MemStats};
use zone::Zone;

/// Largest block order: 4 MiB, so 2 MiB (order 9) folios always have a
/// buddy to form from.
pub const MAX_ORDER: u32 = 10;
/// Number of orders (0..=MAX_ORDER).
pub const NR_ORDERS: usize = MAX_ORDER as usize + 1;
/// Byte written over freed frames when poisoning is on (Linux's `POISON_FREE`).
pub const POISON_BYTE: u8 = 0x6b;

/// Pageblock mobility type; also the index of a free-list set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migratetype {
    /// Kernel data and page tables: never moves.
    Unmovable = 0,
    /// User folios: could be migrated or reclaimed to defragment.
    Movable = 1,
}

impl Migratetype {
    const fn from_index(i: usize) -> Self {
        if i == 0 {
            Self::Unmovable
        } else {
            Self::Movable
        }
    }
}

const UNMOVABLE: usize = Migratetype::Unmovable as usize;
const MOVABLE: usize = Migratetype::Movable as usize;

bitflags! {
    /// How to allocate.  No flag means an unmovable kernel allocation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct AllocFlags: u32 {
        /// Zero the folio's memory.
        const ZERO = 1 << 0;
        /// A user folio: allocate from movable pageblocks.
        const MOVABLE = 1 << 1;
        /// A page-table page (sets `PageFlags::PAGETABLE`; implies unmovable).
        const PAGETABLE = 1 << 2;
    }
}

impl AllocFlags {
    /// Kernel data (unmovable).
    pub const KERNEL: Self = Self::empty();
    /// User memory (movable).
    pub const USER: Self = Self::MOVABLE;

    pub const fn migratetype(self) -> Migratetype {
        if self.contains(Self::MOVABLE) && !self.contains(Self::PAGETABLE) {
            Migratetype::Movable
        } else {
            Migratetype::Unmovable
        }
    }
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// No free block of the order, even after draining every CPU's cache.
    /// Callers fall back to a smaller order.
    NoMemory,
    /// Order above [`MAX_ORDER`].
    BadOrder,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMemory => f.write_str("out of memory"),
            Self::BadOrder => f.write_str("order above MAX_ORDER"),
        }
    }
}

/// The frame allocator for one memory zone.
pub struct BuddyAllocator<'a> {
    memmap: Memmap<'a>,
    phys: &'a dyn PhysMem,
    cpu: CpuHook<'a>,
    /// The zone lock; see the module docs for what it protects.
    zone: Mutex<Zone>,
    /// Per-CPU caches, each used only by its CPU with interrupts masked.
    pcp: [PcpSlot; MAX_CPUS],
    /// Failed allocations by order (rare, so a shared atomic is fine).
    failures: [AtomicU64; NR_ORDERS],
    /// Poison freed frames and check the poison on reuse.
    poison: AtomicBool,
    /// Poisoning has been on at some point, so frames may carry the
    /// `POISONED` mark.  While false, preparing a folio does not look at its
    /// tails at all: reading them is a cache miss per 32-byte descriptor.
    poison_seen: AtomicBool,
    /// The zone's watermarks in pages (min, low, high; all 0 = none): see
    /// [`Self::set_watermarks`].
    wmark: [AtomicU64; 3],
    /// Called (no lock held) when an allocation leaves the zone below the
    /// low mark: wakes kswapd.
    kswapd_hook: spin::Once<&'static (dyn Fn() + Sync)>,
    /// Pages of folios with `MLOCKED` set (Linux's `NR_MLOCK`): raised and
    /// lowered by `Folio::mlock` / `Folio::munlock`, and lowered by the
    /// free path for a folio freed still mlocked.
    mlocked: AtomicU64,
    /// Pages freed while still mlocked (Linux's `unevictable_pgs_cleared`).
    mlock_cleared: AtomicU64,
    /// The node's anonymous LRU (here because the free path must take a
    /// dying folio off it; see `reclaim::lru`).
    lru: crate::reclaim::lru::Lru,
}

/// Which watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wmark {
    Min = 0,
    Low = 1,
    High = 2,
}

impl<'a> BuddyAllocator<'a> {
    /// Sets the zone's watermarks (pages), Linux's `min`/`low`/`high`:
    /// user (movable) allocations fail rather than take the zone below
    /// `min` (the fault path then reclaims directly, or kills); an
    /// allocation that finds the zone below `low` wakes kswapd, which
    /// reclaims until `high`.  Kernel allocations (page tables, stacks,
    /// the heap) may use the reserve below `min`.  Only the zone's free
    /// lists count, checked when a per-CPU cache refills (once a batch),
    /// so the allocation fast path pays nothing.
    pub fn set_watermarks(&self, min: u64, low: u64, high: u64) {
        self.wmark[0].store(min, Relaxed);
        self.wmark[1].store(low, Relaxed);
        self.wmark[2].store(high, Relaxed);
    }

    /// A watermark in pages.
    pub fn watermark(&self, w: Wmark) -> u64 {
        self.wmark[w as usize].load(Relaxed)
    }

    /// Installs the hook that wakes kswapd (once).
    pub fn set_kswapd_hook(&self, hook: &'static (dyn Fn() + Sync)) {
        self.kswapd_hook.call_once(|| hook);
    }

    /// Pages on the zone's free lists (not counting per-CPU caches).
    pub fn zone_free(&self) -> u64 {
        self.zone.lock().free_pages()
    }

    /// True when the zone is below watermark `w`.
    pub fn below(&self, w: Wmark) -> bool {
        self.zone_free() < self.watermark(w)
    }

    /// An allocator with no free memory yet over `memmap`.  Poisoning starts
    /// on in debug builds and off in release builds.
    pub fn new(memmap: Memmap<'a>, phys: &'a dyn PhysMem, cpu: &'a dyn CpuOps) -> Self {
        Self {
            memmap,
            phys,
            cpu: CpuHook::new(cpu),
            zone: Mutex::new(Zone::new()),
            pcp: [const { PcpSlot(PcpLists::new()) }; MAX_CPUS],
            failures: [const { AtomicU64::new(0) }; NR_ORDERS],
            poison: AtomicBool::new(cfg!(debug_assertions)),
            poison_seen: AtomicBool::new(cfg!(debug_assertions)),
            lru: crate::reclaim::lru::Lru::new(),
            wmark: [const { AtomicU64::new(0) }; 3],
            kswapd_hook: spin::Once::new(),
            mlocked: AtomicU64::new(0),
            mlock_cleared: AtomicU64::new(0),
        }
    }

    /// Pages of mlocked folios now (`Mlocked:` in `/proc/meminfo`).
    pub fn mlocked_pages(&self) -> u64 {
        self.mlocked.load(Relaxed)
    }

    /// Pages freed while still mlocked since boot
    /// (`unevictable_pgs_cleared`).
    pub fn mlock_cleared_pages(&self) -> u64 {
        self.mlock_cleared.load(Relaxed)
    }

    /// `Folio::mlock` / `munlock` changed `MLOCKED` on `pages` pages.
    pub(crate) fn mlocked_add(&self, pages: u64, add: bool) {
        if add {
            self.mlocked.fetch_add(pages, Relaxed);
        } else {
            let old = self.mlocked.fetch_sub(pages, Relaxed);
            debug_assert!(old >= pages, "Mlocked below zero");
        }
    }

    /// The node's anonymous LRU lists (see `reclaim::lru`).
    pub fn lru(&self) -> &crate::reclaim::lru::Lru {
        &self.lru
    }

    /// The CPU hook, for the LRU's locks (masked interrupts, CPU id).
    #[inline]
    pub(crate) fn cpu_hook(&self) -> &CpuHook<'a> {
        &self.cpu
    }

    pub fn memmap(&self) -> Memmap<'a> {
        self.memmap
    }

    pub fn phys(&self) -> &'a dyn PhysMem {
        self.phys
    }

    /// The CPU layer the allocator was built with (also what the
    /// address-space locks use, see [`crate::sync`]).
    pub fn cpu_ops(&self) -> &'a dyn CpuOps {
        self.cpu.ops
    }

    /// Turns poisoning of freed frames on or off (the benchmark turns it
    /// off; frames poisoned earlier are still checked when reused).
    pub fn set_poison(&self, on: bool) {
        if on {
            self.poison_seen.store(true, Relaxed);
        }
        self.poison.store(on, Relaxed);
    }

    pub fn poison_enabled(&self) -> bool {
        self.poison.load(Relaxed)
    }

    /// The allocated folio containing `pfn`, or `None` if `pfn` is not part
    /// of one.  The answer is only stable while the caller holds a reference
    /// to the folio (e.g. through a mapping it has locked).  O(1): at most
    /// ten descriptor reads for a tail (see `Memmap::head_of`).
    #[inline]
    pub fn folio_from_pfn(&self, pfn: u64) -> Option<Folio<'_>> {
        let mm = &self.memmap;
        if !mm.contains(pfn) {
            return None;
        }
        mm.head_of(mm.idx_of(pfn))
            .map(|h| Folio::from_head(self, h))
    }

    /// Interrupts masked (through the CPU hooks) until the guard drops:
    /// for short critical sections under spin locks that preemptible and
    /// non-preemptible code both take (see `MmCtx::irq`).
    pub(crate) fn irq_guard(&self) -> IrqGuard<'_> {
        self.cpu.irq_guard()
    }
}

#[cfg(test)]
mod tests;
