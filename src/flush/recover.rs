//! Disk recovery (design.md §7): finish a committed flush, drop an uncommitted one.

use super::journal::Journal;
use crate::backing::{Backing, Loc};
use anyhow::Context;
use std::os::unix::ffi::OsStrExt;

/// The disk copy's generation (0 before the first flush).
pub fn read_generation(b: &dyn Backing) -> anyhow::Result<u64> {
    match b.read_file(&Loc::side("generation")) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            text.trim()
                .parse()
                .with_context(|| format!("the generation file says {:?}", text.trim()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(0),
        Err(e) => Err(e).context("reading the generation file"),
    }
}

/// Brings the disk copy to the state of one complete flush and returns its generation.
/// Returns whether a committed flush had to be completed, too.
pub fn recover_disk(b: &dyn Backing) -> anyhow::Result<(u64, bool)> {
    let mut generation = read_generation(b)?;
    let names: Vec<String> = b
        .read_dir(&Loc::side(""))
        .context("listing the side directory")?
        .into_iter()
        .map(|i| String::from_utf8_lossy(i.name.as_bytes()).into_owned())
        .collect();
    let mut journals: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_prefix("journal.")?.parse().ok())
        .collect();
    journals.sort();
    let mut completed = false;
    for j in journals {
        let loc = Loc::side(Journal::file_name(j));
        if j < generation {
            b.remove(&loc)?;
            continue;
        }
        if j > generation + 1 {
            anyhow::bail!(
                "flush journal {j} does not follow generation {generation}; left for inspection"
            );
        }
        let journal = Journal::decode(&b.read_file(&loc)?)?;
        journal
            .apply(b, true)
            .with_context(|| format!("completing flush {j}"))?;
        tracing::warn!(generation = j, "completed a flush that a crash interrupted");
        generation = read_generation(b)?;
        b.remove(&loc)?;
        completed = true;
    }
    for n in &names {
        let stale = n.starts_with("stage.")
            || (n.starts_with("journal.") && n.ends_with(".tmp"))
            || n.ends_with(".tmp");
        if stale {
            b.remove(&Loc::side(n.as_str()))
                .with_context(|| format!("removing {n}"))?;
        }
    }
    Ok((generation, completed))
}
