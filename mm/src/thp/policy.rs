//! THP policy: the runtime knobs and the order-resolution rule.
//!
//! The knobs mirror `/sys/kernel/mm/transparent_hugepage/` (see
//! [`super::registry`]); the rule that turns them into a set of folio
//! orders for one VMA mirrors Linux's `thp_vma_allowable_orders`.
//!
//! # Concurrency
//!
//! Every knob is an atomic, so readers (the fault path on every CPU) never
//! take a lock.  The global `enabled` mode and all per-size settings are
//! packed into **one** `AtomicU32` (the *policy word*) so that a fault reads
//! a consistent snapshot with a single load: Linux keeps three separate
//! bitmaps and can observe a half-applied update; one word cannot.  Writers
//! update the word with a compare-and-swap loop, so concurrent writers of
//! different sizes never lose each other's change and no writer lock is
//! needed (there is therefore no lock to order against other `mm` locks).
//! Scalar knobs are independent single atomics.  Every successful change
//! bumps [`ThpConfig::generation`], which khugepaged polls to notice that it
//! must re-evaluate whether to run or wake early (Linux's
//! `start_stop_khugepaged` / `wake_up_interruptible(&khugepaged_wait)`).

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::addr::{PAGE_SHIFT, PMD_ORDER, align_down};

/// Smallest anonymous mTHP order (16 KiB).  Order 1 is never used for
/// anonymous memory: Linux needs the third page's metadata for the deferred
/// split list, and we keep its rule so behaviour matches.
pub const THP_MIN_ORDER: u32 = 2;
/// Largest anonymous THP order: one PMD (2 MiB).
pub const THP_MAX_ORDER: u32 = PMD_ORDER;
/// Bitmask of every order a per-size knob exists for (orders 2..=9).
pub const THP_ORDERS_ALL_ANON: u32 = ((1 << (THP_MAX_ORDER + 1)) - 1) & !0b11;

/// Number of PTEs one PMD maps; bounds the `max_ptes_*` knobs.
pub const HPAGE_PMD_NR: u32 = 1 << PMD_ORDER;

/// Size in bytes of a folio of `order`.
#[inline]
pub const fn order_size(order: u32) -> u64 {
    1u64 << (PAGE_SHIFT + order)
}

/// Size in KiB of a folio of `order` (the number in `hugepages-<n>kB`).
#[inline]
pub const fn order_size_kb(order: u32) -> u64 {
    order_size(order) >> 10
}

/// The anonymous THP order whose folio is exactly `bytes` long, if any.
pub const fn order_from_size(bytes: u64) -> Option<u32> {
    if !bytes.is_power_of_two() || bytes < order_size(THP_MIN_ORDER) {
        return None;
    }
    let order = bytes.trailing_zeros() - PAGE_SHIFT;
    if order > THP_MAX_ORDER {
        None
    } else {
        Some(order)
    }
}

/// Iterate the orders in `mask` from the highest down, the order in which
/// the fault path tries them.
pub fn orders_high_to_low(mask: u32) -> impl Iterator<Item = u32> {
    // Visits only the set bits (this runs on every fault).
    let mut rest = mask;
    core::iter::from_fn(move || {
        let o = 31u32.checked_sub(rest.leading_zeros())?;
        rest &= !(1 << o);
        Some(o)
    })
}

/// The global `enabled` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalMode {
    /// THP for every eligible VMA.
    Always,
    /// THP only in `MADV_HUGEPAGE` regions.
    Madvise,
    /// No THP from faults (`MADV_COLLAPSE` still works).
    Never,
}

impl GlobalMode {
    /// Words in the order Linux prints them.
    pub const WORDS: [&'static str; 3] = ["always", "madvise", "never"];

    /// This mode's sysfs word.
    pub const fn word(self) -> &'static str {
        match self {
            GlobalMode::Always => "always",
            GlobalMode::Madvise => "madvise",
            GlobalMode::Never => "never",
        }
    }

    /// Parse an exact word (no newline handling; see the registry for that).
    pub fn from_word(w: &str) -> Option<Self> {
        match w {
            "always" => Some(GlobalMode::Always),
            "madvise" => Some(GlobalMode::Madvise),
            "never" => Some(GlobalMode::Never),
            _ => None,
        }
    }

