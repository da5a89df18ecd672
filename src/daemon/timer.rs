//! The flush timer of one target, in either mode: a flush every interval; after a failure,
//! sooner, with a growing delay; at once when changed data presses on the RAM budget
//! (a pressure flush, design.md §2.1); stopped at the end of the session.

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct FlushTimer {
    next: Mutex<Instant>,
    interval: Duration,
    stopping: AtomicBool,
    /// No timed flushes meanwhile (an unmount's own flush runs).
    paused: AtomicBool,
    wake: Sender<()>,
    woken: Receiver<()>,
    /// Pressure flushes asked for so far (status), and when the poll last asked for one.
    pressure: AtomicU64,
    polled: Mutex<Option<Instant>>,
}

/// How often the timer looks at the store's room for writes the daemon does not see
/// (FUSE passthrough, overlay mode), and the least time between two flushes it starts.
const POLL: Duration = Duration::from_millis(250);
const POLL_SPACING: Duration = Duration::from_secs(2);

impl FlushTimer {
    pub fn new(interval: Duration) -> FlushTimer {
        let (wake, woken) = crossbeam_channel::unbounded();
        FlushTimer {
            next: Mutex::new(Instant::now() + interval),
            interval,
            stopping: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            wake,
            woken,
            pressure: AtomicU64::new(0),
            polled: Mutex::new(None),
        }
    }

    /// A pressure flush: the next flush is due now. False when one is already due or
    /// running, or flushes are held back or over.
    pub fn flush_now(&self) -> bool {
        if self.is_stopping() || self.paused.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        {
            let mut next = self.next.lock();
            if *next <= now {
                return false;
            }
            *next = now;
        }
        self.pressure.fetch_add(1, Ordering::Relaxed);
        let _ = self.wake.send(());
        true
    }

    /// Pressure flushes so far.
    pub fn pressure_flushes(&self) -> u64 {
        self.pressure.load(Ordering::Relaxed)
    }

    /// When the next flush is due.
    pub fn next(&self) -> Instant {
        *self.next.lock()
    }

    /// Whether the session is ending (no more timed flushes).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Holds timed flushes back (`true`) or lets them run again.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
    }

    /// A pressure flush from the poll, at most once per `POLL_SPACING`: a store whose
    /// changes cannot be written (a full disk) or whose room old layers hold is not flushed
    /// over and over.
    fn poll_pressure(&self) -> bool {
        let mut last = self.polled.lock();
        if last.is_some_and(|l| l.elapsed() < POLL_SPACING) {
            return false;
        }
        *last = Some(Instant::now());
        drop(last);
        self.flush_now()
    }

    /// Runs the timer of `t` (whose timer `of` gives) in a thread: `flush` flushes, and
    /// after a failure says how many there were in a row; `pressed` says whether changed
    /// data presses on the RAM budget (design.md §2.1), looked at every `POLL` (FUSE mode's
    /// also evicts clean files there, past the store's high-water mark).
    pub fn start<T: Send + Sync + 'static>(
        t: Arc<T>,
        of: fn(&T) -> &FlushTimer,
        flush: fn(&T) -> Result<(), u32>,
        pressed: fn(&T) -> bool,
    ) {
        let spawned = std::thread::Builder::new()
            .name("flush-timer".into())
            .spawn(move || {
                let timer = of(&t);
                loop {
                    let wait = timer.next().saturating_duration_since(Instant::now());
                    let _ = timer.woken.recv_timeout(wait.min(POLL));
                    if timer.is_stopping() {
                        return;
                    }
                    if Instant::now() < timer.next()
                        && (timer.paused.load(Ordering::SeqCst)
                            || !pressed(&t)
                            || !timer.poll_pressure())
                    {
                        continue;
                    }
                    if timer.paused.load(Ordering::SeqCst) {
                        *timer.next.lock() = Instant::now() + Duration::from_secs(1);
                        continue;
                    }
                    let after = match flush(&t) {
                        Ok(()) => timer.interval,
                        Err(failures) => retry_delay(failures, timer.interval),
                    };
                    *timer.next.lock() = Instant::now() + after;
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the flush timer");
        }
    }
}

/// The wait after `failures` failed flushes in a row: doubling from 2 s, at most `cap`.
pub(super) fn retry_delay(failures: u32, cap: Duration) -> Duration {
    let secs = 1u64 << failures.min(16);
    Duration::from_secs(secs)
        .min(cap)
        .max(Duration::from_secs(1))
}
