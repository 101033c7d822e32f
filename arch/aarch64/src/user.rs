//! User mode: EL0 entry and return, SVC system calls, PAN-guarded user
//! copies with fault recovery, and unresolved EL0 exceptions.
//!
//! * Exceptions from EL0 arrive through the vectors in `trap.S` on SP_EL1
//!   (the running thread's kernel stack) with the full [`TrapFrame`] saved,
//!   SP_EL0 included.  `SVC #0` (EC 0x15) goes to the system call handler
//!   with IRQs unmasked; everything returns through the common restore path
//!   (`arch_exc_return`), which reloads SP_EL0, ELR and SPSR and `eret`s.
//! * No per-CPU pointer is needed for the entry (SP_EL1 switches in
//!   hardware).  Everything a user context needs is per CPU in hardware
//!   (SP_EL0 and TPIDR_EL0 travel with the thread: SP_EL0 in its frame,
//!   TPIDR_EL0 set by the scheduler through [`set_user_tls`]), so EL0 code
//!   runs on any CPU set up by `user_init` (CPU 0) or its own start-up
//!   (secondaries).
//! * **PAN** (FEAT_PAN): PSTATE.PAN is set at boot and on every exception
//!   entry (SCTLR_EL1.SPAN cleared), so EL1 cannot touch EL0 memory except
//!   inside the explicit windows (`msr pan, #0` … `msr pan, #1`) of the copy
//!   routines below.  Faults in a copy go to the kernel's fault handler
//!   first, then to the `.ex_table` fixup (the copy returns failure).
use crate::regs::write_sysreg;
use crate::trap::TrapFrame;
use aarch64_cpu::registers::{ID_AA64MMFR1_EL1, Readable, SCTLR_EL1, TPIDR_EL0, Writeable};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Registers of a user context: the trap frame.
pub type UserFrame = TrapFrame;

/// First address above user space (48-bit TTBR0 range, last page kept free).
pub const USER_TOP: u64 = 0x0000_FFFF_FFFF_F000;

const EC_SVC64: u64 = 0x15;
/// SCTLR_EL1.SPAN (the `aarch64-cpu` crate's SCTLR_EL1 has no field for it).
const SCTLR_SPAN: u64 = 1 << 23;
/// EL0 may use DC ZVA, read CTR_EL0 and run cache maintenance by VA (as
/// Linux allows; libc string functions use them).
const SCTLR_EL0_OPS: u64 = (1 << 14) | (1 << 15) | (1 << 26);

static PAN_ON: AtomicBool = AtomicBool::new(false);
static SYSCALL_HANDLER: AtomicUsize = AtomicUsize::new(0);
static USER_EXC_HANDLER: AtomicUsize = AtomicUsize::new(0);

impl TrapFrame {
    /// A frame that starts EL0 execution at `pc` with stack `sp` (EL0t,
    /// interrupts unmasked, FP state zero).
    pub fn new_user(pc: u64, sp: u64) -> TrapFrame {
        TrapFrame {
            x: [0; 31],
            sp,
            elr: pc,
            spsr: 0,
            esr: 0,
            far: 0,
            fpcr: 0,
            fpsr: 0,
            q: [0; 32],
        }
    }
    /// The system call number (x8).
    pub fn syscall_nr(&self) -> u64 {
        self.x[8]
    }
    /// The six system call arguments (x0..x5).
    pub fn syscall_args(&self) -> [u64; 6] {
        [
            self.x[0], self.x[1], self.x[2], self.x[3], self.x[4], self.x[5],
        ]
    }
    /// Set the value the system call returns (x0).
    pub fn set_return(&mut self, v: u64) {
        self.x[0] = v;
    }
    pub fn pc(&self) -> u64 {
        self.elr
    }
    pub fn sp(&self) -> u64 {
        self.sp
    }
    pub fn set_sp(&mut self, sp: u64) {
        self.sp = sp;
    }
    /// Whether the frame was taken from EL0.
    pub fn is_user_mode(&self) -> bool {
        self.spsr & 0xf == 0
    }
    /// Exception class and ESR of the frame.
    pub fn exception_name(&self) -> (u64, u64) {
        (self.esr >> 26, self.esr)
    }
    /// Copy of the frame.
    pub fn duplicate(&self) -> TrapFrame {
        TrapFrame { ..*self }
    }
}

/// Enable PAN (when the CPU has it) and EL0 cache/ZVA access on the
/// calling CPU (the kernel calls it on CPU 0; each secondary applies the
/// same settings to itself at start-up, see [`init_this_cpu`]).
pub fn user_init() {
    init_this_cpu();
}

