//! One target served in overlay mode (design.md §10): the checks and recovery shared with
//! FUSE mode, the directory holding the target pinned in the store, an overlay of the disk
//! copy with its upper layer in the store mounted over the target; then flushes (each one
//! swaps in a fresh upper layer, see `overlay::layers`), and at the end the final flush.

use super::lifecycle::{
    self, Begun, Phase, final_flush, flush_response, open_control, request_stop, write_owner,
};
use super::paths::{self, TargetPaths};
use super::timer::FlushTimer;
use super::{Event, Served, mounting, safety, status};
use crate::backing::{Backing, Loc, Meta};
use crate::backup::Backups;
use crate::config::TargetSettings;
use crate::control::{Request, Response};
use crate::flush::FlushReport;
use crate::fsx::{self, trusted::TrustedPath};
use crate::overlay::flush::{Layer, OverlayFlusher};
use crate::overlay::kernel;
use crate::overlay::layers::{self, Saved, Stack, open_dir, remove_layer, upper_dir};
use crate::overlay::upper::Upper;
use anyhow::Context;
use crossbeam_channel::Sender;
use nix::fcntl::{Flock, OFlag};
use parking_lot::Mutex;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
    settings: TargetSettings,
    paths: TargetPaths,
    _lock: Flock<File>,
    /// Keeps `systemd-tmpfiles --clean` out of the store while it is served.
    _aging: paths::AgingGuard,
    flusher: OverlayFlusher,
    stack: Mutex<Stack>,
    /// The directory holding the target, pinned by a bind mount in the store.
    pin: PathBuf,
    phase: Mutex<Phase>,
    timer: FlushTimer,
    started: SystemTime,
    backups: Option<Arc<Backups>>,
    backup_state: Arc<Mutex<String>>,
    /// Held by flushes and by the making of the backup (which needs the disk copy as it was).
    disk_writers: Arc<Mutex<()>>,
    crash: safety::CrashState,
    usage: Arc<Mutex<status::UsageState>>,
    disk_dir: Arc<OwnedFd>,
    events: Sender<Event>,
    idx: usize,
    /// The store's directories, checked at the start.
    dirs: paths::StoreDirs,
    /// The side directory beside the target, checked at the start.
    side: paths::Side,
}

