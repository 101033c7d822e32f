//! Shared anonymous memory with large folios: two processes after fork
//! share a `MAP_SHARED|MAP_ANONYMOUS` region backed by 64K or 2M shmem
//! folios (per-size `shmem_enabled=always`) and see each other's writes;
//! the 2M one is PMD-mapped (`ShmemPmdMapped` in smaps); `Shmem:` in
//! /proc/meminfo grows by the region and comes back after munmap.

use super::*;

/// The selected word of a `shmem_enabled` file, to put back afterwards.
fn save_word(p: &[u8]) -> ([u8; 16], bool) {
    let mut buf = [0u8; 128];
    let mut w = [0u8; 16];
    match read_file(p, &mut buf) {
        Ok(n) => {
            copy_word(&mut w, selected(&buf[..n]));
            (w, true)
        }
        Err(_) => (w, false),
    }
}

fn meminfo_shmem_kb() -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(b"/proc/meminfo\0", &mut buf).ok()?;
    field(&buf[..n], b"\nShmem:")
}

fn shared_region(kb: usize) -> TestResult {
    let knob = path!("{THP}/hugepages-{kb}kB/shmem_enabled");
    let (old, ok) = save_word(knob.c());
    if !ok {
        return skip(mthp_user::Msg::new(format_args!(
            "no hugepages-{kb}kB/shmem_enabled here"
        )));
    }
    if let Err(e) = write_file(knob.c(), b"always") {
        return skip(mthp_user::Msg::new(format_args!(
            "cannot write hugepages-{kb}kB/shmem_enabled (errno {e})"
        )));
    }
    let r = shared_region_body(kb);
    let _ = write_file(
        path!("{THP}/hugepages-{kb}kB/shmem_enabled").c(),
        word(&old),
    );
    r
}

fn shared_region_body(kb: usize) -> TestResult {
    let len = 4 * SZ_2M;
    let shmem_before = meminfo_shmem_kb();
    // A 2 MiB-aligned hole, then the shared mapping fixed over it.
    let hole = map_aligned(len, SZ_2M)?;
    let addr = check(sys::mmap(
        hole.addr,
        len,
        sys::PROT_READ | sys::PROT_WRITE,
        sys::MAP_SHARED | sys::MAP_ANONYMOUS | sys::MAP_FIXED,
        -1,
        0,
    ));
    let Ok(addr) = addr else {
        unmap(&hole);
        fail!("mmap(MAP_SHARED|MAP_ANONYMOUS) failed: {addr:?}");
    };
    let m = Mem { addr, len };
    let before = stat(kb, "shmem_alloc");
    fill(&m, 0x5a);
    let after = stat(kb, "shmem_alloc");
    let want = (len / (kb << 10)) as u64;
    let shmem_during = meminfo_shmem_kb();
    let pmd = smaps_field(addr, b"ShmemPmdMapped:");
    let anon_huge = smaps_field(addr, b"AnonHugePages:");
    let half = len / 2;
    let status = in_child(|| {
        if verify(&m, 0, len, 0x5a).is_some() {
            return 2;
        }
        let second = Mem {
            addr: m.addr + half,
            len: half,
        };
        let mut off = 0;
        while off < half {
            second.poke64(off, pattern(off, 0x77));
            off += 512;
        }
        0
    })?;
    let mut bad = verify(&m, 0, half, 0x5a);
    if bad.is_none() {
        let mut off = 0;
        while off < half {
            if m.peek64(half + off) != pattern(off, 0x77) {
                bad = Some(half + off);
                break;
            }
            off += 512;
        }
    }
    unmap(&m);
    let shmem_after = meminfo_shmem_kb();
    ensure!(
        wifexited(status) && wexitstatus(status) == 0,
        "child saw wrong data or died (status {status:#x})"
    );
    ensure!(
        bad.is_none(),
        "parent does not see the child's writes at {bad:?}"
    );
    let (Some(b), Some(a)) = (before, after) else {
        fail!("hugepages-{kb}kB/stats/shmem_alloc unreadable: {before:?} -> {after:?}");
    };
    ensure!(
        a - b == want,
        "shmem_alloc({kb}kB) went up by {}, expected {want}",
        a - b
    );
    if kb == 2048 {
        ensure!(
            pmd == Some((len >> 10) as u64),
            "ShmemPmdMapped {pmd:?} kB, expected {}",
            len >> 10
        );
        ensure!(
            anon_huge == Some(0),
            "AnonHugePages {anon_huge:?} for shmem"
        );
    } else {
        ensure!(
            pmd == Some(0),
            "ShmemPmdMapped {pmd:?} kB for {kb}kB folios"
        );
    }
    let (Some(b), Some(d), Some(a)) = (shmem_before, shmem_during, shmem_after) else {
        fail!("/proc/meminfo Shmem: unreadable");
    };
    // Linux's own shmem users (devtmpfs and the like) move it by some
    // tens of kB while the test runs; this kernel has no other user.
    let slack = if on_mthp() { 0 } else { 512 };
    let kb_len = (len >> 10) as u64;
    ensure!(
        d + slack >= b + kb_len,
        "Shmem: {b} kB before, {d} kB with {kb_len} kB mapped"
    );
    ensure!(
        a <= b + slack && a + slack >= b,
        "Shmem: {b} kB before, {a} kB after munmap"
    );
    Ok(Outcome::Pass)
}

