//! System V shared memory (`shmget`, `shmat`, `shmdt`, `shmctl`), as Linux
//! 6.12's `ipc/shm.c` behaves for a root or ordinary caller in one IPC
//! namespace.
//!
//! A segment is a shmem object ([`mm::shmem::Shmem`], the same page cache
//! as `memfd` and `MAP_SHARED|MAP_ANONYMOUS`), so it gets large folios by
//! the same `shmem_enabled` policy (Linux's segments live on the internal
//! `shm_mnt` mount, whose policy is `shmem_enabled`).  An attach is an
//! ordinary shared mapping of the object at offset 0.
//!
//! Decisions where this differs from Linux or Linux is silent:
//! * `shm_nattch` is counted when asked, as the number of VMAs of every
//!   live address space that map the segment — what Linux counts through
//!   its `vm_ops->open/close` (fork and VMA splits included).
//! * A segment removed (`IPC_RMID`) while attached keeps its id (attaches
//!   by id still work, as Linux) and loses its key; the registry then holds
//!   it weakly, so its memory goes with the last mapping.
//! * Groups are not modelled (processes have a uid only): the owner's or
//!   creator's uid gets the owner bits, everyone else the "other" bits; uid
//!   0 passes every check (`CAP_IPC_OWNER`).
//! * Times are seconds of the kernel's one clock.
//! * `SHM_HUGETLB` is refused with EINVAL (no hugetlbfs here).
//!
//! # Lock
//! [`REGISTRY`] (a spin lock) protects the segment table; it is never held
//! across a mapping call, a sleep or a walk of the address spaces.

use crate::mem::uspace;
use crate::proc::process::Process;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;
use mm::abi::errno::Errno;
use mm::abi::uapi::{MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_SHARED, Prot};
use mm::shmem::Shmem;
use mm::sync::Mutex;

pub const IPC_PRIVATE: i32 = 0;
const IPC_CREAT: u64 = 0o1000;
const IPC_EXCL: u64 = 0o2000;
const IPC_RMID: u64 = 0;
const IPC_SET: u64 = 1;
const IPC_STAT: u64 = 2;
const IPC_INFO: u64 = 3;
/// Set in `cmd` by old ABIs; 64-bit Linux strips it (`ipc_parse_version`).
const IPC_64: u64 = 0x100;
const SHM_LOCK: u64 = 11;
const SHM_UNLOCK: u64 = 12;
const SHM_STAT: u64 = 13;
const SHM_INFO: u64 = 14;
const SHM_STAT_ANY: u64 = 15;
const SHM_HUGETLB: u64 = 0o4000;
const SHM_RDONLY: u64 = 0o10000;
const SHM_RND: u64 = 0o20000;
const SHM_REMAP: u64 = 0o40000;
const SHM_EXEC: u64 = 0o100000;
/// `shm_perm.mode` bits beyond the permissions.
const SHM_DEST: u32 = 0o1000;
const SHM_LOCKED: u32 = 0o2000;

/// Linux's defaults: `SHMMIN`, `SHMMAX`/`SHMALL` (`ULONG_MAX - 2^24`),
/// `SHMMNI`; `SHMLBA` is the page size on both arches.
const SHMMIN: u64 = 1;
const SHMMAX: u64 = u64::MAX - (1 << 24);
const SHMALL: u64 = u64::MAX - (1 << 24);
const SHMMNI: usize = 4096;
const SHMLBA: u64 = 4096;
/// Linux's `IPCMNI` id layout: index + sequence * 32768.
const SEQ_MULTIPLIER: i32 = 32768;

/// The object a segment's mappings share: strongly held until removal.
enum Hold {
    Live(Arc<Shmem<'static>>),
    Removed(Weak<Shmem<'static>>),
}

struct Segment {
    key: i32,
    seq: u16,
    hold: Hold,
    /// The object's id, which the attaches' VMAs name.
    obj_id: u64,
    size: u64,
    uid: u32,
    cuid: u32,
    mode: u32,
    cpid: u32,
    lpid: u32,
    atime: i64,
    dtime: i64,
    ctime: i64,
}

impl Segment {
    fn object(&self) -> Option<Arc<Shmem<'static>>> {
        match &self.hold {
            Hold::Live(o) => Some(o.clone()),
            Hold::Removed(w) => w.upgrade(),
        }
    }

    fn id(&self, idx: usize) -> i32 {
        self.seq as i32 * SEQ_MULTIPLIER + idx as i32
    }
}

struct Registry {
    /// By index (the id's low part); `None` is a free index.
    segs: Vec<Option<Segment>>,
    /// The next sequence number (Linux's `ids->seq`).
    seq: u16,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    segs: Vec::new(),
    seq: 0,
});

