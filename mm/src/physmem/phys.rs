//! Access to physical memory.
//!
//! `mm` never dereferences a physical address itself.  The kernel implements
//! [`PhysMem`] over its direct map; the host tests implement it over a
//! `Vec<u64>`.  Page-table entries are loaded and stored atomically because
//! the MMU walks (and on x86 sets accessed/dirty bits) concurrently.

use core::sync::atomic::{AtomicU64, Ordering};

/// Physical memory as seen by `mm`.  All addresses are physical; `pa` of a
/// 64-bit access is 8-byte aligned.
pub trait PhysMem: Sync {
    /// The 64-bit word at `pa` (8-byte aligned) as an atomic: what every
    /// implementation provides, and what the entry accessors below use.
    fn word(&self, pa: u64) -> &AtomicU64;
    /// Atomically load a 64-bit word (a page-table entry).
    #[inline]
    fn load(&self, pa: u64) -> u64 {
        self.word(pa).load(Ordering::Acquire)
    }
    /// Atomically store a 64-bit word (a page-table entry).
    #[inline]
    fn store(&self, pa: u64, val: u64) {
        self.word(pa).store(val, Ordering::Release)
    }
    /// Atomic compare-exchange; returns the previous value.
    #[inline]
    fn cmpxchg(&self, pa: u64, old: u64, new: u64) -> u64 {
        match self
            .word(pa)
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(v) | Err(v) => v,
        }
    }
    /// Fill `len` bytes at `pa` with zero.
    fn zero(&self, pa: u64, len: u64);
    /// Copy `len` bytes from `src` to `dst` (non-overlapping).
    fn copy(&self, dst: u64, src: u64, len: u64);
    /// Fill `len` bytes at `pa` with `byte`.
    fn fill(&self, pa: u64, len: u64, byte: u8);
    /// Read bytes starting at `pa` into `buf`.
    fn read(&self, pa: u64, buf: &mut [u8]);
    /// Write `buf` to memory starting at `pa`.
    fn write(&self, pa: u64, buf: &[u8]);
    /// True if the `len` bytes at `pa` are all zero.
    fn is_zero(&self, pa: u64, len: u64) -> bool;
    /// Load `out.len()` consecutive 64-bit words (page-table entries)
    /// starting at `pa`, each atomically: one call for a whole window of
    /// entries instead of one `load` each.
    fn load_words(&self, pa: u64, out: &mut [u64]) {
        for (i, w) in out.iter_mut().enumerate() {
            *w = self.load(pa + 8 * i as u64);
        }
    }
    /// Store `words` to consecutive 64-bit words starting at `pa`, each
    /// atomically: [`Self::load_words`]'s counterpart for a run of
    /// entries.
    fn store_words(&self, pa: u64, words: &[u64]) {
        for (i, &w) in words.iter().enumerate() {
            self.store(pa + 8 * i as u64, w);
        }
    }
}
