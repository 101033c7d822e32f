//! Boot-time memory set-up: the kernel heap.
//!
//! Free RAM is `BootInfo::ram` minus `BootInfo::reserved`.  The heap is carved
//! out of it first (sized from RAM: 1/16th, between 4 and 64 MiB).
use crate::arch;
use buddy_system_allocator::LockedHeap;
use mm::addr::{PAGE_SIZE, align_down, align_up};
use mm::bootinfo::{BootInfo, PhysRange};

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Free ranges of `info`: RAM minus reservations, page-aligned, in address order.
pub fn free_ranges(info: &BootInfo) -> alloc::vec::Vec<PhysRange> {
    let mut out = alloc::vec::Vec::new();
    for r in info.ram() {
        let mut pieces = alloc::vec![PhysRange::new(
            align_up(r.start, PAGE_SIZE).unwrap_or(u64::MAX),
            align_down(r.end, PAGE_SIZE)
        )];
        for (res, _) in info.reserved() {
            let mut next = alloc::vec::Vec::new();
            for p in pieces {
                if !p.overlaps(res) {
                    next.push(p);
                    continue;
                }
                let lo = PhysRange::new(p.start, align_down(res.start.max(p.start), PAGE_SIZE));
                let hi = PhysRange::new(
                    align_up(res.end.min(p.end), PAGE_SIZE).unwrap_or(u64::MAX),
                    p.end,
                );
                if !lo.is_empty() {
                    next.push(lo);
                }
                if !hi.is_empty() {
                    next.push(hi);
                }
            }
            pieces = next;
        }
        out.extend(pieces.into_iter().filter(|p| !p.is_empty()));
    }
    out.sort_by_key(|r| r.start);
    out
}

/// A small static arena so `free_ranges` can allocate before the heap exists.
static mut BOOT_ARENA: [u8; 64 * 1024] = [0; 64 * 1024];

#[allow(unsafe_code)]
pub fn init(info: &BootInfo) {
    // SAFETY: runs once on the boot CPU before anything else allocates; the
    // arena is only ever handed to the heap here.
    unsafe {
        let arena = &raw mut BOOT_ARENA;
        HEAP.lock().init(arena as usize, core::mem::size_of::<[u8; 64 * 1024]>());
    }
    let total = info.total_ram();
    let heap_size = (total / 16).clamp(4 << 20, 64 << 20);
    let free = free_ranges(info);
    let r = free
        .iter()
        .filter(|r| r.len() >= heap_size)
        .max_by_key(|r| r.len())
        .copied()
        .expect("no free range large enough for the kernel heap");
    // SAFETY: `r` is free RAM (not reserved, not used by anything yet), mapped
    // read-write by the direct map at `PHYS_OFFSET`; the heap owns it from now on.
    unsafe {
        HEAP.lock().add_to_heap(
            (r.start + arch::PHYS_OFFSET) as usize,
            (r.start + heap_size + arch::PHYS_OFFSET) as usize,
        );
    }
    crate::info!(
        "memory: {} MiB RAM in {} ranges, {} reserved, heap {} MiB at {:#x}",
        total >> 20,
        info.nr_ram,
        info.nr_reserved,
        heap_size >> 20,
        r.start
    );
}
