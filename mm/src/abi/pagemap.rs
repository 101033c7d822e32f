//! Linux's `/proc/<pid>/pagemap`: one 64-bit entry per virtual page, so
//! programs written for Linux can find the frames behind their memory (and
//! with `/proc/kpageflags`, the folios those frames belong to).
//!
//! The bit layout is Linux's ABI (`Documentation/admin-guide/mm/pagemap.rst`):
//! bits 0–54 the frame number when present (shown unconditionally: every
//! process here has the privilege Linux requires for it), 55 soft-dirty,
//! 56 "page exclusively mapped", 61 file page or shared anonymous, 62
//! swapped, 63 present.

use alloc::vec::Vec;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::paging::{Entry, PagingArch, level_size};

use crate::aspace::Mm;
use crate::aspace::report::page_mapcount;

/// Bits 0–54: the frame number of a present page.
pub const PM_PFN_MASK: u64 = (1 << 55) - 1;
/// Bit 55: soft-dirty (written since the last clear).
pub const PM_SOFT_DIRTY: u64 = 1 << 55;
/// Bit 56: the page is mapped exactly once.
pub const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
/// Bit 61: a file page or shared anonymous memory (here: the huge zero
/// folio, which Linux reports this way because it is not anonymous).
pub const PM_FILE: u64 = 1 << 61;
/// Bit 62: swapped out; bits 0–54 then hold the swap type (low
/// [`SWP_TYPE_BITS`] bits) and offset.
pub const PM_SWAP: u64 = 1 << 62;
/// Linux's `MAX_SWAPFILES_SHIFT`: bits of the swap type in a pagemap entry.
pub const SWP_TYPE_BITS: u32 = 5;
/// Bit 63: present.
pub const PM_PRESENT: u64 = 1 << 63;

impl<A: PagingArch> Mm<'_, A> {
    /// The pagemap entries of the `n` pages from page-aligned `va`,
    /// stopping at the end of user space.
    ///
    /// `soft_dirty` sets bit 55 on every entry inside a VMA: what Linux
    /// reports when it tracks soft-dirty (`CONFIG_MEM_SOFT_DIRTY`, x86
    /// only) and nobody has cleared the bits through `clear_refs` (which
    /// does not exist here).  The kernel passes false: upstream's default
    /// configuration, and this host's Linux, track no soft-dirty.
    ///
    /// "Exclusively mapped" is Linux's per-page mapcount of 1, derived for
    /// large folios from their owner slots (see [`page_mapcount`]).
    pub fn pagemap(&self, va: u64, n: usize, soft_dirty: bool) -> Vec<u64> {
        let vmas = self.vmas();
        let pt = self.lock_pt();
        let end = vmas
            .layout()
            .task_size
            .min(va.saturating_add((n as u64) << PAGE_SHIFT));
        let mut out = Vec::with_capacity(n);
        let mut va = va & !(PAGE_SIZE - 1);
        while va < end {
            let w = pt.lookup(va);
            // The span this walk result covers: a leaf, or an absent entry
            // (nothing mapped anywhere in it).
            let size = level_size(w.level);
            let span_end = ((va & !(size - 1)) + size).min(end);
            while va < span_end {
                let mut e = 0;
                if soft_dirty && vmas.find(va).is_some() {
                    e |= PM_SOFT_DIRTY;
                }
                match w.entry {
                    Entry::Leaf(l) => {
                        let pfn = l.pfn + ((va & (size - 1)) >> PAGE_SHIFT);
                        e |= PM_PRESENT | (pfn & PM_PFN_MASK) | self.page_flags(pfn);
                    }
                    // Linux's swap "frame": the type in the low 5 bits,
                    // the offset above them (a migration entry's offset is
                    // its frame; Linux shows it as swapped too).
                    Entry::Swap(x) => {
                        e |= PM_SWAP | ((x.ty as u64 | (x.offset << SWP_TYPE_BITS)) & PM_PFN_MASK);
                    }
                    _ => {}
                }
                out.push(e);
                va += PAGE_SIZE;
            }
        }
        out
    }

    /// `PM_FILE` / `PM_MMAP_EXCLUSIVE` for the present page at `pfn`.
    fn page_flags(&self, pfn: u64) -> u64 {
        let ctx = self.ctx();
        if pfn == ctx.zero_pfn() {
            // Not a "normal" page to Linux: no flags beyond present.
            return 0;
        }
        if ctx.is_zero_pfn(pfn) {
            return PM_FILE;
        }
        let Some(f) = ctx.folio(pfn) else {
            return 0;
        };
        if page_mapcount(&f, pfn - f.pfn(), self.id()) == 1 {
            PM_MMAP_EXCLUSIVE
        } else {
            0
        }
    }
}
