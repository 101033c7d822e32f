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
//! * PML4 slots 0..=255 (the lower half) are empty, for user space.
//!
//! Table frames come from a bump allocator over one contiguous chunk of free
//! RAM that is then reserved as `ReservedKind::EarlyPageTables`.
use crate::cpu;
use crate::serial::kprint;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use mm::bootinfo::{BootInfo, MAX_RAM_RANGES, PhysRange, ReservedKind};

/// Direct-map base: `va = pa + PHYS_OFFSET`.
pub const PHYS_OFFSET: u64 = 0xFFFF_8000_0000_0000;
/// Where the image is linked: `va = pa + KERNEL_VMA` (see boot/x86_64/linker.ld).
pub const KERNEL_VMA: u64 = 0xFFFF_FFFF_8000_0000;
/// Fixed uncached MMIO mappings (PML4 slot 510).
pub const FIXMAP_BASE: u64 = 0xFFFF_FF00_0000_0000;
/// The local APIC's registers (xAPIC MMIO), mapped uncached.
pub const LAPIC_VA: u64 = FIXMAP_BASE;

pub const PTE_P: u64 = 1 << 0;
pub const PTE_W: u64 = 1 << 1;
pub const PTE_U: u64 = 1 << 2;
pub const PTE_PWT: u64 = 1 << 3;
pub const PTE_PCD: u64 = 1 << 4;
pub const PTE_A: u64 = 1 << 5;
pub const PTE_D: u64 = 1 << 6;
pub const PTE_PS: u64 = 1 << 7;
pub const PTE_G: u64 = 1 << 8;
pub const PTE_NX: u64 = 1 << 63;
pub const PTE_ADDR: u64 = 0x000F_FFFF_FFFF_F000;

const SIZE_4K: u64 = 1 << 12;
const SIZE_2M: u64 = 1 << 21;
const SIZE_1G: u64 = 1 << 30;

/// One page of a live mapping, as reported by [`kernel_translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address `va` maps to (not the leaf's base).
    pub pa: u64,
    /// Size of the leaf: 4 KiB, 2 MiB or 1 GiB.
    pub size: u64,
    pub writable: bool,
    pub executable: bool,
    pub user: bool,
}

/// A half-open virtual range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtRange {
    pub start: u64,
    pub end: u64,
}

impl VirtRange {
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub const fn contains(&self, va: u64) -> bool {
        self.start <= va && va < self.end
    }
}

/// Where the kernel put things (all virtual except `image_phys`).
#[derive(Clone, Copy, Debug)]
pub struct KernelLayout {
    pub text: VirtRange,
    pub rodata: VirtRange,
    pub data: VirtRange,
    pub bss: VirtRange,
    /// The whole loaded image, physical (includes the 32-bit boot code).
    pub image_phys: PhysRange,
    pub boot_stack: VirtRange,
    /// The unmapped page just below `boot_stack`.
    pub stack_guard: VirtRange,
    pub direct_map_base: u64,
    /// Bytes of physical address space the direct map spans (from 0).
    pub direct_map_size: u64,
    /// The preferred direct-map leaf: 1 GiB with `has_1g_pages()`, else 2 MiB.
    pub direct_map_leaf: u64,
}

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
    let r = |s: *const u8, e: *const u8| VirtRange {
        start: sym(s),
        end: sym(e),
    };
    KernelLayout {
        text: r(&raw const __text_start, &raw const __text_end),
        rodata: r(&raw const __rodata_start, &raw const __rodata_end),
        data: r(&raw const __data_start, &raw const __data_end),
        bss: r(&raw const __bss_start, &raw const __bss_end),
        image_phys: PhysRange::new(
            sym(&raw const __kernel_phys_start),
            sym(&raw const __kernel_phys_end),
        ),
        boot_stack: r(&raw const boot_stack_bottom, &raw const boot_stack_top),
        stack_guard: r(&raw const boot_stack_guard, &raw const boot_stack_bottom),
        direct_map_base: PHYS_OFFSET,
        direct_map_size: DM_SIZE.load(Ordering::Relaxed),
        direct_map_leaf: DM_LEAF.load(Ordering::Relaxed),
    }
}

/// Offset at which page-table frames are accessed: 0 while the boot
/// identity map is live, `PHYS_OFFSET` after the switch.
static TABLE_VA_OFFSET: AtomicU64 = AtomicU64::new(0);
static DM_SIZE: AtomicU64 = AtomicU64::new(0);
static DM_LEAF: AtomicU64 = AtomicU64::new(0);

/// The direct-mapped ranges (RAM rounded out to 2 MiB, merged), for the self-tests.
static mut DM_RANGES: [PhysRange; MAX_RAM_RANGES + 1] = [PhysRange::new(0, 0); MAX_RAM_RANGES + 1];
static DM_NR: AtomicUsize = AtomicUsize::new(0);

