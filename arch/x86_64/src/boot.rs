//! PVH entry (the asm lives in boot/x86_64/entry.s) and the Rust early boot:
//! console, descriptor tables, boot info from the PVH start info, TSC, the
//! kernel page tables, then `kernel_main`.
use crate::console::kprint;
use crate::{acpi, console, cpu, gdt, paging, smp, timer, trap};
use core::arch::global_asm;
use core::cell::UnsafeCell;
use mm::bootinfo::{BootInfo, PhysRange, ReservedKind};

global_asm!(
    include_str!("../../../boot/x86_64/entry.s"),
    options(att_syntax)
);

/// Holds the boot info, filled here, then handed to `kernel_main` as the
/// only reference.
struct BootInfoCell(UnsafeCell<BootInfo>);

// SAFETY: accessed only by the boot CPU, exactly once, in `x86_64_boot_entry`.
unsafe impl Sync for BootInfoCell {}

static BOOT_INFO: BootInfoCell = BootInfoCell(UnsafeCell::new(BootInfo::empty()));

unsafe extern "Rust" {
    fn kernel_main(info: &'static mut BootInfo) -> !;
}

const START_INFO_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;

/// Read a `T` at a physical address below 4 GiB through the boot identity map.
///
/// # Safety
/// `pa .. pa + size_of::<T>()` must be below 4 GiB (identity-mapped by the
/// boot tables) and the boot tables must still be live.
unsafe fn phys_read<T: Copy>(pa: u64) -> T {
    // SAFETY: see the function's contract.
    unsafe { core::ptr::read_unaligned(pa as *const T) }
}

fn below_4g(pa: u64, len: u64) -> bool {
    pa.checked_add(len).is_some_and(|e| e <= 1 << 32)
}

fn page_range(pa: u64, len: u64) -> PhysRange {
    PhysRange::new(pa & !0xFFF, (pa + len).div_ceil(0x1000) * 0x1000)
}

/// Fill `info` from the PVH `hvm_start_info` at `si` (magic already checked).
fn parse_start_info(si: u64, info: &mut BootInfo) {
    // SAFETY (all reads below): the start info, the memory map, the module
    // list and the command line are written by the loader into low memory
    // (checked to be below 4 GiB), which the boot tables identity-map.
    let (magic, version, nr_modules, modlist, cmdline, memmap, nr_map) = unsafe {
        (
            phys_read::<u32>(si),
            phys_read::<u32>(si + 4),
            phys_read::<u32>(si + 12),
            phys_read::<u64>(si + 16),
            phys_read::<u64>(si + 24),
            phys_read::<u64>(si + 40),
            phys_read::<u32>(si + 48),
        )
    };
    assert_eq!(magic, START_INFO_MAGIC);
    // Version 0 has no memory map fields.
    let (memmap, nr_map) = if version >= 1 {
        (memmap, nr_map)
    } else {
        (0, 0)
    };

    // Reserve the legacy first MiB (the loader's data usually sits there)
    // and the image; anything else of the loader's above 1 MiB as well.
    info.add_reserved(PhysRange::new(0, 1 << 20), ReservedKind::Firmware);
    info.add_reserved(paging::image_phys(), ReservedKind::KernelImage);
    let reserve_boot = |info: &mut BootInfo, pa: u64, len: u64| {
        if len != 0 && pa + len > 1 << 20 {
            info.add_reserved(page_range(pa, len), ReservedKind::BootInfo);
        }
    };
    reserve_boot(info, si, 56);

    assert!(
        nr_map > 0 && below_4g(memmap, u64::from(nr_map) * 24),
        "PVH: no usable memory map"
    );
    reserve_boot(info, memmap, u64::from(nr_map) * 24);
    for i in 0..u64::from(nr_map) {
        let e = memmap + i * 24;
        // SAFETY: inside the memory map checked above.
        let (addr, size, ty) = unsafe {
            (
                phys_read::<u64>(e),
                phys_read::<u64>(e + 8),
                phys_read::<u32>(e + 16),
            )
        };
        kprint!(
            "x86_64: e820 {:#014x}-{:#014x} type {}\n",
            addr,
            addr.wrapping_add(size),
            ty
        );
        if ty == E820_RAM
            && size != 0
            && !info.add_ram(PhysRange::new(addr, addr.saturating_add(size)))
        {
            kprint!(
                "x86_64: too many RAM ranges, ignoring {:#x}+{:#x}\n",
                addr,
                size
            );
        }
    }

    if cmdline != 0 {
        let mut buf = [0u8; mm::bootinfo::MAX_CMDLINE];
        let mut n = 0;
        while n < buf.len() && below_4g(cmdline + n as u64, 1) {
            // SAFETY: below 4 GiB, inside the NUL-terminated loader string.
            let b = unsafe { phys_read::<u8>(cmdline + n as u64) };
            if b == 0 {
                break;
            }
            buf[n] = b;
            n += 1;
        }
        reserve_boot(info, cmdline, n as u64 + 1);
        info.set_cmdline(&buf[..n]);
    }

    if nr_modules > 0 && below_4g(modlist, 32) {
        // hvm_modlist_entry: paddr, size, cmdline_paddr, reserved.
        // SAFETY: the first module entry, below 4 GiB.
        let (pa, size) = unsafe { (phys_read::<u64>(modlist), phys_read::<u64>(modlist + 8)) };
        reserve_boot(info, modlist, u64::from(nr_modules) * 32);
        if size != 0 {
            let r = PhysRange::new(pa, pa + size);
            info.initrd = Some(r);
            info.add_reserved(page_range(pa, size), ReservedKind::Initrd);
            kprint!("x86_64: initrd {:#x}-{:#x}\n", r.start, r.end);
        }
    }
}

/// Called by the entry asm on the boot stack, in the higher half, with the
/// boot page tables (identity 4 GiB + the image) live.
#[unsafe(no_mangle)]
extern "C" fn x86_64_boot_entry(start_info: u64) -> ! {
    console::init();
    kprint!("\nx86_64: PVH entry, start info at {:#x}\n", start_info);
    gdt::init();
    trap::init();
    let f = cpu::features();
    kprint!(
        "x86_64: CPU max leaf {:#x}/{:#x}, NX {}, 1G pages {}, PGE {}, SMEP {}, SMAP {}, x2APIC {}, hypervisor {}\n",
        f.max_leaf,
        f.max_ext_leaf,
        f.nx,
        f.pdpe1gb,
        f.pge,
        f.smep,
        f.smap,
        f.x2apic,
        f.hypervisor
    );

    // SAFETY: single-threaded boot: this is the only reference to BOOT_INFO
    // until it is handed to `kernel_main`, which then owns it.
    let info = unsafe { &mut *BOOT_INFO.0.get() };
    parse_start_info(start_info, info);
    // Decided before any CPU sets CR4.SMAP (the secondaries do at start-up,
    // before the kernel reads its command line).
    if info
        .cmdline()
        .split_ascii_whitespace()
        .any(|w| w == "nosmap")
    {
        crate::user::refuse_smap();
    }
    // SAFETY: the boot identity map is still live (paging::init is below),
    // and the start info is below 4 GiB.
    let rsdp_hint = unsafe { phys_read::<u64>(start_info + 32) };
    // SAFETY: the boot identity map is still live.
    let cpus = unsafe { acpi::discover(rsdp_hint) };
    let bsp_apic_id = cpu::cpuid(1).ebx >> 24;
    smp::set_cpu_list(&cpus, bsp_apic_id);
    // SAFETY: as above.
    if let Some(map) = unsafe { acpi::numa(rsdp_hint, &cpus, bsp_apic_id) } {
        info.numa = map;
    }
    timer::calibrate_tsc();
    paging::init(info, timer::lapic_phys());
    for (r, k) in info.reserved() {
        kprint!("x86_64: reserved {:#x}-{:#x} {:?}\n", r.start, r.end, k);
    }
    // SAFETY: `kernel_main` is defined by the kernel crate with exactly this
    // signature; it never returns.
    unsafe { kernel_main(info) }
}
