//! Reservation-based allocation with in-place promotion (this kernel's own,
//! issue 17; `hugepages-<size>kB/reserve`): touching one page per block
//! costs one page of RSS, as with 4K pages; filling the blocks page by page
//! in random order, while another thread reads, ends with the same large
//! folios a THP fault gives (pagemap frames, kpageflags, `AnonHugePages`),
//! built in place.  Linux has no reservations: the test skips there.

use super::*;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use mthp_user::thread::{clone_thread, join_thread};

const STACK: usize = 64 << 10;

/// What the reader thread shares with the test.
struct Reader {
    /// The region's address; the reader checks its first page.
    addr: AtomicUsize,
    stop: AtomicBool,
    reads: AtomicU64,
    bad: AtomicU64,
    ctid: AtomicU32,
}

static READER: Reader = Reader {
    addr: AtomicUsize::new(0),
    stop: AtomicBool::new(false),
    reads: AtomicU64::new(0),
    bad: AtomicU64::new(0),
    ctid: AtomicU32::new(0),
};

/// The reader: checks the (already written) first page of every 64K of
/// the region until told to stop.
extern "C" fn reader(len: usize) -> usize {
    let r = &READER;
    let base = r.addr.load(SeqCst);
    while !r.stop.load(SeqCst) {
        for off in (0..len).step_by(SZ_64K) {
            // SAFETY: the region stays mapped until the reader is joined.
            let v = unsafe { core::ptr::read_volatile((base + off) as *const u64) };
            if v != pattern(off, 0x5e) {
                r.bad.fetch_add(1, SeqCst);
            }
        }
        r.reads.fetch_add(1, SeqCst);
    }
    0
}

