//! PSCI calls beyond SYSTEM_OFF (cpu.rs): CPU_ON, to start a secondary.
//! The conduit (HVC or SMC) is the one the DT's `/psci` node names.
use crate::dt::PsciConduit;

unsafe extern "C" {
    fn arch_psci_call_hvc(func: u64, a1: u64, a2: u64, a3: u64) -> u64;
    fn arch_psci_call_smc(func: u64, a1: u64, a2: u64, a3: u64) -> u64;
}

/// CPU_ON, SMC64/HVC64 calling convention.
const PSCI_CPU_ON_64: u64 = 0xC400_0003;

/// Ask the firmware to start the CPU with affinity `mpidr` at physical
/// address `entry_pa` with `x0 = context`.  Returns PSCI's status (0 =
/// success; negative: NOT_SUPPORTED -1, INVALID_PARAMETERS -2, DENIED -3,
/// ALREADY_ON -4, ON_PENDING -5, INTERNAL_FAILURE -6, INVALID_ADDRESS -9).
///
/// # Safety
/// `entry_pa` must be code that can start a CPU with the MMU off, and
/// `context` what that code expects in x0.
pub unsafe fn cpu_on(conduit: PsciConduit, mpidr: u64, entry_pa: u64, context: u64) -> i64 {
    // SAFETY: the caller's contract; the call instruction sites are in
    // trap.S, where an UNDEFINED HVC/SMC (no conduit) is skipped and
    // returns the argument unchanged (not 0), which reads as a failure.
    let r = unsafe {
        match conduit {
            PsciConduit::Hvc => arch_psci_call_hvc(PSCI_CPU_ON_64, mpidr, entry_pa, context),
            PsciConduit::Smc => arch_psci_call_smc(PSCI_CPU_ON_64, mpidr, entry_pa, context),
        }
    };
    r as i64
}
