//! Raw Linux system calls for x86_64 (`syscall`) and arm64 (`svc #0`).
//!
//! Every wrapper returns the kernel's raw result: a non-negative value, or
//! `-errno`.  [`check`] turns that into a `Result`.
use core::arch::asm;

/// Syscall numbers (Linux's, per architecture).
#[cfg(target_arch = "x86_64")]
pub mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const CLOSE: usize = 3;
    pub const FSTAT: usize = 5;
    pub const LSEEK: usize = 8;
    pub const MMAP: usize = 9;
    pub const MPROTECT: usize = 10;
    pub const MUNMAP: usize = 11;
    pub const BRK: usize = 12;
    pub const SCHED_YIELD: usize = 24;
    pub const MREMAP: usize = 25;
    pub const MADVISE: usize = 28;
    pub const SWAPON: usize = 167;
    pub const SWAPOFF: usize = 168;
    pub const NANOSLEEP: usize = 35;
    pub const CLOCK_NANOSLEEP: usize = 230;
    pub const GETPID: usize = 39;
    pub const CLONE: usize = 56;
    pub const FUTEX: usize = 202;
    pub const EXIT: usize = 60;
    pub const WAIT4: usize = 61;
    pub const UNAME: usize = 63;
    pub const GETRUSAGE: usize = 98;
    pub const MOUNT: usize = 165;
    pub const REBOOT: usize = 169;
    pub const GETTID: usize = 186;
    pub const CLOCK_GETTIME: usize = 228;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;
    pub const NEWFSTATAT: usize = 262;
    pub const GETRANDOM: usize = 318;
    pub const PRCTL: usize = 157;
    pub const PREAD64: usize = 17;
    pub const PWRITE64: usize = 18;
    pub const FALLOCATE: usize = 285;
    pub const DUP: usize = 32;
    pub const DUP3: usize = 292;
    pub const FCNTL: usize = 72;
    pub const PIPE2: usize = 293;
    pub const GETDENTS64: usize = 217;
    pub const GETCWD: usize = 79;
    pub const CHDIR: usize = 80;
    pub const FACCESSAT: usize = 269;
    pub const READLINKAT: usize = 267;
    pub const UMASK: usize = 95;
    pub const GETTIMEOFDAY: usize = 96;
    pub const SYSINFO: usize = 99;
    pub const GETUID: usize = 102;
    pub const GETEUID: usize = 107;
    pub const GETPGID: usize = 121;
    pub const SETSID: usize = 112;
    pub const GETSID: usize = 124;
    pub const SETPGID: usize = 109;
    pub const SCHED_GETAFFINITY: usize = 204;
    pub const SCHED_SETAFFINITY: usize = 203;
    pub const TGKILL: usize = 234;
    pub const KILL: usize = 62;
    pub const GETPPID: usize = 110;
    pub const READV: usize = 19;
    pub const WRITEV: usize = 20;
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const IOCTL: usize = 16;
    pub const SET_TID_ADDRESS: usize = 218;
    pub const SET_ROBUST_LIST: usize = 273;
    pub const PRLIMIT64: usize = 302;
    pub const MLOCK: usize = 149;
    pub const MBIND: usize = 237;
    pub const SET_MEMPOLICY: usize = 238;
    pub const GET_MEMPOLICY: usize = 239;
    pub const MIGRATE_PAGES: usize = 256;
    pub const MOVE_PAGES: usize = 279;
    pub const MUNLOCK: usize = 150;
    pub const MLOCKALL: usize = 151;
    pub const MUNLOCKALL: usize = 152;
    pub const MLOCK2: usize = 325;
    pub const SETUID: usize = 105;
    pub const MEMFD_CREATE: usize = 319;
    pub const SHMGET: usize = 29;
    pub const UMOUNT2: usize = 166;
    pub const MKDIRAT: usize = 258;
    pub const UNLINKAT: usize = 263;
    pub const SHMAT: usize = 30;
    pub const SHMCTL: usize = 31;
    pub const SHMDT: usize = 67;
    pub const FTRUNCATE: usize = 77;
    pub const STATFS: usize = 137;
    pub const FSTATFS: usize = 138;
}

