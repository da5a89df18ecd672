//! `to_toml` and `describe`: an import writes every value out and reads back to the same
//! targets (for random valid configs too); the description shows each resolved setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::{native, with};
use crate::config::{
    Config, FsyncPolicy, Mode, TargetSettings, describe, parse_asd_conf, parse_toml, to_toml,
    validate,
};

fn config(targets: Vec<TargetSettings>) -> Config {
    Config {
        targets,
        notes: Vec::new(),
    }
}

fn reread(cfg: &Config) -> Config {
    let text = to_toml(cfg);
    parse_toml(&text, Path::new("written.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn import_of_asd_conf_writes_every_value() {
    let asd = "WHATTOSYNC=('/srv/http' /var/log/)\nUSE_OVERLAYFS=yes\nUSE_BACKUPS=no\n\
               BACKUP_LIMIT=7\nVOLATILE=/dev/shm\nENABLE_HARDLINK_SAFETY_CHECK=0\n";
    let cfg = parse_asd_conf(asd, Path::new("/etc/asd.conf")).expect("valid");
    let text = to_toml(&cfg);
    for wanted in [
        "read from /etc/asd.conf",
        "hardlink_check = false",
        "path = \"/srv/http\"",
        "path = \"/var/log\"",
        "mode = \"overlay\"",
        "flush_interval = \"5m\"",
        "fsync = \"defer\"",
        "backups = false",
        "backup_limit = 7",
        "volatile = \"/dev/shm\"",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing from\n{text}");
    }
    assert_eq!(text.matches("[[target]]").count(), 2, "{text}");
    assert_eq!(reread(&cfg).targets, cfg.targets);
    assert!(reread(&cfg).notes.is_empty());
}

#[test]
fn written_values_read_back_exactly() {
    let odd = with(native("/srv/a \"quoted\" \\ back\tslash/é"), |t| {
        t.flush_interval = Duration::new(3723, 5_000_000);
        t.fsync = FsyncPolicy::Sync;
        t.mode = Mode::Overlay;
        t.backups = false;
        t.backup_limit = 0;
        t.volatile = Some(PathBuf::from("/run/ram disk"));
    });
    let cfg = config(vec![native("/var/log"), odd]);
    assert_eq!(reread(&cfg), cfg);
    assert!(
        to_toml(&cfg).contains("# volatile: not set"),
        "{}",
        to_toml(&cfg)
    );
}

#[test]
fn notes_cannot_break_out_of_comments() {
    let cfg = Config {
        targets: vec![native("/a")],
        notes: vec!["x\n[[target]]\npath = \"/b\"".into()],
    };
    assert_eq!(reread(&cfg).targets, cfg.targets);
}

#[test]
fn describe_shows_resolved_settings() {
    let cfg = Config {
        targets: vec![
            native("/var/log"),
            with(native("/srv/http"), |t| {
                t.mode = Mode::Overlay;
                t.fsync = FsyncPolicy::Sync;
                t.backups = false;
                t.flush_interval = Duration::from_secs(3600);
                t.volatile = Some(PathBuf::from("/dev/shm"));
            }),
        ],
        notes: vec!["something was ignored".into()],
    };
    let text = describe(&cfg);
    let blocks: Vec<&str> = text.split("target ").skip(1).collect();
    assert_eq!(blocks.len(), 2, "{text}");
    for wanted in [
        "/var/log",
        "fuse",
        "5m",
        "defer",
        "default: /run",
        "yes, keeping 5 crash snapshots",
    ] {
        assert!(
            blocks[0].contains(wanted),
            "{wanted:?} missing from {}",
            blocks[0]
        );
    }
    for wanted in [
        "/srv/http",
        "overlay",
        "1h",
        "sync (flushes",
        "/dev/shm",
        "backups:         no",
    ] {
        assert!(
            blocks[1].contains(wanted),
            "{wanted:?} missing from {}",
            blocks[1]
        );
    }
    assert!(text.contains("notes:\n  - something was ignored"), "{text}");
}

/// Random valid configs: distinct top-level directories (so none nests in another), names
/// that need quoting, random durations down to the nanosecond, every setting varied.
fn valid_config() -> impl Strategy<Value = Config> {
    let name =
        "[a-zA-Z0-9 ._\"'\\\\é#=-]{1,12}".prop_filter("not . or ..", |n| n != "." && n != "..");
    let target = (
        name,
        any::<bool>(),
        any::<bool>(),
        (1u64..10_000_000, 0u32..1_000_000_000),
        proptest::option::of("/vol/[a-z]{1,8}"),
        any::<bool>(),
        0u32..=1000,
    );
    proptest::collection::vec(target, 1..5).prop_map(|targets| {
        let targets = targets.into_iter().enumerate().map(
            |(i, (name, overlay, sync, (secs, nanos), vol, backups, limit))| TargetSettings {
                target: PathBuf::from(format!("/d{i}/{name}")),
                mode: if overlay { Mode::Overlay } else { Mode::Fuse },
                flush_interval: Duration::new(secs, nanos),
                fsync: if sync {
                    FsyncPolicy::Sync
                } else {
                    FsyncPolicy::Defer
                },
                atime: crate::config::Atime::Noatime,
                volatile: vol.map(PathBuf::from),
                backups,
                backup_limit: limit,
                open_files: None,
                stop_grace: None,
                ram_limit: None,
                data_path: if sync {
                    crate::config::DataPath::Daemon
                } else {
                    crate::config::DataPath::Auto
                },
                hardlink_check: !backups,
                force: false,
            },
        );
        config(targets.collect())
    })
}

proptest! {
    #[test]
    fn to_toml_round_trips(cfg in valid_config()) {
        prop_assert!(validate(&cfg, Path::new("generated")).is_ok());
        let text = to_toml(&cfg);
        let back = parse_toml(&text, Path::new("written.toml"));
        prop_assert_eq!(back, Ok(cfg), "{}", text);
    }
}

/// The settings `asdfs mount` hands its daemon (JSON) come back the same, non-UTF-8 paths
/// and every field included.
#[test]
fn settings_handed_to_the_daemon_come_back_the_same() {
    use std::os::unix::ffi::OsStringExt;
    let odd = |b: &[u8]| std::path::PathBuf::from(std::ffi::OsString::from_vec(b.to_vec()));
    let s = super::TargetSettings {
        mode: crate::config::Mode::Overlay,
        flush_interval: std::time::Duration::from_secs(420),
        fsync: crate::config::FsyncPolicy::Sync,
        atime: crate::config::Atime::Relatime,
        volatile: Some(odd(b"/run/\xff")),
        backups: false,
        backup_limit: 7,
        open_files: Some(99),
        stop_grace: Some(std::time::Duration::from_millis(1500)),
        ram_limit: None,
        data_path: crate::config::DataPath::Daemon,
        hardlink_check: false,
        force: true,
        ..super::TargetSettings::new(odd(b"/srv/caf\xe9"))
    };
    let json = serde_json::to_string(std::slice::from_ref(&s)).unwrap();
    let back: Vec<super::TargetSettings> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, vec![s]);
}
