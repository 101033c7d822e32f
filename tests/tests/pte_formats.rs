//! The real x86-64 and arm64 entry encodings: round trips and exact bits.

use arch_aarch64::pte::{self as a64, Aarch64};
use arch_x86_64::pte::{self as x86, X86_64};
use mm::paging::{Attrs, Entry, Leaf, PagingArch, Perms, SwapEntry};
use proptest::prelude::*;

fn perms() -> impl Strategy<Value = Perms> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(r, w, x, user)| {
        // Normalised: any right implies read (neither format has write- or
        // exec-only); all false is PROT_NONE.
        let read = r || w || x;
        Perms {
            read,
            write: w,
            exec: x,
            user,
        }
    })
}

fn leaf(cont_ok: bool) -> impl Strategy<Value = Leaf> {
    (0u8..=2, 0u64..(1 << 24), perms(), any::<[bool; 6]>()).prop_map(
        move |(level, pfn, perms, b)| {
            let align = 1u64 << (9 * level);
            Leaf {
                pfn: pfn & !(align - 1),
                level,
                attrs: Attrs {
                    perms,
                    young: b[0],
                    dirty: b[1],
                    global: b[2],
                    special: b[3],
                    device: b[4],
                },
                cont: cont_ok && level == 0 && b[5] && perms.accessible(),
            }
        },
    )
}

fn round_trip<A: PagingArch>(l: Leaf) {
    let raw = A::encode(Entry::Leaf(l), l.level);
    assert_ne!(raw, 0);
    assert_eq!(A::decode(raw, l.level), Entry::Leaf(l), "raw {raw:#x}");
}

proptest! {
    #[test]
    fn x86_leaf_round_trip(l in leaf(false)) { round_trip::<X86_64>(l) }

    #[test]
    fn arm64_leaf_round_trip(l in leaf(true)) { round_trip::<Aarch64>(l) }

    #[test]
    fn table_round_trip(pfn in 1u64..(1 << 30), level in 1u8..=3) {
        let pa = pfn << 12;
        prop_assert_eq!(X86_64::decode(X86_64::encode(Entry::Table { pa }, level), level), Entry::Table { pa });
        prop_assert_eq!(Aarch64::decode(Aarch64::encode(Entry::Table { pa }, level), level), Entry::Table { pa });
    }

    /// Swap and migration entries round-trip at the PTE and PMD levels on
    /// both formats for every type, offset and exclusive bit: never zero,
    /// never present (bit 0 clear on both), never a `PROT_NONE` leaf.
    #[test]
    fn swap_entry_round_trip(
        ty in 0u8..32,
        offset in prop_oneof![Just(0u64), Just(SwapEntry::OFFSET_MASK), 0..=SwapEntry::OFFSET_MASK],
        exclusive in any::<bool>(),
        level in 0u8..=1,
    ) {
        let e = Entry::Swap(SwapEntry { ty, offset, exclusive });
        for (raw, back) in [
            (X86_64::encode(e, level), X86_64::decode(X86_64::encode(e, level), level)),
            (Aarch64::encode(e, level), Aarch64::decode(Aarch64::encode(e, level), level)),
        ] {
            prop_assert_ne!(raw, 0);
            prop_assert_eq!(raw & 1, 0, "present bit set in {:#x}", raw);
            prop_assert_eq!(back, e, "raw {:#x}", raw);
        }
    }

    /// Whatever the raw bits, decoding never panics and a decoded leaf or
    /// table re-encodes to something that decodes the same (canonical form).
    #[test]
    fn decode_is_total(raw in any::<u64>(), level in 0u8..=3) {
        for (d, e) in [
            (X86_64::decode(raw, level), X86_64::decode(X86_64::encode(X86_64::decode(raw, level), level), level)),
            (Aarch64::decode(raw, level), Aarch64::decode(Aarch64::encode(Aarch64::decode(raw, level), level), level)),
        ] {
            if let Entry::Leaf(l) = d {
                if l.level <= 2 { prop_assert_eq!(d, e); }
            } else {
                prop_assert_eq!(d, e);
            }
        }
    }

    /// The walks' fast table test says exactly what `decode` says, for any
    /// bits at any level (raw tables and leaves too, so both answers occur).
    #[test]
    fn table_pa_agrees_with_decode(
        raw in prop_oneof![any::<u64>(), (1u64..(1 << 36)).prop_map(|p| (p << 12) | 3), (1u64..(1 << 36)).prop_map(|p| (p << 12) | 1)],
        level in 0u8..=3,
    ) {
        fn via_decode<A: PagingArch>(raw: u64, level: u8) -> Option<u64> {
            match A::decode(raw, level) {
                Entry::Table { pa } => Some(pa),
                _ => None,
            }
        }
        prop_assert_eq!(X86_64::table_pa(raw, level), via_decode::<X86_64>(raw, level));
        prop_assert_eq!(Aarch64::table_pa(raw, level), via_decode::<Aarch64>(raw, level));
    }
}

