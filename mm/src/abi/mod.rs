//! Linux's ABI and how `mm` presents itself through it: the numbers and
//! formats user programs and administrators see, kept apart from the
//! mechanisms they describe so that a reader of `aspace`, `physmem` or
//! `thp` meets memory management, not text layouts or bit encodings, and
//! so that a new `/proc` or `/sys` file has one obvious home.
//!
//! * [`errno`]: the error numbers every system call returns;
//! * [`uapi`]: the memory-mapping system calls' argument words (`PROT_*`,
//!   `MAP_*`, `MADV_*`, `MREMAP_*`);
//! * [`thp_sysfs`]: the THP knobs and counters as files under
//!   `/sys/kernel/mm/transparent_hugepage/`, and [`thp_cmdline`], the THP
//!   boot parameters;
//! * [`pagemap`] and [`kpageflags`]: `/proc/<pid>/pagemap` entries and
//!   `/proc/kpageflags` words;
//! * `thpmaps`: the text of the per-VMA folio report
//!   ([`crate::aspace::ThpMaps`]).

pub mod errno;
pub mod kpageflags;
pub mod numa_maps;
pub mod pagemap;
mod sysfs_choice;
pub mod thp_cmdline;
pub mod thp_sysfs;
mod thpmaps;
pub mod uapi;

pub(crate) use sysfs_choice::sysfs_choice;
