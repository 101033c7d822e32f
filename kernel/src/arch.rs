//! The one place that picks an architecture.  See `arch/API.md`.
#[cfg(target_arch = "aarch64")]
pub use arch_aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use arch_x86_64::*;
