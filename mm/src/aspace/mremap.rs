//! mremap's page-table side (Linux's `move_page_tables`): moving the
//! entries of `[from, from + len)` to `[to, to + len)` without touching
//! the pages.
//!
//! * A PMD leaf the range covers entirely moves as a PMD when its new place
//!   is 2 MiB aligned too (Linux's `move_huge_pmd`), keeping its deposit;
//!   otherwise it is split first and its PTEs move.
//! * PTEs move in runs (consecutive frames of one folio with equal rights):
//!   one `get_and_clear_ptes` at the source (a contiguous block only partly
//!   in the range is unfolded there) and one `set_ptes` at the destination,
//!   which writes the contiguous bit on every whole block whose virtual and
//!   physical addresses are both 64K aligned.  A block the run only partly
//!   covers is folded afterwards if it qualifies, so a folio whose runs
//!   were cut by a source table boundary still ends up folded.
//! * References, mapcounts, anon-exclusive bits and RSS stay as they are:
//!   every mapping still exists, only its address changed.  The rmap owner
//!   of a moved folio this space owns follows it to the new address (the
//!   COW reuse check looks there).  A folio cut by the range boundary ends
//!   up mapped in two places, with unchanged counts, as in Linux.
//! * The source flushes are gathered and done once, before the page-table
//!   lock is released; the destination entries go from empty to valid and
//!   need none.
//!
//! Every destination table is allocated before the first entry moves, so a
//! failure (ENOMEM) leaves every mapping where it was.

use crate::abi::errno::Errno;
use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, align_down};
use crate::paging::{
    BatchMatch, Entry, FolioSpan, PMD_LEVEL, PTE_LEVEL, PageTable, PagingArch, PtError, TlbGather,
    level_size,
};
use crate::physmem::folio::Folio;
use crate::vma::MremapMove;

use super::Mm;

