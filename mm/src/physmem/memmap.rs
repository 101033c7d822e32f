//! Per-frame metadata: one [`FrameDesc`] per 4 KiB frame of the physical
//! span `[base_pfn, end_pfn)`, found from a PFN in O(1) by subtraction.
//!
//! The kernel allocates the descriptor array itself (in RAM it then reserves)
//! and hands it over as a `&'static [FrameDesc]`; it must be initialised to
//! [`FrameDesc::new`] (all zero), which means "hole".  Holes in the physical
//! map simply stay holes: they cost 32 bytes a frame, which is cheaper and
//! simpler than a sparse section table for the few holes QEMU's maps have.
//!
//! Descriptors are plain atomics so they can be shared (`&`) between CPUs
//! without `unsafe`.  Which lock (if any) guards a field depends on the
//! frame's state; see the field docs.

use core::fmt;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::addr::{PAGE_SHIFT, PMD_ORDER};
use crate::bootinfo::PhysRange;
use crate::physmem::buddy::MAX_ORDER;
use crate::physmem::frame_flags::{
    FrameState, LIST_UNMOVABLE, ORDER_MASK, POISONED, PageFlags, STATE_MASK, order_of,
};

/// "No frame" in a u32 link field.
pub const NO_FRAME: u32 = u32::MAX;

/// Order of a pageblock, the unit of mobility grouping (2 MiB).
pub const PAGEBLOCK_ORDER: u32 = PMD_ORDER;
/// Frames per pageblock.
pub const PAGEBLOCK_FRAMES: u64 = 1 << PAGEBLOCK_ORDER;

/// The descriptor of one physical frame.  32 bytes, `#[repr(C)]`, all
/// atomics, zero-initialisable.
///
/// Field use by state (heads carry the folio; a tail stores only its own
/// page's flags and finds its head through `Memmap::head_of`):
///
/// | field             | `Head` (allocated)          | second frame (`Body`)        | other tails | `Free`/`Pcp` head   |
/// |-------------------|-----------------------------|------------------------------|-------------|---------------------|
/// | `flags`           | state, order, folio flags   | state, AE                    | state, AE   | state, order, list  |
/// | `refcount`        | references                  | 0                            | 0           | 0                   |
/// | `mapcount`        | large mapcount              | owner slot 0's mapcount      | 0           | 0                   |
/// | `entire_mapcount` | PMD mappings (page tables: the PTE-table lock) | owner slot 1's mapcount | 0 | 0                |
/// | `link_prev/next`  | LRU links (`link_next` = a CPU from allocation until linked) | deferred-split queue links | — | free/pcp list links |
/// | `owner`           | rmap owner (mm id, vpn)     | owner slots' ids, lock, shared | —         | —                   |
///
/// The "second frame" column is head + 1 of a large folio: its link
/// fields, which tails leave unused, carry the deferred-split queue links
/// (only folios of order ≥ 2 are queued), as Linux keeps `_deferred_list`
/// in a folio's later pages, so that the head's links serve the LRU, which
/// every anonymous folio is on.
///
/// Free-list links are protected by the zone lock (buddy lists) or the
/// owning CPU's pcp lock (pcp lists); deferred-split links by the queue's
/// lock; LRU links by the node's LRU lock (`reclaim::lru`).  The counters
/// are atomics touched by whoever holds a reference.
///
/// The owner word's top bits ([`OWNER_ALLOCATOR_BITS`]) belong to the
/// allocator in every state: in a pageblock's tag frame they hold the
/// pageblock's mobility type.  They are only changed by read-modify-writes
/// (the zone lock's retag, `set_anon_owner`), and the owner word is never
/// reset by a plain store, so the tag survives every state change without
/// the allocation fast path paying for an atomic RMW.
#[repr(C)]
pub struct FrameDesc {
    pub(crate) flags: AtomicU32,
    pub(crate) refcount: AtomicU32,
    pub(crate) mapcount: AtomicI32,
    pub(crate) entire_mapcount: AtomicI32,
    pub(crate) link_prev: AtomicU32,
    pub(crate) link_next: AtomicU32,
    pub(crate) owner: AtomicU64,
}

