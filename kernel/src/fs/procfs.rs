//! procfs: the generated `/proc` files.  `/proc/meminfo` and
//! `/proc/vmstat` from the allocator's and THP counters, `/proc/<pid>/smaps`
//! and `maps` in Linux's layout, and the binary files (`/proc/<pid>/pagemap`,
//! `/proc/kpageflags`) read 8 bytes per entry.  Which path opens which file
//! is decided in `vfs.rs`; here are the contents and the write errors
//! procfs gives.
use super::vfs::Node;
use crate::proc::process::{self, Process};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use mm::abi::errno::Errno;
use mm::thp::THP;

/// No soft-dirty bits in pagemap: Linux sets them only when built with
/// `CONFIG_MEM_SOFT_DIRTY` (off by default, and off in this host's
/// kernel); see `Mm::pagemap`.
pub(super) const PAGEMAP_SOFT_DIRTY: bool = false;

/// The 8-byte entries of a binary `/proc` file at byte offset `pos`: both
/// the offset and the length must be whole entries (EINVAL otherwise, as
/// Linux); `fill(first, n)` returns the entries from index `first`, fewer
/// at the end of the file.
pub(super) fn read_entries(
    pos: u64,
    buf: &mut [u8],
    fill: impl FnOnce(u64, usize) -> Vec<u64>,
) -> Result<usize, Errno> {
    if !pos.is_multiple_of(8) || !buf.len().is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let entries = fill(pos / 8, buf.len() / 8);
    for (chunk, e) in buf.chunks_exact_mut(8).zip(&entries) {
        chunk.copy_from_slice(&e.to_le_bytes());
    }
    Ok(entries.len() * 8)
}

/// A procfs file made by a `show` function (Linux's single-open seq
/// files): a write reaches procfs's `proc_reg_write`, which has no
/// `proc_write` to call and fails with EIO.
pub(super) fn text(data: String) -> Node {
    Node::Text {
        data: data.into_bytes(),
        knob: None,
        no_write: Errno::EIO,
    }
}

/// A per-process procfs file (`smaps`, `maps`): its file operations have no
/// `write`, so the VFS refuses the write with EINVAL.
pub(super) fn seq_text(data: String) -> Node {
    Node::Text {
        data: data.into_bytes(),
        knob: None,
        no_write: Errno::EINVAL,
    }
}

pub(super) fn meminfo() -> String {
    let st = crate::mem::memory::buddy().stats();
    let total = crate::mem::memory::boot_ram_frames() * 4;
    let free = st.free * 4;
    let mut anon = 0;
    let mut huge = 0;
    for p in process::all() {
        let _ = p.with_mm(|mm| {
            anon += mm.anon_rss() * 4;
            huge += mm.thpmaps().total().anon_huge_bytes >> 10;
        });
    }
    // The anonymous LRU (pages): folios still in a CPU's add batch count
    // as inactive, where they are headed.  No page cache, so the file
    // lists are empty and Active/Inactive are the anon ones.
    let lru = crate::mem::uspace::ctx().lru_counts();
    let active_anon = lru.active_pages * 4;
    let inactive_anon = (lru.inactive_pages + lru.batched_pages) * 4;
    // Linux's fields in Linux's order, those this kernel can state
    // truthfully: the only page cache is shmem's (`Cached:` = `Shmem:`),
    // which is not on the LRU lists here (Linux keeps it on the anon
    // ones), and there are no file pages.
    // Mlocked folios are the only unevictable memory here (no ramfs, no
    // SHM_LOCK), so `Unevictable:` is `Mlocked:`.
    let mlocked = crate::mem::memory::buddy().mlocked_pages() * 4;
    let swap = &crate::mem::uspace::ctx().swap;
    let (swap_total, swap_free) = swap.totals();
    let swap_cached = swap.cache.pages();
    let rows: [(&str, u64); 26] = [
        ("MemTotal", total),
        ("MemFree", free),
        ("MemAvailable", free),
        ("Buffers", 0),
        // Linux's `Cached:` includes shmem (page cache) pages.
        ("Cached", shmem_gauge(&THP.shmem.pages)),
        ("SwapCached", swap_cached * 4),
        ("Active", active_anon),
        ("Inactive", inactive_anon),
        ("Active(anon)", active_anon),
        ("Inactive(anon)", inactive_anon),
        ("Active(file)", 0),
        ("Inactive(file)", 0),
        ("Unevictable", mlocked),
        ("Mlocked", mlocked),
        ("SwapTotal", swap_total * 4),
        ("SwapFree", swap_free * 4),
        // No file pages, so nothing dirty waits for writeback (Linux's
        // `Dirty:` leaves anon and shmem out); `Writeback:` is the swap
        // writes in flight.
        ("Dirty", 0),
        ("Writeback", swap.writeback_pages() * 4),
        ("AnonPages", anon),
        ("Mapped", 0),
        ("Shmem", shmem_gauge(&THP.shmem.pages)),
        ("PageTables", crate::perf::pagetable_pages() * 4),
        ("AnonHugePages", huge),
        ("ShmemHugePages", shmem_gauge(&THP.shmem.pmd_pages)),
        ("ShmemPmdMapped", shmem_gauge(&THP.shmem.pmd_mapped)),
        ("FileHugePages", 0),
    ];
    let mut s = String::new();
    for (k, v) in rows {
        let _ = writeln!(s, "{:<16}{v:8} kB", format!("{k}:"));
    }
    let _ = writeln!(s, "Hugepagesize:   {:8} kB", mm::addr::PMD_SIZE >> 10);
    s
}

