//! The generic page table: walking, allocation of intermediate tables,
//! kernel-style range mapping and teardown.  The per-PTE batch operations
//! and contiguous-block handling are in `batch.rs`, PMD leaves in `pmd.rs`.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};

use super::arch::{
    ENTRIES_PER_TABLE, Entry, Leaf, PagingArch, ROOT_LEVEL, level_index, level_size,
};
use super::tlb::{Space, TlbGather, TlbOps};
use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::cpu::{ALL_CPUS, AtomicCpuSet};
use crate::physmem::phys::PhysMem;

/// Whether user page tables may use contiguous hints (arm64 contpte).
static CONT_HINTS: AtomicBool = AtomicBool::new(true);

/// Allow or forbid contiguous hints in user page tables from now on (the
/// kernel's boot parameter `contpte=off`, for measuring what contpte buys).
/// Set it before any user mapping exists: entries written earlier keep
/// their hint, and the invariant checker would then reject them.
pub fn set_cont_hints(on: bool) {
    CONT_HINTS.store(on, Ordering::Relaxed);
}

/// See [`set_cont_hints`].
pub fn cont_hints() -> bool {
    CONT_HINTS.load(Ordering::Relaxed)
}

/// Source of page-table pages.  Implemented by the buddy allocator in the
/// kernel and by [`crate::emu::Emu`] on the host.
pub trait PtAlloc: Sync {
    /// A zeroed 4 KiB page, or `None` when memory is exhausted.
    fn alloc_pt(&self) -> Option<u64>;
    /// Return a page obtained from `alloc_pt`.  It need not be zero.
    fn free_pt(&self, pa: u64);
}

/// The services a page table runs on.  Copied into every [`TlbGather`].
#[derive(Clone, Copy)]
pub struct PtEnv<'a> {
    pub mem: &'a dyn PhysMem,
    pub alloc: &'a dyn PtAlloc,
    pub tlb: &'a dyn TlbOps,
}

/// Why a page-table operation did not happen.  Nothing is changed when an
/// error is returned, except that intermediate tables allocated on the way
/// may remain (empty; freed at teardown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtError {
    /// No memory for a page-table page.
    NoMem,
    /// A target entry is already present (the set operations only fill
    /// empty entries, like Linux's `set_ptes` contract).
    Exists,
    /// Address or frame not aligned for the requested leaf.
    Misaligned,
    /// A leaf at `level` covers the address where a table was needed
    /// (split it first).
    Huge { level: u8 },
    /// Nothing (or not the expected kind of entry) is mapped there.
    NotMapped,
    /// A PMD leaf without a deposited table: a broken invariant.
    NoDeposit,
    /// A swap or migration entry at `level` covers the address where a
    /// table or a leaf was needed (swap it in, or wait for the migration).
    NonPresent { level: u8 },
}

/// Result of a walk: the entry where the walk stopped, its level and the
/// physical address of the entry itself (the "slot").  The slot stays
/// inside `paging`: code outside reads entries through
/// [`PageTable::walk_range`]'s runs and changes them through the table's
/// operations, so raw words are decoded and written in one layer only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    pub level: u8,
    pub entry: Entry,
    pub(super) slot: u64,
}

impl Walk {
    /// The physical address of the table holding the entry the walk
    /// stopped at (the PTE table, for a walk that reached level 0).
    pub fn table_pa(&self) -> u64 {
        self.slot & !(crate::addr::PAGE_SIZE - 1)
    }
}

/// Where [`probe`] stopped: the leaf that maps the address (a `PROT_NONE`
/// one included), or the absent or swap entry that ended the walk, its level in `mm`'s numbering (0 = the 4 KiB level, 3 = the
/// root) and its raw word, for callers that report what the hardware
/// itself grants (the arch crates' `kernel_translate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub level: u8,
    pub entry: Entry,
    pub raw: u64,
}

