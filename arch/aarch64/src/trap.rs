//! Exception handling: the Rust side of the vectors in `trap.S`.
//!
//! * IRQs go to the GIC/timer code.
//! * Data and instruction aborts go first to the handler registered with
//!   `set_fault_handler`, then to the exception fixup table (`.ex_table`,
//!   used by the `probe_*` functions); anything else is reported in full and
//!   ends the run with `exit(false)`.
//! * IRQs (timer ticks, IPIs, device interrupts) run the IRQ-exit hook on
//!   every CPU, after the EOI.
//! * A synchronous exception taken with SP within a page of this CPU's
//!   stack limit (the guard page below the stack it runs on, per CPU:
//!   `percpu.rs`) is treated as a kernel stack overflow: the vector switches
//!   to this CPU's emergency stack before saving anything, so the report
//!   can still be printed.
use crate::console::{kprint, kprintln};
use crate::{Access, FaultInfo};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

core::arch::global_asm!(include_str!("trap.S"), options(raw));

/// The registers saved by the vectors (layout fixed by `trap.S`).
#[repr(C)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub sp: u64,
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
    pub fpcr: u64,
    pub fpsr: u64,
    pub q: [u128; 32],
}
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 816);

const KIND_OVERFLOW: u64 = 16;

const VECTOR_NAMES: [&str; 17] = [
    "EL1t synchronous",
    "EL1t IRQ",
    "EL1t FIQ",
    "EL1t SError",
    "EL1h synchronous",
    "EL1h IRQ",
    "EL1h FIQ",
    "EL1h SError",
    "EL0 (AArch64) synchronous",
    "EL0 (AArch64) IRQ",
    "EL0 (AArch64) FIQ",
    "EL0 (AArch64) SError",
    "EL0 (AArch32) synchronous",
    "EL0 (AArch32) IRQ",
    "EL0 (AArch32) FIQ",
    "EL0 (AArch32) SError",
    "EL1h synchronous on the stack guard (kernel stack overflow)",
];

/// Set this CPU's stack limit used for overflow detection (the bottom of
/// the stack it now runs on, with an unmapped guard page below it).  Per
/// CPU: `trap.S` reads it from this CPU's `PerCpu` (TPIDR_EL1).
pub fn set_stack_limit(bottom: u64) {
    crate::percpu::this()
        .stack_limit
        .store(bottom, Ordering::Relaxed);
}

/// SPSR.I: IRQs masked in the interrupted context.
const SPSR_I: u64 = 1 << 7;

static FAULT_HANDLER: AtomicUsize = AtomicUsize::new(0);

pub fn set_fault_handler(f: fn(&FaultInfo) -> bool) {
    FAULT_HANDLER.store(f as usize, Ordering::Release);
}

/// Swap the registered handler (`None` = no handler); returns the old one.
/// For tests that must put the kernel's handler back afterwards.
#[cfg(feature = "selftest")]
pub fn replace_fault_handler(f: Option<fn(&FaultInfo) -> bool>) -> Option<fn(&FaultInfo) -> bool> {
    let old = fault_handler();
    FAULT_HANDLER.store(f.map_or(0, |f| f as usize), Ordering::Release);
    old
}

pub fn fault_handler() -> Option<fn(&FaultInfo) -> bool> {
    let p = FAULT_HANDLER.load(Ordering::Acquire);
    if p == 0 {
        return None;
    }
    // SAFETY: a non-zero value was stored by `set_fault_handler` from a
    // function pointer of exactly this type.
    Some(unsafe { core::mem::transmute::<usize, fn(&FaultInfo) -> bool>(p) })
}

/// The fault caught by the last probe, per CPU (a probe runs with IRQs
/// masked, so its fault is recorded and taken on the same CPU).
pub static PROBE_FAULT: [spin::Mutex<Option<FaultInfo>>; mm::cpu::MAX_CPUS] =
    [const { spin::Mutex::new(None) }; mm::cpu::MAX_CPUS];

#[repr(C)]
struct ExEntry {
    insn: u64,
    fixup: u64,
}

fn ex_table() -> &'static [ExEntry] {
    unsafe extern "C" {
        static __ex_table_start: ExEntry;
        static __ex_table_end: ExEntry;
    }
    let start = &raw const __ex_table_start;
    let end = &raw const __ex_table_end;
    let n = (end as usize - start as usize) / core::mem::size_of::<ExEntry>();
    // SAFETY: the linker script brackets every `.ex_table` input section
    // (pairs of .quad written in trap.S, 8-aligned) with these symbols.
    unsafe { core::slice::from_raw_parts(start, n) }
}

fn find_fixup(pc: u64) -> Option<u64> {
    ex_table().iter().find(|e| e.insn == pc).map(|e| e.fixup)
}

