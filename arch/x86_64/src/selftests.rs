//! Self-tests of the x86_64 boot state (run with the `selftest` command line).
use crate::paging::{self, KERNEL_VMA, PHYS_OFFSET, kernel_layout, kernel_translate};
use crate::probe::{probe_exec, probe_read, probe_write};
use crate::trap::Access;
use alloc::boxed::Box;
use core::arch::naked_asm;
use ktest::{check, check_eq, ktest};
use mm::bootinfo::PhysRange;

const SIZE_2M: u64 = 1 << 21;
const SIZE_1G: u64 = 1 << 30;

/// Page-aligned sample addresses of `r`: its first and last page and every 2 MiB.
fn samples(r: &PhysRange) -> impl Iterator<Item = u64> {
    let start = r.start.div_ceil(4096) * 4096;
    let last = (r.end & !4095).saturating_sub(4096);
    let step = (start..last).step_by(SIZE_2M as usize);
    step.chain(core::iter::once(last))
        .filter(move |&a| a >= start && a + 4096 <= r.end)
}

fn ram() -> impl Iterator<Item = PhysRange> {
    paging::boot_ram().iter().copied()
}

/// A function that only returns: a safe target for `probe_exec`.
#[unsafe(naked)]
extern "C" fn just_ret() {
    naked_asm!("ret")
}

/// Read-only data (lands in .rodata).
static RODATA_WORD: u64 = 0x5a5a_1234_5678_a5a5;

ktest! {
    /// Every RAM page (sampled every 2 MiB plus the range ends) is mapped at
    /// `PHYS_OFFSET + pa` to `pa`, writable, not executable, kernel-only.
    fn direct_map_matches_memory_map() {
        let mut n = 0;
        for r in ram() {
            for pa in samples(&r) {
                let va = PHYS_OFFSET + pa;
                let t = kernel_translate(va);
                check!(t.is_some(), "RAM page {:#x} not in the direct map", pa);
                let t = t.unwrap();
                check_eq!(t.pa, pa, "direct map of {:#x}", va);
                check!(t.writable && !t.executable && !t.user, "bad permissions for {:#x}: {:?}", va, t);
                n += 1;
            }
        }
        check!(n > 0, "no RAM sampled");
        Ok(())
    }
}

ktest! {
    /// The lower half (user space) has no mappings at all.
    fn lower_half_is_empty() {
        let pml4 = crate::cpu::read_cr3() & paging::PTE_ADDR;
        for i in 0..256u64 {
            let e = probe_read(PHYS_OFFSET + pml4 + i * 8).map_err(|f| ktest::format!("{:?}", f))?;
            check_eq!(e, 0, "PML4[{}]", i);
        }
        for va in [0u64, 0x1000, 0x40_0000, 0x7fff_ffff_f000] {
            check!(kernel_translate(va).is_none(), "{:#x} is mapped", va);
        }
        Ok(())
    }
}

ktest! {
    /// The direct map uses 1 GiB leaves where the CPU has them (for every
    /// fully covered aligned GiB), else 2 MiB leaves; never 4 KiB.
    fn direct_map_uses_large_leaves() {
        let leaf = if crate::cpu::has_1g_pages() { SIZE_1G } else { SIZE_2M };
        let used = kernel_layout().direct_map_leaf;
        check!(used == leaf || used == SIZE_2M, "layout leaf {:#x}", used);
        let dm = paging::direct_map_ranges();
        let mut big = 0;
        for r in ram() {
            for pa in samples(&r) {
                let t = kernel_translate(PHYS_OFFSET + pa).ok_or("unmapped RAM")?;
                check!(t.size >= SIZE_2M, "{:#x} mapped with a {:#x} leaf", pa, t.size);
                let block = PhysRange::new(pa & !(leaf - 1), (pa & !(leaf - 1)) + leaf);
                if dm.iter().any(|d| d.start <= block.start && block.end <= d.end) {
                    check_eq!(t.size, leaf, "leaf of {:#x}", pa);
                    big += 1;
                }
            }
        }
        if big > 0 {
            check_eq!(used, leaf, "layout leaf");
        } else {
            // Only possible with 1 GiB pages and no fully covered GiB of RAM.
            check!(leaf == SIZE_1G && used == SIZE_2M, "no RAM block large enough for a {:#x} leaf", leaf);
        }
        Ok(())
    }
}

ktest! {
    /// Kernel text is mapped at its link address, executable, read-only:
    /// writing it faults as a protection fault.
    fn text_is_rx_not_writable() {
        let l = kernel_layout();
        let va = just_ret as *const () as u64;
        check!(l.text.contains(&va), "{:#x} not in text {:?}", va, l.text);
        let t = kernel_translate(va).ok_or("text unmapped")?;
        check_eq!(t.pa, va - KERNEL_VMA, "text physical address");
        check!(t.executable && !t.writable && t.size == 4096, "text mapping {:?}", t);
        probe_exec(va).map_err(|f| ktest::format!("exec of text faulted: {:?}", f))?;
        // Write back the same bytes, so a broken W^X changes nothing.
        let old = probe_read(va).map_err(|f| ktest::format!("read of text faulted: {:?}", f))?;
        match probe_write(va, old) {
            Ok(()) => return Err("writing kernel text did not fault".into()),
            Err(f) => {
                check_eq!(f.addr, va, "fault address");
                check!(f.access == Access::Write && f.permission && !f.user, "fault {:?}", f);
            }
        }
        Ok(())
    }
}

