//! Hard links from disk: before a flush writes a file with names on disk that the RAM tree
//! has not met, the disk copy is searched once for them (design.md §2), so that the new
//! inode gets every name.

use super::Store;
use super::inner::Inner;
use super::node::Target;
use super::types::{Kind, NodeId};
use crate::backing::Loc;
use crate::error::FsResult;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

impl Inner {
    /// What a flush must read first: xattrs of nodes it will write anew (unless never read,
    /// which means unchanged, and new nodes have them), and disk inodes of files with names
    /// not met yet that are to be written anew, or that changed and have no name met left
    /// (the change goes to the names on disk, which the flush must know to keep).
    pub(crate) fn flush_needs(&self) -> (Vec<NodeId>, HashMap<u64, NodeId>) {
        let mut xattrs = Vec::new();
        let mut hidden = HashMap::new();
        for &id in &self.dirty_nodes {
            let Some(n) = self.nodes.get(&id) else {
                continue;
            };
            let rewritten = n.kind == Kind::File && n.data_seq != 0 && n.disk_ino.is_some();
            let only_hidden = n.names.is_empty() && n.hidden_links > 0;
            if rewritten && (!n.names.is_empty() || only_hidden) && n.xattrs.is_none() {
                xattrs.push(id);
            }
            let changed = n.meta_seq != 0 || n.data_seq != 0;
            if let (true, Some(ino)) = (rewritten || (only_hidden && changed), n.disk_ino) {
                if n.hidden_links > 0 {
                    hidden.insert(ino, id);
                }
            }
        }
        (xattrs, hidden)
    }
}

impl Store {
    /// Finds every disk name of these inodes and makes it part of the RAM tree.
    pub(crate) fn find_hidden_links(&self, inos: &HashMap<u64, NodeId>) -> anyhow::Result<()> {
        let mut found: Vec<PathBuf> = Vec::new();
        {
            let _gate = self.disk_gate.read();
            let mut stack = vec![PathBuf::new()];
            while let Some(dir) = stack.pop() {
                for item in self.backing.read_dir(&Loc::Target(dir.clone()))? {
                    let p = dir.join(&item.name);
                    match item.kind {
                        Some(Kind::Dir) => stack.push(p),
                        _ if inos.contains_key(&item.ino) => found.push(p),
                        _ => {}
                    }
                }
            }
        }
        for p in &found {
            self.meet_disk_path(p)?;
        }
        let mut inner = self.lock();
        for id in inos.values() {
            if let Some(n) = inner.nodes.get_mut(id) {
                if n.hidden_links > 0 {
                    tracing::warn!(
                        node = id.0,
                        missing = n.hidden_links,
                        "not every name of a hard-linked file was found on disk"
                    );
                    n.hidden_links = 0;
                }
            }
        }
        inner
            .disk_inos
            .retain(|_, v| !inos.values().any(|x| x == v));
        Ok(())
    }

    /// A takeover (design.md §3): the dead daemon met some disk names of these restored
    /// files, and a node's record names only its origin. Each one's other disk names are
    /// counted again from the disk, so that meeting one joins the node instead of making a
    /// second file of it.
    pub(crate) fn recount_disk_links(&self, restored: &[NodeId]) -> anyhow::Result<()> {
        let paths: Vec<(NodeId, u64, PathBuf)> = {
            let inner = self.lock();
            restored
                .iter()
                .filter_map(|&id| {
                    let n = inner.nodes.get(&id)?;
                    let ino = n.disk_ino.filter(|_| n.kind != Kind::Dir)?;
                    n.origin.as_ref()?;
                    Some((id, ino, inner.disk_path(id)?))
                })
                .collect()
        };
        let mut counts = Vec::with_capacity(paths.len());
        {
            let _gate = self.disk_gate.read();
            for (id, ino, path) in paths {
                match self.backing.stat(&Loc::Target(path)) {
                    Ok(st) if st.ino == ino => counts.push((id, ino, st.nlink)),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mut inner = self.lock();
        for (id, ino, nlink) in counts {
            let Some(n) = inner.nodes.get_mut(&id) else {
                continue;
            };
            n.hidden_links = nlink.saturating_sub(1);
            if n.hidden_links > 0 {
                inner.disk_inos.insert(ino, id);
            } else if inner.disk_inos.get(&ino) == Some(&id) {
                inner.disk_inos.remove(&ino);
            }
        }
        Ok(())
    }

    /// Walks a disk path through the RAM tree, instantiating what it meets.
    fn meet_disk_path(&self, path: &Path) -> FsResult<()> {
        let mut cur = NodeId::ROOT;
        for c in path.components() {
            let Component::Normal(name) = c else { continue };
            self.ensure_populated(cur)?;
            cur = match self.disk_child(cur, name)? {
                Some(Some(x)) => x,
                Some(None) => return Ok(()),
                None => {
                    self.ensure_child(cur, name)?;
                    match self.lock().entry(cur, name)? {
                        Some(Target::Node(x)) => x,
                        _ => return Ok(()),
                    }
                }
            };
        }
        Ok(())
    }

    /// Who is on disk under `dir/name`: `Some(Some(node))`, `Some(None)` for nothing, `None`
    /// when the entry is on disk but not instantiated yet.
    fn disk_child(&self, dir: NodeId, name: &OsStr) -> FsResult<Option<Option<NodeId>>> {
        let inner = self.lock();
        let d = inner.dir(dir)?;
        if let Some(dn) = d.dirty.get(name) {
            return Ok(Some(dn.old.map(|o| o.0)));
        }
        Ok(match d.entries.get(name).map(|e| e.target) {
            Some(Target::Node(x)) => Some(Some(x)),
            Some(Target::Disk(_)) => None,
            None => Some(None),
        })
    }
}
