//! System calls and process behaviour: start-up ABI, errno rows for bad
//! arguments, faults that kill only the child, brk, TLS and FP/SIMD state,
//! pipes, descriptors and directories, signals to self.

use super::*;

// ------------------------------------------------------------------ tests

pub(crate) fn startup_stack_abi() -> TestResult {
    let pagesz = mthp_user::args().auxv(mthp_user::AT_PAGESZ);
    ensure!(pagesz == Some(4096), "AT_PAGESZ = {pagesz:?}");
    let entry = mthp_user::args().auxv(mthp_user::AT_ENTRY).unwrap_or(0);
    ensure!(
        entry == _start_addr(),
        "AT_ENTRY {entry:#x} != _start {:#x}",
        _start_addr()
    );
    let phnum = mthp_user::args().auxv(mthp_user::AT_PHNUM).unwrap_or(0);
    let phent = mthp_user::args().auxv(mthp_user::AT_PHENT).unwrap_or(0);
    let phdr = mthp_user::args().auxv(mthp_user::AT_PHDR).unwrap_or(0);
    ensure!(
        phent == 56 && phnum >= 1 && phdr != 0,
        "AT_PHDR/PHENT/PHNUM = {phdr:#x}/{phent}/{phnum}"
    );
    let ph = Mem {
        addr: phdr,
        len: phent * phnum,
    };
    let mut loads = 0;
    for i in 0..phnum {
        let ty = ph.peek64(i * phent) as u32;
        if ty == 1 {
            loads += 1;
        }
    }
    ensure!(
        loads >= 1,
        "no PT_LOAD among {phnum} program headers at {phdr:#x}"
    );
    let rnd = mthp_user::args().auxv(mthp_user::AT_RANDOM).unwrap_or(0);
    ensure!(rnd != 0, "no AT_RANDOM");
    let r = Mem { addr: rnd, len: 16 };
    ensure!(
        r.peek64(0) != 0 || r.peek64(8) != 0,
        "AT_RANDOM bytes are all zero"
    );
    let argc = mthp_user::args().argc();
    ensure!(argc >= 1, "argc = {argc}");
    let a0 = mthp_user::args().arg(0).unwrap_or(b"");
    ensure!(
        a0.ends_with(b"mthp-tests"),
        "argv[0] = {:?}",
        core::str::from_utf8(a0)
    );
    // The stack is 16-byte aligned at entry (checked by _start's caller
    // contract) and grows down: a big local array must work.
    let big = [7u8; 96 << 10];
    ensure!(core::hint::black_box(&big)[95 << 10] == 7, "stack array");
    Ok(Outcome::Pass)
}

pub(crate) fn _start_addr() -> usize {
    unsafe extern "C" {
        fn _start();
    }
    _start as *const () as usize
}

pub(crate) fn basic_syscalls() -> TestResult {
    let pid = sys::getpid();
    ensure!(pid > 0, "getpid = {pid}");
    let tid = sys::gettid();
    ensure!(tid == pid, "gettid {tid} != getpid {pid}");
    ensure!(sys::sched_yield() == 0, "sched_yield");
    let mut u = sys::Utsname {
        fields: [[0; 65]; 6],
    };
    ensure!(sys::uname(&mut u) == 0, "uname");
    ensure!(u.fields[0][0] != 0, "empty sysname");
    let machine = &u.fields[4];
    let want: &[u8] = if cfg!(target_arch = "x86_64") {
        b"x86_64\0"
    } else {
        b"aarch64\0"
    };
    ensure!(
        machine.starts_with(want),
        "uname machine is not {:?}",
        core::str::from_utf8(want)
    );
    let mut t0 = sys::Timespec::default();
    let mut t1 = sys::Timespec::default();
    ensure!(
        sys::clock_gettime(sys::CLOCK_MONOTONIC, &mut t0) == 0,
        "clock_gettime"
    );
    let r = sys::nanosleep(&sys::Timespec {
        sec: 0,
        nsec: 2_000_000,
    });
    ensure!(r == 0, "nanosleep = {r}");
    sys::clock_gettime(sys::CLOCK_MONOTONIC, &mut t1);
    let ns = (t1.sec - t0.sec) * 1_000_000_000 + (t1.nsec - t0.nsec);
    ensure!(ns >= 2_000_000, "nanosleep(2 ms) took {ns} ns");
    let mut a = [0u8; 32];
    ensure!(sys::getrandom(&mut a) == 32, "getrandom");
    ensure!(a.iter().any(|&b| b != 0), "getrandom gave zeros");
    Ok(Outcome::Pass)
}

