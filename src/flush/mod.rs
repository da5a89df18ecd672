//! Writing the RAM tree back to the disk copy, all or nothing (design.md §6), and disk
//! recovery after a crash (design.md §7).

mod check;
mod clear;
mod conflict;
mod fsync;
mod journal;
mod recover;

pub use check::check;
pub use fsync::Synced;
pub use journal::{Journal, Step};
pub use recover::{Recovered, read_generation, recover_disk};

use crate::backing::{Loc, NewContent};
use crate::store::Store;
use crate::store::flushing::{Draft, StageContent};
use crate::store::types::NodeId;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What one flush did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// The disk generation after the flush.
    pub generation: u64,
    /// Objects written anew (files with their data, new directories, links...).
    pub files: u64,
    pub bytes: u64,
    /// Steps applied to the disk copy.
    pub steps: u64,
    pub took: Duration,
}

/// The outcome of the last flush attempt, for status.
#[derive(Clone, Debug)]
pub struct LastFlush {
    pub at: SystemTime,
    pub result: Result<FlushReport, String>,
}

/// What a flusher of either mode knows of the disk copy and of its flushes.
#[derive(Default)]
pub struct Ledger(Mutex<Entries>);

#[derive(Default)]
struct Entries {
    disk_gen: u64,
    /// A committed flush whose steps could not all be applied yet.
    pending: Option<Journal>,
    last: Option<LastFlush>,
    /// Failed attempts since the last success.
    failures: u32,
    bytes_flushed: u64,
    /// Applied flushes whose journal or stage could not be removed yet.
    unfinished: Vec<u64>,
    /// A committed flush that had to be salvaged (recover::salvage), for status.
    salvaged: Option<String>,
}

impl Ledger {
    pub fn new(disk_gen: u64) -> Ledger {
        Ledger(Mutex::new(Entries {
            disk_gen,
            ..Default::default()
        }))
    }

    /// The generation on disk (or committed, for FUSE mode's rebase).
    pub fn disk_gen(&self) -> u64 {
        self.0.lock().disk_gen
    }

    pub fn set_disk_gen(&self, generation: u64) {
        self.0.lock().disk_gen = generation;
    }

    pub fn last(&self) -> Option<LastFlush> {
        self.0.lock().last.clone()
    }

    pub fn failures(&self) -> u32 {
        self.0.lock().failures
    }

    pub fn bytes_flushed(&self) -> u64 {
        self.0.lock().bytes_flushed
    }

    pub fn pending(&self) -> Option<Journal> {
        self.0.lock().pending.clone()
    }

    /// Step 8 of flush `generation`; what cannot be removed now is tried again before the
    /// next flush (a journal older than the disk generation is never run again).
    pub fn finish(&self, b: &dyn crate::backing::Backing, generation: u64) {
        if !finish(b, generation) {
            self.0.lock().unfinished.push(generation);
        }
    }

    fn take_unfinished(&self) -> Vec<u64> {
        std::mem::take(&mut self.0.lock().unfinished)
    }

    pub fn salvaged(&self) -> Option<String> {
        self.0.lock().salvaged.clone()
    }

    pub fn set_salvaged(&self, msg: String) {
        self.0.lock().salvaged = Some(msg);
    }

    pub fn set_pending(&self, j: Option<Journal>) {
        self.0.lock().pending = j;
    }

    /// Logs a flush's outcome and counts it (failures in a row, bytes in all); status shows
    /// it as the last flush.
    pub fn record(&self, r: &anyhow::Result<FlushReport>) {
        let mut st = self.0.lock();
        match r {
            Ok(rep) => {
                st.failures = 0;
                st.bytes_flushed += rep.bytes;
                if rep.steps > 0 {
                    tracing::info!(
                        generation = rep.generation,
                        files = rep.files,
                        bytes = rep.bytes,
                        ms = rep.took.as_millis() as u64,
                        phase = "flushed",
                        "flushed"
                    );
                }
            }
            Err(e) => {
                st.failures += 1;
                tracing::warn!(failures = st.failures, error = %format!("{e:#}"), "flush failed; the changes stay in RAM and will be retried");
            }
        }
        st.last = Some(LastFlush {
            at: SystemTime::now(),
            result: r.as_ref().cloned().map_err(|e| format!("{e:#}")),
        });
    }
}

