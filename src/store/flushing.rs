//! FUSE mode's flush planner, and the store's transitions around a flush (design.md §6
//! steps 1, 3 and 5): the dirty names and nodes at one instant become an ordered list of
//! steps and the objects to stage (`snapshot`); once the flush commits, the store notes
//! where everything is (`rebase`, then `collect_garbage`), or `undo`es that if the commit
//! fails. These are the only ways `flush/` changes the store: it never sees `Inner`'s
//! fields.

use crate::backing::{Loc, Meta};
use crate::flush::{Journal, Step};
use crate::store::data::{DataCell, FrozenData};
use crate::store::inner::Inner;
use crate::store::node::{Content, DirtyName, Origin, Target};
use crate::store::types::{DataId, Kind, NodeId};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the stage gets for a node.
pub(crate) enum StageContent {
    File(FrozenData),
    Dir,
    Symlink(Vec<u8>),
    Special(Kind, u64),
}

pub(crate) struct StageItem {
    pub node: NodeId,
    pub loc: Loc,
    pub content: StageContent,
    pub meta: Meta,
}

/// A step whose inode is known only once the node is staged.
pub(crate) struct DraftStep {
    pub step: Step,
    pub staged: Option<NodeId>,
}

/// State `rebase` changed, to put back if the commit then fails.
/// A node's disk-related fields: origin, disk inode, hidden links, meta and data seqs.
type SavedNode = (NodeId, Option<Origin>, Option<u64>, u32, u64, u64);

pub(crate) struct Undo {
    nodes: Vec<SavedNode>,
    dirty: Vec<(NodeId, BTreeMap<OsString, DirtyName>)>,
    sets: (BTreeSet<NodeId>, BTreeSet<NodeId>),
    disk_inos: HashMap<u64, NodeId>,
    times: (Option<std::time::SystemTime>, Option<std::time::SystemTime>),
}

pub(crate) struct Draft {
    pub generation: u64,
    pub seq: u64,
    pub stage: Vec<StageItem>,
    pub steps: Vec<DraftStep>,
    pub syncs: Vec<Loc>,
    pub frozen: Vec<(Arc<DataCell>, DataId)>,
    pub files: u64,
    pub bytes: u64,
    /// (dir, name, node wanted there) for every name the flush writes.
    names: Vec<(NodeId, OsString, Option<NodeId>)>,
    /// The disk inode of each node wanted somewhere, as of the snapshot (nodes may be freed
    /// before the commit; what the flush put on disk is known from here and the stage).
    want_inos: HashMap<NodeId, u64>,
    /// Nodes whose disk location changes: their first name at the snapshot, or none.
    moved: HashMap<NodeId, Option<(NodeId, OsString)>>,
    staged: BTreeSet<NodeId>,
    dirty_nodes: Vec<NodeId>,
    /// Files left out because they kept changing while copied (design.md §4.1): their data
    /// stays dirty, and so do the names in `kept` (emptied on disk for a new busy file).
    busy: BTreeSet<NodeId>,
    kept: HashSet<(NodeId, OsString)>,
}

impl Draft {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.stage.is_empty()
    }

    /// The journal, with the inodes the staging gave.
    pub fn journal(&self, inos: &HashMap<NodeId, u64>, gen_ino: u64) -> Journal {
        let steps = self
            .steps
            .iter()
            .map(|d| {
                let mut s = d.step.clone();
                let ino = match d.staged {
                    Some(n) => inos.get(&n).copied().unwrap_or(0),
                    None => return s,
                };
                if let Step::Rename { ino: i, .. } | Step::Link { ino: i, .. } = &mut s {
                    *i = ino;
                }
                s
            })
            .chain(std::iter::once(Step::Rename {
                from: Loc::side(Path::new(&Journal::stage_dir(self.generation)).join("generation")),
                to: Loc::side("generation"),
                ino: gen_ino,
            }))
            .collect();
        Journal {
            generation: self.generation,
            steps,
            syncs: self.syncs.clone(),
        }
    }
}

