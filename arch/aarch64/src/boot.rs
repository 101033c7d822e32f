//! Rust side of boot: called by `boot/aarch64/entry.S` on the early tables,
//! at the kernel's link address, on the boot stack.
//!
//! Order: console, DTB → `BootInfo`, final kernel tables (switch), then
//! `kernel_main`.  The vectors are already installed by the entry code, so
//! a fault here is reported like any other.
use crate::console::{self, kprintln};
use crate::dt::{self, GicVersion, Platform};
use crate::paging::{self, PAGE_SIZE, kimage_pa, sym};
use crate::pte::Aarch64;
use crate::{DEVICE_VA_BASE, PHYS_OFFSET};
use arch_common::tables::{BumpTables, NotLive, TableMem, map_boot};
use core::sync::atomic::{AtomicU64, Ordering};
use mm::bootinfo::{BootInfo, PhysRange, ReservedKind};
use mm::paging::{PTE_LEVEL, PUD_LEVEL, PageTable, Perms, PtEnv, Space};

core::arch::global_asm!(include_str!("../../../boot/aarch64/entry.S"), options(raw));

/// The boot information handed to `kernel_main` (filled once, here).
static mut BOOT_INFO: BootInfo = BootInfo::empty();

/// Platform facts from the DT, for the GIC, timer and exit code.
pub static PLATFORM: spin::Once<Platform> = spin::Once::new();

/// A copy of the RAM ranges, for the self-tests (the kernel owns BootInfo).
static RAM: spin::Once<([PhysRange; mm::bootinfo::MAX_RAM_RANGES], usize)> = spin::Once::new();

#[cfg(feature = "selftest")]
pub fn ram_ranges() -> &'static [PhysRange] {
    RAM.get().map(|(r, n)| &r[..*n]).unwrap_or(&[])
}

/// The exception level QEMU started the kernel at (1, or 2 with virtualization=on).
pub static ENTRY_EL: AtomicU64 = AtomicU64::new(1);

