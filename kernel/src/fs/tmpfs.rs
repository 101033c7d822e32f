//! tmpfs: writable in-memory file systems whose regular files are shmem
//! objects (the page cache of `memfd` and shared anonymous memory, so a
//! file mapped in two processes at any addresses maps the same folios).
//!
//! Two are mounted at boot, `/tmp` and `/dev/shm` (where glibc's
//! `shm_open` creates its files), both `huge=never` as on Linux; `mount(2)`
//! of type `tmpfs` adds more (a mount over a mount point hides the files
//! below until `umount2`).  A file's folio size follows its mount's
//! `huge=` as in Linux 6.12: PMD size or nothing, the top-level
//! `shmem_enabled` `deny`/`force` overriding every mount
//! (`ShmemPolicy::mount_orders`).
//!
//! An open file is a [`Node::Memfd`] of the object, so read, write,
//! `pread64`/`pwrite64`, `ftruncate`, `fallocate` and `mmap(MAP_SHARED)`
//! are memfd's; `MAP_PRIVATE` copies on write as Linux (any prot, whatever
//! the open mode beyond read; `mm::aspace` `shmem.rs`).  Files start
//! sealed with `F_SEAL_SEAL`, as Linux's non-memfd shmem files.  Unlinking
//! a file drops its name; the object lives while open or mapped.
//!
//! `size=` (bytes with a `k`/`m`/`g`/... suffix, or `%` of RAM; also
//! `nr_blocks=`) and `nr_inodes=` limit a mount as Linux 6.12's
//! `shmem_sb_info` (`mm::shmem::quota`; default half of RAM for both, 0
//! unlimited): a write that finds the mount full gets ENOSPC (short if it
//! wrote some), a fault SIGBUS, a create or mkdir past `nr_inodes`
//! ENOSPC.  `statfs`/`fstatfs` report them ([`statfs`]), `/proc/mounts`
//! shows them when not the default.  No remount (`MS_REMOUNT`), so the
//! limits are fixed at mount.
//!
//! Decisions: the `mode=`, `uid=` and `gid=` mount options are accepted
//! and not enforced; ownership is not modelled (no permission checks
//! beyond the file type); a directory's mode is the one given at `mkdir`
//! (umask applied); `fallocate` preallocates 4K folios (charged to
//! `size=`), where Linux's follow the mount's `huge=`.
//!
//! # Lock
//! [`FS`] (a spin lock) protects the mounts and the name tree; it is never
//! held across an allocation of page-cache memory or a sleep (dropping a
//! file's object, which frees its folios, happens after it is released).

use super::vfs::{DT_DIR, DT_REG, File, Node};
use crate::mem::uspace;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use mm::abi::errno::Errno;
use mm::shmem::Shmem;
use mm::shmem::policy::ShmemHuge;
use mm::shmem::quota::ShmemQuota;
use mm::sync::Mutex;

const O_CREAT: u64 = 0o100;
const O_EXCL: u64 = 0o200;
const O_TRUNC: u64 = 0o1000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;

struct Mount {
    id: u32,
    /// The mount point (a normalized absolute path).
    path: String,
    huge: ShmemHuge,
    /// `size=` and `nr_inodes=`, and their use.
    quota: Arc<ShmemQuota>,
}

enum Entry {
    Dir {
        mode: u32,
    },
    File {
        obj: super::memfd::Object,
        mode: u32,
    },
}

struct Tmpfs {
    /// In mount order: a later mount at the same path hides an earlier.
    mounts: Vec<Mount>,
    /// (mount id, path inside the mount without the leading `/`).
    entries: BTreeMap<(u32, String), Entry>,
    next_id: u32,
    booted: bool,
}

static FS: Mutex<Tmpfs> = Mutex::new(Tmpfs {
    mounts: Vec::new(),
    entries: BTreeMap::new(),
    next_id: 1,
    booted: false,
});

