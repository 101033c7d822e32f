//! GICv2 / GICv3 interrupt controller: just enough for private interrupts
//! (PPIs) and software-generated ones (SGIs, the IPIs) on every CPU.  The
//! version and addresses come from the DT.  GICv3: each CPU uses its own
//! redistributor, found by affinity (`init_secondary`); GICv2: the
//! distributor's private-interrupt registers are banked per CPU.
use crate::boot::device_va;
use crate::dt::{GicInfo, GicVersion};
use crate::regs::{isb, read_sysreg, write_sysreg};
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use mm::cpu::MAX_CPUS;

/// Spurious interrupt ID.
pub const SPURIOUS: u32 = 1023;

// Distributor registers (both versions).
const GICD_CTLR: u64 = 0x000;
const GICD_IGROUPR: u64 = 0x080;
const GICD_ISENABLER: u64 = 0x100;
const GICD_IPRIORITYR: u64 = 0x400;
const GICD_ITARGETSR: u64 = 0x800;
const GICD_ICFGR: u64 = 0xC00;
const GICD_IROUTER: u64 = 0x6000;
const GICD_SGIR: u64 = 0xF00;
// GICv2 CPU interface.
const GICC_CTLR: u64 = 0x00;
const GICC_PMR: u64 = 0x04;
const GICC_IAR: u64 = 0x0c;
const GICC_EOIR: u64 = 0x10;
// GICv3 redistributor.
const GICR_TYPER: u64 = 0x08;
const GICR_WAKER: u64 = 0x14;
const TYPER_LAST: u64 = 1 << 4;
const GICR_SGI_BASE: u64 = 0x1_0000;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

static VERSION: AtomicU8 = AtomicU8::new(0); // 0 none, 2, 3
static DIST: AtomicU64 = AtomicU64::new(0);
static CPU: AtomicU64 = AtomicU64::new(0);
/// GICv3: each CPU's redistributor (VA); CPU 0's is `CPU`.
static RD: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Size of the mapped redistributor region (boot.rs maps `MAX_CPUS` frames).
static RD_LEN: AtomicU64 = AtomicU64::new(0);

