//! The kernel's page tables (x86 4-level format), built once at boot.
//!
//! Kernel address space:
//! * `PHYS_OFFSET` (PML4 slot 256..): direct map of all RAM, RW + NX + global,
//!   with 1 GiB leaves when the CPU has them, else 2 MiB leaves.  RAM ranges
//!   (plus the legacy first MiB) are rounded out to 2 MiB, so every RAM byte
//!   is covered by a 2 MiB-or-larger leaf.
//! * `FIXMAP_BASE` (PML4 slot 510): uncached MMIO (the local APIC).
//! * `KERNEL_VMA + pa` (PML4 slot 511): the kernel image with 4 KiB pages and
//!   W^X: text RX, rodata R, data/bss RW+NX; the boot stack's guard page is
//!   left unmapped.
//! * `KERNEL_MAP_BASE` (PML4 slot 509): 4 KiB pages the kernel maps at run
//!   time (kernel thread stacks with guard pages, `kernel`'s `kmap`).
//! * PML4 slots 0..=255 (the lower half) are empty, for user space.
//!
//! The tables are built by `mm`'s engine (`PageTable` in `Space::Kernel`,
//! this crate's `pte` format), like user tables: table frames come from a
//! bump allocator (`arch_common::tables`) over one contiguous chunk of free
//! RAM that is then reserved as `ReservedKind::EarlyPageTables`.  Leaves
//! carry the global bit (ignored if the CPU lacks PGE).
use crate::cpu;
// The entry bits are `pte`'s, the format `mm`'s page-table engine encodes
// and decodes; none is defined here.
use crate::console::kprint;
use crate::pte::{self, X86_64};

use arch_common::tables::{BumpTables, NotLive, TableMem, map_boot};
use core::sync::atomic::{AtomicU64, Ordering};
use mm::bootinfo::{BootInfo, MAX_RAM_RANGES, PhysRange, ReservedKind};
use mm::paging::{Entry, PMD_LEVEL, PTE_LEVEL, PUD_LEVEL, PageTable, Perms, PtEnv, Space};
use spin::Once;
use x86_64::PhysAddr;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr3Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::PhysFrame;

/// Direct-map base: `va = pa + PHYS_OFFSET`.
pub const PHYS_OFFSET: u64 = 0xFFFF_8000_0000_0000;
/// Where the image is linked: `va = pa + KERNEL_VMA` (see boot/x86_64/linker.ld).
pub const KERNEL_VMA: u64 = 0xFFFF_FFFF_8000_0000;
/// Fixed uncached MMIO mappings (PML4 slot 510).
pub const FIXMAP_BASE: u64 = 0xFFFF_FF00_0000_0000;
/// The local APIC's registers (xAPIC MMIO), mapped uncached.
pub const LAPIC_VA: u64 = FIXMAP_BASE;

const SIZE_4K: u64 = 1 << 12;
const SIZE_2M: u64 = 1 << 21;
const SIZE_1G: u64 = 1 << 30;

pub use arch_common::{KernelLayout, Translation};

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static __bss_start: u8;
    static __bss_end: u8;
    static __kernel_phys_start: u8;
    static __kernel_phys_end: u8;
    static boot_stack_guard: u8;
    static boot_stack_bottom: u8;
    static boot_stack_top: u8;
}

fn sym(p: *const u8) -> u64 {
    p as u64
}

/// The kernel layout from the linker symbols and the boot-time choices.
pub fn kernel_layout() -> KernelLayout {
    let r = |s: *const u8, e: *const u8| sym(s)..sym(e);
    let dm = direct_map_ranges();
    let (lo, hi) = (
        dm.first().map_or(0, |r| r.start),
        dm.last().map_or(0, |r| r.end),
    );
    KernelLayout {
        text: r(&raw const __text_start, &raw const __text_end),
        rodata: r(&raw const __rodata_start, &raw const __rodata_end),
        data: r(&raw const __data_start, &raw const __data_end),
        bss: r(&raw const __bss_start, &raw const __bss_end),
        stack: r(&raw const boot_stack_bottom, &raw const boot_stack_top),
        stack_guard: r(&raw const boot_stack_guard, &raw const boot_stack_bottom),
        direct_map: PHYS_OFFSET + lo..PHYS_OFFSET + hi,
        direct_map_leaf: DM_LEAF.load(Ordering::Relaxed),
    }
}

