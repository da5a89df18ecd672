//! One target served by the daemon: from the checks before mounting, through recovery and
//! takeover, the mount, the flush timer and the control socket, to the final flush.

use super::lifecycle::{self, Mode, Opened, Shared, clear_dead_mount, write_owner};
use super::{Event, mounting, safety, status};
use crate::config::{FsyncPolicy, TargetSettings};
use crate::flush::{FlushReport, Flusher, Ledger};
use crate::fsx::trusted::TrustedPath;
use crate::fuse::{AsdFs, SyncHook};
use crate::store::types::NodeId;
use crate::store::{Store, StoreSetup};
use anyhow::Context;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// FUSE request threads per target.
const FUSE_THREADS: usize = 4;

pub struct Target {
    shared: Shared,
    pub store: Arc<Store>,
    pub flusher: Arc<Flusher>,
    /// The FUSE connection number, to abort it if a stop must not wait for open files.
    fuse_conn: Mutex<Option<u64>>,
    /// The id of the FUSE mount root made (`mounting::FuseMount`).
    mount_id: Mutex<Option<u64>>,
    /// The FUSE session ended: the kernel let go of the mount (no file of it is open any
    /// more), or its connection was aborted.
    session_ended: Arc<AtomicBool>,
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
        let begun = lifecycle::begin(&settings)?;
        let p = &begun.paths;
        refuse_stale_writers(&begun, settings.force)?;
        clear_dead_mount(&p.target)?;
        crate::daemon::paths::resolve_target(&p.target)?;
        let parent = crate::fsx::Dir::open_strict(p.target.parent().unwrap_or(Path::new("/")))?;
        let taking_over = p.private().join("log").trusted_exists();
        let opened = lifecycle::open_disk(begun, &settings, parent, Some(!taking_over))?;
        let (store, flusher) = open_store(&opened, &settings)?;
        let (p, side) = (&opened.begun.paths, &opened.side);
        // On a tmpfs that data filled, the new owner.json is written in the log's reserve.
        store.lend_reserve(|| write_owner(p, &settings, &opened.begun.dirs.store, &side.dir))?;
        let unclean = opened.recovered.unclean;
        let (shared, mut undo) = opened.into_shared(settings, events, idx);
        undo.session = Some(shared.side.dir.try_clone()?);
        let t = Arc::new(Target {
            shared,
            store,
            flusher,
            fuse_conn: Mutex::new(None),
            mount_id: Mutex::new(None),
            session_ended: Arc::new(AtomicBool::new(false)),
        });
        // Not given up (`hang::watched`): from here on the start mounts.
        crate::hang::commit()?;
        t.mount()?;
        undo.disarm();
        safety::refresh_backup(
            &t.store,
            t.shared.backups.clone(),
            t.shared.backup_state.clone(),
            t.shared.paths.target.clone(),
        );
        let weak = Arc::downgrade(&t);
        t.store.set_pressure_hook(Box::new(move || {
            weak.upgrade().is_some_and(|t| t.shared.timer.flush_now())
        }));
        lifecycle::serve(&t, unclean)?;
        Ok(t)
    }

    /// Detaches the mount: through the descriptor of the mount when root made it, so the
    /// target's path (in a directory its owner controls) is not resolved again.
    fn unmount(&self) -> anyhow::Result<()> {
        // Copied out: no lock is held across the unmount.
        let mount_id = *self.mount_id.lock();
        match mount_id {
            Some(id) => mounting::unmount_checked(
                &self.shared.side.parent,
                self.shared.paths.target.file_name().unwrap_or_default(),
                id,
                &self.shared.paths.target,
            ),
            None => mounting::unmount(&self.shared.paths.target),
        }
    }

    fn mount(&self) -> anyhow::Result<()> {
        let (events, idx) = (self.shared.events.clone(), self.shared.idx);
        let ended = self.session_ended.clone();
        let root = self.store.getattr(NodeId::ROOT)?;
        let mode = libc::S_IFDIR | root.attr.mode;
        self.store
            .set_relatime(self.shared.settings.atime == crate::config::Atime::Relatime);
        let mounted = mounting::mount_fuse(
            &self.shared.paths.target,
            std::os::fd::AsFd::as_fd(&*self.shared.disk_dir),
            mode,
            self.shared.settings.atime,
        )?;
        let dev = mounted.dev;
        *self.mount_id.lock() = mounted.mount_id;
        *self.fuse_conn.lock() = mounting::fuse_connection(&self.shared.paths.target);
        let hook: Option<SyncHook> = match self.shared.settings.fsync {
            FsyncPolicy::Sync => {
                let f = self.flusher.clone();
                self.store.track_writes(true);
                Some(Arc::new(move |node| match node {
                    Some(n) => f.fsync(n).map(|_| ()),
                    None => f.flush().map(|_| ()),
                }))
            }
            FsyncPolicy::Defer => None,
        };
        let fs = AsdFs::new(self.store.clone(), hook, self.shared.settings.data_path);
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
        // Attributes the store changes in replies that carry none are invalidated in the
        // kernel (QA F7); the hook holds /dev/fuse, so it goes with the session.
        self.store
            .set_attrs_hook(Some(crate::fuse::attrs_invalidator(session.notifier())));
        let store = self.store.clone();
        std::thread::Builder::new()
            .name("fuse-session".into())
            .spawn(move || {
                // Sent however the session ends, a panic too: the main loop waits for it.
                struct Ended(Sender<Event>, usize, Arc<AtomicBool>, Arc<Store>);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        self.3.set_attrs_hook(None);
                        self.2.store(true, Ordering::SeqCst);
                        let _ = self.0.send(Event::SessionEnded(self.1));
                    }
                }
                let _ended = Ended(events, idx, ended, store);
                if let Err(e) = session.run() {
                    tracing::error!(error = %e, "FUSE session ended with an error");
                }
            })?;
        Ok(())
    }

    /// At a stop that cannot wait any longer for programs to close their files: cuts them
    /// off, so that nothing they write from now on is acknowledged and then lost (design.md
    /// §4.1 "A stop with files open"). The store is fenced: every change fails with EROFS,
    /// writes through files the kernel writes itself (passthrough) too. Where no file is
    /// open for writing through the kernel the connection is also aborted (the next request
    /// fails with ENOTCONN) and the session ends; otherwise it must go on answering, as
    /// that is how the kernel's writes are refused, and it ends when the holders close (or
    /// `release` keeps the store). `finish` then writes everything to disk.
    fn cut_off(&self) {
        let open = self.store.summary().open_handles;
        self.store.fence();
        let writers = self.store.kernel_writers();
        let target = self.shared.paths.target.display();
        if writers > 0 {
            self.refresh_kernel_writers();
            tracing::warn!(%target, open, writers, "files still open at the stop: their writes fail from now on (EROFS), and what was written through them is flushed");
            return;
        }
        tracing::warn!(%target, open, "files still open at the stop: cutting them off; what was written through them is flushed");
        let conn = *self.fuse_conn.lock();
        match conn.map(|c| mounting::abort_connection(c, &self.shared.paths.store)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "could not abort the FUSE connection")
            }
            None => tracing::warn!("the FUSE connection is not known; cannot cut off open files"),
        }
    }

    /// Makes the kernel ask before the next write through each file held for writing on
    /// this mount. With `FUSE_HANDLE_KILLPRIV_V2` it stops asking (`S_NOSEC`) after an
    /// inode's first write, and only fresh attributes from the daemon re-arm the question:
    /// a stat forced to reach the daemon, through the holder's own descriptor (/proc), gives
    /// them. Covered: every descriptor open for writing in some process's descriptor table
    /// (/proc/PID/fdinfo), on our mount or on any copy of it that a process's mount
    /// namespace has (another namespace's copy has its own mount id: all mounts of our
    /// FUSE device listed in any /proc/PID/mountinfo count), named or unlinked. Not
    /// covered: a descriptor in no table (in flight in an `SCM_RIGHTS` message, or an
    /// io_uring fixed file), one on a copy of the mount in a namespace no process is in,
    /// and writes through a shared writable mapping (no request precedes them).
    fn refresh_kernel_writers(&self) {
        let Some(id) = *self.mount_id.lock() else {
            return;
        };
        let Some(conn) = *self.fuse_conn.lock() else {
            return;
        };
        // The connection number is the FUSE device's number as the kernel encodes it.
        let dev = format!("{}:{}", conn >> 20, conn & 0xf_ffff);
        let mut ids = crate::overlay::holders::mount_ids_of(&dev);
        ids.insert(id);
        // A write that ends while the answer is on its way makes the kernel drop it as
        // stale (and keep `S_NOSEC`): a few rounds, as a writer's next write, once asked
        // about, fails and changes nothing.
        for round in 0..3 {
            if round > 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            for link in crate::overlay::holders::writable_fds_on(&ids) {
                if let Err(e) = refresh_through(&link, &ids, &dev) {
                    tracing::debug!(link = %link.display(), error = %e, "refreshing a held file's attributes");
                }
            }
        }
    }

    /// Whether the store must outlive this daemon: a stop that could not wait fenced it
    /// while programs held files the kernel writes itself, and they hold them still. Once
    /// the daemon exits the kernel lets their writes through again (it ignores the failed
    /// question before each); the store log keeps those files dirty, so the next mount's
    /// takeover writes what they wrote. Says so in one line.
    fn holders_outlive_us(&self) -> bool {
        let writers = self.store.kernel_writers();
        if !self.store.fenced() || self.session_ended.load(Ordering::SeqCst) || writers == 0 {
            return false;
        }
        let (t, store) = (
            self.shared.paths.target.display(),
            self.shared.paths.store.display(),
        );
        let held = crate::human::count(writers, "file");
        let mount = match &self.shared.settings.volatile {
            Some(v) => format!("asdfs mount --volatile {} {t}", v.display()),
            None => format!("asdfs mount {t}"),
        };
        tracing::warn!(
            "{t}: {held} still open for writing at the end: the store stays in {store} with what is written to them from now on, and `{mount}` writes it to disk once they are closed"
        );
        // The next start must know whose descriptors still write into this store.
        if let Some(id) = *self.mount_id.lock() {
            let recorded = crate::fsx::write_atomic(
                &self.shared.dirs.store,
                std::ffi::OsStr::new(HELD_MOUNT),
                id.to_string().as_bytes(),
                0o600,
            );
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "recording the mount the holders use");
            }
        }
        true
    }
}

