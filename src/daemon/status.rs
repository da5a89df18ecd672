//! Assembling a target's status report from the store and the flusher.

use super::target::{Phase, Target};
use crate::status::{DiskUsage, FlushStatus, Status};
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

/// Measures the disk copy in the background, unless a measurement is already under way.
pub fn measure_disk(t: &Target) {
    measure(&t.usage, &t.disk_dir, t.flusher.ledger().disk_gen());
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

pub fn of(t: &Target) -> Status {
    let s = t.store.summary();
    let space = t.store.space();
    let now = SystemTime::now();
    let phase = *t.phase.lock();
    let last_flush = t.flusher.ledger().last().map(flush_status);
    Status {
        target: t.paths.target.clone(),
        mode: "fuse".into(),
        data_path: if s.passthrough {
            "passthrough"
        } else {
            "daemon"
        }
        .into(),
        busy_copies: s.busy_copies,
        state: phase.as_str().into(),
        pid: std::process::id(),
        since: t
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        store: t.paths.store.clone(),
        ram_bytes: s.ram_bytes,
        store_size_bytes: space.size,
        store_used_bytes: space.used,
        store_free_bytes: space.free,
        log_bytes: space.log_bytes,
        log_reserve_bytes: space.log_reserve,
        store_warning: space.warning(),
        disk: disk_usage(&t.usage, &t.disk_dir, t.flusher.ledger().disk_gen()),
        dirty_files: s.dirty_files,
        dirty_dirs: s.dirty_dir_count,
        dirty_bytes: s.dirty_bytes,
        oldest_change_secs: s
            .dirty_since
            .map(|d| now.duration_since(d).map(|x| x.as_secs()).unwrap_or(0)),
        last_flush,
        flushing: t.flusher.in_progress().map(|(bytes_done, bytes_total)| {
            crate::status::FlushProgress {
                bytes_done,
                bytes_total,
            }
        }),
        next_flush_secs: (phase == Phase::Mounted).then(|| {
            t.timer
                .next()
                .saturating_duration_since(Instant::now())
                .as_secs()
        }),
        flush_interval_secs: t.settings.flush_interval.as_secs(),
        fsync: format!("{:?}", t.settings.fsync).to_lowercase(),
        bytes_written: s.counters.bytes_written,
        bytes_flushed: t.flusher.ledger().bytes_flushed(),
        generation: t.flusher.ledger().disk_gen(),
        flush_failures: t.flusher.ledger().failures(),
        open_files: s.open_handles,
        log_failures: s.log_failures,
        backup: t.backup_state.lock().clone(),
        unclean_start: t.crash.lock().clone(),
        crash_snapshots: crate::status::snapshots_of(&t.paths.target),
        conflicts: t.store.seen.kept(),
    }
}
