//! Tasks: kernel threads and the scheduler that runs them.
//!
//! `thread.rs` is the low-level, `unsafe` half (guarded kernel stacks, saved
//! CPU contexts, the context switch); `sched/` is the policy on top of it,
//! free of `unsafe` (run queue, time slices and preemption, sleeping, wait
//! queues, the idle thread); `smp.rs` starts the other CPUs, which idle
//! outside the scheduler for now.  A user process is one of these threads running
//! in user mode; what makes it a process lives in `proc/`.  The per-CPU
//! structures here are sized for one CPU today: SMP work (per-CPU run queues,
//! load balancing, cross-CPU wake-ups and reschedule IPIs) goes here.
pub mod sched;
pub mod smp;
pub mod thread;
