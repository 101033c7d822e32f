//! Memory exhaustion (issue 8), run as `init=/exhaust` on a small machine
//! (the runner boots it with `-m 256M`).
//!
//! With the 64 KiB and 2 MiB folio sizes set to `always`, a forked "hog"
//! maps and writes 2 MiB-aligned 8 MiB chunks until the kernel kills it.
//! Meanwhile a forked "bystander" keeps checking a 1 MiB pattern it wrote
//! before the hog started.  Afterwards the parent checks:
//!
//! * `fallback_order_by_order`: the per-size `anon_fault_fallback` counters
//!   of both large sizes grew, and (as the hog saw them after every chunk)
//!   the 64 KiB one never grew before the 2 MiB one: faults fell back
//!   2 MiB → 64 KiB → 4 KiB;
//! * `hog_killed_by_sigkill`: the parent's `wait4` sees the hog killed by
//!   SIGKILL (what Linux's OOM killer sends), not an exit or a SIGSEGV;
//! * `bystander_survives`: the bystander exits 0 with its data intact;
//! * `khugepaged_keeps_scanning`: `khugepaged/full_scans` still advances;
//! * `every_frame_returns`: `/proc/meminfo` MemFree is exactly what it was
//!   before the two children were forked.  Exact, because the kernel heap
//!   is a fixed boot-time carve-out (kernel objects never take frames from
//!   the allocator at run time), MemFree counts the per-CPU cached frames
//!   as free, a warm-up round first brings every lazily allocated kernel
//!   frame into existence, and this process touches no new page between
//!   the two readings.  The reading is retried for up to 2 s in case a
//!   space is torn down a little after the reap (it is not today).
//!
//! With a swap disk (`/dev/vda`, the `exhaust-swap` boot) it swaps on first
//! and runs the same checks with swap in play (issue 15: "swap full → OOM
//! kill, bystander intact, nothing leaked"), plus:
//!
//! * `swap_filled_before_kill`: reclaim wrote the hog out until swap was
//!   (nearly) full before the kill: `pswpout` grew by at least half the
//!   area;
//! * `swap_slots_return`: `SwapFree` is back to `SwapTotal` after the reap,
//!   and `swapoff` succeeds.
//!
//! The program refuses to run anywhere but this kernel (uname release
//! `*-mthp`): on a Linux host it would only exercise the host's OOM killer.
#![no_std]
#![no_main]
#![allow(clippy::result_large_err)]

use mthp_user::sys::{self, check};
use mthp_user::{
    Args, Harness, Mem, Msg, ensure, entry, fail, path, println, read_file, wexitstatus, wifexited,
    wifsignaled, write_file, wtermsig,
};

const THP: &str = "/sys/kernel/mm/transparent_hugepage";
#[cfg(target_arch = "x86_64")]
const MLOCKALL: usize = 151;
#[cfg(target_arch = "aarch64")]
const MLOCKALL: usize = 230;
const MCL_CURRENT: usize = 1;
const MCL_FUTURE: usize = 2;
const PAGE: usize = 4096;
const SZ_2M: usize = 2 << 20;
/// The hog's mapping unit.
const CHUNK: usize = 8 << 20;
/// The hog checks the fallback counters after every `STEP` bytes it wrote
/// (one 64 KiB folio's worth), so it sees the order in which they grow.
const STEP: usize = 64 << 10;
/// The bystander's pattern.
const BYSTANDER_LEN: usize = 1 << 20;
/// Folio sizes with a per-size directory (kB): orders 1..=9.
const SIZES_KB: [usize; 9] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048];
/// Hog exit codes (it should never exit: it is killed).
const HOG_MMAP_FAILED: i32 = 3;
const HOG_ORDER_VIOLATED: i32 = 5;
const HOG_NEVER_KILLED: i32 = 6;

type Check = Result<(), Msg>;

fn main(_args: &Args) -> i32 {
    let mut h = Harness::new(None);
    if !h.on_mthp {
        h.skip_here("exhaust", "not the mthp kernel; this would OOM the host");
        return h.finish();
    }
    println!("exhaust: pid {}", sys::getpid());
    // Fault in the stack this program will ever use while only 4 KiB
    // folios are in force, so later calls touch no new page.
    let big = [7u8; 128 << 10];
    core::hint::black_box(&big);
    let saved = Saved::save();
    let r = run(&mut h);
    if let Err(m) = r {
        println!("test exhaust_setup ... FAILED: {}", m);
        h.failed += 1;
    }
    saved.restore();
    h.finish()
}

