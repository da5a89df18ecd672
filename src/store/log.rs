//! The store log (design.md §3): JSON lines on tmpfs that let a new daemon rebuild the RAM
//! tree a killed daemon served. Appends happen under the store lock before a reply.

use super::types::{Attr, DataId, Kind, NodeId};
use crate::fsx::trusted::TrustedOpen;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub(crate) const LOG_VERSION: u32 = 1;
/// The reserve (design.md §3): space kept allocated ahead of the end of the log
/// (fallocate with KEEP_SIZE), a sixteenth of the store's room (its tmpfs, or its RAM limit
/// if smaller) within these bounds, and never less than a rewrite of the whole log needs.
const RESERVE_MIN: u64 = 256 << 10;
const RESERVE_MAX: u64 = 8 << 20;
/// Room kept for the records of one more operation: below it, changes are refused.
pub(crate) const BATCH_ROOM: u64 = 64 << 10;

/// Space a rewrite of a log of `len` bytes needs (the compacted log is at most the log,
/// give or take longer numbers in node records).
fn rewrite_need(len: u64) -> u64 {
    len + len / 8 + BATCH_ROOM
}

/// The reserve aimed at for a store of `room` bytes.
fn unit_for(room: u64) -> u64 {
    (room / 16).clamp(RESERVE_MIN, RESERVE_MAX)
}

