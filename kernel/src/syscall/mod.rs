//! System calls: Linux's numbers per architecture and its errno rules, for
//! the subset static musl/glibc programs exercising anonymous memory need.
//!
//! `dispatch` runs on the calling thread's kernel stack with interrupts on
//! and preemption off (blocking calls still sleep).
//! Results follow the kernel ABI: a value, or `-errno` in the return
//! register.  Unknown numbers return ENOSYS with one log line per number.
use crate::arch;
use crate::fs::vfs;
use crate::proc::process::{self, Process};
use crate::task::sched;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use mm::abi::errno::Errno;
use mm::abi::uapi::{Advice, MAP_ANONYMOUS, MapFlags, MremapFlags, Prot};

/// The calls this kernel knows, independent of numbering (some exist on
/// one architecture only).
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sys {
    Read,
    Write,
    Readv,
    Writev,
    Open,
    Openat,
    Close,
    Fstat,
    Newfstatat,
    Statfs,
    Fstatfs,
    Lseek,
    Mmap,
    Munmap,
    Mprotect,
    Madvise,
    Mremap,
    Brk,
    Clone,
    Clone3,
    Futex,
    Fork,
    Vfork,
    Wait4,
    Exit,
    ExitGroup,
    Getpid,
    Getppid,
    Gettid,
    SchedYield,
    Nanosleep,
    ClockGettime,
    Getrusage,
    Uname,
    ArchPrctl,
    SetTidAddress,
    SetRobustList,
    Rseq,
    RtSigaction,
    RtSigprocmask,
    Prlimit64,
    Getrandom,
    Ioctl,
    Mount,
    Reboot,
    Kill,
    Tkill,
    Tgkill,
    Prctl,
    Pread64,
    ClockNanosleep,
    Dup,
    Dup2,
    Dup3,
    Fcntl,
    Pipe,
    Pipe2,
    Getdents64,
    Getcwd,
    Chdir,
    Fchdir,
    Access,
    Faccessat,
    Faccessat2,
    Readlink,
    Readlinkat,
    Umask,
    Gettimeofday,
    Time,
    Sysinfo,
    Getuid,
    Geteuid,
    Getgid,
    Getegid,
    Getresuid,
    Getresgid,
    Setpgid,
    Getpgid,
    Getpgrp,
    Getsid,
    Setsid,
    Getpriority,
    Setpriority,
    SchedSetaffinity,
    SchedGetaffinity,
    Mlock,
    MovePages,
    Mbind,
    SetMempolicy,
    GetMempolicy,
    MigratePages,
    Mlock2,
    Munlock,
    Mlockall,
    Munlockall,
    Swapon,
    Swapoff,
    Getrlimit,
    Setrlimit,
    Setuid,
    // shmem: memfd and its file calls.
    MemfdCreate,
    Ftruncate,
    Pwrite64,
    Fallocate,
    // tmpfs names.
    Unlink,
    Unlinkat,
    Rmdir,
    Mkdir,
    Mkdirat,
    Umount2,
    // System V shared memory.
    Shmget,
    Shmat,
    Shmdt,
    Shmctl,
}

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod fdcalls;
mod idcalls;
mod io;
mod time;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "aarch64")]
use aarch64::decode;
use io::*;
use time::*;
#[cfg(target_arch = "x86_64")]
use x86_64::decode;

/// Numbers already reported as unknown (one log line each; first 64).
static REPORTED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn report_unknown(nr: u64, pid: u32) {
    if nr < 512 {
        let bit = 1u64 << (nr % 64);
        if REPORTED[(nr / 64) as usize % 8].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return;
        }
    }
    info!("pid {}: unknown system call {} -> ENOSYS", pid, nr);
}

pub(crate) type R = Result<u64, Errno>;

/// The system call entry (installed with `arch::set_syscall_handler`).
pub fn dispatch(frame: &mut arch::UserFrame) {
    let nr = frame.syscall_nr();
    let a = frame.syscall_args();
    let Some(p) = process::current() else {
        frame.set_return(neg(Errno::ENOSYS));
        return;
    };
    // The whole call runs without preemption: a user fault on another
    // thread is handled with interrupts masked and may need the heap,
    // allocator or console lock this call holds, so the holder must never
    // be switched out while holding one.  Sleeping calls still switch.
    let _np = sched::preempt_disable();
    let r = match decode(nr) {
        Some(s) => call(&p, s, a, frame),
        None => {
            report_unknown(nr, p.pid);
            Err(Errno::ENOSYS)
        }
    };
    drop(p);
    frame.set_return(match r {
        Ok(v) => v,
        Err(e) => neg(e),
    });
    // Another thread ended the group while this call ran (or slept).
    process::die_if_killed();
}

