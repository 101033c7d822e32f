//! Secondary CPUs: start-up (INIT-SIPI-SIPI), per-CPU state, the per-CPU
//! LAPIC tick and inter-processor interrupts.
//!
//! * CPUs are numbered 0.. (the boot CPU is 0) in the order the firmware
//!   tables list their local APIC ids ([`crate::acpi`]), capped at
//!   `mm::cpu::MAX_CPUS`.  `cpu_id()` (percpu.rs) reads the number from
//!   the CPU's own GDT (GDTR base); [`cpu_id_slow`] maps the LAPIC id back
//!   to it for the moments before a CPU has loaded its GDT.
//! * Start-up: the real-mode trampoline (`trampoline.s`) is copied to the
//!   low page [`TRAMP_PA`] (inside the first MiB, which boot reserves as
//!   firmware memory, so the frame allocator never hands it out) and runs
//!   on its own 3-page table (identity map of the first 2 MiB plus the
//!   kernel image's PML4 slot), never on the kernel's tables, which thus
//!   never map low memory.  The table is cleared when every CPU is up.
//!   CPUs are started one at a time; one that does not report online
//!   within [`START_TIMEOUT_NS`] is named on the console, put back into
//!   wait-for-SIPI with another INIT (so it cannot run the trampoline
//!   later, when it holds another CPU's data), and the boot goes on.
//! * Each secondary gets its own stack and double-fault IST stack (heap),
//!   its GDT and TSS in its `percpu::PerCpu`, the shared IDT, the boot
//!   CPU's CR0/EFER and CR4 (without PCIDE, which each CPU turns on at its
//!   first `switch_user_root`), then the same per-CPU set-up as CPU 0
//!   (`paging::per_cpu_init`: NXE/WP/PGE/SMEP; `user::per_cpu_init`:
//!   SYSCALL MSRs, KERNEL_GS_BASE = its own SYSCALL area, FPU/SSE, SMAP),
//!   GS base 0 (the kernel never uses GS), and a periodic LAPIC timer at
//!   the boot CPU's rate on [`AP_TIMER_VECTOR`].  So a secondary can run
//!   kernel threads and ring-3 code as soon as it is online.  Its tick
//!   counts itself and runs the tick hook and the IRQ-exit hook (trap.rs),
//!   and its IPIs and device interrupts the IRQ-exit hook, as CPU 0's do
//!   (the kernel's hooks ignore a CPU that runs no threads).
//! * IPIs: [`send_ipi`] leaves a reason mask in the target's mailbox
//!   (`arch_common::smp::CpuTable`, shared with arm64), then sends
//!   [`IPI_VECTOR`]; the handler takes the mask, counts the IPI and calls
//!   the hook with the reasons, then the IRQ-exit hook, so a reschedule
//!   IPI switches at once.  Several sends may merge into one
//!   interrupt (the mask keeps every reason).
use crate::acpi::CpuList;
use crate::console::kprint;
use crate::percpu::cpu_id;
use crate::pte::X86_64;
use crate::timer::{self, apic_read, apic_write};
use crate::{cpu, gdt, paging, trap, user};
use alloc::alloc::{Layout, alloc_zeroed};
use arch_common::smp::CpuTable;
use arch_common::tables::{BumpTables, NotLive, TableMem, map_boot};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use mm::cpu::MAX_CPUS;
use mm::paging::{PMD_LEVEL, PageTable, Perms, PtEnv, Space};
use x86_64::VirtAddr;
use x86_64::registers::control::{Cr0, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{ApicBase, ApicBaseFlags, Efer, GsBase};

global_asm!(include_str!("trampoline.s"), options(att_syntax));

unsafe extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
    static ap_tramp_data: u8;
    static x86_ap_entry64: u8;
}

/// Physical page the trampoline runs from (`AP_TRAMP_PA` in trampoline.s),
/// followed by its PML4, PDPT and PD.  Below 1 MiB and in e820 RAM on
/// both `microvm` and `q35` (checked at start-up).
pub const TRAMP_PA: u64 = 0x8000;
/// Vector of the secondaries' LAPIC timer.
pub const AP_TIMER_VECTOR: u8 = 0x21;
/// Vector of inter-processor interrupts.
pub const IPI_VECTOR: u8 = 0xF0;
/// How long a started CPU has to report online (generous: TCG on a busy
/// host may take a while to schedule the new vCPU thread).
const START_TIMEOUT_NS: u64 = 2_000_000_000;
const STACK_SIZE: usize = 32 * 1024;
const IST_SIZE: usize = 16 * 1024;

