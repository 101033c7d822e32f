//! The files user programs can open: `/dev/console` (and `/dev/null`), the
//! initramfs (read-only), the THP sysfs tree
//! (`/sys/kernel/mm/transparent_hugepage/**`, straight from the
//! `mm::abi::thp_sysfs` registry), `/proc/{meminfo,vmstat,buddyinfo,pagetypeinfo,zoneinfo,sys/vm/*,
//! self/smaps,<pid>/smaps,self/maps}` and `/sys/kernel/debug/split_huge_pages`.
//!
//! Generated files are snapshots taken at `open` (as a sysfs/seq_file read
//! from offset 0 would see them); every `write` to a sysfs knob is one store
//! into the registry, with its errno.
use super::debugfs::{EXTFRAG_DIR, SPLIT_PATH, split_huge_pages};
use super::procfs::{PAGEMAP_SOFT_DIRTY, meminfo, read_entries, seq_text, smaps, text, vmstat};
use crate::mem::numa;
use crate::proc::process::{self, Process};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use mm::abi::errno::Errno;
use mm::abi::thp_sysfs::SYSFS_ROOT;
use mm::physmem::watermark::{VM_SYSCTL, VmKnob};
use mm::sync::Mutex;
use mm::thp::THP;

pub const O_ACCMODE: u64 = 3;
pub const O_WRONLY: u64 = 1;
pub const O_RDWR: u64 = 2;
pub const O_CREAT: u64 = 0o100;
/// `O_DIRECTORY` and `O_DIRECT`, whose values differ between the arches.
#[cfg(target_arch = "x86_64")]
pub const O_DIRECTORY: u64 = 0o200000;
#[cfg(target_arch = "aarch64")]
pub const O_DIRECTORY: u64 = 0o40000;
#[cfg(target_arch = "x86_64")]
pub const O_DIRECT: u64 = 0o40000;
#[cfg(target_arch = "aarch64")]
pub const O_DIRECT: u64 = 0o200000;

/// What a descriptor refers to.
#[derive(Debug)]
pub enum Node {
    Console,
    Null,
    /// Read-only bytes (an initramfs file).
    Bytes(&'static [u8]),
    /// A generated text file; `knob` is the registry path of a sysfs file.
    /// Without a knob the file has no write operation and a write fails
    /// with `no_write`, the errno Linux's file type gives (see [`open`]).
    Text {
        data: Vec<u8>,
        knob: Option<String>,
        no_write: Errno,
    },
    /// A directory, by its normalized path (reads fail with EISDIR;
    /// `getdents64` lists it, see [`list_dir`]).
    Dir(String),
    /// One end of a pipe.
    Pipe(crate::fs::pipe::PipeEnd),
    SplitHugePages,
    /// `/sys/kernel/debug/mthp/perf` opened for writing (commands).
    Perf,
    /// `/proc/<pid>/pagemap` of process `pid` (generated at each read).
    Pagemap {
        pid: u32,
    },
    /// `/proc/kpageflags` (generated at each read).
    Kpageflags,
    /// `/dev/vda`, the virtio disk: readable (page by page through the
    /// block layer); writes are refused (EPERM) — its one writer is swap.
    BlockDev,
    /// A `/proc/sys/vm` file: its value at open; a write stores through
    /// `mem::watermark::sysctl_write`.
    Sysctl {
        data: Vec<u8>,
        knob: VmKnob,
    },
    /// `/proc/sys/kernel/numa_balancing`: its value at open; a write goes
    /// to `mem::numab::sysctl_write`.
    NumaBalancing {
        data: Vec<u8>,
    },
    /// `/sys/block/vda/queue/rotational` (read at each read, root-writable).
    Rotational,
    /// `/sys/kernel/mm/swap/vma_ra_enabled` (read at each read, writable):
    /// swap readahead on or off (`mm::swap::Swap::vma_ra_enabled`).
    VmaRaEnabled,
    /// A memfd (`fs::memfd`): its shmem object.
    Memfd(crate::fs::memfd::Object),
}

/// `O_NONBLOCK` and `O_APPEND`: the status flags `fcntl(F_SETFL)` may
/// change (Linux's `SETFL_MASK` minus what this kernel has no use for).
pub const O_NONBLOCK: u32 = 0o4000;
pub const O_APPEND: u32 = 0o2000;
pub const SETFL_MASK: u32 = O_NONBLOCK | O_APPEND;

#[derive(Debug)]
pub struct File {
    pub node: Node,
    pub pos: Mutex<u64>,
    pub readable: bool,
    pub writable: bool,
    /// st_mode for fstat.
    pub mode: u32,
    /// Status flags (`O_NONBLOCK`, `O_APPEND`): `fcntl(F_GETFL/F_SETFL)`.
    pub status: core::sync::atomic::AtomicU32,
}

impl File {
    pub fn console() -> File {
        File::new(Node::Console, true, true, 0o020620)
    }