/// The user-mode settings of one CPU, for the running CPU: SCTLR_EL1's EL0
/// cache/ZVA bits, SPAN cleared and PSTATE.PAN set when FEAT_PAN exists.
/// Idempotent.  Secondaries run it at start-up (`smp.rs`), so each one is
/// ready for EL0 before the scheduler can give it a user thread.
pub(crate) fn init_this_cpu() {
    let pan = !ID_AA64MMFR1_EL1.matches_all(ID_AA64MMFR1_EL1::PAN::Unsupported);
    let sctlr = SCTLR_EL1.get();
    let mut want = sctlr | SCTLR_EL0_OPS;
    if pan {
        want &= !SCTLR_SPAN;
    }
    // SAFETY: only the SPAN/DZE/UCT/UCI bits change; none affects the
    // kernel's translation or its own execution.  `msr pan, #1` (encoded
    // as an instruction word for assemblers without FEAT_PAN) only limits
    // EL1 access to EL0 memory, which the kernel does in the windows below.
    unsafe {
        write_sysreg!("sctlr_el1", want);
        core::arch::asm!("isb");
        if pan {
            core::arch::asm!(".inst 0xd500419f", options(nostack, preserves_flags));
            PAN_ON.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether PAN is enforced.
pub fn pan_enabled() -> bool {
    PAN_ON.load(Ordering::Relaxed)
}

/// See the x86 crate: SMEP's counterpart here is PXN on every user page
/// (the page-table format sets it), so this is always true.
pub fn smep_enabled() -> bool {
    true
}

/// PAN is arm64's SMAP.
pub fn smap_enabled() -> bool {
    pan_enabled()
}

/// Install the system call handler (runs with IRQs unmasked).
pub fn set_syscall_handler(f: fn(&mut UserFrame)) {
    SYSCALL_HANDLER.store(f as usize, Ordering::Release);
}

/// Install the handler for EL0 exceptions nothing resolved (it normally
/// ends the process; if it returns, the instruction is retried).
pub fn set_user_exception_handler(f: fn(&mut UserFrame, Option<&crate::FaultInfo>)) {
    USER_EXC_HANDLER.store(f as usize, Ordering::Release);
}

fn user_exception(frame: &mut TrapFrame, fault: Option<&crate::FaultInfo>) -> bool {
    let p = USER_EXC_HANDLER.load(Ordering::Acquire);
    if p == 0 {
        return false;
    }
    // SAFETY: only `set_user_exception_handler` stores non-zero values, all
    // of exactly this function type.
    let f =
        unsafe { core::mem::transmute::<usize, fn(&mut UserFrame, Option<&crate::FaultInfo>)>(p) };
    f(frame, fault);
    true
}

/// A synchronous exception from EL0 (vector kind 8).  Returns false if it
/// was not handled (the caller reports it).
pub(crate) fn el0_sync(frame: &mut TrapFrame, fault: Option<crate::FaultInfo>) -> bool {
    let ec = frame.esr >> 26;
    if ec == EC_SVC64 {
        let p = SYSCALL_HANDLER.load(Ordering::Acquire);
        crate::cpu::irq_enable();
        if p == 0 {
            frame.x[0] = (-38i64) as u64; // ENOSYS
        } else {
            // SAFETY: only `set_syscall_handler` stores non-zero values.
            let f = unsafe { core::mem::transmute::<usize, fn(&mut UserFrame)>(p) };
            f(frame);
        }
        crate::cpu::irq_disable();
        return true;
    }
    if let Some(info) = fault
        && let Some(h) = crate::trap::fault_handler()
    {
        // As Linux's `el0_da`: a user fault is resolved with IRQs unmasked
        // (EL0 always runs with them unmasked), as x86 does and as a
        // kernel-mode fault here does, so ticks, IPIs and the sampling
        // profile are not held back by a long fault (zeroing or copying
        // 2 MiB).
        crate::cpu::irq_enable();
        let done = h(&info);
        crate::cpu::irq_disable();
        if done {
            return true;
        }
    }
    user_exception(frame, fault.as_ref())
}

/// The user TLS register (TPIDR_EL0).
pub fn set_user_tls(v: u64) {
    // A plain software register of the running CPU; the kernel does not
    // use it (the scheduler sets it on every switch to a user thread).
    TPIDR_EL0.set(v);
}

pub fn user_tls() -> u64 {
    TPIDR_EL0.get()
}

unsafe extern "C" {
    fn arch_enter_user(frame: *const TrapFrame) -> !;
    fn arch_copy_from_user(dst: *mut u8, src: *const u8, len: usize, pan: u64) -> u64;
    fn arch_copy_to_user(dst: *mut u8, src: *const u8, len: usize, pan: u64) -> u64;
}

/// Start (or resume) EL0 execution with the registers in `frame`.  The
/// frame's copy sits on the running thread's kernel stack; SP_EL1 after the
/// `eret` is just above it, where the next EL0 exception saves its frame.
pub fn enter_user(frame: &TrapFrame) -> ! {
    let mut f = TrapFrame { ..*frame };
    // EL0t with D/A/I/F unmasked; keep only the condition flags.
    f.spsr &= 0xf000_0000;
    crate::cpu::irq_disable();
    // SAFETY: `f` is a complete EL0 frame; `arch_enter_user` loads it
    // through the vectors' restore path and `eret`s, never returning.
    unsafe { arch_enter_user(&f) }
}

// `arch_enter_user(frame)`: restore `frame` as if returning from an EL0
// exception.  `arch_copy_{from,to}_user(dst, src, len, pan)`: byte copies
// inside a PAN window (when `pan` != 0); they return 0, or 1 if a fault hit
// a listed instruction.  The user side uses the unprivileged LDTRB/STTRB, so
// the MMU checks EL0's rights (a PROT_NONE or read-only user page faults as
// it would for the program itself); the kernel side uses plain LDRB/STRB.
core::arch::global_asm!(
    ".section .text.user, \"ax\"",
    ".global arch_enter_user",
    "arch_enter_user:",
    "    mov     sp, x0",
    "    mov     x19, #8",
    "    b       arch_exc_return",
    "",
    ".global arch_copy_from_user",
    "arch_copy_from_user:",
    "    cbz     x3, 1f",
    "    .inst   0xd500409f", // msr pan, #0
    "1:  cbz     x2, 3f",
    "2:",
    ".Lcfu_ld: ldtrb w4, [x1]",
    "    strb    w4, [x0], #1",
    "    add     x1, x1, #1",
    "    subs    x2, x2, #1",
    "    b.ne    2b",
    "3:  mov     x5, #0",
    "5:  cbz     x3, 6f",
    "    .inst   0xd500419f", // msr pan, #1
    "6:  mov     x0, x5",
    "    ret",
    ".Lcfu_fix: mov x5, #1",
    "    b       5b",
    "",
    ".global arch_copy_to_user",
    "arch_copy_to_user:",
    "    cbz     x3, 1f",
    "    .inst   0xd500409f", // msr pan, #0
    "1:  cbz     x2, 3f",
    "2:  ldrb    w4, [x1], #1",
    ".Lctu_st: sttrb w4, [x0]",
    "    add     x0, x0, #1",
    "    subs    x2, x2, #1",
    "    b.ne    2b",
    "3:  mov     x5, #0",
    "5:  cbz     x3, 6f",
    "    .inst   0xd500419f", // msr pan, #1
    "6:  mov     x0, x5",
    "    ret",
    ".Lctu_fix: mov x5, #1",
    "    b       5b",
    ".pushsection .ex_table, \"a\"",
    ".balign 8",
    ".quad .Lcfu_ld, .Lcfu_fix",
    ".quad .Lctu_st, .Lctu_fix",
    ".popsection",
);

/// A user copy failed: the range is not user space or not mapped (EFAULT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EFault;

fn user_range_ok(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64)
        .is_some_and(|end| end <= USER_TOP)
}

/// Copy `dst.len()` bytes from user address `src`.
pub fn copy_from_user(dst: &mut [u8], src: u64) -> Result<(), EFault> {
    if !user_range_ok(src, dst.len()) {
        return Err(EFault);
    }
    if dst.is_empty() {
        return Ok(());
    }
    // SAFETY: `dst` is a live kernel buffer; the source is user space
    // (checked above), read inside the routine's PAN window, and a fault
    // there is resolved by the fault handler or caught by the fixup.
    let r = unsafe {
        arch_copy_from_user(
            dst.as_mut_ptr(),
            src as *const u8,
            dst.len(),
            u64::from(pan_enabled()),
        )
    };
    if r == 0 { Ok(()) } else { Err(EFault) }
}

/// Copy `src` to user address `dst`.
pub fn copy_to_user(dst: u64, src: &[u8]) -> Result<(), EFault> {
    if !user_range_ok(dst, src.len()) {
        return Err(EFault);
    }
    if src.is_empty() {
        return Ok(());
    }
    // SAFETY: as for `copy_from_user`, with the roles swapped.
    let r = unsafe {
        arch_copy_to_user(
            dst as *mut u8,
            src.as_ptr(),
            src.len(),
            u64::from(pan_enabled()),
        )
    };
    if r == 0 { Ok(()) } else { Err(EFault) }
}