fn dev_of(fd: &OwnedFd) -> u64 {
    nix::sys::stat::fstat(fd).map(|s| s.st_dev).unwrap_or(0)
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
        let Begun {
            target,
            paths: p,
            dirs,
            lock,
            mut undo,
            aging,
        } = lifecycle::begin(&settings)?;
        if p.private().join("log").trusted_exists() {
            return Err(Start::Fallback(
                "the previous session, in FUSE mode, left changes in its RAM store".into(),
            ));
        }
        lifecycle::clear_dead_mount(&p.target)?;
        let private = p.private();
        // `private/` was made (or checked) by prepare_store.
        let saved = Saved::read(&private);
        // The directory holding the target and its side directory, pinned in the store by a
        // bind mount: a daemon taking over reaches the disk copy under the overlay there,
        // on one mount with the side directory (a flush renames between them).
        // Outside `private/`: nothing ever deletes recursively through it. In `pin/`,
        // mode 0700: the store is 0711 (other users reach their control sockets), and the
        // pin's path is in /proc/mounts; through it the directory would be reachable past a
        // 0700 directory above it (`~/.cache` under `~`).
        let pin_dir = fsx::mkdir_private(&dirs.store, OsStr::new(PIN_DIR), 0o700, paths::me())?.0;
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
        let parent_dir = crate::fsx::Dir::open_strict(if pinned {
            &pin
        } else {
            p.target.parent().unwrap_or(Path::new("/"))
        })?;
        let name = p.target.file_name().unwrap_or_default().to_os_string();
        let disk_dir = nix::fcntl::openat(
            &parent_dir,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .with_context(|| format!("opening {}", p.target.display()))?;
        let side = paths::prepare_side(&p, parent_dir.try_clone()?, dev_of(&disk_dir))?;
        let (backing, backups) = safety::open_disk_in(&p, &settings, parent_dir.fd(), &side.dir)?;
        undo.add_side(&side)?;
        if !pinned {
            super::preflight::check(
                &p,
                &settings,
                std::os::fd::AsFd::as_fd(&disk_dir),
                backups.as_deref(),
                true,
            )?;
        }
        let safety::Recovered {
            generation,
            unclean,
            crash,
        } = safety::recover(
            &p,
            &settings,
            &side.dir,
            backing.as_ref(),
            backups.as_deref(),
        )?;
        if !pinned {
            // In the store, which only this user can change (paths::prepare_store).
            crate::fsx::trusted::create_dir_all(&pin)?;
            kernel::pin(parent_dir.fd(), &pin).map_err(|e| Start::Fallback(format!("{e:#}")))?;
        }
        // Until the overlay is on the target, a failure takes the pin away again.
        let mut unpin = Unpin((!pinned).then(|| pin.clone()));
        let lower = pin.join(&name);
        let flusher = OverlayFlusher::new(backing.clone(), generation);
        let stack = match (saved, live) {
            (Some(saved), Some(live)) => {
                tracing::warn!(target = %target.display(), "took over the overlay of a daemon that died; writing it to disk");
                Stack::adopt(
                    &private,
                    &lower,
                    saved,
                    &live.super_options,
                    &open_dir(&p.target)?,
                )?
            }
            (saved, None) => fresh_stack(
                &p,
                &lower,
                saved.unwrap_or_default(),
                &flusher,
                backing.as_ref(),
            )?,
            (None, Some(_)) => unreachable!("checked above: a live overlay has a pinned store"),
        };
        // The overlay is on the target: from here on a failure leaves it, with its record
        // and the pin, for the next mount to take over.
        unpin.0 = None;
        undo.disarm();
        stack.save()?;
        write_owner(&p, &settings, &dirs.store, &side.dir)?;
        let t = Arc::new(OverlayTarget {
            timer: FlushTimer::new(settings.flush_interval),
            settings,
            paths: p,
            _lock: lock,
            _aging: aging,
            flusher,
            stack: Mutex::new(stack),
            pin,
            phase: Mutex::new(Phase::Mounted),
            started: SystemTime::now(),
            backups,
            backup_state: Arc::new(Mutex::new("off".into())),
            disk_writers: Arc::default(),
            crash,
            usage: Arc::default(),
            disk_dir: Arc::new(disk_dir),
            events,
            idx,
            dirs,
            side,
        });
        t.serve(unclean)?;
        Ok(t)
    }

    /// Once the overlay is on the target: the backup and crash snapshot in the background,
    /// the first flush, the flush timer, the monitor and the control socket.
    fn serve(self: &Arc<Self>, unclean: bool) -> anyhow::Result<()> {
        if let Some(b) = self.backups.clone() {
            let lock = self.disk_writers.clone();
            safety::backup_in_background(
                self.backup_state.clone(),
                self.paths.target.clone(),
                move || {
                    let _w = lock.lock();
                    b.refresh()
                },
            );
        }
        safety::crash_snapshot_in_background(
            self.crash.clone(),
            self.backups.clone(),
            self.paths.target.clone(),
            self.settings.backup_limit,
            unclean,
        );
        if let Err(e) = self.flush(&|_, _| {}) {
            tracing::error!(error = %format!("{e:#}"), "the first flush failed; the changes stay in RAM");
        }
        status::measure(
            &self.usage,
            &self.disk_dir,
            self.flusher.ledger().disk_gen(),
        );
        FlushTimer::start(
            self.clone(),
            |t| &t.timer,
            |t| {
                t.flush(&|_, _| {})
                    .map(|_| ())
                    .map_err(|_| t.flusher.ledger().failures())
            },
            // The upper layers hold only changes (and old layers programs still hold).
            |t| crate::store::StoreSpace::of_dir(&t.paths.private()).percent() >= 50,
        );
        self.start_monitor();
        let c = self.clone();
        open_control(&self.paths, &self.disk_dir, move |req, report| {
            c.handle(req, report)
        })?;
        Ok(())
    }

    fn handle(&self, req: Request, report: crate::control::Report<'_>) -> Response {
        match req {
            Request::Flush => flush_response(&self.paths.target, self.flush(report)),
            Request::Status => Response {
                ok: true,
                message: String::new(),
                status: Some(super::overlay_status::of(self)),
                ..Response::default()
            },
            Request::Unmount => request_stop(&self.events, self.idx),
            Request::Readonly { on } => {
                super::readonly::answer(&self.paths.target, on, || self.flush(report))
            }
        }
    }

    /// Writes what programs changed to disk. While mounted: a fresh upper layer first (the
    /// old one, now read-only, is written), and another one after, so that the layers on disk
    /// leave the overlay and their RAM comes back. While a program holds a directory of the
    /// overlay, or once unmounted: the upper layer is written as it is.
    pub fn flush(&self, progress: &dyn Fn(u64, u64)) -> anyhow::Result<FlushReport> {
        let _w = self.disk_writers.lock();
        let mut st = self.stack.lock();
        let target = &self.paths.target;
        // An overlay remounted read-only is written as it is: a fresh layer would be a new,
        // writable mount (design.md §11).
        let mounted = *self.phase.lock() == Phase::Mounted
            && !self.timer.is_stopping()
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
            let live = *self.phase.lock() != Phase::Stopped || !self.unused_locked(&st);
            let r = st.flush_top(&self.flusher, live, root.as_ref(), progress)?;
            report = Some(layers::add(report, r));
        }
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
                    let phase = *t.phase.lock();
                    match phase {
                        Phase::Mounted if !t.still_mounted() => {
                            tracing::info!(target = %t.paths.target.display(), "unmounted by someone else");
                            *t.phase.lock() = Phase::Detached;
                            t.stack.lock().top.mount_id = None;
                        }
                        Phase::Detached if t.unused() => {
                            let _ = t.events.send(Event::SessionEnded(t.idx));
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
        let root = open_dir(&self.paths.target).ok()?;
        (kernel::mount_id(&root).ok()? == id).then_some(root)
    }

    /// No program holds anything in the current overlay or an older one.
    fn unused(&self) -> bool {
        self.unused_locked(&self.stack.lock())
    }

    fn unused_locked(&self, st: &Stack) -> bool {
        st.held_count() == 0
    }

    fn stop_timer(&self) {
        self.timer.stop();
    }

    fn remove_store(&self) {
        if let Some(b) = &self.backups {
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
        lifecycle::remove_store(&self.dirs, &self.side);
    }
}

impl Served for OverlayTarget {
    fn paths(&self) -> &TargetPaths {
        &self.paths
    }

    /// Flushes, then detaches the overlay. Files still open keep working; the session ends
    /// when the last is closed.
    fn begin_stop(&self, force: bool) -> Response {
        if *self.phase.lock() != Phase::Mounted {
            return Response::ok(format!(
                "{}: already unmounting",
                self.paths.target.display()
            ));
        }
        // Stopped first: the stop's flush then writes the top layer as it is (no fresh layer
        // is stacked under the detach). A mount kept after a failed flush has no timed
        // flushes any more; `asdfs flush` and the next unmount still write it.
        self.stop_timer();
        let mut failed = None;
        if let Err(e) = self.flush(&|_, _| {}) {
            if !force {
                return lifecycle::kept_mounted(&self.paths, &e);
            }
            tracing::warn!(error = %format!("{e:#}"), "flush before unmount failed; retrying after");
            failed = Some(e);
        }
        let mut st = self.stack.lock();
        // Our own hold would make the plain unmount busy: try it first.
        let plain = kernel::detach(&self.paths.target, false, st.top.mount_id);
        match plain {
            Ok(()) => st.top.gone = true,
            Err(_) => st.hold_top(&self.paths.target),
        }
        if let Err(e) = plain {
            let lazily = kernel::detach(&self.paths.target, true, st.top.mount_id);
            if e.raw_os_error() != Some(libc::EBUSY) || lazily.is_err() {
                return Response::err(format!("unmounting {}: {e}", self.paths.target.display()));
            }
        }
        st.top.mount_id = None;
        let open = st.held_count();
        drop(st);
        *self.phase.lock() = Phase::Detached;
        Response::ok(super::lifecycle::detached_message(
            &self.paths,
            open,
            failed.as_ref(),
        ))
    }

    /// The final flush (retried). If programs still hold files of the overlay (a stop that
    /// could not wait), the store stays for the next mount to write what they add.
    fn finish(&self) -> anyhow::Result<()> {
        self.stop_timer();
        *self.phase.lock() = Phase::Stopped;
        final_flush(&self.paths, || self.flush(&|_, _| {}))?;
        if !self.unused() {
            tracing::warn!(
                target = %self.paths.target.display(),
                store = %self.paths.store.display(),
                "files are still open in the unmounted overlay: what they write stays in the RAM store, and the next `asdfs mount` writes it"
            );
            return Ok(());
        }
        self.remove_store();
        Ok(())
    }

    fn open_files(&self) -> u64 {
        self.stack.lock().held_count()
    }

    fn cut_off_open_files(&self) {
        tracing::warn!(target = %self.paths.target.display(), "files are still open in the overlay at the stop; stopping anyway");
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

/// Read access for the status report.
impl OverlayTarget {
    pub(super) fn settings(&self) -> &TargetSettings {
        &self.settings
    }
    pub(super) fn target_paths(&self) -> &TargetPaths {
        &self.paths
    }
    pub(super) fn flusher(&self) -> &OverlayFlusher {
        &self.flusher
    }
    pub(super) fn phase(&self) -> Phase {
        *self.phase.lock()
    }
    /// Pressure flushes so far (status).
    pub(super) fn pressure_flushes(&self) -> u64 {
        self.timer.pressure_flushes()
    }

    pub(super) fn next_flush(&self) -> Instant {
        self.timer.next()
    }
    pub(super) fn started(&self) -> SystemTime {
        self.started
    }
    pub(super) fn backup(&self) -> String {
        self.backup_state.lock().clone()
    }
    pub(super) fn crash(&self) -> Option<String> {
        self.crash.lock().clone()
    }
    pub(super) fn disk(&self) -> Option<crate::status::DiskUsage> {
        status::disk_usage(
            &self.usage,
            &self.disk_dir,
            self.flusher.ledger().disk_gen(),
        )
    }
    /// Names not yet on disk, the RAM of all layers, and files held open.
    pub(super) fn layers(&self) -> (Vec<crate::overlay::upper::UpperEntry>, u64, u64) {
        let st = self.stack.lock();
        let (pending, ram) = st.pending();
        (pending, ram, st.held_count())
    }
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
