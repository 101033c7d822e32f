//! The suites `make test` runs: host unit tests, then each kernel booted
//! with a list of command lines.
use crate::Tally;
use crate::qemu::{self, Accel, Arch, RunSpec};
use std::process::Command;
use std::time::Duration;

/// One boot of a kernel: a name, the machine, the command line and a timeout.
struct Suite {
    name: &'static str,
    machine: Option<&'static str>,
    cmdline: &'static str,
    timeout_s: u64,
    /// CPUs (`-smp`).
    smp: u32,
    /// NUMA nodes (`qemu::numa_args`; 0: none).
    numa: u32,
    /// More QEMU arguments (TCG only: such suites are skipped under KVM).
    extra_qemu_args: &'static [&'static str],
    /// A scratch virtio block device (`qemu::scratch_disk`): the block
    /// layer's self-tests (`kernel/src/block/tests.rs`) run in the boots
    /// that have one and skip elsewhere.
    disk: bool,
}

fn suites(arch: Arch) -> Vec<Suite> {
    let mut v = vec![Suite {
        name: "selftest",
        machine: None,
        cmdline: "selftest",
        timeout_s: 600,
        smp: 2,
        numa: 0,
        extra_qemu_args: &[],
        disk: true,
    }];
    // The other machine configurations the kernel must boot on; they run the
    // arch self-tests only (boot, tables, W^X, timer, and the secondary
    // CPUs' start-up, ticks and IPIs, `kernel::smp::arch_smp_*`: each of
    // these boots two CPUs), which is what differs.  Every boot has two
    // CPUs (the main self-test boot, the storm and the user suites too),
    // and `smp4` runs all self-tests once more with four (more vCPUs than
    // this host's two cores).  `q35` and `gicv3` are also the two-node
    // NUMA boots (`-numa`, one CPU per node, memory split evenly; see
    // `qemu::numa_args`), where the `numa_` self-tests run (they skip on
    // one node).
    match arch {
        Arch::X86_64 => {
            v.push(Suite {
                name: "q35",
                machine: Some("q35"),
                cmdline: "selftest=arch_,numa_",
                timeout_s: 120,
                smp: 2,
                numa: 2,
                extra_qemu_args: &[],
                disk: false,
            });
            v.push(Suite {
                name: "smp4",
                machine: None,
                cmdline: "selftest",
                timeout_s: 300,
                smp: 4,
                numa: 0,
                extra_qemu_args: &[],
                disk: false,
            });
        }
        Arch::Aarch64 => {
            v.push(Suite {
                name: "el2-entry",
                machine: Some("virt,virtualization=on"),
                cmdline: "selftest=arch_",
                timeout_s: 120,
                smp: 2,
                numa: 0,
                extra_qemu_args: &[],
                disk: false,
            });
            // With a disk: the block tests' interrupt is a GICv3 SPI here
            // (routed by IROUTER), a GICv2 one in the main boot.
            v.push(Suite {
                name: "gicv3",
                machine: Some("virt,gic-version=3"),
                cmdline: "selftest=arch_,block_,numa_",
                timeout_s: 120,
                smp: 2,
                numa: 2,
                extra_qemu_args: &[],
                disk: true,
            });
            v.push(Suite {
                name: "smp4",
                machine: None,
                cmdline: "selftest",
                timeout_s: 300,
                smp: 4,
                numa: 0,
                extra_qemu_args: &[],
                disk: false,
            });
            // Deterministic instruction counting: with `-icount shift=0`
            // TCG's PMU advertises INST_RETIRED and counts it exactly.
            v.push(Suite {
                name: "pmu-icount",
                machine: None,
                cmdline: "selftest=pmu perf-expect=instructions,cycles",
                timeout_s: 120,
                smp: 1,
                numa: 0,
                extra_qemu_args: &["-icount", "shift=0"],
                disk: false,
            });
        }
    }
    // The random operation storm (issue 8): 100k operations with a fixed
    // seed, so a failure replays exactly; `make soak` runs longer ones with
    // fresh seeds.
    v.push(Suite {
        name: "storm",
        machine: None,
        cmdline: "storm=0x5eed,100000",
        timeout_s: 900,
        smp: 2,
        numa: 0,
        extra_qemu_args: &[],
        // Swap on: the storm pages out, reclaims and cycles swapoff/swapon.
        disk: true,
    });
    v
}

