//! In-kernel self-test registry that works on stable Rust.
//!
//! `ktest!` defines a test function and places a [`KTest`] descriptor in the
//! `.ktest_array` linker section.  Each kernel linker script keeps that
//! section and brackets it with `__ktest_start` / `__ktest_end`, so the runner
//! in `kernel/src/selftest/runner.rs` finds every test of every crate linked
//! into the kernel without a central list.  Tests therefore live next to the code they
//! test, in any crate.
//!
//! On the host (unit tests) the section is simply never read.
#![no_std]

extern crate alloc;

pub use alloc::format;
pub use alloc::string::String;

/// What a self-test returns: `Err(reason)` marks it FAILED with that
/// reason; an `Err` made by [`skip!`] marks it skipped instead.
pub type TestResult = Result<(), String>;

/// The prefix [`skip!`] puts in front of its reason.  A skip travels in the
/// `Err` string (rather than as a third `TestResult` variant) so every
/// existing test, helper and `?` keeps its `Result<(), String>` type; the
/// control character cannot come from an ordinary failure message.
const SKIP_MARK: &str = "\u{1}skip\u{1}";

/// The `Err` value of a skip with `why` (what [`skip!`] returns).
pub fn skipped(why: String) -> String {
    let mut s = String::from(SKIP_MARK);
    s.push_str(&why);
    s
}

/// `Some(reason)` if `err` came from [`skip!`].
pub fn skip_reason(err: &str) -> Option<&str> {
    err.strip_prefix(SKIP_MARK)
}

/// End the current test as skipped: `skip!("no PMU: {why}")`.  The runner
/// prints `test <name> ... skipped: <reason>`.
///
/// Policy: skip only when the hardware or boot configuration the test
/// needs is missing, and name it in the reason.  The host runner fails the
/// run when a test skips in every boot of an architecture, unless
/// `tests/src/suites.rs` names the boot designed for it (which must run
/// it) or says why no boot of that architecture can.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)+) => {
        return Err($crate::skipped($crate::format!($($arg)+)))
    };
}

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