fn neg(e: Errno) -> u64 {
    (-(e as i32 as i64)) as u64
}

pub(crate) fn efault<T>(r: Result<T, arch::EFault>) -> Result<T, Errno> {
    r.map_err(|_| Errno::EFAULT)
}

/// Store 64-bit words (little-endian, as both arches) at a user address.
pub(crate) fn put_words(addr: u64, words: &[u64]) -> Result<(), Errno> {
    let mut b = Vec::with_capacity(words.len() * 8);
    for w in words {
        b.extend_from_slice(&w.to_le_bytes());
    }
    efault(arch::copy_to_user(addr, &b))
}

pub(crate) fn get_u64s<const N: usize>(addr: u64) -> Result<[u64; N], Errno> {
    let mut b = [0u8; 64];
    efault(arch::copy_from_user(&mut b[..N * 8], addr))?;
    let mut out = [0u64; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    }
    Ok(out)
}

/// A NUL-terminated user string (at most 4095 bytes: ENAMETOOLONG).
pub(crate) fn get_str(addr: u64) -> Result<String, Errno> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64];
    let mut a = addr;
    loop {
        // Read up to the next 64-byte boundary so we never cross into an
        // unmapped page past the terminator.
        let n = (64 - (a % 64)) as usize;
        efault(arch::copy_from_user(&mut chunk[..n], a))?;
        if let Some(z) = chunk[..n].iter().position(|&c| c == 0) {
            out.extend_from_slice(&chunk[..z]);
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        if out.len() >= 4096 {
            return Err(Errno::ENAMETOOLONG);
        }
        a += n as u64;
    }
    String::from_utf8(out).map_err(|_| Errno::ENOENT)
}

