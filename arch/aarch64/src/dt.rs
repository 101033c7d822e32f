//! Device-tree parsing at boot: memory, command line, initrd, GIC, PSCI.
//!
//! QEMU places the DTB at physical 0x4000_0000 for ELF kernels (x0 = 0).
//! Parsing runs on the early tables, reading the blob through the direct map.
use crate::PHYS_OFFSET;
use crate::console::kprintln;
use fdt::Fdt;
use mm::bootinfo::{BootInfo, PhysRange, ReservedKind};

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
    let cpus = crate::smp::DtCpus::from_dt(&fdt);
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

/// Sort RAM ranges by start (the DT does not promise an order).
fn sort_ram(info: &mut BootInfo) {
    let n = info.nr_ram;
    info.ram[..n].sort_unstable_by_key(|r| r.start);
}
