//! The other CPUs (issue 14, step 1: bring-up).
//!
//! Every CPU the firmware describes is started by the arch crate
//! (`arch::start_secondaries`) and runs [`secondary_main`], which makes it
//! a scheduler CPU (`sched::start_secondary`): from then on it runs
//! kernel and user threads from its own run queue, takes its own timer
//! ticks and answers IPIs (TLB shootdowns, reschedules, the self-tests'
//! pings).  `nosmp` on the command line keeps the secondaries halted
//! outside the scheduler (everything then runs on CPU 0, as before SMP).
use crate::arch;
use core::sync::atomic::{AtomicU64, Ordering};
use mm::cpu::MAX_CPUS;

/// IPI reason: "answer me" (the self-tests' round trip).
pub const IPI_PING: u32 = 1 << 0;

/// Pings each CPU answered.
static PINGS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// IPI reason: read the word at [`READ_VA`] and post it in [`READ_RESULT`]
/// (the shootdown self-test: what another CPU's TLB translates).
#[cfg(feature = "selftest")]
const IPI_READ: u32 = 1 << 2;
#[cfg(feature = "selftest")]
static READ_VA: AtomicU64 = AtomicU64::new(0);
/// Per CPU: the word read, or `READ_FAULTED` when the read faulted, and a
/// sequence number that moves on each answer.
#[cfg(feature = "selftest")]
static READ_RESULT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
#[cfg(feature = "selftest")]
static READ_SEQ: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
#[cfg(feature = "selftest")]
const READ_FAULTED: u64 = 0xdead_fa17_dead_fa17;

/// IPI reason: post `arch::cpu_id()` (+ 1) in [`WHOAMI`] (the cpu_id
/// self-test), and, on x86, set this CPU's thread stack to [`RSP0_ARG`]
/// and post what its TSS.RSP0 then holds in [`RSP0_SEEN`].
#[cfg(feature = "selftest")]
const IPI_WHOAMI: u32 = 1 << 5;
#[cfg(feature = "selftest")]
static WHOAMI: AtomicU64 = AtomicU64::new(0);
/// `arch::now_ns()` on the answering CPU (the clock must not run behind
/// CPU 0's across CPUs: threads will move between them).
#[cfg(feature = "selftest")]
static WHOAMI_NS: AtomicU64 = AtomicU64::new(0);
#[cfg(all(feature = "selftest", target_arch = "x86_64"))]
static RSP0_ARG: AtomicU64 = AtomicU64::new(0);
#[cfg(all(feature = "selftest", target_arch = "x86_64"))]
static RSP0_SEEN: AtomicU64 = AtomicU64::new(0);

/// Start the secondaries (CPU 0, after the timer and the heap).
pub fn init() {
    arch::set_ipi_hook(on_ipi);
    let possible = arch::nr_cpus_possible();
    let online = arch::start_secondaries(secondary_main);
    if possible > 1 || online > 1 {
        info!("smp: {} of {} CPUs online", online, possible);
    }
    wait_for_scheduler_cpus();
}

/// Wait until every started secondary has joined the scheduler.  The arch
/// marks a CPU online early in its start-up; it runs threads only once
/// `sched::start_secondary` has run there.  Without the wait, init could
/// start first on a loaded host and see one CPU in `sched_getaffinity`
/// (seen once: the libc suite's SMP tests failed with "one CPU online").
fn wait_for_scheduler_cpus() {
    if crate::cmdline::has("nosmp") {
        return;
    }
    let want = (0..arch::nr_cpus_possible())
        .filter(|&c| arch::cpu_online(c))
        .fold(0u64, |m, c| m | 1 << c);
    let t0 = arch::now_ns();
    while crate::task::sched::online_mask() & want != want {
        if arch::now_ns() - t0 > 5_000_000_000 {
            warn!(
                "smp: CPUs {:#x} online but not running threads after 5 s",
                want & !crate::task::sched::online_mask()
            );
            return;
        }
        arch::cpu_relax();
    }
}

/// A secondary's life: the scheduler's (unless `nosmp`: halted with
/// interrupts on, answering IPIs).
fn secondary_main(cpu: usize) -> ! {
    if !crate::cmdline::has("nosmp") {
        crate::task::sched::start_secondary(cpu);
    }
    arch::irq_enable();
    loop {
        arch::halt();
    }
}

