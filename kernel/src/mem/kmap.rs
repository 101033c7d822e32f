//! Run-time kernel mappings: 4 KiB pages in the arch's kernel map region
//! (`arch::KERNEL_MAP_BASE`, one root slot): the kernel thread stacks with
//! their unmapped guard pages in the lower half of the region, and device
//! registers ([`map_device`], uncached, never unmapped) in the upper half.
//!
//! They go through `mm`'s page-table engine in `Space::Kernel`, on the live
//! kernel root (x86 CR3's PML4, arm64 TTBR1), with the buddy allocator's
//! page-table frames and the kernel's TLB maintenance (global flushes):
//! the same walker, encoder and gather as user address spaces, and no
//! hand-written table code in the arch crates.  The region's table under
//! the root is created at boot ([`init`]), before any user root links the
//! kernel half, and the engine never frees a kernel table that sits right
//! under the root, so every user root made later keeps seeing new stacks.
//!
//! Lock: `KMAP` serialises every change to the region's tables.  It is
//! taken with interrupts enabled (the engine may allocate a table) and
//! preemption disabled, never from interrupt context; nothing else is taken under it except the
//! buddy allocator's locks.

use crate::arch::{self, Paging};
use crate::mem::mmglue::KERNEL_TLB;
use crate::mem::physmem::DIRECT_MAP;
use mm::aspace::BuddyPtAlloc;
use mm::paging::{Attrs, Entry, PUD_LEVEL, PageTable, Perms, PtEnv, Space};
use mm::sync::Mutex;
use spin::Once;

const PAGE: u64 = 4096;

static PT_ALLOC: Once<BuddyPtAlloc<'static>> = Once::new();
static KMAP: Mutex<Option<PageTable<'static, Paging>>> = Mutex::new(None);

fn with_table<R>(f: impl FnOnce(&mut PageTable<'static, Paging>) -> R) -> R {
    // Held with preemption off, as every spin lock that non-preemptible
    // code also takes: a holder preempted (with a shootdown in flight,
    // even) would leave a non-preemptible taker spinning for good.
    let _np = crate::task::sched::preempt_disable();
    let mut g = KMAP.lock();
    let pt = g.get_or_insert_with(|| {
        let alloc = PT_ALLOC.call_once(|| BuddyPtAlloc::new(crate::mem::memory::buddy()));
        let env = PtEnv {
            mem: &DIRECT_MAP,
            alloc,
            tlb: &KERNEL_TLB,
        };
        PageTable::adopt(env, arch::kernel_root(), Space::Kernel)
    });
    f(pt)
}

/// Create the region's table under the kernel root.  Called once at boot,
/// after the buddy allocator and before the first user address space.
pub fn init() {
    with_table(|pt| pt.ensure_table(arch::KERNEL_MAP_BASE, PUD_LEVEL))
        .expect("kmap: no memory for the kernel map region's table");
}

fn check(va: u64, len: u64) -> Result<(), &'static str> {
    let region = arch::KERNEL_MAP_BASE..arch::KERNEL_MAP_BASE + arch::KERNEL_MAP_SIZE;
    if !region.contains(&va) || len > region.end - va {
        return Err("address outside the kernel map region");
    }
    if !(va | len).is_multiple_of(PAGE) {
        return Err("unaligned address");
    }
    Ok(())
}

/// Map the 4 KiB page `va` (inside the kernel map region) to the frame
/// `pa`: global, never executable, writable if asked.  Fails if `va` is
/// already mapped.  Not for interrupt context.
pub fn map_page(va: u64, pa: u64, writable: bool) -> Result<(), &'static str> {
    check(va, PAGE)?;
    if !pa.is_multiple_of(PAGE) {
        return Err("unaligned frame");
    }
    let perms = if writable {
        Perms::KERNEL_RW
    } else {
        Perms::KERNEL_RO
    };
    with_table(|pt| pt.map_range(va, pa, PAGE, Attrs::kernel(perms)))
        .map(|_| ())
        .map_err(|e| match e {
            mm::paging::PtError::Exists => "page already mapped",
            mm::paging::PtError::NoMem => "out of memory for a page table",
            _ => "kernel map region broken",
        })
}

/// Where device mappings start: the upper half of the region, far above
/// every stack slot (`task/thread.rs` asserts its slots fit the region).
const DEVICE_BASE: u64 = arch::KERNEL_MAP_BASE + arch::KERNEL_MAP_SIZE / 2;

/// Next free device address (bump allocation; devices stay mapped).
/// Only advanced under `KMAP`.
static DEVICE_NEXT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Map the device registers at `[pa, pa + len)` uncached (x86 PCD/PWT via
/// the engine's device attribute, arm64 Device-nGnRnE), read-write, never
/// executable, and return the virtual address of `pa`.  Device windows are
/// mapped for good: drivers keep them for the kernel's lifetime.
pub fn map_device(pa: u64, len: u64) -> Result<u64, &'static str> {
    use core::sync::atomic::Ordering::Relaxed;
    let start = pa & !(PAGE - 1);
    let size = (pa + len).div_ceil(PAGE) * PAGE - start;
    let attrs = Attrs {
        device: true,
        special: true,
        ..Attrs::kernel(Perms::KERNEL_RW)
    };
    with_table(|pt| {
        let va = DEVICE_BASE + DEVICE_NEXT.load(Relaxed);
        check(va, size)?;
        pt.map_range(va, start, size, attrs)
            .map_err(|_| "cannot map device registers")?;
        DEVICE_NEXT.store(va + size - DEVICE_BASE, Relaxed);
        Ok(va + (pa - start))
    })
}

/// Unmap the 4 KiB page `va` and flush it from every CPU's TLB (global
/// entries included).  Returns the frame it mapped, or `None` if nothing
/// was mapped.  Not for interrupt context.
pub fn unmap_page(va: u64) -> Option<u64> {
    check(va, PAGE).ok()?;
    with_table(|pt| {
        let w = pt.lookup(va);
        let (0, Entry::Leaf(leaf)) = (w.level, w.entry) else {
            return None;
        };
        let mut g = pt.gather();
        pt.unmap_range(va, PAGE, &mut g).ok()?;
        g.finish();
        Some(leaf.pfn * PAGE)
    })
}