pub(crate) fn shmem_shared_anon_64k() -> TestResult {
    shared_region(64)
}

pub(crate) fn shmem_shared_anon_2m() -> TestResult {
    shared_region(2048)
}

// ------------------------------------------------------------------ memfd

const MFD_CLOEXEC: usize = 1;
const MFD_ALLOW_SEALING: usize = 2;
const F_ADD_SEALS: usize = 1033;
const F_GET_SEALS: usize = 1034;
const F_SEAL_SEAL: isize = 1;
const F_SEAL_SHRINK: usize = 2;
const F_SEAL_WRITE: usize = 8;
const FALLOC_PUNCH_KEEP: usize = 3;
const SIGBUS: i32 = 7;

fn memfd_create(name: &core::ffi::CStr, flags: usize) -> isize {
    sys::syscall(sys::nr::MEMFD_CREATE, &[name.as_ptr() as usize, flags])
}

fn fcntl(fd: isize, cmd: usize, arg: usize) -> isize {
    sys::syscall(sys::nr::FCNTL, &[fd as usize, cmd, arg])
}

fn ftruncate(fd: isize, len: isize) -> isize {
    sys::syscall(sys::nr::FTRUNCATE, &[fd as usize, len as usize])
}

fn pwrite(fd: isize, buf: &[u8], off: usize) -> isize {
    sys::syscall(
        sys::nr::PWRITE64,
        &[fd as usize, buf.as_ptr() as usize, buf.len(), off],
    )
}

fn pread(fd: isize, buf: &mut [u8], off: usize) -> isize {
    sys::syscall(
        sys::nr::PREAD64,
        &[fd as usize, buf.as_mut_ptr() as usize, buf.len(), off],
    )
}

fn map_fd(addr: usize, len: usize, prot: usize, fd: isize, fixed: bool) -> isize {
    let f = sys::MAP_SHARED | if fixed { sys::MAP_FIXED } else { 0 };
    sys::mmap(addr, len, prot, f, fd, 0)
}

/// memfd seals and I/O with Linux's errnos: a memfd without
/// `MFD_ALLOW_SEALING` is sealed with `F_SEAL_SEAL`; `F_SEAL_WRITE` is
/// EBUSY while mapped shared writable, then makes writes, writable shared
/// mappings and (with `F_SEAL_SHRINK`) shrinking EPERM; pread/pwrite see
/// the same bytes as a mapping.
pub(crate) fn memfd_seals_and_io() -> TestResult {
    let e = |r: isize| if r < 0 { -(r as i32) } else { 0 };
    ensure!(
        e(memfd_create(c"bad", 0x100)) == sys::EINVAL,
        "memfd_create(flags 0x100) not EINVAL"
    );
    let fd = check(memfd_create(c"sealed", MFD_CLOEXEC));
    let Ok(fd) = fd else {
        fail!("memfd_create: {fd:?}");
    };
    let fd = fd as isize;
    let seals = fcntl(fd, F_GET_SEALS, 0);
    let add = fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE);
    sys::close(fd as i32);
    ensure!(
        seals == F_SEAL_SEAL,
        "F_GET_SEALS {seals}, expected F_SEAL_SEAL"
    );
    ensure!(e(add) == sys::EPERM, "F_ADD_SEALS on a sealed memfd: {add}");
    let fd = memfd_create(c"io", MFD_ALLOW_SEALING);
    ensure!(fd >= 0, "memfd_create(MFD_ALLOW_SEALING): {fd}");
    let r = memfd_io(fd);
    sys::close(fd as i32);
    r
}

