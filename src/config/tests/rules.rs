//! `validate` on configs built in code (as the command line builds them): the shared rules,
//! messages that name the file but no line, and no filesystem access.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{native, with};
use crate::config::{Config, TargetSettings, validate};

fn check(targets: Vec<TargetSettings>) -> Result<(), String> {
    validate(
        &Config {
            targets,
            notes: Vec::new(),
        },
        Path::new("cmdline"),
    )
    .map_err(|e| e.to_string())
}

fn volatile(t: TargetSettings, dir: &str) -> TargetSettings {
    with(t, |t| t.volatile = Some(PathBuf::from(dir)))
}

#[test]
fn rules_on_configs_built_in_code() {
    let cases: Vec<(&str, Vec<TargetSettings>, Option<&str>)> = vec![
        ("one target", vec![native("/var/log")], None),
        (
            "targets that do not exist are fine",
            vec![native("/no/such/dir/anywhere")],
            None,
        ),
        ("siblings", vec![native("/srv/a"), native("/srv/ab")], None),
        ("no targets", vec![], Some("cmdline: no targets")),
        (
            "relative",
            vec![native("var/log")],
            Some("cmdline: target \"var/log\" is not an absolute path"),
        ),
        ("root", vec![native("/")], Some("/ cannot be a target")),
        (
            "trailing slash",
            vec![native("/var/log/")],
            Some("write \"/var/log\""),
        ),
        (
            "dot-dot",
            vec![native("/var/../log")],
            Some("contains `..`"),
        ),
        (
            "duplicate",
            vec![native("/a"), native("/b"), native("/a")],
            Some("listed twice (also at target #1)"),
        ),
        (
            "nested",
            vec![native("/a/b/c"), native("/a")],
            Some("contains target /a/b/c (target #1)"),
        ),
        (
            "flush below 1s",
            vec![with(native("/a"), |t| {
                t.flush_interval = Duration::from_millis(500)
            })],
            Some("below 1s"),
        ),
        (
            "backup limit 1000 is fine",
            vec![with(native("/a"), |t| t.backup_limit = 1000)],
            None,
        ),
        (
            "backup limit 1001",
            vec![with(native("/a"), |t| t.backup_limit = 1001)],
            Some("at most 1000"),
        ),
        (
            "volatile relative",
            vec![volatile(native("/a"), "ram")],
            Some("volatile dir \"ram\" is not an absolute"),
        ),
        (
            "volatile not normal",
            vec![volatile(native("/a"), "/dev/shm/")],
            Some("write \"/dev/shm\""),
        ),
        (
            "target in volatile",
            vec![volatile(native("/dev/shm/a"), "/dev/shm")],
            Some("inside the volatile dir"),
        ),
        (
            "target is volatile",
            vec![volatile(native("/dev/shm"), "/dev/shm")],
            Some("inside the volatile dir"),
        ),
        (
            "target contains volatile",
            vec![volatile(native("/srv"), "/srv/ram")],
            Some("contains the volatile dir"),
        ),
        (
            "default volatile is /run",
            vec![native("/run/user/1000/cache")],
            Some("inside the default volatile dir /run"),
        ),
    ];
    let mut failures = Vec::new();
    for (case, targets, want) in cases {
        match (check(targets), want) {
            (Ok(()), None) => {}
            (Err(e), Some(text)) if e.contains(text) && e.starts_with("cmdline: ") => {}
            (got, want) => failures.push(format!("{case}: wanted {want:?}, got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn paths_that_are_not_utf8_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/srv/\xff"));
    let e = check(vec![TargetSettings::new(path)]).expect_err("not UTF-8");
    assert!(e.contains("not valid UTF-8"), "{e}");
}

#[test]
fn clashes_are_found_among_many_targets() {
    let at = |paths: &[&str]| {
        let cfg = Config {
            targets: paths
                .iter()
                .map(|p| TargetSettings::new(p.into()))
                .collect(),
            notes: Vec::new(),
        };
        validate(&cfg, Path::new("f")).map_err(|e| e.to_string())
    };
    let many: Vec<String> = (0..10_000).map(|i| format!("/srv/{i}/data")).collect();
    let mut refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(at(&refs), Ok(()));
    refs.push("/srv/5000");
    let e = at(&refs).unwrap_err();
    assert!(
        e.contains("target /srv/5000 contains target /srv/5000/data"),
        "{e}"
    );
    refs.pop();
    refs.push("/srv/17/data/x");
    let e = at(&refs).unwrap_err();
    assert!(e.contains("is inside target /srv/17/data"), "{e}");
    refs.pop();
    refs.push("/srv/9999/data");
    let e = at(&refs).unwrap_err();
    assert!(e.contains("listed twice"), "{e}");
    assert_eq!(
        at(&["/a/b", "/a/bc", "/a/b c", "/a"]).unwrap_err(),
        at(&["/a/b", "/a"]).unwrap_err()
    );
}
