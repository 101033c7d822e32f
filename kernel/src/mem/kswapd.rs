//! kswapd (Linux's `kswapd0`) and direct reclaim: the kernel side of
//! `mm::aspace::vmscan`.
//!
//! * The allocator calls [`wake`] when an allocation finds the zone below
//!   its low watermark.  That can happen in any context (interrupts
//!   masked, scheduler or wait-queue locks held), so `wake` only sets a
//!   flag; kswapd polls it every [`POLL_MS`] while it sleeps.  A flagged
//!   kswapd reclaims in batches until the zone is above its high watermark
//!   or a batch frees nothing (`pageoutrun` counts the passes).
//! * Direct reclaim ([`direct_reclaim`]) runs in the faulting thread when
//!   its allocation failed (the fault path's reclaim hook, with no lock
//!   held), counting `allocstall_normal`.
//! * Both walk every live address space (the reverse map must reach every
//!   mapping of a folio) and sleep for swap I/O, so they run preemptible.
use crate::mem::{memory::buddy, uspace};
use crate::task::sched;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use mm::aspace::vmscan::{ReclaimStats, Reclaimer, SWAP_CLUSTER_MAX};
use mm::physmem::buddy::Wmark;
use mm::thp::{THP, VmEvent};

/// How often a sleeping kswapd looks at its flag.
const POLL_MS: u64 = 10;
/// Pages one kswapd batch asks for.
const KSWAPD_BATCH: u64 = 4 * SWAP_CLUSTER_MAX;

static WOKEN: AtomicBool = AtomicBool::new(false);
static STARTED: AtomicBool = AtomicBool::new(false);
/// kswapd passes since boot.
pub static RUNS: AtomicU64 = AtomicU64::new(0);

static WAKE: fn() = wake;

/// Ask kswapd to reclaim (any context: sets a flag).
pub fn wake() {
    WOKEN.store(true, Relaxed);
}

/// Start kswapd (once) and hook it to the allocator's low watermark.
pub fn start() {
    if STARTED.swap(true, Relaxed) {
        return;
    }
    buddy().set_kswapd_hook(&WAKE);
    match sched::spawn("kswapd0", thread_main) {
        Ok(h) => drop(h),
        Err(e) => crate::warn!("kswapd: not started: {}", e),
    }
}

/// Reclaim up to `nr` pages from every live address space and the shmem
/// objects files hold ([`super::swap::file_shmem_objects`]: the LRU pass
/// reaches an unmapped shmem folio through its object).
pub fn reclaim(nr: u64, who: Reclaimer) -> ReclaimStats {
    let mms = uspace::all_mms();
    let entered: alloc::vec::Vec<_> = mms.iter().map(|m| m.enter()).collect();
    let refs: alloc::vec::Vec<&uspace::Space> = entered.iter().map(|e| &**e).collect();
    let files = super::swap::file_shmem_objects();
    uspace::ctx().shrink_node_files(&refs, &files, nr, who)
}

/// Direct reclaim for a faulting thread whose allocation failed: returns
/// the pages freed.
pub fn direct_reclaim() -> u64 {
    THP.stats.count(VmEvent::AllocstallNormal);
    reclaim(KSWAPD_BATCH, Reclaimer::Direct).reclaimed
}

/// Whether the zone needs kswapd: below high, with somewhere to put anon.
fn needs_work() -> bool {
    let b = buddy();
    b.watermark(Wmark::High) != 0 && b.below(Wmark::High)
}

fn thread_main() {
    loop {
        while !WOKEN.swap(false, Relaxed) {
            sched::sleep_ms(POLL_MS);
        }
        if !needs_work() {
            continue;
        }
        RUNS.fetch_add(1, Relaxed);
        THP.stats.count(VmEvent::PageOutRun);
        while needs_work() {
            if reclaim(KSWAPD_BATCH, Reclaimer::Kswapd).reclaimed == 0 {
                break;
            }
        }
    }
}
