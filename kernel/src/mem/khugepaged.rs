//! The khugepaged kernel thread: runs `mm`'s portable scan passes
//! (`mm::aspace::khugepaged`) over the registered user address spaces.
//!
//! * Started at boot ([`start`]).  Each pass scans up to `pages_to_scan`
//!   progress units, then the thread sleeps `scan_sleep_millisecs` — or
//!   `alloc_sleep_millisecs` after an allocation failure.  It only scans
//!   while some size is `always`/`madvise` (or `inherit`s a global mode
//!   other than `never`; `PolicySnapshot::khugepaged_should_run`) and some
//!   space is registered.  A knob change re-reads the sleep time (Linux
//!   recomputes the expiry on a write) and a change of whether it should
//!   run, or [`kick`], cuts the sleep short; the `khugepaged.<knob>=` boot
//!   words are applied before the thread starts.
//! * Locks: `mm`'s address-space locks fit a preemptive SMP kernel
//!   (`mm::sync`), so a pass runs preemptible and takes them as any
//!   caller does; only the scan tries the mmap lock (as Linux's
//!   `mmap_read_trylock`), so a busy process is skipped rather than
//!   waited for.  Faults on other threads interleave with a pass.  A
//!   process that exits while a pass holds its `Arc` still gets its
//!   memory back at once (`uspace::release` → `Mm::exit_mmap`).
//! * Under `selftest` the thread starts paused (tests that want it call
//!   [`resume`]), so other self-tests see no background collapses.
//! * Memory pressure: [`start`] installs the context's reclaim hook, which
//!   runs the deferred-split shrinker over every live space and then
//!   direct reclaim (`kswapd::direct_reclaim`); the fault path calls it
//!   once when out of memory and retries.  Each pass also runs the
//!   shrinker over a few queued folios (the periodic part).
use crate::cmdline;
use crate::mem::uspace;
use crate::task::sched;
use core::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
#[cfg(any(feature = "selftest", feature = "demo"))]
use mm::aspace::khugepaged_full_scan;
use mm::aspace::{PassStats, khugepaged_scan_pass};
use mm::thp::THP;

/// Pause depth (0 = running).
static PAUSED: AtomicUsize = AtomicUsize::new(0);
/// Set by the thread while a pass runs (checked against [`PAUSED`] in
/// the other order, both `SeqCst`: either the thread sees the pause and
/// skips the pass, or [`pause`] sees the pass and waits for it).
static IN_PASS: AtomicBool = AtomicBool::new(false);
/// Set by [`kick`]: skip the current sleep.
static KICKED: AtomicBool = AtomicBool::new(false);
/// Passes the thread has completed.
pub static PASSES: AtomicU64 = AtomicU64::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);

/// Queued folios the periodic shrinker looks at per pass.
const SHRINK_PER_PASS: usize = 32;
/// Sleep granularity: how quickly a kick or a knob change is noticed.
const POLL_MS: u64 = 5;

static RECLAIM: fn() -> usize = reclaim;

/// Start the thread (once) and install the reclaim hook.
pub fn start() {
    if STARTED.swap(true, Relaxed) {
        return;
    }
    uspace::ctx().set_reclaim_hook(&RECLAIM);
    // Self-tests and the storm drive `mm` from threads that may be switched
    // out inside an `Mm` operation (they do not disable preemption around
    // each call the way system calls do), and want reproducible runs: the
    // thread starts paused there; tests that want it `resume` it.
    if cmdline::has("selftest") || cmdline::has("storm") {
        PAUSED.fetch_add(1, Relaxed);
    }
    match sched::spawn("khugepaged", thread_main) {
        Ok(h) => drop(h), // detached
        Err(e) => crate::warn!("khugepaged: not started: {}", e),
    }
}

/// Stop scanning until [`resume`] (nests).  Returns once no pass is
/// running, so the caller may tear down a space without the thread
/// still holding a reference to it (a pass on another CPU, or one
/// preempted mid-way, used to outlive the pause).
#[cfg(feature = "selftest")]
pub fn pause() {
    PAUSED.fetch_add(1, SeqCst);
    while IN_PASS.load(SeqCst) {
        sched::sleep_ms(1);
    }
}

/// Undo one [`pause`].
#[cfg(feature = "selftest")]
pub fn resume() {
    let _ = PAUSED.fetch_update(Relaxed, Relaxed, |p| p.checked_sub(1));
    kick();
}

