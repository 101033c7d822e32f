//! `move_pages(2)` on large folios (Linux's `do_pages_stat` and
//! `do_pages_move`, notes §5.3): each address names the folio mapped
//! there, and a folio moves whole, at its order, to a frame of the target
//! node (`AllocFlags::THISNODE`, as Linux's `alloc_migration_target` for
//! system calls), through [`super::migrate::migrate_pages`].
//!
//! # Batches, and Linux's quirks kept
//! Consecutive addresses asking for the same node are queued and migrated
//! together; the batch is flushed when the node changes, when an address
//! cannot be queued (its status is known at once), and at the end.  A
//! folio is queued once: a second address inside a folio already queued
//! reads `-EBUSY` (Linux fails to isolate an isolated folio) and flushes
//! the batch, so a 64K folio named by all 16 of its pages reads
//! `[node, -EBUSY, node, node, …]`, exactly as on Linux 6.12 (trap 11).
//! After a flush every queued address reads the target node, moved or
//! not; folios that could not be moved are counted in the positive return
//! value instead (with the addresses not yet looked at), as Linux.
//!
//! # Status of one address
//! No VMA, or the zero page: `-EFAULT`; nothing present (never touched,
//! or swapped out): `-ENOENT`; a folio maybe mapped by another process
//! without `MPOL_MF_MOVE_ALL`: `-EACCES` (Linux 6.12's estimate, the first
//! page's mapcount, see `report::page_mapcount`); already on the node: the
//! node.
//!
//! The caller copies the user arrays in and out (it may hold nothing
//! while it does: copies fault) and calls this per chunk; a chunk's end
//! flushes the batch, the one place where this differs from Linux (a
//! folio named across a chunk boundary is not reported `-EBUSY`).

use alloc::vec::Vec;

use crate::abi::errno::Errno;
use crate::addr::{PAGE_SIZE, align_down};
use crate::paging::{Entry, PagingArch, level_size};
use crate::physmem::buddy::AllocFlags;
use crate::physmem::folio::FolioRef;

use super::migrate::{MigrateReason, migrate_pages};
use super::{Mm, PtGuard};
use crate::sync::SleepReadGuard;
use crate::vma::VmaSet;

impl<'a, A: PagingArch> Mm<'a, A> {
    /// The anonymous folio mapped at `addr`, referenced, or the
    /// `move_pages` status errno of the address (module docs).  Takes the
    /// mmap lock for reading and the page-table lock, one after the other,
    /// and drops both.
    pub(crate) fn follow_folio(&self, addr: u64) -> Result<FolioRef<'a>, Errno> {
        let vmas = self.vmas();
        if vmas.find(addr).is_none() {
            return Err(Errno::EFAULT);
        }
        self.follow_folio_locked(&self.lock_pt(), addr)
    }

    /// [`Self::follow_folio`] past the VMA check, under the page-table
    /// lock `pt` (and the mmap lock) the caller holds.
    fn follow_folio_locked(
        &self,
        pt: &PtGuard<'_, 'a, A>,
        addr: u64,
    ) -> Result<FolioRef<'a>, Errno> {
        let w = pt.lookup(addr);
        let Entry::Leaf(l) = w.entry else {
            return Err(Errno::ENOENT);
        };
        let size = level_size(w.level);
        let pfn = l.pfn + ((addr - align_down(addr, size)) / PAGE_SIZE);
        let ctx = self.ctx;
        if ctx.is_zero_pfn(pfn) {
            return Err(Errno::EFAULT);
        }
        match ctx.folio(pfn) {
            Some(f) if f.is_anon() => Ok(f.get_ref()),
            _ => Err(Errno::EFAULT),
        }
    }

    /// `move_pages` with no nodes: where each address of `pages` is (a
    /// node, or a negative errno: module docs), into `status`.
    pub fn pages_node(&self, pages: &[u64], status: &mut [i32]) {
        for (s, &addr) in status.iter_mut().zip(pages) {
            *s = match self.follow_folio(addr) {
                Ok(f) => self.ctx.buddy.node_of_pfn(f.pfn()) as i32,
                Err(e) => -(e as i32),
            };
        }
    }
}