/// The kernel image's physical range (includes the 32-bit boot code).
pub fn image_phys() -> PhysRange {
    PhysRange::new(
        sym(&raw const __kernel_phys_start),
        sym(&raw const __kernel_phys_end),
    )
}

/// Offset at which page-table frames are accessed: 0 while the boot
/// identity map is live, `PHYS_OFFSET` after the switch.
static TABLE_VA_OFFSET: AtomicU64 = AtomicU64::new(0);
static DM_LEAF: AtomicU64 = AtomicU64::new(0);

/// A fixed-capacity list of physical ranges, written once at boot.
struct RangeList {
    r: [PhysRange; MAX_RAM_RANGES + 1],
    n: usize,
}

/// A copy of the boot RAM ranges (the `BootInfo` itself belongs to the kernel).
static BOOT_RAM: Once<RangeList> = Once::new();
/// The direct-mapped ranges (RAM rounded out to 2 MiB, merged).
static DM_RANGES: Once<RangeList> = Once::new();

pub fn boot_ram() -> &'static [PhysRange] {
    BOOT_RAM.get().map_or(&[], |l| &l.r[..l.n])
}

pub fn direct_map_ranges() -> &'static [PhysRange] {
    DM_RANGES.get().map_or(&[], |l| &l.r[..l.n])
}

fn entry_ptr(table_pa: u64, idx: u64) -> *mut u64 {
    (table_pa + idx * 8 + TABLE_VA_OFFSET.load(Ordering::Relaxed)) as *mut u64
}

fn read_entry(table_pa: u64, idx: u64) -> u64 {
    // SAFETY: `table_pa` is a page-table frame (from CR3 or a present
    // non-leaf entry), mapped at the current table offset.
    unsafe { core::ptr::read_volatile(entry_ptr(table_pa, idx)) }
}

fn canonical(va: u64) -> bool {
    ((va as i64) << 16 >> 16) as u64 == va
}

/// The entry at physical address `slot` of a live page table.
fn load_slot(slot: u64) -> u64 {
    read_entry(slot & !(SIZE_4K - 1), (slot & (SIZE_4K - 1)) / 8)
}

/// Walk the live page tables (CR3) for `va`, with `mm`'s walker and
/// `pte`'s decoding.  The rights are what the hardware grants: those of the
/// leaf and of every table entry above it (the boot tables' entries carry
/// no US bit, so no kernel address reads as user).
pub fn kernel_translate(va: u64) -> Option<Translation> {
    if !canonical(va) {
        return None;
    }
    let (mut w, mut x, mut u) = (true, true, true);
    let p = mm::paging::probe::<X86_64>(cpu::read_cr3() & pte::ADDR_MASK, va, load_slot, |_, e| {
        w &= e & pte::RW != 0;
        x &= e & pte::NX == 0;
        u &= e & pte::US != 0;
    });
    let (Entry::Leaf(leaf), e) = (p.entry, p.raw) else {
        return None;
    };
    // A PROT_NONE leaf decodes as a leaf but is not present.
    if e & pte::P == 0 {
        return None;
    }
    let size = mm::paging::level_size(leaf.level);
    Some(Translation {
        pa: (leaf.pfn << 12) | (va & (size - 1)),
        size,
        writable: w && e & pte::RW != 0,
        executable: x && e & pte::NX == 0,
        user: u && e & pte::US != 0,
    })
}

/// RAM plus the legacy first MiB, rounded out to 2 MiB, sorted and merged.
fn compute_direct_ranges(info: &BootInfo) -> RangeList {
    let mut out = RangeList {
        r: [PhysRange::new(0, 0); MAX_RAM_RANGES + 1],
        n: 0,
    };
    let legacy = PhysRange::new(0, 1 << 20);
    for r in info.ram().iter().chain(core::iter::once(&legacy)) {
        let start = r.start & !(SIZE_2M - 1);
        let end = r.end.div_ceil(SIZE_2M) * SIZE_2M;
        if end <= start {
            continue;
        }
        // Insert sorted by start.
        let mut i = out.n;
        while i > 0 && out.r[i - 1].start > start {
            out.r[i] = out.r[i - 1];
            i -= 1;
        }
        out.r[i] = PhysRange::new(start, end);
        out.n += 1;
    }
    // Merge overlapping / touching ranges.
    let mut m = 0;
    for i in 0..out.n {
        if m > 0 && out.r[i].start <= out.r[m - 1].end {
            out.r[m - 1].end = out.r[m - 1].end.max(out.r[i].end);
        } else {
            out.r[m] = out.r[i];
            m += 1;
        }
    }
    out.n = m;
    out
}

