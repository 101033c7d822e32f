//! arm64 PMUv3 driver: event discovery, counter programming with EL0/EL1
//! filtering, and the portable counter API of `arch/API.md` ("PMU").
//!
//! Discovery: ID_AA64DFR0_EL1.PMUVer says whether a PMUv3 exists and which
//! revision; PMCR_EL0.N is the number of event counters usable at EL1 (at
//! EL1 under an EL2 this reads MDCR_EL2.HPMN); PMCEID0/1_EL0 say which
//! common events 0x00-0x3F are implemented.  An event that is not
//! advertised is reported unavailable, never read: QEMU TCG accepts any
//! event number and simply never increments most of them.
//!
//! Counters: `Event::Cycles` uses the dedicated cycle counter (PMCCNTR_EL0,
//! filtered by PMCCFILTR_EL0), everything else one event counter each
//! (PMEVTYPERn/PMEVCNTRn through PMSELR_EL0 + PMXEVTYPER/PMXEVCNTR).  Filter
//! bits in both type registers: P (bit 31) = do not count EL1, U (bit 30) =
//! do not count EL0; NSK/NSU stay 0 (then P and U alone decide for
//! Non-secure EL1/EL0, and without EL3 they are RES0); NSH (bit 27) stays 0,
//! so EL2 is never counted.  EL0 gets no direct access (PMUSERENR_EL0 = 0):
//! user workloads are measured from the kernel, counting EL0 only.  No
//! overflow interrupts (PMINTENCLR_EL1); with PMUv3p5 the event counters are
//! 64-bit (PMCR_EL0.LP), otherwise 32-bit and a wrap is flagged in `Counts`.
//!
//! What QEMU does (measured, see shared notes): TCG `-cpu max` is PMUv3p5,
//! N = 6, advertising only SW_INCR and CPU_CYCLES; its cycle counter counts
//! virtual time (1 GHz nominal, i.e. guest nanoseconds).  With
//! `-icount shift=0` INST_RETIRED (0x08) is advertised too and exact.
use crate::regs::{isb, read_sysreg, write_sysreg};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Once;

pub use arch_common::pmu::*;

/// Common event numbers (Arm ARM, "PMU events and event numbers").
const EV_L1D_TLB_REFILL: u32 = 0x05;
const EV_INST_RETIRED: u32 = 0x08;
const EV_CPU_CYCLES: u32 = 0x11;
const EV_L1D_TLB: u32 = 0x25;
const EV_L2D_TLB_REFILL: u32 = 0x2D;
const EV_DTLB_WALK: u32 = 0x34;

/// PMCR_EL0 bits.
const PMCR_E: u64 = 1 << 0;
const PMCR_D: u64 = 1 << 3;
const PMCR_LC: u64 = 1 << 6;
const PMCR_LP: u64 = 1 << 7;
/// Type-register filter bits (PMEVTYPERn_EL0 and PMCCFILTR_EL0).
pub(crate) const TYPER_P: u64 = 1 << 31;
pub(crate) const TYPER_U: u64 = 1 << 30;
/// Event number field of PMEVTYPERn_EL0 (16 bits with PMUv3p1+).
#[cfg(feature = "selftest")]
const TYPER_EVT: u64 = 0xFFFF;
/// PMCNTENSET/CLR, PMOVSSET/CLR bit of the cycle counter.
const CYCLE_BIT: u32 = 31;

/// The event number behind each portable event (`Cycles` runs on the cycle
/// counter, but 0x11 is what PMCEID advertises for it).
const fn event_number(e: Event) -> u32 {
    match e {
        Event::Cycles => EV_CPU_CYCLES,
        Event::Instructions => EV_INST_RETIRED,
        Event::L1dTlb => EV_L1D_TLB,
        Event::L1dTlbRefill => EV_L1D_TLB_REFILL,
        Event::L2dTlbRefill => EV_L2D_TLB_REFILL,
        Event::DtlbWalk => EV_DTLB_WALK,
    }
}

