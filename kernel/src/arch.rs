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