/// Syscall numbers (Linux's, per architecture).
#[cfg(target_arch = "aarch64")]
pub mod nr {
    pub const OPENAT: usize = 56;
    pub const CLOSE: usize = 57;
    pub const LSEEK: usize = 62;
    pub const READ: usize = 63;
    pub const WRITE: usize = 64;
    pub const NEWFSTATAT: usize = 79;
    pub const FSTAT: usize = 80;
    pub const EXIT: usize = 93;
    pub const EXIT_GROUP: usize = 94;
    pub const NANOSLEEP: usize = 101;
    pub const CLOCK_NANOSLEEP: usize = 115;
    pub const CLOCK_GETTIME: usize = 113;
    pub const SCHED_YIELD: usize = 124;
    pub const REBOOT: usize = 142;
    pub const UNAME: usize = 160;
    pub const GETRUSAGE: usize = 165;
    pub const GETPID: usize = 172;
    pub const GETTID: usize = 178;
    pub const BRK: usize = 214;
    pub const MUNMAP: usize = 215;
    pub const MREMAP: usize = 216;
    pub const CLONE: usize = 220;
    pub const FUTEX: usize = 98;
    pub const MMAP: usize = 222;
    pub const MPROTECT: usize = 226;
    pub const MADVISE: usize = 233;
    pub const SWAPON: usize = 224;
    pub const SWAPOFF: usize = 225;
    pub const WAIT4: usize = 260;
    pub const GETRANDOM: usize = 278;
    pub const PRCTL: usize = 167;
    pub const PREAD64: usize = 67;
    pub const PWRITE64: usize = 68;
    pub const FALLOCATE: usize = 47;
    pub const DUP: usize = 23;
    pub const DUP3: usize = 24;
    pub const FCNTL: usize = 25;
    pub const PIPE2: usize = 59;
    pub const GETDENTS64: usize = 61;
    pub const GETCWD: usize = 17;
    pub const CHDIR: usize = 49;
    pub const FACCESSAT: usize = 48;
    pub const READLINKAT: usize = 78;
    pub const UMASK: usize = 166;
    pub const GETTIMEOFDAY: usize = 169;
    pub const SYSINFO: usize = 179;
    pub const GETUID: usize = 174;
    pub const GETEUID: usize = 175;
    pub const GETPGID: usize = 155;
    pub const SETSID: usize = 157;
    pub const GETSID: usize = 156;
    pub const SETPGID: usize = 154;
    pub const SCHED_GETAFFINITY: usize = 123;
    pub const SCHED_SETAFFINITY: usize = 122;
    pub const TGKILL: usize = 131;
    pub const MOUNT: usize = 40;
    pub const KILL: usize = 129;
    pub const GETPPID: usize = 173;
    pub const READV: usize = 65;
    pub const WRITEV: usize = 66;
    pub const RT_SIGACTION: usize = 134;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const IOCTL: usize = 29;
    pub const SET_TID_ADDRESS: usize = 96;
    pub const SET_ROBUST_LIST: usize = 99;
    pub const PRLIMIT64: usize = 261;
    pub const MLOCK: usize = 228;
    pub const MBIND: usize = 235;
    pub const GET_MEMPOLICY: usize = 236;
    pub const SET_MEMPOLICY: usize = 237;
    pub const MIGRATE_PAGES: usize = 238;
    pub const MOVE_PAGES: usize = 239;
    pub const MUNLOCK: usize = 229;
    pub const MLOCKALL: usize = 230;
    pub const MUNLOCKALL: usize = 231;
    pub const MLOCK2: usize = 284;
    pub const SETUID: usize = 146;
    pub const MEMFD_CREATE: usize = 279;
    pub const SHMGET: usize = 194;
    pub const UMOUNT2: usize = 39;
    pub const MKDIRAT: usize = 34;
    pub const UNLINKAT: usize = 35;
    pub const SHMCTL: usize = 195;
    pub const SHMAT: usize = 196;
    pub const SHMDT: usize = 197;
    pub const FTRUNCATE: usize = 46;
    pub const STATFS: usize = 43;
    pub const FSTATFS: usize = 44;
}

/// A system call with up to six arguments.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn syscall6(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux x86_64 syscall ABI: number in rax, arguments in
    // rdi/rsi/rdx/r10/r8/r9, result in rax; the instruction clobbers rcx
    // and r11.  Memory the kernel reads or writes is named by the caller's
    // arguments, which the safe wrappers below build from live references.
    unsafe {
        asm!("syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack));
    }
    ret
}