/// The IPI hook (interrupts masked, on the receiving CPU).
fn on_ipi(reasons: u32) {
    if reasons & crate::task::sched::IPI_RESCHED != 0 {
        crate::task::sched::on_resched_ipi();
    }
    if reasons & crate::mem::shootdown::IPI_TLB != 0 {
        crate::mem::shootdown::answer();
    }
    if reasons & crate::mem::xcall::IPI_CALL != 0 {
        crate::mem::xcall::answer();
    }
    #[cfg(feature = "selftest")]
    if reasons & IPI_READ != 0 {
        let me = arch::cpu_id();
        let v = arch::probe_read(READ_VA.load(Ordering::Acquire)).unwrap_or(READ_FAULTED);
        READ_RESULT[me].store(v, Ordering::Release);
        READ_SEQ[me].fetch_add(1, Ordering::Release);
    }
    #[cfg(feature = "selftest")]
    if reasons & IPI_WHOAMI != 0 {
        #[cfg(target_arch = "x86_64")]
        {
            // Only while the CPU idles outside the scheduler: it never
            // enters from user mode, so its RSP0 is free for the test.
            let before = arch::kernel_stack();
            arch::set_thread_stack(0, RSP0_ARG.load(Ordering::Acquire));
            RSP0_SEEN.store(arch::kernel_stack(), Ordering::Release);
            arch::set_thread_stack(0, before);
        }
        WHOAMI_NS.store(arch::now_ns(), Ordering::Release);
        WHOAMI.store(arch::cpu_id() as u64 + 1, Ordering::Release);
    }
    if reasons & IPI_PING != 0
        && let Some(p) = PINGS.get(arch::cpu_id())
    {
        p.fetch_add(1, Ordering::Release);
    }
}

/// Pings CPU `cpu` has answered.
#[cfg(feature = "selftest")]
pub fn pings(cpu: usize) -> u64 {
    PINGS.get(cpu).map_or(0, |p| p.load(Ordering::Acquire))
}

/// Linux's CPU list format for CPUs `0..n` of a contiguous set: "0" or "0-3".
pub fn cpu_list(n: usize) -> alloc::string::String {
    if n <= 1 {
        alloc::string::String::from("0\n")
    } else {
        alloc::format!("0-{}\n", n - 1)
    }
}

/// `/sys/devices/system/cpu/online` (the CPUs that started; those that
/// did not are missing from it, as on Linux).
pub fn online_list() -> alloc::string::String {
    let mut s = alloc::string::String::new();
    let mut c = 0;
    while c < MAX_CPUS {
        if arch::cpu_online(c) {
            let start = c;
            while c + 1 < MAX_CPUS && arch::cpu_online(c + 1) {
                c += 1;
            }
            if !s.is_empty() {
                s.push(',');
            }
            if start == c {
                s.push_str(&alloc::format!("{}", c));
            } else {
                s.push_str(&alloc::format!("{}-{}", start, c));
            }
        }
        c += 1;
    }
    s.push('\n');
    s
}

/// Wait up to a second for `cond`.
#[cfg(feature = "selftest")]
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let t0 = arch::now_ns();
    while !cond() {
        if arch::now_ns() - t0 > 1_000_000_000 {
            return false;
        }
        arch::cpu_relax();
    }
    true
}

// The SMP self-tests are named `arch_smp_*`: they check the arch crates'
// bring-up through the arch API, so the machine-configuration boots that
// run `selftest=arch_` (x86 q35, arm64 EL2 entry and GICv3, all with two
// CPUs) run them, as do the `selftest=smp` boots.

#[cfg(feature = "selftest")]
ktest::ktest! {
    /// Every CPU the firmware describes is online (with one CPU:
    /// trivially), the boot CPU is CPU 0, and `/sys/devices/system/cpu/online`
    /// says so.
    fn arch_smp_every_cpu_online() {
        ktest::check_eq!(arch::cpu_id(), 0, "the boot CPU's id");
        let n = arch::nr_cpus_possible();
        for c in 0..n {
            ktest::check!(arch::cpu_online(c), "CPU {} of {} is not online", c, n);
        }
        ktest::check_eq!(arch::nr_cpus_online(), n);
        ktest::check_eq!(online_list(), cpu_list(n));
        Ok(())
    }
}

