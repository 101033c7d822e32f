//! Secondary CPUs: start-up (PSCI CPU_ON), per-CPU state, the per-CPU
//! virtual timer and inter-processor interrupts (SGIs).
//!
//! * CPUs are numbered 0.. (the boot CPU is 0) in the DT's `/cpus/cpu@N`
//!   order, by `reg` = MPIDR affinity, capped at `mm::cpu::MAX_CPUS`.
//!   [`cpu_id`] reads the number from the CPU's `PerCpu` through
//!   TPIDR_EL1 (percpu.rs), so it is cheap and right in any context on any
//!   CPU; the counters and mailboxes are `arch_common::smp::CpuTable`
//!   (shared with x86), indexed by it.
//! * Start-up: CPU_ON through the DT's conduit with the physical address
//!   of `arch_secondary_entry` (smp.S) and of that CPU's [`StartBlock`]
//!   (cleaned to memory first: the new CPU reads it with the MMU off).
//!   The new CPU drops from EL2 like the boot CPU did, enables the MMU
//!   with CPU 0's MAIR/TCR/SCTLR and TTBR1, crosses to the link address on
//!   the boot CPU's early identity tables (`early_l0`, kept in .bss and
//!   never written after boot), then installs the empty TTBR0 table.  CPUs
//!   start one at a time; one that does not report online within
//!   [`START_TIMEOUT_NS`] (or that CPU_ON refuses) is named on the console
//!   and the boot goes on without it.
//! * Each secondary: TPIDR_EL1 = its `PerCpu` (set in smp.S before VBAR,
//!   so before any exception), its own 32 KiB stack (heap; no guard page,
//!   so no stack-overflow check until the scheduler names a thread stack
//!   with `set_thread_stack` on it) and 16 KiB emergency stack, VBAR, the
//!   per-CPU set-up CPU 0 also does (`percpu::init_this_cpu`: TCR.AS) and
//!   CPU 0's user-mode settings (`user::init_this_cpu`: PAN, EL0 cache
//!   ops; CPACR FP/SIMD is on from smp.S), so it may run EL0 threads; its
//!   GIC interface (GICv2 banked CPU interface / GICv3 its own
//!   redistributor), its virtual timer at CPU 0's rate, whose ticks run
//!   the tick hook and the IRQ-exit hook as CPU 0's do, and SGI
//!   [`IPI_SGI`] enabled.
//! * IPIs: [`send_ipi`] leaves a reason mask in the target's mailbox, then
//!   raises SGI [`IPI_SGI`] on it; the handler takes the mask, counts the
//!   IPI and calls the hook with the reasons; the IRQ-exit hook follows
//!   (a reschedule IPI switches threads on the way out).
use crate::boot::PLATFORM;
use crate::console::kprintln;
use crate::{gic, paging, timer};
use aarch64_cpu::registers::{MAIR_EL1, MPIDR_EL1, Readable, SCTLR_EL1, TCR_EL1, TTBR1_EL1};
use alloc::alloc::{Layout, alloc_zeroed};
use arch_common::smp::CpuTable;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use fdt::Fdt;
use mm::cpu::MAX_CPUS;

global_asm!(include_str!("smp.S"), options(raw));

unsafe extern "C" {
    static arch_secondary_entry: u8;
    static early_l0: u8;
}

/// The SGI used for IPIs.
pub const IPI_SGI: u32 = 1;
/// How long a started CPU has to report online (generous: TCG on a busy
/// host may take a while to run the new vCPU thread).
const START_TIMEOUT_NS: u64 = 2_000_000_000;
const STACK_SIZE: usize = 32 * 1024;
/// A secondary's emergency stack (the stack-overflow report), as CPU 0's.
const EMERGENCY_STACK_SIZE: usize = 16 * 1024;
/// The affinity fields of MPIDR_EL1 (Aff3, Aff2, Aff1, Aff0).
const MPIDR_AFF_MASK: u64 = 0xff_00ff_ffff;

/// The CPUs the DT lists: their `reg` (MPIDR affinity), in DT order.
#[derive(Clone, Copy, Debug)]
pub struct DtCpus {
    pub mpidr: [u64; MAX_CPUS],
    /// Each CPU's `numa-node-id` (`None` without one).
    pub numa_node: [Option<u32>; MAX_CPUS],
    pub n: usize,
    /// Enabled CPUs beyond `MAX_CPUS` (not used).
    pub dropped: usize,
}

