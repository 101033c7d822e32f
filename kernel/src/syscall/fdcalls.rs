//! System calls on descriptors and paths beyond open/read/write: `dup*`,
//! `fcntl`, `pipe2`, `getdents64`, `getcwd`/`chdir`, `faccessat`,
//! `readlinkat`.  Linux's argument checks and errno values, in Linux's
//! order.
use crate::arch;
use crate::fs::vfs::{self, File, Node};
use crate::proc::process::Process;
use crate::syscall::{R, access_ok, efault, get_str};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;
use mm::abi::errno::Errno;

/// `O_CLOEXEC` (the same on both architectures).
const O_CLOEXEC: u64 = 0o2000000;
/// `O_DIRECT` (packet-mode pipes): accepted and ignored.
use crate::fs::vfs::O_DIRECT;
/// `O_LARGEFILE`, which `F_GETFL` shows on every 64-bit open file.
#[cfg(target_arch = "x86_64")]
const O_LARGEFILE: u64 = 0o100000;
#[cfg(target_arch = "aarch64")]
const O_LARGEFILE: u64 = 0o400000;

pub fn dup(p: &Process, fd: u64) -> R {
    let f = p.file(fd)?;
    p.add_file(f)
}

/// `dup2` (x86 only) and `dup3`.
pub fn dup3(p: &Process, old: u64, new: u64, flags: u64, is_dup2: bool) -> R {
    if !is_dup2 && flags & !O_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    if old == new {
        if is_dup2 {
            p.file(old)?;
            return Ok(new);
        }
        return Err(Errno::EINVAL);
    }
    let f = p.file(old)?;
    let fd = p.install_at(f, new)?;
    p.set_cloexec(fd, flags & O_CLOEXEC != 0);
    Ok(fd)
}

pub fn fcntl(p: &Process, fd: u64, cmd: u64, arg: u64) -> R {
    const F_DUPFD: u32 = 0;
    const F_GETFD: u32 = 1;
    const F_SETFD: u32 = 2;
    const F_GETFL: u32 = 3;
    const F_SETFL: u32 = 4;
    const F_DUPFD_CLOEXEC: u32 = 1030;
    const F_ADD_SEALS: u32 = 1033;
    const F_GET_SEALS: u32 = 1034;
    const FD_CLOEXEC: u64 = 1;
    let f = p.file(fd)?;
    match cmd as u32 {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let new = p.add_file_from(f, u64::from(arg as u32))?;
            p.set_cloexec(new, cmd as u32 == F_DUPFD_CLOEXEC);
            Ok(new)
        }
        F_GETFD => Ok(u64::from(p.cloexec_of(fd))),
        F_SETFD => {
            p.set_cloexec(fd, arg & FD_CLOEXEC != 0);
            Ok(0)
        }
        F_GETFL => {
            let acc = match (f.readable, f.writable) {
                (true, true) => vfs::O_RDWR,
                (false, true) => vfs::O_WRONLY,
                _ => 0,
            };
            Ok(acc | u64::from(f.status.load(Relaxed)) | O_LARGEFILE)
        }
        F_SETFL => {
            let keep = f.status.load(Relaxed) & !vfs::SETFL_MASK;
            f.status
                .store(keep | (arg as u32 & vfs::SETFL_MASK), Relaxed);
            Ok(0)
        }
        // Linux's memfd_fcntl: EINVAL on a file that cannot be sealed.
        F_ADD_SEALS | F_GET_SEALS => match &f.node {
            vfs::Node::Memfd(obj) if cmd as u32 == F_GET_SEALS => Ok(u64::from(obj.seals())),
            vfs::Node::Memfd(obj) => crate::fs::memfd::add_seals(&f, obj, arg as u32).map(|_| 0),
            _ => Err(Errno::EINVAL),
        },
        _ => Err(Errno::EINVAL),
    }
}

/// `pipe2(fds, flags)` (and `pipe(fds)` with no flags): the read end at
/// `fds[0]`, the write end at `fds[1]`.
pub fn pipe2(p: &Process, fds: u64, flags: u64) -> R {
    if flags & !(O_CLOEXEC | vfs::O_NONBLOCK as u64 | O_DIRECT) != 0 {
        return Err(Errno::EINVAL);
    }
    let (r, w) = File::pipe(flags as u32 & vfs::O_NONBLOCK);
    let rfd = p.add_file(Arc::new(r))?;
    let wfd = match p.add_file(Arc::new(w)) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = p.close(rfd);
            return Err(e);
        }
    };
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&(rfd as u32).to_le_bytes());
    out[4..].copy_from_slice(&(wfd as u32).to_le_bytes());
    if let Err(e) = efault(arch::copy_to_user(fds, &out)) {
        let _ = p.close(rfd);
        let _ = p.close(wfd);
        return Err(e);
    }
    for fd in [rfd, wfd] {
        p.set_cloexec(fd, flags & O_CLOEXEC != 0);
    }
    Ok(0)
}

