//! How much a directory tree takes on disk, as du(1) counts it: allocated blocks, each inode
//! once however many names it has, symlinks not followed. For status ("size on disk") and
//! asd's `p` ("dir size").

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The size of a tree on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Allocated bytes (st_blocks × 512) of every inode in the tree, the top directory included.
    pub bytes: u64,
    /// Names that are not directories.
    pub files: u64,
    /// Directories below the top one.
    pub dirs: u64,
}

/// Walks the tree at `root` without following symlinks and without touching access times
/// (the disk copy's atimes are the user's). Entries that vanish during the walk are skipped;
/// any other error stops it.
pub fn measure(root: &Path) -> io::Result<Usage> {
    let mut u = Usage::default();
    let mut seen = HashSet::new();
    // The root itself may be reached through a link (`/proc/self/fd/N`): follow it.
    let top = std::fs::metadata(root)?;
    u.bytes += top.blocks() * 512;
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let names = match names_in(&dir, dir != root) {
            Ok(n) => n,
            Err(e) if vanished(&e) && dir != root => continue,
            Err(e) => return Err(e),
        };
        for name in names {
            let path = dir.join(&name);
            let md = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(e),
            };
            if md.is_dir() {
                u.dirs += 1;
                stack.push(path);
            } else {
                u.files += 1;
            }
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            u.bytes += md.blocks() * 512;
        }
    }
    Ok(u)
}

/// The names in a directory, read with O_NOATIME where allowed (owner or root).
fn names_in(dir: &Path, nofollow: bool) -> io::Result<Vec<OsString>> {
    use nix::fcntl::OFlag;
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if nofollow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let mode = nix::sys::stat::Mode::empty();
    let mut d = match nix::dir::Dir::open(dir, flags | OFlag::O_NOATIME, mode) {
        Err(nix::errno::Errno::EPERM) => nix::dir::Dir::open(dir, flags, mode)?,
        r => r?,
    };
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n.to_vec()));
        }
    }
    Ok(names)
}

fn vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_blocks_once_per_inode_and_skips_symlink_targets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a"), vec![7u8; 100_000]).unwrap();
        std::fs::hard_link(root.join("sub/a"), root.join("b")).unwrap();
        let big = dir.path().join("outside");
        std::fs::write(&big, vec![1u8; 1_000_000]).unwrap();
        std::os::unix::fs::symlink(&big, root.join("link")).unwrap();
        let u = measure(&root).unwrap();
        assert_eq!(u.files, 3, "a, b and link");
        assert_eq!(u.dirs, 1);
        let a = std::fs::metadata(root.join("sub/a")).unwrap().blocks() * 512;
        assert!(a >= 100_000 - 4096, "{a}");
        assert!(u.bytes >= a, "{u:?}");
        assert!(
            u.bytes < 2 * a,
            "counted the link's target or a twice: {u:?}"
        );
    }

    #[test]
    fn measuring_leaves_access_times_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let old = std::fs::FileTimes::new().set_accessed(std::time::UNIX_EPOCH);
        for d in [&root, &root.join("sub")] {
            std::fs::File::open(d).unwrap().set_times(old).unwrap();
        }
        measure(&root).unwrap();
        for d in [&root, &root.join("sub")] {
            assert_eq!(std::fs::metadata(d).unwrap().atime(), 0, "{}", d.display());
        }
    }

    #[test]
    fn the_root_may_be_a_link_to_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a"), b"x").unwrap();
        let fd = std::fs::File::open(&root).unwrap();
        use std::os::fd::AsRawFd;
        let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        assert_eq!(measure(&via).unwrap(), measure(&root).unwrap());
        assert_eq!(measure(&via).unwrap().files, 1);
    }

    #[test]
    fn a_missing_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(measure(&dir.path().join("nope")).is_err());
    }
}
