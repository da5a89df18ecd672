//! asdfs TOML table tests: defaults and per-target overrides, every key's accepted and refused
//! values, unknown keys at any level, misplaced or missing `path`, and the shared rules, each
//! error with its line (and column where toml gives one).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Want, native, run_table, with};
use crate::config::{FsyncPolicy, Mode, parse_toml};

const FILE: &str = "/etc/asdfs.toml";

fn parse(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
    parse_toml(text, Path::new(FILE))
}

const FULL: &str = r#"
# /etc/asdfs.toml
[defaults]              # every key optional
flush_interval = "15min"
fsync = "sync"
mode = "overlay"
backups = false
backup_limit = 3
volatile = "/dev/shm"

[[target]]
path = "/var/log"

[[target]]              # overrides
path = "/srv/http"
flush_interval = 60
mode = "fuse"
fsync = "defer"
backups = true
backup_limit = 0
volatile = "/run"
"#;

#[test]
fn good_files() {
    let from_defaults = with(native("/var/log"), |t| {
        t.flush_interval = Duration::from_secs(900);
        t.fsync = FsyncPolicy::Sync;
        t.mode = Mode::Overlay;
        t.backups = false;
        t.backup_limit = 3;
        t.volatile = Some(PathBuf::from("/dev/shm"));
    });
    let overridden = with(native("/srv/http"), |t| {
        t.flush_interval = Duration::from_secs(60);
        t.backup_limit = 0;
        t.volatile = Some(PathBuf::from("/run"));
    });
    let interval = |secs: u64| {
        Want::Targets(vec![with(native("/a"), |t| {
            t.flush_interval = Duration::from_secs(secs)
        })])
    };
    run_table(
        FILE,
        parse,
        &[
            (
                "minimal",
                "[[target]]\npath = \"/var/log\"\n",
                Want::Targets(vec![native("/var/log")]),
            ),
            (
                "defaults and overrides",
                FULL,
                Want::Targets(vec![from_defaults, overridden]),
            ),
            (
                "empty defaults",
                "[defaults]\n[[target]]\npath = '/a'",
                Want::Targets(vec![native("/a")]),
            ),
            (
                "inline array of tables",
                "target = [{ path = \"/a\" }, { path = \"/b\" }]",
                Want::Targets(vec![native("/a"), native("/b")]),
            ),
            (
                "duration 1h30m",
                "[[target]]\npath = '/a'\nflush_interval = \"1h30m\"",
                interval(5400),
            ),
            (
                "duration in seconds, as text",
                "[[target]]\npath = '/a'\nflush_interval = \"90\"",
                interval(90),
            ),
            (
                "duration in seconds, as a number",
                "[[target]]\npath = '/a'\nflush_interval = 90",
                interval(90),
            ),
            (
                "duration 30s",
                "[defaults]\nflush_interval = '30s'\n[[target]]\npath = '/a'",
                interval(30),
            ),
        ],
    );
}