fn call(p: &Arc<Process>, s: Sys, a: [u64; 6], frame: &arch::UserFrame) -> R {
    use Sys::*;
    match s {
        // Descriptors are `unsigned int` in Linux's prototypes: the upper
        // half of the register is ignored.
        Read => sys_read(p, fd(a[0]), a[1], a[2]),
        Pread64 => sys_pread(p, fd(a[0]), a[1], a[2], a[3]),
        Pwrite64 => sys_pwrite(p, fd(a[0]), a[1], a[2], a[3]),
        Shmget => crate::ipc::shm::shmget(p, a[0] as i32, a[1], a[2]),
        Shmat => crate::ipc::shm::shmat(p, a[0] as i32, a[1], a[2]),
        Shmdt => crate::ipc::shm::shmdt(p, a[0]),
        Shmctl => crate::ipc::shm::shmctl(p, a[0] as i32, a[1], a[2]),
        MemfdCreate => {
            let name = get_str(a[0])?;
            let f = crate::fs::memfd::create(&name, a[1])?;
            let fd = p.add_file(Arc::new(f))?;
            p.set_cloexec(fd, a[1] & crate::fs::memfd::MFD_CLOEXEC != 0);
            Ok(fd)
        }
        Ftruncate => {
            // Linux's do_sys_ftruncate: the length first, then the fd.
            if (a[1] as i64) < 0 {
                return Err(Errno::EINVAL);
            }
            let f = p.file(fd(a[0]))?;
            match &f.node {
                vfs::Node::Memfd(obj) if f.writable => {
                    crate::fs::memfd::truncate(obj, a[1] as i64).map(|_| 0)
                }
                _ => Err(Errno::EINVAL),
            }
        }
        Fallocate => {
            let f = p.file(fd(a[0]))?;
            if !f.writable {
                return Err(Errno::EBADF);
            }
            match &f.node {
                vfs::Node::Memfd(obj) => {
                    crate::fs::memfd::fallocate(obj, a[1], a[2] as i64, a[3] as i64).map(|_| 0)
                }
                vfs::Node::Pipe(_) => Err(Errno::ESPIPE),
                _ => Err(Errno::ENODEV),
            }
        }
        Dup => fdcalls::dup(p, fd(a[0])),
        Dup2 => fdcalls::dup3(p, fd(a[0]), fd(a[1]), 0, true),
        Dup3 => fdcalls::dup3(p, fd(a[0]), fd(a[1]), a[2], false),
        Fcntl => fdcalls::fcntl(p, fd(a[0]), a[1], a[2]),
        Pipe => fdcalls::pipe2(p, a[0], 0),
        Pipe2 => fdcalls::pipe2(p, a[0], a[1]),
        Getdents64 => fdcalls::getdents64(p, fd(a[0]), a[1], a[2]),
        Getcwd => fdcalls::getcwd(p, a[0], a[1]),
        Chdir => fdcalls::chdir(p, Some(a[0]), 0),
        Fchdir => fdcalls::chdir(p, None, fd(a[0])),
        Access => fdcalls::faccessat(p, -100i64 as u64, a[0], a[1], 0),
        Faccessat => fdcalls::faccessat(p, a[0], a[1], a[2], 0),
        Faccessat2 => fdcalls::faccessat(p, a[0], a[1], a[2], a[3]),
        Readlink => fdcalls::readlinkat(p, -100i64 as u64, a[0], a[1], a[2]),
        Readlinkat => fdcalls::readlinkat(p, a[0], a[1], a[2], a[3]),
        Umask => idcalls::umask(p, a[0]),
        Gettimeofday => idcalls::gettimeofday(a[0], a[1]),
        Time => idcalls::time(a[0]),
        Sysinfo => idcalls::sysinfo(a[0]),
        Getuid | Geteuid => Ok(u64::from(p.uid.load(Ordering::Relaxed))),
        Getgid | Getegid => Ok(0),
        Getresuid => idcalls::getres_ids(a[0], a[1], a[2], p.uid.load(Ordering::Relaxed)),
        Getresgid => idcalls::getres_ids(a[0], a[1], a[2], 0),
        Setuid => sys_setuid(p, a[0]),
        Mlock => p.with_mm(|mm| mm.mlock(a[0], a[1]))?.map(|_| 0),
        MovePages => crate::mem::migrate::move_pages(p, a[0], a[1], a[2], a[3], a[4], a[5]),
        Mbind => crate::mem::mempolicy::mbind(p, a[0], a[1], a[2], a[3], a[4], a[5]),
        SetMempolicy => crate::mem::mempolicy::set_mempolicy(p, a[0], a[1], a[2]),
        GetMempolicy => crate::mem::mempolicy::get_mempolicy(p, a[0], a[1], a[2], a[3], a[4]),
        MigratePages => crate::mem::mempolicy::migrate_pages(p, a[0], a[1], a[2], a[3]),
        Mlock2 => p.with_mm(|mm| mm.mlock2(a[0], a[1], a[2]))?.map(|_| 0),
        Munlock => p.with_mm(|mm| mm.munlock(a[0], a[1]))?.map(|_| 0),
        Mlockall => p.with_mm(|mm| mm.mlockall(a[0]))?.map(|_| 0),
        Munlockall => p.with_mm(|mm| mm.munlockall())?.map(|_| 0),
        Swapon => {
            let path = get_str(a[0])?;
            crate::mem::swap::swapon(p, &path, a[1]).map(|_| 0)
        }
        Swapoff => {
            let path = get_str(a[0])?;
            crate::mem::swap::swapoff(p, &path).map(|_| 0)
        }
        Getrlimit => {
            let old = prlimit(p, a[0], None)?;
            put_words(a[1], &old)?;
            Ok(0)
        }
        Setrlimit => {
            let new = get_u64s::<2>(a[1])?;
            prlimit(p, a[0], Some(new)).map(|_| 0)
        }
        Setpgid => idcalls::setpgid(p, a[0], a[1]),
        Getpgid => idcalls::getpgid(p, a[0]),
        Getpgrp => idcalls::getpgid(p, 0),
        Getsid => idcalls::getsid(p, a[0]),
        Setsid => idcalls::setsid(p),
        Getpriority => idcalls::getpriority(p, a[0], a[1]),
        Setpriority => idcalls::setpriority(p, a[0], a[1]),
        SchedGetaffinity => idcalls::sched_getaffinity(p, a[0], a[1], a[2]),
        SchedSetaffinity => idcalls::sched_setaffinity(p, a[0], a[1], a[2]),
        Write => sys_write(p, fd(a[0]), a[1], a[2]),
        Readv | Writev => sys_rwv(p, s == Writev, fd(a[0]), a[1], a[2]),
        Open => sys_openat(p, -100i64 as u64, a[0], a[1], a[2]),
        Openat => sys_openat(p, a[0], a[1], a[2], a[3]),
        Unlink => sys_unlinkat(p, -100i64 as u64, a[0], 0),
        Rmdir => sys_unlinkat(p, -100i64 as u64, a[0], 0x200),
        Unlinkat => sys_unlinkat(p, a[0], a[1], a[2]),
        Mkdir => sys_mkdirat(p, -100i64 as u64, a[0], a[1]),
        Mkdirat => sys_mkdirat(p, a[0], a[1], a[2]),
        Umount2 => sys_umount2(p, a[0], a[1]),
        Close => p.close(fd(a[0])).map(|_| 0),
        Fstat => {
            let f = p.file(fd(a[0]))?;
            write_stat(a[1], f.mode, f.size())
        }
        Statfs => io::sys_statfs(p, a[0], a[1]),
        Fstatfs => io::sys_fstatfs(p, fd(a[0]), a[1]),
        Newfstatat => {
            // AT_SYMLINK_NOFOLLOW, AT_NO_AUTOMOUNT, AT_EMPTY_PATH, AT_STATX_*.
            const AT_EMPTY_PATH: u64 = 0x1000;
            const VALID: u64 = 0x100 | 0x800 | AT_EMPTY_PATH | 0x6000;
            let path = get_str(a[1])?;
            if a[3] & !VALID != 0 {
                return Err(Errno::EINVAL);
            }
            if path.is_empty() {
                if a[3] & AT_EMPTY_PATH == 0 {
                    return Err(Errno::ENOENT);
                }
                let f = p.file(u64::from(a[0] as i32 as u32))?;
                return write_stat(a[2], f.mode, f.size());
            }
            let (mode, size) = vfs::stat_path(p, &path)?;
            write_stat(a[2], mode, size)
        }
        Lseek => p.file(fd(a[0]))?.lseek(a[1] as i64, a[2]),
        Mmap => {
            // Linux's sys_mmap: the byte offset must be page-aligned.
            if a[5] & 0xfff != 0 {
                return Err(Errno::EINVAL);
            }
            let flags = MapFlags::from_raw(a[3]);
            if !flags.contains(MAP_ANONYMOUS) {
                // Only memfds and tmpfs files can be mapped; a file descriptor is
                // checked first.
                let f = p.file(a[4])?;
                let vfs::Node::Memfd(obj) = &f.node else {
                    return Err(Errno::ENODEV);
                };
                return p.with_mm(|mm| {
                    let prot = Prot::from_raw(a[2]);
                    let may_write = crate::fs::memfd::mmap_check(&f, obj, prot, flags)?;
                    mm.mmap_shmem(a[0], a[1], prot, flags, obj.clone(), a[5], may_write)
                })?;
            }
            p.with_mm(|mm| mm.mmap(a[0], a[1], Prot::from_raw(a[2]), flags))?
        }
        Munmap => p.with_mm(|mm| mm.munmap(a[0], a[1]))?.map(|_| 0),
        Mprotect => p
            .with_mm(|mm| mm.mprotect(a[0], a[1], Prot::from_raw(a[2])))?
            .map(|_| 0),
        Madvise => {
            // The advice is parsed first, as Linux checks it first.
            let adv = Advice::from_raw(a[2])?;
            if adv == mm::abi::uapi::MADV_REMOVE {
                // The VMA checks under this space's mmap lock, the punch
                // with it dropped (it unmaps every space), as Linux.
                let (punch, result) = p.with_mm(|mm| mm.madvise_remove_ranges(a[0], a[1]))?;
                for (obj, off, len) in punch {
                    crate::fs::memfd::punch_hole(&obj, off, len)?;
                }
                return result.map(|_| 0);
            }
            // Swap-out writes of consecutive folios merge into one request
            // while plugged (block layer, "Plugging and merging").
            let _plug = (adv == mm::abi::uapi::MADV_PAGEOUT).then(crate::block::Plug::new);
            p.with_mm(|mm| {
                mm.madvise_each(a[0], a[1], adv, Some(&mut crate::mem::uspace::each_mm))
            })?
            .map(|_| 0)
        }
        Mremap => sys_mremap(p, a),
        Brk => Ok(process::brk(p, a[0])),
        Clone => sys_clone(p, frame, a),
        // glibc tries clone3 first and falls back to clone on ENOSYS.
        Clone3 => Err(Errno::ENOSYS),
        Futex => {
            let space = p.mm_id().ok_or(Errno::ESRCH)?;
            crate::proc::futex::sys_futex(space, a[0], a[1], a[2], a[3], a[5], process::killed)
        }
        Fork | Vfork => process::fork(p, frame, &FORK).map(u64::from),
        Wait4 => sys_wait4(p, a[0] as i32 as i64, a[1], a[2], a[3]),
        Exit => process::exit_thread(((a[0] & 0xff) << 8) as i32),
        ExitGroup => process::exit_current(((a[0] & 0xff) << 8) as i32),
        Getpid => Ok(u64::from(p.pid)),
        Gettid => Ok(u64::from(process::gettid())),
        Getppid => Ok(u64::from(p.ppid.load(Ordering::Relaxed))),
        SchedYield => {
            sched::yield_now();
            Ok(0)
        }
        Nanosleep => sys_nanosleep(a[0], a[1]),
        ClockNanosleep => sys_clock_nanosleep(a[0], a[1], a[2]),
        ClockGettime => {
            let ns = arch::now_ns();
            // Linux's clock ids (10 is unused); negative ones are CPU-time
            // and descriptor clocks this kernel does not have.
            match a[0] as i32 {
                0..=9 | 11 => {}
                _ => return Err(Errno::EINVAL),
            }
            put_words(a[1], &[ns / 1_000_000_000, ns % 1_000_000_000])?;
            Ok(0)
        }
        Getrusage => {
            // RUSAGE_SELF (0) and RUSAGE_THREAD (1: one address space per
            // process, so the same counts), RUSAGE_CHILDREN (-1).
            let (min, maj) = match a[0] as i64 {
                0 | 1 => (p.minflt(), p.majflt()),
                -1 => (
                    p.child_minflt.load(Ordering::Relaxed),
                    p.child_majflt.load(Ordering::Relaxed),
                ),
                _ => return Err(Errno::EINVAL),
            };
            let mut ru = [0u64; 18];
            ru[8] = min;
            ru[9] = maj;
            put_words(a[1], &ru)?;
            Ok(0)
        }
        Uname => {
            let mut u = [0u8; 65 * 6];
            let fields = [
                "Linux",
                "mthp",
                "6.12.0-mthp",
                "#1 mthp",
                arch::NAME,
                "(none)",
            ];
            for (i, s) in fields.iter().enumerate() {
                u[65 * i..65 * i + s.len()].copy_from_slice(s.as_bytes());
            }
            efault(arch::copy_to_user(a[0], &u))?;
            Ok(0)
        }
        ArchPrctl => sys_arch_prctl(p, a[0], a[1]),
        Prctl => sys_prctl(p, a),
        SetTidAddress => Ok(u64::from(process::set_tid_address(a[0]))),
        SetRobustList => {
            if a[1] != 24 {
                return Err(Errno::EINVAL);
            }
            process::set_robust_list(a[0]);
            Ok(0)
        }
        Rseq => Err(Errno::ENOSYS),
        RtSigaction => idcalls::rt_sigaction(p, a[0], a[1], a[2], a[3]),
        RtSigprocmask => idcalls::rt_sigprocmask(p, a[0], a[1], a[2], a[3]),
        Prlimit64 => {
            // The new limit is read first (EFAULT), then the target found.
            let new = if a[2] != 0 {
                Some(get_u64s::<2>(a[2])?)
            } else {
                None
            };
            if a[0] as i32 != 0 && a[0] as i32 as i64 != i64::from(p.pid) {
                return Err(Errno::ESRCH);
            }
            let old = prlimit(p, a[1], new)?;
            if a[3] != 0 {
                put_words(a[3], &old)?;
            }
            Ok(0)
        }
        Getrandom => {
            // GRND_NONBLOCK, GRND_RANDOM, GRND_INSECURE (not the last two
            // together).
            if a[2] & !7 != 0 || a[2] & 6 == 6 {
                return Err(Errno::EINVAL);
            }
            let len = a[1].min(1 << 16) as usize;
            let mut buf = vec![0u8; len];
            fill_random(&mut buf);
            efault(arch::copy_to_user(a[0], &buf))?;
            Ok(len as u64)
        }
        Ioctl => {
            const FIONREAD: u64 = 0x541b;
            let f = p.file(fd(a[0]))?;
            match (&f.node, a[1] as u32 as u64) {
                (vfs::Node::Pipe(end), FIONREAD) => {
                    let n = end.pipe.available() as u32;
                    efault(arch::copy_to_user(a[2], &n.to_le_bytes()))?;
                    Ok(0)
                }
                _ => Err(Errno::ENOTTY),
            }
        }
        Mount => sys_mount(p, a[1], a[2], a[4]),
        Reboot => {
            if a[0] != 0xfee1_dead
                || !matches!(a[1], 672_274_793 | 85_072_278 | 369_367_448 | 537_993_216)
            {
                return Err(Errno::EINVAL);
            }
            match a[2] {
                0x4321_fedc | 0xcdef_0123 | 0x0123_4567 => {
                    println!("reboot: power off requested by pid {}", p.pid);
                    crate::perf::profile::dump();
                    arch::exit(true);
                }
                _ => Err(Errno::EINVAL),
            }
        }
        Kill => {
            let pid = a[0] as i32;
            if pid <= 0 || process::find(pid as u32).is_none() {
                return Err(Errno::ESRCH);
            }
            match a[1] as i32 {
                0 => Ok(0),
                // To itself: the default action or nothing (see
                // `idcalls::signal_self`); to another process: not yet.
                sig @ 1..=64 if pid as u32 == p.pid => {
                    let blocked =
                        process::sigmask().load(Ordering::Relaxed) & (1 << (sig - 1)) != 0;
                    idcalls::signal_self(p, sig, blocked)
                }
                1..=64 => Err(Errno::EPERM),
                _ => Err(Errno::EINVAL),
            }
        }
        Tkill | Tgkill => {
            // tkill(tid, sig) / tgkill(tgid, tid, sig).
            let (tgid, tid, sig) = if s == Tkill {
                (None, a[0] as i32, a[1] as i32)
            } else {
                (Some(a[0] as i32), a[1] as i32, a[2] as i32)
            };
            if tid <= 0 || tgid.is_some_and(|g| g <= 0) {
                return Err(Errno::EINVAL);
            }
            if !(0..=64).contains(&sig) {
                return Err(Errno::EINVAL);
            }
            let (_, q) = process::find_thread(tid as u32).ok_or(Errno::ESRCH)?;
            if tgid.is_some_and(|g| g as u32 != q.pid) {
                return Err(Errno::ESRCH);
            }
            match sig {
                0 => Ok(0),
                // A thread of the caller's group: the signal acts on the
                // group (dispositions are shared; a fatal one ends every
                // thread); to another process: not yet.
                _ if q.pid == p.pid => {
                    idcalls::signal_self(p, sig, process::blocks(p, tid as u32, sig))
                }
                _ => Err(Errno::EPERM),
            }
        }
    }
}

