//! Snapshot names: the path a new snapshot gets (asd's names, in local time), taking a name
//! apart again, and the operations that only need names: listing a target's snapshots
//! newest first, pruning them to a limit, and cleaning them all.
//!
//! asd names the files of a target `bar` `.bar-backup_asd-…`, and those of a dot-directory
//! `.bar` also `.bar-backup_asd-…` (no second dot). asdfs before 0.2 wrote `..bar-…` for
//! dot-directories; those names are still found, listed, cleaned and restored.

use super::SnapshotInfo;
use super::fs::invalid;
use crate::fsx::trusted::TrustedPath;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const MARKER: &str = "-backup_asd-crashrecovery-";
const EXT: &str = ".tar.zstd";

/// The snapshot name for `target` at `when` (local time): `/foo/bar` ->
/// `/foo/.bar-backup_asd-crashrecovery-YYYYmmdd_HHMMSS.tar.zstd`. If that name is taken (two
/// crashes within a second), `_01`, `_02`, ... is added after the time: `_` sorts after the
/// `.` of the plain name, and the two digits keep byte order up to `_99`; `list` orders by
/// the number, so more also work.
pub fn snapshot_path(target: &Path, when: SystemTime) -> PathBuf {
    let name = target.file_name().unwrap_or_default();
    let mut base = hidden(name);
    base.push(MARKER);
    base.push(stamp(when));
    let base = target.with_file_name(base);
    // After any snapshot of the same second (even one the limit already removed a sibling
    // of): names must keep sorting in the order they were taken.
    let taken = list(target).unwrap_or_default();
    let prefix = base.file_name().unwrap_or_default().as_bytes().to_vec();
    let same_second = taken
        .iter()
        .filter(|i| {
            i.path
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(&prefix))
        })
        .count();
    if same_second == 0 {
        return free_name(&base, EXT);
    }
    let next = taken
        .iter()
        .filter_map(|i| i.path.file_name())
        .filter_map(|n| {
            n.as_bytes()
                .strip_prefix(prefix.as_slice())
                .map(<[u8]>::to_vec)
        })
        .filter_map(|rest| {
            std::str::from_utf8(&rest)
                .ok()?
                .strip_prefix('_')?
                .split('.')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .max()
        .unwrap_or(0)
        + 1;
    let mut s = base.into_os_string();
    s.push(format!("_{next:02}"));
    s.push(EXT);
    PathBuf::from(s)
}

/// `name` hidden as asd hides it: `bar` -> `.bar`; a dot-directory keeps its one dot.
pub fn hidden(name: &OsStr) -> OsString {
    if name.as_bytes().first() == Some(&b'.') {
        return name.to_os_string();
    }
    let mut n = OsString::from(".");
    n.push(name);
    n
}

/// The names a target's files may start with (before `-backup_asd…`), without the leading
/// dot: asd's, and for a dot-directory also the double-dot name asdfs used to write.
pub(crate) fn cores(target_name: &OsStr) -> Vec<OsString> {
    let asd = hidden(target_name);
    let mut out = vec![OsString::from_vec(asd.as_bytes()[1..].to_vec())];
    if target_name.as_bytes().first() == Some(&b'.') {
        out.push(target_name.to_os_string());
    }
    out
}

/// The name of a conflict copy (design.md §6.2) of the file at `rel` in target `name`:
/// `.NAME-backup_asd-conflict-YYYYmmdd_HHMMSS-PATH`, PATH being `rel` with `%` written `%25`
/// and `/` written `%2F` (only its end if it is long: a name has at most 255 bytes).
pub fn conflict_name(target_name: &OsStr, when: SystemTime, rel: &Path) -> OsString {
    let mut n = hidden(target_name);
    n.push("-backup_asd-conflict-");
    n.push(stamp(when));
    n.push("-");
    let mut path = Vec::new();
    for &b in rel.as_os_str().as_bytes() {
        match b {
            b'%' => path.extend_from_slice(b"%25"),
            b'/' => path.extend_from_slice(b"%2F"),
            _ => path.push(b),
        }
    }
    // Room for a `_NN` suffix.
    let room = 250usize.saturating_sub(n.len());
    let path = &path[path.len().saturating_sub(room)..];
    let mut out = n.into_vec();
    out.extend_from_slice(path);
    OsString::from_vec(out)
}

/// The first of `base+ext`, `base_01+ext`, `base_02+ext`, ... that does not exist.
pub(super) fn free_name(base: &Path, ext: &str) -> PathBuf {
    let with = |suffix: String| {
        let mut s = base.as_os_str().to_os_string();
        s.push(suffix);
        s.push(ext);
        PathBuf::from(s)
    };
    let mut candidate = with(String::new());
    let mut n = 1u32;
    while candidate.trusted_symlink_metadata().is_ok() {
        candidate = with(format!("_{n:02}"));
        n += 1;
    }
    candidate
}

/// The target a snapshot was taken of (`/foo/.bar-…-crashrecovery-….tar.zstd` -> `/foo/bar`,
/// or `/foo/.bar` when only that directory exists; `/foo/..bar-…` -> `/foo/.bar`).
pub fn target_of(snapshot: &Path) -> Option<PathBuf> {
    let parsed = parse_name(snapshot.file_name()?)?;
    let plain = snapshot.with_file_name(&parsed.name);
    if parsed.name.as_bytes().first() == Some(&b'.') {
        return Some(plain);
    }
    let dotted = snapshot.with_file_name(hidden(&parsed.name));
    let is_dir = |p: &Path| p.trusted_symlink_metadata().is_ok_and(|m| m.is_dir());
    Some(if !is_dir(&plain) && is_dir(&dotted) {
        dotted
    } else {
        plain
    })
}

/// A snapshot file name taken apart.
pub(super) struct Parsed {
    pub(super) name: OsString,
    /// `YYYYmmdd_HHMMSS`.
    pub(super) stamp: String,
    seq: u32,
}

pub(super) fn parse_name(file: &OsStr) -> Option<Parsed> {
    let core = file
        .as_bytes()
        .strip_prefix(b".")?
        .strip_suffix(EXT.as_bytes())?;
    let marker = MARKER.as_bytes();
    let at = core.windows(marker.len()).rposition(|w| w == marker)?;
    let (name, rest) = (
        &core[..at],
        std::str::from_utf8(&core[at + marker.len()..]).ok()?,
    );
    let (stamp, seq) = match rest.split_at_checked(15)? {
        (s, "") => (s, 0),
        (s, tail) => (s, tail.strip_prefix('_')?.parse().ok()?),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok = stamp.as_bytes()[8] == b'_' && digits(&stamp[..8]) && digits(&stamp[9..]);
    (ok && !name.is_empty()).then(|| Parsed {
        name: OsString::from_vec(name.to_vec()),
        stamp: stamp.to_string(),
        seq,
    })
}

/// `YYYYmmdd_HHMMSS` -> `YYYY-mm-dd HH:MM:SS`.
pub(super) fn pretty(stamp: &str) -> String {
    let s = stamp;
    format!(
        "{}-{}-{} {}:{}:{}",
        &s[..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

/// `when` in local time as `YYYYmmdd_HHMMSS`.
pub(crate) fn stamp(when: SystemTime) -> String {
    let secs = match when.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let t = secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null zone pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return "19700101_000000".into();
    }
    format!(
        "{:04}{:02}{:02}_{:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// The directory that holds `path` ("." for a bare name).
pub(super) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The crash snapshots of `target`, newest first. Looks only in the target's parent.
pub fn list(target: &Path) -> io::Result<Vec<SnapshotInfo>> {
    list_in(target, parent_of(target))
}

/// `list`, reading the target's parent at `parent` (the daemon: `/proc/self/fd/N` of the
/// directory it holds, so that no path above it is walked again). Sizes come from the
/// kernel's cached attributes: a name someone mounted a FUSE filesystem on is not asked.
pub fn list_in(target: &Path, parent: &Path) -> io::Result<Vec<SnapshotInfo>> {
    let name = target
        .file_name()
        .ok_or_else(|| invalid(format!("{} has no name", target.display())))?;
    let cores = cores(name);
    let mut found = Vec::new();
    for entry in crate::fsx::trusted::read_dir(parent)? {
        let entry = entry?;
        let file = entry.file_name();
        let Some(p) = parse_name(&file).filter(|p| cores.contains(&p.name)) else {
            continue;
        };
        let size = match crate::fsx::trusted::size_cached(entry.path()) {
            Ok((mode, size)) if mode & libc::S_IFMT == libc::S_IFREG => size,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let info = SnapshotInfo {
            path: target.with_file_name(&file),
            target: target.to_path_buf(),
            taken: pretty(&p.stamp),
            size,
        };
        found.push(((p.stamp, p.seq), info));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(found.into_iter().map(|(_, i)| i).collect())
}

/// Who owns `target`: the directory itself, or its parent while it does not exist.
fn target_owner(target: &Path) -> io::Result<u32> {
    match target.trusted_symlink_metadata() {
        Ok(m) => Ok(m.uid()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(parent_of(target).trusted_symlink_metadata()?.uid())
        }
        Err(e) => Err(e),
    }
}

/// Refuses a snapshot file owned by anyone but root or the owner of `target`: it lies beside
/// the target, where that owner (or whoever may write there) could have put any archive, and
/// root must not restore another user's archive over a target that is not theirs.
/// `st` is the file's lstat (or fstat of it opened without following).
pub fn check_owner(snapshot: &Path, st: &std::fs::Metadata, target: &Path) -> io::Result<()> {
    check_owner_is(snapshot, st, target_owner(target)?, target)
}

/// `check_owner` with the owner of `target` already known (read through a descriptor).
pub(super) fn check_owner_is(
    snapshot: &Path,
    st: &std::fs::Metadata,
    owner: u32,
    target: &Path,
) -> io::Result<()> {
    if !st.is_file() {
        return Err(invalid(format!(
            "refusing {}: not a regular file",
            snapshot.display()
        )));
    }
    if st.uid() != 0 && st.uid() != owner {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing {}: owned by uid {}, neither root nor the owner of {} (uid {owner})",
                snapshot.display(),
                st.uid(),
                target.display()
            ),
        ));
    }
    Ok(())
}

/// Keeps the newest `limit` snapshots of `target`, deletes the rest; returns what it deleted.
pub fn enforce_limit(target: &Path, limit: u32) -> io::Result<Vec<PathBuf>> {
    let mut deleted = Vec::new();
    let old = list(target)?.into_iter().skip(limit as usize);
    let old: Vec<SnapshotInfo> = old.collect();
    if old.is_empty() {
        return Ok(deleted);
    }
    // By name under the directory's descriptor: never through a symlink put on the way.
    let flags = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY;
    let dir = nix::fcntl::open(parent_of(target), flags, nix::sys::stat::Mode::empty())?;
    for old in old {
        let name = old.path.file_name().unwrap_or_default();
        let unlinked = nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        match unlinked.map_err(io::Error::from) {
            Ok(()) => deleted.push(old.path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", old.path.display()),
                ));
            }
        }
    }
    Ok(deleted)
}

/// Deletes every crash snapshot of `target` (asd's `clean`); returns what it deleted.
pub fn clean(target: &Path) -> io::Result<Vec<PathBuf>> {
    enforce_limit(target, 0)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The local time as date(1) formats it: an oracle independent of `stamp`.
    fn date(secs: u64, fmt: &str) -> String {
        let out = std::process::Command::new("date")
            .arg("-d")
            .arg(format!("@{secs}"))
            .arg(format!("+{fmt}"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn touch(p: &Path, len: usize) {
        std::fs::write(p, vec![7u8; len]).unwrap();
    }

    #[test]
    fn name_is_asds_in_local_time() {
        for secs in [0, 1_700_000_000, 1_719_792_000 + 3599, 4_102_444_799] {
            let p = snapshot_path(Path::new("/foo/bar"), at(secs));
            let want = format!(
                "/foo/.bar-backup_asd-crashrecovery-{}.tar.zstd",
                date(secs, "%Y%m%d_%H%M%S")
            );
            assert_eq!(p, PathBuf::from(want));
        }
    }

    #[test]
    fn dot_directories_get_asds_names_and_old_names_are_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join(".mozilla");
        std::fs::create_dir(&target).unwrap();
        let new = snapshot_path(&target, at(1_700_000_000));
        let want = format!(
            ".mozilla-backup_asd-crashrecovery-{}.tar.zstd",
            date(1_700_000_000, "%Y%m%d_%H%M%S")
        );
        assert_eq!(new.file_name().unwrap(), OsStr::new(&want));
        assert_eq!(target_of(&new), Some(target.clone()));
        touch(&new, 1);
        let old = dir
            .path()
            .join("..mozilla-backup_asd-crashrecovery-20000101_000000.tar.zstd");
        touch(&old, 2);
        assert_eq!(target_of(&old), Some(target.clone()));
        assert_eq!(list(&target).unwrap().len(), 2);
        assert_eq!(clean(&target).unwrap().len(), 2);
    }

    #[test]
    fn target_of_inverts_snapshot_path() {
        for t in ["/foo/bar", "/x/we-backup_asd-crashrecovery-ird", "rel"] {
            let p = snapshot_path(Path::new(t), at(1_700_000_000));
            assert_eq!(target_of(&p), Some(PathBuf::from(t)), "{}", p.display());
        }
    }

    #[test]
    fn other_names_are_not_snapshots() {
        for n in [
            ".bar-backup_asd-old",
            ".bar-backup_asd",
            "bar-backup_asd-crashrecovery-20240101_120000.tar.zstd",
            ".-backup_asd-crashrecovery-20240101_120000.tar.zstd",
            ".bar-backup_asd-crashrecovery-2024010_1120000.tar.zstd",
            ".bar-backup_asd-crashrecovery-20240101_120000.tar.gz",
            ".bar-backup_asd-crashrecovery-20240101_120000_.tar.zstd",
            "..bar-backup_asd-crashrecovery-20240101_120000.tar.zstd.tmp-12",
        ] {
            assert_eq!(target_of(&Path::new("/x").join(n)), None, "{n}");
        }
    }

    #[test]
    fn same_second_gets_a_suffix_that_sorts_after_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bar");
        let first = snapshot_path(&target, at(1_700_000_000));
        touch(&first, 1);
        let second = snapshot_path(&target, at(1_700_000_000));
        touch(&second, 2);
        let third = snapshot_path(&target, at(1_700_000_000));
        assert_ne!(first, second);
        assert_ne!(second, third);
        assert!(second.file_name() > first.file_name());
        assert!(third.file_name() > second.file_name());
        assert_eq!(target_of(&second), Some(target.clone()));
        let listed: Vec<_> = list(&target).unwrap().into_iter().map(|i| i.path).collect();
        assert_eq!(listed, vec![second, first]);
    }

    #[test]
    fn list_finds_only_this_targets_files_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bar");
        let (old, new) = (at(1_600_000_000), at(1_700_000_000));
        touch(&snapshot_path(&target, old), 10);
        let newest = snapshot_path(&target, new);
        touch(&newest, 20);
        touch(&snapshot_path(&dir.path().join("barbaz"), new), 1);
        touch(&snapshot_path(&dir.path().join("ba"), new), 1);
        std::fs::create_dir(dir.path().join(".bar-backup_asd-old")).unwrap();
        std::fs::create_dir(snapshot_path(&target, at(1_800_000_000))).unwrap();
        let inner = dir.path().join("sub");
        std::fs::create_dir(&inner).unwrap();
        touch(&snapshot_path(&inner.join("bar"), new), 1);
        let got = list(&target).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].size, 20);
        assert_eq!(got[1].size, 10);
        assert_eq!(got[0].taken, date(1_700_000_000, "%Y-%m-%d %H:%M:%S"));
        assert_eq!(got[0].target, target);
        assert_eq!(got[0].path, newest);
    }

    #[test]
    fn limit_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bar");
        let paths: Vec<PathBuf> = (0..7)
            .map(|i| {
                let p = snapshot_path(&target, at(1_700_000_000 + i * 86_400));
                touch(&p, 1);
                p
            })
            .collect();
        let mut deleted = enforce_limit(&target, 5).unwrap();
        deleted.sort();
        assert_eq!(deleted, paths[..2].to_vec());
        assert!(paths[2..].iter().all(|p| p.exists()));
        assert!(enforce_limit(&target, 5).unwrap().is_empty());
        assert_eq!(clean(&target).unwrap().len(), 5);
        assert!(list(&target).unwrap().is_empty());
    }
}