fn rd32(addr: u64) -> u32 {
    // SAFETY: `addr` is a register inside a GIC frame mapped Device-nGnRnE
    // by the kernel tables (see boot.rs); 32-bit aligned access.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn wr32(addr: u64, v: u32) {
    // SAFETY: as in `rd32`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

fn wr8(addr: u64, v: u8) {
    // SAFETY: as in `rd32`; the priority registers are byte-accessible.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

/// Initialise the distributor and this CPU's interface.
pub fn init(g: &GicInfo) {
    let dist = device_va(g.dist.start);
    let cpu = device_va(g.cpu.start);
    DIST.store(dist, Ordering::Relaxed);
    CPU.store(cpu, Ordering::Relaxed);
    RD[0].store(cpu, Ordering::Relaxed);
    RD_LEN.store(
        (crate::boot::GICR_PER_CPU * MAX_CPUS as u64).min(g.cpu.len()),
        Ordering::Relaxed,
    );
    match g.version {
        GicVersion::V2 => {
            wr32(dist + GICD_CTLR, 1);
            wr32(cpu + GICC_PMR, 0xff);
            wr32(cpu + GICC_CTLR, 1);
            VERSION.store(2, Ordering::Release);
        }
        GicVersion::V3 => {
            // Affinity routing, group 1 and group 0 enabled.
            wr32(dist + GICD_CTLR, (1 << 4) | (1 << 1) | 1);
            v3_cpu_init(cpu);
            VERSION.store(3, Ordering::Release);
        }
    }
}

/// GICv3: wake the redistributor at `rd` and enable this CPU's
/// system-register interface.
fn v3_cpu_init(rd: u64) {
    let waker = rd32(rd + GICR_WAKER);
    wr32(rd + GICR_WAKER, waker & !WAKER_PROCESSOR_SLEEP);
    while rd32(rd + GICR_WAKER) & WAKER_CHILDREN_ASLEEP != 0 {
        crate::cpu::cpu_relax();
    }
    let sre = read_sysreg!("s3_0_c12_c12_5"); // ICC_SRE_EL1
    // SAFETY: enabling the system-register interface (ICC_SRE_EL1.SRE),
    // unmasking all priorities (ICC_PMR_EL1) and enabling group 1
    // (ICC_IGRPEN1_EL1) only affects interrupt delivery, with the
    // vectors installed and IRQs still masked in PSTATE.
    unsafe {
        write_sysreg!("s3_0_c12_c12_5", sre | 1);
        isb();
        write_sysreg!("s3_0_c4_c6_0", 0xffu64);
        write_sysreg!("s3_0_c12_c12_7", 1u64);
    }
    isb();
}

/// A secondary CPU's interface (the distributor is set up already):
/// GICv2 its banked CPU interface, GICv3 the redistributor whose
/// GICR_TYPER affinity is `mpidr`'s.  Returns false if GICv3 has no
/// redistributor for it in the mapped region.
pub fn init_secondary(cpu: usize, mpidr: u64) -> bool {
    match VERSION.load(Ordering::Acquire) {
        2 => {
            let c = CPU.load(Ordering::Relaxed);
            wr32(c + GICC_PMR, 0xff);
            wr32(c + GICC_CTLR, 1);
            true
        }
        3 => {
            let aff = (mpidr & 0xff_ffff) | ((mpidr >> 32 & 0xff) << 24);
            let base = CPU.load(Ordering::Relaxed);
            let len = RD_LEN.load(Ordering::Relaxed);
            let mut off = 0;
            while off + crate::boot::GICR_PER_CPU <= len {
                let rd = base + off;
                // GICR_TYPER, 64-bit, read as two words (affinity in 63:32).
                let typer =
                    u64::from(rd32(rd + GICR_TYPER)) | (u64::from(rd32(rd + GICR_TYPER + 4)) << 32);
                if typer >> 32 == aff {
                    RD[cpu].store(rd, Ordering::Relaxed);
                    v3_cpu_init(rd);
                    return true;
                }
                if typer & TYPER_LAST != 0 {
                    break;
                }
                off += crate::boot::GICR_PER_CPU;
            }
            false
        }
        _ => false,
    }
}

/// GICv2: the CPU-interface mask of the running CPU (GICD_ITARGETSR0 reads
/// as it for private interrupts), for `send_sgi`.
pub fn v2_cpu_mask() -> u8 {
    (rd32(DIST.load(Ordering::Relaxed) + GICD_ITARGETSR) & 0xff) as u8
}

/// Send SGI `intid` (< 16) to one CPU: GICv2 by CPU-interface mask
/// (`v2_mask`), GICv3 by affinity (`mpidr`; Aff0 < 16).
pub fn send_sgi(intid: u32, mpidr: u64, v2_mask: u8) {
    match VERSION.load(Ordering::Acquire) {
        2 => {
            crate::regs::dsb_ishst();
            wr32(
                DIST.load(Ordering::Relaxed) + GICD_SGIR,
                (u32::from(v2_mask) << 16) | (intid & 0xf),
            );
        }
        3 => {
            let aff0 = mpidr & 0xf;
            let aff1 = mpidr >> 8 & 0xff;
            let aff2 = mpidr >> 16 & 0xff;
            let aff3 = mpidr >> 32 & 0xff;
            let v = (aff3 << 48)
                | (aff2 << 32)
                | (u64::from(intid & 0xf) << 24)
                | (aff1 << 16)
                | (1 << aff0);
            crate::regs::dsb_ishst();
            // SAFETY: ICC_SGI1R_EL1 only raises SGI `intid` on the named CPU.
            unsafe { write_sysreg!("s3_0_c12_c11_5", v) };
            isb();
        }
        _ => {}
    }
}

/// Enable private interrupt `intid` (< 32: an SGI or a PPI) of the running
/// CPU with a middle priority.
pub fn enable_ppi(intid: u32) {
    assert!(intid < 32);
    let bit = 1u32 << intid;
    match VERSION.load(Ordering::Acquire) {
        2 => {
            let d = DIST.load(Ordering::Relaxed);
            wr8(d + GICD_IPRIORITYR + intid as u64, 0x80);
            wr32(d + GICD_ISENABLER, bit);
        }
        3 => {
            let rd = RD[crate::smp::cpu_id().min(MAX_CPUS - 1)].load(Ordering::Relaxed);
            let sgi = rd + GICR_SGI_BASE;
            wr32(sgi + GICD_IGROUPR, rd32(sgi + GICD_IGROUPR) | bit);
            wr8(sgi + GICD_IPRIORITYR + intid as u64, 0x80);
            wr32(sgi + GICD_ISENABLER, bit);
        }
        _ => {}
    }
}

/// Enable shared peripheral interrupt `intid` (32..1020), level-sensitive,
/// routed to the running CPU (the kernel calls it on CPU 0, where device
/// completions are handled).  Device interrupts arrive through
/// [`handle_device`].  Returns false without a GIC or for a non-SPI id.
pub fn enable_spi(intid: u32) -> bool {
    if !(32..1020).contains(&intid) {
        return false;
    }
    let d = DIST.load(Ordering::Relaxed);
    let (word, bit) = (u64::from(intid / 32) * 4, 1u32 << (intid % 32));
    // Two configuration bits per interrupt; the upper one clear = level.
    let cfg = d + GICD_ICFGR + u64::from(intid / 16) * 4;
    let cfg_bit = 1u32 << (2 * (intid % 16) + 1);
    match VERSION.load(Ordering::Acquire) {
        2 => {
            wr32(cfg, rd32(cfg) & !cfg_bit);
            wr8(d + GICD_IPRIORITYR + u64::from(intid), 0x80);
            wr8(d + GICD_ITARGETSR + u64::from(intid), v2_cpu_mask());
            wr32(d + GICD_ISENABLER + word, bit);
            true
        }
        3 => {
            wr32(d + GICD_IGROUPR + word, rd32(d + GICD_IGROUPR + word) | bit);
            wr32(cfg, rd32(cfg) & !cfg_bit);
            wr8(d + GICD_IPRIORITYR + u64::from(intid), 0x80);
            // GICD_IROUTER: Aff3 in bits 39:32, Aff2..Aff0 in 23:0; written
            // as two words (the upper one first, the lower one enables it).
            let aff = crate::smp::mpidr_aff();
            let r = d + GICD_IROUTER + 8 * u64::from(intid);
            wr32(r + 4, (aff >> 32 & 0xff) as u32);
            wr32(r, (aff & 0xff_ffff) as u32);
            wr32(d + GICD_ISENABLER + word, bit);
            true
        }
        _ => false,
    }
}

/// The kernel's handler of device interrupts (`set_device_irq_hook`).
pub static DEVICE_HOOK: arch_common::DeviceIrqHook = arch_common::DeviceIrqHook::new();

/// An SPI arrived (acknowledged, not yet EOI'd): the hook runs first so
/// the device can lower its level-sensitive line before the EOI, which
/// otherwise would raise the same interrupt again at once.
pub fn handle_device(iar: u32) {
    DEVICE_HOOK.run(iar & 0x3ff);
    eoi(iar);
}

/// Acknowledge the highest-priority pending interrupt; `SPURIOUS` if none.
/// The value is what `eoi` needs back: on GICv2 an SGI's also carries the
/// source CPU (bits 12:10), so the interrupt id is `ack() & 0x3ff`.
pub fn ack() -> u32 {
    match VERSION.load(Ordering::Acquire) {
        2 => rd32(CPU.load(Ordering::Relaxed) + GICC_IAR) & 0x1fff,
        3 => (read_sysreg!("s3_0_c12_c12_0") & 0xff_ffff) as u32, // ICC_IAR1_EL1
        _ => SPURIOUS,
    }
}

/// Signal end of interrupt for `intid` (the value `ack` returned).
pub fn eoi(intid: u32) {
    match VERSION.load(Ordering::Acquire) {
        2 => wr32(CPU.load(Ordering::Relaxed) + GICC_EOIR, intid),
        // SAFETY: writing ICC_EOIR1_EL1 with an ID obtained from ICC_IAR1_EL1
        // completes that interrupt; nothing else.
        3 => unsafe { write_sysreg!("s3_0_c12_c12_1", intid as u64) },
        _ => {}
    }
}

pub fn version() -> u8 {
    VERSION.load(Ordering::Relaxed)
}
