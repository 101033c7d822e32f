//! The scheduler's self-tests (`ktest!`): preemption, sleeping, wait
//! queues, stacks, address-space switches, FP state.  Timing tests wait
//! for the event they check (see `docs/testing-under-load.md`).

use super::*;
use ktest::{check, check_eq, ktest};

fn ms_since(t0: u64) -> u64 {
    (arch::now_ns() - t0) / 1_000_000
}

/// How long a self-test waits for something that must happen "soon" (a
/// thread to run, block or be reaped).  Generous on purpose: under QEMU
/// TCG on a loaded host the timer interrupts that drive preemption can
/// come tens of milliseconds late, or be dropped (x86 LAPIC), so a test
/// waits for the event itself, bounded only to catch "never".
const PATIENCE_MS: u64 = 10_000;

/// Sleep in 1 ms steps until `done()` or [`PATIENCE_MS`]; whether it held.
fn wait_for(done: impl Fn() -> bool) -> bool {
    let t0 = arch::now_ns();
    while !done() {
        if ms_since(t0) >= PATIENCE_MS {
            return false;
        }
        sleep_ms(1);
    }
    true
}

/// One of two threads that never yield: spin counting in `mine`, and count
/// how often `theirs` moved while this thread was away, which only
/// preemption can cause.  Stop after seeing that twice, or once the other
/// thread stopped, or after [`PATIENCE_MS`].
fn busy_until_interleaved(
    mine: &AtomicU64,
    theirs: &AtomicU64,
    saw: &AtomicU64,
    i_stopped: &AtomicBool,
    they_stopped: &AtomicBool,
) {
    let deadline = arch::now_ns() + PATIENCE_MS * 1_000_000;
    let mut last = theirs.load(Ordering::Relaxed);
    while saw.load(Ordering::Relaxed) < 2
        && !they_stopped.load(Ordering::Relaxed)
        && arch::now_ns() < deadline
    {
        mine.fetch_add(1, Ordering::Relaxed);
        let t = theirs.load(Ordering::Relaxed);
        if t != last {
            saw.fetch_add(1, Ordering::Relaxed);
            last = t;
        }
    }
    i_stopped.store(true, Ordering::Relaxed);
}

ktest! {
    /// Two threads that never yield both make progress, each seeing the
    /// other's counter move while it was switched out: only the timer's
    /// preemption can do that (without it the first thread spins until
    /// the deadline and the second never sees it move).  The threads stop
    /// on what they observe, not after a fixed 50 ms: on a loaded host the
    /// ticks that drive preemption can come late or be dropped, which only
    /// makes the test take longer.  Checked once (2026-12-04, x86) with the
    /// tick's reschedule removed: "counters 572519651 / 0" after 10 s.
    /// Under two busy host loops, 10 of 10 boots of `selftest=sched::`
    /// passed on each arch (docs/testing-under-load.md).
    fn two_busy_threads_are_preempted_round_robin() {
        static A: AtomicU64 = AtomicU64::new(0);
        static B: AtomicU64 = AtomicU64::new(0);
        static A_SAW_B: AtomicU64 = AtomicU64::new(0);
        static B_SAW_A: AtomicU64 = AtomicU64::new(0);
        static A_STOP: AtomicBool = AtomicBool::new(false);
        static B_STOP: AtomicBool = AtomicBool::new(false);
        for c in [&A, &B, &A_SAW_B, &B_SAW_A] {
            c.store(0, Ordering::Relaxed);
        }
        A_STOP.store(false, Ordering::Relaxed);
        B_STOP.store(false, Ordering::Relaxed);
        let sw0 = switches();
        // Both on CPU 0: on two CPUs they would run side by side, which is
        // not preemption (with -smp 4 one boot saw "a saw b move 2 times,
        // b saw a 0 times": a had stopped before b started looking).
        let ta = spawn("busy-a", || {
            set_affinity(current_id(), 1);
            yield_now();
            busy_until_interleaved(&A, &B, &A_SAW_B, &A_STOP, &B_STOP)
        })
        .map_err(ktest::String::from)?;
        let tb = spawn("busy-b", || {
            set_affinity(current_id(), 1);
            yield_now();
            busy_until_interleaved(&B, &A, &B_SAW_A, &B_STOP, &A_STOP)
        })
        .map_err(ktest::String::from)?;
        ta.join();
        tb.join();
        let (a, b) = (A.load(Ordering::Relaxed), B.load(Ordering::Relaxed));
        check!(a > 0 && b > 0, "counters {} / {}", a, b);
        let (ab, ba) = (A_SAW_B.load(Ordering::Relaxed), B_SAW_A.load(Ordering::Relaxed));
        check!(
            ab > 0 && ba > 0 && ab + ba >= 3,
            "no round robin within {} ms: a saw b move {} times, b saw a {} times",
            PATIENCE_MS,
            ab,
            ba
        );
        check!(switches() - sw0 >= 4, "only {} switches", switches() - sw0);
        Ok(())
    }
}

