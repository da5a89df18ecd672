//! One validated configuration: what to mount and how. Built from command-line options, from
//! `/etc/asdfs.toml` (or a user's `~/.config/asdfs/asdfs.toml`), or from asd's `/etc/asd.conf`
//! read without running it. Each field says its default.
//!
//! Map: `toml` and `asdconf` (with `shell`, the bash-subset reader) parse the two formats;
//! both end in `validate`, the rules every config obeys; `write` turns a config back into
//! TOML (`asdfs config import`) or a description (`asdfs config check`); `error` holds the
//! one-line `<file>:<line>[:<col>]: <problem>` error. `load` reads a file and picks the parser.
//! `usable` checks a target against the machine (an existing directory that stores files).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod asdconf;
mod error;
mod shell;
pub mod toml;
mod usable;
mod validate;
pub use validate::{check_path, check_settings};
mod write;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests;

pub use self::asdconf::parse_asd_conf;
pub use self::error::{ConfigError, Place};
pub use self::toml::parse_toml;
pub use self::usable::{check_stores_files, check_usable};
pub use self::validate::{MAX_BACKUP_LIMIT, validate};
pub use self::write::{describe, to_toml};

/// asd's config file, read when `$ASDCONF` is not set.
pub const ASD_CONF: &str = "/etc/asd.conf";
/// The system-wide asdfs config file.
pub const SYSTEM_TOML: &str = "/etc/asdfs.toml";
/// Config files larger than this are refused unread.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

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

/// Whether reading records access times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Atime {
    /// Never: reads write nothing, to spare the disk. Default.
    #[default]
    Noatime,
    /// Once after each change, or when a day old (the kernel's relatime; mail readers use
    /// it). Each such read makes the next flush write the file's times.
    Relatime,
}

/// Who serves file data in FUSE mode (design.md §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPath {
    /// FUSE passthrough where the kernel allows it (root, kernel 6.9 or later), else the
    /// daemon. The default.
    #[default]
    Auto,
    /// FUSE passthrough; where the kernel refuses, the daemon all the same, with a warning.
    Passthrough,
    /// Every read and write is a request to the daemon.
    Daemon,
}

impl DataPath {
    pub fn name(self) -> &'static str {
        match self {
            DataPath::Auto => "auto",
            DataPath::Passthrough => "passthrough",
            DataPath::Daemon => "daemon",
        }
    }

    /// `$ASDFS_DATA_PATH` (auto, passthrough or daemon), which overrides the setting: the
    /// tests run the daemon data path with it.
    pub fn from_env() -> Result<Option<DataPath>, String> {
        match std::env::var("ASDFS_DATA_PATH") {
            Err(_) => Ok(None),
            Ok(v) => match v.as_str() {
                "auto" => Ok(Some(DataPath::Auto)),
                "passthrough" => Ok(Some(DataPath::Passthrough)),
                "daemon" => Ok(Some(DataPath::Daemon)),
                _ => Err(format!(
                    "ASDFS_DATA_PATH={v:?}: it is auto, passthrough or daemon"
                )),
            },
        }
    }
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

/// The settings of one target. Resolved and checked once, by `asdfs mount`, which hands
/// them to the daemon it starts as JSON (`cli::mount::SETTINGS_ENV`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetSettings {
    /// Absolute path of the directory to keep in RAM.
    #[serde(with = "crate::bytes::path")]
    pub target: PathBuf,
    /// Default: `Mode::Fuse`.
    pub mode: Mode,
    /// Default: 5 minutes.
    pub flush_interval: Duration,
    /// Default: `FsyncPolicy::Defer`.
    pub fsync: FsyncPolicy,
    /// Default: `Atime::Noatime`.
    pub atime: Atime,
    /// Parent of the store root (`<volatile>/asdfs`). Default: `None`, meaning `/run` for
    /// root and `$XDG_RUNTIME_DIR` for other users.
    #[serde(with = "crate::bytes::opt_path")]
    pub volatile: Option<PathBuf>,
    /// Hardlink backup at session start and crash snapshots. Default: true.
    pub backups: bool,
    /// Crash snapshots kept. Default: 5.
    pub backup_limit: u32,
    /// FUSE mode: RAM data files the daemon keeps open at most. Default: `None`, meaning
    /// `$ASDFS_OPEN_FILES` if set, else half the soft limit on descriptors.
    pub open_files: Option<usize>,
    /// After SIGTERM, how long files still open may keep the daemon waiting before they are
    /// cut off. Default: `None`, meaning `$ASDFS_STOP_GRACE` (seconds) if set, else 20 s.
    pub stop_grace: Option<Duration>,
    /// The most RAM the target's store may use, in bytes (design.md §2.1). Default: `None`,
    /// meaning `DEFAULT_RAM_PERCENT` of the machine's memory.
    #[serde(default)]
    pub ram_limit: Option<u64>,
    /// FUSE mode: who serves file data. Default: `DataPath::Auto`.
    #[serde(default)]
    pub data_path: DataPath,
    /// Refuse to mount while a file inside has hard links outside (asd's
    /// `ENABLE_HARDLINK_SAFETY_CHECK`). Default: true.
    pub hardlink_check: bool,
    /// Mount even while processes hold files under the target (given for one mount, never
    /// read from a config file). Default: false.
    pub force: bool,
}

