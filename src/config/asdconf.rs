//! Reads asd's `/etc/asd.conf` (or `$ASDCONF`) without running it, and turns its settings into
//! a `Config` with asd's defaults: `WHATTOSYNC`, `VOLATILE` (default `/tmp`), `USE_OVERLAYFS`
//! (default off), `USE_BACKUPS` (default on), `BACKUP_LIMIT` (default 5),
//! `ENABLE_HARDLINK_SAFETY_CHECK` (default on: refuse targets whose files have hard links
//! outside); `DEBUG` is accepted and ignored with a note. The syntax is read by
//! `shell`; everything asd would misread or silently ignore is an error here instead:
//! unknown names (a typo such as `WHATOSYNC` must not mount nothing), values asd does not
//! understand, lists where one value is meant.

use std::path::{Path, PathBuf};

use super::error::{ConfigError, Place};
use super::shell::{self, Fault, Statement, Value};
use super::validate::{Origins, TargetOrigin, validate_at};
use super::{Config, DEFAULT_BACKUP_LIMIT, Mode, TargetSettings};

/// The settings asd.conf may set.
const KNOWN: [&str; 7] = [
    "WHATTOSYNC",
    "VOLATILE",
    "USE_OVERLAYFS",
    "USE_BACKUPS",
    "BACKUP_LIMIT",
    "ENABLE_HARDLINK_SAFETY_CHECK",
    "DEBUG",
];

/// asd's default `VOLATILE`.
const ASD_VOLATILE: &str = "/tmp";

/// Reads `text`, the contents of `file`, as asd.conf. `file` is only used in messages.
pub fn parse_asd_conf(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let at = |fault: Fault| ConfigError::new(file, Some(Place::line(fault.line)), fault.problem);
    let mut vars = Vars::default();
    for statement in shell::statements(text).map_err(at)? {
        vars.assign(statement).map_err(at)?;
    }
    let (cfg, origins) = vars.into_config(file).map_err(at)?;
    validate_at(&cfg, file, &origins)?;
    Ok(cfg)
}

/// A setting with the line that set it.
type Set<T> = Option<(usize, T)>;

/// The settings read so far; a later assignment replaces an earlier one, as in bash.
#[derive(Default)]
struct Vars {
    targets: Set<Vec<(usize, PathBuf)>>,
    volatile: Set<Option<PathBuf>>,
    overlay: Set<bool>,
    backups: Set<bool>,
    backup_limit: Set<u32>,
    hardlink_check: Set<bool>,
    notes: Vec<String>,
}

impl Vars {
    fn assign(&mut self, st: Statement) -> Result<(), Fault> {
        let line = st.line;
        match st.name.as_str() {
            "WHATTOSYNC" => self.assign_targets(st)?,
            "VOLATILE" => self.volatile = Some((line, volatile(scalar(&st)?))),
            "USE_OVERLAYFS" => self.overlay = Some((line, truth(&st, false)?)),
            "USE_BACKUPS" => self.backups = Some((line, truth(&st, true)?)),
            "BACKUP_LIMIT" => self.backup_limit = Some((line, backup_limit(&st)?)),
            "ENABLE_HARDLINK_SAFETY_CHECK" => {
                self.hardlink_check = Some((line, hardlink_check(&st)?));
            }
            "DEBUG" => {
                scalar(&st)?;
                self.note(line, "DEBUG is ignored: asdfs has its own logging options");
            }
            name => return Err(unknown(line, name)),
        }
        Ok(())
    }

    fn note(&mut self, line: usize, text: &str) {
        self.notes.push(format!("line {line}: {text}"));
    }

    /// `WHATTOSYNC=(...)`, `WHATTOSYNC+=(...)`, or `WHATTOSYNC=one` (a one-entry list in bash).
    fn assign_targets(&mut self, st: Statement) -> Result<(), Fault> {
        let items = match st.value {
            Value::List(items) => items,
            Value::Scalar(s) if s.is_empty() => Vec::new(),
            Value::Scalar(s) => vec![(st.line, s)],
        };
        let mut paths = items
            .into_iter()
            .map(target_path)
            .collect::<Result<Vec<_>, _>>()?;
        match (st.append, self.targets.take()) {
            (true, Some((line, mut earlier))) => {
                earlier.append(&mut paths);
                self.targets = Some((line, earlier));
            }
            (false, Some((line, _))) => {
                self.note(
                    st.line,
                    &format!("WHATTOSYNC replaces the list set on line {line}"),
                );
                self.targets = Some((st.line, paths));
            }
            (_, None) => self.targets = Some((st.line, paths)),
        }
        Ok(())
    }

    fn into_config(mut self, file: &Path) -> Result<(Config, Origins), Fault> {
        let Some((list_line, paths)) = self.targets.take() else {
            let p = "WHATTOSYNC is not set: list the directories to keep in RAM, e.g. \
                     WHATTOSYNC=('/var/log')";
            return Err(Fault {
                line: 1,
                problem: p.into(),
            });
        };
        if paths.is_empty() {
            let p = "WHATTOSYNC is empty: asd needs at least one directory";
            return Err(Fault {
                line: list_line,
                problem: p.into(),
            });
        }
        let mut notes = vec![format!(
            "read from {} as asd.conf, without running it",
            file.display()
        )];
        if self.volatile.as_ref().is_none_or(|(_, v)| v.is_none()) {
            notes.push(format!(
                "VOLATILE is not set: using asd's default, {ASD_VOLATILE}"
            ));
        }
        notes.append(&mut self.notes);
        let origins = self.origins(&paths, list_line);
        let targets = paths
            .into_iter()
            .map(|(_, path)| self.target(path))
            .collect();
        Ok((Config { targets, notes }, origins))
    }