/// A system call with up to six arguments.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub fn syscall6(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux arm64 syscall ABI: number in x8, arguments in
    // x0..x5, result in x0; nothing else is clobbered.
    unsafe {
        asm!("svc #0",
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
            in("x8") n,
            options(nostack));
    }
    ret
}

pub fn syscall(n: usize, args: &[usize]) -> isize {
    let mut a = [0usize; 6];
    a[..args.len()].copy_from_slice(args);
    syscall6(n, a)
}

/// `Ok(value)` or `Err(errno)`.
pub fn check(r: isize) -> Result<usize, i32> {
    if (-4095..0).contains(&r) {
        Err((-r) as i32)
    } else {
        Ok(r as usize)
    }
}

pub const EPERM: i32 = 1;
pub const ENOENT: i32 = 2;
pub const ESRCH: i32 = 3;
pub const E2BIG: i32 = 7;
pub const EBADF: i32 = 9;
pub const ECHILD: i32 = 10;
pub const ENOMEM: i32 = 12;
pub const EACCES: i32 = 13;
pub const EFAULT: i32 = 14;
pub const EBUSY: i32 = 16;
pub const EEXIST: i32 = 17;
pub const ENODEV: i32 = 19;
pub const EIO: i32 = 5;
pub const EISDIR: i32 = 21;
pub const EINVAL: i32 = 22;
pub const EOPNOTSUPP: i32 = 95;
pub const EMFILE: i32 = 24;
pub const ENOTTY: i32 = 25;
pub const ESPIPE: i32 = 29;
pub const EROFS: i32 = 30;
pub const ENOSPC: i32 = 28;
pub const ENAMETOOLONG: i32 = 36;
pub const ENOSYS: i32 = 38;
pub const EAGAIN: i32 = 11;
pub const ETIMEDOUT: i32 = 110;
pub const ENOTDIR: i32 = 20;
pub const EPIPE: i32 = 32;
pub const ERANGE: i32 = 34;

pub const PROT_NONE: usize = 0;
pub const PROT_READ: usize = 1;
pub const PROT_WRITE: usize = 2;
pub const MAP_SHARED: usize = 0x01;
pub const MAP_PRIVATE: usize = 0x02;
pub const MAP_FIXED: usize = 0x10;
pub const MAP_ANONYMOUS: usize = 0x20;
pub const MADV_DONTNEED: usize = 4;
pub const MADV_HUGEPAGE: usize = 14;
pub const MADV_NOHUGEPAGE: usize = 15;
pub const MREMAP_MAYMOVE: usize = 1;
pub const MREMAP_FIXED: usize = 2;
pub const O_RDONLY: usize = 0;
pub const O_WRONLY: usize = 1;
pub const O_RDWR: usize = 2;
#[cfg(target_arch = "x86_64")]
pub const O_DIRECTORY: usize = 0o200000;
#[cfg(target_arch = "aarch64")]
pub const O_DIRECTORY: usize = 0o40000;
#[cfg(target_arch = "x86_64")]
pub const O_DIRECT: usize = 0o40000;
#[cfg(target_arch = "aarch64")]
pub const O_DIRECT: usize = 0o200000;
pub const AT_FDCWD: isize = -100;
pub const SIGCHLD: usize = 17;
pub const SIGSEGV: i32 = 11;
pub const SIGKILL: i32 = 9;
pub const CLOCK_MONOTONIC: usize = 1;

pub fn write(fd: i32, buf: &[u8]) -> isize {
    syscall(nr::WRITE, &[fd as usize, buf.as_ptr() as usize, buf.len()])
}

pub fn read(fd: i32, buf: &mut [u8]) -> isize {
    syscall(
        nr::READ,
        &[fd as usize, buf.as_mut_ptr() as usize, buf.len()],
    )
}

/// `openat(AT_FDCWD, path, flags)`; `path` must end with a NUL byte.
pub fn open(path: &[u8], flags: usize) -> isize {
    debug_assert_eq!(path.last(), Some(&0));
    syscall(
        nr::OPENAT,
        &[AT_FDCWD as usize, path.as_ptr() as usize, flags, 0],
    )
}

