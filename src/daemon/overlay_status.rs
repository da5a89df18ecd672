//! The status of a target in overlay mode: what changed is what the upper layer holds that
//! the last flush did not write.

use super::lifecycle::Phase;
use super::overlay::OverlayTarget;
use super::paths::TargetPaths;
use super::status::{Changes, Lifecycle, report};
use crate::config::TargetSettings;
use crate::flush::Ledger;
use crate::overlay::upper::UpperKind;
use crate::status::{DiskUsage, Status};
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
    let space = crate::store::StoreSpace::of_dir(&p.target_paths().store);
    let changes = Changes {
        data_path: "kernel".into(),
        busy_copies: 0,
        busy_files: Vec::new(),
        flushing: None,
        ram_bytes: ram,
        warning: space.warning(),
        // No store log in overlay mode.
        space: crate::store::StoreSpace {
            log_bytes: 0,
            log_reserve: 0,
            ..space
        },
        dirty_files: files,
        dirty_dirs: dirs,
        dirty_bytes: bytes,
        oldest_change_secs: oldest.map(|o| (now - o).max(0) as u64),
        // The kernel serves writes: asdfs sees the files they changed, not the calls.
        bytes_written: p.flusher().ledger().bytes_flushed() + bytes,
        open_files: open,
        log_failures: 0,
        conflicts: Vec::new(),
    };
    report(p, changes)
}

impl Lifecycle for OverlayTarget {
    fn mode_name(&self) -> &'static str {
        "overlay"
    }
    fn settings(&self) -> &TargetSettings {
        OverlayTarget::settings(self)
    }
    fn target_paths(&self) -> &TargetPaths {
        OverlayTarget::target_paths(self)
    }
    fn phase(&self) -> Phase {
        OverlayTarget::phase(self)
    }
    fn started(&self) -> SystemTime {
        OverlayTarget::started(self)
    }
    fn ledger(&self) -> &Ledger {
        self.flusher().ledger()
    }
    fn next_flush(&self) -> Instant {
        OverlayTarget::next_flush(self)
    }
    fn backup(&self) -> String {
        OverlayTarget::backup(self)
    }
    fn crash(&self) -> Option<String> {
        OverlayTarget::crash(self)
    }
    fn disk(&self) -> Option<DiskUsage> {
        OverlayTarget::disk(self)
    }
}
