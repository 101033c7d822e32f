//! memfd: anonymous files backed by a shmem object (`mm::shmem`), with
//! Linux 6.12's `memfd_create`, `ftruncate`, `pread64`/`pwrite64`,
//! `read`/`write`, `fallocate` (preallocation and
//! `PUNCH_HOLE|KEEP_SIZE`, also `MADV_REMOVE`'s punch), the seals of
//! `fcntl(F_ADD_SEALS/F_GET_SEALS)`, and `mmap` through the address
//! space's shmem mappings: `MAP_SHARED`, and `MAP_PRIVATE` copying on
//! write (write seals do not apply to it, as Linux).
//!
//! Differences from Linux:
//! no `MFD_HUGETLB` (EINVAL), `fallocate` preallocates 4K folios, writes
//! allocate 4K folios (Linux 6.12 memfds get
//! PMD folios under `shmem_enabled`; faults here follow the anonymous
//! shmem policy), no `/proc/<pid>/fd` link name.

use alloc::sync::Arc;
use alloc::vec::Vec;

use mm::abi::errno::Errno;
use mm::addr::{PAGE_SHIFT, PAGE_SIZE};
use mm::physmem::buddy::AllocFlags;
use mm::physmem::folio::FolioRef;
use mm::shmem::{
    F_SEAL_EXEC, F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE,
    MAX_SIZE, Shmem,
};

use super::vfs::{File, Node};
use crate::mem::uspace;
use crate::proc::process;

/// The object a memfd's file holds.
pub type Object = Arc<Shmem<'static>>;

pub const MFD_CLOEXEC: u64 = 1;
pub const MFD_ALLOW_SEALING: u64 = 2;
pub const MFD_HUGETLB: u64 = 4;
pub const MFD_NOEXEC_SEAL: u64 = 8;
pub const MFD_EXEC: u64 = 0x10;
/// `NAME_MAX - strlen("memfd:")`.
const MFD_NAME_MAX_LEN: usize = 249;

const FALLOC_FL_KEEP_SIZE: u64 = 1;
const FALLOC_FL_PUNCH_HOLE: u64 = 2;

/// `memfd_create(name, flags)` after the name was copied: the new file.
pub fn create(name: &str, flags: u64) -> Result<File, Errno> {
    if flags & !(MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_NOEXEC_SEAL | MFD_EXEC) != 0
        || flags & (MFD_NOEXEC_SEAL | MFD_EXEC) == MFD_NOEXEC_SEAL | MFD_EXEC
    {
        return Err(Errno::EINVAL);
    }
    if name.len() > MFD_NAME_MAX_LEN {
        return Err(Errno::EINVAL);
    }
    if flags & MFD_HUGETLB != 0 {
        return Err(Errno::EINVAL);
    }
    let mut seals = if flags & (MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL) != 0 {
        0
    } else {
        F_SEAL_SEAL
    };
    let mut mode = 0o100777;
    if flags & MFD_NOEXEC_SEAL != 0 {
        seals |= F_SEAL_EXEC;
        mode = 0o100666;
    }
    let obj = Arc::new(Shmem::with_gauges(0, seals, Some(&uspace::ctx().thp.shmem)));
    crate::mem::swap::shmem_register(&obj);
    Ok(File::new(Node::Memfd(obj), true, true, mode))
}

/// A zeroed 4K folio for a write into a hole.
fn alloc_page() -> Option<FolioRef<'static>> {
    let ctx = uspace::ctx();
    let f = ctx.buddy.alloc(0, AllocFlags::USER).ok()?;
    ctx.mem.zero(f.pa(), PAGE_SIZE);
    Some(FolioRef::from_raw(f))
}

/// Write `data` at `pos` (the caller holds the file position's lock for
/// a `write`), with the seals' EPERM and the size limit's EFBIG.
pub fn write(obj: &Shmem<'static>, pos: u64, data: &[u8]) -> Result<usize, Errno> {
    let seals = obj.seals();
    if seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE) != 0 {
        return Err(Errno::EPERM);
    }
    if data.is_empty() {
        return Ok(0);
    }
    let end = pos.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
    if end > MAX_SIZE {
        return Err(Errno::EFBIG);
    }
    if seals & F_SEAL_GROW != 0 && end > obj.size() {
        return Err(Errno::EPERM);
    }
    match obj.write(pos, data, uspace::ctx().mem, &mut alloc_page) {
        0 if !obj.quota_allows(1) => Err(Errno::ENOSPC),
        0 => Err(Errno::ENOMEM),
        n => Ok(n),
    }
}