/// `getdents64(fd, buf, count)`: `struct linux_dirent64` records (inode,
/// offset of the next one, length, type, name) from the directory's
/// position, an entry index.  EINVAL if the first record does not fit.
pub fn getdents64(p: &Process, fd: u64, buf: u64, count: u64) -> R {
    let f = p.file(fd)?;
    let Node::Dir(path) = &f.node else {
        return Err(Errno::ENOTDIR);
    };
    if !access_ok(buf, count) {
        return Err(Errno::EFAULT);
    }
    let entries = vfs::list_dir(path)?;
    let count = count.min(1 << 16) as usize;
    let mut pos = f.pos.lock();
    let mut out: Vec<u8> = Vec::new();
    let mut i = *pos as usize;
    while let Some((name, t)) = entries.get(i) {
        let reclen = (19 + name.len() + 1).next_multiple_of(8);
        if out.len() + reclen > count {
            if out.is_empty() {
                return Err(Errno::EINVAL);
            }
            break;
        }
        let start = out.len();
        out.extend_from_slice(&(i as u64 + 1).to_le_bytes()); // d_ino
        out.extend_from_slice(&(i as u64 + 1).to_le_bytes()); // d_off
        out.extend_from_slice(&(reclen as u16).to_le_bytes());
        out.push(*t);
        out.extend_from_slice(name.as_bytes());
        out.resize(start + reclen, 0);
        i += 1;
    }
    efault(arch::copy_to_user(buf, &out))?;
    *pos = i as u64;
    Ok(out.len() as u64)
}

/// `getcwd(buf, size)`: the path and its terminator; ERANGE if it does
/// not fit.  Returns the length with the terminator, as the system call
/// does.
pub fn getcwd(p: &Process, buf: u64, size: u64) -> R {
    let mut cwd = p.cwd.lock().clone().into_bytes();
    cwd.push(0);
    if (cwd.len() as u64) > size {
        return Err(Errno::ERANGE);
    }
    efault(arch::copy_to_user(buf, &cwd))?;
    Ok(cwd.len() as u64)
}

/// `chdir(path)` / `fchdir(fd)`: ENOENT if missing, ENOTDIR if not a
/// directory.
pub fn chdir(p: &Process, path: Option<u64>, fd: u64) -> R {
    let f = match path {
        Some(a) => {
            let path = get_str(a)?;
            if path.is_empty() {
                return Err(Errno::ENOENT);
            }
            Arc::new(vfs::open(p, &path, 0)?)
        }
        None => p.file(fd)?,
    };
    let Node::Dir(dir) = &f.node else {
        return Err(Errno::ENOTDIR);
    };
    *p.cwd.lock() = dir.clone();
    Ok(0)
}

/// `faccessat(dirfd, path, mode)` for root: 0 if `path` exists, except
/// EROFS for write access to the initramfs and EACCES for execute access
/// to a file with no execute bit.
pub fn faccessat(p: &Process, dirfd: u64, path: u64, mode: u64, flags: u64) -> R {
    const W_OK: u64 = 2;
    const X_OK: u64 = 1;
    // AT_SYMLINK_NOFOLLOW, AT_EACCESS, AT_EMPTY_PATH.
    if mode & !7 != 0 || flags & !(0x100 | 0x200 | 0x1000) != 0 {
        return Err(Errno::EINVAL);
    }
    let path = get_str(path)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    if !path.starts_with('/') && dirfd as i32 != -100 {
        p.file(dirfd)?;
    }
    let (st_mode, _) = vfs::stat_path(p, &path)?;
    let abs = vfs::absolute(p, &path);
    let in_initramfs = crate::fs::cpio::lookup(&abs).is_some();
    if mode & W_OK != 0 && in_initramfs {
        return Err(Errno::EROFS);
    }
    if mode & X_OK != 0 && st_mode & 0o170000 != 0o040000 && st_mode & 0o111 == 0 {
        return Err(Errno::EACCES);
    }
    Ok(0)
}

/// `readlinkat(dirfd, path, buf, size)`: the links this kernel has are
/// `/proc/self` (the caller's pid) and `/proc/<pid>/exe`; anything else
/// that exists is not a link (EINVAL).
pub fn readlinkat(p: &Process, dirfd: u64, path: u64, buf: u64, size: u64) -> R {
    let path = get_str(path)?;
    // `int bufsiz`.
    if (size as i32) <= 0 {
        return Err(Errno::EINVAL);
    }
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    if !path.starts_with('/') && dirfd as i32 != -100 {
        p.file(dirfd)?;
    }
    let abs = vfs::absolute(p, &path);
    let target: String = if abs == "/proc/self" {
        alloc::format!("{}", p.pid)
    } else if let Some(who) = abs
        .strip_prefix("/proc/")
        .and_then(|r| r.strip_suffix("/exe"))
    {
        let t = if who == "self" {
            crate::proc::process::find(p.pid)
        } else {
            who.parse().ok().and_then(crate::proc::process::find)
        }
        .ok_or(Errno::ENOENT)?;
        t.exe.lock().clone()
    } else {
        vfs::stat_path(p, &path)?;
        return Err(Errno::EINVAL);
    };
    let n = target.len().min(size as u32 as usize);
    efault(arch::copy_to_user(buf, &target.as_bytes()[..n]))?;
    Ok(n as u64)
}
