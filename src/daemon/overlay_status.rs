//! The status of a target in overlay mode: what changed is what the upper layers hold that
//! the last flush did not write.

use super::status::Changes;
use crate::overlay::layers::Stack;
use crate::overlay::upper::UpperKind;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The layers as measured: names not on disk yet, the RAM of all layers, files held open.
#[derive(Clone, Debug, Default)]
pub(super) struct Measured {
    files: u64,
    dirs: u64,
    bytes: u64,
    /// The ctime (seconds) of the oldest change not on disk.
    oldest: Option<i64>,
    ram: u64,
    open: u64,
}

impl Measured {
    pub fn of(st: &Stack) -> Measured {
        let (pending, ram) = st.pending();
        let mut m = Measured {
            ram,
            open: st.held_count(),
            ..Measured::default()
        };
        for e in &pending {
            match e.kind {
                UpperKind::Dir { .. } => m.dirs += 1,
                UpperKind::Node(crate::store::types::Kind::File) => {
                    m.files += 1;
                    m.bytes += e.st.attr.size;
                }
                _ => m.files += 1,
            }
            let c = e.st.attr.ctime.sec;
            m.oldest = Some(m.oldest.map_or(c, |o| o.min(c)));
        }
        m
    }
}

/// Overlay mode's measure of what changed, from the layers (`m`), the store's private
/// directory (its own tmpfs for root), the bytes flushed so far, the files the last flush
/// left out because they kept changing, the flush under way, and
/// the RAM limit with the pressure flushes so far.
pub(super) fn changes(
    m: &Measured,
    store: &Path,
    bytes_flushed: u64,
    busy_files: Vec<String>,
    flushing: Option<(u64, u64)>,
    (ram_limit, pressure_flushes): (u64, u64),
) -> Changes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let space = crate::store::StoreSpace::of_dir(store);
    Changes {
        data_path: "kernel".into(),
        busy_copies: 0,
        busy_files,
        flushing: flushing.map(|(bytes_done, bytes_total)| crate::status::FlushProgress {
            bytes_done,
            bytes_total,
        }),
        ram_bytes: m.ram,
        warning: space.warning(),
        // No store log in overlay mode.
        space: crate::store::StoreSpace {
            log_bytes: 0,
            log_reserve: 0,
            ..space
        },
        dirty_files: m.files,
        dirty_dirs: m.dirs,
        dirty_bytes: m.bytes,
        oldest_change_secs: m.oldest.map(|o| (now - o).max(0) as u64),
        // The kernel serves writes: asdfs sees the files they changed, not the calls.
        bytes_written: bytes_flushed + m.bytes,
        open_files: m.open,
        log_failures: 0,
        conflicts: Vec::new(),
        ram: crate::status::RamBudget {
            limit_bytes: ram_limit,
            // The store's own tmpfs (root), else the volatile directory's.
            used_bytes: space.used,
            dirty_bytes: m.bytes,
            pressure_flushes,
            ..Default::default()
        },
    }
}
