//! `asdfs status --format prometheus`: the status of every target in Prometheus's text
//! exposition format, one series per target (label `target`), for a scrape or for
//! node_exporter's textfile collector (`asdfs status --format prometheus > FILE.prom`).

use crate::status::Status;
use std::fmt::Write;

/// One metric: name, type, help, and its value for a status.
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Status) -> Option<f64>,
}

const METRICS: &[Metric] = &[
    Metric {
        name: "asdfs_dirty_bytes",
        kind: "gauge",
        help: "Bytes of file data changed in RAM and not yet on disk.",
        value: |s| Some(s.dirty_bytes as f64),
    },
    Metric {
        name: "asdfs_dirty_files",
        kind: "gauge",
        help: "Files changed in RAM and not yet on disk.",
        value: |s| Some(s.dirty_files as f64),
    },
    Metric {
        name: "asdfs_written_bytes_total",
        kind: "counter",
        help: "Bytes programs wrote to the target since it was mounted.",
        value: |s| Some(s.bytes_written as f64),
    },
    Metric {
        name: "asdfs_flushed_bytes_total",
        kind: "counter",
        help: "Bytes flushes wrote to disk since the target was mounted.",
        value: |s| Some(s.bytes_flushed as f64),
    },
    Metric {
        name: "asdfs_store_bytes",
        kind: "gauge",
        help: "RAM used by file data in the store.",
        value: |s| Some(s.ram_bytes as f64),
    },
    Metric {
        name: "asdfs_ram_limit_bytes",
        kind: "gauge",
        help: "The most RAM the target's store may use (0: its tmpfs's size).",
        value: |s| Some(s.ram.limit_bytes as f64),
    },
    Metric {
        name: "asdfs_ram_used_bytes",
        kind: "gauge",
        help: "RAM the store uses: file data, the store log and its reserve.",
        value: |s| Some(s.ram.used_bytes as f64),
    },
    Metric {
        name: "asdfs_ram_evictable_bytes",
        kind: "gauge",
        help: "Clean files in RAM that nothing holds open: what eviction could free now.",
        value: |s| Some(s.ram.evictable_bytes as f64),
    },
    Metric {
        name: "asdfs_evictions_total",
        kind: "counter",
        help: "Clean files dropped from RAM since the mount.",
        value: |s| Some(s.ram.evictions as f64),
    },
    Metric {
        name: "asdfs_pressure_flushes_total",
        kind: "counter",
        help: "Flushes started early because changed data pressed on the RAM limit.",
        value: |s| Some(s.ram.pressure_flushes as f64),
    },
    Metric {
        name: "asdfs_flush_generation",
        kind: "counter",
        help: "Completed flushes (the disk copy's generation).",
        value: |s| Some(s.generation as f64),
    },
    Metric {
        name: "asdfs_flush_failures",
        kind: "gauge",
        help: "Failed flush attempts since the last successful flush.",
        value: |s| Some(f64::from(s.flush_failures)),
    },
    Metric {
        name: "asdfs_last_flush_duration_seconds",
        kind: "gauge",
        help: "How long the last successful flush took.",
        value: |s| {
            let f = s.last_flush.as_ref().filter(|f| f.ok)?;
            Some(f.took_ms as f64 / 1000.0)
        },
    },
    Metric {
        name: "asdfs_last_flush_timestamp_seconds",
        kind: "gauge",
        help: "When the last flush ended (successful or not), in seconds since the epoch.",
        value: |s| s.last_flush.as_ref().map(|f| f.at as f64),
    },
    Metric {
        name: "asdfs_last_flush_success",
        kind: "gauge",
        help: "1 if the last flush succeeded, 0 if it failed.",
        value: |s| s.last_flush.as_ref().map(|f| f64::from(u8::from(f.ok))),
    },
    Metric {
        name: "asdfs_open_files",
        kind: "gauge",
        help: "Files programs hold open on the target.",
        value: |s| Some(s.open_files as f64),
    },
];

/// The exposition text for these statuses.
pub fn render(reports: &[Status]) -> String {
    let mut out = String::new();
    for m in METRICS {
        let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(out, "# TYPE {} {}", m.name, m.kind);
        for s in reports {
            if let Some(v) = (m.value)(s) {
                let _ = writeln!(out, "{}{{target=\"{}\"}} {v}", m.name, label(s));
            }
        }
    }
    out
}

/// The target as a label value: `\`, `"` and newline escaped.
fn label(s: &Status) -> String {
    s.target
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_series_per_target_with_escaped_labels() {
        let s = Status {
            target: "/srv/a \"b\"".into(),
            dirty_bytes: 4096,
            ..Status::default()
        };
        let text = render(&[s]);
        assert!(text.contains("asdfs_dirty_bytes{target=\"/srv/a \\\"b\\\"\"} 4096\n"));
        assert!(text.contains("# TYPE asdfs_written_bytes_total counter\n"));
        assert!(!text.contains("asdfs_last_flush_duration_seconds{"));
    }
}
