//! The THP knob and counter registry, keyed by Linux's sysfs paths relative
//! to `/sys/kernel/mm/transparent_hugepage/`, so that a file layer can
//! expose it unchanged and user programs written for Linux work as is.
//!
//! Formats and errors follow Linux's show/store handlers:
//! * multiple-choice files print every word with the selected one in
//!   brackets and a trailing newline (`always [madvise] never\n`; per-size
//!   files `always inherit [madvise] never\n`, defrag
//!   `always defer defer+madvise [madvise] never\n`);
//! * a write must be exactly one of the words, optionally followed by a
//!   single newline (Linux's `sysfs_streq`, so `echo always >` works);
//! * numeric files print `%lu\n`; writes parse like `kstrtoul(…, 10)`:
//!   optional `+`, decimal digits, optional single trailing newline;
//! * writing an empty buffer is a successful no-op (sysfs never calls the
//!   store handler for a zero-length write);
//! * a read-only file (`hpage_pmd_size`, counters) refuses writes with
//!   `EACCES`: on Linux the `open(O_WRONLY)` itself fails with `EACCES`,
//!   even for root, because kernfs checks for a missing write handler;
//! * unknown paths give `ENOENT`; reading or writing a directory `EISDIR`;
//!   listing a file `ENOTDIR`.
//!
//! No lock here: every knob is an atomic in
//! [`ThpConfig`](crate::thp::ThpConfig) (see its module docs), and a store
//! is a single atomic update.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::abi::errno::Errno;
use crate::addr::PMD_SIZE;
use crate::shmem::policy::{ShmemHuge, ShmemOrderMode};
use crate::thp::Thp;
use crate::thp::policy::{
    DefragMode, GlobalMode, HPAGE_PMD_NR, OrderMode, THP_MAX_ORDER, THP_MIN_ORDER, order_size,
    order_size_kb,
};
use crate::thp::stats::MthpStat;

/// The absolute sysfs directory these paths are relative to.
pub const SYSFS_ROOT: &str = "/sys/kernel/mm/transparent_hugepage";

/// One khugepaged tunable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KhugepagedKnob {
    /// `khugepaged/defrag` (0 or 1).
    Defrag,
    /// `khugepaged/pages_to_scan` (≥ 1).
    PagesToScan,
    /// `khugepaged/scan_sleep_millisecs`.
    ScanSleepMillisecs,
    /// `khugepaged/alloc_sleep_millisecs`.
    AllocSleepMillisecs,
    /// `khugepaged/max_ptes_none` (0..=511).
    MaxPtesNone,
    /// `khugepaged/max_ptes_swap` (0..=511).
    MaxPtesSwap,
    /// `khugepaged/max_ptes_shared` (0..=511).
    MaxPtesShared,
}

impl KhugepagedKnob {
    /// Every knob, in listing order.
    pub const ALL: [KhugepagedKnob; 7] = [
        KhugepagedKnob::Defrag,
        KhugepagedKnob::PagesToScan,
        KhugepagedKnob::ScanSleepMillisecs,
        KhugepagedKnob::AllocSleepMillisecs,
        KhugepagedKnob::MaxPtesNone,
        KhugepagedKnob::MaxPtesSwap,
        KhugepagedKnob::MaxPtesShared,
    ];

    /// The file name under `khugepaged/`.
    pub const fn name(self) -> &'static str {
        match self {
            KhugepagedKnob::Defrag => "defrag",
            KhugepagedKnob::PagesToScan => "pages_to_scan",
            KhugepagedKnob::ScanSleepMillisecs => "scan_sleep_millisecs",
            KhugepagedKnob::AllocSleepMillisecs => "alloc_sleep_millisecs",
            KhugepagedKnob::MaxPtesNone => "max_ptes_none",
            KhugepagedKnob::MaxPtesSwap => "max_ptes_swap",
            KhugepagedKnob::MaxPtesShared => "max_ptes_shared",
        }
    }

    /// Look a knob up by file name.
    pub fn from_name(n: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == n)
    }
}