pub(crate) fn mprotect_readonly_kills_writer() -> TestResult {
    let m = map_aligned(SZ_64K, SZ_64K)?;
    fill(&m, 5);
    let r = sys::mprotect(m.addr, m.len, sys::PROT_READ);
    ensure!(r == 0, "mprotect = {r}");
    ensure!(m.peek64(512) == pattern(512, 5), "read after mprotect");
    let addr = m.addr;
    let st = in_child(|| {
        Mem { addr, len: 8 }.poke(0, 1);
        0
    })?;
    unmap(&m);
    ensure!(
        wifsignaled(st) && wtermsig(st) == sys::SIGSEGV,
        "write to read-only: status {st:#x}"
    );
    Ok(Outcome::Pass)
}

pub(crate) fn stray_access_kills_only_child() -> TestResult {
    let st = in_child(|| {
        Mem { addr: 0, len: 8 }.poke64(0, 0xdead);
        0
    })?;
    ensure!(
        wifsignaled(st),
        "child was not killed by a signal: status {st:#x}"
    );
    ensure!(
        wtermsig(st) == sys::SIGSEGV,
        "child killed by signal {}, expected SIGSEGV",
        wtermsig(st)
    );
    // And a jump to an unmapped address.
    let st = in_child(|| {
        // SAFETY: deliberately calls an unmapped address to fault.
        let f: extern "C" fn() -> i32 = unsafe { core::mem::transmute(0x10usize) };
        f()
    })?;
    ensure!(
        wifsignaled(st) && wtermsig(st) == sys::SIGSEGV,
        "exec fault: status {st:#x}"
    );
    Ok(Outcome::Pass)
}

pub(crate) fn brk_grows_heap() -> TestResult {
    let cur = sys::brk(0);
    ensure!(cur > 0, "brk(0) = {cur}");
    let want = cur as usize + 3 * SZ_64K;
    let r = sys::brk(want);
    ensure!(r as usize == want, "brk({want:#x}) = {r:#x}");
    let heap = Mem {
        addr: cur as usize,
        len: 3 * SZ_64K,
    };
    fill(&heap, 1);
    ensure!(verify(&heap, 0, heap.len, 1).is_none(), "heap data");
    let r = sys::brk(cur as usize);
    ensure!(r == cur, "brk shrink = {r:#x}");
    Ok(Outcome::Pass)
}

/// What the user TLS register points at, read through it: the word at
/// FS:0 on x86 (`arch_prctl(ARCH_GET_FS)` would only report the kernel's
/// copy), TPIDR_EL0 itself on arm64.
pub(crate) fn tls_probe() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let v: usize;
        // SAFETY: the test points FS at one of its own live words first.
        unsafe {
            core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) v, options(readonly, nostack))
        };
        v
    }
    #[cfg(target_arch = "aarch64")]
    {
        let v: usize;
        // SAFETY: EL0 may read TPIDR_EL0.
        unsafe { core::arch::asm!("mrs {}, tpidr_el0", out(reg) v, options(nomem, nostack)) };
        v
    }
}

