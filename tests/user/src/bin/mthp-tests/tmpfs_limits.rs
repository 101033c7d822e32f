//! tmpfs limits and System V shared memory accounting as Linux 6.12
//! shows them: `size=` and `nr_inodes=` (ENOSPC on write and create,
//! SIGBUS on a fault), `statfs`/`fstatfs`, the options in `/proc/mounts`,
//! and `/proc/sysvipc/shm`.

use super::*;
use mthp_user::Msg;

const MNT: &[u8] = b"/tmp/mthp-limits\0";
const TMPFS_MAGIC: u64 = 0x0102_1994;
const SIGBUS: i32 = 7;
const AT_FDCWD: usize = -100isize as usize;

fn e(r: isize) -> i32 {
    if r < 0 { -(r as i32) } else { 0 }
}

/// `struct statfs` as longs: type, bsize, blocks, bfree, bavail, files,
/// ffree, fsid, namelen, frsize, flags, spare.
fn statfs_words(r: isize, b: &[u8; 120]) -> Result<[u64; 15], i32> {
    if r < 0 {
        return Err(-(r as i32));
    }
    Ok(core::array::from_fn(|k| {
        u64::from_le_bytes(b[k * 8..k * 8 + 8].try_into().unwrap_or_default())
    }))
}

fn statfs(path: &[u8]) -> Result<[u64; 15], i32> {
    let mut b = [0u8; 120];
    let r = sys::syscall(
        sys::nr::STATFS,
        &[path.as_ptr() as usize, b.as_mut_ptr() as usize],
    );
    statfs_words(r, &b)
}

fn fstatfs(fd: isize) -> Result<[u64; 15], i32> {
    let mut b = [0u8; 120];
    let r = sys::syscall(sys::nr::FSTATFS, &[fd as usize, b.as_mut_ptr() as usize]);
    statfs_words(r, &b)
}

fn create(path: &[u8]) -> isize {
    sys::syscall(
        sys::nr::OPENAT,
        &[
            AT_FDCWD,
            path.as_ptr() as usize,
            sys::O_RDWR | 0o100 | 0o200,
            0o600,
        ],
    )
}

fn unlink(path: &[u8]) -> isize {
    sys::syscall(sys::nr::UNLINKAT, &[AT_FDCWD, path.as_ptr() as usize, 0])
}

fn pwrite(fd: isize, buf: &[u8], off: usize) -> isize {
    sys::syscall(
        sys::nr::PWRITE64,
        &[fd as usize, buf.as_ptr() as usize, buf.len(), off],
    )
}

fn mount_at(opts: &[u8]) -> Result<(), Msg> {
    let r = sys::syscall(sys::nr::MKDIRAT, &[AT_FDCWD, MNT.as_ptr() as usize, 0o755]);
    ensure!(r == 0 || e(r) == sys::EEXIST, "mkdir: {r}");
    let r = mthp_user::mount_tmpfs(MNT, opts);
    ensure!(r == 0, "mount tmpfs -o {:?}: {r}", opts);
    Ok(())
}

fn umount() -> isize {
    sys::syscall(sys::nr::UMOUNT2, &[MNT.as_ptr() as usize, 0])
}

/// The `/proc/mounts` line of [`MNT`] contains `want`.
fn mounts_line_has(want: &[u8]) -> bool {
    let mut buf = [0u8; 8192];
    let Ok(n) = read_file(b"/proc/mounts\0", &mut buf) else {
        return false;
    };
    let point = &MNT[..MNT.len() - 1];
    buf[..n].split(|&c| c == b'\n').any(|l| {
        let mut f = l.split(|&c| c == b' ');
        f.nth(1) == Some(point)
            && f.nth(1)
                .is_some_and(|opts| opts.windows(want.len()).any(|w| w == want))
    })
}

