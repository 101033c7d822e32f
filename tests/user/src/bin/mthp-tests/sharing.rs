//! Shared-vs-exclusive reporting of large folios across fork, a partial
//! munmap in the child and the child's exit: pagemap's
//! `PM_MMAP_EXCLUSIVE` and smaps's `Private_*` / `Shared_*` / `Pss`, as
//! Linux 6.12 reports them (per-page mapcounts there, owner slots here).

use super::*;

/// Present-and-exclusive flags of `n` pages from `addr` in pagemap.
fn exclusive(pm: i32, addr: usize, out: &mut [bool]) -> Result<(), mthp_user::Msg> {
    let mut e = [0u64; 64];
    for (c, chunk) in out.chunks_mut(64).enumerate() {
        let e = &mut e[..chunk.len()];
        pread_entries(pm, addr / PAGE + c * 64, e)?;
        for (x, v) in chunk.iter_mut().zip(e.iter()) {
            ensure!(v & PM_PRESENT != 0, "page not present: {v:#x}");
            *x = v & PM_MMAP_EXCLUSIVE != 0;
        }
    }
    Ok(())
}

/// smaps's (private, shared, Pss) in kB of the mapping at `addr`.
fn sharing(addr: usize) -> Result<(u64, u64, u64), mthp_user::Msg> {
    let f = |k: &[u8]| smaps_field(addr, k);
    match (
        f(b"Private_Clean:"),
        f(b"Private_Dirty:"),
        f(b"Shared_Clean:"),
        f(b"Shared_Dirty:"),
        f(b"Pss:"),
    ) {
        (Some(pc), Some(pd), Some(sc), Some(sd), Some(pss)) => Ok((pc + pd, sc + sd, pss)),
        _ => fail!("smaps fields missing for {addr:#x}"),
    }
}

/// Exits the child with `code` if `r` failed, printing why.
fn child_ok(r: Result<bool, mthp_user::Msg>, code: i32) -> Option<i32> {
    match r {
        Ok(true) => None,
        Ok(false) => Some(code),
        Err(m) => {
            println!("  child: {}", m.as_str());
            Some(code)
        }
    }
}

/// The test for one folio size: `len` bytes of `kb` folios.
fn fork_shared_exclusive(kb: usize, len: usize) -> TestResult {
    if let Err(why) = thp_only(Some(kb)) {
        return skip(why);
    }
    let pm = sys::open(b"/proc/self/pagemap\0", sys::O_RDONLY);
    ensure!(pm >= 0, "open /proc/self/pagemap: errno {}", -pm);
    let pm = pm as i32;
    let before = stat(kb, "anon_fault_alloc");
    let m = map_aligned(len, SZ_2M)?;
    fill(&m, 0x5e);
    let after = stat(kb, "anon_fault_alloc");
    let r = fork_shared_exclusive_on(pm, kb, &m, before, after);
    unmap(&m);
    sys::close(pm);
    r
}

