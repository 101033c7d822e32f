//! Private mappings of tmpfs files and memfds (copy on write), as Linux
//! 6.12: writes through a `MAP_PRIVATE` mapping never reach the file, a
//! shared mapping or another process; `pwrite` shows through pages not
//! yet copied; fork, `MADV_DONTNEED`, mprotect and truncate behave as
//! Linux's; `MADV_REMOVE` punches a hole through a shared mapping (with
//! Linux's errnos elsewhere); `fallocate` preallocates, charged to the
//! mount's `size=` (ENOSPC, rolled back, when it does not fit).

use super::*;
use mthp_user::Msg;

const AT_FDCWD: usize = -100isize as usize;
const O_CREAT: usize = 0o100;
const O_EXCL: usize = 0o200;
const SIGBUS: i32 = 7;
const SIGSEGV: i32 = 11;
const MADV_REMOVE: usize = 9;
const MFD_ALLOW_SEALING: usize = 2;
const F_ADD_SEALS: usize = 1033;
const F_SEAL_WRITE: usize = 8;
const FALLOC_FL_KEEP_SIZE: usize = 1;
const SEEK_END: usize = 2;
const P: usize = 4096;
const RW: usize = sys::PROT_READ | sys::PROT_WRITE;

fn e(r: isize) -> i32 {
    if r < 0 { -(r as i32) } else { 0 }
}

fn openat(path: &[u8], flags: usize) -> isize {
    sys::syscall(
        sys::nr::OPENAT,
        &[AT_FDCWD, path.as_ptr() as usize, flags, 0o600],
    )
}

fn unlink(path: &[u8]) -> isize {
    sys::syscall(sys::nr::UNLINKAT, &[AT_FDCWD, path.as_ptr() as usize, 0])
}

fn memfd(flags: usize) -> isize {
    sys::syscall(
        sys::nr::MEMFD_CREATE,
        &[c"mthp-private".as_ptr() as usize, flags],
    )
}

fn pwrite64(fd: isize, off: usize, v: u64) -> isize {
    let b = v.to_le_bytes();
    sys::syscall(
        sys::nr::PWRITE64,
        &[fd as usize, b.as_ptr() as usize, 8, off],
    )
}

fn pread64(fd: isize, off: usize) -> u64 {
    let mut b = [0u8; 8];
    let r = sys::syscall(
        sys::nr::PREAD64,
        &[fd as usize, b.as_mut_ptr() as usize, 8, off],
    );
    if r != 8 {
        return u64::MAX;
    }
    u64::from_le_bytes(b)
}

fn fallocate(fd: isize, mode: usize, off: usize, len: usize) -> isize {
    sys::syscall(sys::nr::FALLOCATE, &[fd as usize, mode, off, len])
}

fn file_size(fd: isize) -> isize {
    sys::syscall(sys::nr::LSEEK, &[fd as usize, 0, SEEK_END])
}

fn map(len: usize, prot: usize, flags: usize, fd: isize) -> Result<Mem, Msg> {
    let a = sys::mmap(0, len, prot, flags, fd, 0);
    ensure!(a > 0, "mmap(prot {prot:#x}, flags {flags:#x}): {a}");
    Ok(Mem {
        addr: a as usize,
        len,
    })
}

/// `Shmem:` of /proc/meminfo, exact: Linux keeps per-CPU deltas of its
/// counters, folded first through `vm/stat_refresh` (this kernel's are
/// exact already, and the file may be missing).
fn meminfo_shmem_kb() -> Option<u64> {
    let _ = mthp_user::write_file(b"/proc/sys/vm/stat_refresh\0", b"1");
    let mut buf = [0u8; 4096];
    let n = read_file(b"/proc/meminfo\0", &mut buf).ok()?;
    field(&buf[..n], b"\nShmem:")
}

/// An 8-page file whose page `k` starts with `0x1000 + k`.
fn fill(fd: isize) -> Result<(), Msg> {
    for k in 0..8 {
        let r = pwrite64(fd, k * P, 0x1000 + k as u64);
        ensure!(r == 8, "pwrite page {k}: {r}");
    }
    Ok(())
}

/// The copy-on-write rules on one file (`fd` open read-write, 8 pages).
fn cow_body(fd: isize) -> TestResult {
    fill(fd)?;
    let len = 8 * P;
    let sh = map(len, RW, sys::MAP_SHARED, fd)?;
    let pv = map(len, RW, sys::MAP_PRIVATE, fd)?;
    let r = cow_checks(fd, &sh, &pv);
    unmap(&sh);
    unmap(&pv);
    r
}