unsafe extern "C" {
    static arch_semihost_hlt: u8;
    static arch_psci_hvc_insn: u8;
    static arch_psci_smc_insn: u8;
}

/// Instructions that may be UNDEFINED on some configurations and are skipped.
fn is_optional_insn(pc: u64) -> bool {
    pc == (&raw const arch_semihost_hlt) as u64
        || pc == (&raw const arch_psci_hvc_insn) as u64
        || pc == (&raw const arch_psci_smc_insn) as u64
}

/// ESR_EL1 exception classes.
mod ec {
    pub const UNKNOWN: u64 = 0x00;
    pub const INSN_ABORT_LOWER: u64 = 0x20;
    pub const INSN_ABORT_SAME: u64 = 0x21;
    pub const DATA_ABORT_LOWER: u64 = 0x24;
    pub const DATA_ABORT_SAME: u64 = 0x25;
}

fn ec_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason (UNDEFINED instruction)",
        0x01 => "trapped WFI/WFE",
        0x07 => "FP/SIMD access trap",
        0x0d => "branch target exception (BTI)",
        0x0e => "illegal execution state",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "trapped MSR/MRS/system instruction",
        0x1c => "pointer authentication failure",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort from the same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort from the same EL",
        0x26 => "SP alignment fault",
        0x2c => "FP exception",
        0x2f => "SError",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "other",
    }
}

/// Decode a DFSC/IFSC value: (description, level if any).
fn fsc_name(fsc: u64) -> (&'static str, Option<u64>) {
    let level = Some(fsc & 3);
    match fsc {
        0b000000..=0b000011 => ("address size fault", level),
        0b000100..=0b000111 => ("translation fault", level),
        0b001000..=0b001011 => ("access flag fault", level),
        0b001100..=0b001111 => ("permission fault", level),
        0b010000 => ("synchronous external abort", None),
        0b010001 => ("synchronous tag check fault", None),
        0b100001 => ("alignment fault", None),
        0b110000 => ("TLB conflict abort", None),
        0b110001 => ("unsupported atomic hardware update", None),
        _ => ("other fault status", None),
    }
}

/// FaultInfo for a data/instruction abort, or None for other exceptions.
fn abort_info(f: &TrapFrame) -> Option<FaultInfo> {
    let ec = f.esr >> 26;
    let fsc = f.esr & 0x3f;
    let access = match ec {
        ec::INSN_ABORT_LOWER | ec::INSN_ABORT_SAME => Access::Exec,
        ec::DATA_ABORT_LOWER | ec::DATA_ABORT_SAME => {
            // WnR (bit 6); cache maintenance (CM, bit 8) reports as a write.
            if f.esr & (1 << 6) != 0 && f.esr & (1 << 8) == 0 {
                Access::Write
            } else {
                Access::Read
            }
        }
        _ => return None,
    };
    Some(FaultInfo {
        addr: f.far,
        pc: f.elr,
        access,
        user: ec == ec::INSN_ABORT_LOWER || ec == ec::DATA_ABORT_LOWER,
        // The entry was present: a permission or access-flag fault.
        permission: (0b001000..=0b001111).contains(&fsc),
    })
}

#[unsafe(no_mangle)]
extern "C" fn arch_exception(frame: &mut TrapFrame, kind: u64) {
    match kind {
        1 | 5 | 9 | 13 => {
            crate::timer::handle_irq(frame.elr, frame.x[30], kind >= 8);
            // After the EOI and the tick hook (or the IPI hook), still
            // masked, on every CPU: may switch threads, so a reschedule
            // IPI takes effect at once.  Kinds 8.. are taken from EL0.
            crate::context::run_irq_exit_hook(kind >= 8);
        }
        0 | 4 | 8 | 12 => handle_sync(frame, kind),
        _ => report_and_exit(frame, kind, None),
    }
}

