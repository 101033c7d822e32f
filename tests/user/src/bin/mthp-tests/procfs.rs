//! What `/proc` and `/sys` report: knob formats, meminfo/vmstat,
//! buddyinfo, smaps (AnonHugePages, layout as Linux), prctl THP disable,
//! pagemap and kpageflags.

use super::*;

pub(crate) fn sysfs_knob_formats() -> TestResult {
    let mut buf = [0u8; 128];
    let n = match read_file(path!("{THP}/enabled").c(), &mut buf) {
        Ok(n) => n,
        Err(e) => {
            return skip(mthp_user::Msg::new(format_args!(
                "no THP sysfs (errno {e})"
            )));
        }
    };
    let s = &buf[..n];
    ensure!(
        s.ends_with(b"\n") && !selected(s).is_empty(),
        "enabled = {:?}",
        core::str::from_utf8(s)
    );
    let n = read_file(path!("{THP}/hpage_pmd_size").c(), &mut buf).unwrap_or(0);
    ensure!(
        mthp_user::parse_u64(&buf[..n]) == Some(SZ_2M as u64),
        "hpage_pmd_size"
    );
    let r = write_file(path!("{THP}/hugepages-64kB/enabled").c(), b"sometimes");
    // A non-root user on Linux cannot open the knob for writing: the
    // EINVAL check cannot run there, and the test says so (a skip) after
    // the checks that can.
    let no_write = r == Err(sys::EACCES) && !on_mthp();
    ensure!(
        r == Err(sys::EINVAL) || no_write,
        "writing a bad word gave {r:?}, expected EINVAL"
    );
    let n = read_file(path!("{THP}/hugepages-64kB/enabled").c(), &mut buf).unwrap_or(0);
    ensure!(
        buf[..n].starts_with(b"always inherit madvise never") || !selected(&buf[..n]).is_empty(),
        "hugepages-64kB/enabled = {:?}",
        core::str::from_utf8(&buf[..n])
    );
    let r = write_file(
        path!("{THP}/hugepages-64kB/stats/anon_fault_alloc").c(),
        b"0",
    );
    ensure!(
        r == Err(sys::EACCES),
        "writing a counter gave {r:?}, expected EACCES"
    );
    ensure!(
        stat(64, "anon_fault_alloc").is_some(),
        "cannot read 64kB anon_fault_alloc"
    );
    if no_write {
        return skip(mthp_user::Msg::new(format_args!(
            "the knobs are not writable (not root): the bad-word EINVAL check did not run"
        )));
    }
    Ok(Outcome::Pass)
}

pub(crate) fn proc_files() -> TestResult {
    let mut buf = [0u8; 4096];
    let n = match read_file(b"/proc/meminfo\0", &mut buf) {
        Ok(n) => n,
        Err(e) => fail!("/proc/meminfo: errno {e}"),
    };
    let m = &buf[..n];
    for k in [
        &b"MemTotal:"[..],
        b"MemFree:",
        b"AnonPages:",
        b"AnonHugePages:",
        b"Dirty:",
        b"Writeback:",
    ] {
        ensure!(
            field(m, k).is_some(),
            "/proc/meminfo lacks {:?}",
            core::str::from_utf8(k)
        );
    }
    ensure!(
        field(m, b"MemTotal:") >= field(m, b"MemFree:"),
        "MemTotal < MemFree"
    );
    let mut big = [0u8; 16384];
    let n = match read_file(b"/proc/vmstat\0", &mut big) {
        Ok(n) => n,
        Err(e) => fail!("/proc/vmstat: errno {e}"),
    };
    for k in [&b"thp_fault_alloc "[..], b"nr_writeback ", b"nr_dirty "] {
        ensure!(
            field(&big[..n], k).is_some(),
            "/proc/vmstat lacks {:?}",
            core::str::from_utf8(k)
        );
    }
    let fd = sys::open(b"/dev/console\0", sys::O_WRONLY);
    if fd >= 0 {
        sys::close(fd as i32);
    }
    Ok(Outcome::Pass)
}

