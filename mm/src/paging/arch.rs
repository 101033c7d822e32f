//! The contract between the portable page-table code and an entry format.
//!
//! An architecture describes its translation-table entries by converting a
//! raw `u64` to and from the arch-neutral [`Entry`] at a given level.  All
//! policy (which entries to write, when to fold a contiguous block, when a
//! TLB flush is due) lives in [`super::PageTable`]; a format only knows bits.
//!
//! # Level numbering
//! Levels count *up from the leaf*: level 0 holds 4 KiB PTEs, level 1 the
//! PMDs (2 MiB), level 2 the PUDs (1 GiB), level 3 the root (PML4 on x86,
//! the arm64 "level 0" table).  Counting from the leaf keeps the sizes
//! uniform (`PAGE_SIZE << 9 * level`) whatever the depth, and matches the
//! names the mTHP code uses (PTE, PMD).  Note that arm64's own numbering is
//! the reverse (its level 3 is our level 0).
//!
//! # Accessed and dirty
//! Formats differ in who maintains young/dirty:
//! * x86-64: the MMU sets A on any access and D on a write, atomically, in
//!   the entry itself ([`PagingArch::HW_YOUNG`] and [`PagingArch::HW_DIRTY`]
//!   are true).  Software must therefore change present entries with
//!   compare-exchange (or exchange) so that a bit set by the MMU between a
//!   load and a store is never lost.
//! * arm64 as we run it (TCR_EL1.HA = HD = 0, which is also what QEMU TCG
//!   gives without FEAT_HAFDBS): an access through an entry with AF = 0
//!   raises an access-flag fault, and a write through an entry whose
//!   AP\[2\] = 1 raises a permission fault.  "young" is exactly AF; "dirty"
//!   is a software bit, and a writable-but-clean entry is kept read-only in
//!   hardware so the first write faults and the fault path marks it dirty.
//!   Mapping code normally passes `young = true` (and `dirty = true` for a
//!   write fault) so that the common case takes no extra fault.

use crate::addr::PAGE_SHIFT;

/// Level of the 4 KiB entries (PTEs).
pub const PTE_LEVEL: u8 = 0;
/// Level of the 2 MiB entries (PMDs).
pub const PMD_LEVEL: u8 = 1;
/// Level of the 1 GiB entries (PUDs).
pub const PUD_LEVEL: u8 = 2;
/// Level of the root table (PML4 / arm64 level 0).
pub const ROOT_LEVEL: u8 = 3;
/// Number of levels; both supported formats use four (48-bit VA, 4K granule).
pub const NR_LEVELS: u8 = 4;
/// Entries in one table page (4 KiB / 8 bytes).
pub const ENTRIES_PER_TABLE: usize = 512;
/// Bits of virtual address translated by the tables.
pub const VA_BITS: u32 = 48;

/// Bytes mapped by one entry at `level`.
#[inline]
pub const fn level_size(level: u8) -> u64 {
    1u64 << (PAGE_SHIFT + 9 * level as u32)
}

/// Index of `va`'s entry in the table at `level`.
#[inline]
pub const fn level_index(va: u64, level: u8) -> usize {
    ((va >> (PAGE_SHIFT + 9 * level as u32)) & 0x1ff) as usize
}

/// Access rights of a leaf, as the memory manager sees them.
///
/// Neither format can express "write without read" or "execute without
/// read" for the combinations we use, so any granted right implies `read`;
/// the formats decode such entries with `read = true`.  All four false is
/// `PROT_NONE`: the entry keeps its frame but is not valid for the MMU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// Accessible from user mode (EL0 / CPL 3).
    pub user: bool,
}

impl Perms {
    pub const NONE: Perms = Perms {
        read: false,
        write: false,
        exec: false,
        user: false,
    };
    /// Kernel read-only data.
    pub const KERNEL_RO: Perms = Perms {
        read: true,
        write: false,
        exec: false,
        user: false,
    };
    /// Kernel data.
    pub const KERNEL_RW: Perms = Perms {
        read: true,
        write: true,
        exec: false,
        user: false,
    };
    /// Kernel text.
    pub const KERNEL_RX: Perms = Perms {
        read: true,
        write: false,
        exec: true,
        user: false,
    };
    /// User read-only (zero page, write-protected COW pages).
    pub const USER_RO: Perms = Perms {
        read: true,
        write: false,
        exec: false,
        user: true,
    };
    /// User anonymous memory.
    pub const USER_RW: Perms = Perms {
        read: true,
        write: true,
        exec: false,
        user: true,
    };
    /// User text.
    pub const USER_RX: Perms = Perms {
        read: true,
        write: false,
        exec: true,
        user: true,
    };

