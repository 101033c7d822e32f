//! The initramfs: a newc ("070701") cpio archive passed by the boot loader
//! (`-initrd`), kept in place (its frames are reserved at boot) and read
//! through the direct map.
//!
//! newc layout: a 110-byte ASCII header (magic + 13 eight-digit hex fields:
//! ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
//! rdevmajor, rdevminor, namesize, check), the NUL-terminated name padded
//! to 4 bytes (counting from the header start), then the data padded to 4.
//! The archive ends with the entry named `TRAILER!!!`.
#![allow(unsafe_code)]

use crate::arch::PHYS_OFFSET;
use mm::bootinfo::PhysRange;
use spin::Once;

/// One file (or directory) of the archive.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// Path without a leading `/` or `./`.
    pub name: &'static str,
    pub mode: u32,
    pub data: &'static [u8],
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }
    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }
}

static ARCHIVE: Once<&'static [u8]> = Once::new();

/// Remember the initrd's bytes.  The range is reserved RAM (the arch boot
/// code registers it), covered by the direct map and never written.
pub fn init(initrd: Option<PhysRange>) {
    let bytes: &'static [u8] = match initrd {
        Some(r) if r.end > r.start => {
            // SAFETY: `[r.start, r.end)` is the initrd, reserved at boot so
            // the frame allocator never hands it out; all RAM is mapped at
            // `PHYS_OFFSET`, and nothing writes it, so a shared `'static`
            // slice is sound.
            unsafe {
                core::slice::from_raw_parts(
                    (r.start + PHYS_OFFSET) as *const u8,
                    (r.end - r.start) as usize,
                )
            }
        }
        _ => &[],
    };
    ARCHIVE.call_once(|| bytes);
}

/// The archive bytes (empty without an initrd).
pub fn archive() -> &'static [u8] {
    ARCHIVE.get().copied().unwrap_or(&[])
}

fn hex8(b: &[u8]) -> Option<u32> {
    if b.len() != 8 {
        return None;
    }
    let mut v = 0u32;
    for &c in b {
        let d = (c as char).to_digit(16)?;
        v = (v << 4) | d;
    }
    Some(v)
}

const fn align4(x: usize) -> usize {
    (x + 3) & !3
}

/// Iterate over the entries of a newc archive; stops at the trailer or at
/// the first malformed header.
pub fn entries(a: &'static [u8]) -> impl Iterator<Item = Entry> {
    let mut off = 0usize;
    core::iter::from_fn(move || {
        let h = a.get(off..off + 110)?;
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            return None;
        }
        let field = |i: usize| hex8(&h[6 + 8 * i..14 + 8 * i]);
        let mode = field(1)?;
        let filesize = field(6)? as usize;
        let namesize = field(11)? as usize;
        let name_start = off + 110;
        let name = a.get(name_start..name_start + namesize.checked_sub(1)?)?;
        let name = core::str::from_utf8(name).ok()?;
        let data_start = align4(name_start + namesize);
        let data = a.get(data_start..data_start.checked_add(filesize)?)?;
        off = align4(data_start + filesize);
        if name == "TRAILER!!!" {
            return None;
        }
        let name = name.trim_start_matches("./").trim_start_matches('/');
        Some(Entry { name, mode, data })
    })
}

/// Every entry of the initramfs.
pub fn all() -> impl Iterator<Item = Entry> {
    entries(archive())
}

/// Find `path` (absolute or relative to `/`) in the initramfs.
pub fn lookup(path: &str) -> Option<Entry> {
    let p = path.trim_start_matches('/');
    entries(archive()).find(|e| e.name == p)
}
