//! Rebuilding the RAM tree from the store log (takeover, design.md §3), and writing the
//! current dirty state as a new log (after a flush, or after a takeover).

use super::Store;
use super::data::DataCell;
use super::inner::Inner;
use super::log::{NodeRec, Record};
use super::node::{Content, Dir, Node, Origin};
use super::types::{DataId, Kind, NodeId, Ts};
use crate::error::Errno;
use anyhow::Context;
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;

impl Store {
    /// Applies a dead daemon's log on top of the disk copy.
    pub(crate) fn replay(&self, records: Vec<Record>) -> anyhow::Result<()> {
        let mut nodes: BTreeMap<NodeId, NodeRec> = BTreeMap::new();
        let mut entries: Vec<(NodeId, OsString, Option<NodeId>)> = Vec::new();
        for r in records {
            match r {
                Record::Node(n) => {
                    nodes.insert(n.id, n);
                }
                Record::Entry { dir, name, child } => entries.push((dir, name, child)),
                Record::Header(_) | Record::End { .. } | Record::Commit => {}
            }
        }
        let mut skipped: HashSet<NodeId> = HashSet::new();
        let mut renewed: Vec<NodeId> = Vec::new();
        {
            let mut inner = self.lock();
            inner.replaying = true;
            for rec in nodes.values() {
                if rec.id != NodeId::ROOT && rec.data.is_some_and(|d| !inner.data.exists(d)) {
                    // Created, then unlinked and freed (which removes the data file). It lost
                    // every name, so a later entry record sets each name it had.
                    skipped.insert(rec.id);
                    continue;
                }
                if let (Kind::File, Some(d), true) = (rec.kind, rec.data, rec.data_dirty) {
                    // A program of the dead session may still write this data file through
                    // the kernel (FUSE passthrough): it gets a new one (design.md §3).
                    match inner.data.renew(d) {
                        Ok(()) => renewed.push(rec.id),
                        // No room for the copy: its data leaves RAM after the takeover's
                        // flush instead (`finish_renewal`).
                        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                            inner.unrenewed.push(rec.id)
                        }
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!(
                                    "giving file node {} a fresh data file at the takeover",
                                    rec.id.0
                                )
                            });
                        }
                    }
                }
                inner
                    .restore_node(rec)
                    .with_context(|| format!("restoring node {}", rec.id.0))?;
            }
        }
        let restored: Vec<NodeId> = nodes
            .keys()
            .filter(|id| !skipped.contains(id))
            .copied()
            .collect();
        self.recount_disk_links(&restored)?;
        let r = self.replay_entries(entries, &skipped);
        self.lock().replaying = false;
        r?;
        self.reach_restored_nodes()?;
        self.resync_unreached();
        {
            let mut inner = self.lock();
            let nameless: Vec<NodeId> = inner
                .nodes
                .iter()
                .filter(|(_, n)| n.names.is_empty())
                .map(|(id, _)| *id)
                .collect();
            for id in nameless {
                inner.maybe_free(id);
            }
        }
        // A restored directory knows its entries, and so its link count, once populated.
        let dirs: Vec<NodeId> = nodes
            .values()
            .filter(|n| n.kind == Kind::Dir)
            .map(|n| n.id)
            .collect();
        for d in dirs {
            if self.lock().nodes.contains_key(&d) {
                self.ensure_populated(d)
                    .with_context(|| format!("populating node {}", d.0))?;
            }
        }
        self.remove_unused_data()?;
        self.say_renewed(&renewed);
        Ok(())
    }

    /// After the takeover's flush: the files that had no room for a fresh data file at the
    /// replay (design.md §3) are on disk now; their data files leave the store (reads fetch
    /// them from disk again), so that descriptors of the dead session that the kernel may
    /// still write through reach nothing the new session reads. A file the flush could not
    /// make clean gets its fresh data file now, or the takeover fails.
    pub fn finish_renewal(&self) -> anyhow::Result<()> {
        let mut inner = self.lock();
        let ids = std::mem::take(&mut inner.unrenewed);
        let mut dropped = Vec::new();
        for id in ids {
            let path = inner.ram_path(id);
            if inner.drop_stale_data(id) {
                dropped.extend(path);
                continue;
            }
            let Some(d) = inner.nodes.get(&id).and_then(|n| n.cell()).map(|c| c.id()) else {
                continue;
            };
            inner.data.renew(d).with_context(|| {
                format!(
                    "{}: no room to give it a fresh data file at the takeover, and the takeover's flush did not write it (make room in the store's tmpfs and mount again)",
                    crate::human::path(&path.unwrap_or_default())
                )
            })?;
        }
        if !dropped.is_empty() {
            let files: Vec<String> = dropped.iter().map(|p| crate::human::path(p)).collect();
            tracing::warn!(
                files = %crate::human::names(&files),
                "{} of the previous session changed and may still be open, with no room in the store for new data files: written to disk and dropped from RAM; writes through descriptors opened before the takeover are not kept from now on",
                crate::human::count(files.len() as u64, "file")
            );
        }
        Ok(())
    }

    /// One line naming the files that got a fresh data file at the takeover.
    fn say_renewed(&self, renewed: &[NodeId]) {
        let inner = self.lock();
        let paths: Vec<String> = renewed
            .iter()
            .filter_map(|id| inner.ram_path(*id))
            .map(|p| crate::human::path(&p))
            .collect();
        if !paths.is_empty() {
            tracing::warn!(
                files = %crate::human::names(&paths),
                "{} of the previous session changed and may still be open: each has a new data file with what it held at the takeover; writes through descriptors opened before the takeover are not kept from now on",
                crate::human::count(paths.len() as u64, "file")
            );
        }
    }

    fn replay_entries(
        &self,
        entries: Vec<(NodeId, OsString, Option<NodeId>)>,
        skipped: &HashSet<NodeId>,
    ) -> anyhow::Result<()> {
        for (dir, name, child) in entries {
            let child = child.filter(|c| !skipped.contains(c));
            let what = || format!("replaying entry {:?} in node {}", name, dir.0);
            self.ensure_child(dir, &name).with_context(what)?;
            let mut inner = self.lock();
            if let Some(c) = child {
                if !inner.nodes.contains_key(&c) {
                    anyhow::bail!("{}: node {} has no record", what(), c.0);
                }
            }
            let seq = inner.next_seq();
            inner.set_entry(dir, &name, child, seq).with_context(what)?;
        }
        Ok(())
    }

    /// Populates the directories that hold restored nodes on disk, so that every restored
    /// node is in the tree (and so in the next flush).
    fn reach_restored_nodes(&self) -> anyhow::Result<()> {
        for _ in 0..10_000 {
            let dirs: HashSet<NodeId> = self
                .inner
                .lock()
                .pending_origins
                .keys()
                .map(|(d, _)| *d)
                .collect();
            if dirs.is_empty() {
                return Ok(());
            }
            for d in &dirs {
                match self.ensure_populated(*d) {
                    // Not on disk where the log says (a flush recovery salvaged): its
                    // nodes stay without a name here; `resync_unreached` puts them back.
                    Err(e) if e == Errno::ENOENT || e == Errno::ENOTDIR => {
                        tracing::warn!(node = d.0, "a restored directory is not on disk");
                    }
                    r => r.with_context(|| format!("populating node {}", d.0))?,
                }
            }
            let mut inner = self.lock();
            // A name no longer on disk: nothing of it is left to reach.
            inner.pending_origins.retain(|(d, _), _| !dirs.contains(d));
        }
        anyhow::bail!("restored nodes could not be reached")
    }

    /// Deletes data files no node refers to (left by copy-on-write or a dead daemon).
    fn remove_unused_data(&self) -> std::io::Result<()> {
        let inner = self.lock();
        let used: HashSet<DataId> = inner
            .nodes
            .values()
            .filter_map(|n| n.cell().map(|c| c.id()))
            .collect();
        drop(inner);
        for id in self.data.list()? {
            if !used.contains(&id) {
                self.data.remove(id);
            }
        }
        Ok(())
    }
}

