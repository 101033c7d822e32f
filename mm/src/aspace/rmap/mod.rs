//! The reverse map (rmap): from a folio to the page-table entries that map
//! it, and the bookkeeping every mapping carries.
//!
//! # How a folio finds its mappings
//! Linux walks the folio's `anon_vma` to find every VMA that may map it.
//! Here an anonymous folio records its rmap owner — (mm id, virtual page of
//! its first page), set when the fault maps it — and anonymous pages are
//! only ever mapped at that virtual address: by the address space that
//! faulted them in and by its fork descendants (fork copies mappings at the
//! same address; nothing moves anonymous pages yet — a page-moving
//! `mremap` must either keep the owner vpn right or split/copy first).  So
//! the candidates are "every live address space, at the owner's address".
//! The caller passes the live address spaces (normally all of the
//! context's); each one costs a page-table lookup.  A mapping in a space
//! the caller did not pass shows up as a mapcount mismatch (EBUSY, Linux's
//! "anon_vma gone"), never as a mapping left behind.
//!
//! # Files
//! * `accounting.rs`: what mapping and unmapping do to a folio
//!   (references, large and entire mapcounts and the per-space owner
//!   slots, anon-exclusive bits, the deferred-split queue), and the deferred reference drops after a TLB
//!   flush.
//! * `walk.rs`: finding the mappings ([`rmap_walk`] locks every space that
//!   maps a folio and checks it found them all; `count_own_mappings` looks
//!   in one space).
//! * `unmap.rs`: clearing every mapping of a folio ([`try_to_unmap`]) and
//!   writing them back afterwards, possibly for the smaller folios it was
//!   split into ([`restore_mappings`]), as swap entries
//!   ([`try_to_unmap_swap`]), or as migration entries and back
//!   ([`try_to_migrate`], [`remove_migration_ptes`]).

mod accounting;
mod unmap;
mod walk;

pub(crate) use accounting::{FreeBatch, PutList};
pub(crate) use unmap::{
    SavedPte, migration_entry_at, migration_leaf_attrs, remove_migration_pte,
    remove_migration_ptes, restore_mappings, try_to_migrate, try_to_migrate_pte,
    try_to_migrate_pte_gathered, try_to_unmap, try_to_unmap_swap,
};
pub(crate) use walk::{RmapWalk, rmap_walk};
