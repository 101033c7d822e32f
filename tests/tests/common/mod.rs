//! Shared helpers for the page-table host tests.
#![allow(dead_code)]

use mm::emu::{Access, Emu, Fault, check_cont_blocks};
use mm::paging::{Attrs, PageTable, PagingArch, Perms, Space};

/// Emulated RAM base: the page-table pool lives here.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Data frames are outside emulated RAM: the walker never reads them.
pub const DATA_PFN: u64 = 0x10_0000;
pub const USER: Space = Space::User { asid: 7 };
pub const K64: u64 = 64 << 10;
pub const M2: u64 = 2 << 20;

pub fn emu() -> Emu {
    Emu::new(RAM_BASE, 8 << 20, 2048)
}

pub fn user_rw() -> Attrs {
    Attrs::user(Perms::USER_RW)
}

/// Access `va` as user code through the TLB model.
pub fn touch<A: PagingArch>(
    emu: &Emu,
    pt: &PageTable<'_, A>,
    va: u64,
    acc: Access,
) -> Result<u64, Fault> {
    emu.tlb.access::<A>(
        &emu.mem,
        pt.root(),
        pt.space(),
        va,
        acc,
        pt.space().is_user(),
    )
}

/// Everything that must hold after every completed batch.
pub fn assert_sane<A: PagingArch>(emu: &Emu, pt: &PageTable<'_, A>) {
    emu.tlb
        .check_coherent::<A>(&emu.mem, pt.root(), pt.space())
        .unwrap();
    check_cont_blocks(pt).unwrap();
    assert_eq!(emu.tlb.conflicts(), 0, "TLB conflict");
}

/// Number of cont-bit entries among the `n` PTEs from `va`.
pub fn cont_count<A: PagingArch>(pt: &PageTable<'_, A>, va: u64, n: usize) -> usize {
    (0..n as u64)
        .filter(|i| {
            pt.read_pte(va + i * 4096)
                .and_then(|e| e.leaf())
                .is_some_and(|l| l.cont)
        })
        .count()
}

/// Run the generic test functions for both formats.
#[macro_export]
macro_rules! both {
    ($($f:ident),* $(,)?) => {
        mod x86_64 {
            $( #[test] fn $f() { super::$f::<arch_x86_64::pte::X86_64>() } )*
        }
        mod aarch64 {
            $( #[test] fn $f() { super::$f::<arch_aarch64::pte::Aarch64>() } )*
        }
    };
}
