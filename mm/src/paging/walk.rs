//! A cursor over the page-table entries of a virtual range (the role of
//! Linux's `mm/pagewalk.c`, in our own shape).
//!
//! Every address-space operation that visits a range (zap, fork, mprotect,
//! mremap, split, collapse, khugepaged) needs the same descent: for each piece of the range, is there nothing, a huge leaf, a
//! non-present huge entry, or a PTE table, and if a PTE table, which of its
//! entries fall in the range.  [`PageTable::walk_range`] does that descent
//! once and hands out [`Step`]s in address order; a PTE table comes as a
//! [`PteRun`], which reads its entries by index and hides the table's
//! physical address, so the callers never compute slot addresses or decode
//! raw words themselves.
//!
//! # Why a cursor that holds no borrow of the table
//! The callers change the table while they walk it: zap clears the entries
//! of a run before it reads the next, fork write-protects the parent, a PMD
//! leaf the range cuts is split and then visited again.  The cursor
//! therefore keeps only the root and the position, walks from the root at
//! each step (as the hand-written loops did with `lookup`), and a
//! [`PteRun`] reads entries from memory when asked, so it always sees the
//! current contents.  [`RangeWalk::again`] rewinds to the start of the last
//! step (Linux's `ACTION_AGAIN`), for the split-then-retry case.
//!
//! # Lifetime of a `PteRun`
//! A run is valid while its PTE table stays hooked in: every operation
//! under the same page-table lock hold that clears, sets or rewrites
//! entries keeps it, but [`PageTable::unmap_range`] frees the tables it
//! empties and a collapse detaches the table; take a new step after those.

use core::marker::PhantomData;

use super::arch::{
    ENTRIES_PER_TABLE, Entry, Leaf, PTE_LEVEL, PagingArch, ROOT_LEVEL, SwapEntry, level_index,
    level_size,
};
use super::table::PageTable;
use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::physmem::phys::PhysMem;

/// One piece of a walked range, in address order.
#[derive(Clone, Copy)]
pub enum Step<'a, A: PagingArch> {
    /// `[start, end)` has no entries: an absent entry or a missing table
    /// at `level` (above the PTEs; absent PTEs inside a table are part of
    /// a [`PteRun`]).
    Hole { start: u64, end: u64, level: u8 },
    /// A leaf above the PTE level (a PMD or PUD leaf).
    Leaf(HugeLeaf),
    /// A swap or migration entry above the PTE level covers `[start, end)`.
    NonPresent {
        start: u64,
        end: u64,
        level: u8,
        swap: SwapEntry,
    },
    /// The entries of one PTE table that lie in the range.
    Ptes(PteRun<'a, A>),
}

/// A leaf above the PTE level met by a walk: it maps `[start, end)`, the
/// part of its span inside the walked range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugeLeaf {
    pub start: u64,
    pub end: u64,
    pub level: u8,
    pub leaf: Leaf,
}

impl HugeLeaf {
    /// Where the leaf's own span starts.
    pub fn base(&self) -> u64 {
        self.start & !(level_size(self.level) - 1)
    }
    /// Whether the walked range covers the whole leaf (else a caller that
    /// changes it must split it first).
    pub fn whole(&self) -> bool {
        self.start == self.base() && self.end - self.start == level_size(self.level)
    }
}

/// The entries of one PTE table for `[start, start + len pages)`, read by
/// index (`0` is the entry for `start`).
#[derive(Clone, Copy)]
pub struct PteRun<'a, A: PagingArch> {
    mem: &'a dyn PhysMem,
    /// Physical address of the entry for `start` (never handed out).
    first: u64,
    start: u64,
    len: usize,
    _arch: PhantomData<fn() -> A>,
}