/// The boot mounts, made on first use.
fn fs() -> mm::sync::MutexGuard<'static, Tmpfs> {
    let mut g = FS.lock();
    if !g.booted {
        g.booted = true;
        for p in ["/tmp", "/dev/shm"] {
            g.add_mount(p, Options::default());
        }
    }
    g
}

impl Tmpfs {
    fn add_mount(&mut self, path: &str, o: Options) {
        let id = self.next_id;
        self.next_id += 1;
        self.mounts.push(Mount {
            id,
            path: String::from(path),
            huge: o.huge,
            quota: Arc::new(ShmemQuota::new(
                o.blocks.unwrap_or_else(default_max),
                o.inodes.unwrap_or_else(default_max),
            )),
        });
    }

    /// The topmost mount holding `path`, and the path inside it ("" for
    /// the mount's root).
    fn resolve<'p>(&self, path: &'p str) -> Option<(&Mount, &'p str)> {
        self.mounts
            .iter()
            .rev()
            .filter_map(|m| {
                let rest = path.strip_prefix(m.path.as_str())?;
                if rest.is_empty() {
                    Some((m, ""))
                } else {
                    rest.strip_prefix('/').map(|r| (m, r))
                }
            })
            .max_by_key(|(m, _)| m.path.len())
    }

    /// Whether `rel` is a directory of mount `id` (its root is).
    fn is_dir(&self, id: u32, rel: &str) -> bool {
        rel.is_empty()
            || matches!(
                self.entries.get(&(id, String::from(rel))),
                Some(Entry::Dir { .. })
            )
    }

    /// ENOENT / ENOTDIR unless the parent of `rel` is a directory.
    fn parent_ok(&self, id: u32, rel: &str) -> Result<(), Errno> {
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        if self.is_dir(id, parent) {
            return Ok(());
        }
        match self.entries.get(&(id, String::from(parent))) {
            Some(Entry::File { .. }) => Err(Errno::ENOTDIR),
            _ => Err(Errno::ENOENT),
        }
    }
}

/// `open` of `path` on a tmpfs (`None`: no tmpfs holds it): the file, or
/// the directory through `dir`; `O_CREAT` makes a regular file with
/// `mode` (umask applied by the caller).  `mk` builds the open file.
pub fn open(
    path: &str,
    flags: u64,
    mode: u32,
    wants_write: bool,
    mk: &dyn Fn(Node, u32) -> File,
) -> Option<Result<File, Errno>> {
    let mut g = fs();
    let (m, rel) = g.resolve(path)?;
    let (id, huge, quota) = (m.id, m.huge, m.quota.clone());
    let rel = String::from(rel);
    Some((|| {
        if g.is_dir(id, &rel) {
            if flags & O_CREAT != 0 || wants_write {
                return Err(Errno::EISDIR);
            }
            let mode = match g.entries.get(&(id, rel.clone())) {
                Some(Entry::Dir { mode }) => *mode,
                _ => 0o1777,
            };
            return Ok(mk(Node::Dir(String::from(path)), S_IFDIR | mode));
        }
        g.parent_ok(id, &rel)?;
        if let Some(Entry::File { obj, mode }) = g.entries.get(&(id, rel.clone())) {
            if flags & O_CREAT != 0 && flags & O_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            let (obj, mode) = (obj.clone(), *mode);
            drop(g);
            if flags & O_TRUNC != 0 && wants_write {
                super::memfd::truncate(&obj, 0)?;
            }
            return Ok(mk(Node::Memfd(obj), mode));
        }
        if flags & O_CREAT == 0 {
            return Err(Errno::ENOENT);
        }
        if !quota.try_get_inode() {
            return Err(Errno::ENOSPC);
        }
        let obj = Arc::new(Shmem::on_mount(
            Some(&uspace::ctx().thp.shmem),
            huge,
            Some(quota),
        ));
        crate::mem::swap::shmem_register(&obj);
        let mode = S_IFREG | (mode & 0o7777);
        g.entries.insert(
            (id, rel),
            Entry::File {
                obj: obj.clone(),
                mode,
            },
        );
        Ok(mk(Node::Memfd(obj), mode))
    })())
}