/// Sleep 20 ms `SLEEPS` times: (shortest, longest) in ms.
fn sleep_20ms_spread() -> (u64, u64) {
    let (mut lo, mut hi) = (u64::MAX, 0);
    for _ in 0..SLEEPS {
        let t0 = arch::now_ns();
        sleep_ms(20);
        let ms = ms_since(t0);
        lo = lo.min(ms);
        hi = hi.max(ms);
    }
    (lo, hi)
}
const SLEEPS: usize = 5;

ktest! {
    /// `sleep_ms(20)` never returns early (every sleep >= 20 ms) and wakes
    /// on time: the *shortest* of five sleeps is at most 60 ms.  A loaded
    /// host delays some wake-ups (the tick that ends the sleep comes late),
    /// never all five; a sleep that is really too long (wrong unit, a lost
    /// wake-up left to a later tick) is long every time.
    fn sleep_ms_sleeps_between_20_and_60_ms() {
        let (lo, hi) = sleep_20ms_spread();
        check!((20..=60).contains(&lo), "boot thread: shortest of {} sleeps {} ms", SLEEPS, lo);
        check!(hi < PATIENCE_MS, "boot thread: a sleep took {} ms", hi);
        static SLEPT: AtomicU64 = AtomicU64::new(0);
        static LONGEST: AtomicU64 = AtomicU64::new(0);
        let h = spawn("sleeper", || {
            let (lo, hi) = sleep_20ms_spread();
            SLEPT.store(lo, Ordering::Relaxed);
            LONGEST.store(hi, Ordering::Relaxed);
        })
        .map_err(ktest::String::from)?;
        h.join();
        let (lo, hi) = (SLEPT.load(Ordering::Relaxed), LONGEST.load(Ordering::Relaxed));
        check!((20..=60).contains(&lo), "thread: shortest of {} sleeps {} ms", SLEEPS, lo);
        check!(hi < PATIENCE_MS, "thread: a sleep took {} ms", hi);
        Ok(())
    }
}

ktest! {
    fn wait_queue_wakes_waiters() {
        static WQ: WaitQueue = WaitQueue::new();
        static FLAG: AtomicU64 = AtomicU64::new(0);
        static DONE: AtomicU64 = AtomicU64::new(0);
        FLAG.store(0, Ordering::Relaxed);
        DONE.store(0, Ordering::Relaxed);
        let mut hs = alloc::vec::Vec::new();
        for i in 0..3 {
            hs.push(
                spawn("waiter", move || {
                    WQ.wait_until(|| FLAG.load(Ordering::Acquire) > i);
                    DONE.fetch_add(1, Ordering::AcqRel);
                })
                .map_err(ktest::String::from)?,
            );
        }
        // Wait for the waiters to run and block (however late the host
        // lets them run), not for a fixed 5 ms.
        let all_blocked = |hs: &[JoinHandle]| hs.iter().all(|h| h.thread().state() == State::Blocked);
        check!(wait_for(|| all_blocked(&hs)), "the waiters did not block within {} ms", PATIENCE_MS);
        check_eq!(DONE.load(Ordering::Acquire), 0, "woke before the condition held");
        // One waiter's condition becomes true; wake_one may pick another,
        // which re-checks and blocks again: wake all to be sure of progress.
        FLAG.store(1, Ordering::Release);
        check!(WQ.wake_one(), "wake_one found nobody");
        WQ.wake_all();
        // The first waiter finishes; the other two re-check and block again.
        let settled = || {
            DONE.load(Ordering::Acquire) >= 1
                && hs[1].thread().state() == State::Blocked
                && hs[2].thread().state() == State::Blocked
        };
        check!(wait_for(settled), "after the first condition: done {}", DONE.load(Ordering::Acquire));
        check_eq!(DONE.load(Ordering::Acquire), 1, "after the first condition");
        FLAG.store(3, Ordering::Release);
        WQ.wake_all();
        for h in hs {
            h.join();
        }
        check_eq!(DONE.load(Ordering::Acquire), 3);
        Ok(())
    }
}

