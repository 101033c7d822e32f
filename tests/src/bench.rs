//! `runner bench`: boot each kernel with `/bench` (tests/user) as init,
//! collect its `bench …` lines, and write tables, a CSV and SVG plots under
//! `target/bench/`.  The host allocator benchmark (`mm`'s `bench_alloc`
//! example) runs once and its lines go into the same report.
//!
//! ```text
//! runner bench [--arch A]... [--accel tcg|kvm] [--quick] [--icount]
//! ```
//!
//! * default: regions of 64, 128, 256, 512 and 1024 MiB, 5 runs each;
//!   `--quick`: 64 and 256 MiB (a couple of minutes per arch);
//! * arm64 boots a second time with `contpte=off` for the mTHP sizes that
//!   contpte covers (64K..1M), tagged `-nocont`;
//! * with QEMU 10 and the TLB-model plugin (`make deps-tlb`; TCG only;
//!   `--no-tlb-model` leaves it out), stream and chase boot again under the
//!   model on our kernel and on Linux 6.12 ([`model_boots`]): `model:`
//!   columns beside the PMU ones, a side-by-side table, CSV rows with
//!   `kernel` = `linux` and `*-model-*.svg` plots (docs/tlb-model.md);
//! * `--icount` (arm64 TCG): `-icount shift=0`, fault-in only, for exact
//!   instructions per fault from INST_RETIRED; the Linux baseline's figure
//!   (`ICOUNT=1 ../shared/tools/linux-baseline/run.sh aarch64`) is shown
//!   beside it when a log of such a run over 256 MiB exists (that figure
//!   counts only the baseline's own process; `runner bench --linux
//!   --icount` measures both kernels the same way, see `faultcmp.rs`).
//!
//! `runner bench --linux` is the fault-in comparison with Linux
//! (`faultcmp.rs`); `run(.., linux = true)` still boots the whole `/bench`
//! on Linux with the comparable set-up, for a caller that wants the tables.
//!
//! Timing is the guest's own (`clock_gettime` in the program); nothing here
//! is a pass/fail test.
use crate::qemu::{self, Accel, Arch, RunSpec};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// One `bench <work> <cfg> <mib> <metric> <median> <min> <max>` line.
#[derive(Clone, Debug)]
struct Rec {
    work: String,
    cfg: String,
    mib: u64,
    metric: String,
    med: f64,
    min: f64,
    max: f64,
}

/// Everything one architecture produced.
struct ArchResult {
    arch: Arch,
    accel: Accel,
    recs: Vec<Rec>,
    /// `bench-info` lines (without the prefix), in order, all boots.
    info: Vec<String>,
    /// Problems (boot failures, missing `bench done`).
    errors: Vec<String>,
    qemu: String,
    /// "mthp kernel" or the Linux kernel booted with `--linux`.
    kernel: String,
}

impl ArchResult {
    fn get(&self, work: &str, cfg: &str, mib: u64, metric: &str) -> Option<&Rec> {
        self.recs
            .iter()
            .find(|r| r.work == work && r.cfg == cfg && r.mib == mib && r.metric == metric)
    }
    fn info_value(&self, key: &str) -> Option<&str> {
        self.info
            .iter()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
    }
}

fn parse_rec(l: &str) -> Option<Rec> {
    let w: Vec<&str> = l.split_whitespace().collect();
    if w.len() != 8 || w[0] != "bench" {
        return None;
    }
    Some(Rec {
        work: w[1].into(),
        cfg: w[2].into(),
        mib: w[3].parse().ok()?,
        metric: w[4].into(),
        med: w[5].parse().ok()?,
        min: w[6].parse().ok()?,
        max: w[7].parse().ok()?,
    })
}

/// Order of mapping sizes in tables and plots.
fn cfg_rank(c: &str) -> (u64, bool) {
    let (base, tagged) = match c.split_once('-') {
        Some((b, _)) => (b, true),
        None => (c, false),
    };
    let kb = if let Some(k) = base.strip_suffix('K') {
        k.parse().unwrap_or(0)
    } else if let Some(m) = base.strip_suffix('M') {
        m.parse::<u64>().unwrap_or(0) * 1024
    } else {
        0
    };
    (kb, tagged)
}

struct Boot {
    label: &'static str,
    cmdline: String,
    extra: Vec<String>,
    /// A swap disk of this many bytes (`qemu::swap_disk_of`) as `/dev/vda`:
    /// the swap and pressure workloads skip themselves without one.
    disk: Option<u64>,
    /// `-m` instead of 2G: the pressure boot's working set is 1.5x RAM,
    /// so less RAM keeps it short.
    mem: Option<&'static str>,
    /// NUMA nodes (`qemu::numa_args`; 0: none): the migration boot's two.
    numa: u32,
    /// `-smp` of the boot on both kernels (1: one CPU).
    smp: u32,
    /// Under the TLB model with this configuration (tlbmodel.rs): only its
    /// `model:` figures are kept, the boot's timings are not.
    model: Option<&'static str>,
}

impl Boot {
    /// A boot with the default RAM, no disk, no NUMA, and `-icount
    /// shift=0` when `icount` (arm64: the guest clock counts instructions).
    fn plain(label: &'static str, cmdline: String, icount: bool) -> Boot {
        Boot {
            label,
            cmdline,
            extra: if icount {
                vec!["-icount".into(), "shift=0".into()]
            } else {
                Vec::new()
            },
            disk: None,
            mem: None,
            numa: 0,
            smp: 1,
            model: None,
        }
    }
}

/// The TLB model's side of one arch (tlbmodel.rs, docs/tlb-model.md):
/// `Err` says why a side has no figures (the tables print `unavailable`).
struct Model {
    /// Our kernel's model boots ran (their `model:` records are in the
    /// arch's [`ArchResult`]).
    ours: Result<(), String>,
    /// The same boots on Linux 6.12.
    linux: Result<ArchResult, String>,
}

/// Chase steps of a model boot: the count `scripts/tlb-check.sh` checks
/// and docs/tlb-model.md reports (the model is exact, one run is enough).
const MODEL_STEPS: u64 = 200_000;

/// The model configuration of an arch's boots: an Arm Neoverse N1 (with
/// contpte, or ignoring the contiguous bit for the `-nocont` boot) or a
/// Zen 4 (tools/tlb-model/src/model.rs).
fn model_config(arch: Arch, cfg: &str) -> &'static str {
    match arch {
        Arch::Aarch64 if cfg.ends_with("-nocont") => "neoverse-n1-nocont",
        Arch::Aarch64 => "neoverse-n1",
        Arch::X86_64 => "zen4",
    }
}

/// Stream and chase at 64 MiB and 1 GiB (64 MiB only with `quick`) at 4K,
/// 16K, 64K and 2M, one run each under the model (the phase markers are on
/// run 0); arm64 once more with `contpte=off`, under the configuration that
/// ignores the contiguous bit (Linux cannot turn contpte off; the model
/// then treats its contiguous PTEs as 4K entries), tagged `-nocont` like
/// the main boot's rows.
fn model_boots(arch: Arch, quick: bool) -> Vec<Boot> {
    let words = format!(
        "bench.sizes={} bench.runs=1 bench.steps={MODEL_STEPS} bench.work=stream,chase",
        if quick { "64" } else { "64,1024" }
    );
    let boot = |label, cmdline: String, model| Boot {
        model: Some(model),
        ..Boot::plain(label, cmdline, false)
    };
    let mut v = vec![boot(
        "tlb-model",
        format!("init=/bench bench.configs=4K,16K,64K,2M {words}"),
        model_config(arch, "4K"),
    )];
    if arch == Arch::Aarch64 {
        v.push(boot(
            "tlb-model-nocont",
            format!("contpte=off init=/bench bench.configs=64K bench.tag=nocont {words}"),
            model_config(arch, "64K-nocont"),
        ));
    }
    v
}

/// A `model:` figure of one kernel's side: the value (the model is exact:
/// no spread), `–` where it was not modelled, `unavailable` when that side
/// could not run.
fn model_cell(
    side: Result<&ArchResult, &String>,
    work: &str,
    cfg: &str,
    mib: u64,
    metric: &str,
) -> String {
    match side {
        Err(_) => "unavailable".into(),
        Ok(r) => r
            .get(work, cfg, mib, metric)
            .map(|x| fmt_model(x.med))
            .unwrap_or_else(|| "–".into()),
    }
}

/// A model figure: whole numbers above 1000 (walk counts), three
/// significant digits below 1 (a 2M stream's 0.00904 walks per 1000 loads
/// would otherwise read 0.01).
fn fmt_model(v: f64) -> String {
    if v > 0.0 && v < 1.0 {
        let d = (-v.log10().floor()) as usize + 2;
        format!("{v:.d$}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        fmt_v(v)
    }
}

/// Our side of the model as `model_cell` takes it.
fn ours_side<'a>(r: &'a ArchResult, m: &'a Model) -> Result<&'a ArchResult, &'a String> {
    m.ours.as_ref().map(|()| r)
}

