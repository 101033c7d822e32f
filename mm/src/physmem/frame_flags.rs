//! The layout of a frame descriptor's 32-bit `flags` word.
//!
//! One word carries three things so a descriptor fits in 32 bytes:
//!
//! | bits   | meaning                                                        |
//! |--------|----------------------------------------------------------------|
//! | 0..3   | [`FrameState`]: what the frame is right now                    |
//! | 3..7   | order of the block/folio (valid for `Free`, `Pcp`, `Head`)     |
//! | 7      | `Head`: some tail may have `ANON_EXCLUSIVE` set (`TAILS_AE`)   |
//! | 8      | free block sits on an unmovable list (`Free`/`Pcp` heads)     |
//! | 9      | the frame was poisoned when freed (checked when handed out)    |
//! | 10..30 | [`PageFlags`]: folio flags (head) and per-page flags           |
//! | 30..32 | unused                                                         |
//!
//! The pageblock mobility tag is *not* here but in the owner word (see
//! [`crate::physmem::memmap::OWNER_PB_UNMOVABLE`]): the flags word is rewritten with
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

/// On an allocated head: `Page::set_anon_exclusive` ran on a tail.  Tails
/// are not rewritten when a folio is allocated or freed, so a tail's
/// `ANON_EXCLUSIVE` bit would outlive the folio; this hint tells the free
/// path to clear the tails, and costs a free that never set one nothing.
pub(crate) const TAILS_AE: u32 = 1 << 7;

/// What a frame is at this moment.  Stored in bits 0..3 of the flags word.
///
/// Only block and folio heads carry a state of their own: every other frame
/// of a free block *or an allocated folio* stores `Body`, so that neither
/// allocating nor freeing a 2 MiB folio has to rewrite 511 descriptors.
/// Whether a `Body` frame is a tail is found from the aligned heads around
/// it (`Memmap::head_of`, at most ten probes); `Memmap::state` does that and
/// reports such frames as `Tail`.
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
    /// Non-head frame of an allocated folio.  Never stored (a tail's
    /// descriptor holds `Body`): `Memmap::state` derives it.
    Tail = 5,
    /// Non-head frame of a free block or of an allocated folio.
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
        /// Mlocked as a whole (Linux's `PG_mlocked`): mapped into a
        /// `VM_LOCKED` VMA wholly (see `aspace::mlock`).  Reclaim never
        /// takes it; the pages count in `Mlocked:` / `Unevictable:`.
        const MLOCKED          = 1 << 22;
        /// In the swap cache (`swap::cache`): the cache holds a reference
        /// and the folio's slots carry `HAS_CACHE`.
        const SWAPCACHE        = 1 << 23;
        /// On one of the node's LRU lists (`reclaim::lru`), linked through
        /// the head's `link_prev` / `link_next`.  Set and cleared under the
        /// LRU lock.
        const LRU              = 1 << 24;
        /// On (or, isolated, belonging to) the active list rather than the
        /// inactive one.
        const ACTIVE           = 1 << 25;
        /// Seen young once by reclaim (Linux's `PG_referenced`): a second
        /// sighting activates it (`reclaim::lru`'s `check_references`).
        const REFERENCED       = 1 << 26;
        /// Waiting in a CPU's LRU add batch (the head's `link_next` holds
        /// the CPU); becomes `LRU` when the batch is drained.
        const LRU_BATCH        = 1 << 27;
        /// `MADV_FREE`d and clean (Linux's anon folio without
        /// `PG_swapbacked`): reclaim discards it instead of swapping it,
        /// unless a mapping was written again.
        const LAZYFREE         = 1 << 29;
        /// Someone sleeps waiting for the folio lock (Linux's
        /// `PG_waiters`): the unlock wakes them.
        const WAITERS          = 1 << 28;
        /// In a shmem object's page cache (`crate::shmem`; Linux's
        /// `PG_swapbacked` on a file folio): mapped shared, never anonymous.
        const SHMEM            = 1 << 30;
        /// A reservation (`aspace::reserve`): an anonymous large folio
        /// allocated whole at the first fault in its block, whose pages
        /// are zeroed and mapped one fault at a time, each in place at its
        /// own offset.  While set, every page not yet mapped has never
        /// been mapped or exposed, so a fault may hand it out.  Cleared
        /// when the block is promoted or the reservation breaks (any
        /// unmap, fork, split).
        const RESERVATION      = 1 << 31;
    }
}

const _: () = assert!(PageFlags::all().bits() & (STATE_MASK | ORDER_MASK | TAILS_AE) == 0);
const _: () = assert!(PageFlags::all().bits() & (LIST_UNMOVABLE | POISONED) == 0);
