//! x86_64 PMU driver: Intel architectural perfmon and AMD core counters,
//! #GP-safe MSR access, and the portable counter API of `arch/API.md`
//! ("PMU").
//!
//! # Discovery
//! * Intel (and any vendor that fills it): CPUID.0xA gives the perfmon
//!   version, the number and width of the general-purpose counters, the
//!   "architectural event not available" bit vector (EBX, a set bit means
//!   absent) and, from version 2, the fixed counters.  Version 0 means no
//!   PMU.  GP counters: IA32_PERFEVTSELx (0x186+) / IA32_PMCx (0xC1+);
//!   fixed counters 0 (instructions) and 1 (core cycles): IA32_FIXED_CTR0/1
//!   (0x309/0x30A) enabled per ring in IA32_FIXED_CTR_CTRL (0x38D); from
//!   version 2 everything is gated by IA32_PERF_GLOBAL_CTRL (0x38F).
//! * AMD / Hygon: CPUID 0x8000_0001 ECX bit 23 (PerfCtrExtCore) selects six
//!   counters at 0xC001_0200 + 2i (control) / + 2i + 1 (count); otherwise
//!   the four legacy K7 counters PERF_CTL 0xC001_0000-3 / PERF_CTR
//!   0xC001_0004-7.  With PerfMonV2 (CPUID 0x8000_0022 EAX bit 0) the
//!   counters are also gated by PerfCntrGlobalCtl (0xC000_0301).  AMD has no
//!   CPUID bit for "legacy counters really count" (a hypervisor may accept
//!   the MSRs and never count), so the probe runs the cycle event over a
//!   busy loop and reports the PMU unavailable if it stays at zero.
//!
//! # Event encodings (event select / unit mask)
//! | event | Intel | AMD (Zen, family 17h+) |
//! |---|---|---|
//! | cycles | fixed counter 1, else arch event 0x3C/0x00 | 0x76/0x00 (cycles not halted) |
//! | instructions | fixed counter 0, else arch event 0xC0/0x00 | 0xC0/0x00 (retired instructions) |
//! | l1d_tlb | — (no x86 event) | — |
//! | l1d_tlb_refill | — (L1 misses are split over STLB-hit and walk events) | 0x45/0xFF LsL1DTlbMiss, all sizes, L2 hit or miss |
//! | l2d_tlb_refill | DTLB_LOAD_MISSES.MISS_CAUSES_A_WALK 0x08/0x01 (Haswell to Comet Lake; gone from Ice Lake on) | 0x45/0xF0 LsL1DTlbMiss, L2 miss (4K, coalesced, 2M, 1G) |
//! | dtlb_walk | DTLB_LOAD_MISSES.WALK_COMPLETED 0x08/0x0E (Haswell to Tiger/Rocket Lake), 0x12/0x0E (Golden Cove P-cores: Alder/Raptor Lake, Sapphire/Emerald Rapids) | — (no walk event common to all Zen generations; every L2 miss walks, see l2d_tlb_refill) |
//!
//! Intel TLB encodings are model specific, so they come from a small table
//! of family-6 models; other models report the TLB events unavailable.
//! None of this can be exercised on the development host (TCG and its KVM
//! both have no PMU), so the tables are from the vendors' event lists.
//!
//! # #GP safety
//! Every MSR access here goes through [`rdmsr_safe`] / [`wrmsr_safe`]: the
//! instruction has an entry in the exception fixup table (`.x86_extable`,
//! see probe.rs), so a #GP resumes after it with an error instead of
//! killing the kernel.
use core::arch::naked_asm;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Once;

use crate::cpu::{cpuid, cpuid_count, features};

pub use arch_common::pmu::*;

// ----- #GP-safe MSR access -----

/// `status` 0 = done, 1 = the instruction raised #GP (set by the fixup).
#[repr(C)]
struct MsrRet {
    status: u64,
    val: u64,
}