/// Owner-word bits reserved for the allocator.
pub const OWNER_ALLOCATOR_BITS: u64 = 0b11 << 62;
/// In a pageblock's tag frame: the pageblock is unmovable.
pub const OWNER_PB_UNMOVABLE: u64 = 1 << 63;

/// Size of one descriptor in bytes (the README's "bytes per frame").
pub const FRAME_DESC_SIZE: usize = core::mem::size_of::<FrameDesc>();
const _: () = assert!(FRAME_DESC_SIZE <= 32, "FrameDesc must stay within 32 bytes");

impl FrameDesc {
    /// The "hole" descriptor: all zero, so the kernel may also zero the
    /// array's memory instead of running this.
    pub const fn new() -> Self {
        Self {
            flags: AtomicU32::new(0),
            refcount: AtomicU32::new(0),
            mapcount: AtomicI32::new(0),
            entire_mapcount: AtomicI32::new(0),
            link_prev: AtomicU32::new(0),
            link_next: AtomicU32::new(0),
            owner: AtomicU64::new(0),
        }
    }

    /// The frame's current state (a snapshot).
    #[inline]
    pub fn state(&self) -> FrameState {
        FrameState::from_word(self.flags.load(Relaxed))
    }

    /// The order field (valid for `Free`, `Pcp` and `Head` frames).
    #[inline]
    pub fn order(&self) -> u32 {
        order_of(self.flags.load(Relaxed))
    }

    /// The folio/page flags part of the flags word.
    #[inline]
    pub fn page_flags(&self) -> PageFlags {
        PageFlags::from_bits_truncate(self.flags.load(Relaxed))
    }

    /// Changes the state/order/list bits of a frame that stays free or moves
    /// between free states, keeping the `POISONED` mark (the memory still
    /// holds the poison).  The frame has a single writer at a time (the zone
    /// lock holder, the owning CPU of a cache, or the folio's last owner), so
    /// a load and a plain store suffice.
    #[inline]
    pub(crate) fn set_state(&self, w: u32) {
        let old = self.flags.load(Relaxed);
        self.flags.store((old & POISONED) | w, Relaxed);
    }

    /// Empties the owner slots kept in a large folio's second frame (see
    /// `folio::MM_IDS_LOCK`): the counts and the slot word, keeping the
    /// allocator's bits.  The folio is new and unmapped, so nobody else
    /// takes the slot lock.
    #[inline]
    pub(crate) fn reset_mm_ids(&self) {
        self.mapcount.store(0, Relaxed);
        self.entire_mapcount.store(0, Relaxed);
        self.owner.fetch_and(OWNER_ALLOCATOR_BITS, Relaxed);
    }

    /// Gives a frame a fresh flags word when it is handed out or first given
    /// to the allocator.
    #[inline]
    pub(crate) fn set_fresh(&self, w: u32) {
        self.flags.store(w, Relaxed);
    }
}

impl Default for FrameDesc {
    fn default() -> Self {
        Self::new()
    }
}

/// A view of the descriptor array: cheap to copy, O(1) PFN lookup.
#[derive(Clone, Copy)]
pub struct Memmap<'a> {
    descs: &'a [FrameDesc],
    base_pfn: u64,
    /// `base_pfn`'s offset into its pageblock, so finding a pageblock's tag
    /// frame (on every free) is index arithmetic without a branch.
    pb_off: u32,
}

impl<'a> Memmap<'a> {
    /// Describes frames `[base_pfn, base_pfn + descs.len())`.  Indices are
    /// kept in u32 links, so the span is limited to 2^32 - 1 frames (16 TiB).
    pub fn new(descs: &'a [FrameDesc], base_pfn: u64) -> Self {
        assert!(
            (descs.len() as u64) < NO_FRAME as u64,
            "memmap span too large"
        );
        let pb_off = (base_pfn & (PAGEBLOCK_FRAMES - 1)) as u32;
        Self {
            descs,
            base_pfn,
            pb_off,
        }
    }

    pub fn base_pfn(&self) -> u64 {
        self.base_pfn
    }

