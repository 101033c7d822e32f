//! FP/SIMD register probes for the FPU tests.  [`run`] is one `asm!`
//! block that loads every vector register and the FP control register
//! from a pattern, spins in a register-only loop (where only the timer
//! can take the CPU away), makes system calls (yields, and optionally a
//! fork), and stores the registers back: nothing compiled by Rust runs in
//! between, so what comes back is what the kernel preserved.

/// Vector registers compared: xmm0-15 (x86_64), v0-v31 (arm64).
#[cfg(target_arch = "x86_64")]
pub const NREGS: usize = 16;
#[cfg(target_arch = "aarch64")]
pub const NREGS: usize = 32;

/// Every vector register (128 bits each) and the control register
/// (MXCSR / FPCR).
#[repr(C, align(16))]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Regs {
    pub v: [[u64; 2]; NREGS],
    pub ctl: u64,
}

impl Regs {
    /// A pattern derived from `seed`, with a non-default rounding mode
    /// (`mode` 1 or 2) in the control register.
    pub fn pattern(seed: u64, mode: u64) -> Regs {
        let mut v = [[0u64; 2]; NREGS];
        for (i, r) in v.iter_mut().enumerate() {
            let x = seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(i as u64);
            *r = [x, !x.rotate_left(17)];
        }
        #[cfg(target_arch = "x86_64")]
        let ctl = 0x1f80 | (mode << 13); // MXCSR.RC
        #[cfg(target_arch = "aarch64")]
        let ctl = mode << 22; // FPCR.RMode
        Regs { v, ctl }
    }

    pub fn zeroed() -> Regs {
        Regs {
            v: [[0; 2]; NREGS],
            ctl: 0,
        }
    }
}

