//! The zone's watermarks and the `vm.*` sysctls that steer memory
//! pressure, computed as Linux 6.12 does (mm/page_alloc.c,
//! mm/khugepaged.c), so that a program that reads `/proc/zoneinfo` or
//! `/proc/sys/vm/min_free_kbytes` sees the numbers Linux would show for the
//! same amount of memory.
//!
//! This kernel has one zone.  Linux puts the RAM of a small guest in
//! `DMA32` (x86_64: everything under 4 GiB besides the first 16 MiB, which
//! is `DMA`; arm64 `virt`: RAM starts at 1 GiB, all of it below 4 GiB, so
//! it is all `DMA`, the zone arm64 uses for the 32-bit-addressable range).
//! The watermarks of the one zone are those of Linux's zones added up
//! (its `min` is all of `min_free_kbytes`).  The THP recommendation is per
//! populated zone, so the kernel passes how many zones Linux would
//! populate with the same RAM (x86: `DMA` for the first 16 MiB plus
//! `DMA32`, so 2), and `min_free_kbytes` reads as on Linux.
//!
//! The computations are pure functions (host-tested); [`VmSysctl`] holds
//! the tunables and the pinned value, and the kernel applies the result
//! with `BuddyAllocator::set_watermarks`.
use crate::abi::errno::Errno;
use crate::physmem::compaction::{
    EXTFRAG_THRESHOLD_DEFAULT, EXTFRAG_THRESHOLD_MAX, PROACTIVENESS_DEFAULT, PROACTIVENESS_MAX,
};
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Linux's clamp of the computed default (`calculate_min_free_kbytes`).
pub const MIN_FREE_KBYTES_FLOOR: u64 = 128;
pub const MIN_FREE_KBYTES_CEIL: u64 = 262_144;
/// `watermark_scale_factor` default and range (0.1% of the zone).
pub const WATERMARK_SCALE_FACTOR_DEFAULT: u64 = 10;
pub const WATERMARK_SCALE_FACTOR_MAX: u64 = 3000;
/// `vm.swappiness`: default and the upper end (anon reclaim preferred).
pub const SWAPPINESS_DEFAULT: u64 = 60;
pub const SWAPPINESS_MAX: u64 = 200;
/// `vm.page-cluster`: log2 of the swap readahead window.
pub const PAGE_CLUSTER_DEFAULT: u64 = 3;
pub const PAGE_CLUSTER_MAX: u64 = 31;
/// Pages in a pageblock (order 9 with 4 KiB pages on both arches).
pub const PAGEBLOCK_NR_PAGES: u64 = 512;
/// Page types with per-CPU lists (`MIGRATE_PCPTYPES`: unmovable,
/// movable, reclaimable), which the THP recommendation squares.
const MIGRATE_PCPTYPES: u64 = 3;

/// Integer square root (floor), as the kernel's `int_sqrt`.
fn int_sqrt(x: u64) -> u64 {
    if x < 2 {
        return x;
    }
    // Newton's method from above (no floating point in `no_std`).
    let mut r = x;
    let mut y = x.div_ceil(2);
    while y < r {
        r = y;
        y = (r + x / r) / 2;
    }
    // Settle the last step either way.
    while r.checked_mul(r).is_none_or(|s| s > x) {
        r -= 1;
    }
    while (r + 1).checked_mul(r + 1).is_some_and(|s| s <= x) {
        r += 1;
    }
    r
}

/// The default `min_free_kbytes` for `lowmem_kb` KiB of low memory:
/// `sqrt(lowmem_kb * 16)` clamped to 128..262144 (so it grows with the
/// square root of RAM: 128 MiB → 1448 KiB, 1 GiB → 4096 KiB).
pub fn default_min_free_kbytes(lowmem_kb: u64) -> u64 {
    int_sqrt(lowmem_kb.saturating_mul(16)).clamp(MIN_FREE_KBYTES_FLOOR, MIN_FREE_KBYTES_CEIL)
}

/// What khugepaged asks for when the PMD size is enabled
/// (`set_recommended_min_free_kbytes`), in KiB: enough free pageblocks
/// that anti-fragmentation can keep huge pages allocatable — two per zone
/// plus one per pair of per-CPU page types — but never more than 5% of
/// `lowmem_pages` (the free-buffer pages: managed minus the high mark).
pub fn thp_recommended_min_free_kbytes(nr_zones: u64, lowmem_pages: u64) -> u64 {
    let want = PAGEBLOCK_NR_PAGES * nr_zones * (2 + MIGRATE_PCPTYPES * MIGRATE_PCPTYPES);
    want.min(lowmem_pages / 20) * 4
}

