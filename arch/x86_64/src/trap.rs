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
use crate::console::kprint;
use crate::cpu;
use crate::gdt;
use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering};
use x86_64::VirtAddr;
use x86_64::registers::control::{Cr0, Cr4};
use x86_64::registers::rflags::RFlags;
use x86_64::structures::idt::{EntryOptions, InterruptDescriptorTable, PageFaultErrorCode};

pub const TIMER_VECTOR: u8 = 0x20;
pub const SPURIOUS_VECTOR: u8 = 0xFF;

pub use arch_common::{Access, FaultInfo};

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

// The reserved vectors 15, 22-27 and 31 get no stub: the `x86_64` crate
// keeps their IDT entries private, so they stay not present.  Nothing
// raises them but `int n` or a misrouted device; delivering one through a
// not-present gate raises #NP (error code: the vector * 8 + 2), which is
// reported and fatal like any other unexpected exception.
stubs!(
    0 noerr, 1 noerr, 2 noerr, 3 noerr, 4 noerr, 5 noerr, 6 noerr, 7 noerr,
    8 err, 9 noerr, 10 err, 11 err, 12 err, 13 err, 14 err,
    16 noerr, 17 err, 18 noerr, 19 noerr, 20 noerr, 21 err,
    28 noerr, 29 err, 30 err,
    32 noerr, 33 noerr, 240 noerr, 255 noerr,
    // Device interrupts (ioapic.rs): vectors 0x30.. for GSIs 0..48.
    48 noerr, 49 noerr, 50 noerr, 51 noerr, 52 noerr, 53 noerr, 54 noerr, 55 noerr, 56 noerr, 57 noerr, 58 noerr, 59 noerr, 60 noerr, 61 noerr, 62 noerr, 63 noerr, 64 noerr, 65 noerr, 66 noerr, 67 noerr, 68 noerr, 69 noerr, 70 noerr, 71 noerr, 72 noerr, 73 noerr, 74 noerr, 75 noerr, 76 noerr, 77 noerr, 78 noerr, 79 noerr, 80 noerr, 81 noerr, 82 noerr, 83 noerr, 84 noerr, 85 noerr, 86 noerr, 87 noerr, 88 noerr, 89 noerr, 90 noerr, 91 noerr, 92 noerr, 93 noerr, 94 noerr, 95 noerr,
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

static IDT: spin::Once<InterruptDescriptorTable> = spin::Once::new();

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

/// Point vector `v`'s gate at `addr`: present, DPL 0, interrupt gate
/// (IF cleared on entry), code selector = the current CS (`KERNEL_CS`).
/// The vectors with an error code or that never return are typed fields
/// of the crate's table, the others are reached by index.
///
/// # Safety
/// `addr` must be an entry stub of this module for vector `v` (it knows
/// whether the CPU pushed an error code and ends in `iretq`).
unsafe fn set_gate(idt: &mut InterruptDescriptorTable, v: u8, addr: VirtAddr) -> &mut EntryOptions {
    // SAFETY: the caller's guarantee; the stubs are naked asm, so the
    // handler-function types of the crate's fields do not apply to them.
    unsafe {
        match v {
            8 => idt.double_fault.set_handler_addr(addr),
            10 => idt.invalid_tss.set_handler_addr(addr),
            11 => idt.segment_not_present.set_handler_addr(addr),
            12 => idt.stack_segment_fault.set_handler_addr(addr),
            13 => idt.general_protection_fault.set_handler_addr(addr),
            14 => idt.page_fault.set_handler_addr(addr),
            17 => idt.alignment_check.set_handler_addr(addr),
            18 => idt.machine_check.set_handler_addr(addr),
            21 => idt.cp_protection_exception.set_handler_addr(addr),
            29 => idt.vmm_communication_exception.set_handler_addr(addr),
            30 => idt.security_exception.set_handler_addr(addr),
            _ => idt[v].set_handler_addr(addr),
        }
    }
}

/// Fill the IDT (interrupt gates, DPL 0; the double fault on IST1) and load it.
/// Idempotent: the kernel calls it again through `init_interrupts` (the
/// table is built once and reloaded).
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        for e in stub_table() {
            let v = u8::try_from(e.vector).expect("vector");
            // SAFETY: the address is this vector's stub.  IST1 is the
            // double-fault stack set up in gdt.rs, used by no other vector.
            unsafe {
                let opts = set_gate(&mut idt, v, VirtAddr::new(e.addr));
                if v == 8 {
                    opts.set_stack_index(u16::from(gdt::IST_DOUBLE_FAULT - 1));
                }
            }
        }
        idt
    });
    idt.load();
}

