//! User mode: ring 3 entry and return, SYSCALL/SYSRET, SMAP-guarded user
//! copies with fault recovery, and unresolved user exceptions.
//!
//! * **System calls** enter at `x86_syscall_entry` (IA32_LSTAR).  The CPU
//!   does not switch stacks, so the entry `swapgs`es to this CPU's
//!   SYSCALL area (`percpu::SyscallArea`, IA32_KERNEL_GS_BASE), parks the
//!   user RSP there, loads the running thread's kernel stack top (TSS.RSP0, which the scheduler keeps
//!   current) and swaps GS back at once: the kernel itself never uses GS,
//!   so nothing else needs `swapgs`, and each CPU only needs its own
//!   KERNEL_GS_BASE for this to work on SMP.  The entry builds a full
//!   [`TrapFrame`] (the same layout interrupts use), so `fork` can copy the
//!   caller's registers and every way back to ring 3 reads one format.
//!   The handler runs with interrupts enabled; the return is `sysretq`
//!   (RCX/R11 are clobbered as the Linux ABI allows).
//! * **First entry / fork child**: [`enter_user`] loads a whole frame and
//!   `iretq`s.
//! * **SMAP** (CR4.SMAP when the CPU has it): the kernel touches user memory
//!   only inside `stac`/`clac` windows in the copy routines below.  A fault
//!   in a copy goes to the kernel's fault handler first (which resolves
//!   user faults through the address space) and otherwise to the
//!   `.x86_extable` fixup: the copy returns failure (EFAULT upstream).
//! * **User exceptions** the fault handler cannot resolve go to the hook set
//!   with [`set_user_exception_handler`] (the kernel kills the process).
//! * **kvm-pvm** (this host's `/dev/kvm`: guest ring 3 runs natively, guest
//!   ring 0 is emulated) executes a user `SYSCALL` only halfway: RCX = return
//!   RIP, R11 = RFLAGS, RIP = IA32_LSTAR and FMASK applied, but it stays in
//!   ring 3 (CS/SS keep the user selectors; the STAR layout makes no
//!   difference), so the fetch at LSTAR faults (#PF, error 0x15) with the
//!   user frame pushed on TSS.RSP0.  [`pvm_syscall_fault`] recognises that
//!   fault and runs the system call from the page-fault path; the return is
//!   the trap path's `iretq`.  Real hardware and TCG never get there.
use crate::cpu;
use crate::gdt::{USER_CS, USER_DS};
use crate::trap::TrapFrame;
use core::arch::{global_asm, naked_asm};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use x86_64::VirtAddr;
use x86_64::registers::control::{Cr4, Cr4Flags};
use x86_64::registers::model_specific::{
    Efer, EferFlags, FsBase, KernelGsBase, LStar, SFMask, Star,
};
use x86_64::registers::rflags::RFlags;
use x86_64::registers::segmentation::SegmentSelector;

/// Registers of a user context: the trap frame.
pub type UserFrame = TrapFrame;

/// First address above user space (the canonical lower half, minus the
/// last page so no user mapping touches the non-canonical boundary).
pub const USER_TOP: u64 = 0x0000_7FFF_FFFF_F000;

/// Vector number the syscall entry stores in its frame.
pub const SYSCALL_VECTOR: u64 = 0x100;

/// RFLAGS bits cleared on SYSCALL: TF, IF, DF, IOPL, NT, AC.
const FMASK: RFlags = RFlags::TRAP_FLAG
    .union(RFlags::INTERRUPT_FLAG)
    .union(RFlags::DIRECTION_FLAG)
    .union(RFlags::IOPL_LOW)
    .union(RFlags::IOPL_HIGH)
    .union(RFlags::NESTED_TASK)
    .union(RFlags::ALIGNMENT_CHECK);
/// RFLAGS a new user context starts with: IF and the always-one bit 1
/// (which `RFlags` has no name for).
const USER_RFLAGS: u64 = RFlags::INTERRUPT_FLAG.bits() | 0x2;