/// In a store kept for programs that held files open for writing at the end (§4.1 "A stop
/// with files open"): the id of the mount their descriptors are on.
const HELD_MOUNT: &str = "held-mount";

/// Refuses a start (unless `force`) while programs still write, through the kernel
/// (passthrough), into the store's data files by descriptors of a previous session: the
/// mount of a daemon that died, still on the target, or the one a stopped daemon recorded
/// when it kept the store for them. The new session would serve other copies of those
/// files, and what they write from then on would be lost without an error (QA). With
/// `force` it starts and says so; the data files they write are not the new session's
/// (`Store` gives every file a fresh one at a takeover).
fn refuse_stale_writers(begun: &lifecycle::Begun, force: bool) -> anyhow::Result<()> {
    let p = &begun.paths;
    let mounts = mounting::mounts().unwrap_or_default();
    let mut ids: HashSet<u64> = HashSet::new();
    let mut devs: Vec<String> = Vec::new();
    for m in mounts
        .iter()
        .filter(|m| m.mount_point == p.target && m.fstype == mounting::FSTYPE)
    {
        ids.insert(m.id);
        devs.push(m.dev.clone());
        // Its copies in other mount namespaces (unshare -m, containers) too.
        ids.extend(crate::overlay::holders::mount_ids_of(&m.dev));
    }
    let store = &begun.dirs.store;
    let recorded = crate::fsx::read_nofollow(store, std::ffi::OsStr::new(HELD_MOUNT), 64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    // An id the mount table has again is another mount's now.
    ids.extend(recorded.filter(|id| mounts.iter().all(|m| m.id != *id)));
    let writers = crate::overlay::holders::writable_fds_on(&ids);
    // A passthrough mapping outlives the descriptor and the daemon.
    let mapped = crate::overlay::holders::shared_writable_maps_on(&devs);
    if writers.is_empty() && mapped.is_empty() {
        let _ = crate::fsx::unlink(store, std::ffi::OsStr::new(HELD_MOUNT));
        return Ok(());
    }
    let named: Vec<String> = writers
        .iter()
        .map(|l| describe_holder(l))
        .chain(mapped.iter().cloned())
        .take(5)
        .collect();
    let held = crate::human::count((writers.len() + mapped.len()) as u64, "file");
    let t = p.target.display();
    if !force {
        anyhow::bail!(
            "{t}: {held} of the previous session still open for writing ({}): what they write from now on would not reach a new session; close them, then mount again (--force mounts anyway, and their later writes are lost)",
            named.join("; ")
        );
    }
    tracing::warn!(
        "{t}: --force: {held} of the previous session still open for writing ({}): what they write from now on is not kept",
        named.join("; ")
    );
    let _ = crate::fsx::unlink(store, std::ffi::OsStr::new(HELD_MOUNT));
    Ok(())
}

/// "pid N (comm) holds PATH" for a /proc/PID/fd/N link: readlink and /proc text only.
fn describe_holder(link: &Path) -> String {
    let pid = link
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|s| s.to_str())
        .unwrap_or("?");
    let comm = crate::fsx::trusted::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let file = crate::fsx::trusted::read_link(link)
        .map(|f| f.display().to_string())
        .unwrap_or_else(|_| "a file".into());
    format!("pid {pid} ({}) holds {file}", comm.trim())
}