fn fork_shared_exclusive_on(
    pm: i32,
    kb: usize,
    m: &Mem,
    before: Option<u64>,
    after: Option<u64>,
) -> TestResult {
    let (len, folio) = (m.len, kb * 1024);
    let nr = len / PAGE;
    let (Some(b), Some(a)) = (before, after) else {
        fail!("hugepages-{kb}kB/stats/anon_fault_alloc unreadable");
    };
    ensure!(
        a - b == (len / folio) as u64,
        "{} {kb}kB folios allocated for {len:#x} bytes",
        a - b
    );
    let mut ex = [false; 512];
    let ex = &mut ex[..nr];
    // Before fork: every page exclusive and private.
    exclusive(pm, m.addr, ex)?;
    ensure!(ex.iter().all(|&x| x), "not exclusive before fork: {ex:?}");
    let kbs = (len / 1024) as u64;
    ensure!(
        sharing(m.addr)? == (kbs, 0, kbs),
        "before fork: (private, shared, pss) = {:?}",
        sharing(m.addr)?
    );
    // The child unmaps the second half of the first folio.
    let (hole, hole_len) = (folio / 2, folio / 2);
    let (to_parent_r, to_parent_w) = super::syscalls::pipe2(0)?;
    let (to_child_r, to_child_w) = super::syscalls::pipe2(0)?;
    let pid = sys::fork();
    if pid == 0 {
        sys::close(to_parent_r);
        sys::close(to_child_w);
        // The parent's descriptor reads the parent's pagemap: open ours.
        sys::close(pm);
        let pm = sys::open(b"/proc/self/pagemap\0", sys::O_RDONLY) as i32;
        let mut exc = [false; 512];
        let exc = &mut exc[..nr];
        // After fork: every page mapped by both, none exclusive.
        let code = child_ok(
            exclusive(pm, m.addr, exc).map(|_| exc.iter().all(|&x| !x)),
            2,
        )
        .or_else(|| child_ok(sharing(m.addr).map(|s| s == (0, kbs, kbs / 2)), 3))
        .or_else(|| {
            let r = sys::munmap(m.addr + hole, hole_len);
            (r != 0).then_some(4)
        })
        .or_else(|| {
            // What the child keeps the parent maps too: still shared, in
            // pagemap and in both pieces of the split mapping.
            let mut code = None;
            for (lo, hi) in [(0, hole), (hole + hole_len, len)] {
                if lo == hi || code.is_some() {
                    continue;
                }
                let part = &mut exc[..(hi - lo) / PAGE];
                let kbp = ((hi - lo) / 1024) as u64;
                code = child_ok(
                    exclusive(pm, m.addr + lo, part).map(|_| part.iter().all(|&x| !x)),
                    5,
                )
                .or_else(|| child_ok(sharing(m.addr + lo).map(|s| s == (0, kbp, kbp / 2)), 6));
            }
            code
        });
        sys::write(to_parent_w, &[1]);
        let mut x = [0u8; 1];
        sys::read(to_child_r, &mut x);
        sys::exit(code.unwrap_or(0));
    }
    ensure!(pid > 0, "fork: errno {}", -pid);
    sys::close(to_parent_w);
    sys::close(to_child_r);
    let mut x = [0u8; 1];
    sys::read(to_parent_r, &mut x);
    // The child still maps the first half of the first folio and all the
    // rest: those pages are shared for the parent too.
    let r = (|| {
        exclusive(pm, m.addr, ex)?;
        for (i, &e) in ex.iter().enumerate() {
            let child_maps = !(hole..hole + hole_len).contains(&(i * PAGE));
            ensure!(
                !(child_maps && e),
                "page {i} exclusive in the parent while the child maps it"
            );
        }
        Ok(Outcome::Pass)
    })();
    sys::write(to_child_w, &[1]);
    let mut st = 0;
    sys::wait4(pid, &mut st, 0);
    sys::close(to_parent_r);
    sys::close(to_child_w);
    r?;
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "child status {st:#x} (2: shared after fork, 3: smaps after fork, 4: munmap, 5, 6: after the partial munmap)"
    );
    // The child is gone: the parent owns every page again.
    exclusive(pm, m.addr, ex)?;
    ensure!(
        ex.iter().all(|&x| x),
        "not exclusive after the child exited: {ex:?}"
    );
    ensure!(
        sharing(m.addr)? == (kbs, 0, kbs),
        "after the child exited: (private, shared, pss) = {:?}",
        sharing(m.addr)?
    );
    Ok(Outcome::Pass)
}

/// Two 64 KiB folios.
pub(crate) fn fork_shared_exclusive_64k() -> TestResult {
    fork_shared_exclusive(64, 2 * SZ_64K)
}

/// One 2 MiB folio, PMD-mapped.
pub(crate) fn fork_shared_exclusive_2m() -> TestResult {
    fork_shared_exclusive(2048, SZ_2M)
}