/// `unlink` on a tmpfs (`None`: not a tmpfs path).
pub fn unlink(path: &str) -> Option<Result<(), Errno>> {
    let mut g = fs();
    let (m, rel) = g.resolve(path)?;
    let key = (m.id, String::from(rel));
    let is_file = match g.entries.get(&key) {
        Some(Entry::File { .. }) => true,
        Some(Entry::Dir { .. }) => false,
        None if rel.is_empty() => false,
        None => return Some(g.parent_ok(key.0, rel).and(Err(Errno::ENOENT))),
    };
    if !is_file {
        return Some(Err(Errno::EISDIR));
    }
    let gone = g.entries.remove(&key);
    drop(g);
    // The object (and its folios, unless open or mapped) goes here.
    drop(gone);
    Some(Ok(()))
}

/// `mkdir` on a tmpfs (`None`: not a tmpfs path).
pub fn mkdir(path: &str, mode: u32) -> Option<Result<(), Errno>> {
    let mut g = fs();
    let (m, rel) = g.resolve(path)?;
    let key = (m.id, String::from(rel));
    let quota = m.quota.clone();
    Some((|| {
        if rel.is_empty() || g.entries.contains_key(&key) {
            return Err(Errno::EEXIST);
        }
        g.parent_ok(key.0, rel)?;
        if !quota.try_get_inode() {
            return Err(Errno::ENOSPC);
        }
        g.entries.insert(
            key,
            Entry::Dir {
                mode: mode & 0o7777,
            },
        );
        Ok(())
    })())
}

/// `rmdir` on a tmpfs (`None`: not a tmpfs path).
pub fn rmdir(path: &str) -> Option<Result<(), Errno>> {
    let mut g = fs();
    let (m, rel) = g.resolve(path)?;
    let (id, quota) = (m.id, m.quota.clone());
    let key = (id, String::from(rel));
    let kind = match g.entries.get(&key) {
        _ if rel.is_empty() => Err(Errno::EBUSY),
        Some(Entry::File { .. }) => Err(Errno::ENOTDIR),
        None => Err(Errno::ENOENT),
        Some(Entry::Dir { .. }) => Ok(()),
    };
    Some(match kind {
        Err(e) => Err(e),
        Ok(()) => {
            let prefix = alloc::format!("{rel}/");
            if g.entries
                .range((id, prefix.clone())..)
                .next()
                .is_some_and(|((i, p), _)| *i == id && p.starts_with(&prefix))
            {
                Err(Errno::ENOTEMPTY)
            } else {
                g.entries.remove(&key);
                quota.put_inode();
                Ok(())
            }
        }
    })
}

/// The entries of the tmpfs directory `path` (`None`: not a tmpfs
/// directory).
pub fn list(path: &str) -> Option<Vec<(String, u8)>> {
    let g = fs();
    let (m, rel) = g.resolve(path)?;
    if !g.is_dir(m.id, rel) {
        return None;
    }
    let id = m.id;
    let prefix = if rel.is_empty() {
        String::new()
    } else {
        alloc::format!("{rel}/")
    };
    let mut out: Vec<(String, u8)> = g
        .entries
        .range((id, prefix.clone())..)
        .take_while(|((i, p), _)| *i == id && p.starts_with(&prefix))
        .filter(|((_, p), _)| !p[prefix.len()..].contains('/'))
        .map(|((_, p), e)| {
            let t = if matches!(e, Entry::Dir { .. }) {
                DT_DIR
            } else {
                DT_REG
            };
            (String::from(&p[prefix.len()..]), t)
        })
        .collect();
    // Mount points directly below (e.g. `/dev/shm` seen from `/dev`).
    for mp in &g.mounts {
        if let Some(name) = mp.path.strip_prefix(path).and_then(|r| r.strip_prefix('/'))
            && !name.contains('/')
            && !out.iter().any(|(n, _)| n == name)
        {
            out.push((String::from(name), DT_DIR));
        }
    }
    Some(out)
}

