//! Collapse of shmem ranges into PMD-size page-cache folios (Linux 6.12's
//! `hpage_collapse_scan_file` + `collapse_file` for shmem, and
//! `collapse_pte_mapped_thp`), for `MADV_COLLAPSE` on `MAP_SHARED`
//! anonymous memory, memfds and tmpfs files, and for khugepaged.
//!
//! A window is a PMD-size range of a shmem VMA whose object index is a
//! multiple of 512.  Its collapse works on the object, not on one space:
//! 1. **Scan** the page cache (`shmem::collapse`): a PMD-size folio there
//!    already only needs mapping; else count the cached pages against
//!    `max_ptes_none` (khugepaged only; `MADV_COLLAPSE` ignores it) and
//!    refuse a range with nothing cached (Linux's `SCAN_TRUNCATED`) or a
//!    source with unexpected references.
//! 2. **Allocate** the new folio (`thp_collapse_alloc`, with the anonymous
//!    collapse's compaction rules), zero its holes.
//! 3. **Lock** the sources (a fault finding one retries, as Linux's waits
//!    on the folio lock) and **unmap** the range from every address space
//!    mapping the object (`EachMm`, Linux's `try_to_unmap` through the
//!    file's rmap), freeing the PTE tables it empties (Linux's
//!    `retract_page_tables`), so a later fault maps the new folio with one
//!    PMD wherever the mapping is aligned.
//! 4. **Replace** under the object's lock: copy, swap the cache entries
//!    (`ShmemHugePages` grows), bump the removal generation; refused with
//!    EAGAIN if the range changed or a source is still referenced.
//! 5. The sources' last references drop (they are freed), and the caller's
//!    space gets the PMD mapped at once (`collapse_pte_mapped_thp`; no
//!    `thp_file_mapped`, which counts fault-time PMD mappings).
//!
//! No mmap lock is held across the steps (Linux drops it too): each space
//! is locked only while it is unmapped or mapped.

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::addr::{PAGE_SHIFT, PMD_ORDER, PMD_SIZE};
use crate::paging::{Attrs, PagingArch, PtAlloc};
use crate::physmem::folio::FolioRef;
use crate::shmem::Shmem;
use crate::shmem::collapse::{FileScan, ReplaceError};
use crate::thp::VmEvent;
use crate::vma::{VmFlags, Vma, VmaSet};

use super::collapse::{CollapseError, Limits};
use super::{Mm, vma_perms};