/// One name the flush writes, with its paths before and after.
pub(super) struct Change {
    pub dir: NodeId,
    pub name: OsString,
    pub old: Option<(NodeId, u64)>,
    pub want: Option<NodeId>,
    pre: Option<PathBuf>,
    post: Option<PathBuf>,
}

fn depth(p: &Path) -> usize {
    p.components().count()
}

impl Inner {
    fn reachable(&self, id: NodeId) -> bool {
        id == NodeId::ROOT || self.nodes.get(&id).is_some_and(|n| !n.names.is_empty())
    }

    fn post_path(&self, id: NodeId) -> Option<PathBuf> {
        if self.reachable(id) {
            self.ram_path(id)
        } else {
            None
        }
    }

    /// Plans flush `generation` of everything dirty now, and freezes the data it will read.
    pub(crate) fn snapshot(&mut self, generation: u64) -> Draft {
        let stage = PathBuf::from(Journal::stage_dir(generation));
        self.since_snapshot = None;
        let mut changes = self.dirty_changes();
        let mut staged: BTreeSet<NodeId> = self.staged_nodes(&changes);
        let (mut early, busy) = self.snapshot_pinned(&staged);
        let kept = self.leave_out_busy(&busy, &mut staged, &mut changes);
        self.in_flight = staged.clone();
        // A node that gets a new inode must get it under every name it has.
        let listed: HashSet<(NodeId, OsString)> =
            changes.iter().map(|c| (c.dir, c.name.clone())).collect();
        for &x in &staged {
            let Some(n) = self.nodes.get(&x) else {
                continue;
            };
            let Some(ino) = n.disk_ino else { continue };
            for (p, name) in n.names.clone() {
                if !listed.contains(&(p, name.clone())) {
                    let pre = self.disk_path(p);
                    let post = self.post_path(p);
                    changes.push(Change {
                        dir: p,
                        name,
                        old: Some((x, ino)),
                        want: Some(x),
                        pre,
                        post,
                    });
                }
            }
        }
        let mut d = Draft {
            generation,
            seq: self.seq,
            stage: Vec::new(),
            steps: Vec::new(),
            syncs: Vec::new(),
            frozen: Vec::new(),
            files: 0,
            bytes: 0,
            names: changes
                .iter()
                .map(|c| (c.dir, c.name.clone(), c.want))
                .collect(),
            want_inos: changes
                .iter()
                .filter_map(|c| c.want)
                .filter_map(|w| Some((w, self.nodes.get(&w)?.disk_ino?)))
                .collect(),
            moved: HashMap::new(),
            staged: staged.clone(),
            dirty_nodes: self.dirty_nodes.iter().copied().collect(),
            busy,
            kept,
        };
        let mut touched_dirs: BTreeSet<NodeId> = BTreeSet::new();
        let available = self.plan_evictions(&changes, &staged, &stage, &mut d, &mut touched_dirs);
        self.plan_placements(
            &changes,
            &staged,
            &stage,
            available,
            &mut d,
            &mut touched_dirs,
        );
        self.plan_meta(&staged, &touched_dirs, &mut d);
        self.plan_stage(&staged, &stage, &mut early, &mut d);
        // After the flush every name a moved or rewritten node has now holds its inode on
        // disk: its first name is its origin (design.md §6 step 5).
        let firsts: Vec<NodeId> = d.moved.keys().chain(d.staged.iter()).copied().collect();
        for x in firsts {
            let first = self.nodes.get(&x).and_then(|n| n.names.first().cloned());
            d.moved.insert(x, first);
        }
        d
    }

    /// Every dirty name, with who is on disk there and who should be.
    fn dirty_changes(&self) -> Vec<Change> {
        let mut out = Vec::new();
        for &dir in &self.dirty_dirs {
            let Some(dn) = self.nodes.get(&dir).and_then(|n| n.dir()) else {
                continue;
            };
            let pre = self.disk_path(dir);
            let post = self.post_path(dir);
            if pre.is_none() && post.is_none() {
                continue;
            }
            for (name, dirty) in &dn.dirty {
                let want = match dn.entries.get(name).map(|e| e.target) {
                    Some(Target::Node(x)) => Some(x),
                    _ => None,
                };
                out.push(Change {
                    dir,
                    name: name.clone(),
                    old: dirty.old,
                    want,
                    pre: pre.clone(),
                    post: post.clone(),
                });
            }
        }
        out
    }

