//! Cross-CPU calls: run a function on every other online CPU, with
//! interrupts masked there, and wait until all have run it.  The frame
//! allocator drains the other CPUs' page caches this way when an
//! allocation would otherwise fail (`mm::cpu::CpuOps::call_on_others`,
//! Linux's `drain_all_pages`, which uses a work item per CPU instead).
//!
//! Protocol: one call in flight at a time ([`LOCK`]).  The caller stores
//! the function in [`FUNC`], names the targets in [`PENDING`], sends each
//! an [`IPI_CALL`] and waits for the set to empty.  Any CPU waiting here,
//! or for a TLB shootdown (`shootdown.rs`), keeps answering both kinds of
//! request aimed at itself, so two CPUs waiting with interrupts masked
//! never wait for each other.  A target silent for [`WATCHDOG_NS`] is
//! named on the console and sent the IPI again.
//!
//! Lock order: `LOCK` is outermost here; `FUNC` is a leaf taken with
//! interrupts masked (by the caller, and by the IPI handler).
#![allow(unsafe_code)]

use crate::arch;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// IPI reason: a cross-CPU call is waiting for this CPU.
pub const IPI_CALL: u32 = 1 << 4;

const WATCHDOG_NS: u64 = 100_000_000;

static LOCK: mm::sync::Mutex<()> = mm::sync::Mutex::new(());
/// The function of the call in flight (valid while [`PENDING`] is not empty).
static FUNC: mm::sync::Mutex<Option<&'static (dyn Fn() + Sync)>> = mm::sync::Mutex::new(None);
/// CPUs that have not run it yet (bit per CPU).
static PENDING: AtomicU64 = AtomicU64::new(0);

/// Calls made, for reports.
pub static CALLS: AtomicU64 = AtomicU64::new(0);

/// Run `f` on every other online CPU and return once all have.
pub fn call_on_others(f: &(dyn Fn() + Sync)) {
    let me = arch::cpu_id();
    let targets = (0..mm::cpu::MAX_CPUS)
        .filter(|&c| c != me && arch::cpu_online(c))
        .fold(0u64, |m, c| m | (1 << c));
    if targets == 0 {
        return;
    }
    let irq = arch::irq_save();
    let guard = loop {
        if let Some(g) = LOCK.try_lock() {
            break g;
        }
        answer_all();
        arch::cpu_relax();
    };
    // SAFETY: the reference is stored only until every target has run it
    // (`PENDING` empty) and is taken out again below, before `f`'s borrow
    // ends; targets copy it out only while their bit is still pending.
    let f_static: &'static (dyn Fn() + Sync) = unsafe { core::mem::transmute(f) };
    *FUNC.lock() = Some(f_static);
    PENDING.store(targets, SeqCst);
    CALLS.fetch_add(1, SeqCst);
    let send = |m: u64| {
        for c in (0..mm::cpu::MAX_CPUS).filter(|&c| m & (1 << c) != 0) {
            arch::send_ipi(c, IPI_CALL);
        }
    };
    send(targets);
    let mut t0 = arch::now_ns();
    loop {
        let left = PENDING.load(SeqCst);
        if left == 0 {
            break;
        }
        crate::mem::shootdown::answer();
        if arch::now_ns() - t0 > WATCHDOG_NS {
            warn!(
                "smp: CPU set {:#x} has not answered a cross-CPU call for {} ms; sending again",
                left,
                WATCHDOG_NS / 1_000_000
            );
            send(left);
            t0 = arch::now_ns();
        }
        arch::cpu_relax();
    }
    *FUNC.lock() = None;
    drop(guard);
    arch::irq_restore(irq);
}

/// Run the call in flight if it names this CPU (from the IPI hook and from
/// every wait loop; interrupts masked).
pub fn answer() {
    let me = arch::cpu_id();
    if PENDING.load(SeqCst) & (1 << me) == 0 {
        return;
    }
    let f = *FUNC.lock();
    if let Some(f) = f {
        f();
    }
    PENDING.fetch_and(!(1 << me), SeqCst);
}

/// Answer every kind of cross-CPU request aimed at this CPU.
fn answer_all() {
    answer();
    crate::mem::shootdown::answer();
}
