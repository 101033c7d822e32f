//! What the arch crates need to build the kernel's own page tables with
//! `mm`'s engine (`mm::paging::PageTable` in `Space::Kernel`) at boot,
//! before any allocator exists: table words reached at `pa + offset`, a
//! bump allocator of table frames over one reserved physical range, and a
//! TLB that needs no flush because the tree is not live yet.
//!
//! Once the kernel runs, its run-time mappings (thread stacks) go through
//! the same engine with the kernel's buddy allocator and real TLB
//! maintenance (`kernel`'s `kmap`), so one walker and one encoder serve the
//! direct map, the image, MMIO, stacks and user spaces alike.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
use mm::cpu::FlushTargets;
use mm::paging::{Attrs, PageTable, PagingArch, Perms, PtAlloc, Space, TlbOps};
use mm::physmem::phys::PhysMem;

/// Physical memory seen at `pa + offset`: identity (`offset = 0`) while x86
/// still runs on the boot tables, the direct map on arm64's early tables.
/// Only page-table frames are accessed through it.
pub struct TableMem {
    offset: u64,
}

impl TableMem {
    /// # Safety
    /// Every physical address passed to the [`PhysMem`] methods must be RAM
    /// mapped read-write at `pa + offset` while the value is in use, and
    /// owned by the table being built (no other Rust reference to it).
    pub const unsafe fn new(offset: u64) -> Self {
        TableMem { offset }
    }

    #[inline]
    fn ptr(&self, pa: u64) -> *mut u8 {
        (pa + self.offset) as *mut u8
    }
}

impl PhysMem for TableMem {
    fn word(&self, pa: u64) -> &AtomicU64 {
        debug_assert!(pa.is_multiple_of(8));
        // SAFETY: `pa` is 8-byte aligned RAM mapped at `pa + offset` (the
        // contract of `new`); table words are only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.ptr(pa) as *mut u64) }
    }
    fn zero(&self, pa: u64, len: u64) {
        self.fill(pa, len, 0)
    }
    fn copy(&self, dst: u64, src: u64, len: u64) {
        // SAFETY: both ranges are owned RAM mapped at `+ offset` (`new`).
        unsafe { core::ptr::copy(self.ptr(src), self.ptr(dst), len as usize) }
    }
    fn fill(&self, pa: u64, len: u64, byte: u8) {
        // SAFETY: as for `copy`.
        unsafe { core::ptr::write_bytes(self.ptr(pa), byte, len as usize) }
    }
    fn read(&self, pa: u64, buf: &mut [u8]) {
        // SAFETY: as for `copy`; `buf` is a distinct Rust buffer.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr(pa), buf.as_mut_ptr(), buf.len()) }
    }
    fn write(&self, pa: u64, buf: &[u8]) {
        // SAFETY: as for `read`.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), self.ptr(pa), buf.len()) }
    }
    fn is_zero(&self, pa: u64, len: u64) -> bool {
        (0..len / 8).all(|i| self.load(pa + 8 * i) == 0)
    }
}

/// Zeroed 4 KiB table frames handed out in order from `[start, limit)`,
/// which the caller then reserves as a whole (`EarlyPageTables`).  Boot
/// builds never unmap, so nothing is ever given back.
pub struct BumpTables<'m> {
    mem: &'m TableMem,
    start: u64,
    next: AtomicU64,
    limit: u64,
}

impl<'m> BumpTables<'m> {
    pub fn new(mem: &'m TableMem, start: u64, limit: u64) -> Self {
        BumpTables {
            mem,
            start,
            next: AtomicU64::new(start),
            limit,
        }
    }
    /// The frames handed out so far: `[start, next)`.
    pub fn used(&self) -> core::ops::Range<u64> {
        self.start..self.next.load(Ordering::Relaxed)
    }
}

impl PtAlloc for BumpTables<'_> {
    fn alloc_pt(&self) -> Option<u64> {
        let pa = self.next.fetch_add(4096, Ordering::Relaxed);
        assert!(
            pa + 4096 <= self.limit,
            "early page-table frames exhausted ({:#x}..{:#x})",
            self.start,
            self.limit
        );
        self.mem.zero(pa, 4096);
        Some(pa)
    }
    fn free_pt(&self, pa: u64) {
        // Only an unmap frees tables, and boot builds do not unmap.
        debug_assert!(false, "boot page-table frame {pa:#x} freed");
    }
}

/// TLB maintenance for a tree that is not loaded yet: nothing to flush
/// (the switch to it flushes everything).
pub struct NotLive;

impl TlbOps for NotLive {
    fn flush_range(&self, _: Space, _: FlushTargets, _: u64, _: u64, _: u64) {}
    fn flush_all(&self, _: Space, _: FlushTargets) {}
}

/// Map `[va, va + len)` to `pa` in a kernel table being built at boot:
/// a global kernel mapping with `perms` (uncached device memory if
/// `device`), leaves no larger than `max_level`.  Returns the largest leaf
/// size used.  A failure is a bug in the boot layout, so it panics with
/// the mapping that failed.
pub fn map_boot<A: PagingArch>(
    pt: &mut PageTable<A>,
    va: u64,
    pa: u64,
    len: u64,
    perms: Perms,
    device: bool,
    max_level: u8,
) -> u64 {
    let attrs = Attrs {
        device,
        ..Attrs::kernel(perms)
    };
    pt.map_range_max(va, pa, len, attrs, max_level)
        .unwrap_or_else(|e| panic!("{}: kernel mapping {va:#x}+{len:#x}: {e:?}", A::NAME))
}