/// The `clone` flags this kernel implements: a thread (`CLONE_VM |
/// CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD`, what
/// `pthread_create` passes, plus `CLONE_SYSVSEM`, which has nothing to
/// share here) or a fork, each with the TLS and TID options.  Combinations
/// Linux refuses get its EINVAL; others it would accept but this kernel
/// does not have (namespaces, `CLONE_VM` without `CLONE_THREAD`, ...) get
/// EINVAL too, rather than a clone that ignores what was asked.
fn sys_clone(p: &Arc<Process>, frame: &arch::UserFrame, a: [u64; 6]) -> R {
    use process::*;
    const CLONE_NEWNS: u64 = 0x2_0000;
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    const CLONE_PARENT: u64 = 0x8000;
    const CLONE_PIDFD: u64 = 0x1000;
    // Nothing to share here (no System V semaphores), accepted.
    const CLONE_SYSVSEM: u64 = 0x4_0000;
    let flags = a[0];
    // The argument order differs: x86-64 passes (flags, stack, ptid, ctid,
    // tls), arm64 (flags, stack, ptid, tls, ctid).
    let (child_tid, tls) = if cfg!(target_arch = "x86_64") {
        (a[3], a[4])
    } else {
        (a[4], a[3])
    };
    let args = CloneArgs {
        flags,
        stack: a[1],
        parent_tid: a[2],
        child_tid,
        tls,
    };
    // Linux's own refusals.
    if flags & (CLONE_NEWNS | CLONE_FS) == CLONE_NEWNS | CLONE_FS
        || flags & (CLONE_NEWUSER | CLONE_FS) == CLONE_NEWUSER | CLONE_FS
        || (flags & CLONE_THREAD != 0 && flags & CLONE_SIGHAND == 0)
        || (flags & CLONE_SIGHAND != 0 && flags & CLONE_VM == 0)
        || (flags & CLONE_PARENT != 0 && p.pid == 1)
        || flags & (CLONE_PIDFD | CLONE_PARENT_SETTID) == CLONE_PIDFD | CLONE_PARENT_SETTID
    {
        return Err(Errno::EINVAL);
    }
    let tid_opts = CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID;
    let thread = CLONE_THREAD_SET;
    if flags & thread == thread && flags & !(0xff | thread | CLONE_SYSVSEM | tid_opts) == 0 {
        return clone_thread(p, frame, &args).map(u64::from);
    }
    // Fork: the exit signal in the low byte plus the TID options.
    if flags & !(0xff | tid_opts) != 0 {
        return Err(Errno::EINVAL);
    }
    fork(p, frame, &args).map(u64::from)
}

