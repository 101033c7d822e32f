//! `move_pages(2)` and the memory-policy calls (issue 16 items 1 and 3),
//! with Linux 6.12's answers (notes §5.3, §6.2): per-page status codes,
//! the whole-call errnos, large folios moved whole (a 64K folio stays one
//! 64K folio, a PMD-mapped 2M folio stays PMD-mapped), data intact.
//!
//! The same binary runs on one node and on two (`runner ... --numa 2`):
//! with one node every page already is where it is asked to go, so the
//! tests check the status codes, errnos and that nothing changed; with
//! two the folios really move, and the tests check they arrive whole.

use super::*;

const MPOL_MF_STRICT: usize = 1;
pub(crate) const MPOL_MF_MOVE: usize = 2;
const MPOL_DEFAULT: usize = 0;
const MPOL_PREFERRED: usize = 1;
const MPOL_BIND: usize = 2;
const MPOL_INTERLEAVE: usize = 3;
const MPOL_LOCAL: usize = 4;
const MPOL_F_NODE: usize = 1;
const MPOL_F_ADDR: usize = 2;
const EIO: i32 = 5;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EFAULT: i32 = 14;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;

/// Nodes with memory, from `/sys/devices/system/node/has_memory`
/// (`0` or `0-1`); 1 when the file is missing (a kernel without NUMA).
pub(crate) fn nodes() -> usize {
    let mut b = [0u8; 64];
    let Ok(n) = read_file(b"/sys/devices/system/node/has_memory\0", &mut b) else {
        return 1;
    };
    let s = mthp_user::trim(&b[..n]);
    match s.iter().position(|&c| c == b'-') {
        Some(d) => mthp_user::parse_u64(&s[d + 1..]).map_or(1, |hi| hi as usize + 1),
        None => 1,
    }
}

/// Four mapped pages followed by an unmapped one (mapped as five, the
/// last unmapped, so the hole is surely ours).
fn four_pages_then_hole() -> Result<Mem, mthp_user::Msg> {
    let m = map_aligned(5 * PAGE, PAGE)?;
    sys::munmap(m.addr + 4 * PAGE, PAGE);
    Ok(Mem {
        addr: m.addr,
        len: 4 * PAGE,
    })
}

/// `move_pages(0, n, pages, nodes, status, flags)`: the raw result.
pub(crate) fn move_pages(
    pages: &[usize],
    nodes: Option<&[i32]>,
    status: &mut [i32],
    flags: usize,
) -> isize {
    sys::syscall(
        sys::nr::MOVE_PAGES,
        &[
            0,
            pages.len(),
            pages.as_ptr() as usize,
            nodes.map_or(0, |n| n.as_ptr() as usize),
            status.as_mut_ptr() as usize,
            flags,
        ],
    )
}

/// Where each page of `pages` is (`move_pages` with no nodes).
pub(crate) fn where_are(pages: &[usize], status: &mut [i32]) -> Result<(), mthp_user::Msg> {
    status.fill(i32::MIN);
    let r = move_pages(pages, None, status, 0);
    ensure!(r == 0, "move_pages query returned {r}");
    Ok(())
}

/// Status codes of a query: a written page is on a node with memory, an
/// untouched one -ENOENT, one only read (the shared zero page) -EFAULT, an
/// unmapped address -EFAULT.  Addresses need no alignment.
pub fn numa_move_pages_reports_status() -> TestResult {
    thp_only(None)?;
    let m = four_pages_then_hole()?;
    let hole = m.addr + 4 * PAGE;
    // SAFETY: pages 0, 2 and 3 of our private writable mapping.
    unsafe {
        (m.addr as *mut u64).write_volatile(7);
        ((m.addr + 2 * PAGE) as *const u64).read_volatile();
        ((m.addr + 3 * PAGE + 8) as *mut u64).write_volatile(9);
    }
    let pages = [
        m.addr,
        m.addr + PAGE,
        m.addr + 2 * PAGE,
        m.addr + 3 * PAGE + 123,
        hole,
    ];
    let mut st = [i32::MIN; 5];
    let r = where_are(&pages, &mut st);
    unmap(&m);
    r?;
    let n = nodes() as i32;
    ensure!(
        (0..n).contains(&st[0]) && (0..n).contains(&st[3]),
        "written pages on nodes {} and {}, expected 0..{n}",
        st[0],
        st[3]
    );
    ensure!(
        st[1..3] == [-ENOENT, -EFAULT] && st[4] == -EFAULT,
        "status {:?}, expected [node, -ENOENT, -EFAULT, node, -EFAULT]",
        st
    );
    Ok(Outcome::Pass)
}

