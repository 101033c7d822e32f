//! THP boot parameters.
//!
//! Linux's parameters, with Linux's parsing:
//! * `transparent_hugepage=always|madvise|never` sets the global mode only;
//! * `thp_anon=<size>[KMG][,<size>|<a>-<b>]:<state>;…` sets per-size modes.
//!   The first `thp_anon=` starts from "every size `never`" (PMD included);
//!   later ones on the same command line add to the result.  A value that
//!   fails to parse changes nothing (Linux logs and ignores it).
//!
//! * `transparent_hugepage_shmem=<shmem_enabled word>` and
//!   `thp_shmem=<sizes>:<always|inherit|within_size|advise|never>;…` are
//!   Linux 6.13's (6.12, the reference otherwise, lacks them); `thp_shmem=`
//!   parses as `thp_anon=` and its first use starts from every size
//!   `never`.
//!
//! This kernel's additions (Linux has no boot parameters for these): every
//! khugepaged sysfs knob as `khugepaged.<file>=<value>`, e.g.
//! `khugepaged.max_ptes_none=0` or `khugepaged.scan_sleep_millisecs=100`,
//! with exactly the validation of a write to
//! `/sys/kernel/mm/transparent_hugepage/khugepaged/<file>`.
//!
//! Errors are returned as values for the caller to log; nothing here
//! panics on any input.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::abi::errno::Errno;
use crate::abi::thp_sysfs::KhugepagedKnob;
use crate::addr::PAGE_SIZE;
use crate::shmem::policy::{ShmemHuge, ShmemOrderMode};
use crate::thp::Thp;
use crate::thp::policy::{GlobalMode, OrderMode, THP_MAX_ORDER, THP_MIN_ORDER};

/// Why a THP boot parameter was ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootParamError {
    /// `transparent_hugepage=` with a value other than always/madvise/never.
    TransparentHugepage(String),
    /// `thp_anon=` value of a page or more (Linux's limit).
    ThpAnonTooLong,
    /// `huge_zero_wp=` with a value other than alloc/split.
    HugeZeroWp(String),
    /// A `thp_anon=` group without `:<state>`.
    ThpAnonMissingState(String),
    /// A size that is not a power of two or not an mTHP size (16K..2M).
    ThpAnonBadSize(String),
    /// A range whose start is above its end.
    ThpAnonBadRange(String),
    /// A state other than always/inherit/madvise/never.
    ThpAnonBadState(String),
    /// `khugepaged.<name>=` for a name that is not a khugepaged knob.
    UnknownKhugepagedKnob(String),
    /// A khugepaged knob value the sysfs file would refuse.
    KhugepagedValue {
        /// The knob's file name.
        knob: &'static str,
        /// The value given.
        value: String,
        /// What a sysfs write would have returned.
        errno: Errno,
    },
    /// A known parameter given without `=value`.
    MissingValue(String),
    /// `transparent_hugepage_shmem=` with a value `shmem_enabled` refuses.
    TransparentHugepageShmem(String),
    /// A `thp_shmem=` value that does not parse (what `thp_anon=` would
    /// say about it).
    ThpShmem(String),
}

impl fmt::Display for BootParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TransparentHugepage(v) => {
                write!(f, "transparent_hugepage={v}: cannot parse, ignored")
            }
            Self::ThpAnonTooLong => write!(f, "thp_anon=: value too long, ignored"),
            Self::TransparentHugepageShmem(v) => {
                write!(f, "transparent_hugepage_shmem={v}: invalid value, ignored")
            }
            Self::ThpShmem(why) => write!(f, "thp_shmem=: {why}"),
            Self::HugeZeroWp(v) => write!(f, "huge_zero_wp={v}: not alloc or split, ignored"),
            Self::ThpAnonMissingState(t) => write!(f, "thp_anon=: no state in {t:?}, ignored"),
            Self::ThpAnonBadSize(s) => write!(f, "thp_anon=: invalid size {s:?}, ignored"),
            Self::ThpAnonBadRange(s) => write!(f, "thp_anon=: invalid range {s:?}, ignored"),
            Self::ThpAnonBadState(s) => write!(f, "thp_anon=: invalid state {s:?}, ignored"),
            Self::UnknownKhugepagedKnob(n) => write!(f, "khugepaged.{n}: unknown knob, ignored"),
            Self::KhugepagedValue { knob, value, errno } => {
                write!(f, "khugepaged.{knob}={value}: {errno}, ignored")
            }
            Self::MissingValue(k) => write!(f, "{k}: missing value, ignored"),
        }
    }
}

