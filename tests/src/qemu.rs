//! Building kernels and composing QEMU command lines: the one place that
//! knows each architecture's QEMU flags and exit conventions.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "x86_64" | "x86" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-none",
            Arch::Aarch64 => "aarch64-unknown-none",
        }
    }
    /// x86: isa-debug-exit turns the kernel's 0x10 into (0x10<<1)|1 = 33.
    /// arm64: semihosting SYS_EXIT passes the code through; 0 is success.
    pub fn success_status(self, code: i32) -> bool {
        match self {
            Arch::X86_64 => code == 33,
            Arch::Aarch64 => code == 0,
        }
    }
    pub fn default_machine(self) -> &'static str {
        match self {
            Arch::X86_64 => "microvm",
            Arch::Aarch64 => "virt",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    /// `kvm` is honoured only when /dev/kvm can be opened; otherwise TCG.
    pub fn resolve(s: &str) -> Accel {
        if s == "kvm" {
            if std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok()
            {
                return Accel::Kvm;
            }
            eprintln!("note: /dev/kvm is not usable here; using TCG");
        }
        Accel::Tcg
    }
}

/// The features of the kernel `runner test` boots: every suite there runs
/// either the self-tests and the storm (`selftest`) or user programs, which
/// need none.
pub const TEST_FEATURES: &str = "selftest";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// `cargo build` the kernel for `arch` with `profile` (ktest: optimised with
/// debug assertions; release: optimised) and the cargo `features` (a comma
/// list, empty for none) its boots need: see `kernel/Cargo.toml`; a kernel
/// without a feature fails a boot whose command line asks for it.
pub fn build_kernel(arch: Arch, profile: &str, features: &str) -> Result<PathBuf, String> {
    let root = workspace_root();
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(&root).args([
        "build",
        "--quiet",
        "-p",
        "kernel",
        "--target",
        arch.target(),
        "--profile",
        profile,
    ]);
    if !features.is_empty() {
        cargo.args(["--features", features]);
    }
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the {} kernel failed", arch.name()));
    }
    Ok(root
        .join("target")
        .join(arch.target())
        .join(profile)
        .join("kernel"))
}

pub struct RunSpec {
    pub arch: Arch,
    pub accel: Accel,
    pub kernel: PathBuf,
    pub cmdline: String,
    pub machine: String,
    pub mem: String,
    /// `-smp` (CPUs; 1 adds nothing to the command line).
    pub smp: u32,
    /// NUMA nodes (0 or 1: none on the command line); see [`numa_args`].
    pub numa: u32,
    /// `-cpu` (None: `max`, or `host,…` under KVM).
    pub cpu: Option<String>,
    pub gdb: bool,
    pub initrd: Option<PathBuf>,
    /// Appended to the QEMU command line (e.g. `-icount shift=0`).
    pub extra_args: Vec<String>,
    /// A raw disk image attached as a virtio block device: on the
    /// virtio-mmio transport on `microvm` / `virt`, on PCI on `q35` / `pc`
    /// (see [`disk_device`]; [`scratch_disk`], [`swap_disk`]).
    pub disk: Option<PathBuf>,
    /// Run under QEMU 10 with the TLB-model plugin (tlbmodel.rs): `--tlb-model`
    /// for every boot, or one boot of `runner bench`.
    pub tlb_model: Option<crate::tlbmodel::TlbModel>,
}

impl RunSpec {
    pub fn new(arch: Arch, accel: Accel, kernel: PathBuf, cmdline: &str) -> RunSpec {
        RunSpec {
            arch,
            accel,
            kernel,
            cmdline: cmdline.to_string(),
            machine: arch.default_machine().to_string(),
            mem: "1G".into(),
            smp: 1,
            numa: 0,
            cpu: None,
            gdb: false,
            initrd: None,
            extra_args: Vec::new(),
            disk: None,
            tlb_model: crate::tlbmodel::get().cloned(),
        }
    }

    /// The machine QEMU gets: `machine`, except that an x86 NUMA boot
    /// needs `q35` (`microvm` has no SRAT).
    pub fn effective_machine(&self) -> &str {
        if self.arch == Arch::X86_64 && self.numa > 1 && self.machine.starts_with("microvm") {
            "q35"
        } else {
            &self.machine
        }
    }