    /// Nodes the flush writes anew: new ones, and files whose data changed.
    fn staged_nodes(&self, changes: &[Change]) -> BTreeSet<NodeId> {
        let candidates = changes
            .iter()
            .filter_map(|c| c.want)
            .chain(self.dirty_nodes.iter().copied());
        candidates
            .filter(|x| {
                let Some(n) = self.nodes.get(x) else {
                    return false;
                };
                *x != NodeId::ROOT
                    && !n.names.is_empty()
                    && (n.origin.is_none() || (n.kind == Kind::File && n.data_seq != 0))
            })
            .collect()
    }

    /// Step 3.1: move every disk occupant that must go into the stage, deepest first.
    /// Returns where each evicted node that may be placed again now is.
    fn plan_evictions(
        &self,
        changes: &[Change],
        staged: &BTreeSet<NodeId>,
        stage: &Path,
        d: &mut Draft,
        touched: &mut BTreeSet<NodeId>,
    ) -> HashMap<NodeId, Vec<Loc>> {
        let mut evictions: Vec<(usize, Step)> = Vec::new();
        let mut available: HashMap<NodeId, Vec<Loc>> = HashMap::new();
        for c in changes {
            let Some((o, ino)) = c.old else { continue };
            if c.want == Some(o) {
                continue;
            }
            let Some(pre) = &c.pre else {
                tracing::warn!(name = ?c.name, "a changed name has no place on disk; skipped");
                continue;
            };
            let to = Loc::Side(stage.join(format!("e{}", evictions.len())));
            evictions.push((
                depth(pre) + 1,
                Step::Rename {
                    from: Loc::Target(pre.join(&c.name)),
                    to: to.clone(),
                    ino,
                },
            ));
            if !staged.contains(&o) {
                available.entry(o).or_default().push(to);
            }
            d.moved.entry(o).or_insert(None);
            touched.insert(c.dir);
        }
        evictions.sort_by_key(|e| std::cmp::Reverse(e.0));
        d.steps.extend(
            evictions
                .into_iter()
                .map(|(_, step)| DraftStep { step, staged: None }),
        );
        available
    }

    /// Steps 3.2: every changed name gets its node, shallowest first; extra names of a node
    /// are hard links made once every node is in place.
    fn plan_placements(
        &self,
        changes: &[Change],
        staged: &BTreeSet<NodeId>,
        stage: &Path,
        mut available: HashMap<NodeId, Vec<Loc>>,
        d: &mut Draft,
        touched: &mut BTreeSet<NodeId>,
    ) {
        let listed: HashSet<(NodeId, &OsString)> =
            changes.iter().map(|c| (c.dir, &c.name)).collect();
        let mut renames: Vec<(usize, DraftStep)> = Vec::new();
        let mut links: Vec<(NodeId, Loc)> = Vec::new();
        let mut placed: HashMap<NodeId, Loc> = HashMap::new();
        for c in changes {
            let (Some(x), Some(post)) = (c.want, &c.post) else {
                continue;
            };
            let is_staged = staged.contains(&x);
            if c.old.map(|o| o.0) == Some(x) && !is_staged {
                continue;
            }
            let to = Loc::Target(post.join(&c.name));
            touched.insert(c.dir);
            let ino = self.nodes.get(&x).and_then(|n| n.disk_ino).unwrap_or(0);
            let from = if is_staged {
                (!placed.contains_key(&x)).then(|| Loc::Side(stage.join(format!("s{}", x.0))))
            } else {
                available.get_mut(&x).and_then(|v| v.pop())
            };
            match from {
                Some(from) => {
                    let staged_id = is_staged.then_some(x);
                    renames.push((
                        depth(post) + 1,
                        DraftStep {
                            step: Step::Rename {
                                from,
                                to: to.clone(),
                                ino,
                            },
                            staged: staged_id,
                        },
                    ));
                    placed.entry(x).or_insert(to);
                }
                None => links.push((x, to)),
            }
        }
        renames.sort_by_key(|r| r.0);
        d.steps.extend(renames.into_iter().map(|(_, s)| s));
        for (k, (x, to)) in links.into_iter().enumerate() {
            let source = placed
                .get(&x)
                .cloned()
                .or_else(|| self.unchanged_name(x, &listed));
            let Some(from) = source else {
                tracing::error!(
                    node = x.0,
                    "no place on disk to link a new name from; skipped"
                );
                continue;
            };
            let tmp = Loc::Side(stage.join(format!("l{k}")));
            let ino = self.nodes.get(&x).and_then(|n| n.disk_ino).unwrap_or(0);
            let s = staged.contains(&x).then_some(x);
            d.steps.push(DraftStep {
                step: Step::Link {
                    from,
                    to: tmp.clone(),
                    ino,
                },
                staged: s,
            });
            d.steps.push(DraftStep {
                step: Step::Rename { from: tmp, to, ino },
                staged: s,
            });
        }
    }

