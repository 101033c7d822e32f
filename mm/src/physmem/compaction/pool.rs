//! The compaction destination pool (Linux 6.9+'s `cc->freepages[order]`):
//! free blocks the free scanner isolated, kept per order as it found
//! them, so a large source folio gets a destination of its own order
//! instead of the order-0 pages the pre-6.9 scanner split everything into.

use alloc::vec::Vec;

use crate::physmem::buddy::{MAX_ORDER, NR_ORDERS};

/// Isolated free blocks by order (pfns of block heads).  The blocks are
/// off the free lists (see `buddy/isolate.rs`); whatever is left when the
/// run ends goes back with [`FreePool::drain`].
#[derive(Default)]
pub struct FreePool {
    lists: [Vec<u64>; NR_ORDERS],
    pages: u64,
}

impl FreePool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the isolated block at `pfn` of `order`.
    pub fn add(&mut self, pfn: u64, order: u32) {
        self.lists[order as usize].push(pfn);
        self.pages += 1 << order;
    }

    /// Pages in the pool.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// True if some pooled block is `order` or larger.
    pub fn has(&self, order: u32) -> bool {
        (order..=MAX_ORDER).any(|o| !self.lists[o as usize].is_empty())
    }

    /// Takes a block of exactly `order` (Linux's `compaction_alloc`): the
    /// smallest pooled block of `order` or more, whose upper halves go
    /// back into the pool one order at a time.  Returns its pfn.
    pub fn take(&mut self, order: u32) -> Option<u64> {
        let from = (order..=MAX_ORDER).find(|&o| !self.lists[o as usize].is_empty())?;
        let pfn = self.lists[from as usize].pop()?;
        self.pages -= 1 << from;
        let mut o = from;
        while o > order {
            o -= 1;
            self.add(pfn + (1 << o), o);
        }
        Some(pfn)
    }

    /// Empties the pool: every block as (pfn, order).
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.pages = 0;
        self.lists
            .iter_mut()
            .enumerate()
            .flat_map(|(o, l)| l.drain(..).map(move |pfn| (pfn, o as u32)))
    }
}