/// `move_pages` with nodes over one chunk: moves the folio at each
/// `pages[i]` of `mms[0]` (the target process) to node `nodes[i]`,
/// writing each address's status (module docs).  `mms` are the spaces
/// that may map the folios: the target alone, or with `move_all` every
/// live one (a shared folio is then moved in all of them).
/// `has_memory(node)` says whether a node id names a node with memory.
///
/// As Linux's `do_pages_move`: `Ok(0)` when the whole chunk was done;
/// when a flush leaves folios unmoved, the call stops there and returns
/// `Ok(folios not moved + entries of the chunk not yet looked at)` (the
/// caller adds the entries after the chunk), the batch's statuses left
/// unwritten; an invalid node is `Err(ENODEV)` after the batch before it
/// is flushed (its statuses written).
pub fn move_pages<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    pages: &[u64],
    nodes: &[i32],
    status: &mut [i32],
    move_all: bool,
    has_memory: impl Fn(i32) -> bool,
) -> Result<u64, Errno> {
    let Some(target) = mms.first() else {
        return Err(Errno::ESRCH);
    };
    let ctx = target.ctx;
    let n = pages.len().min(nodes.len()).min(status.len());
    let mut batch = Batch::default();
    let mut follow = Follower::new(target);
    for i in 0..n {
        let (addr, node) = (pages[i], nodes[i]);
        if !has_memory(node) {
            batch.flush(&mut follow, mms, status);
            return Err(Errno::ENODEV);
        }
        if batch.node.is_some_and(|b| b != node) {
            // Entry `i` is not looked at yet: it counts as left over.
            let failed = batch.flush(&mut follow, mms, status);
            if failed > 0 {
                return Ok(failed + (n - i) as u64);
            }
        }
        batch.node = Some(node);
        status[i] = match follow.folio(addr) {
            Err(e) => -(e as i32),
            Ok(f) if ctx.buddy.node_of_pfn(f.pfn()) as i32 == node => node,
            Ok(f) if !move_all && f.maybe_mapped_shared() => -(Errno::EACCES as i32),
            Ok(f) if batch.has(&f) => -(Errno::EBUSY as i32),
            Ok(f) => {
                batch.queue(i, f);
                continue;
            }
        };
        // Entry `i` has its status: the batch goes now.
        let failed = batch.flush(&mut follow, mms, status);
        if failed > 0 {
            return Ok(failed + (n - i - 1) as u64);
        }
    }
    Ok(batch.flush(&mut follow, mms, status))
}

/// [`Mm::follow_folio`] over the addresses of one `move_pages` call: the
/// mmap lock (read) and then the page-table lock stay held from one lookup
/// to the next, for at most [`Self::HOLD`] lookups, and the last VMA found
/// is remembered, so consecutive addresses cost one page-table walk each
/// (Linux takes the mmap lock per address).  [`Self::release`] drops both
/// before anything that takes them itself (a batch's migration).
struct Follower<'m, 'a, A: PagingArch> {
    mm: &'m Mm<'a, A>,
    held: Option<(SleepReadGuard<'m, VmaSet>, PtGuard<'m, 'a, A>)>,
    /// The last VMA found, `[start, end)`, valid while `held`.
    vma: (u64, u64),
    uses: u32,
}

impl<'m, 'a, A: PagingArch> Follower<'m, 'a, A> {
    /// Lookups per hold: bounds how long the page-table lock (interrupts
    /// off) is kept.
    const HOLD: u32 = 64;

    fn new(mm: &'m Mm<'a, A>) -> Self {
        Self {
            mm,
            held: None,
            vma: (0, 0),
            uses: 0,
        }
    }

    /// Drops both locks; the remembered VMA goes with them (it may change
    /// while they are not held).
    fn release(&mut self) {
        self.held = None;
        self.uses = 0;
        self.vma = (0, 0);
    }

    fn folio(&mut self, addr: u64) -> Result<FolioRef<'a>, Errno> {
        if self.uses >= Self::HOLD {
            self.release();
        }
        self.uses += 1;
        let mm = self.mm;
        let (vmas, pt) = self.held.get_or_insert_with(|| {
            let vmas = mm.vmas();
            (vmas, mm.lock_pt())
        });
        if !(self.vma.0..self.vma.1).contains(&addr) {
            let Some(v) = vmas.find(addr) else {
                return Err(Errno::EFAULT);
            };
            self.vma = (v.start, v.end);
        }
        mm.follow_folio_locked(pt, addr)
    }
}