/// Flushes one store. One flush runs at a time.
pub struct Flusher {
    store: Arc<Store>,
    running: Mutex<()>,
    ledger: Ledger,
    /// Disk inodes of the files this flusher staged (a leaf lock): an fsync may write
    /// these in place (design.md §6.3).
    own: Mutex<HashSet<u64>>,
    /// Bytes written and to write by the flush under way, if one is (`asdfs status`).
    in_progress: Mutex<Option<(u64, u64)>>,
    /// Plans that failed their check in a row (a leaf lock).
    rejected: Mutex<u32>,
}

/// A plan that failed its check and was not committed: the target paths its steps concern.
#[derive(Debug)]
pub struct PlanRejected(pub Vec<std::path::PathBuf>);

impl std::fmt::Display for PlanRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("checking the flush plan (not committed)")
    }
}

impl Flusher {
    pub fn new(store: Arc<Store>, disk_gen: u64) -> Flusher {
        Flusher {
            store,
            running: Mutex::new(()),
            ledger: Ledger::new(disk_gen),
            own: Mutex::new(HashSet::new()),
            in_progress: Mutex::new(None),
            rejected: Mutex::new(0),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Writes everything that changed to the disk copy; returns when it is durable.
    pub fn flush(&self) -> anyhow::Result<FlushReport> {
        self.flush_reporting(&|_, _| {})
    }

    /// `flush`, reporting the bytes written to the stage as it goes.
    pub fn flush_reporting(&self, progress: &dyn Fn(u64, u64)) -> anyhow::Result<FlushReport> {
        let _one = self.running.lock();
        self.flush_holding(progress)
    }

    /// `flush_reporting`, with `running` held.
    fn flush_holding(&self, progress: &dyn Fn(u64, u64)) -> anyhow::Result<FlushReport> {
        let started = Instant::now();
        *self.in_progress.lock() = Some((0, 0));
        let track = |done: u64, total: u64| {
            *self.in_progress.lock() = Some((done, total));
            progress(done, total);
        };
        let r = self.flush_locked(started, &track);
        *self.in_progress.lock() = None;
        self.ledger.record(&r);
        r
    }

    /// (bytes written, bytes to write) of the flush under way, if one is.
    pub fn in_progress(&self) -> Option<(u64, u64)> {
        *self.in_progress.lock()
    }

    fn flush_locked(
        &self,
        started: Instant,
        progress: &dyn Fn(u64, u64),
    ) -> anyhow::Result<FlushReport> {
        self.finish_pending()?;
        self.prepare()?;
        let generation = self.ledger.disk_gen() + 1;
        let draft = self.store.lock().snapshot(generation);
        if draft.is_empty() {
            self.store.lock().end_flush();
            return Ok(FlushReport {
                generation: generation - 1,
                took: started.elapsed(),
                ..Default::default()
            });
        }
        let r = self.write(&draft, started, progress);
        self.store.lock().end_flush();
        self.thaw(&draft);
        match r
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<PlanRejected>())
        {
            Some(p) => self.rejected_plan(&p.0),
            None => *self.rejected.lock() = 0,
        }
        r
    }

    fn write(
        &self,
        draft: &Draft,
        started: Instant,
        progress: &dyn Fn(u64, u64),
    ) -> anyhow::Result<FlushReport> {
        let b = self.store.backing.clone();
        let stage = Loc::side(Journal::stage_dir(draft.generation));
        let (inos, gen_ino) = match self.stage(draft, progress) {
            Ok(x) => x,
            Err(e) => {
                let _ = b.remove(&stage);
                return Err(e.context("staging the flush"));
            }
        };
        let journal = draft.journal(&inos, gen_ino);
        let _writers = self.store.disk_writers.lock();
        if tracing::enabled!(tracing::Level::DEBUG) {
            for s in &journal.steps {
                tracing::debug!(generation = draft.generation, step = ?s, "plan");
            }
        }
        let gate = self.store.disk_gate.write();
        let mut hook = StoreCommit {
            store: &self.store,
            inner: None,
            draft,
            inos: &inos,
            undo: None,
            order: Vec::new(),
        };
        let r = commit_and_apply(b.as_ref(), &self.ledger, journal.clone(), &mut hook);
        drop(gate);
        r?;
        self.note_own(inos.values().copied());
        self.ledger.finish(b.as_ref(), draft.generation);
        Ok(FlushReport {
            generation: draft.generation,
            files: draft.files,
            bytes: draft.bytes,
            steps: journal.steps.len() as u64,
            took: started.elapsed(),
        })
    }

    /// Step 2: writes the new objects into the stage and makes them durable.
    fn stage(
        &self,
        d: &Draft,
        progress: &dyn Fn(u64, u64),
    ) -> anyhow::Result<(HashMap<NodeId, u64>, u64)> {
        let b = &self.store.backing;
        let stage = Path::new(&Journal::stage_dir(d.generation)).to_path_buf();
        match b.remove(&Loc::Side(stage.clone())) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                return Err(
                    anyhow::Error::new(e).context("removing the stage an earlier attempt left")
                );
            }
            _ => {}
        }
        b.make_dir(&Loc::Side(stage.clone()))?;
        let mut inos = HashMap::new();
        let mut made = Vec::new();
        let mut done = 0u64;
        for item in &d.stage {
            let opened;
            let content = match &item.content {
                StageContent::File(frozen) => {
                    opened = match &frozen.file {
                        Some(f) => f.clone(),
                        None => {
                            Arc::new(self.store.data.open_existing(frozen.id).map_err(|e| {
                                anyhow::anyhow!("reading RAM data file {}: {e}", frozen.id.0)
                            })?)
                        }
                    };
                    done += opened.metadata().map(|m| m.len()).unwrap_or(0);
                    NewContent::File(&opened)
                }
                StageContent::Dir => NewContent::Dir,
                StageContent::Symlink(t) => NewContent::Symlink(t),
                StageContent::Special(kind, rdev) => NewContent::Special {
                    kind: *kind,
                    rdev: *rdev,
                },
            };
            let ino = b
                .create_unsynced(&item.loc, content, &item.meta)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", item.loc))?;
            if matches!(item.content, StageContent::File(_)) {
                // What the file will be on disk (see store::seen).
                if let Ok(st) = b.stat(&item.loc) {
                    self.store.seen.record_written(&st);
                }
            }
            if matches!(item.content, StageContent::File(_) | StageContent::Dir) {
                made.push(item.loc.clone());
            }
            inos.insert(item.node, ino);
            progress(done.min(d.bytes), d.bytes);
        }
        // Every object at once (design.md §6 step 2): one journal commit of the disk's
        // filesystem, not one per file.
        b.sync_created(&made, &Loc::Side(stage.clone()))?;
        let gen_loc = Loc::Side(stage.join("generation"));
        b.write_file(&gen_loc, format!("{}\n", d.generation).as_bytes())?;
        let gen_ino = b.stat(&gen_loc)?.ino;
        Ok((inos, gen_ino))
    }

    /// Completes a committed flush that could not be applied before.
    /// A salvaged one leaves what its skipped steps would have written changed again in
    /// the store, so that this flush writes it (design.md §7).
    fn finish_pending(&self) -> anyhow::Result<()> {
        let _writers = self.store.disk_writers.lock();
        let _gate = self.store.disk_gate.write();
        let resync = finish_pending(self.store.backing.as_ref(), &self.ledger)?;
        if !resync.is_empty() {
            let n = self.store.resync(&resync);
            tracing::warn!(nodes = n, "written again after a salvaged flush");
        }
        Ok(())
    }

    /// The safety net of a plan that failed its check (issue 12): the second in a row has
    /// the names it concerned checked against the disk, and what is not there as the store
    /// believes becomes new again, written from RAM by the next flush (`Store::resync`), so
    /// that a store that diverged from the disk cannot stop every later flush.
    fn rejected_plan(&self, paths: &[std::path::PathBuf]) {
        let again = {
            let mut n = self.rejected.lock();
            *n += 1;
            *n >= 2
        };
        if !again {
            return;
        }
        *self.rejected.lock() = 0;
        let _writers = self.store.disk_writers.lock();
        let _gate = self.store.disk_gate.write();
        let n = self.store.resync(paths);
        tracing::error!(
            nodes = n,
            "a flush plan failed its check twice: what it concerned is checked against the disk and written again"
        );
    }

    /// Before the snapshot: read what the flush needs from disk (xattrs of files it will
    /// write anew, the other names of hard-linked files).
    fn prepare(&self) -> anyhow::Result<()> {
        let (need_xattrs, hidden) = self.store.lock().flush_needs();
        for id in need_xattrs {
            self.store.ensure_xattrs(id)?;
        }
        if !hidden.is_empty() {
            self.store.find_hidden_links(&hidden)?;
        }
        Ok(())
    }

    fn thaw(&self, d: &Draft) {
        for (cell, id) in &d.frozen {
            if let Some(old) = cell.thaw(*id) {
                self.store.data.remove(old);
            }
        }
    }

    /// Whether a committed flush is waiting to be completed.
    pub fn has_pending(&self) -> bool {
        self.ledger.pending().is_some()
    }
}