/// Linux's `memparse`: a number (decimal, `0x` hex or leading-`0` octal)
/// optionally followed by one of `K M G T P E` (any case), each a further
/// ×1024.  Anything after that is ignored, as in Linux.  Overflow wraps.
pub fn memparse(s: &str) -> u64 {
    let b = s.as_bytes();
    let (radix, mut i) = if b.first() == Some(&b'0') {
        if matches!(b.get(1), Some(b'x' | b'X')) && b.get(2).is_some_and(u8::is_ascii_hexdigit) {
            (16, 2)
        } else {
            (8, 0)
        }
    } else {
        (10, 0)
    };
    let mut v: u64 = 0;
    while let Some(d) = b.get(i).and_then(|&c| (c as char).to_digit(radix)) {
        v = v.wrapping_mul(u64::from(radix)).wrapping_add(u64::from(d));
        i += 1;
    }
    let shift = match b.get(i).map(u8::to_ascii_uppercase) {
        Some(b'K') => 10,
        Some(b'M') => 20,
        Some(b'G') => 30,
        Some(b'T') => 40,
        Some(b'P') => 50,
        Some(b'E') => 60,
        _ => 0,
    };
    v.wrapping_shl(shift)
}

/// Order named by a `thp_anon` size, or the error Linux reports.
fn order_from_str(size: &str, min: u32) -> Result<u32, BootParamError> {
    let bytes = memparse(size);
    if !bytes.is_power_of_two() {
        return Err(BootParamError::ThpAnonBadSize(size.into()));
    }
    // Linux's get_order: sizes below a page are order 0, never valid here.
    let order = if bytes <= PAGE_SIZE {
        0
    } else {
        bytes.trailing_zeros() - PAGE_SIZE.trailing_zeros()
    };
    if (min..=THP_MAX_ORDER).contains(&order) {
        Ok(order)
    } else {
        Err(BootParamError::ThpAnonBadSize(size.into()))
    }
}

/// Apply a `thp_anon=` value to `base` (indexed by order), returning the new
/// per-size modes, or the first error (in which case nothing applies).
pub fn parse_thp_anon(
    base: [OrderMode; 10],
    value: &str,
) -> Result<[OrderMode; 10], BootParamError> {
    parse_sizes(base, value, THP_MIN_ORDER, OrderMode::from_word)
}

/// `thp_anon=`'s grammar with the states `state` parses (shared with
/// `thp_shmem=`).
fn parse_sizes<M: Copy>(
    base: [M; 10],
    value: &str,
    min_order: u32,
    state_of: impl Fn(&str) -> Option<M>,
) -> Result<[M; 10], BootParamError> {
    if value.len() + 1 > PAGE_SIZE as usize {
        return Err(BootParamError::ThpAnonTooLong);
    }
    let mut modes = base;
    for group in value.split(';') {
        let Some((ranges, state)) = group.split_once(':') else {
            return Err(BootParamError::ThpAnonMissingState(group.into()));
        };
        for sub in ranges.split(',') {
            let (start, end) = match sub.split_once('-') {
                Some((a, b)) => (order_from_str(a, min_order)?, order_from_str(b, min_order)?),
                None => {
                    let o = order_from_str(sub, min_order)?;
                    (o, o)
                }
            };
            if start > end {
                return Err(BootParamError::ThpAnonBadRange(sub.into()));
            }
            let mode =
                state_of(state).ok_or_else(|| BootParamError::ThpAnonBadState(state.into()))?;
            for o in start..=end {
                modes[o as usize] = mode;
            }
        }
    }
    Ok(modes)
}

