//! The flush of an upper layer onto the disk copy (design.md §10): plan from the upper
//! layer alone, stage, commit the journal, apply, then make sure no name the flush gave the
//! disk copy shows through the mounted overlay where a program has just removed it.

use super::plan::{Plan, StageContent, plan};
use super::upper::{Sig, Upper, vanished};
use crate::backing::{Backing, Loc, NewContent, open_beneath};
use crate::flush::{FlushReport, Journal, Ledger, NoHook};
use anyhow::Context;
use nix::fcntl::OFlag;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet};
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
}

/// A flush's report, and the signatures of every name it wrote or found written.
pub type Flushed = (FlushReport, HashMap<PathBuf, Sig>);

impl OverlayFlusher {
    pub fn new(disk: Arc<dyn Backing>, disk_gen: u64) -> OverlayFlusher {
        OverlayFlusher {
            disk,
            running: Mutex::new(()),
            ledger: Ledger::new(disk_gen),
        }
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
            layer
                .upper
                .mark_opaque(dir)
                .with_context(|| format!("marking {} opaque in the upper layer", dir.display()))?;
            // The mark changed the directory's ctime: what is written is the marked one.
            if let Ok(e) = layer.upper.entry(dir) {
                plan.sigs.insert(dir.clone(), e.sig());
            }
        }
        let stage = Loc::side(Journal::stage_dir(generation));
        let (inos, gen_ino, unstable) = match self.stage(layer.upper, &plan, progress) {
            Ok(x) => x,
            Err(e) => {
                let _ = self.disk.remove(&stage);
                return Err(e.context("staging the flush"));
            }
        };
        let journal = plan.journal(&inos, gen_ino);
        let steps = journal.steps.len() as u64;
        crate::flush::commit_and_apply(self.disk.as_ref(), &self.ledger, journal, &mut NoHook)?;
        if let Some(ovl) = layer.overlay {
            guard_new_names(ovl, layer.upper, &plan.new_names);
        }
        self.ledger.finish(self.disk.as_ref(), generation);
        let mut done = plan.sigs.clone();
        for p in &unstable {
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

    /// Creates the stage items; returns their inodes, the generation file's inode, and the
    /// upper files that changed while they were copied (written again by the next flush).
    fn stage(
        &self,
        upper: &Upper,
        plan: &Plan,
        progress: &dyn Fn(u64, u64),
    ) -> anyhow::Result<(Vec<Option<u64>>, u64, HashSet<PathBuf>)> {
        let b = &self.disk;
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
        let mut inos = Vec::with_capacity(plan.stage.len());
        let mut unstable = HashSet::new();
        let mut done = 0u64;
        let root = upper.layer().target_root();
        for item in &plan.stage {
            let ino = match &item.content {
                StageContent::File(src) => {
                    // Non-blocking: the name may have become a fifo or a whiteout meanwhile.
                    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
                    let f = match open_beneath(root.as_fd(), src, flags) {
                        Ok(fd) if is_file(&fd) && same_inode(&fd, item.ino) => {
                            std::fs::File::from(fd)
                        }
                        Ok(_) => {
                            skip(&mut inos, &mut unstable, src);
                            continue;
                        }
                        // Removed since the walk: written (or not) by the next flush.
                        Err(e) if vanished(&e) || e.raw_os_error() == Some(libc::ENXIO) => {
                            skip(&mut inos, &mut unstable, src);
                            continue;
                        }
                        Err(e) => {
                            return Err(anyhow::Error::new(e)
                                .context(format!("opening {} in the upper layer", src.display())));
                        }
                    };
                    let before = ctime(&f)?;
                    let ino = b.create(&item.loc, NewContent::File(&f), &item.meta);
                    if ctime(&f)? != before {
                        unstable.insert(src.clone());
                    }
                    done += f.metadata().map(|m| m.len()).unwrap_or(0);
                    ino
                }
                StageContent::Symlink(src) => {
                    let target = match upper.layer().read_link(&Loc::Target(src.clone())) {
                        Ok(t) => t,
                        Err(e) if vanished(&e) => {
                            skip(&mut inos, &mut unstable, src);
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    b.create(&item.loc, NewContent::Symlink(&target), &item.meta)
                }
                StageContent::Dir => b.create(&item.loc, NewContent::Dir, &item.meta),
                StageContent::Special(kind, rdev) => b.create(
                    &item.loc,
                    NewContent::Special {
                        kind: *kind,
                        rdev: *rdev,
                    },
                    &item.meta,
                ),
            }
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", item.loc))?;
            inos.push(Some(ino));
            progress(done.min(plan.bytes), plan.bytes);
        }
        let gen_loc = Loc::Side(stage.join("generation"));
        b.write_file(&gen_loc, format!("{}\n", plan.generation).as_bytes())?;
        let gen_ino = b.stat(&gen_loc)?.ino;
        b.sync_dir(&Loc::Side(stage))?;
        Ok((inos, gen_ino, unstable))
    }

    /// Completes a committed flush that could not be applied before.
    fn finish_pending(&self) -> anyhow::Result<()> {
        // The upper layer still holds what a salvage skipped; the next plan writes it.
        crate::flush::finish_pending(self.disk.as_ref(), &self.ledger).map(|_| ())
    }
}

/// A stage item whose source vanished: no inode, and its path is not written.
fn skip(inos: &mut Vec<Option<u64>>, unstable: &mut HashSet<PathBuf>, src: &Path) {
    inos.push(None);
    unstable.insert(src.to_path_buf());
}

/// Whether `fd` is the inode the walk saw (replaced since: the next flush writes it).
fn same_inode(fd: &OwnedFd, ino: Option<u64>) -> bool {
    ino.is_none_or(|i| nix::sys::stat::fstat(fd).is_ok_and(|s| s.st_ino == i))
}

fn is_file(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFREG)
}

fn ctime(f: &std::fs::File) -> std::io::Result<(i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    Ok((m.ctime(), m.ctime_nsec()))
}

/// After the apply (design.md §10.3): a program may have removed, during the flush, an
/// upper name the flush has just given the disk copy. The kernel removed it without a
/// whiteout (the disk copy had no such name when it looked), so the disk copy's new name
/// would show through. Renaming a name onto itself in each such overlay directory waits for
/// removals under way; then every new name the upper layer no longer has gets a whiteout.
fn guard_new_names(overlay: &OwnedFd, upper: &Upper, names: &[PathBuf]) {
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
    for name in names {
        let Some(parent) = name.parent() else {
            continue;
        };
        let kept = upper.has(name).unwrap_or(true);
        if kept || !upper.has(parent).unwrap_or(false) || upper.is_opaque(parent) {
            continue;
        }
        match upper.whiteout(name) {
            Ok(true) => {
                tracing::info!(path = %name.display(), "removed during the flush: hidden with a whiteout")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(path = %name.display(), error = %e, "could not hide a name removed during the flush")
            }
        }
    }
}
