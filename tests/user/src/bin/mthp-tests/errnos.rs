//! `bad_syscall_args`: a table of about 150 rows over every implemented
//! call, each bad argument with the errno Linux returns (the same binary
//! passes on Linux).

use super::*;

/// What a row of the bad-input table expects.
#[derive(Clone, Copy)]
pub(crate) enum Want {
    /// `-errno`.
    Err(i32),
    /// Exactly this value.
    Eq(isize),
    /// Any non-negative value.
    Ok,
}

/// Checks rows and remembers the failures (first few reported).
pub(crate) struct Table {
    failed: usize,
    msg: Option<mthp_user::Msg>,
}

impl Table {
    fn row(&mut self, what: &str, r: isize, want: Want) {
        let ok = match want {
            Want::Err(e) => r == -(e as isize),
            Want::Eq(v) => r == v,
            Want::Ok => r >= 0,
        };
        if ok {
            return;
        }
        self.failed += 1;
        let w = match want {
            Want::Err(e) => mthp_user::Msg::new(format_args!("-{e}")),
            Want::Eq(v) => mthp_user::Msg::new(format_args!("{v}")),
            Want::Ok => mthp_user::Msg::new(format_args!(">= 0")),
        };
        println!("  bad_syscall_args: {what}: got {r}, expected {w}");
        if self.msg.is_none() {
            self.msg = Some(mthp_user::Msg::new(format_args!(
                "{what}: got {r}, expected {w}"
            )));
        }
    }
}