    pub fn new(node: Node, readable: bool, writable: bool, mode: u32) -> File {
        File {
            node,
            pos: Mutex::new(0),
            readable,
            writable,
            mode,
            status: core::sync::atomic::AtomicU32::new(0),
        }
    }

    /// A new pipe as two open files: (read end, write end), with `status`
    /// flags (`O_NONBLOCK` from `pipe2`).
    pub fn pipe(status: u32) -> (File, File) {
        let (r, w) = crate::fs::pipe::new();
        let r = File::new(Node::Pipe(r), true, false, 0o010600);
        let w = File::new(Node::Pipe(w), false, true, 0o010600);
        r.status
            .store(status, core::sync::atomic::Ordering::Relaxed);
        w.status
            .store(status, core::sync::atomic::Ordering::Relaxed);
        (r, w)
    }

    fn nonblock(&self) -> bool {
        self.status.load(core::sync::atomic::Ordering::Relaxed) & O_NONBLOCK != 0
    }

    pub fn size(&self) -> u64 {
        match &self.node {
            Node::Bytes(b) => b.len() as u64,
            Node::Memfd(obj) => obj.size(),
            Node::Text { data, .. } | Node::Sysctl { data, .. } | Node::NumaBalancing { data } => {
                data.len() as u64
            }
            _ => 0,
        }
    }