/// `fork`/`vfork`: a clone with no options.
const FORK: process::CloneArgs = process::CloneArgs {
    flags: 17,
    stack: 0,
    parent_tid: 0,
    child_tid: 0,
    tls: 0,
};

/// Linux's `access_ok`: `[addr, addr + len)` lies below the top of user
/// space (whether it is mapped is found out by the copy).
pub(crate) fn access_ok(addr: u64, len: u64) -> bool {
    addr.checked_add(len).is_some_and(|e| e <= arch::USER_TOP)
}

/// A file descriptor argument (`unsigned int` in Linux's prototypes).
fn fd(v: u64) -> u64 {
    u64::from(v as u32)
}

fn sys_wait4(p: &Process, pid: i64, status: u64, options: u64, rusage: u64) -> R {
    const WNOHANG: u64 = 1;
    if options & !(WNOHANG | 2 | 8 | 0x4000_0000 | 0x8000_0000 | 0x2000_0000) != 0 {
        return Err(Errno::EINVAL);
    }
    if pid == 0 || pid < -1 {
        // Process groups: everyone is in one group here.
    }
    if pid == i64::from(i32::MIN) {
        return Err(Errno::ESRCH);
    }
    let pid = if pid <= 0 { -1 } else { pid };
    match process::wait_child(p, pid, options & WNOHANG != 0)? {
        None => Ok(0),
        Some((cpid, st, (min, maj))) => {
            if status != 0 {
                efault(arch::copy_to_user(status, &st.to_le_bytes()))?;
            }
            if rusage != 0 {
                // The child's (and its reaped children's) fault counts;
                // the times stay zero.
                let mut ru = [0u64; 18];
                ru[8] = min;
                ru[9] = maj;
                put_words(rusage, &ru)?;
            }
            Ok(u64::from(cpid))
        }
    }
}