#[unsafe(naked)]
unsafe extern "C" fn rdmsr_safe_asm(_msr: u32) -> MsrRet {
    naked_asm!(
        "mov ecx, edi",
        "xor eax, eax",
        "xor edx, edx",
        "2:",
        "rdmsr",
        "shl rdx, 32",
        "mov eax, eax",
        "or rdx, rax",
        "xor eax, eax",
        "3:",
        "ret",
        ".pushsection .x86_extable,\"a\",@progbits",
        ".balign 8",
        ".quad 2b, 3b, 0",
        ".popsection",
    )
}

#[unsafe(naked)]
unsafe extern "C" fn wrmsr_safe_asm(_msr: u32, _val: u64) -> u64 {
    naked_asm!(
        "mov ecx, edi",
        "mov eax, esi",
        "mov rdx, rsi",
        "shr rdx, 32",
        "2:",
        "wrmsr",
        "xor eax, eax",
        "3:",
        "ret",
        ".pushsection .x86_extable,\"a\",@progbits",
        ".balign 8",
        ".quad 2b, 3b, 1",
        ".popsection",
    )
}

/// The MSR access raised #GP (the MSR does not exist, or the value was
/// refused).  Carries the MSR index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFault(pub u32);

/// Read an MSR; a #GP is caught and returned as `Err`.
pub fn rdmsr_safe(msr: u32) -> Result<u64, MsrFault> {
    // Masked, as the probes are, so that the fault record the fixup writes
    // is not interleaved with another thread's probe.
    let irq = crate::cpu::irq_save();
    // SAFETY: RDMSR only reads; if the MSR does not exist the #GP is
    // redirected by the fixup-table entry to the `ret` with status 1.
    let r = unsafe { rdmsr_safe_asm(msr) };
    crate::cpu::irq_restore(irq);
    if r.status == 0 {
        Ok(r.val)
    } else {
        Err(MsrFault(msr))
    }
}

/// Write an MSR; a #GP is caught and returned as `Err`.
///
/// # Safety
/// A write that does *not* fault takes effect: the caller must only write
/// MSRs and values that keep the kernel's invariants (PMU control and count
/// registers here; never EFER, the APIC base, syscall entry points...).
pub unsafe fn wrmsr_safe(msr: u32, val: u64) -> Result<(), MsrFault> {
    let irq = crate::cpu::irq_save();
    // SAFETY: the caller vouches for the effect of a successful write; a
    // #GP is redirected by the fixup entry to the `ret` with status 1.
    let r = unsafe { wrmsr_safe_asm(msr, val) };
    crate::cpu::irq_restore(irq);
    if r == 0 { Ok(()) } else { Err(MsrFault(msr)) }
}

// ----- MSRs and encodings -----

const IA32_PMC0: u32 = 0xC1;
const IA32_PERFEVTSEL0: u32 = 0x186;
const IA32_FIXED_CTR0: u32 = 0x309;
const IA32_FIXED_CTR_CTRL: u32 = 0x38D;
const IA32_PERF_GLOBAL_CTRL: u32 = 0x38F;
const AMD_LEGACY_CTL0: u32 = 0xC001_0000;
const AMD_LEGACY_CTR0: u32 = 0xC001_0004;
const AMD_EXT_CTL0: u32 = 0xC001_0200;
const AMD_EXT_CTR0: u32 = 0xC001_0201;
const AMD_GLOBAL_CTL: u32 = 0xC000_0301;

/// PERFEVTSEL / PERF_CTL bits (same layout on Intel and AMD for these).
const SEL_USR: u64 = 1 << 16;
const SEL_OS: u64 = 1 << 17;
const SEL_EN: u64 = 1 << 22;

/// A GP event select value: event[7:0], umask[15:8], AMD event[11:8] at 35:32.
const fn sel(event: u32, umask: u32) -> u64 {
    ((event & 0xFF) as u64) | (((umask & 0xFF) as u64) << 8) | ((((event >> 8) & 0xF) as u64) << 32)
}

