//! Collapse of shmem ranges (Linux's `collapse_file`): a 2 MiB-aligned
//! `MAP_SHARED|MAP_ANONYMOUS` region and a memfd, written 4K page by 4K
//! page while `shmem_enabled` is `never`, become one PMD-mapped 2 MiB
//! folio after `MADV_COLLAPSE` (refused under `deny`), or after
//! khugepaged scans them once the policy allows it: smaps
//! `ShmemPmdMapped` and `/proc/meminfo` `ShmemHugePages` show 2048 kB,
//! the data is intact, and a forked child sharing the mapping sees it.

use super::*;

const MADV_COLLAPSE: usize = 25;

/// A THP text knob (`shmem_enabled`, `hugepages-2048kB/shmem_enabled`,
/// khugepaged's numbers) as it was, to put back.
struct Saved {
    path: mthp_user::Path,
    word: [u8; 16],
    ok: bool,
}

impl Saved {
    fn take(path: mthp_user::Path) -> Saved {
        let mut buf = [0u8; 128];
        let mut word = [0u8; 16];
        let ok = match read_file(path.c(), &mut buf) {
            Ok(n) => {
                let b = &buf[..n];
                let w = if b.contains(&b'[') {
                    selected(b)
                } else {
                    mthp_user::trim(b)
                };
                copy_word(&mut word, w);
                true
            }
            Err(_) => false,
        };
        Saved { path, word, ok }
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        if self.ok {
            let _ = write_file(self.path.c(), word(&self.word));
        }
    }
}

fn set(p: &mthp_user::Path, v: &[u8]) -> Result<(), mthp_user::Msg> {
    write_file(p.c(), v).map_err(|e| {
        mthp_user::Msg::new(format_args!(
            "cannot write {} = {} (errno {e})",
            core::str::from_utf8(&p.c()[..p.c().len() - 1]).unwrap_or("?"),
            core::str::from_utf8(v).unwrap_or("?")
        ))
    })
}

fn meminfo_kb(key: &[u8]) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(b"/proc/meminfo\0", &mut buf).ok()?;
    field(&buf[..n], key)
}

fn sleep_ms(ms: u64) {
    let ts = sys::Timespec {
        sec: (ms / 1000) as i64,
        nsec: ((ms % 1000) * 1_000_000) as i64,
    };
    sys::nanosleep(&ts);
}

/// The shmem knobs as this test wants them: top level `never`, the PMD
/// size `inherit` (Linux's defaults).  Saved first; `Err` is a skip.
fn shmem_knobs() -> Result<(Saved, Saved), mthp_user::Msg> {
    let top = Saved::take(path!("{THP}/shmem_enabled"));
    let pmd = Saved::take(path!("{THP}/hugepages-2048kB/shmem_enabled"));
    if !top.ok || !pmd.ok {
        return Err(mthp_user::Msg::new(format_args!(
            "no shmem_enabled knobs here"
        )));
    }
    set(&top.path, b"never")?;
    set(&pmd.path, b"inherit")?;
    Ok((top, pmd))
}

/// A 2 MiB-aligned shared mapping of `fd` (-1: shared anonymous).
fn map_shared(fd: i32) -> Result<Mem, mthp_user::Msg> {
    map_shared_len(fd, SZ_2M)
}

fn map_shared_len(fd: i32, len: usize) -> Result<Mem, mthp_user::Msg> {
    let hole = map_aligned(len, SZ_2M)?;
    let flags = sys::MAP_SHARED | sys::MAP_FIXED | if fd < 0 { sys::MAP_ANONYMOUS } else { 0 };
    let a = sys::mmap(
        hole.addr,
        len,
        sys::PROT_READ | sys::PROT_WRITE,
        flags,
        fd as isize,
        0,
    );
    if a < 0 {
        unmap(&hole);
        fail!("mmap(MAP_SHARED) at {:#x}: {a}", hole.addr);
    }
    Ok(Mem {
        addr: a as usize,
        len,
    })
}

/// After the collapse of `m`: one PMD mapping, the data, `ShmemHugePages`
/// up by 2 MiB since `huge0`, and a child sharing the mapping sees the
/// data and its write shows in the parent.
fn check_collapsed(m: &Mem, salt: u64, huge0: Option<u64>) -> TestResult {
    let pmd = smaps_field(m.addr, b"ShmemPmdMapped:");
    let huge = meminfo_kb(b"\nShmemHugePages:");
    ensure!(
        pmd == Some(2048),
        "ShmemPmdMapped {pmd:?} kB after the collapse"
    );
    if let (Some(b), Some(a)) = (huge0, huge) {
        ensure!(a >= b + 2048, "ShmemHugePages {b} kB -> {a} kB");
    } else {
        fail!("ShmemHugePages unreadable: {huge0:?} -> {huge:?}");
    }
    ensure!(
        verify(m, 0, m.len, salt).is_none(),
        "data changed by the collapse"
    );
    let st = in_child(|| {
        if verify(m, 0, m.len, salt).is_some() {
            return 2;
        }
        m.poke64(8 * PAGE, 0xfeed);
        0
    })?;
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "child saw other data (status {st:#x})"
    );
    ensure!(
        m.peek64(8 * PAGE) == 0xfeed,
        "the child's write does not show in the parent"
    );
    Ok(Outcome::Pass)
}