fn cow_checks(fd: isize, sh: &Mem, pv: &Mem) -> TestResult {
    ensure!(pv.peek64(0) == 0x1000, "private read {:#x}", pv.peek64(0));
    // pwrite shows through a page not yet copied...
    ensure!(pwrite64(fd, P, 0x2001) == 8, "pwrite");
    ensure!(pv.peek64(P) == 0x2001, "pwrite unseen: {:#x}", pv.peek64(P));
    // ...the private write reaches neither the file nor the shared mapping...
    pv.poke64(P, 0xaaa1);
    ensure!(
        pread64(fd, P) == 0x2001 && sh.peek64(P) == 0x2001,
        "private write leaked: file {:#x}, shared {:#x}",
        pread64(fd, P),
        sh.peek64(P)
    );
    // ...and later file writes do not show through the copy.
    ensure!(pwrite64(fd, P, 0x3001) == 8, "pwrite");
    ensure!(
        pv.peek64(P) == 0xaaa1,
        "copy changed to {:#x}",
        pv.peek64(P)
    );
    // A shared write shows through a page only read so far.
    let _ = pv.peek64(2 * P);
    sh.poke64(2 * P, 0x4002);
    ensure!(
        pv.peek64(2 * P) == 0x4002,
        "shared write unseen: {:#x}",
        pv.peek64(2 * P)
    );
    // A write to a page never touched copies the file's data.
    pv.poke(3 * P + 8, 0x77);
    ensure!(
        pv.peek64(3 * P) == 0x1003 && pread64(fd, 3 * P + 8) == 0,
        "cow of an untouched page: {:#x}, file {:#x}",
        pv.peek64(3 * P),
        pread64(fd, 3 * P + 8)
    );
    let anon = smaps_field(pv.addr, b"Anonymous:");
    ensure!(anon == Some(8), "smaps Anonymous {anon:?} kB, expected 8");
    // fork: the copies are the child's too; its writes stay its own.
    let st = in_child(|| {
        if pv.peek64(P) != 0xaaa1 || pv.peek64(4 * P) != 0x1004 {
            return 1;
        }
        pv.poke64(P, 0xbbb1);
        pv.poke64(4 * P, 0xbbb4);
        if pread64(fd, 4 * P) != 0x1004 || pv.peek64(P) != 0xbbb1 {
            return 2;
        }
        0
    })?;
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "child after fork: status {st:#x}"
    );
    ensure!(
        pv.peek64(P) == 0xaaa1 && pv.peek64(4 * P) == 0x1004,
        "child's writes seen: {:#x} {:#x}",
        pv.peek64(P),
        pv.peek64(4 * P)
    );
    // MADV_DONTNEED drops the copies: the file's data shows again.
    let r = sys::madvise(pv.addr, pv.len, sys::MADV_DONTNEED);
    ensure!(r == 0, "MADV_DONTNEED: {r}");
    ensure!(
        pv.peek64(P) == 0x3001 && pv.peek64(3 * P) == 0x1003,
        "after MADV_DONTNEED: {:#x} {:#x}",
        pv.peek64(P),
        pv.peek64(3 * P)
    );
    let anon = smaps_field(pv.addr, b"Anonymous:");
    ensure!(
        anon == Some(0),
        "smaps Anonymous {anon:?} kB after DONTNEED"
    );
    // Truncate: a copy past the new end goes too (SIGBUS), one before
    // it stays.
    pv.poke64(0, 0xccc0);
    pv.poke64(5 * P, 0xccc5);
    let r = sys::syscall(sys::nr::FTRUNCATE, &[fd as usize, 4 * P]);
    ensure!(r == 0, "ftruncate: {r}");
    let st = in_child(|| {
        let _ = pv.peek64(5 * P);
        0
    })?;
    ensure!(
        wifsignaled(st) && wtermsig(st) == SIGBUS,
        "read of a private copy past the end: status {st:#x}, expected SIGBUS"
    );
    ensure!(
        pv.peek64(0) == 0xccc0,
        "copy before the end: {:#x}",
        pv.peek64(0)
    );
    Ok(Outcome::Pass)
}