fn memfd_io(fd: isize) -> TestResult {
    let e = |r: isize| if r < 0 { -(r as i32) } else { 0 };
    ensure!(
        fcntl(fd, F_GET_SEALS, 0) == 0,
        "new sealable memfd has seals"
    );
    ensure!(pwrite(fd, b"hello", 8192) == 5, "pwrite64 failed");
    let mut buf = [0xffu8; 16];
    let n = pread(fd, &mut buf, 8190);
    ensure!(
        n == 7 && &buf[..7] == b"\0\0hello",
        "pread64 after pwrite64: {n} {:?}",
        &buf[..7]
    );
    ensure!(sys::write(fd as i32, b"ab") == 2, "write at 0");
    ensure!(
        e(ftruncate(fd, -1)) == sys::EINVAL,
        "ftruncate(-1) not EINVAL"
    );
    ensure!(ftruncate(fd, 16384) == 0, "ftruncate(16384)");
    let a = map_fd(0, 16384, sys::PROT_READ | sys::PROT_WRITE, fd, false);
    ensure!(a > 0, "mmap(MAP_SHARED) of the memfd: {a}");
    let m = Mem {
        addr: a as usize,
        len: 16384,
    };
    ensure!(
        m.peek(0) == b'a' && m.peek(8194) == b'l',
        "mapping misses the written bytes"
    );
    m.poke(12000, 0x42);
    let busy = fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE);
    unmap(&m);
    ensure!(
        e(busy) == sys::EBUSY,
        "F_SEAL_WRITE while mapped writable: {busy}"
    );
    let n = pread(fd, &mut buf[..1], 12000);
    ensure!(
        n == 1 && buf[0] == 0x42,
        "pread64 misses the mapping's write"
    );
    ensure!(
        fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK) == 0,
        "F_ADD_SEALS(WRITE|SHRINK) after munmap"
    );
    ensure!(
        fcntl(fd, F_GET_SEALS, 0) == (F_SEAL_WRITE | F_SEAL_SHRINK) as isize,
        "F_GET_SEALS after adding"
    );
    ensure!(
        e(pwrite(fd, b"x", 0)) == sys::EPERM,
        "pwrite64 under F_SEAL_WRITE"
    );
    ensure!(
        e(sys::write(fd as i32, b"x")) == sys::EPERM,
        "write under F_SEAL_WRITE"
    );
    let w = map_fd(0, 16384, sys::PROT_READ | sys::PROT_WRITE, fd, false);
    ensure!(
        e(w) == sys::EPERM,
        "writable MAP_SHARED under F_SEAL_WRITE: {w}"
    );
    let r = map_fd(0, 16384, sys::PROT_READ, fd, false);
    ensure!(r > 0, "read-only MAP_SHARED under F_SEAL_WRITE: {r}");
    let ro = Mem {
        addr: r as usize,
        len: 16384,
    };
    let seen = ro.peek(12000);
    unmap(&ro);
    ensure!(seen == 0x42, "read-only mapping sees {seen:#x}");
    ensure!(
        e(ftruncate(fd, 4096)) == sys::EPERM,
        "shrink under F_SEAL_SHRINK"
    );
    ensure!(ftruncate(fd, 32768) == 0, "grow under F_SEAL_SHRINK");
    Ok(Outcome::Pass)
}

/// A 4 MiB memfd PMD-mapped (`shmem_enabled=always`): a hole punched
/// inside the first 2 MiB folio reads as zero and the rest keeps its
/// data; a truncate in the middle of the second folio makes the tail
/// SIGBUS and keeps what lies before; `Shmem:` comes back after close.
pub(crate) fn memfd_truncate_in_large_folio() -> TestResult {
    let top = path!("{THP}/shmem_enabled");
    let (old, ok) = save_word(top.c());
    if !ok {
        return skip(mthp_user::Msg::new(format_args!("no shmem_enabled here")));
    }
    if let Err(e) = write_file(top.c(), b"always") {
        return skip(mthp_user::Msg::new(format_args!(
            "cannot write shmem_enabled (errno {e})"
        )));
    }
    let before = meminfo_shmem_kb();
    let fd = memfd_create(c"big", 0);
    let r = if fd < 0 {
        Err(mthp_user::Msg::new(format_args!("memfd_create: {fd}")))
    } else {
        let r = truncate_body(fd);
        sys::close(fd as i32);
        r
    };
    let after = meminfo_shmem_kb();
    let _ = write_file(path!("{THP}/shmem_enabled").c(), word(&old));
    let r = r?;
    let (Some(b), Some(a)) = (before, after) else {
        fail!("/proc/meminfo Shmem: unreadable");
    };
    let slack = if on_mthp() { 0 } else { 512 };
    ensure!(
        a <= b + slack && a + slack >= b,
        "Shmem: {b} kB before, {a} kB after close"
    );
    Ok(r)
}

fn truncate_body(fd: isize) -> TestResult {
    let len = 2 * SZ_2M;
    ensure!(ftruncate(fd, len as isize) == 0, "ftruncate(4 MiB)");
    let hole = map_aligned(len, SZ_2M)?;
    let a = map_fd(hole.addr, len, sys::PROT_READ | sys::PROT_WRITE, fd, true);
    if a < 0 {
        unmap(&hole);
        fail!("mmap(MAP_SHARED|MAP_FIXED) of the memfd: {a}");
    }
    let m = Mem {
        addr: a as usize,
        len,
    };
    fill(&m, 0x33);
    let pmd = smaps_field(m.addr, b"ShmemPmdMapped:");
    let huge_before = meminfo_field(b"\nShmemHugePages:");
    let (ps, pl) = (1 << 20, SZ_64K);
    let punch = sys::syscall(
        sys::nr::FALLOCATE,
        &[fd as usize, FALLOC_PUNCH_KEEP, ps, pl],
    );
    let huge_after = meminfo_field(b"\nShmemHugePages:");
    let mut bad = verify(&m, 0, ps, 0x33).or(verify(&m, ps + pl, len, 0x33));
    let mut off = ps;
    while off < ps + pl && bad.is_none() {
        if m.peek64(off) != 0 {
            bad = Some(off);
        }
        off += 512;
    }
    let cut = 3 << 20;
    let trunc = ftruncate(fd, cut as isize);
    let kept = verify(&m, 0, ps, 0x33).or(verify(&m, ps + pl, cut, 0x33));
    let st = in_child(|| {
        m.peek(cut + PAGE);
        0
    });
    unmap(&m);
    ensure!(
        pmd == Some((len >> 10) as u64),
        "ShmemPmdMapped {pmd:?} kB, expected {}",
        len >> 10
    );
    ensure!(punch == 0, "fallocate(PUNCH_HOLE|KEEP_SIZE): {punch}");
    ensure!(bad.is_none(), "after the punch, wrong data at {bad:?}");
    if on_mthp() {
        // The cut 2M folio was split (Linux splits it too when it can).
        ensure!(
            huge_before
                .zip(huge_after)
                .is_some_and(|(b, a)| b == a + 2048),
            "ShmemHugePages {huge_before:?} -> {huge_after:?} kB: folio not split"
        );
    }
    ensure!(trunc == 0, "ftruncate(3 MiB): {trunc}");
    ensure!(kept.is_none(), "after the truncate, wrong data at {kept:?}");
    let st = st?;
    ensure!(
        wifsignaled(st) && wtermsig(st) == SIGBUS,
        "access past the size: status {st:#x}, expected SIGBUS"
    );
    Ok(Outcome::Pass)
}