/// Point the TLS register at `slot` (x86: `arch_prctl(ARCH_SET_FS)`, as
/// Linux; arm64: TPIDR_EL0 holds the word's value itself).  Nothing else in
/// these programs uses the register.
pub(crate) fn set_tls(slot: &usize) {
    #[cfg(target_arch = "x86_64")]
    {
        sys::syscall(158, &[0x1002, slot as *const usize as usize]);
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: EL0 may write TPIDR_EL0.
        unsafe { core::arch::asm!("msr tpidr_el0, {}", in(reg) *slot, options(nomem, nostack)) };
    }
}

/// Each process keeps its own TLS register across context switches: a
/// child inherits the parent's at fork, then points it elsewhere, and both
/// yield to each other many times, reading through the register each time.
pub(crate) fn tls_register_per_process() -> TestResult {
    // Both words exist in both processes (fork copies them); each process
    // points its register at a different one.
    let a: usize = 0x7f00_1111_0000;
    let b: usize = 0x7f00_2222_0000;
    let (a, b) = (core::hint::black_box(a), core::hint::black_box(b));
    set_tls(&a);
    ensure!(
        tls_probe() == a,
        "TLS probe reads {:#x}, expected {a:#x}",
        tls_probe()
    );
    let pid = sys::fork();
    if pid == 0 {
        if tls_probe() != a {
            sys::exit(2);
        }
        set_tls(&b);
        for _ in 0..200 {
            sys::sched_yield();
            if tls_probe() != b {
                sys::exit(3);
            }
        }
        sys::exit(0);
    }
    ensure!(pid > 0, "fork: errno {}", -pid);
    let mut bad = 0;
    for _ in 0..200 {
        sys::sched_yield();
        if tls_probe() != a {
            bad += 1;
        }
    }
    let mut st = 0;
    sys::wait4(pid, &mut st, 0);
    let now = tls_probe();
    ensure!(
        bad == 0,
        "parent's TLS register changed in {bad} of 200 yields (reads {now:#x})"
    );
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "child status {st:#x} (2: not inherited at fork, 3: changed across a yield)"
    );
    Ok(Outcome::Pass)
}

/// FP/SIMD registers are per process, as on Linux: a forked child starts
/// with its parent's vector registers and rounding mode; afterwards two
/// processes that load different values and yield to each other 200 times
/// each get their own back (x86: the kernel saves xmm0-15 and MXCSR at
/// every switch; arm64: q0-q31 and FPCR travel in the exception frames).
/// SSE must also be enabled in user mode at all (x86: else #UD, SIGILL).
pub(crate) fn fpu_state_per_process() -> TestResult {
    use mthp_user::fpregs::{Regs, run};
    let mine = Regs::pattern(0x1111, 1);
    let mut out = Regs::zeroed();
    let pid = run(&mine, &mut out, 0, 0, true);
    if pid == 0 {
        sys::exit(if out == mine { 0 } else { 1 });
    }
    ensure!(pid > 0, "fork failed: {pid}");
    ensure!(out == mine, "parent's registers changed across fork");
    let mut status = 0;
    ensure!(sys::wait4(pid, &mut status, 0) == pid, "wait4");
    ensure!(
        wifexited(status) && wexitstatus(status) == 0,
        "the forked child did not start with its parent's FP/SIMD registers (status {status:#x})"
    );
    // Both run at once, yielding to each other.
    let pid = sys::fork();
    if pid == 0 {
        let theirs = Regs::pattern(0x2222, 2);
        let mut out = Regs::zeroed();
        run(&theirs, &mut out, 0, 200, false);
        sys::exit(if out == theirs { 0 } else { 2 });
    }
    ensure!(pid > 0, "fork failed: {pid}");
    let mut out = Regs::zeroed();
    run(&mine, &mut out, 0, 200, false);
    let mut st = 0;
    ensure!(sys::wait4(pid, &mut st, 0) == pid, "wait4");
    ensure!(
        out == mine,
        "parent's FP/SIMD registers changed while another process ran"
    );
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "the child's FP/SIMD registers changed while the parent ran (status {st:#x})"
    );
    Ok(Outcome::Pass)
}

