//! The one place that picks an architecture.  See `arch/API.md`.
#[cfg(target_arch = "aarch64")]
pub use arch_aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use arch_x86_64::*;

/// The page-table format `mm` drives on this CPU.
#[cfg(target_arch = "aarch64")]
pub type Paging = arch_aarch64::pte::Aarch64;
#[cfg(target_arch = "x86_64")]
pub type Paging = arch_x86_64::pte::X86_64;

/// CPU features the command line can turn off (as Linux's `nosmap`).
pub fn apply_cmdline(cmdline: &str) {
    #[cfg(target_arch = "x86_64")]
    if cmdline.split_ascii_whitespace().any(|w| w == "nosmap") {
        arch_x86_64::refuse_smap();
    }
    let _ = cmdline;
}
