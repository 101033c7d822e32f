//! The random-argument system call fuzzer (issue 8), run as `init=/fuzz`.
//!
//! `fuzz=<seed>,<calls>[,v]` on the kernel command line (or `fuzz <seed>
//! <calls> [v]` as arguments) picks the seed and the number of calls; the
//! seed is printed first, so any failure replays exactly (`v` prints every
//! call before it is made, to find the one that broke).
//!
//! A forked child makes `calls` system calls from the implemented set with
//! random and adversarial arguments: descriptors (open, closed, -1, huge,
//! with upper bits), pointers (NULL, kernel, non-canonical, unmapped,
//! read-only, straddling a hole, unaligned, into its own buffers), lengths
//! (0, 1, page, huge, `usize::MAX`), unknown flag bits, memory ranges over
//! its own 32 MiB arena and random addresses.  Calls that could end the run
//! or escape the child are never made: exit, exit_group, clone/fork/vfork,
//! reboot; `nanosleep` gets at most 2 ms.  Every result must be a value or
//! `-errno` with errno in 1..=133 (Linux's range); otherwise the child
//! prints the call and exits 1.
//!
//! `t<N>` after the call count (`fuzz=<seed>,<calls>,t4`) runs the calls
//! on N threads of the child instead (clone, `mthp_user::thread`), each
//! pinned to one CPU in turn and with its own seed, scratch buffer and
//! fixtures, over one shared arena: mmap, munmap, mprotect, madvise
//! (MADV_COLLAPSE and DONTNEED among the advice), mremap and the kernel's
//! own accesses race on the same ranges of one address space from
//! several CPUs.  The calls are split between the threads; a run is then
//! no longer exactly replayable (the interleaving differs), but the seed
//! still picks every thread's calls.
//!
//! The parent passes the run if the child exits 0 and `/proc/meminfo`
//! MemFree afterwards is at least what it was before the child was forked (a
//! warm-up child first creates what the kernel allocates once and keeps:
//! the huge zero folio, kernel stack page tables).  It refuses to run
//! anywhere but this kernel (uname release `*-mthp`).
#![no_std]
#![no_main]
#![allow(clippy::result_large_err)]

use core::sync::atomic::{AtomicI32, AtomicU32, Ordering::SeqCst};
use mthp_user::sys::{self, check, nr};
use mthp_user::thread::clone_thread;
use mthp_user::{
    Args, Harness, Mem, Msg, entry, on_mthp, println, read_file, wexitstatus, wifexited,
    wifsignaled, wtermsig,
};

const PAGE: usize = 4096;
const SZ_2M: usize = 2 << 20;
/// The child's own memory-call playground (2 MiB aligned).
const ARENA: usize = 32 << 20;
/// Scratch buffer the kernel reads from and writes to.
const SCRATCH: usize = 64 << 10;
/// A kernel address and (on x86) a non-canonical one.
const K: usize = 0xffff_8000_0000_0000;
const NC: usize = 0x8000_0000_0000_0000;

fn main(args: &Args) -> i32 {
    let mut h = Harness::new(None);
    if !on_mthp() {
        h.skip_here(
            "fuzz",
            "not the mthp kernel; random calls could harm a host",
        );
        return h.finish();
    }
    let (seed, calls, verbose, threads) = params(args);
    if threads > 1 {
        println!(
            "fuzz: seed {seed:#x}, {calls} calls on {threads} threads (again: init=/fuzz fuzz={seed:#x},{calls},t{threads})"
        );
    } else {
        println!(
            "fuzz: seed {seed:#x}, {calls} calls (replay: init=/fuzz fuzz={seed:#x},{calls},v)"
        );
    }
    // The stack this program uses, faulted in now.
    let big = [1u8; 64 << 10];
    core::hint::black_box(&big);

    // Warm-up: a short run with another seed, plus a read of a 2 MiB
    // range that maps the huge zero folio if PMD THP is on.
    let w = spawn(|| {
        warm_huge_zero();
        Fuzzer::new(seed ^ 0x5a5a_5a5a, false).run(500)
    });
    let _ = reap(w);
    let before = mem_free();
    let pid = spawn(|| {
        if threads > 1 {
            run_threads(seed, calls, verbose, threads)
        } else {
            Fuzzer::new(seed, verbose).run(calls)
        }
    });
    let st = reap(pid);
    let mut after = mem_free();
    for _ in 0..100 {
        if after >= before {
            break;
        }
        sleep_ms(10);
        after = mem_free();
    }
    // The child wrote random bytes to the console: start a fresh line.
    println!();
    let r1 = if wifexited(st) && wexitstatus(st) == 0 {
        Ok(())
    } else if wifsignaled(st) {
        Err(Msg::new(format_args!(
            "child killed by signal {} (seed {seed:#x}; replay with ,v to see the last call)",
            wtermsig(st)
        )))
    } else {
        Err(Msg::new(format_args!(
            "child exit status {} (seed {seed:#x}; the call is printed above)",
            wexitstatus(st)
        )))
    };
    report(&mut h, "fuzz_results_in_range", r1);
    // A leak lowers MemFree; it may end higher (with several CPUs,
    // something of the parent's taken before the fork, such as a reaped
    // thread's stack or another CPU's page cache, can come back meanwhile).
    let r2 = if after >= before {
        Ok(())
    } else {
        Err(Msg::new(format_args!(
            "MemFree {after:?} kB after, {before:?} kB before (seed {seed:#x})"
        )))
    };
    report(&mut h, "fuzz_leaks_nothing", r2);
    h.finish()
}

