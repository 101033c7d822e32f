//! Host tests of the memmap, folios and the buddy allocator.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::format;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::bootinfo::{BootInfo, PhysRange, ReservedKind};
use crate::cpu::{CpuOps, MAX_CPUS, SingleCpu};
use crate::emu::EmuMem;
use crate::physmem::buddy::{
    AllocError, AllocFlags, BuddyAllocator, MAX_ORDER, Migratetype, NR_ORDERS, POISON_BYTE,
};
use crate::physmem::folio::{Folio, FolioList, FolioRef};
use crate::physmem::frame_flags::{FrameState, PageFlags};
use crate::physmem::memmap::{FRAME_DESC_SIZE, FrameDesc, Memmap, PAGEBLOCK_FRAMES, memmap_span};
use crate::physmem::phys::PhysMem;

const MIB: u64 = 1 << 20;

fn descs(n: u64) -> Vec<FrameDesc> {
    (0..n).map(|_| FrameDesc::new()).collect()
}

/// Runs `f` on an allocator over physical `[base, end)`, all of it free.
fn with_alloc<R>(base: u64, end: u64, f: impl FnOnce(&BuddyAllocator<'_>, &EmuMem) -> R) -> R {
    let d = descs((end - base) >> PAGE_SHIFT);
    let mem = EmuMem::new(base, end - base);
    let a = BuddyAllocator::new(Memmap::new(&d, base >> PAGE_SHIFT), &mem, &SingleCpu);
    a.add_free_range(base, end);
    f(&a, &mem)
}

fn free_blocks(a: &BuddyAllocator<'_>) -> Vec<(u64, u32)> {
    let mut v = Vec::new();
    a.for_each_free_block(|pfn, o, _| v.push((pfn, o)));
    v.sort();
    v
}

fn check(a: &BuddyAllocator<'_>) {
    if let Err(e) = a.check_invariants() {
        panic!("invariants broken:\n{e}");
    }
}

#[test]
fn descriptor_is_32_bytes() {
    assert_eq!(FRAME_DESC_SIZE, 32);
    assert_eq!(core::mem::align_of::<FrameDesc>(), 8);
}

#[test]
fn add_free_range_makes_naturally_aligned_max_blocks() {
    // pfn 0x100..0x900: an order-8 head, then orders 9, 10, and an order-8 tail.
    with_alloc(MIB, 9 * MIB, |a, _| {
        assert_eq!(
            free_blocks(a),
            vec![(0x100, 8), (0x200, 9), (0x400, 10), (0x800, 8)]
        );
        let s = a.stats();
        assert_eq!(
            (s.managed, s.free, s.allocated, s.reserved),
            (2048, 2048, 0, 0)
        );
        check(a);
    });
}

#[test]
fn adjacent_ranges_coalesce() {
    let d = descs(2048);
    let mem = EmuMem::new(0, 8 * MIB);
    let a = BuddyAllocator::new(Memmap::new(&d, 0), &mem, &SingleCpu);
    a.add_free_range(0, 3 * MIB);
    a.add_free_range(3 * MIB, 8 * MIB);
    assert_eq!(free_blocks(&a), vec![(0, 10), (0x400, 10)]);
    check(&a);
}

#[test]
fn every_order_is_aligned_and_returns() {
    with_alloc(0, 16 * MIB, |a, _| {
        let initial = free_blocks(a);
        for order in 0..=MAX_ORDER {
            let f = a.alloc(order, AllocFlags::USER).unwrap();
            assert_eq!(f.order(), order);
            assert_eq!(f.nr_pages(), 1 << order);
            assert_eq!(f.pfn() % (1 << order), 0, "order {order} misaligned");
            assert_eq!(f.pa(), f.pfn() << PAGE_SHIFT);
            assert_eq!(f.refcount(), 1);
            assert_eq!(f.test(PageFlags::LARGE), order > 0);
            check(a);
            f.put();
        }
        a.drain_all();
        assert_eq!(free_blocks(a), initial);
        check(a);
    });
}

#[test]
fn exhaustion_per_order_then_everything_coalesces() {
    with_alloc(4 * MIB, 20 * MIB, |a, _| {
        a.set_poison(false);
        let initial = free_blocks(a);
        let total = a.stats().free;
        for order in 0..=MAX_ORDER {
            let mut live = Vec::new();
            loop {
                match a.alloc(order, AllocFlags::KERNEL) {
                    Ok(f) => live.push(f),
                    Err(e) => {
                        assert_eq!(e, AllocError::NoMemory);
                        break;
                    }
                }
            }
            assert_eq!(live.len() as u64, total >> order, "order {order}");
            let s = a.stats();
            assert_eq!(s.free, 0);
            assert_eq!(s.allocated, total);
            assert!(s.failures[order as usize] >= 1);
            check(a);
            for f in live {
                f.put();
            }
            a.drain_all();
            assert_eq!(free_blocks(a), initial, "after order {order}");
        }
        check(a);
    });
}

#[test]
fn bad_order_is_an_error() {
    with_alloc(0, 4 * MIB, |a, _| {
        assert_eq!(
            a.alloc(MAX_ORDER + 1, AllocFlags::KERNEL).unwrap_err(),
            AllocError::BadOrder
        );
    });
}

#[test]
fn pcp_caches_and_drain_returns_everything() {
    with_alloc(0, 8 * MIB, |a, _| {
        let initial = free_blocks(a);
        let fs: Vec<_> = (0..10)
            .map(|_| a.alloc(0, AllocFlags::USER).unwrap())
            .collect();
        // The refill moved a batch into the cache.
        assert!(a.stats().free_pcp > 0);
        for f in fs {
            f.put();
        }
        let mut orders = Vec::new();
        for o in [2, 4, 9] {
            orders.push(a.alloc(o, AllocFlags::USER).unwrap());
        }
        for f in orders {
            f.put();
        }
        let s = a.stats();
        assert!(s.free_pcp > 0);
        assert_eq!(s.free, s.managed);
        let moved = a.drain_cpu(0);
        assert_eq!(moved, s.free_pcp);
        assert_eq!(a.stats().free_pcp, 0);
        assert_eq!(free_blocks(a), initial);
        check(a);
    });
}

#[test]
fn pcp_high_mark_bounds_the_cache() {
    with_alloc(0, 16 * MIB, |a, _| {
        let fs: Vec<_> = (0..2000)
            .map(|_| a.alloc(0, AllocFlags::USER).unwrap())
            .collect();
        for f in fs {
            f.put();
        }
        assert!(a.stats().free_pcp <= crate::physmem::pcp::pcp_high(0) as u64);
        check(a);
    });
}

#[test]
fn zeroing_and_poison() {
    with_alloc(0, 4 * MIB, |a, mem| {
        assert_eq!(a.poison_enabled(), cfg!(debug_assertions));
        a.set_poison(true);
        let f = a.alloc(2, AllocFlags::USER).unwrap();
        mem.fill(f.pa(), f.size(), 0xaa);
        let pa = f.pa();
        f.put();
        // Freed memory holds the poison.
        let mut b = [0u8; 64];
        mem.read(pa + 3 * PAGE_SIZE, &mut b);
        assert!(b.iter().all(|&x| x == POISON_BYTE));
        let g = a.alloc(2, AllocFlags::USER | AllocFlags::ZERO).unwrap();
        assert_eq!(g.pa(), pa, "LIFO cache hands the same block back");
        assert!(mem.is_zero(g.pa(), g.size()));
        g.put();
        check(a);
    });
}

#[test]
#[should_panic(expected = "use after free")]
fn poison_catches_use_after_free() {
    with_alloc(0, 4 * MIB, |a, mem| {
        a.set_poison(true);
        let f = a.alloc(0, AllocFlags::KERNEL).unwrap();
        let pa = f.pa();
        f.put();
        mem.write(pa + 100, &[1]);
        let _ = a.alloc(0, AllocFlags::KERNEL);
    });
}

#[test]
#[should_panic(expected = "use after free")]
fn poison_checked_before_zeroing_large() {
    with_alloc(0, 4 * MIB, |a, mem| {
        a.set_poison(true);
        let f = a.alloc(4, AllocFlags::USER).unwrap();
        let pa = f.pa();
        f.put();
        mem.store(pa + 5 * PAGE_SIZE + 8, 7);
        let _ = a.alloc(4, AllocFlags::USER | AllocFlags::ZERO);
    });
}

#[test]
#[should_panic(expected = "folio put below zero")]
fn double_put_panics() {
    with_alloc(0, 4 * MIB, |a, _| {
        let f = a.alloc(0, AllocFlags::KERNEL).unwrap();
        f.put();
        f.put();
    });
}

#[test]
#[should_panic(expected = "double free")]
fn double_free_pages_panics() {
    with_alloc(0, 4 * MIB, |a, _| {
        let f = a.alloc(3, AllocFlags::KERNEL).unwrap();
        let pfn = f.pfn();
        a.free_pages(pfn, 3);
        a.free_pages(pfn, 3);
    });
}

#[test]
#[should_panic(expected = "freeing a tail page")]
fn freeing_a_tail_panics() {
    with_alloc(0, 4 * MIB, |a, _| {
        let f = a.alloc(3, AllocFlags::KERNEL).unwrap();
        a.free_pages(f.pfn() + 1, 0);
    });
}

#[test]
#[should_panic(expected = "freeing a tail page")]
fn freeing_the_last_tail_of_a_pmd_folio_panics() {
    with_alloc(0, 8 * MIB, |a, _| {
        let f = a.alloc(9, AllocFlags::USER).unwrap();
        a.free_pages(f.pfn() + 511, 0);
    });
}

#[test]
fn tails_find_their_head_in_every_order() {
    // Tails are not written at allocation: the head is found by probing.
    with_alloc(0, 16 * MIB, |a, _| {
        for poison in [true, false] {
            a.set_poison(poison);
            let live: Vec<Folio<'_>> = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 2, 4, 9]
                .iter()
                .map(|&o| a.alloc(o, AllocFlags::USER).unwrap())
                .collect();
            check(a);
            for f in &live {
                for i in 0..f.nr_pages() {
                    assert_eq!(a.folio_from_pfn(f.pfn() + i), Some(*f));
                    assert_eq!(f.page(i).folio(), *f);
                    let st = if i == 0 {
                        FrameState::Head
                    } else {
                        FrameState::Tail
                    };
                    assert_eq!(a.memmap().state(f.pfn() + i), st);
                }
            }
            let (first, last) = (live[0].pfn(), live[live.len() - 1].pfn());
            for f in live {
                f.put();
            }
            a.drain_all();
            assert_eq!(a.folio_from_pfn(first), None);
            assert_eq!(a.folio_from_pfn(last + 3), None);
            assert_eq!(a.memmap().state(last + 3), FrameState::Body);
            check(a);
        }
    });
}

#[test]
fn anon_exclusive_tails_do_not_leak_into_the_next_folio() {
    // Without poisoning (the release configuration) the free path clears
    // tails only when the head's hint says a tail was marked.
    with_alloc(0, 8 * MIB, |a, _| {
        a.set_poison(false);
        let f = a.alloc(9, AllocFlags::USER).unwrap();
        for p in f.pages() {
            p.set_anon_exclusive();
        }
        check(a);
        let pfn = f.pfn();
        f.put();
        a.drain_all();
        check(a);
        // The same frames come back as one large folio and as small ones.
        let g = a.alloc(9, AllocFlags::USER).unwrap();
        assert_eq!(g.pfn(), pfn);
        assert!(g.pages().all(|p| !p.is_anon_exclusive()));
        g.put();
        a.drain_all();
        let small: Vec<Folio<'_>> = (0..1024)
            .map(|_| a.alloc(0, AllocFlags::USER).unwrap())
            .collect();
        assert!(small.iter().all(|f| !f.page(0).is_anon_exclusive()));
        for f in small {
            f.put();
        }
        check(a);
    });
}

#[test]
#[should_panic(expected = "wrong order")]
fn freeing_with_wrong_order_panics() {
    with_alloc(0, 4 * MIB, |a, _| {
        let f = a.alloc(3, AllocFlags::KERNEL).unwrap();
        a.free_pages(f.pfn(), 2);
    });
}

#[test]
#[should_panic(expected = "still referenced")]
fn freeing_a_referenced_folio_panics() {
    with_alloc(0, 4 * MIB, |a, _| {
        let f = a.alloc(0, AllocFlags::KERNEL).unwrap();
        f.get();
        a.free_pages(f.pfn(), 0);
    });
}

/// Debug builds only, like the check.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "still mapped")]
fn freeing_a_mapped_folio_panics() {
    with_alloc(0, 4 * MIB, |a, _| {
        let f = a.alloc(2, AllocFlags::USER).unwrap();
        f.add_large_mapcount(1);
        f.put();
    });
}

/// Debug builds only, like the check.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "deferred-split")]
fn freeing_a_queued_folio_panics() {
    with_alloc(0, 4 * MIB, |a, _| {
        let f = a.alloc(4, AllocFlags::USER).unwrap();
        let mut q = FolioList::new();
        q.push_back(f);
        f.put();
    });
}

#[test]
#[should_panic(expected = "pfn 0x")]
fn panic_message_names_the_pfn() {
    with_alloc(0, 4 * MIB, |a, _| {
        let f = a.alloc(1, AllocFlags::KERNEL).unwrap();
        a.free_pages(f.pfn() + 1, 0);
    });
}

#[test]
fn refcount_get_put_frees_on_last() {
    with_alloc(0, 4 * MIB, |a, _| {
        let f = a.alloc(4, AllocFlags::USER).unwrap();
        f.get();
        f.get_many(3);
        assert_eq!(f.refcount(), 5);
        f.put_many(3);
        f.put();
        assert_eq!(a.stats().allocated, 16);
        assert_eq!(a.folio_from_pfn(f.pfn() + 7), Some(f));
        f.put();
        assert_eq!(a.stats().allocated, 0);
        assert_eq!(a.folio_from_pfn(f.pfn()), None);
        assert_eq!(a.folio_from_pfn(f.pfn() + 7), None);
        check(a);
    });
}

#[test]
fn folio_pages_owner_mapcounts_and_flags() {
    with_alloc(0, 4 * MIB, |a, _| {
        let f = a.alloc(4, AllocFlags::USER).unwrap();
        assert!(!f.test(PageFlags::KERNEL));
        assert_eq!(f.pages().count(), 16);
        let p = f.page(5);
        assert_eq!(p.index(), 5);
        assert_eq!(p.pfn(), f.pfn() + 5);
        assert_eq!(p.folio(), f);
        assert_eq!(f.page_at(f.pa() + 5 * PAGE_SIZE + 17), Some(p));
        assert_eq!(f.page_at(f.pa() + 16 * PAGE_SIZE), None);
        // Anon-exclusive is per page.
        p.set_anon_exclusive();
        assert!(p.is_anon_exclusive());
        assert!(!f.page(4).is_anon_exclusive() && !f.page(0).is_anon_exclusive());
        p.clear_anon_exclusive();
        assert!(!p.is_anon_exclusive());
        // Owner.
        assert_eq!(f.anon_owner(), None);
        f.set_anon_owner(42, 0x7_ffff_ffff);
        assert_eq!(f.anon_owner(), Some((42, 0x7_ffff_ffff)));
        assert!(f.is_anon());
        // Mapcounts.
        assert_eq!(f.add_large_mapcount(16), 16);
        assert_eq!(f.add_entire_mapcount(1), 1);
        assert!(f.is_mapped());
        f.get_many(16);
        assert_eq!(f.extra_refs(), 1);
        assert_eq!(f.add_large_mapcount(-16), 0);
        assert_eq!(f.add_entire_mapcount(-1), 0);
        f.put_many(16);
        // Lock and flags.
        assert!(f.trylock());
        assert!(!f.trylock());
        f.unlock();
        f.set_flags(PageFlags::DIRTY | PageFlags::UPTODATE);
        assert!(f.test(PageFlags::DIRTY));
        f.clear_flags(PageFlags::DIRTY);
        assert!(!f.test(PageFlags::DIRTY) && f.test(PageFlags::UPTODATE));
        // Every tail finds the head.
        for i in 0..16 {
            assert_eq!(a.folio_from_pfn(f.pfn() + i), Some(f));
        }
        f.put();
        // The next user of these frames starts clean.
        let g = a.alloc(4, AllocFlags::USER).unwrap();
        assert_eq!(g.pfn(), f.pfn());
        assert_eq!(g.flags(), PageFlags::LARGE);
        assert!(!g.page(5).is_anon_exclusive());
        assert_eq!(g.anon_owner(), None);
        g.put();
    });
}

#[test]
fn pagetable_and_kernel_flags() {
    with_alloc(0, 4 * MIB, |a, _| {
        let pt = a
            .alloc(
                0,
                AllocFlags::PAGETABLE | AllocFlags::ZERO | AllocFlags::MOVABLE,
            )
            .unwrap();
        assert!(
            pt.test(PageFlags::PAGETABLE | PageFlags::KERNEL),
            "page tables are unmovable"
        );
        assert_eq!(AllocFlags::PAGETABLE.migratetype(), Migratetype::Unmovable);
        a.free_pages(pt.pfn(), 0);
        check(a);
    });
}

#[test]
fn folio_list_is_a_fifo() {
    with_alloc(0, 4 * MIB, |a, _| {
        let fs: Vec<Folio<'_>> = (0..4)
            .map(|_| a.alloc(2, AllocFlags::USER).unwrap())
            .collect();
        let mut q = FolioList::new();
        for &f in &fs {
            assert!(q.push_back(f));
        }
        assert!(!q.push_back(fs[0]), "already queued");
        assert_eq!(q.len(), 4);
        assert!(q.remove(fs[2]));
        assert!(!q.remove(fs[2]));
        let order: Vec<_> = q.iter(a).collect();
        assert_eq!(order, vec![fs[0], fs[1], fs[3]]);
        assert_eq!(q.pop_front(a), Some(fs[0]));
        assert!(!fs[0].test(PageFlags::DEFERRED_SPLIT));
        assert!(fs[1].test(PageFlags::DEFERRED_SPLIT));
        while q.pop_front(a).is_some() {}
        assert!(q.is_empty());
        for f in fs {
            f.put();
        }
        check(a);
    });
}

#[test]
fn zero_folios() {
    with_alloc(0, 8 * MIB, |a, mem| {
        let z = a.alloc_zero_folio(0).unwrap();
        let hz = a.alloc_zero_folio(9).unwrap();
        assert!(z.test(PageFlags::ZERO_PAGE | PageFlags::RESERVED));
        assert_eq!(hz.order(), 9);
        assert!(mem.is_zero(hz.pa(), hz.size()));
        // Users take and drop references; the allocator's own keeps it alive.
        hz.get();
        hz.put();
        assert_eq!(a.folio_from_pfn(hz.pfn() + 100), Some(hz));
    });
}

#[test]
#[should_panic(expected = "reserved or zero folio")]
fn zero_folio_is_never_freed() {
    with_alloc(0, 4 * MIB, |a, _| {
        a.alloc_zero_folio(0).unwrap().put();
    });
}

#[test]
fn mobility_grouping_steals_whole_pageblocks() {
    with_alloc(0, 16 * MIB, |a, _| {
        a.set_poison(false);
        // Everything starts movable: the first kernel allocation steals.
        let k: Vec<_> = (0..300)
            .map(|_| a.alloc(0, AllocFlags::KERNEL).unwrap())
            .collect();
        let blocks: std::collections::BTreeSet<u64> =
            k.iter().map(|f| f.pfn() / PAGEBLOCK_FRAMES).collect();
        assert_eq!(
            blocks.len(),
            1,
            "kernel pages clumped in one pageblock: {blocks:?}"
        );
        assert!(a.stats().pageblock_steals >= 1);
        // User folios keep out of that pageblock while others have room.
        let u: Vec<_> = (0..50)
            .map(|_| a.alloc(2, AllocFlags::USER).unwrap())
            .collect();
        for f in &u {
            assert!(!blocks.contains(&(f.pfn() / PAGEBLOCK_FRAMES)));
        }
        let info = a.buddyinfo();
        assert!(
            info.free[Migratetype::Unmovable as usize]
                .iter()
                .sum::<u64>()
                > 0
        );
        for f in k.into_iter().chain(u) {
            f.put();
        }
        a.drain_all();
        check(a);
        assert_eq!(a.stats().free, a.stats().managed);
    });
}

#[test]
fn kernel_can_steal_the_last_movable_memory() {
    with_alloc(0, 4 * MIB, |a, _| {
        a.set_poison(false);
        // Fill with movable pages, free one pageblock's worth, take it as kernel.
        let u: Vec<_> = (0..2)
            .map(|_| a.alloc(9, AllocFlags::USER).unwrap())
            .collect();
        assert!(a.alloc(0, AllocFlags::KERNEL).is_err());
        let pfn = u[1].pfn();
        u[1].put();
        let k = a.alloc(9, AllocFlags::KERNEL).unwrap();
        assert_eq!(k.pfn(), pfn);
        k.put();
        u[0].put();
        check(a);
    });
}

#[test]
fn buddyinfo_formats_like_linux() {
    with_alloc(0, 8 * MIB, |a, _| {
        let line = a.buddyinfo().to_string();
        assert!(line.starts_with("Node 0, zone   Normal "), "{line}");
        let cols: Vec<&str> = line.split_whitespace().skip(4).collect();
        assert_eq!(cols.len(), NR_ORDERS);
        assert_eq!(cols[10], "2");
        assert_eq!(a.buddyinfo().pages(), 2048);
    });
}

/// The layout of Linux's `/proc/pagetypeinfo` (column widths included, so
/// tools that parse Linux's file parse ours), with this allocator's numbers:
/// free blocks per type and order, and the pageblocks of each type.
#[test]
fn pagetypeinfo_formats_like_linux() {
    with_alloc(0, 8 * MIB, |a, _| {
        let k = a.alloc(0, AllocFlags::KERNEL).unwrap();
        let text = a.pagetypeinfo();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Page block order: 9");
        assert_eq!(lines[1], "Pages per block:  512");
        assert_eq!(lines[2], "");
        assert!(
            lines[3].starts_with("Free pages count per migrate type at order       0      1 "),
            "{text}"
        );
        assert_eq!(lines[3].split_whitespace().count(), 8 + NR_ORDERS);
        assert!(
            lines[4].starts_with("Node    0, zone   Normal, type    Unmovable "),
            "{text}"
        );
        assert!(
            lines[5].starts_with("Node    0, zone   Normal, type      Movable "),
            "{text}"
        );
        assert_eq!(lines[6], "");
        assert_eq!(
            lines[7],
            "Number of blocks type     Unmovable      Movable "
        );
        // 8 MiB = 4 pageblocks; the kernel allocation stole the largest
        // free block, 4 MiB, and both its pageblocks with it (as Linux
        // claims every pageblock of a stolen block above pageblock order).
        let blocks: Vec<u64> = lines[8]
            .trim_start_matches("Node 0, zone   Normal ")
            .split_whitespace()
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(blocks, [2, 2], "{text}");
        // Free pages by type add up to the buddy lists' total.
        let free: u64 = lines[4..6]
            .iter()
            .flat_map(|l| l.split_whitespace().skip(6).enumerate())
            .map(|(o, c)| c.parse::<u64>().unwrap() << o)
            .sum();
        assert_eq!(free, a.buddyinfo().pages());
        k.put();
    });
}

#[test]
fn boot_handover_with_holes_and_reservations() {
    let mut info = BootInfo::empty();
    info.add_ram(PhysRange::new(0x1000, 0x9f000));
    info.add_ram(PhysRange::new(MIB, 10 * MIB + 0x800)); // ragged end
    info.add_ram(PhysRange::new(12 * MIB, 20 * MIB));
    info.add_reserved(PhysRange::new(MIB, 3 * MIB), ReservedKind::KernelImage);
    info.add_reserved(PhysRange::new(0x9e000, 0x100000), ReservedKind::Firmware); // half outside RAM
    info.add_reserved(
        PhysRange::new(15 * MIB + 0x123, 15 * MIB + 0x2000),
        ReservedKind::Initrd,
    );
    let (base, n) = memmap_span(info.ram()).unwrap();
    assert_eq!(base, 0);
    assert_eq!(n, (20 * MIB) >> PAGE_SHIFT);
    let d = descs(n);
    let mem = EmuMem::new(0, 20 * MIB);
    let a = BuddyAllocator::new(Memmap::new(&d, base), &mem, &SingleCpu);
    // The kernel reserves the memmap's own frames first.
    let memmap_res = a.reserve_range(19 * MIB, 20 * MIB);
    assert_eq!(memmap_res, 256);
    let added = a.init_from_bootinfo(&info);
    let ram_frames: u64 = (0x9f - 1) + ((9 * MIB) >> PAGE_SHIFT) + ((8 * MIB) >> PAGE_SHIFT);
    let s = a.stats();
    assert_eq!(s.free + s.used, ram_frames);
    assert_eq!(s.managed, added);
    assert_eq!(s.reserved, 256 + 512 + 1 + 2);
    assert_eq!(a.memmap().state(0x9e), FrameState::Reserved);
    assert_eq!(a.memmap().state(0xa0), FrameState::Hole);
    check(&a);
    // Drain memory completely; no allocation may land on a hole or reservation.
    let mut live = Vec::new();
    while let Ok(f) = a.alloc(0, AllocFlags::USER) {
        let st = |pfn| a.memmap().state(pfn);
        assert_eq!(st(f.pfn()), FrameState::Head);
        live.push(f.pfn());
    }
    assert_eq!(live.len() as u64, added);
    for pfn in live {
        a.free_pages(pfn, 0);
    }
    a.drain_all();
    check(&a);
    // Freeing reserved memory later works too.
    let before = a.stats();
    a.add_free_range(MIB, 3 * MIB);
    let after = a.stats();
    assert_eq!(after.free, before.free + 512);
    assert_eq!(after.reserved, before.reserved - 512);
    check(&a);
}

#[test]
fn unaligned_memmap_base() {
    // A memmap starting mid-pageblock: the first frame tags its pageblock.
    let base_pfn = 0x123;
    let n = 0x900;
    let d = descs(n);
    let mem = EmuMem::new(base_pfn << PAGE_SHIFT, n << PAGE_SHIFT);
    let a = BuddyAllocator::new(Memmap::new(&d, base_pfn), &mem, &SingleCpu);
    a.add_free_range(base_pfn << PAGE_SHIFT, (base_pfn + n) << PAGE_SHIFT);
    check(&a);
    let mut live = Vec::new();
    for o in [0, 3, 9, 0, 1, 5] {
        live.push(a.alloc(o, AllocFlags::KERNEL).unwrap());
        live.push(a.alloc(o, AllocFlags::USER).unwrap());
    }
    check(&a);
    for f in live {
        assert_eq!(f.pfn() % f.nr_pages(), 0);
        f.put();
    }
    a.drain_all();
    check(&a);
}

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

/// CPU ids from a thread-local, so host threads act as CPUs.
struct ThreadCpu;

impl CpuOps for ThreadCpu {
    fn cpu_id(&self) -> usize {
        CPU.with(|c| c.get())
    }
    fn irq_save(&self) -> usize {
        0
    }
    fn irq_restore(&self, _: usize) {}
}

#[test]
fn smp_threads_as_cpus() {
    let n = (64 * MIB) >> PAGE_SHIFT;
    let d = descs(n);
    let mem = EmuMem::new(0, 64 * MIB);
    let a = BuddyAllocator::new(Memmap::new(&d, 0), &mem, &ThreadCpu);
    a.add_free_range(0, 64 * MIB);
    a.set_poison(false);
    let initial = free_blocks(&a);
    std::thread::scope(|s| {
        for cpu in 0..MAX_CPUS + 1 {
            let a = &a;
            s.spawn(move || {
                CPU.with(|c| c.set(cpu));
                let mut rng = cpu as u64 * 0x9e37_79b9 + 1;
                let mut live: Vec<Folio<'_>> = Vec::new();
                for _ in 0..3000 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if live.len() < 64 && !rng.is_multiple_of(3) {
                        let order = [0, 0, 2, 4, 9][(rng >> 8) as usize % 5];
                        let fl = if rng & 1 << 20 != 0 {
                            AllocFlags::USER
                        } else {
                            AllocFlags::KERNEL
                        };
                        if let Ok(f) = a.alloc(order, fl) {
                            f.set_owner_raw(cpu as u64);
                            live.push(f);
                        }
                    } else if !live.is_empty() {
                        let f = live.swap_remove((rng >> 4) as usize % live.len());
                        assert_eq!(f.owner_raw(), cpu as u64, "folio shared between threads");
                        f.put();
                    }
                }
                for f in live {
                    f.put();
                }
            });
        }
    });
    // The threads are joined, so their caches are quiescent.
    for cpu in 0..MAX_CPUS {
        a.drain_cpu(cpu);
    }
    check(&a);
    assert_eq!(free_blocks(&a), initial);
}

