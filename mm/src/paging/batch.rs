//! Batch operations on runs of 4 KiB entries, and contiguous-block (arm64
//! contpte) maintenance.
//!
//! A run `[va, va + n pages)` is processed in *segments*: pieces that lie in
//! one PTE table and one contiguous block.  A segment covering a whole
//! contiguous block is changed in place (all 16 entries, the cont bit kept,
//! one gathered flush); a segment covering only part of a contiguous block
//! first unfolds the block with break-before-make.
//!
//! All of this runs under the page-table lock (`&mut PageTable`), except
//! what takes `&self`: clearing (zap under split page-table locks) and
//! filling empty entries (the fault path), each with the PTE table's own
//! lock held and the page-table lock shared.

use super::arch::{Attrs, ENTRIES_PER_TABLE, Entry, Leaf, PTE_LEVEL, PagingArch, SwapEntry};
use super::table::{FolioSpan, PageTable, PtError, TableAt, Walk};
use super::tlb::TlbGather;
use crate::addr::{PAGE_SHIFT, PAGE_SIZE};

/// What [`PageTable::get_and_clear_ptes`] found in the entries it cleared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClearResult {
    /// Leaves removed (including `PROT_NONE` ones).
    pub present: usize,
    /// Any of them (or, for a contiguous block, any entry of the block) was
    /// young / dirty.
    pub young: bool,
    pub dirty: bool,
    /// Contiguous blocks unfolded because the run cut them.
    pub unfolds: usize,
}

/// One piece of a run: inside one PTE table and one contiguous block.
#[derive(Clone, Copy)]
struct Seg {
    va: u64,
    table: TableAt,
    /// Index of the first entry in its table, and the number of entries.
    idx: usize,
    count: usize,
}

impl Seg {
    fn slot(&self, table: u64, i: usize) -> u64 {
        table + 8 * (self.idx + i) as u64
    }
}

/// Where a walk over a run's segments stands, kept apart from the table
/// so that a loop over them may change the table between steps (with no
/// list of segments collected first): [`PageTable::segments`] is this as
/// an iterator.
struct SegCursor {
    va: u64,
    n: usize,
    done: usize,
    /// The last PTE table found, by its 2 MiB-aligned base.
    cached: Option<(u64, TableAt)>,
}

impl SegCursor {
    #[inline]
    fn new(va: u64, n: usize, known: Option<(u64, TableAt)>) -> Self {
        Self {
            va,
            n,
            done: 0,
            cached: known,
        }
    }

    /// The next segment: inside one PTE table and one contiguous block.
    #[inline(always)]
    fn next<A: PagingArch>(&mut self, pt: &PageTable<'_, A>) -> Option<Seg> {
        if self.done >= self.n {
            return None;
        }
        let block = A::CONT_PTES.max(1);
        let sva = self.va + (self.done as u64) * PAGE_SIZE;
        let idx = super::arch::level_index(sva, PTE_LEVEL);
        let table_base = sva & !(super::arch::level_size(1) - 1);
        let table = match self.cached {
            Some((b, t)) if b == table_base => t,
            _ => {
                let t = pt.table_at(sva, PTE_LEVEL);
                self.cached = Some((table_base, t));
                t
            }
        };
        let block_end = (idx / block + 1) * block;
        let count = (self.n - self.done).min(block_end.min(ENTRIES_PER_TABLE) - idx);
        self.done += count;
        Some(Seg {
            va: sva,
            table,
            idx,
            count,
        })
    }
}

/// The PTE table `w` (a walk to `walked`) reached and the index of `va`
/// in it, if the `n` entries from `va` all lie in that table; `None` to
/// walk again.
pub(super) fn walked_run(w: &Walk, walked: u64, va: u64, n: usize) -> Option<(u64, usize)> {
    let idx0 = super::arch::level_index(va, PTE_LEVEL);
    let table_span = super::arch::level_size(PTE_LEVEL + 1);
    (w.level == PTE_LEVEL
        && va & (PAGE_SIZE - 1) == 0
        && walked / table_span == va / table_span
        && idx0 + n <= ENTRIES_PER_TABLE)
        .then_some((w.slot & !(PAGE_SIZE - 1), idx0))
}

impl<'a, A: PagingArch> PageTable<'a, A> {
    /// Split `[va, va + n pages)` into segments (table lookups are done
    /// once per PTE table, not once per entry).
    fn segments(&self, va: u64, n: usize) -> impl Iterator<Item = Seg> + use<'a, '_, A> {
        self.segments_from(va, n, None)
    }

    /// [`Self::segments`] with the PTE table of one 2 MiB-aligned base
    /// already known (`(base, table)`), so the walk for it is skipped.
    fn segments_from(
        &self,
        va: u64,
        n: usize,
        known: Option<(u64, TableAt)>,
    ) -> impl Iterator<Item = Seg> + use<'a, '_, A> {
        let mut c = SegCursor::new(va, n, known);
        core::iter::from_fn(move || c.next(self))
    }

