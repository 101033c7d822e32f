//! The large-folio feature matrix probe (issue 19): for each folio size
//! (4K, 16K, 64K, 2M) and each feature it sets the case up, checks the
//! data and what became of the folios, and prints one line per cell:
//!
//! ```text
//! matrix <feature> <size> <works|sub-optimal|barely|no|untested> <reason>
//! ```
//!
//! then `matrix done`.  The same static binary runs on this kernel and on
//! Linux (`runner matrix` boots both and puts the answers side by side), so
//! every verdict comes from what a program can observe — data, pagemap +
//! kpageflags ([`thp::layout`]), smaps, the per-size counters, vmstat —
//! never from asking the kernel what it supports.
//!
//! Verdicts: `works` = data correct and folio order kept, by a check that
//! could have failed; `sub-optimal` = correct but split or fell back;
//! `barely` = correct only in part; `no` = an error from the feature's own
//! call, wrong data, a crash or a hang; `untested` = the case could not be
//! set up (no swap device, one NUMA node, no large folios at fault…), with
//! the reason.  Each cell runs in a forked child with a time limit, so one
//! crash or hang costs one cell.
//!
//! `matrix [word[,word…]]` runs only the features whose name contains one
//! of the words.  With a disk at `/dev/vda` (the runner's swap boot) it is
//! marked non-rotational and swapped on first, and off at the end.
#![no_std]
#![no_main]
#![allow(clippy::result_large_err)]

use mthp_user::sys::{self, check};
use mthp_user::thp::{
    Knobs, Layout, PAGE, SZ_2M, THP, field, fill, layout, map_aligned, smaps_field, stat, thp_only,
    unmap, verify,
};
use mthp_user::thread::{clone_thread, join_thread};
use mthp_user::{Args, Mem, Msg, entry, path, println, read_file, write_file};

/// The folio sizes of the columns, KiB (4 = small pages only).
const SIZES: [usize; 4] = [4, 16, 64, 2048];
/// Every case maps three 2 MiB blocks: A (the first folio, the target of
/// whole-folio operations), B (the second block, never touched by the
/// operation: the control) and C (the third, whose second page is the
/// target of partial operations).
const LEN: usize = 3 * SZ_2M;
const B: usize = SZ_2M;
const C: usize = 2 * SZ_2M;
/// Seconds a cell may take before it is killed and reported `no`.
const LIMIT_S: u64 = 60;

const MADV_FREE: usize = 8;
const MADV_COLD: usize = 20;
const MADV_PAGEOUT: usize = 21;
const MADV_COLLAPSE: usize = 25;
const MAP_SHARED: usize = 0x01;
const WNOHANG: usize = 1;

#[derive(Clone, Copy, PartialEq)]
enum Verdict {
    Works,
    SubOptimal,
    Barely,
    No,
    Untested,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Works => "works",
            Verdict::SubOptimal => "sub-optimal",
            Verdict::Barely => "barely",
            Verdict::No => "no",
            Verdict::Untested => "untested",
        }
    }
}

struct Cell(Verdict, Msg);

/// A cell's answer; `Err` is an early answer (set-up failed, wrong data).
type R = Result<Cell, Cell>;

macro_rules! cell {
    ($v:ident, $($t:tt)*) => { Cell(Verdict::$v, Msg::new(format_args!($($t)*))) };
}

/// Return early with a verdict.
macro_rules! bail {
    ($v:ident, $($t:tt)*) => { return Err(cell!($v, $($t)*)) };
}

type Feature = (&'static str, fn(usize) -> R);

/// The rows, in the order they print.
static FEATURES: &[Feature] = &[
    ("fault", fault),
    ("read-fault", read_fault),
    ("cow-fork", cow_fork),
    ("munmap-partial", munmap_partial),
    ("mprotect-partial", mprotect_partial),
    ("mremap-move", mremap_move),
    ("madv-dontneed", madv_dontneed),
    ("madv-free", madv_free),
    ("madv-cold", madv_cold),
    ("madv-pageout", madv_pageout),
    ("mlock", mlock),
    ("swap", swap),
    ("migration", migration),
    ("compaction", compaction),
    ("khugepaged", khugepaged),
    ("madv-collapse", madv_collapse),
    ("split-debugfs", split_debugfs),
    ("shmem", shmem),
    ("memfd", memfd),
    ("tmpfs", tmpfs),
    ("sysv-shm", sysv_shm),
    ("reserve", reserve),
    ("numa", numa),
    ("threads", threads),
];

fn main(args: &Args) -> i32 {
    let linux_init = mthp_user::mount_pseudo_fs_if_needed();
    // On Linux as a child of linux-init debugfs may still be missing.
    mthp_user::mount_pseudo_fs();
    let filter = args.arg(1);
    let saved = Knobs::save();
    // khugepaged asleep for the whole run (the khugepaged cell wakes it for
    // itself): a scan between a cell's operation and its check would
    // collapse what the cell just split or faulted at 4K, making verdicts
    // depend on timing.
    let quiet = Sleeps::save();
    for k in SLEEPS {
        khugepaged_knob(k, b"3600000");
    }
    let swap = SwapDisk::on();
    for (name, f) in FEATURES {
        if let Some(ws) = filter
            && !ws
                .split(|&c| c == b',')
                .any(|w| !w.is_empty() && name.as_bytes().windows(w.len()).any(|x| x == w))
        {
            continue;
        }
        for kb in SIZES {
            let Cell(v, why) = run_cell(*f, kb);
            println!("matrix {name} {} {} {why}", size_name(kb), v.word());
        }
    }
    drop(swap);
    quiet.restore();
    saved.restore();
    println!("matrix done");
    if linux_init {
        mthp_user::power_off();
    }
    0
}

entry!(main);

/// The swap disk (`/dev/vda`, a swap area the runner wrote) while the
/// probe runs, if the boot has one.
struct SwapDisk(bool);

impl SwapDisk {
    fn on() -> SwapDisk {
        if read_file(b"/sys/block/vda/stat\0", &mut [0u8; 32]).is_err() {
            return SwapDisk(false);
        }
        // Linux's cluster allocator for large folios wants an SSD (notes
        // §1); ours reads the same file.
        let _ = write_file(b"/sys/block/vda/queue/rotational\0", b"0");
        let r = sys::swapon(b"/dev/vda\0", 0);
        if r != 0 {
            println!("matrix-info swapon /dev/vda: {r}");
        }
        SwapDisk(r == 0)
    }
}

impl Drop for SwapDisk {
    fn drop(&mut self) {
        if self.0 {
            sys::swapoff(b"/dev/vda\0");
        }
    }
}

fn size_name(kb: usize) -> &'static str {
    match kb {
        4 => "4K",
        16 => "16K",
        64 => "64K",
        _ => "2M",
    }
}

