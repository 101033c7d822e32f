//! The context every address space runs on: the frame allocator, physical
//! memory, TLB maintenance, THP knobs and counters, the shared zero pages,
//! identifier pools and the deferred-split queue.
//!
//! The kernel builds one `MmCtx<'static>`; host tests build one per test so
//! they can run in parallel.  The context holds no `Folio` values (only
//! PFNs) so that it stays covariant in `'a` and a test can borrow it for as
//! long as its address spaces live.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::sync::Mutex;

use crate::addr::PAGE_SHIFT;
use crate::cpu::AtomicCpuSet;
use crate::paging::{PtAlloc, TlbOps};
use crate::physmem::buddy::{AllocError, AllocFlags, BuddyAllocator};
use crate::physmem::compaction::{CompactHook, CompactRequest};
use crate::physmem::folio::{Folio, FolioList, MAX_MM_ID};
use crate::physmem::frame_flags::PageFlags;
use crate::physmem::phys::PhysMem;
use crate::thp::{MthpStat, Thp, VmEvent};

/// Page-table pages from the buddy allocator: order 0, unmovable, zeroed,
/// flagged `PAGETABLE`.  Counts the pages it has out, so leaks show.
pub struct BuddyPtAlloc<'a> {
    buddy: &'a BuddyAllocator<'a>,
    in_use: AtomicUsize,
}

impl<'a> BuddyPtAlloc<'a> {
    pub fn new(buddy: &'a BuddyAllocator<'a>) -> Self {
        BuddyPtAlloc {
            buddy,
            in_use: AtomicUsize::new(0),
        }
    }

    /// Page-table pages currently allocated (deposits included).
    pub fn in_use(&self) -> usize {
        self.in_use.load(Relaxed)
    }
}

impl PtAlloc for BuddyPtAlloc<'_> {
    fn alloc_pt(&self) -> Option<u64> {
        let f = self
            .buddy
            .alloc(0, AllocFlags::PAGETABLE | AllocFlags::ZERO)
            .ok()?;
        self.in_use.fetch_add(1, Relaxed);
        Some(f.pa())
    }

    fn free_pt(&self, pa: u64) {
        self.in_use.fetch_sub(1, Relaxed);
        self.buddy.free_pages(pa >> PAGE_SHIFT, 0);
    }
}

/// A pool of small integer identifiers `1..=max` (ASIDs, mm ids): freed
/// ones are reused first, so the numbers stay small.
struct IdPool {
    next: u64,
    max: u64,
    free: Vec<u64>,
}

impl IdPool {
    const fn new(max: u64) -> Self {
        IdPool {
            next: 1,
            max,
            free: Vec::new(),
        }
    }
    fn get(&mut self) -> Option<u64> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        if self.next > self.max {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }
    fn put(&mut self, id: u64) {
        debug_assert!(id >= 1 && id < self.next && !self.free.contains(&id));
        self.free.push(id);
    }
}

/// Identifier pools, under one lock (taken only when an `Mm` is created or
/// destroyed; a leaf lock).
struct Ids {
    asids: IdPool,
    mm_ids: IdPool,
}

/// No huge zero folio yet.
const NO_HUGE_ZERO: u64 = u64::MAX;

/// Largest ASID (stable per-space id) handed out by default: x86 PCIDs
/// have 12 bits.  On arm64 the id is only a key: the hardware ASID (8 or
/// 16 bits) comes from the arch's generation allocator, which recycles
/// hardware ASIDs with rollovers, so more than 255 spaces can live even
/// with 8-bit ASIDs.
pub const DEFAULT_MAX_ASID: u16 = 4095;

