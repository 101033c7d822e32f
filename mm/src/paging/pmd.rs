//! PMD (2 MiB) leaves for PMD-sized folios, with deposited PTE tables.
//!
//! Every user PMD leaf is installed together with a preallocated, zeroed
//! PTE table (the *deposit*), so that splitting it later never allocates
//! and therefore never fails.  Deposits are interchangeable, so they are
//! kept per page table as a stack threaded through the deposited pages'
//! first word (no allocation, no failure); a split withdraws any one.
//! The count always equals the number of user PMD leaves.

use super::arch::{
    Attrs, ENTRIES_PER_TABLE, Entry, Leaf, PMD_LEVEL, PTE_LEVEL, PagingArch, level_index,
};
use super::table::{NO_DEPOSIT, PageTable, PtError, TableAt, Walk};
use super::tlb::TlbGather;
use crate::addr::PMD_SIZE;

impl<'a, A: PagingArch> PageTable<'a, A> {
    fn deposit(&self, pt: u64) {
        let mut d = self.deposits.lock();
        self.mem().store(pt, d.head);
        d.head = pt;
        d.count += 1;
    }

    /// Take one deposited table (zeroed again), if any.
    pub(crate) fn withdraw(&self) -> Option<u64> {
        let mut d = self.deposits.lock();
        if d.head == NO_DEPOSIT {
            return None;
        }
        let pt = d.head;
        d.head = self.mem().load(pt);
        self.mem().store(pt, 0);
        d.count -= 1;
        Some(pt)
    }

    /// The PMD slot for `va`, if the level-1 table exists.
    fn pmd_slot(&self, va: u64) -> Option<u64> {
        match self.table_at(va, PMD_LEVEL) {
            TableAt::Table(t) => Some(t + 8 * level_index(va, PMD_LEVEL) as u64),
            _ => None,
        }
    }

    /// `Misaligned` unless a PMD leaf may map `pfn` at `va` (both 2 MiB
    /// aligned, and the architecture has PMD leaves).
    fn pmd_leaf_fits(va: u64, pfn: u64) -> Result<(), PtError> {
        if !va.is_multiple_of(PMD_SIZE)
            || !pfn.is_multiple_of(ENTRIES_PER_TABLE as u64)
            || !A::leaf_allowed(PMD_LEVEL)
        {
            return Err(PtError::Misaligned);
        }
        Ok(())
    }

    /// Map the 512 frames from `pfn` (an order-9 folio, 2 MiB aligned) at
    /// the 2 MiB-aligned `va` with one PMD leaf, depositing `deposit_pt`
    /// (a zeroed page from the page-table allocator) for a later split.
    /// The PMD must be empty — no PTE table either (`Exists`).  On error
    /// the deposit is not consumed.
    pub fn set_pmd_leaf(
        &mut self,
        va: u64,
        pfn: u64,
        attrs: Attrs,
        deposit_pt: u64,
    ) -> Result<(), PtError> {
        Self::pmd_leaf_fits(va, pfn)?;
        let t = self.ensure_table(va, PMD_LEVEL)?;
        let slot = t + 8 * level_index(va, PMD_LEVEL) as u64;
        self.install_pmd_leaf(slot, pfn, attrs, deposit_pt)
    }

    /// [`Self::set_pmd_leaf`] with the table shared: for the fault path
    /// under split page-table locks, whose caller holds the lock of the PMD
    /// table `w` (a [`Self::lookup`] of `va` that stopped at an empty PMD)
    /// reached.  `Exists` if the PMD is no longer empty.
    pub fn set_pmd_leaf_walked(
        &self,
        w: &Walk,
        va: u64,
        pfn: u64,
        attrs: Attrs,
        deposit_pt: u64,
    ) -> Result<(), PtError> {
        Self::pmd_leaf_fits(va, pfn)?;
        if w.level != PMD_LEVEL || w.slot != self.pmd_slot(va).unwrap_or(0) {
            return Err(PtError::NotMapped);
        }
        self.install_pmd_leaf(w.slot, pfn, attrs, deposit_pt)
    }