/// Free pages on the buddy lists per `/proc/buddyinfo`: every line is
/// `Node N, zone NAME` and one free-block count per order 0..=10 (Linux's
/// 11 orders with 4 KiB pages); returns the pages they add up to.
pub(crate) fn buddyinfo_pages() -> Result<u64, mthp_user::Msg> {
    let mut buf = [0u8; 2048];
    let n = match read_file(b"/proc/buddyinfo\0", &mut buf) {
        Ok(n) => n,
        Err(e) => fail!("/proc/buddyinfo: errno {e}"),
    };
    let mut pages = 0u64;
    let mut zones = 0;
    for line in buf[..n].split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        let mut words = line.split(|&c| c == b' ').filter(|w| !w.is_empty());
        let head: [Option<&[u8]>; 4] = core::array::from_fn(|_| words.next());
        ensure!(
            head[0] == Some(b"Node") && head[2] == Some(b"zone") && head[3].is_some(),
            "/proc/buddyinfo line {:?} is not 'Node N, zone NAME ...'",
            core::str::from_utf8(line)
        );
        let mut orders = 0;
        for w in words {
            let Some(c) = mthp_user::parse_u64(w) else {
                fail!("/proc/buddyinfo: count {:?}", core::str::from_utf8(w));
            };
            pages += c << orders;
            orders += 1;
        }
        ensure!(
            orders == 11,
            "/proc/buddyinfo zone with {orders} orders, expected 11"
        );
        zones += 1;
    }
    ensure!(zones > 0, "/proc/buddyinfo lists no zone");
    Ok(pages)
}

/// `/proc/buddyinfo` (and the root-only `/proc/pagetypeinfo`) in Linux's
/// layout, and tracking memory: the buddy lists never hold more than
/// MemFree (which adds the per-CPU caches), and faulting in 16 MiB of 2 MiB
/// folios takes at least 8 MiB off them (the rest may come from per-CPU
/// caches) until the munmap.
pub(crate) fn buddyinfo_tracks_free_memory() -> TestResult {
    let before = buddyinfo_pages()?;
    let mut buf = [0u8; 4096];
    let n = match read_file(b"/proc/meminfo\0", &mut buf) {
        Ok(n) => n,
        Err(e) => fail!("/proc/meminfo: errno {e}"),
    };
    let free_kb = field(&buf[..n], b"MemFree:").unwrap_or(0);
    ensure!(
        before * 4 <= free_kb,
        "buddyinfo lists {} kB free, more than MemFree {free_kb} kB",
        before * 4
    );
    let mut big = [0u8; 8192];
    match read_file(b"/proc/pagetypeinfo\0", &mut big) {
        Ok(n) => {
            let t = &big[..n];
            ensure!(
                t.starts_with(b"Page block order: ")
                    && t.windows(24).any(|w| w == b"Free pages count per mig")
                    && t.windows(22).any(|w| w == b"Number of blocks type ")
                    && t.windows(7).any(|w| w == b"Movable"),
                "/proc/pagetypeinfo is not in Linux's layout"
            );
        }
        // Root-only on Linux (0400); this kernel lets anyone read it.
        Err(sys::EACCES) if !on_mthp() => {
            return skip(mthp_user::Msg::new(format_args!(
                "/proc/pagetypeinfo is root-only here (not root)"
            )));
        }
        Err(e) => fail!("/proc/pagetypeinfo: errno {e}"),
    }
    if let Err(why) = thp_only(Some(2048)) {
        return skip(why);
    }
    let len = 16 << 20;
    let m = map_aligned(len, SZ_2M)?;
    touch_pages(&m, 1);
    let during = buddyinfo_pages()?;
    unmap(&m);
    ensure!(
        during + (len as u64 / PAGE as u64) / 2 <= before,
        "faulting in 16 MiB took only {} pages off the buddy lists ({before} -> {during})",
        before.saturating_sub(during)
    );
    Ok(Outcome::Pass)
}

