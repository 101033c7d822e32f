//! Fault probes: memory accesses whose faults are caught through the
//! exception fixup table (`.ex_table`, see trap.S and trap.rs).
use crate::FaultInfo;
use crate::trap::PROBE_FAULT;

unsafe extern "C" {
    fn arch_probe_read(va: u64, out: *mut u64) -> u64;
    fn arch_probe_write(va: u64, val: u64) -> u64;
    fn arch_probe_exec(va: u64) -> u64;
    /// A text-section function consisting of `ret` only.
    #[cfg(feature = "selftest")]
    pub fn arch_probe_ret();
}

fn take_fault() -> FaultInfo {
    PROBE_FAULT[crate::percpu::cpu_id()]
        .lock()
        .take()
        .expect("probe fixup without a recorded fault")
}

/// Read 8 bytes at `va`; a fault returns its `FaultInfo`.
pub fn probe_read(va: u64) -> Result<u64, FaultInfo> {
    let mut v = 0u64;
    // Masked so that no other thread's probe takes or overwrites the fault.
    let irq = crate::cpu::irq_save();
    // SAFETY: the load at `va` either succeeds or faults; a fault resumes at
    // the fixup, which returns 1.  `v` is a valid local for the store.
    let r = unsafe { arch_probe_read(va, &mut v) };
    let res = if r == 0 { Ok(v) } else { Err(take_fault()) };
    crate::cpu::irq_restore(irq);
    res
}

/// Write 8 bytes at `va`.  The caller is responsible for what it overwrites.
pub fn probe_write(va: u64, val: u64) -> Result<(), FaultInfo> {
    let irq = crate::cpu::irq_save();
    // SAFETY: as for `probe_read`; the store itself is the point of the
    // probe, and callers only aim it at memory they own or expect to fault.
    let r = unsafe { arch_probe_write(va, val) };
    let res = if r == 0 { Ok(()) } else { Err(take_fault()) };
    crate::cpu::irq_restore(irq);
    res
}

/// Call `va`, which must hold a `ret` if it is executable.
pub fn probe_exec(va: u64) -> Result<(), FaultInfo> {
    let irq = crate::cpu::irq_save();
    // SAFETY: the branch either reaches an instruction that returns at once
    // (caller's contract) or takes an instruction abort that the fixup catches.
    let r = unsafe { arch_probe_exec(va) };
    let res = if r == 0 { Ok(()) } else { Err(take_fault()) };
    crate::cpu::irq_restore(irq);
    res
}
