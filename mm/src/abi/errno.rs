//! Linux error numbers.
//!
//! The values are Linux's generic ones (`include/uapi/asm-generic/errno-base.h`
//! and `errno.h`), which x86_64 and arm64 share, so a user program sees the
//! same numbers here as on Linux.  Functions in `mm` that implement a system
//! call's argument rules return `Result<_, Errno>`; the syscall layer turns
//! an error into `-(errno.as_i32())`.

use core::fmt;

/// Declares the enum, its numeric values and names in one table so the three
/// can never drift apart.
macro_rules! errnos {
    ($($name:ident = $val:literal, $desc:literal;)*) => {
        /// A Linux errno value.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(i32)]
        pub enum Errno {
            $(#[doc = $desc] $name = $val,)*
        }

        impl Errno {
            /// Every errno this crate knows, in numeric order.
            pub const ALL: &'static [Errno] = &[$(Errno::$name,)*];

            /// The symbolic name, e.g. `"EINVAL"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Errno::$name => stringify!($name),)*
                }
            }

            /// The conventional description (as `strerror` words it).
            pub const fn description(self) -> &'static str {
                match self {
                    $(Errno::$name => $desc,)*
                }
            }

            /// Look up an errno by its positive number.
            pub const fn from_i32(v: i32) -> Option<Errno> {
                match v {
                    $($val => Some(Errno::$name),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted";
    ENOENT = 2, "No such file or directory";
    ESRCH = 3, "No such process";
    EINTR = 4, "Interrupted system call";
    EIO = 5, "Input/output error";
    ENXIO = 6, "No such device or address";
    E2BIG = 7, "Argument list too long";
    ENOEXEC = 8, "Exec format error";
    EBADF = 9, "Bad file descriptor";
    ECHILD = 10, "No child processes";
    EAGAIN = 11, "Resource temporarily unavailable";
    ENOMEM = 12, "Cannot allocate memory";
    EACCES = 13, "Permission denied";
    EFAULT = 14, "Bad address";
    ENOTBLK = 15, "Block device required";
    EBUSY = 16, "Device or resource busy";
    EEXIST = 17, "File exists";
    EXDEV = 18, "Invalid cross-device link";
    ENODEV = 19, "No such device";
    ENOTDIR = 20, "Not a directory";
    EISDIR = 21, "Is a directory";
    EINVAL = 22, "Invalid argument";
    ENFILE = 23, "Too many open files in system";
    EMFILE = 24, "Too many open files";
    ENOTTY = 25, "Inappropriate ioctl for device";
    ETXTBSY = 26, "Text file busy";
    EFBIG = 27, "File too large";
    ENOSPC = 28, "No space left on device";
    ESPIPE = 29, "Illegal seek";
    EROFS = 30, "Read-only file system";
    EMLINK = 31, "Too many links";
    EPIPE = 32, "Broken pipe";
    EDOM = 33, "Numerical argument out of domain";
    ERANGE = 34, "Numerical result out of range";
    EDEADLK = 35, "Resource deadlock avoided";
    ENAMETOOLONG = 36, "File name too long";
    ENOLCK = 37, "No locks available";
    ENOSYS = 38, "Function not implemented";
    ENOTEMPTY = 39, "Directory not empty";
    ELOOP = 40, "Too many levels of symbolic links";
    EIDRM = 43, "Identifier removed";
    EOVERFLOW = 75, "Value too large for defined data type";
    EOPNOTSUPP = 95, "Operation not supported";
    ETIMEDOUT = 110, "Connection timed out";
}

impl Errno {
    /// The positive Linux number (a syscall returns its negation).
    #[inline]
    pub const fn as_i32(self) -> i32 {
        self as i32
    }

    /// The value a system call returns for this error: `-errno`.
    #[inline]
    pub const fn as_syscall_ret(self) -> i64 {
        -(self as i32 as i64)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_i32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_values() {
        let table = [
            (Errno::EPERM, 1),
            (Errno::ENOENT, 2),
            (Errno::EINTR, 4),
            (Errno::EIO, 5),
            (Errno::EBADF, 9),
            (Errno::EAGAIN, 11),
            (Errno::ENOMEM, 12),
            (Errno::EACCES, 13),
            (Errno::EFAULT, 14),
            (Errno::EBUSY, 16),
            (Errno::EEXIST, 17),
            (Errno::ENODEV, 19),
            (Errno::EISDIR, 21),
            (Errno::EINVAL, 22),
            (Errno::ENOSPC, 28),
            (Errno::ERANGE, 34),
            (Errno::ENOSYS, 38),
            (Errno::EOVERFLOW, 75),
            (Errno::EOPNOTSUPP, 95),
        ];
        for (e, v) in table {
            assert_eq!(e.as_i32(), v, "{}", e.name());
            assert_eq!(Errno::from_i32(v), Some(e));
            assert_eq!(e.as_syscall_ret(), -(v as i64));
        }
        assert_eq!(Errno::EINVAL.name(), "EINVAL");
        assert_eq!(Errno::from_i32(0), None);
    }

    #[test]
    fn all_is_sorted_and_round_trips() {
        for w in Errno::ALL.windows(2) {
            assert!(w[0].as_i32() < w[1].as_i32());
        }
        for &e in Errno::ALL {
            assert_eq!(Errno::from_i32(e.as_i32()), Some(e));
        }
    }
}
