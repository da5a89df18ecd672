//! The flush of an upper layer onto the disk copy (design.md §10): plan from the upper
//! layer alone, stage, commit the journal, apply, then make sure no name the flush gave the
//! disk copy shows through the mounted overlay where a program has just removed it.

use super::plan::{Plan, StageContent, StageItem, plan};
use super::upper::{Sig, Upper, UpperKind, vanished};
use crate::backing::{Backing, Loc, Meta, NewContent, open_beneath};
use crate::flush::{FlushReport, Journal, Ledger, NoHook};
use crate::store::types::Ts;
use anyhow::Context;
use nix::fcntl::OFlag;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A name no program uses: renaming it onto itself in an overlay directory waits for the
/// directory operations under way there (the kernel holds the directory's lock for them).
const BARRIER: &str = ".asdfs-flush-barrier";

/// Flushes upper layers of one target onto its disk copy; one flush at a time.
pub struct OverlayFlusher {
    disk: Arc<dyn Backing>,
    running: Mutex<()>,
    ledger: Ledger,
    /// Files flushes left out because they kept changing while copied: those of the
    /// round of flushes under way, and those of the last round (status: `busy_files`).
    /// A leaf lock.
    busy: Mutex<(BTreeSet<PathBuf>, Vec<String>)>,
}

/// The layer to flush. `live`: it is the upper layer of an overlay programs may still
/// change (then directories only it has are marked opaque, and `overlay`, the overlay's
/// root if it is on the target, is used to hide names removed during the flush).
/// Otherwise it is a layer no program can change any more (a middle layer, or an upper
/// layer nothing holds).
pub struct Layer<'a> {
    pub upper: &'a Upper,
    pub live: bool,
    pub overlay: Option<&'a OwnedFd>,
    /// The signatures an earlier flush of this layer wrote.
    pub done: &'a HashMap<PathBuf, Sig>,
    /// Inodes of files programs hold (open or mapped): they may change while copied.
    pub held: &'a HashSet<u64>,
}

/// A flush's report, and the signatures of every name it wrote or found written.
pub type Flushed = (FlushReport, HashMap<PathBuf, Sig>);

impl OverlayFlusher {
    pub fn new(disk: Arc<dyn Backing>, disk_gen: u64) -> OverlayFlusher {
        OverlayFlusher {
            disk,
            running: Mutex::new(()),
            ledger: Ledger::new(disk_gen),
            busy: Mutex::new((BTreeSet::new(), Vec::new())),
        }
    }

    /// A round of flushes (one for each layer to write) begins.
    pub fn begin_round(&self) {
        self.busy.lock().0.clear();
    }

    /// The round has ended: its busy files are those status shows.
    pub fn end_round(&self) {
        let mut busy = self.busy.lock();
        busy.1 = busy.0.iter().map(|p| crate::human::path(p)).collect();
    }

    /// The files the last round of flushes left out because they kept changing.
    pub fn busy_files(&self) -> Vec<String> {
        self.busy.lock().1.clone()
    }