/// The engine's read-only walker over any table tree: descend from the root
/// table at physical address `root` to `va`, reading entries with `load`
/// (physical address of an entry to its raw word) and decoding them with
/// `A`.  `on_table(level, raw)` sees each table entry passed through, root
/// first.  It needs no [`PageTable`] (no allocator, no TLB), so the arch
/// crates walk the live tables with it through their direct map;
/// [`PageTable::lookup`] is the same descent.
pub fn probe<A: PagingArch>(
    root: u64,
    va: u64,
    load: impl Fn(u64) -> u64,
    mut on_table: impl FnMut(u8, u64),
) -> Probe {
    descend::<A>(root, va, &load, &mut on_table).0
}

/// The one descent behind [`probe`] and [`PageTable::lookup`]; also returns
/// the slot (physical address) of the entry where it stopped.
#[inline]
fn descend<A: PagingArch>(
    root: u64,
    va: u64,
    load: &impl Fn(u64) -> u64,
    on_table: &mut impl FnMut(u8, u64),
) -> (Probe, u64) {
    let mut table = root;
    let mut level = ROOT_LEVEL;
    loop {
        let slot = table + 8 * level_index(va, level) as u64;
        let raw = load(slot);
        // The two common cases without a full decode: a table to descend
        // into, and an empty entry (a first touch).
        if raw == 0 {
            let entry = Entry::Absent;
            return (Probe { level, entry, raw }, slot);
        }
        if level > 0
            && let Some(pa) = A::table_pa(raw, level)
        {
            on_table(level, raw);
            table = pa;
            level -= 1;
            continue;
        }
        let entry = A::decode(raw, level);
        match entry {
            Entry::Table { pa } if level > 0 => {
                on_table(level, raw);
                table = pa;
                level -= 1;
            }
            _ => return (Probe { level, entry, raw }, slot),
        }
    }
}

/// The frames of the folio being mapped, for the fold decision: a block is
/// folded only if all 16 of its frames lie inside one folio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolioSpan {
    pub first_pfn: u64,
    pub nr: u64,
}

impl FolioSpan {
    pub const fn contains(&self, pfn: u64, nr: u64) -> bool {
        pfn >= self.first_pfn && pfn + nr <= self.first_pfn + self.nr
    }
}

/// Counters kept per page table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtStats {
    /// Contiguous blocks formed by folding after a single-entry set.
    pub folds: u64,
    /// Contiguous blocks broken up by a partial change.
    pub unfolds: u64,
    /// Contiguous blocks written directly by `set_ptes` / PMD split.
    pub cont_sets: u64,
}

/// Where the level-0 table for an address is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TableAt {
    Table(u64),
    Missing,
    /// A leaf above level 0 covers the address.
    Huge,
}

/// A four-level page table in format `A`.
///
/// # Locking
/// Every method that changes entries takes `&mut self`: the owner keeps the
/// table behind its page-table lock (the `Mm`'s `ptl`, taken after the VMA
/// lock in the address-space lock order), so holding `&mut PageTable` *is*
/// holding the page-table lock.  The MMU is the only concurrent party: it
/// reads entries at any time and, on x86, sets A/D bits, so present entries
/// are changed with compare-exchange and break-before-make where a live
/// entry changes shape.  Read-only queries take `&self` and may run under a
/// shared guard (they never observe a torn entry, but a batch in progress
/// elsewhere may be half done).
pub struct PageTable<'a, A: PagingArch> {
    pub(crate) env: PtEnv<'a>,
    pub(crate) root: u64,
    pub(crate) space: Space,
    /// Deposited PTE tables: a stack threaded through the first word of the
    /// (otherwise unused, zeroed) pages themselves, so depositing never
    /// allocates.  Behind its own small lock, so that a zap holding the
    /// page-table lock shared (and the PMD table's split lock) can remove
    /// a PMD leaf and withdraw its deposit.
    pub(crate) deposits: crate::sync::Mutex<Deposits>,
    pub(crate) stats: PtStats,
    /// `cont_sets` added by [`PageTable::fill_ptes_shared`] and
    /// [`PageTable::set_ptes_over_swap_walked`], which may run
    /// with the table shared (split page-table locks) and so cannot touch
    /// `stats`.
    pub(crate) cont_sets_shared: core::sync::atomic::AtomicU64,
    /// `unfolds` done with the table shared (a zap under split page-table
    /// locks unfolding a contiguous block the range cuts).
    pub(crate) unfolds_shared: core::sync::atomic::AtomicU64,
    /// The CPUs that may cache this table's entries: every flush goes to
    /// them ([`crate::cpu::ALL_CPUS`] unless [`Self::with_cpus`] says).
    pub(crate) cpus: &'a AtomicCpuSet,
    _arch: PhantomData<fn() -> A>,
}

