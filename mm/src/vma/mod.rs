//! Virtual memory areas and Linux's address-space system-call rules.
//!
//! [`VmaSet`] is the ordered set of VMAs of one address space.  The
//! system-call entry points ([`VmaSet::mmap`], [`VmaSet::munmap`],
//! [`VmaSet::mprotect`], [`VmaSet::madvise`], [`VmaSet::mremap`], in
//! [`ops`]) implement Linux's argument checking, errno values and VMA-level
//! effects (splits, merges, flags) and return what the caller must then do
//! to the page tables (ranges to zap, reprotect, populate, collapse or
//! move).  They never touch page tables themselves, so they are pure and
//! host-testable.
//!
//! # Locking
//!
//! `VmaSet` has no lock of its own.  It is owned by an address space
//! (`Mm`), which guards it with its reader/writer lock (the mmap lock):
//! lookups under the read lock, every `&mut self` method under the write
//! lock.  That lock is taken before the page-table lock.
//!
//! # Layout
//!
//! See [`Layout`]: a 47-bit user address space on both architectures,
//! top-down allocation below a fixed `mmap_base` (Linux's default layout,
//! without randomisation), `mmap_min_addr` 64 KiB.
//!
//! Mappings are private anonymous memory or shared shmem objects
//! (`Vma::shmem`).

pub mod mempolicy;
pub mod mlock;
pub mod ops;

#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::Range;

use crate::abi::errno::Errno;
use crate::abi::uapi::{PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, Prot};
use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, align_down, align_up};
use crate::thp::VmaThpHints;

pub use mlock::{MlockOutcome, MlockRights};
pub use ops::{
    MadviseAction, MadviseOutcome, MmapOutcome, MprotectOutcome, MremapMove, MremapPlan,
};

bitflags::bitflags! {
    /// VMA flags, with Linux's `VM_*` bit values for recognisability.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct VmFlags: u64 {
        /// Readable.
        const READ = 0x1;
        /// Writable.
        const WRITE = 0x2;
        /// Executable.
        const EXEC = 0x4;
        /// Shared mapping (never set: only private mappings exist).
        const SHARED = 0x8;
        /// `mprotect` may add `READ`.
        const MAYREAD = 0x10;
        /// `mprotect` may add `WRITE`.
        const MAYWRITE = 0x20;
        /// `mprotect` may add `EXEC`.
        const MAYEXEC = 0x40;
        /// May be shared.
        const MAYSHARE = 0x80;
        /// Grows down (a stack); keeps a guard gap below it.
        const GROWSDOWN = 0x100;
        /// `MAP_LOCKED`.
        const LOCKED = 0x2000;
        /// `MADV_SEQUENTIAL`.
        const SEQ_READ = 0x8000;
        /// `MADV_RANDOM`.
        const RAND_READ = 0x1_0000;
        /// `MADV_DONTFORK`: not copied into a child.
        const DONTCOPY = 0x2_0000;
        /// Cannot be expanded by mremap.
        const DONTEXPAND = 0x4_0000;
        /// `MLOCK_ONFAULT` / `MCL_ONFAULT`: with `LOCKED`, pages are locked
        /// as they fault in instead of being populated by the lock call.
        const LOCKONFAULT = 0x8_0000;
        /// Private writable memory charged against overcommit.
        const ACCOUNT = 0x10_0000;
        /// `MAP_NORESERVE`.
        const NORESERVE = 0x20_0000;
        /// `MADV_WIPEONFORK`: the child sees zeroes.
        const WIPEONFORK = 0x200_0000;
        /// `MADV_DONTDUMP`.
        const DONTDUMP = 0x400_0000;
        /// `MADV_HUGEPAGE`.
        const HUGEPAGE = 0x2000_0000;
        /// `MADV_NOHUGEPAGE` (or `MAP_STACK`).
        const NOHUGEPAGE = 0x4000_0000;
    }
}

