//! Exact shared-vs-exclusive tracking of large folios (Linux 6.15's mm
//! ids): the owner slots across fork, child exit, partial munmap and
//! split, and what pagemap, smaps and COW reuse read from them.

mod mmtest;

use mm::abi::pagemap::PM_MMAP_EXCLUSIVE;
use mm::aspace::Mm;
use mm::aspace::report::PSS_SHIFT;
use mm::paging::{PMD_LEVEL, PTE_LEVEL, PagingArch};
use mm::physmem::buddy::AllocFlags;
use mm::thp::VmEvent;
use mm::vma::mempolicy::{Mempolicy, NodeMask};
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;

/// Pages of `[va, va + n pages)` that pagemap reports exclusively mapped.
fn exclusive_pages<A: PagingArch>(mm: &Mm<'_, A>, va: u64, n: usize) -> Vec<bool> {
    mm.pagemap(va, n, false)
        .iter()
        .map(|e| e & PM_MMAP_EXCLUSIVE != 0)
        .collect()
}

/// smaps's (private, shared, pss) bytes of the VMA at `va`.
fn smaps<A: PagingArch>(mm: &Mm<'_, A>, va: u64) -> (u64, u64, u64) {
    let r = mm.thpmaps();
    let v = r.vma_at(va).unwrap();
    (
        v.private_clean + v.private_dirty,
        v.shared_clean + v.shared_dirty,
        v.pss >> PSS_SHIFT,
    )
}

/// The case the old estimate got wrong: two forked spaces each unmap the
/// same part of a 64K folio and keep the same four pages.  Eight mappings
/// of a 16-page folio looked like "every page mapped once"; the pages are
/// mapped twice.
fn same_pages_kept_by_both<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let parent = env.mm();
        let va = parent.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&parent, va, 16 * K4, 1);
        let child = parent.fork().unwrap();
        parent.munmap(va + 4 * K4, 12 * K4).unwrap();
        child.munmap(va + 4 * K4, 12 * K4).unwrap();
        let f = env.folio_at(&parent, va).unwrap();
        assert_eq!(f.order(), 4);
        assert_eq!(f.large_mapcount(), 8);
        assert!(f.maybe_mapped_shared());
        for mm in [&parent, &child] {
            assert_eq!(exclusive_pages(mm, va, 4), [false; 4]);
            assert_eq!(smaps(mm, va), (0, 4 * K4, 2 * K4));
        }
        env.check(&[&parent, &child]);
        drop(child);
        assert!(!f.maybe_mapped_shared());
        assert_eq!(exclusive_pages(&parent, va, 4), [true; 4]);
        assert_eq!(smaps(&parent, va), (4 * K4, 0, 4 * K4));
        env.check(&[&parent]);
    });
}

/// fork, a partial munmap in the child, the child's exit, on a folio of
/// `order` (64K PTE-mapped, or 2M PMD-mapped).
fn fork_partial_exit<A: PagingArch>(order: u32) {
    run::<A>(32 * MIB, |env| {
        env.only_order(order);
        let nr = 1u64 << order;
        let size = nr * K4;
        let parent = env.mm();
        let va = parent.mmap(VA, size, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&parent, va, size, 2);
        let f = env.folio_at(&parent, va).unwrap();
        assert_eq!(f.order(), order);
        assert!(!f.maybe_mapped_shared());
        assert!(f.mapped_exclusively_by(parent.id()));
        assert_eq!(
            exclusive_pages(&parent, va, nr as usize),
            vec![true; nr as usize]
        );
        let child = parent.fork().unwrap();
        // Both map every page: two slots, shared.
        let ids = f.mm_ids();
        assert!(ids.shared);
        let per = if order == 9 { 1 } else { nr as i32 };
        assert_eq!(ids.mapcount_of(parent.id()), per);
        assert_eq!(ids.mapcount_of(child.id()), per);
        for mm in [&parent, &child] {
            assert_eq!(
                exclusive_pages(mm, va, nr as usize),
                vec![false; nr as usize]
            );
            assert_eq!(smaps(mm, va), (0, size, size / 2));
        }
        env.check(&[&parent, &child]);
        // The child unmaps the second half; what it keeps the parent maps
        // too.
        child.munmap(va + size / 2, size / 2).unwrap();
        if order == 9 {
            assert_eq!(env.leaf(&parent, va).unwrap().level, PMD_LEVEL);
            assert_eq!(env.leaf(&child, va).unwrap().level, PTE_LEVEL);
        }
        assert_eq!(f.mm_ids().mapcount_of(child.id()), nr as i32 / 2);
        assert_eq!(
            exclusive_pages(&child, va, nr as usize / 2),
            vec![false; nr as usize / 2]
        );
        assert_eq!(smaps(&child, va), (0, size / 2, size / 4));
        env.check(&[&parent, &child]);
        // The child exits: the parent owns the folio again, exactly.
        child.destroy();
        let ids = f.mm_ids();
        assert!(!ids.shared);
        assert_eq!(ids.slots.iter().flatten().count(), 1);
        assert!(f.mapped_exclusively_by(parent.id()));
        assert_eq!(
            exclusive_pages(&parent, va, nr as usize),
            vec![true; nr as usize]
        );
        assert_eq!(smaps(&parent, va), (size, 0, size));
        env.check(&[&parent]);
        // And a write reuses it rather than copying.
        env.write_u64(&parent, va + K4, 9);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 0);
        assert_eq!(env.read_u64(&parent, va + K4), 9);
        env.check(&[&parent]);
    });
}