    pub fn command(&self) -> Command {
        let mut c;
        match self.arch {
            Arch::X86_64 => {
                c = self.tlb_model.as_ref().map_or_else(
                    || Command::new("qemu-system-x86_64"),
                    |m| crate::tlbmodel::command(m, self.arch),
                );
                c.args(["-M", self.effective_machine()]);
                match self.accel {
                    Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
                    Accel::Tcg => c.args([
                        "-accel",
                        "tcg",
                        "-cpu",
                        self.cpu.as_deref().unwrap_or("max"),
                    ]),
                };
                c.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
            }
            Arch::Aarch64 => {
                c = self.tlb_model.as_ref().map_or_else(
                    || Command::new("qemu-system-aarch64"),
                    |m| crate::tlbmodel::command(m, self.arch),
                );
                c.args([
                    "-M",
                    &self.machine,
                    "-cpu",
                    self.cpu.as_deref().unwrap_or("max"),
                    "-semihosting",
                ]);
            }
        }
        c.args([
            "-m",
            &self.mem,
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
        ]);
        if self.smp > 1 {
            c.args(["-smp", &self.smp.to_string()]);
        }
        c.args(numa_args(self.numa, self.smp, &self.mem));
        c.args(["-no-reboot", "-kernel"]).arg(&self.kernel);
        // This host's /dev/kvm is kvm-pvm, which emulates guest ring 0 and
        // cannot execute stac/clac: keep SMAP off there (Linux's `nosmap`).
        let mut cmdline = self.cmdline.clone();
        if self.arch == Arch::X86_64 && self.accel == Accel::Kvm && !cmdline.contains("nosmap") {
            cmdline = format!("{cmdline} nosmap").trim().to_string();
        }
        // The model's plugin reads Linux's tables at a fixed direct map.
        if self.tlb_model.as_ref().is_some_and(|m| m.linux) && !cmdline.contains("nokaslr") {
            cmdline = format!("{cmdline} nokaslr").trim().to_string();
        }
        if !cmdline.is_empty() {
            c.args(["-append", &cmdline]);
        }
        if let Some(i) = &self.initrd {
            c.arg("-initrd").arg(i);
        }
        if let Some(d) = &self.disk {
            let mut drive = std::ffi::OsString::from("file=");
            drive.push(d);
            drive.push(",if=none,format=raw,id=swap0");
            c.arg("-drive").arg(drive);
            c.args([
                "-device",
                &format!("{},drive=swap0", disk_device(self.effective_machine())),
            ]);
        }
        c.args(&self.extra_args);
        if self.gdb {
            c.args(["-s", "-S"]);
        }
        c
    }
}