/// After fork the child writes one word per 64 KiB of a 2 MiB region of
/// `kb` folios.  Data stays each side's own everywhere.  Here, with
/// `large_cow` 1, the child's region is still `kb` folios (pagemap frames
/// and kpageflags: exclusive, contiguous, compound THP), so it keeps its
/// translation reach; with `large_cow` 0, and on Linux, each written page
/// is a new 4K page.  On Linux, which has no `large_cow`, only the data
/// and the 4K decay are checked.
fn large_cow_child(kb: usize) -> TestResult {
    if let Err(why) = thp_only(Some(kb)) {
        return skip(why);
    }
    let knob = path!("{THP}/large_cow");
    let has_knob = read_file(knob.c(), &mut [0u8; 8]).is_ok();
    ensure!(has_knob || !on_mthp(), "no transparent_hugepage/large_cow");
    let pm = sys::open(b"/proc/self/pagemap\0", sys::O_RDONLY);
    ensure!(pm >= 0, "open /proc/self/pagemap: errno {}", -pm);
    let kf = sys::open(b"/proc/kpageflags\0", sys::O_RDONLY);
    if kf < 0 {
        sys::close(pm as i32);
        return skip(mthp_user::Msg::new(format_args!(
            "no /proc/kpageflags (errno {}; not root?)",
            -kf
        )));
    }
    let (pm, kf) = (pm as i32, kf as i32);
    let settings: &[Option<&[u8]>] = if has_knob {
        &[Some(b"1"), Some(b"0")]
    } else {
        &[None]
    };
    let mut r = Ok(Outcome::Pass);
    for &s in settings {
        if let Some(v) = s
            && let Err(e) = write_file(knob.c(), v)
        {
            r = Err(mthp_user::Msg::new(format_args!(
                "write large_cow: errno {e}"
            )));
            break;
        }
        r = large_cow_once(pm, kf, kb, s == Some(b"1"));
        if r.is_err() {
            break;
        }
    }
    if has_knob {
        let _ = write_file(knob.c(), b"1");
    }
    sys::close(pm);
    sys::close(kf);
    r
}

fn large_cow_once(pm_parent: i32, kf: i32, kb: usize, large: bool) -> TestResult {
    let m = map_aligned(SZ_2M, SZ_2M)?;
    fill(&m, 0x1c);
    let folio_pages = kb * 1024 / PAGE;
    if let Err(e) = check_folios(pm_parent, kf, m.addr, SZ_2M / PAGE, folio_pages) {
        unmap(&m);
        fail!("before fork: {}", e.as_str());
    }
    let st = in_child(|| {
        // The parent's descriptor reads the parent's pagemap: open ours.
        let pm = sys::open(b"/proc/self/pagemap\0", sys::O_RDONLY) as i32;
        let _ = pm_parent;
        for off in (0..m.len).step_by(SZ_64K) {
            m.poke64(off + 8, off as u64 ^ 0xc0de);
        }
        if verify(&m, 0, m.len, 0x1c).is_some() {
            return 2;
        }
        if (0..m.len)
            .step_by(SZ_64K)
            .any(|off| m.peek64(off + 8) != off as u64 ^ 0xc0de)
        {
            return 3;
        }
        if large {
            // Still `kb` folios, each now the child's own.
            if let Err(e) = check_folios(pm, kf, m.addr, SZ_2M / PAGE, folio_pages) {
                println!("  child: {}", e.as_str());
                return 4;
            }
        } else {
            // Each written page is a 4K copy.
            for off in (0..m.len).step_by(SZ_64K) {
                if let Err(e) = check_folios(pm, kf, m.addr + off, 1, 1) {
                    println!("  child at {off:#x}: {}", e.as_str());
                    return 5;
                }
            }
        }
        0
    });
    let parent_ok = verify(&m, 0, m.len, 0x1c).is_none()
        && (0..m.len).step_by(SZ_64K).all(|off| m.peek64(off + 8) == 0);
    unmap(&m);
    let st = st?;
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "child (large_cow {}) status {st:#x} (2, 3: data, 4: folios not kept, 5: not 4K copies)",
        large as u8
    );
    ensure!(parent_ok, "the parent's data changed");
    Ok(Outcome::Pass)
}

pub(crate) fn large_cow_child_64k() -> TestResult {
    large_cow_child(64)
}

pub(crate) fn large_cow_child_2m() -> TestResult {
    large_cow_child(2048)
}