/// Find `size` bytes of page-aligned free RAM below 4 GiB (identity-mapped
/// by the boot tables), avoiding every reserved range.
fn find_free(info: &BootInfo, size: u64) -> Option<u64> {
    let mut best: Option<u64> = None;
    for r in info.ram() {
        let mut cand = r.start.max(1 << 20).div_ceil(SIZE_4K) * SIZE_4K;
        loop {
            let end = cand + size;
            if end > r.end || end > (4 << 30) {
                break;
            }
            let hit = info
                .reserved()
                .iter()
                .find(|(res, _)| res.overlaps(&PhysRange::new(cand, end)));
            match hit {
                Some((res, _)) => cand = res.end.div_ceil(SIZE_4K) * SIZE_4K,
                None => {
                    best = Some(best.map_or(cand, |b: u64| b.min(cand)));
                    break;
                }
            }
        }
    }
    best
}

/// Build the kernel page tables with `mm`'s engine, reserve their frames,
/// and switch to them.  Also enables NX, WP, global pages and SMEP when
/// available.
pub fn init(info: &mut BootInfo, lapic_pa: u64) {
    let f = cpu::features();
    // The engine's format sets NX on every non-executable leaf, user ones
    // included; without it bit 63 is reserved and every such entry faults.
    assert!(
        f.nx,
        "x86_64: the CPU has no NX, which every page table here uses"
    );
    let max_level = if f.pdpe1gb { PUD_LEVEL } else { PMD_LEVEL };

    BOOT_RAM.call_once(|| {
        let mut l = RangeList {
            r: [PhysRange::new(0, 0); MAX_RAM_RANGES + 1],
            n: info.nr_ram,
        };
        l.r[..info.nr_ram].copy_from_slice(info.ram());
        l
    });
    DM_RANGES.call_once(|| compute_direct_ranges(info));
    let ranges = direct_map_ranges();
    let l = kernel_layout();

    // Upper bound on the tables needed.
    let mut frames = 1 + 3 + 8; // PML4, fixmap PDPT/PD/PT, slack
    for r in ranges {
        frames += (r.len() >> 39) + 2 + (r.len() >> 30) + 2;
    }
    frames += 2 + ((l.bss.end - l.text.start) >> 21) + 2;
    let chunk = frames * SIZE_4K;
    let base = find_free(info, chunk).expect("x86_64: no free RAM for the kernel page tables");

    // The boot tables identity-map low RAM, where the chunk lies.
    // SAFETY: the chunk is free RAM reached at `pa + 0` until the switch,
    // and only the table built here uses it.
    let mem = unsafe { TableMem::new(0) };
    let alloc = BumpTables::new(&mem, base, base + chunk);
    let env = PtEnv {
        mem: &mem,
        alloc: &alloc,
        tlb: &NotLive,
    };
    let mut pt = PageTable::<X86_64>::new(env, Space::Kernel).expect("x86_64: no PML4 frame");
    let map = map_boot::<X86_64>;

    // Direct map.
    let mut dm_leaf = 0;
    for r in ranges {
        let leaf = map(
            &mut pt,
            PHYS_OFFSET + r.start,
            r.start,
            r.len(),
            Perms::KERNEL_RW,
            false,
            max_level,
        );
        dm_leaf = dm_leaf.max(leaf);
    }
    DM_LEAF.store(dm_leaf, Ordering::Relaxed);

    // Kernel image, W^X, 4 KiB pages; skip the boot stack guard page.
    let sections = [
        (l.text, Perms::KERNEL_RX),
        (l.rodata, Perms::KERNEL_RO),
        (l.data, Perms::KERNEL_RW),
        (l.bss, Perms::KERNEL_RW),
    ];
    for (r, perms) in sections {
        let mut va = r.start;
        while va < r.end {
            if !l.stack_guard.contains(&va) {
                map(
                    &mut pt,
                    va,
                    va - KERNEL_VMA,
                    SIZE_4K,
                    perms,
                    false,
                    PTE_LEVEL,
                );
            }
            va += SIZE_4K;
        }
    }

    // Local APIC registers, uncached.
    map(
        &mut pt,
        LAPIC_VA,
        lapic_pa,
        SIZE_4K,
        Perms::KERNEL_RW,
        true,
        PTE_LEVEL,
    );
    // IOAPIC register windows, uncached, right after it (ioapic.rs).
    if let Some(d) = crate::acpi::DEVICES.get() {
        for (i, &(pa, _)) in d.ioapics[..d.nr_ioapics].iter().enumerate() {
            map(
                &mut pt,
                crate::ioapic::va(i),
                pa & !(SIZE_4K - 1),
                SIZE_4K,
                Perms::KERNEL_RW,
                true,
                PTE_LEVEL,
            );
        }
    }
    let root = pt.root();

    let used = PhysRange::new(alloc.used().start, alloc.used().end);
    info.add_reserved(used, ReservedKind::EarlyPageTables);

    // SAFETY: the new tables map the running code (text), the stack (bss),
    // all statics and the GDT/IDT/TSS at the same virtual addresses as the
    // boot tables did, so execution continues seamlessly.  The CPU has NX
    // (asserted above), so the NX bits the leaves carry are valid.
    unsafe {
        Efer::update(|e| e.insert(EferFlags::NO_EXECUTE_ENABLE));
        Cr3::write(
            PhysFrame::from_start_address(PhysAddr::new(root)).expect("PML4 not page-aligned"),
            Cr3Flags::empty(),
        );
    }
    KERNEL_ROOT.store(root, Ordering::Relaxed);
    TABLE_VA_OFFSET.store(PHYS_OFFSET, Ordering::Relaxed);
    per_cpu_init();

    kprint!(
        "x86_64: page tables: {} frames at {:#x}, direct map {} MiB with {} leaves, NX {}, SMEP {}, PGE {}\n",
        used.len() / SIZE_4K,
        base,
        ranges.last().map_or(0, |r| r.end) >> 20,
        if dm_leaf == SIZE_1G { "1G" } else { "2M" },
        f.nx,
        f.smep,
        f.pge,
    );
}