impl<'a, A: PagingArch> PteRun<'a, A> {
    /// Virtual address of entry 0.
    pub fn start(&self) -> u64 {
        self.start
    }
    /// End of the run's virtual range.
    pub fn end(&self) -> u64 {
        self.start + self.len as u64 * PAGE_SIZE
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Virtual address of entry `i`.
    pub fn va(&self, i: usize) -> u64 {
        self.start + i as u64 * PAGE_SIZE
    }
    /// Entry `i` as it is now: the one place the address-space code's raw
    /// PTE words are decoded.
    #[inline]
    pub fn entry(&self, i: usize) -> Entry {
        debug_assert!(i < self.len);
        A::decode(self.raw(i), PTE_LEVEL)
    }
    /// The leaf at entry `i`, if it is one (`PROT_NONE` leaves included).
    #[inline]
    pub fn leaf(&self, i: usize) -> Option<Leaf> {
        self.entry(i).leaf()
    }
    /// The raw word of entry `i`, for callers that keep entries to put
    /// back bit for bit (collapse's window).
    #[inline]
    pub fn raw(&self, i: usize) -> u64 {
        self.mem.load(self.first + 8 * i as u64)
    }
    /// Raw words of entries `from..from + out.len()` in one bulk read.
    pub fn raw_words(&self, from: usize, out: &mut [u64]) {
        debug_assert!(from + out.len() <= self.len);
        self.mem.load_words(self.first + 8 * from as u64, out);
    }
    /// The run of the `len` entries of PTE table `table` (physical
    /// address) from index `idx0`, mapping `start` on.
    pub(super) fn in_table(
        mem: &'a dyn PhysMem,
        table: u64,
        idx0: usize,
        start: u64,
        len: usize,
    ) -> Self {
        PteRun {
            mem,
            first: table + 8 * idx0 as u64,
            start,
            len,
            _arch: PhantomData,
        }
    }
    /// Whether every entry of the run is the swap entry of area `ty`
    /// naming slot `slot0 + i` (exclusive or not); if so, entry `i`'s
    /// exclusive bit is set as bit `i % 64` of `excl[i / 64]` (which
    /// must be zero and long enough) and the result says whether all are
    /// exclusive.  The swap-in fault's test for mapping a folio whole:
    /// raw words against the encoding of the first slot stepped per slot
    /// (checked to be linear over the run: a plain or an inverted offset
    /// field), a decode only for a word that differs.
    pub fn swap_run(&self, ty: u8, slot0: u64, excl: &mut [u64]) -> Option<bool> {
        let n = self.len as u64;
        if n == 0 {
            return Some(true);
        }
        let enc = |off: u64, x: bool| {
            SwapEntry::swap(ty, off, x).map(|e| A::encode(Entry::Swap(e), PTE_LEVEL))
        };
        let (r0, r0x, r1, rl, rlx) = (
            enc(slot0, false)?,
            enc(slot0, true)?,
            enc(slot0 + 1, false)?,
            enc(slot0 + n - 1, false)?,
            enc(slot0 + n - 1, true)?,
        );
        let xbit = r0 ^ r0x;
        let step = r1.wrapping_sub(r0);
        let linear = xbit.count_ones() == 1
            && step & xbit == 0
            && rl == r0.wrapping_add(step.wrapping_mul(n - 1))
            && rlx == rl | xbit;
        // Up to 64 words at a time (16 for a run that short: a 64-word
        // buffer's 512-byte memset was a tenth of a 64K swap-cache hit,
        // and 16-word chunks cost a 2M hit 9% more): a branch-free pass
        // against the stepped encoding, the decoding one only for a chunk
        // where some word differs beyond the exclusive bit.
        // The exclusive bit's value in a non-exclusive entry; an expected
        // word whose bit differs (the offset field carried into it) is
        // left to the decoding pass.
        let x0 = r0 & xbit;
        let mut all = true;
        let mut small = [0u64; 16];
        let mut big;
        let buf: &mut [u64] = if self.len <= small.len() {
            &mut small
        } else {
            big = [0u64; 64];
            &mut big
        };
        let chunk = buf.len();
        for c0 in (0..self.len).step_by(chunk) {
            let words = &mut buf[..(self.len - c0).min(chunk)];
            self.raw_words(c0, words);
            let mut bits = 0u64;
            let mut bad = !linear as u64;
            if linear {
                let mut expect = r0.wrapping_add(step.wrapping_mul(c0 as u64));
                for (j, &w) in words.iter().enumerate() {
                    let d = w ^ expect;
                    bad |= (d & !xbit) | ((expect & xbit) ^ x0);
                    bits |= ((d & xbit != 0) as u64) << j;
                    expect = expect.wrapping_add(step);
                }
            }
            if bad != 0 {
                bits = 0;
                for (j, &w) in words.iter().enumerate() {
                    match A::decode(w, PTE_LEVEL) {
                        Entry::Swap(e)
                            if e.is_swap() && e.ty == ty && e.offset == slot0 + (c0 + j) as u64 =>
                        {
                            bits |= (e.exclusive as u64) << j;
                        }
                        _ => return None,
                    }
                }
            }
            let full = u64::MAX >> (64 - words.len());
            excl[c0 / 64] |= bits << (c0 % 64);
            all &= bits == full;
        }
        Some(all)
    }
    /// The sub-run of entries `from..to`.
    pub fn slice(&self, from: usize, to: usize) -> PteRun<'a, A> {
        debug_assert!(from <= to && to <= self.len);
        PteRun {
            first: self.first + 8 * from as u64,
            start: self.va(from),
            len: to - from,
            ..*self
        }
    }
    /// Index of the entry for `va` in the table (for contiguous-block
    /// alignment).
    pub(super) fn table_index(&self, i: usize) -> usize {
        level_index(self.va(i), PTE_LEVEL)
    }
    /// Physical address of the PTE table the run lies in: outside `paging`
    /// only to take its split lock (`Mm::lock_pte_table`), never to address
    /// entries (`get_and_clear_ptes_in_run` starts its segments from it).
    pub fn table_pa(&self) -> u64 {
        self.first - 8 * self.table_index(0) as u64
    }
    /// Raw word of the entry at table index `idx` of the same table, which
    /// may lie outside the run (a contiguous block's other entries).
    pub(super) fn raw_in_table(&self, idx: usize) -> u64 {
        self.mem.load(self.table_pa() + 8 * idx as u64)
    }
}

