//! Issue 11: the edges of a mount's life through mount(8) and umount(8) in a private mount
//! namespace. umount(8) runs `/sbin/umount.fuse.asdfs`, which returns only once the final
//! flush is on disk (and fails when it cannot be written); `asdfs unmount` returns once the
//! daemon is gone; a mount right after an unmount always works; mount(8)'s helper is silent
//! unless `-v`.

use super::{Scene, describe, text, wait_daemons_gone};
use std::fs;

/// The umount helper, beside the mount helper in the namespace's /sbin (see
/// `HELPER_IN_SBIN`): the same program, called by its other name.
const UMOUNT_HELPER_IN_SBIN: &str = r#"
ln -s "$HELPER" "$(realpath /sbin)/umount.fuse.asdfs" || exit 88
"#;

#[test]
fn issue_11_umount_returns_once_the_file_is_on_disk() {
    if !super::can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    let out = s.run(&format!(
        r#"{UMOUNT_HELPER_IN_SBIN}
mount -t fuse.asdfs "$T" "$T" -o "volatile=$VOL,backups=no" || exit 93
head -c 160M /dev/urandom > "$T/big" || exit 94
sum=$(md5sum < "$T/big")
umount "$T" || exit 95
echo "size $(stat -c %s "$WORK/peek/t/big")"
test "$(md5sum < "$WORK/peek/t/big")" = "$sum" && echo "same data"
"#
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("size 167772160\n"), "{}", describe(&out));
    assert!(stdout.contains("same data\n"), "{}", describe(&out));
    wait_daemons_gone(&s.work.path().display().to_string());
}

#[test]
fn issue_11_umount_fails_when_the_final_flush_cannot_be_written() {
    if !super::can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    fs::create_dir_all(s.work.path().join("ro/t")).unwrap();
    // The directory holding the target is a mount of its own, made read-only under the
    // daemon after the write: every flush then fails with EROFS.
    let out = s.run(&format!(
        r#"{UMOUNT_HELPER_IN_SBIN}
R="$WORK/ro"
mount --bind "$R" "$R" || exit 92
mount -t fuse.asdfs "$R/t" "$R/t" -o "volatile=$VOL,backups=no" || exit 93
echo "kept in RAM" > "$R/t/new" || exit 94
mount -o remount,bind,ro "$R" || exit 95
if umount "$R/t" 2>"$WORK/said"; then echo "umount succeeded"; else echo "umount failed"; fi
sed 's/^/said: /' "$WORK/said"
grep -q " $R/t fuse.asdfs " /proc/self/mounts && echo "still mounted"
mount -o remount,bind,rw "$R" || exit 96
umount "$R/t" && echo "umount after room"
cat "$R/t/new"
"#
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("umount failed\n"), "{}", describe(&out));
    // The mount stays, with the changes in RAM, and the message says how to finish.
    assert!(
        stdout.contains("not unmounted") && stdout.contains("asdfs unmount"),
        "{}",
        describe(&out)
    );
    assert!(stdout.contains("still mounted\n"), "{}", describe(&out));
    assert!(
        stdout.contains("umount after room\nkept in RAM\n"),
        "{}",
        describe(&out)
    );
    wait_daemons_gone(&s.work.path().display().to_string());
}

#[test]
fn issue_11_asdfs_unmount_returns_after_the_daemon_is_gone() {
    if !super::can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    // The volatile directory is a tmpfs of its own, unmounted right after `asdfs unmount`.
    let out = s.run(
        r#"
V="$WORK/vol"; mkdir "$V" && mount -t tmpfs tmpfs "$V" || exit 92
"$ASDFS" mount "$T" --volatile "$V" --backups no >/dev/null || exit 93
pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$WORK/.t-asdfs/session")
echo x > "$T/f" || exit 94
"$ASDFS" unmount "$T" >/dev/null || exit 95
state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)
case $state in ""|Z) echo "daemon gone" ;; *) echo "daemon $pid still $state" ;; esac
umount "$V" && echo "volatile unmounted"
cat "$T/f"
"#,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("daemon gone\n"), "{}", describe(&out));
    assert!(
        stdout.contains("volatile unmounted\n"),
        "{}",
        describe(&out)
    );
    assert!(stdout.ends_with("x\n"), "{}", describe(&out));
}

