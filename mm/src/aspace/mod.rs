//! Address spaces: [`Mm`] (a user page table plus its VMAs) with Linux's
//! `mmap` / `munmap` / `mprotect` / `madvise` / fork semantics and the
//! anonymous multi-size THP fault path.
//!
//! * [`ctx`]: [`MmCtx`], what all address spaces share (allocator, zero
//!   pages, identifiers, the deferred-split queue).
//! * `fault`: the fault path — order selection, zero pages, COW.
//! * `zap`, `fork`, `mprotect`, `mremap`: the page-table side of the system
//!   calls.
//! * [`migrate`]: moving a folio to another of the same order through
//!   migration entries (and the batch driver and compaction's hook).
//! * `rmap`: the reverse map — how a folio finds its mappings, clearing
//!   and restoring them all (split, swap-out, migration), and the
//!   references, mapcounts and anon-exclusive bits each mapping carries.
//! * [`report`]: the thpmaps-style report; [`check`]: the invariant checker.
//!
//! # Lock order
//! Outermost first; a lock may only be taken while holding locks above it.
//!
//! 1. **mmap lock** — `Mm::vmas`, a sleeping reader-writer lock
//!    ([`crate::sync::SleepRwLock`]).  Protects the VMA set.  Read for
//!    faults, reports, khugepaged's scan (tried only, as Linux's
//!    `mmap_read_trylock`) and the shrinker; write for every system call
//!    that changes VMAs (mmap, munmap, mprotect, madvise, mremap), for
//!    collapse, and for fork (on the parent; the child is not yet visible
//!    to anyone).  Holders stay preemptible and may sleep.
//! 2. **page-table lock** — `Mm::pt`, a spin lock held with preemption off
//!    ([`crate::sync::PtLock`]) around the `PageTable`.  Protects every
//!    entry of the table, the PMD deposits, and the address space's RSS
//!    counter.  Holding `&mut PageTable` *is* holding it.  Never held
//!    across a sleep, so a spinner waits only for a running holder; the
//!    fault path drops it to allocate and zero a new folio and checks the
//!    range again after retaking it.  fork holds the parent's and then the
//!    child's (the child is private to fork, so no other order can exist).
//!    It is a reader-writer lock for split page-table locking: exclusive
//!    for every change, except two kinds of holders that take it shared:
//!    a write or read first touch filling empty entries of an existing
//!    PTE table (zero page or a new anonymous folio of at most the table's
//!    span), or a write first touch under an empty PMD (a new PMD-size
//!    folio mapped by a PMD leaf, or a new PTE table and a smaller folio
//!    in it); and the zap of munmap and `MADV_DONTNEED` (see `zap.rs` for
//!    its rules); each together with
//!    2b. **split table lock** — one spin lock per PTE table (and, for a
//!    zap removing a PMD leaf, per PMD table), in the table page's frame
//!    descriptor (`Mm::lock_pte_table`, Linux's split PTL in `struct
//!    ptdesc` and its `pmd_lock`), taken only under the shared page-table
//!    lock, one at a time (a fault under an empty PMD takes the PMD
//!    table's lock to fill the PMD, drops it, then takes the new PTE
//!    table's).  Faults of one space on different PTE tables, and a zap of
//!    other tables, so run in parallel.  Under the shared lock a PMD only
//!    goes from empty to a table or leaf (a fault, under the PMD table's
//!    lock) or from a leaf to empty (a zap, under the same lock); tables
//!    are freed only under the exclusive lock, except by munmap's zap,
//!    which frees only tables in ranges with no VMA, that no other shared
//!    holder reaches; so a table a shared holder walked to stays, and a
//!    table's lock word is never in use when its page goes back to the
//!    allocator.
//! 3. **folio lock bit** — `Folio::trylock`, for split and collapse; only
//!    ever try-locked under a page-table lock.  Swap-out and migration
//!    (`migrate`) take it first, holding no page-table lock, and then the
//!    page-table locks of the spaces mapping the folio; nobody sleeps on
//!    it while holding a page-table lock.  A fault on a swap or migration
//!    entry sleeps on it with only the mmap lock held for reading, and
//!    mprotect with the mmap lock held for writing, so a folio-lock holder
//!    must never wait for an mmap lock (migration takes none).  A split holds the
//!    page-table locks of *several* spaces (every one mapping the folio),
//!    taken in ascending mm-id order with no other page-table lock held;
//!    fork, which holds the parent's and the child's, is the only other
//!    holder of two, and its child is invisible to everyone else.  A
//!    collapse holds one space's mmap lock for writing and its page-table
//!    lock.
//! 4. **deferred-split queue lock** — in [`MmCtx`]; protects the queue and
//!    queued folios' links and `PARTIALLY_MAPPED` flags.
//! 5. **LRU locks** (`crate::reclaim::lru`, the node's, reached as
//!    [`MmCtx::lru`]) — a CPU's add-batch lock, then the lists lock
//!    (Linux's `lru_lock`); they protect the batches, the lists, the LRU
//!    links of listed folios and their `LRU`/`LRU_BATCH`/`ACTIVE` flags.
//!    Leaves: nothing is taken under them and no folio reference is
//!    dropped under them.  Taken with interrupts masked, from the fault
//!    path (under a page-table lock), the free path (anywhere a last
//!    reference drops) and split (under the page-table locks).
//! 6. **buddy zone locks** (one per NUMA node, never two held; and the
//!    per-CPU caches) — a leaf; the huge-zero
//!    and identifier locks in `MmCtx` sit just above it, and khugepaged's
//!    registry lock (in `MmCtx`) is a leaf too.
//!
//! The reclaim hook the fault path calls on OOM runs with none of these
//! held (the fault drops its locks first and retries).  The compaction
//! hook (`MmCtx::set_compact_hook`, for a failed THP-order allocation)
//! runs with at most the space's mmap lock held (for reading on a fault,
//! for writing under `MADV_COLLAPSE`), as Linux's direct compaction;
//! compaction itself takes the LRU and zone locks one at a time, never
//! nested.
//!
//! Folio reference counts and mapcounts are atomics, changed under the
//! page-table lock of the address space whose mapping changes.
//!
//! # Consistency of PTEs with VMAs
//! Every present entry inside a VMA has the VMA's rights, except that write
//! is withheld from pages that are not anon-exclusive (COW) and from zero
//! pages, and that NUMA balancing may strip all rights (a hinting entry:
//! a PROT_NONE leaf in an accessible VMA, see `numa.rs`).  PROT_NONE VMAs
//! keep their frames in PROT_NONE leaves.  No entry
//! exists outside VMAs, and no PMD leaf straddles a VMA boundary (boundaries
//! that fall inside one split it first, as Linux's `vma_adjust_trans_huge`).

