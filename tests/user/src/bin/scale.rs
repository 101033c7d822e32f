//! `runner bench --scale`'s workloads: page-fault scalability and the cost
//! of TLB shootdowns, with one task and with two tasks pinned to CPUs 0
//! and 1, at folio sizes 4K, 64K and 2M (chosen only through the THP sysfs
//! knobs, as `bench` does: saved first, restored at the end).
//!
//! * `pf1-proc`, `pf1-thread` (will-it-scale's page_fault1): each task (a
//!   forked process, or a thread) repeatedly maps its own 2 MiB-aligned
//!   region of `mib` MiB, writes one byte per 4K page and unmaps it;
//! * `pf2-thread` (page_fault2-like): the threads fault disjoint slices of
//!   ONE mapping, then `MADV_DONTNEED` their slice, so they share the
//!   address space's locks and VMA;
//! * `shootdown-munmap`, `shootdown-mprotect`: the main thread on CPU 0
//!   maps, touches and unmaps a region of the folio size (or turns it
//!   RW -> R -> RW), while with 2 tasks a second thread pinned to CPU 1
//!   keeps reading a separate hot region, so CPU 1 holds the address space
//!   and every flush must reach it.  With our kernel the shootdown IPIs are
//!   read from `/sys/kernel/debug/mthp/perf` (`tlb_shootdown_ipis`), on
//!   Linux x86 from `/proc/interrupts`' `TLB` row; arm64 broadcasts
//!   (`TLBI …IS`), so there is nothing to count.
//!
//! Tasks start together (threads spin on a shared word, processes block on
//! a pipe the parent writes) and each runs for `ms` milliseconds.  Rates
//! are 4K pages first-touched per second (one fault each at 4K; at 64K or
//! 2M one fault maps 16 or 512 of them).  Two-task rows need two CPUs in
//! `sched_getaffinity`, and pinning to CPU 1 to work; otherwise they read
//! `n/a` with the reason.
//!
//! Options: `key=value` from argv, or `scale.key=value` words of
//! `/proc/cmdline`: `ms=400` (per run), `runs=3`, `mib=16` (per task),
//! `sizes=4K,64K,2M`, `work=pf1-proc,pf1-thread,pf2-thread,shootdown-munmap,shootdown-mprotect`,
//! `tasks=2` (at most), `quick=1` (`ms=150 runs=2 mib=8`).
//!
//! Output, one fact per line (the runner parses these):
//! * `scale <workload> <size> <tasks> <metric> <median> <min> <max>` over
//!   `runs` runs; metrics `pages_per_s` (all tasks together),
//!   `pages_per_s_per_task`, `ns_per_op`, `ipis_per_op`;
//! * `scale <workload> <size> <tasks> n/a <reason>`;
//! * `scale-info <key> <text>`;
//! * `scale done <n> measured <m> n/a`.
#![no_std]
#![no_main]
// Messages live on the stack (no heap): a 240-byte `Msg`.
#![allow(clippy::result_large_err)]

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use mthp_user::sys::{self, check};
use mthp_user::thread::{clone_thread, join_thread};
use mthp_user::{
    Args, Msg, entry, nul_str, on_mthp, parse_u64, path, println, read_file, uname_field,
    write_file,
};

const THP: &str = "/sys/kernel/mm/transparent_hugepage";
const PERF: &str = "/sys/kernel/debug/mthp/perf";
const PAGE: usize = 4096;
const MIB: usize = 1 << 20;
const SZ_2M: usize = 2 << 20;
/// Folio sizes with a per-size sysfs directory (kB): orders 1..=9.
const SIZES_KB: [usize; 9] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048];
const MAX_TASKS: usize = 2;
const MAX_RUNS: usize = 9;
const STACK: usize = 256 << 10;
const HOT: usize = 64 << 10;

// ---------------------------------------------------------------- options

const W_PF1_PROC: u32 = 1;
const W_PF1_THREAD: u32 = 2;
const W_PF2_THREAD: u32 = 4;
const W_SD_MUNMAP: u32 = 8;
const W_SD_MPROTECT: u32 = 16;
const WORKS: [(u32, &str); 5] = [
    (W_PF1_PROC, "pf1-proc"),
    (W_PF1_THREAD, "pf1-thread"),
    (W_PF2_THREAD, "pf2-thread"),
    (W_SD_MUNMAP, "shootdown-munmap"),
    (W_SD_MPROTECT, "shootdown-mprotect"),
];

