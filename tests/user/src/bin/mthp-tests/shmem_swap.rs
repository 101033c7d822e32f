//! Shmem to swap and back (issue 18 with issue 15's swap): a
//! `MAP_SHARED|MAP_ANONYMOUS` region and a memfd, backed by 64K and then
//! 2M folios (per-size `shmem_enabled=always`), are paged out with
//! `MADV_PAGEOUT`: `Shmem:` drops, `SwapFree` drops, smaps `Swap:` of each
//! VMA counts the object's swapped pages, per-size `swpout` grows.  A
//! forked child reads the data back through the mapping and `pread`.
//! Paged out again, the memfd truncated to 0 gives its slots back
//! (`SwapFree` at its baseline); refilled and paged out again with the
//! memfd unmapped, `swapoff` brings both back with their data.  Same binary on Linux 6.12 with the
//! runner's swap disk; without `/dev/vda` it skips.
//!
//! Linux 6.12 writes asynchronously: right after `MADV_PAGEOUT` the folios
//! may still be in the swap cache (their slots taken, `Shmem:` already
//! down), so the truncate waits a little for writeback, and `SwapFree` is
//! polled.  Linux's own shmem users move `Shmem:` by a few kB: the
//! checks there allow some slack.

use super::swap::{DEV, ensure_swap, meminfo, no_disk, swapoff};
use super::*;

const MADV_PAGEOUT: usize = 21;
const LEN: usize = 4 << 20;

fn memfd_create(name: &core::ffi::CStr) -> isize {
    sys::syscall(sys::nr::MEMFD_CREATE, &[name.as_ptr() as usize, 0])
}

fn ftruncate(fd: isize, len: usize) -> isize {
    sys::syscall(sys::nr::FTRUNCATE, &[fd as usize, len])
}

fn pread(fd: isize, buf: &mut [u8], off: usize) -> isize {
    sys::syscall(
        sys::nr::PREAD64,
        &[fd as usize, buf.as_mut_ptr() as usize, buf.len(), off],
    )
}

fn sleep_ms(ms: u64) {
    let ts = sys::Timespec {
        sec: (ms / 1000) as i64,
        nsec: ((ms % 1000) * 1_000_000) as i64,
    };
    sys::nanosleep(&ts);
}

/// `SwapFree` once it reaches `want` kB (polled for up to 2 s on Linux,
/// whose writeback is asynchronous), else its last value.
fn swap_free_reaching(want: u64) -> u64 {
    let mut v = meminfo(b"\nSwapFree:");
    let mut n = 0;
    while v < want && !on_mthp() && n < 40 {
        sleep_ms(50);
        v = meminfo(b"\nSwapFree:");
        n += 1;
    }
    v
}

/// A shared mapping of `fd` (or anonymous shared memory when `fd < 0`)
/// of `LEN` bytes on a 2 MiB boundary.
fn map_shared(fd: isize) -> Result<Mem, mthp_user::Msg> {
    let hole = map_aligned(LEN, 2 << 20)?;
    let anon = if fd < 0 { sys::MAP_ANONYMOUS } else { 0 };
    let r = check(sys::mmap(
        hole.addr,
        LEN,
        sys::PROT_READ | sys::PROT_WRITE,
        sys::MAP_SHARED | sys::MAP_FIXED | anon,
        fd,
        0,
    ));
    match r {
        Ok(addr) => Ok(Mem { addr, len: LEN }),
        Err(e) => {
            unmap(&hole);
            fail!("mmap(MAP_SHARED, fd {fd}): errno {e}")
        }
    }
}

/// The first offset (stride 64 KiB) where `pread` of `fd` differs from
/// `pattern(salt)`.
fn pread_mismatch(fd: isize, salt: u64) -> Option<usize> {
    let mut off = 0;
    while off < LEN {
        let mut b = [0u8; 8];
        if pread(fd, &mut b, off) != 8 || u64::from_le_bytes(b) != pattern(off, salt) {
            return Some(off);
        }
        off += 64 << 10;
    }
    None
}

pub(crate) fn swap_shmem_out_and_back() -> TestResult {
    if !ensure_swap()? {
        return no_disk();
    }
    for kb in [64usize, 2048] {
        let knob = path!("{THP}/hugepages-{kb}kB/shmem_enabled");
        let mut buf = [0u8; 128];
        let Ok(n) = read_file(knob.c(), &mut buf) else {
            return skip(mthp_user::Msg::new(format_args!(
                "no hugepages-{kb}kB/shmem_enabled here"
            )));
        };
        let mut old = [0u8; 16];
        copy_word(&mut old, selected(&buf[..n]));
        if let Err(e) = write_file(knob.c(), b"always") {
            fail!("writing always to hugepages-{kb}kB/shmem_enabled: errno {e}");
        }
        let r = out_and_back(kb);
        let _ = write_file(
            path!("{THP}/hugepages-{kb}kB/shmem_enabled").c(),
            word(&old),
        );
        r?;
        if !ensure_swap()? {
            fail!("/dev/vda went away");
        }
    }
    Ok(Outcome::Pass)
}

