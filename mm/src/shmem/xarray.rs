//! The page-cache index of a shmem object: a radix tree over page indices
//! with large folios as single (multi-index) entries, the shape of Linux's
//! xarray.
//!
//! Each node has 64 slots; a slot of a node at level `L` covers `64^L`
//! pages.  A folio of order `o` lives in the node at level `o / 6`, in
//! `2^(o mod 6)` consecutive slots: the first holds the folio (its head),
//! the others point back to it (siblings).  So a 4K folio is one level-0
//! slot, a 64K folio sixteen level-0 slots, a 2 MiB folio eight level-1
//! slots: a lookup is one slot per level (three for a 1 GiB object), where
//! a B-tree ordered by first index needed a predecessor search.  Nodes
//! that become empty are freed, so a node in a slot always holds an entry.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::physmem::folio::FolioRef;

const BITS: u32 = 6;
const FANOUT: usize = 1 << BITS;
const MASK: u64 = FANOUT as u64 - 1;

enum Slot<'a> {
    Empty,
    Node(Box<Node<'a>>),
    /// A folio whose first page this slot covers.
    Head(FolioRef<'a>),
    /// Covered by the folio in slot `.0` of the same node.
    Sibling(u8),
}

struct Node<'a> {
    slots: [Slot<'a>; FANOUT],
    /// Slots not `Empty`.
    used: u32,
}

impl<'a> Node<'a> {
    fn new() -> Box<Self> {
        Box::new(Node {
            slots: [const { Slot::Empty }; FANOUT],
            used: 0,
        })
    }
}

/// Page index → folio, large folios as one entry (see the module doc).
pub(crate) struct FolioIndex<'a> {
    root: Option<Box<Node<'a>>>,
    /// Levels of the tree: the root covers `64^height` pages.
    height: u32,
}

/// The slot of `index` in a node at `level`.
fn slot_of(index: u64, level: u32) -> usize {
    ((index >> (BITS * level)) & MASK) as usize
}

/// Pages one slot of a node at `level` covers.
fn span(level: u32) -> u64 {
    1u64 << (BITS * level)
}

impl<'a> FolioIndex<'a> {
    pub(crate) const fn new() -> Self {
        FolioIndex {
            root: None,
            height: 0,
        }
    }

    fn capacity(&self) -> u64 {
        if self.height == 0 {
            0
        } else {
            1u64.checked_shl(BITS * self.height).unwrap_or(u64::MAX)
        }
    }

    /// The folio caching page `index`, with its first index.
    pub(crate) fn find(&self, index: u64) -> Option<(u64, &FolioRef<'a>)> {
        if index >= self.capacity() {
            return None;
        }
        let mut node = self.root.as_deref()?;
        let mut level = self.height - 1;
        loop {
            let i = slot_of(index, level);
            let head = match &node.slots[i] {
                Slot::Empty => return None,
                Slot::Node(n) => {
                    node = n;
                    level -= 1;
                    continue;
                }
                Slot::Head(f) => f,
                Slot::Sibling(h) => match &node.slots[*h as usize] {
                    Slot::Head(f) => f,
                    _ => unreachable!("a sibling points at its head"),
                },
            };
            return Some((index & !(head.nr_pages() - 1), head));
        }
    }