/// Forces a GETATTR of the file a program's descriptor (`/proc/PID/fd/N`) names, if it is
/// still on one of the mounts `mount_ids` (ours and its copies) and on our FUSE device `dev`
/// ("major:minor"): opened `O_PATH` (which asks no filesystem) and checked first, as the
/// program may have put something else under that number meanwhile (a file on a FUSE mount
/// that never answers would hang the stop), and a copy's mount id may have been freed and
/// given to another mount since it was read (so the device is checked too, from what the
/// kernel has cached: `fsx::trusted::dev_cached`).
fn refresh_through(link: &Path, mount_ids: &HashSet<u64>, dev: &str) -> std::io::Result<()> {
    use crate::fsx::trusted::TrustedOpen;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .trusted_open(link)?;
    let fd = std::os::fd::OwnedFd::from(f);
    if !mounting::mount_id_of_fd(&fd).is_some_and(|id| mount_ids.contains(&id))
        || crate::fsx::trusted::dev_cached(fd.as_fd())? != dev
    {
        return Ok(());
    }
    crate::fsx::trusted::stat_forced(fd.as_fd())
}

/// The RAM store, taken over from a daemon that died (its changes then written to disk
/// first) or made fresh, and its flusher.
fn open_store(o: &Opened, settings: &TargetSettings) -> anyhow::Result<(Arc<Store>, Arc<Flusher>)> {
    let p = &o.begun.paths;
    let generation = o.recovered.generation;
    let private = p.private();
    let setup = StoreSetup {
        backing: o.backing.clone(),
        private_dir: &private,
        target: &p.target,
        base_gen: generation,
    };
    let took_over = private.join("log").trusted_exists();
    let store = Arc::new(if took_over {
        Store::take_over(setup)
            .with_context(|| format!("taking over the RAM store in {}", p.store.display()))?
    } else {
        Store::fresh(setup).context("creating the RAM store")?
    });
    if let Some(n) = settings.open_files {
        store.set_open_files(n);
    }
    store.set_ram_limit(
        settings
            .ram_limit
            .unwrap_or_else(crate::config::default_ram_limit),
    );
    store.seen.set_sink(
        p.target.clone(),
        safety::conflict_sink(p, &o.side, &o.disk_dir)?,
    );
    let flusher = Arc::new(Flusher::new(store.clone(), generation));
    if took_over && !o.recovered.resync.is_empty() {
        // Recovery salvaged the flush this store was rebased onto (design.md §7).
        let n = store.resync(&o.recovered.resync);
        tracing::warn!(nodes = n, "written again after a salvaged flush");
    }
    if took_over {
        tracing::warn!(target = %p.target.display(), "took over the RAM store of a daemon that died; writing it to disk");
        if let Err(e) = flusher.flush() {
            tracing::error!(error = %format!("{e:#}"), "flushing the recovered store failed; it stays in RAM");
        }
        store.finish_renewal()?;
    }
    Ok((store, flusher))
}