pub(crate) fn now_ns() -> u64 {
    let mut t = sys::Timespec::default();
    sys::clock_gettime(1, &mut t); // CLOCK_MONOTONIC
    t.sec as u64 * 1_000_000_000 + t.nsec as u64
}

/// How long a spin round lasts (ns) and how long each process spins.
pub(crate) const ROUND_NS: u64 = 1_000_000;
pub(crate) const SPIN_FOR_NS: u64 = 400_000_000;

/// One process's half of [`fpu_state_survives_preemption`]: loads its
/// pattern and spins in rounds of about [`ROUND_NS`] (registers checked
/// after each) for [`SPIN_FOR_NS`].  Returns (rounds that came back with
/// other registers, rounds that took over twice the fastest plus 1 ms,
/// i.e. the process lost the CPU inside the register-only loop).
pub(crate) fn spin_rounds(r: &mthp_user::fpregs::Regs) -> (u32, u32) {
    use mthp_user::fpregs::{Regs, run};
    // Calibrate: double the spin count until a round takes ROUND_NS.
    let mut spins = 1usize << 12;
    let mut out = Regs::zeroed();
    loop {
        let t0 = now_ns();
        run(r, &mut out, spins, 0, false);
        if now_ns() - t0 >= ROUND_NS || spins >= 1 << 30 {
            break;
        }
        spins *= 2;
    }
    let (mut bad, mut stretched) = (0, 0);
    let mut fastest = u64::MAX;
    let start = now_ns();
    let mut times = [0u64; 4096];
    let mut n = 0;
    while now_ns() - start < SPIN_FOR_NS && n < times.len() {
        let mut out = Regs::zeroed();
        let t0 = now_ns();
        run(r, &mut out, spins, 0, false);
        times[n] = now_ns() - t0;
        fastest = fastest.min(times[n]);
        n += 1;
        if out != *r {
            bad += 1;
        }
    }
    for &t in &times[..n] {
        if t > 2 * fastest + 1_000_000 {
            stretched += 1;
        }
    }
    (bad, stretched)
}

/// FP/SIMD registers survive involuntary context switches: two processes
/// pinned to one CPU each load their own xmm0-15 + MXCSR (x86) / v0-v31 +
/// FPCR (arm64) and spin without system calls for 0.4 s, so only the
/// timer tick takes the CPU from one and gives it to the other (the
/// kernel's slice is 5 ms).  Each checks its registers after every ~1 ms
/// round, and must see rounds that took over twice the fastest plus 1 ms
/// (it was preempted inside the loop; else the test proved nothing and
/// fails).  `fpu_state_per_process` covers the voluntary switches
/// (sched_yield, fork).  Shown to fail (x86 TCG) with the scheduler's
/// `fxsave64`/`fxrstor64` at switches removed: "parent's FP/SIMD
/// registers changed in 28 rounds while preempted".
pub(crate) fn fpu_state_survives_preemption() -> TestResult {
    use mthp_user::fpregs::Regs;
    let mut old = [0u64; 16];
    let n = sys::syscall(
        sys::nr::SCHED_GETAFFINITY,
        &[0, 128, old.as_mut_ptr() as usize],
    );
    ensure!(n > 0, "sched_getaffinity: {n}");
    let cpu = old.iter().enumerate().find(|(_, w)| **w != 0);
    let Some((i, w)) = cpu else {
        fail!("sched_getaffinity gave an empty mask");
    };
    let mut one = [0u64; 16];
    one[i] = 1 << w.trailing_zeros();
    let r = sys::syscall(sys::nr::SCHED_SETAFFINITY, &[0, 128, one.as_ptr() as usize]);
    ensure!(r == 0, "sched_setaffinity to one CPU: {r}");
    let pid = sys::fork();
    if pid == 0 {
        let (bad, stretched) = spin_rounds(&Regs::pattern(0x3333, 2));
        sys::exit(if bad > 0 {
            2
        } else if stretched == 0 {
            3
        } else {
            0
        });
    }
    let (bad, stretched) = if pid > 0 {
        spin_rounds(&Regs::pattern(0x4444, 1))
    } else {
        (0, 0)
    };
    let mut st = 0;
    let waited = pid > 0 && sys::wait4(pid, &mut st, 0) == pid;
    sys::syscall(sys::nr::SCHED_SETAFFINITY, &[0, 128, old.as_ptr() as usize]);
    ensure!(pid > 0, "fork failed: {pid}");
    ensure!(waited, "wait4");
    ensure!(
        bad == 0,
        "parent's FP/SIMD registers changed in {bad} rounds while preempted"
    );
    ensure!(
        wifexited(st) && wexitstatus(st) != 2,
        "the child's FP/SIMD registers changed while preempted (status {st:#x})"
    );
    ensure!(
        stretched > 0 && wexitstatus(st) == 0,
        "no preemption inside the spin loop (parent: {stretched} long rounds, child status {st:#x}): nothing was tested"
    );
    Ok(Outcome::Pass)
}