/// `mount; write; umount` 30 times: every mount works, and mount(8)'s helper prints
/// nothing (then, with `-v`, the mount). Odd rounds unmount with `umount -i` (no helper),
/// so the next mount meets a daemon still writing its final flush and removing its store.
#[test]
fn issue_11_mount_write_umount_thirty_times() {
    if !super::can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    let out = s.run(&format!(
        r#"{UMOUNT_HELPER_IN_SBIN}
for i in $(seq 30); do
  mount -t fuse.asdfs "$T" "$T" -o "volatile=$VOL,backups=no" >>"$WORK/said" 2>&1 || echo "mount $i failed"
  echo "$i" > "$T/f" || echo "write $i failed"
  if [ $((i % 2)) = 1 ]; then
    # umount(2) itself may find the mount busy for a moment (EBUSY): retried.
    n=0; until umount -i "$T" 2>/dev/null; do n=$((n + 1)); [ $n -lt 50 ] || break; sleep 0.1; done
    [ $n -lt 50 ]
  else umount "$T"; fi || echo "umount $i failed"
done
sed 's/^/said: /' "$WORK/said"
mount -v -t fuse.asdfs "$T" "$T" -o "volatile=$VOL" 2>&1 | sed 's/^/verbose: /'
umount "$T" || echo "last umount failed"
"#
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("failed"), "{}", describe(&out));
    assert!(!stdout.contains("said: "), "{}", describe(&out));
    assert!(
        stdout.contains(&format!(
            "verbose: asdfs: {} is in RAM\n",
            s.target().display()
        )),
        "{}",
        describe(&out)
    );
    wait_daemons_gone(&s.work.path().display().to_string());
    assert_eq!(fs::read_to_string(s.target().join("f")).unwrap(), "30\n");
    // Every session ended cleanly: the side directory is gone with the last one.
    assert!(!s.work.path().join(".t-asdfs").exists());
}

/// A stop that cannot wait (SIGTERM at shutdown) while the disk copy cannot be written:
/// the daemon detaches the mount but never says the disk copy is up to date; it says the
/// writing goes on and where the changes are, and once the disk can be written again they
/// reach it (found by QA in overlay mode: "unmounted; the disk copy is up to date").
#[test]
fn issue_11_a_forced_stop_with_a_failed_flush_never_says_up_to_date() {
    if !super::can_mount_in_namespaces() {
        return;
    }
    for mode in ["fuse", "overlay"] {
        let s = Scene::new();
        fs::create_dir_all(s.work.path().join("ro/t")).unwrap();
        let out = s.run(&format!(
            r#"R="$WORK/ro"
export ASDFS_LOG_FILE=1
mount --bind "$R" "$R" || exit 92
mount -t fuse.asdfs "$R/t" "$R/t" -o "volatile=$VOL,backups=no,mode={mode}" || exit 93
echo "kept in RAM" > "$R/t/new" || exit 94
mount -o remount,bind,ro "$R" || exit 95
pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$VOL"/asdfs/*/owner.json | head -n 1)
kill -TERM "$pid" || exit 96
i=0; while [ $i -lt 100 ] && ! grep -q "unmounted" "$VOL/asdfs/daemon.log"; do sleep 0.1; i=$((i+1)); done
grep "unmounted" "$VOL/asdfs/daemon.log" | sed 's/^/log: /'
mount -o remount,bind,rw "$R" || exit 97
i=0; while [ $i -lt 300 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
cat "$R/t/new"
"#
        ));
        assert!(out.status.success(), "{mode}: {}", describe(&out));
        let stdout = text(&out.stdout);
        assert!(
            !stdout.contains("up to date"),
            "{mode}: said up to date after a failed flush: {}",
            describe(&out)
        );
        assert!(
            stdout.contains("failed so far") && stdout.contains("kept in RAM ("),
            "{mode}: {}",
            describe(&out)
        );
        assert!(
            stdout.ends_with("kept in RAM\n"),
            "{mode}: {}",
            describe(&out)
        );
        wait_daemons_gone(&s.work.path().display().to_string());
    }
}