impl Mode for Target {
    fn shared(&self) -> &Shared {
        &self.shared
    }
    fn mode_name(&self) -> &'static str {
        "fuse"
    }
    fn ledger(&self) -> &Ledger {
        self.flusher.ledger()
    }
    fn flush(&self, progress: &dyn Fn(u64, u64)) -> anyhow::Result<FlushReport> {
        self.flusher.flush_reporting(progress)
    }
    fn hold_timed_flushes(&self, hold: bool) {
        self.shared.timer.pause(hold);
    }
    fn detach(&self) -> anyhow::Result<()> {
        self.unmount()
    }
    fn open_files(&self) -> u64 {
        self.store.summary().open_handles
    }
    fn cut_off_open_files(&self) {
        self.cut_off()
    }
    fn mounted_elsewhere(&self) -> Option<u32> {
        let conn = (*self.fuse_conn.lock())?;
        crate::overlay::holders::other_namespace_mounting(&format!(
            "{}:{}",
            conn >> 20,
            conn & 0xf_ffff
        ))
    }
    fn release(&self) -> bool {
        if self.holders_outlive_us() {
            return false;
        }
        safety::remove_backup(&self.store, self.shared.backups.as_deref());
        true
    }
    fn changes(&self) -> status::Changes {
        changes(self)
    }
    fn pressed(&self) -> bool {
        self.store.pressed()
    }
    fn set_read_only(&self, on: bool) {
        self.store.set_read_only(on);
    }
}

/// FUSE mode's measure of what changed: the store's dirty state.
fn changes(t: &Target) -> status::Changes {
    let s = t.store.summary();
    let space = t.store.space();
    let now = SystemTime::now();
    let ram_used = s.ram_bytes + space.log_bytes + space.log_reserve;
    status::Changes {
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
        ram: crate::status::RamBudget {
            limit_bytes: s.ram_limit,
            used_bytes: ram_used,
            dirty_bytes: s.dirty_bytes,
            evictable_bytes: s.evictable_bytes,
            evictions: s.evictions,
            evicted_bytes: s.evicted_bytes,
            pressure_flushes: t.shared.timer.pressure_flushes(),
        },
    }
}
