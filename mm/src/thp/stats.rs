//! THP statistics: the per-size counters of
//! `hugepages-<size>kB/stats/*`, khugepaged's two counters, and a subset of
//! `/proc/vmstat` plus this kernel's own event counters.
//!
//! # Concurrency
//!
//! Every counter is an independent `AtomicU64` updated with relaxed
//! ordering: counters are statistics, never used to synchronise memory, so
//! no lock protects them and a reader may see one counter updated before
//! another.  Linux uses per-CPU counters summed on read; with few CPUs a
//! shared atomic is simpler and the cache-line traffic is acceptable.  The
//! gauges (`nr_anon`, `nr_anon_partially_mapped`) can transiently go below
//! zero on Linux because per-CPU deltas are summed racily; here a gauge is
//! one atomic, so a decrement without a matching increment is a caller bug
//! (checked with a debug assertion).

use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use super::policy::THP_MAX_ORDER;

macro_rules! named_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $var:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vm])* $var,)* }

        impl $name {
            /// Every variant, in declaration (display) order.
            pub const ALL: &'static [$name] = &[$($name::$var,)*];
            /// Number of variants.
            pub const COUNT: usize = Self::ALL.len();

            /// The Linux (or, for kernel-specific events, our) name.
            pub const fn name(self) -> &'static str {
                match self { $($name::$var => $s,)* }
            }

            /// Look a variant up by name.
            pub fn from_name(n: &str) -> Option<Self> {
                match n { $($s => Some($name::$var),)* _ => None }
            }
        }
    };
}

named_enum! {
    /// A per-size counter, named as in `hugepages-<size>kB/stats/`
    /// (Linux's `enum mthp_stat_item`, anonymous and swap items only: this
    /// kernel has no shmem or page-cache THPs).
    pub enum MthpStat {
        /// Allocated (and charged) at fault time.
        AnonFaultAlloc => "anon_fault_alloc",
        /// Allocation or charge failed at fault; fell back to a lower order.
        AnonFaultFallback => "anon_fault_fallback",
        /// Allocation succeeded but the charge failed (also counted above).
        AnonFaultFallbackCharge => "anon_fault_fallback_charge",
        /// A shmem folio of this order allocated and added to the cache.
        ShmemAlloc => "shmem_alloc",
        /// A shmem allocation of this order failed; fell back lower.
        ShmemFallback => "shmem_fallback",
        /// A shmem charge failed (also counted above; no memcg here).
        ShmemFallbackCharge => "shmem_fallback_charge",
        /// Stored into zswap as a whole folio.
        Zswpout => "zswpout",
        /// Swapped in as a whole folio.
        Swpin => "swpin",
        /// Large swap-in failed; fell back to a lower order.
        SwpinFallback => "swpin_fallback",
        /// Large swap-in charge failed.
        SwpinFallbackCharge => "swpin_fallback_charge",
        /// Swapped out as a whole folio.
        Swpout => "swpout",
        /// Had to be split before swap-out.
        SwpoutFallback => "swpout_fallback",
        /// Split successfully (counted against the old order).
        Split => "split",
        /// Split attempted and failed.
        SplitFailed => "split_failed",
        /// Queued for deferred split because it became partially mapped.
        SplitDeferred => "split_deferred",
        /// Gauge: live anonymous folios of this order.
        NrAnon => "nr_anon",
        /// Gauge: of those, the ones queued as partially mapped.
        NrAnonPartiallyMapped => "nr_anon_partially_mapped",
        /// khugepaged allocated a folio of this order for a collapse.
        CollapseAlloc => "collapse_alloc",
        /// khugepaged failed to allocate one.
        CollapseAllocFailed => "collapse_alloc_failed",
        /// A collapse was refused: too many empty PTEs.
        CollapseExceedNonePte => "collapse_exceed_none_pte",
        /// A collapse was refused: too many swap PTEs.
        CollapseExceedSwapPte => "collapse_exceed_swap_pte",
        /// A collapse was refused: too many shared PTEs.
        CollapseExceedSharedPte => "collapse_exceed_shared_pte",
        /// This kernel's own: a write fault on a shared large folio copied
        /// a block of this order (`large_cow`).
        CowAlloc => "cow_alloc",
        /// This kernel's own: a large COW copy of this order could not be
        /// allocated; the next lower order was tried.
        CowFallback => "cow_fallback",
        /// Reservations made (ours, issue 17): a folio of this size
        /// allocated at a first fault and populated page by page.
        ReserveAlloc => "reserve_alloc",
        /// Reservations promoted in place when their last page was mapped.
        ReservePromote => "reserve_promote",
        /// Reservations broken before they filled (unmap, fork, mprotect
        /// or munmap inside the block, memory pressure).
        ReserveBreak => "reserve_break",
    }
}

