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
use mm::aspace::migrate::MmMigrator;
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

/// The migrator compaction hands isolated folios to: the migration
/// core's `MmMigrator` over every live address space, taken afresh for
/// each folio (the spaces are reached with preemption off, which a whole
/// run must not keep).
struct KernelMigrator {
    mode: MigrateMode,
}

impl FolioMigrator<'static> for KernelMigrator {
    fn migrate_to(&self, src: Folio<'static>, dst: Folio<'static>) -> Result<(), MigrateError> {
        let mms = uspace::all_mms();
        let np = sched::preempt_disable();
        let spaces = uspace::spaces(&mms, &np);
        MmMigrator {
            mms: &spaces,
            mode: self.mode,
        }
        .migrate_to(src, dst)
    }
}

/// A frame of each node's zone (its first range's start; the memmap's
/// base with one node): what the per-zone calls take to name the zone.
fn zone_pfns() -> alloc::vec::Vec<u64> {
    let b = buddy();
    let nodes = b.nodes();
    if nodes.nr_nodes() == 1 {
        return alloc::vec![b.memmap().base_pfn()];
    }
    (0..nodes.nr_nodes())
        .filter_map(|n| {
            nodes
                .ranges()
                .iter()
                .find(|r| r.node as usize == n && r.end_pfn > r.start_pfn)
                .map(|r| r.start_pfn.max(b.memmap().base_pfn()))
        })
        .collect()
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

/// One run with `cc` over the zone holding `pfn`, counted in
/// `/proc/vmstat`.
fn run_zone(pfn: u64, cc: &CompactControl, daemon: bool) -> CompactResult {
    let b = buddy();
    let (start, end) = b.zone_span(pfn);
    let m = KernelMigrator { mode: cc.mode };
    let r = compact_zone(b, &m, start, end, cc);
    r.count(&THP.stats, daemon);
    r
}

/// [`run_zone`] over every node's zone (one kcompactd serves them all,
/// where Linux has one `kcompactdN` per node); the result of the last
/// zone whose run succeeded, else of the last one.
fn run(cc: &CompactControl, daemon: bool) -> CompactResult {
    let mut last: Option<CompactResult> = None;
    for pfn in zone_pfns() {
        let r = run_zone(pfn, cc, daemon);
        let ok = r.status == CompactStatus::Success;
        if ok
            || last
                .as_ref()
                .is_none_or(|l| l.status != CompactStatus::Success)
        {
            last = Some(r);
        }
    }
    last.expect("at least one zone")
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
///
/// Zone by zone, the running CPU's node first, until one succeeds.
fn compact_order(order: u32, mode: MigrateMode, daemon: bool) -> Option<CompactResult> {
    let b = buddy();
    let cc = CompactControl::for_order(order, mode, VM_SYSCTL.compact_unevictable_allowed());
    let mut pfns = zone_pfns();
    let local = b.local_node();
    pfns.sort_by_key(|&p| b.node_of_pfn(p) != local);
    let mut last = None;
    for pfn in pfns {
        if compaction_suitable(b, pfn, order, VM_SYSCTL.extfrag_threshold()).is_some() {
            continue;
        }
        let r = run_zone(pfn, &cc, daemon);
        let ok = r.status == CompactStatus::Success;
        last = Some(r);
        if ok {
            break;
        }
    }
    last
}

/// The highest proactive-compaction score over the nodes' zones.
fn max_score() -> u32 {
    let b = buddy();
    zone_pfns()
        .into_iter()
        .map(|pfn| fragmentation_score(b, pfn))
        .max()
        .unwrap_or(0)
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

/// `/sys/kernel/debug/extfrag/unusable_index`: a line per node's zone.
pub fn unusable_index() -> String {
    let b = buddy();
    zone_pfns()
        .into_iter()
        .map(|pfn| {
            let n = b.node_of_pfn(pfn);
            unusable_index_text(
                &b.zone_free_counts(pfn),
                n,
                crate::mem::watermark::ZONE_NAME,
            )
        })
        .collect()
}

/// `/sys/kernel/debug/extfrag/extfrag_index`: a line per node's zone.
pub fn extfrag_index() -> String {
    let b = buddy();
    zone_pfns()
        .into_iter()
        .map(|pfn| {
            let n = b.node_of_pfn(pfn);
            extfrag_index_text(
                &b.zone_free_counts(pfn),
                n,
                crate::mem::watermark::ZONE_NAME,
            )
        })
        .collect()
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
    (max_score() > high).then_some(low)
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
                let before = max_score();
                let cc = CompactControl {
                    proactive_low: Some(low),
                    ..CompactControl::whole_zone(VM_SYSCTL.compact_unevictable_allowed())
                };
                run(&cc, true);
                if max_score() >= before {
                    timeout = PROACTIVE_MS << DEFER_SHIFT;
                }
            }
        }
    }
}