    const fn code(self) -> u32 {
        match self {
            GlobalMode::Always => 0,
            GlobalMode::Madvise => 1,
            GlobalMode::Never => 2,
        }
    }

    const fn from_code(c: u32) -> Self {
        match c {
            0 => GlobalMode::Always,
            1 => GlobalMode::Madvise,
            _ => GlobalMode::Never,
        }
    }
}

/// A per-size (`hugepages-<size>kB/enabled`) setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderMode {
    /// Use this size for every eligible VMA.
    Always,
    /// Follow the global `enabled` mode.
    Inherit,
    /// Use this size only in `MADV_HUGEPAGE` regions.
    Madvise,
    /// Never use this size at fault time.
    Never,
}

impl OrderMode {
    /// Words in the order Linux prints them for per-size files.
    pub const WORDS: [&'static str; 4] = ["always", "inherit", "madvise", "never"];

    /// This setting's sysfs word.
    pub const fn word(self) -> &'static str {
        match self {
            OrderMode::Always => "always",
            OrderMode::Inherit => "inherit",
            OrderMode::Madvise => "madvise",
            OrderMode::Never => "never",
        }
    }

    /// Parse an exact word.
    pub fn from_word(w: &str) -> Option<Self> {
        match w {
            "always" => Some(OrderMode::Always),
            "inherit" => Some(OrderMode::Inherit),
            "madvise" => Some(OrderMode::Madvise),
            "never" => Some(OrderMode::Never),
            _ => None,
        }
    }

    // `Never` is code 0 so that an all-zero word means "no size enabled".
    const fn code(self) -> u32 {
        match self {
            OrderMode::Never => 0,
            OrderMode::Always => 1,
            OrderMode::Inherit => 2,
            OrderMode::Madvise => 3,
        }
    }

    const fn from_code(c: u32) -> Self {
        match c & 3 {
            1 => OrderMode::Always,
            2 => OrderMode::Inherit,
            3 => OrderMode::Madvise,
            _ => OrderMode::Never,
        }
    }
}

/// The global `defrag` mode: how hard a THP allocation may work (direct
/// reclaim/compaction vs. waking the background daemons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefragMode {
    /// Stall for direct reclaim and compaction on every THP allocation.
    Always,
    /// Wake kswapd/kcompactd and fail fast.
    Defer,
    /// Stall in `MADV_HUGEPAGE` regions, defer elsewhere.
    DeferMadvise,
    /// Stall only in `MADV_HUGEPAGE` regions (Linux's default).
    Madvise,
    /// Never stall or wake anything.
    Never,
}

impl DefragMode {
    /// Words in the order Linux prints them.
    pub const WORDS: [&'static str; 5] = ["always", "defer", "defer+madvise", "madvise", "never"];

    /// This mode's sysfs word.
    pub const fn word(self) -> &'static str {
        Self::WORDS[self as usize]
    }

    /// Parse an exact word.
    pub fn from_word(w: &str) -> Option<Self> {
        match w {
            "always" => Some(DefragMode::Always),
            "defer" => Some(DefragMode::Defer),
            "defer+madvise" => Some(DefragMode::DeferMadvise),
            "madvise" => Some(DefragMode::Madvise),
            "never" => Some(DefragMode::Never),
            _ => None,
        }
    }

    const fn from_code(c: u8) -> Self {
        match c {
            0 => DefragMode::Always,
            1 => DefragMode::Defer,
            2 => DefragMode::DeferMadvise,
            3 => DefragMode::Madvise,
            _ => DefragMode::Never,
        }
    }
}

/// The khugepaged tunables (`khugepaged/*`), each an independent atomic.
#[derive(Debug)]
pub struct KhugepagedKnobs {
    /// `defrag`: 1 lets khugepaged allocations reclaim/compact.
    pub defrag: AtomicBool,
    /// `pages_to_scan`: PTEs (plus skipped PMDs/VMAs) per pass; never 0.
    pub pages_to_scan: AtomicU32,
    /// `scan_sleep_millisecs`: sleep between passes.
    pub scan_sleep_millisecs: AtomicU32,
    /// `alloc_sleep_millisecs`: sleep after an allocation failure.
    pub alloc_sleep_millisecs: AtomicU32,
    /// `max_ptes_none`: empty/zero-page PTEs tolerated in a PMD collapse.
    pub max_ptes_none: AtomicU32,
    /// `max_ptes_swap`: swap PTEs tolerated (they would be swapped in).
    pub max_ptes_swap: AtomicU32,
    /// `max_ptes_shared`: PTEs of maybe-shared folios tolerated.
    pub max_ptes_shared: AtomicU32,
}

