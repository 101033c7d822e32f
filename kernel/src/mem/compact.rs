//! Compaction's kernel side: `kcompactd0`, `echo 1 >
//! /proc/sys/vm/compact_memory`, the fault path's direct compaction
//! hook, and the `/sys/kernel/debug/extfrag` files.  The scanners, the
//! destination pool and the indices are `mm::physmem::compaction`.
//!
//! * [`compact_memory`] compacts the zone synchronously, whole (order
//!   -1), in the writing thread.
//! * kcompactd polls its wake flag every [`POLL_MS`]; a wake for an order
//!   ([`wakeup`], from the fault path's `defer` modes) runs a sync
//!   compaction for that order if `compaction_suitable` allows it
//!   (`compact_daemon_wake`).  Every [`PROACTIVE_MS`] (Linux's
//!   `HPAGE_FRAG_CHECK_INTERVAL_MSEC`) with `compaction_proactiveness` >
//!   0 it scores the zone and, above the high threshold, compacts the
//!   whole zone until the score is at or below the low one; a run that
//!   did not lower the score defers the next check 64 times longer, as
//!   Linux.  Under `selftest`/`storm` the thread starts paused, so no
//!   background compaction disturbs exact frame counts.
//! * The direct compaction hook ([`fault_hook`]): an async run for the
//!   failed order, then for a retrying request a sync one.
//!
//! Everything runs preemptible with no `mm` lock held (the fault path
//! holds only its mmap lock for reading, as in Linux).
use crate::cmdline;
use crate::mem::memory::buddy;
use crate::mem::uspace;
use crate::task::sched;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use mm::physmem::compaction::{
    CompactControl, CompactRequest, CompactResult, CompactStatus, FolioMigrator, MigrateError,
    MigrateMode, compact_zone, compaction_suitable, extfrag_index_text, fragmentation_score,
    score_wmarks, unusable_index_text,
};
use mm::physmem::folio::Folio;
use mm::physmem::watermark::VM_SYSCTL;
use mm::thp::{THP, VmEvent};

/// How often a sleeping kcompactd looks at its wake flag.
const POLL_MS: u64 = 10;
/// The proactive check interval (Linux's `HPAGE_FRAG_CHECK_INTERVAL_MSEC`).
const PROACTIVE_MS: u64 = 500;
/// A proactive run that made no progress defers the next by this shift
/// (Linux's `COMPACT_MAX_DEFER_SHIFT`).
const DEFER_SHIFT: u32 = 6;

/// kcompactd's pending request: 0 none, else order + 1 (the highest asked).
static WAKE_ORDER: AtomicU32 = AtomicU32::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);
/// Pause depth (0 = running).
static PAUSED: AtomicUsize = AtomicUsize::new(0);
/// kcompactd runs (woken or proactive) since boot.
pub static RUNS: AtomicU64 = AtomicU64::new(0);

/// The migrator compaction hands isolated folios to.
///
/// TODO(lead): replace with the migration core's
/// `aspace::migrate::MmMigrator` over every live space (mode Sync for
/// `compact_memory`/kcompactd, Async for a direct run's first try) once
/// it accepts isolated sources (see `FolioMigrator`'s doc); until then
/// every migration fails, so compaction scans, isolates, fills and
/// empties its pool and counts, but moves nothing.
struct StubMigrator;

impl<'a> FolioMigrator<'a> for StubMigrator {
    fn migrate_to(&self, _src: Folio<'a>, _dst: Folio<'a>) -> Result<(), MigrateError> {
        Err(MigrateError::Busy)
    }
}

static COMPACT_HOOK: fn(u32, CompactRequest) -> bool = fault_hook;

/// Start kcompactd (once) and install the fault path's hook.
pub fn start() {
    if STARTED.swap(true, Relaxed) {
        return;
    }
    uspace::ctx().set_compact_hook(&COMPACT_HOOK);
    if cmdline::has("selftest") || cmdline::has("storm") {
        PAUSED.fetch_add(1, Relaxed);
    }
    match sched::spawn("kcompactd0", thread_main) {
        Ok(h) => drop(h),
        Err(e) => crate::warn!("kcompactd: not started: {}", e),
    }
}

/// Ask kcompactd to compact for `order` (any context: sets a flag).
pub fn wakeup(order: u32) {
    WAKE_ORDER.fetch_max(order + 1, Relaxed);
}

/// One run over the zone with `cc`, counted in `/proc/vmstat`.
///
/// TODO(lead): with one zone per NUMA node, run once per node's span
/// (`compact_memory` compacts every node; kcompactd is per node, as
/// Linux's `kcompactdN`) and point `BuddyAllocator::zone_of` at the
/// node's zone.
fn run(cc: &CompactControl, daemon: bool) -> CompactResult {
    let b = buddy();
    let (start, end) = b.zone_span(b.memmap().base_pfn());
    let r = compact_zone(b, &StubMigrator, start, end, cc);
    r.count(&THP.stats, daemon);
    r
}