fn handle_sync(frame: &mut TrapFrame, kind: u64) {
    if kind == 8 {
        let info = abort_info(frame);
        if crate::user::el0_sync(frame, info) {
            return;
        }
        report_and_exit(frame, kind, info.as_ref());
    }
    let ec = frame.esr >> 26;
    if ec == ec::UNKNOWN && kind == 4 && is_optional_insn(frame.elr) {
        // HLT without -semihosting, HVC/SMC without a conduit: skip it.
        frame.elr += 4;
        return;
    }
    let Some(info) = abort_info(frame) else {
        report_and_exit(frame, kind, None);
    };
    if let Some(h) = fault_handler() {
        // As Linux: resolve the fault with IRQs unmasked when the faulting
        // code had them unmasked (SPSR.I clear), so timer ticks are not
        // held back by a long fault (zeroing a 2 MiB folio) and the
        // handler can yield to a preempted lock holder (the kernel's hook
        // never spins on an address space's locks).
        let irq_on = frame.spsr & SPSR_I == 0;
        if irq_on {
            crate::cpu::irq_enable();
        }
        let done = h(&info);
        if irq_on {
            crate::cpu::irq_disable();
        }
        if done {
            return;
        }
    }
    if kind == 4 {
        // For an instruction fault the probe is the `blr` before the return address.
        let pc = if info.access == Access::Exec {
            frame.x[30].wrapping_sub(4)
        } else {
            frame.elr
        };
        if let Some(fixup) = find_fixup(pc) {
            *PROBE_FAULT[crate::percpu::cpu_id()].lock() = Some(info);
            frame.elr = fixup;
            return;
        }
    }
    report_and_exit(frame, kind, Some(&info));
}

static REPORTING: AtomicBool = AtomicBool::new(false);

fn report_and_exit(f: &TrapFrame, kind: u64, info: Option<&FaultInfo>) -> ! {
    if REPORTING.swap(true, Ordering::SeqCst) {
        kprintln!(
            "\n*** nested exception while reporting (kind {}, ESR {:#x}, ELR {:#x}, FAR {:#x})",
            kind,
            f.esr,
            f.elr,
            f.far
        );
        crate::exit(false);
    }
    let name = VECTOR_NAMES.get(kind as usize).copied().unwrap_or("?");
    let ec = f.esr >> 26;
    let from_el0 = f.spsr & 0xf == 0;
    kprintln!(
        "\n*** unexpected exception: {} (from {})",
        name,
        if from_el0 { "EL0" } else { "EL1" }
    );
    kprintln!(
        "    ESR {:#010x}: EC {:#04x} {}, IL {}, ISS {:#x}",
        f.esr,
        ec,
        ec_name(ec),
        (f.esr >> 25) & 1,
        f.esr & 0x1ff_ffff
    );
    if matches!(ec, 0x20 | 0x21 | 0x24 | 0x25) {
        let fsc = f.esr & 0x3f;
        let (what, level) = fsc_name(fsc);
        kprint!(
            "    {} {:#04x}: {}",
            if ec < 0x24 { "IFSC" } else { "DFSC" },
            fsc,
            what
        );
        if let Some(l) = level {
            kprint!(" at level {}", l);
        }
        if ec >= 0x24 {
            kprint!(
                ", {}",
                if f.esr & (1 << 6) != 0 {
                    "write (WnR=1)"
                } else {
                    "read (WnR=0)"
                }
            );
            if f.esr & (1 << 8) != 0 {
                kprint!(", cache maintenance");
            }
        }
        kprintln!(
            "{}",
            if f.esr & (1 << 10) != 0 {
                ", FAR not valid"
            } else {
                ""
            }
        );
    }
    if let Some(i) = info {
        kprintln!(
            "    fault: addr {:#x} pc {:#x} {:?} user={} permission={}",
            i.addr,
            i.pc,
            i.access,
            i.user,
            i.permission
        );
    }
    let sp = if kind == KIND_OVERFLOW {
        use aarch64_cpu::registers::{Readable, SP_EL0};
        SP_EL0.get()
    } else {
        f.sp
    };
    kprintln!(
        "    FAR  {:#018x}  ELR {:#018x}  SPSR {:#010x}  SP {:#018x}",
        f.far,
        f.elr,
        f.spsr,
        sp
    );
    if kind == KIND_OVERFLOW {
        let limit = crate::percpu::this().stack_limit.load(Ordering::Relaxed);
        kprintln!(
            "    kernel stack overflow on CPU {}: SP {:#x} is at the guard page {:#x}..{:#x} below its stack",
            crate::percpu::cpu_id(),
            sp,
            limit.saturating_sub(4096),
            limit
        );
    }
    for i in (0..31).step_by(2) {
        if i + 1 < 31 {
            kprintln!(
                "    x{:<2} {:#018x}  x{:<2} {:#018x}",
                i,
                f.x[i],
                i + 1,
                f.x[i + 1]
            );
        } else {
            kprintln!("    x{:<2} {:#018x}", i, f.x[i]);
        }
    }
    crate::exit(false);
}

/// Install the vector table (already done by the entry code; idempotent).
pub fn install_vectors() {
    unsafe extern "C" {
        static arch_exception_vectors: u8;
    }
    let v = (&raw const arch_exception_vectors) as u64;
    // SAFETY: `arch_exception_vectors` is the 2K-aligned table in trap.S.
    unsafe { crate::regs::write_sysreg!("vbar_el1", v) };
    crate::regs::isb();
}
