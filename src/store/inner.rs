//! The state under the store lock and the primitives every operation is built from: finding
//! nodes, disk and RAM paths, changing a directory entry with dirty tracking, logging.

use super::data::DataDir;
use super::log::{NodeRec, OriginRec, Record, StoreLog};
use super::node::{Content, Dir, DirtyName, Node, Origin, Target};
use super::types::{Attr, Kind, NodeId, Stat, Ts};
use crate::error::{Errno, FsResult};
use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::Arc;

thread_local! {
    /// Set when an operation's records could not be put in the store log on this thread
    /// (`take_log_lost`): the FUSE adapter then tells the program EIO.
    static LOG_LOST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether an operation on this thread since the last call lost its store-log records.
pub fn take_log_lost() -> bool {
    LOG_LOST.with(|l| l.replace(false))
}

/// An open file or directory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handle {
    pub node: NodeId,
    /// Opened for writing (with FUSE passthrough this is what marks data dirty).
    pub write: bool,
    /// The kernel does this handle's I/O on the data file itself (FUSE passthrough), and
    /// the data file's signature when it began (for status's bytes written).
    pub pinned: Option<Option<super::data::Sig>>,
    /// A directory listing's end: entries with this cookie or higher (made or renamed
    /// after the listing began) are not listed, so that a listing always ends and returns
    /// each entry at most once. Set by a listing from offset 0; 0 until then.
    pub list_end: u64,
}

/// Counters reported by status.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub bytes_written: u64,
    pub loads: u64,
    pub bytes_loaded: u64,
}

pub(crate) struct Inner {
    pub(super) nodes: HashMap<NodeId, Node>,
    pub(super) next_node: u64,
    pub(super) next_handle: u64,
    pub(super) handles: HashMap<u64, Handle>,
    /// Disk inode -> node, for nodes with names on disk not met yet (hard links).
    pub(super) disk_inos: HashMap<u64, NodeId>,
    /// Sequence of changes (design.md §2).
    pub(super) seq: u64,
    pub(super) dirty_nodes: BTreeSet<NodeId>,
    pub(super) dirty_dirs: BTreeSet<NodeId>,
    pub(super) log: StoreLog,
    /// Nodes recreated from the store log, waiting for their directory to be populated.
    pub(super) pending_origins: HashMap<(NodeId, OsString), NodeId>,
    pub(super) counters: Counters,
    /// While replaying the store log, changes are not logged again.
    pub(super) replaying: bool,
    /// Files a takeover found no room to give a fresh data file (design.md §3): their data
    /// leaves RAM after the takeover's flush (`Store::finish_renewal`).
    pub(super) unrenewed: Vec<NodeId>,
    pub(super) data: Arc<DataDir>,
    /// When the oldest change not yet on disk was made, and the first change since the
    /// last flush snapshot.
    pub(super) dirty_since: Option<std::time::SystemTime>,
    /// Records of the operation in progress: appended as one batch, with a commit marker,
    /// when the store lock is released (design.md §3).
    pub(super) log_buf: Vec<Record>,
    /// Data files of nodes freed under the lock: deleted once it is released (`Locked`).
    pub(super) freed_data: Vec<super::types::DataId>,
    pub(super) since_snapshot: Option<std::time::SystemTime>,
    /// The nodes the flush under way writes anew (its snapshot's staged set): a program may
    /// remove one before the commit, but it is on disk once the flush commits, its children
    /// with it, so it is kept until the flush ends (`end_flush`).
    pub(super) in_flight: BTreeSet<NodeId>,
    /// Loaded files by recency of use: clean ones may leave RAM (design.md §2.1).
    pub(super) cache: super::evict::Cache,
}

impl Inner {
    pub fn node(&self, id: NodeId) -> FsResult<&Node> {
        self.nodes.get(&id).ok_or(Errno::ENOENT)
    }

    pub fn node_mut(&mut self, id: NodeId) -> FsResult<&mut Node> {
        self.nodes.get_mut(&id).ok_or(Errno::ENOENT)
    }

    pub fn dir(&self, id: NodeId) -> FsResult<&Dir> {
        self.node(id)?.dir().ok_or(Errno::ENOTDIR)
    }

    pub fn dir_mut(&mut self, id: NodeId) -> FsResult<&mut Dir> {
        self.node_mut(id)?.dir_mut().ok_or(Errno::ENOTDIR)
    }

    /// The sequence number of a new change.
    pub fn next_seq(&mut self) -> u64 {
        let now = std::time::SystemTime::now();
        self.dirty_since.get_or_insert(now);
        self.since_snapshot.get_or_insert(now);
        self.seq += 1;
        self.seq
    }