pub(crate) fn smaps_anon_huge_pages() -> TestResult {
    if let Err(why) = thp_only(Some(2048)) {
        return skip(why);
    }
    let m = map_aligned(2 * SZ_2M, SZ_2M)?;
    touch_pages(&m, 3);
    // Find our mapping's block in /proc/self/smaps: the header line starts
    // with the start address in hex.
    let mut hdr = [0u8; 20];
    let hl = hex(m.addr, &mut hdr);
    let mut buf = [0u8; 32768];
    let n = match read_file(b"/proc/self/smaps\0", &mut buf) {
        Ok(n) => n,
        Err(e) => {
            unmap(&m);
            fail!("/proc/self/smaps: errno {e}")
        }
    };
    let s = &buf[..n];
    let mut found = None;
    let mut i = 0;
    while i < s.len() {
        let line_end = s[i..]
            .iter()
            .position(|&c| c == b'\n')
            .map(|p| i + p)
            .unwrap_or(s.len());
        if s[i..line_end].starts_with(&hdr[..hl]) && s.get(i + hl) == Some(&b'-') {
            found = field(&s[i..], b"AnonHugePages:");
            break;
        }
        i = line_end + 1;
    }
    unmap(&m);
    ensure!(
        found.is_some(),
        "mapping {:#x} not found in /proc/self/smaps",
        m.addr
    );
    ensure!(
        found == Some(4096),
        "AnonHugePages = {found:?} kB, expected 4096"
    );
    Ok(Outcome::Pass)
}

