//! The disk side. Every access to the disk copy and to the side directory goes through the
//! [`Backing`] trait, with paths relative to one of the two roots (never absolute, never
//! following a symlink). `RealBacking` is the real disk; tests substitute a backing that
//! fails or "loses power" at a chosen step (`tests/it/powercut.rs`).

mod copy;
mod deep;
mod real;

pub use copy::{copy_sparse, copy_sparse_range, write_changed};
pub use deep::open_beneath;
pub use real::{Conflict, RealBacking};
pub(crate) use real::{
    chmod_fd, clear_nonblock, get_xattr, list_xattrs, proc_path, set_xattr, times_fd,
};

use crate::store::types::{Attr, FsStats, Kind, Ts};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Extended attributes as (name, value) pairs.
pub type XattrList = Vec<(OsString, Vec<u8>)>;

/// A place on the disk side.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Loc {
    /// Inside the disk copy of the target; the empty path is the target itself.
    Target(#[serde(with = "crate::bytes::path")] PathBuf),
    /// Inside the side directory `.NAME-asdfs/`.
    Side(#[serde(with = "crate::bytes::path")] PathBuf),
}

impl Loc {
    pub fn target(p: impl Into<PathBuf>) -> Loc {
        Loc::Target(p.into())
    }
    pub fn side(p: impl Into<PathBuf>) -> Loc {
        Loc::Side(p.into())
    }
    pub fn path(&self) -> &Path {
        match self {
            Loc::Target(p) | Loc::Side(p) => p,
        }
    }
    /// This location joined with one more name.
    pub fn join(&self, name: impl AsRef<Path>) -> Loc {
        match self {
            Loc::Target(p) => Loc::Target(p.join(name)),
            Loc::Side(p) => Loc::Side(p.join(name)),
        }
    }
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loc::Target(p) => write!(f, "target:/{}", crate::human::path(p)),
            Loc::Side(p) => write!(f, "side:/{}", crate::human::path(p)),
        }
    }
}

/// One name of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirItem {
    pub name: OsString,
    pub kind: Option<Kind>,
    pub ino: u64,
}

/// What lstat(2) says of a disk object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskStat {
    pub ino: u64,
    pub dev: u64,
    pub kind: Kind,
    pub nlink: u32,
    pub attr: Attr,
}

/// Attributes to give a disk object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Ts,
    pub mtime: Ts,
    /// The complete xattr set; `None` leaves xattrs as they are.
    #[serde(with = "opt_pairs", default)]
    pub xattrs: Option<XattrList>,
}