/// A copy of the boot RAM ranges (the `BootInfo` itself belongs to the kernel).
static mut BOOT_RAM: [PhysRange; MAX_RAM_RANGES] = [PhysRange::new(0, 0); MAX_RAM_RANGES];
static BOOT_RAM_NR: AtomicUsize = AtomicUsize::new(0);

pub fn boot_ram() -> &'static [PhysRange] {
    // SAFETY: written once by `init` before anything reads it, never again.
    unsafe {
        let all: &[PhysRange; MAX_RAM_RANGES] = &*(&raw const BOOT_RAM);
        &all[..BOOT_RAM_NR.load(Ordering::Acquire)]
    }
}

pub fn direct_map_ranges() -> &'static [PhysRange] {
    // SAFETY: written once by `init` before anything reads it, never again.
    unsafe {
        let all: &[PhysRange; MAX_RAM_RANGES + 1] = &*(&raw const DM_RANGES);
        &all[..DM_NR.load(Ordering::Acquire)]
    }
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

/// Walk the live kernel page tables for `va`.
pub fn kernel_translate(va: u64) -> Option<Translation> {
    if !canonical(va) {
        return None;
    }
    let mut table = cpu::read_cr3() & PTE_ADDR;
    let (mut w, mut x, mut u) = (true, true, true);
    for shift in [39u32, 30, 21, 12] {
        let e = read_entry(table, (va >> shift) & 511);
        if e & PTE_P == 0 {
            return None;
        }
        w &= e & PTE_W != 0;
        x &= e & PTE_NX == 0;
        u &= e & PTE_U != 0;
        if shift == 12 || (shift != 39 && e & PTE_PS != 0) {
            let size = 1u64 << shift;
            let pa = (e & PTE_ADDR & !(size - 1)) | (va & (size - 1));
            return Some(Translation {
                pa,
                size,
                writable: w,
                executable: x,
                user: u,
            });
        }
        table = e & PTE_ADDR;
    }
    None
}

/// Bump allocator of zeroed page-table frames over `[next, end)`.
struct Builder {
    next: u64,
    end: u64,
    pml4: u64,
}

impl Builder {
    fn alloc(&mut self) -> u64 {
        assert!(
            self.next + SIZE_4K <= self.end,
            "x86_64: early page-table chunk exhausted"
        );
        let pa = self.next;
        self.next += SIZE_4K;
        // SAFETY: the frame lies in the reserved page-table chunk (free RAM,
        // identity-mapped by the boot tables) and nothing else uses it.
        unsafe { core::ptr::write_bytes(entry_ptr(pa, 0), 0, 512) };
        pa
    }

    fn write(&mut self, table: u64, idx: u64, val: u64) {
        // SAFETY: `table` is a frame this builder allocated (see `alloc`).
        unsafe { core::ptr::write_volatile(entry_ptr(table, idx), val) };
    }

    /// The next-level table under `table[idx]`, created on demand.
    fn next_table(&mut self, table: u64, idx: u64) -> u64 {
        let e = read_entry(table, idx);
        if e & PTE_P != 0 {
            assert!(
                e & PTE_PS == 0,
                "x86_64: mapping conflicts with a large leaf"
            );
            return e & PTE_ADDR;
        }
        let t = self.alloc();
        self.write(table, idx, t | PTE_P | PTE_W);
        t
    }

    /// Map `[va, va+len)` to `[pa, pa+len)` with leaves up to `max_leaf`.
    fn map(&mut self, mut va: u64, mut pa: u64, len: u64, flags: u64, max_leaf: u64) {
        let end = va + len;
        while va < end {
            let left = end - va;
            let size = [SIZE_1G, SIZE_2M, SIZE_4K]
                .into_iter()
                .find(|&s| s <= max_leaf && va % s == 0 && pa % s == 0 && left >= s)
                .expect("x86_64: unaligned mapping");
            let pdpt = self.next_table(self.pml4, (va >> 39) & 511);
            if size == SIZE_1G {
                self.write(pdpt, (va >> 30) & 511, pa | flags | PTE_PS);
            } else {
                let pd = self.next_table(pdpt, (va >> 30) & 511);
                if size == SIZE_2M {
                    self.write(pd, (va >> 21) & 511, pa | flags | PTE_PS);
                } else {
                    let pt = self.next_table(pd, (va >> 21) & 511);
                    self.write(pt, (va >> 12) & 511, pa | flags);
                }
            }
            va += size;
            pa += size;
        }
    }
}