/// Linux's `RLIM_NLIMITS`.
const RLIM_NLIMITS: u64 = 16;
const RLIMIT_STACK: u64 = 3;
const RLIMIT_NOFILE: u64 = 7;
const RLIMIT_MEMLOCK: u64 = 8;

/// Linux's `do_prlimit` on the caller: returns the old `(cur, max)` of
/// `resource` and, with `new`, sets it: EINVAL for an unknown resource or
/// a soft limit above the hard one, EPERM for raising the hard limit
/// without `CAP_SYS_RESOURCE` (uid 0).  Only `RLIMIT_MEMLOCK` is kept and
/// applied (mirrored into the address space's mlock rights); the others
/// report fixed values and a new value is checked but not kept.
fn prlimit(p: &Process, resource: u64, new: Option<[u64; 2]>) -> Result<[u64; 2], Errno> {
    if resource >= RLIM_NLIMITS {
        return Err(Errno::EINVAL);
    }
    if let Some([cur, max]) = new
        && cur > max
    {
        return Err(Errno::EINVAL);
    }
    let root = p.uid.load(Ordering::Relaxed) == 0;
    if resource != RLIMIT_MEMLOCK {
        return Ok(match resource {
            RLIMIT_STACK => [8 << 20, u64::MAX],
            RLIMIT_NOFILE => [1024, 4096],
            _ => [u64::MAX, u64::MAX],
        });
    }
    let mut lim = p.rlimit_memlock.lock();
    let old = *lim;
    if let Some([cur, max]) = new {
        if max > old.1 && !root {
            return Err(Errno::EPERM);
        }
        *lim = (cur, max);
        drop(lim);
        set_mlock_rights(p);
    }
    Ok([old.0, old.1])
}

