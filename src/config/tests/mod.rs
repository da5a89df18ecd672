//! Tests of config reading: a table per format (`asd`, `native`), the shared rules on configs
//! built in code (`rules`), writing (`output`), files (`files`) and randomized mangled input
//! (`mangled`). Expected values come from asd's documented behaviour and the asdfs format,
//! not from this code's output.

mod asd;
mod files;
mod mangled;
mod native;
mod output;
mod rules;

use std::path::PathBuf;

use super::{Config, ConfigError, TargetSettings};

/// What reading a file should give.
enum Want {
    /// These targets (notes are checked separately).
    Targets(Vec<TargetSettings>),
    /// An error on this line whose message contains this text.
    Error(usize, &'static str),
}

/// A target with asd's defaults: everything as asdfs's defaults except VOLATILE=/tmp.
fn asd(path: &str) -> TargetSettings {
    TargetSettings {
        volatile: Some(PathBuf::from("/tmp")),
        ..TargetSettings::new(PathBuf::from(path))
    }
}

/// A target with asdfs's defaults.
fn native(path: &str) -> TargetSettings {
    TargetSettings::new(PathBuf::from(path))
}

/// `t` changed by `f`.
fn with(mut t: TargetSettings, f: impl FnOnce(&mut TargetSettings)) -> TargetSettings {
    f(&mut t);
    t
}

/// Compares one case's result with what it should give; returns a description of any
/// difference. `file` is the name the parser was given.
fn compare(
    case: &str,
    file: &str,
    got: Result<Config, ConfigError>,
    want: &Want,
) -> Option<String> {
    match (got, want) {
        (Ok(cfg), Want::Targets(targets)) if &cfg.targets == targets => None,
        (Err(e), Want::Error(line, text)) => {
            let msg = e.to_string();
            let prefix_ok = msg.starts_with(&format!("{file}:{line}:"));
            (!prefix_ok || !msg.contains(text) || e.place().map(|p| p.line) != Some(*line))
                .then(|| format!("{case}: wanted line {line} and {text:?}, got {msg:?}"))
        }
        (Ok(cfg), Want::Targets(targets)) => Some(format!(
            "{case}: wanted {targets:#?}\ngot {:#?}",
            cfg.targets
        )),
        (Ok(cfg), Want::Error(line, text)) => Some(format!(
            "{case}: wanted an error at line {line} ({text:?}), got {cfg:#?}"
        )),
        (Err(e), Want::Targets(_)) => Some(format!("{case}: wanted targets, got error {e}")),
    }
}

/// Runs a table, reporting every failing case at once.
fn run_table(
    file: &str,
    parse: impl Fn(&str) -> Result<Config, ConfigError>,
    cases: &[(&str, &str, Want)],
) {
    assert!(!cases.is_empty());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(case, text, want)| compare(case, file, parse(text), want))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
