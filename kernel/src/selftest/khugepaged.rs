//! Self-tests of split, collapse, `MADV_COLLAPSE`, the shrinker and the
//! khugepaged thread on the real page tables: user address spaces loaded in
//! CR3 / TTBR0, data written and verified through the MMU (every fault
//! raised by the hardware), mapping shapes checked with `mm`'s thpmaps walk
//! and the arch crate's walk of the live tables, free frames back to the
//! baseline after each test.
use crate::arch;
use crate::mem::khugepaged;
use crate::mem::memory::buddy;
use crate::mem::uspace::{self, UserMm, read_u64, write_u64};
use crate::selftest::testenv::*;
use crate::task::sched;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use ktest::{TestResult, check, check_eq, format, ktest};
use mm::abi::errno::Errno;
use mm::abi::uapi::*;
use mm::aspace::{check_invariants, folio_split, split_folio_to_order};
use mm::physmem::folio::Folio;
use mm::thp::{GlobalMode, MthpStat, OrderMode, THP};

/// A read-write mapping of `len` bytes at a 2 MiB-aligned address.
fn pmd_mapping(m: &UserMm, len: u64) -> Result<u64, ktest::String> {
    let probe = m
        .enter()
        .mmap(0, len + 2 * MB, PROT_NONE, ANON)
        .map_err(err)?;
    m.enter().munmap(probe, len + 2 * MB).map_err(err)?;
    let va = probe.div_ceil(2 * MB) * 2 * MB;
    m.enter().mmap(va, len, RW, ANON | MAP_FIXED).map_err(err)
}

/// Unmap and map `[va, va+len)` again (frees the page tables, so the next
/// fault can map a PMD again; MADV_DONTNEED would keep the PTE table).
fn remap(m: &UserMm, va: u64, len: u64) -> TestResult {
    m.enter().munmap(va, len).map_err(err)?;
    check_eq!(
        m.enter().mmap(va, len, RW, ANON | MAP_FIXED).map_err(err)?,
        va
    );
    Ok(())
}

fn verify_zero(va: u64, len: u64) -> TestResult {
    for p in (va..va + len).step_by(4096) {
        check_eq!(read_u64(p + 8).map_err(err)?, 0, "zero at {p:#x}");
    }
    Ok(())
}

/// The leaf size of the live hardware translation at `va`.
fn hw_size(va: u64) -> u64 {
    arch::kernel_translate(va).map_or(0, |t| t.size)
}

fn pmd_bytes(m: &UserMm) -> u64 {
    m.enter().thpmaps().total().pmd_bytes
}

/// The folio mapped at `va`, with a reference for the caller.
fn folio_at(m: &UserMm, va: u64) -> Option<Folio<'static>> {
    m.enter().with_page_table(|pt| {
        let w = pt.lookup(va);
        let l = w.entry.leaf()?;
        let off = (va >> 12) & ((1u64 << (9 * w.level as u32)) - 1);
        let f = buddy().folio_from_pfn(l.pfn + off)?;
        f.get();
        Some(f)
    })
}

fn invariants(mms: &[&UserMm]) -> TestResult {
    let np = crate::task::sched::preempt_disable();
    let spaces: alloc::vec::Vec<_> = mms.iter().map(|m| m.get(&np)).collect();
    check_invariants(&spaces).map_err(|e| format!("invariants: {e}"))
}

/// 4K pages written into `[va, va+len)` with THP off for the fault, then
/// the range made eligible with MADV_HUGEPAGE (registers for khugepaged).
fn small_pages_then_hugepage(m: &UserMm, va: u64, len: u64, seed: u64) -> TestResult {
    m.enter().madvise(va, len, MADV_NOHUGEPAGE).map_err(err)?;
    fill(va, len, seed)?;
    m.enter().madvise(va, len, MADV_HUGEPAGE).map_err(err)?;
    Ok(())
}

