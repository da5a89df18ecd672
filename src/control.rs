//! The control socket: one JSON request line, one JSON response line. Only root, the
//! daemon's own user and the target's owner may send commands.

use crate::status::Status;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    let mut s =
        UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut lines = BufReader::new(&s);
    loop {
        let mut reply = String::new();
        lines.read_line(&mut reply)?;
        if reply.is_empty() {
            anyhow::bail!("the daemon closed the connection without answering");
        }
        if let Ok(p) = serde_json::from_str::<Progress>(&reply) {
            progress(p.progress.0, p.progress.1);
            continue;
        }
        return serde_json::from_str(&reply).context("reading the daemon's answer");
    }
}

/// How a request handler reports progress to the caller: bytes done, total.
pub type Report<'a> = &'a dyn Fn(u64, u64);

/// Serves requests until the listener fails; each connection gets its own thread.
pub fn serve(
    listener: UnixListener,
    allowed: Vec<u32>,
    handle: impl Fn(Request, Report<'_>) -> Response + Send + Sync + 'static,
) {
    let handle = std::sync::Arc::new(handle);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let handle = handle.clone();
        let allowed = allowed.clone();
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let report = |done: u64, total: u64| {
                    let p = Progress {
                        progress: (done, total),
                    };
                    let mut line = serde_json::to_vec(&p).unwrap_or_default();
                    line.push(b'\n');
                    let _ = (&conn).write_all(&line);
                };
                let reply = match read_request(&conn, &allowed) {
                    Ok(req) => handle(req, &report),
                    Err(e) => Response::err(format!("{e:#}")),
                };
                let mut line = serde_json::to_vec(&reply).unwrap_or_default();
                line.push(b'\n');
                let _ = (&conn).write_all(&line);
                ACTIVE.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(error = %e, "cannot start a control thread");
        }
    }
}

/// Reads the request, then checks who sent it: reading first lets a refused caller get the
/// refusal as an answer rather than a broken pipe.
fn read_request(conn: &UnixStream, allowed: &[u32]) -> anyhow::Result<Request> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let mut line = String::new();
    BufReader::new(conn.take(64 * 1024)).read_line(&mut line)?;
    let cred = getsockopt(conn, PeerCredentials).context("reading the caller's credentials")?;
    if !allowed.contains(&cred.uid()) {
        anyhow::bail!("permission denied: only root and the target's owner may command this mount");
    }
    serde_json::from_str(&line).context("not a request")
}
