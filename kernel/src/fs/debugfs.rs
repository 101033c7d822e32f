//! debugfs: `/sys/kernel/debug/split_huge_pages`, the write-only control
//! file that splits the large folios of a range (`/sys/kernel/debug/mthp/
//! perf` is the counter interface in `perf/dev.rs`).
use crate::proc::process;
use alloc::vec::Vec;
use mm::abi::errno::Errno;

pub(super) const SPLIT_PATH: &str = "/sys/kernel/debug/split_huge_pages";
/// Linux's `/sys/kernel/debug/extfrag` (`CONFIG_COMPACTION`): the
/// fragmentation indices of every zone (`mem::compact`).
pub(super) const EXTFRAG_DIR: &str = "/sys/kernel/debug/extfrag";

/// `/sys/kernel/debug/split_huge_pages`: Linux's `<pid>,0x<start>,0x<end>[,<order>]`.
/// The format is checked as Linux does (EINVAL, ESRCH for an unknown pid);
/// every large folio mapped in the range is split to `order` (default 0),
/// counted in the per-order `split` / `split_failed` stats like Linux's
/// debugfs interface.  Mappings in other address spaces (fork children) are
/// found through every registered address space.
pub(super) fn split_huge_pages(data: &[u8]) -> Result<(), Errno> {
    let s = core::str::from_utf8(data)
        .map_err(|_| Errno::EINVAL)?
        .trim_end_matches('\n');
    let f: Vec<&str> = s.split(',').collect();
    if !(3..=4).contains(&f.len()) {
        return Err(Errno::EINVAL);
    }
    let pid: u32 = f[0].trim().parse().map_err(|_| Errno::EINVAL)?;
    let hex = |x: &str| {
        let x = x.trim();
        let h = x.strip_prefix("0x").ok_or(Errno::EINVAL)?;
        u64::from_str_radix(h, 16).map_err(|_| Errno::EINVAL)
    };
    let (start, end) = (hex(f[1])?, hex(f[2])?);
    let order: u32 = match f.get(3) {
        Some(o) => o.trim().parse().map_err(|_| Errno::EINVAL)?,
        None => 0,
    };
    if start >= end || order > 9 {
        return Err(Errno::EINVAL);
    }
    let proc = process::find(pid).ok_or(Errno::ESRCH)?;
    let all = crate::mem::uspace::all_mms();
    let np = crate::task::sched::preempt_disable();
    let refs = crate::mem::uspace::spaces(&all, &np);
    let n = proc.with_mm(|mm| mm.split_huge_pages_in(&refs, start & !0xfff, end, order))?;
    crate::debug!(
        "split_huge_pages: pid {} {:#x}-{:#x} order {}: {} of {} large folios split",
        pid,
        start,
        end,
        order,
        n.split,
        n.found
    );
    Ok(())
}
