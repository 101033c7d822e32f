//! Host-side test runner: builds the kernels, boots them under QEMU, streams
//! and checks what they report.
//!
//! ```text
//! runner test  [--arch A]... [--accel tcg|kvm] [--no-host] [--numa N] [--suite NAME]  # host unit tests + in-kernel suites (--numa: every kernel self-test boot with N nodes; --suite: only the kernel boot NAME, e.g. panic-backtrace)
//! runner run   --arch A [--accel ..] [--cmdline ".."] [--features F,..] [--release] [--gdb] [--machine M] [--mem SIZE] [--smp N] [--numa N] [--initrd [--no-disk]] [--icount] [--disk]
//! runner run   --linux --arch A [--cmdline "init=/prog .."] [--smp N] [--numa N] [--icount] [--no-disk]  # Debian's Linux 6.12, our initramfs (linux.rs)
//! runner bench [--arch A]... [--accel tcg|kvm] [--quick] [--icount] [--no-tlb-model]  # see bench.rs
//! runner bench --linux [--arch A]... [--icount] [--smp N] [--boots N]  # fault-in, ours vs Linux 6.12 (faultcmp.rs)
//! runner bench --swap [--arch A]... [--accel tcg|kvm] [--quick] [--icount]  # swap out/in and memory pressure, ours vs Linux 6.12 (bench.rs)
//! runner bench --frag [--arch A]... [--accel tcg|kvm] [--quick]  # fault orders after fragmenting churn, with and without compaction, ours vs Linux 6.12 (bench.rs)
//! runner bench --migrate [--arch A]... [--accel tcg|kvm] [--quick] [--icount]  # move_pages between two NUMA nodes, ours vs Linux 6.12 (bench.rs)
//! runner bench --cow [--arch A]... [--accel tcg|kvm] [--quick]  # fork + one write per 64K in the child: large COW, 4K COW, Linux 6.12 (bench.rs)
//! runner bench --shmem [--arch A]... [--accel tcg|kvm] [--quick] [--icount]  # MAP_SHARED|MAP_ANONYMOUS fault-in at 4K/64K/2M, ours vs Linux 6.12 (bench.rs)
//! runner bench --reserve [--arch A]... [--accel tcg|kvm] [--quick] [--icount]  # reservations vs eager THP vs 4K, ours and Linux 6.12 (bench.rs)
//! runner bench --scale [--arch A]... [--accel tcg|kvm] [--quick] [--boots N]  # page-fault scaling and TLB shootdowns, -smp 2, ours vs Linux 6.12 (scale.rs)
//! runner matrix [--arch A]... [--accel tcg|kvm]  # large-folio feature matrix, ours vs Linux 6.12 (matrix.rs)
//! ```
//!
//! `run` builds the kernel with the cargo features `--features` names
//! (none by default: the kernel that runs `init=` programs; `selftest`,
//! `demo` and `bench` add the code of those command-line words, see
//! `kernel/Cargo.toml`); the Makefile passes what each target needs.
//! `test` builds with [`qemu::TEST_FEATURES`], `bench` with none.
//! `--numa N` boots with N NUMA nodes (`qemu::numa_args`: memory and CPUs
//! split evenly; x86 then boots `q35`, whose ACPI tables carry the SRAT).
//! `run --initrd` and `run --linux` attach a fresh 128 MiB swap disk
//! (`qemu::swap_disk`, as the `user` suite has) so the user programs'
//! swap tests run; `--no-disk` leaves it out.  `run --disk` (without
//! `--initrd`) attaches the self-tests' scratch disk (`qemu::scratch_disk`),
//! which the swap self-tests and the storm format and swap on.
//!
//! A kernel run passes only if no `test …` line is `FAILED`, the kernel
//! printed its `N passed, N failed[, N skipped]` summary (agreeing with the
//! `ok`/`FAILED`/`skipped` lines seen), QEMU exited with the architecture's
//! success status (x86 isa-debug-exit 33 — a triple fault under
//! `-no-reboot` exits 0, so the status alone is not trusted; arm64
//! semihosting 0), and it did so before the timeout.  A test line reading
//! `test <name> ... skipped: <reason>` is counted as skipped, never as
//! passed; which skips are allowed is decided in `suites.rs` (in-kernel:
//! each must run in the boot designed for it; user space: the program
//! itself turns a skip on this kernel into a failure; a suite that cannot
//! run at all fails under `CI=true`).  The last line printed is always
//! `N passed, N failed, N skipped`, counting host and in-kernel tests
//! together (cargo's `ignored` counts as skipped).
//!
//! No dependencies beyond `std`, so the runner builds in a second.
mod bench;
mod cc;
mod faultcmp;
mod initramfs;
mod linux;
mod matrix;
mod qemu;
mod report;
mod scale;
mod suites;
mod symbolize;
mod tlbmodel;

use std::process::{Command, ExitCode};

/// Every failure line of this run, repeated just before the summary line.
static FAILURES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Remember a failure line for the recap at the end of `runner test`.
pub fn record_failure(line: String) {
    if let Ok(mut f) = FAILURES.lock() {
        f.push(line.trim().to_string());
    }
}

