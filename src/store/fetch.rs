//! Lazy fill (design.md §2): reading directory listings, nodes, file data and xattrs from the
//! disk copy the first time they are needed. Disk I/O happens under the shared disk gate and
//! never under the store lock; one fetch per (node, kind) runs at a time, others wait.

use super::Store;
use super::data::DataCell;
use super::inner::Inner;
use super::node::{Content, Target};
use super::types::{Kind, NodeId};
use crate::backing::{DiskStat, Loc};
use crate::error::{Errno, FsResult};
use std::ffi::{OsStr, OsString};

const POPULATE: u8 = 0;
const INSTANTIATE: u8 = 1;
const LOAD: u8 = 2;
const XATTRS: u8 = 3;

/// Releases a claimed fetch when dropped, waking whoever waits for it.
struct Claim<'a> {
    store: &'a Store,
    key: (NodeId, u8),
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.store.busy.lock().remove(&self.key);
        self.store.fetched.notify_all();
    }
}

impl Store {
    /// Claims a fetch, or waits until the one in progress ends (then returns `None`: the
    /// caller looks again at the state).
    fn claim(&self, id: NodeId, what: u8) -> Option<Claim<'_>> {
        let mut busy = self.busy.lock();
        if busy.contains(&(id, what)) {
            while busy.contains(&(id, what)) {
                self.fetched.wait(&mut busy);
            }
            return None;
        }
        busy.insert((id, what));
        Some(Claim {
            store: self,
            key: (id, what),
        })
    }

    /// Makes sure a directory's entries are known.
    pub(crate) fn ensure_populated(&self, dir: NodeId) -> FsResult<()> {
        loop {
            if self.lock().dir(dir)?.populated {
                return Ok(());
            }
            let Some(_claim) = self.claim(dir, POPULATE) else {
                continue;
            };
            let _gate = self.disk_gate.read();
            let path = {
                let mut inner = self.lock();
                if inner.dir(dir)?.populated {
                    return Ok(());
                }
                match inner.disk_path(dir) {
                    Some(p) => p,
                    None => {
                        inner.dir_mut(dir)?.populated = true;
                        return Ok(());
                    }
                }
            };
            let mut listing: Vec<(OsString, Option<Kind>)> = self
                .backing
                .read_dir(&Loc::Target(path.clone()))?
                .into_iter()
                .map(|i| (i.name, i.kind))
                .collect();
            for (name, kind) in listing.iter_mut() {
                if kind.is_none() {
                    *kind = self
                        .backing
                        .stat(&Loc::Target(path.join(&*name)))
                        .ok()
                        .map(|s| s.kind);
                }
            }
            // Listing a directory may update its atime on disk (when O_NOATIME is not
            // allowed): keep reporting what the disk says.
            let after = self.backing.stat(&Loc::Target(path.clone())).ok();
            let mut inner = self.lock();
            inner.install_listing(dir, listing);
            if let (Some(st), Ok(n)) = (after, inner.node_mut(dir)) {
                if n.meta_seq == 0 && n.origin.is_some() {
                    n.attr.atime = st.attr.atime;
                }
            }
            return Ok(());
        }
    }

    /// Makes sure `dir/name` is a node if it exists.
    pub(crate) fn ensure_child(&self, dir: NodeId, name: &OsStr) -> FsResult<()> {
        self.ensure_populated(dir)?;
        loop {
            if !matches!(self.lock().entry(dir, name)?, Some(Target::Disk(_))) {
                return Ok(());
            }
            let Some(_claim) = self.claim(dir, INSTANTIATE) else {
                continue;
            };
            let _gate = self.disk_gate.read();
            let Some(path) = self.lock().disk_path(dir) else {
                return Err(Errno::EIO);
            };
            let found = self.read_node(&path.join(name))?;
            self.lock().install_child(dir, name, found);
            return Ok(());
        }
    }

    /// Makes every entry of a directory a node (readdir reports inode numbers).
    pub(crate) fn ensure_all_instantiated(&self, dir: NodeId) -> FsResult<()> {
        self.ensure_populated(dir)?;
        loop {
            let pending: Vec<OsString> = {
                let inner = self.lock();
                let d = inner.dir(dir)?;
                d.entries
                    .iter()
                    .filter(|(_, e)| matches!(e.target, Target::Disk(_)))
                    .map(|(n, _)| n.clone())
                    .collect()
            };
            if pending.is_empty() {
                return Ok(());
            }
            let Some(_claim) = self.claim(dir, INSTANTIATE) else {
                continue;
            };
            let _gate = self.disk_gate.read();
            let Some(path) = self.lock().disk_path(dir) else {
                return Err(Errno::EIO);
            };
            let mut found = Vec::with_capacity(pending.len());
            for name in pending {
                match self.read_node(&path.join(&name)) {
                    Ok(f) => found.push((name, f)),
                    // Vanished from disk behind our back: leave it; lookup will say ENOENT.
                    Err(e) if e == Errno::ENOENT => {}
                    Err(e) => return Err(e),
                }
            }
            let mut inner = self.lock();
            for (name, f) in found {
                inner.install_child(dir, &name, f);
            }
            return Ok(());
        }
    }

    fn read_node(&self, path: &std::path::Path) -> FsResult<(DiskStat, Option<Vec<u8>>)> {
        let loc = Loc::Target(path.to_path_buf());
        let st = self.backing.stat(&loc)?;
        let link = if st.kind == Kind::Symlink {
            Some(self.backing.read_link(&loc)?)
        } else {
            None
        };
        Ok((st, link))
    }

    /// Makes sure a regular file's data is in RAM. Room is made for it first
    /// (`room_to_read`: evictions, or a wait for a pressure flush), outside the disk gate so
    /// that the flush it waits for can run; the room found can still be taken by a writer
    /// before the copy is done, and then the read waits again, within the same patience.
    pub(crate) fn ensure_loaded(&self, id: NodeId) -> FsResult<()> {
        let since = std::time::Instant::now();
        loop {
            if !matches!(self.lock().node(id)?.content, Content::File(None)) {
                return Ok(());
            }
            let Some(_claim) = self.claim(id, LOAD) else {
                continue;
            };
            let size = match &self.lock().node(id)? {
                n if matches!(n.content, Content::File(None)) => n.attr.size,
                _ => return Ok(()),
            };
            let _room = self.room_to_read(size, since)?;
            match self.load(id) {
                Err(e) if e == Errno::ENOSPC && since.elapsed() < super::evict::READ_PATIENCE => {
                    std::thread::sleep(super::evict::LOOK_AGAIN);
                }
                other => return other,
            }
        }
    }

    /// Reads a file's data into RAM (its claim held, room made).
    fn load(&self, id: NodeId) -> FsResult<()> {
        let _gate = self.disk_gate.read();
        let (path, ino) = {
            let inner = self.lock();
            let n = inner.node(id)?;
            if !matches!(n.content, Content::File(None)) {
                return Ok(());
            }
            (inner.disk_path(id), n.disk_ino)
        };
        let data_id = self.data.alloc();
        let file = self.data.create(data_id)?;
        if let Some(p) = path {
            // Stat before reading: a change in between makes a conflict copy too many,
            // never one too few. While the backup links files or a flush renames them,
            // their ctimes are asdfs's own doing and are not compared.
            let loc = Loc::Target(p);
            let own_ctime = self.disk_writers.try_lock().is_none();
            let before = self.backing.stat(&loc);
            if let Err(e) = self.backing.read_data(&loc, ino, &file) {
                self.data.remove(data_id);
                return Err(e.into());
            }
            if let Ok(st) = before {
                self.seen.record(&st, !own_ctime);
            }
        }
        let size = file.metadata()?.len();
        let mut inner = self.lock();
        let n = inner.node_mut(id)?;
        n.content = Content::File(Some(DataCell::new(&self.data, data_id, file)));
        n.attr.size = size;
        inner.counters.loads += 1;
        inner.counters.bytes_loaded += size;
        inner.cache.touch(id, size);
        Ok(())
    }

    /// Makes sure a node's xattrs are in RAM.
    pub(crate) fn ensure_xattrs(&self, id: NodeId) -> FsResult<()> {
        loop {
            if self.lock().node(id)?.xattrs.is_some() {
                return Ok(());
            }
            let Some(_claim) = self.claim(id, XATTRS) else {
                continue;
            };
            let _gate = self.disk_gate.read();
            let path = {
                let inner = self.lock();
                if inner.node(id)?.xattrs.is_some() {
                    return Ok(());
                }
                inner.disk_path(id)
            };
            let list = match path {
                Some(p) => self.backing.read_xattrs(&Loc::Target(p))?,
                None => Vec::new(),
            };
            self.lock().node_mut(id)?.xattrs = Some(list.into_iter().collect());
            return Ok(());
        }
    }
}