/// The cursor of [`PageTable::walk_range`]: an iterator of [`Step`]s that
/// borrows nothing but the physical memory, so the table may be changed
/// between steps.
pub struct RangeWalk<'a, A: PagingArch> {
    mem: &'a dyn PhysMem,
    root: u64,
    va: u64,
    end: u64,
    last: u64,
    _arch: PhantomData<fn() -> A>,
}

impl<'a, A: PagingArch> RangeWalk<'a, A> {
    /// Go back to the start of the step last returned, so the next step
    /// walks it again (after splitting a huge leaf it returned).
    pub fn again(&mut self) {
        self.va = self.last;
    }
}

impl<'a, A: PagingArch> Iterator for RangeWalk<'a, A> {
    type Item = Step<'a, A>;

    fn next(&mut self) -> Option<Step<'a, A>> {
        let va = self.va;
        if va >= self.end {
            return None;
        }
        let mut table = self.root;
        let mut level = ROOT_LEVEL;
        loop {
            let slot = table + 8 * level_index(va, level) as u64;
            // Where the entry at `level` (for a PTE: its table) stops
            // covering the range.
            let span = level_size(level.max(PTE_LEVEL + 1));
            let end = (va & !(span - 1)).saturating_add(span).min(self.end);
            if level == PTE_LEVEL {
                self.last = va;
                self.va = end;
                return Some(Step::Ptes(PteRun {
                    mem: self.mem,
                    first: slot,
                    start: va,
                    len: ((end - va) >> PAGE_SHIFT) as usize,
                    _arch: PhantomData,
                }));
            }
            let step = match A::decode(self.mem.load(slot), level) {
                Entry::Table { pa } => {
                    table = pa;
                    level -= 1;
                    continue;
                }
                Entry::Absent => Step::Hole {
                    start: va,
                    end,
                    level,
                },
                Entry::Leaf(leaf) => Step::Leaf(HugeLeaf {
                    start: va,
                    end,
                    level,
                    leaf,
                }),
                Entry::Swap(swap) => Step::NonPresent {
                    start: va,
                    end,
                    level,
                    swap,
                },
            };
            self.last = va;
            self.va = end;
            return Some(step);
        }
    }
}

impl<'a, A: PagingArch> PageTable<'a, A> {
    /// Writes the swap entries `entry(0..n)` over entries `i..i + n` of
    /// `run`, a run of this table walked under the same lock hold whose
    /// entries the caller has just cleared (reclaim's unmap): the
    /// [`set_swap_entries`](Self::set_swap_entries) of the per-folio
    /// swap-out path, without descending again (the emptiness is checked
    /// in debug builds only).
    pub(crate) fn set_swap_entries_in_run(
        &mut self,
        run: &PteRun<'a, A>,
        i: usize,
        n: usize,
        entry: impl Fn(usize) -> SwapEntry,
    ) {
        debug_assert!(i + n <= run.len);
        let mem = self.mem();
        for k in 0..n {
            let slot = run.first + 8 * (i + k) as u64;
            debug_assert_eq!(mem.load(slot), 0, "swap entry over a live PTE");
            mem.store(slot, A::encode(Entry::Swap(entry(k)), PTE_LEVEL));
        }
    }

    /// A cursor over `[start, end)` (page aligned, in the lower half): see
    /// the module documentation.  Never allocates.
    pub fn walk_range(&self, start: u64, end: u64) -> RangeWalk<'a, A> {
        debug_assert!((start | end) & (PAGE_SIZE - 1) == 0);
        RangeWalk {
            mem: self.mem(),
            root: self.root,
            va: start,
            end,
            last: start,
            _arch: PhantomData,
        }
    }

    /// The entries of the PTE table under `va` from `va` to the end of that
    /// table or `n` pages, whichever comes first; `None` if no PTE table
    /// covers `va` (absent, or a leaf above).
    pub fn pte_run(&self, va: u64, n: usize) -> Option<PteRun<'a, A>> {
        let in_table = ENTRIES_PER_TABLE - level_index(va, PTE_LEVEL);
        let end = va.saturating_add(n.min(in_table) as u64 * PAGE_SIZE);
        match self.walk_range(va, end).next()? {
            Step::Ptes(r) => Some(r),
            _ => None,
        }
    }
}
