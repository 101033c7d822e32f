//! Booting Debian's Linux 6.12 (the kernel `../shared/tools/linux-baseline/run.sh`
//! leaves in its cache) with our initramfs, under the same QEMU set-up as
//! our kernel, so a user program runs on both kernels the same way.
//!
//! * `runner run --linux --arch A --cmdline "init=/prog words…"`: any
//!   program of the initramfs (`tests/user`, plus `$INITRD_EXTRA`) as
//!   Linux's first process, with `/proc`, `/sys` and debugfs mounted
//!   first (`/linux-init`), as our kernel has them;
//! * `runner bench --linux`: `/bench` on Linux, the figures compared with
//!   ours (see `bench.rs`).
//!
//! The QEMU set-up used for every figure compared with Linux
//! ([`comparable`]), for both kernels alike:
//!
//! * x86_64: `-M q35 -accel tcg -cpu max`, for both kernels.  Our default
//!   machine, `microvm`, boots Debian's kernel only sometimes: with no HPET
//!   or ACPI PM timer there, Linux calibrates the TSC against the PIT, and
//!   on a loaded host that fails ("tsc: Unable to calibrate against PIT")
//!   and boot stops.  Both kernels boot on `q35` (ours through the PVH
//!   note).  The baseline's run.sh used `pc`; the machine changes boot
//!   devices, not the fault path.
//! * arm64: `-M virt -cpu max,pauth-impdef=on`.  Linux 6.12 signs return
//!   addresses with pointer authentication; with QEMU's default QARMA
//!   algorithm every `paciasp`/`autiasp` is an expensive helper under TCG,
//!   which would charge Linux for an emulator artefact (the baseline's
//!   run.sh uses the same flag).  Our kernel and `/bench` use no pointer
//!   authentication, so the flag changes nothing for them; under `-icount`
//!   an instruction counts one either way.
//! * `-m 2G`, 1 vCPU, `-nodefaults -serial stdio -no-reboot`, the same
//!   `-icount shift=0` when asked.
use crate::qemu::{self, Arch, RunSpec};
use std::path::{Path, PathBuf};

/// The linux-baseline cache (`$LINUX_BASELINE_CACHE`, else
/// `~/.cache/linux-baseline`).
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var("LINUX_BASELINE_CACHE")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cache/linux-baseline")))
        .ok()
}

/// What to run when the cache holds no kernel for `arch` (a path relative
/// to the repository, never this machine's).
pub fn missing(arch: Arch) -> String {
    format!(
        "no Linux kernel for {} in the linux-baseline cache (run ../shared/tools/linux-baseline/run.sh {} once)",
        arch.name(),
        arch.name()
    )
}

/// The Debian kernel the linux-baseline tool downloaded for `arch`.
pub fn kernel(arch: Arch) -> Option<PathBuf> {
    let cache = cache_dir()?;
    let flavour = match arch {
        Arch::X86_64 => "amd64",
        Arch::Aarch64 => "arm64",
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache.join("kernel"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("boot")))
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with(flavour))
        })
        .collect();
    found.sort();
    found.pop()
}

/// "Linux 6.12.117+deb13-cloud-arm64" from the kernel's file name.
pub fn describe(k: &Path) -> String {
    format!(
        "Linux {}",
        k.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .trim_start_matches("vmlinuz-")
    )
}

