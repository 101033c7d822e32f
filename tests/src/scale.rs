//! `runner bench --scale`: page-fault scalability and TLB-shootdown cost,
//! our kernel against Debian's Linux 6.12, with the same `/scale` binary
//! (tests/user/src/bin/scale.rs) as the first process of both, under the
//! same QEMU set-up (`linux::comparable`) with two CPUs (`-smp 2`).
//!
//! Per arch it prints one table: workload, folio size, tasks, each
//! kernel's figure (median over boots of the per-boot medians, min–max
//! over every run), mthp / Linux, and for the 2-task rows each kernel's
//! scaling factor (2-task total rate / 1-task rate; for the shootdown rows
//! the cost factor, 2-task ns per op / 1-task ns per op), plus shootdown
//! IPIs per operation.  The tables also go to `target/bench/scale-<arches>.md`.
use crate::bench::fmt_v as fmt;
use crate::qemu::{self, Accel, Arch, RunSpec};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

const WORKS: [&str; 5] = [
    "pf1-proc",
    "pf1-thread",
    "pf2-thread",
    "shootdown-munmap",
    "shootdown-mprotect",
];
const SIZES: [&str; 3] = ["4K", "64K", "2M"];

type Key = (String, String, u32, String);

/// One kernel's figures: per (workload, size, tasks, metric) the per-boot
/// (median, min, max); `n/a` reasons; errors.
#[derive(Default)]
struct Series {
    figs: BTreeMap<Key, Vec<(f64, f64, f64)>>,
    na: BTreeMap<(String, String, u32), String>,
    errors: Vec<String>,
    params: String,
}

impl Series {
    fn stat(&self, w: &str, s: &str, t: u32, m: &str) -> Option<(f64, f64, f64)> {
        let v = self.figs.get(&(w.into(), s.into(), t, m.into()))?;
        let mut meds: Vec<f64> = v.iter().map(|r| r.0).collect();
        meds.sort_by(f64::total_cmp);
        let n = meds.len();
        let med = if n % 2 == 1 {
            meds[n / 2]
        } else {
            (meds[n / 2 - 1] + meds[n / 2]) / 2.0
        };
        let min = v.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
        let max = v.iter().map(|r| r.2).fold(0.0, f64::max);
        Some((med, min, max))
    }