    /// One past the last described PFN.
    pub fn end_pfn(&self) -> u64 {
        self.base_pfn + self.descs.len() as u64
    }

    /// Number of described frames (RAM and holes).
    pub fn len(&self) -> usize {
        self.descs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }

    #[inline]
    pub fn contains(&self, pfn: u64) -> bool {
        pfn.wrapping_sub(self.base_pfn) < self.descs.len() as u64
    }

    /// The descriptor of `pfn`, if described.
    #[inline]
    pub fn desc(&self, pfn: u64) -> Option<&'a FrameDesc> {
        self.descs.get(pfn.wrapping_sub(self.base_pfn) as usize)
    }

    /// The descriptor at array index `idx` (callers hold indices that came
    /// from this memmap, so out-of-range is a bug).
    #[inline]
    pub(crate) fn at(&self, idx: u32) -> &'a FrameDesc {
        &self.descs[idx as usize]
    }

    /// Descriptors `idx..idx + n` (lets hot loops run without a bounds
    /// check per frame).
    #[inline]
    pub(crate) fn range(&self, idx: u32, n: u32) -> &'a [FrameDesc] {
        &self.descs[idx as usize..(idx + n) as usize]
    }

    #[inline]
    pub(crate) fn idx_of(&self, pfn: u64) -> u32 {
        (pfn - self.base_pfn) as u32
    }

    #[inline]
    pub(crate) fn pfn_of(&self, idx: u32) -> u64 {
        self.base_pfn + idx as u64
    }

    /// The state of `pfn` (`Hole` if outside the span).  A non-head frame
    /// of an allocated folio reads `Tail`: its descriptor stores `Body` (see
    /// [`FrameState::Tail`]), so this looks the head up.
    pub fn state(&self, pfn: u64) -> FrameState {
        match self.desc(pfn) {
            None => FrameState::Hole,
            Some(d) => match d.state() {
                FrameState::Body if self.head_of(self.idx_of(pfn)).is_some() => FrameState::Tail,
                st => st,
            },
        }
    }

    /// Index of the head of the allocated folio containing frame `idx`, if
    /// any.
    ///
    /// Tail descriptors are never written when a folio is allocated (for a
    /// 2 MiB folio that was 511 descriptors, 16 KiB of stores and misses,
    /// the main cost of a large allocation); they keep the `Body` state of
    /// free memory.  The head is found instead by probing the aligned
    /// candidates `pfn & !(2^o - 1)` for `o = 1..=MAX_ORDER`: a folio is
    /// naturally aligned, so if one covers `pfn` its head is one of them,
    /// with an order of at least `o`.  The first candidate that is not
    /// `Body` decides: any larger block covering `pfn` would also cover
    /// that candidate, which can only be the `Body` interior of a block.
    /// At most ten probes, one per set low bit of `pfn`.
    ///
    /// The answer is stable only while the caller holds a reference to the
    /// folio; without one it is a snapshot that may be stale at once.
    #[inline]
    pub(crate) fn head_of(&self, idx: u32) -> Option<u32> {
        let w = self.at(idx).flags.load(Relaxed);
        match FrameState::from_word(w) {
            FrameState::Head => return Some(idx),
            FrameState::Body => {}
            _ => return None,
        }
        let pfn = self.pfn_of(idx);
        let mut prev = pfn;
        for o in 1..=MAX_ORDER {
            let cand = pfn & !((1u64 << o) - 1);
            if cand == prev {
                continue;
            }
            if cand < self.base_pfn {
                return None;
            }
            prev = cand;
            let cidx = self.idx_of(cand);
            let cw = self.at(cidx).flags.load(Relaxed);
            match FrameState::from_word(cw) {
                FrameState::Body => {}
                FrameState::Head if order_of(cw) >= o => return Some(cidx),
                _ => return None,
            }
        }
        None
    }

    /// Index of the pageblock's *tag frame*, whose owner word carries the
    /// pageblock's mobility type: the pageblock's first frame, or the
    /// memmap's first frame when the span starts inside the pageblock.
    #[inline]
    pub(crate) fn tag_idx(&self, idx: u32) -> u32 {
        // The pageblock start as an index; below 0 (saturated) for the
        // partial first pageblock, whose tag frame is index 0.
        let start = (idx as u64 + self.pb_off as u64) & !(PAGEBLOCK_FRAMES - 1);
        start.saturating_sub(self.pb_off as u64) as u32
    }

    /// True if the pageblock containing `idx` is tagged unmovable.
    #[inline]
    pub(crate) fn pageblock_unmovable(&self, idx: u32) -> bool {
        self.at(self.tag_idx(idx)).owner.load(Relaxed) & OWNER_PB_UNMOVABLE != 0
    }

    /// A printable snapshot of `pfn`'s descriptor for panics and logs.
    pub fn dump(&self, pfn: u64) -> FrameDump {
        match self.desc(pfn) {
            None => FrameDump {
                pfn,
                described: false,
                ..FrameDump::default()
            },
            Some(d) => FrameDump {
                pfn,
                described: true,
                flags: d.flags.load(Relaxed),
                refcount: d.refcount.load(Relaxed),
                mapcount: d.mapcount.load(Relaxed),
                entire_mapcount: d.entire_mapcount.load(Relaxed),
                link_prev: d.link_prev.load(Relaxed),
                link_next: d.link_next.load(Relaxed),
                owner: d.owner.load(Relaxed),
                tail_of: match d.state() {
                    FrameState::Body => self.head_of(self.idx_of(pfn)).map(|h| self.pfn_of(h)),
                    _ => None,
                },
            },
        }
    }
}