pub mod check;
mod collapse;
pub mod ctx;
mod fault;
mod fork;
pub mod khugepaged;
pub mod lru;
pub mod mempolicy;
pub mod migrate;
mod mlock;
pub mod move_pages;
mod mprotect;
mod mremap;
pub mod numa;
mod pageout;
pub mod report;
mod reserve;
mod rmap;
mod shmem;
mod shmem_collapse;
mod shmem_swap;
pub mod split;
pub mod swap;
mod swap_readahead;
pub mod vmscan;
mod zap;

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::sync::{
    PtReadGuard, PtRwLock, PtWriteGuard, SleepReadGuard, SleepRwLock, SleepWriteGuard,
};

use crate::abi::errno::Errno;
use crate::abi::uapi::{
    Advice, MAP_FIXED, MAP_FIXED_NOREPLACE, MREMAP_MAYMOVE, MapFlags, MremapFlags, Prot,
};
use crate::addr::PAGE_SIZE;
use crate::cpu::AtomicCpuSet;
use crate::paging::{
    BatchMatch, FolioSpan, Leaf, PMD_LEVEL, PageTable, PagingArch, Perms, PtEnv, PtStats, PteBatch,
    PteRun, Space, Step,
};
use crate::physmem::folio::Folio;
use crate::thp::VmEvent;
use crate::thp::policy::VmaThpHints;
use crate::vma::{Layout, MadviseAction, VmFlags, Vma, VmaSet};

pub use check::check_invariants;
pub use collapse::CollapseError;
pub use ctx::{BuddyPtAlloc, MmCtx};
pub use khugepaged::{PassStats, WithMm, khugepaged_full_scan, khugepaged_scan_pass};
pub use lru::{FolioReferences, ShrinkActive, folio_referenced};
pub use report::{ThpMaps, VmaReport};
pub use shmem_collapse::EachMm;
pub use split::{ShrinkCount, SplitCount, folio_split, split_folio_to_order};

/// `MAP_FIXED` or `MAP_FIXED_NOREPLACE`: an mmap that may replace.
const MAP_FIXED_ANY: MapFlags = MAP_FIXED.union(MAP_FIXED_NOREPLACE);

/// Rounds of reclaim a fault that ran out of memory tries before it
/// gives up (Linux's `MAX_RECLAIM_RETRIES`).
const MAX_RECLAIM_RETRIES: u32 = 16;

/// Kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

/// Why a fault could not be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No VMA at the address, or the VMA does not allow the access: the
    /// process gets SIGSEGV.
    Segv,
    /// Out of memory even for a 4 KiB page or a page-table page: the
    /// process is killed (Linux's `VM_FAULT_OOM`).
    Oom,
    /// The page could not be read back from swap (an I/O error): the
    /// process gets SIGBUS (Linux's `VM_FAULT_SIGBUS`), never wrong data.
    Sigbus,
}

/// The page-table lock's guard.  On release it adds the contiguous-block
/// folds and unfolds done under it to the global `contpte_fold` /
/// `contpte_unfold` counters (the page table counts them per table).
pub(crate) struct PtGuard<'g, 'a, A: PagingArch> {
    guard: PtWriteGuard<'g, Option<PageTable<'a, A>>>,
    ctx: &'a MmCtx<'a>,
    start: PtStats,
}

impl<'a, A: PagingArch> Deref for PtGuard<'_, 'a, A> {
    type Target = PageTable<'a, A>;
    fn deref(&self) -> &PageTable<'a, A> {
        self.guard.as_ref().expect("page table of a live Mm")
    }
}

impl<A: PagingArch> PtGuard<'_, '_, A> {
    /// The space still has its page table (not torn down since a caller
    /// that dropped the lock looked last).
    pub(crate) fn live(&self) -> bool {
        self.guard.is_some()
    }
}

impl<A: PagingArch> DerefMut for PtGuard<'_, '_, A> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.guard.as_mut().expect("page table of a live Mm")
    }
}

impl<A: PagingArch> Drop for PtGuard<'_, '_, A> {
    fn drop(&mut self) {
        if let Some(pt) = self.guard.as_ref() {
            let s = pt.stats();
            let st = &self.ctx.thp.stats;
            st.count_n(VmEvent::ContpteFold, s.folds - self.start.folds);
            st.count_n(VmEvent::ContpteUnfold, s.unfolds - self.start.unfolds);
        }
    }
}

/// A user address space.
pub struct Mm<'a, A: PagingArch> {
    ctx: &'a MmCtx<'a>,
    id: u64,
    asid: u16,
    root: u64,
    /// The mmap lock (level 1 of the lock order).
    vmas: SleepRwLock<VmaSet>,
    /// The page-table lock (level 2).  `None` only after teardown.
    pt: PtRwLock<Option<PageTable<'a, A>>>,
    /// The PTE-table lock (level 2b) of a table outside the memmap; every
    /// user PTE table has its own in its frame descriptor (module doc).
    ptl_fallback: core::sync::atomic::AtomicI32,
    /// Zaps in flight under the shared page-table lock (Linux's
    /// `tlb_flush_pending`; see `zap.rs`).
    zaps_shared: core::sync::atomic::AtomicU32,
    /// Anonymous pages mapped (Linux's `MM_ANONPAGES`); changed under the
    /// page-table lock.
    anon_rss: AtomicU64,
    /// Shmem pages mapped (Linux's `MM_SHMEMPAGES`); changed under the
    /// page-table lock.
    shmem_rss: AtomicU64,
    /// The shmem objects this space's VMAs map, by id (see `shmem.rs`).
    /// A leaf lock: taken under the mmap lock, nothing taken under it;
    /// preemption off while held (reclaim's `object_of` takes it without
    /// the mmap lock, see `sync::SpinLock`).
    shmem: crate::sync::SpinLock<
        alloc::collections::BTreeMap<u64, alloc::sync::Arc<crate::shmem::Shmem<'a>>>,
    >,
    /// Swap entries in the page tables (Linux's `MM_SWAPENTS`); changed
    /// under the page-table lock.  Zero lets zap skip looking for them.
    swapents: AtomicU64,
    /// Migration entries in this space's page tables (not in `swapents`:
    /// they still count in RSS as mappings of the page they name).
    migents: AtomicU64,
    /// Faults `handle_fault` resolved in this space: the owning process's
    /// `ru_minflt` (one space per process), counted here so the fault
    /// path needs no lookup of the process.
    faults: AtomicU64,
    /// Of those, the major ones: faults that read from the swap device
    /// (the process's `ru_majflt`; Linux counts a fault in one of
    /// `min_flt` / `maj_flt`, so `ru_minflt` is `faults - majfaults`).
    majfaults: AtomicU64,
    /// Swap readahead's state: the last swap fault's page, window and
    /// readahead hits (`swap_readahead.rs`; Linux's per-VMA
    /// `swap_readahead_info`).
    swap_ra: AtomicU64,
    /// Registered for khugepaged (set by `MADV_HUGEPAGE` and by faults in
    /// THP-eligible VMAs; the id is then on the context's khugepaged list,
    /// see `khugepaged.rs`).
    khugepaged: AtomicBool,
    /// No THP of any size anywhere in this space (Linux's `MMF_DISABLE_THP`,
    /// set by `prctl(PR_SET_THP_DISABLE)`): faults take order 0,
    /// khugepaged skips the space, `MADV_COLLAPSE` fails with EINVAL and
    /// smaps says `THPeligible: 0`.  Inherited by fork.
    thp_disabled: AtomicBool,
    /// Where the NUMA-balancing scanner resumes (Linux's
    /// `mm->numa_scan_offset`); see `numa.rs`.
    numa_scan_offset: AtomicU64,
    /// The task memory policy (`set_mempolicy`), packed
    /// (`Mempolicy::pack`; 0 = default) so the fault path reads it with
    /// one load.  One per address space: Linux keeps it per thread.
    task_policy: AtomicU64,
}

