//! `--tlb-model CONFIG`: run the guest under QEMU 10 with the TLB-model TCG
//! plugin (tools/tlb-model, docs/tlb-model.md). QEMU 10 is fetched by
//! `scripts/qemu10.sh` into target/qemu10 and the plugin built by
//! `make deps-tlb`; the system QEMU stays what everything else uses.
//!
//! `runner bench` (bench.rs) gives a boot its own [`TlbModel`] through
//! `RunSpec::tlb_model` and turns the report into `model:` figures with
//! [`phases`].
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::qemu::{Arch, workspace_root};

/// A run under the model: the global one asked for on the command line
/// (`--tlb-model`, [`get`]) or one boot's (`RunSpec::tlb_model`).
#[derive(Clone, Debug)]
pub struct TlbModel {
    /// Model configuration name (`tlb_model::model::CONFIGS`).
    pub config: String,
    /// Booting Linux (direct map and `nokaslr`) rather than our kernel.
    pub linux: bool,
    /// CSV the plugin writes at exit.
    pub out: PathBuf,
}

static MODEL: OnceLock<TlbModel> = OnceLock::new();

/// Phase-marker page the bench maps (tests/user/src/bin/bench.rs).
pub const MARKER: u64 = 0x7e_0000_0000;

/// Turn the model on for every QEMU this runner starts.
pub fn enable(config: String, linux: bool) {
    let out = workspace_root().join("target/tlb-model.csv");
    let _ = MODEL.set(TlbModel { config, linux, out });
}

/// The model run, if `--tlb-model` was given.
pub fn get() -> Option<&'static TlbModel> {
    MODEL.get()
}

/// QEMU 10's `qemu-system-<arch>` under target/qemu10 (scripts/qemu10.sh).
fn qemu10(arch: Arch) -> PathBuf {
    workspace_root()
        .join("target/qemu10/root/usr/bin")
        .join(format!("qemu-system-{}", arch.name()))
}

/// The plugin `make deps-tlb` builds.
fn plugin() -> PathBuf {
    workspace_root().join("tools/tlb-model/target/release/libtlb_plugin.so")
}

/// Whether a model run can start here; `Err` says why not (shown in the
/// tables in place of the figures).
pub fn available(arch: Arch) -> Result<(), String> {
    if !qemu10(arch).is_file() {
        return Err(format!(
            "no QEMU 10 at {} (make deps-tlb: scripts/qemu10.sh)",
            qemu10(arch).display()
        ));
    }
    if !plugin().is_file() {
        return Err(format!(
            "no plugin at {} (make deps-tlb)",
            plugin().display()
        ));
    }
    Ok(())
}

/// One measured loop as the model saw it: the bench's `bench tlb-phase <id>
/// <workload> <config> <MiB>` line joined with the report's row of `id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub workload: String,
    pub config: String,
    pub mib: u64,
    pub accesses: u64,
    pub l1_misses: u64,
    pub walks: u64,
    pub walk_refs: u64,
    /// Accesses the plugin could not walk or walked to another physical
    /// address than QEMU's: nonzero means the row is not to be trusted.
    pub anomalies: u64,
}

impl Phase {
    /// The `model:` figures of this loop, name and value: misses per 1000
    /// modelled loads (L1 and L2, an L2 miss being a walk), the walks
    /// themselves and their memory references per 1000 loads.
    pub fn figures(&self) -> Vec<(&'static str, f64)> {
        let per_k = |n: u64| {
            if self.accesses == 0 {
                0.0
            } else {
                n as f64 * 1000.0 / self.accesses as f64
            }
        };
        vec![
            ("model:l1_miss_per_kaccess", per_k(self.l1_misses)),
            ("model:dtlb_miss_per_kaccess", per_k(self.walks)),
            ("model:walk_refs_per_kaccess", per_k(self.walk_refs)),
            ("model:walks", self.walks as f64),
        ]
    }
}

/// Join the guest's console `lines` (its `bench tlb-phase` lines) with the
/// plugin's report `csv` (columns by header name, docs/tlb-model.md).
pub fn phases(lines: &[String], csv: &str) -> Vec<Phase> {
    let mut names = std::collections::BTreeMap::new();
    for l in lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() == 6
            && w[0] == "bench"
            && w[1] == "tlb-phase"
            && let (Ok(id), Ok(mib)) = (w[2].parse::<u64>(), w[5].parse::<u64>())
        {
            names.insert(id, (w[3].to_string(), w[4].to_string(), mib));
        }
    }
    let mut rows = csv.lines().filter(|l| !l.starts_with('#'));
    let Some(header) = rows.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(ph), Some(acc), Some(l1), Some(wk), Some(wr), Some(ur), Some(pm)) = (
        col("phase"),
        col("accesses"),
        col("l1_misses"),
        col("walks"),
        col("walk_refs"),
        col("unreadable"),
        col("pa_mismatch"),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in rows {
        let f: Vec<&str> = r.split(',').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        let Some((work, cfg, mib)) = num(ph).and_then(|id| names.get(&id)) else {
            continue;
        };
        let (Some(accesses), Some(l1_misses), Some(walks), Some(walk_refs)) =
            (num(acc), num(l1), num(wk), num(wr))
        else {
            continue;
        };
        out.push(Phase {
            workload: work.clone(),
            config: cfg.clone(),
            mib: *mib,
            accesses,
            l1_misses,
            walks,
            walk_refs,
            anomalies: num(ur).unwrap_or(0) + num(pm).unwrap_or(0),
        });
    }
    out
}