/// Run `cargo test` over the host crates and add up the per-binary results.
pub fn host_tests() -> Result<Tally, String> {
    let root = qemu::workspace_root();
    println!("== host unit tests (cargo test)");
    // One pipe for stdout and stderr, so cargo's `Running <binary>` lines
    // (stderr) stay in order with each binary's `test result:` (stdout)
    // and the per-binary lines below carry the right names.
    let (mut reader, writer) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args([
            "test",
            "--workspace",
            "--exclude",
            "kernel",
            "--exclude",
            "mthp-user",
            "--no-fail-fast",
        ])
        .stdout(
            writer
                .try_clone()
                .map_err(|e| format!("cannot clone a pipe: {e}"))?,
        )
        .stderr(writer);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    // The command holds the write ends: drop it so the read sees EOF.
    drop(cmd);
    let mut both = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut both)
        .map_err(|e| format!("reading cargo test's output: {e}"))?;
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo test: {e}"))?;
    let text = String::from_utf8_lossy(&both);
    let mut t = Tally::default();
    let mut current = String::new();
    let mut seen = 0;
    for l in text.lines() {
        let l_trim = l.trim();
        if let Some(rest) = l_trim.strip_prefix("Running ") {
            // `Running unittests src/lib.rs (target/debug/deps/mm-<hash>)`:
            // the binary in parentheses names the crate.
            current = match rest.split_once(" (") {
                Some((what, bin)) if what.starts_with("unittests") => {
                    format!("{} (unit)", short(bin.trim_end_matches(')')))
                }
                _ => rest.split_whitespace().next().unwrap_or("").to_string(),
            };
        } else if let Some(krate) = l_trim.strip_prefix("Doc-tests ") {
            current = format!("{krate} (doc)");
        }
        if l.contains("... FAILED") {
            crate::failure!("  {current}: {l}");
        } else if l.starts_with("---- ") || l.contains("panicked at") {
            println!("  {l}");
        }
        if let Some(rest) = l.strip_prefix("test result: ") {
            seen += 1;
            let p = number_before(rest, " passed");
            let f = number_before(rest, " failed");
            let i = number_before(rest, " ignored");
            if p + f + i > 0 {
                println!(
                    "  {:<60} {p} passed, {f} failed, {i} skipped",
                    short(&current)
                );
            }
            t.passed += p;
            t.failed += f;
            t.skipped += i;
        }
    }
    if seen == 0 || (!status.success() && t.failed == 0) {
        // A build failure: show cargo's own error output.
        for l in text
            .lines()
            .filter(|l| l.starts_with("error") || l.starts_with("  -->"))
        {
            println!("  {l}");
        }
        return Err("cargo test did not run (build error?)".into());
    }
    Ok(t)
}

fn short(path: &str) -> String {
    let p = path.rsplit('/').next().unwrap_or(path);
    // Drop cargo's hash suffix: name-0123abcd…
    match p.rsplit_once('-') {
        Some((n, h)) if h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()) => n.into(),
        _ => p.into(),
    }
}