entry!(main);

fn report(h: &mut Harness, name: &str, r: Check) {
    match r {
        Ok(()) => {
            println!("test {} ... ok", name);
            h.passed += 1;
        }
        Err(m) => {
            println!("test {} ... FAILED: {}", name, m);
            h.failed += 1;
        }
    }
}

/// The scenario; each check is reported on its own line.
fn run(h: &mut Harness) -> Check {
    // Only 64 KiB and 2 MiB folios; khugepaged scans (and retries after an
    // allocation failure) every 10 ms so its progress shows quickly.
    for kb in SIZES_KB {
        let w: &[u8] = if kb == 64 || kb == 2048 {
            b"always"
        } else {
            b"never"
        };
        match knob(path!("{THP}/hugepages-{kb}kB/enabled").c(), w) {
            // A size this architecture does not offer for anonymous memory
            // (no knob, or a shmem-only directory such as Linux's
            // hugepages-8kB): nothing to turn off.
            Err(_)
                if kb != 64
                    && kb != 2048
                    && !exists(path!("{THP}/hugepages-{kb}kB/enabled").c()) => {}
            r => r?,
        }
    }
    let swap = exists(b"/dev/vda\0");
    if swap {
        let r = sys::swapon(b"/dev/vda\0", 0);
        ensure!(r == 0, "swapon /dev/vda: {r}");
        // This process's own pages must stay put, or reclaim moves them
        // to swap and MemFree/SwapFree drift (the children do not inherit
        // the lock).
        let r = sys::syscall(MLOCKALL, &[MCL_CURRENT | MCL_FUTURE]);
        ensure!(r == 0, "mlockall: {r}");
    }
    knob(path!("{THP}/khugepaged/scan_sleep_millisecs").c(), b"10")?;
    knob(path!("{THP}/khugepaged/alloc_sleep_millisecs").c(), b"10")?;
    // A small mapping of our own registers this space with khugepaged, so
    // it keeps scanning after the children are gone (too small to collapse).
    let mine = map(64 << 10)?;
    touch(&mine, 1);

    // Warm-up: the same forks, touches and reads as the measured round,
    // twice (the second round of forks still brought one more lazily
    // allocated kernel frame into existence; later rounds add none).
    let mut snap = Snapshot::default();
    for _ in 0..2 {
        let (w1, w2) = (spawn(|| warm(4 << 20))?, spawn(|| warm(BYSTANDER_LEN))?);
        reap(w1)?;
        reap(w2)?;
        snap.take()?;
    }
    snap.take()?;
    let before = snap;
    println!(
        "exhaust: MemFree {} kB; fallbacks 2M {} 64K {}; full_scans {}",
        before.free_kb, before.fb_2m, before.fb_64k, before.full_scans
    );

    // The hog waits a moment so the bystander's pages are all in place
    // before memory runs out (the kernel kills whoever faults then).
    let hog = spawn(hog)?;
    let bystander = spawn(|| bystander(hog))?;
    let hog_status = reap(hog)?;
    let by_status = reap(bystander)?;

    let mut after = Snapshot::default();
    after.take()?;
    report(h, "fallback_order_by_order", {
        (|| -> Check {
            ensure!(
                after.fb_2m > before.fb_2m,
                "hugepages-2048kB anon_fault_fallback did not grow ({})",
                after.fb_2m
            );
            ensure!(
                after.fb_64k > before.fb_64k,
                "hugepages-64kB anon_fault_fallback did not grow ({})",
                after.fb_64k
            );
            ensure!(
                !(wifexited(hog_status) && wexitstatus(hog_status) == HOG_ORDER_VIOLATED),
                "64 KiB faults fell back before any 2 MiB fault did"
            );
            Ok(())
        })()
    });
    report(h, "hog_killed_by_sigkill", {
        if wifsignaled(hog_status) && wtermsig(hog_status) == sys::SIGKILL {
            Ok(())
        } else if wifsignaled(hog_status) {
            Err(Msg::new(format_args!(
                "killed by signal {} instead of SIGKILL",
                wtermsig(hog_status)
            )))
        } else {
            Err(Msg::new(format_args!(
                "hog exited with status {} (3: mmap failed, 6: never killed)",
                wexitstatus(hog_status)
            )))
        }
    });
    report(h, "bystander_survives", {
        if wifexited(by_status) && wexitstatus(by_status) == 0 {
            Ok(())
        } else {
            Err(Msg::new(format_args!(
                "bystander wait status {by_status:#x} (exit 1: its data changed)"
            )))
        }
    });
    report(h, "khugepaged_keeps_scanning", {
        let mut now = after.full_scans;
        for _ in 0..200 {
            if now > after.full_scans {
                break;
            }
            sleep_ms(10);
            now = counter(path!("{THP}/khugepaged/full_scans").c()).unwrap_or(0);
        }
        if now > after.full_scans {
            Ok(())
        } else {
            Err(Msg::new(format_args!(
                "full_scans stuck at {now} for 2 s after the hog died"
            )))
        }
    });
    report(h, "every_frame_returns", {
        let mut free = after.free_kb;
        for _ in 0..200 {
            if free == before.free_kb {
                break;
            }
            sleep_ms(10);
            let mut s = Snapshot::default();
            if s.take().is_ok() {
                free = s.free_kb;
            }
        }
        if free == before.free_kb {
            Ok(())
        } else {
            Err(Msg::new(format_args!(
                "MemFree {free} kB after, {} kB before ({} kB differ)",
                before.free_kb,
                before.free_kb as i64 - free as i64
            )))
        }
    });
    if swap {
        report(h, "swap_filled_before_kill", {
            let written = after.pswpout - before.pswpout;
            if written * 4 >= before.swap_total_kb / 2 {
                Ok(())
            } else {
                Err(Msg::new(format_args!(
                    "pswpout grew by {written} pages, the area has {} kB",
                    before.swap_total_kb
                )))
            }
        });
        report(h, "swap_slots_return", {
            let mut s = after;
            for _ in 0..200 {
                if s.swap_free_kb == s.swap_total_kb {
                    break;
                }
                sleep_ms(10);
                let _ = s.take();
            }
            let off = sys::swapoff(b"/dev/vda\0");
            if s.swap_free_kb != s.swap_total_kb {
                Err(Msg::new(format_args!(
                    "SwapFree {} kB of {} kB after the reap",
                    s.swap_free_kb, s.swap_total_kb
                )))
            } else if off != 0 {
                Err(Msg::new(format_args!("swapoff: {off}")))
            } else {
                Ok(())
            }
        });
    }
    sys::munmap(mine.addr, mine.len);
    Ok(())
}

