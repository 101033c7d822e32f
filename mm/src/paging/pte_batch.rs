//! How far a run of PTEs maps one folio: [`PteRun::folio_pte_batch`] (the
//! semantics of Linux's `folio_pte_batch()`).
//!
//! Zap, fork, mprotect, mremap and split all handle PTEs in batches, one per
//! run of consecutive entries that map consecutive pages of one folio: the
//! run costs one mapcount / reference update and one batch operation on the
//! table, and a batch never cuts a contiguous block that the folio fills.
//! Finding the run is this one function; what a caller does with it stays
//! in the caller.
//!
//! # What "compatible" means
//! [`BatchMatch`] says which attributes must be equal to the first entry's:
//! none (zap only needs the frames), all that a contiguous block must share
//! ([`super::Attrs::fold_key`]: rights, special, device — young and dirty
//! never split a batch), or those but write permission (then
//! [`PteBatch::writable`] says whether any entry was writable).
//!
//! # Contiguous blocks (arm64 contpte)
//! The MMU may record an access or a write in any one entry of a block on
//! behalf of all of them, so young and dirty are gathered over every block
//! the batch touches, including the block entries outside the batch (what
//! Linux's `ptep_get` does on a contpte entry).  The frame and attribute
//! rules already make a batch cover a whole block the folio fills.
//!
//! # The zero page and other frames outside folios
//! The caller says where the frames may run to (`span`, a [`FolioSpan`]):
//! the folio's pages, or for the shared zero page only its own frame, so
//! the function needs no folio lookups and works for frames that are not
//! folios at all.

use super::arch::{Leaf, PagingArch};
use super::table::FolioSpan;
use super::walk::PteRun;

/// Which attributes the entries of a batch must share with the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchMatch {
    /// Only the frames count (consecutive, inside the span).
    Frames,
    /// Equal [`super::Attrs::fold_key`]: everything but young and dirty.
    Attrs,
    /// As `Attrs`, but write permission may differ.
    AttrsButWrite,
}

/// A batch found by [`PteRun::folio_pte_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PteBatch {
    /// The first entry (as read; young/dirty are its own).
    pub first: Leaf,
    /// Entries in the batch (at least 1).
    pub nr: usize,
    /// Any entry of the batch, or of a contiguous block it touches, young.
    pub young: bool,
    /// Likewise dirty.
    pub dirty: bool,
    /// Any entry of the batch writable.
    pub writable: bool,
}

impl<'a, A: PagingArch> PteRun<'a, A> {
    /// The batch that starts at entry `i`: the entries from `i` on that map
    /// the frames following entry `i`'s, inside `span`, with attributes
    /// compatible under `m`; `None` if entry `i` is no leaf (absent, swap
    /// or migration).  `span` must contain entry `i`'s frame.
    pub fn folio_pte_batch(&self, i: usize, span: FolioSpan, m: BatchMatch) -> Option<PteBatch> {
        let first = self.leaf(i)?;
        debug_assert!(span.contains(first.pfn, 1), "{first:?} outside {span:?}");
        let key = match m {
            BatchMatch::Frames => None,
            BatchMatch::Attrs => Some(first.attrs.fold_key()),
            BatchMatch::AttrsButWrite => {
                let mut k = first.attrs.fold_key();
                k.perms.write = false;
                Some(k)
            }
        };
        let limit = (span.first_pfn + span.nr - first.pfn).min((self.len() - i) as u64) as usize;
        let mut b = PteBatch {
            first,
            nr: 1,
            young: first.attrs.young,
            dirty: first.attrs.dirty,
            writable: first.attrs.perms.write,
        };
        let mut last = first;
        while b.nr < limit {
            let Some(l) = self.leaf(i + b.nr) else { break };
            let mut k = l.attrs.fold_key();
            if m == BatchMatch::AttrsButWrite {
                k.perms.write = false;
            }
            if l.pfn != first.pfn + b.nr as u64 || key.is_some_and(|key| key != k) {
                break;
            }
            b.young |= l.attrs.young;
            b.dirty |= l.attrs.dirty;
            b.writable |= l.attrs.perms.write;
            last = l;
            b.nr += 1;
        }
        if A::CONT_PTES > 1 {
            // The block entries before the batch's first and after its last.
            let cp = A::CONT_PTES;
            let lo = self.table_index(i);
            let hi = self.table_index(i + b.nr - 1) + 1;
            let mut others = (first.cont.then(|| lo - lo % cp..lo))
                .into_iter()
                .chain(last.cont.then(|| hi..hi.next_multiple_of(cp)))
                .flatten();
            others.try_for_each(|idx| {
                if let Some(l) = A::decode(self.raw_in_table(idx), super::PTE_LEVEL).leaf() {
                    b.young |= l.attrs.young;
                    b.dirty |= l.attrs.dirty;
                }
                // Nothing left to learn once both are set.
                (!(b.young && b.dirty)).then_some(())
            });
        }
        Some(b)
    }
}
