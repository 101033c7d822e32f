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
//! * `KERNEL_MAP_BASE` (L0 slot 510) — 4K pages mapped at run time with
//!   `map_kernel_page` (kernel thread stacks with guard pages).
//!
//! The lower half (TTBR0) is an empty table, for user address spaces later.
//! No contiguous hints are used here (they are reserved for user mappings).
use crate::regs::{dsb_ishst, tlbi_vmalle1, write_sysreg};
use crate::{KernelLayout, PHYS_OFFSET, Translation};
use aarch64_cpu::registers::{Readable, TTBR0_EL1, TTBR1_EL1};
use core::sync::atomic::{AtomicU64, Ordering};
use mm::paging::Entry;

pub const PAGE_SIZE: u64 = 4096;
pub const SIZE_2M: u64 = 2 << 20;
pub const SIZE_1G: u64 = 1 << 30;

// The descriptor bits are `pte`'s, the format `mm`'s page-table engine
// encodes and decodes; none is defined here.
use crate::pte::{
    AF, AP_RDONLY, AP_USER, ATTRIDX_SHIFT, Aarch64, MAIR_IDX_DEVICE, MAIR_IDX_NORMAL, OA_MASK, PXN,
    SH_INNER, TYPE_TABLE_PAGE, UXN, VALID,
};
/// AttrIndx of Device-nGnRnE memory.
const ATTR_DEVICE: u64 = MAIR_IDX_DEVICE << ATTRIDX_SHIFT;
/// AttrIndx of Normal write-back memory.
const ATTR_NORMAL: u64 = MAIR_IDX_NORMAL << ATTRIDX_SHIFT;

/// Kernel-mapping permission classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// Kernel text: read + execute at EL1.
    Text,
    /// Read-only data.
    ReadOnly,
    /// Read-write data, never executable.
    ReadWrite,
    /// Device-nGnRnE MMIO, read-write, never executable.
    Device,
}

const fn leaf_attrs(p: Prot) -> u64 {
    match p {
        Prot::Text => ATTR_NORMAL | SH_INNER | AF | AP_RDONLY | UXN,
        Prot::ReadOnly => ATTR_NORMAL | SH_INNER | AF | AP_RDONLY | PXN | UXN,
        Prot::ReadWrite => ATTR_NORMAL | SH_INNER | AF | PXN | UXN,
        Prot::Device => ATTR_DEVICE | AF | PXN | UXN,
    }
}

const fn shift_of(level: usize) -> u32 {
    39 - 9 * level as u32
}

const fn index_of(va: u64, level: usize) -> usize {
    ((va >> shift_of(level)) & 511) as usize
}

/// The direct-map virtual address of a physical address.
#[inline]
pub const fn phys_to_virt(pa: u64) -> u64 {
    pa + PHYS_OFFSET
}

/// A page-table frame seen through the direct map.
///
/// # Safety
/// `pa` must be a 4K-aligned frame that holds a page table (or is being made
/// one) and is mapped by the current direct map; no other reference to it may
/// be live.
unsafe fn table_mut(pa: u64) -> &'static mut [u64; 512] {
    // SAFETY: guaranteed by the caller.
    unsafe { &mut *(phys_to_virt(pa) as *mut [u64; 512]) }
}

/// Read entry `idx` of the table at `pa`.
///
/// # Safety
/// `pa` must be a page-table frame reachable through the direct map.
unsafe fn read_entry(pa: u64, idx: usize) -> u64 {
    // SAFETY: guaranteed by the caller; a volatile read of one aligned u64.
    unsafe { core::ptr::read_volatile((phys_to_virt(pa) as *const u64).add(idx)) }
}

/// Bump allocator of zeroed page-table frames over one free physical range.
pub struct FrameBump {
    pub start: u64,
    pub next: u64,
    pub limit: u64,
}

impl FrameBump {
    pub const fn new(start: u64, limit: u64) -> Self {
        Self {
            start,
            next: start,
            limit,
        }
    }

    pub fn alloc(&mut self) -> u64 {
        assert!(
            self.next + PAGE_SIZE <= self.limit,
            "early page-table frames exhausted"
        );
        let pa = self.next;
        self.next += PAGE_SIZE;
        // SAFETY: the frame is free RAM owned by this allocator, reachable via
        // the (early or final) direct map, and not yet referenced anywhere.
        unsafe { table_mut(pa) }.fill(0);
        pa
    }
}

