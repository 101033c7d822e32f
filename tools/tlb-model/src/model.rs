//! Two-level data-TLB model with LRU replacement.
//!
//! The model sees each data access as a virtual address plus the size of the
//! leaf translation that maps it ([`LeafSize`]), as found by walking the
//! guest's page tables. It counts L1 hits/misses, L2 misses (each one a page
//! walk) and the memory references those walks make. It is deliberately
//! simple: no page-walk caches, no prefetching, no instruction TLB, no
//! distinction between loads and stores, and a fill on every miss.

/// Size of the leaf translation mapping an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeafSize {
    /// A 4 KiB page (x86 PTE, arm64 level-3 page descriptor).
    Base4K,
    /// A 4 KiB PTE with the arm64 contiguous bit set: one of 16 aligned PTEs
    /// mapping a 64 KiB physically contiguous range.
    Cont64K,
    /// A 2 MiB leaf (x86 PMD with PS, arm64 level-2 block).
    Pmd2M,
    /// A 1 GiB leaf (x86 PUD with PS, arm64 level-1 block).
    Pud1G,
}

impl LeafSize {
    /// log2 of the bytes one TLB entry of this size covers.
    pub const fn shift(self) -> u32 {
        match self {
            LeafSize::Base4K => 12,
            LeafSize::Cont64K => 16,
            LeafSize::Pmd2M => 21,
            LeafSize::Pud1G => 30,
        }
    }

    /// Table levels a walk reads to reach this leaf with 4-level tables and
    /// a 4 KiB granule (x86 PML4/PDPT/PD/PT; arm64 levels 0–3 with 48-bit
    /// VAs). Without page-walk caches this is the walk's memory references.
    pub const fn walk_levels(self) -> u64 {
        match self {
            LeafSize::Base4K | LeafSize::Cont64K => 4,
            LeafSize::Pmd2M => 3,
            LeafSize::Pud1G => 2,
        }
    }

    /// Name used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            LeafSize::Base4K => "4K",
            LeafSize::Cont64K => "64K",
            LeafSize::Pmd2M => "2M",
            LeafSize::Pud1G => "1G",
        }
    }
}

/// Shape of one TLB level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelShape {
    /// Total entries.
    pub entries: usize,
    /// Ways per set; `entries` for a fully associative level.
    pub ways: usize,
}

impl LevelShape {
    /// A fully associative level of `entries` entries.
    pub const fn fully_associative(entries: usize) -> Self {
        LevelShape {
            entries,
            ways: entries,
        }
    }

    /// Sets in this level.
    pub const fn sets(self) -> usize {
        self.entries / self.ways
    }
}

/// A named TLB configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Name as given to `--tlb-model` and printed in reports.
    pub name: &'static str,
    /// The L1 data TLB.
    pub l1: LevelShape,
    /// The unified L2 TLB (data side only is modelled).
    pub l2: LevelShape,
    /// Whether a contpte (64 KiB) range takes one entry. When false, each of
    /// its 4 KiB pages takes its own entry, as on a core that ignores the
    /// contiguous hint.
    pub coalesce_contpte: bool,
    /// Largest size the L2 holds as such; larger leaves are split ("smashed")
    /// into entries of this size when filled into the L2.
    pub l2_max: LeafSize,
}

/// Arm Neoverse N1, contpte coalescing on.
///
/// Source: Arm Neoverse N1 Core Technical Reference Manual (Arm 100616),
/// "Memory Management Unit": a 48-entry fully associative L1 data TLB and a
/// 1280-entry 5-way set associative L2 TLB shared by instructions and data;
/// both hold 4K, 64K (contiguous 4K), 2M and 1G translations.
pub const NEOVERSE_N1: Config = Config {
    name: "neoverse-n1",
    l1: LevelShape::fully_associative(48),
    l2: LevelShape {
        entries: 1280,
        ways: 5,
    },
    coalesce_contpte: true,
    l2_max: LeafSize::Pud1G,
};

/// [`NEOVERSE_N1`] with the contiguous bit ignored: a 64K contpte range costs
/// sixteen 4K entries. Isolates what contpte gains through the TLB alone.
pub const NEOVERSE_N1_NOCONT: Config = Config {
    name: "neoverse-n1-nocont",
    coalesce_contpte: false,
    ..NEOVERSE_N1
};

