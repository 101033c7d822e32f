//! Names for the addresses of a kernel panic's backtrace.
//!
//! The panic handler (kernel/src/main.rs) prints `KERNEL PANIC: …`, the CPU
//! and thread, then `backtrace:` and one `  #N 0x<return address>` line per
//! frame.  After any boot whose console shows that, [`qemu::boot`] calls
//! [`report`], which looks each return address up in the kernel ELF's
//! function symbols (`llvm-nm --demangle --print-size`, from the llvm-tools
//! component) and prints `  #N 0x… <function>+0x<offset>`, so a CI log of a
//! panic that does not reproduce carries its call chain.  A return address
//! is looked up one byte back: a call that never returns (as a call of
//! `panic`) may be a function's last instruction, and its return address
//! then already lies in the next function.
//!
//! Symbolization never fails a run: without `llvm-nm` or the ELF the
//! addresses are printed as they came, with a note saying why.
use crate::qemu;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the kernel prints first when it panics.
pub const PANIC_MARK: &str = "KERNEL PANIC";

/// `  #N 0x<addr>`: the frame's number and return address.
pub fn parse_frame(l: &str) -> Option<(usize, u64)> {
    let rest = l.trim_start().strip_prefix('#')?;
    let (n, addr) = rest.split_once(' ')?;
    let addr = addr.trim().strip_prefix("0x")?;
    Some((n.parse().ok()?, u64::from_str_radix(addr, 16).ok()?))
}

/// The frames of the first panic's backtrace in `lines`: the `#N` lines
/// right after the `backtrace:` line that follows [`PANIC_MARK`].
pub fn frames(lines: &[String]) -> Vec<(usize, u64)> {
    let Some(p) = lines.iter().position(|l| l.contains(PANIC_MARK)) else {
        return Vec::new();
    };
    let Some(b) = lines[p..].iter().position(|l| l.trim() == "backtrace:") else {
        return Vec::new();
    };
    lines[p + b + 1..]
        .iter()
        .map_while(|l| parse_frame(l))
        .collect()
}

/// The kernel's function symbols, sorted by address.
#[derive(Debug, Default)]
pub struct Symbols {
    /// `(start, size, name)`; size 0 when `llvm-nm` gave none (asm labels).
    funcs: Vec<(u64, u64, String)>,
}

impl Symbols {
    /// From `llvm-nm --demangle --print-size` output: `<addr> [<size>]
    /// <type> <name>` lines, of which only code symbols (type `t`/`T`/`w`/`W`)
    /// are kept.  Legacy-mangled names lose their `::h<hash>` suffix.
    pub fn parse(nm: &str) -> Symbols {
        let mut funcs = Vec::new();
        for l in nm.lines() {
            let mut w = l.splitn(4, ' ');
            let (Some(a), Some(b), Some(c)) = (w.next(), w.next(), w.next()) else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(a, 16) else {
                continue;
            };
            // With a size: addr size type name; without: addr type name.
            let (size, ty, name) = match (u64::from_str_radix(b, 16), w.next()) {
                (Ok(size), Some(name)) if c.len() == 1 => (size, c, name),
                _ => (0, b, l.splitn(3, ' ').nth(2).unwrap_or("")),
            };
            if matches!(ty, "t" | "T" | "w" | "W") && !name.is_empty() {
                funcs.push((addr, size, strip_hash(name).to_string()));
            }
        }
        funcs.sort_by_key(|f| f.0);
        Symbols { funcs }
    }

    /// The function holding the call that returns to `ret`, and `ret`'s
    /// offset from its start.
    pub fn lookup(&self, ret: u64) -> Option<(&str, u64)> {
        let at = ret.checked_sub(1)?;
        let i = self.funcs.partition_point(|f| f.0 <= at).checked_sub(1)?;
        let (start, size, name) = &self.funcs[i];
        (*size == 0 || at < start + size).then_some((name.as_str(), ret - start))
    }
}

/// `name` without a trailing `::h` and 16 hex digits (the legacy mangling's hash).
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((n, h)) if h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()) => n,
        _ => name,
    }
}

/// The ELF of a booted kernel: the arm64 `kernel.img` QEMU loads is made
/// from the `kernel` beside it (`qemu::arm64_image`).
pub fn elf_of(kernel: &Path) -> PathBuf {
    if kernel.file_name().is_some_and(|n| n == "kernel.img") {
        kernel.with_file_name("kernel")
    } else {
        kernel.to_path_buf()
    }
}

/// The function symbols of `elf`, read with `llvm-nm`.
pub fn load(elf: &Path) -> Result<Symbols, String> {
    let nm = qemu::llvm_tool("llvm-nm")?;
    let out = Command::new(&nm)
        .args(["--demangle", "--print-size", "--defined-only"])
        .arg(elf)
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} (rustup component add llvm-tools): {e}",
                nm.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "{} {}: {}",
            nm.display(),
            elf.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Symbols::parse(&String::from_utf8_lossy(&out.stdout)))
}

