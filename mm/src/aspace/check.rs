//! The address-space invariant checker (host tests, the kernel's storm and
//! self-tests).  It walks the real page tables of every given address space
//! and the allocator's free lists, and compares what it finds with the
//! folios' metadata.  Portable: no emulator code, so the kernel runs it on
//! its live tables.
//!
//! Checked:
//! * every entry lies in a VMA and has at most the VMA's rights (write only
//!   on anon-exclusive pages, never on zero pages);
//! * every non-zero frame belongs to an allocated anonymous folio, or to
//!   a shmem folio in a shmem VMA (and only there); a private shmem VMA
//!   (`MAP_PRIVATE` of a file) holds both, its shmem folios read-only and
//!   by PTEs; PMD leaves map a whole order-9 folio;
//! * per folio: large mapcount = PTE + PMD mappings found, entire mapcount
//!   = PMD mappings found, references ≥ mappings found + known pins;
//! * anon-exclusive only on pages mapped by exactly one address space, and
//!   every writable anonymous entry maps anon-exclusive pages (shmem pages
//!   are shared writable);
//! * a reservation (`RESERVATION`) is large, partially mapped (queued so),
//!   by PTEs in its owner only, each page at its own offset from the
//!   owner's address;
//! * each space's shmem RSS = shmem pages mapped, and every shmem leaf
//!   maps the page its object's page cache holds at the VMA's index;
//! * contiguous blocks obey the hardware rules: all entries of an aligned
//!   block carry the hint, map consecutive frames from an aligned frame,
//!   inside one folio, with equal attributes (young/dirty aside), and only
//!   where the table uses hints;
//! * deposited tables = PMD leaves, per address space (the deposit chain is
//!   walked, not just its counter);
//! * each space's anon RSS = anonymous pages mapped (migration entries
//!   count as mappings of the page they name);
//! * each shmem cache a space maps: swap entries never overlap cached
//!   folios, are counted in the object's swapped pages and name in-use
//!   slots of an active area; cached folios are heads at their index;
//! * the anonymous LRU: lists well formed with their counts, every entry
//!   an allocated anonymous folio found once, and every mapped anonymous
//!   folio on exactly the list (or add batch) its flags name, or isolated
//!   with a reference beyond its mappings;
//! * queued deferred-split folios are large, anonymous and mapped, and
//!   either partially mapped (a page of theirs is mapped nowhere) or
//!   PMD-sized underused-shrinker candidates;
//! * no frame on the buddy free lists is mapped, part of an allocated
//!   folio, a page-table page or a deposit; and the allocator's own
//!   structural check (every frame free, allocated or reserved exactly
//!   once, counters adding up to the boot total) passes.
//!
//! Give it *every* live address space of the context, at a quiescent
//! moment (no other CPU changing mappings or allocating): mappings in a
//! space left out look like mapcount errors.  Errors name the address
//! space, the virtual address or the pfn, and what broke.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::addr::{PAGE_SIZE, PMD_ORDER};
use crate::paging::{Leaf, PMD_LEVEL, PTE_LEVEL, PageTable, PagingArch};
use crate::physmem::folio::Folio;
use crate::physmem::frame_flags::PageFlags;

use super::{Mm, vma_perms};
use crate::vma::VmFlags;

#[derive(Default)]
struct FolioSeen<'a> {
    folio: Option<Folio<'a>>,
    ptes: u64,
    pmds: u64,
    /// Mappings (PTEs, PMDs, migration entries) per address space.
    by_mm: BTreeMap<u64, u64>,
}

/// Check the invariants over `mms` (all the live address spaces of one
/// context), with no known pins.  Takes each space's locks in turn.
pub fn check_invariants<'a, A: PagingArch>(mms: &[&Mm<'a, A>]) -> Result<(), String> {
    check_invariants_pinned(mms, &[])
}

