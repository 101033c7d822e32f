//! A thpmaps-style report (after Linux's `tools/mm/thpmaps`): per VMA, how
//! many bytes each folio order maps, how much of it is contpte- or
//! PMD-mapped, and how many translation entries (TLB entries, ideally)
//! cover it: a 4 KiB PTE, a whole contiguous block and a PMD each count 1.
//! Built from a walk of the real page tables.  This file gathers the
//! numbers; how they are printed (the thpmaps text) is in
//! `abi::thpmaps`.

use alloc::vec::Vec;

use crate::addr::PAGE_SIZE;
use crate::paging::{PMD_LEVEL, PageTable, PagingArch, level_size};
use crate::thp::policy::{THP_ORDERS_ALL_ANON, orders_fitting};
use crate::vma::{VmFlags, VmaSet};

use super::Mm;

/// Orders 0..=9.
pub const REPORT_ORDERS: usize = 10;

/// One VMA's line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmaReport {
    pub start: u64,
    pub end: u64,
    pub flags: Option<VmFlags>,
    /// Bytes mapped by anonymous folios of each order (index = order).
    pub anon_by_order: [u64; REPORT_ORDERS],
    /// Bytes mapped to the shared zero page or the huge zero folio.
    pub zero_bytes: u64,
    /// Bytes mapped by contiguous-hint PTEs (arm64).
    pub cont_bytes: u64,
    /// Bytes mapped by PMD leaves (anonymous and huge zero).
    pub pmd_bytes: u64,
    /// Bytes of anonymous folios mapped by PMD leaves: smaps's and
    /// meminfo's `AnonHugePages`.  The huge zero folio is not counted, as in
    /// Linux: it is nobody's anonymous memory.
    pub anon_huge_bytes: u64,
    /// Of the mapped bytes, those of shmem folios (smaps's `Rss` counts
    /// them, `Anonymous` does not).
    pub shmem_bytes: u64,
    /// Bytes of shmem folios mapped by PMD leaves (smaps's
    /// `ShmemPmdMapped`; not in `AnonHugePages`).
    pub shmem_pmd_bytes: u64,
    /// Translation entries covering the VMA's mappings.
    pub entries: u64,
    /// smaps's `THPeligible`: the knobs, the VMA's flags and the space's
    /// `PR_SET_THP_DISABLE` allow some anonymous THP size that fits in the
    /// VMA.
    pub thp_eligible: bool,
    /// smaps's sharing breakdown of the anonymous pages (zero pages are
    /// not counted, as in Linux): bytes of pages mapped once ("private")
    /// or more ("shared"), clean or dirty; see [`page_mapcount`].
    pub shared_clean: u64,
    pub shared_dirty: u64,
    pub private_clean: u64,
    pub private_dirty: u64,
    /// Bytes of anonymous pages mapped young (accessed).
    pub referenced: u64,
    /// Proportional set size in bytes scaled by 2^[`PSS_SHIFT`]: each page
    /// divided by its mapcount; and the part of it that is dirty.
    pub pss: u64,
    pub pss_dirty: u64,
    /// Bytes swapped out (swap entries): smaps's `Swap`.
    pub swap: u64,
    /// The same divided among the entries naming each slot (fork shares
    /// them), scaled by 2^[`PSS_SHIFT`]: smaps's `SwapPss`.
    pub swap_pss: u64,
}

/// Fixed-point shift of [`VmaReport::pss`] (Linux's `PSS_SHIFT`).
pub const PSS_SHIFT: u32 = 12;

/// How many times page `idx` of `f`, mapped by address space `mm_id`, is
/// mapped: Linux 6.12's per-page mapcount, derived from the folio's owner
/// slots (`Folio::add_mapcount_mm`), since an anonymous page is mapped at
/// most once per address space.  Exact when the page is anon-exclusive,
/// when `mm_id` holds every mapping of the folio (1), and when exactly
/// one other space maps it and that space maps every page (2: fork's
/// sharing, before either side unmaps).  Otherwise, with a second space
/// mapping only part of the folio or a third space, which pages the
/// others map is not recorded; the answer then never says "mapped once"
/// (Linux 6.15's `folio_maybe_mapped_shared` rule): the folio's average
/// per-page mapcount, at least 2.
pub fn page_mapcount(f: &crate::physmem::folio::Folio<'_>, idx: u64, mm_id: u64) -> u64 {
    if f.page(idx).is_anon_exclusive() || !f.maybe_mapped_shared() {
        return 1;
    }
    shared_page_mapcount(f, mm_id)
}