/// Mount points (for the parent directories' listings, which are not on
/// a tmpfs): the names directly below `dir`.
pub fn mount_points_below(dir: &str) -> Vec<String> {
    let g = fs();
    let base = if dir == "/" { "" } else { dir };
    g.mounts
        .iter()
        .filter_map(|m| {
            let name = m.path.strip_prefix(base)?.strip_prefix('/')?;
            (!name.contains('/')).then(|| String::from(name))
        })
        .collect()
}

/// A mount's options.
struct Options {
    huge: ShmemHuge,
    /// `size=` / `nr_blocks=` in pages (`None`: the default).
    blocks: Option<u64>,
    /// `nr_inodes=` (`None`: the default).
    inodes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            huge: ShmemHuge::Never,
            blocks: None,
            inodes: None,
        }
    }
}

/// Linux's default `size=` in pages and `nr_inodes=`: half of RAM's pages
/// (`shmem_default_max_blocks`, `shmem_default_max_inodes`).
fn default_max() -> u64 {
    crate::mem::memory::boot_ram_frames() / 2
}

/// Linux's `memparse`: a number in C notation (`0x` hex, leading `0`
/// octal) with an optional binary suffix `k`, `m`, `g`, `t`, `p`, `e`
/// (either case); returns the value and the rest of the string.
fn memparse(s: &str) -> Option<(u64, &str)> {
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, h)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 && radix != 8 {
        return None;
    }
    let mut v = if end == 0 {
        0
    } else {
        u64::from_str_radix(&digits[..end], radix).ok()?
    };
    let mut rest = &digits[end..];
    let shift = match rest.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        Some('t') => 40,
        Some('p') => 50,
        Some('e') => 60,
        _ => 0,
    };
    if shift != 0 {
        v = v.wrapping_shl(shift);
        rest = &rest[1..];
    }
    Some((v, rest))
}

/// Parses tmpfs mount options (comma-separated) as Linux 6.12's
/// `shmem_parse_one`: `huge=` (`never`, `always`, `within_size`,
/// `advise`), `size=` (bytes, or `N%` of RAM), `nr_blocks=`, `nr_inodes=`;
/// `mode=`, `uid=`, `gid=` accepted; anything else EINVAL.
fn parse_options(data: &str) -> Result<Options, Errno> {
    let mut o = Options::default();
    for opt in data.split(',').filter(|o| !o.is_empty()) {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        match k {
            "huge" => {
                o.huge = match v {
                    "never" => ShmemHuge::Never,
                    "always" => ShmemHuge::Always,
                    "within_size" => ShmemHuge::WithinSize,
                    "advise" => ShmemHuge::Advise,
                    _ => return Err(Errno::EINVAL),
                }
            }
            "size" => {
                let (mut size, rest) = memparse(v).ok_or(Errno::EINVAL)?;
                let rest = match rest.strip_prefix('%') {
                    Some(r) => {
                        let ram = crate::mem::memory::boot_ram_frames();
                        size = ((size as u128 * 4096 * ram as u128) / 100) as u64;
                        r
                    }
                    None => rest,
                };
                if !rest.is_empty() {
                    return Err(Errno::EINVAL);
                }
                o.blocks = Some(size.div_ceil(4096));
            }
            "nr_blocks" => match memparse(v) {
                Some((n, "")) => o.blocks = Some(n),
                _ => return Err(Errno::EINVAL),
            },
            "nr_inodes" => match memparse(v) {
                Some((n, "")) if n <= u64::MAX / 1024 => o.inodes = Some(n),
                _ => return Err(Errno::EINVAL),
            },
            "mode" | "uid" | "gid" if !v.is_empty() => {}
            _ => return Err(Errno::EINVAL),
        }
    }
    Ok(o)
}