impl VmFlags {
    /// The access bits (`READ | WRITE | EXEC`).
    pub const ACCESS: VmFlags = VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC);

    /// Access bits from `PROT_*` bits (others ignored, as Linux's
    /// `calc_vm_prot_bits`).
    pub fn from_prot(prot: Prot) -> VmFlags {
        let mut f = VmFlags::empty();
        if prot.contains(PROT_READ) {
            f |= VmFlags::READ;
        }
        if prot.contains(PROT_WRITE) {
            f |= VmFlags::WRITE;
        }
        if prot.contains(PROT_EXEC) {
            f |= VmFlags::EXEC;
        }
        f
    }

    /// The `PROT_*` bits of these flags.
    pub fn prot(self) -> Prot {
        let mut p = PROT_NONE;
        if self.contains(VmFlags::READ) {
            p |= PROT_READ;
        }
        if self.contains(VmFlags::WRITE) {
            p |= PROT_WRITE;
        }
        if self.contains(VmFlags::EXEC) {
            p |= PROT_EXEC;
        }
        p
    }

    /// The THP hints these flags carry.
    pub fn thp_hints(self) -> VmaThpHints {
        VmaThpHints {
            hugepage: self.contains(VmFlags::HUGEPAGE),
            nohugepage: self.contains(VmFlags::NOHUGEPAGE),
        }
    }
}

/// Identity of an anonymous VMA's reverse-map root (Linux's `anon_vma`).
/// Set by the fault path on the first fault; VMAs split from one another
/// share it; two VMAs with different ones never merge.
pub type AnonVmaId = u64;

/// One virtual memory area: `[start, end)`, page aligned, non-empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Protection and behaviour flags.
    pub flags: VmFlags,
    /// Page offset of `start`; for anonymous memory the page number of the
    /// address the mapping was created at, so that a VMA moved by mremap
    /// does not merge with neighbours it was never adjacent to (as Linux).
    pub pgoff: u64,
    /// The reverse-map root, once faulted.
    pub anon_vma: Option<AnonVmaId>,
    /// The VMA's memory policy (`mbind`); `None`: the task's applies.
    /// Kept by split and mremap; only VMAs with equal policies merge.
    pub policy: Option<mempolicy::Mempolicy>,
    /// The shmem object mapped (`MAP_SHARED` anonymous memory or a
    /// memfd), by id ([`crate::shmem::Shmem::id`]; the address space keeps
    /// the objects themselves); `pgoff` is then the object's page index
    /// at `start`.  `None`: private anonymous memory.
    pub shmem: Option<u64>,
}

impl Vma {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Never true for a VMA in a set (kept for API completeness).
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The `PROT_*` bits.
    pub fn prot(&self) -> Prot {
        self.flags.prot()
    }

    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The range.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    /// Private anonymous memory (Linux's `vma_is_anonymous`): no shmem
    /// object behind it.
    pub fn is_anonymous(&self) -> bool {
        self.shmem.is_none()
    }

    /// Backed by a shmem object.
    pub fn is_shmem(&self) -> bool {
        self.shmem.is_some()
    }

    /// The object page index of `addr` (inside the VMA).
    pub fn pgoff_of(&self, addr: u64) -> u64 {
        self.pgoff + ((addr - self.start) >> PAGE_SHIFT)
    }

    /// The THP hints of this VMA.
    pub fn thp_hints(&self) -> VmaThpHints {
        self.flags.thp_hints()
    }

    fn pages(&self) -> u64 {
        self.len() >> PAGE_SHIFT
    }

    /// Address the guard gap of a stack below it starts at.
    fn start_gap(&self, gap: u64) -> u64 {
        if self.flags.contains(VmFlags::GROWSDOWN) {
            self.start.saturating_sub(gap)
        } else {
            self.start
        }
    }

    /// Whether `next` directly follows and could be one VMA with this one
    /// (Linux's merge rule for anonymous VMAs: adjacent, identical flags,
    /// contiguous page offsets, compatible `anon_vma`).
    pub fn can_merge_with(&self, next: &Vma) -> bool {
        self.end == next.start
            && self.flags == next.flags
            && self.pgoff.wrapping_add(self.pages()) == next.pgoff
            && self.policy == next.policy
            && self.shmem == next.shmem
            && (self.anon_vma.is_none()
                || next.anon_vma.is_none()
                || self.anon_vma == next.anon_vma)
    }
}

/// Address-space layout parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// One past the highest user address (Linux's `TASK_SIZE`).  Default
    /// `0x7fff_ffff_f000`: x86_64's 4-level `TASK_SIZE` (47 bits minus one
    /// guard page), used on arm64 too so both arches behave identically.
    pub task_size: u64,
    /// Top of the top-down mmap area.  Default `task_size − 128 MiB`: Linux's
    /// minimum stack gap with an 8 MiB stack rlimit, without randomisation.
    pub mmap_base: u64,
    /// Lowest mappable address (Linux's `vm.mmap_min_addr`, default 65536 on
    /// x86 distributions).  A fixed mapping below it fails with EPERM, as for
    /// a process without `CAP_SYS_RAWIO`.
    pub mmap_min_addr: u64,
    /// Allocate top-down from `mmap_base` (Linux's default) or bottom-up
    /// from `task_size / 3` (Linux's legacy layout).
    pub topdown: bool,
    /// Gap kept below a `GROWSDOWN` VMA (Linux's `stack_guard_gap`, 1 MiB).
    pub stack_guard_gap: u64,
    /// Maximum number of VMAs (Linux's `vm.max_map_count`, 65530).
    pub max_map_count: usize,
}

