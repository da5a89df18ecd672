//! The layers of one target in overlay mode (design.md §10.4). The overlay on the target
//! has an upper layer (programs' changes), under it zero or more middle layers (earlier
//! upper layers, read-only, not yet all written to disk) and at the bottom the disk copy.
//!
//! A flush first swaps the overlay for one whose fresh upper layer sits on top of the old
//! upper layer, now a middle layer nothing can change; writes that middle layer to disk
//! (the disk's names it touches are all hidden by the middle layer, so the overlay does not
//! see them change); then swaps again, leaving out the middle layers that are on disk. The
//! swap mounts the new overlay beneath the old one and detaches the old one: path lookups
//! see one or the other, never neither. Files programs hold open through an old overlay are
//! linked into the new upper layer (the very same inodes), so they stay one file. An old
//! overlay's layers are deleted (RAM comes back) once no program holds a directory in it.

use super::flush::{Layer, OverlayFlusher};
use super::holders::{self, Holders};
use super::kernel;
use super::rotate::carry;
use super::upper::{Sig, Upper, UpperKind};
use crate::backing::{Backing, Loc, Meta, RealBacking};
use crate::flush::FlushReport;
use crate::fsx::trusted::TrustedPath;
use crate::store::types::Kind;
use anyhow::Context;
use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use super::saved::Saved;

/// The overlay on the target and its upper layer. No descriptor of the overlay is kept
/// (it would make an unmount by someone else fail as busy).
pub struct Top {
    pub n: u64,
    pub upper: Upper,
    /// The upper layer's filesystem (the store's tmpfs).
    upper_dev: u64,
    /// The device number the overlay gives upper files.
    upper_pseudo: u64,
    /// The overlay's mount id while it is on the target.
    pub mount_id: Option<u64>,
    /// The overlay's own device (what its directories report).
    ovl_dev: u64,
    /// Its root once it is off the target (so that its device numbers stay its own).
    hold: Option<OwnedFd>,
    /// Unmounted while nothing held it: nothing can (its device numbers may be reused).
    pub gone: bool,
}

/// A read-only layer of the current overlay, between its upper layer and the disk.
pub struct Middle {
    pub n: u64,
    pub upper: Upper,
    pub flushed: bool,
}

/// An overlay replaced by a newer one: programs may still hold things in it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Old {
    ovl_dev: u64,
    upper_pseudo: u64,
    upper_dev: u64,
    /// Its upper and middle layers.
    pub(super) layers: Vec<u64>,
    /// The inodes of its upper layer linked into a newer one.
    carried: HashSet<u64>,
    /// No program can look a name up in it any more: its layers may go.
    released: bool,
    /// Its root, held so that the overlay (and with it its device numbers, which identify
    /// what programs hold) stays until we let go of it.
    #[serde(skip)]
    _root: Option<Arc<OwnedFd>>,
}

impl Old {
    fn holders(&self, private: &Path) -> Holders {
        let mut inos = self.carried.clone();
        if let Some(n) = self.layers.first() {
            inos.extend(inodes(private, *n));
        }
        holders::scan(self.ovl_dev, self.upper_pseudo, self.upper_dev, &inos)
    }
}

impl Old {
    /// For a daemon taking over: whether this replaced overlay, recorded by a daemon that
    /// died, may still exist. Nothing held its root since the daemon did (`_root`), so one
    /// no program holds is gone, and its device numbers may name another mount by now,
    /// whose programs would count as holding ours (QA: an unmount after a takeover said
    /// files were still served and kept the store). A device a mount table lists is
    /// another mount's too: a replaced overlay is detached.
    fn still_there(&self, private: &Path) -> bool {
        let dev = format!(
            "{}:{}",
            libc::major(self.ovl_dev),
            libc::minor(self.ovl_dev)
        );
        holders::mount_ids_of(&dev).is_empty() && !self.holders(private).is_empty()
    }
}

/// The inodes of an upper layer's files (none if it is gone).
fn inodes(private: &Path, n: u64) -> HashSet<u64> {
    let Ok(fd) = open_dir(&upper_dir(private, n)) else {
        return HashSet::new();
    };
    let Ok(upper) = Upper::open(fd) else {
        return HashSet::new();
    };
    upper_inodes(&upper)
}

