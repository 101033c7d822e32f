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
//! Each node's zone lock (`zones[n]`, a `crate::sync::Mutex`) protects that
//! zone's free lists, their counts and the descriptors of every frame of
//! the node in state `Free` (including their link fields).
//! Each CPU's cache (see [`crate::physmem::pcp`]) has no lock: only its own CPU
//! touches its lists and the `Pcp`-state descriptors on them, with
//! interrupts masked through [`CpuOps`] (also around every zone-lock hold).
//! A CPU holding its cache may take a zone lock, never the reverse (a
//! zone lock is a leaf: nothing is acquired while holding it, not even
//! another zone's lock, except by `check_invariants`, which takes them all
//! in node order).  Preparing a
//! new folio and poisoning a freed one happen outside all locks: the block
//! is then owned by exactly one CPU (its state is neither `Free` nor `Pcp`,
//! so no merge can touch it).
//!
//! # NUMA nodes
//! One allocator serves every node (so a [`Folio`] and its `put()` stay
//! as they are), with one [`Zone`] per node: its own free lists, counts,
//! watermarks and lock, holding only that node's frames
//! ([`BuddyAllocator::zone_of`] finds a frame's zone through the
//! [`NodeMap`]).  An allocation prefers a node (by default the running
//! CPU's) and falls back to the others in order of distance, unless it
//! asks for [`AllocFlags::THISNODE`].  Zone locks are never nested: a
//! fallback releases one zone before it tries the next.
//!
//! Each CPU has one cache per node (Linux's per-CPU pagesets are per
//! zone), slot `node ^ local` so the local node's is slot 0 and the fast
//! paths need no node lookup.  A cache holds only its node's pages: it
//! is refilled from and drained to that node's zone, and a freed page
//! goes to the cache of its own node.  Before, only the local node had a
//! cache, and migrating 4K pages to another node took the remote zone's
//! lock for every allocation and every free (a fifth of a 4K
//! `move_pages`).  The local cache serves only allocations that prefer
//! the local node (a fallback to it from a remote preference goes to the
//! zone directly, so it is counted as the miss it is); a remote node's
//! cache serves allocations that reach that node, counted at once.  So a
//! hit of slot 0 is always a local hit (counted as `numa_hit` and `numa_local`
//! from the caches' allocation counters, which costs the fast path
//! nothing), and a THISNODE request can never be handed a remote page.
//! With one node, the only extra work is one compare on the free path.
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

use crate::sync::Mutex;
use bitflags::bitflags;

use crate::cpu::{CpuHook, CpuOps, IrqGuard, MAX_CPUS};
use crate::physmem::folio::Folio;
use crate::physmem::memmap::Memmap;
use crate::physmem::node::{MAX_NUMNODES, NodeMap};
use crate::physmem::pcp::{PcpLists, PcpSlot};
use crate::physmem::phys::PhysMem;

pub use isolate::FreeCounts;
pub use report::{BuddyInfo, MemStats};
use zone::Zone;

/// A zone-lock hold that may change the zone's lists: on drop it
/// publishes the zone's free-page and managed counts
/// (`BuddyAllocator::zone_free`, `zone_managed`).
struct ZoneGuard<'a> {
    z: crate::sync::MutexGuard<'a, Zone>,
    pub_free: &'a AtomicU64,
    pub_managed: &'a AtomicU64,
}

impl core::ops::Deref for ZoneGuard<'_> {
    type Target = Zone;
    #[inline]
    fn deref(&self) -> &Zone {
        &self.z
    }
}

impl core::ops::DerefMut for ZoneGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Zone {
        &mut self.z
    }
}

impl Drop for ZoneGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.pub_free.store(self.z.free, Relaxed);
        self.pub_managed.store(self.z.managed, Relaxed);
    }
}

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
        /// Only the preferred node: fail rather than fall back to another
        /// (Linux's `__GFP_THISNODE`).
        const THISNODE = 1 << 3;
        /// An interleaved allocation (counted as `numa_interleave` when it
        /// lands on the node asked for).
        const INTERLEAVE = 1 << 4;
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

/// Per-node allocation counters that the cache fast path does not
/// produce (see the module docs: cache hits are local hits).
#[derive(Default)]
pub(super) struct NumaCounters {
    hit: AtomicU64,
    miss: AtomicU64,
    foreign: AtomicU64,
    interleave: AtomicU64,
    local: AtomicU64,
    other: AtomicU64,
}

/// One node's allocation counters, Linux's `numa_*` vmstat items (per
/// allocation call, not per page).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NumaStat {
    /// Allocated here as asked.
    pub hit: u64,
    /// Allocated here although another node was asked for.
    pub miss: u64,
    /// Asked for here but allocated on another node.
    pub foreign: u64,
    /// Interleaved allocations that landed here as asked.
    pub interleave: u64,
    /// Allocated here for a CPU of this node.
    pub local: u64,
    /// Allocated here for a CPU of another node.
    pub other: u64,
}