mod opt_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::ffi::OsString;
    #[derive(Serialize, Deserialize)]
    struct W(#[serde(with = "crate::bytes::pairs")] Vec<(OsString, Vec<u8>)>);
    pub fn serialize<S: Serializer>(v: &Option<super::XattrList>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|x| W(x.clone())).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<super::XattrList>, D::Error> {
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

/// The content of an object the flush creates.
pub enum NewContent<'a> {
    /// A regular file with the bytes (and holes) of this RAM data file.
    File(&'a File),
    Dir,
    Symlink(&'a [u8]),
    /// A fifo, socket or device node.
    Special {
        kind: Kind,
        rdev: u64,
    },
}

/// The disk side of one target. Implementations must be usable from several threads.
pub trait Backing: Send + Sync + 'static {
    /// lstat(2).
    fn stat(&self, loc: &Loc) -> io::Result<DiskStat>;
    /// The names in a directory (without `.` and `..`), with their kinds when known and
    /// their inode numbers.
    fn read_dir(&self, loc: &Loc) -> io::Result<Vec<DirItem>>;
    fn read_link(&self, loc: &Loc) -> io::Result<Vec<u8>>;
    /// Every xattr of the object (not following a symlink).
    fn read_xattrs(&self, loc: &Loc) -> io::Result<XattrList>;
    /// Copies a regular file's content into `dst` (which it truncates), keeping holes. The
    /// object must be a regular file, and the inode `ino` when given (the one the store
    /// recorded): anything else there is a [`Conflict`] (docs/security.md R4), never
    /// waited on (a FIFO swapped in would block the reader forever).
    fn read_data(&self, loc: &Loc, ino: Option<u64>, dst: &File) -> io::Result<()>;

    /// Creates a new object (the name must be free) with its content and attributes, and
    /// makes it durable (fsync of the object, not of its directory). Returns its inode.
    fn create(&self, loc: &Loc, content: NewContent<'_>, meta: &Meta) -> io::Result<u64>;
    /// Creates a directory for the daemon's own use (mode 0700), ok if it exists.
    fn make_dir(&self, loc: &Loc) -> io::Result<()>;
    /// rename(2), replacing a file at `to`.
    fn rename(&self, from: &Loc, to: &Loc) -> io::Result<()>;
    /// link(2); `to` must be free.
    fn link(&self, from: &Loc, to: &Loc) -> io::Result<()>;
    /// Removes a file, or a directory with everything in it.
    fn remove(&self, loc: &Loc) -> io::Result<()>;
    /// Gives an existing object these attributes (owner before mode, times last). The object
    /// at `loc` must be of `kind`; another kind there is a [`Conflict`] error, never followed.
    fn set_meta(&self, loc: &Loc, kind: Kind, meta: &Meta) -> io::Result<()>;
    /// Sets only the times of an existing directory (anything else there is a [`Conflict`]).
    fn set_times(&self, loc: &Loc, atime: Ts, mtime: Ts) -> io::Result<()>;
    /// fsync(2) of a directory.
    fn sync_dir(&self, loc: &Loc) -> io::Result<()>;
    /// Writes a small file completely and durably (tmp name, fsync, rename, fsync dir).
    fn write_file(&self, loc: &Loc, bytes: &[u8]) -> io::Result<()>;
    fn read_file(&self, loc: &Loc) -> io::Result<Vec<u8>>;
    /// The room on the filesystem that holds the disk copy (fstatvfs of the target's held
    /// descriptor): what statfs(2) on the mount reports (design.md §2.1).
    fn space(&self) -> io::Result<FsStats> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// `create` without making the object durable: a flush creates every staged object this
    /// way, then makes them all durable at once with `sync_created` (design.md §6 step 2).
    fn create_unsynced(&self, loc: &Loc, content: NewContent<'_>, meta: &Meta) -> io::Result<u64> {
        self.create(loc, content, meta)
    }
    /// Makes the objects at `locs` (made by `create_unsynced`) durable, data and attributes,
    /// and then the entries of the directory `dir` holding them.
    fn sync_created(&self, _locs: &[Loc], dir: &Loc) -> io::Result<()> {
        self.sync_dir(dir)
    }
    /// Writes a regular file's new content into the disk file at `loc` itself (an fsync in
    /// sync mode, design.md §6.3) and makes it durable: only the byte ranges `ranges` when
    /// given (every other byte below the new size is unchanged), else every block that
    /// differs; then its size and times. Only when the object there is a regular file with
    /// inode `ino` and exactly one link (nothing else, not a backup, shares it), that
    /// `unchanged` accepts; otherwise it changes nothing and returns `None`, and the caller
    /// writes the file by a flush.
    fn write_in_place(&self, _w: &InPlace<'_>) -> io::Result<Option<DiskStat>> {
        Ok(None)
    }
}

/// What `Backing::write_in_place` writes.
pub struct InPlace<'a> {
    pub loc: &'a Loc,
    pub ino: u64,
    /// The file's new content (a RAM data file).
    pub src: &'a File,
    /// The byte ranges (offset, length) that may differ from the disk file, if known.
    pub ranges: Option<&'a [(u64, u64)]>,
    pub atime: Ts,
    pub mtime: Ts,
    /// Whether the disk file, as found, is what asdfs last wrote (design.md §6.2); if not,
    /// nothing is written.
    pub unchanged: &'a dyn Fn(&DiskStat) -> bool,
}

/// The inode at `loc`, or `None` if nothing is there.
pub fn ino_at(b: &dyn Backing, loc: &Loc) -> io::Result<Option<u64>> {
    match b.stat(loc) {
        Ok(st) => Ok(Some(st.ino)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Moves what is at `at` (put there behind asdfs) into the side directory under the first
/// free name `salvaged.behind.<N>`, never following or deleting it, and makes the move
/// durable in the side directory. Returns where it is kept.
pub fn set_aside(b: &dyn Backing, at: &Loc) -> io::Result<Loc> {
    for n in 0..1000 {
        let to = Loc::side(format!("salvaged.behind.{n}"));
        if ino_at(b, &to)?.is_some() {
            continue;
        }
        b.rename(at, &to)?;
        let _ = b.sync_dir(&Loc::side(""));
        return Ok(to);
    }
    Err(io::Error::other(
        "no free salvaged.behind.N name in the side directory",
    ))
}