impl Inner {
    /// Creates (or, for the root, updates) a node from its latest log record.
    fn restore_node(&mut self, rec: &NodeRec) -> anyhow::Result<()> {
        let content = match rec.kind {
            Kind::File => match rec.data {
                Some(id) => Content::File(Some(DataCell::closed(&self.data, id))),
                None => Content::File(None),
            },
            Kind::Dir if rec.origin.is_some() => Content::Dir(Dir::unpopulated(2)),
            Kind::Dir => Content::Dir(Dir::new_populated()),
            Kind::Symlink => Content::Symlink(rec.symlink.clone().unwrap_or_default()),
            _ => Content::Special,
        };
        let mut attr = rec.attr;
        if let Content::File(Some(cell)) = &content {
            let m = cell
                .metadata()
                .with_context(|| format!("data file {}", cell.id().0))?;
            attr.size = m.len();
            if let Ok(t) = m.modified() {
                attr.mtime = attr.mtime.max(Ts::from_system(t));
            }
        }
        let seq = self.next_seq();
        if rec.id == NodeId::ROOT {
            let root = self.node_mut(NodeId::ROOT)?;
            root.attr = attr;
            if rec.xattrs.is_some() {
                root.xattrs = rec.xattrs.clone().map(|v| v.into_iter().collect());
            }
            root.meta_seq = if rec.meta_dirty { seq } else { 0 };
            if rec.meta_dirty {
                self.dirty_nodes.insert(NodeId::ROOT);
            }
            return Ok(());
        }
        let mut node = Node::new(rec.kind, attr, content);
        node.origin = rec.origin.as_ref().map(|o| Origin {
            parent: o.parent,
            name: o.name.clone(),
        });
        node.disk_ino = rec.disk_ino;
        node.hidden_links = rec.hidden_links;
        node.xattrs = rec.xattrs.clone().map(|v| v.into_iter().collect());
        node.meta_seq = if rec.meta_dirty { seq } else { 0 };
        node.data_seq = if rec.data_dirty { seq } else { 0 };
        let dirty = node.is_dirty();
        self.nodes.insert(rec.id, node);
        self.next_node = self.next_node.max(rec.id.0 + 1);
        if let Some(o) = &rec.origin {
            self.pending_origins
                .insert((o.parent, o.name.clone()), rec.id);
        }
        if let (Some(ino), true) = (rec.disk_ino, rec.hidden_links > 0) {
            self.disk_inos.insert(ino, rec.id);
        }
        if dirty {
            self.dirty_nodes.insert(rec.id);
        }
        Ok(())
    }

