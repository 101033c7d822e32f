//! Time: the TSC as the monotonic clock, the local APIC timer as the tick.
//!
//! The TSC frequency comes from CPUID (leaf 0x15 with a crystal clock, the
//! hypervisor timing leaf 0x40000010, or leaf 0x16) or, failing that, is
//! measured against PIT channel 0 over ~10 ms.  The APIC timer is then
//! calibrated against the TSC when the kernel starts the tick.
use crate::console::kprint;
use crate::cpu::{self, rdtsc};
use crate::paging::LAPIC_VA;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use x86_64::instructions::port::{Port, PortWriteOnly};
use x86_64::registers::model_specific::{ApicBase, ApicBaseFlags};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC cycle, as a 32.32 fixed-point number.
static NS_PER_CYCLE_32: AtomicU64 = AtomicU64::new(0);
static TSC_BASE: AtomicU64 = AtomicU64::new(0);

static TICKS: AtomicU64 = AtomicU64::new(0);
static HZ: AtomicU32 = AtomicU32::new(0);
static X2APIC: AtomicBool = AtomicBool::new(false);

const PIT_HZ: u64 = 1_193_182;
const PIT_CH0: u16 = 0x40;
const PIT_CMD: u16 = 0x43;

/// Mask every line of both 8259s (the legacy PIC must not deliver
/// interrupts on vectors that overlap the exceptions).
fn mask_8259() {
    // SAFETY: writing the interrupt mask registers of the two 8259s only
    // masks their lines; the kernel uses the local APIC instead.
    unsafe {
        PortWriteOnly::<u8>::new(0x21).write(0xFF);
        PortWriteOnly::<u8>::new(0xA1).write(0xFF);
    }
}

/// TSC frequency from CPUID, if the CPU or hypervisor reports one.
fn tsc_hz_from_cpuid() -> Option<(u64, &'static str)> {
    let f = cpu::features();
    if f.max_leaf >= 0x15 {
        let l = cpu::cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return Some((
                u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax),
                "CPUID 0x15",
            ));
        }
    }
    if f.max_hv_leaf >= 0x4000_0010 {
        let khz = cpu::cpuid(0x4000_0010).eax;
        if khz != 0 {
            return Some((u64::from(khz) * 1000, "CPUID 0x40000010"));
        }
    }
    if f.max_leaf >= 0x16 {
        let mhz = cpu::cpuid(0x16).eax & 0xFFFF;
        if mhz != 0 {
            return Some((u64::from(mhz) * 1_000_000, "CPUID 0x16"));
        }
    }
    None
}

fn pit_read() -> u16 {
    let mut data = Port::<u8>::new(PIT_CH0);
    // SAFETY: latch command for channel 0, then read its count (lo, hi);
    // the PIT belongs to the kernel and its IRQ is masked.
    unsafe {
        PortWriteOnly::<u8>::new(PIT_CMD).write(0x00);
        let lo = data.read();
        let hi = data.read();
        u16::from_le_bytes([lo, hi])
    }
}

/// Measure the TSC against PIT channel 0 (mode 2, free-running) for ~10 ms.
fn tsc_hz_from_pit() -> Option<u64> {
    mask_8259();
    // SAFETY: program channel 0: lobyte/hibyte access, mode 2 (rate
    // generator), binary, reload 0xFFFF.  IRQ0 is masked at the 8259.
    unsafe {
        PortWriteOnly::<u8>::new(PIT_CMD).write(0x34);
        let mut data = PortWriteOnly::<u8>::new(PIT_CH0);
        data.write(0xFF);
        data.write(0xFF);
    }
    const RELOAD: u64 = 0xFFFF;
    let target = PIT_HZ / 100; // 10 ms
    let mut last = u64::from(pit_read());
    let t0 = rdtsc();
    let mut elapsed = 0u64;
    let mut stuck = 0u32;
    while elapsed < target {
        let c = u64::from(pit_read());
        if c == last {
            stuck += 1;
            if stuck > 50_000 {
                return None;
            }
            continue;
        }
        stuck = 0;
        elapsed += if c < last {
            last - c
        } else {
            last + RELOAD - c
        };
        last = c;
    }
    let t1 = rdtsc();
    Some((t1 - t0) * PIT_HZ / elapsed)
}

/// Establish the TSC frequency; `now_ns()` counts from here.
pub fn calibrate_tsc() {
    TSC_BASE.store(rdtsc(), Ordering::Relaxed);
    let (hz, src) = match tsc_hz_from_cpuid() {
        Some(v) => v,
        None => match tsc_hz_from_pit() {
            Some(hz) => (hz, "PIT"),
            None => (2_600_000_000, "assumed (no PIT)"),
        },
    };
    let hz = hz.max(1_000_000);
    TSC_HZ.store(hz, Ordering::Relaxed);
    NS_PER_CYCLE_32.store((1_000_000_000u64 << 32) / hz, Ordering::Relaxed);
    kprint!(
        "x86_64: TSC {}.{:03} MHz ({})\n",
        hz / 1_000_000,
        hz / 1000 % 1000,
        src
    );
}