    /// Hook the zeroed page-table page `pt` in as the PTE table under the
    /// empty PMD `w` (a walk that stopped there) reached: the fault path
    /// under split page-table locks, with that PMD table's lock held
    /// (Linux's `pmd_populate` under `pmd_lock`).  `Exists` (page not
    /// used) if the PMD is no longer empty.
    pub fn populate_pmd_walked(&self, w: &Walk, pt: u64) -> Result<(), PtError> {
        if w.level != PMD_LEVEL {
            return Err(PtError::NotMapped);
        }
        let new = A::encode(Entry::Table { pa: pt }, PMD_LEVEL);
        if self.mem().cmpxchg(w.slot, 0, new) != 0 {
            return Err(PtError::Exists);
        }
        Ok(())
    }

    /// Write the PMD leaf at `slot` (which must be empty) and deposit
    /// `deposit_pt`.
    fn install_pmd_leaf(
        &self,
        slot: u64,
        pfn: u64,
        attrs: Attrs,
        deposit_pt: u64,
    ) -> Result<(), PtError> {
        let leaf = Leaf {
            pfn,
            level: PMD_LEVEL,
            attrs,
            cont: false,
        };
        if self
            .mem()
            .cmpxchg(slot, 0, A::encode(Entry::Leaf(leaf), PMD_LEVEL))
            != 0
        {
            return Err(PtError::Exists);
        }
        if self.space.is_user() {
            self.deposit(deposit_pt);
        } else {
            // Kernel PMD leaves are never split by this path.
            self.env.alloc.free_pt(deposit_pt);
        }
        self.env.tlb.sync_tables();
        Ok(())
    }

    /// Replace the PMD leaf at `va` by its deposited table holding 512 PTEs
    /// for the same frames with the same rights and young/dirty (and, in a
    /// user space on arm64, the contiguous bit on all 32 blocks: the frames
    /// are one aligned folio).  Never allocates.
    ///
    /// Break-before-make on both formats: the PMD is cleared (capturing
    /// A/D the MMU set up to then), the 2 MiB range flushed at once, and
    /// only then is the table published.  arm64 requires it for a block →
    /// table change; on x86 it keeps 2M and 4K TLB entries for one address
    /// from coexisting (AMD erratum 383).  The PTE table is filled before
    /// it becomes reachable, so no walker sees it half written.  While the
    /// PMD is empty a fault may race in, but it needs the page-table lock,
    /// which the caller holds, and re-checks under it.
    pub fn split_pmd(&mut self, va: u64) -> Result<(), PtError> {
        let cont = self.cont_enabled();
        self.split_pmd_with(va, |old, i| {
            Entry::Leaf(Leaf {
                pfn: old.pfn + i,
                level: PTE_LEVEL,
                attrs: old.attrs,
                cont,
            })
        })?;
        if cont {
            self.stats.cont_sets += (ENTRIES_PER_TABLE / A::CONT_PTES) as u64;
        }
        Ok(())
    }

    /// [`Self::split_pmd`] with entry `i` of the new PTE table being
    /// `entry(old leaf, i)`: leaves for a split, migration entries for a
    /// migration that unmaps a PMD-mapped folio in one step.  Returns the
    /// old leaf (with its young/dirty bits).
    pub fn split_pmd_with(
        &mut self,
        va: u64,
        entry: impl Fn(&Leaf, u64) -> Entry,
    ) -> Result<Leaf, PtError> {
        let va = va & !(PMD_SIZE - 1);
        let slot = self.pmd_slot(va).ok_or(PtError::NotMapped)?;
        if self.read(slot, PMD_LEVEL).leaf().is_none() {
            return Err(PtError::NotMapped);
        }
        let pt = self.withdraw().ok_or(PtError::NoDeposit)?;
        let old = A::decode(self.take(slot), PMD_LEVEL)
            .leaf()
            .expect("checked above under the lock");
        self.env.tlb.flush_range(
            self.space,
            self.cpus.begin_flush(),
            va,
            va + PMD_SIZE,
            PMD_SIZE,
        );
        for i in 0..ENTRIES_PER_TABLE as u64 {
            self.mem()
                .store(pt + 8 * i, A::encode(entry(&old, i), PTE_LEVEL));
        }
        self.mem()
            .store(slot, A::encode(Entry::Table { pa: pt }, PMD_LEVEL));
        self.env.tlb.sync_tables();
        Ok(old)
    }