/// The whole-call errors: flags other than MOVE / MOVE_ALL are EINVAL, an
/// unknown pid ESRCH, a node that does not exist or has no memory ENODEV
/// (never a per-page status), no pages at all 0.
pub fn numa_move_pages_bad_input() -> TestResult {
    thp_only(None)?;
    let m = map_aligned(PAGE, PAGE)?;
    touch_pages(&m, 1);
    let pages = [m.addr];
    let mut st = [i32::MIN; 1];
    let n = nodes() as i32;
    let r = (|| -> Result<(), mthp_user::Msg> {
        for (what, nodes, flags, want) in [
            ("STRICT flag", Some(0), MPOL_MF_STRICT, -EINVAL),
            ("flag 8", Some(0), 8, -EINVAL),
            ("node -1", Some(-1), MPOL_MF_MOVE, -ENODEV),
            ("node past the last", Some(n), MPOL_MF_MOVE, -ENODEV),
            ("node 1 << 20", Some(1 << 20), MPOL_MF_MOVE, -ENODEV),
        ] {
            let nodes = nodes.map(|v| [v]);
            let got = move_pages(&pages, nodes.as_ref().map(|a| &a[..]), &mut st, flags);
            ensure!(
                got == want as isize,
                "{what}: move_pages returned {got}, expected {want}"
            );
        }
        let got = sys::syscall(
            sys::nr::MOVE_PAGES,
            &[
                0x3fff_fff0,
                1,
                pages.as_ptr() as usize,
                0,
                st.as_mut_ptr() as usize,
                0,
            ],
        );
        ensure!(
            got == -ESRCH as isize,
            "unknown pid: move_pages returned {got}, expected -ESRCH"
        );
        let got = move_pages(&[], None, &mut [], 0);
        ensure!(got == 0, "no pages: move_pages returned {got}, expected 0");
        Ok(())
    })();
    unmap(&m);
    r?;
    Ok(Outcome::Pass)
}

/// A 64K folio and a PMD-mapped 2M folio moved with `move_pages` (to the
/// other node when there are two): one address per folio reports the
/// target node, every page of the folio is then there, the 64K folio is
/// still one 64K folio, the 2M one still PMD-mapped (`AnonHugePages`),
/// and the data is intact.  With two nodes a second address inside a
/// folio already queued reads -EBUSY (Linux's isolation quirk, notes
/// §5.3 and trap 11).
pub fn numa_move_pages_keeps_folios_whole() -> TestResult {
    let two = nodes() >= 2;
    for kb in [64usize, 2048] {
        thp_only(Some(kb))?;
        let len = 2 * (kb << 10);
        let m = map_aligned(len, SZ_2M)?;
        fill(&m, kb as u64);
        let r = (|| -> Result<(), mthp_user::Msg> {
            let l = layout(m.addr, m.len, kb)?;
            ensure!(l.all_in_order(), "{kb}K: not {kb}K folios before the move");
            let mut st = [i32::MIN; 2];
            where_are(&[m.addr, m.addr + (kb << 10)], &mut st)?;
            let target = if two { 1 - st[0] } else { st[0] };
            // First folio: its head, then another page of it (-EBUSY when it
            // moves); second folio: one page in its middle.
            let pages = [m.addr, m.addr + PAGE, m.addr + (kb << 10) + (kb << 9)];
            let nodes = [target; 3];
            let mut st = [i32::MIN; 3];
            let r = move_pages(&pages, Some(&nodes), &mut st, MPOL_MF_MOVE);
            ensure!(r == 0, "{kb}K: move_pages to node {target} returned {r}");
            let second = if two { -EBUSY } else { target };
            ensure!(
                st == [target, second, target],
                "{kb}K: status {st:?}, expected [{target}, {second}, {target}]"
            );
            let mut all = [0usize; 32];
            let step = len / all.len();
            for (i, a) in all.iter_mut().enumerate() {
                *a = m.addr + i * step;
            }
            let mut st = [i32::MIN; 32];
            where_are(&all, &mut st)?;
            ensure!(
                st.iter().all(|&s| s == target),
                "{kb}K: pages after the move on {st:?}, expected all on {target}"
            );
            if let Some(bad) = verify(&m, 0, len, kb as u64) {
                fail!("{kb}K: data differs at byte {bad} after the move");
            }
            let l = layout(m.addr, m.len, kb)?;
            ensure!(
                l.all_in_order(),
                "{kb}K: {} of {} pages in {kb}K folios after the move: split",
                l.in_order,
                l.pages
            );
            if kb == 2048 {
                let huge = smaps_field(m.addr, b"AnonHugePages:");
                ensure!(
                    huge == Some(2 * 2048),
                    "2M: AnonHugePages {huge:?} kB after the move, expected 4096 (still PMD-mapped)"
                );
            }
            Ok(())
        })();
        unmap(&m);
        r?;
    }
    Ok(Outcome::Pass)
}