/// RFLAGS.IF: interrupts enabled.
const RFLAGS_IF: u64 = RFlags::INTERRUPT_FLAG.bits();

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

/// Decode a page-fault error code into a `FaultInfo`.
pub fn page_fault_info(err: u64, addr: u64, pc: u64) -> FaultInfo {
    let err = PageFaultErrorCode::from_bits_truncate(err);
    let access = if err.contains(PageFaultErrorCode::INSTRUCTION_FETCH) {
        Access::Exec
    } else if err.contains(PageFaultErrorCode::CAUSED_BY_WRITE) {
        Access::Write
    } else {
        Access::Read
    };
    FaultInfo {
        addr,
        pc,
        access,
        user: err.contains(PageFaultErrorCode::USER_MODE),
        permission: err.contains(PageFaultErrorCode::PROTECTION_VIOLATION),
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
            crate::context::run_irq_exit_hook(frame.cs & 3 == 3);
        }
        crate::smp::AP_TIMER_VECTOR => {
            crate::smp::on_ap_tick();
            // The same hooks as CPU 0's tick (the global `ticks()` stays
            // CPU 0's); the kernel's hooks ignore CPUs that run no threads.
            if let Some(h) = tick_hook() {
                h();
            }
            crate::context::run_irq_exit_hook(frame.cs & 3 == 3);
        }
        crate::smp::IPI_VECTOR => {
            crate::smp::on_ipi();
            // A reschedule IPI switches threads at once.
            crate::context::run_irq_exit_hook(frame.cs & 3 == 3);
        }
        SPURIOUS_VECTOR => {}
        v if (crate::ioapic::DEVICE_VECTOR_BASE
            ..crate::ioapic::DEVICE_VECTOR_BASE + crate::ioapic::NR_DEVICE_VECTORS as u8)
            .contains(&v) =>
        {
            crate::ioapic::on_vector(v);
            // A thread the device woke may run at once.
            crate::context::run_irq_exit_hook(frame.cs & 3 == 3);
        }
        14 => {
            let cr2 = cpu::read_cr2();
            // kvm-pvm runs a user SYSCALL without leaving ring 3 (user.rs).
            if frame.cs & 3 == 3
                && PageFaultErrorCode::from_bits_truncate(frame.error)
                    .contains(PageFaultErrorCode::INSTRUCTION_FETCH)
                && crate::user::pvm_syscall_fault(frame, cr2)
            {
                return;
            }
            let info = page_fault_info(frame.error, cr2, frame.rip);
            if !PageFaultErrorCode::from_bits_truncate(frame.error)
                .contains(PageFaultErrorCode::MALFORMED_TABLE)
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
        let e = PageFaultErrorCode::from_bits_truncate(f.error);
        kprint!(
            "    CR2 {:#018x}: {} {} {}{}{}\n",
            a,
            if e.contains(PageFaultErrorCode::PROTECTION_VIOLATION) {
                "protection-violation"
            } else {
                "not-present"
            },
            if e.contains(PageFaultErrorCode::INSTRUCTION_FETCH) {
                "instruction-fetch"
            } else if e.contains(PageFaultErrorCode::CAUSED_BY_WRITE) {
                "write"
            } else {
                "read"
            },
            if e.contains(PageFaultErrorCode::USER_MODE) {
                "user"
            } else {
                "kernel"
            },
            if e.contains(PageFaultErrorCode::MALFORMED_TABLE) {
                " reserved-bit"
            } else {
                ""
            },
            if e.contains(PageFaultErrorCode::PROTECTION_KEY) {
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
        Cr0::read_raw(),
        cpu::read_cr3(),
        Cr4::read_raw()
    );
    if v == 8 {
        kprint!(
            "    (double fault: on the IST1 stack; a kernel stack overflow hits the guard page first)\n"
        );
    }
    crate::exit(false);
}