/// `mount(_, target, "tmpfs", _, data)`: a new, empty tmpfs at the
/// directory `target` (normalized), hiding what was there.
pub fn mount(target: &str, data: &str, target_is_dir: bool) -> Result<(), Errno> {
    let opts = parse_options(data)?;
    let mut g = fs();
    let tmpfs_dir = g.resolve(target).map(|(m, rel)| g.is_dir(m.id, rel));
    match tmpfs_dir {
        Some(true) => {}
        Some(false) => return Err(Errno::ENOTDIR),
        None if target_is_dir => {}
        None => return Err(Errno::ENOENT),
    }
    g.add_mount(target, opts);
    Ok(())
}

/// `umount2(target)`: removes the topmost tmpfs mounted at `target` and
/// its names (open and mapped files live on); EINVAL if none is.
pub fn umount(target: &str) -> Result<(), Errno> {
    let gone: Vec<Entry> = {
        let mut g = fs();
        let Some(i) = g.mounts.iter().rposition(|m| m.path == target) else {
            return Err(Errno::EINVAL);
        };
        let id = g.mounts.remove(i).id;
        let keys: Vec<(u32, String)> = g
            .entries
            .range((id, String::new())..)
            .take_while(|((i, _), _)| *i == id)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| g.entries.remove(k)).collect()
    };
    drop(gone);
    Ok(())
}

/// `/proc/mounts` lines of the tmpfs mounts (Linux's format).
pub fn proc_mounts() -> String {
    let g = fs();
    let mut s = String::new();
    for m in &g.mounts {
        let huge = match m.huge {
            ShmemHuge::Never => "",
            ShmemHuge::Always => ",huge=always",
            ShmemHuge::WithinSize => ",huge=within_size",
            ShmemHuge::Advise => ",huge=advise",
            _ => "",
        };
        // `size=` in KiB and `nr_inodes=` when not the defaults, first, as
        // Linux's `shmem_show_options`.
        let mut limits = String::new();
        if m.quota.max_blocks() != default_max() {
            limits.push_str(&alloc::format!(",size={}k", m.quota.max_blocks() * 4));
        }
        if m.quota.max_inodes() != default_max() {
            limits.push_str(&alloc::format!(",nr_inodes={}", m.quota.max_inodes()));
        }
        s.push_str(&alloc::format!(
            "tmpfs {} tmpfs rw{limits}{huge} 0 0\n",
            m.path
        ));
    }
    s
}

/// `TMPFS_MAGIC`, `statfs`'s `f_type` for a tmpfs.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

/// What `statfs` reports for a tmpfs (Linux's `shmem_statfs`): blocks
/// and inodes total and free, each 0 when unlimited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
}

impl StatFs {
    /// The figures of a mount's (or an object's) quota; `None`: a memfd or
    /// anonymous object, Linux's unlimited internal mount.
    pub fn of(q: Option<&ShmemQuota>) -> StatFs {
        let Some(q) = q else {
            return StatFs::default();
        };
        let mut s = StatFs::default();
        if q.max_blocks() != 0 {
            s.blocks = q.max_blocks();
            s.bfree = q.max_blocks().saturating_sub(q.used_blocks());
        }
        if q.max_inodes() != 0 {
            s.files = q.max_inodes();
            s.ffree = q.max_inodes().saturating_sub(q.used_inodes());
        }
        s
    }
}

/// `statfs` of `path` if a tmpfs holds it (`None`: not a tmpfs path).
pub fn statfs(path: &str) -> Option<StatFs> {
    let g = fs();
    let (m, _) = g.resolve(path)?;
    Some(StatFs::of(Some(&m.quota)))
}