impl Registry {
    /// Drops removed segments whose last mapping went.
    fn reap(&mut self) {
        for s in self.segs.iter_mut() {
            if s.as_ref().is_some_and(|g| g.object().is_none()) {
                *s = None;
            }
        }
    }

    /// The live segment `id` names (EINVAL for a bad or stale id).
    fn get(&mut self, id: i32) -> Result<(usize, &mut Segment), Errno> {
        self.reap();
        if id < 0 {
            return Err(Errno::EINVAL);
        }
        let idx = (id % SEQ_MULTIPLIER) as usize;
        match self.segs.get_mut(idx).and_then(|s| s.as_mut()) {
            Some(s) if s.id(idx) == id => Ok((idx, s)),
            _ => Err(Errno::EINVAL),
        }
    }
}

fn now_s() -> i64 {
    (crate::arch::now_ns() / 1_000_000_000) as i64
}

fn uid(p: &Process) -> u32 {
    p.uid.load(Relaxed)
}

/// Linux's `ipcperms`: whether `p` may access a segment for `want`
/// (rwx bits, 4 = read, 2 = write).
fn allowed(p: &Process, s: &Segment, want: u32) -> bool {
    let u = uid(p);
    if u == 0 {
        return true;
    }
    let granted = if u == s.uid || u == s.cuid {
        (s.mode >> 6) & 7
    } else {
        s.mode & 7
    };
    want & !granted == 0
}

/// `shmget(key, size, shmflg)`.
pub fn shmget(p: &Process, key: i32, size: u64, flg: u64) -> Result<u64, Errno> {
    if flg & SHM_HUGETLB != 0 {
        return Err(Errno::EINVAL);
    }
    let mut r = REGISTRY.lock();
    r.reap();
    if key != IPC_PRIVATE {
        let found = r
            .segs
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.as_ref().filter(|s| s.key == key).map(|s| (i, s)));
        if let Some((idx, s)) = found {
            if flg & IPC_CREAT != 0 && flg & IPC_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            if s.size < size {
                return Err(Errno::EINVAL);
            }
            // The requested rights are the low nine bits, as Linux's
            // `ipcperms` reads them: any class asked for counts.
            let want = ((flg >> 6) | (flg >> 3) | flg) as u32 & 7;
            if !allowed(p, s, want) {
                return Err(Errno::EACCES);
            }
            return Ok(s.id(idx) as u64);
        }
        if flg & IPC_CREAT == 0 {
            return Err(Errno::ENOENT);
        }
    }
    if !(SHMMIN..=SHMMAX).contains(&size) {
        return Err(Errno::EINVAL);
    }
    let pages = size.div_ceil(4096);
    let total: u64 = r.segs.iter().flatten().map(|s| s.size.div_ceil(4096)).sum();
    if total.checked_add(pages).is_none_or(|t| t > SHMALL) {
        return Err(Errno::ENOSPC);
    }
    let idx = match r.segs.iter().position(|s| s.is_none()) {
        Some(i) => i,
        None if r.segs.len() < SHMMNI => {
            r.segs.push(None);
            r.segs.len() - 1
        }
        None => return Err(Errno::ENOSPC),
    };
    let obj = Arc::new(Shmem::with_gauges(size, 0, Some(&uspace::ctx().thp.shmem)));
    crate::mem::swap::shmem_register(&obj);
    let seq = r.seq;
    r.seq = r.seq.wrapping_add(1) % (i32::MAX / SEQ_MULTIPLIER) as u16;
    let u = uid(p);
    let seg = Segment {
        key,
        seq,
        obj_id: obj.id(),
        hold: Hold::Live(obj),
        size,
        uid: u,
        cuid: u,
        mode: flg as u32 & 0o777,
        cpid: p.pid,
        lpid: 0,
        atime: 0,
        dtime: 0,
        ctime: now_s(),
    };
    let id = seg.id(idx);
    r.segs[idx] = Some(seg);
    Ok(id as u64)
}

