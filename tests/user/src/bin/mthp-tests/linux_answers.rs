//! What a program observes that must match Linux 6.12 exactly: where the
//! huge zero page is (not) counted, and how root's opens of pseudo-files
//! are decided.  Each test passes on Linux (as root; as another user the
//! root-only parts skip) and on this kernel.

use super::*;

const USE_ZERO_PAGE: &[u8] = b"/sys/kernel/mm/transparent_hugepage/use_zero_page\0";

/// `AnonHugePages` of `/proc/meminfo`, in kB.
fn meminfo_anon_huge() -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(b"/proc/meminfo\0", &mut buf).ok()?;
    field(&buf[..n], b"AnonHugePages:")
}

/// A read fault on a THP-eligible 2 MiB range maps the huge zero page with
/// one PMD (one fault for the whole 2 MiB).  Linux never counts it in
/// `AnonHugePages`, neither in the mapping's smaps block nor in
/// `/proc/meminfo`: it is nobody's anonymous memory (before the fix this
/// kernel reported 2048 kB there; checked by reverting it once).  A write
/// then splits the PMD and copies one 4K page, as Linux 6.12 does.
pub fn huge_zero_page_not_anon_huge() -> TestResult {
    if let Err(why) = thp_only(Some(2048)) {
        return skip(why);
    }
    let mut buf = [0u8; 8];
    match read_file(USE_ZERO_PAGE, &mut buf) {
        Ok(n) if buf[..n].starts_with(b"1") => {}
        Ok(_) => {
            return skip(mthp_user::Msg::new(format_args!("use_zero_page is off")));
        }
        Err(e) => fail!("use_zero_page: errno {e}"),
    }
    let m = map_aligned(2 * SZ_2M, SZ_2M)?;
    let r = (|| {
        let before = meminfo_anon_huge();
        let f0 = minflt();
        let mut sum = 0u64;
        let mut off = 0;
        while off < SZ_2M {
            sum += u64::from(m.peek(off));
            off += PAGE;
        }
        let faults = minflt() - f0;
        ensure!(sum == 0, "a read of fresh anonymous memory was not zero");
        ensure!(
            faults == 1,
            "{faults} faults to read 2 MiB: the huge zero page was not PMD-mapped"
        );
        let huge = smaps_field(m.addr, b"AnonHugePages:");
        ensure!(
            huge == Some(0),
            "smaps AnonHugePages = {huge:?} kB with only the huge zero page mapped, expected 0"
        );
        // Other processes (on a Linux host) may change the global figure;
        // ours would add 2048 kB.
        let after = meminfo_anon_huge();
        ensure!(
            matches!((before, after), (Some(b), Some(a)) if a < b + 2048),
            "/proc/meminfo AnonHugePages went from {before:?} to {after:?} kB for the huge zero page"
        );
        // Linux 6.12 splits the huge zero PMD on a write and copies one
        // 4K page (6.13 allocates a PMD folio instead; this kernel does that
        // only with `huge_zero_wp=alloc`).
        m.poke(PAGE, 1);
        ensure!(
            m.peek(PAGE) == 1 && m.peek(0) == 0 && m.peek(2 * PAGE) == 0,
            "data wrong after the write"
        );
        let huge = smaps_field(m.addr, b"AnonHugePages:");
        ensure!(
            huge == Some(0),
            "smaps AnonHugePages = {huge:?} kB after a write to the huge zero page, expected 0 (split, 4K copy)"
        );
        let rss = smaps_field(m.addr, b"Anonymous:");
        ensure!(
            rss == Some(4),
            "smaps Anonymous = {rss:?} kB after one write, expected 4"
        );
        Ok(Outcome::Pass)
    })();
    unmap(&m);
    r
}

fn geteuid() -> isize {
    sys::syscall(sys::nr::GETEUID, &[])
}

/// How an open of a pseudo-file by root ends, then what the first read or
/// write on it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// `open` fails with this errno.
    AtOpen(i32),
    /// `open` succeeds; a one-byte write fails with this errno.
    OnWrite(i32),
    /// `open` succeeds; a read fails with this errno.
    OnRead(i32),
}

