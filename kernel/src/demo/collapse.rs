//! The demo's collapse and split steps (called from `demo::run`): a 2 MiB
//! range written with 4K pages becomes one PMD mapping — by `MADV_COLLAPSE`
//! and by a khugepaged scan — with timings, and a PMD folio is split into
//! 64K folios (contpte-mapped on arm64).  All on the real page tables, the
//! data checked through the MMU after every step.
use crate::arch;
use crate::mem::khugepaged;
use crate::mem::uspace::{self, UserMm, read_u64, write_u64};
use alloc::string::String;
use alloc::sync::Arc;
use core::fmt::Write;
use mm::abi::errno::Errno;
use mm::abi::uapi::*;
use mm::aspace::{ThpMaps, split_folio_to_order};
use mm::thp::{GlobalMode, OrderMode, THP};

const MB: u64 = 1 << 20;

fn shape(r: &ThpMaps) -> String {
    let t = r.total();
    let mut s = String::new();
    for (o, b) in t.anon_by_order.iter().enumerate() {
        if *b > 0 {
            let _ = write!(s, "{}x{}K ", b / (4096 << o), 4u64 << o);
        }
    }
    let _ = write!(
        s,
        "| PMD {} KiB, contpte {} KiB, {} entries, hw leaf {} KiB",
        t.pmd_bytes / 1024,
        t.cont_bytes / 1024,
        t.entries,
        0
    );
    s
}

fn shape_at(m: &UserMm, va: u64) -> String {
    let mut s = shape(&m.enter().thpmaps());
    let leaf = arch::kernel_translate(va).map_or(0, |t| t.size / 1024);
    if let Some(i) = s.rfind("hw leaf 0") {
        s.truncate(i);
        let _ = write!(s, "hw leaf {leaf} KiB");
    }
    s
}

fn check(va: u64, len: u64, seed: u64) -> Result<(), Errno> {
    for p in (va..va + len).step_by(4096) {
        if read_u64(p)? != p ^ seed {
            return Err(Errno::EIO);
        }
    }
    Ok(())
}

fn steps() -> Result<(), Errno> {
    THP.config.set_global_mode(GlobalMode::Madvise);
    for o in 2..=9 {
        let m = if o == 9 {
            OrderMode::Inherit
        } else {
            OrderMode::Never
        };
        THP.config.set_order_mode(o, m);
    }
    let m: Arc<UserMm> = uspace::new_mm()?;
    let probe = m
        .enter()
        .mmap(0, 6 * MB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)?;
    m.enter().munmap(probe, 6 * MB)?;
    let va = m.enter().mmap(
        probe.div_ceil(2 * MB) * 2 * MB,
        4 * MB,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
    )?;
    uspace::activate(&m);
    let r = (|| {
        m.enter().madvise(va, 4 * MB, MADV_NOHUGEPAGE)?;
        let t0 = arch::now_ns();
        for p in (va..va + 4 * MB).step_by(4096) {
            write_u64(p, p ^ 0xc0)?;
        }
        let touch = arch::now_ns() - t0;
        m.enter().madvise(va, 4 * MB, MADV_HUGEPAGE)?;
        println!();
        println!(
            "collapse: 2 x 2 MiB written with 4K pages ({} us): {}",
            touch / 1000,
            shape_at(&m, va)
        );
        let t0 = arch::now_ns();
        m.enter().madvise(va, 2 * MB, MADV_COLLAPSE)?;
        let ns = arch::now_ns() - t0;
        check(va, 2 * MB, 0xc0)?;
        println!("  MADV_COLLAPSE of the first 2 MiB: {} us", ns / 1000);
        let t0 = arch::now_ns();
        let p = khugepaged::scan_now();
        let ns = arch::now_ns() - t0;
        check(va, 4 * MB, 0xc0)?;
        println!(
            "  khugepaged full scan: {} collapsed in {} us (progress {})",
            p.collapsed,
            ns / 1000,
            p.progress
        );
        println!("  now: {}", shape_at(&m, va + 2 * MB));
        // Split the first PMD folio into 64K folios.
        let f = m
            .enter()
            .with_page_table(|pt| pt.lookup(va).entry.leaf())
            .and_then(|l| crate::mem::memory::buddy().folio_from_pfn(l.pfn))
            .ok_or(Errno::EFAULT)?;
        f.get();
        let t0 = arch::now_ns();
        let r = split_folio_to_order(&[&*m.enter()], f, 4);
        let ns = arch::now_ns() - t0;
        f.put();
        r?;
        check(va, 4 * MB, 0xc0)?;
        println!("split: first PMD folio to 64K folios in {} us", ns / 1000);
        println!("  now: {}", shape_at(&m, va));
        Ok(())
    })();
    uspace::deactivate();
    uspace::release(m);
    r
}

/// Run the steps, restoring the knobs; false on failure.
pub fn run() -> bool {
    let saved = (THP.config.order_modes(), THP.config.global_mode());
    let r = steps();
    THP.config.set_all_order_modes(&saved.0);
    THP.config.set_global_mode(saved.1);
    match r {
        Ok(()) => true,
        Err(e) => {
            println!("collapse/split demo failed: {}", e.name());
            false
        }
    }
}
