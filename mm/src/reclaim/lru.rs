//! The per-node anonymous LRU (Linux's `lruvec` for the anon lists):
//! intrusive doubly linked active and inactive lists of folio heads, and
//! per-CPU batches that new folios wait in before they are linked.
//!
//! # Where it lives
//! One [`Lru`] per node; there is one node, whose frames the
//! [`BuddyAllocator`] manages, so the allocator owns it
//! ([`BuddyAllocator::lru`], reached as [`crate::aspace::MmCtx::lru`]):
//! the free path (`Folio::put` → the allocator) must take a dying folio
//! off its list, and a folio can reach its allocator but not the
//! [`crate::aspace::MmCtx`].  More nodes would give each allocator its own.
//!
//! # Lists
//! Each list links folio *heads* through the head descriptor's
//! `link_prev` / `link_next` (u32 frame indices, as the buddy free lists),
//! newest at the head, oldest at the tail; reclaim takes from the tail.
//! Counts are in pages, as Linux's `NR_ACTIVE_ANON` / `NR_INACTIVE_ANON`.
//! A folio's place is told by its flags: `LRU` (linked on a list, `ACTIVE`
//! saying which), `LRU_BATCH` (in a CPU's add batch), neither (isolated,
//! i.e. taken off by a holder of a reference, or not anonymous memory).
//! New anonymous folios start on the inactive list (Linux since 5.9).
//! Shmem folios are on these lists too (swap-backed, as Linux's), added
//! when they enter an object's page cache (`shmem`).
//!
//! # Add batches
//! Linux adds new folios through per-CPU `folio_batch`es of 15, moved to
//! the lists under one `lru_lock` hold, so faults on two CPUs do not take
//! a shared lock per fault.  Here a batch is an array per CPU with its own
//! spin lock (uncontended: only its CPU adds, other CPUs come only to take
//! out a folio being freed or to drain).  Large folios skip the batch (as
//! Linux adds them at once): they are few, and a split or reclaim of one
//! never has to look for it in a batch.
//!
//! Unlike Linux's batches, ours hold no reference: a folio freed while in
//! a batch is taken out of it by the free path (the CPU whose batch it is
//! sits in the head's `link_next`).  Memory freed is then back at once,
//! which the tests' exact free-page accounting relies on, and a fault
//! pays no extra reference.
//!
//! # References and isolation
//! Lists hold no references either.  [`Lru::isolate`] takes one with a
//! "get unless zero" under the lists lock, skipping folios whose count
//! already reached 0 (being freed: the free path takes them off) and
//! locked folios (see below).  That speculative reference is why
//! `Folio::put_many` may not drop the last reference of a folio with
//! `LRU` or `LRU_BATCH` set by a plain store: it uses the atomic
//! decrement then, so an isolation racing with the last put either got
//! its reference first or sees 0.
//!
//! A folio's lock keeps isolation away: code that checks a folio's
//! references and then relies on no new one appearing (split) does the
//! check and takes the folio lock under the lists lock
//! (`Lru::lock_folio_checked`), and isolation skips locked folios.
//!
//! # Locks
//! Order: a CPU's batch lock, then the lists lock (`lru_lock`); both are
//! leaves below the deferred-split queue lock in the order of
//! [`crate::aspace`].  Nothing is taken under them, and no folio
//! reference is dropped under them (a last put would come back here).
//! They are always held with preemption off, so a spinner only waits for
//! a running holder: with interrupts masked everywhere except on the fault
//! path's add (`Lru::add_new_flagged`), which runs under a page-table
//! lock (preemption off) and saves the two masking calls; that is safe
//! because no interrupt handler takes these locks (none drops a folio
//! reference).
//!
//! # Cost
//! On the arm64 `-icount` bench an order-0 fault pays about 60
//! instructions for this: ~25 to put the folio in its CPU's batch (the
//! batch lock ~6; the CPU comes from the allocator, which leaves it in the
//! new folio's `link_next`, saving a ~10-instruction call) and ~20 for its
//! share of the drain (the link stores and the atomic flag flip of each
//! folio, and one lists-lock hold per 15).