/// How one event is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enc {
    /// Intel fixed counter i.
    Fixed(u32),
    /// A general-purpose counter with this event-select value.
    Gp(u64),
    /// Not countable, and why.
    No(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vendor {
    Intel,
    Amd,
    Other,
}

/// Everything `start` needs, decided once by the probe.
#[derive(Clone, Copy, Debug)]
struct Plan {
    nr_gp: u32,
    nr_fixed: u32,
    gp_bits: u32,
    fixed_bits: u32,
    ctl0: u32,
    ctr0: u32,
    /// MSR distance between counter i and i + 1.
    stride: u32,
    /// Intel IA32_PERF_GLOBAL_CTRL or AMD PerfCntrGlobalCtl, if present.
    global: Option<u32>,
    enc: [Enc; Event::COUNT],
}

const NO_PLAN: Plan = Plan {
    nr_gp: 0,
    nr_fixed: 0,
    gp_bits: 0,
    fixed_bits: 0,
    ctl0: 0,
    ctr0: 0,
    stride: 1,
    global: None,
    enc: [Enc::No(""); Event::COUNT],
};

fn vendor() -> Vendor {
    let l0 = cpuid(0);
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&l0.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&l0.edx.to_le_bytes());
    v[8..].copy_from_slice(&l0.ecx.to_le_bytes());
    match &v {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// (family, model) with the extended fields folded in.
fn family_model() -> (u32, u32) {
    let a = cpuid(1).eax;
    let base_f = (a >> 8) & 0xF;
    let mut model = (a >> 4) & 0xF;
    let family = if base_f == 0xF {
        base_f + ((a >> 20) & 0xFF)
    } else {
        base_f
    };
    if base_f == 6 || base_f == 0xF {
        model |= ((a >> 16) & 0xF) << 4;
    }
    (family, model)
}

/// Who runs us, from CPUID.1:ECX[31] and the 0x4000_0000 signature.
fn accelerator() -> &'static str {
    let f = features();
    if !f.hypervisor {
        return "bare metal (CPUID.1:ECX.hypervisor = 0): real counters";
    }
    let h = cpuid(0x4000_0000);
    let mut s = [0u8; 12];
    s[..4].copy_from_slice(&h.ebx.to_le_bytes());
    s[4..8].copy_from_slice(&h.ecx.to_le_bytes());
    s[8..].copy_from_slice(&h.edx.to_le_bytes());
    match &s {
        b"TCGTCGTCGTCG" => "QEMU TCG (hypervisor signature TCGTCGTCGTCG): QEMU emulates no x86 PMU",
        b"KVMKVMKVM\0\0\0" => "KVM (hypervisor signature KVMKVMKVM): counts only with a host vPMU",
        b"Microsoft Hv" => "Hyper-V (hypervisor signature)",
        b"VMwareVMware" => "VMware (hypervisor signature)",
        b"XenVMMXenVMM" => "Xen (hypervisor signature)",
        _ => "a hypervisor (CPUID.1:ECX.hypervisor = 1, unknown signature)",
    }
}

/// Intel model-specific dTLB walk encodings: (l2d_tlb_refill, dtlb_walk).
fn intel_tlb(family: u32, model: u32) -> (Enc, Enc) {
    const UNKNOWN: Enc = Enc::No("no dTLB event encoding known for this Intel model");
    if family != 6 {
        return (UNKNOWN, UNKNOWN);
    }
    match model {
        // Haswell, Broadwell, Skylake(-X), Kaby/Coffee/Comet/Cannon Lake.
        0x3C | 0x3F | 0x45 | 0x46 | 0x3D | 0x47 | 0x4F | 0x56 | 0x4E | 0x5E | 0x55 | 0x8E
        | 0x9E | 0xA5 | 0xA6 | 0x66 => (Enc::Gp(sel(0x08, 0x01)), Enc::Gp(sel(0x08, 0x0E))),
        // Ice Lake, Tiger Lake, Rocket Lake.
        0x7D | 0x7E | 0x6A | 0x6C | 0x8C | 0x8D | 0xA7 => (
            Enc::No("DTLB_LOAD_MISSES.MISS_CAUSES_A_WALK does not exist from Ice Lake on"),
            Enc::Gp(sel(0x08, 0x0E)),
        ),
        // Golden Cove / Raptor Cove P-cores.
        0x97 | 0x9A | 0xB7 | 0xBA | 0xBF | 0x8F | 0xCF => (
            Enc::No("DTLB_LOAD_MISSES.MISS_CAUSES_A_WALK does not exist from Ice Lake on"),
            Enc::Gp(sel(0x12, 0x0E)),
        ),
        _ => (UNKNOWN, UNKNOWN),
    }
}

const NO_L1D_TLB: Enc = Enc::No("x86 has no L1 dTLB access event");

/// Intel-style architectural perfmon from CPUID.0xA.
fn plan_intel() -> Result<(Plan, &'static str, u32), &'static str> {
    if features().max_leaf < 0xA {
        return Err("CPUID leaf 0xA not implemented (no architectural PMU)");
    }
    let a = cpuid_count(0xA, 0);
    let version = a.eax & 0xFF;
    if version == 0 {
        return Err("CPUID.0xA reports version 0 (no architectural PMU)");
    }
    let nr_gp = (a.eax >> 8) & 0xFF;
    let gp_bits = (a.eax >> 16) & 0xFF;
    let vec_len = (a.eax >> 24) & 0xFF;
    // EBX bit i set = architectural event i NOT available.
    let arch_ev = |i: u32| i < vec_len && a.ebx & (1 << i) == 0;
    let (nr_fixed, fixed_bits) = if version >= 2 {
        (a.edx & 0x1F, (a.edx >> 5) & 0xFF)
    } else {
        (0, 0)
    };
    if nr_gp == 0 && nr_fixed == 0 {
        return Err("CPUID.0xA reports no counters");
    }
    let (family, model) = family_model();
    let (l2, walk) = intel_tlb(family, model);
    let cycles = if nr_fixed >= 2 {
        Enc::Fixed(1)
    } else if arch_ev(0) {
        Enc::Gp(sel(0x3C, 0))
    } else {
        Enc::No("CPUID.0xA EBX: core-cycles event not available")
    };
    let instructions = if nr_fixed >= 1 {
        Enc::Fixed(0)
    } else if arch_ev(1) {
        Enc::Gp(sel(0xC0, 0))
    } else {
        Enc::No("CPUID.0xA EBX: instructions-retired event not available")
    };
    let plan = Plan {
        nr_gp,
        nr_fixed,
        gp_bits,
        fixed_bits,
        ctl0: IA32_PERFEVTSEL0,
        ctr0: IA32_PMC0,
        stride: 1,
        global: (version >= 2).then_some(IA32_PERF_GLOBAL_CTRL),
        enc: [
            cycles,
            instructions,
            NO_L1D_TLB,
            Enc::No("Intel counts L1 dTLB misses only as STLB hits + walks (two events)"),
            l2,
            walk,
        ],
    };
    let name = match version {
        1 => "intel arch perfmon v1",
        2 => "intel arch perfmon v2",
        3 => "intel arch perfmon v3",
        4 => "intel arch perfmon v4",
        5 => "intel arch perfmon v5",
        _ => "intel arch perfmon v6+",
    };
    Ok((plan, name, version))
}

/// AMD core performance counters.
fn plan_amd() -> (Plan, &'static str, u32) {
    let f = features();
    let ext = f.max_ext_leaf >= 0x8000_0001 && cpuid(0x8000_0001).ecx & (1 << 23) != 0;
    let v2 = f.max_ext_leaf >= 0x8000_0022 && cpuid(0x8000_0022).eax & 1 != 0;
    let (family, _) = family_model();
    let zen = family >= 0x17;
    let zen_only = Enc::No("AMD TLB encodings are known only for Zen (family 17h+)");
    let mut plan = Plan {
        nr_gp: 4,
        nr_fixed: 0,
        gp_bits: 48,
        fixed_bits: 0,
        ctl0: AMD_LEGACY_CTL0,
        ctr0: AMD_LEGACY_CTR0,
        stride: 1,
        global: None,
        enc: [
            Enc::Gp(sel(0x76, 0)),
            Enc::Gp(sel(0xC0, 0)),
            NO_L1D_TLB,
            if zen {
                Enc::Gp(sel(0x45, 0xFF))
            } else {
                zen_only
            },
            if zen {
                Enc::Gp(sel(0x45, 0xF0))
            } else {
                zen_only
            },
            Enc::No("AMD has no data-side walk event common to all Zen generations"),
        ],
    };
    let (name, version) = if ext {
        plan.nr_gp = 6;
        plan.ctl0 = AMD_EXT_CTL0;
        plan.ctr0 = AMD_EXT_CTR0;
        plan.stride = 2;
        if v2 {
            plan.nr_gp = (cpuid(0x8000_0022).ebx & 0xF).max(1);
            plan.global = Some(AMD_GLOBAL_CTL);
            ("amd core pmc (PerfMonV2)", 2)
        } else {
            ("amd core pmc (PerfCtrExtCore)", 1)
        }
    } else {
        ("amd core pmc (legacy K7 MSRs)", 0)
    };
    (plan, name, version)
}

// ----- low-level programming (the caller owns the PMU) -----

fn gp_ctl(p: &Plan, i: u32) -> u32 {
    p.ctl0 + p.stride * i
}
fn gp_ctr(p: &Plan, i: u32) -> u32 {
    p.ctr0 + p.stride * i
}

/// Write a PMU MSR.
fn wr(msr: u32, v: u64) -> Result<(), PmuError> {
    // SAFETY: only PMU control/count MSRs reach here (counter and control
    // registers named in `Plan`, the fixed-counter control and the global
    // control); they change nothing but what the counters count.
    unsafe { wrmsr_safe(msr, v) }.map_err(|f| PmuError::Fault(f.0))
}

fn rd(msr: u32) -> Result<u64, PmuError> {
    rdmsr_safe(msr).map_err(|f| PmuError::Fault(f.0))
}

/// Where one event of a set is counted.
#[derive(Clone, Copy, Debug)]
enum Hw {
    Fixed(u32),
    Gp(u32, u64),
}

fn ring_bits(f: Filter) -> u64 {
    (if f.user { SEL_USR } else { 0 }) | (if f.kernel { SEL_OS } else { 0 })
}

/// Program (not enable) and zero the counters in `hw`; returns the global
/// enable mask.
fn program(p: &Plan, hw: &[(Event, Hw)], f: Filter) -> Result<u64, PmuError> {
    let mut global = 0u64;
    let mut fixed_ctrl = 0u64;
    if let Some(g) = p.global {
        wr(g, 0)?;
    }
    for &(_, h) in hw {
        match h {
            Hw::Gp(i, s) => {
                wr(gp_ctl(p, i), 0)?;
                wr(gp_ctr(p, i), 0)?;
                // With a global control EN is set now and the global bit
                // gates; without one EN itself is the switch (see `enable`).
                let en = if p.global.is_some() { SEL_EN } else { 0 };
                wr(gp_ctl(p, i), s | ring_bits(f) | en)?;
                global |= 1 << i;
            }
            Hw::Fixed(i) => {
                wr(IA32_FIXED_CTR0 + i, 0)?;
                // Per fixed counter: bit 0 = ring 0, bit 1 = ring > 0.
                let bits = u64::from(f.kernel) | (u64::from(f.user) << 1);
                fixed_ctrl |= bits << (4 * i);
                global |= 1 << (32 + i);
            }
        }
    }
    if p.nr_fixed > 0 {
        wr(IA32_FIXED_CTR_CTRL, fixed_ctrl)?;
    }
    Ok(global)
}

fn enable(p: &Plan, hw: &[(Event, Hw)], f: Filter, mask: u64, on: bool) -> Result<(), PmuError> {
    match p.global {
        Some(g) => wr(g, if on { mask } else { 0 }),
        None => {
            for &(_, h) in hw {
                if let Hw::Gp(i, s) = h {
                    let en = if on { SEL_EN } else { 0 };
                    wr(gp_ctl(p, i), s | ring_bits(f) | en)?;
                }
            }
            Ok(())
        }
    }
}

fn read_hw(p: &Plan, h: Hw) -> Result<(u64, bool), PmuError> {
    let (v, bits) = match h {
        Hw::Gp(i, _) => (rd(gp_ctr(p, i))?, p.gp_bits),
        Hw::Fixed(i) => (rd(IA32_FIXED_CTR0 + i)?, p.fixed_bits),
    };
    let mask = if bits >= 64 || bits == 0 {
        u64::MAX
    } else {
        (1 << bits) - 1
    };
    Ok((v & mask, false))
}

/// Turn everything in `hw` off (best effort: used on errors and drop).
fn disable_all(p: &Plan, hw: &[(Event, Hw)]) {
    if let Some(g) = p.global {
        let _ = wr(g, 0);
    }
    for &(_, h) in hw {
        if let Hw::Gp(i, _) = h {
            let _ = wr(gp_ctl(p, i), 0);
        }
    }
    if p.nr_fixed > 0 {
        let _ = wr(IA32_FIXED_CTR_CTRL, 0);
    }
}

/// A loop the compiler cannot remove.
fn spin(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = core::hint::black_box(x.wrapping_add(i));
    }
    x
}

/// Does the cycles event advance over a busy loop?  (AMD has no CPUID bit
/// saying that accepted counter MSRs really count.)
fn cycles_count(p: &Plan) -> Result<bool, PmuError> {
    let h = match p.enc[Event::Cycles.index()] {
        Enc::Gp(s) => Hw::Gp(0, s),
        Enc::Fixed(i) => Hw::Fixed(i),
        // Nothing to check with; the events say what is missing.
        Enc::No(_) => return Ok(true),
    };
    let hw = [(Event::Cycles, h)];
    let r = (|| {
        let mask = program(p, &hw, Filter::KERNEL)?;
        enable(p, &hw, Filter::KERNEL, mask, true)?;
        spin(100_000);
        read_hw(p, hw[0].1)
    })();
    disable_all(p, &hw);
    Ok(r?.0 > 0)
}

// ----- probe -----

static INFO: Once<(PmuInfo, Plan)> = Once::new();
static BUSY: AtomicBool = AtomicBool::new(false);

fn discover() -> (PmuInfo, Plan) {
    let source = accelerator();
    let none = |name: &'static str, version: u32, why: &'static str| {
        (
            PmuInfo {
                name,
                version,
                nr_counters: 0,
                counter_bits: 0,
                source,
                status: Availability::Unavailable(why),
                events: Event::ALL.map(|e| (e, Availability::Unavailable(why))),
            },
            NO_PLAN,
        )
    };
    let (plan, name, version) = match vendor() {
        Vendor::Amd => plan_amd(),
        Vendor::Intel | Vendor::Other => match plan_intel() {
            Ok(x) => x,
            Err(why) => return none("none", 0, why),
        },
    };
    // Check that the counters exist (#GP) and count.
    match cycles_count(&plan) {
        Err(PmuError::Fault(_)) => {
            return none(
                name,
                version,
                "a PMU MSR raised #GP although CPUID lists the counters",
            );
        }
        Ok(false) if plan.ctl0 == AMD_LEGACY_CTL0 => {
            let arch_pmu = features().max_leaf >= 0xA && cpuid_count(0xA, 0).eax & 0xFF != 0;
            return none(
                name,
                version,
                if arch_pmu {
                    "PerfCtrExtCore (CPUID 0x80000001 ECX[23]) = 0 and the legacy K7 counters accept writes but stay 0 (no vPMU)"
                } else {
                    "CPUID.0xA reports version 0 (no architectural PMU), PerfCtrExtCore (CPUID 0x80000001 ECX[23]) = 0, and the legacy K7 counters accept writes but stay 0 (no vPMU)"
                },
            );
        }
        Ok(false) => {
            return none(
                name,
                version,
                "the cycles counter stayed 0 over a busy loop",
            );
        }
        _ => {}
    }
    let events = Event::ALL.map(|e| {
        let a = match plan.enc[e.index()] {
            Enc::No(why) => Availability::Unavailable(why),
            Enc::Gp(_) if plan.nr_gp == 0 => {
                Availability::Unavailable("no general-purpose counters")
            }
            _ => Availability::Available,
        };
        (e, a)
    });
    let info = PmuInfo {
        name,
        version,
        nr_counters: plan.nr_gp,
        counter_bits: plan.gp_bits,
        source,
        status: Availability::Available,
        events,
    };
    (info, plan)
}

/// Probe the PMU (once; later calls return the cached result).
pub fn probe() -> PmuInfo {
    INFO.call_once(discover).0
}

fn plan() -> Plan {
    INFO.call_once(discover).1
}

// ----- counter sets -----

/// A set of running (or stopped) counters; owns the PMU until dropped.
#[derive(Debug)]
pub struct CounterSet {
    hw: [(Event, Hw); Event::COUNT],
    n: usize,
    mask: u64,
    filter: Filter,
    running: bool,
}

/// Program counters for `events` (counting the rings in `filter`), zero
/// them and start counting.  Fails without leaving counters enabled if any
/// event is unavailable, the set does not fit, another set is live, or an
/// MSR access faults.
pub fn start(events: &[Event], filter: Filter) -> Result<CounterSet, PmuError> {
    let info = probe();
    if !filter.user && !filter.kernel {
        return Err(PmuError::EmptyFilter);
    }
    let p = plan();
    let mut hw = [(Event::Cycles, Hw::Fixed(0)); Event::COUNT];
    let mut n = 0;
    let mut next_gp = 0u32;
    for (i, &e) in events.iter().enumerate() {
        if events[..i].contains(&e) {
            return Err(PmuError::Duplicate(e));
        }
        if let Availability::Unavailable(why) = info.event(e) {
            return Err(PmuError::Unavailable(e, why));
        }
        let h = match p.enc[e.index()] {
            Enc::Fixed(i) => Hw::Fixed(i),
            Enc::Gp(s) => {
                next_gp += 1;
                Hw::Gp(next_gp - 1, s)
            }
            Enc::No(why) => return Err(PmuError::Unavailable(e, why)),
        };
        hw[n] = (e, h);
        n += 1;
    }
    if next_gp > p.nr_gp {
        return Err(PmuError::TooManyEvents {
            wanted: next_gp as usize,
            counters: p.nr_gp,
        });
    }
    if BUSY.swap(true, Ordering::Acquire) {
        return Err(PmuError::Busy);
    }
    let r = program(&p, &hw[..n], filter)
        .and_then(|mask| enable(&p, &hw[..n], filter, mask, true).map(|()| mask));
    match r {
        Ok(mask) => Ok(CounterSet {
            hw,
            n,
            mask,
            filter,
            running: true,
        }),
        Err(e) => {
            disable_all(&p, &hw[..n]);
            BUSY.store(false, Ordering::Release);
            Err(e)
        }
    }
}

impl CounterSet {
    /// The rings this set counts.
    pub fn filter(&self) -> Filter {
        self.filter
    }

    /// Events in the set.
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        self.hw[..self.n].iter().map(|h| h.0)
    }

    /// Freeze the counters (values are kept).
    pub fn stop(&mut self) {
        // An MSR that worked at `start` does not start faulting; ignore.
        let _ = enable(&plan(), &self.hw[..self.n], self.filter, self.mask, false);
        self.running = false;
    }

    /// Continue counting after `stop`.
    pub fn resume(&mut self) {
        let _ = enable(&plan(), &self.hw[..self.n], self.filter, self.mask, true);
        self.running = true;
    }

    /// Zero every counter of the set.
    pub fn reset(&mut self) {
        for &(_, h) in &self.hw[..self.n] {
            let _ = match h {
                Hw::Gp(i, _) => wr(gp_ctr(&plan(), i), 0),
                Hw::Fixed(i) => wr(IA32_FIXED_CTR0 + i, 0),
            };
        }
    }

    /// Current values (a running set keeps counting).
    pub fn read(&self) -> Counts {
        let p = plan();
        let mut c = Counts::default();
        for &(e, h) in &self.hw[..self.n] {
            if let Ok((v, o)) = read_hw(&p, h) {
                c.set(e, v, o);
            }
        }
        c
    }

    /// Whether the counters are enabled.
    pub fn is_running(&self) -> bool {
        self.running
    }
}

