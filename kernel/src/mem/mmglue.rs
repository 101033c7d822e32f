//! The kernel's implementations of `mm`'s hardware hooks.
//!
//! `mm` reaches the TLB only through `TlbOps`; these forward to the arch
//! crate's broadcast-safe primitives.  A user flush names the CPUs that
//! loaded the space's root (its `AtomicCpuSet`); with one CPU running user
//! code that is this CPU or none, and none means no TLB can hold an entry
//! of the space (a space being built by fork, or never run), so nothing is
//! flushed.  Secondary CPUs (issue 14) turn the rest of the set into
//! shootdown IPIs on x86; arm64's TLBI is broadcast already.
use crate::arch;
use mm::cpu::CpuSet;
use mm::paging::{Space, TlbOps};

pub struct KernelTlb;

pub static KERNEL_TLB: KernelTlb = KernelTlb;

impl TlbOps for KernelTlb {
    fn flush_range(&self, space: Space, cpus: CpuSet, start: u64, end: u64, stride: u64) {
        match space {
            Space::Kernel => arch::tlb::flush_kernel_range(start, end, stride),
            Space::User { .. } if cpus.is_empty() => {}
            Space::User { asid } => arch::tlb::flush_user_range(asid, start, end, stride),
        }
    }
    fn flush_all(&self, space: Space, cpus: CpuSet) {
        match space {
            Space::Kernel => arch::tlb::flush_kernel_all(),
            Space::User { .. } if cpus.is_empty() => {}
            Space::User { asid } => arch::tlb::flush_user_all(asid),
        }
    }
    fn sync_tables(&self) {
        arch::tlb::sync_tables();
    }
}
