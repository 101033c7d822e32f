//! `make bench`'s workloads: what the folio size an anonymous region is
//! mapped with does to a random pointer chase, a sequential stream and
//! first-touch fault-in, over regions of N MiB mapped each way (4K only,
//! each mTHP size, 2M PMD).  Plus collapse (MADV_COLLAPSE against copying
//! 2 MiB) and split (split_huge_pages per order) when the kernel has them.
//! With a swap disk (`/dev/vda`): swap-out/swap-in per folio size (`swap`,
//! the first `sizes` entry in MiB) and random reuse of 1.5x RAM
//! (`pressure`), and swap-in from the disk once writeback and memory
//! pressure have emptied the swap cache (`swap_cold`).  `work=cow`: fork
//! + one write per 64K in the child, with large COW and 4K COW (issue 17).
//!
//! A static Linux binary like the other test programs: it chooses the
//! mapping size only through the THP sysfs knobs (saved first, restored at
//! the end), times with `clock_gettime(CLOCK_MONOTONIC)` and counts faults
//! with `getrusage` (`ru_minflt`), so it runs unchanged on Linux.
//!
//! Options are `key=value` words from argv, or `bench.key=value` words of
//! `/proc/cmdline` (how the runner passes them when this is init):
//! `sizes=64,256` (MiB), `configs=4K,64K,2M`, `runs=5`, `steps=1000000`
//! (chase steps per run; random touches of `pressure`),
//! `work=fault,stream,chase,collapse,split` (the default; `swap`,
//! `swap_cold` and `pressure` are added only by the runner's boots with a
//! swap disk), `tag=nocont` (appended to the configuration names),
//! `swapin=0` (the swap workloads' swap-in is not measured: profiles of
//! swap-out alone), `swapout=0` (the swap workload's `MADV_PAGEOUT` is
//! not measured: profiles of swap-in alone).
//!
//! Output, one fact per line (the runner parses these):
//! * `bench <workload> <config> <MiB> <metric> <median> <min> <max>` over
//!   `runs` runs; PMU figures have metrics `pmu:<event>_per_<unit>`;
//! * `bench map <config> <MiB> tlb_entries|pmd_kb|cont_kb|rss_kb v v v`
//!   from `/proc/self/smaps` of the populated region;
//! * `bench-info <key> <text>`: environment, counter sources, and the
//!   reason for every figure that cannot be measured;
//! * `bench done`.
#![no_std]
#![no_main]
// Messages live on the stack (no heap): a 240-byte `Msg`.
#![allow(clippy::result_large_err)]

use core::fmt;
use mthp_user::sys::{self, check};
use mthp_user::{
    Args, Msg, entry, nul_str, parse_u64, path, println, read_file, trim, uname_field, write_file,
};

const THP: &str = "/sys/kernel/mm/transparent_hugepage";
const PERF: &str = "/sys/kernel/debug/mthp/perf";
const SPLIT: &str = "/sys/kernel/debug/split_huge_pages";
const PAGE: usize = 4096;
const MIB: usize = 1 << 20;
const SZ_2M: usize = 2 << 20;
const MADV_COLLAPSE: usize = 25;
/// Folio sizes with a per-size sysfs directory (kB): orders 1..=9.
const SIZES_KB: [usize; 9] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048];
const MAX_LIST: usize = 16;
const MAX_RUNS: usize = 21;
const MAX_EVENTS: usize = 8;
/// Bytes of the scratch mapping besides the chase permutation.
const SCRATCH_EXTRA: usize = 256 << 10;

// ------------------------------------------------------- TLB-model phases

/// User address of the phase-marker page the TLB-model plugin watches
/// (tests/src/tlbmodel.rs, docs/tlb-model.md): a load from `MARKER + 8 * id`
/// opens phase `id`, the next one closes it. Mapped once (read-only, never
/// written: the zero page); on a normal run a marker is one load per loop.
const TLB_MARKER: usize = 0x7e_0000_0000;
const MAP_FIXED_NOREPLACE: usize = 0x10_0000;
/// Next phase id, or `usize::MAX` when the marker page could not be mapped.
static TLB_PHASE: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(usize::MAX);

fn tlb_marker_map() {
    let flags = sys::MAP_PRIVATE | sys::MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
    if sys::mmap(TLB_MARKER, PAGE, sys::PROT_READ, flags, -1, 0) == TLB_MARKER as isize {
        TLB_PHASE.store(0, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Start a measured phase; prints `bench tlb-phase <id> <workload> <config>
/// <MiB>` so the model's per-phase counts can be named. None past 511.
fn tlb_phase_start(workload: &str, cfg: &Cfg, mib: usize) -> Option<usize> {
    let id = TLB_PHASE.load(core::sync::atomic::Ordering::Relaxed);
    if id >= PAGE / 8 {
        return None;
    }
    TLB_PHASE.store(id + 1, core::sync::atomic::Ordering::Relaxed);
    println!("bench tlb-phase {} {} {} {}", id, workload, cfg, mib);
    tlb_mark(id);
    Some(id)
}

/// The marker load itself: volatile so that it is never elided.
fn tlb_mark(id: usize) {
    // SAFETY: the marker page is mapped readable (`tlb_marker_map`) and
    // never unmapped; `id < 512` keeps the load inside it.
    let _ = unsafe { core::ptr::read_volatile((TLB_MARKER + 8 * id) as *const u64) };
}

// ---------------------------------------------------------------- options

#[derive(Clone, Copy)]
struct List {
    v: [usize; MAX_LIST],
    n: usize,
}

impl List {
    const fn of(items: &[usize]) -> List {
        let mut v = [0; MAX_LIST];
        let mut i = 0;
        while i < items.len() {
            v[i] = items[i];
            i += 1;
        }
        List { v, n: items.len() }
    }
    fn items(&self) -> &[usize] {
        &self.v[..self.n]
    }
}

const W_FAULT: u32 = 1;
const W_STREAM: u32 = 2;
const W_CHASE: u32 = 4;
const W_COLLAPSE: u32 = 8;
const W_SPLIT: u32 = 16;
/// Swap-out and swap-in through `/dev/vda` (issue 15); not in the
/// default set: it needs a swap disk, which only the runner's swap boot has.
const W_SWAP: u32 = 32;
/// Random reuse over a working set 1.5x the machine's RAM (issue 15);
/// also needs the swap disk, and a boot with little RAM to stay short.
const W_PRESSURE: u32 = 64;
/// Fault orders after a fragmenting churn, with and without compaction
/// (issue 16); not in the default set: it fills most of RAM, so the
/// runner gives it a boot of its own.
const W_FRAG: u32 = 128;
/// Migration between two NUMA nodes with `move_pages` (issue 16); not in
/// the default set: it needs a boot with two nodes.
const W_MIGRATE: u32 = 256;
/// Fork + one write per 64K in the child (issue 17): the child's
/// translation entries, rewrite time and extra memory, with large COW and
/// with 4K COW (`transparent_hugepage/large_cow`); not in the default set.
const W_COW: u32 = 512;
/// Fault-in of shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`) per
/// folio size, chosen by the per-size `shmem_enabled` knobs (issue 18);
/// not in the default set.
const W_SHFAULT: u32 = 1024;
const W_RESERVE: u32 = 2048;
/// Swap-in from the disk ([`bench_swap_cold`]): like the swap workload's
/// swap-in, but after writeback and memory pressure have emptied the swap
/// cache; not in the default set: it needs the swap disk and a boot with
/// little RAM (the pressure is about the size of RAM).
const W_SWAP_COLD: u32 = 4096;

struct Opts {
    sizes: List,
    configs: List,
    runs: usize,
    steps: usize,
    work: u32,
    /// `sizes` was given (the pressure workload's working set then).
    sizes_set: bool,
    /// `swapin=0`: the swap workload's swap-in phase runs (and checks the
    /// data) without a perf session, so `make profile` sees swap-out alone.
    swapin_perf: bool,
    /// `swapout=0`: the swap workload's swap-out (`MADV_PAGEOUT`) runs
    /// without a perf session, so `make profile` sees swap-in alone.
    swapout_perf: bool,
    tag: [u8; 16],
    tag_len: usize,
}

impl Opts {
    fn tag(&self) -> &str {
        core::str::from_utf8(&self.tag[..self.tag_len]).unwrap_or("")
    }

    fn set(&mut self, key: &[u8], val: &[u8]) -> Result<(), Msg> {
        match key {
            b"sizes" => {
                self.sizes = parse_list(val, parse_mib)?;
                self.sizes_set = true;
            }
            b"configs" => self.configs = parse_list(val, parse_kb)?,
            b"runs" => {
                self.runs = parse_u64(val)
                    .map(|v| v as usize)
                    .filter(|&v| (1..=MAX_RUNS).contains(&v))
                    .ok_or_else(|| bad(key, val))?
            }
            b"steps" => {
                self.steps = parse_u64(val)
                    .map(|v| v as usize)
                    .filter(|&v| v > 0)
                    .ok_or_else(|| bad(key, val))?
            }
            b"work" => {
                self.work = 0;
                for w in val.split(|&c| c == b',') {
                    self.work |= match w {
                        b"fault" => W_FAULT,
                        b"stream" => W_STREAM,
                        b"chase" => W_CHASE,
                        b"collapse" => W_COLLAPSE,
                        b"split" => W_SPLIT,
                        b"swap" => W_SWAP,
                        b"pressure" => W_PRESSURE,
                        b"frag" => W_FRAG,
                        b"migrate" => W_MIGRATE,
                        b"cow" => W_COW,
                        b"shfault" => W_SHFAULT,
                        b"reserve" => W_RESERVE,
                        b"swap_cold" => W_SWAP_COLD,
                        _ => return Err(bad(key, w)),
                    };
                }
            }
            b"swapin" => self.swapin_perf = parse_u64(val).ok_or_else(|| bad(key, val))? != 0,
            b"swapout" => self.swapout_perf = parse_u64(val).ok_or_else(|| bad(key, val))? != 0,
            b"tag" => {
                let n = val.len().min(self.tag.len());
                self.tag[..n].copy_from_slice(&val[..n]);
                self.tag_len = n;
            }
            _ => return Err(bad(key, val)),
        }
        Ok(())
    }
}

fn bad(key: &[u8], val: &[u8]) -> Msg {
    Msg::new(format_args!(
        "bad option {}={}",
        core::str::from_utf8(key).unwrap_or("?"),
        core::str::from_utf8(val).unwrap_or("?")
    ))
}

fn parse_list(val: &[u8], f: fn(&[u8]) -> Option<usize>) -> Result<List, Msg> {
    let mut l = List::of(&[]);
    for w in val.split(|&c| c == b',') {
        if l.n == MAX_LIST {
            return Err(bad(b"list", val));
        }
        l.v[l.n] = f(w).ok_or_else(|| bad(b"list item", w))?;
        l.n += 1;
    }
    Ok(l)
}

/// `64` or `64M` (MiB) or `1G`.
fn parse_mib(w: &[u8]) -> Option<usize> {
    let (num, mul) = match w.last()? {
        b'G' | b'g' => (&w[..w.len() - 1], 1024),
        b'M' | b'm' => (&w[..w.len() - 1], 1),
        _ => (w, 1),
    };
    let v = parse_u64(num)? as usize * mul;
    (v > 0 && v.is_multiple_of(2)).then_some(v)
}

/// `4K`, `64K`, `1M`, `2M` → kB (4 means "no THP": 4K pages only).
fn parse_kb(w: &[u8]) -> Option<usize> {
    let (num, mul) = match w.last()? {
        b'K' | b'k' => (&w[..w.len() - 1], 1),
        b'M' | b'm' => (&w[..w.len() - 1], 1024),
        _ => return None,
    };
    let v = parse_u64(num)? as usize * mul;
    (v == 4 || SIZES_KB.contains(&v)).then_some(v)
}

/// A mapping size as printed: `4K`, `64K`, `1M`, `2M`, plus `-<tag>`.
struct Cfg<'a>(usize, &'a str);

impl fmt::Display for Cfg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0 >= 1024 {
            write!(f, "{}M", self.0 / 1024)?;
        } else {
            write!(f, "{}K", self.0)?;
        }
        if !self.1.is_empty() {
            write!(f, "-{}", self.1)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- helpers

fn now_ns() -> u64 {
    let mut ts = sys::Timespec::default();
    sys::clock_gettime(sys::CLOCK_MONOTONIC, &mut ts);
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

fn minflt() -> u64 {
    let mut ru = sys::Rusage::default();
    sys::getrusage(sys::RUSAGE_SELF, &mut ru);
    ru.minflt as u64
}

fn errno_name(e: i32) -> &'static str {
    match e {
        sys::EPERM => "EPERM",
        sys::ENOENT => "ENOENT",
        sys::EBADF => "EBADF",
        sys::ENOMEM => "ENOMEM",
        sys::EACCES => "EACCES",
        sys::EFAULT => "EFAULT",
        sys::EINVAL => "EINVAL",
        sys::ENOSYS => "ENOSYS",
        16 => "EBUSY",
        95 => "EOPNOTSUPP",
        _ => "errno",
    }
}

/// An anonymous private read-write mapping of `len` bytes aligned to 2 MiB,
/// so every folio size can map it.
fn map_region(len: usize) -> Result<usize, i32> {
    mthp_user::thp::map_aligned_at(len, SZ_2M)
}

/// Write one byte into every 4 KiB page of `addr..addr+len`.
fn touch(addr: usize, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: `addr..addr+len` is a live read-write mapping of ours.
        unsafe { ((addr + off) as *mut u8).write_volatile(1) };
        off += PAGE;
    }
}

/// Sum of the region as 64-bit words (the sequential stream).
fn stream(addr: usize, len: usize) -> u64 {
    // SAFETY: `addr..addr+len` is a live, populated mapping of ours, 8-byte
    // aligned, and nothing writes it while the slice lives.
    let words = unsafe { core::slice::from_raw_parts(addr as *const u64, len / 8) };
    words.iter().fold(0u64, |a, &w| a.wrapping_add(w))
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The chase node of page `i`: at a pseudo-random cache line of the page.
fn node(addr: usize, i: usize) -> usize {
    addr + i * PAGE + (mix(i as u64) & 63) as usize * 64
}

/// Link one node per page into a single random cycle (Sattolo's
/// algorithm: `perm` becomes a cyclic permutation, page i → page perm[i]).
fn build_chase(addr: usize, pages: usize, perm: &mut [u32]) {
    let perm = &mut perm[..pages];
    for (i, p) in perm.iter_mut().enumerate() {
        *p = i as u32;
    }
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for i in (1..pages).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let j = (s % i as u64) as usize;
        perm.swap(i, j);
    }
    for (i, &p) in perm.iter().enumerate() {
        // SAFETY: both nodes lie inside the populated region (page < pages,
        // line offset < 4096 - 8), 8-byte aligned.
        unsafe { (node(addr, i) as *mut usize).write(node(addr, p as usize)) };
    }
}

/// `steps` dependent loads along the cycle from `start`.
fn chase(start: usize, steps: usize) -> usize {
    let mut p = start;
    for _ in 0..steps {
        // SAFETY: every node holds the address of another node of the
        // populated region (`build_chase`).
        p = unsafe { (p as *const usize).read_volatile() };
    }
    p
}

// ---------------------------------------------------------------- samples

#[derive(Clone, Copy)]
struct Samples {
    v: [f64; MAX_RUNS],
    n: usize,
}

impl Samples {
    const fn new() -> Samples {
        Samples {
            v: [0.0; MAX_RUNS],
            n: 0,
        }
    }
    fn push(&mut self, x: f64) {
        if self.n < MAX_RUNS {
            self.v[self.n] = x;
            self.n += 1;
        }
    }
    /// (median, min, max)
    fn stats(&self) -> Option<(f64, f64, f64)> {
        if self.n == 0 {
            return None;
        }
        let mut s = self.v;
        let s = &mut s[..self.n];
        // Insertion sort: at most MAX_RUNS values, and no float Ord.
        for i in 1..s.len() {
            let mut j = i;
            while j > 0 && s[j - 1] > s[j] {
                s.swap(j - 1, j);
                j -= 1;
            }
        }
        let m = if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        };
        Some((m, s[0], s[s.len() - 1]))
    }
}

fn emit(work: &str, cfg: &Cfg, mib: usize, metric: &str, s: &Samples) {
    if let Some((m, lo, hi)) = s.stats() {
        println!(
            "bench {} {} {} {} {:.3} {:.3} {:.3}",
            work, cfg, mib, metric, m, lo, hi
        );
    }
}

// ---------------------------------------------------------------- PMU

/// One event of a perf report: its name and count (None: unavailable).
#[derive(Clone, Copy)]
struct Ev {
    name: [u8; 24],
    len: usize,
    count: Option<u64>,
}

impl Ev {
    fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.len]).unwrap_or("?")
    }
}

