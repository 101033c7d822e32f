//! Generic timer: the virtual timer (CNTV, PPI INTID 27) as the periodic tick,
//! and CNTVCT_EL0 as the monotonic clock.
//!
//! Each tick re-arms the comparator one period after the previous deadline
//! (CNTV_CVAL += period), so the tick rate does not drift with interrupt
//! latency; if the interrupt came late by more than a period (a loaded
//! host delays TCG's timer interrupts), the periods that passed are all
//! counted and the next deadline is the next period boundary, so `ticks()`
//! keeps the programmed rate against the clock.
//!
//! SMP: every CPU runs its own virtual timer at the same rate and each
//! tick runs the tick hook on that CPU.  Timekeeping does not depend on
//! how many CPUs tick: `now_ns()` reads the system counter (CNTVCT_EL0,
//! common to all CPUs, no per-CPU offset), and `ticks()` is CPU 0's tick
//! count alone (a secondary's ticks go to its own `cpu_ticks(cpu)`), so
//! neither runs faster with more CPUs.
use crate::console::kprintln;
use crate::gic;
use crate::regs::isb;
use aarch64_cpu::registers::{
    CNTFRQ_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTVCT_EL0, Readable, Writeable,
};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The EL1 virtual timer's PPI.
pub const TIMER_INTID: u32 = 27;

static TICKS: AtomicU64 = AtomicU64::new(0);
static HZ: AtomicU32 = AtomicU32::new(0);
static PERIOD: AtomicU64 = AtomicU64::new(0);
static TICK_HOOK: AtomicUsize = AtomicUsize::new(0);

fn counter() -> u64 {
    isb();
    CNTVCT_EL0.get()
}

pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
}

pub fn now_ns() -> u64 {
    let f = frequency().max(1);
    (counter() as u128 * 1_000_000_000 / f as u128) as u64
}

/// CPU 0's timer ticks since `timer_init` (secondaries: `cpu_ticks`).
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Address of the tick counter, for assembly-level tests.
#[cfg(feature = "selftest")]
pub fn ticks_addr() -> *const u64 {
    TICKS.as_ptr()
}

pub fn timer_hz() -> u32 {
    HZ.load(Ordering::Relaxed)
}

/// Install the function every CPU's timer interrupt calls (IRQs masked,
/// after the EOI, on that CPU; `cpu_id()` says which).
pub fn set_tick_hook(f: fn()) {
    TICK_HOOK.store(f as usize, Ordering::Release);
}

/// Programming the EL1 virtual timer comparator and enabling it (unmasked)
/// only causes timer interrupts, which `handle_irq` services.
fn set_deadline(cval: u64) {
    CNTV_CVAL_EL0.set(cval);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
    isb();
}

pub fn timer_init(hz: u32) {
    assert!(hz > 0);
    let Some(g) = crate::boot::PLATFORM.get().and_then(|p| p.gic) else {
        kprintln!("arch: no GIC in the device tree; timer not started");
        return;
    };
    gic::init(&g);
    gic::enable_ppi(TIMER_INTID);
    let period = (frequency() / hz as u64).max(1);
    HZ.store(hz, Ordering::Relaxed);
    PERIOD.store(period, Ordering::Relaxed);
    set_deadline(counter() + period);
    kprintln!(
        "arch: GICv{} at {:#x}, virtual timer {} Hz (CNTFRQ {} Hz)",
        gic::version(),
        g.dist.start,
        hz,
        frequency()
    );
}

/// Re-arm this CPU's timer one period after the deadline that fired;
/// returns the periods elapsed since it, that one included.
fn rearm() -> u64 {
    let period = PERIOD.load(Ordering::Relaxed).max(1);
    let cval = CNTV_CVAL_EL0.get();
    let now = counter();
    let n = 1 + now.saturating_sub(cval) / period;
    set_deadline(cval + n * period);
    n
}

/// Start the running secondary CPU's own tick at CPU 0's rate (its timer
/// PPI is banked: enabled in its own redistributor / GICv2 bank).
pub fn start_secondary() {
    gic::enable_ppi(TIMER_INTID);
    set_deadline(counter() + PERIOD.load(Ordering::Relaxed).max(1));
}

/// IRQ entry from the vectors, on any CPU, `pc` interrupted (`user`: at
/// EL0).  Every CPU's timer interrupt counts its own ticks (CPU 0 in
/// `ticks()`, the others in their `cpu_ticks`) and runs the tick hook;
/// the profile timer's counts `pc` (profile.rs).
pub fn handle_irq(pc: u64, lr: u64, user: bool) {
    let iar = gic::ack();
    let id = iar & 0x3ff;
    if id >= 1020 {
        return;
    }
    if id == TIMER_INTID {
        let n = rearm();
        if crate::smp::cpu_id() == 0 {
            TICKS.fetch_add(n, Ordering::Relaxed);
        } else {
            crate::smp::on_ap_tick(n);
        }
        gic::eoi(iar);
        let h = TICK_HOOK.load(Ordering::Acquire);
        if h != 0 {
            // SAFETY: a non-zero value was stored by `set_tick_hook` from a
            // `fn()` pointer.
            let f = unsafe { core::mem::transmute::<usize, fn()>(h) };
            f();
        }
    } else if id == crate::profile::PROFILE_INTID {
        crate::profile::sample(pc, lr, user);
        gic::eoi(iar);
    } else if id == crate::smp::IPI_SGI {
        gic::eoi(iar);
        crate::smp::on_ipi();
    } else if id >= 32 {
        gic::handle_device(iar);
    } else {
        gic::eoi(iar);
        kprintln!("arch: unexpected interrupt {}", id);
    }
}
