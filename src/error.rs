//! Errors. `Errno` is what a filesystem operation returns to the kernel; `errno_of` is the
//! only place that turns an I/O error into one, and it is where unexpected errors are logged.

use std::fmt;
use std::io;

/// The error a filesystem operation answers with: a positive errno value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EXDEV: Errno = Errno(libc::EXDEV);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const EMLINK: Errno = Errno(libc::EMLINK);
    pub const E2BIG: Errno = Errno(libc::E2BIG);
    pub const ENXIO: Errno = Errno(libc::ENXIO);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const EROFS: Errno = Errno(libc::EROFS);
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for io::Error {
    fn from(e: Errno) -> io::Error {
        io::Error::from_raw_os_error(e.0)
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Errno {
        errno_of(&e, "I/O")
    }
}

impl From<nix::errno::Errno> for Errno {
    fn from(e: nix::errno::Errno) -> Errno {
        Errno(e as i32)
    }
}

/// Results of filesystem operations.
pub type FsResult<T> = Result<T, Errno>;

/// Maps an I/O error to the errno a program gets. Errors that programs cause and expect
/// (a missing name, a full tmpfs) are traced; anything without an OS error code, or an
/// unusual one, is logged as an error because it means something broke underneath.
pub fn errno_of(e: &io::Error, what: &str) -> Errno {
    match e.raw_os_error() {
        Some(code) => {
            let expected = matches!(
                code,
                libc::ENOENT
                    | libc::EEXIST
                    | libc::ENOSPC
                    | libc::EDQUOT
                    | libc::ENODATA
                    | libc::ERANGE
                    | libc::ENOTEMPTY
                    | libc::EOPNOTSUPP
                    | libc::EPERM
                    | libc::EACCES
                    | libc::EINVAL
                    | libc::EFBIG
                    | libc::ENXIO
            );
            if expected {
                tracing::trace!(what, error = %e, "operation failed");
            } else {
                tracing::warn!(what, error = %e, "operation failed");
            }
            Errno(code)
        }
        None => {
            tracing::error!(what, error = %e, "unexpected error without errno");
            Errno::EIO
        }
    }
}