struct PerfReport {
    ev: [Ev; MAX_EVENTS],
    n: usize,
}

/// The kernel's counter file (`/sys/kernel/debug/mthp/perf`), if any.
struct Perf {
    ok: bool,
}

impl Perf {
    fn start(&self, filter: &str) -> bool {
        self.ok && write_file(path!("{PERF}").c(), filter.as_bytes()).is_ok()
    }

    /// Stop and read the report; `buf` is scratch space.
    fn stop(&self, buf: &mut [u8]) -> Option<PerfReport> {
        if !self.ok {
            return None;
        }
        write_file(path!("{PERF}").c(), b"stop").ok()?;
        let n = read_file(path!("{PERF}").c(), buf).ok()?;
        let mut r = PerfReport {
            ev: [Ev {
                name: [0; 24],
                len: 0,
                count: None,
            }; MAX_EVENTS],
            n: 0,
        };
        for line in buf[..n].split(|&c| c == b'\n') {
            let Some(rest) = line.strip_prefix(b"event ") else {
                continue;
            };
            let mut w = rest.splitn(2, |&c| c == b' ');
            let (Some(name), Some(val)) = (w.next(), w.next()) else {
                continue;
            };
            if r.n == MAX_EVENTS {
                break;
            }
            let e = &mut r.ev[r.n];
            e.len = name.len().min(24);
            e.name[..e.len].copy_from_slice(&name[..e.len]);
            e.count = if val.first() == Some(&b'-') {
                None
            } else {
                parse_u64(val)
            };
            r.n += 1;
        }
        Some(r)
    }
}

/// PMU samples of one workload: per event, counts per unit.
struct PmuSamples {
    names: [[u8; 24]; MAX_EVENTS],
    lens: [usize; MAX_EVENTS],
    s: [Samples; MAX_EVENTS],
    n: usize,
}

impl PmuSamples {
    const fn new() -> PmuSamples {
        PmuSamples {
            names: [[0; 24]; MAX_EVENTS],
            lens: [0; MAX_EVENTS],
            s: [Samples::new(); MAX_EVENTS],
            n: 0,
        }
    }

    fn add(&mut self, r: &Option<PerfReport>, per: u64) {
        let Some(r) = r else { return };
        if per == 0 {
            return;
        }
        for e in &r.ev[..r.n] {
            let Some(c) = e.count else { continue };
            let i = match (0..self.n)
                .find(|&i| &self.names[i][..self.lens[i]] == e.name().as_bytes())
            {
                Some(i) => i,
                None if self.n < MAX_EVENTS => {
                    self.names[self.n] = e.name;
                    self.lens[self.n] = e.len;
                    self.n += 1;
                    self.n - 1
                }
                None => continue,
            };
            self.s[i].push(c as f64 / per as f64);
        }
    }

    fn emit(&self, work: &str, cfg: &Cfg, mib: usize, unit: &str) {
        for i in 0..self.n {
            let name = core::str::from_utf8(&self.names[i][..self.lens[i]]).unwrap_or("?");
            let metric = Msg::new(format_args!("pmu:{name}_per_{unit}"));
            emit(work, cfg, mib, metric.as_str(), &self.s[i]);
        }
    }
}

// ---------------------------------------------------------------- sysfs

/// The THP knobs this program writes, saved so they can be put back.
/// The words of one family of THP knobs (`enabled` or `shmem_enabled`:
/// the top level and every `hugepages-<size>kB/` one), to put back.
struct Knobs {
    file: &'static str,
    top: [u8; 16],
    sizes: [[u8; 16]; 9],
}

fn selected(buf: &[u8]) -> &[u8] {
    match (
        buf.iter().position(|&c| c == b'['),
        buf.iter().position(|&c| c == b']'),
    ) {
        (Some(a), Some(b)) if a < b => &buf[a + 1..b],
        _ => b"",
    }
}

fn word16(w: &[u8]) -> [u8; 16] {
    let mut d = [0u8; 16];
    let n = w.len().min(15);
    d[..n].copy_from_slice(&w[..n]);
    d
}

fn unword(w: &[u8; 16]) -> &[u8] {
    &w[..w.iter().position(|&c| c == 0).unwrap_or(16)]
}

impl Knobs {
    fn save(file: &'static str) -> Knobs {
        let mut buf = [0u8; 128];
        let mut k = Knobs {
            file,
            top: [0; 16],
            sizes: [[0; 16]; 9],
        };
        if let Ok(n) = read_file(path!("{THP}/{file}").c(), &mut buf) {
            k.top = word16(selected(&buf[..n]));
        }
        for (i, kb) in SIZES_KB.iter().enumerate() {
            if let Ok(n) = read_file(path!("{THP}/hugepages-{kb}kB/{file}").c(), &mut buf) {
                k.sizes[i] = word16(selected(&buf[..n]));
            }
        }
        k
    }

    fn restore(&self) {
        let file = self.file;
        for (i, kb) in SIZES_KB.iter().enumerate() {
            if !unword(&self.sizes[i]).is_empty() {
                let _ = write_file(
                    path!("{THP}/hugepages-{kb}kB/{file}").c(),
                    unword(&self.sizes[i]),
                );
            }
        }
        if !unword(&self.top).is_empty() {
            let _ = write_file(path!("{THP}/{file}").c(), unword(&self.top));
        }
    }
}