fn meminfo_field(key: &[u8]) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(b"/proc/meminfo\0", &mut buf).ok()?;
    field(&buf[..n], key)
}

// ------------------------------------------------------------ System V shm

const IPC_PRIVATE: usize = 0;
const IPC_CREAT: usize = 0o1000;
const IPC_EXCL: usize = 0o2000;
const IPC_RMID: usize = 0;
const IPC_STAT: usize = 2;
const SHM_RND: usize = 0o20000;
const SHM_REMAP: usize = 0o40000;
const SHM_DEST: u32 = 0o1000;
/// `struct shmid64_ds` (x86_64 and arm64 alike): offsets of the fields read.
const DS_MODE: usize = 20;
const DS_SEGSZ: usize = 48;
const DS_CPID: usize = 80;
const DS_NATTCH: usize = 88;

fn shmget(key: usize, size: usize, flg: usize) -> isize {
    sys::syscall(sys::nr::SHMGET, &[key, size, flg])
}

fn shmat(id: isize, addr: usize, flg: usize) -> isize {
    sys::syscall(sys::nr::SHMAT, &[id as usize, addr, flg])
}

fn shmdt(addr: usize) -> isize {
    sys::syscall(sys::nr::SHMDT, &[addr])
}

fn shm_stat(id: isize) -> Result<[u8; 112], i32> {
    let mut b = [0u8; 112];
    let r = sys::syscall(
        sys::nr::SHMCTL,
        &[id as usize, IPC_STAT, b.as_mut_ptr() as usize],
    );
    if r < 0 { Err(-(r as i32)) } else { Ok(b) }
}

fn rmid(id: isize) -> isize {
    sys::syscall(sys::nr::SHMCTL, &[id as usize, IPC_RMID, 0])
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or_default())
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap_or_default())
}

/// System V shared memory as Linux: `shmget`'s errnos (EINVAL for size 0
/// or more than the segment has, ENOENT without `IPC_CREAT`, EEXIST with
/// `IPC_EXCL`); a forked child and a second attach see the parent's data
/// and the parent sees the child's; `IPC_STAT`'s size, creator and attach
/// count; an unaligned attach without `SHM_RND` and a detach of no attach
/// are EINVAL; after `IPC_RMID` the key is gone but the attached id still
/// works (`SHM_DEST` set), and once detached the id is EINVAL.
pub(crate) fn sysv_shm_share_and_errnos() -> TestResult {
    let e = |r: isize| if r < 0 { -(r as i32) } else { 0 };
    let key = 0x6d74_6870 + (sys::getpid() as usize & 0xfff);
    let len = 16 * 4096;
    ensure!(
        e(shmget(IPC_PRIVATE, 0, IPC_CREAT | 0o600)) == sys::EINVAL,
        "shmget(size 0) not EINVAL"
    );
    ensure!(
        e(shmget(key, 4096, 0o600)) == sys::ENOENT,
        "shmget of a missing key without IPC_CREAT not ENOENT"
    );
    let id = shmget(key, len, IPC_CREAT | IPC_EXCL | 0o600);
    ensure!(id >= 0, "shmget(IPC_CREAT|IPC_EXCL): {id}");
    let r = sysv_body(key, id, len);
    // Never leave a segment behind, whatever failed.
    rmid(id);
    r
}