/// The symbolized backtrace lines of a boot of `kernel` whose console was
/// `lines`, headed by what they were resolved with; empty when the kernel
/// did not panic (or printed no frames).  Each frame reads `  #N 0x<addr>
/// <function>+0x<offset>`, or `  #N 0x<addr> ?` when no function holds it.
pub fn report(kernel: &Path, lines: &[String]) -> Vec<String> {
    let frames = frames(lines);
    if frames.is_empty() {
        return Vec::new();
    }
    let elf = elf_of(kernel);
    let syms = load(&elf);
    let mut out = vec![match &syms {
        Ok(_) => format!("kernel panic backtrace, symbolized with {}:", elf.display()),
        Err(e) => format!("kernel panic backtrace, not symbolized ({e}):"),
    }];
    for (n, addr) in frames {
        let name = match syms.as_ref().map(|s| s.lookup(addr)) {
            Ok(Some((f, off))) => format!(" {f}+{off:#x}"),
            Ok(None) => " ?".into(),
            Err(_) => String::new(),
        };
        out.push(format!("  #{n} {addr:#x}{name}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NM: &str = "\
ffffffff80100000 0000000000000040 T _start
ffffffff80108400 t arch_x86_64::context::thread_trampoline::hf55fa3f386b689b1
ffffffff8020ae80 0000000000000048 t kernel::selftest::panic_test::deliberate_panic::h5d854b6316115606
ffffffff8020aec8 0000000000000020 t kernel::selftest::panic_test::panic_test_thread::hdcce6383836da3b7
ffffffff80300000 0000000000000010 r some_rodata
0000000000000003 a PTE_P_RW
ffffffff80400000 0000000000000008 b some_bss
";

    #[test]
    fn frame_lines_and_the_first_panic_only() {
        assert_eq!(
            parse_frame("  #3 0xffffffff8020aeed"),
            Some((3, 0xffffffff8020aeed))
        );
        assert_eq!(parse_frame("  #x 0x12"), None);
        assert_eq!(parse_frame("test a ... ok"), None);
        let lines: Vec<String> = [
            "  #9 0x1",
            "KERNEL PANIC: panicked at x.rs:1:1:",
            "boom",
            "on CPU 0, thread 7 'panic_test'",
            "backtrace:",
            "  #0 0xffffffff8020aec8",
            "  #1 0xffffffff8020aeed",
            "test t ... FAILED: panic (see above)",
            "  #2 0x5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            frames(&lines),
            [(0, 0xffffffff8020aec8), (1, 0xffffffff8020aeed)]
        );
        assert!(frames(&lines[2..]).is_empty());
    }

    #[test]
    fn lookup_names_the_function_holding_the_call() {
        let s = Symbols::parse(NM);
        assert_eq!(
            s.lookup(0xffffffff8020aeb0),
            Some(("kernel::selftest::panic_test::deliberate_panic", 0x30))
        );
        // A call that ends its function (a call of `panic`): the return
        // address is the next function's start, the call is still the
        // previous one's.
        assert_eq!(
            s.lookup(0xffffffff8020aec8),
            Some(("kernel::selftest::panic_test::deliberate_panic", 0x48))
        );
        assert_eq!(
            s.lookup(0xffffffff8020aec9),
            Some(("kernel::selftest::panic_test::panic_test_thread", 0x1))
        );
        // Past a sized function's end, before the next symbol: none.
        assert_eq!(s.lookup(0xffffffff8020aef0), None);
        // A symbol without a size (asm) holds everything up to the next.
        assert_eq!(
            s.lookup(0xffffffff801084c8),
            Some(("arch_x86_64::context::thread_trampoline", 0xc8))
        );
        // Data symbols are not functions; below the first function: none.
        assert_eq!(s.lookup(0xffffffff80300004), None);
        assert_eq!(s.lookup(0x10), None);
    }

    #[test]
    fn a_kernel_without_its_tools_still_prints_the_addresses() {
        let lines: Vec<String> = ["KERNEL PANIC: x", "backtrace:", "  #0 0x1234"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = report(Path::new("/nonexistent/kernel.img"), &lines);
        assert_eq!(r.len(), 2);
        assert!(r[0].contains("not symbolized"), "{r:?}");
        assert_eq!(r[1], "  #0 0x1234");
        assert_eq!(elf_of(Path::new("/a/kernel.img")), Path::new("/a/kernel"));
        assert_eq!(elf_of(Path::new("/a/kernel")), Path::new("/a/kernel"));
    }
}
