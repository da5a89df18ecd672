//! Reading an overlay's upper layer: every name in it, what it means to the merged view (a
//! whiteout, an opaque directory, a file or directory that replaces or adds to the disk
//! copy), and a signature that changes whenever the object does. A flush reads only this.

use crate::backing::{Backing, DiskStat, Loc, Meta, RealBacking, XattrList};
use crate::store::types::Kind;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The xattr that marks a directory whose lower contents are hidden.
pub const OPAQUE: &str = "trusted.overlay.opaque";
/// Overlay's own xattrs; they never reach the disk copy.
const PRIVATE_PREFIX: &[u8] = b"trusted.overlay.";

/// What an upper-layer name means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpperKind {
    /// Deleted: the disk copy's object of that name goes.
    Whiteout,
    /// A directory; `opaque` hides everything the disk copy has in it.
    Dir { opaque: bool },
    /// A regular file, symlink or special file that replaces the disk copy's.
    Node(Kind),
}

/// When an upper object last changed; equal signatures mean nothing to write again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sig {
    Whiteout,
    Object { ino: u64, ctime: (i64, u32) },
}

/// One name of the upper layer.
#[derive(Clone, Debug)]
pub struct UpperEntry {
    /// Relative to the layer's root; empty for the root.
    pub path: PathBuf,
    pub kind: UpperKind,
    pub st: DiskStat,
    /// Xattrs as the merged view shows them (overlay's own left out). Empty for whiteouts.
    pub xattrs: XattrList,
}

impl UpperEntry {
    pub fn sig(&self) -> Sig {
        match self.kind {
            UpperKind::Whiteout => Sig::Whiteout,
            _ => Sig::Object {
                ino: self.st.ino,
                ctime: (self.st.attr.ctime.sec, self.st.attr.ctime.nsec),
            },
        }
    }

    /// The attributes to give the disk copy's object.
    pub fn meta(&self) -> Meta {
        Meta {
            mode: self.st.attr.mode,
            uid: self.st.attr.uid,
            gid: self.st.attr.gid,
            atime: self.st.attr.atime,
            mtime: self.st.attr.mtime,
            xattrs: Some(self.xattrs.clone()),
        }
    }
}

/// An upper layer, opened.
pub struct Upper {
    layer: RealBacking,
}

impl Upper {
    /// `root` is the upper directory (opened `O_PATH|O_DIRECTORY`).
    pub fn open(root: OwnedFd) -> io::Result<Upper> {
        let again = nix::unistd::dup(&root)?;
        Ok(Upper {
            layer: RealBacking::new(root, again),
        })
    }

    /// The layer as a backing, to read files and xattrs.
    pub fn layer(&self) -> &RealBacking {
        &self.layer
    }

    /// Every name in the layer, parents before children, in name order.
    pub fn walk(&self) -> io::Result<Vec<UpperEntry>> {
        let mut out = Vec::new();
        let root = self.entry(Path::new(""))?;
        out.push(root);
        let mut i = 0;
        while i < out.len() {
            if matches!(out[i].kind, UpperKind::Dir { .. }) {
                let dir = out[i].path.clone();
                let mut names: Vec<OsString> = match self.layer.read_dir(&Loc::target(&dir)) {
                    Ok(items) => items.into_iter().map(|it| it.name).collect(),
                    Err(e) if vanished(&e) => Vec::new(),
                    Err(e) => return Err(e),
                };
                names.sort();
                for n in names {
                    match self.entry(&dir.join(&n)) {
                        Ok(e) => out.push(e),
                        Err(e) if vanished(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            i += 1;
        }
        Ok(out)
    }

    /// The name at `path`.
    pub fn entry(&self, path: &Path) -> io::Result<UpperEntry> {
        let loc = Loc::target(path);
        let st = self.layer.stat(&loc)?;
        if st.kind == Kind::CharDev && st.attr.rdev == 0 {
            return Ok(UpperEntry {
                path: path.to_path_buf(),
                kind: UpperKind::Whiteout,
                st,
                xattrs: Vec::new(),
            });
        }
        let all = self.layer.read_xattrs(&loc)?;
        let opaque = all
            .iter()
            .any(|(n, v)| n.as_bytes() == OPAQUE.as_bytes() && v.as_slice() == b"y");
        let xattrs = all
            .into_iter()
            .filter(|(n, _)| !n.as_bytes().starts_with(PRIVATE_PREFIX))
            .collect();
        let kind = match st.kind {
            Kind::Dir => UpperKind::Dir { opaque },
            k => UpperKind::Node(k),
        };
        Ok(UpperEntry {
            path: path.to_path_buf(),
            kind,
            st,
            xattrs,
        })
    }

    /// Marks a directory opaque: from now on the kernel does not look for it on the disk
    /// copy when it looks the directory up again.
    pub fn mark_opaque(&self, path: &Path) -> io::Result<()> {
        let fd = crate::backing::open_beneath(
            std::os::fd::AsFd::as_fd(self.layer.target_root()),
            path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        )?;
        crate::backing::set_xattr(&crate::backing::proc_path(&fd), OsStr::new(OPAQUE), b"y")
    }

    /// Puts a whiteout at `path` unless something is there: the disk copy's object of that
    /// name is then hidden, as the kernel would have hidden it.
    pub fn whiteout(&self, path: &Path) -> io::Result<bool> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(false);
        };
        let fd = crate::backing::open_beneath(
            std::os::fd::AsFd::as_fd(self.layer.target_root()),
            dir,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        )?;
        match nix::sys::stat::mknodat(
            &fd,
            name,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EEXIST) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether there is a name at `path`.
    pub fn has(&self, path: &Path) -> io::Result<bool> {
        match self.layer.stat(&Loc::target(path)) {
            Ok(_) => Ok(true),
            Err(e) if vanished(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the directory at `path` exists and is opaque.
    pub fn is_opaque(&self, path: &Path) -> bool {
        self.entry(path)
            .map(|e| e.kind == UpperKind::Dir { opaque: true })
            .unwrap_or(false)
    }
}

/// The names each directory of a walk holds.
pub fn children(entries: &[UpperEntry]) -> HashMap<PathBuf, HashSet<OsString>> {
    let mut out: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
    for e in entries {
        if let (Some(parent), Some(name)) = (e.path.parent(), e.path.file_name()) {
            out.entry(parent.to_path_buf())
                .or_default()
                .insert(name.to_os_string());
        }
    }
    out
}

pub fn vanished(e: &io::Error) -> bool {
    // EXDEV: overlayfs moves a removed object into its work directory for a moment, and
    // resolving beneath the layer's root refuses to follow it there.
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::EXDEV)
    )
}
