//! fork: duplicate an address space copy-on-write (Linux's `dup_mmap` /
//! `copy_page_range`).
//!
//! Per VMA, present entries are copied in batches per folio: a run of
//! consecutive pages of one folio with equal attributes takes one
//! reference/mapcount update, one `wrprotect_ptes` on the parent and one
//! `set_ptes` on the child (which sets the contiguous bit wherever a whole
//! aligned block is covered).  Shared pages lose anon-exclusive; child
//! entries are read-only and old (as Linux's `pte_mkold`).  PMD-mapped
//! folios stay PMD-mapped on both sides (the child gets its own deposit).
//! Zero-page entries are copied as they are.  `MADV_DONTFORK` VMAs are not
//! copied; `MADV_WIPEONFORK` VMAs are copied empty.
//!
//! The parent's flushes are gathered into one, done before the mmap lock
//! is released.

use crate::abi::errno::Errno;
use crate::paging::{
    BatchMatch, Entry, HugeLeaf, PMD_LEVEL, PTE_LEVEL, PageTable, PagingArch, PtAlloc, PteRun,
    Step, SwapEntry, TlbGather,
};
use crate::vma::{VmFlags, VmaSet};

use super::Mm;

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Copy the VMAs and mappings of `self` (whose mmap lock the caller
    /// holds for writing, as `vmas`) into the new, empty `child`.  On error
    /// the child is left partly filled, consistent, for the caller to drop.
    pub(crate) fn copy_into(&self, vmas: &VmaSet, child: &Mm<'a, A>) -> Result<(), Errno> {
        let mut cvmas = child.mmap_write();
        *cvmas = vmas.clone();
        for v in vmas.iter().filter(|v| v.flags.contains(VmFlags::DONTCOPY)) {
            cvmas.remove(v.start);
        }
        drop(cvmas);
        let mut ppt = self.lock_pt();
        let mut cpt = child.lock_pt();
        let mut g = ppt.gather();
        let mut result = Ok(());
        for v in vmas.iter() {
            // Shared VMAs are not copied (Linux's `vma_needs_copy`): the
            // child faults the same shmem folios in.  Private file VMAs
            // are (their private copies become COW-shared, their
            // read-only file pages are mapped in the child too).
            let shared_file = v.is_shmem() && v.flags.contains(VmFlags::SHARED);
            if v.flags.intersects(VmFlags::DONTCOPY | VmFlags::WIPEONFORK) || shared_file {
                continue;
            }
            result = self.copy_range(&mut ppt, &mut cpt, child, v.start, v.end, &mut g);
            if result.is_err() {
                break;
            }
        }
        g.finish();
        result
    }

    fn copy_range(
        &self,
        ppt: &mut PageTable<'a, A>,
        cpt: &mut PageTable<'a, A>,
        child: &Mm<'a, A>,
        start: u64,
        end: u64,
        g: &mut TlbGather<'a>,
    ) -> Result<(), Errno> {
        let ctx = self.ctx;
        for step in ppt.walk_range(start, end) {
            match step {
                Step::Hole { .. } => {}
                Step::Leaf(h) if h.level == PMD_LEVEL => {
                    let (base, l) = (h.base(), h.leaf);
                    debug_assert!(h.whole(), "VMAs do not cut PMD leaves");
                    cpt.ensure_table(base, PMD_LEVEL)
                        .map_err(|_| Errno::ENOMEM)?;
                    let dep = ctx.pt_alloc().alloc_pt().ok_or(Errno::ENOMEM)?;
                    let mut attrs = l.attrs;
                    if !ctx.is_zero_pfn(l.pfn) {
                        let f = ctx.folio(l.pfn).ok_or(Errno::EFAULT)?;
                        ctx.rmap_dup_pmd(f, child.id);
                        child.rss_add(f.nr_pages());
                        if l.attrs.perms.write {
                            let r = ppt.wrprotect_pmd(base, g);
                            debug_assert!(r.is_ok());
                        }
                        attrs.perms.write = false;
                        attrs.young = false;
                    }
                    if cpt.set_pmd_leaf(base, l.pfn, attrs, dep).is_err() {
                        ctx.pt_alloc().free_pt(dep);
                        unreachable!("child PMD table ensured and empty");
                    }
                }
                Step::Ptes(run) => self.copy_ptes(ppt, cpt, child, run, g)?,
                Step::Leaf(HugeLeaf { start, .. }) | Step::NonPresent { start, .. } => {
                    debug_assert!(false, "unexpected entry at {start:#x}");
                }
            }
        }
        Ok(())
    }

    /// Copy the PTEs of `run` (the parent's), one batch per run of a
    /// folio's pages with equal rights.  Swap entries are copied too.
    fn copy_ptes(
        &self,
        ppt: &mut PageTable<'a, A>,
        cpt: &mut PageTable<'a, A>,
        child: &Mm<'a, A>,
        run: PteRun<'a, A>,
        g: &mut TlbGather<'a>,
    ) -> Result<(), Errno> {
        let ctx = self.ctx;
        let swaps = self.has_nonpresent();
        if (0..run.len()).all(|i| run.entry(i).is_absent()) {
            return Ok(());
        }
        cpt.ensure_table(run.start(), PTE_LEVEL)
            .map_err(|_| Errno::ENOMEM)?;
        if swaps {
            self.copy_swap_ptes(ppt, cpt, child, &run)?;
        }
        // Zero-page entries are copied as they are; a split huge zero PMD's
        // PTEs copy as one run.
        self.for_each_pte_batch(&run, BatchMatch::Attrs, true, |i, b, folio| {
            let (l, nr, at) = (b.first, b.nr, run.va(i));
            let mut attrs = l.attrs;
            attrs.dirty = b.dirty;
            if let Some(f) = folio {
                ctx.rmap_dup_ptes(f, child.id, l.pfn - f.pfn(), nr as u64);
                if f.is_shmem() {
                    child.shmem_rss_add(nr as u64);
                } else {
                    child.rss_add(nr as u64);
                }
                if l.attrs.perms.write {
                    ppt.wrprotect_ptes(at, nr, g);
                }
                attrs.perms.write = false;
                attrs.young = false;
            }
            cpt.set_ptes(at, l.pfn, nr, attrs)
                .expect("child PTE table ensured and empty");
            nr
        });
        Ok(())
    }

    /// fork's copy of the swap entries of `run`: each slot gains a
    /// reference, and the entry stops being exclusive in the parent too
    /// (both may now swap it in), as Linux's `copy_nonpresent_pte`.  A
    /// migration entry is copied as a `READ` one in both (the page is
    /// shared from now on) and the child's maps the page it names, with a
    /// reference and a mapcount of its own (see `aspace::migrate`).
    fn copy_swap_ptes(
        &self,
        ppt: &mut PageTable<'a, A>,
        cpt: &mut PageTable<'a, A>,
        child: &Mm<'a, A>,
        run: &PteRun<'a, A>,
    ) -> Result<(), Errno> {
        for i in 0..run.len() {
            let Entry::Swap(e) = run.entry(i) else {
                continue;
            };
            if e.is_migration() {
                let Some(f) = self.ctx.folio(e.offset) else {
                    continue;
                };
                let shared = SwapEntry::migration(e.offset, false, false).expect("same frame");
                if shared != e {
                    ppt.replace_swap_pte(run.va(i), shared);
                }
                cpt.set_swap_pte(run.va(i), shared)
                    .map_err(|_| Errno::ENOMEM)?;
                self.ctx.rmap_dup_ptes(f, child.id, e.offset - f.pfn(), 1);
                child.rss_add(1);
                child.migents_add(1);
                continue;
            }
            if !e.is_swap() {
                continue;
            }
            let area = self.ctx.swap.area(e.ty).ok_or(Errno::EIO)?;
            area.map.dup(e.offset).map_err(|_| Errno::ENOMEM)?;
            let shared = SwapEntry {
                exclusive: false,
                ..e
            };
            if e.exclusive {
                ppt.replace_swap_pte(run.va(i), shared);
            }
            if cpt.set_swap_pte(run.va(i), shared).is_err() {
                self.ctx.swap_free_entries(e.ty, e.offset, 1);
                return Err(Errno::ENOMEM);
            }
            child.swapents_add(1);
        }
        Ok(())
    }
}
