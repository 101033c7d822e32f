//! Kernel page tables in the VMSAv8-64 format (4K granule, 48-bit VA, 4 levels).
//!
//! Layout of the upper half (TTBR1):
//! * `PHYS_OFFSET + pa` — direct map of all RAM, Normal WB, RW, never
//!   executable, with 1 GiB blocks where a whole aligned GiB is RAM, else
//!   2 MiB blocks, else 4K pages;
//! * `DEVICE_VA_BASE + pa` — device MMIO (PL011, GIC), Device-nGnRnE, 4K pages;
//! * `KIMAGE_VOFFSET + pa` — the kernel image, 4K pages, W^X per section,
//!   with the page below the boot stack left unmapped as a guard.
//!
//! * `KERNEL_MAP_BASE` (L0 slot 510) — 4K pages the kernel maps at run time
//!   (kernel thread stacks with guard pages, `kernel`'s `kmap`).
//!
//! The lower half (TTBR0) is an empty table, for user address spaces later.
//! No contiguous hints are used here (they are reserved for user mappings).
//! The tree is built by `mm`'s engine (`PageTable` in `Space::Kernel`, this
//! crate's `pte` format) from a bump allocator of frames (`boot.rs`).
use crate::regs::{dsb_ishst, tlbi_vmalle1, write_sysreg};
use crate::{KernelLayout, PHYS_OFFSET, Translation};
use aarch64_cpu::registers::{Readable, TTBR0_EL1, TTBR1_EL1};
use core::sync::atomic::{AtomicU64, Ordering};
use mm::paging::Entry;

pub const PAGE_SIZE: u64 = 4096;
#[cfg(feature = "selftest")]
pub const SIZE_2M: u64 = 2 << 20;
#[cfg(feature = "selftest")]
pub const SIZE_1G: u64 = 1 << 30;

// The descriptor bits are `pte`'s, the format `mm`'s page-table engine
// encodes and decodes; none is defined here.
use crate::pte::{AP_RDONLY, AP_USER, Aarch64, OA_MASK, PXN, VALID};

/// The direct-map virtual address of a physical address.
#[inline]
pub const fn phys_to_virt(pa: u64) -> u64 {
    pa + PHYS_OFFSET
}

/// Read entry `idx` of the table at `pa`.
///
/// # Safety
/// `pa` must be a page-table frame reachable through the direct map.
unsafe fn read_entry(pa: u64, idx: usize) -> u64 {
    // SAFETY: guaranteed by the caller; a volatile read of one aligned u64.
    unsafe { core::ptr::read_volatile((phys_to_virt(pa) as *const u64).add(idx)) }
}

/// Walk the table tree rooted at `root` for `va`, with `mm`'s walker and
/// `pte`'s decoding.  The rights are what the hardware grants from the leaf
/// descriptor (AP\[2\] for write, PXN for EL1 execution), not the logical
/// ones `decode` reports (a writable clean user page is read-only here).
pub fn walk(root: u64, va: u64) -> Option<Translation> {
    let p = mm::paging::probe::<Aarch64>(root, va, load_slot, |_, _| {});
    let (Entry::Leaf(leaf), e) = (p.entry, p.raw) else {
        return None;
    };
    // A PROT_NONE leaf decodes as a leaf but is invalid.
    if e & VALID == 0 {
        return None;
    }
    let size = mm::paging::level_size(leaf.level);
    Some(Translation {
        pa: (leaf.pfn << 12) + (va & (size - 1)),
        size,
        writable: e & AP_RDONLY == 0,
        executable: e & PXN == 0,
        user: e & AP_USER != 0,
    })
}

/// The descriptor at physical address `slot` of a live table.
fn load_slot(slot: u64) -> u64 {
    // SAFETY: `slot` is an entry of a table frame reached from TTBRx_EL1 or
    // a table descriptor of the live tables; all table frames are RAM in
    // the direct map.
    unsafe {
        read_entry(
            slot & !(PAGE_SIZE - 1),
            ((slot & (PAGE_SIZE - 1)) / 8) as usize,
        )
    }
}

/// Root of the live table for `va` (TTBR1 for the upper half, else TTBR0).
pub fn live_root(va: u64) -> u64 {
    let ttbr = if va >> 63 != 0 {
        TTBR1_EL1.get()
    } else {
        TTBR0_EL1.get()
    };
    ttbr & OA_MASK
}

