//! Bounds on how long a command or a start waits on a path another user controls
//! (docs/security.md R7, design.md §8.2). A user can stack a FUSE filesystem that never
//! answers on her directory (or on one above it): every stat, open or statfs that reaches it
//! waits for an answer that never comes. `mounting::foreign_fuse_on` refuses such a target
//! from the mount table before its path is touched; since she can mount right after that
//! check, the path steps also run where a wait on her filesystem cannot hold the caller:
//!
//! - `bounded`: a short step (a command's lookup of a target) in a thread, given up after
//!   `limit()`; the thread stays blocked (a FUSE request is killable, so it ends with the
//!   process).
//! - `watched`: a daemon's start of one target, which may walk a large disk copy for
//!   minutes, in a thread given up only once it has waited in one FUSE request for `limit()`
//!   (its `/proc/self/task/TID/wchan`). A start given up can never mount afterwards: the
//!   start calls `commit` before it mounts, and only one of `commit` and the give-up wins.

use anyhow::bail;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// How long a step may wait on a filesystem that does not answer.
const LIMIT: Duration = Duration::from_secs(10);
/// The environment variable that sets another limit, in seconds (tests).
pub const LIMIT_ENV: &str = "ASDFS_HANG_LIMIT";

/// How long a step may wait on a filesystem that does not answer: `ASDFS_HANG_LIMIT`
/// seconds, else 10 s.
pub fn limit() -> Duration {
    std::env::var(LIMIT_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(LIMIT)
}

fn hung(what: &str, waited: Duration) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: a filesystem on its path did not answer for {} s (a FUSE mount whose daemon \
         does not respond?); given up",
        waited.as_secs()
    )
}

/// Runs `f` in a thread and waits at most `limit()` for it; `what` names the path in the
/// error. A step given up keeps its thread, blocked, until the filesystem answers or the
/// process ends.
pub fn bounded<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    bounded_for(what, limit(), f)
}

fn bounded_for<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("path-step".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => Err(hung(what, limit)),
    }
}

/// `bounded` for one step per path, all in one thread (a config may name thousands): the
/// whole run is given up after `limit()`, and the error names the path it was at.
pub fn bounded_each(
    paths: Vec<std::path::PathBuf>,
    step: impl Fn(&std::path::Path) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<()> {
    bounded_each_for(paths, limit(), step)
}

fn bounded_each_for(
    paths: Vec<std::path::PathBuf>,
    limit: Duration,
    step: impl Fn(&std::path::Path) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<()> {
    let at = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (seen, list) = (at.clone(), paths.clone());
    std::thread::Builder::new()
        .name("path-step".into())
        .spawn(move || {
            let r = list.iter().enumerate().try_for_each(|(i, p)| {
                seen.store(i, Ordering::SeqCst);
                step(p)
            });
            let _ = tx.send(r);
        })?;
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => {
            let i = at.load(Ordering::SeqCst);
            let what = paths.get(i).map(|p| p.display().to_string());
            Err(hung(&what.unwrap_or_default(), limit))
        }
    }
}

const RUNNING: u8 = 0;
const COMMITTED: u8 = 1;
const GIVEN_UP: u8 = 2;

thread_local! {
    static CLAIM: std::cell::RefCell<Option<Arc<AtomicU8>>> = const { std::cell::RefCell::new(None) };
}

/// Called by a start before its mount: fails if the start was given up (its caller
/// reported it failed); after it, the start is never given up.
pub fn commit() -> anyhow::Result<()> {
    let claim = CLAIM.with(|c| c.borrow().clone());
    let Some(claim) = claim else {
        return Ok(()); // not watched
    };
    match claim.compare_exchange(RUNNING, COMMITTED, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) | Err(COMMITTED) => Ok(()),
        Err(_) => bail!("given up while waiting on a filesystem that did not answer"),
    }
}

/// Whether a thread is blocked in a FUSE request (its wait channel, a kernel function name).
fn in_fuse_wait(tid: i32) -> bool {
    crate::fsx::trusted::read_to_string(format!("/proc/self/task/{tid}/wchan"))
        .is_ok_and(|w| is_fuse_wait(w.trim()))
}

