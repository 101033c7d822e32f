//! NUMA nodes: which node each physical range and each CPU belongs to, and
//! how far the nodes are from each other.
//!
//! The arch boot code fills a [`NodeMap`] from the firmware (x86: the ACPI
//! SRAT and SLIT; arm64: the device tree's `numa-node-id` properties and
//! `/distance-map`), with node ids given in order of first appearance of
//! the firmware's proximity domains, as Linux numbers them.  Without any
//! NUMA information (or with `numa=off`) the map is one node 0 holding all
//! memory and every CPU.  The allocator keeps one zone per node (see
//! [`crate::physmem::buddy`]), and asks the map for a frame's node, a CPU's
//! node and the order in which to fall back to other nodes.
//!
//! Fixed-size arrays only: the map is built before any allocator exists.

use crate::addr::PAGE_SHIFT;
use crate::cpu::MAX_CPUS;

/// Most nodes the kernel handles (Linux's `MAX_NUMNODES` is configurable;
/// 8 covers what QEMU test machines use).
pub const MAX_NUMNODES: usize = 8;
/// Most distinct memory ranges a node map records.
pub const MAX_NODE_RANGES: usize = 16;
/// SLIT distance of a node to itself, and to another node when the
/// firmware gives no distances (Linux's `LOCAL_DISTANCE`,
/// `REMOTE_DISTANCE`).
pub const LOCAL_DISTANCE: u8 = 10;
pub const REMOTE_DISTANCE: u8 = 20;

/// A half-open frame range `[start_pfn, end_pfn)` on `node`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeRange {
    pub start_pfn: u64,
    pub end_pfn: u64,
    pub node: u8,
}

/// The machine's NUMA layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeMap {
    nr_nodes: usize,
    /// Memory ranges, sorted by start, not overlapping.
    ranges: [NodeRange; MAX_NODE_RANGES],
    nr_ranges: usize,
    /// Node of each CPU id (0 for CPUs the firmware did not place).
    cpu_node: [u8; MAX_CPUS],
    /// `distance[a][b]`, the SLIT row of `a`.
    distance: [[u8; MAX_NUMNODES]; MAX_NUMNODES],
    /// For each node, every node in the order an allocation preferring it
    /// falls back: itself first, then by increasing distance (ties by id),
    /// as Linux builds its zonelists.
    fallback: [[u8; MAX_NUMNODES]; MAX_NUMNODES],
}

impl Default for NodeMap {
    fn default() -> Self {
        Self::single()
    }
}

/// Why a firmware description was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeMapError {
    /// More nodes than [`MAX_NUMNODES`].
    TooManyNodes,
    /// More ranges than [`MAX_NODE_RANGES`].
    TooManyRanges,
    /// Two ranges overlap.
    Overlap,
    /// A node number beyond the nodes declared.
    BadNode,
    /// A distance table whose local distance is not 10 or a remote one not above 10.
    BadDistance,
}

impl NodeMap {
    /// One node 0 with everything, distance 10.
    pub const fn single() -> Self {
        let mut m = Self {
            nr_nodes: 1,
            ranges: [NodeRange {
                start_pfn: 0,
                end_pfn: 0,
                node: 0,
            }; MAX_NODE_RANGES],
            nr_ranges: 0,
            cpu_node: [0; MAX_CPUS],
            distance: [[REMOTE_DISTANCE; MAX_NUMNODES]; MAX_NUMNODES],
            fallback: [[0; MAX_NUMNODES]; MAX_NUMNODES],
        };
        let mut i = 0;
        while i < MAX_NUMNODES {
            m.distance[i][i] = LOCAL_DISTANCE;
            i += 1;
        }
        m
    }

    /// A map of `nr_nodes` nodes with default distances and no ranges yet.
    pub fn new(nr_nodes: usize) -> Result<Self, NodeMapError> {
        if nr_nodes == 0 || nr_nodes > MAX_NUMNODES {
            return Err(NodeMapError::TooManyNodes);
        }
        let mut m = Self::single();
        m.nr_nodes = nr_nodes;
        m.build_fallback();
        Ok(m)
    }

    /// Records that physical `[start, end)` belongs to `node` (whole frames
    /// only; empty ranges are ignored).  Keeps the ranges sorted.
    pub fn add_mem(&mut self, start: u64, end: u64, node: usize) -> Result<(), NodeMapError> {
        if node >= self.nr_nodes {
            return Err(NodeMapError::BadNode);
        }
        let (s, e) = (start.div_ceil(1 << PAGE_SHIFT), end >> PAGE_SHIFT);
        if s >= e {
            return Ok(());
        }
        if self
            .ranges()
            .iter()
            .any(|r| s < r.end_pfn && r.start_pfn < e)
        {
            return Err(NodeMapError::Overlap);
        }
        if self.nr_ranges == MAX_NODE_RANGES {
            return Err(NodeMapError::TooManyRanges);
        }
        let at = self.ranges().iter().take_while(|r| r.start_pfn < s).count();
        self.ranges.copy_within(at..self.nr_ranges, at + 1);
        self.ranges[at] = NodeRange {
            start_pfn: s,
            end_pfn: e,
            node: node as u8,
        };
        self.nr_ranges += 1;
        Ok(())
    }

    /// Places CPU `cpu` on `node` (ids beyond `MAX_CPUS` are ignored).
    pub fn set_cpu_node(&mut self, cpu: usize, node: usize) -> Result<(), NodeMapError> {
        if node >= self.nr_nodes {
            return Err(NodeMapError::BadNode);
        }
        if let Some(c) = self.cpu_node.get_mut(cpu) {
            *c = node as u8;
        }
        Ok(())
    }