/// Writes the `file` knobs (`enabled` or `shmem_enabled`) so that exactly
/// size `kb` is `always` (4: none), and the top level `top`.
fn select_size(file: &str, kb: usize, top: &[u8]) -> Result<(), Msg> {
    for s in SIZES_KB {
        let w: &[u8] = if s == kb { b"always" } else { b"never" };
        match write_file(path!("{THP}/hugepages-{s}kB/{file}").c(), w) {
            Ok(()) | Err(sys::ENOENT) => {}
            Err(e) => {
                return Err(Msg::new(format_args!(
                    "cannot write hugepages-{s}kB/{file}: {}",
                    errno_name(e)
                )));
            }
        }
    }
    write_file(path!("{THP}/{file}").c(), top)
        .map_err(|e| Msg::new(format_args!("cannot write {THP}/{file}: {}", errno_name(e))))
}

/// Let anonymous faults use exactly folio size `kb` (4: base pages only).
fn set_config(kb: usize) -> Result<(), Msg> {
    // 2M also works through the top-level knob alone (older kernels).
    if kb != 4
        && kb != 2048
        && read_file(path!("{THP}/hugepages-{kb}kB/enabled").c(), &mut [0u8; 64]).is_err()
    {
        return Err(Msg::new(format_args!("no hugepages-{kb}kB knob here")));
    }
    select_size("enabled", kb, if kb == 2048 { b"always" } else { b"never" })
}

/// What `/proc/self/smaps` says about the mapping that starts at `addr`.
#[derive(Default, Clone, Copy)]
struct Smaps {
    found: bool,
    rss_kb: Option<u64>,
    pmd_kb: Option<u64>,
    cont_kb: Option<u64>,
    entries: Option<u64>,
}

fn hex(s: &[u8]) -> Option<usize> {
    let mut v = 0usize;
    if s.is_empty() {
        return None;
    }
    for &c in s {
        let d = (c as char).to_digit(16)? as usize;
        v = v.checked_mul(16)?.checked_add(d)?;
    }
    Some(v)
}

fn smaps(addr: usize, buf: &mut [u8]) -> Smaps {
    let mut r = Smaps::default();
    let Ok(n) = read_file(b"/proc/self/smaps\0", buf) else {
        return r;
    };
    let mut inside = false;
    for line in buf[..n].split(|&c| c == b'\n') {
        if line
            .first()
            .is_some_and(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            let start = line.split(|&c| c == b'-').next().and_then(hex);
            inside = start == Some(addr);
            r.found |= inside;
            continue;
        }
        if !inside {
            continue;
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let (key, val) = (&line[..colon], parse_u64(trim(&line[colon + 1..])));
        match key {
            b"Rss" => r.rss_kb = val,
            b"AnonHugePages" => r.pmd_kb = val,
            b"ContPTEMapped" => r.cont_kb = val,
            b"TlbEntries" => r.entries = val,
            _ => {}
        }
    }
    r
}

// ---------------------------------------------------------------- workloads

struct Ctx<'a> {
    opts: &'a Opts,
    perf: Perf,
    perm: &'a mut [u32],
    buf: &'a mut [u8],
    said_no_entries: bool,
}

/// Every workload over one region size mapped one way, `runs` times.
fn run_config(cx: &mut Ctx, kb: usize, mib: usize) {
    let tag = cx.opts.tag();
    let cfg = Cfg(kb, tag);
    if let Err(m) = set_config(kb) {
        println!("bench-info skip {} {} {}", cfg, mib, m);
        return;
    }
    let len = mib * MIB;
    let pages = len / PAGE;
    let work = cx.opts.work;
    let (mut f_ms, mut f_nr, mut f_ns) = (Samples::new(), Samples::new(), Samples::new());
    let (mut s_ns, mut s_gbs, mut c_ns) = (Samples::new(), Samples::new(), Samples::new());
    let (mut p_fault, mut p_stream, mut p_chase) =
        (PmuSamples::new(), PmuSamples::new(), PmuSamples::new());
    let mut sm = Smaps::default();
    let gib = len as f64 / (1u64 << 30) as f64;
    let mut sink = 0usize;
    for run in 0..cx.opts.runs {
        let addr = match map_region(len) {
            Ok(a) => a,
            Err(e) => {
                println!(
                    "bench-info skip {} {} mmap of {} MiB failed: {}",
                    cfg,
                    mib,
                    mib,
                    errno_name(e)
                );
                return;
            }
        };
        // Fault-in (always done: the other workloads need the memory).
        let on = work & W_FAULT != 0 && cx.perf.start("start both");
        let f0 = minflt();
        let t0 = now_ns();
        touch(addr, len);
        let t1 = now_ns();
        let faults = minflt() - f0;
        let rep = if on { cx.perf.stop(cx.buf) } else { None };
        if work & W_FAULT != 0 {
            let ns = (t1 - t0) as f64;
            f_ms.push(ns / 1e6 / gib);
            f_nr.push(faults as f64 / gib);
            if faults > 0 {
                f_ns.push(ns / faults as f64);
                p_fault.add(&rep, faults);
            }
        }
        if run == 0 {
            sm = smaps(addr, cx.buf);
        }
        if work & W_STREAM != 0 {
            let phase = if run == 0 {
                tlb_phase_start("stream", &cfg, mib)
            } else {
                None
            };
            let on = cx.perf.start("start user");
            let t0 = now_ns();
            sink ^= core::hint::black_box(stream(addr, len)) as usize;
            let t1 = now_ns();
            if let Some(id) = phase {
                tlb_mark(id);
            }
            let rep = if on { cx.perf.stop(cx.buf) } else { None };
            let words = (len / 8) as f64;
            s_ns.push((t1 - t0) as f64 / words);
            s_gbs.push(gib / ((t1 - t0) as f64 / 1e9));
            p_stream.add(&rep, (len / 8) as u64);
        }
        if work & W_CHASE != 0 {
            build_chase(addr, pages, cx.perm);
            let steps = cx.opts.steps;
            // Warm up (caches, and TCG's software TLB) untimed.
            let start = chase(node(addr, 0), pages.min(steps / 4));
            let phase = if run == 0 {
                tlb_phase_start("chase", &cfg, mib)
            } else {
                None
            };
            let on = cx.perf.start("start user");
            let t0 = now_ns();
            sink ^= core::hint::black_box(chase(start, steps));
            let t1 = now_ns();
            if let Some(id) = phase {
                tlb_mark(id);
            }
            let rep = if on { cx.perf.stop(cx.buf) } else { None };
            c_ns.push((t1 - t0) as f64 / steps as f64);
            p_chase.add(&rep, steps as u64);
        }
        sys::munmap(addr, len);
    }
    core::hint::black_box(sink);
    if work & W_FAULT != 0 {
        emit("fault", &cfg, mib, "ms_per_gib", &f_ms);
        emit("fault", &cfg, mib, "faults_per_gib", &f_nr);
        emit("fault", &cfg, mib, "ns_per_fault", &f_ns);
        p_fault.emit("fault", &cfg, mib, "fault");
    }
    if work & W_STREAM != 0 {
        emit("stream", &cfg, mib, "ns_per_access", &s_ns);
        emit("stream", &cfg, mib, "gib_per_s", &s_gbs);
        p_stream.emit("stream", &cfg, mib, "access");
    }
    if work & W_CHASE != 0 {
        emit("chase", &cfg, mib, "ns_per_access", &c_ns);
        p_chase.emit("chase", &cfg, mib, "access");
    }
    if !sm.found {
        println!(
            "bench-info smaps {} {} region not found in /proc/self/smaps",
            cfg, mib
        );
        return;
    }
    let one = |metric: &str, v: Option<u64>| {
        if let Some(v) = v {
            println!("bench map {} {} {} {} {} {}", cfg, mib, metric, v, v, v);
        }
    };
    one("rss_kb", sm.rss_kb);
    one("pmd_kb", sm.pmd_kb);
    one("cont_kb", sm.cont_kb);
    one("tlb_entries", sm.entries);
    if sm.entries.is_none() && !cx.said_no_entries {
        cx.said_no_entries = true;
        println!(
            "bench-info tlb_entries unavailable: no TlbEntries line in /proc/self/smaps (not the mthp kernel)"
        );
    }
}

/// Let shared anonymous faults use exactly folio size `kb` (4: base pages
/// only): that size's `shmem_enabled` `always`, every other `never`, the
/// top level `never`.
fn set_shmem_config(kb: usize) -> Result<(), Msg> {
    if kb != 4
        && read_file(
            path!("{THP}/hugepages-{kb}kB/shmem_enabled").c(),
            &mut [0u8; 64],
        )
        .is_err()
    {
        return Err(Msg::new(format_args!(
            "no hugepages-{kb}kB/shmem_enabled here"
        )));
    }
    select_size("shmem_enabled", kb, b"never")
}

/// Fault-in of a `MAP_SHARED|MAP_ANONYMOUS` region of `mib` MiB (2 MiB
/// aligned) with shmem folios of `kb`, one write per 4K page: ms per GiB,
/// faults, ns and counter events per fault (`shfault` figures; the same
/// metrics as `fault`).
fn bench_shfault(cx: &mut Ctx, kb: usize, mib: usize) {
    let cfg = Cfg(kb, "");
    let saved = Knobs::save("shmem_enabled");
    if let Err(m) = set_shmem_config(kb) {
        println!("bench-info skip shfault {} {} {}", cfg, mib, m);
        saved.restore();
        return;
    }
    let len = mib * MIB;
    let gib = len as f64 / (1u64 << 30) as f64;
    let (mut f_ms, mut f_nr, mut f_ns) = (Samples::new(), Samples::new(), Samples::new());
    let mut p_fault = PmuSamples::new();
    for _ in 0..cx.opts.runs {
        let addr = match map_region(len).and_then(|hole| {
            let a = sys::mmap(
                hole,
                len,
                sys::PROT_READ | sys::PROT_WRITE,
                sys::MAP_SHARED | sys::MAP_ANONYMOUS | sys::MAP_FIXED,
                -1,
                0,
            );
            if a < 0 {
                Err(-(a as i32))
            } else {
                Ok(a as usize)
            }
        }) {
            Ok(a) => a,
            Err(e) => {
                println!(
                    "bench-info skip shfault {} {} shared mmap failed: {}",
                    cfg,
                    mib,
                    errno_name(e)
                );
                break;
            }
        };
        let on = cx.perf.start("start both");
        let f0 = minflt();
        let t0 = now_ns();
        touch(addr, len);
        let t1 = now_ns();
        let faults = minflt() - f0;
        let rep = if on { cx.perf.stop(cx.buf) } else { None };
        let ns = (t1 - t0) as f64;
        f_ms.push(ns / 1e6 / gib);
        f_nr.push(faults as f64 / gib);
        if faults > 0 {
            f_ns.push(ns / faults as f64);
            p_fault.add(&rep, faults);
        }
        sys::munmap(addr, len);
    }
    saved.restore();
    emit("shfault", &cfg, mib, "ms_per_gib", &f_ms);
    emit("shfault", &cfg, mib, "faults_per_gib", &f_nr);
    emit("shfault", &cfg, mib, "ns_per_fault", &f_ns);
    p_fault.emit("shfault", &cfg, mib, "fault");
}