ktest! {
    fn join_reclaims_the_stack() {
        let pages0 = thread::live_stack_pages();
        let h = spawn("short", || {
            sleep_ms(2);
        })
        .map_err(ktest::String::from)?;
        let (bottom, top) = h.thread().stack_range();
        check!(arch::kernel_translate(bottom).is_some(), "stack not mapped");
        check_eq!(thread::live_stack_pages(), pages0 + thread::STACK_PAGES as usize);
        h.join();
        check_eq!(thread::live_stack_pages(), pages0, "stack pages after join");
        check!(arch::kernel_translate(bottom).is_none(), "stack bottom still mapped");
        check!(arch::kernel_translate(top - 8).is_none(), "stack top still mapped");
        // Detached threads are reaped too (by idle or the next spawn).
        let d = spawn("detached", || {}).map_err(ktest::String::from)?;
        drop(d);
        wait_for(|| thread::live_stack_pages() == pages0);
        check_eq!(thread::live_stack_pages(), pages0, "after a detached thread");
        Ok(())
    }
}

ktest! {
    fn thread_stack_has_unmapped_guard_page() {
        static GUARD_FAULT: AtomicU64 = AtomicU64::new(0);
        static BOTTOM_OK: AtomicU64 = AtomicU64::new(0);
        GUARD_FAULT.store(0, Ordering::Relaxed);
        BOTTOM_OK.store(0, Ordering::Relaxed);
        let h = spawn("guarded", || {
            let me = current();
            let g = me.stack_guard().expect("spawned threads have guards");
            let (bottom, _) = me.stack_range();
            // What an overflow would touch first: the page just below.
            if let Err(f) = arch::probe_write(g.end - 8, 0) {
                GUARD_FAULT.store(f.addr, Ordering::Relaxed);
            }
            if arch::probe_read(bottom).is_ok() {
                BOTTOM_OK.store(1, Ordering::Relaxed);
            }
        })
        .map_err(ktest::String::from)?;
        let g = h.thread().stack_guard().expect("guard");
        h.join();
        check_eq!(GUARD_FAULT.load(Ordering::Relaxed), g.end - 8, "guard page write not caught");
        check_eq!(BOTTOM_OK.load(Ordering::Relaxed), 1, "stack bottom not readable");
        Ok(())
    }
}

ktest! {
    fn thread_runs_with_its_address_space_root() {
        // A real (empty) user address space: its root links the kernel
        // half through the page-table engine, as every process's does.
        let mm = crate::mem::uspace::new_mm().map_err(|e| ktest::format!("new_mm: {e:?}"))?;
        let root_pa = mm.root_pa();
        check!(arch::current_user_root().is_none(), "a user root is loaded before the test");
        static SEEN: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
        static ASID: AtomicU64 = AtomicU64::new(0);
        for s in &SEEN {
            s.store(0, Ordering::Relaxed);
        }
        let space = AddrSpace { root_pa, asid: mm.asid() };
        let h = spawn_in("in-space", space, || {
            let r = arch::current_user_root();
            SEEN[0].store(r.map_or(0, |r| r.0), Ordering::Relaxed);
            ASID.store(r.map_or(0, |r| u64::from(r.1)), Ordering::Relaxed);
            // Survives being switched out and back in.
            sleep_ms(3);
            yield_now();
            SEEN[1].store(arch::current_user_root().map_or(0, |r| r.0), Ordering::Relaxed);
        })
        .map_err(ktest::String::from)?;
        h.join();
        check_eq!(SEEN[0].load(Ordering::Relaxed), root_pa, "root inside the thread");
        check_eq!(SEEN[1].load(Ordering::Relaxed), root_pa, "root after sleeping");
        if arch::asid_bits() > 0 {
            check_eq!(ASID.load(Ordering::Relaxed), u64::from(mm.asid()), "ASID/PCID loaded with the root");
        }
        check!(arch::current_user_root().is_none(), "root still loaded after the thread");
        // The running thread can enter and leave a space too.
        set_addr_space(Some(space));
        let inside = arch::current_user_root();
        set_addr_space(None);
        check_eq!(inside.map(|r| r.0), Some(root_pa), "set_addr_space");
        check!(arch::current_user_root().is_none(), "set_addr_space(None)");
        check!(crate::mem::uspace::release(mm), "address space not released");
        Ok(())
    }
}