/// Load `input`, count `spins` down in a loop without system calls, call
/// `sched_yield` `yields` times, then fork (`clone(SIGCHLD)`) if `fork`,
/// and store the registers into `out`.  Returns the last system call's
/// result (0 if none was made).
#[cfg(target_arch = "x86_64")]
pub fn run(input: &Regs, out: &mut Regs, spins: usize, yields: usize, fork: bool) -> isize {
    let ret: isize;
    // SAFETY: the block reads `input` and writes `out` (both 16-byte
    // aligned `Regs`) and makes system calls, clobbering what the syscall
    // ABI clobbers (declared).  The xmm registers it changes are not
    // declared (the target is soft-float, so compiled code never uses them
    // and the compiler would refuse the declaration); MXCSR goes back to
    // its default at the end.
    unsafe {
        core::arch::asm!(
            "xor eax, eax",
            "movdqu xmm0, [r12]", "movdqu xmm1, [r12 + 16]",
            "movdqu xmm2, [r12 + 32]", "movdqu xmm3, [r12 + 48]",
            "movdqu xmm4, [r12 + 64]", "movdqu xmm5, [r12 + 80]",
            "movdqu xmm6, [r12 + 96]", "movdqu xmm7, [r12 + 112]",
            "movdqu xmm8, [r12 + 128]", "movdqu xmm9, [r12 + 144]",
            "movdqu xmm10, [r12 + 160]", "movdqu xmm11, [r12 + 176]",
            "movdqu xmm12, [r12 + 192]", "movdqu xmm13, [r12 + 208]",
            "movdqu xmm14, [r12 + 224]", "movdqu xmm15, [r12 + 240]",
            "ldmxcsr [r12 + 256]",
            "5:",
            "test r9, r9",
            "jz 2f",
            "dec r9",
            "jmp 5b",
            "2:",
            "test r14, r14",
            "jz 3f",
            "mov eax, 24",
            "syscall",
            "dec r14",
            "jmp 2b",
            "3:",
            "test r15, r15",
            "jz 4f",
            "mov eax, 56",
            "mov edi, 17",
            "xor esi, esi",
            "xor edx, edx",
            "xor r10d, r10d",
            "xor r8d, r8d",
            "syscall",
            "4:",
            "movdqu [r13], xmm0", "movdqu [r13 + 16], xmm1",
            "movdqu [r13 + 32], xmm2", "movdqu [r13 + 48], xmm3",
            "movdqu [r13 + 64], xmm4", "movdqu [r13 + 80], xmm5",
            "movdqu [r13 + 96], xmm6", "movdqu [r13 + 112], xmm7",
            "movdqu [r13 + 128], xmm8", "movdqu [r13 + 144], xmm9",
            "movdqu [r13 + 160], xmm10", "movdqu [r13 + 176], xmm11",
            "movdqu [r13 + 192], xmm12", "movdqu [r13 + 208], xmm13",
            "movdqu [r13 + 224], xmm14", "movdqu [r13 + 240], xmm15",
            "stmxcsr [r13 + 256]",
            "mov dword ptr [r13 + 260], 0",
            // MXCSR back to its default.
            "push 0x1f80",
            "ldmxcsr [rsp]",
            "add rsp, 8",
            in("r12") input as *const Regs,
            in("r13") out as *mut Regs,
            inout("r9") spins => _,
            inout("r14") yields => _,
            in("r15") usize::from(fork),
            out("rax") ret,
            out("rcx") _, out("r11") _, out("rdi") _, out("rsi") _,
            out("rdx") _, out("r10") _, out("r8") _,
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
pub fn run(input: &Regs, out: &mut Regs, spins: usize, yields: usize, fork: bool) -> isize {
    let ret: isize;
    // SAFETY: the block reads `input` and writes `out` (both 16-byte
    // aligned `Regs`) and makes system calls, clobbering what the syscall
    // ABI clobbers and every vector register (all declared); FPCR goes
    // back to its default (0) at the end.
    unsafe {
        core::arch::asm!(
            "mov x0, #0",
            "ldp q0, q1, [x23]", "ldp q2, q3, [x23, #32]",
            "ldp q4, q5, [x23, #64]", "ldp q6, q7, [x23, #96]",
            "ldp q8, q9, [x23, #128]", "ldp q10, q11, [x23, #160]",
            "ldp q12, q13, [x23, #192]", "ldp q14, q15, [x23, #224]",
            "ldp q16, q17, [x23, #256]", "ldp q18, q19, [x23, #288]",
            "ldp q20, q21, [x23, #320]", "ldp q22, q23, [x23, #352]",
            "ldp q24, q25, [x23, #384]", "ldp q26, q27, [x23, #416]",
            "ldp q28, q29, [x23, #448]", "ldp q30, q31, [x23, #480]",
            "ldr x9, [x23, #512]",
            "msr fpcr, x9",
            "5:",
            "cbz x27, 2f",
            "sub x27, x27, #1",
            "b 5b",
            "2:",
            "cbz x25, 3f",
            "mov x8, #124",
            "svc #0",
            "sub x25, x25, #1",
            "b 2b",
            "3:",
            "cbz x26, 4f",
            "mov x8, #220",
            "mov x0, #17",
            "mov x1, #0",
            "mov x2, #0",
            "mov x3, #0",
            "mov x4, #0",
            "svc #0",
            "4:",
            "stp q0, q1, [x24]", "stp q2, q3, [x24, #32]",
            "stp q4, q5, [x24, #64]", "stp q6, q7, [x24, #96]",
            "stp q8, q9, [x24, #128]", "stp q10, q11, [x24, #160]",
            "stp q12, q13, [x24, #192]", "stp q14, q15, [x24, #224]",
            "stp q16, q17, [x24, #256]", "stp q18, q19, [x24, #288]",
            "stp q20, q21, [x24, #320]", "stp q22, q23, [x24, #352]",
            "stp q24, q25, [x24, #384]", "stp q26, q27, [x24, #416]",
            "stp q28, q29, [x24, #448]", "stp q30, q31, [x24, #480]",
            "mrs x9, fpcr",
            "str x9, [x24, #512]",
            "msr fpcr, xzr",
            in("x23") input as *const Regs,
            in("x24") out as *mut Regs,
            inout("x27") spins => _,
            inout("x25") yields => _,
            in("x26") usize::from(fork),
            out("x0") ret,
            out("x1") _, out("x2") _, out("x3") _, out("x4") _,
            out("x8") _, out("x9") _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
        );
    }
    ret
}