/// Unmap object pages `[first, end)` from every address space (every
/// registered one, not only processes': the self-tests' spaces map
/// objects too).
fn unmap_everywhere(id: u64, first: u64, end: u64) {
    for mm in uspace::all_mms() {
        mm.enter().shmem_unmap_range(id, first, end);
    }
}

/// Drop the pages `[first, end)` from every mapping and the cache.
fn drop_pages(obj: &Shmem<'static>, first: u64, end: u64) {
    if first >= end {
        return;
    }
    let (s, e) = obj.folio_span(first, end);
    unmap_everywhere(obj.id(), s, e);
    let (_, gone) = obj.truncate_range(first, end, uspace::ctx().mem);
    // Again, for a fault that mapped a page between the first unmap and
    // the removal (Linux's `truncate_pagecache` unmaps twice too).
    unmap_everywhere(obj.id(), first, end);
    drop(gone);
}

/// `ftruncate(fd, size)` on a memfd open for writing.
pub fn truncate(obj: &Shmem<'static>, size: i64) -> Result<(), Errno> {
    if size < 0 {
        return Err(Errno::EINVAL);
    }
    let size = size as u64;
    let old = obj.size();
    let seals = obj.seals();
    if (size < old && seals & F_SEAL_SHRINK != 0) || (size > old && seals & F_SEAL_GROW != 0) {
        return Err(Errno::EPERM);
    }
    obj.set_size(size);
    if size < old {
        // The tail of the last page reads as zero if it grows back.
        let keep = size.div_ceil(PAGE_SIZE);
        if !size.is_multiple_of(PAGE_SIZE) {
            obj.zero_bytes(size, (keep << PAGE_SHIFT) - size, uspace::ctx().mem);
        }
        let end = old.div_ceil(PAGE_SIZE);
        drop_pages(obj, keep, end);
        // Private copies of the pages past the end go too (Linux's
        // `truncate_pagecache` unmaps with `even_cows`): an access there
        // gets SIGBUS, as to any page past the end.
        for mm in uspace::all_mms() {
            mm.enter().shmem_unmap_truncated(obj.id(), keep, end);
        }
    }
    Ok(())
}

/// Punch the whole pages of `[off, off + len)` (page aligned) out of the
/// object: `MADV_REMOVE`, which Linux turns into
/// `fallocate(PUNCH_HOLE|KEEP_SIZE)` (so its seals' EPERM).
pub fn punch_hole(obj: &Shmem<'static>, off: u64, len: u64) -> Result<(), Errno> {
    fallocate(
        obj,
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
        off as i64,
        len as i64,
    )
}

/// Preallocate the pages `[first, last)` (fallocate mode 0 and
/// `KEEP_SIZE`, Linux's `shmem_fallocate`): every hole gets a zeroed 4K
/// folio, charged to the mount's `size=` and counted in `Shmem:`.  ENOSPC
/// when the mount fills up (or the range alone exceeds it), ENOMEM when
/// memory runs out; either way the pages this call added are dropped
/// again, as Linux undoes a failed preallocation.
fn preallocate(obj: &Shmem<'static>, first: u64, last: u64) -> Result<(), Errno> {
    if obj
        .quota()
        .is_some_and(|q| q.max_blocks() != 0 && last - first > q.max_blocks())
    {
        return Err(Errno::ENOSPC);
    }
    // Runs of pages added here, to undo on failure.
    let mut added: Vec<(u64, u64)> = Vec::new();
    let mut failed = None;
    for index in first..last {
        if obj.find(index).is_some() {
            continue;
        }
        if !obj.quota_allows(1) {
            failed = Some(Errno::ENOSPC);
            break;
        }
        let Some(f) = alloc_page() else {
            failed = Some(Errno::ENOMEM);
            break;
        };
        match obj.insert(index, f) {
            Ok(_) => match added.last_mut() {
                Some((_, e)) if *e == index => *e += 1,
                _ => added.push((index, index + 1)),
            },
            // A racing write or fault cached it: it serves.
            Err(_) if obj.find(index).is_some() => {}
            Err(_) => {
                failed = Some(Errno::ENOSPC);
                break;
            }
        }
    }
    match failed {
        None => Ok(()),
        Some(e) => {
            for (s, e) in added {
                drop_pages(obj, s, e);
            }
            Err(e)
        }
    }
}

