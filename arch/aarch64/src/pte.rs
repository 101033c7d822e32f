//! The arm64 (VMSAv8-64 stage 1, 4 KiB granule, 48-bit VA) descriptor
//! format, as an implementation of [`mm::paging::PagingArch`].
//!
//! Portable Rust with no asm and no `cfg`, so the host tests drive exactly
//! this encoding through the emulated MMU.  Levels are `mm`'s (0 = the 4K
//! page level, which the architecture calls level 3).
//!
//! # Bits used
//! | bit | name | use |
//! |---|---|---|
//! | 0 | valid | 0 for absent and for `PROT_NONE` leaves |
//! | 1 | type | table (levels 1–3) / page (level 0); 0 = block (levels 1, 2) |
//! | 4:2 | AttrIndx | MAIR index: 1 = Normal WB, 0 = Device-nGnRnE (boot MAIR) |
//! | 7:6 | AP\[2:1\] | AP\[1\] = EL0 access; AP\[2\] = read-only |
//! | 9:8 | SH | inner shareable for normal memory |
//! | 10 | AF | access flag = young |
//! | 11 | nG | not global: set on user mappings (ASID-tagged) |
//! | 47:12 | OA | output address |
//! | 51 | DBM | software "writable" (see below) |
//! | 52 | Contiguous | member of a 16-entry contiguous block |
//! | 53, 54 | PXN, UXN | privileged / unprivileged execute-never |
//! | 55 | software | dirty |
//! | 56 | software | special (zero page, device): no folio behind it |
//! | 58 | software | `PROT_NONE` leaf (with valid = 0) |
//!
//! # Swap and migration entries (valid = 0, bit 58 = 0)
//! | bit | use |
//! |---|---|
//! | 2 | exclusive |
//! | 7:3 | type |
//! | 53:8 | offset |
//! | 59 | software: this is a swap entry (so type 0, offset 0 is not 0) |
//!
//! The hardware ignores every bit of an invalid descriptor but bit 0.
//! Only PTEs and PMDs hold them.
//!
//! # Access flag, dirty and write permission
//! The kernel runs with TCR_EL1.HA = HD = 0 (and QEMU TCG without
//! FEAT_HAFDBS has no choice), so the MMU never updates descriptors:
//! * young is AF.  An access through an AF = 0 entry raises an access-flag
//!   fault, which the fault path resolves by setting AF.  Mapping code
//!   passes `young = true` so that fresh mappings do not fault again.
//! * dirty is the software bit 55, and the *logical* write permission is
//!   bit 51 (DBM).  The hardware write permission, AP\[2\] = 0, is granted
//!   only when the entry is both writable and dirty: a writable clean entry
//!   stays read-only in hardware, so the first write faults and the fault
//!   path marks it dirty.  That keeps "dirty" exact, which get-and-clear
//!   relies on.  Bit 51 is DBM, ignored while TCR_EL1.HD = 0; should
//!   hardware dirty management be enabled one day, its meaning (writable,
//!   clean until the MMU clears AP\[2\]) agrees with this encoding, and
//!   decoding already treats AP\[2\] = 0 as dirty.
//! * Entries built elsewhere without the software bits (the boot code's
//!   kernel tables) decode sensibly: AP\[2\] = 0 reads as writable and dirty.

use mm::paging::{Attrs, Entry, Leaf, PagingArch, Perms, SwapEntry};

pub const VALID: u64 = 1 << 0;
pub const TYPE_TABLE_PAGE: u64 = 1 << 1;
pub const ATTRIDX_SHIFT: u32 = 2;
pub const ATTRIDX_MASK: u64 = 7 << ATTRIDX_SHIFT;
/// MAIR index of Normal write-back memory in the boot MAIR.
pub const MAIR_IDX_NORMAL: u64 = 1;
/// MAIR index of Device-nGnRnE memory in the boot MAIR.
pub const MAIR_IDX_DEVICE: u64 = 0;
pub const AP_USER: u64 = 1 << 6;
pub const AP_RDONLY: u64 = 1 << 7;
pub const SH_INNER: u64 = 3 << 8;
pub const AF: u64 = 1 << 10;
pub const NG: u64 = 1 << 11;
pub const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
pub const DBM_WRITE: u64 = 1 << 51;
pub const CONT: u64 = 1 << 52;
pub const PXN: u64 = 1 << 53;
pub const UXN: u64 = 1 << 54;
pub const SW_DIRTY: u64 = 1 << 55;
pub const SW_SPECIAL: u64 = 1 << 56;
pub const SW_PROTNONE: u64 = 1 << 58;
/// Swap entries: the marker, the exclusive bit, the type and offset fields.
pub const SW_SWAP: u64 = 1 << 59;
pub const SWP_EXCLUSIVE: u64 = 1 << 2;
pub const SWP_TYPE_SHIFT: u32 = 3;
pub const SWP_OFFSET_SHIFT: u32 = 8;

/// Entries per contiguous block with the 4 KiB granule (64 KiB).
pub const CONT_PTES: usize = 16;

/// The arm64 format.
#[derive(Clone, Copy, Debug, Default)]
pub struct Aarch64;

impl PagingArch for Aarch64 {
    const NAME: &'static str = "aarch64";
    const CONT_PTES: usize = CONT_PTES;
    const HW_YOUNG: bool = false;
    const HW_DIRTY: bool = false;
    const NEEDS_BBM: bool = true;

    /// 4 KiB pages, 2 MiB and 1 GiB blocks; no blocks in the root (arm64
    /// level 0) with this granule.
    fn leaf_allowed(level: u8) -> bool {
        level <= 2
    }