use alloc::vec::Vec;
use core::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::sync::Mutex;

use crate::cpu::{CpuHook, MAX_CPUS};
use crate::physmem::buddy::BuddyAllocator;
use crate::physmem::folio::{Folio, FolioRef};
use crate::physmem::frame_flags::{PageFlags, order_of};
use crate::physmem::memmap::{Memmap, NO_FRAME};

/// Folios per CPU add batch (Linux's `PAGEVEC_SIZE` / folio batch of 15).
pub const LRU_BATCH: usize = 15;

const F_LRU: u32 = PageFlags::LRU.bits();
const F_BATCH: u32 = PageFlags::LRU_BATCH.bits();
const F_ACTIVE: u32 = PageFlags::ACTIVE.bits();
const F_REFERENCED: u32 = PageFlags::REFERENCED.bits();
/// Either place on the LRU side (see [`Folio::put_many`]'s use).
pub(crate) const F_LRU_ANY: u32 = F_LRU | F_BATCH;

/// The flag a new folio of `order` takes when it joins the LRU: order 0
/// waits in a CPU's add batch, larger ones are linked at once.
#[inline]
pub(crate) fn new_folio_flag(order: u32) -> PageFlags {
    if order == 0 {
        PageFlags::LRU_BATCH
    } else {
        PageFlags::LRU
    }
}

/// Which list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LruList {
    InactiveAnon = 0,
    ActiveAnon = 1,
}

impl LruList {
    pub const fn of(active: bool) -> Self {
        if active {
            LruList::ActiveAnon
        } else {
            LruList::InactiveAnon
        }
    }
}

/// One list: head (newest) and tail (oldest) indices, sizes.
#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    folios: u64,
    pages: u64,
}

impl List {
    const fn new() -> Self {
        List {
            head: NO_FRAME,
            tail: NO_FRAME,
            folios: 0,
            pages: 0,
        }
    }
}

/// Both lists; the data behind the lists lock.  `link_next` points towards
/// the tail (older), `link_prev` towards the head (newer).
pub(crate) struct LruLists {
    lists: [List; 2],
}

impl LruLists {
    const fn new() -> Self {
        LruLists {
            lists: [List::new(); 2],
        }
    }

    /// Links `idx` at the head of list `active` (Linux's `lruvec_add_folio`).
    fn add_head(&mut self, mm: &Memmap<'_>, idx: u32, active: bool, nr: u64) {
        let l = &mut self.lists[active as usize];
        let d = mm.at(idx);
        d.link_prev.store(NO_FRAME, Relaxed);
        d.link_next.store(l.head, Relaxed);
        if l.head == NO_FRAME {
            l.tail = idx;
        } else {
            mm.at(l.head).link_prev.store(idx, Relaxed);
        }
        l.head = idx;
        l.folios += 1;
        l.pages += nr;
    }

    /// Links `idx` right before `anchor` (on its newer side) on list
    /// `active`: a split's pieces keep their folio's place.
    fn add_before(&mut self, mm: &Memmap<'_>, anchor: u32, idx: u32, active: bool, nr: u64) {
        let l = &mut self.lists[active as usize];
        let a = mm.at(anchor);
        let prev = a.link_prev.load(Relaxed);
        let d = mm.at(idx);
        d.link_next.store(anchor, Relaxed);
        d.link_prev.store(prev, Relaxed);
        a.link_prev.store(idx, Relaxed);
        if prev == NO_FRAME {
            l.head = idx;
        } else {
            mm.at(prev).link_next.store(idx, Relaxed);
        }
        l.folios += 1;
        l.pages += nr;
    }

