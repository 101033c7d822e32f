//! Emulated MMU for host tests.
//!
//! Host "physical memory" ([`EmuMem`], a [`crate::physmem::phys::PhysMem`]), a
//! page-table page pool in it ([`PtPool`], handed out through [`Emu`]'s
//! [`crate::paging::PtAlloc`] impl), a software table
//! walker that decodes entries through the real formats ([`translate`]), a
//! TLB model that is also the host [`crate::paging::TlbOps`] ([`EmuTlb`]),
//! and invariant checkers ([`check_cont_blocks`]).
//!
//! Portable `no_std` code like the rest of `mm`; the kernel simply does not
//! use it.

mod check;
mod mem;
mod mmu;

pub use check::check_cont_blocks;
pub use mem::{EmuMem, PtPool};
pub use mmu::{Access, EmuTlb, Fault, Flush, TlbEntry, Translation, translate, walk_leaf};

use crate::paging::{PtAlloc, PtEnv};

/// A ready-to-use machine: `mem` covers `[base, base + size)`; the first
/// `pt_pages` pages are the page-table pool (handed out by `Emu`'s
/// [`PtAlloc`] impl), the rest is free for data frames.
pub struct Emu {
    pub mem: EmuMem,
    pub tlb: EmuTlb,
    pub pool: PtPool,
    pt_end: u64,
}

impl Emu {
    pub fn new(base: u64, size: u64, pt_pages: u64) -> Self {
        let mem = EmuMem::new(base, size);
        let pt_end = base + pt_pages * crate::addr::PAGE_SIZE;
        assert!(pt_end <= base + size);
        Emu {
            mem,
            tlb: EmuTlb::new(),
            pool: PtPool::new(base, pt_end),
            pt_end,
        }
    }
    /// First physical address after the page-table pool.
    pub fn data_start(&self) -> u64 {
        self.pt_end
    }
    /// Page-table pages in use.
    pub fn pt_in_use(&self) -> usize {
        self.pool.in_use()
    }
    /// An environment for a page table on this machine.
    pub fn env(&self) -> PtEnv<'_> {
        PtEnv {
            mem: &self.mem,
            alloc: self,
            tlb: &self.tlb,
        }
    }
}

impl PtAlloc for Emu {
    fn alloc_pt(&self) -> Option<u64> {
        self.pool.alloc(&self.mem)
    }
    fn free_pt(&self, pa: u64) {
        self.pool.free(&self.mem, pa)
    }
}
