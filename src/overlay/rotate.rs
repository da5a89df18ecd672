//! Carrying files programs hold open into a fresh upper layer (design.md §10.4): hard links
//! to the very same inodes, so that the old and the new overlay show one file.

use super::upper::{Upper, UpperEntry, UpperKind};
use crate::backing::{Backing, Loc, RealBacking, open_beneath};
use crate::store::types::Kind;
use nix::fcntl::{AtFlags, OFlag};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Links every upper object whose inode is in `held` into the new upper layer `new`, at
/// the same paths, creating parent directories with the old ones' attributes. Returns the
/// inodes linked.
pub fn carry(
    old: &Upper,
    entries: &[UpperEntry],
    new: &RealBacking,
    held: &HashSet<u64>,
) -> io::Result<HashSet<u64>> {
    let by_path: HashMap<&Path, &UpperEntry> =
        entries.iter().map(|e| (e.path.as_path(), e)).collect();
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut carried = HashSet::new();
    for e in entries {
        if !matches!(e.kind, UpperKind::Node(k) if k != Kind::Dir) || !held.contains(&e.st.ino) {
            continue;
        }
        let mut parents: Vec<&Path> = e.path.ancestors().skip(1).collect();
        parents.reverse();
        for dir in parents {
            if dir.as_os_str().is_empty() || made.contains(dir) {
                continue;
            }
            if let Some(d) = by_path.get(dir) {
                match new.make_dir(&Loc::target(dir)) {
                    Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                    _ => {}
                }
                new.set_meta(&Loc::target(dir), Kind::Dir, &d.meta())?;
            } else {
                break;
            }
            made.insert(dir.to_path_buf());
        }
        let (Some(parent), Some(name)) = (e.path.parent(), e.path.file_name()) else {
            continue;
        };
        let linked = (|| -> io::Result<()> {
            let src = open_beneath(
                old.layer().target_root().as_fd(),
                &e.path,
                OFlag::O_PATH | OFlag::O_NOFOLLOW,
            )?;
            let dst = open_beneath(
                new.target_root().as_fd(),
                parent,
                OFlag::O_PATH | OFlag::O_DIRECTORY,
            )?;
            nix::unistd::linkat(&src, "", &dst, name, AtFlags::AT_EMPTY_PATH)?;
            Ok(())
        })();
        match linked {
            Ok(()) => {
                carried.insert(e.st.ino);
            }
            // Removed or replaced since the walk: the program holds an unlinked file.
            Err(e) if super::upper::vanished(&e) || e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(carried)
}
