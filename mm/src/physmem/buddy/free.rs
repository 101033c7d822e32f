//! Freeing: a folio that lost its last reference goes back to the running
//! CPU's cache (or its node's zone for uncached orders and for a folio of
//! another node than the CPU's), one at a time or in
//! batches ([`BuddyAllocator::release_folios`]), and caches are drained
//! back to the zone when over their high mark or when memory runs out.
//! Kept apart from allocation because the free path has its own checks
//! and scrubbing, and its own fast path.

use core::sync::atomic::Ordering::Relaxed;

use super::{BuddyAllocator, MOVABLE, POISON_BYTE, UNMOVABLE};
use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::cpu::MAX_CPUS;
use crate::physmem::frame_flags::{FrameState, POISONED, PageFlags, TAILS_AE, order_of, word};
use crate::physmem::memmap::Memmap;
use crate::physmem::pcp::{NR_MT, PCP_HIGH, PCP_MAX_ORDER, PcpLists, pcp_batch};
use crate::reclaim::lru::F_LRU_ANY;

/// Folios freed per interrupt-masked stretch of
/// [`BuddyAllocator::release_folios`]: bounds the time interrupts stay
/// masked (a free is tens of ns; a drain to the zone a few µs).
const RELEASE_CHUNK: usize = 32;

impl BuddyAllocator<'_> {
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
            // Off the LRU first, under one LRU-lock hold per chunk.
            self.lru.del_freed_many(&mm, &self.cpu, chunk);
            let (_irq, cpu) = self.cpu.irq_guard_on_cpu();
            let p = (cpu < MAX_CPUS).then(|| self.pcp[cpu][0].0.enter(cpu));
            let local = self.nodes.cpu_node(cpu);
            for &idx in chunk {
                let (w, keep) = self.release_checks(&mm, idx);
                let order = order_of(w);
                match &p {
                    Some(p) if order <= PCP_MAX_ORDER => {
                        let nid = self.node_of_block(&mm, idx);
                        let mt = Self::cache_type(w);
                        if nid == local {
                            self.park(p, &mm, nid, mt, order, idx, keep);
                        } else {
                            let r = self.pcp_of(cpu, nid).enter(cpu);
                            self.park(&r, &mm, nid, mt, order, idx, keep);
                        }
                    }
                    _ => self.free_to_zone(&mm, idx, order),
                }
            }
        }
    }

    /// The checks (and, in debug builds or with poisoning, the scrub) of a
    /// folio about to go back; returns its head word and the `POISONED`
    /// mark for the cache.
    #[inline]
    fn release_checks(&self, mm: &Memmap<'_>, idx: u32) -> (u32, u32) {
        let mut w = mm.at(idx).flags.load(Relaxed);
        if w & F_LRU_ANY != 0 {
            // On an LRU list or in an add batch: take it off (Linux's
            // `__page_cache_release` in `__folio_put`).
            self.lru.del_freed(mm, &self.cpu, idx);
            w = mm.at(idx).flags.load(Relaxed);
        }
        let never = (PageFlags::RESERVED | PageFlags::ZERO_PAGE).bits();
        if FrameState::from_word(w) != FrameState::Head || w & never != 0 {
            self.bad_release(idx, w);
        }
        if cfg!(debug_assertions) {
            self.check_release(idx, w);
        }
        if w & PageFlags::MLOCKED.bits() != 0 {
            self.freed_mlocked(order_of(w));
        }
        // The head's `POISONED` mark for the cache: a head never has one,
        // unless `scrub` just poisoned the folio.
        let mut keep = 0;
        if cfg!(debug_assertions) || w & TAILS_AE != 0 || self.poison.load(Relaxed) {
            keep = self.scrub(idx, w);
        }
        (w, keep)
    }

    /// A folio freed with `MLOCKED` still set (its last locked mapping went
    /// without a munlock, or it was freed under one): its pages leave
    /// `Mlocked:` here, counted as Linux's `unevictable_pgs_cleared`.
    #[cold]
    fn freed_mlocked(&self, order: u32) {
        self.mlocked_add(1 << order, false);
        self.mlock_cleared.fetch_add(1 << order, Relaxed);
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
            self.free_to_zone(mm, idx, order);
        }
    }

    /// The node of the block at `idx` (no lookup with one node).
    #[inline(always)]
    fn node_of_block(&self, mm: &Memmap<'_>, idx: u32) -> usize {
        if self.nodes.nr_nodes() == 1 {
            0
        } else {
            self.nodes.node_of_pfn(mm.pfn_of(idx))
        }
    }

    /// Returns the block at `idx` straight to its node's zone.
    #[inline(never)]
    fn free_to_zone(&self, mm: &Memmap<'_>, idx: u32, order: u32) {
        self.lock_zone_of(mm.pfn_of(idx))
            .free_block(mm, &self.nodes, idx, order);
    }

    /// Parks the freed block on `cpu`'s cache of its node (interrupts
    /// masked by the caller), draining a batch when over the high mark.
    #[inline(always)]
    fn pcp_put(&self, mm: &Memmap<'_>, cpu: usize, idx: u32, w: u32, keep: u32) {
        let order = order_of(w);
        let nid = self.node_of_block(mm, idx);
        let mt = Self::cache_type(w);
        let p = self.pcp_of(cpu, nid).enter(cpu);
        self.park(&p, mm, nid, mt, order, idx, keep);
    }

    /// Pushes the block at `idx` on cache `p` (of node `nid`), draining a
    /// batch to the node's zone when over the high mark.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn park(
        &self,
        p: &PcpLists,
        mm: &Memmap<'_>,
        nid: usize,
        mt: usize,
        order: u32,
        idx: u32,
        keep: u32,
    ) {
        if p.push(mm, mt, order, idx, keep) > PCP_HIGH[order as usize] {
            self.drain_batch(p, nid, mt, order);
        }
    }

    /// A cache list of node `nid` went over its high mark: returns
    /// `batch` blocks to that node's zone in one lock hold.
    #[inline(never)]
    fn drain_batch(&self, p: &PcpLists, nid: usize, mt: usize, order: u32) {
        let mm = &self.memmap;
        let mut z = self.lock_zone(nid);
        for _ in 0..pcp_batch(order) {
            match p.pop(mm, mt, order) {
                Some(i) => z.free_block(mm, &self.nodes, i, order),
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
        let mut pages = 0;
        for (nid, p) in self.pcps_of(cpu) {
            let p = p.enter(cpu);
            let mut z = self.lock_zone(nid);
            for mt in 0..NR_MT {
                for o in 0..=PCP_MAX_ORDER {
                    while let Some(i) = p.pop(mm, mt, o) {
                        z.free_block(mm, &self.nodes, i, o);
                        pages += 1 << o;
                    }
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
    /// [`CpuOps::call_on_others`](crate::cpu::CpuOps::call_on_others),
    /// every other CPU's.  Returns the pages moved on this CPU.
    pub fn drain_all(&self) -> u64 {
        let n = self.drain_local();
        self.cpu.ops.call_on_others(&|| {
            self.drain_local();
        });
        n
    }
}
