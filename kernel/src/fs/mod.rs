//! Files: everything a user program can open, read or write.
//!
//! `vfs.rs` is the open-file object (`File`, `Node`), path resolution and
//! the path dispatch of `open` and `getdents64`; the generated `/proc` files
//! are in `procfs.rs` and the debugfs control files in `debugfs.rs` (the THP
//! sysfs tree comes straight from `mm::thp`'s registry, `/sys/kernel/debug/
//! mthp/perf` from `perf/dev.rs`).  `pipe.rs` is the pipe object and
//! `cpio.rs` the read-only initramfs, `tmpfs.rs` the writable in-memory
//! file systems (`/tmp`, `/dev/shm`, `mount -t tmpfs`).  A block layer (swap devices, a
//! writable file system) would get its own `block/` folder next to this one;
//! new pseudo-files go into the file of their file system here.
pub mod cpio;
pub mod debugfs;
pub mod memfd;
pub mod pipe;
pub mod procfs;
pub mod tmpfs;
pub mod vfs;
