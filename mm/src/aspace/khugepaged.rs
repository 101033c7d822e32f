//! khugepaged's scan logic (Linux's mm/khugepaged.c), portable: the
//! registry of address spaces to scan, the cursor, and one pass.  The
//! kernel's thread (kernel/src/mem/khugepaged.rs) adds the sleeping and waking;
//! host tests call [`khugepaged_scan_pass`] directly.
//!
//! # Registry
//! An address space registers (once) on a fault in a THP-eligible VMA and on
//! `MADV_HUGEPAGE` ([`Mm::khugepaged_registered`]); its mm id goes on the
//! context's list, and comes off it when the space is dropped.  The list
//! holds ids, not references: the pass resolves an id to a live space
//! through the caller's `with_mm`, so the registry never keeps a space
//! alive (Linux's `mm_slot` holds an `mm_count` reference instead; here the
//! kernel's own registry of spaces plays that part).  A space `with_mm` no
//! longer finds is dropped from the list.
//!
//! # A pass (Linux's `khugepaged_do_scan`)
//! Resume at the cursor (space, address); visit the 2 MiB-aligned ranges
//! that lie fully inside eligible VMAs; each range scanned costs 512 units
//! of progress, each skipped VMA 1; stop once `pages_to_scan` units are
//! spent.  When the cursor passes the last registered space it wraps and
//! `full_scans` is counted.  An allocation failure ends the pass (the
//! thread then sleeps `alloc_sleep_millisecs`; Linux sleeps once and ends
//! the pass on a second failure).
//!
//! Each call to `with_mm` does one range, so the caller decides what a
//! step may not be interrupted by (the kernel disables preemption inside
//! it, because the space's locks are spin locks) and is preempted between
//! ranges — "mid-scan" — safely.
//!
//! # Per range (Linux's `hpage_collapse_scan_pmd` + `mthp_collapse`)
//! A shmem VMA the shmem knobs allow the PMD size in has its window
//! collapsed through the page cache (`shmem_collapse.rs`, Linux's
//! `hpage_collapse_scan_file`), reaching every space that maps the object
//! through the pass's `each_mm`.
//!
//! The orders tried in an anonymous VMA are its allowed orders (2..=9).  Starting at
//! offset 0 with the highest order that fits the offset's alignment, a
//! window whose occupied entries (present, not the zero page) reach
//! 2^order − max_ptes_none(order) is collapsed; success (or a window
//! already mapped by a folio that large) advances by the window, a failure
//! tries the next lower order, and when none works the offset advances by
//! the smallest allowed order.  The PMD order skips the occupancy
//! pre-check, so its refusals are counted (`collapse_exceed_none_pte`).

use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use crate::addr::{PAGE_SIZE, PMD_ORDER, PMD_SIZE};
use crate::paging::PagingArch;
use crate::thp::{THP_ORDERS_ALL_ANON, policy::orders_high_to_low};

use super::Mm;
use super::collapse::{CollapseError, Limits};
use super::ctx::MmCtx;
use super::shmem_collapse::EachMm;

