//! NUMA balancing for anonymous folios of every order (Linux's
//! `task_numa_work` → `change_prot_numa`, and `do_numa_page` /
//! `do_huge_pmd_numa_page`; notes §6.5).
//!
//! # Hinting entries
//! A NUMA hinting entry is a leaf whose rights are all stripped (the
//! format's `PROT_NONE` leaf: x86 P = 0 with the software PROT_NONE bit,
//! arm64 valid = 0 with its software bit) inside a VMA that allows access.
//! It keeps its frame, young/dirty and mapcount, so every other path
//! (zap, fork, rmap, migration, reclaim) sees an ordinary mapping; only
//! the MMU refuses it.  Its real rights are not stored in the entry: as
//! Linux restores `vma->vm_page_prot`, the restore recomputes them from
//! the VMA, write only for anon-exclusive pages (mprotect's rule,
//! `Mm::protected_attrs`).  Both the scan and the restore are
//! [`Mm::change_prot_range`], mprotect's walk.
//!
//! # Scan ([`Mm::task_numa_work`])
//! One period marks up to `pages` pages of the space's VMAs (counted only
//! over ranges where something changed, and at most 8 times as many
//! pages of address space), resuming where the last period stopped and
//! wrapping after the last VMA, in chunks ending on a PMD boundary (so
//! PMD leaves are hinted whole, never split).  Skipped, as Linux: entries
//! already hinting, the zero pages, folios maybe mapped by another
//! process (every VMA here is a private, COW mapping; the estimate is the
//! first page's mapcount, as `move_pages` uses), and, when the caller
//! passes the node of the CPU a single-threaded process last ran on,
//! folios already on that node.  As Linux, only VMAs whose policy
//! migrates on fault are scanned: the default policy (none set on the VMA
//! nor for the task), or one set with `MPOL_F_NUMA_BALANCING` (`BIND` and
//! `PREFERRED_MANY` only); any other explicit policy keeps its folios
//! where it put them.
//!
//! # Hinting fault ([`Mm::do_numa_page`])
//! Counts `numa_hint_faults` (and `numa_hint_faults_local` when the folio
//! is on the faulting CPU's node).  A folio on another node, exclusive to
//! this space, moves whole to the faulting CPU's node
//! (`migrate_pages` with [`MigrateReason::NumaMisplaced`], destination
//! `THISNODE`: never split, never elsewhere), counting
//! `numa_pages_migrated`; then, migrated or not, every hinting entry of
//! the folio in the same page table and VMA gets its rights back at once
//! ([`Mm::numa_rebuild`], Linux's `numa_rebuild_large_mapping`), so a
//! folio takes one fault per scan.  A PMD leaf is restored whole (a
//! PMD-mapped folio that migrates comes back PMD-mapped when its 512
//! migration entries are all still there, else PTE-mapped, and then all
//! 512 PTEs are restored).  Under a `MPOL_F_NUMA_BALANCING` policy the
//! faulting CPU's node is the target only if the policy's nodes include
//! it (Linux's `mpol_misplaced` for `MPOL_F_MORON`); otherwise the folio
//! stays.
//!
//! Not done (docs/linux-differences.md): the scheduler side (task
//! placement, `numa_preferred_nid`, fault statistics, the adaptive scan
//! period) and Linux's two-fault `cpupid` filter: the target is always
//! the faulting CPU's node.

use alloc::vec;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, align_down};
use crate::paging::{Attrs, Leaf, PMD_LEVEL, PageTable, PagingArch, Perms, level_size};
use crate::physmem::buddy::{AllocFlags, Wmark};
use crate::physmem::folio::FolioRef;
use crate::thp::VmEvent;
use crate::vma::mempolicy::MPOL_F_NUMA_BALANCING;
use crate::vma::{VmFlags, Vma};

use super::fault::Locked;
use super::migrate::{MigrateReason, migrate_pages};
use super::mprotect::ProtChanged;
use super::{Fault, Mm};

