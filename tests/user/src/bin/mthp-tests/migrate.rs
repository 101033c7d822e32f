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
pub fn move_pages_reports_status() -> TestResult {
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
pub fn move_pages_bad_input() -> TestResult {
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
pub fn move_pages_keeps_folios_whole() -> TestResult {
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
