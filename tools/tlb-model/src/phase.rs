//! Measured phases: the guest marks the start and end of each measured loop
//! with a load from `marker + 8 * id` (a page the bench maps at an agreed
//! user address); the first such load opens phase `id`, the next one closes
//! it. Marker loads themselves are not counted. Counts outside any phase are
//! reported as phase `total` (the whole run).

use crate::model::{Config, Counts};

/// Per-phase counts of one run.
#[derive(Clone, Debug, Default)]
pub struct Phases {
    open: Option<(u64, Counts)>,
    done: Vec<(u64, Counts)>,
}

impl Phases {
    /// Handle a marker load for phase `id` given the counts at that moment.
    pub fn mark(&mut self, id: u64, now: Counts) {
        match self.open.take() {
            Some((open, start)) if open == id => self.done.push((id, now.since(&start))),
            // A different id while one is open: close nothing, restart.
            _ => self.open = Some((id, now)),
        }
    }

    /// Closed phases in order.
    pub fn done(&self) -> &[(u64, Counts)] {
        &self.done
    }

    /// CSV report: a header, one line per closed phase, then `total`.
    pub fn csv(&self, config: &Config, total: Counts) -> String {
        let mut out = String::from(
            "config,phase,accesses,l1_hits,l1_misses,walks,walk_refs,dtlb_miss_per_kaccess\n",
        );
        let line = |out: &mut String, name: &str, c: &Counts| {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{:.3}\n",
                config.name,
                name,
                c.accesses,
                c.l1_hits,
                c.l1_misses,
                c.l2_misses,
                c.walk_refs,
                c.miss_per_kaccess()
            ));
        };
        for (id, c) in &self.done {
            line(&mut out, &id.to_string(), c);
        }
        line(&mut out, "total", &total);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LeafSize, NEOVERSE_N1, Tlb};

    #[test]
    fn phases_count_only_between_marks() {
        let mut tlb = Tlb::new(NEOVERSE_N1);
        let mut p = Phases::default();
        tlb.access(0, LeafSize::Base4K);
        p.mark(3, tlb.counts());
        for i in 0..10 {
            tlb.access(0x1000 * (i % 2), LeafSize::Base4K);
        }
        p.mark(3, tlb.counts());
        tlb.access(0x5000, LeafSize::Base4K);
        assert_eq!(p.done().len(), 1);
        let (id, c) = p.done()[0];
        assert_eq!((id, c.accesses, c.l2_misses, c.l1_hits), (3, 10, 1, 9));
        let csv = p.csv(&NEOVERSE_N1, tlb.counts());
        assert!(
            csv.contains("\nneoverse-n1,3,10,9,1,1,4,100.000\n"),
            "{csv}"
        );
        assert!(
            csv.ends_with("neoverse-n1,total,12,9,3,3,12,250.000\n"),
            "{csv}"
        );
    }
}