fn number_before(s: &str, word: &str) -> usize {
    s.find(word)
        .and_then(|i| s[..i].rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Build the test kernel for `arch` and run every suite, or only the
/// in-kernel boot named `only` (`runner test --suite`: one of [`suites`]
/// or `panic-backtrace`; then neither the skip policy nor the user-space
/// suites run).
pub fn kernel_suites(
    arch: Arch,
    accel: Accel,
    filter: &str,
    numa: Option<u32>,
    only: Option<&str>,
) -> Tally {
    let mut total = Tally::default();
    println!("== {} kernel (accel {:?})", arch.name(), accel);
    let kernel = match qemu::build_kernel(arch, "ktest", qemu::TEST_FEATURES) {
        Ok(k) => k,
        Err(e) => {
            crate::failure!("[{}] build: FAILED: {e}", arch.name());
            total.failed += 1;
            return total;
        }
    };
    let mut seen = SkipLedger::default();
    for s in suites(arch) {
        if only.is_some_and(|n| n != s.name) {
            continue;
        }
        if accel == Accel::Kvm && !s.extra_qemu_args.is_empty() {
            println!(
                "[{}/{}] skipped: TCG-only QEMU arguments {:?}",
                arch.name(),
                s.name,
                s.extra_qemu_args
            );
            seen.boots_not_run.push(s.name);
            total.skipped += 1;
            continue;
        }
        let mut cmdline = s.cmdline.to_string();
        if !filter.is_empty() && s.name == "selftest" {
            cmdline = format!("selftest={filter}");
        }
        let mut spec = RunSpec::new(arch, accel, kernel.clone(), &cmdline);
        if let Some(m) = s.machine {
            spec.machine = m.into();
        }
        spec.smp = s.smp;
        spec.numa = numa.unwrap_or(s.numa);
        spec.extra_args = s.extra_qemu_args.iter().map(|a| a.to_string()).collect();
        if s.disk {
            match qemu::scratch_disk(arch) {
                Ok(p) => spec.disk = Some(p),
                Err(e) => {
                    crate::failure!("[{}/{}] scratch disk: FAILED: {e}", arch.name(), s.name);
                    total.failed += 1;
                }
            }
        }
        total += run_suite(
            arch,
            s.name,
            &spec,
            Duration::from_secs(s.timeout_s),
            Some(&mut seen),
        );
    }
    if let Some(n) = only
        && n != "panic-backtrace"
        && !suites(arch).iter().any(|s| s.name == n)
    {
        crate::failure!("[{}] --suite {n}: FAILED: no such kernel boot", arch.name());
        total.failed += 1;
    }
    if only.is_none_or(|n| n == "panic-backtrace") {
        total += backtrace_suite(arch, accel, kernel.clone());
    }
    if only.is_none() {
        total += seen.judge(arch, filter);
        total += user_suite(arch, accel, kernel, filter);
    }
    total
}

/// The function `panic_test` panics in, and its caller, as the symbolized
/// backtrace names them (kernel/src/selftest/panic_test.rs).
const PANIC_TEST_FUNCTIONS: [&str; 2] = [
    "kernel::selftest::panic_test::deliberate_panic",
    "kernel::selftest::panic_test::panic_test_thread",
];

/// The panic report end to end: one short boot with `panic_test`, where
/// the kernel panics on purpose in a kernel thread two calls deep; one test
/// that passes only if the kernel panicked, QEMU exited with failure and
/// the backtrace, symbolized by the runner (symbolize.rs), names the
/// function that panicked and, further out, its caller.  Without
/// `llvm-nm` it cannot check and says so ([`cannot_run`]).
fn backtrace_suite(arch: Arch, accel: Accel, kernel: std::path::PathBuf) -> Tally {
    let tag = format!("{}/panic-backtrace", arch.name());
    if let Err(why) = crate::symbolize::load(&kernel) {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        return cannot_run(&tag, &format!("cannot symbolize: {why}"), ci);
    }
    let mut spec = RunSpec::new(arch, accel, kernel, "panic_test");
    spec.mem = "256M".into();
    println!("[{tag}] + {}", qemu::show(&spec.command()));
    let out = match qemu::boot(&spec, Duration::from_secs(120), |l| {
        if l.contains("PANIC") || l.starts_with("qemu:") {
            println!("[{tag}] {l}");
        }
    }) {
        Ok(o) => o,
        Err(e) => {
            crate::failure!("[{tag}] boot: FAILED: {e}");
            return Tally::one_failure();
        }
    };
    let test = "test panic_backtrace_names_the_panicking_function";
    match check_panic_backtrace(arch, out.status, &out.lines, &out.backtrace) {
        Ok(()) => {
            println!("[{tag}] {test} ... ok");
            Tally {
                passed: 1,
                ..Tally::default()
            }
        }
        Err(why) => {
            crate::failure!("[{tag}] {test} ... FAILED: {why}");
            for l in out.lines.iter().rev().take(25).rev() {
                println!("[{tag}]   | {l}");
            }
            Tally::one_failure()
        }
    }
}

/// [`backtrace_suite`]'s verdict on a boot that exited with `status`
/// (None: timed out), printed `lines`, and gave the symbolized `backtrace`.
fn check_panic_backtrace(
    arch: Arch,
    status: Option<i32>,
    lines: &[String],
    backtrace: &[String],
) -> Result<(), String> {
    match status {
        None => return Err("timed out".into()),
        Some(c) if arch.success_status(c) => {
            return Err(format!("QEMU exited with the success status {c}"));
        }
        _ => {}
    }
    let ours = lines
        .iter()
        .position(|l| l.starts_with("KERNEL PANIC"))
        .is_some_and(|p| lines[p..].iter().any(|l| l.contains("deliberate panic")));
    if !ours {
        return Err("no KERNEL PANIC from panic_test".into());
    }
    let frame_of = |f: &str| {
        let f = format!(" {f}+0x");
        backtrace
            .iter()
            .position(|l| l.trim_start().starts_with('#') && l.contains(&f))
    };
    let [callee, caller] = PANIC_TEST_FUNCTIONS.map(frame_of);
    match (callee, caller) {
        (Some(a), Some(b)) if a < b => Ok(()),
        (Some(_), Some(_)) => Err(format!(
            "{} is not below its caller {} in the backtrace {backtrace:?}",
            PANIC_TEST_FUNCTIONS[0], PANIC_TEST_FUNCTIONS[1]
        )),
        _ => Err(format!(
            "the backtrace does not name {:?}: {backtrace:?}",
            PANIC_TEST_FUNCTIONS
        )),
    }
}

/// In-kernel tests that skip in the main `selftest` boot because they need
/// a machine configuration, and the boot of [`suites`] designed for them.
/// Policy (issue 21): an in-kernel test may skip only when the
/// hardware or boot configuration it needs is missing, and then it must
/// run (pass or fail, not skip) in the boot listed here; a test that
/// skips in every boot of an architecture fails the run, unless it is
/// listed in [`MAY_SKIP_EVERYWHERE`] for that architecture or its boot
/// here was not run (TCG-only boots under KVM: reported, counted as
/// skipped).  Names are matched as the full `module::test` path's suffix.
const DESIGNATED_BOOT: &[(Arch, &str, &str)] = &[
    // The NUMA tests need two nodes: the two-node boots.
    (
        Arch::X86_64,
        "numa_nodes_discovered_with_sizes_and_cpus",
        "q35",
    ),
    (Arch::X86_64, "numa_alloc_lands_on_the_node_asked", "q35"),
    (Arch::X86_64, "numa_sysfs_files_read_back", "q35"),
    (
        Arch::Aarch64,
        "numa_nodes_discovered_with_sizes_and_cpus",
        "gicv3",
    ),
    (Arch::Aarch64, "numa_alloc_lands_on_the_node_asked", "gicv3"),
    (Arch::Aarch64, "numa_sysfs_files_read_back", "gicv3"),
    (
        Arch::Aarch64,
        "perf_pmu_expected_events_count",
        "pmu-icount",
    ),
    (
        Arch::Aarch64,
        "arch_pmu_instructions_exact_if_advertised",
        "pmu-icount",
    ),
];

/// In-kernel tests no boot of that architecture can run, and why.
const MAY_SKIP_EVERYWHERE: &[(Arch, &str, &str)] = &[(
    Arch::X86_64,
    "perf_pmu_expected_events_count",
    "TCG's x86 CPU has no PMU, so no x86 boot asks for perf-expect",
)];

/// What one architecture's kernel boots reported, for the skip policy.
#[derive(Default)]
struct SkipLedger {
    /// Tests that printed `skipped`, with the boot.
    skipped: Vec<(String, &'static str)>,
    /// Tests that printed `ok` or `FAILED` in some boot.
    ran: Vec<String>,
    /// Boots not run (TCG-only under KVM).
    boots_not_run: Vec<&'static str>,
}

impl SkipLedger {
    /// Applies the policy of [`DESIGNATED_BOOT`]: one failure per test that
    /// skipped in every boot without being allowed to.  Under a `filter`
    /// (the self-test boot ran only the tests whose name contains one of
    /// its comma-separated words, as the kernel matches them) a test
    /// outside it is only noted: its boot did not run it.
    fn judge(&self, arch: Arch, filter: &str) -> Tally {
        let mut t = Tally::default();
        let mut done: Vec<&str> = Vec::new();
        for (name, _) in &self.skipped {
            if self.ran.contains(name) || done.contains(&name.as_str()) {
                continue;
            }
            done.push(name);
            if !filter.is_empty() && !filter.split(',').any(|f| name.contains(f)) {
                println!("[{}] note: {name} skipped; outside the filter", arch.name());
                continue;
            }
            let boots: Vec<&str> = self
                .skipped
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, b)| *b)
                .collect();
            let tag = arch.name();
            let matches = |t: &str| name.ends_with(t);
            if let Some((_, _, boot)) = DESIGNATED_BOOT
                .iter()
                .find(|(a, t, _)| *a == arch && matches(t))
            {
                if self.boots_not_run.contains(boot) {
                    println!(
                        "[{tag}] note: {name} skipped in {boots:?}; its boot '{boot}' was not run"
                    );
                } else {
                    crate::failure!(
                        "[{tag}] {name}: FAILED: skipped in every boot ({boots:?}), \
                         including '{boot}', the one designed for it"
                    );
                    t.failed += 1;
                }
            } else if let Some((_, _, why)) = MAY_SKIP_EVERYWHERE
                .iter()
                .find(|(a, t, _)| *a == arch && matches(t))
            {
                println!("[{tag}] note: {name} skipped in every boot: {why}");
            } else {
                crate::failure!(
                    "[{tag}] {name}: FAILED: skipped in every boot ({boots:?}) and no boot \
                     is designed for it (tests/src/suites.rs DESIGNATED_BOOT)"
                );
                t.failed += 1;
            }
        }
        t
    }
}

/// A boot of the initramfs: `init=<program> [args]` on a machine with
/// `mem` of RAM.
struct UserSuite {
    name: &'static str,
    cmdline: &'static str,
    mem: &'static str,
    timeout_s: u64,
    /// A swap disk ([`qemu::swap_disk`]: 128 MiB, page 0 a swap header)
    /// for the swap tests (`mthp-tests/swap.rs`), which skip without one.
    swap_disk: bool,
    /// NUMA nodes (`qemu::numa_args`; 0: none).
    numa: u32,
}

/// The user-space suites.  `user`: the kernel boots `init=/mthp-tests`
/// from the initramfs; the program prints the same `test … ok/FAILED`
/// lines and summary, and its exit status becomes QEMU's; `user-numa`
/// runs its `numa_` tests again on two nodes.  `exhaust` and
/// `fuzz` (issue 8) run on a 256 MiB machine so filling memory is quick:
/// memory exhaustion with an OOM kill, and the seeded random-argument
/// system call fuzzer (fixed seed; `make fuzz` runs fresh ones);
/// `fuzz-smp` runs it on four threads over both CPUs.
const USER_SUITES: &[UserSuite] = &[
    UserSuite {
        name: "user",
        cmdline: "init=/mthp-tests",
        mem: "1G",
        timeout_s: 300,
        swap_disk: true,
        numa: 0,
    },
    // The NUMA tests (`numa_*`: node files, move_pages, memory policies)
    // again on two nodes, where pages really move (x86 boots q35 then).
    UserSuite {
        name: "user-numa",
        cmdline: "init=/mthp-tests -- numa_",
        mem: "1G",
        timeout_s: 180,
        swap_disk: false,
        numa: 2,
    },
    UserSuite {
        name: "exhaust",
        cmdline: "init=/exhaust",
        mem: "256M",
        timeout_s: 180,
        swap_disk: false,
        numa: 0,
    },
    // The same with a swap disk: the hog is swapped out until swap is
    // full, then killed; the bystander's data survives swap.
    UserSuite {
        name: "exhaust-swap",
        cmdline: "init=/exhaust",
        mem: "256M",
        timeout_s: 240,
        swap_disk: true,
        numa: 0,
    },
    UserSuite {
        name: "fuzz",
        cmdline: "init=/fuzz fuzz=0xf022,20000",
        mem: "256M",
        timeout_s: 180,
        swap_disk: false,
        numa: 0,
    },
    // The same calls on four threads of one address space, two per CPU
    // (the boot has two): memory calls race on one arena from both CPUs.
    UserSuite {
        name: "fuzz-smp",
        cmdline: "init=/fuzz fuzz=0xf022,20000,t4",
        mem: "256M",
        timeout_s: 180,
        swap_disk: false,
        numa: 0,
    },
];

/// Appended to every user-space boot: a thread blocked for 30 s on a wait
/// without a deadline makes the kernel report each thread's state and wait
/// channel and panic (kernel/src/task/sched), so a lost wake-up fails the
/// suite at once with the report instead of at the runner's timeout.
const HUNG_ARGS: &str = "hung_task_timeout_secs=30 hung_task_panic";

fn user_suite(arch: Arch, accel: Accel, kernel: std::path::PathBuf, filter: &str) -> Tally {
    let initrd = match crate::initramfs::build(arch) {
        Ok(p) => p,
        Err(e) => {
            crate::failure!("[{}/user] initramfs: FAILED: {e}", arch.name());
            return Tally::one_failure();
        }
    };
    let _ = filter;
    let kernel = if arch == Arch::Aarch64 {
        match qemu::arm64_image(&kernel) {
            Ok(k) => k,
            Err(e) => {
                crate::failure!("[{}/user] Image: FAILED: {e}", arch.name());
                return Tally::one_failure();
            }
        }
    } else {
        kernel
    };
    let mut total = Tally::default();
    for u in USER_SUITES {
        let cmdline = format!("{} {HUNG_ARGS}", u.cmdline);
        let mut spec = RunSpec::new(arch, accel, kernel.clone(), &cmdline);
        spec.initrd = Some(initrd.clone());
        spec.mem = u.mem.into();
        spec.smp = 2;
        let disk = match u.swap_disk.then(|| qemu::swap_disk(arch)).transpose() {
            Ok(d) => d,
            Err(e) => {
                crate::failure!("[{}/{}] swap disk: FAILED: {e}", arch.name(), u.name);
                total.failed += 1;
                None
            }
        };
        spec.disk = disk.as_ref().map(|d| d.0.clone());
        spec.numa = u.numa;
        total += run_suite(arch, u.name, &spec, Duration::from_secs(u.timeout_s), None);
    }
    total += libc_suite(arch, accel, kernel);
    total
}

/// `libc`: `tests/c/libc-tests.c` built with the system's C compiler and
/// C library (`-static`), booted as init.  When no compiler for `arch` is
/// found (see `cc.rs`) the suite cannot run: with `CI=true` in the
/// environment that is a failure (a CI machine must have the compilers;
/// issue 20), otherwise it is said and counted as one skip in the final
/// line.
fn libc_suite(arch: Arch, accel: Accel, kernel: std::path::PathBuf) -> Tally {
    let tag = format!("{}/libc", arch.name());
    let cc = match crate::cc::find(arch) {
        Ok(c) => c,
        Err(why) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            return cannot_run(&tag, &why, ci);
        }
    };
    let root = qemu::workspace_root();
    let out = root.join("target").join(arch.target()).join("libc-tests");
    let failed = |e: String| {
        crate::failure!("[{tag}] build: FAILED: {e}");
        Tally::one_failure()
    };
    let exe = match crate::cc::build_static(&cc, &root.join("tests/c/libc-tests.c"), &out) {
        Ok(b) => b,
        Err(e) => return failed(e),
    };
    println!("[{tag}] built with {}", cc.what);
    let initrd = match crate::initramfs::build_with(
        arch,
        &[("libc-tests".to_string(), exe)],
        "initramfs-libc.cpio",
    ) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let mut spec = RunSpec::new(
        arch,
        accel,
        kernel,
        &format!("init=/libc-tests {HUNG_ARGS}"),
    );
    spec.initrd = Some(initrd);
    // Two CPUs: the pthreads and SMP tests run threads on both.
    spec.smp = 2;
    run_suite(arch, "libc", &spec, Duration::from_secs(180), None)
}