/// [`page_mapcount`] of a page of a maybe-shared folio that is not
/// anon-exclusive: the same for every page of the folio.
fn shared_page_mapcount(f: &crate::physmem::folio::Folio<'_>, mm_id: u64) -> u64 {
    let ids = f.mm_ids();
    let total = f.large_mapcount().max(0) as u64;
    let entire = f.entire_mapcount().max(0) as u64;
    let nr = f.nr_pages();
    let own = ids.mapcount_of(mm_id) as u64;
    let other = ids
        .slots
        .iter()
        .flatten()
        .find(|s| s.0 != mm_id & crate::physmem::folio::MAX_MM_ID)
        .map(|s| s.1 as u64);
    if let Some(oc) = other
        && own > 0
        && own + oc == total
    {
        // Two spaces, both with slots: does the other one map every page?
        let other_all = match entire {
            0 => oc == nr,
            2 => true,
            // One PMD mapping: ours if we have a single mapping (and the
            // other several), theirs if we have several.
            _ if own > 1 => true,
            _ => oc == nr && oc > 1,
        };
        if other_all {
            return 2;
        }
    }
    let ptes = total.saturating_sub(entire);
    (entire + ptes.div_ceil(nr)).max(2)
}

impl VmaReport {
    /// All bytes mapped (anonymous and zero).
    pub fn mapped_bytes(&self) -> u64 {
        self.anon_by_order.iter().sum::<u64>() + self.zero_bytes
    }
}

/// The report of one address space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThpMaps {
    /// The entry format's name.
    pub arch: &'static str,
    pub vmas: Vec<VmaReport>,
}

impl ThpMaps {
    /// The sum over all VMAs (start/end/flags left empty).
    pub fn total(&self) -> VmaReport {
        let mut t = VmaReport::default();
        for v in &self.vmas {
            for (o, b) in v.anon_by_order.iter().enumerate() {
                t.anon_by_order[o] += b;
            }
            t.zero_bytes += v.zero_bytes;
            t.cont_bytes += v.cont_bytes;
            t.pmd_bytes += v.pmd_bytes;
            t.anon_huge_bytes += v.anon_huge_bytes;
            t.shmem_bytes += v.shmem_bytes;
            t.shmem_pmd_bytes += v.shmem_pmd_bytes;
            t.entries += v.entries;
        }
        t
    }

    /// The line of the VMA containing `addr`.
    pub fn vma_at(&self, addr: u64) -> Option<&VmaReport> {
        self.vmas.iter().find(|v| v.start <= addr && addr < v.end)
    }
}