impl MthpStat {
    /// Gauges go up and down; everything else only counts events.
    pub const fn is_gauge(self) -> bool {
        matches!(self, MthpStat::NrAnon | MthpStat::NrAnonPartiallyMapped)
    }
}

named_enum! {
    /// A global event counter.  Linux's `/proc/vmstat` name where one exists
    /// (those are PMD-only for the `thp_*` items, as on Linux); otherwise a
    /// name of this kernel's own, listed after the Linux ones.
    pub enum VmEvent {
        /// Every resolved page fault (minor faults; we have no major ones).
        PgFault => "pgfault",
        /// Pages compaction's migrate scanner looked at.
        CompactMigrateScanned => "compact_migrate_scanned",
        /// Pages compaction's free scanner looked at.
        CompactFreeScanned => "compact_free_scanned",
        /// Pages compaction isolated (source folios and free blocks).
        CompactIsolated => "compact_isolated",
        /// Allocations that stalled for direct compaction.
        CompactStall => "compact_stall",
        /// Direct compactions after which the allocation still failed.
        CompactFail => "compact_fail",
        /// Direct compactions after which the allocation succeeded.
        CompactSuccess => "compact_success",
        /// kcompactd wake-ups that compacted (woken, or proactive).
        CompactDaemonWake => "compact_daemon_wake",
        /// Of `compact_migrate_scanned`, the pages kcompactd scanned.
        CompactDaemonMigrateScanned => "compact_daemon_migrate_scanned",
        /// Of `compact_free_scanned`, the pages kcompactd scanned.
        CompactDaemonFreeScanned => "compact_daemon_free_scanned",
        /// Pages of folios newly mlocked (`mlock`, faults in locked VMAs).
        UnevictablePgsMlocked => "unevictable_pgs_mlocked",
        /// Pages of folios munlocked (`munlock`, munmap or exit of a
        /// locked mapping).
        UnevictablePgsMunlocked => "unevictable_pgs_munlocked",
        /// PMD-sized THP allocated at fault.
        ThpFaultAlloc => "thp_fault_alloc",
        /// PMD-sized THP allocation failed at fault.
        ThpFaultFallback => "thp_fault_fallback",
        /// PMD-sized THP charge failed at fault.
        ThpFaultFallbackCharge => "thp_fault_fallback_charge",
        /// khugepaged allocated a PMD-sized folio.
        ThpCollapseAlloc => "thp_collapse_alloc",
        /// khugepaged failed to allocate a PMD-sized folio.
        ThpCollapseAllocFailed => "thp_collapse_alloc_failed",
        /// A PMD-size shmem folio allocated (shmem only, despite the name).
        ThpFileAlloc => "thp_file_alloc",
        /// A PMD-size shmem allocation failed.
        ThpFileFallback => "thp_file_fallback",
        /// A PMD-size shmem charge failed.
        ThpFileFallbackCharge => "thp_file_fallback_charge",
        /// A file or shmem folio mapped by a PMD.
        ThpFileMapped => "thp_file_mapped",
        /// A PMD-sized THP was split.
        ThpSplitPage => "thp_split_page",
        /// Splitting a PMD-sized THP failed.
        ThpSplitPageFailed => "thp_split_page_failed",
        /// A PMD-sized THP was queued for deferred split.
        ThpDeferredSplitPage => "thp_deferred_split_page",
        /// The shrinker split an underused PMD-sized THP.
        ThpUnderusedSplitPage => "thp_underused_split_page",
        /// A PMD mapping was split into PTEs.
        ThpSplitPmd => "thp_split_pmd",
        /// khugepaged scan refused: `max_ptes_none` exceeded.
        ThpScanExceedNonePte => "thp_scan_exceed_none_pte",
        /// khugepaged scan refused: `max_ptes_swap` exceeded.
        ThpScanExceedSwapPte => "thp_scan_exceed_swap_pte",
        /// khugepaged scan refused: `max_ptes_shared` exceeded.
        ThpScanExceedSharePte => "thp_scan_exceed_share_pte",
        /// The huge zero folio was allocated.
        ThpZeroPageAlloc => "thp_zero_page_alloc",
        /// Allocating the huge zero folio failed.
        ThpZeroPageAllocFailed => "thp_zero_page_alloc_failed",
        /// A PMD-sized THP was swapped out whole.
        ThpSwpout => "thp_swpout",
        /// A PMD-sized THP had to be split before swap-out.
        ThpSwpoutFallback => "thp_swpout_fallback",
        /// Pages read from a swap device.
        PswpIn => "pswpin",
        /// Pages written to a swap device.
        PswpOut => "pswpout",
        /// Faults that had to read from a swap device (one per fault, even
        /// for a large folio, as Linux).
        PgMajFault => "pgmajfault",
        /// Pages swap readahead read beside a faulting one.
        SwapRa => "swap_ra",
        /// Faults that found a readahead page in the swap cache (its first
        /// hit only).
        SwapRaHit => "swap_ra_hit",
        /// Pages `MADV_FREE` marked lazyfree.
        PgLazyFree => "pglazyfree",
        /// Lazyfree pages reclaim discarded.
        PgLazyFreed => "pglazyfreed",
        /// Pages kswapd scanned on the inactive list.
        PgscanKswapd => "pgscan_kswapd",
        /// Pages direct reclaim scanned.
        PgscanDirect => "pgscan_direct",
        /// Pages kswapd reclaimed.
        PgstealKswapd => "pgsteal_kswapd",
        /// Pages direct reclaim reclaimed.
        PgstealDirect => "pgsteal_direct",
        /// Anonymous pages scanned by reclaim (any reclaimer).
        PgscanAnon => "pgscan_anon",
        /// Anonymous pages reclaimed.
        PgstealAnon => "pgsteal_anon",
        /// Allocations that entered direct reclaim (the one zone, Normal).
        AllocstallNormal => "allocstall_normal",
        /// kswapd wake-ups that ran a reclaim pass.
        PageOutRun => "pageoutrun",
        /// Pages reclaim wrote to swap.
        NrVmscanWrite => "nr_vmscan_write",
        /// Entries NUMA balancing made hinting entries (a PMD counts its
        /// 512 pages, as Linux).
        NumaPteUpdates => "numa_pte_updates",
        /// PMD entries NUMA balancing made hinting entries.
        NumaHugePteUpdates => "numa_huge_pte_updates",
        /// Faults on NUMA hinting entries.
        NumaHintFaults => "numa_hint_faults",
        /// ... of those, on a folio already on the faulting CPU's node.
        NumaHintFaultsLocal => "numa_hint_faults_local",
        /// Pages NUMA balancing migrated (whole folios).
        NumaPagesMigrated => "numa_pages_migrated",
        /// Pages of folios migrated (Linux counts pages, at every order).
        PgMigrateSuccess => "pgmigrate_success",
        /// Pages of folios that could not be migrated.
        PgMigrateFail => "pgmigrate_fail",
        /// PMD-sized THPs migrated whole.
        ThpMigrationSuccess => "thp_migration_success",
        /// PMD-sized THPs that could not be migrated.
        ThpMigrationFail => "thp_migration_fail",
        /// PMD-sized THPs split for migration (no destination of their
        /// order, or partially mapped).
        ThpMigrationSplit => "thp_migration_split",
        /// Pages of folios moved to (or marked for) the active LRU list.
        PgActivate => "pgactivate",
        /// Pages of folios moved from the active to the inactive list.
        PgDeactivate => "pgdeactivate",
        /// Pages scanned on the active list (`shrink_active_list`).
        PgRefill => "pgrefill",
        /// Write fault that allocated a new anonymous folio (any order).
        FaultAnonAlloc => "fault_anon_alloc",
        /// Read fault that mapped the shared 4K zero page.
        FaultZeroPage => "fault_zero_page",
        /// Read fault that mapped the huge zero folio with a PMD.
        FaultHugeZeroPage => "fault_huge_zero_page",
        /// Write fault on a read-only exclusive page, reused in place.
        FaultCowReuse => "fault_cow_reuse",
        /// Write fault on a shared page, copied into a new 4K folio.
        FaultCowCopy => "fault_cow_copy",
        /// Fault resolved by installing a PMD-sized folio.
        FaultPmd => "fault_pmd",
        /// User fault that could not be resolved (segmentation fault).
        FaultSegv => "fault_segv",
        /// PTEs pointed at the shared zero page (faults, PMD splits of the
        /// huge zero folio, underused-split remaps).
        ZeroPageMap => "zero_page_map",
        /// arm64 contiguous blocks folded (16 PTEs gained the contiguous bit).
        ContpteFold => "contpte_fold",
        /// arm64 contiguous blocks unfolded.
        ContpteUnfold => "contpte_unfold",
    }
}