struct Opts {
    ms: u64,
    runs: usize,
    mib: usize,
    sizes: [usize; 3],
    nsizes: usize,
    work: u32,
    tasks: usize,
}

impl Opts {
    fn set(&mut self, key: &[u8], val: &[u8]) -> Result<(), Msg> {
        let num = || {
            parse_u64(val)
                .filter(|&v| v > 0)
                .ok_or_else(|| bad(key, val))
        };
        match key {
            b"ms" => self.ms = num()?,
            b"runs" => self.runs = (num()? as usize).min(MAX_RUNS),
            b"mib" => self.mib = (num()? as usize).next_multiple_of(2),
            b"tasks" => self.tasks = (num()? as usize).min(MAX_TASKS),
            b"quick" => {
                if num()? > 0 {
                    self.ms = 150;
                    self.runs = 2;
                    self.mib = 8;
                }
            }
            b"sizes" => {
                self.nsizes = 0;
                for w in val.split(|&c| c == b',') {
                    let kb = match w {
                        b"4K" => 4,
                        b"64K" => 64,
                        b"2M" => 2048,
                        _ => return Err(bad(key, w)),
                    };
                    if self.nsizes == self.sizes.len() {
                        return Err(bad(key, val));
                    }
                    self.sizes[self.nsizes] = kb;
                    self.nsizes += 1;
                }
            }
            b"work" => {
                self.work = 0;
                for w in val.split(|&c| c == b',') {
                    let Some(&(bit, _)) = WORKS.iter().find(|(_, n)| n.as_bytes() == w) else {
                        return Err(bad(key, w));
                    };
                    self.work |= bit;
                }
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

fn size_name(kb: usize) -> &'static str {
    match kb {
        4 => "4K",
        64 => "64K",
        _ => "2M",
    }
}

// ---------------------------------------------------------------- helpers

fn now_ns() -> u64 {
    let mut ts = sys::Timespec::default();
    sys::clock_gettime(sys::CLOCK_MONOTONIC, &mut ts);
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

/// The CPUs this thread may run on (`sched_getaffinity(0)`), as a mask.
fn affinity() -> Result<u64, i32> {
    let mut m = [0u64; 16];
    check(sys::syscall(
        sys::nr::SCHED_GETAFFINITY,
        &[0, core::mem::size_of_val(&m), m.as_mut_ptr() as usize],
    ))?;
    Ok(m[0])
}

/// `getcpu` (not every kernel has it: `None` then).
fn getcpu() -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    const NR: usize = 309;
    #[cfg(target_arch = "aarch64")]
    const NR: usize = 168;
    let mut cpu = 0u32;
    check(sys::syscall(NR, &[&mut cpu as *mut u32 as usize, 0, 0]))
        .ok()
        .map(|_| cpu as usize)
}

/// Pins the calling thread to `cpu` (`sched_setaffinity(0)`); checks that
/// it took (the mask reads back, and `getcpu` agrees where it exists).
/// `Err` is a reason code: an errno, or 1000 (mask not applied), or
/// 2000 + the CPU it still runs on.
fn pin(cpu: usize) -> Result<(), u32> {
    let m = [1u64 << cpu, 0];
    check(sys::syscall(
        sys::nr::SCHED_SETAFFINITY,
        &[0, core::mem::size_of_val(&m), m.as_ptr() as usize],
    ))
    .map_err(|e| e as u32)?;
    if affinity().ok() != Some(1 << cpu) {
        return Err(1000);
    }
    sys::sched_yield();
    match getcpu() {
        Some(c) if c != cpu => Err(2000 + c as u32),
        _ => Ok(()),
    }
}

fn pin_reason(code: u32, cpu: usize) -> Msg {
    match code {
        1000 => Msg::new(format_args!(
            "sched_setaffinity(CPU {cpu}) succeeded but the mask did not read back"
        )),
        c if c >= 2000 => Msg::new(format_args!(
            "pinned to CPU {cpu} but getcpu says CPU {}",
            c - 2000
        )),
        e => Msg::new(format_args!("sched_setaffinity(CPU {cpu}): errno {e}")),
    }
}

/// Write one byte into every 4 KiB page of `addr..addr+len`.
fn touch(addr: usize, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: callers pass a live read-write mapping of their own.
        unsafe { ((addr + off) as *mut u8).write_volatile(1) };
        off += PAGE;
    }
}

/// Read one word of every 4 KiB page (the hot reader).
fn read_pages(addr: usize, len: usize) -> u64 {
    let mut s = 0u64;
    let mut off = 0;
    while off < len {
        // SAFETY: the hot region stays mapped until the reader has stopped.
        s = s.wrapping_add(unsafe { ((addr + off) as *const u64).read_volatile() });
        off += PAGE;
    }
    s
}

fn map_aligned(len: usize) -> Result<usize, i32> {
    mthp_user::thp::map_aligned_at(len, SZ_2M)
}

/// Reads exactly `buf.len()` bytes (or fails).
fn read_exact(fd: i32, buf: &mut [u8]) -> bool {
    let mut n = 0;
    while n < buf.len() {
        match check(sys::read(fd, &mut buf[n..])) {
            Ok(0) | Err(_) => return false,
            Ok(k) => n += k,
        }
    }
    true
}

fn pipe() -> Option<[i32; 2]> {
    let mut fds = [0i32; 2];
    (sys::syscall(sys::nr::PIPE2, &[fds.as_mut_ptr() as usize, 0]) >= 0).then_some(fds)
}

/// Let anonymous faults use exactly folio size `kb` (4: base pages only),
/// as `bench` does: that size `always`, every other `never`, and the
/// top-level knob `always` only for 2M.
fn set_config(kb: usize) -> Result<(), Msg> {
    if kb != 4
        && kb != 2048
        && read_file(path!("{THP}/hugepages-{kb}kB/enabled").c(), &mut [0u8; 64]).is_err()
    {
        return Err(Msg::new(format_args!("no hugepages-{kb}kB knob here")));
    }
    for s in SIZES_KB {
        let w: &[u8] = if s == kb { b"always" } else { b"never" };
        match write_file(path!("{THP}/hugepages-{s}kB/enabled").c(), w) {
            Ok(()) | Err(sys::ENOENT) => {}
            Err(e) => {
                return Err(Msg::new(format_args!(
                    "cannot write hugepages-{s}kB/enabled: errno {e}"
                )));
            }
        }
    }
    let top: &[u8] = if kb == 2048 { b"always" } else { b"never" };
    write_file(path!("{THP}/enabled").c(), top)
        .map_err(|e| Msg::new(format_args!("cannot write {THP}/enabled: errno {e}")))
}

/// Where shootdown IPIs are counted here.
#[derive(Clone, Copy, PartialEq)]
enum IpiSource {
    /// `/sys/kernel/debug/mthp/perf`'s `tlb_shootdown_ipis`.
    Mthp,
    /// `/proc/interrupts`' `TLB` row, summed over CPUs (Linux x86).
    ProcTlb,
    /// arm64: TLB maintenance is broadcast by the hardware.
    Broadcast,
    None,
}

static mut TEXT: [u8; 32 << 10] = [0; 32 << 10];

/// The text of a small file (main thread only).
fn slurp(p: &[u8]) -> Option<&'static [u8]> {
    // SAFETY: only the main thread calls this, and each result is used
    // before the next call.
    let buf = unsafe { &mut *core::ptr::addr_of_mut!(TEXT) };
    let n = read_file(p, buf).ok()?;
    Some(&buf[..n])
}

fn ipis(src: IpiSource) -> Option<u64> {
    match src {
        IpiSource::Mthp => {
            let t = slurp(path!("{PERF}").c())?;
            t.split(|&c| c == b'\n')
                .find_map(|l| l.strip_prefix(b"tlb_shootdown_ipis "))
                .and_then(parse_u64)
        }
        IpiSource::ProcTlb => {
            let t = slurp(b"/proc/interrupts\0")?;
            let l = t
                .split(|&c| c == b'\n')
                .find(|l| mthp_user::trim(l).starts_with(b"TLB:"))?;
            let l = mthp_user::trim(l);
            let mut sum = 0;
            for w in l[4..]
                .split(|c| c.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
            {
                match parse_u64(w) {
                    Some(v) if w.iter().all(u8::is_ascii_digit) => sum += v,
                    _ => break,
                }
            }
            Some(sum)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- tasks

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Pf1,
    Pf2,
    Hot,
}

/// What the threads of one measurement share.
struct Ctl {
    kind: AtomicU32,
    len: AtomicUsize,
    base: AtomicUsize,
    dur_ns: AtomicU64,
    ready: AtomicU32,
    /// 0 wait, 1 go, 2 give up.
    go: AtomicU32,
    stop: AtomicU32,
    hot_passes: AtomicU64,
    pin_err: [AtomicU32; MAX_TASKS],
    pages: [AtomicU64; MAX_TASKS],
    ns: [AtomicU64; MAX_TASKS],
    /// Each thread's `CLONE_CHILD_CLEARTID` word (in a static: it must not
    /// move while the thread lives).
    ctid: [AtomicU32; MAX_TASKS],
}

static CTL: Ctl = Ctl {
    kind: AtomicU32::new(0),
    len: AtomicUsize::new(0),
    base: AtomicUsize::new(0),
    dur_ns: AtomicU64::new(0),
    ready: AtomicU32::new(0),
    go: AtomicU32::new(0),
    stop: AtomicU32::new(0),
    hot_passes: AtomicU64::new(0),
    pin_err: [const { AtomicU32::new(0) }; MAX_TASKS],
    pages: [const { AtomicU64::new(0) }; MAX_TASKS],
    ns: [const { AtomicU64::new(0) }; MAX_TASKS],
    ctid: [const { AtomicU32::new(0) }; MAX_TASKS],
};

fn spin_until(f: impl Fn() -> bool, timeout_ns: u64) -> bool {
    let t0 = now_ns();
    let mut i = 0u32;
    while !f() {
        core::hint::spin_loop();
        i = i.wrapping_add(1);
        if i.is_multiple_of(4096) {
            sys::sched_yield();
            if now_ns() - t0 > timeout_ns {
                return false;
            }
        }
    }
    true
}

/// page_fault1: map, touch, unmap a private region until `dur_ns` is up;
/// returns (pages touched, ns).
fn pf1_loop(len: usize, dur_ns: u64) -> (u64, u64) {
    let t0 = now_ns();
    let mut pages = 0;
    while let Ok(a) = map_aligned(len) {
        touch(a, len);
        sys::munmap(a, len);
        pages += (len / PAGE) as u64;
        let t = now_ns() - t0;
        if t >= dur_ns {
            return (pages, t);
        }
    }
    (pages, now_ns() - t0)
}

/// page_fault2-like: fault this task's slice of the shared mapping, zap it
/// (`MADV_DONTNEED`), again, until `dur_ns` is up.
fn pf2_loop(addr: usize, len: usize, dur_ns: u64) -> (u64, u64) {
    let t0 = now_ns();
    let mut pages = 0;
    loop {
        touch(addr, len);
        sys::madvise(addr, len, sys::MADV_DONTNEED);
        pages += (len / PAGE) as u64;
        let t = now_ns() - t0;
        if t >= dur_ns {
            return (pages, t);
        }
    }
}

/// A thread's body: pin to CPU `i`, say so, wait for the start, work.
extern "C" fn worker(i: usize) -> usize {
    let c = &CTL;
    let r = pin(i);
    c.pin_err[i].store(r.err().unwrap_or(0), SeqCst);
    c.ready.fetch_add(1, SeqCst);
    if !spin_until(|| c.go.load(SeqCst) != 0, 30_000_000_000) || c.go.load(SeqCst) != 1 {
        return 0;
    }
    let (len, dur) = (c.len.load(SeqCst), c.dur_ns.load(SeqCst));
    let (p, ns) = match c.kind.load(SeqCst) {
        0 => pf1_loop(len, dur),
        1 => pf2_loop(c.base.load(SeqCst) + i * len, len, dur),
        _ => {
            let hot = c.base.load(SeqCst);
            let mut sink = 0u64;
            while c.stop.load(SeqCst) == 0 {
                sink = sink.wrapping_add(read_pages(hot, HOT));
                c.hot_passes.fetch_add(1, SeqCst);
            }
            core::hint::black_box(sink);
            (0, 0)
        }
    };
    c.pages[i].store(p, SeqCst);
    c.ns[i].store(ns, SeqCst);
    0
}

/// Threads 1..tasks started and pinned, waiting for `go` (their stacks).  `Err` names why a thread could not start.
struct Crew {
    stacks: [usize; MAX_TASKS],
    n: usize,
}

fn start_crew(kind: Kind, len: usize, base: usize, dur_ns: u64, tasks: usize) -> Result<Crew, Msg> {
    let c = &CTL;
    c.kind.store(kind as u32, SeqCst);
    c.len.store(len, SeqCst);
    c.base.store(base, SeqCst);
    c.dur_ns.store(dur_ns, SeqCst);
    c.ready.store(0, SeqCst);
    c.go.store(0, SeqCst);
    c.stop.store(0, SeqCst);
    c.hot_passes.store(0, SeqCst);
    for i in 0..MAX_TASKS {
        c.pin_err[i].store(0, SeqCst);
        c.pages[i].store(0, SeqCst);
        c.ns[i].store(0, SeqCst);
    }
    let mut crew = Crew {
        stacks: [0; MAX_TASKS],
        n: 0,
    };
    for i in 1..tasks {
        let stack = check(sys::mmap(
            0,
            STACK,
            sys::PROT_READ | sys::PROT_WRITE,
            sys::MAP_PRIVATE | sys::MAP_ANONYMOUS,
            -1,
            0,
        ))
        .map_err(|e| Msg::new(format_args!("stack mmap: errno {e}")))?;
        crew.stacks[i] = stack;
        let tid = clone_thread(worker, i, stack + STACK, &c.ctid[i]);
        if let Err(e) = check(tid) {
            end_crew(&crew, 2);
            return Err(Msg::new(format_args!("clone(thread): errno {e}")));
        }
        crew.n = i;
    }
    if !spin_until(
        || c.ready.load(SeqCst) as usize == tasks - 1,
        10_000_000_000,
    ) {
        end_crew(&crew, 2);
        return Err(Msg::new(format_args!(
            "the threads did not start within 10 s"
        )));
    }
    for i in 1..tasks {
        let e = c.pin_err[i].load(SeqCst);
        if e != 0 {
            end_crew(&crew, 2);
            return Err(pin_reason(e, i));
        }
    }
    Ok(crew)
}

/// Tell the crew `go` (1: it has run; 2: give up), stop it, join it.
fn end_crew(crew: &Crew, go: u32) {
    CTL.go.store(go, SeqCst);
    CTL.stop.store(1, SeqCst);
    for i in 1..=crew.n {
        if !join_thread(&CTL.ctid[i], 60) {
            println!("scale-info error thread {i} did not exit");
        }
    }
    for &s in &crew.stacks {
        if s != 0 {
            sys::munmap(s, STACK);
        }
    }
}

/// One pf measurement: per-task (pages, ns).
fn pf_threads(
    kind: Kind,
    len: usize,
    dur_ns: u64,
    tasks: usize,
) -> Result<[(u64, u64); MAX_TASKS], Msg> {
    let mut base = 0;
    if kind == Kind::Pf2 {
        base = map_aligned(len * tasks).map_err(|e| Msg::new(format_args!("mmap: errno {e}")))?;
    }
    let crew = match start_crew(kind, len, base, dur_ns, tasks) {
        Ok(c) => c,
        Err(m) => {
            if base != 0 {
                sys::munmap(base, len * tasks);
            }
            return Err(m);
        }
    };
    CTL.go.store(1, SeqCst);
    let mine = match kind {
        Kind::Pf2 => pf2_loop(base, len, dur_ns),
        _ => pf1_loop(len, dur_ns),
    };
    end_crew(&crew, 1);
    if base != 0 {
        sys::munmap(base, len * tasks);
    }
    let mut out = [(0, 0); MAX_TASKS];
    out[0] = mine;
    for (i, o) in out.iter_mut().enumerate().take(tasks).skip(1) {
        *o = (CTL.pages[i].load(SeqCst), CTL.ns[i].load(SeqCst));
    }
    Ok(out)
}

/// pf1 with forked processes: child `i` pins itself to CPU `i`, says so
/// on `ready`, waits for a byte on `go`, runs, and writes its (pages, ns)
/// to `res`.  The parent (on CPU 0) only starts and collects them.
fn pf_procs(len: usize, dur_ns: u64, tasks: usize) -> Result<[(u64, u64); MAX_TASKS], Msg> {
    let (Some(ready), Some(go), Some(res)) = (pipe(), pipe(), pipe()) else {
        return Err(Msg::new(format_args!("pipe2 failed")));
    };
    let mut pids = [0isize; MAX_TASKS];
    for (i, pid) in pids.iter_mut().enumerate().take(tasks) {
        let p = sys::fork();
        if p == 0 {
            sys::close(ready[0]);
            sys::close(go[1]);
            sys::close(res[0]);
            let r = pin(i).err().unwrap_or(0);
            sys::write(ready[1], &r.to_le_bytes());
            let mut b = [0u8; 1];
            if !read_exact(go[0], &mut b) || b[0] != 1 {
                sys::exit(0);
            }
            let (pages, ns) = pf1_loop(len, dur_ns);
            let mut out = [0u8; 24];
            out[..8].copy_from_slice(&(i as u64).to_le_bytes());
            out[8..16].copy_from_slice(&pages.to_le_bytes());
            out[16..].copy_from_slice(&ns.to_le_bytes());
            sys::write(res[1], &out);
            sys::exit(0);
        }
        *pid = p;
        if p < 0 {
            break;
        }
    }
    // Only the children write `ready` and `res`: a child that dies ends
    // the parent's read (EOF) instead of leaving it blocked.
    sys::close(ready[1]);
    sys::close(res[1]);
    sys::close(go[0]);
    let mut err: Option<Msg> = None;
    for &p in pids.iter().take(tasks) {
        if p < 0 {
            err = Some(Msg::new(format_args!("fork: errno {}", -p)));
        }
    }
    let started = pids.iter().take(tasks).filter(|&&p| p > 0).count();
    for _ in 0..started {
        let mut b = [0u8; 4];
        if !read_exact(ready[0], &mut b) {
            err = Some(Msg::new(format_args!("a child died before it was ready")));
            break;
        }
        let e = u32::from_le_bytes(b);
        if e != 0 && err.is_none() {
            // Which child: the only one that can fail is on CPU >= 1.
            err = Some(pin_reason(e, 1));
        }
    }
    let gun = if err.is_none() { 1u8 } else { 0u8 };
    for _ in 0..started {
        sys::write(go[1], &[gun]);
    }
    let mut out = [(0, 0); MAX_TASKS];
    if err.is_none() {
        for _ in 0..started {
            let mut b = [0u8; 24];
            if !read_exact(res[0], &mut b) {
                err = Some(Msg::new(format_args!("a child died before its result")));
                break;
            }
            let w = |k: usize| u64::from_le_bytes(b[k * 8..k * 8 + 8].try_into().unwrap_or([0; 8]));
            let i = (w(0) as usize).min(MAX_TASKS - 1);
            out[i] = (w(1), w(2));
        }
    }
    sys::close(go[1]);
    for (i, &p) in pids.iter().enumerate().take(tasks) {
        if p > 0 {
            let mut st = 0;
            sys::wait4(p, &mut st, 0);
            if mthp_user::wifsignaled(st) {
                err = Some(Msg::new(format_args!(
                    "child {i} (CPU {i}) killed by signal {}",
                    mthp_user::wtermsig(st)
                )));
            }
        }
    }
    sys::close(ready[0]);
    sys::close(res[0]);
    match err {
        Some(m) => Err(m),
        None => Ok(out),
    }
}

/// The main thread's shootdown loop at `addr` (`len` bytes): ops and ns.
fn shoot_loop(mprotect: bool, addr: usize, len: usize, dur_ns: u64) -> Result<(u64, u64), Msg> {
    let rw = sys::PROT_READ | sys::PROT_WRITE;
    let flags = sys::MAP_PRIVATE | sys::MAP_ANONYMOUS | sys::MAP_FIXED;
    if mprotect {
        check(sys::mmap(addr, len, rw, flags, -1, 0))
            .map_err(|e| Msg::new(format_args!("mmap: errno {e}")))?;
        touch(addr, len);
    }
    let t0 = now_ns();
    let mut ops = 0u64;
    let r = loop {
        for _ in 0..8 {
            if mprotect {
                sys::mprotect(addr, len, sys::PROT_READ);
                sys::mprotect(addr, len, rw);
            } else {
                if let Err(e) = check(sys::mmap(addr, len, rw, flags, -1, 0)) {
                    return Err(Msg::new(format_args!("mmap: errno {e}")));
                }
                touch(addr, len);
                sys::munmap(addr, len);
            }
            ops += 1;
        }
        let t = now_ns() - t0;
        if t >= dur_ns {
            break (ops, t);
        }
    };
    if mprotect {
        touch(addr, len); // still writable
        sys::munmap(addr, len);
    }
    Ok(r)
}

/// One shootdown measurement: (ns per op, IPIs per op).
fn shootdown(
    mprotect: bool,
    len: usize,
    dur_ns: u64,
    tasks: usize,
    src: IpiSource,
) -> Result<(f64, Option<f64>), Msg> {
    // An aligned address for the region, and the hot region of the reader.
    let addr =
        map_aligned(len.max(SZ_2M)).map_err(|e| Msg::new(format_args!("mmap: errno {e}")))?;
    sys::munmap(addr, len.max(SZ_2M));
    let hot = map_aligned(HOT).map_err(|e| Msg::new(format_args!("mmap: errno {e}")))?;
    touch(hot, HOT);
    let crew = match start_crew(Kind::Hot, HOT, hot, dur_ns, tasks) {
        Ok(c) => c,
        Err(m) => {
            sys::munmap(hot, HOT);
            return Err(m);
        }
    };
    CTL.go.store(1, SeqCst);
    if tasks > 1 {
        spin_until(|| CTL.hot_passes.load(SeqCst) > 0, 10_000_000_000);
    }
    let i0 = ipis(src);
    let r = shoot_loop(mprotect, addr, len, dur_ns);
    let i1 = ipis(src);
    end_crew(&crew, 1);
    sys::munmap(hot, HOT);
    let (ops, ns) = r?;
    let ops = ops.max(1) as f64;
    let per = match (i0, i1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / ops),
        _ => None,
    };
    Ok((ns as f64 / ops, per))
}

// ---------------------------------------------------------------- output

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
    fn emit(&mut self, work: &str, kb: usize, tasks: usize, metric: &str) {
        if self.n == 0 {
            return;
        }
        let s = &mut self.v[..self.n];
        s.sort_unstable_by(f64::total_cmp);
        let n = s.len();
        let med = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        println!(
            "scale {work} {} {tasks} {metric} {} {} {}",
            size_name(kb),
            Num(med),
            Num(s[0]),
            Num(s[n - 1])
        );
    }
}

/// A figure with 3 significant digits (at least), no exponent.
struct Num(f64);

impl core::fmt::Display for Num {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        let v = self.0;
        if v >= 100.0 {
            write!(f, "{:.0}", v)
        } else if v >= 1.0 {
            write!(f, "{:.2}", v)
        } else {
            write!(f, "{:.4}", v)
        }
    }
}

struct Tally {
    measured: usize,
    na: usize,
}

/// Runs `work` at size `kb` with `tasks` tasks `runs` times and prints it.
fn measure(o: &Opts, bit: u32, work: &str, kb: usize, tasks: usize, src: IpiSource, t: &mut Tally) {
    let dur = o.ms * 1_000_000;
    let len = o.mib * MIB;
    let mut total = Samples::new();
    let mut per_task = Samples::new();
    let mut ns_op = Samples::new();
    let mut ipi_op = Samples::new();
    for _ in 0..o.runs {
        let r = match bit {
            W_PF1_PROC => pf_procs(len, dur, tasks).map(|x| (Some(x), None)),
            W_PF1_THREAD => pf_threads(Kind::Pf1, len, dur, tasks).map(|x| (Some(x), None)),
            W_PF2_THREAD => pf_threads(Kind::Pf2, len, dur, tasks).map(|x| (Some(x), None)),
            _ => {
                shootdown(bit == W_SD_MPROTECT, kb * 1024, dur, tasks, src).map(|x| (None, Some(x)))
            }
        };
        match r {
            Err(m) => {
                println!("scale {work} {} {tasks} n/a {m}", size_name(kb));
                t.na += 1;
                return;
            }
            Ok((Some(per), _)) => {
                let rate: f64 = per
                    .iter()
                    .take(tasks)
                    .map(|&(p, ns)| {
                        if ns == 0 {
                            0.0
                        } else {
                            p as f64 * 1e9 / ns as f64
                        }
                    })
                    .sum();
                total.push(rate);
                per_task.push(rate / tasks as f64);
            }
            Ok((None, Some((ns, ipi)))) => {
                ns_op.push(ns);
                if let Some(i) = ipi {
                    ipi_op.push(i);
                }
            }
            Ok(_) => {}
        }
    }
    total.emit(work, kb, tasks, "pages_per_s");
    per_task.emit(work, kb, tasks, "pages_per_s_per_task");
    ns_op.emit(work, kb, tasks, "ns_per_op");
    if bit & (W_SD_MUNMAP | W_SD_MPROTECT) != 0 {
        if ipi_op.n > 0 {
            ipi_op.emit(work, kb, tasks, "ipis_per_op");
        } else {
            let why = match src {
                IpiSource::Broadcast => "broadcast TLBI",
                _ => "no IPI counter",
            };
            println!(
                "scale {work} {} {tasks} ipis_per_op n/a ({why})",
                size_name(kb)
            );
        }
    }
    t.measured += 1;
}

fn main(args: &Args) -> i32 {
    mthp_user::as_init(|| scale_main(args))
}

fn scale_main(args: &Args) -> i32 {
    let mut o = Opts {
        ms: 400,
        runs: 3,
        mib: 16,
        sizes: [4, 64, 2048],
        nsizes: 3,
        work: W_PF1_PROC | W_PF1_THREAD | W_PF2_THREAD | W_SD_MUNMAP | W_SD_MPROTECT,
        tasks: MAX_TASKS,
    };
    let mut cl = [0u8; 1024];
    if let Ok(n) = read_file(b"/proc/cmdline\0", &mut cl) {
        for w in cl[..n].split(|c| c.is_ascii_whitespace()) {
            let Some(kv) = w.strip_prefix(b"scale.") else {
                continue;
            };
            if let Some(eq) = kv.iter().position(|&c| c == b'=')
                && let Err(m) = o.set(&kv[..eq], &kv[eq + 1..])
            {
                println!("scale-info error {}", m);
                return 2;
            }
        }
    }
    for i in 1..args.argc() {
        let w = args.arg(i).unwrap_or(b"");
        let Some(eq) = w.iter().position(|&c| c == b'=') else {
            println!("scale-info error expected key=value, got {}", nul_str(w));
            return 2;
        };
        if let Err(m) = o.set(&w[..eq], &w[eq + 1..]) {
            println!("scale-info error {}", m);
            return 2;
        }
    }
    let machine = uname_field(4);
    let mthp = on_mthp();
    let cpus = affinity().map(|m| m.count_ones() as usize).unwrap_or(1);
    let src = if mthp {
        IpiSource::Mthp
    } else if nul_str(&machine) == "aarch64" {
        IpiSource::Broadcast
    } else if ipis(IpiSource::ProcTlb).is_some() {
        IpiSource::ProcTlb
    } else {
        IpiSource::None
    };
    let src = if mthp && nul_str(&machine) == "aarch64" {
        IpiSource::Broadcast
    } else if src == IpiSource::Mthp && ipis(src).is_none() {
        IpiSource::None
    } else {
        src
    };
    println!("scale-info start");
    println!("scale-info arch {}", nul_str(&machine));
    println!(
        "scale-info kernel {} {}",
        nul_str(&uname_field(2)),
        nul_str(&uname_field(3))
    );
    println!("scale-info cpus {cpus}");
    println!(
        "scale-info params ms={} runs={} mib={} tasks={}",
        o.ms, o.runs, o.mib, o.tasks
    );
    println!(
        "scale-info ipis {}",
        match src {
            IpiSource::Mthp => "/sys/kernel/debug/mthp/perf tlb_shootdown_ipis",
            IpiSource::ProcTlb => "/proc/interrupts TLB row, all CPUs",
            IpiSource::Broadcast => "n/a (broadcast TLBI)",
            IpiSource::None => "n/a (no counter found)",
        }
    );
    if let Err(e) = pin(0) {
        println!("scale-info error {}", pin_reason(e, 0));
        return 1;
    }
    // Let the host back the guest's RAM once, untimed.
    let warm = o.mib * MIB * MAX_TASKS;
    if let Ok(a) = map_aligned(warm) {
        touch(a, warm);
        sys::munmap(a, warm);
    }
    let saved = mthp_user::thp::Knobs::save();
    let mut t = Tally { measured: 0, na: 0 };
    for &kb in &o.sizes[..o.nsizes] {
        if let Err(m) = set_config(kb) {
            for &(bit, work) in &WORKS {
                if o.work & bit != 0 {
                    println!("scale {work} {} 1 n/a {m}", size_name(kb));
                    t.na += 1;
                }
            }
            continue;
        }
        for &(bit, work) in &WORKS {
            if o.work & bit == 0 {
                continue;
            }
            for tasks in 1..=o.tasks {
                if tasks > cpus {
                    println!(
                        "scale {work} {} {tasks} n/a {cpus} CPU(s) online",
                        size_name(kb)
                    );
                    t.na += 1;
                    continue;
                }
                measure(&o, bit, work, kb, tasks, src, &mut t);
            }
        }
    }
    saved.restore();
    println!("scale done {} measured {} n/a", t.measured, t.na);
    0
}

entry!(main);
