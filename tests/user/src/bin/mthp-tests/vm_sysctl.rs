//! `/proc/sys/vm` and `/proc/zoneinfo`: the watermarks follow Linux's
//! formulas from the live `min_free_kbytes` (which THP may have raised, so
//! it is read, never assumed), writes move them, bad values are EINVAL.

use super::*;

const MFK: &[u8] = b"/proc/sys/vm/min_free_kbytes\0";
const WSF: &[u8] = b"/proc/sys/vm/watermark_scale_factor\0";

fn read_u64(path: &[u8]) -> Result<u64, i32> {
    let mut buf = [0u8; 64];
    let n = read_file(path, &mut buf)?;
    mthp_user::parse_u64(&buf[..n]).ok_or(sys::EINVAL)
}

/// Per populated zone: (min, low, high, managed).
fn zones(out: &mut [(u64, u64, u64, u64); 8]) -> Result<usize, i32> {
    let mut buf = [0u8; 32768];
    let n = read_file(b"/proc/zoneinfo\0", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).map_err(|_| sys::EINVAL)?;
    let mut nz = 0;
    let mut cur: Option<(u64, u64, u64, u64)> = None;
    let mut push = |z: Option<(u64, u64, u64, u64)>, nz: &mut usize| {
        if let Some(z) = z.filter(|z| z.3 > 0)
            && *nz < out.len()
        {
            out[*nz] = z;
            *nz += 1;
        }
    };
    for line in text.lines() {
        if line.starts_with("Node ") {
            push(cur.take(), &mut nz);
            cur = Some((0, 0, 0, 0));
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (Some(z), Ok(v)) = (cur.as_mut(), v.parse::<u64>()) else {
            continue;
        };
        match k {
            "min" => z.0 = v,
            "low" => z.1 = v,
            "high" => z.2 = v,
            "managed" => z.3 = v,
            _ => {}
        }
    }
    push(cur.take(), &mut nz);
    Ok(nz)
}

/// The zones obey low = min + gap, high = low + gap with Linux's gap, and
/// their mins add up to `min_free_kbytes` in pages (each zone's share is
/// rounded down).
fn check_zones(mfk: u64, wsf: u64) -> TestResult {
    let mut z = [(0, 0, 0, 0); 8];
    let nz = match zones(&mut z) {
        Ok(n) => n,
        Err(e) => fail!("/proc/zoneinfo: errno {e}"),
    };
    ensure!(nz > 0, "/proc/zoneinfo: no populated zone");
    let mut sum_min = 0;
    for &(min, low, high, managed) in &z[..nz] {
        let gap = (min / 4).max(managed * wsf / 10_000);
        ensure!(
            low == min + gap && high == low + gap,
            "zone min {min} low {low} high {high} managed {managed}: expected gap {gap}"
        );
        sum_min += min;
    }
    let want = mfk / 4;
    ensure!(
        sum_min <= want && sum_min + nz as u64 >= want,
        "zones' min add up to {sum_min} pages, min_free_kbytes {mfk} is {want} pages"
    );
    Ok(Outcome::Pass)
}

pub(crate) fn watermarks_follow_min_free_kbytes() -> TestResult {
    let mfk = match read_u64(MFK) {
        Ok(v) => v,
        Err(e) => fail!("min_free_kbytes: errno {e}"),
    };
    let wsf = match read_u64(WSF) {
        Ok(v) => v,
        Err(e) => fail!("watermark_scale_factor: errno {e}"),
    };
    ensure!(mfk >= 128, "min_free_kbytes {mfk} below Linux's floor");
    for p in [
        &b"/proc/sys/vm/swappiness\0"[..],
        b"/proc/sys/vm/page-cluster\0",
    ] {
        ensure!(
            read_u64(p).is_ok(),
            "{:?} unreadable",
            core::str::from_utf8(p)
        );
    }
    check_zones(mfk, wsf)?;
    // A larger value moves min (and so low and high) with it.
    let new = mfk + 4096;
    let s = mthp_user::Msg::new(format_args!("{new}\n"));
    if let Err(e) = write_file(MFK, s.as_str().as_bytes()) {
        fail!("writing min_free_kbytes {new}: errno {e}");
    }
    let now = read_u64(MFK).unwrap_or(0);
    let r = check_zones(new, wsf);
    let bad = [
        (MFK, &b"-1"[..]),
        (MFK, b"12abc"),
        (WSF, b"0"),
        (WSF, b"3001"),
        (&b"/proc/sys/vm/swappiness\0"[..], b"201"),
        (&b"/proc/sys/vm/page-cluster\0"[..], b"32"),
    ];
    let mut errs = [0i32; 6];
    for (i, (p, v)) in bad.iter().enumerate() {
        errs[i] = write_file(p, v).err().unwrap_or(0);
    }
    let after = read_u64(MFK).unwrap_or(0);
    // Back to the value found (writing pins it, as any admin write would).
    let s = mthp_user::Msg::new(format_args!("{mfk}"));
    let _ = write_file(MFK, s.as_str().as_bytes());
    ensure!(
        now == new,
        "min_free_kbytes reads {now} after writing {new}"
    );
    r?;
    for (i, e) in errs.iter().enumerate() {
        ensure!(
            *e == sys::EINVAL,
            "writing {:?} gave errno {e}, expected EINVAL",
            core::str::from_utf8(bad[i].1)
        );
    }
    ensure!(
        after == new,
        "a refused write changed min_free_kbytes to {after}"
    );
    check_zones(read_u64(MFK).unwrap_or(0), wsf)
}

const COMPACT_MEMORY: &[u8] = b"/proc/sys/vm/compact_memory\0";
const PROACTIVENESS: &[u8] = b"/proc/sys/vm/compaction_proactiveness\0";
const EXTFRAG: &[u8] = b"/proc/sys/vm/extfrag_threshold\0";
const UNEVICTABLE: &[u8] = b"/proc/sys/vm/compact_unevictable_allowed\0";

fn compact_migrate_scanned() -> Option<u64> {
    let mut buf = [0u8; 16384];
    let n = read_file(b"/proc/vmstat\0", &mut buf).ok()?;
    field(&buf[..n], b"\ncompact_migrate_scanned ")
}

/// The compaction sysctls as Linux 6.12 (notes 5.5): defaults 20 / 500 /
/// 1 and their ranges; `compact_memory` is write-only (0200: even root's
/// read is EACCES), takes only `1` (anything else EINVAL), and a `1`
/// compacts at once, so the migrate scanner's counter grows.
pub(crate) fn compaction_sysctls_as_linux() -> TestResult {
    for (p, want) in [(PROACTIVENESS, 20), (EXTFRAG, 500), (UNEVICTABLE, 1)] {
        let v = read_u64(p);
        ensure!(
            v == Ok(want),
            "{:?} reads {v:?}, expected {want}",
            core::str::from_utf8(p)
        );
    }
    let mut buf = [0u8; 16];
    let r = read_file(COMPACT_MEMORY, &mut buf);
    ensure!(r == Err(sys::EACCES), "reading compact_memory: {r:?}");
    let bad = [
        (COMPACT_MEMORY, &b"2"[..]),
        (COMPACT_MEMORY, b"x"),
        (PROACTIVENESS, b"101"),
        (EXTFRAG, b"1001"),
        (UNEVICTABLE, b"2"),
    ];
    for (p, v) in bad {
        let r = write_file(p, v);
        ensure!(
            r == Err(sys::EINVAL),
            "writing {:?} to {:?}: {r:?}, expected EINVAL",
            core::str::from_utf8(v),
            core::str::from_utf8(p)
        );
    }
    let before = compact_migrate_scanned();
    ensure!(
        before.is_some(),
        "no compact_migrate_scanned in /proc/vmstat"
    );
    let r = write_file(COMPACT_MEMORY, b"1\n");
    ensure!(r == Ok(()), "writing 1 to compact_memory: {r:?}");
    let after = compact_migrate_scanned();
    ensure!(
        after > before,
        "compact_migrate_scanned {before:?} -> {after:?} after compact_memory"
    );
    Ok(Outcome::Pass)
}