fn sysv_body(key: usize, id: isize, len: usize) -> TestResult {
    let e = |r: isize| if r < 0 { -(r as i32) } else { 0 };
    ensure!(
        e(shmget(key, len, IPC_CREAT | IPC_EXCL | 0o600)) == sys::EEXIST,
        "second IPC_CREAT|IPC_EXCL not EEXIST"
    );
    ensure!(
        e(shmget(key, 2 * len, 0o600)) == sys::EINVAL,
        "shmget larger than the segment not EINVAL"
    );
    ensure!(shmget(key, 4096, 0) == id, "shmget of the key: another id");
    let a = shmat(id, 0, 0);
    ensure!(a > 0, "shmat: {a}");
    let m = Mem {
        addr: a as usize,
        len,
    };
    fill(&m, 0x31);
    let half = len / 2;
    let status = in_child(|| {
        if verify(&m, 0, half, 0x31).is_some() {
            return 2;
        }
        // A second attach of the same segment shows the same bytes.
        let b = shmat(id, 0, 0);
        if b <= 0 || b as usize == m.addr {
            return 3;
        }
        let other = Mem {
            addr: b as usize,
            len,
        };
        if verify(&other, 0, len, 0x31).is_some() {
            return 4;
        }
        let mut off = 0;
        while off < half {
            other.poke64(half + off, pattern(off, 0x44));
            off += 512;
        }
        if shmdt(b as usize) != 0 {
            return 5;
        }
        0
    })?;
    ensure!(
        wifexited(status) && wexitstatus(status) == 0,
        "child saw wrong data or failed (status {status:#x})"
    );
    let mut off = 0;
    while off < half {
        ensure!(
            m.peek64(half + off) == pattern(off, 0x44),
            "parent does not see the child's write at {off:#x}"
        );
        off += 512;
    }
    let ds = match shm_stat(id) {
        Ok(b) => b,
        Err(err) => fail!("IPC_STAT: errno {err}"),
    };
    ensure!(
        le_u64(&ds, DS_SEGSZ) == len as u64,
        "shm_segsz {}",
        le_u64(&ds, DS_SEGSZ)
    );
    ensure!(
        le_u32(&ds, DS_CPID) == sys::getpid() as u32,
        "shm_cpid {}",
        le_u32(&ds, DS_CPID)
    );
    ensure!(
        le_u64(&ds, DS_NATTCH) == 1,
        "shm_nattch {} with one attach",
        le_u64(&ds, DS_NATTCH)
    );
    ensure!(
        e(shmat(id, m.addr + 8, 0)) == sys::EINVAL,
        "unaligned shmat without SHM_RND not EINVAL"
    );
    ensure!(
        e(shmdt(m.addr + 4096)) == sys::EINVAL,
        "shmdt inside an attach not EINVAL"
    );
    // SHM_RND rounds down: over the existing attach only with SHM_REMAP.
    let r = shmat(id, m.addr + 8, SHM_RND | SHM_REMAP);
    ensure!(r == m.addr as isize, "shmat(SHM_RND|SHM_REMAP): {r}");
    ensure!(
        verify(&m, 0, half, 0x31).is_none(),
        "data lost by the re-attach"
    );
    ensure!(rmid(id) == 0, "IPC_RMID while attached");
    ensure!(
        e(shmget(key, 4096, 0)) == sys::ENOENT,
        "a removed segment still found by key"
    );
    let ds = match shm_stat(id) {
        Ok(b) => b,
        Err(err) => fail!("IPC_STAT after IPC_RMID while attached: errno {err}"),
    };
    ensure!(
        le_u32(&ds, DS_MODE) & SHM_DEST != 0,
        "SHM_DEST not set after IPC_RMID: mode {:#o}",
        le_u32(&ds, DS_MODE)
    );
    ensure!(
        verify(&m, 0, half, 0x31).is_none(),
        "data lost after IPC_RMID"
    );
    ensure!(shmdt(m.addr) == 0, "shmdt");
    ensure!(
        e(shmat(id, 0, 0)) == sys::EINVAL,
        "shmat of a removed, detached segment not EINVAL"
    );
    Ok(Outcome::Pass)
}

/// A 4 MiB System V segment with `shmem_enabled=always` is backed by PMD
/// folios and PMD-mapped when attached at a 2 MiB-aligned address
/// (`ShmemPmdMapped` in smaps), as Linux's internal shm mount follows
/// the top-level `shmem_enabled`.
pub(crate) fn sysv_shm_pmd() -> TestResult {
    let knob = path!("{THP}/shmem_enabled");
    let (old, ok) = save_word(knob.c());
    if !ok {
        return skip(mthp_user::Msg::new(format_args!("no shmem_enabled here")));
    }
    if let Err(e) = write_file(knob.c(), b"always") {
        return skip(mthp_user::Msg::new(format_args!(
            "cannot write shmem_enabled (errno {e})"
        )));
    }
    let before = meminfo_shmem_kb();
    let id = shmget(IPC_PRIVATE, 2 * SZ_2M, IPC_CREAT | 0o600);
    let r = if id < 0 {
        Err(mthp_user::Msg::new(format_args!("shmget: {id}")))
    } else {
        let r = sysv_pmd_body(id);
        rmid(id);
        r
    };
    let after = meminfo_shmem_kb();
    let _ = write_file(path!("{THP}/shmem_enabled").c(), word(&old));
    r?;
    // Detached and removed: the segment's memory is gone (Linux's own
    // shmem users move `Shmem:` by some tens of kB meanwhile).
    let slack = if on_mthp() { 0 } else { 512 };
    let (Some(b), Some(a)) = (before, after) else {
        fail!("/proc/meminfo Shmem: unreadable");
    };
    ensure!(
        a <= b + slack,
        "Shmem: {b} kB before the segment, {a} kB after its removal"
    );
    Ok(Outcome::Pass)
}