/// `mbind`, `set_mempolicy` and `get_mempolicy` answers that do not need
/// a second node: a task starts with MPOL_DEFAULT, PREFERRED with an
/// empty mask reads back as LOCAL, BIND to node 0 reads back with its
/// mask, `MPOL_F_NODE|MPOL_F_ADDR` reports the node of a page; and the
/// EINVAL / EFAULT rules of notes §6.2 and §5.4.
pub fn numa_mempolicy_answers() -> TestResult {
    let get = |mode: &mut i32, mask: &mut u64, addr: usize, flags: usize| {
        sys::syscall(
            sys::nr::GET_MEMPOLICY,
            &[
                mode as *mut i32 as usize,
                mask as *mut u64 as usize,
                65,
                addr,
                flags,
            ],
        )
    };
    let set = |mode: usize, mask: &u64, maxnode: usize| {
        sys::syscall(
            sys::nr::SET_MEMPOLICY,
            &[mode, mask as *const u64 as usize, maxnode],
        )
    };
    let (mut mode, mut mask) = (-1i32, !0u64);
    let r = get(&mut mode, &mut mask, 0, 0);
    ensure!(
        r == 0 && mode == MPOL_DEFAULT as i32 && mask == 0,
        "get_mempolicy at start: {r}, mode {mode}, mask {mask:#x}; expected 0, DEFAULT, 0"
    );
    let r = set(MPOL_PREFERRED, &0, 65);
    let g = get(&mut mode, &mut mask, 0, 0);
    ensure!(
        r == 0 && g == 0 && mode == MPOL_LOCAL as i32,
        "PREFERRED with an empty mask: set {r}, get {g}, mode {mode}; expected LOCAL ({MPOL_LOCAL})"
    );
    let r = set(MPOL_BIND, &1, 65);
    let g = get(&mut mode, &mut mask, 0, 0);
    ensure!(
        r == 0 && g == 0 && mode == MPOL_BIND as i32 && mask == 1,
        "BIND {{0}}: set {r}, get {g}, mode {mode}, mask {mask:#x}"
    );
    // A VMA without a policy of its own reads DEFAULT, whatever the task's.
    let probe = 0u64;
    let g = get(
        &mut mode,
        &mut mask,
        &probe as *const u64 as usize,
        MPOL_F_ADDR,
    );
    ensure!(
        g == 0 && mode == MPOL_DEFAULT as i32,
        "get_mempolicy(ADDR) of a VMA without a policy: {g}, mode {mode}; expected DEFAULT"
    );
    for (what, mode, mask, want) in [
        ("mode 99", 99, 1u64, -EINVAL),
        ("BIND with an empty mask", MPOL_BIND, 0, -EINVAL),
        ("DEFAULT with a mask", MPOL_DEFAULT, 1, -EINVAL),
        ("LOCAL with a mask", MPOL_LOCAL, 1, -EINVAL),
        ("a node past MAX_NUMNODES", MPOL_BIND, 1 << 63, -EINVAL),
    ] {
        let r = set(mode, &mask, 65);
        if r != want as isize && !(what.starts_with("a node") && r == -EINVAL as isize) {
            set(MPOL_DEFAULT, &0, 65);
            fail!("set_mempolicy {what}: {r}, expected {want}");
        }
    }
    ensure!(
        set(MPOL_DEFAULT, &0, 65) == 0,
        "back to MPOL_DEFAULT refused"
    );
    thp_only(None)?;
    let m = four_pages_then_hole()?;
    touch_pages(&m, 3);
    let r = (|| -> Result<(), mthp_user::Msg> {
        let mut node = -1i32;
        let mut mask = 0u64;
        let g = get(&mut node, &mut mask, m.addr, MPOL_F_NODE | MPOL_F_ADDR);
        let mut st = [i32::MIN];
        where_are(&[m.addr], &mut st)?;
        ensure!(
            g == 0 && node == st[0],
            "get_mempolicy(NODE|ADDR): {g}, node {node}; move_pages says {}",
            st[0]
        );
        let g = get(&mut node, &mut mask, m.addr, 0);
        ensure!(
            g == -EINVAL as isize,
            "get_mempolicy(addr, no ADDR flag): {g}, expected -EINVAL"
        );
        let mbind = |addr: usize, len: usize, mode: usize, mask: &u64, flags: usize| {
            sys::syscall(
                sys::nr::MBIND,
                &[addr, len, mode, mask as *const u64 as usize, 65, flags],
            )
        };
        for (what, addr, len, mode, mask, flags, want) in [
            (
                "unaligned start",
                m.addr + 1,
                PAGE,
                MPOL_BIND,
                1u64,
                0,
                -EINVAL,
            ),
            ("flag 8", m.addr, PAGE, MPOL_BIND, 1, 8, -EINVAL),
            (
                "BIND with an empty mask",
                m.addr,
                PAGE,
                MPOL_BIND,
                0,
                0,
                -EINVAL,
            ),
            ("a hole", m.addr, 5 * PAGE, MPOL_BIND, 1, 0, -EFAULT),
        ] {
            let r = mbind(addr, len, mode, &mask, flags);
            ensure!(r == want as isize, "mbind {what}: {r}, expected {want}");
        }
        // The default policy over a hole applies to the mapped parts.
        let r = mbind(m.addr, 5 * PAGE, MPOL_DEFAULT, &0, 0);
        ensure!(r == 0, "mbind DEFAULT over a hole: {r}, expected 0");
        let r = mbind(m.addr, 4 * PAGE, MPOL_BIND, &1, MPOL_MF_MOVE);
        ensure!(r == 0, "mbind BIND {{0}} MOVE over present pages: {r}");
        let mut pol = -1i32;
        let g = get(&mut pol, &mut mask, m.addr, MPOL_F_ADDR);
        ensure!(
            g == 0 && pol == MPOL_BIND as i32 && mask == 1,
            "get_mempolicy(ADDR) after mbind: {g}, mode {pol}, mask {mask:#x}"
        );
        Ok(())
    })();
    unmap(&m);
    r?;
    Ok(Outcome::Pass)
}