/// Mirror the caller's `RLIMIT_MEMLOCK` and `CAP_IPC_LOCK` (uid 0) into
/// its address space, which applies them.
fn set_mlock_rights(p: &Process) {
    let r = mm::vma::MlockRights {
        limit: p.rlimit_memlock.lock().0,
        cap_ipc_lock: p.uid.load(Ordering::Relaxed) == 0,
    };
    let _ = p.with_mm(|mm| mm.set_mlock_rights(r));
}

/// `setuid(uid)`: as root, sets the (only) uid and, when it is not 0,
/// drops root's capabilities; otherwise only the current uid is allowed
/// (EPERM).  `-1` is EINVAL.  This kernel keeps one uid for real,
/// effective and saved.
fn sys_setuid(p: &Process, uid: u64) -> R {
    let uid = uid as u32;
    if uid == u32::MAX {
        return Err(Errno::EINVAL);
    }
    let cur = p.uid.load(Ordering::Relaxed);
    if cur != 0 && uid != cur {
        return Err(Errno::EPERM);
    }
    p.uid.store(uid, Ordering::Relaxed);
    set_mlock_rights(p);
    Ok(0)
}

/// `prctl`: the process name and the THP switch; any other option is
/// EINVAL, as Linux answers options it does not know.
fn sys_prctl(p: &Process, a: [u64; 6]) -> R {
    const PR_SET_NAME: u64 = 15;
    const PR_GET_NAME: u64 = 16;
    const PR_SET_THP_DISABLE: u64 = 41;
    const PR_GET_THP_DISABLE: u64 = 42;
    /// `TASK_COMM_LEN`: 15 bytes and the terminator.
    const COMM: usize = 16;
    match a[0] as i32 as i64 as u64 {
        PR_SET_NAME => {
            // Linux copies up to 15 bytes, stopping at the terminator
            // (without reading past it, so a name at the end of a mapping
            // works).
            let mut name = Vec::with_capacity(COMM);
            let mut b = [0u8; 1];
            while name.len() < COMM - 1 {
                efault(arch::copy_from_user(&mut b, a[1] + name.len() as u64))?;
                if b[0] == 0 {
                    break;
                }
                name.push(b[0]);
            }
            *p.name.lock() = String::from_utf8_lossy(&name).into_owned();
            Ok(0)
        }
        PR_GET_NAME => {
            let mut out = [0u8; COMM];
            let name = p.name.lock();
            let n = name.len().min(COMM - 1);
            out[..n].copy_from_slice(&name.as_bytes()[..n]);
            drop(name);
            efault(arch::copy_to_user(a[1], &out))?;
            Ok(0)
        }
        // Linux's MMF_DISABLE_THP: no THP of any size in this process
        // (inherited over fork); the unused arguments must be zero.
        PR_SET_THP_DISABLE => {
            if a[2] != 0 || a[3] != 0 || a[4] != 0 {
                return Err(Errno::EINVAL);
            }
            p.with_mm(|mm| mm.set_thp_disabled(a[1] != 0))?;
            Ok(0)
        }
        PR_GET_THP_DISABLE => {
            if a[1] != 0 || a[2] != 0 || a[3] != 0 || a[4] != 0 {
                return Err(Errno::EINVAL);
            }
            Ok(u64::from(p.with_mm(|mm| mm.thp_disabled())?))
        }
        _ => Err(Errno::EINVAL),
    }
}

