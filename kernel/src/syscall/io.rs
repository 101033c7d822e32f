//! Reading and writing files: read/write and their positional and vector
//! forms, openat, and the `stat` layout.

use super::*;

pub(super) fn sys_read(p: &Process, fd: u64, buf: u64, len: u64) -> R {
    let f = p.file(fd)?;
    read_to_user(&f, buf, len, |k| f.read(k))
}

/// What `read` and `pread64` share after their own checks: EBADF for a
/// file not open for reading, then the whole destination checked (as
/// asked for, before the 1 MiB clamp) before `get` consumes input into a
/// kernel buffer that is copied out.
pub(super) fn read_to_user(
    f: &vfs::File,
    buf: u64,
    len: u64,
    get: impl FnOnce(&mut [u8]) -> Result<usize, Errno>,
) -> R {
    if !f.readable {
        return Err(Errno::EBADF);
    }
    if !access_ok(buf, len) {
        return Err(Errno::EFAULT);
    }
    let mut k = vec![0u8; len.min(1 << 20) as usize];
    let n = get(&mut k)?;
    efault(arch::copy_to_user(buf, &k[..n]))?;
    Ok(n as u64)
}

/// `pread64`: as `read`, at an offset, leaving the file position alone.
/// Linux's order: a negative offset (EINVAL), the descriptor (EBADF), a
/// file without positions (ESPIPE), then as `read`.
pub(super) fn sys_pread(p: &Process, fd: u64, buf: u64, len: u64, off: u64) -> R {
    if (off as i64) < 0 {
        return Err(Errno::EINVAL);
    }
    let f = p.file(fd)?;
    if !f.positional() {
        return Err(Errno::ESPIPE);
    }
    read_to_user(&f, buf, len, |k| f.pread(off, k))
}

/// `pwrite64(fd, buf, len, off)`: as `pread64`'s checks, then the write
/// at `off` without moving the file position.
pub(super) fn sys_pwrite(p: &Process, fd: u64, buf: u64, len: u64, off: u64) -> R {
    if (off as i64) < 0 {
        return Err(Errno::EINVAL);
    }
    let f = p.file(fd)?;
    if !f.writable {
        return Err(Errno::EBADF);
    }
    if !f.positional() {
        return Err(Errno::ESPIPE);
    }
    if !access_ok(buf, len) {
        return Err(Errno::EFAULT);
    }
    let mut k = vec![0u8; len.min(1 << 20) as usize];
    efault(arch::copy_from_user(&mut k, buf))?;
    f.pwrite(off, &k).map(|n| n as u64)
}

pub(super) fn sys_write(p: &Process, fd: u64, buf: u64, len: u64) -> R {
    let f = p.file(fd)?;
    if !f.writable {
        return Err(Errno::EBADF);
    }
    if !access_ok(buf, len) {
        return Err(Errno::EFAULT);
    }
    let len = len.min(1 << 20) as usize;
    let mut k = vec![0u8; len];
    efault(arch::copy_from_user(&mut k, buf))?;
    let r = f.write(&k).map(|n| n as u64);
    if r == Err(Errno::EPIPE) {
        // `sigpipe` may not return: nothing of this call may stay alive.
        drop(k);
        drop(f);
        sigpipe(p);
    }
    r
}

/// A write to a pipe with no reader: SIGPIPE, whose default action ends
/// the process (as Linux; ignored or blocked, the write fails with EPIPE).
pub(super) fn sigpipe(p: &Process) {
    const SIGPIPE: i32 = 13;
    let blocked = process::sigmask().load(Ordering::Relaxed) & (1 << (SIGPIPE - 1)) != 0;
    if idcalls::is_default(p, SIGPIPE) && !blocked {
        process::exit_current(SIGPIPE);
    }
}