/// A CPU layer whose `irq_save` reports alternately 0 (interrupts were
/// already masked) and 1 (it masked them); every restore is checked and
/// counted.
struct CountingCpu {
    saves: core::sync::atomic::AtomicUsize,
    unmasked: core::sync::atomic::AtomicUsize,
    restores: core::sync::atomic::AtomicUsize,
}

impl CpuOps for CountingCpu {
    fn cpu_id(&self) -> usize {
        0
    }
    fn irq_save(&self) -> usize {
        use core::sync::atomic::Ordering::Relaxed;
        let on = self.saves.fetch_add(1, Relaxed) % 2;
        self.unmasked.fetch_add(on, Relaxed);
        on
    }
    fn irq_restore(&self, saved: usize) {
        assert_eq!(saved, 1, "irq_restore of a state with nothing to restore");
        self.restores
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn irq_restore_only_when_irq_save_unmasked() {
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let cpu = CountingCpu {
        saves: AtomicUsize::new(0),
        unmasked: AtomicUsize::new(0),
        restores: AtomicUsize::new(0),
    };
    let d = descs((32 * MIB) >> PAGE_SHIFT);
    let mem = EmuMem::new(0, 32 * MIB);
    let a = BuddyAllocator::new(Memmap::new(&d, 0), &mem, &cpu);
    a.add_free_range(0, 32 * MIB);
    a.set_poison(false);
    // Cached and uncached orders, cache hits, refills and drains.
    for i in 0..100 {
        let fs: Vec<_> = (0..i % 7)
            .map(|j| {
                a.alloc([0, 2, 9, 10][(i + j) % 4], AllocFlags::USER)
                    .unwrap()
            })
            .collect();
        for f in fs {
            f.put();
        }
    }
    a.drain_all();
    check(&a);
    assert!(cpu.saves.load(Relaxed) >= 500);
    assert_eq!(cpu.restores.load(Relaxed), cpu.unmasked.load(Relaxed));
}

// ----- property test against a model ----------------------------------

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        order: u32,
        movable: bool,
        zero: bool,
    },
    Free(usize),
    GetPut(usize),
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prop_oneof![4 => 0u32..=4, 1 => 5u32..=MAX_ORDER], any::<bool>(), any::<bool>())
            .prop_map(|(order, movable, zero)| Op::Alloc { order, movable, zero }),
        4 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::GetPut),
        1 => Just(Op::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_alloc_free_matches_model(ops in proptest::collection::vec(op(), 1..160)) {
        // Two RAM ranges with a hole between them and a ragged start.
        let base_pfn = 0x200;
        let n = 0xa00;
        let d = descs(n);
        let mem = EmuMem::new(base_pfn << PAGE_SHIFT, n << PAGE_SHIFT);
        let a = BuddyAllocator::new(Memmap::new(&d, base_pfn), &mem, &SingleCpu);
        let ranges = [(0x3f0u64, 0x800u64), (0x900, 0xc00)];
        for (s, e) in ranges {
            a.add_free_range(s << PAGE_SHIFT, e << PAGE_SHIFT);
        }
        let initial = free_blocks(&a);
        let managed = a.stats().managed;
        let in_ram = |pfn: u64, n: u64| ranges.iter().any(|&(s, e)| pfn >= s && pfn + n <= e);
        // Model: live folios by pfn -> (order, a tag written into its first word).
        let mut live: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
        let mut handles: Vec<Folio<'_>> = Vec::new();
        let mut tag = 1u64;
        for op in ops {
            match op {
                Op::Alloc { order, movable, zero } => {
                    let mut fl = if movable { AllocFlags::USER } else { AllocFlags::KERNEL };
                    if zero { fl |= AllocFlags::ZERO; }
                    match a.alloc(order, fl) {
                        Ok(f) => {
                            let (pfn, np) = (f.pfn(), f.nr_pages());
                            prop_assert_eq!(f.order(), order);
                            prop_assert_eq!(pfn % np, 0, "misaligned");
                            prop_assert!(in_ram(pfn, np), "folio {:#x}+{} outside RAM", pfn, np);
                            if let Some((&p, &(o, _))) = live.range(..pfn + np).next_back() {
                                prop_assert!(p + (1 << o) <= pfn, "overlaps live folio {:#x}", p);
                            }
                            if zero {
                                prop_assert!(mem.is_zero(f.pa(), f.size()));
                            }
                            // Our data in the last word of the folio.
                            mem.store(f.pa() + f.size() - 8, tag);
                            live.insert(pfn, (order, tag));
                            handles.push(f);
                            tag += 1;
                        }
                        Err(e) => {
                            prop_assert_eq!(e, AllocError::NoMemory);
                            // Failure is honest: no block of that order or more is free.
                            let info = a.buddyinfo();
                            for o in order..=MAX_ORDER {
                                prop_assert_eq!(info.blocks(o), 0);
                            }
                            prop_assert_eq!(a.stats().free_pcp, 0);
                        }
                    }
                }
                Op::Free(i) if !handles.is_empty() => {
                    let f = handles.swap_remove(i % handles.len());
                    let (o, t) = live.remove(&f.pfn()).unwrap();
                    prop_assert_eq!(mem.load(f.pa() + f.size() - 8), t, "folio data clobbered");
                    prop_assert_eq!(f.order(), o);
                    f.put();
                }
                Op::GetPut(i) if !handles.is_empty() => {
                    let f = handles[i % handles.len()];
                    f.get();
                    f.put();
                    prop_assert_eq!(f.refcount(), 1);
                }
                Op::Drain => { a.drain_all(); }
                _ => {}
            }
            let s = a.stats();
            let live_pages: u64 = live.values().map(|&(o, _)| 1u64 << o).sum();
            prop_assert_eq!(s.allocated, live_pages);
            prop_assert_eq!(s.free + s.allocated, managed);
        }
        if let Err(e) = a.check_invariants() {
            prop_assert!(false, "{}", e);
        }
        for f in handles {
            f.put();
        }
        a.drain_all();
        prop_assert_eq!(free_blocks(&a), initial, "{}", format!("{}", a.buddyinfo()));
        if let Err(e) = a.check_invariants() {
            prop_assert!(false, "{}", e);
        }
    }
}

