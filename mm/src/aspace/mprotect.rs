//! mprotect's page-table side (Linux's `change_protection`).
//!
//! PMD leaves the range cuts are split first (their deposit makes that
//! infallible); whole PMD leaves change in place.  PTEs are handled in runs
//! (consecutive frames of one folio with equal attributes and equal
//! anon-exclusive state): every run that changes is cleared, the TLB is
//! flushed once for all of them, and each is rewritten with one `set_ptes`.
//! That is break-before-make for everything at once: a contiguous block the
//! range only partly covers is unfolded by the clear and its changed part
//! rewritten without the hint (the untouched neighbour blocks stay folded),
//! while a block covered entirely is rewritten folded.
//!
//! Write permission is granted only to anon-exclusive pages (Linux's
//! `can_change_pte_writable` for private anonymous memory); shared and zero
//! pages stay read-only and go through the COW fault on a write.

use alloc::vec::Vec;

use crate::paging::{Attrs, BatchMatch, Leaf, PMD_LEVEL, PageTable, PagingArch, PteRun, Step};
use crate::vma::VmFlags;

use super::{Mm, vma_perms};

/// One run of PTEs to rewrite.
struct Change {
    va: u64,
    pfn: u64,
    nr: usize,
    attrs: Attrs,
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// The attributes `l` gets in a VMA with `flags`.
    fn protected_attrs(&self, l: &Leaf, flags: VmFlags, exclusive: bool) -> Attrs {
        let mut perms = vma_perms(flags);
        if !exclusive || self.ctx.is_zero_pfn(l.pfn) {
            perms.write = false;
        }
        Attrs { perms, ..l.attrs }
    }

    /// Whether page `pfn` is anon-exclusive (false for zero pages).
    fn page_exclusive(&self, pfn: u64) -> bool {
        if self.ctx.is_zero_pfn(pfn) {
            return false;
        }
        self.ctx
            .folio(pfn)
            .is_some_and(|f| f.page(pfn - f.pfn()).is_anon_exclusive())
    }

    /// Give every entry in `[start, end)` the rights of `flags`.
    pub(crate) fn change_protection(
        &self,
        pt: &mut PageTable<'a, A>,
        start: u64,
        end: u64,
        flags: VmFlags,
    ) {
        self.split_pmd_at(pt, start);
        self.split_pmd_at(pt, end);
        let mut g = pt.gather();
        let mut changes: Vec<Change> = Vec::new();
        for step in pt.walk_range(start, end) {
            match step {
                Step::Leaf(h) if h.level == PMD_LEVEL => {
                    let l = h.leaf;
                    let attrs = self.protected_attrs(&l, flags, self.page_exclusive(l.pfn));
                    if attrs != l.attrs {
                        let r = pt.update_pmd(h.base(), attrs, &mut g);
                        debug_assert!(r.is_ok());
                    }
                }
                Step::Ptes(run) => self.protect_ptes(run, flags, &mut changes),
                _ => {}
            }
        }
        let mut cleared = Vec::with_capacity(changes.len());
        for c in &changes {
            cleared.push(pt.get_and_clear_ptes(c.va, c.nr, &mut g));
        }
        g.finish();
        for (c, r) in changes.iter().zip(cleared) {
            let attrs = Attrs {
                young: r.young,
                dirty: r.dirty,
                ..c.attrs
            };
            pt.set_ptes(c.va, c.pfn, c.nr, attrs)
                .expect("the entries were just cleared in existing tables");
        }
    }

    /// The runs of `run` whose rights change under `flags`: consecutive
    /// pages of one folio with equal attributes and equal anon-exclusive
    /// state.
    fn protect_ptes(&self, run: PteRun<'a, A>, flags: VmFlags, changes: &mut Vec<Change>) {
        self.for_each_pte_batch(&run, BatchMatch::Attrs, false, |i, b, _| {
            let l = b.first;
            let excl = self.page_exclusive(l.pfn);
            let nr = (1..b.nr)
                .find(|&k| self.page_exclusive(l.pfn + k as u64) != excl)
                .unwrap_or(b.nr);
            let attrs = self.protected_attrs(&l, flags, excl);
            if attrs.fold_key() != l.attrs.fold_key() {
                changes.push(Change {
                    va: run.va(i),
                    pfn: l.pfn,
                    nr,
                    attrs,
                });
            }
            nr
        });
    }
}