/// A FUSE request waiting for its answer, or a lookup waiting for another process's lookup
/// of the same name to end (`d_alloc_parallel`: that one may be waiting for a FUSE answer).
fn is_fuse_wait(wchan: &str) -> bool {
    wchan.contains("fuse")
        || matches!(
            wchan,
            "request_wait_answer" | "d_alloc_parallel" | "d_wait_lookup"
        )
}

/// What a start reports of long work: what, done, total.
pub type Progress<'a> = &'a dyn Fn(&str, u64, u64);

/// Runs `f` (a start) in a thread and waits for it as long as it works, passing on its
/// progress; gives it up once it has been blocked in FUSE requests for `limit()` without a
/// break, unless it committed.
pub fn watched<T: Send + 'static>(
    what: &str,
    progress: Progress<'_>,
    f: impl FnOnce(Progress<'_>) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    use crossbeam_channel::select;
    let claim = Arc::new(AtomicU8::new(RUNNING));
    let (tid_tx, tid_rx) = crossbeam_channel::bounded(1);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (ptx, prx) = crossbeam_channel::unbounded::<(String, u64, u64)>();
    let theirs = claim.clone();
    std::thread::Builder::new()
        .name("start".into())
        .spawn(move || {
            let _ = tid_tx.send(nix::unistd::gettid().as_raw());
            CLAIM.with(|c| *c.borrow_mut() = Some(theirs));
            let report = move |w: &str, done: u64, total: u64| {
                let _ = ptx.send((w.to_string(), done, total));
            };
            let _ = tx.send(f(&report));
        })?;
    let tid = tid_rx.recv()?;
    let limit = limit();
    let mut stuck_since: Option<Instant> = None;
    let tick = Duration::from_millis(200);
    loop {
        select! {
            recv(rx) -> r => match r {
                Ok(r) => return r,
                Err(_) => bail!("{what}: the start ended without a result"),
            },
            recv(prx) -> p => {
                if let Ok((w, done, total)) = p {
                    progress(&w, done, total);
                }
                continue;
            },
            default(tick) => {},
        }
        if !in_fuse_wait(tid) {
            stuck_since = None;
            continue;
        }
        let since = *stuck_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= limit
            && claim
                .compare_exchange(RUNNING, GIVEN_UP, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            return Err(hung(what, since.elapsed()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of steps that waits on one path is given up and names that path; a run that
    /// ends passes on its result.
    #[test]
    fn a_run_of_steps_given_up_names_the_path_it_waits_on() {
        let paths: Vec<std::path::PathBuf> = ["/a", "/b", "/c"].iter().map(Into::into).collect();
        let err = bounded_each_for(paths.clone(), Duration::from_millis(200), |p| {
            if p == std::path::Path::new("/b") {
                std::thread::sleep(Duration::from_secs(2));
            }
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("/b: a filesystem on its path did not answer"),
            "{err}"
        );
        let failed = bounded_each_for(paths, Duration::from_secs(5), |p| match p.to_str() {
            Some("/c") => anyhow::bail!("c is bad"),
            _ => Ok(()),
        });
        assert_eq!(failed.unwrap_err().to_string(), "c is bad");
    }

    #[test]
    fn fuse_waits_are_told_from_others() {
        for w in [
            "fuse_get_req",
            "request_wait_answer",
            "fuse_simple_request",
            "d_alloc_parallel",
        ] {
            assert!(is_fuse_wait(w), "{w}");
        }
        for w in ["0", "", "do_sys_poll", "futex_wait_queue", "pipe_read"] {
            assert!(!is_fuse_wait(w), "{w}");
        }
    }

    #[test]
    fn a_start_that_works_is_waited_for_and_a_given_up_one_cannot_commit() {
        let r = watched("x", &|_, _, _| {}, |_| {
            std::thread::sleep(Duration::from_millis(500));
            commit()?;
            Ok(7)
        });
        assert_eq!(r.unwrap(), 7);
        let claim = Arc::new(AtomicU8::new(GIVEN_UP));
        CLAIM.with(|c| *c.borrow_mut() = Some(claim));
        assert!(commit().is_err());
        CLAIM.with(|c| *c.borrow_mut() = None);
        assert!(commit().is_ok());
    }

    #[test]
    fn a_bounded_step_is_given_up() {
        let t = Instant::now();
        let r: anyhow::Result<()> = bounded_for("/slow", Duration::from_secs(1), || {
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        });
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.starts_with("/slow: a filesystem on its path did not answer"),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