/// Interleave is per folio (notes §6.3): under `mbind(MPOL_INTERLEAVE)`
/// over both nodes, 64K folio `i` of a 64K-aligned region lands on node
/// `(address >> 16) % 2`, all its pages together, each folio whole.  Then
/// `MPOL_MF_STRICT`: binding the region to one node without a move flag
/// is EIO while a page sits on the other (and changes nothing); with
/// `MPOL_MF_MOVE` the folios move there whole.  With one node every folio
/// is on node 0 and the STRICT steps are not reachable (no other node).
pub fn numa_mempolicy_interleave_and_strict() -> TestResult {
    let two = nodes() >= 2;
    let both: u64 = if two { 0b11 } else { 0b1 };
    thp_only(Some(64))?;
    let len = 8 * SZ_64K;
    let m = map_aligned(len, SZ_2M)?;
    let mbind = |mode: usize, mask: u64, flags: usize| {
        sys::syscall(
            sys::nr::MBIND,
            &[m.addr, len, mode, &mask as *const u64 as usize, 65, flags],
        )
    };
    let r = (|| -> Result<(), mthp_user::Msg> {
        let r = mbind(MPOL_INTERLEAVE, both, 0);
        ensure!(r == 0, "mbind INTERLEAVE: {r}");
        fill(&m, 64);
        let l = layout(m.addr, m.len, 64)?;
        ensure!(l.all_in_order(), "not 64K folios under interleave");
        let pages: [usize; 16] = core::array::from_fn(|i| m.addr + i * SZ_64K / 2);
        let mut st = [i32::MIN; 16];
        where_are(&pages, &mut st)?;
        for (i, &a) in pages.iter().enumerate() {
            let want = if two { ((a >> 16) & 1) as i32 } else { 0 };
            ensure!(
                st[i] == want,
                "page at +{:#x} on node {}, expected {want} (interleave per 64K folio): {st:?}",
                a - m.addr,
                st[i]
            );
        }
        if two {
            let r = mbind(MPOL_BIND, 0b10, MPOL_MF_STRICT);
            ensure!(
                r == -EIO as isize,
                "BIND {{1}} STRICT over pages on node 0: {r}, expected -EIO"
            );
            where_are(&pages, &mut st)?;
            ensure!(st.contains(&0), "STRICT without MOVE moved pages: {st:?}");
            let r = mbind(MPOL_BIND, 0b10, MPOL_MF_STRICT | MPOL_MF_MOVE);
            ensure!(r == 0, "BIND {{1}} STRICT|MOVE: {r}");
            where_are(&pages, &mut st)?;
            ensure!(st.iter().all(|&s| s == 1), "after BIND {{1}} MOVE: {st:?}");
            if let Some(bad) = verify(&m, 0, len, 64) {
                fail!("data differs at byte {bad} after mbind MOVE");
            }
            let l = layout(m.addr, m.len, 64)?;
            ensure!(l.all_in_order(), "64K folios split by mbind MOVE");
        }
        Ok(())
    })();
    unmap(&m);
    r?;
    Ok(Outcome::Pass)
}