impl DtCpus {
    /// `/cpus/cpu@*` nodes with a `reg` and not `status = "disabled"`.
    pub fn from_dt(fdt: &Fdt) -> DtCpus {
        let mut l = DtCpus {
            mpidr: [0; MAX_CPUS],
            numa_node: [None; MAX_CPUS],
            n: 0,
            dropped: 0,
        };
        let Some(cpus) = fdt.find_node("/cpus") else {
            return l;
        };
        for c in cpus.children() {
            if c.name.split('@').next() != Some("cpu")
                || c.property("status").and_then(|p| p.as_str()) == Some("disabled")
            {
                continue;
            }
            let Some(reg) = c.property("reg") else {
                continue;
            };
            // One or two cells (#address-cells of /cpus), big-endian.
            let v = reg.value;
            let id = match v.len() {
                4 => u64::from(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
                8 => u64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]),
                _ => continue,
            };
            if l.n < MAX_CPUS {
                l.mpidr[l.n] = id & MPIDR_AFF_MASK;
                l.numa_node[l.n] = c
                    .property("numa-node-id")
                    .and_then(|p| p.as_usize())
                    .map(|v| v as u32);
                l.n += 1;
            } else {
                l.dropped += 1;
            }
        }
        l
    }
}

/// What a starting CPU reads with its MMU off (layout fixed by smp.S).
#[repr(C, align(64))]
struct StartBlock {
    mair: u64,
    tcr: u64,
    ttbr0_identity: u64,
    ttbr1: u64,
    sctlr: u64,
    stack_top: u64,
    empty_ttbr0: u64,
    cpu: u64,
    /// Its `PerCpu` (percpu.rs), for TPIDR_EL1.
    percpu: u64,
}

/// One block per CPU, written by CPU 0 before CPU_ON (never while that
/// CPU runs the entry code, since CPUs start one at a time).
static mut START: [StartBlock; MAX_CPUS] = [const {
    StartBlock {
        mair: 0,
        tcr: 0,
        ttbr0_identity: 0,
        ttbr1: 0,
        sctlr: 0,
        stack_top: 0,
        empty_ttbr0: 0,
        cpu: 0,
        percpu: 0,
    }
}; MAX_CPUS];

/// The CPUs (hardware id: MPIDR affinity), their counters and mailboxes.
static CPUS: CpuTable = CpuTable::new();

arch_common::cpu_table_api!(CPUS, timer::ticks);
/// GICv2: each CPU's interface mask (the SGI target list).
static GIC_MASK: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];
/// The kernel's entry for secondaries (`fn(usize) -> !` as usize).
static ENTRY: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn mpidr_aff() -> u64 {
    my_mpidr()
}

fn my_mpidr() -> u64 {
    MPIDR_EL1.get() & MPIDR_AFF_MASK
}

/// Number the DT's CPUs, the boot CPU first (once, on first use).
fn number_cpus() {
    static DONE: spin::Once<()> = spin::Once::new();
    DONE.call_once(|| {
        let Some(l) = PLATFORM.get().map(|p| p.cpus) else {
            return;
        };
        let dropped = l.dropped + CPUS.set_possible(my_mpidr(), &l.mpidr[..l.n]);
        kprintln!(
            "arch: {} CPU(s) in the device tree (MPIDR {:x?}){}",
            CPUS.possible(),
            &l.mpidr[..l.n],
            if dropped > 0 {
                ", more than MAX_CPUS: the rest unused"
            } else {
                ""
            }
        );
    });
}

/// CPUs the DT describes (at most `MAX_CPUS`).
pub fn nr_cpus_possible() -> usize {
    number_cpus();
    CPUS.possible()
}

/// This CPU's logical number, right in any context on any CPU: read from
/// its `PerCpu` through TPIDR_EL1 (percpu.rs), no table search.
#[inline]
pub fn cpu_id() -> usize {
    crate::percpu::cpu_id()
}

/// Send an IPI with `reasons` (a bit mask the hook receives) to CPU `cpu`.
/// Returns false (sending nothing) when that CPU is not online.
pub fn send_ipi(cpu: usize, reasons: u32) -> bool {
    if !CPUS.post(cpu, reasons) {
        return false;
    }
    gic::send_sgi(
        IPI_SGI,
        CPUS.hw_id(cpu),
        GIC_MASK[cpu].load(Ordering::Relaxed),
    );
    true
}

/// The IPI handler (interrupts masked, after the EOI).
pub(crate) fn on_ipi() {
    CPUS.receive(cpu_id());
}

/// A secondary's timer interrupt: `n` periods elapsed.
pub(crate) fn on_ap_tick(n: u64) {
    CPUS.count_ticks(cpu_id(), n);
}

