//! NUMA memory policies (Linux's `struct mempolicy`, notes §6.2–6.3):
//! the modes and mode flags of `set_mempolicy(2)` / `mbind(2)`, Linux's
//! validation (`mpol_new`), and where a policy sends an allocation.
//!
//! A policy is small and `Copy` (mode, user-visible flags, a node mask of
//! at most [`MAX_NUMNODES`] bits) so a VMA carries it by value and an
//! address space keeps its task policy in one atomic word
//! ([`Mempolicy::pack`]): the fault path reads it without a lock, and the
//! default policy (no policy) costs one load.

use crate::abi::errno::Errno;
use crate::physmem::node::MAX_NUMNODES;

/// `MPOL_*` modes (`include/uapi/linux/mempolicy.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MpolMode {
    Default = 0,
    Preferred = 1,
    Bind = 2,
    Interleave = 3,
    Local = 4,
    PreferredMany = 5,
    WeightedInterleave = 6,
}

/// One past the last mode (`MPOL_MAX`).
pub const MPOL_MAX: u32 = 7;
/// Mode flags ORed into the mode argument.
pub const MPOL_F_STATIC_NODES: u32 = 1 << 15;
pub const MPOL_F_RELATIVE_NODES: u32 = 1 << 14;
pub const MPOL_F_NUMA_BALANCING: u32 = 1 << 13;
/// Every mode flag.
pub const MPOL_MODE_FLAGS: u32 =
    MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING;

impl MpolMode {
    pub const fn from_u32(m: u32) -> Option<Self> {
        Some(match m {
            0 => Self::Default,
            1 => Self::Preferred,
            2 => Self::Bind,
            3 => Self::Interleave,
            4 => Self::Local,
            5 => Self::PreferredMany,
            6 => Self::WeightedInterleave,
            _ => return None,
        })
    }

    /// Interleaving modes (all weights are 1 here, so weighted
    /// interleave places folios as plain interleave does).
    pub const fn interleaves(self) -> bool {
        matches!(self, Self::Interleave | Self::WeightedInterleave)
    }
}

/// A set of node ids (bit `n` = node `n`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeMask(pub u32);

const _: () = assert!(MAX_NUMNODES <= 32, "a node mask is 32 bits");

impl NodeMask {
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn contains(self, n: usize) -> bool {
        n < 32 && self.0 & (1 << n) != 0
    }
    pub const fn weight(self) -> u32 {
        self.0.count_ones()
    }
    pub const fn first(self) -> Option<usize> {
        if self.0 == 0 {
            None
        } else {
            Some(self.0.trailing_zeros() as usize)
        }
    }
    /// The `i`-th node of the mask (`i < weight`).
    pub fn nth(self, i: u32) -> Option<usize> {
        let mut m = self.0;
        for _ in 0..i {
            m &= m.wrapping_sub(1);
        }
        (m != 0).then(|| m.trailing_zeros() as usize)
    }
    pub const fn and(self, o: NodeMask) -> NodeMask {
        NodeMask(self.0 & o.0)
    }
    /// The nodes as Linux prints a list (`0-1`, `0,2`).
    pub fn fmt_list(self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let mut first = true;
        let mut n = 0;
        while n < 32 {
            if !self.contains(n) {
                n += 1;
                continue;
            }
            let mut e = n;
            while e + 1 < 32 && self.contains(e + 1) {
                e += 1;
            }
            if !first {
                out.write_char(',')?;
            }
            first = false;
            if e == n {
                write!(out, "{n}")?;
            } else {
                write!(out, "{n}-{e}")?;
            }
            n = e + 1;
        }
        Ok(())
    }
}

/// A memory policy other than the default one (the default is `None`
/// wherever a policy is optional).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mempolicy {
    pub mode: MpolMode,
    /// The user-visible mode flags (`MPOL_F_*_NODES`, `MPOL_F_NUMA_BALANCING`).
    pub flags: u32,
    /// The nodes (empty for `Local`).
    pub nodes: NodeMask,
}

