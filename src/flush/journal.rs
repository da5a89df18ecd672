//! The commit record of a flush and the execution of its steps (design.md §6-7). Every step
//! can be run again after a crash: it checks by inode number whether it is done.

use crate::backing::{Backing, Conflict, Loc, Meta, ino_at};
use crate::store::types::{Kind, Ts};
use serde::{Deserialize, Serialize};
use std::io;

/// One change to the disk copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Move the object with inode `ino` from `from` to `to`, replacing what is at `to`.
    Rename { from: Loc, to: Loc, ino: u64 },
    /// Give the object with inode `ino`, found at `from`, the new name `to` (which is free).
    Link { from: Loc, to: Loc, ino: u64 },
    /// Set attributes (and xattrs, when given) of an existing object: of `kind`, and with
    /// inode `ino` when the plan knows it (another object there is a conflict, see
    /// `skip_conflict`).
    Meta {
        at: Loc,
        kind: Kind,
        meta: Meta,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ino: Option<u64>,
    },
    /// Set the times of a directory whose entries the flush changed.
    Times { at: Loc, atime: Ts, mtime: Ts },
}

/// A step as a message names it (paths shortened, `human::path`).
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Rename { from, to, ino } => write!(f, "rename {from} to {to} (inode {ino})"),
            Step::Link { from, to, ino } => write!(f, "link {from} as {to} (inode {ino})"),
            Step::Meta { at, kind, .. } => write!(f, "attributes of {at} ({kind:?})"),
            Step::Times { at, .. } => write!(f, "times of {at}"),
        }
    }
}

/// The plan of flush `generation`, written to `journal.<generation>` at the commit point.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub generation: u64,
    pub steps: Vec<Step>,
    /// Directories to fsync after the steps.
    pub syncs: Vec<Loc>,
}

impl Journal {
    pub fn file_name(generation: u64) -> String {
        format!("journal.{generation}")
    }

    pub fn stage_dir(generation: u64) -> String {
        format!("stage.{generation}")
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("journal serializes")
    }

    pub fn decode(bytes: &[u8]) -> io::Result<Journal> {
        serde_json::from_slice(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("flush journal: {e}")))
    }

    /// Runs every step, then checks that every object is where the plan puts it, then the
    /// syncs. With `redo` (after a crash) a step whose source no longer holds its inode was
    /// done before the crash and is skipped; otherwise that is an error.
    pub fn apply(&self, b: &dyn Backing, redo: bool) -> io::Result<()> {
        let ctx = |i: usize, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("flush {} step {}: {e}", self.generation, i + 1),
            )
        };
        for (i, step) in self.steps.iter().enumerate() {
            run_step(b, step, redo).map_err(|e| ctx(i, e))?;
        }
        self.verify(b).map_err(|(i, e)| ctx(i, e))?;
        for loc in &self.syncs {
            match b.sync_dir(loc) {
                Ok(()) => {}
                // A directory the flush removed.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        b.sync_dir(&Loc::side(""))
    }
}

impl Journal {
    /// Runs one step as after a crash (a step found done is skipped).
    pub(crate) fn run_one(&self, b: &dyn Backing, step: &Step) -> io::Result<()> {
        run_step(b, step, true)
    }

    /// Every name the plan gives an object holds it, and every object it moves out of the
    /// target is in the stage (unless a later step moved it on).
    fn verify(&self, b: &dyn Backing) -> Result<(), (usize, io::Error)> {
        let sources: std::collections::HashSet<&Loc> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Rename { from, .. } => Some(from),
                _ => None,
            })
            .collect();
        for (i, step) in self.steps.iter().enumerate() {
            let (Step::Rename { from, to, ino } | Step::Link { from, to, ino }) = step else {
                continue;
            };
            let found = |l: &Loc| ino_at(b, l).map_err(|e| (i, e));
            let check = match (from, to) {
                (_, Loc::Target(_)) => true,
                (Loc::Target(_), Loc::Side(_)) => {
                    matches!(step, Step::Rename { .. }) && !sources.contains(to)
                }
                _ => false,
            };
            if check && found(to)? != Some(*ino) {
                return Err((i, changed_behind(from, to, *ino)));
            }
        }
        Ok(())
    }
}

fn run_step(b: &dyn Backing, step: &Step, redo: bool) -> io::Result<()> {
    match step {
        Step::Rename { from, to, ino } => {
            if ino_at(b, from)? == Some(*ino) {
                return b.rename(from, to);
            }
            if redo || ino_at(b, to)? == Some(*ino) {
                return Ok(());
            }
            Err(changed_behind(from, to, *ino))
        }
        Step::Link { from, to, ino } => {
            if ino_at(b, to)? == Some(*ino) {
                return Ok(());
            }
            if ino_at(b, from)? != Some(*ino) {
                return if redo {
                    Ok(())
                } else {
                    Err(changed_behind(from, to, *ino))
                };
            }
            b.link(from, to)
        }
        Step::Meta {
            at,
            kind,
            meta,
            ino,
        } => skip_conflict(set_meta_of(b, at, *kind, meta, *ino)),
        Step::Times { at, atime, mtime } => skip_conflict(b.set_times(at, *atime, *mtime)),
    }
}

/// `set_meta` on the object the plan means: with a known inode, another inode at `at` (a
/// file swapped on disk) is a conflict. The backing itself checks the kind on the object it
/// acts on, so a swap after this check is still never followed.
fn set_meta_of(
    b: &dyn Backing,
    at: &Loc,
    kind: Kind,
    meta: &Meta,
    ino: Option<u64>,
) -> io::Result<()> {
    if let Some(want) = ino {
        match b.stat(at) {
            Ok(st) if st.ino != want => return Err(Conflict::other_inode(at, kind, st.kind)),
            _ => {}
        }
    }
    b.set_meta(at, kind, meta)
}

/// An object of another kind (or inode) than the plan's at a name whose attributes a step
/// sets (the disk copy was changed behind asdfs, e.g. a file swapped for a symlink): the
/// backing never acts through it. The step is skipped with a warning naming the path; what the user put
/// there stays until a later flush replaces that name by rename, and the rest of the flush
/// goes on (failing would stop every later flush of the target).
fn skip_conflict(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if Conflict::of(&e).is_some() => {
            tracing::warn!("{e}; its attributes were not applied");
            Ok(())
        }
        other => other,
    }
}

fn changed_behind(from: &Loc, to: &Loc, ino: u64) -> io::Error {
    io::Error::other(format!(
        "inode {ino} is neither at {from} nor at {to}: the disk copy was changed behind asdfs"
    ))
}
