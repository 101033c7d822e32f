//! Interrupt descriptor table, entry stubs and exception dispatch.
//!
//! Each vector has a tiny asm stub that pushes a dummy error code (when the
//! CPU does not push one) and the vector number, then jumps to a common path
//! that saves every general-purpose register into a [`TrapFrame`] on the
//! stack and calls [`trap_dispatch`].  Returning from `trap_dispatch` restores
//! the (possibly modified) frame and `iretq`s.
//!
//! Page faults go to the registered fault handler first, then to the
//! exception fixup table (`probe_*`), and only then are reported as fatal.
use crate::cpu;
use crate::gdt;
use crate::serial::kprint;
use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering};

pub const TIMER_VECTOR: u8 = 0x20;
pub const SPURIOUS_VECTOR: u8 = 0xFF;

/// What the faulting access was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

/// A page fault (or a caught #GP of a probe) as seen by the portable kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInfo {
    /// The faulting virtual address (CR2; for a non-canonical probe, the probed address).
    pub addr: u64,
    /// RIP of the faulting instruction.
    pub pc: u64,
    pub access: Access,
    /// The access came from user mode (CPL 3).
    pub user: bool,
    /// The entry was present: a protection fault rather than a missing page.
    pub permission: bool,
}

/// Registers saved by the entry stubs, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    // Pushed by the CPU.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// The common entry path.  On entry RSP is 16-byte aligned minus the vector
// and error code (the CPU aligns before pushing its 5-qword frame + error
// code = 48 bytes, the stub pushes the vector): 8 + 15 register pushes keep
// the call below 16-byte aligned.
global_asm!(
    ".section .text.trap,\"ax\",@progbits",
    ".global x86_trap_common",
    "x86_trap_common:",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rdi, rsp",
    "cld",
    "call {dispatch}",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "add rsp, 16",
    "iretq",
    dispatch = sym trap_dispatch,
);

/// One stub per vector; `err` marks vectors where the CPU pushes an error code.
macro_rules! stubs {
    ($($v:literal $kind:ident),* $(,)?) => {
        $( stubs!(@one $v $kind); )*
        global_asm!(concat!(
            ".section .rodata.trap_stubs,\"a\",@progbits\n",
            ".balign 8\n",
            ".global x86_trap_stub_table\n",
            "x86_trap_stub_table:\n",
            $( ".quad ", $v, ", x86_trap_stub_", $v, "\n", )*
            ".global x86_trap_stub_table_end\n",
            "x86_trap_stub_table_end:\n",
        ));
    };
    (@one $v:literal err) => {
        global_asm!(concat!(
            ".section .text.trap,\"ax\",@progbits\n",
            "x86_trap_stub_", $v, ":\n",
            "push ", $v, "\n",
            "jmp x86_trap_common\n",
        ));
    };
    (@one $v:literal noerr) => {
        global_asm!(concat!(
            ".section .text.trap,\"ax\",@progbits\n",
            "x86_trap_stub_", $v, ":\n",
            "push 0\n",
            "push ", $v, "\n",
            "jmp x86_trap_common\n",
        ));
    };
}

stubs!(
    0 noerr, 1 noerr, 2 noerr, 3 noerr, 4 noerr, 5 noerr, 6 noerr, 7 noerr,
    8 err, 9 noerr, 10 err, 11 err, 12 err, 13 err, 14 err, 15 noerr,
    16 noerr, 17 err, 18 noerr, 19 noerr, 20 noerr, 21 err, 22 noerr, 23 noerr,
    24 noerr, 25 noerr, 26 noerr, 27 noerr, 28 noerr, 29 err, 30 err, 31 noerr,
    32 noerr, 255 noerr,
);

#[repr(C)]
#[derive(Clone, Copy)]
struct StubEntry {
    vector: u64,
    addr: u64,
}

unsafe extern "C" {
    static x86_trap_stub_table: StubEntry;
    static x86_trap_stub_table_end: StubEntry;
}

#[repr(C, align(16))]
struct Idt([u64; 512]);

static mut IDT: Idt = Idt([0; 512]);

#[repr(C, packed(2))]
struct DescPtr {
    limit: u16,
    base: u64,
}