/// Split a kernel command line into `key[=value]` words the way Linux's
/// `next_arg` does: whitespace separates, double quotes group (and are
/// removed), and a bare `--` ends the kernel's part.
pub fn split_cmdline(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut in_quote = false;
    let mut words = Vec::new();
    for ch in cmdline.chars() {
        if ch == '"' {
            in_quote = !in_quote;
            in_word = true;
        } else if ch.is_ascii_whitespace() && !in_quote {
            if in_word {
                words.push(core::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            cur.push(ch);
            in_word = true;
        }
    }
    if in_word {
        words.push(cur);
    }
    for w in words {
        if w == "--" {
            break;
        }
        match w.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
            None => out.push((w, None)),
        }
    }
    out
}

impl Thp {
    /// Apply one boot parameter.  `Ok(true)` if it was a THP parameter and
    /// took effect, `Ok(false)` if `key` is not ours, `Err` if it is ours but
    /// was ignored.
    pub fn apply_boot_param(&self, key: &str, value: Option<&str>) -> Result<bool, BootParamError> {
        let is_ours = key == "transparent_hugepage"
            || key == "transparent_hugepage_shmem"
            || key == "thp_shmem"
            || key == "thp_anon"
            || key == "huge_zero_wp"
            || key.starts_with("khugepaged.");
        if !is_ours {
            return Ok(false);
        }
        let Some(value) = value else {
            return Err(BootParamError::MissingValue(key.into()));
        };
        if key == "transparent_hugepage" {
            let m = GlobalMode::from_word(value)
                .ok_or_else(|| BootParamError::TransparentHugepage(value.into()))?;
            self.config.set_global_mode(m);
        } else if key == "transparent_hugepage_shmem" {
            // Linux 6.13's parameter (the top-level `shmem_enabled`).
            let m = ShmemHuge::from_word(value)
                .ok_or_else(|| BootParamError::TransparentHugepageShmem(value.into()))?;
            self.config
                .shmem
                .set_huge(m)
                .map_err(|_| BootParamError::TransparentHugepageShmem(value.into()))?;
        } else if key == "thp_shmem" {
            // Linux 6.13's parameter: `thp_anon=`'s grammar with the
            // per-size `shmem_enabled` states; the first one starts from
            // every size `never` (PMD included).
            let sh = &self.config.shmem;
            let base = if sh.boot_configured() {
                sh.order_modes()
            } else {
                [ShmemOrderMode::Never; 10]
            };
            let modes = parse_sizes(
                base,
                value,
                crate::shmem::policy::SHMEM_MIN_ORDER,
                ShmemOrderMode::from_word,
            )
            .map_err(|e| BootParamError::ThpShmem(e.to_string().replace("thp_anon=: ", "")))?;
            sh.set_boot_order_modes(&modes);
        } else if key == "huge_zero_wp" {
            // This kernel's own switch (not Linux's): `alloc` is Linux
            // 6.13's write fault on the huge zero page, `split` 6.12's.
            match value {
                "alloc" => self.config.set_huge_zero_wp_alloc(true),
                "split" => self.config.set_huge_zero_wp_alloc(false),
                _ => return Err(BootParamError::HugeZeroWp(value.into())),
            }
        } else if key == "thp_anon" {
            let base = if self.config.anon_orders_configured() {
                self.config.order_modes()
            } else {
                [OrderMode::Never; 10]
            };
            let modes = parse_thp_anon(base, value)?;
            self.config.set_all_order_modes(&modes);
            self.config.mark_anon_orders_configured();
        } else {
            let name = &key["khugepaged.".len()..];
            let knob = KhugepagedKnob::from_name(name)
                .ok_or_else(|| BootParamError::UnknownKhugepagedKnob(name.into()))?;
            self.write_khugepaged(knob, value).map_err(|errno| {
                BootParamError::KhugepagedValue {
                    knob: knob.name(),
                    value: value.into(),
                    errno,
                }
            })?;
        }
        Ok(true)
    }

    /// Apply every THP parameter of a kernel command line, in order (later
    /// ones win); returns the ones that were ignored, for logging.
    pub fn apply_cmdline(&self, cmdline: &str) -> Vec<BootParamError> {
        split_cmdline(cmdline)
            .into_iter()
            .filter_map(|(k, v)| self.apply_boot_param(&k, v.as_deref()).err())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderMode::*;

    fn modes(t: &Thp) -> [OrderMode; 10] {
        t.config.order_modes()
    }

    #[test]
    fn shmem_boot_params() {
        use crate::shmem::policy::{ShmemHuge, ShmemOrderMode as S};
        let t = Thp::new();
        let e = t
            .apply_cmdline("transparent_hugepage_shmem=advise thp_shmem=64K:always;2M:within_size");
        assert!(e.is_empty(), "{e:?}");
        let sh = &t.config.shmem;
        assert_eq!(sh.huge(), ShmemHuge::Advise);
        assert_eq!(sh.order_mode(4), S::Always);
        assert_eq!(sh.order_mode(9), S::WithinSize);
        assert_eq!(sh.order_mode(5), S::Never);
        // A second one adds; a bad one changes nothing.
        let e = t.apply_cmdline(
            "thp_shmem=8K-32K:inherit thp_shmem=64K:bogus transparent_hugepage_shmem=x",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(sh.order_mode(1), S::Inherit);
        assert_eq!(sh.order_mode(2), S::Inherit);
        assert_eq!(sh.order_mode(4), S::Always);
        assert_eq!(sh.huge(), ShmemHuge::Advise);
    }

    #[test]
    fn memparse_like_linux() {
        let cases: &[(&str, u64)] = &[
            ("16K", 16 << 10),
            ("16k", 16 << 10),
            ("2M", 2 << 20),
            ("2m", 2 << 20),
            ("1G", 1 << 30),
            ("65536", 65536),
            ("0x10000", 65536),
            ("0200000", 65536),
            ("64KB", 64 << 10),
            ("64Kfoo", 64 << 10),
            ("", 0),
            ("K", 0),
            ("0x", 0),
            ("abc", 0),
        ];
        for (s, v) in cases {
            assert_eq!(memparse(s), *v, "{s}");
        }
    }

    #[test]
    fn thp_anon_examples() {
        let never = [Never; 10];
        let cases: &[(&str, &[(u32, OrderMode)])] = &[
            (
                "16K-64K:always;1M-2M:never",
                &[(2, Always), (3, Always), (4, Always)],
            ),
            ("64K:always", &[(4, Always)]),
            ("2M:inherit", &[(9, Inherit)]),
            (
                "16K,64K:madvise;2M:always",
                &[(2, Madvise), (4, Madvise), (9, Always)],
            ),
            (
                "16K-2M:inherit",
                &[
                    (2, Inherit),
                    (3, Inherit),
                    (4, Inherit),
                    (5, Inherit),
                    (6, Inherit),
                    (7, Inherit),
                    (8, Inherit),
                    (9, Inherit),
                ],
            ),
            ("64K:always;64K:never", &[]),
            ("0x10000:always", &[(4, Always)]),
            ("32k:always", &[(3, Always)]),
            ("64K-64K:always", &[(4, Always)]),
            (
                "16K-2M:always;64K:never",
                &[
                    (2, Always),
                    (3, Always),
                    (5, Always),
                    (6, Always),
                    (7, Always),
                    (8, Always),
                    (9, Always),
                ],
            ),
        ];
        for (v, set) in cases {
            let mut want = never;
            for &(o, m) in *set {
                want[o as usize] = m;
            }
            assert_eq!(parse_thp_anon(never, v), Ok(want), "{v}");
        }
    }

    #[test]
    fn thp_anon_errors() {
        use BootParamError as E;
        let cases: &[(&str, E)] = &[
            ("64K", E::ThpAnonMissingState("64K".into())),
            ("64K:always;", E::ThpAnonMissingState("".into())),
            ("", E::ThpAnonMissingState("".into())),
            ("8K:always", E::ThpAnonBadSize("8K".into())),
            ("4K:always", E::ThpAnonBadSize("4K".into())),
            ("4M:always", E::ThpAnonBadSize("4M".into())),
            ("48K:always", E::ThpAnonBadSize("48K".into())),
            ("1K:always", E::ThpAnonBadSize("1K".into())),
            (":always", E::ThpAnonBadSize("".into())),
            ("16K,:always", E::ThpAnonBadSize("".into())),
            ("64K-16K:always", E::ThpAnonBadRange("64K-16K".into())),
            ("16K-4M:always", E::ThpAnonBadSize("4M".into())),
            ("64K:sometimes", E::ThpAnonBadState("sometimes".into())),
            ("64K:Always", E::ThpAnonBadState("Always".into())),
            ("64K:always\n", E::ThpAnonBadState("always\n".into())),
            ("64K:always:x", E::ThpAnonBadState("always:x".into())),
            (
                "16K:always,64K:never",
                E::ThpAnonBadState("always,64K:never".into()),
            ),
        ];
        for (v, e) in cases {
            assert_eq!(parse_thp_anon([Never; 10], v), Err(e.clone()), "{v}");
        }
        let long = "16K,".repeat(1100) + "16K:always";
        assert_eq!(parse_thp_anon([Never; 10], &long), Err(E::ThpAnonTooLong));
    }

    #[test]
    fn cmdline_applies_in_order() {
        let t = Thp::new();
        let errs = t.apply_cmdline(
            "console=ttyS0 transparent_hugepage=madvise thp_anon=16K-64K:always;2M:inherit \
             khugepaged.max_ptes_none=0 khugepaged.scan_sleep_millisecs=100 init=/bin/x",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(t.config.global_mode(), GlobalMode::Madvise);
        let m = modes(&t);
        assert_eq!(
            &m[2..],
            &[Always, Always, Always, Never, Never, Never, Never, Inherit]
        );
        assert_eq!(t.read("khugepaged/max_ptes_none").unwrap(), "0\n");
        assert_eq!(t.read("khugepaged/scan_sleep_millisecs").unwrap(), "100\n");
    }

    #[test]
    fn thp_anon_unnamed_sizes_become_never() {
        let t = Thp::new();
        assert_eq!(t.config.order_mode(9), Inherit);
        assert!(t.apply_cmdline("thp_anon=64K:always").is_empty());
        assert_eq!(t.config.order_mode(9), Never);
        assert_eq!(t.config.order_mode(4), Always);
        // A second thp_anon= adds to the first.
        assert!(t.apply_cmdline("thp_anon=2M:madvise").is_empty());
        assert_eq!(t.config.order_mode(4), Always);
        assert_eq!(t.config.order_mode(9), Madvise);
    }

    #[test]
    fn bad_params_are_ignored_not_fatal() {
        let t = Thp::new();
        let errs = t.apply_cmdline(
            "transparent_hugepage=sometimes thp_anon=8K:always khugepaged.pages_to_scan=0 \
             khugepaged.max_ptes_none=512 khugepaged.bogus=1 thp_anon transparent_hugepage=",
        );
        assert_eq!(errs.len(), 7, "{errs:?}");
        assert_eq!(
            errs[2],
            BootParamError::KhugepagedValue {
                knob: "pages_to_scan",
                value: "0".into(),
                errno: Errno::EINVAL
            }
        );
        // Nothing changed, including PMD's inherit (a failed thp_anon= does
        // not count as configured).
        let fresh = Thp::new();
        for f in fresh.all_files() {
            assert_eq!(t.read(&f), fresh.read(&f), "{f}");
        }
        for e in &errs {
            assert!(!alloc::format!("{e}").is_empty());
        }
    }

    #[test]
    fn last_transparent_hugepage_wins_and_dashdash_stops() {
        let t = Thp::new();
        t.apply_cmdline("transparent_hugepage=never transparent_hugepage=madvise");
        assert_eq!(t.config.global_mode(), GlobalMode::Madvise);
        t.apply_cmdline("transparent_hugepage=never -- transparent_hugepage=always");
        assert_eq!(t.config.global_mode(), GlobalMode::Never);
    }

    #[test]
    fn split_cmdline_quotes() {
        let v = split_cmdline("  a=1 \"b=x y\" c d=\"q r\"\t-- e=2");
        assert_eq!(
            v,
            [
                ("a".into(), Some("1".into())),
                ("b".into(), Some("x y".into())),
                ("c".into(), None),
                ("d".into(), Some("q r".into())),
            ]
        );
        assert!(split_cmdline("").is_empty());
    }
}
