//! After a salvage (design.md §7): the store is told which disk paths a committed flush
//! could not complete, checks them against the disk, and marks what is not there as
//! changed again, so that the next flush writes it (a verified resync from the store).

use super::Store;
use super::inner::Inner;
use super::node::{Content, DirtyName, Target};
use super::types::NodeId;
use crate::backing::{Loc, ino_at};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

impl Store {
    /// `paths` (relative to the target) are where skipped steps of a salvaged flush would
    /// have put or changed something. For each, the shallowest of it and its directories
    /// whose disk object is not the one the store believes is there becomes new again with
    /// everything the store had under it on disk: no disk origin, its names changed, so the
    /// next flush writes it whole. A path whose disk objects all match has its attributes
    /// written again. Returns the number of nodes marked. Runs with the disk gate held
    /// (the disk does not change meanwhile); reads the disk before taking the store lock.
    pub(crate) fn resync(&self, paths: &[PathBuf]) -> usize {
        let mut prefixes: BTreeSet<PathBuf> = BTreeSet::new();
        for p in paths {
            let mut cur = PathBuf::new();
            for c in p.components() {
                cur.push(c);
                prefixes.insert(cur.clone());
            }
        }
        let on_disk: HashMap<PathBuf, Option<u64>> = prefixes
            .into_iter()
            .map(|p| {
                let ino = ino_at(self.backing.as_ref(), &Loc::Target(p.clone()))
                    .ok()
                    .flatten();
                (p, ino)
            })
            .collect();
        let roots = self.lock().resync_roots(paths, &on_disk);
        for root in &roots {
            if let Some(Some(_)) = on_disk.get(root) {
                self.set_aside(root);
            }
        }
        self.lock().mark_not_on_disk(&roots)
    }

    /// Something else than what the store believes is at `root` on disk (put there behind
    /// asdfs): it is moved into the side directory as `salvaged.behind.<N>`, so that the
    /// store's version can take its place and nothing is lost (design.md §7).
    fn set_aside(&self, root: &std::path::Path) {
        match crate::backing::set_aside(self.backing.as_ref(), &Loc::Target(root.to_path_buf())) {
            Ok(to) => {
                tracing::error!(path = %crate::human::path(root), kept = %to, "what was on disk in place of what the store holds is kept in the side directory");
            }
            Err(e) => {
                tracing::error!(path = %crate::human::path(root), error = %e, "what is on disk in place of what the store holds could not be set aside; the next flush may fail its check")
            }
        }
    }

    /// At a takeover, after the restored nodes were looked for on disk: those not found
    /// where their origin says (the flush the log was rebased onto was salvaged, or the
    /// disk changed behind asdfs) are resynced rather than forgotten with their data.
    pub(crate) fn resync_unreached(&self) {
        let wanted: Vec<(PathBuf, Option<u64>)> = {
            let inner = self.lock();
            inner
                .nodes
                .iter()
                .filter(|(id, n)| **id != NodeId::ROOT && n.names.is_empty() && n.origin.is_some())
                .filter_map(|(id, n)| Some((inner.disk_path(*id)?, n.disk_ino)))
                .collect()
        };
        let gone: Vec<PathBuf> = wanted
            .into_iter()
            .filter(|(p, ino)| {
                ino_at(self.backing.as_ref(), &Loc::Target(p.clone()))
                    .map_or(true, |found| found != *ino)
            })
            .map(|(p, _)| p)
            .collect();
        if !gone.is_empty() {
            let n = self.resync(&gone);
            tracing::warn!(
                nodes = n,
                "restored nodes not on disk where the store log says: written again by the next flush"
            );
        }
    }
}