/// A 64 KiB, 4-inode tmpfs: `statfs` counts 16 blocks and 4 inodes (the
/// root directory holds one); a write past 16 pages is short, the next
/// ENOSPC; a fault on a hole of the full mount SIGBUS; creating files and
/// directories past `nr_inodes` ENOSPC, and unlinking gives the inode
/// back; a punched hole gives its blocks back; `/proc/mounts` shows
/// `size=64k,nr_inodes=4`; a memfd reports Linux's unlimited internal
/// mount (tmpfs, no blocks, no inodes).
pub(crate) fn tmpfs_size_and_nr_inodes() -> TestResult {
    mount_at(b"size=64k,nr_inodes=4\0")?;
    let r = limits_body();
    let u = umount();
    let _ = sys::syscall(sys::nr::UNLINKAT, &[AT_FDCWD, MNT.as_ptr() as usize, 0x200]);
    r?;
    ensure!(u == 0, "umount2: {u}");
    Ok(Outcome::Pass)
}

fn limits_body() -> TestResult {
    ensure!(
        mounts_line_has(b"size=64k,nr_inodes=4"),
        "/proc/mounts line of the mount lacks size=64k,nr_inodes=4"
    );
    let s = statfs(MNT).map_err(|x| Msg::new(format_args!("statfs: errno {x}")))?;
    ensure!(s[0] == TMPFS_MAGIC, "f_type {:#x}", s[0]);
    ensure!(s[1] == 4096, "f_bsize {}", s[1]);
    ensure!(
        s[2] == 16 && s[3] == 16 && s[4] == 16,
        "f_blocks/bfree/bavail {} {} {}, expected 16",
        s[2],
        s[3],
        s[4]
    );
    ensure!(s[5] == 4, "f_files {}, expected 4", s[5]);
    let free_inodes = s[6];
    ensure!(
        (1..=3).contains(&free_inodes),
        "f_ffree {free_inodes}: the root directory holds one of 4"
    );
    let f1 = b"/tmp/mthp-limits/a\0";
    let fd = create(f1);
    ensure!(fd >= 0, "create: {fd}");
    let res = limits_file(fd, free_inodes);
    sys::close(fd as i32);
    res?;
    ensure!(unlink(f1) == 0, "unlink");
    let s = statfs(MNT).map_err(|x| Msg::new(format_args!("statfs: errno {x}")))?;
    ensure!(
        s[3] == 16 && s[6] == free_inodes,
        "after unlink: f_bfree {} f_ffree {}, expected 16 and {free_inodes}",
        s[3],
        s[6]
    );
    // A memfd lives on Linux's internal mount: tmpfs, unlimited.
    let m = sys::syscall(sys::nr::MEMFD_CREATE, &[c"lim".as_ptr() as usize, 0]);
    ensure!(m >= 0, "memfd_create: {m}");
    let ms = fstatfs(m);
    sys::close(m as i32);
    let ms = ms.map_err(|x| Msg::new(format_args!("fstatfs(memfd): errno {x}")))?;
    ensure!(
        ms[0] == TMPFS_MAGIC && ms[2] == 0 && ms[5] == 0,
        "memfd fstatfs: type {:#x} blocks {} files {}",
        ms[0],
        ms[2],
        ms[5]
    );
    Ok(Outcome::Pass)
}