static SMAP_ON: AtomicBool = AtomicBool::new(false);
/// Set by the `nosmap` boot word (as Linux's): leave CR4.SMAP off even when
/// the CPU has it.  Needed under this host's kvm-pvm, which cannot emulate
/// `stac`/`clac` in guest ring 0.
static SMAP_REFUSED: AtomicBool = AtomicBool::new(false);

/// Keep SMAP off (call before [`user_init`]; boot already calls it when the
/// command line has `nosmap`, before any secondary CPU starts).
pub fn refuse_smap() {
    SMAP_REFUSED.store(true, Ordering::Relaxed);
}
static SYSCALL_HANDLER: AtomicUsize = AtomicUsize::new(0);
static USER_EXC_HANDLER: AtomicUsize = AtomicUsize::new(0);

impl TrapFrame {
    /// A frame that starts ring-3 execution at `pc` with stack `sp`.
    pub fn new_user(pc: u64, sp: u64) -> TrapFrame {
        TrapFrame {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rbp: 0,
            rdi: 0,
            rsi: 0,
            rdx: 0,
            rcx: 0,
            rbx: 0,
            rax: 0,
            vector: 0,
            error: 0,
            rip: pc,
            cs: u64::from(USER_CS),
            rflags: USER_RFLAGS,
            rsp: sp,
            ss: u64::from(USER_DS),
        }
    }
    /// The system call number (RAX).
    pub fn syscall_nr(&self) -> u64 {
        self.rax
    }
    /// The six system call arguments (RDI, RSI, RDX, R10, R8, R9).
    pub fn syscall_args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9]
    }
    /// Set the value the system call returns (RAX).
    pub fn set_return(&mut self, v: u64) {
        self.rax = v;
    }
    pub fn pc(&self) -> u64 {
        self.rip
    }
    pub fn sp(&self) -> u64 {
        self.rsp
    }
    pub fn set_sp(&mut self, sp: u64) {
        self.rsp = sp;
    }
    /// Whether the frame was taken from ring 3.
    pub fn is_user_mode(&self) -> bool {
        self.cs & 3 == 3
    }
    /// Copy of the frame.
    pub fn duplicate(&self) -> TrapFrame {
        TrapFrame { ..*self }
    }
    /// Short description of an exception frame (vector and error code).
    pub fn exception_name(&self) -> (u64, u64) {
        (self.vector, self.error)
    }
}

/// Set up SYSCALL/SYSRET, the per-CPU area, the FPU and SMAP on the
/// running CPU (see [`per_cpu_init`]).  The secondaries run the same at
/// start-up, so after this every online CPU can run user threads; calling
/// it again (on any CPU) is harmless.
pub fn user_init() {
    let irq = cpu::irq_save();
    per_cpu_init(crate::percpu::cpu_id());
    cpu::irq_restore(irq);
}

