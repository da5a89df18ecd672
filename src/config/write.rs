//! Writes a `Config` out: as asdfs TOML (`asdfs config import`), every value explicit so that
//! reading it back gives the same targets; and as a description for people
//! (`asdfs config check`).

use std::fmt::Write as _;

use super::{Atime, Config, DataPath, FsyncPolicy, Mode, TargetSettings};

/// The config as asdfs TOML. The notes (which say, for an import, where it came from) become
/// header comments; `parse_toml` of the result gives back the same targets and no notes.
pub fn to_toml(cfg: &Config) -> String {
    let mut out = String::from(
        "# asdfs configuration (the format of /etc/asdfs.toml), written by `asdfs config import`.\n\
         # Check it with `asdfs config check`.\n",
    );
    for note in &cfg.notes {
        out.push_str(&comment(note));
    }
    for t in &cfg.targets {
        out.push_str("\n[[target]]\n");
        push_key(&mut out, "path", &quote(&t.target.to_string_lossy()));
        push_key(&mut out, "mode", &quote(mode_name(t.mode)));
        push_key(
            &mut out,
            "flush_interval",
            &quote(&humantime::format_duration(t.flush_interval).to_string()),
        );
        push_key(&mut out, "fsync", &quote(fsync_name(t.fsync)));
        if t.atime == Atime::Relatime {
            push_key(&mut out, "atime", &quote("relatime"));
        }
        if t.data_path != DataPath::Auto {
            push_key(&mut out, "data_path", &quote(t.data_path.name()));
        }
        push_key(&mut out, "backups", &t.backups.to_string());
        push_key(&mut out, "backup_limit", &t.backup_limit.to_string());
        push_key(&mut out, "hardlink_check", &t.hardlink_check.to_string());
        match &t.volatile {
            Some(v) => push_key(&mut out, "volatile", &quote(&v.to_string_lossy())),
            None => out.push_str(
                "# volatile: not set, so /run for root and $XDG_RUNTIME_DIR for others\n",
            ),
        }
    }
    out
}

/// The resolved settings, one block per target, then the notes.
pub fn describe(cfg: &Config) -> String {
    let mut out = String::new();
    for t in &cfg.targets {
        out.push_str(&describe_target(t));
    }
    if !cfg.notes.is_empty() {
        out.push_str("notes:\n");
        for note in &cfg.notes {
            let _ = writeln!(out, "  - {}", note.replace(['\n', '\r'], " "));
        }
    }
    out
}

fn describe_target(t: &TargetSettings) -> String {
    let volatile = match &t.volatile {
        Some(v) => v.display().to_string(),
        None => "default: /run for root, $XDG_RUNTIME_DIR for other users".into(),
    };
    let backups = match t.backups {
        true => format!("yes, keeping {} crash snapshots", t.backup_limit),
        false => "no".into(),
    };
    let mut out = format!("target {}\n", t.target.display());
    let _ = writeln!(out, "  mode:            {}", mode_name(t.mode));
    let _ = writeln!(
        out,
        "  flush interval:  {}",
        humantime::format_duration(t.flush_interval)
    );
    let _ = writeln!(out, "  fsync:           {}", fsync_meaning(t.fsync));
    if t.atime == Atime::Relatime {
        let _ = writeln!(
            out,
            "  atime:           relatime (reads record access times)"
        );
    }
    if t.mode == Mode::Fuse && t.data_path != DataPath::Auto {
        let _ = writeln!(out, "  data path:       {}", t.data_path.name());
    }
    let _ = writeln!(out, "  volatile dir:    {volatile}");
    let _ = writeln!(out, "  backups:         {backups}");
    let links = match t.hardlink_check {
        true => "refuse files with hard links outside the target",
        false => "off (hard links outside the target are split by flushes)",
    };
    let _ = writeln!(out, "  hardlink check:  {links}");
    out
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Fuse => "fuse",
        Mode::Overlay => "overlay",
    }
}

fn fsync_name(fsync: FsyncPolicy) -> &'static str {
    match fsync {
        FsyncPolicy::Defer => "defer",
        FsyncPolicy::Sync => "sync",
    }
}

fn fsync_meaning(fsync: FsyncPolicy) -> &'static str {
    match fsync {
        FsyncPolicy::Defer => "defer (returns at once; the data reaches disk with the next flush)",
        FsyncPolicy::Sync => "sync (flushes before returning)",
    }
}

fn push_key(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

/// `s` as a TOML string, escaped as needed.
fn quote(s: &str) -> String {
    ::toml::Value::String(s.to_owned()).to_string()
}

/// `text` as one comment line.
fn comment(text: &str) -> String {
    format!("# {}\n", text.replace(['\n', '\r'], " "))
}