    fn target(&self, path: PathBuf) -> TargetSettings {
        let volatile = self.volatile.clone().and_then(|(_, v)| v);
        TargetSettings {
            mode: match self.overlay.is_some_and(|(_, on)| on) {
                true => Mode::Overlay,
                false => Mode::Fuse,
            },
            volatile: Some(volatile.unwrap_or_else(|| PathBuf::from(ASD_VOLATILE))),
            backups: self.backups.is_none_or(|(_, on)| on),
            backup_limit: self.backup_limit.map_or(DEFAULT_BACKUP_LIMIT, |(_, n)| n),
            hardlink_check: self.hardlink_check.is_none_or(|(_, on)| on),
            ..TargetSettings::new(path)
        }
    }

    /// Where each target came from; settings left at their default point at the target.
    fn origins(&self, paths: &[(usize, PathBuf)], list_line: usize) -> Origins {
        let line_of = |set: Option<usize>, target: usize| Place::line(set.unwrap_or(target));
        let targets = paths
            .iter()
            .map(|&(line, _)| TargetOrigin {
                path: Place::line(line),
                volatile: line_of(self.volatile.as_ref().map(|(l, _)| *l), line),
                backup_limit: line_of(self.backup_limit.map(|(l, _)| l), line),
            })
            .collect();
        Origins {
            list: Some(Place::line(list_line)),
            targets,
        }
    }
}

/// The value of a setting that takes one value.
fn scalar(st: &Statement) -> Result<&str, Fault> {
    let fault = |problem: String| {
        Err(Fault {
            line: st.line,
            problem,
        })
    };
    match &st.value {
        _ if st.append => fault(format!("{}+= is not supported: write {0}=value", st.name)),
        Value::List(_) => fault(format!("{} takes one value, not a list (...)", st.name)),
        Value::Scalar(s) => Ok(s),
    }
}

/// A `WHATTOSYNC` entry, with trailing slashes removed as asd does.
fn target_path((line, raw): (usize, String)) -> Result<(usize, PathBuf), Fault> {
    if raw.is_empty() {
        return Err(Fault {
            line,
            problem: "empty entry in WHATTOSYNC".into(),
        });
    }
    Ok((line, PathBuf::from(strip_trailing_slashes(&raw))))
}

fn strip_trailing_slashes(s: &str) -> &str {
    match s.trim_end_matches('/') {
        "" if s.starts_with('/') => "/",
        stripped => stripped,
    }
}

/// `VOLATILE`: empty means asd's default.
fn volatile(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(strip_trailing_slashes(value)))
}

/// A yes/no setting read as asd's `is_truthy` does (case-insensitive); empty means `default`.
/// asd takes any other value as "no"; here it is an error.
fn truth(st: &Statement, default: bool) -> Result<bool, Fault> {
    let value = scalar(st)?;
    match value.to_ascii_lowercase().as_str() {
        "" => Ok(default),
        "y" | "yes" | "true" | "t" | "on" | "1" | "enabled" | "enable" | "use" => Ok(true),
        "n" | "no" | "false" | "f" | "off" | "0" | "disabled" | "disable" => Ok(false),
        _ => Err(Fault {
            line: st.line,
            problem: format!(
                "{}={value:?} is neither yes nor no (asd would have taken it as no)",
                st.name
            ),
        }),
    }
}

/// `ENABLE_HARDLINK_SAFETY_CHECK`: `0` turns the check off, another number keeps it on (as
/// does an empty value: asd's default); anything else is an error.
fn hardlink_check(st: &Statement) -> Result<bool, Fault> {
    let value = scalar(st)?.trim();
    match value.parse::<i64>() {
        Ok(n) => Ok(n != 0),
        Err(_) if value.is_empty() => Ok(true),
        Err(_) => Err(Fault {
            line: st.line,
            problem: format!("ENABLE_HARDLINK_SAFETY_CHECK={value:?} is not 0 or 1"),
        }),
    }
}

/// `BACKUP_LIMIT`: digits only, as asd requires; empty means the default, 5.
fn backup_limit(st: &Statement) -> Result<u32, Fault> {
    let value = scalar(st)?;
    if value.is_empty() {
        return Ok(DEFAULT_BACKUP_LIMIT);
    }
    let fault = |why: &str| Fault {
        line: st.line,
        problem: format!("BACKUP_LIMIT={value:?} {why}"),
    };
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fault("is not a whole number of snapshots"));
    }
    value.parse().map_err(|_| fault("is too large"))
}

/// The fault for an unknown `name=`, suggesting a known name it may be a typo of.
fn unknown(line: usize, name: &str) -> Fault {
    let closest = KNOWN
        .iter()
        .map(|known| (edit_distance(&name.to_ascii_uppercase(), known), known))
        .min();
    let hint = match closest {
        Some((distance, known)) if distance <= 3 => format!("did you mean {known}? "),
        _ => String::new(),
    };
    let problem = format!(
        "unknown setting {name}: {hint}asd.conf settings are {}",
        KNOWN[..5].join(", ")
    );
    Fault { line, problem }
}

/// Levenshtein distance between two ASCII-ish names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