/// A suite that cannot run here (`why`): one failure under CI (`ci`),
/// else one skip; said either way.
fn cannot_run(tag: &str, why: &str, ci: bool) -> Tally {
    if ci {
        crate::failure!("[{tag}] FAILED: the suite cannot run under CI=true: {why}");
        Tally::one_failure()
    } else {
        println!("[{tag}] skipped: {why}");
        Tally {
            skipped: 1,
            ..Tally::default()
        }
    }
}

/// Boot once and judge the report.  A suite that does not end properly
/// (timeout, missing summary, bad exit status, panic) counts one extra
/// failure.  `ledger` (in-kernel boots) collects which tests skipped and
/// which ran, for the skip policy ([`DESIGNATED_BOOT`]).
fn run_suite(
    arch: Arch,
    name: &'static str,
    spec: &RunSpec,
    timeout: Duration,
    mut ledger: Option<&mut SkipLedger>,
) -> Tally {
    let tag = format!("{}/{}", arch.name(), name);
    println!("[{tag}] + {}", qemu::show(&spec.command()));
    let mut t = Tally::default();
    let mut summary: Option<Tally> = None;
    let mut first_test_ms: Option<u128> = None;
    let start = std::time::Instant::now();
    let verbose = std::env::var_os("VERBOSE").is_some();
    let res = qemu::boot(spec, timeout, |l| {
        if let Some(rest) = l.strip_prefix("test ") {
            if first_test_ms.is_none() {
                first_test_ms = Some(start.elapsed().as_millis());
            }
            let test = rest.split(" ... ").next().unwrap_or(rest).to_string();
            let ran = if rest.contains(" ... ok") {
                t.passed += 1;
                true
            } else if rest.contains(" ... FAILED") {
                t.failed += 1;
                crate::record_failure(format!("[{tag}] {l}"));
                true
            } else if rest.contains(" ... skipped") {
                t.skipped += 1;
                if let Some(l) = ledger.as_deref_mut() {
                    l.skipped.push((test.clone(), name));
                }
                false
            } else {
                false
            };
            if ran && let Some(l) = ledger.as_deref_mut() {
                l.ran.push(test);
            }
            println!("[{tag}] {l}");
        } else if let Some(s) = parse_summary(l) {
            summary = Some(s);
            println!("[{tag}] kernel: {l}");
        } else if verbose
            || l.contains("PANIC")
            || l.contains("ERROR")
            || l.contains("WARN")
            || l.starts_with("qemu:")
            || l.contains("EXCEPTION")
        {
            println!("[{tag}] {l}");
        }
    });
    let out = match res {
        Ok(o) => o,
        Err(e) => {
            crate::failure!("[{tag}] boot: FAILED: {e}");
            t.failed += 1;
            return t;
        }
    };
    let mut problems = Vec::new();
    match out.status {
        None => problems.push(format!("timed out after {} s", timeout.as_secs())),
        Some(c) if !arch.success_status(c) => problems.push(format!("QEMU exit status {c}")),
        _ => {}
    }
    match summary {
        None => problems.push("no 'N passed, N failed, N skipped' summary from the kernel".into()),
        Some(s) if (s.passed, s.failed, s.skipped) != (t.passed, t.failed, t.skipped) => problems
            .push(format!(
                "summary says {}/{}/{} (passed/failed/skipped) but the runner saw {}/{}/{}",
                s.passed, s.failed, s.skipped, t.passed, t.failed, t.skipped
            )),
        _ => {}
    }
    if t.passed + t.failed == 0 {
        problems.push("no self-test ran".into());
    }
    if !problems.is_empty() {
        crate::failure!("[{tag}] boot: FAILED: {}", problems.join("; "));
        // Show the tail of the console for diagnosis.
        for l in out
            .lines
            .iter()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            println!("[{tag}]   | {l}");
        }
        t.failed += 1;
    } else {
        println!(
            "[{tag}] {} passed, {} failed, {} skipped in {:.1} s (first self-test after {} ms)",
            t.passed,
            t.failed,
            t.skipped,
            out.elapsed.as_secs_f64(),
            first_test_ms.unwrap_or(0)
        );
    }
    t
}

