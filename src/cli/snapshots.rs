//! `asdfs snapshots`: list, restore and clean crash snapshots. Arguments as typed here; the
//! work is in `crate::snapshot`. Without a TARGET, `list` and `clean` act on every asdfs mount.

use crate::daemon::mounting;
use crate::fsx::trusted::TrustedPath;
use crate::snapshot::{self, SnapshotInfo};
use anyhow::{Context, anyhow, bail};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotsCmd {
    /// Show the crash snapshots of a target (date, size, path), newest first.
    List {
        /// The directory kept in RAM; all asdfs mounts if omitted.
        target: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Put the tree in a crash snapshot back (by default, in place of its target).
    Restore {
        /// A `.NAME-backup_asd-crashrecovery-….tar.zstd` file.
        snapshot: PathBuf,
        /// Restore here instead of to the snapshot's target.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Replace a non-empty destination; its content is kept as DIR.before-restore-DATE.
        #[arg(long)]
        force: bool,
        /// Restore device nodes and setuid/setgid bits as archived (dropped with a warning
        /// otherwise); only as root, from an archive root owns.
        #[arg(long)]
        keep_special: bool,
    },
    /// Delete all crash snapshots of a target (asd's `clean`).
    Clean {
        /// The directory kept in RAM; all asdfs mounts if omitted.
        target: Option<PathBuf>,
    },
}

/// Runs a snapshots command; returns the exit code.
pub fn run(cmd: SnapshotsCmd) -> anyhow::Result<i32> {
    match cmd {
        SnapshotsCmd::List { target, json } => list(&targets(target)?, json),
        SnapshotsCmd::Restore {
            snapshot,
            to,
            force,
            keep_special,
        } => restore(
            &snapshot,
            to,
            snapshot::RestoreOptions {
                force,
                keep_special,
            },
        ),
        SnapshotsCmd::Clean { target } => clean(&targets(target)?),
    }
}

/// The target as an absolute path, or every mounted asdfs target.
fn targets(target: Option<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    if let Some(t) = target {
        let abs = t
            .trusted_canonicalize()
            .or_else(|_| std::path::absolute(&t));
        return Ok(vec![
            abs.with_context(|| format!("resolving {}", t.display()))?,
        ]);
    }
    let mut all: Vec<PathBuf> = mounting::asdfs_mounts()?
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
    all.sort();
    all.dedup();
    if all.is_empty() {
        bail!("no asdfs mounts; name a TARGET");
    }
    Ok(all)
}

fn list(targets: &[PathBuf], json: bool) -> anyhow::Result<i32> {
    let mut found: Vec<(&Path, Vec<SnapshotInfo>)> = Vec::new();
    for t in targets {
        let infos =
            snapshot::list(t).with_context(|| format!("listing snapshots of {}", t.display()))?;
        for i in &infos {
            let st = crate::fsx::trusted::symlink_metadata(&i.path)
                .with_context(|| format!("reading {}", i.path.display()))?;
            snapshot::check_owner(&i.path, &st, t)?;
        }
        found.push((t, infos));
    }
    if json {
        let all: Vec<serde_json::Value> = found.iter().flat_map(|(_, i)| i).map(to_json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    for (target, infos) in found {
        if infos.is_empty() {
            println!("no crash snapshots for {}", target.display());
            continue;
        }
        println!("{:<19}  {:>10}  PATH", "DATE", "SIZE");
        for i in infos {
            let size = HumanBytes(i.size).to_string();
            println!("{:<19}  {size:>10}  {}", i.taken, i.path.display());
        }
    }
    Ok(0)
}

fn to_json(i: &SnapshotInfo) -> serde_json::Value {
    serde_json::json!({
        "target": i.target.to_string_lossy(),
        "path": i.path.to_string_lossy(),
        "taken": i.taken,
        "size": i.size,
    })
}

fn restore(
    snapshot: &Path,
    to: Option<PathBuf>,
    opts: snapshot::RestoreOptions,
) -> anyhow::Result<i32> {
    let to = match to {
        Some(t) => t,
        None => snapshot::target_of(snapshot).ok_or_else(|| {
            anyhow!(
                "{} is not named like a crash snapshot (.NAME-backup_asd-crashrecovery-DATE.tar.zstd); \
                 say where to restore it with --to",
                snapshot.display()
            )
        })?,
    };
    let bar = progress_bar();
    let result = snapshot::restore_with(snapshot, &to, opts, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let r = result?;
    let mut line = format!(
        "Restored {} to {} ({}, {})",
        snapshot.display(),
        r.restored_to.display(),
        crate::human::count(r.files, "file"),
        HumanBytes(r.bytes)
    );
    if let Some(old) = &r.kept_old {
        line.push_str(&format!(
            "; the previous content is kept in {}",
            old.display()
        ));
    }
    println!("{line}");
    Ok(0)
}

/// A byte progress bar on stderr when it is a terminal; hidden otherwise.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    let template = "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn clean(targets: &[PathBuf]) -> anyhow::Result<i32> {
    for t in targets {
        let deleted =
            snapshot::clean(t).with_context(|| format!("deleting snapshots of {}", t.display()))?;
        if deleted.is_empty() {
            println!("No crash snapshots for {}", t.display());
            continue;
        }
        println!(
            "Deleting {} crash snapshot(s) for {}",
            deleted.len(),
            t.display()
        );
        for p in deleted {
            println!("{}", p.display());
        }
    }
    Ok(0)
}