    #[inline]
    fn decode(raw: u64, level: u8) -> Entry {
        if raw == 0 {
            return Entry::Absent;
        }
        let ty = raw & TYPE_TABLE_PAGE != 0;
        if raw & VALID == 0 {
            // Only leaves can be PROT_NONE; the type bit is kept so the
            // shape is still known (page at level 0, block above).
            let leaf_shape = if level == 0 { ty } else { level <= 2 && !ty };
            if raw & SW_PROTNONE != 0 && leaf_shape {
                return Entry::Leaf(decode_leaf(raw, level, false));
            }
            if raw & (SW_PROTNONE | SW_SWAP) == SW_SWAP && level <= 1 {
                return Entry::Swap(SwapEntry {
                    ty: ((raw >> SWP_TYPE_SHIFT) & ((1 << SwapEntry::TYPE_BITS) - 1)) as u8,
                    offset: (raw >> SWP_OFFSET_SHIFT) & SwapEntry::OFFSET_MASK,
                    exclusive: raw & SWP_EXCLUSIVE != 0,
                });
            }
            return Entry::Absent;
        }
        match (level, ty) {
            (0, true) => Entry::Leaf(decode_leaf(raw, level, true)),
            // Type 0b01 at level 0 (arm64 level 3) is reserved: invalid.
            (0, false) => Entry::Absent,
            (_, true) => Entry::Table { pa: raw & OA_MASK },
            (1 | 2, false) => Entry::Leaf(decode_leaf(raw, level, true)),
            // No block descriptors in the root with a 4 KiB granule.
            _ => Entry::Absent,
        }
    }

    #[inline]
    fn table_pa(raw: u64, level: u8) -> Option<u64> {
        // As `decode`: valid, type 1, above level 0.
        let t = VALID | TYPE_TABLE_PAGE;
        (level > 0 && raw & t == t).then_some(raw & OA_MASK)
    }

    fn encode(entry: Entry, level: u8) -> u64 {
        match entry {
            Entry::Absent => 0,
            Entry::Swap(e) => {
                debug_assert!(level <= 1 && u32::from(e.ty) < 1 << SwapEntry::TYPE_BITS);
                let mut raw = SW_SWAP;
                raw |= (u64::from(e.ty) & ((1 << SwapEntry::TYPE_BITS) - 1)) << SWP_TYPE_SHIFT;
                raw |= (e.offset & SwapEntry::OFFSET_MASK) << SWP_OFFSET_SHIFT;
                if e.exclusive {
                    raw |= SWP_EXCLUSIVE;
                }
                raw
            }
            // No APTable/XNTable restrictions: leaves carry the rights.
            Entry::Table { pa } => (pa & OA_MASK) | TYPE_TABLE_PAGE | VALID,
            Entry::Leaf(l) => {
                debug_assert!(Self::leaf_allowed(level) && l.level == level);
                let a = &l.attrs;
                let p = a.perms;
                let mut raw = (l.pfn << 12) & OA_MASK;
                debug_assert_eq!(raw >> 12, l.pfn, "frame beyond 48-bit output addresses");
                debug_assert_eq!(
                    raw & (mm::paging::level_size(level) - 1),
                    0,
                    "block not aligned"
                );
                if level == 0 {
                    raw |= TYPE_TABLE_PAGE;
                }
                raw |= if p.accessible() { VALID } else { SW_PROTNONE };
                if a.device {
                    raw |= MAIR_IDX_DEVICE << ATTRIDX_SHIFT;
                } else {
                    raw |= (MAIR_IDX_NORMAL << ATTRIDX_SHIFT) | SH_INNER;
                }
                if p.user {
                    raw |= AP_USER;
                }
                if p.write {
                    raw |= DBM_WRITE;
                }
                if !(p.write && a.dirty) {
                    raw |= AP_RDONLY;
                }
                if a.dirty {
                    raw |= SW_DIRTY;
                }
                if a.young {
                    raw |= AF;
                }
                if !a.global {
                    raw |= NG;
                }
                // EL1 never executes user pages; EL0 never kernel pages.
                if p.user {
                    raw |= PXN;
                    if !p.exec {
                        raw |= UXN;
                    }
                } else {
                    raw |= UXN;
                    if !p.exec {
                        raw |= PXN;
                    }
                }
                if l.cont {
                    raw |= CONT;
                }
                if a.special {
                    raw |= SW_SPECIAL;
                }
                raw
            }
        }
    }
}

fn decode_leaf(raw: u64, level: u8, valid: bool) -> Leaf {
    let user = raw & AP_USER != 0;
    let hw_writable = raw & AP_RDONLY == 0;
    let perms = if valid {
        let xn = if user { raw & UXN != 0 } else { raw & PXN != 0 };
        Perms {
            read: true,
            write: raw & DBM_WRITE != 0 || hw_writable,
            exec: !xn,
            user,
        }
    } else {
        Perms {
            user,
            ..Perms::NONE
        }
    };
    Leaf {
        // Output-address bits below the block size are RES0 in a block.
        pfn: (raw & OA_MASK & !(mm::paging::level_size(level) - 1)) >> 12,
        level,
        attrs: Attrs {
            perms,
            young: raw & AF != 0,
            dirty: raw & SW_DIRTY != 0 || (valid && hw_writable),
            global: raw & NG == 0,
            special: raw & SW_SPECIAL != 0,
            device: (raw & ATTRIDX_MASK) >> ATTRIDX_SHIFT == MAIR_IDX_DEVICE,
        },
        cont: raw & CONT != 0,
    }
}