fn limits_file(fd: isize, free_inodes: u64) -> TestResult {
    let s = fstatfs(fd).map_err(|x| Msg::new(format_args!("fstatfs: errno {x}")))?;
    ensure!(
        s[0] == TMPFS_MAGIC && s[6] == free_inodes - 1,
        "fstatfs after a create: type {:#x} ffree {}, expected {}",
        s[0],
        s[6],
        free_inodes - 1
    );
    let page = [0x5au8; 4096];
    for k in 0..8 {
        let w = pwrite(fd, &page, k * 4096);
        ensure!(w == 4096, "pwrite page {k}: {w}");
    }
    let s = fstatfs(fd).map_err(|x| Msg::new(format_args!("fstatfs: errno {x}")))?;
    ensure!(s[3] == 8, "f_bfree {} after 8 pages, expected 8", s[3]);
    // 12 pages more in one write: 8 fit.
    let big = [0x6bu8; 12 * 4096];
    let w = pwrite(fd, &big, 8 * 4096);
    ensure!(
        w == 8 * 4096,
        "write past size=: {w}, expected a short 32768"
    );
    let w = pwrite(fd, &page, 16 * 4096);
    ensure!(
        e(w) == sys::ENOSPC,
        "write on the full mount: {w}, expected ENOSPC"
    );
    let s = fstatfs(fd).map_err(|x| Msg::new(format_args!("fstatfs: errno {x}")))?;
    ensure!(
        s[3] == 0 && s[4] == 0,
        "full: f_bfree {} f_bavail {}",
        s[3],
        s[4]
    );
    // A fault that needs a page of the full mount: SIGBUS.
    let r = sys::syscall(sys::nr::FTRUNCATE, &[fd as usize, 24 * 4096]);
    ensure!(r == 0, "ftruncate: {r}");
    let a = sys::mmap(
        0,
        24 * 4096,
        sys::PROT_READ | sys::PROT_WRITE,
        sys::MAP_SHARED,
        fd,
        0,
    );
    ensure!(a > 0, "mmap: {a}");
    let m = Mem {
        addr: a as usize,
        len: 24 * 4096,
    };
    let old = m.peek(5 * 4096);
    m.poke(5 * 4096, 1);
    let st = in_child(|| {
        m.poke(20 * 4096, 1);
        0
    });
    unmap(&m);
    ensure!(old == 0x5a, "a written page maps {old:#x}");
    let st = st?;
    ensure!(
        wifsignaled(st) && wtermsig(st) == SIGBUS,
        "fault on a hole of the full mount: status {st:#x}, expected SIGBUS"
    );
    // Punch 4 pages: their blocks come back.
    let r = sys::syscall(sys::nr::FALLOCATE, &[fd as usize, 3, 4 * 4096, 4 * 4096]);
    ensure!(r == 0, "fallocate(PUNCH_HOLE): {r}");
    let s = fstatfs(fd).map_err(|x| Msg::new(format_args!("fstatfs: errno {x}")))?;
    ensure!(s[3] == 4, "f_bfree {} after punching 4 pages", s[3]);
    // Inodes: the rest can be made (files or directories), then ENOSPC.
    let names: [&[u8]; 3] = [
        b"/tmp/mthp-limits/b\0",
        b"/tmp/mthp-limits/c\0",
        b"/tmp/mthp-limits/d\0",
    ];
    let mut made = 0;
    let mut last = 0;
    for n in names {
        let f = create(n);
        if f < 0 {
            last = f;
            break;
        }
        sys::close(f as i32);
        made += 1;
    }
    let dir = sys::syscall(
        sys::nr::MKDIRAT,
        &[AT_FDCWD, c"/tmp/mthp-limits/dir".as_ptr() as usize, 0o755],
    );
    let free_then = fstatfs(fd).map(|s| s[6]);
    for n in &names[..made] {
        unlink(n);
    }
    let again = create(names[0]);
    if again >= 0 {
        sys::close(again as i32);
        unlink(names[0]);
    }
    ensure!(
        made as u64 == free_inodes - 1 && e(last) == sys::ENOSPC,
        "made {made} files with {} inodes free (then {last}), expected ENOSPC after them",
        free_inodes - 1
    );
    ensure!(e(dir) == sys::ENOSPC, "mkdir with no inode left: {dir}");
    ensure!(
        free_then == Ok(0),
        "f_ffree when out of inodes: {free_then:?}"
    );
    ensure!(again >= 0, "create after unlinking: {again}");
    Ok(Outcome::Pass)
}

