//! `mount -o remount,ro` and `remount,rw` of an asdfs mount (issue 16), through mount(8)
//! and its helper, and through mount(2) itself (`mount -i`): the disk copy is brought up to
//! date, changes fail with EROFS until the mount is writable again.

use super::*;

const REMOUNTS: &str = r#"
mount -t fuse.asdfs "$T" "$T" -o "backups=no,volatile=$VOL" || exit 93
echo "made in RAM" > "$T/new" && echo changed > "$T/old" && rm "$T/gone" || exit 91
mount -o remount,ro "$T" || exit 94
grep " $T " /proc/self/mountinfo
test -e "$WORK/peek/t/new" && echo "A: on disk when mount returned"
touch "$T/x" 2>&1 | grep -q "Read-only file system" && echo "A: EROFS"
mount -o remount,rw "$T" || exit 95
echo again > "$T/again" && echo "A: writable again"
mount -i -o remount,ro "$T" || exit 96
i=0; while [ $i -lt 100 ] && ! [ -e "$WORK/peek/t/again" ]; do sleep 0.1; i=$((i+1)); done
test -e "$WORK/peek/t/again" && echo "B: on disk soon after mount(2)"
touch "$T/y" 2>&1 | grep -q "Read-only file system" && echo "B: EROFS"
mount -i -o remount,rw "$T" || exit 97
touch "$T/y" && echo "B: writable again"
umount "$T" || exit 92
echo umounted
"#;

#[test]
fn issue_16_remount_read_only_flushes_and_refuses_changes_until_rw() {
    if !can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    let out = s.run(REMOUNTS);
    let stdout = text(&out.stdout);
    for want in [
        "A: on disk when mount returned",
        "A: EROFS",
        "A: writable again",
        "B: on disk soon after mount(2)",
        "B: EROFS",
        "B: writable again",
        "umounted",
    ] {
        assert!(
            stdout.contains(want),
            "missing {want:?}\n{}",
            describe(&out)
        );
    }
    let line = stdout.lines().find(|l| l.contains(" - fuse.asdfs "));
    assert!(
        line.is_some_and(|l| l.contains(" ro,")),
        "not read-only in mountinfo:\n{}",
        describe(&out)
    );
    s.check_written_back(&out);
    assert!(s.target().join("y").exists());
}

/// With umount.fuse.asdfs installed beside the mount helper, as `scripts/install` puts it:
/// umount(8) then asks the daemon, which writes everything and detaches its overlay even
/// while its own flush holds the overlay for a moment (a bare umount(2) could say busy).
const OVERLAY_REMOUNTS: &str = r#"
ln -s "$HELPER" "$(realpath /sbin)/umount.fuse.asdfs" || exit 88
mount -t fuse.asdfs "$T" "$T" -o "backups=no,volatile=$VOL,mode=overlay" || exit 93
grep " $T " /proc/self/mountinfo | grep -q " - overlay " || exit 90
echo "made in RAM" > "$T/new" && echo changed > "$T/old" && rm "$T/gone" || exit 91
mount -o remount,ro "$T" || exit 94
i=0; while [ $i -lt 100 ] && ! [ -e "$WORK/peek/t/new" ]; do sleep 0.1; i=$((i+1)); done
test -e "$WORK/peek/t/new" && echo "on disk soon after the remount"
touch "$T/x" 2>&1 | grep -q "Read-only file system" && echo "EROFS"
mount -o remount,rw "$T" || exit 95
touch "$T/y" && echo "writable again"
umount "$T" || exit 92
echo umounted
"#;

#[test]
fn issue_16_overlay_mode_remount_read_only_is_noticed_and_flushed() {
    if !can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    let out = s.run(OVERLAY_REMOUNTS);
    let stdout = text(&out.stdout);
    for want in [
        "on disk soon after the remount",
        "EROFS",
        "writable again",
        "umounted",
    ] {
        assert!(
            stdout.contains(want),
            "missing {want:?}\n{}",
            describe(&out)
        );
    }
    s.check_written_back(&out);
    assert!(s.target().join("y").exists());
}

const BUSY: &str = r#"
mount -t fuse.asdfs "$T" "$T" -o "backups=no,volatile=$VOL" || exit 93
exec 7>"$T/held" || exit 91
echo "holder $$"
mount -o remount,ro "$T" && echo "remounted although busy"
exec 7>&-
umount "$T" || exit 92
echo umounted
"#;

/// QA: a read-only remount refused because a file is open for writing names who holds it.
#[test]
fn issue_16_a_busy_read_only_remount_names_the_writer() {
    if !can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    let out = s.run(BUSY);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("holder "))
        .unwrap_or("?")
        .to_string();
    assert!(stdout.contains("umounted"), "{}", describe(&out));
    assert!(
        !stdout.contains("remounted although busy"),
        "{}",
        describe(&out)
    );
    let held = format!("{}/held", s.target().display());
    assert!(
        stderr.contains("open for writing: ") && stderr.contains(&format!("{pid} (")),
        "the holder is not named:\n{}",
        describe(&out)
    );
    assert!(
        stderr.contains(&held) || stderr.contains("/held"),
        "{}",
        describe(&out)
    );
}