    /// Unlinks `idx` from list `active`.
    fn del(&mut self, mm: &Memmap<'_>, idx: u32, active: bool, nr: u64) {
        let l = &mut self.lists[active as usize];
        let d = mm.at(idx);
        let prev = d.link_prev.load(Relaxed);
        let next = d.link_next.load(Relaxed);
        if prev == NO_FRAME {
            l.head = next;
        } else {
            mm.at(prev).link_next.store(next, Relaxed);
        }
        if next == NO_FRAME {
            l.tail = prev;
        } else {
            mm.at(next).link_prev.store(prev, Relaxed);
        }
        d.link_prev.store(NO_FRAME, Relaxed);
        d.link_next.store(NO_FRAME, Relaxed);
        l.folios -= 1;
        l.pages -= nr;
    }
}

/// One CPU's add batch: folio heads in the order they were added.
struct Batch {
    n: usize,
    idx: [u32; LRU_BATCH],
}

/// A CPU's batch on its own cache line.
#[repr(align(64))]
struct BatchSlot(Mutex<Batch>);

/// Sizes of the lists, in pages and folios (a snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LruCounts {
    pub active_pages: u64,
    pub inactive_pages: u64,
    pub active_folios: u64,
    pub inactive_folios: u64,
    /// Folios waiting in the CPUs' add batches (and their pages), not yet
    /// on a list; `/proc/meminfo` counts them as inactive, as they will be.
    pub batched_folios: u64,
    pub batched_pages: u64,
}

/// Whether [`Lru::move_to`] changed a folio's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Moved {
    /// Moved (or, isolated, re-marked); the pages it holds.
    Yes(u64),
    No,
}

/// One node's anonymous LRU (see the module doc).
pub struct Lru {
    lists: Mutex<LruLists>,
    batches: [BatchSlot; MAX_CPUS],
}

impl Default for Lru {
    fn default() -> Self {
        Self::new()
    }
}

impl Lru {
    pub const fn new() -> Self {
        Lru {
            lists: Mutex::new(LruLists::new()),
            batches: [const {
                BatchSlot(Mutex::new(Batch {
                    n: 0,
                    idx: [NO_FRAME; LRU_BATCH],
                }))
            }; MAX_CPUS],
        }
    }

    /// A new anonymous folio (referenced by the caller) joins the
    /// inactive list: through the running CPU's batch if it is order 0,
    /// at once if large (Linux's `folio_add_lru`).  False, and nothing
    /// done, if it is on the LRU side already or marked active (isolated).
    /// Masks interrupts itself, so any context but an interrupt handler.
    pub(crate) fn add(&self, alloc: &BuddyAllocator<'_>, idx: u32) -> bool {
        let d = alloc.memmap().at(idx);
        let w = d.flags.load(Relaxed);
        if w & (F_LRU_ANY | F_ACTIVE) != 0 {
            return false;
        }
        let (_irq, cpu) = alloc.cpu_hook().irq_guard_on_cpu();
        // Not necessarily fresh from the allocator: name this CPU's batch.
        d.link_next.store(cpu as u32, Relaxed);
        d.flags
            .fetch_or(new_folio_flag(order_of(w)).bits(), Relaxed);
        self.add_new_flagged(alloc, idx);
        true
    }

    /// The fault path's [`Self::add`]: the caller has just set the
    /// folio's flag ([`new_folio_flag`], together with `ANON`) on a folio
    /// fresh from the allocator (whose `link_next` names the allocating
    /// CPU) and runs with preemption off (under a page-table lock), so no
    /// holder of these locks on this CPU can be preempted under it.  Interrupts are not masked (that saves two
    /// calls on every fault), which is safe because interrupt handlers
    /// never take the LRU locks (they drop no folio references).
    #[inline(always)]
    pub(crate) fn add_new_flagged(&self, alloc: &BuddyAllocator<'_>, idx: u32) {
        let mm = alloc.memmap();
        let d = mm.at(idx);
        // The CPU that allocated the folio, which the allocator left in
        // `link_next` (`prep_new_folio`): the faulting CPU, without a call
        // for its id.  Only a hint: were it another CPU, the batch's lock
        // keeps things right and only that CPU's batch is shared.
        let cpu = d.link_next.load(Relaxed) as usize;
        if d.flags.load(Relaxed) & F_LRU != 0 || cpu >= MAX_CPUS {
            return self.add_now(&mm, idx);
        }
        let mut b = self.batches[cpu].0.lock();
        d.link_next.store(cpu as u32, Relaxed);
        let n = b.n;
        b.idx[n] = idx;
        b.n = n + 1;
        if n + 1 == LRU_BATCH {
            self.drain_locked(&mm, &mut b);
        }
    }

