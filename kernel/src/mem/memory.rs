//! Boot-time memory set-up: the frame descriptors, the buddy allocator and
//! the kernel heap.
//!
//! Order matters:
//! 1. a 64 KiB static arena lets boot code use `Vec` before anything else;
//! 2. the memmap (one 32-byte `FrameDesc` per frame of the RAM span) is
//!    carved out of the first free range large enough, zeroed (all-zero is
//!    the "hole" state) and handed to `mm` as a safe `&'static [FrameDesc]`;
//! 3. the buddy allocator takes every RAM frame that is not reserved (kernel
//!    image, boot data, early page tables, the memmap itself);
//! 4. the heap is grown with unmovable max-order folios from the allocator,
//!    so heap memory is counted as allocated and never scattered through
//!    movable pageblocks.
use crate::arch;
use crate::mem::physmem::DIRECT_MAP;
use crate::task::sched::{self, WaitQueue};
use buddy_system_allocator::LockedHeap;
use mm::addr::{PAGE_SIZE, align_down, align_up};
use mm::bootinfo::{BootInfo, PhysRange};
use mm::cpu::CpuOps;
use mm::physmem::buddy::{AllocFlags, BuddyAllocator, MAX_ORDER};
use mm::physmem::memmap::{FRAME_DESC_SIZE, FrameDesc, Memmap, memmap_span};
use mm::physmem::node::NodeMap;
use spin::Once;

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(LockedHeap::empty());

/// The kernel heap: `buddy_system_allocator`'s heap behind its spin lock,
/// which is only ever held with interrupts masked, with a cache of small
/// free objects per CPU in front of it ([`ObjCache`]).
///
/// Why masked: code that runs with preemption disabled (khugepaged's
/// scans, system calls, fault handling) allocates, and so does
/// preemptible code (kernel test threads, boot work).  With a plain spin
/// lock, a preemptible thread preempted while holding it left any
/// non-preemptible thread that then allocated spinning forever on one
/// CPU: a self-test hung that way (khugepaged running with preemption
/// off, the test thread runnable but never scheduled).  Masking
/// interrupts for the few hundred instructions of an allocation makes the
/// holder unpreemptible, as Linux's spin locks disable preemption.
struct KernelHeap(LockedHeap<32>);

/// Object sizes the per-CPU caches keep: powers of two from 16 to 512.
const OBJ_CLASSES: usize = 6;
/// Free objects a CPU keeps per size before returning them to the heap.
const OBJ_CACHE_MAX: u32 = 32;

/// One size's free objects on one CPU: a list threaded through the free
/// objects' first word (every cached size holds a `usize`).
#[derive(Clone, Copy)]
struct ObjList {
    head: usize,
    len: u32,
}

/// A CPU's small-object cache, Linux's per-CPU slab idea at its simplest:
/// the migration, reclaim and fault paths allocate and free small `Vec`s
/// and walk records per folio, and the buddy heap's split and merge cost a
/// few hundred instructions each time (`make profile` showed 14% of a 4K
/// migration in the heap); a pop or push here costs a few dozen.  The
/// lock is only ever taken by its own CPU with interrupts masked, so it
/// is uncontended; it is there so that a wrong `cpu_id` (early boot)
/// costs speed, never correctness.  Objects are fungible within a size:
/// one freed on another CPU than it was allocated on simply joins that
/// CPU's list.
struct ObjCache(mm::sync::Mutex<[ObjList; OBJ_CLASSES]>);

static OBJ_CACHES: [ObjCache; mm::cpu::MAX_CPUS] = [const {
    ObjCache(mm::sync::Mutex::new(
        [ObjList { head: 0, len: 0 }; OBJ_CLASSES],
    ))
}; mm::cpu::MAX_CPUS];

/// The cached size class of `layout` and the layout the heap is asked
/// for in its place (size and alignment the class size), or `None` for
/// sizes above 512 bytes.
fn obj_class(layout: core::alloc::Layout) -> Option<(usize, core::alloc::Layout)> {
    let size = layout
        .size()
        .max(layout.align())
        .max(16)
        .next_power_of_two();
    if size > 512 {
        return None;
    }
    let class = size.trailing_zeros() as usize - 4;
    core::alloc::Layout::from_size_align(size, size)
        .ok()
        .map(|l| (class, l))
}

fn obj_cache() -> &'static ObjCache {
    &OBJ_CACHES[arch::cpu_id().min(mm::cpu::MAX_CPUS - 1)]
}

