//! The kernel's implementations of `mm`'s hardware hooks.
//!
//! `mm` reaches the TLB only through `TlbOps`; these flush with the arch
//! crate's primitives, on every CPU that may hold the entries: arm64's
//! TLBIs are broadcast, x86 sends shootdown IPIs (`mem::shootdown`).  A
//! user flush names the CPUs that loaded the space's root (its
//! `AtomicCpuSet`); an empty set means no TLB can hold an entry of the
//! space (one being built by fork, or never run), so nothing is flushed.
//! Kernel flushes go to every online CPU.
use crate::arch;
use crate::mem::shootdown::{self, Flush};
use mm::cpu::CpuSet;
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
    fn flush_range(&self, space: Space, cpus: CpuSet, start: u64, end: u64, stride: u64) {
        let f = match space {
            Space::Kernel => Flush::KernelRange { start, end, stride },
            Space::User { .. } if cpus.is_empty() => return,
            Space::User { asid } => Flush::UserRange {
                asid,
                start,
                end,
                stride,
            },
        };
        flush(f, space, cpus);
    }
    fn flush_all(&self, space: Space, cpus: CpuSet) {
        let f = match space {
            Space::Kernel => Flush::KernelAll,
            Space::User { .. } if cpus.is_empty() => return,
            Space::User { asid } => Flush::UserAll { asid },
        };
        flush(f, space, cpus);
    }
    fn sync_tables(&self) {
        arch::tlb::sync_tables();
    }
}