    pub fn disk(&self) -> &Arc<dyn Backing> {
        &self.disk
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Writes what changed in the layer to the disk copy; returns when it is durable.
    pub fn flush(&self, layer: &Layer<'_>, progress: &dyn Fn(u64, u64)) -> anyhow::Result<Flushed> {
        let _one = self.running.lock();
        let started = Instant::now();
        let r = self.flush_locked(layer, started, progress);
        let (r, sigs) = match r {
            Ok((rep, sigs)) => (Ok(rep), Some(sigs)),
            Err(e) => (Err(e), None),
        };
        self.ledger.record(&r);
        Ok((r?, sigs.unwrap_or_default()))
    }

    fn flush_locked(
        &self,
        layer: &Layer<'_>,
        started: Instant,
        progress: &dyn Fn(u64, u64),
    ) -> anyhow::Result<Flushed> {
        self.finish_pending()?;
        let entries = layer.upper.walk().context("reading the upper layer")?;
        let generation = self.ledger.disk_gen() + 1;
        let mut plan = plan(&entries, self.disk.as_ref(), layer.done, generation)
            .context("planning the flush")?;
        if plan.is_empty() {
            let report = FlushReport {
                generation: generation - 1,
                took: started.elapsed(),
                ..Default::default()
            };
            return Ok((report, plan.sigs));
        }
        if !layer.live {
            plan.mark_opaque.clear();
        }
        for dir in &plan.mark_opaque {
            // The walk's signature stays: the mark changes the directory's ctime, so the
            // next flush looks at it again, and finds what changed in it between the walk
            // and the mark (a mode set after its entries were copied in, as `cp -a` and
            // `mv` do, names moved out of it). Taking the marked directory's signature
            // instead lost those (QA: a directory's mode 0700 on disk after a rename storm).
            match layer.upper.mark_opaque(dir) {
                // Moved or removed since the walk: the next flush finds it where it is.
                Err(e) if vanished(&e) => {}
                r => r.with_context(|| {
                    format!(
                        "marking {} opaque in the upper layer",
                        crate::human::path(dir)
                    )
                })?,
            }
        }
        let stage = Loc::side(Journal::stage_dir(generation));
        let staged = match self.stage(layer, &plan, progress) {
            Ok(x) => x,
            Err(e) => {
                let _ = self.disk.remove(&stage);
                return Err(e.context("staging the flush"));
            }
        };
        self.busy.lock().0.extend(staged.busy.iter().cloned());
        let journal = plan.journal(&staged.inos, staged.gen_ino);
        let steps = journal.steps.len() as u64;
        let placed = placed_inodes(&journal);
        if let Some(ovl) = layer.overlay {
            // Names already removed are hidden before their disk copies exist: no lookup
            // can find those through the overlay (design.md §10.3).
            guard_new_names(ovl, layer.upper, &plan.new_names, None);
        }
        crate::flush::commit_and_apply(self.disk.as_ref(), &self.ledger, journal, &mut NoHook)?;
        if let Some(ovl) = layer.overlay {
            guard_new_names(ovl, layer.upper, &plan.new_names, Some(&placed));
        }
        self.ledger.finish(self.disk.as_ref(), generation);
        let mut done = plan.sigs.clone();
        for p in &staged.unstable {
            done.remove(p);
        }
        let report = FlushReport {
            generation,
            files: plan.files,
            bytes: plan.bytes,
            steps,
            took: started.elapsed(),
        };
        Ok((report, done))
    }

    /// Creates the stage items; returns their inodes (`None`: left out), the generation
    /// file's inode, and the upper files left out or copied in another state than the walk
    /// saw (written again by the next flush), with the busy ones among them.
    ///
    /// A file is copied with its signature checked before and after (design.md §10.2); one
    /// that changed meanwhile is copied again. The files programs hold (`held`) and those
    /// that changed are checked again together once all are copied, until a check finds
    /// none changed since its copy, so their copies hold one instant. A file that kept
    /// changing is busy: left out, its previous version stays on disk.
    fn stage(
        &self,
        layer: &Layer<'_>,
        plan: &Plan,
        progress: &dyn Fn(u64, u64),
    ) -> anyhow::Result<Staged> {
        let b = &self.disk;
        let upper = layer.upper;
        let stage = Path::new(&Journal::stage_dir(plan.generation)).to_path_buf();
        match b.remove(&Loc::Side(stage.clone())) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                return Err(
                    anyhow::Error::new(e).context("removing the stage an earlier attempt left")
                );
            }
            _ => {}
        }
        b.make_dir(&Loc::Side(stage.clone()))?;
        let mut inos = vec![None; plan.stage.len()];
        let mut unstable = HashSet::new();
        let mut watch: Vec<Copied> = Vec::new();
        let mut todo: Vec<(usize, File)> = Vec::new();
        let mut done = 0u64;
        for (i, item) in plan.stage.iter().enumerate() {
            let ino = match &item.content {
                StageContent::File(src) => {
                    let Some(f) = open_source(upper, src, item.ino)? else {
                        // Gone or replaced since the walk: written (or not) by the next flush.
                        unstable.insert(src.clone());
                        continue;
                    };
                    done += f.metadata().map(|m| m.len()).unwrap_or(0);
                    let held = item.ino.is_some_and(|x| layer.held.contains(&x));
                    match self.copy_once(item, &f)? {
                        Some((ino, sig)) => {
                            if held {
                                watch.push(Copied {
                                    item: i,
                                    src: f,
                                    sig,
                                });
                            }
                            ino
                        }
                        None => {
                            todo.push((i, f));
                            progress(done.min(plan.bytes), plan.bytes);
                            continue;
                        }
                    }
                }
                StageContent::Symlink(src) => {
                    let target = match upper.layer().read_link(&Loc::Target(src.clone())) {
                        Ok(t) => t,
                        Err(e) if vanished(&e) => {
                            unstable.insert(src.clone());
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    b.create_unsynced(&item.loc, NewContent::Symlink(&target), &item.meta)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", item.loc))?
                }
                StageContent::Dir => b
                    .create_unsynced(&item.loc, NewContent::Dir, &item.meta)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", item.loc))?,
                StageContent::Special(kind, rdev) => b
                    .create_unsynced(
                        &item.loc,
                        NewContent::Special {
                            kind: *kind,
                            rdev: *rdev,
                        },
                        &item.meta,
                    )
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", item.loc))?,
            };
            inos[i] = Some(ino);
            progress(done.min(plan.bytes), plan.bytes);
        }
        for (i, _) in &todo {
            unstable.extend(plan.stage[*i].source.clone());
        }
        let busy: Vec<PathBuf> = self
            .settle(plan, &mut inos, watch, todo)?
            .into_iter()
            .filter_map(|i| plan.stage[i].source.clone())
            .collect();
        for p in &busy {
            tracing::warn!(path = %crate::human::path(p), "a file kept changing while the flush copied it; its previous version stays on disk until a later flush");
        }
        unstable.extend(busy.iter().cloned());
        // Every object at once (design.md §6 step 2), once the copies hold still: one
        // journal commit of the disk's filesystem, not one per file.
        let made: Vec<Loc> = plan
            .stage
            .iter()
            .zip(&inos)
            .filter(|(item, ino)| {
                ino.is_some() && matches!(item.content, StageContent::File(_) | StageContent::Dir)
            })
            .map(|(item, _)| item.loc.clone())
            .collect();
        b.sync_created(&made, &Loc::Side(stage.clone()))?;
        let gen_loc = Loc::Side(stage.join("generation"));
        b.write_file(&gen_loc, format!("{}\n", plan.generation).as_bytes())?;
        let gen_ino = b.stat(&gen_loc)?.ino;
        b.sync_dir(&Loc::Side(stage))?;
        Ok(Staged {
            inos,
            gen_ino,
            unstable,
            busy,
        })
    }

    /// Copies one upper file into the stage. `None` if its signature changed during the
    /// copy (then the copy is removed). The copy begins with SEEK_DATA, which on tmpfs waits
    /// for a write(2) under way (it holds the inode lock): a write begun before the first
    /// signature is whole in the copy, and one begun after it changes the signature (tmpfs
    /// gives a fine-grained ctime to a change after a query).
    fn copy_once(&self, item: &StageItem, f: &File) -> anyhow::Result<Option<(u64, FileSig)>> {
        let before = file_sig(f)?;
        // The disk copy's mtime is that of the content copied, not of the walk.
        let meta = Meta {
            mtime: before.mtime,
            ..item.meta.clone()
        };
        let ino = self
            .disk
            .create_unsynced(&item.loc, NewContent::File(f), &meta)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", item.loc))?;
        if file_sig(f)? == before {
            return Ok(Some((ino, before)));
        }
        self.disk
            .remove(&item.loc)
            .map_err(|e| anyhow::anyhow!("removing {}: {e}", item.loc))?;
        Ok(None)
    }

    /// Rounds of checks and copies until every watched copy still equals its file (all
    /// hold the instant of that check) and nothing is left to copy, or `COPY_TRIES` rounds
    /// have run. Returns the stage items left out (busy): those that kept changing and, if
    /// there are any, every watched one with them; they have no copy, no inode.
    fn settle(
        &self,
        plan: &Plan,
        inos: &mut [Option<u64>],
        mut watch: Vec<Copied>,
        mut todo: Vec<(usize, File)>,
    ) -> anyhow::Result<Vec<usize>> {
        for round in 0..COPY_TRIES {
            let (same, changed): (Vec<Copied>, Vec<Copied>) = watch
                .into_iter()
                .partition(|c| file_sig(&c.src).ok() == Some(c.sig));
            watch = same;
            for c in changed {
                let loc = &plan.stage[c.item].loc;
                self.disk
                    .remove(loc)
                    .map_err(|e| anyhow::anyhow!("removing {loc}: {e}"))?;
                inos[c.item] = None;
                todo.push((c.item, c.src));
            }
            if todo.is_empty() || round + 1 == COPY_TRIES {
                break;
            }
            // A writer's burst (a database's commit) ends: give it the time to.
            std::thread::sleep(std::time::Duration::from_millis(1 << round.min(5)));
            for (i, f) in std::mem::take(&mut todo) {
                match self.copy_once(&plan.stage[i], &f)? {
                    Some((ino, sig)) => {
                        inos[i] = Some(ino);
                        watch.push(Copied {
                            item: i,
                            src: f,
                            sig,
                        });
                    }
                    None => todo.push((i, f)),
                }
            }
        }
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        // The others' copies hold an instant the busy files' disk versions do not: left out
        // too, the disk keeps them all as of the earlier flush that wrote them together (a
        // database and its write-ahead log).
        for c in watch {
            let loc = &plan.stage[c.item].loc;
            self.disk
                .remove(loc)
                .map_err(|e| anyhow::anyhow!("removing {loc}: {e}"))?;
            inos[c.item] = None;
            todo.push((c.item, c.src));
        }
        Ok(todo.into_iter().map(|(i, _)| i).collect())
    }

    /// Completes a committed flush that could not be applied before.
    fn finish_pending(&self) -> anyhow::Result<()> {
        // The upper layer still holds what a salvage skipped; the next plan writes it.
        crate::flush::finish_pending(self.disk.as_ref(), &self.ledger).map(|_| ())
    }
}

/// Rounds of copies of files that change while a flush copies them (design.md §10.2).
const COPY_TRIES: u32 = 8;

/// What the stage holds: each item's inode (`None`: left out), the generation file's
/// inode, the upper paths not written as the walk saw them, and the busy files.
struct Staged {
    inos: Vec<Option<u64>>,
    gen_ino: u64,
    unstable: HashSet<PathBuf>,
    busy: Vec<PathBuf>,
}

/// A file copied into the stage (item `item`), open, with the signature its copy holds.
struct Copied {
    item: usize,
    src: File,
    sig: FileSig,
}

/// What changes when a file is written: size, mtime and ctime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileSig {
    size: u64,
    mtime: Ts,
    ctime: Ts,
}