fn out_and_back(kb: usize) -> Result<(), mthp_user::Msg> {
    let fd = memfd_create(c"shmem-swap");
    ensure!(fd >= 0, "memfd_create: {fd}");
    ensure!(ftruncate(fd, LEN) == 0, "ftruncate({LEN})");
    let a = map_shared(-1)?;
    let b = match map_shared(fd) {
        Ok(b) => b,
        Err(e) => {
            unmap(&a);
            sys::close(fd as i32);
            return Err(e);
        }
    };
    let r = body(kb, fd, &a, &b);
    unmap(&a);
    unmap(&b);
    sys::close(fd as i32);
    r
}

fn body(kb: usize, fd: isize, a: &Mem, b: &Mem) -> Result<(), mthp_user::Msg> {
    let len_kb = (LEN >> 10) as u64;
    let slack = if on_mthp() { 0 } else { 1024 };
    let swap_free0 = meminfo(b"\nSwapFree:");
    fill(a, 0xa1);
    fill(b, 0xb2);
    let shmem0 = meminfo(b"\nShmem:");
    let swpout0 = stat(kb, "swpout").unwrap_or(0);
    for m in [a, b] {
        let r = check(sys::madvise(m.addr, m.len, MADV_PAGEOUT));
        ensure!(r.is_ok(), "MADV_PAGEOUT of shmem: {r:?}");
    }
    let shmem1 = meminfo(b"\nShmem:");
    let swap_free1 = meminfo(b"\nSwapFree:");
    ensure!(
        shmem1 + 2 * len_kb <= shmem0 + slack,
        "Shmem {shmem0} -> {shmem1} kB after paging out {} kB",
        2 * len_kb
    );
    ensure!(
        swap_free1 + 2 * len_kb <= swap_free0 + slack,
        "SwapFree {swap_free0} -> {swap_free1} kB after paging out {} kB",
        2 * len_kb
    );
    for (m, what) in [(a, "shared anonymous"), (b, "memfd")] {
        let s = smaps_field(m.addr, b"\nSwap:");
        ensure!(
            s == Some(len_kb),
            "smaps Swap: of the {what} VMA {s:?}, expected {len_kb} kB"
        );
    }
    // The shared anonymous region's folios at least went out whole.
    let swpout = stat(kb, "swpout").unwrap_or(0);
    let want = (LEN / (kb << 10)) as u64;
    ensure!(
        swpout - swpout0 >= want,
        "hugepages-{kb}kB swpout +{}, expected at least {want}",
        swpout - swpout0
    );
    // Back in another process, through the mapping and pread.
    let status = in_child(|| {
        if verify(a, 0, LEN, 0xa1).is_some() {
            return 2;
        }
        if pread_mismatch(fd, 0xb2).is_some() {
            return 3;
        }
        if verify(b, 0, LEN, 0xb2).is_some() {
            return 4;
        }
        0
    })?;
    ensure!(
        wifexited(status) && wexitstatus(status) == 0,
        "child read wrong data back (status {status:#x}: 2 mapping, 3 pread, 4 memfd mapping)"
    );
    ensure!(
        verify(a, 0, LEN, 0xa1).is_none(),
        "parent: shared data changed"
    );
    ensure!(
        verify(b, 0, LEN, 0xb2).is_none(),
        "parent: memfd data changed"
    );
    let shmem2 = meminfo(b"\nShmem:");
    ensure!(
        shmem2 + slack >= shmem0,
        "Shmem {shmem0} -> {shmem2} kB after reading everything back"
    );
    let v = swap_free_reaching(swap_free0);
    ensure!(
        v + slack >= swap_free0,
        "SwapFree {swap_free0} -> {v} kB with everything back in memory"
    );
    // Out again, then truncated: the memfd's slots come back.
    let r = check(sys::madvise(b.addr, b.len, MADV_PAGEOUT));
    ensure!(r.is_ok(), "second MADV_PAGEOUT: {r:?}");
    let out = meminfo(b"\nSwapFree:");
    ensure!(
        out + len_kb <= swap_free0 + slack,
        "SwapFree {swap_free0} -> {out} kB after the second pageout"
    );
    sleep_ms(200);
    ensure!(ftruncate(fd, 0) == 0, "ftruncate(0)");
    let v = swap_free_reaching(swap_free0);
    ensure!(
        v + slack >= swap_free0,
        "SwapFree {swap_free0} -> {v} kB after truncating the swapped memfd"
    );
    // Out again, the memfd refilled and no longer mapped, then swapoff:
    // the shared region and the memfd (reached through its file, Linux's
    // `shmem_unuse`) come back.
    ensure!(ftruncate(fd, LEN) == 0, "ftruncate({LEN}) again");
    fill(b, 0xc3);
    for m in [a, b] {
        let r = check(sys::madvise(m.addr, m.len, MADV_PAGEOUT));
        ensure!(r.is_ok(), "third MADV_PAGEOUT: {r:?}");
    }
    unmap(b);
    let shmem3 = meminfo(b"\nShmem:");
    let r = swapoff(DEV);
    ensure!(r.is_ok(), "swapoff with shmem swapped out: {r:?}");
    let shmem4 = meminfo(b"\nShmem:");
    ensure!(
        shmem4 + slack >= shmem3 + 2 * len_kb,
        "Shmem {shmem3} -> {shmem4} kB across swapoff"
    );
    let s = smaps_field(a.addr, b"\nSwap:");
    ensure!(s == Some(0), "smaps Swap: {s:?} after swapoff");
    ensure!(
        verify(a, 0, LEN, 0xa1).is_none(),
        "data changed across swapoff"
    );
    ensure!(
        pread_mismatch(fd, 0xc3).is_none(),
        "unmapped memfd data changed across swapoff"
    );
    Ok(())
}