/// The `/proc/self/numa_maps` line of the VMA starting at `addr`.
fn numa_maps_line(addr: usize, buf: &mut [u8]) -> Result<usize, mthp_user::Msg> {
    let n = read_file(b"/proc/self/numa_maps\0", buf)
        .map_err(|e| mthp_user::Msg::new(format_args!("read /proc/self/numa_maps: errno {e}")))?;
    let mut hexbuf = [0u8; 20];
    let hl = hex(addr, &mut hexbuf);
    let mut off = 0;
    let mut found = None;
    for l in buf[..n].split(|&c| c == b'\n') {
        if l.len() > hl && l[..hl] == hexbuf[..hl] && l[hl] == b' ' {
            found = Some((off, l.len()));
            break;
        }
        off += l.len() + 1;
    }
    let Some((at, len)) = found else {
        fail!("no numa_maps line for {addr:#x}");
    };
    buf.copy_within(at..at + len, 0);
    Ok(len)
}

/// `/proc/self/numa_maps` (notes §6.4): a 4K region bound to node 0 reads
/// `<addr> bind:0 anon=16 dirty=16 ... N0=16 kernelpagesize_kB=4`; a
/// PMD-mapped 2M region without a policy reads `default`, `anon=512`,
/// its 512 pages on one node, and `kernelpagesize_kB=4` (not 2048: only
/// hugetlb differs).
pub fn numa_maps_counts() -> TestResult {
    let mut buf = [0u8; 8192];
    thp_only(None)?;
    let m = map_aligned(16 * PAGE, PAGE)?;
    let mask = 1u64;
    let r = sys::syscall(
        sys::nr::MBIND,
        &[
            m.addr,
            m.len,
            MPOL_BIND,
            &mask as *const u64 as usize,
            65,
            0,
        ],
    );
    let res = (|| -> Result<(), mthp_user::Msg> {
        ensure!(r == 0, "mbind BIND {{0}}: {r}");
        touch_pages(&m, 5);
        let n = numa_maps_line(m.addr, &mut buf)?;
        let l = core::str::from_utf8(&buf[..n]).unwrap_or("?");
        for want in [
            " bind:0 ",
            " anon=16 ",
            " dirty=16 ",
            " N0=16 ",
            " kernelpagesize_kB=4",
        ] {
            ensure!(l.contains(want), "numa_maps line {l:?} lacks {want:?}");
        }
        ensure!(!l.contains("mapped="), "numa_maps line {l:?} has mapped=");
        Ok(())
    })();
    unmap(&m);
    res?;
    thp_only(Some(2048))?;
    let m = map_aligned(SZ_2M, SZ_2M)?;
    touch_pages(&m, 6);
    let res = (|| -> Result<(), mthp_user::Msg> {
        ensure!(
            smaps_field(m.addr, b"AnonHugePages:") == Some(2048),
            "2M region not PMD-mapped"
        );
        let n = numa_maps_line(m.addr, &mut buf)?;
        let l = core::str::from_utf8(&buf[..n]).unwrap_or("?");
        const ON: [&str; 4] = [" N0=512 ", " N1=512 ", " N2=512 ", " N3=512 "];
        let on_node = ON.iter().take(nodes()).any(|w| l.contains(w));
        ensure!(
            l.contains(" default ") && l.contains(" anon=512 ") && on_node,
            "numa_maps line {l:?}: expected default, anon=512, N<n>=512"
        );
        ensure!(l.ends_with(" kernelpagesize_kB=4"), "numa_maps line {l:?}");
        Ok(())
    })();
    unmap(&m);
    res?;
    Ok(Outcome::Pass)
}

