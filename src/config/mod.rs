//! One validated configuration: what to mount and how. Built from command-line options, from
//! `/etc/asdfs.toml` (or a user's `~/.config/asdfs/asdfs.toml`), or from asd's `/etc/asd.conf`
//! read without running it. Each field says its default.

use std::path::PathBuf;
use std::time::Duration;

/// What fsync(2) on a file in the mount does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Return at once; the data reaches disk with the next flush (asd's behaviour). Default.
    #[default]
    Defer,
    /// Flush before returning.
    Sync,
}

/// How a target is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The FUSE write-back filesystem. Default.
    #[default]
    Fuse,
    /// Kernel overlayfs with the upper layer in RAM.
    Overlay,
}

/// Default flush interval: 5 minutes.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(300);
/// Default number of crash snapshots kept per target: 5 (asd's BACKUP_LIMIT).
pub const DEFAULT_BACKUP_LIMIT: u32 = 5;

/// The settings of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSettings {
    /// Absolute path of the directory to keep in RAM.
    pub target: PathBuf,
    /// Default: `Mode::Fuse`.
    pub mode: Mode,
    /// Default: 5 minutes.
    pub flush_interval: Duration,
    /// Default: `FsyncPolicy::Defer`.
    pub fsync: FsyncPolicy,
    /// Parent of the store root (`<volatile>/asdfs`). Default: `None`, meaning `/run` for
    /// root and `$XDG_RUNTIME_DIR` for other users.
    pub volatile: Option<PathBuf>,
    /// Hardlink backup at session start and crash snapshots. Default: true.
    pub backups: bool,
    /// Crash snapshots kept. Default: 5.
    pub backup_limit: u32,
}

impl TargetSettings {
    /// The defaults for a target.
    pub fn new(target: PathBuf) -> TargetSettings {
        TargetSettings {
            target,
            mode: Mode::Fuse,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            fsync: FsyncPolicy::Defer,
            volatile: None,
            backups: true,
            backup_limit: DEFAULT_BACKUP_LIMIT,
        }
    }
}

/// Parses a duration as people write it: `5min`, `30s`, `1h`, `1h30m`, `90` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let d = if t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| e.to_string())?
    } else {
        humantime::parse_duration(t)
            .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 30s, 5min, 1h"))?
    };
    if d < Duration::from_secs(1) {
        return Err(format!(
            "{s:?} is too short: the flush interval must be at least 1s"
        ));
    }
    Ok(d)
}
