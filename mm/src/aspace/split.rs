//! Folio split (Linux's `split_folio_to_order` / `folio_split`) and the
//! deferred-split shrinker (`deferred_split_scan`).
//!
//! # Finding the mappings of a folio
//! Through the reverse map (`aspace::rmap`): an anonymous folio is mapped
//! only at its rmap owner's address, in the address spaces the caller
//! passes (`mms`, normally all of the context's).  A mapping in a space the
//! caller did not pass makes the split fail with EBUSY, never a half split.
//!
//! # Protocol (all or nothing)
//! 1. Checks: EINVAL for the zero folios, non-anonymous folios, a target
//!    order not below the current one, an anonymous target of order 1, or a
//!    split point outside the folio; EAGAIN if the folio has references
//!    beyond its mappings and the caller's own (pins).
//! 2. The page-table locks of every address space mapping it are taken, in
//!    ascending mm-id order (the only other place holding two page-table
//!    locks is fork, whose child nobody else can see yet) — only tried: a
//!    contended one fails the split with EAGAIN.  Under them the
//!    mappings are counted again (EBUSY if some are elsewhere) and the pin
//!    check repeated (EAGAIN); then the folio lock is tried (EAGAIN).
//!    From here nothing can fail.
//! 3. PMD mappings are split into PTEs (their deposit makes that
//!    infallible); then every PTE mapping the folio is cleared (one gathered
//!    flush per address space), remembering each entry's attributes.  With
//!    the page-table locks held nobody can fault the range back meanwhile —
//!    the role Linux's migration entries play.
//! 4. The metadata is split (`FolioLockGuard::split_meta`: the folio lock
//!    passes to a guard per sub-folio, released at the end): per-page
//!    anon-exclusive bits stay, the deferred-split queue entry goes,
//!    `nr_anon` moves from the old order to the new ones, `split` counts on
//!    the old order.
//! 5. Every cleared entry is written back for its sub-folio with one
//!    `set_ptes` per run (so arm64 sub-folios of 64 KiB or more come back
//!    contpte-mapped and smaller ones as plain PTEs).  With zero-page remap
//!    (anonymous splits down to order 0, as Linux's `remap_page` with
//!    `RMP_USE_SHARED_ZEROPAGE`), order-0 sub-folios whose page is entirely
//!    zero are mapped to the shared zero page instead and freed.
//!
//! Failures count `split_failed` on the folio's order.

use alloc::vec::Vec;

use crate::abi::errno::Errno;
use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_ORDER};
use crate::paging::PagingArch;
use crate::physmem::folio::{Folio, FolioRef};
use crate::physmem::frame_flags::PageFlags;
use crate::thp::{MthpStat, VmEvent};

use super::Mm;
use super::ctx::MmCtx;
use super::rmap::{restore_mappings, rmap_walk, try_to_unmap};

/// What [`Mm::split_huge_pages`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitCount {
    /// Large folios found in the range.
    pub found: usize,
    /// Of them, split.
    pub split: usize,
}

/// What one [`MmCtx::deferred_split_scan`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShrinkCount {
    /// Queue entries looked at.
    pub scanned: usize,
    /// Partially mapped folios split.
    pub split: usize,
    /// Underused PMD folios split (`shrink_underused`).
    pub underused: usize,
    /// Splits that failed (the folio went back on the queue).
    pub failed: usize,
}

/// The sub-folio orders, in address order, of a uniform split of an
/// order-`order` folio to `new_order`.
fn uniform_plan(order: u32, new_order: u32) -> Vec<u32> {
    alloc::vec![new_order; 1 << (order - new_order)]
}

/// The sub-folio orders of a non-uniform (buddy-like) split: the folio is
/// halved, and only the half holding page `at` is halved again, down to
/// `new_order`.  An anonymous order-1 piece (not allowed) is split into two
/// order-0 pages.
fn buddy_plan(order: u32, new_order: u32, at: u64, anon: bool) -> Vec<u32> {
    let mut out = Vec::new();
    let piece = |out: &mut Vec<u32>, o: u32| {
        if anon && o == 1 {
            out.extend_from_slice(&[0, 0]);
        } else {
            out.push(o);
        }
    };
    let (mut lo, mut o) = (0u64, order);
    // Pieces after the split point, collected innermost first.
    let mut after = Vec::new();
    while o > new_order {
        let half = 1u64 << (o - 1);
        if at < lo + half {
            after.push(o - 1);
        } else {
            piece(&mut out, o - 1);
            lo += half;
        }
        o -= 1;
    }
    piece(&mut out, new_order);
    for &a in after.iter().rev() {
        piece(&mut out, a);
    }
    out
}

