//! In-kernel self-test registry that works on stable Rust.
//!
//! `ktest!` defines a test function and places a [`KTest`] descriptor in the
//! `.ktest_array` linker section.  Each kernel linker script keeps that
//! section and brackets it with `__ktest_start` / `__ktest_end`, so the runner
//! in `kernel/src/selftest.rs` finds every test of every crate linked into the
//! kernel without a central list.  Tests therefore live next to the code they
//! test, in any crate.
//!
//! On the host (unit tests) the section is simply never read.
#![no_std]

extern crate alloc;

pub use alloc::format;
pub use alloc::string::String;

/// What a self-test returns: `Err(reason)` marks it FAILED with that reason.
pub type TestResult = Result<(), String>;

/// One registered test.
#[repr(C)]
pub struct KTest {
    /// Full name: `<module path>::<fn name>`.
    pub name: &'static str,
    pub func: fn() -> TestResult,
}

/// Define and register a self-test.
///
/// ```ignore
/// ktest! {
///     fn timer_ticks_advance() {
///         check!(ticks() > 0, "no ticks");
///         Ok(())
///     }
/// }
/// ```
#[macro_export]
macro_rules! ktest {
    ($(#[$m:meta])* fn $name:ident() $body:block) => {
        $(#[$m])*
        fn $name() -> $crate::TestResult $body

        const _: () = {
            #[used]
            #[allow(unsafe_code)]
            // SAFETY: the section only holds `KTest` values; the runner reads
            // it as an array of `KTest` between the linker-script symbols.
            #[unsafe(link_section = ".ktest_array")]
            static DESC: $crate::KTest = $crate::KTest {
                name: concat!(module_path!(), "::", stringify!($name)),
                func: $name,
            };
        };
    };
}

/// Fail the current test with a formatted reason unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::format!($($arg)+));
        }
    };
    ($cond:expr) => {
        if !$cond {
            return Err($crate::String::from(concat!("check failed: ", stringify!($cond))));
        }
    };
}

/// Fail unless `a == b`, printing both values.
#[macro_export]
macro_rules! check_eq {
    ($a:expr, $b:expr $(,)?) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err($crate::format!(
                "{} == {} failed: {:?} != {:?}",
                stringify!($a),
                stringify!($b),
                a,
                b
            ));
        }
    }};
    ($a:expr, $b:expr, $($arg:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err($crate::format!(
                "{}: {:?} != {:?}",
                $crate::format!($($arg)+),
                a,
                b
            ));
        }
    }};
}
