//! Console output and log levels.
//!
//! Everything goes to the serial console through `arch::console_write`,
//! serialised by one spinlock taken with interrupts masked (so an interrupt
//! handler that logs cannot deadlock against the code it interrupted).
use crate::arch;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static CONSOLE: mm::sync::Mutex<()> = mm::sync::Mutex::new(());

pub fn set_level(l: Level) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

pub fn enabled(l: Level) -> bool {
    l as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub fn parse_level(s: &str) -> Option<Level> {
    Some(match s {
        "error" => Level::Error,
        "warn" => Level::Warn,
        "info" => Level::Info,
        "debug" => Level::Debug,
        _ => return None,
    })
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        arch::console_write(s);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let irq = arch::irq_save();
    {
        let _g = CONSOLE.lock();
        let _ = Console.write_fmt(args);
    }
    arch::irq_restore(irq);
}

/// Print without taking the console lock: for the panic path, where the lock
/// may be held by the code that panicked.
pub fn print_unlocked(args: fmt::Arguments) {
    let _ = Console.write_fmt(args);
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::log::_print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::log::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

#[macro_export]
macro_rules! log {
    ($lvl:expr, $tag:literal, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) {
            $crate::log::_print(format_args!("[{:>5}] {}\n", $tag, format_args!($($arg)*)));
        }
    };
}
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log!($crate::log::Level::Error, "ERROR", $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log!($crate::log::Level::Warn, "WARN", $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log!($crate::log::Level::Info, "INFO", $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log!($crate::log::Level::Debug, "DEBUG", $($arg)*) }; }