/// PMCEID0_EL0 bit n = common event n; PMCEID1_EL0 bit n = event 0x20 + n.
fn advertised(ceid0: u64, ceid1: u64, ev: u32) -> bool {
    match ev {
        0..=0x1F => ceid0 & (1 << ev) != 0,
        0x20..=0x3F => ceid1 & (1 << (ev - 0x20)) != 0,
        _ => false,
    }
}

/// Raw discovery registers, kept for the self-tests and reports.
#[derive(Clone, Copy, Debug)]
struct Raw {
    pmuver: u32,
    n: u32,
    ceid0: u64,
    ceid1: u64,
    midr: u64,
}

static INFO: Once<(PmuInfo, Raw)> = Once::new();
/// Set while a `CounterSet` owns the PMU.
static BUSY: AtomicBool = AtomicBool::new(false);

fn pmu_name(pmuver: u32) -> &'static str {
    match pmuver {
        1 => "arm PMUv3",
        4 => "arm PMUv3p1",
        5 => "arm PMUv3p4",
        6 => "arm PMUv3p5",
        7 => "arm PMUv3p7",
        8 => "arm PMUv3p8",
        9 => "arm PMUv3p9",
        _ => "arm PMUv3 (later revision)",
    }
}

fn discover() -> (PmuInfo, Raw) {
    let dfr0 = read_sysreg!("id_aa64dfr0_el1");
    let midr = read_sysreg!("midr_el1");
    let pmuver = ((dfr0 >> 8) & 0xF) as u32;
    let mut raw = Raw {
        pmuver,
        n: 0,
        ceid0: 0,
        ceid1: 0,
        midr,
    };
    let none = |why: &'static str| PmuInfo {
        name: "none",
        version: pmuver,
        nr_counters: 0,
        counter_bits: 0,
        source: "none",
        status: Availability::Unavailable(why),
        events: Event::ALL.map(|e| (e, Availability::Unavailable(why))),
    };
    if pmuver == 0 {
        return (none("ID_AA64DFR0_EL1.PMUVer = 0 (no PMU)"), raw);
    }
    if pmuver == 0xF {
        return (
            none("ID_AA64DFR0_EL1.PMUVer = 0xF (IMPLEMENTATION DEFINED PMU, not PMUv3)"),
            raw,
        );
    }
    // Reading these PMU registers has no side effects (and, with PMUVer
    // non-zero, they exist).
    let pmcr = read_sysreg!("pmcr_el0");
    raw.n = ((pmcr >> 11) & 0x1F) as u32;
    raw.ceid0 = read_sysreg!("pmceid0_el0");
    raw.ceid1 = read_sysreg!("pmceid1_el0");
    let implementer = (midr >> 24) & 0xFF;
    let inst = advertised(raw.ceid0, raw.ceid1, EV_INST_RETIRED);
    // QEMU's `-cpu max` reports implementer 0 ("reserved for software
    // use"); a named -cpu under TCG shows the real vendor, so for those we
    // cannot tell TCG from hardware and say so.
    let source = match (implementer, inst) {
        (0, true) => {
            "QEMU TCG -icount (MIDR implementer 0, INST_RETIRED advertised): instructions exact; cycles count instructions, not real cycles"
        }
        (0, false) => {
            "QEMU TCG (MIDR implementer 0): cycles are virtual time (1 GHz nominal = guest ns), not real cycles"
        }
        _ => {
            "MIDR names a real core: hardware or KVM vPMU counts (under TCG with a named -cpu, cycles are virtual time)"
        }
    };
    let events = Event::ALL.map(|e| {
        let ev = event_number(e);
        let a = if e == Event::Cycles {
            // The cycle counter is part of every PMUv3.
            Availability::Available
        } else if !advertised(raw.ceid0, raw.ceid1, ev) {
            Availability::Unavailable("not advertised in PMCEID0/1_EL0")
        } else if raw.n == 0 {
            Availability::Unavailable("PMCR_EL0.N = 0: no event counters at EL1")
        } else {
            Availability::Available
        };
        (e, a)
    });
    let info = PmuInfo {
        name: pmu_name(pmuver),
        version: pmuver,
        nr_counters: raw.n,
        counter_bits: if pmuver >= 6 { 64 } else { 32 },
        source,
        status: Availability::Available,
        events,
    };
    (info, raw)
}

