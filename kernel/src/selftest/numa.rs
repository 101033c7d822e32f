//! NUMA self-tests: the nodes the firmware described (ACPI SRAT on x86
//! `q35`, device-tree `numa-node-id` on arm64 `virt`) reach the allocator
//! with the right sizes and CPUs, allocations land on the node asked for
//! (and by default on the running CPU's), and the node files read back
//! right.  They need a boot with two nodes (the runner's `q35` and
//! `gicv3` boots, `--numa 2`: memory split evenly, CPU c on node
//! `c * nodes / cpus`) and skip on one node.
use crate::arch;
use crate::mem::memory::{boot_ram_frames, buddy};
use crate::mem::numa;
use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use ktest::{check, check_eq, ktest, skip};
use mm::physmem::buddy::AllocFlags;

fn need_two_nodes() -> Result<usize, alloc::string::String> {
    let n = buddy().nodes().nr_nodes();
    if n < 2 {
        skip!("one NUMA node (the q35 / gicv3 boots have two)");
    }
    Ok(n)
}

ktest! {
    /// Two nodes of half the RAM each (within 1 MiB: x86 leaves the
    /// legacy hole out of node 0), each CPU on the node the runner put it
    /// on, default distances 10 / 20, and every managed frame in a zone.
    fn numa_nodes_discovered_with_sizes_and_cpus() {
        let n = need_two_nodes()?;
        let b = buddy();
        let map = b.nodes();
        check_eq!(n, 2);
        let half = boot_ram_frames() / 2;
        let mut managed = 0;
        for node in 0..n {
            let span = map.node_span_pages(node);
            check!(span.abs_diff(half) <= 256, "node {} spans {} pages, half the RAM is {}", node, span, half);
            let (m, r) = b.node_managed(node);
            check!(m + r >= span * 9 / 10, "node {}: managed {} + reserved {} of {}", node, m, r, span);
            managed += m;
            for other in 0..n {
                let want = if node == other { 10 } else { 20 };
                check_eq!(map.distance(node, other), want);
            }
        }
        check_eq!(managed, b.stats().managed);
        let cpus = arch::nr_cpus_possible();
        for c in 0..cpus {
            check_eq!(map.cpu_node(c), c * n / cpus, "cpu {}", c);
        }
        Ok(())
    }
}

ktest! {
    /// An allocation asked of each node (THISNODE, every cached order and
    /// the PMD order) lands there entirely, counted as a hit there; and a
    /// default allocation on each CPU lands on that CPU's node.
    fn numa_alloc_lands_on_the_node_asked() {
        let n = need_two_nodes()?;
        let b = buddy();
        for node in 0..n {
            let before = b.numa_stat(node).hit;
            let mut held = Vec::new();
            for order in [0, 2, 4, 9] {
                let f = b
                    .alloc_node(node, order, AllocFlags::USER | AllocFlags::THISNODE)
                    .map_err(|e| format!("node {node} order {order}: {e}"))?;
                let last = f.pfn() + (1 << order) - 1;
                check_eq!(b.node_of_pfn(f.pfn()), node, "order {}", order);
                check_eq!(b.node_of_pfn(last), node, "order {} tail", order);
                held.push(f);
            }
            check!(b.numa_stat(node).hit >= before + 4);
            for f in held {
                f.put();
            }
        }
        // Default allocations: here, and on every other CPU.
        let here = arch::cpu_id();
        let f = b.alloc(0, AllocFlags::USER).map_err(|e| format!("{e}"))?;
        check_eq!(b.node_of_pfn(f.pfn()), b.nodes().cpu_node(here));
        f.put();
        static WRONG: AtomicU64 = AtomicU64::new(0);
        static DONE: AtomicU64 = AtomicU64::new(0);
        WRONG.store(0, SeqCst);
        DONE.store(0, SeqCst);
        crate::mem::xcall::call_on_others(&|| {
            let b = buddy();
            let cpu = arch::cpu_id();
            if let Ok(f) = b.alloc(0, AllocFlags::USER) {
                if b.node_of_pfn(f.pfn()) != b.nodes().cpu_node(cpu) {
                    WRONG.fetch_or(1 << cpu, SeqCst);
                }
                f.put();
                DONE.fetch_add(1, SeqCst);
            }
        });
        check_eq!(WRONG.load(SeqCst), 0, "CPUs whose default allocation went to another node");
        check_eq!(DONE.load(SeqCst) as usize, arch::nr_cpus_online() - 1);
        Ok(())
    }
}

ktest! {
    /// `/sys/devices/system/node` reads back the layout: the masks, each
    /// node's `cpulist`, `cpumap`, `distance`, `meminfo` (Linux's
    /// `Node N MemTotal:` lines, MemFree + MemUsed = MemTotal), `numastat`
    /// names, and one `/proc/buddyinfo` and `/proc/zoneinfo` section per
    /// node.
    fn numa_sysfs_files_read_back() {
        let n = need_two_nodes()?;
        for f in ["possible", "online", "has_memory", "has_normal_memory", "has_cpu"] {
            let text = numa::mask_file(f);
            check_eq!(text.as_deref(), Some("0-1\n"), "{}", f);
        }
        let cpus = arch::nr_cpus_possible();
        let b = buddy();
        for node in 0..n {
            let file = |name: &str| numa::node_file(node, name).unwrap_or_default();
            let mine: Vec<usize> = (0..cpus).filter(|&c| b.nodes().cpu_node(c) == node).collect();
            check_eq!(file("cpulist"), numa::id_list(mine.iter().copied()));
            let mask: usize = mine.iter().map(|c| 1 << c).sum();
            check_eq!(usize::from_str_radix(file("cpumap").trim(), 16).ok(), Some(mask));
            check_eq!(file("distance"), if node == 0 { "10 20\n" } else { "20 10\n" });
            let meminfo = file("meminfo");
            let value = |k: &str| -> Option<u64> {
                let line = meminfo.lines().find(|l| l.starts_with(&format!("Node {node} {k}:")))?;
                line.split_whitespace().rev().nth(1)?.parse().ok()
            };
            let (total, free, used) = (value("MemTotal"), value("MemFree"), value("MemUsed"));
            check_eq!(total, Some(b.node_managed(node).0 * 4), "{}", meminfo);
            check_eq!(free.zip(used).map(|(f, u)| f + u), total, "{}", meminfo);
            check!(meminfo.starts_with(&format!("Node {node} MemTotal:       ")), "{}", meminfo);
            let numastat = file("numastat");
            let names: Vec<&str> = numastat
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            check_eq!(names, ["numa_hit", "numa_miss", "numa_foreign", "interleave_hit", "local_node", "other_node"]);
        }
        check_eq!(numa::node_file(n, "cpulist"), None);
        check_eq!(numa::parse_node_dir("node01"), None);
        let bi = b.buddyinfo_text();
        check_eq!(bi.lines().count(), n, "{}", bi);
        check!(bi.lines().nth(1).is_some_and(|l| l.starts_with("Node 1, zone   Normal")), "{}", bi);
        let zi = crate::mem::watermark::zoneinfo();
        check!(zi.contains("\nNode 1, zone "), "{}", zi);
        Ok(())
    }
}