/// `shmat(shmid, shmaddr, shmflg)`: the address of the new attach.
pub fn shmat(p: &Process, id: i32, addr: u64, flg: u64) -> Result<u64, Errno> {
    let mut addr = addr;
    if addr & (SHMLBA - 1) != 0 {
        if flg & SHM_RND == 0 {
            return Err(Errno::EINVAL);
        }
        addr &= !(SHMLBA - 1);
        if addr == 0 && flg & SHM_REMAP != 0 {
            return Err(Errno::EINVAL);
        }
    }
    let (mut prot, want) = if flg & SHM_RDONLY != 0 {
        (Prot::from_raw(1), 4)
    } else {
        (Prot::from_raw(3), 6)
    };
    if flg & SHM_EXEC != 0 {
        prot = Prot::from_raw(prot.bits() | 4);
    }
    let (obj, size) = {
        let mut r = REGISTRY.lock();
        let (_, s) = r.get(id)?;
        if !allowed(p, s, want | if flg & SHM_EXEC != 0 { 1 } else { 0 }) {
            return Err(Errno::EACCES);
        }
        (s.object().ok_or(Errno::EIDRM)?, s.size)
    };
    let mut flags = MAP_SHARED;
    if addr != 0 {
        flags |= if flg & SHM_REMAP != 0 {
            MAP_FIXED
        } else {
            MAP_FIXED_NOREPLACE
        };
    }
    let at = p
        .with_mm(|mm| mm.mmap_shmem(addr, size, prot, flags, obj, 0, flg & SHM_RDONLY == 0))?
        .map_err(|e| if e == Errno::EEXIST { Errno::EINVAL } else { e })?;
    let mut r = REGISTRY.lock();
    if let Ok((_, s)) = r.get(id) {
        s.atime = now_s();
        s.lpid = p.pid;
    }
    Ok(at)
}

/// `shmdt(shmaddr)`: unmaps the segment attached at `addr` (the VMAs of
/// its object from `addr` over the segment's size); EINVAL when no attach
/// starts there.
pub fn shmdt(p: &Process, addr: u64) -> Result<u64, Errno> {
    if addr & (SHMLBA - 1) != 0 {
        return Err(Errno::EINVAL);
    }
    let obj = p.with_mm(|mm| {
        let vmas = mm.vmas();
        vmas.find(addr)
            .filter(|v| v.start == addr && v.pgoff == 0)
            .and_then(|v| v.shmem)
    })?;
    let Some(obj) = obj else {
        return Err(Errno::EINVAL);
    };
    let size = {
        let mut r = REGISTRY.lock();
        r.reap();
        let s = r
            .segs
            .iter_mut()
            .flatten()
            .find(|s| s.obj_id == obj)
            .ok_or(Errno::EINVAL)?;
        s.dtime = now_s();
        s.lpid = p.pid;
        s.size
    };
    let end = addr.saturating_add(size.div_ceil(4096) * 4096);
    p.with_mm(|mm| {
        let ranges: Vec<(u64, u64)> = {
            let vmas = mm.vmas();
            vmas.iter()
                .filter(|v| v.shmem == Some(obj) && v.start >= addr && v.start < end)
                .map(|v| (v.start, v.end))
                .collect()
        };
        for (s, e) in ranges {
            let _ = mm.munmap(s, e - s);
        }
    })?;
    REGISTRY.lock().reap();
    Ok(0)
}

/// VMAs of every live address space mapping object `obj`.
fn nattch(obj: u64) -> u64 {
    uspace::all_mms()
        .iter()
        .map(|m| {
            let e = m.enter();
            let vmas = e.vmas();
            vmas.iter().filter(|v| v.shmem == Some(obj)).count() as u64
        })
        .sum()
}