    /// The folio whose first index is `first`.
    pub(crate) fn get(&self, first: u64) -> Option<&FolioRef<'a>> {
        self.find(first)
            .filter(|&(f, _)| f == first)
            .map(|(_, folio)| folio)
    }

    /// Whether any page of `[first, first + nr)` is cached.
    pub(crate) fn overlaps(&self, first: u64, nr: u64) -> bool {
        let end = first.saturating_add(nr).min(self.capacity());
        match self.root.as_deref() {
            Some(n) if first < end => any_in(n, self.height - 1, 0, first, end),
            _ => false,
        }
    }

    /// Insert `f` at its first index `first` (aligned to its size), or
    /// give it back if any of its pages is cached already.
    pub(crate) fn insert(&mut self, first: u64, f: FolioRef<'a>) -> Result<(), FolioRef<'a>> {
        let nr = f.nr_pages();
        debug_assert!(nr.is_power_of_two() && first.is_multiple_of(nr));
        // The descent decides: an entry above the folio's level, or any of
        // its slots in use (a node there holds something), is a conflict;
        // a node is made only below an empty slot, so nothing is made
        // before a conflict is found.
        let order = nr.trailing_zeros();
        let level = order / BITS;
        let count = 1usize << (order % BITS);
        // Grow until the root covers the folio and sits above its level.
        while self.height <= level || first.saturating_add(nr) > self.capacity() {
            // An empty old root (just made by this loop) is not kept.
            let old = self.root.take().filter(|o| o.used > 0);
            let mut root = Node::new();
            if let Some(o) = old {
                root.slots[0] = Slot::Node(o);
                root.used = 1;
            }
            self.root = Some(root);
            self.height += 1;
        }
        let mut node = self.root.as_deref_mut().expect("grown above");
        let mut l = self.height - 1;
        while l > level {
            let i = slot_of(first, l);
            if matches!(node.slots[i], Slot::Empty) {
                node.slots[i] = Slot::Node(Node::new());
                node.used += 1;
            }
            node = match &mut node.slots[i] {
                Slot::Node(n) => n,
                _ => return Err(f),
            };
            l -= 1;
        }
        let i = slot_of(first, level);
        if node.slots[i..i + count]
            .iter()
            .any(|s| !matches!(s, Slot::Empty))
        {
            return Err(f);
        }
        node.slots[i] = Slot::Head(f);
        for s in &mut node.slots[i + 1..i + count] {
            *s = Slot::Sibling(i as u8);
        }
        node.used += count as u32;
        Ok(())
    }

    /// Remove and return the folio whose first index is `first`.
    pub(crate) fn remove(&mut self, first: u64) -> Option<FolioRef<'a>> {
        if first >= self.capacity() {
            return None;
        }
        let height = self.height;
        let root = self.root.as_deref_mut()?;
        let f = remove_in(root, height - 1, first)?;
        if root.used == 0 {
            self.root = None;
            self.height = 0;
        }
        Some(f)
    }

    /// The first indices of the folios that start in `[start, end)`, in
    /// order.
    pub(crate) fn heads_in(&self, start: u64, end: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let end = end.min(self.capacity());
        if let Some(n) = self.root.as_deref()
            && start < end
        {
            heads(n, self.height - 1, 0, start, end, &mut out);
        }
        out
    }

    /// Every folio with its first index, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &FolioRef<'a>)> {
        self.heads_in(0, u64::MAX)
            .into_iter()
            .filter_map(move |i| self.get(i).map(|f| (i, f)))
    }
}

/// Whether node `n` (at `level`, first index `base`) holds anything in
/// `[start, end)`.
fn any_in(n: &Node<'_>, level: u32, base: u64, start: u64, end: u64) -> bool {
    let s = span(level);
    let lo = (start.max(base) - base) / s;
    let hi = (end - base).div_ceil(s).min(FANOUT as u64);
    (lo..hi).any(|i| match &n.slots[i as usize] {
        Slot::Empty => false,
        Slot::Node(c) => any_in(c, level - 1, base + i * s, start, end),
        Slot::Head(_) | Slot::Sibling(_) => true,
    })
}

/// The heads starting in `[start, end)` below node `n`, in order.
fn heads(n: &Node<'_>, level: u32, base: u64, start: u64, end: u64, out: &mut Vec<u64>) {
    let s = span(level);
    let lo = (start.max(base) - base) / s;
    let hi = (end - base).div_ceil(s).min(FANOUT as u64);
    for i in lo..hi {
        let at = base + i * s;
        match &n.slots[i as usize] {
            Slot::Node(c) => heads(c, level - 1, at, start, end, out),
            Slot::Head(_) if at >= start => out.push(at),
            _ => {}
        }
    }
}