ktest! {
    fn preempt_disable_keeps_the_cpu() {
        static OTHER: AtomicU64 = AtomicU64::new(0);
        static STOP: AtomicBool = AtomicBool::new(false);
        OTHER.store(0, Ordering::Relaxed);
        STOP.store(false, Ordering::Relaxed);
        // Both on CPU 0 (the self-tests' CPU): on another CPU the spinner
        // would run alongside, which is not preemption.
        let h = spawn("spinner", || {
            set_affinity(current_id(), 1);
            yield_now();
            check_name("spinner");
            while !STOP.load(Ordering::Relaxed) {
                OTHER.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map_err(ktest::String::from)?;
        check_eq!(h.thread().name.as_str(), "spinner");
        // Let the spinner start first, so a preemption would show.
        check!(
            wait_for(|| OTHER.load(Ordering::Relaxed) > 0),
            "the spinner never started"
        );
        let (before, after, ticked) = {
            let _g = preempt_disable();
            let before = OTHER.load(Ordering::Relaxed);
            // Three slices' worth of timer *ticks* (each a chance to
            // preempt), however long a loaded host takes to deliver them.
            let k0 = arch::ticks();
            let want = 3 * SLICE_TICKS.load(Ordering::Relaxed);
            let t0 = arch::now_ns();
            while arch::ticks() - k0 < want && ms_since(t0) < PATIENCE_MS {
                core::hint::spin_loop();
            }
            (before, OTHER.load(Ordering::Relaxed), arch::ticks() - k0)
        };
        check!(ticked >= 3, "only {} ticks while preemption was off", ticked);
        // Preemptible again: the spinner gets the CPU at a coming tick.
        let t0 = arch::now_ns();
        while OTHER.load(Ordering::Relaxed) == after && ms_since(t0) < PATIENCE_MS {
            core::hint::spin_loop();
        }
        let later = OTHER.load(Ordering::Relaxed);
        STOP.store(true, Ordering::Relaxed);
        h.join();
        check_eq!(before, after, "the spinner ran while preemption was off");
        check!(later > after, "the spinner never ran afterwards");
        Ok(())
    }
}

fn check_name(want: &str) {
    assert_eq!(current().name, want, "current() inside a thread");
}

ktest! {
    fn wait_queue_ping_pong_under_preemption() {
        // Two threads hand a token back and forth through wait queues,
        // doing a little work between hand-offs so timer interrupts (and
        // preemptions) land all over them, while two other threads spin and
        // yield.  A lost wake-up would leave the token stuck.
        static TOKEN: AtomicU64 = AtomicU64::new(0);
        static WQ: [WaitQueue; 2] = [const { WaitQueue::new() }; 2];
        static STOP: AtomicBool = AtomicBool::new(false);
        const ROUNDS: u64 = 300;
        TOKEN.store(0, Ordering::Relaxed);
        STOP.store(false, Ordering::Relaxed);
        let mut hs = alloc::vec::Vec::new();
        for side in 0..2u64 {
            hs.push(
                spawn("pingpong", move || {
                    for r in 0..ROUNDS {
                        let mine = 2 * r + side;
                        WQ[side as usize].wait_until(|| TOKEN.load(Ordering::Acquire) == mine);
                        spin_us((r * 37 + side * 11) % 150);
                        TOKEN.store(mine + 1, Ordering::Release);
                        WQ[1 - side as usize].wake_all();
                    }
                })
                .map_err(ktest::String::from)?,
            );
        }
        let mut busy = alloc::vec::Vec::new();
        for _ in 0..2 {
            busy.push(
                spawn("busy", || {
                    while !STOP.load(Ordering::Relaxed) {
                        spin_us(100);
                        yield_now();
                    }
                })
                .map_err(ktest::String::from)?,
            );
        }
        let t0 = arch::now_ns();
        while TOKEN.load(Ordering::Acquire) != 2 * ROUNDS && ms_since(t0) < 5000 {
            sleep_ms(1);
        }
        let done = TOKEN.load(Ordering::Acquire);
        STOP.store(true, Ordering::Relaxed);
        for h in busy {
            h.join();
        }
        check_eq!(done, 2 * ROUNDS, "token stuck (lost wake-up?)");
        for h in hs {
            h.join();
        }
        Ok(())
    }
}

fn spin_us(us: u64) {
    let t0 = arch::now_ns();
    while arch::now_ns() - t0 < us * 1000 {
        core::hint::spin_loop();
    }
}

ktest! {
    /// Kernel threads keep a live f64 accumulator across many
    /// preemptions.  What holds it depends on the target: on arm64
    /// (`aarch64-unknown-none` has FP/NEON) a `d` register, so this checks
    /// the kernel's own FP registers survive a switch; on x86 the kernel is
    /// soft-float, so the value lives in general registers (or the stack)
    /// and this checks only those.  Hence the name: it was called
    /// `fp_state_survives_preemption`, which it is not on x86.  The FP/SIMD
    /// state that matters to programs (user xmm0-15/MXCSR, v0-v31/FPCR of
    /// two processes preempted by the timer, not yielding) is checked by the
    /// user test `fpu_state_survives_preemption` (tests/user).
    fn kernel_thread_registers_survive_preemption() {
        // A clobbered register would break the identity below.
        static BAD: AtomicU64 = AtomicU64::new(0);
        BAD.store(0, Ordering::Relaxed);
        let end = arch::now_ns() + 30_000_000;
        let mut hs = alloc::vec::Vec::new();
        for i in 0..3u64 {
            hs.push(
                spawn("fp", move || {
                    let mut x = core::hint::black_box(i as f64 + 0.5);
                    let mut n = 0u64;
                    while arch::now_ns() < end {
                        x = core::hint::black_box(x * 1.0 + 1.0);
                        n += 1;
                    }
                    if x != i as f64 + 0.5 + n as f64 {
                        BAD.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .map_err(ktest::String::from)?,
            );
        }
        for h in hs {
            h.join();
        }
        check_eq!(BAD.load(Ordering::Relaxed), 0, "threads with a corrupted FP accumulator");
        Ok(())
    }
}

ktest! {
    /// SMP placement: with as many busy threads as CPUs, every CPU runs one
    /// of them (new threads go to idle CPUs, which are kicked with an IPI,
    /// and an idle CPU steals queued work); then a thread pinned to the
    /// last CPU with `set_affinity` runs there and nowhere else.  Fails
    /// when new threads stay on the spawning CPU and nothing steals
    /// (checked once).
    fn smp_threads_spread_and_respect_affinity() {
        let online = online_mask();
        let n = online.count_ones() as usize;
        if n < 2 {
            ktest::skip!("one CPU online (boots with -smp 2 and more run this)");
        }
        static SEEN: AtomicU64 = AtomicU64::new(0);
        static STOP: AtomicBool = AtomicBool::new(false);
        SEEN.store(0, Ordering::Relaxed);
        STOP.store(false, Ordering::Relaxed);
        let mut hs = alloc::vec::Vec::new();
        for _ in 0..n {
            hs.push(
                spawn("smp-spinner", || {
                    while !STOP.load(Ordering::Relaxed) {
                        let irq = arch::irq_save();
                        SEEN.fetch_or(1 << arch::cpu_id(), Ordering::Relaxed);
                        arch::irq_restore(irq);
                        core::hint::spin_loop();
                    }
                })
                .map_err(ktest::String::from)?,
            );
        }
        let spread = wait_for(|| SEEN.load(Ordering::Relaxed) == online);
        STOP.store(true, Ordering::Relaxed);
        for h in hs {
            h.join();
        }
        check!(spread, "busy threads ran on CPUs {:#x} of {:#x}", SEEN.load(Ordering::Relaxed), online);
        let last = 63 - online.leading_zeros() as usize;
        static PINNED: AtomicU64 = AtomicU64::new(0);
        PINNED.store(0, Ordering::Relaxed);
        let h = spawn("smp-pinned", move || {
            set_affinity(current_id(), 1 << last);
            yield_now();
            let t0 = arch::now_ns();
            while ms_since(t0) < 30 {
                let irq = arch::irq_save();
                PINNED.fetch_or(1 << arch::cpu_id(), Ordering::Relaxed);
                arch::irq_restore(irq);
                if ms_since(t0).is_multiple_of(5) {
                    yield_now();
                }
            }
        })
        .map_err(ktest::String::from)?;
        h.join();
        check_eq!(PINNED.load(Ordering::Relaxed), 1 << last, "CPUs the pinned thread ran on");
        Ok(())
    }
}