/// The report at `path`, joined with the console `lines` ([`phases`]).
pub fn read_phases(path: &Path, lines: &[String]) -> Result<Vec<Phase>, String> {
    let csv = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(phases(lines, &csv))
}

/// Guest-virtual base of the direct map, where the plugin reads tables.
/// Ours: the arch crates' `PHYS_OFFSET`. Debian's Linux 6.12 with
/// `nokaslr` under QEMU's `-cpu max` (its config: ARM64_VA_BITS_52 with
/// LPA2, X86_5LEVEL; the CPU has FEAT_LPA2 and LA57, so both are on): arm64
/// `PAGE_OFFSET` of a 52-bit VA space, 0xfff0000000000000, for the first
/// RAM byte (0x40000000 on virt); x86 `page_offset_base` with 5-level
/// paging, 0xff11000000000000. The plugin's report lists the kernel's
/// sampled VA-PA offsets, where the right base shows up (checked
/// 2026-12-05 on both).
fn dmap(arch: Arch, linux: bool) -> u64 {
    match (arch, linux) {
        (Arch::X86_64, false) => 0xffff_8000_0000_0000,
        (Arch::Aarch64, false) => 0xffff_0000_0000_0000,
        (Arch::X86_64, true) => 0xff11_0000_0000_0000,
        (Arch::Aarch64, true) => 0xfff0_0000_0000_0000u64.wrapping_sub(0x4000_0000),
    }
}

/// The QEMU 10 command for `arch` with the plugin loaded.
pub fn command(m: &TlbModel, arch: Arch) -> Command {
    let q = workspace_root().join("target/qemu10/root/usr");
    let mut c = Command::new(qemu10(arch));
    // Debian's binary from a `dpkg -x` tree: its libraries sit beside it.
    c.env("LD_LIBRARY_PATH", q.join("lib/x86_64-linux-gnu"));
    c.arg("-L").arg(q.join("share/qemu"));
    c.arg("-plugin").arg(format!(
        "{},config={},dmap={:#x},marker={:#x},out={}",
        plugin().display(),
        m.config,
        dmap(arch, m.linux),
        MARKER,
        m.out.display()
    ));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_join_console_and_report() {
        let lines: Vec<String> = [
            "bench tlb-phase 0 stream 4K 64",
            "bench stream 4K 64 ns_per_access 1 1 1",
            "bench tlb-phase 1 chase 64K-nocont 1024",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let csv = "config,phase,accesses,l1_hits,l1_misses,walks,walk_refs,dtlb_miss_per_kaccess,user,kernel,unmapped,unreadable,leaf_4k,leaf_64k,leaf_2m,leaf_1g,pa_mismatch\n\
                   neoverse-n1,0,4000,3000,1000,20,80,5,4000,0,0,0,4000,0,0,0,0\n\
                   neoverse-n1,1,2000,0,2000,2000,8000,1000,2000,0,0,1,2000,0,0,0,2\n\
                   neoverse-n1,7,1,0,1,1,4,1000,1,0,0,0,1,0,0,0,0\n\
                   neoverse-n1,total,9,0,9,9,36,1000,9,0,0,0,9,0,0,0,0\n\
                   # never walked at exit: 0\n";
        let p = phases(&lines, csv);
        assert_eq!(
            p.len(),
            2,
            "phase 7 has no console line, total is not a phase"
        );
        assert_eq!(
            (p[0].workload.as_str(), p[0].config.as_str(), p[0].mib),
            ("stream", "4K", 64)
        );
        let f = p[0].figures();
        assert_eq!(f[0], ("model:l1_miss_per_kaccess", 250.0));
        assert_eq!(f[1], ("model:dtlb_miss_per_kaccess", 5.0));
        assert_eq!(f[2], ("model:walk_refs_per_kaccess", 20.0));
        assert_eq!(f[3], ("model:walks", 20.0));
        assert_eq!(p[0].anomalies, 0);
        assert_eq!(
            (p[1].config.as_str(), p[1].mib, p[1].anomalies),
            ("64K-nocont", 1024, 3)
        );
        assert!(phases(&lines, "").is_empty());
    }
}
