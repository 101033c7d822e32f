//! TLB maintenance: the arch hook ([`TlbOps`]) and the batching object that
//! every multi-entry operation reports to ([`TlbGather`]).

use alloc::vec::Vec;

use super::table::PtAlloc;
use crate::addr::PAGE_SIZE;
use crate::cpu::{AtomicCpuSet, FlushTargets};

/// Which TLB entries an invalidation targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    /// Global kernel mappings: invalidate for every ASID/PCID.
    Kernel,
    /// A user address space, tagged in the TLB by `asid` (arm64 ASID, x86
    /// PCID; 0 where tagging is off).
    User { asid: u16 },
}

impl Space {
    pub const fn is_user(&self) -> bool {
        matches!(self, Space::User { .. })
    }
}

/// TLB invalidation, implemented by the kernel with real instructions
/// (x86 `invlpg`/`invpcid`/CR3 reload, arm64 `tlbi` + `dsb ish` + `isb`)
/// and on the host by the emulated MMU, which records every call.
///
/// Each call returns only once the invalidation is complete on every CPU
/// that may hold the entries (broadcast TLBI and DSB on arm64, shootdown
/// IPIs on x86), because callers free page-table pages or rewrite entries
/// right after it.
pub trait TlbOps: Sync {
    /// Invalidate `[start, end)` in `space`.  `stride` is the smallest leaf
    /// size that was changed in the range (4K, 2M, 1G), a hint that lets
    /// an implementation issue one invalidation per leaf.
    /// `to.cpus` are the CPUs that may hold the entries (the space's
    /// [`AtomicCpuSet`] read after the entries changed and the space's
    /// flush generation was bumped to `to.tlb_gen`,
    /// [`AtomicCpuSet::begin_flush`]): an implementation that invalidates
    /// by IPI needs to reach only those; CPUs that left the set flush when
    /// they switch the space back in (they see the generation moved on).
    fn flush_range(&self, space: Space, to: FlushTargets, start: u64, end: u64, stride: u64);
    /// Invalidate everything cached for `space` on `to.cpus`.
    fn flush_all(&self, space: Space, to: FlushTargets);
    /// Make page-table stores visible to the table walker before the
    /// mapping is used (arm64: `dsb ishst; isb`; nothing on x86).  Called
    /// once per operation that made entries valid.
    fn sync_tables(&self) {}
}

/// Above this many pages (of the smallest stride) one full flush of the
/// address space is cheaper than a range of per-page invalidations.
pub const FULL_FLUSH_THRESHOLD: u64 = 32;

/// Gathers what one batch of page-table changes needs invalidated, and the
/// page-table pages it emptied, so that [`TlbGather::finish`] can do a
/// single flush and only then free the pages (another CPU's walker may
/// still be reading a table page until its TLB/walk caches are flushed).
///
/// Semantics: the covered ranges are merged into one `[start, end)` (as
/// Linux's mmu_gather does); `finish` issues one `flush_range` over it, or
/// one `flush_all` when it spans more than [`FULL_FLUSH_THRESHOLD`] strides.
/// Flushes that break-before-make needs *inside* an operation are not
/// deferred here: the entry is rewritten right after, so they are issued
/// immediately by the operation.
///
/// A gather belongs to one page table (its `Space`); use one per batch and
/// call `finish` before dropping the page-table lock only if the freed
/// pages must not be reused under it — finishing after unlocking is fine,
/// since the pages are unreachable from the table already.
#[must_use = "a TlbGather must be finished, or flushes and frees are lost"]
pub struct TlbGather<'a> {
    space: Space,
    /// The CPUs that may cache the space's entries (its page table's set),
    /// read when the flush is issued.
    cpus: &'a AtomicCpuSet,
    tlb: &'a dyn TlbOps,
    alloc: &'a dyn PtAlloc,
    start: u64,
    end: u64,
    stride: u64,
    freed: Vec<u64>,
}

impl<'a> TlbGather<'a> {
    /// A gather for `space`; normally obtained from
    /// [`super::PageTable::gather`].
    pub fn new(
        space: Space,
        cpus: &'a AtomicCpuSet,
        tlb: &'a dyn TlbOps,
        alloc: &'a dyn PtAlloc,
    ) -> Self {
        TlbGather {
            space,
            cpus,
            tlb,
            alloc,
            start: u64::MAX,
            end: 0,
            stride: u64::MAX,
            freed: Vec::new(),
        }
    }

    pub fn space(&self) -> Space {
        self.space
    }

    /// Record that entries covering `[start, end)` with leaves of `size`
    /// bytes were downgraded or removed.
    pub fn add_range(&mut self, start: u64, end: u64, size: u64) {
        debug_assert!(start < end);
        self.start = self.start.min(start);
        self.end = self.end.max(end);
        self.stride = self.stride.min(size);
    }

    /// Hand over a page-table page that is no longer reachable from the
    /// table; it is freed after the flush.
    pub fn add_freed_table(&mut self, pa: u64) {
        self.freed.push(pa);
    }

    /// True if nothing needs flushing or freeing.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end && self.freed.is_empty()
    }

    /// The merged range pending, if any.
    pub fn pending_range(&self) -> Option<(u64, u64)> {
        (self.start < self.end).then_some((self.start, self.end))
    }

    /// Issue the (single) flush, then free the gathered table pages.
    pub fn finish(mut self) {
        self.flush_now();
        for pa in self.freed.drain(..) {
            self.alloc.free_pt(pa);
        }
    }

    /// Flush what is pending now (used by `finish`, and by operations that
    /// must not leave a stale entry behind before continuing).
    pub(crate) fn flush_now(&mut self) {
        if self.start < self.end {
            let stride = if self.stride == u64::MAX {
                PAGE_SIZE
            } else {
                self.stride
            };
            let to = self.cpus.begin_flush();
            if (self.end - self.start) / stride > FULL_FLUSH_THRESHOLD {
                self.tlb.flush_all(self.space, to);
            } else {
                self.tlb
                    .flush_range(self.space, to, self.start, self.end, stride);
            }
        } else if !self.freed.is_empty() {
            // Freed tables with no leaf change still need the walk caches
            // (paging-structure caches) dropped before the pages are reused.
            self.tlb.flush_all(self.space, self.cpus.begin_flush());
        }
        self.start = u64::MAX;
        self.end = 0;
        self.stride = u64::MAX;
    }
}

impl Drop for TlbGather<'_> {
    fn drop(&mut self) {
        debug_assert!(self.is_empty(), "TlbGather dropped without finish()");
    }
}
