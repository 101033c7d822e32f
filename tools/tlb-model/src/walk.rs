//! Leaf-size lookup in guest page tables (x86_64 4-level, arm64 4K granule).
//!
//! The walkers read 64-bit table entries by physical address through a
//! callback; the plugin implements it as a guest-virtual read at
//! `direct_map_base + pa` (the guest's linear map), so no physical-memory
//! API is needed. They return `None` for a non-present translation (the
//! access will fault; the model skips it) or a failed read. The output
//! address comes back with the size so that the plugin can check a walk
//! against the physical address QEMU itself translated the access to.

use crate::model::LeafSize;

/// A leaf translation found by a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Size of the translation (the TLB entry it would fill).
    pub size: LeafSize,
    /// Physical address the walked virtual address translates to.
    pub pa: u64,
}

impl Leaf {
    /// The leaf of `size` whose descriptor holds output address `out`
    /// (already masked to the descriptor's address bits), for `va`.
    fn new(size: LeafSize, out: u64, va: u64) -> Self {
        // A contiguous PTE still maps 4K of its own: its address is per page.
        let shift = if size == LeafSize::Cont64K {
            12
        } else {
            size.shift()
        };
        let offset = (1u64 << shift) - 1;
        Leaf {
            size,
            pa: (out & !offset) | (va & offset),
        }
    }
}

/// Physical address bits 51:12 of an x86 table entry or CR3.
const X86_ADDR: u64 = 0x000f_ffff_ffff_f000;
/// x86 entry bits.
const X86_PRESENT: u64 = 1 << 0;
const X86_PS: u64 = 1 << 7;

/// Leaf of `va` under x86_64 tables rooted at `cr3` (PCID and flag bits
/// ignored): 4-level, or 5-level when `la57` (CR4.LA57; Debian's Linux 6.12
/// turns it on when the CPU has it, as QEMU's `-cpu max` does).
pub fn x86_64(
    cr3: u64,
    la57: bool,
    va: u64,
    mut read: impl FnMut(u64) -> Option<u64>,
) -> Option<Leaf> {
    let mut table = cr3 & X86_ADDR;
    // PML5 (shift 48), PML4 (39), PDPT (30), PD (21), PT (12).
    let shifts: &[u32] = if la57 {
        &[48, 39, 30, 21, 12]
    } else {
        &[39, 30, 21, 12]
    };
    for &shift in shifts {
        let entry = read(table + ((va >> shift) & 0x1ff) * 8)?;
        if entry & X86_PRESENT == 0 {
            return None;
        }
        match shift {
            30 if entry & X86_PS != 0 => {
                return Some(Leaf::new(LeafSize::Pud1G, entry & X86_ADDR, va));
            }
            21 if entry & X86_PS != 0 => {
                return Some(Leaf::new(LeafSize::Pmd2M, entry & X86_ADDR, va));
            }
            12 => return Some(Leaf::new(LeafSize::Base4K, entry & X86_ADDR, va)),
            _ => table = entry & X86_ADDR,
        }
    }
    None
}

/// arm64 translation registers the walk needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arm64Regs {
    /// TTBR0_EL1 (lower VA range).
    pub ttbr0: u64,
    /// TTBR1_EL1 (upper VA range).
    pub ttbr1: u64,
    /// TCR_EL1: T0SZ (bits 5:0) and T1SZ (bits 21:16) give the VA sizes;
    /// DS (bit 59) selects the 52-bit (FEAT_LPA2) descriptor format.
    pub tcr: u64,
}

/// BADDR of a TTBR (bits 47:1; CnP in bit 0 dropped).
const TTBR_BADDR: u64 = 0x0000_ffff_ffff_fffe;
/// Output address bits 47:12 of a descriptor.
const ARM64_ADDR: u64 = 0x0000_ffff_ffff_f000;
/// With TCR_EL1.DS (FEAT_LPA2, 4K granule): output address bits 49:12 in
/// place, and bits 51:50 held in descriptor bits 9:8.
const LPA2_ADDR: u64 = 0x0003_ffff_ffff_f000;
/// The contiguous hint (bit 52) of block and page descriptors.
const ARM64_CONT: u64 = 1 << 52;
/// TCR_EL1.DS.
const TCR_DS: u64 = 1 << 59;

