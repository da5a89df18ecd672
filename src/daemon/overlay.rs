//! One target served in overlay mode (design.md §10): the checks and recovery shared with
//! FUSE mode, the directory holding the target pinned in the store, an overlay of the disk
//! copy with its upper layer in the store mounted over the target; then flushes (each one
//! swaps in a fresh upper layer, see `overlay::layers`), and at the end the final flush.

use super::lifecycle::{self, Begun, Mode, Opened, Phase, Shared, write_owner};
use super::paths::TargetPaths;
use super::{Event, Served, mounting, overlay_status, safety, status};
use crate::backing::{Backing, Loc, Meta};
use crate::config::TargetSettings;
use crate::flush::{FlushReport, Ledger};
use crate::fsx::{self, trusted::TrustedPath};
use crate::overlay::flush::{Layer, OverlayFlusher};
use crate::overlay::kernel;
use crate::overlay::layers::{self, Saved, Stack, open_dir, remove_layer, upper_dir};
use crate::overlay::upper::Upper;
use anyhow::Context;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The store's directory (mode 0700) that holds the pin `disk`.
const PIN_DIR: &str = "pin";

/// Why overlay mode did not start.
pub enum Start {
    /// It cannot work here: serve in FUSE mode instead.
    Fallback(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Start {
    fn from(e: anyhow::Error) -> Start {
        Start::Failed(e)
    }
}

impl From<std::io::Error> for Start {
    fn from(e: std::io::Error) -> Start {
        Start::Failed(e.into())
    }
}

pub struct OverlayTarget {
    shared: Shared,
    flusher: OverlayFlusher,
    stack: Mutex<Stack>,
    /// The directory holding the target, pinned by a bind mount in the store.
    pin: PathBuf,
    /// Held by flushes and by the making of the backup (which needs the disk copy as it was).
    disk_writers: Arc<Mutex<()>>,
    /// (bytes written, bytes to write) of the flush under way, if one is.
    in_progress: Mutex<Option<(u64, u64)>>,
    /// The layers as last measured, for status while a flush holds them.
    measured: Mutex<overlay_status::Measured>,
}

/// What a start finds of an earlier overlay session: the layers it recorded, whether the
/// directory holding the target is still pinned in the store, and its overlay if that is
/// still on the target (a daemon that died).
struct Found {
    saved: Option<Saved>,
    pin: PathBuf,
    pinned: bool,
    live: Option<mounting::MountEntry>,
}

impl Found {
    /// The directory holding the target and its side directory are pinned in the store by
    /// a bind mount: a daemon taking over reaches the disk copy under the overlay there, on
    /// one mount with the side directory (a flush renames between them). Outside
    /// `private/`: nothing ever deletes recursively through it. In `pin/`, mode 0700: the
    /// store is 0711 (other users reach their control sockets), and the pin's path is in
    /// /proc/mounts; through it the directory would be reachable past a 0700 directory
    /// above it (`~/.cache` under `~`).
    fn look(b: &Begun) -> Result<Found, Start> {
        let p = &b.paths;
        // `private/` was made (or checked) by prepare_store.
        let saved = Saved::read(&p.private());
        let pin_dir = fsx::mkdir_private(
            &b.dirs.store,
            OsStr::new(PIN_DIR),
            0o700,
            super::paths::me(),
        )?
        .0;
        let pin = pin_dir.path().join("disk");
        let pinned = saved.is_some() && mounting::mount_at(&pin)?.is_some();
        if pinned {
            finish_interrupted_swap(&p.target)?;
        }
        let live = mounting::mount_at(&p.target)?.filter(|m| m.is_asdfs());
        if live.is_some() && !pinned {
            return Err(Start::Failed(anyhow::anyhow!(
                "{}: covered by an asdfs overlay whose RAM store is gone; unmount it first",
                p.target.display()
            )));
        }
        Ok(Found {
            saved,
            pin,
            pinned,
            live,
        })
    }

    /// The directory the target is opened in: the pinned copy when an overlay covers it.
    fn parent(&self, target: &Path) -> anyhow::Result<fsx::Dir> {
        fsx::Dir::open_strict(if self.pinned {
            &self.pin
        } else {
            target.parent().unwrap_or(Path::new("/"))
        })
        .map_err(Into::into)
    }

    /// The pin made (if it was not there), then the overlay: the one a daemon that died
    /// left, taken over, or a fresh one attached on the target. A failure before the
    /// overlay is on the target takes the pin away again.
    fn stack(self, o: &Opened) -> Result<(OverlayFlusher, Stack), Start> {
        let p = &o.begun.paths;
        if !self.pinned {
            // In the store, which only this user can change (paths::prepare_store).
            crate::fsx::trusted::create_dir_all(&self.pin)?;
            kernel::pin(o.side.parent.fd(), &self.pin)
                .map_err(|e| Start::Fallback(format!("{e:#}")))?;
        }
        let mut unpin = Unpin((!self.pinned).then(|| self.pin.clone()));
        let lower = self.pin.join(p.target.file_name().unwrap_or_default());
        let flusher = OverlayFlusher::new(o.backing.clone(), o.recovered.generation);
        let stack = match (self.saved, self.live) {
            (Some(saved), Some(live)) => {
                tracing::warn!(target = %p.target.display(), "took over the overlay of a daemon that died; writing it to disk");
                let root = open_dir(&p.target)?;
                Stack::adopt(&p.private(), &lower, saved, &live.super_options, &root)?
            }
            (saved, None) => fresh_stack(
                p,
                &lower,
                saved.unwrap_or_default(),
                &flusher,
                o.backing.as_ref(),
            )?,
            (None, Some(_)) => unreachable!("checked in look: a live overlay has a pinned store"),
        };
        unpin.0 = None;
        Ok((flusher, stack))
    }
}

impl OverlayTarget {
    pub fn start(
        settings: TargetSettings,
        events: Sender<Event>,
        idx: usize,
        _progress: safety::Progress<'_>,
    ) -> Result<Arc<dyn Served>, Start> {
        if let Some(why) = kernel::unavailable() {
            return Err(Start::Fallback(why));
        }
        // Until the overlay is on the target, a failure removes the store and side
        // directory this start made.
        let begun = lifecycle::begin(&settings)?;
        if begun.paths.private().join("log").trusted_exists() {
            return Err(Start::Fallback(
                "the previous session, in FUSE mode, left changes in its RAM store".into(),
            ));
        }
        lifecycle::clear_dead_mount(&begun.paths.target)?;
        let found = Found::look(&begun)?;
        let parent = found.parent(&begun.paths.target)?;
        let preflight = (!found.pinned).then_some(true);
        let pin = found.pin.clone();
        let opened = lifecycle::open_disk(begun, &settings, parent, preflight)?;
        // Not given up (`hang::watched`): from here on the start mounts.
        crate::hang::commit()?;
        let (flusher, stack) = found.stack(&opened)?;
        let unclean = opened.recovered.unclean;
        let (shared, mut undo) = opened.into_shared(settings, events, idx);
        // The overlay is on the target: from here on a failure leaves it, with its record
        // and the pin, for the next mount to take over.
        undo.disarm();
        stack.save()?;
        let s = &shared;
        write_owner(&s.paths, &s.settings, &s.dirs.store, &s.side.dir)?;
        let t = Arc::new(OverlayTarget {
            shared,
            flusher,
            stack: Mutex::new(stack),
            pin,
            disk_writers: Arc::default(),
            in_progress: Mutex::new(None),
            measured: Mutex::default(),
        });
        t.serve(unclean)?;
        Ok(t)
    }

    /// Once the overlay is on the target: the backup in the background, the first flush,
    /// the monitor, then what both modes start (`lifecycle::serve`).
    fn serve(self: &Arc<Self>, unclean: bool) -> anyhow::Result<()> {
        let s = &self.shared;
        if let Some(b) = s.backups.clone() {
            let lock = self.disk_writers.clone();
            safety::backup_in_background(
                s.backup_state.clone(),
                s.paths.target.clone(),
                move || {
                    let _w = lock.lock();
                    b.refresh()
                },
            );
        }
        if let Err(e) = self.flush(&|_, _| {}) {
            tracing::error!(error = %format!("{e:#}"), "the first flush failed; the changes stay in RAM");
        }
        self.start_monitor();
        lifecycle::serve(self, unclean)
    }

    /// `flush_layers`, its progress kept for status.
    fn flush(&self, progress: &dyn Fn(u64, u64)) -> anyhow::Result<FlushReport> {
        *self.in_progress.lock() = Some((0, 0));
        let r = self.flush_layers(&|done, total| {
            *self.in_progress.lock() = Some((done, total));
            progress(done, total)
        });
        *self.in_progress.lock() = None;
        r
    }

    /// Writes what programs changed to disk. While mounted: a fresh upper layer first (the
    /// old one, now read-only, is written), and another one after, so that the layers on disk
    /// leave the overlay and their RAM comes back. While a program holds a directory of the
    /// overlay, or once unmounted: the upper layer is written as it is.
    fn flush_layers(&self, progress: &dyn Fn(u64, u64)) -> anyhow::Result<FlushReport> {
        let _w = self.disk_writers.lock();
        let mut st = self.stack.lock();
        self.flusher.begin_round();
        let target = &self.shared.paths.target;
        // An overlay remounted read-only is written as it is: a fresh layer would be a new,
        // writable mount (design.md §11).
        let mounted = self.shared.phase() == Phase::Mounted
            && !self.shared.timer.is_stopping()
            && st.top.mount_id.is_some()
            && !super::readonly::is_read_only(target).unwrap_or(false);
        let rotated = mounted && st.top_used()? && st.rotate(target)?;
        let mut report = st.flush_middles(&self.flusher, progress)?;
        if rotated {
            if st.old_in_use() {
                // A program got hold of the replaced overlay while it was swapped out: what
                // it writes lands in a middle layer, which stays and is written again.
                st.unflush_middles();
            } else if st.has_flushed_middles() && st.rotate(target)? {
                // The second fresh layer holds what changed during the flush: not on disk.
            }
        } else {
            let root = self.overlay_root(&st);
            let live = self.shared.phase() != Phase::Stopped || !self.unused_locked(&st);
            let r = st.flush_top(&self.flusher, live, root.as_ref(), progress)?;
            report = Some(layers::add(report, r));
        }
        self.flusher.end_round();
        st.gc();
        if let Err(e) = st.save() {
            tracing::warn!(error = %format!("{e:#}"), "could not record the overlay's layers");
        }
        Ok(report.unwrap_or(FlushReport {
            generation: self.flusher.ledger().disk_gen(),
            ..Default::default()
        }))
    }

    /// Notices an unmount by someone else, and the end of a detached overlay's use: then
    /// the session is over.
    fn start_monitor(self: &Arc<Self>) {
        let t = self.clone();
        let spawned = std::thread::Builder::new()
            .name("overlay-monitor".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let s = &t.shared;
                    match s.phase() {
                        Phase::Mounted if !t.still_mounted() => {
                            tracing::info!(target = %s.paths.target.display(), "unmounted by someone else");
                            *s.phase.lock() = Phase::Detached;
                            t.stack.lock().top.mount_id = None;
                        }
                        Phase::Detached if t.unused() => {
                            let _ = s.events.send(Event::SessionEnded(s.idx));
                            return;
                        }
                        Phase::Stopped => return,
                        _ => {}
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the overlay monitor");
        }
    }

    /// Whether our overlay is still the top mount of the target.
    fn still_mounted(&self) -> bool {
        let Some(st) = self.stack.try_lock() else {
            return true;
        };
        st.top.mount_id.is_some() && self.overlay_root(&st).is_some()
    }

    /// The root of our overlay, opened for a moment, if it is the top mount of the target.
    fn overlay_root(&self, st: &Stack) -> Option<OwnedFd> {
        let id = st.top.mount_id?;
        let root = open_dir(&self.shared.paths.target).ok()?;
        (kernel::mount_id(&root).ok()? == id).then_some(root)
    }

    /// No program holds anything in the current overlay or an older one.
    fn unused(&self) -> bool {
        self.unused_locked(&self.stack.lock())
    }

    fn unused_locked(&self, st: &Stack) -> bool {
        st.held_count() == 0
    }
}

impl Mode for OverlayTarget {
    fn shared(&self) -> &Shared {
        &self.shared
    }
    fn mode_name(&self) -> &'static str {
        "overlay"
    }
    fn ledger(&self) -> &Ledger {
        self.flusher.ledger()
    }
    fn flush(&self, progress: &dyn Fn(u64, u64)) -> anyhow::Result<FlushReport> {
        OverlayTarget::flush(self, progress)
    }
    /// Stopped for good: the stop's flush then writes the top layer as it is (no fresh
    /// layer is stacked under the detach). A mount kept after a failed flush has no timed
    /// flushes any more; `asdfs flush` and the next unmount still write it.
    fn hold_timed_flushes(&self, hold: bool) {
        if hold {
            self.shared.timer.stop();
        }
    }
    /// Detaches the overlay; files still open keep working, and the session ends when
    /// the last is closed (the monitor notices).
    fn detach(&self) -> anyhow::Result<()> {
        let target = &self.shared.paths.target;
        let mut st = self.stack.lock();
        // Our own hold would make the plain unmount busy: try it first.
        let plain = kernel::detach(target, false, st.top.mount_id);
        match plain {
            Ok(()) => st.top.gone = true,
            Err(_) => st.hold_top(target),
        }
        if let Err(e) = plain {
            let lazily = kernel::detach(target, true, st.top.mount_id);
            if e.raw_os_error() != Some(libc::EBUSY) || lazily.is_err() {
                anyhow::bail!("unmounting {}: {e}", target.display());
            }
        }
        st.top.mount_id = None;
        Ok(())
    }
    fn open_files(&self) -> u64 {
        self.stack.lock().held_count()
    }
    fn cut_off_open_files(&self) {
        tracing::warn!(target = %self.shared.paths.target.display(), "files are still open in the overlay at the stop; stopping anyway");
    }
    /// The backup and the pin go. If programs still hold files of the overlay (a stop that
    /// could not wait), the store stays for the next mount to write what they add.
    fn release(&self) -> bool {
        let s = &self.shared;
        if !self.unused() {
            tracing::warn!(
                target = %s.paths.target.display(),
                store = %s.paths.store.display(),
                "files are still open in the unmounted overlay: what they write stays in the RAM store, and the next `asdfs mount` writes it"
            );
            return false;
        }
        if let Some(b) = &s.backups {
            let _w = self.disk_writers.lock();
            if let Err(e) = b.remove_all() {
                tracing::warn!(error = %e, "could not remove the hardlink backup");
            }
        }
        if let Err(e) = kernel::detach(&self.pin, true, None) {
            tracing::warn!(error = %e, pin = %self.pin.display(), "could not unmount the pinned disk directory");
        }
        // Never recursive: the pin is (or was) the user's own directory.
        let _ = crate::fsx::trusted::remove_dir(&self.pin);
        if let Some(pin_dir) = self.pin.parent() {
            let _ = crate::fsx::trusted::remove_dir(pin_dir);
        }
        true
    }
    fn pressed(&self) -> bool {
        // The upper layers hold only changes (and old layers programs still hold).
        crate::store::StoreSpace::of_dir(&self.shared.paths.private()).percent() >= 50
    }
    fn changes(&self) -> status::Changes {
        // A flush holds the layers: status then shows the last measure, and its progress.
        let flushing = *self.in_progress.lock();
        let measured = match self.stack.try_lock_for(Duration::from_millis(50)) {
            Some(st) => {
                let m = overlay_status::Measured::of(&st);
                *self.measured.lock() = m.clone();
                m
            }
            None => self.measured.lock().clone(),
        };
        overlay_status::changes(
            &measured,
            &self.shared.paths.private(),
            self.flusher.ledger().bytes_flushed(),
            self.flusher.busy_files(),
            flushing,
            (
                self.shared.settings.ram_limit.unwrap_or(0),
                self.shared.timer.pressure_flushes(),
            ),
        )
    }
}

/// Unmounts the pinned directory when dropped, unless disarmed.
struct Unpin(Option<PathBuf>);

impl Drop for Unpin {
    fn drop(&mut self) {
        if let Some(pin) = self.0.take() {
            let _ = kernel::detach(&pin, true, None);
            let _ = crate::fsx::trusted::remove_dir(&pin);
        }
    }
}

/// A fresh overlay over the disk copy (pinned at `lower`), its layers recorded, attached on
/// the target; the layers a previous session left are written to disk first. A failure
/// falls back to FUSE mode, and removes what this made.
fn fresh_stack(
    p: &TargetPaths,
    lower: &Path,
    saved: Saved,
    flusher: &OverlayFlusher,
    backing: &dyn Backing,
) -> Result<Stack, Start> {
    let private = p.private();
    write_left_layers(&private, &saved, flusher)?;
    let root = root_meta(backing)?;
    let n = saved
        .all_layers()
        .into_iter()
        .chain(layers::layer_numbers(&private))
        .max()
        .unwrap_or(0)
        + 1;
    let (mut stack, mnt) =
        Stack::fresh(&private, lower, n, &root).map_err(|e| Start::Fallback(format!("{e:#}")))?;
    let undo = |e: anyhow::Error| {
        remove_layer(&private, n);
        let _ = crate::fsx::trusted::remove_file(private.join("overlay.json"));
        Start::Fallback(format!("{e:#}"))
    };
    // Recorded before programs can write into it: from the attach on, a daemon taking over
    // finds it.
    stack.top.mount_id = Some(kernel::mount_id(&mnt).map_err(|e| undo(e.into()))?);
    stack.save().map_err(undo)?;
    kernel::attach(&mnt, &p.target, false, None).map_err(undo)?;
    Ok(stack)
}

/// Writes to disk the layers a session left when no overlay is on the target any more
/// (nothing can change them), oldest first, and removes them.
fn write_left_layers(private: &Path, saved: &Saved, f: &OverlayFlusher) -> anyhow::Result<()> {
    let unwritten = saved.unwritten(private);
    for n in &unwritten {
        let n = *n;
        let dir = upper_dir(private, n);
        if !dir.trusted_exists() {
            continue;
        }
        let upper = Upper::open(open_dir(&dir)?)?;
        let layer = Layer {
            upper: &upper,
            live: false,
            overlay: None,
            done: &Default::default(),
            held: &Default::default(),
        };
        f.flush(&layer, &|_, _| {}).with_context(|| {
            format!(
                "writing the layer {} a previous session left",
                dir.display()
            )
        })?;
        tracing::warn!(layer = n, "wrote to disk a layer the previous session left");
    }
    for n in saved.all_layers().into_iter().chain(unwritten) {
        remove_layer(private, n);
    }
    Ok(())
}

/// The disk copy's root attributes, for a new upper layer's root (which the overlay shows).
fn root_meta(disk: &dyn Backing) -> anyhow::Result<Meta> {
    let st = disk.stat(&Loc::target(""))?;
    Ok(Meta {
        mode: st.attr.mode,
        uid: st.attr.uid,
        gid: st.attr.gid,
        atime: st.attr.atime,
        mtime: st.attr.mtime,
        xattrs: Some(disk.read_xattrs(&Loc::target(""))?),
    })
}

/// A daemon killed in the middle of a layer swap (design.md §10) left the fresh overlay
/// mounted beneath the previous one, which it had not detached yet: two of our overlays on
/// the target. The swap is finished as it would have been: the one on top is detached
/// (lazily: programs holding it keep it; its upper layer is a lower layer of the fresh
/// overlay, so nothing written to it is lost). Then the target shows one overlay, the one
/// the mount table lists last and the path reaches.
fn finish_interrupted_swap(target: &Path) -> anyhow::Result<()> {
    let ours = |t: &Path| -> anyhow::Result<usize> {
        Ok(mounting::mounts()?
            .iter()
            .filter(|m| m.mount_point == t && m.is_asdfs())
            .count())
    };
    while ours(target)? > 1 {
        tracing::warn!(target = %target.display(), "finishing a layer swap a killed daemon left half done");
        kernel::detach(target, true, None)
            .with_context(|| format!("detaching the previous overlay of {}", target.display()))?;
    }
    Ok(())
}