impl<'a, A: PagingArch> Mm<'a, A> {
    pub(crate) fn report(&self, vmas: &VmaSet, pt: &PageTable<'a, A>) -> ThpMaps {
        let ctx = self.ctx;
        let mut lines: Vec<VmaReport> = vmas
            .iter()
            .map(|v| VmaReport {
                start: v.start,
                end: v.end,
                flags: Some(v.flags),
                thp_eligible: orders_fitting(
                    ctx.thp.config.allowable_orders(self.thp_hints(v)) & THP_ORDERS_ALL_ANON,
                    v.start,
                    v.end,
                ) != 0,
                ..VmaReport::default()
            })
            .collect();
        let block = A::CONT_PTES as u64 * PAGE_SIZE;
        pt.for_each_leaf(&mut |va, l| {
            let Ok(i) = lines.binary_search_by(|r| {
                if r.end <= va {
                    core::cmp::Ordering::Less
                } else if r.start > va {
                    core::cmp::Ordering::Greater
                } else {
                    core::cmp::Ordering::Equal
                }
            }) else {
                return;
            };
            let r = &mut lines[i];
            let size = level_size(l.level);
            if ctx.is_zero_pfn(l.pfn) {
                r.zero_bytes += size;
            } else if let Some(f) = ctx.folio(l.pfn) {
                r.anon_by_order[(f.order() as usize).min(REPORT_ORDERS - 1)] += size;
                if f.is_shmem() {
                    r.shmem_bytes += size;
                }
                if l.attrs.young {
                    r.referenced += size;
                }
                let dirty = l.attrs.dirty || f.test(crate::physmem::frame_flags::PageFlags::DIRTY);
                let mut account = |bytes: u64, mapcount: u64| {
                    let pss = (bytes << PSS_SHIFT) / mapcount;
                    r.pss += pss;
                    let bucket = match (mapcount == 1, dirty) {
                        (true, false) => &mut r.private_clean,
                        (true, true) => &mut r.private_dirty,
                        (false, false) => &mut r.shared_clean,
                        (false, true) => &mut r.shared_dirty,
                    };
                    *bucket += bytes;
                    if dirty {
                        r.pss_dirty += pss;
                    }
                };
                if !f.maybe_mapped_shared() {
                    // One space maps the folio (the common case): every
                    // page is mapped once.
                    account(size, 1);
                } else {
                    let shared = shared_page_mapcount(&f, self.id);
                    for p in 0..size / PAGE_SIZE {
                        let ae = f.page(l.pfn + p - f.pfn()).is_anon_exclusive();
                        account(PAGE_SIZE, if ae { 1 } else { shared });
                    }
                }
            }
            if l.level == PMD_LEVEL {
                r.pmd_bytes += size;
                match ctx.folio(l.pfn) {
                    Some(f) if f.is_shmem() => r.shmem_pmd_bytes += size,
                    Some(_) if !ctx.is_zero_pfn(l.pfn) => r.anon_huge_bytes += size,
                    _ => {}
                }
                r.entries += 1;
            } else if l.cont {
                r.cont_bytes += size;
                // One entry per block, counted at its first page (or at the
                // VMA's start if a VMA boundary cuts the block).
                if va.is_multiple_of(block) || va == r.start {
                    r.entries += 1;
                }
            } else {
                r.entries += 1;
            }
        });
        if self.swapents() > 0 {
            for r in lines.iter_mut() {
                self.report_swap(pt, r);
            }
        }
        // A shmem VMA's `Swap:` counts its object's swapped pages in the
        // VMA's range (Linux's `shmem_swap_usage`; no `SwapPss`).  In a
        // writable private one, as Linux's `smaps_pte_hole`, only those
        // at empty entries: a private copy's own swap entry is counted
        // above, and the object's page behind it is not mapped there.
        for (v, r) in vmas.iter().zip(lines.iter_mut()) {
            let Some(o) = v.shmem.and_then(|id| self.shmem_object(id)) else {
                continue;
            };
            let pages = v.len() >> crate::addr::PAGE_SHIFT;
            let n = o.swapped_in(v.pgoff, v.pgoff + pages);
            if n == 0 {
                continue;
            }
            let private_writable =
                !v.flags.contains(VmFlags::SHARED) && v.flags.contains(VmFlags::WRITE);
            r.swap += PAGE_SIZE
                * if private_writable {
                    (0..pages)
                        .filter(|&i| {
                            o.find_swap(v.pgoff + i).is_some()
                                && pt
                                    .read_pte(v.start + i * PAGE_SIZE)
                                    .is_none_or(|e| e.is_absent())
                        })
                        .count() as u64
                } else {
                    n
                };
        }
        ThpMaps {
            arch: A::NAME,
            vmas: lines,
        }
    }

    /// The swap entries of `r`'s range: `Swap` and `SwapPss`.
    fn report_swap(&self, pt: &PageTable<'a, A>, r: &mut VmaReport) {
        for step in pt.walk_range(r.start, r.end) {
            let crate::paging::Step::Ptes(run) = step else {
                continue;
            };
            for i in 0..run.len() {
                if let crate::paging::Entry::Swap(e) = run.entry(i)
                    && e.is_swap()
                {
                    r.swap += PAGE_SIZE;
                    let refs = self
                        .ctx
                        .swap
                        .area(e.ty)
                        .map_or(1, |a| a.map.count(e.offset).max(1) as u64);
                    r.swap_pss += (PAGE_SIZE << PSS_SHIFT) / refs;
                }
            }
        }
    }
}