ktest! {
    /// The khugepaged thread: four PMD ranges of 4K pages become PMD-mapped
    /// (2 MiB hardware translations) within two full scans; the data stays.
    fn khugepaged_thread_collapses_four_ranges() {
        let mut fx = Fixture::new(GlobalMode::Madvise, &[9], OrderMode::Inherit);
        let m = uspace::new_mm().map_err(err)?;
        let va = pmd_mapping(&m, 8 * MB)?;
        uspace::activate(&m);
        small_pages_then_hugepage(&m, va, 8 * MB, 0x11)?;
        check!(m.enter().khugepaged_registered());
        check_eq!(hw_size(va), 4096);
        let collapsed0 = THP.stats.pages_collapsed();
        fx.run_daemon(1, 4096);
        let mut scans = 0;
        while pmd_bytes(&m) < 8 * MB && scans < 2 {
            check!(khugepaged::wait_full_scans(1, 20_000), "khugepaged made no full scan in 20 s");
            scans += 1;
        }
        check_eq!(pmd_bytes(&m), 8 * MB, "PMD-mapped bytes after {} full scans", scans);
        check_eq!(THP.stats.pages_collapsed() - collapsed0, 4);
        for i in 0..4 {
            check_eq!(hw_size(va + i * 2 * MB + 12345), 2 * MB, "hardware leaf size");
        }
        verify(va, 8 * MB, 0x11)?;
        invariants(&[&m])?;
        fx.finish([m])
    }
}

ktest! {
    /// Synchronous scans: an empty range is left alone; one populated PTE
    /// collapses with max_ptes_none 511; with 256, one page below the
    /// limit is refused and at the limit it collapses.
    fn khugepaged_none_limits() {
        let fx = Fixture::new(GlobalMode::Madvise, &[9], OrderMode::Inherit);
        let m = uspace::new_mm().map_err(err)?;
        let va = pmd_mapping(&m, 6 * MB)?;
        uspace::activate(&m);
        m.enter().madvise(va, 6 * MB, MADV_NOHUGEPAGE).map_err(err)?;
        write_u64(va + 2 * MB + 40 * 4096, 42).map_err(err)?;
        fill(va + 4 * MB, 255 * 4096, 3)?;
        m.enter().madvise(va, 6 * MB, MADV_HUGEPAGE).map_err(err)?;
        THP.config.khugepaged.max_ptes_none.store(511, Relaxed);
        khugepaged::scan_now();
        check_eq!(hw_size(va + 2 * MB), 2 * MB, "single PTE collapsed");
        check_eq!(read_u64(va + 2 * MB + 40 * 4096).map_err(err)?, 42);
        verify_zero(va + 2 * MB + 41 * 4096, 64 * 4096)?;
        check!(m.enter().thpmaps().vma_at(va).map_or(0, |v| v.mapped_bytes()) < 6 * MB);
        // The empty first range got nothing.
        check!(arch::kernel_translate(va).is_none(), "empty range was populated");
        // 255 populated (257 empty) in the third range collapsed too under
        // 511; make a fresh one for the 256 boundary.
        let vb = pmd_mapping(&m, 2 * MB)?;
        m.enter().madvise(vb, 2 * MB, MADV_NOHUGEPAGE).map_err(err)?;
        fill(vb, 255 * 4096, 4)?;
        m.enter().madvise(vb, 2 * MB, MADV_HUGEPAGE).map_err(err)?;
        THP.config.khugepaged.max_ptes_none.store(256, Relaxed);
        let refused0 = THP.stats.get(9, MthpStat::CollapseExceedNonePte);
        khugepaged::scan_now();
        check_eq!(hw_size(vb), 4096, "257 empty entries must be refused");
        check!(THP.stats.get(9, MthpStat::CollapseExceedNonePte) > refused0);
        m.enter().madvise(vb, 2 * MB, MADV_NOHUGEPAGE).map_err(err)?;
        fill(vb + 255 * 4096, 4096, 4)?;
        m.enter().madvise(vb, 2 * MB, MADV_HUGEPAGE).map_err(err)?;
        khugepaged::scan_now();
        check_eq!(hw_size(vb), 2 * MB, "256 empty entries collapse");
        verify(vb, 256 * 4096, 4)?;
        verify_zero(vb + 256 * 4096, 16 * 4096)?;
        invariants(&[&m])?;
        fx.finish([m])
    }
}