    /// Parses one console line of `/scale`.
    fn take(&mut self, l: &str) {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() == Some(&"scale-info") && w.get(1) == Some(&"params") {
            self.params = w[2..].join(" ");
        }
        if w.len() < 5 || w[0] != "scale" {
            return;
        }
        let Ok(t) = w[3].parse::<u32>() else {
            return;
        };
        if w[4] == "n/a" {
            self.na
                .insert((w[1].into(), w[2].into(), t), w[5..].join(" "));
            return;
        }
        if w.len() == 8
            && let (Ok(a), Ok(b), Ok(c)) = (
                w[5].parse::<f64>(),
                w[6].parse::<f64>(),
                w[7].parse::<f64>(),
            )
        {
            self.figs
                .entry((w[1].into(), w[2].into(), t, w[4].into()))
                .or_default()
                .push((a, b, c));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn boot_series(
    arch: Arch,
    accel: Accel,
    quick: bool,
    boots: usize,
    linux: Option<(&std::path::Path, &std::path::Path)>,
    ours: (&std::path::Path, &std::path::Path),
) -> Series {
    let mut s = Series::default();
    for b in 0..boots {
        let cmdline = format!("init=/scale{}", if quick { " scale.quick=1" } else { "" });
        let mut spec = RunSpec::new(arch, accel, ours.0.to_path_buf(), &cmdline);
        spec.initrd = Some(ours.1.to_path_buf());
        crate::linux::comparable(&mut spec);
        spec.smp = 2;
        let who = match linux {
            Some((k, rd)) => {
                crate::linux::apply(&mut spec, k, rd, false);
                crate::linux::describe(k)
            }
            None => {
                spec.cmdline = format!("loglevel=warn {}", spec.cmdline);
                "mthp".into()
            }
        };
        println!(
            "== scale {} {who} boot {}/{boots}: {}",
            arch.name(),
            b + 1,
            qemu::show(&spec.command())
        );
        // A quick boot takes 2-4 minutes under TCG; a hang shows as silence.
        let timeout = Duration::from_secs(if quick { 600 } else { 2400 });
        // Everything the console says (with `loglevel=warn` / `quiet`, only
        // the program and the kernels' warnings: a hang's reports too).
        let out = match qemu::boot(&spec, timeout, |l| println!("  {l}")) {
            Ok(o) => o,
            Err(e) => {
                s.errors.push(e);
                continue;
            }
        };
        let mut done = false;
        for l in &out.lines {
            done |= l.starts_with("scale done");
            s.take(l);
        }
        if !done {
            s.errors.push(format!(
                "{who} boot {} ended without 'scale done'{}",
                b + 1,
                if out.status.is_none() {
                    " (timed out)"
                } else {
                    ""
                }
            ));
        }
    }
    s
}

fn cell(x: Option<(f64, f64, f64)>, na: Option<&String>) -> String {
    match (x, na) {
        (Some((m, a, b)), _) => format!("{} ({}–{})", fmt(m), fmt(a), fmt(b)),
        (None, Some(why)) => format!("n/a ({why})"),
        (None, None) => "–".into(),
    }
}

fn arch_table(arch: Arch, accel: Accel, k: &std::path::Path, o: &Series, l: &Series) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "## {} — page-fault scalability and TLB shootdowns, mthp against {} ({}, -smp 2)\n",
        arch.name(),
        crate::linux::describe(k),
        match accel {
            Accel::Tcg => "TCG",
            Accel::Kvm => "KVM",
        }
    );
    let _ = writeln!(
        r,
        "`runner bench --scale --arch {}` on {}: /scale as the first process of both kernels, QEMU {} -smp 2 -m 2G, params `{}`. Figures: median of per-boot medians (min–max over every run). pf rows: 4K pages first-touched per second, all tasks together; shootdown rows: ns per operation (munmap: mmap+touch+munmap of a region of the folio size; mprotect: RW->R->RW); ×2: 2-task / 1-task (rate for pf, cost for shootdown). Emulated CPUs: compare ratios, not absolute values.\n",
        arch.name(),
        crate::faultcmp::today(),
        match arch {
            Arch::X86_64 => "-M q35 -cpu max",
            Arch::Aarch64 => "-M virt -cpu max,pauth-impdef=on",
        },
        o.params
    );
    let _ = writeln!(
        r,
        "| workload | size | tasks | mthp | Linux | mthp / Linux | mthp ×2 | Linux ×2 | IPIs/op mthp | IPIs/op Linux |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for w in WORKS {
        let shoot = w.starts_with("shootdown");
        let metric = if shoot { "ns_per_op" } else { "pages_per_s" };
        for s in SIZES {
            for t in [1u32, 2] {
                let key = (w.to_string(), s.to_string(), t);
                let (fo, fl) = (o.stat(w, s, t, metric), l.stat(w, s, t, metric));
                let ratio = match (fo, fl) {
                    (Some(a), Some(b)) if b.0 > 0.0 => format!("{:.2}", a.0 / b.0),
                    _ => "–".into(),
                };
                let scaling = |x: &Series, f: Option<(f64, f64, f64)>| match (
                    t,
                    f,
                    x.stat(w, s, 1, metric),
                ) {
                    (2, Some(a), Some(b)) if b.0 > 0.0 => format!("{:.2}", a.0 / b.0),
                    (2, None, _) => "n/a".into(),
                    _ => "–".into(),
                };
                let ipi = |x: &Series| {
                    if !shoot {
                        return "–".to_string();
                    }
                    match x.stat(w, s, t, "ipis_per_op") {
                        Some((m, _, _)) => fmt(m),
                        None if x.na.contains_key(&key) => "–".into(),
                        None => "n/a".into(),
                    }
                };
                let _ = writeln!(
                    r,
                    "| {w} | {s} | {t} | {} | {} | {ratio} | {} | {} | {} | {} |",
                    cell(fo, o.na.get(&key)),
                    cell(fl, l.na.get(&key)),
                    scaling(o, fo),
                    scaling(l, fl),
                    ipi(o),
                    ipi(l)
                );
            }
        }
    }
    if arch == Arch::Aarch64 {
        let _ = writeln!(
            r,
            "\nIPIs/op on arm64: n/a (broadcast TLBI: `TLBI …IS` reaches every CPU without an interrupt)."
        );
    }
    r.push('\n');
    r
}

pub fn run(arches: &[Arch], accel: Accel, quick: bool, boots: usize) -> ExitCode {
    let mut report = String::new();
    let mut ok = true;
    for &arch in arches {
        let (k, lrd, ours_k, ours_rd) = match crate::linux::sides(arch) {
            Ok(Some(s)) => s,
            Ok(None) => {
                ok = false;
                continue;
            }
            Err(()) => return ExitCode::FAILURE,
        };
        let ours = boot_series(arch, accel, quick, boots, None, (&ours_k, &ours_rd));
        let lin = boot_series(
            arch,
            accel,
            quick,
            boots,
            Some((&k, &lrd)),
            (&ours_k, &ours_rd),
        );
        report.push_str(&arch_table(arch, accel, &k, &ours, &lin));
        for e in ours.errors.iter().chain(&lin.errors) {
            ok = false;
            let _ = writeln!(report, "ERROR ({}): {e}", arch.name());
        }
    }
    println!("\n{report}");
    let name = format!("scale-{}.md", crate::report::arch_names(arches));
    crate::report::write("bench", &[(name, &report)]);
    crate::report::status(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_scaling_reads_both_task_counts() {
        let mut s = Series::default();
        for l in [
            "scale-info params ms=150 runs=2 mib=8 tasks=2",
            "scale pf1-proc 4K 1 pages_per_s 100 90 110",
            "scale pf1-proc 4K 2 pages_per_s 180 170 190",
            "scale pf1-thread 4K 2 n/a sched_setaffinity(CPU 1): errno 22",
            "scale shootdown-munmap 4K 2 ipis_per_op n/a (broadcast TLBI)",
            "scale done 2 measured 1 n/a",
        ] {
            s.take(l);
        }
        assert_eq!(s.params, "ms=150 runs=2 mib=8 tasks=2");
        assert_eq!(
            s.stat("pf1-proc", "4K", 2, "pages_per_s"),
            Some((180.0, 170.0, 190.0))
        );
        assert_eq!(
            s.na.get(&("pf1-thread".into(), "4K".into(), 2))
                .map(|x| x.as_str()),
            Some("sched_setaffinity(CPU 1): errno 22")
        );
        let t = arch_table(
            Arch::X86_64,
            Accel::Tcg,
            std::path::Path::new("/x/vmlinuz-6.12-amd64"),
            &s,
            &s,
        );
        assert!(t.contains(
            "| pf1-proc | 4K | 2 | 180.0 (170.0–190.0) | 180.0 (170.0–190.0) | 1.00 | 1.80 | 1.80 |"
        ));
        assert!(t.contains("| pf1-thread | 4K | 2 | n/a (sched_setaffinity(CPU 1): errno 22)"));
    }
}
