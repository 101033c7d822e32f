//! NUMA balancing over both entry formats on a two-node machine: the scan
//! turns present anonymous mappings into hinting entries (PTEs and PMDs,
//! with Linux's skips), one fault per folio restores all its entries
//! (arm64: the contiguous block folds again), a folio on the wrong node
//! moves whole to the faulting CPU's node with its data, a shared folio
//! stays, and the `numa_*` counters count as Linux's.

mod mmtest;

use mm::aspace::{Access, Mm};
use mm::paging::{PMD_LEVEL, PagingArch};
use mm::thp::VmEvent;
use mm::vma::mempolicy::{MPOL_F_NUMA_BALANCING, Mempolicy, NodeMask};
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;
/// Per node.
const NODE_RAM: u64 = 32 * MIB;
/// One scan period's budget: Linux's `scan_size_mb` 256, in pages.
const SCAN: u64 = 256 * MIB / K4;

fn node_of<'a, A: PagingArch>(env: &Env<'a, A>, mm: &Mm<'a, A>, va: u64) -> usize {
    env.buddy.node_of_pfn(env.folio_at(mm, va).unwrap().pfn())
}

/// Whether every page of `[va, va + len)` is mapped by a leaf the MMU
/// accepts (not a hinting entry).
fn accessible<'a, A: PagingArch>(env: &Env<'a, A>, mm: &Mm<'a, A>, va: u64, len: u64) -> bool {
    (va..va + len)
        .step_by(K4 as usize)
        .all(|p| env.leaf(mm, p).is_some_and(|l| l.attrs.perms.accessible()))
}

/// Whether every page of `[va, va + len)` holds a hinting entry.
fn hinting<'a, A: PagingArch>(env: &Env<'a, A>, mm: &Mm<'a, A>, va: u64, len: u64) -> bool {
    (va..va + len)
        .step_by(K4 as usize)
        .all(|p| env.leaf(mm, p).is_some_and(|l| !l.attrs.perms.accessible()))
}

/// A scan marks every present anonymous page (a PMD as one entry), counts
/// `numa_pte_updates` (a PMD as 512) and `numa_huge_pte_updates`; a second
/// scan finds them already hinting; a single-threaded task's folios on its
/// own node are skipped; the zero page is never marked.
fn scan_marks_entries<A: PagingArch>() {
    run_numa::<A>(NODE_RAM, 2, |env| {
        env.only_order(4);
        let mm = env.mm();
        let len = 2 * M2;
        mm.mmap(VA, len + K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, M2, 1);
        env.thp.config.set_order_mode(9, mm::thp::OrderMode::Always);
        env.fill_pages(&mm, VA + M2, M2, 2);
        env.read_u64(&mm, VA + len); // the zero page
        assert_eq!(env.leaf(&mm, VA + M2).unwrap().level, PMD_LEVEL);
        // Local to CPU 0's node: a single-threaded task skips them.
        let s = mm.task_numa_work(SCAN, Some(0));
        assert_eq!(s.pte_updates, 0);
        assert!(accessible(env, &mm, VA, len));
        let s = mm.task_numa_work(SCAN, None);
        assert_eq!((s.pte_updates, s.huge_pte_updates), (1024, 1));
        assert!(hinting(env, &mm, VA, len));
        assert!(accessible(env, &mm, VA + len, K4), "zero page left alone");
        assert_eq!(env.event(VmEvent::NumaPteUpdates), 1024);
        assert_eq!(env.event(VmEvent::NumaHugePteUpdates), 1);
        let s = mm.task_numa_work(SCAN, None);
        assert_eq!(s.pte_updates, 0, "already hinting");
        env.check(&[&mm]);
        env.check_pages(&mm, VA, M2, 1);
        env.check_pages(&mm, VA + M2, M2, 2);
        assert_eq!(env.event(VmEvent::NumaHintFaults), 32 + 1);
        assert_eq!(env.event(VmEvent::NumaHintFaultsLocal), 32 + 1);
        assert_eq!(env.event(VmEvent::NumaPagesMigrated), 0);
        assert_eq!(
            env.leaf(&mm, VA + M2).unwrap().level,
            PMD_LEVEL,
            "restored whole"
        );
        env.check(&[&mm]);
    });
}

