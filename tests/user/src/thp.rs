//! THP helpers the test programs share (`mthp-tests`, `matrix`): the THP
//! knobs (saved, set, restored), per-size counters, aligned mappings,
//! fill/verify patterns, smaps fields and the pagemap/kpageflags readers,
//! so both programs prove a mapping's folios the same way.

use crate::sys::{self, check};
use crate::{Mem, Outcome, TestResult, ensure, fail, on_mthp, path, read_file, write_file};

pub const THP: &str = "/sys/kernel/mm/transparent_hugepage";
pub const PR_SET_NAME: usize = 15;
pub const PR_GET_NAME: usize = 16;
pub const PR_SET_THP_DISABLE: usize = 41;
pub const PR_GET_THP_DISABLE: usize = 42;
pub const PAGE: usize = 4096;
pub const SZ_64K: usize = 64 << 10;
pub const SZ_2M: usize = 2 << 20;
/// Folio sizes with a per-size directory (kB): orders 1..=9.
pub const SIZES_KB: [usize; 9] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048];

// ---------------------------------------------------------------- helpers

/// The THP knobs this suite writes, saved so they can be put back.
pub struct Knobs {
    top: [u8; 16],
    sizes: [[u8; 16]; 9],
}

/// The selected word of a `a [b] c` file.
pub fn selected(buf: &[u8]) -> &[u8] {
    let (Some(a), Some(b)) = (
        buf.iter().position(|&c| c == b'['),
        buf.iter().position(|&c| c == b']'),
    ) else {
        return b"";
    };
    if a < b { &buf[a + 1..b] } else { b"" }
}

pub fn copy_word(dst: &mut [u8; 16], w: &[u8]) {
    let n = w.len().min(15);
    dst[..n].copy_from_slice(&w[..n]);
}

pub fn word(w: &[u8; 16]) -> &[u8] {
    let n = w.iter().position(|&c| c == 0).unwrap_or(16);
    &w[..n]
}

impl Knobs {
    pub fn save() -> Knobs {
        let mut k = Knobs {
            top: [0; 16],
            sizes: [[0; 16]; 9],
        };
        let mut buf = [0u8; 128];
        if let Ok(n) = read_file(path!("{THP}/enabled").c(), &mut buf) {
            copy_word(&mut k.top, selected(&buf[..n]));
        }
        for (i, kb) in SIZES_KB.iter().enumerate() {
            if let Ok(n) = read_file(path!("{THP}/hugepages-{kb}kB/enabled").c(), &mut buf) {
                copy_word(&mut k.sizes[i], selected(&buf[..n]));
            }
        }
        k
    }

    pub fn restore(&self) {
        if !word(&self.top).is_empty() {
            let _ = write_file(path!("{THP}/enabled").c(), word(&self.top));
        }
        for (i, kb) in SIZES_KB.iter().enumerate() {
            if !word(&self.sizes[i]).is_empty() {
                let _ = write_file(
                    path!("{THP}/hugepages-{kb}kB/enabled").c(),
                    word(&self.sizes[i]),
                );
            }
        }
    }
}

/// Enable exactly the folio size `only_kb` (`None`: none) for anonymous
/// memory: every per-size knob `never` except that one `always`.
/// `Err` carries a skip reason (no THP sysfs, or not writable).
pub fn thp_only(only_kb: Option<usize>) -> Result<(), crate::Msg> {
    if let Some(kb) = only_kb
        && read_file(path!("{THP}/hugepages-{kb}kB/enabled").c(), &mut [0u8; 64]).is_err()
    {
        return Err(crate::Msg::new(format_args!("no {kb}kB mTHP size here")));
    }
    for kb in SIZES_KB {
        let w: &[u8] = if Some(kb) == only_kb {
            b"always"
        } else {
            b"never"
        };
        match write_file(path!("{THP}/hugepages-{kb}kB/enabled").c(), w) {
            Ok(()) | Err(sys::ENOENT) => {}
            Err(e) => {
                return Err(crate::Msg::new(format_args!(
                    "cannot write hugepages-{kb}kB/enabled (errno {e})"
                )));
            }
        }
    }
    Ok(())
}

/// A per-size counter, e.g. `stat(64, "anon_fault_alloc")`.
pub fn stat(kb: usize, name: &str) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = read_file(path!("{THP}/hugepages-{kb}kB/stats/{name}").c(), &mut buf).ok()?;
    crate::parse_u64(&buf[..n])
}

pub fn minflt() -> i64 {
    let mut ru = sys::Rusage::default();
    sys::getrusage(sys::RUSAGE_SELF, &mut ru);
    ru.minflt
}

/// `ru_majflt` of this process: faults that waited for the swap device.
pub fn majflt() -> i64 {
    let mut ru = sys::Rusage::default();
    sys::getrusage(sys::RUSAGE_SELF, &mut ru);
    ru.majflt
}

