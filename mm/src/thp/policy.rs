//! THP policy: the runtime knobs and the order-resolution rule.
//!
//! The knobs mirror `/sys/kernel/mm/transparent_hugepage/` (see
//! [`crate::abi::thp_sysfs`]); the rule that turns them into a set of folio
//! orders for one VMA mirrors Linux's `thp_vma_allowable_orders`.
//!
//! # Concurrency
//!
//! Every knob is an atomic, so readers (the fault path on every CPU) never
//! take a lock.  The global `enabled` mode and all per-size settings are
//! packed into **one** `AtomicU64` (the *policy word*, with the orders they
//! allow worked out beside them) so that a fault reads a consistent
//! snapshot with a single load: Linux keeps three separate
//! bitmaps and can observe a half-applied update; one word cannot.  Writers
//! update the word with a compare-and-swap loop, so concurrent writers of
//! different sizes never lose each other's change and no writer lock is
//! needed (there is therefore no lock to order against other `mm` locks).
//! Scalar knobs are independent single atomics.  Every successful change
//! bumps [`ThpConfig::generation`], which khugepaged polls to notice that it
//! must re-evaluate whether to run or wake early (Linux's
//! `start_stop_khugepaged` / `wake_up_interruptible(&khugepaged_wait)`).

use crate::abi::sysfs_choice;
use crate::physmem::compaction::CompactRequest;
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

sysfs_choice! {
    /// The global `enabled` mode.
    pub enum GlobalMode {
        /// THP for every eligible VMA.
        Always => "always",
        /// THP only in `MADV_HUGEPAGE` regions.
        Madvise => "madvise",
        /// No THP from faults (`MADV_COLLAPSE` still works).
        Never => "never",
    }
}