/// What the parent compares before and after.
#[derive(Default, Clone, Copy)]
struct Snapshot {
    free_kb: u64,
    swap_total_kb: u64,
    swap_free_kb: u64,
    pswpout: u64,
    fb_2m: u64,
    fb_64k: u64,
    full_scans: u64,
}

impl Snapshot {
    /// Read everything into `self` (an in-place fill, so the measured and
    /// the warm-up readings use the same stack pages).
    fn take(&mut self) -> Check {
        let mut buf = [0u8; 1024];
        let n = match read_file(b"/proc/meminfo\0", &mut buf) {
            Ok(n) => n,
            Err(e) => fail!("/proc/meminfo: errno {e}"),
        };
        let Some(free) = field(&buf[..n], b"MemFree:") else {
            fail!("/proc/meminfo has no MemFree");
        };
        self.free_kb = free;
        self.swap_total_kb = field(&buf[..n], b"SwapTotal:").unwrap_or(0);
        self.swap_free_kb = field(&buf[..n], b"SwapFree:").unwrap_or(0);
        let mut vm = [0u8; 8192];
        self.pswpout = match read_file(b"/proc/vmstat\0", &mut vm) {
            Ok(n) => field(&vm[..n], b"\npswpout ").unwrap_or(0),
            Err(e) => fail!("/proc/vmstat: errno {e}"),
        };
        self.fb_2m = counter(path!("{THP}/hugepages-2048kB/stats/anon_fault_fallback").c())?;
        self.fb_64k = counter(path!("{THP}/hugepages-64kB/stats/anon_fault_fallback").c())?;
        self.full_scans = counter(path!("{THP}/khugepaged/full_scans").c())?;
        Ok(())
    }
}