#[test]
fn x86_user_rw_page_bits() {
    let l = Leaf {
        pfn: 0x1234,
        level: 0,
        attrs: Attrs::user(Perms::USER_RW),
        cont: false,
    };
    let raw = X86_64::encode(Entry::Leaf(l), 0);
    assert_eq!(
        raw,
        0x0123_4000 | x86::P | x86::RW | x86::US | x86::A | x86::D | x86::NX
    );
}

#[test]
fn x86_kernel_text_2m_and_1g() {
    let mut l = Leaf {
        pfn: 512,
        level: 1,
        attrs: Attrs::kernel(Perms::KERNEL_RX),
        cont: false,
    };
    let raw = X86_64::encode(Entry::Leaf(l), 1);
    assert_eq!(raw, 0x20_0000 | x86::P | x86::A | x86::D | x86::PS | x86::G);
    l.level = 2;
    l.pfn = 1 << 18;
    assert_eq!(X86_64::encode(Entry::Leaf(l), 2) & x86::ADDR_MASK, 1 << 30);
    // A PS leaf with the PAT bit (12) set keeps its frame.
    assert_eq!(X86_64::decode(raw | (1 << 12), 1).leaf().unwrap().pfn, 512);
    // PS at the root is no leaf.
    assert!(matches!(X86_64::decode(raw, 3), Entry::Table { .. }));
}

/// The exact bits of a swap entry and of a migration entry on each format
/// (the layouts documented in each `pte.rs`).
#[test]
fn swap_entry_bits() {
    let e = SwapEntry::swap(3, 0x1234, true).unwrap();
    // x86: exclusive bit 1, type in 6:2, inverted offset in 57:12.
    let raw = X86_64::encode(Entry::Swap(e), 0);
    assert_eq!(raw & x86::P, 0);
    assert_eq!(raw & x86::SW_PROTNONE, 0);
    assert_eq!(raw & 0xfff, (3 << 2) | (1 << 1));
    assert_eq!((!raw >> 12) & SwapEntry::OFFSET_MASK, 0x1234);
    // arm64: marker bit 59, exclusive bit 2, type in 7:3, offset in 53:8.
    let raw = Aarch64::encode(Entry::Swap(e), 0);
    assert_eq!(raw, a64::SW_SWAP | (0x1234 << 8) | (3 << 3) | (1 << 2));
    // Migration entries carry the frame and say how it was mapped.
    let m = SwapEntry::migration(0x5_0000, true, true).unwrap();
    assert!(m.is_migration() && !m.is_swap());
    assert_eq!(m.ty, SwapEntry::MIGRATION_WRITE);
    assert_eq!(m.migration_pfn(), Some(0x5_0000));
    let r = SwapEntry::migration(9, false, true).unwrap();
    assert_eq!(r.ty, SwapEntry::MIGRATION_READ_EXCLUSIVE);
    assert_eq!(SwapEntry::swap(SwapEntry::MAX_SWAPFILES, 1, false), None);
    assert_eq!(SwapEntry::swap(0, SwapEntry::OFFSET_MASK + 1, false), None);
    for raw in [
        X86_64::encode(Entry::Swap(m), 1),
        Aarch64::encode(Entry::Swap(m), 1),
    ] {
        assert_ne!(raw & 1, 1);
    }
    assert_eq!(
        X86_64::decode(X86_64::encode(Entry::Swap(m), 1), 1),
        Entry::Swap(m)
    );
    assert_eq!(
        Aarch64::decode(Aarch64::encode(Entry::Swap(m), 1), 1),
        Entry::Swap(m)
    );
    // Above the PMD level such a value is not an entry this kernel uses.
    assert_eq!(
        X86_64::decode(X86_64::encode(Entry::Swap(m), 1), 2),
        Entry::Absent
    );
}

