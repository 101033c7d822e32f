//! The kernel's implementations of `mm`'s hardware hooks.
//!
//! `mm` reaches the TLB only through `TlbOps`; these flush with the arch
//! crate's primitives, on every CPU that may hold the entries: arm64's
//! TLBIs are broadcast, x86 sends shootdown IPIs (`mem::shootdown`).  A
//! user flush names the CPUs that run the space (its `AtomicCpuSet`, read
//! after its flush generation was bumped); an empty set means no CPU runs
//! it now (one being built by fork, never run, or switched away from
//! everywhere), so nothing is flushed now: on x86 a CPU that still caches
//! its entries under the PCID sees the generation moved on when it
//! switches the space back in and flushes then (`sched::switch_mm`);
//! arm64 never trims the set, so an empty one there means no CPU ever ran
//! the space since its ASID was handed out.  Kernel flushes go to every
//! online CPU.
use crate::arch;
use crate::mem::shootdown::{self, Flush};
use mm::cpu::{CpuSet, FlushTargets};
use mm::paging::{Space, TlbOps};

/// Flush here and, where the arch does not broadcast, on the other CPUs
/// that may hold the entries: all of them for kernel mappings, the space's
/// CPU set for user ones.
fn flush(f: Flush, space: Space, cpus: CpuSet) {
    if arch::tlb::BROADCAST {
        shootdown::local(f);
    } else {
        let targets = if space.is_user() { cpus } else { CpuSet::ALL };
        shootdown::flush(f, targets);
    }
}

pub struct KernelTlb;

pub static KERNEL_TLB: KernelTlb = KernelTlb;

impl TlbOps for KernelTlb {
    fn flush_range(&self, space: Space, to: FlushTargets, start: u64, end: u64, stride: u64) {
        let f = match space {
            Space::Kernel => Flush::KernelRange { start, end, stride },
            Space::User { .. } if to.cpus.is_empty() => return,
            Space::User { asid } => Flush::UserRange {
                asid,
                start,
                end,
                stride,
                tlb_gen: to.tlb_gen,
            },
        };
        flush(f, space, to.cpus);
    }
    fn flush_all(&self, space: Space, to: FlushTargets) {
        let f = match space {
            Space::Kernel => Flush::KernelAll,
            Space::User { .. } if to.cpus.is_empty() => return,
            Space::User { asid } => Flush::UserAll {
                asid,
                tlb_gen: to.tlb_gen,
            },
        };
        flush(f, space, to.cpus);
    }
    fn sync_tables(&self) {
        arch::tlb::sync_tables();
    }
}