/// Split `folio` (anonymous, mapped only at its owner address) into folios
/// of `new_order` (uniform, Linux's `split_folio_to_order`).  The caller
/// holds one reference, which afterwards belongs to the sub-folio at the
/// old head (`folio` still names it).  `mms` must contain every address
/// space that maps the folio.
pub fn split_folio_to_order<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    folio: Folio<'a>,
    new_order: u32,
) -> Result<(), Errno> {
    split_folio_impl(mms, folio, new_order, None, true)
}

/// Non-uniform split (Linux's `folio_split`): only the buddy halves holding
/// page `at` are split further, down to `new_order`; an order-9 folio split
/// at page 3 to order 0 leaves orders 0, 0, 0, 0, 2, 3, …, 8.  Reference
/// and `mms` as for [`split_folio_to_order`].
pub fn folio_split<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    folio: Folio<'a>,
    new_order: u32,
    at: u64,
) -> Result<(), Errno> {
    split_folio_impl(mms, folio, new_order, Some(at), true)
}

fn split_folio_impl<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    folio: Folio<'a>,
    new_order: u32,
    at: Option<u64>,
    zero_remap: bool,
) -> Result<(), Errno> {
    let Some(first) = mms.first() else {
        return Err(Errno::EBUSY);
    };
    let ctx = first.ctx;
    let order = folio.order();
    let fail = |e: Errno| {
        ctx.thp.stats.inc(order, MthpStat::SplitFailed);
        if order == PMD_ORDER {
            ctx.thp.stats.count(VmEvent::ThpSplitPageFailed);
        }
        Err(e)
    };
    if folio.test(PageFlags::ZERO_PAGE) || ctx.is_zero_pfn(folio.pfn()) {
        return Err(Errno::EINVAL);
    }
    let Some((_, vpn)) = folio.anon_owner() else {
        return Err(Errno::EINVAL);
    };
    if new_order >= order || new_order == 1 || at.is_some_and(|a| a >= folio.nr_pages()) {
        return Err(Errno::EINVAL);
    }
    // Racy early check (Linux's `can_split_folio` before unmapping).
    if folio.extra_refs() > 1 {
        return fail(Errno::EAGAIN);
    }
    let va = vpn << PAGE_SHIFT;
    let mut walk = match rmap_walk(mms, folio, va) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    // The pin check and the folio lock under the LRU lock: LRU isolation
    // takes speculative references, but not while the lock is held.
    let Some(lock) = ctx.lru().lock_folio_checked(folio, 1) else {
        return fail(Errno::EAGAIN);
    };
    // --- nothing fails from here on ---
    ctx.reservation_break(folio);
    let saved = try_to_unmap(&mut walk, folio);
    let maps = saved.len() as u32;
    // Unmapped everywhere: split the metadata.
    ctx.deferred_split_remove(folio);
    let anon = folio.is_anon();
    let plan = match at {
        None => uniform_plan(order, new_order),
        Some(a) => buddy_plan(order, new_order, a, anon),
    };
    let (owner, _) = folio.anon_owner().expect("checked above");
    let subs = lock.split_meta(&plan);
    // The pieces join the LRU where the folio was (Linux's
    // `lru_add_split_folio`).
    let heads: Vec<u32> = subs.iter().map(|s| s.folio().idx()).collect();
    ctx.lru().split_pieces(ctx.buddy, &heads);
    // The splitter's new references on all but the first sub-folio (the
    // first keeps the caller's); dropped last, after the sub-folios'
    // locks and the page-table locks, so unmapped sub-folios are freed
    // then.
    let refs: Vec<FolioRef<'a>> = subs[1..]
        .iter()
        .map(|s| FolioRef::from_raw(s.folio()))
        .collect();
    let stats = &ctx.thp.stats;
    stats.inc(order, MthpStat::Split);
    if order == PMD_ORDER {
        stats.count(VmEvent::ThpSplitPage);
    }
    if maps > 0 {
        stats.dec(order, MthpStat::NrAnon);
    }
    // Remap: runs of consecutive pages of one sub-folio in one space.
    let sub_of = |page: u64| -> Folio<'a> {
        let pfn = folio.pfn() + page;
        subs.iter()
            .find(|s| pfn >= s.pfn() && pfn < s.pfn() + s.nr_pages())
            .expect("the plan covers the folio")
            .folio()
    };
    for s in &subs {
        let first = s.pfn() - folio.pfn();
        s.set_anon_owner(owner, vpn + first);
    }
    restore_mappings(
        ctx,
        &mut walk,
        &saved,
        folio.pfn(),
        sub_of,
        zero_remap && anon,
    );
    for s in &subs {
        let maps = s.large_mapcount();
        if maps > 0 {
            stats.inc(s.order(), MthpStat::NrAnon);
            if s.order() >= 2 && (maps as u64) < s.nr_pages() {
                ctx.deferred_split_folio(s.folio());
            }
        }
    }
    drop(subs);
    drop(walk);
    drop(refs);
    Ok(())
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Split every large anonymous folio mapped in `[start, end)` of this
    /// space to `new_order` (the `/sys/kernel/debug/split_huge_pages` file's
    /// `pid,start,end[,order]` form).  Only this space's mappings are
    /// visited, so a folio also mapped elsewhere (shared after fork) is not
    /// split — use [`Mm::split_huge_pages_in`] with every live space.
    pub fn split_huge_pages(&self, start: u64, end: u64, new_order: u32) -> SplitCount {
        self.split_huge_pages_in(&[self], start, end, new_order)
    }

    /// As [`Mm::split_huge_pages`], finding the mappings in `mms` (which
    /// should include `self`).  Folios whose order is not above `new_order`
    /// are skipped; failed splits are counted in `split_failed`.
    pub fn split_huge_pages_in(
        &self,
        mms: &[&Mm<'a, A>],
        start: u64,
        end: u64,
        new_order: u32,
    ) -> SplitCount {
        let mut count = SplitCount::default();
        for f in self.large_folios_in(start, end) {
            if f.order() > new_order {
                count.found += 1;
                if split_folio_to_order(mms, *f, new_order).is_ok() {
                    count.split += 1;
                }
            }
        }
        count
    }

    /// The distinct large anonymous folios mapped in `[start, end)`, each
    /// with a reference taken for the caller.
    pub(crate) fn large_folios_in(&self, start: u64, end: u64) -> Vec<FolioRef<'a>> {
        let _vmas = self.mmap_read();
        let pt = self.lock_pt();
        let mut out: Vec<FolioRef<'a>> = Vec::new();
        let mut va = start & !(PAGE_SIZE - 1);
        while va < end {
            let w = pt.lookup(va);
            let step = crate::paging::level_size(w.level);
            if let Some(l) = w.entry.leaf()
                && !self.ctx.is_zero_pfn(l.pfn)
                && let Some(f) = self.ctx.folio(l.pfn)
                && f.is_large()
                && f.is_anon()
                && out.last().is_none_or(|g| **g != f)
                && !out.iter().any(|g| **g == f)
            {
                out.push(f.get_ref());
            }
            va = (va & !(step - 1)) + step;
        }
        out
    }
}

