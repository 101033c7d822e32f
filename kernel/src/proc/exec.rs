//! Loading a program into a process: the ELF segments with their rights,
//! the stack, and the initial stack contents the Linux ABI promises (argc,
//! argv, envp, auxv with AT_PHDR/PHENT/PHNUM/PAGESZ/ENTRY/RANDOM/EXECFN).
//! Today only the first program is loaded (`process::start_init`); `execve`
//! will load through here too.
use super::process::{PAGE, Process};
use crate::arch;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use mm::abi::errno::Errno;
use mm::abi::uapi::{
    MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, Prot,
};

/// User stack: 8 MiB below the top of user space (the mmap area starts
/// 128 MiB lower, so at least 120 MiB of unmapped gap guards it).
const STACK_SIZE: u64 = 8 << 20;
/// Load base of static-PIE executables (Linux's ELF_ET_DYN_BASE-like).
const PIE_BASE: u64 = 0x5555_5555_4000 & !0xffff;

fn prot_of(flags: u32) -> Prot {
    use crate::proc::elf::{PF_R, PF_W, PF_X};
    let mut p = PROT_NONE;
    if flags & PF_R != 0 {
        p |= PROT_READ;
    }
    if flags & PF_W != 0 {
        p |= PROT_WRITE;
    }
    if flags & PF_X != 0 {
        p |= PROT_EXEC;
    }
    p
}

fn efault<T>(r: Result<T, arch::EFault>) -> Result<T, Errno> {
    r.map_err(|_| Errno::EFAULT)
}

/// Load a static ELF into the (running, empty) process and build the
/// initial stack; returns the user register frame to start it with.
pub(super) fn load_elf(
    p: &Process,
    data: &[u8],
    argv: &[String],
    envp: &[String],
) -> Result<arch::UserFrame, Errno> {
    let elf = crate::proc::elf::Elf::parse(data)?;
    let base = if elf.pie { PIE_BASE } else { 0 };
    let (lo, hi) = elf.span();
    let (lo, hi) = (base + lo, (base + hi).next_multiple_of(PAGE));
    let rw = PROT_READ | PROT_WRITE;
    let fixed = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
    p.with_mm(|mm| mm.mmap(lo, hi - lo, rw, fixed))??;
    for ph in elf.loads() {
        let file = &data[ph.offset as usize..(ph.offset + ph.filesz) as usize];
        efault(arch::copy_to_user(base + ph.vaddr, file))?;
    }
    // Holes between segments stay unmapped; each segment gets its rights.
    let mut prev_end = lo;
    for ph in elf.loads() {
        let s = (base + ph.vaddr) & !(PAGE - 1);
        let e = (base + ph.vaddr + ph.memsz).next_multiple_of(PAGE);
        if s > prev_end {
            p.with_mm(|mm| mm.munmap(prev_end, s - prev_end))??;
        }
        p.with_mm(|mm| mm.mprotect(s, e - s, prot_of(ph.flags)))??;
        prev_end = prev_end.max(e);
    }
    *p.brk.lock() = (hi, hi);

    // The stack.
    let top = arch::USER_TOP.min(0x7fff_ffff_f000);
    p.with_mm(|mm| mm.mmap(top - STACK_SIZE, STACK_SIZE, rw, fixed))??;
    let phdr = elf.phdr_vaddr().map(|v| v + base).unwrap_or(0);
    let sp = build_stack(
        top,
        argv,
        envp,
        &[
            (3, phdr),
            (4, crate::proc::elf::PHENT_SIZE as u64),
            (5, elf.phnum as u64),
            (6, PAGE),
            (7, 0),
            (8, 0),
            (9, base + elf.entry),
            (11, 0),
            (12, 0),
            (13, 0),
            (14, 0),
            (16, 0),
            (17, 100),
            (23, 0),
        ],
    )?;
    p.start_stack.store(sp, Ordering::Relaxed);
    Ok(arch::UserFrame::new_user(base + elf.entry, sp))
}

/// Lay out argc, argv, envp and auxv (Linux ABI) below `top`, with the
/// strings and 16 AT_RANDOM bytes above the vectors; returns the new SP.
fn build_stack(
    top: u64,
    argv: &[String],
    envp: &[String],
    aux: &[(u64, u64)],
) -> Result<u64, Errno> {
    let mut strings: Vec<u8> = Vec::new();
    let mut offs = Vec::new();
    for s in argv.iter().chain(envp.iter()) {
        offs.push(strings.len() as u64);
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
    }
    if strings.len() > 128 * 1024 {
        return Err(Errno::E2BIG);
    }
    let str_base = (top - 16 - strings.len() as u64) & !15;
    let random_at = str_base - 16;
    let mut rnd = [0u8; 16];
    crate::syscall::fill_random(&mut rnd);
    let execfn = str_base; // argv[0]
    let mut words: Vec<u64> = Vec::new();
    words.push(argv.len() as u64);
    for o in &offs[..argv.len()] {
        words.push(str_base + o);
    }
    words.push(0);
    for o in &offs[argv.len()..] {
        words.push(str_base + o);
    }
    words.push(0);
    for &(k, v) in aux {
        words.push(k);
        words.push(v);
    }
    words.extend_from_slice(&[25, random_at, 31, execfn, 0, 0]);
    let sp = (random_at - 8 * words.len() as u64) & !15;
    let mut vec = Vec::with_capacity(words.len() * 8);
    for w in &words {
        vec.extend_from_slice(&w.to_le_bytes());
    }
    efault(arch::copy_to_user(str_base, &strings))?;
    efault(arch::copy_to_user(random_at, &rnd))?;
    efault(arch::copy_to_user(sp, &vec))?;
    Ok(sp)
}
