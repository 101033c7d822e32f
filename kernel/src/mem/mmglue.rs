//! The kernel's implementations of `mm`'s hardware hooks.
//!
//! `mm` reaches the TLB only through `TlbOps`; these forward to the arch
//! crate's broadcast-safe primitives.
use crate::arch;
use mm::paging::{Space, TlbOps};

pub struct KernelTlb;

pub static KERNEL_TLB: KernelTlb = KernelTlb;

impl TlbOps for KernelTlb {
    fn flush_range(&self, space: Space, start: u64, end: u64, stride: u64) {
        match space {
            Space::Kernel => arch::tlb::flush_kernel_range(start, end, stride),
            Space::User { asid } => arch::tlb::flush_user_range(asid, start, end, stride),
        }
    }
    fn flush_all(&self, space: Space) {
        match space {
            Space::Kernel => arch::tlb::flush_kernel_all(),
            Space::User { asid } => arch::tlb::flush_user_all(asid),
        }
    }
    fn sync_tables(&self) {
        arch::tlb::sync_tables();
    }
}
