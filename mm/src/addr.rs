//! Address and page-size constants shared by every layer.

/// log2 of the base page size (4 KiB on both supported architectures).
pub const PAGE_SHIFT: u32 = 12;
/// The base page size.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Order of a PMD-sized (2 MiB) folio.
pub const PMD_ORDER: u32 = 9;
/// Size mapped by one PMD leaf.
pub const PMD_SIZE: u64 = PAGE_SIZE << PMD_ORDER;
/// Size mapped by one PUD leaf (1 GiB).
pub const PUD_SIZE: u64 = PMD_SIZE << 9;

/// Round `x` down to a multiple of `align` (a power of two).
#[inline]
pub const fn align_down(x: u64, align: u64) -> u64 {
    x & !(align - 1)
}

/// Round `x` up to a multiple of `align` (a power of two); `None` on overflow.
#[inline]
pub const fn align_up(x: u64, align: u64) -> Option<u64> {
    match x.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Physical frame number of a physical address.
#[inline]
pub const fn pfn_of(pa: u64) -> u64 {
    pa >> PAGE_SHIFT
}