/// RAM plus the legacy first MiB, rounded out to 2 MiB, sorted and merged.
fn compute_direct_ranges(info: &BootInfo) -> usize {
    // SAFETY: single-threaded boot; `init` is the only writer, before readers.
    let out = unsafe { &mut *(&raw mut DM_RANGES) };
    let mut n = 0;
    let legacy = PhysRange::new(0, 1 << 20);
    for r in info.ram().iter().chain(core::iter::once(&legacy)) {
        let start = r.start & !(SIZE_2M - 1);
        let end = r.end.div_ceil(SIZE_2M) * SIZE_2M;
        if end <= start {
            continue;
        }
        // Insert sorted by start.
        let mut i = n;
        while i > 0 && out[i - 1].start > start {
            out[i] = out[i - 1];
            i -= 1;
        }
        out[i] = PhysRange::new(start, end);
        n += 1;
    }
    // Merge overlapping / touching ranges.
    let mut m = 0;
    for i in 0..n {
        if m > 0 && out[i].start <= out[m - 1].end {
            out[m - 1].end = out[m - 1].end.max(out[i].end);
        } else {
            out[m] = out[i];
            m += 1;
        }
    }
    DM_NR.store(m, Ordering::Release);
    m
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

/// Build the kernel page tables, reserve their frames, and switch to them.
/// Also enables NX, WP, global pages and SMEP when available.
pub fn init(info: &mut BootInfo, lapic_pa: u64) {
    let f = cpu::features();
    let nx = if f.nx { PTE_NX } else { 0 };
    let g = if f.pge { PTE_G } else { 0 };
    let leaf = if f.pdpe1gb { SIZE_1G } else { SIZE_2M };
    DM_LEAF.store(leaf, Ordering::Relaxed);

    // SAFETY: single-threaded boot; readers only come after `init`.
    unsafe {
        let ram = &mut *(&raw mut BOOT_RAM);
        ram[..info.nr_ram].copy_from_slice(info.ram());
    }
    BOOT_RAM_NR.store(info.nr_ram, Ordering::Release);
    let n = compute_direct_ranges(info);
    let ranges = direct_map_ranges();
    let l = kernel_layout();

    // Upper bound on the tables needed.
    let mut frames = 1 + 3 + 8; // PML4, fixmap PDPT/PD/PT, slack
    for r in &ranges[..n] {
        frames += (r.len() >> 39) + 2 + (r.len() >> 30) + 2;
    }
    frames += 2 + ((l.bss.end - l.text.start) >> 21) + 2;
    let chunk = frames * SIZE_4K;
    let base = find_free(info, chunk).expect("x86_64: no free RAM for the kernel page tables");

    let mut b = Builder {
        next: base,
        end: base + chunk,
        pml4: 0,
    };
    b.pml4 = b.alloc();

    // Direct map.
    let dm_flags = PTE_P | PTE_W | PTE_A | PTE_D | g | nx;
    for r in ranges {
        b.map(PHYS_OFFSET + r.start, r.start, r.len(), dm_flags, leaf);
    }
    DM_SIZE.store(ranges.last().map_or(0, |r| r.end), Ordering::Relaxed);

    // Kernel image, W^X, 4 KiB pages; skip the boot stack guard page.
    let sections = [
        (l.text, PTE_P | PTE_A | g),
        (l.rodata, PTE_P | PTE_A | g | nx),
        (l.data, PTE_P | PTE_W | PTE_A | PTE_D | g | nx),
        (l.bss, PTE_P | PTE_W | PTE_A | PTE_D | g | nx),
    ];
    for (r, flags) in sections {
        let mut va = r.start;
        while va < r.end {
            if !l.stack_guard.contains(va) {
                b.map(va, va - KERNEL_VMA, SIZE_4K, flags, SIZE_4K);
            }
            va += SIZE_4K;
        }
    }

    // Local APIC registers, uncached.
    b.map(
        LAPIC_VA,
        lapic_pa,
        SIZE_4K,
        PTE_P | PTE_W | PTE_PCD | PTE_PWT | g | nx,
        SIZE_4K,
    );

    let used = PhysRange::new(base, b.next);
    info.add_reserved(used, ReservedKind::EarlyPageTables);

    // SAFETY: the new tables map the running code (text), the stack (bss),
    // all statics and the GDT/IDT/TSS at the same virtual addresses as the
    // boot tables did, so execution continues seamlessly.  NXE is only set
    // when the CPU supports it (otherwise bit 63 is never used).
    unsafe {
        if f.nx {
            cpu::wrmsr(cpu::MSR_EFER, cpu::rdmsr(cpu::MSR_EFER) | cpu::EFER_NXE);
        }
        cpu::write_cr0(cpu::read_cr0() | cpu::CR0_WP);
        cpu::write_cr3(b.pml4);
    }
    TABLE_VA_OFFSET.store(PHYS_OFFSET, Ordering::Relaxed);
    let mut cr4 = cpu::read_cr4();
    if f.pge {
        cr4 |= cpu::CR4_PGE;
    }
    if f.smep {
        cr4 |= cpu::CR4_SMEP;
    }
    // SAFETY: PGE/SMEP only add checks; the lower half (user) is empty.
    unsafe { cpu::write_cr4(cr4) };

    kprint!(
        "x86_64: page tables: {} frames at {:#x}, direct map {} MiB with {} leaves, NX {}, SMEP {}, PGE {}\n",
        used.len() / SIZE_4K,
        base,
        DM_SIZE.load(Ordering::Relaxed) >> 20,
        if leaf == SIZE_1G { "1G" } else { "2M" },
        f.nx,
        f.smep,
        f.pge,
    );
}
