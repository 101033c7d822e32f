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

use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, align_down};
use crate::errno::Errno;
use crate::paging::{
    Entry, PMD_LEVEL, PTE_LEVEL, PageTable, PagingArch, PtAlloc, TlbGather, level_size,
};
use crate::vma::{VmFlags, VmaSet};

use super::Mm;

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Copy the VMAs and mappings of `self` (whose mmap lock the caller
    /// holds for writing, as `vmas`) into the new, empty `child`.  On error
    /// the child is left partly filled, consistent, for the caller to drop.
    pub(crate) fn copy_into(&self, vmas: &VmaSet, child: &Mm<'a, A>) -> Result<(), Errno> {
        let mut cvmas = child.vmas.write();
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
            if v.flags.intersects(VmFlags::DONTCOPY | VmFlags::WIPEONFORK) {
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
        let mut va = start;
        while va < end {
            let w = ppt.lookup(va);
            let size = level_size(w.level.max(PMD_LEVEL));
            let next = align_down(va, size).saturating_add(size).min(end);
            match w.entry {
                Entry::Absent if w.level >= PMD_LEVEL => va = next,
                Entry::Leaf(l) if w.level == PMD_LEVEL => {
                    let base = align_down(va, PMD_SIZE);
                    debug_assert!(base >= start && base + PMD_SIZE <= end);
                    cpt.ensure_table(base, PMD_LEVEL)
                        .map_err(|_| Errno::ENOMEM)?;
                    let dep = ctx.pt_alloc().alloc_pt().ok_or(Errno::ENOMEM)?;
                    let mut attrs = l.attrs;
                    if !ctx.is_zero_pfn(l.pfn) {
                        let f = ctx.folio(l.pfn).ok_or(Errno::EFAULT)?;
                        ctx.rmap_dup_pmd(f);
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
                    va = base + PMD_SIZE;
                }
                _ if w.level == PTE_LEVEL => {
                    self.copy_ptes(ppt, cpt, child, va, next, w.slot, g)?;
                    va = next;
                }
                _ => {
                    debug_assert!(false, "unexpected entry {:?} at {va:#x}", w.entry);
                    va = next;
                }
            }
        }
        Ok(())
    }

    /// Copy the PTEs of `[va, end)`, which lie in the parent's PTE table
    /// whose entry for `va` is at `slot`.
    #[allow(clippy::too_many_arguments)]
    fn copy_ptes(
        &self,
        ppt: &mut PageTable<'a, A>,
        cpt: &mut PageTable<'a, A>,
        child: &Mm<'a, A>,
        va: u64,
        end: u64,
        slot: u64,
        g: &mut TlbGather<'a>,
    ) -> Result<(), Errno> {
        let ctx = self.ctx;
        let n = ((end - va) >> PAGE_SHIFT) as usize;
        let read = |i: usize| A::decode(ctx.mem.load(slot + 8 * i as u64), PTE_LEVEL).leaf();
        if (0..n).all(|i| read(i).is_none()) {
            return Ok(());
        }
        cpt.ensure_table(va, PTE_LEVEL).map_err(|_| Errno::ENOMEM)?;
        let mut i = 0;
        while i < n {
            let Some(l) = read(i) else {
                i += 1;
                continue;
            };
            let at = va + i as u64 * PAGE_SIZE;
            let zero = ctx.is_zero_pfn(l.pfn);
            let folio = if zero { None } else { ctx.folio(l.pfn) };
            // The run: consecutive frames of one folio with equal rights.
            let limit = match folio {
                Some(f) => f.pfn() + f.nr_pages(),
                None if l.pfn == ctx.zero_pfn() => l.pfn + 1,
                None => ctx.huge_zero_pfn().map_or(l.pfn + 1, |h| h + 512),
            };
            let key = l.attrs.fold_key();
            let mut dirty = l.attrs.dirty;
            let mut j = i + 1;
            while j < n {
                let pfn = l.pfn + (j - i) as u64;
                match read(j) {
                    Some(m) if pfn < limit && m.pfn == pfn && m.attrs.fold_key() == key => {
                        dirty |= m.attrs.dirty;
                        j += 1;
                    }
                    _ => break,
                }
            }
            let nr = j - i;
            let mut attrs = l.attrs;
            attrs.dirty = dirty;
            if let Some(f) = folio {
                ctx.rmap_dup_ptes(f, l.pfn - f.pfn(), nr as u64);
                child.rss_add(nr as u64);
                if l.attrs.perms.write {
                    ppt.wrprotect_ptes(at, nr, g);
                }
                attrs.perms.write = false;
                attrs.young = false;
            }
            cpt.set_ptes(at, l.pfn, nr, attrs)
                .expect("child PTE table ensured and empty");
            i = j;
        }
        Ok(())
    }
}
