//! The x86-64 page-table entry format (4-level paging, 4 KiB base pages),
//! as an implementation of [`mm::paging::PagingArch`].
//!
//! Portable Rust with no asm and no `cfg`, so the host tests drive exactly
//! this encoding through the emulated MMU.
//!
//! # Bits used
//! | bit | name | use |
//! |---|---|---|
//! | 0 | P | present; 0 for absent and for `PROT_NONE` leaves |
//! | 1 | RW | writable |
//! | 2 | US | user accessible (set on every table entry; leaves decide) |
//! | 3, 4 | PWT, PCD | both set for device (UC) memory |
//! | 5 | A | accessed = young (set by the MMU) |
//! | 6 | D | dirty (set by the MMU on write; leaves only) |
//! | 7 | PS | leaf at levels 1 and 2 (PAT in a 4 KiB PTE: never set) |
//! | 8 | G | global (kernel mappings) |
//! | 9 | software | special (zero page, device): no folio behind it |
//! | 11 | software | `PROT_NONE` leaf (with P = 0) |
//! | 12.. 51 | address | frame; in a PS leaf bit 12 is PAT (never set) |
//! | 63 | NX | not executable (EFER.NXE is enabled by the boot code) |
//!
//! # Swap and migration entries (P = 0, bit 11 = 0, not zero)
//! | bit | use |
//! |---|---|
//! | 1 | exclusive |
//! | 6:2 | type |
//! | 57:12 | offset, inverted |
//! | 58 | software: this is a swap entry (so no field value encodes as 0) |
//!
//! The offset is stored inverted, as Linux does against L1TF: a CPU that
//! speculatively uses the address bits of a non-present entry then sees a
//! frame number far above any RAM, not the frame being migrated.
//! Only PTEs and PMDs hold them.
//!
//! # Accessed / dirty
//! A and D are hardware-managed: the CPU sets them atomically in the entry,
//! so the generic code changes live entries with compare-exchange and
//! reads young/dirty straight from A/D.  x86 caches no "old" or "clean"
//! state it would later need flushed for correctness, but the generic code
//! still gathers a flush after clearing them, so the next access or write
//! is recorded again.

use mm::paging::{Attrs, Entry, Leaf, PagingArch, Perms, SwapEntry};

pub const P: u64 = 1 << 0;
pub const RW: u64 = 1 << 1;
pub const US: u64 = 1 << 2;
pub const PWT: u64 = 1 << 3;
pub const PCD: u64 = 1 << 4;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const PS: u64 = 1 << 7;
pub const G: u64 = 1 << 8;
pub const SW_SPECIAL: u64 = 1 << 9;
pub const SW_PROTNONE: u64 = 1 << 11;
pub const NX: u64 = 1 << 63;
/// Swap entries: the exclusive bit, the type field and the offset field.
pub const SW_SWAP: u64 = 1 << 58;
pub const SWP_EXCLUSIVE: u64 = 1 << 1;
pub const SWP_TYPE_SHIFT: u32 = 2;
pub const SWP_OFFSET_SHIFT: u32 = 12;
/// Physical-address bits of an entry (up to 52-bit physical addresses).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The x86-64 format.
#[derive(Clone, Copy, Debug, Default)]
pub struct X86_64;

fn leaf_addr_mask(level: u8) -> u64 {
    // Above level 0 the low address bits of a leaf hold PAT (bit 12) and
    // reserved zeros, so only the bits aligned to the leaf size count.
    ADDR_MASK & !(mm::paging::level_size(level) - 1)
}

impl PagingArch for X86_64 {
    const NAME: &'static str = "x86_64";
    const CONT_PTES: usize = 1;
    const HW_YOUNG: bool = true;
    const HW_DIRTY: bool = true;
    const NEEDS_BBM: bool = false;

    fn leaf_allowed(level: u8) -> bool {
        level <= 2
    }

