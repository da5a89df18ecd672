//! The rules every configuration obeys, whichever file it came from: at least one target; each
//! target an absolute, normalised path other than `/`; no target twice or inside another;
//! a sane backup limit and flush interval; the volatile dir absolute and apart from the
//! targets. Pure: nothing here looks at the filesystem (mount time checks that targets exist).

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::path::{Component, Path};
use std::time::Duration;

use super::error::{ConfigError, Place};
use super::{Config, TargetSettings};

/// The largest `backup_limit` accepted.
pub const MAX_BACKUP_LIMIT: u32 = 1000;

/// Where the volatile dir is when a target leaves it unset: `/run` for root, and
/// `$XDG_RUNTIME_DIR` (normally `/run/user/<uid>`) for other users.
const DEFAULT_VOLATILE_PARENT: &str = "/run";

/// Where a config's parts were written, so that errors can point there.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origins {
    /// Where the list of targets is (or should be); used when it is empty.
    pub list: Option<Place>,
    /// One per target, in order.
    pub targets: Vec<TargetOrigin>,
}

/// Where one target's path and the settings that can be wrong were written.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TargetOrigin {
    pub path: Place,
    pub volatile: Place,
    pub backup_limit: Place,
}

/// Which of a target's places an error points at.
#[derive(Clone, Copy)]
enum Field {
    Path,
    Volatile,
    BackupLimit,
}

/// Checks the rules above. Errors name `file` but no line: use it for configs built in code.
pub fn validate(cfg: &Config, file: &Path) -> Result<(), ConfigError> {
    validate_at(cfg, file, &Origins::default())
}

/// Checks the rules above, pointing errors at the places in `at`.
pub(crate) fn validate_at(cfg: &Config, file: &Path, at: &Origins) -> Result<(), ConfigError> {
    if cfg.targets.is_empty() {
        let problem = "no targets: name at least one directory to keep in RAM";
        return Err(ConfigError::new(file, at.list, problem));
    }
    for (i, target) in cfg.targets.iter().enumerate() {
        check_target(target).map_err(|(field, p)| ConfigError::new(file, at.place(i, field), p))?;
    }
    if let Some((earlier, later)) = first_clash(&cfg.targets) {
        let p = check_pair(cfg, at, earlier, later)
            .err()
            .unwrap_or_default();
        return Err(ConfigError::new(file, at.place(later, Field::Path), p));
    }
    Ok(())
}

/// The first target (in order) that equals, lies inside or contains an earlier one, with
/// that earlier one. O(n log n): the earlier targets are kept sorted, where a path's
/// descendants follow it directly, so each target looks up its ancestors and its first
/// follower instead of every earlier target.
fn first_clash(targets: &[TargetSettings]) -> Option<(usize, usize)> {
    let mut seen: BTreeMap<&Path, usize> = BTreeMap::new();
    for (later, t) in targets.iter().enumerate() {
        let path = t.target.as_path();
        let ancestor = path.ancestors().find_map(|a| seen.get(a).copied());
        let descendant = || {
            let (&next, &i) = seen.range::<Path, _>((Excluded(path), Unbounded)).next()?;
            next.starts_with(path).then_some(i)
        };
        if let Some(earlier) = ancestor.or_else(descendant) {
            return Some((earlier, later));
        }
        seen.insert(path, later);
    }
    None
}

impl Origins {
    fn place(&self, i: usize, field: Field) -> Option<Place> {
        let origin = self.targets.get(i)?;
        Some(match field {
            Field::Path => origin.path,
            Field::Volatile => origin.volatile,
            Field::BackupLimit => origin.backup_limit,
        })
    }

    /// How to name target `i` in a message about another one.
    fn name(&self, i: usize) -> String {
        match self.targets.get(i) {
            Some(origin) => format!("line {}", origin.path.line),
            None => format!("target #{}", i + 1),
        }
    }
}

