//! Writing the RAM tree back to the disk copy, all or nothing (design.md §6), and disk
//! recovery after a crash (design.md §7).

mod conflict;
mod journal;
mod plan;
mod recover;

pub use journal::{Journal, Step};
pub use recover::{read_generation, recover_disk};

use crate::backing::{Loc, NewContent};
use crate::store::Store;
use crate::store::types::NodeId;
use parking_lot::Mutex;
use plan::{Draft, StageContent};
use std::collections::HashMap;
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
    /// Bytes written and to write by the flush under way, if one is (`asdfs status`).
    in_progress: Mutex<Option<(u64, u64)>>,
}

impl Flusher {
    pub fn new(store: Arc<Store>, disk_gen: u64) -> Flusher {
        Flusher {
            store,
            running: Mutex::new(()),
            ledger: Ledger::new(disk_gen),
            in_progress: Mutex::new(None),
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
            return Ok(FlushReport {
                generation: generation - 1,
                took: started.elapsed(),
                ..Default::default()
            });
        }
        let r = self.write(&draft, started, progress);
        self.thaw(&draft);
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
        if let Err(e) = self.commit(draft, &inos, &journal) {
            drop(gate);
            let _ = b.remove(&stage);
            return Err(e);
        }
        conflict::keep_changed(b.as_ref(), &journal, &self.store.seen);
        let applied = journal.apply(b.as_ref(), false);
        conflict::note_applied(b.as_ref(), &journal, &self.store.seen);
        drop(gate);
        if let Err(e) = applied {
            self.ledger.set_pending(Some(journal));
            return Err(anyhow::Error::new(e)
                .context("applying the committed flush (it will be completed)"));
        }
        finish(b.as_ref(), draft.generation);
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
                .create(&item.loc, content, &item.meta)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", item.loc))?;
            if matches!(item.content, StageContent::File(_)) {
                // What the file will be on disk (see store::seen).
                if let Ok(st) = b.stat(&item.loc) {
                    self.store.seen.record_written(&st);
                }
            }
            inos.insert(item.node, ino);
            progress(done.min(d.bytes), d.bytes);
        }
        let gen_loc = Loc::Side(stage.join("generation"));
        b.write_file(&gen_loc, format!("{}\n", d.generation).as_bytes())?;
        let gen_ino = b.stat(&gen_loc)?.ino;
        b.sync_dir(&Loc::Side(stage))?;
        Ok((inos, gen_ino))
    }

    /// Steps 4-5 under the store lock: rebase the store, prepare its new log, commit.
    fn commit(
        &self,
        d: &Draft,
        inos: &HashMap<NodeId, u64>,
        journal: &Journal,
    ) -> anyhow::Result<()> {
        let b = &self.store.backing;
        let mut inner = self.store.lock();
        let undo = inner.rebase(d, inos);
        let order = match inner.prepare_log(d.generation) {
            Ok(o) => o,
            Err(e) => {
                inner.undo(undo);
                inner.log.abort_rewrite();
                return Err(anyhow::Error::new(e).context("writing the store log"));
            }
        };
        if let Err(e) = b.write_file(
            &Loc::side(Journal::file_name(d.generation)),
            &journal.encode(),
        ) {
            inner.undo(undo);
            inner.log.abort_rewrite();
            return Err(anyhow::Error::new(e).context("committing the flush journal"));
        }
        if let Err(e) = inner.log.commit_rewrite() {
            tracing::error!(error = %e, "switching the store log failed; a takeover would use log.new");
        }
        inner.mark_logged(&order);
        inner.collect_garbage(d);
        self.ledger.set_disk_gen(d.generation);
        Ok(())
    }

    /// Completes a committed flush that could not be applied before.
    fn finish_pending(&self) -> anyhow::Result<()> {
        let Some(j) = self.ledger.pending() else {
            return Ok(());
        };
        let b = self.store.backing.clone();
        {
            let _writers = self.store.disk_writers.lock();
            let _gate = self.store.disk_gate.write();
            j.apply(b.as_ref(), true)
                .map_err(|e| anyhow::Error::new(e).context("completing an earlier flush"))?;
        }
        finish(b.as_ref(), j.generation);
        self.ledger.set_pending(None);
        tracing::info!(generation = j.generation, "completed an earlier flush");
        Ok(())
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

/// Step 8: the journal and what is left in the stage go.
pub(crate) fn finish(b: &dyn crate::backing::Backing, generation: u64) {
    if let Err(e) = b.remove(&Loc::side(Journal::file_name(generation))) {
        tracing::warn!(error = %e, "could not remove a finished flush journal");
    }
    if let Err(e) = b.remove(&Loc::side(Journal::stage_dir(generation))) {
        tracing::warn!(error = %e, "could not remove a finished flush stage");
    }
}