fn sysv_pmd_body(id: isize) -> TestResult {
    let len = 2 * SZ_2M;
    let hole = map_aligned(len, SZ_2M)?;
    let a = shmat(id, hole.addr, SHM_REMAP);
    if a != hole.addr as isize {
        unmap(&hole);
        fail!("shmat(SHM_REMAP) at {:#x}: {a}", hole.addr);
    }
    let m = Mem {
        addr: hole.addr,
        len,
    };
    fill(&m, 0x2d);
    let pmd = smaps_field(m.addr, b"ShmemPmdMapped:");
    let bad = verify(&m, 0, len, 0x2d);
    shmdt(m.addr);
    ensure!(bad.is_none(), "wrong data at {bad:?}");
    ensure!(
        pmd == Some((len >> 10) as u64),
        "ShmemPmdMapped {pmd:?} kB, expected {}",
        len >> 10
    );
    Ok(Outcome::Pass)
}

// ------------------------------------------------------------------ tmpfs

const O_CREAT: usize = 0o100;
const O_EXCL: usize = 0o200;
const AT_FDCWD: usize = -100isize as usize;
const MNT: &[u8] = b"/tmp/mthp-tmpfs\0";

fn openat_mode(path: &[u8], flags: usize, mode: usize) -> isize {
    sys::syscall(
        sys::nr::OPENAT,
        &[AT_FDCWD, path.as_ptr() as usize, flags, mode],
    )
}

fn umount(target: &[u8]) -> isize {
    sys::syscall(sys::nr::UMOUNT2, &[target.as_ptr() as usize, 0])
}

fn unlink(path: &[u8]) -> isize {
    sys::syscall(sys::nr::UNLINKAT, &[AT_FDCWD, path.as_ptr() as usize, 0])
}

/// The frame `va` maps, from `/proc/self/pagemap` (root sees frames).
fn pfn_of(va: usize) -> Option<u64> {
    let fd = sys::open(b"/proc/self/pagemap\0", sys::O_RDONLY);
    if fd < 0 {
        return None;
    }
    let mut b = [0u8; 8];
    let n = pread(fd, &mut b, va / 4096 * 8);
    sys::close(fd as i32);
    let e = u64::from_le_bytes(b);
    (n == 8 && e >> 63 == 1).then_some(e & ((1 << 55) - 1))
}

/// A tmpfs mounted with `huge=` (`always` / `never`): a 4 MiB file mapped
/// shared at a 2 MiB-aligned address is PMD-mapped only under `always`
/// (`ShmemPmdMapped`); a second mapping of the file at another address in
/// the same process maps the same frames, and a forked child that opens
/// the file by name and maps it sees the data and writes the parent sees;
/// the file's data outlives its name while mapped; `mkdir`, `O_EXCL`,
/// `unlink` and `umount2` answer as Linux.
fn tmpfs_mount_case(huge: &[u8], pmd: bool) -> TestResult {
    let e = |r: isize| if r < 0 { -(r as i32) } else { 0 };
    let r = sys::syscall(sys::nr::MKDIRAT, &[AT_FDCWD, MNT.as_ptr() as usize, 0o755]);
    ensure!(r == 0 || e(r) == sys::EEXIST, "mkdir {:?}: {r}", MNT);
    let r = mthp_user::mount_tmpfs(MNT, huge);
    if r < 0 {
        return skip(mthp_user::Msg::new(format_args!(
            "mount tmpfs: errno {}",
            -r
        )));
    }
    let res = tmpfs_file(pmd);
    ensure!(umount(MNT) == 0, "umount2");
    res
}

