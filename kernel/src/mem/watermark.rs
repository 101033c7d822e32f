//! The zone's watermarks at boot and whenever something they depend on
//! changes (a `/proc/sys/vm` write, a THP `enabled` knob), applied with
//! `BuddyAllocator::set_watermarks`; and `/proc/zoneinfo`.  The numbers
//! come from `mm::physmem::watermark` (Linux 6.12's formulas); here is
//! only when to compute them and what to feed them.
use crate::mem::memory::{boot_ram_frames, buddy};
use alloc::string::String;
use core::fmt::Write;
use mm::abi::errno::Errno;
use mm::addr::PMD_ORDER;
use mm::physmem::buddy::Wmark;
use mm::physmem::watermark::{VM_SYSCTL, VmKnob};
use mm::thp::{GlobalMode, OrderMode, THP};

/// The zone's name as Linux shows this RAM: a small x86 guest's memory
/// is in `DMA32` (plus the 16 MiB `DMA` zone), an arm64 `virt` guest's
/// (all below 4 GiB) in `DMA`.
#[cfg(target_arch = "x86_64")]
pub const ZONE_NAME: &str = "DMA32";
#[cfg(target_arch = "aarch64")]
pub const ZONE_NAME: &str = "DMA";

fn managed() -> u64 {
    buddy().stats().managed
}

/// Linux's `nr_free_buffer_pages`: managed pages above the high mark,
/// what the runtime recalculations call low memory.
fn free_buffer_pages() -> u64 {
    managed().saturating_sub(buddy().watermark(Wmark::High))
}

/// `setup_per_zone_wmarks`: the watermarks from the current sysctls.
pub fn setup_per_zone_wmarks() {
    let b = buddy();
    let managed = node_managed();
    for (n, w) in VM_SYSCTL.node_watermarks(&managed).enumerate() {
        b.set_node_watermarks(n, w.min, w.low, w.high);
    }
}

/// Managed pages of each node's zone.
fn node_managed() -> alloc::vec::Vec<u64> {
    let b = buddy();
    (0..b.nodes().nr_nodes())
        .map(|n| b.node_managed(n).0)
        .collect()
}

/// Whether the anonymous PMD size is enabled (6.12's
/// `hugepage_pmd_enabled`): what makes khugepaged run and raise
/// `min_free_kbytes`.
fn hugepage_pmd_enabled() -> bool {
    let p = THP.config.snapshot();
    match p.order(PMD_ORDER) {
        OrderMode::Always | OrderMode::Madvise => true,
        OrderMode::Inherit => p.global() != GlobalMode::Never,
        OrderMode::Never => false,
    }
}

/// Upper ends (exclusive, in pfns) of the zones Linux would put this RAM
/// in, lowest first: x86 `DMA` (16 MiB), `DMA32` (4 GiB), `Normal`;
/// arm64 `DMA` (4 GiB on `virt`, whose RAM starts at 1 GiB), `Normal`.
#[cfg(target_arch = "x86_64")]
const LINUX_ZONE_ENDS: &[u64] = &[1 << 12, 1 << 20, u64::MAX];
#[cfg(target_arch = "aarch64")]
const LINUX_ZONE_ENDS: &[u64] = &[1 << 20, u64::MAX];

/// How many of Linux's zones this RAM's span populates (x86 under QEMU:
/// `DMA` and `DMA32`, so 2; arm64 `virt` below 4 GiB: 1), which
/// khugepaged's recommendation multiplies by.
fn linux_populated_zones() -> u64 {
    let mm = buddy().memmap();
    let (start, end) = (mm.base_pfn(), mm.end_pfn());
    let mut lo = 0;
    let mut n = 0;
    for &hi in LINUX_ZONE_ENDS {
        if start < hi && end > lo {
            n += 1;
        }
        lo = hi;
    }
    n
}

/// A THP `enabled` knob changed (or boot): khugepaged's
/// `set_recommended_min_free_kbytes`, then new watermarks.
pub fn thp_changed() {
    VM_SYSCTL.thp_recalculate(
        hugepage_pmd_enabled(),
        linux_populated_zones(),
        free_buffer_pages(),
    );
    setup_per_zone_wmarks();
}

/// Boot: the default for all managed memory (`init_per_zone_wmark_min`),
/// then khugepaged's start-up raise.
pub fn init() {
    VM_SYSCTL.calculate(managed() * 4);
    setup_per_zone_wmarks();
    thp_changed();
    crate::info!(
        "watermarks: min_free_kbytes {} min {} low {} high {} pages",
        VM_SYSCTL.min_free_kbytes(),
        buddy().watermark(Wmark::Min),
        buddy().watermark(Wmark::Low),
        buddy().watermark(Wmark::High)
    );
}