/// Page indices `0..n` in a fixed pseudo-random order (`n` <= 512).
fn shuffled(n: usize, out: &mut [u16; 512]) {
    for (i, o) in out.iter_mut().enumerate().take(n) {
        *o = i as u16;
    }
    let mut x: u64 = 0x9e37_79b9;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// Runs `f` with `kb` the only THP size and its reservation mode on (off
/// again after); skips on a kernel without reservations (Linux).
fn with_reserve(kb: usize, f: impl FnOnce() -> TestResult) -> TestResult {
    let knob = path!("{THP}/hugepages-{kb}kB/reserve");
    if read_file(knob.c(), &mut [0u8; 8]).is_err() {
        ensure!(!on_mthp(), "no hugepages-{kb}kB/reserve");
        return skip(mthp_user::Msg::new(format_args!(
            "Linux has no reservation mode (this kernel's own)"
        )));
    }
    if let Err(why) = thp_only(Some(kb)) {
        return skip(why);
    }
    if let Err(e) = write_file(knob.c(), b"1") {
        fail!("write {kb}kB reserve: errno {e}");
    }
    let r = f();
    let _ = write_file(knob.c(), b"0");
    r
}

fn reserve_fill(kb: usize) -> TestResult {
    with_reserve(kb, || {
        let pm = sys::open(b"/proc/self/pagemap\0", sys::O_RDONLY);
        let kf = sys::open(b"/proc/kpageflags\0", sys::O_RDONLY);
        ensure!(pm >= 0 && kf >= 0, "open pagemap/kpageflags: {pm} {kf}");
        let r = reserve_fill_once(pm as i32, kf as i32, kb);
        sys::close(pm as i32);
        sys::close(kf as i32);
        r
    })
}

fn reserve_fill_once(pm: i32, kf: i32, kb: usize) -> TestResult {
    let block = kb * 1024;
    let pages = SZ_2M / PAGE;
    let per_block = block / PAGE;
    let alloc0 = stat(kb, "reserve_alloc").unwrap_or(0);
    let promote0 = stat(kb, "reserve_promote").unwrap_or(0);
    let m = map_aligned(SZ_2M, SZ_2M)?;
    // The first page of every 64K: one page of RSS each.
    for off in (0..m.len).step_by(SZ_64K) {
        m.poke64(off, pattern(off, 0x5e));
    }
    let rss = smaps_field(m.addr, b"Rss:").unwrap_or(0);
    let touched = (SZ_2M / SZ_64K) as u64 * 4;
    if rss != touched {
        unmap(&m);
        fail!("Rss {rss} kB after touching {touched} kB");
    }
    let made = stat(kb, "reserve_alloc").unwrap_or(0) - alloc0;
    ensure!(
        made == (SZ_2M / block) as u64,
        "{made} reservations for {} blocks",
        SZ_2M / block
    );
    // Fill the rest in random order while a thread reads.
    let stack = sys::mmap(
        0,
        STACK,
        sys::PROT_READ | sys::PROT_WRITE,
        sys::MAP_PRIVATE | sys::MAP_ANONYMOUS,
        -1,
        0,
    );
    ensure!(stack > 0, "mmap stack: {stack}");
    let r = &READER;
    r.addr.store(m.addr, SeqCst);
    r.stop.store(false, SeqCst);
    r.reads.store(0, SeqCst);
    r.bad.store(0, SeqCst);
    let tid = clone_thread(reader, m.len, stack as usize + STACK, &r.ctid);
    ensure!(tid > 0, "clone(thread): {tid}");
    let mut order = [0u16; 512];
    shuffled(pages, &mut order);
    for &p in &order[..pages] {
        let off = p as usize * PAGE;
        if !off.is_multiple_of(SZ_64K) {
            m.poke64(off, pattern(off, 0x5e));
        }
    }
    // Let the reader run over the promoted region too.
    let seen = r.reads.load(SeqCst);
    while r.reads.load(SeqCst) < seen + 2 {
        sys::sched_yield();
    }
    r.stop.store(true, SeqCst);
    let joined = join_thread(&r.ctid, 30);
    sys::munmap(stack as usize, STACK);
    let res = (|| -> TestResult {
        ensure!(joined, "reader thread did not exit");
        ensure!(
            r.bad.load(SeqCst) == 0,
            "reader saw {} wrong values",
            r.bad.load(SeqCst)
        );
        if let Some(off) = (0..m.len)
            .step_by(PAGE)
            .find(|&o| m.peek64(o) != pattern(o, 0x5e))
        {
            fail!("data wrong at {off:#x}");
        }
        let promoted = stat(kb, "reserve_promote").unwrap_or(0) - promote0;
        ensure!(
            promoted == (SZ_2M / block) as u64,
            "{promoted} blocks promoted of {}",
            SZ_2M / block
        );
        if let Err(e) = check_folios(pm, kf, m.addr, pages, per_block) {
            fail!("after filling: {}", e.as_str());
        }
        if kb == 2048 {
            let huge = smaps_field(m.addr, b"AnonHugePages:").unwrap_or(0);
            ensure!(huge == 2048, "AnonHugePages {huge} kB, expected 2048");
        }
        Ok(Outcome::Pass)
    })();
    unmap(&m);
    res
}

pub(crate) fn reserve_fill_64k() -> TestResult {
    reserve_fill(64)
}

pub(crate) fn reserve_fill_2m() -> TestResult {
    reserve_fill(2048)
}

/// Reservations hold memory their owner has not touched; under pressure it
/// must come back.  64 2 MiB reservations with one page each hold 128 MiB
/// (but 256 KiB of Rss); a second region, faulted with 4K pages
/// (`MADV_NOHUGEPAGE`), then asks for more than is free.  It must get it
/// (no OOM kill: the reservations break, their unused pages freed), the
/// reserved pages keep their data, `reserve_break` counts the broken ones,
/// the region gets its memory, and after both go free memory is back.
/// Checked once: with the shrinker, the
/// LRU's split and compaction's split of reservations all disabled, the
/// child is killed for want of memory.
pub(crate) fn reserve_pressure() -> TestResult {
    let kb = 2048;
    with_reserve(kb, || reserve_pressure_on(kb))
}

fn reserve_pressure_on(kb: usize) -> TestResult {
    // Free 2 MiB blocks for the reservations, whatever ran before.
    let _ = write_file(b"/proc/sys/vm/compact_memory\0", b"1");
    let st = in_child(|| {
        let free_kb =
            || super::mlock::proc_field(b"/proc/meminfo\0", b"\nMemFree:").unwrap_or(0) as usize;
        let free0 = free_kb();
        let resv_len = 64 * SZ_2M;
        let Ok(r) = map_aligned(resv_len, SZ_2M) else {
            return 2;
        };
        for off in (0..r.len).step_by(SZ_2M) {
            r.poke64(off + 64, pattern(off, 0x77));
        }
        let held = free0.saturating_sub(free_kb());
        if held < 96 << 10 {
            println!("  reservations hold only {held} kB");
            return 3;
        }
        // More than is free now, less than is free without reservations.
        let want = (free_kb() + (64 << 10)) * 1024;
        if !write_anon(want, true) {
            return 4;
        }
        if (0..r.len)
            .step_by(SZ_2M)
            .any(|off| r.peek64(off + 64) != pattern(off, 0x77))
        {
            return 5;
        }
        unmap(&r);
        // Nothing kept: free memory back within 16 MiB (per-CPU lists,
        // page-table caches).
        let back = free_kb();
        if back + (16 << 10) < free0 {
            println!("  MemFree {free0} kB before, {back} kB after");
            return 6;
        }
        0
    });
    let broke = stat(kb, "reserve_break").unwrap_or(0);
    let st = st?;
    ensure!(
        wifexited(st) && wexitstatus(st) == 0,
        "child status {st:#x} (2: mmap, 3: reservations held nothing, 4: mmap of the big region, 5: data, 6: memory not back; killed: no memory came back)"
    );
    ensure!(broke > 0, "no reservation broke under pressure");
    Ok(Outcome::Pass)
}