/// What one scan period did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NumaScan {
    /// Entries made hinting entries (`numa_pte_updates`: a PMD counts 512).
    pub pte_updates: u64,
    /// PMD entries made hinting entries (`numa_huge_pte_updates`).
    pub huge_pte_updates: u64,
    /// The scan reached the end of the address space and starts again
    /// from the bottom next time.
    pub wrapped: bool,
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Whether NUMA balancing scans `vma` (Linux's checks in
    /// `task_numa_work` for the VMAs this kernel has, private anonymous
    /// ones): not PROT_NONE, and its policy migrates on fault
    /// (`vma_policy_mof`: the default, or `MPOL_F_NUMA_BALANCING`).
    fn vma_scannable(&self, vma: &Vma) -> bool {
        vma.is_anonymous()
            && vma.flags.intersects(VmFlags::ACCESS)
            && self
                .policy_for(vma)
                .is_none_or(|p| p.flags & MPOL_F_NUMA_BALANCING != 0)
    }

    /// One scan period (Linux's `task_numa_work` for this space): marks
    /// hinting entries over up to `pages` pages from where the last
    /// period stopped (module docs).  `local_node`: the node of the CPU
    /// the process last ran on if it is single-threaded (its folios there
    /// are skipped), else `None`.  Takes the mmap lock for reading (tried
    /// only, as Linux: a busy space is skipped this period) and the
    /// page-table lock per chunk.
    pub fn task_numa_work(&self, pages: u64, local_node: Option<usize>) -> NumaScan {
        let mut res = NumaScan::default();
        let Some(vmas) = self.mmap_try_read() else {
            return res;
        };
        // At most 2^32 pages (16 TiB) a period: no shift below overflows.
        let mut pages = pages.min(1 << 32) as i64;
        let mut virtpages = pages.saturating_mul(8);
        let offset = self
            .numa_scan_offset
            .load(core::sync::atomic::Ordering::Relaxed);
        let mut start = offset;
        let mut stopped = None;
        'vmas: for v in vmas.iter().filter(|v| v.end > offset) {
            if !self.vma_scannable(v) {
                continue;
            }
            start = start.max(v.start);
            while start < v.end {
                let end = (start + ((pages as u64) << PAGE_SHIFT))
                    .next_multiple_of(PMD_SIZE)
                    .min(v.end);
                let done = {
                    let mut pt = self.lock_pt();
                    if !pt.live() {
                        return res;
                    }
                    self.change_prot_numa(&mut pt, start, end, local_node)
                };
                res.pte_updates += done.ptes + done.pmds * (PMD_SIZE / PAGE_SIZE);
                res.huge_pte_updates += done.pmds;
                let span = ((end - start) >> PAGE_SHIFT) as i64;
                if done.ptes + done.pmds > 0 {
                    pages -= span;
                }
                virtpages -= span;
                start = end;
                if pages <= 0 || virtpages <= 0 {
                    stopped = Some(start);
                    break 'vmas;
                }
            }
        }
        let next = match stopped {
            // Stopped inside or at the end of a VMA: resume there.
            Some(at) => at,
            None => {
                res.wrapped = true;
                0
            }
        };
        self.numa_scan_offset
            .store(next, core::sync::atomic::Ordering::Relaxed);
        let stats = &self.ctx.thp.stats;
        stats.count_n(VmEvent::NumaPteUpdates, res.pte_updates);
        stats.count_n(VmEvent::NumaHugePteUpdates, res.huge_pte_updates);
        res
    }

    /// Linux's `change_prot_numa` over `[start, end)` of one VMA: every
    /// present anonymous mapping the scan does not skip (module docs)
    /// becomes a hinting entry.
    pub(crate) fn change_prot_numa(
        &self,
        pt: &mut PageTable<'a, A>,
        start: u64,
        end: u64,
        local_node: Option<usize>,
    ) -> ProtChanged {
        let ctx = self.ctx;
        self.change_prot_range(pt, start, end, |l, _excl| {
            if !l.attrs.perms.accessible() || l.attrs.special || ctx.is_zero_pfn(l.pfn) {
                return None;
            }
            let f = ctx.folio(l.pfn)?;
            if !f.is_anon() || f.maybe_mapped_shared() {
                return None;
            }
            if local_node.is_some_and(|n| ctx.buddy.node_of_pfn(f.pfn()) == n) {
                return None;
            }
            Some(Attrs {
                perms: Perms {
                    user: l.attrs.perms.user,
                    ..Perms::NONE
                },
                ..l.attrs
            })
        })
    }

    /// A fault on the hinting entry at `addr` in `vma` (which allows the
    /// access), under the page-table lock (Linux's `do_numa_page` and
    /// `do_huge_pmd_numa_page`): counts it, then either asks for the
    /// folio's migration with the lock dropped or restores the folio's
    /// entries now (module docs).
    pub(crate) fn do_numa_page(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        addr: u64,
    ) -> Locked<'a> {
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        stats.count(VmEvent::NumaHintFaults);
        let here = pt
            .lookup(addr)
            .entry
            .leaf()
            .filter(|l| !l.attrs.special && !ctx.is_zero_pfn(l.pfn))
            .and_then(|l| ctx.folio(l.pfn));
        if let Some(f) = here.filter(|f| f.is_anon()) {
            let node = ctx.buddy.node_of_pfn(f.pfn());
            let local = self.cpu_node();
            if node == local {
                stats.count(VmEvent::NumaHintFaultsLocal);
            } else if !f.maybe_mapped_shared()
                && self.policy_for(vma).is_none_or(|p| p.nodes.contains(local))
                && self.node_has_room(local, f.nr_pages())
            {
                return Locked::NumaMigrate(f.get_ref(), local);
            }
        }
        self.numa_rebuild(vma, pt, addr);
        Locked::Done(Ok(()))
    }

    /// The node of the CPU running this (the faulting CPU: the caller
    /// holds the page-table lock, so it is not migrated meanwhile).
    fn cpu_node(&self) -> usize {
        let buddy = self.ctx.buddy;
        let (_irq, cpu) = buddy.cpu_hook().irq_guard_on_cpu();
        buddy.nodes().cpu_node(cpu)
    }

    /// Whether node `nid` keeps above its high watermark after taking
    /// `nr` pages (Linux's `migrate_balanced_pgdat`: NUMA balancing never
    /// fills a node).
    fn node_has_room(&self, nid: usize, nr: u64) -> bool {
        let buddy = self.ctx.buddy;
        buddy.node_free(nid) >= buddy.node_watermark(nid, Wmark::High) + nr
    }

    /// Migrates `f` (referenced by the hinting fault at `addr` in `vma`)
    /// whole to node `node`, then restores its entries (module docs).
    /// Runs with the mmap lock held for reading and no page-table lock.
    pub(crate) fn numa_migrate(
        &self,
        vma: &Vma,
        addr: u64,
        f: FolioRef<'a>,
        node: usize,
    ) -> Result<(), Fault> {
        let ctx = self.ctx;
        let alloc = |order: u32| {
            ctx.buddy
                .alloc_node(node, order, AllocFlags::USER | AllocFlags::THISNODE)
                .ok()
        };
        let (moved, _) = migrate_pages(&[self], vec![f], alloc, MigrateReason::NumaMisplaced);
        ctx.thp.stats.count_n(VmEvent::NumaPagesMigrated, moved);
        let mut pt = self.lock_pt();
        if pt.live() {
            self.numa_rebuild(vma, &mut pt, addr);
        }
        Ok(())
    }

    /// Gives every hinting entry of the folio mapped at `addr` back the
    /// rights of `vma`, within `addr`'s page table and `vma` (Linux's
    /// `numa_rebuild_large_mapping`); nothing if `addr` holds no hinting
    /// entry (another thread restored it first).
    pub(crate) fn numa_rebuild(&self, vma: &Vma, pt: &mut PageTable<'a, A>, addr: u64) {
        let ctx = self.ctx;
        let w = pt.lookup(addr);
        let Some(l) = w.entry.leaf().filter(|l| !l.attrs.perms.accessible()) else {
            return;
        };
        let va = align_down(addr, level_size(w.level));
        let (start, end) = match ctx.folio(l.pfn) {
            Some(f) if w.level < PMD_LEVEL && !ctx.is_zero_pfn(l.pfn) => {
                let first = va - (l.pfn - f.pfn()) * PAGE_SIZE;
                let table = align_down(va, PMD_SIZE);
                (
                    first.max(table).max(vma.start),
                    (first + f.size()).min(table + PMD_SIZE).min(vma.end),
                )
            }
            _ => (va, va + level_size(w.level)),
        };
        let span = ctx.folio(l.pfn).map(|f| (f.pfn(), f.pfn() + f.nr_pages()));
        let ours = |p: &Leaf| span.map_or(p.pfn == l.pfn, |(lo, hi)| p.pfn >= lo && p.pfn < hi);
        self.change_prot_range(pt, start, end, |p, excl| {
            if p.attrs.perms.accessible() || !ours(p) {
                return None;
            }
            // Young, as Linux: the access that faulted goes through now
            // (arm64 would otherwise take an access-flag fault next).
            let mut attrs = self.protected_attrs(p, vma.flags, excl);
            attrs.young = true;
            Some(attrs)
        });
    }
}