/// Runs one cell in a forked child that reports through a pipe; a crash,
/// a non-zero exit or the time limit becomes `no`.
fn run_cell(f: fn(usize) -> R, kb: usize) -> Cell {
    let mut fds = [0i32; 2];
    if sys::syscall(sys::nr::PIPE2, &[fds.as_mut_ptr() as usize, 0]) < 0 {
        return cell!(Untested, "pipe2 failed");
    }
    let pid = sys::fork();
    if pid == 0 {
        sys::close(fds[0]);
        let Cell(v, why) = f(kb).unwrap_or_else(|c| c);
        let mut line = [0u8; 250];
        line[0] = v as u8;
        let s = why.as_str().as_bytes();
        line[1..1 + s.len()].copy_from_slice(s);
        sys::write(fds[1], &line[..1 + s.len()]);
        sys::exit(0);
    }
    sys::close(fds[1]);
    if pid < 0 {
        sys::close(fds[0]);
        return cell!(Untested, "fork failed: errno {}", -pid);
    }
    let mut status = 0;
    let mut waited_ms = 0u64;
    loop {
        let r = sys::wait4(pid, &mut status, WNOHANG);
        if r == pid {
            break;
        }
        if r < 0 || waited_ms >= LIMIT_S * 1000 {
            sys::kill(pid, sys::SIGKILL);
            sys::wait4(pid, &mut status, 0);
            sys::close(fds[0]);
            return cell!(No, "hung: killed after {LIMIT_S} s");
        }
        sleep_ms(20);
        waited_ms += 20;
    }
    let mut buf = [0u8; 250];
    let n = sys::read(fds[0], &mut buf);
    sys::close(fds[0]);
    if mthp_user::wifsignaled(status) {
        return cell!(No, "crashed: signal {}", mthp_user::wtermsig(status));
    }
    if n < 1 {
        return cell!(No, "cell exited (status {status:#x}) without an answer");
    }
    let v = [
        Verdict::Works,
        Verdict::SubOptimal,
        Verdict::Barely,
        Verdict::No,
        Verdict::Untested,
    ][(buf[0] as usize).min(4)];
    let why = core::str::from_utf8(&buf[1..n as usize]).unwrap_or("?");
    Cell(v, Msg::new(format_args!("{why}")))
}

fn sleep_ms(ms: u64) {
    let ts = sys::Timespec {
        sec: (ms / 1000) as i64,
        nsec: ((ms % 1000) * 1_000_000) as i64,
    };
    sys::nanosleep(&ts);
}

// ------------------------------------------------------------ building blocks

/// Enables only `kb` (4: no mTHP size) for anonymous faults.
fn knobs(kb: usize) -> Result<(), Cell> {
    thp_only((kb > 4).then_some(kb)).map_err(|why| cell!(Untested, "{why}"))
}

/// `kb` KiB folios expected at fault: the per-size `anon_fault_alloc`.
fn alloc_count(kb: usize) -> u64 {
    if kb > 4 {
        stat(kb, "anon_fault_alloc").unwrap_or(0)
    } else {
        0
    }
}

fn lay(addr: usize, len: usize, kb: usize) -> Result<Layout, Cell> {
    layout(addr, len, kb).map_err(|why| cell!(Untested, "{why}"))
}

fn sub(m: &Mem, from: usize, len: usize) -> Mem {
    Mem {
        addr: m.addr + from,
        len,
    }
}

/// Maps the three blocks, faults them in with `kb` folios and checks that
/// the fault really gave such folios (or the feature cannot be tested at
/// this size: `untested`).
fn faulted(kb: usize, salt: u64) -> Result<Mem, Cell> {
    knobs(kb)?;
    let m = map_aligned(LEN, SZ_2M).map_err(|why| cell!(Untested, "{why}"))?;
    fill(&m, salt);
    let l = lay(m.addr, LEN, kb)?;
    if !l.all_in_order() {
        unmap(&m);
        bail!(
            Untested,
            "fault gave no {}: {}/{} pages in such folios",
            size_name(kb),
            l.in_order,
            l.pages
        );
    }
    Ok(m)
}

fn data_ok(m: &Mem, from: usize, to: usize, salt: u64) -> Result<(), Cell> {
    match verify(m, from, to, salt) {
        Some(off) => bail!(No, "wrong data at offset {off:#x}"),
        None => Ok(()),
    }
}

/// Whether every 4K page of `m[from..to]` reads as zero.
fn zeros(m: &Mem, from: usize, to: usize) -> bool {
    (from..to).step_by(512).all(|o| m.peek64(o) == 0)
}

/// Runs `f` in a child and returns its wait status (for "does this access
/// kill?" checks).
fn status_of(f: impl FnOnce() -> i32) -> i32 {
    let pid = sys::fork();
    if pid == 0 {
        sys::exit(f());
    }
    let mut st = 0;
    sys::wait4(pid, &mut st, 0);
    st
}

fn segv(st: i32) -> bool {
    mthp_user::wifsignaled(st) && mthp_user::wtermsig(st) == sys::SIGSEGV
}

/// `works` if `l` (the range the operation left whole) is still in `kb`
/// folios, else `sub-optimal`, with `what` said about it.
fn kept(l: Layout, kb: usize, what: &str) -> R {
    if l.all_in_order() {
        Ok(cell!(Works, "{what}; {} folios kept", size_name(kb)))
    } else {
        Ok(cell!(
            SubOptimal,
            "{what}; only {}/{} pages in {} folios",
            l.in_order,
            l.pages,
            size_name(kb)
        ))
    }
}

