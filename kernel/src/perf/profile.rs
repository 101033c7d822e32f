//! The sampling profile (`profile=<ns>` on the command line; arm64 only,
//! see `arch_aarch64::profile`; `profile_phases` counts only inside the
//! benchmarks' measured phases, the perf sessions): started at boot, printed when the run
//! ends as `profile <pc> <samples>` lines for scripts/profile.py to
//! symbolize against the kernel's ELF.

/// Start sampling if the command line asks for it.
pub fn start() {
    let Some(v) = crate::cmdline::value("profile") else {
        return;
    };
    #[cfg(target_arch = "aarch64")]
    match v.parse::<u64>() {
        Ok(ns) if ns >= 1000 => {
            if crate::cmdline::has("profile_phases") {
                crate::arch::profile::gate();
            }
            crate::arch::profile::start(ns);
            crate::info!("profile: a sample every {ns} ns of the system counter");
        }
        _ => crate::warn!("profile={v}: not a period of at least 1000 ns, ignored"),
    }
    #[cfg(not(target_arch = "aarch64"))]
    crate::warn!("profile={v}: the sampling profile is arm64-only, ignored");
}

/// A measured phase (a perf session) begins or ends: with
/// `profile_phases` on the command line only samples inside one count.
pub fn phase(begin: bool) {
    #[cfg(target_arch = "aarch64")]
    crate::arch::profile::phase(begin);
    #[cfg(not(target_arch = "aarch64"))]
    let _ = begin;
}

/// Print every sampled PC (user space as pc 0x1, dropped samples as 0x0),
/// then the link registers of the samples taken right after an IRQ
/// unmask (`profile_lr`).
pub fn dump() {
    #[cfg(target_arch = "aarch64")]
    if crate::arch::profile::enabled() {
        crate::arch::profile::for_each(|pc, n| crate::println!("profile {pc:#x} {n}"));
        crate::arch::profile::for_each_unmask_caller(|lr, n| {
            crate::println!("profile_lr {lr:#x} {n}")
        });
    }
}
