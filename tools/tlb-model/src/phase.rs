//! Measured phases: the guest marks the start and end of each measured loop
//! with a load from `marker + 8 * id` (a page the bench maps at an agreed
//! user address); the first such load opens phase `id`, the next one closes
//! it. Marker loads themselves are not counted. Counts outside any phase are
//! reported as phase `total` (the whole run).
//!
//! Besides the model's [`Counts`], each phase carries [`Seen`]: what the
//! plugin did with the accesses (user or kernel half, modelled or skipped
//! and why, leaf sizes found), so that a wrong figure can be traced to its
//! cause from the CSV alone.

use crate::model::{Config, Counts, LeafSize};

/// Where the plugin's accesses went (cumulative; phases take differences).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Accesses to the lower (user) half of the address space, counted when
    /// applied to the model (in guest order with the phase markers).
    pub user: u64,
    /// Accesses to the upper (kernel) half, counted when they happen (user
    /// events may wait for a kernel entry to be applied: approximate).
    pub kernel: u64,
    /// Accesses whose walk found no translation (about to fault).
    pub unmapped: u64,
    /// Accesses whose walk could not read a table through the direct map
    /// (a wrong direct-map base, or QEMU refusing the debug read).
    pub unreadable: u64,
    /// Modelled accesses by leaf size: 4K, 64K (contiguous), 2M, 1G.
    pub leaves: [u64; 4],
    /// Walks whose output address differed from the physical address QEMU
    /// translated the same access to (a walker or direct-map bug).
    pub pa_mismatch: u64,
}

impl Seen {
    /// Count one modelled access mapped by `leaf`.
    pub fn leaf(&mut self, leaf: LeafSize) {
        let i = match leaf {
            LeafSize::Base4K => 0,
            LeafSize::Cont64K => 1,
            LeafSize::Pmd2M => 2,
            LeafSize::Pud1G => 3,
        };
        self.leaves[i] += 1;
    }

    /// `self - earlier`.
    pub fn since(&self, e: &Seen) -> Seen {
        let mut leaves = self.leaves;
        for (l, e) in leaves.iter_mut().zip(e.leaves) {
            *l -= e;
        }
        Seen {
            user: self.user - e.user,
            kernel: self.kernel - e.kernel,
            unmapped: self.unmapped - e.unmapped,
            unreadable: self.unreadable - e.unreadable,
            leaves,
            pa_mismatch: self.pa_mismatch - e.pa_mismatch,
        }
    }
}

/// The model's counts and the plugin's [`Seen`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub counts: Counts,
    pub seen: Seen,
}

impl Snapshot {
    fn since(&self, e: &Snapshot) -> Snapshot {
        Snapshot {
            counts: self.counts.since(&e.counts),
            seen: self.seen.since(&e.seen),
        }
    }
}

/// Per-phase counts of one run.
#[derive(Clone, Debug, Default)]
pub struct Phases {
    open: Option<(u64, Snapshot)>,
    done: Vec<(u64, Snapshot)>,
}

/// CSV header; the first eight columns are the model's figures.
pub const CSV_HEADER: &str = "config,phase,accesses,l1_hits,l1_misses,walks,walk_refs,dtlb_miss_per_kaccess,user,kernel,unmapped,unreadable,leaf_4k,leaf_64k,leaf_2m,leaf_1g,pa_mismatch\n";

impl Phases {
    /// Handle a marker load for phase `id` given the counts at that moment.
    /// Returns true when it opened the phase (the caller then starts the
    /// phase from a cold TLB).
    pub fn mark(&mut self, id: u64, now: Snapshot) -> bool {
        match self.open.take() {
            Some((open, start)) if open == id => {
                self.done.push((id, now.since(&start)));
                false
            }
            // A different id while one is open: close nothing, restart.
            _ => {
                self.open = Some((id, now));
                true
            }
        }
    }

    /// Closed phases in order.
    pub fn done(&self) -> &[(u64, Snapshot)] {
        &self.done
    }

    /// CSV report: a header, one line per closed phase, then `total`.
    pub fn csv(&self, config: &Config, total: Snapshot) -> String {
        let mut out = String::from(CSV_HEADER);
        let line = |out: &mut String, name: &str, s: &Snapshot| {
            let (c, v) = (&s.counts, &s.seen);
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{:.3},{},{},{},{},{},{},{},{},{}\n",
                config.name,
                name,
                c.accesses,
                c.l1_hits,
                c.l1_misses,
                c.l2_misses,
                c.walk_refs,
                c.miss_per_kaccess(),
                v.user,
                v.kernel,
                v.unmapped,
                v.unreadable,
                v.leaves[0],
                v.leaves[1],
                v.leaves[2],
                v.leaves[3],
                v.pa_mismatch,
            ));
        };
        for (id, s) in &self.done {
            line(&mut out, &id.to_string(), s);
        }
        line(&mut out, "total", &total);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NEOVERSE_N1, Tlb};

    fn snap(tlb: &Tlb, seen: Seen) -> Snapshot {
        Snapshot {
            counts: tlb.counts(),
            seen,
        }
    }

    #[test]
    fn phases_count_only_between_marks() {
        let mut tlb = Tlb::new(NEOVERSE_N1);
        let mut seen = Seen::default();
        let mut p = Phases::default();
        tlb.access(0, LeafSize::Base4K);
        seen.user += 1;
        assert!(p.mark(3, snap(&tlb, seen)));
        for i in 0..10 {
            tlb.access(0x1000 * (i % 2), LeafSize::Base4K);
            seen.user += 1;
            seen.leaf(LeafSize::Base4K);
        }
        seen.kernel += 5;
        assert!(!p.mark(3, snap(&tlb, seen)));
        tlb.access(0x5000, LeafSize::Base4K);
        assert_eq!(p.done().len(), 1);
        let (id, s) = p.done()[0];
        let c = s.counts;
        assert_eq!((id, c.accesses, c.l2_misses, c.l1_hits), (3, 10, 1, 9));
        assert_eq!((s.seen.user, s.seen.kernel, s.seen.leaves[0]), (10, 5, 10));
        let csv = p.csv(&NEOVERSE_N1, snap(&tlb, seen));
        assert!(
            csv.contains("\nneoverse-n1,3,10,9,1,1,4,100.000,10,5,0,0,10,0,0,0,0\n"),
            "{csv}"
        );
        assert!(
            csv.ends_with("neoverse-n1,total,12,9,3,3,12,250.000,11,5,0,0,10,0,0,0,0\n"),
            "{csv}"
        );
    }
}