#[test]
fn x86_prot_none_is_not_present() {
    let l = Leaf {
        pfn: 7,
        level: 0,
        attrs: Attrs::user(Perms {
            user: true,
            ..Perms::NONE
        }),
        cont: false,
    };
    let raw = X86_64::encode(Entry::Leaf(l), 0);
    assert_eq!(raw & x86::P, 0);
    assert_eq!(X86_64::decode(raw, 0), Entry::Leaf(l));
}

#[test]
fn arm64_user_pages_bits() {
    // Writable + dirty: AP[2] clear (hardware writable), nG, AF, UXN
    // (data), PXN (user), Normal WB inner shareable, page descriptor.
    let l = Leaf {
        pfn: 0x1234,
        level: 0,
        attrs: Attrs::user(Perms::USER_RW),
        cont: true,
    };
    let raw = Aarch64::encode(Entry::Leaf(l), 0);
    let want = 0x0123_4000
        | a64::VALID
        | a64::TYPE_TABLE_PAGE
        | (1 << 2)
        | a64::SH_INNER
        | a64::AP_USER
        | a64::AF
        | a64::NG
        | a64::DBM_WRITE
        | a64::CONT
        | a64::PXN
        | a64::UXN
        | a64::SW_DIRTY;
    assert_eq!(raw, want, "{raw:#x} vs {want:#x}");
    // Writable but clean: read-only in hardware, so the first write faults.
    let clean = Leaf {
        attrs: Attrs {
            dirty: false,
            ..l.attrs
        },
        ..l
    };
    assert_ne!(Aarch64::encode(Entry::Leaf(clean), 0) & a64::AP_RDONLY, 0);
    // Old: AF clear.
    let old = Leaf {
        attrs: Attrs {
            young: false,
            ..l.attrs
        },
        ..l
    };
    assert_eq!(Aarch64::encode(Entry::Leaf(old), 0) & a64::AF, 0);
}

#[test]
fn arm64_blocks_and_kernel_descriptors() {
    let l = Leaf {
        pfn: 512,
        level: 1,
        attrs: Attrs::kernel(Perms::KERNEL_RX),
        cont: false,
    };
    let raw = Aarch64::encode(Entry::Leaf(l), 1);
    // Block descriptor (type bits 0b01), global, EL1-executable, EL0 not.
    assert_eq!(raw & 3, 1);
    assert_eq!(raw & (a64::NG | a64::PXN), 0);
    assert_ne!(raw & a64::UXN, 0);
    // A kernel RW descriptor as the boot code builds it (no software bits)
    // decodes as writable and dirty.
    let boot_rw = 0x4000_0000 | 1 | (1 << 2) | (3 << 8) | a64::AF | a64::PXN | a64::UXN;
    let d = Aarch64::decode(boot_rw, 1).leaf().unwrap();
    assert!(d.attrs.perms.write && d.attrs.dirty && d.attrs.global && !d.attrs.perms.exec);
    // No blocks in the root; reserved type at the page level.
    assert_eq!(Aarch64::decode(raw, 3), Entry::Absent);
    assert_eq!(Aarch64::decode(raw, 0), Entry::Absent);
    // Device memory uses MAIR index 0.
    let dev = Leaf {
        attrs: Attrs {
            device: true,
            ..l.attrs
        },
        ..l
    };
    assert_eq!(Aarch64::encode(Entry::Leaf(dev), 1) & a64::ATTRIDX_MASK, 0);
}

#[test]
fn geometry() {
    assert_eq!(X86_64::CONT_PTES, 1);
    assert_eq!(Aarch64::CONT_PTES, 16);
    for l in 0..=2 {
        assert!(X86_64::leaf_allowed(l) && Aarch64::leaf_allowed(l));
    }
    assert!(!X86_64::leaf_allowed(3) && !Aarch64::leaf_allowed(3));
}
