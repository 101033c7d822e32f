//! NUMA nodes as user space sees them: the files of
//! `/sys/devices/system/node`, checked for what this kernel and Linux
//! agree on (the runner boots both with the same `-numa` layout: `runner
//! run --initrd --numa 2 ...` and `runner run --linux --numa 2 ...`), on
//! one node as on several.

use super::*;
use mthp_user::{parse_u64, trim};

const NODE: &str = "/sys/devices/system/node";
/// Node ids tracked (a bit each).
const MAX_NODES: usize = 64;

/// Parses a list like `0-2,5\n` into a bit mask.
fn parse_list(s: &[u8]) -> Option<u64> {
    let s = trim(s);
    let mut mask = 0u64;
    if s.is_empty() {
        return Some(0);
    }
    for part in s.split(|&c| c == b',') {
        let (a, b) = match part.iter().position(|&c| c == b'-') {
            Some(i) => (parse_u64(&part[..i])?, parse_u64(&part[i + 1..])?),
            None => (parse_u64(part)?, parse_u64(part)?),
        };
        if a > b || b >= MAX_NODES as u64 {
            return None;
        }
        for i in a..=b {
            mask |= 1 << i;
        }
    }
    Some(mask)
}

/// Parses a `cpumap` (hex, 32-bit groups separated by commas).
fn parse_cpumap(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in trim(s) {
        if c == b',' {
            continue;
        }
        let d = (c as char).to_digit(16)? as u64;
        v = v.checked_mul(16)?.checked_add(d)?;
    }
    Some(v)
}

fn read(p: &mthp_user::Path, buf: &mut [u8]) -> Result<usize, mthp_user::Msg> {
    match read_file(p.c(), buf) {
        Ok(n) => Ok(n),
        Err(e) => fail!(
            "{}: errno {e}",
            core::str::from_utf8(&p.c()[..p.c().len() - 1]).unwrap_or("?")
        ),
    }
}

fn list_file(name: &str) -> Result<u64, mthp_user::Msg> {
    let mut buf = [0u8; 256];
    let n = read(&path!("{NODE}/{name}"), &mut buf)?;
    match parse_list(&buf[..n]) {
        Some(m) => Ok(m),
        None => fail!(
            "{NODE}/{name}: {:?} is not a node list",
            core::str::from_utf8(&buf[..n])
        ),
    }
}

/// The value of `Node <n> <key>` in a node's meminfo, in kB.
fn node_meminfo(text: &[u8], node: usize, key: &str) -> Option<u64> {
    let want = path!("Node {node} {key}:");
    let want = &want.c()[..want.c().len() - 1];
    text.split(|&c| c == b'\n')
        .find(|l| l.starts_with(want))
        .and_then(|l| parse_u64(&l[want.len()..]))
}

fn vmstat(key: &[u8]) -> Option<u64> {
    let mut buf = [0u8; 16384];
    let n = read_file(b"/proc/vmstat\0", &mut buf).ok()?;
    buf[..n]
        .split(|&c| c == b'\n')
        .find(|l| l.starts_with(key) && l.get(key.len()) == Some(&b' '))
        .and_then(|l| parse_u64(&l[key.len()..]))
}