pub(crate) const NO_DEPOSIT: u64 = u64::MAX;

/// The deposit stack of a [`PageTable`]: its top (`NO_DEPOSIT` when empty)
/// and its depth.
pub(crate) struct Deposits {
    pub(crate) head: u64,
    pub(crate) count: usize,
}

impl<'a, A: PagingArch> PageTable<'a, A> {
    /// A new, empty table for `space` (allocates the root page).
    pub fn new(env: PtEnv<'a>, space: Space) -> Result<Self, PtError> {
        let root = env.alloc.alloc_pt().ok_or(PtError::NoMem)?;
        Ok(Self::adopt(env, root, space))
    }

    /// Take over an existing table (e.g. one built by the boot code).  Its
    /// pages must come from `env.alloc`, since teardown returns them there.
    pub fn adopt(env: PtEnv<'a>, root: u64, space: Space) -> Self {
        PageTable {
            env,
            root,
            space,
            deposits: crate::sync::Mutex::new(Deposits {
                head: NO_DEPOSIT,
                count: 0,
            }),
            stats: PtStats::default(),
            cont_sets_shared: core::sync::atomic::AtomicU64::new(0),
            unfolds_shared: core::sync::atomic::AtomicU64::new(0),
            cpus: &ALL_CPUS,
            _arch: PhantomData,
        }
    }

    /// Flush only `cpus` (the address space's CPU set, kept by its owner
    /// as CPUs load the root) instead of every CPU.
    pub fn with_cpus(mut self, cpus: &'a AtomicCpuSet) -> Self {
        self.cpus = cpus;
        self
    }