    /// Links a large folio (flagged `LRU` already), or an order-0 one
    /// from a CPU without a batch, at the inactive head now.
    #[inline(never)]
    fn add_now(&self, mm: &Memmap<'_>, idx: u32) {
        let d = mm.at(idx);
        let mut l = self.lists.lock();
        let w = d.flags.load(Relaxed);
        l.add_head(mm, idx, false, 1 << order_of(w));
        if w & F_BATCH != 0 {
            d.flags.fetch_xor(F_LRU | F_BATCH, Relaxed);
        }
    }

    /// Moves a batch to the inactive list in the order it was filled
    /// (each at the head, so the last added is the newest), under one
    /// lists-lock hold (Linux's `folio_batch_move_lru`): batched folios
    /// are order 0 and inactive (activation drains a folio's batch
    /// first), so the batch is spliced in as one chain.  Each folio goes
    /// from `LRU_BATCH` to `LRU` in one atomic flip, so the free path's
    /// one load of the flags always sees where it is.
    #[inline(never)]
    fn drain_locked(&self, mm: &Memmap<'_>, b: &mut Batch) {
        let n = b.n;
        if n == 0 {
            return;
        }
        let idx = &b.idx[..n];
        let mut l = self.lists.lock();
        let list = &mut l.lists[0];
        // Newest (last added) first: idx[n-1] → … → idx[0] → old head.
        let old_head = list.head;
        for k in 0..n {
            let d = mm.at(idx[k]);
            let next = if k == 0 { old_head } else { idx[k - 1] };
            let prev = if k + 1 == n { NO_FRAME } else { idx[k + 1] };
            d.link_next.store(next, Relaxed);
            d.link_prev.store(prev, Relaxed);
            let old = d.flags.fetch_xor(F_LRU | F_BATCH, Relaxed);
            debug_assert!(old & (F_LRU_ANY | F_ACTIVE) == F_BATCH && order_of(old) == 0);
        }
        if old_head == NO_FRAME {
            list.tail = idx[0];
        } else {
            mm.at(old_head).link_prev.store(idx[0], Relaxed);
        }
        list.head = idx[n - 1];
        list.folios += n as u64;
        list.pages += n as u64;
        b.n = 0;
    }

    /// Drains `cpu`'s add batch onto the lists (Linux's `lru_add_drain`
    /// for one CPU; any CPU may do it, the batch has a lock).
    pub fn drain_cpu(&self, alloc: &BuddyAllocator<'_>, cpu: usize) {
        if cpu >= MAX_CPUS {
            return;
        }
        let _irq = alloc.cpu_hook().irq_guard();
        let mut b = self.batches[cpu].0.lock();
        self.drain_locked(&alloc.memmap(), &mut b);
    }

    /// Drains every CPU's batch (Linux's `lru_add_drain_all`, without the
    /// cross-CPU calls: the batches have locks).
    pub fn drain_all(&self, alloc: &BuddyAllocator<'_>) {
        for cpu in 0..MAX_CPUS {
            self.drain_cpu(alloc, cpu);
        }
    }