impl Mempolicy {
    /// Linux's `sanitize_mpol_flags`: the checks of the mode argument
    /// alone, made before the node mask is even read.
    pub fn check_mode(mode_arg: u32) -> Result<(), Errno> {
        let flags = mode_arg & MPOL_MODE_FLAGS;
        let Some(mode) = MpolMode::from_u32(mode_arg & !MPOL_MODE_FLAGS) else {
            return Err(Errno::EINVAL);
        };
        if flags & MPOL_F_STATIC_NODES != 0 && flags & MPOL_F_RELATIVE_NODES != 0 {
            return Err(Errno::EINVAL);
        }
        if flags & MPOL_F_NUMA_BALANCING != 0
            && !matches!(mode, MpolMode::Bind | MpolMode::PreferredMany)
        {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Linux's `mpol_new` plus the argument checks of `sanitize_mpol_flags`
    /// for `mode_arg` (mode | flags) and the user's node mask, with
    /// `memory` the nodes that have memory.  `Ok(None)` is the default
    /// policy.
    pub fn new(
        mode_arg: u32,
        user_nodes: NodeMask,
        memory: NodeMask,
    ) -> Result<Option<Self>, Errno> {
        Self::check_mode(mode_arg)?;
        let flags = mode_arg & MPOL_MODE_FLAGS;
        let Some(mut mode) = MpolMode::from_u32(mode_arg & !MPOL_MODE_FLAGS) else {
            return Err(Errno::EINVAL);
        };
        if mode == MpolMode::Default {
            return if user_nodes.is_empty() {
                Ok(None)
            } else {
                Err(Errno::EINVAL)
            };
        }
        if user_nodes.is_empty() {
            match mode {
                MpolMode::Preferred => {
                    if flags & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES) != 0 {
                        return Err(Errno::EINVAL);
                    }
                    mode = MpolMode::Local;
                }
                MpolMode::Local => {}
                _ => return Err(Errno::EINVAL),
            }
        } else if mode == MpolMode::Local {
            return Err(Errno::EINVAL);
        }
        if mode == MpolMode::Local {
            if flags != 0 {
                return Err(Errno::EINVAL);
            }
            return Ok(Some(Self {
                mode,
                flags,
                nodes: NodeMask(0),
            }));
        }
        let nodes = user_nodes.and(memory);
        if nodes.is_empty() {
            return Err(Errno::EINVAL);
        }
        let nodes = match mode {
            // Preferred keeps only its first node (`mpol_new_preferred`).
            MpolMode::Preferred => NodeMask(1 << nodes.first().unwrap_or(0)),
            _ => nodes,
        };
        Ok(Some(Self { mode, flags, nodes }))
    }

    /// The mode as `get_mempolicy` reports it: mode | user-visible flags.
    pub fn user_mode(this: Option<Self>) -> u32 {
        this.map_or(0, |p| p.mode as u32 | p.flags)
    }

    /// One word: nodes in bits 0..32, mode in 32..40, the flags (shifted
    /// down by 13) in 40..43; 0 is the default policy.
    pub const fn pack(this: Option<Self>) -> u64 {
        match this {
            None => 0,
            Some(p) => {
                p.nodes.0 as u64 | ((p.mode as u64) << 32) | (((p.flags >> 13) as u64) << 40)
            }
        }
    }

    /// Inverse of [`Self::pack`].
    pub const fn unpack(w: u64) -> Option<Self> {
        if w == 0 {
            return None;
        }
        let Some(mode) = MpolMode::from_u32(((w >> 32) & 0xff) as u32) else {
            return None;
        };
        Some(Self {
            mode,
            flags: (((w >> 40) & 0x7) as u32) << 13,
            nodes: NodeMask(w as u32),
        })
    }

    /// The node an allocation of `order` for the page at `addr` of a VMA
    /// starting at `vma_start` with page offset `pgoff` should come from,
    /// and whether it must stay within the policy's nodes (`Bind`), given
    /// the running CPU's node `local`.  Interleave is per folio, as
    /// Linux: the index counts folios of this order from the VMA's
    /// original start (`pgoff`), so consecutive 64K folios alternate.
    pub fn target(
        &self,
        addr: u64,
        vma_start: u64,
        pgoff: u64,
        order: u32,
        local: usize,
    ) -> Target {
        match self.mode {
            MpolMode::Default | MpolMode::Local => Target::prefer(local),
            MpolMode::Preferred | MpolMode::PreferredMany => {
                if self.nodes.contains(local) {
                    Target::prefer(local)
                } else {
                    Target::prefer(self.nodes.first().unwrap_or(local))
                }
            }
            MpolMode::Bind => Target {
                node: if self.nodes.contains(local) {
                    local
                } else {
                    self.nodes.first().unwrap_or(local)
                },
                only: Some(self.nodes),
            },
            MpolMode::Interleave | MpolMode::WeightedInterleave => {
                let ilx =
                    (pgoff >> order) + ((addr - vma_start) >> (crate::addr::PAGE_SHIFT + order));
                let w = self.nodes.weight().max(1) as u64;
                let node = self.nodes.nth((ilx % w) as u32).unwrap_or(local);
                Target::prefer(node)
            }
        }
    }

    /// Whether node `n` is where this policy would accept a page
    /// (`mbind(MPOL_MF_STRICT)`'s "misplaced" test): any node for the
    /// preferring and local modes, the mask for `Bind` and interleave.
    pub fn allows(&self, n: usize) -> bool {
        match self.mode {
            MpolMode::Bind | MpolMode::Interleave | MpolMode::WeightedInterleave => {
                self.nodes.contains(n)
            }
            _ => true,
        }
    }
}

/// Where an allocation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The node tried first.
    pub node: usize,
    /// `Some`: only these nodes (`Bind`); `None`: any, by distance.
    pub only: Option<NodeMask>,
}

