//! Reclaim's building blocks: the per-node anonymous LRU lists
//! ([`lru`]) and the young-bit harvesting that ages them
//! ([`crate::aspace::folio_referenced`], `MmCtx::shrink_active`,
//! `MmCtx::check_references`).  The reclaim loop itself (watermarks,
//! kswapd, direct reclaim) drives these.

pub mod lru;

pub use lru::{LRU_BATCH, Lru, LruCounts, LruList, LruPlace};