    /// Read at the file position into `buf` (a kernel buffer).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if let Node::Pipe(end) = &self.node {
            if !self.readable {
                return Err(Errno::EBADF);
            }
            // Blocks: no lock may be held across it.
            return end.pipe.read(buf, self.nonblock());
        }
        let mut pos = self.pos.lock();
        let n = self.read_at(*pos, buf)?;
        *pos += n as u64;
        Ok(n)
    }

    /// Whether the file has positions (`pread64`, `lseek`): everything but
    /// the console (a terminal) and pipes.
    pub fn positional(&self) -> bool {
        !matches!(self.node, Node::Console | Node::Pipe(_))
    }

    /// Write `data` at byte offset `pos` without moving the file position
    /// (`pwrite64`; the caller checks [`Self::positional`]).  Only memfds
    /// have positional writes; other files write as `write`.
    pub fn pwrite(&self, pos: u64, data: &[u8]) -> Result<usize, Errno> {
        if !self.writable {
            return Err(Errno::EBADF);
        }
        match &self.node {
            Node::Memfd(obj) => crate::fs::memfd::write(obj, pos, data),
            _ => self.write(data),
        }
    }

    /// Read at byte offset `pos` into `buf` without moving the file
    /// position (`pread64`; the caller checks [`Self::positional`]).
    pub fn pread(&self, pos: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        self.read_at(pos, buf)
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        if !self.readable {
            return Err(Errno::EBADF);
        }
        let src: &[u8] = match &self.node {
            Node::Console | Node::Null => return Ok(0),
            Node::Bytes(b) => b,
            Node::Text { data, .. } | Node::Sysctl { data, .. } | Node::NumaBalancing { data } => {
                data
            }
            Node::Dir(_) => return Err(Errno::EISDIR),
            Node::SplitHugePages | Node::Perf => return Err(Errno::EINVAL),
            Node::Pipe(_) => return Err(Errno::ESPIPE),
            Node::Pagemap { pid } => {
                return read_entries(pos, buf, |first, n| {
                    let va = first.saturating_mul(mm::addr::PAGE_SIZE);
                    process::find(*pid)
                        .and_then(|p| p.with_mm(|mm| mm.pagemap(va, n, PAGEMAP_SOFT_DIRTY)).ok())
                        .unwrap_or_default()
                });
            }
            Node::BlockDev => return read_disk(pos, buf),
            Node::Memfd(obj) => return Ok(obj.read(pos, buf, crate::mem::uspace::ctx().mem)),
            Node::Rotational => {
                let t = crate::block::disk().ok_or(Errno::ENODEV)?.rotational_text();
                let start = pos.min(t.len() as u64) as usize;
                let n = buf.len().min(t.len() - start);
                buf[..n].copy_from_slice(&t.as_bytes()[start..start + n]);
                return Ok(n);
            }
            Node::VmaRaEnabled => {
                let on = crate::mem::uspace::ctx()
                    .swap
                    .vma_ra_enabled
                    .load(core::sync::atomic::Ordering::Relaxed);
                let t = if on { "true\n" } else { "false\n" };
                let start = pos.min(t.len() as u64) as usize;
                let n = buf.len().min(t.len() - start);
                buf[..n].copy_from_slice(&t.as_bytes()[start..start + n]);
                return Ok(n);
            }
            Node::Kpageflags => {
                return read_entries(pos, buf, |first, n| {
                    let b = crate::mem::memory::buddy();
                    let end = b.kpageflags_end().min(first.saturating_add(n as u64));
                    (first..end).map(|pfn| b.kpageflags(pfn)).collect()
                });
            }
        };
        let start = pos.min(src.len() as u64) as usize;
        let n = buf.len().min(src.len() - start);
        buf[..n].copy_from_slice(&src[start..start + n]);
        Ok(n)
    }

    /// Write `data` (a kernel copy of the user buffer).
    pub fn write(&self, data: &[u8]) -> Result<usize, Errno> {
        if !self.writable {
            return Err(Errno::EBADF);
        }
        match &self.node {
            Node::Console => {
                console_bytes(data);
                Ok(data.len())
            }
            Node::Memfd(obj) => {
                let mut pos = self.pos.lock();
                if self.status.load(core::sync::atomic::Ordering::Relaxed) & O_APPEND != 0 {
                    *pos = obj.size();
                }
                let n = crate::fs::memfd::write(obj, *pos, data)?;
                *pos += n as u64;
                Ok(n)
            }
            Node::Null => Ok(data.len()),
            Node::Text {
                knob: Some(path), ..
            } => {
                let s = core::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
                THP.write(path, s)?;
                // khugepaged's start/stop re-evaluates min_free_kbytes.
                if path.ends_with("enabled") {
                    crate::mem::watermark::thp_changed();
                }
                Ok(data.len())
            }
            Node::Sysctl { knob, .. } => {
                let s = core::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
                crate::mem::watermark::sysctl_write(*knob, s)?;
                Ok(data.len())
            }
            Node::NumaBalancing { .. } => {
                let s = core::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
                crate::mem::numab::sysctl_write(s)?;
                Ok(data.len())
            }
            Node::SplitHugePages => split_huge_pages(data).map(|_| data.len()),
            Node::Perf => crate::perf::dev::write(data).map(|_| data.len()),
            Node::Pipe(end) => end.pipe.write(data, self.nonblock()),
            Node::Dir(_) => Err(Errno::EISDIR),
            Node::Text { no_write, .. } => Err(*no_write),
            // procfs's `proc_reg_write` without a `proc_write`.
            Node::Kpageflags => Err(Errno::EIO),
            // No `write` in the file operations: the VFS's EINVAL.
            Node::Pagemap { .. } => Err(Errno::EINVAL),
            Node::BlockDev => Err(Errno::EPERM),
            Node::Rotational => crate::block::disk()
                .ok_or(Errno::ENODEV)?
                .write_rotational(data)
                .map(|_| data.len()),
            Node::VmaRaEnabled => {
                let on = kstrtobool(data).ok_or(Errno::EINVAL)?;
                crate::mem::uspace::ctx()
                    .swap
                    .vma_ra_enabled
                    .store(on, core::sync::atomic::Ordering::Relaxed);
                Ok(data.len())
            }
            _ => Err(Errno::EBADF),
        }
    }

    pub fn lseek(&self, off: i64, whence: u64) -> Result<u64, Errno> {
        let mut pos = self.pos.lock();
        let base = match whence {
            0 => 0,
            1 => *pos as i64,
            2 => self.size() as i64,
            _ => return Err(Errno::EINVAL),
        };
        if !self.positional() {
            return Err(Errno::ESPIPE);
        }
        let new = base
            .checked_add(off)
            .filter(|&n| n >= 0)
            .ok_or(Errno::EINVAL)?;
        *pos = new as u64;
        Ok(new as u64)
    }
}