/// Per arch: every modelled loop, ours and Linux side by side, and why a
/// side is missing.
fn model_table(r: &ArchResult, m: &Model) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### {} — TLB model ({}{}), mthp and Linux 6.12 side by side\n",
        r.arch.name(),
        model_config(r.arch, "4K"),
        if r.arch == Arch::Aarch64 {
            "; `-nocont` rows: neoverse-n1-nocont"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "Per 1000 modelled loads: L1 dTLB misses (`model:l1_miss_per_kaccess`) and L2 misses = page walks (`model:dtlb_miss_per_kaccess`); walks per loop (`model:walks`). The model is deterministic: one run, no spread. Chase: {MODEL_STEPS} steps.\n"
    );
    let ours = ours_side(r, m);
    let lx = m.linux.as_ref();
    let mut keys: Vec<(String, u64, String)> = [ours.ok(), lx.ok()]
        .into_iter()
        .flatten()
        .flat_map(|k| k.recs.iter())
        .filter(|x| x.metric == "model:walks")
        .map(|x| (x.work.clone(), x.mib, x.cfg.clone()))
        .collect();
    keys.sort_by(|a, b| (&b.0, a.1, cfg_rank(&a.2)).cmp(&(&a.0, b.1, cfg_rank(&b.2))));
    keys.dedup();
    if keys.is_empty() {
        let _ = writeln!(s, "No modelled loop.\n");
    } else {
        let _ = writeln!(
            s,
            "| workload | MiB | map | mthp L1 miss/kload | mthp walks/kload | mthp walks | Linux L1 miss/kload | Linux walks/kload | Linux walks |\n|---|---|---|---|---|---|---|---|---|"
        );
        for (work, mib, cfg) in &keys {
            let _ = write!(s, "| {work} | {mib} | {cfg} |");
            for side in [ours, lx] {
                for metric in [
                    "model:l1_miss_per_kaccess",
                    "model:dtlb_miss_per_kaccess",
                    "model:walks",
                ] {
                    let _ = write!(s, " {} |", model_cell(side, work, cfg, *mib, metric));
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    for (name, side) in [("mthp", ours), ("Linux 6.12", lx)] {
        match side {
            Err(e) => {
                let _ = writeln!(s, "- {name}: unavailable: {e}");
            }
            Ok(k) => {
                let _ = writeln!(s, "- {name}: {}", k.kernel);
                for l in k.info.iter().filter(|l| l.starts_with("model_anomaly ")) {
                    let _ = writeln!(s, "  - {l}");
                }
            }
        }
    }
    let _ = writeln!(
        s,
        "- What the model sees: a 16K folio is four 4K PTEs (contpte covers 64K blocks of a 4K granule only), so 16K rows equal 4K rows; x86 has no contiguous PTEs, so 64K equals 4K there (Zen 4's own 32K coalescing is not modelled). Details and the figures it is compared with: docs/tlb-model.md.\n"
    );
    s
}

/// Swap disk of the swap workload's boot: 16 (64 full) MiB at a time, so
/// 128 MiB leaves the slots contiguous.
const SWAP_BOOT_DISK: u64 = 128 << 20;
/// RAM and swap disk of the pressure boot: 1.5x 256 MiB of working set
/// overflows into swap by about 128 MiB plus what the kernel holds; 512
/// MiB of swap is room for that on both kernels (sparse image).
const PRESSURE_MEM: &str = "256M";
const PRESSURE_DISK: u64 = 512 << 20;
/// The pressure working set: 1.5x `-m`, the same on both kernels (1.5x
/// MemTotal would differ: Linux's MemTotal is 212 MiB of 256 on x86).
const PRESSURE_SET_MIB: u64 = 384;
/// RAM of the cold swap-in boot, on both kernels: its pressure child
/// writes all of `MemFree` and more for every run, so little RAM keeps it
/// short (under `-icount` most of all).
const SWAP_COLD_MEM: &str = "256M";
/// Swap disk of the cold swap-in boot: the region plus what the pressure
/// child overflows (2x the region + 16 MiB and the watermarks), with room
/// to spare at 64 MiB (sparse image).
const SWAP_COLD_DISK: u64 = 512 << 20;

pub fn run(
    arches: &[Arch],
    accel: Accel,
    quick: bool,
    icount: bool,
    linux: bool,
    with_model: bool,
) -> ExitCode {
    let root = qemu::workspace_root();
    let out_dir = root.join("target").join("bench");
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("{}: {e}", out_dir.display());
        return ExitCode::FAILURE;
    }
    let sizes = if quick {
        "64,256"
    } else {
        "64,128,256,512,1024"
    };
    let steps = if quick { 500_000 } else { 1_000_000 };
    let mut results = Vec::new();
    let mut models = Vec::new();
    for &arch in arches {
        if icount && (arch != Arch::Aarch64 || accel != Accel::Tcg) {
            println!(
                "== {}: -icount mode is for arm64 TCG only (QEMU's x86 TCG has no PMU; KVM does not take -icount); skipped",
                arch.name()
            );
            continue;
        }
        let mut boots = Vec::new();
        if icount {
            boots.push(Boot {
                label: "icount",
                cmdline: "init=/bench bench.work=fault bench.configs=4K,16K,64K,2M bench.sizes=256 bench.runs=3".into(),
                extra: vec!["-icount".into(), "shift=0".into()],
                disk: None,
                mem: None,
                numa: 0,
                smp: 1,
                model: None,
            });
        } else {
            boots.push(Boot {
                label: "main",
                cmdline: format!(
                    "init=/bench bench.sizes={sizes} bench.runs=5 bench.steps={steps}"
                ),
                extra: Vec::new(),
                disk: None,
                mem: None,
                numa: 0,
                smp: 1,
                model: None,
            });
            if arch == Arch::Aarch64 && !linux {
                boots.push(Boot {
                    label: "contpte=off",
                    cmdline: format!(
                        "contpte=off init=/bench bench.sizes={sizes} bench.runs=5 bench.steps={steps} bench.configs=64K,128K,256K,512K,1M bench.tag=nocont bench.work=fault,stream,chase"
                    ),
                    extra: Vec::new(),
                    disk: None,
                    mem: None,
                    numa: 0,
                    smp: 1,
                    model: None,
                });
            }
        }
        boots.extend(swap_boots(quick, icount));
        // Issue 16's two workloads (ours here; beside Linux in bench-frag
        // and bench-migrate).  Not in `bench-linux`, whose boots are the
        // fault-in comparison only.
        if !linux {
            if !icount {
                boots.push(frag_boot(quick));
            }
            boots.push(migrate_boot(quick, icount));
        }
        // The TLB model's boots (ours here, Linux's below), when it can run.
        let mut model = Model {
            ours: Err("not run (-icount, or the Linux comparison)".into()),
            linux: Err("not run".into()),
        };
        if !icount && !linux {
            model.ours = match accel {
                Accel::Kvm => Err("the TLB model is a TCG plugin: not under KVM".into()),
                Accel::Tcg if !with_model => Err("not asked for (--no-tlb-model)".into()),
                Accel::Tcg => crate::tlbmodel::available(arch),
            };
            if model.ours.is_ok() {
                boots.extend(model_boots(arch, quick));
            }
        }
        let lk = if linux {
            match crate::linux::kernel(arch) {
                Some(k) => Some(k),
                None => {
                    println!(
                        "== {}: {}; skipped",
                        arch.name(),
                        crate::linux::missing(arch)
                    );
                    continue;
                }
            }
        } else {
            None
        };
        match run_arch(arch, accel, quick, &boots, lk) {
            Ok(r) => results.push(r),
            Err(e) => {
                println!("== {}: {e}", arch.name());
                return ExitCode::FAILURE;
            }
        }
        if model.ours.is_ok() {
            model.linux = match crate::linux::kernel(arch) {
                Some(k) => run_arch(arch, accel, quick, &model_boots(arch, quick), Some(k)),
                None => Err(crate::linux::missing(arch)),
            };
        } else if let Err(e) = &model.ours {
            model.linux = Err(e.clone());
        }
        models.push(model);
    }
    let alloc = if icount || linux {
        Vec::new()
    } else {
        bench_alloc()
    };
    let linux_ic = if icount { linux_icount() } else { None };
    let mode = if icount {
        "icount"
    } else if quick {
        "quick"
    } else {
        "full"
    };
    let accel_name = match accel {
        Accel::Tcg => "tcg",
        Accel::Kvm => "kvm",
    };
    let stem = format!(
        "bench-{}{}-{accel_name}-{mode}",
        if linux { "linux-" } else { "" },
        arches
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join("+")
    );
    let mut report = String::new();
    let mut csv =
        String::from("arch,accel,workload,config,mib,metric,median,min,max,source,kernel\n");
    for (r, m) in results.iter().zip(&models) {
        if icount {
            report.push_str(&icount_table(r, linux_ic.as_ref()));
            report.push_str(&swap_tables(r, None));
            report.push_str(&migrate_tables(r, None));
        } else {
            report.push_str(&arch_tables(r, m));
            report.push_str(&model_table(r, m));
            report.push_str(&swap_tables(r, None));
            report.push_str(&frag_tables(r, None));
            report.push('\n');
            report.push_str(&migrate_tables(r, None));
            for (work, file, model) in [
                ("chase", "chase", false),
                ("stream", "stream", false),
                ("chase", "chase-model", true),
                ("stream", "stream-model", true),
            ] {
                if model && m.ours.is_err() {
                    continue;
                }
                let name = format!(
                    "{file}-{}{}-{accel_name}-{mode}.svg",
                    if linux { "linux-" } else { "" },
                    r.arch.name()
                );
                let svg = if model {
                    plot_model(r, m, work)
                } else {
                    plot(r, work)
                };
                let p = out_dir.join(&name);
                match std::fs::write(&p, svg) {
                    Ok(()) => {
                        let _ = writeln!(report, "plot: {}\n", p.display());
                    }
                    Err(e) => eprintln!("{}: {e}", p.display()),
                }
            }
        }
        let lx = m.linux.as_ref().ok();
        for (k, kernel) in [(Some(r), "mthp"), (lx, "linux")] {
            let Some(k) = k else { continue };
            for x in &k.recs {
                let src = source_of(k, x);
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{},{},{},{},{},\"{}\",{kernel}",
                    k.arch.name(),
                    accel_name,
                    x.work,
                    x.cfg,
                    x.mib,
                    x.metric,
                    x.med,
                    x.min,
                    x.max,
                    src.replace('"', "'")
                );
            }
        }
    }
    if !icount {
        report.push_str(&other_figures(&results, &alloc, !linux));
    }
    let mut ok = true;
    let linux_models = models.iter().filter_map(|m| m.linux.as_ref().ok());
    for r in results.iter().chain(linux_models) {
        for e in &r.errors {
            ok = false;
            let _ = writeln!(report, "ERROR ({}, {}): {e}", r.arch.name(), r.kernel);
        }
    }
    println!("\n{report}");
    for (ext, data) in [("md", &report), ("csv", &csv)] {
        let p = out_dir.join(format!("{stem}.{ext}"));
        if let Err(e) = std::fs::write(&p, data) {
            eprintln!("{}: {e}", p.display());
        } else {
            println!("wrote {}", p.display());
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// CPUs of the swap boots, on both kernels: the figures are taken with
/// SMP on, and `kblockd` (Linux: its block softirq and kworkers) may end
/// writes on the CPU the benchmark does not use.  Under `-icount` QEMU runs
/// both vCPUs in turn on one host thread, so icount time is the
/// instructions of both CPUs (an idle one waits in `wfi` and adds none).
const SWAP_SMP: u32 = 2;

/// The swap boots (issue 15): out and in per folio size, on its own boot
/// with a swap disk (under -icount too: instructions per MiB); swap-in
/// from the disk (`swap_cold`: its swap cache emptied by pressure first)
/// on a boot with little RAM, under -icount too; and the memory-pressure
/// run with little RAM (not under -icount: it measures time and major
/// faults).
fn swap_boots(quick: bool, icount: bool) -> Vec<Boot> {
    let mut boots = Vec::new();
    let swap_mib = if quick { 16 } else { 64 };
    let icount_args = || {
        if icount {
            vec!["-icount".into(), "shift=0".into()]
        } else {
            Vec::new()
        }
    };
    boots.push(Boot {
        label: "swap",
        cmdline: format!("init=/bench bench.work=swap bench.sizes={swap_mib} bench.runs=3"),
        extra: icount_args(),
        disk: Some(SWAP_BOOT_DISK),
        mem: None,
        numa: 0,
        smp: SWAP_SMP,
        model: None,
    });
    boots.push(Boot {
        label: "swap-cold",
        cmdline: format!("init=/bench bench.work=swap_cold bench.sizes={swap_mib} bench.runs=3"),
        extra: icount_args(),
        disk: Some(SWAP_COLD_DISK),
        mem: Some(SWAP_COLD_MEM),
        numa: 0,
        smp: SWAP_SMP,
        model: None,
    });
    if !icount {
        let touches = if quick { 20_000 } else { 100_000 };
        boots.push(Boot {
            label: "pressure",
            cmdline: format!(
                "init=/bench bench.work=pressure bench.sizes={PRESSURE_SET_MIB} bench.runs={} bench.steps={touches}",
                if quick { 1 } else { 3 }
            ),
            extra: Vec::new(),
            disk: Some(PRESSURE_DISK),
            mem: Some(PRESSURE_MEM),
            numa: 0,
            smp: SWAP_SMP,
            model: None,
        });
    }
    boots
}

/// `runner bench --swap`: the swap boots on our kernel and on Debian's
/// Linux 6.12 (same /bench, `linux::comparable` set-up for Linux; our
/// kernel keeps its own machine, x86 `microvm`, as it drives no PCI disk),
/// then the side-by-side tables ([`swap_tables`]).
pub fn swap_compare(arches: &[Arch], accel: Accel, quick: bool, icount: bool) -> ExitCode {
    side_by_side(
        arches,
        accel,
        quick,
        icount,
        "bench-swap",
        &|| swap_boots(quick, icount),
        swap_tables,
    )
}

/// RAM of the fragmentation boot: the churn fills 15/16 of what is free,
/// so a small machine keeps it short; the same on both kernels.
const FRAG_MEM: &str = "512M";

/// The fragmentation boot (issue 16), in `make bench` and `bench-frag`.
fn frag_boot(quick: bool) -> Boot {
    Boot {
        label: "frag",
        cmdline: format!(
            "init=/bench bench.work=frag bench.runs={}",
            if quick { 1 } else { 3 }
        ),
        extra: Vec::new(),
        disk: None,
        mem: Some(FRAG_MEM),
        numa: 0,
        smp: 1,
        model: None,
    }
}

/// The `move_pages` boot with two NUMA nodes (issue 16), in `make bench`
/// and `bench-migrate`.
fn migrate_boot(quick: bool, icount: bool) -> Boot {
    Boot {
        numa: 2,
        smp: 2,
        model: None,
        ..Boot::plain(
            "migrate",
            format!(
                "init=/bench bench.work=migrate bench.sizes={} bench.runs={}",
                if quick { 16 } else { 64 },
                if quick { 1 } else { 3 }
            ),
            icount,
        )
    }
}

/// `runner bench --frag` (issue 16): the fragmentation workload on our
/// kernel and on Linux 6.12, one boot each ([`frag_tables`]).
pub fn frag_compare(arches: &[Arch], accel: Accel, quick: bool) -> ExitCode {
    let boots = || vec![frag_boot(quick)];
    side_by_side(
        arches,
        accel,
        quick,
        false,
        "bench-frag",
        &boots,
        frag_tables,
    )
}

/// `runner bench --migrate` (issue 16): `move_pages` of 4K, 64K and 2M
/// folios between two NUMA nodes on our kernel and on Linux 6.12, one
/// boot each with `--numa 2` and two CPUs ([`migrate_tables`]); under
/// `--icount` (arm64) the guest clock counts instructions.
pub fn migrate_compare(arches: &[Arch], accel: Accel, quick: bool, icount: bool) -> ExitCode {
    let boots = || vec![migrate_boot(quick, icount)];
    side_by_side(
        arches,
        accel,
        quick,
        icount,
        "bench-migrate",
        &boots,
        migrate_tables,
    )
}

/// `runner bench --cow` (issue 17): fork + one write per 64K in the child
/// over 64K and 2M folios, ours with `large_cow` 1 and 0 against Linux
/// 6.12 ([`cow_tables`]).
pub fn cow_compare(arches: &[Arch], accel: Accel, quick: bool) -> ExitCode {
    let boots = || {
        vec![Boot::plain(
            "cow",
            format!(
                "init=/bench bench.work=cow bench.sizes={} bench.runs={}",
                if quick { 16 } else { 64 },
                if quick { 1 } else { 3 }
            ),
            false,
        )]
    };
    side_by_side(arches, accel, quick, false, "bench-cow", &boots, cow_tables)
}

/// `runner bench --shmem` (issue 18): fault-in of `MAP_SHARED|
/// MAP_ANONYMOUS` memory with 4K, 64K and 2M shmem folios, ours against
/// Linux 6.12 ([`shmem_tables`]); with `icount`, instructions per fault.
pub fn shmem_compare(arches: &[Arch], accel: Accel, quick: bool, icount: bool) -> ExitCode {
    let boots = || {
        vec![Boot::plain(
            "shfault",
            format!(
                "init=/bench bench.work=shfault bench.configs=4K,64K,2M bench.sizes=256 bench.runs={}",
                if quick { 1 } else { 3 }
            ),
            icount,
        )]
    };
    side_by_side(
        arches,
        accel,
        quick,
        icount,
        "bench-shmem",
        &boots,
        shmem_tables,
    )
}

/// The heading of a side-by-side table of `work` (`## <arch> <title>, <N>
/// MiB region — ours (…) vs Linux; accel (QEMU)`) and the region size; with
/// no figure of ours, `## <arch> <none>: no figures` and the info lines
/// starting with `info`, and `None`.
fn table_heading(
    s: &mut String,
    r: &ArchResult,
    lx: Option<&ArchResult>,
    work: &str,
    title: &str,
    none: &str,
    info: &str,
) -> Option<u64> {
    let linux_name = lx.map(|l| l.kernel.as_str()).unwrap_or("Linux: not run");
    let Some(mib) = r.recs.iter().find(|x| x.work == work).map(|x| x.mib) else {
        let _ = writeln!(s, "## {} {none}: no figures\n", r.arch.name());
        info_lines(s, r, None, &[info]);
        return None;
    };
    let _ = writeln!(
        s,
        "## {} {title}, {} MiB region — ours ({}) vs {}; {} ({})\n",
        r.arch.name(),
        mib,
        r.kernel,
        linux_name,
        accel_desc(r),
        r.qemu
    );
    Some(mib)
}

/// Shared anonymous fault-in tables: per folio size, faults and ms per
/// GiB, ours beside Linux 6.12; under `-icount shift=0` guest ns per fault
/// are instructions (+ idle) per fault on both kernels, and ours also from
/// its INST_RETIRED counter.
fn shmem_tables(r: &ArchResult, lx: Option<&ArchResult>) -> String {
    let mut s = String::new();
    let Some(mib) = table_heading(
        &mut s,
        r,
        lx,
        "shfault",
        "fault-in of MAP_SHARED|MAP_ANONYMOUS memory",
        "shared-memory fault-in",
        "skip shfault",
    ) else {
        return s;
    };
    let _ = writeln!(
        s,
        "One write per 4K page of a 2 MiB-aligned shared anonymous mapping; the folio size is chosen with the per-size `shmem_enabled` knobs (that size `always`, the rest and the top level `never`); median (min–max) of the runs. Under -icount shift=0 ns per fault = instructions (+ idle) per fault on both kernels.\n"
    );
    let _ = writeln!(
        s,
        "| size | faults/GiB ours | Linux | ms/GiB ours | Linux | ours/Linux | instr/fault ours | ns/fault ours | Linux | ours/Linux |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for cfg in ["4K", "64K", "2M"] {
        let g = |m: &str| r.get("shfault", cfg, mib, m);
        let l = |m: &str| lx.and_then(|x| x.get("shfault", cfg, mib, m));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cfg,
            cell(g("faults_per_gib")),
            cell(l("faults_per_gib")),
            cell(g("ms_per_gib")),
            cell(l("ms_per_gib")),
            ratio(g("ms_per_gib"), l("ms_per_gib")),
            cell(g("pmu:instructions_per_fault")),
            cell(g("ns_per_fault")),
            cell(l("ns_per_fault")),
            ratio(g("ns_per_fault"), l("ns_per_fault")),
        );
    }
    s.push('\n');
    info_lines(&mut s, r, lx, &["skip shfault"]);
    s
}

/// `runner bench --reserve` (issue 17 part 3): reservations with in-place
/// promotion against eager THP and 4K pages, ours and Linux 6.12
/// ([`reserve_tables`]); with `icount`, guest ns are instructions.
pub fn reserve_compare(arches: &[Arch], accel: Accel, quick: bool, icount: bool) -> ExitCode {
    let boots = || {
        vec![Boot::plain(
            "reserve",
            format!(
                "init=/bench bench.work=reserve bench.sizes={} bench.runs={}",
                if quick { 16 } else { 64 },
                if quick { 1 } else { 3 }
            ),
            icount,
        )]
    };
    side_by_side(
        arches,
        accel,
        quick,
        icount,
        "bench-reserve",
        &boots,
        reserve_tables,
    )
}

/// Reservation tables: per block size, RSS after one write per block, the
/// cost of populating page by page, of each block's last fault, and the
/// translation entries after, for reservations (ours), eager THP and 4K
/// (ours and Linux).
fn reserve_tables(r: &ArchResult, lx: Option<&ArchResult>) -> String {
    let mut s = String::new();
    let Some(mib) = table_heading(
        &mut s,
        r,
        lx,
        "reserve",
        "reservations with in-place promotion",
        "reservations",
        "reserve",
    ) else {
        return s;
    };
    let _ = writeln!(
        s,
        "One write at the first page of every block, then Rss; then every other page of each block in address order (µs per 2 MiB populated), the block's last page timed alone (with reservations: the promoting fault); then `TlbEntries` (ours only). Under -icount shift=0, µs are thousands of instructions (+ idle). Copy: 2 MiB `memcpy` in user space, the reference for the promotion's cost. Median (min–max).\n"
    );
    let _ = writeln!(
        s,
        "| block | mode | Rss after 1 write/block (KiB) | µs to populate 2 MiB | µs last fault | entries after |\n|---|---|---|---|---|---|"
    );
    for kb in ["64K", "2M"] {
        let rows: [(&str, Option<&ArchResult>, String); 5] = [
            ("ours, reserve=1", Some(r), format!("{kb}-resv")),
            ("ours, THP always", Some(r), format!("{kb}-thp")),
            ("ours, 4K", Some(r), format!("{kb}-4k")),
            ("Linux 6.12, THP always", lx, format!("{kb}-thp")),
            ("Linux 6.12, 4K", lx, format!("{kb}-4k")),
        ];
        for (what, src, cfg) in rows {
            let g = |m: &str| src.and_then(|x| x.get("reserve", &cfg, mib, m));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                kb,
                what,
                cell(g("sparse_rss_kb")),
                cell(g("us_populate_per_2m")),
                cell(g("us_last_fault")),
                cell(g("tlb_entries")),
            );
        }
    }
    let copy_ours = r.get("reserve", "2M-copy", mib, "us_copy_2m");
    let copy_linux = lx.and_then(|x| x.get("reserve", "2M-copy", mib, "us_copy_2m"));
    let _ = writeln!(
        s,
        "\n2 MiB copy: ours {} µs, Linux {} µs.\n",
        cell(copy_ours),
        cell(copy_linux)
    );
    info_lines(&mut s, r, lx, &["reserve"]);
    s
}

/// Large COW tables: per folio size, the child's translation entries after
/// one write per 64K, the time of those writes and of a full rewrite, and
/// the memory the copies took: ours with large COW, ours with 4K COW,
/// Linux.
fn cow_tables(r: &ArchResult, lx: Option<&ArchResult>) -> String {
    let mut s = String::new();
    let Some(mib) = table_heading(
        &mut s,
        r,
        lx,
        "cow",
        "fork + one write per 64K in the child",
        "large COW",
        "cow",
    ) else {
        return s;
    };
    let _ = writeln!(
        s,
        "The child writes one word per 64 KiB (its COW faults), then rewrites every word. Entries: the child's `TlbEntries` (ours only; the parent had as many as the 64K/2M mapping before the fork). Extra KiB: the `MemFree` drop over the writes. Median (min–max).\n"
    );
    let _ = writeln!(
        s,
        "| size | COW | child entries | writes µs | rewrite µs | extra KiB |\n|---|---|---|---|---|---|"
    );
    for kb in ["64K", "2M"] {
        let rows: [(&str, Option<&ArchResult>, String); 3] = [
            ("ours, large_cow=1", Some(r), format!("{kb}-lcow")),
            ("ours, large_cow=0", Some(r), format!("{kb}-4kcow")),
            ("Linux 6.12", lx, kb.to_string()),
        ];
        for (what, src, cfg) in rows {
            let g = |m: &str| src.and_then(|x| x.get("cow", &cfg, mib, m));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                kb,
                what,
                cell(g("child_tlb_entries")),
                cell(g("us_child_writes")),
                cell(g("us_child_rewrite")),
                cell(g("extra_kb")),
            );
        }
    }
    s.push('\n');
    info_lines(&mut s, r, lx, &["cow"]);
    s
}

/// The info lines of both kernels' runs that start with one of `prefixes`,
/// as a list under a side-by-side table (what each run skipped and why).
fn info_lines(s: &mut String, r: &ArchResult, lx: Option<&ArchResult>, prefixes: &[&str]) {
    let lines = r
        .info
        .iter()
        .chain(lx.into_iter().flat_map(|l| l.info.iter()));
    for l in lines.filter(|l| prefixes.iter().any(|p| l.starts_with(p))) {
        let _ = writeln!(s, "- {l}");
    }
}

/// Migration tables: MiB/s per folio size each way between the nodes,
/// instructions per MiB (ours from its counter, both as guest ns per MiB
/// under `-icount shift=0`), and the fraction of pages that arrived.
fn migrate_tables(r: &ArchResult, lx: Option<&ArchResult>) -> String {
    let mut s = String::new();
    let linux_name = lx.map(|l| l.kernel.as_str()).unwrap_or("Linux: not run");
    let Some(mib) = r.recs.iter().find(|x| x.work == "migrate").map(|x| x.mib) else {
        let _ = writeln!(s, "## {} migration: no figures\n", r.arch.name());
        for l in r.info.iter().filter(|l| l.starts_with("migrate")) {
            let _ = writeln!(s, "- {l}");
        }
        return s;
    };
    let lget = |c: &str, m: &str| lx.and_then(|l| l.get("migrate", c, mib, m));
    let _ = writeln!(
        s,
        "## {} migration between two NUMA nodes, {} MiB region — ours ({}) vs {}; {} ({}), -numa 2, -smp 2\n",
        r.arch.name(),
        mib,
        r.kernel,
        linux_name,
        accel_desc(r),
        r.qemu
    );
    let _ = writeln!(
        s,
        "move_pages(MPOL_MF_MOVE) with one address per folio to the other node, then back (two samples per run); median (min–max). MiB/s from the guest's clock_gettime; under -icount shift=0 ns per MiB = instructions (+ idle) per MiB on both kernels; ours also from its INST_RETIRED counter.\n"
    );
    let _ = writeln!(
        s,
        "| size | MiB/s ours | Linux | ours/Linux | instr/MiB ours | icount-ns/MiB ours | Linux | ours/Linux | arrived ours | Linux |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let ns = icount_ns;
    let f = opt_cell;
    let icount = r.info.iter().any(|l| l.contains("icount"));
    for cfg in ["4K", "64K", "2M"] {
        let g = |m: &str| r.get("migrate", cfg, mib, m);
        let l = |m: &str| lget(cfg, m);
        let (on, ln) = if icount {
            (ns(g("mib_per_s")), ns(l("mib_per_s")))
        } else {
            (None, None)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cfg,
            cell(g("mib_per_s")),
            cell(l("mib_per_s")),
            ratio(g("mib_per_s"), l("mib_per_s")),
            cell(g("pmu:instructions_per_mib")),
            f(on),
            f(ln),
            match (on, ln) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "–".into(),
            },
            cell(g("arrived_fraction")),
            cell(l("arrived_fraction")),
        );
    }
    s.push('\n');
    info_lines(&mut s, r, lx, &["migrate", "skip migrate"]);
    s
}

/// Runs `boots` on our kernel and on Linux 6.12 for each arch, prints the
/// report `tables` makes of both, and writes it to
/// `target/bench/<stem>-<arches>-<mode>.md`.
fn side_by_side(
    arches: &[Arch],
    accel: Accel,
    quick: bool,
    icount: bool,
    stem: &str,
    boots: &dyn Fn() -> Vec<Boot>,
    tables: fn(&ArchResult, Option<&ArchResult>) -> String,
) -> ExitCode {
    let out_dir = qemu::workspace_root().join("target").join("bench");
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("{}: {e}", out_dir.display());
        return ExitCode::FAILURE;
    }
    let mut report = String::new();
    let mut ok = true;
    for &arch in arches {
        if icount && (arch != Arch::Aarch64 || accel != Accel::Tcg) {
            println!("== {}: -icount is for arm64 TCG only; skipped", arch.name());
            continue;
        }
        let boots = boots();
        let ours = match run_arch(arch, accel, quick, &boots, None) {
            Ok(r) => r,
            Err(e) => {
                println!("== {}: {e}", arch.name());
                return ExitCode::FAILURE;
            }
        };
        let lx = match crate::linux::kernel(arch) {
            Some(k) => match run_arch(arch, accel, quick, &boots, Some(k)) {
                Ok(r) => Some(r),
                Err(e) => {
                    println!("== {} (Linux): {e}", arch.name());
                    None
                }
            },
            None => {
                println!(
                    "== {}: {}; Linux side skipped",
                    arch.name(),
                    crate::linux::missing(arch)
                );
                None
            }
        };
        report.push_str(&tables(&ours, lx.as_ref()));
        for r in std::iter::once(&ours).chain(lx.as_ref()) {
            for e in &r.errors {
                ok = false;
                let _ = writeln!(report, "ERROR ({}, {}): {e}", r.arch.name(), r.kernel);
            }
        }
    }
    println!("\n{report}");
    let stem = format!(
        "{stem}-{}-{}",
        arches
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join("+"),
        if icount {
            "icount"
        } else if quick {
            "quick"
        } else {
            "full"
        }
    );
    let p = out_dir.join(format!("{stem}.md"));
    match std::fs::write(&p, &report) {
        Ok(()) => println!("wrote {}", p.display()),
        Err(e) => eprintln!("{}: {e}", p.display()),
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Fragmentation tables: per target size and mode, the fraction of faults
/// served at that size after the churn, fault-in time and pages migrated,
/// ours beside Linux 6.12.
fn frag_tables(r: &ArchResult, lx: Option<&ArchResult>) -> String {
    let mut s = String::new();
    let linux_name = lx.map(|l| l.kernel.as_str()).unwrap_or("Linux: not run");
    let Some(mib) = r.recs.iter().find(|x| x.work == "frag").map(|x| x.mib) else {
        let _ = writeln!(s, "## {} fragmentation: no figures\n", r.arch.name());
        return s;
    };
    // Each kernel's target region is 3/8 of its own free memory after
    // boot, so Linux's has its own size (both named in the notes below).
    let lmib = lx.and_then(|l| l.recs.iter().find(|x| x.work == "frag").map(|x| x.mib));
    let lget = |c: &str, m: &str| lx.and_then(|l| l.get("frag", c, lmib?, m));
    let _ = writeln!(
        s,
        "## {} fragmentation, {} MiB target region after churn (Linux: {} MiB) — ours ({}) vs {}; {} ({}), -m {}\n",
        r.arch.name(),
        mib,
        lmib.map_or_else(|| "–".to_string(), |m| m.to_string()),
        r.kernel,
        linux_name,
        accel_desc(r),
        r.qemu,
        FRAG_MEM
    );
    let _ = writeln!(
        s,
        "{}. Served: per-size anon_fault_alloc / (anon_fault_alloc + anon_fault_fallback) while faulting the target region with only that size enabled; median (min–max) over runs, each with a fresh churn. Modes: plain = defrag=never and compaction_proactiveness=0 (no compaction at all); compact_memory = echo 1 > /proc/sys/vm/compact_memory after the churn; defrag = defrag=always (direct compaction in the fault path); kcompactd's proactive runs stay on in both.\n",
        r.info_value("frag fill").unwrap_or("")
    );
    let _ = writeln!(
        s,
        "| size | mode | served ours | served Linux | fault-in µs ours | Linux | pages migrated ours | Linux |\n|---|---|---|---|---|---|---|---|"
    );
    for cfg in ["64K", "2M"] {
        for mode in ["plain", "compact_memory", "defrag"] {
            let m = |k: &str| format!("{k}_{mode}");
            let g = |k: &str| r.get("frag", cfg, mib, &m(k));
            let l = |k: &str| lget(cfg, &m(k));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                cfg,
                mode,
                cell(g("served_fraction")),
                cell(l("served_fraction")),
                cell(g("faultin_us")),
                cell(l("faultin_us")),
                cell(g("migrated_pages")),
                cell(l("migrated_pages")),
            );
        }
    }
    s.push('\n');
    info_lines(&mut s, r, lx, &["frag"]);
    s
}

/// Guest ns per MiB of a MiB/s record: under `-icount shift=0`, the
/// instructions (plus idle) per MiB.
fn icount_ns(x: Option<&Rec>) -> Option<f64> {
    x.map(|x| 1e9 / x.med)
}

/// A figure, or "–" when there is none.
fn opt_cell(v: Option<f64>) -> String {
    v.map(fmt_v).unwrap_or_else(|| "–".into())
}

/// `a / b` to two places, or "–".
fn opt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

/// Swap tables: MiB/s per direction and folio size, the fraction of folios
/// swapped out without a split, instructions per MiB under `-icount`, and
/// the pressure run; `lx` (Linux 6.12, same /bench) beside ours when given.
fn swap_tables(r: &ArchResult, lx: Option<&ArchResult>) -> String {
    let mut s = String::new();
    let mibs: Vec<u64> = {
        let mut v: Vec<u64> = r
            .recs
            .iter()
            .filter(|x| x.work == "swapout")
            .map(|x| x.mib)
            .collect();
        v.dedup();
        v
    };
    let lget = |w: &str, c: &str, mib: u64, m: &str| lx.and_then(|l| l.get(w, c, mib, m));
    let linux_name = lx.map(|l| l.kernel.as_str()).unwrap_or("Linux: not run");
    for &mib in &mibs {
        let _ = writeln!(
            s,
            "## {} swap, {} MiB region — ours ({}) vs {}; {} ({}), -smp {}\n",
            r.arch.name(),
            mib,
            r.kernel,
            linux_name,
            accel_desc(r),
            r.qemu,
            SWAP_SMP
        );
        let _ = writeln!(
            s,
            "MADV_PAGEOUT of a filled region (out), then one read per 4K page (in, data verified); guest clock_gettime(CLOCK_MONOTONIC); median (min–max) of 3 runs. Without split: per-size stats swpout / (swpout + swpout_fallback) (4K: pswpout, never split). The in columns are swap-cache hits (the folios are still in the swap cache right after MADV_PAGEOUT on both kernels); swap-in from the disk: the cold table below.\n"
        );
        let _ = writeln!(
            s,
            "| size | out MiB/s ours | out Linux | ours/Linux | in MiB/s ours | in Linux | ours/Linux | without split ours | Linux | pgmajfault in ours | Linux |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for cfg in ["4K", "64K", "2M"] {
            let g = |w: &str, m: &str| r.get(w, cfg, mib, m);
            let l = |w: &str, m: &str| lget(w, cfg, mib, m);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cfg,
                cell(g("swapout", "mib_per_s")),
                cell(l("swapout", "mib_per_s")),
                ratio(g("swapout", "mib_per_s"), l("swapout", "mib_per_s")),
                cell(g("swapin", "mib_per_s")),
                cell(l("swapin", "mib_per_s")),
                ratio(g("swapin", "mib_per_s"), l("swapin", "mib_per_s")),
                cell(g("swapout", "whole_fraction")),
                cell(l("swapout", "whole_fraction")),
                g("swapin", "pgmajfault")
                    .map(|x| fmt_v(x.med))
                    .unwrap_or_else(|| "–".into()),
                l("swapin", "pgmajfault")
                    .map(|x| fmt_v(x.med))
                    .unwrap_or_else(|| "–".into()),
            );
        }
        s.push('\n');
        // Under -icount shift=0 the guest clock advances 1 ns per
        // instruction, so ns per MiB is instructions (plus idle time
        // waiting for the disk) per MiB on both kernels, read the same
        // way; ours also counts INST_RETIRED (idle excluded) itself.
        if r.get("swapout", "4K", mib, "pmu:instructions_per_mib")
            .is_some()
            || r.info.iter().any(|l| l.contains("icount"))
        {
            let _ = writeln!(
                s,
                "Instructions per MiB, arm64 TCG -icount shift=0, -smp {SWAP_SMP}: ours INST_RETIRED via /sys/kernel/debug/mthp/perf (user+kernel, idle excluded; the CPU the benchmark started on, and only runs that also ended there); both kernels also as guest ns per MiB (= instructions of all CPUs, run in turn by QEMU, + idle waiting for the disk under shift=0).\n"
            );
            let _ = writeln!(
                s,
                "| size | out instr/MiB ours | out icount-ns/MiB ours | Linux | ours/Linux | in instr/MiB ours | in icount-ns/MiB ours | Linux | ours/Linux |\n|---|---|---|---|---|---|---|---|---|"
            );
            let ns = icount_ns;
            let f = opt_cell;
            let rt = opt_ratio;
            for cfg in ["4K", "64K", "2M"] {
                let g = |w: &str, m: &str| r.get(w, cfg, mib, m);
                let l = |w: &str, m: &str| lget(w, cfg, mib, m);
                let (on, ln) = (ns(g("swapout", "mib_per_s")), ns(l("swapout", "mib_per_s")));
                let (inn, lin) = (ns(g("swapin", "mib_per_s")), ns(l("swapin", "mib_per_s")));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    cfg,
                    cell(g("swapout", "pmu:instructions_per_mib")),
                    f(on),
                    f(ln),
                    rt(on, ln),
                    cell(g("swapin", "pmu:instructions_per_mib")),
                    f(inn),
                    f(lin),
                    rt(inn, lin),
                );
            }
            s.push('\n');
        }
    }
    cold_table(&mut s, r, lx);
    let pmibs: Vec<u64> = {
        let mut v: Vec<u64> = r
            .recs
            .iter()
            .filter(|x| x.work == "pressure")
            .map(|x| x.mib)
            .collect();
        v.dedup();
        v
    };
    for &mib in &pmibs {
        let _ = writeln!(
            s,
            "## {} memory pressure — {} MiB working set (1.5x -m {}: the same on both kernels), ours vs {}\n",
            r.arch.name(),
            mib,
            PRESSURE_MEM,
            linux_name
        );
        let _ = writeln!(
            s,
            "{}; random 8-byte writes over the set after one untimed fill; time of the random phase, major faults ru_majflt and /proc/vmstat pgmajfault.\n",
            r.info_value("pressure").unwrap_or("")
        );
        let _ = writeln!(
            s,
            "| size | ms ours | ms Linux | ours/Linux | majflt ours | majflt Linux | pgmajfault ours | pgmajfault Linux |\n|---|---|---|---|---|---|---|---|"
        );
        for cfg in ["4K", "64K"] {
            let g = |m: &str| r.get("pressure", cfg, mib, m);
            let l = |m: &str| lget("pressure", cfg, mib, m);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                cfg,
                cell(g("ms")),
                cell(l("ms")),
                ratio(g("ms"), l("ms")),
                cell(g("majflt")),
                cell(l("majflt")),
                cell(g("pgmajfault")),
                cell(l("pgmajfault")),
            );
        }
        s.push('\n');
    }
    info_lines(
        &mut s,
        r,
        lx,
        &["swap", "pressure", "skip swap", "skip pressure"],
    );
    s
}