/// Probe the PMU (once; later calls return the cached result).
pub fn probe() -> PmuInfo {
    INFO.call_once(discover).0
}

fn raw() -> Raw {
    INFO.call_once(discover).1
}

/// The raw discovery registers `(PMUVer, PMCR_EL0.N, PMCEID0, PMCEID1,
/// MIDR_EL1)`, for reports.
pub fn raw_ids() -> (u32, u32, u64, u64, u64) {
    let r = raw();
    (r.pmuver, r.n, r.ceid0, r.ceid1, r.midr)
}

/// Filter bits for a type register.
fn filter_bits(f: Filter) -> u64 {
    let mut v = 0;
    if !f.kernel {
        v |= TYPER_P;
    }
    if !f.user {
        v |= TYPER_U;
    }
    v
}

fn select(idx: u32) {
    // SAFETY: PMSELR_EL0 only selects which counter PMXEV* access; the
    // index is below PMCR_EL0.N (checked by the callers).
    unsafe { write_sysreg!("pmselr_el0", idx) };
    isb();
}

fn write_evtype(idx: u32, v: u64) {
    select(idx);
    // SAFETY: programs the selected event counter's type, a counter this
    // driver owns while BUSY is held.
    unsafe { write_sysreg!("pmxevtyper_el0", v) };
}

fn read_evtype(idx: u32) -> u64 {
    select(idx);
    read_sysreg!("pmxevtyper_el0")
}

fn write_evcnt(idx: u32, v: u64) {
    select(idx);
    // SAFETY: sets the value of a counter this driver owns.
    unsafe { write_sysreg!("pmxevcntr_el0", v) };
}

fn read_evcnt(idx: u32) -> u64 {
    select(idx);
    read_sysreg!("pmxevcntr_el0")
}

/// Where one event of a set is counted.
#[derive(Clone, Copy, Debug)]
struct Slot {
    event: Event,
    /// Event counter index, or `CYCLE_BIT` for the cycle counter.
    hw: u32,
}

/// A set of running (or stopped) counters; owns the PMU until dropped.
#[derive(Debug)]
pub struct CounterSet {
    slots: [Option<Slot>; Event::COUNT],
    /// PMCNTENSET bits of the counters in the set.
    mask: u32,
    filter: Filter,
    running: bool,
}