unsafe extern "Rust" {
    fn kernel_main(info: &'static mut BootInfo) -> !;
}

/// The fixed kernel VA of a device's physical address.
pub const fn device_va(pa: u64) -> u64 {
    DEVICE_VA_BASE + pa
}

/// Size of the GICv3 redistributor frames of one CPU (RD_base + SGI_base).
pub const GICR_PER_CPU: u64 = 0x2_0000;

#[unsafe(no_mangle)]
extern "C" fn arch_early_main(entry_el: u64, dtb_pa: u64) -> ! {
    if !crate::cpu::has_lse() {
        crate::console::write_str(
            "arch: this kernel is built for the Armv8.1 atomics (FEAT_LSE): boot it with -cpu max or a CPU that has them\n",
        );
        crate::cpu::exit_early_failure(entry_el);
    }
    crate::trap::set_stack_limit(sym::stack_bottom());
    ENTRY_EL.store(entry_el, Ordering::Relaxed);
    kprintln!(
        "arch: aarch64 boot (entered at EL{}, running at EL{})",
        entry_el,
        crate::regs::current_el()
    );
    let p = &raw mut BOOT_INFO;
    // SAFETY: this is the only place that creates a reference to BOOT_INFO,
    // and it runs once; the reference is handed to `kernel_main` below.
    let info: &'static mut BootInfo = unsafe { &mut *p };

    let dtb_pa = if dtb_pa == 0 { dt::DTB_PA } else { dtb_pa };
    let Some(plat) = dt::parse(info, dtb_pa) else {
        kprintln!("arch: cannot boot without a device tree");
        crate::exit(false);
    };
    if info.nr_ram == 0 {
        kprintln!("arch: the device tree lists no RAM");
        crate::exit(false);
    }
    let image = PhysRange::new(kimage_pa(sym::kernel_start()), kimage_pa(sym::kernel_end()));
    info.add_reserved(image, ReservedKind::KernelImage);

    let (start, limit) = find_table_frames(info, image.end);
    // The early tables map RAM at PHYS_OFFSET (boot/aarch64).
    // SAFETY: `[start, limit)` is free RAM reached through that mapping,
    // used only by the tables built here.
    let mem = unsafe { TableMem::new(PHYS_OFFSET) };
    let bump = BumpTables::new(&mem, start, limit);
    let env = PtEnv {
        mem: &mem,
        alloc: &bump,
        tlb: &NotLive,
    };
    let ttbr0_root = PageTable::<Aarch64>::new(env, Space::Kernel)
        .expect("arch: no frame for the empty TTBR0 table")
        .root();
    let ttbr1_root = build_kernel_tables(env, info, &plat);
    let used = bump.used();
    info.add_reserved(
        PhysRange::new(used.start, used.end),
        ReservedKind::EarlyPageTables,
    );

    // SAFETY: the new tree maps the kernel image (this code, statics, boot
    // stack), the direct map (page tables, DTB) at the same VAs and PAs as
    // the early tables; the console moves to its device VA right after.
    unsafe { paging::switch_tables(ttbr1_root, ttbr0_root) };
    paging::EMPTY_TTBR0.store(ttbr0_root, Ordering::Relaxed);
    crate::percpu::init_this_cpu();
    console::set_base(device_va(console::UART_PA));
    PLATFORM.call_once(|| plat);
    RAM.call_once(|| (info.ram, info.nr_ram));

    kprintln!(
        "arch: kernel tables live: {} KiB of table frames at {:#x}, direct map leaf {} KiB",
        (used.end - used.start) / 1024,
        used.start,
        paging::LAYOUT.direct_map_leaf.load(Ordering::Relaxed) / 1024
    );
    // SAFETY: `kernel_main` is defined by the kernel crate with exactly this
    // signature; BOOT_INFO is fully initialised and never touched here again.
    unsafe { kernel_main(info) }
}

/// A free physical range for the page-table frames: the first one at or
/// after the kernel image that is RAM and not reserved (DTB, initrd).
fn find_table_frames(info: &BootInfo, after: u64) -> (u64, u64) {
    const MIN_FRAMES: u64 = 64 * PAGE_SIZE;
    let up = |x: u64| x.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut cand = up(after);
    for _ in 0..(mm::bootinfo::MAX_RAM_RANGES + mm::bootinfo::MAX_RESERVED + 2) {
        let ram = info
            .ram()
            .iter()
            .find(|r| r.start <= cand && cand < r.end)
            .copied();
        let Some(ram) = ram.or_else(|| info.ram().iter().find(|r| r.start > cand).copied()) else {
            break;
        };
        cand = cand.max(up(ram.start));
        let mut limit = ram.end & !(PAGE_SIZE - 1);
        let mut moved = false;
        for (r, _) in info.reserved() {
            if r.start <= cand && cand < r.end {
                cand = up(r.end);
                moved = true;
            } else if r.start > cand {
                limit = limit.min(r.start & !(PAGE_SIZE - 1));
            }
        }
        if moved {
            continue;
        }
        if limit >= cand + MIN_FRAMES {
            return (cand, limit);
        }
        cand = limit;
    }
    kprintln!("arch: no free RAM for the kernel page tables");
    crate::exit(false);
}

/// Build the final TTBR1 tree with `mm`'s engine; returns its root.
fn build_kernel_tables(env: PtEnv, info: &BootInfo, plat: &Platform) -> u64 {
    let mut pt = PageTable::<Aarch64>::new(env, Space::Kernel).expect("arch: no TTBR1 root frame");
    let map = map_boot::<Aarch64>;

    // Kernel image, 4K pages, W^X.
    let map_image = |pt: &mut PageTable<Aarch64>, s: u64, e: u64, perms| {
        if e > s {
            map(pt, s, kimage_pa(s), e - s, perms, false, PTE_LEVEL);
        }
    };
    let guard = sym::stack_guard();
    assert!(sym::data_start() <= guard && guard + PAGE_SIZE <= sym::bss_end());
    map_image(
        &mut pt,
        sym::text_start(),
        sym::text_end(),
        Perms::KERNEL_RX,
    );
    map_image(
        &mut pt,
        sym::rodata_start(),
        sym::rodata_end(),
        Perms::KERNEL_RO,
    );
    map_image(&mut pt, sym::data_start(), guard, Perms::KERNEL_RW);
    map_image(&mut pt, guard + PAGE_SIZE, sym::bss_end(), Perms::KERNEL_RW);

    // Devices at fixed VAs.
    let map_dev = |pt: &mut PageTable<Aarch64>, pa: u64, size: u64| {
        assert!(
            pa + size <= 1 << 32,
            "device {pa:#x} outside the device window"
        );
        let s = pa & !(PAGE_SIZE - 1);
        let e = (pa + size).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        map(
            pt,
            device_va(s),
            s,
            e - s,
            Perms::KERNEL_RW,
            true,
            PTE_LEVEL,
        );
    };
    map_dev(&mut pt, console::UART_PA, PAGE_SIZE);
    if let Some(g) = plat.gic {
        map_dev(
            &mut pt,
            g.dist.start,
            g.dist.len().clamp(PAGE_SIZE, 0x1_0000),
        );
        let cpu_len = match g.version {
            GicVersion::V2 => g.cpu.len().clamp(2 * PAGE_SIZE, 0x1_0000),
            // One redistributor per CPU the kernel may start (smp.rs).
            GicVersion::V3 => (GICR_PER_CPU * mm::cpu::MAX_CPUS as u64).min(g.cpu.len()),
        };
        map_dev(&mut pt, g.cpu.start, cpu_len);
    }

    // Direct map of all RAM with the largest blocks that fit.
    let mut largest_leaf = 0;
    let (mut lo, mut hi) = (u64::MAX, 0);
    for r in info.ram() {
        let s = r.start.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let e = r.end & !(PAGE_SIZE - 1);
        if e > s {
            let leaf = map(
                &mut pt,
                s + PHYS_OFFSET,
                s,
                e - s,
                Perms::KERNEL_RW,
                false,
                PUD_LEVEL,
            );
            largest_leaf = largest_leaf.max(leaf);
            lo = lo.min(s);
            hi = hi.max(e);
        }
    }
    let l = &paging::LAYOUT;
    l.direct_map_start
        .store(lo + PHYS_OFFSET, Ordering::Relaxed);
    l.direct_map_end.store(hi + PHYS_OFFSET, Ordering::Relaxed);
    l.direct_map_leaf.store(largest_leaf, Ordering::Relaxed);
    pt.root()
}