/// Removes the head at `first` below node `n` (at `level`), freeing nodes
/// left empty.
fn remove_in<'a>(n: &mut Node<'a>, level: u32, first: u64) -> Option<FolioRef<'a>> {
    let i = slot_of(first, level);
    match &mut n.slots[i] {
        Slot::Node(c) => {
            let f = remove_in(c, level - 1, first)?;
            if c.used == 0 {
                n.slots[i] = Slot::Empty;
                n.used -= 1;
            }
            Some(f)
        }
        Slot::Head(f) if first.is_multiple_of(span(level)) => {
            let count = (f.nr_pages() >> (BITS * level)).max(1) as usize;
            let Slot::Head(f) = core::mem::replace(&mut n.slots[i], Slot::Empty) else {
                unreachable!("matched above")
            };
            for s in &mut n.slots[i + 1..i + count] {
                *s = Slot::Empty;
            }
            n.used -= count as u32;
            Some(f)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::SingleCpu;
    use crate::emu::EmuMem;
    use crate::physmem::buddy::{AllocFlags, BuddyAllocator};
    use crate::physmem::memmap::{FrameDesc, Memmap};
    use alloc::collections::BTreeMap;

    const BASE: u64 = 0x100_0000;
    const LEN: u64 = 32 << 20;

    /// Random inserts, lookups and removals of folios of orders 0..=9
    /// agree with a B-tree model (first index → pages).
    #[test]
    fn agrees_with_a_btree() {
        let d: Vec<FrameDesc> = (0..LEN >> 12).map(|_| FrameDesc::new()).collect();
        let mem = EmuMem::new(BASE, LEN);
        let a = BuddyAllocator::new(Memmap::new(&d, BASE >> 12), &mem, &SingleCpu);
        a.add_free_range(BASE, BASE + LEN);
        let mut x = FolioIndex::new();
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut seed = 0x1234_5678u64;
        let mut rnd = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let covered = |m: &BTreeMap<u64, u64>, i: u64| {
            m.range(..=i)
                .next_back()
                .filter(|&(&f, &n)| i < f + n)
                .map(|(&f, _)| f)
        };
        for _ in 0..300 {
            let order = [0u32, 0, 0, 2, 4, 6, 9][rnd(7) as usize];
            let nr = 1u64 << order;
            let first = rnd(1 << 12) & !(nr - 1);
            match rnd(3) {
                0 | 1 => {
                    let busy = (first..first + nr).any(|i| covered(&model, i).is_some());
                    let f = FolioRef::from_raw(a.alloc(order, AllocFlags::USER).unwrap());
                    match x.insert(first, f) {
                        Ok(()) => {
                            assert!(!busy, "inserted over a cached page at {first}");
                            model.insert(first, nr);
                        }
                        Err(f) => {
                            assert!(busy, "refused an empty range at {first}");
                            drop(f);
                        }
                    }
                }
                _ => {
                    let k = model
                        .keys()
                        .nth(rnd(model.len().max(1) as u64) as usize)
                        .copied();
                    if let Some(k) = k {
                        let f = x.remove(k).expect("cached");
                        assert_eq!(f.nr_pages(), model.remove(&k).unwrap());
                    }
                }
            }
            let probe = rnd(1 << 12);
            assert_eq!(x.find(probe).map(|(f, _)| f), covered(&model, probe));
            assert_eq!(
                x.overlaps(probe, 64),
                (probe..probe + 64).any(|i| covered(&model, i).is_some())
            );
        }
        let lo = 300;
        let hi = 3000;
        assert_eq!(
            x.heads_in(lo, hi),
            model.range(lo..hi).map(|(&k, _)| k).collect::<Vec<_>>()
        );
        let all: Vec<u64> = x.iter().map(|(k, _)| k).collect();
        assert_eq!(all, model.keys().copied().collect::<Vec<_>>());
        for k in all {
            assert!(x.remove(k).is_some(), "remove {k}");
        }
        assert!(x.heads_in(0, u64::MAX).is_empty());
        assert!(x.root.is_none() && x.height == 0);
    }
}
