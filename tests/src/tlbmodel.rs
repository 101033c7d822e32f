//! `--tlb-model CONFIG`: run the guest under QEMU 10 with the TLB-model TCG
//! plugin (tools/tlb-model, docs/tlb-model.md). QEMU 10 is fetched by
//! `scripts/qemu10.sh` into target/qemu10 and the plugin built by
//! `make bench-tlb`; the system QEMU stays what everything else uses.
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::qemu::{Arch, workspace_root};

/// The model run asked for on the command line.
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
    let root = workspace_root();
    let q = root.join("target/qemu10/root/usr");
    let mut c = Command::new(q.join("bin").join(format!("qemu-system-{}", arch.name())));
    // Debian's binary from a `dpkg -x` tree: its libraries sit beside it.
    c.env("LD_LIBRARY_PATH", q.join("lib/x86_64-linux-gnu"));
    c.arg("-L").arg(q.join("share/qemu"));
    let plugin = root.join("tools/tlb-model/target/release/libtlb_plugin.so");
    c.arg("-plugin").arg(format!(
        "{},config={},dmap={:#x},marker={:#x},out={}",
        plugin.display(),
        m.config,
        dmap(arch, m.linux),
        MARKER,
        m.out.display()
    ));
    c
}