/// What happens to the source's 2 MiB chunk at some address.
enum Chunk {
    /// Nothing mapped up to `next`.
    Empty,
    /// A PMD leaf that moves whole to the 2 MiB-aligned `dst`.
    MovePmd { src: u64, dst: u64 },
    /// PTEs (present now, or after splitting the PMD leaf `split`) for
    /// `[va, next)` that move one by one.
    Ptes { split: Option<u64> },
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Classify the source chunk holding `va` (range end `end`, offset
    /// `to - from` applied as `dst_of`); returns the chunk and where the
    /// next one starts.
    fn classify(
        &self,
        pt: &PageTable<'a, A>,
        va: u64,
        end: u64,
        dst_of: impl Fn(u64) -> u64,
    ) -> (Chunk, u64) {
        let w = pt.lookup(va);
        let size = level_size(w.level.max(PMD_LEVEL));
        let next = align_down(va, size).saturating_add(size).min(end);
        match w.entry {
            Entry::Leaf(_) if w.level == PMD_LEVEL => {
                let base = align_down(va, PMD_SIZE);
                let whole = base == va && base + PMD_SIZE <= end;
                if whole && dst_of(base).is_multiple_of(PMD_SIZE) {
                    let c = Chunk::MovePmd {
                        src: base,
                        dst: dst_of(base),
                    };
                    (c, base + PMD_SIZE)
                } else {
                    (Chunk::Ptes { split: Some(base) }, next)
                }
            }
            _ if w.level == PTE_LEVEL => (Chunk::Ptes { split: None }, next),
            _ => (Chunk::Empty, next),
        }
    }

    /// Allocate every table the destination of `m` will need.
    fn prepare_move(&self, pt: &mut PageTable<'a, A>, m: &MremapMove) -> Result<(), PtError> {
        let (from, end) = (m.from, m.from + m.len);
        let dst_of = |va: u64| va - from + m.to;
        let mut va = from;
        while va < end {
            let (chunk, next) = self.classify(pt, va, end, dst_of);
            match chunk {
                Chunk::Empty => {}
                Chunk::MovePmd { dst, .. } => {
                    pt.ensure_table(dst, PMD_LEVEL)?;
                }
                Chunk::Ptes { .. } => {
                    // Every 2 MiB piece of the destination range; empty
                    // ones cost a table that munmap frees later.
                    let (d0, d1) = (dst_of(va), dst_of(next));
                    let mut d = d0;
                    while d < d1 {
                        pt.ensure_table(d, PTE_LEVEL)?;
                        d = align_down(d, PMD_SIZE) + PMD_SIZE;
                    }
                }
            }
            va = next;
        }
        Ok(())
    }

    /// Move every entry of `m` (the destination is empty and its tables
    /// exist: [`Self::prepare_move`] ran).  Never fails.
    fn move_entries(&self, pt: &mut PageTable<'a, A>, m: &MremapMove) {
        let (from, end) = (m.from, m.from + m.len);
        let dst_of = |va: u64| va - from + m.to;
        let mut g = pt.gather();
        let mut va = from;
        while va < end {
            let (chunk, next) = self.classify(pt, va, end, dst_of);
            match chunk {
                Chunk::Empty => {}
                Chunk::MovePmd { src, dst } => {
                    if !self.move_pmd(pt, src, dst, &mut g) {
                        self.split_pmd_locked(pt, src);
                        self.move_ptes(pt, src, next, dst, &mut g);
                    }
                }
                Chunk::Ptes { split } => {
                    if let Some(base) = split {
                        self.split_pmd_locked(pt, base);
                    }
                    self.move_ptes(pt, va, next, dst_of(va), &mut g);
                }
            }
            va = next;
        }
        g.finish();
    }

    /// Move the PMD leaf at `src` to `dst` (both 2 MiB aligned) with its
    /// deposit.  False if the destination slot holds a table that is not
    /// empty (the caller splits and moves PTEs instead).
    fn move_pmd(
        &self,
        pt: &mut PageTable<'a, A>,
        src: u64,
        dst: u64,
        g: &mut TlbGather<'a>,
    ) -> bool {
        let dw = pt.lookup(dst);
        if dw.level < PMD_LEVEL {
            // A PTE table, left empty by an earlier unmap, sits there:
            // unmap_range frees tables it empties (their flush gathered).
            if pt.unmap_range(dst, PMD_SIZE, g).is_err() {
                return false;
            }
        }
        if !pt.lookup(dst).entry.is_absent() || pt.lookup(dst).level < PMD_LEVEL {
            return false;
        }
        let Ok(old) = pt.move_pmd_leaf(src, dst, g) else {
            return false;
        };
        if !self.ctx.is_zero_pfn(old.pfn)
            && let Some(f) = self.ctx.folio(old.pfn)
        {
            self.follow_owner(f, dst, 0);
        }
        true
    }

    /// A page `idx` of `f` now maps at `va`: if this space owns `f`, the
    /// owner's address moves to where the folio's first page would be.  A
    /// reservation breaks: its pages need no longer sit in one aligned
    /// block at their own offsets (`aspace::reserve`).
    fn follow_owner(&self, f: Folio<'a>, va: u64, idx: u64) {
        self.ctx.reservation_break(f);
        if let Some((id, _)) = f.anon_owner()
            && id == self.id
            && let Some(base) = va.checked_sub(idx * PAGE_SIZE)
        {
            f.set_anon_owner(self.id, base >> PAGE_SHIFT);
        }
    }

    /// Move the PTEs of `[va, end)` (inside one source PTE table) to `dst`.
    fn move_ptes(
        &self,
        pt: &mut PageTable<'a, A>,
        va: u64,
        end: u64,
        dst: u64,
        g: &mut TlbGather<'a>,
    ) {
        let n = ((end - va) >> PAGE_SHIFT) as usize;
        let Some(run) = pt.pte_run(va, n) else {
            debug_assert!(false, "no PTE table at {va:#x}");
            return;
        };
        debug_assert_eq!(run.end(), end);
        // Swap entries move as they are (a swap-in at the new address
        // copies if the cached folio lives elsewhere: see `aspace::swap`),
        // and so do migration entries (one the migration then cannot find
        // is mapped back onto its page by the next fault on it: see
        // `aspace::migrate`).
        if self.has_nonpresent() {
            for i in 0..run.len() {
                if let Entry::Swap(e) = run.entry(i) {
                    let (s, d) = (run.va(i), dst + i as u64 * PAGE_SIZE);
                    pt.take_swap_pte(s);
                    pt.set_swap_pte(d, e)
                        .expect("destination empty, its tables prepared");
                }
            }
        }
        // The run: consecutive frames of one folio with equal rights
        // (zero-page entries move one at a time and are never folded).
        self.for_each_pte_batch(&run, BatchMatch::Attrs, false, |i, b, folio| {
            let (l, nr) = (b.first, b.nr);
            let (s, d) = (run.va(i), dst + i as u64 * PAGE_SIZE);
            let r = pt.get_and_clear_ptes(s, nr, g);
            let mut attrs = l.attrs;
            attrs.young = r.young;
            attrs.dirty = r.dirty;
            pt.set_ptes(d, l.pfn, nr, attrs)
                .expect("destination empty, its tables prepared");
            if let Some(f) = folio {
                self.follow_owner(f, d, l.pfn - f.pfn());
                self.refold_edges(pt, d, nr, f);
            }
            nr
        });
    }

    /// After `set_ptes` of `nr` pages of `f` at `d`: fold the blocks at the
    /// run's two ends, which the run covered only partly (the rest of the
    /// block may have come from an earlier run).
    fn refold_edges(&self, pt: &mut PageTable<'a, A>, d: u64, nr: usize, f: Folio<'a>) {
        let cp = A::CONT_PTES as u64;
        if !pt.cont_enabled() {
            return;
        }
        let span = FolioSpan {
            first_pfn: f.pfn(),
            nr: f.nr_pages(),
        };
        let block = cp * PAGE_SIZE;
        let first = align_down(d, block);
        let last = align_down(d + (nr as u64 - 1) * PAGE_SIZE, block);
        for b in [first, last] {
            let tail = b + (cp - 1) * PAGE_SIZE;
            if pt.lookup(tail).entry.leaf().is_some_and(|l| !l.cont) {
                pt.try_fold(tail, span);
            }
            if first == last {
                break;
            }
        }
    }

    /// The page-table side of `mremap` once the VMA set has been changed:
    /// zap what the plan unmapped, then move the entries.  On ENOMEM for
    /// the destination's tables nothing has moved; the caller restores the
    /// VMA set.
    pub(crate) fn mremap_tables(
        &self,
        pt: &mut PageTable<'a, A>,
        unmapped: &[core::ops::Range<u64>],
        moved: Option<&MremapMove>,
    ) -> Result<(), Errno> {
        for r in unmapped {
            self.zap_range(pt, r.start, r.end, true);
        }
        let Some(m) = moved else {
            return Ok(());
        };
        if m.len == 0 {
            return Ok(());
        }
        if self.prepare_move(pt, m).is_err() {
            // Give back the (empty) tables allocated so far.
            self.zap_range(pt, m.to, m.to + m.len, true);
            return Err(Errno::ENOMEM);
        }
        self.move_entries(pt, m);
        Ok(())
    }
}