/// The cold swap-in table of [`swap_tables`]: MiB/s of swap-in from the
/// disk ours vs Linux, the fraction of the region's pages read from it,
/// major faults and the swap cache the pressure left, and under `-icount`
/// guest ns per MiB as the swap table reads them.
fn cold_table(s: &mut String, r: &ArchResult, lx: Option<&ArchResult>) {
    let mibs: Vec<u64> = {
        let mut v: Vec<u64> = r
            .recs
            .iter()
            .filter(|x| x.work == "swapin_cold")
            .map(|x| x.mib)
            .collect();
        v.dedup();
        v
    };
    let linux_name = lx.map(|l| l.kernel.as_str()).unwrap_or("Linux: not run");
    for &mib in &mibs {
        let g = |c: &str, m: &str| r.get("swapin_cold", c, mib, m);
        let l = |c: &str, m: &str| lx.and_then(|l| l.get("swapin_cold", c, mib, m));
        let _ = writeln!(
            s,
            "## {} cold swap-in (from the disk), {} MiB region — ours ({}) vs {}; {} ({}), -m {}, -smp {}\n",
            r.arch.name(),
            mib,
            r.kernel,
            linux_name,
            accel_desc(r),
            r.qemu,
            SWAP_COLD_MEM,
            SWAP_SMP
        );
        let _ = writeln!(
            s,
            "A boot of its own (-m {SWAP_COLD_MEM}, {} MiB swap disk, the same on both kernels). Per run: the region filled as in the swap table, MADV_PAGEOUT, wait until /proc/meminfo Writeback: is 0, then a forked child writes MemFree + 2x the region + 16 MiB of 4K pages and exits, so reclaim drops the clean swap-cache folios; then one read per 4K page (timed, data verified after). Unlike the swap table's in columns (swap-cache hits, pgmajfault 0), these pages come from the disk. From disk: /proc/vmstat pswpin during the reads / pages of the region (readahead included, at most 1). Swap cache left: SwapCached: after the pressure. Median (min–max) of 3 runs.\n",
            SWAP_COLD_DISK >> 20
        );
        let _ = writeln!(
            s,
            "| size | in MiB/s ours | Linux | ours/Linux | from disk ours | Linux | pgmajfault ours | Linux | swap cache left kB ours | Linux |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for cfg in ["4K", "64K", "2M"] {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cfg,
                cell(g(cfg, "mib_per_s")),
                cell(l(cfg, "mib_per_s")),
                ratio(g(cfg, "mib_per_s"), l(cfg, "mib_per_s")),
                cell(g(cfg, "from_disk_fraction")),
                cell(l(cfg, "from_disk_fraction")),
                cell(g(cfg, "pgmajfault")),
                cell(l(cfg, "pgmajfault")),
                cell(g(cfg, "swapcached_kb")),
                cell(l(cfg, "swapcached_kb")),
            );
        }
        s.push('\n');
        if g("4K", "pmu:instructions_per_mib").is_some()
            || r.info.iter().any(|l| l.contains("icount"))
        {
            let _ = writeln!(
                s,
                "Cold swap-in per MiB under arm64 TCG -icount shift=0, -smp {SWAP_SMP}: ours INST_RETIRED as in the swap table; both kernels as guest ns per MiB (1e9 / MiB/s: instructions of all CPUs + idle waiting for the disk).\n"
            );
            let _ = writeln!(
                s,
                "| size | instr/MiB ours | icount-ns/MiB ours | Linux | ours/Linux |\n|---|---|---|---|---|"
            );
            let ns = icount_ns;
            let f = opt_cell;
            for cfg in ["4K", "64K", "2M"] {
                let (o, lv) = (ns(g(cfg, "mib_per_s")), ns(l(cfg, "mib_per_s")));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    cfg,
                    cell(g(cfg, "pmu:instructions_per_mib")),
                    f(o),
                    f(lv),
                    opt_ratio(o, lv),
                );
            }
            s.push('\n');
        }
    }
}

