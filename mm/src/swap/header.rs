//! Linux's swap header: page 0 of a swap area as `mkswap` writes it
//! (`union swap_header`), read by `swapon` (notes §1.2).
//!
//! | offset          | field                                   |
//! |-----------------|-----------------------------------------|
//! | 0..1024         | boot bits (ignored)                     |
//! | 1024            | `version` (u32, must be 1)              |
//! | 1028            | `last_page` (u32, last usable page)     |
//! | 1032            | `nr_badpages` (u32)                     |
//! | 1036 / 1052     | uuid / volume label (16 bytes each)     |
//! | 1536..          | `badpages[]` (u32 each)                 |
//! | PAGE_SIZE - 10  | `"SWAPSPACE2"`                          |
//!
//! A header whose version reads 1 only byte-swapped is accepted with its
//! counters and bad pages byte-swapped, as Linux does.

use alloc::vec::Vec;

use crate::addr::PAGE_SIZE;

/// The signature at the end of page 0.
pub const MAGIC: &[u8; 10] = b"SWAPSPACE2";
const VERSION: usize = 1024;
const LAST_PAGE: usize = 1028;
const NR_BAD: usize = 1032;
const UUID: usize = 1036;
const BAD: usize = 1536;
/// Most bad pages a 4 KiB header can list (Linux's `MAX_SWAP_BADPAGES`).
pub const MAX_BADPAGES: u32 = ((PAGE_SIZE as usize - 10 - BAD) / 4) as u32;

/// A parsed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapHeader {
    /// Pages of the area, header included (`last_page + 1`).
    pub pages: u64,
    /// Bad pages (each in `1..=last_page`).
    pub bad: Vec<u64>,
}

/// Why a header was refused (each is EINVAL to `swapon`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// No `SWAPSPACE2` signature (or the old `SWAP-SPACE` one).
    NoSignature,
    /// `version` is not 1 (either byte order).
    BadVersion,
    /// `last_page` is 0: an empty area.
    Empty,
    /// The area is larger than the device.
    TooLarge,
    /// More bad pages than fit, or one outside `1..=last_page`.
    BadPages,
}

fn u32_at(page: &[u8], off: usize, swapped: bool) -> u32 {
    let v = u32::from_le_bytes(page[off..off + 4].try_into().expect("4 bytes"));
    if swapped { v.swap_bytes() } else { v }
}

/// Parses page 0 of an area on a device of `device_pages` pages.
pub fn parse(page: &[u8], device_pages: u64) -> Result<SwapHeader, HeaderError> {
    let ps = PAGE_SIZE as usize;
    if page.len() < ps || &page[ps - 10..ps] != MAGIC {
        return Err(HeaderError::NoSignature);
    }
    let swapped = match u32_at(page, VERSION, false) {
        1 => false,
        v if v.swap_bytes() == 1 => true,
        _ => return Err(HeaderError::BadVersion),
    };
    let last = u32_at(page, LAST_PAGE, swapped) as u64;
    if last == 0 {
        return Err(HeaderError::Empty);
    }
    if last + 1 > device_pages {
        return Err(HeaderError::TooLarge);
    }
    let nbad = u32_at(page, NR_BAD, swapped);
    if nbad > MAX_BADPAGES {
        return Err(HeaderError::BadPages);
    }
    let mut bad = Vec::with_capacity(nbad as usize);
    for i in 0..nbad as usize {
        let b = u32_at(page, BAD + 4 * i, swapped) as u64;
        if b == 0 || b > last {
            return Err(HeaderError::BadPages);
        }
        bad.push(b);
    }
    Ok(SwapHeader {
        pages: last + 1,
        bad,
    })
}

/// Writes a valid header for an area of `pages` pages (as `mkswap`, no
/// bad pages) into `page` (one page, zeroed first), with `uuid` and an
/// empty label.
pub fn write(page: &mut [u8], pages: u64, uuid: [u8; 16]) {
    let ps = PAGE_SIZE as usize;
    page[..ps].fill(0);
    page[VERSION..VERSION + 4].copy_from_slice(&1u32.to_le_bytes());
    let last = (pages - 1).min(u32::MAX as u64) as u32;
    page[LAST_PAGE..LAST_PAGE + 4].copy_from_slice(&last.to_le_bytes());
    page[UUID..UUID + 16].copy_from_slice(&uuid);
    page[ps - 10..ps].copy_from_slice(MAGIC);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn header(pages: u64) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_SIZE as usize];
        write(&mut p, pages, [7; 16]);
        p
    }

    #[test]
    fn round_trip() {
        let p = header(1000);
        assert_eq!(
            parse(&p, 1000),
            Ok(SwapHeader {
                pages: 1000,
                bad: vec![]
            })
        );
        assert_eq!(parse(&p, 999), Err(HeaderError::TooLarge));
    }

    #[test]
    fn every_rule() {
        let mut p = header(100);
        p[PAGE_SIZE as usize - 10..].copy_from_slice(b"SWAP-SPACE");
        assert_eq!(parse(&p, 100), Err(HeaderError::NoSignature));
        let mut p = header(100);
        p[VERSION] = 2;
        assert_eq!(parse(&p, 100), Err(HeaderError::BadVersion));
        let mut p = header(100);
        p[LAST_PAGE..LAST_PAGE + 4].fill(0);
        assert_eq!(parse(&p, 100), Err(HeaderError::Empty));
        let mut p = header(100);
        p[NR_BAD] = 2;
        p[BAD] = 5;
        p[BAD + 4] = 99;
        assert_eq!(parse(&p, 100).unwrap().bad, vec![5, 99]);
        p[BAD + 4] = 100;
        assert_eq!(parse(&p, 100), Err(HeaderError::BadPages));
        p[NR_BAD..NR_BAD + 4].copy_from_slice(&(MAX_BADPAGES + 1).to_le_bytes());
        assert_eq!(parse(&p, 100), Err(HeaderError::BadPages));
        assert_eq!(MAX_BADPAGES, 637);
    }

    #[test]
    fn byte_swapped_header_is_accepted() {
        let mut p = header(100);
        p[VERSION..VERSION + 4].copy_from_slice(&1u32.to_be_bytes());
        p[LAST_PAGE..LAST_PAGE + 4].copy_from_slice(&99u32.to_be_bytes());
        assert_eq!(parse(&p, 100).unwrap().pages, 100);
    }
}