fn stub_table() -> &'static [StubEntry] {
    // SAFETY: the asm above emits an array of `StubEntry` between the two
    // symbols, in read-only data.
    unsafe {
        let s = &raw const x86_trap_stub_table;
        let e = &raw const x86_trap_stub_table_end;
        core::slice::from_raw_parts(
            s,
            (e as usize - s as usize) / core::mem::size_of::<StubEntry>(),
        )
    }
}

/// Fill the IDT (interrupt gates, DPL 0; the double fault on IST1) and load it.
/// Idempotent: the kernel calls it again through `init_interrupts`.
pub fn init() {
    // SAFETY: single CPU, interrupts off during init; the IDT is a static so
    // its address stays valid after `lidt`.
    unsafe {
        let idt = &raw mut IDT;
        for e in stub_table() {
            let v = e.vector as usize;
            let ist = if v == 8 {
                u64::from(gdt::IST_DOUBLE_FAULT)
            } else {
                0
            };
            let low = (e.addr & 0xFFFF)
                | (u64::from(gdt::KERNEL_CS) << 16)
                | (ist << 32)
                | (0x8E << 40) // present, DPL0, 64-bit interrupt gate
                | (((e.addr >> 16) & 0xFFFF) << 48);
            (*idt).0[2 * v] = low;
            (*idt).0[2 * v + 1] = e.addr >> 32;
        }
        let ptr = DescPtr {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: idt as u64,
        };
        core::arch::asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
    }
}

/// RFLAGS.IF: interrupts enabled.
const RFLAGS_IF: u64 = 1 << 9;

static FAULT_HANDLER: AtomicUsize = AtomicUsize::new(0);
static TICK_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Install the page-fault handler consulted before the fixup table.
pub fn set_fault_handler(f: fn(&FaultInfo) -> bool) {
    FAULT_HANDLER.store(f as usize, Ordering::Release);
}

/// Install the function called on every timer tick (after counting it).
pub fn set_tick_hook(f: fn()) {
    TICK_HOOK.store(f as usize, Ordering::Release);
}

fn fault_handler() -> Option<fn(&FaultInfo) -> bool> {
    let p = FAULT_HANDLER.load(Ordering::Acquire);
    // SAFETY: only `set_fault_handler` stores non-zero values, all of them
    // valid `fn(&FaultInfo) -> bool` pointers.
    (p != 0).then(|| unsafe { core::mem::transmute::<usize, fn(&FaultInfo) -> bool>(p) })
}

fn tick_hook() -> Option<fn()> {
    let p = TICK_HOOK.load(Ordering::Acquire);
    // SAFETY: only `set_tick_hook` stores non-zero values, all valid `fn()`s.
    (p != 0).then(|| unsafe { core::mem::transmute::<usize, fn()>(p) })
}

const PF_PRESENT: u64 = 1 << 0;
const PF_WRITE: u64 = 1 << 1;
const PF_USER: u64 = 1 << 2;
const PF_RSVD: u64 = 1 << 3;
const PF_IFETCH: u64 = 1 << 4;

/// Decode a page-fault error code into a `FaultInfo`.
pub fn page_fault_info(err: u64, addr: u64, pc: u64) -> FaultInfo {
    let access = if err & PF_IFETCH != 0 {
        Access::Exec
    } else if err & PF_WRITE != 0 {
        Access::Write
    } else {
        Access::Read
    };
    FaultInfo {
        addr,
        pc,
        access,
        user: err & PF_USER != 0,
        permission: err & PF_PRESENT != 0,
    }
}