impl Drop for CounterSet {
    fn drop(&mut self) {
        disable_all(&plan(), &self.hw[..self.n]);
        BUSY.store(false, Ordering::Release);
    }
}

#[cfg(feature = "selftest")]
mod tests {
    use super::*;
    use ktest::{check, check_eq, ktest};

    /// Raises #GP everywhere: IA32_PKRS (0x6E1) bits 63:32 are reserved,
    /// and without PKS the MSR does not exist.  QEMU TCG, which reads and
    /// ignores unknown MSRs, checks exactly this (measured).
    const GP_WRITE: (u32, u64) = (0x6E1, 1 << 40);
    /// The x2APIC DFR: absent in x2APIC mode, and in xAPIC mode the whole
    /// range 0x800-0x8FF faults.  #GP on hardware and KVM (measured on this
    /// host's KVM); QEMU 7.2 TCG reads it as 0 instead.
    const GP_READ: u32 = 0x80E;

    ktest! {
        fn arch_pmu_msr_safe_survives_gp() {
            let (m, v) = GP_WRITE;
            // SAFETY: a reserved-bit write to IA32_PKRS faults and changes nothing.
            check_eq!(unsafe { wrmsr_safe(m, v) }, Err(MsrFault(m)));
            // Again, to be sure the fixup left everything usable.
            // SAFETY: as above.
            check_eq!(unsafe { wrmsr_safe(m, v) }, Err(MsrFault(m)));
            let tcg = accelerator().starts_with("QEMU TCG");
            match rdmsr_safe(GP_READ) {
                Err(f) => check_eq!(f, MsrFault(GP_READ)),
                Ok(v) => check!(tcg, "rdmsr {GP_READ:#x} gave {v:#x} instead of #GP"),
            }
            // A real MSR reads the same as the unchecked path.
            let efer = rdmsr_safe(crate::cpu::MSR_EFER).map_err(|e| ktest::format!("{e:?}"))?;
            // SAFETY: EFER exists on every x86_64 CPU.
            let raw = unsafe { crate::cpu::rdmsr(crate::cpu::MSR_EFER) };
            check_eq!(efer, raw);
            check!(efer & (1 << 8) != 0, "EFER.LME clear? {efer:#x}");
            Ok(())
        }
    }

