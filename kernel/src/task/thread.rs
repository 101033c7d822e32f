//! The low-level half of kernel threads: guarded kernel stacks, the saved
//! CPU contexts, and the three operations that need `unsafe` (preparing a
//! new context, switching, releasing the scheduler lock handed over across
//! a switch).  Everything else about threads lives in `sched.rs`, which is
//! free of `unsafe`.
//!
//! Kernel stacks live in the arch's run-time kernel map region
//! (`arch::KERNEL_MAP_BASE`): stack slot `s` owns `SLOT_SIZE` bytes of
//! virtual space starting at `KERNEL_MAP_BASE + s * SLOT_SIZE`; its first
//! page is never mapped (the guard page), the next `STACK_PAGES` pages map
//! the stack, and the rest of the slot stays unmapped.  The frames come
//! from the kernel heap (4K-aligned blocks; their physical addresses from
//! `arch::kernel_translate`, since the heap may also hand out its boot
//! arena inside the kernel image).
#![allow(unsafe_code)]

use crate::arch;
use core::alloc::Layout;
use core::ops::Range;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Threads (and stack slots, and saved contexts) at most.
pub const MAX_THREADS: usize = 64;
/// Pages of each kernel stack (32 KiB).
pub const STACK_PAGES: u64 = 8;
const PAGE: u64 = 4096;
/// Virtual space per stack slot: guard page + stack + unmapped slack.
const SLOT_SIZE: u64 = 16 * PAGE;
const _: () = assert!(PAGE + STACK_PAGES * PAGE <= SLOT_SIZE);
// The slots stay in the lower half: the upper half is for device registers (kmap.rs).
const _: () = assert!(MAX_THREADS as u64 * SLOT_SIZE <= arch::KERNEL_MAP_SIZE / 2);

/// The saved context of the thread in each table slot (see `sched.rs`).
/// Static, so a context outlives any reference-counted thread object and
/// can be switched to and from without holding references across a switch.
pub static CONTEXTS: [arch::Context; MAX_THREADS] = [const { arch::Context::empty() }; MAX_THREADS];

/// Which stack slots are in use (bit `s`).  Slot numbers equal thread ids,
/// but a slot is released only once its stack is unmapped.
static STACK_SLOTS: mm::sync::Mutex<u64> = mm::sync::Mutex::new(0);
/// Pages of all kernel stacks now mapped (for leak checks).
static LIVE_STACK_PAGES: AtomicUsize = AtomicUsize::new(0);

#[cfg_attr(not(feature = "selftest"), allow(dead_code))]
pub fn live_stack_pages() -> usize {
    LIVE_STACK_PAGES.load(Ordering::Relaxed)
}

/// A kernel stack with an unmapped guard page below it.  Dropping it unmaps
/// the stack and frees its frames; it must no longer be in use by then.
#[derive(Debug)]
pub struct KStack {
    slot: usize,
    /// Heap block backing the stack (direct-map address).
    heap: usize,
}

fn stack_layout() -> Layout {
    Layout::from_size_align((STACK_PAGES * PAGE) as usize, PAGE as usize).expect("stack layout")
}