/// One zone's watermarks in pages (Linux's `_watermark[]` plus `promo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermarks {
    pub min: u64,
    pub low: u64,
    pub high: u64,
    pub promo: u64,
}

/// `__setup_per_zone_wmarks` for a single lowmem zone holding all of
/// `managed` pages: `min` is the whole of `min_free_kbytes` in pages; the
/// gap to `low`, `high` and `promo` is a quarter of `min` or
/// `scale_factor`/10000 of the zone, whichever is larger (so large zones
/// get kswapd going earlier than `min_free_kbytes` alone would).
pub fn zone_watermarks(min_free_kbytes: u64, managed: u64, scale_factor: u64) -> Watermarks {
    let min = min_free_kbytes / 4;
    let gap = (min / 4).max(managed.saturating_mul(scale_factor) / 10_000);
    Watermarks {
        min,
        low: min + gap,
        high: min + 2 * gap,
        promo: min + 3 * gap,
    }
}

/// `__setup_per_zone_wmarks` over one lowmem zone per NUMA node, whose
/// managed pages are `managed`: each zone's `min` is its share of
/// `min_free_kbytes` in proportion to its managed pages (rounded down, as
/// Linux), and its gap is a quarter of that or `scale_factor`/10000 of
/// the zone itself.  With one zone this is [`zone_watermarks`].
pub fn node_zone_watermarks(
    min_free_kbytes: u64,
    managed: &[u64],
    scale_factor: u64,
) -> impl Iterator<Item = Watermarks> + '_ {
    let pages_min = min_free_kbytes / 4;
    let total: u64 = managed.iter().sum();
    managed.iter().map(move |&m| {
        let min = if total == 0 {
            0
        } else {
            (u128::from(pages_min) * u128::from(m) / u128::from(total)) as u64
        };
        let gap = (min / 4).max(m.saturating_mul(scale_factor) / 10_000);
        Watermarks {
            min,
            low: min + gap,
            high: min + 2 * gap,
            promo: min + 3 * gap,
        }
    })
}

/// The `vm.*` sysctls this kernel has, each with its range as Linux's
/// `proc_dointvec_minmax` enforces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmKnob {
    MinFreeKbytes,
    WatermarkScaleFactor,
    Swappiness,
    PageCluster,
    /// `compact_memory`: write-only; `1` compacts every zone.
    CompactMemory,
    /// `compact_unevictable_allowed` (0/1): compaction may move mlocked
    /// folios.
    CompactUnevictableAllowed,
    /// `compaction_proactiveness` (0..100): kcompactd's proactive score
    /// thresholds.
    CompactionProactiveness,
    /// `extfrag_threshold` (0..1000): compaction skips an order whose
    /// fragmentation index is at or below it.
    ExtfragThreshold,
}

