//! The portable memory manager.
//!
//! Everything here is architecture-neutral: hardware specifics reach `mm`
//! only through the traits in [`paging`] (page-table entry formats and TLB
//! maintenance) and [`physmem::phys`] (access to physical memory).  The crate builds
//! for the bare-metal kernels and for the host, where the unit tests drive
//! the real x86_64 and aarch64 entry formats over an emulated MMU.
//!
//! The crate contains no `unsafe`: the kernel hands it the frame-descriptor
//! array as a safe `&'static [FrameDesc]` and physical memory through
//! [`physmem::phys::PhysMem`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod abi;
pub mod addr;
pub mod aspace;
pub mod bootinfo;
pub mod cpu;
pub mod emu;
pub mod paging;
pub mod physmem;
pub mod reclaim;
pub mod shmem;
pub mod swap;
pub mod sync;
pub mod thp;
pub mod vma;