/// Runs of the collapse and copy figures at least: each takes about a
/// millisecond under TCG and their spread between runs is wide (the first
/// run is cold, and QEMU resizes its software TLB as it goes), so a median
/// of 5 moved by 20% between boots; one of 21 is stable to a few percent.
const COLLAPSE_MIN_RUNS: usize = 21;

/// MADV_COLLAPSE of a 4K-mapped 2 MiB region, against copying 2 MiB.
fn bench_collapse(cx: &mut Ctx) {
    let runs = cx.opts.runs.max(COLLAPSE_MIN_RUNS);
    let cfg = Cfg(2048, "");
    if let Err(m) = set_config(4) {
        println!("bench-info collapse unavailable: {}", m);
        return;
    }
    let mut col = Samples::new();
    for _ in 0..runs {
        let Ok(a) = map_region(SZ_2M) else {
            println!("bench-info collapse unavailable: mmap failed");
            return;
        };
        touch(a, SZ_2M);
        let t0 = now_ns();
        let r = check(sys::madvise(a, SZ_2M, MADV_COLLAPSE));
        let t1 = now_ns();
        let sm = smaps(a, cx.buf);
        sys::munmap(a, SZ_2M);
        match r {
            Err(e) => {
                println!(
                    "bench-info collapse unavailable: madvise(MADV_COLLAPSE) failed: {} (not available yet)",
                    errno_name(e)
                );
                break;
            }
            Ok(_) if sm.pmd_kb.is_some_and(|k| k < 2048) => {
                println!(
                    "bench-info collapse unavailable: MADV_COLLAPSE succeeded but AnonHugePages is {} kB",
                    sm.pmd_kb.unwrap_or(0)
                );
                break;
            }
            Ok(_) => col.push((t1 - t0) as f64 / 1e3),
        }
    }
    emit("collapse", &cfg, 2, "us_per_2m", &col);
    // The reference: copying 2 MiB between populated regions in user space.
    // Source and destination are 2 MiB + 4 KiB apart in one mapping: at a
    // distance of exactly 2 MiB each source page and its destination page
    // share a slot of QEMU's direct-mapped software TLB whenever it has 512
    // entries, and the copy then ran ~14x slower in some boots.
    emit("copy", &cfg, 2, "us_per_2m", &copy_2m(runs));
}

/// Microseconds to copy 2 MiB between two populated regions in user
/// space, `runs` times (the reference for collapse and promotion).
fn copy_2m(runs: usize) -> Samples {
    let mut cp = Samples::new();
    let span = 2 * SZ_2M + 4096;
    if let Ok(a) = map_region(span) {
        let (s, d) = (a, a + SZ_2M + 4096);
        touch(s, SZ_2M);
        touch(d, SZ_2M);
        for _ in 0..runs {
            let t0 = now_ns();
            // SAFETY: two disjoint 2 MiB ranges of one live mapping of ours.
            unsafe { core::ptr::copy_nonoverlapping(s as *const u8, d as *mut u8, SZ_2M) };
            core::hint::black_box(d);
            let t1 = now_ns();
            cp.push((t1 - t0) as f64 / 1e3);
        }
        sys::munmap(a, span);
    }
    cp
}

/// Reservations (issue 17, this kernel's `hugepages-<size>kB/reserve`)
/// against eager THP and 4K pages, for 64K and 2M blocks over `mib` MiB:
/// RSS after one write per block (`sparse_rss_kb`), microseconds to
/// populate the region page by page per 2 MiB (`us_populate_per_2m`),
/// the last fault of each block (the promoting one with reservations:
/// `us_last_fault`), and the translation entries after (`tlb_entries`,
/// ours only).  Modes: `resv` (ours), `thp` (that size `always`), `4k`.
fn bench_reserve(cx: &mut Ctx) {
    let mib = cx.opts.sizes.items().first().copied().unwrap_or(64);
    let len = mib * MIB;
    for kb in [64usize, 2048] {
        let knob = path!("{THP}/hugepages-{kb}kB/reserve");
        let ours = read_file(knob.c(), &mut [0u8; 8]).is_ok();
        let modes: &[(&str, usize, bool)] = if ours {
            &[("resv", 0, true), ("thp", 0, false), ("4k", 4, false)]
        } else {
            &[("thp", 0, false), ("4k", 4, false)]
        };
        let block = kb * 1024;
        for &(tag, size, resv) in modes {
            if let Err(m) = set_config(if size == 4 { 4 } else { kb }) {
                println!("bench-info reserve unavailable: {}", m);
                return;
            }
            if ours && write_file(knob.c(), if resv { b"1" } else { b"0" }).is_err() {
                println!("bench-info reserve unavailable: cannot write {kb}kB reserve");
                return;
            }
            let (mut rss, mut pop, mut last, mut ent) = (
                Samples::new(),
                Samples::new(),
                Samples::new(),
                Samples::new(),
            );
            for _ in 0..cx.opts.runs {
                let Ok(a) = map_region(len) else {
                    println!("bench-info reserve unavailable: mmap failed");
                    return;
                };
                // One write per block, at its first page.
                for off in (0..len).step_by(block) {
                    // SAFETY: `a..a + len` is our mapping.
                    unsafe { core::ptr::write_volatile((a + off) as *mut u64, 1) };
                }
                if let Some(k) = smaps(a, cx.buf).rss_kb {
                    rss.push(k as f64);
                }
                // The rest of every block page by page, in address order;
                // the last page of each block timed on its own.
                let (mut t_all, mut t_last) = (0u64, 0u64);
                for b in (0..len).step_by(block) {
                    let t0 = now_ns();
                    for off in (b + PAGE..b + block - PAGE).step_by(PAGE) {
                        // SAFETY: as above.
                        unsafe { core::ptr::write_volatile((a + off) as *mut u64, 1) };
                    }
                    let t1 = now_ns();
                    // SAFETY: as above.
                    unsafe { core::ptr::write_volatile((a + b + block - PAGE) as *mut u64, 1) };
                    let t2 = now_ns();
                    t_all += t2 - t0;
                    t_last += t2 - t1;
                }
                pop.push(t_all as f64 / 1e3 / (len / SZ_2M) as f64);
                last.push(t_last as f64 / 1e3 / (len / block) as f64);
                if let Some(e) = smaps(a, cx.buf).entries {
                    ent.push(e as f64);
                }
                sys::munmap(a, len);
            }
            let cfg = Cfg(kb, tag);
            emit("reserve", &cfg, mib, "sparse_rss_kb", &rss);
            emit("reserve", &cfg, mib, "us_populate_per_2m", &pop);
            emit("reserve", &cfg, mib, "us_last_fault", &last);
            emit("reserve", &cfg, mib, "tlb_entries", &ent);
        }
        if ours {
            let _ = write_file(knob.c(), b"0");
        }
    }
    emit(
        "reserve",
        &Cfg(2048, "copy"),
        mib,
        "us_copy_2m",
        &copy_2m(cx.opts.runs.max(5)),
    );
}

/// Split a PMD-mapped 2 MiB folio to each order through
/// `/sys/kernel/debug/split_huge_pages` (Linux's debugfs interface).
fn bench_split(cx: &mut Ctx) {
    let runs = cx.opts.runs;
    if let Err(m) = set_config(2048) {
        println!("bench-info split unavailable: {}", m);
        return;
    }
    let pid = sys::getpid();
    for order in [0usize, 2, 3, 4, 5, 6, 7, 8] {
        let mut s = Samples::new();
        for _ in 0..runs {
            let Ok(a) = map_region(SZ_2M) else {
                println!("bench-info split unavailable: mmap failed");
                return;
            };
            touch(a, SZ_2M);
            let sm = smaps(a, cx.buf);
            if sm.pmd_kb != Some(2048) {
                sys::munmap(a, SZ_2M);
                println!(
                    "bench-info split unavailable: the 2 MiB region is not PMD-mapped (AnonHugePages {:?} kB)",
                    sm.pmd_kb
                );
                return;
            }
            let cmd = Msg::new(format_args!("{},{:#x},{:#x},{}", pid, a, a + SZ_2M, order));
            let t0 = now_ns();
            let r = write_file(path!("{SPLIT}").c(), cmd.as_str().as_bytes());
            let t1 = now_ns();
            let after = smaps(a, cx.buf);
            sys::munmap(a, SZ_2M);
            if let Err(e) = r {
                println!(
                    "bench-info split unavailable: write {} to {}: {} (not available yet)",
                    cmd,
                    SPLIT,
                    errno_name(e)
                );
                return;
            }
            if after.pmd_kb.is_some_and(|k| k > 0) {
                println!(
                    "bench-info split unavailable: split to order {} left AnonHugePages {:?} kB",
                    order, after.pmd_kb
                );
                return;
            }
            s.push((t1 - t0) as f64 / 1e3);
        }
        let metric = Msg::new(format_args!("us_per_split_to_order{order}"));
        emit("split", &Cfg(2048, ""), 2, metric.as_str(), &s);
    }
}

// ---------------------------------------------------------------- COW

/// What the child of one [`cow_once`] run measured.
#[derive(Clone, Copy, Default)]
struct CowRun {
    /// `TlbEntries` of the child's region after its writes (0: no line).
    entries: u64,
    /// Nanoseconds for the writes (one word per 64 KiB: the COW faults).
    first_ns: u64,
    /// Nanoseconds to rewrite the whole region afterwards.
    rewrite_ns: u64,
    /// `MemFree` drop over the writes, in KiB (the copies).
    extra_kb: u64,
}

/// Fork with `mib` MiB of `kb` folios mapped; the child writes one word per
/// 64 KiB, then rewrites every word, and reports through a pipe.
fn cow_once(cx: &mut Ctx, mib: usize) -> Option<CowRun> {
    let len = mib * MIB;
    let a = map_region(len).ok()?;
    touch(a, len);
    let mut fds = [0i32; 2];
    if sys::syscall(sys::nr::PIPE2, &[fds.as_mut_ptr() as usize, 0]) != 0 {
        sys::munmap(a, len);
        return None;
    }
    let pid = sys::fork();
    if pid == 0 {
        sys::close(fds[0]);
        let free0 = meminfo(cx.buf, b"MemFree:").unwrap_or(0);
        let t0 = now_ns();
        for off in (0..len).step_by(64 << 10) {
            // SAFETY: `a..a + len` is this process's mapping (inherited).
            unsafe { core::ptr::write_volatile((a + off) as *mut u64, off as u64) };
        }
        let t1 = now_ns();
        let free1 = meminfo(cx.buf, b"MemFree:").unwrap_or(0);
        let entries = smaps(a, cx.buf).entries.unwrap_or(0);
        let t2 = now_ns();
        for off in (0..len).step_by(8) {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile((a + off) as *mut u64, !(off as u64)) };
        }
        let t3 = now_ns();
        let r = [
            entries,
            t1 - t0,
            t3 - t2,
            (free0.saturating_sub(free1) / 1024) as u64,
        ];
        let mut b = [0u8; 32];
        for (i, v) in r.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        sys::write(fds[1], &b);
        sys::exit(0);
    }
    sys::close(fds[1]);
    let mut b = [0u8; 32];
    let n = if pid > 0 {
        sys::read(fds[0], &mut b)
    } else {
        -1
    };
    let mut st = 0;
    if pid > 0 {
        sys::wait4(pid, &mut st, 0);
    }
    sys::close(fds[0]);
    sys::munmap(a, len);
    if n != 32 {
        return None;
    }
    let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    Some(CowRun {
        entries: v(0),
        first_ns: v(1),
        rewrite_ns: v(2),
        extra_kb: v(3),
    })
}