impl KStack {
    /// Allocate and map the stack of slot `slot` (== the thread id).
    pub fn new(slot: usize) -> Result<KStack, &'static str> {
        if slot >= MAX_THREADS {
            return Err("bad stack slot");
        }
        {
            let mut s = STACK_SLOTS.lock();
            if *s & (1 << slot) != 0 {
                return Err("stack slot still in use");
            }
            *s |= 1 << slot;
        }
        // SAFETY: a non-zero-sized layout.
        let heap = unsafe { alloc::alloc::alloc(stack_layout()) } as usize;
        let mut st = KStack { slot, heap: 0 };
        if heap == 0 {
            st.release();
            return Err("out of memory for a kernel stack");
        }
        st.heap = heap;
        let bottom = st.bottom();
        for i in 0..STACK_PAGES {
            let Some(t) = arch::kernel_translate(heap as u64 + i * PAGE) else {
                drop(st);
                return Err("heap memory not mapped");
            };
            if let Err(e) = crate::mem::kmap::map_page(bottom + i * PAGE, t.pa, true) {
                drop(st);
                return Err(e);
            }
            LIVE_STACK_PAGES.fetch_add(1, Ordering::Relaxed);
        }
        Ok(st)
    }

    fn base(&self) -> u64 {
        arch::KERNEL_MAP_BASE + self.slot as u64 * SLOT_SIZE
    }

    /// The unmapped page just below the stack.
    #[cfg_attr(not(feature = "selftest"), allow(dead_code))]
    pub fn guard(&self) -> Range<u64> {
        self.base()..self.base() + PAGE
    }

    /// Lowest address of the stack.
    pub fn bottom(&self) -> u64 {
        self.base() + PAGE
    }

    /// One past the highest address of the stack (the initial SP).
    pub fn top(&self) -> u64 {
        self.bottom() + STACK_PAGES * PAGE
    }

    fn release(&mut self) {
        let bottom = self.bottom();
        for i in 0..STACK_PAGES {
            if crate::mem::kmap::unmap_page(bottom + i * PAGE).is_some() {
                LIVE_STACK_PAGES.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.heap != 0 {
            // SAFETY: `heap` came from `alloc` with the same layout and its
            // only mapping other than the direct map was just removed.
            unsafe { alloc::alloc::dealloc(self.heap as *mut u8, stack_layout()) };
            self.heap = 0;
        }
        *STACK_SLOTS.lock() &= !(1 << self.slot);
    }
}

impl Drop for KStack {
    fn drop(&mut self) {
        self.release();
    }
}

/// Make `CONTEXTS[id]` start `entry(id)` on `stack`.
pub fn init_context(id: usize, stack: &KStack, entry: extern "C" fn(usize) -> !) {
    // SAFETY: `stack` is mapped, writable and owned by the new thread, which
    // has not started yet (its slot is reserved and not runnable).
    unsafe { CONTEXTS[id].init_thread(stack.top(), entry, id) };
}

/// Switch from thread `prev` to thread `next` (table ids).
///
/// Only `sched::switch_to` calls this, with interrupts masked and the
/// scheduler lock held (and forgotten): it upholds `arch::switch_context`'s
/// contract, because a thread's context is only switched to when it is
/// Ready and not running (the lock is held from choosing `next` until the
/// switch is complete, and released by the thread switched to), and a slot's
/// stack is freed only after its thread is Dead and switched away from.
pub fn switch(prev: usize, next: usize) {
    // SAFETY: see above.
    unsafe { arch::switch_context(&CONTEXTS[prev], &CONTEXTS[next]) };
}

/// Release a spin lock whose guard was forgotten by the thread that switched
/// to us (the scheduler hands its lock over across a context switch).
pub fn release_handed_over<T>(m: &mm::sync::Mutex<T>) {
    debug_assert!(m.is_locked());
    // SAFETY: by the hand-over protocol in `sched.rs` this CPU owns the lock:
    // the previous thread locked it, forgot the guard and switched to us.
    unsafe { m.force_unlock() };
}

/// The kernel stack `addr` lies on, as far as it can be told from the
/// address alone, without locks (the panic report runs with any lock
/// held): a thread's stack slot (its mapped pages, between the guard page
/// and the unmapped slack) or the boot stack.  `None` elsewhere, e.g. on a
/// secondary CPU's start-up stack (a heap block that only its idle thread's
/// record knows).
pub fn stack_containing(addr: u64) -> Option<Range<u64>> {
    let slots = arch::KERNEL_MAP_BASE..arch::KERNEL_MAP_BASE + MAX_THREADS as u64 * SLOT_SIZE;
    if slots.contains(&addr) {
        let base = arch::KERNEL_MAP_BASE + (addr - slots.start) / SLOT_SIZE * SLOT_SIZE;
        let stack = base + PAGE..base + PAGE + STACK_PAGES * PAGE;
        return stack.contains(&addr).then_some(stack);
    }
    let boot = arch::kernel_layout().stack;
    boot.contains(&addr).then_some(boot)
}

/// Print the running CPU's call chain for the panic report, one line per
/// frame, `  #N 0x<return address>` (the runner symbolizes these lines:
/// tests/src/symbolize.rs), innermost first; the first frame is the
/// caller's.  The walk stays on the stack the caller's frame lies on, as
/// [`stack_containing`] finds it, or else on `fallback` (the running
/// thread's own stack, when the scheduler could tell) if that holds it.
#[inline(never)]
pub fn print_backtrace(fallback: Option<Range<u64>>) {
    let fp = arch::frame_pointer();
    let Some(stack) = stack_containing(fp).or(fallback.filter(|s| s.contains(&fp))) else {
        crate::log::print_unlocked(format_args!(
            "backtrace: frame pointer {fp:#x} is on no stack known here\n"
        ));
        return;
    };
    crate::log::print_unlocked(format_args!("backtrace:\n"));
    let mut n = 0;
    // SAFETY: `stack` holds this function's own frame, so it is the stack
    // this CPU runs on, and it is mapped whole while it is: a thread slot's
    // pages are all mapped from `KStack::new` until the thread is dead and
    // switched away from; the boot stack and a thread's recorded stack
    // (`fallback`) are never unmapped.
    let frames = unsafe {
        arch::walk_frames(fp, stack, arch::MAX_FRAMES, &mut |ret| {
            crate::log::print_unlocked(format_args!("  #{n} {ret:#x}\n"));
            n += 1;
        })
    };
    if frames == arch::MAX_FRAMES {
        crate::log::print_unlocked(format_args!("  (cut at {} frames)\n", arch::MAX_FRAMES));
    }
}
