//! The model test's snapshots of a tree: what is compared of each path (kind, mode,
//! owner, links, data, user xattrs, mtimes), hard-link groups, and the difference of two.

use super::xattr_call;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What is compared of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) kind: &'static str,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) nlink: u64,
    pub(super) data: Vec<u8>,
    pub(super) xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(super) mtime: Option<(i64, i64)>,
}

pub(super) type Tree = BTreeMap<String, Entry>;

pub(super) fn user_xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: valid buffers and NUL-terminated path.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| s.starts_with(b"user."))
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: as above.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if len >= 0 {
            v.truncate(len as usize);
            out.insert(name.to_vec(), v);
        }
    }
    out
}

/// Everything under `root`; with `times`, the mtimes of files and symlinks too.
pub(super) fn tree(root: &Path, times: bool) -> Tree {
    tree_as(root, times, true)
}

/// `tree`; without `dir_links` (overlay mode), link counts are left out: overlayfs reports
/// 1 for a directory merged from two layers, and after some flushes a hard-linked file
/// shows more links than it has names (seed 2 with 600 steps; the disk copy is right).
/// Which names are one file is compared by `link_groups`.
pub(super) fn tree_as(root: &Path, times: bool, dir_links: bool) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            let m = fs::symlink_metadata(&p).unwrap();
            let (kind, data) = if m.is_dir() {
                stack.push(r.clone());
                ("dir", Vec::new())
            } else if m.file_type().is_symlink() {
                (
                    "symlink",
                    fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
                )
            } else {
                ("file", fs::read(&p).unwrap())
            };
            let mtime = (times && kind != "dir").then(|| (m.mtime(), m.mtime_nsec()));
            let mode = if kind == "symlink" {
                0
            } else {
                m.mode() & 0o7777
            };
            let entry = Entry {
                kind,
                mode,
                uid: m.uid(),
                gid: m.gid(),
                nlink: if !dir_links { 0 } else { m.nlink() },
                data,
                xattrs: user_xattrs(&p),
                mtime,
            };
            out.insert(r.display().to_string(), entry);
        }
    }
    out
}

/// Replaces the file at `p` by a copy of it (data, owner, mode, user xattrs).
pub(super) fn dissolve(p: &Path) {
    let tmp = p.with_file_name(".dissolving");
    let m = fs::symlink_metadata(p).unwrap();
    fs::write(&tmp, fs::read(p).unwrap()).unwrap();
    for (name, value) in user_xattrs(p) {
        let name = String::from_utf8(name).unwrap();
        xattr_call(&tmp, &name, Some(&value)).unwrap();
    }
    std::os::unix::fs::lchown(&tmp, Some(m.uid()), Some(m.gid())).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(m.mode() & 0o7777)).unwrap();
    fs::rename(&tmp, p).unwrap();
}

/// The regular files and the directories under `root`, sorted.
pub(super) fn names_by_kind(root: &Path) -> (Vec<String>, Vec<String>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let Ok(m) = fs::symlink_metadata(root.join(&r)) else {
                continue;
            };
            if m.is_dir() {
                dirs.push(r.display().to_string());
                stack.push(r);
            } else if m.is_file() {
                files.push(r.display().to_string());
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

/// The names of each file with several names, sorted.
pub(super) fn link_groups(root: &Path) -> Vec<Vec<String>> {
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let Ok(m) = fs::symlink_metadata(root.join(&r)) else {
                continue;
            };
            if m.is_dir() {
                stack.push(r);
            } else if m.is_file() {
                by_ino
                    .entry(m.ino())
                    .or_default()
                    .push(r.display().to_string());
            }
        }
    }
    let mut groups: Vec<Vec<String>> = by_ino
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    groups.sort();
    groups
}

/// Link counts on disk include the hardlink backups' links (`.t-backup_asd-old*`, also one
/// being made or removed): leave them out.
pub(super) fn discount_backup(t: &mut Tree, root: &Path, backup: &Path) {
    let mut links: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let parent = backup.parent().unwrap();
    let prefix = backup.file_name().unwrap().to_string_lossy().into_owned();
    let mut stack: Vec<PathBuf> = fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                *links.entry(m.ino()).or_default() += 1;
            }
        }
    }
    for (path, e) in t.iter_mut() {
        if e.kind != "dir" {
            let ino = fs::symlink_metadata(root.join(path)).unwrap().ino();
            e.nlink -= links.get(&ino).copied().unwrap_or(0);
        }
    }
}

pub(super) fn diff(a: &Tree, b: &Tree) -> String {
    let mut out = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => out += &format!("  only in first: {k} ({})\n", v.kind),
            Some(w) if w != v => {
                let mut v2 = v.clone();
                let mut w2 = w.clone();
                let big = v.data.len() > 64 || w.data.len() > 64;
                if big {
                    v2.data = format!("{} bytes", v.data.len()).into_bytes();
                    w2.data = format!("{} bytes", w.data.len()).into_bytes();
                }
                out += &format!("  {k}:\n    {v2:?}\n    {w2:?}\n");
            }
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out += &format!("  only in second: {k}\n");
    }
    out
}
