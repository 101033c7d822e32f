//! Swap: the areas anonymous folios are written to under memory pressure,
//! their slot maps, and the swap cache.
//!
//! * [`header`]: Linux's swap header (`SWAPSPACE2`, written by `mkswap`).
//! * [`map`]: one area's slot counts and its cluster allocator, which
//!   hands out naturally aligned runs so large folios go out whole.
//! * [`cache`]: folio ↔ slots while a folio is in flight or shared with
//!   its slots.
//! * [`Swap`] (here): the active areas by type, with their priorities and
//!   I/O, as `swapon`/`swapoff` leave them.
//!
//! The I/O itself is the kernel's: an area comes with a [`SwapIo`] (the
//! kernel's block device; an in-memory one in host tests).
//!
//! # Locks (inside the `aspace` order, all below the page-table locks)
//! `Swap::areas` (reader-writer spin lock: written only by swapon and
//! swapoff) → `SwapCache` lock → an area's `SwapMap` lock.  None is held
//! across I/O.

pub mod cache;
pub mod header;
pub mod map;

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::RwLock;

use crate::paging::SwapEntry;
use crate::physmem::phys::PhysMem;
pub use cache::SwapCache;
pub use map::SwapMap;

/// Swap areas that may be active at once: Linux's `MAX_SWAPFILES` with
/// its usual configuration (32 types minus 4 device-private, 3 migration,
/// 1 hwpoison and 1 PTE-marker type).  A swapon beyond it is EPERM.
pub const MAX_SWAPFILES: usize = 23;
const _: () = assert!(MAX_SWAPFILES <= SwapEntry::MAX_SWAPFILES as usize);

/// An I/O error from a swap area (the page's data is not trustworthy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwapIoError;

/// Reads and writes of whole pages between RAM and an area's slots.  May
/// sleep; called with no spin lock held.
pub trait SwapIo: Send + Sync {
    /// Writes the `pages` pages at physical `pa` to slots `slot..`.
    fn write(&self, mem: &dyn PhysMem, slot: u64, pa: u64, pages: u64) -> Result<(), SwapIoError>;
    /// Reads slots `slot..` into the `pages` pages at physical `pa`.
    fn read(&self, mem: &dyn PhysMem, slot: u64, pa: u64, pages: u64) -> Result<(), SwapIoError>;
    /// Starts writing the `pages` pages at physical `pa` to slots
    /// `slot..` without waiting (Linux's `swap_writepage` submitting its
    /// bio).  `Ok(true)`: the write is in flight, and the I/O's owner
    /// calls [`MmCtx::end_swap_write`](crate::aspace::ctx::MmCtx::end_swap_write)
    /// with `pa` and the outcome later, in task context (never from an
    /// interrupt handler: it takes mm locks).  `Ok(false)`: the write is
    /// already done (the default: [`Self::write`]).  May sleep for a free
    /// request slot.
    fn write_async(
        &self,
        mem: &dyn PhysMem,
        slot: u64,
        pa: u64,
        pages: u64,
    ) -> Result<bool, SwapIoError> {
        self.write(mem, slot, pa, pages).map(|()| false)
    }
    /// Starts reading slots `slot..` into the `pages` locked pages at
    /// physical `pa` without waiting (swap readahead, Linux's
    /// `swap_read_folio` with a plug).  `Ok(true)`: in flight, and the
    /// I/O's owner calls
    /// [`MmCtx::end_swap_read`](crate::aspace::ctx::MmCtx::end_swap_read)
    /// with `pa` and the outcome later, in task context.  `Ok(false)`:
    /// already read (the default: [`Self::read`]); the caller completes
    /// it.  May sleep for a free request slot.
    fn read_async(
        &self,
        mem: &dyn PhysMem,
        slot: u64,
        pa: u64,
        pages: u64,
    ) -> Result<bool, SwapIoError> {
        self.read(mem, slot, pa, pages).map(|()| false)
    }
    /// Until [`Self::unplug`], asynchronous requests to consecutive slots
    /// may merge into one (Linux's `blk_start_plug`); the default does
    /// nothing.
    fn plug(&self) {}
    /// Ends [`Self::plug`]: the requests held back start.
    fn unplug(&self) {}
}

/// One active swap area.
pub struct SwapArea {
    /// The path swapon was given (what `/proc/swaps` prints).
    pub name: String,
    /// Priority: explicit (0..=32767) or automatic (negative, -2 first).
    pub prio: i32,
    /// The priority was assigned automatically (swapoff renumbers those
    /// below it, as Linux).
    pub auto_prio: bool,
    /// The area is a block device (`partition` in `/proc/swaps`).
    pub is_blockdev: bool,
    /// Slot counts and the cluster allocator.
    pub map: SwapMap,
    pub io: &'static dyn SwapIo,
    /// Being swapped off: no new slots from it.
    pub closing: core::sync::atomic::AtomicBool,
}

/// The active areas by type, and their types in allocation order.
struct Areas {
    by_type: [Option<Arc<SwapArea>>; MAX_SWAPFILES],
    /// The active types by priority descending, type ascending (the order
    /// [`Swap::alloc`] tries them in), `len` of them: kept by swapon and
    /// swapoff so the per-folio allocation reads a short list instead of
    /// scanning every type for the best priority.
    order: [u8; MAX_SWAPFILES],
    len: usize,
}

