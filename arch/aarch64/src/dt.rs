//! Device-tree parsing at boot: memory, command line, initrd, GIC, PSCI.
//!
//! QEMU places the DTB at physical 0x4000_0000 for ELF kernels (x0 = 0).
//! Parsing runs on the early tables, reading the blob through the direct map.
use crate::PHYS_OFFSET;
use crate::console::kprintln;
use fdt::Fdt;
use mm::bootinfo::{BootInfo, PhysRange, ReservedKind};
use mm::physmem::node::{LOCAL_DISTANCE, MAX_NODE_RANGES, MAX_NUMNODES, NodeMap, REMOTE_DISTANCE};

pub const DTB_PA: u64 = 0x4000_0000;
const FDT_MAGIC: u32 = 0xd00d_feed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

#[derive(Clone, Copy, Debug)]
pub struct GicInfo {
    pub version: GicVersion,
    /// Distributor.
    pub dist: PhysRange,
    /// CPU interface (v2) or redistributor region (v3).
    pub cpu: PhysRange,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    Hvc,
    Smc,
}

/// What the rest of the arch crate needs from the DT.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    pub gic: Option<GicInfo>,
    pub psci: Option<PsciConduit>,
    /// `/cpus/cpu@N` `reg` values (MPIDR affinity), DT order (smp.rs).
    pub cpus: crate::smp::DtCpus,
    /// `virtio,mmio` transports (QEMU `virt` describes 32, most empty).
    pub virtio: arch_common::MmioDevices,
}

/// Parse the DTB and fill `info` (RAM, command line, initrd, DTB reservation).
/// Returns `None` if there is no valid DTB at `dtb_pa` (`DTB_PA` for ELF
/// boots; x0 at entry for `Image` boots).
pub fn parse(info: &mut BootInfo, dtb_pa: u64) -> Option<Platform> {
    let va = (dtb_pa + PHYS_OFFSET) as *const u8;
    // SAFETY: the early direct map covers the DTB (in RAM) as Normal memory; the header
    // is at least 8 bytes of RAM even if no DTB was loaded.
    let (magic, total) = unsafe {
        (
            u32::from_be(core::ptr::read_volatile(va as *const u32)),
            u32::from_be(core::ptr::read_volatile(va.add(4) as *const u32)),
        )
    };
    if magic != FDT_MAGIC {
        kprintln!("arch: no DTB at {:#x} (magic {:#x})", dtb_pa, magic);
        return None;
    }
    // SAFETY: the magic matched, so `total` bytes from `va` are the blob
    // QEMU loaded into RAM; it is never written while the kernel runs.
    let blob = unsafe { core::slice::from_raw_parts(va, total as usize) };
    let fdt = match Fdt::new(blob) {
        Ok(f) => f,
        Err(e) => {
            kprintln!("arch: bad DTB: {:?}", e);
            return None;
        }
    };
    let dtb = PhysRange::new(dtb_pa, dtb_pa + fdt.total_size() as u64);
    info.add_reserved(dtb, ReservedKind::DeviceTree);

    // Memory: every node with device_type = "memory" (there may be several).
    for node in fdt.all_nodes() {
        let is_mem = node.property("device_type").and_then(|p| p.as_str()) == Some("memory");
        if !is_mem {
            continue;
        }
        if let Some(regs) = node.reg() {
            for r in regs {
                let start = r.starting_address as u64;
                let size = r.size.unwrap_or(0) as u64;
                if !info.add_ram(PhysRange::new(start, start + size)) {
                    kprintln!(
                        "arch: too many RAM ranges, ignoring {:#x}+{:#x}",
                        start,
                        size
                    );
                }
            }
        }
    }
    sort_ram(info);
    let cpus = crate::smp::DtCpus::from_dt(&fdt);
    if let Some(map) = numa(&fdt, &cpus) {
        info.numa = map;
    }

    if let Some(chosen) = fdt.find_node("/chosen") {
        if let Some(args) = chosen.property("bootargs").and_then(|p| p.as_str()) {
            info.set_cmdline(args.as_bytes());
        }
        let s = chosen
            .property("linux,initrd-start")
            .and_then(|p| p.as_usize());
        let e = chosen
            .property("linux,initrd-end")
            .and_then(|p| p.as_usize());
        if let (Some(s), Some(e)) = (s, e) {
            let r = PhysRange::new(s as u64, e as u64);
            if !r.is_empty() {
                info.initrd = Some(r);
                info.add_reserved(r, ReservedKind::Initrd);
            }
        }
    }

    let gic = find_gic(&fdt);
    let psci = fdt
        .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
        .and_then(|n| n.property("method"))
        .and_then(|p| p.as_str())
        .and_then(|m| match m {
            "hvc" => Some(PsciConduit::Hvc),
            "smc" => Some(PsciConduit::Smc),
            _ => None,
        });
    let virtio = find_virtio(&fdt);
    Some(Platform {
        gic,
        psci,
        cpus,
        virtio,
    })
}

