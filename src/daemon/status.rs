//! Assembling a target's status report: what both modes know alike (`Facts`, gathered by
//! `lifecycle::status_of`) and each mode's own measure of its changes (`Changes`, from
//! `target.rs` and `overlay_status.rs`); the disk copy's size, measured in the background.

use super::paths::TargetPaths;
use crate::config::TargetSettings;
use crate::flush::Ledger;
use crate::status::{DiskUsage, FlushStatus, Status};
use crate::store::StoreSpace;
use parking_lot::Mutex;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The disk copy's size: the last measurement, and whether one is under way.
#[derive(Debug, Default)]
pub struct UsageState {
    last: Option<DiskUsage>,
    running: bool,
}

/// Measures the disk copy at `dir` (generation `generation`) in the background.
pub fn measure(usage: &Arc<Mutex<UsageState>>, dir: &Arc<OwnedFd>, generation: u64) {
    let mut st = usage.lock();
    if st.running {
        return;
    }
    st.running = true;
    drop(st);
    let (usage2, dir) = (usage.clone(), dir.clone());
    let spawned = std::thread::Builder::new()
        .name("disk-usage".into())
        .spawn(move || {
            let root = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
            let measured = crate::usage::measure(&root);
            let mut st = usage2.lock();
            st.running = false;
            match measured {
                Ok(u) => {
                    st.last = Some(DiskUsage {
                        bytes: u.bytes,
                        files: u.files,
                        dirs: u.dirs,
                        measured_at: secs(SystemTime::now()),
                        generation,
                    })
                }
                Err(e) => tracing::warn!(error = %e, "cannot measure the disk copy"),
            }
        });
    if spawned.is_err() {
        usage.lock().running = false;
    }
}

/// The last measurement of the disk copy; starts a new one if a flush changed it since.
pub fn disk_usage(
    usage: &Arc<Mutex<UsageState>>,
    dir: &Arc<OwnedFd>,
    generation: u64,
) -> Option<DiskUsage> {
    let last = usage.lock().last.clone();
    if last.as_ref().is_none_or(|l| l.generation != generation) {
        measure(usage, dir, generation);
    }
    last
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The status form of a flush's outcome.
pub fn flush_status(l: crate::flush::LastFlush) -> FlushStatus {
    let at = secs(l.at);
    match l.result {
        Ok(r) => FlushStatus {
            at,
            ok: true,
            error: None,
            took_ms: r.took.as_millis() as u64,
            files: r.files,
            bytes: r.bytes,
            generation: r.generation,
        },
        Err(e) => FlushStatus {
            at,
            ok: false,
            error: Some(e),
            ..Default::default()
        },
    }
}

/// Where a target is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Mounted,
    /// Unmounted, but files opened before are still served.
    Detached,
    Stopped,
}

impl Phase {
    /// As status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Mounted => "mounted",
            Phase::Detached => "detached",
            Phase::Stopped => "stopping",
        }
    }
}

/// What both modes know alike of a target for its status report (`lifecycle::status_of`
/// gathers it); each mode adds its own measure of what changed (`Changes`).
pub(super) struct Facts<'a> {
    pub mode: &'static str,
    pub settings: &'a TargetSettings,
    pub paths: &'a TargetPaths,
    pub phase: Phase,
    pub started: SystemTime,
    pub ledger: &'a Ledger,
    /// When the flush timer fires next.
    pub next_flush: Instant,
    /// What the hardlink backup is doing.
    pub backup: String,
    /// What happened at the start if the previous session ended uncleanly.
    pub crash: Option<String>,
    /// The disk copy's size (measured in the background).
    pub disk: Option<DiskUsage>,
    /// The target's parent as the daemon holds it (`/proc/self/fd/N`): crash snapshots are
    /// listed there, never by walking the target's path again (a FUSE mount a user stacked
    /// above it would hold the status request, docs/security.md R7).
    pub parent: std::path::PathBuf,
}

/// A mode's own measure of what is in RAM and not on disk yet.
pub(super) struct Changes {
    /// How file data is served: `daemon`, `passthrough` (FUSE mode) or `kernel` (overlay).
    pub data_path: String,
    /// Files a flush could not copy unchanged in its tries (passthrough).
    pub busy_copies: u64,
    /// The files the last flush left out so.
    pub busy_files: Vec<String>,
    /// The flush under way: bytes done and to do.
    pub flushing: Option<crate::status::FlushProgress>,
    pub ram_bytes: u64,
    pub space: StoreSpace,
    pub warning: Option<String>,
    pub dirty_files: u64,
    pub dirty_dirs: u64,
    pub dirty_bytes: u64,
    pub oldest_change_secs: Option<u64>,
    pub bytes_written: u64,
    pub open_files: u64,
    pub log_failures: u64,
    pub conflicts: Vec<String>,
    pub ram: crate::status::RamBudget,
}

/// The status report of a target in either mode.
pub(super) fn report(t: Facts<'_>, c: Changes) -> Status {
    let phase = t.phase;
    let ledger = t.ledger;
    Status {
        target: t.paths.target.clone(),
        mode: t.mode.into(),
        data_path: c.data_path,
        busy_copies: c.busy_copies,
        busy_files: c.busy_files,
        state: phase.as_str().into(),
        pid: std::process::id(),
        since: secs(t.started),
        store: t.paths.store.clone(),
        ram_bytes: c.ram_bytes,
        store_size_bytes: c.space.size,
        store_used_bytes: c.space.used,
        store_free_bytes: c.space.free,
        log_bytes: c.space.log_bytes,
        log_reserve_bytes: c.space.log_reserve,
        store_warning: c.warning,
        ram: c.ram,
        disk: t.disk,
        dirty_files: c.dirty_files,
        dirty_dirs: c.dirty_dirs,
        dirty_bytes: c.dirty_bytes,
        oldest_change_secs: c.oldest_change_secs,
        last_flush: ledger.last().map(flush_status),
        flushing: c.flushing,
        next_flush_secs: (phase == Phase::Mounted).then(|| {
            t.next_flush
                .saturating_duration_since(Instant::now())
                .as_secs()
        }),
        flush_interval_secs: t.settings.flush_interval.as_secs(),
        fsync: format!("{:?}", t.settings.fsync).to_lowercase(),
        bytes_written: c.bytes_written,
        bytes_flushed: ledger.bytes_flushed(),
        generation: ledger.disk_gen(),
        flush_failures: ledger.failures(),
        open_files: c.open_files,
        log_failures: c.log_failures,
        backup: t.backup,
        unclean_start: t.crash,
        crash_snapshots: crate::status::snapshots_in(&t.paths.target, &t.parent),
        conflicts: c.conflicts,
        salvaged: ledger.salvaged(),
    }
}
