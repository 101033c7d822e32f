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

/// Entries a protection change rewrote (Linux counts them for NUMA
/// hinting as `numa_pte_updates` and `numa_huge_pte_updates`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProtChanged {
    pub(crate) ptes: u64,
    pub(crate) pmds: u64,
}

/// One run of PTEs to rewrite.
struct Change {
    va: u64,
    pfn: u64,
    nr: usize,
    attrs: Attrs,
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// The attributes `l` gets in a VMA with `flags`.
    pub(crate) fn protected_attrs(&self, l: &Leaf, flags: VmFlags, exclusive: bool) -> Attrs {
        let mut perms = vma_perms(flags);
        if !exclusive || self.ctx.is_zero_pfn(l.pfn) {
            perms.write = false;
        }
        Attrs { perms, ..l.attrs }
    }

    /// Whether page `pfn` is anon-exclusive (false for zero pages).
    pub(crate) fn page_exclusive(&self, pfn: u64) -> bool {
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
        self.change_prot_range(pt, start, end, |l, excl| {
            let attrs = self.protected_attrs(l, flags, excl);
            (attrs.fold_key() != l.attrs.fold_key()).then_some(attrs)
        });
    }

    /// The one protection-changing walk (mprotect, NUMA hinting and its
    /// restore): `new_attrs(first leaf, anon-exclusive)` is asked once per
    /// PMD leaf and once per run of PTEs (consecutive pages of one folio
    /// with equal attributes and equal anon-exclusive state) and returns
    /// the attributes the mapping gets, or `None` to leave it (young and
    /// dirty are those of the entries, ORed with the returned ones: a
    /// caller may make entries young, never old or clean).  Returns the
    /// entries changed.
    pub(crate) fn change_prot_range(
        &self,
        pt: &mut PageTable<'a, A>,
        start: u64,
        end: u64,
        mut new_attrs: impl FnMut(&Leaf, bool) -> Option<Attrs>,
    ) -> ProtChanged {
        self.split_pmd_at(pt, start);
        self.split_pmd_at(pt, end);
        let mut done = ProtChanged::default();
        let mut g = pt.gather();
        let mut changes: Vec<Change> = Vec::new();
        for step in pt.walk_range(start, end) {
            match step {
                Step::Leaf(h) if h.level == PMD_LEVEL => {
                    let l = h.leaf;
                    if let Some(attrs) = new_attrs(&l, self.page_exclusive(l.pfn)) {
                        let attrs = Attrs {
                            young: l.attrs.young || attrs.young,
                            dirty: l.attrs.dirty || attrs.dirty,
                            ..attrs
                        };
                        let r = pt.update_pmd(h.base(), attrs, &mut g);
                        debug_assert!(r.is_ok());
                        done.pmds += 1;
                    }
                }
                Step::Ptes(run) => self.protect_ptes(run, &mut new_attrs, &mut changes),
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
                young: r.young || c.attrs.young,
                dirty: r.dirty || c.attrs.dirty,
                ..c.attrs
            };
            pt.set_ptes(c.va, c.pfn, c.nr, attrs)
                .expect("the entries were just cleared in existing tables");
            done.ptes += c.nr as u64;
        }
        done
    }

    /// The runs of `run` that `new_attrs` changes: consecutive pages of one
    /// folio with equal attributes and equal anon-exclusive state.
    fn protect_ptes(
        &self,
        run: PteRun<'a, A>,
        new_attrs: &mut impl FnMut(&Leaf, bool) -> Option<Attrs>,
        changes: &mut Vec<Change>,
    ) {
        self.for_each_pte_batch(&run, BatchMatch::Attrs, false, |i, b, _| {
            let l = b.first;
            let excl = self.page_exclusive(l.pfn);
            let nr = (1..b.nr)
                .find(|&k| self.page_exclusive(l.pfn + k as u64) != excl)
                .unwrap_or(b.nr);
            if let Some(attrs) = new_attrs(&l, excl) {
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