impl Default for Layout {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Layout {
    /// The default layout (see the fields).
    pub const DEFAULT: Layout = Layout {
        task_size: 0x7fff_ffff_f000,
        mmap_base: 0x7fff_ffff_f000 - (128 << 20),
        mmap_min_addr: 0x1_0000,
        topdown: true,
        stack_guard_gap: 256 * PAGE_SIZE,
        max_map_count: 65530,
    };

    /// Start of the bottom-up area (Linux's `TASK_UNMAPPED_BASE`).
    pub fn unmapped_base(&self) -> u64 {
        align_down(self.task_size / 3, PAGE_SIZE)
    }

    /// Lowest address a search may return.
    fn low_limit(&self) -> u64 {
        self.mmap_min_addr.max(PAGE_SIZE)
    }
}

/// The VMAs of one address space, keyed by start address.
#[derive(Clone, Debug)]
pub struct VmaSet {
    map: BTreeMap<u64, Vma>,
    layout: Layout,
    next_anon_vma: AnonVmaId,
    /// `mm->def_flags`' lock bits (`mlockall(MCL_FUTURE)`): added to every
    /// later mapping.
    def_flags: VmFlags,
    /// What the owner may lock (`RLIMIT_MEMLOCK`, `CAP_IPC_LOCK`).
    rights: MlockRights,
}

impl Default for VmaSet {
    fn default() -> Self {
        Self::new(Layout::DEFAULT)
    }
}

impl VmaSet {
    /// An empty set with `layout`.
    pub fn new(layout: Layout) -> Self {
        VmaSet {
            map: BTreeMap::new(),
            layout,
            next_anon_vma: 1,
            def_flags: VmFlags::empty(),
            rights: MlockRights::default(),
        }
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Number of VMAs (Linux's `map_count`).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No VMAs at all.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// VMAs in address order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Vma> + '_ {
        self.map.values()
    }

    /// The VMA containing `addr`, in O(log n).
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.map
            .range(..=addr)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| v.contains(addr))
    }

    /// The first VMA ending above `addr` (Linux's `find_vma`): the one
    /// containing it or else the next one up.
    pub fn find_vma(&self, addr: u64) -> Option<&Vma> {
        self.find(addr)
            .or_else(|| self.map.range(addr..).next().map(|(_, v)| v))
    }

    /// The unmapped gap around `[start, end)` (which holds no VMA): from
    /// the end of the VMA below to the start of the VMA above (0 and
    /// `u64::MAX` at the edges).  Page tables wholly inside it map nothing
    /// and may be freed (Linux's `free_pgtables` floor and ceiling).
    pub fn gap_around(&self, start: u64, end: u64) -> (u64, u64) {
        let floor = self.prev_of(start).map_or(0, |v| v.end.min(start));
        let ceiling = self.find_vma(end).map_or(u64::MAX, |v| v.start.max(end));
        (floor, ceiling)
    }

    /// The VMA ending below or at `addr` that precedes it.
    fn prev_of(&self, addr: u64) -> Option<&Vma> {
        self.map.range(..addr).next_back().map(|(_, v)| v)
    }

    /// VMAs intersecting `[start, end)`, in order.
    pub fn find_intersecting(&self, start: u64, end: u64) -> impl Iterator<Item = &Vma> + '_ {
        let first = self.find_vma(start).map(|v| v.start);
        let lo = first.unwrap_or(u64::MAX);
        self.map
            .range(lo..)
            .map(|(_, v)| v)
            .take_while(move |v| first.is_some() && start < end && v.start < end)
    }

    /// Whether any VMA intersects `[start, end)`.
    pub fn intersects(&self, start: u64, end: u64) -> bool {
        self.find_intersecting(start, end).next().is_some()
    }

    /// Insert a VMA without merging; `EEXIST` if it overlaps, `EINVAL` if
    /// it is empty or unaligned.
    pub fn insert(&mut self, vma: Vma) -> Result<(), Errno> {
        if vma.start >= vma.end
            || !vma.start.is_multiple_of(PAGE_SIZE)
            || !vma.end.is_multiple_of(PAGE_SIZE)
        {
            return Err(Errno::EINVAL);
        }
        if self.intersects(vma.start, vma.end) {
            return Err(Errno::EEXIST);
        }
        self.map.insert(vma.start, vma);
        Ok(())
    }