pub(crate) fn pipe2(flags: usize) -> Result<(i32, i32), mthp_user::Msg> {
    let mut fds = [0i32; 2];
    let r = sys::syscall(sys::nr::PIPE2, &[fds.as_mut_ptr() as usize, flags]);
    ensure!(r == 0, "pipe2: {r}");
    Ok((fds[0], fds[1]))
}

/// Pipes as Linux has them: a child's writes reach the parent, whose read
/// blocks until they come (the child sleeps first); end of file once every
/// write end is closed (the parent's own copy included); O_NONBLOCK reads
/// of an empty pipe fail with EAGAIN; writing with no reader fails with
/// EPIPE when SIGPIPE is ignored and kills the writer with SIGPIPE by
/// default; lseek on a pipe is ESPIPE.
pub(crate) fn pipe_between_processes() -> TestResult {
    let (r, w) = pipe2(0)?;
    let pid = sys::fork();
    if pid == 0 {
        sys::close(r);
        sys::nanosleep(&sys::Timespec {
            sec: 0,
            nsec: 20_000_000,
        });
        let msg = b"hello through a pipe";
        let ok = sys::write(w, msg) == msg.len() as isize;
        sys::exit(if ok { 0 } else { 1 });
    }
    ensure!(pid > 0, "fork: {pid}");
    sys::close(w);
    let mut buf = [0u8; 64];
    let n = sys::read(r, &mut buf);
    ensure!(
        &buf[..n.max(0) as usize] == b"hello through a pipe",
        "read {n} bytes: {:?}",
        core::str::from_utf8(&buf[..n.max(0) as usize])
    );
    let n = sys::read(r, &mut buf);
    ensure!(
        n == 0,
        "read after the writer exited: {n}, expected 0 (EOF)"
    );
    let mut st = 0;
    ensure!(
        sys::wait4(pid, &mut st, 0) == pid && st == 0,
        "writer status {st:#x}"
    );
    let l = sys::syscall(sys::nr::LSEEK, &[r as usize, 0, 0]);
    ensure!(l == -(sys::ESPIPE as isize), "lseek on a pipe: {l}");
    sys::close(r);

    let (r, w) = pipe2(0o4000)?; // O_NONBLOCK
    let n = sys::read(r, &mut buf);
    ensure!(
        n == -(sys::EAGAIN as isize),
        "O_NONBLOCK read of an empty pipe: {n}"
    );
    sys::close(r);
    // No reader: SIGPIPE ignored -> EPIPE.
    let ign = [1usize, 0, 0, 0]; // SIG_IGN
    let mut old = [0usize; 4];
    sys::syscall(
        sys::nr::RT_SIGACTION,
        &[13, ign.as_ptr() as usize, old.as_mut_ptr() as usize, 8],
    );
    let n = sys::write(w, b"x");
    sys::syscall(sys::nr::RT_SIGACTION, &[13, old.as_ptr() as usize, 0, 8]);
    ensure!(
        n == -(sys::EPIPE as isize),
        "write with no reader, SIGPIPE ignored: {n}"
    );
    // By default the writer dies of SIGPIPE.
    let st = in_child(|| {
        sys::write(w, b"x");
        3
    })?;
    sys::close(w);
    ensure!(
        wifsignaled(st) && wtermsig(st) == 13,
        "a writer with no reader: status {st:#x}, expected killed by SIGPIPE"
    );
    Ok(Outcome::Pass)
}

