//! What user space reads about NUMA nodes: `/sys/devices/system/node/`
//! (the node masks `possible`, `online`, `has_memory`,
//! `has_normal_memory`, `has_cpu`, and per node `cpulist`, `cpumap`,
//! `distance`, `meminfo`, `numastat`), in Linux's formats.  The texts are
//! built here from the allocator's node map and counters; `fs/vfs.rs`
//! serves them.
//!
//! Every node the firmware described is possible and online.  Only the
//! counters this kernel keeps per node appear in `meminfo`: the LRU is one
//! list for all nodes (see `docs/linux-differences.md`), so the per-node
//! `Active`/`Inactive` lines Linux prints are left out rather than shown
//! wrong.
use crate::arch;
use crate::mem::memory::buddy;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use mm::cpu::MAX_CPUS;

/// The directory.
pub const NODE_DIR: &str = "/sys/devices/system/node";
/// Files of the directory itself.
pub const MASK_FILES: [&str; 5] = [
    "has_cpu",
    "has_memory",
    "has_normal_memory",
    "online",
    "possible",
];
/// Files of each `nodeN` directory.
pub const NODE_FILES: [&str; 5] = ["cpulist", "cpumap", "distance", "meminfo", "numastat"];

/// Number of nodes.
pub fn nr_nodes() -> usize {
    buddy().nodes().nr_nodes()
}

/// The CPUs the firmware describes that sit on `node`.
fn node_cpus(node: usize) -> impl Iterator<Item = usize> {
    let n = arch::nr_cpus_possible().min(MAX_CPUS);
    (0..n).filter(move |&c| buddy().nodes().cpu_node(c) == node)
}

/// A sorted id list in Linux's list format (`0-2,5`), with a newline.
pub fn id_list(ids: impl IntoIterator<Item = usize>) -> String {
    let ids: Vec<usize> = ids.into_iter().collect();
    let mut s = String::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        while i + 1 < ids.len() && ids[i + 1] == ids[i] + 1 {
            i += 1;
        }
        if !s.is_empty() {
            s.push(',');
        }
        if start == ids[i] {
            let _ = write!(s, "{start}");
        } else {
            let _ = write!(s, "{start}-{}", ids[i]);
        }
        i += 1;
    }
    s.push('\n');
    s
}

/// A CPU mask in Linux's `cpumap` format: `nbits` (the possible CPUs)
/// rounded up to hex digits, most significant first, 32-bit groups
/// separated by commas.
pub fn cpu_mask(cpus: impl IntoIterator<Item = usize>, nbits: usize) -> String {
    let mut bits = [0u32; MAX_CPUS.div_ceil(32)];
    for c in cpus {
        if c < nbits {
            bits[c / 32] |= 1 << (c % 32);
        }
    }
    let groups = nbits.div_ceil(32).max(1);
    let mut s = String::new();
    for g in (0..groups).rev() {
        let digits = if g == groups - 1 {
            (nbits - 32 * g).div_ceil(4).max(1)
        } else {
            8
        };
        if g != groups - 1 {
            s.push(',');
        }
        let _ = write!(s, "{:0digits$x}", bits[g]);
    }
    s.push('\n');
    s
}

/// A file of the node directory (`possible`, `has_cpu`…).
pub fn mask_file(name: &str) -> Option<String> {
    let n = nr_nodes();
    let all = 0..n;
    Some(match name {
        "possible" | "online" => id_list(all),
        "has_memory" | "has_normal_memory" => {
            id_list(all.filter(|&i| buddy().node_managed(i).0 > 0))
        }
        "has_cpu" => id_list(all.filter(|&i| node_cpus(i).any(arch::cpu_online))),
        _ => return None,
    })
}

/// `nodeN/meminfo` in Linux's layout (`Node N MemTotal:   … kB`), the
/// lines this kernel keeps per node.
pub fn node_meminfo(node: usize) -> String {
    let b = buddy();
    let total = b.node_managed(node).0;
    let free = b.node_free_pages(node);
    let rows = [
        ("MemTotal", total),
        ("MemFree", free),
        ("MemUsed", total.saturating_sub(free)),
        ("Active(file)", 0),
        ("Inactive(file)", 0),
        ("Dirty", 0),
        ("Writeback", 0),
        ("FilePages", 0),
        ("Mapped", 0),
        ("Shmem", 0),
        ("ShmemHugePages", 0),
        ("FileHugePages", 0),
    ];
    let mut s = String::new();
    for (k, v) in rows {
        let _ = writeln!(s, "Node {node} {:<16}{:8} kB", format!("{k}:"), v * 4);
    }
    s
}

/// `nodeN/numastat`: Linux's names (`interleave_hit`, `local_node`,
/// `other_node` for the vmstat `numa_interleave`, `numa_local`,
/// `numa_other`).
pub fn node_numastat(node: usize) -> String {
    let st = buddy().numa_stat(node);
    format!(
        "numa_hit {}\nnuma_miss {}\nnuma_foreign {}\ninterleave_hit {}\nlocal_node {}\nother_node {}\n",
        st.hit, st.miss, st.foreign, st.interleave, st.local, st.other
    )
}

/// A file of `nodeN/`.
pub fn node_file(node: usize, name: &str) -> Option<String> {
    if node >= nr_nodes() {
        return None;
    }
    let nodes = buddy().nodes();
    Some(match name {
        "cpulist" => id_list(node_cpus(node)),
        "cpumap" => cpu_mask(node_cpus(node), arch::nr_cpus_possible()),
        "distance" => {
            let row: Vec<String> = (0..nodes.nr_nodes())
                .map(|m| format!("{}", nodes.distance(node, m)))
                .collect();
            format!("{}\n", row.join(" "))
        }
        "meminfo" => node_meminfo(node),
        "numastat" => node_numastat(node),
        _ => return None,
    })
}

/// `nodeN` from a directory entry name.
pub fn parse_node_dir(name: &str) -> Option<usize> {
    let n: usize = name.strip_prefix("node")?.parse().ok()?;
    (n < nr_nodes() && name == format!("node{n}")).then_some(n)
}

/// The `numa_*` lines of `/proc/vmstat`.
pub fn vmstat_lines() -> String {
    let t = buddy().numa_stat_total();
    format!(
        "numa_hit {}\nnuma_miss {}\nnuma_foreign {}\nnuma_interleave {}\nnuma_local {}\nnuma_other {}\n",
        t.hit, t.miss, t.foreign, t.interleave, t.local, t.other
    )
}