fn tmpfs_file(pmd: bool) -> TestResult {
    let e = |r: isize| if r < 0 { -(r as i32) } else { 0 };
    let path = b"/tmp/mthp-tmpfs/f\0";
    let fd = openat_mode(path, sys::O_RDWR | O_CREAT | O_EXCL, 0o600);
    ensure!(fd >= 0, "open(O_CREAT|O_EXCL): {fd}");
    ensure!(
        e(openat_mode(path, sys::O_RDWR | O_CREAT | O_EXCL, 0o600)) == sys::EEXIST,
        "second O_CREAT|O_EXCL not EEXIST"
    );
    let len = 2 * SZ_2M;
    ensure!(ftruncate(fd, len as isize) == 0, "ftruncate");
    let hole = map_aligned(len, SZ_2M)?;
    let a = map_fd(hole.addr, len, sys::PROT_READ | sys::PROT_WRITE, fd, true);
    if a != hole.addr as isize {
        unmap(&hole);
        sys::close(fd as i32);
        fail!("mmap of the tmpfs file: {a}");
    }
    let m = Mem {
        addr: hole.addr,
        len,
    };
    fill(&m, 0x3c);
    let pmd_kb = smaps_field(m.addr, b"ShmemPmdMapped:");
    // A second mapping anywhere: the same frames.
    let b = map_fd(0, len, sys::PROT_READ, fd, false);
    let same = b > 0 && {
        let second = Mem {
            addr: b as usize,
            len,
        };
        (0..len).step_by(SZ_2M / 2).all(|off| {
            // Faulted in by the read first.
            second.peek64(off) == m.peek64(off)
                && pfn_of(m.addr + off).is_some_and(|p| Some(p) == pfn_of(b as usize + off))
        })
    };
    if b > 0 {
        unmap(&Mem {
            addr: b as usize,
            len,
        });
    }
    sys::close(fd as i32);
    let half = len / 2;
    let status = in_child(|| {
        let fd = sys::open(b"/tmp/mthp-tmpfs/f\0", sys::O_RDWR);
        if fd < 0 {
            return 2;
        }
        let c = map_fd(0, len, sys::PROT_READ | sys::PROT_WRITE, fd, false);
        sys::close(fd as i32);
        if c <= 0 {
            return 3;
        }
        let other = Mem {
            addr: c as usize,
            len,
        };
        if verify(&other, 0, half, 0x3c).is_some() {
            return 4;
        }
        let mut off = 0;
        while off < half {
            other.poke64(half + off, pattern(off, 0x5e));
            off += 4096;
        }
        0
    })?;
    // The name goes; the mapping keeps the data.
    let un = unlink(path);
    let gone = e(sys::open(path, sys::O_RDONLY));
    let mut bad = verify(&m, 0, half, 0x3c);
    let mut off = 0;
    while bad.is_none() && off < half {
        if m.peek64(half + off) != pattern(off, 0x5e) {
            bad = Some(half + off);
        }
        off += 4096;
    }
    unmap(&m);
    ensure!(
        wifexited(status) && wexitstatus(status) == 0,
        "child failed (status {status:#x})"
    );
    ensure!(bad.is_none(), "wrong data at {bad:?}");
    ensure!(
        un == 0 && gone == sys::ENOENT,
        "unlink {un}, reopen errno {gone}"
    );
    ensure!(same, "two mappings of one tmpfs file map different frames");
    let want = if pmd { (len >> 10) as u64 } else { 0 };
    ensure!(
        pmd_kb == Some(want),
        "ShmemPmdMapped {pmd_kb:?} kB, expected {want}"
    );
    Ok(Outcome::Pass)
}

pub(crate) fn tmpfs_huge_always() -> TestResult {
    tmpfs_mount_case(b"huge=always\0", true)
}

pub(crate) fn tmpfs_huge_never() -> TestResult {
    tmpfs_mount_case(b"huge=never\0", false)
}

/// `/dev/shm` is a tmpfs (where glibc's `shm_open` puts its files): a
/// file created there can be written, read back through a mapping,
/// listed and unlinked; a bad mount option is EINVAL.
pub(crate) fn tmpfs_dev_shm() -> TestResult {
    let e = |r: isize| if r < 0 { -(r as i32) } else { 0 };
    let path = b"/dev/shm/mthp-test\0";
    let _ = unlink(path);
    let fd = openat_mode(path, sys::O_RDWR | O_CREAT, 0o644);
    ensure!(fd >= 0, "open /dev/shm file: {fd}");
    let data = *b"mthp tmpfs data!";
    let w = pwrite(fd, &data, 8192);
    let a = map_fd(0, 3 * 4096, sys::PROT_READ, fd, false);
    sys::close(fd as i32);
    ensure!(w == data.len() as isize, "pwrite: {w}");
    ensure!(a > 0, "mmap: {a}");
    let m = Mem {
        addr: a as usize,
        len: 3 * 4096,
    };
    let got = m.peek64(8192).to_le_bytes();
    unmap(&m);
    ensure!(got == data[..8], "mapping reads {got:?}");
    ensure!(unlink(path) == 0, "unlink");
    ensure!(e(unlink(path)) == sys::ENOENT, "second unlink not ENOENT");
    let r = mthp_user::mount_tmpfs(MNT, b"huge=sometimes\0");
    ensure!(e(r) == sys::EINVAL, "mount with huge=sometimes: {r}");
    Ok(Outcome::Pass)
}

const SHM_RDONLY: usize = 0o10000;

