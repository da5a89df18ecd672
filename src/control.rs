//! The control socket: one JSON request line, one JSON response line. Only root, the
//! daemon's own user and the target's owner may send commands.
//!
//! The daemon runs as root and the socket is reachable by whoever may enter the store, so
//! a connection costs the daemon nothing until it is known to be wanted: the socket file
//! lets only root and the target's owner connect (`bind`); each accepted connection's peer
//! credentials are checked before anything is read from it and before a thread is started;
//! connection threads are bounded in total and per user, with slots kept for root; and a
//! connection that sends nothing, or does not read, times out.

use crate::status::Status;
use anyhow::Context;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Connection threads at most, for all users together.
pub const MAX_CONNECTIONS: usize = 32;
/// Connection threads at most for one unprivileged user.
pub const MAX_PER_USER: usize = 8;
/// Of `MAX_CONNECTIONS`, the slots only root (and the daemon's own user) may take.
pub const RESERVED_FOR_ROOT: usize = 8;
/// How long a caller may take to send its request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write to a caller (progress, answer) may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// What a caller that is not allowed is told.
pub const REFUSED: &str =
    "permission denied: only root and the target's owner may command this mount";

/// Control connections being answered; the daemon waits for them before it exits.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Waits until every control connection has its answer (or `limit` passes).
pub fn wait_idle(limit: Duration) {
    let end = Instant::now() + limit;
    while ACTIVE.load(Ordering::SeqCst) > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Write everything to disk; answer when it is durable.
    Flush,
    Status,
    /// Final flush, then unmount.
    Unmount,
    /// The mount was remounted read-only (`on`: flush now, answer when durable) or
    /// writable again.
    Readonly {
        on: bool,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// An unmount answered before its final flush: programs still held this many files
    /// open. The daemon serves them and writes to disk when the last is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// The answer to the unmount of the daemon's last target: the daemon (this pid) exits
    /// right after it; the caller waits for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exits: Option<u32>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Response {
        Response {
            ok: true,
            message: message.into(),
            ..Response::default()
        }
    }
    pub fn err(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            message: message.into(),
            ..Response::default()
        }
    }
}

/// A line the daemon sends before its answer while it works: bytes done and total.
#[derive(Serialize, Deserialize)]
struct Progress {
    progress: (u64, u64),
}

/// Sends one request and waits for the answer.
pub fn call(sock: &Path, req: &Request) -> anyhow::Result<Response> {
    call_with_progress(sock, req, &mut |_, _| {})
}

/// Sends one request; `progress(done, total)` gets the daemon's progress lines until the
/// answer comes.
pub fn call_with_progress(
    sock: &Path,
    req: &Request,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Response> {
    let s = UnixStream::connect(sock).map_err(|e| connect_error(sock, e))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    // A daemon that refuses the caller answers and closes without reading: the answer is
    // still there to read after a failed write.
    let written = (&s).write_all(&line);
    let mut lines = BufReader::new(&s);
    loop {
        let mut reply = String::new();
        let read = lines.read_line(&mut reply);
        if reply.is_empty() {
            written?;
            read?;
            anyhow::bail!("the daemon closed the connection without answering");
        }
        if let Ok(p) = serde_json::from_str::<Progress>(&reply) {
            progress(p.progress.0, p.progress.1);
            continue;
        }
        let mut r: Response =
            serde_json::from_str(&reply).context("reading the daemon's answer")?;
        if r.exits.is_some() {
            // The daemon's pid as this process's pid namespace sees it.
            use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
            r.exits = getsockopt(&s, PeerCredentials)
                .ok()
                .map(|c| c.pid() as u32)
                .or(r.exits);
        }
        return Ok(r);
    }
}

/// The socket file lets only root and the target's owner connect: others get EACCES.
fn connect_error(sock: &Path, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        return anyhow::anyhow!("{}: {REFUSED}", sock.display());
    }
    anyhow::Error::new(e).context(format!("connecting to {}", sock.display()))
}

/// How a request handler reports progress to the caller: bytes done, total.
pub type Report<'a> = &'a dyn Fn(u64, u64);

/// Listens on `sock` (a path in a directory only the daemon's user may write to), with the
/// socket file owned by `owner` and mode 0600: root and the owner may connect. The socket
/// is made under a temporary name and renamed into place once its mode and owner are set,
/// so no other user ever finds it with the mode bind(2) gave it.
pub fn bind(sock: &Path, owner: u32) -> anyhow::Result<UnixListener> {
    let fresh = sock.with_extension("sock.new");
    let _ = crate::fsx::trusted::remove_file(&fresh);
    let listener =
        UnixListener::bind(&fresh).with_context(|| format!("binding {}", fresh.display()))?;
    let placed = crate::fsx::trusted::set_mode(&fresh, 0o600)
        .and_then(|()| match nix::unistd::geteuid().is_root() {
            true => crate::fsx::trusted::lchown(&fresh, Some(owner), None),
            false => Ok(()),
        })
        .and_then(|()| crate::fsx::trusted::rename(&fresh, sock));
    if let Err(e) = placed {
        let _ = crate::fsx::trusted::remove_file(&fresh);
        return Err(e).with_context(|| format!("setting up {}", sock.display()));
    }
    Ok(listener)
}

/// Who may send requests: root, the daemon's own user and the target's owner. Root and the
/// daemon's user are privileged: they may use the slots kept for them.
#[derive(Clone, Debug)]
pub struct Allowed {
    privileged: Vec<u32>,
    owner: u32,
}