    /// Sets the whole distance table (row-major, `nr_nodes` squared
    /// entries), checked as Linux checks a SLIT or a distance map: the
    /// local distance is 10, a remote one above 10.
    pub fn set_distances(&mut self, d: &[u8]) -> Result<(), NodeMapError> {
        let n = self.nr_nodes;
        if d.len() != n * n {
            return Err(NodeMapError::BadDistance);
        }
        for a in 0..n {
            for b in 0..n {
                let v = d[a * n + b];
                if (a == b && v != LOCAL_DISTANCE) || (a != b && v <= LOCAL_DISTANCE) {
                    return Err(NodeMapError::BadDistance);
                }
            }
        }
        for a in 0..n {
            for b in 0..n {
                self.distance[a][b] = d[a * n + b];
            }
        }
        self.build_fallback();
        Ok(())
    }

    fn build_fallback(&mut self) {
        let n = self.nr_nodes;
        for a in 0..n {
            let mut order = [0u8; MAX_NUMNODES];
            for (i, o) in order.iter_mut().enumerate().take(n) {
                *o = i as u8;
            }
            // Itself first (distance 10 is the minimum), then by distance, ties by id.
            order[..n].sort_by_key(|&b| (b as usize != a, self.distance[a][b as usize], b));
            self.fallback[a] = order;
        }
    }

    /// Number of nodes (at least 1).
    #[inline]
    pub fn nr_nodes(&self) -> usize {
        self.nr_nodes
    }

    /// The memory ranges, sorted.
    pub fn ranges(&self) -> &[NodeRange] {
        &self.ranges[..self.nr_ranges]
    }

    /// The node of frame `pfn`: the range holding it, else the nearest
    /// range below it (frames the firmware did not describe, such as the
    /// PC's low megabyte, go with their neighbours), else node 0.
    #[inline]
    pub fn node_of_pfn(&self, pfn: u64) -> usize {
        if self.nr_nodes == 1 {
            return 0;
        }
        let mut node = self.ranges.first().map_or(0, |r| r.node);
        for r in self.ranges() {
            if r.start_pfn > pfn {
                break;
            }
            node = r.node;
        }
        node as usize
    }

    /// The first frame above `pfn` where the node may change (the start
    /// of the next range), or `u64::MAX`: `[pfn, node_run_end(pfn))` is
    /// all on `node_of_pfn(pfn)`.
    pub fn node_run_end(&self, pfn: u64) -> u64 {
        if self.nr_nodes == 1 {
            return u64::MAX;
        }
        self.ranges()
            .iter()
            .map(|r| r.start_pfn)
            .find(|&s| s > pfn)
            .unwrap_or(u64::MAX)
    }

    /// The node of CPU `cpu` (0 for ids beyond `MAX_CPUS`).
    #[inline]
    pub fn cpu_node(&self, cpu: usize) -> usize {
        self.cpu_node.get(cpu).map_or(0, |&n| n as usize)
    }

    /// SLIT distance from `a` to `b`.
    pub fn distance(&self, a: usize, b: usize) -> u8 {
        self.distance[a][b]
    }

    /// The nodes an allocation preferring `node` tries, in order.
    pub fn fallback(&self, node: usize) -> &[u8] {
        &self.fallback[node][..self.nr_nodes]
    }

    /// Frames of `node` described by the firmware (holes included).
    pub fn node_span_pages(&self, node: usize) -> u64 {
        self.ranges()
            .iter()
            .filter(|r| r.node as usize == node)
            .map(|r| r.end_pfn - r.start_pfn)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_maps_everything_to_node_0() {
        let m = NodeMap::single();
        assert_eq!(m.nr_nodes(), 1);
        assert_eq!(m.node_of_pfn(12345), 0);
        assert_eq!(m.cpu_node(3), 0);
        assert_eq!(m.fallback(0), &[0]);
    }

    #[test]
    fn ranges_sorted_and_looked_up() {
        let mut m = NodeMap::new(2).unwrap();
        m.add_mem(0x1000_0000, 0x2000_0000, 1).unwrap();
        m.add_mem(0x10_0000, 0x1000_0000, 0).unwrap();
        assert_eq!(m.ranges()[0].node, 0);
        assert_eq!(m.node_of_pfn(0x100), 0);
        assert_eq!(m.node_of_pfn(0x1000_0000 >> 12), 1);
        assert_eq!(m.node_of_pfn(0x1fff_ffff >> 12), 1);
        // Below every range: the first range's node.
        assert_eq!(m.node_of_pfn(0), 0);
        assert_eq!(
            m.add_mem(0x1800_0000, 0x1900_0000, 0),
            Err(NodeMapError::Overlap)
        );
        assert_eq!(m.add_mem(0, 0x1000, 2), Err(NodeMapError::BadNode));
        assert_eq!(m.node_span_pages(1), 0x10000);
    }

    #[test]
    fn fallback_follows_distance() {
        let mut m = NodeMap::new(3).unwrap();
        m.set_distances(&[10, 30, 20, 30, 10, 40, 20, 40, 10])
            .unwrap();
        assert_eq!(m.fallback(0), &[0, 2, 1]);
        assert_eq!(m.fallback(1), &[1, 0, 2]);
        assert_eq!(m.fallback(2), &[2, 0, 1]);
        assert_eq!(
            m.set_distances(&[10, 10, 10, 10, 10, 10, 10, 10, 10]),
            Err(NodeMapError::BadDistance)
        );
        // Default distances: ties by id.
        let d = NodeMap::new(3).unwrap();
        assert_eq!(d.fallback(2), &[2, 0, 1]);
        assert_eq!(d.distance(0, 1), REMOTE_DISTANCE);
    }
}
