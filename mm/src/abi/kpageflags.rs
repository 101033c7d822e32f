//! Linux's `/proc/kpageflags`: one 64-bit word of `KPF_*` bits per
//! physical frame, so tools written for Linux (a `thpmaps`-style script,
//! the mm selftests' folio-order checks) can see which frames are the heads
//! and tails of which large folios.
//!
//! The bit numbers are Linux's ABI (`include/uapi/linux/kernel-page-flags.h`).
//! Only the bits this allocator has a meaning for are ever set: no LRU,
//! reclaim, writeback, slab or swap-cache bits, since none of those exist
//! here.  Like Linux's, the word is a snapshot read without a reference to
//! the frame, and may be stale by the time the reader sees it.

use crate::physmem::buddy::BuddyAllocator;
use crate::physmem::frame_flags::{FrameState, PageFlags};

pub const KPF_LOCKED: u32 = 0;
pub const KPF_UPTODATE: u32 = 3;
pub const KPF_DIRTY: u32 = 4;
pub const KPF_BUDDY: u32 = 10;
pub const KPF_MMAP: u32 = 11;
pub const KPF_ANON: u32 = 12;
pub const KPF_SWAPBACKED: u32 = 14;
pub const KPF_COMPOUND_HEAD: u32 = 15;
pub const KPF_COMPOUND_TAIL: u32 = 16;
pub const KPF_NOPAGE: u32 = 20;
pub const KPF_THP: u32 = 22;
pub const KPF_ZERO_PAGE: u32 = 24;
pub const KPF_PGTABLE: u32 = 26;
/// One of Linux's "kernel hacking" bits, exported all the same.
pub const KPF_RESERVED: u32 = 32;

impl BuddyAllocator<'_> {
    /// The `/proc/kpageflags` word of `pfn`:
    /// * no descriptor (a hole, or beyond the memmap): `NOPAGE`;
    /// * firmware, kernel image and the memmap: `RESERVED`;
    /// * the first frame of a free block on the buddy lists: `BUDDY` (its
    ///   other frames, and blocks in per-CPU caches, show nothing, as in
    ///   Linux);
    /// * a frame of an allocated folio: `COMPOUND_HEAD` or `COMPOUND_TAIL`
    ///   when the folio is large; `ANON` and `SWAPBACKED` for anonymous
    ///   memory, plus `THP` when it is large; `MMAP` while any page of it is
    ///   mapped; `ZERO_PAGE` for the shared zero page, `ZERO_PAGE` and
    ///   `THP` for the huge zero folio; `PGTABLE` for page-table pages;
    ///   `UPTODATE` for anonymous memory; `LOCKED`, `DIRTY` and `UPTODATE`
    ///   from the folio's flags.
    pub fn kpageflags(&self, pfn: u64) -> u64 {
        let bit = |b: u32| 1u64 << b;
        let mm = self.memmap();
        match mm.state(pfn) {
            FrameState::Hole => return bit(KPF_NOPAGE),
            FrameState::Reserved => return bit(KPF_RESERVED),
            FrameState::Free => return bit(KPF_BUDDY),
            FrameState::Pcp | FrameState::Body => return 0,
            FrameState::Head | FrameState::Tail => {}
        }
        let Some(f) = self.folio_from_pfn(pfn) else {
            return 0;
        };
        let fl = f.flags();
        let mut k = 0;
        if f.is_large() {
            k |= bit(if f.pfn() == pfn {
                KPF_COMPOUND_HEAD
            } else {
                KPF_COMPOUND_TAIL
            });
        }
        if fl.contains(PageFlags::ANON) {
            // Anonymous folios are uptodate from the fault that made them
            // (Linux marks them so before mapping them).
            k |= bit(KPF_ANON) | bit(KPF_SWAPBACKED) | bit(KPF_UPTODATE);
            if f.is_large() {
                k |= bit(KPF_THP);
            }
        }
        if fl.contains(PageFlags::ZERO_PAGE) {
            k |= bit(KPF_ZERO_PAGE);
            if f.is_large() {
                k |= bit(KPF_THP);
            }
        }
        if f.is_mapped() {
            k |= bit(KPF_MMAP);
        }
        if fl.contains(PageFlags::PAGETABLE) {
            k |= bit(KPF_PGTABLE);
        }
        for (ours, kpf) in [
            (PageFlags::LOCKED, KPF_LOCKED),
            (PageFlags::DIRTY, KPF_DIRTY),
            (PageFlags::UPTODATE, KPF_UPTODATE),
        ] {
            if fl.contains(ours) {
                k |= bit(kpf);
            }
        }
        k
    }

    /// One past the highest frame `/proc/kpageflags` describes (Linux's
    /// `max_pfn`: reads at or beyond it return end of file).
    pub fn kpageflags_end(&self) -> u64 {
        self.memmap().end_pfn()
    }
}