/// Resolve `path` (relative paths are taken from `/`), collapsing `.`,
/// `..` and repeated slashes.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut s = String::new();
    for p in parts {
        s.push('/');
        s.push_str(p);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// `path` made absolute against `me`'s working directory and normalized.
pub fn absolute(me: &Process, path: &str) -> String {
    if path.starts_with('/') {
        normalize(path)
    } else {
        normalize(&format!("{}/{}", me.cwd.lock(), path))
    }
}

/// `d_type` values of `getdents64`.
pub const DT_CHR: u8 = 2;
pub const DT_BLK: u8 = 6;
pub const DT_DIR: u8 = 4;
pub const DT_REG: u8 = 8;
pub const DT_LNK: u8 = 10;

/// The entries of directory `path` (normalized, absolute), `.` and `..`
/// first, as `getdents64` returns them: the synthetic `/dev`, `/proc` and
/// `/sys` trees, the THP sysfs tree from the registry, and the initramfs.
pub fn list_dir(path: &str) -> Result<Vec<(String, u8)>, Errno> {
    let mut v: Vec<(String, u8)> = alloc::vec![(".".into(), DT_DIR), ("..".into(), DT_DIR)];
    if let Some(names) = crate::fs::tmpfs::list(path) {
        v.extend(names);
        return Ok(v);
    }
    for name in crate::fs::tmpfs::mount_points_below(path) {
        v.push((name, DT_DIR));
    }
    let mut add = |names: &[&str], t: u8| {
        for n in names {
            v.push((String::from(*n), t));
        }
    };
    match path {
        "/dev" => {
            add(&["console", "null", "tty"], DT_CHR);
            if crate::block::disk().is_some() {
                add(&["vda"], DT_BLK);
            }
        }
        "/proc" => {
            add(
                &[
                    "buddyinfo",
                    "cmdline",
                    "kpageflags",
                    "meminfo",
                    "mounts",
                    "pagetypeinfo",
                    "swaps",
                    "vmstat",
                    "zoneinfo",
                ],
                DT_REG,
            );
            add(&["sys"], DT_DIR);
            add(&["self"], DT_LNK);
            for p in process::all() {
                v.push((format!("{}", p.pid), DT_DIR));
            }
        }
        "/sys" => {
            if crate::block::disk().is_some() {
                add(&["block"], DT_DIR);
            }
            add(&["devices", "kernel"], DT_DIR)
        }
        BLOCK_DIR if crate::block::disk().is_some() => add(&["vda"], DT_DIR),
        VDA_DIR if crate::block::disk().is_some() => {
            add(&["queue"], DT_DIR);
            add(&["stat"], DT_REG)
        }
        QUEUE_DIR if crate::block::disk().is_some() => add(&["rotational"], DT_REG),
        "/sys/kernel" => add(&["debug", "mm"], DT_DIR),
        "/sys/kernel/mm" => add(&["swap", "transparent_hugepage"], DT_DIR),
        "/sys/kernel/mm/swap" => add(&["vma_ra_enabled"], DT_REG),
        "/sys/kernel/debug" => {
            add(&["extfrag", "mthp"], DT_DIR);
            add(&["split_huge_pages"], DT_REG);
        }
        "/sys/devices" => add(&["system"], DT_DIR),
        "/sys/devices/system" => add(&["cpu", "node"], DT_DIR),
        CPU_DIR => add(&["online", "possible", "present"], DT_REG),
        numa::NODE_DIR => {
            add(&numa::MASK_FILES, DT_REG);
            for n in 0..numa::nr_nodes() {
                v.push((format!("node{n}"), DT_DIR));
            }
        }
        _ if node_dir(path).is_some() => add(&numa::NODE_FILES, DT_REG),
        crate::perf::dev::DIR => add(&["perf"], DT_REG),
        "/proc/sys" => add(&["kernel", "vm"], DT_DIR),
        crate::mem::numab::SYSCTL_DIR => add(&[crate::mem::numab::SYSCTL_NAME], DT_REG),
        EXTFRAG_DIR => add(&["extfrag_index", "unusable_index"], DT_REG),
        SYSCTL_VM_DIR => {
            for (name, _) in VmKnob::ALL {
                add(&[name], DT_REG);
            }
        }
        _ if path.starts_with("/proc/") => {
            add(&["maps", "numa_maps", "pagemap", "smaps", "status"], DT_REG)
        }
        _ if path == SYSFS_ROOT || path.starts_with(SYSFS_ROOT) => {
            let rel = path[SYSFS_ROOT.len()..].trim_start_matches('/');
            for e in THP.list(rel)? {
                v.push((e.name, if e.is_dir { DT_DIR } else { DT_REG }));
            }
        }
        _ => {
            if path == "/" {
                add(&["dev", "proc", "sys"], DT_DIR);
            }
            let prefix = path.trim_start_matches('/');
            for e in crate::fs::cpio::all() {
                let rest = if prefix.is_empty() {
                    Some(e.name)
                } else {
                    e.name
                        .strip_prefix(prefix)
                        .and_then(|r| r.strip_prefix('/'))
                };
                if let Some(name) = rest.filter(|r| !r.is_empty() && !r.contains('/'))
                    && !v.iter().any(|(n, _)| n == name)
                {
                    v.push((String::from(name), if e.is_dir() { DT_DIR } else { DT_REG }));
                }
            }
        }
    }
    Ok(v)
}

/// `/sys/devices/system/node/nodeN` (an existing node) -> N.
fn node_dir(path: &str) -> Option<usize> {
    let rest = path.strip_prefix(numa::NODE_DIR)?.strip_prefix('/')?;
    numa::parse_node_dir(rest)
}

/// The text of a file under `/sys/devices/system/node`, if `path` is one.
fn node_file(path: &str) -> Option<String> {
    let rest = path.strip_prefix(numa::NODE_DIR)?.strip_prefix('/')?;
    match rest.split_once('/') {
        None => numa::mask_file(rest),
        Some((dir, file)) => numa::node_file(numa::parse_node_dir(dir)?, file),
    }
}

/// `/sys/devices/system/cpu`: `online` lists the running CPUs, `possible`
/// and `present` those the firmware describes (what glibc's
/// `sysconf(_SC_NPROCESSORS_*)` reads; see `smp.rs`).
const CPU_DIR: &str = "/sys/devices/system/cpu";
/// The disk's counters, in Linux's place and format (block/mod.rs).
const BLOCK_DIR: &str = "/sys/block";
const VDA_DIR: &str = "/sys/block/vda";
/// The `vm.*` sysctls (`mm::physmem::watermark::VmKnob`).
const SYSCTL_VM_DIR: &str = "/proc/sys/vm";
const QUEUE_DIR: &str = "/sys/block/vda/queue";

/// Open `path` with `flags` for process `me`.
///
/// Permissions as Linux decides them for root (every process here runs as
/// uid 0 with all capabilities): the mode bits never refuse an open
/// (`CAP_DAC_OVERRIDE`); what refuses is the file's own operations, as in
/// Linux: sysfs (kernfs) refuses at open a direction its attribute has no
/// method for (EACCES), procfs files open and fail the write (EIO for the
/// single-`show` files, EINVAL for `smaps`/`maps`/`pagemap`), debugfs's
/// write-only file opens for reading and fails the read (EINVAL).
pub fn open(me: &Process, path: &str, flags: u64) -> Result<File, Errno> {
    open_mode(me, path, flags, 0o666)
}

/// [`open`] with the `mode` a created file gets (before the umask).
pub fn open_mode(me: &Process, path: &str, flags: u64, mode: u32) -> Result<File, Errno> {
    let f = open_node(me, path, flags, mode)?;
    // `O_DIRECTORY` on anything else is ENOTDIR.  `O_DIRECT` needs a file
    // system with direct I/O: none of the pseudo-files, devices or
    // directories here has it (Linux: EINVAL at open); initramfs files
    // accept it, as tmpfs does.
    if flags & O_DIRECTORY != 0 && !matches!(f.node, Node::Dir(_)) {
        return Err(Errno::ENOTDIR);
    }
    if flags & O_DIRECT != 0 && !matches!(f.node, Node::Bytes(_)) {
        return Err(Errno::EINVAL);
    }
    Ok(f)
}

fn open_node(me: &Process, path: &str, flags: u64, mode: u32) -> Result<File, Errno> {
    let path = absolute(me, path);
    let acc = flags & O_ACCMODE;
    let wants_write = acc == O_WRONLY || acc == O_RDWR;
    let readable = acc != O_WRONLY;
    let mk = |node: Node, mode: u32| {
        let f = File::new(node, readable, wants_write, mode);
        f.status.store(
            flags as u32 & SETFL_MASK,
            core::sync::atomic::Ordering::Relaxed,
        );
        f
    };
    let umask = me.umask.load(core::sync::atomic::Ordering::Relaxed);
    if let Some(r) = crate::fs::tmpfs::open(&path, flags, mode & !umask, wants_write, &mk) {
        return r;
    }
    let dir_ok = |path: &str| -> Result<File, Errno> {
        if wants_write {
            return Err(Errno::EISDIR);
        }
        Ok(mk(Node::Dir(String::from(path)), 0o040755))
    };
    match path.as_str() {
        "/dev/console" | "/dev/tty" => return Ok(mk(Node::Console, 0o020620)),
        "/dev/null" => return Ok(mk(Node::Null, 0o020666)),
        crate::mem::swap::DEVICE if crate::block::disk().is_some() => {
            return Ok(mk(Node::BlockDev, 0o060660));
        }
        "/proc/swaps" => return Ok(mk(text(crate::mem::swap::proc_swaps()), 0o100444)),
        "/proc/mounts" => return Ok(mk(text(crate::fs::tmpfs::proc_mounts()), 0o100444)),
        "/proc/sysvipc/shm" => {
            return Ok(mk(text(crate::ipc::shm::proc_sysvipc_shm()), 0o100444));
        }
        "/"
        | "/dev"
        | "/proc"
        | "/sys"
        | "/sys/kernel"
        | "/sys/kernel/mm"
        | "/sys/kernel/mm/swap"
        | "/sys/kernel/debug"
        | EXTFRAG_DIR
        | "/proc/self"
        | "/proc/sys"
        | crate::mem::numab::SYSCTL_DIR
        | SYSCTL_VM_DIR
        | "/sys/devices"
        | "/sys/devices/system"
        | CPU_DIR
        | numa::NODE_DIR => return dir_ok(&path),
        _ if node_dir(&path).is_some() => return dir_ok(&path),
        BLOCK_DIR | VDA_DIR | QUEUE_DIR if crate::block::disk().is_some() => {
            return dir_ok(&path);
        }
        "/sys/kernel/mm/swap/vma_ra_enabled" => return Ok(mk(Node::VmaRaEnabled, 0o100644)),
        "/sys/block/vda/queue/rotational" if crate::block::disk().is_some() => {
            return Ok(mk(Node::Rotational, 0o100644));
        }
        "/sys/block/vda/stat" => {
            let d = crate::block::disk().ok_or(Errno::ENOENT)?;
            if wants_write {
                return Err(Errno::EACCES);
            }
            return Ok(mk(text(d.stat_text()), 0o100444));
        }
        "/sys/devices/system/cpu/online"
        | "/sys/devices/system/cpu/possible"
        | "/sys/devices/system/cpu/present" => {
            if wants_write {
                return Err(Errno::EACCES);
            }
            let list = if path.ends_with("online") {
                crate::task::smp::online_list()
            } else {
                crate::task::smp::cpu_list(crate::arch::nr_cpus_possible())
            };
            return Ok(mk(text(list), 0o100444));
        }
        crate::perf::dev::DIR => return dir_ok(&path),
        crate::perf::dev::PATH => {
            if wants_write {
                return Ok(mk(Node::Perf, 0o100600));
            }
            return Ok(mk(text(crate::perf::dev::read_text()), 0o100600));
        }
        crate::mem::numab::SYSCTL_PATH => {
            let data = crate::mem::numab::sysctl_read().into_bytes();
            return Ok(mk(Node::NumaBalancing { data }, 0o100644));
        }
        _ if node_file(&path).is_some() => {
            if wants_write {
                return Err(Errno::EACCES);
            }
            let data = node_file(&path).unwrap_or_default();
            return Ok(mk(text(data), 0o100444));
        }
        "/proc/cmdline" => {
            let data = format!("{}\n", crate::cmdline::raw());
            return Ok(mk(text(data), 0o100444));
        }
        // debugfs's file has only a write operation: opening it for
        // reading succeeds and a read fails with EINVAL (see `read_at`).
        SPLIT_PATH => return Ok(mk(Node::SplitHugePages, 0o100200)),
        // debugfs seq files without a write operation: the VFS's EINVAL.
        "/sys/kernel/debug/extfrag/unusable_index" => {
            return Ok(mk(
                seq_text(crate::mem::compact::unusable_index()),
                0o100444,
            ));
        }
        "/sys/kernel/debug/extfrag/extfrag_index" => {
            return Ok(mk(seq_text(crate::mem::compact::extfrag_index()), 0o100444));
        }
        "/proc/kpageflags" => return Ok(mk(Node::Kpageflags, 0o100400)),
        "/proc/zoneinfo" => {
            let data = crate::mem::watermark::zoneinfo();
            return Ok(mk(text(data), 0o100444));
        }
        "/proc/meminfo" | "/proc/vmstat" | "/proc/buddyinfo" | "/proc/pagetypeinfo" => {
            let b = crate::mem::memory::buddy();
            let (data, mode) = match path.as_str() {
                "/proc/meminfo" => (meminfo(), 0o100444),
                "/proc/vmstat" => (vmstat(), 0o100444),
                "/proc/buddyinfo" => (b.buddyinfo_text(), 0o100444),
                // Root-only on Linux too (it walks every pageblock).
                _ => (b.pagetypeinfo(), 0o100400),
            };
            return Ok(mk(text(data), mode));
        }
        _ => {}
    }
    if let Some(name) = path
        .strip_prefix(SYSCTL_VM_DIR)
        .and_then(|r| r.strip_prefix('/'))
    {
        let knob = VmKnob::from_name(name).ok_or(Errno::ENOENT)?;
        // sysctl's permission check applies the owner bits even to root:
        // `compact_memory` (0200) cannot be opened for reading.
        let mode = knob.mode();
        if (readable && mode & 0o400 == 0) || (wants_write && mode & 0o200 == 0) {
            return Err(Errno::EACCES);
        }
        let data = if readable {
            VM_SYSCTL.read(knob).into_bytes()
        } else {
            Vec::new()
        };
        return Ok(mk(Node::Sysctl { data, knob }, 0o100000 | mode));
    }
    if let Some(rest) = path.strip_prefix("/proc/") {
        if let Ok(pid) = rest.parse::<u32>() {
            process::find(pid).ok_or(Errno::ENOENT)?;
            return dir_ok(&path);
        }
        let (who, file) = rest.split_once('/').ok_or(Errno::ENOENT)?;
        let target = if who == "self" {
            process::find(me.pid)
        } else {
            who.parse::<u32>().ok().and_then(process::find)
        }
        .ok_or(Errno::ENOENT)?;
        let data = match file {
            "smaps" => smaps(&target, true)?,
            "numa_maps" => crate::fs::procfs::numa_maps(&target)?,
            "maps" => smaps(&target, false)?,
            "status" => crate::fs::procfs::status(&target)?,
            "pagemap" => return Ok(mk(Node::Pagemap { pid: target.pid }, 0o100400)),
            _ => return Err(Errno::ENOENT),
        };
        return Ok(mk(seq_text(data), 0o100444));
    }
    if let Some(rest) = path.strip_prefix(SYSFS_ROOT) {
        if !rest.is_empty() && !rest.starts_with('/') {
            return Err(Errno::ENOENT);
        }
        let rel = rest.trim_start_matches('/');
        let info = THP.stat(rel)?;
        if info.is_dir {
            return dir_ok(&path);
        }
        if wants_write && info.mode & 0o200 == 0 {
            return Err(Errno::EACCES);
        }
        let data = if readable {
            THP.read(rel)?
        } else {
            String::new()
        };
        let node = Node::Text {
            data: data.into_bytes(),
            knob: Some(String::from(rel)),
            no_write: Errno::EACCES,
        };
        return Ok(mk(node, 0o100000 | info.mode));
    }
    match crate::fs::cpio::lookup(&path) {
        Some(e) if e.is_dir() => dir_ok(&path),
        Some(e) => {
            if wants_write {
                return Err(Errno::EROFS);
            }
            Ok(mk(Node::Bytes(e.data), e.mode))
        }
        None if flags & O_CREAT != 0 => Err(Errno::EROFS),
        None => Err(Errno::ENOENT),
    }
}

/// Whether `path` names something (for `newfstatat`): its mode and size.
pub fn stat_path(me: &Process, path: &str) -> Result<(u32, u64), Errno> {
    let f = open(me, path, 0).or_else(|e| {
        if e == Errno::EACCES {
            open(me, path, O_WRONLY)
        } else {
            Err(e)
        }
    })?;
    Ok((f.mode, f.size()))
}

/// User bytes to the console (invalid UTF-8 shown as U+FFFD).
fn console_bytes(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    print!("{}", s);
}

/// Reads `/dev/vda` at byte `pos`: whole pages through a bounce frame.
fn read_disk(pos: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    use mm::physmem::phys::PhysMem;
    let d = crate::block::disk().ok_or(Errno::ENXIO)?;
    let size = d.capacity() * crate::block::SECTOR_SIZE;
    if pos >= size {
        return Ok(0);
    }
    let n = buf.len().min((size - pos) as usize);
    let f = crate::mem::memory::buddy()
        .alloc(0, mm::physmem::buddy::AllocFlags::KERNEL)
        .map_err(|_| Errno::ENOMEM)?;
    let mut done = 0;
    let mut r = Ok(());
    while done < n {
        let at = pos + done as u64;
        let page = at / 4096;
        let off = (at % 4096) as usize;
        let len = (4096 - off).min(n - done);
        r = d.read(
            page * crate::block::PAGE_SECTORS,
            crate::block::PageRun {
                pa: f.pa(),
                pages: 1,
            },
        );
        if r.is_err() {
            break;
        }
        crate::mem::physmem::DIRECT_MAP.read(f.pa() + off as u64, &mut buf[done..done + len]);
        done += len;
    }
    f.put();
    r.map_err(|_| Errno::EIO)?;
    Ok(n)
}

/// `unlink(path)`: tmpfs files; anything else that exists is on the
/// read-only initramfs or a pseudo file system (EROFS).
pub fn unlink(me: &Process, path: &str) -> Result<(), Errno> {
    let path = absolute(me, path);
    if let Some(r) = crate::fs::tmpfs::unlink(&path) {
        return r;
    }
    stat_path(me, &path)?;
    Err(Errno::EROFS)
}

/// `mkdir(path, mode)`: on a tmpfs; elsewhere EEXIST or EROFS.
pub fn mkdir(me: &Process, path: &str, mode: u32) -> Result<(), Errno> {
    let path = absolute(me, path);
    let umask = me.umask.load(core::sync::atomic::Ordering::Relaxed);
    if let Some(r) = crate::fs::tmpfs::mkdir(&path, mode & !umask) {
        return r;
    }
    match stat_path(me, &path) {
        Ok(_) => Err(Errno::EEXIST),
        Err(_) => Err(Errno::EROFS),
    }
}

/// `rmdir(path)`: on a tmpfs; elsewhere ENOENT or EROFS.
pub fn rmdir(me: &Process, path: &str) -> Result<(), Errno> {
    let path = absolute(me, path);
    if let Some(r) = crate::fs::tmpfs::rmdir(&path) {
        return r;
    }
    stat_path(me, &path)?;
    Err(Errno::EROFS)
}

/// Linux's `kstrtobool`: `y`/`Y`/`1`/`on` and `n`/`N`/`0`/`off` (by their
/// first characters, as Linux), anything else `None`.
fn kstrtobool(data: &[u8]) -> Option<bool> {
    match data {
        [b'y' | b'Y' | b'1', ..] => Some(true),
        [b'n' | b'N' | b'0', ..] => Some(false),
        [b'o' | b'O', b'n' | b'N', ..] => Some(true),
        [b'o' | b'O', b'f' | b'F', ..] => Some(false),
        _ => None,
    }
}
