//! The portable counter API: hardware events through the arch PMU driver
//! (`arch::pmu`, see arch/API.md "PMU"), plus software counters that work
//! everywhere.
//!
//! Hardware: [`Session::begin`] starts whichever of the requested events
//! can be counted (user and/or kernel filtering) and records, for the
//! others, why not; [`Session::end`] returns a [`Report`] in which every
//! event is either a number or its reason.  Nothing is ever filled in: QEMU
//! TCG has no TLB events (arm64 TCG counts cycles as virtual time), the
//! development host's KVM exposes no PMU, and then the report says so.
//!
//! Software (always available):
//! * faults by order: anonymous fault allocations per folio order, from the
//!   THP statistics (`mm::thp::THP.stats`; order 0 is derived, see
//!   [`faults_by_order`]);
//! * page-table pages in use: frames allocated with `AllocFlags::PAGETABLE`
//!   (every user page-table page, deposits included; the kernel's own
//!   tables come from boot memory and the heap and are not counted);
//! * translation entries covering a region: from an address space's
//!   thpmaps report (`Mm::thpmaps()`, a walk of the real page tables where a
//!   4K PTE, a contpte block and a PMD each count 1), see
//!   [`translation_entries`].
use crate::mem::memory;
use crate::{arch, cmdline};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
#[cfg(feature = "selftest")]
use mm::aspace::ThpMaps;
use mm::physmem::frame_flags::{FrameState, PageFlags};
use mm::thp::{MthpStat, THP, THP_MAX_ORDER, ThpStats, VmEvent};

pub mod dev;
pub mod profile;

pub use arch::pmu::{Availability, CounterSet, Counts, Event, Filter, PmuError, PmuInfo};

/// Orders with a fault count (0..=PMD order).
pub const NR_ORDERS: usize = THP_MAX_ORDER as usize + 1;

/// The PMU as probed (cached by the driver).
pub fn pmu() -> PmuInfo {
    arch::pmu::probe()
}

/// Who produced the hardware numbers: `accel=` from the command line if
/// given (e.g. `accel=kvm`), else what the driver could tell.
pub fn source() -> &'static str {
    cmdline::value("accel").unwrap_or(pmu().source)
}

/// Start counting `events` directly (all must be available); see
/// [`Session`] for the forgiving form.
pub fn start(events: &[Event], filter: Filter) -> Result<CounterSet, PmuError> {
    arch::pmu::start(events, filter)
}

/// One line per hardware event (`available` / `unavailable: <reason>`),
/// then the software counters.
#[cfg(feature = "selftest")]
pub fn describe() -> String {
    let info = pmu();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "pmu: {} (version {}, {} counters x {} bit) - {}",
        info.name,
        info.version,
        info.nr_counters,
        info.counter_bits,
        source()
    );
    for (e, a) in info.events {
        match a {
            Availability::Available => {
                let _ = writeln!(s, "  {:<16} available", e.name());
            }
            Availability::Unavailable(why) => {
                let _ = writeln!(s, "  {:<16} unavailable: {}", e.name(), why);
            }
        }
    }
    let _ = writeln!(
        s,
        "  {:<16} available (software: THP stats)",
        "faults_by_order"
    );
    let _ = writeln!(
        s,
        "  {:<16} available (software: PAGETABLE frames)",
        "pagetable_pages"
    );
    let _ = writeln!(
        s,
        "  {:<16} available (software: Mm::thpmaps() walk)",
        "tlb_entries"
    );
    s
}

/// The boot-time summary: two lines saying what is measurable.
pub fn boot_report() {
    let info = pmu();
    let avail: Vec<&str> = info
        .events
        .iter()
        .filter(|(_, a)| a.is_available())
        .map(|(e, _)| e.name())
        .collect();
    match info.status {
        Availability::Available => info!(
            "perf: {} ({} counters x {} bit); {}",
            info.name,
            info.nr_counters,
            info.counter_bits,
            source()
        ),
        Availability::Unavailable(why) => {
            info!(
                "perf: PMU unavailable: {} [{}]; {}",
                why,
                info.name,
                source()
            )
        }
    }
    // Unavailable events grouped by reason.
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    if info.status.is_available() {
        for (e, a) in info.events {
            if let Availability::Unavailable(why) = a {
                match groups.iter_mut().find(|g| g.0 == why) {
                    Some(g) => g.1.push(e.name()),
                    None => groups.push((why, alloc::vec![e.name()])),
                }
            }
        }
    }
    let mut line = String::new();
    let _ = write!(
        line,
        "perf: hw events: {}",
        if avail.is_empty() {
            String::from("none")
        } else {
            avail.join(", ")
        }
    );
    for (why, names) in groups {
        let _ = write!(line, "; unavailable: {} ({})", names.join(", "), why);
    }
    info!(
        "{}; sw: faults_by_order, pagetable_pages, tlb_entries",
        line
    );
}