/// The `/proc/self/smaps` block of the mapping starting at `addr`, copied
/// into `out` (header line included); its length.
pub(crate) fn smaps_block(addr: usize, out: &mut [u8]) -> usize {
    let mut hdr = [0u8; 20];
    let hl = hex(addr, &mut hdr);
    let mut buf = [0u8; 32768];
    let Ok(n) = read_file(b"/proc/self/smaps\0", &mut buf) else {
        return 0;
    };
    let s = &buf[..n];
    let mut i = 0;
    let mut start: Option<usize> = None;
    while i < s.len() {
        let line_end = s[i..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(s.len(), |p| i + p);
        let header = s[i..line_end].first().is_some_and(u8::is_ascii_hexdigit)
            && s[i..line_end].contains(&b'-');
        if let Some(st) = start {
            if header {
                let len = (i - st).min(out.len());
                out[..len].copy_from_slice(&s[st..st + len]);
                return len;
            }
        } else if header && s[i..line_end].starts_with(&hdr[..hl]) && s.get(i + hl) == Some(&b'-') {
            start = Some(i);
        }
        i = line_end + 1;
    }
    start.map_or(0, |st| {
        let len = (s.len() - st).min(out.len());
        out[..len].copy_from_slice(&s[st..st + len]);
        len
    })
}

/// The last line of an smaps block (without its newline).
pub(crate) fn last_line(block: &[u8]) -> &[u8] {
    let b = block.strip_suffix(b"\n").unwrap_or(block);
    b.rsplit(|&c| c == b'\n').next().unwrap_or(b"")
}

/// `/proc/self/smaps` and `maps` as Linux lays them out and counts: a
/// written PMD folio is Rss = Pss = Private_Dirty = Anonymous =
/// AnonHugePages; in a forked child it is shared (Pss halves, nothing
/// private); `VmFlags` is the block's last line, with Linux's names (`rd
/// wr`, `hg` after MADV_HUGEPAGE, `nh` and THPeligible 0 after
/// MADV_NOHUGEPAGE); the stack and a grown heap are named `[stack]` and
/// `[heap]` in `maps`.
pub(crate) fn smaps_layout_as_linux() -> TestResult {
    if let Err(why) = thp_only(Some(2048)) {
        return skip(why);
    }
    let m = map_aligned(2 * SZ_2M, SZ_2M)?;
    touch_pages(&m, 4);
    let r = (|| {
        let mut blk = [0u8; 4096];
        let n = smaps_block(m.addr, &mut blk);
        let b = &blk[..n];
        ensure!(n > 0, "mapping {:#x} not in smaps", m.addr);
        for key in [
            &b"Rss:"[..],
            b"Pss:",
            b"Private_Dirty:",
            b"Anonymous:",
            b"AnonHugePages:",
        ] {
            let v = field(b, key);
            ensure!(
                v == Some(4096),
                "{:?} = {v:?} kB, expected 4096",
                core::str::from_utf8(key)
            );
        }
        for key in [
            &b"Shared_Clean:"[..],
            b"Shared_Dirty:",
            b"Private_Clean:",
            b"Swap:",
        ] {
            let v = field(b, key);
            ensure!(
                v == Some(0),
                "{:?} = {v:?} kB, expected 0",
                core::str::from_utf8(key)
            );
        }
        ensure!(field(b, b"THPeligible:") == Some(1), "THPeligible is not 1");
        let last = last_line(b);
        ensure!(
            last.starts_with(b"VmFlags: rd wr "),
            "last line {:?} is not 'VmFlags: rd wr ...'",
            core::str::from_utf8(last)
        );
        // A forked child sees the folio shared with its parent.
        let addr = m.addr;
        let st = in_child(move || {
            let mut blk = [0u8; 4096];
            let n = smaps_block(addr, &mut blk);
            let b = &blk[..n];
            let shared =
                field(b, b"Shared_Clean:").unwrap_or(0) + field(b, b"Shared_Dirty:").unwrap_or(0);
            let private =
                field(b, b"Private_Clean:").unwrap_or(1) + field(b, b"Private_Dirty:").unwrap_or(1);
            match (field(b, b"Pss:"), shared, private) {
                (Some(2048), 4096, 0) => 0,
                (Some(2048), _, _) => 2,
                _ => 1,
            }
        })?;
        ensure!(
            wifexited(st) && wexitstatus(st) == 0,
            "in a forked child: {} (status {st:#x})",
            if wexitstatus(st) == 2 {
                "not all shared"
            } else {
                "Pss is not 2048 kB"
            }
        );
        sys::madvise(m.addr, m.len, sys::MADV_HUGEPAGE);
        let n = smaps_block(m.addr, &mut blk);
        let last = last_line(&blk[..n]);
        ensure!(
            last.windows(4).any(|w| w == b" hg "),
            "no 'hg' after MADV_HUGEPAGE: {:?}",
            core::str::from_utf8(last)
        );
        sys::madvise(m.addr, m.len, sys::MADV_NOHUGEPAGE);
        let n = smaps_block(m.addr, &mut blk);
        let b = &blk[..n];
        ensure!(
            last_line(b).windows(4).any(|w| w == b" nh "),
            "no 'nh' after MADV_NOHUGEPAGE: {:?}",
            core::str::from_utf8(last_line(b))
        );
        ensure!(
            field(b, b"THPeligible:") == Some(0),
            "THPeligible is not 0 under nh"
        );
        Ok(())
    })();
    unmap(&m);
    r?;
    // [stack] holds a local; a grown heap is [heap].
    let cur = sys::brk(0) as usize;
    let grown = sys::brk(cur + 4 * PAGE) as usize;
    let mut buf = [0u8; 16384];
    let n = match read_file(b"/proc/self/maps\0", &mut buf) {
        Ok(n) => n,
        Err(e) => fail!("/proc/self/maps: errno {e}"),
    };
    let local = 0u64;
    let here = core::hint::black_box(&local) as *const u64 as usize;
    let (mut stack_ok, mut heap_ok) = (false, false);
    for line in buf[..n].split(|&c| c == b'\n') {
        let range = line.split(|&c| c == b' ').next().unwrap_or(b"");
        let mut it = range.split(|&c| c == b'-');
        let (Some(lo), Some(hi)) = (it.next(), it.next()) else {
            continue;
        };
        let lo = usize::from_str_radix(core::str::from_utf8(lo).unwrap_or(""), 16).unwrap_or(0);
        let hi = usize::from_str_radix(core::str::from_utf8(hi).unwrap_or(""), 16).unwrap_or(0);
        if line.ends_with(b"[stack]") {
            ensure!(
                line.len() == 73 + 7,
                "[stack] not at column 73: {:?}",
                core::str::from_utf8(line)
            );
            stack_ok |= lo <= here && here < hi;
        }
        if line.ends_with(b"[heap]") {
            heap_ok |= lo < grown && grown <= hi;
        }
    }
    sys::brk(cur);
    ensure!(stack_ok, "no [stack] line holds {here:#x}");
    ensure!(grown > cur, "brk did not grow");
    ensure!(heap_ok, "no [heap] line ends at the grown break {grown:#x}");
    Ok(Outcome::Pass)
}

/// `prctl(PR_SET_THP_DISABLE)`: in a child, with 2 MiB THP "always", the
/// switch makes faults map 4K pages (AnonHugePages 0, THPeligible 0), is
/// reported by `PR_GET_THP_DISABLE`, is inherited by a fork, and switched
/// back off lets the next mapping get PMD folios.  Also the process name
/// round-trips through `PR_SET_NAME`/`PR_GET_NAME`.
pub(crate) fn prctl_thp_disable() -> TestResult {
    if let Err(why) = thp_only(Some(2048)) {
        return skip(why);
    }
    let pr = |a: &[usize]| sys::syscall(sys::nr::PRCTL, a);
    let st = in_child(|| {
        if pr(&[PR_SET_THP_DISABLE, 1, 0, 0, 0]) != 0 {
            return 1;
        }
        if pr(&[PR_GET_THP_DISABLE, 0, 0, 0, 0]) != 1 {
            return 2;
        }
        let Ok(m) = map_aligned(2 * SZ_2M, SZ_2M) else {
            return 3;
        };
        touch_pages(&m, 5);
        if smaps_field(m.addr, b"AnonHugePages:") != Some(0) {
            return 4;
        }
        if smaps_field(m.addr, b"THPeligible:") != Some(0) {
            return 5;
        }
        unmap(&m);
        // A fork inherits the switch.
        let pid = sys::fork();
        if pid == 0 {
            sys::exit(if pr(&[PR_GET_THP_DISABLE, 0, 0, 0, 0]) == 1 {
                0
            } else {
                1
            });
        }
        let mut status = 0;
        if pid < 0
            || sys::wait4(pid, &mut status, 0) != pid
            || !wifexited(status)
            || wexitstatus(status) != 0
        {
            return 6;
        }
        if pr(&[PR_SET_THP_DISABLE, 0, 0, 0, 0]) != 0 || pr(&[PR_GET_THP_DISABLE, 0, 0, 0, 0]) != 0
        {
            return 7;
        }
        let Ok(m) = map_aligned(2 * SZ_2M, SZ_2M) else {
            return 3;
        };
        touch_pages(&m, 6);
        let huge = smaps_field(m.addr, b"AnonHugePages:");
        let eligible = smaps_field(m.addr, b"THPeligible:");
        unmap(&m);
        if huge != Some(4096) {
            return 8;
        }
        if eligible != Some(1) {
            return 9;
        }
        let mut name = [0u8; 16];
        if pr(&[PR_SET_NAME, c"prctl-test".as_ptr() as usize]) != 0
            || pr(&[PR_GET_NAME, name.as_mut_ptr() as usize]) != 0
            || &name[..11] != b"prctl-test\0"
        {
            return 10;
        }
        0
    })?;
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "child failed at step {} (status {st:#x}): 1 set, 2 get, 3 mmap, 4 AnonHugePages \
         while disabled, 5 THPeligible while disabled, 6 fork inheritance, 7 re-enable, \
         8 AnonHugePages after re-enable, 9 THPeligible after re-enable, 10 name",
        wexitstatus(st)
    );
    Ok(Outcome::Pass)
}
pub(crate) const KPF_ZERO_PAGE: u64 = 1 << 24;