/// A copy of one descriptor, formatted for humans.
#[derive(Clone, Copy, Default)]
pub struct FrameDump {
    pub pfn: u64,
    pub described: bool,
    pub flags: u32,
    pub refcount: u32,
    pub mapcount: i32,
    pub entire_mapcount: i32,
    pub link_prev: u32,
    pub link_next: u32,
    pub owner: u64,
    /// For a tail of an allocated folio (stored as `Body`): its head's PFN.
    pub tail_of: Option<u64>,
}

impl fmt::Display for FrameDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.described {
            return write!(f, "pfn {:#x}: not in memmap", self.pfn);
        }
        write!(f, "pfn {:#x}: ", self.pfn)?;
        match self.tail_of {
            Some(h) => write!(f, "state=Tail(head {h:#x})")?,
            None => write!(
                f,
                "state={:?}",
                FrameState::from_word(self.flags & STATE_MASK)
            )?,
        }
        write!(
            f,
            " order={} flags={:?}{}{}{} ref={} mapcount={} entire={} prev={:#x} next={:#x} owner={:#x} raw={:#x}",
            (self.flags & ORDER_MASK) >> crate::physmem::frame_flags::ORDER_SHIFT,
            PageFlags::from_bits_truncate(self.flags),
            if self.owner & OWNER_PB_UNMOVABLE != 0 {
                " pb-unmovable"
            } else {
                ""
            },
            if self.flags & LIST_UNMOVABLE != 0 {
                " list-unmovable"
            } else {
                ""
            },
            if self.flags & POISONED != 0 {
                " poisoned"
            } else {
                ""
            },
            self.refcount,
            self.mapcount,
            self.entire_mapcount,
            self.link_prev,
            self.link_next,
            self.owner,
            self.flags,
        )
    }
}

impl fmt::Debug for FrameDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The PFN span a memmap must describe to cover every RAM range:
/// `(base_pfn, nr_frames)`, with the base rounded down to a pageblock so
/// pageblock tags line up.  `None` if there is no RAM.
pub fn memmap_span(ram: &[PhysRange]) -> Option<(u64, u64)> {
    let start = ram
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| r.start)
        .min()?;
    let end = ram.iter().filter(|r| !r.is_empty()).map(|r| r.end).max()?;
    let base = (start >> PAGE_SHIFT) & !(PAGEBLOCK_FRAMES - 1);
    let end_pfn = end.div_ceil(1 << PAGE_SHIFT);
    Some((base, end_pfn - base))
}
