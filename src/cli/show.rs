//! `asdfs status`: the daemon's report, as text for people or JSON for scripts.

use super::locate;
use super::out::{out, outln};
use crate::control::{self, Request};
use crate::human::{count, took};
use crate::status::Status;
use indicatif::{HumanBytes, HumanDuration};
use std::path::Path;
use std::time::Duration;

/// How `asdfs status` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Prometheus,
}

/// `asdfs status [TARGET]`: without a target, every asdfs mount of the caller's mount
/// namespace that is theirs; a mount that went away while it was asked is left out.
pub fn status(format: Format, target: Option<&Path>) -> anyhow::Result<i32> {
    let targets = match target {
        Some(t) => vec![t.to_path_buf()],
        None => locate::mine()?,
    };
    let mut reports = Vec::new();
    let mut code = 0;
    for t in &targets {
        if target.is_none() {
            if let Ok(locate::Found::Dead(d)) = locate::find(t) {
                // Listed, not an error: the question was not about this target.
                reports.push(dead(&d));
                continue;
            }
        }
        let ask = || locate::running(t).and_then(|r| control::call(&r.socket, &Request::Status));
        let mut asked = ask();
        if target.is_none() && !matches!(&asked, Ok(r) if r.ok) {
            // Listing everything: a daemon that is starting or stopping answers a moment later.
            std::thread::sleep(std::time::Duration::from_millis(300));
            asked = ask();
        }
        let gone = || target.is_none() && !locate::all().is_ok_and(|a| a.contains(t));
        match asked {
            Ok(r) if r.ok => reports.extend(r.status),
            _ if gone() => {}
            Ok(r) => {
                eprintln!("asdfs: {}", r.message);
                code = 1;
            }
            Err(e) => {
                eprintln!("asdfs: {e:#}");
                code = 1;
            }
        }
    }
    if format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else if format == Format::Prometheus {
        let live: Vec<Status> = reports.into_iter().filter(|s| s.state != DEAD).collect();
        out!("{}", super::metrics::render(&live));
    } else if reports.is_empty() && code == 0 {
        outln!("asdfs: nothing is kept in RAM");
    } else {
        for s in &reports {
            out!("{}", render(s));
        }
    }
    Ok(code)
}

/// A mount whose daemon died, as the list of every mount shows it: state `dead`, and in
/// `unclean_start` what happened and the command that writes its store to disk.
fn dead(d: &locate::Dead) -> Status {
    Status {
        target: d.target.clone(),
        state: DEAD.into(),
        unclean_start: Some(d.message(&d.mount_command())),
        ..Status::default()
    }
}

/// The state of a mount whose daemon died.
pub const DEAD: &str = "dead";

/// The text form for a configured target that is not in RAM.
pub fn render_idle(target: &Path, settings: Option<&crate::config::TargetSettings>) -> String {
    let mut out = format!("{}: not in RAM", target.display());
    if let Some(s) = settings {
        out += &format!(" (configured: {:?} mode)", s.mode).to_lowercase();
    }
    out += "\n";
    // Walked only where no FUSE mount another user controls is on the way, and given up
    // once blocked in one (`hang::watched`: a large tree may take long, and may).
    let t = target.to_path_buf();
    let looked = match crate::daemon::mounting::foreign_fuse_on(target) {
        Ok(None) => crate::hang::watched(&target.display().to_string(), &|_, _, _| {}, move |_| {
            Ok((crate::usage::measure(&t), crate::status::snapshots_of(&t)))
        }),
        Ok(Some(m)) => Err(anyhow::anyhow!(
            "a FUSE filesystem is on its path: {}",
            m.describe()
        )),
        Err(e) => Err(e),
    };
    let (usage, snaps) = match looked {
        Ok((u, s)) => (u, s),
        Err(e) => {
            out += &format!("  on disk:     not looked at: {e:#}\n");
            return out;
        }
    };
    out += &match usage {
        Ok(u) => format!(
            "  on disk:     {}, {}, {}\n",
            HumanBytes(u.bytes),
            count(u.files, "file"),
            count(u.dirs, "directory")
        ),
        Err(e) => format!("  on disk:     cannot be read: {e}\n"),
    };
    out += &snapshots_lines(&snaps);
    out
}

