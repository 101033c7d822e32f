//! Memory policies in an address space: the task policy
//! (`set_mempolicy`), VMA policies (`mbind`), what `get_mempolicy` reads,
//! and where the anonymous fault path allocates under a policy
//! (notes §6.2–6.3, §5.4).  The policy type and its rules are
//! `vma::mempolicy`.
//!
//! # `mbind` in two steps
//! [`Mm::mbind`] checks the range, finds the misplaced folios and applies
//! the policy under the mmap lock; [`mbind_migrate`] then moves the folios
//! it returned, with no mmap lock held (migration needs only the
//! page-table locks), through `migrate_pages`, each folio to the node the
//! new policy gives its address (interleave per folio).  The caller passes
//! the spaces that may map them: this one for `MPOL_MF_MOVE` (a folio that
//! may be shared is skipped then), every live one for `MPOL_MF_MOVE_ALL`.

use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use crate::abi::errno::Errno;
use crate::addr::{PAGE_SIZE, PMD_ORDER, align_down};
use crate::paging::{Entry, PageTable, PagingArch, Step, level_size};
use crate::physmem::buddy::{AllocError, AllocFlags};
use crate::physmem::folio::{Folio, FolioRef};
use crate::vma::Vma;
use crate::vma::mempolicy::{Mempolicy, NodeMask, Target};

use super::migrate::{MigrateReason, migrate_pages};
use super::{Access, Mm};

/// `mbind` flags.
pub const MPOL_MF_STRICT: u32 = 1;
pub const MPOL_MF_MOVE: u32 = 1 << 1;
pub const MPOL_MF_MOVE_ALL: u32 = 1 << 2;

