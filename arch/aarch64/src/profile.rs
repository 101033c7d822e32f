//! A sampling profile of where the CPUs spend their instructions.
//!
//! The EL1 physical timer (CNTP, PPI 30), which the tick does not use,
//! interrupts every `period` nanoseconds of the system counter on every
//! CPU, and the interrupted PC is counted in a fixed open-addressing table
//! (PCs in user space all count in one bucket, [`USER_PC`]).  Under QEMU's
//! `-icount shift=0` the counter advances with the instructions executed,
//! so the samples are a histogram of instructions, not of time: what
//! `make profile` (scripts/profile.sh) symbolizes to explain an
//! instruction count (the 4K fault, a migration).  Off unless the kernel
//! is booted with `profile=<ns>`.
//!
//! With [`gate`] on, samples count only while a measured phase is open
//! ([`phase`]: the kernel's perf sessions, which the benchmarks open around
//! what they measure), so the histogram is that phase's alone.
//!
//! Code that runs with IRQs masked is charged to the point where it
//! unmasks them (a spin-lock section to its unlock), as with any
//! timer-based profiler.  So that those samples still say whose section
//! it was, a sample whose interrupted instruction follows an unmask
//! (`msr daifclr, #2`) also counts its link register in a second table
//! ([`for_each_unmask_caller`]): where the unmask is a small function's
//! (`irq_restore` behind `CpuOps`), that is the caller that held
//! interrupts masked; where it was inlined, x30 is whatever the function
//! last called returned to, and the script says so.
use crate::gic;
use aarch64_cpu::registers::{CNTP_CTL_EL0, CNTP_CVAL_EL0, CNTPCT_EL0, Readable, Writeable};
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// The EL1 physical timer's PPI.
pub const PROFILE_INTID: u32 = 30;
/// The bucket of every sample taken in user space.
pub const USER_PC: u64 = 1;

const SLOTS: usize = 16384;
static PCS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static COUNTS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
/// Link registers of the samples taken right after an IRQ unmask.
const LR_SLOTS: usize = 4096;
static LRS: [AtomicU64; LR_SLOTS] = [const { AtomicU64::new(0) }; LR_SLOTS];
static LR_COUNTS: [AtomicU64; LR_SLOTS] = [const { AtomicU64::new(0) }; LR_SLOTS];
/// `msr daifclr, #2` (unmask IRQs).
const MSR_DAIFCLR_I: u32 = 0xd503_42ff;
/// Samples that found no free slot within the probe limit.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Counter ticks between samples (0: off).
static PERIOD: AtomicU64 = AtomicU64::new(0);
/// Samples count only inside phases ([`gate`]).
static GATED: AtomicBool = AtomicBool::new(false);
/// Phases open now, over all CPUs ([`phase`]).
static OPEN: AtomicI64 = AtomicI64::new(0);

/// From now on count samples only while a phase is open.
pub fn gate() {
    GATED.store(true, Relaxed);
}

/// A measured phase begins (`true`) or ends (`false`), on any CPU.
pub fn phase(begin: bool) {
    OPEN.fetch_add(if begin { 1 } else { -1 }, Relaxed);
}

/// Start sampling every `period_ns` on this CPU (the boot CPU; the
/// secondaries join in [`start_secondary`]).
pub fn start(period_ns: u64) {
    let f = crate::timer::frequency().max(1);
    let period = (period_ns as u128 * f as u128 / 1_000_000_000).max(1) as u64;
    PERIOD.store(period, Relaxed);
    start_secondary();
}

/// Arm this CPU's profile timer if profiling is on.
pub fn start_secondary() {
    let p = PERIOD.load(Relaxed);
    if p == 0 {
        return;
    }
    gic::enable_ppi(PROFILE_INTID);
    arm(CNTPCT_EL0.get() + p);
}

fn arm(cval: u64) {
    CNTP_CVAL_EL0.set(cval);
    CNTP_CTL_EL0.write(CNTP_CTL_EL0::ENABLE::SET + CNTP_CTL_EL0::IMASK::CLEAR);
    crate::regs::isb();
}

/// The profile timer fired on this CPU with `pc` interrupted (`user`:
/// from EL0; `lr`: the interrupted x30): count it and re-arm.
pub(crate) fn sample(pc: u64, lr: u64, user: bool) {
    let p = PERIOD.load(Relaxed).max(1);
    arm(CNTPCT_EL0.get() + p);
    if GATED.load(Relaxed) && OPEN.load(Relaxed) <= 0 {
        return;
    }
    let pc = if user { USER_PC } else { pc };
    count(&PCS, &COUNTS, pc);
    let text = crate::paging::sym::text_start() + 4..crate::paging::sym::text_end();
    if !user && text.contains(&pc) && pc.is_multiple_of(4) {
        // SAFETY: `pc - 4` is a 4-byte-aligned address inside the kernel's
        // text, which is mapped readable for the kernel's whole life.
        let prev = unsafe { core::ptr::read_volatile((pc - 4) as *const u32) };
        if prev == MSR_DAIFCLR_I {
            count(&LRS, &LR_COUNTS, lr);
        }
    }
}

/// Counts `key` in the open-addressing table `keys`/`counts`.
fn count(keys: &[AtomicU64], counts: &[AtomicU64], key: u64) {
    let n = keys.len();
    let mut i = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 50) as usize % n;
    for _ in 0..64 {
        let cur = keys[i].load(Relaxed);
        if cur == key
            || (cur == 0
                && match keys[i].compare_exchange(0, key, Relaxed, Relaxed) {
                    Ok(_) => true,
                    Err(now) => now == key,
                })
        {
            counts[i].fetch_add(1, Relaxed);
            return;
        }
        i = (i + 1) % n;
    }
    DROPPED.fetch_add(1, Relaxed);
}

/// Every (link register, samples) counted right after an IRQ unmask.
pub fn for_each_unmask_caller(mut f: impl FnMut(u64, u64)) {
    for i in 0..LR_SLOTS {
        let lr = LRS[i].load(Relaxed);
        if lr != 0 {
            f(lr, LR_COUNTS[i].load(Relaxed));
        }
    }
}

/// Whether `profile=` turned sampling on.
pub fn enabled() -> bool {
    PERIOD.load(Relaxed) != 0
}

/// Every (pc, samples) counted so far, then `(0, dropped)`.
pub fn for_each(mut f: impl FnMut(u64, u64)) {
    for i in 0..SLOTS {
        let pc = PCS[i].load(Relaxed);
        if pc != 0 {
            f(pc, COUNTS[i].load(Relaxed));
        }
    }
    f(0, DROPPED.load(Relaxed));
}