/// A file (or directory) in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    RootDir,
    KhugepagedDir,
    OrderDir(u32),
    StatsDir(u32),
    Enabled,
    Defrag,
    UseZeroPage,
    ShrinkUnderused,
    LargeCow,
    HpagePmdSize,
    Khugepaged(KhugepagedKnob),
    PagesCollapsed,
    FullScans,
    OrderEnabled(u32),
    /// `hugepages-<size>kB/reserve` (ours): reservation mode, 0 or 1.
    OrderReserve(u32),
    OrderStat(u32, MthpStat),
    /// `shmem_enabled` (top level).
    ShmemEnabled,
    /// `hugepages-<size>kB/shmem_enabled`.
    OrderShmemEnabled(u32),
}

impl Node {
    fn is_dir(self) -> bool {
        matches!(
            self,
            Node::RootDir | Node::KhugepagedDir | Node::OrderDir(_) | Node::StatsDir(_)
        )
    }

    fn writable(self) -> bool {
        matches!(
            self,
            Node::Enabled
                | Node::Defrag
                | Node::UseZeroPage
                | Node::ShrinkUnderused
                | Node::LargeCow
                | Node::Khugepaged(_)
                | Node::OrderEnabled(_)
                | Node::OrderReserve(_)
                | Node::ShmemEnabled
                | Node::OrderShmemEnabled(_)
        )
    }
}

/// What `stat` reports about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// A directory (list it) rather than a file (read/write it).
    pub is_dir: bool,
    /// Linux's mode bits: 0755 for directories, 0644 for knobs, 0444 for
    /// read-only files.
    pub mode: u32,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name.
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// The order of a `hugepages-<n>kB` directory name.
fn order_of_dir(name: &str) -> Option<u32> {
    let kb = name.strip_prefix("hugepages-")?.strip_suffix("kB")?;
    // Reject leading zeros, signs and the like: only the canonical name.
    let n: u64 = kb.parse().ok()?;
    if format!("{n}") != kb {
        return None;
    }
    if n == 8 {
        // Linux 6.12's order-1 directory: shmem only.
        return Some(SHMEM_ONLY_ORDER);
    }
    let order = crate::thp::policy::order_from_size(n.checked_mul(1024)?)?;
    Some(order)
}

/// The order whose `hugepages-8kB` directory holds only `shmem_enabled`
/// and the shmem, swap-out and split counters (no `enabled`: anonymous
/// memory never uses order 1), as Linux 6.12.
const SHMEM_ONLY_ORDER: u32 = 1;

/// The counters of the order-1 directory (Linux 6.12's file and "any"
/// stats groups).
const SHMEM_ONLY_STATS: [MthpStat; 7] = [
    MthpStat::ShmemAlloc,
    MthpStat::ShmemFallback,
    MthpStat::ShmemFallbackCharge,
    MthpStat::Swpout,
    MthpStat::SwpoutFallback,
    MthpStat::Split,
    MthpStat::SplitFailed,
];

fn order_dir_name(order: u32) -> String {
    format!("hugepages-{}kB", order_size_kb(order))
}

/// Resolve a path.  Accepts relative paths (`hugepages-64kB/enabled`) and
/// absolute ones under [`SYSFS_ROOT`]; repeated or trailing slashes and `.`
/// components are ignored, `..` is not supported (ENOENT).
fn lookup(path: &str) -> Result<Node, Errno> {
    let rel = match path.strip_prefix(SYSFS_ROOT) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    };
    let mut node = Node::RootDir;
    for comp in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
        node = match node {
            Node::RootDir => match comp {
                "enabled" => Node::Enabled,
                "defrag" => Node::Defrag,
                "use_zero_page" => Node::UseZeroPage,
                "shrink_underused" => Node::ShrinkUnderused,
                "large_cow" => Node::LargeCow,
                "hpage_pmd_size" => Node::HpagePmdSize,
                "shmem_enabled" => Node::ShmemEnabled,
                "khugepaged" => Node::KhugepagedDir,
                _ => Node::OrderDir(order_of_dir(comp).ok_or(Errno::ENOENT)?),
            },
            Node::KhugepagedDir => match comp {
                "pages_collapsed" => Node::PagesCollapsed,
                "full_scans" => Node::FullScans,
                _ => Node::Khugepaged(KhugepagedKnob::from_name(comp).ok_or(Errno::ENOENT)?),
            },
            Node::OrderDir(o) => match comp {
                "enabled" if o != SHMEM_ONLY_ORDER => Node::OrderEnabled(o),
                "reserve" if o != SHMEM_ONLY_ORDER => Node::OrderReserve(o),
                "shmem_enabled" => Node::OrderShmemEnabled(o),
                "stats" => Node::StatsDir(o),
                _ => return Err(Errno::ENOENT),
            },
            Node::StatsDir(o) => {
                let s = MthpStat::from_name(comp).ok_or(Errno::ENOENT)?;
                if o == SHMEM_ONLY_ORDER && !SHMEM_ONLY_STATS.contains(&s) {
                    return Err(Errno::ENOENT);
                }
                Node::OrderStat(o, s)
            }
            // A component below a file.
            _ => return Err(Errno::ENOTDIR),
        };
    }
    Ok(node)
}