impl TargetSettings {
    /// The defaults for a target.
    pub fn new(target: PathBuf) -> TargetSettings {
        TargetSettings {
            target,
            mode: Mode::Fuse,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            fsync: FsyncPolicy::Defer,
            atime: Atime::Noatime,
            volatile: None,
            backups: true,
            backup_limit: DEFAULT_BACKUP_LIMIT,
            open_files: None,
            stop_grace: None,
            ram_limit: None,
            data_path: DataPath::Auto,
            hardlink_check: true,
            force: false,
        }
    }
}

/// The default RAM limit of a target: this share of the machine's memory (percent).
pub const DEFAULT_RAM_PERCENT: u64 = 25;

/// The smallest RAM limit taken: room for the store log's reserve and a few files.
const MIN_RAM_LIMIT: u64 = 1 << 20;

/// The machine's memory in bytes (sysinfo(2)); 0 if unknown.
pub fn machine_memory() -> u64 {
    nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total())
        .unwrap_or(0)
}

/// `DEFAULT_RAM_PERCENT` of the machine's memory.
pub fn default_ram_limit() -> u64 {
    machine_memory() / 100 * DEFAULT_RAM_PERCENT
}

/// Parses a RAM limit as people write it: `512M`, `2G`, `1.5G`, `65536` (bytes), or a
/// share of the machine's memory, `25%`.
pub fn parse_ram_limit(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a RAM limit; write e.g. 512M, 2G or 25%");
    let bytes = if let Some(pct) = t.strip_suffix('%') {
        let p: f64 = pct.trim().parse().map_err(|_| bad())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(format!(
                "{s:?}: a RAM limit as a share of the memory is above 0% and at most 100%"
            ));
        }
        (machine_memory() as f64 * p / 100.0) as u64
    } else {
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit
            .trim()
            .to_ascii_uppercase()
            .trim_end_matches("IB")
            .trim_end_matches('B')
        {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            "T" => 1 << 40,
            _ => return Err(bad()),
        };
        (n * mult as f64) as u64
    };
    if bytes < MIN_RAM_LIMIT {
        return Err(format!("{s:?} is too small: a RAM limit is at least 1M"));
    }
    Ok(bytes)
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

/// A whole configuration: the targets to mount, each with all its settings resolved, and
/// remarks made while reading it (settings ignored, defaults taken from asd) to show the user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub targets: Vec<TargetSettings>,
    pub notes: Vec<String>,
}

/// Reads and checks a config file: asdfs TOML if its name ends in `.toml` or its first
/// non-comment line starts with `[`, else asd.conf syntax.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    match is_toml(path, &text) {
        true => parse_toml(&text, path),
        false => parse_asd_conf(&text, path),
    }
}

/// The asd.conf to read given the value of `$ASDCONF`, as asd chooses it.
pub fn asd_conf_path(asdconf_env: Option<&std::ffi::OsStr>) -> PathBuf {
    match asdconf_env {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => PathBuf::from(ASD_CONF),
    }
}

/// A user's asdfs config, `$XDG_CONFIG_HOME/asdfs/asdfs.toml` or else
/// `$HOME/.config/asdfs/asdfs.toml`; `None` if neither variable gives an absolute path.
pub fn user_toml(xdg_config_home: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    let config = match (xdg_config_home, home) {
        (Some(xdg), _) if xdg.is_absolute() => xdg.to_path_buf(),
        (_, Some(home)) if home.is_absolute() => home.join(".config"),
        _ => return None,
    };
    Some(config.join("asdfs").join("asdfs.toml"))
}

fn is_toml(path: &Path, text: &str) -> bool {
    if path.extension().is_some_and(|ext| ext == "toml") {
        return true;
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    first.is_some_and(|l| l.starts_with('['))
}

/// The file as text; an error names the file, and the line of the first byte that is not
/// UTF-8.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let fail = |problem: String| ConfigError::new(path, None, problem);
    let file = crate::fsx::trusted::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    let read = file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes);
    read.map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "larger than {MAX_CONFIG_BYTES} bytes: not a config file"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        let problem = format!("byte {valid} is not UTF-8 text");
        ConfigError::new(path, Some(Place::line(line)), problem)
    })
}