/// AMD Zen 4 (x86_64).
///
/// Source: AMD Software Optimization Guide for AMD Family 19h Processors
/// (pub. 57647), "Translation-Lookaside Buffer": a 72-entry fully
/// associative L1 data TLB for all page sizes and a 3072-entry L2 data TLB.
/// Simplifications: the L2 is modelled as 24-way set associative (128
/// sets) with 4K and 2M entries sharing its sets (each indexed by its own
/// page number); 1G pages are held as 2M entries in the L2 (the L2 does not
/// hold 1G pages; /work/shared/notes/perf-anchors.md §2.7); Zen's
/// coalescing of 8 aligned contiguous 4K PTEs into one 32K L2 entry is not
/// modelled; x86 has no contiguous bit, so `Cont64K` never occurs.
pub const ZEN4: Config = Config {
    name: "zen4",
    l1: LevelShape::fully_associative(72),
    l2: LevelShape {
        entries: 3072,
        ways: 24,
    },
    coalesce_contpte: false,
    l2_max: LeafSize::Pmd2M,
};

/// All named configurations.
pub const CONFIGS: &[Config] = &[NEOVERSE_N1, NEOVERSE_N1_NOCONT, ZEN4];

/// Look a configuration up by name.
pub fn config(name: &str) -> Option<Config> {
    CONFIGS.iter().copied().find(|c| c.name == name)
}

/// One cached translation: the page number at its own size, and that size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    vpn: u64,
    size: LeafSize,
    /// Last-use time, for LRU.
    stamp: u64,
}

/// One set-associative (or fully associative) TLB level with LRU.
#[derive(Clone, Debug)]
pub struct Level {
    shape: LevelShape,
    sets: Vec<Vec<Entry>>,
    clock: u64,
}

impl Level {
    /// An empty level of the given shape.
    pub fn new(shape: LevelShape) -> Self {
        assert!(shape.ways > 0 && shape.entries.is_multiple_of(shape.ways));
        Level {
            shape,
            sets: vec![Vec::with_capacity(shape.ways); shape.sets()],
            clock: 0,
        }
    }

    fn set_of(&self, vpn: u64) -> usize {
        (vpn % self.shape.sets() as u64) as usize
    }

    /// Look `(vpn, size)` up; on a hit mark it most recently used.
    pub fn lookup(&mut self, vpn: u64, size: LeafSize) -> bool {
        self.clock += 1;
        let clock = self.clock;
        let set = self.set_of(vpn);
        match self.sets[set]
            .iter_mut()
            .find(|e| e.vpn == vpn && e.size == size)
        {
            Some(e) => {
                e.stamp = clock;
                true
            }
            None => false,
        }
    }

    /// Insert `(vpn, size)`, evicting the least recently used entry of its
    /// set when the set is full. Inserting a present entry only touches it.
    pub fn fill(&mut self, vpn: u64, size: LeafSize) {
        if self.lookup(vpn, size) {
            return;
        }
        let clock = self.clock;
        let ways = self.shape.ways;
        let set = self.set_of(vpn);
        let set = &mut self.sets[set];
        let entry = Entry {
            vpn,
            size,
            stamp: clock,
        };
        if set.len() < ways {
            set.push(entry);
        } else if let Some(victim) = set.iter_mut().min_by_key(|e| e.stamp) {
            *victim = entry;
        }
    }

    /// Drop every entry.
    pub fn flush(&mut self) {
        self.sets.iter_mut().for_each(Vec::clear);
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.sets.iter().map(Vec::len).sum()
    }

    /// Whether the level holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Event counts of a [`Tlb`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Data accesses seen.
    pub accesses: u64,
    /// Accesses that hit the L1.
    pub l1_hits: u64,
    /// Accesses that missed the L1.
    pub l1_misses: u64,
    /// Accesses that missed the L2 too: each is a page walk.
    pub l2_misses: u64,
    /// Memory references made by those walks.
    pub walk_refs: u64,
}

impl Counts {
    /// L2 misses (walks) per 1000 accesses: `model:dtlb_miss_per_kaccess`.
    pub fn miss_per_kaccess(&self) -> f64 {
        if self.accesses == 0 {
            0.0
        } else {
            self.l2_misses as f64 * 1000.0 / self.accesses as f64
        }
    }