ktest! {
    /// After fork the child's COW moves its shared count across
    /// max_ptes_shared: refused at 257, collapsed at 256; the parent keeps
    /// its pages and data.
    fn khugepaged_max_ptes_shared_after_fork() {
        let fx = Fixture::new(GlobalMode::Madvise, &[9], OrderMode::Inherit);
        let p = uspace::new_mm().map_err(err)?;
        let va = pmd_mapping(&p, 2 * MB)?;
        uspace::activate(&p);
        small_pages_then_hugepage(&p, va, 2 * MB, 5)?;
        let c = uspace::register(p.enter().fork().map_err(err)?).map_err(err)?;
        uspace::activate(&c);
        fill(va, 255 * 4096, 6)?;
        khugepaged::scan_now();
        check_eq!(hw_size(va), 4096, "257 shared entries must be refused");
        fill(va + 255 * 4096, 4096, 6)?;
        khugepaged::scan_now();
        check_eq!(hw_size(va), 2 * MB, "child collapses at 256 shared");
        verify(va, 256 * 4096, 6)?;
        verify(va + 256 * 4096, 2 * MB - 256 * 4096, 5)?;
        uspace::activate(&p);
        check_eq!(hw_size(va), 4096, "parent keeps its pages");
        verify(va, 2 * MB, 5)?;
        invariants(&[&p, &c])?;
        fx.finish([c, p])
    }
}

ktest! {
    /// PTE-mapped 64K folios collapse into a PMD; with mTHP collapse (64K
    /// only) just the populated 64K windows collapse, at order 4.
    fn khugepaged_large_sources_and_mthp() {
        let fx = Fixture::new(GlobalMode::Madvise, &[4, 9], OrderMode::Madvise);
        let m = uspace::new_mm().map_err(err)?;
        let va = pmd_mapping(&m, 4 * MB)?;
        uspace::activate(&m);
        // 64K folios: order 4 always for the faults, VMA not yet madvised.
        THP.config.set_order_mode(4, OrderMode::Always);
        fill(va, 2 * MB, 7)?;
        check_eq!(m.enter().thpmaps().total().anon_by_order[4], 2 * MB);
        THP.config.set_order_mode(4, OrderMode::Never);
        m.enter().madvise(va, 2 * MB, MADV_HUGEPAGE).map_err(err)?;
        khugepaged::scan_now();
        check_eq!(hw_size(va), 2 * MB, "64K folios collapsed to a PMD");
        verify(va, 2 * MB, 7)?;
        // mTHP: 64K only, scattered 4K pages.
        let vb = va + 2 * MB;
        m.enter().madvise(vb, 2 * MB, MADV_NOHUGEPAGE).map_err(err)?;
        for pg in [0u64, 5, 40, 300] {
            write_u64(vb + pg * 4096, pg + 1).map_err(err)?;
        }
        THP.config.set_order_mode(9, OrderMode::Never);
        THP.config.set_order_mode(4, OrderMode::Madvise);
        m.enter().madvise(vb, 2 * MB, MADV_HUGEPAGE).map_err(err)?;
        khugepaged::scan_now();
        let r = m.enter().thpmaps();
        let v = r.vma_at(vb).ok_or("no VMA")?;
        check_eq!(v.anon_by_order[4], 3 * 64 * KB, "three populated 64K windows");
        check_eq!(v.anon_by_order[0], 0);
        for pg in [0u64, 5, 40, 300] {
            check_eq!(read_u64(vb + pg * 4096).map_err(err)?, pg + 1);
        }
        check!(arch::kernel_translate(vb + 100 * 4096).is_none(), "empty window populated");
        invariants(&[&m])?;
        fx.finish([m])
    }
}