/// What a planner does at the commit point (steps 4-5), around the journal's write: FUSE
/// mode rebases its store and prepares the store's new log; overlay mode has nothing to do.
pub trait CommitHook {
    /// Before the journal is written; an error stops the flush before its commit.
    fn prepare(&mut self, generation: u64) -> anyhow::Result<()>;
    /// The journal could not be written: undo `prepare`.
    fn abort(&mut self);
    /// The journal is written: the flush is committed.
    fn committed(&mut self);
    /// Just before the committed journal is applied, and just after.
    fn before_apply(&mut self, _b: &dyn crate::backing::Backing, _j: &Journal) {}
    fn after_apply(&mut self, _b: &dyn crate::backing::Backing, _j: &Journal) {}
}

/// The planner without anything to do at the commit point.
pub struct NoHook;

impl CommitHook for NoHook {
    fn prepare(&mut self, _: u64) -> anyhow::Result<()> {
        Ok(())
    }
    fn abort(&mut self) {}
    fn committed(&mut self) {}
}

/// FUSE mode's commit point: under the store lock from `prepare` to the end of `committed`
/// (or `abort`), never during the apply.
struct StoreCommit<'a> {
    store: &'a Store,
    inner: Option<crate::store::Locked<'a>>,
    draft: &'a Draft,
    inos: &'a HashMap<NodeId, u64>,
    undo: Option<crate::store::flushing::Undo>,
    order: Vec<NodeId>,
}

