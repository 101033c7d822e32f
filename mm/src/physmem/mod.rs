//! Physical memory: everything that deals in frames rather than in virtual
//! addresses.
//!
//! Gathered in one folder so that the layers below the address spaces are
//! visible as one layer, and so that work on frames (compaction, migration
//! targets, memory hotplug, NUMA nodes) has one obvious home:
//!
//! * [`memmap`]: one [`memmap::FrameDesc`] per 4 KiB frame, and
//!   [`frame_flags`], the layout of its flags word;
//! * [`folio`]: the handles for allocated runs of frames (`Folio`,
//!   `FolioRef`, `Page`) and, in `folio_split`, splitting a folio's
//!   descriptors into smaller folios;
//! * [`buddy`]: the zones' free lists, with [`pcp`] its per-CPU caches;
//! * [`node`]: the NUMA nodes (which frames and CPUs each holds, distances);
//! * [`compaction`]: the migrate and free scanners, the per-order
//!   destination pool and the fragmentation indices;
//! * [`phys`]: how `mm` reads and writes physical memory without touching
//!   it directly (the kernel's direct map, the host tests' emulation);
//! * [`alloc_trace`]: recorded allocator workloads for the benchmarks.
//!
//! The address-space side of folios (mapping, rmap, splitting the
//! mappings) lives in [`crate::aspace`].

pub mod alloc_trace;
pub mod buddy;
pub mod compaction;
pub mod folio;
mod folio_split;
pub mod frame_flags;
pub mod memmap;
pub mod node;
pub mod pcp;
pub mod phys;
pub mod watermark;