/// Cut the thread's current sleep short.
#[cfg(feature = "selftest")]
pub fn kick() {
    KICKED.store(true, Relaxed);
}

/// Run `f` on the live space with mm id `id`.  False if there is none.
fn with_mm(id: u64, f: &mut dyn FnMut(&uspace::Space)) -> bool {
    match uspace::all_mms().into_iter().find(|m| m.id() == id) {
        Some(mm) => {
            f(&mm.enter());
            true
        }
        None => false,
    }
}

/// The fault path's reclaim hook (no lock held): the deferred-split
/// shrinker over every live space, then direct reclaim of the anon LRU.
/// Returns the folios split plus the pages reclaimed.
fn reclaim() -> usize {
    shrink(usize::MAX) + crate::mem::kswapd::direct_reclaim() as usize
}

fn shrink(max: usize) -> usize {
    let np = sched::preempt_disable();
    let ctx = uspace::ctx();
    let max = max.min(ctx.deferred_split_len());
    if max == 0 {
        return 0;
    }
    let mms = uspace::all_mms();
    let refs = uspace::spaces(&mms, &np);
    let c = ctx.deferred_split_scan(&refs, max);
    drop(refs);
    drop(mms);
    c.split + c.underused
}

/// One pass as the thread does it.
fn one_pass() -> PassStats {
    let pages = THP.config.khugepaged.pages_to_scan.load(Relaxed) as u64;
    let p = khugepaged_scan_pass(
        uspace::ctx(),
        &mut with_mm,
        Some(&mut uspace::each_mm),
        pages,
    );
    shrink(SHRINK_PER_PASS);
    PASSES.fetch_add(1, Relaxed);
    p
}

/// A full scan right now, in the calling thread (tests, the demo).
#[cfg(any(feature = "selftest", feature = "demo"))]
pub fn scan_now() -> PassStats {
    khugepaged_full_scan(uspace::ctx(), &mut with_mm, Some(&mut uspace::each_mm), 64)
}

/// Wake the thread and wait until it completed `n` more full scans, or
/// `timeout_ms` passed.  Returns whether it did.
#[cfg(feature = "selftest")]
pub fn wait_full_scans(n: u64, timeout_ms: u64) -> bool {
    let target = THP.stats.full_scans() + n;
    let t0 = crate::arch::now_ns();
    kick();
    while THP.stats.full_scans() < target {
        if (crate::arch::now_ns() - t0) / 1_000_000 >= timeout_ms {
            return false;
        }
        sched::sleep_ms(1);
    }
    true
}

fn should_run() -> bool {
    PAUSED.load(Relaxed) == 0
        && THP.config.snapshot().khugepaged_should_run()
        && uspace::ctx().khugepaged_has_work()
}

/// Sleep `ms` (re-read through `knob` when the knobs change, as Linux
/// recomputes `khugepaged_sleep_expire` on a write), waking early on a
/// kick, or when the thread should stop or start (`should_run` changes).
fn nap(ms: u64, knob: Option<&core::sync::atomic::AtomicU32>) {
    let mut generation = THP.config.generation();
    let mut ms = ms;
    let run0 = should_run();
    let t0 = crate::arch::now_ns();
    while (crate::arch::now_ns() - t0) / 1_000_000 < ms {
        if KICKED.swap(false, Relaxed) {
            return;
        }
        if THP.config.generation() != generation {
            generation = THP.config.generation();
            if should_run() != run0 {
                return;
            }
            if let Some(k) = knob {
                ms = u64::from(k.load(Relaxed));
            }
        }
        sched::sleep_ms(POLL_MS.min(ms));
    }
}

fn thread_main() {
    loop {
        if !should_run() {
            nap(100, None);
            continue;
        }
        IN_PASS.store(true, SeqCst);
        if PAUSED.load(SeqCst) != 0 {
            IN_PASS.store(false, SeqCst);
            continue;
        }
        let p = one_pass();
        IN_PASS.store(false, SeqCst);
        let k = &THP.config.khugepaged;
        let knob = if p.alloc_failed {
            &k.alloc_sleep_millisecs
        } else {
            &k.scan_sleep_millisecs
        };
        nap(u64::from(knob.load(Relaxed)), Some(knob));
    }
}
