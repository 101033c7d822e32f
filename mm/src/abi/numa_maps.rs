//! `/proc/<pid>/numa_maps` (Linux's `show_numa_map`, notes §6.4): one
//! line per VMA with its memory policy and, over its present pages, how
//! many are anonymous, dirty, in the swap cache, active, and on each node.
//! A PMD-mapped folio counts its 512 pages at once; the zero pages are
//! not counted (they are not "normal" pages to Linux); `kernelpagesize_kB`
//! is 4 for every THP and mTHP, as Linux prints it.

use alloc::string::String;
use core::fmt::Write;

use crate::addr::PAGE_SIZE;
use crate::aspace::Mm;
use crate::paging::{Leaf, PagingArch, Step};
use crate::physmem::frame_flags::PageFlags;
use crate::physmem::node::MAX_NUMNODES;
use crate::vma::mempolicy::{
    MPOL_F_NUMA_BALANCING, MPOL_F_RELATIVE_NODES, MPOL_F_STATIC_NODES, Mempolicy, MpolMode,
};

/// What one VMA's walk counted (Linux's `struct numa_maps`).
#[derive(Default)]
struct Counts {
    pages: u64,
    anon: u64,
    dirty: u64,
    swapcache: u64,
    active: u64,
    mapmax: u64,
    node: [u64; MAX_NUMNODES],
}

/// A policy as Linux's `mpol_to_str` writes it: `default`, `local`,
/// `prefer:1`, `bind=static:0-1`, `interleave:0-1`, ...
pub fn policy_str(p: Option<Mempolicy>, out: &mut String) {
    let Some(p) = p else {
        out.push_str("default");
        return;
    };
    out.push_str(match p.mode {
        MpolMode::Default => "default",
        MpolMode::Preferred => "prefer",
        MpolMode::Bind => "bind",
        MpolMode::Interleave => "interleave",
        MpolMode::Local => "local",
        MpolMode::PreferredMany => "prefer (many)",
        MpolMode::WeightedInterleave => "weighted interleave",
    });
    if p.flags != 0 {
        out.push('=');
        if p.flags & MPOL_F_STATIC_NODES != 0 {
            out.push_str("static");
        } else if p.flags & MPOL_F_RELATIVE_NODES != 0 {
            out.push_str("relative");
        }
        if p.flags & MPOL_F_NUMA_BALANCING != 0 {
            if (p.flags & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES)) != 0 {
                out.push('|');
            }
            out.push_str("balancing");
        }
    }
    if !p.nodes.is_empty() {
        out.push(':');
        let _ = p.nodes.fmt_list(out);
    }
}

impl<A: PagingArch> Mm<'_, A> {
    /// The text of `/proc/<pid>/numa_maps`; `name(start, end)` names a
    /// VMA `heap` or `stack` as the caller knows them (the process's brk
    /// and stack).
    pub fn numa_maps(&self, name: impl Fn(u64, u64) -> Option<&'static str>) -> String {
        let vmas = self.vmas();
        let pt = self.lock_pt();
        let ctx = self.ctx();
        let nodes = ctx.buddy.nodes().nr_nodes();
        let mut s = String::new();
        for v in vmas.iter() {
            let _ = write!(s, "{:08x} ", v.start);
            policy_str(v.policy.or_else(|| self.task_policy()), &mut s);
            if let Some(n) = name(v.start, v.end) {
                let _ = write!(s, " {n}");
            }
            let mut c = Counts::default();
            let count = |l: Leaf, pages: u64, c: &mut Counts| {
                if ctx.is_zero_pfn(l.pfn) {
                    return;
                }
                let Some(f) = ctx.folio(l.pfn) else { return };
                c.pages += pages;
                if l.attrs.dirty || f.test(PageFlags::DIRTY) {
                    c.dirty += pages;
                }
                if f.test(PageFlags::SWAPCACHE) {
                    c.swapcache += pages;
                }
                if f.test(PageFlags::ACTIVE) || f.test(PageFlags::MLOCKED) {
                    c.active += pages;
                }
                if f.is_anon() {
                    c.anon += pages;
                }
                let mc = crate::aspace::report::page_mapcount(&f, l.pfn - f.pfn(), self.id());
                c.mapmax = c.mapmax.max(mc);
                c.node[ctx.buddy.node_of_pfn(l.pfn).min(MAX_NUMNODES - 1)] += pages;
            };
            for step in pt.walk_range(v.start, v.end) {
                match step {
                    Step::Leaf(h) => count(h.leaf, (h.end - h.start) / PAGE_SIZE, &mut c),
                    Step::Ptes(run) => {
                        for i in 0..run.len() {
                            if let Some(l) = run.leaf(i) {
                                count(l, 1, &mut c);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if c.pages > 0 {
                if c.anon > 0 {
                    let _ = write!(s, " anon={}", c.anon);
                }
                if c.dirty > 0 {
                    let _ = write!(s, " dirty={}", c.dirty);
                }
                if c.pages != c.anon && c.pages != c.dirty {
                    let _ = write!(s, " mapped={}", c.pages);
                }
                if c.mapmax > 1 {
                    let _ = write!(s, " mapmax={}", c.mapmax);
                }
                if c.swapcache > 0 {
                    let _ = write!(s, " swapcache={}", c.swapcache);
                }
                if c.active < c.pages {
                    let _ = write!(s, " active={}", c.active);
                }
                for (n, &k) in c.node.iter().enumerate().take(nodes) {
                    if k > 0 {
                        let _ = write!(s, " N{n}={k}");
                    }
                }
                s.push_str(" kernelpagesize_kB=4");
            }
            s.push('\n');
        }
        s
    }
}