/// Fork + one write per 64 KiB in the child over `sizes[0]` MiB of 64K and
/// of 2M folios: the child's translation entries (this kernel only), the
/// time of the writes and of a full rewrite, and the memory the copies
/// took; here with `large_cow` 1 (`-lcow`) and 0 (`-4kcow`), on Linux as
/// it is (4K COW).
fn bench_cow(cx: &mut Ctx) {
    let mib = cx.opts.sizes.items().first().copied().unwrap_or(64);
    let knob = path!("{THP}/large_cow");
    let ours = read_file(knob.c(), &mut [0u8; 8]).is_ok();
    let modes: &[(&str, Option<&[u8]>)] = if ours {
        &[("lcow", Some(b"1")), ("4kcow", Some(b"0"))]
    } else {
        &[("", None)]
    };
    for kb in [64usize, 2048] {
        if let Err(m) = set_config(kb) {
            println!("bench-info cow unavailable: {}", m);
            continue;
        }
        for &(tag, v) in modes {
            if let Some(v) = v
                && write_file(knob.c(), v).is_err()
            {
                println!("bench-info cow unavailable: cannot write large_cow");
                return;
            }
            let (mut e, mut f, mut r, mut x) = (
                Samples::new(),
                Samples::new(),
                Samples::new(),
                Samples::new(),
            );
            for _ in 0..cx.opts.runs {
                let Some(c) = cow_once(cx, mib) else {
                    println!("bench-info cow unavailable: the fork run failed");
                    return;
                };
                if c.entries > 0 {
                    e.push(c.entries as f64);
                }
                f.push(c.first_ns as f64 / 1e3);
                r.push(c.rewrite_ns as f64 / 1e3);
                x.push(c.extra_kb as f64);
            }
            let cfg = Cfg(kb, tag);
            emit("cow", &cfg, mib, "child_tlb_entries", &e);
            emit("cow", &cfg, mib, "us_child_writes", &f);
            emit("cow", &cfg, mib, "us_child_rewrite", &r);
            emit("cow", &cfg, mib, "extra_kb", &x);
        }
    }
    if ours {
        let _ = write_file(knob.c(), b"1");
    }
}

// ---------------------------------------------------------------- main

const MADV_PAGEOUT: usize = 21;
const SWAP_DEV: &[u8] = b"/dev/vda\0";
/// Folio sizes of the swap workload: order 0, the usual mTHP, PMD.
const SWAP_KB: [usize; 3] = [4, 64, 2048];

fn majflt() -> u64 {
    let mut ru = sys::Rusage::default();
    sys::getrusage(sys::RUSAGE_SELF, &mut ru);
    ru.majflt as u64
}

/// One `/proc/vmstat` counter (None: no such line or no file).
fn vmstat(buf: &mut [u8], key: &str) -> Option<u64> {
    let n = read_file(b"/proc/vmstat\0", buf).ok()?;
    buf[..n].split(|&c| c == b'\n').find_map(|l| {
        let rest = l.strip_prefix(key.as_bytes())?;
        rest.strip_prefix(b" ").and_then(parse_u64)
    })
}

/// A per-size `stats/<name>` counter of `kb` folios (swap and fault
/// counters): the sysfs file for the large sizes, `/proc/vmstat`
/// `pswpout`/`pswpin` pages for 4K (order 0 has no per-size directory,
/// and a 4K folio is never split).
fn size_stat(buf: &mut [u8], kb: usize, name: &str) -> Option<u64> {
    if kb == 4 {
        return match name {
            "swpout" => vmstat(buf, "pswpout"),
            "swpin" => vmstat(buf, "pswpin"),
            _ => Some(0),
        };
    }
    let n = read_file(path!("{THP}/hugepages-{kb}kB/stats/{name}").c(), buf).ok()?;
    parse_u64(&buf[..n])
}

/// The pattern of the 8-byte word at `off`: non-zero everywhere, so no
/// kernel can skip a page as zero-filled (notes §0.3) and a page swapped
/// in from the wrong slot is caught.
fn pattern(off: usize) -> u64 {
    mix(off as u64) | 1
}

/// A region of `len` bytes mapped (2 MiB aligned) and filled with
/// [`pattern`], or `None` after a `bench-info skip <what>` line.
/// Reads one word per 4K page of `addr..addr + len` (the swap-in being
/// measured; a write would change the data checked after), counting those
/// that differ from [`pattern`].
fn read_pages(addr: usize, len: usize) -> usize {
    let mut bad = 0;
    for off in (0..len).step_by(PAGE) {
        // SAFETY: `addr..addr + len` is the caller's private mapping.
        let v = unsafe { ((addr + off) as *const u64).read_volatile() };
        bad += (v != pattern(off)) as usize;
    }
    bad
}

/// Every word of `addr..addr + len` checked against [`pattern`]: how many
/// differ.
fn verify_region(addr: usize, len: usize) -> usize {
    let mut bad = 0;
    for off in (0..len).step_by(8) {
        // SAFETY: `addr..addr + len` is the caller's private mapping.
        if unsafe { ((addr + off) as *const u64).read_volatile() } != pattern(off) {
            bad += 1;
        }
    }
    bad
}

fn filled_region(what: &str, cfg: &Cfg, mib: usize, len: usize) -> Option<usize> {
    let addr = match map_region(len) {
        Ok(a) => a,
        Err(e) => {
            println!(
                "bench-info skip {} {} {} mmap: {}",
                what,
                cfg,
                mib,
                errno_name(e)
            );
            return None;
        }
    };
    for off in (0..len).step_by(8) {
        // SAFETY: `addr..addr + len` is our private writable mapping.
        unsafe { ((addr + off) as *mut u64).write_volatile(pattern(off)) };
    }
    Some(addr)
}

/// Swap-out (`MADV_PAGEOUT`) and swap-in (touching every page) of a
/// region mapped 4K, 64K and 2M, through `/dev/vda`: MiB/s each way,
/// whether the folios went out whole (per-size `swpout` against
/// `swpout_fallback`), instructions per MiB when the kernel counts them
/// (arm64 `-icount`), and major faults.  Skipped with a line when there is
/// no swap disk.  On Linux the disk is first marked non-rotational, as
/// 6.12 only gives large folios swap clusters on an SSD (notes §0.1).
fn bench_swap(cx: &mut Ctx) {
    if !swap_enable("swap") {
        return;
    }
    let mib = cx.opts.sizes.items().first().copied().unwrap_or(16);
    let len = mib * MIB;
    // `configs=` narrows the sizes (all three are in the default list).
    for kb in SWAP_KB
        .into_iter()
        .filter(|kb| cx.opts.configs.items().contains(kb))
    {
        let cfg = Cfg(kb, "");
        if let Err(m) = set_config(kb) {
            println!("bench-info skip swap {} {} {}", cfg, mib, m);
            continue;
        }
        let (mut out_s, mut in_s, mut whole, mut majf) = (
            Samples::new(),
            Samples::new(),
            Samples::new(),
            Samples::new(),
        );
        let (mut p_out, mut p_in) = (PmuSamples::new(), PmuSamples::new());
        let mut bad = 0usize;
        let mut pgmaj = Samples::new();
        for _ in 0..cx.opts.runs {
            let Some(addr) = filled_region("swap", &cfg, mib, len) else {
                break;
            };
            let o0 = size_stat(cx.buf, kb, "swpout");
            let f0 = size_stat(cx.buf, kb, "swpout_fallback");
            let on = cx.opts.swapout_perf && cx.perf.start("start both");
            let t0 = now_ns();
            let r = sys::madvise(addr, len, MADV_PAGEOUT);
            let t1 = now_ns();
            let rep = if on { cx.perf.stop(cx.buf) } else { None };
            if r != 0 {
                println!(
                    "bench-info skip swap {} {} MADV_PAGEOUT: {}",
                    cfg,
                    mib,
                    errno_name(-r as i32)
                );
                sys::munmap(addr, len);
                break;
            }
            out_s.push(mib as f64 / ((t1 - t0) as f64 / 1e9));
            p_out.add(&rep, mib as u64);
            let (o1, f1) = (
                size_stat(cx.buf, kb, "swpout"),
                size_stat(cx.buf, kb, "swpout_fallback"),
            );
            if let (Some(o0), Some(f0), Some(o1), Some(f1)) = (o0, f0, o1, f1) {
                // Folios of this size that left: out whole, or split first.
                let folios = (len / (kb * 1024)) as f64;
                let (o, f) = ((o1 - o0) as f64, (f1 - f0) as f64);
                let o = if kb == 4 { o } else { o.min(folios) };
                if o + f > 0.0 {
                    whole.push(o / (o + f));
                }
            }
            let m0 = majflt();
            let g0 = vmstat(cx.buf, "pgmajfault");
            let on = cx.opts.swapin_perf && cx.perf.start("start both");
            let t0 = now_ns();
            bad += read_pages(addr, len);
            let t1 = now_ns();
            let rep = if on { cx.perf.stop(cx.buf) } else { None };
            majf.push((majflt() - m0) as f64);
            if let (Some(g0), Some(g1)) = (g0, vmstat(cx.buf, "pgmajfault")) {
                pgmaj.push((g1 - g0) as f64);
            }
            in_s.push(mib as f64 / ((t1 - t0) as f64 / 1e9));
            p_in.add(&rep, mib as u64);
            bad += verify_region(addr, len);
            sys::munmap(addr, len);
        }
        if bad != 0 {
            println!(
                "bench-info swap {} {} CORRUPT: {} words differ after swap-in",
                cfg, mib, bad
            );
        }
        emit("swapout", &cfg, mib, "mib_per_s", &out_s);
        emit("swapin", &cfg, mib, "mib_per_s", &in_s);
        emit("swapout", &cfg, mib, "whole_fraction", &whole);
        emit("swapin", &cfg, mib, "majflt", &majf);
        emit("swapin", &cfg, mib, "pgmajfault", &pgmaj);
        p_out.emit("swapout", &cfg, mib, "mib");
        p_in.emit("swapin", &cfg, mib, "mib");
    }
    swap_disable("swap");
}

/// How long the cold swap-in waits for the swap-out's writes to end, in
/// guest time: both kernels write asynchronously, and a bound turns a
/// write that never ends into a `bench-info` line instead of a hang.
const WRITEBACK_WAIT_NS: u64 = 5_000_000_000;

/// Polls `/proc/meminfo` `Writeback:` until it is 0, sleeping 1 ms between
/// polls so that the CPU the disk's completions need is not kept busy; the
/// guest ns it took, or why it gave up.
fn wait_writeback(buf: &mut [u8]) -> Result<u64, Msg> {
    let t0 = now_ns();
    loop {
        let Some(wb) = meminfo(buf, b"Writeback:") else {
            return Err(Msg::new(format_args!("no Writeback: in /proc/meminfo")));
        };
        let t = now_ns() - t0;
        if wb == 0 {
            return Ok(t);
        }
        if t >= WRITEBACK_WAIT_NS {
            return Err(Msg::new(format_args!(
                "{} kB still in writeback after {} ms",
                wb / 1024,
                t / 1_000_000
            )));
        }
        sys::nanosleep(&sys::Timespec {
            sec: 0,
            nsec: 1_000_000,
        });
    }
}