/// `dup`/`dup3`/`fcntl`, `getdents64`, `getcwd`/`chdir`, `readlinkat`,
/// `faccessat`, the id calls and `sysinfo`, checked as Linux answers them.
pub(crate) fn descriptors_and_directories() -> TestResult {
    use sys::nr;
    let sc = |n: usize, a: &[usize]| sys::syscall(n, a);
    // Root, as everything here; on Linux the checks assume root too.
    let root = sc(nr::GETUID, &[]) == 0 && sc(nr::GETEUID, &[]) == 0;
    if !root && !on_mthp() {
        return skip(mthp_user::Msg::new(format_args!(
            "the checks assume uid 0 (not root)"
        )));
    }
    ensure!(root, "not uid 0");
    // dup/dup3/fcntl on /proc/meminfo: shared offset, close-on-exec.
    let fd = sys::open(b"/proc/meminfo\0", sys::O_RDONLY);
    ensure!(fd >= 0, "open: {fd}");
    let fd = fd as usize;
    let d = sc(nr::DUP, &[fd]);
    ensure!(d > fd as isize, "dup: {d}");
    let mut a = [0u8; 8];
    sys::read(fd as i32, &mut a);
    let mut b = [0u8; 8];
    sys::read(d as i32, &mut b);
    ensure!(a[..] != b[..], "dup'ed descriptors do not share the offset");
    const O_CLOEXEC: usize = 0o2000000;
    let d3 = sc(nr::DUP3, &[fd, 40, O_CLOEXEC]);
    ensure!(d3 == 40, "dup3 to 40: {d3}");
    ensure!(
        sc(nr::FCNTL, &[40, 1, 0]) == 1,
        "F_GETFD after dup3(O_CLOEXEC)"
    );
    ensure!(
        sc(nr::FCNTL, &[40, 2, 0]) == 0 && sc(nr::FCNTL, &[40, 1, 0]) == 0,
        "F_SETFD 0"
    );
    ensure!(
        sc(nr::DUP3, &[fd, fd, 0]) == -(sys::EINVAL as isize),
        "dup3 to itself"
    );
    ensure!(
        sc(nr::DUP3, &[fd, 41, 1]) == -(sys::EINVAL as isize),
        "dup3 bad flags"
    );
    ensure!(
        sc(nr::FCNTL, &[fd, 3, 0]) & 3 == 0,
        "F_GETFL of a read-only file"
    );
    let n = sc(nr::FCNTL, &[fd, 0, 50]);
    ensure!(n == 50, "F_DUPFD from 50: {n}");
    ensure!(
        sc(nr::FCNTL, &[fd, 0x7fff, 0]) == -(sys::EINVAL as isize),
        "unknown fcntl"
    );
    ensure!(
        sc(nr::FCNTL, &[99, 1, 0]) == -(sys::EBADF as isize),
        "fcntl on fd 99"
    );
    for f in [fd as i32, d as i32, 40, 50] {
        sys::close(f);
    }
    // getdents64 of the THP sysfs directory.
    let dir = sys::open(path!("{THP}").c(), sys::O_RDONLY | sys::O_DIRECTORY);
    ensure!(dir >= 0, "open {THP}: {dir}");
    let mut buf = [0u8; 4096];
    let mut names_seen = 0;
    let (mut has_enabled, mut has_64k, mut has_khugepaged) = (false, false, false);
    loop {
        let n = sc(
            nr::GETDENTS64,
            &[dir as usize, buf.as_mut_ptr() as usize, buf.len()],
        );
        ensure!(n >= 0, "getdents64: {n}");
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize {
            let reclen = u16::from_le_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let dtype = buf[off + 18];
            let name = &buf[off + 19..off + reclen];
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            has_enabled |= name == b"enabled" && dtype == 8;
            has_64k |= name == b"hugepages-64kB" && dtype == 4;
            has_khugepaged |= name == b"khugepaged" && dtype == 4;
            names_seen += 1;
            off += reclen;
        }
    }
    let small = sc(
        nr::GETDENTS64,
        &[dir as usize, buf.as_mut_ptr() as usize, 8],
    );
    sys::close(dir as i32);
    ensure!(
        has_enabled && has_64k && has_khugepaged,
        "{THP} listing ({names_seen} names) lacks enabled/hugepages-64kB/khugepaged"
    );
    ensure!(
        small == 0 || small == -(sys::EINVAL as isize),
        "getdents64 at the end: {small}"
    );
    let f = sys::open(b"/proc/meminfo\0", sys::O_RDONLY);
    let nd = sc(
        nr::GETDENTS64,
        &[f as usize, buf.as_mut_ptr() as usize, buf.len()],
    );
    sys::close(f as i32);
    ensure!(nd == -(sys::ENOTDIR as isize), "getdents64 of a file: {nd}");
    // getcwd / chdir.
    let mut cwd = [0u8; 256];
    let n = sc(nr::GETCWD, &[cwd.as_mut_ptr() as usize, cwd.len()]);
    ensure!(n > 0, "getcwd: {n}");
    let saved = cwd;
    ensure!(
        sc(nr::CHDIR, &[path!("{THP}").c().as_ptr() as usize]) == 0,
        "chdir {THP}"
    );
    let n = sc(nr::GETCWD, &[cwd.as_mut_ptr() as usize, cwd.len()]);
    ensure!(
        n as usize == THP.len() + 1 && &cwd[..THP.len()] == THP.as_bytes(),
        "getcwd after chdir: {n}"
    );
    let rel = sys::open(b"enabled\0", sys::O_RDONLY);
    ensure!(rel >= 0, "open of a relative path after chdir: {rel}");
    sys::close(rel as i32);
    ensure!(
        sc(nr::GETCWD, &[cwd.as_mut_ptr() as usize, 3]) == -(sys::ERANGE as isize),
        "getcwd small"
    );
    ensure!(
        sc(nr::CHDIR, &[c"enabled".as_ptr() as usize]) == -(sys::ENOTDIR as isize),
        "chdir to a file"
    );
    ensure!(
        sc(nr::CHDIR, &[c"/nonexistent".as_ptr() as usize]) == -(sys::ENOENT as isize),
        "chdir to nothing"
    );
    ensure!(sc(nr::CHDIR, &[saved.as_ptr() as usize]) == 0, "chdir back");
    // readlinkat /proc/self/exe; faccessat.
    let mut l = [0u8; 256];
    let n = sc(
        nr::READLINKAT,
        &[
            (-100isize) as usize,
            c"/proc/self/exe".as_ptr() as usize,
            l.as_mut_ptr() as usize,
            l.len(),
        ],
    );
    ensure!(n > 0 && l[0] == b'/', "readlink /proc/self/exe: {n}");
    let n = sc(
        nr::READLINKAT,
        &[
            (-100isize) as usize,
            c"/proc/meminfo".as_ptr() as usize,
            l.as_mut_ptr() as usize,
            l.len(),
        ],
    );
    ensure!(n == -(sys::EINVAL as isize), "readlink of a file: {n}");
    let at = (-100isize) as usize;
    ensure!(
        sc(nr::FACCESSAT, &[at, c"/proc/meminfo".as_ptr() as usize, 4]) == 0,
        "access R_OK"
    );
    ensure!(
        sc(nr::FACCESSAT, &[at, c"/nonexistent".as_ptr() as usize, 0]) == -(sys::ENOENT as isize),
        "access missing"
    );
    ensure!(
        sc(nr::FACCESSAT, &[at, c"/proc/meminfo".as_ptr() as usize, 8]) == -(sys::EINVAL as isize),
        "access bad mode"
    );
    // umask, sysinfo, sched_getaffinity, process groups.
    let old = sc(nr::UMASK, &[0o077]);
    ensure!(
        sc(nr::UMASK, &[old as usize]) == 0o077,
        "umask did not stick"
    );
    let mut si = [0u64; 14];
    ensure!(sc(nr::SYSINFO, &[si.as_mut_ptr() as usize]) == 0, "sysinfo");
    ensure!(
        si[4] > 0 && si[5] > 0 && si[5] <= si[4],
        "sysinfo RAM {} free {}",
        si[4],
        si[5]
    );
    let mut mask = [0u64; 16];
    let n = sc(nr::SCHED_GETAFFINITY, &[0, 128, mask.as_mut_ptr() as usize]);
    ensure!(
        n > 0 && mask[0] & 1 == 1,
        "sched_getaffinity: {n} {:#x}",
        mask[0]
    );
    ensure!(
        sc(nr::SCHED_GETAFFINITY, &[0, 3, mask.as_mut_ptr() as usize]) == -(sys::EINVAL as isize),
        "affinity len 3"
    );
    let st = in_child(|| {
        let me = sys::getpid() as isize;
        if sc(nr::GETPGID, &[0]) == me {
            return 1; // a fork is in its parent's group
        }
        if sc(nr::SETSID, &[]) != me || sc(nr::GETSID, &[0]) != me || sc(nr::GETPGID, &[0]) != me {
            return 2;
        }
        if sc(nr::SETSID, &[]) != -(sys::EPERM as isize) {
            return 3;
        }
        0
    })?;
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "process groups: step {} failed",
        wexitstatus(st)
    );
    Ok(Outcome::Pass)
}