/// [`kept`] for `len` bytes at `addr`, the start of a mapping, which for
/// 2M must also be PMD-mapped: smaps `AnonHugePages` covers it (a 2M folio
/// mapped by 512 PTEs keeps its order but not the TLB benefit).
fn kept_at(addr: usize, len: usize, kb: usize, what: &str) -> R {
    let l = lay(addr, len, kb)?;
    if kb == 2048 && l.all_in_order() {
        let ahp = smaps_field(addr, b"AnonHugePages:").unwrap_or(0);
        if ahp < (len >> 10) as u64 {
            bail!(
                SubOptimal,
                "{what}; 2M folios kept but only {ahp} of {} kB PMD-mapped (AnonHugePages)",
                len >> 10
            );
        }
    }
    kept(l, kb, what)
}

fn madvise(m: &Mem, from: usize, len: usize, advice: usize, name: &str) -> Result<(), Cell> {
    match check(sys::madvise(m.addr + from, len, advice)) {
        Ok(_) => Ok(()),
        Err(e) => bail!(No, "madvise({name}): errno {e}"),
    }
}

fn meminfo(key: &[u8]) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(b"/proc/meminfo\0", &mut buf).ok()?;
    field(&buf[..n], key)
}

fn vmstat(key: &[u8]) -> u64 {
    let mut buf = [0u8; 8192];
    read_file(b"/proc/vmstat\0", &mut buf)
        .ok()
        .and_then(|n| field(&buf[..n], key))
        .unwrap_or(0)
}

// ------------------------------------------------------------------- the rows

/// Write faults: data, the per-size `anon_fault_alloc` (one per folio) and
/// the folios in pagemap/kpageflags; a fall back shows as
/// `anon_fault_fallback`.
fn fault(kb: usize) -> R {
    knobs(kb)?;
    let m = map_aligned(LEN, SZ_2M).map_err(|why| cell!(Untested, "{why}"))?;
    let (a0, f0) = (
        alloc_count(kb),
        stat(kb, "anon_fault_fallback").unwrap_or(0),
    );
    fill(&m, 1);
    let (a1, f1) = (
        alloc_count(kb),
        stat(kb, "anon_fault_fallback").unwrap_or(0),
    );
    data_ok(&m, 0, LEN, 1)?;
    let l = lay(m.addr, LEN, kb)?;
    let want = (LEN / (kb << 10)) as u64;
    if kb > 4 && a1 - a0 < want && l.all_in_order() {
        bail!(
            Barely,
            "folios present but anon_fault_alloc +{} < {want}",
            a1 - a0
        );
    }
    let what = Msg::new(format_args!(
        "{}; THPeligible {}, AnonHugePages {} kB",
        if kb > 4 {
            "anon_fault_alloc counted"
        } else {
            "4K pages, no compound bits"
        },
        smaps_field(m.addr, b"THPeligible:").unwrap_or(9),
        smaps_field(m.addr, b"AnonHugePages:").unwrap_or(0)
    ));
    kept_at(m.addr, LEN, kb, what.as_str()).map(|c| {
        if c.0 == Verdict::SubOptimal {
            cell!(
                SubOptimal,
                "fell back: {}/{} pages in {} folios, anon_fault_fallback +{}",
                l.in_order,
                l.pages,
                size_name(kb),
                f1 - f0
            )
        } else {
            c
        }
    })
}

/// Read faults first (zeros; Linux maps the shared zero page), then writes:
/// do the writes still get `kb` folios?
fn read_fault(kb: usize) -> R {
    knobs(kb)?;
    let m = map_aligned(LEN, SZ_2M).map_err(|why| cell!(Untested, "{why}"))?;
    if !zeros(&m, 0, LEN) {
        bail!(No, "fresh anonymous memory did not read as zeros");
    }
    let r = lay(m.addr, LEN, 4)?;
    fill(&m, 2);
    data_ok(&m, 0, LEN, 2)?;
    let what = Msg::new(format_args!(
        "zeros read ({} pages present after reads); written after",
        r.present
    ));
    kept(lay(m.addr, LEN, kb)?, kb, what.as_str())
}

/// Fork, the child checks the data and rewrites block A and B (COW): are its
/// copies `kb` folios, and are the parent's data and folios intact?
fn cow_fork(kb: usize) -> R {
    let m = faulted(kb, 3)?;
    let st = status_of(|| {
        if verify(&m, 0, LEN, 3).is_some() {
            return 200;
        }
        let ab = sub(&m, 0, C);
        fill(&ab, 4);
        if verify(&m, 0, C, 4).is_some() || verify(&m, C, LEN, 3).is_some() {
            return 201;
        }
        match layout(m.addr, C, kb) {
            Ok(l) => (l.in_order * 100 / l.pages) as i32,
            Err(_) => 202,
        }
    });
    if !mthp_user::wifexited(st) {
        bail!(No, "child died: status {st:#x}");
    }
    let code = mthp_user::wexitstatus(st);
    match code {
        200 => bail!(No, "child saw wrong data after fork"),
        201 => bail!(No, "child's writes after fork read back wrong"),
        202 => bail!(Untested, "child could not read pagemap/kpageflags"),
        _ => {}
    }
    data_ok(&m, 0, LEN, 3).map_err(|_| cell!(No, "parent's data changed by the child's writes"))?;
    let l = lay(m.addr, LEN, kb)?;
    if code == 100 && l.all_in_order() {
        Ok(cell!(
            Works,
            "child's COW copies and parent's memory in {} folios",
            size_name(kb)
        ))
    } else {
        Ok(cell!(
            SubOptimal,
            "data right; child's copies {code}% in {} folios, parent {}/{}",
            size_name(kb),
            l.in_order,
            l.pages
        ))
    }
}