ktest! {
    /// Splitting a PMD folio to each order 0, 2…8 leaves exactly 2^(9−i)
    /// order-i folios (contpte-mapped on arm64 from 64K), data intact;
    /// non-uniform at page 3 leaves 0,0,0,0,2,3,…,8; a pinned folio
    /// refuses with EAGAIN.
    fn split_orders_nonuniform_and_pin() {
        let fx = Fixture::new(GlobalMode::Always, &[9], OrderMode::Always);
        let m = uspace::new_mm().map_err(err)?;
        let va = pmd_mapping(&m, 2 * MB)?;
        uspace::activate(&m);
        for new in [0u32, 2, 3, 4, 5, 6, 7, 8] {
            fill(va, 2 * MB, new as u64)?;
            check_eq!(hw_size(va), 2 * MB);
            let f = folio_at(&m, va).ok_or("no folio")?;
            let t0 = arch::now_ns();
            let r = split_folio_to_order(&[&m.enter()], f, new);
            let us = (arch::now_ns() - t0) / 1000;
            f.put();
            r.map_err(err)?;
            let t = m.enter().thpmaps().total();
            check_eq!(t.anon_by_order[new as usize], 2 * MB, "order {} bytes", new);
            let mut n = 0;
            let mut p = va;
            while p < va + 2 * MB {
                let g = folio_at(&m, p).ok_or("hole after split")?;
                check_eq!(g.order(), new);
                p += g.size();
                g.put();
                n += 1;
            }
            check_eq!(n, 1u64 << (9 - new), "order-{} folios ({} us)", new, us);
            if arch::NAME == "aarch64" && new >= 4 {
                check_eq!(t.cont_bytes, 2 * MB, "contpte after split to {}", new);
            }
            verify(va, 2 * MB, new as u64)?;
            invariants(&[&m])?;
            remap(&m, va, 2 * MB)?;
        }
        // Non-uniform.
        fill(va, 2 * MB, 99)?;
        let f = folio_at(&m, va).ok_or("no folio")?;
        folio_split(&[&m.enter()], f, 0, 3).map_err(err)?;
        f.put();
        let mut orders = Vec::new();
        let mut p = va;
        while p < va + 2 * MB {
            let g = folio_at(&m, p).ok_or("hole")?;
            orders.push(g.order());
            p += g.size();
            g.put();
        }
        check_eq!(orders, alloc::vec![0, 0, 0, 0, 2, 3, 4, 5, 6, 7, 8]);
        verify(va, 2 * MB, 99)?;
        remap(&m, va, 2 * MB)?;
        // Pinned.
        fill(va, 2 * MB, 5)?;
        let f = folio_at(&m, va).ok_or("no folio")?;
        f.get();
        let failed0 = THP.stats.get(9, MthpStat::SplitFailed);
        check_eq!(split_folio_to_order(&[&m.enter()], f, 0), Err(Errno::EAGAIN));
        check_eq!(THP.stats.get(9, MthpStat::SplitFailed), failed0 + 1);
        check_eq!(hw_size(va), 2 * MB);
        f.put();
        f.put();
        verify(va, 2 * MB, 5)?;
        invariants(&[&m])?;
        fx.finish([m])
    }
}

ktest! {
    /// The shrinker splits a half-unmapped PMD folio: 256 frames come back
    /// at once and the mapped half keeps its data.
    fn shrinker_splits_half_unmapped() {
        let fx = Fixture::new(GlobalMode::Always, &[9], OrderMode::Always);
        let m = uspace::new_mm().map_err(err)?;
        let va = pmd_mapping(&m, 2 * MB)?;
        uspace::activate(&m);
        fill(va, 2 * MB, 8)?;
        let f = folio_at(&m, va).ok_or("no folio")?;
        m.enter().munmap(va + MB, MB).map_err(err)?;
        check!(uspace::ctx().deferred_split_queued(f));
        f.put();
        buddy().drain_all();
        let free0 = buddy().stats().free;
        let n = uspace::ctx().deferred_split_len();
        let c = uspace::ctx().deferred_split_scan(&[&*m.enter()], n);
        check_eq!(c.split, 1, "{:?}", c);
        buddy().drain_all();
        check_eq!(buddy().stats().free - free0, 256, "freed frames");
        verify(va, MB, 8)?;
        invariants(&[&m])?;
        fx.finish([m])
    }
}

