//! Host tests of the per-node zones: where allocations land, how they fall
//! back, THISNODE, where frees go, the per-node views and counters.

use std::cell::Cell;
use std::vec::Vec;

use crate::addr::PAGE_SHIFT;
use crate::cpu::CpuOps;
use crate::emu::EmuMem;
use crate::physmem::buddy::{AllocError, AllocFlags, BuddyAllocator, Wmark};
use crate::physmem::folio::Folio;
use crate::physmem::memmap::{FrameDesc, Memmap};
use crate::physmem::node::NodeMap;
use crate::physmem::watermark::node_zone_watermarks;

const MIB: u64 = 1 << 20;

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

/// CPU ids from a thread-local: a test switches "CPU" by setting it.
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

fn on_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

/// Nodes of `per_node` bytes each, back to back from physical 0; CPU `i`
/// on node `cpu_nodes[i]`; `dist` the distance table (or defaults).
fn with_nodes<R>(
    per_node: u64,
    nr: usize,
    cpu_nodes: &[usize],
    dist: Option<&[u8]>,
    f: impl FnOnce(&BuddyAllocator<'_>) -> R,
) -> R {
    let end = per_node * nr as u64;
    let d: Vec<FrameDesc> = (0..end >> PAGE_SHIFT).map(|_| FrameDesc::new()).collect();
    let mem = EmuMem::new(0, end);
    let mut map = NodeMap::new(nr).unwrap();
    for n in 0..nr {
        map.add_mem(n as u64 * per_node, (n as u64 + 1) * per_node, n)
            .unwrap();
    }
    for (cpu, &n) in cpu_nodes.iter().enumerate() {
        map.set_cpu_node(cpu, n).unwrap();
    }
    if let Some(t) = dist {
        map.set_distances(t).unwrap();
    }
    let a = BuddyAllocator::with_nodes(Memmap::new(&d, 0), &mem, &ThreadCpu, map);
    a.add_free_range(0, end);
    on_cpu(0);
    let r = f(&a);
    check(&a);
    r
}

fn check(a: &BuddyAllocator<'_>) {
    if let Err(e) = a.check_invariants() {
        panic!("invariants broken:\n{e}");
    }
}

fn node_of(a: &BuddyAllocator<'_>, f: &Folio<'_>) -> usize {
    a.node_of_pfn(f.pfn())
}

/// Allocates order-0 folios on `nid` only until it has none left.
fn exhaust<'a>(a: &'a BuddyAllocator<'_>, nid: usize) -> Vec<Folio<'a>> {
    let mut v = Vec::new();
    while let Ok(f) = a.alloc_node(nid, 0, AllocFlags::USER | AllocFlags::THISNODE) {
        assert_eq!(node_of(a, &f), nid);
        v.push(f);
    }
    v
}

fn put_all(v: Vec<Folio<'_>>) {
    for f in v {
        f.put();
    }
}

#[test]
fn allocation_prefers_the_cpus_node() {
    with_nodes(8 * MIB, 2, &[0, 1], None, |a| {
        for (cpu, node) in [(0, 0), (1, 1)] {
            on_cpu(cpu);
            for order in [0, 4, 9, 10] {
                let f = a.alloc(order, AllocFlags::USER).unwrap();
                assert_eq!(node_of(a, &f), node, "cpu {cpu} order {order}");
                f.put();
                // Uncached orders do not wait for a drain before falling
                // back (as Linux, which drains only in its slow path).
                a.drain_cpu(cpu);
            }
        }
        on_cpu(0);
        // An explicit node, from a CPU of another node.
        let f = a.alloc_node(1, 2, AllocFlags::USER).unwrap();
        assert_eq!(node_of(a, &f), 1);
        f.put();
    });
}

#[test]
fn fallback_follows_distance_and_counts_misses() {
    // Node 0 is nearer to node 2 than to node 1.
    let dist = [10, 40, 20, 40, 10, 20, 20, 20, 10];
    with_nodes(4 * MIB, 3, &[0], Some(&dist), |a| {
        let n0 = exhaust(a, 0);
        let before = (a.numa_stat(0), a.numa_stat(2));
        let f = a.alloc(0, AllocFlags::USER).unwrap();
        assert_eq!(node_of(a, &f), 2, "first fallback is the nearest node");
        let after = (a.numa_stat(0), a.numa_stat(2));
        assert_eq!(after.1.miss, before.1.miss + 1);
        assert_eq!(after.1.other, before.1.other + 1);
        assert_eq!(after.0.foreign, before.0.foreign + 1);
        f.put();
        let n2 = exhaust(a, 2);
        let f = a.alloc(3, AllocFlags::USER).unwrap();
        assert_eq!(node_of(a, &f), 1, "then the farther one");
        f.put();
        put_all(n0);
        put_all(n2);
        a.drain_cpu(0);
        assert_eq!(a.stats().free, 3 * 1024);
    });
}

#[test]
fn thisnode_fails_instead_of_falling_back() {
    with_nodes(4 * MIB, 2, &[0, 1], None, |a| {
        let n0 = exhaust(a, 0);
        assert_eq!(
            a.alloc(0, AllocFlags::USER | AllocFlags::THISNODE).err(),
            Some(AllocError::NoMemory)
        );
        assert_eq!(
            a.alloc_node(0, 2, AllocFlags::USER | AllocFlags::THISNODE)
                .err(),
            Some(AllocError::NoMemory)
        );
        // Without THISNODE the same request falls back to node 1.
        let f = a.alloc(0, AllocFlags::USER).unwrap();
        assert_eq!(node_of(a, &f), 1);
        assert!(a.node_free_pages(1) > 0);
        f.put();
        put_all(n0);
    });
}

#[test]
fn remote_frees_go_to_their_nodes_cache() {
    with_nodes(4 * MIB, 2, &[0, 1], None, |a| {
        let free1 = a.node_free(1);
        assert_eq!(a.node_free_pages(1), free1, "no cache holds anything yet");
        // CPU 0 allocates on node 1 and frees there: the pages go to CPU
        // 0's cache of node 1 (check_invariants checks that every cache
        // holds only its node's pages), and back to node 1's zone when it
        // drains.
        let v: Vec<_> = (0..64)
            .map(|i| a.alloc_node(1, i % 3, AllocFlags::USER).unwrap())
            .collect();
        assert!(v.iter().all(|f| node_of(a, f) == 1));
        assert!(a.node_free_pages(1) < free1);
        put_all(v);
        assert_eq!(a.node_free_pages(1), free1, "node 1 got everything back");
        check(a);
        // A THISNODE request on CPU 0 is never handed a node-1 page from
        // a cache: exhaust node 0 while node 1 pages sit in CPU 0's cache.
        let n0 = exhaust(a, 0);
        assert!(n0.iter().all(|f| node_of(a, f) == 0));
        put_all(n0);
        a.drain_cpu(0);
        assert_eq!(a.node_free(1), free1, "node 1's zone got everything back");
        check(a);
    });
}

#[test]
fn unaligned_node_boundary_never_merges_across() {
    // Nodes of 3 MiB: the boundary is not 4 MiB aligned, so a 4 MiB block
    // could only form across it.
    with_nodes(3 * MIB, 2, &[0, 1], None, |a| {
        a.for_each_free_block(|pfn, o, _| {
            assert_eq!(
                a.node_of_pfn(pfn),
                a.node_of_pfn(pfn + (1 << o) - 1),
                "block {pfn:#x} order {o} spans two nodes"
            );
        });
        assert_eq!(a.node_free(0), 768);
        assert_eq!(a.node_free(1), 768);
        // Churn near the boundary and check nothing merged across it.
        let v: Vec<_> = (0..200)
            .map(|_| a.alloc(0, AllocFlags::USER).unwrap())
            .collect();
        put_all(v);
        a.drain_cpu(0);
        a.for_each_free_block(|pfn, o, _| {
            assert_eq!(a.node_of_pfn(pfn), a.node_of_pfn(pfn + (1 << o) - 1));
        });
    });
}

#[test]
fn buddyinfo_and_pagetypeinfo_per_node() {
    with_nodes(4 * MIB, 2, &[0, 1], None, |a| {
        let held = a.alloc_node(1, 10, AllocFlags::USER).unwrap();
        let text = a.buddyinfo_text();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("Node 0, zone   Normal "), "{text}");
        assert!(lines[1].starts_with("Node 1, zone   Normal "), "{text}");
        assert_eq!(a.buddyinfo_node(0).blocks(10), 1);
        assert_eq!(a.buddyinfo_node(1).blocks(10), 0);
        assert_eq!(a.buddyinfo().blocks(10), 1);
        let pti = a.pagetypeinfo();
        assert!(
            pti.contains("Node    1, zone   Normal, type      Movable"),
            "{pti}"
        );
        assert!(pti.contains("\nNode 1, zone   Normal "), "{pti}");
        held.put();
    });
}