/// Unmaps one page inside block C's first folio: the page faults, the rest
/// reads right, block B keeps its folios.
fn munmap_partial(kb: usize) -> R {
    let m = faulted(kb, 5)?;
    let hole = C + PAGE;
    if let Err(e) = check(sys::munmap(m.addr + hole, PAGE)) {
        bail!(No, "munmap: errno {e}");
    }
    if !segv(status_of(|| m.peek(hole) as i32)) {
        bail!(No, "the unmapped page is still readable");
    }
    data_ok(&m, 0, hole, 5)?;
    data_ok(&m, hole + PAGE, LEN, 5)?;
    let rest = lay(m.addr + C, (kb << 10).max(2 * PAGE), 4)?;
    let what = Msg::new(format_args!(
        "hole faults, rest intact; cut folio: {} of its pages now 4K",
        rest.in_order
    ));
    kept(lay(m.addr + B, SZ_2M, kb)?, kb, what.as_str())
}

/// Makes the second half of A's first folio (one page for 4K) read-only:
/// writes there kill, writes to the first half do not, the data stays, and
/// the folio itself stays whole (Linux only remaps it by PTEs).
fn mprotect_partial(kb: usize) -> R {
    let m = faulted(kb, 6)?;
    let fsz = (kb << 10).max(2 * PAGE);
    let half = fsz / 2;
    if let Err(e) = check(sys::mprotect(m.addr + half, half, sys::PROT_READ)) {
        bail!(No, "mprotect: errno {e}");
    }
    if !segv(status_of(|| {
        m.poke(half, 1);
        0
    })) {
        bail!(No, "write to the read-only half did not fault");
    }
    if status_of(|| {
        m.poke(0, 1);
        0
    }) != 0
    {
        bail!(No, "write to the writable half failed");
    }
    data_ok(&m, 0, LEN, 6)?;
    let cut = lay(m.addr, fsz, kb)?;
    let rest = lay(m.addr + B, SZ_2M, kb)?;
    if !cut.all_in_order() && rest.all_in_order() {
        bail!(
            SubOptimal,
            "data right; the folio across the boundary was split"
        );
    }
    kept(rest, kb, "protection split the VMA, data right")
}

/// Moves the whole mapping (MREMAP_FIXED onto a 2 MiB-aligned address):
/// data at the new place, old place unmapped, folios kept.
fn mremap_move(kb: usize) -> R {
    let m = faulted(kb, 7)?;
    let to = map_aligned(LEN, SZ_2M).map_err(|why| cell!(Untested, "{why}"))?;
    let r = sys::mremap(
        m.addr,
        LEN,
        LEN,
        sys::MREMAP_MAYMOVE | sys::MREMAP_FIXED,
        to.addr,
    );
    if let Err(e) = check(r) {
        bail!(No, "mremap: errno {e}");
    }
    if !segv(status_of(|| m.peek(0) as i32)) {
        bail!(No, "the old address still reads");
    }
    data_ok(&to, 0, LEN, 7)?;
    kept_at(to.addr, LEN, kb, "moved, data right")
}

/// Writes one marker word at the start of each page of `m[0..len)` before
/// anything reads there: a read first would map the shared zero page (on
/// Linux) and turn the following write faults into 4K copies, which is the
/// read-fault row's business, not this one's.
fn mark_pages(m: &Mem, len: usize) {
    for p in (0..len).step_by(PAGE) {
        m.poke64(p, 0x6d61_726b);
    }
}

/// What the rest of each marked page (the words `fill` wrote, past the
/// marker) holds: `Some(true)` all zeros, `Some(false)` all the old
/// pattern `salt`, `None` a mix or anything else.
fn page_after_mark(m: &Mem, p: usize, salt: u64) -> Option<bool> {
    let zero = (p + 512..p + PAGE).step_by(512).all(|o| m.peek64(o) == 0);
    let old = verify(m, p + 512, p + PAGE, salt).is_none();
    if m.peek64(p) != 0x6d61_726b {
        return None;
    }
    if zero {
        Some(true)
    } else if old {
        Some(false)
    } else {
        None
    }
}

/// Drops A's first folio whole and one page of C: the folio refaults (by
/// writes) as `kb` folios and the rest of its pages read zeros, the page
/// reads zeros, everything else is intact and B keeps its folios.
fn madv_dontneed(kb: usize) -> R {
    let m = faulted(kb, 8)?;
    let fsz = (kb << 10).max(PAGE);
    madvise(&m, 0, fsz, sys::MADV_DONTNEED, "DONTNEED")?;
    madvise(&m, C + PAGE, PAGE, sys::MADV_DONTNEED, "DONTNEED")?;
    mark_pages(&m, fsz);
    let refault = lay(m.addr, fsz, kb)?;
    if (0..fsz)
        .step_by(PAGE)
        .any(|p| page_after_mark(&m, p, 8) != Some(true))
        || !zeros(&m, C + PAGE, C + 2 * PAGE)
    {
        bail!(No, "dropped memory did not read as zeros");
    }
    data_ok(&m, fsz, C + PAGE, 8)?;
    data_ok(&m, C + 2 * PAGE, LEN, 8)?;
    if !lay(m.addr + B, SZ_2M, kb)?.all_in_order() {
        bail!(SubOptimal, "data right; untouched folios were split");
    }
    kept(refault, kb, "zeros after, refaulted by writes")
}

/// Lazy-frees A's first folio and one page of C, then writes a marker per
/// page of A: each page holds either its old data or zeros past the marker
/// (never a mix), the C page old data or zeros, the rest is intact, and A
/// is in `kb` folios (kept, or refaulted as such).
fn madv_free(kb: usize) -> R {
    let m = faulted(kb, 10)?;
    let fsz = (kb << 10).max(PAGE);
    madvise(&m, 0, fsz, MADV_FREE, "FREE")?;
    madvise(&m, C + PAGE, PAGE, MADV_FREE, "FREE")?;
    mark_pages(&m, fsz);
    let l = lay(m.addr, fsz, kb)?;
    let mut freed = 0;
    for p in (0..fsz).step_by(PAGE) {
        match page_after_mark(&m, p, 10) {
            Some(true) => freed += 1,
            Some(false) => {}
            None => bail!(No, "page {p:#x} is neither its data nor zeros"),
        }
    }
    if !zeros(&m, C + PAGE, C + 2 * PAGE) && verify(&m, C + PAGE, C + 2 * PAGE, 10).is_some() {
        bail!(No, "the lazily freed page is neither its data nor zeros");
    }
    data_ok(&m, fsz, C + PAGE, 10)?;
    data_ok(&m, C + 2 * PAGE, LEN, 10)?;
    let what = Msg::new(format_args!("{freed} pages of the folio freed at once"));
    kept(l, kb, what.as_str())
}