// ----- software counters -----

/// Anonymous fault allocations by folio order from `stats`.  Orders >= 1
/// are the per-size `anon_fault_alloc` counters; order 0 (which Linux, and
/// these stats, do not count per size) is the total `fault_anon_alloc`
/// minus the large ones.
pub fn faults_by_order_from(stats: &ThpStats) -> [u64; NR_ORDERS] {
    let mut v = [0u64; NR_ORDERS];
    let mut large = 0;
    for (o, slot) in v.iter_mut().enumerate().skip(1) {
        *slot = stats.get(o as u32, MthpStat::AnonFaultAlloc);
        large += *slot;
    }
    v[0] = stats.event(VmEvent::FaultAnonAlloc).saturating_sub(large);
    v
}

/// [`faults_by_order_from`] of the kernel's THP statistics.
pub fn faults_by_order() -> [u64; NR_ORDERS] {
    faults_by_order_from(&THP.stats)
}

/// Page-table pages in use: allocated frames flagged `PAGETABLE` (one pass
/// over the memmap; cheap enough per measurement, not per access).
pub fn pagetable_pages() -> u64 {
    let mm = memory::buddy().memmap();
    (mm.base_pfn()..mm.end_pfn())
        .filter_map(|pfn| mm.desc(pfn))
        .filter(|d| d.state() == FrameState::Head && d.page_flags().contains(PageFlags::PAGETABLE))
        .count() as u64
}

/// Translation entries (a 4K PTE, a contpte block, a PMD: 1 each) mapping
/// the VMAs that intersect `start..end`, from `maps = mm.thpmaps()`.
/// Granularity is the VMA: give a benchmark region its own mapping.
#[cfg(feature = "selftest")]
pub fn translation_entries(maps: &ThpMaps, start: u64, end: u64) -> u64 {
    maps.vmas
        .iter()
        .filter(|v| v.start < end && start < v.end)
        .map(|v| v.entries)
        .sum()
}

/// The software counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftCounts {
    pub faults_by_order: [u64; NR_ORDERS],
    /// All resolved page faults (`pgfault`).
    pub pgfault: u64,
    pub pagetable_pages: u64,
}

impl SoftCounts {
    pub fn now() -> SoftCounts {
        SoftCounts {
            faults_by_order: faults_by_order(),
            pgfault: THP.stats.event(VmEvent::PgFault),
            pagetable_pages: pagetable_pages(),
        }
    }
}

// ----- sessions -----

/// A measurement: hardware events that can be counted are counting, the
/// others carry their reason; software counters and time are sampled.
pub struct Session {
    set: Option<CounterSet>,
    missing: Vec<(Event, &'static str)>,
    filter: Filter,
    t0: u64,
    soft0: SoftCounts,
    /// The CPU whose counters run: they are per CPU and not switched with
    /// tasks, so a session that ends on another CPU (its task slept and
    /// woke elsewhere) has no counts to give.
    cpu: usize,
}

/// What a [`Session`] measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub elapsed_ns: u64,
    pub filter: Filter,
    /// Per requested event: its count, or why there is none.
    pub hw: Vec<(Event, Result<u64, &'static str>)>,
    /// Software counter deltas (`pagetable_pages` is the value at the end).
    pub soft: SoftCounts,
    /// [`source`] at the time of the measurement.
    pub source: &'static str,
}

impl Session {
    /// Start measuring.  Unavailable events are left out (with their
    /// reason); if the available ones do not fit the counters, or the PMU is
    /// busy, every event gets that reason instead.
    pub fn begin(events: &[Event], filter: Filter) -> Session {
        let info = pmu();
        let mut want = Vec::new();
        let mut missing = Vec::new();
        for &e in events {
            match info.event(e) {
                Availability::Available if !want.contains(&e) => want.push(e),
                Availability::Available => {}
                Availability::Unavailable(why) => missing.push((e, why)),
            }
        }
        let soft0 = SoftCounts::now();
        let cpu = arch::cpu_id();
        let t0 = arch::now_ns();
        let set = if want.is_empty() {
            None
        } else {
            match start(&want, filter) {
                Ok(s) => Some(s),
                Err(err) => {
                    let why = match err {
                        PmuError::TooManyEvents { .. } => "more events than hardware counters",
                        PmuError::Busy => "the PMU is in use by another measurement",
                        PmuError::EmptyFilter => "empty user/kernel filter",
                        PmuError::Fault(_) => "a PMU MSR access faulted",
                        PmuError::Unavailable(_, w) => w,
                        PmuError::Duplicate(_) => "duplicate event",
                    };
                    missing.extend(want.iter().map(|&e| (e, why)));
                    None
                }
            }
        };
        crate::perf::profile::phase(true);
        Session {
            set,
            missing,
            filter,
            t0,
            soft0,
            cpu,
        }
    }

