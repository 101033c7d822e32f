//! Fault-tolerant memory probes and the exception fixup table.
//!
//! Each instruction that may fault on purpose gets an entry in the
//! `.x86_extable` section (collected by the linker script between
//! `__extable_start` and `__extable_end`): the faulting RIP, the RIP to
//! resume at, and the kind of access.  On a fault at a listed RIP the trap
//! handler records the fault, sets RAX = 1 and resumes at the fixup.
//!
//! `probe_exec` cannot list the faulting RIP (it is the probed address), so
//! it registers itself in the CPU's `ProbeState` while it calls the target: a fault whose
//! RIP is the target resumes at its landing pad with the saved stack pointer.
use crate::trap::{Access, FaultInfo, TrapFrame};
use core::arch::naked_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[repr(C)]
struct ExEntry {
    insn: u64,
    fixup: u64,
    /// 0 = read, 1 = write, 2 = exec.
    kind: u64,
}

unsafe extern "C" {
    static __extable_start: ExEntry;
    static __extable_end: ExEntry;
    static x86_probe_exec_call: u8;
    static x86_probe_exec_fault: u8;
}

fn extable() -> &'static [ExEntry] {
    // SAFETY: the linker script collects every `.x86_extable` input section
    // (only `ExEntry` triples, emitted below) between the two symbols.
    unsafe {
        let s = &raw const __extable_start;
        let e = &raw const __extable_end;
        core::slice::from_raw_parts(
            s,
            (e as usize - s as usize) / core::mem::size_of::<ExEntry>(),
        )
    }
}

/// The result of a probe's asm: `status` 0 = done, 1 = faulted; `val` = the loaded value.
#[repr(C)]
struct ProbeRet {
    status: u64,
    val: u64,
}

/// A CPU's probe state (in its `percpu::PerCpu`): the last caught fault,
/// read by the probe right after the fault on the same CPU (probes run
/// with interrupts masked, so nothing else on that CPU records in between,
/// and other CPUs have their own), and the `probe_exec` in progress.
#[derive(Default)]
pub struct ProbeState {
    last_addr: AtomicU64,
    last_pc: AtomicU64,
    last_flags: AtomicU64,
    exec_active: AtomicBool,
    exec_target: AtomicU64,
    /// RSP of `probe_exec_asm` just before it calls the target.
    exec_rsp: AtomicU64,
}

impl ProbeState {
    pub const fn new() -> ProbeState {
        ProbeState {
            last_addr: AtomicU64::new(0),
            last_pc: AtomicU64::new(0),
            last_flags: AtomicU64::new(0),
            exec_active: AtomicBool::new(false),
            exec_target: AtomicU64::new(0),
            exec_rsp: AtomicU64::new(0),
        }
    }
}

/// The running CPU's probe state (interrupts are masked by every caller).
fn state() -> &'static ProbeState {
    &crate::percpu::this().probe
}

fn record(info: &FaultInfo) {
    let access = match info.access {
        Access::Read => 0,
        Access::Write => 1,
        Access::Exec => 2,
    };
    let st = state();
    st.last_addr.store(info.addr, Ordering::Relaxed);
    st.last_pc.store(info.pc, Ordering::Relaxed);
    st.last_flags.store(
        access | (u64::from(info.user) << 8) | (u64::from(info.permission) << 9),
        Ordering::Relaxed,
    );
}

fn last_fault() -> FaultInfo {
    let st = state();
    let f = st.last_flags.load(Ordering::Relaxed);
    FaultInfo {
        addr: st.last_addr.load(Ordering::Relaxed),
        pc: st.last_pc.load(Ordering::Relaxed),
        access: match f & 0xFF {
            0 => Access::Read,
            1 => Access::Write,
            _ => Access::Exec,
        },
        user: f & (1 << 8) != 0,
        permission: f & (1 << 9) != 0,
    }
}