/// MADV_COLD over everything: accepted, data and folios intact.  (Whether
/// the folios moved to the inactive list is not observable here.)
fn madv_cold(kb: usize) -> R {
    let m = faulted(kb, 12)?;
    madvise(&m, 0, LEN, MADV_COLD, "COLD")?;
    data_ok(&m, 0, LEN, 12)?;
    kept_at(m.addr, LEN, kb, "accepted, data right")
}

fn swap_total_kb() -> u64 {
    meminfo(b"SwapTotal:").unwrap_or(0)
}

/// MADV_PAGEOUT: with a swap device the pages must leave memory and come
/// back intact; without one the call can only be checked for not breaking
/// anything, which is `untested`.
fn madv_pageout(kb: usize) -> R {
    let m = faulted(kb, 13)?;
    madvise(&m, 0, LEN, MADV_PAGEOUT, "PAGEOUT")?;
    let l = lay(m.addr, LEN, kb)?;
    data_ok(&m, 0, LEN, 13)?;
    if swap_total_kb() == 0 {
        bail!(
            Untested,
            "no swap device (SwapTotal 0); call accepted, data intact"
        );
    }
    if l.swapped == 0 {
        bail!(SubOptimal, "nothing was paged out");
    }
    kept(lay(m.addr, LEN, kb)?, kb, "paged out and back in")
}

/// Swap out and in (through MADV_PAGEOUT, the one way to force it).
fn swap(kb: usize) -> R {
    knobs(kb)?;
    if swap_total_kb() == 0 {
        bail!(Untested, "no swap device (SwapTotal 0 kB)");
    }
    let before = stat(kb.max(16), "swpout").unwrap_or(0);
    let r = madv_pageout(kb)?;
    let after = stat(kb.max(16), "swpout").unwrap_or(0);
    Ok(Cell(
        r.0,
        Msg::new(format_args!("{}; swpout +{}", r.1, after - before)),
    ))
}

/// mlock of faulted memory: smaps `Locked:` covers it, data and folios
/// intact.
fn mlock(kb: usize) -> R {
    let m = faulted(kb, 14)?;
    if let Err(e) = check(sys::syscall(sys::nr::MLOCK, &[m.addr, LEN])) {
        bail!(No, "mlock: errno {e}");
    }
    let locked = smaps_field(m.addr, b"Locked:").unwrap_or(0);
    data_ok(&m, 0, LEN, 14)?;
    let l = lay(m.addr, LEN, kb)?;
    sys::syscall(sys::nr::MUNLOCK, &[m.addr, LEN]);
    if locked < (LEN >> 10) as u64 {
        bail!(
            Barely,
            "mlock returned 0 but smaps Locked: {locked} kB of {}",
            LEN >> 10
        );
    }
    kept(l, kb, "Locked: in smaps")
}

fn nodes() -> usize {
    let mut n = 0;
    while read_file(
        path!("/sys/devices/system/node/node{n}/meminfo").c(),
        &mut [0u8; 8],
    )
    .is_ok()
    {
        n += 1;
    }
    n
}

/// `move_pages(2)` of `addrs` (to `nodes`, or a query with `None`): the
/// call's result and the per-page statuses.
fn move_pages(addrs: &[usize], nodes: Option<&[i32]>, status: &mut [i32]) -> isize {
    sys::syscall(
        sys::nr::MOVE_PAGES,
        &[
            0,
            addrs.len(),
            addrs.as_ptr() as usize,
            nodes.map_or(0, |n| n.as_ptr() as usize),
            status.as_mut_ptr() as usize,
            0,
        ],
    )
}

/// One address per folio of block A (per 4K page at 4K).
const A_FOLIOS_MAX: usize = SZ_2M / PAGE;

/// move_pages: with a second node, every folio of block A (one address
/// each, as a program that knows its folios would pass) moves to the other
/// node; then every page must be there (a query), the data intact and the
/// folios still of the column's size.  With one node only the query can
/// be checked (`untested`).
fn migration(kb: usize) -> R {
    let m = faulted(kb, 15)?;
    let n = SZ_2M / (kb * 1024);
    let mut addrs = [0usize; A_FOLIOS_MAX];
    for (i, a) in addrs[..n].iter_mut().enumerate() {
        *a = m.addr + i * kb * 1024;
    }
    let mut status = [-1i32; A_FOLIOS_MAX];
    if let Err(e) = check(move_pages(&addrs[..n], None, &mut status[..n])) {
        bail!(No, "move_pages (query): errno {e}");
    }
    data_ok(&m, 0, LEN, 15)?;
    let nn = nodes();
    if nn < 2 {
        bail!(
            Untested,
            "{nn} NUMA node(s): query answered node {}, nowhere to move to",
            status[0]
        );
    }
    let from = status[0];
    let to = if from == 0 { 1 } else { 0 };
    let targets = [to; A_FOLIOS_MAX];
    let r = move_pages(&addrs[..n], Some(&targets[..n]), &mut status[..n]);
    if let Err(e) = check(r) {
        bail!(No, "move_pages to node {to}: errno {e}");
    }
    if r > 0 {
        bail!(Barely, "move_pages to node {to}: {r} folio(s) not moved");
    }
    // Where every 4K page of A is now.
    let mut pages = [0usize; A_FOLIOS_MAX];
    for (i, a) in pages.iter_mut().enumerate() {
        *a = m.addr + i * PAGE;
    }
    let mut now = [-1i32; A_FOLIOS_MAX];
    if let Err(e) = check(move_pages(&pages, None, &mut now)) {
        bail!(No, "move_pages (query after the move): errno {e}");
    }
    data_ok(&m, 0, LEN, 15)?;
    let there = now.iter().filter(|&&s| s == to).count();
    if there < pages.len() {
        bail!(
            Barely,
            "{there}/{} pages of the moved block on node {to} (first status {})",
            pages.len(),
            now[0]
        );
    }
    kept_at(
        m.addr,
        SZ_2M,
        kb,
        Msg::new(format_args!("moved node {from} -> {to}, data right")).as_str(),
    )
}