#[cfg(feature = "selftest")]
ktest::ktest! {
    /// Each secondary's own timer ticks: 3 ticks within a second.
    fn arch_smp_secondary_timers_tick() {
        if arch::nr_cpus_online() < 2 {
            ktest::skip!("one CPU online (boots with -smp 2 and more run this)");
        }
        // The online ones (a missing CPU fails `arch_smp_every_cpu_online`).
        for c in (1..arch::nr_cpus_possible()).filter(|&c| arch::cpu_online(c)) {
            let t = arch::cpu_ticks(c);
            ktest::check!(wait_for(|| arch::cpu_ticks(c) >= t + 3),
                "CPU {}: {} ticks in a second", c, arch::cpu_ticks(c) - t);
        }
        Ok(())
    }
}

#[cfg(feature = "selftest")]
ktest::ktest! {
    /// An IPI round trip to each secondary: the arch counts the interrupt
    /// there and the kernel's hook answers the ping, within a second each.
    /// Fails when the send does nothing (checked once on each arch by making
    /// the arch's send return before raising the interrupt).
    fn arch_smp_ipi_round_trip() {
        if arch::nr_cpus_online() < 2 {
            ktest::skip!("one CPU online (boots with -smp 2 and more run this)");
        }
        // The online ones (a missing CPU fails `arch_smp_every_cpu_online`).
        for c in (1..arch::nr_cpus_possible()).filter(|&c| arch::cpu_online(c)) {
            let (n, before) = (arch::ipi_count(c), pings(c));
            ktest::check!(arch::send_ipi(c, IPI_PING), "send_ipi to CPU {} refused", c);
            ktest::check!(wait_for(|| pings(c) > before), "CPU {} did not answer a ping within 1 s", c);
            ktest::check!(arch::ipi_count(c) > n, "CPU {} answered without an IPI counted", c);
        }
        ktest::check!(!arch::send_ipi(mm::cpu::MAX_CPUS, IPI_PING), "an IPI to a CPU that does not exist was sent");
        Ok(())
    }
}

/// Have CPU `cpu` read the word at `va` (through its own TLB); `None` if it
/// did not answer within a second.
#[cfg(feature = "selftest")]
fn read_on(cpu: usize, va: u64) -> Option<u64> {
    READ_VA.store(va, Ordering::Release);
    let seq = READ_SEQ[cpu].load(Ordering::Acquire);
    arch::send_ipi(cpu, IPI_READ);
    wait_for(|| READ_SEQ[cpu].load(Ordering::Acquire) != seq)
        .then(|| READ_RESULT[cpu].load(Ordering::Acquire))
}

#[cfg(feature = "selftest")]
ktest::ktest! {
    /// A kernel page remapped on CPU 0 is seen remapped by every other CPU:
    /// each first reads it (caching the translation in its TLB), then CPU 0
    /// unmaps it (the other CPUs must fault) and maps another frame there
    /// (they must read the new frame's data).  On x86 only the shootdown
    /// IPIs make that true, since INVLPG is local and QEMU keeps a TLB per
    /// vCPU: with `mem::shootdown::flush` reduced to the local flush this
    /// test fails (checked once); arm64's TLBIs are broadcast.
    fn arch_smp_tlb_shootdown_kernel_mapping() {
        if arch::nr_cpus_online() < 2 {
            ktest::skip!("one CPU online (boots with -smp 2 and more run this)");
        }
        use crate::mem::{kmap, memory::buddy, physmem::DIRECT_MAP};
        use mm::physmem::buddy::AllocFlags;
        use mm::physmem::phys::PhysMem;
        let (a, b) = (
            buddy().alloc(0, AllocFlags::ZERO).map_err(|_| "no frame")?,
            buddy().alloc(0, AllocFlags::ZERO).map_err(|_| "no frame")?,
        );
        DIRECT_MAP.store(a.pa(), 0xaaaa_0000_aaaa_0000);
        DIRECT_MAP.store(b.pa(), 0xbbbb_0000_bbbb_0000);
        // A page of the kernel map region's lower (stack) half that no
        // thread stack reaches; the upper half holds device registers.
        let va = arch::KERNEL_MAP_BASE + arch::KERNEL_MAP_SIZE / 4;
        let cpus: alloc::vec::Vec<usize> =
            (1..arch::nr_cpus_possible()).filter(|&c| arch::cpu_online(c)).collect();
        let sent = crate::mem::shootdown::SHOOTDOWN_IPIS.load(Ordering::Relaxed);
        let r = (|| -> ktest::TestResult {
            kmap::map_page(va, a.pa(), false)?;
            for &c in &cpus {
                ktest::check_eq!(read_on(c, va), Some(0xaaaa_0000_aaaa_0000), "CPU {} before", c);
            }
            kmap::unmap_page(va).ok_or("unmap")?;
            for &c in &cpus {
                ktest::check_eq!(read_on(c, va), Some(READ_FAULTED), "CPU {} after unmap", c);
            }
            kmap::map_page(va, b.pa(), false)?;
            for &c in &cpus {
                ktest::check_eq!(read_on(c, va), Some(0xbbbb_0000_bbbb_0000), "CPU {} after remap", c);
            }
            Ok(())
        })();
        kmap::unmap_page(va);
        a.put();
        b.put();
        r?;
        if !arch::tlb::BROADCAST {
            ktest::check!(
                crate::mem::shootdown::SHOOTDOWN_IPIS.load(Ordering::Relaxed) >= sent + 2 * cpus.len() as u64,
                "no shootdown IPIs were sent"
            );
        }
        Ok(())
    }
}

