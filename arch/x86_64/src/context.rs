//! Kernel-thread context switching, the IRQ-exit hook used for preemption,
//! and loading a lower-half (user) root into CR3 with PCIDs.
//!
//! A switched-out thread's state is its stack pointer: `switch_context`
//! pushes the System V callee-saved registers (rbx, rbp, r12-r15) and the
//! return address on the thread's own stack and stores RSP in its
//! [`Context`].  Caller-saved registers are dead across the call by the ABI;
//! the target is soft-float, so there is no FP/SIMD state to keep.  RFLAGS is
//! not switched: every switch happens with interrupts masked, and each side
//! restores its own interrupt state afterwards.
use crate::cpu;
use crate::paging;
use crate::percpu::{self, PerCpu};
use crate::pte::ADDR_MASK;
use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use x86_64::PhysAddr;
use x86_64::instructions::tlb::Pcid;
use x86_64::registers::control::{Cr3, Cr3Flags, Cr4, Cr4Flags};
use x86_64::structures::paging::PhysFrame;

/// The saved state of a thread that is not running: its stack pointer.
/// Written only by [`switch_context`] (and [`Context::init_thread`]).
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
    /// ending at `stack_top` (16-byte aligned), with interrupts masked as
    /// at every switch: `entry` enables them once it has finished its
    /// post-switch bookkeeping.  `entry` must not return.
    ///
    /// # Safety
    /// `[stack_top - 64, stack_top)` must be mapped, writable memory owned by
    /// the new thread and unused by anything else.
    pub unsafe fn init_thread(&self, stack_top: u64, entry: extern "C" fn(usize) -> !, arg: usize) {
        assert!(stack_top.is_multiple_of(16), "unaligned thread stack");
        // Frame popped by `switch_context`, lowest address first:
        // r15, r14, r13 (= arg), r12 (= entry), rbx, rbp, return address.
        let frame: [u64; 8] = [
            0,
            0,
            arg as u64,
            entry as usize as u64,
            0,
            0,
            thread_trampoline as extern "C" fn() -> ! as usize as u64,
            0,
        ];
        let sp = stack_top - 64;
        // SAFETY: the caller guarantees the 64 bytes below `stack_top` are
        // writable and owned by the new thread.
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), sp as *mut u64, 8) };
        self.sp.store(sp, Ordering::Release);
    }
}

/// First code a new thread runs: `entry(arg)` with an aligned stack.
#[unsafe(naked)]
extern "C" fn thread_trampoline() -> ! {
    naked_asm!(
        "and rsp, -16",
        "xor ebp, ebp",
        "mov rdi, r13",
        "call r12",
        "ud2",
    )
}

#[unsafe(naked)]
unsafe extern "C" fn switch_asm(prev_sp: *mut u64, next_sp: u64) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

/// Save the running thread's callee-saved state in `prev` and resume the
/// thread saved in `next`.  Returns when some CPU switches back to `prev`.
///
/// # Safety
/// Interrupts must be masked.  `next` must hold a context saved by
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

/// Tell the running CPU which kernel stack the running thread uses: its
/// own TSS.RSP0 (for entries from user mode, and the SYSCALL entry's stack)
/// is set to `top`.  The scheduler calls it on the CPU the thread is about
/// to run on (each CPU has its own TSS).  `bottom` is unused on x86 (a
/// kernel stack overflow hits the guard page and ends in #DF on IST1).
pub fn set_thread_stack(_bottom: u64, top: u64) {
    crate::gdt::set_kernel_stack(top);
}

