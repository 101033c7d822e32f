//! Boot-time set-up: which frames the allocator manages.  The kernel
//! reserves what it placed in RAM before the allocator existed (memmap,
//! heap), then hands over everything else the firmware map calls RAM; kept
//! apart because it runs once, before any folio exists, and is the only
//! code that turns holes and reserved frames into free blocks.

use core::sync::atomic::Ordering::Relaxed;

use super::{BuddyAllocator, MAX_ORDER};
use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::bootinfo::BootInfo;
use crate::physmem::frame_flags::{FrameState, word};
use crate::physmem::memmap::OWNER_PB_UNMOVABLE;
use crate::physmem::node::MAX_NUMNODES;

impl BuddyAllocator<'_> {
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
        let mut per_node = [0u64; MAX_NUMNODES];
        let mut n = 0;
        for pfn in s..e {
            let idx = mm.idx_of(pfn);
            let d = mm.at(idx);
            match d.state() {
                FrameState::Hole => {
                    d.set_fresh(word(FrameState::Reserved, 0, 0));
                    per_node[self.nodes.node_of_pfn(pfn)] += 1;
                    n += 1;
                }
                FrameState::Reserved => {}
                _ => panic!(
                    "buddy: reserving a frame the allocator owns: {}",
                    mm.dump(pfn)
                ),
            }
        }
        for (z, c) in self.zones.iter().zip(per_node) {
            if c != 0 {
                z.lock().reserved += c;
            }
        }
        n
    }

    /// Gives the whole frames inside `[pa_start, pa_end)` to the allocator,
    /// as naturally aligned blocks of up to `MAX_ORDER` (merging with free
    /// neighbours), each frame to its node's zone.  Frames may be holes or reserved (freeing reserved memory
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
        let mut run = s;
        while run < e {
            let run_end = self.nodes.node_run_end(run).min(e);
            self.add_free_run(run, run_end);
            run = run_end;
        }
        e - s
    }

    /// [`Self::add_free_range`] for frames `[s, e)`, all on one node.
    fn add_free_run(&self, s: u64, e: u64) {
        let mm = &self.memmap;
        let mut z = self.lock_zone_of(s);
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
            z.free_block(mm, &self.nodes, mm.idx_of(pfn), o);
            pfn += 1 << o;
        }
        z.managed += e - s;
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
}
