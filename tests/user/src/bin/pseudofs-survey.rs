//! A survey of the `/proc` and `/sys` files this kernel offers, for
//! comparing them with Linux's (`init=/pseudofs-survey` on both kernels;
//! `make pseudofs-diff` runs it on each and prints the differences).
//!
//! For every path it prints one `F` line: the mode `newfstatat` reports,
//! what opening it read-only and write-only gives (`ok` or the errno),
//! what a read gives (the byte count's class, or the errno) and what a
//! one-byte write of `?` gives (no file here accepts `?`, so nothing is
//! changed); then up to three `|` lines of its text (digits masked as `9`
//! so counters compare as format).  The THP sysfs tree is walked with
//! `getdents64`, so files one kernel has and the other lacks show up; the
//! other paths are the fixed set this kernel implements.
#![no_std]
#![no_main]
#![allow(clippy::result_large_err)]

use mthp_user::sys::{self, nr};
use mthp_user::{Args, Path, entry, path, println};

const FIXED: &[&str] = &[
    "/proc/meminfo",
    "/proc/vmstat",
    "/proc/buddyinfo",
    "/proc/pagetypeinfo",
    "/proc/zoneinfo",
    "/proc/sys/vm/min_free_kbytes",
    "/proc/sys/vm/watermark_scale_factor",
    "/proc/sys/vm/swappiness",
    "/proc/sys/vm/page-cluster",
    "/proc/cmdline",
    "/proc/kpageflags",
    "/proc/self/smaps",
    "/proc/self/maps",
    "/proc/self/pagemap",
    "/sys/devices/system/cpu/online",
    "/sys/devices/system/cpu/possible",
    "/sys/devices/system/cpu/present",
    "/sys/devices/system/node/possible",
    "/sys/devices/system/node/online",
    "/sys/devices/system/node/has_memory",
    "/sys/devices/system/node/has_normal_memory",
    "/sys/devices/system/node/has_cpu",
    "/sys/devices/system/node/node0/cpulist",
    "/sys/devices/system/node/node0/cpumap",
    "/sys/devices/system/node/node0/distance",
    "/sys/devices/system/node/node0/meminfo",
    "/sys/devices/system/node/node0/numastat",
    "/sys/kernel/debug/split_huge_pages",
];

const THP: &str = "/sys/kernel/mm/transparent_hugepage";

fn errno_or_ok(r: isize) -> i64 {
    if r < 0 { r as i64 } else { 0 }
}

/// `st_mode` from `newfstatat` (offset 24 in x86_64's `struct stat`, 16
/// in the generic layout arm64 uses).
fn stat_mode(p: &Path) -> Result<u32, isize> {
    let mut st = [0u8; 256];
    let r = sys::syscall(
        nr::NEWFSTATAT,
        &[
            -100isize as usize,
            p.c().as_ptr() as usize,
            st.as_mut_ptr() as usize,
            0,
        ],
    );
    if r < 0 {
        return Err(r);
    }
    let off = if cfg!(target_arch = "x86_64") { 24 } else { 16 };
    Ok(u32::from_le_bytes([
        st[off],
        st[off + 1],
        st[off + 2],
        st[off + 3],
    ]))
}

fn survey(name: &str) {
    let p = path!("{name}");
    let mode = match stat_mode(&p) {
        Ok(m) => m as i64,
        Err(e) => e as i64,
    };
    let mut text = [0u8; 512];
    let mut n_read = 0isize;
    let rd = sys::open(p.c(), sys::O_RDONLY);
    let read = if rd >= 0 {
        n_read = sys::read(rd as i32, &mut text);
        sys::close(rd as i32);
        errno_or_ok(n_read)
    } else {
        0
    };
    let wr = sys::open(p.c(), sys::O_WRONLY);
    let write = if wr >= 0 {
        let r = sys::write(wr as i32, b"?");
        sys::close(wr as i32);
        errno_or_ok(r)
    } else {
        0
    };
    let size = match n_read {
        r if r < 0 => "-",
        0 => "empty",
        _ => "data",
    };
    println!(
        "F {name} mode={mode:o} open_rd={} read={read} ({size}) open_wr={} write={write}",
        errno_or_ok(rd),
        errno_or_ok(wr),
    );
    let binary = name.ends_with("pagemap") || name.ends_with("kpageflags");
    if n_read > 0 && !binary {
        let t = &mut text[..n_read as usize];
        for c in t.iter_mut() {
            if c.is_ascii_digit() {
                *c = b'9';
            }
        }
        for line in t.split(|&c| c == b'\n').filter(|l| !l.is_empty()).take(3) {
            println!("| {}", core::str::from_utf8(line).unwrap_or("<not UTF-8>"));
        }
    }
}

/// Every file under `dir`, depth first, in name order per directory.
fn walk(dir: &str, depth: usize) {
    let d = sys::open(path!("{dir}").c(), sys::O_RDONLY | sys::O_DIRECTORY);
    if d < 0 {
        println!("D {dir} open={d}");
        return;
    }
    // Names of this directory, sorted (kernels list in different orders).
    let mut names = [[0u8; 48]; 64];
    let mut count = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = sys::syscall(
            nr::GETDENTS64,
            &[d as usize, buf.as_mut_ptr() as usize, buf.len()],
        );
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize {
            let reclen = u16::from_le_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            if name != b"." && name != b".." && count < names.len() && name.len() < 48 {
                names[count][..name.len()].copy_from_slice(name);
                count += 1;
            }
            off += reclen;
        }
    }
    sys::close(d as i32);
    let names = &mut names[..count];
    names.sort_unstable();
    for raw in names.iter() {
        let len = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        let name = core::str::from_utf8(&raw[..len]).unwrap_or("?");
        let full = path!("{dir}/{name}");
        let full = core::str::from_utf8(&full.c()[..full.c().len() - 1]).unwrap_or("?");
        match stat_mode(&path!("{full}")) {
            Ok(m) if m & 0o170000 == 0o040000 => {
                println!("D {full} mode={m:o}");
                if depth < 4 {
                    // The path lives in `full`'s buffer only for this call.
                    let mut copy = [0u8; 160];
                    copy[..full.len()].copy_from_slice(full.as_bytes());
                    walk(
                        core::str::from_utf8(&copy[..full.len()]).unwrap_or("?"),
                        depth + 1,
                    );
                }
            }
            _ => survey(full),
        }
    }
}

fn main(_args: &Args) -> i32 {
    let linux_init = mthp_user::mount_pseudo_fs_if_needed();
    println!("SURVEY start");
    for f in FIXED {
        survey(f);
    }
    walk(THP, 0);
    println!("SURVEY done");
    if linux_init {
        mthp_user::power_off();
    }
    0
}

entry!(main);