/// Linux's khugepaged defaults.
pub mod khugepaged_defaults {
    /// `khugepaged/defrag`.
    pub const DEFRAG: bool = true;
    /// `khugepaged/pages_to_scan` (8 × 512).
    pub const PAGES_TO_SCAN: u32 = 8 * super::HPAGE_PMD_NR;
    /// `khugepaged/scan_sleep_millisecs`.
    pub const SCAN_SLEEP_MILLISECS: u32 = 10_000;
    /// `khugepaged/alloc_sleep_millisecs`.
    pub const ALLOC_SLEEP_MILLISECS: u32 = 60_000;
    /// `khugepaged/max_ptes_none` (HPAGE_PMD_NR − 1).
    pub const MAX_PTES_NONE: u32 = super::HPAGE_PMD_NR - 1;
    /// `khugepaged/max_ptes_swap` (HPAGE_PMD_NR / 8).
    pub const MAX_PTES_SWAP: u32 = super::HPAGE_PMD_NR / 8;
    /// `khugepaged/max_ptes_shared` (HPAGE_PMD_NR / 2).
    pub const MAX_PTES_SHARED: u32 = super::HPAGE_PMD_NR / 2;
}

impl KhugepagedKnobs {
    const fn new() -> Self {
        use khugepaged_defaults as d;
        KhugepagedKnobs {
            defrag: AtomicBool::new(d::DEFRAG),
            pages_to_scan: AtomicU32::new(d::PAGES_TO_SCAN),
            scan_sleep_millisecs: AtomicU32::new(d::SCAN_SLEEP_MILLISECS),
            alloc_sleep_millisecs: AtomicU32::new(d::ALLOC_SLEEP_MILLISECS),
            max_ptes_none: AtomicU32::new(d::MAX_PTES_NONE),
            max_ptes_swap: AtomicU32::new(d::MAX_PTES_SWAP),
            max_ptes_shared: AtomicU32::new(d::MAX_PTES_SHARED),
        }
    }
}

/// VMA-level THP hints, from `MADV_HUGEPAGE` / `MADV_NOHUGEPAGE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaThpHints {
    /// `VM_HUGEPAGE`: the VMA was `MADV_HUGEPAGE`d.
    pub hugepage: bool,
    /// `VM_NOHUGEPAGE`: the VMA was `MADV_NOHUGEPAGE`d (or `MAP_STACK`).
    pub nohugepage: bool,
}

/// A consistent copy of the global mode and every per-size setting, taken
/// with one atomic load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicySnapshot(u32);

impl PolicySnapshot {
    const GLOBAL_MASK: u32 = 0b11;

    /// The global `enabled` mode.
    pub const fn global(self) -> GlobalMode {
        GlobalMode::from_code(self.0 & Self::GLOBAL_MASK)
    }

    /// The per-size setting for `order`; `Never` for orders without a knob.
    pub const fn order(self, order: u32) -> OrderMode {
        if order < THP_MIN_ORDER || order > THP_MAX_ORDER {
            return OrderMode::Never;
        }
        OrderMode::from_code(self.0 >> (2 * order))
    }

    /// Orders whose per-size setting is `mode`.
    pub fn orders_with(self, mode: OrderMode) -> u32 {
        // Branch-free (this runs on every fault): XOR with the mode's code
        // copied into every 2-bit field leaves 0 exactly in the fields equal
        // to it; keep one bit per such field (bit 2o), then gather bit 2o
        // to bit o.
        const LOW: u32 = 0x5555_5555;
        let x = self.0 ^ (mode.code() * LOW);
        let mut m = !(x | (x >> 1)) & LOW;
        m = (m | (m >> 1)) & 0x3333_3333;
        m = (m | (m >> 2)) & 0x0f0f_0f0f;
        m = (m | (m >> 4)) & 0x00ff_00ff;
        m = (m | (m >> 8)) & 0x0000_ffff;
        m & ((1 << (THP_MAX_ORDER + 1)) - 1) & !((1 << THP_MIN_ORDER) - 1)
    }