/// `echo 1 > /proc/sys/vm/compact_memory`: the whole zone, synchronously.
pub fn compact_memory() -> CompactResult {
    run(
        &CompactControl::whole_zone(VM_SYSCTL.compact_unevictable_allowed()),
        false,
    )
}

/// Compaction for an allocation of `order` if `compaction_suitable` lets
/// it run; `None` if skipped.
fn compact_order(order: u32, mode: MigrateMode, daemon: bool) -> Option<CompactResult> {
    let b = buddy();
    let pfn = b.memmap().base_pfn();
    if compaction_suitable(b, pfn, order, VM_SYSCTL.extfrag_threshold()).is_some() {
        return None;
    }
    let cc = CompactControl::for_order(order, mode, VM_SYSCTL.compact_unevictable_allowed());
    Some(run(&cc, daemon))
}

/// The fault path's compaction hook (see `MmCtx::set_compact_hook`).
fn fault_hook(order: u32, req: CompactRequest) -> bool {
    match req {
        CompactRequest::Wake => {
            crate::mem::kswapd::wake();
            wakeup(order);
            false
        }
        CompactRequest::Direct { retry } => {
            let Some(r) = compact_order(order, MigrateMode::Async, false) else {
                return false;
            };
            if retry && r.status != CompactStatus::Success {
                compact_order(order, MigrateMode::Sync, false);
            }
            true
        }
    }
}

/// `/sys/kernel/debug/extfrag/unusable_index`.
pub fn unusable_index() -> String {
    let b = buddy();
    unusable_index_text(
        &b.zone_free_counts(b.memmap().base_pfn()),
        crate::mem::watermark::ZONE_NAME,
    )
}

/// `/sys/kernel/debug/extfrag/extfrag_index`.
pub fn extfrag_index() -> String {
    let b = buddy();
    extfrag_index_text(
        &b.zone_free_counts(b.memmap().base_pfn()),
        crate::mem::watermark::ZONE_NAME,
    )
}

/// `compaction_proactiveness` was written: a non-zero value makes
/// kcompactd check the score now (Linux's `proactive_compact_trigger`).
pub fn proactiveness_changed() {
    if VM_SYSCTL.compaction_proactiveness() > 0 {
        PROACTIVE_NOW.store(true, Relaxed);
    }
}

static PROACTIVE_NOW: AtomicBool = AtomicBool::new(false);

/// Stop kcompactd until [`resume`] (nests).
#[cfg(feature = "selftest")]
pub fn pause() {
    PAUSED.fetch_add(1, Relaxed);
}

/// Undo one [`pause`].
#[cfg(feature = "selftest")]
pub fn resume() {
    let _ = PAUSED.fetch_update(Relaxed, Relaxed, |p| p.checked_sub(1));
}

/// Whether proactive compaction should start (Linux's
/// `should_proactive_compact_node`).
fn proactive_due() -> Option<u32> {
    let p = VM_SYSCTL.compaction_proactiveness();
    if p == 0 {
        return None;
    }
    let (low, high) = score_wmarks(p);
    let b = buddy();
    (fragmentation_score(b, b.memmap().base_pfn()) > high).then_some(low)
}

fn thread_main() {
    let mut timeout = PROACTIVE_MS;
    loop {
        let mut slept = 0;
        let woken = loop {
            let w = WAKE_ORDER.swap(0, Relaxed);
            if w != 0 && PAUSED.load(Relaxed) == 0 {
                break Some(w - 1);
            }
            if slept >= timeout || PROACTIVE_NOW.swap(false, Relaxed) {
                break None;
            }
            sched::sleep_ms(POLL_MS);
            slept += POLL_MS;
        };
        if PAUSED.load(Relaxed) != 0 {
            continue;
        }
        match woken {
            Some(order) => {
                // Linux's `kcompactd_do_work`.
                RUNS.fetch_add(1, Relaxed);
                THP.stats.count(VmEvent::CompactDaemonWake);
                compact_order(order, MigrateMode::Sync, true);
                timeout = PROACTIVE_MS;
            }
            None => {
                timeout = PROACTIVE_MS;
                let Some(low) = proactive_due() else {
                    continue;
                };
                RUNS.fetch_add(1, Relaxed);
                let b = buddy();
                let pfn = b.memmap().base_pfn();
                let before = fragmentation_score(b, pfn);
                let cc = CompactControl {
                    proactive_low: Some(low),
                    ..CompactControl::whole_zone(VM_SYSCTL.compact_unevictable_allowed())
                };
                run(&cc, true);
                if fragmentation_score(b, pfn) >= before {
                    timeout = PROACTIVE_MS << DEFER_SHIFT;
                }
            }
        }
    }
}