#[test]
fn bad_keys_and_values() {
    run_table(
        FILE,
        parse,
        &[
            (
                "unknown top-level key",
                "flush = 1\n[[target]]\npath = '/a'",
                Want::Error(1, "unknown field `flush`"),
            ),
            (
                "unknown key in a target",
                "[[target]]\npath = '/a'\nflsh_interval = '5m'",
                Want::Error(3, "unknown field `flsh_interval`"),
            ),
            (
                "unknown key in defaults",
                "[defaults]\nvolatile_dir = '/run'\n[[target]]\npath = '/a'",
                Want::Error(2, "unknown field `volatile_dir`"),
            ),
            (
                "nested table in defaults",
                "[defaults.fuse]\n[[target]]\npath = '/a'",
                Want::Error(1, "unknown field `fuse`"),
            ),
            (
                "nested table in a target",
                "[[target]]\npath = '/a'\n[[target.exclude]]\nglob = '*.tmp'",
                Want::Error(3, "unknown field `exclude`"),
            ),
            (
                "bad duration",
                "[[target]]\npath = '/a'\nflush_interval = '5 parsecs'",
                Want::Error(3, "is not a duration"),
            ),
            (
                "duration too short",
                "[[target]]\npath = '/a'\nflush_interval = '0s'",
                Want::Error(3, "at least 1s"),
            ),
            (
                "zero seconds",
                "[[target]]\npath = '/a'\nflush_interval = 0",
                Want::Error(3, "at least 1s"),
            ),
            (
                "negative seconds",
                "[[target]]\npath = '/a'\nflush_interval = -5",
                Want::Error(3, "at least 1s"),
            ),
            (
                "duration as a boolean",
                "[[target]]\npath = '/a'\nflush_interval = true",
                Want::Error(3, "a duration such as"),
            ),
            (
                "bad fsync",
                "[[target]]\npath = '/a'\nfsync = 'always'",
                Want::Error(3, "unknown variant `always`"),
            ),
            (
                "bad mode",
                "[defaults]\nmode = 'tmpfs'\n[[target]]\npath = '/a'",
                Want::Error(2, "expected `fuse` or `overlay`"),
            ),
            (
                "backups as text",
                "[[target]]\npath = '/a'\nbackups = 'yes'",
                Want::Error(3, "expected a boolean"),
            ),
            (
                "negative backup_limit",
                "[[target]]\npath = '/a'\nbackup_limit = -1",
                Want::Error(3, "expected u32"),
            ),
            (
                "backup_limit too large",
                "[[target]]\npath = '/a'\nbackup_limit = 5000",
                Want::Error(3, "at most 1000"),
            ),
            (
                "backup_limit too large in defaults",
                "[defaults]\nbackup_limit = 1001\n[[target]]\npath = '/a'",
                Want::Error(2, "at most 1000"),
            ),
            (
                "path as a number",
                "[[target]]\npath = 5",
                Want::Error(2, "expected a string"),
            ),
            (
                "duplicate key",
                "[[target]]\npath = '/a'\npath = '/b'",
                Want::Error(3, "duplicate key `path`"),
            ),
            (
                "[target] instead of [[target]]",
                "[target]\npath = '/a'",
                Want::Error(1, "write [[target]]"),
            ),
            (
                "syntax error",
                "[[target]]\npath = \"/a\nmode = 'fuse'",
                Want::Error(2, ""),
            ),
        ],
    );
}

#[test]
fn targets_missing_misplaced_or_clashing() {
    run_table(
        FILE,
        parse,
        &[
            (
                "no targets",
                "[defaults]\nmode = 'fuse'\n",
                Want::Error(1, "no [[target]]"),
            ),
            ("empty file", "", Want::Error(1, "no [[target]]")),
            (
                "missing path",
                "[[target]]\npath = '/a'\n\n[[target]]\nmode = 'fuse'",
                Want::Error(4, "has no `path`"),
            ),
            (
                "path in defaults",
                "[defaults]\npath = '/a'\n[[target]]\npath = '/b'",
                Want::Error(2, "belongs in a [[target]]"),
            ),
            (
                "relative path",
                "[[target]]\npath = 'var/log'",
                Want::Error(2, "not an absolute path"),
            ),
            (
                "trailing slash",
                "[[target]]\npath = '/var/log/'",
                Want::Error(2, "write \"/var/log\""),
            ),
            (
                "double slash",
                "[[target]]\npath = '//var/log'",
                Want::Error(2, "write \"/var/log\""),
            ),
            (
                "dot",
                "[[target]]\npath = '/var/./log'",
                Want::Error(2, "write \"/var/log\""),
            ),
            (
                "dot-dot",
                "[[target]]\npath = '/var/log/..'",
                Want::Error(2, "contains `..`"),
            ),
            (
                "root",
                "[[target]]\npath = '/'",
                Want::Error(2, "/ cannot be a target"),
            ),
            (
                "empty path",
                "[[target]]\npath = ''",
                Want::Error(2, "not an absolute path"),
            ),
            (
                "duplicate",
                "[[target]]\npath = '/a'\n[[target]]\npath = '/a'",
                Want::Error(4, "listed twice (also at line 2)"),
            ),
            (
                "nested",
                "[[target]]\npath = '/a'\n[[target]]\npath = '/a/b'",
                Want::Error(4, "inside target /a (line 2)"),
            ),
            (
                "nested, outer second",
                "[[target]]\npath = '/a/b'\n[[target]]\npath = '/a'",
                Want::Error(4, "contains target /a/b"),
            ),
            (
                "siblings with a common prefix are fine",
                "[[target]]\npath = '/a'\n[[target]]\npath = '/ab'",
                Want::Targets(vec![native("/a"), native("/ab")]),
            ),
            (
                "relative volatile in defaults",
                "[defaults]\nvolatile = 'run'\n[[target]]\npath = '/a'",
                Want::Error(2, "volatile dir \"run\""),
            ),
            (
                "inside its volatile dir",
                "[[target]]\npath = '/dev/shm/x'\nvolatile = '/dev/shm'",
                Want::Error(2, "inside the volatile dir /dev/shm"),
            ),
            (
                "inside the default volatile dir",
                "[[target]]\npath = '/run/user/1000/x'",
                Want::Error(2, "inside the default volatile dir /run"),
            ),
        ],
    );
}

