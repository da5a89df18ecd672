//! `load` on real files: the parser chosen by name or content, and errors for files that
//! cannot be read or are not text, naming the file. Also where config files are looked for.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::{asd, native};
use crate::config::{asd_conf_path, load, user_toml};

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

#[test]
fn parser_is_chosen_by_extension_or_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = write(&dir, "asdfs.toml", b"[[target]]\npath = '/var/log'\n");
    assert_eq!(load(&toml).expect("toml").targets, vec![native("/var/log")]);
    let conf = write(&dir, "asd.conf", b"WHATTOSYNC=('/var/log')\n");
    assert_eq!(
        load(&conf).expect("asd.conf").targets,
        vec![asd("/var/log")]
    );
    let sniffed = write(&dir, "mine.conf", b"# asdfs\n\n[[target]]\npath = '/srv'\n");
    assert_eq!(
        load(&sniffed).expect("sniffed toml").targets,
        vec![native("/srv")]
    );
    let asd_as_toml = write(&dir, "asd.toml", b"WHATTOSYNC=('/var/log')\n");
    let e = load(&asd_as_toml).expect_err("asd syntax in a .toml file");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1:", asd_as_toml.display())),
        "{e}"
    );
}

#[test]
fn unreadable_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.conf");
    let e = load(&missing).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot open", missing.display())),
        "{e}"
    );
    let e = load(dir.path()).expect_err("a directory");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read", dir.path().display())),
        "{e}"
    );
}

#[test]
fn bytes_that_are_not_utf8_give_their_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "asd.conf", b"WHATTOSYNC=(\n/a\n/caf\xe9\n)\n");
    let e = load(&path).expect_err("latin-1");
    assert_eq!(e.place().map(|p| p.line), Some(3), "{e}");
    assert!(e.to_string().contains("not UTF-8"), "{e}");
}

#[test]
fn huge_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "asd.conf", &vec![b'#'; 2 << 20]);
    let e = load(&path).expect_err("2 MiB");
    assert!(e.to_string().contains("larger than"), "{e}");
}

#[test]
fn where_config_files_are() {
    assert_eq!(asd_conf_path(None), Path::new("/etc/asd.conf"));
    assert_eq!(
        asd_conf_path(Some(OsStr::new(""))),
        Path::new("/etc/asd.conf")
    );
    assert_eq!(
        asd_conf_path(Some(OsStr::new("/srv/asd.conf"))),
        Path::new("/srv/asd.conf")
    );
    let home = Some(Path::new("/home/u"));
    assert_eq!(
        user_toml(None, home),
        Some(PathBuf::from("/home/u/.config/asdfs/asdfs.toml"))
    );
    assert_eq!(
        user_toml(Some(Path::new("/x")), home),
        Some(PathBuf::from("/x/asdfs/asdfs.toml"))
    );
    assert_eq!(
        user_toml(Some(Path::new("rel")), home),
        Some(PathBuf::from("/home/u/.config/asdfs/asdfs.toml"))
    );
    assert_eq!(user_toml(None, None), None);
}