/// Program counters for `events` (counting the levels in `filter`), zero
/// them and start counting.  Fails without touching the PMU if any event is
/// unavailable, the set does not fit, or another set is live.
pub fn start(events: &[Event], filter: Filter) -> Result<CounterSet, PmuError> {
    let info = probe();
    if !filter.user && !filter.kernel {
        return Err(PmuError::EmptyFilter);
    }
    let mut slots = [None; Event::COUNT];
    let mut mask = 0u32;
    let mut next = 0u32;
    for (i, &e) in events.iter().enumerate() {
        if events[..i].contains(&e) {
            return Err(PmuError::Duplicate(e));
        }
        if let Availability::Unavailable(why) = info.event(e) {
            return Err(PmuError::Unavailable(e, why));
        }
        let hw = if e == Event::Cycles {
            CYCLE_BIT
        } else {
            next += 1;
            next - 1
        };
        slots[e.index()] = Some(Slot { event: e, hw });
        mask |= 1 << hw;
    }
    if next > info.nr_counters {
        return Err(PmuError::TooManyEvents {
            wanted: next as usize,
            counters: info.nr_counters,
        });
    }
    if BUSY.swap(true, Ordering::Acquire) {
        return Err(PmuError::Busy);
    }
    let fbits = filter_bits(filter);
    let lp = if info.counter_bits == 64 { PMCR_LP } else { 0 };
    // SAFETY: the writes below only configure the PMU, which this set now
    // owns (BUSY): counters off while programming, EL0 access off, no
    // overflow interrupts, stale overflow flags cleared, then the global
    // enable with the long cycle counter and no /64 divider.
    unsafe {
        write_sysreg!("pmcntenclr_el0", mask);
        write_sysreg!("pmuserenr_el0", 0u64);
        write_sysreg!("pmintenclr_el1", mask);
        write_sysreg!("pmovsclr_el0", mask);
    }
    isb();
    for s in slots.iter().flatten() {
        if s.hw == CYCLE_BIT {
            // SAFETY: filter and value of the cycle counter, owned by us.
            unsafe {
                write_sysreg!("pmccfiltr_el0", fbits);
                write_sysreg!("pmccntr_el0", 0u64);
            }
        } else {
            write_evtype(s.hw, fbits | u64::from(event_number(s.event)));
            write_evcnt(s.hw, 0);
        }
    }
    let pmcr = read_sysreg!("pmcr_el0");
    // SAFETY: as above; E only gates counters that are also set in
    // PMCNTENSET, which after this holds exactly our mask.
    unsafe {
        write_sysreg!("pmcr_el0", (pmcr & !PMCR_D) | PMCR_E | PMCR_LC | lp);
        write_sysreg!("pmcntenset_el0", mask);
    }
    isb();
    Ok(CounterSet {
        slots,
        mask,
        filter,
        running: true,
    })
}

impl CounterSet {
    /// The levels this set counts.
    pub fn filter(&self) -> Filter {
        self.filter
    }

    /// Events in the set.
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        self.slots.iter().flatten().map(|s| s.event)
    }

    /// Freeze the counters (values are kept).
    pub fn stop(&mut self) {
        isb();
        // SAFETY: disables only the counters of this set.
        unsafe { write_sysreg!("pmcntenclr_el0", self.mask) };
        isb();
        self.running = false;
    }

    /// Continue counting after `stop`.
    pub fn resume(&mut self) {
        isb();
        // SAFETY: enables only the counters of this set.
        unsafe { write_sysreg!("pmcntenset_el0", self.mask) };
        isb();
        self.running = true;
    }

    /// Zero every counter of the set (running or not) and its overflow flag.
    pub fn reset(&mut self) {
        for s in self.slots.iter().flatten() {
            if s.hw == CYCLE_BIT {
                // SAFETY: zeroes our cycle counter.
                unsafe { write_sysreg!("pmccntr_el0", 0u64) };
            } else {
                write_evcnt(s.hw, 0);
            }
        }
        // SAFETY: clears the overflow flags of our counters only.
        unsafe { write_sysreg!("pmovsclr_el0", self.mask) };
        isb();
    }

    /// Current values (a running set keeps counting).
    pub fn read(&self) -> Counts {
        isb();
        let ovs = read_sysreg!("pmovsset_el0");
        let long = probe().counter_bits == 64;
        let mut c = Counts::default();
        for s in self.slots.iter().flatten() {
            let (v, wrapped) = if s.hw == CYCLE_BIT {
                // 64-bit with PMCR_EL0.LC; a wrap takes centuries.
                (read_sysreg!("pmccntr_el0"), false)
            } else {
                let v = read_evcnt(s.hw);
                let v = if long { v } else { v & 0xFFFF_FFFF };
                (v, ovs & (1 << s.hw) != 0)
            };
            c.set(s.event, v, wrapped);
        }
        c
    }

    /// Whether the counters are enabled.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The raw type-register value programmed for `e` (PMEVTYPERn_EL0, or
    /// PMCCFILTR_EL0 for cycles), read back from the hardware.
    pub fn type_register(&self, e: Event) -> Option<u64> {
        let s = self.slots[e.index()]?;
        Some(if s.hw == CYCLE_BIT {
            read_sysreg!("pmccfiltr_el0")
        } else {
            read_evtype(s.hw)
        })
    }
}

