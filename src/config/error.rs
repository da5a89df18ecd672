//! The error every config reader returns, and the place in a file it points at. Its message is
//! always one line: `<file>:<line>:<col>: <problem>`, `<file>:<line>: <problem>`, or
//! `<file>: <problem>` when no line is known (a file that cannot be read, or a `Config` built
//! in code and checked with `validate`).

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a config file: 1-based line, and 1-based column (in characters) when known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub line: usize,
    pub column: Option<usize>,
}

impl Place {
    /// A whole line.
    pub fn line(line: usize) -> Place {
        Place { line, column: None }
    }

    /// The place of byte `offset` in `text`; an offset past the end means the end.
    pub fn of_offset(text: &str, offset: usize) -> Place {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Place {
            line: before.matches('\n').count() + 1,
            column: Some(before[line_start..].chars().count() + 1),
        }
    }
}

/// The start of every line of a text, to find the places of many offsets in one pass each
/// (`Place::of_offset` reads the text up to the offset: quadratic over a file's targets).
pub(crate) struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub fn new(text: &'a str) -> Lines<'a> {
        let breaks = text.match_indices('\n').map(|(i, _)| i + 1);
        Lines {
            text,
            starts: std::iter::once(0).chain(breaks).collect(),
        }
    }

    /// `Place::of_offset(text, offset)`, in O(log lines + length of the line).
    pub fn place(&self, offset: usize) -> Place {
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= end);
        let start = self.starts[line - 1];
        Place {
            line,
            column: Some(self.text[start..end].chars().count() + 1),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "{}:{column}", self.line),
            None => write!(f, "{}", self.line),
        }
    }
}

/// A config file that cannot be used, and why. Nothing is mounted from a config that gave one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", location(file, place))]
pub struct ConfigError {
    file: PathBuf,
    place: Option<Place>,
    problem: String,
}

fn location(file: &Path, place: &Option<Place>) -> String {
    match place {
        Some(place) => format!("{}:{place}", file.display()),
        None => file.display().to_string(),
    }
}

impl ConfigError {
    /// An error in `file` at `place`. Line breaks in `problem` are replaced so that the
    /// message stays on one line.
    pub fn new(file: &Path, place: Option<Place>, problem: impl Into<String>) -> ConfigError {
        let problem: String = problem.into();
        ConfigError {
            file: file.to_path_buf(),
            place,
            problem: problem.replace(['\n', '\r'], " "),
        }
    }

    /// The file the error is about.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Where in the file, when known.
    pub fn place(&self) -> Option<Place> {
        self.place
    }

    /// The problem, without the file and place.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}