/// The node masks agree with each other, every node directory's files
/// have Linux's shape (`cpulist` matching `cpumap`, a `distance` row with
/// 10 on the diagonal and more elsewhere, `meminfo` lines `Node N
/// MemTotal:` with MemFree + MemUsed = MemTotal, the six `numastat`
/// names), the CPU lists partition the possible CPUs, the nodes' memory
/// adds up to at most `/proc/meminfo`'s MemTotal, `/proc/buddyinfo`
/// names the nodes with memory; with two nodes, each holds roughly half
/// the memory; and faulting pages in raises `numa_hit` and `numa_local`.
pub(crate) fn numa_node_files() -> TestResult {
    let possible = list_file("possible")?;
    let online = list_file("online")?;
    let has_memory = list_file("has_memory")?;
    let has_normal = list_file("has_normal_memory")?;
    let has_cpu = list_file("has_cpu")?;
    ensure!(
        possible & 1 != 0 && online & 1 != 0,
        "node 0 not possible/online"
    );
    ensure!(
        online & !possible == 0,
        "online {online:#x} not within possible {possible:#x}"
    );
    ensure!(
        has_memory & !online == 0 && has_cpu & !online == 0,
        "has_* beyond online"
    );
    ensure!(
        has_normal == has_memory,
        "has_normal_memory {has_normal:#x} != has_memory {has_memory:#x}"
    );
    let nodes = online.count_ones() as usize;
    ensure!(
        online == (1u64 << nodes) - 1,
        "online nodes {online:#x} are not 0..{nodes}"
    );

    let mut buf = [0u8; 4096];
    let n = read(&path!("/sys/devices/system/cpu/possible"), &mut buf)?;
    let Some(cpus) = parse_list(&buf[..n]) else {
        fail!("/sys/devices/system/cpu/possible unreadable");
    };
    let n = read(&path!("/proc/meminfo"), &mut buf)?;
    let mem_total = field(&buf[..n], b"MemTotal:").unwrap_or(0);

    let mut seen_cpus = 0u64;
    let mut node_total = [0u64; MAX_NODES];
    for (node, node_total) in node_total.iter_mut().enumerate().take(nodes) {
        let n = read(&path!("{NODE}/node{node}/cpulist"), &mut buf)?;
        let Some(list) = parse_list(&buf[..n]) else {
            fail!("node{node}/cpulist {:?}", core::str::from_utf8(&buf[..n]));
        };
        let n = read(&path!("{NODE}/node{node}/cpumap"), &mut buf)?;
        ensure!(
            parse_cpumap(&buf[..n]) == Some(list),
            "node{node}: cpumap {:?} vs cpulist {list:#x}",
            core::str::from_utf8(&buf[..n])
        );
        ensure!(
            list & seen_cpus == 0,
            "node{node}: CPUs {list:#x} on two nodes"
        );
        ensure!(
            (list != 0) == (has_cpu & 1 << node != 0),
            "node{node}: cpulist {list:#x} vs has_cpu {has_cpu:#x}"
        );
        seen_cpus |= list;

        let n = read(&path!("{NODE}/node{node}/distance"), &mut buf)?;
        let row: [Option<u64>; MAX_NODES] = {
            let mut it = buf[..n]
                .split(|&c| c == b' ' || c == b'\n')
                .filter(|w| !w.is_empty());
            core::array::from_fn(|_| it.next().and_then(parse_u64))
        };
        let given = row.iter().filter(|d| d.is_some()).count();
        ensure!(
            given == nodes,
            "node{node}/distance has {given} entries for {nodes} nodes"
        );
        for (other, d) in row.iter().take(nodes).enumerate() {
            let d = d.unwrap_or(0);
            ensure!(
                if other == node { d == 10 } else { d > 10 },
                "node{node}/distance to {other} is {d}"
            );
        }

        let n = read(&path!("{NODE}/node{node}/meminfo"), &mut buf)?;
        let text = &buf[..n];
        let total = node_meminfo(text, node, "MemTotal");
        let free = node_meminfo(text, node, "MemFree");
        let used = node_meminfo(text, node, "MemUsed");
        let (Some(total), Some(free), Some(used)) = (total, free, used) else {
            fail!(
                "node{node}/meminfo lacks MemTotal/MemFree/MemUsed: {:?}",
                core::str::from_utf8(text)
            );
        };
        ensure!(
            free + used == total,
            "node{node}: MemFree {free} + MemUsed {used} != MemTotal {total}"
        );
        ensure!(
            (total != 0) == (has_memory & 1 << node != 0),
            "node{node}: MemTotal {total} vs has_memory {has_memory:#x}"
        );
        *node_total = total;

        let n = read(&path!("{NODE}/node{node}/numastat"), &mut buf)?;
        let mut names = buf[..n]
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| l.split(|&c| c == b' ').next().unwrap_or(b""));
        for want in [
            &b"numa_hit"[..],
            b"numa_miss",
            b"numa_foreign",
            b"interleave_hit",
            b"local_node",
            b"other_node",
        ] {
            ensure!(
                names.next() == Some(want),
                "node{node}/numastat: expected {:?}",
                core::str::from_utf8(want)
            );
        }
    }
    ensure!(
        seen_cpus == cpus,
        "the nodes' CPUs {seen_cpus:#x} are not the possible CPUs {cpus:#x}"
    );
    let sum: u64 = node_total.iter().sum();
    ensure!(
        sum <= mem_total && sum >= mem_total / 10 * 9,
        "the nodes' MemTotal add up to {sum} kB, /proc/meminfo says {mem_total} kB"
    );
    if nodes == 2 {
        for (node, &t) in node_total.iter().take(2).enumerate() {
            ensure!(
                t >= sum / 10 * 4 && t <= sum / 10 * 6,
                "node{node} has {t} of {sum} kB: not the even split"
            );
        }
    }

    // /proc/buddyinfo names exactly the nodes with memory.
    let n = read(&path!("/proc/buddyinfo"), &mut buf)?;
    let mut named = 0u64;
    for line in buf[..n].split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        let Some(rest) = line.strip_prefix(b"Node ") else {
            fail!("/proc/buddyinfo line {:?}", core::str::from_utf8(line));
        };
        match parse_u64(rest) {
            Some(id) if id < MAX_NODES as u64 => named |= 1 << id,
            _ => fail!("/proc/buddyinfo line {:?}", core::str::from_utf8(line)),
        }
    }
    ensure!(
        named == has_memory,
        "/proc/buddyinfo nodes {named:#x} vs has_memory {has_memory:#x}"
    );

    // Allocation counters: per allocation call, so a 4K fault each.
    let (Some(hit0), Some(local0)) = (vmstat(b"numa_hit"), vmstat(b"numa_local")) else {
        fail!("no numa_hit / numa_local in /proc/vmstat");
    };
    let len = 64 * 4096;
    let m = map_aligned(len, 4096)?;
    // 4K pages: no THP for this range.
    sys::madvise(m.addr, len, sys::MADV_NOHUGEPAGE);
    touch_pages(&m, 1);
    let (hit1, local1) = (
        vmstat(b"numa_hit").unwrap_or(0),
        vmstat(b"numa_local").unwrap_or(0),
    );
    unmap(&m);
    ensure!(
        hit1 >= hit0 + 64 && local1 >= local0 + 64,
        "64 faults raised numa_hit by {} and numa_local by {}",
        hit1.wrapping_sub(hit0),
        local1.wrapping_sub(local0)
    );
    Ok(Outcome::Pass)
}