/// `size=` forms as Linux's `memparse`: suffixes, `%` of RAM, 0 for no
/// limit (`f_blocks` 0), `nr_blocks=`; a bad suffix is EINVAL.
pub(crate) fn tmpfs_size_options() -> TestResult {
    let cases: [(&[u8], u64, u64); 4] = [
        (b"size=1m,nr_inodes=1k\0", 256, 1024),
        (b"size=0x2000\0", 2, u64::MAX),
        (b"nr_blocks=3,size=0\0", 0, u64::MAX),
        (b"nr_blocks=5\0", 5, u64::MAX),
    ];
    for (opts, blocks, files) in cases {
        mount_at(opts)?;
        let s = statfs(MNT);
        let u = umount();
        let s = s.map_err(|x| Msg::new(format_args!("statfs -o {:?}: errno {x}", opts)))?;
        ensure!(u == 0, "umount2: {u}");
        ensure!(
            s[2] == blocks && (files == u64::MAX || s[5] == files),
            "-o {:?}: f_blocks {} f_files {}, expected {blocks} {files}",
            opts,
            s[2],
            s[5]
        );
    }
    mount_at(b"size=10%\0")?;
    let s = statfs(MNT);
    let u = umount();
    ensure!(u == 0, "umount2: {u}");
    let s = s.map_err(|x| Msg::new(format_args!("statfs -o size=10%: errno {x}")))?;
    ensure!(s[2] > 0, "size=10%: f_blocks {}", s[2]);
    for bad in [&b"size=12q\0"[..], b"nr_inodes=1%\0", b"size=\0"] {
        let r = mthp_user::mount_tmpfs(MNT, bad);
        if r == 0 {
            umount();
        }
        ensure!(
            e(r) == sys::EINVAL,
            "mount -o {:?}: {r}, expected EINVAL",
            bad
        );
    }
    let _ = sys::syscall(sys::nr::UNLINKAT, &[AT_FDCWD, MNT.as_ptr() as usize, 0x200]);
    Ok(Outcome::Pass)
}

const IPC_PRIVATE: usize = 0;
const IPC_CREAT: usize = 0o1000;
const IPC_RMID: usize = 0;
const IPC_STAT: usize = 2;

fn shm_stat(id: isize) -> Result<[u8; 112], i32> {
    let mut b = [0u8; 112];
    let r = sys::syscall(
        sys::nr::SHMCTL,
        &[id as usize, IPC_STAT, b.as_mut_ptr() as usize],
    );
    if r < 0 { Err(-(r as i32)) } else { Ok(b) }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or_default())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap_or_default())
}

const SYSVIPC_SHM_HEADER: &[u8] = b"       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap";

/// The `/proc/sysvipc/shm` line of segment `id`, rebuilt from its
/// `IPC_STAT` with Linux's widths, equals the file's (the header too).
fn sysvipc_line_matches(id: isize, rss: &dyn Fn(u64) -> bool) -> Result<(), Msg> {
    let mut buf = [0u8; 16384];
    let n = read_file(b"/proc/sysvipc/shm\0", &mut buf)
        .map_err(|x| Msg::new(format_args!("read /proc/sysvipc/shm: errno {x}")))?;
    let mut lines = buf[..n].split(|&c| c == b'\n');
    let head = lines.next().unwrap_or_default();
    ensure!(
        head == SYSVIPC_SHM_HEADER,
        "header {:?}",
        core::str::from_utf8(head).unwrap_or("?")
    );
    let ds = shm_stat(id).map_err(|x| Msg::new(format_args!("IPC_STAT: errno {x}")))?;
    let line = lines
        .find(|l| {
            l.split(|&c| c == b' ')
                .filter(|f| !f.is_empty())
                .nth(1)
                .is_some_and(|f| f == Msg::new(format_args!("{id}")).as_str().as_bytes())
        })
        .ok_or_else(|| Msg::new(format_args!("no line for shmid {id}")))?;
    // The rss field (the last but one) is checked by `rss`; the rest must
    // be the IPC_STAT values at Linux's widths.
    let fields: [&[u8]; 16] = {
        let mut it = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
        core::array::from_fn(|_| it.next().unwrap_or_default())
    };
    let rss_bytes = core::str::from_utf8(fields[14])
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    ensure!(
        rss_bytes.is_some_and(rss),
        "rss {:?}",
        core::str::from_utf8(fields[14])
    );
    let want = Msg::new(format_args!(
        "{:>10} {:>10}  {:>4o} {:>21} {:>5} {:>5}  {:>5} {:>5} {:>5} {:>5} {:>5} {:>10} {:>10} {:>10} {:>21} {:>21}",
        u32_at(&ds, 0) as i32,
        id,
        u32_at(&ds, 20),
        u64_at(&ds, 48),
        u32_at(&ds, 80),
        u32_at(&ds, 84),
        u64_at(&ds, 88),
        u32_at(&ds, 4),
        u32_at(&ds, 8),
        u32_at(&ds, 12),
        u32_at(&ds, 16),
        u64_at(&ds, 56),
        u64_at(&ds, 64),
        u64_at(&ds, 72),
        rss_bytes.unwrap_or(0),
        0
    ));
    ensure!(
        line == want.as_str().as_bytes(),
        "line {:?}",
        core::str::from_utf8(line).unwrap_or("?")
    );
    Ok(())
}