static IRQ_EXIT_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Install the function run at the end of every timer interrupt (after the
/// EOI and the tick hook), IPI (after the IPI hook) and device interrupt
/// (after the device hook and the EOI), with interrupts masked, on the
/// interrupted thread's stack, on every CPU (the kernel's hook ignores a
/// CPU that runs no threads).  It may switch threads; the interrupt returns
/// when the interrupted thread is switched back in.
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
// Lower-half roots (CR3 with PCID).

// The PCID state is per CPU (`percpu::PerCpu`): CR4.PCIDE is set by each
// CPU at its first use, and a PCID's cached translations live in one CPU's
// TLB, so "last root loaded with this PCID" is remembered per CPU.  Every
// function below works on the running CPU with interrupts masked, so the
// thread cannot move to another CPU in between.

/// Whether the CPU model can use PCIDs here (CPUID.1:ECX.PCID and global
/// pages, so that INVLPG of kernel pages reaches every PCID): the same on
/// every CPU, read once.
fn pcid_capable() -> bool {
    static CAPABLE: spin::Once<bool> = spin::Once::new();
    *CAPABLE.call_once(|| cpu::cpuid(1).ecx & (1 << 17) != 0 && cpu::features().pge)
}

/// Turn CR4.PCIDE on on the running CPU (`me`) if it is capable and not on
/// yet; whether it is on.  Interrupts must be masked.
fn pcid_on_here(me: &PerCpu) -> bool {
    if me.pcid_on.load(Ordering::Relaxed) {
        return true;
    }
    if pcid_capable() && Cr3::read_raw().1 == 0 {
        // SAFETY: CR3[11:0] is 0 and we are in long mode, the two
        // conditions for setting CR4.PCIDE; the current root keeps PCID 0.
        unsafe { Cr4::update(|c| c.insert(Cr4Flags::PCID)) };
        me.pcid_on.store(true, Ordering::Relaxed);
    }
    me.pcid_on.load(Ordering::Relaxed)
}

/// Whether CR3 carries a PCID on the running CPU (turned on there at first
/// use when the CPU has PCIDs and global pages).
pub fn has_pcid() -> bool {
    let irq = cpu::irq_save();
    let on = pcid_on_here(percpu::this());
    cpu::irq_restore(irq);
    on
}

/// Bits of address-space id that `switch_user_root` really loads: 12 with
/// PCIDs, 0 without (the id is then ignored and every switch flushes).
pub fn asid_bits() -> u32 {
    if pcid_capable() { 12 } else { 0 }
}

/// ASID rollovers since boot: none on x86, where each address space keeps
/// its PCID for life (the arm64 allocator's counter; see `arch/API.md`).
pub fn asid_rollovers() -> u64 {
    0
}

/// ASIDs handed out by a generation allocator: none on x86 (as above).
pub fn asid_allocs() -> u64 {
    0
}

/// The root whose upper half every user root must share (one CR3 covers
/// both halves on x86): the kernel's.  Its run-time mapping region got its
/// PML4 entry at boot (`kernel`'s `kmap::init`), so roots linked later see
/// the tables mapped under it afterwards.
pub fn kernel_half_root() -> Option<u64> {
    Some(paging::kernel_root())
}

/// Load `root_pa` (a PML4 whose upper half links the kernel's) into CR3 with PCID
/// `asid` (low 12 bits; 0 is the kernel's and is refused).  The PCID's TLB
/// entries are kept (NOFLUSH) when it was last loaded here with the same
/// root *and* this CPU has every flush of the space up to `tlb_gen`, the
/// space's flush generation the caller read after joining its CPU set
/// (`mm::cpu::AtomicCpuSet::tlb_gen`); otherwise they are flushed, and
/// `tlb_gen` becomes this CPU's record for the PCID.  Flushes that skipped
/// this CPU while it ran something else are caught this way (the ordering
/// argument is at the kernel's `sched::switch_mm`).
///
/// Without PCIDs (QEMU TCG offers none) this is a plain CR3 load, a full
/// non-global flush whatever was decided; the decision is made and
/// counted ([`gen_flushes`]) all the same, so that the self-tests check
/// the logic real PCID hardware depends on.
pub fn switch_user_root(root_pa: u64, asid: u16, tlb_gen: u64) {
    assert!(root_pa & !ADDR_MASK == 0, "unaligned root");
    let frame = root_frame(root_pa);
    let irq = cpu::irq_save();
    let me = percpu::this();
    let id = asid & 0xFFF;
    assert!(id != 0, "PCID 0 is the kernel's");
    let slot = usize::from(id);
    let same_root = me
        .last_root
        .get(slot)
        .is_some_and(|l| l.swap(root_pa, Ordering::Relaxed) == root_pa);
    // Interrupts are masked: no flush answered here can move the record
    // between this swap and the CR3 write.
    let up_to_date = me
        .flushed_gen
        .get(slot)
        .is_some_and(|g| g.swap(tlb_gen, Ordering::Relaxed) == tlb_gen);
    if same_root && !up_to_date {
        me.gen_flushes.fetch_add(1, Ordering::Relaxed);
    }
    me.loaded_asid.store(u64::from(id), Ordering::Relaxed);
    // SAFETY: the root's upper half mirrors the kernel's (`link_kernel_half`), so
    // everything the kernel uses stays mapped at the same addresses.
    unsafe {
        if pcid_on_here(me) {
            let pcid = Pcid::new(id).expect("12-bit PCID");
            if same_root && up_to_date {
                Cr3::write_pcid_no_flush(frame, pcid);
            } else {
                Cr3::write_pcid(frame, pcid);
            }
        } else {
            Cr3::write(frame, Cr3Flags::empty());
        }
    }
    cpu::irq_restore(irq);
}

/// Switch-ins on CPU `cpu` that flushed an unchanged root's PCID because a
/// flush of its space went by while the CPU was away (see
/// [`switch_user_root`]; counted with or without PCIDs); 0 for an unknown
/// CPU.
pub fn gen_flushes(cpu: usize) -> u64 {
    percpu::PERCPU
        .get(cpu)
        .map_or(0, |c| c.gen_flushes.load(Ordering::Relaxed))
}

/// Record that the running CPU, which has `asid` loaded, just performed a
/// flush of generation `tlb_gen` of its space: if it had every flush before
/// that one, it now has every flush up to it (Linux's `flush_tlb_func`
/// "`f->new_tlb_gen == local_tlb_gen + 1`" case).  Otherwise the record
/// stays behind (a flush with a smaller generation is yet to be answered
/// here, or was answered while the space was away), and the next
/// switch-in flushes the PCID whole, which is always safe.
pub(crate) fn note_flushed(asid: u16, tlb_gen: u64) {
    let irq = cpu::irq_save();
    let me = percpu::this();
    if me.loaded_asid.load(Ordering::Relaxed) == u64::from(asid & 0xFFF)
        && let Some(g) = me.flushed_gen.get(usize::from(asid & 0xFFF))
        && tlb_gen != 0
        && g.load(Ordering::Relaxed) == tlb_gen - 1
    {
        g.store(tlb_gen, Ordering::Relaxed);
    }
    cpu::irq_restore(irq);
}

/// Forget what the TLBs may hold for `asid` in other roots' behalf: the
/// next `switch_user_root` with it flushes its entries, on every CPU.  For
/// an address space whose tables changed while it was not loaded (or an id
/// being recycled).  It does not reach a CPU that has the id loaded right
/// now: that one needs a shootdown (INVLPG / reload there).
pub fn invalidate_asid(asid: u16) {
    for c in percpu::PERCPU.iter() {
        if let Some(l) = c.last_root.get(usize::from(asid & 0xFFF)) {
            l.store(0, Ordering::Relaxed);
        }
    }
}

/// Go back to the kernel's own root (empty lower half, PCID 0).
pub fn user_root_off() {
    let irq = cpu::irq_save();
    percpu::this().loaded_asid.store(0, Ordering::Relaxed);
    let k = paging::kernel_root();
    if cpu::read_cr3() & ADDR_MASK != k {
        let frame = root_frame(k);
        // SAFETY: the kernel's own root maps all kernel memory.
        unsafe {
            if percpu::this().pcid_on.load(Ordering::Relaxed) {
                // PCID 0 only ever holds the kernel root: no user entries to flush.
                Cr3::write_pcid_no_flush(frame, Pcid::new(0).expect("PCID 0"));
            } else {
                Cr3::write(frame, Cr3Flags::empty());
            }
        }
    }
    cpu::irq_restore(irq);
}

/// The lower-half root now loaded on the running CPU and its PCID, or
/// `None` when the kernel's own root is in CR3.
/// The user root now loaded, or 0 when CR3 holds the kernel's own root
/// (the fault path's check that the running thread's space is loaded).
#[inline]
pub fn current_user_root_pa() -> u64 {
    current_user_root().map_or(0, |(root, _)| root)
}

pub fn current_user_root() -> Option<(u64, u16)> {
    let (frame, low) = Cr3::read_raw();
    let root = frame.start_address().as_u64();
    if root == paging::kernel_root() {
        None
    } else {
        Some((root, low))
    }
}

/// A root table's frame (its address is page-aligned by construction).
fn root_frame(pa: u64) -> PhysFrame {
    PhysFrame::containing_address(PhysAddr::new(pa))
}
