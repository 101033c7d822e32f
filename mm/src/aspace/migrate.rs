//! Migration of anonymous folios, whole at every order (Linux's
//! `migrate_folio_unmap` → `move_to_new_folio` → `remove_migration_ptes`,
//! and the `migrate_pages` batch driver).
//!
//! Work in progress: the compaction hook [`FolioMigrator`] comes first so
//! compaction can be written against it.

use crate::paging::PagingArch;
use crate::physmem::folio::Folio;

use super::Mm;

/// Why one folio could not be migrated (Linux's errno kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateError {
    /// Transient: the folio is locked, under writeback, or held by an
    /// extra reference that may go away (Linux's `-EAGAIN`; the batch
    /// driver retries).
    Again,
    /// Not migratable now: pinned, not anonymous, not on the LRU, or
    /// mapped where the rmap walk cannot reach (Linux's `-EBUSY`).
    Busy,
    /// No destination folio could be allocated (Linux's `-ENOMEM`).
    NoMem,
}

/// How hard [`migrate_folio`] tries (Linux's `enum migrate_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateMode {
    /// Never sleeps: a locked folio is `Again`.
    Async,
    /// May sleep on the folio lock.
    Sync,
}

/// Moves one movable folio into a free destination folio of the same
/// order (compaction's hook).  On `Err` the caller still owns `dst` and
/// frees it.
pub trait FolioMigrator<'a> {
    fn migrate_to(&self, src: Folio<'a>, dst: Folio<'a>) -> Result<(), MigrateError>;
}

/// The [`FolioMigrator`] over a set of address spaces (normally all of the
/// context's live ones).
pub struct MmMigrator<'m, 'a, A: PagingArch> {
    pub mms: &'m [&'m Mm<'a, A>],
    pub mode: MigrateMode,
}