/// `println!` a failure line and remember it for the recap.
#[macro_export]
macro_rules! failure {
    ($($t:tt)*) => {{
        let line = format!($($t)*);
        println!("{line}");
        $crate::record_failure(line);
    }};
}

#[derive(Default, Clone, Copy, Debug)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Tally {
    /// One failure (a boot or build that went wrong).
    pub fn one_failure() -> Tally {
        Tally {
            failed: 1,
            ..Tally::default()
        }
    }
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
    }
}

/// The `--arch` arguments (already checked), or both arches when none.
fn both_by_default(arches: &[String]) -> Vec<qemu::Arch> {
    if arches.is_empty() {
        return vec![qemu::Arch::X86_64, qemu::Arch::Aarch64];
    }
    arches
        .iter()
        .map(|a| qemu::Arch::parse(a).expect("checked"))
        .collect()
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: runner test [--arch x86_64|aarch64]... [--accel tcg|kvm] [--no-host] [--filter S] [--numa N] [--suite NAME]\n       runner run --arch A [--accel tcg|kvm] [--cmdline \"...\"] [--features F,..] [--release] [--gdb] [--machine M] [--mem SIZE] [--smp N] [--numa N] [--initrd [--no-disk]] [--icount] [--disk]\n       runner run --linux --arch A [--cmdline \"init=/prog ...\"] [--mem SIZE] [--smp N] [--numa N] [--icount] [--no-disk] [--tlb-model CONFIG]\n       runner bench [--arch A]... [--accel tcg|kvm] [--quick] [--icount] [--no-tlb-model]\n       runner bench --linux [--arch A]... [--icount] [--smp N] [--boots N]\n       runner bench --frag [--arch A]... [--accel tcg|kvm] [--quick]\n       runner bench --migrate [--arch A]... [--accel tcg|kvm] [--quick] [--icount]\n       runner bench --cow [--arch A]... [--accel tcg|kvm] [--quick]\n       runner bench --shmem [--arch A]... [--accel tcg|kvm] [--quick] [--icount]\n       runner bench --reserve [--arch A]... [--accel tcg|kvm] [--quick] [--icount]\n       runner bench --scale [--arch A]... [--accel tcg|kvm] [--quick] [--boots N]\n       runner matrix [--arch A]... [--accel tcg|kvm]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let mut arches: Vec<String> = Vec::new();
    let mut accel = String::from("tcg");
    let mut cmdline = String::new();
    let mut machine: Option<String> = None;
    let mut release = false;
    let mut gdb = false;
    let mut host = true;
    let mut filter = String::new();
    let mut suite: Option<String> = None;
    let mut initrd = false;
    let mut disk = true;
    let mut quick = false;
    let mut icount = false;
    let mut linux = false;
    let mut tlb_model: Option<String> = None;
    let mut no_tlb_model = false;
    let mut scratch = false;
    let mut mem: Option<String> = None;
    let mut boots: Option<usize> = None;
    let mut scale = false;
    let mut swap = false;
    let mut frag = false;
    let mut migrate = false;
    let mut cow = false;
    let mut shmem = false;
    let mut reserve = false;
    let mut smp = 1u32;
    let mut numa: Option<u32> = None;
    let mut features = String::new();
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--arch" => arches.push(it.next().cloned().unwrap_or_default()),
            "--accel" => accel = it.next().cloned().unwrap_or_default(),
            "--cmdline" => cmdline = it.next().cloned().unwrap_or_default(),
            "--machine" => machine = it.next().cloned(),
            "--mem" => mem = it.next().cloned(),
            "--filter" => filter = it.next().cloned().unwrap_or_default(),
            "--suite" => suite = it.next().cloned(),
            "--features" => features = it.next().cloned().unwrap_or_default(),
            "--release" => release = true,
            "--gdb" => gdb = true,
            "--no-host" => host = false,
            "--initrd" => initrd = true,
            "--no-disk" => disk = false,
            "--quick" => quick = true,
            "--icount" => icount = true,
            "--linux" => linux = true,
            "--tlb-model" => tlb_model = it.next().cloned(),
            "--no-tlb-model" => no_tlb_model = true,
            "--disk" => scratch = true,
            "--boots" => boots = it.next().and_then(|b| b.parse().ok()),
            "--scale" => scale = true,
            "--swap" => swap = true,
            "--frag" => frag = true,
            "--migrate" => migrate = true,
            "--cow" => cow = true,
            "--shmem" => shmem = true,
            "--reserve" => reserve = true,
            "--numa" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n @ 1..=8) => numa = Some(n),
                _ => {
                    eprintln!("--numa takes 1 to 8 nodes");
                    return usage();
                }
            },
            "--smp" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n @ 1..=8) => smp = n,
                _ => {
                    eprintln!("--smp takes 1 to 8 CPUs");
                    return usage();
                }
            },
            _ => return usage(),
        }
    }
    for a in &arches {
        if qemu::Arch::parse(a).is_none() {
            eprintln!("unknown arch '{a}'");
            return usage();
        }
    }
    if let Some(config) = tlb_model {
        tlbmodel::enable(config, linux);
    }
    let accel = qemu::Accel::resolve(&accel);
    match cmd.as_str() {
        "test" => {
            if arches.is_empty() {
                arches = vec!["x86_64".into(), "aarch64".into()];
            }
            let mut total = Tally::default();
            let mut broken = false;
            if host {
                match suites::host_tests() {
                    Ok(t) => total += t,
                    Err(e) => {
                        failure!("host tests: FAILED: {e}");
                        total.failed += 1;
                        broken = true;
                    }
                }
            }
            for a in &arches {
                let arch = qemu::Arch::parse(a).expect("checked");
                total += suites::kernel_suites(arch, accel, &filter, numa, suite.as_deref());
            }
            let _ = broken;
            let failures = FAILURES.lock().map(|f| f.clone()).unwrap_or_default();
            if !failures.is_empty() {
                // Repeated here so that the tail of a CI log names them.
                println!("failures:");
                for f in failures {
                    println!("  {f}");
                }
            }
            println!(
                "{} passed, {} failed, {} skipped",
                total.passed, total.failed, total.skipped
            );
            if total.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        "run" => {
            let arch = qemu::Arch::parse(arches.first().map(|s| s.as_str()).unwrap_or("x86_64"))
                .expect("checked");
            if linux {
                // Debian's Linux 6.12 with our initramfs, the QEMU set-up of
                // every comparison with Linux (linux.rs).
                let mut spec = qemu::RunSpec::new(arch, accel, std::path::PathBuf::new(), &cmdline);
                spec.smp = smp;
                spec.numa = numa.unwrap_or(0);
                if icount {
                    spec.extra_args.extend(["-icount".into(), "shift=0".into()]);
                }
                return linux::run(spec, mem, disk);
            }
            let profile = if release { "release" } else { "ktest" };
            let kernel = match qemu::build_kernel(arch, profile, &features) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut spec = qemu::RunSpec::new(arch, accel, kernel, &cmdline);
            spec.smp = smp;
            spec.numa = numa.unwrap_or(0);
            if let Some(m) = machine {
                spec.machine = m;
            }
            if let Some(m) = mem {
                spec.mem = m;
            }
            spec.gdb = gdb;
            if scratch {
                match qemu::scratch_disk(arch) {
                    Ok(p) => spec.disk = Some(p),
                    Err(e) => {
                        eprintln!("scratch disk: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            if icount {
                // Exact instruction counts (1 instruction = 1 ns of virtual
                // time): `now_ns` deltas become instruction counts.
                spec.extra_args.extend(["-icount".into(), "shift=0".into()]);
            }
            if initrd {
                if arch == qemu::Arch::Aarch64 {
                    match qemu::arm64_image(&spec.kernel) {
                        Ok(k) => spec.kernel = k,
                        Err(e) => {
                            eprintln!("{e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                match initramfs::build(arch) {
                    Ok(p) => spec.initrd = Some(p),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            // Kept until QEMU exits (the image is removed on drop).
            let _swap = if initrd && disk {
                match qemu::attach_swap_disk(&mut spec) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                None
            };
            let mut c: Command = spec.command();
            if gdb {
                eprintln!(
                    "QEMU is waiting for GDB on localhost:1234. In another terminal:\n  gdb {} -ex 'target remote :1234'",
                    spec.kernel.display()
                );
            }
            eprintln!("+ {}", qemu::show(&c));
            let status = c.status();
            match status {
                Ok(s) => {
                    let code = s.code().unwrap_or(255);
                    if arch.success_status(code) {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("kernel exited with QEMU status {code}");
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("cannot start QEMU: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "bench" => {
            let arches = both_by_default(&arches);
            if scale {
                // Page-fault scaling and shootdowns, -smp 2, both kernels (scale.rs).
                return scale::run(&arches, accel, quick, boots.unwrap_or(1).max(1));
            }
            if swap {
                // Swap out/in and memory pressure, both kernels (bench.rs).
                return bench::swap_compare(&arches, accel, quick, icount);
            }
            if frag {
                // Fault orders after fragmenting churn, both kernels (bench.rs).
                return bench::frag_compare(&arches, accel, quick);
            }
            if migrate {
                // move_pages between two nodes, both kernels (bench.rs).
                return bench::migrate_compare(&arches, accel, quick, icount);
            }
            if cow {
                // Fork + one write per 64K in the child, both kernels (bench.rs).
                return bench::cow_compare(&arches, accel, quick);
            }
            if reserve {
                return bench::reserve_compare(&arches, accel, quick, icount);
            }
            if shmem {
                // Shared anonymous fault-in, both kernels (bench.rs).
                return bench::shmem_compare(&arches, accel, quick, icount);
            }
            if linux {
                // Fault-in on both kernels, one QEMU set-up (faultcmp.rs).
                return faultcmp::run(&arches, accel, icount, smp, boots.unwrap_or(3).max(1));
            }
            bench::run(&arches, accel, quick, icount, false, !no_tlb_model)
        }
        "matrix" => {
            let arches = both_by_default(&arches);
            matrix::run(&arches, accel)
        }
        _ => usage(),
    }
}