    /// A name of `x` that the flush leaves alone (so it holds x's inode), as a disk location.
    fn unchanged_name(&self, x: NodeId, listed: &HashSet<(NodeId, &OsString)>) -> Option<Loc> {
        let n = self.nodes.get(&x)?;
        n.names
            .iter()
            .find(|(p, name)| !listed.contains(&(*p, name)))
            .and_then(|(p, name)| Some(Loc::Target(self.post_path(*p)?.join(name))))
    }

    /// Step 3.3: attributes changed in place (deepest first), then the times of directories
    /// whose entries the flush changed, then the syncs.
    fn plan_meta(&self, staged: &BTreeSet<NodeId>, touched: &BTreeSet<NodeId>, d: &mut Draft) {
        let mut metas: Vec<(usize, Step)> = Vec::new();
        let mut with_meta: HashSet<NodeId> = HashSet::new();
        for &id in &self.dirty_nodes {
            let Some(n) = self.nodes.get(&id) else {
                continue;
            };
            let needs = if staged.contains(&id) {
                n.kind == Kind::Dir
            } else {
                n.meta_seq != 0
            };
            if !needs {
                continue;
            }
            let Some(path) = self.post_path(id) else {
                continue;
            };
            metas.push((
                depth(&path),
                Step::Meta {
                    at: Loc::Target(path),
                    kind: n.kind,
                    meta: self.meta_of(id),
                    // A staged object gets its inode only when staged.
                    ino: n.disk_ino.filter(|_| !staged.contains(&id)),
                },
            ));
            with_meta.insert(id);
        }
        metas.sort_by_key(|m| std::cmp::Reverse(m.0));
        d.steps.extend(
            metas
                .into_iter()
                .map(|(_, step)| DraftStep { step, staged: None }),
        );
        for &dir in touched {
            let Some(path) = self.post_path(dir) else {
                continue;
            };
            if !with_meta.contains(&dir) {
                let a = self.nodes[&dir].attr;
                d.steps.push(DraftStep {
                    step: Step::Times {
                        at: Loc::Target(path.clone()),
                        atime: a.atime,
                        mtime: a.mtime,
                    },
                    staged: None,
                });
            }
            d.syncs.push(Loc::Target(path));
        }
    }