/// Folios `mbind` found on the wrong node, each with the node the new
/// policy wants it on.
#[derive(Default)]
pub struct MbindMoves<'a> {
    folios: Vec<(FolioRef<'a>, usize)>,
    strict: bool,
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// The task memory policy (`None`: the default).
    pub fn task_policy(&self) -> Option<Mempolicy> {
        Mempolicy::unpack(self.task_policy.load(Relaxed))
    }

    /// `set_mempolicy`: the policy every VMA without its own follows.
    pub fn set_task_policy(&self, p: Option<Mempolicy>) {
        self.task_policy.store(Mempolicy::pack(p), Relaxed);
    }

    /// The policy `vma` allocates under: its own, else the task's.
    #[inline]
    pub(crate) fn policy_for(&self, vma: &Vma) -> Option<Mempolicy> {
        vma.policy
            .or_else(|| Mempolicy::unpack(self.task_policy.load(Relaxed)))
    }

    /// `get_mempolicy(MPOL_F_ADDR)`: the policy of the VMA at `addr`,
    /// `None` (the default) when it has none: as Linux, the task policy is
    /// not reported here; EFAULT outside every VMA.
    pub fn policy_at(&self, addr: u64) -> Result<Option<Mempolicy>, Errno> {
        let vmas = self.vmas();
        Ok(vmas.find(addr).ok_or(Errno::EFAULT)?.policy)
    }

    /// `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)`: the node of the page at
    /// `addr`, faulting it in for reading first if nothing is there (as
    /// Linux's read GUP: an untouched anonymous page becomes the zero
    /// page).  EFAULT outside every VMA.
    pub fn node_of_addr(&self, addr: u64) -> Result<usize, Errno> {
        for _ in 0..2 {
            {
                let vmas = self.vmas();
                if vmas.find(addr).is_none() {
                    return Err(Errno::EFAULT);
                }
                let pt = self.lock_pt();
                let w = pt.lookup(addr);
                if let Entry::Leaf(l) = w.entry {
                    let size = level_size(w.level);
                    let pfn = l.pfn + (addr - align_down(addr, size)) / PAGE_SIZE;
                    return Ok(self.ctx.buddy.node_of_pfn(pfn));
                }
            }
            self.handle_fault(addr, Access::Read)
                .map_err(|_| Errno::EFAULT)?;
        }
        Err(Errno::EFAULT)
    }

    /// A folio of `order` for the anonymous fault at `addr` of `vma` under
    /// policy `pol` (`None`: the default, local node first).  A PMD-order
    /// folio under a policy that is not interleave is taken from its
    /// preferred node only (Linux's `alloc_pages_mpol` with
    /// `__GFP_THISNODE`): the fault falls back to a smaller order rather
    /// than map a remote THP.
    pub(crate) fn alloc_policy(
        &self,
        vma: &Vma,
        addr: u64,
        pol: Option<Mempolicy>,
        order: u32,
    ) -> Result<Folio<'a>, AllocError> {
        let buddy = self.ctx.buddy;
        let local = buddy.local_node();
        let t = match pol {
            Some(p) => p.target(addr, vma.start, vma.pgoff, order, local),
            None => Target::prefer(local),
        };
        let interleave = pol.is_some_and(|p| p.mode.interleaves());
        alloc_target(self.ctx, t, order, order >= PMD_ORDER && !interleave)
    }

    /// `mbind(start, len, ...)` with the new policy `pol` (`None`: the
    /// default) and `flags` already checked by the caller: Linux's
    /// `do_mbind` up to the migration.  EINVAL for an unaligned start or a
    /// wrapping range; EFAULT for a hole in the range (except for the
    /// default policy, which applies to the mapped parts); with
    /// `MPOL_MF_STRICT` and no move flag, EIO at the first folio on a node
    /// the policy does not allow, the policy left unapplied.  Then every
    /// VMA of the range gets `pol` (split at the ends, merged where equal)
    /// and the misplaced folios are returned for [`mbind_migrate`]; a
    /// large folio only partly inside the range is moved whole, as Linux.
    pub fn mbind(
        &self,
        start: u64,
        len: u64,
        pol: Option<Mempolicy>,
        flags: u32,
    ) -> Result<MbindMoves<'a>, Errno> {
        if !start.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let len = len.checked_add(PAGE_SIZE - 1).ok_or(Errno::EINVAL)? & !(PAGE_SIZE - 1);
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        let mut moves = MbindMoves {
            folios: Vec::new(),
            strict: flags & MPOL_MF_STRICT != 0 && pol.is_some(),
        };
        if end == start {
            return Ok(moves);
        }
        let mut vmas = self.mmap_write();
        // Holes: every byte of the range must be mapped.
        let mut at = start;
        for v in vmas.find_intersecting(start, end) {
            if v.start > at && pol.is_some() {
                return Err(Errno::EFAULT);
            }
            at = v.end;
        }
        if at < end && pol.is_some() {
            return Err(Errno::EFAULT);
        }
        let moving = flags & (MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) != 0;
        let local = self.ctx.buddy.local_node();
        if let Some(p) = pol
            && (moving || moves.strict)
        {
            let ranges: Vec<Vma> = vmas.find_intersecting(start, end).copied().collect();
            let pt = self.lock_pt();
            for v in &ranges {
                let (lo, hi) = (v.start.max(start), v.end.min(end));
                let mut strict_hit = false;
                self.anon_folios_in(&pt, lo, hi, |f, fva| {
                    let node = self.ctx.buddy.node_of_pfn(f.pfn());
                    if p.allows(node) || moves.folios.iter().any(|(q, _)| q.pfn() == f.pfn()) {
                        return true;
                    }
                    if !moving {
                        strict_hit = true;
                        return false;
                    }
                    let shared = f.maybe_mapped_shared();
                    if flags & MPOL_MF_MOVE_ALL != 0 || !shared {
                        let t = p.target(fva.max(v.start), v.start, v.pgoff, f.order(), local);
                        moves.folios.push((f.get_ref(), t.node));
                    }
                    true
                });
                if strict_hit {
                    return Err(Errno::EIO);
                }
            }
        }
        let keys: Vec<(u64, u64)> = vmas
            .find_intersecting(start, end)
            .map(|v| (v.start.max(start), v.end.min(end)))
            .collect();
        for (lo, hi) in keys {
            vmas.set_policy(lo, hi, pol);
        }
        Ok(moves)
    }
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Calls `visit(folio, fva)` once for each anonymous folio mapped in
    /// `[lo, hi)` of `pt` (a run of its pages counts once; the zero pages
    /// are skipped), `fva` being where its first page would sit in this
    /// mapping; stops when `visit` returns false.  The walk `mbind` and
    /// `migrate_pages` share.
    pub(crate) fn anon_folios_in(
        &self,
        pt: &PageTable<'a, A>,
        lo: u64,
        hi: u64,
        mut visit: impl FnMut(Folio<'a>, u64) -> bool,
    ) {
        let ctx = self.ctx;
        let mut last = u64::MAX;
        let mut one = |pfn: u64, va: u64| -> bool {
            if ctx.is_zero_pfn(pfn) {
                return true;
            }
            let Some(f) = ctx.folio(pfn).filter(|f| f.is_anon()) else {
                return true;
            };
            if f.pfn() == last {
                return true;
            }
            last = f.pfn();
            visit(f, va - (pfn - f.pfn()) * PAGE_SIZE)
        };
        for step in pt.walk_range(lo, hi) {
            let go = match step {
                Step::Leaf(h) => {
                    let size = level_size(h.level);
                    one(
                        h.leaf.pfn + (h.start - align_down(h.start, size)) / PAGE_SIZE,
                        h.start,
                    )
                }
                Step::Ptes(run) => (0..run.len()).all(|i| match run.leaf(i) {
                    Some(l) => one(l.pfn, run.va(i)),
                    None => true,
                }),
                _ => true,
            };
            if !go {
                return;
            }
        }
    }
}