impl Target {
    pub const fn prefer(node: usize) -> Self {
        Self { node, only: None }
    }
}

impl super::VmaSet {
    /// Gives `[start, end)`, which lies inside one VMA, the policy `pol`
    /// (splitting that VMA as needed), then merges it with equal
    /// neighbours.
    pub(crate) fn set_policy(&mut self, start: u64, end: u64, pol: Option<Mempolicy>) {
        self.split_at(start);
        self.split_at(end);
        if let Some(v) = self.map.get_mut(&start) {
            debug_assert_eq!(v.end, end);
            v.policy = pol;
        }
        self.merge_range(start, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEM2: NodeMask = NodeMask(0b11);

    #[test]
    fn new_follows_linux_rules() {
        assert_eq!(Mempolicy::new(0, NodeMask(0), MEM2), Ok(None));
        assert_eq!(Mempolicy::new(0, NodeMask(1), MEM2), Err(Errno::EINVAL));
        assert_eq!(Mempolicy::new(99, NodeMask(1), MEM2), Err(Errno::EINVAL));
        let p = Mempolicy::new(1, NodeMask(0), MEM2).unwrap().unwrap();
        assert_eq!(p.mode, MpolMode::Local, "empty PREFERRED is LOCAL");
        assert_eq!(
            Mempolicy::new(1 | MPOL_F_STATIC_NODES, NodeMask(0), MEM2),
            Err(Errno::EINVAL)
        );
        assert_eq!(Mempolicy::new(2, NodeMask(0), MEM2), Err(Errno::EINVAL));
        assert_eq!(Mempolicy::new(4, NodeMask(1), MEM2), Err(Errno::EINVAL));
        assert_eq!(
            Mempolicy::new(2, NodeMask(0b100), MEM2),
            Err(Errno::EINVAL),
            "no memory"
        );
        assert_eq!(
            Mempolicy::new(3 | MPOL_F_NUMA_BALANCING, NodeMask(1), MEM2),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            Mempolicy::new(
                MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES | 2,
                NodeMask(1),
                MEM2
            ),
            Err(Errno::EINVAL)
        );
        let b = Mempolicy::new(2 | MPOL_F_STATIC_NODES, NodeMask(0b111), MEM2)
            .unwrap()
            .unwrap();
        assert_eq!(b.nodes, MEM2, "masked to nodes with memory");
        assert_eq!(Mempolicy::user_mode(Some(b)), 2 | MPOL_F_STATIC_NODES);
        assert_eq!(Mempolicy::unpack(Mempolicy::pack(Some(b))), Some(b));
        assert_eq!(Mempolicy::unpack(Mempolicy::pack(None)), None);
    }

    #[test]
    fn interleave_is_per_folio() {
        let p = Mempolicy::new(3, MEM2, MEM2).unwrap().unwrap();
        let start = 0x4000_0000;
        let pg = start >> 12;
        let node = |off: u64, order: u32| p.target(start + off, start, pg, order, 0).node;
        // 64K folios alternate; the 16 pages of one folio share a node.
        assert_eq!(node(0, 4), 0);
        assert_eq!(node(0xf000, 4), 0);
        assert_eq!(node(0x1_0000, 4), 1);
        assert_eq!(node(0x2_0000, 4), 0);
        // 4K pages alternate page by page.
        assert_eq!(node(0x1000, 0), 1);
    }

    #[test]
    fn bind_stays_in_mask() {
        let p = Mempolicy::new(2, NodeMask(0b10), MEM2).unwrap().unwrap();
        let t = p.target(0, 0, 0, 0, 0);
        assert_eq!(
            t,
            Target {
                node: 1,
                only: Some(NodeMask(0b10))
            }
        );
        assert!(!p.allows(0) && p.allows(1));
    }
}