/// Our initramfs (every program of `tests/user` and `$INITRD_EXTRA`) for
/// Linux: a small archive with `/dev`, `/proc`, `/sys`, `/dev/null`, `/dev/console`
/// (without the console node Linux's first process has no output) and
/// `/linux-init` (see [`apply`]), followed by ours; Linux unpacks
/// concatenated newc archives in order.
pub fn initrd(arch: Arch) -> Result<PathBuf, String> {
    let mods = match modules(arch) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("note: no virtio block modules for Linux ({e}): it will see no disk");
            Vec::new()
        }
    };
    let ours = crate::initramfs::build(arch)?;
    let body = std::fs::read(&ours).map_err(|e| format!("{}: {e}", ours.display()))?;
    let li = ours.with_file_name("release").join("linux-init");
    let init = std::fs::read(&li).map_err(|e| format!("{}: {e}", li.display()))?;
    let mut out = Vec::new();
    let mut ino = 0x4000u32;
    let mut put = |name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        ino += 1;
        let hdr = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in hdr {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    };
    for d in ["dev", "proc", "sys"] {
        put(d, 0o040755, (0, 0), &[]);
    }
    put("dev/console", 0o020600, (5, 1), &[]);
    // Our kernel has /dev/null without being asked; tests open it.
    put("dev/null", 0o020666, (1, 3), &[]);
    put("linux-init", 0o100755, (0, 0), &init);
    // The modules `/linux-init` loads, in the order of `modules/load`.
    put("modules", 0o040755, (0, 0), &[]);
    let mut load = String::new();
    for (name, data) in &mods {
        put(&format!("modules/{name}"), 0o100644, (0, 0), data);
        load.push_str(name);
        load.push('\n');
    }
    put("modules/load", 0o100644, (0, 0), load.as_bytes());
    put("TRAILER!!!", 0, (0, 0), &[]);
    out.resize(out.len().next_multiple_of(512), 0);
    out.extend_from_slice(&body);
    let p = ours.with_file_name("initramfs-linux.cpio");
    std::fs::write(&p, out).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