/// `/proc/self/pagemap` and `/proc/kpageflags` (read with pread64) see
/// what the fault path built: a PMD-mapped 2 MiB folio, 64K folios and 4K
/// pages as consecutive present frames, compound heads and tails marked
/// THP; the zero page behind a read fault; nothing once unmapped; and
/// reads that are not whole entries fail with EINVAL.
pub(crate) fn pagemap_and_kpageflags() -> TestResult {
    let pm = sys::open(b"/proc/self/pagemap\0", sys::O_RDONLY);
    let kf = sys::open(b"/proc/kpageflags\0", sys::O_RDONLY);
    if kf < 0 {
        if pm >= 0 {
            sys::close(pm as i32);
        }
        return skip(mthp_user::Msg::new(format_args!(
            "no /proc/kpageflags (errno {}; not root?)",
            -kf
        )));
    }
    ensure!(pm >= 0, "open /proc/self/pagemap: errno {}", -pm);
    let (pm, kf) = (pm as i32, kf as i32);
    let r = (|| {
        let mut one = [0u8; 8];
        let bad = sys::syscall(
            sys::nr::PREAD64,
            &[pm as usize, one.as_mut_ptr() as usize, 8, 4],
        );
        ensure!(
            bad == -(sys::EINVAL as isize),
            "pagemap at offset 4: {bad}, expected EINVAL"
        );
        let bad = sys::syscall(
            sys::nr::PREAD64,
            &[kf as usize, one.as_mut_ptr() as usize, 4, 0],
        );
        ensure!(
            bad == -(sys::EINVAL as isize),
            "kpageflags of 4 bytes: {bad}, expected EINVAL"
        );
        for (kb, pages) in [(Some(2048), 512), (Some(64), 64), (None, 64)] {
            // Root here (kpageflags opened), so the knobs must be writable
            // and every size checked: no silent `continue`.
            thp_only(kb)?;
            let folio = kb.map_or(1, |k| k * 1024 / PAGE);
            let m = map_aligned(pages * PAGE, SZ_2M)?;
            touch_pages(&m, 9);
            let r = check_folios(pm, kf, m.addr, pages, folio);
            unmap(&m);
            r?;
            let mut e = [0u64; 4];
            pread_entries(pm, m.addr / PAGE, &mut e)?;
            ensure!(
                e.iter().all(|&v| v & PM_PRESENT == 0),
                "unmapped pages still present: {e:x?}"
            );
        }
        // A read fault maps the shared zero page.
        thp_only(None)?;
        let m = map_aligned(PAGE, PAGE)?;
        let v = m.peek64(0);
        let mut e = [0u64; 1];
        pread_entries(pm, m.addr / PAGE, &mut e)?;
        unmap(&m);
        ensure!(
            v == 0 && e[0] & PM_PRESENT != 0,
            "zero page not mapped: {:#x}",
            e[0]
        );
        ensure!(
            e[0] & PM_MMAP_EXCLUSIVE == 0,
            "the zero page reads exclusive: {:#x}",
            e[0]
        );
        let mut f = [0u64; 1];
        pread_entries(kf, (e[0] & PM_PFN) as usize, &mut f)?;
        ensure!(
            f[0] & KPF_ZERO_PAGE != 0,
            "zero page kpageflags {:#x}",
            f[0]
        );
        Ok(Outcome::Pass)
    })();
    sys::close(pm);
    sys::close(kf);
    r
}
