//! The first process `runner run --linux` gives Linux: mounts what our
//! kernel provides without being asked (`/proc`, `/sys`,
//! `/sys/kernel/debug`), then replaces itself with the program named by
//! the `mthp_init=/path` word of the kernel command line (Linux hands
//! unknown `key=value` words to the first process as environment strings),
//! keeping pid 1, its other arguments and its environment.  So a program
//! sees the same files on Linux as on our kernel.  Not used on our kernel
//! (which has no execve).
#![no_std]
#![no_main]

use mthp_user::{Args, entry, println, sys};

#[cfg(target_arch = "x86_64")]
const EXECVE: usize = 59;
#[cfg(target_arch = "aarch64")]
const EXECVE: usize = 221;

/// Room for the argument and environment pointer arrays.
const MAX: usize = 64;

fn main(args: &Args) -> i32 {
    mthp_user::mount_pseudo_fs();

    // The strings below all live in the initial stack, NUL-terminated in
    // place, so their addresses can be handed to execve as they are.
    let mut prog: Option<&[u8]> = None;
    let mut envp = [0usize; MAX + 1];
    let mut ne = 0;
    for e in args.env() {
        if let Some(p) = e.strip_prefix(b"mthp_init=") {
            prog = Some(p);
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
        if na < MAX {
            argv[na] = args.arg(i).unwrap_or(b"").as_ptr() as usize;
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