/// An anonymous private read-write mapping of `len` bytes whose start is
/// aligned to `align` (over-allocate, then trim both ends).
pub fn map_aligned(len: usize, align: usize) -> Result<Mem, crate::Msg> {
    match map_aligned_at(len, align) {
        Ok(addr) => Ok(Mem { addr, len }),
        Err(e) => fail!("mmap({:#x}) failed: errno {e}", len + align),
    }
}

/// [`map_aligned`]'s address, or the errno of the `mmap` (for programs
/// that report errnos rather than messages, e.g. `bench`).
pub fn map_aligned_at(len: usize, align: usize) -> Result<usize, i32> {
    let total = len + align;
    let base = check(sys::mmap(
        0,
        total,
        sys::PROT_READ | sys::PROT_WRITE,
        sys::MAP_PRIVATE | sys::MAP_ANONYMOUS,
        -1,
        0,
    ))?;
    let start = (base + align - 1) & !(align - 1);
    if start > base {
        sys::munmap(base, start - base);
    }
    let end = start + len;
    if base + total > end {
        sys::munmap(end, base + total - end);
    }
    Ok(start)
}

pub fn unmap(m: &Mem) {
    sys::munmap(m.addr, m.len);
}

/// Write one byte in every 4 KiB page of `m`; return the minor faults taken.
pub fn touch_pages(m: &Mem, val: u8) -> i64 {
    let before = minflt();
    let mut off = 0;
    while off < m.len {
        m.poke(off, val);
        off += PAGE;
    }
    minflt() - before
}

/// Fork; the child runs `f` and exits with its result (0 = ok).  Returns
/// the wait status.
pub fn in_child(f: impl FnOnce() -> i32) -> Result<i32, crate::Msg> {
    let pid = sys::fork();
    if pid == 0 {
        sys::exit(f());
    }
    if pid < 0 {
        fail!("fork failed: errno {}", -pid);
    }
    let mut status = 0;
    let r = sys::wait4(pid, &mut status, 0);
    ensure!(r == pid, "wait4 returned {r}, expected {pid}");
    Ok(status)
}

/// Maps `len` bytes of private anonymous memory (`MADV_NOHUGEPAGE` with
/// `nohugepage`), writes a word in every page, and unmaps it: how a test
/// makes memory pressure.  False when the mmap failed.
pub fn write_anon(len: usize, nohugepage: bool) -> bool {
    let p = sys::mmap(
        0,
        len,
        sys::PROT_READ | sys::PROT_WRITE,
        sys::MAP_PRIVATE | sys::MAP_ANONYMOUS,
        -1,
        0,
    );
    if p <= 0 {
        return false;
    }
    if nohugepage {
        sys::madvise(p as usize, len, sys::MADV_NOHUGEPAGE);
    }
    for off in (0..len).step_by(PAGE) {
        // SAFETY: our mapping, `len` bytes long.
        unsafe { core::ptr::write_volatile((p as usize + off) as *mut u64, off as u64) };
    }
    sys::munmap(p as usize, len);
    true
}

