//! `runner matrix`: the large-folio feature matrix (issue 19), ours against
//! Debian's Linux 6.12.
//!
//! Both kernels boot under the same QEMU set-up (`linux::comparable`) with
//! the same initramfs program, `/matrix` (`tests/user/src/bin/matrix.rs`),
//! which prints one line per cell: `matrix <feature> <size> <verdict>
//! <reason>`, then `matrix done`.  This side only parses and lays out; every
//! verdict is the probe's, so the two kernels are judged by one program.
//! A boot that ends without `matrix done`, or a line that does not parse, is
//! an error (the matrix would otherwise silently lose cells).
//!
//! Each kernel boots three times per arch ([`GROUPS`]): every feature on
//! the comparable machine, then `swap`/`madv-pageout` again with a swap
//! disk and `migration`/`numa` again with two NUMA nodes, whose cells
//! replace the first boot's.
use crate::qemu::{self, Accel, Arch, RunSpec};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// The verdicts the probe may print, best first.
pub const VERDICTS: [&str; 5] = ["works", "sub-optimal", "barely", "no", "untested"];
/// The columns' folio sizes, in order.
pub const SIZES: [&str; 4] = ["4K", "16K", "64K", "2M"];

/// One cell as the probe printed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub feature: String,
    pub size: String,
    pub verdict: String,
    pub reason: String,
}

/// Parses a `matrix <feature> <size> <verdict> <reason…>` line; `None` for
/// other lines, `Some(Err)` for a `matrix` line that is malformed (unknown
/// size or verdict, missing reason).
pub fn parse_line(l: &str) -> Option<Result<Cell, String>> {
    let rest = l.strip_prefix("matrix ")?;
    if rest == "done" {
        return None;
    }
    let mut w = rest.splitn(4, ' ');
    let (Some(f), Some(s), Some(v)) = (w.next(), w.next(), w.next()) else {
        return Some(Err(format!("short matrix line: {l}")));
    };
    let reason = w.next().unwrap_or("").trim();
    if !SIZES.contains(&s) {
        return Some(Err(format!("unknown size '{s}' in: {l}")));
    }
    if !VERDICTS.contains(&v) {
        return Some(Err(format!("unknown verdict '{v}' in: {l}")));
    }
    if reason.is_empty() {
        // Every verdict says why: the probe's rule, checked here.
        return Some(Err(format!("no reason in: {l}")));
    }
    Some(Ok(Cell {
        feature: f.into(),
        size: s.into(),
        verdict: v.into(),
        reason: reason.into(),
    }))
}

/// One boot's cells and what went wrong.
#[derive(Default)]
pub struct Run {
    pub cells: Vec<Cell>,
    pub errors: Vec<String>,
}

/// Collects the cells of a boot's console `lines`.
pub fn collect(lines: &[String]) -> Run {
    let mut r = Run::default();
    let mut done = false;
    for l in lines {
        done |= l.trim_end() == "matrix done";
        match parse_line(l.trim_end()) {
            Some(Ok(c)) => r.cells.push(c),
            Some(Err(e)) => r.errors.push(e),
            None => {}
        }
    }
    if !done {
        r.errors
            .push("the probe did not finish ('matrix done' missing)".into());
    }
    r
}

impl Run {
    fn get(&self, feature: &str, size: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.feature == feature && c.size == size)
    }
}

/// Features in first-seen order over both runs.
fn features(runs: &[&Run]) -> Vec<String> {
    let mut f: Vec<String> = Vec::new();
    for r in runs {
        for c in &r.cells {
            if !f.contains(&c.feature) {
                f.push(c.feature.clone());
            }
        }
    }
    f
}