impl VmKnob {
    /// Every knob, with its file name under `/proc/sys/vm/` (sorted, as
    /// `ls` shows them).
    pub const ALL: [(&'static str, VmKnob); 8] = [
        ("compact_memory", VmKnob::CompactMemory),
        (
            "compact_unevictable_allowed",
            VmKnob::CompactUnevictableAllowed,
        ),
        ("compaction_proactiveness", VmKnob::CompactionProactiveness),
        ("extfrag_threshold", VmKnob::ExtfragThreshold),
        ("min_free_kbytes", VmKnob::MinFreeKbytes),
        ("page-cluster", VmKnob::PageCluster),
        ("swappiness", VmKnob::Swappiness),
        ("watermark_scale_factor", VmKnob::WatermarkScaleFactor),
    ];

    /// The knob of file `name`.
    pub fn from_name(name: &str) -> Option<VmKnob> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    /// Inclusive range of accepted values.
    fn range(self) -> (i64, i64) {
        match self {
            VmKnob::MinFreeKbytes => (0, i32::MAX as i64),
            VmKnob::WatermarkScaleFactor => (1, WATERMARK_SCALE_FACTOR_MAX as i64),
            VmKnob::Swappiness => (0, SWAPPINESS_MAX as i64),
            VmKnob::PageCluster => (0, PAGE_CLUSTER_MAX as i64),
            // Linux's `proc_dointvec` without bounds; values other than 1
            // are stored, then refused (see `VmSysctl::write`).
            VmKnob::CompactMemory => (i32::MIN as i64, i32::MAX as i64),
            VmKnob::CompactUnevictableAllowed => (0, 1),
            VmKnob::CompactionProactiveness => (0, PROACTIVENESS_MAX as i64),
            VmKnob::ExtfragThreshold => (0, EXTFRAG_THRESHOLD_MAX as i64),
        }
    }

    /// The file's mode bits: `compact_memory` is write-only (0200, so
    /// even root's read is refused), the rest 0644.
    pub fn mode(self) -> u32 {
        match self {
            VmKnob::CompactMemory => 0o200,
            _ => 0o644,
        }
    }

    /// Whether a write changes the watermarks.
    pub fn affects_watermarks(self) -> bool {
        matches!(self, VmKnob::MinFreeKbytes | VmKnob::WatermarkScaleFactor)
    }
}

/// One integer as `proc_dointvec` reads it: leading blanks, an optional
/// `-`, digits in base 0 (`0x` hex, leading-`0` octal, else decimal), then
/// only blanks/newline; anything else, or a value outside `int`, is
/// EINVAL.
pub fn parse_dointvec(s: &str) -> Result<i64, Errno> {
    let t = s.trim_start_matches([' ', '\t', '\n']);
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    // What follows the number up to a blank must be part of it; after a
    // blank, anything is ignored (a one-`int` table takes one value).
    let num = t.split([' ', '\t', '\n']).next().unwrap_or("");
    let (digits, radix) = if let Some(h) = num.strip_prefix("0x").or_else(|| num.strip_prefix("0X"))
    {
        (h, 16)
    } else if num.len() > 1 && num.starts_with('0') {
        (&num[1..], 8)
    } else {
        (num, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(Errno::EINVAL);
    }
    let v = i64::from_str_radix(digits, radix).map_err(|_| Errno::EINVAL)?;
    let v = if neg { -v } else { v };
    if v < i32::MIN as i64 || v > i32::MAX as i64 {
        return Err(Errno::EINVAL);
    }
    Ok(v)
}

/// The tunables and what the watermarks were computed from.
#[derive(Debug)]
pub struct VmSysctl {
    min_free_kbytes: AtomicU64,
    /// The value last written to `min_free_kbytes` (-1: never written).
    /// Recalculations may raise `min_free_kbytes` above it, never lower
    /// it below (Linux's `user_min_free_kbytes`).
    user_min_free_kbytes: AtomicI64,
    watermark_scale_factor: AtomicU64,
    swappiness: AtomicU64,
    page_cluster: AtomicU64,
    compact_memory: AtomicI64,
    compact_unevictable_allowed: AtomicU64,
    compaction_proactiveness: AtomicU64,
    extfrag_threshold: AtomicU64,
}

impl Default for VmSysctl {
    fn default() -> Self {
        Self::new()
    }
}

impl VmSysctl {
    /// Linux's defaults; `min_free_kbytes` is set by [`Self::calculate`].
    pub const fn new() -> Self {
        VmSysctl {
            min_free_kbytes: AtomicU64::new(0),
            user_min_free_kbytes: AtomicI64::new(-1),
            watermark_scale_factor: AtomicU64::new(WATERMARK_SCALE_FACTOR_DEFAULT),
            swappiness: AtomicU64::new(SWAPPINESS_DEFAULT),
            page_cluster: AtomicU64::new(PAGE_CLUSTER_DEFAULT),
            compact_memory: AtomicI64::new(0),
            compact_unevictable_allowed: AtomicU64::new(1),
            compaction_proactiveness: AtomicU64::new(PROACTIVENESS_DEFAULT as u64),
            extfrag_threshold: AtomicU64::new(EXTFRAG_THRESHOLD_DEFAULT as u64),
        }
    }

    pub fn min_free_kbytes(&self) -> u64 {
        self.min_free_kbytes.load(Relaxed)
    }

    pub fn watermark_scale_factor(&self) -> u64 {
        self.watermark_scale_factor.load(Relaxed)
    }

    /// `vm.swappiness`: how much reclaim prefers anon over file pages
    /// (0..200); read by reclaim.
    pub fn swappiness(&self) -> u64 {
        self.swappiness.load(Relaxed)
    }

    /// `vm.page-cluster`: swap readahead is `1 << page_cluster` pages.
    pub fn page_cluster(&self) -> u64 {
        self.page_cluster.load(Relaxed)
    }

    /// `vm.compact_unevictable_allowed`.
    pub fn compact_unevictable_allowed(&self) -> bool {
        self.compact_unevictable_allowed.load(Relaxed) != 0
    }

    /// `vm.compaction_proactiveness`.
    pub fn compaction_proactiveness(&self) -> u32 {
        self.compaction_proactiveness.load(Relaxed) as u32
    }

    /// `vm.extfrag_threshold`.
    pub fn extfrag_threshold(&self) -> u32 {
        self.extfrag_threshold.load(Relaxed) as u32
    }

    /// `calculate_min_free_kbytes`: the default for `lowmem_kb`, applied
    /// only when it is above what the user wrote.
    pub fn calculate(&self, lowmem_kb: u64) {
        let new = default_min_free_kbytes(lowmem_kb);
        if new as i64 > self.user_min_free_kbytes.load(Relaxed) {
            self.min_free_kbytes.store(new, Relaxed);
        }
    }

    /// khugepaged's recommendation (`thp_recommended_min_free_kbytes`)
    /// when the PMD size is enabled, applied only if larger; when it is
    /// not enabled, the default again ([`Self::calculate`]).  Returns the
    /// resulting value.
    /// `nr_zones` is how many zones Linux would populate with this RAM
    /// (the recommendation is per zone; see the module doc).
    pub fn thp_recalculate(&self, pmd_enabled: bool, nr_zones: u64, lowmem_pages: u64) -> u64 {
        if pmd_enabled {
            let rec = thp_recommended_min_free_kbytes(nr_zones, lowmem_pages);
            self.min_free_kbytes.fetch_max(rec, Relaxed);
        } else {
            self.calculate(lowmem_pages * 4);
        }
        self.min_free_kbytes()
    }

    /// The zone's watermarks for `managed` pages from the current values.
    /// [`node_zone_watermarks`] with the current sysctls.
    pub fn node_watermarks<'a>(&self, managed: &'a [u64]) -> impl Iterator<Item = Watermarks> + 'a {
        node_zone_watermarks(
            self.min_free_kbytes(),
            managed,
            self.watermark_scale_factor(),
        )
    }