/// Builds a table tree whose frames come from a `FrameBump`.
/// The boot-time tables are built by hand with it: it runs before any
/// allocator exists, where `mm`'s `PageTable` (which takes its table pages
/// from a `PtAlloc`) cannot yet.
pub struct TableBuilder<'a> {
    pub root: u64,
    bump: &'a mut FrameBump,
    /// Largest leaf size `map` has used (reset by the caller between uses).
    pub largest_leaf: u64,
}

impl<'a> TableBuilder<'a> {
    pub fn new(bump: &'a mut FrameBump) -> Self {
        let root = bump.alloc();
        Self {
            root,
            bump,
            largest_leaf: 0,
        }
    }

    /// Map `[va, va+size)` to `[pa, pa+size)`.  With `blocks`, 1 GiB and
    /// 2 MiB blocks are used wherever `va`, `pa` and the remaining size allow.
    pub fn map(&mut self, mut va: u64, mut pa: u64, size: u64, prot: Prot, blocks: bool) {
        assert!(
            va.is_multiple_of(PAGE_SIZE)
                && pa.is_multiple_of(PAGE_SIZE)
                && size.is_multiple_of(PAGE_SIZE)
        );
        let end = va + size;
        while va < end {
            let left = end - va;
            let fits =
                |sz: u64| blocks && va.is_multiple_of(sz) && pa.is_multiple_of(sz) && left >= sz;
            let (level, sz) = if fits(SIZE_1G) {
                (1, SIZE_1G)
            } else if fits(SIZE_2M) {
                (2, SIZE_2M)
            } else {
                (3, PAGE_SIZE)
            };
            let table = self.table_for(va, level);
            let idx = index_of(va, level);
            // SAFETY: `table` is a page-table frame of this tree, allocated
            // by our bump allocator and reachable through the direct map.
            let t = unsafe { table_mut(table) };
            assert!(t[idx] & VALID == 0, "kernel mapping overlap at {va:#x}");
            let kind = if level == 3 { TYPE_TABLE_PAGE } else { 0 };
            t[idx] = pa | leaf_attrs(prot) | kind | VALID;
            self.largest_leaf = self.largest_leaf.max(sz);
            va += sz;
            pa += sz;
        }
    }

    /// The table at `level` covering `va`, creating intermediate tables.
    fn table_for(&mut self, va: u64, level: usize) -> u64 {
        let mut table = self.root;
        for l in 0..level {
            let idx = index_of(va, l);
            // SAFETY: `table` is a frame of this tree (see `map`).
            let t = unsafe { table_mut(table) };
            let e = t[idx];
            if e & VALID == 0 {
                let next = self.bump.alloc();
                t[idx] = next | TYPE_TABLE_PAGE | VALID;
                table = next;
            } else {
                assert!(
                    e & TYPE_TABLE_PAGE != 0,
                    "block in the way at {va:#x} level {l}"
                );
                table = e & OA_MASK;
            }
        }
        table
    }
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

/// Base of the region where `map_kernel_page` works (one L0 slot, 512 GiB).
pub const KERNEL_MAP_BASE: u64 = 0xFFFF_FF00_0000_0000;
/// Size of that region.
pub const KERNEL_MAP_SIZE: u64 = 1 << 39;

/// The empty lower-half table installed at boot (TTBR0 value, ASID 0).
pub static EMPTY_TTBR0: AtomicU64 = AtomicU64::new(0);
/// Serialises changes to the run-time region's tables.  Taken with IRQs
/// enabled (it allocates); never from interrupt context.
static KMAP_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// A zeroed 4K table frame from the kernel heap; returns its physical address.
fn alloc_table() -> Result<u64, &'static str> {
    let layout = core::alloc::Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize)
        .map_err(|_| "layout")?;
    // SAFETY: a non-zero-sized layout.
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) } as u64;
    if p == 0 {
        return Err("out of memory for a page table");
    }
    // Heap memory is RAM (the direct map or the image's boot arena); the
    // tables are later reached through the direct map at `pa + PHYS_OFFSET`.
    match walk(live_root(p), p) {
        Some(t) => Ok(t.pa),
        None => {
            // SAFETY: `p` was just allocated with `layout`.
            unsafe { alloc::alloc::dealloc(p as *mut u8, layout) };
            Err("heap memory not mapped")
        }
    }
}