/// The shared state of all address spaces.
///
/// # Locks (see [`crate::aspace`] for the full order)
/// * `deferred` — the deferred-split queue lock: protects the queue (which
///   holds partially mapped large folios, and PMD folios queued at fault or
///   collapse for the underused shrinker) and the
///   link fields of every queued folio (and the `DEFERRED_SPLIT` /
///   `PARTIALLY_MAPPED` flags together with the `nr_anon_partially_mapped`
///   gauge).  Taken under a page-table lock; nothing but the LRU locks
///   (`reclaim::lru`, reached as [`MmCtx::lru`]) and the buddy zone lock
///   may be taken under it.
/// * `huge_zero_lock` — serialises the lazy allocation of the huge zero
///   folio (taken under a page-table lock, takes only the zone lock).
/// * `ids` — ASID and mm-id pools; a leaf.
/// * `khugepaged` — khugepaged's registry of mm ids and its scan cursor; a
///   leaf (registration happens under a page-table lock).
pub struct MmCtx<'a> {
    /// The frame allocator every folio and page-table page comes from.
    pub buddy: &'a BuddyAllocator<'a>,
    /// Physical memory (the allocator's).
    pub mem: &'a dyn PhysMem,
    /// TLB maintenance for every address space.
    pub tlb: &'a dyn TlbOps,
    /// THP knobs and counters.
    pub thp: &'a Thp,
    pt_alloc: BuddyPtAlloc<'a>,
    zero_pfn: u64,
    huge_zero_pfn: AtomicU64,
    huge_zero_lock: Mutex<()>,
    /// Per-ASID CPU sets (index = ASID), see [`MmCtx::cpus_of`].
    cpu_sets: Vec<AtomicCpuSet>,
    ids: Mutex<Ids>,
    pub(super) deferred: Mutex<FolioList>,
    pub(super) khugepaged: Mutex<super::khugepaged::KhugepagedList>,
    /// `'static` and in a plain mutex (no drop glue, no lifetime): the
    /// context must stay covariant in `'a` and droppable while borrowed.
    reclaim: Mutex<Option<&'static (dyn Fn() -> usize + Sync)>>,
    /// The compaction hook (see [`Self::set_compact_hook`]), kept like
    /// `reclaim`.
    compact: Mutex<Option<&'static CompactHook>>,
    /// Swap areas and the swap cache.
    pub swap: crate::swap::Swap,
}

impl<'a> MmCtx<'a> {
    /// A context over `buddy`; allocates the shared 4 KiB zero page.  The
    /// huge zero folio is allocated on first use, as Linux does.
    pub fn new(
        buddy: &'a BuddyAllocator<'a>,
        tlb: &'a dyn TlbOps,
        thp: &'a Thp,
    ) -> Result<Self, AllocError> {
        Self::with_max_asid(buddy, tlb, thp, DEFAULT_MAX_ASID)
    }

    /// As [`MmCtx::new`] with ASIDs limited to `1..=max_asid`.
    pub fn with_max_asid(
        buddy: &'a BuddyAllocator<'a>,
        tlb: &'a dyn TlbOps,
        thp: &'a Thp,
        max_asid: u16,
    ) -> Result<Self, AllocError> {
        let zero = buddy.alloc_zero_folio(0)?;
        Ok(MmCtx {
            buddy,
            mem: buddy.phys(),
            tlb,
            thp,
            pt_alloc: BuddyPtAlloc::new(buddy),
            zero_pfn: zero.pfn(),
            huge_zero_pfn: AtomicU64::new(NO_HUGE_ZERO),
            huge_zero_lock: Mutex::new(()),
            cpu_sets: (0..=max_asid).map(|_| AtomicCpuSet::default()).collect(),
            ids: Mutex::new(Ids {
                asids: IdPool::new(max_asid as u64),
                mm_ids: IdPool::new(MAX_MM_ID),
            }),
            deferred: Mutex::new(FolioList::new()),
            khugepaged: Mutex::new(Default::default()),
            reclaim: Mutex::new(None),
            compact: Mutex::new(None),
            swap: crate::swap::Swap::new(),
        })
    }