/// `/proc/sysvipc/shm` as `ipcs` reads it: Linux's header and one line per
/// segment with key, id, octal perms, size, creator and last pids,
/// attaches, owners, times, resident and swapped bytes; attached with 3
/// pages touched it shows 1 attach and at least 12 KiB resident, after
/// `shmdt` 0 attaches and a detach time; after `IPC_RMID` no line.
pub(crate) fn proc_sysvipc_shm() -> TestResult {
    let len = 16 * 4096;
    let id = sys::syscall(sys::nr::SHMGET, &[IPC_PRIVATE, len, IPC_CREAT | 0o640]);
    ensure!(id >= 0, "shmget: {id}");
    let r = (|| {
        sysvipc_line_matches(id, &|r| r == 0)?;
        let a = sys::syscall(sys::nr::SHMAT, &[id as usize, 0, 0]);
        ensure!(a > 0, "shmat: {a}");
        let m = Mem {
            addr: a as usize,
            len,
        };
        for k in 0..3 {
            m.poke(k * 4096, 7);
        }
        let attached = sysvipc_line_matches(id, &|r| (3 * 4096..=len as u64).contains(&r));
        let ds = shm_stat(id);
        let d = sys::syscall(sys::nr::SHMDT, &[a as usize]);
        attached?;
        ensure!(d == 0, "shmdt: {d}");
        let ds = ds.map_err(|x| Msg::new(format_args!("IPC_STAT: errno {x}")))?;
        ensure!(
            u64_at(&ds, 88) == 1,
            "nattch {} while attached",
            u64_at(&ds, 88)
        );
        ensure!(
            u64_at(&ds, 56) >= u64_at(&ds, 72),
            "atime {} before ctime {}",
            u64_at(&ds, 56),
            u64_at(&ds, 72)
        );
        sysvipc_line_matches(id, &|r| (3 * 4096..=len as u64).contains(&r))?;
        let ds = shm_stat(id).map_err(|x| Msg::new(format_args!("IPC_STAT: errno {x}")))?;
        ensure!(
            u64_at(&ds, 88) == 0 && u64_at(&ds, 64) >= u64_at(&ds, 56),
            "after shmdt: nattch {} dtime {}",
            u64_at(&ds, 88),
            u64_at(&ds, 64)
        );
        Ok(Outcome::Pass)
    })();
    let rm = sys::syscall(sys::nr::SHMCTL, &[id as usize, IPC_RMID, 0]);
    let r = r?;
    ensure!(rm == 0, "IPC_RMID: {rm}");
    let gone = sysvipc_line_matches(id, &|_| true);
    ensure!(gone.is_err(), "a line for the removed segment {id}");
    Ok(r)
}
