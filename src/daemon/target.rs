//! One target served by the daemon: from the checks before mounting, through recovery and
//! takeover, the mount, the flush timer and the control socket, to the final flush.

use super::lifecycle::{
    self, Begun, Phase, clear_dead_mount, final_flush, flush_response, kept_mounted, open_control,
    remove_store, request_stop, write_owner,
};
use super::paths::{self, TargetPaths};
use super::timer::FlushTimer;
use super::{Event, mounting, safety, status};
use crate::backing::Backing;
use crate::config::{FsyncPolicy, TargetSettings};
use crate::control::{self, Request, Response};
use crate::flush::Flusher;
use crate::fsx::trusted::TrustedPath;
use crate::fuse::{AsdFs, SyncHook};
use crate::store::types::NodeId;
use crate::store::{Store, StoreSetup};
use anyhow::Context;
use crossbeam_channel::Sender;
use nix::fcntl::Flock;
use parking_lot::Mutex;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// FUSE request threads per target.
const FUSE_THREADS: usize = 4;

pub struct Target {
    pub settings: TargetSettings,
    pub paths: TargetPaths,
    pub store: Arc<Store>,
    pub flusher: Arc<Flusher>,
    _lock: Flock<File>,
    /// Keeps `systemd-tmpfiles --clean` out of the store while it is served.
    _aging: paths::AgingGuard,
    pub(super) phase: Mutex<Phase>,
    pub(super) timer: FlushTimer,
    pub(super) started: SystemTime,
    pub(super) backups: Option<Arc<crate::backup::Backups>>,
    /// What the hardlink backup is doing, for status.
    pub(super) backup_state: Arc<Mutex<String>>,
    /// What happened at start if the previous session ended uncleanly.
    pub(super) crash: safety::CrashState,
    /// The disk copy's size, measured in the background (status::disk_usage).
    pub(super) usage: Arc<Mutex<status::UsageState>>,
    /// The disk copy's directory, opened before the mount covered it.
    pub(super) disk_dir: Arc<std::os::fd::OwnedFd>,
    /// The FUSE connection number, to abort it if a stop must not wait for open files.
    fuse_conn: Mutex<Option<u64>>,
    /// The id of the FUSE mount root made (`mounting::FuseMount`).
    mount_id: Mutex<Option<u64>>,
    /// The store's directories, checked at the start.
    dirs: paths::StoreDirs,
    /// The side directory beside the target, checked at the start.
    side: paths::Side,
}

impl Target {
    /// Checks, recovers, takes over or creates the store, and mounts. Returns once the mount
    /// is live.
    pub fn start(
        settings: TargetSettings,
        events: Sender<Event>,
        idx: usize,
        _progress: safety::Progress<'_>,
    ) -> anyhow::Result<Arc<Target>> {
        debug_assert_eq!(settings.mode, crate::config::Mode::Fuse);
        let Begun {
            target,
            paths: p,
            dirs,
            lock,
            mut undo,
            aging,
        } = lifecycle::begin(&settings)?;
        clear_dead_mount(&p.target)?;
        paths::resolve_target(&p.target)?;
        // The target's parent with no symlink anywhere in its path, and the target opened
        // beneath it: what is mounted on and flushed to is what was checked, whatever a
        // user renames meanwhile (docs/security.md R1).
        let parent = crate::fsx::Dir::open_strict(p.target.parent().unwrap_or(Path::new("/")))?;
        let disk_dir = Arc::new(safety::open_target_in(&parent, &p.target)?);
        let side = paths::prepare_side(&p, parent, safety::dev_of(&disk_dir)?)?;
        undo.add_side(&side)?;
        let (backing, backups) = safety::open_disk(&p, &settings, &side)?;
        let taking_over = p.private().join("log").trusted_exists();
        super::preflight::check(
            &p,
            &settings,
            std::os::fd::AsFd::as_fd(&*disk_dir),
            backups.as_deref(),
            !taking_over,
        )?;
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
        let (store, took_over) = open_store(&p, backing, generation)?;
        if let Some(n) = settings.open_files {
            store.set_open_files(n);
        }
        store
            .seen
            .set_sink(p.target.clone(), safety::conflict_sink(&p, &side)?);
        let flusher = Arc::new(Flusher::new(store.clone(), generation));
        if took_over {
            tracing::warn!(target = %target.display(), "took over the RAM store of a daemon that died; writing it to disk");
            if let Err(e) = flusher.flush() {
                tracing::error!(error = %format!("{e:#}"), "flushing the recovered store failed; it stays in RAM");
            }
        }
        // On a tmpfs that data filled, the new owner.json is written in the log's reserve.
        store.lend_reserve(|| write_owner(&p, &settings, &dirs.store, &side.dir))?;
        undo.session = Some(side.dir.try_clone()?);
        let t = Arc::new(Target {
            timer: FlushTimer::new(settings.flush_interval),
            settings,
            paths: p,
            store,
            flusher,
            _lock: lock,
            _aging: aging,
            phase: Mutex::new(Phase::Mounted),
            started: SystemTime::now(),
            backups,
            backup_state: Arc::new(Mutex::new("off".into())),
            crash,
            usage: Arc::default(),
            disk_dir,
            fuse_conn: Mutex::new(None),
            mount_id: Mutex::new(None),
            dirs,
            side,
        });
        t.mount(events.clone(), idx)?;
        undo.disarm();
        t.serve(unclean, events, idx)?;
        Ok(t)
    }

