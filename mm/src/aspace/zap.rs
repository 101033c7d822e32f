//! Unmapping (munmap, `MADV_DONTNEED`, `MAP_FIXED` replacement, exit):
//! Linux's `zap_pte_range` / `zap_huge_pmd`.
//!
//! Entries are cleared in batches per folio (a run of consecutive pages of
//! one folio costs one `get_and_clear_ptes` and one mapcount update); a PMD
//! leaf the range covers entirely is removed whole, one it cuts is split
//! first.  Every TLB flush is gathered and done once at the end, and only
//! then are the folios' references dropped, so no freed frame is ever
//! reachable through a stale TLB entry.  munmap gathers all its ranges and
//! the gap tables around them into one gather ([`Mm::zap_shared`]): one
//! flush, so one shootdown round, as Linux's `unmap_region` does with one
//! mmu_gather; the freed tables go back only after it, once every target
//! CPU has acknowledged.
//!
//! # Zapping under split page-table locks
//! munmap (after its mmap-lock downgrade) and `MADV_DONTNEED` (under the
//! mmap lock for reading) zap with the page-table lock *shared*
//! ([`Mm::zap_shared`]), so other threads' faults elsewhere in the space
//! run meanwhile instead of spinning for the whole zap.  There is one zap
//! loop ([`Mm::zap_walk`]) over the one walker; how it holds the lock is a
//! [`ZapLock`]:
//!
//! * a run of PTEs is cleared with its PTE table's split lock held
//!   (`Mm::lock_pte_table`), the lock a fault filling that table takes, so
//!   a fault sees the table either before or after the zap of it, never
//!   half done; contiguous blocks the range cuts are unfolded under it
//!   (break-before-make);
//! * a PMD leaf the range covers whole is removed with the PMD table's
//!   split lock held (Linux's `pmd_lock`: the same word in the PMD table
//!   page's descriptor), and looked at again under it, so two zaps of one
//!   leaf never both remove it; its deposit comes off the page table's
//!   deposit stack, which has its own lock;
//! * a PMD leaf the range cuts must be split, which needs the exclusive
//!   lock: the zap first flushes what it gathered (so no taker of the
//!   exclusive lock, such as an rmap walker, finds an entry gone whose TLB
//!   entries may live on), drops the shared lock, takes it exclusively,
//!   walks the step again and keeps the exclusive lock to the end of the
//!   call (a cut leaf is at most at the two ends of a range);
//! * the tables munmap frees (those wholly inside its ranges and the gaps
//!   around them) are freed under the shared lock: no VMA lies there, so
//!   no fault walks into them, `MADV_DONTNEED` zaps only inside VMAs, and
//!   munmaps exclude each other (each starts with the mmap lock for
//!   writing).  Faults never free tables (they add PTE tables and PMD
//!   leaves into empty PMDs, under the PMD table's lock), and nothing but
//!   the exclusive lock's holders does otherwise, so a table a shared
//!   holder walked to stays while it holds the lock.
//!
//! The gather is finished before the lock is dropped, so a holder of the
//! exclusive lock never meets a flush still pending.  Two shared zaps may
//! overlap (two threads' `MADV_DONTNEED`): one may find entries the other
//! cleared but has not flushed yet, and must not return before they are;
//! so while more than one shared zap is in flight, each flushes its whole
//! range (Linux's `mm_tlb_flush_nested`).
//!
//! Lock order: the page-table lock shared, then one split lock at a time
//! (a PTE table's or a PMD table's); the folio mapcount, deferred-split
//! and LRU locks below them as under the exclusive lock.

use core::ops::Range;
use core::sync::atomic::Ordering::SeqCst;

use crate::addr::{PAGE_SIZE, align_down};
use crate::paging::{
    BatchMatch, Entry, HugeLeaf, PMD_LEVEL, PageTable, PagingArch, PteRun, Step, TlbGather,
};
use crate::sync::PtReadGuard;
use crate::thp::VmEvent;

use super::rmap::PutList;
use super::{Mm, PtGuard};

/// How a zap holds the page-table lock (module doc).
pub(crate) enum ZapLock<'l, 'a, A: PagingArch> {
    /// Exclusively, by the caller.
    Held(&'l mut PageTable<'a, A>),
    /// Shared, taken by [`Mm::zap_shared`].
    Shared(PtReadGuard<'l, Option<PageTable<'a, A>>>),
    /// Exclusively, taken after a shared hold met a step that needs it.
    Exclusive(PtGuard<'l, 'a, A>),
    /// Between the two.
    Unlocked,
}