/// Called by the trap handler for #PF/#GP: if the faulting RIP has a fixup,
/// record `info`, redirect the frame and return true.
pub fn fixup(frame: &mut TrapFrame, mut info: FaultInfo) -> bool {
    let st = state();
    if st.exec_active.load(Ordering::Relaxed) {
        let call = &raw const x86_probe_exec_call as u64;
        let target = st.exec_target.load(Ordering::Relaxed);
        if frame.rip == target || frame.rip == call {
            if frame.vector == 13 {
                info.addr = target;
                info.access = Access::Exec;
            }
            record(&info);
            frame.rip = &raw const x86_probe_exec_fault as u64;
            frame.rsp = st.exec_rsp.load(Ordering::Relaxed);
            frame.rax = 1;
            return true;
        }
    }
    if let Some(e) = extable().iter().find(|e| e.insn == frame.rip) {
        if frame.vector == 13 {
            info.access = if e.kind == 1 {
                Access::Write
            } else {
                Access::Read
            };
        }
        record(&info);
        frame.rip = e.fixup;
        frame.rax = 1;
        return true;
    }
    false
}

#[unsafe(naked)]
unsafe extern "C" fn probe_read_asm(_va: u64) -> ProbeRet {
    naked_asm!(
        "xor eax, eax",
        "2:",
        "mov rdx, qword ptr [rdi]",
        "3:",
        "ret",
        ".pushsection .x86_extable,\"a\",@progbits",
        ".balign 8",
        ".quad 2b, 3b, 0",
        ".popsection",
    )
}

#[unsafe(naked)]
unsafe extern "C" fn probe_write_asm(_va: u64, _val: u64) -> ProbeRet {
    naked_asm!(
        "xor eax, eax",
        "xor edx, edx",
        "2:",
        "mov qword ptr [rdi], rsi",
        "3:",
        "ret",
        ".pushsection .x86_extable,\"a\",@progbits",
        ".balign 8",
        ".quad 2b, 3b, 1",
        ".popsection",
    )
}

#[unsafe(naked)]
unsafe extern "C" fn probe_exec_asm(_va: u64, _rsp_slot: *mut u64) -> ProbeRet {
    naked_asm!(
        "push rbp",
        "mov rbp, rsp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "sub rsp, 8",
        "mov qword ptr [rsi], rsp",
        ".global x86_probe_exec_call",
        "x86_probe_exec_call:",
        "call rdi",
        "xor eax, eax",
        "jmp 2f",
        ".global x86_probe_exec_fault",
        "x86_probe_exec_fault:",
        "mov eax, 1",
        "2:",
        "xor edx, edx",
        "add rsp, 8",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

/// Read 8 bytes at `va`; a fault is caught and returned.
pub fn probe_read(va: u64) -> Result<u64, FaultInfo> {
    // Masked so that no other thread's probe overwrites the recorded fault.
    let irq = crate::cpu::irq_save();
    // SAFETY: the load is covered by the fixup table, so a fault returns an
    // error instead of crashing; a successful load of mapped memory has no
    // effect beyond reading it.
    let r = unsafe { probe_read_asm(va) };
    let res = if r.status == 0 {
        Ok(r.val)
    } else {
        Err(last_fault())
    };
    crate::cpu::irq_restore(irq);
    res
}

/// Write 8 bytes at `va`; a fault is caught and returned.
///
/// This really writes when the page is writable: only use it on memory the
/// caller owns or expects to be read-only.
pub fn probe_write(va: u64, val: u64) -> Result<(), FaultInfo> {
    let irq = crate::cpu::irq_save();
    // SAFETY: the store is covered by the fixup table; per the API contract
    // the caller only probes memory it owns or expects to be read-only.
    let r = unsafe { probe_write_asm(va, val) };
    let res = if r.status == 0 {
        Ok(())
    } else {
        Err(last_fault())
    };
    crate::cpu::irq_restore(irq);
    res
}

/// Call `va` (which should hold a `ret`); an instruction-fetch fault at `va`
/// is caught and returned.  Other faults inside the called code are not.
pub fn probe_exec(va: u64) -> Result<(), FaultInfo> {
    let irq = crate::cpu::irq_save();
    let st = state();
    st.exec_target.store(va, Ordering::Relaxed);
    st.exec_active.store(true, Ordering::Relaxed);
    // SAFETY: a fetch fault at `va` is redirected to the landing pad with
    // the saved stack (stored in this CPU's slot); per the API contract
    // `va` holds a `ret` otherwise.
    let r = unsafe { probe_exec_asm(va, st.exec_rsp.as_ptr()) };
    st.exec_active.store(false, Ordering::Relaxed);
    let res = if r.status == 0 {
        Ok(())
    } else {
        Err(last_fault())
    };
    crate::cpu::irq_restore(irq);
    res
}
