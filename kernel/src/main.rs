//! The kernel: boot-time init, self-test runner and demonstrations.
//!
//! Start-up order (see `kernel_main`): console and boot info come from the
//! arch crate, which has already switched to the kernel's own page tables;
//! then the command line, the frame allocator and heap, interrupts and the
//! timer, and finally whatever the command line asks for (`selftest`, demos).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod allocbench;
mod arch;
mod cmdline;
mod cpio;
mod demo;
mod demo_collapse;
mod elf;
mod fdcalls;
mod idcalls;
mod invariants_tests;
mod khugepaged;
mod khugepaged_tests;
mod kmap;
#[macro_use]
mod log;
mod memory;
mod memtest;
mod mmglue;
mod perf;
mod perfdev;
mod physmem;
mod pipe;
mod process;
mod sched;
mod selftest;
mod smp;
mod storm;
mod syscall;
mod testenv;
mod thread;
mod uspace;
mod uspace_tests;
mod vfs;

use mm::bootinfo::BootInfo;

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
    arch::irq_enable();
    sched::init();
    smp::init();
    khugepaged::start();
    cpio::init(info.initrd);
    process::init();
    info!("boot complete in {} us", (arch::now_ns() - boot_ns) / 1000);
    perf::boot_report();

    let mut ok = true;
    if cmdline::has("selftest") {
        let filter = cmdline::value("selftest").unwrap_or("");
        let (p, f, s) = selftest::run(filter);
        println!("{} passed, {} failed, {} skipped", p, f, s);
        ok = f == 0;
    }
    if let Some(v) = cmdline::value("storm") {
        // Reported as one more test line so the runner counts it.
        let (mut p, mut f, s) = selftest::summary();
        match storm::parse(v) {
            Some((seed, ops)) => match storm::run(seed, ops) {
                Ok(()) => {
                    println!("test storm(seed={:#x},ops={}) ... ok", seed, ops);
                    p += 1;
                }
                Err(why) => {
                    println!(
                        "test storm(seed={:#x},ops={}) ... FAILED: {}",
                        seed, ops, why
                    );
                    f += 1;
                }
            },
            None => {
                println!(
                    "test storm ... FAILED: storm=<seed>,<ops> expected, got '{}'",
                    v
                );
                f += 1;
            }
        }
        println!("{} passed, {} failed, {} skipped", p, f, s);
        ok &= f == 0;
    }
    if cmdline::has("demo") {
        ok &= demo::run();
    }
    if cmdline::value("bench") == Some("alloc") {
        // The allocator's self-benchmark (allocbench.rs).
        ok &= allocbench::run();
    }
    if let Some(path) = cmdline::value("init") {
        // The run now ends when init exits (see `process::exit_current`).
        ok &= process::run_init(path);
    }
    arch::exit(ok);
}

#[panic_handler]
fn panic(pi: &core::panic::PanicInfo) -> ! {
    arch::irq_disable();
    log::print_unlocked(format_args!("\nKERNEL PANIC: {}\n", pi));
    selftest::on_panic();
    arch::exit(false);
}
