//! Linux's user-visible argument words of the memory-mapping system calls,
//! as types: [`Prot`], [`MapFlags`], [`Advice`] and [`MremapFlags`], with
//! the constants under Linux's names.
//!
//! The generic `asm-generic/mman-common.h` values, which x86_64 and arm64
//! both use for everything here.
//!
//! The syscall layer turns the raw register words into these types with
//! `from_raw`, and `Mm`'s entry points take only the types, so a raw word
//! cannot be passed where another was meant.  A parser rejects only what
//! Linux rejects before looking at any other argument (unknown `madvise`
//! advice, unknown `mremap` flags); every other check stays where Linux's
//! order of checks puts it (`vma::ops`), so which errno wins when several
//! arguments are wrong does not change.  `Prot` and `MapFlags` keep
//! unknown bits: mmap ignores them, and mprotect rejects them only after
//! its address and length checks.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign, Not};

use crate::abi::errno::Errno;

/// A set of flag bits of one system-call argument: the raw word, typed so
/// that it is only combined and compared with its own constants.
macro_rules! flag_word {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name(u64);

        impl $name {
            /// No bit set.
            pub const fn empty() -> Self {
                Self(0)
            }
            /// The raw word, as the system call received it.
            pub const fn bits(self) -> u64 {
                self.0
            }
            /// Every bit of `other` is set.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }
            /// Some bit of `other` is set.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }
            /// No bit set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }
            /// The bits of both (`|` for constant expressions).
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
        }

        /// The raw word, as a trace or an error message shows it.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl BitOr for $name {
            type Output = Self;
            fn bitor(self, o: Self) -> Self {
                Self(self.0 | o.0)
            }
        }

        impl BitOrAssign for $name {
            fn bitor_assign(&mut self, o: Self) {
                self.0 |= o.0;
            }
        }

        impl BitAnd for $name {
            type Output = Self;
            fn bitand(self, o: Self) -> Self {
                Self(self.0 & o.0)
            }
        }

        impl Not for $name {
            type Output = Self;
            fn not(self) -> Self {
                Self(!self.0)
            }
        }
    };
}

flag_word! {
    /// `prot` of `mmap` and `mprotect`.
    Prot
}

impl Prot {
    /// Any word: unknown bits are kept (mmap ignores them, as Linux's
    /// `calc_vm_prot_bits`; mprotect refuses them with EINVAL at its own
    /// point in Linux's order of checks).
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

flag_word! {
    /// `flags` of `mmap`.
    MapFlags
}

impl MapFlags {
    /// Any word: mmap checks its flags in Linux's order among its other
    /// arguments (the mapping type only after the address), and ignores
    /// unknown bits, as Linux does outside `MAP_SHARED_VALIDATE`.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

flag_word! {
    /// `flags` of `mremap`: only the three known bits.
    MremapFlags
}

impl MremapFlags {
    /// EINVAL for unknown bits, Linux's first check of `mremap`, before
    /// any other argument is looked at.
    pub const fn from_raw(raw: u64) -> Result<Self, Errno> {
        let all = MREMAP_MAYMOVE.0 | MREMAP_FIXED.0 | MREMAP_DONTUNMAP.0;
        if raw & !all != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(Self(raw))
    }
}

/// `advice` of `madvise`: one of the `MADV_*` values Linux defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Advice(u64);

impl Advice {
    /// EINVAL for a value Linux does not define: `madvise` checks the
    /// advice before anything else.  A defined advice this kernel does not
    /// support is accepted here and refused by `madvise` itself, with the
    /// same errno at the same point.
    pub fn from_raw(raw: u64) -> Result<Self, Errno> {
        if Self::DEFINED.contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(Errno::EINVAL)
        }
    }

