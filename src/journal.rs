//! Where the daemon's log goes: the systemd journal when there is one, in its native
//! protocol (one datagram of `KEY=value` lines to /run/systemd/journal/socket, see
//! systemd's "Native Journal Protocol"), with `SYSLOG_IDENTIFIER=asdfs` and the fields
//! `ASDFS_TARGET`, `ASDFS_GENERATION`, `ASDFS_PHASE` (and any other event field as
//! `ASDFS_<NAME>`); otherwise syslog(3). The journal stamps the time itself.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// The journal's socket; `ASDFS_JOURNAL_SOCKET` names another (tests).
pub fn socket_path() -> PathBuf {
    std::env::var_os("ASDFS_JOURNAL_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/systemd/journal/socket"))
}

/// A layer sending each event to the journal, or to syslog when there is no journal.
pub enum SystemLog {
    Journal(UnixDatagram),
    Syslog,
}

impl SystemLog {
    /// The journal if its socket answers, else syslog.
    pub fn open() -> SystemLog {
        match Self::journal() {
            Some(j) => j,
            None => {
                // SAFETY: a static NUL-terminated identifier, kept for the process's life.
                unsafe { libc::openlog(c"asdfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
                SystemLog::Syslog
            }
        }
    }

    /// The journal, if its socket exists and accepts datagrams.
    pub fn journal() -> Option<SystemLog> {
        let s = UnixDatagram::unbound().ok()?;
        s.connect(socket_path()).ok()?;
        // A journal that stopped reading (at shutdown) must not hold up a final flush: a
        // line it cannot take within this time is dropped.
        s.set_write_timeout(Some(std::time::Duration::from_millis(100)))
            .ok()?;
        Some(SystemLog::Journal(s))
    }
}

/// syslog's priority of a tracing level.
fn priority(level: &tracing::Level) -> i32 {
    match *level {
        tracing::Level::ERROR => libc::LOG_ERR,
        tracing::Level::WARN => libc::LOG_WARNING,
        tracing::Level::INFO => libc::LOG_INFO,
        _ => libc::LOG_DEBUG,
    }
}

/// An event's message and fields.
#[derive(Default)]
struct Fields {
    message: String,
    /// (name, value), in order.
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

impl Fields {
    /// The message with the fields after it, as the terminal shows them.
    fn line(&self) -> String {
        let mut line = self.message.clone();
        for (k, v) in &self.rest {
            let _ = write!(line, " {k}={v}");
        }
        line
    }
}

/// One journal field: `KEY=value\n`, or the binary form for values with a newline.
fn field(out: &mut Vec<u8>, key: &str, value: &str) {
    if value.contains('\n') {
        out.extend_from_slice(key.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    } else {
        out.extend_from_slice(format!("{key}={value}").as_bytes());
    }
    out.push(b'\n');
}

/// An event field's journal name: `ASDFS_` and the name in capitals, other characters `_`.
fn journal_key(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("ASDFS_{upper}")
}

/// The datagram for one event.
pub fn datagram(level: &tracing::Level, message: &str, fields: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    field(&mut out, "MESSAGE", message);
    field(&mut out, "PRIORITY", &priority(level).to_string());
    field(&mut out, "SYSLOG_IDENTIFIER", "asdfs");
    field(&mut out, "SYSLOG_PID", &std::process::id().to_string());
    for (k, v) in fields {
        field(&mut out, &journal_key(k), v);
    }
    out
}

impl<S: tracing::Subscriber> Layer<S> for SystemLog {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let level = event.metadata().level();
        match self {
            SystemLog::Journal(s) => {
                let _ = s.send(&datagram(level, &f.line(), &f.rest));
            }
            SystemLog::Syslog => {
                let Ok(text) = std::ffi::CString::new(f.line().replace('\0', " ")) else {
                    return;
                };
                // SAFETY: a constant format with one NUL-terminated string argument.
                unsafe { libc::syslog(priority(level), c"%s".as_ptr(), text.as_ptr()) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_carries_identifier_priority_and_fields() {
        let fields = vec![
            ("target".to_string(), "/var/log".to_string()),
            ("error".to_string(), "two\nlines".to_string()),
        ];
        let d = datagram(&tracing::Level::WARN, "flush failed", &fields);
        let text = String::from_utf8_lossy(&d);
        assert!(text.starts_with("MESSAGE=flush failed\nPRIORITY=4\nSYSLOG_IDENTIFIER=asdfs\n"));
        assert!(text.contains("ASDFS_TARGET=/var/log\n"));
        let mut binary = b"ASDFS_ERROR\n".to_vec();
        binary.extend_from_slice(&9u64.to_le_bytes());
        binary.extend_from_slice(b"two\nlines\n");
        assert!(d.windows(binary.len()).any(|w| w == binary));
    }
}