    /// Current hardware counts (the session keeps running).
    pub fn peek(&self) -> Option<Counts> {
        self.set.as_ref().map(|s| s.read())
    }

    /// Stop and report.
    pub fn end(mut self) -> Report {
        crate::perf::profile::phase(false);
        if let Some(s) = self.set.as_mut() {
            s.stop();
        }
        let t1 = arch::now_ns();
        let counts = self.peek();
        let soft1 = SoftCounts::now();
        let mut hw: Vec<(Event, Result<u64, &'static str>)> = Vec::new();
        let moved = arch::cpu_id() != self.cpu;
        if let (Some(c), Some(s)) = (counts, self.set.as_ref()) {
            for e in s.events() {
                hw.push((
                    e,
                    if moved {
                        Err("ended on another CPU (the counters are per CPU)")
                    } else {
                        c.get(e).ok_or("counter read failed")
                    },
                ));
            }
        }
        hw.extend(self.missing.iter().map(|&(e, why)| (e, Err(why))));
        hw.sort_by_key(|(e, _)| *e);
        let mut soft = SoftCounts {
            pgfault: soft1.pgfault - self.soft0.pgfault,
            pagetable_pages: soft1.pagetable_pages,
            ..SoftCounts::default()
        };
        for o in 0..NR_ORDERS {
            soft.faults_by_order[o] =
                soft1.faults_by_order[o].saturating_sub(self.soft0.faults_by_order[o]);
        }
        Report {
            elapsed_ns: t1 - self.t0,
            filter: self.filter,
            hw,
            soft,
            source: source(),
        }
    }
}

/// `elapsed 1234 ns [kernel] (source); cycles 1000; l1d_tlb_refill -
/// (reason); ... faults/order 0:3 4:1; pgfault 4; pagetable_pages 7`
impl core::fmt::Display for Report {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ring = match (self.filter.user, self.filter.kernel) {
            (true, true) => "user+kernel",
            (true, false) => "user",
            _ => "kernel",
        };
        write!(
            f,
            "elapsed {} ns [{}] ({})",
            self.elapsed_ns, ring, self.source
        )?;
        for (e, v) in &self.hw {
            match v {
                Ok(n) => write!(f, "; {} {}", e.name(), n)?,
                Err(why) => write!(f, "; {} - ({})", e.name(), why)?,
            }
        }
        write!(f, "; faults/order")?;
        for (o, n) in self.soft.faults_by_order.iter().enumerate() {
            if *n > 0 {
                write!(f, " {o}:{n}")?;
            }
        }
        write!(
            f,
            "; pgfault {}; pagetable_pages {}",
            self.soft.pgfault, self.soft.pagetable_pages
        )
    }
}

impl Report {
    /// The count of `e`, if it was measured.
    #[cfg_attr(not(any(feature = "selftest", feature = "demo")), allow(dead_code))]
    pub fn get(&self, e: Event) -> Option<u64> {
        self.hw
            .iter()
            .find(|(x, _)| *x == e)
            .and_then(|(_, r)| r.ok())
    }
}

#[cfg(feature = "selftest")]
mod tests {
    use super::*;
    use ktest::{check, check_eq, ktest};
    use mm::aspace::VmaReport;
    use mm::physmem::buddy::AllocFlags;

    fn spin(n: u64) -> u64 {
        let mut x = 0u64;
        for i in 0..n {
            x = core::hint::black_box(x.wrapping_add(i));
        }
        x
    }

    ktest! {
        fn perf_describe_lists_every_event() {
            let d = describe();
            let info = pmu();
            for (e, a) in info.events {
                let line = d
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some(e.name()))
                    .ok_or_else(|| ktest::format!("no line for {}", e.name()))?;
                match a {
                    Availability::Available => check!(line.ends_with(" available"), "{line}"),
                    Availability::Unavailable(why) => {
                        check!(line.contains("unavailable: ") && line.ends_with(why), "{line}")
                    }
                }
            }
            Ok(())
        }
    }