    /// Remove and return the VMA starting exactly at `start`.
    pub fn remove(&mut self, start: u64) -> Option<Vma> {
        self.map.remove(&start)
    }

    /// Split the VMA containing `addr` so that a VMA starts at `addr`.
    /// Returns false if `addr` is not strictly inside a VMA (nothing to do).
    pub fn split_at(&mut self, addr: u64) -> bool {
        let Some(v) = self.find(addr).copied() else {
            return false;
        };
        if v.start == addr {
            return false;
        }
        debug_assert!(addr.is_multiple_of(PAGE_SIZE));
        let hi = Vma {
            start: addr,
            pgoff: v.pgoff + ((addr - v.start) >> PAGE_SHIFT),
            ..v
        };
        self.map.get_mut(&v.start).expect("present").end = addr;
        self.map.insert(addr, hi);
        true
    }

    /// Merge the VMA ending at `addr` with the one starting there, if
    /// compatible.  Returns whether a merge happened.
    pub fn try_merge_at(&mut self, addr: u64) -> bool {
        let Some(next) = self.map.get(&addr).copied() else {
            return false;
        };
        let Some(prev) = self.prev_of(addr).copied() else {
            return false;
        };
        if !prev.can_merge_with(&next) {
            return false;
        }
        self.map.remove(&addr);
        let p = self.map.get_mut(&prev.start).expect("present");
        p.end = next.end;
        p.anon_vma = prev.anon_vma.or(next.anon_vma);
        true
    }

    /// Try merging at every VMA boundary in `[start, end]`.
    fn merge_range(&mut self, start: u64, end: u64) {
        let bounds: Vec<u64> = self.map.range(start..=end).map(|(&s, _)| s).collect();
        // Ascending, so that when a middle VMA could merge either way but
        // its neighbours cannot merge with each other it joins the lower
        // one, as Linux's vma_merge_new_range prefers.  A merge at `b` only
        // removes key `b`, so later boundaries stay valid.
        for b in bounds {
            self.try_merge_at(b);
        }
    }

