//! Code that checks or measures the kernel rather than serving programs,
//! compiled only into the kernels that run it.
//!
//! With cargo feature `selftest`: `runner.rs` runs the `ktest!` self-tests
//! every crate registers (the `selftest` command-line word) and keeps the
//! hung-test watchdog the timer tick consults; `testenv.rs` is what the
//! address-space tests share; the tests that exercise several subsystems
//! at once on the real page tables live here (`uspace.rs`, `khugepaged.rs`,
//! `asid.rs` (arm64's ASID rollover),
//! `invariants.rs`, `memtest.rs`), while tests of one module stay next to
//! it (`task/sched/tests.rs`, `perf/`, the arch crates' `selftests.rs`),
//! under the same feature; `storm.rs` is the seeded random-operation storm
//! (`storm=`), which reports as one more test, and `smpstorm.rs` its
//! variant with a thread per CPU in one address space (a self-test);
//! `panic_test.rs` panics on purpose (`panic_test`) for the runner's check
//! of the panic report's backtrace.  With feature `bench`:
//! `allocbench.rs`, the allocator's benchmark (`bench=alloc`).  Without the
//! features the hooks the rest of the kernel calls (the watchdog, the panic
//! report) are no-ops.  New cross-subsystem tests (swap, migration, SMP
//! stress) go here.
#[cfg(feature = "bench")]
pub mod allocbench;
#[cfg(all(feature = "selftest", target_arch = "aarch64"))]
pub mod asid;
#[cfg(feature = "selftest")]
pub mod compact;
#[cfg(feature = "selftest")]
pub mod invariants;
#[cfg(feature = "selftest")]
pub mod khugepaged;
#[cfg(feature = "selftest")]
pub mod memtest;
#[cfg(feature = "selftest")]
mod migrate;
#[cfg(feature = "selftest")]
pub mod numa;
#[cfg(feature = "selftest")]
mod numab;
#[cfg(feature = "selftest")]
pub mod panic_test;
#[cfg(feature = "selftest")]
mod runner;
#[cfg(feature = "selftest")]
mod smpstorm;
#[cfg(feature = "selftest")]
pub mod storm;
#[cfg(feature = "selftest")]
pub mod testenv;
#[cfg(feature = "selftest")]
pub mod uspace;

#[cfg(feature = "selftest")]
pub use runner::{on_panic, overdue, run, summary};

/// No test can be running in a kernel without them.
#[cfg(not(feature = "selftest"))]
pub fn overdue(_now: u64) -> Option<&'static str> {
    None
}

/// No test can be running in a kernel without them.
#[cfg(not(feature = "selftest"))]
pub fn on_panic() -> bool {
    false
}

/// The `selftest[=<filter>]` word: run the matching tests and print the
/// summary line the runner parses.  True if none failed.
#[cfg(feature = "selftest")]
pub fn run_word() -> bool {
    let filter = crate::cmdline::value("selftest").unwrap_or("");
    let (p, f, s) = run(filter);
    println!("{} passed, {} failed, {} skipped", p, f, s);
    f == 0
}

/// The `storm=<seed>,<ops>` word, reported as one more test line (after
/// any self-tests of the same boot) so the runner counts it.
#[cfg(feature = "selftest")]
pub fn storm_word() -> bool {
    let v = crate::cmdline::value("storm").unwrap_or("");
    let (mut p, mut f, s) = summary();
    match storm::parse(v) {
        Some((seed, ops)) => match storm::run(seed, ops) {
            Ok(()) => {
                println!("test storm(seed={:#x},ops={}) ... ok", seed, ops);
                p += 1;
            }
            Err(why) => {
                println!(
                    "test storm(seed={:#x},ops={}) ... FAILED: {}",
                    seed, ops, why
                );
                f += 1;
            }
        },
        None => {
            println!(
                "test storm ... FAILED: storm=<seed>,<ops> expected, got '{}'",
                v
            );
            f += 1;
        }
    }
    println!("{} passed, {} failed, {} skipped", p, f, s);
    f == 0
}