/// Every `virtio,mmio` node: its register window and its interrupt.  The
/// `interrupts` property is read as the GIC binding's three cells (type,
/// number, flags): type 0 is an SPI, whose interrupt id is 32 + number.
/// A node with another shape is left out (no driver could take its IRQ).
fn find_virtio(fdt: &Fdt) -> arch_common::MmioDevices {
    let mut out = arch_common::MmioDevices::new();
    for node in fdt.all_nodes() {
        let is_virtio = node
            .compatible()
            .is_some_and(|c| c.all().any(|s| s == "virtio,mmio"));
        if !is_virtio {
            continue;
        }
        let Some(r) = node.reg().and_then(|mut r| r.next()) else {
            continue;
        };
        let Some(cells) = node.property("interrupts").map(|p| p.value) else {
            continue;
        };
        let cell = |i: usize| {
            cells
                .get(4 * i..4 * i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        if let (Some(0), Some(spi)) = (cell(0), cell(1)) {
            out.push(arch_common::MmioDevice {
                base: r.starting_address as u64,
                size: r.size.unwrap_or(0x200) as u64,
                irq: 32 + spi,
            });
        }
    }
    out
}

fn find_gic(fdt: &Fdt) -> Option<GicInfo> {
    let node = fdt.find_compatible(&["arm,gic-v3", "arm,cortex-a15-gic", "arm,gic-400"])?;
    let version = if node.compatible()?.all().any(|c| c == "arm,gic-v3") {
        GicVersion::V3
    } else {
        GicVersion::V2
    };
    let mut regs = node.reg()?;
    let mut next = || {
        regs.next().map(|r| {
            let s = r.starting_address as u64;
            PhysRange::new(s, s + r.size.unwrap_or(0) as u64)
        })
    };
    let dist = next()?;
    let cpu = next()?;
    Some(GicInfo { version, dist, cpu })
}

/// The NUMA nodes from the `numa-node-id` properties of the memory and
/// CPU nodes and the `/distance-map` (`numa-distance-map-v1`), as Linux's
/// `of_numa` reads them: the property is the node id itself.  `None` when
/// no memory node has the property, or when the description is unusable
/// (a node id beyond `MAX_NUMNODES`, overlapping ranges), which the console
/// reports.  A distance map that breaks the rules (10 local, more remote)
/// or names unknown nodes is ignored: Linux's defaults (10 local, 20
/// remote) stay.
fn numa(fdt: &Fdt, cpus: &crate::smp::DtCpus) -> Option<NodeMap> {
    let node_id = |n: &fdt::node::FdtNode| {
        n.property("numa-node-id")
            .and_then(|p| p.as_usize())
            .map(|v| v as u32)
    };
    let mut mems = [(0u64, 0u64, 0u32); MAX_NODE_RANGES];
    let mut nr_mem = 0;
    let mut max_node = None::<u32>;
    for node in fdt.all_nodes() {
        let is_mem = node.property("device_type").and_then(|p| p.as_str()) == Some("memory");
        let Some(id) = node_id(&node).filter(|_| is_mem) else {
            continue;
        };
        max_node = max_node.max(Some(id));
        for r in node.reg().into_iter().flatten() {
            let start = r.starting_address as u64;
            let size = r.size.unwrap_or(0) as u64;
            if nr_mem == MAX_NODE_RANGES {
                kprintln!(
                    "arch: more than {} NUMA memory ranges: NUMA off",
                    MAX_NODE_RANGES
                );
                return None;
            }
            mems[nr_mem] = (start, start + size, id);
            nr_mem += 1;
        }
    }
    let max_node = max_node?;
    let cpu_nodes = &cpus.numa_node[..cpus.n];
    let max_node = cpu_nodes.iter().flatten().fold(max_node, |m, &n| m.max(n));
    if max_node as usize >= MAX_NUMNODES {
        kprintln!(
            "arch: NUMA node {} beyond {}: NUMA off",
            max_node,
            MAX_NUMNODES
        );
        return None;
    }
    let mut map = NodeMap::new(max_node as usize + 1).ok()?;
    for &(s, e, n) in &mems[..nr_mem] {
        if let Err(err) = map.add_mem(s, e, n as usize) {
            kprintln!("arch: NUMA memory {:#x}-{:#x}: {:?}: NUMA off", s, e, err);
            return None;
        }
    }
    let boot = crate::smp::mpidr_aff();
    for (i, n) in cpu_nodes.iter().enumerate() {
        if let Some(n) = n
            && let Some(cpu) =
                arch_common::smp::logical_id(boot, &cpus.mpidr[..cpus.n], cpus.mpidr[i])
        {
            let _ = map.set_cpu_node(cpu, *n as usize);
        }
    }
    let dm = fdt.find_node("/distance-map").filter(|n| {
        n.compatible()
            .is_some_and(|c| c.all().any(|s| s == "numa-distance-map-v1"))
    });
    if let Some(m) = dm.and_then(|n| n.property("distance-matrix")) {
        let nr = map.nr_nodes();
        let mut d = [0u8; MAX_NUMNODES * MAX_NUMNODES];
        for a in 0..nr {
            for b in 0..nr {
                d[a * nr + b] = if a == b {
                    LOCAL_DISTANCE
                } else {
                    REMOTE_DISTANCE
                };
            }
        }
        let cell = |i: usize| {
            m.value
                .get(4 * i..4 * i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let mut ok = true;
        let mut i = 0;
        while let (Some(a), Some(b), Some(v)) = (cell(i), cell(i + 1), cell(i + 2)) {
            i += 3;
            let (a, b) = (a as usize, b as usize);
            if a >= nr || b >= nr || v > 255 {
                ok = false;
                break;
            }
            // B to A defaults to A to B when the entry is (A, B) with
            // A < B, as Linux reads the map.
            d[a * nr + b] = v as u8;
            if b > a {
                d[b * nr + a] = v as u8;
            }
        }
        if !ok || map.set_distances(&d[..nr * nr]).is_err() {
            kprintln!("arch: bad /distance-map, default NUMA distances used");
        }
    }
    Some(map)
}

/// Sort RAM ranges by start (the DT does not promise an order).
fn sort_ram(info: &mut BootInfo) {
    let n = info.nr_ram;
    info.ram[..n].sort_unstable_by_key(|r| r.start);
}