/// Empties the swap cache of the region just paged out (`len` bytes): a
/// forked child writes `MemFree` + 2x `len` + 16 MiB of anonymous memory
/// and exits, so reclaim has to free the region's clean swap-cache folios
/// (cheap to drop: their data is on the disk) besides swapping out other
/// pages.  Twice the region because reclaim does not take the swap cache
/// alone; 4K pages (`MADV_NOHUGEPAGE`) so that the pressure is the same
/// whatever folio size the region has.  A child, so that its memory and
/// swap slots are gone again before the timed loop.
fn evict_swap_cache(buf: &mut [u8], len: usize) -> Result<(), Msg> {
    let Some(free) = meminfo(buf, b"MemFree:") else {
        return Err(Msg::new(format_args!("no MemFree: in /proc/meminfo")));
    };
    let want = (free + 2 * len + 16 * MIB).next_multiple_of(PAGE);
    let pid = sys::fork();
    if pid == 0 {
        sys::exit(if mthp_user::thp::write_anon(want, true) {
            0
        } else {
            2
        });
    }
    if pid < 0 {
        return Err(Msg::new(format_args!("fork: {}", errno_name(-pid as i32))));
    }
    let mut st = 0i32;
    let r = sys::wait4(pid, &mut st, 0);
    if r != pid {
        return Err(Msg::new(format_args!("wait4: {}", errno_name(-r as i32))));
    }
    // A normal exit with status 0 (`WIFEXITED` and `WEXITSTATUS` by hand).
    if st & 0x7f != 0 || (st >> 8) & 0xff != 0 {
        return Err(Msg::new(format_args!(
            "pressure child ({} MiB) ended with wait status {:#x}",
            want / MIB,
            st
        )));
    }
    Ok(())
}

/// Swap-in from the disk: the swap workload's swap-in reads the region
/// right after `MADV_PAGEOUT`, while its folios are still in the swap
/// cache (clean once written, as Linux keeps them), so it measures cache
/// hits.  Here, per folio size (4K, 64K, 2M; the same region and data as
/// [`bench_swap`]), the region is paged out, writeback is waited for
/// ([`wait_writeback`]), the swap cache emptied by memory pressure
/// ([`evict_swap_cache`]), and then every 4K page read once (timed, data
/// verified after): MiB/s, the fraction of the region's pages `pswpin`
/// says came from the disk (readahead included, capped at 1), major
/// faults, and `SwapCached:` after the pressure (what the pressure left).
fn bench_swap_cold(cx: &mut Ctx) {
    if !swap_enable("swap_cold") {
        return;
    }
    let mib = cx.opts.sizes.items().first().copied().unwrap_or(16);
    let len = mib * MIB;
    let pages = len / PAGE;
    for kb in SWAP_KB
        .into_iter()
        .filter(|kb| cx.opts.configs.items().contains(kb))
    {
        let cfg = Cfg(kb, "");
        if let Err(m) = set_config(kb) {
            println!("bench-info skip swap_cold {} {} {}", cfg, mib, m);
            continue;
        }
        let (mut in_s, mut disk, mut majf, mut pgmaj, mut cached, mut wb_ms) = (
            Samples::new(),
            Samples::new(),
            Samples::new(),
            Samples::new(),
            Samples::new(),
            Samples::new(),
        );
        let mut p_in = PmuSamples::new();
        let mut bad = 0usize;
        for _ in 0..cx.opts.runs {
            let Some(addr) = filled_region("swap_cold", &cfg, mib, len) else {
                break;
            };
            let r = sys::madvise(addr, len, MADV_PAGEOUT);
            if r != 0 {
                println!(
                    "bench-info skip swap_cold {} {} MADV_PAGEOUT: {}",
                    cfg,
                    mib,
                    errno_name(-r as i32)
                );
                sys::munmap(addr, len);
                break;
            }
            // Writeback before the pressure (a folio under writeback cannot
            // be dropped) and after it (the child's own writes).
            let ready = wait_writeback(cx.buf)
                .inspect(|&ns| wb_ms.push(ns as f64 / 1e6))
                .and_then(|_| evict_swap_cache(cx.buf, len))
                .and_then(|()| wait_writeback(cx.buf));
            if let Err(m) = ready {
                println!("bench-info skip swap_cold {} {} {}", cfg, mib, m);
                sys::munmap(addr, len);
                break;
            }
            if let Some(c) = meminfo(cx.buf, b"SwapCached:") {
                cached.push((c / 1024) as f64);
            }
            let m0 = majflt();
            let g0 = vmstat(cx.buf, "pgmajfault");
            let s0 = vmstat(cx.buf, "pswpin");
            let on = cx.opts.swapin_perf && cx.perf.start("start both");
            let t0 = now_ns();
            bad += read_pages(addr, len);
            let t1 = now_ns();
            let rep = if on { cx.perf.stop(cx.buf) } else { None };
            majf.push((majflt() - m0) as f64);
            if let (Some(g0), Some(g1)) = (g0, vmstat(cx.buf, "pgmajfault")) {
                pgmaj.push((g1 - g0) as f64);
            }
            if let (Some(s0), Some(s1)) = (s0, vmstat(cx.buf, "pswpin")) {
                // Readahead may read pages besides the region's (and the
                // pressure may have sent some of ours out): at most 1.
                disk.push(((s1 - s0) as f64 / pages as f64).min(1.0));
            }
            in_s.push(mib as f64 / ((t1 - t0) as f64 / 1e9));
            p_in.add(&rep, mib as u64);
            bad += verify_region(addr, len);
            sys::munmap(addr, len);
        }
        if bad != 0 {
            println!(
                "bench-info swap_cold {} {} CORRUPT: {} words differ after swap-in",
                cfg, mib, bad
            );
        }
        emit("swapin_cold", &cfg, mib, "mib_per_s", &in_s);
        emit("swapin_cold", &cfg, mib, "from_disk_fraction", &disk);
        emit("swapin_cold", &cfg, mib, "majflt", &majf);
        emit("swapin_cold", &cfg, mib, "pgmajfault", &pgmaj);
        emit("swapin_cold", &cfg, mib, "swapcached_kb", &cached);
        emit("swapin_cold", &cfg, mib, "writeback_ms", &wb_ms);
        p_in.emit("swapin_cold", &cfg, mib, "mib");
    }
    swap_disable("swap_cold");
}

/// `swapon /dev/vda` for workload `what` (after marking the disk
/// non-rotational on Linux, see [`bench_swap`]); false after a
/// `bench-info <what> unavailable` line.
fn swap_enable(what: &str) -> bool {
    if read_file(SWAP_DEV, &mut [0u8; 8]) == Err(sys::ENOENT) {
        println!("bench-info {what} unavailable: no /dev/vda (boot without a swap disk)");
        return false;
    }
    match write_file(b"/sys/block/vda/queue/rotational\0", b"0") {
        Ok(()) | Err(sys::ENOENT) => {}
        Err(e) => println!(
            "bench-info {what} rotational not written: {}",
            errno_name(e)
        ),
    }
    let r = sys::swapon(SWAP_DEV, 0);
    if r != 0 {
        println!(
            "bench-info {what} unavailable: swapon /dev/vda: {}",
            errno_name(-r as i32)
        );
        return false;
    }
    true
}

/// `swapoff /dev/vda` at the end of workload `what`.
fn swap_disable(what: &str) {
    let r = sys::swapoff(SWAP_DEV);
    if r != 0 {
        println!(
            "bench-info {what} swapoff /dev/vda: {}",
            errno_name(-r as i32)
        );
    }
}

/// A `/proc/meminfo` line's value in bytes (`key` with its colon).
fn meminfo(buf: &mut [u8], key: &[u8]) -> Option<usize> {
    let n = read_file(b"/proc/meminfo\0", buf).ok()?;
    buf[..n].split(|&c| c == b'\n').find_map(|l| {
        let rest = l.strip_prefix(key)?;
        let kb = trim(rest).strip_suffix(b"kB").map(trim)?;
        parse_u64(kb).map(|v| v as usize * 1024)
    })
}

/// The word between `[` and `]` of a knob file (`defrag` here).
fn knob_word(file: &str, buf: &mut [u8]) -> [u8; 16] {
    match read_file(path!("{file}").c(), buf) {
        Ok(n) => word16(selected(&buf[..n])),
        Err(_) => [0; 16],
    }
}

/// Only folio size `kb` enabled (4: none), switching from `prev`: two
/// knob writes instead of [`set_config`]'s ten, as the fill switches per
/// 64 KiB slot.
fn switch_size(prev: usize, kb: usize) -> Result<(), i32> {
    if prev == kb {
        return Ok(());
    }
    for (s, w) in [(prev, b"never" as &[u8]), (kb, b"always")] {
        if s != 4 {
            write_file(path!("{THP}/hugepages-{s}kB/enabled").c(), w)?;
        }
    }
    Ok(())
}

/// Sizes the fill mixes (kB), one per 64 KiB slot.
const FRAG_MIX_KB: [usize; 3] = [4, 16, 64];
/// Sizes faulted after the churn (kB).
const FRAG_TARGET_KB: [usize; 2] = [64, 2048];
/// How the target region is faulted after the churn.
#[derive(Clone, Copy)]
enum FragMode {
    /// `defrag=never` and `compaction_proactiveness=0` (no kcompactd
    /// either): whatever free blocks the churn left.
    Plain,
    /// `echo 1 > /proc/sys/vm/compact_memory` first, then as `Plain`.
    CompactMemory,
    /// `defrag=always`: direct compaction in the fault path.
    Defrag,
}

impl FragMode {
    const ALL: [FragMode; 3] = [FragMode::Plain, FragMode::CompactMemory, FragMode::Defrag];
    fn name(self) -> &'static str {
        match self {
            FragMode::Plain => "plain",
            FragMode::CompactMemory => "compact_memory",
            FragMode::Defrag => "defrag",
        }
    }
}

/// The churn: a region of `len` bytes (2 MiB aligned) faulted 64 KiB slot
/// by slot, each slot with one size of [`FRAG_MIX_KB`] chosen by a fixed
/// pseudo-random sequence (so the physical layout interleaves the sizes
/// the same way on every kernel), then a random half of its folios freed
/// with `MADV_DONTNEED` (4K slots page by page, so holes are scattered).
/// Returns the region, or None (with a `bench-info` line).
fn frag_churn(len: usize, seed: u64) -> Option<usize> {
    let addr = match map_region(len) {
        Ok(a) => a,
        Err(e) => {
            println!("bench-info frag unavailable: mmap: {}", errno_name(e));
            return None;
        }
    };
    let slot = 64 << 10;
    let mut prev = 4;
    for s in 0..len / slot {
        let kb = FRAG_MIX_KB[(mix(seed ^ s as u64) % 3) as usize];
        if let Err(e) = switch_size(prev, kb) {
            println!(
                "bench-info frag unavailable: knob hugepages-{kb}kB: {}",
                errno_name(e)
            );
            sys::munmap(addr, len);
            return None;
        }
        prev = kb;
        let base = addr + s * slot;
        for off in (0..slot).step_by(kb * 1024) {
            // SAFETY: inside our private writable mapping.
            unsafe { ((base + off) as *mut u64).write_volatile(pattern(base + off)) };
        }
    }
    let _ = switch_size(prev, 4);
    for s in 0..len / slot {
        let kb = FRAG_MIX_KB[(mix(seed ^ s as u64) % 3) as usize];
        let base = addr + s * slot;
        for (i, off) in (0..slot).step_by(kb * 1024).enumerate() {
            if mix(seed.wrapping_add(1) ^ ((s * 16 + i) as u64)) & 1 == 0 {
                sys::madvise(base + off, kb * 1024, sys::MADV_DONTNEED);
            }
        }
    }
    Some(addr)
}

