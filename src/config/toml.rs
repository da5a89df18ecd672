//! Reads asdfs's own format, `/etc/asdfs.toml` (or `~/.config/asdfs/asdfs.toml`): an optional
//! `[defaults]` table and one `[[target]]` table per directory, each key optional except a
//! target's `path`. Unknown keys, bad values and misplaced `path`s are errors at
//! `<file>:<line>:<col>`; then the shared rules in `validate` apply.
//!
//! ```toml
//! [defaults]
//! flush_interval = "5min"   # or a number of seconds
//! fsync = "defer"           # defer | sync
//! atime = "noatime"         # noatime | relatime
//! mode = "fuse"             # fuse | overlay
//! backups = true
//! backup_limit = 5
//! hardlink_check = true     # refuse files with hard links outside the target
//! volatile = "/run"
//! open_files = 4096         # FUSE mode: RAM data files kept open at most
//! stop_grace = "20s"        # how long open files may delay a stop after SIGTERM
//! ram_limit = "512M"        # the most RAM a target's store uses, or "25%" of the memory
//! data_path = "auto"        # FUSE mode: auto | passthrough | daemon
//!
//! [[target]]
//! path = "/var/log"
//! flush_interval = "15min"  # any default may be set again per target
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::toml::Spanned;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::error::{ConfigError, Lines, Place};
use super::validate::{Origins, TargetOrigin, validate_at};
use super::{Atime, Config, DataPath, FsyncPolicy, Mode, TargetSettings, parse_duration};

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    defaults: Option<Spanned<RawTable>>,
    #[serde(default)]
    target: Vec<Spanned<RawTable>>,
}

/// `[defaults]` or one `[[target]]`; only a target may (and must) have a `path`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    path: Option<Spanned<String>>,
    flush_interval: Option<Interval>,
    fsync: Option<FsyncPolicy>,
    atime: Option<Atime>,
    mode: Option<Mode>,
    backups: Option<bool>,
    backup_limit: Option<Spanned<u32>>,
    hardlink_check: Option<bool>,
    volatile: Option<Spanned<String>>,
    open_files: Option<usize>,
    stop_grace: Option<Interval>,
    data_path: Option<DataPath>,
    ram_limit: Option<RamLimit>,
}

/// A RAM limit: a size string (`parse_ram_limit`) or a number of bytes.
struct RamLimit(u64);