/// A set of frame numbers in one open-addressing table (linear probing,
/// kept at most half full): a `BTreeSet` here cost a 128-byte node
/// allocation per dozen folios queued, which with the kernel heap's
/// split and merge was a tenth of a 4K folio's migration (`make
/// profile`); this grows by doubling, a handful of allocations a batch.
#[derive(Default)]
struct PfnSet {
    /// `EMPTY` or a member.
    slots: Vec<u64>,
    len: usize,
}

impl PfnSet {
    const EMPTY: u64 = u64::MAX;

    fn slot(&self, pfn: u64) -> usize {
        // Fibonacci hashing; the table's length is a power of two.
        (pfn.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & (self.slots.len() - 1)
    }

    fn contains(&self, pfn: u64) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let mut i = self.slot(pfn);
        loop {
            match self.slots[i] {
                Self::EMPTY => return false,
                p if p == pfn => return true,
                _ => i = (i + 1) & (self.slots.len() - 1),
            }
        }
    }

    fn insert(&mut self, pfn: u64) {
        if (self.len + 1) * 2 > self.slots.len() {
            let old = core::mem::take(&mut self.slots);
            self.slots = alloc::vec![Self::EMPTY; (old.len() * 2).max(64)];
            self.len = 0;
            for p in old.into_iter().filter(|&p| p != Self::EMPTY) {
                self.insert(p);
            }
        }
        let mut i = self.slot(pfn);
        while self.slots[i] != Self::EMPTY {
            if self.slots[i] == pfn {
                return;
            }
            i = (i + 1) & (self.slots.len() - 1);
        }
        self.slots[i] = pfn;
        self.len += 1;
    }

    fn clear(&mut self) {
        self.slots.fill(Self::EMPTY);
        self.len = 0;
    }
}

/// The folios queued for one node, with the status slots they answer.
#[derive(Default)]
struct Batch<'a> {
    node: Option<i32>,
    folios: Vec<FolioRef<'a>>,
    /// The queued folios' head frames, to find a folio named twice
    /// without a scan of the batch.
    heads: PfnSet,
    slots: Vec<usize>,
}

impl<'a> Batch<'a> {
    fn has(&self, f: &FolioRef<'a>) -> bool {
        self.heads.contains(f.pfn())
    }

    fn queue(&mut self, slot: usize, f: FolioRef<'a>) {
        self.heads.insert(f.pfn());
        self.folios.push(f);
        self.slots.push(slot);
    }