/// Moves the folios [`Mm::mbind`] found, each to its node, in the spaces
/// `mms` (module docs).  EIO when `MPOL_MF_STRICT` was given and some
/// folio did not move.
pub fn mbind_migrate<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    moves: MbindMoves<'a>,
) -> Result<(), Errno> {
    let Some(first) = mms.first() else {
        return Ok(());
    };
    let ctx = first.ctx;
    let mut failed = 0;
    let mut todo = moves.folios;
    while let Some(&(_, node)) = todo.first() {
        let (now, rest): (Vec<_>, Vec<_>) = todo.into_iter().partition(|&(_, n)| n == node);
        todo = rest;
        let folios = now.into_iter().map(|(f, _)| f).collect();
        let t = Target::prefer(node);
        let alloc = |order: u32| alloc_target(ctx, t, order, true).ok();
        failed += migrate_pages(mms, folios, alloc, MigrateReason::Syscall).1;
    }
    if failed > 0 && moves.strict {
        return Err(Errno::EIO);
    }
    Ok(())
}

/// A folio of `order` for target `t`: its node first, then (unless
/// `this_node_only`) the others by distance, within `t.only` when set.
fn alloc_target<'a>(
    ctx: &'a super::MmCtx<'a>,
    t: Target,
    order: u32,
    this_node_only: bool,
) -> Result<Folio<'a>, AllocError> {
    let buddy = ctx.buddy;
    let flags = AllocFlags::USER;
    match t.only {
        None if this_node_only => buddy.alloc_node(t.node, order, flags | AllocFlags::THISNODE),
        None => buddy.alloc_node(t.node, order, flags),
        Some(mask) => {
            let mask: NodeMask = mask;
            for &n in buddy.nodes().fallback(t.node) {
                let n = n as usize;
                if !mask.contains(n) {
                    continue;
                }
                if let Ok(f) = buddy.alloc_node(n, order, flags | AllocFlags::THISNODE) {
                    return Ok(f);
                }
                if this_node_only {
                    break;
                }
            }
            Err(AllocError::NoMemory)
        }
    }
}