    /// True if the MMU may use the entry at all (not `PROT_NONE`).
    pub const fn accessible(&self) -> bool {
        self.read || self.write || self.exec
    }
}

/// Everything about a leaf except its frame, level and contiguous hint:
/// what callers pass when they map, and what must be identical across a
/// contiguous block (ignoring `young` and `dirty`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attrs {
    pub perms: Perms,
    /// Accessed (x86 A, arm64 AF).
    pub young: bool,
    /// Written since last cleaned (x86 D, arm64 software dirty).
    pub dirty: bool,
    /// Shared by all address spaces in the TLB (x86 G, arm64 !nG).  Only
    /// for kernel mappings; user mappings are tagged by ASID.
    pub global: bool,
    /// Not backed by a refcounted folio (the shared zero page, device
    /// memory): never folded into a contiguous block.
    pub special: bool,
    /// Device (uncached) memory instead of normal write-back memory.
    pub device: bool,
}

impl Attrs {
    /// A normal-memory user mapping with the given rights, young and (if
    /// writable) dirty: what an anonymous write fault installs.
    pub const fn user(perms: Perms) -> Attrs {
        Attrs {
            perms,
            young: true,
            dirty: perms.write,
            global: false,
            special: false,
            device: false,
        }
    }
    /// A global kernel mapping, young and dirty so the MMU never needs to
    /// update it (kernel mappings must not take access-flag faults).
    pub const fn kernel(perms: Perms) -> Attrs {
        Attrs {
            perms,
            young: true,
            dirty: true,
            global: true,
            special: false,
            device: false,
        }
    }
    /// The attributes that must agree across a contiguous block: all but
    /// the access/dirty state, which is tracked per block anyway.
    pub const fn fold_key(&self) -> Attrs {
        Attrs {
            young: false,
            dirty: false,
            ..*self
        }
    }
}

/// A leaf entry: maps `level_size(level)` bytes starting at frame `pfn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Leaf {
    pub pfn: u64,
    pub level: u8,
    pub attrs: Attrs,
    /// Member of a contiguous block (arm64 only; always false elsewhere).
    pub cont: bool,
}

/// A non-present entry that is not empty (Linux's `swp_entry_t` as kept
/// in a PTE or PMD): a `ty` and an `offset`.  Types below
/// [`SwapEntry::MAX_SWAPFILES`] name a swap device and `offset` its slot;
/// the types above are Linux's special entries, of which this kernel uses
/// the migration ones (`offset` is then the frame being migrated).  The
/// MMU never reads it: any access faults, and the fault path decides.
///
/// Both formats keep it in the bits the hardware ignores in an invalid
/// entry and distinguish it from a `PROT_NONE` leaf by its software bit;
/// see each arch's `pte.rs`.  Every value of the fields within the limits
/// round-trips (`encode` then `decode`), including type 0 offset 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SwapEntry {
    /// Swap device (0..`MAX_SWAPFILES`) or special type.
    pub ty: u8,
    /// Slot on the device, or the frame of a migration entry.
    pub offset: u64,
    /// The page was exclusive to this mapping when it was unmapped
    /// (Linux's `SWP_EXCLUSIVE`, so swap-in can map it writable without
    /// a copy); on migration entries the type says it instead.
    pub exclusive: bool,
}

impl SwapEntry {
    /// Bits of the type (32 types).
    pub const TYPE_BITS: u32 = 5;
    /// Bits of the offset both formats can hold (2^46 slots of 4 KiB, or
    /// frames up to 256 TiB).
    pub const OFFSET_BITS: u32 = 46;
    /// Largest offset.
    pub const OFFSET_MASK: u64 = (1 << Self::OFFSET_BITS) - 1;
    /// Types at and above this are special (not swap devices).
    pub const MAX_SWAPFILES: u8 = 28;
    /// Reserved for Linux's PTE markers.
    pub const PTE_MARKER: u8 = 28;
    /// Migration entry of a page mapped read-only (Linux's
    /// `SWP_MIGRATION_READ`).
    pub const MIGRATION_READ: u8 = 29;
    /// ... read-only and anon-exclusive (`SWP_MIGRATION_READ_EXCLUSIVE`).
    pub const MIGRATION_READ_EXCLUSIVE: u8 = 30;
    /// ... mapped writable (`SWP_MIGRATION_WRITE`).
    pub const MIGRATION_WRITE: u8 = 31;

    /// A swap entry for `slot` of device `ty`; `None` if out of range.
    pub const fn swap(ty: u8, slot: u64, exclusive: bool) -> Option<SwapEntry> {
        if ty >= Self::MAX_SWAPFILES || slot > Self::OFFSET_MASK {
            return None;
        }
        Some(SwapEntry {
            ty,
            offset: slot,
            exclusive,
        })
    }