    fn seg_is_cont(&self, table: u64, s: &Seg) -> bool {
        A::CONT_PTES > 1
            && matches!(self.read(s.slot(table, 0), PTE_LEVEL), Entry::Leaf(l) if l.cont)
    }

    fn whole_block(s: &Seg) -> bool {
        s.count == A::CONT_PTES && s.idx.is_multiple_of(A::CONT_PTES)
    }

    /// True if every one of the `n` entries from `va` is empty (raw 0).  A
    /// missing PTE table counts as empty; a huge leaf over the range does
    /// not.  This is the fault path's "does this order fit" test.
    pub fn ptes_none(&self, va: u64, n: usize) -> bool {
        self.ptes_none_from(va, n, None)
    }

    /// [`Self::ptes_none`] given `w`, a walk to `walked` (done under this
    /// lock hold, or under a lock that kept the PTE table it reached
    /// alive): no second walk when `[va, va + n pages)` lies in that table.
    pub fn ptes_none_walked(&self, w: &Walk, walked: u64, va: u64, n: usize) -> bool {
        match walked_run(w, walked, va, n) {
            Some((t, idx0)) => (0..n).all(|i| self.mem().load(t + 8 * (idx0 + i) as u64) == 0),
            None => self.ptes_none(va, n),
        }
    }

    fn ptes_none_from(&self, va: u64, n: usize, known: Option<(u64, TableAt)>) -> bool {
        self.segments_from(va, n, known).all(|s| match s.table {
            TableAt::Missing => true,
            TableAt::Huge => false,
            TableAt::Table(t) => (0..s.count).all(|i| self.mem().load(s.slot(t, i)) == 0),
        })
    }

    /// Map `n` consecutive frames from `first_pfn` (pages of one folio) at
    /// `va`, all with `attrs`.  The entries must be empty (`Exists`
    /// otherwise, nothing written).  In a user space on a format with
    /// contiguous hints, every block the run covers entirely whose frames
    /// are aligned too gets the contiguous bit directly — no fold needed.
    /// Entries go from empty to valid, so no TLB flush is needed.
    pub fn set_ptes(
        &mut self,
        va: u64,
        first_pfn: u64,
        n: usize,
        attrs: Attrs,
    ) -> Result<(), PtError> {
        if va & (PAGE_SIZE - 1) != 0 {
            return Err(PtError::Misaligned);
        }
        // Allocate tables first so that a failure leaves no entry written.
        // The first table is remembered: the checks and stores below then
        // walk again only for a run crossing into another table.
        let mut off = 0;
        let mut first = None;
        while off < n {
            let v = va + (off as u64) * PAGE_SIZE;
            let t = self.ensure_table(v, PTE_LEVEL)?;
            first.get_or_insert((v & !(super::arch::level_size(1) - 1), TableAt::Table(t)));
            off += ENTRIES_PER_TABLE - super::arch::level_index(v, PTE_LEVEL);
        }
        let idx0 = super::arch::level_index(va, PTE_LEVEL);
        if let Some((_, TableAt::Table(t))) = first
            && idx0 + n <= ENTRIES_PER_TABLE
        {
            return self.set_ptes_in_table(t, idx0, va, first_pfn, n, attrs);
        }
        if !self.ptes_none_from(va, n, first) {
            return Err(PtError::Exists);
        }
        let cont_ok = self.cont_enabled();
        let mem = self.mem();
        let mut cont_sets = 0;
        for s in self.segments_from(va, n, first) {
            let TableAt::Table(t) = s.table else {
                unreachable!("tables ensured above")
            };
            let pfn0 = first_pfn + ((s.va - va) >> PAGE_SHIFT);
            cont_sets += Self::store_seg(mem, t, &s, pfn0, attrs, cont_ok) as u64;
        }
        self.stats.cont_sets += cont_sets;
        self.env.tlb.sync_tables();
        Ok(())
    }

    /// Write the entries of segment `s` of table `t`: frames from `pfn0`,
    /// with the contiguous hint when `cont_ok` and the segment is a whole
    /// aligned block of aligned frames.  Returns whether it set the hint.
    #[inline]
    fn store_seg(
        mem: &dyn crate::physmem::phys::PhysMem,
        t: u64,
        s: &Seg,
        pfn0: u64,
        attrs: Attrs,
        cont_ok: bool,
    ) -> bool {
        let cont = cont_ok && Self::whole_block(s) && pfn0.is_multiple_of(A::CONT_PTES as u64);
        let enc = |i: usize| {
            let leaf = Leaf {
                pfn: pfn0 + i as u64,
                level: PTE_LEVEL,
                attrs,
                cont,
            };
            A::encode(Entry::Leaf(leaf), PTE_LEVEL)
        };
        // Encoded once and stepped per frame (the frame number is one
        // field, so consecutive frames differ by a constant, checked at
        // the ends), stored as one run of words.
        let n = s.count;
        if n <= 1 {
            if n == 1 {
                mem.store(s.slot(t, 0), enc(0));
            }
            return cont;
        }
        let r0 = enc(0);
        let step = enc(1).wrapping_sub(r0);
        let linear = n <= 2 || enc(n - 1) == r0.wrapping_add(step.wrapping_mul(n as u64 - 1));
        let mut buf = [0u64; 16];
        for c0 in (0..n).step_by(buf.len()) {
            let words = &mut buf[..(n - c0).min(16)];
            for (j, w) in words.iter_mut().enumerate() {
                *w = if linear {
                    r0.wrapping_add(step.wrapping_mul((c0 + j) as u64))
                } else {
                    enc(c0 + j)
                };
            }
            mem.store_words(s.slot(t, c0), words);
        }
        cont
    }