impl Inner {
    /// Fills an unpopulated directory with a listing read from disk.
    pub(crate) fn install_listing(&mut self, dir: NodeId, listing: Vec<(OsString, Option<Kind>)>) {
        if self.dir(dir).map(|d| d.populated).unwrap_or(true) {
            return;
        }
        let mut adds = Vec::with_capacity(listing.len());
        for (name, kind) in listing {
            match self.pending_origins.remove(&(dir, name.clone())) {
                Some(x) => {
                    let k = self.nodes.get(&x).map(|n| n.kind);
                    if let Some(n) = self.nodes.get_mut(&x) {
                        n.names.push((dir, name.clone()));
                    }
                    adds.push((name, Target::Node(x), k));
                }
                None => adds.push((name, Target::Disk(kind), kind)),
            }
        }
        let Ok(d) = self.dir_mut(dir) else { return };
        for (name, target, kind) in adds {
            if kind == Some(Kind::Dir) {
                d.subdirs += 1;
            }
            d.insert(name, target);
        }
        d.populated = true;
    }

    /// Turns the disk entry `dir/name` into a node (one node per disk inode for hard links).
    pub(crate) fn install_child(
        &mut self,
        dir: NodeId,
        name: &OsStr,
        found: (DiskStat, Option<Vec<u8>>),
    ) -> Option<NodeId> {
        let (st, link) = found;
        let was = match self.entry(dir, name).ok()? {
            Some(Target::Disk(k)) => k,
            Some(Target::Node(x)) => return Some(x),
            None => return None,
        };
        let id = match self.pending_origins.remove(&(dir, name.to_os_string())) {
            Some(x) => x,
            None => match self
                .disk_inos
                .get(&st.ino)
                .copied()
                .filter(|x| st.kind != Kind::Dir && self.nodes.contains_key(x))
            {
                Some(x) => {
                    let n = self.nodes.get_mut(&x)?;
                    n.hidden_links = n.hidden_links.saturating_sub(1);
                    if n.hidden_links == 0 {
                        self.disk_inos.remove(&st.ino);
                    }
                    x
                }
                None => self.node_from_disk(dir, name, &st, link),
            },
        };
        self.nodes
            .get_mut(&id)?
            .names
            .push((dir, name.to_os_string()));
        let d = self.dir_mut(dir).ok()?;
        if was != Some(Kind::Dir) && st.kind == Kind::Dir {
            d.subdirs += 1;
        }
        if let Some(e) = d.entries.get_mut(name) {
            e.target = Target::Node(id);
        }
        Some(id)
    }
}
