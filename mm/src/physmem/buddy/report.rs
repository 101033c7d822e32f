//! What the allocator tells the outside: frame totals and per-order
//! counters ([`MemStats`]), free blocks per order and type
//! ([`BuddyInfo`], `/proc/buddyinfo`, `/proc/pagetypeinfo`) and a walk
//! over the free blocks.  Read-only views, kept apart from the mechanism
//! they observe.

use alloc::string::String;
use core::fmt::{self, Write as _};
use core::sync::atomic::Ordering::Relaxed;

use super::zone::pageblock_mt;
use super::{BuddyAllocator, MAX_ORDER, MOVABLE, Migratetype, NR_ORDERS, NumaStat, UNMOVABLE};
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
    /// The node (0 for the sum over nodes that [`BuddyAllocator::buddyinfo`] gives).
    pub node: usize,
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
        write!(f, "Node {}, zone {:>8} ", self.node, "Normal")?;
        for o in 0..=MAX_ORDER {
            write!(f, "{:>6} ", self.blocks(o))?;
        }
        Ok(())
    }
}
impl BuddyAllocator<'_> {
    /// Free blocks on the buddy lists, per type and order, summed over
    /// the nodes.
    pub fn buddyinfo(&self) -> BuddyInfo {
        let mut b = self.buddyinfo_node(0);
        for n in 1..self.nodes.nr_nodes() {
            let o = self.buddyinfo_node(n);
            for (a, x) in b.free.iter_mut().flatten().zip(o.free.iter().flatten()) {
                *a += x;
            }
        }
        b.node = 0;
        b
    }

    /// Free blocks on node `nid`'s buddy lists, per type and order.
    pub fn buddyinfo_node(&self, nid: usize) -> BuddyInfo {
        let _irq = self.cpu.irq_guard();
        BuddyInfo {
            node: nid,
            free: self.zones[nid].lock().nr_free,
        }
    }

    /// `/proc/buddyinfo`: one line per node.
    pub fn buddyinfo_text(&self) -> String {
        let mut s = String::new();
        for n in 0..self.nodes.nr_nodes() {
            let _ = writeln!(s, "{}", self.buddyinfo_node(n));
        }
        s
    }

    /// Frames node `nid`'s zone manages and holds reserved.
    pub fn node_managed(&self, nid: usize) -> (u64, u64) {
        if nid >= self.nodes.nr_nodes() {
            return (0, 0);
        }
        let _irq = self.cpu.irq_guard();
        let z = self.zones[nid].lock();
        (z.managed, z.reserved)
    }

    /// Node `nid`'s free pages: its zone's lists plus every CPU's cache of
    /// that node.
    pub fn node_free_pages(&self, nid: usize) -> u64 {
        if nid >= self.nodes.nr_nodes() {
            return 0;
        }
        let pcp: u64 = (0..self.pcp.len())
            .map(|c| self.pcp_of(c, nid).pages())
            .sum();
        self.node_free(nid) + pcp
    }

    /// Node `nid`'s `numa_*` counters (per allocation call, as Linux).
    pub fn numa_stat(&self, nid: usize) -> NumaStat {
        let Some(c) = self.numa.get(nid) else {
            return NumaStat::default();
        };
        // Every allocation served by a CPU's cache of its own node is a
        // local hit on that node (see the module docs); those of the
        // other nodes' caches were counted as they happened.
        let cached: u64 = self
            .pcp
            .iter()
            .enumerate()
            .filter(|(cpu, _)| self.nodes.cpu_node(*cpu) == nid)
            .map(|(_, slots)| (0..NR_ORDERS).map(|o| slots[0].0.allocs(o)).sum::<u64>())
            .sum();
        NumaStat {
            hit: c.hit.load(Relaxed) + cached,
            miss: c.miss.load(Relaxed),
            foreign: c.foreign.load(Relaxed),
            interleave: c.interleave.load(Relaxed),
            local: c.local.load(Relaxed) + cached,
            other: c.other.load(Relaxed),
        }
    }

    /// The `numa_*` counters summed over the nodes (`/proc/vmstat`).
    pub fn numa_stat_total(&self) -> NumaStat {
        let mut t = NumaStat::default();
        for n in 0..self.nodes.nr_nodes() {
            let s = self.numa_stat(n);
            t.hit += s.hit;
            t.miss += s.miss;
            t.foreign += s.foreign;
            t.interleave += s.interleave;
            t.local += s.local;
            t.other += s.other;
        }
        t
    }

    /// Pageblocks tagged with each mobility type (indexed like
    /// [`BuddyInfo::free`]), counting every pageblock of the memmap's span
    /// with at least one frame of RAM in it, as Linux counts the blocks of
    /// a zone's span.  Scans one descriptor per pageblock (all 512 only for
    /// a pageblock that starts in a hole).
    pub fn pageblock_counts(&self) -> [u64; NR_MT] {
        let mut n = [0; NR_MT];
        for nid in 0..self.nodes.nr_nodes() {
            let c = self.pageblock_counts_node(nid);
            n[0] += c[0];
            n[1] += c[1];
        }
        n
    }

    /// [`Self::pageblock_counts`] for the pageblocks whose first frame is
    /// on node `nid`.
    pub fn pageblock_counts_node(&self, nid: usize) -> [u64; NR_MT] {
        let mm = &self.memmap;
        let mut n = [0; NR_MT];
        let mut pfn = mm.base_pfn();
        while pfn < mm.end_pfn() {
            let next = ((pfn | (PAGEBLOCK_FRAMES - 1)) + 1).min(mm.end_pfn());
            if self.nodes.node_of_pfn(pfn) == nid
                && (pfn..next).any(|p| mm.state(p) != FrameState::Hole)
            {
                n[pageblock_mt(mm, mm.idx_of(pfn))] += 1;
            }
            pfn = next;
        }
        n
    }

    /// `/proc/pagetypeinfo` in Linux's layout: free blocks per type and
    /// order, then pageblocks per type.  Only this allocator's two types
    /// appear (Linux adds Reclaimable, HighAtomic, Isolate, CMA), one zone
    /// per node.
    pub fn pagetypeinfo(&self) -> String {
        let nr = self.nodes.nr_nodes();
        let name = |mt: usize| alloc::format!("{:?}", Migratetype::from_index(mt));
        let mut s = String::new();
        let _ = writeln!(s, "Page block order: {PAGEBLOCK_ORDER}");
        let _ = writeln!(s, "Pages per block:  {PAGEBLOCK_FRAMES}\n");
        let _ = write!(s, "{:<43} ", "Free pages count per migrate type at order");
        for o in 0..=MAX_ORDER {
            let _ = write!(s, "{o:>6} ");
        }
        s.push('\n');
        for nid in 0..nr {
            let info = self.buddyinfo_node(nid);
            for mt in 0..NR_MT {
                let _ = write!(
                    s,
                    "Node {:>4}, zone {:>8}, type {:>12} ",
                    nid,
                    "Normal",
                    name(mt)
                );
                for o in 0..NR_ORDERS {
                    let _ = write!(s, "{:>6} ", info.free[mt][o]);
                }
                s.push('\n');
            }
        }
        let _ = write!(s, "\n{:<23}", "Number of blocks type ");
        for mt in 0..NR_MT {
            let _ = write!(s, "{:>12} ", name(mt));
        }
        s.push('\n');
        for nid in 0..nr {
            let _ = write!(s, "Node {nid}, zone {:>8} ", "Normal");
            for b in self.pageblock_counts_node(nid) {
                let _ = write!(s, "{b:>12} ");
            }
            s.push('\n');
        }
        s
    }

    /// Frame totals and counters (each lock taken briefly in turn, so the
    /// numbers are only mutually consistent when nothing else allocates).
    pub fn stats(&self) -> MemStats {
        let mut s = MemStats::default();
        let _irq = self.cpu.irq_guard();
        for slot in self.pcp.iter().flatten() {
            s.free_pcp += slot.0.pages();
            for o in 0..NR_ORDERS {
                s.allocs[o] += slot.0.allocs(o);
            }
        }
        for o in 0..NR_ORDERS {
            s.failures[o] = self.failures[o].load(Relaxed);
        }
        for zone in &self.zones[..self.nodes.nr_nodes()] {
            let z = zone.lock();
            for o in 0..NR_ORDERS {
                s.allocs[o] += z.direct_allocs[o];
                for mt in 0..NR_MT {
                    s.free += z.nr_free[mt][o] << o;
                }
            }
            s.managed += z.managed;
            s.reserved += z.reserved;
            s.pageblock_steals += z.steals;
        }
        s.free += s.free_pcp;
        s.allocated = s.managed - s.free;
        s.used = s.allocated + s.reserved;
        s
    }

    /// Calls `f(pfn, order, type)` for every block on the buddy lists.
    pub fn for_each_free_block(&self, mut f: impl FnMut(u64, u32, Migratetype)) {
        let mm = &self.memmap;
        let _irq = self.cpu.irq_guard();
        for zone in &self.zones[..self.nodes.nr_nodes()] {
            let z = zone.lock();
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
}