fn run_arch(
    arch: Arch,
    accel: Accel,
    quick: bool,
    boots: &[Boot],
    linux: Option<PathBuf>,
) -> Result<ArchResult, String> {
    let mut kernel = qemu::build_kernel(arch, "release", "")?;
    if arch == Arch::Aarch64 {
        kernel = qemu::arm64_image(&kernel)?;
    }
    let mut initrd = crate::initramfs::build(arch)?;
    if linux.is_some() {
        initrd = crate::linux::initrd(arch)?;
    }
    let qv = Command::new(match arch {
        Arch::X86_64 => "qemu-system-x86_64",
        Arch::Aarch64 => "qemu-system-aarch64",
    })
    .arg("--version")
    .output()
    .map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
    .unwrap_or_default();
    let mut res = ArchResult {
        arch,
        accel,
        recs: Vec::new(),
        info: Vec::new(),
        errors: Vec::new(),
        qemu: qv,
        kernel: match &linux {
            Some(k) => format!(
                "{} (same /bench binary as its first process)",
                crate::linux::describe(k)
            ),
            None => "mthp kernel".into(),
        },
    };
    for b in boots {
        let mut spec = RunSpec::new(arch, accel, kernel.clone(), &b.cmdline);
        spec.initrd = Some(initrd.clone());
        spec.mem = b.mem.unwrap_or("2G").into();
        spec.extra_args = b.extra.clone();
        spec.numa = b.numa;
        spec.smp = b.smp;
        // Kept until QEMU exits (the image is removed on drop).
        let _disk = match b.disk {
            Some(bytes) => {
                let d = qemu::swap_disk_of(arch, bytes)?;
                spec.disk = Some(d.0.clone());
                Some(d)
            }
            None => None,
        };
        let accel_word = match accel {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        };
        match &linux {
            None => spec.cmdline = format!("loglevel=warn {}", spec.cmdline),
            Some(k) => {
                // Debian's kernel with the same /bench as rdinit, the QEMU
                // set-up of every comparison with Linux (linux.rs).
                crate::linux::comparable(&mut spec);
                spec.mem = b.mem.unwrap_or("2G").into();
                // With a disk, /linux-init runs /bench: it loads Debian's
                // virtio_mmio/virtio_blk modules and waits for /dev/vda
                // (`mthp_disk=1`), which a bare rdinit=/bench would not.
                if b.disk.is_some() {
                    spec.cmdline = format!("mthp_disk=1 {}", spec.cmdline);
                }
                // A model boot goes through /linux-init too: it drops the
                // `nokaslr` the model appends, which x86 Linux would hand
                // to /bench as an argument.
                crate::linux::apply(&mut spec, k, &initrd, b.disk.is_some() || b.model.is_some());
            }
        }
        let model_out = b.model.map(|config| {
            let out = qemu::workspace_root().join("target/bench").join(format!(
                "{}-{}-{}.csv",
                b.label,
                arch.name(),
                if linux.is_some() { "linux" } else { "mthp" }
            ));
            let _ = std::fs::remove_file(&out);
            spec.tlb_model = Some(crate::tlbmodel::TlbModel {
                config: config.into(),
                linux: linux.is_some(),
                out: out.clone(),
            });
            out
        });
        println!(
            "== bench {} ({}, {accel_word}): {}",
            arch.name(),
            b.label,
            qemu::show(&spec.command())
        );
        let timeout = Duration::from_secs(if quick { 1200 } else { 5400 });
        let mut done = false;
        let out = qemu::boot(&spec, timeout, |l| {
            if l.starts_with("bench") || l.contains("PANIC") || l.contains("FAILED") {
                println!("  {l}");
            }
        })?;
        for l in &out.lines {
            if l == "bench done" {
                done = true;
            } else if model_out.is_some() {
                // A model boot's own timings are TCG-with-plugin times.
                continue;
            } else if let Some(i) = l.strip_prefix("bench-info ") {
                res.info.push(i.to_string());
            } else if let Some(r) = parse_rec(l) {
                res.recs.push(r);
            }
        }
        if let Some(path) = &model_out {
            match crate::tlbmodel::read_phases(path, &out.lines) {
                Ok(phases) => {
                    for p in phases {
                        if p.anomalies > 0 {
                            res.info.push(format!(
                                "model_anomaly {} {} {} MiB: {} accesses unreadable or walked to another address than QEMU's (see {})",
                                p.workload,
                                p.config,
                                p.mib,
                                p.anomalies,
                                path.display()
                            ));
                        }
                        for (metric, v) in p.figures() {
                            res.recs.push(Rec {
                                work: p.workload.clone(),
                                cfg: p.config.clone(),
                                mib: p.mib,
                                metric: metric.into(),
                                med: v,
                                min: v,
                                max: v,
                            });
                        }
                    }
                }
                Err(e) => res
                    .errors
                    .push(format!("boot '{}': TLB model report: {e}", b.label)),
            }
        }
        println!(
            "== {} ({}) finished in {:.1} s",
            arch.name(),
            b.label,
            out.elapsed.as_secs_f64()
        );
        if !done {
            let tail: Vec<&String> = out.lines.iter().rev().take(15).collect();
            res.errors.push(format!(
                "boot '{}' ended without 'bench done' (QEMU status {:?}); last lines:\n{}",
                b.label,
                out.status,
                tail.into_iter()
                    .rev()
                    .map(|s| format!("    {s}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    Ok(res)
}

/// Who produced a figure.
fn source_of(r: &ArchResult, x: &Rec) -> String {
    let accel = match r.accel {
        Accel::Tcg => "QEMU TCG",
        Accel::Kvm => "KVM (kvm-pvm: guest ring 3 native, ring 0 emulated)",
    };
    if x.metric.starts_with("model:") {
        format!(
            "TLB model {} (tools/tlb-model: QEMU 10 TCG plugin walking the guest's page tables; a model, not a CPU)",
            model_config(r.arch, &x.cfg)
        )
    } else if x.metric.starts_with("pmu:") {
        format!(
            "{accel}; PMU via /sys/kernel/debug/mthp/perf: {}",
            r.info_value("pmu_source").unwrap_or("?")
        )
    } else if x.work == "map" {
        "/proc/self/smaps (kernel page-table walk; 4K PTE, contpte block and PMD count 1 each)"
            .into()
    } else if x.metric.starts_with("faults") {
        "getrusage ru_minflt".into()
    } else {
        format!("{accel}; guest clock_gettime(CLOCK_MONOTONIC)")
    }
}

/// A figure with the precision its size deserves (shared with `faultcmp`).
pub(crate) fn fmt_v(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(r: Option<&Rec>) -> String {
    match r {
        Some(r) => format!("{} ({}–{})", fmt_v(r.med), fmt_v(r.min), fmt_v(r.max)),
        None => "–".into(),
    }
}

fn ratio(r: Option<&Rec>, base: Option<&Rec>) -> String {
    match (r, base) {
        (Some(a), Some(b)) if b.med > 0.0 => format!("{:.2}", a.med / b.med),
        _ => "–".into(),
    }
}

fn configs_of(r: &ArchResult) -> Vec<String> {
    let mut v: Vec<String> = r
        .recs
        .iter()
        .filter(|x| {
            x.work != "collapse" && x.work != "copy" && x.work != "split" && x.work != "cow"
        })
        .map(|x| x.cfg.clone())
        .collect();
    v.sort_by_key(|c| cfg_rank(c));
    v.dedup();
    v
}

fn sizes_of(r: &ArchResult) -> Vec<u64> {
    let mut v: Vec<u64> = r
        .recs
        .iter()
        .filter(|x| x.work == "chase" || x.work == "fault" || x.work == "stream")
        .map(|x| x.mib)
        .collect();
    v.sort();
    v.dedup();
    v
}

fn accel_desc(r: &ArchResult) -> &'static str {
    match r.accel {
        Accel::Tcg => "TCG",
        Accel::Kvm => "KVM",
    }
}

/// The per-arch tables (markdown); the TLB model's walks per 1000 loads of
/// both kernels beside the PMU columns.
fn arch_tables(r: &ArchResult, m: &Model) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## {} — {}, {} ({}, -m 2G, 1 vCPU)\n",
        r.arch.name(),
        r.kernel,
        accel_desc(r),
        r.qemu
    );
    let _ = writeln!(
        s,
        "Medians of {} runs with (min–max). Times: the guest's clock_gettime(CLOCK_MONOTONIC) under {}; faults: getrusage ru_minflt; entries: TlbEntries of /proc/self/smaps (kernel walk of the real page tables: a 4K PTE, a contpte block and a PMD count 1 each); ×4K: median over the 4K median at the same size.\n",
        r.info_value("params")
            .and_then(|p| p.split_whitespace().find_map(|w| w.strip_prefix("runs=")))
            .unwrap_or("?"),
        accel_desc(r)
    );
    let pmu_metrics: Vec<String> = {
        let mut v: Vec<String> = r
            .recs
            .iter()
            .filter(|x| x.metric.starts_with("pmu:") && x.work == "chase")
            .map(|x| x.metric.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    for mib in sizes_of(r) {
        let _ = writeln!(s, "### {} — {} MiB\n", r.arch.name(), mib);
        let mut hdr = String::from(
            "| map | chase ns/access | ×4K | stream ns/access | ×4K | fault ms/GiB | ×4K | faults/GiB | ns/fault | entries |",
        );
        let mut sep = String::from("|---|---|---|---|---|---|---|---|---|---|");
        for m in &pmu_metrics {
            let _ = write!(hdr, " chase {} |", m.trim_start_matches("pmu:"));
            sep.push_str("---|");
        }
        for h in MODEL_COLUMNS {
            let _ = write!(hdr, " {} |", h.0);
            sep.push_str("---|");
        }
        let _ = writeln!(s, "{hdr}\n{sep}");
        for cfg in configs_of(r) {
            let g = |w: &str, m: &str| r.get(w, &cfg, mib, m);
            let b = |w: &str, m: &str| r.get(w, "4K", mib, m);
            if g("chase", "ns_per_access").is_none() && g("fault", "ms_per_gib").is_none() {
                continue;
            }
            let entries = g("map", "tlb_entries")
                .map(|x| format!("{:.0}", x.med))
                .unwrap_or_else(|| "–".into());
            let _ = write!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cfg,
                cell(g("chase", "ns_per_access")),
                ratio(g("chase", "ns_per_access"), b("chase", "ns_per_access")),
                cell(g("stream", "ns_per_access")),
                ratio(g("stream", "ns_per_access"), b("stream", "ns_per_access")),
                cell(g("fault", "ms_per_gib")),
                ratio(g("fault", "ms_per_gib"), b("fault", "ms_per_gib")),
                g("fault", "faults_per_gib")
                    .map(|x| format!("{:.0}", x.med))
                    .unwrap_or_else(|| "–".into()),
                g("fault", "ns_per_fault")
                    .map(|x| fmt_v(x.med))
                    .unwrap_or_else(|| "–".into()),
                entries
            );
            for m in &pmu_metrics {
                let _ = write!(s, " {} |", cell(g("chase", m)));
            }
            for (_, work, linux) in MODEL_COLUMNS {
                let side = if linux {
                    m.linux.as_ref()
                } else {
                    ours_side(r, m)
                };
                let _ = write!(
                    s,
                    " {} |",
                    model_cell(side, work, &cfg, mib, "model:dtlb_miss_per_kaccess")
                );
            }
            s.push('\n');
        }
        s.push('\n');
    }
    // Counter sources and what is missing.
    let _ = writeln!(s, "Counters ({}):\n", r.arch.name());
    let _ = writeln!(s, "- accelerator: {}", source_accel(r));
    let _ = writeln!(
        s,
        "- model: page walks per 1000 loads of the TLB model {} (QEMU 10 TCG plugin, tools/tlb-model; a model, not a CPU), our kernel and Linux 6.12 booted under it; `–`: size not modelled (64 MiB and 1 GiB only); table below",
        model_config(r.arch, "4K")
    );
    match r.info_value("pmu_source") {
        Some(src) => {
            let _ = writeln!(s, "- PMU source: {src}");
        }
        None => {
            if let Some(u) = r.info_value("pmu") {
                let _ = writeln!(s, "- PMU: {u}");
            }
        }
    }
    let mut seen = Vec::new();
    for l in &r.info {
        if let Some(e) = l.strip_prefix("pmu_event ")
            && !seen.contains(&e)
        {
            seen.push(e);
            let _ = writeln!(s, "- PMU event {e}");
        }
    }
    for l in &r.info {
        if l.starts_with("skip ") || l.starts_with("tlb_entries ") || l.starts_with("smaps ") {
            let _ = writeln!(s, "- {l}");
        }
    }
    s.push('\n');
    s
}

/// The model columns of the main tables: heading, workload, Linux's side.
const MODEL_COLUMNS: [(&str, &str, bool); 4] = [
    ("chase model:dtlb_miss_per_kaccess", "chase", false),
    ("Linux chase model:dtlb_miss_per_kaccess", "chase", true),
    ("stream model:dtlb_miss_per_kaccess", "stream", false),
    ("Linux stream model:dtlb_miss_per_kaccess", "stream", true),
];

fn source_accel(r: &ArchResult) -> &'static str {
    match (r.accel, r.arch) {
        (Accel::Tcg, _) => {
            "QEMU TCG: fault counts, translation entries and instruction counts are real; times are emulation times (TCG's software TLB is per 4K page whatever the guest maps, so TLB reach does not show)"
        }
        (Accel::Kvm, _) => {
            "KVM here is kvm-pvm: the workloads run natively in ring 3 (chase/stream are hardware times, shadow-paged by the host), faults go through an emulated ring 0 (fault times are not hardware figures)"
        }
    }
}

/// `-icount` table: instructions per fault.
fn icount_table(r: &ArchResult, linux: Option<&(String, BTreeMap<String, f64>)>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## {} — TCG -icount shift=0 ({}): instructions per fault (exact)\n",
        r.arch.name(),
        r.qemu
    );
    let _ = writeln!(
        s,
        "INST_RETIRED (user+kernel, everything on the CPU while the fault loop runs) over ru_minflt faults, 256 MiB touched one byte per 4K page; median of 3 runs (min–max).\n"
    );
    let _ = writeln!(
        s,
        "| map | faults/GiB | instructions/fault | instructions/4K page | Linux 6.12 instructions/fault | ours/Linux |\n|---|---|---|---|---|---|"
    );
    for cfg in ["4K", "16K", "64K", "2M"] {
        let ipf = r.get("fault", cfg, 256, "pmu:instructions_per_fault");
        let fpg = r.get("fault", cfg, 256, "faults_per_gib");
        let per_page = match (ipf, fpg) {
            (Some(i), Some(f)) if f.med > 0.0 => fmt_v(i.med * f.med / 262_144.0),
            _ => "–".into(),
        };
        let lx = linux.and_then(|(_, m)| m.get(cfg).copied());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            cfg,
            fpg.map(|x| format!("{:.0}", x.med))
                .unwrap_or_else(|| "–".into()),
            cell(ipf),
            per_page,
            lx.map(fmt_v).unwrap_or_else(|| "–".into()),
            match (ipf, lx) {
                (Some(i), Some(l)) if l > 0.0 => format!("{:.2}", i.med / l),
                _ => "–".into(),
            }
        );
    }
    s.push('\n');
    match linux {
        Some((src, _)) => {
            let _ = writeln!(s, "Linux figures: {src}\n");
        }
        None => {
            let _ = writeln!(
                s,
                "Linux figures: none found for a 256 MiB region (run `ICOUNT=1 ../shared/tools/linux-baseline/run.sh aarch64 fm=256`; its log is read from the linux-baseline cache's logs). `runner bench --linux --icount` measures both kernels with the same /bench and QEMU set-up instead.\n"
            );
        }
    }
    if r.get("fault", "4K", 256, "pmu:instructions_per_fault")
        .is_none()
    {
        for l in &r.info {
            if l.starts_with("pmu") {
                let _ = writeln!(s, "- {l}");
            }
        }
    }
    s
}

/// The newest Linux baseline log with `ICOUNT` lines: (description, cfg →
/// instructions per fault).
fn linux_icount() -> Option<(String, BTreeMap<String, f64>)> {
    let dir = std::env::var("LINUX_BASELINE_CACHE")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cache/linux-baseline")))
        .ok()?
        .join("logs");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("aarch64-2") && n.ends_with(".log"))
        })
        .collect();
    logs.sort();
    for p in logs.iter().rev() {
        let text = std::fs::read_to_string(p).ok()?;
        let mut m = BTreeMap::new();
        for l in text.lines() {
            // ICOUNT 4K  256 MiB: min ... => 3282 instr/fault, ...
            let Some(rest) = l.strip_prefix("ICOUNT ") else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let cfg = words.next().unwrap_or("");
            // Only a run over the same region size as ours (256 MiB) is
            // comparable: per-fault costs change with the region (page
            // tables, LRU and reclaim work grow with it).
            if words.next().and_then(|m| m.parse::<u64>().ok()) != Some(256) {
                continue;
            }
            if let Some(v) = rest
                .split("=>")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
            {
                m.insert(cfg.to_string(), v);
            }
        }
        if !m.is_empty() {
            let head = text
                .lines()
                .find(|l| l.starts_with("# linux-baseline"))
                .unwrap_or("")
                .trim_start_matches("# ");
            return Some((format!("{} ({})", head, p.display()), m));
        }
    }
    None
}