pub(super) fn sys_rwv(p: &Process, write: bool, fd: u64, iov: u64, cnt: u64) -> R {
    // Linux's order: the descriptor and its mode, the count, then every
    // iovec (a negative length is EINVAL, a range above user space EFAULT)
    // before any data moves.
    let f = p.file(fd)?;
    if !(if write { f.writable } else { f.readable }) {
        return Err(Errno::EBADF);
    }
    if cnt > 1024 {
        return Err(Errno::EINVAL);
    }
    let mut iovs = Vec::with_capacity(cnt as usize);
    for i in 0..cnt {
        let [base, len] = get_u64s::<2>(iov.wrapping_add(16 * i))?;
        if (len as i64) < 0 {
            return Err(Errno::EINVAL);
        }
        if !access_ok(base, len) {
            return Err(Errno::EFAULT);
        }
        iovs.push((base, len));
    }
    let mut total = 0u64;
    for (base, len) in iovs {
        if len == 0 {
            continue;
        }
        let n = if write {
            sys_write(p, fd, base, len)?
        } else {
            sys_read(p, fd, base, len)?
        };
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

pub(super) fn sys_openat(p: &Process, dirfd: u64, path: u64, flags: u64, mode: u64) -> R {
    let path = get_str(path)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    if !path.starts_with('/') && dirfd as i32 != -100 {
        p.file(dirfd)?;
    }
    let f = vfs::open_mode(p, &path, flags, mode as u32 & 0o7777)?;
    p.add_file(Arc::new(f))
}

/// `struct stat` in each architecture's layout.
pub(super) fn write_stat(addr: u64, mode: u32, size: u64) -> R {
    let mut st = [0u8; 144];
    let put32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |b: &mut [u8], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    let len = if cfg!(target_arch = "x86_64") {
        // dev, ino, nlink(8), mode(4), uid, gid, pad, rdev, size@48, blksize@56, blocks@64
        put64(&mut st, 8, 1);
        put64(&mut st, 16, 1);
        put32(&mut st, 24, mode);
        put64(&mut st, 48, size);
        put64(&mut st, 56, 4096);
        put64(&mut st, 64, size.div_ceil(512));
        144
    } else {
        // dev, ino, mode(4)@16, nlink(4)@20, uid, gid, rdev@32, pad, size@48, blksize(4)@56, pad, blocks@64
        put64(&mut st, 8, 1);
        put32(&mut st, 16, mode);
        put32(&mut st, 20, 1);
        put64(&mut st, 48, size);
        put32(&mut st, 56, 4096);
        put64(&mut st, 64, size.div_ceil(512));
        128
    };
    efault(arch::copy_to_user(addr, &st[..len]))?;
    Ok(0)
}

/// A path argument of the `*at` calls: absolute, or relative to the
/// working directory (`AT_FDCWD`); another directory descriptor is only
/// checked to be open (paths are resolved from the working directory).
fn at_path(p: &Process, dirfd: u64, path: u64) -> Result<String, Errno> {
    let path = get_str(path)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    if !path.starts_with('/') && dirfd as i32 != -100 {
        p.file(dirfd)?;
    }
    Ok(path)
}

/// `unlinkat(dirfd, path, flags)` (`unlink` is dirfd `AT_FDCWD`, flags 0).
pub(super) fn sys_unlinkat(p: &Process, dirfd: u64, path: u64, flags: u64) -> R {
    const AT_REMOVEDIR: u64 = 0x200;
    if flags & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let path = at_path(p, dirfd, path)?;
    if flags & AT_REMOVEDIR != 0 {
        vfs::rmdir(p, &path)?;
    } else {
        vfs::unlink(p, &path)?;
    }
    Ok(0)
}

/// `mkdirat(dirfd, path, mode)`.
pub(super) fn sys_mkdirat(p: &Process, dirfd: u64, path: u64, mode: u64) -> R {
    let path = at_path(p, dirfd, path)?;
    vfs::mkdir(p, &path, mode as u32 & 0o7777)?;
    Ok(0)
}

/// `struct statfs` (120 bytes on both arches, every field a long but
/// `f_fsid`'s two ints) for a file system of type `magic` with the
/// tmpfs figures `t` (Linux's `shmem_statfs`; zeros elsewhere).
fn write_statfs(addr: u64, magic: u64, t: crate::fs::tmpfs::StatFs) -> R {
    const ST_VALID: u64 = 0x20;
    let fields: [u64; 15] = [
        magic, 4096, t.blocks, t.bfree, t.bfree, t.files, t.ffree, 0,    // f_fsid
        255,  // f_namelen
        4096, // f_frsize
        ST_VALID, 0, 0, 0, 0,
    ];
    let mut b = [0u8; 120];
    for (k, v) in fields.iter().enumerate() {
        b[k * 8..k * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    efault(arch::copy_to_user(addr, &b))?;
    Ok(0)
}

/// The file system type (`f_type`) of an absolute path that is not on a
/// tmpfs: the pseudo file systems by their mount points, else the
/// initramfs root (Linux's rootfs is a ramfs without a tmpfs).
fn magic_of(path: &str) -> u64 {
    const PROC_SUPER_MAGIC: u64 = 0x9fa0;
    const SYSFS_MAGIC: u64 = 0x6265_6572;
    const DEBUGFS_MAGIC: u64 = 0x6462_6720;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    let under = |m: &str| path == m || path.strip_prefix(m).is_some_and(|r| r.starts_with('/'));
    if under("/sys/kernel/debug") {
        DEBUGFS_MAGIC
    } else if under("/sys") {
        SYSFS_MAGIC
    } else if under("/proc") {
        PROC_SUPER_MAGIC
    } else {
        RAMFS_MAGIC
    }
}

/// `statfs(path, buf)`: ENOENT (and the rest of `open`'s errors) for a
/// path that does not resolve.
pub(super) fn sys_statfs(p: &Process, path: u64, buf: u64) -> R {
    let path = vfs::absolute(p, &get_str(path)?);
    vfs::open(p, &path, 0)?;
    match crate::fs::tmpfs::statfs(&path) {
        Some(t) => write_statfs(buf, crate::fs::tmpfs::TMPFS_MAGIC, t),
        None => write_statfs(buf, magic_of(&path), Default::default()),
    }
}

/// `fstatfs(fd, buf)`: a tmpfs file reports its mount's figures, a memfd
/// Linux's internal shmem mount's (tmpfs, unlimited: zeros).
pub(super) fn sys_fstatfs(p: &Process, fd: u64, buf: u64) -> R {
    const PIPEFS_MAGIC: u64 = 0x5049_5045;
    let f = p.file(fd)?;
    match &f.node {
        vfs::Node::Memfd(obj) => write_statfs(
            buf,
            crate::fs::tmpfs::TMPFS_MAGIC,
            crate::fs::tmpfs::StatFs::of(obj.quota().map(|q| &**q)),
        ),
        vfs::Node::Dir(path) => match crate::fs::tmpfs::statfs(path) {
            Some(t) => write_statfs(buf, crate::fs::tmpfs::TMPFS_MAGIC, t),
            None => write_statfs(buf, magic_of(path), Default::default()),
        },
        vfs::Node::Pipe(_) => write_statfs(buf, PIPEFS_MAGIC, Default::default()),
        _ => write_statfs(buf, magic_of("/"), Default::default()),
    }
}

/// `mount(source, target, fstype, flags, data)`: `tmpfs` mounts one (its
/// options in `data`); the pseudo file systems Linux's init mounts are
/// accepted as already there.
pub(super) fn sys_mount(p: &Process, target: u64, fstype: u64, data: u64) -> R {
    let fstype = if fstype == 0 {
        String::new()
    } else {
        get_str(fstype)?
    };
    match fstype.as_str() {
        "sysfs" | "proc" | "debugfs" | "devtmpfs" => Ok(0),
        "tmpfs" => {
            let target = vfs::absolute(p, &get_str(target)?);
            let opts = if data == 0 {
                String::new()
            } else {
                get_str(data)?
            };
            let is_dir = vfs::open(p, &target, vfs::O_DIRECTORY).is_ok();
            crate::fs::tmpfs::mount(&target, &opts, is_dir)?;
            Ok(0)
        }
        _ => Err(Errno::ENODEV),
    }
}

/// `umount2(target, flags)`: tmpfs mounts only.
pub(super) fn sys_umount2(p: &Process, target: u64, flags: u64) -> R {
    if flags & !0xf != 0 {
        return Err(Errno::EINVAL);
    }
    let target = vfs::absolute(p, &get_str(target)?);
    crate::fs::tmpfs::umount(&target)?;
    Ok(0)
}
