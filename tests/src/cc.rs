//! A C compiler for the guest architectures, for the `libc` suite: the C
//! test program (`tests/c/libc-tests.c`) linked `-static` against the
//! system's C library, so the kernels run a program built the ordinary way.
//!
//! x86_64: the host's `cc` when it targets x86_64.  arm64:
//! `aarch64-linux-gnu-gcc` on PATH, else the Debian cross toolchain that
//! `../shared/tools/linux-baseline/run.sh aarch64` unpacks into its cache.
//! Without one the suite is skipped, and says so.
use crate::qemu::Arch;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to run the compiler: program and the arguments that come first.
pub struct Cc {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub what: String,
}

fn targets(cc: &str, arch: Arch) -> bool {
    Command::new(cc)
        .arg("-dumpmachine")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).starts_with(arch.name()))
}

/// Find a compiler for `arch`, or say why there is none.
pub fn find(arch: Arch) -> Result<Cc, String> {
    let plain = |c: &str| Cc {
        argv: vec![c.to_string()],
        env: Vec::new(),
        what: c.to_string(),
    };
    match arch {
        Arch::X86_64 => {
            for c in ["cc", "gcc"] {
                if targets(c, arch) {
                    return Ok(plain(c));
                }
            }
            Err("no cc/gcc targeting x86_64".into())
        }
        Arch::Aarch64 => {
            if targets("aarch64-linux-gnu-gcc", arch) {
                return Ok(plain("aarch64-linux-gnu-gcc"));
            }
            let cache = std::env::var("LINUX_BASELINE_CACHE")
                .map(PathBuf::from)
                .or_else(|_| {
                    std::env::var("HOME").map(|h| Path::new(&h).join(".cache/linux-baseline"))
                })
                .map_err(|_| "no aarch64-linux-gnu-gcc and no HOME".to_string())?;
            let r = cache.join("cross-bookworm/root");
            let gcc = r.join("usr/bin/aarch64-linux-gnu-gcc-12");
            if !gcc.exists() {
                return Err(format!(
                    "no aarch64-linux-gnu-gcc on PATH and none in {} (run ../shared/tools/linux-baseline/run.sh aarch64 once)",
                    r.display()
                ));
            }
            let s = |p: PathBuf| p.display().to_string();
            Ok(Cc {
                argv: vec![
                    s(gcc),
                    format!("-B{}", s(r.join("usr/bin/aarch64-linux-gnu-"))),
                    format!("-B{}/", s(r.join("usr/lib/gcc-cross/aarch64-linux-gnu/12"))),
                    format!("-B{}/", s(r.join("usr/aarch64-linux-gnu/lib"))),
                    format!("--sysroot={}", s(r.join("usr/aarch64-linux-gnu"))),
                ],
                env: vec![(
                    "LD_LIBRARY_PATH".into(),
                    s(r.join("usr/lib/x86_64-linux-gnu")),
                )],
                what: "aarch64-linux-gnu-gcc-12 (linux-baseline cache)".into(),
            })
        }
    }
}

/// Compile `src` with `-O2 -static`; returns the executable's bytes.
pub fn build_static(cc: &Cc, src: &Path, out: &Path) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new(&cc.argv[0]);
    cmd.args(&cc.argv[1..])
        .args(["-O2", "-static", "-Wall", "-o"])
        .arg(out)
        .arg(src);
    for (k, v) in &cc.env {
        cmd.env(k, v);
    }
    let o = cmd.output().map_err(|e| format!("{}: {e}", cc.what))?;
    if !o.status.success() {
        return Err(format!(
            "{} failed: {}",
            cc.what,
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    std::fs::read(out).map_err(|e| format!("{}: {e}", out.display()))
}