/// How a pass reaches a live address space by mm id: run the callback on
/// it and return true, or return false if the space is gone.
pub type WithMm<'f, 'a, A> = dyn FnMut(u64, &mut dyn FnMut(&Mm<'a, A>)) -> bool + 'f;

/// Progress units for one scanned PMD range (Linux: `HPAGE_PMD_NR`).
const RANGE_PROGRESS: u64 = 512;

/// The registry and the scan cursor (behind `MmCtx::khugepaged`).
#[derive(Default)]
pub(crate) struct KhugepagedList {
    /// Registered mm ids, in registration order.
    ids: Vec<u64>,
    /// Index into `ids` of the space being scanned, and where in it.
    cursor: usize,
    addr: u64,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Progress units spent.
    pub progress: u64,
    /// Windows collapsed (PMD and mTHP).
    pub collapsed: u64,
    /// Full scans completed during the pass.
    pub full_scans: u64,
    /// The pass ended on an allocation failure.
    pub alloc_failed: bool,
}

/// What one range step did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Step {
    progress: u64,
    collapsed: u64,
    alloc_failed: bool,
    /// Where to continue in this space; `None` when it is done.
    next: Option<u64>,
}

impl<'a> MmCtx<'a> {
    /// Register `id` (idempotent).  The registry lock is a leaf (taken
    /// under the page-table lock by the fault path).
    pub(crate) fn khugepaged_enter(&self, id: u64) {
        let _irq = self.irq();
        let mut l = self.khugepaged.lock();
        if !l.ids.contains(&id) {
            l.ids.push(id);
        }
    }

    /// Unregister `id` (the space is going away).
    pub(crate) fn khugepaged_exit(&self, id: u64) {
        let _irq = self.irq();
        let mut l = self.khugepaged.lock();
        if let Some(i) = l.ids.iter().position(|&x| x == id) {
            l.ids.remove(i);
            if i < l.cursor {
                l.cursor -= 1;
            } else if i == l.cursor {
                l.addr = 0;
            }
            if l.cursor >= l.ids.len() {
                l.cursor = 0;
            }
        }
    }

    /// The registered mm ids, in scan order.
    pub fn khugepaged_mm_ids(&self) -> Vec<u64> {
        let _irq = self.irq();
        self.khugepaged.lock().ids.clone()
    }

    /// Whether any space is registered (Linux's `khugepaged_has_work`).
    pub fn khugepaged_has_work(&self) -> bool {
        let _irq = self.irq();
        !self.khugepaged.lock().ids.is_empty()
    }
}

/// One khugepaged pass of up to `pages_to_scan` progress units (see the
/// module doc).  `with_mm(id, f)` must run `f` on the live space with mm id
/// `id` and return true, or return false if there is none.
pub fn khugepaged_scan_pass<'a, A: PagingArch>(
    ctx: &MmCtx<'a>,
    with_mm: &mut WithMm<'_, 'a, A>,
    mut each_mm: Option<&mut EachMm<'_, 'a, A>>,
    pages_to_scan: u64,
) -> PassStats {
    let mut p = PassStats::default();
    while p.progress < pages_to_scan {
        let (id, addr) = {
            let _irq = ctx.irq();
            let l = ctx.khugepaged.lock();
            match l.ids.get(l.cursor) {
                Some(&id) => (id, l.addr),
                None => break,
            }
        };
        let budget = pages_to_scan - p.progress;
        let mut step = Step::default();
        let each = each_mm.as_deref_mut();
        let mut each = each;
        if !with_mm(id, &mut |mm| {
            step = mm.khugepaged_scan_step_each(addr, budget, each.as_deref_mut())
        }) {
            ctx.khugepaged_exit(id);
            continue;
        }
        p.progress += step.progress.max(1);
        p.collapsed += step.collapsed;
        {
            let _irq = ctx.irq();
            let mut l = ctx.khugepaged.lock();
            if l.ids.get(l.cursor) == Some(&id) {
                match step.next {
                    Some(a) => l.addr = a,
                    None => {
                        l.addr = 0;
                        l.cursor += 1;
                        if l.cursor >= l.ids.len() {
                            l.cursor = 0;
                            ctx.thp.stats.inc_full_scans();
                            p.full_scans += 1;
                        }
                    }
                }
            }
        }
        if step.alloc_failed {
            p.alloc_failed = true;
            break;
        }
        if p.full_scans > 0 {
            // Linux passes the list head at most once per pass, so a small
            // set of spaces is not rescanned within one pass.
            break;
        }
    }
    p
}

/// Passes until one full scan completes (or nothing is registered, or
/// `max_passes` passes ran): what tests use to "scan everything now".
pub fn khugepaged_full_scan<'a, A: PagingArch>(
    ctx: &MmCtx<'a>,
    with_mm: &mut WithMm<'_, 'a, A>,
    mut each_mm: Option<&mut EachMm<'_, 'a, A>>,
    max_passes: usize,
) -> PassStats {
    let pages = || ctx.thp.config.khugepaged.pages_to_scan.load(Relaxed) as u64;
    let mut total = PassStats::default();
    for _ in 0..max_passes {
        let p = khugepaged_scan_pass(ctx, with_mm, each_mm.as_deref_mut(), pages());
        total.add(&p);
        if p.full_scans > 0 || !ctx.khugepaged_has_work() {
            break;
        }
    }
    total
}