/// The Markdown table for one arch: rows features, columns size × kernel
/// (`mthp` / `Linux`), then the reasons of every cell that is not `works`.
pub fn markdown(arch: &str, ours: &Run, linux: &Run, linux_name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### {arch}: mthp (M) against {linux_name} (L)\n");
    let mut head = String::from("| feature |");
    let mut rule = String::from("|---|");
    for z in SIZES {
        let _ = write!(head, " {z} M | {z} L |");
        rule.push_str("---|---|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let word = |c: Option<&Cell>| c.map_or("–".to_string(), |c| c.verdict.clone());
    for f in features(&[ours, linux]) {
        let mut row = format!("| {f} |");
        for z in SIZES {
            let _ = write!(
                row,
                " {} | {} |",
                word(ours.get(&f, z)),
                word(linux.get(&f, z))
            );
        }
        let _ = writeln!(s, "{row}");
    }
    let _ = writeln!(s, "\nWhy (every cell that is not `works`):\n");
    for (who, run) in [("M", ours), ("L", linux)] {
        for c in run.cells.iter().filter(|c| c.verdict != "works") {
            let _ = writeln!(
                s,
                "- {who} {} {}: {} — {}",
                c.feature, c.size, c.verdict, c.reason
            );
        }
    }
    for e in ours.errors.iter().chain(&linux.errors) {
        let _ = writeln!(s, "- ERROR: {e}");
    }
    s
}

/// The plain-text side-by-side table printed on the terminal.
pub fn text(arch: &str, ours: &Run, linux: &Run) -> String {
    let mut s = format!("{arch:<17}");
    for z in SIZES {
        let _ = write!(
            s,
            " {:<12}{:<12}",
            format!("{z} mthp"),
            format!("{z} Linux")
        );
    }
    s.push('\n');
    let word = |c: Option<&Cell>| c.map_or("–".to_string(), |c| c.verdict.clone());
    for f in features(&[ours, linux]) {
        let _ = write!(s, "{f:<17}");
        for z in SIZES {
            let _ = write!(
                s,
                " {:<12}{:<12}",
                word(ours.get(&f, z)),
                word(linux.get(&f, z))
            );
        }
        s.push('\n');
    }
    s
}

/// One CSV field, quoted where needed (RFC 4180).
fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// CSV rows `arch,kernel,feature,size,verdict,reason` (no header).
pub fn csv(arch: &str, kernel: &str, run: &Run) -> String {
    let mut s = String::new();
    for c in &run.cells {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{}",
            arch,
            kernel,
            csv_field(&c.feature),
            c.size,
            c.verdict,
            csv_field(&c.reason)
        );
    }
    s
}

fn boot(spec: &RunSpec, who: &str) -> Run {
    println!("== {who}: {}", qemu::show(&spec.command()));
    match qemu::boot(spec, Duration::from_secs(1800), |l| {
        if l.starts_with("matrix ") || l.contains("PANIC") {
            println!("  {l}");
        }
    }) {
        Ok(o) => collect(&o.lines),
        Err(e) => Run {
            cells: Vec::new(),
            errors: vec![format!("{who}: {e}")],
        },
    }
}

/// The boots of one kernel: the features that need a machine of their own
/// run again in a boot that has it, and their cells replace the first
/// boot's (where they could only be `untested`).
struct Group {
    label: &'static str,
    /// The probe's feature words (`None`: every feature).
    features: Option<&'static str>,
    /// A swap disk at `/dev/vda` (ours on x86 then boots `microvm`, its
    /// only virtio transport; Linux keeps `q35` with `virtio-blk-pci`).
    disk: bool,
    /// NUMA nodes (`-numa`, memory and CPUs split evenly).
    numa: u32,
}

const GROUPS: [Group; 3] = [
    Group {
        label: "all",
        features: None,
        disk: false,
        numa: 0,
    },
    Group {
        label: "swap disk",
        features: Some("swap,madv-pageout"),
        disk: true,
        numa: 0,
    },
    Group {
        label: "two nodes",
        features: Some("migration,numa"),
        disk: false,
        numa: 2,
    },
];

/// Which kernel a boot runs.
enum Kernel<'k> {
    Ours(&'k std::path::Path, &'k std::path::Path),
    Linux(&'k std::path::Path, &'k std::path::Path, &'k str),
}

/// Boots `kernel` once per [`GROUPS`] entry and merges the cells.
fn boot_groups(arch: Arch, accel: Accel, kernel: &Kernel) -> Run {
    let mut run = Run::default();
    for g in &GROUPS {
        let init = match g.features {
            Some(f) => format!("init=/matrix -- {f}"),
            None => "init=/matrix".to_string(),
        };
        let (k, rd, who) = match kernel {
            Kernel::Ours(k, rd) => (*k, *rd, format!("{} mthp", arch.name())),
            Kernel::Linux(k, rd, name) => (*k, *rd, format!("{} {name}", arch.name())),
        };
        let mut spec = RunSpec::new(arch, accel, k.to_path_buf(), &init);
        let default_machine = spec.machine.clone();
        crate::linux::comparable(&mut spec);
        spec.numa = g.numa;
        let _disk = if g.disk {
            match qemu::attach_swap_disk(&mut spec) {
                Ok(d) => Some(d),
                Err(e) => {
                    run.errors.push(format!("{who} ({}): {e}", g.label));
                    continue;
                }
            }
        } else {
            None
        };
        match kernel {
            Kernel::Ours(..) => {
                spec.cmdline = format!("loglevel=warn {}", spec.cmdline);
                spec.initrd = Some(rd.to_path_buf());
                if g.disk {
                    spec.machine = default_machine;
                }
            }
            Kernel::Linux(..) => {
                if g.disk {
                    spec.cmdline = format!("mthp_disk=1 {}", spec.cmdline);
                }
                crate::linux::apply(&mut spec, k, rd, true);
            }
        }
        let r = boot(&spec, &format!("{who} ({})", g.label));
        run.errors.extend(r.errors);
        for c in r.cells {
            match run
                .cells
                .iter_mut()
                .find(|x| x.feature == c.feature && x.size == c.size)
            {
                Some(x) => *x = c,
                None => run.cells.push(c),
            }
        }
    }
    run
}

/// `runner matrix [--arch A]...`: boots both kernels per arch, prints the
/// tables and writes `target/matrix/matrix.{md,csv}`.
pub fn run(arches: &[Arch], accel: Accel) -> ExitCode {
    let mut md = String::new();
    let mut csv_out = String::from("arch,kernel,feature,size,verdict,reason\n");
    let mut tables = String::new();
    let mut ok = true;
    for &arch in arches {
        let built = qemu::build_kernel(arch, "release", "").and_then(|k| {
            if arch == Arch::Aarch64 {
                qemu::arm64_image(&k)
            } else {
                Ok(k)
            }
        });
        let (k, rd) = match (built, crate::initramfs::build(arch)) {
            (Ok(k), Ok(rd)) => (k, rd),
            (a, b) => {
                println!(
                    "== {}: build failed: {:?} {:?}",
                    arch.name(),
                    a.err(),
                    b.err()
                );
                return ExitCode::FAILURE;
            }
        };
        let ours = boot_groups(arch, accel, &Kernel::Ours(&k, &rd));
        let (linux, lname) = match (crate::linux::kernel(arch), crate::linux::initrd(arch)) {
            (Some(lk), Ok(lrd)) => {
                let name = crate::linux::describe(&lk);
                (
                    boot_groups(arch, accel, &Kernel::Linux(&lk, &lrd, &name)),
                    name,
                )
            }
            (k, rd) => {
                let why = match (k, rd) {
                    (None, _) => crate::linux::missing(arch),
                    (_, Err(e)) => e,
                    _ => unreachable!(),
                };
                let r = Run {
                    cells: Vec::new(),
                    errors: vec![format!("Linux not run: {why}")],
                };
                (r, "Linux 6.12".to_string())
            }
        };
        ok &= ours.errors.is_empty() && linux.errors.is_empty();
        let _ = writeln!(md, "{}", markdown(arch.name(), &ours, &linux, &lname));
        csv_out.push_str(&csv(arch.name(), "mthp", &ours));
        csv_out.push_str(&csv(arch.name(), "linux", &linux));
        tables.push_str(&text(arch.name(), &ours, &linux));
        tables.push('\n');
    }
    println!("\n{tables}");
    ok &= crate::report::write(
        "matrix",
        &[("matrix.md".into(), &md), ("matrix.csv".into(), &csv_out)],
    );
    crate::report::status(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cells_and_rejects_malformed_lines() {
        let c = parse_line("matrix cow-fork 64K sub-optimal data right; child's copies 0%")
            .unwrap()
            .unwrap();
        assert_eq!(c.feature, "cow-fork");
        assert_eq!(c.size, "64K");
        assert_eq!(c.verdict, "sub-optimal");
        assert_eq!(c.reason, "data right; child's copies 0%");
        assert!(parse_line("matrix done").is_none());
        assert!(parse_line("test x ... ok").is_none());
        assert!(parse_line("matrix fault 32K works x").unwrap().is_err());
        assert!(parse_line("matrix fault 4K perfect x").unwrap().is_err());
        assert!(parse_line("matrix fault 4K works").unwrap().is_err());
        assert!(parse_line("matrix fault").unwrap().is_err());
    }

    #[test]
    fn a_run_without_done_or_with_bad_lines_is_an_error() {
        let lines: Vec<String> = [
            "matrix fault 4K works ok",
            "noise",
            "matrix fault 2M maybe x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = collect(&lines);
        assert_eq!(r.cells.len(), 1);
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
        let mut ok = lines[..1].to_vec();
        ok.push("matrix done".into());
        assert!(collect(&ok).errors.is_empty());
    }

    #[test]
    fn tables_put_the_kernels_side_by_side() {
        let ours = collect(&[
            "matrix fault 4K works a".into(),
            "matrix fault 2M no mmap: errno 22".into(),
            "matrix done".into(),
        ]);
        let linux = collect(&[
            "matrix fault 2M works b, c".into(),
            "matrix mlock 4K works d".into(),
            "matrix done".into(),
        ]);
        let md = markdown("x86_64", &ours, &linux, "Linux 6.12");
        assert!(
            md.contains("| fault | works | – | – | – | – | – | no | works |"),
            "{md}"
        );
        assert!(md.contains("| mlock | – | works |"), "{md}");
        assert!(md.contains("- M fault 2M: no — mmap: errno 22"), "{md}");
        assert!(
            !md.contains("- L fault 2M"),
            "works cells need no reason: {md}"
        );
        let t = text("x86_64", &ours, &linux);
        assert_eq!(t.lines().count(), 3);
        assert_eq!(
            csv("x86_64", "linux", &linux).lines().next(),
            Some("x86_64,linux,fault,2M,works,\"b, c\"")
        );
    }
}