/// A private writable mapping of a tmpfs file (`/dev/shm`) and of a
/// memfd: copy on write, fork, `MADV_DONTNEED`, truncate; a file open
/// read-only maps `MAP_PRIVATE` writable, or read-only and then
/// `mprotect`ed writable, and copies; a write-sealed memfd maps
/// `MAP_PRIVATE` writable (shared writable stays EPERM).
pub(crate) fn shmem_private_cow() -> TestResult {
    let path = b"/dev/shm/mthp-private\0";
    let _ = unlink(path);
    let fd = openat(path, sys::O_RDWR | O_CREAT | O_EXCL);
    ensure!(fd >= 0, "open(O_CREAT): {fd}");
    let r = cow_body(fd);
    sys::close(fd as i32);
    if let Err(m) = r {
        let _ = unlink(path);
        fail!("tmpfs file: {}", m.as_str());
    }
    // Open read-only: private mappings only need read access.
    let r = read_only_file(path);
    let _ = unlink(path);
    r?;
    let fd = memfd(MFD_ALLOW_SEALING);
    ensure!(fd >= 0, "memfd_create: {fd}");
    let r = cow_body(fd).and_then(|_| sealed_memfd(fd));
    sys::close(fd as i32);
    if let Err(m) = r {
        fail!("memfd: {}", m.as_str());
    }
    Ok(Outcome::Pass)
}

fn read_only_file(path: &[u8]) -> TestResult {
    let w = openat(path, sys::O_RDWR);
    ensure!(w >= 0, "reopen: {w}");
    // Empty it, then 8 pages of zeroes.
    let r0 = sys::syscall(sys::nr::FTRUNCATE, &[w as usize, 0]);
    let r = r0 | sys::syscall(sys::nr::FTRUNCATE, &[w as usize, 8 * P]);
    sys::close(w as i32);
    ensure!(r == 0, "ftruncate: {r}");
    let fd = openat(path, sys::O_RDONLY);
    ensure!(fd >= 0, "open O_RDONLY: {fd}");
    let res = (|| {
        ensure!(pwrite64(fd, 0, 1) < 0, "pwrite on O_RDONLY worked");
        let w = map(2 * P, RW, sys::MAP_PRIVATE, fd)?;
        w.poke64(0, 0xd0);
        let seen = w.peek64(0);
        unmap(&w);
        ensure!(seen == 0xd0, "private write read back {seen:#x}");
        let m = map(2 * P, sys::PROT_READ, sys::MAP_PRIVATE, fd)?;
        let before = m.peek64(0);
        let st = in_child(|| {
            m.poke64(0, 1);
            0
        })?;
        let r = sys::mprotect(m.addr, m.len, RW);
        if r == 0 {
            m.poke64(P, 0xd1);
        }
        let after = m.peek64(P);
        unmap(&m);
        ensure!(
            wifsignaled(st) && wtermsig(st) == SIGSEGV,
            "write to a PROT_READ private mapping: status {st:#x}"
        );
        ensure!(r == 0, "mprotect(PROT_WRITE) of a private mapping: {r}");
        ensure!(
            after == 0xd1 && before == 0 && pread64(fd, 0) == 0 && pread64(fd, P) == 0,
            "private writes: read {after:#x}, file {:#x} {:#x}",
            pread64(fd, 0),
            pread64(fd, P)
        );
        Ok(Outcome::Pass)
    })();
    sys::close(fd as i32);
    res
}

fn sealed_memfd(fd: isize) -> TestResult {
    let r = fcntl_seal(fd);
    ensure!(r == 0, "F_ADD_SEALS(F_SEAL_WRITE): {r}");
    let s = sys::mmap(0, P, RW, sys::MAP_SHARED, fd, 0);
    if s > 0 {
        sys::munmap(s as usize, P);
    }
    ensure!(
        e(s) == sys::EPERM,
        "shared writable mmap of a write-sealed memfd: {s}"
    );
    let m = map(P, RW, sys::MAP_PRIVATE, fd)?;
    m.poke64(0, 0xe0);
    let seen = m.peek64(0);
    unmap(&m);
    ensure!(
        seen == 0xe0 && pread64(fd, 0) == 0x1000,
        "sealed memfd private write: read {seen:#x}, file {:#x}",
        pread64(fd, 0)
    );
    Ok(Outcome::Pass)
}

