//! Access times and the ctime of the disk copy (issue 16): with `atime = relatime` reads
//! and listings record access times as tmpfs does; noatime (the default) never does; a
//! remount shows the ctime the disk copy got when it was written.

use super::*;
use crate::harness::asdfs;

/// A Pair whose mount records access times, chosen in a configuration file.
fn relatime_pair() -> Pair {
    let mut m = Mount::prepare(|_| {});
    let conf = m.disk.path().join("asdfs.toml");
    let text = format!("[[target]]\npath = {:?}\natime = \"relatime\"\n", m.target);
    fs::write(&conf, text).unwrap();
    let check = asdfs(["config", "check", conf.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("atime:           relatime"),
        "{check:?}"
    );
    m.extra
        .extend(["--config".to_string(), conf.display().to_string()]);
    m.mount();
    Pair::with(m)
}

#[test]
fn issue_16_relatime_records_reads_and_listings_as_tmpfs_does() {
    if !fuse_available() {
        return;
    }
    let p = relatime_pair();
    let line = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = p.m.target.display().to_string();
    assert!(
        line.lines()
            .any(|l| l.contains(&format!(" {target} ")) && l.contains("relatime")),
        "the mount is not relatime"
    );
    p.setup("make", |d| -> R<()> {
        write(&j(d, "f"), b"mail")?;
        mkdir(&j(d, "dir"), 0o755)?;
        write(&j(d, "dir/x"), b"")?;
        utimens(&j(d, "f"), Set::At(T1), Set::Omit)?;
        utimens(&j(d, "dir"), Set::At(T1), Set::Omit)
    });
    let f = |d: &Path| j(d, "f");
    p.changes(
        "atime after the first read",
        |d| atime(&f(d)),
        |d| read(&f(d)),
    );
    p.changes(
        "atime after a second read",
        |d| atime(&f(d)),
        |d| read(&f(d)),
    );
    p.changes(
        "atime after a write and a read",
        |d| atime(&f(d)),
        |d| {
            write(&f(d), b"more mail")?;
            read(&f(d))
        },
    );
    p.changes(
        "atime of a listed directory",
        |d| atime(&j(d, "dir")),
        |d| list(&j(d, "dir")),
    );
    p.changes(
        "atime of a directory listed again",
        |d| atime(&j(d, "dir")),
        |d| list(&j(d, "dir")),
    );
    // What was recorded reaches the disk copy.
    let seen = atime(&p.m.path("f")).unwrap();
    p.m.flush();
    assert_eq!(atime(&p.m.disk_copy().join("f")), Ok(seen));
    p.finish();
}

#[test]
fn issue_16_noatime_is_the_default_and_ctime_after_a_remount_is_the_disk_copys() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new();
    write(&m.path("f"), b"data").unwrap();
    utimens(&m.path("f"), Set::At(T1), Set::Omit).unwrap();
    read(&m.path("f")).unwrap();
    drop_caches();
    assert_eq!(
        atime(&m.path("f")),
        Ok(T1),
        "noatime: a read records nothing"
    );
    let before = ctime(&m.path("f")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    m.unmount();
    m.mount();
    m.wait_backup();
    // The disk copy's ctime: when the flush wrote the file, or later when the session's
    // hardlink backup linked it.
    let on_disk = ctime(&m.disk_copy().join("f")).unwrap();
    assert_eq!(ctime(&m.path("f")), Ok(on_disk), "ctime is the disk copy's");
    assert!(
        on_disk > before,
        "the disk copy's ctime is when it was written"
    );
}
