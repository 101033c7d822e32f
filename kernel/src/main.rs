//! The kernel: boot-time init, self-test runner and demonstrations.
//!
//! Each subsystem is a folder whose `mod.rs` says what belongs there:
//! `task/` (threads, scheduling), `proc/` (processes), `syscall/`, `fs/`,
//! `mem/` (the glue to the `mm` crate), `block/` (the disk swap will use), `perf/`, and the optional parts,
//! `selftest/` and `demo/`, compiled in only with their cargo features
//! (`kernel/Cargo.toml`).
//!
//! Start-up order (see `kernel_main`): console and boot info come from the
//! arch crate, which has already switched to the kernel's own page tables;
//! then the command line, the frame allocator and heap, interrupts and the
//! timer, and finally whatever the command line asks for (`selftest`, demos).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

#[macro_use]
mod log;
mod arch;
mod block;
mod cmdline;
#[cfg(feature = "demo")]
mod demo;
mod fs;
mod ipc;
mod mem;
mod perf;
mod proc;
mod selftest;
mod syscall;
mod task;

use fs::cpio;
use mem::{khugepaged, kmap, memory, uspace};
use mm::bootinfo::BootInfo;
use proc::process;
use task::{sched, smp};

/// `$run` (a `bool`: whether it succeeded) in a kernel built with cargo
/// feature `$feature`.  In one built without it the command-line word
/// `$word` asks for code this kernel does not contain: say so and fail the
/// run, rather than boot on as if the word had been obeyed.
macro_rules! built_in {
    ($feature:literal, $word:literal, $run:expr) => {{
        #[cfg(feature = $feature)]
        let ok: bool = $run;
        #[cfg(not(feature = $feature))]
        let ok: bool = not_built($word, $feature);
        ok
    }};
}

/// See [`built_in!`]: ends the run with a failure.
#[cfg(not(all(feature = "selftest", feature = "demo", feature = "bench")))]
fn not_built(word: &str, feature: &str) -> bool {
    println!("{word}: not built into this kernel (feature \"{feature}\")");
    arch::exit(false)
}

/// Timer frequency for the scheduler tick.
const TICK_HZ: u32 = 1000;

#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "Rust" fn kernel_main(info: &'static mut BootInfo) -> ! {
    let boot_ns = arch::now_ns();
    let info: &'static BootInfo = info;
    cmdline::init(info.cmdline());
    if let Some(l) = cmdline::value("loglevel").and_then(log::parse_level) {
        log::set_level(l);
    }
    println!(
        "mthp kernel ({}) starting; cmdline: '{}'",
        arch::NAME,
        cmdline::raw()
    );
    memory::init(info);
    kmap::init();
    for e in mm::thp::THP.apply_cmdline(cmdline::raw()) {
        warn!("cmdline: {:?}", e);
    }
    if cmdline::value("contpte") == Some("off") {
        // Before any user mapping exists (see mm::paging::set_cont_hints).
        mm::paging::set_cont_hints(false);
        info!("contpte=off: no contiguous hints in user page tables");
    }
    uspace::init();
    arch::init_interrupts();
    arch::timer_init(TICK_HZ);
    perf::profile::start();
    arch::irq_enable();
    sched::init();
    smp::init();
    block::init();
    mem::watermark::init();
    khugepaged::start();
    mem::kswapd::start();
    mem::compact::start();
    mem::numab::start();
    cpio::init(info.initrd);
    process::init();
    info!("boot complete in {} us", (arch::now_ns() - boot_ns) / 1000);
    perf::boot_report();
    // Boot set up CPU 0's registers from here (sched::init pinned it there);
    // what runs next (tests, the demo, init and its children) may move.
    sched::set_affinity(sched::current_id(), u64::MAX);

    let mut ok = true;
    if cmdline::has("selftest") {
        ok &= built_in!("selftest", "selftest", selftest::run_word());
    }
    if cmdline::value("storm").is_some() {
        ok &= built_in!("selftest", "storm", selftest::storm_word());
    }
    if cmdline::has("panic_test") {
        // A deliberate panic (selftest/panic_test.rs): the run ends in it.
        ok &= built_in!("selftest", "panic_test", selftest::panic_test::run());
    }
    if cmdline::has("demo") {
        ok &= built_in!("demo", "demo", demo::run());
    }
    if cmdline::value("bench") == Some("alloc") {
        // The allocator's self-benchmark (selftest/allocbench.rs).
        ok &= built_in!("bench", "bench=alloc", selftest::allocbench::run());
    }
    if let Some(path) = cmdline::value("init") {
        // The run now ends when init exits (see `process::exit_current`).
        ok &= process::run_init(path);
    }
    perf::profile::dump();
    arch::exit(ok);
}

/// The CPU (+ 1; 0: none) whose panic is being reported.  A panic inside
/// that report ends the run at once; another CPU's panic meanwhile prints
/// its message and waits for the first report to end the run.
static PANICKING_CPU: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// `KERNEL PANIC: <message>`, the CPU and thread, the frame-pointer call
/// chain (`  #N 0x<return address>` lines, which the runner symbolizes
/// against the kernel ELF), then the failed self-test's report, and QEMU
/// exits with failure.
#[panic_handler]
fn panic(pi: &core::panic::PanicInfo) -> ! {
    use core::sync::atomic::Ordering;
    arch::irq_disable();
    log::print_unlocked(format_args!("\nKERNEL PANIC: {}\n", pi));
    let me = arch::cpu_id() + 1;
    match PANICKING_CPU.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {}
        Err(cpu) if cpu == me => arch::exit(false),
        Err(_) => loop {
            arch::cpu_relax();
        },
    }
    sched::panic_report();
    selftest::on_panic();
    arch::exit(false);
}