/// A shmem page gauge in kB.
fn shmem_gauge(g: &core::sync::atomic::AtomicU64) -> u64 {
    g.load(core::sync::atomic::Ordering::Relaxed) * 4
}

pub(super) fn vmstat() -> String {
    let st = crate::mem::memory::buddy().stats();
    let mut s = format!("nr_free_pages {}\n", st.free);
    // Linux's order: the zone counters, then the NUMA ones.
    s.push_str(&crate::mem::numa::vmstat_lines());
    // Node counters after the NUMA ones, as Linux orders them.
    let wb = crate::mem::uspace::ctx().swap.writeback_pages();
    s.push_str(&format!("nr_dirty 0\nnr_writeback {wb}\n"));
    s.push_str(&THP.stats.vmstat());
    s
}

/// Linux's two-letter `VmFlags:` names of the flags this kernel has, in
/// Linux's order (by bit).
pub(super) const VM_FLAG_NAMES: &[(mm::vma::VmFlags, &str)] = {
    use mm::vma::VmFlags as F;
    &[
        (F::READ, "rd"),
        (F::WRITE, "wr"),
        (F::EXEC, "ex"),
        (F::SHARED, "sh"),
        (F::MAYREAD, "mr"),
        (F::MAYWRITE, "mw"),
        (F::MAYEXEC, "me"),
        (F::MAYSHARE, "ms"),
        (F::GROWSDOWN, "gd"),
        (F::LOCKED, "lo"),
        (F::SEQ_READ, "sr"),
        (F::RAND_READ, "rr"),
        (F::DONTCOPY, "dc"),
        (F::DONTEXPAND, "de"),
        (F::LOCKONFAULT, "lf"),
        (F::ACCOUNT, "ac"),
        (F::NORESERVE, "nr"),
        (F::WIPEONFORK, "wf"),
        (F::DONTDUMP, "dd"),
        (F::HUGEPAGE, "hg"),
        (F::NOHUGEPAGE, "nh"),
    ]
};

/// `/proc/<pid>/numa_maps` (see `mm::abi::numa_maps`), with the heap and
/// the stack named as `smaps` names them.
pub(super) fn numa_maps(p: &Process) -> Result<String, Errno> {
    let (start_brk, brk) = *p.brk.lock();
    let start_stack = p.start_stack.load(core::sync::atomic::Ordering::Relaxed);
    p.with_mm(|mm| {
        mm.numa_maps(|start, end| {
            if brk > 0 && start < brk && end > start_brk {
                Some("heap")
            } else if start <= start_stack && end >= start_stack {
                Some("stack")
            } else {
                None
            }
        })
    })
}