#[cfg(target_arch = "x86_64")]
fn sys_arch_prctl(_p: &Process, code: u64, addr: u64) -> R {
    match code {
        0x1002 => {
            if addr >= arch::USER_TOP {
                return Err(Errno::EPERM);
            }
            arch::set_user_tls(addr);
            Ok(0)
        }
        0x1003 => {
            put_words(addr, &[arch::user_tls()])?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

#[cfg(target_arch = "aarch64")]
fn sys_arch_prctl(_p: &Process, _code: u64, _addr: u64) -> R {
    Err(Errno::ENOSYS)
}

/// `mremap`: `Mm::mremap` (Linux's argument rules and errno values).
fn sys_mremap(p: &Process, a: [u64; 6]) -> R {
    // Argument rules, VMA changes and page-table moves are all `Mm::mremap`'s
    // (Linux's semantics and errno values).
    // The flags are parsed first, as Linux checks them first.
    p.with_mm(|mm| {
        MremapFlags::from_raw(a[3]).and_then(|flags| mm.mremap(a[0], a[1], a[2], flags, a[4]))
    })?
}

static RNG: AtomicU64 = AtomicU64::new(0);

/// Fill `buf` with pseudo-random bytes (xorshift, seeded from the clock;
/// not cryptographic).
pub fn fill_random(buf: &mut [u8]) {
    let mut x = RNG.load(Ordering::Relaxed);
    if x == 0 {
        x = arch::now_ns() | 1;
    }
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(arch::now_ns());
        let b = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    RNG.store(x | 1, Ordering::Relaxed);
}
