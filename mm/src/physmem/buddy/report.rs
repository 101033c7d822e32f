//! What the allocator tells the outside: frame totals and per-order
//! counters ([`MemStats`]), free blocks per order and type
//! ([`BuddyInfo`], `/proc/buddyinfo`, `/proc/pagetypeinfo`) and a walk
//! over the free blocks.  Read-only views, kept apart from the mechanism
//! they observe.

use alloc::string::String;
use core::fmt::{self, Write as _};
use core::sync::atomic::Ordering::Relaxed;

use super::zone::pageblock_mt;
use super::{BuddyAllocator, MAX_ORDER, MOVABLE, Migratetype, NR_ORDERS, UNMOVABLE};
use crate::physmem::frame_flags::FrameState;
use crate::physmem::memmap::{NO_FRAME, PAGEBLOCK_FRAMES, PAGEBLOCK_ORDER};
use crate::physmem::pcp::NR_MT;

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
impl BuddyAllocator<'_> {
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
}