fn upper_inodes(upper: &Upper) -> HashSet<u64> {
    upper
        .walk()
        .unwrap_or_default()
        .iter()
        .filter(|e| matches!(e.kind, UpperKind::Node(_)))
        .map(|e| e.st.ino)
        .collect()
}

/// The layers of one target.
pub struct Stack {
    private: PathBuf,
    /// The disk copy's directory (pinned), the overlays' bottom layer.
    lower: PathBuf,
    pub top: Top,
    /// Newest first.
    pub middles: Vec<Middle>,
    pub old: Vec<Old>,
    /// Per layer: the signatures a flush of it wrote.
    done: HashMap<u64, HashMap<PathBuf, Sig>>,
}

pub fn upper_dir(private: &Path, n: u64) -> PathBuf {
    private.join(format!("upper.{n}"))
}

fn work_dir(private: &Path, n: u64) -> PathBuf {
    private.join(format!("work.{n}"))
}

pub fn open_dir(p: &Path) -> anyhow::Result<OwnedFd> {
    nix::fcntl::open(
        p,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("opening {}", p.display()))
}

fn dev_of(fd: &impl AsFd) -> u64 {
    nix::sys::stat::fstat(fd).map(|s| s.st_dev).unwrap_or(0)
}

/// The device number an overlay (its root: `root`) gives the files of its upper layer:
/// read from a file made in it and removed at once.
fn probe_pseudo(root: &OwnedFd) -> nix::Result<u64> {
    let probe = ".asdfs-probe";
    let f = nix::fcntl::openat(
        root,
        probe,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    let dev = dev_of(&f);
    drop(f);
    nix::unistd::unlinkat(root, probe, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
    Ok(dev)
}

/// Numbers of the layer directories in the store.
pub fn layer_numbers(private: &Path) -> Vec<u64> {
    crate::fsx::trusted::read_dir(private)
        .map(|it| {
            it.flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let s = name.to_str()?;
                    s.strip_prefix("upper.")
                        .or_else(|| s.strip_prefix("work."))?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The signatures of a flush, less those of files programs hold: a write through a
/// mapping changes no time, so a held file is written again by every flush.
fn unheld(sigs: HashMap<PathBuf, Sig>, held: &HashSet<u64>) -> HashMap<PathBuf, Sig> {
    sigs.into_iter()
        .filter(|(_, s)| !matches!(s, Sig::Object { ino, .. } if held.contains(ino)))
        .collect()
}

/// Removes a layer's directories.
pub fn remove_layer(private: &Path, n: u64) {
    for d in [upper_dir(private, n), work_dir(private, n)] {
        match crate::fsx::trusted::remove_dir_all(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %d.display(), error = %e, "could not remove an overlay layer")
            }
            _ => {}
        }
    }
}

impl Stack {
    /// A first overlay: upper layer `n` (its root with `root`'s attributes) over the disk.
    /// Returns it with the overlay's mount, to attach.
    pub fn fresh(
        private: &Path,
        lower: &Path,
        n: u64,
        root: &Meta,
    ) -> anyhow::Result<(Stack, OwnedFd)> {
        let (top, mnt) = new_top(private, &[lower], n, root)?;
        let s = Stack {
            private: private.to_path_buf(),
            lower: lower.to_path_buf(),
            top,
            middles: Vec::new(),
            old: Vec::new(),
            done: HashMap::new(),
        };
        Ok((s, mnt))
    }

    /// The overlay a daemon that died left on the target, whose root is `root`.
    pub fn adopt(
        private: &Path,
        lower: &Path,
        mut saved: Saved,
        super_options: &str,
        root: &OwnedFd,
    ) -> anyhow::Result<Stack> {
        if saved.reconcile(super_options) {
            saved.pseudo = probe_pseudo(root).context("probing the overlay taken over")?;
        }
        let upper = Upper::open(open_dir(&upper_dir(private, saved.layer))?)?;
        let mut middles = Vec::new();
        for (n, flushed) in saved.middles {
            let upper = Upper::open(open_dir(&upper_dir(private, n))?)?;
            middles.push(Middle { n, upper, flushed });
        }
        Ok(Stack {
            private: private.to_path_buf(),
            lower: lower.to_path_buf(),
            top: Top {
                n: saved.layer,
                upper_dev: dev_of(upper.layer().target_root()),
                upper,
                upper_pseudo: saved.pseudo,
                mount_id: Some(kernel::mount_id(root)?),
                ovl_dev: dev_of(root),
                hold: None,
                gone: false,
            },
            middles,
            old: saved
                .old
                .into_iter()
                .filter(|o| o.still_there(private))
                .collect(),
            done: HashMap::new(),
        })
    }

    /// Before the overlay leaves the target: hold its root (see `Top::hold`).
    pub fn hold_top(&mut self, target: &Path) {
        if self.top.hold.is_none() {
            self.top.hold = open_dir(target)
                .ok()
                .filter(|r| Some(kernel::mount_id(r).unwrap_or(0)) == self.top.mount_id);
        }
    }

    pub fn saved(&self) -> Saved {
        Saved {
            layer: self.top.n,
            pseudo: self.top.upper_pseudo,
            middles: self.middles.iter().map(|m| (m.n, m.flushed)).collect(),
            old: self.old.clone(),
        }
    }

    /// Records the layers now: a daemon taking over after a kill must find the ones in use.
    fn save_or_warn(&self) {
        if let Err(e) = self.save() {
            tracing::warn!(error = %format!("{e:#}"), "could not record the overlay's layers");
        }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.private.join("overlay.json.tmp");
        crate::fsx::trusted::write(&tmp, serde_json::to_vec(&self.saved())?)?;
        crate::fsx::trusted::rename(&tmp, self.private.join("overlay.json"))?;
        Ok(())
    }

    /// What programs hold in the current overlay.
    pub fn holders(&self) -> Holders {
        if self.top.gone {
            return Holders::default();
        }
        let inos = upper_inodes(&self.top.upper);
        holders::scan(
            self.top.ovl_dev,
            self.top.upper_pseudo,
            self.top.upper_dev,
            &inos,
        )
    }

    /// Files and directories programs hold in the current overlay and the older ones. A
    /// file counts once per program however many descriptors and mappings it holds of it,
    /// through whichever overlays (a carried file is one inode in all of them).
    pub fn held_count(&self) -> u64 {
        let mut opened = HashSet::new();
        let mut dirs = 0;
        let olds = self.old.iter().map(|o| o.holders(&self.private));
        for h in std::iter::once(self.holders()).chain(olds) {
            opened.extend(h.opened);
            dirs += h.dirs.len() as u64;
        }
        opened.len() as u64 + dirs
    }

    /// Whether the upper layer holds anything but its root (a fresh one would give RAM
    /// back or make the flush of it race-free).
    pub fn top_used(&self) -> anyhow::Result<bool> {
        let entries = self.top.upper.walk().context("reading the upper layer")?;
        Ok(entries.len() > 1)
    }

    /// Swaps the overlay on `target` for one with a fresh upper layer over the current one
    /// (which becomes a middle layer) and the middle layers not yet on disk. Returns false,
    /// changing nothing, while a program holds a directory of the current overlay.
    pub fn rotate(&mut self, target: &Path) -> anyhow::Result<bool> {
        let mut held = self.holders();
        if let Some((pid, path)) = held.dirs.first() {
            tracing::debug!(pid, path = %path.display(), "a program holds a directory of the overlay: no fresh upper layer");
            return Ok(false);
        }
        for o in &self.old {
            held.files.extend(o.holders(&self.private).files);
        }
        let entries = self.top.upper.walk().context("reading the upper layer")?;
        // Files with several names stay in the upper layer: once on disk, a change through
        // one name would be copied up alone (no index) and the names would part.
        held.files.extend(
            entries
                .iter()
                .filter(|e| e.kind == UpperKind::Node(Kind::File) && e.st.nlink > 1)
                .map(|e| e.st.ino),
        );
        let root = entries
            .first()
            .map(|r| r.meta())
            .context("the upper layer has no root")?;
        let n2 = self.next_number();
        let mut lowers: Vec<PathBuf> = vec![upper_dir(&self.private, self.top.n)];
        lowers.extend(
            self.middles
                .iter()
                .filter(|m| !m.flushed)
                .map(|m| upper_dir(&self.private, m.n)),
        );
        lowers.push(self.lower.clone());
        let lower_refs: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
        let (mut top, mnt) =
            new_top(&self.private, &lower_refs, n2, &root).context("making a fresh upper layer")?;
        let fresh = RealBacking::new(
            nix::unistd::dup(top.upper.layer().target_root())?,
            nix::unistd::dup(top.upper.layer().target_root())?,
        );
        let carried = match carry(&self.top.upper, &entries, &fresh, &held.files) {
            Ok(c) => c,
            Err(e) => {
                remove_layer(&self.private, n2);
                return Err(
                    anyhow::Error::new(e).context("linking open files into the fresh upper layer")
                );
            }
        };
        let mount_id = match kernel::mount_id(&mnt) {
            Ok(id) => id,
            Err(e) => {
                remove_layer(&self.private, n2);
                return Err(anyhow::Error::new(e).context("the new overlay's mount id"));
            }
        };
        if let Err(e) = kernel::attach(&mnt, target, true, self.top.mount_id) {
            remove_layer(&self.private, n2);
            return Err(e);
        }
        let old_root = open_dir(target).ok().map(Arc::new);
        kernel::detach(target, true, self.top.mount_id)
            .context("detaching the previous overlay (the new one is beneath it)")?;
        top.mount_id = Some(mount_id);
        drop(mnt);
        let mut layers = vec![self.top.n];
        layers.extend(self.middles.iter().map(|m| m.n));
        let prev = std::mem::replace(&mut self.top, top);
        self.old.push(Old {
            ovl_dev: prev.ovl_dev,
            upper_pseudo: prev.upper_pseudo,
            upper_dev: prev.upper_dev,
            layers,
            carried,
            released: false,
            _root: old_root,
        });
        self.middles.retain(|m| !m.flushed);
        self.middles.insert(
            0,
            Middle {
                n: prev.n,
                upper: prev.upper,
                flushed: false,
            },
        );
        self.save_or_warn();
        Ok(true)
    }

    /// Whether a replaced overlay can still change its layers: a program holds a directory
    /// of it, or a file not carried into a newer layer (opened while the swap ran). Its
    /// middle layers must then stay in the overlay, and be written again.
    pub fn old_in_use(&self) -> bool {
        !self.layers_in_use().is_empty()
    }

    /// The layers of the replaced overlays programs can still change (see `old_in_use`).
    fn layers_in_use(&self) -> HashSet<u64> {
        self.old
            .iter()
            .filter(|o| !o.released)
            .filter(|o| {
                let h = o.holders(&self.private);
                !h.dirs.is_empty() || h.files.iter().any(|i| !o.carried.contains(i))
            })
            .flat_map(|o| o.layers.iter().copied())
            .collect()
    }

    /// Makes every middle layer due for writing again (see `old_in_use`).
    pub fn unflush_middles(&mut self) {
        for m in &mut self.middles {
            m.flushed = false;
        }
        self.save_or_warn();
    }

    /// Writes the middle layers not yet on disk, oldest first.
    pub fn flush_middles(
        &mut self,
        f: &OverlayFlusher,
        progress: &dyn Fn(u64, u64),
    ) -> anyhow::Result<Option<FlushReport>> {
        let mut total: Option<FlushReport> = None;
        // A layer newer than one still due stays due too: the overlay keeps the due one,
        // and a newer layer left out would put it above what the newer one changed on
        // disk (its removed names seen again, and gone on disk: QA's storm lost files).
        let mut older_due = false;
        for i in (0..self.middles.len()).rev() {
            if older_due {
                self.middles[i].flushed = false;
            }
            if self.middles[i].flushed {
                continue;
            }
            let n = self.middles[i].n;
            let done = self.done.remove(&n).unwrap_or_default();
            let again = !done.is_empty();
            let held = self.writable_files();
            let layer = Layer {
                upper: &self.middles[i].upper,
                live: false,
                overlay: None,
                done: &done,
                held: &held,
            };
            let (r, sigs) = match f.flush(&layer, progress) {
                Ok(x) => x,
                Err(e) => {
                    self.done.insert(n, done);
                    return Err(e);
                }
            };
            let held = self.held_during(held);
            self.done.insert(n, unheld(sigs, &held));
            if again && r.steps > 0 {
                // A layer written again after newer ones were: what it changed may be
                // what a newer layer changed after it (a name it writes again that a newer
                // one removed), so the newer layers are written whole again.
                let newer: Vec<u64> = self.middles[..i]
                    .iter()
                    .map(|m| m.n)
                    .chain([self.top.n])
                    .collect();
                for m in newer {
                    self.done.remove(&m);
                }
            }
            // A program that still writes the layer through a replaced overlay (a flush
            // at the unmount, a live one) leaves it due: the next flush, the final one
            // after the program let go at the latest, writes it again.
            self.middles[i].flushed = !older_due && !self.layers_in_use().contains(&n);
            older_due |= !self.middles[i].flushed;
            self.save_or_warn();
            total = Some(add(total, r));
        }
        Ok(total)
    }

    /// Whether a middle layer that is on disk is still in the overlay.
    pub fn has_flushed_middles(&self) -> bool {
        self.middles.iter().any(|m| m.flushed)
    }

    /// Writes the upper layer while programs may change it (`overlay`: the overlay's root,
    /// if it is on the target), or once nothing can (`live` false).
    pub fn flush_top(
        &mut self,
        f: &OverlayFlusher,
        live: bool,
        overlay: Option<&OwnedFd>,
        progress: &dyn Fn(u64, u64),
    ) -> anyhow::Result<FlushReport> {
        let done = self.done.remove(&self.top.n).unwrap_or_default();
        let held = self.writable_files();
        let layer = Layer {
            upper: &self.top.upper,
            live,
            overlay,
            done: &done,
            held: &held,
        };
        match f.flush(&layer, progress) {
            Ok((r, sigs)) => {
                let held = self.held_during(held);
                self.done.insert(self.top.n, unheld(sigs, &held));
                Ok(r)
            }
            Err(e) => {
                self.done.insert(self.top.n, done);
                Err(e)
            }
        }
    }

    /// Lets go of old overlays nobody can look names up in, and deletes every layer the
    /// current overlay and the old ones still in use do not need.
    pub fn gc(&mut self) {
        let private = self.private.clone();
        self.old.retain_mut(|o| {
            let h = o.holders(&private);
            if h.dirs.is_empty() && h.files.iter().all(|i| o.carried.contains(i)) {
                o.released = true;
            }
            !(o.released && h.is_empty())
        });
        let mut keep: HashSet<u64> = self.middles.iter().map(|m| m.n).collect();
        keep.insert(self.top.n);
        for o in self.old.iter().filter(|o| !o.released) {
            keep.extend(o.layers.iter().copied());
        }
        for n in self.layer_numbers() {
            if !keep.contains(&n) {
                remove_layer(&self.private, n);
            }
        }
        self.done.retain(|n, _| keep.contains(n));
    }

    /// The files held at a flush's start (`before`) or at its end: none of them gets a
    /// signature. Released overlays count (their programs still write the carried inodes
    /// through them, QA: a mapping held across `asdfs unmount` lost its last writes), and
    /// so does a file let go of during the flush (written through its mapping after its
    /// copy, with no time changed).
    fn held_during(&self, mut before: HashSet<u64>) -> HashSet<u64> {
        before.extend(self.writable_files());
        before
    }

    /// Inodes of files programs hold open or mapped through any overlay of this target,
    /// released ones too (their holders write the carried inodes): files that may change
    /// while a flush copies them.
    fn writable_files(&self) -> HashSet<u64> {
        let mut held = self.holders().files;
        for o in &self.old {
            held.extend(o.holders(&self.private).files);
        }
        held
    }

    fn layer_numbers(&self) -> Vec<u64> {
        layer_numbers(&self.private)
    }

    fn next_number(&self) -> u64 {
        self.layer_numbers()
            .into_iter()
            .chain(self.old.iter().flat_map(|o| o.layers.iter().copied()))
            .chain([self.top.n])
            .max()
            .unwrap_or(0)
            + 1
    }

    /// For status: the upper layer's names not yet written, middle layers' names not yet
    /// written, and the RAM all layers take.
    pub fn pending(&self) -> (Vec<super::upper::UpperEntry>, u64) {
        let done = self.done.get(&self.top.n);
        let mut out: Vec<_> = self
            .top
            .upper
            .walk()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !e.path.as_os_str().is_empty())
            .filter(|e| done.and_then(|d| d.get(&e.path)) != Some(&e.sig()))
            .collect();
        for m in self.middles.iter().filter(|m| !m.flushed) {
            out.extend(
                m.upper
                    .walk()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| !e.path.as_os_str().is_empty()),
            );
        }
        let ram = self
            .layer_numbers()
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|n| {
                crate::usage::measure(&upper_dir(&self.private, n))
                    .map(|u| u.bytes)
                    .unwrap_or(0)
            })
            .sum();
        (out, ram)
    }
}

