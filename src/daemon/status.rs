//! Assembling a target's status report from the store and the flusher.

use super::target::{Phase, Target};
use crate::status::{DiskUsage, FlushStatus, Status};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The disk copy's size: the last measurement, and whether one is under way.
#[derive(Debug, Default)]
pub struct UsageState {
    last: Option<DiskUsage>,
    running: bool,
}

/// Measures the disk copy in the background, unless a measurement is already under way.
pub fn measure_disk(t: &Target) {
    let mut st = t.usage.lock();
    if st.running {
        return;
    }
    st.running = true;
    drop(st);
    let generation = t.flusher.disk_gen();
    let (usage, dir) = (t.usage.clone(), t.disk_dir.clone());
    let spawned = std::thread::Builder::new()
        .name("disk-usage".into())
        .spawn(move || {
            let root = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
            let measured = crate::usage::measure(&root);
            let mut st = usage.lock();
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
        t.usage.lock().running = false;
    }
}

/// The last measurement of the disk copy; starts a new one if a flush changed it since.
fn disk_usage(t: &Target) -> Option<DiskUsage> {
    let last = t.usage.lock().last.clone();
    if last
        .as_ref()
        .is_none_or(|l| l.generation != t.flusher.disk_gen())
    {
        measure_disk(t);
    }
    last
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn of(t: &Target) -> Status {
    let s = t.store.summary();
    let now = SystemTime::now();
    let phase = *t.phase.lock();
    let last_flush = t.flusher.last().map(|l| {
        let at =
            l.at.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
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
    });
    Status {
        target: t.paths.target.clone(),
        mode: "fuse".into(),
        state: match phase {
            Phase::Mounted => "mounted",
            Phase::Detached => "detached",
            Phase::Stopped => "stopping",
        }
        .into(),
        pid: std::process::id(),
        since: t
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        store: t.paths.store.clone(),
        ram_bytes: s.ram_bytes,
        disk: disk_usage(t),
        dirty_files: s.dirty_files,
        dirty_dirs: s.dirty_dir_count,
        dirty_bytes: s.dirty_bytes,
        oldest_change_secs: s
            .dirty_since
            .map(|d| now.duration_since(d).map(|x| x.as_secs()).unwrap_or(0)),
        last_flush,
        next_flush_secs: (phase == Phase::Mounted).then(|| {
            t.next_flush
                .lock()
                .saturating_duration_since(Instant::now())
                .as_secs()
        }),
        flush_interval_secs: t.settings.flush_interval.as_secs(),
        fsync: format!("{:?}", t.settings.fsync).to_lowercase(),
        bytes_written: s.counters.bytes_written,
        bytes_flushed: t.flusher.bytes_flushed(),
        generation: t.flusher.disk_gen(),
        flush_failures: t.flusher.failures(),
        open_files: s.open_handles,
        log_failures: s.log_failures,
        backup: t.backup_state.lock().clone(),
        unclean_start: t.crash.clone(),
        crash_snapshots: crate::status::snapshots_of(&t.paths.target),
    }
}