const APIC_ID: u32 = 0x20;
const APIC_ICR_LO: u32 = 0x300;
const APIC_ICR_HI: u32 = 0x310;
const ICR_PENDING: u32 = 1 << 12;
const ICR_INIT: u32 = 0x0000_4500;
const ICR_STARTUP: u32 = 0x0000_4600;
const ICR_FIXED: u32 = 0x0000_4000;

/// The CPUs (hardware id: the LAPIC id), their counters and mailboxes.
static CPUS: CpuTable = CpuTable::new();

arch_common::cpu_table_api!(CPUS, timer::ticks);

/// CR0, CR4 and EFER of the boot CPU, for the secondaries to copy.
static BSP_CR0: AtomicU64 = AtomicU64::new(0);
static BSP_CR4: AtomicU64 = AtomicU64::new(0);
static BSP_EFER: AtomicU64 = AtomicU64::new(0);
/// The boot CPU's LAPIC timer reload count: the secondaries tick at its rate.
static AP_INIT_COUNT: AtomicU32 = AtomicU32::new(0);
/// The kernel's entry for secondaries (`fn(usize) -> !` as usize).
static ENTRY: AtomicUsize = AtomicUsize::new(0);

/// Record the firmware's CPU list (boot, before paging::init).  The boot
/// CPU becomes CPU 0 whatever its place in the list.
pub(crate) fn set_cpu_list(l: &CpuList, bsp_apic_id: u32) {
    let mut ids = [0u64; MAX_CPUS];
    for (d, &s) in ids.iter_mut().zip(&l.apic_ids[..l.n]) {
        *d = u64::from(s);
    }
    let dropped = l.dropped + CPUS.set_possible(u64::from(bsp_apic_id), &ids[..l.n]);
    if l.n == 0 {
        return; // `acpi::discover` said why
    }
    kprint!(
        "x86_64: {} CPU(s) from the {} (LAPIC ids {:?}){}\n",
        CPUS.possible(),
        l.source,
        &l.apic_ids[..l.n],
        if dropped > 0 {
            ", more than MAX_CPUS: the rest unused"
        } else {
            ""
        }
    );
}

/// The local APIC id of the running CPU.
fn lapic_id() -> u64 {
    let v = apic_read(APIC_ID);
    u64::from(if timer::x2apic() { v } else { v >> 24 })
}

/// CPUs the firmware describes (at most `MAX_CPUS`).
pub fn nr_cpus_possible() -> usize {
    CPUS.possible()
}

/// This CPU's logical number from its LAPIC id (0 while only CPU 0 runs,
/// without asking the APIC, whose mode is unknown before `timer_init`).
/// Slow (an APIC read and a table search): only `percpu::cpu_id` uses it,
/// before the running CPU has loaded its own GDT.
pub(crate) fn cpu_id_slow() -> usize {
    CPUS.current(lapic_id)
}

/// Wait for the LAPIC to accept the last ICR write (xAPIC only: in x2APIC
/// mode the write is the send).
fn icr_wait() {
    if timer::x2apic() {
        return;
    }
    let t0 = timer::now_ns();
    while apic_read(APIC_ICR_LO) & ICR_PENDING != 0 && timer::now_ns() - t0 < 10_000_000 {
        cpu::cpu_relax();
    }
}

/// Write the interrupt command register (destination: a LAPIC id).
fn send_icr(dest: u32, low: u32) {
    let irq = cpu::irq_save();
    if timer::x2apic() {
        // SAFETY: x2APIC mode is on, so the ICR MSR (0x830) exists; the
        // value is a valid command (fixed/INIT/STARTUP to one id).
        unsafe { cpu::wrmsr(0x830, (u64::from(dest) << 32) | u64::from(low)) };
    } else {
        // Interrupts masked: the two halves must not be split by another
        // send from an interrupt handler on this CPU.
        apic_write(APIC_ICR_HI, dest << 24);
        apic_write(APIC_ICR_LO, low);
        icr_wait();
    }
    cpu::irq_restore(irq);
}

/// Send an IPI with `reasons` (a bit mask the hook receives) to CPU `cpu`.
/// Returns false (sending nothing) when that CPU is not online.
pub fn send_ipi(cpu: usize, reasons: u32) -> bool {
    if !CPUS.post(cpu, reasons) {
        return false;
    }
    send_icr(CPUS.hw_id(cpu) as u32, ICR_FIXED | u32::from(IPI_VECTOR));
    true
}

