//! Allocation: a block from the running CPU's cache, refilled from the
//! zone in batches, or straight from the zone for uncached orders; then the
//! block becomes a folio (`prep_new_folio`).  The fast path is the reason
//! this file exists on its own: what is inlined into a hit and what goes
//! out of line is decided here, and instruction counts per fault depend on
//! it.

use core::sync::atomic::Ordering::Relaxed;

use super::{AllocError, AllocFlags, BuddyAllocator, MAX_ORDER, UNMOVABLE};
use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::cpu::{IrqGuard, MAX_CPUS};
use crate::physmem::folio::Folio;
use crate::physmem::frame_flags::{FrameState, POISONED, PageFlags, word};
use crate::physmem::node::MAX_NUMNODES;
use crate::physmem::pcp::{PCP_MAX_ORDER, PcpLists, pcp_batch};

impl BuddyAllocator<'_> {
    /// Allocates a folio of `order` on the running CPU.
    ///
    /// Only a hit in the CPU's cache is inlined; a miss (refill from the
    /// zone, uncached orders, the drain-and-retry when memory runs out)
    /// goes out of line and starts over there, so the hit compiles to code
    /// that saves no registers and makes no calls.
    ///
    /// Prefers the CPU's node and falls back to the others by distance
    /// (with [`AllocFlags::THISNODE`], never: the cache holds only local
    /// pages, so a hit is right for it too).
    #[inline]
    pub fn alloc(&self, order: u32, flags: AllocFlags) -> Result<Folio<'_>, AllocError> {
        let mt = flags.migratetype() as usize;
        if self.cpu.trivial() {
            // No hooks to call: CPU 0, nothing to mask.
            if let Some(idx) = self.pcp_hit(0, order, mt) {
                return Ok(self.prep_new_folio(idx, order, flags, mt, 0));
            }
        } else if order <= PCP_MAX_ORDER {
            let (irq, cpu) = self.cpu.irq_guard_on_cpu();
            if let Some(idx) = self.pcp_hit(cpu, order, mt) {
                drop(irq);
                return Ok(self.prep_new_folio(idx, order, flags, mt, cpu));
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
        let p = self.pcp[cpu][0].0.enter(cpu);
        let idx = p.pop(&{ self.memmap }, mt, order)?;
        p.count_alloc(order);
        Some(idx)
    }

    /// Allocates a folio of `order` preferring node `nid`: that node's
    /// zone, then the other nodes by distance, or with
    /// [`AllocFlags::THISNODE`] that node only.  A node beyond the
    /// machine's means the running CPU's.  Uses the CPU's cache of the node
    /// it takes from (see the module docs).
    pub fn alloc_node(
        &self,
        nid: usize,
        order: u32,
        flags: AllocFlags,
    ) -> Result<Folio<'_>, AllocError> {
        let (irq, cpu) = self.cpu.irq_guard_on_cpu();
        let pref = if nid < self.nodes.nr_nodes() {
            nid
        } else {
            self.nodes.cpu_node(cpu)
        };
        self.alloc_inner(cpu, pref, order, flags, irq, true)
    }

    /// [`Self::alloc`] after a cache miss (or a THISNODE request on a
    /// machine with several nodes, which the cache also serves).
    #[inline(never)]
    fn alloc_slow(&self, order: u32, flags: AllocFlags) -> Result<Folio<'_>, AllocError> {
        let (irq, cpu) = self.cpu.irq_guard_on_cpu();
        let pref = self.nodes.cpu_node(cpu);
        self.alloc_inner(cpu, pref, order, flags, irq, true)
    }

    /// Allocates a folio of `order` using `cpu`'s cache (the caller
    /// guarantees it runs on `cpu`, or that `cpu`'s cache is otherwise not
    /// in use: the pcp lock keeps it correct either way).  No watermark
    /// check.
    #[inline]
    pub fn alloc_on(
        &self,
        cpu: usize,
        order: u32,
        flags: AllocFlags,
    ) -> Result<Folio<'_>, AllocError> {
        let irq = self.cpu.irq_guard();
        self.alloc_inner(cpu, self.nodes.cpu_node(cpu), order, flags, irq, false)
    }

    /// Zone `nid` has room for a user allocation of `order` above its
    /// `min` mark (kernel allocations may dig into the reserve); wakes
    /// kswapd when the zone is below `low`.
    fn watermark_ok(&self, nid: usize, order: u32, flags: AllocFlags) -> bool {
        let low = self.wmark[nid][1].load(Relaxed);
        if low == 0 {
            return true;
        }
        let free = self.node_free_relaxed(nid);
        if free < low
            && let Some(wake) = self.kswapd_hook.get()
        {
            wake();
        }
        flags.migratetype() as usize == UNMOVABLE
            || free >= self.wmark[nid][0].load(Relaxed) + (1 << order)
    }

    /// The allocation loop: each node `pref` falls back to (or `pref`
    /// alone for THISNODE) whose zone passes the watermark check, then,
    /// when none had a block, the same once more after draining every
    /// CPU's cache.
    #[inline]
    fn alloc_inner(
        &self,
        cpu: usize,
        pref: usize,
        order: u32,
        flags: AllocFlags,
        irq: IrqGuard<'_>,
        check_wmark: bool,
    ) -> Result<Folio<'_>, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::BadOrder);
        }
        let mt = flags.migratetype() as usize;
        let local = self.nodes.cpu_node(cpu);
        let fallback = self.nodes.fallback(pref);
        let candidates = if flags.contains(AllocFlags::THISNODE) {
            &fallback[..1]
        } else {
            fallback
        };
        let mut allowed = [false; MAX_NUMNODES];
        let mut any = false;
        for &n in candidates {
            let n = n as usize;
            allowed[n] = !check_wmark || self.watermark_ok(n, order, flags);
            any |= allowed[n];
        }
        if any {
            for pass in 0..2 {
                for &n in candidates {
                    let n = n as usize;
                    if !allowed[n] {
                        continue;
                    }
                    // A node's cache serves what reaches that node, except
                    // interleaved requests (which count apart) and a
                    // fallback to the local node (a miss, counted as one
                    // below: slot 0's allocations all count as local hits).
                    let got = if !flags.contains(AllocFlags::INTERLEAVE)
                        && (n != local || pref == local)
                    {
                        let got = self.take_block(cpu, n, order, mt);
                        if got.is_some() && n != local {
                            self.numa_account(pref, n, local, flags);
                        }
                        got
                    } else {
                        let got = self.take_direct(n, order, mt);
                        if got.is_some() {
                            self.numa_account(pref, n, local, flags);
                        }
                        got
                    };
                    if let Some(idx) = got {
                        drop(irq);
                        return Ok(self.prep_new_folio(idx, order, flags, mt, cpu));
                    }
                }
                if pass == 0 {
                    // Free memory may sit in some CPU's cache (including
                    // ours, in other orders): return it all and try once
                    // more.
                    self.drain_cpu(cpu);
                    self.cpu.ops.call_on_others(&|| {
                        self.drain_local();
                    });
                }
            }
        }
        self.failures[order as usize].fetch_add(1, Relaxed);
        Err(AllocError::NoMemory)
    }

    /// Counts an allocation that did not come from a CPU cache: asked for
    /// node `pref`, got node `got`, for a CPU of node `local`.
    fn numa_account(&self, pref: usize, got: usize, local: usize, flags: AllocFlags) {
        let c = &self.numa[got];
        if got == pref {
            c.hit.fetch_add(1, Relaxed);
            if flags.contains(AllocFlags::INTERLEAVE) {
                c.interleave.fetch_add(1, Relaxed);
            }
        } else {
            c.miss.fetch_add(1, Relaxed);
            self.numa[pref].foreign.fetch_add(1, Relaxed);
        }
        if got == local {
            c.local.fetch_add(1, Relaxed);
        } else {
            c.other.fetch_add(1, Relaxed);
        }
    }

    /// Takes a block of node `nid` from `cpu`'s cache of that node
    /// (refilling it by a batch from the node's zone when empty) or, for
    /// uncached orders, from that zone.  Only the cache hit is inlined: the
    /// zone paths are out of line, so the hit needs no callee-saved
    /// registers.  Direct takes of the local node are counted here (as
    /// local hits); the caller counts those of a remote node.
    #[inline(always)]
    fn take_block(&self, cpu: usize, nid: usize, order: u32, mt: usize) -> Option<u32> {
        // A copy, not a reference: `self` has interior mutability, so the
        // compiler would reload the memmap's fields after every store.
        let mm = &{ self.memmap };
        if order <= PCP_MAX_ORDER && cpu < MAX_CPUS {
            let p = self.pcp_of(cpu, nid).enter(cpu);
            let idx = match p.pop(mm, mt, order) {
                Some(i) => i,
                None => self.refill(&p, nid, order, mt)?,
            };
            p.count_alloc(order);
            Some(idx)
        } else {
            let idx = self.take_direct(nid, order, mt)?;
            let local = self.nodes.cpu_node(cpu);
            if nid == local {
                self.numa_account(local, local, local, AllocFlags::empty());
            }
            Some(idx)
        }
    }

    /// The cache is empty: takes a block for the caller plus up to
    /// `batch - 1` more for the cache, in one hold of node `nid`'s zone
    /// lock (the cache's node).
    #[inline(never)]
    fn refill(&self, p: &PcpLists, nid: usize, order: u32, mt: usize) -> Option<u32> {
        let mm = &self.memmap;
        let mut z = self.lock_zone(nid);
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

    /// Straight from node `nid`'s zone (an uncached order or CPU, or a
    /// request for another node).
    #[inline(never)]
    fn take_direct(&self, nid: usize, order: u32, mt: usize) -> Option<u32> {
        let mut z = self.lock_zone(nid);
        let idx = z.rmqueue(&self.memmap, order, mt)?;
        z.direct_allocs[order as usize] += 1;
        Some(idx)
    }

    /// Turns the free block at `idx` into a folio: checks the poison, writes
    /// the head, zeroes on request.  Tails are already `Body` with clean
    /// flags (the free path guarantees it), which is what a tail stores.
    #[inline]
    pub(super) fn prep_new_folio(
        &self,
        idx: u32,
        order: u32,
        flags: AllocFlags,
        mt: usize,
        cpu: usize,
    ) -> Folio<'_> {
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
        if order > 0 {
            // The owner slots (`Folio::add_mapcount_mm`) start empty.
            mm.at(idx + 1).reset_mm_ids();
        }
        // The links only mean something while `LRU` or `DEFERRED_SPLIT` is
        // set, and the LRU and `FolioList` write both when they link the
        // folio.  Until then `link_next` holds the allocating CPU: the LRU
        // puts a new order-0 folio in that CPU's add batch (it is the
        // faulting one, and this saves the fault a call for the CPU id).
        head.link_next.store(cpu as u32, Relaxed);
        if flags.contains(AllocFlags::ZERO) {
            self.phys
                .zero(mm.pfn_of(idx) << PAGE_SHIFT, PAGE_SIZE << order);
        }
        Folio::from_head(self, idx)
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
}