/// `/proc/<pid>/smaps` (or `maps` when `detail` is false), in Linux's
/// layout: the header line (with `[heap]` and `[stack]` named, the name at
/// column 73), then Linux's fields in Linux's order, this kernel's own
/// lines (`ContPTEMapped`, `AnonOrder<N>`, `TlbEntries`) after
/// `THPeligible`, and `VmFlags` last, as parsers that end a block there
/// expect.  Zero-page mappings are not in `Rss`, as in Linux.
pub(super) fn smaps(p: &Process, detail: bool) -> Result<String, Errno> {
    let rep = p.with_mm(|mm| mm.thpmaps())?;
    let (start_brk, brk) = *p.brk.lock();
    let start_stack = p.start_stack.load(core::sync::atomic::Ordering::Relaxed);
    let mut s = String::new();
    for v in &rep.vmas {
        let fl = v.flags.unwrap_or(mm::vma::VmFlags::empty());
        use mm::vma::VmFlags as F;
        let perm = |f: F, c: char| if fl.contains(f) { c } else { '-' };
        let line_start = s.len();
        let _ = write!(
            s,
            "{:08x}-{:08x} {}{}{}{} 00000000 00:00 0 ",
            v.start,
            v.end,
            perm(F::READ, 'r'),
            perm(F::WRITE, 'w'),
            perm(F::EXEC, 'x'),
            if fl.contains(F::MAYSHARE) { 's' } else { 'p' }
        );
        // Linux's `vma_is_initial_heap` (strict: with no heap yet, brk ==
        // start_brk and the data segment ending there is not the heap) and
        // `vma_is_initial_stack` (inclusive).
        let name = if brk > 0 && v.start < brk && v.end > start_brk {
            Some("[heap]")
        } else if v.start <= start_stack && v.end >= start_stack {
            Some("[stack]")
        } else {
            None
        };
        if let Some(name) = name {
            while s.len() - line_start < 72 {
                s.push(' ');
            }
            let _ = write!(s, " {name}");
        }
        s.push('\n');
        if !detail {
            continue;
        }
        let kb = |b: u64| b >> 10;
        let anon: u64 = v.anon_by_order.iter().sum();
        let pss_kb = |p: u64| p >> (mm::aspace::report::PSS_SHIFT + 10);
        for (k, val) in [
            ("Size", kb(v.end - v.start)),
            ("KernelPageSize", 4),
            ("MMUPageSize", 4),
            ("Rss", kb(anon)),
            ("Pss", pss_kb(v.pss)),
            ("Pss_Dirty", pss_kb(v.pss_dirty)),
            ("Shared_Clean", kb(v.shared_clean)),
            ("Shared_Dirty", kb(v.shared_dirty)),
            ("Private_Clean", kb(v.private_clean)),
            ("Private_Dirty", kb(v.private_dirty)),
            ("Referenced", kb(v.referenced)),
            ("Anonymous", kb(anon - v.shmem_bytes)),
            ("KSM", 0),
            ("LazyFree", 0),
            ("AnonHugePages", kb(v.anon_huge_bytes)),
            ("ShmemPmdMapped", kb(v.shmem_pmd_bytes)),
            ("FilePmdMapped", 0),
            ("Shared_Hugetlb", 0),
            ("Private_Hugetlb", 0),
            ("Swap", kb(v.swap)),
            ("SwapPss", pss_kb(v.swap_pss)),
            // Linux's `Locked:` is the Pss of a `VM_LOCKED` VMA.
            (
                "Locked",
                if fl.contains(F::LOCKED) {
                    pss_kb(v.pss)
                } else {
                    0
                },
            ),
        ] {
            let _ = writeln!(s, "{:<16}{val:8} kB", format!("{k}:"));
        }
        let _ = writeln!(s, "THPeligible:    {:8}", u8::from(v.thp_eligible));
        let _ = writeln!(s, "ContPTEMapped:  {:8} kB", kb(v.cont_bytes));
        for (o, b) in v.anon_by_order.iter().enumerate() {
            let _ = writeln!(s, "AnonOrder{}:     {:8} kB", o, kb(*b));
        }
        let _ = writeln!(s, "TlbEntries:     {:8}", v.entries);
        s.push_str("VmFlags:");
        for (f, n) in VM_FLAG_NAMES {
            if fl.contains(*f) {
                let _ = write!(s, " {n}");
            }
        }
        s.push_str(" \n");
    }
    Ok(s)
}

/// `/proc/<pid>/status`: the fields of Linux's layout this kernel can
/// state, in Linux's order (`VmLck` is `mm->locked_vm`: the locked VMAs;
/// `RssAnon` the anonymous pages mapped, `RssShmem` the shmem pages,
/// `VmRSS` both).
pub(super) fn status(p: &Process) -> Result<String, Errno> {
    let (lck, rss, shmem, thp_off) = p.with_mm(|mm| {
        (
            mm.locked_vm() * 4,
            mm.anon_rss() * 4,
            mm.shmem_rss() * 4,
            mm.thp_disabled(),
        )
    })?;
    let uid = p.uid.load(core::sync::atomic::Ordering::Relaxed);
    let mut s = String::new();
    let _ = writeln!(s, "Name:\t{}", p.name.lock());
    let _ = writeln!(
        s,
        "Umask:\t{:04o}",
        p.umask.load(core::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(s, "Tgid:\t{}", p.pid);
    let _ = writeln!(s, "Pid:\t{}", p.pid);
    let _ = writeln!(
        s,
        "PPid:\t{}",
        p.ppid.load(core::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(s, "Uid:\t{uid}\t{uid}\t{uid}\t{uid}");
    let _ = writeln!(s, "VmLck:\t{lck:8} kB");
    let _ = writeln!(s, "VmRSS:\t{:8} kB", rss + shmem);
    let _ = writeln!(s, "RssAnon:\t{rss:8} kB");
    let _ = writeln!(s, "RssFile:\t{:8} kB", 0);
    let _ = writeln!(s, "RssShmem:\t{shmem:8} kB");
    let _ = writeln!(s, "THP_enabled:\t{}", u8::from(!thp_off));
    Ok(s)
}