/// The rights a PTE gets in a VMA with `flags` (write still withheld from
/// shared and zero pages by the callers).
pub(crate) fn vma_perms(flags: VmFlags) -> Perms {
    if !flags.intersects(VmFlags::ACCESS) {
        return Perms {
            user: true,
            ..Perms::NONE
        };
    }
    Perms {
        read: true,
        write: flags.contains(VmFlags::WRITE),
        exec: flags.contains(VmFlags::EXEC),
        user: true,
    }
}

/// Whether a VMA with `flags` allows `access` (Linux's `access_error`: any
/// right allows a read).
pub(crate) fn access_allowed(flags: VmFlags, access: Access) -> bool {
    match access {
        Access::Read => flags.intersects(VmFlags::ACCESS),
        Access::Write => flags.contains(VmFlags::WRITE),
        Access::Exec => flags.contains(VmFlags::EXEC),
    }
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// An empty address space with the default layout.
    pub fn new(ctx: &'a MmCtx<'a>) -> Result<Self, Errno> {
        Self::with_layout(ctx, Layout::DEFAULT)
    }

    /// An empty address space with `layout`.  EAGAIN when ASIDs or mm ids
    /// run out, ENOMEM without a page for the root table.
    pub fn with_layout(ctx: &'a MmCtx<'a>, layout: Layout) -> Result<Self, Errno> {
        let (asid, id) = ctx.alloc_ids().ok_or(Errno::EAGAIN)?;
        let env = PtEnv {
            mem: ctx.mem,
            alloc: ctx.pt_alloc(),
            tlb: ctx.tlb,
        };
        let pt = match PageTable::<A>::new(env, Space::User { asid }) {
            Ok(pt) => pt.with_cpus(ctx.cpus_of(asid)),
            Err(_) => {
                ctx.free_ids(asid, id);
                return Err(Errno::ENOMEM);
            }
        };
        Ok(Mm {
            ctx,
            id,
            asid,
            root: pt.root(),
            vmas: SleepRwLock::new(VmaSet::new(layout)),
            pt: PtRwLock::new(Some(pt)),
            ptl_fallback: core::sync::atomic::AtomicI32::new(0),
            zaps_shared: core::sync::atomic::AtomicU32::new(0),
            anon_rss: AtomicU64::new(0),
            shmem_rss: AtomicU64::new(0),
            shmem: crate::sync::SpinLock::new(alloc::collections::BTreeMap::new()),
            swapents: AtomicU64::new(0),
            migents: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            majfaults: AtomicU64::new(0),
            swap_ra: AtomicU64::new(0),
            khugepaged: AtomicBool::new(false),
            thp_disabled: AtomicBool::new(false),
            numa_scan_offset: AtomicU64::new(0),
            task_policy: AtomicU64::new(0),
        })
    }

    /// The context.
    pub fn ctx(&self) -> &'a MmCtx<'a> {
        self.ctx
    }

    /// The mm id (the rmap owner's address-space part).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The space's stable id for TLB tagging, unique among live spaces
    /// for its whole life: the x86 PCID itself; on arm64 the key under
    /// which the arch's generation allocator keeps the hardware ASID
    /// (which may change at a rollover).  Also indexes the CPU set
    /// ([`MmCtx::cpus_of`]).
    pub fn asid(&self) -> u16 {
        self.asid
    }

    /// The CPUs that may hold TLB entries of this space: the scheduler
    /// adds a CPU before it loads the root there, and every flush of the
    /// space targets this set.
    pub fn cpus(&self) -> &'a AtomicCpuSet {
        self.ctx.cpus_of(self.asid)
    }

    /// The TLB space.
    pub fn space(&self) -> Space {
        Space::User { asid: self.asid }
    }

    /// Physical address of the root table (for TTBR0 / CR3).
    pub fn root_pa(&self) -> u64 {
        self.root
    }

    /// Link the kernel half of `kernel_root` into this space's root through
    /// the page-table engine ([`crate::paging::PageTable::link_kernel_half`]):
    /// on x86, where one CR3 covers both halves, before the space is first
    /// loaded.  Returns how many root entries were linked.
    pub fn link_kernel_half(&self, kernel_root: u64) -> usize {
        self.lock_pt().link_kernel_half(kernel_root)
    }

    /// Anonymous pages mapped.
    pub fn anon_rss(&self) -> u64 {
        self.anon_rss.load(Relaxed)
    }

    /// Faults resolved by [`Self::handle_fault`] so far.
    pub fn faults_resolved(&self) -> u64 {
        self.faults.load(Relaxed)
    }

    /// Of [`Self::faults_resolved`], those that read from the swap device
    /// (`ru_majflt`).
    pub fn faults_major(&self) -> u64 {
        self.majfaults.load(Relaxed)
    }

    /// Whether the space is registered for khugepaged.
    pub fn khugepaged_registered(&self) -> bool {
        self.khugepaged.load(Relaxed)
    }

    /// The VMA set under the read lock.
    pub fn vmas(&self) -> SleepReadGuard<'_, VmaSet> {
        self.mmap_read()
    }

    /// The mmap lock for reading (sleeps while a writer holds it).
    pub(crate) fn mmap_read(&self) -> SleepReadGuard<'_, VmaSet> {
        self.vmas.read(self.ctx.ops())
    }

    /// The mmap lock for writing (sleeps while anyone holds it).
    pub(crate) fn mmap_write(&self) -> SleepWriteGuard<'_, VmaSet> {
        self.vmas.write(self.ctx.ops())
    }

    /// The mmap lock for reading if no writer holds it (khugepaged's scan,
    /// as Linux's `mmap_read_trylock`).
    pub(crate) fn mmap_try_read(&self) -> Option<SleepReadGuard<'_, VmaSet>> {
        self.vmas.try_read(self.ctx.ops())
    }

    /// Holds the mmap lock for writing while `f` runs: for tests that
    /// need a writer in the way (a fault must then sleep, not spin).
    pub fn with_mmap_write_locked<R>(&self, f: impl FnOnce() -> R) -> R {
        let _w = self.mmap_write();
        f()
    }

    /// Threads sleeping on the mmap lock now (for tests).
    pub fn mmap_lock_sleepers(&self) -> u32 {
        self.vmas.sleepers()
    }

    /// Run `f` on the page table under the page-table lock (inspection).
    pub fn with_page_table<R>(&self, f: impl FnOnce(&PageTable<'a, A>) -> R) -> R {
        f(&self.lock_pt())
    }

    /// The page-table lock, exclusive (spins with preemption off; see
    /// [`crate::sync::PtRwLock`]).
    pub(crate) fn lock_pt(&self) -> PtGuard<'_, 'a, A> {
        let guard = self.pt.write(self.ctx.ops());
        let start = guard.as_ref().map(|pt| pt.stats()).unwrap_or_default();
        PtGuard {
            guard,
            ctx: self.ctx,
            start,
        }
    }

    /// The page-table lock, shared: only for filling empty entries of an
    /// existing PTE table, with that table's lock ([`Self::lock_pte_table`])
    /// held too.
    pub(crate) fn lock_pt_shared(&self) -> PtReadGuard<'_, Option<PageTable<'a, A>>> {
        self.pt.read(self.ctx.ops())
    }

    /// The lock of the PTE table at physical address `table`: a word in
    /// the table page's frame descriptor (see [`crate::sync::lock_word`]);
    /// a table outside the memmap (none in user space) falls back to one
    /// per-space lock.  Taken only with the page-table lock held (shared),
    /// so preemption is off already.
    pub(crate) fn lock_pte_table(&self, table: u64) -> crate::sync::WordLockGuard<'_> {
        let word = match self
            .ctx
            .buddy
            .memmap()
            .desc(table >> crate::addr::PAGE_SHIFT)
        {
            Some(d) => &d.entire_mapcount,
            None => &self.ptl_fallback,
        };
        crate::sync::lock_word_nested(word, self.ctx.ops())
    }

    pub(crate) fn rss_add(&self, n: u64) {
        self.anon_rss.fetch_add(n, Relaxed);
    }

    /// Swap entries in this space's page tables (`VmSwap`, smaps `Swap`).
    pub fn swapents(&self) -> u64 {
        self.swapents.load(Relaxed)
    }

    pub(crate) fn swapents_add(&self, n: u64) {
        self.swapents.fetch_add(n, Relaxed);
    }

    pub(crate) fn swapents_sub(&self, n: u64) {
        let old = self.swapents.fetch_sub(n, Relaxed);
        debug_assert!(old >= n, "swap entries below zero");
    }

    /// Migration entries in this space's page tables.
    pub fn migents(&self) -> u64 {
        self.migents.load(Relaxed)
    }

    pub(crate) fn migents_add(&self, n: u64) {
        self.migents.fetch_add(n, Relaxed);
    }

    pub(crate) fn migents_sub(&self, n: u64) {
        let old = self.migents.fetch_sub(n, Relaxed);
        debug_assert!(old >= n, "migration entries below zero");
    }

    /// Swap or migration entries may be present: the non-present entries
    /// zap, fork and mremap must look for.
    pub(crate) fn has_nonpresent(&self) -> bool {
        self.swapents() > 0 || self.migents() > 0
    }

    pub(crate) fn rss_sub(&self, n: u64) {
        let old = self.anon_rss.fetch_sub(n, Relaxed);
        debug_assert!(old >= n, "anon RSS below zero");
    }

    /// Shmem pages mapped (`RssShmem`).
    pub fn shmem_rss(&self) -> u64 {
        self.shmem_rss.load(Relaxed)
    }

    pub(crate) fn shmem_rss_add(&self, n: u64) {
        self.shmem_rss.fetch_add(n, Relaxed);
    }

    /// `n` pages of `f` were unmapped: the RSS counter of its kind.
    pub(crate) fn rss_sub_folio(&self, f: Folio<'a>, n: u64) {
        if f.is_shmem() {
            let old = self.shmem_rss.fetch_sub(n, Relaxed);
            debug_assert!(old >= n, "shmem RSS below zero");
        } else {
            self.rss_sub(n);
        }
    }

    /// The folio a PTE batch starting at frame `pfn` belongs to, and the
    /// frames the batch may run over ([`PteRun::folio_pte_batch`]'s span):
    /// the folio's, or `pfn` alone for the zero page (not a folio) and for
    /// a frame outside every folio.  With `huge_zero`, a frame of the huge
    /// zero page spans all of its 512 frames (the PTEs a split huge zero
    /// PMD leaves, which fork copies as one run).
    fn pte_span(&self, pfn: u64, huge_zero: bool) -> (Option<Folio<'a>>, FolioSpan) {
        let ctx = self.ctx;
        let one = FolioSpan {
            first_pfn: pfn,
            nr: 1,
        };
        if !ctx.is_zero_pfn(pfn) {
            let f = ctx.folio(pfn);
            let span = f.map_or(one, |f| FolioSpan {
                first_pfn: f.pfn(),
                nr: f.nr_pages(),
            });
            return (f, span);
        }
        match ctx.huge_zero_pfn() {
            Some(h) if huge_zero && (h..h + 512).contains(&pfn) => (
                None,
                FolioSpan {
                    first_pfn: h,
                    nr: 512,
                },
            ),
            _ => (None, one),
        }
    }

    /// The folio-run loop of every PTE walker (zap, fork, mprotect,
    /// mremap): for each batch of `run` under `m` (entries that are no leaf
    /// are skipped), `f(i, batch, folio)` with the batch's first entry
    /// index and its folio (`None` for the zero page).  `f` returns how
    /// many of the batch's entries it handled (1 to `batch.nr`: mprotect
    /// stops where anon-exclusive changes); the next batch starts after
    /// them.  `huge_zero` as for [`Self::pte_span`].
    pub(crate) fn for_each_pte_batch(
        &self,
        run: &PteRun<'a, A>,
        m: BatchMatch,
        huge_zero: bool,
        mut f: impl FnMut(usize, PteBatch, Option<Folio<'a>>) -> usize,
    ) {
        let mut i = 0;
        while i < run.len() {
            let Some(l) = run.leaf(i) else {
                i += 1;
                continue;
            };
            let (folio, span) = self.pte_span(l.pfn, huge_zero);
            let b = run.folio_pte_batch(i, span, m).expect("entry i is a leaf");
            let done = f(i, b, folio);
            debug_assert!((1..=b.nr).contains(&done));
            i += done.max(1);
        }
    }

    /// The parts of `[addr, addr + len)` (rounded as munmap does) in
    /// locked VMAs: their folios are munlocked before an unmap.
    fn locked_in(
        &self,
        vmas: &VmaSet,
        addr: u64,
        len: u64,
    ) -> alloc::vec::Vec<core::ops::Range<u64>> {
        let end = addr.saturating_add(crate::addr::align_up(len, PAGE_SIZE).unwrap_or(u64::MAX));
        vmas.find_intersecting(addr & !(PAGE_SIZE - 1), end)
            .filter(|v| v.flags.contains(VmFlags::LOCKED))
            .map(|v| v.start.max(addr)..v.end.min(end))
            .collect()
    }

    pub(crate) fn register_khugepaged(&self) {
        if !self.khugepaged.swap(true, Relaxed) {
            self.ctx.khugepaged_enter(self.id);
        }
    }

    // ----- system calls -------------------------------------------------

    /// `mmap(addr, len, prot, flags, -1, 0)` for anonymous private memory.
    /// `MAP_FIXED` zaps what it replaces; `MAP_POPULATE` faults the whole
    /// range in (writable if the mapping is, as Linux), ignoring failures.
    pub fn mmap(&self, addr: u64, len: u64, prot: Prot, flags: MapFlags) -> Result<u64, Errno> {
        let ty = flags & crate::abi::uapi::MAP_TYPE;
        if flags.contains(crate::abi::uapi::MAP_ANONYMOUS)
            && (ty == crate::abi::uapi::MAP_SHARED || ty == crate::abi::uapi::MAP_SHARED_VALIDATE)
        {
            // Linux's `shmem_zero_setup`: a new object the mapping's size.
            let size = len.checked_next_multiple_of(PAGE_SIZE).unwrap_or(0);
            let obj = crate::shmem::Shmem::with_gauges(size, 0, Some(&self.ctx.thp.shmem));
            return self.mmap_shmem(addr, len, prot, flags, alloc::sync::Arc::new(obj), 0, true);
        }
        let mut vmas = self.mmap_write();
        let locked = MAP_FIXED_ANY
            .intersects(flags)
            .then(|| self.locked_in(&vmas, addr, len));
        let out = vmas.mmap(addr, len, prot, flags, -1, 0)?;
        let mut pt = self.lock_pt();
        for r in locked.iter().flatten() {
            self.mlock_walk(&mut pt, r.clone(), false);
        }
        for r in &out.unmapped {
            self.zap_range(&mut pt, r.start, r.end, true);
        }
        if out.populate {
            drop(pt);
            self.populate(&vmas, out.addr, out.addr + out.len, None);
        }
        Ok(out.addr)
    }

    /// `munmap(addr, len)`.
    ///
    /// The VMAs go with the mmap lock held for writing; the page tables are
    /// then zapped with it downgraded to reading (Linux's
    /// `do_vmi_align_munmap`), so other threads' faults elsewhere in the
    /// space proceed meanwhile.  The range has no VMA any more, so nothing
    /// can fault into it, and only tables wholly inside it or its gap are
    /// freed, which no other VMA's fault reaches.
    pub fn munmap(&self, addr: u64, len: u64) -> Result<(), Errno> {
        let mut vmas = self.mmap_write();
        let locked = self.locked_in(&vmas, addr, len);
        let ranges = vmas.munmap(addr, len)?;
        let vmas = vmas.downgrade();
        if !locked.is_empty() {
            let mut pt = self.lock_pt();
            for r in locked {
                self.mlock_walk(&mut pt, r, false);
            }
        }
        // One gather for the whole call (Linux's `unmap_region`): the
        // leaves, the tables they empty and the gap tables below cost one
        // flush, so one shootdown round, and every table page and folio is
        // freed only after it completed on every CPU.  Like Linux's
        // free_pgtables, the tables the whole unmapped gap around each
        // range leaves empty go too, so a later PMD fault there is not
        // blocked by an empty leftover PTE table (after every range is
        // zapped: a gap may span several of them).  The page-table lock is
        // held shared (`zap.rs`), so other threads' faults proceed.
        let gaps: alloc::vec::Vec<core::ops::Range<u64>> = ranges
            .iter()
            .map(|r| {
                let (floor, ceiling) = vmas.gap_around(r.start, r.end);
                floor..ceiling.min(1 << 47)
            })
            .collect();
        self.zap_shared(&ranges, &gaps, true);
        self.shmem_prune(&vmas);
        Ok(())
    }

    /// `mprotect(addr, len, prot)`: changed ranges get their entries
    /// rewritten (contiguous blocks straddling a boundary unfold, PMDs
    /// straddling one split); a hole later in the range still reports
    /// ENOMEM after the earlier part changed, as Linux.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> Result<(), Errno> {
        let mut vmas = self.mmap_write();
        // Locked VMAs not writable yet: made writable, they are populated
        // at once (Linux's mprotect_fixup: the COW happens now, not at a
        // fault later), and the new folios are mlocked.
        let ro_locked: alloc::vec::Vec<(u64, u64)> = vmas
            .find_intersecting(addr, addr.saturating_add(len))
            .filter(|v| v.flags & (VmFlags::WRITE | VmFlags::LOCKED) == VmFlags::LOCKED)
            .map(|v| (v.start, v.end))
            .collect();
        self.wait_migration_entries(&vmas, addr, addr.saturating_add(len));
        let out = vmas.mprotect(addr, len, prot);
        let mut pt = self.lock_pt();
        for (r, flags) in &out.changed {
            self.change_protection(&mut pt, r.start, r.end, *flags);
        }
        drop(pt);
        for (r, flags) in &out.changed {
            if !flags.contains(VmFlags::WRITE) || flags.contains(VmFlags::LOCKONFAULT) {
                continue;
            }
            for &(s, e) in &ro_locked {
                let (s, e) = (s.max(r.start), e.min(r.end));
                if s < e {
                    self.populate(&vmas, s, e, Some(Access::Write));
                }
            }
        }
        out.result
    }

    /// `madvise(addr, len, advice)`.  `MADV_DONTNEED` zaps; `MADV_FREE`
    /// makes folios lazyfree (`pageout.rs`); `MADV_COLD`/`MADV_PAGEOUT`
    /// deactivate or write out (`pageout.rs`); `MADV_HUGEPAGE` registers the
    /// space for khugepaged; `MADV_POPULATE_*` fault in (EFAULT if a fault
    /// fails); `MADV_COLLAPSE` is not implemented yet (EINVAL).  VMA splits
    /// caused by flag changes split the PMD mappings they cut.
    pub fn madvise(&self, addr: u64, len: u64, advice: Advice) -> Result<(), Errno> {
        self.madvise_each(addr, len, advice, None)
    }

    /// [`Self::madvise`] with a way to reach every address space:
    /// `MADV_COLLAPSE` of a shmem range unmaps it from each of them
    /// (`shmem_collapse.rs`), after dropping this space's mmap lock.
    pub fn madvise_each(
        &self,
        addr: u64,
        len: u64,
        advice: Advice,
        each_mm: Option<&mut EachMm<'_, 'a, A>>,
    ) -> Result<(), Errno> {
        // Advice that changes no VMA needs the mmap lock for reading only
        // (as Linux): a thread's `MADV_DONTNEED` does not stop the faults
        // of the others (its zap takes the page-table lock shared, with
        // each table's split lock: `zap.rs`).
        {
            let vmas = self.mmap_read();
            if let Some(out) = vmas.madvise_shared(addr, len, advice) {
                return self.madvise_act(&vmas, out);
            }
        }
        let mut vmas = self.mmap_write();
        let out = vmas.madvise(addr, len, advice);
        if out.action == MadviseAction::Collapse && out.result.is_ok() && !self.thp_disabled() {
            let (anon, files) = self.split_collapse_ranges(&vmas, &out.ranges)?;
            if !files.is_empty() {
                let (n, last) = self.collapse_windows_locked(&vmas, &anon, crate::addr::PMD_ORDER);
                drop(vmas);
                let (m, file_last) = self.collapse_file_windows(files, each_mm);
                return collapse::collapse_result(n + m, file_last.or(last));
            }
        }
        self.madvise_act(&vmas, out)
    }

    /// The page-table side of `madvise`, under the mmap lock (for writing
    /// unless the advice is one of [`VmaSet::madvise_shared`]'s).
    fn madvise_act(&self, vmas: &VmaSet, out: crate::vma::MadviseOutcome) -> Result<(), Errno> {
        if out.action == MadviseAction::Zap
            && !out.ranges.iter().any(|r| {
                vmas.find_intersecting(r.start, r.end)
                    .any(|v| v.flags.contains(VmFlags::LOCKED))
            })
        {
            // The common `MADV_DONTNEED`: under the page-table lock shared
            // (`zap.rs`), so the other threads' faults go on.  A locked VMA
            // (`MADV_DONTNEED_LOCKED`) takes the exclusive path below, its
            // folios munlocked and unmapped under one hold.
            self.zap_shared(&out.ranges, &[], false);
            return out.result;
        }
        let mut pt = self.lock_pt();
        match out.action {
            MadviseAction::Flags | MadviseAction::Hugepage => {
                for r in &out.ranges {
                    self.split_pmd_at_boundary(vmas, &mut pt, r.start);
                    self.split_pmd_at_boundary(vmas, &mut pt, r.end);
                }
                if out.action == MadviseAction::Hugepage && !out.ranges.is_empty() {
                    self.register_khugepaged();
                }
            }
            MadviseAction::Zap => {
                for r in &out.ranges {
                    // `MADV_DONTNEED_LOCKED` in a locked VMA.
                    self.munlock_before_zap(vmas, &mut pt, r.start, r.end);
                    self.zap_range(&mut pt, r.start, r.end, false);
                }
            }
            MadviseAction::Free => {
                drop(pt);
                // Linux's `madvise_free_single_vma`: anonymous VMAs only.
                if out
                    .ranges
                    .iter()
                    .any(|r| vmas.find_intersecting(r.start, r.end).any(|v| v.is_shmem()))
                {
                    return Err(Errno::EINVAL);
                }
                self.madvise_reclaim(&out.ranges, pageout::Reclaim::Free);
            }
            MadviseAction::PopulateRead | MadviseAction::PopulateWrite => {
                let acc = if out.action == MadviseAction::PopulateWrite {
                    Access::Write
                } else {
                    Access::Read
                };
                drop(pt);
                for r in &out.ranges {
                    if !self.populate(vmas, r.start, r.end, Some(acc)) {
                        return Err(Errno::EFAULT);
                    }
                }
            }
            MadviseAction::Collapse => {
                // Synchronous, PMD order, no knobs or limits (Linux's
                // `madvise_collapse`), under the mmap lock held for writing
                // (Linux drops and retakes it around the allocation; a spin
                // lock is simply kept).
                drop(pt);
                if self.thp_disabled() && !out.ranges.is_empty() {
                    // As `VM_NOHUGEPAGE` on the first VMA visited.
                    return Err(Errno::EINVAL);
                }
                if out.result.is_ok() {
                    return self.collapse_ranges_locked(vmas, &out.ranges, crate::addr::PMD_ORDER);
                }
            }
            MadviseAction::Cold | MadviseAction::Pageout => {
                drop(pt);
                let advice = if out.action == MadviseAction::Pageout {
                    pageout::Reclaim::Pageout
                } else {
                    pageout::Reclaim::Cold
                };
                self.madvise_reclaim(&out.ranges, advice);
            }
            // The punch itself is the caller's (`Self::madvise_remove_ranges`):
            // it reaches every space mapping the object.
            MadviseAction::WillNeed | MadviseAction::Remove => {}
        }
        out.result
    }

    /// `mremap(old_addr, old_len, new_len, flags, new_addr)` for anonymous
    /// private memory, with Linux's rules (`MREMAP_MAYMOVE`, `MREMAP_FIXED`,
    /// `MREMAP_DONTUNMAP`; the checks and the VMA changes are
    /// [`VmaSet::mremap`]'s).  Shrinking zaps the tail, growing in place
    /// needs nothing (faults fill it), moving moves the page-table entries
    /// (see `mremap.rs`).  If the destination's page tables cannot be
    /// allocated nothing moves: ENOMEM, with the source mapping restored
    /// and whatever the plan unmapped (a `MREMAP_FIXED` target, a shrunk
    /// tail) left unmapped, as Linux.
    pub fn mremap(
        &self,
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        flags: MremapFlags,
        new_addr: u64,
    ) -> Result<u64, Errno> {
        let mut vmas = self.mmap_write();
        let saved = flags.contains(MREMAP_MAYMOVE).then(|| vmas.clone());
        // Locked ranges before the call: what it unmaps there is munlocked.
        let locked: alloc::vec::Vec<(u64, u64)> = vmas
            .iter()
            .filter(|v| v.flags.contains(VmFlags::LOCKED))
            .map(|v| (v.start, v.end))
            .collect();
        let plan = vmas.mremap(old_addr, old_len, new_len, flags, new_addr)?;
        let mut pt = self.lock_pt();
        for u in &plan.unmapped {
            for &(s, e) in &locked {
                let (s, e) = (s.max(u.start), e.min(u.end));
                if s < e {
                    self.mlock_walk(&mut pt, s..e, false);
                }
            }
        }
        // A moved shared shmem VMA: its old entries are zapped, not moved;
        // the new range faults the same folios in from the cache.  A
        // private one moves its entries (its private copies exist only
        // there), the read-only file pages with them.
        let shmem_move = plan.moved.as_ref().filter(|_| {
            vmas.find(plan.new_addr)
                .is_some_and(|v| v.is_shmem() && v.flags.contains(VmFlags::SHARED))
        });
        let r = match shmem_move {
            Some(m) => {
                let r = self.mremap_tables(&mut pt, &plan.unmapped, None);
                if !flags.contains(crate::abi::uapi::MREMAP_DONTUNMAP) {
                    self.zap_range(&mut pt, m.from, m.from + m.len, true);
                }
                r
            }
            None => self.mremap_tables(&mut pt, &plan.unmapped, plan.moved.as_ref()),
        };
        if let Err(e) = r {
            let mut old = saved.expect("only a move can fail");
            for u in &plan.unmapped {
                let gone = old.munmap(u.start, u.end - u.start);
                debug_assert!(gone.is_ok(), "{gone:?}");
            }
            *vmas = old;
            return Err(e);
        }
        // A locked mapping that grew has its new part populated (Linux's
        // mremap: `mm_populate` when `VM_LOCKED`, unless on-fault).
        let grown = plan.new_addr + old_len.min(new_len)..plan.new_addr + new_len;
        let lock = vmas.find(plan.new_addr).map(|v| v.flags);
        drop(pt);
        if new_len > old_len
            && lock
                .is_some_and(|f| f.contains(VmFlags::LOCKED) && !f.contains(VmFlags::LOCKONFAULT))
        {
            self.populate(&vmas, grown.start, grown.end, None);
        }
        self.shmem_prune(&vmas);
        Ok(plan.new_addr)
    }

    /// Resolve a user fault at `addr`.  `Err(Segv)` for no VMA or an access
    /// the VMA forbids; `Err(Oom)` when not even a 4 KiB page is left.
    /// Spurious faults (another CPU resolved it, a stale TLB entry) return
    /// `Ok` after fixing nothing.
    ///
    /// Memory pressure: if the fault runs out of memory, the context's
    /// reclaim hook (or, without one, the deferred-split shrinker over this
    /// space) runs with no lock held and the fault is retried after each
    /// round that freed something, until `MAX_RECLAIM_RETRIES` rounds in
    /// a row free nothing.
    pub fn handle_fault(&self, addr: u64, access: Access) -> Result<(), Fault> {
        // Reclaim and retry until `MAX_RECLAIM_RETRIES` rounds in a row
        // free nothing (Linux's `should_reclaim_retry`): one round may
        // only age the lists (young pages are kept once).  One call site
        // of `fault_once`, so it is inlined here.
        let (mut rounds, mut no_progress) = (0, 0);
        let r = 'fault: loop {
            let r = self.fault_once(addr, access);
            if r != Err(Fault::Oom) {
                break r;
            }
            loop {
                if no_progress >= MAX_RECLAIM_RETRIES || rounds >= 4 * MAX_RECLAIM_RETRIES {
                    break 'fault r;
                }
                let freed = match self.ctx.reclaim_hook() {
                    Some(hook) => hook(),
                    None => {
                        let c = self.ctx.deferred_split_scan(&[self], 64);
                        c.split + c.underused
                    }
                };
                rounds += 1;
                if freed != 0 {
                    no_progress = 0;
                    continue 'fault;
                }
                // A round may only age the lists; without a hook there is
                // nothing more to try.
                no_progress += 1;
                if self.ctx.reclaim_hook().is_none() {
                    break 'fault r;
                }
            }
        };
        if r.is_ok() {
            self.faults.fetch_add(1, Relaxed);
        }
        r
    }

    /// One attempt under the mmap lock (read; sleeps while a writer holds
    /// it).  A large anonymous folio is zeroed with the lock dropped, then
    /// the fault runs again with it ([`fault::Prep`]), so another thread's
    /// `mmap` or `munmap` does not wait out the zeroing.
    fn fault_once(&self, addr: u64, access: Access) -> Result<(), Fault> {
        let mut prep = fault::Prep::unlocking();
        loop {
            let vmas = self.mmap_read();
            let r = self.fault_vmas_prep(&vmas, addr, access, &mut prep);
            drop(vmas);
            match prep.pending.take() {
                Some(p) if r.is_ok() => {
                    self.zero_folio(*p.folio, p.base, addr);
                    prep.zeroed(p);
                }
                _ => return r,
            }
        }
    }

    /// Fault in `[start, end)` (page by page, skipping what is mapped
    /// with enough rights).  `access` `None`: write if the VMA is writable
    /// else read, skipping inaccessible VMAs (`MAP_POPULATE`).  Returns
    /// false if a fault failed.
    ///
    /// The page-table lock is taken per page (by the fault), so a long
    /// populate stays preemptible between pages.
    fn populate(&self, vmas: &VmaSet, start: u64, end: u64, access: Option<Access>) -> bool {
        let mut va = start;
        while va < end {
            let Some(v) = vmas.find(va) else {
                return false;
            };
            let acc = match access {
                Some(a) => a,
                None if v.flags.contains(VmFlags::WRITE) => Access::Write,
                None if v.flags.intersects(VmFlags::ACCESS) => Access::Read,
                None => {
                    va = v.end;
                    continue;
                }
            };
            let mapped = |va| {
                let w = self.lock_pt().lookup(va);
                let done = w.entry.leaf().is_some_and(|l| {
                    let p = l.attrs.perms;
                    p.accessible() && (acc != Access::Write || (p.write && l.attrs.dirty))
                });
                (done, w)
            };
            if !mapped(va).0 && self.fault_vmas(vmas, va, acc).is_err() {
                return false;
            }
            let (_, w) = mapped(va);
            let step = if w.entry.leaf().is_some() {
                crate::paging::level_size(w.level)
            } else {
                PAGE_SIZE
            };
            va = (va & !(step - 1)) + step;
        }
        true
    }

    /// Duplicate this address space copy-on-write (fork).
    pub fn fork(&self) -> Result<Mm<'a, A>, Errno> {
        let vmas = self.mmap_write();
        let child = Mm::with_layout(self.ctx, *vmas.layout())?;
        self.copy_into(&vmas, &child)?;
        // Locks are not inherited (Linux's dup_mmap clears VM_LOCKED_MASK).
        child.mmap_write().clear_mlock_for_fork();
        // Linux's `khugepaged_fork`: the child inherits the registration.
        if self.khugepaged_registered() {
            child.register_khugepaged();
        }
        child.set_thp_disabled(self.thp_disabled());
        child.set_task_policy(self.task_policy());
        // The child maps the same shmem objects (never copies).
        *child.shmem.lock() = self.shmem.lock().clone();
        child.shmem_prune(&child.mmap_read());
        Ok(child)
    }

    /// `prctl(PR_SET_THP_DISABLE)`: switch THP off (or back on) for the
    /// whole space.  Folios already mapped stay as they are, as in Linux.
    pub fn set_thp_disabled(&self, off: bool) {
        self.thp_disabled.store(off, Relaxed);
    }

    /// `prctl(PR_GET_THP_DISABLE)`.
    pub fn thp_disabled(&self) -> bool {
        self.thp_disabled.load(Relaxed)
    }

    /// The THP hints of `v` in this space: the VMA's own, with
    /// `nohugepage` forced when THP is disabled for the space (Linux's
    /// `vma_thp_disabled`).
    pub(crate) fn thp_hints(&self, v: &Vma) -> VmaThpHints {
        let mut h = v.thp_hints();
        h.nohugepage |= self.thp_disabled();
        h
    }

    /// The thpmaps-style report of every VMA.
    pub fn thpmaps(&self) -> ThpMaps {
        let vmas = self.mmap_read();
        let pt = self.lock_pt();
        self.report(&vmas, &pt)
    }

    /// Unmap everything, for a process exit that finds the space still
    /// referenced by someone else (khugepaged mid-pass, a debugfs or
    /// invariant-checker walk): as Linux's `exit_mmap` runs when the last
    /// *user* of an mm goes, whatever `mm_count` holders remain, the memory
    /// comes back now and those holders find no VMAs; the tables, the ASID
    /// and the mm id go with the last reference (`Drop`).
    pub fn exit_mmap(&self) {
        let mut vmas = self.mmap_write();
        let all: alloc::vec::Vec<(u64, u64)> = vmas.iter().map(|v| (v.start, v.end)).collect();
        let mut pt = self.lock_pt();
        for (s, e) in all {
            self.munlock_before_zap(&vmas, &mut pt, s, e);
            if let Ok(ranges) = vmas.munmap(s, e - s) {
                for r in &ranges {
                    self.zap_range(&mut pt, r.start, r.end, true);
                }
            }
        }
        drop(pt);
        self.shmem_prune(&vmas);
    }

    /// Tear the address space down (also done by `Drop`): zap every VMA,
    /// free all tables and deposits, return the ASID and mm id.  The caller
    /// must have switched every CPU away from this root.
    pub fn destroy(self) {
        drop(self)
    }
}