    /// Remove the PMD leaf at `va`: its flush is gathered and its deposit
    /// is handed to the gather to be freed after the flush.  Returns the
    /// old leaf (with young/dirty), or `None` if the PMD was empty.
    pub fn zap_pmd(&self, va: u64, g: &mut TlbGather<'a>) -> Result<Option<Leaf>, PtError> {
        let va = va & !(PMD_SIZE - 1);
        let Some(slot) = self.pmd_slot(va) else {
            return Ok(None);
        };
        match self.read(slot, PMD_LEVEL) {
            Entry::Absent => Ok(None),
            Entry::Table { .. } => Err(PtError::NotMapped),
            Entry::Swap(_) => Err(PtError::NonPresent { level: PMD_LEVEL }),
            Entry::Leaf(_) => Ok(self.zap_leaf(slot, PMD_LEVEL, va, g)),
        }
    }

    /// Change the attributes of the PMD leaf at `va`, keeping its frame:
    /// the fault path's young/dirty fixups and COW reuse of a whole PMD,
    /// and mprotect of a whole PMD.  As for [`PageTable::update_pte`], a
    /// change that removes rights or clears young/dirty gathers a flush,
    /// while a pure upgrade needs none (a stale, stricter TLB entry only
    /// causes a spurious fault).  Returns the old leaf.
    pub fn update_pmd(
        &mut self,
        va: u64,
        attrs: Attrs,
        g: &mut TlbGather<'a>,
    ) -> Result<Leaf, PtError> {
        let va = va & !(PMD_SIZE - 1);
        let slot = self.pmd_slot(va).ok_or(PtError::NotMapped)?;
        let (old, _) = self
            .modify_leaf(slot, PMD_LEVEL, |l| Leaf { attrs, ..l })
            .ok_or(PtError::NotMapped)?;
        if super::batch::is_upgrade(&old.attrs, &attrs) {
            self.env.tlb.sync_tables();
        } else {
            g.add_range(va, va + PMD_SIZE, PMD_SIZE);
        }
        Ok(old)
    }

    /// Write-protect the PMD leaf at `va` (fork).  Returns whether it was
    /// writable; the flush is gathered.
    pub fn wrprotect_pmd(&mut self, va: u64, g: &mut TlbGather<'a>) -> Result<bool, PtError> {
        let va = va & !(PMD_SIZE - 1);
        let slot = self.pmd_slot(va).ok_or(PtError::NotMapped)?;
        let (old, _) = self
            .modify_leaf(slot, PMD_LEVEL, |mut l| {
                l.attrs.perms.write = false;
                l
            })
            .ok_or(PtError::NotMapped)?;
        if old.attrs.perms.write {
            g.add_range(va, va + PMD_SIZE, PMD_SIZE);
        }
        Ok(old.attrs.perms.write)
    }

    /// Move the PMD leaf at the 2 MiB-aligned `src` to the empty PMD at
    /// the 2 MiB-aligned `dst` (mremap's whole-PMD move), with the A/D
    /// bits the MMU set up to the moment it is cleared, and its deposit:
    /// deposits are interchangeable, so one is withdrawn and deposited
    /// again and the count stays equal to the PMD leaves.  The source's
    /// flush is gathered; the destination goes from empty to valid.
    /// Returns the moved leaf; `NotMapped` if `src` holds no PMD leaf,
    /// `Exists` if `dst` is not empty or has no PMD table (nothing moved).
    pub fn move_pmd_leaf(
        &mut self,
        src: u64,
        dst: u64,
        g: &mut TlbGather<'a>,
    ) -> Result<Leaf, PtError> {
        let Some(s) = self.pmd_slot(src) else {
            return Err(PtError::NotMapped);
        };
        if !matches!(self.read(s, PMD_LEVEL), Entry::Leaf(_)) {
            return Err(PtError::NotMapped);
        }
        if self.pmd_slot(dst).is_none_or(|d| self.mem().load(d) != 0) {
            return Err(PtError::Exists);
        }
        let Some(old) = A::decode(self.take(s), PMD_LEVEL).leaf() else {
            unreachable!("a PMD leaf is there under the lock");
        };
        g.add_range(src, src + PMD_SIZE, PMD_SIZE);
        let dep = self
            .withdraw()
            .expect("every PMD leaf has a deposited table");
        self.set_pmd_leaf(dst, old.pfn, old.attrs, dep)
            .expect("destination PMD checked empty");
        Ok(old)
    }
}