pub fn close(fd: i32) -> isize {
    syscall(nr::CLOSE, &[fd as usize])
}

pub fn mmap(addr: usize, len: usize, prot: usize, flags: usize, fd: isize, off: usize) -> isize {
    syscall(nr::MMAP, &[addr, len, prot, flags, fd as usize, off])
}

pub fn munmap(addr: usize, len: usize) -> isize {
    syscall(nr::MUNMAP, &[addr, len])
}

pub fn mprotect(addr: usize, len: usize, prot: usize) -> isize {
    syscall(nr::MPROTECT, &[addr, len, prot])
}

pub fn madvise(addr: usize, len: usize, advice: usize) -> isize {
    syscall(nr::MADVISE, &[addr, len, advice])
}

/// `swapon(path, flags)`; `path` NUL-terminated.
pub fn swapon(path: &[u8], flags: usize) -> isize {
    syscall(nr::SWAPON, &[path.as_ptr() as usize, flags])
}

/// `swapoff(path)`; `path` NUL-terminated.
pub fn swapoff(path: &[u8]) -> isize {
    syscall(nr::SWAPOFF, &[path.as_ptr() as usize])
}

pub fn mremap(old: usize, old_len: usize, new_len: usize, flags: usize, new_addr: usize) -> isize {
    syscall(nr::MREMAP, &[old, old_len, new_len, flags, new_addr])
}

/// `clone(SIGCHLD, 0, …)`: fork.  0 in the child, the child's pid in the parent.
pub fn fork() -> isize {
    syscall(nr::CLONE, &[SIGCHLD, 0, 0, 0, 0])
}

pub fn wait4(pid: isize, status: &mut i32, options: usize) -> isize {
    syscall(
        nr::WAIT4,
        &[pid as usize, status as *mut i32 as usize, options, 0],
    )
}

pub fn exit(code: i32) -> ! {
    syscall(nr::EXIT_GROUP, &[code as usize]);
    syscall(nr::EXIT, &[code as usize]);
    #[allow(clippy::empty_loop)]
    loop {}
}

pub fn getpid() -> isize {
    syscall(nr::GETPID, &[])
}

pub fn gettid() -> isize {
    syscall(nr::GETTID, &[])
}

pub fn sched_yield() -> isize {
    syscall(nr::SCHED_YIELD, &[])
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

pub fn clock_gettime(clock: usize, ts: &mut Timespec) -> isize {
    syscall(nr::CLOCK_GETTIME, &[clock, ts as *mut Timespec as usize])
}

pub fn nanosleep(req: &Timespec) -> isize {
    syscall(nr::NANOSLEEP, &[req as *const Timespec as usize, 0])
}

/// `struct rusage`: two timevals and fourteen longs.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct Rusage {
    pub utime: [i64; 2],
    pub stime: [i64; 2],
    pub maxrss: i64,
    pub ixrss: i64,
    pub idrss: i64,
    pub isrss: i64,
    pub minflt: i64,
    pub majflt: i64,
    pub nswap: i64,
    pub inblock: i64,
    pub oublock: i64,
    pub msgsnd: i64,
    pub msgrcv: i64,
    pub nsignals: i64,
    pub nvcsw: i64,
    pub nivcsw: i64,
}

pub const RUSAGE_SELF: usize = 0;

pub fn getrusage(who: usize, ru: &mut Rusage) -> isize {
    syscall(nr::GETRUSAGE, &[who, ru as *mut Rusage as usize])
}

/// `struct utsname`: six 65-byte fields.
#[repr(C)]
pub struct Utsname {
    pub fields: [[u8; 65]; 6],
}

pub fn uname(u: &mut Utsname) -> isize {
    syscall(nr::UNAME, &[u as *mut Utsname as usize])
}

pub fn getrandom(buf: &mut [u8]) -> isize {
    syscall(nr::GETRANDOM, &[buf.as_mut_ptr() as usize, buf.len(), 0])
}

/// `kill(pid, sig)` (`sig` 0: does `pid` exist?).
pub fn kill(pid: isize, sig: i32) -> isize {
    syscall(nr::KILL, &[pid as usize, sig as usize])
}

pub fn brk(addr: usize) -> isize {
    syscall(nr::BRK, &[addr])
}