#[test]
fn errors_give_the_column() {
    let e = parse("[[target]]\npath = '/a'\nmode = 'fus'").expect_err("bad mode");
    assert_eq!(
        e.to_string(),
        "/etc/asdfs.toml:3:8: unknown variant `fus`, expected `fuse` or `overlay`"
    );
    let e = parse("[[target]]\npath = '/a'\n[[target]]\n  path = '/a/b'").expect_err("nested");
    assert_eq!(e.place().and_then(|p| p.column), Some(10));
}

/// Issue 12: the descriptor budget and the stop grace are settings (the environment
/// variables stay as fallbacks when neither the file nor the command line sets them).
#[test]
fn open_files_and_stop_grace_are_settings() {
    let cfg = parse(
        "[defaults]\nopen_files = 4096\n[[target]]\npath = \"/a\"\n\
         [[target]]\npath = \"/b\"\nstop_grace = \"5s\"\nopen_files = 64\n",
    )
    .unwrap();
    let (a, b) = (&cfg.targets[0], &cfg.targets[1]);
    assert_eq!((a.open_files, a.stop_grace), (Some(4096), None));
    assert_eq!(
        (b.open_files, b.stop_grace),
        (Some(64), Some(Duration::from_secs(5)))
    );
}

/// Issue 14: a RAM limit per target, in bytes or as a share of the machine's memory; a bad
/// value is one error at its place.
#[test]
fn issue_14_ram_limit_is_a_size_or_a_share_of_memory() {
    let cfg = parse(
        "[defaults]\nram_limit = \"512M\"\n[[target]]\npath = \"/a\"\n\
         [[target]]\npath = \"/b\"\nram_limit = \"25%\"\n[[target]]\npath = \"/c\"\nram_limit = 1048576\n",
    )
    .unwrap();
    let mem = crate::config::machine_memory();
    assert_eq!(cfg.targets[0].ram_limit, Some(512 << 20));
    assert_eq!(cfg.targets[1].ram_limit, Some(mem / 4));
    assert_eq!(cfg.targets[2].ram_limit, Some(1 << 20));
    for bad in ["\"lots\"", "\"0%\"", "\"150%\"", "\"10K\"", "\"5X\""] {
        let e = parse(&format!("[[target]]\npath = \"/a\"\nram_limit = {bad}\n")).expect_err(bad);
        let msg = e.to_string();
        assert!(
            msg.contains("ram_limit") || msg.contains("RAM limit"),
            "{bad}: {msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
    assert_eq!(crate::config::parse_ram_limit("1.5G"), Ok(3 << 29));
    assert_eq!(crate::config::parse_ram_limit("64MiB"), Ok(64 << 20));
}

/// Issue 13: who serves file data in FUSE mode is a setting, `auto` unless set.
#[test]
fn the_data_path_is_a_setting() {
    use crate::config::DataPath;
    let cfg = parse(
        "[defaults]\ndata_path = \"daemon\"\n[[target]]\npath = \"/a\"\n\
         [[target]]\npath = \"/b\"\ndata_path = \"passthrough\"\n",
    )
    .unwrap();
    let paths: Vec<_> = cfg.targets.iter().map(|t| t.data_path).collect();
    assert_eq!(paths, [DataPath::Daemon, DataPath::Passthrough]);
    let plain = parse("[[target]]\npath = \"/a\"\n").unwrap();
    assert_eq!(plain.targets[0].data_path, DataPath::Auto);
    let e = parse("[[target]]\npath = \"/a\"\ndata_path = \"kernel\"\n").expect_err("bad value");
    assert!(
        e.to_string().contains("data_path") || e.to_string().contains("kernel"),
        "{e}"
    );
}
