//! The status of a target in overlay mode: what changed is what the upper layer holds that
//! the last flush did not write.

use super::overlay::OverlayTarget;
use super::status::flush_status;
use super::target::Phase;
use crate::overlay::upper::UpperKind;
use crate::status::Status;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn of(t: &OverlayTarget) -> Status {
    let p = t;
    let (pending, ram, open) = p.layers();
    let (mut files, mut dirs, mut bytes) = (0, 0, 0);
    let mut oldest: Option<i64> = None;
    for e in &pending {
        match e.kind {
            UpperKind::Dir { .. } => dirs += 1,
            UpperKind::Node(crate::store::types::Kind::File) => {
                files += 1;
                bytes += e.st.attr.size;
            }
            _ => files += 1,
        }
        let c = e.st.attr.ctime.sec;
        oldest = Some(oldest.map_or(c, |o| o.min(c)));
    }
    let now = secs(SystemTime::now()) as i64;
    let phase = p.phase();
    let space = crate::store::StoreSpace::of_dir(&p.target_paths().store);
    Status {
        target: p.target_paths().target.clone(),
        mode: "overlay".into(),
        data_path: "kernel".into(),
        busy_copies: 0,
        state: phase.as_str().into(),
        pid: std::process::id(),
        since: secs(p.started()),
        store: p.target_paths().store.clone(),
        ram_bytes: ram,
        store_size_bytes: space.size,
        store_used_bytes: space.used,
        store_free_bytes: space.free,
        log_bytes: 0,
        log_reserve_bytes: 0,
        store_warning: space.warning(),
        disk: p.disk(),
        dirty_files: files,
        dirty_dirs: dirs,
        dirty_bytes: bytes,
        oldest_change_secs: oldest.map(|o| (now - o).max(0) as u64),
        last_flush: p.flusher().ledger().last().map(flush_status),
        flushing: None,
        next_flush_secs: (phase == Phase::Mounted).then(|| {
            p.next_flush()
                .saturating_duration_since(Instant::now())
                .as_secs()
        }),
        flush_interval_secs: p.settings().flush_interval.as_secs(),
        fsync: format!("{:?}", p.settings().fsync).to_lowercase(),
        // The kernel serves writes: asdfs sees the files they changed, not the calls.
        bytes_written: p.flusher().ledger().bytes_flushed() + bytes,
        bytes_flushed: p.flusher().ledger().bytes_flushed(),
        generation: p.flusher().ledger().disk_gen(),
        flush_failures: p.flusher().ledger().failures(),
        open_files: open,
        log_failures: 0,
        backup: p.backup(),
        unclean_start: p.crash(),
        crash_snapshots: crate::status::snapshots_of(&p.target_paths().target),
        conflicts: Vec::new(),
    }
}