ktest! {
    /// MADV_COLLAPSE with THP "never": a 2 MiB range of 4K pages becomes
    /// one 2 MiB translation; errors: EINVAL (nothing mapped, NOHUGEPAGE),
    /// EAGAIN (a pinned source); beyond Linux: collapse to 64K folios.
    fn madv_collapse_and_errors() {
        let fx = Fixture::new(GlobalMode::Never, &[], OrderMode::Never);
        let m = uspace::new_mm().map_err(err)?;
        let va = pmd_mapping(&m, 6 * MB)?;
        uspace::activate(&m);
        fill(va, 2 * MB, 9)?;
        let t0 = arch::now_ns();
        m.enter().madvise(va, 2 * MB, MADV_COLLAPSE).map_err(err)?;
        let us = (arch::now_ns() - t0) / 1000;
        check_eq!(hw_size(va), 2 * MB, "collapsed in {} us", us);
        verify(va, 2 * MB, 9)?;
        check_eq!(m.enter().madvise(va + 2 * MB, 2 * MB, MADV_COLLAPSE), Err(Errno::EINVAL));
        fill(va + 2 * MB, 16 * 4096, 10)?;
        let f = folio_at(&m, va + 2 * MB).ok_or("no folio")?;
        check_eq!(m.enter().madvise(va + 2 * MB, 2 * MB, MADV_COLLAPSE), Err(Errno::EAGAIN));
        f.put();
        m.enter().madvise(va + 2 * MB, 2 * MB, MADV_NOHUGEPAGE).map_err(err)?;
        check_eq!(m.enter().madvise(va + 2 * MB, 2 * MB, MADV_COLLAPSE), Err(Errno::EINVAL));
        m.enter().madvise(va + 2 * MB, 2 * MB, MADV_HUGEPAGE).map_err(err)?;
        m.enter().collapse_range(va + 2 * MB, 2 * MB, 4).map_err(err)?;
        let g = folio_at(&m, va + 2 * MB).ok_or("no folio")?;
        check_eq!(g.order(), 4);
        g.put();
        verify(va + 2 * MB, 16 * 4096, 10)?;
        invariants(&[&m])?;
        fx.finish([m])
    }
}

ktest! {
    /// khugepaged preempted mid-scan while another kernel thread, running
    /// in the same address space, keeps writing and checking words across
    /// the range (faults through the MMU): no corruption, every range ends
    /// up PMD-mapped, invariants hold.
    fn khugepaged_races_faulting_thread() {
        let mut fx = Fixture::new(GlobalMode::Madvise, &[9], OrderMode::Inherit);
        let m = uspace::new_mm().map_err(err)?;
        let len = 8 * MB;
        let va = pmd_mapping(&m, len)?;
        uspace::activate(&m);
        small_pages_then_hugepage(&m, va, len, 0)?;
        static STOP: AtomicBool = AtomicBool::new(false);
        static ROUNDS: AtomicU64 = AtomicU64::new(0);
        static BAD: AtomicU64 = AtomicU64::new(0);
        STOP.store(false, Relaxed);
        ROUNDS.store(0, Relaxed);
        BAD.store(0, Relaxed);
        let space = sched::AddrSpace { root_pa: m.root_pa(), asid: m.asid() };
        let h = sched::spawn_in("toucher", space, move || {
            let mut round = 0u64;
            while !STOP.load(Relaxed) {
                round += 1;
                for p in (va..va + len).step_by(4096 * 7) {
                    // Each page's second word holds its own round number.
                    let ok = write_u64(p + 16, round).is_ok()
                        && read_u64(p + 16) == Ok(round)
                        && read_u64(p + 8) == Ok(p);
                    if !ok {
                        BAD.fetch_add(1, Relaxed);
                    }
                }
                ROUNDS.store(round, Relaxed);
            }
        })
        .map_err(|e| format!("spawn: {e}"))?;
        let sw0 = sched::switches();
        fx.run_daemon(0, 512);
        let ok = khugepaged::wait_full_scans(3, 30_000);
        STOP.store(true, Relaxed);
        h.join();
        check!(ok, "khugepaged made no 3 full scans in 30 s");
        check_eq!(BAD.load(Relaxed), 0, "corrupted words seen by the toucher");
        check!(ROUNDS.load(Relaxed) > 0, "toucher never finished a round");
        check!(sched::switches() - sw0 > 2, "no interleaving");
        check_eq!(pmd_bytes(&m), len, "PMD-mapped after the race");
        uspace::activate(&m);
        for p in (va..va + len).step_by(4096) {
            check_eq!(read_u64(p + 8).map_err(err)?, p, "data at {:#x}", p);
        }
        invariants(&[&m])?;
        fx.finish([m])
    }
}
