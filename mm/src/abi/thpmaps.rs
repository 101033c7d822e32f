//! The thpmaps text of a [`ThpMaps`] report (after Linux's
//! `tools/mm/thpmaps`): one line per VMA with its range, rights, bytes per
//! folio size, and contpte/PMD bytes and translation entries, then a total
//! line.  Only the presentation is here; the walk that fills the report is
//! `aspace::report`.

use core::fmt;

use crate::addr::PAGE_SIZE;
use crate::aspace::{ThpMaps, VmaReport};
use crate::vma::VmFlags;

fn kib(b: u64) -> u64 {
    b >> 10
}

impl fmt::Display for VmaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fl = self.flags.unwrap_or(VmFlags::empty());
        let rw = |c: VmFlags, ch: char| if fl.contains(c) { ch } else { '-' };
        write!(
            f,
            "{:012x}-{:012x} {}{}{} {:>8}K |",
            self.start,
            self.end,
            rw(VmFlags::READ, 'r'),
            rw(VmFlags::WRITE, 'w'),
            rw(VmFlags::EXEC, 'x'),
            kib(self.end - self.start)
        )?;
        for (o, &b) in self.anon_by_order.iter().enumerate() {
            if b != 0 {
                write!(f, " {}K:{}K", kib(PAGE_SIZE << o), kib(b))?;
            }
        }
        if self.zero_bytes != 0 {
            write!(f, " zero:{}K", kib(self.zero_bytes))?;
        }
        write!(
            f,
            " | cont {}K pmd {}K entries {}",
            kib(self.cont_bytes),
            kib(self.pmd_bytes),
            self.entries
        )
    }
}

impl fmt::Display for ThpMaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "thpmaps ({}): range prot size | folio-size:bytes ... | cont pmd entries",
            self.arch
        )?;
        for v in &self.vmas {
            writeln!(f, "{v}")?;
        }
        let t = self.total();
        write!(f, "total:")?;
        for (o, &b) in t.anon_by_order.iter().enumerate() {
            if b != 0 {
                write!(f, " {}K:{}K", kib(PAGE_SIZE << o), kib(b))?;
            }
        }
        writeln!(
            f,
            " zero:{}K | cont {}K pmd {}K entries {}",
            kib(t.zero_bytes),
            kib(t.cont_bytes),
            kib(t.pmd_bytes),
            t.entries
        )
    }
}