/// Called by the common stub with interrupts off.
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    crate::user::clear_ac();
    let v = frame.vector as u8;
    match v {
        TIMER_VECTOR => {
            crate::timer::on_tick(tick_hook());
            // After the EOI and the tick hook, still masked: may switch threads.
            crate::context::run_irq_exit_hook();
        }
        SPURIOUS_VECTOR => {}
        14 => {
            let cr2 = cpu::read_cr2();
            // kvm-pvm runs a user SYSCALL without leaving ring 3 (user.rs).
            if frame.cs & 3 == 3
                && frame.error & PF_IFETCH != 0
                && crate::user::pvm_syscall_fault(frame, cr2)
            {
                return;
            }
            let info = page_fault_info(frame.error, cr2, frame.rip);
            if frame.error & PF_RSVD == 0
                && let Some(h) = fault_handler()
            {
                // As Linux: resolve the fault with interrupts on when the
                // faulting code had them on, so timer ticks are not held
                // back by a long fault and the handler can yield to a
                // preempted lock holder (the kernel's hook never spins on
                // an address space's locks).  CR2 was read above.
                let irq_on = frame.rflags & RFLAGS_IF != 0;
                if irq_on {
                    cpu::irq_enable();
                }
                let done = h(&info);
                if irq_on {
                    cpu::irq_disable();
                }
                if done {
                    return;
                }
            }
            if frame.cs & 3 == 3 {
                crate::user::user_exception(frame, Some(&info));
                return;
            }
            if crate::probe::fixup(frame, info) {
                return;
            }
            fatal(frame, Some(cr2));
        }
        13 if frame.cs & 3 == 3 => crate::user::user_exception(frame, None),
        13 => {
            // A non-canonical probe address raises #GP, not #PF.
            let info = FaultInfo {
                addr: frame.rdi,
                pc: frame.rip,
                access: Access::Read,
                user: false,
                permission: false,
            };
            if crate::probe::fixup(frame, info) {
                return;
            }
            fatal(frame, None);
        }
        8 => fatal(frame, Some(cpu::read_cr2())),
        0..32 if frame.cs & 3 == 3 => crate::user::user_exception(frame, None),
        _ => fatal(frame, None),
    }
}

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved (15)",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD exception",
    "#VE virtualization",
    "#CP control protection",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved (31)",
];

/// Print a decoded report of an unexpected exception and fail the run.
fn fatal(f: &TrapFrame, cr2: Option<u64>) -> ! {
    let v = f.vector as usize;
    let name = NAMES.get(v).copied().unwrap_or("unexpected interrupt");
    kprint!(
        "\n*** EXCEPTION {} (vector {}) error code {:#x}\n",
        name,
        v,
        f.error
    );
    if let (8, Some(a)) = (v, cr2) {
        kprint!("    CR2 {:#018x} (last page-fault address)\n", a);
    } else if let Some(a) = cr2 {
        let e = f.error;
        kprint!(
            "    CR2 {:#018x}: {} {} {}{}{}\n",
            a,
            if e & PF_PRESENT != 0 {
                "protection-violation"
            } else {
                "not-present"
            },
            if e & PF_IFETCH != 0 {
                "instruction-fetch"
            } else if e & PF_WRITE != 0 {
                "write"
            } else {
                "read"
            },
            if e & PF_USER != 0 { "user" } else { "kernel" },
            if e & PF_RSVD != 0 {
                " reserved-bit"
            } else {
                ""
            },
            if e & (1 << 5) != 0 {
                " protection-key"
            } else {
                ""
            },
        );
        if let Some(t) = crate::paging::kernel_translate(a) {
            kprint!("    mapped: {:?}\n", t);
        }
    }
    kprint!(
        "    RIP {:#018x}  CS {:#x}  RFLAGS {:#x}\n",
        f.rip,
        f.cs,
        f.rflags
    );
    kprint!("    RSP {:#018x}  SS {:#x}\n", f.rsp, f.ss);
    kprint!(
        "    RAX {:#018x} RBX {:#018x} RCX {:#018x}\n",
        f.rax,
        f.rbx,
        f.rcx
    );
    kprint!(
        "    RDX {:#018x} RSI {:#018x} RDI {:#018x}\n",
        f.rdx,
        f.rsi,
        f.rdi
    );
    kprint!(
        "    RBP {:#018x} R8  {:#018x} R9  {:#018x}\n",
        f.rbp,
        f.r8,
        f.r9
    );
    kprint!(
        "    R10 {:#018x} R11 {:#018x} R12 {:#018x}\n",
        f.r10,
        f.r11,
        f.r12
    );
    kprint!(
        "    R13 {:#018x} R14 {:#018x} R15 {:#018x}\n",
        f.r13,
        f.r14,
        f.r15
    );
    kprint!(
        "    CR0 {:#x} CR3 {:#x} CR4 {:#x}\n",
        cpu::read_cr0(),
        cpu::read_cr3(),
        cpu::read_cr4()
    );
    if v == 8 {
        kprint!(
            "    (double fault: on the IST1 stack; a kernel stack overflow hits the guard page first)\n"
        );
    }
    crate::exit(false);
}