/// The size of the filesystem of `dir` (0 if unknown).
fn fs_size(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0)
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Record {
    Header(Header),
    /// Ends the records of one operation: a replay applies a batch only if it has this.
    Commit,
    /// The last record of a rewritten log: it was written completely.
    End {
        records: u64,
    },
    Node(NodeRec),
    Entry {
        dir: NodeId,
        #[serde(with = "crate::bytes::os")]
        name: OsString,
        child: Option<NodeId>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Header {
    pub version: u32,
    pub base_gen: u64,
    #[serde(with = "crate::bytes::path")]
    pub target: PathBuf,
    /// The generation in the file handles of this store (0 in logs of older versions).
    #[serde(default)]
    pub handle_gen: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct NodeRec {
    pub id: NodeId,
    pub kind: Kind,
    pub attr: Attr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginRec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_ino: Option<u64>,
    #[serde(default)]
    pub hidden_links: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataId>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes")]
    pub symlink: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_pairs")]
    pub xattrs: Option<crate::backing::XattrList>,
    #[serde(default)]
    pub meta_dirty: bool,
    #[serde(default)]
    pub data_dirty: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct OriginRec {
    pub parent: NodeId,
    #[serde(with = "crate::bytes::os")]
    pub name: OsString,
}

mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    #[derive(Serialize, Deserialize)]
    struct W(#[serde(with = "crate::bytes::vec")] Vec<u8>);
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|x| W(x.clone())).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

mod opt_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::ffi::OsString;
    #[derive(Serialize, Deserialize)]
    struct W(#[serde(with = "crate::bytes::pairs")] Vec<(OsString, Vec<u8>)>);
    pub fn serialize<S: Serializer>(
        v: &Option<crate::backing::XattrList>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|x| W(x.clone())).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<crate::backing::XattrList>, D::Error> {
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

/// The open store log.
pub(crate) struct StoreLog {
    dir: PathBuf,
    file: File,
    len: u64,
    reserved: u64,
    /// Increases with every rewrite; a node's record is current if written in this epoch.
    pub epoch: u64,
    pub base_gen: u64,
    target: PathBuf,
    /// The generation of file handles: chosen for a new store, kept by a takeover, so that
    /// a handle of an earlier store is stale and never names another node.
    pub handle_gen: u32,
    /// Appends that failed (tmpfs full beyond the reserve): reported by status.
    pub failures: u64,
    /// A rewritten log waiting for its commit: file, length, base generation.
    pending: Option<(File, u64, u64)>,
    /// What the reserve aims at when the tmpfs has room (`RESERVE_MIN..=RESERVE_MAX`).
    unit: u64,
    /// An append failed: the file misses an operation, so nothing more is appended and
    /// changes are refused until a rewrite replaces it.
    pub broken: bool,
    /// Whether the reserve is short (set by `reserve`; read without the store lock, by
    /// `Store::check_room`, so that changes take the slow path only when it is).
    pub low: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Whether `log` is this object's file (a takeover's log object has not written yet).
    opened: bool,
}

impl StoreLog {
    fn path(dir: &Path) -> PathBuf {
        dir.join("log")
    }

    /// Starts a new log (replacing any) relative to disk generation `base_gen`.
    pub fn create(
        dir: &Path,
        target: &Path,
        base_gen: u64,
        records: &[Record],
    ) -> io::Result<StoreLog> {
        let mut log = StoreLog::unopened(dir, target, base_gen)?;
        log.rewrite(base_gen, records)?;
        Ok(log)
    }

    /// Replaces the log by a header and `records`, atomically.
    pub fn rewrite(&mut self, base_gen: u64, records: &[Record]) -> io::Result<()> {
        self.prepare_rewrite(base_gen, records)?;
        self.commit_rewrite()
    }

    /// Writes the replacement log as `log.new`; it takes effect with `commit_rewrite`. A
    /// takeover that finds `log.new` uses it if the disk reached its base generation.
    ///
    /// On a full tmpfs the room comes from the reserve: the old log's space beyond its end
    /// is given back first and `log.new` is allocated at once (design.md §3). If that fails
    /// the old log gets its reserve back as far as it can, and stays in use.
    pub fn prepare_rewrite(&mut self, base_gen: u64, records: &[Record]) -> io::Result<()> {
        self.abort_rewrite();
        let r = self.write_new(base_gen, records);
        if r.is_err() {
            let _ = crate::fsx::trusted::remove_file(Self::new_path(&self.dir));
            if self.opened {
                self.reserve();
            }
        }
        r
    }

    fn write_new(&mut self, base_gen: u64, records: &[Record]) -> io::Result<()> {
        let header = Record::Header(Header {
            version: LOG_VERSION,
            base_gen,
            target: self.target.clone(),
            handle_gen: self.handle_gen,
        });
        let mut buf = encode(&header);
        for r in records {
            buf.extend_from_slice(&encode(r));
        }
        buf.extend_from_slice(&encode(&Record::End {
            records: records.len() as u64,
        }));
        // In `private/`, which only this user can change (`paths::prepare_store`);
        // never through a symlink all the same, and readable by no one else.
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .trusted_open(Self::new_path(&self.dir))?;
        // Allocated before it is written: a tmpfs without room fails here, cleanly. Only a
        // full tmpfs makes the old log give its reserve back first: between that and the
        // allocation a data write could take the pages (a live flush then fails and retries).
        if allocate(&f, buf.len() as u64).is_err() {
            self.release_reserve();
            allocate(&f, buf.len() as u64)?;
        }
        f.write_all(&buf)?;
        self.pending = Some((f, buf.len() as u64, base_gen));
        Ok(())
    }

    /// Gives back the space allocated beyond the end of the log file (its reserve): a
    /// truncation to its own length frees the pages past it on tmpfs. (A takeover's log
    /// object has no file yet: `read_file` gave back the dead daemon's reserve.)
    ///
    /// Marks the log low: changes that check the room without the store lock (the fast path
    /// of `Store::check_room`) must not go on appending into space that is no longer
    /// reserved (a flush's rewrite waiting for its commit took it; an append there fails on
    /// a full tmpfs, and with a rewrite pending the change could only be answered EIO).
    pub(crate) fn release_reserve(&mut self) {
        if self.opened && self.file.set_len(self.len).is_ok() {
            self.reserved = self.len;
            self.low.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn commit_rewrite(&mut self) -> io::Result<()> {
        let Some((f, len, base_gen)) = self.pending.take() else {
            return Ok(());
        };
        crate::fsx::trusted::rename(Self::new_path(&self.dir), Self::path(&self.dir))?;
        self.file = f;
        self.opened = true;
        self.broken = false;
        self.len = len;
        self.reserved = len;
        self.base_gen = base_gen;
        self.epoch += 1;
        self.reserve();
        Ok(())
    }

    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Drops a prepared rewrite; the old log, which stays, gets its reserve back.
    pub fn abort_rewrite(&mut self) {
        if self.pending.take().is_some() {
            let _ = crate::fsx::trusted::remove_file(Self::new_path(&self.dir));
            self.reserve();
        }
    }

    fn new_path(dir: &Path) -> PathBuf {
        dir.join("log.new")
    }

    /// The log to take over for a disk at generation `disk_gen`: `log.new` if it is based on
    /// it (the daemon died between a flush's commit and its log switch), else `log`.
    pub fn read_for(dir: &Path, disk_gen: u64) -> io::Result<(Header, Vec<Record>)> {
        if let Ok((h, r)) = Self::read_file(&Self::new_path(dir)) {
            // Only a complete rewrite counts (it ends with its End record).
            let complete = matches!(r.last(), Some(Record::End { records }) if *records as usize + 1 == r.len());
            if h.base_gen == disk_gen && complete {
                crate::fsx::trusted::rename(Self::new_path(dir), Self::path(dir))?;
                return Ok((h, r));
            }
        }
        let _ = crate::fsx::trusted::remove_file(Self::new_path(dir));
        Self::read_file(&Self::path(dir))
    }

    /// A log object for a takeover: nothing is written until the replayed state is (with
    /// `rewrite`), so a takeover killed half way leaves the old log as it was.
    pub fn unopened(dir: &Path, target: &Path, base_gen: u64) -> io::Result<StoreLog> {
        Ok(StoreLog {
            unit: unit_for(fs_size(dir)),
            broken: false,
            low: Default::default(),
            opened: false,
            dir: dir.to_path_buf(),
            file: crate::fsx::trusted::open("/dev/null")?,
            len: 0,
            reserved: 0,
            epoch: 1,
            base_gen,
            target: target.to_path_buf(),
            handle_gen: fresh_handle_gen(),
            failures: 0,
            pending: None,
        })
    }

    /// Sizes the reserve for a store that may use `limit` bytes of RAM (0: its tmpfs alone
    /// limits it; a user's store shares its tmpfs with everything else there): a sixteenth of
    /// the smaller of the two, as for a tmpfs of that size. Space reserved beyond that is
    /// given back, never below `want_ahead` (a rewrite of the log and one more batch).
    pub fn set_limit(&mut self, limit: u64) {
        let tmpfs = fs_size(&self.dir);
        let room = if limit > 0 { limit.min(tmpfs) } else { tmpfs };
        self.unit = unit_for(room);
        let keep = self.len + self.want_ahead();
        if self.opened && self.reserved > keep {
            let freed = punch(&self.file, keep, self.reserved - keep);
            if freed.is_ok() {
                self.reserved = keep;
            }
        }
    }

    /// Appends records with one write(2). On failure the error is counted and returned.
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.broken || !self.opened {
            self.failures += 1;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let mut buf = Vec::with_capacity(256 * records.len());
        for r in records {
            buf.extend_from_slice(&encode(r));
        }
        let end = self.len + buf.len() as u64;
        if end > self.reserved && allocate_keep(&self.file, self.reserved, end).is_ok() {
            self.reserved = end;
        }
        if let Err(e) = self.file.write_all(&buf) {
            self.failures += 1;
            self.broken = true;
            self.low.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, "store log append failed; the log is rewritten from the RAM tree");
            return Err(e);
        }
        self.len = end;
        if self.ahead() < self.want_ahead() / 2 {
            self.reserve();
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Space allocated beyond the end of the log: its reserve.
    pub fn reserve_bytes(&self) -> u64 {
        self.ahead()
    }

    fn ahead(&self) -> u64 {
        self.reserved.saturating_sub(self.len)
    }

    /// The reserve aimed at: the unit, and always room for a rewrite and one more batch.
    fn want_ahead(&self) -> u64 {
        self.unit.max(self.need_ahead())
    }

    /// The least reserve with which changes are taken: a rewrite of the whole log (the
    /// flush after them) and the records of one more operation.
    fn need_ahead(&self) -> u64 {
        rewrite_need(self.len) + BATCH_ROOM
    }

    /// Whether a change whose records take up to `batch` bytes may be made: they, and the
    /// rewrite after them, fit in the reserve (topped up first if it is short). Sets `low`
    /// for `Store::check_room`.
    pub fn has_room(&mut self, batch: u64) -> bool {
        self.room_for(rewrite_need(self.len) + batch)
    }

    /// Whether a removal whose records take up to `batch` bytes may be made: it needs room
    /// for its records only, since it gives room back (so files can always be deleted to
    /// make room while the reserve lasts).
    pub fn has_room_for_removal(&mut self, batch: u64) -> bool {
        self.room_for(batch)
    }

    fn room_for(&mut self, need: u64) -> bool {
        if self.ahead() < self.want_ahead() {
            self.reserve();
        }
        let ok = self.opened && !self.broken && self.ahead() >= need;
        let low = !ok || self.ahead() < self.want_ahead();
        self.low.store(low, std::sync::atomic::Ordering::Relaxed);
        ok
    }

    /// Tops the reserve up to `want_ahead`, or as far as the tmpfs allows (at least to
    /// `need_ahead`, else nothing is allocated).
    pub(crate) fn reserve(&mut self) {
        if !self.opened {
            return;
        }
        let was_low = self.low.load(std::sync::atomic::Ordering::Relaxed);
        for want in [self.want_ahead(), self.need_ahead()] {
            let end = self.len + want;
            if end <= self.reserved || allocate_keep(&self.file, self.reserved, end).is_ok() {
                self.reserved = self.reserved.max(end);
                let low = self.ahead() < self.want_ahead() || self.broken;
                self.low.store(low, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
        self.low.store(true, std::sync::atomic::Ordering::Relaxed);
        if !was_low {
            tracing::warn!(
                reserve = self.ahead(),
                needed = self.need_ahead(),
                "the RAM store is full: its log's reserve cannot grow; changes get ENOSPC until a flush or deleted files make room"
            );
        }
    }

    /// Reads a log. A torn last line (the daemon died mid-append, before replying) is ignored;
    /// a bad line elsewhere is an error.
    ///
    /// The space its writer (a daemon that died) kept allocated beyond its end is given back
    /// (the content is untouched): on a full tmpfs the takeover's rewrite needs it.
    fn read_file(path: &Path) -> io::Result<(Header, Vec<Record>)> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .trusted_open(path)?;
        if let Ok(m) = f.metadata() {
            if m.is_file() {
                let _ = f.set_len(m.len());
            }
        }
        let lines: Vec<Vec<u8>> = io::BufReader::new(f)
            .split(b'\n')
            .collect::<Result<_, _>>()?;
        let mut records = Vec::with_capacity(lines.len());
        let last = lines.len().saturating_sub(1);
        for (i, line) in lines.iter().enumerate() {
            if line.iter().all(|b| *b == 0 || b.is_ascii_whitespace()) {
                continue;
            }
            match serde_json::from_slice::<Record>(line) {
                Ok(r) => records.push(r),
                Err(_) if i == last => tracing::warn!("store log: ignoring a torn last record"),
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("store log line {}: {e}", i + 1),
                    ));
                }
            }
        }
        let whole = records
            .iter()
            .rposition(|r| matches!(r, Record::Commit | Record::End { .. } | Record::Header(_)));
        if let Some(last) = whole {
            if last + 1 < records.len() {
                tracing::warn!(
                    dropped = records.len() - last - 1,
                    "store log: ignoring an operation cut short"
                );
                records.truncate(last + 1);
            }
        }
        let mut it = records.into_iter();
        match it.next() {
            Some(Record::Header(h)) if h.version == LOG_VERSION => Ok((h, it.collect())),
            Some(Record::Header(h)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("store log version {} is not {LOG_VERSION}", h.version),
            )),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "store log has no header",
            )),
        }
    }
}

/// Allocates the first `len` bytes of `f`, growing its size.
fn allocate(f: &File, len: u64) -> io::Result<()> {
    fallocate(f, 0, 0, len)
}

/// Allocates bytes `from..to` of `f` (everything before `from` is allocated already),
/// leaving its size alone. Only the new range: tmpfs walks every page of the range given,
/// so allocating from 0 each time would cost in proportion to the whole log.
fn allocate_keep(f: &File, from: u64, to: u64) -> io::Result<()> {
    fallocate(f, libc::FALLOC_FL_KEEP_SIZE, from, to.saturating_sub(from))
}

/// Frees bytes `from..from + len` of `f` (space reserved beyond its end), leaving its size.
fn punch(f: &File, from: u64, len: u64) -> io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    fallocate(f, mode, from, len)
}

fn fallocate(f: &File, mode: i32, from: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on a descriptor the caller owns.
    let r =
        unsafe { libc::fallocate(f.as_raw_fd(), mode, from as libc::off_t, len as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn encode(r: &Record) -> Vec<u8> {
    let mut v = serde_json::to_vec(r).expect("records always serialize");
    v.push(b'\n');
    v
}

/// A non-zero generation unlikely to repeat between stores of one target.
fn fresh_handle_gen() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = nanos ^ (u64::from(std::process::id()) << 32);
    ((mixed ^ (mixed >> 32)) as u32).max(1)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn allocated(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().blocks() * 512
    }

    #[test]
    fn the_reserve_lies_beyond_the_end_and_a_rewrite_takes_it_first() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let log_path = dir.path().join("log");
        let mut log = StoreLog::create(dir.path(), Path::new("/t"), 0, &[]).unwrap();
        assert!(log.reserve_bytes() >= RESERVE_MIN);
        assert!(allocated(&log_path) >= log.len() + log.reserve_bytes());
        assert_eq!(std::fs::metadata(&log_path).unwrap().len(), log.len());
        assert!(log.has_room(BATCH_ROOM));
        log.append(&[Record::Commit]).unwrap();
        log.prepare_rewrite(1, &[]).unwrap();
        log.commit_rewrite().unwrap();
        assert!(allocated(&log_path) >= RESERVE_MIN);
        assert!(!dir.path().join("log.new").exists());
        // An aborted rewrite gives the old log its reserve back.
        log.prepare_rewrite(2, &[]).unwrap();
        log.abort_rewrite();
        assert!(allocated(&log_path) >= RESERVE_MIN);
        assert_eq!(log.base_gen, 1);
    }

    #[test]
    fn a_broken_log_takes_no_appends_and_no_changes_until_rewritten() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let mut log = StoreLog::create(dir.path(), Path::new("/t"), 0, &[]).unwrap();
        log.broken = true;
        assert!(log.append(&[Record::Commit]).is_err());
        assert_eq!(log.failures, 1);
        assert!(!log.has_room(BATCH_ROOM));
        assert!(log.low.load(std::sync::atomic::Ordering::Relaxed));
        log.rewrite(0, &[]).unwrap();
        assert!(log.has_room(BATCH_ROOM));
        log.append(&[Record::Commit]).unwrap();
    }

    #[test]
    fn a_reserve_given_back_to_a_rewrite_sends_changes_to_the_slow_path() {
        // Seen as an EIO from a writer on a full store while a flush's rewrite was pending:
        // changes passed the lock-free room check and appended past the reserve.
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let mut log = StoreLog::create(dir.path(), Path::new("/t"), 0, &[]).unwrap();
        assert!(log.has_room(BATCH_ROOM));
        assert!(!log.low.load(std::sync::atomic::Ordering::Relaxed));
        log.release_reserve();
        assert_eq!(log.reserve_bytes(), 0);
        assert!(log.low.load(std::sync::atomic::Ordering::Relaxed));
    }

    #[test]
    fn the_reserve_always_holds_a_rewrite_of_the_log() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let mut log = StoreLog::create(dir.path(), Path::new("/t"), 0, &[]).unwrap();
        let entry = Record::Entry {
            dir: NodeId(1),
            name: "x".repeat(200).into(),
            child: None,
        };
        for _ in 0..20_000 {
            log.append(std::slice::from_ref(&entry)).unwrap();
        }
        assert!(log.len() > 4 << 20);
        assert!(log.reserve_bytes() >= rewrite_need(log.len()));
        assert!(log.has_room(BATCH_ROOM));
    }

    #[test]
    fn a_ram_limit_sizes_the_reserve_and_gives_back_the_rest_but_never_a_rewrite() {
        // /dev/shm is shared (at least 128 MiB on the machines we test on): a reserve of 8 MiB.
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let log_path = dir.path().join("log");
        let mut log = StoreLog::create(dir.path(), Path::new("/t"), 0, &[]).unwrap();
        let shared = allocated(&log_path);
        log.set_limit(4 << 20);
        assert_eq!(log.reserve_bytes(), RESERVE_MIN);
        let after = allocated(&log_path);
        assert!(after < shared, "the pages came back: {shared} -> {after}");
        assert!(after >= log.len() + RESERVE_MIN);
        // A log that grows keeps room for its rewrite, and a smaller limit never takes it.
        let entry = Record::Entry {
            dir: NodeId(1),
            name: "x".repeat(200).into(),
            child: None,
        };
        for _ in 0..10_000 {
            log.append(std::slice::from_ref(&entry)).unwrap();
        }
        assert!(log.has_room(BATCH_ROOM));
        let before = log.reserve_bytes();
        log.set_limit(1 << 20);
        assert_eq!(log.reserve_bytes(), before);
        assert!(log.reserve_bytes() >= rewrite_need(log.len()) + BATCH_ROOM);
        assert!(allocated(&log_path) >= log.len() + log.reserve_bytes());
        log.rewrite(1, &[]).unwrap();
        assert_eq!(log.reserve_bytes(), RESERVE_MIN);
        // No limit: the tmpfs's sixteenth again.
        log.set_limit(0);
        log.reserve();
        assert!(log.reserve_bytes() > RESERVE_MIN);
    }
}