/// The modules Linux needs to see the swap disk, in load order: Debian's
/// cloud kernel builds the virtio core, ring and PCI transport in, but
/// `virtio_mmio` (arm64 `virt`'s transport) and `virtio_blk` as modules
/// (`CONFIG_VIRTIO_MMIO=m`, `CONFIG_VIRTIO_BLK=m`; neither depends on
/// another module).  They come from the cached kernel package
/// (`debs/<package>_<arch>.deb`), extracted once next to the kernel
/// (`kernel/<package>/usr/lib/modules/…`): only these two files, not the
/// whole package.  `(file name, xz-compressed module)`; `/linux-init`
/// loads them with `finit_module(MODULE_INIT_COMPRESSED_FILE)`.
pub fn modules(arch: Arch) -> Result<Vec<(String, Vec<u8>)>, String> {
    const WANT: [(&str, &str); 2] = [
        ("virtio", "virtio_mmio.ko.xz"),
        ("block", "virtio_blk.ko.xz"),
    ];
    let k = kernel(arch).ok_or_else(|| missing(arch))?;
    let kdir = k
        .parent()
        .and_then(Path::parent)
        .ok_or("kernel path without a package directory")?;
    let find = || -> Option<Vec<PathBuf>> {
        let root = std::fs::read_dir(kdir.join("usr/lib/modules"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.join("kernel").is_dir())?;
        let v: Vec<PathBuf> = WANT
            .iter()
            .map(|(dir, f)| root.join("kernel/drivers").join(dir).join(f))
            .collect();
        v.iter().all(|p| p.is_file()).then_some(v)
    };
    let paths = match find() {
        Some(v) => v,
        None => {
            let deb_arch = match arch {
                Arch::X86_64 => "amd64",
                Arch::Aarch64 => "arm64",
            };
            let name = kdir.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            let deb = kdir
                .parent()
                .and_then(Path::parent)
                .ok_or("no cache directory")?
                .join("debs")
                .join(format!("{name}_{deb_arch}.deb"));
            extract(&deb, kdir, &WANT)?;
            find().ok_or_else(|| format!("{} holds no {WANT:?}", deb.display()))?
        }
    };
    paths
        .iter()
        .map(|p| {
            let data = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            Ok((name.to_string(), data))
        })
        .collect()
}

/// `dpkg-deb --fsys-tarfile deb | tar -x -C dir` of the `want` modules.
fn extract(deb: &Path, dir: &Path, want: &[(&str, &str)]) -> Result<(), String> {
    use std::process::{Command, Stdio};
    if !deb.is_file() {
        return Err(format!("{} is not there", deb.display()));
    }
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let mut tar = Command::new("tar");
    tar.arg("-x").arg("-C").arg(dir).arg("--wildcards");
    for (d, f) in want {
        tar.arg(format!("./usr/lib/modules/*/kernel/drivers/{d}/{f}"));
    }
    let st = tar
        .stdin(dpkg.stdout.take().expect("piped"))
        .status()
        .map_err(|e| format!("cannot run tar: {e}"));
    let dst = dpkg.wait().map_err(|e| format!("dpkg-deb: {e}"))?;
    match st? {
        s if s.success() && dst.success() => Ok(()),
        s => Err(format!(
            "extracting modules from {} failed (tar {s}, dpkg-deb {dst})",
            deb.display()
        )),
    }
}

/// The QEMU set-up every figure compared with Linux uses, for both kernels
/// (see the module comment for why each flag).
pub fn comparable(spec: &mut RunSpec) {
    spec.mem = "2G".into();
    match spec.arch {
        Arch::X86_64 => spec.machine = "q35".into(),
        Arch::Aarch64 => {
            spec.machine = "virt".into();
            spec.cpu = Some("max,pauth-impdef=on".into());
        }
    }
}

/// Turns `spec` (built for our kernel) into a boot of Linux `k` with the
/// same QEMU flags: `init=/path` becomes `rdinit=/path` (a program of the
/// initramfs), the console is named, and a panic (the first process
/// exiting) powers QEMU off at once (`panic=-1` with `-no-reboot`).
/// `mount`: start `/linux-init` instead, which mounts `/proc`, `/sys` and
/// debugfs (which our kernel provides unasked) and then execs `/path` as
/// pid 1 (`mthp_init=/path`).
pub fn apply(spec: &mut RunSpec, k: &Path, initrd: &Path, mount: bool) {
    spec.kernel = k.to_path_buf();
    spec.initrd = Some(initrd.to_path_buf());
    let words: Vec<String> = spec
        .cmdline
        .split_whitespace()
        .map(|w| match w.strip_prefix("init=") {
            Some(p) if mount => format!("rdinit=/linux-init mthp_init={p}"),
            Some(p) => format!("rdinit={p}"),
            None => w.to_string(),
        })
        .collect();
    spec.cmdline = format!(
        "console={} quiet panic=-1 {}",
        match spec.arch {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        },
        words.join(" ")
    );
}

/// The exit code of Linux's first process from its console lines: it ends
/// either by powering off (`reboot(POWER_OFF)`: 0) or by exiting, which
/// panics the kernel ("Attempted to kill init! exitcode=0x0000XX00").
pub fn init_status(lines: &[String]) -> Option<i32> {
    for l in lines {
        if let Some(i) = l.find("exitcode=0x") {
            let hex: String = l[i + 11..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect();
            let v = i64::from_str_radix(&hex, 16).ok()?;
            // A wait status: exit code in bits 8..15, a signal in 0..6.
            return Some(if v & 0x7f != 0 {
                128 + (v & 0x7f) as i32
            } else {
                ((v >> 8) & 0xff) as i32
            });
        }
    }
    if lines.iter().any(|l| l.contains("reboot: Power down")) {
        return Some(0);
    }
    None
}

/// `runner run --linux`: boot Linux with our initramfs and the command
/// line's `init=` program, stream the console, and exit with the program's
/// status.  `mem` overrides the comparable set-up's 2 GiB.  `disk`: attach
/// a fresh swap disk ([`qemu::swap_disk`]; `virtio-blk-pci` on x86's
/// `q35`, `virtio-blk-device` on arm64's `virt`) and tell `/linux-init`
/// to wait for `/dev/vda` (`mthp_disk=1`).
pub fn run(mut spec: RunSpec, mem: Option<String>, disk: bool) -> std::process::ExitCode {
    use std::process::ExitCode;
    let Some(k) = kernel(spec.arch) else {
        eprintln!("{}", missing(spec.arch));
        return ExitCode::FAILURE;
    };
    if !spec
        .cmdline
        .split_whitespace()
        .any(|w| w.starts_with("init="))
    {
        spec.cmdline = format!("init=/mthp-tests {}", spec.cmdline);
    }
    let rd = match initrd(spec.arch) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    comparable(&mut spec);
    if let Some(m) = mem {
        spec.mem = m;
    }
    // Kept until QEMU exits (the image is removed on drop).
    let _swap = if disk {
        match qemu::attach_swap_disk(&mut spec) {
            Ok(d) => {
                spec.cmdline = format!("mthp_disk=1 {}", spec.cmdline);
                Some(d)
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    apply(&mut spec, &k, &rd, true);
    eprintln!("+ {}", qemu::show(&spec.command()));
    let out = match qemu::boot(&spec, std::time::Duration::from_secs(3600), |l| {
        println!("{l}")
    }) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match (out.status, init_status(&out.lines)) {
        (None, _) => {
            eprintln!("timed out");
            ExitCode::FAILURE
        }
        (_, Some(0)) => ExitCode::SUCCESS,
        (_, Some(c)) => {
            eprintln!("{}: the first process exited with status {c}", describe(&k));
            ExitCode::from(c.clamp(1, 255) as u8)
        }
        (Some(s), None) => {
            eprintln!(
                "{}: QEMU exited with status {s} and no exit status of the first process was seen",
                describe(&k)
            );
            ExitCode::FAILURE
        }
    }
}

/// What a side-by-side comparison boots on `arch`: Linux's kernel and its
/// initramfs, and our release kernel (an arm64 Image) and initramfs, as
/// `(linux, linux_initrd, ours, ours_initrd)`.  `Ok(None)`: no Linux
/// kernel here (said on the console; the caller skips the arch);
/// `Err(())`: a build failed (said).
#[allow(clippy::type_complexity)]
pub fn sides(arch: Arch) -> Result<Option<(PathBuf, PathBuf, PathBuf, PathBuf)>, ()> {
    let Some(k) = kernel(arch) else {
        println!("== {}: {}; skipped", arch.name(), missing(arch));
        return Ok(None);
    };
    let built = crate::qemu::build_kernel(arch, "release", "").and_then(|k| {
        if arch == Arch::Aarch64 {
            crate::qemu::arm64_image(&k)
        } else {
            Ok(k)
        }
    });
    match (built, crate::initramfs::build(arch), initrd(arch)) {
        (Ok(a), Ok(b), Ok(c)) => Ok(Some((k, c, a, b))),
        (a, b, c) => {
            println!(
                "== {}: build failed: {:?} {:?} {:?}",
                arch.name(),
                a.err(),
                b.err(),
                c.err()
            );
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Accel;

    #[test]
    fn init_words_become_rdinit_and_status_is_read() {
        let mut s = RunSpec::new(Arch::Aarch64, Accel::Tcg, PathBuf::new(), "init=/bench a=b");
        comparable(&mut s);
        apply(&mut s, Path::new("/k"), Path::new("/rd"), false);
        assert_eq!(
            s.cmdline,
            "console=ttyAMA0 quiet panic=-1 rdinit=/bench a=b"
        );
        assert_eq!(s.cpu.as_deref(), Some("max,pauth-impdef=on"));
        assert_eq!(s.mem, "2G");
        let mut s = RunSpec::new(Arch::X86_64, Accel::Tcg, PathBuf::new(), "init=/hello x");
        apply(&mut s, Path::new("/k"), Path::new("/rd"), true);
        assert_eq!(
            s.cmdline,
            "console=ttyS0 quiet panic=-1 rdinit=/linux-init mthp_init=/hello x"
        );
        let l = |t: &str| vec![t.to_string()];
        assert_eq!(
            init_status(&l(
                "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
            )),
            Some(1)
        );
        assert_eq!(init_status(&l("... exitcode=0x00000009")), Some(137));
        assert_eq!(init_status(&l("reboot: Power down")), Some(0));
        assert_eq!(init_status(&l("nothing")), None);
    }
}