const MPOL_BIND: usize = 2;

/// mbind(MPOL_BIND) of a fresh mapping to the last node before it is
/// faulted: every page must come from that node, in folios of the
/// column's size (the policy and the fault order together).
fn numa(kb: usize) -> R {
    let n = nodes();
    if n < 2 {
        bail!(
            Untested,
            "{n} NUMA node(s) in /sys/devices/system/node: no placement to test"
        );
    }
    knobs(kb)?;
    let node = n - 1;
    let m = map_aligned(LEN, SZ_2M).map_err(|why| cell!(Untested, "{why}"))?;
    let mask: u64 = 1 << node;
    let r = sys::syscall(
        sys::nr::MBIND,
        &[m.addr, LEN, MPOL_BIND, &mask as *const u64 as usize, 64, 0],
    );
    if let Err(e) = check(r) {
        bail!(No, "mbind(MPOL_BIND, node {node}): errno {e}");
    }
    fill(&m, 24);
    data_ok(&m, 0, LEN, 24)?;
    let mut pages = [0usize; A_FOLIOS_MAX];
    for (i, a) in pages.iter_mut().enumerate() {
        *a = m.addr + i * PAGE;
    }
    let mut now = [-1i32; A_FOLIOS_MAX];
    if let Err(e) = check(move_pages(&pages, None, &mut now)) {
        bail!(No, "move_pages (query): errno {e}");
    }
    let there = now.iter().filter(|&&s| s == node as i32).count();
    if there < pages.len() {
        bail!(
            No,
            "MPOL_BIND to node {node}: {there}/{} pages there (first status {})",
            pages.len(),
            now[0]
        );
    }
    kept_at(
        m.addr,
        LEN,
        kb,
        Msg::new(format_args!("faulted on node {node} under MPOL_BIND")).as_str(),
    )
}

/// Compaction (`/proc/sys/vm/compact_memory`) moves folios within the one
/// node: if ours moved (its frame changed) it must have kept data and
/// order; if nothing moved the cell is `untested`.
fn compaction(kb: usize) -> R {
    let m = faulted(kb, 16)?;
    let frame = |m: &Mem| {
        let pm = sys::open(b"/proc/self/pagemap\0", sys::O_RDONLY);
        let mut e = [0u64; 1];
        let _ = mthp_user::thp::pread_entries(pm as i32, m.addr / PAGE, &mut e);
        sys::close(pm as i32);
        e[0] & mthp_user::thp::PM_PFN
    };
    let pfn0 = frame(&m);
    let mig0 = vmstat(b"pgmigrate_success ");
    match write_file(b"/proc/sys/vm/compact_memory\0", b"1") {
        Ok(()) => {}
        Err(sys::ENOENT) => bail!(Untested, "no /proc/sys/vm/compact_memory"),
        Err(e) => bail!(No, "writing compact_memory: errno {e}"),
    }
    let mig = vmstat(b"pgmigrate_success ") - mig0;
    data_ok(&m, 0, LEN, 16)?;
    let l = lay(m.addr, LEN, kb)?;
    if frame(&m) == pfn0 {
        bail!(
            Untested,
            "compaction ran (pgmigrate_success +{mig}) but did not move these folios"
        );
    }
    kept(l, kb, "moved by compaction")
}

fn khugepaged_knob(name: &str, v: &[u8]) {
    let _ = write_file(path!("{THP}/khugepaged/{name}").c(), v);
}

/// Faults 4K pages, then enables `kb` and lets khugepaged scan (fast
/// settings) for up to 10 s: did it collapse A and B into `kb` folios?
fn khugepaged(kb: usize) -> R {
    if kb == 4 {
        bail!(Untested, "nothing to collapse into at 4K");
    }
    knobs(4)?;
    let m = map_aligned(LEN, SZ_2M).map_err(|why| cell!(Untested, "{why}"))?;
    fill(&m, 17);
    knobs(kb)?;
    let _ = sys::madvise(m.addr, LEN, sys::MADV_HUGEPAGE);
    // Fast scans for this cell only: left on, khugepaged would collapse
    // what later cells split or fault at 4K (seen: a debugfs split undone).
    let saved = Sleeps::save();
    for k in SLEEPS {
        khugepaged_knob(k, b"10");
    }
    let r = khugepaged_wait(&m, kb);
    saved.restore();
    r
}

/// khugepaged's sleep knobs as they were, to put back.
struct Sleeps([([u8; 16], usize); 2]);

impl Sleeps {
    fn save() -> Sleeps {
        let mut s = Sleeps([([0; 16], 0); 2]);
        for (i, k) in SLEEPS.iter().enumerate() {
            let (buf, n) = &mut s.0[i];
            *n = read_file(path!("{THP}/khugepaged/{k}").c(), buf).unwrap_or(0);
        }
        s
    }
    fn restore(&self) {
        for (i, k) in SLEEPS.iter().enumerate() {
            let (buf, n) = &self.0[i];
            if *n > 0 {
                khugepaged_knob(k, mthp_user::trim(&buf[..*n]));
            }
        }
    }
}

/// The khugepaged knobs [`khugepaged`] speeds up.
const SLEEPS: [&str; 2] = ["scan_sleep_millisecs", "alloc_sleep_millisecs"];