/// Every implemented system call with invalid pointers (NULL, kernel,
/// unmapped, read-only, straddling the end of a mapping), lengths (0,
/// huge, overflowing), unknown flags, overlapping ranges and extreme
/// values, against the errno Linux returns (the same binary passes on a
/// Linux host; rows that would change the host or depend on privileges run
/// only on this kernel).  Nothing here changes state a later test sees.
pub(crate) fn bad_syscall_args() -> TestResult {
    use Want::{Eq, Err as E, Ok as Good};
    use sys::nr;
    let rw = sys::PROT_READ | sys::PROT_WRITE;
    let anon = sys::MAP_PRIVATE | sys::MAP_ANONYMOUS;
    let sc = |n: usize, a: &[usize]| sys::syscall(n, a);
    // A kernel address, a non-canonical one (x86) / one above user space.
    const K: usize = 0xffff_8000_0000_0000;
    const NC: usize = 0x8000_0000_0000_0000;
    const BIG: usize = 1 << 62;
    const MAX: usize = usize::MAX;
    // Fixtures: a read-write buffer, read-only and PROT_NONE pages, an
    // address that was just unmapped, and [page, hole, page].
    let buf = map_aligned(2 * PAGE, PAGE)?;
    let b = buf.addr;
    let ro = check(sys::mmap(0, PAGE, sys::PROT_READ, anon, -1, 0)).unwrap_or(0);
    let none = check(sys::mmap(0, PAGE, sys::PROT_NONE, anon, -1, 0)).unwrap_or(0);
    let holed = check(sys::mmap(0, 3 * PAGE, rw, anon, -1, 0)).unwrap_or(0);
    sys::munmap(holed + PAGE, PAGE);
    // Made last, so no fixture mapping reuses its address (rows that map
    // something unmap it again at once).
    let gone = check(sys::mmap(0, PAGE, rw, anon, -1, 0)).unwrap_or(0);
    sys::munmap(gone, PAGE);
    ensure!(
        ro != 0 && none != 0 && gone != 0 && holed != 0,
        "fixture mmap failed"
    );
    // 8 bytes before the hole: a struct there straddles into it.
    let straddle = holed + PAGE - 8;
    let mi = sys::open(b"/proc/meminfo\0", sys::O_RDONLY);
    let nullw = sys::open(b"/dev/null\0", sys::O_WRONLY);
    let nullr = sys::open(b"/dev/null\0", sys::O_RDONLY);
    let dir = sys::open(b"/\0", sys::O_RDONLY);
    ensure!(
        mi >= 0 && nullw >= 0 && nullr >= 0 && dir >= 0,
        "open fixtures: {mi} {nullw} {nullr} {dir}"
    );
    let (mi, nullw, nullr, dir) = (mi as usize, nullw as usize, nullr as usize, dir as usize);
    let badfd = 0xffff_ffffusize; // -1 as unsigned int
    let mut t = Table {
        failed: 0,
        msg: None,
    };

    // read / write.
    t.row("read fd -1", sc(nr::READ, &[badfd, b, 16]), E(sys::EBADF));
    t.row(
        "read fd 99999",
        sc(nr::READ, &[99999, b, 16]),
        E(sys::EBADF),
    );
    t.row("read NULL", sc(nr::READ, &[mi, 0, 16]), E(sys::EFAULT));
    t.row("read kernel", sc(nr::READ, &[mi, K, 16]), E(sys::EFAULT));
    t.row(
        "read unmapped",
        sc(nr::READ, &[mi, gone, 16]),
        E(sys::EFAULT),
    );
    t.row(
        "read into read-only",
        sc(nr::READ, &[mi, ro, 16]),
        E(sys::EFAULT),
    );
    t.row("read len 0", sc(nr::READ, &[mi, b, 0]), Eq(0));
    t.row("read len 2^62", sc(nr::READ, &[mi, b, BIG]), E(sys::EFAULT));
    t.row("read len max", sc(nr::READ, &[mi, b, MAX]), E(sys::EFAULT));
    t.row(
        "read write-only fd",
        sc(nr::READ, &[nullw, b, 16]),
        E(sys::EBADF),
    );
    t.row(
        "read directory",
        sc(nr::READ, &[dir, b, 16]),
        E(sys::EISDIR),
    );
    t.row(
        "read fd upper bits ignored",
        sc(nr::READ, &[mi | 1 << 32, b, 16]),
        Good,
    );
    t.row("write fd -1", sc(nr::WRITE, &[badfd, b, 1]), E(sys::EBADF));
    t.row("write NULL", sc(nr::WRITE, &[1, 0, 16]), E(sys::EFAULT));
    t.row("write kernel", sc(nr::WRITE, &[1, K, 16]), E(sys::EFAULT));
    t.row(
        "write non-canonical",
        sc(nr::WRITE, &[1, NC, 16]),
        E(sys::EFAULT),
    );
    t.row(
        "write unmapped",
        sc(nr::WRITE, &[1, gone, 16]),
        E(sys::EFAULT),
    );
    t.row(
        "write PROT_NONE",
        sc(nr::WRITE, &[1, none, 16]),
        E(sys::EFAULT),
    );
    t.row(
        "write len 2^62",
        sc(nr::WRITE, &[1, b, BIG]),
        E(sys::EFAULT),
    );
    t.row(
        "write read-only fd",
        sc(nr::WRITE, &[mi, b, 1]),
        E(sys::EBADF),
    );
    t.row("write NULL len 0", sc(nr::WRITE, &[1, 0, 0]), Eq(0));

    // readv / writev.
    let iov_null = [0usize, 16];
    let iov_k = [K, 16];
    let iov_neg = [b, MAX];
    let iov_ok = [b, 0];
    let v = |iov: &[usize; 2]| iov.as_ptr() as usize;
    t.row(
        "writev iov NULL",
        sc(nr::WRITEV, &[1, 0, 1]),
        E(sys::EFAULT),
    );
    t.row(
        "writev iov kernel",
        sc(nr::WRITEV, &[1, K, 1]),
        E(sys::EFAULT),
    );
    t.row(
        "writev 1025 iovecs",
        sc(nr::WRITEV, &[1, v(&iov_ok), 1025]),
        E(sys::EINVAL),
    );
    t.row(
        "writev count max",
        sc(nr::WRITEV, &[1, v(&iov_ok), MAX]),
        E(sys::EINVAL),
    );
    t.row(
        "writev fd -1",
        sc(nr::WRITEV, &[badfd, v(&iov_ok), 1]),
        E(sys::EBADF),
    );
    t.row(
        "writev base NULL",
        sc(nr::WRITEV, &[1, v(&iov_null), 1]),
        E(sys::EFAULT),
    );
    t.row(
        "writev base kernel",
        sc(nr::WRITEV, &[1, v(&iov_k), 1]),
        E(sys::EFAULT),
    );
    t.row(
        "writev negative length",
        sc(nr::WRITEV, &[1, v(&iov_neg), 1]),
        E(sys::EINVAL),
    );
    t.row("writev count 0", sc(nr::WRITEV, &[1, v(&iov_ok), 0]), Eq(0));
    t.row(
        "readv write-only fd",
        sc(nr::READV, &[nullw, v(&iov_ok), 1]),
        E(sys::EBADF),
    );

    // openat / close.
    let at = sys::AT_FDCWD as usize;
    let mut long = [b'a'; 5000];
    long[0] = b'/';
    long[4999] = 0;
    t.row(
        "openat NULL",
        sc(nr::OPENAT, &[at, 0, 0, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "openat kernel",
        sc(nr::OPENAT, &[at, K, 0, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "openat unmapped",
        sc(nr::OPENAT, &[at, gone, 0, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "openat empty",
        sc(nr::OPENAT, &[at, c"".as_ptr() as usize, 0, 0]),
        E(sys::ENOENT),
    );
    t.row(
        "openat bad dirfd, relative",
        sc(
            nr::OPENAT,
            &[-5isize as usize, c"x".as_ptr() as usize, 0, 0],
        ),
        E(sys::EBADF),
    );
    t.row(
        "openat 5000-byte path",
        sc(nr::OPENAT, &[at, long.as_ptr() as usize, 0, 0]),
        E(sys::ENAMETOOLONG),
    );
    let r = sc(
        nr::OPENAT,
        &[at, c"/proc/meminfo".as_ptr() as usize, 0x8000_0000, 0],
    );
    t.row("openat unknown flag bit ignored", r, Good);
    if r >= 0 {
        sys::close(r as i32);
    }
    t.row("close -1", sc(nr::CLOSE, &[badfd]), E(sys::EBADF));
    t.row("close 99999", sc(nr::CLOSE, &[99999]), E(sys::EBADF));

    // fstat / newfstatat / lseek / ioctl.
    let mi_path = c"/proc/meminfo".as_ptr() as usize;
    t.row("fstat fd -1", sc(nr::FSTAT, &[badfd, b]), E(sys::EBADF));
    t.row("fstat NULL", sc(nr::FSTAT, &[mi, 0]), E(sys::EFAULT));
    t.row("fstat kernel", sc(nr::FSTAT, &[mi, K]), E(sys::EFAULT));
    t.row("fstat read-only", sc(nr::FSTAT, &[mi, ro]), E(sys::EFAULT));
    t.row(
        "fstat straddling",
        sc(nr::FSTAT, &[mi, straddle]),
        E(sys::EFAULT),
    );
    t.row(
        "fstatat NULL stat",
        sc(nr::NEWFSTATAT, &[at, mi_path, 0, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "fstatat NULL path",
        sc(nr::NEWFSTATAT, &[at, 0, b, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "fstatat empty path",
        sc(nr::NEWFSTATAT, &[at, c"".as_ptr() as usize, b, 0]),
        E(sys::ENOENT),
    );
    t.row(
        "fstatat unknown flag",
        sc(nr::NEWFSTATAT, &[at, mi_path, b, 0x8000_0000]),
        E(sys::EINVAL),
    );
    t.row(
        "fstatat AT_EMPTY_PATH bad fd",
        sc(
            nr::NEWFSTATAT,
            &[-5isize as usize, c"".as_ptr() as usize, b, 0x1000],
        ),
        E(sys::EBADF),
    );
    t.row("lseek fd -1", sc(nr::LSEEK, &[badfd, 0, 0]), E(sys::EBADF));
    t.row(
        "lseek whence 99",
        sc(nr::LSEEK, &[mi, 0, 99]),
        E(sys::EINVAL),
    );
    t.row("lseek to -1", sc(nr::LSEEK, &[mi, MAX, 0]), E(sys::EINVAL));
    t.row(
        "lseek by i64::MIN",
        sc(nr::LSEEK, &[mi, i64::MIN as usize, 1]),
        E(sys::EINVAL),
    );
    t.row(
        "ioctl fd -1",
        sc(nr::IOCTL, &[badfd, 0x5401, b]),
        E(sys::EBADF),
    );
    t.row(
        "ioctl TCGETS on a file",
        sc(nr::IOCTL, &[mi, 0x5401, b]),
        E(sys::ENOTTY),
    );

    // mmap / munmap / mprotect / madvise / mremap.
    let mm =
        |a: usize, l: usize, p: usize, f: usize, fd: isize, o: usize| sys::mmap(a, l, p, f, fd, o);
    t.row("mmap len 0", mm(0, 0, rw, anon, -1, 0), E(sys::EINVAL));
    t.row(
        "mmap neither private nor shared",
        mm(0, PAGE, rw, sys::MAP_ANONYMOUS, -1, 0),
        E(sys::EINVAL),
    );
    t.row(
        "mmap fixed unaligned",
        mm(b + 1, PAGE, rw, anon | sys::MAP_FIXED, -1, 0),
        E(sys::EINVAL),
    );
    t.row("mmap len max", mm(0, MAX, rw, anon, -1, 0), E(sys::ENOMEM));
    t.row("mmap len 2^62", mm(0, BIG, rw, anon, -1, 0), E(sys::ENOMEM));
    t.row(
        "mmap offset unaligned",
        mm(0, PAGE, rw, anon, -1, 1),
        E(sys::EINVAL),
    );
    t.row(
        "mmap file fd -1",
        mm(0, PAGE, rw, sys::MAP_PRIVATE, -1, 0),
        E(sys::EBADF),
    );
    t.row(
        "mmap /dev/null",
        mm(0, PAGE, sys::PROT_READ, sys::MAP_PRIVATE, nullr as isize, 0),
        E(sys::ENODEV),
    );
    t.row(
        "mmap fixed at kernel address",
        mm(K, PAGE, rw, anon | sys::MAP_FIXED, -1, 0),
        E(sys::ENOMEM),
    );
    t.row(
        "mmap fixed-noreplace over a mapping",
        mm(b, PAGE, rw, anon | 0x10_0000, -1, 0),
        E(sys::EEXIST),
    );
    for (what, hint, fd) in [
        ("mmap kernel hint ignored", K, -1),
        ("mmap anonymous ignores fd", 0, 1234),
    ] {
        let r = mm(hint, PAGE, rw, anon, fd, 0);
        t.row(what, r, Good);
        if r >= 0 {
            sys::munmap(r as usize, PAGE);
        }
    }
    t.row("munmap unaligned", sys::munmap(b + 1, PAGE), E(sys::EINVAL));
    t.row("munmap len 0", sys::munmap(b, 0), E(sys::EINVAL));
    t.row("munmap kernel", sys::munmap(K, PAGE), E(sys::EINVAL));
    t.row("munmap len max", sys::munmap(b, MAX), E(sys::EINVAL));
    t.row(
        "munmap wrapping",
        sys::munmap(PAGE, MAX - PAGE + 1),
        E(sys::EINVAL),
    );
    t.row("munmap unmapped", sys::munmap(gone, PAGE), Eq(0));
    t.row(
        "mprotect unaligned",
        sys::mprotect(b + 1, PAGE, sys::PROT_READ),
        E(sys::EINVAL),
    );
    t.row("mprotect len 0", sys::mprotect(b, 0, 0x100), Eq(0));
    t.row(
        "mprotect unmapped",
        sys::mprotect(gone, PAGE, sys::PROT_READ),
        E(sys::ENOMEM),
    );
    t.row(
        "mprotect across a hole",
        sys::mprotect(holed, 3 * PAGE, rw),
        E(sys::ENOMEM),
    );
    t.row(
        "mprotect unknown bit",
        sys::mprotect(b, PAGE, 0x100),
        E(sys::EINVAL),
    );
    t.row(
        "mprotect GROWSDOWN|GROWSUP",
        sys::mprotect(b, PAGE, sys::PROT_READ | 0x0300_0000),
        E(sys::EINVAL),
    );
    t.row(
        "mprotect len max",
        sys::mprotect(b, MAX, sys::PROT_READ),
        E(sys::ENOMEM),
    );
    t.row(
        "mprotect kernel",
        sys::mprotect(K, PAGE, sys::PROT_READ),
        E(sys::ENOMEM),
    );
    t.row(
        "madvise bad advice",
        sys::madvise(b, PAGE, 9999),
        E(sys::EINVAL),
    );
    t.row(
        "madvise unaligned",
        sys::madvise(b + 1, PAGE, sys::MADV_DONTNEED),
        E(sys::EINVAL),
    );
    t.row(
        "madvise len 0",
        sys::madvise(b, 0, sys::MADV_DONTNEED),
        Eq(0),
    );
    t.row(
        "madvise unmapped",
        sys::madvise(gone, PAGE, sys::MADV_DONTNEED),
        E(sys::ENOMEM),
    );
    t.row(
        "madvise across a hole",
        sys::madvise(holed, 3 * PAGE, sys::MADV_HUGEPAGE),
        E(sys::ENOMEM),
    );
    t.row(
        "madvise len max",
        sys::madvise(b, MAX, sys::MADV_DONTNEED),
        E(sys::EINVAL),
    );
    t.row(
        "madvise kernel",
        sys::madvise(K, PAGE, sys::MADV_HUGEPAGE),
        E(sys::ENOMEM),
    );
    let mr = |o: usize, ol: usize, nl: usize, f: usize, n: usize| sys::mremap(o, ol, nl, f, n);
    t.row(
        "mremap unknown flag",
        mr(b, PAGE, PAGE, 0x100, 0),
        E(sys::EINVAL),
    );
    t.row(
        "mremap unaligned",
        mr(b + 1, PAGE, PAGE, 0, 0),
        E(sys::EINVAL),
    );
    t.row("mremap new len 0", mr(b, PAGE, 0, 0, 0), E(sys::EINVAL));
    t.row(
        "mremap new len max",
        mr(b, PAGE, MAX, sys::MREMAP_MAYMOVE, 0),
        E(sys::EINVAL),
    );
    t.row(
        "mremap FIXED without MAYMOVE",
        mr(b, PAGE, PAGE, sys::MREMAP_FIXED, holed),
        E(sys::EINVAL),
    );
    t.row(
        "mremap DONTUNMAP without MAYMOVE",
        mr(b, PAGE, PAGE, 4, 0),
        E(sys::EINVAL),
    );
    t.row(
        "mremap unmapped",
        mr(gone, PAGE, PAGE, sys::MREMAP_MAYMOVE, 0),
        E(sys::EFAULT),
    );
    t.row(
        "mremap onto itself (overlap)",
        mr(
            b,
            2 * PAGE,
            2 * PAGE,
            sys::MREMAP_MAYMOVE | sys::MREMAP_FIXED,
            b + PAGE,
        ),
        E(sys::EINVAL),
    );
    t.row(
        "mremap FIXED unaligned target",
        mr(
            b,
            PAGE,
            PAGE,
            sys::MREMAP_MAYMOVE | sys::MREMAP_FIXED,
            holed + 1,
        ),
        E(sys::EINVAL),
    );

    // brk: out-of-range requests leave the break where it is.
    let cur = sys::brk(0);
    t.row("brk kernel address", sys::brk(K), Eq(cur));
    t.row("brk 1", sys::brk(1), Eq(cur));
    t.row("brk max", sys::brk(MAX), Eq(cur));

    // Processes and signals.
    t.row(
        "clone THREAD without SIGHAND",
        sc(nr::CLONE, &[0x10000 | 0x100, 0, 0, 0, 0]),
        E(sys::EINVAL),
    );
    // Flag combinations Linux refuses (none of them creates anything).
    for (what, flags) in [
        ("clone SIGHAND without VM", 0x800 | sys::SIGCHLD),
        (
            "clone THREAD|VM without SIGHAND",
            0x10000 | 0x100 | 0x200 | 0x400,
        ),
        ("clone FS|NEWNS", 0x200 | 0x2_0000 | sys::SIGCHLD),
        (
            "clone PIDFD|PARENT_SETTID",
            0x1000 | 0x10_0000 | sys::SIGCHLD,
        ),
    ] {
        t.row(what, sc(nr::CLONE, &[flags, 0, b, 0, 0]), E(sys::EINVAL));
    }
    futex_rows(&mut t, b, gone);
    let mut st = 0;
    t.row(
        "wait4 without children",
        sys::wait4(-1, &mut st, 0),
        E(sys::ECHILD),
    );
    t.row(
        "wait4 unknown option",
        sc(nr::WAIT4, &[MAX, b, 0x100, 0]),
        E(sys::EINVAL),
    );
    t.row(
        "wait4 INT_MIN",
        sc(nr::WAIT4, &[i32::MIN as usize, b, 0, 0]),
        E(sys::ESRCH),
    );
    t.row(
        "wait4 bad status, no child",
        sc(nr::WAIT4, &[MAX, K, 0, 0]),
        E(sys::ECHILD),
    );
    let pid = sys::fork();
    if pid == 0 {
        sys::exit(0);
    }
    t.row(
        "wait4 child, status kernel",
        sc(nr::WAIT4, &[pid as usize, K, 0, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "wait4 after the child was reaped",
        sc(nr::WAIT4, &[pid as usize, b, 0, 0]),
        E(sys::ECHILD),
    );
    let me = sys::getpid() as usize;
    t.row("kill no such pid", sys::kill(0x3fff_fff0, 0), E(sys::ESRCH));
    t.row(
        "kill INT_MIN",
        sys::kill(i32::MIN as isize, 0),
        E(sys::ESRCH),
    );
    t.row(
        "kill self signal 99",
        sc(nr::KILL, &[me, 99]),
        E(sys::EINVAL),
    );
    t.row("kill self signal 0", sc(nr::KILL, &[me, 0]), Eq(0));
    t.row(
        "kill self SIGCHLD (ignored)",
        sc(nr::KILL, &[me, 17]),
        Eq(0),
    );
    t.row("tgkill tgid 0", sc(nr::TGKILL, &[0, me, 0]), E(sys::EINVAL));
    t.row("tgkill tid 0", sc(nr::TGKILL, &[me, 0, 0]), E(sys::EINVAL));
    t.row(
        "tgkill signal 99",
        sc(nr::TGKILL, &[me, me, 99]),
        E(sys::EINVAL),
    );
    t.row("tgkill self signal 0", sc(nr::TGKILL, &[me, me, 0]), Eq(0));
    t.row(
        "tgkill no such thread",
        sc(nr::TGKILL, &[0x3fff_fff0, 0x3fff_fff0, 0]),
        E(sys::ESRCH),
    );
    t.row(
        "rt_sigaction signal 0",
        sc(nr::RT_SIGACTION, &[0, 0, b, 8]),
        E(sys::EINVAL),
    );
    t.row(
        "rt_sigaction signal 65",
        sc(nr::RT_SIGACTION, &[65, 0, b, 8]),
        E(sys::EINVAL),
    );
    t.row(
        "rt_sigaction sigsetsize 4",
        sc(nr::RT_SIGACTION, &[10, 0, b, 4]),
        E(sys::EINVAL),
    );
    t.row(
        "rt_sigaction catch SIGKILL",
        sc(nr::RT_SIGACTION, &[9, b, 0, 8]),
        E(sys::EINVAL),
    );
    t.row(
        "rt_sigaction act kernel",
        sc(nr::RT_SIGACTION, &[10, K, 0, 8]),
        E(sys::EFAULT),
    );
    t.row(
        "rt_sigaction oldact kernel",
        sc(nr::RT_SIGACTION, &[10, 0, K, 8]),
        E(sys::EFAULT),
    );
    t.row(
        "rt_sigaction query SIGKILL",
        sc(nr::RT_SIGACTION, &[9, 0, b, 8]),
        Eq(0),
    );
    let empty_set = [0u64; 1];
    let set = empty_set.as_ptr() as usize;
    t.row(
        "rt_sigprocmask sigsetsize 4",
        sc(nr::RT_SIGPROCMASK, &[0, 0, b, 4]),
        E(sys::EINVAL),
    );
    t.row(
        "rt_sigprocmask how 99",
        sc(nr::RT_SIGPROCMASK, &[99, set, 0, 8]),
        E(sys::EINVAL),
    );
    t.row(
        "rt_sigprocmask set kernel",
        sc(nr::RT_SIGPROCMASK, &[0, K, 0, 8]),
        E(sys::EFAULT),
    );
    t.row(
        "rt_sigprocmask oldset kernel",
        sc(nr::RT_SIGPROCMASK, &[0, 0, K, 8]),
        E(sys::EFAULT),
    );
    t.row(
        "prlimit64 resource 99",
        sc(nr::PRLIMIT64, &[0, 99, 0, b]),
        E(sys::EINVAL),
    );
    t.row(
        "prlimit64 old kernel",
        sc(nr::PRLIMIT64, &[0, 7, 0, K]),
        E(sys::EFAULT),
    );
    t.row(
        "prlimit64 new kernel",
        sc(nr::PRLIMIT64, &[0, 7, K, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "prlimit64 no such pid",
        sc(nr::PRLIMIT64, &[0x3fff_fff0, 7, 0, b]),
        E(sys::ESRCH),
    );
    t.row(
        "set_robust_list bad length",
        sc(nr::SET_ROBUST_LIST, &[b, 23]),
        E(sys::EINVAL),
    );

    // Time, identity, randomness.
    let ts_bad_ns = [0i64, 1_000_000_000];
    let ts_neg = [-1i64, 0];
    let ts_neg_ns = [0i64, -1];
    let ts_zero = [0i64, 0];
    let p = |t: &[i64; 2]| t.as_ptr() as usize;
    t.row("nanosleep NULL", sc(nr::NANOSLEEP, &[0, 0]), E(sys::EFAULT));
    let cns = nr::CLOCK_NANOSLEEP;
    t.row(
        "clock_nanosleep NULL",
        sc(cns, &[1, 0, 0, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "clock_nanosleep nsec 1e9",
        sc(cns, &[1, 0, p(&ts_bad_ns), 0]),
        E(sys::EINVAL),
    );
    t.row(
        "clock_nanosleep sec -1",
        sc(cns, &[0, 0, p(&ts_neg), 0]),
        E(sys::EINVAL),
    );
    t.row(
        "clock_nanosleep thread cputime",
        sc(cns, &[3, 0, p(&ts_zero), 0]),
        E(sys::EOPNOTSUPP),
    );
    t.row(
        "clock_nanosleep clock 99",
        sc(cns, &[99, 0, p(&ts_zero), 0]),
        E(sys::EINVAL),
    );
    t.row(
        "clock_nanosleep monotonic_raw",
        sc(cns, &[4, 0, p(&ts_zero), 0]),
        E(sys::EOPNOTSUPP),
    );
    t.row(
        "clock_nanosleep zero",
        sc(cns, &[1, 0, p(&ts_zero), 0]),
        Eq(0),
    );
    t.row(
        "clock_nanosleep abstime past",
        sc(cns, &[1, 1, p(&ts_zero), 0]),
        Eq(0),
    );
    t.row(
        "nanosleep kernel",
        sc(nr::NANOSLEEP, &[K, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "nanosleep nsec 1e9",
        sc(nr::NANOSLEEP, &[p(&ts_bad_ns), 0]),
        E(sys::EINVAL),
    );
    t.row(
        "nanosleep sec -1",
        sc(nr::NANOSLEEP, &[p(&ts_neg), 0]),
        E(sys::EINVAL),
    );
    t.row(
        "nanosleep nsec -1",
        sc(nr::NANOSLEEP, &[p(&ts_neg_ns), 0]),
        E(sys::EINVAL),
    );
    t.row(
        "nanosleep 0, bad rem unused",
        sc(nr::NANOSLEEP, &[p(&ts_zero), K]),
        Eq(0),
    );
    t.row(
        "clock_gettime clock 99",
        sc(nr::CLOCK_GETTIME, &[99, b]),
        E(sys::EINVAL),
    );
    t.row(
        "clock_gettime clock 10",
        sc(nr::CLOCK_GETTIME, &[10, b]),
        E(sys::EINVAL),
    );
    t.row(
        "clock_gettime NULL",
        sc(nr::CLOCK_GETTIME, &[1, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "clock_gettime kernel",
        sc(nr::CLOCK_GETTIME, &[1, K]),
        E(sys::EFAULT),
    );
    t.row(
        "clock_gettime straddling",
        sc(nr::CLOCK_GETTIME, &[1, straddle]),
        E(sys::EFAULT),
    );
    t.row(
        "clock_gettime misaligned",
        sc(nr::CLOCK_GETTIME, &[1, b + 3]),
        Eq(0),
    );
    t.row(
        "getrusage who 5",
        sc(nr::GETRUSAGE, &[5, b]),
        E(sys::EINVAL),
    );
    t.row("getrusage NULL", sc(nr::GETRUSAGE, &[0, 0]), E(sys::EFAULT));
    t.row(
        "getrusage kernel",
        sc(nr::GETRUSAGE, &[0, K]),
        E(sys::EFAULT),
    );
    t.row("getrusage children", sc(nr::GETRUSAGE, &[MAX, b]), Eq(0));
    t.row("uname NULL", sc(nr::UNAME, &[0]), E(sys::EFAULT));
    t.row("uname kernel", sc(nr::UNAME, &[K]), E(sys::EFAULT));
    t.row("uname non-canonical", sc(nr::UNAME, &[NC]), E(sys::EFAULT));
    t.row(
        "uname straddling",
        sc(nr::UNAME, &[straddle]),
        E(sys::EFAULT),
    );
    t.row("uname read-only", sc(nr::UNAME, &[ro]), E(sys::EFAULT));
    t.row(
        "getrandom NULL",
        sc(nr::GETRANDOM, &[0, 16, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "getrandom kernel",
        sc(nr::GETRANDOM, &[K, 16, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "getrandom unknown flag",
        sc(nr::GETRANDOM, &[b, 16, 0x100]),
        E(sys::EINVAL),
    );
    t.row(
        "getrandom RANDOM|INSECURE",
        sc(nr::GETRANDOM, &[b, 16, 6]),
        E(sys::EINVAL),
    );
    t.row("getrandom len 0", sc(nr::GETRANDOM, &[b, 0, 0]), Eq(0));
    t.row(
        "pread64 fd -1",
        sc(nr::PREAD64, &[badfd, b, 16, 0]),
        E(sys::EBADF),
    );
    t.row(
        "pread64 offset -1",
        sc(nr::PREAD64, &[mi, b, 16, MAX]),
        E(sys::EINVAL),
    );
    t.row(
        "pread64 NULL",
        sc(nr::PREAD64, &[mi, 0, 16, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "pread64 write-only",
        sc(nr::PREAD64, &[nullw, b, 16, 0]),
        E(sys::EBADF),
    );
    t.row(
        "pread64 directory",
        sc(nr::PREAD64, &[dir, b, 16, 0]),
        E(sys::EISDIR),
    );
    t.row(
        "pread64 past the end",
        sc(nr::PREAD64, &[mi, b, 16, 1 << 40]),
        Eq(0),
    );
    t.row(
        "prctl unknown option",
        sc(nr::PRCTL, &[0x7fff_0000, 0, 0, 0, 0]),
        E(sys::EINVAL),
    );
    t.row(
        "prctl SET_THP_DISABLE arg3",
        sc(nr::PRCTL, &[PR_SET_THP_DISABLE, 0, 1, 0, 0]),
        E(sys::EINVAL),
    );
    t.row(
        "prctl SET_THP_DISABLE arg5",
        sc(nr::PRCTL, &[PR_SET_THP_DISABLE, 0, 0, 0, 1]),
        E(sys::EINVAL),
    );
    t.row(
        "prctl GET_THP_DISABLE arg2",
        sc(nr::PRCTL, &[PR_GET_THP_DISABLE, 1, 0, 0, 0]),
        E(sys::EINVAL),
    );
    t.row(
        "prctl GET_THP_DISABLE",
        sc(nr::PRCTL, &[PR_GET_THP_DISABLE, 0, 0, 0, 0]),
        Eq(0),
    );
    t.row(
        "prctl GET_NAME NULL",
        sc(nr::PRCTL, &[PR_GET_NAME, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "prctl GET_NAME kernel",
        sc(nr::PRCTL, &[PR_GET_NAME, K]),
        E(sys::EFAULT),
    );
    t.row(
        "prctl GET_NAME read-only",
        sc(nr::PRCTL, &[PR_GET_NAME, ro]),
        E(sys::EFAULT),
    );
    t.row(
        "prctl SET_NAME NULL",
        sc(nr::PRCTL, &[PR_SET_NAME, 0]),
        E(sys::EFAULT),
    );
    t.row(
        "prctl SET_NAME unmapped",
        sc(nr::PRCTL, &[PR_SET_NAME, gone]),
        E(sys::EFAULT),
    );
    #[cfg(target_arch = "x86_64")]
    {
        t.row("arch_prctl bad code", sc(158, &[0x9999, 0]), E(sys::EINVAL));
        t.row(
            "arch_prctl GET_FS NULL",
            sc(158, &[0x1003, 0]),
            E(sys::EFAULT),
        );
        t.row(
            "arch_prctl SET_FS kernel",
            sc(158, &[0x1002, K]),
            E(sys::EPERM),
        );
    }
    t.row("unknown system call", sc(999, &[]), E(sys::ENOSYS));
    t.row("system call number max", sc(MAX, &[]), E(sys::ENOSYS));
    if on_mthp() {
        // Privileged calls: only here (on a host they depend on
        // capabilities, or would change the system).
        t.row(
            "reboot bad magic",
            sc(nr::REBOOT, &[0, 0, 0, 0]),
            E(sys::EINVAL),
        );
        t.row(
            "mount fstype kernel",
            sc(nr::MOUNT, &[0, 0, K, 0, 0]),
            E(sys::EFAULT),
        );
        t.row(
            "mount unknown fstype",
            sc(nr::MOUNT, &[0, 0, c"nosuchfs".as_ptr() as usize, 0, 0]),
            E(sys::ENODEV),
        );
    }

    for fd in [mi, nullw, nullr, dir] {
        sys::close(fd as i32);
    }
    sys::munmap(ro, PAGE);
    sys::munmap(none, PAGE);
    sys::munmap(holed, 3 * PAGE);
    unmap(&buf);
    if let Some(m) = t.msg {
        fail!("{} rows failed; first: {}", t.failed, m);
    }
    Ok(Outcome::Pass)
}

/// `futex` with bad input: alignment, unmapped words, value mismatch,
/// timeouts (relative and absolute, already expired or tiny), bad
/// timespecs, a zero bitset and unknown operations; `b` is a read-write
/// buffer, `gone` an unmapped page.
fn futex_rows(t: &mut Table, b: usize, gone: usize) {
    use Want::{Eq, Err as E};
    const WAIT: usize = 0;
    const WAKE: usize = 1;
    const WAIT_BITSET: usize = 9;
    const WAKE_BITSET: usize = 10;
    const PRIVATE: usize = 128;
    const REALTIME: usize = 256;
    const K: usize = 0xffff_8000_0000_0000;
    let fx = |addr: usize, op: usize, val: usize, ts: usize, val3: usize| {
        sys::syscall(sys::nr::FUTEX, &[addr, op, val, ts, 0, val3])
    };
    // The word at `b` holds 7; timespecs after it: {0, 2 ms}, {0, 0},
    // {0, 10^9}.
    let word = b as *mut u32;
    let ts = b + 16;
    // SAFETY: `b` is a mapped read-write buffer of two pages.
    unsafe {
        word.write_volatile(7);
        let t = ts as *mut usize;
        for (i, v) in [0, 2_000_000, 0, 0, 0, 1_000_000_000]
            .into_iter()
            .enumerate()
        {
            t.add(i).write_volatile(v);
        }
    }
    let (rel_2ms, zero, bad_ns) = (ts, ts + 16, ts + 32);
    for p in [0, PRIVATE] {
        // The row's name: the shared or the private form.
        macro_rules! row {
            ($t:expr, $what:literal, $r:expr, $want:expr $(,)?) => {
                $t.row(
                    if p == 0 {
                        concat!("futex ", $what)
                    } else {
                        concat!("futex ", $what, " PRIVATE")
                    },
                    $r,
                    $want,
                )
            };
        }
        row!(
            t,
            "WAIT unaligned",
            fx(b + 1, WAIT | p, 7, 0, 0),
            E(sys::EINVAL)
        );
        row!(
            t,
            "WAIT unmapped",
            fx(gone, WAIT | p, 7, 0, 0),
            E(sys::EFAULT)
        );
        row!(t, "WAIT kernel", fx(K, WAIT | p, 7, 0, 0), E(sys::EFAULT));
        row!(t, "WAIT mismatch", fx(b, WAIT | p, 8, 0, 0), E(sys::EAGAIN));
        row!(
            t,
            "WAIT 2 ms",
            fx(b, WAIT | p, 7, rel_2ms, 0),
            E(sys::ETIMEDOUT)
        );
        row!(
            t,
            "WAIT bad timespec",
            fx(b, WAIT | p, 7, bad_ns, 0),
            E(sys::EINVAL)
        );
        row!(
            t,
            "WAIT timespec kernel",
            fx(b, WAIT | p, 7, K, 0),
            E(sys::EFAULT)
        );
        row!(
            t,
            "WAIT REALTIME",
            fx(b, WAIT | p | REALTIME, 7, 0, 0),
            E(sys::ENOSYS)
        );
        row!(
            t,
            "WAIT_BITSET expired",
            fx(b, WAIT_BITSET | p, 7, zero, !0),
            E(sys::ETIMEDOUT)
        );
        row!(
            t,
            "WAIT_BITSET REALTIME expired",
            fx(b, WAIT_BITSET | p | REALTIME, 7, zero, !0),
            E(sys::ETIMEDOUT),
        );
        row!(
            t,
            "WAIT_BITSET bitset 0",
            fx(b, WAIT_BITSET | p, 7, zero, 0),
            E(sys::EINVAL)
        );
        row!(t, "WAKE nobody", fx(b, WAKE | p, 1, 0, 0), Eq(0));
        row!(
            t,
            "WAKE unaligned",
            fx(b + 2, WAKE | p, 1, 0, 0),
            E(sys::EINVAL)
        );
        row!(t, "WAKE kernel", fx(K, WAKE | p, 1, 0, 0), E(sys::EFAULT));
        row!(
            t,
            "WAKE_BITSET bitset 0",
            fx(b, WAKE_BITSET | p, 1, 0, 0),
            E(sys::EINVAL)
        );
        row!(t, "op 99", fx(b, 99 | p, 1, 0, 0), E(sys::ENOSYS));
    }
    // A shared futex is found through its page; a private one by address.
    t.row(
        "futex WAKE unmapped",
        fx(gone, WAKE, 1, 0, 0),
        E(sys::EFAULT),
    );
    t.row(
        "futex WAKE PRIVATE unmapped",
        fx(gone, WAKE | PRIVATE, 1, 0, 0),
        Eq(0),
    );
}