ktest! {
    /// Read-only data is readable, not writable, not executable.
    fn rodata_is_read_only() {
        let va = &raw const RODATA_WORD as u64;
        let l = kernel_layout();
        check!(l.rodata.contains(&va), "{:#x} not in rodata {:?}", va, l.rodata);
        let t = kernel_translate(va).ok_or("rodata unmapped")?;
        check!(!t.writable && !t.executable, "rodata mapping {:?}", t);
        check_eq!(probe_read(va).ok(), Some(RODATA_WORD));
        match probe_write(va, RODATA_WORD) {
            Ok(()) => return Err("writing rodata did not fault".into()),
            Err(f) => check!(f.addr == va && f.access == Access::Write && f.permission, "fault {:?}", f),
        }
        Ok(())
    }
}

ktest! {
    /// Executing data (heap via the direct map, and .data/.bss) faults as an
    /// instruction fetch; every image section is W^X.
    fn data_is_not_executable() {
        let heap = Box::new([0xC3u8; 64]); // `ret` everywhere: harmless if NX is broken
        let va = heap.as_ptr() as u64;
        match probe_exec(va) {
            Ok(()) => return Err(ktest::format!("executing heap {:#x} did not fault", va)),
            Err(f) => {
                check_eq!(f.addr, va, "fault address");
                check!(f.access == Access::Exec && f.permission, "fault {:?}", f);
            }
        }
        let l = kernel_layout();
        for (name, r) in [("text", &l.text), ("rodata", &l.rodata), ("data", &l.data), ("bss", &l.bss)] {
            let mut va = r.start;
            while va < r.end {
                if let Some(t) = kernel_translate(va) {
                    check!(!(t.writable && t.executable), "{} page {:#x} is W+X", name, va);
                    check_eq!(t.executable, name == "text", "{} page {:#x} executable", name, va);
                    check_eq!(t.writable, name == "data" || name == "bss", "{} page {:#x} writable", name, va);
                } else {
                    check!(l.stack_guard.contains(&va), "{} page {:#x} unmapped", name, va);
                }
                va += 4096;
            }
        }
        Ok(())
    }
}

ktest! {
    /// Faults on unmapped and non-canonical addresses are caught by the probes.
    /// (Unmapped kernel-half addresses, so no fault handler resolves them.)
    fn probes_catch_faults() {
        let hole = paging::FIXMAP_BASE + (64 << 20);
        match probe_read(hole) {
            Ok(v) => return Err(ktest::format!("read of {:#x} returned {:#x}", hole, v)),
            Err(f) => check!(f.addr == hole && f.access == Access::Read && !f.permission, "{:?}", f),
        }
        match probe_write(hole + 0x1008, 7) {
            Ok(()) => return Err("write to an unmapped page succeeded".into()),
            Err(f) => check!(f.addr == hole + 0x1008 && f.access == Access::Write && !f.permission, "{:?}", f),
        }
        match probe_exec(hole + 0x2000) {
            Ok(()) => return Err("exec of an unmapped page succeeded".into()),
            Err(f) => check!(f.addr == hole + 0x2000 && f.access == Access::Exec && !f.permission, "{:?}", f),
        }
        check!(probe_read(0x8000_0000_0000_0000).is_err(), "non-canonical read succeeded");
        check!(probe_exec(0x8000_0000_0000_0000).is_err(), "non-canonical exec succeeded");
        let x = Box::new(0u64);
        let va = &*x as *const u64 as u64;
        check!(probe_write(va, 42).is_ok(), "write to the heap faulted");
        check_eq!(probe_read(va).ok(), Some(42));
        Ok(())
    }
}

ktest! {
    /// The boot stack's guard page is unmapped and reading it faults; the
    /// stack itself is mapped RW+NX.
    fn boot_stack_guard_page_unmapped() {
        let l = kernel_layout();
        check_eq!(l.stack_guard.end - l.stack_guard.start, 4096);
        check_eq!(l.stack_guard.end, l.stack.start);
        check!(kernel_translate(l.stack_guard.start).is_none(), "guard page mapped");
        match probe_read(l.stack_guard.start + 0x800) {
            Ok(_) => return Err("reading the guard page did not fault".into()),
            Err(f) => check!(f.access == Access::Read && !f.permission, "fault {:?}", f),
        }
        let t = kernel_translate(l.stack.end - 8).ok_or("stack unmapped")?;
        check!(t.writable && !t.executable, "stack mapping {:?}", t);
        let here = &l as *const _ as u64;
        check!(l.stack.contains(&here), "not running on the boot stack ({:#x})", here);
        Ok(())
    }
}

include!("../../tick_rate.rs");

ktest! {
    /// The LAPIC tick comes at the programmed rate: the shortest interval
    /// between consecutive ticks is within 30% above the period and the
    /// median within 30% below (the rules and why they survive a loaded
    /// host are in `arch/tick_rate.rs`).
    fn timer_ticks_at_programmed_rate() {
        let hz = u64::from(crate::timer::timer_hz());
        let irq = crate::cpu::irq_save();
        crate::cpu::irq_enable();
        let r = check_tick_rate(
            hz,
            crate::timer::now_ns,
            crate::timer::ticks,
            crate::cpu::cpu_relax,
        );
        crate::cpu::irq_restore(irq);
        r
    }
}