impl<'de> Deserialize<'de> for RamLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RamLimit, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RamLimit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a size such as \"512M\" or \"2G\", or a share of the memory such as \"25%\"",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RamLimit, E> {
                super::parse_ram_limit(s).map(RamLimit).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RamLimit, E> {
                super::parse_ram_limit(&n.to_string())
                    .map(RamLimit)
                    .map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A flush interval: a duration string (`parse_duration`) or a number of seconds.
struct Interval(Duration);

/// Reads `text`, the contents of `file`, as asdfs TOML. `file` is only used in messages.
pub fn parse_toml(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let raw: RawFile = ::toml::from_str(text).map_err(|e| toml_error(&e, text, file))?;
    let (cfg, origins) = build(raw, text)
        .map_err(|(offset, p)| ConfigError::new(file, Some(Place::of_offset(text, offset)), p))?;
    validate_at(&cfg, file, &origins)?;
    Ok(cfg)
}

/// toml's error at its place, with a hint for the mistakes its message leaves unclear.
fn toml_error(e: &::toml::de::Error, text: &str, file: &Path) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let found = text.get(span.clone()).unwrap_or("");
    let message = e.message().trim();
    let problem = if message == "duplicate key" {
        format!("duplicate key `{}`", found.trim())
    } else if found.trim_start().starts_with("[target]") {
        format!("{message}: write [[target]] (double brackets), once per target")
    } else {
        message.to_owned()
    };
    ConfigError::new(file, Some(Place::of_offset(text, span.start)), problem)
}

/// A problem at a byte offset.
type Fault = (usize, String);

fn build(raw: RawFile, text: &str) -> Result<(Config, Origins), Fault> {
    let defaults = raw.defaults.map(Spanned::into_inner);
    if let Some(path) = defaults.as_ref().and_then(|d| d.path.as_ref()) {
        return Err((
            path.span().start,
            "`path` belongs in a [[target]] table, not in [defaults]".into(),
        ));
    }
    if raw.target.is_empty() {
        let p = "no [[target]]: add one table per directory, e.g. [[target]] path = \"/var/log\"";
        return Err((0, p.into()));
    }
    let lines = Lines::new(text);
    let mut origins = Origins {
        list: Some(lines.place(0)),
        targets: Vec::new(),
    };
    let mut targets = Vec::new();
    for table in raw.target {
        let start = table.span().start;
        let table = table.into_inner();
        let Some(path) = &table.path else {
            return Err((start, "this [[target]] has no `path`".into()));
        };
        origins
            .targets
            .push(origin(&lines, path, defaults.as_ref(), &table));
        targets.push(settings(path.get_ref(), defaults.as_ref(), &table));
    }
    Ok((
        Config {
            targets,
            notes: Vec::new(),
        },
        origins,
    ))
}

/// Where a target's path, volatile dir and backup limit were written: in its own table,
/// else in `[defaults]`, else (when left to the built-in default) at its path.
fn origin(
    lines: &Lines<'_>,
    path: &Spanned<String>,
    defaults: Option<&RawTable>,
    table: &RawTable,
) -> TargetOrigin {
    let find = |key: fn(&RawTable) -> Option<usize>| {
        let offset = key(table).or_else(|| defaults.and_then(key));
        lines.place(offset.unwrap_or(path.span().start))
    };
    TargetOrigin {
        path: lines.place(path.span().start),
        volatile: find(|t| t.volatile.as_ref().map(|v| v.span().start)),
        backup_limit: find(|t| t.backup_limit.as_ref().map(|v| v.span().start)),
    }
}

/// The settings of one target: its own values, else the defaults, else the built-in ones.
fn settings(path: &str, defaults: Option<&RawTable>, table: &RawTable) -> TargetSettings {
    let mut out = TargetSettings::new(PathBuf::from(path));
    for layer in defaults.into_iter().chain([table]) {
        layer.apply(&mut out);
    }
    out
}

impl RawTable {
    fn apply(&self, out: &mut TargetSettings) {
        if let Some(Interval(d)) = self.flush_interval {
            out.flush_interval = d;
        }
        out.fsync = self.fsync.unwrap_or(out.fsync);
        out.atime = self.atime.unwrap_or(out.atime);
        out.mode = self.mode.unwrap_or(out.mode);
        out.backups = self.backups.unwrap_or(out.backups);
        out.hardlink_check = self.hardlink_check.unwrap_or(out.hardlink_check);
        if let Some(limit) = &self.backup_limit {
            out.backup_limit = *limit.get_ref();
        }
        if let Some(volatile) = &self.volatile {
            out.volatile = Some(PathBuf::from(volatile.get_ref()));
        }
        out.open_files = self.open_files.or(out.open_files);
        if let Some(Interval(d)) = self.stop_grace {
            out.stop_grace = Some(d);
        }
        if let Some(RamLimit(n)) = self.ram_limit {
            out.ram_limit = Some(n);
        }
        out.data_path = self.data_path.unwrap_or(out.data_path);
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Interval, D::Error> {
        deserializer.deserialize_any(IntervalVisitor)
    }
}

struct IntervalVisitor;

impl Visitor<'_> for IntervalVisitor {
    type Value = Interval;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"30s\", \"5min\" or \"1h\", or a number of seconds")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Interval, E> {
        parse_duration(s).map(Interval).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Interval, E> {
        match u64::try_from(n) {
            Ok(secs) if secs >= 1 => Ok(Interval(Duration::from_secs(secs))),
            _ => Err(E::custom(format!(
                "{n} seconds: the flush interval must be at least 1s"
            ))),
        }
    }
}
