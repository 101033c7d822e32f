//! The address-space invariant checker (tests now; the robustness issue's
//! storms later).  It walks the real page tables of every given address
//! space and compares what it finds with the folios' metadata.
//!
//! Checked:
//! * every entry lies in a VMA and has at most the VMA's rights (write only
//!   on anon-exclusive pages, never on zero pages);
//! * every non-zero frame belongs to an allocated anonymous folio; PMD
//!   leaves map a whole order-9 folio;
//! * per folio: large mapcount = PTE + PMD mappings found, entire mapcount
//!   = PMD mappings found, refcount ≥ mappings found;
//! * anon-exclusive only on pages mapped by exactly one address space;
//! * contiguous blocks obey the hardware rules (aligned, consecutive frames,
//!   equal attributes) and lie inside one folio;
//! * deposited tables = PMD leaves, per address space;
//! * each space's anon RSS = anonymous pages mapped;
//! * queued deferred-split folios are large, mapped and marked partially
//!   mapped (or PMD-sized: underused-shrinker candidates).
//!
//! Give it *every* live address space of the context: mappings in a space
//! left out look like mapcount errors.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::addr::{PAGE_SIZE, PMD_ORDER};
use crate::emu::check_cont_blocks;
use crate::folio::Folio;
use crate::frame_flags::PageFlags;
use crate::paging::{PMD_LEVEL, PTE_LEVEL, PagingArch};

use super::{Mm, vma_perms};

#[derive(Default)]
struct FolioSeen<'a> {
    folio: Option<Folio<'a>>,
    ptes: u64,
    pmds: u64,
}

/// Check the invariants over `mms` (all the live address spaces of one
/// context).  Takes each space's locks in turn.
pub fn check_invariants<'a, A: PagingArch>(mms: &[&Mm<'a, A>]) -> Result<(), String> {
    let Some(first) = mms.first() else {
        return Ok(());
    };
    let ctx = first.ctx;
    let mut folios: BTreeMap<u64, FolioSeen<'a>> = BTreeMap::new();
    // Page frame -> the address spaces mapping it.
    let mut page_mms: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut errors: Vec<String> = Vec::new();
    let block = A::CONT_PTES as u64;
    for mm in mms {
        let vmas = mm.vmas.read();
        let pt = mm.lock_pt();
        let mut pmd_leaves = 0usize;
        let mut rss = 0u64;
        pt.for_each_leaf(&mut |va, l| {
            let err = |e: &mut Vec<String>, what: String| {
                e.push(format!("mm {} va {va:#x} ({l:?}): {what}", mm.id));
            };
            let size_pages = if l.level == PMD_LEVEL {
                pmd_leaves += 1;
                512
            } else {
                1
            };
            let Some(v) = vmas.find(va) else {
                err(&mut errors, "mapped outside every VMA".into());
                return;
            };
            if l.level == PMD_LEVEL && va + 512 * PAGE_SIZE > v.end {
                err(&mut errors, "PMD leaf straddles the VMA end".into());
            }
            let vp = vma_perms(v.flags);
            let p = l.attrs.perms;
            if p.accessible() != vp.accessible()
                || (p.write && !vp.write)
                || p.exec != (vp.exec && p.accessible())
                || !p.user
            {
                err(&mut errors, format!("rights {p:?} but VMA {:?}", v.flags));
            }
            if ctx.is_zero_pfn(l.pfn) {
                if p.write || !l.attrs.special {
                    err(
                        &mut errors,
                        "zero page mapped writable or not special".into(),
                    );
                }
                return;
            }
            if l.attrs.special {
                err(&mut errors, "special entry on a non-zero frame".into());
            }
            let Some(f) = ctx.folio(l.pfn) else {
                err(
                    &mut errors,
                    "frame is not part of an allocated folio".into(),
                );
                return;
            };
            if !f.is_anon() {
                err(&mut errors, "folio is not anonymous".into());
            }
            rss += size_pages;
            let seen = folios.entry(f.pfn()).or_default();
            seen.folio = Some(f);
            if l.level == PMD_LEVEL {
                if f.order() != PMD_ORDER || f.pfn() != l.pfn {
                    err(
                        &mut errors,
                        format!("PMD maps part of an order-{} folio", f.order()),
                    );
                }
                seen.pmds += 1;
            } else {
                seen.ptes += 1;
            }
            for i in 0..size_pages {
                let pfn = l.pfn + i;
                page_mms.entry(pfn).or_default().insert(mm.id);
                if p.write && !f.page(pfn - f.pfn()).is_anon_exclusive() {
                    err(
                        &mut errors,
                        format!("writable but page {pfn:#x} not anon-exclusive"),
                    );
                }
            }
            if l.level == PTE_LEVEL && l.cont {
                let idx = (va / PAGE_SIZE) % block;
                let first_pfn = l.pfn.wrapping_sub(idx);
                if first_pfn < f.pfn() || first_pfn + block > f.pfn() + f.nr_pages() {
                    err(&mut errors, "contiguous block crosses its folio".into());
                }
            }
        });
        if let Err(e) = check_cont_blocks(&pt) {
            errors.push(format!("mm {}: {e}", mm.id));
        }
        if pt.deposited() != pmd_leaves {
            errors.push(format!(
                "mm {}: {} deposited tables for {pmd_leaves} PMD leaves",
                mm.id,
                pt.deposited()
            ));
        }
        if rss != mm.anon_rss() {
            errors.push(format!(
                "mm {}: anon RSS {} but {rss} pages mapped",
                mm.id,
                mm.anon_rss()
            ));
        }
        if let Err(e) = vmas.check_invariants() {
            errors.push(format!("mm {}: VMA set: {e}", mm.id));
        }
    }
    for (pfn, s) in &folios {
        let f = s.folio.expect("set with the entry");
        let maps = s.ptes + s.pmds;
        if f.large_mapcount() as u64 != maps {
            errors.push(format!(
                "folio {pfn:#x}: large mapcount {} but {maps} mappings found",
                f.large_mapcount()
            ));
        }
        if f.entire_mapcount() as u64 != s.pmds {
            errors.push(format!(
                "folio {pfn:#x}: entire mapcount {} but {} PMD mappings",
                f.entire_mapcount(),
                s.pmds
            ));
        }
        if (f.refcount() as u64) < maps {
            errors.push(format!(
                "folio {pfn:#x}: refcount {} below {maps} mappings",
                f.refcount()
            ));
        }
        for pg in f.pages() {
            if pg.is_anon_exclusive() {
                let n = page_mms.get(&pg.pfn()).map_or(0, |s| s.len());
                if n != 1 {
                    errors.push(format!(
                        "page {:#x}: anon-exclusive but mapped by {n} address spaces",
                        pg.pfn()
                    ));
                }
            }
        }
    }
    for f in ctx.deferred_split_snapshot() {
        let partial = f.test(PageFlags::PARTIALLY_MAPPED);
        if f.order() < 2 || !f.is_mapped() || !(partial || f.order() == PMD_ORDER) {
            errors.push(format!("deferred-split queue holds {f:?}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        errors.truncate(20);
        Err(errors.join("\n"))
    }
}