    pub fn alloc_node(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.next_node);
        self.next_node += 1;
        self.nodes.insert(id, node);
        id
    }

    /// A chain of parents longer than this has a cycle: no path is that deep. Paths have no
    /// other bound: the disk side resolves them in pieces (design.md §6.1, deep paths).
    fn chain_bound(&self) -> usize {
        self.nodes.len() + 1
    }

    /// Where a node is on disk in the current generation, relative to the target.
    pub fn disk_path(&self, id: NodeId) -> Option<PathBuf> {
        let mut names: Vec<&OsStr> = Vec::new();
        let mut cur = id;
        let bound = self.chain_bound();
        while cur != NodeId::ROOT {
            let o = self.nodes.get(&cur)?.origin.as_ref()?;
            names.push(&o.name);
            cur = o.parent;
            if names.len() > bound {
                return None;
            }
        }
        Some(names.iter().rev().collect())
    }

    /// Where a node is in the RAM tree (its first name), relative to the target.
    pub fn ram_path(&self, id: NodeId) -> Option<PathBuf> {
        let mut names: Vec<&OsStr> = Vec::new();
        let mut cur = id;
        while cur != NodeId::ROOT {
            let (parent, name) = self.nodes.get(&cur)?.names.first()?;
            names.push(name);
            cur = *parent;
            if names.len() > self.chain_bound() {
                return None;
            }
        }
        Some(names.iter().rev().collect())
    }

    pub fn stat(&self, id: NodeId) -> FsResult<Stat> {
        let n = self.node(id)?;
        let nlink = match &n.content {
            Content::Dir(d) => {
                if n.names.is_empty() && id != NodeId::ROOT {
                    0
                } else {
                    d.nlink()
                }
            }
            _ => n.names.len() as u32 + n.hidden_links,
        };
        let mut attr = n.attr;
        if let Some(cell) = n.cell() {
            if let Ok(m) = cell.metadata() {
                use std::os::unix::fs::MetadataExt;
                attr.blocks = m.blocks();
            }
            if let Some(sig) = cell.observed() {
                sig_into(&mut attr, sig);
            }
        }
        Ok(Stat {
            ino: id,
            kind: n.kind,
            attr,
            nlink,
        })
    }

    /// The node under `name` in a populated directory, `Target::Disk` if not instantiated.
    pub fn entry(&self, dir: NodeId, name: &OsStr) -> FsResult<Option<Target>> {
        let d = self.dir(dir)?;
        debug_assert!(d.populated);
        Ok(d.entries.get(name).map(|e| e.target))
    }

    /// Makes `dir/name` refer to `target` (or to nothing), keeping link counts, names and
    /// the dirty set right. The current occupant must already be instantiated.
    pub fn set_entry(
        &mut self,
        dir: NodeId,
        name: &OsStr,
        target: Option<NodeId>,
        seq: u64,
    ) -> FsResult<()> {
        let name = name.to_os_string();
        let prev = match self.entry(dir, &name)? {
            Some(Target::Disk(_)) => return Err(Errno::EIO),
            Some(Target::Node(n)) => Some(n),
            None => None,
        };
        let old = prev.and_then(|p| {
            self.nodes
                .get(&p)
                .and_then(|n| n.disk_ino.map(|ino| (p, ino)))
        });
        let prev_is_dir = prev.map(|p| {
            self.nodes
                .get(&p)
                .map(|n| n.kind == Kind::Dir)
                .unwrap_or(false)
        });
        let new_is_dir = match target {
            Some(t) => Some(self.node(t)?.kind == Kind::Dir),
            None => None,
        };
        let d = self.dir_mut(dir)?;
        let dirty = d
            .dirty
            .entry(name.clone())
            .or_insert(DirtyName { old, seq });
        dirty.seq = seq;
        if prev_is_dir == Some(true) {
            d.subdirs -= 1;
        }
        match target {
            Some(t) => d.insert(name.clone(), Target::Node(t)),
            None => {
                d.remove(&name);
            }
        }
        if new_is_dir == Some(true) {
            d.subdirs += 1;
        }
        self.dirty_dirs.insert(dir);
        if let Some(p) = prev {
            if let Some(n) = self.nodes.get_mut(&p) {
                if let Some(i) = n.names.iter().position(|(d, nm)| *d == dir && *nm == name) {
                    n.names.remove(i);
                }
            }
        }
        if let Some(t) = target {
            self.node_mut(t)?.names.push((dir, name.clone()));
        }
        self.log_entry(dir, &name, target);
        Ok(())
    }

    /// Notes that a node's attributes changed.
    pub fn mark_meta(&mut self, id: NodeId, seq: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.meta_seq = seq;
            self.dirty_nodes.insert(id);
        }
    }

    /// Notes that a file's data changed.
    pub fn mark_data(&mut self, id: NodeId, seq: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.data_seq = seq;
            self.dirty_nodes.insert(id);
        }
    }

    /// Updates mtime and ctime of a directory whose entries changed.
    pub fn touch_dir(&mut self, dir: NodeId, now: Ts, seq: u64) {
        if let Some(n) = self.nodes.get_mut(&dir) {
            n.attr.mtime = now;
            n.attr.ctime = now;
        }
        self.mark_meta(dir, seq);
        self.log_node(dir);
    }

    /// Forgets a node that nothing refers to any more: no name, no kernel reference, no open
    /// handle, and nothing on disk that a flush still has to remove (design.md §2).
    pub fn maybe_free(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get(&id) else { return };
        if id == NodeId::ROOT || !n.names.is_empty() || n.lookups > 0 || n.opens > 0 {
            return;
        }
        if n.origin.is_none() && self.in_flight.contains(&id) {
            // The flush under way puts it on disk: once it commits, the node has an origin
            // and the next flush removes it (`end_flush` looks at it again).
            return;
        }
        if n.origin.is_some() {
            // Kept for the flush that removes it from disk; its data is not needed.
            self.drop_removed_data(id);
            return;
        }
        let n = self.nodes.remove(&id).expect("checked above");
        self.dirty_nodes.remove(&id);
        self.dirty_dirs.remove(&id);
        if let Some(ino) = n.disk_ino {
            if self.disk_inos.get(&ino) == Some(&id) {
                self.disk_inos.remove(&ino);
            }
        }
        if let Some(cell) = n.cell() {
            self.freed_data.push(cell.id());
        }
    }

    /// The store-log record describing a node now.
    pub fn node_record(&self, id: NodeId) -> Option<NodeRec> {
        let n = self.nodes.get(&id)?;
        Some(NodeRec {
            id,
            kind: n.kind,
            attr: n.attr,
            origin: n.origin.as_ref().map(|o| OriginRec {
                parent: o.parent,
                name: o.name.clone(),
            }),
            disk_ino: n.disk_ino,
            hidden_links: n.hidden_links,
            data: n
                .cell()
                .filter(|_| n.data_seq != 0 || n.origin.is_none())
                .map(|c| c.id()),
            symlink: match &n.content {
                Content::Symlink(t) => Some(t.clone()),
                _ => None,
            },
            // With changed data too: the xattrs its rewritten copy gets (`Store::open`).
            xattrs: if n.meta_seq != 0 || n.data_seq != 0 || n.origin.is_none() {
                n.xattrs
                    .as_ref()
                    .map(|x| x.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            } else {
                None
            },
            meta_dirty: n.meta_seq != 0,
            data_dirty: n.data_seq != 0,
        })
    }

    /// Appends a node's record, after the records of its origin's directories if this log
    /// has not described them yet (so a replay can find the node on disk).
    pub fn log_node(&mut self, id: NodeId) {
        if self.replaying {
            return;
        }
        let mut chain = vec![id];
        let mut cur = id;
        let bound = self.chain_bound();
        while let Some(o) = self.nodes.get(&cur).and_then(|n| n.origin.as_ref()) {
            if o.parent == cur || chain.len() > bound {
                break;
            }
            cur = o.parent;
            match self.nodes.get(&cur) {
                Some(p) if p.logged_epoch != self.log.epoch => chain.push(cur),
                _ => break,
            }
        }
        let epoch = self.log.epoch;
        let mut recs = Vec::with_capacity(chain.len());
        for id in chain.into_iter().rev() {
            if let Some(r) = self.node_record(id) {
                recs.push(Record::Node(r));
            }
            if let Some(n) = self.nodes.get_mut(&id) {
                n.logged_epoch = epoch;
            }
        }
        self.log_buf.extend(recs);
    }

    /// Appends the records of the operation just done, as one batch that a replay applies
    /// whole or not at all.
    pub fn flush_log(&mut self) {
        if self.log_buf.is_empty() {
            return;
        }
        let mut batch = latest_nodes_only(std::mem::take(&mut self.log_buf));
        batch.push(Record::Commit);
        let was_broken = self.log.broken;
        if self.log.append(&batch).is_err() {
            // The file misses this operation: replace it by the state, which has it.
            let base = self.log.base_gen;
            let rewritten = !was_broken
                && !self.log.has_pending()
                && match self.rewrite_log(base) {
                    Ok(()) => {
                        tracing::warn!("store log rewritten after a failed append");
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the store log cannot be rewritten: changes get ENOSPC until a flush or deleted files make room");
                        false
                    }
                };
            if !rewritten {
                LOG_LOST.with(|l| l.set(true));
            }
        }
    }

    /// Whether a change whose records take up to `batch` bytes may be made now
    /// (`StoreLog::has_room`); a log that missed an append is rewritten first.
    pub(crate) fn ensure_log_room(&mut self, batch: u64, removal: bool) -> FsResult<()> {
        if self.log.broken && !self.log.has_pending() {
            let base = self.log.base_gen;
            if self.rewrite_log(base).is_ok() {
                tracing::info!("store log rewritten; changes are taken again");
            }
        }
        let room = if removal {
            self.log.has_room_for_removal(batch)
        } else {
            self.log.has_room(batch)
        };
        if room { Ok(()) } else { Err(Errno::ENOSPC) }
    }

    /// Appends an entry record (the child's node record first).
    pub fn log_entry(&mut self, dir: NodeId, name: &OsStr, child: Option<NodeId>) {
        if self.replaying {
            return;
        }
        if let Some(c) = child {
            self.log_node(c);
        }
        self.log_node(dir);
        let rec = Record::Entry {
            dir,
            name: name.to_os_string(),
            child,
        };
        self.log_buf.push(rec);
    }

    /// Counts a new kernel reference to a node.
    pub fn add_lookup(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.lookups += 1;
        }
    }

    /// A node for something found on disk at `dir/name`.
    pub fn node_from_disk(
        &mut self,
        dir: NodeId,
        name: &OsStr,
        st: &crate::backing::DiskStat,
        link: Option<Vec<u8>>,
    ) -> NodeId {
        let content = match st.kind {
            Kind::File => Content::File(None),
            Kind::Dir => Content::Dir(Dir::unpopulated(st.nlink)),
            Kind::Symlink => Content::Symlink(link.unwrap_or_default()),
            _ => Content::Special,
        };
        let mut node = Node::new(st.kind, st.attr, content);
        node.origin = Some(Origin {
            parent: dir,
            name: name.to_os_string(),
        });
        node.disk_ino = Some(st.ino);
        if st.kind != Kind::Dir && st.nlink > 1 {
            node.hidden_links = st.nlink - 1;
        }
        let id = self.alloc_node(node);
        if st.kind != Kind::Dir && st.nlink > 1 {
            self.disk_inos.insert(st.ino, id);
        }
        id
    }

    /// A fresh attribute set for a node created now by a program.
    pub fn new_attr(mode: u32, uid: u32, gid: u32, rdev: u64) -> Attr {
        let now = Ts::now();
        Attr {
            mode,
            uid,
            gid,
            rdev,
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }
}