/// Install `ttbr1_root` (and an empty `ttbr0_root`) and flush the TLB.
///
/// # Safety
/// The new TTBR1 tree must map everything the CPU is about to touch (this
/// code, the stack, statics, MMIO in use) at the same VAs and PAs as before.
pub unsafe fn switch_tables(ttbr1_root: u64, ttbr0_root: u64) {
    dsb_ishst();
    // SAFETY: guaranteed by the caller; TTBR writes take effect after the isb
    // and stale entries are discarded by the TLB invalidation that follows.
    unsafe {
        write_sysreg!("ttbr1_el1", ttbr1_root);
        write_sysreg!("ttbr0_el1", ttbr0_root);
    }
    crate::regs::isb();
    tlbi_vmalle1();
}

/// Kernel layout, recorded when the final tables are built.
pub struct LayoutInfo {
    pub direct_map_start: AtomicU64,
    pub direct_map_end: AtomicU64,
    pub direct_map_leaf: AtomicU64,
}

pub static LAYOUT: LayoutInfo = LayoutInfo {
    direct_map_start: AtomicU64::new(0),
    direct_map_end: AtomicU64::new(0),
    direct_map_leaf: AtomicU64::new(0),
};

/// Linker-script and `entry.S` symbols (virtual addresses).
pub mod sym {
    unsafe extern "C" {
        static __kernel_start: u8;
        static __kernel_end: u8;
        static __text_start: u8;
        static __text_end: u8;
        static __rodata_start: u8;
        static __rodata_end: u8;
        static __data_start: u8;
        static __data_end: u8;
        static __bss_start: u8;
        static __bss_end: u8;
        static boot_stack_guard: u8;
        static boot_stack_bottom: u8;
        static boot_stack_top: u8;
    }
    macro_rules! addr {
        ($name:ident, $sym:ident) => {
            #[inline]
            pub fn $name() -> u64 {
                (&raw const $sym) as u64
            }
        };
    }
    addr!(kernel_start, __kernel_start);
    addr!(kernel_end, __kernel_end);
    addr!(text_start, __text_start);
    addr!(text_end, __text_end);
    addr!(rodata_start, __rodata_start);
    addr!(rodata_end, __rodata_end);
    addr!(data_start, __data_start);
    addr!(data_end, __data_end);
    addr!(bss_start, __bss_start);
    addr!(bss_end, __bss_end);
    addr!(stack_guard, boot_stack_guard);
    addr!(stack_bottom, boot_stack_bottom);
    addr!(stack_top, boot_stack_top);
}

/// Physical address of a kernel-image virtual address.
#[inline]
pub fn kimage_pa(va: u64) -> u64 {
    va - crate::KIMAGE_VOFFSET
}

pub fn kernel_layout() -> KernelLayout {
    KernelLayout {
        text: sym::text_start()..sym::text_end(),
        rodata: sym::rodata_start()..sym::rodata_end(),
        data: sym::data_start()..sym::data_end(),
        bss: sym::bss_start()..sym::bss_end(),
        stack: sym::stack_bottom()..sym::stack_top(),
        stack_guard: sym::stack_guard()..sym::stack_guard() + PAGE_SIZE,
        direct_map: LAYOUT.direct_map_start.load(Ordering::Relaxed)
            ..LAYOUT.direct_map_end.load(Ordering::Relaxed),
        direct_map_leaf: LAYOUT.direct_map_leaf.load(Ordering::Relaxed),
    }
}

// ---------------------------------------------------------------------------
// Run-time 4K kernel mappings (level-0 slot 510 of TTBR1).

/// Base of the region for run-time kernel mappings (one L0 slot, 512 GiB).
pub const KERNEL_MAP_BASE: u64 = 0xFFFF_FF00_0000_0000;
/// Size of that region.
pub const KERNEL_MAP_SIZE: u64 = 1 << 39;

/// The empty lower-half table installed at boot (TTBR0 value, ASID 0).
pub static EMPTY_TTBR0: AtomicU64 = AtomicU64::new(0);

/// Physical address of the kernel's TTBR1 root (the upper half).
pub fn kernel_root() -> u64 {
    TTBR1_EL1.get() & OA_MASK
}
