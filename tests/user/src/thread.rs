//! Threads without libc: `clone` with the flags of glibc's
//! `pthread_create` ([`clone_thread`]) and `pthread_join`'s wait on the
//! `CLONE_CHILD_CLEARTID` word ([`join_thread`]).  Used by `matrix` and
//! `scale`.

/// The clone flags glibc's `pthread_create` passes (without SETTLS: the
/// thread runs no code that needs TLS).
pub const THREAD_FLAGS: usize = 0x100 // CLONE_VM
    | 0x200 // CLONE_FS
    | 0x400 // CLONE_FILES
    | 0x800 // CLONE_SIGHAND
    | 0x1_0000 // CLONE_THREAD
    | 0x4_0000 // CLONE_SYSVSEM
    | 0x10_0000 // CLONE_PARENT_SETTID
    | 0x20_0000; // CLONE_CHILD_CLEARTID

/// Starts `f(arg)` as a thread of this process on its own stack (the flags
/// of `pthread_create`), with `*ctid` its id until it exits, when the
/// kernel clears it and wakes a futex waiter there; returns the thread's id
/// or the errno.  The thread never returns into Rust code of the parent's
/// stack: it calls `f` on the new stack and exits (only itself).
pub fn clone_thread(
    f: extern "C" fn(usize) -> usize,
    arg: usize,
    stack_top: usize,
    ctid: &core::sync::atomic::AtomicU32,
) -> isize {
    let ctid = ctid.as_ptr() as usize;
    let ret: isize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: clone(flags, stack, ptid, ctid, tls): in the child (rax 0) the
    // new stack is used only by `f`, called with `arg`, followed by exit;
    // the parent resumes with rax = the thread's id.  r12/r13 survive
    // syscall; `ctid` outlives the thread (the caller waits for it).
    unsafe {
        core::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "mov rdi, rax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") crate::sys::nr::CLONE as isize => ret,
            in("rdi") THREAD_FLAGS, in("rsi") stack_top, in("rdx") ctid,
            in("r10") ctid, in("r8") 0usize,
            in("r12") arg, in("r13") f as usize,
            lateout("rcx") _, lateout("r11") _,
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as for x86_64 (arm64 order: flags, stack, ptid, tls, ctid):
    // x9/x10 survive svc; the child calls `f` on its own stack and exits (93).
    unsafe {
        core::arch::asm!(
            "svc #0",
            "cbnz x0, 2f",
            "mov x0, x9",
            "blr x10",
            "mov x8, #93",
            "svc #0",
            "brk #0",
            "2:",
            inlateout("x0") THREAD_FLAGS as isize => ret,
            in("x1") stack_top, in("x2") ctid, in("x3") 0usize, in("x4") ctid,
            in("x8") crate::sys::nr::CLONE,
            in("x9") arg, in("x10") f as usize,
            lateout("x30") _,
        );
    }
    ret
}

/// Wait until the thread whose `ctid` word this is has exited (the kernel
/// zeroes it and wakes us), at most about `secs` seconds.
pub fn join_thread(ctid: &core::sync::atomic::AtomicU32, secs: u64) -> bool {
    const FUTEX_WAIT: usize = 0;
    let timeout = [1usize, 0]; // one second per wait
    for _ in 0..secs {
        let v = ctid.load(core::sync::atomic::Ordering::Acquire);
        if v == 0 {
            return true;
        }
        crate::sys::syscall6(
            crate::sys::nr::FUTEX,
            [
                ctid.as_ptr() as usize,
                FUTEX_WAIT,
                v as usize,
                timeout.as_ptr() as usize,
                0,
                0,
            ],
        );
    }
    ctid.load(core::sync::atomic::Ordering::Acquire) == 0
}