    ktest! {
        fn arch_pmu_probe_is_honest() {
            let info = probe();
            match info.status {
                Availability::Unavailable(why) => {
                    check!(!why.is_empty());
                    for (e, a) in info.events {
                        check_eq!(a, Availability::Unavailable(why), "{}", e.name());
                    }
                    // Nothing can be started on a PMU that is not there.
                    match start(&[Event::Cycles], Filter::BOTH) {
                        Err(PmuError::Unavailable(Event::Cycles, w)) => check_eq!(w, why),
                        other => return Err(ktest::format!("{:?}", other.map(|_| ()))),
                    }
                }
                Availability::Available => {
                    // A PMU that claims cycles must count them.
                    if info.event(Event::Cycles).is_available() {
                        let set = start(&[Event::Cycles], Filter::KERNEL)
                            .map_err(|e| ktest::format!("{e:?}"))?;
                        let a = set.read().get(Event::Cycles).unwrap_or(0);
                        spin(100_000);
                        let b = set.read().get(Event::Cycles).unwrap_or(0);
                        check!(b > a, "cycles did not advance: {a} -> {b}");
                    }
                    // L1 dTLB accesses have no x86 event.
                    check!(!info.event(Event::L1dTlb).is_available());
                }
            }
            check!(!BUSY.load(Ordering::Relaxed), "PMU left claimed");
            Ok(())
        }
    }

    ktest! {
        fn arch_pmu_event_selects_encode() {
            check_eq!(sel(0x45, 0xF0), 0xF045);
            check_eq!(sel(0x0C0, 0), 0xC0);
            check_eq!(sel(0x1C0, 0x01), 0x1_0000_01C0);
            let (l2, walk) = intel_tlb(6, 0x55);
            check_eq!(l2, Enc::Gp(0x0108));
            check_eq!(walk, Enc::Gp(0x0E08));
            check!(matches!(intel_tlb(6, 0x01), (Enc::No(_), Enc::No(_))));
            Ok(())
        }
    }
}