impl CommitHook for StoreCommit<'_> {
    fn prepare(&mut self, _generation: u64) -> anyhow::Result<()> {
        let mut inner = self.store.lock();
        let (undo, order) = inner
            .prepare_commit(self.draft, self.inos)
            .map_err(|e| anyhow::Error::new(e).context("writing the store log"))?;
        self.inner = Some(inner);
        self.undo = Some(undo);
        self.order = order;
        Ok(())
    }

    fn abort(&mut self) {
        if let (Some(mut inner), Some(u)) = (self.inner.take(), self.undo.take()) {
            inner.abort_commit(u);
        }
    }

    fn committed(&mut self) {
        if let Some(mut inner) = self.inner.take() {
            let order = std::mem::take(&mut self.order);
            inner.finish_commit(self.draft, &order);
        }
    }

    /// Names whose disk object changed behind asdfs are kept (see `conflict`).
    fn before_apply(&mut self, b: &dyn crate::backing::Backing, j: &Journal) {
        conflict::keep_changed(b, j, &self.store.seen);
    }

    fn after_apply(&mut self, b: &dyn crate::backing::Backing, j: &Journal) {
        conflict::note_applied(b, j, &self.store.seen);
    }
}

/// Steps 3-7 of a flush of either mode (design.md §6): move aside what the store does not
/// know standing in the way of a step (`clear`), check the journal against the disk as it
/// will be at each step, commit it (with the planner's `hook`), apply it. A journal
/// that fails the check is a planner's bug: it is logged and not committed, so the flush
/// fails, the changes stay where they are and the next flush plans again. The disk
/// generation is the journal's once it is committed; a committed journal that could not be
/// applied is kept in the ledger and completed before the next flush. The stage is
/// removed when the flush is not committed.
pub fn commit_and_apply(
    b: &dyn crate::backing::Backing,
    ledger: &Ledger,
    journal: Journal,
    hook: &mut dyn CommitHook,
) -> anyhow::Result<()> {
    let generation = journal.generation;
    let stage = Loc::side(Journal::stage_dir(generation));
    clear::clear_the_way(b, &journal);
    if let Err(e) = check(&journal, b) {
        tracing::error!(generation, error = %e, steps = ?journal.steps, "a flush plan failed its check and was not committed (a bug)");
        let _ = b.remove(&stage);
        let mut paths: Vec<std::path::PathBuf> = Vec::new();
        for s in &journal.steps {
            let locs = match s {
                Step::Rename { from, to, .. } | Step::Link { from, to, .. } => vec![from, to],
                Step::Meta { at, .. } | Step::Times { at, .. } => vec![at],
            };
            for l in locs {
                if let Loc::Target(p) = l {
                    if !p.as_os_str().is_empty() && !paths.contains(p) {
                        paths.push(p.clone());
                    }
                }
            }
        }
        return Err(anyhow::Error::new(e).context(PlanRejected(paths)));
    }
    if let Err(e) = hook.prepare(generation) {
        let _ = b.remove(&stage);
        return Err(e);
    }
    if let Err(e) = b.write_file(
        &Loc::side(Journal::file_name(generation)),
        &journal.encode(),
    ) {
        hook.abort();
        let _ = b.remove(&stage);
        return Err(anyhow::Error::new(e).context("committing the flush journal"));
    }
    hook.committed();
    ledger.set_disk_gen(generation);
    hook.before_apply(b, &journal);
    let applied = journal.apply(b, false);
    hook.after_apply(b, &journal);
    if let Err(e) = applied {
        ledger.set_pending(Some(journal));
        return Err(
            anyhow::Error::new(e).context("applying the committed flush (it will be completed)")
        );
    }
    Ok(())
}