impl Drop for CounterSet {
    fn drop(&mut self) {
        // SAFETY: turns our counters off; the PMU is then free for others.
        unsafe { write_sysreg!("pmcntenclr_el0", self.mask) };
        isb();
        BUSY.store(false, Ordering::Release);
    }
}

#[cfg(feature = "selftest")]
mod tests {
    use super::*;
    use ktest::{check, check_eq, ktest};

    /// A loop the compiler cannot remove.
    fn spin(n: u64) -> u64 {
        let mut x = 0u64;
        for i in 0..n {
            x = core::hint::black_box(x.wrapping_add(i));
        }
        x
    }

    ktest! {
        fn arch_pmu_probe_consistent() {
            let info = probe();
            let (pmuver, n, ceid0, ceid1, _) = raw_ids();
            check!(pmuver != 0, "no PMUv3 (PMUVer = 0): every QEMU -cpu used here has one");
            check_eq!(info.nr_counters, n);
            for (e, a) in info.events {
                if e == Event::Cycles {
                    check!(a.is_available(), "cycle counter unavailable");
                    continue;
                }
                let adv = advertised(ceid0, ceid1, event_number(e));
                check_eq!(a.is_available(), adv && n > 0, "availability of {}", e.name());
                if !adv {
                    check_eq!(a, Availability::Unavailable("not advertised in PMCEID0/1_EL0"));
                }
            }
            Ok(())
        }
    }

    ktest! {
        fn arch_pmu_unavailable_events_refused() {
            // An unavailable event is an error from `start`, never zeroes.
            for (e, a) in probe().events {
                if let Availability::Unavailable(why) = a {
                    match start(&[Event::Cycles, e], Filter::BOTH) {
                        Err(PmuError::Unavailable(got, w)) => {
                            check_eq!(got, e);
                            check_eq!(w, why);
                        }
                        other => return Err(ktest::format!("{}: {:?}", e.name(), other.map(|_| ()))),
                    }
                }
            }
            check!(!BUSY.load(Ordering::Relaxed), "a refused start left the PMU claimed");
            Ok(())
        }
    }

    ktest! {
        fn arch_pmu_cycles_advance() {
            let mut set = start(&[Event::Cycles], Filter::KERNEL).map_err(|e| ktest::format!("{e:?}"))?;
            check!(matches!(start(&[Event::Cycles], Filter::KERNEL), Err(PmuError::Busy)));
            let a = set.read().get(Event::Cycles).unwrap_or(0);
            spin(200_000);
            let b = set.read().get(Event::Cycles).unwrap_or(0);
            check!(b > a, "cycle counter did not advance: {a} -> {b}");
            set.stop();
            let c = set.read().get(Event::Cycles).unwrap_or(0);
            spin(100_000);
            let d = set.read().get(Event::Cycles).unwrap_or(0);
            check_eq!(c, d, "stopped counter moved");
            // Masked, so that no tick lands between reset and read (TCG
            // cycles are virtual time).
            let irq = crate::cpu::irq_save();
            set.reset();
            let z = set.read().get(Event::Cycles).unwrap_or(u64::MAX);
            crate::cpu::irq_restore(irq);
            check!(z < c, "reset did not zero: {z} after, {c} before");
            // Counting EL0 only: kernel code must not count.
            drop(set);
            let set = start(&[Event::Cycles], Filter::USER).map_err(|e| ktest::format!("{e:?}"))?;
            spin(100_000);
            let u = set.read().get(Event::Cycles).unwrap_or(u64::MAX);
            check_eq!(u, 0, "EL0-only cycle counter counted EL1 code");
            Ok(())
        }
    }