/// Size and times of a pinned data file the kernel wrote (design.md §4.1).
pub(crate) fn sig_into(attr: &mut super::types::Attr, sig: super::data::Sig) {
    let ts = |(sec, nsec): (i64, i64)| Ts {
        sec,
        nsec: nsec as u32,
    };
    attr.size = sig.size;
    attr.mtime = ts(sig.mtime);
    attr.ctime = ts(sig.ctime);
}

/// The records of one operation with only the last record of each node: a replay keeps the
/// last record of a node anyway (`replay.rs`), and an operation often describes a node
/// twice (a directory before and after its times change).
fn latest_nodes_only(mut batch: Vec<Record>) -> Vec<Record> {
    let mut later: Vec<NodeId> = Vec::new();
    let mut keep = vec![true; batch.len()];
    for (i, r) in batch.iter().enumerate().rev() {
        if let Record::Node(n) = r {
            if later.contains(&n.id) {
                keep[i] = false;
            } else {
                later.push(n.id);
            }
        }
    }
    if keep.iter().all(|k| *k) {
        return batch;
    }
    let mut i = 0;
    batch.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, size: u64) -> Record {
        let t = Ts { sec: 1, nsec: 0 };
        let attr = Attr {
            mode: 0o644,
            uid: 0,
            gid: 0,
            rdev: 0,
            size,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
        };
        Record::Node(NodeRec {
            id: NodeId(id),
            kind: Kind::File,
            attr,
            origin: None,
            disk_ino: None,
            hidden_links: 0,
            data: None,
            symlink: None,
            xattrs: None,
            meta_dirty: true,
            data_dirty: false,
        })
    }

    #[test]
    fn a_batch_keeps_the_last_record_of_each_node_and_every_entry() {
        let entry = Record::Entry {
            dir: NodeId(1),
            name: "f".into(),
            child: Some(NodeId(2)),
        };
        let batch = vec![
            node(2, 0),
            node(1, 0),
            entry.clone(),
            node(1, 5),
            node(2, 7),
        ];
        assert_eq!(
            latest_nodes_only(batch),
            vec![entry, node(1, 5), node(2, 7)]
        );
        let single = vec![node(3, 1)];
        assert_eq!(latest_nodes_only(single.clone()), single);
    }
}
