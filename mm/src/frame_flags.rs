//! The layout of a frame descriptor's 32-bit `flags` word.
//!
//! One word carries three things so a descriptor fits in 32 bytes:
//!
//! | bits   | meaning                                                        |
//! |--------|----------------------------------------------------------------|
//! | 0..3   | [`FrameState`]: what the frame is right now                    |
//! | 3..7   | order of the block/folio (valid for `Free`, `Pcp`, `Head`)     |
//! | 7      | unused                                                         |
//! | 8      | free block sits on an unmovable list (`Free`/`Pcp` heads)     |
//! | 9      | the frame was poisoned when freed (checked when handed out)    |
//! | 10..22 | [`PageFlags`]: folio flags (head) and per-page flags           |
//! | 22..32 | `Tail` frames: distance to the head (1..=1023)                 |
//!
//! The pageblock mobility tag is *not* here but in the owner word (see
//! [`crate::memmap::OWNER_PB_UNMOVABLE`]): the flags word is rewritten with
//! plain stores on every allocation and free, and a tag sharing it would
//! need an atomic read-modify-write there to survive a concurrent retag.

use bitflags::bitflags;

/// Bits 0..3 of the flags word.
pub(crate) const STATE_MASK: u32 = 0b111;
pub(crate) const ORDER_SHIFT: u32 = 3;
pub(crate) const ORDER_MASK: u32 = 0b1111 << ORDER_SHIFT;
/// On a free block head: which free list (set: the unmovable one).
pub(crate) const LIST_UNMOVABLE: u32 = 1 << 8;
/// The frame holds the free poison pattern (set when freed with poisoning on).
pub(crate) const POISONED: u32 = 1 << 9;

/// In a `Tail` frame's word: the distance back to the head.  Keeping it in
/// the flags word makes pointing a tail at its head one store, which is most
/// of the cost of preparing a 2 MiB folio (511 tails).
pub(crate) const TAIL_OFFSET_SHIFT: u32 = 22;

/// The word of a tail `offset` frames after its head.
#[inline]
pub(crate) const fn tail_word(offset: u32) -> u32 {
    FrameState::Tail as u32 | (offset << TAIL_OFFSET_SHIFT)
}

/// The head distance of a tail's word.
#[inline]
pub(crate) const fn tail_offset(w: u32) -> u32 {
    w >> TAIL_OFFSET_SHIFT
}

/// What a frame is at this moment.  Stored in bits 0..3 of the flags word.
///
/// Only block heads carry an authoritative state for free memory: the other
/// frames of a free block are `Body` in debug builds and may keep a stale
/// `Tail` in release builds (the allocator does not rewrite 511 descriptors on
/// every order-9 free).  Readers that start from an arbitrary PFN therefore
/// always validate through the head (see `BuddyAllocator::folio_from_pfn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameState {
    /// Not RAM, or RAM never given to `mm` (the all-zero descriptor).
    Hole = 0,
    /// RAM that is in use outside the allocator: firmware, the kernel image,
    /// early page tables, the memmap itself.  Counted as used, never freed.
    Reserved = 1,
    /// Head of a free block on a buddy free list; the order field is valid.
    Free = 2,
    /// Head of a free block parked in a per-CPU cache; never merged.
    Pcp = 3,
    /// Head of an allocated folio; the order field is valid.
    Head = 4,
    /// Non-head frame of an allocated folio; its word holds the distance to
    /// the head.
    Tail = 5,
    /// Non-head frame of a free block.
    Body = 6,
}

impl FrameState {
    pub(crate) const fn from_word(w: u32) -> Self {
        match w & STATE_MASK {
            0 => Self::Hole,
            1 => Self::Reserved,
            2 => Self::Free,
            3 => Self::Pcp,
            4 => Self::Head,
            5 => Self::Tail,
            _ => Self::Body,
        }
    }
}

/// Builds the non-sticky part of a flags word.
#[inline]
pub(crate) const fn word(state: FrameState, order: u32, extra: u32) -> u32 {
    state as u32 | (order << ORDER_SHIFT) | extra
}

#[inline]
pub(crate) const fn order_of(w: u32) -> u32 {
    (w & ORDER_MASK) >> ORDER_SHIFT
}

bitflags! {
    /// Folio flags (meaningful in the head frame) and per-page flags
    /// (`ANON_EXCLUSIVE`, meaningful in every frame).
    ///
    /// The allocator owns `LARGE`, `PAGETABLE`, `KERNEL`, `ZERO_PAGE` and
    /// `RESERVED` (set at allocation); the rest belong to the folio's user.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PageFlags: u32 {
        /// Per page: this anonymous page is mapped by exactly one address
        /// space, so a write fault may reuse it instead of copying.  Cleared
        /// when fork shares the page (semantics notes §2.7).
        const ANON_EXCLUSIVE   = 1 << 10;
        /// Anonymous memory; the owner word holds (mm id, virtual page index).
        const ANON             = 1 << 11;
        /// Folio lock, taken with `Folio::trylock` (split, migration).
        const LOCKED           = 1 << 12;
        const DIRTY            = 1 << 13;
        const UPTODATE         = 1 << 14;
        /// On a deferred-split queue (the link fields are in use).
        const DEFERRED_SPLIT   = 1 << 15;
        /// Some pages of the folio were unmapped while others stayed mapped.
        const PARTIALLY_MAPPED = 1 << 16;
        /// Order > 0.
        const LARGE            = 1 << 17;
        /// Holds a page table.
        const PAGETABLE        = 1 << 18;
        /// Never returned to the allocator (the shared zero folios).
        const RESERVED         = 1 << 19;
        /// The shared zero page or the huge zero folio.
        const ZERO_PAGE        = 1 << 20;
        /// An unmovable kernel allocation.
        const KERNEL           = 1 << 21;
    }
}

const _: () = assert!(PageFlags::all().bits() < 1 << TAIL_OFFSET_SHIFT);
const _: () = assert!((1u32 << crate::buddy::MAX_ORDER) - 1 <= u32::MAX >> TAIL_OFFSET_SHIFT);