/// Signals a process sends itself, as `raise` and `abort` do: SIGTERM
/// (kill) and SIGABRT (tgkill) end it with that signal, SIGCHLD is ignored
/// by default, SIG_IGN ignores SIGTERM, and a blocked signal does nothing
/// until the process exits.
pub(crate) fn signals_to_self() -> TestResult {
    use sys::nr;
    let sc = |n: usize, a: &[usize]| sys::syscall(n, a);
    let me = || sys::getpid() as usize;
    let st = in_child(|| {
        sc(nr::KILL, &[me(), 15]);
        1
    })?;
    ensure!(
        wifsignaled(st) && wtermsig(st) == 15,
        "kill(self, SIGTERM): status {st:#x}"
    );
    let st = in_child(|| {
        sc(nr::TGKILL, &[me(), me(), 6]);
        1
    })?;
    ensure!(
        wifsignaled(st) && wtermsig(st) == 6,
        "tgkill(self, SIGABRT): status {st:#x}"
    );
    let st = in_child(|| {
        if sc(nr::KILL, &[me(), 17]) != 0 {
            return 2;
        }
        let ign = [1usize, 0, 0, 0];
        sc(nr::RT_SIGACTION, &[15, ign.as_ptr() as usize, 0, 8]);
        if sc(nr::KILL, &[me(), 15]) != 0 {
            return 3;
        }
        let usr1 = 1usize << 9;
        sc(
            nr::RT_SIGPROCMASK,
            &[0, &usr1 as *const usize as usize, 0, 8],
        );
        if sc(nr::KILL, &[me(), 10]) != 0 {
            return 4;
        }
        0
    })?;
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "ignored/blocked signals ended the process or failed (status {st:#x})"
    );
    Ok(Outcome::Pass)
}