impl Allowed {
    pub fn new(owner: u32) -> Allowed {
        Allowed {
            privileged: vec![0, nix::unistd::geteuid().as_raw()],
            owner,
        }
    }
    fn contains(&self, uid: u32) -> bool {
        uid == self.owner || self.privileged.contains(&uid)
    }
}

/// The connection threads running, in total and per user.
#[derive(Default)]
struct Slots {
    used: Mutex<(usize, HashMap<u32, usize>)>,
}

/// One connection thread's place; given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    /// A place for a connection of `uid`, if the limits leave one.
    fn take(self: &Arc<Self>, uid: u32, privileged: bool) -> Option<Slot> {
        let mut used = self.used.lock();
        let mine = used.1.get(&uid).copied().unwrap_or(0);
        let free = match privileged {
            true => used.0 < MAX_CONNECTIONS,
            false => used.0 < MAX_CONNECTIONS - RESERVED_FOR_ROOT && mine < MAX_PER_USER,
        };
        if !free {
            return None;
        }
        used.0 += 1;
        used.1.insert(uid, mine + 1);
        Some(Slot {
            slots: self.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = self.slots.used.lock();
        used.0 -= 1;
        if let Some(n) = used.1.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                used.1.remove(&self.uid);
            }
        }
    }
}

/// Serves requests until the listener fails. Each connection is checked as it is accepted;
/// one that is refused or finds no free slot is answered at once, without blocking, and
/// closed; the others get a thread of their own.
pub fn serve(
    listener: UnixListener,
    allowed: Allowed,
    handle: impl Fn(Request, Report<'_>) -> Response + Send + Sync + 'static,
) {
    let handle = Arc::new(handle);
    let slots = Arc::new(Slots::default());
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, most likely: let other work free some.
                tracing::debug!(error = %e, "accepting a control connection");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Some(slot) = admit(&conn, &allowed, &slots) else {
            continue;
        };
        start(conn, slot, handle.clone());
    }
}

/// The slot of an accepted connection, from its peer credentials alone; `None` when it was
/// refused (and told so).
fn admit(conn: &UnixStream, allowed: &Allowed, slots: &Arc<Slots>) -> Option<Slot> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let uid = getsockopt(conn, PeerCredentials).ok().map(|c| c.uid());
    let Some(uid) = uid.filter(|u| allowed.contains(*u)) else {
        refuse(conn, REFUSED);
        return None;
    };
    let slot = slots.take(uid, allowed.privileged.contains(&uid));
    if slot.is_none() {
        refuse(conn, "busy: too many control connections; try again");
    }
    slot
}

/// Answers `message` without blocking (a caller that does not read loses it).
fn refuse(conn: &UnixStream, message: &str) {
    let _ = conn.set_nonblocking(true);
    let _ = (&*conn).write_all(&answer_line(&Response::err(message)));
}

fn answer_line<T: Serialize>(answer: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(answer).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Answers one admitted connection on a thread of its own, which holds `slot`.
fn start(
    conn: UnixStream,
    slot: Slot,
    handle: Arc<impl Fn(Request, Report<'_>) -> Response + Send + Sync + 'static>,
) {
    let timeouts = conn
        .set_read_timeout(Some(READ_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(WRITE_TIMEOUT)));
    if timeouts.is_err() {
        return;
    }
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let _slot = slot;
            // A caller that stops reading costs the work it asked for one write timeout,
            // not one per progress line.
            let gone = std::cell::Cell::new(false);
            let report = |done: u64, total: u64| {
                let p = Progress {
                    progress: (done, total),
                };
                if !gone.get() && (&conn).write_all(&answer_line(&p)).is_err() {
                    gone.set(true);
                }
            };
            let reply = match read_request(&conn) {
                Ok(req) => handle(req, &report),
                Err(e) => Response::err(format!("{e:#}")),
            };
            let _ = (&conn).write_all(&answer_line(&reply));
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(e) = spawned {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(error = %e, "cannot start a control thread");
    }
}

/// Reads the request line of an admitted caller (at most 64 KiB, within `READ_TIMEOUT`).
fn read_request(conn: &UnixStream) -> anyhow::Result<Request> {
    let mut line = String::new();
    BufReader::new(conn.take(64 * 1024))
        .read_line(&mut line)
        .context("reading the request")?;
    serde_json::from_str(&line).context("not a request")
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;

    #[test]
    fn one_user_cannot_take_the_slots_of_others_or_of_root() {
        let slots = Arc::new(Slots::default());
        let mine: Vec<Slot> = (0..MAX_PER_USER)
            .map_while(|_| slots.take(1000, false))
            .collect();
        assert_eq!(mine.len(), MAX_PER_USER);
        assert!(slots.take(1000, false).is_none(), "past the per-user limit");
        let others: Vec<Slot> = (1001..2000).map_while(|u| slots.take(u, false)).collect();
        assert_eq!(
            mine.len() + others.len(),
            MAX_CONNECTIONS - RESERVED_FOR_ROOT
        );
        let root: Vec<Slot> = (0..100).map_while(|_| slots.take(0, true)).collect();
        assert_eq!(root.len(), RESERVED_FOR_ROOT);
        drop((mine, root));
        assert!(
            slots.take(1000, false).is_some(),
            "slots come back when dropped"
        );
    }

    #[test]
    fn a_refused_caller_reads_the_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("control.sock");
        let listener = bind(&sock, 0).unwrap();
        let nobody = Allowed {
            privileged: vec![],
            owner: u32::MAX - 1,
        };
        std::thread::spawn(move || serve(listener, nobody, |_, _| Response::ok("done")));
        let e = call(&sock, &Request::Status).unwrap();
        assert_eq!(e, Response::err(REFUSED));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&sock).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