    fn meta_of(&self, id: NodeId) -> Meta {
        let n = &self.nodes[&id];
        Meta {
            mode: n.attr.mode,
            uid: n.attr.uid,
            gid: n.attr.gid,
            atime: n.attr.atime,
            mtime: n.attr.mtime,
            xattrs: n
                .xattrs
                .as_ref()
                .map(|x| x.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        }
    }

    /// Step 2's input: what to create in the stage, freezing file data (design.md §4).
    fn plan_stage(
        &mut self,
        staged: &BTreeSet<NodeId>,
        stage: &Path,
        early: &mut HashMap<NodeId, FrozenData>,
        d: &mut Draft,
    ) {
        for &x in staged {
            if !early.contains_key(&x) {
                self.refresh_from_data(x);
            }
            let Some(n) = self.nodes.get(&x) else {
                continue;
            };
            let mut meta = self.meta_of(x);
            let content = match &n.content {
                Content::File(Some(cell)) => {
                    let frozen = match early.remove(&x) {
                        Some(f) => f,
                        // Every pinned file was copied or left out by `snapshot_pinned`, and
                        // nothing is pinned meanwhile (the store lock is held).
                        None if cell.is_pinned() => {
                            tracing::error!(
                                node = x.0,
                                "a file the kernel writes was not copied; skipped"
                            );
                            continue;
                        }
                        None => cell.freeze(),
                    };
                    d.frozen.push((cell.clone(), frozen.id));
                    d.files += 1;
                    d.bytes += n.attr.size;
                    StageContent::File(frozen)
                }
                Content::File(None) => {
                    tracing::error!(node = x.0, "a changed file has no data in RAM; skipped");
                    continue;
                }
                Content::Dir(_) => {
                    // Made 0700 so that the flush can fill it; its mode comes last (plan_meta).
                    meta.mode = 0o700;
                    meta.xattrs = None;
                    StageContent::Dir
                }
                Content::Symlink(t) => StageContent::Symlink(t.clone()),
                Content::Special => StageContent::Special(n.kind, n.attr.rdev),
            };
            if meta.xattrs.is_none() && n.kind != Kind::Dir {
                meta.xattrs = Some(Vec::new());
            }
            d.stage.push(StageItem {
                node: x,
                loc: Loc::Side(stage.join(format!("s{}", x.0))),
                content,
                meta,
            });
        }
    }

    /// The flush is committing (design.md §6 step 5): what it wrote becomes clean, and nodes
    /// are where it put them. Returns what to put back should the commit fail.
    fn rebase(&mut self, d: &Draft, inos: &HashMap<NodeId, u64>) -> Undo {
        let undo = self.save(d);
        for (id, first) in &d.moved {
            let origin = first.as_ref().map(|(p, name)| Origin {
                parent: *p,
                name: name.clone(),
            });
            if let Some(n) = self.nodes.get_mut(id) {
                // Without a name in RAM the node may still be on disk under names not met
                // yet (hard links): then it keeps its inode, to be met there.
                if origin.is_none() && n.hidden_links == 0 {
                    n.disk_ino = None;
                }
                n.origin = origin;
            }
        }
        for &x in &d.staged {
            let Some(n) = self.nodes.get_mut(&x) else {
                continue;
            };
            if let Some(old) = n.disk_ino {
                self.disk_inos.remove(&old);
            }
            n.disk_ino = inos.get(&x).copied();
            n.hidden_links = 0;
        }
        for (dir, name, want) in &d.names {
            // Staged nodes got a new inode; the others are where they were.
            let want_ino = want.and_then(|w| inos.get(&w).or(d.want_inos.get(&w)).map(|i| (w, *i)));
            let Some(dn) = self.nodes.get_mut(dir).and_then(|n| n.dir_mut()) else {
                continue;
            };
            if let Some(dirty) = dn.dirty.get_mut(name) {
                if d.kept.contains(&(*dir, name.clone())) {
                    // A busy new file's name: what the disk has there now, if it kept it.
                    if want.is_none() {
                        dirty.old = None;
                    }
                } else if dirty.seq <= d.seq {
                    dn.dirty.remove(name);
                } else {
                    dirty.old = want_ino;
                }
            }
        }
        let dirs: Vec<NodeId> = d.names.iter().map(|n| n.0).collect();
        for dir in dirs {
            if self
                .nodes
                .get(&dir)
                .and_then(|n| n.dir())
                .is_some_and(|dn| dn.dirty.is_empty())
            {
                self.dirty_dirs.remove(&dir);
            }
        }
        for &id in &d.dirty_nodes {
            let Some(n) = self.nodes.get_mut(&id) else {
                continue;
            };
            if n.meta_seq <= d.seq {
                n.meta_seq = 0;
            }
            // A file open for writing with passthrough stays dirty (design.md §4.1).
            if n.data_seq <= d.seq && n.writers == 0 && !d.busy.contains(&id) {
                n.data_seq = 0;
            }
            if !n.is_dirty() || n.names.is_empty() && id != NodeId::ROOT {
                self.dirty_nodes.remove(&id);
            }
        }
        self.dirty_since = self.since_snapshot;
        undo
    }

    fn save(&self, d: &Draft) -> Undo {
        let ids: BTreeSet<NodeId> = d
            .moved
            .keys()
            .chain(d.staged.iter())
            .chain(d.dirty_nodes.iter())
            .copied()
            .collect();
        let nodes = ids
            .into_iter()
            .filter_map(|id| {
                let n = self.nodes.get(&id)?;
                Some((
                    id,
                    n.origin.clone(),
                    n.disk_ino,
                    n.hidden_links,
                    n.meta_seq,
                    n.data_seq,
                ))
            })
            .collect();
        let dirs: BTreeSet<NodeId> = d.names.iter().map(|n| n.0).collect();
        let dirty = dirs
            .into_iter()
            .filter_map(|dir| Some((dir, self.nodes.get(&dir)?.dir()?.dirty.clone())))
            .collect();
        Undo {
            nodes,
            dirty,
            sets: (self.dirty_nodes.clone(), self.dirty_dirs.clone()),
            disk_inos: self.disk_inos.clone(),
            times: (self.dirty_since, self.since_snapshot),
        }
    }

    /// The commit failed: the store is put back as it was before `rebase`.
    fn undo(&mut self, u: Undo) {
        for (id, origin, disk_ino, hidden, meta_seq, data_seq) in u.nodes {
            if let Some(n) = self.nodes.get_mut(&id) {
                n.origin = origin;
                n.disk_ino = disk_ino;
                n.hidden_links = hidden;
                n.meta_seq = meta_seq;
                n.data_seq = data_seq;
            }
        }
        for (dir, dirty) in u.dirty {
            if let Some(dn) = self.nodes.get_mut(&dir).and_then(|n| n.dir_mut()) {
                dn.dirty = dirty;
            }
        }
        (self.dirty_nodes, self.dirty_dirs) = u.sets;
        self.disk_inos = u.disk_inos;
        (self.dirty_since, self.since_snapshot) = u.times;
    }

    /// After a commit: forget nodes nothing refers to any more.
    fn collect_garbage(&mut self, d: &Draft) {
        let candidates: Vec<NodeId> = d
            .moved
            .keys()
            .chain(d.dirty_nodes.iter())
            .copied()
            .collect();
        for id in candidates {
            self.maybe_free(id);
        }
    }
}

/// The store's side of a flush's commit point (design.md §6 steps 5-6).
impl Inner {
    /// Rebases the store onto flush `d` (its staged nodes got inodes `inos`) and writes the
    /// store's new log beside the old one. On error nothing is changed.
    pub(crate) fn prepare_commit(
        &mut self,
        d: &Draft,
        inos: &HashMap<NodeId, u64>,
    ) -> std::io::Result<(Undo, Vec<NodeId>)> {
        let undo = self.rebase(d, inos);
        match self.prepare_log(d.generation) {
            Ok(order) => Ok((undo, order)),
            Err(e) => {
                self.undo(undo);
                self.log.abort_rewrite();
                Err(e)
            }
        }
    }

    /// The flush that took the last snapshot ended, committed or not: the nodes it wrote
    /// anew that programs removed meanwhile are freed if nothing (no origin now) keeps them.
    pub(crate) fn end_flush(&mut self) {
        for id in std::mem::take(&mut self.in_flight) {
            self.maybe_free(id);
        }
    }

    /// The journal could not be written: back to before `prepare_commit`.
    pub(crate) fn abort_commit(&mut self, undo: Undo) {
        self.undo(undo);
        self.log.abort_rewrite();
    }

    /// The journal is written: the new log replaces the old one; what the flush made
    /// unreachable goes.
    pub(crate) fn finish_commit(&mut self, d: &Draft, order: &[NodeId]) {
        if let Err(e) = self.log.commit_rewrite() {
            tracing::error!(error = %e, "switching the store log failed; a takeover would use log.new");
        }
        self.mark_logged(order);
        self.collect_garbage(d);
    }
}