    /// Migrates the queued folios to the batch's node; when all moved,
    /// every queued slot reads the node (Linux's `store_status` over the
    /// batch).  Returns the folios not moved; the batch is empty
    /// afterwards and keeps no node.  `follow`'s locks are dropped first.
    fn flush<A: PagingArch>(
        &mut self,
        follow: &mut Follower<'_, 'a, A>,
        mms: &[&Mm<'a, A>],
        status: &mut [i32],
    ) -> u64 {
        follow.release();
        let node = self.node.take();
        if self.folios.is_empty() {
            return 0;
        }
        let node = node.expect("a queued folio has a node");
        let ctx = mms[0].ctx;
        let alloc = |order: u32| {
            ctx.buddy
                .alloc_node(
                    node as usize,
                    order,
                    AllocFlags::USER | AllocFlags::THISNODE,
                )
                .ok()
        };
        let folios = core::mem::take(&mut self.folios);
        self.heads.clear();
        let (_, failed) = migrate_pages(mms, folios, alloc, MigrateReason::Syscall);
        for s in self.slots.drain(..) {
            if failed == 0 {
                status[s] = node;
            }
        }
        failed
    }
}

/// `migrate_pages(2)` on the address space `mms[0]` (Linux's
/// `do_migrate_pages`): every anonymous folio on a node of `old` moves,
/// whole, to the node of `new` at the same position (Linux's
/// `node_remap`: the i-th node of `old` to the i-th of `new`, wrapping),
/// unless that is where it is.  Without `move_all` a folio that may be
/// mapped by another process stays (skipped, not counted).  Returns the
/// folios that could not be moved.
pub fn migrate_node_pages<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    old: crate::vma::mempolicy::NodeMask,
    new: crate::vma::mempolicy::NodeMask,
    move_all: bool,
) -> u64 {
    let Some(target) = mms.first() else {
        return 0;
    };
    if old == new || new.is_empty() {
        return 0;
    }
    let ctx = target.ctx;
    let remap = |n: usize| -> usize {
        let pos = (old.0 & ((1u32 << n) - 1)).count_ones();
        new.nth(pos % new.weight()).unwrap_or(n)
    };
    let mut todo: Vec<(FolioRef<'a>, usize)> = Vec::new();
    {
        let vmas = target.vmas();
        let pt = target.lock_pt();
        for v in vmas.iter() {
            target.anon_folios_in(&pt, v.start, v.end, |f, _| {
                let n = ctx.buddy.node_of_pfn(f.pfn());
                let d = remap(n);
                let shared = f.maybe_mapped_shared();
                if old.contains(n) && d != n && (move_all || !shared) {
                    todo.push((f.get_ref(), d));
                }
                true
            });
        }
    }
    // A folio split across two VMAs (mprotect) is met once per VMA.
    todo.sort_by_key(|(f, _)| f.pfn());
    todo.dedup_by_key(|(f, _)| f.pfn());
    let mut failed = 0;
    while let Some(&(_, node)) = todo.first() {
        let (now, rest): (Vec<_>, Vec<_>) = todo.into_iter().partition(|&(_, d)| d == node);
        todo = rest;
        let folios = now.into_iter().map(|(f, _)| f).collect();
        let alloc = |order: u32| {
            ctx.buddy
                .alloc_node(node, order, AllocFlags::USER | AllocFlags::THISNODE)
                .ok()
        };
        failed += migrate_pages(mms, folios, alloc, MigrateReason::Syscall).1;
    }
    failed
}

/// Migrates every anonymous folio mapped in `[start, end)` of `mms[0]`
/// (whole, with folios only partly inside) to new frames: of `node` when
/// given (that node only), else wherever the allocator gives (the local
/// node first).  For the self-tests and the storm, which need migrations
/// on a machine of one node.  Returns (pages migrated, folios not).
pub fn migrate_range<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    start: u64,
    end: u64,
    node: Option<usize>,
) -> (u64, u64) {
    let Some(target) = mms.first() else {
        return (0, 0);
    };
    let ctx = target.ctx;
    let mut folios: Vec<FolioRef<'a>> = Vec::new();
    {
        let vmas = target.vmas();
        let pt = target.lock_pt();
        for v in vmas.find_intersecting(start, end) {
            target.anon_folios_in(&pt, v.start.max(start), v.end.min(end), |f, _| {
                folios.push(f.get_ref());
                true
            });
        }
    }
    // A folio split across two VMAs (mprotect) is met once per VMA.
    folios.sort_by_key(|f| f.pfn());
    folios.dedup_by_key(|f| f.pfn());
    let alloc = |order: u32| match node {
        Some(n) => ctx
            .buddy
            .alloc_node(n, order, AllocFlags::USER | AllocFlags::THISNODE)
            .ok(),
        None => ctx.buddy.alloc(order, AllocFlags::USER).ok(),
    };
    migrate_pages(mms, folios, alloc, MigrateReason::Syscall)
}

#[cfg(test)]
mod pfnset_tests {
    use super::PfnSet;

    #[test]
    fn pfnset_agrees_with_a_btreeset() {
        let mut s = PfnSet::default();
        let mut b = alloc::collections::BTreeSet::new();
        let mut x = 12345u64;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pfn = (x >> 40) % 3000;
            assert_eq!(s.contains(pfn), b.contains(&pfn));
            s.insert(pfn);
            b.insert(pfn);
            assert!(s.contains(pfn));
        }
        assert_eq!(s.len, b.len());
        s.clear();
        assert!(b.iter().all(|&p| !s.contains(p)));
    }
}
