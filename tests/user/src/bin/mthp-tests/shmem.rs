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
