//! Self-tests of the arch crate (run by the kernel with `selftest`).
use crate::paging::{PAGE_SIZE, SIZE_1G, SIZE_2M};
use crate::probe::arch_probe_ret;
use crate::{
    Access, PHYS_OFFSET, kernel_layout, kernel_translate, now_ns, probe_exec, probe_read,
    probe_write, ticks, timer_hz,
};
use ktest::{check, check_eq, ktest};
use mm::bootinfo::PhysRange;

/// The leaf size the direct map must use for `pa` in RAM range `r`.
fn expected_leaf(r: &PhysRange, pa: u64) -> u64 {
    for sz in [SIZE_1G, SIZE_2M] {
        let b = pa & !(sz - 1);
        if b >= r.start && b + sz <= r.end {
            return sz;
        }
    }
    PAGE_SIZE
}

/// Sample pages of every RAM range: the first, every 2 MiB, the last.
fn for_each_ram_sample(
    mut f: impl FnMut(&PhysRange, u64) -> ktest::TestResult,
) -> ktest::TestResult {
    let ram = crate::boot::ram_ranges();
    check!(!ram.is_empty(), "no RAM ranges recorded");
    for r in ram {
        let s = r.start.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let e = r.end & !(PAGE_SIZE - 1);
        if e <= s {
            continue;
        }
        f(r, s)?;
        let mut pa = s.div_ceil(SIZE_2M) * SIZE_2M;
        while pa < e {
            f(r, pa)?;
            pa += SIZE_2M;
        }
        f(r, e - PAGE_SIZE)?;
    }
    Ok(())
}

ktest! {
    fn direct_map_matches_boot_memory_map() {
        for_each_ram_sample(|_, pa| {
            let t = kernel_translate(PHYS_OFFSET + pa);
            check!(t.is_some(), "direct map of {:#x} missing", pa);
            let t = t.unwrap();
            check_eq!(t.pa, pa, "direct map of {:#x}", pa);
            check!(t.writable && !t.executable && !t.user, "bad permissions for {:#x}: {:?}", pa, t);
            Ok(())
        })
    }
}

ktest! {
    fn direct_map_uses_large_leaves() {
        let mut largest = 0;
        for_each_ram_sample(|r, pa| {
            let t = kernel_translate(PHYS_OFFSET + pa).unwrap();
            check_eq!(t.size, expected_leaf(r, pa), "leaf size for {:#x}", pa);
            largest = largest.max(t.size);
            Ok(())
        })?;
        check_eq!(kernel_layout().direct_map_leaf, largest);
        check!(largest >= SIZE_2M, "direct map uses only 4K pages");
        Ok(())
    }
}

/// Two `ret` instructions in writable data.
static mut RET_IN_DATA: u64 = 0xd65f_03c0_d65f_03c0;
static RODATA_WORD: u64 = 0x5a5a_1234_8765_a5a5;

ktest! {
    fn text_is_rx_data_and_rodata_are_not() {
        let text = arch_probe_ret as *const () as u64;
        let data = (&raw const RET_IN_DATA) as u64;
        let ro = core::hint::black_box(&RODATA_WORD as *const u64 as u64);

        let t = kernel_translate(text).unwrap();
        check!(t.executable && !t.writable, "text {:#x}: {:?}", text, t);
        let d = kernel_translate(data).unwrap();
        check!(!d.executable && d.writable, "data {:#x}: {:?}", data, d);
        let r = kernel_translate(ro).unwrap();
        check!(!r.executable && !r.writable, "rodata {:#x}: {:?}", ro, r);
        let l = kernel_layout();
        check!(l.text.contains(&text) && l.data.contains(&data) && l.rodata.contains(&ro));

        // Executing text works; executing data faults.
        check!(probe_exec(text).is_ok(), "cannot execute text");
        let f = probe_exec(data).err();
        check!(f.is_some(), "executing data at {:#x} did not fault", data);
        let f = f.unwrap();
        check_eq!((f.addr, f.access, f.permission, f.user), (data, Access::Exec, true, false));

        // Writing text or rodata faults (write back what is there, just in case).
        let old = probe_read(text).unwrap();
        let f = probe_write(text, old).err();
        check!(f.is_some(), "writing text at {:#x} did not fault", text);
        let f = f.unwrap();
        check_eq!((f.addr, f.access, f.permission, f.user), (text, Access::Write, true, false));

        check_eq!(probe_read(ro).ok(), Some(RODATA_WORD));
        let f = probe_write(ro, RODATA_WORD).err();
        check!(f.is_some(), "writing rodata at {:#x} did not fault", ro);
        let f = f.unwrap();
        check_eq!((f.addr, f.access, f.permission), (ro, Access::Write, true));
        check!(probe_exec(ro).is_err(), "executing rodata did not fault");
        Ok(())
    }
}

