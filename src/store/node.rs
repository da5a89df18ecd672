//! What the store keeps per node and per directory (design.md §2).

use super::data::DataCell;
use super::types::{Attr, Kind, NodeId};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;

/// Where a node lives on disk in the current generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The directory node that holds it on disk (the root holds itself).
    pub parent: NodeId,
    pub name: OsString,
}

pub(crate) struct Node {
    pub kind: Kind,
    pub attr: Attr,
    /// `None`: not read from disk yet (and so unchanged); `Some`: the complete set.
    pub xattrs: Option<BTreeMap<OsString, Vec<u8>>>,
    pub origin: Option<Origin>,
    /// The disk inode of this node in the current generation.
    pub disk_ino: Option<u64>,
    pub content: Content,
    /// The names this node has in the RAM tree, as (directory, name).
    pub names: Vec<(NodeId, OsString)>,
    /// Names this node has on disk that the RAM tree has not met yet (hard links).
    pub hidden_links: u32,
    /// Kernel references (lookup counts) and open handles.
    pub lookups: u64,
    pub opens: u32,
    /// Open passthrough handles that may write: the kernel writes the data file, so the
    /// node stays data-dirty while this is not 0 (design.md §4.1).
    pub writers: u32,
    /// Sequence of the last change not yet on disk; 0 when clean (design.md §2).
    pub meta_seq: u64,
    pub data_seq: u64,
    /// Store-log epoch in which this node's record was last written.
    pub logged_epoch: u64,
}

pub(crate) enum Content {
    /// `None`: the data is only on disk (never opened).
    File(Option<Arc<DataCell>>),
    Dir(Dir),
    Symlink(Vec<u8>),
    Special,
}

impl Node {
    pub fn new(kind: Kind, attr: Attr, content: Content) -> Node {
        Node {
            kind,
            attr,
            xattrs: None,
            origin: None,
            disk_ino: None,
            content,
            names: Vec::new(),
            hidden_links: 0,
            lookups: 0,
            opens: 0,
            writers: 0,
            meta_seq: 0,
            data_seq: 0,
            logged_epoch: 0,
        }
    }

    pub fn dir(&self) -> Option<&Dir> {
        match &self.content {
            Content::Dir(d) => Some(d),
            _ => None,
        }
    }

    pub fn dir_mut(&mut self) -> Option<&mut Dir> {
        match &mut self.content {
            Content::Dir(d) => Some(d),
            _ => None,
        }
    }

    pub fn cell(&self) -> Option<&Arc<DataCell>> {
        match &self.content {
            Content::File(Some(c)) => Some(c),
            _ => None,
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.meta_seq != 0 || self.data_seq != 0 || self.origin.is_none()
    }
}

/// One name in a populated directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// readdir position; increases with every insertion.
    pub cookie: u64,
    pub target: Target,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// On disk under this name, not instantiated yet; the kind if readdir told it.
    Disk(Option<Kind>),
    Node(NodeId),
}

/// A name changed since the last flush: who is on disk under it in the current generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DirtyName {
    /// The node on disk under this name, with its disk inode; `None` if nothing is.
    pub old: Option<(NodeId, u64)>,
    pub seq: u64,
}

#[derive(Default)]
pub(crate) struct Dir {
    /// Whether `entries` holds every name (read from disk, or a new directory).
    pub populated: bool,
    pub entries: BTreeMap<OsString, Entry>,
    pub by_cookie: BTreeMap<u64, OsString>,
    pub next_cookie: u64,
    pub dirty: BTreeMap<OsString, DirtyName>,
    /// Entries that are directories (for the link count).
    pub subdirs: u32,
    /// Link count on disk, used while unpopulated.
    pub disk_nlink: u32,
}

/// Cookies 1 and 2 are `.` and `..`.
pub(crate) const FIRST_COOKIE: u64 = 3;

impl Dir {
    pub fn new_populated() -> Dir {
        Dir {
            populated: true,
            next_cookie: FIRST_COOKIE,
            ..Dir::default()
        }
    }

    pub fn unpopulated(disk_nlink: u32) -> Dir {
        Dir {
            populated: false,
            next_cookie: FIRST_COOKIE,
            disk_nlink,
            ..Dir::default()
        }
    }

    pub fn insert(&mut self, name: OsString, target: Target) {
        if let Some(old) = self.entries.get(&name) {
            self.by_cookie.remove(&old.cookie);
        }
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.by_cookie.insert(cookie, name.clone());
        self.entries.insert(name, Entry { cookie, target });
    }

    pub fn remove(&mut self, name: &OsString) -> Option<Entry> {
        let e = self.entries.remove(name)?;
        self.by_cookie.remove(&e.cookie);
        Some(e)
    }

    pub fn nlink(&self) -> u32 {
        if self.populated {
            2 + self.subdirs
        } else {
            self.disk_nlink.max(2)
        }
    }
}
