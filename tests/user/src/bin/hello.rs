//! The smallest user program: prints its arguments and exits 0.
#![no_std]
#![no_main]

use mthp_user::{Args, entry, println};

fn main(args: &Args) -> i32 {
    println!("hello from user space (pid {})", mthp_user::sys::getpid());
    for i in 0..args.argc() {
        let a = args.arg(i).unwrap_or(b"?");
        println!("argv[{}] = {}", i, core::str::from_utf8(a).unwrap_or("?"));
    }
    0
}

entry!(main);
