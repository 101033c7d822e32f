//! Code that checks or measures the kernel rather than serving programs.
//!
//! `runner.rs` runs the `ktest!` self-tests every crate registers (the
//! `selftest` command-line word) and keeps the hung-test watchdog the timer
//! tick consults; `testenv.rs` is what the address-space tests share; the
//! tests that exercise several subsystems at once on the real page tables
//! live here (`uspace.rs`, `khugepaged.rs`, `invariants.rs`, `memtest.rs`),
//! while tests of one module stay next to it (`task/sched/tests.rs`,
//! `perf/`).  `storm.rs` is the seeded random-operation storm (`storm=`)
//! and `allocbench.rs` the allocator's benchmark (`bench=alloc`).  New
//! cross-subsystem tests (swap, migration, SMP stress) go here.
pub mod allocbench;
pub mod invariants;
pub mod khugepaged;
pub mod memtest;
mod runner;
pub mod storm;
pub mod testenv;
pub mod uspace;

pub use runner::{on_panic, overdue, run, summary};