    const fn with_global(self, g: GlobalMode) -> Self {
        PolicySnapshot((self.0 & !Self::GLOBAL_MASK) | g.code())
    }

    const fn with_order(self, order: u32, m: OrderMode) -> Self {
        let shift = 2 * order;
        PolicySnapshot((self.0 & !(0b11 << shift)) | (m.code() << shift))
    }

    /// Linux's defaults: global `always` (upstream's Kconfig default,
    /// `CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS`), PMD size `inherit`, every
    /// other size `never`.
    pub const fn linux_default() -> Self {
        PolicySnapshot(0)
            .with_global(GlobalMode::Always)
            .with_order(PMD_ORDER, OrderMode::Inherit)
    }

    /// Orders THP may use in a VMA with these hints (Linux's
    /// `thp_vma_allowable_orders` for an anonymous VMA):
    /// `always` ∪ (`madvise` if `VM_HUGEPAGE`) ∪ (`inherit` if the global
    /// mode is `always`, or `madvise` and `VM_HUGEPAGE`), and nothing at all
    /// under `VM_NOHUGEPAGE`.
    pub fn allowable_orders(self, hints: VmaThpHints) -> u32 {
        if hints.nohugepage {
            return 0;
        }
        let mut mask = self.orders_with(OrderMode::Always);
        if hints.hugepage {
            mask |= self.orders_with(OrderMode::Madvise);
        }
        let inherit_on = match self.global() {
            GlobalMode::Always => true,
            GlobalMode::Madvise => hints.hugepage,
            GlobalMode::Never => false,
        };
        if inherit_on {
            mask |= self.orders_with(OrderMode::Inherit);
        }
        mask
    }

    /// Whether khugepaged has work to do under this policy: some size is
    /// `always` or `madvise`, or some size `inherit`s a global mode other
    /// than `never` (Linux ≥ 6.x with mTHP collapse; `MADV_COLLAPSE` works
    /// regardless).
    pub fn khugepaged_should_run(self) -> bool {
        let direct = self.orders_with(OrderMode::Always) | self.orders_with(OrderMode::Madvise);
        direct != 0
            || (self.orders_with(OrderMode::Inherit) != 0 && self.global() != GlobalMode::Never)
    }
}

/// Keep the orders of `mask` whose naturally aligned block around `addr`
/// lies entirely inside the VMA `[vma_start, vma_end)` (Linux's
/// `thp_vma_suitable_orders` for anonymous memory, where the file-offset
/// alignment check does not apply).
pub fn suitable_orders(mask: u32, vma_start: u64, vma_end: u64, addr: u64) -> u32 {
    let mut out = 0;
    for order in orders_high_to_low(mask) {
        let size = match 1u64.checked_shl(PAGE_SHIFT + order) {
            Some(s) => s,
            None => continue,
        };
        let base = align_down(addr, size);
        if base >= vma_start && base.checked_add(size).is_some_and(|e| e <= vma_end) {
            out |= 1 << order;
        }
    }
    out
}

/// Orders of `mask` for which the VMA `[vma_start, vma_end)` holds a
/// naturally aligned block, as smaps's `THPeligible` asks (Linux checks
/// the last such block, the one ending at or below `vma_end`; for
/// anonymous memory there is no file-offset alignment to check).
pub fn orders_fitting(mask: u32, vma_start: u64, vma_end: u64) -> u32 {
    let mut out = 0;
    for order in orders_high_to_low(mask) {
        let Some(size) = 1u64.checked_shl(PAGE_SHIFT + order) else {
            continue;
        };
        if vma_end >= size && align_down(vma_end - size, size) >= vma_start {
            out |= 1 << order;
        }
    }
    out
}

/// All THP knobs of one kernel instance.  The kernel uses the global
/// [`super::THP`]; host tests build their own so they can run in parallel.
#[derive(Debug)]
pub struct ThpConfig {
    /// Global mode + per-size settings; see [`PolicySnapshot`].
    policy: AtomicU32,
    defrag: AtomicU8,
    use_zero_page: AtomicBool,
    shrink_underused: AtomicBool,
    /// A write to the huge zero PMD allocates a PMD folio (Linux 6.13's
    /// `do_huge_zero_wp_pmd`) instead of splitting it and copying 4K
    /// (Linux 6.12, the reference, and the default).
    huge_zero_wp_alloc: AtomicBool,
    /// The khugepaged tunables.  Fields are public for the daemon to read;
    /// writers should go through the registry (which validates).
    pub khugepaged: KhugepagedKnobs,
    /// Set once a `thp_anon=` boot parameter has been applied: later ones
    /// then add to it instead of starting from "everything never".
    anon_orders_configured: AtomicBool,
    generation: AtomicU64,
}