fn fork_partial_exit_64k<A: PagingArch>() {
    fork_partial_exit::<A>(4)
}

fn fork_partial_exit_2m<A: PagingArch>() {
    fork_partial_exit::<A>(9)
}

/// Three spaces: the third gets no slot and the folio stays shared until
/// one space again holds every mapping.
fn third_space_then_exits<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let a = env.mm();
        let va = a.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&a, va, 16 * K4, 3);
        let b = a.fork().unwrap();
        let c = b.fork().unwrap();
        let f = env.folio_at(&a, va).unwrap();
        assert_eq!(f.large_mapcount(), 48);
        assert!(f.maybe_mapped_shared());
        assert_eq!(f.mm_ids().mapcount_of(c.id()), 0);
        // Every page is mapped three times.
        assert_eq!(smaps(&c, va), (0, 16 * K4, 16 * K4 / 3));
        env.check(&[&a, &b, &c]);
        b.destroy();
        assert!(f.maybe_mapped_shared());
        env.check(&[&a, &c]);
        c.destroy();
        assert!(!f.maybe_mapped_shared());
        assert!(f.mapped_exclusively_by(a.id()));
        env.check(&[&a]);
    });
}

/// The slot update runs under a lock bit in the second frame's owner
/// word: two threads map and unmap the same folio for two spaces at once,
/// and the slots must end where the counts say.  Removing the lock in
/// `Folio::add_mapcount_mm` (checked once, by hand) makes this fail: the
/// read-modify-writes of the large mapcount and the slots interleave and
/// updates are lost.
fn slot_updates_race_free<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let a = env.mm();
        let va = a.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&a, va, 16 * K4, 4);
        let f = env.folio_at(&a, va).unwrap();
        let (ida, idb) = (a.id(), a.id() + 1);
        std::thread::scope(|s| {
            for id in [ida, idb] {
                s.spawn(move || {
                    for i in 0..20_000 {
                        f.add_mapcount_mm(id, 1 + (i % 3));
                        f.add_mapcount_mm(id, -(1 + (i % 3)));
                    }
                });
            }
        });
        assert_eq!(f.large_mapcount(), 16);
        let ids = f.mm_ids();
        assert_eq!(ids.mapcount_of(ida), 16);
        assert_eq!(ids.mapcount_of(idb), 0);
        assert!(!ids.shared);
        env.check(&[&a]);
    });
}

