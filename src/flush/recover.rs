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

/// What recovery did to the disk copy.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The disk copy's generation now.
    pub generation: u64,
    /// A committed flush was completed.
    pub completed: bool,
    /// A committed flush could not be completed step by step and was salvaged: what
    /// happened, for status and the log.
    pub salvaged: Option<String>,
    /// Paths in the target that the skipped steps of a salvaged flush concerned: FUSE
    /// mode's store checks them against the disk and writes them again (`Store::resync`).
    pub resync: Vec<std::path::PathBuf>,
}

/// What a salvage did.
pub struct Salvage {
    /// What happened, for status and the log.
    pub msg: String,
    /// Paths in the target that the skipped steps concerned (see `Recovered::resync`).
    pub paths: Vec<std::path::PathBuf>,
}

/// Brings the disk copy to the state of one complete flush (design.md §7). A committed
/// journal that cannot be completed (a step fails for a reason other than an I/O error)
/// never stops a mount: it is salvaged (see `salvage`), and the store or upper layer that
/// describes the changes is written again by the next flush.
pub fn recover_disk(b: &dyn Backing) -> anyhow::Result<Recovered> {
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
    let mut out = Recovered::default();
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
        let journal = match Journal::decode(&b.read_file(&loc)?) {
            Ok(journal) => journal,
            Err(e) => {
                // Written whole by rename, so this is not a torn write: keep it for a look
                // and go on from the generation the disk copy has.
                set_aside(b, &Journal::file_name(j), "unreadable")?;
                out.salvaged = Some(format!(
                    "flush journal {j} could not be read ({e}); set aside"
                ));
                continue;
            }
        };
        match journal.apply(b, true) {
            Ok(()) => {
                tracing::warn!(generation = j, "completed a flush that a crash interrupted");
                out.completed = true;
            }
            Err(e) if !structural(&e) => {
                return Err(e).with_context(|| format!("completing flush {j}"));
            }
            Err(e) => {
                let s = salvage(b, &journal, &e)?;
                out.salvaged = Some(s.msg);
                out.resync.extend(s.paths);
                generation = read_generation(b)?;
                continue;
            }
        }
        generation = read_generation(b)?;
        b.remove(&loc)?;
    }
    for n in &names {
        let stale = n.starts_with("stage.")
            || (n.starts_with("journal.") && n.ends_with(".tmp"))
            || n.ends_with(".tmp");
        if stale {
            match b.remove(&Loc::side(n.as_str())) {
                // Set aside by a salvage above.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                r => r.with_context(|| format!("removing {n}"))?,
            }
        }
    }
    out.generation = generation;
    Ok(out)
}

/// Whether a step failed because of what is (or is not) on the disk rather than because
/// the disk failed: running it again cannot help. I/O errors and a full disk are worth a
/// retry; they are not structural.
pub(crate) fn structural(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::NotFound
            | K::NotADirectory
            | K::IsADirectory
            | K::AlreadyExists
            | K::DirectoryNotEmpty
            | K::InvalidInput
            | K::Other
    )
}

/// A committed journal whose steps cannot all be run (`why`, the first failure): runs
/// every step that can run, skips the others, and brings the disk copy to the journal's
/// generation. Nothing is deleted: what is left in the stage is kept as
/// `salvaged.stage.<generation>` in the side directory, and the journal as
/// `failed.journal.<generation>`. In overlay mode the upper layer still holds what the
/// skipped steps carried, and the next flush, which plans against the disk as it is,
/// writes it again; in FUSE mode the store was rebased onto the journal at its commit, so
/// what a skipped step would have placed is in the kept stage. Returns what happened,
/// also logged as an error, and the target paths the skipped steps concerned: FUSE mode's
/// store marks what is not on disk there as changed again (`Store::resync`).
pub(crate) fn salvage(
    b: &dyn Backing,
    j: &Journal,
    why: &std::io::Error,
) -> anyhow::Result<Salvage> {
    let mut skipped = 0;
    let mut paths = Vec::new();
    for (i, step) in j.steps.iter().enumerate() {
        if let Err(e) = j.run_one(b, step) {
            skipped += 1;
            paths.extend(concerned(step));
            tracing::error!(generation = j.generation, step = i + 1, what = %step, error = %e, "salvaging a flush: step skipped");
        }
    }
    let gen_loc = Loc::side("generation");
    if read_generation(b)? < j.generation {
        b.write_file(&gen_loc, format!("{}\n", j.generation).as_bytes())?;
    }
    let kept = set_aside(b, &Journal::stage_dir(j.generation), "salvaged")?;
    set_aside(b, &Journal::file_name(j.generation), "failed")?;
    b.sync_dir(&Loc::side(""))?;
    let msg = format!(
        "flush {} could not be completed ({why}); {skipped} of its {} steps were skipped, \
         what they would have moved is kept in {kept} in the side directory",
        j.generation,
        j.steps.len()
    );
    tracing::error!("{msg}");
    Ok(Salvage { msg, paths })
}

/// The path in the target a step would have changed: where it puts an object or sets
/// attributes; for an object it moves out, the directory that held it.
fn concerned(step: &super::Step) -> Option<std::path::PathBuf> {
    use super::Step;
    match step {
        Step::Rename {
            to: Loc::Target(p), ..
        }
        | Step::Link {
            to: Loc::Target(p), ..
        } => Some(p.clone()),
        Step::Rename {
            from: Loc::Target(p),
            ..
        } => p.parent().map(|p| p.to_path_buf()),
        Step::Meta {
            at: Loc::Target(p), ..
        }
        | Step::Times {
            at: Loc::Target(p), ..
        } => Some(p.clone()),
        _ => None,
    }
}

/// Renames `name` in the side directory to a free `<what>.name[.N]`; returns the new name
/// (or `name` if there was nothing to rename).
fn set_aside(b: &dyn Backing, name: &str, what: &str) -> anyhow::Result<String> {
    let from = Loc::side(name);
    if crate::backing::ino_at(b, &from)?.is_none() {
        return Ok(name.to_string());
    }
    for n in 0..1000 {
        let to = if n == 0 {
            format!("{what}.{name}")
        } else {
            format!("{what}.{name}.{n}")
        };
        if crate::backing::ino_at(b, &Loc::side(to.as_str()))?.is_none() {
            b.rename(&from, &Loc::side(to.as_str()))?;
            return Ok(to);
        }
    }
    anyhow::bail!("no free name to set {name} aside")
}