// SAFETY: every call forwards to `LockedHeap`'s own `GlobalAlloc`, which
// upholds the contract, or hands out / takes back an object of the same
// size class that an earlier such call returned (see `ObjCache`);
// masking interrupts around it changes no memory.
#[allow(unsafe_code)]
unsafe impl core::alloc::GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        let irq = arch::irq_save();
        let p = match obj_class(layout) {
            Some((class, l)) => {
                let mut c = obj_cache().0.lock();
                let list = &mut c[class];
                if list.head != 0 {
                    let p = list.head as *mut u8;
                    // SAFETY: `p` is a free object of this class, owned by
                    // the cache; its first word links to the next one.
                    list.head = unsafe { (p as *const usize).read() };
                    list.len -= 1;
                    p
                } else {
                    drop(c);
                    // SAFETY: forwarded, with a layout at least as large and
                    // as aligned as the caller's.
                    unsafe { self.0.alloc(l) }
                }
            }
            // SAFETY: forwarded with the caller's guarantees.
            None => unsafe { self.0.alloc(layout) },
        };
        arch::irq_restore(irq);
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        let irq = arch::irq_save();
        match obj_class(layout) {
            Some((class, l)) => {
                let mut c = obj_cache().0.lock();
                let list = &mut c[class];
                if list.len < OBJ_CACHE_MAX {
                    // SAFETY: the caller gives back an object `alloc`
                    // returned for this layout, hence of this class (at
                    // least 16 bytes, aligned as its size): it now belongs
                    // to the cache, which links it through its first word.
                    unsafe { (ptr as *mut usize).write(list.head) };
                    list.head = ptr as usize;
                    list.len += 1;
                } else {
                    drop(c);
                    // SAFETY: `ptr` came from the heap with layout `l`
                    // (directly, or through the cache).
                    unsafe { self.0.dealloc(ptr, l) };
                }
            }
            // SAFETY: forwarded with the caller's guarantees.
            None => unsafe { self.0.dealloc(ptr, layout) },
        }
        arch::irq_restore(irq);
    }
}

/// Whether the heap's lock is held right now (the self-test watchdog's
/// report).
pub fn heap_locked() -> bool {
    HEAP.0.is_locked()
}

/// The kernel's one frame allocator.
static BUDDY: Once<BuddyAllocator<'static>> = Once::new();

/// Frames in RAM as the boot memory map reported them (page-granular).
static BOOT_RAM_FRAMES: Once<u64> = Once::new();

/// The allocator's view of the CPU: interrupt masking and the CPU id from
/// the arch crate (every CPU runs threads, so each has its own caches).
pub struct KernelCpu;

impl CpuOps for KernelCpu {
    fn cpu_id(&self) -> usize {
        arch::cpu_id()
    }
    fn irq_save(&self) -> usize {
        arch::irq_save() as usize
    }
    fn irq_restore(&self, saved: usize) {
        arch::irq_restore(saved != 0)
    }
    fn call_on_others(&self, f: &(dyn Fn() + Sync)) {
        crate::mem::xcall::call_on_others(f);
    }
    fn preempt_disable(&self) {
        sched::preempt_disable_raw();
    }
    fn preempt_enable(&self) {
        sched::preempt_enable_raw();
    }
    fn relax(&self) {
        crate::mem::shootdown::answer();
        crate::mem::xcall::answer();
        arch::cpu_relax();
    }
    fn pause(&self) {
        arch::cpu_relax();
    }
    fn wait(&self, key: usize, cond: &dyn Fn() -> bool) {
        if !sched::started() {
            while !cond() {
                self.relax();
            }
            return;
        }
        mm_waitq(key).wait_until(cond);
    }
    fn wake(&self, key: usize) {
        mm_waitq(key).wake_all();
    }
}

/// Wait queues for the memory manager's sleeping locks (the mmap lock),
/// hashed by the lock's address: a lock needs no queue of its own, and
/// sleepers of two locks sharing a queue only see a spurious wake-up.
static MM_WAITQ: [WaitQueue; 16] = [const { WaitQueue::new() }; 16];

fn mm_waitq(key: usize) -> &'static WaitQueue {
    // Locks are at least 8-byte aligned; mix in higher bits too.
    &MM_WAITQ[((key >> 4) ^ (key >> 10)) % MM_WAITQ.len()]
}

static KERNEL_CPU: KernelCpu = KernelCpu;

/// The frame allocator (after `init`).
pub fn buddy() -> &'static BuddyAllocator<'static> {
    BUDDY.get().expect("frame allocator not initialised")
}