fn snapshots_lines(snaps: &[crate::status::SnapshotStatus]) -> String {
    let mut out = String::new();
    match snaps.len() {
        0 => out += "  snapshots:   none\n",
        n => {
            let size: u64 = snaps.iter().map(|c| c.size).sum();
            out += &format!(
                "  snapshots:   {n} ({}) <- delete with `asdfs snapshots clean` or `asd c`\n",
                HumanBytes(size)
            );
            for c in snaps {
                out += &format!(
                    "               {} {} ({})\n",
                    c.taken,
                    c.path.display(),
                    HumanBytes(c.size)
                );
            }
        }
    }
    out
}

fn ago(secs: u64) -> String {
    format!("{} ago", HumanDuration(Duration::from_secs(secs)))
}

/// The text form of a status.
/// The RAM budget (design.md §2.1): limit, use, and what eviction and pressure did.
fn ram_line(r: &crate::status::RamBudget, log_reserve: u64) -> String {
    if r.limit_bytes == 0 {
        return String::new();
    }
    // The store log's reserve counts against the limit: said, so that "0 B in RAM" beside
    // "8 MiB used" does not puzzle (QA).
    let reserve = if log_reserve > 0 && log_reserve <= r.used_bytes {
        format!(" (the store log's reserve {})", HumanBytes(log_reserve))
    } else {
        String::new()
    };
    format!(
        "  RAM limit:   {} used{reserve} of {}, {} not on disk, {} evictable; {} evicted ({}), {} pressure flush{}\n",
        HumanBytes(r.used_bytes),
        HumanBytes(r.limit_bytes),
        HumanBytes(r.dirty_bytes),
        HumanBytes(r.evictable_bytes),
        count(r.evictions, "file"),
        HumanBytes(r.evicted_bytes),
        r.pressure_flushes,
        if r.pressure_flushes == 1 { "" } else { "es" },
    )
}