    /// Once the mount is live: the backup and crash snapshot in the background, the flush
    /// timer and the control socket.
    fn serve(
        self: &Arc<Self>,
        unclean: bool,
        events: Sender<Event>,
        idx: usize,
    ) -> anyhow::Result<()> {
        safety::refresh_backup(
            &self.store,
            self.backups.clone(),
            self.backup_state.clone(),
            self.paths.target.clone(),
        );
        safety::crash_snapshot_in_background(
            self.crash.clone(),
            self.backups.clone(),
            self.paths.target.clone(),
            self.settings.backup_limit,
            unclean,
        );
        status::measure(
            &self.usage,
            &self.disk_dir,
            self.flusher.ledger().disk_gen(),
        );
        FlushTimer::start(
            self.clone(),
            |t| &t.timer,
            |t| {
                t.flusher
                    .flush()
                    .map(|_| ())
                    .map_err(|_| t.flusher.ledger().failures())
            },
        );
        self.start_control(events, idx)
    }

    /// Detaches the mount: through the descriptor of the mount when root made it, so the
    /// target's path (in a directory its owner controls) is not resolved again.
    fn unmount(&self) -> anyhow::Result<()> {
        // Copied out: no lock is held across the unmount.
        let mount_id = *self.mount_id.lock();
        match mount_id {
            Some(id) => mounting::unmount_checked(
                &self.side.parent,
                self.paths.target.file_name().unwrap_or_default(),
                id,
                &self.paths.target,
            ),
            None => mounting::unmount(&self.paths.target),
        }
    }

    fn mount(&self, events: Sender<Event>, idx: usize) -> anyhow::Result<()> {
        let root = self.store.getattr(NodeId::ROOT)?;
        let mode = libc::S_IFDIR | root.attr.mode;
        self.store
            .set_relatime(self.settings.atime == crate::config::Atime::Relatime);
        let mounted = mounting::mount_fuse(
            &self.paths.target,
            std::os::fd::AsFd::as_fd(&*self.disk_dir),
            mode,
            self.settings.atime,
        )?;
        let dev = mounted.dev;
        *self.mount_id.lock() = mounted.mount_id;
        *self.fuse_conn.lock() = mounting::fuse_connection(&self.paths.target);
        let hook: Option<SyncHook> = match self.settings.fsync {
            FsyncPolicy::Sync => {
                let f = self.flusher.clone();
                Some(Arc::new(move || f.flush().map(|_| ())))
            }
            FsyncPolicy::Defer => None,
        };
        let fs = AsdFs::new(self.store.clone(), hook, self.settings.data_path);
        let mut cfg = fuser::Config::default();
        cfg.n_threads = Some(FUSE_THREADS);
        cfg.clone_fd = true;
        cfg.acl = fuser::SessionACL::All;
        let session = match fuser::Session::from_fd(fs, dev.into(), fuser::SessionACL::All, cfg) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.unmount();
                return Err(e).context("starting the FUSE session");
            }
        };
        std::thread::Builder::new()
            .name("fuse-session".into())
            .spawn(move || {
                // Sent however the session ends, a panic too: the main loop waits for it.
                struct Ended(Sender<Event>, usize);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        let _ = self.0.send(Event::SessionEnded(self.1));
                    }
                }
                let _ended = Ended(events, idx);
                if let Err(e) = session.run() {
                    tracing::error!(error = %e, "FUSE session ended with an error");
                }
            })?;
        Ok(())
    }

    fn start_control(self: &Arc<Self>, events: Sender<Event>, idx: usize) -> anyhow::Result<()> {
        let t = self.clone();
        open_control(&self.paths, &self.disk_dir, move |req, report| {
            t.handle(req, report, &events, idx)
        })
    }

    fn handle(
        &self,
        req: Request,
        report: control::Report<'_>,
        events: &Sender<Event>,
        idx: usize,
    ) -> Response {
        match req {
            Request::Flush => {
                flush_response(&self.paths.target, self.flusher.flush_reporting(report))
            }
            Request::Status => Response {
                ok: true,
                message: String::new(),
                status: Some(status_of(self)),
                ..Response::default()
            },
            Request::Unmount => request_stop(events, idx),
            Request::Readonly { on } => {
                self.store.set_read_only(on);
                super::readonly::answer(&self.paths.target, on, || {
                    self.flusher.flush_reporting(report)
                })
            }
        }
    }

    /// Flushes, then detaches the mount. Files still open keep working; the session ends
    /// when the last is closed. A flush that fails keeps the mount unless `force`.
    fn stop(&self, force: bool) -> Response {
        if *self.phase.lock() != Phase::Mounted {
            return Response::ok(format!(
                "{}: already unmounting",
                self.paths.target.display()
            ));
        }
        self.timer.pause(true);
        let mut failed = None;
        if let Err(e) = self.flusher.flush() {
            if !force {
                self.timer.pause(false);
                return kept_mounted(&self.paths, &e);
            }
            tracing::warn!(error = %format!("{e:#}"), "flush before unmount failed; retrying after");
            failed = Some(e);
        }
        self.stop_timer();
        if let Err(e) = self.unmount() {
            return Response::err(format!("{e:#}"));
        }
        *self.phase.lock() = Phase::Detached;
        let open = self.store.summary().open_handles;
        Response::ok(super::lifecycle::detached_message(
            &self.paths,
            open,
            failed.as_ref(),
        ))
    }

    /// At a stop that cannot wait any longer for programs to close their files: cuts them
    /// off (their next request fails with ENOTCONN, so nothing they write is silently
    /// dropped); the session then ends and `finish` writes everything to disk.
    fn cut_off(&self) {
        let open = self.store.summary().open_handles;
        tracing::warn!(target = %self.paths.target.display(), open, "files still open at the stop: cutting them off; what was written through them is flushed");
        let conn = *self.fuse_conn.lock();
        match conn.map(|c| mounting::abort_connection(c, &self.paths.store)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "could not abort the FUSE connection")
            }
            None => tracing::warn!("the FUSE connection is not known; cannot cut off open files"),
        }
    }

    fn stop_timer(&self) {
        self.timer.stop();
    }

    /// After the session ended: the final flush (retried), then the store is removed. If the
    /// flush keeps failing the store stays on tmpfs for the next mount to recover.
    fn end(&self) -> anyhow::Result<()> {
        self.stop_timer();
        *self.phase.lock() = Phase::Stopped;
        final_flush(&self.paths, || self.flusher.flush())?;
        safety::remove_backup(&self.store, self.backups.as_deref());
        self.remove_store();
        Ok(())
    }

    fn remove_store(&self) {
        remove_store(&self.dirs, &self.side);
    }
}

