//! The first process `runner run --linux` gives Linux: mounts what our
//! kernel provides without being asked (`/proc`, `/sys`,
//! `/sys/kernel/debug`), then replaces itself with the program named by
//! the `mthp_init=/path` word of the kernel command line (Linux hands
//! unknown `key=value` words to the first process as environment strings),
//! keeping pid 1, its other arguments and its environment.  So a program
//! sees the same files on Linux as on our kernel.  tmpfs goes on `/tmp`
//! and `/dev/shm`, as a distribution's init mounts them.  Not used on our kernel
//! (which has no execve).
//!
//! Before that, for the swap disk: devtmpfs goes on `/dev` (Debian's
//! kernel does not mount it itself, `CONFIG_DEVTMPFS_MOUNT` is off), the
//! modules listed in `/modules/load` are loaded in that order
//! (`finit_module` of the `.ko.xz` with `MODULE_INIT_COMPRESSED_FILE`:
//! the kernel decompresses them), and with `mthp_disk=1` on the command
//! line (the runner attached a disk) it waits up to 5 s for `/dev/vda`.
#![no_std]
#![no_main]

use mthp_user::{Args, entry, nul_str, path, println, read_file, sys};

#[cfg(target_arch = "x86_64")]
const EXECVE: usize = 59;
#[cfg(target_arch = "aarch64")]
const EXECVE: usize = 221;
#[cfg(target_arch = "x86_64")]
const FINIT_MODULE: usize = 313;
#[cfg(target_arch = "aarch64")]
const FINIT_MODULE: usize = 273;
/// `finit_module` flag: the file is compressed; the kernel decompresses it.
const MODULE_INIT_COMPRESSED_FILE: usize = 4;

/// Mounts devtmpfs on `/dev` and loads the modules of `/modules/load`.
fn load_modules() {
    sys::syscall(
        sys::nr::MOUNT,
        &[
            c"devtmpfs".as_ptr() as usize,
            c"/dev".as_ptr() as usize,
            c"devtmpfs".as_ptr() as usize,
            0,
            0,
        ],
    );
    let mut list = [0u8; 512];
    let Ok(n) = read_file(b"/modules/load\0", &mut list) else {
        return;
    };
    for name in list[..n].split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        let p = path!("/modules/{}", core::str::from_utf8(name).unwrap_or("?"));
        let fd = sys::open(p.c(), sys::O_RDONLY);
        if fd < 0 {
            println!("linux-init: open {}: errno {}", nul_str(p.c()), -fd);
            continue;
        }
        let r = sys::syscall(
            FINIT_MODULE,
            &[
                fd as usize,
                c"".as_ptr() as usize,
                MODULE_INIT_COMPRESSED_FILE,
            ],
        );
        // EEXIST: built in or already loaded.
        if r < 0 && r != -(sys::EEXIST as isize) {
            println!("linux-init: finit_module {}: errno {}", nul_str(p.c()), -r);
        }
        sys::close(fd as i32);
    }
}

/// Waits up to 5 s for `/dev/vda` to appear.
fn wait_for_disk() {
    for _ in 0..500 {
        let fd = sys::open(b"/dev/vda\0", sys::O_RDONLY);
        if fd >= 0 {
            sys::close(fd as i32);
            return;
        }
        sys::nanosleep(&sys::Timespec {
            sec: 0,
            nsec: 10_000_000,
        });
    }
    println!("linux-init: no /dev/vda after 5 s");
}

/// Room for the argument and environment pointer arrays.
const MAX: usize = 64;

fn main(args: &Args) -> i32 {
    mthp_user::mount_pseudo_fs();
    load_modules();
    // After devtmpfs went on /dev (in load_modules).
    mthp_user::mount_tmpfs_dirs();

    // The strings below all live in the initial stack, NUL-terminated in
    // place, so their addresses can be handed to execve as they are.
    let mut prog: Option<&[u8]> = None;
    let mut envp = [0usize; MAX + 1];
    let mut ne = 0;
    for e in args.env() {
        if let Some(p) = e.strip_prefix(b"mthp_init=") {
            prog = Some(p);
        } else if e == b"mthp_disk=1" {
            wait_for_disk();
        } else if ne < MAX {
            envp[ne] = e.as_ptr() as usize;
            ne += 1;
        }
    }
    let Some(prog) = prog else {
        println!("linux-init: no mthp_init=/path word on the command line");
        return 127;
    };
    let mut argv = [0usize; MAX + 1];
    argv[0] = prog.as_ptr() as usize;
    let mut na = 1;
    for i in 1..args.argc() {
        let a = args.arg(i).unwrap_or(b"");
        // The runner's `--tlb-model` appends `nokaslr`; x86 Linux reads it
        // in its boot code but then hands it on as an unknown word.
        if a == b"nokaslr" {
            continue;
        }
        if na < MAX {
            argv[na] = a.as_ptr() as usize;
            na += 1;
        }
    }
    let r = sys::syscall(
        EXECVE,
        &[
            prog.as_ptr() as usize,
            argv.as_ptr() as usize,
            envp.as_ptr() as usize,
        ],
    );
    println!(
        "linux-init: execve {} failed: {}",
        core::str::from_utf8(prog).unwrap_or("?"),
        r
    );
    127
}

entry!(main);