impl Default for ThpConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ThpConfig {
    /// A configuration holding Linux's defaults.
    pub const fn new() -> Self {
        ThpConfig {
            policy: AtomicU32::new(PolicySnapshot::linux_default().0),
            defrag: AtomicU8::new(DefragMode::Madvise as u8),
            use_zero_page: AtomicBool::new(true),
            shrink_underused: AtomicBool::new(true),
            huge_zero_wp_alloc: AtomicBool::new(false),
            khugepaged: KhugepagedKnobs::new(),
            anon_orders_configured: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    /// One consistent view of `enabled` and every per-size setting.
    #[inline]
    pub fn snapshot(&self) -> PolicySnapshot {
        PolicySnapshot(self.policy.load(Ordering::Acquire))
    }

    /// Orders allowed for a VMA with `hints` (see
    /// [`PolicySnapshot::allowable_orders`]).
    #[inline]
    pub fn allowable_orders(&self, hints: VmaThpHints) -> u32 {
        self.snapshot().allowable_orders(hints)
    }

    /// The global `enabled` mode.
    pub fn global_mode(&self) -> GlobalMode {
        self.snapshot().global()
    }

    /// The per-size setting of `order`.
    pub fn order_mode(&self, order: u32) -> OrderMode {
        self.snapshot().order(order)
    }

    fn update_policy(&self, f: impl Fn(PolicySnapshot) -> PolicySnapshot) {
        // The closure is pure, so retrying it on contention is harmless.
        let _ = self
            .policy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(f(PolicySnapshot(w)).0)
            });
        self.bump();
    }

    /// Set the global `enabled` mode.
    pub fn set_global_mode(&self, m: GlobalMode) {
        self.update_policy(|p| p.with_global(m));
    }

    /// Set the per-size setting for `order`; `false` if there is no knob for
    /// that order (0, 1 or above PMD order).
    pub fn set_order_mode(&self, order: u32, m: OrderMode) -> bool {
        if !(THP_MIN_ORDER..=THP_MAX_ORDER).contains(&order) {
            return false;
        }
        self.update_policy(|p| p.with_order(order, m));
        true
    }

    /// Replace every per-size setting at once (atomically), leaving the
    /// global mode alone.  `modes[o]` is used for orders 2..=9.
    pub fn set_all_order_modes(&self, modes: &[OrderMode; 10]) {
        self.update_policy(|mut p| {
            for o in THP_MIN_ORDER..=THP_MAX_ORDER {
                p = p.with_order(o, modes[o as usize]);
            }
            p
        });
    }

    /// The current per-size settings, indexed by order (0 and 1 read `Never`).
    pub fn order_modes(&self) -> [OrderMode; 10] {
        let p = self.snapshot();
        core::array::from_fn(|o| p.order(o as u32))
    }

    /// `defrag`.
    pub fn defrag(&self) -> DefragMode {
        DefragMode::from_code(self.defrag.load(Ordering::Relaxed))
    }

    /// Set `defrag`.
    pub fn set_defrag(&self, d: DefragMode) {
        self.defrag.store(d as u8, Ordering::Relaxed);
        self.bump();
    }

    /// `use_zero_page`: map the huge zero folio on PMD read faults.
    pub fn use_zero_page(&self) -> bool {
        self.use_zero_page.load(Ordering::Relaxed)
    }

    /// Set `use_zero_page`.
    pub fn set_use_zero_page(&self, on: bool) {
        self.use_zero_page.store(on, Ordering::Relaxed);
        self.bump();
    }

    /// Whether a write to the huge zero PMD allocates a PMD folio (boot
    /// parameter `huge_zero_wp=alloc`, Linux 6.13's behaviour) rather than
    /// splitting the PMD and copying one 4K page (Linux 6.12: the default).
    pub fn huge_zero_wp_alloc(&self) -> bool {
        self.huge_zero_wp_alloc.load(Ordering::Relaxed)
    }

