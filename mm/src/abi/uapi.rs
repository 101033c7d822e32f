//! Linux's user-visible constants for the memory-mapping system calls.
//!
//! The generic `asm-generic/mman-common.h` values, which x86_64 and arm64
//! both use for everything here.

/// Page may not be accessed.
pub const PROT_NONE: u64 = 0x0;
/// Page can be read.
pub const PROT_READ: u64 = 0x1;
/// Page can be written.
pub const PROT_WRITE: u64 = 0x2;
/// Page can be executed.
pub const PROT_EXEC: u64 = 0x4;
/// Page may be used for atomic ops (accepted and ignored, as on Linux).
pub const PROT_SEM: u64 = 0x8;
/// mprotect: extend the change to the start of a grows-down mapping.
pub const PROT_GROWSDOWN: u64 = 0x0100_0000;
/// mprotect: extend the change to the end of a grows-up mapping.
pub const PROT_GROWSUP: u64 = 0x0200_0000;

/// Share changes.
pub const MAP_SHARED: u64 = 0x01;
/// Changes are private (copy-on-write).
pub const MAP_PRIVATE: u64 = 0x02;
/// Shared, with unknown flags rejected.
pub const MAP_SHARED_VALIDATE: u64 = 0x03;
/// Linux 6.11's droppable mappings (not supported here).
pub const MAP_DROPPABLE: u64 = 0x08;
/// Mask of the mapping type.
pub const MAP_TYPE: u64 = 0x0f;
/// Interpret addr exactly, replacing what is there.
pub const MAP_FIXED: u64 = 0x10;
/// Not backed by a file.
pub const MAP_ANONYMOUS: u64 = 0x20;
/// Stack-like segment.
pub const MAP_GROWSDOWN: u64 = 0x0100;
/// Ignored (historic).
pub const MAP_DENYWRITE: u64 = 0x0800;
/// Ignored (historic).
pub const MAP_EXECUTABLE: u64 = 0x1000;
/// Lock the pages (recorded as `VM_LOCKED`; no mlock accounting here).
pub const MAP_LOCKED: u64 = 0x2000;
/// Don't check for reservations.
pub const MAP_NORESERVE: u64 = 0x4000;
/// Populate (prefault) the mapping.
pub const MAP_POPULATE: u64 = 0x8000;
/// Do not block on I/O (cancels `MAP_POPULATE`).
pub const MAP_NONBLOCK: u64 = 0x1_0000;
/// Address suitable for a stack; Linux ≥ 6.7 also sets `VM_NOHUGEPAGE`.
pub const MAP_STACK: u64 = 0x2_0000;
/// Create a hugetlb mapping (no hugetlb pages here: ENOMEM).
pub const MAP_HUGETLB: u64 = 0x4_0000;
/// Like `MAP_FIXED` but fail with EEXIST instead of replacing.
pub const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;

/// No special treatment.
pub const MADV_NORMAL: u64 = 0;
/// Expect random access.
pub const MADV_RANDOM: u64 = 1;
/// Expect sequential access.
pub const MADV_SEQUENTIAL: u64 = 2;
/// Will need these pages.
pub const MADV_WILLNEED: u64 = 3;
/// Drop the pages: private anonymous memory reads back as zeroes.
pub const MADV_DONTNEED: u64 = 4;
/// Free pages only if memory pressure.
pub const MADV_FREE: u64 = 8;
/// Remove pages from a file/shm mapping (EINVAL on private anon).
pub const MADV_REMOVE: u64 = 9;
/// Don't inherit across fork.
pub const MADV_DONTFORK: u64 = 10;
/// Do inherit across fork.
pub const MADV_DOFORK: u64 = 11;
/// KSM may merge (not supported here: EINVAL, as without CONFIG_KSM).
pub const MADV_MERGEABLE: u64 = 12;
/// KSM may not merge (EINVAL here).
pub const MADV_UNMERGEABLE: u64 = 13;
/// Worth backing with huge pages.
pub const MADV_HUGEPAGE: u64 = 14;
/// Not worth backing with huge pages.
pub const MADV_NOHUGEPAGE: u64 = 15;
/// Exclude from core dumps.
pub const MADV_DONTDUMP: u64 = 16;
/// Include in core dumps.
pub const MADV_DODUMP: u64 = 17;
/// Zero-fill in the child after fork.
pub const MADV_WIPEONFORK: u64 = 18;
/// Undo `MADV_WIPEONFORK`.
pub const MADV_KEEPONFORK: u64 = 19;
/// Deactivate these pages.
pub const MADV_COLD: u64 = 20;
/// Reclaim these pages.
pub const MADV_PAGEOUT: u64 = 21;
/// Populate (prefault) page tables readable.
pub const MADV_POPULATE_READ: u64 = 22;
/// Populate (prefault) page tables writable.
pub const MADV_POPULATE_WRITE: u64 = 23;
/// Like `MADV_DONTNEED`, also on locked VMAs.
pub const MADV_DONTNEED_LOCKED: u64 = 24;
/// Synchronous huge page collapse.
pub const MADV_COLLAPSE: u64 = 25;
/// Poison a page (EINVAL here, as without CONFIG_MEMORY_FAILURE).
pub const MADV_HWPOISON: u64 = 100;
/// Soft-offline a page (EINVAL here).
pub const MADV_SOFT_OFFLINE: u64 = 101;
/// Install guard regions (Linux 6.13; EINVAL here).
pub const MADV_GUARD_INSTALL: u64 = 102;
/// Remove guard regions (EINVAL here).
pub const MADV_GUARD_REMOVE: u64 = 103;

/// mremap: may move the mapping.
pub const MREMAP_MAYMOVE: u64 = 1;
/// mremap: move to exactly `new_addr` (requires `MREMAP_MAYMOVE`).
pub const MREMAP_FIXED: u64 = 2;
/// mremap: move, leaving the old range mapped but empty.
pub const MREMAP_DONTUNMAP: u64 = 4;