/// Bytes in a QEMU size (`512M`, `2G`, a plain number of MiB).
pub fn mem_bytes(mem: &str) -> Option<u64> {
    let (num, mul) = match mem.chars().last()? {
        'k' | 'K' => (&mem[..mem.len() - 1], 1u64 << 10),
        'm' | 'M' => (&mem[..mem.len() - 1], 1 << 20),
        'g' | 'G' => (&mem[..mem.len() - 1], 1 << 30),
        _ => (mem, 1 << 20),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// The QEMU arguments of `nodes` NUMA nodes (none for 0 or 1): memory
/// split evenly, one `memory-backend-ram` each (`-object
/// memory-backend-ram,id=m<i>,size=<n>M -numa node,nodeid=<i>,cpus=<a>-<b>,memdev=m<i>`),
/// the `smp` CPUs split evenly too (in order, CPU 0 on node 0; a node
/// gets none when there are fewer CPUs than nodes).  The same arguments on both arches: x86
/// `q35` turns them into an ACPI SRAT, arm64 `virt` (booted with a DTB)
/// into `numa-node-id` properties.  No `-numa dist`: both kernels then use
/// the default distances 10 and 20.
pub fn numa_args(nodes: u32, smp: u32, mem: &str) -> Vec<String> {
    if nodes <= 1 {
        return Vec::new();
    }
    let mib = mem_bytes(mem).unwrap_or(1 << 30) >> 20;
    let per = mib / u64::from(nodes);
    let smp = smp.max(1);
    let mut v = Vec::new();
    for i in 0..nodes {
        v.push("-object".into());
        // The last node takes what the even split left over.
        let size = if i + 1 == nodes {
            mib - per * u64::from(nodes - 1)
        } else {
            per
        };
        v.push(format!("memory-backend-ram,id=m{i},size={size}M"));
        // CPU c goes to node c * nodes / smp: a contiguous run per node,
        // CPU 0 on node 0.
        let mine: Vec<u32> = (0..smp).filter(|c| c * nodes / smp == i).collect();
        let cpus = match (mine.first(), mine.last()) {
            (Some(a), Some(b)) if a == b => format!(",cpus={a}"),
            (Some(a), Some(b)) => format!(",cpus={a}-{b}"),
            _ => String::new(),
        };
        v.push("-numa".into());
        v.push(format!("node,nodeid={i}{cpus},memdev=m{i}"));
    }
    v
}

/// Size of the scratch disk: room for a 2 MiB run and scattered pages.
pub const SCRATCH_DISK_BYTES: u64 = 64 << 20;

/// A fresh all-zero raw image `target/disks/scratch-<arch>.img` (a sparse
/// file: no space used until written), made anew for every boot so no run
/// sees another's data; one per architecture, since both may boot at once.
pub fn scratch_disk(arch: Arch) -> Result<PathBuf, String> {
    let dir = workspace_root().join("target").join("disks");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("scratch-{}.img", arch.name()));
    let f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_len(SCRATCH_DISK_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The QEMU device that carries the disk on `machine`: `q35` and `pc`
/// have no virtio-mmio transport, only PCI, so there the disk is a
/// `virtio-blk-pci` (which only Linux drives: our kernel has no PCI
/// driver and sees no disk there); `microvm` and `virt` get a
/// `virtio-blk-device` on virtio-mmio, which both kernels drive.
pub fn disk_device(machine: &str) -> &'static str {
    if machine.starts_with("q35") || machine.starts_with("pc") {
        "virtio-blk-pci"
    } else {
        "virtio-blk-device"
    }
}

/// Size of the swap disk of the user-space boots.
pub const SWAP_DISK_BYTES: u64 = 128 << 20;

/// A fresh sparse raw image whose page 0 is a swap header as `mkswap`
/// writes it ([`swap_header`]), for the user suite's swap tests on both
/// kernels: `target/disks/swap-<arch>-<pid>.img`, one per runner process
/// (a `runner run` and a `runner test` may boot the same arch at once);
/// removed when the returned guard is dropped.
pub fn swap_disk(arch: Arch) -> Result<DiskFile, String> {
    swap_disk_of(arch, SWAP_DISK_BYTES)
}

/// A fresh [`swap_disk`] attached to `spec`; keep the returned file until
/// QEMU exits (the image is removed on drop).
pub fn attach_swap_disk(spec: &mut RunSpec) -> Result<DiskFile, String> {
    let d = swap_disk(spec.arch)?;
    spec.disk = Some(d.0.clone());
    Ok(d)
}

/// [`swap_disk`] of `bytes` (a multiple of 4096): the benchmarks' memory
/// pressure boot needs more swap than the user suite's 128 MiB.
pub fn swap_disk_of(arch: Arch, bytes: u64) -> Result<DiskFile, String> {
    use std::io::Write;
    let dir = workspace_root().join("target").join("disks");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("swap-{}-{}.img", arch.name(), std::process::id()));
    let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_len(bytes)
        .and_then(|_| f.write_all(&swap_header(bytes / 4096)))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(DiskFile(path))
}

/// A disk image that is deleted when dropped.
pub struct DiskFile(pub PathBuf);

impl Drop for DiskFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Page 0 of a swap area of `pages` 4 KiB pages, the bytes `mkswap`
/// writes (Linux's `union swap_header`, notes §1.2): version 1 at 1024,
/// `last_page` = pages - 1 at 1028, no bad pages, a fixed UUID at 1036
/// and `SWAPSPACE2` in the last 10 bytes.  Written here rather than taken
/// from `mm::swap::header` so the runner keeps no dependencies beyond
/// `std`; a unit test checks both agree.
pub fn swap_header(pages: u64) -> [u8; 4096] {
    let mut p = [0u8; 4096];
    p[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    p[1028..1032].copy_from_slice(&((pages - 1) as u32).to_le_bytes());
    p[1036..1052].copy_from_slice(b"mthp-swap-uuid-1");
    p[4096 - 10..].copy_from_slice(b"SWAPSPACE2");
    p
}

pub fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// What one boot produced.
pub struct Outcome {
    pub lines: Vec<String>,
    /// QEMU's exit status; None if it was killed at the timeout.
    pub status: Option<i32>,
    pub elapsed: Duration,
    /// The kernel panic's backtrace, symbolized (`symbolize::report`;
    /// empty without a panic), as printed after the boot.
    pub backtrace: Vec<String>,
}

/// Boot `spec`, calling `on_line` for every console line as it arrives, and
/// kill QEMU after `timeout`.  When the kernel panicked, its backtrace is
/// printed symbolized (`symbolize::report`) once QEMU is gone, before the
/// caller reports the failure.
pub fn boot(
    spec: &RunSpec,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<Outcome, String> {
    let mut cmd = spec.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", show(&cmd)))?;
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    let r1 = std::thread::spawn(move || {
        for l in BufReader::new(out).split(b'\n') {
            let Ok(l) = l else { break };
            let s = String::from_utf8_lossy(&l)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(s).is_err() {
                break;
            }
        }
    });
    let r2 = std::thread::spawn(move || {
        for l in BufReader::new(err).lines() {
            let Ok(l) = l else { break };
            if tx2.send(format!("qemu: {l}")).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = t0 + timeout;
    let status;
    loop {
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            status = None;
            break;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(50))) {
            Ok(l) => {
                on_line(&l);
                lines.push(l);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let s = child.wait().map_err(|e| e.to_string())?;
                status = Some(s.code().unwrap_or(255));
                break;
            }
        }
        if let Ok(Some(s)) = child.try_wait() {
            // Drain what is left.
            let _ = r1.is_finished();
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                on_line(&l);
                lines.push(l);
            }
            status = Some(s.code().unwrap_or(255));
            break;
        }
    }
    drop(r1);
    drop(r2);
    let elapsed = t0.elapsed();
    let backtrace = crate::symbolize::report(&spec.kernel, &lines);
    for l in &backtrace {
        println!("[{}] {l}", spec.arch.name());
    }
    Ok(Outcome {
        lines,
        status,
        elapsed,
        backtrace,
    })
}

/// The path of `name` (`llvm-objcopy`, `llvm-nm`) in the toolchain's
/// llvm-tools component (`<sysroot>/lib/rustlib/<host>/bin/`; `make deps`
/// installs it).  The path is not checked: running it says whether it is
/// there.
pub fn llvm_tool(name: &str) -> Result<PathBuf, String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let host = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| format!("rustc -vV: {e}"))?;
    let host = String::from_utf8_lossy(&host.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .unwrap_or_else(|| "x86_64-unknown-linux-gnu".into());
    Ok(Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin")
        .join(name))
}

/// The arm64 kernel as a flat Linux `Image` (`llvm-objcopy -O binary`;
/// the 64-byte Image header is at the start of `.text.boot`).  QEMU loads
/// `-initrd` only for Image kernels, not for ELF ones.  Written next to the
/// ELF as `kernel.img`; the ELF stays the file for GDB's symbols.
pub fn arm64_image(elf: &Path) -> Result<PathBuf, String> {
    let objcopy = llvm_tool("llvm-objcopy")?;
    let out = elf.with_file_name("kernel.img");
    let st = Command::new(&objcopy)
        .args(["-O", "binary"])
        .arg(elf)
        .arg(&out)
        .status()
        .map_err(|e| {
            format!(
                "cannot run {} (rustup component add llvm-tools): {e}",
                objcopy.display()
            )
        })?;
    if !st.success() {
        return Err(format!("{} failed", objcopy.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner's header is the one `mm::swap::header` writes and
    /// accepts: the same bytes but for the UUID, parsed to the same size.
    #[test]
    fn swap_header_agrees_with_mm() {
        let pages = SWAP_DISK_BYTES / 4096;
        let ours = swap_header(pages);
        let mut theirs = [0u8; 4096];
        mm::swap::header::write(&mut theirs, pages, *b"mthp-swap-uuid-1");
        assert_eq!(ours[..], theirs[..]);
        let h = mm::swap::header::parse(&ours, pages).expect("valid header");
        assert_eq!(h.pages, pages);
        assert!(h.bad.is_empty());
    }

    #[test]
    fn disk_transport_follows_machine() {
        assert_eq!(disk_device("q35"), "virtio-blk-pci");
    }

    #[test]
    fn numa_args_split_memory_and_cpus() {
        assert!(numa_args(1, 2, "1G").is_empty());
        assert_eq!(
            numa_args(2, 2, "1G"),
            [
                "-object",
                "memory-backend-ram,id=m0,size=512M",
                "-numa",
                "node,nodeid=0,cpus=0,memdev=m0",
                "-object",
                "memory-backend-ram,id=m1,size=512M",
                "-numa",
                "node,nodeid=1,cpus=1,memdev=m1",
            ]
        );
        let v = numa_args(3, 4, "1000M");
        assert_eq!(v[1], "memory-backend-ram,id=m0,size=333M");
        assert_eq!(v[3], "node,nodeid=0,cpus=0-1,memdev=m0");
        assert_eq!(v[7], "node,nodeid=1,cpus=2,memdev=m1");
        assert_eq!(v[9], "memory-backend-ram,id=m2,size=334M");
        assert_eq!(v[11], "node,nodeid=2,cpus=3,memdev=m2");
        assert_eq!(numa_args(2, 1, "1G")[3], "node,nodeid=0,cpus=0,memdev=m0");
        assert_eq!(numa_args(2, 1, "1G")[7], "node,nodeid=1,memdev=m1");
        assert_eq!(mem_bytes("2G"), Some(2 << 30));
        assert_eq!(mem_bytes("512"), Some(512 << 20));
        assert_eq!(disk_device("microvm"), "virtio-blk-device");
        assert_eq!(disk_device("virt,gic-version=3"), "virtio-blk-device");
    }
}