/// Fragmentation (issue 16): [`frag_churn`] over 15/16 of `MemFree`, then a
/// region of 3/8 of that (3/4 of what the churn freed) faulted with only 64K (then only 2M)
/// folios enabled, one touch per folio: the fraction of faults served at
/// that size (per-size `anon_fault_alloc` against `anon_fault_fallback`),
/// the fault-in time, and the pages migrated (`pgmigrate_success`), for
/// each [`FragMode`].  A kernel without `compact_memory` (or `defrag`)
/// gets a `bench-info` line for that mode instead.
fn bench_frag(cx: &mut Ctx) {
    let Some(free) = meminfo(cx.buf, b"MemFree:") else {
        println!("bench-info frag unavailable: no MemFree in /proc/meminfo");
        return;
    };
    let defrag_file = "/sys/kernel/mm/transparent_hugepage/defrag";
    let defrag0 = knob_word(defrag_file, cx.buf);
    // Nearly all of it, so the churn's holes are most of what is free
    // (a sixteenth stays for page tables and the kernel's reserves).
    let fill = (free - free / 16) & !(SZ_2M - 1);
    // Three quarters of what the churn freed: more than its free 64K
    // blocks alone (about a third of it) can serve, well within what is
    // free in total.
    let target = (fill / 8 * 3) & !(SZ_2M - 1);
    let mib = target / MIB;
    println!(
        "bench-info frag fill {} MiB of {} MiB free, mix 4K/16K/64K per 64K slot, half freed; target regions {} MiB",
        fill / MIB,
        free / MIB,
        mib
    );
    const PROACTIVE: &[u8] = b"/proc/sys/vm/compaction_proactiveness\0";
    let mut pro0 = [0u8; 16];
    let pro0 = match read_file(PROACTIVE, &mut pro0) {
        Ok(n) => Some((pro0, n)),
        Err(_) => None,
    };
    // Top-level `never`: only the per-size knobs pick sizes during the fill.
    let _ = set_config(4);
    for mode in FragMode::ALL {
        if let Some((v, n)) = &pro0 {
            let w: &[u8] = match mode {
                FragMode::Plain => b"0",
                _ => trim(&v[..*n]),
            };
            if let Err(e) = write_file(PROACTIVE, w) {
                println!(
                    "bench-info frag compaction_proactiveness: {}",
                    errno_name(e)
                );
            }
        }
        let dword: &[u8] = match mode {
            FragMode::Defrag => b"always",
            _ => b"never",
        };
        if let Err(e) = write_file(path!("{defrag_file}").c(), dword) {
            println!(
                "bench-info frag {} unavailable: defrag: {}",
                mode.name(),
                errno_name(e)
            );
            continue;
        }
        for kb in FRAG_TARGET_KB {
            let cfg = Cfg(kb, "");
            let (mut served, mut t_us, mut moved) =
                (Samples::new(), Samples::new(), Samples::new());
            let mut why: Option<Msg> = None;
            for run in 0..cx.opts.runs {
                let _ = set_config(4);
                let Some(churn) = frag_churn(fill, 0x5eed + run as u64) else {
                    return;
                };
                let m0 = vmstat(cx.buf, "pgmigrate_success");
                if let FragMode::CompactMemory = mode
                    && let Err(e) = write_file(b"/proc/sys/vm/compact_memory\0", b"1")
                {
                    why = Some(Msg::new(format_args!("compact_memory: {}", errno_name(e))));
                    sys::munmap(churn, fill);
                    break;
                }
                if let Err(m) = set_config(kb) {
                    why = Some(m);
                    sys::munmap(churn, fill);
                    break;
                }
                let a0 = size_stat(cx.buf, kb, "anon_fault_alloc");
                let f0 = size_stat(cx.buf, kb, "anon_fault_fallback");
                let t0 = now_ns();
                match map_region(target) {
                    Ok(a) => {
                        for off in (0..target).step_by(kb * 1024) {
                            // SAFETY: inside our private writable mapping.
                            unsafe { ((a + off) as *mut u64).write_volatile(pattern(off)) };
                        }
                        t_us.push((now_ns() - t0) as f64 / 1e3);
                        sys::munmap(a, target);
                    }
                    Err(e) => {
                        why = Some(Msg::new(format_args!("mmap: {}", errno_name(e))));
                    }
                }
                let a1 = size_stat(cx.buf, kb, "anon_fault_alloc");
                let f1 = size_stat(cx.buf, kb, "anon_fault_fallback");
                if let (Some(a0), Some(f0), Some(a1), Some(f1)) = (a0, f0, a1, f1)
                    && a1 + f1 > a0 + f0
                {
                    served.push((a1 - a0) as f64 / ((a1 - a0) + (f1 - f0)) as f64);
                }
                if let (Some(m0), Some(m1)) = (m0, vmstat(cx.buf, "pgmigrate_success")) {
                    moved.push((m1 - m0) as f64);
                }
                sys::munmap(churn, fill);
                if why.is_some() {
                    break;
                }
            }
            if let Some(m) = why {
                println!(
                    "bench-info frag {} {} {} unavailable: {}",
                    mode.name(),
                    cfg,
                    mib,
                    m
                );
                continue;
            }
            let metric = |m: &str| Msg::new(format_args!("{m}_{}", mode.name()));
            emit(
                "frag",
                &cfg,
                mib,
                metric("served_fraction").as_str(),
                &served,
            );
            emit("frag", &cfg, mib, metric("faultin_us").as_str(), &t_us);
            emit("frag", &cfg, mib, metric("migrated_pages").as_str(), &moved);
        }
    }
    let _ = write_file(path!("{defrag_file}").c(), unword(&defrag0));
}

/// Folio sizes of the migration workload: order 0, the usual mTHP, PMD.
const MIGRATE_KB: [usize; 3] = [4, 64, 2048];

/// Migration (issue 16): a region of the first `sizes` MiB mapped with
/// 4K, 64K or 2M folios and filled, then `move_pages` with one address per
/// folio to the other node and back, each direction one sample: MiB/s,
/// instructions per MiB when the kernel counts them (and guest ns per MiB
/// under `-icount shift=0`), the fraction of pages that arrived, data
/// checked after each move.  Needs two nodes with memory (the runner's
/// `--numa 2` boot); says so and skips otherwise.
fn bench_migrate(cx: &mut Ctx) {
    let mut b = [0u8; 32];
    let two = match read_file(b"/sys/devices/system/node/has_memory\0", &mut b) {
        Ok(n) => trim(&b[..n]) == b"0-1",
        Err(_) => false,
    };
    if !two {
        println!(
            "bench-info migrate unavailable: needs nodes 0-1 with memory (boot with two NUMA nodes)"
        );
        return;
    }
    let mib = cx.opts.sizes.items().first().copied().unwrap_or(16);
    let len = mib * MIB;
    // The address, node and status arrays: one entry per 4K page at most.
    let n_max = len / PAGE;
    let arr_len = (n_max * 16).next_multiple_of(PAGE);
    let arr = match map_region(arr_len) {
        Ok(a) => a,
        Err(e) => {
            println!("bench-info migrate unavailable: mmap: {}", errno_name(e));
            return;
        }
    };
    // SAFETY: `arr` is our private mapping of `arr_len` bytes, split into
    // three disjoint arrays (8 + 4 + 4 bytes per entry).
    let (addrs, nodes, status) = unsafe {
        (
            core::slice::from_raw_parts_mut(arr as *mut usize, n_max),
            core::slice::from_raw_parts_mut((arr + n_max * 8) as *mut i32, n_max),
            core::slice::from_raw_parts_mut((arr + n_max * 12) as *mut i32, n_max),
        )
    };
    // `configs=` narrows the sizes (all three are in the default list).
    for kb in MIGRATE_KB
        .into_iter()
        .filter(|kb| cx.opts.configs.items().contains(kb))
    {
        let cfg = Cfg(kb, "");
        if let Err(m) = set_config(kb) {
            println!("bench-info skip migrate {} {} {}", cfg, mib, m);
            continue;
        }
        let (mut rate, mut arrived) = (Samples::new(), Samples::new());
        let mut pmu = PmuSamples::new();
        let mut bad = 0usize;
        for _ in 0..cx.opts.runs {
            let Some(addr) = filled_region("migrate", &cfg, mib, len) else {
                break;
            };
            let n = len / (kb * 1024);
            for (i, a) in addrs[..n].iter_mut().enumerate() {
                *a = addr + i * kb * 1024;
            }
            status[0] = i32::MIN;
            sys::syscall(
                sys::nr::MOVE_PAGES,
                &[
                    0,
                    1,
                    addrs.as_ptr() as usize,
                    0,
                    status.as_mut_ptr() as usize,
                    0,
                ],
            );
            let mut at = status[0];
            for _ in 0..2 {
                let to = 1 - at.clamp(0, 1);
                nodes[..n].fill(to);
                let on = cx.perf.start("start both");
                let t0 = now_ns();
                let r = sys::syscall(
                    sys::nr::MOVE_PAGES,
                    &[
                        0,
                        n,
                        addrs.as_ptr() as usize,
                        nodes.as_ptr() as usize,
                        status.as_mut_ptr() as usize,
                        2,
                    ],
                );
                let t1 = now_ns();
                let rep = if on { cx.perf.stop(cx.buf) } else { None };
                if r < 0 {
                    println!(
                        "bench-info skip migrate {} {} move_pages: {}",
                        cfg,
                        mib,
                        errno_name(-r as i32)
                    );
                    break;
                }
                rate.push(mib as f64 / ((t1 - t0) as f64 / 1e9));
                pmu.add(&rep, mib as u64);
                arrived.push(status[..n].iter().filter(|&&s| s == to).count() as f64 / n as f64);
                for off in (0..len).step_by(PAGE) {
                    // SAFETY: as above.
                    let v = unsafe { ((addr + off) as *const u64).read_volatile() };
                    bad += (v != pattern(off)) as usize;
                }
                at = to;
            }
            sys::munmap(addr, len);
        }
        if bad != 0 {
            println!(
                "bench-info migrate {} {} CORRUPT: {} pages differ after a move",
                cfg, mib, bad
            );
        }
        emit("migrate", &cfg, mib, "mib_per_s", &rate);
        emit("migrate", &cfg, mib, "arrived_fraction", &arrived);
        pmu.emit("migrate", &cfg, mib, "mib");
    }
    sys::munmap(arr, arr_len);
}