/// The budget: a period marks about `pages` pages, then the next one goes
/// on from there and wraps after the last VMA.
fn scan_resumes<A: PagingArch>() {
    run_numa::<A>(NODE_RAM, 2, |env| {
        env.no_thp();
        let mm = env.mm();
        mm.mmap(VA, 4 * M2, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 4 * M2, 3);
        let s = mm.task_numa_work(512, None);
        assert_eq!(s.pte_updates, 512);
        assert!(!s.wrapped);
        assert!(hinting(env, &mm, VA, M2) && accessible(env, &mm, VA + M2, 3 * M2));
        let s = mm.task_numa_work(3 * 512, None);
        assert_eq!(s.pte_updates, 3 * 512);
        assert!(hinting(env, &mm, VA, 4 * M2));
        let s = mm.task_numa_work(512, None);
        assert!(s.wrapped && s.pte_updates == 0);
        env.check_pages(&mm, VA, 4 * M2, 3);
    });
}

/// A read and then a write fault on a hinting entry of a local 64K folio:
/// each takes exactly one fault for the 16 pages, which all get their
/// rights back (writable: the folio is exclusive), the arm64 contiguous
/// block folded again.
fn fault_restores_whole_folio<A: PagingArch>() {
    run_numa::<A>(NODE_RAM, 2, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, K64, 4);
        for (k, acc) in [Access::Read, Access::Write].into_iter().enumerate() {
            mm.task_numa_work(SCAN, None);
            assert!(hinting(env, &mm, VA, K64));
            let f0 = env.faults.get();
            env.touch(&mm, VA + 5 * K4, acc).unwrap();
            assert_eq!(env.faults.get(), f0 + 1);
            assert!(accessible(env, &mm, VA, K64));
            for p in (VA..VA + K64).step_by(K4 as usize) {
                let l = env.leaf(&mm, p).unwrap();
                assert!(l.attrs.perms.write, "exclusive: writable again");
                assert_eq!(l.cont, has_cont::<A>(), "contpte block refolded");
            }
            // No more faults over the folio.
            env.check_pages(&mm, VA, K64, 4);
            env.fill_pages(&mm, VA, K64, 4);
            assert_eq!(env.faults.get(), f0 + 1);
            assert_eq!(env.event(VmEvent::NumaHintFaults), k as u64 + 1);
            assert_eq!(env.event(VmEvent::NumaHintFaultsLocal), k as u64 + 1);
        }
        assert_eq!(env.event(VmEvent::NumaPagesMigrated), 0);
        env.check(&[&mm]);
    });
}

/// Folios of 4K, 16K, 64K and 2M first touched on node 0, then touched by
/// a thread on CPU 1 (node 1): one hinting fault each moves the folio
/// whole to node 1 (order kept, data intact), counted in
/// `numa_pages_migrated`, and restores all its entries.
fn misplaced_folio_migrates_whole<A: PagingArch>() {
    for order in [0u32, 2, 4, 9] {
        run_numa::<A>(NODE_RAM, 2, |env| {
            env.only_order(order);
            let mm = env.mm();
            let size = K4 << order;
            let len = 2 * M2;
            mm.mmap(VA, len, RW, ANON | MAP_FIXED).unwrap();
            env.fill_pages(&mm, VA, len, 5);
            let f = env.folio_at(&mm, VA).unwrap();
            assert_eq!((f.order(), node_of(env, &mm, VA)), (order, 0));
            let s = mm.task_numa_work(SCAN, None);
            assert_eq!(s.pte_updates, len / K4);
            on_cpu(1);
            let f0 = env.faults.get();
            let folios = len / size;
            for i in 0..folios {
                let at = VA + i * size + size / 2;
                env.touch(&mm, at, Access::Read).unwrap();
                assert_eq!(env.faults.get(), f0 + i + 1, "one fault per folio");
                assert!(accessible(env, &mm, VA + i * size, size));
            }
            for p in (VA..VA + len).step_by(size as usize) {
                let f = env.folio_at(&mm, p).unwrap();
                assert_eq!(f.order(), order, "order kept");
                assert_eq!(env.buddy.node_of_pfn(f.pfn()), 1, "moved to CPU 1's node");
                let l = env.leaf(&mm, p + size - K4).unwrap();
                assert!(l.attrs.perms.write);
                if order == 9 {
                    assert_eq!(l.level, PMD_LEVEL, "2M: PMD-mapped again");
                } else if has_cont::<A>() && order >= 4 {
                    assert!(l.cont, "contpte block refolded");
                }
            }
            env.check_pages(&mm, VA, len, 5);
            assert_eq!(env.faults.get(), f0 + folios);
            assert_eq!(env.event(VmEvent::NumaHintFaults), folios);
            assert_eq!(env.event(VmEvent::NumaHintFaultsLocal), 0);
            assert_eq!(env.event(VmEvent::NumaPagesMigrated), len / K4);
            assert_eq!(env.event(VmEvent::PgMigrateSuccess), len / K4);
            env.check(&[&mm]);
            on_cpu(0);
        });
    }
}

