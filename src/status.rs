//! The status of a mounted target, as the daemon reports it (`asdfs status`, `asd p`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A target's RAM budget and what it did (design.md §2.1), in bytes and counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RamBudget {
    /// The most RAM the store may use (0: only its tmpfs's size limits it).
    pub limit_bytes: u64,
    /// What the store uses: file data, the store log and its reserve.
    pub used_bytes: u64,
    /// Changed data not yet on disk (never evicted).
    pub dirty_bytes: u64,
    /// Clean files in RAM that nothing holds open: what eviction could free now.
    pub evictable_bytes: u64,
    /// Clean files dropped from RAM so far, and their bytes.
    pub evictions: u64,
    pub evicted_bytes: u64,
    /// Flushes started early because changed data passed its high-water mark.
    pub pressure_flushes: u64,
}

/// Everything `asdfs status` shows about one target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub target: PathBuf,
    /// "fuse" or "overlay".
    pub mode: String,
    /// Who serves file data: "passthrough" (the kernel, on the store's data files), "daemon"
    /// (FUSE mode without passthrough) or "kernel" (overlay mode). design.md §4.1.
    #[serde(default)]
    pub data_path: String,
    /// How many times a flush left out a file that kept changing while it was copied; its
    /// previous version stayed on disk (design.md §4.1).
    #[serde(default)]
    pub busy_copies: u64,
    /// The files the last flush left out so (paths in the target), to be written later.
    #[serde(default)]
    pub busy_files: Vec<String>,
    /// "mounted", "detached" (unmounted, files still open) or "stopping".
    pub state: String,
    pub pid: u32,
    /// When the target was mounted, in seconds since the Unix epoch.
    pub since: u64,
    /// The store directory on tmpfs.
    pub store: PathBuf,
    /// RAM used by file data in the store, in bytes.
    pub ram_bytes: u64,
    /// The store's tmpfs: its size, what is used of it (data, store log and its reserve,
    /// anything else there) and what is free, in bytes.
    #[serde(default)]
    pub store_size_bytes: u64,
    #[serde(default)]
    pub store_used_bytes: u64,
    #[serde(default)]
    pub store_free_bytes: u64,
    /// The store log, and the space kept allocated ahead of its end so that changes and the
    /// final flush never find the tmpfs full (design.md §3).
    #[serde(default)]
    pub log_bytes: u64,
    #[serde(default)]
    pub log_reserve_bytes: u64,
    /// The target's RAM budget (design.md §2.1).
    #[serde(default)]
    pub ram: RamBudget,
    /// Set when the store's tmpfs is more than 90 % full.
    #[serde(default)]
    pub store_warning: Option<String>,
    /// The disk copy's size, as last measured (in the background; `None` until then).
    pub disk: Option<DiskUsage>,
    /// Files (everything but directories) with changes not yet on disk, and the bytes of
    /// their data; directories whose entries or attributes changed.
    pub dirty_files: u64,
    pub dirty_dirs: u64,
    pub dirty_bytes: u64,
    /// Age of the oldest change not yet on disk, in seconds.
    pub oldest_change_secs: Option<u64>,
    pub last_flush: Option<FlushStatus>,
    /// The flush under way, if one is.
    #[serde(default)]
    pub flushing: Option<FlushProgress>,
    /// Seconds until the next timed flush.
    pub next_flush_secs: Option<u64>,
    pub flush_interval_secs: u64,
    /// "defer" or "sync".
    pub fsync: String,
    /// Bytes programs wrote since the mount (with passthrough, which hides writes from the
    /// daemon: the size of each file that changed while open for writing), and bytes written
    /// to disk by flushes.
    pub bytes_written: u64,
    pub bytes_flushed: u64,
    /// The disk copy's generation (completed flushes).
    pub generation: u64,
    /// Failed flush attempts since the last success.
    pub flush_failures: u32,
    pub open_files: u64,
    /// Store-log appends that failed (a killed daemon could lose those changes).
    pub log_failures: u64,
    /// The hardlink backup (`.NAME-backup_asd-old`): "off", "being made", or what it holds.
    pub backup: String,
    /// What this session found at its start if the previous one ended uncleanly.
    pub unclean_start: Option<String>,
    /// The target's crash snapshots, newest first.
    pub crash_snapshots: Vec<SnapshotStatus>,
    /// Conflict copies kept by this session's flushes, as "file -> copy": files changed on
    /// disk behind asdfs whose disk version was kept beside the target (design.md §6.2).
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// A committed flush this session could not complete and salvaged (design.md §7):
    /// what happened, and that the store writes what it skipped again.
    #[serde(default)]
    pub salvaged: Option<String>,
}

/// The size of the disk copy, as du(1) counts it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub bytes: u64,
    pub files: u64,
    pub dirs: u64,
    /// When it was measured, in seconds since the Unix epoch.
    pub measured_at: u64,
    /// The disk copy's generation when it was measured: older than `generation` means a
    /// flush has changed it since (a new measurement is then under way).
    pub generation: u64,
}

/// One crash snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub path: PathBuf,
    /// "YYYY-mm-dd HH:MM:SS", local time.
    pub taken: String,
    pub size: u64,
}

impl From<crate::snapshot::SnapshotInfo> for SnapshotStatus {
    fn from(i: crate::snapshot::SnapshotInfo) -> SnapshotStatus {
        SnapshotStatus {
            path: i.path,
            taken: i.taken,
            size: i.size,
        }
    }
}

/// The crash snapshots of a target, newest first (none if they cannot be listed).
pub fn snapshots_of(target: &std::path::Path) -> Vec<SnapshotStatus> {
    from_snapshots(crate::snapshot::list(target))
}

/// `snapshots_of`, reading the target's parent at `parent` (`snapshot::list_in`).
pub fn snapshots_in(target: &std::path::Path, parent: &std::path::Path) -> Vec<SnapshotStatus> {
    from_snapshots(crate::snapshot::list_in(target, parent))
}

fn from_snapshots(
    found: std::io::Result<Vec<crate::snapshot::SnapshotInfo>>,
) -> Vec<SnapshotStatus> {
    found
        .unwrap_or_default()
        .into_iter()
        .map(SnapshotStatus::from)
        .collect()
}

/// How far the flush under way has come.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushProgress {
    /// Bytes of file data written to the disk copy so far, and in all.
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// The outcome of the last flush.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushStatus {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub ok: bool,
    pub error: Option<String>,
    pub took_ms: u64,
    pub files: u64,
    pub bytes: u64,
    pub generation: u64,
}