/// Runs its argument on every live address space (the caller's too): how
/// a shmem collapse reaches every mapping of an object.  Without one only
/// the collapsing space is unmapped, and a range mapped elsewhere is
/// refused (EAGAIN).
pub type EachMm<'f, 'a, A> = dyn FnMut(&mut dyn FnMut(&Mm<'a, A>)) + 'f;

/// Pages of a window.
const HPAGE_NR: u64 = 1 << PMD_ORDER;

/// One window of a shmem VMA to collapse.
pub(crate) struct FileWindow<'a> {
    obj: Arc<Shmem<'a>>,
    /// First object index (a multiple of 512).
    index: u64,
    /// Where the collapsing space maps it (PMD-aligned).
    pub(crate) va: u64,
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Whether `v`, a shmem VMA mapping `obj`, may hold PMD-size folios
    /// by collapse (Linux's `thp_vma_allowable_order` for a shmem file:
    /// `force` for `MADV_COLLAPSE`, the knobs for khugepaged), and has an
    /// aligned PMD range whose object index is a multiple of 512.
    ///
    /// Never for a private mapping (`MAP_PRIVATE` of a tmpfs file or
    /// memfd): it may hold private copies among the file's pages, which a
    /// PMD of the cache cannot map (Linux collapses the cache there but
    /// maps no PMD in a VMA with anonymous pages); `MADV_COLLAPSE` of one
    /// is EINVAL here and khugepaged skips it.  A collapse through a
    /// shared mapping still unmaps its file pages from private mappings
    /// (`Mm::shmem_unmap_pages`), which fault the new folio back by PTEs.
    pub(crate) fn shmem_collapse_allowed(&self, v: &Vma, obj: &Shmem<'a>, force: bool) -> bool {
        if !v.flags.contains(VmFlags::SHARED) {
            return false;
        }
        let h = self.thp_hints(v);
        let orders = self.ctx.thp.config.shmem.collapse_orders(
            obj.mount_huge(),
            h.hugepage,
            h.nohugepage,
            v.pgoff,
            obj.size_pages(),
            force,
        );
        let last = (v.end & !(PMD_SIZE - 1)).checked_sub(PMD_SIZE);
        orders & (1 << PMD_ORDER) != 0
            && ((v.start >> PAGE_SHIFT).wrapping_sub(v.pgoff)).is_multiple_of(HPAGE_NR)
            && last.is_some_and(|l| l >= v.start)
    }

    /// The window of shmem VMA `v` at `va` (PMD-aligned, inside `v`).
    pub(crate) fn file_window(&self, v: &Vma, va: u64) -> Option<FileWindow<'a>> {
        let obj = self.shmem_object(v.shmem?)?;
        let index = v.pgoff_of(va);
        index
            .is_multiple_of(HPAGE_NR)
            .then_some(FileWindow { obj, index, va })
    }

    /// The windows of `MADV_COLLAPSE`'s `ranges` (one VMA each) that lie
    /// in shmem VMAs, and the ranges left for the anonymous collapse.
    /// EINVAL when a shmem VMA does not allow the collapse.
    #[allow(clippy::type_complexity)]
    pub(crate) fn split_collapse_ranges(
        &self,
        vmas: &VmaSet,
        ranges: &[core::ops::Range<u64>],
    ) -> Result<(Vec<core::ops::Range<u64>>, Vec<FileWindow<'a>>), crate::abi::errno::Errno> {
        let mut anon = Vec::new();
        let mut files = Vec::new();
        for r in ranges {
            let Some(v) = vmas.find(r.start).filter(|v| v.is_shmem()) else {
                anon.push(r.clone());
                continue;
            };
            let obj = v.shmem.and_then(|id| self.shmem_object(id));
            if !obj.is_some_and(|o| self.shmem_collapse_allowed(v, &o, true)) {
                return Err(crate::abi::errno::Errno::EINVAL);
            }
            let mut va = r.start.next_multiple_of(PMD_SIZE);
            while va + PMD_SIZE <= r.end {
                files.push(
                    self.file_window(v, va)
                        .ok_or(crate::abi::errno::Errno::EINVAL)?,
                );
                va += PMD_SIZE;
            }
        }
        Ok((anon, files))
    }

    /// Collapse `windows` for `MADV_COLLAPSE` (no lock held): how many
    /// there were, and the last failure.
    pub(crate) fn collapse_file_windows(
        &self,
        windows: Vec<FileWindow<'a>>,
        mut each_mm: Option<&mut EachMm<'_, 'a, A>>,
    ) -> (u64, Option<CollapseError>) {
        let mut last = None;
        let n = windows.len() as u64;
        for w in windows {
            match self.collapse_file(&w, Limits::MADVISE, each_mm.as_deref_mut()) {
                Ok(()) | Err(CollapseError::AlreadyMapped) => {}
                Err(e) => last = Some(e),
            }
        }
        (n, last)
    }

    /// Collapse the window `w` (see the module doc), with no lock held.
    pub(crate) fn collapse_file(
        &self,
        w: &FileWindow<'a>,
        lim: Limits,
        each_mm: Option<&mut EachMm<'_, 'a, A>>,
    ) -> Result<(), CollapseError> {
        let ctx = self.ctx;
        let (sources, present) = match w.obj.collapse_scan(w.index) {
            FileScan::Huge(f) => {
                // Nothing to copy: only this space's mapping is fixed
                // (Linux's `SCAN_PTE_MAPPED_HUGEPAGE`).
                self.collapse_map_pmd(w, &f)?;
                return Err(CollapseError::AlreadyMapped);
            }
            FileScan::Small {
                folios,
                present,
                swapped,
            } => {
                if swapped > 0 {
                    // Linux's `hpage_collapse_scan_file`: more than
                    // `max_ptes_swap` swapped pages refuse; fewer are
                    // brought back (`collapse_file`'s `SGP_NOALLOC`), then
                    // the range is looked at again.
                    if swapped > lim.max_swap {
                        ctx.thp.stats.count(VmEvent::ThpScanExceedSwapPte);
                        return Err(CollapseError::ExceedSwap);
                    }
                    drop(folios);
                    for i in w.index..w.index + HPAGE_NR {
                        if w.obj.find_swap(i).is_some() {
                            ctx.shmem_swapin(&w.obj, i).map_err(|e| match e {
                                super::Fault::Oom => CollapseError::AllocFailed,
                                _ => CollapseError::PageCount,
                            })?;
                        }
                    }
                    return self.collapse_file(w, lim, each_mm);
                }
                (folios, present)
            }
        };
        if lim.khugepaged && present < HPAGE_NR.saturating_sub(lim.max_none) {
            ctx.thp.stats.count(VmEvent::ThpScanExceedNonePte);
            return Err(CollapseError::ExceedNone);
        }
        if present == 0 {
            // Truncated or punched out meanwhile: nothing to collapse.
            return Err(CollapseError::Empty);
        }
        for (_, f) in &sources {
            // The cache's reference, the scan's, one per mapping.
            if f.folio().extra_refs() != 2 {
                return Err(CollapseError::PageCount);
            }
        }
        let new = self.collapse_alloc(PMD_ORDER, lim)?;
        // Lock the sources: faults then retry instead of mapping them
        // again behind the unmap (Linux's fault waits on the folio lock).
        let mut locks = Vec::with_capacity(sources.len());
        for (_, f) in &sources {
            locks.push(f.folio().try_lock().ok_or(CollapseError::PageLock)?);
        }
        // Zero the holes (the sources are copied over the rest).
        let mut at = w.index;
        for (i, f) in sources
            .iter()
            .map(|(i, f)| (*i, f.nr_pages()))
            .chain([(w.index + HPAGE_NR, 0)])
        {
            if i > at {
                ctx.mem.zero(
                    new.pa() + ((at - w.index) << PAGE_SHIFT),
                    (i - at) << PAGE_SHIFT,
                );
            }
            at = i + f;
        }
        let (id, end) = (w.obj.id(), w.index + HPAGE_NR);
        match each_mm {
            Some(each) => each(&mut |mm| mm.shmem_unmap_pages(id, w.index, end, true)),
            None => self.shmem_unmap_pages(id, w.index, end, true),
        }
        let gone = match w.obj.collapse_replace(w.index, &sources, new, ctx.mem) {
            Ok(gone) => gone,
            Err((ReplaceError::Changed | ReplaceError::Busy, new)) => {
                drop(new);
                return Err(CollapseError::PageCount);
            }
            // Linux's SCAN_FAIL after a failed `shmem_charge`: EINVAL.
            Err((ReplaceError::NoSpace, new)) => {
                drop(new);
                return Err(CollapseError::VmaCheck);
            }
        };
        // Unlocked, then the scan's references and the cache's drop: the
        // sources are freed (never locked).
        drop(locks);
        drop(sources);
        drop(gone);
        if !lim.khugepaged
            && let Some((_, f)) = w.obj.find(w.index)
            && f.order() == PMD_ORDER
        {
            self.collapse_map_pmd(w, &f)?;
        }
        Ok(())
    }

    /// Map the PMD-size folio `f` caching the window `w` with one PMD in
    /// this space (Linux's `collapse_pte_mapped_thp`): whatever PTEs map
    /// the window go first, with their table.  `AlreadyMapped` if a PMD
    /// maps it already; `VmaCheck` if the window is no longer mapped here
    /// as it was.
    fn collapse_map_pmd(&self, w: &FileWindow<'a>, f: &FolioRef<'a>) -> Result<(), CollapseError> {
        let vmas = self.mmap_read();
        let v = match vmas.find(w.va) {
            Some(v)
                if v.shmem == Some(w.obj.id())
                    && v.flags.contains(VmFlags::SHARED)
                    && v.start <= w.va
                    && w.va + PMD_SIZE <= v.end
                    && v.pgoff_of(w.va) == w.index =>
            {
                *v
            }
            _ => return Err(CollapseError::VmaCheck),
        };
        let mut pt = self.lock_pt();
        let at = pt.lookup(w.va);
        if let crate::paging::Entry::Leaf(l) = at.entry
            && at.level == crate::paging::PMD_LEVEL
        {
            return if l.pfn == f.pfn() {
                Err(CollapseError::AlreadyMapped)
            } else {
                Err(CollapseError::VmaCheck)
            };
        }
        // A truncate may have dropped the folio since the lookup.
        if w.index >= w.obj.size_pages()
            || w.obj.find(w.index).is_none_or(|(_, g)| g.pfn() != f.pfn())
        {
            return Err(CollapseError::VmaCheck);
        }
        self.zap_range(&mut pt, w.va, w.va + PMD_SIZE, true);
        let dep = self
            .ctx
            .pt_alloc()
            .alloc_pt()
            .ok_or(CollapseError::AllocFailed)?;
        let mut attrs = Attrs::user(vma_perms(v.flags));
        attrs.young = true;
        if pt.set_pmd_leaf(w.va, f.pfn(), attrs, dep).is_err() {
            self.ctx.pt_alloc().free_pt(dep);
            return Err(CollapseError::AllocFailed);
        }
        self.ctx.rmap_add_shmem_pmd(f.folio(), self.id);
        self.shmem_rss_add(f.nr_pages());
        Ok(())
    }

    /// The khugepaged window of the shmem VMA `v` at `va` (PMD-aligned),
    /// if the knobs let khugepaged collapse it.
    pub(crate) fn khugepaged_file_window(&self, v: &Vma, va: u64) -> Option<FileWindow<'a>> {
        let obj = self.shmem_object(v.shmem?)?;
        if !self.shmem_collapse_allowed(v, &obj, false) {
            return None;
        }
        self.file_window(v, va)
    }

    /// khugepaged's collapse of one shmem window: Linux's
    /// `hpage_collapse_scan_file` with `max_ptes_none`; a range cached by
    /// a PMD-size folio already is mapped by a PMD here.
    pub(crate) fn khugepaged_collapse_file(
        &self,
        w: &FileWindow<'a>,
        each_mm: Option<&mut EachMm<'_, 'a, A>>,
    ) -> Result<(), CollapseError> {
        let lim = Limits::khugepaged(self.ctx.thp, PMD_ORDER);
        let r = self.collapse_file(w, lim, each_mm);
        if r.is_ok() {
            self.ctx.thp.stats.add_pages_collapsed(1);
        }
        r
    }
}