/// Folio sizes of the pressure workload: order 0 and the usual mTHP.
const PRESSURE_KB: [usize; 2] = [4, 64];

/// Memory pressure: a working set of 1.5x `MemTotal` written once, then
/// `steps` writes to random pages of it (uniform, so about a third miss
/// and each miss forces a swap-out to make room): completion time of the
/// random phase and its major faults, both `ru_majflt` and `/proc/vmstat`
/// `pgmajfault` (the latter also counts faults of other processes, of
/// which this boot has none).  `swapon`/`swapoff` as in [`bench_swap`].
fn bench_pressure(cx: &mut Ctx) {
    if read_file(SWAP_DEV, &mut [0u8; 8]) == Err(sys::ENOENT) {
        println!("bench-info pressure unavailable: no /dev/vda (boot without a swap disk)");
        return;
    }
    let Some(total) = meminfo(cx.buf, b"MemTotal:") else {
        println!("bench-info pressure unavailable: no MemTotal in /proc/meminfo");
        return;
    };
    match write_file(b"/sys/block/vda/queue/rotational\0", b"0") {
        Ok(()) | Err(sys::ENOENT) => {}
        Err(e) => println!(
            "bench-info pressure rotational not written: {}",
            errno_name(e)
        ),
    }
    let r = sys::swapon(SWAP_DEV, 0);
    if r != 0 {
        println!(
            "bench-info pressure unavailable: swapon /dev/vda: {}",
            errno_name(-r as i32)
        );
        return;
    }
    // `sizes=<MiB>` fixes the working set, so both kernels of a comparison
    // get the same one (their MemTotal differ for the same -m); otherwise
    // 1.5x MemTotal.
    let len = match cx.opts.sizes.items().first() {
        Some(&m) if cx.opts.sizes_set => m * MIB,
        _ => (total / 2 * 3).next_multiple_of(SZ_2M),
    };
    let mib = len / MIB;
    let pages = len / PAGE;
    let steps = cx.opts.steps;
    println!(
        "bench-info pressure mem_total_mib={} working_set_mib={} touches={}",
        total / MIB,
        mib,
        steps
    );
    for kb in PRESSURE_KB {
        let cfg = Cfg(kb, "");
        if let Err(m) = set_config(kb) {
            println!("bench-info skip pressure {} {} {}", cfg, mib, m);
            continue;
        }
        let (mut ms, mut majf, mut pgmaj) = (Samples::new(), Samples::new(), Samples::new());
        for _ in 0..cx.opts.runs {
            let addr = match map_region(len) {
                Ok(a) => a,
                Err(e) => {
                    println!(
                        "bench-info skip pressure {} {} mmap: {}",
                        cfg,
                        mib,
                        errno_name(e)
                    );
                    break;
                }
            };
            // Every page written once (non-zero: notes §0.3), untimed.
            for p in 0..pages {
                // SAFETY: `addr..addr + len` is our private writable mapping.
                unsafe { ((addr + p * PAGE) as *mut u64).write_volatile(p as u64 | 1) };
            }
            let g0 = vmstat(cx.buf, "pgmajfault");
            let m0 = majflt();
            let t0 = now_ns();
            for i in 0..steps {
                let p = (mix(i as u64) % pages as u64) as usize;
                // SAFETY: as above; `p < pages`.
                unsafe { ((addr + p * PAGE + 8) as *mut u64).write_volatile(i as u64) };
            }
            let t1 = now_ns();
            majf.push((majflt() - m0) as f64);
            if let (Some(g0), Some(g1)) = (g0, vmstat(cx.buf, "pgmajfault")) {
                pgmaj.push((g1 - g0) as f64);
            }
            ms.push((t1 - t0) as f64 / 1e6);
            sys::munmap(addr, len);
        }
        emit("pressure", &cfg, mib, "ms", &ms);
        emit("pressure", &cfg, mib, "majflt", &majf);
        emit("pressure", &cfg, mib, "pgmajfault", &pgmaj);
    }
    let r = sys::swapoff(SWAP_DEV);
    if r != 0 {
        println!(
            "bench-info pressure swapoff /dev/vda: {}",
            errno_name(-r as i32)
        );
    }
}

fn main(args: &Args) -> i32 {
    mthp_user::as_init(|| bench_main(args))
}

fn bench_main(args: &Args) -> i32 {
    tlb_marker_map();
    let mut o = Opts {
        sizes: List::of(&[64, 256]),
        configs: List::of(&[4, 16, 32, 64, 128, 256, 512, 1024, 2048]),
        runs: 5,
        steps: 1_000_000,
        work: W_FAULT | W_STREAM | W_CHASE | W_COLLAPSE | W_SPLIT,
        sizes_set: false,
        swapin_perf: true,
        swapout_perf: true,
        tag: [0; 16],
        tag_len: 0,
    };
    // /proc/cmdline `bench.key=value` words first, then argv `key=value`.
    let mut cl = [0u8; 1024];
    let mut contpte_off = false;
    if let Ok(n) = read_file(b"/proc/cmdline\0", &mut cl) {
        for w in cl[..n].split(|c| c.is_ascii_whitespace()) {
            contpte_off |= w == b"contpte=off";
            let Some(kv) = w.strip_prefix(b"bench.") else {
                continue;
            };
            if let Some(eq) = kv.iter().position(|&c| c == b'=')
                && let Err(m) = o.set(&kv[..eq], &kv[eq + 1..])
            {
                println!("bench-info error {}", m);
                return 2;
            }
        }
    }
    for i in 1..args.argc() {
        let w = args.arg(i).unwrap_or(b"");
        let Some(eq) = w.iter().position(|&c| c == b'=') else {
            println!("bench-info error expected key=value, got {}", nul_str(w));
            return 2;
        };
        if let Err(m) = o.set(&w[..eq], &w[eq + 1..]) {
            println!("bench-info error {}", m);
            return 2;
        }
    }
    let max_mib = o.sizes.items().iter().copied().max().unwrap_or(0);
    let perm_bytes = (max_mib * MIB / PAGE * 4).next_multiple_of(PAGE);
    let scratch_len = perm_bytes + SCRATCH_EXTRA;
    let scratch = match check(sys::mmap(
        0,
        scratch_len,
        sys::PROT_READ | sys::PROT_WRITE,
        sys::MAP_PRIVATE | sys::MAP_ANONYMOUS,
        -1,
        0,
    )) {
        Ok(a) => a,
        Err(e) => {
            println!("bench-info error scratch mmap: {}", errno_name(e));
            return 1;
        }
    };
    touch(scratch, scratch_len);
    // SAFETY: `scratch` is a live, populated mapping of `scratch_len` bytes
    // that nothing else uses; the two slices do not overlap.
    let (perm, buf) = unsafe {
        (
            core::slice::from_raw_parts_mut(scratch as *mut u32, perm_bytes / 4),
            core::slice::from_raw_parts_mut((scratch + perm_bytes) as *mut u8, SCRATCH_EXTRA),
        )
    };

    let machine = uname_field(4);
    let release = uname_field(2);
    let version = uname_field(3);
    println!("bench-info start");
    println!("bench-info arch {}", nul_str(&machine));
    println!(
        "bench-info kernel {} {}",
        nul_str(&release),
        nul_str(&version)
    );
    println!(
        "bench-info clock clock_gettime(CLOCK_MONOTONIC) around each timed loop; faults getrusage(RUSAGE_SELF).ru_minflt"
    );
    println!(
        "bench-info params runs={} steps={} tag={} contpte={}",
        o.runs,
        o.steps,
        o.tag(),
        if nul_str(&machine) != "aarch64" {
            "n/a"
        } else if contpte_off {
            "off"
        } else {
            "on"
        }
    );

    // Which counters exist: one empty session.
    let mut perf = Perf {
        ok: write_file(path!("{PERF}").c(), b"start both").is_ok(),
    };
    if !perf.ok {
        println!(
            "bench-info pmu unavailable: cannot write {}: no user-space counter interface (not the mthp kernel)",
            PERF
        );
    } else {
        let _ = write_file(path!("{PERF}").c(), b"stop");
        match read_file(path!("{PERF}").c(), buf) {
            Ok(n) => {
                for line in buf[..n].split(|&c| c == b'\n') {
                    if let Some(s) = line.strip_prefix(b"source ") {
                        println!("bench-info pmu_source {}", nul_str(s));
                    } else if let Some(e) = line.strip_prefix(b"event ") {
                        let mut w = e.splitn(2, |&c| c == b' ');
                        let name = nul_str(w.next().unwrap_or(b""));
                        let v = w.next().unwrap_or(b"");
                        if let Some(why) = v.strip_prefix(b"- ") {
                            println!(
                                "bench-info pmu_event {} unavailable: {}",
                                name,
                                nul_str(why)
                            );
                        } else {
                            println!("bench-info pmu_event {} available", name);
                        }
                    }
                }
            }
            Err(e) => {
                println!(
                    "bench-info pmu unavailable: read {}: {}",
                    PERF,
                    errno_name(e)
                );
                perf.ok = false;
            }
        }
    }

    // The guest's RAM may be backed lazily by the host: touch as much as
    // the largest region once, untimed, so the first configuration does
    // not pay for that.
    // Not for the swap workloads alone: the pressure set is larger than RAM.
    if o.work
        & !(W_SWAP | W_SWAP_COLD | W_PRESSURE | W_FRAG | W_MIGRATE | W_COW | W_SHFAULT | W_RESERVE)
        != 0
        && let Ok(a) = map_region(max_mib * MIB)
    {
        touch(a, max_mib * MIB);
        sys::munmap(a, max_mib * MIB);
    }
    let saved = Knobs::save("enabled");
    let mut cx = Ctx {
        opts: &o,
        perf,
        perm,
        buf,
        said_no_entries: false,
    };
    if o.work & (W_FAULT | W_STREAM | W_CHASE) != 0 {
        for &mib in o.sizes.items() {
            for &kb in o.configs.items() {
                run_config(&mut cx, kb, mib);
            }
        }
    }
    if o.work & W_COLLAPSE != 0 {
        bench_collapse(&mut cx);
    }
    if o.work & W_SPLIT != 0 {
        bench_split(&mut cx);
    }
    if o.work & W_SWAP != 0 {
        bench_swap(&mut cx);
    }
    if o.work & W_SWAP_COLD != 0 {
        bench_swap_cold(&mut cx);
    }
    if o.work & W_PRESSURE != 0 {
        bench_pressure(&mut cx);
    }
    if o.work & W_FRAG != 0 {
        bench_frag(&mut cx);
    }
    if o.work & W_MIGRATE != 0 {
        bench_migrate(&mut cx);
    }
    if o.work & W_COW != 0 {
        bench_cow(&mut cx);
    }
    if o.work & W_RESERVE != 0 {
        bench_reserve(&mut cx);
    }
    if o.work & W_SHFAULT != 0 {
        for &mib in o.sizes.items() {
            for &kb in o.configs.items() {
                bench_shfault(&mut cx, kb, mib);
            }
        }
    }
    saved.restore();
    println!("bench done");
    0
}

entry!(main);