/// Linux's `sysfs_streq`: equal, except that either side may carry one
/// trailing newline.
fn sysfs_streq(buf: &str, word: &str) -> bool {
    buf == word || buf.strip_suffix('\n') == Some(word)
}

/// The first word of `words` that `buf` names (per `sysfs_streq`).
fn pick<'a>(buf: &str, words: &[&'a str]) -> Option<&'a str> {
    words.iter().copied().find(|w| sysfs_streq(buf, w))
}

/// Linux's `kstrtoull(buf, 10, …)`: optional `+`, at least one decimal
/// digit, optional single trailing newline, nothing else.  `EINVAL` on
/// syntax, `ERANGE` on overflow.
fn kstrtoul(buf: &str) -> Result<u64, Errno> {
    let s = buf.strip_prefix('+').unwrap_or(buf);
    let s = s.strip_suffix('\n').unwrap_or(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Errno::EINVAL);
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(Errno::ERANGE)?;
    }
    Ok(v)
}

/// Linux's `kstrtouint(buf, 10, …)`.
fn kstrtouint(buf: &str) -> Result<u32, Errno> {
    u32::try_from(kstrtoul(buf)?).map_err(|_| Errno::ERANGE)
}

/// Linux's `kstrtobool`: only the first one or two characters matter —
/// `y Y t T 1 e E` / `n N f F 0 d D`, or `on` / `off` (any case).
fn kstrtobool(buf: &str) -> Result<bool, Errno> {
    let b = buf.as_bytes();
    match b.first() {
        Some(b'y' | b'Y' | b't' | b'T' | b'1' | b'e' | b'E') => Ok(true),
        Some(b'n' | b'N' | b'f' | b'F' | b'0' | b'd' | b'D') => Ok(false),
        Some(b'o' | b'O') => match b.get(1) {
            Some(b'n' | b'N') => Ok(true),
            Some(b'f' | b'F') => Ok(false),
            _ => Err(Errno::EINVAL),
        },
        _ => Err(Errno::EINVAL),
    }
}

/// Print `words` with `selected` in brackets, newline-terminated.
fn choice_line(words: &[&str], selected: &str) -> String {
    let mut s = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        if *w == selected {
            s.push('[');
            s.push_str(w);
            s.push(']');
        } else {
            s.push_str(w);
        }
    }
    s.push('\n');
    s
}

impl Thp {
    /// Kind and mode of a path.
    pub fn stat(&self, path: &str) -> Result<NodeInfo, Errno> {
        let n = lookup(path)?;
        let mode = if n.is_dir() {
            0o755
        } else if n.writable() {
            0o644
        } else {
            0o444
        };
        Ok(NodeInfo {
            is_dir: n.is_dir(),
            mode,
        })
    }