/// Orders with per-size counters (index = order; 0 and 1 are kept but never
/// shown, as Linux ignores order 0 and has no order-1 anon THP).
const NR_ORDERS: usize = THP_MAX_ORDER as usize + 1;

/// All THP counters of one kernel instance.
#[derive(Debug)]
pub struct ThpStats {
    per_order: [[AtomicU64; MthpStat::COUNT]; NR_ORDERS],
    events: [AtomicU64; VmEvent::COUNT],
    pages_collapsed: AtomicU64,
    full_scans: AtomicU64,
}

impl Default for ThpStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ThpStats {
    /// All counters zero.
    pub const fn new() -> Self {
        ThpStats {
            per_order: [const { [const { AtomicU64::new(0) }; MthpStat::COUNT] }; NR_ORDERS],
            events: [const { AtomicU64::new(0) }; VmEvent::COUNT],
            pages_collapsed: AtomicU64::new(0),
            full_scans: AtomicU64::new(0),
        }
    }

    fn slot(&self, order: u32, s: MthpStat) -> Option<&AtomicU64> {
        // As Linux's count_mthp_stat: order 0 and orders above PMD are not
        // counted.
        if order == 0 || order as usize >= NR_ORDERS {
            return None;
        }
        Some(&self.per_order[order as usize][s as usize])
    }

