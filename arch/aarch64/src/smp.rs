//! Secondary CPUs (not started yet on arm64: one CPU).
use core::sync::atomic::{AtomicUsize, Ordering};

static IPI_HOOK: AtomicUsize = AtomicUsize::new(0);

/// CPUs the firmware describes.
pub fn nr_cpus_possible() -> usize {
    1
}

/// CPUs running now.
pub fn nr_cpus_online() -> usize {
    1
}

/// Whether CPU `cpu` is running.
pub fn cpu_online(cpu: usize) -> bool {
    cpu == 0
}

/// This CPU's logical number.
pub fn cpu_id() -> usize {
    0
}

/// Timer interrupts CPU `cpu` took.
pub fn cpu_ticks(cpu: usize) -> u64 {
    if cpu == 0 { crate::timer::ticks() } else { 0 }
}

/// IPIs CPU `cpu` took.
pub fn ipi_count(_cpu: usize) -> u64 {
    0
}

/// Install the IPI hook.
pub fn set_ipi_hook(f: fn(u32)) {
    IPI_HOOK.store(f as usize, Ordering::Release);
}

/// Send an IPI: no other CPU is online.
pub fn send_ipi(_cpu: usize, _reasons: u32) -> bool {
    false
}

/// Start the other CPUs: not yet on arm64.
pub fn start_secondaries(_entry: fn(usize) -> !) -> usize {
    1
}