#[cfg(feature = "selftest")]
ktest::ktest! {
    /// `arch::cpu_id()` is right on every CPU: each secondary, asked through
    /// an IPI (so it answers from its IPI handler), reports its own number,
    /// and CPU 0 says 0 with interrupts on and off.  Its `now_ns()` is not
    /// behind the value CPU 0 read before sending.  On x86 the same IPI
    /// also checks `set_thread_stack` writes the running CPU's own TSS.RSP0
    /// (read back there with `arch::kernel_stack`) and leaves CPU 0's
    /// alone.  Fails when `cpu_id` is broken: checked once on x86 by making
    /// the exported `arch::cpu_id` return 0 ("CPU 1 says it is CPU 0: 0 !=
    /// 1").  With the arch's own `percpu::cpu_id` returning 0 the boot does
    /// not get this far: the arch's debug check in `gdt::init_cpu` panics,
    /// and without it the IPI mailboxes are misrouted and the first TLB
    /// shootdown never completes.
    fn arch_smp_cpu_id_per_cpu() {
        ktest::check_eq!(arch::cpu_id(), 0, "CPU 0, interrupts on");
        let irq = arch::irq_save();
        let id = arch::cpu_id();
        arch::irq_restore(irq);
        ktest::check_eq!(id, 0, "CPU 0, interrupts masked");
        if arch::nr_cpus_online() < 2 {
            ktest::skip!("one CPU online (boots with -smp 2 and more run this)");
        }
        #[cfg(target_arch = "x86_64")]
        let rsp0_cpu0 = arch::kernel_stack();
        for c in (1..arch::nr_cpus_possible()).filter(|&c| arch::cpu_online(c)) {
            WHOAMI.store(0, Ordering::Release);
            #[cfg(target_arch = "x86_64")]
            let want_rsp0 = 0xffff_8000_dead_0000 + (c as u64) * 0x1000;
            #[cfg(target_arch = "x86_64")]
            RSP0_ARG.store(want_rsp0, Ordering::Release);
            let sent_ns = arch::now_ns();
            ktest::check!(arch::send_ipi(c, IPI_WHOAMI), "send_ipi to CPU {} refused", c);
            ktest::check!(wait_for(|| WHOAMI.load(Ordering::Acquire) != 0),
                "CPU {} did not answer within 1 s", c);
            let said = WHOAMI.load(Ordering::Acquire) - 1;
            ktest::check_eq!(said, c as u64, "CPU {} says it is CPU {}", c, said);
            let their_ns = WHOAMI_NS.load(Ordering::Acquire);
            ktest::check!(their_ns >= sent_ns,
                "CPU {}'s now_ns() {} is behind CPU 0's {} (unsynchronised TSCs)", c, their_ns, sent_ns);
            #[cfg(target_arch = "x86_64")]
            {
                ktest::check_eq!(RSP0_SEEN.load(Ordering::Acquire), want_rsp0,
                    "CPU {}'s TSS.RSP0 after set_thread_stack there", c);
                ktest::check_eq!(arch::kernel_stack(), rsp0_cpu0,
                    "CPU 0's TSS.RSP0 changed by CPU {}'s set_thread_stack", c);
            }
        }
        Ok(())
    }
}