/// Large COW (`large_cow`, the default): after fork, the child's first
/// write in each 64K folio copies the whole folio into a new 64K folio
/// mapped writable (contpte-folded on arm64): one write per 64K keeps the
/// child's translation entries as they were before the fork.  With the knob
/// off, one 4K page is copied per write, as Linux.
fn large_cow_child<A: PagingArch>(order: u32, large: bool) {
    run::<A>(64 * MIB, |env| {
        env.only_order(order);
        env.thp.config.set_large_cow(large);
        let size = M2;
        let parent = env.mm();
        let va = parent.mmap(VA, size, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&parent, va, size, 5);
        let entries = parent.thpmaps().total().entries;
        let child = parent.fork().unwrap();
        let free_before = env.ctx.buddy.stats().free;
        for off in (0..size).step_by(64 * 1024) {
            env.write_u64(&child, va + off + 8, off);
        }
        let copies = env.event(VmEvent::FaultCowCopy);
        let extra = free_before - env.ctx.buddy.stats().free;
        if large {
            let n = if order == 9 { 1 } else { size / (K4 << order) };
            assert_eq!(copies, n);
            assert_eq!(env.mthp(order, mm::thp::MthpStat::CowAlloc), n);
            assert_eq!(child.thpmaps().total().entries, entries);
            assert_eq!(env.folio_at(&child, va).unwrap().order(), order);
            // The whole region was copied once.
            assert!(extra >= size / K4, "{extra} frames for the copies");
        } else {
            assert_eq!(copies, size / (64 * 1024));
            assert_eq!(env.mthp(order, mm::thp::MthpStat::CowAlloc), 0);
            assert_eq!(env.folio_at(&child, va + 8).unwrap().order(), 0);
            if has_cont::<A>() {
                // The copied pages broke the contiguous blocks.
                assert!(child.thpmaps().total().entries > entries);
            }
        }
        // Both sides keep their data.
        for off in (0..size).step_by(64 * 1024) {
            assert_eq!(env.read_u64(&child, va + off + 8), off);
            assert_eq!(env.read_u64(&parent, va + off + 8), 0);
        }
        env.check_pages(&child, va, size, 5);
        env.check_pages(&parent, va, size, 5);
        // Further writes in the child take no fault: its copies are its own.
        let faults = env.faults.get();
        if large {
            env.write_u64(&child, va + K4 + 16, 1);
            assert_eq!(env.faults.get(), faults);
        }
        env.check(&[&parent, &child]);
        child.destroy();
        env.check(&[&parent]);
    });
}

fn large_cow_child_64k<A: PagingArch>() {
    large_cow_child::<A>(4, true)
}

fn large_cow_child_2m<A: PagingArch>() {
    large_cow_child::<A>(9, true)
}

fn large_cow_off_64k<A: PagingArch>() {
    large_cow_child::<A>(4, false)
}

/// The copy's order: the largest the policy allows whose aligned block lies
/// inside the VMA and is mapped wholly by the folio.  A 64K folio whose VMA
/// lost its first page cannot be copied whole; with 16K allowed too, a
/// write copies the 16K block around it.
fn large_cow_block_inside_vma<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let parent = env.mm();
        let va = parent.mmap(VA, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&parent, va, 16 * K4, 6);
        env.thp.config.set_order_mode(2, mm::thp::OrderMode::Always);
        let child = parent.fork().unwrap();
        child.munmap(va, K4).unwrap();
        let old = env.folio_at(&child, va + 9 * K4).unwrap();
        env.write_u64(&child, va + 9 * K4 + 8, 1);
        assert_eq!(env.mthp(4, mm::thp::MthpStat::CowAlloc), 0);
        assert_eq!(env.mthp(2, mm::thp::MthpStat::CowAlloc), 1);
        let new = env.folio_at(&child, va + 9 * K4).unwrap();
        assert_eq!(new.order(), 2);
        assert_eq!(new.pfn(), env.leaf(&child, va + 8 * K4).unwrap().pfn);
        // The rest of the child's pages still map the shared folio.
        assert_eq!(env.leaf(&child, va + 12 * K4).unwrap().pfn, old.pfn() + 12);
        assert_eq!(old.mm_ids().mapcount_of(child.id()), 11);
        env.check_pages(&child, va + K4, 15 * K4, 6);
        env.check_pages(&parent, va, 16 * K4, 6);
        env.check(&[&parent, &child]);
    });
}