    /// The raw word, as the system call received it.
    pub const fn bits(self) -> u64 {
        self.0
    }
}

/// The raw word, as a trace or an error message shows it.
impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::LowerHex for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// Declares the `MADV_*` constants and [`Advice::DEFINED`] from one list,
/// so the parser cannot miss a constant.
macro_rules! advices {
    ($($(#[$m:meta])* $name:ident = $val:literal;)*) => {
        $($(#[$m])* pub const $name: Advice = Advice($val);)*

        impl Advice {
            /// Every value with a `MADV_*` name.
            const DEFINED: &'static [u64] = &[$($val),*];
        }
    };
}

/// Page may not be accessed.
pub const PROT_NONE: Prot = Prot(0x0);
/// Page can be read.
pub const PROT_READ: Prot = Prot(0x1);
/// Page can be written.
pub const PROT_WRITE: Prot = Prot(0x2);
/// Page can be executed.
pub const PROT_EXEC: Prot = Prot(0x4);
/// Page may be used for atomic ops (accepted and ignored, as on Linux).
pub const PROT_SEM: Prot = Prot(0x8);
/// mprotect: extend the change to the start of a grows-down mapping.
pub const PROT_GROWSDOWN: Prot = Prot(0x0100_0000);
/// mprotect: extend the change to the end of a grows-up mapping.
pub const PROT_GROWSUP: Prot = Prot(0x0200_0000);

/// Share changes.
pub const MAP_SHARED: MapFlags = MapFlags(0x01);
/// Changes are private (copy-on-write).
pub const MAP_PRIVATE: MapFlags = MapFlags(0x02);
/// Shared, with unknown flags rejected.
pub const MAP_SHARED_VALIDATE: MapFlags = MapFlags(0x03);
/// Linux 6.11's droppable mappings (not supported here).
pub const MAP_DROPPABLE: MapFlags = MapFlags(0x08);
/// Mask of the mapping type.
pub const MAP_TYPE: MapFlags = MapFlags(0x0f);
/// Interpret addr exactly, replacing what is there.
pub const MAP_FIXED: MapFlags = MapFlags(0x10);
/// Not backed by a file.
pub const MAP_ANONYMOUS: MapFlags = MapFlags(0x20);
/// Stack-like segment.
pub const MAP_GROWSDOWN: MapFlags = MapFlags(0x0100);
/// Ignored (historic).
pub const MAP_DENYWRITE: MapFlags = MapFlags(0x0800);
/// Ignored (historic).
pub const MAP_EXECUTABLE: MapFlags = MapFlags(0x1000);
/// Lock the pages (recorded as `VM_LOCKED`; no mlock accounting here).
pub const MAP_LOCKED: MapFlags = MapFlags(0x2000);
/// Don't check for reservations.
pub const MAP_NORESERVE: MapFlags = MapFlags(0x4000);
/// Populate (prefault) the mapping.
pub const MAP_POPULATE: MapFlags = MapFlags(0x8000);
/// Do not block on I/O (cancels `MAP_POPULATE`).
pub const MAP_NONBLOCK: MapFlags = MapFlags(0x1_0000);
/// Address suitable for a stack; Linux ≥ 6.7 also sets `VM_NOHUGEPAGE`.
pub const MAP_STACK: MapFlags = MapFlags(0x2_0000);
/// Create a hugetlb mapping (no hugetlb pages here: ENOMEM).
pub const MAP_HUGETLB: MapFlags = MapFlags(0x4_0000);
/// Like `MAP_FIXED` but fail with EEXIST instead of replacing.
pub const MAP_FIXED_NOREPLACE: MapFlags = MapFlags(0x10_0000);

advices! {
    /// No special treatment.
    MADV_NORMAL = 0;
    /// Expect random access.
    MADV_RANDOM = 1;
    /// Expect sequential access.
    MADV_SEQUENTIAL = 2;
    /// Will need these pages.
    MADV_WILLNEED = 3;
    /// Drop the pages: private anonymous memory reads back as zeroes.
    MADV_DONTNEED = 4;
    /// Free pages only if memory pressure.
    MADV_FREE = 8;
    /// Remove pages from a file/shm mapping (EINVAL on private anon).
    MADV_REMOVE = 9;
    /// Don't inherit across fork.
    MADV_DONTFORK = 10;
    /// Do inherit across fork.
    MADV_DOFORK = 11;
    /// KSM may merge (not supported here: EINVAL, as without CONFIG_KSM).
    MADV_MERGEABLE = 12;
    /// KSM may not merge (EINVAL here).
    MADV_UNMERGEABLE = 13;
    /// Worth backing with huge pages.
    MADV_HUGEPAGE = 14;
    /// Not worth backing with huge pages.
    MADV_NOHUGEPAGE = 15;
    /// Exclude from core dumps.
    MADV_DONTDUMP = 16;
    /// Include in core dumps.
    MADV_DODUMP = 17;
    /// Zero-fill in the child after fork.
    MADV_WIPEONFORK = 18;
    /// Undo `MADV_WIPEONFORK`.
    MADV_KEEPONFORK = 19;
    /// Deactivate these pages.
    MADV_COLD = 20;
    /// Reclaim these pages.
    MADV_PAGEOUT = 21;
    /// Populate (prefault) page tables readable.
    MADV_POPULATE_READ = 22;
    /// Populate (prefault) page tables writable.
    MADV_POPULATE_WRITE = 23;
    /// Like `MADV_DONTNEED`, also on locked VMAs.
    MADV_DONTNEED_LOCKED = 24;
    /// Synchronous huge page collapse.
    MADV_COLLAPSE = 25;
    /// Poison a page (EINVAL here, as without CONFIG_MEMORY_FAILURE).
    MADV_HWPOISON = 100;
    /// Soft-offline a page (EINVAL here).
    MADV_SOFT_OFFLINE = 101;
    /// Install guard regions (Linux 6.13; EINVAL here).
    MADV_GUARD_INSTALL = 102;
    /// Remove guard regions (EINVAL here).
    MADV_GUARD_REMOVE = 103;
}

/// mremap: may move the mapping.
pub const MREMAP_MAYMOVE: MremapFlags = MremapFlags(1);
/// mremap: move to exactly `new_addr` (requires `MREMAP_MAYMOVE`).
pub const MREMAP_FIXED: MremapFlags = MremapFlags(2);
/// mremap: move, leaving the old range mapped but empty.
pub const MREMAP_DONTUNMAP: MremapFlags = MremapFlags(4);