/// The memory hog: grows until the kernel kills it.  After every 64 KiB it
/// reads both fallback counters and exits with `HOG_ORDER_VIOLATED` if the
/// 64 KiB one grew while the 2 MiB one had not.
fn hog() -> i32 {
    sleep_ms(100);
    let fb2 = counter(path!("{THP}/hugepages-2048kB/stats/anon_fault_fallback").c()).unwrap_or(0);
    let fb64 = counter(path!("{THP}/hugepages-64kB/stats/anon_fault_fallback").c()).unwrap_or(0);
    println!("exhaust: hog pid {} filling memory", sys::getpid());
    let (mut seen2, mut seen64) = (false, false);
    let mut kib = 0usize;
    // 64 GiB is far more than any machine this runs on: never reached.
    while kib < 64 << 20 {
        let Ok(m) = map_aligned(CHUNK, SZ_2M) else {
            return HOG_MMAP_FAILED;
        };
        for part in 0..CHUNK / STEP {
            touch(
                &Mem {
                    addr: m.addr + part * STEP,
                    len: STEP,
                },
                0x5a,
            );
            kib += STEP >> 10;
            // A failed read (no memory for a stack copy) skips a check.
            if let (Ok(a), Ok(b)) = (
                counter(path!("{THP}/hugepages-2048kB/stats/anon_fault_fallback").c()),
                counter(path!("{THP}/hugepages-64kB/stats/anon_fault_fallback").c()),
            ) {
                if a > fb2 && !seen2 {
                    seen2 = true;
                    println!("exhaust: first 2 MiB fallback after {kib} KiB");
                }
                if b > fb64 && !seen64 {
                    seen64 = true;
                    println!("exhaust: first 64 KiB fallback after {kib} KiB");
                    if !seen2 {
                        return HOG_ORDER_VIOLATED;
                    }
                }
            }
        }
    }
    HOG_NEVER_KILLED
}

