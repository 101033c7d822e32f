//! Architecture-neutral page tables.
//!
//! * [`arch`]: the [`PagingArch`] trait an entry format implements (the
//!   x86-64 and arm64 formats live in the arch crates' `pte` modules, which
//!   are plain portable Rust so the host tests use them), and the neutral
//!   [`Entry`] / [`Leaf`] / [`Attrs`] / [`Perms`] types.
//! * [`PageTable`]: walking, table allocation, batch operations on runs of
//!   PTEs (set / get-and-clear / write-protect / clear-young / none-check),
//!   arm64 contiguous-block fold and unfold, PMD leaves with deposited
//!   tables, teardown.
//! * [`probe`]: the read-only descent [`PageTable::lookup`] is built on,
//!   over a raw root and a load function (the arch crates walk the live
//!   kernel tables with it).
//! * [`PageTable::walk_range`]: a cursor over a virtual range yielding
//!   holes, huge leaves, huge swap entries and runs of PTEs ([`PteRun`]),
//!   and [`PteRun::folio_pte_batch`], the extent of one folio's run of
//!   PTEs: the two pieces every range operation of the address-space code
//!   is built from.
//! * [`TlbGather`] and [`TlbOps`]: one TLB flush per batch, and freed
//!   table pages released only after it.
//!
//! # Who calls what, under which lock
//! The owner of an address space keeps its `PageTable` behind the
//! page-table lock; all mutating methods take `&mut self`, so the borrow
//! checker enforces "hold the ptl".  A batch is: create a gather with
//! [`PageTable::gather`], run any number of operations passing it, call
//! [`TlbGather::finish`].  Break-before-make flushes (contiguous fold and
//! unfold, PMD split) are issued immediately inside the operation that
//! needs them; everything else is deferred to the gather.

pub mod arch;
mod batch;
mod collapse;
mod pmd;
mod promote;
mod pte_batch;
mod table;
mod tlb;
mod walk;
mod young;

pub use arch::{
    Attrs, ENTRIES_PER_TABLE, Entry, Leaf, NR_LEVELS, PMD_LEVEL, PTE_LEVEL, PUD_LEVEL, PagingArch,
    Perms, ROOT_LEVEL, SwapEntry, VA_BITS, level_index, level_size,
};
pub use batch::ClearResult;
pub use pte_batch::{BatchMatch, PteBatch};
pub use table::{
    FolioSpan, PageTable, Probe, PtAlloc, PtEnv, PtError, PtStats, Walk, cont_hints, probe,
    set_cont_hints,
};
pub use tlb::{FULL_FLUSH_THRESHOLD, Space, TlbGather, TlbOps};
pub use walk::{HugeLeaf, PteRun, RangeWalk, Step};
