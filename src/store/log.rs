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
/// Space kept allocated ahead of the end of the log, so that appends do not fail on a full
/// tmpfs (fallocate with KEEP_SIZE).
const RESERVE: u64 = 8 << 20;

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
    pub fn prepare_rewrite(&mut self, base_gen: u64, records: &[Record]) -> io::Result<()> {
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
        f.write_all(&buf)?;
        self.pending = Some((f, buf.len() as u64, base_gen));
        Ok(())
    }

    pub fn commit_rewrite(&mut self) -> io::Result<()> {
        let Some((f, len, base_gen)) = self.pending.take() else {
            return Ok(());
        };
        crate::fsx::trusted::rename(Self::new_path(&self.dir), Self::path(&self.dir))?;
        self.file = f;
        self.len = len;
        self.reserved = len;
        self.base_gen = base_gen;
        self.epoch += 1;
        self.reserve();
        Ok(())
    }

    pub fn abort_rewrite(&mut self) {
        if self.pending.take().is_some() {
            let _ = crate::fsx::trusted::remove_file(Self::new_path(&self.dir));
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

    /// Appends records with one write(2). On failure the error is counted and returned.
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(256 * records.len());
        for r in records {
            buf.extend_from_slice(&encode(r));
        }
        if let Err(e) = self.file.write_all(&buf) {
            self.failures += 1;
            tracing::error!(error = %e, "store log append failed: a killed daemon could lose this change");
            return Err(e);
        }
        self.len += buf.len() as u64;
        if self.len + RESERVE / 2 > self.reserved {
            self.reserve();
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    fn reserve(&mut self) {
        let want = self.len + RESERVE;
        // SAFETY: fallocate on a descriptor we own; KEEP_SIZE leaves the file's size alone.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                0,
                want as libc::off_t,
            )
        };
        if r == 0 {
            self.reserved = want;
        } else {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot reserve space for the store log");
        }
    }

    /// Reads a log. A torn last line (the daemon died mid-append, before replying) is ignored;
    /// a bad line elsewhere is an error.
    fn read_file(path: &Path) -> io::Result<(Header, Vec<Record>)> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .trusted_open(path)?;
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
