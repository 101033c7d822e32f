//! Per-CPU data: one [`PerCpu`] per logical CPU in a static array, CPU 0's
//! valid from the first instruction of Rust (it is in `.data`), and the
//! fast [`cpu_id`].
//!
//! Each CPU's GDT lives at the start of its own `PerCpu`, and the CPU's
//! logical id sits at a fixed offset ([`ID_OFFSET`]) after it.  [`cpu_id`]
//! reads the GDTR base with `sgdt` and loads the id from there: two
//! instructions, no MSR, no APIC access, no table search.
//!
//! Why the GDT and not GS: user code can change the GS base at will
//! (`mov gs`, `wrgsbase`, `arch_prctl(ARCH_SET_GS)`), and this kernel never
//! `swapgs`es outside the SYSCALL entry's stack switch (user.rs), so the GS
//! base seen by an interrupt or exception handler is whatever ring 3 left
//! there: it cannot be trusted to find the CPU.  The GDTR is privileged to
//! load (`lgdt` is ring 0 only), so what `sgdt` returns is the table this
//! CPU's own start-up code loaded.  Before a CPU has loaded its GDT (the
//! first lines of boot / of a secondary's entry) the base is outside the
//! array and [`cpu_id`] falls back to the LAPIC-id lookup
//! (`smp::cpu_id_slow`, 0 while only CPU 0 runs).
//!
//! Besides the GDT a `PerCpu` holds the CPU's TSS (RSP0 = the running
//! thread's kernel stack top, IST1 = its double-fault stack), the area the
//! SYSCALL entry reaches through IA32_KERNEL_GS_BASE, the PCID bookkeeping
//! and flush-generation bookkeeping (context.rs, tlb.rs), the probes' fault record (probe.rs) and whether the CPU runs the kernel's tick and IRQ-exit
//! hooks.
use core::cell::UnsafeCell;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicBool, AtomicU64};
use mm::cpu::MAX_CPUS;
use x86_64::structures::tss::TaskStateSegment;

/// GDT slots (see gdt.rs for the layout).
pub const GDT_ENTRIES: usize = 8;
/// PCIDs whose last-loaded root each CPU remembers (others always flush).
pub const TRACKED_PCIDS: usize = 256;

/// What the SYSCALL entry reaches through GS after its `swapgs`
/// (`gs:[0]`, `gs:[8]`: the offsets are in user.rs's asm).
#[repr(C)]
pub struct SyscallArea {
    /// Address of this CPU's TSS.RSP0 (the running thread's stack top).
    pub rsp0_ptr: u64,
    /// The user RSP while the entry switches stacks.
    pub user_rsp: u64,
}

/// One CPU's private data.  `gdt` must stay first and `id` at
/// [`ID_OFFSET`]: [`cpu_id`] depends on it.
#[repr(C, align(64))]
pub struct PerCpu {
    /// The GDT this CPU has loaded (raw descriptors; written only by
    /// `gdt::init_cpu` on this CPU before it loads the table).
    pub(crate) gdt: UnsafeCell<[u64; GDT_ENTRIES]>,
    /// Logical CPU number (constant).
    id: usize,
    /// The SYSCALL entry's scratch (written by its asm on this CPU only).
    pub(crate) syscall: UnsafeCell<SyscallArea>,
    /// This CPU's TSS (RSP0 written by `gdt::set_kernel_stack` on this CPU).
    pub(crate) tss: UnsafeCell<TaskStateSegment>,
    /// CR4.PCIDE is set on this CPU (context.rs).
    pub(crate) pcid_on: AtomicBool,
    /// The probes' recorded fault and `probe_exec` state (probe.rs).
    pub(crate) probe: crate::probe::ProbeState,
    /// Last root loaded with each PCID on this CPU (0 = none or
    /// invalidated).  Other CPUs only clear entries (`invalidate_asid`).
    pub(crate) last_root: [AtomicU64; TRACKED_PCIDS],
    /// Per PCID: the address space's flush generation (`mm::cpu::
    /// AtomicCpuSet::tlb_gen`) up to which this CPU's TLB has every flush
    /// of it (Linux's `cpu_tlbstate.ctxs[].tlb_gen`).  Set when the space
    /// is switched in (`context::switch_user_root`, after flushing the
    /// PCID if it was behind) and moved on by one when this CPU performs
    /// the next flush while running the space (`tlb::note_flushed`).
    /// Written by this CPU only, with interrupts masked.
    pub(crate) flushed_gen: [AtomicU64; TRACKED_PCIDS],
    /// The PCID (low 12 bits of the ASID) whose root CR3 holds, 0 for the
    /// kernel's own root; kept with or without PCIDs, for `tlb::note_flushed`.
    /// Written by this CPU only, with interrupts masked.
    pub(crate) loaded_asid: AtomicU64,
    /// Switch-ins that flushed a PCID whose root was unchanged because its
    /// generation had moved on while this CPU was away (a flush skipped
    /// it); for the self-tests.
    pub(crate) gen_flushes: AtomicU64,
}

// SAFETY: the `UnsafeCell` fields are written only by their own CPU (or
// before the CPU starts), as documented on each field; the rest is atomic
// or constant.
unsafe impl Sync for PerCpu {}

/// Offset of the id from the GDT base.
pub const ID_OFFSET: usize = offset_of!(PerCpu, id);
const _: () = assert!(offset_of!(PerCpu, gdt) == 0);
const _: () = assert!(ID_OFFSET == GDT_ENTRIES * 8);

impl PerCpu {
    const fn new(id: usize) -> PerCpu {
        PerCpu {
            gdt: UnsafeCell::new([0; GDT_ENTRIES]),
            id,
            syscall: UnsafeCell::new(SyscallArea {
                rsp0_ptr: 0,
                user_rsp: 0,
            }),
            tss: UnsafeCell::new(TaskStateSegment::new()),
            pcid_on: AtomicBool::new(false),
            probe: crate::probe::ProbeState::new(),
            last_root: [const { AtomicU64::new(0) }; TRACKED_PCIDS],
            flushed_gen: [const { AtomicU64::new(0) }; TRACKED_PCIDS],
            loaded_asid: AtomicU64::new(0),
            gen_flushes: AtomicU64::new(0),
        }
    }
}

/// Every CPU's data, indexed by logical id.
pub static PERCPU: [PerCpu; MAX_CPUS] = {
    let mut a = [const { PerCpu::new(0) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        a[i] = PerCpu::new(i);
        i += 1;
    }
    a
};

/// The running CPU's logical id, right in any context on any CPU (see the
/// module documentation for why it comes from the GDTR and not GS).
///
/// The caller must keep interrupts masked (or preemption off) if it needs
/// the answer to stay true: a thread may be moved to another CPU.
#[inline]
pub fn cpu_id() -> usize {
    let base = x86_64::instructions::tables::sgdt().base.as_u64();
    let first = PERCPU.as_ptr() as u64;
    let off = base.wrapping_sub(first);
    if off < (MAX_CPUS * size_of::<PerCpu>()) as u64
        && off.is_multiple_of(size_of::<PerCpu>() as u64)
    {
        // SAFETY: `base` is the start of one `PerCpu` of the static array
        // (checked just above), whose `id` is at `ID_OFFSET`, never written.
        unsafe { *((base + ID_OFFSET as u64) as *const usize) }
    } else {
        crate::smp::cpu_id_slow()
    }
}

/// The running CPU's data (interrupts should be masked, see [`cpu_id`]).
#[inline]
pub fn this() -> &'static PerCpu {
    &PERCPU[cpu_id()]
}