/// `fallocate(fd, mode, off, len)` on a memfd or tmpfs file:
/// `PUNCH_HOLE|KEEP_SIZE` frees the whole pages of the range and zeroes
/// the partial ones (Linux's `shmem_fallocate` hole punch; private copies
/// in `MAP_PRIVATE` mappings stay); mode 0 and `KEEP_SIZE` preallocate
/// every page of the range ([`preallocate`]), mode 0 then grows the size
/// to `off + len`.
pub fn fallocate(obj: &Shmem<'static>, mode: u64, off: i64, len: i64) -> Result<(), Errno> {
    if off < 0 || len <= 0 {
        return Err(Errno::EINVAL);
    }
    let (off, len) = (off as u64, len as u64);
    let end = off
        .checked_add(len)
        .filter(|&e| e <= MAX_SIZE)
        .ok_or(Errno::EFBIG)?;
    match mode {
        m if m == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE => {
            if obj.seals() & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE) != 0 {
                return Err(Errno::EPERM);
            }
            let first = off.div_ceil(PAGE_SIZE);
            let last = end >> PAGE_SHIFT;
            let head_end = (first << PAGE_SHIFT).min(end);
            obj.zero_bytes(off, head_end - off, uspace::ctx().mem);
            if last >= first {
                obj.zero_bytes(
                    last << PAGE_SHIFT,
                    end - (last << PAGE_SHIFT),
                    uspace::ctx().mem,
                );
                drop_pages(obj, first, last);
            }
            Ok(())
        }
        FALLOC_FL_PUNCH_HOLE => Err(Errno::EOPNOTSUPP),
        0 | FALLOC_FL_KEEP_SIZE => {
            // Linux checks `F_SEAL_GROW` against the range's end whatever
            // the mode.
            if end > obj.size() && obj.seals() & F_SEAL_GROW != 0 {
                return Err(Errno::EPERM);
            }
            preallocate(obj, off >> PAGE_SHIFT, end.div_ceil(PAGE_SIZE))?;
            if mode == 0 && end > obj.size() {
                obj.set_size(end);
            }
            Ok(())
        }
        _ => Err(Errno::EOPNOTSUPP),
    }
}

/// `fcntl(F_ADD_SEALS)`: EPERM on a file not open for writing (Linux
/// 6.12's `memfd_add_seals`), EBUSY for `F_SEAL_WRITE` while a shared
/// writable mapping exists anywhere.
pub fn add_seals(f: &File, obj: &Shmem<'static>, seals: u32) -> Result<(), Errno> {
    if !f.writable {
        return Err(Errno::EPERM);
    }
    if seals & F_SEAL_WRITE != 0 && obj.seals() & F_SEAL_SEAL == 0 {
        let mapped: Vec<bool> = process::all()
            .iter()
            .map(|p| {
                p.with_mm(|mm| mm.shmem_writably_mapped(obj.id()))
                    .unwrap_or(false)
            })
            .collect();
        if mapped.into_iter().any(|m| m) {
            return Err(Errno::EBUSY);
        }
    }
    obj.add_seals(seals)
}

/// `mmap` of a memfd or tmpfs file, before the address space sees it:
/// EACCES for a file not open for reading, or for a shared writable
/// mapping of one not open for writing; EPERM for a shared writable
/// mapping under `F_SEAL_WRITE` or `F_SEAL_FUTURE_WRITE` (Linux's
/// `memfd_check_seals_mmap`).  Answers whether the mapping may later
/// become writable (`VM_MAYWRITE`): not for a shared mapping of a file
/// not open for writing or of a write-sealed memfd, as Linux.
pub fn mmap_check(
    f: &File,
    obj: &Shmem<'static>,
    prot: mm::abi::uapi::Prot,
    flags: mm::abi::uapi::MapFlags,
) -> Result<bool, Errno> {
    use mm::abi::uapi::{MAP_SHARED, MAP_SHARED_VALIDATE, MAP_TYPE, PROT_WRITE};
    if !f.readable {
        return Err(Errno::EACCES);
    }
    let ty = flags & MAP_TYPE;
    let shared = ty == MAP_SHARED || ty == MAP_SHARED_VALIDATE;
    let sealed = obj.seals() & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE) != 0;
    if shared && prot.contains(PROT_WRITE) {
        if sealed {
            return Err(Errno::EPERM);
        }
        if !f.writable {
            return Err(Errno::EACCES);
        }
    }
    Ok(!shared || (f.writable && !sealed))
}