pub fn render(s: &Status) -> String {
    if s.state == DEAD {
        let why = s.unclean_start.as_deref().unwrap_or_default();
        return format!("{}: dead\n  {why}\n", s.target.display());
    }
    let mut out = format!(
        "{}: {} ({}), pid {}\n",
        s.target.display(),
        s.state,
        s.mode,
        s.pid
    );
    if !s.data_path.is_empty() {
        out += &format!("  data path:   {}\n", s.data_path);
    }
    if !s.busy_files.is_empty() {
        out += &format!(
            "  busy files:  {} kept changing while the last flush copied them; their previous version stays on disk until a later flush: {}\n",
            s.busy_files.len(),
            s.busy_files.join(", ")
        );
    } else if s.busy_copies > 0 {
        out += &format!(
            "  busy files:  none now ({} times a file was left for a later flush)\n",
            s.busy_copies
        );
    }
    out += &format!(
        "  store:       {} ({} in RAM)\n",
        s.store.display(),
        HumanBytes(s.ram_bytes)
    );
    if s.store_size_bytes > 0 {
        let log = if s.log_bytes + s.log_reserve_bytes > 0 {
            format!(
                "; {} reserved for the store log ({} written)",
                HumanBytes(s.log_reserve_bytes),
                HumanBytes(s.log_bytes)
            )
        } else {
            String::new()
        };
        out += &format!(
            "  store room:  {} of {} used ({}%), {} free{log}\n",
            HumanBytes(s.store_used_bytes),
            HumanBytes(s.store_size_bytes),
            s.store_used_bytes * 100 / s.store_size_bytes,
            HumanBytes(s.store_free_bytes),
        );
    }
    out += &ram_line(&s.ram, s.log_reserve_bytes);
    if let Some(w) = &s.store_warning {
        out += &format!("  WARNING:     {w}\n");
    }
    out += &match &s.disk {
        Some(d) => format!(
            "  on disk:     {}, {}, {}{}\n",
            HumanBytes(d.bytes),
            count(d.files, "file"),
            count(d.dirs, "directory"),
            if d.generation == s.generation {
                ""
            } else {
                " (before the last flush; measuring)"
            }
        ),
        None => "  on disk:     being measured\n".to_string(),
    };
    let oldest = s
        .oldest_change_secs
        .map(|a| format!(", oldest change {}", ago(a)))
        .unwrap_or_default();
    out += &format!(
        "  not on disk: {} ({}), {}{oldest}\n",
        count(s.dirty_files, "file"),
        HumanBytes(s.dirty_bytes),
        count(s.dirty_dirs, "directory")
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match &s.flushing {
        Some(p) if p.bytes_total > 0 => {
            out += &format!(
                "  flushing:    {} of {} written\n",
                HumanBytes(p.bytes_done),
                HumanBytes(p.bytes_total)
            )
        }
        Some(_) => {
            out += &format!(
                "  flushing:    under way: {} ({}) to write\n",
                count(s.dirty_files, "file"),
                HumanBytes(s.dirty_bytes)
            )
        }
        None => {}
    }
    match &s.last_flush {
        Some(f) if f.ok => {
            out += &format!(
                "  last flush:  {}, ok: {}, {} in {} (generation {})\n",
                ago(now.saturating_sub(f.at)),
                count(f.files, "file"),
                HumanBytes(f.bytes),
                took(f.took_ms),
                f.generation
            )
        }
        Some(f) => {
            out += &format!(
                "  last flush:  {}, FAILED ({} attempts): {}\n",
                ago(now.saturating_sub(f.at)),
                s.flush_failures,
                f.error.as_deref().unwrap_or("?")
            )
        }
        None if s.flushing.is_some() => {
            out += "  last flush:  none since mount (the first is under way)\n"
        }
        None => out += "  last flush:  none since mount\n",
    }
    let every = HumanDuration(Duration::from_secs(s.flush_interval_secs));
    match s.next_flush_secs {
        Some(n) => {
            out += &format!(
                "  next flush:  in {} (every {every})\n",
                HumanDuration(Duration::from_secs(n))
            )
        }
        None => {
            out += &format!("  next flush:  at the final unmount (every {every} while mounted)\n")
        }
    }
    out += &format!("  fsync:       {}\n", s.fsync);
    out += &format!(
        "  written:     {} by programs, {} to disk\n",
        HumanBytes(s.bytes_written),
        HumanBytes(s.bytes_flushed)
    );
    out += &format!("  open files:  {}\n", s.open_files);
    out += &format!("  backup:      {}\n", s.backup);
    if let Some(u) = &s.unclean_start {
        out += &format!("  at start:    {u}\n");
    }
    out += &snapshots_lines(&s.crash_snapshots);
    if let Some(v) = &s.salvaged {
        out += &format!("  SALVAGED:    {v}\n");
    }
    for c in &s.conflicts {
        out += &format!("  CONFLICT:    changed on disk behind asdfs, disk version kept: {c}\n");
    }
    if s.log_failures > 0 {
        out += &format!(
            "  WARNING:     {} changes could not be logged to the RAM store\n",
            s.log_failures
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12: a flush a running daemon salvaged is shown, in the text and the JSON.
    #[test]
    fn a_salvaged_flush_is_shown() {
        let s = Status {
            target: "/srv/t".into(),
            salvaged: Some("flush 7 could not be completed (x)".into()),
            ..Status::default()
        };
        assert!(
            render(&s).contains("  SALVAGED:    flush 7 could not be completed (x)\n"),
            "{}",
            render(&s)
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["salvaged"], "flush 7 could not be completed (x)");
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back.salvaged, s.salvaged);
    }

    /// The RAM line says that the store log's reserve is part of what is used (QA: "0 B
    /// in RAM" beside "8.00 MiB used" puzzled a new user).
    #[test]
    fn the_ram_line_names_the_log_reserve_in_what_is_used() {
        let s = Status {
            target: "/srv/t".into(),
            ram_bytes: 0,
            log_reserve_bytes: 8 << 20,
            ram: crate::status::RamBudget {
                limit_bytes: 64 << 20,
                used_bytes: 8 << 20,
                ..Default::default()
            },
            ..Status::default()
        };
        let text = render(&s);
        assert!(
            text.contains(
                "  RAM limit:   8.00 MiB used (the store log's reserve 8.00 MiB) of 64.00 MiB,"
            ),
            "{text}"
        );
    }
}
