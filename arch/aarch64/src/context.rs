//! Kernel-thread context switching, the IRQ-exit hook used for preemption,
//! and loading a lower-half (user) root into TTBR0_EL1 with an ASID.
//!
//! SMP: all the "current" state here is a register of the running CPU
//! (SP, TTBR0_EL1 with its ASID, TPIDR_EL0) or its `PerCpu` (the stack
//! limit), so every function acts on the CPU it runs on; the hooks are
//! shared.  The hardware ASID loaded with a root comes from the
//! generation allocator in [`crate::asid`], keyed by the kernel's stable
//! per-space id: within one generation an ASID belongs to one root.
//!
//! A switched-out thread's state is its stack pointer: `switch_context`
//! stores the AAPCS64 callee-saved registers (x19-x28, fp, lr), the
//! callee-saved FP/SIMD halves d8-d15 and FPCR in a 176-byte frame on the
//! thread's own stack and keeps SP in its [`Context`].  Everything else is
//! dead across the call by the ABI; when the switch happens inside an IRQ,
//! the exception frame (all GPRs and all of q0-q31) already sits on the
//! interrupted thread's stack.  DAIF is not switched: every switch happens
//! with IRQs masked, and each side restores its own mask afterwards.
use crate::paging;
use crate::regs::{isb, read_sysreg, write_sysreg};
use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable, TCR_EL1, TTBR0_EL1};
use core::arch::naked_asm;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use mm::cpu::MAX_CPUS;

/// Bytes `switch_context` keeps on the stack of a switched-out thread.
const FRAME: u64 = 176;

/// The saved state of a thread that is not running: its stack pointer.
#[derive(Debug, Default)]
pub struct Context {
    sp: AtomicU64,
}

impl Context {
    /// A context to be filled by the first `switch_context` away from the
    /// running thread (the boot thread).
    pub const fn empty() -> Self {
        Self {
            sp: AtomicU64::new(0),
        }
    }

    /// Make this context one that, when switched to, starts `entry(arg)` on the stack
    /// ending at `stack_top` (16-byte aligned), with IRQs masked as at every
    /// switch: `entry` unmasks them once it has finished its post-switch
    /// bookkeeping.  `entry` must not return.  `const fn empty` lets
    /// contexts live in statics.
    ///
    /// # Safety
    /// `[stack_top - 176, stack_top)` must be mapped, writable memory owned
    /// by the new thread and unused by anything else.
    pub unsafe fn init_thread(&self, stack_top: u64, entry: extern "C" fn(usize) -> !, arg: usize) {
        assert!(stack_top.is_multiple_of(16), "unaligned thread stack");
        let mut frame = [0u64; (FRAME / 8) as usize];
        frame[0] = entry as usize as u64; // x19
        frame[1] = arg as u64; // x20
        frame[11] = thread_trampoline as extern "C" fn() -> ! as usize as u64; // x30
        frame[20] = read_sysreg!("fpcr");
        let sp = stack_top - FRAME;
        // SAFETY: the caller guarantees the frame below `stack_top` is
        // writable and owned by the new thread.
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), sp as *mut u64, frame.len()) };
        self.sp.store(sp, Ordering::Release);
    }
}

/// First code a new thread runs: `entry(arg)`, with a zeroed frame chain.
#[unsafe(naked)]
extern "C" fn thread_trampoline() -> ! {
    naked_asm!(
        "mov x0, x20",
        "mov x29, xzr",
        "mov x30, xzr",
        "blr x19",
        "brk #0x5c",
    )
}