    #[inline]
    fn decode(raw: u64, level: u8) -> Entry {
        if raw == 0 {
            return Entry::Absent;
        }
        let is_leaf_shape = level == 0 || (level <= 2 && raw & PS != 0);
        if raw & P == 0 {
            if raw & SW_PROTNONE != 0 && is_leaf_shape {
                return Entry::Leaf(decode_leaf(raw, level, Perms::NONE));
            }
            if raw & (SW_PROTNONE | SW_SWAP) == SW_SWAP && level <= 1 {
                return Entry::Swap(SwapEntry {
                    ty: ((raw >> SWP_TYPE_SHIFT) & ((1 << SwapEntry::TYPE_BITS) - 1)) as u8,
                    offset: (!raw >> SWP_OFFSET_SHIFT) & SwapEntry::OFFSET_MASK,
                    exclusive: raw & SWP_EXCLUSIVE != 0,
                });
            }
            return Entry::Absent;
        }
        if !is_leaf_shape {
            return Entry::Table {
                pa: raw & ADDR_MASK,
            };
        }
        let perms = Perms {
            read: true,
            write: raw & RW != 0,
            exec: raw & NX == 0,
            user: raw & US != 0,
        };
        Entry::Leaf(decode_leaf(raw, level, perms))
    }

    #[inline]
    fn table_pa(raw: u64, level: u8) -> Option<u64> {
        // As `decode`: present, above level 0, not a large page (PS counts
        // at levels 1 and 2 only).
        let leaf_shape = level == 0 || (level <= 2 && raw & PS != 0);
        (raw & P != 0 && !leaf_shape).then_some(raw & ADDR_MASK)
    }

    fn encode(entry: Entry, level: u8) -> u64 {
        match entry {
            Entry::Absent => 0,
            Entry::Swap(e) => {
                debug_assert!(level <= 1 && u32::from(e.ty) < 1 << SwapEntry::TYPE_BITS);
                let mut raw = SW_SWAP;
                raw |= (u64::from(e.ty) & ((1 << SwapEntry::TYPE_BITS) - 1)) << SWP_TYPE_SHIFT;
                raw |= ((!e.offset) & SwapEntry::OFFSET_MASK) << SWP_OFFSET_SHIFT;
                if e.exclusive {
                    raw |= SWP_EXCLUSIVE;
                }
                raw
            }
            // Tables grant everything; the leaf restricts.  A is preset so
            // the walker need not set it with a locked write.
            Entry::Table { pa } => (pa & ADDR_MASK) | P | RW | US | A,
            Entry::Leaf(l) => {
                debug_assert!(Self::leaf_allowed(level) && l.level == level);
                let a = &l.attrs;
                let mut raw = (l.pfn << 12) & leaf_addr_mask(level);
                debug_assert_eq!(raw >> 12, l.pfn, "frame not aligned for the leaf size");
                if level > 0 {
                    raw |= PS;
                }
                if a.perms.accessible() {
                    raw |= P;
                } else {
                    raw |= SW_PROTNONE;
                }
                if a.perms.write {
                    raw |= RW;
                }
                if a.perms.user {
                    raw |= US;
                }
                if !a.perms.exec {
                    raw |= NX;
                }
                if a.young {
                    raw |= A;
                }
                if a.dirty {
                    raw |= D;
                }
                if a.global {
                    raw |= G;
                }
                if a.special {
                    raw |= SW_SPECIAL;
                }
                if a.device {
                    raw |= PWT | PCD;
                }
                raw
            }
        }
    }
}

fn decode_leaf(raw: u64, level: u8, perms: Perms) -> Leaf {
    // A PROT_NONE leaf keeps the user bit of the mapping it replaced.
    let perms = if perms.accessible() {
        perms
    } else {
        Perms {
            user: raw & US != 0,
            ..Perms::NONE
        }
    };
    Leaf {
        pfn: (raw & leaf_addr_mask(level)) >> 12,
        level,
        attrs: Attrs {
            perms,
            young: raw & A != 0,
            dirty: raw & D != 0,
            global: raw & G != 0,
            special: raw & SW_SPECIAL != 0,
            device: raw & PCD != 0,
        },
        cont: false,
    }
}