/// `migrate_pages(2)` (notes §5.4): with two nodes, a region of 64K folios
/// moves from its node to the other one whole (order kept, data intact)
/// and the call returns 0 (no folio left behind); with one node, moving
/// node 0 to node 0 is a no-op returning 0.  Errors: a target node mask
/// with no memory is EINVAL (root), an unknown pid ESRCH.
pub fn numa_migrate_pages_moves_folios_whole() -> TestResult {
    let two = nodes() >= 2;
    let mp = |pid: usize, old: u64, new: u64| {
        sys::syscall(
            sys::nr::MIGRATE_PAGES,
            &[
                pid,
                65,
                &old as *const u64 as usize,
                &new as *const u64 as usize,
            ],
        )
    };
    let r = mp(0, 1, 1 << 5);
    ensure!(
        r == -EINVAL as isize,
        "migrate_pages to a node without memory: {r}, expected -EINVAL"
    );
    let r = mp(0x3fff_fff0, 1, 1);
    ensure!(
        r == -ESRCH as isize,
        "migrate_pages of an unknown pid: {r}, expected -ESRCH"
    );
    thp_only(Some(64))?;
    let len = 4 * SZ_64K;
    let m = map_aligned(len, SZ_2M)?;
    // Faulted on one CPU (the lowest allowed), so on one node: folios go
    // to the faulting CPU's node, and the scheduler may move an unpinned
    // process between two faults (seen once on x86).
    let old = super::numa_balancing::affinity()?;
    let lowest = old.iter().position(|&w| w != 0).unwrap_or(0);
    let mut one = [0u64; 16];
    one[lowest] = 1 << old[lowest].trailing_zeros();
    let pinned = super::numa_balancing::set_affinity(&one) == 0;
    fill(&m, 77);
    super::numa_balancing::set_affinity(&old);
    let res = (|| -> Result<(), mthp_user::Msg> {
        ensure!(pinned, "sched_setaffinity to one CPU");
        let pages: [usize; 8] = core::array::from_fn(|i| m.addr + i * SZ_64K / 2);
        let mut st = [i32::MIN; 8];
        where_are(&pages, &mut st)?;
        let from = st[0];
        ensure!(
            st.iter().all(|&s| s == from),
            "region spread over nodes before: {st:?}"
        );
        let to = if two { 1 - from } else { from };
        let r = mp(0, 1 << from, 1 << to);
        ensure!(r == 0, "migrate_pages {from} -> {to}: {r}, expected 0");
        where_are(&pages, &mut st)?;
        ensure!(
            st.iter().all(|&s| s == to),
            "after migrate_pages {from} -> {to}: {st:?}"
        );
        if let Some(bad) = verify(&m, 0, len, 77) {
            fail!("data differs at byte {bad} after migrate_pages");
        }
        let l = layout(m.addr, m.len, 64)?;
        ensure!(l.all_in_order(), "64K folios split by migrate_pages");
        Ok(())
    })();
    unmap(&m);
    res?;
    Ok(Outcome::Pass)
}