/// A write to `/proc/sys/vm/<knob>`.
pub fn sysctl_write(knob: VmKnob, s: &str) -> Result<(), Errno> {
    VM_SYSCTL.write(knob, s)?;
    match knob {
        VmKnob::CompactMemory => {
            crate::mem::compact::compact_memory();
        }
        VmKnob::CompactionProactiveness => crate::mem::compact::proactiveness_changed(),
        _ => {}
    }
    if knob.affects_watermarks() {
        setup_per_zone_wmarks();
    }
    Ok(())
}

/// `/proc/zoneinfo` in Linux's layout, one zone per node: the header,
/// watermarks and sizes, `protection` (no zone above it, so no reserve),
/// the per-zone counters (those this kernel has no use for are truly 0),
/// `node_unreclaimable` and `start_pfn`.  Not printed (yet): the
/// per-node stats block Linux puts before the first zone's `pages free`,
/// the per-CPU `pagesets`, and Linux's unpopulated zones.  The LRU and
/// the mlock count are kept for all nodes together, so node 0's section
/// shows them and the other nodes' show 0 (the sums are right).
pub fn zoneinfo() -> String {
    let b = buddy();
    let mm = b.memmap();
    let nodes = b.nodes();
    let managed = node_managed();
    let wm: alloc::vec::Vec<_> = VM_SYSCTL.node_watermarks(&managed).collect();
    let lru = crate::mem::uspace::ctx().lru_counts();
    let mut s = String::new();
    for (n, w) in wm.iter().enumerate() {
        let single = nodes.nr_nodes() == 1;
        let (node_managed, node_reserved) = b.node_managed(n);
        let free = b.node_free(n);
        let (first, spanned, present) = if single {
            (
                mm.base_pfn(),
                mm.end_pfn() - mm.base_pfn(),
                boot_ram_frames(),
            )
        } else {
            let r = nodes.ranges().iter().filter(|r| r.node as usize == n);
            let first = r.clone().map(|r| r.start_pfn).min().unwrap_or(0);
            let last = r.map(|r| r.end_pfn).max().unwrap_or(0);
            (
                first,
                last.saturating_sub(first),
                node_managed + node_reserved,
            )
        };
        let (mlocked, inactive, active) = if n == 0 {
            (
                b.mlocked_pages(),
                lru.inactive_pages + lru.batched_pages,
                lru.active_pages,
            )
        } else {
            (0, 0, 0)
        };
        let numa = b.numa_stat(n);
        let _ = write!(s, "Node {n}, zone {ZONE_NAME:>8}");
        let rows: [(&str, u64); 10] = [
            ("pages free", free),
            ("boost", 0),
            ("min", w.min),
            ("low", w.low),
            ("high", w.high),
            ("promo", w.promo),
            ("spanned", spanned),
            ("present", present),
            ("managed", node_managed),
            ("cma", 0),
        ];
        for (i, (k, v)) in rows.iter().enumerate() {
            let indent = if i == 0 { "  " } else { "        " };
            let width = if i == 0 { 15 } else { 9 };
            let _ = write!(s, "\n{indent}{k:<width$}{v}");
        }
        s.push_str("\n        protection: (0, 0, 0, 0, 0)");
        let counters: [(&str, u64); 18] = [
            ("nr_free_pages", free),
            ("nr_zone_inactive_anon", inactive),
            ("nr_zone_active_anon", active),
            ("nr_zone_inactive_file", 0),
            ("nr_zone_active_file", 0),
            ("nr_zone_unevictable", mlocked),
            ("nr_zone_write_pending", 0),
            ("nr_mlock", mlocked),
            ("nr_bounce", 0),
            ("nr_zspages", 0),
            ("nr_free_cma", 0),
            ("nr_unaccepted", 0),
            ("numa_hit", numa.hit),
            ("numa_miss", numa.miss),
            ("numa_foreign", numa.foreign),
            ("numa_interleave", numa.interleave),
            ("numa_local", numa.local),
            ("numa_other", numa.other),
        ];
        for (k, v) in counters {
            let _ = write!(s, "\n      {k:<12} {v}");
        }
        let _ = write!(
            s,
            "\n  node_unreclaimable:  0\n  start_pfn:           {first}\n"
        );
    }
    s
}