fn fcntl_seal(fd: isize) -> isize {
    sys::syscall(sys::nr::FCNTL, &[fd as usize, F_ADD_SEALS, F_SEAL_WRITE])
}

/// `MADV_REMOVE` through a shared writable mapping of a memfd punches the
/// range out (it reads zero, `Shmem:` drops), leaving a private mapping's
/// copies; EACCES on a private file mapping and on a shared mapping of a
/// file open read-only, EINVAL on private anonymous memory.
pub(crate) fn shmem_madv_remove() -> TestResult {
    let fd = memfd(0);
    ensure!(fd >= 0, "memfd_create: {fd}");
    let r = madv_remove_body(fd);
    sys::close(fd as i32);
    r?;
    let a = map(4 * P, RW, sys::MAP_PRIVATE | sys::MAP_ANONYMOUS, -1)?;
    let r = sys::madvise(a.addr, a.len, MADV_REMOVE);
    unmap(&a);
    ensure!(e(r) == sys::EINVAL, "MADV_REMOVE on anonymous memory: {r}");
    let path = b"/dev/shm/mthp-remove\0";
    let _ = unlink(path);
    let w = openat(path, sys::O_RDWR | O_CREAT | O_EXCL);
    ensure!(w >= 0, "open(O_CREAT): {w}");
    let t = sys::syscall(sys::nr::FTRUNCATE, &[w as usize, 4 * P]);
    sys::close(w as i32);
    let fd = openat(path, sys::O_RDONLY);
    let _ = unlink(path);
    ensure!(t == 0 && fd >= 0, "ftruncate {t}, open O_RDONLY {fd}");
    let m = map(4 * P, sys::PROT_READ, sys::MAP_SHARED, fd);
    sys::close(fd as i32);
    let m = m?;
    let r = sys::madvise(m.addr, m.len, MADV_REMOVE);
    unmap(&m);
    ensure!(
        e(r) == sys::EACCES,
        "MADV_REMOVE on a shared mapping of an O_RDONLY file: {r}"
    );
    Ok(Outcome::Pass)
}

fn madv_remove_body(fd: isize) -> TestResult {
    let len = 64 * P;
    let page = [0x5au8; P];
    for k in 0..64 {
        let r = sys::syscall(
            sys::nr::PWRITE64,
            &[fd as usize, page.as_ptr() as usize, P, k * P],
        );
        ensure!(r == P as isize, "pwrite page {k}: {r}");
    }
    let sh = map(len, RW, sys::MAP_SHARED, fd)?;
    let pv = map(len, RW, sys::MAP_PRIVATE, fd)?;
    pv.poke64(40 * P, 0xf40);
    let _ = pv.peek64(41 * P);
    let priv_r = sys::madvise(pv.addr + 32 * P, 32 * P, MADV_REMOVE);
    let before = meminfo_shmem_kb();
    let r = sys::madvise(sh.addr + 32 * P, 32 * P, MADV_REMOVE);
    let after = meminfo_shmem_kb();
    let zero = (32..64).all(|k| sh.peek64(k * P) == 0 && pread64(fd, k * P) == 0);
    let kept = sh.peek(31 * P) == 0x5a;
    let copy = pv.peek64(40 * P);
    let file = pv.peek64(41 * P);
    unmap(&sh);
    unmap(&pv);
    ensure!(
        e(priv_r) == sys::EACCES,
        "MADV_REMOVE on a private file mapping: {priv_r}"
    );
    ensure!(r == 0, "MADV_REMOVE: {r}");
    ensure!(
        zero && kept,
        "punched range not zero ({zero}) or rest lost ({kept})"
    );
    ensure!(
        copy == 0xf40 && file == 0,
        "private mapping after the punch: copy {copy:#x}, file page {file:#x}"
    );
    let (Some(b), Some(a)) = (before, after) else {
        fail!("/proc/meminfo Shmem: unreadable");
    };
    ensure!(
        a + 120 <= b,
        "Shmem: {b} kB before MADV_REMOVE of 128 kB, {a} kB after"
    );
    Ok(Outcome::Pass)
}

const MNT: &[u8] = b"/tmp/mthp-falloc\0";