    /// Remove `[start, end)` from the set, splitting VMAs at the ends.
    /// Returns the sub-ranges that were mapped, in order (adjacent pieces of
    /// different VMAs are reported separately).
    pub fn unmap_range(&mut self, start: u64, end: u64) -> Vec<Range<u64>> {
        if start >= end {
            return Vec::new();
        }
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self
            .find_intersecting(start, end)
            .map(|v| v.start)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.map.remove(&k))
            .map(|v| v.range())
            .collect()
    }

    /// Give the VMA containing `addr` an `anon_vma` identity if it has none
    /// (the fault path calls this before installing the first anonymous
    /// page, like Linux's `anon_vma_prepare`).  Returns it, or `None` if no
    /// VMA contains `addr`.
    pub fn anon_vma_prepare(&mut self, addr: u64) -> Option<AnonVmaId> {
        let start = self.find(addr)?.start;
        let next = &mut self.next_anon_vma;
        let v = self.map.get_mut(&start)?;
        Some(*v.anon_vma.get_or_insert_with(|| {
            let id = *next;
            *next += 1;
            id
        }))
    }

    /// Whether `[addr, addr + len)` is free, honouring stack guard gaps.
    fn range_free(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let gap = self.layout.stack_guard_gap;
        // The next VMA at or above addr (including one containing it).
        match self.find_vma(addr) {
            Some(v) => end <= v.start_gap(gap) && v.start > addr,
            None => true,
        }
    }

    /// Free gaps `[lo, hi)` between VMAs (guard gaps removed) clipped to
    /// `[low, high)`, in ascending order.
    fn gaps(&self, low: u64, high: u64) -> Vec<Range<u64>> {
        let gap = self.layout.stack_guard_gap;
        let mut out = Vec::new();
        let mut cursor = low;
        for v in self.map.values() {
            let s = v.start_gap(gap);
            if s > cursor {
                out.push(cursor..s.min(high));
            }
            cursor = cursor.max(v.end);
            if cursor >= high {
                break;
            }
        }
        if cursor < high {
            out.push(cursor..high);
        }
        out.retain(|r| r.start < r.end);
        out
    }

    /// Lowest free range of `len` in `[low, high)`.
    fn search_bottom_up(&self, len: u64, low: u64, high: u64) -> Option<u64> {
        self.gaps(low, high)
            .into_iter()
            .find(|g| g.end - g.start >= len)
            .map(|g| g.start)
    }

    /// Highest free range of `len` in `[low, high)`.
    fn search_top_down(&self, len: u64, low: u64, high: u64) -> Option<u64> {
        self.gaps(low, high)
            .into_iter()
            .rev()
            .find(|g| g.end - g.start >= len)
            .map(|g| g.end - len)
    }

    /// Linux's `arch_get_unmapped_area[_topdown]`: the hint if free, else a
    /// search (top-down below `mmap_base`, falling back to bottom-up).
    fn arch_get_area(&self, hint: u64, len: u64, fixed: bool) -> Result<u64, Errno> {
        let l = &self.layout;
        if len > l.task_size - l.mmap_min_addr {
            return Err(Errno::ENOMEM);
        }
        if fixed {
            return Ok(hint);
        }
        if hint != 0
            && let Some(h) = align_up(hint, PAGE_SIZE)
            && l.task_size - len >= h
            && h >= l.mmap_min_addr
            && self.range_free(h, len)
        {
            return Ok(h);
        }
        let found = if l.topdown {
            self.search_top_down(len, l.low_limit(), l.mmap_base)
                .or_else(|| self.search_bottom_up(len, l.unmapped_base(), l.task_size))
        } else {
            self.search_bottom_up(len, l.unmapped_base(), l.task_size)
        };
        found.ok_or(Errno::ENOMEM)
    }

    /// Linux's `__thp_get_unmapped_area`: search for `len + 2 MiB` and place
    /// the mapping so that its address is congruent to `off` modulo 2 MiB.
    fn thp_get_area(&self, len: u64, off: u64) -> Option<u64> {
        let size = PMD_SIZE;
        let off_end = off.checked_add(len)?;
        let off_align = align_up(off, size)?;
        if off_end <= off_align || off_end - off_align < size {
            return None;
        }
        let len_pad = len.checked_add(size)?;
        off.checked_add(len_pad)?;
        let ret = self.arch_get_area(0, len_pad, false).ok()?;
        let off_sub = off.wrapping_sub(ret) & (size - 1);
        if self.layout.topdown && off_sub == 0 {
            // Already aligned: take the top of the padded range so the new
            // mapping abuts the one above it (as Linux does).
            return Some(ret + size);
        }
        Some(ret + off_sub)
    }

    /// Linux's `__get_unmapped_area` for anonymous private memory.
    /// `off` is the file offset Linux would pass (the mmap offset, or the
    /// old VMA's offset for mremap), which only steers THP alignment.
    /// Anonymous mappings whose length is a multiple of 2 MiB and that have
    /// no address hint get a 2 MiB-aligned address (Linux ≥ 6.13 limits THP
    /// alignment to PMD-multiple lengths and skips it when a hint is given).
    pub fn get_unmapped_area(
        &self,
        hint: u64,
        len: u64,
        off: u64,
        fixed: bool,
    ) -> Result<u64, Errno> {
        let l = &self.layout;
        if len > l.task_size {
            return Err(Errno::ENOMEM);
        }
        let addr = if !fixed && hint == 0 && len.is_multiple_of(PMD_SIZE) {
            match self.thp_get_area(len, off) {
                Some(a) => a,
                None => self.arch_get_area(hint, len, fixed)?,
            }
        } else {
            self.arch_get_area(hint, len, fixed)?
        };
        if addr > l.task_size - len {
            return Err(Errno::ENOMEM);
        }
        if addr % PAGE_SIZE != 0 {
            return Err(Errno::EINVAL);
        }
        if addr < l.mmap_min_addr {
            return Err(Errno::EPERM);
        }
        Ok(addr)
    }

    /// Check the set's invariants (tests and debug builds): sorted,
    /// non-empty, page-aligned, non-overlapping, within the user range, and
    /// no two adjacent VMAs that should have been merged.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let mut prev: Option<&Vma> = None;
        for (&k, v) in &self.map {
            if k != v.start {
                return Err("key differs from start");
            }
            if v.start >= v.end {
                return Err("empty VMA");
            }
            if v.start % PAGE_SIZE != 0 || v.end % PAGE_SIZE != 0 {
                return Err("unaligned VMA");
            }
            if v.end > self.layout.task_size {
                return Err("VMA beyond task size");
            }
            if let Some(p) = prev {
                if p.end > v.start {
                    return Err("overlap");
                }
                if p.can_merge_with(v) {
                    return Err("mergeable neighbours left unmerged");
                }
            }
            prev = Some(v);
        }
        Ok(())
    }
}