    /// The page-table page allocator.
    pub fn pt_alloc(&self) -> &BuddyPtAlloc<'a> {
        &self.pt_alloc
    }

    /// Page-table pages in use by all address spaces (deposits included).
    pub fn pt_pages_in_use(&self) -> usize {
        self.pt_alloc.in_use()
    }

    /// PFN of the shared 4 KiB zero page.
    pub fn zero_pfn(&self) -> u64 {
        self.zero_pfn
    }

    /// PFN of the huge zero folio, if allocated.
    pub fn huge_zero_pfn(&self) -> Option<u64> {
        let p = self.huge_zero_pfn.load(Relaxed);
        (p != NO_HUGE_ZERO).then_some(p)
    }

    /// Frames the context keeps for itself (the zero page and, once
    /// allocated, the huge zero folio): a test's free-frame baseline is
    /// `free + frames_held()`, which stays constant.
    pub fn frames_held(&self) -> u64 {
        1 + if self.huge_zero_pfn().is_some() {
            512
        } else {
            0
        }
    }

    /// True if `pfn` is a frame of the 4K zero page or the huge zero folio
    /// (special mappings: no references, no mapcounts).
    pub fn is_zero_pfn(&self, pfn: u64) -> bool {
        pfn == self.zero_pfn
            || self
                .huge_zero_pfn()
                .is_some_and(|h| pfn >= h && pfn < h + 512)
    }

    /// The huge zero folio, allocating it on first use
    /// (`thp_zero_page_alloc` / `thp_zero_page_alloc_failed`).  It is never
    /// freed (Linux frees it under memory pressure; with no shrinker here
    /// keeping it is the simplification).
    pub(crate) fn get_huge_zero(&self) -> Option<u64> {
        if let Some(p) = self.huge_zero_pfn() {
            return Some(p);
        }
        let _g = self.huge_zero_lock.lock();
        if let Some(p) = self.huge_zero_pfn() {
            return Some(p);
        }
        match self.buddy.alloc_zero_folio(crate::addr::PMD_ORDER) {
            Ok(f) => {
                self.thp.stats.count(VmEvent::ThpZeroPageAlloc);
                self.huge_zero_pfn.store(f.pfn(), Relaxed);
                Some(f.pfn())
            }
            Err(_) => {
                self.thp.stats.count(VmEvent::ThpZeroPageAllocFailed);
                None
            }
        }
    }

    /// The folio holding `pfn` (an anonymous folio's frame).
    #[inline]
    pub(crate) fn folio(&self, pfn: u64) -> Option<Folio<'a>> {
        self.buddy.folio_from_pfn(pfn)
    }

    /// Interrupts masked while the guard lives.  Every context-wide spin
    /// lock (`ids`, `khugepaged`, `deferred`) is taken under it, because
    /// both preemptible code (kernel threads calling `Mm` directly) and
    /// non-preemptible code (khugepaged's passes, system calls, faults)
    /// take them: on one CPU, a holder preempted inside would leave a
    /// non-preemptible spinner waiting forever.
    #[inline]
    pub(crate) fn irq(&self) -> crate::cpu::IrqGuard<'_> {
        self.buddy.irq_guard()
    }

    /// The CPU layer (preemption, spinning, sleeping) the address-space
    /// locks use.
    #[inline]
    pub fn ops(&self) -> &'a dyn crate::cpu::CpuOps {
        self.buddy.cpu_ops()
    }

    pub(crate) fn alloc_ids(&self) -> Option<(u16, u64)> {
        let _irq = self.irq();
        let mut ids = self.ids.lock();
        let asid = ids.asids.get()?;
        match ids.mm_ids.get() {
            Some(id) => Some((asid as u16, id)),
            None => {
                ids.asids.put(asid);
                None
            }
        }
    }

    /// The CPU set of the address space with `asid`, and its flush
    /// generation: the CPUs that run it now (x86) or loaded its root since
    /// the ASID was handed out (arm64) (see [`AtomicCpuSet`] for the
    /// ordering contract).  Lives as long as the context, so page tables
    /// and TLB gathers can hold it.
    pub fn cpus_of(&self, asid: u16) -> &AtomicCpuSet {
        &self.cpu_sets[usize::from(asid)]
    }

    pub(crate) fn free_ids(&self, asid: u16, mm_id: u64) {
        // No CPU runs the space any more; one that loads a later owner of
        // the ASID invalidates it then (the arch's ASID tracking).
        self.cpus_of(asid).clear();
        let _irq = self.irq();
        let mut ids = self.ids.lock();
        ids.asids.put(asid as u64);
        ids.mm_ids.put(mm_id);
    }

    // ----- memory pressure --------------------------------------------

    /// Install the reclaim hook the fault path calls once, with no lock
    /// held, when not even a 4 KiB page is left (then it retries the fault).
    /// The kernel's hook runs the deferred-split shrinker over every live
    /// address space; without a hook the fault path shrinks over the
    /// faulting space alone.  Returns the pages freed (or any progress
    /// measure; 0 means "nothing helped").  The hook lock is a leaf.
    pub fn set_reclaim_hook(&self, hook: &'static (dyn Fn() -> usize + Sync)) {
        *self.reclaim.lock() = Some(hook);
    }

    pub(crate) fn reclaim_hook(&self) -> Option<&'static (dyn Fn() -> usize + Sync)> {
        *self.reclaim.lock()
    }

    /// Install the compaction hook the fault path calls, with no
    /// page-table lock held (the mmap lock read-held, as Linux's fault
    /// path), when an allocation of order > 0 failed and the THP `defrag`
    /// mode asks for something: `hook(order, request)` either compacts
    /// directly (returning whether compaction ran, i.e. was not skipped
    /// as unsuitable) or wakes kswapd and kcompactd.  The hook lock is a
    /// leaf.
    pub fn set_compact_hook(&self, hook: &'static CompactHook) {
        *self.compact.lock() = Some(hook);
    }

    /// An allocation of `order` failed and `req` says what may be done
    /// about it: through the compaction hook, compact directly or wake the
    /// daemons; after a direct compaction that ran, try once more,
    /// counting `compact_stall` and then `compact_success` or
    /// `compact_fail` (Linux's `__alloc_pages_direct_compact`).  Call with
    /// no page-table lock held.
    pub(crate) fn alloc_after_compaction(
        &self,
        order: u32,
        req: CompactRequest,
    ) -> Result<Folio<'a>, AllocError> {
        let Some(hook) = *self.compact.lock() else {
            return Err(AllocError::NoMemory);
        };
        if !hook(order, req) || req == CompactRequest::Wake {
            return Err(AllocError::NoMemory);
        }
        let stats = &self.thp.stats;
        stats.count(VmEvent::CompactStall);
        let r = self.buddy.alloc(order, AllocFlags::USER);
        stats.count(if r.is_ok() {
            VmEvent::CompactSuccess
        } else {
            VmEvent::CompactFail
        });
        r
    }

    // ----- deferred split ---------------------------------------------

    /// Folios on the deferred-split queue.
    pub fn deferred_split_len(&self) -> usize {
        let _irq = self.irq();
        self.deferred.lock().len()
    }

    /// Whether `f` is on the deferred-split queue.
    pub fn deferred_split_queued(&self, f: Folio<'_>) -> bool {
        let _irq = self.irq();
        let _q = self.deferred.lock();
        f.test(PageFlags::DEFERRED_SPLIT)
    }

    /// The queued folios, oldest first (a snapshot, for tests and the
    /// invariant checker).
    pub fn deferred_split_snapshot(&self) -> Vec<Folio<'a>> {
        let _irq = self.irq();
        self.deferred.lock().iter(self.buddy).collect()
    }

    /// Queue a partially mapped large anonymous folio (Linux's
    /// `deferred_split_folio(folio, true)`): counts `split_deferred` and
    /// raises `nr_anon_partially_mapped` the first time.
    pub(crate) fn deferred_split_folio(&self, f: Folio<'a>) {
        self.deferred_split_queue(f, true);
    }

    /// Queue the partially mapped `f`; `count`: Linux's `split_deferred`
    /// and `thp_deferred_split_page` events (a reservation, which nothing
    /// unmapped, does not count them).
    pub(crate) fn deferred_split_queue(&self, f: Folio<'a>, count: bool) {
        let irq = self.irq();
        let mut q = self.deferred.lock();
        if f.test(PageFlags::PARTIALLY_MAPPED) {
            return;
        }
        f.set_flags(PageFlags::PARTIALLY_MAPPED);
        q.push_back(f);
        drop(q);
        drop(irq);
        let order = f.order();
        self.thp.stats.inc(order, MthpStat::NrAnonPartiallyMapped);
        if !count {
            return;
        }
        self.thp.stats.inc(order, MthpStat::SplitDeferred);
        if order == crate::addr::PMD_ORDER {
            self.thp.stats.count(VmEvent::ThpDeferredSplitPage);
        }
    }

    /// Queue a fully mapped PMD folio as a candidate for the underused
    /// shrinker (no `PARTIALLY_MAPPED`, no `split_deferred` count).
    pub(crate) fn deferred_split_add_pmd(&self, f: Folio<'a>) {
        let _irq = self.irq();
        self.deferred.lock().push_back(f);
    }

    /// Take `f` off the queue if it is there (its last mapping went, or a
    /// split is about to consume it).  Returns whether it was queued.
    pub fn deferred_split_remove(&self, f: Folio<'a>) -> bool {
        // Orders 0 and 1 are never queued (as Linux): skip the lock for
        // them, which is every source page of a 4K-built collapse or zap.
        if f.order() <= 1 {
            return false;
        }
        let _irq = self.irq();
        let mut q = self.deferred.lock();
        let was = q.remove(f);
        if f.test(PageFlags::PARTIALLY_MAPPED) {
            f.clear_flags(PageFlags::PARTIALLY_MAPPED);
            self.thp
                .stats
                .dec(f.order(), MthpStat::NrAnonPartiallyMapped);
        }
        was
    }
}