/// User-mode state of CPU `cpu` (the running one): EFER.SCE, STAR, LSTAR,
/// SFMASK, IA32_KERNEL_GS_BASE = its own SYSCALL area (whose `rsp0_ptr`
/// is its own TSS.RSP0), the x87/SSE unit (CR0/CR4 bits, initial state)
/// and CR4.SMAP when the CPU has it and `nosmap` was not given (boot reads
/// the word from the command line before any secondary starts, so every
/// CPU makes the same choice).  Idempotent.
pub(crate) fn per_cpu_init(cpu: usize) {
    let f = cpu::features();
    let area = crate::percpu::PERCPU[cpu].syscall.get();
    // SAFETY: the MSRs below are architectural in long mode; the values
    // point at this module's entry code and this CPU's static per-CPU data,
    // and the STAR selectors match the GDT layout in gdt.rs (SYSRET: user
    // CS 0x2b = 0x18 + 16, user SS 0x23 = 0x18 + 8; SYSCALL: kernel CS
    // 0x08, SS 0x10; `Star::write` checks those sums).  The area is only
    // written here and by this CPU's SYSCALL entry, which cannot run now
    // (interrupts masked, this CPU is in the kernel).
    unsafe {
        (*area).rsp0_ptr = crate::gdt::rsp0_ptr(cpu);
        KernelGsBase::write(VirtAddr::from_ptr(area));
        Efer::update(|e| e.insert(EferFlags::SYSTEM_CALL_EXTENSIONS));
        Star::write(
            SegmentSelector(USER_CS),
            SegmentSelector(USER_DS),
            SegmentSelector(crate::gdt::KERNEL_CS),
            SegmentSelector(crate::gdt::KERNEL_DS),
        )
        .expect("GDT layout unfit for SYSCALL/SYSRET");
        LStar::write(VirtAddr::new(x86_syscall_entry as *const () as u64));
        SFMask::write(FMASK);
        crate::fpu::fpu_init();
        if f.smap && !SMAP_REFUSED.load(Ordering::Relaxed) {
            Cr4::update(|c| c.insert(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION));
            SMAP_ON.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether SMAP is enforced (and SMEP, which boot turns on when present).
pub fn smap_enabled() -> bool {
    SMAP_ON.load(Ordering::Relaxed)
}

/// Close a user-access window the trapped code had open (RFLAGS.AC, as
/// Linux's entry code does): handlers run with SMAP enforced, and a fault
/// handler that yields does not hand the window to the next thread
/// (threads do not switch RFLAGS).  `iretq` restores the interrupted
/// code's AC from its frame.
#[inline]
pub fn clear_ac() {
    if smap_enabled() {
        // SAFETY: CLAC only clears RFLAGS.AC; it exists whenever SMAP_ON
        // is set (SMAP was detected and enabled).
        unsafe { core::arch::asm!("clac", options(nomem, nostack)) };
    }
}

/// Whether the CPU enforces SMEP (CR4.SMEP).
pub fn smep_enabled() -> bool {
    Cr4::read().contains(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION)
}

/// Install the system call handler: called with interrupts enabled on the
/// thread's kernel stack; it reads arguments from and writes the result to
/// the frame.
pub fn set_syscall_handler(f: fn(&mut UserFrame)) {
    SYSCALL_HANDLER.store(f as usize, Ordering::Release);
}

/// Install the handler for exceptions from ring 3 that nothing resolved
/// (arguments: the frame and, for page faults, the fault).  It normally
/// ends the process and does not return; if it returns, the instruction is
/// retried.
pub fn set_user_exception_handler(f: fn(&mut UserFrame, Option<&crate::FaultInfo>)) {
    USER_EXC_HANDLER.store(f as usize, Ordering::Release);
}

/// Called by the trap dispatcher for an exception from ring 3 that was not
/// resolved.  Returns if no handler is installed (the caller then reports).
pub(crate) fn user_exception(frame: &mut TrapFrame, fault: Option<&crate::FaultInfo>) {
    let p = USER_EXC_HANDLER.load(Ordering::Acquire);
    if p != 0 {
        // SAFETY: only `set_user_exception_handler` stores non-zero values,
        // all of exactly this function type.
        let f = unsafe {
            core::mem::transmute::<usize, fn(&mut UserFrame, Option<&crate::FaultInfo>)>(p)
        };
        f(frame, fault);
    }
}

/// The user FS base (TLS pointer, `arch_prctl(ARCH_SET_FS)`).
pub fn set_user_tls(v: u64) {
    // The kernel does not use FS.  A non-canonical value (which would #GP
    // on the WRMSR) is sign-extended from bit 47 instead.
    FsBase::write(VirtAddr::new_truncate(v));
}

pub fn user_tls() -> u64 {
    FsBase::read().as_u64()
}

/// RFLAGS.IF.
const RFLAGS_IF: u64 = RFlags::INTERRUPT_FLAG.bits();
/// RFLAGS bits a user context may choose (CF, PF, AF, ZF, SF, DF, OF).
const USER_RFLAGS_MASK: u64 = RFlags::CARRY_FLAG
    .union(RFlags::PARITY_FLAG)
    .union(RFlags::AUXILIARY_CARRY_FLAG)
    .union(RFlags::ZERO_FLAG)
    .union(RFlags::SIGN_FLAG)
    .union(RFlags::DIRECTION_FLAG)
    .union(RFlags::OVERFLOW_FLAG)
    .bits();
const _: () = assert!(USER_RFLAGS_MASK == 0xCD5);

/// The kvm-pvm workaround (see the module comment): called for a page fault
/// from ring 3.  If it is an instruction fetch at the SYSCALL entry with
/// RFLAGS.IF clear, it is a SYSCALL that the hypervisor left in ring 3:
/// make the frame the one the SYSCALL entry would have built, run the
/// system call, and return true (the caller `iretq`s to RCX with R11's
/// flags, as `sysretq` would).  Ring 3 cannot run with IF clear (IOPL is
/// 0), so a user jump to that address never matches; the flags are
/// sanitised anyway.
pub(crate) fn pvm_syscall_fault(frame: &mut TrapFrame, cr2: u64) -> bool {
    let entry = x86_syscall_entry as *const () as u64;
    if frame.rip != entry || cr2 != entry || frame.rflags & RFLAGS_IF != 0 {
        return false;
    }
    if !PVM_SYSCALL_SEEN.swap(true, Ordering::Relaxed) {
        crate::console::kprint!(
            "x86_64: SYSCALL from ring 3 stayed in ring 3 (kvm-pvm); system calls go through #PF at LSTAR\n"
        );
    }
    frame.rip = frame.rcx;
    frame.rflags = (frame.r11 & USER_RFLAGS_MASK) | USER_RFLAGS;
    frame.cs = u64::from(USER_CS);
    frame.ss = u64::from(USER_DS);
    frame.vector = SYSCALL_VECTOR;
    frame.error = 0;
    syscall_rust(frame);
    true
}

/// Whether [`pvm_syscall_fault`] has fired (it reports the first time).
static PVM_SYSCALL_SEEN: AtomicBool = AtomicBool::new(false);

extern "C" fn syscall_rust(frame: &mut TrapFrame) {
    let p = SYSCALL_HANDLER.load(Ordering::Acquire);
    cpu::irq_enable();
    if p == 0 {
        frame.rax = (-38i64) as u64; // ENOSYS
    } else {
        // SAFETY: only `set_syscall_handler` stores non-zero values, all
        // `fn(&mut UserFrame)`.
        let f = unsafe { core::mem::transmute::<usize, fn(&mut UserFrame)>(p) };
        f(frame);
    }
    cpu::irq_disable();
}

// The SYSCALL entry.  On entry: RCX = user RIP, R11 = user RFLAGS, RSP =
// user stack, IF/AC/DF cleared by FMASK.  The frame pushed matches
// `TrapFrame` (ss, rsp, rflags, cs, rip, error, vector, then rax..r15).
global_asm!(
    ".section .text.user,\"ax\",@progbits",
    ".global x86_syscall_entry",
    "x86_syscall_entry:",
    "swapgs",
    "mov gs:[8], rsp",
    "mov rsp, gs:[0]",
    "mov rsp, [rsp]",
    "push {user_ds}",
    "push qword ptr gs:[8]",
    "swapgs",
    "push r11",
    "push {user_cs}",
    "push rcx",
    "push 0",
    "push {vector}",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rdi, rsp",
    "call {handler}",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "add rsp, 16",
    // rip, cs, rflags, rsp, ss: SYSRET takes RIP from RCX, RFLAGS from R11.
    "pop rcx",
    "add rsp, 8",
    "pop r11",
    "pop rsp",
    "sysretq",
    user_ds = const USER_DS as u64,
    user_cs = const USER_CS as u64,
    vector = const SYSCALL_VECTOR,
    handler = sym syscall_rust,
);

#[unsafe(naked)]
unsafe extern "C" fn enter_user_asm(frame: *const TrapFrame) -> ! {
    naked_asm!(
        "cli",
        "mov rsp, rdi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        "add rsp, 16",
        "iretq",
    )
}

/// Start (or resume) ring-3 execution with the registers in `frame`.
/// The frame may live anywhere on the running thread's kernel stack: once
/// in ring 3, the next entry starts afresh at TSS.RSP0.
pub fn enter_user(frame: &TrapFrame) -> ! {
    let mut f = TrapFrame { ..*frame };
    f.cs = u64::from(USER_CS);
    f.ss = u64::from(USER_DS);
    // Keep IF on and IOPL 0 whatever the frame says.
    f.rflags = (f.rflags & USER_RFLAGS_MASK) | USER_RFLAGS;
    // SAFETY: `f` is a complete ring-3 frame (user selectors, IF set); the
    // asm loads it and leaves for ring 3, never returning here.
    unsafe { enter_user_asm(&f) }
}

// User copies.  `x86_user_copy(dst, src, len)` returns 0, or 1 if a fault
// was caught (the `rep movsb` has a fixup entry); the caller has checked
// that the user side lies below USER_TOP.  stac/clac only when SMAP is on
// (they are #UD on CPUs without it).
global_asm!(
    ".section .text.user,\"ax\",@progbits",
    ".global x86_user_copy",
    "x86_user_copy:",
    "xor eax, eax",
    "mov rcx, rdx",
    "cmp byte ptr [rip + {smap}], 0",
    "je 1f",
    "stac",
    "1:",
    "2: rep movsb",
    "3:",
    "cmp byte ptr [rip + {smap}], 0",
    "je 4f",
    "clac",
    "4:",
    "ret",
    ".pushsection .x86_extable,\"a\"",
    ".balign 8",
    ".quad 2b, 3b, 0",
    ".popsection",
    smap = sym SMAP_ON,
);

unsafe extern "C" {
    fn x86_syscall_entry();
    fn x86_user_copy(dst: *mut u8, src: *const u8, len: usize) -> u64;
}

/// A user copy failed: the range is not user space or not mapped (EFAULT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EFault;

fn user_range_ok(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64)
        .is_some_and(|end| end <= USER_TOP)
}

/// Copy `dst.len()` bytes from user address `src`.  `Err(EFault)` if the range
/// is not user space or a page cannot be faulted in (EFAULT).
pub fn copy_from_user(dst: &mut [u8], src: u64) -> Result<(), EFault> {
    if !user_range_ok(src, dst.len()) {
        return Err(EFault);
    }
    if dst.is_empty() {
        return Ok(());
    }
    // SAFETY: `dst` is a live kernel buffer of `len` bytes; the source is
    // user space (checked above), read inside the routine's SMAP window, and
    // any fault there is resolved or caught by its fixup entry.
    let r = unsafe { x86_user_copy(dst.as_mut_ptr(), src as *const u8, dst.len()) };
    if r == 0 { Ok(()) } else { Err(EFault) }
}

/// Copy `src` to user address `dst`.  `Err(EFault)` as for [`copy_from_user`].
pub fn copy_to_user(dst: u64, src: &[u8]) -> Result<(), EFault> {
    if !user_range_ok(dst, src.len()) {
        return Err(EFault);
    }
    if src.is_empty() {
        return Ok(());
    }
    // SAFETY: as for `copy_from_user`, with the roles swapped.
    let r = unsafe { x86_user_copy(dst as *mut u8, src.as_ptr(), src.len()) };
    if r == 0 { Ok(()) } else { Err(EFault) }
}