    /// `self - earlier`, for per-phase counts.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            accesses: self.accesses - earlier.accesses,
            l1_hits: self.l1_hits - earlier.l1_hits,
            l1_misses: self.l1_misses - earlier.l1_misses,
            l2_misses: self.l2_misses - earlier.l2_misses,
            walk_refs: self.walk_refs - earlier.walk_refs,
        }
    }
}

/// A two-level data TLB: the L1 is looked up first, the L2 on an L1 miss, and
/// a walk fills both (non-exclusive).
#[derive(Clone, Debug)]
pub struct Tlb {
    config: Config,
    l1: Level,
    l2: Level,
    counts: Counts,
}

impl Tlb {
    /// An empty TLB of the given configuration.
    pub fn new(config: Config) -> Self {
        Tlb {
            config,
            l1: Level::new(config.l1),
            l2: Level::new(config.l2),
            counts: Counts::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Size of the entry caching a leaf of `leaf` size in a level holding at
    /// most `max`.
    fn entry_size(&self, leaf: LeafSize, max: LeafSize) -> LeafSize {
        let leaf = if leaf == LeafSize::Cont64K && !self.config.coalesce_contpte {
            LeafSize::Base4K
        } else {
            leaf
        };
        if leaf.shift() > max.shift() {
            max
        } else {
            leaf
        }
    }

    /// Account one data access to `va`, mapped by a leaf of size `leaf`.
    pub fn access(&mut self, va: u64, leaf: LeafSize) {
        self.counts.accesses += 1;
        let l1_size = self.entry_size(leaf, LeafSize::Pud1G);
        let l1_vpn = va >> l1_size.shift();
        if self.l1.lookup(l1_vpn, l1_size) {
            self.counts.l1_hits += 1;
            return;
        }
        self.counts.l1_misses += 1;
        let l2_size = self.entry_size(leaf, self.config.l2_max);
        let l2_vpn = va >> l2_size.shift();
        if !self.l2.lookup(l2_vpn, l2_size) {
            self.counts.l2_misses += 1;
            self.counts.walk_refs += leaf.walk_levels();
            self.l2.fill(l2_vpn, l2_size);
        }
        self.l1.fill(l1_vpn, l1_size);
    }

    /// Drop all entries (a full TLB flush or a table-base switch).
    pub fn flush(&mut self) {
        self.l1.flush();
        self.l2.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    /// Run `rounds` round-robin passes over `n` consecutive 4K pages.
    fn round_robin(config: Config, n: u64, rounds: u64, leaf: LeafSize) -> Counts {
        let mut tlb = Tlb::new(config);
        for _ in 0..rounds {
            for i in 0..n {
                tlb.access(0x4000_0000 + i * PAGE, leaf);
            }
        }
        tlb.counts()
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut l = Level::new(LevelShape::fully_associative(2));
        l.fill(1, LeafSize::Base4K);
        l.fill(2, LeafSize::Base4K);
        assert!(l.lookup(1, LeafSize::Base4K)); // 2 is now LRU
        l.fill(3, LeafSize::Base4K);
        assert!(l.lookup(1, LeafSize::Base4K));
        assert!(!l.lookup(2, LeafSize::Base4K));
        assert!(l.lookup(3, LeafSize::Base4K));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn set_associativity_limits_one_set() {
        // 1280 entries, 5 ways: 256 sets; vpns 256 apart share a set.
        let shape = NEOVERSE_N1.l2;
        assert_eq!(shape.sets(), 256);
        for (n, expect_hits) in [(5u64, true), (6, false)] {
            let mut l = Level::new(shape);
            let vpns: Vec<u64> = (0..n).map(|i| i * 256).collect();
            vpns.iter().for_each(|&v| l.fill(v, LeafSize::Base4K));
            // Round robin: with 6 > 5 ways LRU always evicts the next one.
            let hits = (0..3)
                .flat_map(|_| vpns.iter())
                .filter(|&&v| {
                    let hit = l.lookup(v, LeafSize::Base4K);
                    if !hit {
                        l.fill(v, LeafSize::Base4K);
                    }
                    hit
                })
                .count();
            assert_eq!(hits == vpns.len() * 3, expect_hits, "n={n}");
            if !expect_hits {
                assert_eq!(hits, 0);
            }
        }
    }

    #[test]
    fn sizes_do_not_alias() {
        let mut l = Level::new(LevelShape::fully_associative(4));
        l.fill(1, LeafSize::Pmd2M);
        assert!(!l.lookup(1, LeafSize::Base4K));
        assert!(l.lookup(1, LeafSize::Pmd2M));
    }

    #[test]
    fn fewer_pages_than_l1_only_cold_misses() {
        for config in CONFIGS {
            let c = round_robin(*config, 40, 10, LeafSize::Base4K);
            assert_eq!(c.accesses, 400);
            assert_eq!(c.l1_misses, 40, "{}", config.name);
            assert_eq!(c.l2_misses, 40);
            assert_eq!(c.walk_refs, 40 * 4);
            assert_eq!(c.l1_hits, 360);
        }
    }

    #[test]
    fn more_pages_than_both_levels_all_miss() {
        for config in CONFIGS {
            // Twice L1 + L2: every L2 set sees more pages than it has ways
            // (consecutive pages spread evenly over the sets), so LRU round
            // robin misses every time in both levels.
            let n = 2 * (config.l1.entries + config.l2.entries) as u64;
            let c = round_robin(*config, n, 3, LeafSize::Base4K);
            assert_eq!(c.l1_hits, 0, "{}", config.name);
            assert_eq!(c.l2_misses, 3 * n, "{}", config.name);
            assert_eq!(c.miss_per_kaccess(), 1000.0);
        }
    }

    #[test]
    fn between_l1_and_l2_hits_in_l2() {
        // 500 pages: over the N1 L1 (48) but under its L2 (1280, 2 per set):
        // every access after the first pass misses L1 and hits L2.
        let c = round_robin(NEOVERSE_N1, 500, 4, LeafSize::Base4K);
        assert_eq!(c.l1_hits, 0);
        assert_eq!(c.l1_misses, 2000);
        assert_eq!(c.l2_misses, 500);
    }

    #[test]
    fn contpte_coalescing() {
        // 64 MiB of 64K contpte mappings, touched once per 4K page: 1024
        // ranges. Coalesced: one walk per range; not: one per 4K page.
        let n = 64 << 8; // 4K pages in 64 MiB
        let on = round_robin(NEOVERSE_N1, n, 1, LeafSize::Cont64K);
        let off = round_robin(NEOVERSE_N1_NOCONT, n, 1, LeafSize::Cont64K);
        assert_eq!(on.l2_misses, n / 16);
        assert_eq!(off.l2_misses, n);
        // 1024 64K entries fit the 1280-entry L2: a second pass hits it.
        let on2 = round_robin(NEOVERSE_N1, n, 2, LeafSize::Cont64K);
        assert_eq!(on2.l2_misses, n / 16);
    }

    #[test]
    fn pmd_leaves_cover_64m_in_l1() {
        // 64 MiB of 2M leaves is 32 entries: fits either L1.
        for config in CONFIGS {
            let c = round_robin(*config, 64 << 8, 2, LeafSize::Pmd2M);
            assert_eq!(c.l2_misses, 32, "{}", config.name);
            assert_eq!(c.walk_refs, 32 * 3);
        }
    }

    #[test]
    fn zen4_smashes_1g_into_2m_in_l2() {
        let mut tlb = Tlb::new(ZEN4);
        // Two 2M regions of one 1G leaf: one L1 entry, but in L2 two entries.
        tlb.access(0, LeafSize::Pud1G);
        tlb.access(2 << 20, LeafSize::Pud1G);
        assert_eq!(tlb.counts().l2_misses, 1);
        assert!(tlb.l2.lookup(0, LeafSize::Pmd2M));
        assert!(!tlb.l2.lookup(0, LeafSize::Pud1G));
        tlb.flush();
        assert!(tlb.l1.is_empty() && tlb.l2.is_empty());
    }

    #[test]
    fn per_phase_difference() {
        let mut tlb = Tlb::new(NEOVERSE_N1);
        tlb.access(0, LeafSize::Base4K);
        let start = tlb.counts();
        tlb.access(0, LeafSize::Base4K);
        tlb.access(PAGE, LeafSize::Base4K);
        let d = tlb.counts().since(&start);
        assert_eq!((d.accesses, d.l1_hits, d.l2_misses), (2, 1, 1));
        assert_eq!(d.miss_per_kaccess(), 500.0);
    }

    #[test]
    fn named_configs() {
        assert_eq!(config("zen4"), Some(ZEN4));
        assert!(config("neoverse-n1-nocont").is_some_and(|c| !c.coalesce_contpte));
        assert_eq!(config("nope"), None);
    }
}
