//! The portable PMU types, re-exported by `arch/x86_64/src/pmu.rs` and
//! `arch/aarch64/src/pmu.rs` so that both arch crates export exactly the
//! same definitions (the kernel names them as `arch::pmu::…`).  See
//! arch/API.md, section "PMU".  Only plain data and small helpers live here;
//! everything that touches hardware is in the two drivers.

/// A hardware event, named after what it counts (the arm64 PMUv3 names).
/// Each driver maps it onto its own encoding, or reports it unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// Processor cycles (arm64 CPU_CYCLES 0x11 on the cycle counter; x86
    /// unhalted core cycles).  Under QEMU TCG this is virtual time.
    Cycles,
    /// Instructions retired (arm64 INST_RETIRED 0x08).
    Instructions,
    /// Level-1 data TLB accesses (arm64 L1D_TLB 0x25).
    L1dTlb,
    /// Level-1 data TLB refills, i.e. misses (arm64 L1D_TLB_REFILL 0x05).
    L1dTlbRefill,
    /// Level-2 (unified/second-level) data TLB refills (arm64
    /// L2D_TLB_REFILL 0x2D).
    L2dTlbRefill,
    /// Data-side translation table walks (arm64 DTLB_WALK 0x34).
    DtlbWalk,
}

impl Event {
    /// Every event, in display order.
    pub const ALL: [Event; 6] = [
        Event::Cycles,
        Event::Instructions,
        Event::L1dTlb,
        Event::L1dTlbRefill,
        Event::L2dTlbRefill,
        Event::DtlbWalk,
    ];
    /// Number of events.
    pub const COUNT: usize = Self::ALL.len();

    /// Short lower-case name (used in reports and CSV headers).
    pub const fn name(self) -> &'static str {
        match self {
            Event::Cycles => "cycles",
            Event::Instructions => "instructions",
            Event::L1dTlb => "l1d_tlb",
            Event::L1dTlbRefill => "l1d_tlb_refill",
            Event::L2dTlbRefill => "l2d_tlb_refill",
            Event::DtlbWalk => "dtlb_walk",
        }
    }

    /// Look an event up by [`Event::name`].
    pub fn from_name(s: &str) -> Option<Event> {
        Self::ALL.into_iter().find(|e| e.name() == s)
    }

    /// Index into [`Event::ALL`]-ordered arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Whether an event (or the whole PMU) can be counted, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Not countable here; the reason is meant for people (it names the
    /// register or CPUID bit that said so).
    Unavailable(&'static str),
}

impl Availability {
    pub const fn is_available(self) -> bool {
        matches!(self, Availability::Available)
    }
}

/// Which privilege levels count: `user` = ring 3 / EL0, `kernel` = ring 0 /
/// EL1.  At least one must be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    pub user: bool,
    pub kernel: bool,
}

impl Filter {
    pub const USER: Filter = Filter {
        user: true,
        kernel: false,
    };
    pub const KERNEL: Filter = Filter {
        user: false,
        kernel: true,
    };
    pub const BOTH: Filter = Filter {
        user: true,
        kernel: true,
    };
}

/// What the PMU probe found (computed once, then cached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmuInfo {
    /// The PMU model, e.g. "arm PMUv3p5", "intel arch perfmon v2",
    /// "amd core pmc (legacy K7)", or "none".
    pub name: &'static str,
    /// Architectural version (ID_AA64DFR0_EL1.PMUVer, CPUID.0xA EAX[7:0],
    /// AMD: 0 legacy, 1 PerfCtrExtCore, 2 PerfMonV2).
    pub version: u32,
    /// Programmable counters usable by `start` (the cycle counter / fixed
    /// counters not included).
    pub nr_counters: u32,
    /// Width of the programmable counters in bits (arm64: 32, or 64 with
    /// PMUv3p5 PMCR_EL0.LP; x86: CPUID / 48 on AMD).
    pub counter_bits: u32,
    /// Who produces the numbers, as far as the driver can tell (accelerator
    /// and what the cycle count means), e.g. "QEMU TCG (MIDR implementer 0):
    /// cycles are virtual time at 1 GHz".
    pub source: &'static str,
    /// The PMU as a whole; when unavailable every event carries the same reason.
    pub status: Availability,
    /// Per event, in [`Event::ALL`] order.
    pub events: [(Event, Availability); Event::COUNT],
}

impl PmuInfo {
    /// Availability of one event.
    pub fn event(&self, e: Event) -> Availability {
        self.events[e.index()].1
    }
}

/// Why `start` refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmuError {
    /// The event cannot be counted here (with the probe's reason).
    Unavailable(Event, &'static str),
    /// More programmable events than the PMU has counters.
    TooManyEvents { wanted: usize, counters: u32 },
    /// The same event was asked for twice.
    Duplicate(Event),
    /// Neither `user` nor `kernel` was set.
    EmptyFilter,
    /// Another `CounterSet` owns the PMU (one at a time: the counters are a
    /// per-CPU resource and this kernel does not multiplex them).
    Busy,
    /// An MSR access raised #GP (x86) although the probe said it exists.
    Fault(u32),
}

/// Counter values read from a [`CounterSet`], indexed by event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    vals: [Option<u64>; Event::COUNT],
    overflow: u32,
}

impl Counts {
    /// The count of `e`, or `None` if `e` is not in the set.
    pub fn get(&self, e: Event) -> Option<u64> {
        self.vals[e.index()]
    }
    /// The counter of `e` wrapped at least once since the last reset (its
    /// value is then the low bits only; see `PmuInfo::counter_bits`).
    pub fn overflowed(&self, e: Event) -> bool {
        self.overflow & (1 << e.index()) != 0
    }
    /// `(event, value)` for every event in the set.
    pub fn iter(&self) -> impl Iterator<Item = (Event, u64)> + '_ {
        Event::ALL
            .into_iter()
            .filter_map(|e| self.get(e).map(|v| (e, v)))
    }
    /// Record `v` for `e` (the drivers fill a `Counts` when they read).
    pub fn set(&mut self, e: Event, v: u64, overflowed: bool) {
        self.vals[e.index()] = Some(v);
        if overflowed {
            self.overflow |= 1 << e.index();
        }
    }
}

/// `after - before` per event (wrapping), for events in both.
impl core::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, before: Counts) -> Counts {
        let mut d = Counts::default();
        for e in Event::ALL {
            if let (Some(a), Some(b)) = (self.get(e), before.get(e)) {
                d.set(e, a.wrapping_sub(b), self.overflowed(e));
            }
        }
        d
    }
}
