//! Migration under SMP: one CPU migrates the folios of a 4K, a 16K, a
//! 64K and a 2M region over and over (`mm::aspace::migrate::migrate_folio`) while a
//! thread on the other CPU writes and reads them in a loop through the
//! MMU, faulting on the migration entries meanwhile.  The data stays
//! right, the orders stay, the invariants hold, no frame leaks.
//!
//! Checked to fail without its mechanism: with the copy done while the
//! folio was still mapped (before the migration entries went in), the
//! writer's words stored between copy and unmap were lost on both arches
//! ("read ... expected ...": the new folio held an older round).
use crate::arch;
use crate::mem::memory::buddy;
use crate::mem::uspace::{self, UserMm, read_u64, write_u64};
use crate::selftest::testenv::*;
use crate::task::sched;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
use ktest::{check, check_eq, ktest};
use mm::aspace::migrate::{MigrateMode, migrate_folio};
use mm::physmem::buddy::AllocFlags;
use mm::physmem::folio::FolioRef;
use mm::thp::{GlobalMode, OrderMode};

const PAGE: u64 = 4096;
/// Migrations of each region.
const ROUNDS: u32 = 40;

/// The folio mapped at `va`, referenced.
fn folio_at(m: &UserMm, va: u64) -> Option<FolioRef<'static>> {
    m.enter().with_page_table(|pt| {
        let w = pt.lookup(va);
        let l = w.entry.leaf()?;
        let off = (va >> 12) & ((1u64 << (9 * w.level as u32)) - 1);
        let f = buddy().folio_from_pfn(l.pfn + off)?;
        Some(f.get_ref())
    })
}

/// The writer: each round writes `page ^ round` into every page of both
/// regions, then reads them all back.
fn writer(regions: [(u64, u64); 4], stop: &AtomicBool) -> Result<u64, String> {
    let mut round = 0u64;
    while !stop.load(SeqCst) {
        round += 1;
        for &(va, len) in &regions {
            for p in (va..va + len).step_by(PAGE as usize) {
                write_u64(p + 8, p ^ round).map_err(|e| format!("write {p:#x}: {}", e.name()))?;
            }
        }
        for &(va, len) in &regions {
            for p in (va..va + len).step_by(PAGE as usize) {
                let got = read_u64(p + 8).map_err(|e| format!("read {p:#x}: {}", e.name()))?;
                if got != p ^ round {
                    return Err(format!(
                        "round {round}: read {got:#x} at {p:#x}, expected {:#x}",
                        p ^ round
                    ));
                }
            }
        }
    }
    Ok(round)
}

ktest! {
    /// One CPU migrates a 4K, a 16K, a 64K and a 2M folio back and forth
    /// while another writes and reads them: data intact, orders kept, no
    /// leak.
    fn smp_migrate_while_writing() {
        let cpus: Vec<usize> = (0..arch::nr_cpus_possible()).filter(|&c| arch::cpu_online(c)).collect();
        if cpus.len() < 2 {
            ktest::skip!("one CPU online (boots with -smp 2 and more run this)");
        }
        let fx = Fixture::new(GlobalMode::Always, &[2, 4, 9], OrderMode::Always);
        let m = uspace::new_mm().map_err(err)?;
        // Each VMA just the folio's size: the fault takes the largest
        // enabled order that fits (4K: none).
        let tiny = aligned_mapping(&m, 4 * KB, 4 * KB)?;
        let quad = aligned_mapping(&m, 16 * KB, 16 * KB)?;
        let small = aligned_mapping(&m, 64 * KB, 64 * KB)?;
        let big = aligned_mapping(&m, 2 * MB, 2 * MB)?;
        let regions = [(tiny, 4 * KB), (quad, 16 * KB), (small, 64 * KB), (big, 2 * MB)];
        // Populate from here first, so both folios exist before the race.
        uspace::activate(&m);
        for &(va, len) in &regions {
            for p in (va..va + len).step_by(PAGE as usize) {
                write_u64(p + 8, p).map_err(err)?;
            }
        }
        uspace::deactivate();
        let orders = [0, 2, 4, 9];
        for (&(va, _), &o) in regions.iter().zip(&orders) {
            check_eq!(folio_at(&m, va).map(|f| f.order()), Some(o));
        }
        let space = sched::AddrSpace { root_pa: m.root_pa(), asid: m.asid() };
        let stop = Arc::new(AtomicBool::new(false));
        let out: Arc<mm::sync::Mutex<Option<Result<u64, String>>>> = Arc::new(mm::sync::Mutex::new(None));
        let (st, o) = (stop.clone(), out.clone());
        let wcpu = cpus[1];
        let h = sched::spawn_in("migrate-writer", space, move || {
            sched::set_affinity(sched::current_id(), 1 << wcpu);
            sched::yield_now();
            *o.lock() = Some(writer(regions, &st));
        })
        .map_err(|e| format!("spawn: {e}"))?;
        sched::set_affinity(sched::current_id(), 1 << cpus[0]);
        sched::yield_now();
        let mut moved = [0u32; 4];
        let mut tries = 0u32;
        while moved.iter().any(|&n| n < ROUNDS) && tries < 100 * ROUNDS {
            tries += 1;
            for (i, &(va, _)) in regions.iter().enumerate() {
                if moved[i] >= ROUNDS {
                    continue;
                }
                let Some(f) = folio_at(&m, va) else { continue };
                let Ok(dst) = buddy().alloc(f.order(), AllocFlags::USER) else { continue };
                let e = m.enter();
                let mms = [&*e];
                match migrate_folio(&mms, &f, dst, MigrateMode::Sync) {
                    Ok(()) => moved[i] += 1,
                    Err(_) => dst.put(),
                }
            }
            if out.lock().is_some() {
                break; // the writer stopped on an error
            }
        }
        stop.store(true, SeqCst);
        h.join();
        let rounds = out.lock().take().ok_or("writer did not report")??;
        println!(
            "migrate under writes: {moved:?} migrations (4K, 16K, 64K, 2M), {rounds} writer rounds, {tries} tries"
        );
        check!(moved == [ROUNDS; 4], "migrations done: {:?} in {} tries", moved, tries);
        for (&(va, _), &o) in regions.iter().zip(&orders) {
            check_eq!(folio_at(&m, va).map(|f| f.order()), Some(o), "order kept");
        }
        {
            let np = sched::preempt_disable();
            mm::aspace::check_invariants(&[m.get(&np)])?;
        }
        fx.finish([m])
    }
}