ktest! {
    fn stack_guard_page_is_unmapped() {
        let l = kernel_layout();
        let g = l.stack_guard.start;
        check_eq!(l.stack_guard.end, l.stack.start);
        check!(kernel_translate(g).is_none(), "guard page {:#x} is mapped", g);
        check!(kernel_translate(g + PAGE_SIZE - 8).is_none());
        check!(kernel_translate(l.stack.start).is_some(), "stack bottom unmapped");
        let f = probe_read(g + 0x100).err();
        check!(f.is_some(), "reading the guard page did not fault");
        let f = f.unwrap();
        check_eq!((f.addr, f.access, f.permission), (g + 0x100, Access::Read, false));
        let sp = {
            let v: u64;
            // SAFETY: reads the stack pointer only.
            unsafe { core::arch::asm!("mov {}, sp", out(reg) v, options(nomem, nostack)) };
            v
        };
        check!(l.stack.contains(&sp), "sp {:#x} not on the boot stack {:x?}", sp, l.stack);
        Ok(())
    }
}

ktest! {
    fn lower_half_is_empty() {
        check!(kernel_translate(0x4000_0000).is_none());
        check!(kernel_translate(0).is_none());
        Ok(())
    }
}

// The tick-rate rule of `timer_ticks_at_programmed_rate`.
//
// Why not "count the ticks in a 50 ms window": under QEMU TCG the tick is a
// host timer that QEMU's main loop turns into an interrupt, and on a busy
// host that thread can be off the CPU for milliseconds while the vCPU keeps
// running; a window then sees far fewer ticks than `elapsed * hz` (21 in
// 99 ms at 1000 Hz was seen on x86 q35) although the timer is programmed
// right.  A loaded host can only *delay* a tick, never make it early, and
// our tick handler counts every period that passed since the deadline that
// fired (timer.rs), so the test
// records the clock at each of `TICK_SAMPLES` ticks and judges the mean
// interval per tick over every window of `TICK_WINDOW` consecutive ticks
// (one tick's delivery jitter counts 1/8 there; single intervals jitter by
// half a period even on a quiet host, enough to hide a timer at half rate):
//
// * not too slow: the **shortest** window mean must be at most 1.3 periods.
//   Delays and dropped ticks only lengthen windows; one window of on-time
//   ticks anywhere in the sample is all it takes.  A timer programmed
//   slower makes every window long, so the minimum exposes it.
// * not too fast: the **median** window mean must be at least 0.7 periods.
//   A window can come out short under load (it starts at a late tick and
//   ends on time: the handler keeps the period grid), so the minimum cannot be used for this direction; but a
//   shortened window needs a late tick at its start, the windows ending at
//   that tick are lengthened by as much, and dropped ticks only lengthen,
//   so delays cannot pull the median down.  A timer programmed faster makes
//   nearly every window short.
// * ticks arrive at all: `TICK_SAMPLES` tick interrupts within
//   `TICK_DEADLINE_NS` of the clock (20 s); failing that is a dead timer.
//   Generous on purpose: with both host cores busy, interrupts came only
//   every ~50 ms at times (the handler then counts ~50 periods at once) and
//   collecting the 64 took up to 3.4 s.
//
// Checked against a deliberately misprogrammed timer (2026-12-04, 1000 Hz):
// CNTV period doubled -> "timer too slow: shortest mean interval 1867 us",
// halved -> "timer too fast: median mean interval 500 us".  (With single
// intervals instead of 8-tick windows, the doubled period passed: its
// shortest single interval was under 1.3 ms.)  On x86 the same rule failed
// under load (QEMU's LAPIC drops the ticks it raised late, so no 8-tick
// window was on time); x86 measures the LAPIC count instead.  The runs on a
// loaded host are in docs/testing-under-load.md.

/// Tick-counter changes observed (one interrupt may count several periods).
const TICK_SAMPLES: usize = 64;
/// Ticks per window: the rules look at the mean interval over this many
/// consecutive ticks, so one tick's delivery jitter counts 1/8.
const TICK_WINDOW: u64 = 8;
/// Guest-clock bound for observing all of them.
const TICK_DEADLINE_NS: u64 = 20_000_000_000;