impl<'a> MmCtx<'a> {
    /// The deferred-split shrinker (Linux's `deferred_split_scan`): look at
    /// up to `max` queued folios, oldest first.
    ///
    /// * A partially mapped folio is split to order 0, as Linux's
    ///   `split_folio` (its unmapped pages are freed at once; zero-filled
    ///   mapped pages go to the shared zero page).  Splitting only to the
    ///   largest order whose pieces are all mapped would keep more large
    ///   folios, but Linux does not, and the freed memory is the point.
    /// * A reservation (`aspace::reserve`, queued as partially mapped) is
    ///   split likewise, but only below the high watermark; otherwise it
    ///   goes back to the end of the queue.
    /// * A PMD folio queued at fault or collapse (not partially mapped) is
    ///   split only with `shrink_underused` and only if more than
    ///   `max_ptes_none` of its pages are zero-filled (never when
    ///   `max_ptes_none` is 511); those pages are then remapped to the zero
    ///   page.  Otherwise it goes back to the end of the queue.
    ///
    /// Folios whose split fails (pinned, locked, mapped in a space missing
    /// from `mms`) go back on the queue.  `mms` should be every live space.
    pub fn deferred_split_scan<A: PagingArch>(
        &self,
        mms: &[&Mm<'a, A>],
        max: usize,
    ) -> ShrinkCount {
        let mut c = ShrinkCount::default();
        // Reservations (`aspace::reserve`) are partially mapped by design:
        // split (broken) only under pressure, below the high watermark.
        let pressure = self.buddy.below(crate::physmem::buddy::Wmark::High);
        for _ in 0..max {
            let f = {
                let _irq = self.irq();
                let mut q = self.deferred.lock();
                let Some(f) = q.pop_front(self.buddy) else {
                    break;
                };
                // Queued folios are mapped, so alive: the reference is safe
                // to take under the queue lock (an unmap takes the folio off
                // the queue, under this lock, before dropping its last one).
                f.get_ref()
            };
            c.scanned += 1;
            if !pressure && f.test(PageFlags::RESERVATION) {
                // Back at the end, unless promoted meanwhile (the flag is
                // cleared before the promotion takes it off the queue,
                // under this lock).
                let _irq = self.irq();
                let mut q = self.deferred.lock();
                if f.test(PageFlags::RESERVATION) {
                    q.push_back(*f);
                }
                continue;
            }
            let partial = f.test(PageFlags::PARTIALLY_MAPPED);
            let underused = !partial
                && f.order() == PMD_ORDER
                && self.thp.config.shrink_underused()
                && self.thp_underused(*f);
            if (partial || underused) && f.is_mapped() {
                match split_folio_to_order(mms, *f, 0) {
                    Ok(()) if partial => c.split += 1,
                    Ok(()) => {
                        c.underused += 1;
                        self.thp.stats.count(VmEvent::ThpUnderusedSplitPage);
                    }
                    Err(_) => {
                        c.failed += 1;
                        self.requeue(*f);
                    }
                }
            } else {
                self.requeue(*f);
            }
        }
        c
    }

    /// Put a folio the shrinker took off the queue back at its end, if it
    /// is still a candidate (mapped, not split meanwhile).
    fn requeue(&self, f: Folio<'a>) {
        let irq = self.irq();
        let mut q = self.deferred.lock();
        if f.is_mapped() && f.is_large() {
            q.push_back(f);
        } else if f.test(PageFlags::PARTIALLY_MAPPED) {
            drop(q);
            drop(irq);
            self.deferred_split_remove(f);
        }
    }

    /// Linux's `thp_underused`: more than `max_ptes_none` pages of `f` are
    /// entirely zero (never with `max_ptes_none` = 511).
    pub(crate) fn thp_underused(&self, f: Folio<'a>) -> bool {
        let max_none = self
            .thp
            .config
            .khugepaged
            .max_ptes_none
            .load(core::sync::atomic::Ordering::Relaxed) as u64;
        if max_none >= f.nr_pages() - 1 {
            return false;
        }
        let mut zero = 0;
        let mut filled = 0;
        for p in f.pages() {
            if self.mem.is_zero(p.pa(), PAGE_SIZE) {
                zero += 1;
                if zero > max_none {
                    return true;
                }
            } else {
                filled += 1;
                if filled >= f.nr_pages() - max_none {
                    return false;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        assert_eq!(uniform_plan(9, 4).len(), 32);
        assert_eq!(
            buddy_plan(9, 0, 3, true),
            alloc::vec![0, 0, 0, 0, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(buddy_plan(9, 0, 511, true)[..2], [8, 7]);
        assert_eq!(buddy_plan(4, 2, 5, true), alloc::vec![2, 2, 3]);
        for at in 0..512 {
            let p = buddy_plan(9, 0, at, true);
            assert_eq!(p.iter().map(|&o| 1u64 << o).sum::<u64>(), 512);
            assert!(!p.contains(&1));
        }
    }
}