#[unsafe(naked)]
unsafe extern "C" fn switch_asm(prev_sp: *mut u64, next_sp: u64) {
    naked_asm!(
        "sub sp, sp, #176",
        "stp x19, x20, [sp, #0]",
        "stp x21, x22, [sp, #16]",
        "stp x23, x24, [sp, #32]",
        "stp x25, x26, [sp, #48]",
        "stp x27, x28, [sp, #64]",
        "stp x29, x30, [sp, #80]",
        "stp d8, d9, [sp, #96]",
        "stp d10, d11, [sp, #112]",
        "stp d12, d13, [sp, #128]",
        "stp d14, d15, [sp, #144]",
        "mrs x9, fpcr",
        "str x9, [sp, #160]",
        "mov x9, sp",
        "str x9, [x0]",
        "mov sp, x1",
        "ldp x19, x20, [sp, #0]",
        "ldp x21, x22, [sp, #16]",
        "ldp x23, x24, [sp, #32]",
        "ldp x25, x26, [sp, #48]",
        "ldp x27, x28, [sp, #64]",
        "ldp x29, x30, [sp, #80]",
        "ldp d8, d9, [sp, #96]",
        "ldp d10, d11, [sp, #112]",
        "ldp d12, d13, [sp, #128]",
        "ldp d14, d15, [sp, #144]",
        "ldr x9, [sp, #160]",
        "msr fpcr, x9",
        "add sp, sp, #176",
        "ret",
    )
}

/// Save the running thread's callee-saved state in `prev` and resume the
/// thread saved in `next`.  Returns when some CPU switches back to `prev`.
///
/// # Safety
/// IRQs must be masked.  `next` must hold a context saved by
/// `switch_context` or made by `Context::init_thread`, whose thread is not
/// running anywhere and whose stack is still mapped; `prev` must not be
/// resumed by anyone before this call has stored into it (the caller's lock
/// hand-over guarantees that).
pub unsafe fn switch_context(prev: &Context, next: &Context) {
    let next_sp = next.sp.load(Ordering::Acquire);
    // SAFETY: per the contract `next_sp` is a frame pushed by `switch_asm` or
    // built by `init_thread`; `prev.sp` is a valid u64 for the store.
    unsafe { switch_asm(prev.sp.as_ptr(), next_sp) };
}

/// Tell the exception code which kernel stack the running thread uses:
/// `bottom` (with an unmapped guard page below) becomes the stack limit for
/// overflow reports.  `top` is unused on arm64 (SP_EL1 is the stack itself).
pub fn set_thread_stack(bottom: u64, _top: u64) {
    crate::trap::set_stack_limit(bottom);
}

static IRQ_EXIT_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Install the function run at the end of every IRQ, after the EOI and the
/// tick hook, with IRQs masked, on the interrupted thread's stack.  It may
/// switch threads; the exception returns when the interrupted thread is
/// switched back in (its ELR/SPSR are in its own trap frame).
///
/// The argument says whether the interrupt came from user mode (only then
/// may the hook end a killed thread: interrupted kernel code may hold
/// references and locks).
pub fn set_irq_exit_hook(f: fn(bool)) {
    IRQ_EXIT_HOOK.store(f as usize, Ordering::Release);
}

pub(crate) fn run_irq_exit_hook(from_user: bool) {
    let p = IRQ_EXIT_HOOK.load(Ordering::Acquire);
    if p != 0 {
        // SAFETY: only `set_irq_exit_hook` stores non-zero values, all `fn(bool)`s.
        let f = unsafe { core::mem::transmute::<usize, fn(bool)>(p) };
        f(from_user);
    }
}

// ---------------------------------------------------------------------------
// Lower-half roots (TTBR0_EL1 with ASID).

const TTBR_BADDR: u64 = 0x0000_FFFF_FFFF_FFFE;

static ASID16: AtomicBool = AtomicBool::new(false);
/// The key (`switch_user_root`'s `asid`) each CPU last loaded, for
/// `current_user_root`.  Written and read by its own CPU with IRQs masked.
static LOADED_KEY: [AtomicU16; MAX_CPUS] = [const { AtomicU16::new(0) }; MAX_CPUS];

/// Set TCR_EL1.AS on the running CPU when ID_AA64MMFR0_EL1.ASIDBits says
/// 16-bit ASIDs exist, then flush its TLB.  Part of every CPU's own
/// set-up (`percpu::init_this_cpu`), while only ASID 0 (the empty TTBR0
/// table, which caches nothing) is in use on it.
pub(crate) fn init_asid_size() {
    let wide = ID_AA64MMFR0_EL1.matches_all(ID_AA64MMFR0_EL1::ASIDBits::Bits_16);
    if wide {
        let irq = crate::cpu::irq_save();
        let tcr = TCR_EL1.get() | TCR_EL1::AS::ASID16Bits.value;
        // SAFETY: only ASID 0 is in use on this CPU; TCR.AS changes how
        // ASIDs are compared, so flush everything after the change.
        unsafe { write_sysreg!("tcr_el1", tcr) };
        isb();
        crate::regs::tlbi_vmalle1();
        crate::cpu::irq_restore(irq);
    }
    ASID16.store(wide, Ordering::Relaxed);
}

