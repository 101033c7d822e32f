//! Reservation-based allocation with in-place promotion (issue 17, part 3;
//! FreeBSD's superpage reservations, absent from Linux).
//!
//! Linux either allocates a large folio at the first fault in a block
//! (memory the process may never touch) or builds one later by copying
//! (khugepaged).  With `hugepages-<size>kB/reserve` set to 1, a fault
//! that would allocate an order-`o` folio *reserves* it instead:
//!
//! * **First fault** (a write into an empty, aligned block that lies in
//!   the VMA, when `o` is the order Linux's rules pick): the folio is
//!   allocated whole but only the faulting page is zeroed and mapped, in
//!   place (page `i` of the folio at block base + `i` pages).  The folio
//!   is flagged `RESERVATION` and queued as partially mapped, so the
//!   deferred-split shrinker can give its unused pages back under
//!   pressure.  RSS grows by one page, as with 4K pages.
//! * **Later faults** in the block (reads too: a reservation page serves a
//!   read instead of the zero page, so the block can still fill) take the
//!   page at their own offset, zero it, and map it.  On arm64 the
//!   block's contiguous entries fold when the block is promoted.
//! * **Promotion**: when the last page is mapped, the folio is an ordinary
//!   fully mapped folio (off the deferred-split queue); a PMD-size one is
//!   promoted in place: the PTE table is unhooked and flushed
//!   (break-before-make), then a PMD leaf maps the same frames — no copy.
//!
//! # Why the unmapped pages are safe to hand out
//! While `RESERVATION` is set, every page of the folio that is not mapped
//! has never been mapped: the flag is cleared (the reservation *breaks*)
//! by every event that could make an unmapped page hold someone's data or
//! be shared — any unmap of one of its pages (munmap, `MADV_DONTNEED`,
//! `MADV_PAGEOUT`), fork (the child maps the pages too), mremap (the pages
//! move), and any split — which is how pressure breaks it: the
//! deferred-split shrinker below the high watermark, LRU reclaim and
//! compaction all split partially mapped folios before swap-out or
//! migration.  A broken reservation is an ordinary partially mapped
//! folio: its unmapped pages are never mapped again and go back to the
//! allocator when it is split.  khugepaged leaves reservations alone.
//! All flag changes on the fault side run under this space's page-table
//! lock, which every unmap of the folio's pages also holds (only this
//! space maps it).
//!
//! # How a fault finds its reservation
//! A reservation's block holds nothing but its own pages in place, so the
//! first non-empty entry of the block tells: if it maps a page of a
//! `RESERVATION` folio of the block's order at the page's own offset, the
//! block is reserved.  Filling in order finds it at the first entry; in
//! random order the scan is short once a few pages are mapped.
//!
//! Decisions: `VM_LOCKED` VMAs never reserve (mlock populates whole
//! folios anyway); a read fault never *creates* a reservation (it maps the
//! zero page, as Linux), so a block first read is never reserved; a block
//! split by `mprotect` or `munmap` breaks its reservation at the next fault
//! that finds it outside its VMA.

use crate::addr::{PAGE_SIZE, PMD_ORDER, align_down};
use crate::paging::{Entry, FolioSpan, PageTable, PagingArch, Walk};
use crate::physmem::folio::Folio;
use crate::physmem::frame_flags::PageFlags;
use crate::thp::MthpStat;
use crate::thp::policy::orders_high_to_low;
use crate::vma::{VmFlags, Vma};

use super::fault::{Locked, anon_attrs};
use super::{Access, Fault, Mm};