    /// Replaces the store log by the current dirty state, relative to `base_gen`.
    pub(crate) fn rewrite_log(&mut self, base_gen: u64) -> std::io::Result<()> {
        let (recs, order) = self.log_records();
        self.log.rewrite(base_gen, &recs)?;
        self.mark_logged(&order);
        Ok(())
    }

    /// Prepares the store log of the state after a flush (design.md §6 step 5).
    pub(crate) fn prepare_log(&mut self, base_gen: u64) -> std::io::Result<Vec<NodeId>> {
        let (recs, order) = self.log_records();
        self.log.prepare_rewrite(base_gen, &recs)?;
        Ok(order)
    }

    pub(crate) fn mark_logged(&mut self, order: &[NodeId]) {
        let epoch = self.log.epoch;
        for id in order {
            if let Some(n) = self.nodes.get_mut(id) {
                n.logged_epoch = epoch;
            }
        }
    }

    /// The records that describe the dirty state, and the nodes they describe.
    fn log_records(&self) -> (Vec<Record>, Vec<NodeId>) {
        let mut order: Vec<NodeId> = Vec::new();
        let mut seen: HashSet<NodeId> = HashSet::new();
        let dirty: Vec<NodeId> = self.dirty_nodes.iter().copied().collect();
        for id in dirty {
            if id == NodeId::ROOT || !self.nodes.get(&id).is_some_and(|n| n.names.is_empty()) {
                self.with_origin_chain(id, &mut order, &mut seen);
            }
        }
        let mut entries = Vec::new();
        for dir in self.dirty_dirs.iter().copied().collect::<Vec<_>>() {
            self.with_origin_chain(dir, &mut order, &mut seen);
            let Some(d) = self.nodes.get(&dir).and_then(|n| n.dir()) else {
                continue;
            };
            let names: Vec<(OsString, Option<NodeId>)> = d
                .dirty
                .keys()
                .map(|name| {
                    let child = match d.entries.get(name).map(|e| e.target) {
                        Some(super::node::Target::Node(c)) => Some(c),
                        _ => None,
                    };
                    (name.clone(), child)
                })
                .collect();
            for (name, child) in names {
                if let Some(c) = child {
                    self.with_origin_chain(c, &mut order, &mut seen);
                }
                entries.push(Record::Entry { dir, name, child });
            }
        }
        let mut recs: Vec<Record> = order
            .iter()
            .filter_map(|id| self.node_record(*id))
            .map(Record::Node)
            .collect();
        recs.extend(entries);
        (recs, order)
    }

    /// Adds a node to `order` after the directories its origin goes through.
    fn with_origin_chain(&self, id: NodeId, order: &mut Vec<NodeId>, seen: &mut HashSet<NodeId>) {
        let mut chain = Vec::new();
        let mut cur = id;
        while !seen.contains(&cur) {
            chain.push(cur);
            match self.nodes.get(&cur).and_then(|n| n.origin.as_ref()) {
                Some(o) if o.parent != cur => cur = o.parent,
                _ => break,
            }
        }
        for id in chain.into_iter().rev() {
            if seen.insert(id) {
                order.push(id);
            }
        }
    }
}