    /// Add `n` to a per-size counter.
    pub fn add(&self, order: u32, s: MthpStat, n: u64) {
        if let Some(c) = self.slot(order, s) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Count one event of `s` for `order`.
    #[inline]
    pub fn inc(&self, order: u32, s: MthpStat) {
        self.add(order, s, 1);
    }

    /// Decrement a gauge.
    pub fn dec(&self, order: u32, s: MthpStat) {
        self.sub(order, s, 1);
    }

    /// Subtract `n` from a gauge.
    pub fn sub(&self, order: u32, s: MthpStat, n: u64) {
        debug_assert!(s.is_gauge(), "{} is not a gauge", s.name());
        if let Some(c) = self.slot(order, s) {
            let old = c.fetch_sub(n, Ordering::Relaxed);
            debug_assert!(old >= n, "{} for order {order} below zero", s.name());
        }
    }

    /// Current value of a per-size counter (0 for uncounted orders).
    pub fn get(&self, order: u32, s: MthpStat) -> u64 {
        self.slot(order, s).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Count one global event.
    #[inline]
    pub fn count(&self, e: VmEvent) {
        self.count_n(e, 1);
    }

    /// Count `n` global events.
    pub fn count_n(&self, e: VmEvent, n: u64) {
        self.events[e as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Current value of a global event counter.
    pub fn event(&self, e: VmEvent) -> u64 {
        self.events[e as usize].load(Ordering::Relaxed)
    }

    /// khugepaged collapsed `n` more PMD ranges (`khugepaged/pages_collapsed`).
    pub fn add_pages_collapsed(&self, n: u64) {
        self.pages_collapsed.fetch_add(n, Ordering::Relaxed);
    }

    /// `khugepaged/pages_collapsed`.
    pub fn pages_collapsed(&self) -> u64 {
        self.pages_collapsed.load(Ordering::Relaxed)
    }

    /// khugepaged finished one more pass over every registered mm.
    pub fn inc_full_scans(&self) {
        self.full_scans.fetch_add(1, Ordering::Relaxed);
    }

    /// `khugepaged/full_scans`.
    pub fn full_scans(&self) -> u64 {
        self.full_scans.load(Ordering::Relaxed)
    }

    /// The `/proc/vmstat` subset: one `name value` line per event, Linux
    /// names first.
    pub fn vmstat(&self) -> String {
        let mut s = String::new();
        for &e in VmEvent::ALL {
            let _ = writeln!(s, "{} {}", e.name(), self.event(e));
        }
        s
    }

    /// Zero every counter, gauges included (tests only: resetting a gauge
    /// while objects are live would make it wrong).
    pub fn reset(&self) {
        for row in &self.per_order {
            for c in row {
                c.store(0, Ordering::Relaxed);
            }
        }
        for c in &self.events {
            c.store(0, Ordering::Relaxed);
        }
        self.pages_collapsed.store(0, Ordering::Relaxed);
        self.full_scans.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_linux() {
        let want = [
            "anon_fault_alloc",
            "anon_fault_fallback",
            "anon_fault_fallback_charge",
            "split",
            "split_failed",
            "split_deferred",
            "nr_anon",
            "nr_anon_partially_mapped",
            "swpout",
            "swpout_fallback",
            "collapse_alloc",
            "collapse_alloc_failed",
            "collapse_exceed_none_pte",
            "collapse_exceed_swap_pte",
            "collapse_exceed_shared_pte",
        ];
        for n in want {
            let s = MthpStat::from_name(n).unwrap();
            assert_eq!(s.name(), n);
        }
        for n in [
            "pgfault",
            "thp_fault_alloc",
            "thp_fault_fallback",
            "thp_collapse_alloc",
            "thp_collapse_alloc_failed",
            "thp_split_page",
            "thp_split_page_failed",
            "thp_deferred_split_page",
            "thp_split_pmd",
            "thp_zero_page_alloc",
            "compact_migrate_scanned",
            "compact_free_scanned",
            "compact_isolated",
            "compact_stall",
            "compact_fail",
            "compact_success",
            "compact_daemon_wake",
            "compact_daemon_migrate_scanned",
            "compact_daemon_free_scanned",
        ] {
            assert_eq!(VmEvent::from_name(n).unwrap().name(), n);
        }
        assert!(MthpStat::from_name("bogus").is_none());
    }

    #[test]
    fn counting() {
        let s = ThpStats::new();
        s.inc(4, MthpStat::AnonFaultAlloc);
        s.inc(4, MthpStat::AnonFaultAlloc);
        s.add(9, MthpStat::NrAnon, 3);
        s.dec(9, MthpStat::NrAnon);
        assert_eq!(s.get(4, MthpStat::AnonFaultAlloc), 2);
        assert_eq!(s.get(9, MthpStat::NrAnon), 2);
        assert_eq!(s.get(5, MthpStat::AnonFaultAlloc), 0);
        // Order 0 and out-of-range orders are ignored, never a panic.
        s.inc(0, MthpStat::Split);
        s.inc(10, MthpStat::Split);
        s.inc(99, MthpStat::Split);
        assert_eq!(s.get(0, MthpStat::Split), 0);
        assert_eq!(s.get(99, MthpStat::Split), 0);
        s.count(VmEvent::PgFault);
        s.count_n(VmEvent::ThpSplitPmd, 5);
        assert_eq!(s.event(VmEvent::PgFault), 1);
        assert_eq!(s.event(VmEvent::ThpSplitPmd), 5);
        s.add_pages_collapsed(2);
        s.inc_full_scans();
        assert_eq!((s.pages_collapsed(), s.full_scans()), (2, 1));
        s.reset();
        assert_eq!(s.get(4, MthpStat::AnonFaultAlloc), 0);
        assert_eq!(s.event(VmEvent::PgFault), 0);
        assert_eq!(s.full_scans(), 0);
    }

    #[test]
    fn vmstat_format() {
        let s = ThpStats::new();
        s.count_n(VmEvent::ThpFaultAlloc, 7);
        let v = s.vmstat();
        assert!(v.starts_with("pgfault 0\n"));
        assert!(v.contains("\nthp_fault_alloc 7\n"));
        assert!(v.ends_with('\n'));
        assert_eq!(v.lines().count(), VmEvent::COUNT);
        for line in v.lines() {
            let mut it = line.split(' ');
            let (n, val) = (it.next().unwrap(), it.next().unwrap());
            assert!(VmEvent::from_name(n).is_some());
            val.parse::<u64>().unwrap();
            assert!(it.next().is_none());
        }
    }

    #[test]
    fn concurrent_increments() {
        let s = std::sync::Arc::new(ThpStats::new());
        let hs: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.inc(2, MthpStat::Split);
                        s.count(VmEvent::PgFault);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(s.get(2, MthpStat::Split), 4000);
        assert_eq!(s.event(VmEvent::PgFault), 4000);
    }
}