/// TSC frequency in Hz.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Nanoseconds since early boot, from the TSC: one base and rate for all
/// CPUs, so it is right on a secondary too, as long as the TSCs run in step
/// (QEMU TCG: one clock; KVM: synchronised TSCs, invariant TSC on the host).
/// No fix-up for unsynchronised TSCs: a thread moved to a CPU whose TSC is
/// behind would see time go back (the `arch_smp_cpu_id_per_cpu` self-test
/// checks the secondaries are not behind CPU 0).
pub fn now_ns() -> u64 {
    let d = rdtsc().wrapping_sub(TSC_BASE.load(Ordering::Relaxed));
    ((u128::from(d) * u128::from(NS_PER_CYCLE_32.load(Ordering::Relaxed))) >> 32) as u64
}

// Local APIC register offsets (xAPIC MMIO; x2APIC MSR = 0x800 + off / 16).
pub(crate) const APIC_TPR: u32 = 0x80;
pub(crate) const APIC_EOI: u32 = 0xB0;
pub(crate) const APIC_SVR: u32 = 0xF0;
pub(crate) const APIC_LVT_TIMER: u32 = 0x320;
pub(crate) const APIC_TIMER_INIT: u32 = 0x380;
const APIC_TIMER_CUR: u32 = 0x390;
pub(crate) const APIC_TIMER_DIV: u32 = 0x3E0;
const LVT_MASKED: u32 = 1 << 16;
pub(crate) const LVT_PERIODIC: u32 = 1 << 17;

pub(crate) fn apic_read(off: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on, so the APIC MSR range exists.
        unsafe { cpu::rdmsr(0x800 + off / 16) as u32 }
    } else {
        // SAFETY: LAPIC_VA maps the xAPIC register page uncached (paging::init).
        unsafe { core::ptr::read_volatile((LAPIC_VA + u64::from(off)) as *const u32) }
    }
}

pub(crate) fn apic_write(off: u32, val: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on, so the APIC MSR range exists.
        unsafe { cpu::wrmsr(0x800 + off / 16, u64::from(val)) }
    } else {
        // SAFETY: LAPIC_VA maps the xAPIC register page uncached (paging::init).
        unsafe { core::ptr::write_volatile((LAPIC_VA + u64::from(off)) as *mut u32, val) }
    }
}

/// Whether the boot CPU's local APIC runs in x2APIC mode (the others are
/// put in the same mode).
pub(crate) fn x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// Physical base of the local APIC (from IA32_APIC_BASE).
pub fn lapic_phys() -> u64 {
    ApicBase::read().0.start_address().as_u64()
}

/// Start the periodic tick at `hz` on the local APIC timer.
pub fn timer_init(hz: u32) {
    let hz = hz.max(1);
    let irq = cpu::irq_save();
    mask_8259();
    // Make sure the APIC is globally enabled, keeping the mode (xAPIC or
    // x2APIC) and base firmware chose.
    let (frame, mut flags) = ApicBase::read();
    if !flags.contains(ApicBaseFlags::LAPIC_ENABLE) {
        flags.insert(ApicBaseFlags::LAPIC_ENABLE);
        // SAFETY: only the global enable bit changes; base and mode stay.
        unsafe { ApicBase::write(frame, flags) };
    }
    let x2 = flags.contains(ApicBaseFlags::X2APIC_ENABLE);
    X2APIC.store(x2, Ordering::Relaxed);
    apic_write(APIC_SVR, 0x100 | u32::from(crate::trap::SPURIOUS_VECTOR));
    apic_write(APIC_TPR, 0);
    apic_write(APIC_TIMER_DIV, 0x3); // divide by 16

    // Calibrate: run the timer one-shot, masked, for ~10 ms of TSC time.
    apic_write(
        APIC_LVT_TIMER,
        LVT_MASKED | u32::from(crate::trap::TIMER_VECTOR),
    );
    apic_write(APIC_TIMER_INIT, u32::MAX);
    let t0 = now_ns();
    while now_ns() - t0 < 10_000_000 {
        core::hint::spin_loop();
    }
    let cur = apic_read(APIC_TIMER_CUR);
    let ns = now_ns() - t0;
    let counted = u64::from(u32::MAX - cur);
    let mut per_sec = counted * 1_000_000_000 / ns.max(1);
    let mut src = "TSC";
    if per_sec < 1000 {
        per_sec = 62_500_000; // the 1 GHz / 16 that QEMU models
        src = "assumed";
    }
    let initial = (per_sec / u64::from(hz)).clamp(1, u64::from(u32::MAX)) as u32;
    HZ.store(hz, Ordering::Relaxed);
    TICKS.store(0, Ordering::Relaxed);
    apic_write(
        APIC_LVT_TIMER,
        LVT_PERIODIC | u32::from(crate::trap::TIMER_VECTOR),
    );
    apic_write(APIC_TIMER_INIT, initial);
    kprint!(
        "x86_64: LAPIC{} timer {} Hz: {} counts/s /16 ({}), initial count {}\n",
        if x2 { " (x2APIC)" } else { "" },
        hz,
        per_sec,
        src,
        initial
    );
    cpu::irq_restore(irq);
}

/// The timer interrupt: count, acknowledge, then run the hook.
pub fn on_tick(hook: Option<fn()>) {
    TICKS.fetch_add(1, Ordering::Relaxed);
    apic_write(APIC_EOI, 0);
    if let Some(h) = hook {
        h();
    }
}

/// The LAPIC timer's initial (reload) count and current count, read from
/// the device (the self-test measures the count's rate against the TSC).
pub(crate) fn lapic_counts() -> (u32, u32) {
    (apic_read(APIC_TIMER_INIT), apic_read(APIC_TIMER_CUR))
}

pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

pub fn timer_hz() -> u32 {
    HZ.load(Ordering::Relaxed)
}
