//! Crash snapshots (design.md §7 step 3, §8): zstd tarballs of the disk copy, made when a mount
//! finds that the previous session ended uncleanly, with asd's names
//! (`.NAME-backup_asd-crashrecovery-YYYYmmdd_HHMMSS.tar.zstd` beside the target); listing,
//! pruning to a limit, cleaning and restoring them. No printing: progress goes to a callback.
//!
//! Archive layout: every member is `NAME/<relative path>`, so asd's documented recipe
//! (`cd /foo && tar --zstd -xf SNAPSHOT`) recreates `/foo/NAME`. Per-member PAX records carry
//! long names, nanosecond mtimes and xattrs (`SCHILY.xattr.*`, as GNU tar `--xattrs` writes).
//! Invariants: the disk copy is read only beneath its directory descriptor, never following a
//! symlink; a restore writes only beneath a fresh temporary directory, so no member can reach
//! outside it; a snapshot file under its final name is always complete.
//!
//! Code map: `names` (paths, parsing, listing, limit, clean); `create` (walking the disk copy
//! and writing the tarball); `pax` (tar headers and PAX records, written and read);
//! `restore` (checking the destination and moving the restored tree into place); `unpack`
//! (writing members beneath the temporary directory); `fs` (descriptors, xattrs, renames,
//! temporary paths); `progress` (the callback's pacing).

mod create;
mod fs;
mod names;
mod pax;
mod progress;
mod restore;
mod unpack;

pub use create::{create, create_in};
pub use names::{
    check_owner, clean, conflict_name, enforce_limit, hidden, list, list_in, snapshot_path,
    target_of,
};
pub use restore::{RestoreOptions, restore, restore_with};

use std::path::PathBuf;

/// One crash snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    /// The directory the snapshot was taken of.
    pub target: PathBuf,
    /// Local time from the name, "YYYY-mm-dd HH:MM:SS".
    pub taken: String,
    /// Size of the compressed file in bytes.
    pub size: u64,
}

/// What `restore` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    pub restored_to: PathBuf,
    /// Where the previous content of `restored_to` was moved, if there was any.
    pub kept_old: Option<PathBuf>,
    /// Members restored other than directories (files, links, symlinks, special files).
    pub files: u64,
    /// Bytes of regular file data restored.
    pub bytes: u64,
}