    ktest! {
        fn arch_pmu_filter_bits_read_back() {
            // Cycle counter: PMCCFILTR_EL0.
            for (f, want) in [
                (Filter::KERNEL, TYPER_U),
                (Filter::USER, TYPER_P),
                (Filter::BOTH, 0),
            ] {
                let set = start(&[Event::Cycles], f).map_err(|e| ktest::format!("{e:?}"))?;
                let v = set.type_register(Event::Cycles).unwrap_or(u64::MAX);
                check_eq!(v & (TYPER_P | TYPER_U), want, "PMCCFILTR_EL0 for {f:?}");
            }
            // An event counter, if there is one: program CPU_CYCLES (0x11)
            // on counter 0 directly and read PMEVTYPER0_EL0 back.
            if raw().n > 0 {
                check!(!BUSY.swap(true, Ordering::Acquire), "PMU busy");
                for f in [Filter::KERNEL, Filter::USER] {
                    let want = filter_bits(f) | u64::from(EV_CPU_CYCLES);
                    write_evtype(0, want);
                    let got = read_evtype(0);
                    if (got & (TYPER_P | TYPER_U | TYPER_EVT)) != want {
                        BUSY.store(false, Ordering::Release);
                        return Err(ktest::format!("PMEVTYPER0_EL0 {got:#x}, wrote {want:#x}"));
                    }
                }
                write_evtype(0, 0);
                BUSY.store(false, Ordering::Release);
            }
            Ok(())
        }
    }

    /// Retire exactly `2 * n` instructions (n >= 1): a `subs`/`b.ne` loop.
    #[inline(never)]
    fn retire(n: u64) {
        // SAFETY: register arithmetic and a local branch only.
        unsafe {
            core::arch::asm!(
                "2:",
                "subs {0}, {0}, #1",
                "b.ne 2b",
                inout(reg) n.max(1) => _,
                options(nomem, nostack),
            )
        };
    }

    /// Instructions counted around `retire(n)`, IRQs masked.
    fn counted(set: &CounterSet, n: u64) -> u64 {
        let irq = crate::cpu::irq_save();
        let a = set.read().get(Event::Instructions).unwrap_or(0);
        retire(n);
        let b = set.read().get(Event::Instructions).unwrap_or(0);
        crate::cpu::irq_restore(irq);
        b.wrapping_sub(a)
    }

    ktest! {
        /// INST_RETIRED counts exactly (2 per loop iteration) and EL0-only
        /// counting ignores EL1.  Only where the PMU advertises the event:
        /// `-icount` under TCG (the runner's `pmu-icount` boot, which must
        /// run it), hardware or a KVM vPMU; skipped elsewhere.
        fn arch_pmu_instructions_exact_if_advertised() {
            if !probe().event(Event::Instructions).is_available() {
                ktest::skip!("the PMU does not advertise INST_RETIRED (TCG without -icount)");
            }
            let set = start(&[Event::Instructions], Filter::KERNEL)
                .map_err(|e| ktest::format!("{e:?}"))?;
            const K: u64 = 100_000;
            // The read sequence around the loop costs the same each time, so
            // the difference is the loop alone: 2 instructions per iteration.
            let base = counted(&set, 1);
            let big = counted(&set, 1 + K);
            let diff = big.wrapping_sub(base);
            check!(
                diff.abs_diff(2 * K) <= 8,
                "INST_RETIRED: {diff} for {} loop instructions (base {base})",
                2 * K
            );
            // Counting EL0 only, kernel code does not count.
            drop(set);
            let set = start(&[Event::Instructions], Filter::USER)
                .map_err(|e| ktest::format!("{e:?}"))?;
            check_eq!(counted(&set, K), 0, "EL0-only INST_RETIRED counted EL1 code");
            Ok(())
        }
    }
}