/// Sums two flush reports.
pub fn add(a: Option<FlushReport>, b: FlushReport) -> FlushReport {
    match a {
        None => b,
        Some(a) => FlushReport {
            generation: a.generation.max(b.generation),
            files: a.files + b.files,
            bytes: a.bytes + b.bytes,
            steps: a.steps + b.steps,
            took: a.took + b.took,
        },
    }
}

/// Makes upper and work directories `n` and an overlay of them over `lowers` (topmost
/// first); the upper root gets `root`'s attributes. Returns it with the overlay's mount, not
/// attached yet.
fn new_top(
    private: &Path,
    lowers: &[&Path],
    n: u64,
    root: &Meta,
) -> anyhow::Result<(Top, OwnedFd)> {
    let (up, work) = (upper_dir(private, n), work_dir(private, n));
    // Never a number in use: its layer may hold what programs wrote.
    anyhow::ensure!(
        !up.trusted_exists() && !work.trusted_exists(),
        "layer {n} exists already in {}",
        private.display()
    );
    crate::fsx::trusted::create_dir(&up)?;
    crate::fsx::trusted::create_dir(&work)?;
    let upper = Upper::open(open_dir(&up)?)?;
    // The upper root gets the target's owner, mode and xattrs before the overlay is made:
    // the overlay's root inode keeps the attributes it saw then (root's own, and its owner
    // would get EACCES until something updated them).
    let plain = Meta {
        xattrs: None,
        ..root.clone()
    };
    let layer = upper.layer();
    let set_root = || -> std::io::Result<()> {
        layer.set_meta(&Loc::target(""), Kind::Dir, &plain)?;
        let p = crate::backing::proc_path(layer.target_root());
        for (name, value) in root.xattrs.iter().flatten() {
            if !name.to_string_lossy().starts_with("trusted.overlay.") {
                crate::backing::set_xattr(&p, name, value)?;
            }
        }
        Ok(())
    };
    let made = set_root()
        .map_err(anyhow::Error::from)
        .and_then(|()| kernel::create(lowers, &up, &work));
    let mount = match made {
        Ok(m) => m,
        Err(e) => {
            remove_layer(private, n);
            return Err(e);
        }
    };
    // The device number the overlay gives upper files: seen on a file made and removed
    // before anyone can see the overlay. Then the root's times again (the probe changed
    // them); the kernel's own xattrs on the upper root stay.
    let upper_pseudo = probe_pseudo(&mount).context("probing the new overlay")?;
    layer.set_times(&Loc::target(""), plain.atime, plain.mtime)?;
    let top = Top {
        n,
        upper_dev: dev_of(upper.layer().target_root()),
        upper_pseudo,
        ovl_dev: dev_of(&mount),
        upper,
        mount_id: None,
        hold: None,
        gone: false,
    };
    Ok((top, mount))
}

/// Whether a walk holds file data (what a fresh upper layer would give back).
pub fn holds_data(entries: &[super::upper::UpperEntry]) -> bool {
    entries
        .iter()
        .any(|e| e.kind == UpperKind::Node(Kind::File) && e.st.attr.size > 0)
}