fn file_sig(f: &File) -> std::io::Result<FileSig> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    let ts = |sec: i64, nsec: i64| Ts {
        sec,
        nsec: nsec as u32,
    };
    Ok(FileSig {
        size: m.len(),
        mtime: ts(m.mtime(), m.mtime_nsec()),
        ctime: ts(m.ctime(), m.ctime_nsec()),
    })
}

/// Opens the upper file `src` to copy it; `None` if it vanished or is no longer the
/// regular file `ino` the walk saw (replaced since: the next flush writes it).
fn open_source(upper: &Upper, src: &Path, ino: Option<u64>) -> anyhow::Result<Option<File>> {
    // Non-blocking: the name may have become a fifo or a whiteout meanwhile.
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    match open_beneath(upper.layer().target_root().as_fd(), src, flags) {
        Ok(fd) => {
            let same = nix::sys::stat::fstat(&fd).is_ok_and(|s| {
                s.st_mode & libc::S_IFMT == libc::S_IFREG && ino.is_none_or(|i| s.st_ino == i)
            });
            Ok(same.then(|| File::from(fd)))
        }
        Err(e) if vanished(&e) || e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "opening {} in the upper layer",
            crate::human::path(src)
        ))),
    }
}

/// The inode each target name of a journal gets.
fn placed_inodes(j: &Journal) -> HashMap<PathBuf, u64> {
    j.steps
        .iter()
        .filter_map(|s| match s {
            crate::flush::Step::Rename {
                to: Loc::Target(p),
                ino,
                ..
            }
            | crate::flush::Step::Link {
                to: Loc::Target(p),
                ino,
                ..
            } => Some((p.clone(), *ino)),
            _ => None,
        })
        .collect()
}

