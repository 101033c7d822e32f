//! Fragmentation indices, as Linux computes them from the free lists
//! (mm/vmstat.c: `fill_contig_page_info`, `__fragmentation_index`,
//! `unusable_free_index`, `extfrag_for_order`), and their debugfs text
//! (`/sys/kernel/debug/extfrag/{unusable_index,extfrag_index}`).
//!
//! All values are integers in thousandths (indices) or percent (the
//! proactive score), as in Linux; the text prints thousandths as
//! `d.ddd`.

use alloc::string::String;
use core::fmt::Write as _;

use crate::physmem::buddy::{FreeCounts, MAX_ORDER};

/// Linux's `struct contig_page_info` for one order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContigInfo {
    /// Free pages.
    pub free_pages: u64,
    /// Free blocks of any order.
    pub free_blocks_total: u64,
    /// Blocks of the requested order the free blocks of that order or
    /// larger would make.
    pub free_blocks_suitable: u64,
}

/// The free-list summary for a request of `order`.
pub fn contig_info(counts: &FreeCounts, order: u32) -> ContigInfo {
    let mut i = ContigInfo::default();
    for (o, &n) in counts.iter().enumerate() {
        i.free_blocks_total += n;
        i.free_pages += n << o;
        if o as u32 >= order {
            i.free_blocks_suitable += n << (o as u32 - order);
        }
    }
    i
}

/// Linux's fragmentation index for `order`, in thousandths: -1000 when
/// an allocation of `order` would succeed now; otherwise towards 0 a
/// failure would be for lack of memory, towards 1000 for fragmentation.
/// 0 with no free memory at all.
pub fn fragmentation_index(counts: &FreeCounts, order: u32) -> i32 {
    let i = contig_info(counts, order);
    if i.free_blocks_total == 0 {
        return 0;
    }
    if i.free_blocks_suitable != 0 {
        return -1000;
    }
    let requested = 1u64 << order;
    1000 - ((1000 + i.free_pages * 1000 / requested) / i.free_blocks_total) as i32
}

/// Linux's unusable free space index for `order`, in thousandths: the
/// share of free memory in blocks smaller than `order` (1000 with no
/// free memory).
pub fn unusable_index(counts: &FreeCounts, order: u32) -> u32 {
    let i = contig_info(counts, order);
    if i.free_pages == 0 {
        return 1000;
    }
    ((i.free_pages - (i.free_blocks_suitable << order)) * 1000 / i.free_pages) as u32
}

/// Linux's `extfrag_for_order`: the percentage of free memory unusable
/// for `order` (0 with no free memory).  Proactive compaction's score.
pub fn extfrag_for_order(counts: &FreeCounts, order: u32) -> u32 {
    let i = contig_info(counts, order);
    if i.free_pages == 0 {
        return 0;
    }
    ((i.free_pages - (i.free_blocks_suitable << order)) * 100 / i.free_pages) as u32
}

/// A zone's weighted share of its node's fragmentation score (Linux's
/// `fragmentation_score_zone_weighted`): `score * zone_present /
/// (node_present + 1)`.
pub fn weighted_score(score: u32, zone_present: u64, node_present: u64) -> u32 {
    (score as u64 * zone_present / (node_present + 1)) as u32
}

/// The proactive thresholds for `proactiveness` (Linux's
/// `fragmentation_score_wmark`): compaction starts above `high` and
/// stops at or below `low`.
pub fn score_wmarks(proactiveness: u32) -> (u32, u32) {
    let low = 100u32.saturating_sub(proactiveness).max(5);
    (low, (low + 10).min(100))
}

fn line(node: usize, zone: &str, mut f: impl FnMut(&mut String, u32)) -> String {
    let mut s = String::new();
    let _ = write!(s, "Node {node}, zone {zone:>8} ");
    for o in 0..=MAX_ORDER {
        f(&mut s, o);
    }
    s.push('\n');
    s
}

/// One zone's line of `/sys/kernel/debug/extfrag/unusable_index`:
/// `Node 0, zone   Normal 0.000 0.250 ...` (Linux prints `%d.%03d `).
pub fn unusable_index_text(counts: &FreeCounts, node: usize, zone: &str) -> String {
    line(node, zone, |s, o| {
        let v = unusable_index(counts, o);
        let _ = write!(s, "{}.{:03} ", v / 1000, v % 1000);
    })
}

/// One zone's line of `/sys/kernel/debug/extfrag/extfrag_index`:
/// `Node 0, zone   Normal -1.000 -1.000  0.873 ...` (Linux prints
/// `%2d.%03d `, with C's truncating division: an index between -1000
/// and 0, possible with few free blocks, prints as Linux prints it).
pub fn extfrag_index_text(counts: &FreeCounts, node: usize, zone: &str) -> String {
    line(node, zone, |s, o| {
        let v = fragmentation_index(counts, o);
        let _ = write!(s, "{:2}.{:03} ", v / 1000, v % 1000);
    })
}