fn khugepaged_wait(m: &Mem, kb: usize) -> R {
    let mut l = lay(m.addr, C, kb)?;
    let mut waited = 0;
    while !l.all_in_order() && waited < 10_000 {
        sleep_ms(250);
        waited += 250;
        l = lay(m.addr, C, kb)?;
    }
    data_ok(m, 0, LEN, 17)?;
    if l.all_in_order() {
        let what = Msg::new(format_args!("collapsed in {waited} ms"));
        return kept_at(m.addr, C, kb, what.as_str());
    }
    let big = lay(m.addr, C, 2048)?;
    if big.in_order > 0 {
        bail!(
            SubOptimal,
            "collapsed to 2M instead ({} pages), not {}",
            big.in_order,
            size_name(kb)
        );
    }
    bail!(
        SubOptimal,
        "data right, not collapsed in 10 s ({}/{} pages)",
        l.in_order,
        l.pages
    )
}

/// Faults 4K pages, enables `kb`, MADV_COLLAPSE: into `kb` folios?
fn madv_collapse(kb: usize) -> R {
    if kb == 4 {
        bail!(Untested, "nothing to collapse into at 4K");
    }
    knobs(4)?;
    let m = map_aligned(LEN, SZ_2M).map_err(|why| cell!(Untested, "{why}"))?;
    fill(&m, 18);
    knobs(kb)?;
    madvise(&m, 0, C, MADV_COLLAPSE, "COLLAPSE")?;
    data_ok(&m, 0, LEN, 18)?;
    let l = lay(m.addr, C, kb)?;
    if l.all_in_order() {
        return kept_at(m.addr, C, kb, "collapsed");
    }
    let big = lay(m.addr, C, 2048)?;
    if big.all_in_order() {
        bail!(
            SubOptimal,
            "collapsed to 2M, not {} (PMD-size only)",
            size_name(kb)
        );
    }
    bail!(
        SubOptimal,
        "data right, not collapsed ({}/{} pages)",
        l.in_order,
        l.pages
    )
}

/// debugfs `split_huge_pages` to order 0 over block A: the pages become
/// 4K, the data stays, the per-size `split` counter moves.
fn split_debugfs(kb: usize) -> R {
    const SPLIT: &[u8] = b"/sys/kernel/debug/split_huge_pages\0";
    if kb == 4 {
        bail!(Untested, "no large folio to split at 4K");
    }
    if write_file(SPLIT, b"x") == Err(sys::ENOENT) {
        bail!(Untested, "no /sys/kernel/debug/split_huge_pages");
    }
    let m = faulted(kb, 19)?;
    let s0 = stat(kb, "split").unwrap_or(0);
    let cmd = Msg::new(format_args!(
        "{},{:#x},{:#x},0",
        sys::getpid(),
        m.addr,
        m.addr + SZ_2M
    ));
    if let Err(e) = write_file(SPLIT, cmd.as_str().as_bytes()) {
        bail!(No, "writing '{}': errno {e}", cmd);
    }
    let s = stat(kb, "split").unwrap_or(0) - s0;
    data_ok(&m, 0, LEN, 19)?;
    let small = lay(m.addr, SZ_2M, 4)?;
    let rest = lay(m.addr + B, SZ_2M, kb)?;
    if small.all_in_order() && rest.all_in_order() {
        Ok(cell!(Works, "split to 4K as asked (split +{s}), rest kept"))
    } else if small.in_order > 0 {
        bail!(
            Barely,
            "{}/{} pages split, rest kept: {}",
            small.in_order,
            small.pages,
            rest.all_in_order()
        )
    } else {
        bail!(No, "nothing was split (split +{s})")
    }
}

/// Sets the per-size shmem knobs (`hugepages-<kb>kB/shmem_enabled`): only
/// `kb` `always`; the top-level `shmem_enabled` (tmpfs files, memfd) is
/// `always` for 2M and `never` otherwise.  Missing knobs are ignored: the
/// folios found say what happened.
fn shmem_knobs(kb: usize) {
    for s in mthp_user::thp::SIZES_KB {
        let w: &[u8] = if s == kb { b"always" } else { b"never" };
        let _ = write_file(path!("{THP}/hugepages-{s}kB/shmem_enabled").c(), w);
    }
    let top: &[u8] = if kb == 2048 { b"always" } else { b"never" };
    let _ = write_file(path!("{THP}/shmem_enabled").c(), top);
}

/// A shared mapping (fd -1: MAP_SHARED anonymous, else the file) written by
/// the parent, rewritten in half by a child: the parent sees the child's
/// writes, and the folios are `kb`.
fn shared_case(kb: usize, fd: isize) -> R {
    shmem_knobs(kb);
    let r = sys::mmap(
        0,
        LEN + SZ_2M,
        sys::PROT_READ | sys::PROT_WRITE,
        MAP_SHARED | if fd < 0 { sys::MAP_ANONYMOUS } else { 0 },
        fd,
        0,
    );
    let base = match check(r) {
        Ok(a) => a,
        Err(e) => {
            shmem_knobs(0);
            bail!(No, "mmap(MAP_SHARED): errno {e}")
        }
    };
    shared_at(kb, base)
}

/// [`shared_case`] on a shared mapping of `LEN + 2 MiB` bytes at `base`,
/// with the shmem knobs already set for `kb` (put back here).
fn shared_at(kb: usize, base: usize) -> R {
    // A 2 MiB-aligned window of the (over-sized) shared mapping.
    let m = Mem {
        addr: (base + SZ_2M - 1) & !(SZ_2M - 1),
        len: LEN,
    };
    fill(&m, 20);
    let st = status_of(|| {
        fill(&sub(&m, 0, B), 21);
        0
    });
    shmem_knobs(0);
    if st != 0 {
        bail!(No, "child writing the shared memory: status {st:#x}");
    }
    if verify(&m, 0, B, 21).is_some() {
        bail!(No, "the child's writes are not visible (not shared)");
    }
    data_ok(&m, B, LEN, 20)?;
    let l = lay(m.addr, LEN, kb)?;
    kept(l, kb, "shared writes visible")
}

fn shmem(kb: usize) -> R {
    shared_case(kb, -1)
}

fn memfd(kb: usize) -> R {
    let fd = sys::syscall(sys::nr::MEMFD_CREATE, &[c"matrix".as_ptr() as usize, 0]);
    if let Err(e) = check(fd) {
        bail!(No, "memfd_create: errno {e}");
    }
    if let Err(e) = check(sys::syscall(
        sys::nr::FTRUNCATE,
        &[fd as usize, LEN + SZ_2M],
    )) {
        bail!(No, "ftruncate(memfd): errno {e}");
    }
    shared_case(kb, fd)
}