/// Leaf of `va` under arm64 stage-1 tables with a 4 KiB granule.
/// Bit 55 of `va` selects TTBR1 or TTBR0; the starting level follows from
/// the range's TxSZ: level 0 for 48-bit VAs, level -1 for 52-bit ones (with
/// TCR_EL1.DS, the format Debian's Linux 6.12 uses when the CPU has
/// FEAT_LPA2, as QEMU's `-cpu max` does). A level-3 page with the
/// contiguous bit is `Cont64K`; contiguous blocks count as their block size.
pub fn arm64(regs: Arm64Regs, va: u64, mut read: impl FnMut(u64) -> Option<u64>) -> Option<Leaf> {
    let upper = va & (1 << 55) != 0;
    let (ttbr, txsz) = if upper {
        (regs.ttbr1, (regs.tcr >> 16) & 0x3f)
    } else {
        (regs.ttbr0, regs.tcr & 0x3f)
    };
    let ds = regs.tcr & TCR_DS != 0;
    let max_bits = if ds { 52 } else { 48 };
    let va_bits = 64u32
        .checked_sub(txsz as u32)
        .filter(|b| (25..=max_bits).contains(b))?;
    let addr = |desc: u64| {
        if ds {
            (desc & LPA2_ADDR) | ((desc >> 8) & 0b11) << 50
        } else {
            desc & ARM64_ADDR
        }
    };
    // Each level resolves 9 bits above the 12-bit page offset (the first
    // one fewer when the VA size is not a multiple).
    let levels = (va_bits - 12).div_ceil(9) as i32;
    let va = va & ((1u64 << va_bits) - 1);
    let mut table = if ds {
        // BADDR bits 51:48 sit in TTBR bits 5:2.
        (ttbr & 0x0000_ffff_ffff_ffc0) | ((ttbr >> 2) & 0xf) << 48
    } else {
        ttbr & TTBR_BADDR
    };
    for level in (4 - levels)..4 {
        let shift = 12 + 9 * (3 - level) as u32;
        let desc = read(table + ((va >> shift) & 0x1ff) * 8)?;
        let kind = desc & 0b11;
        let out = |size| Some(Leaf::new(size, addr(desc), va));
        match (level, kind) {
            (_, 0b00 | 0b10) => return None,
            (3, 0b11) if desc & ARM64_CONT != 0 => return out(LeafSize::Cont64K),
            (3, 0b11) => return out(LeafSize::Base4K),
            (3, _) => return None,
            (1, 0b01) => return out(LeafSize::Pud1G),
            (2, 0b01) => return out(LeafSize::Pmd2M),
            (_, 0b01) => return None,
            _ => table = addr(desc),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Sparse physical memory of 64-bit words.
    #[derive(Default)]
    struct Mem(HashMap<u64, u64>);

    impl Mem {
        fn set(&mut self, table: u64, index: u64, entry: u64) {
            self.0.insert(table + index * 8, entry);
        }
        fn read(&self) -> impl FnMut(u64) -> Option<u64> + '_ {
            |pa| Some(self.0.get(&pa).copied().unwrap_or(0))
        }
    }

    const fn idx(va: u64, shift: u32) -> u64 {
        (va >> shift) & 0x1ff
    }

    fn size(leaf: Option<Leaf>) -> Option<LeafSize> {
        leaf.map(|l| l.size)
    }

    #[test]
    fn x86_leaves() {
        let mut m = Mem::default();
        let (pml4, pdpt, pd, pt) = (0x1000, 0x2000, 0x3000, 0x4000);
        let va4k = 0x0000_7f12_3456_7000u64;
        m.set(pml4, idx(va4k, 39), pdpt | 0x67);
        m.set(pdpt, idx(va4k, 30), pd | 0x67);
        m.set(pd, idx(va4k, 21), pt | 0x67);
        m.set(pt, idx(va4k, 12), 0x9000 | 0x67);
        let va2m = va4k + (1 << 21);
        m.set(pd, idx(va2m, 21), 0x20_0000 | X86_PS | 0x67);
        let va1g = va4k + (1 << 30);
        m.set(pdpt, idx(va1g, 30), 0x4000_0000 | X86_PS | 0x67);
        // CR3 with a PCID in the low bits.
        let cr3 = pml4 | 0x5;
        assert_eq!(
            size(x86_64(cr3, false, va4k + 0x123, m.read())),
            Some(LeafSize::Base4K)
        );
        assert_eq!(
            size(x86_64(cr3, false, va2m, m.read())),
            Some(LeafSize::Pmd2M)
        );
        assert_eq!(
            size(x86_64(cr3, false, va1g, m.read())),
            Some(LeafSize::Pud1G)
        );
        assert_eq!(size(x86_64(cr3, false, va4k + 0x1000, m.read())), None);
        assert_eq!(size(x86_64(cr3, false, va4k, |_| None)), None);
        // Output addresses: page frame (or block base) plus the offset.
        assert_eq!(
            x86_64(cr3, false, va4k + 0x123, m.read()).map(|l| l.pa),
            Some(0x9123)
        );
        assert_eq!(
            x86_64(cr3, false, va2m + 0x45, m.read()).map(|l| l.pa),
            Some(0x20_0000 | (va2m & 0x1f_ffff) | 0x45)
        );
    }

    #[test]
    fn arm64_leaves_both_ranges() {
        let mut m = Mem::default();
        // 48-bit VAs both sides: T0SZ = T1SZ = 16; start at level 0.
        let regs = Arm64Regs {
            // An ASID in bits 63:48 and CnP in bit 0: not address bits.
            ttbr0: (0x5a << 48) | 0x10_0000 | 1,
            ttbr1: 0x20_0000,
            tcr: 16 | (16 << 16),
        };
        let (l1, l2, l3) = (0x11_0000, 0x12_0000, 0x13_0000);
        let va = 0x0000_ffff_a000_0000u64;
        m.set(0x10_0000, idx(va, 39), l1 | 0b11);
        m.set(l1, idx(va, 30), l2 | 0b11);
        m.set(l2, idx(va, 21), l3 | 0b11);
        m.set(l3, idx(va, 12), 0x5000 | 0x703);
        m.set(l3, idx(va + 0x1000, 12), 0x6000 | ARM64_CONT | 0x703);
        m.set(l2, idx(va + (1 << 21), 21), 0x20_0000 | 0x701);
        m.set(l1, idx(va + (1 << 30), 30), 0x4000_0000 | 0x701);
        assert_eq!(size(arm64(regs, va, m.read())), Some(LeafSize::Base4K));
        assert_eq!(
            size(arm64(regs, va + 0x1fff, m.read())),
            Some(LeafSize::Cont64K)
        );
        assert_eq!(
            size(arm64(regs, va + (1 << 21), m.read())),
            Some(LeafSize::Pmd2M)
        );
        assert_eq!(
            size(arm64(regs, va + (1 << 30), m.read())),
            Some(LeafSize::Pud1G)
        );
        assert_eq!(size(arm64(regs, va + 0x2000, m.read())), None);
        assert_eq!(
            arm64(regs, va + 0x1fff, m.read()).map(|l| l.pa),
            Some(0x6fff)
        );
        assert_eq!(
            arm64(regs, va + (1 << 30) + 0x1234, m.read()).map(|l| l.pa),
            Some(0x4000_0000 + (va & 0x3fff_ffff) + 0x1234)
        );

        // The upper range walks TTBR1 with the top bits dropped.
        let kva = 0xffff_0000_0020_0000u64;
        let k1 = 0x21_0000;
        m.set(0x20_0000, idx(kva, 39), k1 | 0b11);
        m.set(k1, idx(kva, 30), 0x22_0000 | 0b11);
        m.set(0x22_0000, idx(kva, 21), 0x20_0000 | 0x701);
        assert_eq!(size(arm64(regs, kva, m.read())), Some(LeafSize::Pmd2M));
    }

    #[test]
    fn x86_five_levels() {
        let mut m = Mem::default();
        let (pml5, pml4, pdpt, pd) = (0x1000, 0x2000, 0x3000, 0x4000);
        let va = 0x00ff_1234_5660_0000u64;
        m.set(pml5, idx(va, 48), pml4 | 0x67);
        m.set(pml4, idx(va, 39), pdpt | 0x67);
        m.set(pdpt, idx(va, 30), pd | 0x67);
        m.set(pd, idx(va, 21), 0x60_0000 | X86_PS | 0x67);
        let leaf = x86_64(pml5, true, va + 0x10, m.read());
        assert_eq!(size(leaf), Some(LeafSize::Pmd2M));
        assert_eq!(leaf.map(|l| l.pa), Some(0x60_0010));
        // Walked as 4-level, the same tables mean something else.
        assert_eq!(size(x86_64(pml5, false, va, m.read())), None);
    }

    #[test]
    fn arm64_52_bit_lpa2_starts_at_level_minus_1() {
        let mut m = Mem::default();
        // T0SZ = 12 with DS: 52-bit VAs, 5 levels; OA bits 51:50 in 9:8.
        let regs = Arm64Regs {
            ttbr0: 0x10_0000,
            ttbr1: 0,
            tcr: TCR_DS | 12,
        };
        let va = 0x000f_0000_1234_5000u64;
        let (l0, l1, l2, l3) = (0x11_0000, 0x12_0000, 0x13_0000, 0x14_0000);
        m.set(0x10_0000, (va >> 48) & 0xf, l0 | 0b11);
        m.set(l0, idx(va, 39), l1 | 0b11);
        m.set(l1, idx(va, 30), l2 | 0b11);
        m.set(l2, idx(va, 21), l3 | 0b11);
        // A page at 0x4_0000_0000_6000 with bits 9:8 = 0b01 (OA bit 50).
        m.set(l3, idx(va, 12), 0x6000 | (0b01 << 8) | ARM64_CONT | 0x403);
        let leaf = arm64(regs, va + 0x42, m.read());
        assert_eq!(size(leaf), Some(LeafSize::Cont64K));
        assert_eq!(leaf.map(|l| l.pa), Some((1 << 50) | 0x6042));
        // Without DS a 52-bit VA size is refused.
        assert_eq!(
            size(arm64(Arm64Regs { tcr: 12, ..regs }, va, m.read())),
            None
        );
    }

    #[test]
    fn arm64_39_bit_starts_at_level_1() {
        let mut m = Mem::default();
        let regs = Arm64Regs {
            ttbr0: 0x10_0000,
            ttbr1: 0,
            tcr: 25,
        };
        let va = 0x0000_0040_0020_0000u64;
        m.set(0x10_0000, idx(va, 30), 0x11_0000 | 0b11);
        m.set(0x11_0000, idx(va, 21), 0x20_0000 | 0x701);
        assert_eq!(size(arm64(regs, va, m.read())), Some(LeafSize::Pmd2M));
        // An out-of-range TxSZ is refused, not walked.
        assert_eq!(
            size(arm64(Arm64Regs { tcr: 0, ..regs }, va, m.read())),
            None
        );
    }
}