    /// If `f` sits in an add batch, drains that batch, so the folio is on
    /// a list (or isolated, or freed, by the time this returns).
    fn drain_batch_of(&self, alloc: &BuddyAllocator<'_>, idx: u32) {
        let d = alloc.memmap().at(idx);
        if d.flags.load(Acquire) & F_BATCH != 0 {
            let cpu = d.link_next.load(Relaxed) as usize;
            if cpu < MAX_CPUS {
                self.drain_cpu(alloc, cpu);
            }
            // Another value: drained meanwhile (the link now points
            // along a list).
        }
    }

    /// The free path: the folio at `idx` lost its last reference while on
    /// a list or in a batch (`w`, its flags, says which).  Takes it off.
    #[cold]
    #[inline(never)]
    pub(crate) fn del_freed(&self, mm: &Memmap<'_>, cpu: &CpuHook<'_>, idx: u32) {
        let _irq = cpu.irq_guard();
        self.del_freed_masked(mm, idx);
    }

    fn del_freed_masked(&self, mm: &Memmap<'_>, idx: u32) {
        let d = mm.at(idx);
        loop {
            let w = d.flags.load(Acquire);
            if w & F_BATCH != 0 {
                // The batch's CPU, unless a drain has just linked the
                // folio onto a list (then `link_next` is a frame index and
                // the flags say `LRU` on the next turn).
                let c = d.link_next.load(Relaxed) as usize;
                if c < MAX_CPUS {
                    let mut b = self.batches[c].0.lock();
                    let n = b.n;
                    if let Some(pos) = b.idx[..n].iter().position(|&x| x == idx) {
                        b.idx.copy_within(pos + 1..n, pos);
                        b.n = n - 1;
                        d.flags
                            .fetch_and(!(F_BATCH | F_ACTIVE | F_REFERENCED), Relaxed);
                        return;
                    }
                }
                crate::sync::pause();
                continue;
            }
            if w & F_LRU != 0 {
                let mut l = self.lists.lock();
                // Only this path and isolation (which skips a folio with no
                // references) clear `LRU` from a folio on a list.
                l.del(mm, idx, w & F_ACTIVE != 0, 1 << order_of(w));
                d.flags
                    .fetch_and(!(F_LRU | F_ACTIVE | F_REFERENCED), Relaxed);
            }
            return;
        }
    }

    /// The batched free path (zap, collapse): takes every folio of `idxs`
    /// that is on a list off it under one lists-lock hold (Linux's
    /// `folios_put_refs` relocking only when the lruvec changes), and the
    /// batched ones one by one.
    pub(crate) fn del_freed_many(&self, mm: &Memmap<'_>, cpu: &CpuHook<'_>, idxs: &[u32]) {
        let mut any = false;
        for &idx in idxs {
            any |= mm.at(idx).flags.load(Relaxed) & F_LRU_ANY != 0;
        }
        if !any {
            return;
        }
        let _irq = cpu.irq_guard();
        let mut guard = None;
        for &idx in idxs {
            let d = mm.at(idx);
            let w = d.flags.load(Acquire);
            if w & F_BATCH != 0 {
                // Batch locks come before the lists lock.
                guard = None;
                self.del_freed_masked(mm, idx);
            } else if w & F_LRU != 0 {
                let l = guard.get_or_insert_with(|| self.lists.lock());
                l.del(mm, idx, w & F_ACTIVE != 0, 1 << order_of(w));
                d.flags
                    .fetch_and(!(F_LRU | F_ACTIVE | F_REFERENCED), Relaxed);
            }
        }
    }