#[test]
fn watermarks_split_by_zone_size_and_fall_back() {
    // Node 0 has 8 MiB, node 1 4 MiB: set up by hand.
    let end = 12 * MIB;
    let d: Vec<FrameDesc> = (0..end >> PAGE_SHIFT).map(|_| FrameDesc::new()).collect();
    let mem = EmuMem::new(0, end);
    let mut map = NodeMap::new(2).unwrap();
    map.add_mem(0, 8 * MIB, 0).unwrap();
    map.add_mem(8 * MIB, end, 1).unwrap();
    let a = BuddyAllocator::with_nodes(Memmap::new(&d, 0), &mem, &ThreadCpu, map);
    a.add_free_range(0, end);
    on_cpu(0);
    // Linux's split: min by managed size, the gap from each zone's own.
    let managed = [a.node_managed(0).0, a.node_managed(1).0];
    let w: Vec<_> = node_zone_watermarks(1200, &managed, 10).collect();
    assert_eq!((w[0].min, w[1].min), (200, 100));
    assert_eq!((w[0].low, w[0].high), (250, 300));
    for (n, w) in w.iter().enumerate() {
        a.set_node_watermarks(n, w.min, w.low, w.high);
    }
    assert_eq!(a.node_watermark(0, Wmark::Min), 200);
    assert_eq!(a.node_watermark(1, Wmark::Min), 100);
    assert_eq!(a.watermark(Wmark::High), 300 + 150);
    // Fill node 0 down to its min (THISNODE requests then fail there).
    // The cache is served without a watermark check (only its refill
    // checks), so it is emptied before giving up.
    let mut v = Vec::new();
    loop {
        match a.alloc_node(0, 4, AllocFlags::USER | AllocFlags::THISNODE) {
            Ok(f) => v.push(f),
            Err(_) if a.drain_cpu(0) == 0 => break,
            Err(_) => {}
        }
    }
    assert!(a.node_free(0) > 0 && a.node_free(0) < 200 + 16);
    // Kernel allocations may still use node 0's reserve.
    let k = a
        .alloc_node(0, 0, AllocFlags::KERNEL | AllocFlags::THISNODE)
        .unwrap();
    k.put();
    a.drain_cpu(0);
    // User ones go to node 1.
    let f = a.alloc(4, AllocFlags::USER).unwrap();
    assert_eq!(node_of(&a, &f), 1);
    f.put();
    put_all(v);
    a.drain_cpu(0);
    check(&a);
}

#[test]
fn cache_hits_count_as_local_hits() {
    with_nodes(4 * MIB, 2, &[0, 1], None, |a| {
        let s0 = a.numa_stat(0);
        let v: Vec<_> = (0..10)
            .map(|_| a.alloc(0, AllocFlags::USER).unwrap())
            .collect();
        let s1 = a.numa_stat(0);
        assert_eq!(s1.hit, s0.hit + 10);
        assert_eq!(s1.local, s0.local + 10);
        assert_eq!(
            (s1.miss, s1.other, s1.foreign),
            (s0.miss, s0.other, s0.foreign)
        );
        put_all(v);
        // A remote allocation on purpose is a hit there, but "other".
        let f = a
            .alloc_node(1, 0, AllocFlags::USER | AllocFlags::INTERLEAVE)
            .unwrap();
        let t = a.numa_stat(1);
        assert_eq!((t.hit, t.other, t.interleave, t.local), (1, 1, 1, 0));
        f.put();
        let tot = a.numa_stat_total();
        assert_eq!(tot.hit, s1.hit + 1);
    });
}