    /// A migration entry for frame `pfn`, by what the mapping allowed.
    pub const fn migration(pfn: u64, writable: bool, exclusive: bool) -> Option<SwapEntry> {
        if pfn > Self::OFFSET_MASK {
            return None;
        }
        let ty = if writable {
            Self::MIGRATION_WRITE
        } else if exclusive {
            Self::MIGRATION_READ_EXCLUSIVE
        } else {
            Self::MIGRATION_READ
        };
        Some(SwapEntry {
            ty,
            offset: pfn,
            exclusive: false,
        })
    }

    /// A swap-device entry (not a special type).
    pub const fn is_swap(&self) -> bool {
        self.ty < Self::MAX_SWAPFILES
    }

    /// A migration entry.
    pub const fn is_migration(&self) -> bool {
        self.ty >= Self::MIGRATION_READ && self.ty <= Self::MIGRATION_WRITE
    }

    /// The frame a migration entry stands for.
    pub const fn migration_pfn(&self) -> Option<u64> {
        if self.is_migration() {
            Some(self.offset)
        } else {
            None
        }
    }
}

/// One translation-table entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// Nothing mapped: raw value 0, or a non-present value no variant
    /// describes.
    Absent,
    /// Points to the next-level table page at physical address `pa`.
    Table { pa: u64 },
    /// Maps memory.  `PROT_NONE` leaves are leaves whose perms are all false.
    Leaf(Leaf),
    /// Not present, not empty: a swap or migration entry (PTE or PMD level
    /// only; above that both formats decode such a value as `Absent`).
    Swap(SwapEntry),
}

impl Entry {
    pub const fn is_absent(&self) -> bool {
        matches!(self, Entry::Absent)
    }
    pub const fn leaf(&self) -> Option<Leaf> {
        match *self {
            Entry::Leaf(l) => Some(l),
            _ => None,
        }
    }
    pub const fn swap(&self) -> Option<SwapEntry> {
        match *self {
            Entry::Swap(e) => Some(e),
            _ => None,
        }
    }
}

/// A translation-table entry format plus what the generic code must know
/// about the MMU that reads it.  Implemented by a zero-sized type in each
/// arch crate (`arch_x86_64::pte::X86_64`, `arch_aarch64::pte::Aarch64`).
///
/// `encode` and `decode` are pure: they never touch memory, so they are
/// tested on the host.  `decode(encode(e, l), l) == e` holds for every
/// entry the format can represent (see [`PagingArch::leaf_allowed`],
/// [`PagingArch::CONT_PTES`] and the `Perms` normalisation rule).
pub trait PagingArch: 'static {
    /// Short name for reports.
    const NAME: &'static str;
    /// PTEs per contiguous block: 16 on arm64 (16 × 4K = 64K), 1 where the
    /// format has no contiguous hint (the generic code then never sets
    /// `cont`).
    const CONT_PTES: usize;
    /// The MMU sets young itself on access (x86).  When false an access
    /// through an old entry faults (arm64 without hardware AF).
    const HW_YOUNG: bool;
    /// The MMU sets dirty itself on write (x86).  When false a write
    /// through a writable-but-clean entry raises a permission fault.
    const HW_DIRTY: bool;
    /// Changing a live entry's output address, size or contiguous bit
    /// requires break-before-make (arm64).  x86 has the same need for PMD
    /// split (AMD erratum 383), so the generic code does BBM for those on
    /// both; this flag documents the format rather than switching code.
    const NEEDS_BBM: bool;

    /// True if a leaf may sit at `level` (both formats: 0, 1 and 2).
    fn leaf_allowed(level: u8) -> bool;
    /// Decode a raw entry read from a table at `level`.
    fn decode(raw: u64, level: u8) -> Entry;
    /// The next table's address if `raw` (read at `level`) points to one:
    /// what [`Self::decode`] says as `Entry::Table`, for the walks'
    /// descent, which meets a table at every level above the one it ends
    /// at (formats override it with their one-mask test, inlined where
    /// `decode` is a call).
    #[inline]
    fn table_pa(raw: u64, level: u8) -> Option<u64> {
        match Self::decode(raw, level) {
            Entry::Table { pa } => Some(pa),
            _ => None,
        }
    }
    /// Encode an entry for a table at `level`.  Callers (the generic code)
    /// only pass leaves at levels where [`Self::leaf_allowed`] holds and
    /// frames aligned to the leaf size; `cont` is ignored when
    /// `CONT_PTES == 1`.
    fn encode(entry: Entry, level: u8) -> u64;
}
