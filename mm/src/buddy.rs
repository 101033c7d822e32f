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
//! Each CPU's cache (see [`crate::pcp`]) has no lock: only its own CPU
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

use alloc::string::String;
use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bitflags::bitflags;
use spin::Mutex;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::bootinfo::BootInfo;
use crate::cpu::{CpuHook, CpuOps, IrqGuard, MAX_CPUS};
use crate::folio::Folio;
use crate::frame_flags::{
    FrameState, LIST_UNMOVABLE, POISONED, PageFlags, STATE_MASK, TAILS_AE, order_of, word,
};
use crate::memmap::{Memmap, NO_FRAME, OWNER_PB_UNMOVABLE, PAGEBLOCK_FRAMES, PAGEBLOCK_ORDER};
use crate::pcp::{NR_MT, PCP_HIGH, PCP_MAX_ORDER, PcpLists, PcpSlot, pcp_batch};
use crate::phys::PhysMem;

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
/// Folios freed per interrupt-masked stretch of
/// [`BuddyAllocator::release_folios`]: bounds the time interrupts stay
/// masked (a free is tens of ns; a drain to the zone a few µs).
const RELEASE_CHUNK: usize = 32;

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

/// Everything behind the zone lock.
struct Zone {
    /// First block of each free list (`NO_FRAME` when empty).
    head: [[u32; NR_ORDERS]; NR_MT],
    /// Blocks on each free list.
    nr_free: [[u64; NR_ORDERS]; NR_MT],
    /// Frames handed to the allocator by `add_free_range`.
    managed: u64,
    /// Frames in state `Reserved`.
    reserved: u64,
    /// Allocations served without a per-CPU cache, by order.
    direct_allocs: [u64; NR_ORDERS],
    /// Pageblocks stolen by the other mobility type.
    steals: u64,
}

#[inline]
const fn list_bit(mt: usize) -> u32 {
    if mt == UNMOVABLE { LIST_UNMOVABLE } else { 0 }
}

#[inline]
const fn list_mt(w: u32) -> usize {
    if w & LIST_UNMOVABLE != 0 {
        UNMOVABLE
    } else {
        MOVABLE
    }
}

#[inline]
fn pageblock_mt(mm: &Memmap<'_>, idx: u32) -> usize {
    if mm.pageblock_unmovable(idx) {
        UNMOVABLE
    } else {
        MOVABLE
    }
}

impl Zone {
    const fn new() -> Self {
        Self {
            head: [[NO_FRAME; NR_ORDERS]; NR_MT],
            nr_free: [[0; NR_ORDERS]; NR_MT],
            managed: 0,
            reserved: 0,
            direct_allocs: [0; NR_ORDERS],
            steals: 0,
        }
    }

    /// Pushes the block at `idx` on list (`mt`, `order`) and labels it free.
    #[inline]
    fn add(&mut self, mm: &Memmap<'_>, idx: u32, order: u32, mt: usize) {
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
    }

    /// Unlinks the block at `idx` from list (`mt`, `order`); its state is
    /// left for the caller to change.
    #[inline]
    fn del(&mut self, mm: &Memmap<'_>, idx: u32, order: u32, mt: usize) {
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
    }

    /// Takes a block of exactly `order` from `mt`'s lists, splitting the
    /// smallest larger block if needed.  The returned head is labelled
    /// `Body` so no concurrent merge mistakes it for a free buddy.
    #[inline]
    fn take_smallest(&mut self, mm: &Memmap<'_>, order: u32, mt: usize) -> Option<u32> {
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

    fn retag(mm: &Memmap<'_>, tag_idx: u32, mt: usize) {
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
    fn move_pageblock(&mut self, mm: &Memmap<'_>, tag_idx: u32, mt: usize) {
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
    fn steal(&mut self, mm: &Memmap<'_>, order: u32, mt: usize) -> bool {
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
    fn rmqueue(&mut self, mm: &Memmap<'_>, order: u32, mt: usize) -> Option<u32> {
        if let Some(i) = self.take_smallest(mm, order, mt) {
            return Some(i);
        }
        if self.steal(mm, order, mt) {
            return self.take_smallest(mm, order, mt);
        }
        None
    }

    /// Returns the block at `idx` to the free lists, merging with free
    /// buddies as far as possible.
    fn free_block(&mut self, mm: &Memmap<'_>, mut idx: u32, mut order: u32) {
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
            self.del(mm, bidx, order, list_mt(bw));
            bd.set_state(word(FrameState::Body, 0, 0));
            idx = idx.min(bidx);
            order += 1;
        }
        self.add(mm, idx, order, pageblock_mt(mm, idx));
    }
}

/// Frame totals and per-order counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Frames given to the allocator (free + allocated).
    pub managed: u64,
    /// Frames in state `Reserved` (firmware, kernel image, memmap, ...).
    pub reserved: u64,
    /// Free frames: on the buddy lists plus in per-CPU caches.
    pub free: u64,
    /// Free frames in per-CPU caches (included in `free`).
    pub free_pcp: u64,
    /// Frames in allocated folios.
    pub allocated: u64,
    /// `allocated + reserved`: with `free` this adds up to the RAM frames.
    pub used: u64,
    /// Successful allocations by order.
    pub allocs: [u64; NR_ORDERS],
    /// Failed allocations by order.
    pub failures: [u64; NR_ORDERS],
    /// Pageblocks that changed mobility type.
    pub pageblock_steals: u64,
}

/// Free blocks per order on the buddy lists (per-CPU caches not included,
/// as in Linux).  `Display` prints one `/proc/buddyinfo` line;
/// [`BuddyAllocator::pagetypeinfo`] the per-type `/proc/pagetypeinfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuddyInfo {
    pub free: [[u64; NR_ORDERS]; NR_MT],
}

impl BuddyInfo {
    /// Free blocks of `order`, both types.
    pub fn blocks(&self, order: u32) -> u64 {
        self.free[UNMOVABLE][order as usize] + self.free[MOVABLE][order as usize]
    }