/// A file on a tmpfs mounted with `huge=always` (Linux 6.12: PMD size or
/// nothing, whatever the per-size knobs say), shared as the memfd cell.
fn tmpfs(kb: usize) -> R {
    let dir = c"/tmp/mthp-matrix";
    let mk = sys::syscall(
        sys::nr::MKDIRAT,
        &[-100isize as usize, dir.as_ptr() as usize, 0o755],
    );
    if mk < 0 && mk != -(sys::EEXIST as isize) {
        bail!(Untested, "mkdir /tmp/mthp-matrix: errno {}", -mk);
    }
    let mnt = sys::syscall(
        sys::nr::MOUNT,
        &[
            c"tmpfs".as_ptr() as usize,
            dir.as_ptr() as usize,
            c"tmpfs".as_ptr() as usize,
            0,
            c"huge=always".as_ptr() as usize,
        ],
    );
    if let Err(e) = check(mnt) {
        bail!(Untested, "mount tmpfs huge=always: errno {e}");
    }
    let file = c"/tmp/mthp-matrix/f";
    let fd = sys::syscall(
        sys::nr::OPENAT,
        &[
            -100isize as usize,
            file.as_ptr() as usize,
            sys::O_RDWR | 0o100,
            0o600,
        ],
    );
    let r = if let Err(e) = check(fd) {
        Err(cell!(No, "open(O_CREAT) on tmpfs: errno {e}"))
    } else if let Err(e) = check(sys::syscall(
        sys::nr::FTRUNCATE,
        &[fd as usize, LEN + SZ_2M],
    )) {
        Err(cell!(No, "ftruncate on tmpfs: errno {e}"))
    } else {
        shared_case(kb, fd)
    };
    if fd >= 0 {
        sys::close(fd as i32);
        sys::syscall(
            sys::nr::UNLINKAT,
            &[-100isize as usize, file.as_ptr() as usize, 0],
        );
    }
    sys::syscall(sys::nr::UMOUNT2, &[dir.as_ptr() as usize, 2]);
    r
}

/// Reservations (this kernel's `hugepages-<size>kB/reserve`, issue 17):
/// one write per block costs one page of RSS, as with 4K pages; filling
/// every page then gives `kb` folios in place (a PMD for 2M).  Linux has
/// no such mode: `no`.
fn reserve(kb: usize) -> R {
    if kb == 4 {
        bail!(Untested, "4K pages: nothing to reserve");
    }
    knobs(kb)?;
    let knob = path!("{THP}/hugepages-{kb}kB/reserve");
    if let Err(e) = write_file(knob.c(), b"1") {
        bail!(
            No,
            "no hugepages-{kb}kB/reserve (errno {e}): no reservation mode"
        );
    }
    let r = reserve_filled(kb);
    let _ = write_file(knob.c(), b"0");
    r
}

fn reserve_filled(kb: usize) -> R {
    let m = map_aligned(LEN, SZ_2M).map_err(|why| cell!(Untested, "{why}"))?;
    let block = kb << 10;
    for off in (0..LEN).step_by(block) {
        m.poke64(off, 1);
    }
    let rss = smaps_field(m.addr, b"Rss:").unwrap_or(u64::MAX);
    let pages_kb = (LEN / block * 4) as u64;
    fill(&m, 3);
    data_ok(&m, 0, LEN, 3)?;
    if rss > pages_kb {
        bail!(
            SubOptimal,
            "one write per block cost {rss} kB of Rss (4K pages: {pages_kb} kB)"
        );
    }
    let what = Msg::new(format_args!(
        "one write per block: Rss {rss} kB (= 4K pages'); filled, reserve_promote {}",
        stat(kb, "reserve_promote").unwrap_or(0)
    ));
    kept_at(m.addr, LEN, kb, what.as_str())
}

/// A System V segment (`shmget` + `shmat`, removed at once so it goes
/// with the detach), shared as the memfd cell.
fn sysv_shm(kb: usize) -> R {
    shmem_knobs(kb);
    let id = sys::syscall(sys::nr::SHMGET, &[0, LEN + SZ_2M, 0o1000 | 0o600]);
    if let Err(e) = check(id) {
        shmem_knobs(0);
        bail!(No, "shmget: errno {e}");
    }
    let a = sys::syscall(sys::nr::SHMAT, &[id as usize, 0, 0]);
    sys::syscall(sys::nr::SHMCTL, &[id as usize, 0, 0]);
    let base = match check(a) {
        Ok(a) => a,
        Err(e) => {
            shmem_knobs(0);
            bail!(No, "shmat: errno {e}")
        }
    };
    let r = shared_at(kb, base);
    sys::syscall(sys::nr::SHMDT, &[base]);
    r
}

/// The thread body: fills block A and B from another task of the same mm.
extern "C" fn thread_body(addr: usize) -> usize {
    fill(&Mem { addr, len: C }, 23);
    0
}

/// A second thread of this process (the clone flags of `pthread_create`)
/// faults blocks A and B: the main thread joins it (CLONE_CHILD_CLEARTID +
/// futex, as `pthread_join`), reads its data and finds `kb` folios.
fn threads(kb: usize) -> R {
    knobs(kb)?;
    let m = map_aligned(LEN, SZ_2M).map_err(|why| cell!(Untested, "{why}"))?;
    let stack = map_aligned(64 << 10, PAGE).map_err(|why| cell!(Untested, "{why}"))?;
    let ctid = core::sync::atomic::AtomicU32::new(0);
    let tid = clone_thread(thread_body, m.addr, stack.addr + stack.len, &ctid);
    if let Err(e) = check(tid) {
        bail!(No, "clone(pthread flags): errno {e}");
    }
    if !join_thread(&ctid, 30) {
        bail!(
            No,
            "the thread did not exit (clear_child_tid never cleared)"
        );
    }
    data_ok(&m, 0, C, 23)?;
    kept_at(m.addr, C, kb, "faulted by another thread")
}
