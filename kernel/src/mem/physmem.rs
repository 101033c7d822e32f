//! `mm::physmem::phys::PhysMem` over the kernel's direct map.
//!
//! This is the only place the kernel turns `mm`'s physical addresses into
//! pointers.  Every address `mm` passes is RAM it owns (a frame from the
//! buddy allocator or a page-table page), and the direct map covers all RAM,
//! so `pa + PHYS_OFFSET` is always mapped read-write.
//!
//! Zeroing and copying go through the arch crates' block loops
//! (`arch::zero_bytes` / `arch::copy_bytes`): arm64 `st1`/`ld1` of four
//! vector registers, x86 unrolled 8-byte moves.  They set the cost of a
//! large-folio fault.  Under QEMU 7.2 TCG the generic `write_bytes` (an
//! 8-byte store loop on arm64) costs about 1,540 instructions per 4 KiB
//! page; `st1` takes 112 and `dc zva` 176 (`bench=alloc`, `-icount`), and
//! TCG runs `st1` as inline stores where each `dc zva` is a helper call, a
//! choice that pays under this emulator and not necessarily on hardware
//! (see `arch/aarch64/src/mem.rs` and docs/performance.md).  On x86 TCG
//! `rep stos` is 3-10 times slower than the unrolled moves.
#![allow(unsafe_code)]

use crate::arch::{self, PHYS_OFFSET};
use core::sync::atomic::{AtomicU64, Ordering};

pub struct DirectMap;

pub static DIRECT_MAP: DirectMap = DirectMap;

#[inline(always)]
fn ptr(pa: u64) -> *mut u8 {
    (pa + PHYS_OFFSET) as *mut u8
}

impl mm::physmem::phys::PhysMem for DirectMap {
    #[inline(always)]
    fn word(&self, pa: u64) -> &AtomicU64 {
        debug_assert!(
            pa.is_multiple_of(8),
            "unaligned 64-bit physical access at {pa:#x}"
        );
        // SAFETY: `pa` is 8-byte aligned RAM covered by the direct map (see
        // the module comment); page-table words are only ever accessed
        // atomically.
        unsafe { AtomicU64::from_ptr(ptr(pa) as *mut u64) }
    }
    fn load_words(&self, pa: u64, out: &mut [u64]) {
        // Inlined atomic loads, no call per word.
        for (i, w) in out.iter_mut().enumerate() {
            *w = self.word(pa + 8 * i as u64).load(Ordering::Acquire);
        }
    }
    fn store_words(&self, pa: u64, words: &[u64]) {
        // Inlined atomic stores, no call per word.
        for (i, &w) in words.iter().enumerate() {
            self.word(pa + 8 * i as u64).store(w, Ordering::Release);
        }
    }
    fn zero(&self, pa: u64, len: u64) {
        // SAFETY: `[pa, pa+len)` is RAM owned by the caller, mapped by the
        // direct map (Normal memory).
        unsafe { arch::zero_bytes(ptr(pa), len as usize) }
    }
    fn copy(&self, dst: u64, src: u64, len: u64) {
        // SAFETY: both ranges are RAM owned by the caller and do not overlap.
        unsafe { arch::copy_bytes(ptr(dst), ptr(src), len as usize) }
    }
    fn fill(&self, pa: u64, len: u64, byte: u8) {
        // SAFETY: as for `zero`.
        unsafe { core::ptr::write_bytes(ptr(pa), byte, len as usize) }
    }
    fn read(&self, pa: u64, buf: &mut [u8]) {
        // SAFETY: `[pa, pa+len)` is RAM owned by the caller; `buf` is a distinct Rust buffer.
        unsafe { core::ptr::copy_nonoverlapping(ptr(pa), buf.as_mut_ptr(), buf.len()) }
    }
    fn write(&self, pa: u64, buf: &[u8]) {
        // SAFETY: as for `read`.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), ptr(pa), buf.len()) }
    }
    fn is_zero(&self, pa: u64, len: u64) -> bool {
        // SAFETY: `[pa, pa+len)` is RAM owned by the caller; read as u64 words
        // (callers pass page-aligned, page-sized ranges).
        let s = unsafe { core::slice::from_raw_parts(ptr(pa) as *const u64, (len / 8) as usize) };
        s.iter().all(|&w| w == 0)
    }
}