/// Mappings that may not become writable, as Linux: a tmpfs file open
/// read-only maps shared for reading (the data written through another
/// descriptor), but not for writing and not `mprotect`ed writable later
/// (EACCES); `MAP_PRIVATE` read-only reads the same data; an `SHM_RDONLY`
/// attach and a write-sealed memfd's read-only shared mapping cannot be
/// `mprotect`ed writable either (EACCES).
pub(crate) fn tmpfs_read_only_mappings() -> TestResult {
    let e = |r: isize| if r < 0 { -(r as i32) } else { 0 };
    let path = b"/dev/shm/mthp-ro\0";
    let _ = unlink(path);
    let w = openat_mode(path, sys::O_RDWR | O_CREAT | O_EXCL, 0o600);
    ensure!(w >= 0, "open(O_CREAT|O_EXCL): {w}");
    let data = *b"read-only tmpfs!";
    let n = pwrite(w, &data, 4096);
    sys::close(w as i32);
    ensure!(n == data.len() as isize, "pwrite: {n}");
    let fd = sys::open(path, sys::O_RDONLY);
    ensure!(fd >= 0, "open O_RDONLY: {fd}");
    let rw = e(map_fd(
        0,
        2 * 4096,
        sys::PROT_READ | sys::PROT_WRITE,
        fd,
        false,
    ));
    let shared = map_fd(0, 2 * 4096, sys::PROT_READ, fd, false);
    let private = sys::mmap(0, 2 * 4096, sys::PROT_READ, sys::MAP_PRIVATE, fd, 0);
    sys::close(fd as i32);
    let _ = unlink(path);
    let mut got = [0u64; 2];
    let mut up = 0;
    for (i, a) in [shared, private].into_iter().enumerate() {
        if a > 0 {
            let m = Mem {
                addr: a as usize,
                len: 2 * 4096,
            };
            got[i] = m.peek64(4096);
            if i == 0 {
                up = e(sys::mprotect(
                    m.addr,
                    m.len,
                    sys::PROT_READ | sys::PROT_WRITE,
                ));
            }
            unmap(&m);
        }
    }
    ensure!(
        rw == sys::EACCES,
        "writable shared mmap of O_RDONLY: errno {rw}"
    );
    ensure!(shared > 0 && private > 0, "mmap: {shared} / {private}");
    let want = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
    ensure!(got == [want, want], "mappings read {got:x?}");
    ensure!(
        up == sys::EACCES,
        "mprotect(PROT_WRITE) of O_RDONLY: errno {up}"
    );
    let id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0o600);
    ensure!(id >= 0, "shmget: {id}");
    let a = shmat(id, 0, SHM_RDONLY);
    let up = if a > 0 {
        let r = e(sys::mprotect(
            a as usize,
            4096,
            sys::PROT_READ | sys::PROT_WRITE,
        ));
        shmdt(a as usize);
        r
    } else {
        0
    };
    rmid(id);
    ensure!(a > 0, "shmat(SHM_RDONLY): {a}");
    ensure!(
        up == sys::EACCES,
        "mprotect(PROT_WRITE) of SHM_RDONLY: errno {up}"
    );
    // A write-sealed memfd's read-only shared mapping stays read-only.
    let fd = memfd_create(c"ro", MFD_ALLOW_SEALING);
    ensure!(fd >= 0, "memfd_create: {fd}");
    let grow = ftruncate(fd, 4096);
    let seal = fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE);
    let a = map_fd(0, 4096, sys::PROT_READ, fd, false);
    sys::close(fd as i32);
    let up = if a > 0 {
        let r = e(sys::mprotect(
            a as usize,
            4096,
            sys::PROT_READ | sys::PROT_WRITE,
        ));
        unmap(&Mem {
            addr: a as usize,
            len: 4096,
        });
        r
    } else {
        0
    };
    ensure!(grow == 0 && seal == 0 && a > 0, "memfd: {grow} {seal} {a}");
    ensure!(
        up == sys::EACCES,
        "mprotect(PROT_WRITE) of a write-sealed memfd: errno {up}"
    );
    Ok(Outcome::Pass)
}

/// A 4 MiB file on a tmpfs mounted `huge=always`, PMD-mapped: the memfd
/// test's punch and truncate inside a 2 MiB folio (`truncate_body`) give
/// the same results on a tmpfs file; after unlink and umount `Shmem:` is
/// back where it was.
pub(crate) fn tmpfs_truncate_in_large_folio() -> TestResult {
    let e = |r: isize| if r < 0 { -(r as i32) } else { 0 };
    let r = sys::syscall(sys::nr::MKDIRAT, &[AT_FDCWD, MNT.as_ptr() as usize, 0o755]);
    ensure!(r == 0 || e(r) == sys::EEXIST, "mkdir {:?}: {r}", MNT);
    let before = meminfo_shmem_kb();
    let r = mthp_user::mount_tmpfs(MNT, b"huge=always\0");
    if r < 0 {
        return skip(mthp_user::Msg::new(format_args!(
            "mount tmpfs: errno {}",
            -r
        )));
    }
    let path = b"/tmp/mthp-tmpfs/big\0";
    let fd = openat_mode(path, sys::O_RDWR | O_CREAT | O_EXCL, 0o600);
    let res = if fd < 0 {
        Err(mthp_user::Msg::new(format_args!("open(O_CREAT): {fd}")))
    } else {
        let r = truncate_body(fd);
        sys::close(fd as i32);
        r
    };
    let un = unlink(path);
    let um = umount(MNT);
    let after = meminfo_shmem_kb();
    let res = res?;
    ensure!(un == 0 && um == 0, "unlink {un}, umount2 {um}");
    let (Some(b), Some(a)) = (before, after) else {
        fail!("/proc/meminfo Shmem: unreadable");
    };
    let slack = if on_mthp() { 0 } else { 512 };
    ensure!(
        a <= b + slack && a + slack >= b,
        "Shmem: {b} kB before, {a} kB after unlink and umount"
    );
    Ok(res)
}