impl<A: PagingArch> Drop for Mm<'_, A> {
    fn drop(&mut self) {
        let ranges: alloc::vec::Vec<(u64, u64)> = self
            .vmas
            .get_mut()
            .iter()
            .map(|v| (v.start, v.end))
            .collect();
        let locked: alloc::vec::Vec<(u64, u64)> = self
            .vmas
            .get_mut()
            .iter()
            .filter(|v| v.flags.contains(VmFlags::LOCKED))
            .map(|v| (v.start, v.end))
            .collect();
        {
            let mut pt = self.lock_pt();
            for (s, e) in locked {
                self.mlock_walk(&mut pt, s..e, false);
            }
            for (s, e) in ranges {
                self.zap_range(&mut pt, s, e, true);
            }
        }
        if let Some(pt) = self.pt.get_mut().take() {
            pt.destroy();
        }
        if self.khugepaged_registered() {
            self.ctx.khugepaged_exit(self.id);
        }
        debug_assert_eq!(self.anon_rss(), 0, "RSS left after teardown");
        debug_assert_eq!(self.shmem_rss(), 0, "shmem RSS left after teardown");
        self.ctx.free_ids(self.asid, self.id);
    }
}

/// Entries of `pt` in `[lo, hi)` that map what a caller looks for: a PMD
/// leaf counts once if `pmd(start, leaf)` holds for it (`start`: where the
/// range meets it), a PTE leaf if `pte(va, leaf)` does.  The split and
/// collapse paths count a folio's mappings with it.
pub(crate) fn count_leaves<A: PagingArch>(
    pt: &PageTable<'_, A>,
    lo: u64,
    hi: u64,
    pmd: impl Fn(u64, &Leaf) -> bool,
    pte: impl Fn(u64, &Leaf) -> bool,
) -> u64 {
    pt.walk_range(lo, hi)
        .map(|step| match step {
            Step::Leaf(h) if h.level == PMD_LEVEL => pmd(h.start, &h.leaf) as u64,
            Step::Ptes(run) => (0..run.len())
                .filter(|&i| run.leaf(i).is_some_and(|l| pte(run.va(i), &l)))
                .count() as u64,
            _ => 0,
        })
        .sum()
}