#[test]
fn folio_ref_drop_frees_and_clones_count() {
    with_alloc(0x100000, 0x100000 + 8 * MIB, |a, _| {
        let baseline = a.stats().free;
        let f = FolioRef::from_raw(a.alloc(4, AllocFlags::USER).unwrap());
        assert_eq!(a.stats().free, baseline - 16);
        assert_eq!(f.refcount(), 1);
        let g = f.clone();
        assert_eq!(*g, *f);
        assert_eq!(f.refcount(), 2);
        let h = f.get_ref();
        assert_eq!(f.refcount(), 3);
        drop(g);
        drop(h);
        assert_eq!(f.refcount(), 1);
        assert_eq!(a.stats().free, baseline - 16, "still held by one reference");
        drop(f);
        assert_eq!(a.stats().free, baseline, "the last reference freed it");
        check(a);
    });
}

#[test]
fn folio_ref_into_raw_hands_the_reference_over() {
    with_alloc(0x100000, 0x100000 + 8 * MIB, |a, _| {
        let baseline = a.stats().free;
        let f = FolioRef::from_raw(a.alloc(0, AllocFlags::USER).unwrap());
        // As the fault path does when the reference becomes a mapping's.
        let raw = f.into_raw();
        assert_eq!(raw.refcount(), 1);
        assert_eq!(a.stats().free, baseline - 1);
        // And back, as whoever unmaps it would drop it.
        drop(FolioRef::from_raw(raw));
        assert_eq!(a.stats().free, baseline);
        check(a);
    });
}