/// Clean `len` bytes at `va` to the point of coherency (a CPU with its
/// MMU off reads memory, not caches).
fn clean_to_poc(va: u64, len: u64) {
    let mut a = va & !63;
    while a < va + len {
        // SAFETY: DC CVAC of a mapped kernel address only writes back a
        // cache line; it changes no data.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += 64;
    }
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Bring up every other CPU the DT lists; each runs `entry(cpu)` once set
/// up (interrupts masked).  Call once, on CPU 0, after `timer_init` and
/// with the heap working.  Returns the number of CPUs online.
pub fn start_secondaries(entry: fn(usize) -> !) -> usize {
    let n = nr_cpus_possible();
    if n <= 1 {
        return 1;
    }
    let Some(conduit) = PLATFORM.get().and_then(|p| p.psci) else {
        kprintln!("arch: no PSCI in the device tree: secondary CPUs not started");
        return 1;
    };
    if gic::version() == 0 {
        kprintln!("arch: no GIC: secondary CPUs not started");
        return 1;
    }
    ENTRY.store(entry as usize, Ordering::Relaxed);
    GIC_MASK[0].store(gic::v2_cpu_mask(), Ordering::Relaxed);
    gic::enable_ppi(IPI_SGI);
    let entry_pa = paging::kimage_pa(&raw const arch_secondary_entry as u64);
    for c in 1..n {
        let mpidr = CPUS.hw_id(c);
        let layout = Layout::from_size_align(STACK_SIZE, 4096).expect("stack layout");
        // SAFETY: the layout has a non-zero size.
        let stack = unsafe { alloc_zeroed(layout) };
        assert!(!stack.is_null(), "smp: out of memory for a CPU stack");
        let layout = Layout::from_size_align(EMERGENCY_STACK_SIZE, 16).expect("stack layout");
        // SAFETY: the layout has a non-zero size.
        let emergency = unsafe { alloc_zeroed(layout) };
        assert!(!emergency.is_null(), "smp: out of memory for a CPU stack");
        let pc = crate::percpu::of(c);
        pc.cpu.store(c as u64, Ordering::Relaxed);
        pc.stack_limit.store(0, Ordering::Relaxed);
        pc.emergency_top.store(
            emergency as u64 + EMERGENCY_STACK_SIZE as u64,
            Ordering::Relaxed,
        );
        let blk = StartBlock {
            mair: MAIR_EL1.get(),
            tcr: TCR_EL1.get(),
            ttbr0_identity: paging::kimage_pa(&raw const early_l0 as u64),
            ttbr1: TTBR1_EL1.get(),
            sctlr: SCTLR_EL1.get(),
            stack_top: stack as u64 + STACK_SIZE as u64,
            empty_ttbr0: paging::EMPTY_TTBR0.load(Ordering::Relaxed),
            cpu: c as u64,
            percpu: pc as *const crate::percpu::PerCpu as u64,
        };
        // SAFETY: `c < MAX_CPUS` (the array's length); CPU `c` is not
        // running, so nothing else reads its block; a raw pointer write,
        // no reference to the static is kept.
        let p = unsafe {
            let p = (&raw mut START).cast::<StartBlock>().add(c);
            p.write(blk);
            p as u64
        };
        clean_to_poc(p, core::mem::size_of::<StartBlock>() as u64);
        // SAFETY: the entry point is smp.S's MMU-off entry, and `p`'s
        // physical address is the block it expects in x0.
        let r = unsafe { crate::psci::cpu_on(conduit, mpidr, entry_pa, paging::kimage_pa(p)) };
        if r != 0 {
            kprintln!(
                "arch: PSCI CPU_ON of CPU {} (MPIDR {:#x}) failed ({}); continuing without it",
                c,
                mpidr,
                r
            );
            continue;
        }
        let t0 = timer::now_ns();
        while !cpu_online(c) && timer::now_ns() - t0 < START_TIMEOUT_NS {
            crate::cpu::cpu_relax();
        }
        if !cpu_online(c) {
            kprintln!(
                "arch: CPU {} (MPIDR {:#x}) did not come up within {} ms; continuing without it",
                c,
                mpidr,
                START_TIMEOUT_NS / 1_000_000
            );
        }
    }
    nr_cpus_online()
}

/// Rust entry of a secondary: on its stack, kernel tables, IRQs masked.
#[unsafe(no_mangle)]
extern "C" fn arch_secondary_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    debug_assert_eq!(cpu_id(), cpu, "TPIDR_EL1 names another CPU");
    // CPU 0's per-CPU set-up (TCR.AS) and its user-mode settings (PAN,
    // EL0 cache ops): this CPU may run user threads from now on.
    crate::percpu::init_this_cpu();
    crate::user::init_this_cpu();
    if !gic::init_secondary(cpu, my_mpidr()) {
        kprintln!("arch: CPU {}: no GIC redistributor for it; parked", cpu);
        loop {
            crate::cpu::halt();
        }
    }
    GIC_MASK[cpu].store(gic::v2_cpu_mask(), Ordering::Relaxed);
    // Online before the first interrupt, so IPIs can be sent to it.
    CPUS.set_online(cpu);
    gic::enable_ppi(IPI_SGI);
    timer::start_secondary();
    crate::profile::start_secondary();
    let p = ENTRY.load(Ordering::Relaxed);
    // SAFETY: `start_secondaries` stored a `fn(usize) -> !` there.
    let entry = unsafe { core::mem::transmute::<usize, fn(usize) -> !>(p) };
    entry(cpu)
}
