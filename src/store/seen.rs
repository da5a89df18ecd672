//! What the store last saw of the disk files it read into RAM (design.md §6.2): size,
//! mtime and ctime by disk inode. A flush about to replace or remove a file compares the
//! file on disk with this; a file changed behind asdfs (a program writing through a
//! descriptor opened before the mount) is kept as a conflict copy instead of being lost.

use crate::backing::DiskStat;
use crate::store::types::Ts;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// Keeps the disk file at a path (relative to the target) under a new name; returns that
/// name. Given by the daemon, which holds the directory beside the target.
pub type Sink = Box<dyn Fn(&Path) -> io::Result<PathBuf> + Send + Sync>;

/// One disk file as the store last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime: Ts,
    /// `None` when asdfs itself changed the ctime since (a flush's rename or attribute
    /// change, the hardlink backup's link): then only size and mtime are compared.
    ctime: Option<Ts>,
}

/// The records, and the conflict copies kept so far.
#[derive(Default)]
pub struct DiskSeen {
    map: Mutex<HashMap<u64, Seen>>,
    kept: Mutex<Vec<String>>,
    /// The target's path (for messages) and where conflict copies go.
    sink: Mutex<Option<(PathBuf, Sink)>>,
}

impl DiskSeen {
    /// The file `st` was read into RAM; `ctime` says whether its ctime is to be trusted
    /// (nothing of asdfs was linking or replacing files meanwhile).
    pub fn record(&self, st: &DiskStat, ctime: bool) {
        let seen = Seen {
            size: st.attr.size,
            mtime: st.attr.mtime,
            ctime: ctime.then_some(st.attr.ctime),
        };
        self.map.lock().insert(st.ino, seen);
    }

    /// A flush wrote the file `st` (its ctime changes when it is renamed into place).
    pub fn record_written(&self, st: &DiskStat) {
        self.record(st, false);
    }

    /// asdfs changed the ctime of `ino` (renamed, linked or set its attributes).
    pub fn touched(&self, ino: u64) {
        if let Some(s) = self.map.lock().get_mut(&ino) {
            s.ctime = None;
        }
    }

    /// A flush set the attributes of the file `st` (its mtime among them). Unless its size
    /// changed meanwhile (then it changed behind asdfs, which the next flush must see), its
    /// new mtime is what asdfs last saw.
    pub fn meta_applied(&self, st: &DiskStat) {
        if let Some(s) = self.map.lock().get_mut(&st.ino) {
            s.ctime = None;
            if s.size == st.attr.size {
                s.mtime = st.attr.mtime;
            }
        }
    }

    /// The hardlink backup linked every file (which changes their ctimes).
    pub fn forget_ctimes(&self) {
        for s in self.map.lock().values_mut() {
            s.ctime = None;
        }
    }

    pub fn forget(&self, ino: u64) {
        self.map.lock().remove(&ino);
    }

    /// Whether the disk file `st` differs from what was read into RAM (false when it was
    /// never read: the RAM version then does not derive from it).
    pub fn changed(&self, st: &DiskStat) -> bool {
        let Some(s) = self.map.lock().get(&st.ino).copied() else {
            return false;
        };
        s.size != st.attr.size
            || s.mtime != st.attr.mtime
            || s.ctime.is_some_and(|c| c != st.attr.ctime)
    }

    pub fn set_sink(&self, target: PathBuf, sink: Sink) {
        *self.sink.lock() = Some((target, sink));
    }

    /// Keeps the changed disk file at `rel` (relative to the target) as a conflict copy,
    /// says so in the log, and remembers it for status.
    pub fn keep(&self, rel: &Path) {
        let sink = self.sink.lock();
        let (shown, kept) = match &*sink {
            Some((target, sink)) => (target.join(rel), sink(rel)),
            None => (
                rel.to_path_buf(),
                Err(io::Error::other("no place for conflict copies")),
            ),
        };
        drop(sink);
        match kept {
            Ok(copy) => {
                tracing::warn!(
                    file = %crate::human::path(&shown),
                    copy = %crate::human::path(&copy),
                    "conflict: the disk file changed behind asdfs since it was read into RAM \
                     (a program writing through a descriptor opened before the mount?); \
                     the RAM version replaces it, the disk version is kept as a conflict copy"
                );
                self.kept.lock().push(format!(
                    "{} -> {}",
                    crate::human::path(&shown),
                    crate::human::path(&copy)
                ));
            }
            Err(e) => tracing::error!(
                file = %crate::human::path(&shown),
                error = %e,
                "conflict: the disk file changed behind asdfs since it was read into RAM, and \
                 its disk version could not be kept; the RAM version replaces it"
            ),
        }
    }

    /// The conflict copies kept in this session, as "file -> copy".
    pub fn kept(&self) -> Vec<String> {
        self.kept.lock().clone()
    }
}
