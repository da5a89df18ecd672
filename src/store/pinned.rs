//! The files the kernel writes itself with FUSE passthrough (pinned data cells), at a
//! flush: copied as of one instant, and those that kept changing left out of it
//! (design.md §4.1). Part of FUSE mode's planner (`flushing.rs`).

use super::data::{DataCell, DataDir, FrozenData, Sig};
use super::flushing::Change;
use super::inner::Inner;
use super::types::NodeId;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::sync::Arc;

impl Inner {
    /// Copies the files the kernel writes (pinned cells) among `staged`, before anything is
    /// planned, so that all copies hold the files at one instant (design.md §4.1): each is
    /// copied, then all are checked again; one that changed since its copy began is copied
    /// again, and the round repeats until a check finds none changed. Files that changed in
    /// every round are busy: the flush leaves them out.
    pub(super) fn snapshot_pinned(
        &mut self,
        staged: &BTreeSet<NodeId>,
    ) -> (HashMap<NodeId, FrozenData>, BTreeSet<NodeId>) {
        let mut todo: Vec<(NodeId, Arc<DataCell>)> = Vec::new();
        for &x in staged {
            let Some(cell) = self.nodes.get(&x).and_then(|n| n.cell()).cloned() else {
                continue;
            };
            if cell.is_pinned() {
                self.refresh_from_data(x);
                todo.push((x, cell));
            }
        }
        let mut copies: HashMap<NodeId, (Arc<DataCell>, FrozenData, Sig)> = HashMap::new();
        let discard = |dir: &DataDir, f: FrozenData| dir.remove(f.id);
        let mut broken = false;
        for round in 0..super::data::SNAPSHOT_TRIES {
            if todo.is_empty() || broken {
                break;
            }
            if round > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1 << round.min(5)));
            }
            let mut failed = Vec::new();
            for (x, cell) in std::mem::take(&mut todo) {
                if broken {
                    failed.push((x, cell));
                    continue;
                }
                match cell.copy_pinned() {
                    Ok(Some((f, sig))) => {
                        copies.insert(x, (cell, f, sig));
                    }
                    Ok(None) => failed.push((x, cell)),
                    Err(e) => {
                        // No room for copies, most likely: the rest waits for a later flush.
                        tracing::warn!(error = %e, "copying a file for a flush; left for a later flush");
                        failed.push((x, cell));
                        broken = true;
                    }
                }
            }
            // The check: every copy still equal to its file, so all hold this instant.
            let changed: Vec<NodeId> = copies
                .iter()
                .filter(|(_, (cell, _, sig))| cell.sig() != Some(*sig))
                .map(|(x, _)| *x)
                .collect();
            for x in changed {
                if let Some((cell, f, _)) = copies.remove(&x) {
                    discard(&self.data, f);
                    failed.push((x, cell));
                }
            }
            todo = failed;
        }
        let busy: BTreeSet<NodeId> = todo.iter().map(|(x, _)| *x).collect();
        let paths = busy
            .iter()
            .filter_map(|x| self.ram_path(*x))
            .map(|p| crate::human::path(&p))
            .collect::<Vec<_>>();
        for p in &paths {
            tracing::warn!(path = %p, "a file kept changing while the flush copied it; its previous version stays on disk until a later flush");
        }
        self.data.set_busy_files(paths);
        let early = copies.into_iter().map(|(x, (_, f, _))| (x, f)).collect();
        (early, busy)
    }

    /// Leaves busy files out of the flush: one already on disk keeps its disk version (it is
    /// not staged; renames of it still happen); a new one is not placed: each of its names
    /// keeps what the disk has there, or is emptied when that must move elsewhere. The names
    /// left so stay dirty (`kept`).
    pub(super) fn leave_out_busy(
        &self,
        busy: &BTreeSet<NodeId>,
        staged: &mut BTreeSet<NodeId>,
        changes: &mut Vec<Change>,
    ) -> HashSet<(NodeId, OsString)> {
        let mut kept = HashSet::new();
        if busy.is_empty() {
            return kept;
        }
        for x in busy {
            staged.remove(x);
        }
        let is_new = |x: NodeId| self.nodes.get(&x).is_some_and(|n| n.origin.is_none());
        let wanted: HashSet<NodeId> = changes.iter().filter_map(|c| c.want).collect();
        changes.retain_mut(|c| {
            if !c.want.is_some_and(|x| busy.contains(&x) && is_new(x)) {
                return true;
            }
            kept.insert((c.dir, c.name.clone()));
            match c.old {
                // The disk's occupant is needed elsewhere (or rewritten): the name is emptied.
                Some((o, _)) if wanted.contains(&o) || staged.contains(&o) => {
                    c.want = None;
                    true
                }
                // Nothing on disk, or an occupant that may stay: the name is left as it is.
                _ => false,
            }
        });
        kept
    }
}