#[test]
fn folio_lock_guard_unlocks_on_early_return() {
    fn locks_then_bails(f: Folio<'_>, bail: bool) -> Result<(), ()> {
        let g = f.try_lock().ok_or(())?;
        assert!(f.try_lock().is_none(), "the lock is held");
        if bail {
            return Err(());
        }
        drop(g);
        Ok(())
    }
    with_alloc(0x100000, 0x100000 + 8 * MIB, |a, _| {
        let baseline = a.stats().free;
        {
            let f = FolioRef::from_raw(a.alloc(2, AllocFlags::USER).unwrap());
            assert_eq!(locks_then_bails(*f, true), Err(()));
            assert!(!f.test(PageFlags::LOCKED), "the early return unlocked it");
            assert_eq!(locks_then_bails(*f, false), Ok(()));
            assert!(!f.test(PageFlags::LOCKED));
            // A held lock makes the next try fail without touching it.
            let g = f.try_lock().unwrap();
            assert_eq!(locks_then_bails(*f, false), Err(()));
            assert!(g.test(PageFlags::LOCKED));
            // The guard, declared after the reference, goes first: the
            // folio is never freed locked.
        }
        assert_eq!(a.stats().free, baseline);
        check(a);
    });
}

static KSWAPD_WAKES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static WAKE: fn() = || {
    KSWAPD_WAKES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
};

#[test]
fn watermarks_keep_a_kernel_reserve_and_wake_kswapd() {
    with_alloc(0x4000_0000, 0x4000_0000 + 4 * MIB, |a, _| {
        let total = a.stats().free;
        a.set_watermarks(256, 320, 384);
        a.set_kswapd_hook(&WAKE);
        let mut user = Vec::new();
        while let Ok(f) = a.alloc(0, AllocFlags::USER) {
            user.push(FolioRef::from_raw(f));
        }
        let left = a.stats().free;
        assert!(left >= 256, "user memory stopped at min ({left} left)");
        assert!(left < 256 + 128, "but not much above it ({left} left)");
        assert!(KSWAPD_WAKES.load(std::sync::atomic::Ordering::Relaxed) > 0);
        // The kernel may still allocate from the reserve.
        let k = a.alloc(0, AllocFlags::PAGETABLE).map(FolioRef::from_raw);
        assert!(k.is_ok());
        drop(k);
        drop(user);
        a.drain_all();
        assert_eq!(a.stats().free, total);
    });
}