impl<'l, 'a, A: PagingArch> ZapLock<'l, 'a, A> {
    fn pt(&self) -> &PageTable<'a, A> {
        match self {
            Self::Held(pt) => pt,
            Self::Shared(g) => g.as_ref().expect("page table of a live Mm"),
            Self::Exclusive(g) => g,
            Self::Unlocked => unreachable!("a zap holds the page-table lock"),
        }
    }

    fn is_shared(&self) -> bool {
        matches!(self, Self::Shared(_))
    }

    /// The table, if held exclusively.
    fn pt_mut(&mut self) -> Option<&mut PageTable<'a, A>> {
        match self {
            Self::Held(pt) => Some(pt),
            Self::Exclusive(g) => Some(g),
            Self::Shared(_) | Self::Unlocked => None,
        }
    }

    /// From shared to exclusive, flushing what `g` gathered first.
    fn upgrade(&mut self, mm: &'l Mm<'a, A>, g: &mut TlbGather<'a>) {
        g.flush_now();
        *self = Self::Unlocked;
        *self = Self::Exclusive(mm.lock_pt());
    }
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Remove every mapping in `[start, end)` (page aligned), with the
    /// page-table lock held exclusively by the caller.  With
    /// `free_tables`, page-table pages the range empties entirely are freed
    /// too (munmap and exit; `MADV_DONTNEED` keeps them, as Linux).
    pub(crate) fn zap_range(
        &self,
        pt: &mut PageTable<'a, A>,
        start: u64,
        end: u64,
        free_tables: bool,
    ) {
        if start >= end {
            return;
        }
        let mut g = pt.gather();
        let mut puts = PutList::new();
        self.zap_walk(
            &mut ZapLock::Held(pt),
            start,
            end,
            free_tables,
            &mut g,
            &mut puts,
        );
        g.finish();
        puts.release();
    }

    /// Zap `ranges` taking the page-table lock shared (module doc), all in
    /// one gather; with `free_tables` (munmap: the ranges and `gaps` hold
    /// no VMA) the tables they and the `gaps` empty entirely go too.
    pub(crate) fn zap_shared(&self, ranges: &[Range<u64>], gaps: &[Range<u64>], free_tables: bool) {
        if ranges.iter().all(|r| r.start >= r.end) {
            return;
        }
        self.zaps_shared.fetch_add(1, SeqCst);
        let mut h = ZapLock::Shared(self.lock_pt_shared());
        if matches!(&h, ZapLock::Shared(g) if g.is_none()) {
            drop(h);
            self.zaps_shared.fetch_sub(1, SeqCst);
            return;
        }
        let mut g = h.pt().gather();
        let mut puts = PutList::new();
        for r in ranges {
            self.zap_walk(&mut h, r.start, r.end, free_tables, &mut g, &mut puts);
        }
        if free_tables {
            for r in gaps {
                self.free_gap_tables_into(h.pt(), r.start, r.end, &mut g);
            }
        }
        if h.is_shared() && self.zaps_shared.load(SeqCst) > 1 {
            // Another shared zap in flight may have cleared entries of
            // these ranges that it has not flushed yet.
            for r in ranges.iter().filter(|r| r.start < r.end) {
                g.add_range(r.start, r.end, PAGE_SIZE);
            }
        }
        g.finish();
        drop(h);
        self.zaps_shared.fetch_sub(1, SeqCst);
        puts.release();
    }

    /// The zap loop: remove every mapping in `[start, end)` into the
    /// caller's gather and put list, holding the page-table lock as `h`
    /// says.  The caller must `finish` the gather and only then release
    /// the puts (so no folio is freed while a TLB may still map it).
    fn zap_walk<'l>(
        &'l self,
        h: &mut ZapLock<'l, 'a, A>,
        start: u64,
        end: u64,
        free_tables: bool,
        g: &mut TlbGather<'a>,
        puts: &mut PutList<'a>,
    ) {
        if start >= end {
            return;
        }
        let mut walk = h.pt().walk_range(start, end);
        while let Some(step) = walk.next() {
            match step {
                Step::Hole { .. } => {}
                Step::Leaf(hl) if hl.level == PMD_LEVEL => {
                    let (base, l) = (hl.base(), hl.leaf);
                    if !hl.whole() {
                        match h.pt_mut() {
                            Some(pt) => self.split_pmd_locked(pt, base),
                            None => h.upgrade(self, g),
                        }
                        walk.again();
                        continue;
                    }
                    let pt = h.pt();
                    let _pmdl = if h.is_shared() {
                        let lock = self.lock_pte_table(pt.lookup(base).table_pa());
                        let now = pt.lookup(base);
                        if now.level != PMD_LEVEL || now.entry.leaf().map(|x| x.pfn) != Some(l.pfn)
                        {
                            // Changed before the lock was had: look again.
                            drop(lock);
                            walk.again();
                            continue;
                        }
                        Some(lock)
                    } else {
                        None
                    };
                    pt.zap_pmd(base, g)
                        .expect("a PMD leaf is there under the lock");
                    if !self.ctx.is_zero_pfn(l.pfn)
                        && let Some(f) = self.ctx.folio(l.pfn)
                    {
                        self.ctx.rmap_remove_pmd(f, self.id);
                        self.rss_sub_folio(f, f.nr_pages());
                        puts.push(f, 1);
                    }
                }
                Step::Ptes(run) => {
                    let shared = h.is_shared();
                    let ptl = shared.then(|| self.lock_pte_table(run.table_pa()));
                    self.zap_ptes(h.pt(), run, shared, g, puts);
                    drop(ptl);
                    puts.release_if_full(g);
                }
                Step::Leaf(HugeLeaf { start, .. }) | Step::NonPresent { start, .. } => {
                    debug_assert!(false, "unexpected entry at {start:#x}");
                }
            }
        }
        if free_tables {
            // Every leaf in the range is gone, so this only frees the table
            // pages the range covers entirely (their flush is gathered).
            let r = h.pt().unmap_range(start, end - start, g);
            debug_assert!(r.is_ok(), "{r:?}");
        }
    }

    /// Free the page-table pages lying wholly inside `[floor, ceiling)`, a
    /// range that holds no VMA and therefore no leaf (only empty tables).
    /// The tables go into the caller's gather `g` (freed when it finishes,
    /// after its one flush).
    fn free_gap_tables_into(
        &self,
        pt: &PageTable<'a, A>,
        floor: u64,
        ceiling: u64,
        g: &mut TlbGather<'a>,
    ) {
        let floor = floor.next_multiple_of(PAGE_SIZE);
        let ceiling = align_down(ceiling, PAGE_SIZE);
        if floor >= ceiling {
            return;
        }
        let r = pt.unmap_range(floor, ceiling - floor, g);
        debug_assert!(r.is_ok(), "{r:?}");
    }

    /// Clear the swap entries of `[start, end)` (`MADV_FREE`: their data
    /// is discarded at once; migration entries stay, as Linux).
    pub(crate) fn zap_swap_range(&self, pt: &mut PageTable<'a, A>, start: u64, end: u64) {
        for step in pt.walk_range(start, end) {
            if let Step::Ptes(run) = step {
                self.zap_swap_ptes(pt, &run, None);
            }
        }
    }

    /// Clear the swap entries of `run`, dropping their slot references
    /// (runs of consecutive slots together), as Linux's
    /// `free_swap_and_cache_nr`.  With `puts`, migration entries too: each
    /// still maps the page it names (see `aspace::migrate`), so it is
    /// unmapped like a PTE, its reference dropped after the flush, and a
    /// migration in flight does not restore it.  Only looked for while the
    /// space has any.
    fn zap_swap_ptes(
        &self,
        pt: &PageTable<'a, A>,
        run: &PteRun<'a, A>,
        mut puts: Option<&mut PutList<'a>>,
    ) {
        let mut pending: Option<(u8, u64, u64)> = None;
        let flush = |p: Option<(u8, u64, u64)>| {
            if let Some((ty, slot, n)) = p {
                self.ctx.swap_free_entries(ty, slot, n);
            }
        };
        for i in 0..run.len() {
            let Entry::Swap(e) = run.entry(i) else {
                continue;
            };
            if e.is_migration()
                && let Some(puts) = puts.as_deref_mut()
            {
                pt.take_swap_pte(run.va(i));
                self.migents_sub(1);
                if let Some(f) = self.ctx.folio(e.offset) {
                    self.ctx.rmap_remove_ptes(f, self.id, e.offset - f.pfn(), 1);
                    self.rss_sub(1);
                    puts.push(f, 1);
                }
                continue;
            }
            if !e.is_swap() {
                continue;
            }
            pt.take_swap_pte(run.va(i));
            self.swapents_sub(1);
            match &mut pending {
                Some((ty, slot, n)) if *ty == e.ty && *slot + *n == e.offset => *n += 1,
                p => flush(p.replace((e.ty, e.offset, 1))),
            }
        }
        flush(pending);
    }

    /// Zap the PTEs of `run`, one batch per run of a folio's pages.  With
    /// the lock `shared`, the contiguous blocks unfolded are counted here
    /// (an exclusive hold's guard counts them on release).
    fn zap_ptes(
        &self,
        pt: &PageTable<'a, A>,
        run: PteRun<'a, A>,
        shared: bool,
        g: &mut TlbGather<'a>,
        puts: &mut PutList<'a>,
    ) {
        let ctx = self.ctx;
        if self.has_nonpresent() {
            self.zap_swap_ptes(pt, &run, Some(puts));
        }
        self.for_each_pte_batch(&run, BatchMatch::Frames, false, |i, b, folio| {
            let (l, nr) = (b.first, b.nr);
            let r = pt.get_and_clear_ptes(run.va(i), nr, g);
            if shared && r.unfolds != 0 {
                ctx.thp
                    .stats
                    .count_n(VmEvent::ContpteUnfold, r.unfolds as u64);
            }
            match folio {
                Some(f) => {
                    ctx.rmap_remove_ptes(f, self.id, l.pfn - f.pfn(), nr as u64);
                    self.rss_sub_folio(f, nr as u64);
                    puts.push(f, nr as u32);
                }
                None => debug_assert!(
                    ctx.is_zero_pfn(l.pfn),
                    "PTE at {:#x} maps pfn {:#x}, no folio",
                    run.va(i),
                    l.pfn
                ),
            }
            nr
        });
    }
}
