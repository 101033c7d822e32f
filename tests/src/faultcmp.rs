//! `runner bench --linux`: fault-in on our kernel against Debian's Linux
//! 6.12, the one way every figure compared with Linux is produced.
//!
//! * the same program: `/bench` from our initramfs (`tests/user`), as the
//!   first process of both kernels, `bench.work=fault
//!   bench.configs=4K,16K,64K,2M bench.sizes=256`: one byte written per 4K
//!   page of a fresh 2 MiB-aligned 256 MiB region, faults from `ru_minflt`;
//! * the same QEMU set-up for both (`linux::comparable`: x86 `-M q35 -cpu
//!   max`, arm64 `-M virt -cpu max,pauth-impdef=on`, `-m 2G`, 1 vCPU);
//! * the same statistic: `--boots N` boots per kernel (default 3), each
//!   running every configuration 5 times (3 under `--icount`); the figure
//!   is the median of the per-boot medians, with the smallest minimum and
//!   largest maximum over all runs of all boots;
//! * `--icount` (arm64): `-icount shift=0` for both, where the guest clock
//!   advances 1 ns per instruction, so `/bench`'s ns per fault *is*
//!   instructions per fault: everything the CPU ran during the loop (the
//!   process, the kernel, interrupts, other threads), on both kernels, read
//!   the same way.  Every row checks that both kernels' figures are for the
//!   same region size.
use crate::bench::fmt_v as fmt;
use crate::qemu::{self, Accel, Arch, RunSpec};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

const CONFIGS: [&str; 4] = ["4K", "16K", "64K", "2M"];
const MIB: u64 = 256;

/// One kernel's `(cfg, metric)` figures over boots: per-boot (med, min, max).
#[derive(Default)]
struct Series {
    rows: Vec<(String, u64, String, f64, f64, f64)>,
    errors: Vec<String>,
}

impl Series {
    fn stat(&self, cfg: &str, metric: &str) -> Option<(f64, f64, f64, usize)> {
        let v: Vec<&(String, u64, String, f64, f64, f64)> = self
            .rows
            .iter()
            .filter(|r| r.0 == cfg && r.1 == MIB && r.2 == metric)
            .collect();
        if v.is_empty() {
            return None;
        }
        let mut meds: Vec<f64> = v.iter().map(|r| r.3).collect();
        meds.sort_by(f64::total_cmp);
        let n = meds.len();
        let med = if n % 2 == 1 {
            meds[n / 2]
        } else {
            (meds[n / 2 - 1] + meds[n / 2]) / 2.0
        };
        let min = v.iter().map(|r| r.4).fold(f64::INFINITY, f64::min);
        let max = v.iter().map(|r| r.5).fold(0.0, f64::max);
        Some((med, min, max, n))
    }
    /// Region sizes seen (to check both kernels used the same one).
    fn sizes(&self) -> Vec<u64> {
        let mut s: Vec<u64> = self.rows.iter().map(|r| r.1).collect();
        s.sort();
        s.dedup();
        s
    }
}

fn boot_series(
    arch: Arch,
    accel: Accel,
    icount: bool,
    smp: u32,
    boots: usize,
    linux: Option<(&std::path::Path, &std::path::Path)>,
    ours: (&std::path::Path, &std::path::Path),
) -> Series {
    let mut s = Series::default();
    let runs = if icount { 3 } else { 5 };
    for b in 0..boots {
        let cmdline = format!(
            "init=/bench bench.work=fault bench.configs={} bench.sizes={MIB} bench.runs={runs}",
            CONFIGS.join(",")
        );
        let mut spec = RunSpec::new(arch, accel, ours.0.to_path_buf(), &cmdline);
        spec.initrd = Some(ours.1.to_path_buf());
        crate::linux::comparable(&mut spec);
        spec.smp = smp;
        if icount {
            spec.extra_args.extend(["-icount".into(), "shift=0".into()]);
        }
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
            "== {} {who} boot {}/{boots}: {}",
            arch.name(),
            b + 1,
            qemu::show(&spec.command())
        );
        let out = match qemu::boot(&spec, Duration::from_secs(1200), |l| {
            if l.starts_with("bench fault") && l.contains("ms_per_gib") || l.contains("PANIC") {
                println!("  {l}");
            }
        }) {
            Ok(o) => o,
            Err(e) => {
                s.errors.push(e);
                continue;
            }
        };
        let mut done = false;
        for l in &out.lines {
            done |= l == "bench done";
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() == 8
                && w[0] == "bench"
                && w[1] == "fault"
                && let (Ok(mib), Ok(med), Ok(min), Ok(max)) = (
                    w[3].parse::<u64>(),
                    w[5].parse::<f64>(),
                    w[6].parse::<f64>(),
                    w[7].parse::<f64>(),
                )
            {
                s.rows
                    .push((w[2].to_string(), mib, w[4].to_string(), med, min, max));
            }
        }
        if !done {
            s.errors
                .push(format!("{who} boot {} ended without 'bench done'", b + 1));
        }
    }
    s
}

fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub(crate) fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn run(arches: &[Arch], accel: Accel, icount: bool, smp: u32, boots: usize) -> ExitCode {
    let mut report = String::new();
    let mut ok = true;
    for &arch in arches {
        if icount && arch != Arch::Aarch64 {
            println!(
                "== {}: -icount is for arm64 (QEMU x86 TCG: no PMU, and icount timing is not comparable); skipped",
                arch.name()
            );
            continue;
        }
        let (k, lrd, ours_k, ours_rd) = match crate::linux::sides(arch) {
            Ok(Some(s)) => s,
            Ok(None) => {
                ok = false;
                continue;
            }
            Err(()) => return ExitCode::FAILURE,
        };
        let ours = boot_series(arch, accel, icount, smp, boots, None, (&ours_k, &ours_rd));
        let lin = boot_series(
            arch,
            accel,
            icount,
            smp,
            boots,
            Some((&k, &lrd)),
            (&ours_k, &ours_rd),
        );
        let metric = if icount { "ns_per_fault" } else { "ms_per_gib" };
        let _ = writeln!(
            report,
            "## {} fault-in, mthp against {} ({})\n",
            arch.name(),
            crate::linux::describe(&k),
            if icount {
                "TCG -icount shift=0: instructions per fault, exact"
            } else {
                "TCG: ms per GiB touched"
            }
        );
        let _ = writeln!(
            report,
            "`runner bench --linux --arch {}{} --smp {smp} --boots {boots}` on {}, host CPU {}. Both kernels: /bench as first process, one byte per 4K page of a fresh {MIB} MiB region, {} runs per boot, {boots} boots each; QEMU {} -smp {smp}. Figure: median of per-boot medians (min–max over every run).{}\n",
            arch.name(),
            if icount { " --icount" } else { "" },
            today(),
            host_cpu(),
            if icount { 3 } else { 5 },
            match arch {
                Arch::X86_64 => "-M q35 -accel tcg -cpu max -m 2G",
                Arch::Aarch64 => "-M virt -cpu max,pauth-impdef=on -m 2G",
            },
            if icount {
                " Under -icount shift=0 the guest clock counts instructions, so ns per fault = instructions per fault over everything the CPUs ran during the loop (the idle CPU's ticks included), on both kernels alike."
            } else {
                " Wall-clock emulation times: compare ratios, not absolute values."
            }
        );
        let sizes_o = ours.sizes();
        let sizes_l = lin.sizes();
        if sizes_o != sizes_l {
            let _ = writeln!(
                report,
                "ERROR: region sizes differ (mthp {sizes_o:?} MiB, Linux {sizes_l:?} MiB): no comparison\n"
            );
            ok = false;
        } else {
            let unit = if icount {
                "instructions/fault"
            } else {
                "ms/GiB"
            };
            let _ = writeln!(
                report,
                "| map | faults/GiB (mthp / Linux) | mthp {unit} | Linux {unit} | mthp / Linux |\n|---|---|---|---|---|"
            );
            for cfg in CONFIGS {
                let (o, l) = (ours.stat(cfg, metric), lin.stat(cfg, metric));
                let fo = ours.stat(cfg, "faults_per_gib").map(|x| x.0);
                let fl = lin.stat(cfg, "faults_per_gib").map(|x| x.0);
                let c = |x: Option<(f64, f64, f64, usize)>| match x {
                    Some((m, a, b, n)) => format!("{} ({}–{}), {n} boots", fmt(m), fmt(a), fmt(b)),
                    None => "–".into(),
                };
                let _ = writeln!(
                    report,
                    "| {cfg} | {} / {} | {} | {} | {} |",
                    fo.map(|v| format!("{v:.0}")).unwrap_or("–".into()),
                    fl.map(|v| format!("{v:.0}")).unwrap_or("–".into()),
                    c(o),
                    c(l),
                    match (o, l) {
                        (Some(a), Some(b)) if b.0 > 0.0 => format!("{:.2}", a.0 / b.0),
                        _ => "–".into(),
                    }
                );
            }
            report.push('\n');
        }
        for e in ours.errors.iter().chain(&lin.errors) {
            ok = false;
            let _ = writeln!(report, "ERROR ({}): {e}", arch.name());
        }
    }
    println!("\n{report}");
    let name = format!(
        "faultcmp-{}{}.md",
        crate::report::arch_names(arches),
        if icount { "-icount" } else { "" }
    );
    crate::report::write("bench", &[(name, &report)]);
    crate::report::status(ok)
}