/// A folio another process maps too (after fork) is never migrated: the
/// scan skips it, and a hinting entry made before the fork only gets its
/// rights back (read-only: no longer exclusive) on the fault.
fn shared_folio_not_migrated<A: PagingArch>() {
    run_numa::<A>(NODE_RAM, 2, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 2 * K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 2 * K64, 6);
        mm.task_numa_work(SCAN, None);
        let child = mm.fork().unwrap();
        let s = mm.task_numa_work(SCAN, None);
        assert_eq!(s.pte_updates, 0);
        on_cpu(1);
        let f0 = env.faults.get();
        env.touch(&mm, VA, Access::Read).unwrap();
        assert_eq!(env.faults.get(), f0 + 1);
        assert!(accessible(env, &mm, VA, K64));
        assert!(
            !env.leaf(&mm, VA).unwrap().attrs.perms.write,
            "shared: read-only"
        );
        assert_eq!(node_of(env, &mm, VA), 0, "not migrated");
        assert_eq!(env.event(VmEvent::NumaPagesMigrated), 0);
        // After the scan skipped them, the faults are COW as usual.
        mm.exit_mmap();
        on_cpu(0);
        env.check_pages(&child, VA, 2 * K64, 6);
        assert_eq!(node_of(env, &child, VA), 0);
        env.check(&[&child]);
    });
}

/// Only VMAs whose policy migrates on fault are scanned (Linux's
/// `vma_policy_mof`): not one `mbind` bound to a node, nor any VMA under
/// such a task policy; a `BIND | MPOL_F_NUMA_BALANCING` VMA is, and its
/// folio moves to the faulting CPU's node only if the policy allows that
/// node.
fn policy_decides<A: PagingArch>() {
    run_numa::<A>(NODE_RAM, 2, |env| {
        env.only_order(4);
        let mm = env.mm();
        mm.mmap(VA, 2 * K64, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, VA, 2 * K64, 7);
        let both = NodeMask(0b11);
        let bind =
            |nodes: u32, flags: u32| Mempolicy::new(2 | flags, NodeMask(nodes), both).unwrap();
        mm.mbind(VA, K64, bind(0b01, 0), 0).unwrap();
        let s = mm.task_numa_work(SCAN, None);
        assert_eq!(s.pte_updates, 16, "the bound VMA is skipped");
        assert!(accessible(env, &mm, VA, K64) && hinting(env, &mm, VA + K64, K64));
        mm.set_task_policy(bind(0b01, 0));
        let s = mm.task_numa_work(SCAN, None);
        assert_eq!(s.pte_updates, 0, "an explicit task policy stops the scan");
        mm.set_task_policy(None);
        mm.mbind(VA, K64, bind(0b11, MPOL_F_NUMA_BALANCING), 0)
            .unwrap();
        mm.mbind(VA + K64, K64, bind(0b01, MPOL_F_NUMA_BALANCING), 0)
            .unwrap();
        let s = mm.task_numa_work(SCAN, None);
        assert_eq!(s.pte_updates, 16, "MPOL_F_NUMA_BALANCING: scanned");
        on_cpu(1);
        env.check_pages(&mm, VA, 2 * K64, 7);
        assert_eq!(node_of(env, &mm, VA), 1, "node 1 allowed: moved");
        assert_eq!(node_of(env, &mm, VA + K64), 0, "node 1 not allowed: stays");
        assert!(accessible(env, &mm, VA, 2 * K64));
        assert_eq!(env.event(VmEvent::NumaPagesMigrated), 16);
        env.check(&[&mm]);
        on_cpu(0);
    });
}

both_formats!(
    policy_decides,
    scan_marks_entries,
    scan_resumes,
    fault_restores_whole_folio,
    misplaced_folio_migrates_whole,
    shared_folio_not_migrated,
);