/// Size of the object [`swap_shmem_unmapped_pressure`] leaves to reclaim.
const IDLE_LEN: usize = 32 << 20;

/// An object only a file descriptor holds (a memfd written with
/// `pwrite`, never mapped) is reclaimable like mapped memory: a child
/// that asks for more than is free (16 MiB beyond `MemFree`) must get it
/// without being killed, the memfd's pages go to swap (`Shmem:` drops,
/// `pswpout` grows) and every page reads back through `pread`; closing
/// the memfd gives the slots back.  On our kernel this is reclaim's
/// LRU pass given the objects files hold (`shrink_node_files`), as
/// Linux's LRU reaches them through `folio->mapping`.  Checked once: with
/// those objects reached only by a pass run after the LRU pass fell short
/// (the code before), 6 of the 32 MiB went out and the `Shmem:` check
/// failed; Linux pages out all of it.
pub(crate) fn swap_shmem_unmapped_pressure() -> TestResult {
    if !ensure_swap()? {
        return no_disk();
    }
    let fd = memfd_create(c"shmem-idle");
    ensure!(fd >= 0, "memfd_create: {fd}");
    let r = idle_object_body(fd);
    sys::close(fd as i32);
    r?;
    Ok(Outcome::Pass)
}

fn idle_object_body(fd: isize) -> Result<(), mthp_user::Msg> {
    const SALT: u64 = 0x1d1e;
    ensure!(ftruncate(fd, IDLE_LEN) == 0, "ftruncate({IDLE_LEN})");
    let mut page = [0u8; PAGE];
    for off in (0..IDLE_LEN).step_by(PAGE) {
        page[..8].copy_from_slice(&pattern(off, SALT).to_le_bytes());
        page[PAGE - 8..].copy_from_slice(&(!pattern(off, SALT)).to_le_bytes());
        let n = sys::syscall(
            sys::nr::PWRITE64,
            &[fd as usize, page.as_ptr() as usize, PAGE, off],
        );
        ensure!(n == PAGE as isize, "pwrite at {off:#x}: {n}");
    }
    let shmem0 = meminfo(b"\nShmem:");
    let pswpout0 = super::swap::vmstat(b"\npswpout ");
    let status = super::swap::reclaim_pressure()?;
    ensure!(
        wifexited(status) && wexitstatus(status) == 0,
        "pressure child status {status:#x} (2: mmap; killed: reclaim found nothing)"
    );
    let shmem1 = meminfo(b"\nShmem:");
    let pswpout1 = super::swap::vmstat(b"\npswpout ");
    let idle_kb = (IDLE_LEN >> 10) as u64;
    println!("  Shmem {shmem0} -> {shmem1} kB under pressure");
    ensure!(
        shmem1 + idle_kb / 4 <= shmem0,
        "Shmem {shmem0} -> {shmem1} kB: the idle {idle_kb} kB object was not reclaimed"
    );
    ensure!(pswpout1 > pswpout0, "pswpout {pswpout0} -> {pswpout1}");
    // Read back: every page right, and the slots they held come back
    // (shmem swap-in frees them, as Linux's `shmem_swapin_folio`).
    let swap_free = meminfo(b"\nSwapFree:");
    let mut b = [0u8; PAGE];
    for off in (0..IDLE_LEN).step_by(PAGE) {
        let n = pread(fd, &mut b, off);
        ensure!(n == PAGE as isize, "pread at {off:#x}: {n}");
        let head = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let tail = u64::from_le_bytes(b[PAGE - 8..].try_into().unwrap_or_default());
        ensure!(
            head == pattern(off, SALT) && tail == !pattern(off, SALT),
            "memfd page {off:#x} read back {head:#x}/{tail:#x}"
        );
    }
    let want = swap_free + (shmem0 - shmem1).min(idle_kb) - 1024;
    let v = swap_free_reaching(want);
    // Linux 6.12 (x86, 2026-12-06) gave back only about half of them
    // within the 2 s `swap_free_reaching` waits (118524 -> 124412 kB for
    // 12284 kB out; docs/linux-differences.md): printed there, checked
    // here.
    if on_mthp() {
        ensure!(
            v >= want,
            "SwapFree {swap_free} -> {v} kB after reading back the {} kB that went out",
            shmem0 - shmem1
        );
    } else if v < want {
        println!(
            "  SwapFree {swap_free} -> {v} kB after reading back the {} kB that went out",
            shmem0 - shmem1
        );
    }
    Ok(())
}