/// RAM frames the firmware reported (each range rounded inwards to pages).
pub fn boot_ram_frames() -> u64 {
    *BOOT_RAM_FRAMES.get().unwrap_or(&0)
}

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

/// A small static arena so boot code can allocate before the heap exists.
const ARENA_SIZE: usize = 64 * 1024;
static mut BOOT_ARENA: [u8; ARENA_SIZE] = [0; ARENA_SIZE];

#[allow(unsafe_code)]
pub fn init(info: &BootInfo) {
    // SAFETY: runs once on the boot CPU before anything else allocates; the
    // arena is only ever handed to the heap here.
    unsafe {
        let arena = &raw mut BOOT_ARENA;
        HEAP.0.lock().init(arena as usize, ARENA_SIZE);
    }
    BOOT_RAM_FRAMES.call_once(|| {
        info.ram()
            .iter()
            .map(|r| {
                let s = r.start.div_ceil(PAGE_SIZE);
                let e = r.end / PAGE_SIZE;
                e.saturating_sub(s)
            })
            .sum()
    });

    // 2. The memmap.
    let (base_pfn, nr_frames) = memmap_span(info.ram()).expect("no RAM in the boot memory map");
    let memmap_bytes =
        align_up(nr_frames * FRAME_DESC_SIZE as u64, PAGE_SIZE).expect("memmap size");
    let free = free_ranges(info);
    let at = free
        .iter()
        .find(|r| r.len() >= memmap_bytes)
        .map(|r| r.start)
        .expect("no free range large enough for the memmap");
    let va = at + arch::PHYS_OFFSET;
    // SAFETY: `[at, at + memmap_bytes)` is free RAM (not reserved, not used by
    // anything yet), mapped read-write by the direct map.  Zeroing it makes
    // every descriptor the valid all-zero "hole" state before a reference
    // to it exists; from here on it is only accessed through the slice, and
    // it is reserved in the allocator below so nothing else reuses it.
    let descs: &'static [FrameDesc] = unsafe {
        core::ptr::write_bytes(va as *mut u8, 0, memmap_bytes as usize);
        core::slice::from_raw_parts(va as *const FrameDesc, nr_frames as usize)
    };

    // 3. The buddy allocator: a zone per NUMA node the firmware described
    // (one node with `numa=off`, as Linux).
    let numa_off = info
        .cmdline()
        .split_ascii_whitespace()
        .any(|w| w == "numa=off");
    let nodes = if numa_off {
        NodeMap::single()
    } else {
        info.numa
    };
    // The swap map's and swap cache's locks turn preemption off through it.
    mm::sync::set_cpu_ops(&KERNEL_CPU);
    let buddy = BUDDY.call_once(|| {
        BuddyAllocator::with_nodes(
            Memmap::new(descs, base_pfn),
            &DIRECT_MAP,
            &KERNEL_CPU,
            nodes,
        )
    });
    buddy.reserve_range(at, at + memmap_bytes);
    let added = buddy.init_from_bootinfo(info);

    // 4. The heap: 1/16th of RAM, 4..64 MiB, in max-order unmovable folios.
    let total = info.total_ram();
    let heap_size = (total / 16).clamp(4 << 20, 64 << 20);
    let chunk = PAGE_SIZE << MAX_ORDER;
    let mut heap = 0;
    while heap < heap_size {
        let Ok(f) = buddy.alloc(MAX_ORDER, AllocFlags::KERNEL) else {
            break;
        };
        let start = f.pa() + arch::PHYS_OFFSET;
        // SAFETY: the folio is ours for good (its reference is never put), and
        // the direct map covers it read-write; the heap now owns that memory.
        unsafe {
            HEAP.0
                .lock()
                .add_to_heap(start as usize, (start + chunk) as usize)
        };
        let _ = f; // never put: the heap keeps the frames for good
        heap += chunk;
    }
    crate::info!(
        "memory: {} MiB RAM in {} ranges, {} frames to the allocator, memmap {} KiB ({} B/frame) at {:#x}, heap {} MiB",
        total >> 20,
        info.nr_ram,
        added,
        memmap_bytes >> 10,
        FRAME_DESC_SIZE,
        at,
        heap >> 20
    );
    if nodes.nr_nodes() > 1 {
        for n in 0..nodes.nr_nodes() {
            let (managed, _) = buddy.node_managed(n);
            crate::info!(
                "memory: node {}: {} MiB managed, distances {:?}",
                n,
                managed >> 8,
                (0..nodes.nr_nodes())
                    .map(|m| nodes.distance(n, m))
                    .collect::<alloc::vec::Vec<_>>()
            );
        }
    }
}
