//! Transparent huge page policy, knobs and statistics.
//!
//! * [`policy`]: the knobs ([`ThpConfig`]) and Linux's order-resolution
//!   rule ([`PolicySnapshot::allowable_orders`], [`suitable_orders`]).
//! * [`stats`]: per-size counters with Linux's names, khugepaged's
//!   counters and a `/proc/vmstat` subset ([`ThpStats`]).
//!
//! How the knobs and counters look from outside — files under Linux's
//! sysfs paths and boot parameters — is in [`crate::abi`]
//! (`abi::thp_sysfs`, `abi::thp_cmdline`).
//!
//! Everything hangs off a [`Thp`] value.  The kernel uses the one global
//! [`THP`]; host tests create their own so they can run in parallel without
//! seeing each other's settings.
//!
//! # Defaults
//!
//! Linux's upstream defaults: global `enabled` = `always` (the default of
//! the Kconfig choice, `CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS`; distributions
//! such as Ubuntu pick `madvise`, which is one boot parameter away:
//! `transparent_hugepage=madvise`), PMD size `inherit`, every other size
//! `never`, `defrag` = `madvise`, `use_zero_page` = 1,
//! `shrink_underused` = 1, khugepaged as in [`policy::khugepaged_defaults`].

pub mod policy;
pub mod stats;

pub use policy::{
    DefragMode, GlobalMode, OrderMode, PolicySnapshot, THP_MAX_ORDER, THP_MIN_ORDER,
    THP_ORDERS_ALL_ANON, ThpConfig, VmaThpHints, orders_fitting, suitable_orders,
};
pub use stats::{MthpStat, ThpStats, VmEvent};

/// One kernel's THP state: knobs and counters.
#[derive(Debug, Default)]
pub struct Thp {
    /// Runtime knobs.
    pub config: ThpConfig,
    /// Counters.
    pub stats: ThpStats,
    /// Shmem page-cache gauges (`/proc/meminfo`'s `Shmem*` lines).
    pub shmem: crate::shmem::ShmemGauges,
}

impl Thp {
    /// Linux's defaults, all counters zero.
    pub const fn new() -> Self {
        Thp {
            config: ThpConfig::new(),
            stats: ThpStats::new(),
            shmem: crate::shmem::ShmemGauges::new(),
        }
    }

    /// Back to defaults and zero counters (tests).
    pub fn reset(&self) {
        self.config.reset();
        self.stats.reset();
    }
}

/// The kernel's THP state.
pub static THP: Thp = Thp::new();