/// Shared anonymous memory: 4K pages written under `never`; `deny`
/// refuses `MADV_COLLAPSE` (EINVAL, still 4K); under `advise` it collapses.
pub(crate) fn shmem_collapse_shared_anon() -> TestResult {
    let (top, _pmd) = match shmem_knobs() {
        Ok(k) => k,
        Err(why) => return skip(why),
    };
    let m = map_shared(-1)?;
    fill(&m, 0x61);
    let r = (|| {
        let small = smaps_field(m.addr, b"ShmemPmdMapped:");
        ensure!(small == Some(0), "ShmemPmdMapped {small:?} kB before");
        set(&top.path, b"deny")?;
        let denied = sys::madvise(m.addr, m.len, MADV_COLLAPSE);
        ensure!(
            denied == -(sys::EINVAL as isize),
            "MADV_COLLAPSE under deny: {denied}"
        );
        let pmd = smaps_field(m.addr, b"ShmemPmdMapped:");
        ensure!(pmd == Some(0), "ShmemPmdMapped {pmd:?} kB under deny");
        set(&top.path, b"advise")?;
        let huge0 = meminfo_kb(b"\nShmemHugePages:");
        let r = sys::madvise(m.addr, m.len, MADV_COLLAPSE);
        ensure!(r == 0, "MADV_COLLAPSE: {r}");
        check_collapsed(&m, 0x61, huge0)
    })();
    unmap(&m);
    r
}

/// A memfd written through its mapping and `pwrite` (shmem_enabled
/// `never`, which `MADV_COLLAPSE` ignores): collapsed, `pread` and the
/// mapping agree.
pub(crate) fn shmem_collapse_memfd() -> TestResult {
    let _knobs = match shmem_knobs() {
        Ok(k) => k,
        Err(why) => return skip(why),
    };
    let fd = sys::syscall(sys::nr::MEMFD_CREATE, &[c"collapse".as_ptr() as usize, 0]);
    ensure!(fd >= 0, "memfd_create: {fd}");
    let fd = fd as i32;
    let r = (|| {
        let t = sys::syscall(sys::nr::FTRUNCATE, &[fd as usize, SZ_2M]);
        ensure!(t == 0, "ftruncate: {t}");
        let m = map_shared(fd)?;
        fill(&m, 0x62);
        let word = pattern(100 * PAGE, 0x62).to_ne_bytes();
        let w = sys::syscall(
            sys::nr::PWRITE64,
            &[fd as usize, word.as_ptr() as usize, 8, 100 * PAGE],
        );
        let huge0 = meminfo_kb(b"\nShmemHugePages:");
        let c = sys::madvise(m.addr, m.len, MADV_COLLAPSE);
        let r = (|| {
            ensure!(w == 8, "pwrite64: {w}");
            ensure!(c == 0, "MADV_COLLAPSE: {c}");
            let mut back = [0u8; 8];
            let n = sys::syscall(
                sys::nr::PREAD64,
                &[fd as usize, back.as_mut_ptr() as usize, 8, 300 * PAGE],
            );
            ensure!(
                n == 8 && back == pattern(300 * PAGE, 0x62).to_ne_bytes(),
                "pread64 after the collapse: {n} {back:?}"
            );
            check_collapsed(&m, 0x62, huge0)
        })();
        unmap(&m);
        r
    })();
    sys::close(fd);
    r
}