/// `N passed, N failed, N skipped`; the older `N passed, N failed` (no
/// skips) is still read.
fn parse_summary(l: &str) -> Option<Tally> {
    let (a, b) = l.trim().split_once(" passed, ")?;
    let (f, s) = match b.split_once(" failed, ") {
        Some((f, s)) => (f, s.strip_suffix(" skipped")?.parse().ok()?),
        None => (b.strip_suffix(" failed")?, 0),
    };
    Some(Tally {
        passed: a.parse().ok()?,
        failed: f.parse().ok()?,
        skipped: s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_with_and_without_skips() {
        let t = parse_summary("12 passed, 1 failed, 3 skipped").unwrap();
        assert_eq!((t.passed, t.failed, t.skipped), (12, 1, 3));
        let t = parse_summary("  4 passed, 0 failed").unwrap();
        assert_eq!((t.passed, t.failed, t.skipped), (4, 0, 0));
        assert!(parse_summary("4 passed, 0 failed, x skipped").is_none());
        assert!(parse_summary("test a ... ok").is_none());
    }

    fn ledger(
        skipped: &[(&str, &'static str)],
        ran: &[&str],
        not_run: &[&'static str],
    ) -> SkipLedger {
        SkipLedger {
            skipped: skipped.iter().map(|(n, b)| (n.to_string(), *b)).collect(),
            ran: ran.iter().map(|n| n.to_string()).collect(),
            boots_not_run: not_run.to_vec(),
        }
    }

    const PMU: &str = "arch_aarch64::pmu::tests::arch_pmu_instructions_exact_if_advertised";

    #[test]
    fn a_skip_is_fine_when_the_designated_boot_runs_the_test() {
        let l = ledger(&[(PMU, "selftest"), (PMU, "gicv3")], &[PMU], &[]);
        assert_eq!(l.judge(Arch::Aarch64, "").failed, 0);
    }

    #[test]
    fn skipped_in_every_boot_including_the_designated_one_fails() {
        let l = ledger(&[(PMU, "selftest"), (PMU, "pmu-icount")], &[], &[]);
        assert_eq!(l.judge(Arch::Aarch64, "").failed, 1);
    }

    #[test]
    fn designated_boot_not_run_is_a_note() {
        let l = ledger(&[(PMU, "selftest")], &[], &["pmu-icount"]);
        assert_eq!(l.judge(Arch::Aarch64, "").failed, 0);
    }

    #[test]
    fn outside_the_filter_is_a_note() {
        let name = "kernel::x::tests::needs_magic";
        let l = ledger(&[(name, "smp4")], &[], &[]);
        assert_eq!(l.judge(Arch::X86_64, "migrat,other").failed, 0);
        assert_eq!(l.judge(Arch::X86_64, "needs_magic").failed, 1);
    }

    #[test]
    fn an_undeclared_test_skipped_everywhere_fails() {
        let l = ledger(&[("kernel::x::tests::needs_magic", "selftest")], &[], &[]);
        assert_eq!(l.judge(Arch::X86_64, "").failed, 1);
        assert_eq!(l.judge(Arch::Aarch64, "").failed, 1);
    }

    #[test]
    fn allowed_everywhere_only_on_its_arch() {
        let name = "kernel::perf::tests::perf_pmu_expected_events_count";
        let l = ledger(&[(name, "selftest")], &[], &[]);
        assert_eq!(l.judge(Arch::X86_64, "").failed, 0);
        // On arm64 it is designated to pmu-icount, which ran: a failure.
        assert_eq!(l.judge(Arch::Aarch64, "").failed, 1);
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn panic_backtrace_check_needs_a_failed_exit_a_panic_and_both_frames() {
        let lines = strings(&[
            "KERNEL PANIC: panicked at kernel/src/selftest/panic_test.rs:34:9:",
            "panic_test: deliberate panic (n = 7)",
        ]);
        let bt = strings(&[
            "kernel panic backtrace, symbolized with target/x/kernel:",
            "  #0 0xffffffff8010884b __rustc::rust_begin_unwind+0x38b",
            "  #1 0xffffffff8020aec8 kernel::selftest::panic_test::deliberate_panic+0x48",
            "  #2 0xffffffff8020aeed kernel::selftest::panic_test::panic_test_thread+0x1d",
        ]);
        let x86 = Arch::X86_64;
        assert_eq!(check_panic_backtrace(x86, Some(35), &lines, &bt), Ok(()));
        assert!(check_panic_backtrace(Arch::Aarch64, Some(1), &lines, &bt).is_ok());
        // Success status, a timeout, no panic.
        assert!(check_panic_backtrace(x86, Some(33), &lines, &bt).is_err());
        assert!(check_panic_backtrace(x86, None, &lines, &bt).is_err());
        assert!(check_panic_backtrace(x86, Some(35), &[], &bt).is_err());
        // Unsymbolized, a frame missing, or the frames the wrong way round.
        let raw = strings(&["kernel panic backtrace, not symbolized (x):", "  #0 0x1"]);
        assert!(check_panic_backtrace(x86, Some(35), &lines, &raw).is_err());
        assert!(check_panic_backtrace(x86, Some(35), &lines, &bt[..3]).is_err());
        let swapped = [bt[0].clone(), bt[1].clone(), bt[3].clone(), bt[2].clone()];
        assert!(check_panic_backtrace(x86, Some(35), &lines, &swapped).is_err());
    }

    #[test]
    fn a_suite_that_cannot_run_fails_under_ci_only() {
        let t = cannot_run("x/libc", "no compiler", true);
        assert_eq!((t.passed, t.failed, t.skipped), (0, 1, 0));
        let t = cannot_run("x/libc", "no compiler", false);
        assert_eq!((t.passed, t.failed, t.skipped), (0, 0, 1));
    }
}