    ktest! {
        fn perf_session_never_invents_numbers() {
            let info = pmu();
            let s = Session::begin(&Event::ALL, Filter::KERNEL);
            spin(50_000);
            let r = s.end();
            check_eq!(r.hw.len(), Event::COUNT);
            let text = ktest::format!("{r}");
            check!(text.contains("cycles") && text.contains("pagetable_pages"), "{text}");
            let n_counted = r.hw.iter().filter(|(_, v)| v.is_ok()).count();
            let fits = info.events.iter().filter(|(e, a)| a.is_available() && *e != Event::Cycles).count()
                <= info.nr_counters as usize;
            for (e, v) in &r.hw {
                match (info.event(*e), v) {
                    (Availability::Unavailable(why), Err(got)) => check_eq!(*got, why),
                    (Availability::Unavailable(_), Ok(n)) => {
                        return Err(ktest::format!("{} unavailable but reported {n}", e.name()))
                    }
                    (Availability::Available, Err(why)) => check!(!fits, "{} not counted: {why}", e.name()),
                    (Availability::Available, Ok(_)) => {}
                }
            }
            if info.event(Event::Cycles).is_available() && fits {
                check!(r.get(Event::Cycles).unwrap_or(0) > 0, "cycles did not count: {:?}", r.hw);
            }
            if !info.status.is_available() {
                check_eq!(n_counted, 0);
            }
            Ok(())
        }
    }

    ktest! {
        fn perf_cycles_advance_in_a_busy_loop() {
            // arm64 TCG: the cycle counter counts (virtual time); x86 TCG has
            // no PMU and must say so rather than count.
            if !pmu().event(Event::Cycles).is_available() {
                check!(start(&[Event::Cycles], Filter::BOTH).is_err());
                return Ok(());
            }
            let mut set = start(&[Event::Cycles], Filter::BOTH).map_err(|e| ktest::format!("{e:?}"))?;
            let a = set.read();
            spin(200_000);
            let b = set.read();
            let d = (b - a).get(Event::Cycles).unwrap_or(0);
            check!(d > 0, "cycles delta 0 over a 200000-iteration loop");
            // Masked: under TCG cycles are virtual time, and a tick or a
            // preemption between reset and read would count too.
            let irq = arch::irq_save();
            set.reset();
            let z = set.read().get(Event::Cycles).unwrap_or(u64::MAX);
            arch::irq_restore(irq);
            check!(z < d, "reset left {z}");
            Ok(())
        }
    }

    ktest! {
        /// `perf-expect=instructions,cycles` on the command line (the runner's
        /// arm64 `pmu-icount` boot): those events must be available and
        /// count.  Without it there is nothing to expect: skipped (the runner
        /// checks the `pmu-icount` boot runs it; x86 has no such boot).
        fn perf_pmu_expected_events_count() {
            let Some(list) = cmdline::value("perf-expect") else {
                ktest::skip!("no perf-expect= on the command line (the arm64 pmu-icount boot sets it)");
            };
            let mut want = Vec::new();
            for name in list.split(',') {
                let e = Event::from_name(name).ok_or_else(|| ktest::format!("unknown event {name}"))?;
                if let Availability::Unavailable(why) = pmu().event(e) {
                    return Err(ktest::format!("{name} unavailable: {why}"));
                }
                want.push(e);
            }
            let s = Session::begin(&want, Filter::KERNEL);
            spin(10_000);
            let r = s.end();
            for e in want {
                check!(r.get(e).unwrap_or(0) > 0, "{} did not count: {r}", e.name());
            }
            Ok(())
        }
    }

    ktest! {
        fn perf_faults_by_order_derives_order_0() {
            let st = ThpStats::new();
            for _ in 0..5 {
                st.count(VmEvent::FaultAnonAlloc);
            }
            st.inc(4, MthpStat::AnonFaultAlloc);
            st.inc(9, MthpStat::AnonFaultAlloc);
            let v = faults_by_order_from(&st);
            check_eq!(v[0], 3);
            check_eq!(v[4], 1);
            check_eq!(v[9], 1);
            check_eq!(v.iter().sum::<u64>(), 5);
            Ok(())
        }
    }

    ktest! {
        fn perf_pagetable_pages_counts_pagetable_frames() {
            let b = memory::buddy();
            let before = pagetable_pages();
            let f = b.alloc(0, AllocFlags::PAGETABLE | AllocFlags::ZERO).map_err(|e| ktest::format!("{e:?}"))?;
            let during = pagetable_pages();
            b.free_pages(f.pa() >> mm::addr::PAGE_SHIFT, 0);
            let after = pagetable_pages();
            check_eq!(during, before + 1);
            check_eq!(after, before);
            Ok(())
        }
    }

    ktest! {
        fn perf_translation_entries_sum_intersecting_vmas() {
            let vma = |start, end, entries| VmaReport { start, end, entries, ..VmaReport::default() };
            let maps = ThpMaps {
                arch: "test",
                vmas: alloc::vec![vma(0x1000, 0x2000, 1), vma(0x10000, 0x20000, 16), vma(0x200000, 0x400000, 1)],
            };
            check_eq!(translation_entries(&maps, 0x10000, 0x20000), 16);
            check_eq!(translation_entries(&maps, 0, u64::MAX), 18);
            check_eq!(translation_entries(&maps, 0x2000, 0x10000), 0);
            Ok(())
        }
    }
}
