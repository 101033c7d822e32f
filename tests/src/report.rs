//! Where the runner's benchmark and matrix reports go: printed, then
//! written under `target/<dir>/`, one function for every report so they
//! all name and place their files alike.

use crate::qemu::{self, Arch};
use std::path::PathBuf;
use std::process::ExitCode;

/// `a+b` for the architectures a report covers (part of its file name).
pub fn arch_names(arches: &[Arch]) -> String {
    arches
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join("+")
}

/// Writes each `(file name, body)` under `target/<dir>/`, saying where;
/// false if one could not be written (said on stderr).
pub fn write(dir: &str, files: &[(String, &str)]) -> bool {
    let dir: PathBuf = qemu::workspace_root().join("target").join(dir);
    let _ = std::fs::create_dir_all(&dir);
    let mut ok = true;
    for (name, body) in files {
        let p = dir.join(name);
        match std::fs::write(&p, body) {
            Ok(()) => println!("wrote {}", p.display()),
            Err(e) => {
                eprintln!("{}: {e}", p.display());
                ok = false;
            }
        }
    }
    ok
}

/// The exit status of a run that was `ok`.
pub fn status(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
