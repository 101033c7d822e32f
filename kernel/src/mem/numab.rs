//! NUMA balancing's kernel side: the `numa_balancing` switch and the
//! scanner thread that runs `mm`'s scan periods (`Mm::task_numa_work`,
//! `mm/src/aspace/numa.rs`) over the processes' address spaces.  The
//! hinting faults themselves are ordinary faults (`uspace::on_fault` →
//! `Mm::handle_fault`).
//!
//! * `/proc/sys/kernel/numa_balancing`: 0 off, 1 normal, 2 memory-tiering
//!   promotion, 3 both; 0..=3 accepted, anything else EINVAL
//!   (`proc_dointvec_minmax`).  There are no memory tiers here, so 2 and
//!   3 act as 1 (docs/linux-differences.md).  The default is 1 when more
//!   than one node has memory, else 0, as Linux; `numa_balancing=enable`
//!   / `disable` on the command line set it at boot.
//! * Linux scans from each task's own context (a task work on return to
//!   user space, `task_numa_work`); this kernel has one thread,
//!   `numa_scand`, that visits every process: a process is first scanned
//!   `scan_delay_ms` (1000) after the thread first sees it, then every
//!   `scan_period_min_ms` (1000), `scan_size_mb` (256) per period (Linux's
//!   debugfs defaults; the adaptive period between `scan_period_min_ms`
//!   and `scan_period_max_ms` is not modelled).  A single-threaded
//!   process's folios already on the node of the CPU its thread last ran
//!   on are skipped, as Linux skips them when the task itself scans.
//! * Under `selftest` and `storm` the thread stays paused (tests call
//!   [`scan_mm`] themselves), so other self-tests see no hinting faults.
use crate::cmdline;
use crate::mem::{memory::buddy, uspace};
use crate::proc::process;
use crate::task::sched;
use alloc::collections::BTreeMap;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use mm::abi::errno::Errno;
use mm::aspace::numa::NumaScan;
use mm::physmem::watermark::parse_dointvec;

/// The sysctl file.
pub const SYSCTL_PATH: &str = "/proc/sys/kernel/numa_balancing";
/// Its directory.
pub const SYSCTL_DIR: &str = "/proc/sys/kernel";
/// Its name there.
pub const SYSCTL_NAME: &str = "numa_balancing";

/// Linux's `NUMA_BALANCING_*` mode bits: 0 off, 1 normal, 2 tiering.
static MODE: AtomicU32 = AtomicU32::new(0);
/// Largest accepted mode.
const MODE_MAX: i64 = 3;

/// Linux's debugfs defaults (`/sys/kernel/debug/sched/numa_balancing/`).
pub static SCAN_DELAY_MS: AtomicU64 = AtomicU64::new(1000);
pub static SCAN_PERIOD_MIN_MS: AtomicU64 = AtomicU64::new(1000);
pub static SCAN_SIZE_MB: AtomicU64 = AtomicU64::new(256);

/// Pause depth of the thread (0 = running).
static PAUSED: AtomicUsize = AtomicUsize::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);
/// Scan periods the thread ran.
pub static PERIODS: AtomicU64 = AtomicU64::new(0);
/// How often the thread looks for due processes.
const POLL_MS: u64 = 50;

/// Nodes with memory (Linux's `N_MEMORY`).
fn nodes_with_memory() -> usize {
    let b = buddy();
    (0..b.nodes().nr_nodes())
        .filter(|&n| b.node_managed(n).0 > 0)
        .count()
}

/// Sets the boot default and starts the thread (once).
pub fn start() {
    if STARTED.swap(true, Relaxed) {
        return;
    }
    let on = match cmdline::value("numa_balancing") {
        Some("enable") => true,
        Some("disable") => false,
        _ => nodes_with_memory() > 1,
    };
    MODE.store(u32::from(on), Relaxed);
    if cmdline::has("selftest") || cmdline::has("storm") {
        PAUSED.fetch_add(1, Relaxed);
    }
    match sched::spawn("numa_scand", thread_main) {
        Ok(h) => drop(h),
        Err(e) => crate::warn!("numa_scand: not started: {}", e),
    }
}

/// Whether balancing is on (any non-zero mode).
pub fn enabled() -> bool {
    MODE.load(Relaxed) != 0
}

/// The file's text.
pub fn sysctl_read() -> String {
    alloc::format!("{}\n", MODE.load(Relaxed))
}

/// A write to the file.
pub fn sysctl_write(s: &str) -> Result<(), Errno> {
    let v = parse_dointvec(s)?;
    if !(0..=MODE_MAX).contains(&v) {
        return Err(Errno::EINVAL);
    }
    MODE.store(v as u32, Relaxed);
    Ok(())
}

/// One scan period over `mm`: `scan_size_mb` worth of pages; `local`: the
/// node of the CPU a single-threaded process last ran on.
pub fn scan_mm(mm: &uspace::Space, local: Option<usize>) -> NumaScan {
    let pages = SCAN_SIZE_MB.load(Relaxed) << (20 - 12);
    mm.task_numa_work(pages, local)
}

fn now_ms() -> u64 {
    crate::arch::now_ns() / 1_000_000
}

fn thread_main() {
    // pid -> when its next period is due (ms since boot).
    let mut due: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        sched::sleep_ms(POLL_MS);
        if PAUSED.load(Relaxed) != 0 || !enabled() {
            due.clear();
            continue;
        }
        let now = now_ms();
        let procs = process::all();
        due.retain(|pid, _| procs.iter().any(|p| p.pid == *pid));
        for p in procs {
            if p.exited().is_some() {
                continue;
            }
            let next = *due
                .entry(p.pid)
                .or_insert_with(|| now + SCAN_DELAY_MS.load(Relaxed));
            if now < next {
                continue;
            }
            due.insert(p.pid, now + SCAN_PERIOD_MIN_MS.load(Relaxed));
            let Ok(m) = p.user_mm() else { continue };
            let local = p
                .single_thread_cpu()
                .map(|cpu| buddy().nodes().cpu_node(cpu));
            scan_mm(&m.enter(), local);
            PERIODS.fetch_add(1, Relaxed);
        }
    }
}