/// Writes a pattern, then checks it every 5 ms until `hog` is gone (reaped:
/// `kill(hog, 0)` fails with ESRCH).  Exit 0 if it never changed.
fn bystander(hog: isize) -> i32 {
    let Ok(m) = map(BYSTANDER_LEN) else {
        return 2;
    };
    let pat = |off: usize| (off as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut off = 0;
    while off < m.len {
        m.poke64(off, pat(off));
        off += 512;
    }
    let mut rounds = 0u64;
    loop {
        let mut off = 0;
        while off < m.len {
            if m.peek64(off) != pat(off) {
                return 1;
            }
            off += 512;
        }
        if sys::kill(hog, 0) == -(sys::ESRCH as isize) {
            break;
        }
        rounds += 1;
        // 10 minutes of polling: the hog is long dead by then.
        if rounds > 120_000 {
            return 3;
        }
        sleep_ms(5);
    }
    0
}

/// A warm-up child: touch `len` bytes, check them, exit 0.
fn warm(len: usize) -> i32 {
    match map_aligned(len, SZ_2M) {
        Ok(m) => {
            touch(&m, 3);
            i32::from(m.peek(len - 1) != 3)
        }
        Err(_) => 2,
    }
}

// --------------------------------------------------------------- helpers

fn knob(p: &[u8], v: &[u8]) -> Check {
    match write_file(p, v) {
        Ok(()) => Ok(()),
        Err(e) => fail!("cannot write {}: errno {e}", name(p)),
    }
}

fn exists(p: &[u8]) -> bool {
    read_file(p, &mut [0u8; 8]) != Err(sys::ENOENT)
}

fn name(p: &[u8]) -> &str {
    core::str::from_utf8(&p[..p.len() - 1]).unwrap_or("?")
}

fn counter(p: &[u8]) -> Result<u64, Msg> {
    let mut buf = [0u8; 32];
    match read_file(p, &mut buf) {
        Ok(n) => match mthp_user::parse_u64(&buf[..n]) {
            Some(v) => Ok(v),
            None => fail!("{}: not a number", name(p)),
        },
        Err(e) => fail!("{}: errno {e}", name(p)),
    }
}

/// The number after `key` in a `key value` text file.
fn field(hay: &[u8], key: &[u8]) -> Option<u64> {
    let i = hay.windows(key.len()).position(|w| w == key)?;
    mthp_user::parse_u64(&hay[i + key.len()..])
}

fn sleep_ms(ms: i64) {
    sys::nanosleep(&sys::Timespec {
        sec: 0,
        nsec: ms * 1_000_000,
    });
}

fn map(len: usize) -> Result<Mem, Msg> {
    let r = sys::mmap(
        0,
        len,
        sys::PROT_READ | sys::PROT_WRITE,
        sys::MAP_PRIVATE | sys::MAP_ANONYMOUS,
        -1,
        0,
    );
    match check(r) {
        Ok(addr) => Ok(Mem { addr, len }),
        Err(e) => fail!("mmap({len:#x}): errno {e}"),
    }
}

/// `len` bytes starting at a multiple of `align` (over-map, trim).
fn map_aligned(len: usize, align: usize) -> Result<Mem, Msg> {
    let m = map(len + align)?;
    let start = (m.addr + align - 1) & !(align - 1);
    if start > m.addr {
        sys::munmap(m.addr, start - m.addr);
    }
    let end = start + len;
    if m.addr + m.len > end {
        sys::munmap(end, m.addr + m.len - end);
    }
    Ok(Mem { addr: start, len })
}

/// Write `v` into every 4 KiB page of `m`.
fn touch(m: &Mem, v: u8) {
    let mut off = 0;
    while off < m.len {
        m.poke(off, v);
        off += PAGE;
    }
}

/// Fork a child running `f` (its result is the exit code).
fn spawn(f: impl FnOnce() -> i32) -> Result<isize, Msg> {
    let pid = sys::fork();
    if pid == 0 {
        sys::exit(f());
    }
    if pid < 0 {
        fail!("fork: errno {}", -pid);
    }
    Ok(pid)
}

/// Wait for `pid`; its wait status.
fn reap(pid: isize) -> Result<i32, Msg> {
    let mut st = 0;
    let r = sys::wait4(pid, &mut st, 0);
    ensure!(r == pid, "wait4({pid}) = {r}");
    Ok(st)
}

/// The knobs this program changes, put back at the end.
struct Saved {
    sizes: [[u8; 16]; 9],
    scan_sleep: u64,
    alloc_sleep: u64,
}

/// The selected word of an `a [b] c` file.
fn selected(buf: &[u8]) -> &[u8] {
    match (
        buf.iter().position(|&c| c == b'['),
        buf.iter().position(|&c| c == b']'),
    ) {
        (Some(a), Some(b)) if a < b => &buf[a + 1..b],
        _ => b"",
    }
}

impl Saved {
    fn save() -> Saved {
        let mut s = Saved {
            sizes: [[0; 16]; 9],
            scan_sleep: counter(path!("{THP}/khugepaged/scan_sleep_millisecs").c()).unwrap_or(0),
            alloc_sleep: counter(path!("{THP}/khugepaged/alloc_sleep_millisecs").c()).unwrap_or(0),
        };
        let mut buf = [0u8; 128];
        for (i, kb) in SIZES_KB.iter().enumerate() {
            if let Ok(n) = read_file(path!("{THP}/hugepages-{kb}kB/enabled").c(), &mut buf) {
                let w = selected(&buf[..n]);
                let k = w.len().min(15);
                s.sizes[i][..k].copy_from_slice(&w[..k]);
            }
        }
        s
    }

    fn restore(&self) {
        for (i, kb) in SIZES_KB.iter().enumerate() {
            let n = self.sizes[i].iter().position(|&c| c == 0).unwrap_or(16);
            if n > 0 {
                let _ = write_file(
                    path!("{THP}/hugepages-{kb}kB/enabled").c(),
                    &self.sizes[i][..n],
                );
            }
        }
        if self.scan_sleep > 0 {
            let _ = write_file(
                path!("{THP}/khugepaged/scan_sleep_millisecs").c(),
                Msg::new(format_args!("{}", self.scan_sleep))
                    .as_str()
                    .as_bytes(),
            );
        }
        if self.alloc_sleep > 0 {
            let _ = write_file(
                path!("{THP}/khugepaged/alloc_sleep_millisecs").c(),
                Msg::new(format_args!("{}", self.alloc_sleep))
                    .as_str()
                    .as_bytes(),
            );
        }
    }
}
