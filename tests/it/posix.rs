//! POSIX behaviour through the mount, compared with the same operations on tmpfs.
