//! Finding the mappings of a folio: in one address space
//! (`count_own_mappings`, for the walk's first pass) and across
//! every address space that may map it ([`rmap_walk`], which takes their
//! page-table locks so the mappings cannot change until the caller is
//! done).  See the module docs of `rmap` for where the candidates come
//! from.

use alloc::vec::Vec;

use crate::abi::errno::Errno;
use crate::addr::{PAGE_SIZE, PMD_SIZE};
use crate::aspace::{Mm, PtGuard};
use crate::paging::{PageTable, PagingArch};
use crate::physmem::folio::Folio;

impl<'a, A: PagingArch> Mm<'a, A> {
    /// Entries of this space mapping frames of `f`, looked for in the
    /// folio-sized windows at `start` and at the rmap owner's address (if
    /// this space owns `f`): where the fault finds the folio and where
    /// mremap last put it.
    pub(crate) fn count_own_mappings(
        &self,
        pt: &PageTable<'a, A>,
        f: Folio<'a>,
        start: u64,
    ) -> u64 {
        let size = f.size();
        let mut windows = [(start, start.saturating_add(size)), (0, 0)];
        if let Some((id, vpn)) = f.anon_owner()
            && id == self.id
        {
            let o = vpn << crate::addr::PAGE_SHIFT;
            let (lo, hi) = (o, o.saturating_add(size));
            if hi <= windows[0].0 || lo >= windows[0].1 {
                windows[1] = (lo, hi);
            } else {
                windows[0] = (lo.min(windows[0].0), hi.max(windows[0].1));
            }
        }
        windows
            .iter()
            .map(|&(lo, hi)| self.count_mappings_in(pt, f, lo, hi))
            .sum()
    }

    /// Entries of this space in `[lo, hi)` mapping frames of `f` (a PMD
    /// leaf counts once, if its first page lies in the range).
    fn count_mappings_in(&self, pt: &PageTable<'a, A>, f: Folio<'a>, lo: u64, hi: u64) -> u64 {
        let frames = f.pfn()..f.pfn() + f.nr_pages();
        crate::aspace::count_leaves(
            pt,
            lo,
            hi,
            |start, l| l.pfn == f.pfn() && start.is_multiple_of(PMD_SIZE),
            |_, l| frames.contains(&l.pfn),
        )
    }
}

/// Mappings of `folio` in `pt` in place: page `i` at `va + i` pages, or a
/// PMD leaf of the whole folio at `va`.  These are what a split unmaps and
/// remaps; a mapping anywhere else (part of the folio moved by mremap) is
/// not counted, so the split refuses with EBUSY instead of leaving it
/// mapped.
fn count_in_place<'a, A: PagingArch>(pt: &PageTable<'a, A>, folio: Folio<'a>, va: u64) -> u64 {
    let end = va + folio.nr_pages() * PAGE_SIZE;
    crate::aspace::count_leaves(
        pt,
        va,
        end,
        |start, l| start == va && va.is_multiple_of(PMD_SIZE) && l.pfn == folio.pfn(),
        |at, l| l.pfn == folio.pfn() + (at - va) / PAGE_SIZE,
    )
}

/// A list whose first element lives inline: the walk of a folio that one
/// space maps (reclaim, migration and `MADV_PAGEOUT` of private memory,
/// the common case) allocates nothing; each of its two vectors had cost
/// an allocation and a free per folio (6.5% of a 4K swap-out).  Elements
/// are kept, iterated and dropped in push order, as in a `Vec`.
pub(crate) struct Few<T> {
    /// Element 0; `None` only when the list is empty.
    first: Option<T>,
    /// Elements 1 and on.
    rest: Vec<T>,
}

impl<T> Few<T> {
    pub(crate) const fn new() -> Self {
        Few {
            first: None,
            rest: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, v: T) {
        if self.first.is_none() {
            debug_assert!(self.rest.is_empty());
            self.first = Some(v);
        } else {
            self.rest.push(v);
        }
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(self.rest.iter())
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.first.iter_mut().chain(self.rest.iter_mut())
    }

    /// Drops every element, in push order.
    pub(crate) fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }
}

impl<T> Extend<T> for Few<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        for v in items {
            self.push(v);
        }
    }
}

impl<T> FromIterator<T> for Few<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut few = Few::new();
        few.extend(items);
        few
    }
}

impl<T> core::ops::Index<usize> for Few<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        match i {
            0 => self.first.as_ref().expect("index within the list"),
            _ => &self.rest[i - 1],
        }
    }
}

impl<T> core::ops::IndexMut<usize> for Few<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        match i {
            0 => self.first.as_mut().expect("index within the list"),
            _ => &mut self.rest[i - 1],
        }
    }
}

/// The address spaces that map a folio, with their page-table locks held
/// (taken in ascending mm-id order), and every mapping of the folio found
/// in them: until this is dropped, no mapping of the folio can appear,
/// vanish or change.
pub(crate) struct RmapWalk<'m, 'a, A: PagingArch> {
    /// The spaces mapping the folio, ascending mm id.
    pub(crate) mappers: Few<&'m Mm<'a, A>>,
    /// Their page-table locks, index for index with `mappers`.
    pub(crate) guards: Few<PtGuard<'m, 'a, A>>,
    /// Where the folio's first page is mapped (its rmap owner address).
    pub(crate) va: u64,
}

/// Finds and locks every address space of `mms` that maps `folio` at `va`
/// (its rmap owner address), and checks that the mappings found there are
/// all the folio has.
///
/// Page-table locks are spin locks held with preemption off
/// ([`crate::sync::PtLock`]), taken in ascending mm-id order; the
/// caller holds none.  Which
/// spaces map the folio is first a snapshot, one space at a time; under
/// all their locks the in-place mappings are counted again, and if they do
/// not add up to the folio's large mapcount (some mapping is in a space
/// not in `mms`, or not in place) the walk fails with EBUSY.
pub(crate) fn rmap_walk<'m, 'a, A: PagingArch>(
    mms: &[&'m Mm<'a, A>],
    folio: Folio<'a>,
    va: u64,
) -> Result<RmapWalk<'m, 'a, A>, Errno> {
    if let [m] = mms {
        // One candidate space (move_pages of a process's own folios, NUMA
        // balancing): one lock round.  Counting in place under the lock
        // decides alike: a mapping anywhere else, in this space or
        // another, leaves the count short of the mapcount.
        let g = m.lock_pt();
        let found = count_in_place(&g, folio, va);
        if found != folio.large_mapcount() as u64 {
            return Err(Errno::EBUSY);
        }
        let (mut mappers, mut guards) = (Few::new(), Few::new());
        if found > 0 {
            mappers.push(*m);
            guards.push(g);
        }
        return Ok(RmapWalk {
            mappers,
            guards,
            va,
        });
    }
    let mut mappers: Vec<&'m Mm<'a, A>> = Vec::new();
    for &m in mms {
        if m.count_own_mappings(&m.lock_pt(), folio, va) > 0 {
            mappers.push(m);
        }
    }
    mappers.sort_by_key(|m| m.id);
    mappers.dedup_by_key(|m| m.id);
    let guards: Few<PtGuard<'m, 'a, A>> = mappers.iter().map(|m| m.lock_pt()).collect();
    let found: u64 = guards.iter().map(|g| count_in_place(g, folio, va)).sum();
    if found != folio.large_mapcount() as u64 {
        return Err(Errno::EBUSY);
    }
    Ok(RmapWalk {
        mappers: mappers.into_iter().collect(),
        guards,
        va,
    })
}
