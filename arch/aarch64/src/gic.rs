//! GICv2 / GICv3 interrupt controller: just enough for private interrupts
//! (PPIs) of the boot CPU.  The version and addresses come from the DT.
use crate::boot::device_va;
use crate::dt::{GicInfo, GicVersion};
use crate::regs::{isb, read_sysreg, write_sysreg};
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Spurious interrupt ID.
pub const SPURIOUS: u32 = 1023;

// Distributor registers (both versions).
const GICD_CTLR: u64 = 0x000;
const GICD_IGROUPR: u64 = 0x080;
const GICD_ISENABLER: u64 = 0x100;
const GICD_IPRIORITYR: u64 = 0x400;
// GICv2 CPU interface.
const GICC_CTLR: u64 = 0x00;
const GICC_PMR: u64 = 0x04;
const GICC_IAR: u64 = 0x0c;
const GICC_EOIR: u64 = 0x10;
// GICv3 redistributor.
const GICR_WAKER: u64 = 0x14;
const GICR_SGI_BASE: u64 = 0x1_0000;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

static VERSION: AtomicU8 = AtomicU8::new(0); // 0 none, 2, 3
static DIST: AtomicU64 = AtomicU64::new(0);
static CPU: AtomicU64 = AtomicU64::new(0);

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
            let waker = rd32(cpu + GICR_WAKER);
            wr32(cpu + GICR_WAKER, waker & !WAKER_PROCESSOR_SLEEP);
            while rd32(cpu + GICR_WAKER) & WAKER_CHILDREN_ASLEEP != 0 {
                core::hint::spin_loop();
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
            VERSION.store(3, Ordering::Release);
        }
    }
}

/// Enable private interrupt `intid` (< 32) with a middle priority.
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
            let sgi = CPU.load(Ordering::Relaxed) + GICR_SGI_BASE;
            wr32(sgi + GICD_IGROUPR, rd32(sgi + GICD_IGROUPR) | bit);
            wr8(sgi + GICD_IPRIORITYR + intid as u64, 0x80);
            wr32(sgi + GICD_ISENABLER, bit);
        }
        _ => {}
    }
}

/// Acknowledge the highest-priority pending interrupt; `SPURIOUS` if none.
pub fn ack() -> u32 {
    match VERSION.load(Ordering::Acquire) {
        2 => rd32(CPU.load(Ordering::Relaxed) + GICC_IAR) & 0x3ff,
        3 => (read_sysreg!("s3_0_c12_c12_0") & 0xff_ffff) as u32, // ICC_IAR1_EL1
        _ => SPURIOUS,
    }
}

/// Signal end of interrupt for `intid` (as returned by `ack`).
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