/// `fallocate` mode 0 and `FALLOC_FL_KEEP_SIZE` on a tmpfs mounted
/// `size=256k`: the blocks are charged (`statfs`), `Shmem:` counts them,
/// the size grows only in mode 0, reads see zeroes; a range larger than
/// the mount, or one that fills it up, is ENOSPC with nothing kept.
pub(crate) fn tmpfs_fallocate_prealloc() -> TestResult {
    let r = sys::syscall(sys::nr::MKDIRAT, &[AT_FDCWD, MNT.as_ptr() as usize, 0o755]);
    ensure!(r == 0 || e(r) == sys::EEXIST, "mkdir: {r}");
    let r = mthp_user::mount_tmpfs(MNT, b"size=256k\0");
    ensure!(r == 0, "mount tmpfs -o size=256k: {r}");
    let path = b"/tmp/mthp-falloc/f\0";
    let fd = openat(path, sys::O_RDWR | O_CREAT | O_EXCL);
    let res = if fd < 0 {
        Err(Msg::new(format_args!("open(O_CREAT): {fd}")))
    } else {
        let r = falloc_body(fd);
        sys::close(fd as i32);
        r
    };
    let un = unlink(path);
    let um = sys::syscall(sys::nr::UMOUNT2, &[MNT.as_ptr() as usize, 0]);
    let _ = sys::syscall(sys::nr::UNLINKAT, &[AT_FDCWD, MNT.as_ptr() as usize, 0x200]);
    let res = res?;
    ensure!(un == 0 && um == 0, "unlink {un}, umount2 {um}");
    Ok(res)
}

fn bfree(fd: isize) -> Result<u64, Msg> {
    let mut b = [0u8; 120];
    let r = sys::syscall(sys::nr::FSTATFS, &[fd as usize, b.as_mut_ptr() as usize]);
    ensure!(r == 0, "fstatfs: {r}");
    Ok(u64::from_le_bytes(b[24..32].try_into().unwrap_or_default()))
}

fn falloc_body(fd: isize) -> TestResult {
    ensure!(
        bfree(fd)? == 64,
        "f_bfree {} on a fresh size=256k",
        bfree(fd)?
    );
    let shmem0 = meminfo_shmem_kb();
    let r = fallocate(fd, 0, 0, 128 << 10);
    ensure!(r == 0, "fallocate(0, 128k): {r}");
    let shmem1 = meminfo_shmem_kb();
    ensure!(
        file_size(fd) == 128 << 10,
        "size {} after fallocate",
        file_size(fd)
    );
    ensure!(bfree(fd)? == 32, "f_bfree {} after 32 pages", bfree(fd)?);
    let (Some(s0), Some(s1)) = (shmem0, shmem1) else {
        fail!("/proc/meminfo Shmem: unreadable");
    };
    ensure!(s1 >= s0 + 120, "Shmem: {s0} kB, then {s1} kB after 128 kB");
    ensure!(
        pread64(fd, 5 * P) == 0 && pread64(fd, (128 << 10) - 8) == 0,
        "preallocated pages do not read zero"
    );
    let r = fallocate(fd, FALLOC_FL_KEEP_SIZE, 128 << 10, 64 << 10);
    ensure!(r == 0, "fallocate(KEEP_SIZE, 64k): {r}");
    ensure!(
        file_size(fd) == 128 << 10,
        "KEEP_SIZE changed the size to {}",
        file_size(fd)
    );
    ensure!(bfree(fd)? == 16, "f_bfree {} after 48 pages", bfree(fd)?);
    // Larger than the mount: ENOSPC at once.
    let r = fallocate(fd, 0, 0, 512 << 10);
    ensure!(e(r) == sys::ENOSPC, "fallocate(512k) on size=256k: {r}");
    // 32 new pages with 16 free: ENOSPC, and the 16 it got are dropped.
    let r = fallocate(fd, 0, 192 << 10, 128 << 10);
    ensure!(e(r) == sys::ENOSPC, "fallocate filling the mount: {r}");
    ensure!(
        bfree(fd)? == 16 && file_size(fd) == 128 << 10,
        "after ENOSPC: f_bfree {}, size {}",
        bfree(fd)?,
        file_size(fd)
    );
    // The rest still fits.
    let r = fallocate(fd, 0, 192 << 10, 64 << 10);
    ensure!(r == 0, "fallocate of the last 64k: {r}");
    ensure!(
        bfree(fd)? == 0 && file_size(fd) == 256 << 10,
        "full: f_bfree {}, size {}",
        bfree(fd)?,
        file_size(fd)
    );
    Ok(Outcome::Pass)
}