/// Poll `ticks()` (interrupts must be enabled) and record the clock at every
/// change; apply the rules above to every window of `TICK_WINDOW` ticks.
/// `wait` runs between polls (a spin hint; it must return without an
/// interrupt, so the deadline can be checked).
fn check_tick_rate(
    hz: u64,
    now_ns: fn() -> u64,
    ticks: fn() -> u64,
    wait: fn(),
) -> Result<(), alloc::string::String> {
    use alloc::format;
    if hz == 0 {
        return Err("timer not started".into());
    }
    let period = 1_000_000_000 / hz;
    // (clock, tick count) at each observed change.
    let mut obs = [(0u64, 0u64); TICK_SAMPLES];
    let start = now_ns();
    // Align on a tick so the first observation is at a tick.
    let k0 = ticks();
    while ticks() == k0 {
        if now_ns() - start > TICK_DEADLINE_NS {
            return Err(format!("no tick in {} ms", TICK_DEADLINE_NS / 1_000_000));
        }
        wait();
    }
    obs[0] = (now_ns(), ticks());
    let mut n = 1;
    while n < TICK_SAMPLES {
        let k = ticks();
        let t = now_ns();
        if t < obs[n - 1].0 {
            return Err("now_ns went backwards".into());
        }
        if k != obs[n - 1].1 {
            obs[n] = (t, k);
            n += 1;
        } else if t - start > TICK_DEADLINE_NS {
            return Err(format!(
                "only {} ticks in {} ms at {} Hz",
                n,
                TICK_DEADLINE_NS / 1_000_000,
                hz
            ));
        } else {
            wait();
        }
    }
    // Mean interval per tick of each window starting at an observation.
    let mut per_tick = alloc::vec::Vec::with_capacity(TICK_SAMPLES);
    for (i, &(t0, k0)) in obs.iter().enumerate() {
        if let Some(&(t1, k1)) = obs[i..].iter().find(|o| o.1 - k0 >= TICK_WINDOW) {
            per_tick.push((t1 - t0) / (k1 - k0));
        }
    }
    per_tick.sort_unstable();
    let (min, median) = (per_tick[0], per_tick[per_tick.len() / 2]);
    if min * 10 > period * 13 {
        return Err(format!(
            "timer too slow: shortest mean interval {} us over {} ticks, period {} us ({} Hz)",
            min / 1000,
            TICK_WINDOW,
            period / 1000,
            hz
        ));
    }
    if median * 10 < period * 7 {
        return Err(format!(
            "timer too fast: median mean interval {} us over {} ticks, period {} us ({} Hz)",
            median / 1000,
            TICK_WINDOW,
            period / 1000,
            hz
        ));
    }
    Ok(())
}

ktest! {
    /// The virtual timer ticks at the programmed rate: the shortest interval
    /// between consecutive ticks is within 30% above the period and the
    /// median within 30% below (the rules and why they survive a loaded
    /// host are in the comment above `check_tick_rate`).
    fn timer_ticks_at_programmed_rate() {
        use aarch64_cpu::registers::{DAIF, Readable};
        check!(DAIF.matches_all(DAIF::I::Unmasked), "IRQs are masked");
        check_tick_rate(u64::from(timer_hz()), now_ns, ticks, crate::cpu_relax)
    }
}

ktest! {
    fn now_ns_is_monotonic() {
        let mut last = now_ns();
        for _ in 0..1000 {
            let t = now_ns();
            check!(t >= last, "clock went back: {} < {}", t, last);
            last = t;
        }
        Ok(())
    }
}

static FAULTS_SEEN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn counting_handler(f: &crate::FaultInfo) -> bool {
    if f.addr == crate::DEVICE_VA_BASE - PAGE_SIZE {
        FAULTS_SEEN.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
    false
}

ktest! {
    fn fault_handler_is_called_before_fixup() {
        use core::sync::atomic::Ordering;
        // An unmapped upper-half address (just below the device window).
        let va = crate::DEVICE_VA_BASE - PAGE_SIZE;
        check!(kernel_translate(va).is_none());
        FAULTS_SEEN.store(0, Ordering::Relaxed);
        let old = crate::trap::replace_fault_handler(Some(counting_handler));
        let r = probe_read(va);
        crate::trap::replace_fault_handler(old);
        let f = r.err();
        check!(f.is_some(), "reading unmapped {:#x} did not fault", va);
        check_eq!(FAULTS_SEEN.load(Ordering::Relaxed), 1, "fault handler calls");
        let f = f.unwrap();
        check_eq!((f.addr, f.access, f.permission, f.user), (va, Access::Read, false, false));
        Ok(())
    }
}

ktest! {
    fn fp_registers_survive_interrupts() {
        check!(timer_hz() > 0, "timer not started");
        let pat: [u128; 8] = core::array::from_fn(|i| 0x0123_4567_89ab_cdef_f00d_0000_0000_0000 + i as u128);
        let mut out = [0u128; 8];
        let target = ticks() + 3;
        let mut spins: u64 = 500_000_000;
        // SAFETY: loads/stores only `pat` and `out` (8 x 16 bytes each) and
        // reads the tick counter; q0-q7 are declared clobbered.
        unsafe {
            core::arch::asm!(
                "ldp q0, q1, [{pat}]",
                "ldp q2, q3, [{pat}, #32]",
                "ldp q4, q5, [{pat}, #64]",
                "ldp q6, q7, [{pat}, #96]",
                "2:",
                "subs {spins}, {spins}, #1",
                "b.eq 3f",
                "ldr {t}, [{tp}]",
                "cmp {t}, {target}",
                "b.lo 2b",
                "3:",
                "stp q0, q1, [{out}]",
                "stp q2, q3, [{out}, #32]",
                "stp q4, q5, [{out}, #64]",
                "stp q6, q7, [{out}, #96]",
                pat = in(reg) pat.as_ptr(),
                out = in(reg) out.as_mut_ptr(),
                tp = in(reg) crate::timer::ticks_addr(),
                target = in(reg) target,
                spins = inout(reg) spins,
                t = out(reg) _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                options(nostack),
            );
        }
        check!(spins > 0, "no timer interrupts while spinning");
        check_eq!(out, pat, "FP/SIMD registers changed across interrupts");
        Ok(())
    }
}
