//! The kernel side of memory management: the glue between the portable
//! `mm` crate and this kernel.
//!
//! `memory.rs` sets up the frame descriptors, the buddy allocator and the
//! kernel heap at boot; `physmem.rs` is `mm`'s window onto physical memory
//! (the direct map) and `mmglue.rs` its TLB hooks; `kmap.rs` maps run-time
//! kernel pages (thread stacks) through `mm`'s engine; `uspace.rs` keeps the
//! registry of user address spaces and resolves MMU faults through `mm`;
//! `khugepaged.rs` is the kernel thread that runs `mm`'s collapse scans;
//! `compact.rs` kcompactd, `compact_memory` and direct compaction;
//! `shootdown.rs` and `xcall.rs` reach the other CPUs (TLB flushes, calls);
//! `numa.rs` writes the NUMA node files of `/sys/devices/system/node`;
//! `migrate.rs` and `mempolicy.rs` are `move_pages` and the memory-policy
//! calls.
//! (Named `mem`, not `mm`, so it never shadows the `mm` crate.)  The policy
//! itself stays in `mm`; what needs threads, interrupts or devices comes
//! here: the reclaim and compaction threads (kswapd, kcompactd), the swap
//! I/O path to a block device, and the per-CPU parts of SMP shootdowns.
pub mod compact;
pub mod khugepaged;
pub mod kmap;
pub mod kswapd;
pub mod memory;
pub mod mempolicy;
pub mod migrate;
pub mod mmglue;
pub mod numa;
pub mod numab;
pub mod physmem;
pub mod shootdown;
pub mod swap;
pub mod uspace;
pub mod watermark;
pub mod xcall;