    pub fn watermarks(&self, managed: u64) -> Watermarks {
        zone_watermarks(
            self.min_free_kbytes(),
            managed,
            self.watermark_scale_factor(),
        )
    }

    /// The text of `/proc/sys/vm/<knob>`.
    pub fn read(&self, knob: VmKnob) -> alloc::string::String {
        let v = match knob {
            VmKnob::MinFreeKbytes => self.min_free_kbytes(),
            VmKnob::WatermarkScaleFactor => self.watermark_scale_factor(),
            VmKnob::Swappiness => self.swappiness(),
            VmKnob::PageCluster => self.page_cluster(),
            VmKnob::CompactMemory => {
                return alloc::format!("{}\n", self.compact_memory.load(Relaxed));
            }
            VmKnob::CompactUnevictableAllowed => self.compact_unevictable_allowed.load(Relaxed),
            VmKnob::CompactionProactiveness => self.compaction_proactiveness.load(Relaxed),
            VmKnob::ExtfragThreshold => self.extfrag_threshold.load(Relaxed),
        };
        alloc::format!("{v}\n")
    }

    /// A write to `/proc/sys/vm/<knob>`: one integer in the knob's range
    /// (EINVAL otherwise, nothing changed).  Writing `min_free_kbytes`
    /// pins it.  The caller recomputes the watermarks when
    /// [`VmKnob::affects_watermarks`], and compacts after a successful
    /// write to `compact_memory`, which stores any integer but accepts
    /// only `1` (EINVAL otherwise, the value kept, as Linux).
    pub fn write(&self, knob: VmKnob, s: &str) -> Result<(), Errno> {
        let v = parse_dointvec(s)?;
        let (lo, hi) = knob.range();
        if v < lo || v > hi {
            return Err(Errno::EINVAL);
        }
        if knob == VmKnob::CompactMemory {
            self.compact_memory.store(v, Relaxed);
            return if v == 1 { Ok(()) } else { Err(Errno::EINVAL) };
        }
        let v = v as u64;
        match knob {
            VmKnob::MinFreeKbytes => {
                self.min_free_kbytes.store(v, Relaxed);
                self.user_min_free_kbytes.store(v as i64, Relaxed);
            }
            VmKnob::WatermarkScaleFactor => self.watermark_scale_factor.store(v, Relaxed),
            VmKnob::Swappiness => self.swappiness.store(v, Relaxed),
            VmKnob::PageCluster => self.page_cluster.store(v, Relaxed),
            VmKnob::CompactUnevictableAllowed => self.compact_unevictable_allowed.store(v, Relaxed),
            VmKnob::CompactionProactiveness => self.compaction_proactiveness.store(v, Relaxed),
            VmKnob::ExtfragThreshold => self.extfrag_threshold.store(v, Relaxed),
            VmKnob::CompactMemory => {}
        }
        Ok(())
    }
}

/// The kernel's tunables.
pub static VM_SYSCTL: VmSysctl = VmSysctl::new();

#[cfg(test)]
mod tests;
