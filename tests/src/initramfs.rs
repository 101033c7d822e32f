//! Building the user programs and packing them into a newc cpio initramfs.
use crate::qemu::{Arch, workspace_root};
use std::path::PathBuf;
use std::process::Command;

/// The user programs packed at the root of the initramfs.
pub const PROGRAMS: &[&str] = &[
    "mthp-tests",
    "hello",
    "bench",
    "exhaust",
    "fuzz",
    "pseudofs-survey",
    "matrix",
    "scale",
];

/// `cargo build` the user programs for `arch` and write
/// `target/<target>/initramfs.cpio`; returns its path.
pub fn build(arch: Arch) -> Result<PathBuf, String> {
    build_with(arch, &[], "initramfs.cpio")
}

/// [`build`] with `extra` programs (name, ELF image) added at the root,
/// written to `target/<target>/<file>`.
pub fn build_with(arch: Arch, extra: &[(String, Vec<u8>)], file: &str) -> Result<PathBuf, String> {
    let root = workspace_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "-p",
            "mthp-user",
            "--release",
            "--target",
            arch.target(),
        ])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the {} user programs failed", arch.name()));
    }
    let dir = root.join("target").join(arch.target()).join("release");
    let mut files = Vec::new();
    for p in PROGRAMS {
        let data = std::fs::read(dir.join(p)).map_err(|e| format!("{p}: {e}"))?;
        files.push((p.to_string(), 0o100755u32, data));
    }
    // Your own programs: every regular file of $INITRD_EXTRA goes to the
    // root of the initramfs under its own name (static Linux executables
    // for this arch; `init=/name` runs one).
    if let Some(extra) = std::env::var_os("INITRD_EXTRA").filter(|v| !v.is_empty()) {
        let extra = PathBuf::from(extra);
        let rd = std::fs::read_dir(&extra)
            .map_err(|e| format!("INITRD_EXTRA {}: {e}", extra.display()))?;
        let mut names: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for path in names {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.is_empty() || files.iter().any(|(n, _, _)| *n == name) {
                return Err(format!(
                    "INITRD_EXTRA: {} is empty or clashes with a built-in program",
                    path.display()
                ));
            }
            let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.push((name, 0o100755u32, data));
        }
    }
    for (name, data) in extra {
        files.push((name.clone(), 0o100755u32, data.clone()));
    }
    let out = root.join("target").join(arch.target()).join(file);
    std::fs::write(&out, newc(&files)).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// A newc ("070701") archive of `(name, mode, data)` entries plus the trailer.
pub fn newc(files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1u32;
    let mut entry = |out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]| {
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        ino += 1;
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    for (n, m, d) in files {
        entry(&mut out, n, *m, d);
    }
    entry(&mut out, "TRAILER!!!", 0, &[]);
    while out.len() % 512 != 0 {
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::newc;

    #[test]
    fn newc_layout() {
        let a = newc(&[("abc".into(), 0o100644, b"hello".to_vec())]);
        assert_eq!(&a[..6], b"070701");
        // filesize field (7th) and namesize (12th).
        assert_eq!(&a[6 + 6 * 8..6 + 7 * 8], b"00000005");
        assert_eq!(&a[6 + 11 * 8..6 + 12 * 8], b"00000004");
        // name at 110, padded to 116, data after.
        assert_eq!(&a[110..114], b"abc\0");
        assert_eq!(&a[116..121], b"hello");
        assert!(a.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(a.len() % 512, 0);
    }
}