/// The paging controls every CPU sets for the kernel's tables (CPU 0 in
/// [`init`], each secondary at start-up): EFER.NXE, CR0.WP, CR4.PGE and
/// CR4.SMEP when the CPU has them.  PCIDs are turned on per CPU at first
/// use (context.rs).  No PAT MSR change (the power-on PAT is used).
pub(crate) fn per_cpu_init() {
    let f = cpu::features();
    let mut cr4 = Cr4Flags::empty();
    cr4.set(Cr4Flags::PAGE_GLOBAL, f.pge);
    cr4.set(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, f.smep);
    // SAFETY: NXE (the CPU has NX, checked at boot) makes the NX bits of the
    // kernel's leaves valid; WP, PGE and SMEP only add checks, and the
    // lower half of the kernel's root is empty.
    unsafe {
        Efer::update(|e| e.insert(EferFlags::NO_EXECUTE_ENABLE));
        Cr0::update(|c| c.insert(Cr0Flags::WRITE_PROTECT));
        Cr4::update(|c| c.insert(cr4));
    }
}

// ---------------------------------------------------------------------------
// Run-time 4 KiB kernel mappings (PML4 slot 509).

/// Base of the region for run-time kernel mappings (one PML4 slot, 512 GiB).
pub const KERNEL_MAP_BASE: u64 = 0xFFFF_FE80_0000_0000;
/// Size of that region.
pub const KERNEL_MAP_SIZE: u64 = 1 << 39;

/// Physical address of the kernel's PML4 (set by `init`).
static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);
/// Physical address of the kernel's own PML4.
pub fn kernel_root() -> u64 {
    KERNEL_ROOT.load(Ordering::Relaxed)
}