impl Inner {
    /// Where each node the store believes on disk is (on disk).
    fn by_disk_path(&self) -> HashMap<PathBuf, NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.origin.is_some())
            .filter_map(|(id, _)| Some((self.disk_path(*id)?, *id)))
            .collect()
    }

    /// The shallowest path of each of `paths` and its directories whose disk inode is not
    /// the store's; paths that match have their attributes marked to be written again.
    fn resync_roots(
        &mut self,
        paths: &[PathBuf],
        on_disk: &HashMap<PathBuf, Option<u64>>,
    ) -> Vec<PathBuf> {
        let by_path = self.by_disk_path();
        let seq = self.next_seq();
        let mut roots: Vec<PathBuf> = Vec::new();
        for p in paths {
            let mut cur = PathBuf::new();
            let mut found = None;
            for c in p.components() {
                cur.push(c);
                let Some(&id) = by_path.get(&cur) else {
                    // Not in RAM: the store has nothing newer than the disk there.
                    tracing::warn!(path = %crate::human::path(&cur), "a salvaged flush's step concerned a path the store does not hold; it stays as the disk has it");
                    break;
                };
                let want = self.nodes.get(&id).and_then(|n| n.disk_ino);
                if on_disk.get(&cur).copied().flatten() != want {
                    found = Some(cur.clone());
                    break;
                }
                if cur == *p {
                    // Where the store believes: its attributes are written again.
                    self.mark_meta(id, seq);
                    self.log_node(id);
                }
            }
            if let Some(root) = found {
                if !roots.iter().any(|r| root.starts_with(r)) {
                    roots.retain(|r| !r.starts_with(&root));
                    roots.push(root);
                }
            }
        }
        roots
    }

    /// Everything the store holds under `roots` on disk is not there: written again.
    fn mark_not_on_disk(&mut self, roots: &[PathBuf]) -> usize {
        let by_path = self.by_disk_path();
        let seq = self.next_seq();
        let mut marked: BTreeSet<NodeId> = BTreeSet::new();
        for root in roots {
            tracing::warn!(path = %crate::human::path(root), "not on disk as the store believes after a salvaged flush: written again by the next flush");
            for (path, &id) in &by_path {
                if path.starts_with(root) {
                    marked.insert(id);
                }
            }
        }
        let mut by_depth: Vec<(usize, NodeId)> = marked
            .iter()
            .filter_map(|&id| Some((self.disk_path(id)?.components().count(), id)))
            .collect();
        by_depth.sort();
        for &(_, id) in &by_depth {
            self.as_new_dir(id);
        }
        for &(_, id) in &by_depth {
            self.attach_at_origin(id);
        }
        for &id in &marked {
            self.not_on_disk(id, seq);
        }
        // A name whose disk occupant is one of these holds nothing on disk now.
        for &dir in &self.dirty_dirs.clone() {
            if let Some(dn) = self.nodes.get_mut(&dir).and_then(|n| n.dir_mut()) {
                for d in dn.dirty.values_mut() {
                    if d.old.is_some_and(|(o, _)| marked.contains(&o)) {
                        d.old = None;
                    }
                }
            }
        }
        for &id in &marked {
            let names = self
                .nodes
                .get(&id)
                .map(|n| n.names.clone())
                .unwrap_or_default();
            for (dir, name) in names {
                if let Some(dn) = self.nodes.get_mut(&dir).and_then(|n| n.dir_mut()) {
                    dn.dirty
                        .entry(name.clone())
                        .or_insert(DirtyName { old: None, seq });
                    self.dirty_dirs.insert(dir);
                }
                self.log_entry(dir, &name, Some(id));
            }
            self.log_node(id);
            self.maybe_free(id);
        }
        marked.len()
    }

    /// A directory that is not on disk as the store believed is written whole by the next
    /// flush: it holds what the store has of it, and names it never read from disk are
    /// only in the salvaged stage (logged).
    fn as_new_dir(&mut self, id: NodeId) {
        let Some(d) = self.nodes.get_mut(&id).and_then(|n| n.dir_mut()) else {
            return;
        };
        if d.populated {
            return;
        }
        let unread: Vec<_> = d
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.target, Target::Disk(_)))
            .map(|(name, e)| (name.clone(), e.target))
            .collect();
        for (name, target) in &unread {
            d.remove(name);
            if *target == Target::Disk(Some(super::types::Kind::Dir)) {
                d.subdirs = d.subdirs.saturating_sub(1);
            }
        }
        d.populated = true;
        if unread.is_empty() {
            return;
        }
        tracing::error!(
            node = id.0,
            unread = unread.len(),
            "a directory a salvaged flush did not place was not read whole; what the store did not hold of it is only in the salvaged stage"
        );
    }

    /// A node the store holds without a name (restored from the store log, waiting to be
    /// met on disk where it is not) gets its name back at its origin, unless a program
    /// removed it there or something else took that name.
    fn attach_at_origin(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get(&id) else { return };
        let (Some(o), true) = (n.origin.clone(), n.names.is_empty()) else {
            return;
        };
        let kind = n.kind;
        let Some(d) = self.nodes.get_mut(&o.parent).and_then(|p| p.dir_mut()) else {
            return;
        };
        if !d.populated || d.entries.contains_key(&o.name) || d.dirty.contains_key(&o.name) {
            return;
        }
        d.insert(o.name.clone(), Target::Node(id));
        if kind == super::types::Kind::Dir {
            d.subdirs += 1;
        }
        self.pending_origins.remove(&(o.parent, o.name.clone()));
        if let Some(n) = self.nodes.get_mut(&id) {
            n.names.push((o.parent, o.name));
        }
    }

    /// Forgets where `id` is on disk: the next flush writes it as new.
    fn not_on_disk(&mut self, id: NodeId, seq: u64) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if let Some(ino) = n.disk_ino.take() {
            if self.disk_inos.get(&ino) == Some(&id) {
                self.disk_inos.remove(&ino);
            }
        }
        n.origin = None;
        n.hidden_links = 0;
        if matches!(n.content, Content::File(None)) {
            // Its data was only on disk, where it is not: it cannot be read nor written
            // (a plan with it would fail its check at every flush), so its names go.
            let names = std::mem::take(&mut n.names);
            for (dir, name) in names {
                tracing::error!(node = id.0, name = ?name, "a file a salvaged flush did not place has no data in RAM; it leaves the tree and is only in the salvaged stage or the side directory");
                if let Some(d) = self.nodes.get_mut(&dir).and_then(|p| p.dir_mut()) {
                    d.remove(&name);
                }
                self.log_entry(dir, &name, None);
            }
            return;
        }
        if n.kind == super::types::Kind::File && n.cell().is_some() {
            n.data_seq = seq;
        }
        n.meta_seq = seq;
        self.dirty_nodes.insert(id);
    }
}