fn check_kmap_va(va: u64) -> Result<(), &'static str> {
    if !(KERNEL_MAP_BASE..KERNEL_MAP_BASE + KERNEL_MAP_SIZE).contains(&va) {
        return Err("address outside the kernel map region");
    }
    if !va.is_multiple_of(PAGE_SIZE) {
        return Err("unaligned address");
    }
    Ok(())
}

/// The level-3 table covering `va`, creating missing tables if `create`.
fn kmap_l3(va: u64, create: bool) -> Result<u64, &'static str> {
    let mut table = TTBR1_EL1.get() & OA_MASK;
    for level in 0..3 {
        let idx = index_of(va, level);
        // SAFETY: `table` is a live table frame of the kernel tree (from
        // TTBR1 or a table descriptor), reachable through the direct map.
        let e = unsafe { read_entry(table, idx) };
        if e & VALID != 0 {
            if e & TYPE_TABLE_PAGE == 0 {
                return Err("block in the kernel map region");
            }
            table = e & OA_MASK;
            continue;
        }
        if !create {
            return Err("not mapped");
        }
        let next = alloc_table()?;
        // Zeroes visible to the walker before the descriptor is.
        dsb_ishst();
        // SAFETY: as above; only this module changes the run-time region
        // (under KMAP_LOCK), and the new descriptor points at a zeroed table.
        unsafe {
            core::ptr::write_volatile(
                (phys_to_virt(table) as *mut u64).add(idx),
                next | TYPE_TABLE_PAGE | VALID,
            )
        };
        table = next;
    }
    Ok(table)
}

/// Map the 4K page `va` (inside `KERNEL_MAP_BASE..+KERNEL_MAP_SIZE`) to the
/// frame `pa`: Normal WB, global, never executable, writable if asked.
/// Missing tables come from the kernel heap.  Fails if `va` is mapped.
/// Not for interrupt context.
pub fn map_kernel_page(va: u64, pa: u64, writable: bool) -> Result<(), &'static str> {
    check_kmap_va(va)?;
    if pa & !OA_MASK != 0 {
        return Err("unaligned frame");
    }
    let _g = KMAP_LOCK.lock();
    let l3 = kmap_l3(va, true)?;
    let idx = index_of(va, 3);
    // SAFETY: `l3` is the live level-3 table for `va`.
    if unsafe { read_entry(l3, idx) } & VALID != 0 {
        return Err("page already mapped");
    }
    let prot = if writable {
        Prot::ReadWrite
    } else {
        Prot::ReadOnly
    };
    // SAFETY: as in `kmap_l3`; the entry was invalid, so no TLB entry exists.
    unsafe {
        core::ptr::write_volatile(
            (phys_to_virt(l3) as *mut u64).add(idx),
            pa | leaf_attrs(prot) | TYPE_TABLE_PAGE | VALID,
        )
    };
    dsb_ishst();
    crate::regs::isb();
    Ok(())
}

/// Unmap the 4K page `va` of the run-time region and invalidate it in the
/// TLB (all ASIDs, inner shareable).  Returns the frame it mapped, or
/// `None`.  Not for interrupt context.
pub fn unmap_kernel_page(va: u64) -> Option<u64> {
    check_kmap_va(va).ok()?;
    let _g = KMAP_LOCK.lock();
    let l3 = kmap_l3(va, false).ok()?;
    let idx = index_of(va, 3);
    // SAFETY: `l3` is the live level-3 table for `va`.
    let e = unsafe { read_entry(l3, idx) };
    if e & VALID == 0 {
        return None;
    }
    // SAFETY: as in `map_kernel_page`; the page is out of use by contract
    // and the invalidation below drops cached translations.
    unsafe { core::ptr::write_volatile((phys_to_virt(l3) as *mut u64).add(idx), 0) };
    crate::regs::tlbi_va(va);
    Some(e & OA_MASK)
}