entry!(main);

fn report(h: &mut Harness, name: &str, r: Result<(), Msg>) {
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

/// Seed, calls, verbosity and threads from the arguments or `fuzz=` on
/// the kernel command line; defaults: a random seed, 20000 calls, one
/// thread.
fn params(args: &Args) -> (u64, u64, bool, usize) {
    let mut seed = None;
    let mut calls = 20_000;
    let mut verbose = false;
    let mut threads = 1;
    let mut apply = |i: usize, w: &[u8]| match i {
        0 => seed = parse_num(w),
        1 => calls = parse_num(w).unwrap_or(calls),
        _ => match w.strip_prefix(b"t").and_then(mthp_user::parse_u64) {
            Some(n) => threads = (n as usize).clamp(1, MAX_THREADS),
            None => verbose |= w == b"v",
        },
    };
    if args.argc() > 1 {
        for i in 1..args.argc() {
            apply(i - 1, args.arg(i).unwrap_or(b""));
        }
    } else {
        let mut buf = [0u8; 512];
        let n = read_file(b"/proc/cmdline\0", &mut buf).unwrap_or(0);
        let line = &buf[..n];
        if let Some(at) = line.windows(5).position(|w| w == b"fuzz=") {
            let rest = &line[at + 5..];
            let end = rest
                .iter()
                .position(|c| c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            for (i, w) in rest[..end].split(|&c| c == b',').enumerate() {
                apply(i, w);
            }
        }
    }
    let seed = seed.unwrap_or_else(|| {
        let mut b = [0u8; 8];
        sys::getrandom(&mut b);
        u64::from_le_bytes(b)
    });
    (seed, calls, verbose, threads)
}

fn parse_num(w: &[u8]) -> Option<u64> {
    match w.strip_prefix(b"0x") {
        Some(h) => {
            let mut v: u64 = 0;
            for &c in h {
                let d = (c as char).to_digit(16)? as u64;
                v = v.checked_mul(16)?.checked_add(d)?;
            }
            Some(v)
        }
        None => mthp_user::parse_u64(w),
    }
}

fn mem_free() -> Option<u64> {
    let mut buf = [0u8; 1024];
    let n = read_file(b"/proc/meminfo\0", &mut buf).ok()?;
    let key = b"MemFree:";
    let i = buf[..n].windows(key.len()).position(|w| w == key)?;
    mthp_user::parse_u64(&buf[i + key.len()..n])
}

fn sleep_ms(ms: i64) {
    sys::nanosleep(&sys::Timespec {
        sec: 0,
        nsec: ms * 1_000_000,
    });
}

fn spawn(f: impl FnOnce() -> i32) -> isize {
    let pid = sys::fork();
    if pid == 0 {
        sys::exit(f());
    }
    pid
}

fn reap(pid: isize) -> i32 {
    let mut st = 0;
    if pid > 0 {
        sys::wait4(pid, &mut st, 0);
    }
    st
}

/// Map a 2 MiB-aligned range with MADV_HUGEPAGE and let the kernel read
/// it (a `write` from it to /dev/null): a PMD read fault maps the huge zero
/// folio, which the kernel keeps once created.
fn warm_huge_zero() {
    let r = sys::mmap(
        0,
        2 * SZ_2M,
        sys::PROT_READ | sys::PROT_WRITE,
        sys::MAP_PRIVATE | sys::MAP_ANONYMOUS,
        -1,
        0,
    );
    let Ok(a) = check(r) else { return };
    let start = (a + SZ_2M - 1) & !(SZ_2M - 1);
    sys::madvise(start, SZ_2M, sys::MADV_HUGEPAGE);
    let fd = sys::open(b"/dev/null\0", sys::O_WRONLY);
    if fd >= 0 {
        // SAFETY: `[start, start + 16)` lies inside the mapping made above
        // (it spans 4 MiB from `a`, and `start` is at most 2 MiB past it).
        let bytes = unsafe { core::slice::from_raw_parts(start as *const u8, 16) };
        sys::write(fd as i32, bytes);
        sys::close(fd as i32);
    }
    sys::munmap(a, 2 * SZ_2M);
}

/// Most threads `t<N>` may ask for.
const MAX_THREADS: usize = 8;
/// Each fuzzing thread's stack.
const STACK: usize = 256 << 10;

/// What the fuzzing threads report: finished, and the result of `run`.
struct Crew {
    done: [AtomicU32; MAX_THREADS],
    result: [AtomicI32; MAX_THREADS],
    /// The clone CHILD_CLEARTID words (unused: a fuzzed set_tid_address
    /// may move them, so the join waits for `done`).
    ctid: [AtomicU32; MAX_THREADS],
}

static CREW: Crew = Crew {
    done: [const { AtomicU32::new(0) }; MAX_THREADS],
    result: [const { AtomicI32::new(0) }; MAX_THREADS],
    ctid: [const { AtomicU32::new(0) }; MAX_THREADS],
};

/// One fuzzing thread's work.
struct Job {
    fuzzer: Fuzzer,
    calls: u64,
    cpu: usize,
    idx: usize,
}

/// The CPUs this process may run on (bit per CPU; CPU 0 if unknown).
fn cpu_mask() -> u64 {
    let mut m = [0u64; 2];
    let r = sys::syscall(
        nr::SCHED_GETAFFINITY,
        &[0, core::mem::size_of_val(&m), m.as_mut_ptr() as usize],
    );
    if r > 0 && m[0] != 0 { m[0] } else { 1 }
}

/// Pin the calling thread to `cpu` (best effort: the calls race anyway).
fn pin(cpu: usize) {
    let m = [1u64 << cpu, 0];
    sys::syscall(
        nr::SCHED_SETAFFINITY,
        &[0, core::mem::size_of_val(&m), m.as_ptr() as usize],
    );
}

extern "C" fn fuzz_thread(arg: usize) -> usize {
    // SAFETY: `arg` is this thread's own `Job` in `run_threads`' frame,
    // which waits for `done` before it returns, and nothing else uses
    // that `Job` meanwhile.
    let job = unsafe { &mut *(arg as *mut Job) };
    pin(job.cpu);
    let r = job.fuzzer.run(job.calls);
    CREW.result[job.idx].store(r, SeqCst);
    CREW.done[job.idx].store(1, SeqCst);
    0
}

/// `calls` calls on `n` threads of this process, thread `i` on the
/// `i`-th allowed CPU in turn (the caller is thread 0); the first
/// non-zero result, or 0.  Every stack and scratch buffer is mapped
/// before the fixtures, and every fuzzer keeps its memory calls below
/// all of them (`high_start`), so no thread unmaps another's stack.
fn run_threads(seed: u64, calls: u64, verbose: bool, n: usize) -> i32 {
    let rw = sys::PROT_READ | sys::PROT_WRITE;
    let anon = sys::MAP_PRIVATE | sys::MAP_ANONYMOUS;
    let mut stacks = [0usize; MAX_THREADS];
    let mut scratch = [0usize; MAX_THREADS];
    for i in 1..n {
        stacks[i] = check(sys::mmap(0, STACK, rw, anon, -1, 0)).unwrap_or(0);
        // A PROT_NONE page above each scratch buffer: the kernel writes up
        // to a fuzzed length from a pointer into it (read, getrandom), and
        // the next mapping up may be a thread's stack.
        scratch[i] = check(sys::mmap(0, SCRATCH + PAGE, rw, anon, -1, 0)).unwrap_or(0);
        if scratch[i] != 0 && sys::mprotect(scratch[i] + SCRATCH, PAGE, sys::PROT_NONE) != 0 {
            scratch[i] = 0;
        }
        if stacks[i] == 0 || scratch[i] == 0 {
            println!("fuzz: cannot map thread {i}'s stack or scratch buffer");
            return 2;
        }
    }
    let first = Fuzzer::new(seed, verbose);
    let lowest = (1..n)
        .flat_map(|i| [stacks[i], scratch[i]])
        .fold(first.high_start, usize::min);
    let cpus = cpu_mask();
    let cpu_of = |i: usize| {
        let k = i % cpus.count_ones() as usize;
        (0..64).filter(|c| cpus & 1 << c != 0).nth(k).unwrap_or(0)
    };
    let mut jobs: [Option<Job>; MAX_THREADS] = [const { None }; MAX_THREADS];
    for i in (1..n).rev() {
        let mut f = first.sibling(seed ^ (i as u64).wrapping_mul(0x9e37_79b9), scratch[i]);
        f.high_start = lowest;
        jobs[i] = Some(Job {
            fuzzer: f,
            calls: calls / n as u64,
            cpu: cpu_of(i),
            idx: i,
        });
    }
    let mut f0 = first;
    f0.high_start = lowest;
    jobs[0] = Some(Job {
        fuzzer: f0,
        calls: calls / n as u64 + calls % n as u64,
        cpu: cpu_of(0),
        idx: 0,
    });
    for (i, job) in jobs.iter_mut().enumerate().take(n).skip(1) {
        let arg = job.as_mut().map_or(0, |j| j as *mut Job as usize);
        if check(clone_thread(
            fuzz_thread,
            arg,
            stacks[i] + STACK,
            &CREW.ctid[i],
        ))
        .is_err()
        {
            println!("fuzz: cannot start thread {i}");
            CREW.done[i].store(1, SeqCst);
            CREW.result[i].store(2, SeqCst);
        }
    }
    if let Some(j) = jobs[0].as_mut() {
        fuzz_thread(j as *mut Job as usize);
    }
    // Join: up to two minutes in all.
    for _ in 0..120_000 {
        if (0..n).all(|i| CREW.done[i].load(SeqCst) == 1) {
            break;
        }
        sleep_ms(1);
    }
    let mut r = 0;
    for i in 0..n {
        if CREW.done[i].load(SeqCst) != 1 {
            println!("fuzz: thread {i} did not finish within two minutes");
            return 3;
        }
        let ri = CREW.result[i].load(SeqCst);
        if r == 0 {
            r = ri;
        }
    }
    r
}

/// One of `xs` (the values are computed before `r` is borrowed again).
fn choose<T: Copy>(xs: &[T], r: &mut Rng) -> T {
    xs[r.below(xs.len() as u64) as usize]
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// What an argument is, for picking adversarial values.
#[derive(Clone, Copy, PartialEq)]
enum A {
    /// A file descriptor.
    Fd,
    /// `openat`'s directory descriptor.
    DirFd,
    /// A pointer the kernel reads or writes.
    Ptr,
    /// A path pointer.
    Path,
    /// A byte count.
    Len,
    /// An address for a memory call.
    Addr,
    /// A length for a memory call.
    MLen,
    Prot,
    MapFlags,
    Advice,
    RemapFlags,
    /// Flag words (open, fstatat, getrandom, wait options, …).
    Flags,
    /// A small or extreme integer.
    Int,
    /// A pointer to an iovec array.
    Iov,
    /// A pointer to a (sanitised) timespec.
    Ts,
    Sig,
    Pid,
    /// Nothing meaningful (zero mostly).
    Zero,
}

/// The calls fuzzed: number, name, argument kinds.  Never exit,
/// exit_group, clone/fork/vfork or reboot.
fn call_table() -> &'static [(usize, &'static str, [A; 6])] {
    use A::*;
    const Z: A = Zero;
    &[
        (nr::READ, "read", [Fd, Ptr, Len, Z, Z, Z]),
        (nr::PREAD64, "pread64", [Fd, Ptr, Len, Int, Z, Z]),
        (nr::WRITE, "write", [Fd, Ptr, Len, Z, Z, Z]),
        (nr::READV, "readv", [Fd, Iov, Int, Z, Z, Z]),
        (nr::WRITEV, "writev", [Fd, Iov, Int, Z, Z, Z]),
        (nr::OPENAT, "openat", [DirFd, Path, Flags, Int, Z, Z]),
        (nr::CLOSE, "close", [Fd, Z, Z, Z, Z, Z]),
        (nr::FSTAT, "fstat", [Fd, Ptr, Z, Z, Z, Z]),
        (
            nr::NEWFSTATAT,
            "newfstatat",
            [DirFd, Path, Ptr, Flags, Z, Z],
        ),
        (nr::LSEEK, "lseek", [Fd, Int, Int, Z, Z, Z]),
        (nr::MMAP, "mmap", [Addr, MLen, Prot, MapFlags, Fd, Int]),
        (nr::MUNMAP, "munmap", [Addr, MLen, Z, Z, Z, Z]),
        (nr::MPROTECT, "mprotect", [Addr, MLen, Prot, Z, Z, Z]),
        (nr::MADVISE, "madvise", [Addr, MLen, Advice, Z, Z, Z]),
        (
            nr::MREMAP,
            "mremap",
            [Addr, MLen, MLen, RemapFlags, Addr, Z],
        ),
        (nr::BRK, "brk", [Addr, Z, Z, Z, Z, Z]),
        (nr::WAIT4, "wait4", [Pid, Ptr, Flags, Ptr, Z, Z]),
        (nr::GETPID, "getpid", [Z, Z, Z, Z, Z, Z]),
        (nr::GETPPID, "getppid", [Z, Z, Z, Z, Z, Z]),
        (nr::GETTID, "gettid", [Z, Z, Z, Z, Z, Z]),
        (nr::SCHED_YIELD, "sched_yield", [Z, Z, Z, Z, Z, Z]),
        (nr::NANOSLEEP, "nanosleep", [Ts, Ptr, Z, Z, Z, Z]),
        (nr::CLOCK_GETTIME, "clock_gettime", [Int, Ptr, Z, Z, Z, Z]),
        (nr::GETRUSAGE, "getrusage", [Int, Ptr, Z, Z, Z, Z]),
        (nr::UNAME, "uname", [Ptr, Z, Z, Z, Z, Z]),
        (nr::SET_TID_ADDRESS, "set_tid_address", [Ptr, Z, Z, Z, Z, Z]),
        (
            nr::SET_ROBUST_LIST,
            "set_robust_list",
            [Ptr, Len, Z, Z, Z, Z],
        ),
        (nr::RT_SIGACTION, "rt_sigaction", [Sig, Ptr, Ptr, Len, Z, Z]),
        (
            nr::RT_SIGPROCMASK,
            "rt_sigprocmask",
            [Int, Ptr, Ptr, Len, Z, Z],
        ),
        (nr::PRLIMIT64, "prlimit64", [Pid, Int, Ptr, Ptr, Z, Z]),
        (nr::GETRANDOM, "getrandom", [Ptr, Len, Flags, Z, Z, Z]),
        (nr::PRCTL, "prctl", [Int, Ptr, Int, Int, Int, Z]),
        (nr::PIPE2, "pipe2", [Ptr, Flags, Z, Z, Z, Z]),
        (nr::DUP, "dup", [Fd, Z, Z, Z, Z, Z]),
        (nr::DUP3, "dup3", [Fd, Fd, Flags, Z, Z, Z]),
        (nr::FCNTL, "fcntl", [Fd, Int, Int, Z, Z, Z]),
        (nr::GETDENTS64, "getdents64", [Fd, Ptr, Len, Z, Z, Z]),
        (nr::GETCWD, "getcwd", [Ptr, Len, Z, Z, Z, Z]),
        (nr::CHDIR, "chdir", [Path, Z, Z, Z, Z, Z]),
        (nr::FACCESSAT, "faccessat", [DirFd, Path, Int, Z, Z, Z]),
        (nr::READLINKAT, "readlinkat", [DirFd, Path, Ptr, Len, Z, Z]),
        (nr::UMASK, "umask", [Int, Z, Z, Z, Z, Z]),
        (nr::SYSINFO, "sysinfo", [Ptr, Z, Z, Z, Z, Z]),
        (nr::GETTIMEOFDAY, "gettimeofday", [Ptr, Ptr, Z, Z, Z, Z]),
        (
            nr::SCHED_GETAFFINITY,
            "sched_getaffinity",
            [Pid, Len, Ptr, Z, Z, Z],
        ),
        (nr::GETPGID, "getpgid", [Pid, Z, Z, Z, Z, Z]),
        (nr::SETPGID, "setpgid", [Pid, Pid, Z, Z, Z, Z]),
        (nr::GETSID, "getsid", [Pid, Z, Z, Z, Z, Z]),
        (nr::SETSID, "setsid", [Z, Z, Z, Z, Z, Z]),
        (nr::IOCTL, "ioctl", [Fd, Int, Ptr, Z, Z, Z]),
        (nr::MOUNT, "mount", [Path, Path, Path, Flags, Ptr, Z]),
        (nr::KILL, "kill", [Pid, Sig, Z, Z, Z, Z]),
        #[cfg(target_arch = "x86_64")]
        (158, "arch_prctl", [Int, Ptr, Z, Z, Z, Z]),
        (usize::MAX, "unknown", [Int, Int, Int, Int, Int, Int]),
    ]
}

/// System call numbers the "unknown" entry must never hit (it draws
/// random numbers): they could end or fork the child, or (unsanitised)
/// make blocking pipes, replace the console, restore SIGPIPE or sleep.
fn forbidden(n: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    const DENY: &[usize] = &[
        56, 57, 58, 59, 60, 62, 169, 231, 158, 322, 435, 13, 22, 33, 35, 72, 230, 292, 293, 200,
        234,
    ];
    #[cfg(target_arch = "aarch64")]
    const DENY: &[usize] = &[
        93, 94, 129, 142, 220, 221, 281, 435, 24, 25, 59, 101, 115, 134, 130, 131,
    ];
    DENY.contains(&n)
}

const PATHS: &[&[u8]] = &[
    b"/proc/meminfo\0",
    b"/proc/vmstat\0",
    b"/proc/self/smaps\0",
    b"/proc/self/maps\0",
    b"/proc/self/pagemap\0",
    b"/proc/kpageflags\0",
    b"/proc/buddyinfo\0",
    b"/proc/pagetypeinfo\0",
    b"/proc/1/smaps\0",
    b"/proc/cmdline\0",
    b"/dev/null\0",
    b"/dev/console\0",
    b"/sys/kernel/debug/split_huge_pages\0",
    b"/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats/anon_fault_alloc\0",
    b"/\0",
    b"/proc\0",
    b"/fuzz\0",
    b"/no/such/file\0",
    b"relative\0",
    b"\0",
    b"sysfs\0",
    b"proc\0",
    b"/../../proc/./meminfo\0",
];

struct Fuzzer {
    rng: Rng,
    verbose: bool,
    arena: usize,
    scratch: Mem,
    /// Read-only page, unmapped page, 8 bytes before a hole.
    ro: usize,
    gone: usize,
    straddle: usize,
    fds: [usize; 16],
    nfds: usize,
    /// Mappings made by successful mmap/mremap calls outside the arena
    /// (unmapped every so often, so memory does not run out).
    extra: [(usize, usize); 64],
    nextra: usize,
    /// Memory calls never touch `[0, low_end)` (the image and heap) or
    /// `[high_start, top)` (this program's stack and fixtures) outside the
    /// arena.
    low_end: usize,
    high_start: usize,
}

impl Fuzzer {
    fn new(seed: u64, verbose: bool) -> Fuzzer {
        let rw = sys::PROT_READ | sys::PROT_WRITE;
        let anon = sys::MAP_PRIVATE | sys::MAP_ANONYMOUS;
        let map = |len, prot| check(sys::mmap(0, len, prot, anon, -1, 0)).unwrap_or(0);
        let a = map(ARENA + SZ_2M, rw);
        let arena = (a + SZ_2M - 1) & !(SZ_2M - 1);
        let scratch = map(SCRATCH, rw);
        let ro = map(PAGE, sys::PROT_READ);
        let holed = map(2 * PAGE, rw);
        sys::munmap(holed + PAGE, PAGE);
        let gone = map(PAGE, rw);
        sys::munmap(gone, PAGE);
        let mut f = Fuzzer {
            rng: Rng(seed),
            verbose,
            arena,
            scratch: Mem {
                addr: scratch,
                len: SCRATCH,
            },
            ro,
            gone,
            straddle: holed + PAGE - 8,
            fds: [0; 16],
            nfds: 0,
            extra: [(0, 0); 64],
            nextra: 0,
            low_end: sys::brk(0) as usize + SZ_2M,
            high_start: scratch.min(ro).min(holed).min(arena),
        };
        for p in [&b"/proc/meminfo\0"[..], b"/dev/null\0", b"/\0"] {
            let r = sys::open(p, sys::O_RDONLY);
            if r >= 0 {
                f.add_fd(r as usize);
            }
        }
        f
    }

    /// Another thread's fuzzer over the same arena and fixtures, with
    /// its own seed and scratch buffer (the kernel writes there).
    fn sibling(&self, seed: u64, scratch: usize) -> Fuzzer {
        Fuzzer {
            rng: Rng(seed),
            verbose: self.verbose,
            arena: self.arena,
            scratch: Mem {
                addr: scratch,
                len: SCRATCH,
            },
            ro: self.ro,
            gone: self.gone,
            straddle: self.straddle,
            fds: self.fds,
            nfds: self.nfds,
            extra: [(0, 0); 64],
            nextra: 0,
            low_end: self.low_end,
            high_start: self.high_start.min(scratch),
        }
    }

    fn add_fd(&mut self, fd: usize) {
        if self.nfds == self.fds.len() {
            // Keep the three fixtures; recycle the rest.
            let old = self.fds[3];
            sys::close(old as i32);
            self.fds.copy_within(4.., 3);
            self.nfds -= 1;
        }
        self.fds[self.nfds] = fd;
        self.nfds += 1;
    }

    fn run(&mut self, calls: u64) -> i32 {
        // A write to a pipe nobody reads must fail (EPIPE), not end the
        // run with SIGPIPE; `sanitise` keeps SIGPIPE's disposition.
        let ign = [1usize, 0, 0, 0];
        sys::syscall(nr::RT_SIGACTION, &[13, ign.as_ptr() as usize, 0, 8]);
        let table = call_table();
        for i in 0..calls {
            if i % 256 == 255 {
                self.drop_extra();
            }
            let (mut n, name, kinds) = self.rng.pick(table);
            if n == usize::MAX {
                n = self.rng.below(480) as usize;
                if forbidden(n) {
                    continue;
                }
            }
            let mut a = [0usize; 6];
            for (j, k) in kinds.iter().enumerate() {
                a[j] = self.arg(*k);
            }
            self.sanitise(n, &mut a);
            if self.verbose {
                println!(
                    "fuzz #{i}: {name}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x})",
                    a[0], a[1], a[2], a[3], a[4], a[5]
                );
            }
            let r = sys::syscall6(n, a);
            if r < 0 && !(-133..=-1).contains(&r) {
                println!(
                    "fuzz: call #{i} {name}[{n}]({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x}) returned {r}: not -errno",
                    a[0], a[1], a[2], a[3], a[4], a[5]
                );
                return 1;
            }
            self.after(n, &a, r);
        }
        0
    }

    /// Unmap what mmap/mremap created outside the arena.
    fn drop_extra(&mut self) {
        for &(a, l) in &self.extra[..self.nextra] {
            sys::munmap(a, l);
        }
        self.nextra = 0;
    }

    /// Keep the child alive and the run bounded: no long sleeps, no TLS
    /// change, no writes into this program's own memory other than the
    /// scratch buffer and the arena (pointers come from pools that do not
    /// include the stack or the image).
    fn sanitise(&mut self, n: usize, a: &mut [usize; 6]) {
        if n == nr::NANOSLEEP {
            // A request the kernel can read must be short: anything but a
            // known-bad pointer becomes the scratch timespec, at most 2 ms
            // (or invalid).
            // (The unmapped page and the hole may be mapped again by now.)
            let bad = [0, K, NC, usize::MAX];
            if !bad.contains(&a[0]) {
                a[0] = self.scratch.addr;
            }
            let nsec = if self.rng.chance(4) {
                self.rng.pick(&[1_000_000_000u64, u64::MAX, 1 << 63])
            } else {
                self.rng.below(2_000_000)
            };
            let sec = if self.rng.chance(8) { u64::MAX } else { 0 };
            self.scratch.poke64(0, sec);
            self.scratch.poke64(8, nsec);
        }
        if n == nr::CLOSE && a[0] as u32 <= 2 {
            // Keep the console: failures must still be printed.
            a[0] |= 0x100;
        }
        if n == nr::DUP3 && a[1] as u32 <= 2 {
            a[1] |= 0x100;
        }
        // Pipes this program makes are non-blocking (it holds both ends,
        // so a blocking read or write could wait forever), and stay so.
        if n == nr::PIPE2 {
            a[1] |= 0o4000;
        }
        if n == nr::FCNTL && a[1] as u32 == 4 {
            a[2] |= 0o4000;
        }
        if n == nr::RT_SIGACTION && a[0] as u32 == 13 {
            a[0] = 10;
        }
        // A signal to itself could end the run: only ignored ones.
        if n == nr::KILL && (1..=64).contains(&(a[1] as u32)) {
            a[1] = 17;
        }
        #[cfg(target_arch = "x86_64")]
        if n == 158 && a[0] as u32 == 0x1002 {
            a[0] = 0x1003; // ARCH_GET_FS instead of SET_FS
        }
        // Ranges a memory call may change: never this program's own
        // memory (MAP_FIXED replaces, munmap/mprotect/MADV_DONTNEED
        // destroy).  MREMAP_FIXED also replaces at its target.
        if n == nr::MUNMAP || n == nr::MPROTECT || n == nr::MADVISE || n == nr::MREMAP {
            self.fix_range(a, 0, 1);
        }
        if n == nr::MMAP && a[3] & sys::MAP_FIXED != 0 {
            self.fix_range(a, 0, 1);
        }
        if n == nr::MREMAP && a[3] & sys::MREMAP_FIXED != 0 {
            self.fix_range(a, 4, 2);
        }
    }

    /// If `[a[ai], a[ai] + a[li])` could reach this program's memory, move
    /// it into the arena.  Ranges above user space or wrapping around stay
    /// as they are: the kernel must refuse them.
    fn fix_range(&mut self, a: &mut [usize; 6], ai: usize, li: usize) {
        let (addr, len) = (a[ai], a[li]);
        let top = if cfg!(target_arch = "x86_64") {
            1 << 47
        } else {
            1 << 48
        };
        let Some(end) = addr.checked_add(len) else {
            return;
        };
        if addr >= top {
            return;
        }
        let end = end.saturating_add(PAGE);
        let arena_end = self.arena + ARENA;
        let inside = |lo: usize, hi: usize| addr >= lo && end <= hi;
        if inside(self.arena, arena_end) || inside(self.gone, self.gone + PAGE) {
            return;
        }
        if addr >= self.low_end && end <= self.high_start {
            return;
        }
        let start = self.arena + (self.rng.below(ARENA as u64) as usize & !(PAGE - 1));
        a[ai] = start;
        a[li] = self.rng.below((arena_end - start - PAGE) as u64 + 1) as usize;
    }

    fn in_arena(&self, a: usize) -> bool {
        (self.arena..self.arena + ARENA).contains(&a)
    }

    /// Bookkeeping after a call.
    fn after(&mut self, n: usize, a: &[usize; 6], r: isize) {
        if r < 0 {
            return;
        }
        if n == nr::OPENAT {
            self.add_fd(r as usize);
        } else if n == nr::CLOSE {
            let fd = a[0] as u32 as usize;
            if let Some(i) = self.fds[..self.nfds].iter().position(|&f| f == fd) {
                self.fds.copy_within(i + 1..self.nfds, i);
                self.nfds -= 1;
            }
        } else if (n == nr::MMAP || n == nr::MREMAP) && !self.in_arena(r as usize) {
            let len = if n == nr::MMAP { a[1] } else { a[2] };
            if self.nextra == self.extra.len() {
                self.drop_extra();
            }
            self.extra[self.nextra] = (r as usize, len);
            self.nextra += 1;
        }
    }

    fn arg(&mut self, k: A) -> usize {
        let r = &mut self.rng;
        // One time in 16, anything at all.
        if k != A::Zero && k != A::Ts && r.chance(16) {
            return r.next() as usize;
        }
        match k {
            A::Zero => 0,
            A::Fd => {
                if self.nfds > 0 && r.chance(2) {
                    let i = r.below(self.nfds as u64) as usize;
                    let fd = self.fds[i];
                    if r.chance(8) { fd | 1 << 32 } else { fd }
                } else {
                    choose(&[0, 1, 2, 0xffff_ffff, usize::MAX, 63, 64, 99_999], r)
                }
            }
            A::DirFd => {
                if r.chance(2) {
                    sys::AT_FDCWD as usize
                } else {
                    self.arg(A::Fd)
                }
            }
            A::Ptr => self.ptr(),
            A::Path => {
                if r.chance(8) {
                    self.ptr()
                } else {
                    r.pick(PATHS).as_ptr() as usize
                }
            }
            A::Len => choose(
                &[
                    0,
                    1,
                    8,
                    16,
                    24,
                    4096,
                    r.below(SCRATCH as u64 + 1) as usize,
                    r.below(1 << 24) as usize,
                    1 << 62,
                    usize::MAX,
                    usize::MAX - 4095,
                ],
                r,
            ),
            A::Addr => self.addr(),
            A::MLen => {
                let page = r.below(2048) as usize * PAGE;
                choose(
                    &[
                        0,
                        PAGE,
                        SZ_2M,
                        page,
                        page + 1,
                        r.below(1 << 23) as usize,
                        ARENA,
                        1 << 47,
                        1 << 62,
                        usize::MAX,
                        usize::MAX - PAGE + 1,
                    ],
                    r,
                )
            }
            A::Prot => {
                if r.chance(8) {
                    1 << r.below(64)
                } else {
                    r.below(8) as usize
                }
            }
            A::MapFlags => {
                let mut f = if r.chance(16) {
                    choose(&[0, sys::MAP_ANONYMOUS, 1 | sys::MAP_ANONYMOUS, 3], r)
                } else {
                    sys::MAP_PRIVATE | sys::MAP_ANONYMOUS
                };
                for bit in [0x10, 0x100, 0x4000, 0x8000, 0x2_0000, 0x10_0000, 0x4_0000] {
                    if r.chance(6) {
                        f |= bit;
                    }
                }
                if r.chance(16) {
                    f |= 1 << r.below(64);
                }
                f
            }
            A::Advice => {
                if r.chance(8) {
                    r.next() as usize
                } else {
                    r.below(27) as usize
                }
            }
            A::RemapFlags => {
                if r.chance(8) {
                    r.next() as usize
                } else {
                    r.below(8) as usize
                }
            }
            A::Flags => {
                if r.chance(4) {
                    1 << r.below(64)
                } else {
                    choose(&[0, 1, 2, 3, 0x40, 0x241, 0x1000, 0x100, 6, 0x8000_0000], r)
                }
            }
            A::Int => choose(
                &[
                    0,
                    1,
                    2,
                    3,
                    9,
                    10,
                    64,
                    99,
                    0xffff_ffff,
                    usize::MAX,
                    i32::MIN as usize,
                    i64::MIN as usize,
                    r.below(32) as usize,
                    r.next() as usize,
                ],
                r,
            ),
            A::Iov => {
                if r.chance(4) {
                    return self.ptr();
                }
                // Up to 4 iovecs at the end of the scratch buffer.
                let at = SCRATCH - 64;
                for i in 0..4 {
                    let base = self.ptr();
                    let len = self.arg(A::Len);
                    self.scratch.poke64(at + 16 * i, base as u64);
                    self.scratch.poke64(at + 16 * i + 8, len as u64);
                }
                self.scratch.addr + at
            }
            A::Ts => {
                if r.chance(4) {
                    self.ptr()
                } else {
                    self.scratch.addr
                }
            }
            A::Sig => choose(
                &[
                    0,
                    1,
                    9,
                    10,
                    19,
                    64,
                    65,
                    99,
                    usize::MAX,
                    r.below(70) as usize,
                ],
                r,
            ),
            A::Pid => choose(
                &[
                    0,
                    1,
                    usize::MAX,
                    sys::getpid() as usize,
                    i32::MIN as usize,
                    0x3fff_fff0,
                    r.below(16) as usize,
                ],
                r,
            ),
        }
    }

    /// A pointer for the kernel to read or write.
    fn ptr(&mut self) -> usize {
        let r = &mut self.rng;
        match r.below(12) {
            0 => 0,
            1 => K,
            2 => NC,
            3 => self.gone,
            4 => self.ro,
            5 => self.straddle,
            6 => usize::MAX,
            7 => self.arena + r.below(ARENA as u64) as usize,
            _ => self.scratch.addr + r.below(SCRATCH as u64 - 512) as usize,
        }
    }

    /// An address for a memory call: mostly inside the arena.
    fn addr(&mut self) -> usize {
        let r = &mut self.rng;
        let in_arena = self.arena + (r.below(ARENA as u64) as usize & !(PAGE - 1));
        match r.below(10) {
            0 => 0,
            1 => K,
            2 => in_arena + 1 + r.below(PAGE as u64 - 1) as usize,
            3 => r.next() as usize & 0x7fff_ffff_f000,
            4 => self.gone,
            5 => usize::MAX & !(PAGE - 1),
            _ => in_arena,
        }
    }
}