/// khugepaged (fast scans, anonymous PMD THP on so that Linux 6.12 runs
/// it) collapses a 4K-written shared anonymous region once
/// `shmem_enabled=advise` and `MADV_HUGEPAGE` allow the PMD size.
pub(crate) fn shmem_khugepaged_collapse() -> TestResult {
    let (top, _pmd) = match shmem_knobs() {
        Ok(k) => k,
        Err(why) => return skip(why),
    };
    if let Err(why) = thp_only(Some(2048)) {
        return skip(why);
    }
    let sleeps = [
        Saved::take(path!("{THP}/khugepaged/scan_sleep_millisecs")),
        Saved::take(path!("{THP}/khugepaged/alloc_sleep_millisecs")),
    ];
    let m = map_shared(-1)?;
    fill(&m, 0x63);
    let collapsed0 = read_counter(path!("{THP}/khugepaged/pages_collapsed"));
    let huge0 = meminfo_kb(b"\nShmemHugePages:");
    let r = (|| {
        let small = smaps_field(m.addr, b"ShmemPmdMapped:");
        ensure!(small == Some(0), "ShmemPmdMapped {small:?} kB before");
        set(&top.path, b"advise")?;
        let h = sys::madvise(m.addr, m.len, sys::MADV_HUGEPAGE);
        ensure!(h == 0, "MADV_HUGEPAGE: {h}");
        for s in &sleeps {
            set(&s.path, b"10")?;
        }
        let mut waited = 0;
        loop {
            // A collapsed range is unmapped everywhere; this read maps
            // it back, by a PMD.
            let _ = m.peek64(0);
            if smaps_field(m.addr, b"ShmemPmdMapped:") == Some(2048) || waited >= 10_000 {
                break;
            }
            sleep_ms(100);
            waited += 100;
        }
        let collapsed = read_counter(path!("{THP}/khugepaged/pages_collapsed"));
        ensure!(
            collapsed > collapsed0,
            "khugepaged pages_collapsed {collapsed0:?} -> {collapsed:?} in {waited} ms"
        );
        check_collapsed(&m, 0x63, huge0)
    })();
    unmap(&m);
    r
}

fn read_counter(p: mthp_user::Path) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = read_file(p.c(), &mut buf).ok()?;
    mthp_user::parse_u64(&buf[..n])
}

/// Ranges [`shmem_collapse_races_writer`] collapses.
const RACE_RANGES: usize = 8;

/// A child writes every page of eight shared 2 MiB ranges over and over
/// (pass `p` writes `p` into each page) while the parent collapses the
/// ranges one by one (retrying EAGAIN): when the child has finished its
/// last pass every page holds that pass's value (no write landed in a
/// page the collapse had already copied), and every range is PMD-mapped.
pub(crate) fn shmem_collapse_races_writer() -> TestResult {
    let _knobs = match shmem_knobs() {
        Ok(k) => k,
        Err(why) => return skip(why),
    };
    let len = RACE_RANGES * SZ_2M;
    let m = map_shared_len(-1, len)?;
    let ctl = match map_shared_len(-1, SZ_2M) {
        Ok(c) => c,
        Err(e) => {
            unmap(&m);
            return Err(e);
        }
    };
    let r = race_body(&m, &ctl);
    unmap(&ctl);
    unmap(&m);
    r
}

fn race_body(m: &Mem, ctl: &Mem) -> TestResult {
    let pages = m.len / PAGE;
    for i in 0..pages {
        m.poke64(i * PAGE, 0);
    }
    let pid = sys::fork();
    if pid == 0 {
        let mut p = 0u64;
        loop {
            let stop = ctl.peek64(0) != 0;
            p += 1;
            for i in 0..pages {
                m.poke64(i * PAGE, p);
            }
            if stop {
                break;
            }
        }
        ctl.poke64(8, p);
        sys::exit(0);
    }
    ensure!(pid > 0, "fork: {pid}");
    let mut failed = None;
    let mut retries = 0;
    for r in 0..RACE_RANGES {
        let mut tries = 0;
        loop {
            let c = sys::madvise(m.addr + r * SZ_2M, SZ_2M, MADV_COLLAPSE);
            if c == 0 {
                break;
            }
            tries += 1;
            if c != -(sys::EAGAIN as isize) || tries == 1000 {
                failed = Some((r, c, tries));
                break;
            }
        }
        retries += tries;
    }
    ctl.poke64(0, 1);
    let mut st = 0;
    let w = sys::wait4(pid, &mut st, 0);
    ensure!(w == pid, "wait4: {w}");
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "writer died (status {st:#x})"
    );
    if let Some((r, c, tries)) = failed {
        fail!("MADV_COLLAPSE of range {r}: {c} after {tries} tries");
    }
    let last = ctl.peek64(8);
    ensure!(last > 0, "the writer recorded no pass");
    for i in 0..pages {
        let v = m.peek64(i * PAGE);
        ensure!(
            v == last,
            "page {i} holds pass {v}, the writer's last pass was {last} ({retries} EAGAIN retries)"
        );
    }
    let pmd = smaps_field(m.addr, b"ShmemPmdMapped:");
    ensure!(
        pmd == Some((m.len >> 10) as u64),
        "ShmemPmdMapped {pmd:?} kB after collapsing {RACE_RANGES} ranges"
    );
    Ok(Outcome::Pass)
}