/// Root passes every permission check on mode bits (`CAP_DAC_OVERRIDE`);
/// what then refuses is the file's own operations.  So a read-only procfs
/// file opens for writing and the write fails (EIO for single-`show`
/// files, EINVAL where the file has no write method), debugfs's write-only
/// `split_huge_pages` opens for reading and the read fails (EINVAL), and
/// sysfs refuses at open a direction its attribute has no method for
/// (EACCES).  Before, this kernel refused such opens on the mode bits
/// with EACCES.  Also `O_DIRECTORY` on a file (ENOTDIR) and `O_DIRECT`
/// on pseudo-files (EINVAL; before, ignored here: arm64's `O_DIRECT` is
/// x86's `O_DIRECTORY` value, which hid it).  Runs as root only (skips
/// otherwise).
pub fn root_opens_pseudo_files_as_linux() -> TestResult {
    if geteuid() != 0 {
        return skip(mthp_user::Msg::new(format_args!("not root")));
    }
    let rows: &[(&[u8], usize, Refused)] = &[
        (
            b"/proc/meminfo\0",
            sys::O_WRONLY,
            Refused::OnWrite(sys::EIO),
        ),
        (b"/proc/vmstat\0", sys::O_WRONLY, Refused::OnWrite(sys::EIO)),
        (
            b"/proc/buddyinfo\0",
            sys::O_WRONLY,
            Refused::OnWrite(sys::EIO),
        ),
        (
            b"/proc/cmdline\0",
            sys::O_WRONLY,
            Refused::OnWrite(sys::EIO),
        ),
        (
            b"/proc/kpageflags\0",
            sys::O_WRONLY,
            Refused::OnWrite(sys::EIO),
        ),
        (
            b"/proc/self/smaps\0",
            sys::O_WRONLY,
            Refused::OnWrite(sys::EINVAL),
        ),
        (
            b"/proc/self/maps\0",
            sys::O_WRONLY,
            Refused::OnWrite(sys::EINVAL),
        ),
        (
            b"/proc/self/pagemap\0",
            sys::O_WRONLY,
            Refused::OnWrite(sys::EINVAL),
        ),
        (
            b"/sys/kernel/debug/split_huge_pages\0",
            sys::O_RDONLY,
            Refused::OnRead(sys::EINVAL),
        ),
        (
            b"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size\0",
            sys::O_WRONLY,
            Refused::AtOpen(sys::EACCES),
        ),
        (
            b"/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats/anon_fault_alloc\0",
            sys::O_WRONLY,
            Refused::AtOpen(sys::EACCES),
        ),
        (
            b"/sys/devices/system/cpu/online\0",
            sys::O_WRONLY,
            Refused::AtOpen(sys::EACCES),
        ),
        // Open flags the file's type refuses: O_DIRECTORY on a file, and
        // O_DIRECT where the file system has no direct I/O.
        (
            b"/proc/meminfo\0",
            sys::O_RDONLY | sys::O_DIRECTORY,
            Refused::AtOpen(sys::ENOTDIR),
        ),
        (
            b"/proc/meminfo\0",
            sys::O_RDONLY | sys::O_DIRECT,
            Refused::AtOpen(sys::EINVAL),
        ),
        (
            b"/sys/kernel/mm/transparent_hugepage/enabled\0",
            sys::O_RDONLY | sys::O_DIRECT,
            Refused::AtOpen(sys::EINVAL),
        ),
    ];
    for &(path, flags, want) in rows {
        let name = core::str::from_utf8(&path[..path.len() - 1]).unwrap_or("?");
        let fd = sys::open(path, flags);
        let got = if fd < 0 {
            Refused::AtOpen(-fd as i32)
        } else {
            let fd = fd as i32;
            let r = match want {
                Refused::OnRead(_) => {
                    let r = sys::read(fd, &mut [0u8; 64]);
                    if r < 0 {
                        Refused::OnRead(-r as i32)
                    } else {
                        Refused::OnRead(0)
                    }
                }
                _ => {
                    // A byte no file here accepts as input, so nothing is
                    // changed should a write be accepted.
                    let r = sys::write(fd, b"?");
                    if r < 0 {
                        Refused::OnWrite(-r as i32)
                    } else {
                        Refused::OnWrite(0)
                    }
                }
            };
            sys::close(fd);
            r
        };
        ensure!(got == want, "{name}: {got:?}, expected {want:?}");
    }
    Ok(Outcome::Pass)
}