    /// List a directory (entries sorted by name, like `ls`).
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>, Errno> {
        let file = |n: &str| DirEntry {
            name: n.into(),
            is_dir: false,
        };
        let dir = |n: String| DirEntry {
            name: n,
            is_dir: true,
        };
        let mut v: Vec<DirEntry> = match lookup(path)? {
            Node::RootDir => {
                let mut v: Vec<DirEntry> = [
                    "enabled",
                    "defrag",
                    "use_zero_page",
                    "shrink_underused",
                    "large_cow",
                    "hpage_pmd_size",
                    "shmem_enabled",
                ]
                .into_iter()
                .map(file)
                .collect();
                v.push(dir("khugepaged".into()));
                v.push(dir(order_dir_name(SHMEM_ONLY_ORDER)));
                v.extend((THP_MIN_ORDER..=THP_MAX_ORDER).map(|o| dir(order_dir_name(o))));
                v
            }
            Node::KhugepagedDir => KhugepagedKnob::ALL
                .iter()
                .map(|k| k.name())
                .chain(["pages_collapsed", "full_scans"])
                .map(file)
                .collect(),
            Node::OrderDir(SHMEM_ONLY_ORDER) => {
                alloc::vec![file("shmem_enabled"), dir("stats".into())]
            }
            Node::OrderDir(_) => {
                alloc::vec![
                    file("enabled"),
                    file("reserve"),
                    file("shmem_enabled"),
                    dir("stats".into()),
                ]
            }
            Node::StatsDir(SHMEM_ONLY_ORDER) => {
                SHMEM_ONLY_STATS.iter().map(|s| file(s.name())).collect()
            }
            Node::StatsDir(_) => MthpStat::ALL.iter().map(|s| file(s.name())).collect(),
            _ => return Err(Errno::ENOTDIR),
        };
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Every file path in the registry (relative), for tests and tools.
    pub fn all_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = alloc::vec![String::new()];
        while let Some(d) = stack.pop() {
            for e in self.list(&d).unwrap_or_default() {
                let p = if d.is_empty() {
                    e.name.clone()
                } else {
                    format!("{d}/{}", e.name)
                };
                if e.is_dir {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// Read a file in Linux's format.
    pub fn read(&self, path: &str) -> Result<String, Errno> {
        let c = &self.config;
        let k = &c.khugepaged;
        let num = |v: u64| format!("{v}\n");
        Ok(match lookup(path)? {
            n if n.is_dir() => return Err(Errno::EISDIR),
            Node::Enabled => choice_line(GlobalMode::WORDS, c.global_mode().word()),
            Node::Defrag => choice_line(DefragMode::WORDS, c.defrag().word()),
            Node::UseZeroPage => num(u64::from(c.use_zero_page())),
            Node::ShrinkUnderused => num(u64::from(c.shrink_underused())),
            Node::LargeCow => num(u64::from(c.large_cow())),
            Node::HpagePmdSize => num(PMD_SIZE),
            Node::Khugepaged(knob) => num(match knob {
                KhugepagedKnob::Defrag => u64::from(k.defrag.load(Ordering::Relaxed)),
                KhugepagedKnob::PagesToScan => k.pages_to_scan.load(Ordering::Relaxed).into(),
                KhugepagedKnob::ScanSleepMillisecs => {
                    k.scan_sleep_millisecs.load(Ordering::Relaxed).into()
                }
                KhugepagedKnob::AllocSleepMillisecs => {
                    k.alloc_sleep_millisecs.load(Ordering::Relaxed).into()
                }
                KhugepagedKnob::MaxPtesNone => k.max_ptes_none.load(Ordering::Relaxed).into(),
                KhugepagedKnob::MaxPtesSwap => k.max_ptes_swap.load(Ordering::Relaxed).into(),
                KhugepagedKnob::MaxPtesShared => k.max_ptes_shared.load(Ordering::Relaxed).into(),
            }),
            Node::PagesCollapsed => num(self.stats.pages_collapsed()),
            Node::FullScans => num(self.stats.full_scans()),
            Node::OrderEnabled(o) => choice_line(OrderMode::WORDS, c.order_mode(o).word()),
            Node::OrderReserve(o) => num(u64::from(c.reserve_orders() >> o & 1)),
            Node::OrderStat(o, s) => num(self.stats.get(o, s)),
            Node::ShmemEnabled => choice_line(ShmemHuge::WORDS, c.shmem.huge().word()),
            Node::OrderShmemEnabled(o) => {
                choice_line(ShmemOrderMode::WORDS, c.shmem.order_mode(o).word())
            }
            _ => return Err(Errno::ENOENT),
        })
    }

    /// Write a file with Linux's parsing and errors.  `value` is what the
    /// user wrote, newline included (`echo never > enabled` writes
    /// `"never\n"`).
    pub fn write(&self, path: &str, value: &str) -> Result<(), Errno> {
        let node = lookup(path)?;
        if node.is_dir() {
            return Err(Errno::EISDIR);
        }
        if !node.writable() {
            return Err(Errno::EACCES);
        }
        if value.is_empty() {
            return Ok(());
        }
        let c = &self.config;
        match node {
            Node::Enabled => {
                let w = pick(value, GlobalMode::WORDS).ok_or(Errno::EINVAL)?;
                c.set_global_mode(GlobalMode::from_word(w).ok_or(Errno::EINVAL)?);
            }
            Node::OrderEnabled(o) => {
                let w = pick(value, OrderMode::WORDS).ok_or(Errno::EINVAL)?;
                c.set_order_mode(o, OrderMode::from_word(w).ok_or(Errno::EINVAL)?);
            }
            Node::Defrag => {
                let w = pick(value, DefragMode::WORDS).ok_or(Errno::EINVAL)?;
                c.set_defrag(DefragMode::from_word(w).ok_or(Errno::EINVAL)?);
            }
            // Linux's single_hugepage_flag_store: kstrtoul errors pass
            // through (so overflow is ERANGE), values above 1 are EINVAL.
            Node::UseZeroPage => c.set_use_zero_page(parse_flag(value)?),
            // shrink_underused uses kstrtobool.
            Node::ShrinkUnderused => c.set_shrink_underused(kstrtobool(value)?),
            // large_cow (ours) reads like use_zero_page: 0 or 1.
            Node::LargeCow => c.set_large_cow(parse_flag(value)?),
            // reserve (ours) reads like large_cow: 0 or 1.
            Node::OrderReserve(o) => {
                c.set_reserve(o, parse_flag(value)?);
            }
            Node::Khugepaged(knob) => self.write_khugepaged(knob, value)?,
            // Linux's shmem_enabled_store / thpsize_shmem_enabled_store.
            Node::ShmemEnabled => {
                let w = pick(value, ShmemHuge::WORDS).ok_or(Errno::EINVAL)?;
                c.shmem
                    .set_huge(ShmemHuge::from_word(w).ok_or(Errno::EINVAL)?)?;
            }
            Node::OrderShmemEnabled(o) => {
                let w = pick(value, ShmemOrderMode::WORDS).ok_or(Errno::EINVAL)?;
                c.shmem
                    .set_order_mode(o, ShmemOrderMode::from_word(w).ok_or(Errno::EINVAL)?)?;
            }
            _ => return Err(Errno::EACCES),
        }
        Ok(())
    }

    /// Store one khugepaged knob.  Every parse error is `EINVAL` (Linux's
    /// khugepaged store handlers map any `kstrto*` failure to EINVAL),
    /// except `defrag`, which shares the 0/1 flag parser.
    pub fn write_khugepaged(&self, knob: KhugepagedKnob, value: &str) -> Result<(), Errno> {
        let k = &self.config.khugepaged;
        let max_ptes = |v: &str| -> Result<u32, Errno> {
            match kstrtoul(v) {
                Ok(n) if n <= u64::from(HPAGE_PMD_NR - 1) => Ok(n as u32),
                _ => Err(Errno::EINVAL),
            }
        };
        let uint = |v: &str| kstrtouint(v).map_err(|_| Errno::EINVAL);
        match knob {
            KhugepagedKnob::Defrag => k.defrag.store(parse_flag(value)?, Ordering::Relaxed),
            KhugepagedKnob::PagesToScan => {
                let n = uint(value)?;
                if n == 0 {
                    return Err(Errno::EINVAL);
                }
                k.pages_to_scan.store(n, Ordering::Relaxed);
            }
            KhugepagedKnob::ScanSleepMillisecs => k
                .scan_sleep_millisecs
                .store(uint(value)?, Ordering::Relaxed),
            KhugepagedKnob::AllocSleepMillisecs => k
                .alloc_sleep_millisecs
                .store(uint(value)?, Ordering::Relaxed),
            KhugepagedKnob::MaxPtesNone => {
                k.max_ptes_none.store(max_ptes(value)?, Ordering::Relaxed)
            }
            KhugepagedKnob::MaxPtesSwap => {
                k.max_ptes_swap.store(max_ptes(value)?, Ordering::Relaxed)
            }
            KhugepagedKnob::MaxPtesShared => {
                k.max_ptes_shared.store(max_ptes(value)?, Ordering::Relaxed)
            }
        }
        // Wake khugepaged so a new sleep time or limit takes effect now.
        self.config.bump();
        Ok(())
    }

    /// Size in bytes of the folios a `hugepages-<n>kB` directory controls.
    pub fn order_dir_size(order: u32) -> u64 {
        order_size(order)
    }
}

/// Linux's `single_hugepage_flag_store` value rule: a `kstrtoul` number that
/// must be 0 or 1.
fn parse_flag(value: &str) -> Result<bool, Errno> {
    match kstrtoul(value)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Errno::EINVAL),
    }
}

#[cfg(test)]
mod tests;