impl super::Served for Target {
    fn paths(&self) -> &TargetPaths {
        &self.paths
    }
    fn begin_stop(&self, force: bool) -> Response {
        self.stop(force)
    }
    fn finish(&self) -> anyhow::Result<()> {
        self.end()
    }
    fn open_files(&self) -> u64 {
        self.store.summary().open_handles
    }
    fn cut_off_open_files(&self) {
        self.cut_off()
    }
}

fn open_store(
    p: &TargetPaths,
    backing: Arc<dyn Backing>,
    generation: u64,
) -> anyhow::Result<(Arc<Store>, bool)> {
    let private = p.private();
    let setup = StoreSetup {
        backing,
        private_dir: &private,
        target: &p.target,
        base_gen: generation,
    };
    if private.join("log").trusted_exists() {
        let s = Store::take_over(setup)
            .with_context(|| format!("taking over the RAM store in {}", p.store.display()))?;
        return Ok((Arc::new(s), true));
    }
    Ok((
        Arc::new(Store::fresh(setup).context("creating the RAM store")?),
        false,
    ))
}

impl status::Lifecycle for Target {
    fn mode_name(&self) -> &'static str {
        "fuse"
    }
    fn settings(&self) -> &TargetSettings {
        &self.settings
    }
    fn target_paths(&self) -> &TargetPaths {
        &self.paths
    }
    fn phase(&self) -> Phase {
        *self.phase.lock()
    }
    fn started(&self) -> SystemTime {
        self.started
    }
    fn ledger(&self) -> &crate::flush::Ledger {
        self.flusher.ledger()
    }
    fn next_flush(&self) -> std::time::Instant {
        self.timer.next()
    }
    fn backup(&self) -> String {
        self.backup_state.lock().clone()
    }
    fn crash(&self) -> Option<String> {
        self.crash.lock().clone()
    }
    fn disk(&self) -> Option<crate::status::DiskUsage> {
        status::disk_usage(
            &self.usage,
            &self.disk_dir,
            self.flusher.ledger().disk_gen(),
        )
    }
}

/// FUSE mode's status: what changed is the store's dirty state.
fn status_of(t: &Target) -> crate::status::Status {
    let s = t.store.summary();
    let space = t.store.space();
    let now = SystemTime::now();
    let changes = status::Changes {
        data_path: if s.passthrough {
            "passthrough"
        } else {
            "daemon"
        }
        .into(),
        busy_copies: s.busy_copies,
        busy_files: s.busy_files,
        flushing: t.flusher.in_progress().map(|(bytes_done, bytes_total)| {
            crate::status::FlushProgress {
                bytes_done,
                bytes_total,
            }
        }),
        ram_bytes: s.ram_bytes,
        warning: space.warning(),
        space,
        dirty_files: s.dirty_files,
        dirty_dirs: s.dirty_dir_count,
        dirty_bytes: s.dirty_bytes,
        oldest_change_secs: s
            .dirty_since
            .map(|d| now.duration_since(d).map(|x| x.as_secs()).unwrap_or(0)),
        bytes_written: s.counters.bytes_written,
        open_files: s.open_handles,
        log_failures: s.log_failures,
        conflicts: t.store.seen.kept(),
    };
    status::report(t, changes)
}