/// `cargo run --release -p mm --example bench_alloc` on the host.
fn bench_alloc() -> Vec<String> {
    println!("== host: make bench-alloc (cargo run --release -p mm --example bench_alloc)");
    // The same flags and target directory as `make bench-alloc`: every
    // function 64-byte aligned on both sides, so code layout cannot swing
    // the ratio (see the example's doc comment).
    let root = qemu::workspace_root();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .env("RUSTFLAGS", "-C llvm-args=-align-all-functions=6")
        .env("CARGO_TARGET_DIR", root.join("target/bench-alloc"))
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "mm",
            "--example",
            "bench_alloc",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        Ok(o) => vec![format!(
            "bench_alloc failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )],
        Err(e) => vec![format!("bench_alloc: cannot run cargo: {e}")],
    }
}

/// Allocator (host), collapse and split (guest) figures.
fn other_figures(results: &[ArchResult], alloc: &[String], with_alloc: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Collapse and split (in the guest)\n");
    for r in results {
        let _ = writeln!(s, "{}, {} ({}):\n", r.arch.name(), r.kernel, accel_desc(r));
        let col = r.get("collapse", "2M", 2, "us_per_2m");
        let cp = r.get("copy", "2M", 2, "us_per_2m");
        let _ = writeln!(s, "| figure | µs median (min–max) |\n|---|---|");
        let _ = writeln!(s, "| copy 2 MiB (user memcpy) | {} |", cell(cp));
        let _ = writeln!(s, "| MADV_COLLAPSE of 2 MiB | {} |", cell(col));
        if col.is_some() {
            let _ = writeln!(s, "| collapse / copy | {} |", ratio(col, cp));
        }
        let mut splits: Vec<&Rec> = r.recs.iter().filter(|x| x.work == "split").collect();
        splits.sort_by_key(|x| {
            x.metric
                .trim_start_matches("us_per_split_to_order")
                .parse::<u32>()
                .unwrap_or(0)
        });
        for x in splits {
            let _ = writeln!(
                s,
                "| split 2M → order {} | {} |",
                x.metric.trim_start_matches("us_per_split_to_order"),
                cell(Some(x))
            );
        }
        s.push('\n');
        for l in &r.info {
            if l.starts_with("collapse ") || l.starts_with("split ") {
                let _ = writeln!(s, "- {l}");
            }
        }
        s.push('\n');
    }
    if !with_alloc {
        return s;
    }
    let _ = writeln!(
        s,
        "## Allocator (host: cargo run --release -p mm --example bench_alloc)\n\n```"
    );
    for l in alloc {
        let _ = writeln!(s, "{l}");
    }
    let _ = writeln!(s, "```\n");
    s
}

/// One line of a plot: legend, (MiB, value) points, colour index, dash
/// pattern ("" for a solid line).
struct Series {
    label: String,
    pts: Vec<(u64, f64)>,
    color: usize,
    dash: &'static str,
}

/// An SVG line plot of `work`'s ns/access against region size (log2 x),
/// one line per mapping size.
fn plot(r: &ArchResult, work: &str) -> String {
    let sizes = sizes_of(r);
    let series: Vec<Series> = configs_of(r)
        .into_iter()
        .enumerate()
        .map(|(i, c)| Series {
            pts: sizes
                .iter()
                .filter_map(|&m| r.get(work, &c, m, "ns_per_access").map(|x| (m, x.med)))
                .collect(),
            color: i,
            dash: if c.contains('-') { "5,3" } else { "" },
            label: c,
        })
        .collect();
    let title = format!(
        "{} {} ({}): ns per access vs region size",
        r.arch.name(),
        work,
        accel_desc(r)
    );
    line_plot(&title, "ns per access (median)", &sizes, &series, false)
}

/// The model's walks per 1000 loads of `work` against region size (log
/// scales), one colour per mapping size: ours solid, Linux 6.12 dotted.
fn plot_model(r: &ArchResult, m: &Model, work: &str) -> String {
    let sides = [
        (ours_side(r, m).ok(), ""),
        (m.linux.as_ref().ok(), " Linux"),
    ];
    let mut cfgs: Vec<String> = sides
        .iter()
        .filter_map(|s| s.0)
        .flat_map(|k| k.recs.iter())
        .filter(|x| x.work == work && x.metric == "model:dtlb_miss_per_kaccess")
        .map(|x| x.cfg.clone())
        .collect();
    cfgs.sort_by_key(|c| cfg_rank(c));
    cfgs.dedup();
    let mut sizes: Vec<u64> = sides
        .iter()
        .filter_map(|s| s.0)
        .flat_map(|k| k.recs.iter())
        .filter(|x| x.metric.starts_with("model:"))
        .map(|x| x.mib)
        .collect();
    sizes.sort();
    sizes.dedup();
    let mut series = Vec::new();
    for (i, c) in cfgs.iter().enumerate() {
        for (side, suffix) in sides {
            let Some(k) = side else { continue };
            series.push(Series {
                label: format!("{c}{suffix}"),
                pts: sizes
                    .iter()
                    .filter_map(|&mib| {
                        k.get(work, c, mib, "model:dtlb_miss_per_kaccess")
                            .map(|x| (mib, x.med))
                    })
                    .collect(),
                color: i,
                dash: if suffix.is_empty() { "" } else { "2,3" },
            });
        }
    }
    let title = format!(
        "{} {}: TLB model {}, page walks per 1000 loads",
        r.arch.name(),
        work,
        model_config(r.arch, "4K")
    );
    line_plot(&title, "walks per 1000 loads (log)", &sizes, &series, true)
}

/// The SVG of `series` against region size (log2 x axis over `sizes`); a
/// log10 y axis with `log_y` (points ≤ 0 are left out there).
fn line_plot(title: &str, ylabel: &str, sizes: &[u64], series: &[Series], log_y: bool) -> String {
    let (w, h) = (760.0f64, 440.0f64);
    let (l, rt, t, b) = (70.0, 150.0, 40.0, 50.0);
    let vals = || series.iter().flat_map(|s| s.pts.iter().map(|p| p.1));
    let ymax = vals().fold(0.0f64, f64::max).max(1e-9) * 1.1;
    // Log axis: whole decades around the data.
    let (d0, d1) = (
        vals()
            .filter(|v| *v > 0.0)
            .fold(f64::MAX, f64::min)
            .min(ymax)
            .log10()
            .floor(),
        ymax.log10().ceil(),
    );
    let d1 = d1.max(d0 + 1.0);
    let (x0, x1) = (
        (*sizes.first().unwrap_or(&64) as f64).log2(),
        (*sizes.last().unwrap_or(&1024) as f64).log2(),
    );
    let span = (x1 - x0).max(1.0);
    let px = |m: u64| l + ((m as f64).log2() - x0) / span * (w - l - rt);
    let frac = |v: f64| {
        if log_y {
            (v.log10() - d0) / (d1 - d0)
        } else {
            v / ymax
        }
    };
    let py = |v: f64| t + (1.0 - frac(v)) * (h - t - b);
    let colors = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
    ];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{l}\" y=\"22\" font-size=\"14\">{title}</text>"
    );
    // Axes and grid.
    let _ = writeln!(
        s,
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>",
        h - b,
        w - rt,
        h - b,
        h - b
    );
    let ticks: Vec<f64> = if log_y {
        (d0 as i32..=d1 as i32).map(|d| 10f64.powi(d)).collect()
    } else {
        (0..=5).map(|i| ymax * i as f64 / 5.0).collect()
    };
    for v in ticks {
        let y = py(v);
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - rt,
            l - 6.0,
            y + 4.0,
            if log_y { format!("{v}") } else { fmt_v(v) }
        );
    }
    for &m in sizes {
        let x = px(m);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"black\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{m}</text>",
            h - b,
            h - b + 5.0,
            h - b + 20.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">region size (MiB, log scale)</text>",
        (l + w - rt) / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(18,{}) rotate(-90)\" text-anchor=\"middle\">{ylabel}</text>",
        (t + h - b) / 2.0
    );
    for (i, sr) in series.iter().enumerate() {
        let p: Vec<(u64, f64)> = sr
            .pts
            .iter()
            .copied()
            .filter(|&(_, v)| !log_y || v > 0.0)
            .collect();
        if p.is_empty() {
            continue;
        }
        let col = colors[sr.color % colors.len()];
        let dash = if sr.dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{}\"", sr.dash)
        };
        let path: Vec<String> = p
            .iter()
            .map(|&(m, v)| format!("{:.1},{:.1}", px(m), py(v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            path.join(" ")
        );
        for &(m, v) in &p {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{col}\"/>",
                px(m),
                py(v)
            );
        }
        let ly = t + 16.0 * i as f64;
        let lx = w - rt + 12.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{col}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{}</text>",
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            sr.label
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(kernel: &str, recs: &[(&str, &str, u64, &str, f64)]) -> ArchResult {
        ArchResult {
            arch: Arch::Aarch64,
            accel: Accel::Tcg,
            recs: recs
                .iter()
                .map(|&(work, cfg, mib, metric, v)| Rec {
                    work: work.into(),
                    cfg: cfg.into(),
                    mib,
                    metric: metric.into(),
                    med: v,
                    min: v,
                    max: v,
                })
                .collect(),
            info: Vec::new(),
            errors: Vec::new(),
            qemu: "QEMU".into(),
            kernel: kernel.into(),
        }
    }

    /// The table row of `cfg` in the per-size table of `mib`.
    fn row<'a>(s: &'a str, mib: u64, cfg: &str) -> Vec<&'a str> {
        let sec = s
            .split(&format!("### aarch64 — {mib} MiB"))
            .nth(1)
            .expect("size table");
        let line = sec
            .lines()
            .find(|l| l.starts_with(&format!("| {cfg} |")))
            .expect("row");
        line.split('|').map(str::trim).collect()
    }

    #[test]
    fn model_columns_side_by_side_or_unavailable() {
        let ours = result(
            "mthp kernel",
            &[
                ("chase", "4K", 64, "ns_per_access", 300.0),
                ("chase", "4K", 1024, "ns_per_access", 310.0),
                ("chase", "4K", 64, "model:dtlb_miss_per_kaccess", 997.5),
                ("stream", "4K", 64, "model:dtlb_miss_per_kaccess", 3.907),
                ("chase", "4K", 64, "model:walks", 200006.0),
            ],
        );
        let linux = result(
            "Linux 6.12",
            &[
                ("chase", "4K", 64, "model:dtlb_miss_per_kaccess", 999.4),
                ("chase", "4K", 64, "model:walks", 200003.0),
            ],
        );
        let both = Model {
            ours: Ok(()),
            linux: Ok(linux),
        };
        let t = arch_tables(&ours, &both);
        let r = row(&t, 64, "4K");
        let n = r.len();
        // The last four cells: ours chase, Linux chase, ours stream, Linux stream.
        assert_eq!(&r[n - 5..n - 1], &["997.5", "999.4", "3.91", "–"]);
        assert_eq!(fmt_model(0.009_04), "0.00904");
        assert_eq!(fmt_model(0.245), "0.245");
        assert_eq!(fmt_model(37.0), "37");
        // 1 GiB was not modelled here: dashes, not "unavailable".
        let r = row(&t, 1024, "4K");
        assert_eq!(&r[r.len() - 5..r.len() - 1], &["–", "–", "–", "–"]);
        let m = model_table(&ours, &both);
        assert!(
            m.contains("| chase | 64 | 4K | – | 997.5 | 200006 | – | 999.4 | 200003 |"),
            "{m}"
        );

        let none = Model {
            ours: Err("no QEMU 10".into()),
            linux: Err("no QEMU 10".into()),
        };
        let t = arch_tables(&ours, &none);
        let r = row(&t, 64, "4K");
        assert_eq!(&r[r.len() - 5..r.len() - 1], &["unavailable"; 4]);
        assert!(model_table(&ours, &none).contains("- mthp: unavailable: no QEMU 10"));
        let svg = plot_model(&ours, &both, "chase");
        assert!(svg.contains("4K Linux") && svg.contains("<polyline"));
    }
}