    /// Set [`Self::huge_zero_wp_alloc`].
    pub fn set_huge_zero_wp_alloc(&self, on: bool) {
        self.huge_zero_wp_alloc.store(on, Ordering::Relaxed);
    }

    /// `shrink_underused`: let the deferred-split shrinker split underused
    /// PMD THPs.
    pub fn shrink_underused(&self) -> bool {
        self.shrink_underused.load(Ordering::Relaxed)
    }

    /// Set `shrink_underused`.
    pub fn set_shrink_underused(&self, on: bool) {
        self.shrink_underused.store(on, Ordering::Relaxed);
        self.bump();
    }

    /// Incremented after every successful knob change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn anon_orders_configured(&self) -> bool {
        self.anon_orders_configured.load(Ordering::Acquire)
    }

    pub(super) fn mark_anon_orders_configured(&self) {
        self.anon_orders_configured.store(true, Ordering::Release);
    }

    /// Restore every knob to Linux's defaults (for tests and `reset`).
    pub fn reset(&self) {
        self.policy
            .store(PolicySnapshot::linux_default().0, Ordering::Release);
        self.defrag
            .store(DefragMode::Madvise as u8, Ordering::Relaxed);
        self.use_zero_page.store(true, Ordering::Relaxed);
        self.shrink_underused.store(true, Ordering::Relaxed);
        self.huge_zero_wp_alloc.store(false, Ordering::Relaxed);
        let fresh = KhugepagedKnobs::new();
        let k = &self.khugepaged;
        k.defrag.store(fresh.defrag.into_inner(), Ordering::Relaxed);
        k.pages_to_scan
            .store(fresh.pages_to_scan.into_inner(), Ordering::Relaxed);
        k.scan_sleep_millisecs
            .store(fresh.scan_sleep_millisecs.into_inner(), Ordering::Relaxed);
        k.alloc_sleep_millisecs
            .store(fresh.alloc_sleep_millisecs.into_inner(), Ordering::Relaxed);
        k.max_ptes_none
            .store(fresh.max_ptes_none.into_inner(), Ordering::Relaxed);
        k.max_ptes_swap
            .store(fresh.max_ptes_swap.into_inner(), Ordering::Relaxed);
        k.max_ptes_shared
            .store(fresh.max_ptes_shared.into_inner(), Ordering::Relaxed);
        self.anon_orders_configured.store(false, Ordering::Release);
        self.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// smaps's `THPeligible` size check: some naturally aligned block of an
    /// allowed order lies inside the VMA.
    #[test]
    fn orders_fitting_needs_an_aligned_block() {
        const M2: u64 = 2 << 20;
        const K64: u64 = 64 << 10;
        let both = (1 << 4) | (1 << 9);
        assert_eq!(orders_fitting(both, 0, M2), both);
        assert_eq!(orders_fitting(both, 4096, M2 + 4096), 1 << 4);
        assert_eq!(orders_fitting(both, 4096, 2 * M2), both);
        assert_eq!(orders_fitting(both, K64 + 4096, 2 * K64 + 4096), 0);
        assert_eq!(orders_fitting(both, 0, 60 << 10), 0);
        assert_eq!(orders_fitting(0, 0, 4 * M2), 0);
        assert_eq!(orders_fitting(1 << 9, u64::MAX - M2 + 1, u64::MAX), 0);
    }

    #[test]
    fn orders_with_and_high_to_low_match_naive_forms() {
        let modes = [
            OrderMode::Never,
            OrderMode::Always,
            OrderMode::Inherit,
            OrderMode::Madvise,
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let snap = PolicySnapshot(seed as u32);
            for m in modes {
                let naive = (THP_MIN_ORDER..=THP_MAX_ORDER)
                    .filter(|&o| snap.order(o) == m)
                    .fold(0, |acc, o| acc | (1 << o));
                assert_eq!(snap.orders_with(m), naive, "{snap:?} {m:?}");
            }
            let mask = (seed >> 32) as u32;
            let naive: alloc::vec::Vec<u32> =
                (0..32u32).rev().filter(|o| mask & (1 << o) != 0).collect();
            assert_eq!(
                orders_high_to_low(mask).collect::<alloc::vec::Vec<_>>(),
                naive
            );
        }
    }

    const NONE: VmaThpHints = VmaThpHints {
        hugepage: false,
        nohugepage: false,
    };
    const HUGE: VmaThpHints = VmaThpHints {
        hugepage: true,
        nohugepage: false,
    };
    const NOHUGE: VmaThpHints = VmaThpHints {
        hugepage: false,
        nohugepage: true,
    };

    fn bit(o: u32) -> u32 {
        1 << o
    }

    #[test]
    fn order_helpers() {
        assert_eq!(THP_ORDERS_ALL_ANON, 0b11_1111_1100);
        assert_eq!(order_size_kb(2), 16);
        assert_eq!(order_size_kb(9), 2048);
        assert_eq!(order_from_size(16 << 10), Some(2));
        assert_eq!(order_from_size(64 << 10), Some(4));
        assert_eq!(order_from_size(2 << 20), Some(9));
        for bad in [0, 4096, 8192, 4 << 20, 48 << 10, u64::MAX] {
            assert_eq!(order_from_size(bad), None, "{bad}");
        }
        let v: alloc::vec::Vec<u32> = orders_high_to_low(bit(2) | bit(4) | bit(9)).collect();
        assert_eq!(v, [9, 4, 2]);
    }

    #[test]
    fn defaults_match_linux() {
        let c = ThpConfig::new();
        assert_eq!(c.global_mode(), GlobalMode::Always);
        assert_eq!(c.order_mode(9), OrderMode::Inherit);
        for o in 2..9 {
            assert_eq!(c.order_mode(o), OrderMode::Never);
        }
        assert_eq!(c.order_mode(1), OrderMode::Never);
        assert_eq!(c.defrag(), DefragMode::Madvise);
        assert!(c.use_zero_page());
        assert!(c.shrink_underused());
        let k = &c.khugepaged;
        assert!(k.defrag.load(Ordering::Relaxed));
        assert_eq!(k.pages_to_scan.load(Ordering::Relaxed), 4096);
        assert_eq!(k.scan_sleep_millisecs.load(Ordering::Relaxed), 10000);
        assert_eq!(k.alloc_sleep_millisecs.load(Ordering::Relaxed), 60000);
        assert_eq!(k.max_ptes_none.load(Ordering::Relaxed), 511);
        assert_eq!(k.max_ptes_swap.load(Ordering::Relaxed), 64);
        assert_eq!(k.max_ptes_shared.load(Ordering::Relaxed), 256);
        // Default: only PMD, via inherit + global always, unless NOHUGEPAGE.
        assert_eq!(c.allowable_orders(NONE), bit(9));
        assert_eq!(c.allowable_orders(HUGE), bit(9));
        assert_eq!(c.allowable_orders(NOHUGE), 0);
    }

    /// Table over (global, per-size, hints) → allowed?
    #[test]
    fn order_resolution_table() {
        use GlobalMode as G;
        use OrderMode as O;
        let cases: &[(G, O, VmaThpHints, bool)] = &[
            (G::Always, O::Always, NONE, true),
            (G::Always, O::Always, HUGE, true),
            (G::Always, O::Always, NOHUGE, false),
            (G::Always, O::Inherit, NONE, true),
            (G::Always, O::Inherit, HUGE, true),
            (G::Always, O::Inherit, NOHUGE, false),
            (G::Always, O::Madvise, NONE, false),
            (G::Always, O::Madvise, HUGE, true),
            (G::Always, O::Never, NONE, false),
            (G::Always, O::Never, HUGE, false),
            (G::Madvise, O::Always, NONE, true),
            (G::Madvise, O::Inherit, NONE, false),
            (G::Madvise, O::Inherit, HUGE, true),
            (G::Madvise, O::Inherit, NOHUGE, false),
            (G::Madvise, O::Madvise, NONE, false),
            (G::Madvise, O::Madvise, HUGE, true),
            (G::Madvise, O::Never, HUGE, false),
            (G::Never, O::Always, NONE, true),
            (G::Never, O::Always, HUGE, true),
            (G::Never, O::Inherit, NONE, false),
            (G::Never, O::Inherit, HUGE, false),
            (G::Never, O::Madvise, HUGE, true),
            (G::Never, O::Madvise, NONE, false),
            (G::Never, O::Never, HUGE, false),
        ];
        for &(g, o, hints, allowed) in cases {
            for order in THP_MIN_ORDER..=THP_MAX_ORDER {
                let c = ThpConfig::new();
                c.set_global_mode(g);
                c.set_all_order_modes(&[O::Never; 10]);
                assert!(c.set_order_mode(order, o));
                let want = if allowed { bit(order) } else { 0 };
                assert_eq!(
                    c.allowable_orders(hints),
                    want,
                    "{g:?} {o:?} {hints:?} order {order}"
                );
            }
        }
    }

    #[test]
    fn mixed_sizes() {
        let c = ThpConfig::new();
        c.set_global_mode(GlobalMode::Madvise);
        c.set_order_mode(2, OrderMode::Always);
        c.set_order_mode(4, OrderMode::Madvise);
        c.set_order_mode(5, OrderMode::Inherit);
        // 9 stays inherit.
        assert_eq!(c.allowable_orders(NONE), bit(2));
        assert_eq!(c.allowable_orders(HUGE), bit(2) | bit(4) | bit(5) | bit(9));
        assert_eq!(c.allowable_orders(NOHUGE), 0);
        assert!(!c.set_order_mode(1, OrderMode::Always));
        assert!(!c.set_order_mode(10, OrderMode::Always));
        assert_eq!(c.allowable_orders(HUGE) & 0b11, 0);
    }

    #[test]
    fn khugepaged_should_run_rule() {
        let mut p = PolicySnapshot::linux_default();
        assert!(p.khugepaged_should_run());
        p = p.with_global(GlobalMode::Never);
        assert!(!p.khugepaged_should_run());
        p = p.with_order(4, OrderMode::Madvise);
        assert!(p.khugepaged_should_run());
        p = p
            .with_order(4, OrderMode::Never)
            .with_order(9, OrderMode::Never);
        p = p.with_global(GlobalMode::Always);
        assert!(!p.khugepaged_should_run());
    }

    #[test]
    fn suitable_orders_table() {
        let all = THP_ORDERS_ALL_ANON;
        let m = 1u64 << 20;
        // (vma_start, vma_end, addr, expected)
        let cases: &[(u64, u64, u64, u32)] = &[
            // 4 MiB aligned VMA: everything fits.
            (0x4000_0000, 0x4040_0000, 0x4012_3456, all),
            // 64 KiB VMA aligned at 64 KiB: orders 2..=4.
            (0x10_0000, 0x11_0000, 0x10_5000, bit(2) | bit(3) | bit(4)),
            // Misaligned start by one page: 16K block around 0x10_1000 is
            // 0x10_0000..0x10_4000, starting before the VMA.
            (0x10_1000, 0x20_0000, 0x10_1000, 0),
            (0x10_1000, 0x20_0000, 0x10_4000, bit(2)),
            // End boundary.
            (0x0, 0x10_3000, 0x10_2000, 0),
            // 2 MiB VMA not 2 MiB aligned: no PMD.
            (m, 3 * m, 2 * m - 0x1000, all & !bit(9)),
            // 1M block around 2M+4K would be 2M..3M: fits; 2M block would
            // be 2M..4M: does not.
            (m, 3 * m, 2 * m + 0x1000, all & !bit(9)),
            (m, 3 * m, 3 * m - 0x1000, all & !bit(9)),
        ];
        for &(s, e, a, want) in cases {
            assert_eq!(
                suitable_orders(all, s, e, a),
                want,
                "{s:#x}..{e:#x} @ {a:#x}"
            );
        }
        // The mask filters.
        assert_eq!(
            suitable_orders(bit(4), 0x4000_0000, 0x4040_0000, 0x4000_0000),
            bit(4)
        );
        // No overflow at the top of the address space.
        assert_eq!(
            suitable_orders(all, u64::MAX - 0xfff, u64::MAX, u64::MAX - 1),
            0
        );
    }

    #[test]
    fn reset_restores_defaults() {
        let c = ThpConfig::new();
        c.set_global_mode(GlobalMode::Never);
        c.set_order_mode(3, OrderMode::Always);
        c.set_defrag(DefragMode::Never);
        c.set_use_zero_page(false);
        c.khugepaged.max_ptes_none.store(0, Ordering::Relaxed);
        let g = c.generation();
        c.reset();
        assert!(c.generation() > g);
        assert_eq!(c.snapshot(), PolicySnapshot::linux_default());
        assert_eq!(c.defrag(), DefragMode::Madvise);
        assert!(c.use_zero_page());
        assert_eq!(c.khugepaged.max_ptes_none.load(Ordering::Relaxed), 511);
    }
}
