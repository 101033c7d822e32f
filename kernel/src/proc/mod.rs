//! User processes: what turns a kernel thread into a Linux process.
//!
//! `process.rs` holds the process table, fork, threads (`clone` with
//! `CLONE_THREAD`), exit and wait, the open-file
//! table and the user fault entry that counts `ru_minflt` and kills with
//! SIGSEGV; `exec.rs` loads a program image and its initial stack, and
//! `elf.rs` parses the static executables it loads.  The system
//! calls that operate on processes are in `syscall/`, their address spaces
//! in `mem/uspace.rs`.  `futex.rs` is where user threads sleep on their
//! locks.  Later process work goes here: `execve`, user signal delivery.
pub mod elf;
mod exec;
pub mod futex;
pub mod process;
