//! Interrupt mask, idle and exit.
use crate::boot::PLATFORM;
use crate::dt::PsciConduit;
use aarch64_cpu::registers::{DAIF, Readable};
use core::sync::atomic::{AtomicBool, Ordering};

pub fn irq_enable() {
    // SAFETY: unmasking IRQs; the vectors and the GIC are set up before the
    // kernel calls this.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nostack, preserves_flags)) };
}

pub fn irq_disable() {
    // SAFETY: masking IRQs has no other effect.
    unsafe { core::arch::asm!("msr daifset, #2", options(nostack, preserves_flags)) };
}

/// Mask IRQs; returns whether they were enabled before.
pub fn irq_save() -> bool {
    let enabled = DAIF.matches_all(DAIF::I::Unmasked);
    irq_disable();
    enabled
}

/// Restore the state `irq_save` returned: `false` masks IRQs.
pub fn irq_restore(enabled: bool) {
    if enabled {
        irq_enable();
    } else {
        irq_disable();
    }
}

/// The running function's frame pointer (X29): the address of its frame
/// record, where a stack walk ([`arch_common::backtrace::walk_frames`])
/// starts.  Inlined, so the record is the caller's own.
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let fp: u64;
    // SAFETY: only copies a register.
    unsafe {
        core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags))
    };
    fp
}

pub fn halt() {
    // SAFETY: `wfi` only waits for an interrupt (or returns spuriously).
    unsafe { core::arch::asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// One turn of a spin-wait loop: `yield`, not `core::hint::spin_loop`'s
/// `isb`.  Hardware treats both as a hint; QEMU's round-robin TCG (one
/// host thread for all vCPUs, as `-icount` requires) switches to the next
/// vCPU on `yield`, so a spinner lets the lock's holder run instead of
/// burning its slice (up to 0.1 s of guest time) on each contention.
/// Multi-threaded TCG and KVM treat it as a no-op.
#[inline]
pub fn cpu_relax() {
    // SAFETY: `yield` is a hint with no architectural effect.
    unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
}

unsafe extern "C" {
    fn arch_semihost_exit(code: u64);
    fn arch_psci_call_hvc(func: u64, a1: u64, a2: u64, a3: u64) -> u64;
    fn arch_psci_call_smc(func: u64, a1: u64, a2: u64, a3: u64) -> u64;
}

const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
static EXITING: AtomicBool = AtomicBool::new(false);

/// End the QEMU run: semihosting SYS_EXIT with 0 (success) or 1; if that
/// instruction is not available (no `-semihosting`), PSCI SYSTEM_OFF, and
/// finally a WFI loop.  The exception handler skips an UNDEFINED HLT/HVC/SMC
/// at these call sites, so this never recurses.
/// Whether the CPU has the Armv8.1 atomics (ID_AA64ISAR0_EL1.Atomic,
/// bits 23:20, at least 0b0010): the kernel is built with `+lse`
/// (`.cargo/config.toml`), so every atomic is one instruction, as Linux
/// patches its own in on such CPUs.
pub(crate) fn has_lse() -> bool {
    use aarch64_cpu::registers::{ID_AA64ISAR0_EL1, Readable};
    (ID_AA64ISAR0_EL1.get() >> 20) & 0xf >= 2
}

/// Power off before anything atomic has run (a CPU without LSE would take
/// an undefined-instruction exception on the first): semihosting's exit,
/// then PSCI SYSTEM_OFF by the conduit the entry level implies.
pub(crate) fn exit_early_failure(entry_el: u64) -> ! {
    // SAFETY: as in `exit`.
    unsafe {
        arch_semihost_exit(1);
        if entry_el == 2 {
            arch_psci_call_smc(PSCI_SYSTEM_OFF, 0, 0, 0);
        } else {
            arch_psci_call_hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
        }
    }
    loop {
        halt();
    }
}

pub fn exit(success: bool) -> ! {
    irq_disable();
    if !EXITING.swap(true, Ordering::SeqCst) {
        // SAFETY: SYS_EXIT takes a parameter block on the stack; if QEMU does
        // not handle the HLT the handler skips it and the call returns.
        unsafe { arch_semihost_exit(if success { 0 } else { 1 }) };
    }
    // Before the DT is parsed: QEMU's conduit is SMC when it started us at EL2.
    let conduit = PLATFORM.get().and_then(|p| p.psci).unwrap_or(
        if crate::boot::ENTRY_EL.load(Ordering::Relaxed) == 2 {
            PsciConduit::Smc
        } else {
            PsciConduit::Hvc
        },
    );
    // SAFETY: SYSTEM_OFF does not return when PSCI is present; otherwise the
    // UNDEFINED instruction is skipped by the exception handler.
    unsafe {
        match conduit {
            PsciConduit::Smc => arch_psci_call_smc(PSCI_SYSTEM_OFF, 0, 0, 0),
            PsciConduit::Hvc => arch_psci_call_hvc(PSCI_SYSTEM_OFF, 0, 0, 0),
        };
    }
    loop {
        halt();
    }
}