/// Hides the new disk names a program removed during the flush (design.md §10.3). The
/// kernel removed them without a whiteout (the disk copy had no such name when it looked),
/// so the disk copy's new name would show through.
///
/// Before the apply (`placed` is `None`): every new name the upper layer no longer has
/// gets a whiteout, before its disk copy exists.
///
/// After the apply (`placed`: the inodes the names got on disk): renaming a name onto
/// itself in each such overlay directory waits for removals under way; then every new
/// name the upper layer no longer has is hidden. A lookup made between the apply and now
/// may have found the disk copy, and the overlay keeps what it found (a whiteout made in
/// the upper layer behind its back would not hide it until the entry leaves its cache: a
/// removed file seen again, renamed again, copied up again, QA finding 3). So a name the
/// overlay shows as the very disk object the flush put there is removed through the
/// overlay, which makes the whiteout itself and forgets the entry; other names get a
/// whiteout in the upper layer.
fn guard_new_names(
    overlay: &OwnedFd,
    upper: &Upper,
    names: &[PathBuf],
    placed: Option<&HashMap<PathBuf, u64>>,
) {
    if placed.is_some() {
        let parents: BTreeSet<&Path> = names.iter().filter_map(|n| n.parent()).collect();
        for parent in parents {
            let Ok(dir) = open_beneath(overlay.as_fd(), parent, OFlag::O_PATH | OFlag::O_DIRECTORY)
            else {
                continue;
            };
            let _ = nix::fcntl::renameat2(
                &dir,
                BARRIER,
                &dir,
                BARRIER,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            );
        }
    }
    for name in names {
        let (Some(parent), Some(leaf)) = (name.parent(), name.file_name()) else {
            continue;
        };
        let kept = upper.has(name).unwrap_or(true);
        // A parent the upper layer no longer has as a directory (removed, a whiteout now)
        // or an opaque one hides the name already.
        let parent_dir = upper
            .entry(parent)
            .is_ok_and(|e| e.kind == UpperKind::Dir { opaque: false });
        if kept || !parent_dir {
            continue;
        }
        if let Some(ino) = placed.and_then(|p| p.get(name)) {
            if remove_seen_copy(overlay, parent, leaf, *ino) {
                tracing::info!(path = %crate::human::path(name), "removed during the flush: its disk copy removed through the overlay");
                continue;
            }
        }
        match upper.whiteout(name) {
            Ok(true) => {
                tracing::info!(path = %crate::human::path(name), "removed during the flush: hidden with a whiteout")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(path = %crate::human::path(name), error = %e, "could not hide a name removed during the flush")
            }
        }
    }
}

/// If the overlay shows, at `leaf` in `parent`, the disk object `ino` a flush has just put
/// there (a non-directory the upper layer does not have), removes it through the overlay.
/// A program cannot make that name its own meanwhile: the overlay sees a lower file there,
/// so a create gets EEXIST and a rename onto it ESTALE.
fn remove_seen_copy(overlay: &OwnedFd, parent: &Path, leaf: &std::ffi::OsStr, ino: u64) -> bool {
    let Ok(dir) = open_beneath(overlay.as_fd(), parent, OFlag::O_PATH | OFlag::O_DIRECTORY) else {
        return false;
    };
    let seen = nix::sys::stat::fstatat(&dir, leaf, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
    match seen {
        Ok(st) if st.st_ino == ino && st.st_mode & libc::S_IFMT != libc::S_IFDIR => {
            nix::unistd::unlinkat(&dir, leaf, nix::unistd::UnlinkatFlags::NoRemoveDir).is_ok()
        }
        _ => false,
    }
}
