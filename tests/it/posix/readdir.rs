//! Listing a directory while it changes (issue 16): each entry present for the whole listing
//! comes back exactly once, and the listing ends, in FUSE and overlay mode as on tmpfs.

use super::privs::pairs;
use super::*;

const FILES: usize = 15_000;

/// What a listing of `dir` returned while the files it had already returned were renamed,
/// one new file was made and one returned file removed after every getdents call: the
/// number of entries, how many of the untouched original names came back twice or never,
/// and whether the listing ended.
fn list_while_renaming(dir: &Path) -> R<(usize, usize, usize, bool)> {
    let f = open_dir(dir)?;
    let mut seen: BTreeMap<OsString, usize> = BTreeMap::new();
    let mut total = 0;
    for round in 0..1000 {
        let chunk = getdents(&f, 8 * 1024)?;
        if chunk.is_empty() {
            let originals = (0..FILES).map(|i| OsString::from(format!("f{i:05}")));
            let (twice, never) = originals.fold((0, 0), |(t, n), name| {
                match seen.get(&name).copied().unwrap_or(0) {
                    0 => (t, n + 1),
                    1 => (t, n),
                    _ => (t + 1, n),
                }
            });
            // Renamed names were returned under their old name first.
            return Ok((total, twice, never, true));
        }
        total += chunk.len();
        for (_, _, name) in &chunk {
            *seen.entry(name.clone()).or_default() += 1;
            let s = name.to_string_lossy();
            if let Some(rest) = s.strip_prefix('f') {
                rename(&dir.join(name), &dir.join(format!("r{rest}")))?;
            }
        }
        write(&dir.join(format!("new{round}")), b"")?;
        if let Some((_, _, name)) = chunk.iter().find(|(_, _, n)| n.as_bytes()[0] == b'f') {
            unlink(&dir.join(format!("r{}", &name.to_string_lossy()[1..])))?;
        }
    }
    Ok((total, 0, 0, false))
}

#[test]
fn issue_16_readdir_returns_each_entry_once_while_files_are_renamed() {
    if !fuse_available() {
        return;
    }
    for p in pairs() {
        p.setup("make 15,000 files", |d| -> R<()> {
            mkdir(&j(d, "big"), 0o755)?;
            for i in 0..FILES {
                File::create(j(d, &format!("big/f{i:05}"))).code()?;
            }
            Ok(())
        });
        p.both("entries, originals twice, never, ended", |d| {
            list_while_renaming(&j(d, "big"))
        });
        p.finish();
    }
}
