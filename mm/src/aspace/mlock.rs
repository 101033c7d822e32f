//! mlock on an address space: the system calls' page-table side and
//! folio-level mlock (Linux's `mm/mlock.c` since 6.7, "support large
//! folio for mlock").
//!
//! # Which folios are mlocked
//! A folio carries `MLOCKED` ([`Folio::is_mlocked`]) when it is mapped
//! whole into a `VM_LOCKED` VMA:
//! * a PMD-mapped THP in a locked VMA;
//! * an order-0 folio mapped there;
//! * a PTE-mapped large folio only if it lies wholly inside the range
//!   being locked and this space maps all its pages there with
//!   consecutive PTEs (Linux's `allow_mlock_munlock`: `folio_within_range`
//!   and `folio_mlock_step == nr`).  A partially covered one stays
//!   evictable in the counters; its pages stay resident anyway because
//!   reclaim must not unmap anything from a `VM_LOCKED` VMA;
//! * every new anonymous folio faulted into a locked VMA (the fault path
//!   only picks orders whose block fits the VMA), as `mlock_new_folio`.
//!
//! Munlock (munlock, munmap, `MADV_DONTNEED_LOCKED`, exit of a locked
//! mapping; the COW of a page in a locked VMA for the old page) clears the
//! flag of every folio it touches, with no coverage rule.  A folio freed
//! still mlocked leaves the count in the allocator's free path.  There is
//! no `mlock_count`: see [`Folio::mlock`] for what that means for a folio
//! two spaces lock.
//!
//! The counters: `Mlocked:` / `Unevictable:` in `/proc/meminfo` are the
//! allocator's mlocked page gauge; `unevictable_pgs_mlocked` /
//! `unevictable_pgs_munlocked` count pages as flags are set and cleared.

use core::ops::Range;

use super::Mm;
use crate::abi::errno::Errno;
use crate::paging::{BatchMatch, PMD_LEVEL, PageTable, PagingArch, Step};
use crate::physmem::folio::Folio;
use crate::thp::VmEvent;
use crate::vma::{MlockOutcome, MlockRights, VmFlags, Vma, VmaSet};

impl<'a, A: PagingArch> Mm<'a, A> {
    /// `mlock(addr, len)`.
    pub fn mlock(&self, addr: u64, len: u64) -> Result<(), Errno> {
        let mut vmas = self.mmap_write();
        let out = vmas.mlock(addr, len, false);
        self.finish_mlock(vmas, out)
    }

    /// `mlock2(addr, len, flags)` (`MLOCK_ONFAULT`).
    pub fn mlock2(&self, addr: u64, len: u64, flags: u64) -> Result<(), Errno> {
        let mut vmas = self.mmap_write();
        let out = vmas.mlock2(addr, len, flags);
        self.finish_mlock(vmas, out)
    }

    /// `munlock(addr, len)`.
    pub fn munlock(&self, addr: u64, len: u64) -> Result<(), Errno> {
        let mut vmas = self.mmap_write();
        let out = vmas.munlock(addr, len);
        self.finish_mlock(vmas, out)
    }

    /// `mlockall(flags)`.
    pub fn mlockall(&self, flags: u64) -> Result<(), Errno> {
        let mut vmas = self.mmap_write();
        let out = vmas.mlockall(flags);
        self.finish_mlock(vmas, out)
    }

    /// `munlockall()`.
    pub fn munlockall(&self) -> Result<(), Errno> {
        let mut vmas = self.mmap_write();
        let out = vmas.munlockall();
        self.finish_mlock(vmas, out)
    }

    /// Pages in locked VMAs (`VmLck:`).
    pub fn locked_vm(&self) -> u64 {
        self.mmap_read().locked_vm()
    }

    /// Set what the owner may lock (`setrlimit(RLIMIT_MEMLOCK)`, a change
    /// of credentials).
    pub fn set_mlock_rights(&self, r: MlockRights) {
        self.mmap_write().set_mlock_rights(r);
    }

    /// What the owner may lock.
    pub fn mlock_rights(&self) -> MlockRights {
        self.mmap_read().mlock_rights()
    }

    /// The page side of an mlock-family call whose VMA changes `out`
    /// describes, under the mmap lock `vmas` held for writing since they
    /// were made: folios are mlocked or munlocked under it; then the lock
    /// is dropped and populating takes it for reading, as Linux's
    /// `__mm_populate` after `mmap_write_unlock`.
    fn finish_mlock(
        &self,
        vmas: crate::sync::SleepWriteGuard<'_, VmaSet>,
        out: MlockOutcome,
    ) -> Result<(), Errno> {
        if !out.changed.is_empty() {
            let mut pt = self.lock_pt();
            for (r, locked) in &out.changed {
                self.split_pmd_at_boundary(&vmas, &mut pt, r.start);
                self.split_pmd_at_boundary(&vmas, &mut pt, r.end);
                self.mlock_walk(&mut pt, r.clone(), *locked);
            }
        }
        drop(vmas);
        out.result?;
        let Some(r) = out.populate else {
            return Ok(());
        };
        match self.mlock_populate(r) {
            Err(_) if out.ignore_errors => Ok(()),
            r => r,
        }
    }

