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

/// CPU features the command line can turn off (as Linux's `nosmap`), and
/// x86's `tlb_flush_ceiling=<pages>` (Linux's
/// `tlb_single_page_flush_ceiling`; see `arch_x86_64::tlb`), and arm64's
/// `asid_bits=<n>` (limits the hardware ASIDs; see `arch_aarch64::asid`).
pub fn apply_cmdline(cmdline: &str) {
    #[cfg(target_arch = "x86_64")]
    for w in cmdline.split_ascii_whitespace() {
        if w == "nosmap" {
            arch_x86_64::refuse_smap();
        } else if let Some(v) = w.strip_prefix("tlb_flush_ceiling=") {
            match v.parse::<u64>() {
                Ok(n) if n > 0 => arch_x86_64::tlb::set_flush_ceiling(n),
                _ => crate::warn!("tlb_flush_ceiling={v}: not a page count, ignored"),
            }
        }
    }
    // `asid_bits=<n>`: hand out only the hardware ASIDs 1..=2^n-1 (n in
    // 1..=16; at least one more than there are CPUs), so that ASID
    // rollovers happen with a few processes (tests).
    #[cfg(target_arch = "aarch64")]
    for w in cmdline.split_ascii_whitespace() {
        if let Some(v) = w.strip_prefix("asid_bits=") {
            match v.parse::<u32>() {
                Ok(n @ 1..=16) => {
                    arch_aarch64::set_asid_limit((1u64 << n) - 1);
                }
                _ => crate::warn!("asid_bits={v}: not a bit count in 1..=16, ignored"),
            }
        }
    }
    let _ = cmdline;
}