impl<'a, A: PagingArch> Mm<'a, A> {
    /// An empty PTE at `addr` in the anonymous `vma` with reservation mode
    /// on for some order: serve it from the block's reservation, or make
    /// one.  `None`: not a reservation fault, take the ordinary path.
    pub(super) fn reserve_fault(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        addr: u64,
        access: Access,
        walk: Option<&Walk>,
    ) -> Option<Locked<'a>> {
        let ctx = self.ctx;
        let resv = ctx.thp.config.reserve_orders();
        if resv == 0 || vma.flags.contains(VmFlags::LOCKED) {
            return None;
        }
        let allowed = self.fault_orders(vma, addr);
        for o in orders_high_to_low(resv) {
            let base = align_down(addr, PAGE_SIZE << o);
            let Some((va, Entry::Leaf(l))) = pt.first_pte_in_walked(walk, addr, base, 1 << o)
            else {
                continue;
            };
            let Some(f) = ctx.folio(l.pfn) else {
                continue;
            };
            if !f.test(PageFlags::RESERVATION)
                || f.order() != o
                || f.pfn() + (va - base) / PAGE_SIZE != l.pfn
            {
                continue;
            }
            if allowed & (1 << o) == 0 {
                // The block no longer lies in the VMA (mprotect or munmap
                // split it) or the size was turned off: stop filling it.
                ctx.reservation_break(f);
                return None;
            }
            return Some(self.reserve_populate(vma, pt, addr, walk, base, f));
        }
        if access != Access::Write {
            return None;
        }
        // Linux's choice: the highest allowed order whose block is empty
        // (a PMD-size one only in reservation mode: past a PMD fault,
        // Linux maps no PMD folio by PTEs).
        let cand = allowed & !((1 << PMD_ORDER) & !resv);
        let o = orders_high_to_low(cand)
            .find(|&o| pt.ptes_none(align_down(addr, PAGE_SIZE << o), 1 << o))?;
        if resv & (1 << o) == 0 {
            return None;
        }
        let pol = self.policy_for(vma);
        let numa = pol.is_some() || ctx.buddy.nodes().nr_nodes() > 1;
        // No memory for the block: the ordinary path falls back.
        let f = self.alloc_placed(vma, addr, pol, numa, o).ok()?;
        let base = align_down(addr, PAGE_SIZE << o);
        let va = align_down(addr, PAGE_SIZE);
        let pfn = f.pfn() + (va - base) / PAGE_SIZE;
        ctx.mem.zero(pfn * PAGE_SIZE, PAGE_SIZE);
        if set_one(pt, walk, addr, va, pfn, anon_attrs(vma)).is_err() {
            f.put();
            return Some(Locked::Done(Err(Fault::Oom)));
        }
        ctx.rmap_add_reservation(f, self.id, base, pfn - f.pfn());
        self.rss_add(1);
        ctx.thp.stats.inc(o, MthpStat::ReserveAlloc);
        Some(Locked::Done(Ok(())))
    }

    /// Map the reserved page for `addr` of `f` (whose block starts at
    /// `base`), zeroed; promote the block when it was the last.
    fn reserve_populate(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        addr: u64,
        walk: Option<&Walk>,
        base: u64,
        f: Folio<'a>,
    ) -> Locked<'a> {
        let ctx = self.ctx;
        let va = align_down(addr, PAGE_SIZE);
        let pfn = f.pfn() + (va - base) / PAGE_SIZE;
        ctx.mem.zero(pfn * PAGE_SIZE, PAGE_SIZE);
        if set_one(pt, walk, addr, va, pfn, anon_attrs(vma)).is_err() {
            return Locked::Done(Err(Fault::Oom));
        }
        let mapped = ctx.rmap_reservation_page(f, self.id, pfn - f.pfn());
        self.rss_add(1);
        if mapped as u64 == f.nr_pages() {
            self.reserve_promote(pt, base, f);
        }
        Locked::Done(Ok(()))
    }

    /// Every page of the reservation `f` at `base` is mapped: it becomes an
    /// ordinary folio, PMD-mapped in place if it is PMD-size.
    fn reserve_promote(&self, pt: &mut PageTable<'a, A>, base: u64, f: Folio<'a>) {
        let ctx = self.ctx;
        if !f.test_and_clear(PageFlags::RESERVATION) {
            return;
        }
        ctx.deferred_split_remove(f);
        ctx.thp.stats.inc(f.order(), MthpStat::ReservePromote);
        if f.order() == PMD_ORDER {
            if pt.promote_to_pmd_leaf(base, f.pfn()) == Ok(true) {
                ctx.rmap_promote_pmd(f, self.id);
            }
            return;
        }
        // Below PMD size: the contiguous blocks (arm64) fold now.
        let span = FolioSpan {
            first_pfn: f.pfn(),
            nr: f.nr_pages(),
        };
        let step = A::CONT_PTES.max(1) as u64;
        for i in (0..f.nr_pages()).step_by(step as usize) {
            pt.try_fold_block(base + i * PAGE_SIZE, span);
        }
    }
}

/// Map one frame at `va` (for the fault at `addr`, walked to as `walk`).
fn set_one<'a, A: PagingArch>(
    pt: &mut PageTable<'a, A>,
    walk: Option<&Walk>,
    addr: u64,
    va: u64,
    pfn: u64,
    attrs: crate::paging::Attrs,
) -> Result<(), crate::paging::PtError> {
    match walk {
        Some(w) => pt.set_ptes_walked(w, addr, va, pfn, 1, attrs),
        None => pt.set_ptes(va, pfn, 1, attrs),
    }
}
