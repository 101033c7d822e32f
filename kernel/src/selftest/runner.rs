//! Runs the `ktest!` self-tests registered by every crate in the kernel.
//!
//! Output format (parsed by `tests/`):
//! ```text
//! test <name> ... ok
//! test <name> ... FAILED: <reason>
//! test <name> ... skipped: <reason>
//! N passed, N failed, N skipped
//! ```
//! A test skips with `ktest::skip!` when the hardware or boot configuration
//! it needs is missing (see the policy there and in `tests/src/suites.rs`).
//! A failing test does not stop the others.  A panic cannot be unwound
//! (panic=abort), so the panic handler reports the running test as FAILED,
//! prints the summary counting it, and fails the run.
use crate::arch;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use ktest::KTest;

/// A test running longer than this is reported as hung (the timer tick
/// checks, see [`overdue`]); the slowest test takes a few seconds.
const WATCHDOG_NS: u64 = 120_000_000_000;
/// `arch::now_ns` when the running test started (0: none running).
static STARTED_NS: AtomicU64 = AtomicU64::new(0);
/// The watchdog fired already (it fires once).
static FIRED: AtomicBool = AtomicBool::new(false);

static PASSED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);
static SKIPPED: AtomicUsize = AtomicUsize::new(0);
static CURRENT: mm::sync::Mutex<Option<&'static str>> = mm::sync::Mutex::new(None);

#[allow(unsafe_code)]
fn all_tests() -> &'static [KTest] {
    #[allow(improper_ctypes)]
    unsafe extern "C" {
        static __ktest_start: KTest;
        static __ktest_end: KTest;
    }
    // SAFETY: the linker script places every `.ktest_array` input section
    // (each one `KTest` static, all of the same type and alignment) between
    // these two symbols, so the range is a valid, immutable array.
    unsafe {
        let start = &raw const __ktest_start;
        let end = &raw const __ktest_end;
        let n = (end as usize - start as usize) / core::mem::size_of::<KTest>();
        core::slice::from_raw_parts(start, n)
    }
}

/// Run every test whose name contains `filter`, or one of its
/// comma-separated parts (all when empty).  Returns `(passed, failed, skipped)`.
pub fn run(filter: &str) -> (usize, usize, usize) {
    let mut tests: alloc::vec::Vec<&KTest> = all_tests()
        .iter()
        .filter(|t| filter.split(',').any(|f| t.name.contains(f)))
        .collect();
    tests.sort_by_key(|t| t.name);
    println!("running {} self-tests (filter '{}')", tests.len(), filter);
    // The tests run on CPU 0 (several talk to "the other CPUs" from there);
    // the threads they spawn go anywhere.  The mask is given back after.
    let me = crate::task::sched::current_id();
    let mask = crate::task::sched::affinity(me).unwrap_or(u64::MAX);
    crate::task::sched::set_affinity(me, 1);
    crate::task::sched::yield_now();
    for t in tests {
        *CURRENT.lock() = Some(t.name);
        let t0 = arch::now_ns();
        STARTED_NS.store(t0.max(1), Ordering::Relaxed);
        let r = (t.func)();
        STARTED_NS.store(0, Ordering::Relaxed);
        let ms = (arch::now_ns() - t0) / 1_000_000;
        *CURRENT.lock() = None;
        match r {
            Ok(()) => {
                PASSED.fetch_add(1, Ordering::Relaxed);
                println!("test {} ... ok ({} ms)", t.name, ms);
            }
            Err(ref why) if let Some(reason) = ktest::skip_reason(why) => {
                SKIPPED.fetch_add(1, Ordering::Relaxed);
                println!("test {} ... skipped: {}", t.name, reason);
            }
            Err(why) => {
                FAILED.fetch_add(1, Ordering::Relaxed);
                println!("test {} ... FAILED: {}", t.name, why);
            }
        }
    }
    crate::task::sched::set_affinity(me, mask);

    summary()
}

/// Called on every timer tick: `Some(description)` once, when the
/// running test has taken longer than [`WATCHDOG_NS`].
pub fn overdue(now: u64) -> Option<&'static str> {
    let t0 = STARTED_NS.load(Ordering::Relaxed);
    if t0 == 0 || now.saturating_sub(t0) < WATCHDOG_NS || FIRED.swap(true, Ordering::Relaxed) {
        return None;
    }
    Some("a test ran for over 120 s (hung?); thread states above")
}

pub fn summary() -> (usize, usize, usize) {
    (
        PASSED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
        SKIPPED.load(Ordering::Relaxed),
    )
}

/// Called by the panic handler: if a test was running, report it as failed
/// and print the summary line.  Returns true if a test was running.
pub fn on_panic() -> bool {
    // The panic may have happened with CURRENT locked; don't wait for it.
    let cur = CURRENT.try_lock().and_then(|g| *g);
    if let Some(name) = cur {
        crate::log::print_unlocked(format_args!(
            "test {} ... FAILED: panic (see above)\n",
            name
        ));
        FAILED.fetch_add(1, Ordering::Relaxed);
        let (p, f, s) = summary();
        crate::log::print_unlocked(format_args!("{} passed, {} failed, {} skipped\n", p, f, s));
        true
    } else {
        false
    }
}