pub fn pattern(off: usize, salt: u64) -> u64 {
    (off as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt
}

pub fn fill(m: &Mem, salt: u64) {
    let mut off = 0;
    while off < m.len {
        m.poke64(off, pattern(off, salt));
        off += 512;
    }
}

/// First offset (stride 512) where `m` differs from `pattern(salt)`.
pub fn verify(m: &Mem, from: usize, to: usize, salt: u64) -> Option<usize> {
    let mut off = from;
    while off < to {
        if m.peek64(off) != pattern(off, salt) {
            return Some(off);
        }
        off += 512;
    }
    None
}

pub fn skip(why: crate::Msg) -> TestResult {
    Ok(Outcome::Skip(why))
}

/// The number after `key` (e.g. `MemTotal:`) in a `key value` text file.
pub fn field(hay: &[u8], key: &[u8]) -> Option<u64> {
    let i = hay.windows(key.len()).position(|w| w == key)?;
    crate::parse_u64(&hay[i + key.len()..])
}

/// The value of `key` (e.g. `b"THPeligible:"`) in the `/proc/self/smaps`
/// block of the mapping that starts at `addr`.
pub fn smaps_field(addr: usize, key: &[u8]) -> Option<u64> {
    let mut hdr = [0u8; 20];
    let hl = hex(addr, &mut hdr);
    let mut buf = [0u8; 32768];
    let n = read_file(b"/proc/self/smaps\0", &mut buf).ok()?;
    let s = &buf[..n];
    let mut i = 0;
    while i < s.len() {
        let line_end = s[i..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(s.len(), |p| i + p);
        if s[i..line_end].starts_with(&hdr[..hl]) && s.get(i + hl) == Some(&b'-') {
            return field(&s[i..], key);
        }
        i = line_end + 1;
    }
    None
}

pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
pub const PM_PFN: u64 = (1 << 55) - 1;
pub const KPF_ANON: u64 = 1 << 12;
pub const KPF_COMPOUND_HEAD: u64 = 1 << 15;
pub const KPF_COMPOUND_TAIL: u64 = 1 << 16;
pub const KPF_THP: u64 = 1 << 22;

/// `n` 8-byte entries of `fd` from entry `first` (pread64).
pub fn pread_entries(fd: i32, first: usize, out: &mut [u64]) -> Result<(), crate::Msg> {
    let len = out.len() * 8;
    let r = sys::syscall(
        sys::nr::PREAD64,
        &[fd as usize, out.as_mut_ptr() as usize, len, first * 8],
    );
    ensure!(
        r == len as isize,
        "pread64 of {len} bytes at entry {first}: {r}"
    );
    Ok(())
}

/// Checks the pagemap entries of the `pages` pages at `addr` (all present
/// and exclusive, frames consecutive within each `folio_pages`-aligned
/// run) and the kpageflags of their frames (compound head, tails, THP and
/// anonymous for large folios; none of the compound bits for 4K pages).
pub fn check_folios(
    pm: i32,
    kf: i32,
    addr: usize,
    pages: usize,
    folio_pages: usize,
) -> Result<(), crate::Msg> {
    let mut e = [0u64; 512];
    let e = &mut e[..pages];
    pread_entries(pm, addr / PAGE, e)?;
    for (i, &v) in e.iter().enumerate() {
        ensure!(
            v & (PM_PRESENT | PM_MMAP_EXCLUSIVE) == PM_PRESENT | PM_MMAP_EXCLUSIVE,
            "pagemap entry {i} of {addr:#x}: {v:#x}, expected present and exclusive"
        );
        let pfn = v & PM_PFN;
        ensure!(pfn != 0, "pagemap entry {i}: no frame number (not root?)");
        let mut f = [0u64; 1];
        pread_entries(kf, pfn as usize, &mut f)?;
        let f = f[0];
        let off = i % folio_pages;
        if off > 0 {
            ensure!(
                pfn == (e[i - off] & PM_PFN) + off as u64,
                "page {i}: frame {pfn:#x} does not follow its folio's head"
            );
        }
        if folio_pages == 1 {
            ensure!(
                f & (KPF_COMPOUND_HEAD | KPF_COMPOUND_TAIL | KPF_THP) == 0,
                "4K page {i}: kpageflags {f:#x} has compound/THP bits"
            );
        } else {
            let want = KPF_THP
                | KPF_ANON
                | if off == 0 {
                    KPF_COMPOUND_HEAD
                } else {
                    KPF_COMPOUND_TAIL
                };
            ensure!(
                f & want == want,
                "page {i} (folio offset {off}): kpageflags {f:#x} lacks {want:#x}"
            );
        }
    }
    Ok(())
}

pub fn hex(mut v: usize, out: &mut [u8; 20]) -> usize {
    let mut tmp = [0u8; 20];
    let mut n = 0;
    loop {
        tmp[n] = b"0123456789abcdef"[v & 15];
        n += 1;
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = tmp[n - 1 - i];
    }
    n
}

/// Checks that the freshly faulted `m` is mapped with `kb` KiB folios:
/// the per-size `anon_fault_alloc` counter (read as `before` ahead of the
/// faults; it must be readable) went up by at least one per folio, and,
/// where `/proc/kpageflags` can be read (root; always on this kernel),
/// every page is present and exclusive in `/proc/self/pagemap`, the
/// frames are consecutive within each folio and flagged compound head or
/// tail + THP ([`check_folios`]).  The counter alone cannot say *which*
/// memory got the folios (other processes may fault too on Linux), so on
/// this kernel a missing kpageflags is a failure.
pub fn expect_folios(m: &Mem, kb: usize, before: Option<u64>) -> Result<(), crate::Msg> {
    let after = stat(kb, "anon_fault_alloc");
    let want = (m.len / (kb << 10)) as u64;
    let (Some(b), Some(a)) = (before, after) else {
        fail!("hugepages-{kb}kB/stats/anon_fault_alloc unreadable: {before:?} -> {after:?}");
    };
    ensure!(
        a - b >= want,
        "hugepages-{kb}kB anon_fault_alloc went up by {}, expected >= {want}: not {kb}K folios",
        a - b
    );
    let kf = sys::open(b"/proc/kpageflags\0", sys::O_RDONLY);
    if kf < 0 {
        ensure!(!on_mthp(), "open /proc/kpageflags: errno {}", -kf);
        return Ok(());
    }
    let pm = sys::open(b"/proc/self/pagemap\0", sys::O_RDONLY);
    let r = if pm < 0 {
        Err(crate::Msg::new(format_args!(
            "open /proc/self/pagemap: errno {}",
            -pm
        )))
    } else {
        let mut r = Ok(());
        let mut off = 0;
        while off < m.len && r.is_ok() {
            let pages = ((m.len - off) / PAGE).min(512);
            r = check_folios(pm as i32, kf as i32, m.addr + off, pages, (kb << 10) / PAGE);
            off += pages * PAGE;
        }
        sys::close(pm as i32);
        r
    };
    sys::close(kf as i32);
    r
}

pub const PM_SWAP: u64 = 1 << 62;

/// How the pages of a range are mapped, from pagemap and kpageflags.
#[derive(Clone, Copy, Default)]
pub struct Layout {
    /// 4 KiB pages in the range.
    pub pages: usize,
    /// Pages present in memory.
    pub present: usize,
    /// Pages in swap (pagemap bit 62).
    pub swapped: usize,
    /// Pages inside a folio of exactly the asked size: the folio-aligned
    /// run is all present, its frames are consecutive from an aligned head
    /// flagged compound head, the rest compound tails, and the frame after
    /// the run is no tail (so the folio is not larger).  For 4 KiB: pages
    /// with neither compound bit.
    pub in_order: usize,
}

impl Layout {
    /// Every page present and in a folio of the asked size.
    pub fn all_in_order(&self) -> bool {
        self.in_order == self.pages
    }
}

/// [`Layout`] of `len` bytes at `addr` (folio-aligned) for `kb` KiB
/// folios.  Unlike [`check_folios`] it neither requires exclusive mappings
/// (shared memory, fork) nor anonymous folios, and counts instead of
/// failing, so a caller can tell "split" from "kept".
pub fn layout(addr: usize, len: usize, kb: usize) -> Result<Layout, crate::Msg> {
    let kf = sys::open(b"/proc/kpageflags\0", sys::O_RDONLY);
    ensure!(kf >= 0, "no /proc/kpageflags (errno {})", -kf);
    let pm = sys::open(b"/proc/self/pagemap\0", sys::O_RDONLY);
    if pm < 0 {
        sys::close(kf as i32);
        fail!("no /proc/self/pagemap (errno {})", -pm);
    }
    let r = layout_with(pm as i32, kf as i32, addr, len, kb);
    sys::close(pm as i32);
    sys::close(kf as i32);
    r
}

fn layout_with(pm: i32, kf: i32, addr: usize, len: usize, kb: usize) -> Result<Layout, crate::Msg> {
    let fp = (kb << 10) / PAGE;
    let flags = |pfn: u64| -> Result<u64, crate::Msg> {
        let mut f = [0u64; 1];
        pread_entries(kf, pfn as usize, &mut f)?;
        Ok(f[0])
    };
    let mut l = Layout {
        pages: len / PAGE,
        ..Layout::default()
    };
    let mut e = [0u64; 512];
    let mut first = 0;
    while first < l.pages {
        // Whole folios per read: 512 is a multiple of every folio size.
        let n = (l.pages - first).min(512);
        let e = &mut e[..n];
        pread_entries(pm, addr / PAGE + first, e)?;
        l.present += e.iter().filter(|&&v| v & PM_PRESENT != 0).count();
        l.swapped += e.iter().filter(|&&v| v & PM_SWAP != 0).count();
        for run in e.chunks(fp) {
            if run.len() < fp || run.iter().any(|&v| v & PM_PRESENT == 0) {
                continue;
            }
            let head = run[0] & PM_PFN;
            ensure!(head != 0, "pagemap shows no frame numbers (not root?)");
            if fp == 1 {
                if flags(head)? & (KPF_COMPOUND_HEAD | KPF_COMPOUND_TAIL) == 0 {
                    l.in_order += 1;
                }
                continue;
            }
            let mut ok = head.is_multiple_of(fp as u64) && flags(head)? & KPF_COMPOUND_HEAD != 0;
            for (i, &v) in run.iter().enumerate().skip(1) {
                ok = ok
                    && v & PM_PFN == head + i as u64
                    && flags(head + i as u64)? & KPF_COMPOUND_TAIL != 0;
            }
            // The frame after the folio; past the end of kpageflags (the
            // folio ends memory) it is no tail either.
            let mut next = [0u64; 1];
            let r = sys::syscall(
                sys::nr::PREAD64,
                &[
                    kf as usize,
                    next.as_mut_ptr() as usize,
                    8,
                    (head as usize + fp) * 8,
                ],
            );
            ok = ok && (r == 0 || (r == 8 && next[0] & KPF_COMPOUND_TAIL == 0));
            if ok {
                l.in_order += fp;
            }
        }
        first += n;
    }
    Ok(l)
}
