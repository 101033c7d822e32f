//! Self-test of `mm`'s invariant checker on the kernel's real page tables:
//! it must pass over every registered address space after a mix of mTHP,
//! PMD, fork and partial-munmap operations, and it must catch a state
//! broken behind its back (an extra mapcount, a pin it is not told about).
use crate::mem::uspace::{self, UserMm};
use crate::selftest::testenv::*;
use alloc::sync::Arc;
use alloc::vec::Vec;
use ktest::{TestResult, check, check_eq, ktest};
use mm::abi::uapi::*;
use mm::aspace::check::{check_invariants, check_invariants_pinned};
use mm::thp::{GlobalMode, OrderMode, THP};

/// The checker over every registered address space.
fn check_all(pins: &[(u64, u64)]) -> Result<(), ktest::String> {
    let mms = uspace::all_mms();
    let np = crate::task::sched::preempt_disable();
    check_invariants_pinned(&uspace::spaces(&mms, &np), pins)
}

/// Only `orders` enabled (global `always`).
fn set_orders(orders: &[u32]) {
    THP.config.set_global_mode(GlobalMode::Always);
    for o in 2..=9 {
        let m = if orders.contains(&o) {
            OrderMode::Always
        } else {
            OrderMode::Never
        };
        THP.config.set_order_mode(o, m);
    }
}

/// The body; the caller restores the knobs and releases `mms`.
fn build_and_check(mms: &mut Vec<Arc<UserMm>>) -> TestResult {
    let m = uspace::new_mm().map_err(err)?;
    mms.push(m.clone());
    // A PMD-mapped 2 MiB folio, then part of it unmapped (PMD split).
    set_orders(&[9]);
    let a = m.enter().mmap(0, 4 * MB, RW, ANON).map_err(err)?;
    check!(
        a % (2 * MB) == 0,
        "4 MiB mapping at {a:#x} not 2 MiB aligned"
    );
    m.enter()
        .madvise(a, 4 * MB, MADV_POPULATE_WRITE)
        .map_err(err)?;
    check_eq!(
        m.enter().thpmaps().total().pmd_bytes,
        4 * MB,
        "PMD-mapped bytes"
    );
    m.enter()
        .munmap(a + 2 * MB + 64 * KB, 64 * KB)
        .map_err(err)?;
    // 64K folios, one cut by a partial munmap (deferred split).
    set_orders(&[4]);
    let b = m.enter().mmap(0, MB, RW, ANON).map_err(err)?;
    m.enter().madvise(b, MB, MADV_POPULATE_WRITE).map_err(err)?;
    m.enter().munmap(b + 12 * KB, 8 * KB).map_err(err)?;
    check!(
        uspace::ctx().deferred_split_len() >= 1,
        "nothing queued for deferred split"
    );
    // fork: everything shared copy-on-write, then one COW write each side.
    let c = uspace::register(m.enter().fork().map_err(err)?).map_err(err)?;
    mms.push(c.clone());
    m.enter()
        .madvise(b + 64 * KB, 4 * KB, MADV_POPULATE_WRITE)
        .map_err(err)?;
    c.enter()
        .madvise(a, 4 * KB, MADV_POPULATE_WRITE)
        .map_err(err)?;
    check_all(&[])?;

    // Break it: one mapping count too many on a 64K folio.
    let pfn = m
        .enter()
        .with_page_table(|pt| pt.lookup(b + 128 * KB).entry.leaf())
        .ok_or("no leaf at b + 128K")?
        .pfn;
    let f = uspace::ctx().buddy.folio_from_pfn(pfn).ok_or("no folio")?;
    f.add_large_mapcount(1);
    let r = check_all(&[]);
    f.add_large_mapcount(-1);
    match r {
        Err(e) => check!(e.contains("large mapcount"), "unexpected report: {e}"),
        Ok(()) => return Err("extra mapcount not caught".into()),
    }
    check_all(&[])?;

    // A pin: covered when declared; a declared pin not held is caught.
    f.get();
    let declared = check_all(&[(f.pfn(), 1)]);
    f.put();
    declared?;
    match check_all(&[(f.pfn(), 1)]) {
        Err(e) => check!(e.contains("pins"), "unexpected report: {e}"),
        Ok(()) => return Err("missing pin not caught".into()),
    }
    // The plain entry point agrees with no pins.
    let np = crate::task::sched::preempt_disable();
    check_invariants(&uspace::spaces(mms, &np))
}

ktest! {
    /// The invariant checker passes over mTHP, PMD, fork and partial-unmap
    /// address spaces and catches a broken mapcount and a missing pin.
    fn invariant_checker_passes_and_catches() {
        let saved = (THP.config.order_modes(), THP.config.global_mode());
        let base = free_frames();
        let mut mms = Vec::new();
        let r = build_and_check(&mut mms);
        THP.config.set_all_order_modes(&saved.0);
        THP.config.set_global_mode(saved.1);
        for m in mms {
            check!(uspace::release(m), "address space still referenced");
        }
        r?;
        check_all(&[])?;
        check_eq!(free_frames(), base, "free frames after teardown vs baseline");
        Ok(())
    }
}