    /// The CPUs this table's flushes reach.
    pub fn cpus(&self) -> &'a AtomicCpuSet {
        self.cpus
    }

    /// Physical address of the root table (for CR3 / TTBR).
    pub fn root(&self) -> u64 {
        self.root
    }
    pub fn space(&self) -> Space {
        self.space
    }
    pub fn env(&self) -> PtEnv<'a> {
        self.env
    }
    pub fn stats(&self) -> PtStats {
        let mut s = self.stats;
        s.cont_sets += self
            .cont_sets_shared
            .load(core::sync::atomic::Ordering::Relaxed);
        s.unfolds += self
            .unfolds_shared
            .load(core::sync::atomic::Ordering::Relaxed);
        s
    }
    /// Number of deposited PTE tables (equals the number of PMD leaves
    /// installed with [`PageTable::set_pmd_leaf`]).
    pub fn deposited(&self) -> usize {
        self.deposits.lock().count
    }

    /// The top of the deposit stack (`u64::MAX` when empty), for the
    /// invariant checker.
    pub(crate) fn deposit_head(&self) -> u64 {
        self.deposits.lock().head
    }

    /// Contiguous hints are used only in user address spaces: a fold or
    /// unfold briefly invalidates live entries, and kernel mappings (the
    /// stack, the direct map) cannot take the fault that may cause.
    /// [`set_cont_hints`]`(false)` (the kernel's `contpte=off`) turns
    /// them off everywhere.
    pub fn cont_enabled(&self) -> bool {
        A::CONT_PTES > 1 && self.space.is_user() && cont_hints()
    }

    /// Start a batch: flushes and frees collected here happen at
    /// [`TlbGather::finish`].
    pub fn gather(&self) -> TlbGather<'a> {
        TlbGather::new(self.space, self.cpus, self.env.tlb, self.env.alloc)
    }

    // ----- raw entry access -----

    pub(crate) fn mem(&self) -> &'a dyn PhysMem {
        self.env.mem
    }

    pub(crate) fn read(&self, slot: u64, level: u8) -> Entry {
        A::decode(self.mem().load(slot), level)
    }

    /// Atomically replace the entry at `slot` with `f(old)`, retrying if
    /// the MMU changed it meanwhile.  Returns `(old, new)` raw values.
    pub(crate) fn modify_raw(&self, slot: u64, mut f: impl FnMut(u64) -> u64) -> (u64, u64) {
        let mem = self.mem();
        let mut old = mem.load(slot);
        loop {
            let new = f(old);
            if new == old {
                return (old, new);
            }
            let prev = mem.cmpxchg(slot, old, new);
            if prev == old {
                return (old, new);
            }
            old = prev;
        }
    }

    /// Atomically clear the entry at `slot`; returns what it held (with any
    /// A/D bits the MMU set up to the last moment).
    pub(crate) fn take(&self, slot: u64) -> u64 {
        self.modify_raw(slot, |_| 0).0
    }

    /// Atomically apply `f` to the leaf at `slot`; `None` if it is no leaf.
    pub(crate) fn modify_leaf(
        &self,
        slot: u64,
        level: u8,
        f: impl Fn(Leaf) -> Leaf,
    ) -> Option<(Leaf, Leaf)> {
        let mut result = None;
        self.modify_raw(slot, |raw| match A::decode(raw, level) {
            Entry::Leaf(old) => {
                let new = f(old);
                result = Some((old, new));
                A::encode(Entry::Leaf(new), level)
            }
            _ => {
                result = None;
                raw
            }
        });
        result
    }

    // ----- walking -----

    /// Walk to `va`: returns the leaf that maps it, or the absent entry
    /// where the walk ended, with its level.  Never allocates.  The descent
    /// is [`probe`]'s.
    pub fn lookup(&self, va: u64) -> Walk {
        let mem = self.mem();
        let (p, slot) = descend::<A>(self.root, va, &|pa| mem.load(pa), &mut |_, _| {});
        Walk {
            level: p.level,
            entry: p.entry,
            slot,
        }
    }

    /// The 4 KiB entry for `va` if a PTE table exists there; `None` if the
    /// walk ends above level 0 (absent or a huge leaf — use [`Self::lookup`]).
    pub fn read_pte(&self, va: u64) -> Option<Entry> {
        let w = self.lookup(va);
        (w.level == 0).then_some(w.entry)
    }

    /// Descend from the root to the table page at `level` that holds `va`'s
    /// entry.  A non-table entry on the way goes to `stop(slot, level,
    /// entry)`, which ends the descent with an error or supplies the table
    /// to continue into (a new one it linked there).
    #[inline]
    fn descend_tables<E>(
        &self,
        va: u64,
        level: u8,
        mut stop: impl FnMut(u64, u8, Entry) -> Result<u64, E>,
    ) -> Result<u64, E> {
        let mut table = self.root;
        let mut l = ROOT_LEVEL;
        while l > level {
            let slot = table + 8 * level_index(va, l) as u64;
            table = match self.read(slot, l) {
                Entry::Table { pa } => pa,
                e => stop(slot, l, e)?,
            };
            l -= 1;
        }
        Ok(table)
    }

    /// Physical address of the table page at `level` that holds `va`'s
    /// entry, without allocating.
    pub(crate) fn table_at(&self, va: u64, level: u8) -> TableAt {
        let r = self.descend_tables(va, level, |_, _, e| {
            Err(match e {
                Entry::Leaf(_) => TableAt::Huge,
                // A PMD swap/migration entry has no table below it either.
                _ => TableAt::Missing,
            })
        });
        r.map_or_else(|t| t, TableAt::Table)
    }

    /// The table page at `level` that holds `va`'s entry, allocating missing
    /// tables on the way (`Huge` if a leaf above covers `va`).
    pub fn ensure_table(&mut self, va: u64, level: u8) -> Result<u64, PtError> {
        let env = self.env;
        self.descend_tables(va, level, |slot, l, e| match e {
            Entry::Leaf(_) => Err(PtError::Huge { level: l }),
            Entry::Swap(_) => Err(PtError::NonPresent { level: l }),
            _ => {
                let pa = env.alloc.alloc_pt().ok_or(PtError::NoMem)?;
                // The page is zeroed, so the walker sees only absent
                // entries in it once the table entry is published.
                let new = A::encode(Entry::Table { pa }, l);
                if env.mem.cmpxchg(slot, 0, new) != 0 {
                    // Only the lock holder writes tables; an absent
                    // entry that is not 0 is a format we do not use.
                    env.alloc.free_pt(pa);
                    return Err(PtError::Exists);
                }
                Ok(pa)
            }
        })
    }

    // ----- sharing the kernel half -----

    /// Link the kernel half into this user table's root: copy every present
    /// upper-half entry of `kernel_root` (a root of the same format, read
    /// through this table's `PhysMem`) into this root, so the kernel stays
    /// mapped while this root is loaded (x86, where one CR3 covers both
    /// halves; arm64's TTBR1 maps the kernel and needs none).  The linked
    /// entries point at the kernel's own tables, which a user table never
    /// enumerates or frees (it owns only the lower half of its root; a
    /// kernel-space table that links them, such as x86's start-up table
    /// for secondary CPUs, must never be destroyed);
    /// upper-half slots empty in `kernel_root` are left as they are.  Call
    /// it before the root is first loaded.  Returns how many entries it
    /// linked.
    pub fn link_kernel_half(&mut self, kernel_root: u64) -> usize {
        debug_assert!(
            self.root != kernel_root,
            "a root cannot link its own upper half"
        );
        let mem = self.mem();
        let mut linked = 0;
        for i in ENTRIES_PER_TABLE / 2..ENTRIES_PER_TABLE {
            let raw = mem.load(kernel_root + 8 * i as u64);
            if raw == 0 {
                continue;
            }
            debug_assert!(
                matches!(A::decode(raw, ROOT_LEVEL), Entry::Table { .. }),
                "kernel root entry {i} is no table"
            );
            mem.store(self.root + 8 * i as u64, raw);
            linked += 1;
        }
        linked
    }

    // ----- kernel-style mapping -----

    /// Map `[va, va + len)` to `[pa, pa + len)` with the largest leaves that
    /// alignment allows (kernel spaces only; user spaces get 4 KiB leaves,
    /// because user PMD leaves must carry a deposit: use `set_ptes` /
    /// `set_pmd_leaf` there).  Fails with `Exists` on any present entry.
    /// Returns the size of the largest leaf it wrote.
    pub fn map_range(
        &mut self,
        va: u64,
        pa: u64,
        len: u64,
        attrs: super::Attrs,
    ) -> Result<u64, PtError> {
        self.map_range_max(va, pa, len, attrs, super::arch::PUD_LEVEL)
    }

    /// [`Self::map_range`] with leaves no larger than `max_level` (the
    /// kernel maps its image with 4 KiB pages so that W^X and the stack
    /// guard page stay exact, and uses 1 GiB leaves only where the CPU has
    /// them).
    pub fn map_range_max(
        &mut self,
        va: u64,
        pa: u64,
        len: u64,
        attrs: super::Attrs,
        max_level: u8,
    ) -> Result<u64, PtError> {
        if (va | pa | len) & (PAGE_SIZE - 1) != 0 {
            return Err(PtError::Misaligned);
        }
        let mut off = 0;
        let mut largest = 0;
        while off < len {
            let (v, p) = (va + off, pa + off);
            let mut level = 0;
            if !self.space.is_user() {
                for l in (1..=max_level.min(super::arch::PUD_LEVEL)).rev() {
                    let sz = level_size(l);
                    if A::leaf_allowed(l) && (v | p) & (sz - 1) == 0 && len - off >= sz {
                        level = l;
                        break;
                    }
                }
            }
            let table = self.ensure_table(v, level)?;
            let slot = table + 8 * level_index(v, level) as u64;
            let leaf = Leaf {
                pfn: p >> PAGE_SHIFT,
                level,
                attrs,
                cont: false,
            };
            if self
                .mem()
                .cmpxchg(slot, 0, A::encode(Entry::Leaf(leaf), level))
                != 0
            {
                return Err(PtError::Exists);
            }
            largest = largest.max(level_size(level));
            off += level_size(level);
        }
        self.env.tlb.sync_tables();
        Ok(largest)
    }

    /// Remove every leaf in `[va, va + len)` (any size; 4 KiB entries of a
    /// contiguous block partly in the range are unfolded first) and free
    /// the tables the range empties entirely.  A huge leaf only partly
    /// inside the range is an error (split it first); entries before it
    /// are already removed then.  PMD leaves give back their deposit.
    ///
    /// Takes `&self`: munmap runs it with the page-table lock shared, on a
    /// range and gap that hold no VMA, which no other holder of the shared
    /// lock walks into (see `aspace::zap`); every other caller holds it
    /// exclusively.
    pub fn unmap_range(&self, va: u64, len: u64, g: &mut TlbGather<'a>) -> Result<(), PtError> {
        if (va | len) & (PAGE_SIZE - 1) != 0 {
            return Err(PtError::Misaligned);
        }
        if len == 0 {
            return Ok(());
        }
        self.unmap_level(self.root, ROOT_LEVEL, va, va + len, g)
    }

    fn unmap_level(
        &self,
        table: u64,
        level: u8,
        start: u64,
        end: u64,
        g: &mut TlbGather<'a>,
    ) -> Result<(), PtError> {
        let size = level_size(level);
        let mut va = start;
        while va < end {
            let entry_base = va & !(size - 1);
            let next = entry_base.wrapping_add(size);
            let stop = if next == 0 || next > end { end } else { next };
            let slot = table + 8 * level_index(va, level) as u64;
            match self.read(slot, level) {
                Entry::Absent => {}
                // Swap and migration PTEs are cleared with the leaves (the
                // caller's rmap/swap accounting reads them first).
                Entry::Leaf(_) | Entry::Swap(_) if level == 0 => {
                    let n = ((stop - va) >> PAGE_SHIFT) as usize;
                    self.get_and_clear_ptes(va, n, g);
                }
                Entry::Leaf(_) => {
                    if va != entry_base || stop != entry_base + size {
                        return Err(PtError::Huge { level });
                    }
                    self.zap_leaf(slot, level, entry_base, g);
                }
                // A whole PMD swap/migration entry: not in any TLB, so it
                // is just cleared.
                Entry::Swap(_) => {
                    if va != entry_base || stop != entry_base + size {
                        return Err(PtError::NonPresent { level });
                    }
                    self.take(slot);
                }
                Entry::Table { pa } => {
                    if level == 0 {
                        return Err(PtError::NotMapped);
                    }
                    if level == 1 {
                        let n = ((stop - va) >> PAGE_SHIFT) as usize;
                        self.get_and_clear_ptes(va, n, g);
                    } else {
                        self.unmap_level(pa, level - 1, va, stop, g)?;
                    }
                    // A kernel table right under the root is never freed:
                    // every user root links it (`link_kernel_half`), so
                    // its root entry must stay for the kernel's lifetime.
                    let shared = level == ROOT_LEVEL && !self.space.is_user();
                    if !shared
                        && va == entry_base
                        && stop == entry_base + size
                        && self.table_empty(pa)
                    {
                        self.take(slot);
                        g.add_range(entry_base, entry_base + size, level_size(level - 1));
                        g.add_freed_table(pa);
                    }
                }
            }
            va = stop;
        }
        Ok(())
    }

    /// Clear a leaf above level 0, returning any deposit to the gather.
    pub(crate) fn zap_leaf(
        &self,
        slot: u64,
        level: u8,
        va: u64,
        g: &mut TlbGather<'a>,
    ) -> Option<Leaf> {
        let old = self.take(slot);
        let leaf = A::decode(old, level).leaf();
        if old != 0 {
            g.add_range(va, va + level_size(level), level_size(level));
        }
        if level == super::arch::PMD_LEVEL && self.space.is_user() && leaf.is_some() {
            match self.withdraw() {
                Some(pt) => g.add_freed_table(pt),
                None => debug_assert!(false, "user PMD leaf without a deposit"),
            }
        }
        leaf
    }

    pub(crate) fn table_empty(&self, table: u64) -> bool {
        (0..ENTRIES_PER_TABLE as u64).all(|i| self.mem().load(table + 8 * i) == 0)
    }

    // ----- enumeration and teardown -----

    /// Call `f(va, leaf)` for every leaf, in address order.  Addresses in
    /// the upper half of the root are sign-extended (kernel half).
    pub fn for_each_leaf(&self, f: &mut dyn FnMut(u64, Leaf)) {
        self.visit(self.root, ROOT_LEVEL, 0, &mut |va, level, e| {
            if let Entry::Leaf(l) = e {
                let _ = level;
                f(va, l);
            }
        });
    }

    /// Call `f(pa, level)` for every table page below the root (level is
    /// that of the entries it holds), children before parents.
    pub fn for_each_table(&self, f: &mut dyn FnMut(u64, u8)) {
        self.visit_tables(self.root, ROOT_LEVEL, f);
    }

    /// Number of table pages in the tree, root included, deposits excluded.
    pub fn table_pages(&self) -> usize {
        let mut n = 1;
        self.for_each_table(&mut |_, _| n += 1);
        n
    }

    /// Root entries this table owns: a user address space owns only the
    /// lower half of its root.  The upper half may alias the kernel's own
    /// tables (x86 copies the kernel's PML4 entries into every user root so
    /// the kernel stays mapped), which enumeration and teardown must never
    /// follow or free.
    fn owned_entries(&self, table: u64, level: u8) -> usize {
        if level == ROOT_LEVEL && table == self.root && self.space.is_user() {
            ENTRIES_PER_TABLE / 2
        } else {
            ENTRIES_PER_TABLE
        }
    }

    fn visit(&self, table: u64, level: u8, base: u64, f: &mut dyn FnMut(u64, u8, Entry)) {
        for i in 0..self.owned_entries(table, level) {
            let mut va = base + (i as u64) * level_size(level);
            if level == ROOT_LEVEL && i >= ENTRIES_PER_TABLE / 2 {
                va |= !((1u64 << super::arch::VA_BITS) - 1);
            }
            let e = self.read(table + 8 * i as u64, level);
            match e {
                Entry::Table { pa } if level > 0 => self.visit(pa, level - 1, va, f),
                Entry::Absent => {}
                _ => f(va, level, e),
            }
        }
    }

    fn visit_tables(&self, table: u64, level: u8, f: &mut dyn FnMut(u64, u8)) {
        if level == 0 {
            return;
        }
        for i in 0..self.owned_entries(table, level) as u64 {
            if let Entry::Table { pa } = self.read(table + 8 * i, level) {
                self.visit_tables(pa, level - 1, f);
                f(pa, level - 1);
            }
        }
    }

    /// Tear the table down: one full flush of the space, then every table
    /// page and deposited table goes back to the allocator.  Mapped frames
    /// are not touched (their owners unmapped or will free them).  The
    /// caller must have switched every CPU away from this root.
    pub fn destroy(self) {
        self.env.tlb.flush_all(self.space, self.cpus.begin_flush());
        let mut pages = alloc::vec::Vec::new();
        self.for_each_table(&mut |pa, _| pages.push(pa));
        for pa in pages {
            self.env.alloc.free_pt(pa);
        }
        while let Some(pt) = self.withdraw() {
            self.env.alloc.free_pt(pt);
        }
        self.env.alloc.free_pt(self.root);
    }
}