/// An allocation failure in large COW falls back order by order
/// (`cow_fallback` per order that failed) and then to a 4K copy.  Free
/// memory is cut to order-2 blocks: a 64K copy fails, 16K is served;
/// then to single frames: both fail and one page is copied.
fn large_cow_falls_back<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.only_order(4);
        env.thp.config.set_order_mode(2, mm::thp::OrderMode::Always);
        let parent = env.mm();
        let va = parent.mmap(VA, 32 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&parent, va, 32 * K4, 7);
        let child = parent.fork().unwrap();
        // Take every frame, give back the first 4 of every 16.
        let mut held = Vec::new();
        while let Ok(f) = env.buddy.alloc(0, AllocFlags::USER) {
            held.push(f);
        }
        let (mut kept, mut spare) = (Vec::new(), Vec::new());
        for f in held {
            match f.pfn() % 16 {
                0..4 => f.put(),
                4 => spare.push(f),
                _ => kept.push(f),
            }
        }
        env.write_u64(&child, va + 5 * K4 + 8, 1);
        assert_eq!(env.mthp(4, mm::thp::MthpStat::CowFallback), 1);
        assert_eq!(env.mthp(2, mm::thp::MthpStat::CowAlloc), 1);
        assert_eq!(env.folio_at(&child, va + 5 * K4).unwrap().order(), 2);
        // Only single frames left: nothing large is served.
        let mut rest = Vec::new();
        while let Ok(f) = env.buddy.alloc(0, AllocFlags::USER) {
            rest.push(f);
        }
        spare.pop().unwrap().put();
        env.write_u64(&child, va + 21 * K4 + 8, 2);
        assert_eq!(env.mthp(4, mm::thp::MthpStat::CowFallback), 2);
        assert_eq!(env.mthp(2, mm::thp::MthpStat::CowFallback), 1);
        assert_eq!(env.mthp(2, mm::thp::MthpStat::CowAlloc), 1);
        assert_eq!(env.folio_at(&child, va + 21 * K4).unwrap().order(), 0);
        for f in rest.into_iter().chain(kept).chain(spare) {
            f.put();
        }
        assert_eq!(env.read_u64(&child, va + 5 * K4 + 8), 1);
        assert_eq!(env.read_u64(&child, va + 21 * K4 + 8), 2);
        assert_eq!(env.read_u64(&parent, va + 5 * K4 + 8), 0);
        env.check(&[&parent, &child]);
    });
}

/// COW copies are placed by the writer's memory policy, as a fault's
/// folio (Linux's `vma_alloc_folio`): a child bound to node 1 gets its
/// 64K and its 4K copies there while the parent's folios stay on node 0.
fn cow_copies_follow_policy<A: PagingArch>() {
    fn node<'a, A: PagingArch>(env: &Env<'a, A>, mm: &Mm<'a, A>, at: u64) -> usize {
        env.buddy.node_of_pfn(env.leaf(mm, at).unwrap().pfn)
    }
    run_numa::<A>(32 * MIB, 2, |env| {
        env.only_order(4);
        let parent = env.mm();
        let va = parent.mmap(VA, 2 * 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&parent, va, 2 * 16 * K4, 8);
        assert_eq!(node(env, &parent, va), 0);
        let child = parent.fork().unwrap();
        let all = NodeMask(0b11);
        child.set_task_policy(Mempolicy::new(2, NodeMask(0b10), all).unwrap());
        env.write_u64(&child, va + 8, 1);
        assert_eq!(env.mthp(4, mm::thp::MthpStat::CowAlloc), 1);
        assert_eq!(node(env, &child, va), 1);
        env.thp.config.set_large_cow(false);
        env.write_u64(&child, va + 16 * K4 + 8, 2);
        assert_eq!(env.folio_at(&child, va + 16 * K4).unwrap().order(), 0);
        assert_eq!(node(env, &child, va + 16 * K4), 1);
        assert_eq!(node(env, &parent, va + 16 * K4), 0);
        env.check_pages(&parent, va, 2 * 16 * K4, 8);
        env.check(&[&parent, &child]);
    });
}

both_formats!(
    same_pages_kept_by_both,
    fork_partial_exit_64k,
    fork_partial_exit_2m,
    third_space_then_exits,
    slot_updates_race_free,
    large_cow_child_64k,
    large_cow_child_2m,
    large_cow_off_64k,
    large_cow_block_inside_vma,
    large_cow_falls_back,
    cow_copies_follow_policy,
);
