//! Catching misuse: the panics for bad frees (double free, tail free,
//! wrong order, freeing a mapped, queued, locked or referenced folio), the
//! check of the free poison when a block is reused (use after free), and
//! [`BuddyAllocator::check_invariants`] for tests.  None of it is needed
//! for a correct caller; it is gathered here so the allocation and free
//! paths read as what they do when nothing is wrong.

use alloc::string::String;
use core::fmt::{self, Write as _};
use core::sync::atomic::Ordering::Relaxed;

use super::zone::list_mt;
use super::{BuddyAllocator, MAX_ORDER, NR_ORDERS, POISON_BYTE};
use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::physmem::frame_flags::{
    FrameState, POISONED, PageFlags, STATE_MASK, TAILS_AE, order_of, word,
};
use crate::physmem::memmap::NO_FRAME;
use crate::physmem::pcp::NR_MT;

impl BuddyAllocator<'_> {
    /// Verifies the poison of every frame of the block at `idx` that carries
    /// the mark, and clears the tails' marks (the folio's user will
    /// overwrite the poison; the head's word is rewritten anyway).
    #[cold]
    pub(super) fn check_poison(&self, idx: u32, order: u32) {
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

    #[cold]
    #[track_caller]
    pub(super) fn bad_free(&self, idx: u32, why: fmt::Arguments<'_>) -> ! {
        panic!(
            "buddy: {why}: {}",
            self.memmap.dump(self.memmap.pfn_of(idx))
        )
    }

    #[cold]
    #[track_caller]
    pub(super) fn bad_release(&self, idx: u32, w: u32) -> ! {
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
    pub(super) fn check_release(&self, idx: u32, w: u32) {
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
        if pf.intersects(PageFlags::LRU | PageFlags::LRU_BATCH) {
            self.bad_free(idx, format_args!("freeing a folio still on the LRU"));
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

    /// Checks every structural invariant: list membership and counts, each
    /// managed frame covered by exactly one naturally aligned block, every
    /// non-head frame `Body` (anon-exclusive only in a folio whose head has
    /// the `TAILS_AE` hint), no two free buddies left unmerged, counters
    /// adding up.  Meant for tests and self-tests when no other CPU is
    /// allocating (a block in transit between a list and its new owner
    /// would be reported as lost).  With several nodes it also checks that
    /// every free block sits in its own node's zone and every cached block
    /// in a cache of a CPU of its node.  Takes every zone lock, in node
    /// order (the only place that holds two).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mm = &self.memmap;
        let _irq = self.cpu.irq_guard();
        let nr = self.nodes.nr_nodes();
        let zones: alloc::vec::Vec<_> = self.zones[..nr].iter().map(|z| z.lock()).collect();
        let mut err = String::new();
        let mut list_pages = 0u64;
        let (mut managed, mut reserved) = (0u64, 0u64);
        for (nid, z) in zones.iter().enumerate() {
            managed += z.managed;
            reserved += z.reserved;
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
                        if self.nodes.node_of_pfn(mm.pfn_of(i)) != nid {
                            let _ = writeln!(
                                err,
                                "free block on node {nid}'s lists but not on node {nid}: {}",
                                mm.dump(mm.pfn_of(i))
                            );
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
            let sum: u64 = (0..NR_MT)
                .flat_map(|mt| (0..NR_ORDERS).map(move |o| (mt, o)))
                .map(|(mt, o)| z.nr_free[mt][o] << o)
                .sum();
            if sum != z.free || self.zone_free[nid].load(Relaxed) != z.free {
                let _ = writeln!(
                    err,
                    "node {nid}: lists hold {sum} pages, zone counts {}, published {}",
                    z.free,
                    self.zone_free[nid].load(Relaxed)
                );
            }
        }
        let mut pcp_pages = 0u64;
        for (cpu, slots) in self.pcp.iter().enumerate() {
            let local = self.nodes.cpu_node(cpu);
            for (k, slot) in slots.iter().enumerate() {
                let nid = k ^ local;
                slot.0.for_each(mm, |mt, o, i| {
                    if self.nodes.node_of_pfn(mm.pfn_of(i)) != nid {
                        let _ = writeln!(
                            err,
                            "cpu {cpu}'s cache of node {nid} holds a block of another node: {}",
                            mm.dump(mm.pfn_of(i))
                        );
                    }
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
                                && self.nodes.node_of_pfn(b) == self.nodes.node_of_pfn(pfn)
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
        if free_scan + pcp_scan + alloc_scan != managed {
            let _ = writeln!(
                err,
                "managed {managed} != free {free_scan} + pcp {pcp_scan} + allocated {alloc_scan}",
            );
        }
        if reserved_scan != reserved {
            let _ = writeln!(
                err,
                "reserved frames {reserved_scan}, counter says {reserved}",
            );
        }
        drop(zones);
        if err.is_empty() { Ok(()) } else { Err(err) }
    }
}
