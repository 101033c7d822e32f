//! Per-CPU data, reached through TPIDR_EL1.
//!
//! TPIDR_EL1 holds the address of the running CPU's [`PerCpu`] (an entry of
//! [`arch_percpu`]), set before the CPU runs any Rust code or can take an
//! exception: on CPU 0 by `boot/aarch64/entry.S` right after the MMU is
//! on, on a secondary by `smp.S` from its start block.  Nothing else uses
//! TPIDR_EL1 (the kernel runs at EL1 only; the exception vectors use SP_EL0
//! as their scratch register, which is free at EL1: an EL0 context's SP_EL0
//! lives in its trap frame).  So:
//!
//! * [`cpu_id`] is one system-register read and one load, right in any
//!   context on any CPU (also in the vectors and before `kernel_main`);
//! * the exception entry (`trap.S`) reads this CPU's kernel-stack limit
//!   and emergency stack from it without any lookup.
//!
//! A pointer rather than the bare CPU id, so the assembly reaches the
//! fields with one register.  The field offsets are fixed (`trap.S`).
use core::sync::atomic::{AtomicU64, Ordering};
use mm::cpu::MAX_CPUS;

/// One CPU's data (layout fixed: `trap.S` reads offsets 0 and 16).
#[repr(C, align(64))]
pub struct PerCpu {
    /// Lowest usable address of the kernel stack this CPU now runs on,
    /// with an unmapped guard page below it (0: none), for the
    /// stack-overflow check of the EL1h synchronous vector.
    pub stack_limit: AtomicU64,
    /// This CPU's logical id.
    pub cpu: AtomicU64,
    /// Top of this CPU's emergency stack (the overflow report runs on it).
    pub emergency_top: AtomicU64,
}

const _: () = assert!(core::mem::offset_of!(PerCpu, stack_limit) == 0);
const _: () = assert!(core::mem::offset_of!(PerCpu, emergency_top) == 16);

/// The per-CPU data, indexed by logical CPU id.  CPU 0's `emergency_top`
/// is set by entry.S, the secondaries' by `smp::start_secondaries`.
#[unsafe(no_mangle)]
pub static arch_percpu: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        stack_limit: AtomicU64::new(0),
        cpu: AtomicU64::new(0),
        emergency_top: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// The running CPU's data.
#[inline(always)]
pub fn this() -> &'static PerCpu {
    let p = crate::regs::read_sysreg!("tpidr_el1");
    // SAFETY: TPIDR_EL1 holds the address of an entry of `arch_percpu` from
    // before the first Rust code on every CPU (see the module doc), and
    // nothing writes it afterwards.
    unsafe { &*(p as *const PerCpu) }
}

/// The running CPU's logical id (`0..nr_cpus_possible()`).
#[inline(always)]
pub fn cpu_id() -> usize {
    this().cpu.load(Ordering::Relaxed) as usize
}

/// CPU `cpu`'s data (`cpu < MAX_CPUS`).
pub fn of(cpu: usize) -> &'static PerCpu {
    &arch_percpu[cpu]
}

/// The set-up every CPU does for itself, CPU 0 at boot (`arch_early_main`)
/// and each secondary at start-up (`arch_secondary_main`): TCR_EL1.AS for
/// 16-bit ASIDs.  (MAIR, TCR's other fields, SCTLR, CPACR and VBAR come
/// from entry.S on CPU 0 and are copied by `smp.S` on the others; the
/// user-mode settings are `user::init_this_cpu`.)
pub fn init_this_cpu() {
    crate::context::init_asid_size();
}