/// Checks one target's settings as they are once the command line's options are applied
/// over the file's (issue 12: `--backup-limit 5000` passed the file's check).
pub fn check_settings(t: &TargetSettings) -> Result<(), String> {
    check_target(t).map_err(|(_, problem)| problem)
}

fn check_target(t: &TargetSettings) -> Result<(), (Field, String)> {
    let path = &t.target;
    check_path(path, "target").map_err(|p| (Field::Path, p))?;
    if path == Path::new("/") {
        let p = "/ cannot be a target: asdfs cannot mount over the root directory";
        return Err((Field::Path, p.into()));
    }
    if t.flush_interval < Duration::from_secs(1) {
        let p = format!(
            "flush interval {:?} of {} is below 1s",
            t.flush_interval,
            path.display()
        );
        return Err((Field::Path, p));
    }
    if t.backup_limit > MAX_BACKUP_LIMIT {
        let p = format!(
            "backup limit {} is too large: at most {MAX_BACKUP_LIMIT}",
            t.backup_limit
        );
        return Err((Field::BackupLimit, p));
    }
    check_volatile(t)
}

fn check_volatile(t: &TargetSettings) -> Result<(), (Field, String)> {
    let (volatile, what) = match &t.volatile {
        Some(v) => (v.as_path(), "the volatile dir"),
        None => (
            Path::new(DEFAULT_VOLATILE_PARENT),
            "the default volatile dir",
        ),
    };
    check_path(volatile, "volatile dir").map_err(|p| (Field::Volatile, p))?;
    let (target, shown) = (&t.target, volatile.display());
    if target.starts_with(volatile) {
        // Whether the volatile dir is in RAM is not known here (and asd's default, /tmp, is
        // often a disk): the reason is that the RAM stores are kept there.
        let p = format!(
            "target {} is inside {what} {shown}, where asdfs keeps its RAM stores: \
             choose a volatile dir outside the target's tree (VOLATILE= in asd.conf, \
             volatile = in asdfs.toml, --volatile), such as /run",
            target.display()
        );
        return Err((Field::Path, p));
    }
    if volatile.starts_with(target) {
        let p = format!("target {} contains {what} {shown}", target.display());
        return Err((Field::Volatile, p));
    }
    Ok(())
}

/// An absolute path in normal form: valid UTF-8, no `.`, `..`, `//` or trailing `/`.
pub fn check_path(path: &Path, what: &str) -> Result<(), String> {
    let Some(s) = path.to_str() else {
        return Err(format!("{what} {path:?} is not valid UTF-8"));
    };
    if !s.starts_with('/') {
        return Err(format!(
            "{what} {s:?} is not an absolute path: write it from /"
        ));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!(
            "{what} {s:?} contains `..`: write the directory it means"
        ));
    }
    let normal = normal_form(path);
    if normal != s {
        return Err(format!(
            "{what} {s:?} is not in normal form: write {normal:?}"
        ));
    }
    Ok(())
}

/// `path` without `.` components, repeated slashes or a trailing slash.
fn normal_form(path: &Path) -> String {
    let parts: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy()),
            _ => None,
        })
        .collect();
    format!("/{}", parts.join("/"))
}

fn check_pair(cfg: &Config, at: &Origins, earlier: usize, later: usize) -> Result<(), String> {
    let (a, b) = (&cfg.targets[earlier].target, &cfg.targets[later].target);
    let (shown_a, shown_b, where_a) = (a.display(), b.display(), at.name(earlier));
    if a == b {
        return Err(format!(
            "target {shown_b} is listed twice (also at {where_a})"
        ));
    }
    if b.starts_with(a) {
        return Err(format!(
            "target {shown_b} is inside target {shown_a} ({where_a}); nested targets are not allowed"
        ));
    }
    if a.starts_with(b) {
        return Err(format!(
            "target {shown_b} contains target {shown_a} ({where_a}); nested targets are not allowed"
        ));
    }
    Ok(())
}