    /// [`Self::set_ptes`] when the caller already walked to `va`'s PTE
    /// table: `w` is [`Self::lookup`]`(walked)` taken under the same
    /// page-table lock hold (so the table is still there).  Skips the
    /// second walk of the fault path's common case (an existing PTE table
    /// covering the run) and falls back to `set_ptes` otherwise.
    pub fn set_ptes_walked(
        &mut self,
        w: &Walk,
        walked: u64,
        va: u64,
        first_pfn: u64,
        n: usize,
        attrs: Attrs,
    ) -> Result<(), PtError> {
        match walked_run(w, walked, va, n) {
            Some((t, idx0)) => self.set_ptes_in_table(t, idx0, va, first_pfn, n, attrs),
            None => self.set_ptes(va, first_pfn, n, attrs),
        }
    }

    /// The entries of the `n` pages from `va` when they lie in the PTE
    /// table `w` reached from `walked` (as [`Self::set_ptes_walked`]), read
    /// without another walk; `None` when they do not.
    pub fn pte_run_walked(
        &self,
        w: &Walk,
        walked: u64,
        va: u64,
        n: usize,
    ) -> Option<super::walk::PteRun<'a, A>> {
        let (t, idx0) = walked_run(w, walked, va, n)?;
        Some(super::walk::PteRun::in_table(self.mem(), t, idx0, va, n))
    }

    /// Maps frames from `first_pfn` at the `n` pages from `va`, whose
    /// entries are swap entries the caller took the data of (the swap-in
    /// fault, which read them through [`Self::pte_run_walked`] under this
    /// lock hold): the leaves are stored over them, in the table `w`
    /// reached from `walked`, with no emptiness pass and no flush (the MMU
    /// never cached a swap entry).  `NotMapped` if the run is not in that
    /// table.  Takes the table shared: the caller holds the page-table
    /// lock exclusive, or shared with the PTE table's lock (the swap-cache
    /// hit of the split-lock fault path), so no other writer touches these
    /// entries.  No `sync_tables`, as [`Self::fill_ptes_shared`]: the
    /// entries were invalid to the walker, and an access that does not
    /// see the store yet faults again and finds the leaf.
    pub fn set_ptes_over_swap_walked(
        &self,
        w: &Walk,
        walked: u64,
        va: u64,
        first_pfn: u64,
        n: usize,
        attrs: Attrs,
    ) -> Result<(), PtError> {
        let (t, idx0) = walked_run(w, walked, va, n).ok_or(PtError::NotMapped)?;
        debug_assert!(
            (0..n).all(|i| self
                .read(t + 8 * (idx0 + i) as u64, PTE_LEVEL)
                .swap()
                .is_some()),
            "swap entries expected"
        );
        let cont_sets = self.store_leaves_in_table(t, idx0, va, first_pfn, n, attrs);
        if cont_sets != 0 {
            self.cont_sets_shared
                .fetch_add(cont_sets, core::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// [`Self::set_ptes`] for a run inside the one PTE table `t` (every
    /// naturally aligned folio of at most PMD size): the same checks and
    /// entries, blocks split as [`Self::segments`] does, with no walk.
    fn set_ptes_in_table(
        &mut self,
        t: u64,
        idx0: usize,
        va: u64,
        first_pfn: u64,
        n: usize,
        attrs: Attrs,
    ) -> Result<(), PtError> {
        let cont_sets = self.store_in_table(t, idx0, va, first_pfn, n, attrs)?;
        self.env.tlb.sync_tables();
        self.stats.cont_sets += cont_sets;
        Ok(())
    }

    /// [`Self::set_ptes_walked`] with the table shared: for the fault path
    /// under split page-table locks, whose caller holds the lock of the PTE
    /// table `w` reached (so no other writer touches its entries) and the
    /// mmap lock (so the table stays).  Only a run inside that table;
    /// `Exists` if an entry is not empty, `NotMapped` if the run is not in
    /// it.
    pub fn fill_ptes_shared(
        &self,
        w: &Walk,
        walked: u64,
        va: u64,
        first_pfn: u64,
        n: usize,
        attrs: Attrs,
    ) -> Result<(), PtError> {
        let (t, idx0) = walked_run(w, walked, va, n).ok_or(PtError::NotMapped)?;
        // No `sync_tables`: these entries were empty, and the access that
        // faulted retries after the exception return; should the walker
        // not see the store yet, the access faults again and finds the
        // entry there (as Linux on arm64, whose `update_mmu_cache` issues
        // no barrier for a new user entry).
        let cont_sets = self.store_in_table(t, idx0, va, first_pfn, n, attrs)?;
        // Skipped when 0 (every 4K fault): the word is shared by every CPU
        // faulting the space.
        if cont_sets != 0 {
            self.cont_sets_shared
                .fetch_add(cont_sets, core::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// The stores of [`Self::set_ptes_in_table`] (the caller makes them
    /// visible to the walker, or need not); returns the contiguous blocks
    /// written.
    fn store_in_table(
        &self,
        t: u64,
        idx0: usize,
        va: u64,
        first_pfn: u64,
        n: usize,
        attrs: Attrs,
    ) -> Result<u64, PtError> {
        let mem = self.mem();
        if n == 1 {
            // Every 4K fault: one entry, never a whole contiguous block, so
            // no segment to work out and no hint to decide.
            let slot = t + 8 * idx0 as u64;
            if mem.load(slot) != 0 {
                return Err(PtError::Exists);
            }
            let leaf = Leaf {
                pfn: first_pfn,
                level: PTE_LEVEL,
                attrs,
                cont: false,
            };
            mem.store(slot, A::encode(Entry::Leaf(leaf), PTE_LEVEL));
            return Ok(0);
        }
        if (0..n).any(|i| mem.load(t + 8 * (idx0 + i) as u64) != 0) {
            return Err(PtError::Exists);
        }
        Ok(self.store_leaves_in_table(t, idx0, va, first_pfn, n, attrs))
    }

    /// The stores of [`Self::store_in_table`], whatever the entries held
    /// (the caller checked them); returns the contiguous blocks written.
    fn store_leaves_in_table(
        &self,
        t: u64,
        idx0: usize,
        va: u64,
        first_pfn: u64,
        n: usize,
        attrs: Attrs,
    ) -> u64 {
        let mem = self.mem();
        let cont_ok = self.cont_enabled();
        let block = A::CONT_PTES.max(1);
        if n > block && idx0.is_multiple_of(block) && n.is_multiple_of(block) {
            // Whole aligned blocks (a large folio mapped at once): each
            // would be one segment of `store_seg` with the same hint
            // decision, so the entries are one encoding stepped over the
            // run (checked linear at its end) instead of three encodings
            // per block.
            let cont = cont_ok && first_pfn.is_multiple_of(block as u64);
            let enc = |i: u64| {
                let leaf = Leaf {
                    pfn: first_pfn + i,
                    level: PTE_LEVEL,
                    attrs,
                    cont,
                };
                A::encode(Entry::Leaf(leaf), PTE_LEVEL)
            };
            let r0 = enc(0);
            let step = enc(1).wrapping_sub(r0);
            if enc(n as u64 - 1) == r0.wrapping_add(step.wrapping_mul(n as u64 - 1)) {
                let mut buf = [0u64; 64];
                for c0 in (0..n).step_by(buf.len()) {
                    let words = &mut buf[..(n - c0).min(64)];
                    for (j, w) in words.iter_mut().enumerate() {
                        *w = r0.wrapping_add(step.wrapping_mul((c0 + j) as u64));
                    }
                    mem.store_words(t + 8 * (idx0 + c0) as u64, words);
                }
                return if cont { (n / block) as u64 } else { 0 };
            }
        }
        let mut cont_sets = 0;
        let mut done = 0;
        while done < n {
            let idx = idx0 + done;
            let s = Seg {
                va: va + (done as u64) * PAGE_SIZE,
                table: TableAt::Table(t),
                idx,
                count: (n - done).min((idx / block + 1) * block - idx),
            };
            let pfn0 = first_pfn + done as u64;
            cont_sets += Self::store_seg(mem, t, &s, pfn0, attrs, cont_ok) as u64;
            done += s.count;
        }
        cont_sets
    }

    /// Map one frame at `va` (entry must be empty).  If `folio` is given and
    /// this entry is the last of a contiguous block whose 16 entries now
    /// map 16 aligned consecutive frames of that folio with equal
    /// attributes, the block is folded (break-before-make, one immediate
    /// flush).  Returns whether it folded.  Faults fill blocks in ascending
    /// order, so checking on the last entry finds nearly every block.
    pub fn set_pte(
        &mut self,
        va: u64,
        pfn: u64,
        attrs: Attrs,
        folio: Option<FolioSpan>,
    ) -> Result<bool, PtError> {
        self.set_ptes(va, pfn, 1, attrs)?;
        match folio {
            Some(f) => Ok(self.try_fold(va, f)),
            None => Ok(false),
        }
    }

    /// Fold the block whose last entry maps `va`, if it qualifies.
    pub fn try_fold(&mut self, va: u64, folio: FolioSpan) -> bool {
        let cp = A::CONT_PTES;
        if !self.cont_enabled() {
            return false;
        }
        let idx = super::arch::level_index(va, PTE_LEVEL);
        if idx % cp != cp - 1 {
            return false;
        }
        self.try_fold_block(va, folio)
    }

    /// Fold the contiguous block holding `va` (any of its entries), if
    /// its entries map aligned consecutive frames of `folio` with equal
    /// attributes.  Reservations fill blocks in any order, so they check
    /// the block of each entry they set.
    pub fn try_fold_block(&mut self, va: u64, folio: FolioSpan) -> bool {
        let cp = A::CONT_PTES;
        if !self.cont_enabled() {
            return false;
        }
        let idx = super::arch::level_index(va, PTE_LEVEL);
        let TableAt::Table(t) = self.table_at(va, PTE_LEVEL) else {
            return false;
        };
        let first = idx - idx % cp;
        let base = t + 8 * first as u64;
        let Some(l0) = self.read(base, PTE_LEVEL).leaf() else {
            return false;
        };
        if l0.pfn % cp as u64 != 0 || l0.attrs.special || !l0.attrs.perms.accessible() {
            return false;
        }
        if !folio.contains(l0.pfn, cp as u64) {
            return false;
        }
        let key = l0.attrs.fold_key();
        let ok = (0..cp).all(|i| match self.read(base + 8 * i as u64, PTE_LEVEL) {
            Entry::Leaf(l) => !l.cont && l.pfn == l0.pfn + i as u64 && l.attrs.fold_key() == key,
            _ => false,
        });
        if !ok {
            return false;
        }
        let block_va = va - ((idx % cp) as u64) * PAGE_SIZE;
        self.convert_block(base, block_va, |_, l| Some(Leaf { cont: true, ..l }));
        self.stats.folds += 1;
        true
    }

    /// Rewrite a valid block with break-before-make: clear all entries
    /// (collecting young/dirty, which the MMU may have recorded in any one
    /// of them on behalf of the whole block), flush the block from the TLB
    /// at once, then write `f(i, old with block-wide young/dirty, cont
    /// cleared)` for each entry (`None` leaves it empty).
    fn convert_block(
        &self,
        base: u64,
        block_va: u64,
        mut f: impl FnMut(usize, Leaf) -> Option<Leaf>,
    ) {
        let cp = A::CONT_PTES;
        // Formats with 4K granules have at most 16 (arm64); 64 leaves room.
        assert!(cp <= 64, "contiguous block larger than supported");
        let mut olds = [None::<Leaf>; 64];
        let (mut young, mut dirty) = (false, false);
        for (i, old) in olds.iter_mut().enumerate().take(cp) {
            let l = A::decode(self.take(base + 8 * i as u64), PTE_LEVEL).leaf();
            if let Some(l) = l {
                young |= l.attrs.young;
                dirty |= l.attrs.dirty;
            }
            *old = l;
        }
        let end = block_va + cp as u64 * PAGE_SIZE;
        self.env.tlb.flush_range(
            self.space,
            self.cpus.begin_flush(),
            block_va,
            end,
            PAGE_SIZE,
        );
        for (i, old) in olds.iter().enumerate().take(cp) {
            let Some(mut l) = *old else {
                debug_assert!(false, "converting a block with an empty entry");
                continue;
            };
            l.attrs.young = young;
            l.attrs.dirty = dirty;
            l.cont = false;
            if let Some(new) = f(i, l) {
                self.mem()
                    .store(base + 8 * i as u64, A::encode(Entry::Leaf(new), PTE_LEVEL));
            }
        }
        self.env.tlb.sync_tables();
    }

    /// Unfold the block of `s` and apply `f` to the entries of `s` (others
    /// are rewritten unchanged, without the cont bit).  The BBM flush
    /// covers the change, so nothing is gathered.
    fn unfold_apply(&self, t: u64, s: &Seg, mut f: impl FnMut(Leaf) -> Option<Leaf>) {
        let cp = A::CONT_PTES;
        let first = s.idx - s.idx % cp;
        let block_va = s.va - ((s.idx - first) as u64) * PAGE_SIZE;
        let (lo, hi) = (s.idx - first, s.idx - first + s.count);
        self.convert_block(t + 8 * first as u64, block_va, |i, l| {
            if (lo..hi).contains(&i) { f(l) } else { Some(l) }
        });
        self.unfolds_shared
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }

    /// Clear `n` entries from `va`, returning what they held.  Whole
    /// contiguous blocks are cleared in place; a block only partly in the
    /// run is unfolded first (its other entries stay mapped).  The TLB
    /// flush for cleared entries is gathered.  Missing tables are skipped;
    /// a huge leaf over the run is left alone (callers split first; debug
    /// builds assert).  Takes `&self`: a zap under split page-table locks
    /// runs it with the table shared and the PTE table's own lock held.
    pub fn get_and_clear_ptes(&self, va: u64, n: usize, g: &mut TlbGather<'a>) -> ClearResult {
        self.get_and_clear_ptes_from(va, n, None, g)
    }

    /// [`Self::get_and_clear_ptes`] of entries `i..i + n` of `run`, a run
    /// of this table walked under the same lock hold (reclaim's and
    /// migration's unmap): no descent to find the table again, which had
    /// been a third of a 4K folio's unmap walks.
    pub fn get_and_clear_ptes_in_run(
        &self,
        run: &super::walk::PteRun<'a, A>,
        i: usize,
        n: usize,
        g: &mut TlbGather<'a>,
    ) -> ClearResult {
        debug_assert!(i + n <= run.len());
        let va = run.va(i);
        let base = va & !(super::arch::level_size(PTE_LEVEL + 1) - 1);
        self.get_and_clear_ptes_from(va, n, Some((base, TableAt::Table(run.table_pa()))), g)
    }

    fn get_and_clear_ptes_from(
        &self,
        va: u64,
        n: usize,
        known: Option<(u64, TableAt)>,
        g: &mut TlbGather<'a>,
    ) -> ClearResult {
        let mut r = ClearResult::default();
        let mut segs = SegCursor::new(va, n, known);
        while let Some(s) = segs.next(self) {
            let t = match s.table {
                TableAt::Table(t) => t,
                TableAt::Missing => continue,
                TableAt::Huge => {
                    debug_assert!(false, "get_and_clear_ptes over a huge leaf");
                    continue;
                }
            };
            if self.seg_is_cont(t, &s) && !Self::whole_block(&s) {
                self.unfold_apply(t, &s, |l| {
                    r.present += 1;
                    r.young |= l.attrs.young;
                    r.dirty |= l.attrs.dirty;
                    None
                });
                r.unfolds += 1;
                continue;
            }
            let mut any = false;
            for i in 0..s.count {
                let old = self.take(s.slot(t, i));
                if let Entry::Leaf(l) = A::decode(old, PTE_LEVEL) {
                    r.present += 1;
                    r.young |= l.attrs.young;
                    r.dirty |= l.attrs.dirty;
                }
                any |= old != 0;
            }
            if any {
                g.add_range(s.va, s.va + s.count as u64 * PAGE_SIZE, PAGE_SIZE);
            }
        }
        r
    }

    /// Remove write permission from `n` entries from `va` (fork, mprotect).
    /// Whole contiguous blocks stay folded (all 16 change together); a
    /// partly covered block is unfolded.  Flushes are gathered.
    pub fn wrprotect_ptes(&mut self, va: u64, n: usize, g: &mut TlbGather<'a>) {
        let mut segs = SegCursor::new(va, n, None);
        while let Some(s) = segs.next(self) {
            let TableAt::Table(t) = s.table else { continue };
            if self.seg_is_cont(t, &s) && !Self::whole_block(&s) {
                self.unfold_apply(t, &s, |mut l| {
                    l.attrs.perms.write = false;
                    Some(l)
                });
                continue;
            }
            let mut changed = false;
            for i in 0..s.count {
                if let Some((old, _)) = self.modify_leaf(s.slot(t, i), PTE_LEVEL, |mut l| {
                    l.attrs.perms.write = false;
                    l
                }) {
                    changed |= old.attrs.perms.write;
                }
            }
            if changed {
                g.add_range(s.va, s.va + s.count as u64 * PAGE_SIZE, PAGE_SIZE);
            }
        }
    }

    /// Clear young on `n` entries from `va`; returns whether any was young.
    /// Young is tracked per block on a contiguous block, so the clear
    /// widens to the whole block and never unfolds.  A flush is gathered
    /// for entries that were young, so the next access is seen.
    pub fn clear_young_ptes(&mut self, va: u64, n: usize, g: &mut TlbGather<'a>) -> bool {
        self.clear_young_dirty(va, n, false, g).0
    }

    /// Clear young *and* dirty on `n` entries from `va` (`MADV_FREE`: the
    /// next write must show, so reclaim can tell a re-written lazyfree
    /// folio).  Contiguous blocks are cleared whole, as in
    /// [`Self::clear_young_ptes`]; entries that changed get a gathered
    /// flush.  Returns whether any was dirty.
    pub fn mkclean_old_ptes(&mut self, va: u64, n: usize, g: &mut TlbGather<'a>) -> bool {
        self.clear_young_dirty(va, n, true, g).1
    }

    /// Clear young (and with `dirty`, dirty) on `n` entries from `va`,
    /// whole contiguous blocks at a time; returns (any was young, any was
    /// dirty).
    fn clear_young_dirty(
        &mut self,
        va: u64,
        n: usize,
        dirty: bool,
        g: &mut TlbGather<'a>,
    ) -> (bool, bool) {
        let cp = A::CONT_PTES;
        let (mut young, mut was_dirty) = (false, false);
        let mut segs = SegCursor::new(va, n, None);
        while let Some(s) = segs.next(self) {
            let TableAt::Table(t) = s.table else { continue };
            let (base_idx, count, sva) = if self.seg_is_cont(t, &s) {
                let first = s.idx - s.idx % cp;
                (first, cp, s.va - ((s.idx - first) as u64) * PAGE_SIZE)
            } else {
                (s.idx, s.count, s.va)
            };
            let mut changed = false;
            for i in 0..count {
                if let Some((old, _)) =
                    self.modify_leaf(t + 8 * (base_idx + i) as u64, PTE_LEVEL, |mut l| {
                        l.attrs.young = false;
                        l.attrs.dirty &= !dirty;
                        l
                    })
                {
                    young |= old.attrs.young;
                    was_dirty |= old.attrs.dirty;
                    changed |= old.attrs.young || (dirty && old.attrs.dirty);
                }
            }
            if changed {
                g.add_range(sva, sva + count as u64 * PAGE_SIZE, PAGE_SIZE);
            }
        }
        (young, was_dirty)
    }

    /// Change the attributes of the single 4 KiB leaf at `va` (frame kept):
    /// COW reuse making one page writable, an access-flag or dirty-bit fault,
    /// a one-page mprotect.  Returns the old leaf (young/dirty block-wide
    /// for a contiguous block).
    ///
    /// In a contiguous block, a change that only *sets* young/dirty is
    /// applied to all 16 entries without unfolding (they are tracked per
    /// block); any other change unfolds the block.  Outside blocks, a
    /// change that removes rights or clears young/dirty gathers a flush; a
    /// pure upgrade does not (a stale, stricter TLB entry only causes a
    /// spurious fault, which the fault path retries).
    pub fn update_pte(
        &mut self,
        va: u64,
        attrs: Attrs,
        g: &mut TlbGather<'a>,
    ) -> Result<Leaf, PtError> {
        let TableAt::Table(t) = self.table_at(va, PTE_LEVEL) else {
            return Err(PtError::NotMapped);
        };
        let idx = super::arch::level_index(va, PTE_LEVEL);
        let slot = t + 8 * idx as u64;
        let Some(cur) = self.read(slot, PTE_LEVEL).leaf() else {
            return Err(PtError::NotMapped);
        };
        if cur.cont {
            let cp = A::CONT_PTES;
            let first = idx - idx % cp;
            let base = t + 8 * first as u64;
            let (mut by, mut bd) = (false, false);
            for i in 0..cp {
                if let Some(l) = self.read(base + 8 * i as u64, PTE_LEVEL).leaf() {
                    by |= l.attrs.young;
                    bd |= l.attrs.dirty;
                }
            }
            let old = Leaf {
                attrs: Attrs {
                    young: by,
                    dirty: bd,
                    ..cur.attrs
                },
                ..cur
            };
            let only_sets = attrs.fold_key() == cur.attrs.fold_key()
                && (attrs.young || !by)
                && (attrs.dirty || !bd);
            if only_sets {
                for i in 0..cp {
                    self.modify_leaf(base + 8 * i as u64, PTE_LEVEL, |mut l| {
                        l.attrs.young |= attrs.young;
                        l.attrs.dirty |= attrs.dirty;
                        l
                    });
                }
                self.env.tlb.sync_tables();
            } else {
                let s = Seg {
                    va,
                    table: TableAt::Table(t),
                    idx,
                    count: 1,
                };
                self.unfold_apply(t, &s, |l| Some(Leaf { attrs, ..l }));
            }
            return Ok(old);
        }
        let (old, _) = self
            .modify_leaf(slot, PTE_LEVEL, |l| Leaf { attrs, ..l })
            .ok_or(PtError::NotMapped)?;
        if !is_upgrade(&old.attrs, &attrs) {
            g.add_range(va, va + PAGE_SIZE, PAGE_SIZE);
        } else {
            self.env.tlb.sync_tables();
        }
        Ok(old)
    }
}

impl<'a, A: PagingArch> PageTable<'a, A> {
    /// The slot (physical address) of `va`'s PTE when its PTE table is
    /// present: for a caller that reads and rewrites one entry within one
    /// page-table lock hold ([`Self::read`], [`Self::take`],
    /// [`Self::store_pte`]) with one walk — an order-0 folio's migration,
    /// which otherwise walks five times.
    pub(crate) fn pte_slot(&self, va: u64) -> Option<u64> {
        match self.table_at(va, PTE_LEVEL) {
            TableAt::Table(t) => Some(t + 8 * super::arch::level_index(va, PTE_LEVEL) as u64),
            _ => None,
        }
    }

    /// Writes `e` at the PTE `slot`, which holds no valid entry (empty, or
    /// a swap or migration entry, which no TLB caches: nothing to flush).
    /// A valid `e` is visible to the walker after [`Self::sync_tables`].
    pub(crate) fn store_pte(&mut self, slot: u64, e: Entry) {
        self.mem().store(slot, A::encode(e, PTE_LEVEL));
    }

    /// Makes entries just made valid visible to the table walker (once per
    /// batch of [`Self::store_pte`]s).
    pub(crate) fn sync_tables(&self) {
        self.env.tlb.sync_tables();
    }

    /// Write `n` swap or migration entries from `va`, entry `i` being
    /// `entry(i)` (`None`: it cannot be encoded, `Misaligned`): swap-out's
    /// slots of one area, migration's frames of one folio.  The entries
    /// must be empty and their tables present (both write them where they
    /// just cleared the folio's PTEs).  Non-present entries are never
    /// cached by a TLB, so nothing is flushed.
    pub fn set_swap_entries(
        &mut self,
        va: u64,
        n: usize,
        entry: impl Fn(usize) -> Option<SwapEntry>,
    ) -> Result<(), PtError> {
        // Two passes over the tables (checked, then written), so nothing is
        // allocated: a 4K folio's migration writes one entry.
        let mem = self.mem();
        for s in self.segments(va, n) {
            let TableAt::Table(t) = s.table else {
                return Err(PtError::NotMapped);
            };
            for i in 0..s.count {
                if mem.load(s.slot(t, i)) != 0 {
                    return Err(PtError::Exists);
                }
            }
        }
        let mut done = 0;
        for s in self.segments(va, n) {
            let TableAt::Table(t) = s.table else {
                unreachable!("checked above")
            };
            for i in 0..s.count {
                let e = entry(done + i).ok_or(PtError::Misaligned)?;
                mem.store(s.slot(t, i), A::encode(Entry::Swap(e), PTE_LEVEL));
            }
            done += s.count;
        }
        Ok(())
    }

    /// Clear the `n` swap or migration entries from `va` (the migration
    /// remap, which found them all in place), table by table.  Entries that
    /// are not swap entries are left alone.  No flush: the MMU never cached
    /// them.  Returns the entries cleared.
    pub fn take_swap_ptes(&mut self, va: u64, n: usize) -> usize {
        let mut taken = 0;
        for s in self.segments(va, n) {
            let TableAt::Table(t) = s.table else { continue };
            for i in 0..s.count {
                let slot = s.slot(t, i);
                if self.read(slot, PTE_LEVEL).swap().is_some() {
                    self.take(slot);
                    taken += 1;
                }
            }
        }
        taken
    }

    /// Write one swap or migration entry at `va` (empty before; its table
    /// is allocated if missing): fork's copy, mremap's move.
    pub fn set_swap_pte(&mut self, va: u64, e: SwapEntry) -> Result<(), PtError> {
        let t = self.ensure_table(va, PTE_LEVEL)?;
        let slot = t + 8 * super::arch::level_index(va, PTE_LEVEL) as u64;
        if self.mem().load(slot) != 0 {
            return Err(PtError::Exists);
        }
        self.mem().store(slot, A::encode(Entry::Swap(e), PTE_LEVEL));
        Ok(())
    }

    /// Clear the swap or migration entry at `va` and return it (`None`,
    /// changing nothing, if there is none).  No flush: the MMU never
    /// cached it.
    pub fn take_swap_pte(&self, va: u64) -> Option<SwapEntry> {
        let TableAt::Table(t) = self.table_at(va, PTE_LEVEL) else {
            return None;
        };
        let slot = t + 8 * super::arch::level_index(va, PTE_LEVEL) as u64;
        let e = self.read(slot, PTE_LEVEL).swap()?;
        self.take(slot);
        Some(e)
    }

    /// Replace the swap entry at `va` by `new` (fork clearing the
    /// exclusive bit in the parent).  False if `va` holds no swap entry.
    pub fn replace_swap_pte(&mut self, va: u64, new: SwapEntry) -> bool {
        let TableAt::Table(t) = self.table_at(va, PTE_LEVEL) else {
            return false;
        };
        let slot = t + 8 * super::arch::level_index(va, PTE_LEVEL) as u64;
        if self.read(slot, PTE_LEVEL).swap().is_none() {
            return false;
        }
        self.mem()
            .store(slot, A::encode(Entry::Swap(new), PTE_LEVEL));
        true
    }
}

/// True if going from `old` to `new` only adds rights or sets young/dirty,
/// so a TLB entry cached from `old` is at worst stricter than `new`.
pub(super) fn is_upgrade(old: &Attrs, new: &Attrs) -> bool {
    let (o, n) = (old.perms, new.perms);
    let perms_ok =
        (!o.read || n.read) && (!o.write || n.write) && (!o.exec || n.exec) && o.user == n.user;
    perms_ok
        && (!old.young || new.young)
        && (!old.dirty || new.dirty)
        && old.global == new.global
        && old.special == new.special
        && old.device == new.device
}