/// Number of ASID bits in use on every CPU (8, or 16 when
/// ID_AA64MMFR0_EL1.ASIDBits says so: each CPU sets TCR_EL1.AS at start-up).
pub fn asid_bits() -> u32 {
    if ASID16.load(Ordering::Relaxed) {
        16
    } else {
        8
    }
}

/// None: TTBR1 maps the kernel, so a user root (TTBR0) has no kernel half.
pub fn kernel_half_root() -> Option<u64> {
    None
}

/// Load `root_pa` into TTBR0_EL1 for the address space whose key is
/// `asid` (the kernel's stable per-`Mm` id, `1..`[`crate::asid::KEYS`]).
/// The hardware ASID (bits 63:48) comes from the generation allocator
/// ([`crate::asid`]): usually the one the space already has, without any
/// flush; after a rollover this CPU first empties its whole TLB.
/// `_tlb_gen` (the space's flush generation, which x86 compares per PCID)
/// is not needed: TLBIs are broadcast, so no flush of a space ever skips a
/// CPU and the CPU set is never trimmed here.
pub fn switch_user_root(root_pa: u64, asid: u16, _tlb_gen: u64) {
    assert!(root_pa & !TTBR_BADDR == 0 && root_pa.is_multiple_of(4096));
    assert!(asid != 0, "key 0 is the kernel's");
    let irq = crate::cpu::irq_save();
    let cpu = crate::percpu::cpu_id();
    let hw = crate::asid::switch_in(asid, root_pa, cpu);
    LOADED_KEY[cpu].store(asid, Ordering::Relaxed);
    crate::regs::dsb_ishst();
    // SAFETY: TTBR0 only translates the lower half, where the kernel keeps
    // nothing; the new table was prepared by the caller, and `switch_in`
    // made sure no stale entry of `hw` is left in this CPU's TLB.
    unsafe { write_sysreg!("ttbr0_el1", root_pa | (hw << 48)) };
    isb();
    crate::cpu::irq_restore(irq);
}

/// Drop every TLB entry of the address space with key `asid` now (all
/// CPUs of the inner shareable domain): its current hardware ASID's.
pub fn invalidate_asid(asid: u16) {
    crate::tlb::flush_user_all(asid, 0);
}

/// Go back to the empty lower-half table (ASID 0).
pub fn user_root_off() {
    let irq = crate::cpu::irq_save();
    let empty = paging::EMPTY_TTBR0.load(Ordering::Relaxed);
    if TTBR0_EL1.get() != empty {
        // SAFETY: the empty table maps nothing the kernel uses.
        unsafe { write_sysreg!("ttbr0_el1", empty) };
        isb();
    }
    crate::cpu::irq_restore(irq);
}

/// The lower-half root now loaded, or 0 when the empty table is in TTBR0:
/// [`current_user_root`] without the key (no interrupt masking; the fault
/// path's check that the running thread's space is the one loaded).
#[inline]
pub fn current_user_root_pa() -> u64 {
    let root = TTBR0_EL1.get_baddr();
    if root == paging::EMPTY_TTBR0.load(Ordering::Relaxed) {
        0
    } else {
        root
    }
}

/// The lower-half root now loaded and the key it was loaded with (not
/// the hardware ASID), or `None` when the empty table is in TTBR0.
pub fn current_user_root() -> Option<(u64, u16)> {
    let irq = crate::cpu::irq_save();
    let root = TTBR0_EL1.get_baddr();
    let key = LOADED_KEY[crate::percpu::cpu_id()].load(Ordering::Relaxed);
    crate::cpu::irq_restore(irq);
    (root != paging::EMPTY_TTBR0.load(Ordering::Relaxed)).then_some((root, key))
}