/// Linux's `struct shmid64_ds` (the same on x86_64 and arm64).
fn shmid_ds(s: &Segment, nattch: u64) -> [u8; 112] {
    let mut b = [0u8; 112];
    let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
    put(0, &s.key.to_le_bytes());
    put(4, &s.uid.to_le_bytes());
    put(8, &0u32.to_le_bytes());
    put(12, &s.cuid.to_le_bytes());
    put(16, &0u32.to_le_bytes());
    put(20, &s.mode.to_le_bytes());
    put(24, &s.seq.to_le_bytes());
    put(48, &s.size.to_le_bytes());
    put(56, &s.atime.to_le_bytes());
    put(64, &s.dtime.to_le_bytes());
    put(72, &s.ctime.to_le_bytes());
    put(80, &s.cpid.to_le_bytes());
    put(84, &s.lpid.to_le_bytes());
    put(88, &nattch.to_le_bytes());
    b
}

/// `shmctl(shmid, cmd, buf)`.
pub fn shmctl(p: &Process, id: i32, cmd: u64, buf: u64) -> Result<u64, Errno> {
    let cmd = cmd & !IPC_64;
    match cmd {
        IPC_INFO => {
            // struct shminfo64: shmmax, shmmin, shmmni, shmseg, shmall and
            // four unused words.
            let mut b = [0u8; 72];
            for (i, v) in [SHMMAX, SHMMIN, SHMMNI as u64, 4096, SHMALL]
                .iter()
                .enumerate()
            {
                b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            crate::syscall::efault(crate::arch::copy_to_user(buf, &b))?;
            Ok(highest_index())
        }
        SHM_INFO => {
            // struct shm_info: used_ids (int, padded), shm_tot, shm_rss,
            // shm_swp, swap_attempts, swap_successes.
            let (used, tot, rss) = {
                let mut r = REGISTRY.lock();
                r.reap();
                let live: Vec<&Segment> = r.segs.iter().flatten().collect();
                let tot: u64 = live.iter().map(|s| s.size.div_ceil(4096)).sum();
                let rss: u64 = live
                    .iter()
                    .filter_map(|s| s.object())
                    .map(|o| o.cached_pages())
                    .sum();
                (live.len() as u32, tot, rss)
            };
            let mut b = [0u8; 48];
            b[0..4].copy_from_slice(&used.to_le_bytes());
            b[8..16].copy_from_slice(&tot.to_le_bytes());
            b[16..24].copy_from_slice(&rss.to_le_bytes());
            crate::syscall::efault(crate::arch::copy_to_user(buf, &b))?;
            Ok(highest_index())
        }
        IPC_STAT | SHM_STAT | SHM_STAT_ANY => {
            let (idx, s_copy, obj) = {
                let mut r = REGISTRY.lock();
                let (idx, s) = if cmd == IPC_STAT {
                    r.get(id)?
                } else {
                    r.reap();
                    let idx = usize::try_from(id).map_err(|_| Errno::EINVAL)?;
                    let s = r
                        .segs
                        .get_mut(idx)
                        .and_then(|s| s.as_mut())
                        .ok_or(Errno::EINVAL)?;
                    (idx, s)
                };
                if cmd != SHM_STAT_ANY && !allowed(p, s, 4) {
                    return Err(Errno::EACCES);
                }
                let b = shmid_ds(s, 0);
                (idx, b, s.obj_id)
            };
            let mut b = s_copy;
            b[88..96].copy_from_slice(&nattch(obj).to_le_bytes());
            crate::syscall::efault(crate::arch::copy_to_user(buf, &b))?;
            if cmd == IPC_STAT {
                Ok(0)
            } else {
                let r = REGISTRY.lock();
                Ok(r.segs[idx].as_ref().map_or(0, |s| s.id(idx)) as u64)
            }
        }
        IPC_SET => {
            // uid, gid and the nine permission bits from the caller's
            // struct shmid64_ds.
            let mut b = [0u8; 24];
            crate::syscall::efault(crate::arch::copy_from_user(&mut b, buf))?;
            let mut r = REGISTRY.lock();
            let (_, s) = r.get(id)?;
            let u = uid(p);
            if u != 0 && u != s.uid && u != s.cuid {
                return Err(Errno::EPERM);
            }
            s.uid = u32::from_le_bytes(b[4..8].try_into().unwrap_or_default());
            let mode = u32::from_le_bytes(b[20..24].try_into().unwrap_or_default());
            s.mode = (s.mode & !0o777) | (mode & 0o777);
            s.ctime = now_s();
            Ok(0)
        }
        IPC_RMID => {
            let gone = {
                let mut r = REGISTRY.lock();
                let (_, s) = r.get(id)?;
                let u = uid(p);
                if u != 0 && u != s.uid && u != s.cuid {
                    return Err(Errno::EPERM);
                }
                // Removed: no longer found by key; its memory goes with the
                // last mapping.
                s.key = IPC_PRIVATE;
                s.mode |= SHM_DEST;
                s.ctime = now_s();
                let strong = match core::mem::replace(&mut s.hold, Hold::Removed(Weak::new())) {
                    Hold::Live(o) => o,
                    Hold::Removed(w) => {
                        s.hold = Hold::Removed(w);
                        return Ok(0);
                    }
                };
                s.hold = Hold::Removed(Arc::downgrade(&strong));
                strong
            };
            // Dropped outside the lock: the last reference frees the folios.
            drop(gone);
            REGISTRY.lock().reap();
            Ok(0)
        }
        SHM_LOCK | SHM_UNLOCK => {
            let mut r = REGISTRY.lock();
            let (_, s) = r.get(id)?;
            let u = uid(p);
            if u != 0 && u != s.uid && u != s.cuid {
                return Err(Errno::EPERM);
            }
            if cmd == SHM_LOCK {
                s.mode |= SHM_LOCKED;
            } else {
                s.mode &= !SHM_LOCKED;
            }
            // Never swapped out while locked (Linux's `shmem_lock`).
            if let Some(o) = s.object() {
                o.set_unevictable(cmd == SHM_LOCK);
            }
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

fn highest_index() -> u64 {
    let mut r = REGISTRY.lock();
    r.reap();
    r.segs.iter().rposition(|s| s.is_some()).unwrap_or(0) as u64
}

/// `/proc/sysvipc/shm` as Linux 6.12's `sysvipc_shm_proc_show` on a
/// 64-bit kernel: its header, then one line per segment (removed ones
/// still attached included, key 0 and `SHM_DEST` in the mode) in index
/// order: key, id, octal mode, size, creator and last pids, attaches,
/// owner and creator uid and gid, the three times, resident and swapped
/// bytes (shmem is never swapped here: 0).
pub fn proc_sysvipc_shm() -> alloc::string::String {
    use core::fmt::Write;
    let rows: Vec<([u8; 112], u64, u64)> = {
        let mut r = REGISTRY.lock();
        r.reap();
        r.segs
            .iter()
            .enumerate()
            .filter_map(|(idx, s)| {
                let s = s.as_ref()?;
                let mut ds = shmid_ds(s, 0);
                ds[24..28].copy_from_slice(&s.id(idx).to_le_bytes());
                let rss = s.object().map_or(0, |o| o.cached_pages());
                Some((ds, s.obj_id, rss))
            })
            .collect()
    };
    let mut out = alloc::string::String::from(
        "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n",
    );
    let u32_at =
        |b: &[u8; 112], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
    let u64_at =
        |b: &[u8; 112], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
    for (ds, obj, rss) in rows {
        let _ = writeln!(
            out,
            "{:>10} {:>10}  {:>4o} {:>21} {:>5} {:>5}  {:>5} {:>5} {:>5} {:>5} {:>5} {:>10} {:>10} {:>10} {:>21} {:>21}",
            u32_at(&ds, 0) as i32,
            u32_at(&ds, 24) as i32,
            u32_at(&ds, 20),
            u64_at(&ds, 48),
            u32_at(&ds, 80),
            u32_at(&ds, 84),
            nattch(obj),
            u32_at(&ds, 4),
            u32_at(&ds, 8),
            u32_at(&ds, 12),
            u32_at(&ds, 16),
            u64_at(&ds, 56),
            u64_at(&ds, 64),
            u64_at(&ds, 72),
            rss * 4096,
            0
        );
    }
    out
}