/// Completes the committed flush the ledger holds, if any. If it had to be salvaged,
/// returns the target paths its skipped steps concerned (`recover::Salvage`).
pub fn finish_pending(
    b: &dyn crate::backing::Backing,
    ledger: &Ledger,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    for generation in ledger.take_unfinished() {
        ledger.finish(b, generation);
    }
    let Some(j) = ledger.pending() else {
        return Ok(Vec::new());
    };
    let mut resync = Vec::new();
    match j.apply(b, true) {
        Ok(()) => ledger.finish(b, j.generation),
        Err(e) if recover::structural(&e) => {
            // Never again: salvaged, so that this and later flushes go on (design.md §7).
            let s = recover::salvage(b, &j, &e)?;
            ledger.set_salvaged(s.msg);
            resync = s.paths;
        }
        Err(e) => return Err(anyhow::Error::new(e).context("completing an earlier flush")),
    }
    ledger.set_pending(None);
    ledger.set_disk_gen(ledger.disk_gen().max(j.generation));
    tracing::info!(generation = j.generation, "completed an earlier flush");
    Ok(resync)
}

/// Step 8: the journal and what is left in the stage go. Returns false if either is
/// still there.
fn finish(b: &dyn crate::backing::Backing, generation: u64) -> bool {
    let mut ok = true;
    for (loc, what) in [
        (Loc::side(Journal::file_name(generation)), "journal"),
        (Loc::side(Journal::stage_dir(generation)), "stage"),
    ] {
        match b.remove(&loc) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                tracing::warn!(error = %e, generation, "could not remove a finished flush {what}; the next flush tries again");
                ok = false;
            }
        }
    }
    ok
}