/// The IPI vector's handler (interrupts masked): EOI, then the hook.
/// The trap path then runs the IRQ-exit hook (trap.rs).
pub(crate) fn on_ipi() {
    apic_write(timer::APIC_EOI, 0);
    CPUS.receive(cpu_id());
}

/// A secondary's timer interrupt: count it in its own tick count, EOI.
/// The trap path then runs the tick hook and the IRQ-exit hook, as for CPU 0's
/// `TIMER_VECTOR`; the global `ticks()` stays CPU 0's alone (the arch
/// clock, `now_ns()`, is the TSC and needs no tick).
pub(crate) fn on_ap_tick() {
    CPUS.count_ticks(cpu_id(), 1);
    apic_write(timer::APIC_EOI, 0);
}

/// A zeroed heap block of `size` bytes; returns its end (a stack top).
fn stack(size: usize) -> u64 {
    let layout = Layout::from_size_align(size, 4096).expect("stack layout");
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(layout) };
    assert!(!p.is_null(), "smp: out of memory for a CPU stack");
    p as u64 + size as u64
}

/// Write a u64 at physical `pa` (low memory, through the direct map).
fn poke(pa: u64, v: u64) {
    // SAFETY: `pa` lies in the trampoline's pages (below 1 MiB), which the
    // direct map covers and nothing else uses (reserved as firmware memory).
    unsafe { core::ptr::write_volatile((paging::PHYS_OFFSET + pa) as *mut u64, v) };
}

/// Copy the trampoline and build its page table.
fn install_trampoline() {
    let start = &raw const ap_tramp_start as u64;
    let end = &raw const ap_tramp_end as u64;
    assert!(end - start <= 4096, "trampoline larger than a page");
    // SAFETY: the source is the trampoline in the kernel image; the
    // destination is the reserved low page (see `poke`), 4 KiB long.
    unsafe {
        core::ptr::copy_nonoverlapping(
            start as *const u8,
            (paging::PHYS_OFFSET + TRAMP_PA) as *mut u8,
            (end - start) as usize,
        );
    }
    // Its table, built by `mm`'s engine like every kernel table: the root
    // at `AP_TRAMP_PML4` (the bump allocator's first frame), a 2 MiB
    // identity leaf over the trampoline, and the kernel's upper half
    // linked, so `x86_ap_entry64` runs before CR3 holds the kernel's root.
    // SAFETY: the three table frames after the trampoline page are
    // reserved low memory (see `poke`), reached through the direct map.
    let mem = unsafe { TableMem::new(paging::PHYS_OFFSET) };
    let bump = BumpTables::new(&mem, TRAMP_PA + 0x1000, TRAMP_PA + 0x4000);
    let env = PtEnv {
        mem: &mem,
        alloc: &bump,
        tlb: &NotLive,
    };
    let mut pt = PageTable::<X86_64>::new(env, Space::Kernel).expect("trampoline root frame");
    assert_eq!(
        pt.root(),
        TRAMP_PA + 0x1000,
        "AP_TRAMP_PML4 in trampoline.s"
    );
    let rwx = Perms {
        read: true,
        write: true,
        exec: true,
        user: false,
    };
    map_boot(&mut pt, 0, 0, 2 << 20, rwx, false, PMD_LEVEL);
    pt.link_kernel_half(paging::kernel_root());
}