/// As [`check_invariants`], with `pins`: (pfn of a folio's head, extra
/// references the caller knows it holds), which the folio's references
/// must cover on top of its mappings.
pub fn check_invariants_pinned<'a, A: PagingArch>(
    mms: &[&Mm<'a, A>],
    pins: &[(u64, u64)],
) -> Result<(), String> {
    let Some(first) = mms.first() else {
        return Ok(());
    };
    let ctx = first.ctx;
    let mut folios: BTreeMap<u64, FolioSeen<'a>> = BTreeMap::new();
    // Page frame -> the address spaces mapping it.
    let mut page_mms: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut errors: Vec<String> = Vec::new();
    // Page-table pages and deposits of every space (none may be free).
    let mut table_pages: BTreeSet<u64> = BTreeSet::new();
    for mm in mms {
        let vmas = mm.mmap_read();
        let pt = mm.lock_pt();
        let mut pmd_leaves = 0usize;
        let mut rss = 0u64;
        let mut shmem_rss = 0u64;
        // Contiguous-hint leaves by block address.
        let mut blocks: BTreeMap<u64, Vec<(u64, Leaf)>> = BTreeMap::new();
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
            // A PROT_NONE leaf in an accessible VMA is a NUMA hinting entry.
            if (p.accessible() && !vp.accessible())
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
            let shmem = f.is_shmem();
            // A private file VMA maps both: the object's folios read-only
            // and its private anonymous copies.
            let private_file = v.is_shmem() && !v.flags.contains(VmFlags::SHARED);
            let private_copy = private_file && !shmem;
            if shmem != v.is_shmem() && !private_copy {
                err(
                    &mut errors,
                    format!("shmem folio {shmem} in shmem VMA {}", v.is_shmem()),
                );
            }
            if shmem && private_file && (p.write || l.level == PMD_LEVEL) {
                err(
                    &mut errors,
                    "page-cache folio mapped writable or by a PMD in a private VMA".into(),
                );
            }
            if !f.is_anon() && !shmem {
                err(&mut errors, "folio is neither anonymous nor shmem".into());
            }
            if shmem {
                shmem_rss += size_pages;
                // The page cache holds this very page at the VMA's index.
                let index = v.pgoff_of(va);
                let cached = v
                    .shmem
                    .and_then(|id| mm.shmem_object(id))
                    .and_then(|o| o.find(index))
                    .map(|(first, g)| g.pfn() + (index - first));
                if cached != Some(l.pfn) {
                    err(
                        &mut errors,
                        format!("shmem index {index} caches pfn {cached:x?}, not this one"),
                    );
                }
            } else {
                rss += size_pages;
            }
            // A reservation maps each of its pages in place, by PTE, in its
            // owner only (`aspace::reserve`).
            if f.test(PageFlags::RESERVATION) {
                let at = f
                    .anon_owner()
                    .map(|(id, vpn)| (id, (vpn + l.pfn - f.pfn()) * PAGE_SIZE));
                if l.level == PMD_LEVEL || at != Some((mm.id, va)) {
                    err(
                        &mut errors,
                        format!("reservation page mapped out of place (owner {at:x?})"),
                    );
                }
            }
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
                *seen.by_mm.entry(mm.id).or_default() += 1;
            } else {
                seen.ptes += 1;
                *seen.by_mm.entry(mm.id).or_default() += 1;
            }
            for i in 0..size_pages {
                let pfn = l.pfn + i;
                page_mms.entry(pfn).or_default().insert(mm.id);
                if p.write && !shmem && !f.page(pfn - f.pfn()).is_anon_exclusive() {
                    err(
                        &mut errors,
                        format!("writable but page {pfn:#x} not anon-exclusive"),
                    );
                }
            }
            if l.level == PTE_LEVEL && l.cont {
                let bva = va & !(A::CONT_PTES as u64 * PAGE_SIZE - 1);
                blocks.entry(bva).or_default().push((va, l));
            }
        });
        // Migration entries left by a migration (aspace::migrate) still map
        // the page they name: one mapping, one page of RSS each.
        let mut migents = 0u64;
        for v in vmas.iter() {
            for step in pt.walk_range(v.start, v.end) {
                let crate::paging::Step::Ptes(run) = step else {
                    continue;
                };
                for i in 0..run.len() {
                    let crate::paging::Entry::Swap(e) = run.entry(i) else {
                        continue;
                    };
                    let Some(pfn) = e.migration_pfn() else {
                        continue;
                    };
                    migents += 1;
                    let Some(f) = ctx.folio(pfn) else {
                        errors.push(format!(
                            "mm {} va {:#x}: migration entry of free frame {pfn:#x}",
                            mm.id,
                            run.va(i)
                        ));
                        continue;
                    };
                    rss += 1;
                    let seen = folios.entry(f.pfn()).or_default();
                    seen.folio = Some(f);
                    seen.ptes += 1;
                    *seen.by_mm.entry(mm.id).or_default() += 1;
                    page_mms.entry(pfn).or_default().insert(mm.id);
                }
            }
        }
        if migents != mm.migents() {
            errors.push(format!(
                "mm {}: {migents} migration entries in VMAs, migents says {}",
                mm.id,
                mm.migents()
            ));
        }
        check_cont_blocks(mm.id, &pt, &blocks, &mut errors, |pfn| ctx.folio(pfn));
        pt.for_each_table(&mut |pa, _| {
            table_pages.insert(pa >> crate::addr::PAGE_SHIFT);
        });
        table_pages.insert(pt.root() >> crate::addr::PAGE_SHIFT);
        let chain = deposit_chain(&pt);
        if chain.len() != pt.deposited() {
            errors.push(format!(
                "mm {}: deposit chain holds {} tables, counter says {}",
                mm.id,
                chain.len(),
                pt.deposited()
            ));
        }
        table_pages.extend(chain.iter().map(|pa| pa >> crate::addr::PAGE_SHIFT));
        if pt.deposited() != pmd_leaves {
            errors.push(format!(
                "mm {}: {} deposited tables for {pmd_leaves} PMD leaves",
                mm.id,
                pt.deposited()
            ));
        }
        if shmem_rss != mm.shmem_rss() {
            errors.push(format!(
                "mm {}: shmem RSS {} but {shmem_rss} pages mapped",
                mm.id,
                mm.shmem_rss()
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
        // The shmem caches this space maps: cached folios on the LRU side
        // (or isolated), swap entries apart from folios, counted, naming
        // slots of an active area that are in use.
        let objs: Vec<_> = mm.shmem.lock().values().cloned().collect();
        for o in objs {
            if let Err(e) = o.check_cache() {
                errors.push(format!("mm {}: shmem object {}: {e}", mm.id, o.id()));
            }
            for (first, sw) in o.swap_entries() {
                let ok = ctx.swap.area(sw.ty).is_some_and(|a| {
                    (sw.slot..sw.slot + sw.nr)
                        .all(|x| a.map.count(x) & !crate::swap::map::HAS_CACHE > 0)
                });
                if !ok {
                    errors.push(format!(
                        "shmem object {} index {first}: swap entry {sw:?} names a free slot",
                        o.id()
                    ));
                }
            }
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
        check_mm_ids(*pfn, f, &s.by_mm, &mut errors);
        let pinned: u64 = pins.iter().filter(|p| p.0 == *pfn).map(|p| p.1).sum();
        if (f.refcount() as u64) < maps + pinned {
            errors.push(format!(
                "folio {pfn:#x}: refcount {} below {maps} mappings + {pinned} pins",
                f.refcount()
            ));
        }
        if f.test(PageFlags::RESERVATION)
            && (!f.is_large()
                || !f.test(PageFlags::PARTIALLY_MAPPED)
                || maps >= f.nr_pages()
                || s.by_mm.len() != 1)
        {
            errors.push(format!(
                "folio {pfn:#x}: reservation with {maps} of {} pages mapped by {} spaces, \
                 partially-mapped flag {}",
                f.nr_pages(),
                s.by_mm.len(),
                f.test(PageFlags::PARTIALLY_MAPPED)
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
        if f.order() < 2 || !f.is_anon() || !f.is_mapped() || !(partial || f.order() == PMD_ORDER) {
            errors.push(format!("deferred-split queue holds {f:?}"));
        } else if partial && f.pages().all(|p| page_mms.contains_key(&p.pfn())) {
            errors.push(format!(
                "folio {:#x}: queued as partially mapped but every page is mapped",
                f.pfn()
            ));
        }
    }
    check_lru(ctx, &folios, &mut errors);
    check_swap(mms, &mut errors);
    // The free lists: no free frame is mapped, in a folio, or a table.
    let buddy = ctx.buddy;
    let mut bad_free = 0;
    buddy.for_each_free_block(|pfn, order, _| {
        let end = pfn + (1u64 << order);
        let what = if let Some((p, _)) = page_mms.range(pfn..end).next() {
            Some(format!("pfn {p:#x} is mapped"))
        } else if let Some(p) = table_pages.range(pfn..end).next() {
            Some(format!("pfn {p:#x} is a page-table page or deposit"))
        } else if ctx.folio(pfn).is_some() || ctx.is_zero_pfn(pfn) {
            Some(format!("pfn {pfn:#x} is part of an allocated folio"))
        } else {
            None
        };
        if let Some(w) = what
            && bad_free < 8
        {
            bad_free += 1;
            errors.push(format!("free block {pfn:#x} order {order}: {w}"));
        }
    });
    if let Err(e) = buddy.check_invariants() {
        errors.push(format!("allocator: {e}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        errors.truncate(20);
        Err(errors.join("\n"))
    }
}

/// The anonymous LRU (`reclaim::lru`): the lists and batches are well
/// formed with their counts (the snapshot checks links, flags and page
/// counts), each entry is an allocated, referenced anonymous folio head
/// found once; and every mapped anonymous folio (`folios`) is on exactly
/// one list or in one add batch as its flags say, or else isolated, which
/// needs a reference beyond its mappings (the isolator's).
fn check_lru<'a>(
    ctx: &super::MmCtx<'a>,
    folios: &BTreeMap<u64, FolioSeen<'a>>,
    errors: &mut Vec<String>,
) {
    use crate::reclaim::LruPlace;
    let buddy = ctx.buddy;
    let mm = buddy.memmap();
    let snap = match ctx.lru().snapshot(buddy) {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("LRU: {e}"));
            return;
        }
    };
    let mut place: BTreeMap<u64, LruPlace> = BTreeMap::new();
    for (idx, at) in snap {
        let pfn = mm.pfn_of(idx);
        match ctx.folio(pfn) {
            Some(f) if f.pfn() == pfn && (f.is_anon() || f.is_shmem()) && f.refcount() > 0 => {}
            _ => errors.push(format!(
                "LRU {at:?} holds pfn {pfn:#x}, not a referenced anonymous or shmem folio head: {}",
                mm.dump(pfn)
            )),
        }
        if let Some(prev) = place.insert(pfn, at) {
            errors.push(format!("LRU: pfn {pfn:#x} found twice ({prev:?}, {at:?})"));
        }
    }
    for (pfn, s) in folios {
        let f = s.folio.expect("set with the entry");
        let maps = s.ptes + s.pmds;
        let listed = f.test(PageFlags::LRU);
        let batched = f.test(PageFlags::LRU_BATCH);
        let ok = match place.get(pfn) {
            Some(LruPlace::List { active }) => {
                listed && !batched && *active == f.test(PageFlags::ACTIVE)
            }
            Some(LruPlace::Batch(_)) => batched && !listed,
            None => !listed && !batched && f.refcount() as u64 > maps,
        };
        if !ok {
            errors.push(format!(
                "folio {pfn:#x}: mapped, LRU place {:?} but flags {:?}, refcount {} for {maps} mappings",
                place.get(pfn),
                f.flags(),
                f.refcount()
            ));
        }
    }
}

/// The deposited tables of `pt`, following the chain threaded through
/// their first words (bounded, so a corrupt chain cannot loop forever).
fn deposit_chain<A: PagingArch>(pt: &PageTable<'_, A>) -> Vec<u64> {
    let mut out = Vec::new();
    let mut p = pt.deposit_head();
    // `u64::MAX` ends the chain (the page table's `NO_DEPOSIT`).
    while p != u64::MAX && out.len() <= pt.deposited() {
        out.push(p);
        p = pt.env().mem.load(p);
    }
    out
}

/// The hardware rules for every contiguous block (`blocks`: the hinted
/// leaves found, by block address): all `CONT_PTES` entries hinted, the
/// first frame aligned, frames consecutive and inside one folio, equal
/// attributes apart from young/dirty, and hints only where the table may
/// use them.  (Unhinted entries of a block some of whose entries are
/// hinted show up as a short block.)
fn check_cont_blocks<'a, A: PagingArch>(
    mm_id: u64,
    pt: &PageTable<'_, A>,
    blocks: &BTreeMap<u64, Vec<(u64, Leaf)>>,
    errors: &mut Vec<String>,
    folio_of: impl Fn(u64) -> Option<Folio<'a>>,
) {
    let cp = A::CONT_PTES as u64;
    for (bva, leaves) in blocks {
        let at = format!("mm {mm_id} contiguous block at va {bva:#x}");
        if !pt.cont_enabled() {
            errors.push(format!("{at}: hint in a table that must not use it"));
            continue;
        }
        if leaves.len() as u64 != cp {
            errors.push(format!(
                "{at}: only {} of {cp} entries hinted",
                leaves.len()
            ));
            continue;
        }
        let l0 = leaves[0].1;
        if !l0.pfn.is_multiple_of(cp) {
            errors.push(format!("{at}: first frame {:#x} not aligned", l0.pfn));
            continue;
        }
        for (i, (va, l)) in leaves.iter().enumerate() {
            let i = i as u64;
            if *va != bva + i * PAGE_SIZE || l.pfn != l0.pfn + i {
                errors.push(format!(
                    "{at}: va {va:#x} maps pfn {:#x}, not consecutive",
                    l.pfn
                ));
                break;
            }
            if l.attrs.fold_key() != l0.attrs.fold_key() {
                errors.push(format!(
                    "{at}: va {va:#x} attributes {:?} differ from {:?}",
                    l.attrs, l0.attrs
                ));
                break;
            }
        }
        if l0.attrs.special {
            continue;
        }
        match folio_of(l0.pfn) {
            Some(f) if f.pfn() <= l0.pfn && l0.pfn + cp <= f.pfn() + f.nr_pages() => {}
            _ => errors.push(format!(
                "{at}: frames {:#x}..{:#x} not inside one folio",
                l0.pfn,
                l0.pfn + cp
            )),
        }
    }
}

/// Swap entries and the swap cache: each space's entries add up to its
/// `swapents`, lie inside VMAs and name slots of an active area that count
/// at least that many references (other spaces than `mms` may hold more);
/// every cached folio has `SWAPCACHE`, is anonymous and covers slots
/// marked cached.
fn check_swap<'a, A: PagingArch>(mms: &[&Mm<'a, A>], errors: &mut Vec<String>) {
    let ctx = mms[0].ctx;
    let mut per_slot: BTreeMap<(u8, u64), u64> = BTreeMap::new();
    for mm in mms {
        let vmas = mm.mmap_read();
        let pt = mm.lock_pt();
        let mut n = 0u64;
        for v in vmas.iter() {
            for step in pt.walk_range(v.start, v.end) {
                let crate::paging::Step::Ptes(run) = step else {
                    continue;
                };
                for i in 0..run.len() {
                    if let crate::paging::Entry::Swap(e) = run.entry(i)
                        && e.is_swap()
                    {
                        n += 1;
                        *per_slot.entry((e.ty, e.offset)).or_default() += 1;
                    }
                }
            }
        }
        if n != mm.swapents() {
            errors.push(format!(
                "mm {}: {n} swap entries in VMAs, swapents says {}",
                mm.id,
                mm.swapents()
            ));
        }
    }
    for (&(ty, slot), &n) in &per_slot {
        match ctx.swap.area(ty) {
            None => errors.push(format!("swap entry of inactive area {ty} slot {slot}")),
            Some(a) if (a.map.count(slot) as u64) < n => errors.push(format!(
                "swap slot {ty}:{slot}: {n} entries but count {}",
                a.map.count(slot)
            )),
            _ => {}
        }
    }
    for (ty, a) in ctx.swap.areas() {
        for (pfn, k) in ctx.swap.cache.on_device(ty) {
            let Some(f) = ctx.folio(pfn) else {
                errors.push(format!("swap cache holds free frame {pfn:#x}"));
                continue;
            };
            let (_, first) = crate::swap::cache::unkey(k);
            if !f.test(PageFlags::SWAPCACHE) || !f.is_anon() {
                errors.push(format!("cached folio {pfn:#x} without SWAPCACHE or ANON"));
            }
            if (first..first + f.nr_pages()).any(|s| !a.map.has_cache(s)) {
                errors.push(format!("cached folio {pfn:#x}: slots not marked cached"));
            }
        }
    }
}

/// The owner slots of a large folio (`Folio::add_mapcount_mm`) against the
/// mappings found: a space with a slot has its mappings there (exactly,
/// unless the folio is marked shared);
/// more than two spaces, or a space without a slot, means maybe-shared;
/// one space holding every mapping means not maybe-shared.
fn check_mm_ids(pfn: u64, f: Folio<'_>, by_mm: &BTreeMap<u64, u64>, errors: &mut Vec<String>) {
    if f.order() == 0 {
        return;
    }
    let ids = f.mm_ids();
    let mut slotted = 0;
    let mut exact = true;
    for &(id, n) in ids.slots.iter().flatten() {
        let found = by_mm
            .iter()
            .find(|(m, _)| **m & crate::physmem::folio::MAX_MM_ID == id)
            .map_or(0, |(_, c)| *c);
        // A space that took its slot while it already had mappings (a
        // third space, the folio marked shared) may count fewer.
        exact &= found == n as u64;
        if found != n as u64 && !(ids.shared && (n as u64) < found) {
            errors.push(format!(
                "folio {pfn:#x}: owner slot of mm {id} counts {n} mappings, {found} found"
            ));
        }
        slotted += 1;
    }
    if let [Some(a), Some(b)] = ids.slots
        && a.0 == b.0
    {
        errors.push(format!("folio {pfn:#x}: mm {} holds both owner slots", a.0));
    }
    let spaces = by_mm.values().filter(|&&c| c > 0).count();
    if spaces > slotted && !ids.shared {
        errors.push(format!(
            "folio {pfn:#x}: mapped by {spaces} spaces, {slotted} with slots, not marked shared"
        ));
    }
    if spaces == 1 && slotted == 1 && exact && ids.shared {
        errors.push(format!(
            "folio {pfn:#x}: one space holds every mapping but marked shared"
        ));
    }
    if spaces == 2 && slotted == 2 && !ids.shared {
        errors.push(format!(
            "folio {pfn:#x}: two spaces map it, not marked shared"
        ));
    }
}
