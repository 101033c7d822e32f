//! Structural invariant checks over a live page table.

use alloc::format;
use alloc::string::String;

use crate::paging::{ENTRIES_PER_TABLE, Entry, PTE_LEVEL, PageTable, PagingArch};

/// Check every contiguous block in `pt`: within each aligned group of
/// `CONT_PTES` entries either no entry has the cont bit, or all do and they
/// are valid leaves mapping consecutive frames starting at an aligned frame
/// with identical attributes (young/dirty aside).  Also fails if a
/// cont bit appears where the table does not use them (kernel space, or a
/// format without contiguous hints).
pub fn check_cont_blocks<A: PagingArch>(pt: &PageTable<'_, A>) -> Result<(), String> {
    let cp = A::CONT_PTES;
    let mem = pt.env().mem;
    let mut result = Ok(());
    pt.for_each_table(&mut |table, level| {
        if level != PTE_LEVEL || result.is_err() {
            return;
        }
        for first in (0..ENTRIES_PER_TABLE).step_by(cp.max(1)) {
            let n = cp.max(1);
            let entries: alloc::vec::Vec<Entry> = (0..n)
                .map(|i| A::decode(mem.load(table + 8 * (first + i) as u64), PTE_LEVEL))
                .collect();
            let conts = entries
                .iter()
                .filter(|e| matches!(e, Entry::Leaf(l) if l.cont))
                .count();
            if conts == 0 {
                continue;
            }
            let at = format!("table {table:#x} entries {first}..{}", first + n);
            if !pt.cont_enabled() {
                result = Err(format!("{at}: cont bit in a table that must not use it"));
                return;
            }
            if conts != n {
                result = Err(format!(
                    "{at}: only {conts} of {n} entries have the cont bit"
                ));
                return;
            }
            let l0 = entries[0].leaf().unwrap();
            if !l0.pfn.is_multiple_of(n as u64) {
                result = Err(format!("{at}: first frame {:#x} not aligned", l0.pfn));
                return;
            }
            for (i, e) in entries.iter().enumerate() {
                let l = e.leaf().unwrap();
                if l.pfn != l0.pfn + i as u64 {
                    result = Err(format!(
                        "{at}: entry {i} maps frame {:#x}, not consecutive",
                        l.pfn
                    ));
                    return;
                }
                if l.attrs.fold_key() != l0.attrs.fold_key() {
                    result = Err(format!(
                        "{at}: entry {i} attributes {:?} differ from {:?}",
                        l.attrs, l0.attrs
                    ));
                    return;
                }
            }
        }
    });
    result
}