    /// Free pages on the buddy lists.
    pub fn pages(&self) -> u64 {
        (0..=MAX_ORDER).map(|o| self.blocks(o) << o).sum()
    }
}

impl fmt::Display for BuddyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node 0, zone {:>8} ", "Normal")?;
        for o in 0..=MAX_ORDER {
            write!(f, "{:>6} ", self.blocks(o))?;
        }
        Ok(())
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
}

impl<'a> BuddyAllocator<'a> {
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
        }
    }

    pub fn memmap(&self) -> Memmap<'a> {
        self.memmap
    }

    pub fn phys(&self) -> &'a dyn PhysMem {
        self.phys
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

    // ----- boot-time set-up -------------------------------------------

    /// Marks the frames overlapping `[pa_start, pa_end)` reserved: used
    /// outside the allocator, counted as used, never freed.  Frames outside
    /// the memmap and frames already reserved are skipped.  Returns the
    /// number of frames newly reserved.
    ///
    /// # Panics
    /// If a frame already belongs to the allocator.
    pub fn reserve_range(&self, pa_start: u64, pa_end: u64) -> u64 {
        let mm = &self.memmap;
        let s = (pa_start >> PAGE_SHIFT).max(mm.base_pfn());
        let e = pa_end.div_ceil(PAGE_SIZE).min(mm.end_pfn());
        let _irq = self.cpu.irq_guard();
        let mut z = self.zone.lock();
        let mut n = 0;
        for pfn in s..e {
            let idx = mm.idx_of(pfn);
            let d = mm.at(idx);
            match d.state() {
                FrameState::Hole => {
                    d.set_fresh(word(FrameState::Reserved, 0, 0));
                    n += 1;
                }
                FrameState::Reserved => {}
                _ => panic!(
                    "buddy: reserving a frame the allocator owns: {}",
                    mm.dump(pfn)
                ),
            }
        }
        z.reserved += n;
        n
    }

    /// Gives the whole frames inside `[pa_start, pa_end)` to the allocator,
    /// as naturally aligned blocks of up to `MAX_ORDER` (merging with free
    /// neighbours).  Frames may be holes or reserved (freeing reserved memory
    /// later, e.g. boot-only data).  Returns the number of frames added.
    ///
    /// # Panics
    /// If the range leaves the memmap or a frame already belongs to the
    /// allocator.
    pub fn add_free_range(&self, pa_start: u64, pa_end: u64) -> u64 {
        let mm = &self.memmap;
        let s = pa_start.div_ceil(PAGE_SIZE);
        let e = pa_end >> PAGE_SHIFT;
        if s >= e {
            return 0;
        }
        assert!(
            mm.contains(s) && mm.contains(e - 1),
            "buddy: add_free_range {pa_start:#x}..{pa_end:#x} leaves the memmap"
        );
        let _irq = self.cpu.irq_guard();
        let mut z = self.zone.lock();
        for pfn in s..e {
            let idx = mm.idx_of(pfn);
            let d = mm.at(idx);
            match d.state() {
                FrameState::Hole => {}
                FrameState::Reserved => z.reserved -= 1,
                _ => panic!(
                    "buddy: add_free_range of a frame the allocator owns: {}",
                    mm.dump(pfn)
                ),
            }
            d.set_fresh(word(FrameState::Body, 0, 0));
            d.refcount.store(0, Relaxed);
            d.mapcount.store(0, Relaxed);
            d.entire_mapcount.store(0, Relaxed);
            // Keep only the allocator's bits (a pageblock tag).
            d.owner.fetch_and(OWNER_PB_UNMOVABLE, Relaxed);
        }
        let mut pfn = s;
        while pfn < e {
            let mut o = pfn.trailing_zeros().min(MAX_ORDER);
            while pfn + (1 << o) > e {
                o -= 1;
            }
            z.free_block(mm, mm.idx_of(pfn), o);
            pfn += 1 << o;
        }
        z.managed += e - s;
        e - s
    }

    /// Boot hand-over: reserves every reserved range (clipped to RAM), then
    /// gives every RAM frame still a hole to the allocator.  Frames the
    /// kernel reserved beforehand with [`Self::reserve_range`] (the memmap,
    /// the heap) stay reserved.  Returns the number of frames added.
    pub fn init_from_bootinfo(&self, info: &BootInfo) -> u64 {
        for r in info.ram() {
            // Only whole frames of RAM count: a partial frame at either end
            // of a range (e820 ends at 0x9fc00 on PC machines) is neither
            // free nor used.
            let ram_s = r.start.div_ceil(PAGE_SIZE) * PAGE_SIZE;
            let ram_e = r.end & !(PAGE_SIZE - 1);
            for (res, _) in info.reserved() {
                let s = res.start.max(ram_s);
                let e = res.end.min(ram_e);
                if s < e {
                    self.reserve_range(s, e);
                }
            }
        }
        let mm = &self.memmap;
        let mut added = 0;
        for r in info.ram() {
            let s = r.start.div_ceil(PAGE_SIZE).max(mm.base_pfn());
            let e = (r.end >> PAGE_SHIFT).min(mm.end_pfn());
            let mut pfn = s;
            while pfn < e {
                if mm.state(pfn) != FrameState::Hole {
                    pfn += 1;
                    continue;
                }
                let run = pfn;
                while pfn < e && mm.state(pfn) == FrameState::Hole {
                    pfn += 1;
                }
                added += self.add_free_range(run << PAGE_SHIFT, pfn << PAGE_SHIFT);
            }
        }
        added
    }

    // ----- allocation -------------------------------------------------

    /// Allocates a folio of `order` on the running CPU.
    ///
    /// Only a hit in the CPU's cache is inlined; a miss (refill from the
    /// zone, uncached orders, the drain-and-retry when memory runs out)
    /// goes out of line and starts over there, so the hit compiles to code
    /// that saves no registers and makes no calls.
    #[inline]
    pub fn alloc(&self, order: u32, flags: AllocFlags) -> Result<Folio<'_>, AllocError> {
        let mt = flags.migratetype() as usize;
        if self.cpu.trivial() {
            // No hooks to call: CPU 0, nothing to mask.
            if let Some(idx) = self.pcp_hit(0, order, mt) {
                return Ok(self.prep_new_folio(idx, order, flags, mt));
            }
        } else if order <= PCP_MAX_ORDER {
            let (irq, cpu) = self.cpu.irq_guard_on_cpu();
            if let Some(idx) = self.pcp_hit(cpu, order, mt) {
                drop(irq);
                return Ok(self.prep_new_folio(idx, order, flags, mt));
            }
        }
        self.alloc_slow(order, flags)
    }

    /// A block of `order` from `cpu`'s cache, if the order is cached and
    /// the cache has one (interrupts masked by the caller).
    #[inline(always)]
    fn pcp_hit(&self, cpu: usize, order: u32, mt: usize) -> Option<u32> {
        if order > PCP_MAX_ORDER || cpu >= MAX_CPUS {
            return None;
        }
        let p = self.pcp[cpu].0.enter(cpu);
        let idx = p.pop(&{ self.memmap }, mt, order)?;
        p.count_alloc(order);
        Some(idx)
    }

    /// [`Self::alloc`] after a cache miss.
    #[inline(never)]
    fn alloc_slow(&self, order: u32, flags: AllocFlags) -> Result<Folio<'_>, AllocError> {
        let (irq, cpu) = self.cpu.irq_guard_on_cpu();
        self.alloc_inner(cpu, order, flags, irq)
    }

    /// Allocates a folio of `order` using `cpu`'s cache (the caller
    /// guarantees it runs on `cpu`, or that `cpu`'s cache is otherwise not
    /// in use: the pcp lock keeps it correct either way).
    #[inline]
    pub fn alloc_on(
        &self,
        cpu: usize,
        order: u32,
        flags: AllocFlags,
    ) -> Result<Folio<'_>, AllocError> {
        let irq = self.cpu.irq_guard();
        self.alloc_inner(cpu, order, flags, irq)
    }

    #[inline]
    fn alloc_inner(
        &self,
        cpu: usize,
        order: u32,
        flags: AllocFlags,
        irq: IrqGuard<'_>,
    ) -> Result<Folio<'_>, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::BadOrder);
        }
        let mt = flags.migratetype() as usize;
        let idx = match self.take_block(cpu, order, mt) {
            Some(i) => i,
            None => {
                // Free memory may sit in some CPU's cache (including ours,
                // in other orders): return it all and try once more.
                self.drain_cpu(cpu);
                self.cpu.ops.call_on_others(&|| {
                    self.drain_local();
                });
                match self.take_block(cpu, order, mt) {
                    Some(i) => i,
                    None => {
                        self.failures[order as usize].fetch_add(1, Relaxed);
                        return Err(AllocError::NoMemory);
                    }
                }
            }
        };
        drop(irq);
        Ok(self.prep_new_folio(idx, order, flags, mt))
    }

    /// Takes a block from `cpu`'s cache (refilling it by a batch from the
    /// zone when empty) or, for uncached orders, from the zone.  Only the
    /// cache hit is inlined: the zone paths are out of line, so the hit
    /// needs no callee-saved registers.
    #[inline(always)]
    fn take_block(&self, cpu: usize, order: u32, mt: usize) -> Option<u32> {
        // A copy, not a reference: `self` has interior mutability, so the
        // compiler would reload the memmap's fields after every store.
        let mm = &{ self.memmap };
        if order <= PCP_MAX_ORDER && cpu < MAX_CPUS {
            let p = self.pcp[cpu].0.enter(cpu);
            let idx = match p.pop(mm, mt, order) {
                Some(i) => i,
                None => self.refill(&p, order, mt)?,
            };
            p.count_alloc(order);
            Some(idx)
        } else {
            self.take_direct(order, mt)
        }
    }

    /// The cache is empty: takes a block for the caller plus up to
    /// `batch - 1` more for the cache, in one zone-lock hold.
    #[inline(never)]
    fn refill(&self, p: &PcpLists, order: u32, mt: usize) -> Option<u32> {
        let mm = &self.memmap;
        let mut z = self.zone.lock();
        let first = z.rmqueue(mm, order, mt)?;
        for _ in 1..pcp_batch(order) {
            match z.rmqueue(mm, order, mt) {
                Some(i) => {
                    let keep = mm.at(i).flags.load(Relaxed) & POISONED;
                    _ = p.push(mm, mt, order, i, keep);
                }
                None => break,
            }
        }
        Some(first)
    }

    /// An uncached order (or CPU): straight from the zone.
    #[inline(never)]
    fn take_direct(&self, order: u32, mt: usize) -> Option<u32> {
        let mut z = self.zone.lock();
        let idx = z.rmqueue(&self.memmap, order, mt)?;
        z.direct_allocs[order as usize] += 1;
        Some(idx)
    }

    /// Turns the free block at `idx` into a folio: checks the poison, writes
    /// the head, zeroes on request.  Tails are already `Body` with clean
    /// flags (the free path guarantees it), which is what a tail stores.
    #[inline]
    fn prep_new_folio(&self, idx: u32, order: u32, flags: AllocFlags, mt: usize) -> Folio<'_> {
        let mm = &{ self.memmap };
        let head = mm.at(idx);
        if self.poison_seen.load(Relaxed) {
            self.check_poison(idx, order);
        }
        let mut pf = PageFlags::empty();
        if order > 0 {
            pf |= PageFlags::LARGE;
        }
        if flags.contains(AllocFlags::PAGETABLE) {
            pf |= PageFlags::PAGETABLE;
        }
        if mt == UNMOVABLE {
            pf |= PageFlags::KERNEL;
        }
        head.set_fresh(word(FrameState::Head, order, pf.bits()));
        head.refcount.store(1, Relaxed);
        head.mapcount.store(0, Relaxed);
        head.entire_mapcount.store(0, Relaxed);
        // The links are left as the free lists left them: they only mean
        // something while `DEFERRED_SPLIT` is set, and `FolioList` writes
        // both when it queues the folio.
        if flags.contains(AllocFlags::ZERO) {
            self.phys
                .zero(mm.pfn_of(idx) << PAGE_SHIFT, PAGE_SIZE << order);
        }
        Folio::from_head(self, idx)
    }

    /// Verifies the poison of every frame of the block at `idx` that carries
    /// the mark, and clears the tails' marks (the folio's user will
    /// overwrite the poison; the head's word is rewritten anyway).
    #[cold]
    fn check_poison(&self, idx: u32, order: u32) {
        for (off, d) in (0u32..).zip(self.memmap.range(idx, 1 << order)) {
            if d.flags.load(Relaxed) & POISONED != 0 {
                self.verify_poison(idx + off);
                if off > 0 {
                    d.set_fresh(word(FrameState::Body, 0, 0));
                }
            }
        }
    }

    /// Panics if the frame at `idx` no longer holds the free poison: someone
    /// wrote to it after freeing it.
    #[cold]
    fn verify_poison(&self, idx: u32) {
        let pfn = self.memmap.pfn_of(idx);
        let pa = pfn << PAGE_SHIFT;
        let mut buf = [0u8; 256];
        let mut off = 0;
        while off < PAGE_SIZE {
            self.phys.read(pa + off, &mut buf);
            if let Some(p) = buf.iter().position(|&b| b != POISON_BYTE) {
                panic!(
                    "buddy: use after free: pfn {pfn:#x} byte {:#x} is {:#04x}, not the poison {POISON_BYTE:#04x}; {}",
                    off + p as u64,
                    buf[p],
                    self.memmap.dump(pfn)
                );
            }
            off += buf.len() as u64;
        }
    }

    /// A shared zero folio (order 0: the zero page; order 9: the huge zero
    /// folio): zeroed, flagged `ZERO_PAGE | RESERVED`, and never freed —
    /// dropping its last reference panics.  Map it read-only.
    pub fn alloc_zero_folio(&self, order: u32) -> Result<Folio<'_>, AllocError> {
        let f = self.alloc(order, AllocFlags::ZERO | AllocFlags::KERNEL)?;
        self.memmap
            .at(f.idx())
            .flags
            .fetch_or((PageFlags::ZERO_PAGE | PageFlags::RESERVED).bits(), Relaxed);
        Ok(f)
    }

    // ----- freeing ----------------------------------------------------

    /// Frees a folio by PFN when the caller tracks it by address (page-table
    /// pages, kernel buffers) and holds its only reference.
    ///
    /// # Panics
    /// If `pfn` is not the head of an allocated folio of `order` with
    /// refcount 1 (tail, double free, wrong order, still referenced).
    pub fn free_pages(&self, pfn: u64, order: u32) {
        let mm = &self.memmap;
        let Some(d) = mm.desc(pfn) else {
            panic!("buddy: freeing pfn {pfn:#x} outside the memmap");
        };
        let idx = mm.idx_of(pfn);
        let w = d.flags.load(Relaxed);
        match FrameState::from_word(w) {
            FrameState::Head => {}
            FrameState::Body if mm.head_of(idx).is_some() => {
                self.bad_free(idx, format_args!("freeing a tail page"))
            }
            FrameState::Free | FrameState::Pcp | FrameState::Body => {
                self.bad_free(idx, format_args!("double free"))
            }
            _ => self.bad_free(
                idx,
                format_args!("freeing a frame the allocator does not own"),
            ),
        }
        if order_of(w) != order {
            self.bad_free(
                idx,
                format_args!(
                    "freed with wrong order {order} (folio order {})",
                    order_of(w)
                ),
            );
        }
        if d.refcount.load(Relaxed) != 1 {
            self.bad_free(
                idx,
                format_args!("freeing a folio that is still referenced"),
            );
        }
        d.refcount.store(0, Relaxed);
        self.release_folio(idx);
    }

    #[cold]
    #[track_caller]
    fn bad_free(&self, idx: u32, why: fmt::Arguments<'_>) -> ! {
        panic!(
            "buddy: {why}: {}",
            self.memmap.dump(self.memmap.pfn_of(idx))
        )
    }

    /// The folio at `idx` lost its last reference: check it, poison it and
    /// return it to a cache or the zone.  The common case (release build,
    /// no poisoning, no anon-exclusive tails) reads the head's word once and
    /// goes straight to the cache; everything else is out of line.
    #[inline]
    pub(crate) fn release_folio(&self, idx: u32) {
        let mm = self.memmap;
        let (w, keep) = self.release_checks(&mm, idx);
        self.free_block(&mm, idx, w, keep);
    }

    /// Folios at `idxs` lost their last references (see
    /// [`Folio::put_many_deferred`]): [`Self::release_folio`] for each,
    /// with interrupts masked and the per-CPU cache entered once per
    /// chunk of [`RELEASE_CHUNK`] instead of once per folio (Linux's
    /// `free_unref_folios`).  Zap and collapse free hundreds at a time.
    pub(crate) fn release_folios(&self, idxs: &[u32]) {
        let mm = self.memmap;
        for chunk in idxs.chunks(RELEASE_CHUNK) {
            let (_irq, cpu) = self.cpu.irq_guard_on_cpu();
            let p = (cpu < MAX_CPUS).then(|| self.pcp[cpu].0.enter(cpu));
            for &idx in chunk {
                let (w, keep) = self.release_checks(&mm, idx);
                let order = order_of(w);
                match &p {
                    Some(p) if order <= PCP_MAX_ORDER => {
                        let mt = Self::cache_type(w);
                        if p.push(&mm, mt, order, idx, keep) > PCP_HIGH[order as usize] {
                            self.drain_batch(p, mt, order);
                        }
                    }
                    _ => self.zone.lock().free_block(&mm, idx, order),
                }
            }
        }
    }

    /// The checks (and, in debug builds or with poisoning, the scrub) of a
    /// folio about to go back; returns its head word and the `POISONED`
    /// mark for the cache.
    #[inline]
    fn release_checks(&self, mm: &Memmap<'_>, idx: u32) -> (u32, u32) {
        let w = mm.at(idx).flags.load(Relaxed);
        let never = (PageFlags::RESERVED | PageFlags::ZERO_PAGE).bits();
        if FrameState::from_word(w) != FrameState::Head || w & never != 0 {
            self.bad_release(idx, w);
        }
        if cfg!(debug_assertions) {
            self.check_release(idx, w);
        }
        // The head's `POISONED` mark for the cache: a head never has one,
        // unless `scrub` just poisoned the folio.
        let mut keep = 0;
        if cfg!(debug_assertions) || w & TAILS_AE != 0 || self.poison.load(Relaxed) {
            keep = self.scrub(idx, w);
        }
        (w, keep)
    }

    /// The per-CPU list a freed folio goes to: the type it was allocated
    /// as.
    #[inline]
    fn cache_type(w: u32) -> usize {
        if w & PageFlags::KERNEL.bits() != 0 {
            UNMOVABLE
        } else {
            MOVABLE
        }
    }

    #[cold]
    #[track_caller]
    fn bad_release(&self, idx: u32, w: u32) -> ! {
        if FrameState::from_word(w) != FrameState::Head {
            self.bad_free(
                idx,
                format_args!("freeing something that is not a folio head"),
            );
        }
        self.bad_free(idx, format_args!("freeing a reserved or zero folio"))
    }

    /// Debug builds: the folio must be unmapped, unqueued, unlocked, and its
    /// tails plain `Body` frames.
    #[inline(never)]
    fn check_release(&self, idx: u32, w: u32) {
        let mm = &self.memmap;
        let d = mm.at(idx);
        let pf = PageFlags::from_bits_truncate(w);
        let order = order_of(w);
        if d.mapcount.load(Relaxed) != 0 || d.entire_mapcount.load(Relaxed) != 0 {
            self.bad_free(idx, format_args!("freeing a folio that is still mapped"));
        }
        if pf.contains(PageFlags::DEFERRED_SPLIT) {
            self.bad_free(
                idx,
                format_args!("freeing a folio on a deferred-split queue"),
            );
        }
        if pf.contains(PageFlags::LOCKED) {
            self.bad_free(idx, format_args!("freeing a locked folio"));
        }
        for i in idx + 1..idx + (1 << order) {
            if mm.at(i).state() != FrameState::Body {
                self.bad_free(
                    i,
                    format_args!("corrupt tail of folio {:#x} order {order}", mm.pfn_of(idx)),
                );
            }
        }
    }

    /// Poisons the freed folio's memory and marks its frames, or (without
    /// poisoning) clears the anon-exclusive bits its user left on tails.
    /// Returns the `POISONED` mark now on the head (0 or the bit).
    #[inline(never)]
    fn scrub(&self, idx: u32, w: u32) -> u32 {
        let mm = &self.memmap;
        let order = order_of(w);
        let n = 1u32 << order;
        let poison = self.poison.load(Relaxed);
        if poison {
            self.phys.fill(
                mm.pfn_of(idx) << PAGE_SHIFT,
                PAGE_SIZE << order,
                POISON_BYTE,
            );
        }
        if poison || cfg!(debug_assertions) {
            // Mark the poison; debug builds also wipe the tails' flags
            // unconditionally, so a missed `TAILS_AE` cannot hide a bug.
            let extra = if poison { POISONED } else { 0 };
            for d in mm.range(idx, n) {
                d.set_fresh(word(FrameState::Body, 0, extra));
            }
            extra
        } else {
            // Tails stay `Body` for the next user, but without the
            // anon-exclusive bits this folio's user left on them.
            for d in mm.range(idx + 1, n - 1) {
                d.set_fresh(word(FrameState::Body, 0, 0));
            }
            0
        }
    }

    /// Puts the block of the folio whose head word was `w` on the running
    /// CPU's cache (draining a batch when over the high mark) or straight
    /// into the zone.
    ///
    /// The cache list is the one of the type the folio was allocated as
    /// (its `KERNEL` flag), not its pageblock's current tag: that tag lives
    /// in another descriptor, a cache miss on most frees, and differs only
    /// when a steal retagged the pageblock while the folio was allocated.
    /// The zone, which groups by pageblock, reads the tag when the block
    /// leaves the cache.
    #[inline(always)]
    fn free_block(&self, mm: &Memmap<'_>, idx: u32, w: u32, keep: u32) {
        let order = order_of(w);
        if self.cpu.trivial() && order <= PCP_MAX_ORDER {
            // No hooks to call: CPU 0, nothing to mask.
            self.pcp_put(mm, 0, idx, w, keep);
            return;
        }
        let (_irq, cpu) = self.cpu.irq_guard_on_cpu();
        if order <= PCP_MAX_ORDER && cpu < MAX_CPUS {
            self.pcp_put(mm, cpu, idx, w, keep);
        } else {
            self.zone.lock().free_block(mm, idx, order);
        }
    }

    /// Parks the freed block on `cpu`'s cache (interrupts masked by the
    /// caller), draining a batch when over the high mark.
    #[inline(always)]
    fn pcp_put(&self, mm: &Memmap<'_>, cpu: usize, idx: u32, w: u32, keep: u32) {
        let order = order_of(w);
        let mt = Self::cache_type(w);
        let p = self.pcp[cpu].0.enter(cpu);
        if p.push(mm, mt, order, idx, keep) > PCP_HIGH[order as usize] {
            self.drain_batch(&p, mt, order);
        }
    }

    /// A cache list went over its high mark: returns `batch` blocks to the
    /// zone in one lock hold.
    #[inline(never)]
    fn drain_batch(&self, p: &PcpLists, mt: usize, order: u32) {
        let mm = &self.memmap;
        let mut z = self.zone.lock();
        for _ in 0..pcp_batch(order) {
            match p.pop(mm, mt, order) {
                Some(i) => z.free_block(mm, i, order),
                None => break,
            }
        }
    }

    /// Returns everything in `cpu`'s cache to the zone; returns the pages
    /// moved.  Run it on `cpu` itself, or when `cpu` is quiescent (offline,
    /// or a host thread that has been joined): caches have no lock.
    pub fn drain_cpu(&self, cpu: usize) -> u64 {
        if cpu >= MAX_CPUS {
            return 0;
        }
        let mm = &self.memmap;
        let _irq = self.cpu.irq_guard();
        let p = self.pcp[cpu].0.enter(cpu);
        let mut z = self.zone.lock();
        let mut pages = 0;
        for mt in 0..NR_MT {
            for o in 0..=PCP_MAX_ORDER {
                while let Some(i) = p.pop(mm, mt, o) {
                    z.free_block(mm, i, o);
                    pages += 1 << o;
                }
            }
        }
        pages
    }

    /// Drains the running CPU's cache.
    pub fn drain_local(&self) -> u64 {
        let (_irq, cpu) = self.cpu.irq_guard_on_cpu();
        self.drain_cpu(cpu)
    }

    /// Drains the running CPU's cache and, through
    /// [`CpuOps::call_on_others`], every other CPU's.  Returns the pages
    /// moved on this CPU.
    pub fn drain_all(&self) -> u64 {
        let n = self.drain_local();
        self.cpu.ops.call_on_others(&|| {
            self.drain_local();
        });
        n
    }

    // ----- lookup and statistics --------------------------------------

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

    /// Free blocks on the buddy lists, per type and order.
    pub fn buddyinfo(&self) -> BuddyInfo {
        let _irq = self.cpu.irq_guard();
        BuddyInfo {
            free: self.zone.lock().nr_free,
        }
    }

    /// Pageblocks tagged with each mobility type (indexed like
    /// [`BuddyInfo::free`]), counting every pageblock of the memmap's span
    /// with at least one frame of RAM in it, as Linux counts the blocks of
    /// a zone's span.  Scans one descriptor per pageblock (all 512 only for
    /// a pageblock that starts in a hole).
    pub fn pageblock_counts(&self) -> [u64; NR_MT] {
        let mm = &self.memmap;
        let mut n = [0; NR_MT];
        let mut pfn = mm.base_pfn();
        while pfn < mm.end_pfn() {
            let next = ((pfn | (PAGEBLOCK_FRAMES - 1)) + 1).min(mm.end_pfn());
            if (pfn..next).any(|p| mm.state(p) != FrameState::Hole) {
                n[pageblock_mt(mm, mm.idx_of(pfn))] += 1;
            }
            pfn = next;
        }
        n
    }

    /// `/proc/pagetypeinfo` in Linux's layout: free blocks per type and
    /// order, then pageblocks per type.  Only this allocator's two types
    /// appear (Linux adds Reclaimable, HighAtomic, Isolate, CMA), one zone.
    pub fn pagetypeinfo(&self) -> String {
        let info = self.buddyinfo();
        let blocks = self.pageblock_counts();
        let name = |mt: usize| alloc::format!("{:?}", Migratetype::from_index(mt));
        let mut s = String::new();
        let _ = writeln!(s, "Page block order: {PAGEBLOCK_ORDER}");
        let _ = writeln!(s, "Pages per block:  {PAGEBLOCK_FRAMES}\n");
        let _ = write!(s, "{:<43} ", "Free pages count per migrate type at order");
        for o in 0..=MAX_ORDER {
            let _ = write!(s, "{o:>6} ");
        }
        s.push('\n');
        for mt in 0..NR_MT {
            let _ = write!(
                s,
                "Node {:>4}, zone {:>8}, type {:>12} ",
                0,
                "Normal",
                name(mt)
            );
            for o in 0..NR_ORDERS {
                let _ = write!(s, "{:>6} ", info.free[mt][o]);
            }
            s.push('\n');
        }
        let _ = write!(s, "\n{:<23}", "Number of blocks type ");
        for mt in 0..NR_MT {
            let _ = write!(s, "{:>12} ", name(mt));
        }
        let _ = write!(s, "\nNode 0, zone {:>8} ", "Normal");
        for b in blocks {
            let _ = write!(s, "{b:>12} ");
        }
        s.push('\n');
        s
    }

    /// Frame totals and counters (each lock taken briefly in turn, so the
    /// numbers are only mutually consistent when nothing else allocates).
    pub fn stats(&self) -> MemStats {
        let mut s = MemStats::default();
        let _irq = self.cpu.irq_guard();
        for slot in &self.pcp {
            s.free_pcp += slot.0.pages();
            for o in 0..NR_ORDERS {
                s.allocs[o] += slot.0.allocs(o);
            }
        }
        let z = self.zone.lock();
        for o in 0..NR_ORDERS {
            s.allocs[o] += z.direct_allocs[o];
            s.failures[o] = self.failures[o].load(Relaxed);
            for mt in 0..NR_MT {
                s.free += z.nr_free[mt][o] << o;
            }
        }
        s.free += s.free_pcp;
        s.managed = z.managed;
        s.reserved = z.reserved;
        s.allocated = s.managed - s.free;
        s.used = s.allocated + s.reserved;
        s.pageblock_steals = z.steals;
        s
    }

    /// Calls `f(pfn, order, type)` for every block on the buddy lists.
    pub fn for_each_free_block(&self, mut f: impl FnMut(u64, u32, Migratetype)) {
        let mm = &self.memmap;
        let _irq = self.cpu.irq_guard();
        let z = self.zone.lock();
        for mt in 0..NR_MT {
            for o in 0..NR_ORDERS {
                let mut i = z.head[mt][o];
                while i != NO_FRAME {
                    f(mm.pfn_of(i), o as u32, Migratetype::from_index(mt));
                    i = mm.at(i).link_next.load(Relaxed);
                }
            }
        }
    }

    /// Checks every structural invariant: list membership and counts, each
    /// managed frame covered by exactly one naturally aligned block, every
    /// non-head frame `Body` (anon-exclusive only in a folio whose head has
    /// the `TAILS_AE` hint), no two free buddies left unmerged, counters
    /// adding up.  Meant for tests and self-tests when no other CPU is
    /// allocating (a block in transit between a list and its new owner
    /// would be reported as lost).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mm = &self.memmap;
        let _irq = self.cpu.irq_guard();
        let z = self.zone.lock();
        let mut err = String::new();
        let mut list_pages = 0u64;
        for mt in 0..NR_MT {
            for o in 0..NR_ORDERS {
                let mut i = z.head[mt][o];
                let mut prev = NO_FRAME;
                let mut n = 0;
                while i != NO_FRAME {
                    let d = mm.at(i);
                    let w = d.flags.load(Relaxed);
                    if FrameState::from_word(w) != FrameState::Free
                        || order_of(w) != o as u32
                        || list_mt(w) != mt
                        || d.link_prev.load(Relaxed) != prev
                    {
                        let _ = writeln!(
                            err,
                            "bad free-list entry (mt {mt} order {o}): {}",
                            mm.dump(mm.pfn_of(i))
                        );
                        break;
                    }
                    n += 1;
                    prev = i;
                    i = d.link_next.load(Relaxed);
                }
                if n != z.nr_free[mt][o] {
                    let _ = writeln!(
                        err,
                        "list mt {mt} order {o}: {n} blocks, counter says {}",
                        z.nr_free[mt][o]
                    );
                }
                list_pages += n << o;
            }
        }
        let mut pcp_pages = 0u64;
        for slot in &self.pcp {
            slot.0.for_each(mm, |mt, o, i| {
                let w = mm.at(i).flags.load(Relaxed);
                if FrameState::from_word(w) != FrameState::Pcp
                    || order_of(w) != o
                    || list_mt(w) != mt
                {
                    let _ = writeln!(err, "bad pcp entry: {}", mm.dump(mm.pfn_of(i)));
                }
                pcp_pages += 1 << o;
            });
        }
        let (mut free_scan, mut pcp_scan, mut alloc_scan, mut reserved_scan) =
            (0u64, 0u64, 0u64, 0u64);
        let len = mm.len() as u32;
        let mut i = 0u32;
        while i < len {
            let pfn = mm.pfn_of(i);
            let w = mm.at(i).flags.load(Relaxed);
            let st = FrameState::from_word(w);
            match st {
                FrameState::Hole => i += 1,
                FrameState::Reserved => {
                    reserved_scan += 1;
                    i += 1;
                }
                FrameState::Free | FrameState::Pcp | FrameState::Head => {
                    let o = order_of(w);
                    let n = 1u32 << o;
                    if pfn & (n as u64 - 1) != 0 || i as u64 + n as u64 > len as u64 {
                        let _ = writeln!(err, "misaligned or overhanging block: {}", mm.dump(pfn));
                        break;
                    }
                    match st {
                        FrameState::Free => {
                            free_scan += n as u64;
                            let b = pfn ^ n as u64;
                            if o < MAX_ORDER
                                && mm.desc(b).is_some_and(|bd| {
                                    bd.state() == FrameState::Free && bd.order() == o
                                })
                            {
                                let _ = writeln!(
                                    err,
                                    "unmerged free buddies: {} and {}",
                                    mm.dump(pfn),
                                    mm.dump(b)
                                );
                            }
                        }
                        FrameState::Pcp => pcp_scan += n as u64,
                        _ => alloc_scan += n as u64,
                    }
                    // Tails may hold anon-exclusive bits only where the
                    // free path will see the hint and clear them.
                    // Poison marks are cleared when a folio is handed out.
                    let ok = STATE_MASK
                        | match st {
                            FrameState::Head if w & TAILS_AE != 0 => {
                                PageFlags::ANON_EXCLUSIVE.bits()
                            }
                            FrameState::Head => 0,
                            _ => POISONED,
                        };
                    for t in i + 1..i + n {
                        let tw = mm.at(t).flags.load(Relaxed);
                        if FrameState::from_word(tw) != FrameState::Body || tw & !ok != 0 {
                            let _ = writeln!(
                                err,
                                "non-head frame not a clean Body: {} (block {})",
                                mm.dump(mm.pfn_of(t)),
                                mm.dump(pfn)
                            );
                            break;
                        }
                    }
                    i += n;
                }
                FrameState::Tail | FrameState::Body => {
                    let _ = writeln!(err, "frame outside any block (lost): {}", mm.dump(pfn));
                    i += 1;
                }
            }
            if err.len() > 4096 {
                break;
            }
        }
        if free_scan != list_pages {
            let _ = writeln!(
                err,
                "free blocks in memmap: {free_scan} pages, on lists: {list_pages}"
            );
        }
        if pcp_scan != pcp_pages {
            let _ = writeln!(
                err,
                "pcp blocks in memmap: {pcp_scan} pages, on pcp lists: {pcp_pages}"
            );
        }
        if free_scan + pcp_scan + alloc_scan != z.managed {
            let _ = writeln!(
                err,
                "managed {} != free {free_scan} + pcp {pcp_scan} + allocated {alloc_scan}",
                z.managed
            );
        }
        if reserved_scan != z.reserved {
            let _ = writeln!(
                err,
                "reserved frames {reserved_scan}, counter says {}",
                z.reserved
            );
        }
        if err.is_empty() { Ok(()) } else { Err(err) }
    }
}