    /// Linux's `__mm_populate` for mlock: fault in every VMA of `r` but
    /// those with `VM_LOCKONFAULT`, writable where the VMA is writable.
    /// A VMA without access rights fails as GUP's EFAULT, reported as
    /// ENOMEM (the VMA stays locked); running out of memory is EAGAIN
    /// (`__mlock_posix_error_return`).  VMAs unmapped meanwhile end it
    /// quietly.
    fn mlock_populate(&self, r: Range<u64>) -> Result<(), Errno> {
        let vmas = self.mmap_read();
        let segs: alloc::vec::Vec<(u64, u64, VmFlags)> = vmas
            .find_intersecting(r.start, r.end)
            .map(|v| (v.start.max(r.start), v.end.min(r.end), v.flags))
            .collect();
        for (s, e, f) in segs {
            if f.contains(VmFlags::LOCKONFAULT) {
                continue;
            }
            if !f.intersects(VmFlags::ACCESS) {
                return Err(Errno::ENOMEM);
            }
            let acc = if f.contains(VmFlags::WRITE) {
                super::Access::Write
            } else {
                super::Access::Read
            };
            if !self.populate(&vmas, s, e, Some(acc)) {
                return Err(Errno::EAGAIN);
            }
        }
        Ok(())
    }

    /// Mlock (`lock`) or munlock the folios mapped in `r`, which lies in
    /// VMAs that now are (or no longer are) `VM_LOCKED` (Linux's
    /// `mlock_pte_range`).  PMD leaves inside `r` are whole (the caller
    /// split those cut by its edges).  Zero pages are no folios.
    pub(crate) fn mlock_walk(&self, pt: &mut PageTable<'a, A>, r: Range<u64>, lock: bool) {
        let ctx = self.ctx;
        let mut locked = 0;
        let mut unlocked = 0;
        let mut visit = |f: Folio<'a>, whole: bool| {
            if lock {
                if whole && f.mlock() {
                    locked += f.nr_pages();
                }
            } else if f.munlock() {
                unlocked += f.nr_pages();
            }
        };
        for step in pt.walk_range(r.start, r.end) {
            match step {
                Step::Leaf(h) if h.level == PMD_LEVEL => {
                    if let Some(f) = ctx
                        .folio(h.leaf.pfn)
                        .filter(|_| !ctx.is_zero_pfn(h.leaf.pfn))
                    {
                        visit(f, h.whole());
                    }
                }
                Step::Ptes(run) => {
                    self.for_each_pte_batch(&run, BatchMatch::Frames, false, |_i, b, f| {
                        if let Some(f) = f {
                            // Consecutive PTEs from the folio's first page
                            // over all of them: the folio is inside `r`.
                            let whole = b.nr as u64 == f.nr_pages() && b.first.pfn == f.pfn();
                            visit(f, whole);
                        }
                        b.nr
                    });
                }
                _ => {}
            }
        }
        let st = &ctx.thp.stats;
        st.count_n(VmEvent::UnevictablePgsMlocked, locked);
        st.count_n(VmEvent::UnevictablePgsMunlocked, unlocked);
    }

    /// Munlock the folios mapped in the locked VMAs of `[start, end)`
    /// before that range is unmapped (munmap, `MAP_FIXED`, exit,
    /// `MADV_DONTNEED_LOCKED`): Linux's zap munlocks each folio it takes
    /// from a `VM_LOCKED` VMA (`munlock_vma_folio` in the rmap removal).
    pub(crate) fn munlock_before_zap(
        &self,
        vmas: &VmaSet,
        pt: &mut PageTable<'a, A>,
        start: u64,
        end: u64,
    ) {
        let locked: alloc::vec::Vec<Range<u64>> = vmas
            .find_intersecting(start, end)
            .filter(|v| v.flags.contains(VmFlags::LOCKED))
            .map(|v| v.start.max(start)..v.end.min(end))
            .collect();
        for r in locked {
            self.mlock_walk(pt, r, false);
        }
    }

    /// A new anonymous folio was just mapped into `vma` (fault, COW,
    /// collapse): mlock it whole if the VMA is locked (Linux's
    /// `mlock_new_folio`).
    pub(crate) fn mlock_new_folio(&self, vma: &Vma, f: Folio<'a>) {
        if vma.flags.contains(VmFlags::LOCKED) && f.mlock() {
            let st = &self.ctx.thp.stats;
            st.count_n(VmEvent::UnevictablePgsMlocked, f.nr_pages());
        }
    }

    /// `f` lost a mapping in `vma` (COW copy, collapse): munlock it if the
    /// VMA is locked (Linux's `munlock_vma_folio`).
    pub(crate) fn munlock_vma_folio(&self, vma: &Vma, f: Folio<'a>) {
        if vma.flags.contains(VmFlags::LOCKED) && f.munlock() {
            let st = &self.ctx.thp.stats;
            st.count_n(VmEvent::UnevictablePgsMunlocked, f.nr_pages());
        }
    }
}