impl GlobalMode {
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

sysfs_choice! {
    /// A per-size (`hugepages-<size>kB/enabled`) setting.
    pub enum OrderMode {
        /// Use this size for every eligible VMA.
        Always => "always",
        /// Follow the global `enabled` mode.
        Inherit => "inherit",
        /// Use this size only in `MADV_HUGEPAGE` regions.
        Madvise => "madvise",
        /// Never use this size at fault time.
        Never => "never",
    }
}

impl OrderMode {
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

sysfs_choice! {
    /// The global `defrag` mode: how hard a THP allocation may work (direct
    /// reclaim/compaction vs. waking the background daemons).
    pub enum DefragMode {
        /// Stall for direct reclaim and compaction on every THP allocation.
        Always => "always",
        /// Wake kswapd/kcompactd and fail fast.
        Defer => "defer",
        /// Stall in `MADV_HUGEPAGE` regions, defer elsewhere.
        DeferMadvise => "defer+madvise",
        /// Stall only in `MADV_HUGEPAGE` regions (Linux's default).
        Madvise => "madvise",
        /// Never stall or wake anything.
        Never => "never",
    }
}

impl DefragMode {
    /// What a THP fault's failed allocation may do in a VMA that is
    /// `madvised` (`MADV_HUGEPAGE`) or not: Linux's `vma_thp_gfp_mask`
    /// (notes 5.6).  `always` compacts directly everywhere, retrying only
    /// where madvised; `defer` wakes kswapd and kcompactd; `defer+madvise`
    /// compacts where madvised and wakes the daemons elsewhere; `madvise`
    /// compacts where madvised and does nothing elsewhere; `never` does
    /// nothing.  (Direct reclaim for THP orders, which Linux also allows
    /// where it compacts, is not done: the fault path reclaims only when
    /// order 0 fails.)
    pub fn fault_compaction(self, madvised: bool) -> Option<CompactRequest> {
        use CompactRequest::{Direct, Wake};
        match (self, madvised) {
            (DefragMode::Always, m) => Some(Direct { retry: m }),
            (DefragMode::Defer, _) | (DefragMode::DeferMadvise, false) => Some(Wake),
            (DefragMode::DeferMadvise | DefragMode::Madvise, true) => Some(Direct { retry: true }),
            (DefragMode::Madvise, false) | (DefragMode::Never, _) => None,
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
    pub const fn orders_with(self, mode: OrderMode) -> u32 {
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
    pub const fn allowable_orders(self, hints: VmaThpHints) -> u32 {
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

    /// The word [`ThpConfig`] stores: the snapshot in the low 32 bits and
    /// [`Self::allowable_orders`] worked out for the two hint sets that
    /// allow anything (without and with `VM_HUGEPAGE`) in bits 32..48 and
    /// 48..64, so a fault reads its orders with one load and no
    /// arithmetic; one word keeps them consistent with the snapshot.
    const fn packed(self) -> u64 {
        const PLAIN: VmaThpHints = VmaThpHints {
            hugepage: false,
            nohugepage: false,
        };
        const MADVISED: VmaThpHints = VmaThpHints {
            hugepage: true,
            nohugepage: false,
        };
        self.0 as u64
            | (self.allowable_orders(PLAIN) as u64) << 32
            | (self.allowable_orders(MADVISED) as u64) << 48
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
    /// Global mode + per-size settings and the orders they allow; see
    /// [`PolicySnapshot::packed`].
    policy: AtomicU64,
    defrag: AtomicU8,
    use_zero_page: AtomicBool,
    shrink_underused: AtomicBool,
    /// A write to the huge zero PMD allocates a PMD folio (Linux 6.13's
    /// `do_huge_zero_wp_pmd`) instead of splitting it and copying 4K
    /// (Linux 6.12, the reference, and the default).
    huge_zero_wp_alloc: AtomicBool,
    /// `large_cow`: a write fault on a shared large folio copies a large
    /// block (see `aspace::fault`'s `wp_copy_large`); off, 4K as Linux.
    large_cow: AtomicBool,
    /// `hugepages-<size>kB/reserve` (ours, issue 17): bit `o` set makes a
    /// fault that would allocate an order-`o` folio reserve it instead
    /// (`aspace::reserve`).  0, Linux's behaviour, by default.
    reserve: AtomicU32,
    /// The khugepaged tunables.  Fields are public for the daemon to read;
    /// writers should go through the registry (which validates).
    pub khugepaged: KhugepagedKnobs,
    /// Set once a `thp_anon=` boot parameter has been applied: later ones
    /// then add to it instead of starting from "everything never".
    anon_orders_configured: AtomicBool,
    generation: AtomicU64,
    /// The shmem knobs (`shmem_enabled`, per size too).
    pub shmem: crate::shmem::policy::ShmemPolicy,
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
            policy: AtomicU64::new(PolicySnapshot::linux_default().packed()),
            defrag: AtomicU8::new(DefragMode::Madvise as u8),
            use_zero_page: AtomicBool::new(true),
            shrink_underused: AtomicBool::new(true),
            huge_zero_wp_alloc: AtomicBool::new(false),
            large_cow: AtomicBool::new(true),
            reserve: AtomicU32::new(0),
            khugepaged: KhugepagedKnobs::new(),
            anon_orders_configured: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            shmem: crate::shmem::policy::ShmemPolicy::new(),
        }
    }

    /// One consistent view of `enabled` and every per-size setting.
    #[inline]
    pub fn snapshot(&self) -> PolicySnapshot {
        PolicySnapshot(self.policy.load(Ordering::Acquire) as u32)
    }

    /// Orders allowed for a VMA with `hints` (see
    /// [`PolicySnapshot::allowable_orders`]; read ready-made, every fault
    /// asks).
    #[inline]
    pub fn allowable_orders(&self, hints: VmaThpHints) -> u32 {
        if hints.nohugepage {
            return 0;
        }
        let shift = if hints.hugepage { 48 } else { 32 };
        (self.policy.load(Ordering::Acquire) >> shift) as u32 & 0xffff
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
                Some(f(PolicySnapshot(w as u32)).packed())
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

    /// `/sys/kernel/mm/transparent_hugepage/large_cow` (this kernel's own,
    /// default 1): a write fault on a shared large folio copies the largest
    /// allowed block the folio maps wholly, rather than one 4K page (0:
    /// Linux 6.12's behaviour).
    pub fn large_cow(&self) -> bool {
        self.large_cow.load(Ordering::Relaxed)
    }

    /// Set [`Self::large_cow`].
    pub fn set_large_cow(&self, on: bool) {
        self.large_cow.store(on, Ordering::Relaxed);
    }

    /// Orders (bit mask) in reservation mode (`hugepages-<size>kB/reserve`).
    #[inline]
    pub fn reserve_orders(&self) -> u32 {
        self.reserve.load(Ordering::Relaxed)
    }

    /// Turn reservation mode for `order` on or off; `false` if there is no
    /// `hugepages-<size>kB/enabled` for that order.
    pub fn set_reserve(&self, order: u32, on: bool) -> bool {
        if !(THP_MIN_ORDER..=THP_MAX_ORDER).contains(&order) {
            return false;
        }
        if on {
            self.reserve.fetch_or(1 << order, Ordering::Relaxed);
        } else {
            self.reserve.fetch_and(!(1 << order), Ordering::Relaxed);
        }
        self.bump();
        true
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

    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn anon_orders_configured(&self) -> bool {
        self.anon_orders_configured.load(Ordering::Acquire)
    }

    pub(crate) fn mark_anon_orders_configured(&self) {
        self.anon_orders_configured.store(true, Ordering::Release);
    }

    /// Restore every knob to Linux's defaults (for tests and `reset`).
    pub fn reset(&self) {
        self.policy
            .store(PolicySnapshot::linux_default().packed(), Ordering::Release);
        self.defrag
            .store(DefragMode::Madvise as u8, Ordering::Relaxed);
        self.use_zero_page.store(true, Ordering::Relaxed);
        self.shrink_underused.store(true, Ordering::Relaxed);
        self.huge_zero_wp_alloc.store(false, Ordering::Relaxed);
        self.large_cow.store(true, Ordering::Relaxed);
        self.reserve.store(0, Ordering::Relaxed);
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
        self.shmem.reset();
        self.bump();
    }
}

#[cfg(test)]
mod tests;
