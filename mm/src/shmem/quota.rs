//! A tmpfs mount's limits (Linux's `shmem_sb_info`): `size=` as a number
//! of pages the mount's files may cache (`max_blocks`) and `nr_inodes=`
//! (`max_inodes`), each 0 for no limit.
//!
//! Pages are charged when a folio enters a file's cache and uncharged when
//! it leaves (truncate, hole punch, the file's last reference), so an
//! unlinked file still open or mapped keeps its pages charged, as Linux.
//! An inode is charged when a file or directory is made (the mount's root
//! directory holds one from the start) and uncharged when the file goes
//! for good or the directory is removed.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Limits and usage of one tmpfs mount (see the module doc).
#[derive(Debug)]
pub struct ShmemQuota {
    max_blocks: u64,
    used_blocks: AtomicU64,
    max_inodes: u64,
    used_inodes: AtomicU64,
}

/// Add `nr` to `used` unless that passes `max` (0: no limit).
fn charge(used: &AtomicU64, max: u64, nr: u64) -> bool {
    used.fetch_update(Relaxed, Relaxed, |u| {
        let n = u.checked_add(nr)?;
        (max == 0 || n <= max).then_some(n)
    })
    .is_ok()
}

impl ShmemQuota {
    /// `max_blocks` pages and `max_inodes` inodes (0: unlimited); the
    /// root directory's inode is charged already.
    pub fn new(max_blocks: u64, max_inodes: u64) -> Self {
        ShmemQuota {
            max_blocks,
            used_blocks: AtomicU64::new(0),
            max_inodes,
            used_inodes: AtomicU64::new(1),
        }
    }

    /// The page limit (0: none).
    pub fn max_blocks(&self) -> u64 {
        self.max_blocks
    }

    /// Pages charged.
    pub fn used_blocks(&self) -> u64 {
        self.used_blocks.load(Relaxed)
    }

    /// The inode limit (0: none).
    pub fn max_inodes(&self) -> u64 {
        self.max_inodes
    }

    /// Inodes charged.
    pub fn used_inodes(&self) -> u64 {
        self.used_inodes.load(Relaxed)
    }

    /// Whether `nr` more pages fit now.
    pub fn allows(&self, nr: u64) -> bool {
        self.max_blocks == 0 || self.used_blocks().saturating_add(nr) <= self.max_blocks
    }

    /// Charge `nr` pages; false (nothing charged) if they do not fit.
    pub fn try_charge(&self, nr: u64) -> bool {
        charge(&self.used_blocks, self.max_blocks, nr)
    }

    /// Give back `nr` charged pages.
    pub fn uncharge(&self, nr: u64) {
        self.used_blocks.fetch_sub(nr, Relaxed);
    }

    /// Charge one inode (Linux's `shmem_reserve_inode`); false if the
    /// mount has none left (ENOSPC).
    pub fn try_get_inode(&self) -> bool {
        charge(&self.used_inodes, self.max_inodes, 1)
    }

    /// Give back one inode.
    pub fn put_inode(&self) {
        self.used_inodes.fetch_sub(1, Relaxed);
    }
}
