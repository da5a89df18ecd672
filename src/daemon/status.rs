//! Assembling a target's status report from the store and the flusher.

use super::target::{Phase, Target};
use crate::status::{FlushStatus, Status};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
        dirty_files: s.dirty_nodes,
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
        crash_snapshots: crate::snapshot::list(&t.paths.target)
            .unwrap_or_default()
            .into_iter()
            .map(|i| crate::status::SnapshotStatus {
                path: i.path,
                taken: i.taken,
                size: i.size,
            })
            .collect(),
    }
}