/// Bring up every other CPU the firmware listed; each runs `entry(cpu)`
/// once it is set up (interrupts still masked).  Call once, on CPU 0,
/// after `timer_init` and with the kernel heap working.  Returns the
/// number of CPUs online.
pub fn start_secondaries(entry: fn(usize) -> !) -> usize {
    let n = nr_cpus_possible();
    if n <= 1 {
        return 1;
    }
    let ram_ok = paging::boot_ram()
        .iter()
        .any(|r| r.start <= TRAMP_PA && TRAMP_PA + 0x4000 <= r.end);
    if !ram_ok {
        kprint!(
            "x86_64: no RAM at {:#x} for the start-up trampoline: one CPU\n",
            TRAMP_PA
        );
        return 1;
    }
    ENTRY.store(entry as usize, Ordering::Relaxed);
    BSP_CR0.store(Cr0::read_raw(), Ordering::Relaxed);
    // Without PCIDE: each CPU turns it on itself at first use (context.rs
    // keeps that per CPU).
    BSP_CR4.store(Cr4::read_raw() & !Cr4Flags::PCID.bits(), Ordering::Relaxed);
    BSP_EFER.store(Efer::read_raw(), Ordering::Relaxed);
    AP_INIT_COUNT.store(timer::lapic_counts().0, Ordering::Relaxed);
    install_trampoline();
    let data = TRAMP_PA + (&raw const ap_tramp_data as u64 - &raw const ap_tramp_start as u64);
    for c in 1..n {
        let apic = CPUS.hw_id(c) as u32;
        poke(data, paging::kernel_root());
        poke(data + 8, stack(STACK_SIZE));
        poke(data + 16, c as u64);
        poke(data + 24, &raw const x86_ap_entry64 as u64);
        // INIT, 10 ms, then STARTUP twice (the second is ignored by a CPU
        // that already left wait-for-SIPI).
        send_icr(apic, ICR_INIT);
        spin_ns(10_000_000);
        let sipi = ICR_STARTUP | (TRAMP_PA >> 12) as u32;
        send_icr(apic, sipi);
        spin_ns(200_000);
        if !cpu_online(c) {
            send_icr(apic, sipi);
        }
        let t0 = timer::now_ns();
        while !cpu_online(c) && timer::now_ns() - t0 < START_TIMEOUT_NS {
            cpu::cpu_relax();
        }
        if !cpu_online(c) {
            kprint!(
                "x86_64: CPU {} (LAPIC id {}) did not come up within {} ms; continuing without it\n",
                c,
                apic,
                START_TIMEOUT_NS / 1_000_000
            );
            send_icr(apic, ICR_INIT);
        }
    }
    // The identity table is not needed any more (no CPU runs on it).
    for i in 0..512 * 3 {
        poke(TRAMP_PA + 0x1000 + i * 8, 0);
    }
    nr_cpus_online()
}

fn spin_ns(ns: u64) {
    let t0 = timer::now_ns();
    while timer::now_ns() - t0 < ns {
        cpu::cpu_relax();
    }
}

/// Rust entry of a secondary, on its own stack, on the kernel's root,
/// interrupts masked.
#[unsafe(no_mangle)]
extern "C" fn x86_ap_rust_entry(cpu: u64) -> ! {
    let cpu = cpu as usize;
    // SAFETY: the boot CPU's values for the same model of CPU: same paging
    // mode (PAE, long mode, NX), WP, PGE/SMEP/SMAP, FPU bits.  CR3 holds
    // the kernel's root with PCID 0, as CR4.PCIDE requires.
    unsafe {
        Cr0::write_raw(BSP_CR0.load(Ordering::Relaxed));
        Cr4::write_raw(BSP_CR4.load(Ordering::Relaxed));
        Efer::write_raw(BSP_EFER.load(Ordering::Relaxed));
    }
    gdt::init_secondary(cpu, stack(IST_SIZE));
    trap::init();
    // The kernel never uses GS (cpu_id() reads the GDTR, percpu.rs); the
    // SYSCALL entry finds this CPU's area through KERNEL_GS_BASE.
    GsBase::write(VirtAddr::zero());
    paging::per_cpu_init();
    user::per_cpu_init(cpu);
    let (frame, mut flags) = ApicBase::read();
    flags.insert(ApicBaseFlags::LAPIC_ENABLE);
    if timer::x2apic() {
        flags.insert(ApicBaseFlags::X2APIC_ENABLE);
    }
    // SAFETY: the same base as firmware chose, the boot CPU's mode.
    unsafe { ApicBase::write(frame, flags) };
    apic_write(timer::APIC_SVR, 0x100 | u32::from(trap::SPURIOUS_VECTOR));
    apic_write(timer::APIC_TPR, 0);
    apic_write(timer::APIC_TIMER_DIV, 0x3);
    apic_write(
        timer::APIC_LVT_TIMER,
        timer::LVT_PERIODIC | u32::from(AP_TIMER_VECTOR),
    );
    apic_write(
        timer::APIC_TIMER_INIT,
        AP_INIT_COUNT.load(Ordering::Relaxed),
    );
    CPUS.set_online(cpu);
    let p = ENTRY.load(Ordering::Relaxed);
    // SAFETY: `start_secondaries` stored a `fn(usize) -> !` there.
    let entry = unsafe { core::mem::transmute::<usize, fn(usize) -> !>(p) };
    entry(cpu)
}

/// The boot CPU's LAPIC id (where device interrupts are routed).
pub fn boot_cpu_apic_id() -> u32 {
    CPUS.hw_id(0) as u32
}