/// The frame allocator: one zone per NUMA node.
pub struct BuddyAllocator<'a> {
    memmap: Memmap<'a>,
    phys: &'a dyn PhysMem,
    cpu: CpuHook<'a>,
    /// The node layout, fixed at construction.
    nodes: NodeMap,
    /// One zone per node, each behind its zone lock; see the module docs
    /// for what it protects.  Entries beyond `nodes.nr_nodes()` stay empty.
    /// Code that changes a zone's lists takes it through [`Self::lock_zone`].
    zones: [Mutex<Zone>; MAX_NUMNODES],
    /// Each zone's free pages as of its last lock release (Linux's
    /// `NR_FREE_PAGES`), for the watermark check of every allocation,
    /// which used to take the zone lock just to read the count.
    zone_free: [AtomicU64; MAX_NUMNODES],
    /// Each zone's managed frames as of its last lock release, for
    /// [`Self::node_has_memory`] (`move_pages` asks per entry).
    zone_managed: [AtomicU64; MAX_NUMNODES],
    /// `numa_*` counters per node, for allocations that did not come
    /// from a CPU cache.
    numa: [NumaCounters; MAX_NUMNODES],
    /// Per-CPU caches, one per node (slot `node ^ cpu's node`), each used
    /// only by its CPU with interrupts masked.
    pcp: [[PcpSlot; MAX_NUMNODES]; MAX_CPUS],
    /// Failed allocations by order (rare, so a shared atomic is fine).
    failures: [AtomicU64; NR_ORDERS],
    /// Poison freed frames and check the poison on reuse.
    poison: AtomicBool,
    /// Poisoning has been on at some point, so frames may carry the
    /// `POISONED` mark.  While false, preparing a folio does not look at its
    /// tails at all: reading them is a cache miss per 32-byte descriptor.
    poison_seen: AtomicBool,
    /// Each zone's watermarks in pages (min, low, high; all 0 = none):
    /// see [`Self::set_watermarks`].
    wmark: [[AtomicU64; 3]; MAX_NUMNODES],
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
    /// Sets the watermarks (pages) of node 0's zone, Linux's
    /// `min`/`low`/`high`: user (movable) allocations fail rather than
    /// take a zone below its `min` (they try the next node first; the
    /// fault path then reclaims directly, or kills); an allocation that
    /// finds its zone below `low` wakes kswapd, which reclaims until
    /// `high`.  Kernel allocations (page tables, stacks, the heap) may use
    /// the reserve below `min`.  Only a zone's free lists count, checked
    /// when a per-CPU cache refills (once a batch), so the allocation fast
    /// path pays nothing.  With several nodes, set each zone's with
    /// [`Self::set_node_watermarks`] (the kernel computes them as Linux,
    /// `watermark::node_zone_watermarks`).
    pub fn set_watermarks(&self, min: u64, low: u64, high: u64) {
        self.set_node_watermarks(0, min, low, high);
    }

    /// Sets node `nid`'s zone's watermarks (see [`Self::set_watermarks`]).
    pub fn set_node_watermarks(&self, nid: usize, min: u64, low: u64, high: u64) {
        if let Some(wm) = self.wmark.get(nid) {
            wm[0].store(min, Relaxed);
            wm[1].store(low, Relaxed);
            wm[2].store(high, Relaxed);
        }
    }

    /// A watermark in pages, summed over the zones.
    pub fn watermark(&self, w: Wmark) -> u64 {
        self.wmark.iter().map(|m| m[w as usize].load(Relaxed)).sum()
    }

    /// Node `nid`'s share of watermark `w`, in pages.
    pub fn node_watermark(&self, nid: usize, w: Wmark) -> u64 {
        self.wmark
            .get(nid)
            .map_or(0, |m| m[w as usize].load(Relaxed))
    }

    /// The node layout.
    #[inline]
    pub fn nodes(&self) -> &NodeMap {
        &self.nodes
    }

    /// The zone holding frame `pfn` (its node's).  Code that isolates
    /// free blocks takes this lock to work on the frame's free lists.
    #[inline]
    fn zone_of(&self, pfn: u64) -> &Mutex<Zone> {
        &self.zones[self.nodes.node_of_pfn(pfn)]
    }

    /// `cpu`'s cache of node `nid`'s pages (see the module docs).
    #[inline(always)]
    fn pcp_of(&self, cpu: usize, nid: usize) -> &PcpLists {
        &self.pcp[cpu][nid ^ self.nodes.cpu_node(cpu)].0
    }

    /// `cpu`'s caches with the node each holds pages of.
    fn pcps_of(&self, cpu: usize) -> impl Iterator<Item = (usize, &PcpLists)> {
        let local = self.nodes.cpu_node(cpu);
        (0..self.nodes.nr_nodes()).map(move |n| (n, &self.pcp[cpu][n ^ local].0))
    }

    /// The node of the CPU running this (a hint: the caller may migrate
    /// right after, as Linux's `numa_node_id()`).
    #[inline]
    pub fn local_node(&self) -> usize {
        self.nodes.cpu_node(self.cpu.ops.cpu_id())
    }

    /// The node of the frame `pfn`.
    #[inline]
    pub fn node_of_pfn(&self, pfn: u64) -> usize {
        self.nodes.node_of_pfn(pfn)
    }

    /// Pages on node `nid`'s free lists (not counting per-CPU caches).
    pub fn node_free(&self, nid: usize) -> u64 {
        if nid >= self.nodes.nr_nodes() {
            return 0;
        }
        let _irq = self.cpu.irq_guard();
        self.zones[nid].lock().free_pages()
    }

    /// Node `nid`'s free pages as of the last release of its zone lock,
    /// without taking it (the watermark check; exact whenever no other
    /// CPU is inside the zone).
    #[inline]
    fn node_free_relaxed(&self, nid: usize) -> u64 {
        self.zone_free[nid].load(Relaxed)
    }

    /// Node `nid`'s zone lock, for a change to its lists: the guard
    /// publishes the zone's free pages when dropped.  Interrupts must be
    /// masked (as for every zone-lock hold).
    #[inline]
    fn lock_zone(&self, nid: usize) -> ZoneGuard<'_> {
        ZoneGuard {
            z: self.zones[nid].lock(),
            pub_free: &self.zone_free[nid],
            pub_managed: &self.zone_managed[nid],
        }
    }

    /// Whether node `nid` has memory (Linux's `N_MEMORY`), without the
    /// zone lock.
    #[inline]
    pub fn node_has_memory(&self, nid: usize) -> bool {
        nid < self.nodes.nr_nodes() && self.zone_managed[nid].load(Relaxed) > 0
    }

    /// The zone lock of frame `pfn`'s node, as [`Self::lock_zone`].
    #[inline]
    fn lock_zone_of(&self, pfn: u64) -> ZoneGuard<'_> {
        self.lock_zone(self.nodes.node_of_pfn(pfn))
    }

    /// Installs the hook that wakes kswapd (once).
    pub fn set_kswapd_hook(&self, hook: &'static (dyn Fn() + Sync)) {
        self.kswapd_hook.call_once(|| hook);
    }

    /// Pages on every zone's free lists (not counting per-CPU caches).
    pub fn zone_free(&self) -> u64 {
        (0..self.nodes.nr_nodes()).map(|n| self.node_free(n)).sum()
    }

    /// True when free memory is below watermark `w` (summed over zones).
    pub fn below(&self, w: Wmark) -> bool {
        self.zone_free() < self.watermark(w)
    }

    /// An allocator with no free memory yet over `memmap`, one node.
    /// Poisoning starts on in debug builds and off in release builds.
    pub fn new(memmap: Memmap<'a>, phys: &'a dyn PhysMem, cpu: &'a dyn CpuOps) -> Self {
        Self::with_nodes(memmap, phys, cpu, NodeMap::single())
    }

    /// An allocator with no free memory yet over `memmap`, with one zone
    /// per node of `nodes`.
    pub fn with_nodes(
        memmap: Memmap<'a>,
        phys: &'a dyn PhysMem,
        cpu: &'a dyn CpuOps,
        nodes: NodeMap,
    ) -> Self {
        Self {
            memmap,
            phys,
            cpu: CpuHook::new(cpu),
            nodes,
            zones: core::array::from_fn(|n| Mutex::new(Zone::new(n as u8))),
            zone_free: [const { AtomicU64::new(0) }; MAX_NUMNODES],
            zone_managed: [const { AtomicU64::new(0) }; MAX_NUMNODES],
            numa: core::array::from_fn(|_| NumaCounters::default()),
            pcp: [const { [const { PcpSlot(PcpLists::new()) }; MAX_NUMNODES] }; MAX_CPUS],
            failures: [const { AtomicU64::new(0) }; NR_ORDERS],
            poison: AtomicBool::new(cfg!(debug_assertions)),
            poison_seen: AtomicBool::new(cfg!(debug_assertions)),
            lru: crate::reclaim::lru::Lru::new(),
            wmark: [const { [const { AtomicU64::new(0) }; 3] }; MAX_NUMNODES],
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
#[cfg(test)]
mod tests_numa;