impl PassStats {
    /// Add what another pass did.
    fn add(&mut self, p: &PassStats) {
        self.progress += p.progress;
        self.collapsed += p.collapsed;
        self.full_scans += p.full_scans;
        self.alloc_failed |= p.alloc_failed;
    }
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Scan the next eligible PMD range at or after `from` (one range per
    /// call; see the module doc).
    pub fn khugepaged_scan_step(&self, from: u64, budget: u64) -> Step {
        self.khugepaged_scan_step_each(from, budget, None)
    }

    /// [`Self::khugepaged_scan_step`] reaching every space through
    /// `each_mm` (a shmem collapse unmaps the range from all of them).
    pub fn khugepaged_scan_step_each(
        &self,
        from: u64,
        budget: u64,
        each_mm: Option<&mut EachMm<'_, 'a, A>>,
    ) -> Step {
        let mut step = Step::default();
        let range = {
            let Some(vmas) = self.mmap_try_read() else {
                // Contended: skip this space for now (Linux's trylock).
                step.progress = 1;
                return step;
            };
            let cfg = &self.ctx.thp.config;
            let mut found = None;
            for v in vmas.iter().filter(|v| v.end > from) {
                let orders = cfg.allowable_orders(self.thp_hints(v)) & THP_ORDERS_ALL_ANON;
                let lo = v.start.max(from).div_ceil(PMD_SIZE) * PMD_SIZE;
                let hi = v.end / PMD_SIZE * PMD_SIZE;
                if orders != 0 && v.is_anonymous() && lo < hi {
                    found = Some(Ok((lo, orders)));
                    break;
                }
                if v.is_shmem()
                    && lo < hi
                    && let Some(w) = self.khugepaged_file_window(v, lo)
                {
                    found = Some(Err(w));
                    break;
                }
                step.progress += 1;
                if step.progress >= budget {
                    step.next = Some(v.end);
                    return step;
                }
            }
            found
        };
        let (va, orders) = match range {
            None => return step,
            Some(Ok(r)) => r,
            Some(Err(w)) => {
                step.progress += RANGE_PROGRESS;
                step.next = Some(w.va + PMD_SIZE);
                match self.khugepaged_collapse_file(&w, each_mm) {
                    Ok(()) => step.collapsed = 1,
                    Err(CollapseError::AllocFailed) => step.alloc_failed = true,
                    Err(_) => {}
                }
                return step;
            }
        };
        step.progress += RANGE_PROGRESS;
        step.next = Some(va + PMD_SIZE);
        let (collapsed, alloc_failed) = self.khugepaged_scan_range(va, orders);
        step.collapsed = collapsed;
        step.alloc_failed = alloc_failed;
        step
    }

    /// The occupied-entry bitmap of the PMD range at `va` (present and not
    /// the zero page); `None` if there is no PTE table.
    fn occupied(&self, va: u64) -> Option<[u64; 8]> {
        let _vmas = self.mmap_read();
        let pt = self.lock_pt();
        let run = pt.pte_run(va, 512)?;
        let mut bits = [0u64; 8];
        for i in 0..run.len() {
            if run.leaf(i).is_some_and(|l| !self.ctx.is_zero_pfn(l.pfn)) {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        Some(bits)
    }

    /// Collapse what qualifies in the PMD range at `va` with `orders`
    /// allowed.  Returns (windows collapsed, allocation failed).
    fn khugepaged_scan_range(&self, va: u64, orders: u32) -> (u64, bool) {
        let thp = self.ctx.thp;
        let stats = &thp.stats;
        let mut collapsed = 0;
        if orders & !(1 << PMD_ORDER) == 0 {
            // PMD order only: Linux's classic scan.
            return match self.collapse_window(va, PMD_ORDER, Limits::khugepaged(thp, 9), None) {
                Ok(()) => {
                    stats.add_pages_collapsed(1);
                    (1, false)
                }
                Err(CollapseError::AllocFailed) => (0, true),
                Err(_) => (0, false),
            };
        }
        let Some(bits) = self.occupied(va) else {
            return (0, false);
        };
        let count = |off: u64, n: u64| {
            (off..off + n)
                .filter(|&i| bits[(i / 64) as usize] & (1 << (i % 64)) != 0)
                .count() as u64
        };
        let min_order = orders.trailing_zeros();
        let none_knob = thp.config.khugepaged.max_ptes_none.load(Relaxed) as u64;
        let mut off = 0u64;
        while off < 512 {
            let align = if off == 0 {
                PMD_ORDER
            } else {
                off.trailing_zeros()
            };
            let mask = orders & ((2u32 << align.min(PMD_ORDER)) - 1);
            let mut advanced = false;
            for o in orders_high_to_low(mask) {
                let n = 1u64 << o;
                let lim = Limits::khugepaged(thp, o);
                if o < PMD_ORDER {
                    let need = if none_knob == 511 { 1 } else { n };
                    if count(off, n) < need {
                        continue;
                    }
                }
                match self.collapse_window(va + off * PAGE_SIZE, o, lim, None) {
                    Ok(()) => {
                        collapsed += 1;
                        stats.add_pages_collapsed(1);
                        off += n;
                        advanced = true;
                        break;
                    }
                    Err(CollapseError::AlreadyMapped) => {
                        off += n;
                        advanced = true;
                        break;
                    }
                    Err(CollapseError::AllocFailed) => return (collapsed, true),
                    Err(_) => {}
                }
            }
            if !advanced {
                off += 1 << min_order;
            }
        }
        (collapsed, false)
    }
}