    /// Isolates folios from the tail (oldest first) of the active or
    /// inactive list until they hold `nr_pages` pages (Linux's
    /// `isolate_lru_folios`).  Each comes off its list (`LRU` clear, its
    /// `ACTIVE` flag kept) with a reference the returned [`FolioRef`]
    /// owns.  Skipped, and left in place: folios whose refcount is already
    /// 0 (being freed) and locked ones (a split in progress relies on no
    /// new reference appearing).  At most `4 * nr_pages + 64` pages are
    /// looked at, so a list full of skipped folios does not hold the lock
    /// for long.
    pub fn isolate<'a>(
        &self,
        alloc: &'a BuddyAllocator<'a>,
        nr_pages: u64,
        active: bool,
    ) -> Vec<FolioRef<'a>> {
        let mm = alloc.memmap();
        let mut out = Vec::new();
        let _irq = alloc.cpu_hook().irq_guard();
        let mut l = self.lists.lock();
        let mut idx = l.lists[active as usize].tail;
        let (mut taken, mut scanned) = (0u64, 0u64);
        let budget = nr_pages.saturating_mul(4).saturating_add(64);
        while idx != NO_FRAME && taken < nr_pages && scanned < budget {
            let d = mm.at(idx);
            let prev = d.link_prev.load(Relaxed);
            let w = d.flags.load(Relaxed);
            let nr = 1u64 << order_of(w);
            scanned += nr;
            debug_assert!(w & F_LRU != 0 && (w & F_ACTIVE != 0) == active);
            let got = w & PageFlags::LOCKED.bits() == 0
                && d.refcount
                    .fetch_update(Acquire, Relaxed, |r| (r != 0).then_some(r + 1))
                    .is_ok();
            if got {
                l.del(&mm, idx, active, nr);
                d.flags.fetch_and(!F_LRU, Relaxed);
                out.push(FolioRef::from_raw(Folio::from_head(alloc, idx)));
                taken += nr;
            }
            idx = prev;
        }
        out
    }

    /// Isolates the folio whose head is `pfn` if it is on a list (Linux's
    /// `folio_isolate_lru`, for compaction's migrate scanner, which has no
    /// reference yet): under the lists lock, a head with `LRU` set is a
    /// live listed folio, so a "get unless zero" makes the reference safe.
    /// Skipped (`None`): not a listed head (freed, in an add batch,
    /// isolated by someone else), locked, or its count already 0.
    pub fn isolate_folio<'a>(
        &self,
        alloc: &'a BuddyAllocator<'a>,
        pfn: u64,
    ) -> Option<FolioRef<'a>> {
        let mm = alloc.memmap();
        let d = mm.desc(pfn)?;
        let idx = mm.idx_of(pfn);
        let _irq = alloc.cpu_hook().irq_guard();
        let mut l = self.lists.lock();
        let w = d.flags.load(Relaxed);
        if w & F_LRU == 0 || w & PageFlags::LOCKED.bits() != 0 {
            return None;
        }
        d.refcount
            .fetch_update(Acquire, Relaxed, |r| (r != 0).then_some(r + 1))
            .ok()?;
        l.del(&mm, idx, w & F_ACTIVE != 0, 1 << order_of(w));
        d.flags.fetch_and(!F_LRU, Relaxed);
        Some(FolioRef::from_raw(Folio::from_head(alloc, idx)))
    }

    /// Puts an isolated folio back at the head of the active or inactive
    /// list (Linux's `folio_putback_lru` / `move_folios_to_lru`), setting
    /// or clearing `ACTIVE` to match, and drops the isolation reference
    /// (after the lock: it may be the last).
    pub fn putback(&self, f: FolioRef<'_>, active: bool) {
        let alloc = f.allocator();
        let mm = alloc.memmap();
        let idx = f.idx();
        let d = mm.at(idx);
        {
            let _irq = alloc.cpu_hook().irq_guard();
            let mut l = self.lists.lock();
            let w = d.flags.load(Relaxed);
            debug_assert!(
                w & F_LRU_ANY == 0,
                "putback of a folio on the LRU: {}",
                f.dump()
            );
            if w & F_LRU_ANY == 0 {
                l.add_head(&mm, idx, active, 1 << order_of(w));
                if active {
                    d.flags.fetch_or(F_LRU | F_ACTIVE, Relaxed);
                } else {
                    d.flags.fetch_or(F_LRU, Relaxed);
                    d.flags.fetch_and(!F_ACTIVE, Relaxed);
                }
            }
        }
        drop(f);
    }

    /// Takes `f` (on a list, in a batch or isolated; the caller holds a
    /// reference) to the head of the list `to_active` says, if it is on
    /// the other one: Linux's `folio_activate` / `folio_deactivate` (done
    /// now rather than through another per-CPU batch).  A folio in an add
    /// batch is moved onto the lists first.  An isolated folio only has
    /// its `ACTIVE` flag changed, for whoever puts it back.  Deactivation
    /// also clears `REFERENCED`.  Returns the folio's pages if its
    /// `ACTIVE` state changed (on a list or isolated).
    pub(crate) fn move_to(&self, f: Folio<'_>, to_active: bool) -> Moved {
        let alloc = f.allocator();
        let mm = alloc.memmap();
        let idx = f.idx();
        self.drain_batch_of(alloc, idx);
        let d = mm.at(idx);
        let _irq = alloc.cpu_hook().irq_guard();
        let mut l = self.lists.lock();
        let w = d.flags.load(Relaxed);
        let active = w & F_ACTIVE != 0;
        if !to_active {
            d.flags.fetch_and(!F_REFERENCED, Relaxed);
        }
        if active == to_active {
            return Moved::No;
        }
        let nr = 1u64 << order_of(w);
        if w & F_LRU != 0 {
            l.del(&mm, idx, active, nr);
            l.add_head(&mm, idx, to_active, nr);
        } else if w & F_BATCH != 0 {
            // Added to a batch again between the drain and the lock: not
            // possible (a folio is added once), but leave it alone if so.
            return Moved::No;
        }
        if to_active {
            d.flags.fetch_or(F_ACTIVE, Relaxed);
        } else {
            d.flags.fetch_and(!F_ACTIVE, Relaxed);
        }
        Moved::Yes(nr)
    }

    /// Split support: under the lists lock (so no isolation can take a
    /// reference in between), checks that `f` has exactly `extra`
    /// references beyond its mappings and takes its folio lock; isolation
    /// skips locked folios, so the count stays until the lock is dropped.
    pub(crate) fn lock_folio_checked<'a>(
        &self,
        f: Folio<'a>,
        extra: i64,
    ) -> Option<crate::physmem::folio::FolioLockGuard<'a>> {
        let _irq = f.allocator().cpu_hook().irq_guard();
        let _l = self.lists.lock();
        if f.extra_refs() != extra {
            return None;
        }
        f.try_lock()
    }

    /// Split support: `pieces` (heads, address order, the first being the
    /// old head) are what the folio at `pieces[0]` was just split into.
    /// If the old folio was on a list, every other piece joins it right
    /// after the one before it, with its `ACTIVE` state (Linux's
    /// `lru_add_split_folio`); pages stay counted once.  If it was
    /// isolated (the splitter's own isolation reference), the other pieces
    /// go on the list its `ACTIVE` flag names, at the head, so none is
    /// lost to the LRU.  Large folios are never in an add batch.
    pub(crate) fn split_pieces(&self, alloc: &BuddyAllocator<'_>, pieces: &[u32]) {
        let mm = alloc.memmap();
        let Some((&first, rest)) = pieces.split_first() else {
            return;
        };
        let d0 = mm.at(first);
        let w0 = d0.flags.load(Relaxed);
        debug_assert!(w0 & F_BATCH == 0, "a large folio in an add batch");
        let active = w0 & F_ACTIVE != 0;
        let carry = w0 & (F_ACTIVE | F_REFERENCED);
        let _irq = alloc.cpu_hook().irq_guard();
        let mut l = self.lists.lock();
        if w0 & F_LRU != 0 {
            // The old head's count still holds the whole folio: give each
            // piece its share.
            // Each piece just newer than the one before it, so the tail
            // end reads the pieces in address order, the old head first
            // (where Linux's `lru_add_split_folio` puts them).
            let mut anchor = first;
            let mut moved = 0;
            for &p in rest {
                let nr = 1u64 << mm.at(p).order();
                l.add_before(&mm, anchor, p, active, nr);
                mm.at(p).flags.fetch_or(F_LRU | carry, Relaxed);
                anchor = p;
                moved += nr;
            }
            l.lists[active as usize].pages -= moved;
        } else {
            for &p in rest {
                let nr = 1u64 << mm.at(p).order();
                l.add_head(&mm, p, active, nr);
                mm.at(p).flags.fetch_or(F_LRU | carry, Relaxed);
            }
        }
    }

    /// Sizes of the lists (the batches included separately).
    pub fn counts(&self, alloc: &BuddyAllocator<'_>) -> LruCounts {
        let mm = alloc.memmap();
        let _irq = alloc.cpu_hook().irq_guard();
        let mut c = LruCounts::default();
        for slot in &self.batches {
            let b = slot.0.lock();
            for &idx in &b.idx[..b.n] {
                c.batched_folios += 1;
                c.batched_pages += 1 << mm.at(idx).order();
            }
        }
        let l = self.lists.lock();
        c.inactive_pages = l.lists[0].pages;
        c.inactive_folios = l.lists[0].folios;
        c.active_pages = l.lists[1].pages;
        c.active_folios = l.lists[1].folios;
        c
    }

    /// Every folio head on the LRU side, for the invariant checker:
    /// `(head index, where)`, list order newest first, then each batch.
    /// A snapshot under the locks; also checks the lists' own structure
    /// (links both ways, flags, counts) and reports breakage as `Err`.
    pub fn snapshot(
        &self,
        alloc: &BuddyAllocator<'_>,
    ) -> Result<Vec<(u32, LruPlace)>, alloc::string::String> {
        use alloc::format;
        let mm = alloc.memmap();
        let _irq = alloc.cpu_hook().irq_guard();
        let mut out = Vec::new();
        for (cpu, slot) in self.batches.iter().enumerate() {
            let b = slot.0.lock();
            for &idx in &b.idx[..b.n] {
                let w = mm.at(idx).flags.load(Relaxed);
                if w & F_LRU_ANY != F_BATCH {
                    return Err(format!(
                        "pfn {:#x} in cpu {cpu}'s LRU batch without LRU_BATCH alone: {}",
                        mm.pfn_of(idx),
                        mm.dump(mm.pfn_of(idx))
                    ));
                }
                out.push((idx, LruPlace::Batch(cpu)));
            }
        }
        let l = self.lists.lock();
        for active in [false, true] {
            let list = &l.lists[active as usize];
            let (mut folios, mut pages) = (0u64, 0u64);
            let mut prev = NO_FRAME;
            let mut idx = list.head;
            while idx != NO_FRAME {
                let d = mm.at(idx);
                let w = d.flags.load(Relaxed);
                if w & F_LRU_ANY != F_LRU || (w & F_ACTIVE != 0) != active {
                    return Err(format!(
                        "pfn {:#x} on the {} list with flags {:?}",
                        mm.pfn_of(idx),
                        if active { "active" } else { "inactive" },
                        PageFlags::from_bits_truncate(w)
                    ));
                }
                if d.link_prev.load(Relaxed) != prev {
                    return Err(format!("pfn {:#x}: broken LRU back link", mm.pfn_of(idx)));
                }
                folios += 1;
                pages += 1 << order_of(w);
                if folios > mm.len() as u64 {
                    return Err("LRU list loops".into());
                }
                out.push((idx, LruPlace::List { active }));
                prev = idx;
                idx = d.link_next.load(Relaxed);
            }
            if prev != list.tail || folios != list.folios || pages != list.pages {
                return Err(format!(
                    "{} list: tail/count mismatch ({folios} folios, {pages} pages walked; {} / {} counted)",
                    if active { "active" } else { "inactive" },
                    list.folios,
                    list.pages
                ));
            }
        }
        Ok(out)
    }
}

/// Where [`Lru::snapshot`] found a folio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LruPlace {
    List { active: bool },
    Batch(usize),
}