impl Areas {
    /// Rebuilds `order` after `by_type` changed.
    fn reorder(&mut self) {
        let mut n = 0;
        for (t, a) in self.by_type.iter().enumerate() {
            let Some(a) = a else { continue };
            // Insertion: after every type of higher or equal priority.
            let at = self.order[..n]
                .iter()
                .position(|&o| {
                    self.by_type[o as usize]
                        .as_ref()
                        .is_some_and(|b| b.prio < a.prio)
                })
                .unwrap_or(n);
            self.order.copy_within(at..n, at + 1);
            self.order[at] = t as u8;
            n += 1;
        }
        self.len = n;
    }
}

/// The active swap areas, by type (the index in swap entries).
pub struct Swap {
    areas: RwLock<Areas>,
    /// The next automatic priority (Linux 6.12: -2, -3, …).
    next_auto_prio: crate::sync::Mutex<i32>,
    /// The swap cache of all areas.
    pub cache: SwapCache,
    /// Pages whose write to swap is in flight (`Writeback:` in
    /// `/proc/meminfo`, `nr_writeback` in `/proc/vmstat`, as Linux counts
    /// folios under `PG_writeback`).
    writeback: AtomicU64,
    /// `/sys/kernel/mm/swap/vma_ra_enabled`: swap readahead on (Linux's
    /// default; `aspace::swap_readahead`).
    pub vma_ra_enabled: core::sync::atomic::AtomicBool,
}

impl Default for Swap {
    fn default() -> Self {
        Self::new()
    }
}

impl Swap {
    pub const fn new() -> Self {
        Swap {
            areas: RwLock::new(Areas {
                by_type: [const { None }; MAX_SWAPFILES],
                order: [0; MAX_SWAPFILES],
                len: 0,
            }),
            next_auto_prio: crate::sync::Mutex::new(-1),
            cache: SwapCache::new(),
            writeback: AtomicU64::new(0),
            vma_ra_enabled: core::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Pages being written to swap now.
    pub fn writeback_pages(&self) -> u64 {
        self.writeback.load(Ordering::Relaxed)
    }

    /// `nr` pages start (`start`) or finish being written.
    pub(crate) fn writeback_account(&self, nr: u64, start: bool) {
        if start {
            self.writeback.fetch_add(nr, Ordering::Relaxed);
        } else {
            let old = self.writeback.fetch_sub(nr, Ordering::Relaxed);
            debug_assert!(old >= nr, "writeback pages below zero");
        }
    }

    /// The area of type `ty`, if active.
    pub fn area(&self, ty: u8) -> Option<Arc<SwapArea>> {
        self.areas.read().by_type.get(ty as usize)?.clone()
    }

    /// Runs `f` on the area of type `ty`, if active, under the areas'
    /// lock (read): [`Self::area`] without the reference count's two
    /// atomics, for the swap-cache hit.  `f` must not activate or remove
    /// an area.
    pub fn with_area<R>(&self, ty: u8, f: impl FnOnce(&SwapArea) -> R) -> Option<R> {
        let g = self.areas.read();
        Some(f(g.by_type.get(ty as usize)?.as_ref()?))
    }

    /// Active areas as (type, area), in type order.
    pub fn areas(&self) -> Vec<(u8, Arc<SwapArea>)> {
        self.areas
            .read()
            .by_type
            .iter()
            .enumerate()
            .filter_map(|(t, a)| a.clone().map(|a| (t as u8, a)))
            .collect()
    }

    /// Any area active (anon reclaim is pointless without one).
    pub fn active(&self) -> bool {
        self.areas.read().len > 0
    }

    /// `SwapTotal` and `SwapFree` in pages.
    pub fn totals(&self) -> (u64, u64) {
        self.areas
            .read()
            .by_type
            .iter()
            .flatten()
            .fold((0, 0), |(t, f), a| (t + a.map.usable(), f + a.map.free()))
    }

    /// The priority the next area without an explicit one gets.
    pub fn take_auto_prio(&self) -> i32 {
        let mut p = self.next_auto_prio.lock();
        *p -= 1;
        *p
    }

    /// Makes `area` active under a free type; returns the type, or `None`
    /// if all [`MAX_SWAPFILES`] are in use (swapon's EPERM).
    pub fn activate(&self, area: SwapArea) -> Option<u8> {
        let mut g = self.areas.write();
        let t = g.by_type.iter().position(|a| a.is_none())?;
        g.by_type[t] = Some(Arc::new(area));
        g.reorder();
        Some(t as u8)
    }

    /// Removes area `ty` (swapoff, after every slot came back).  Areas with
    /// automatic priorities below it move up by one, as Linux.
    pub fn deactivate(&self, ty: u8) -> Option<Arc<SwapArea>> {
        let mut g = self.areas.write();
        let a = g.by_type.get_mut(ty as usize)?.take()?;
        g.reorder();
        if a.auto_prio {
            *self.next_auto_prio.lock() += 1;
        }
        Some(a)
    }

    /// Allocates a run of `2^order` slots for the swap cache on the
    /// highest-priority area that has one (equal priorities: the lowest
    /// type first; Linux rotates them).  Returns (type, first slot).
    pub fn alloc(&self, order: u32) -> Option<(u8, u64)> {
        let g = self.areas.read();
        g.order[..g.len].iter().find_map(|&t| {
            let a = g.by_type[t as usize].as_ref()?;
            if a.closing.load(Ordering::Acquire) {
                return None;
            }
            a.map.alloc(order).map(|s| (t, s))
        })
    }
}
