//! Configuration problems, each with the file and line it comes from.
//!
//! Loading `rules/` or `schemas/` never stops at the first problem: every problem found is
//! collected so that an operator fixes them all in one pass (`pom check` prints them all).

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong in an operator-edited file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem can be placed.
    pub line: Option<usize>,
    /// What is wrong, in words an operator understands.
    pub message: String,
}

impl Problem {
    /// A problem at a byte offset of a file's text (the line is computed from it).
    pub fn at(file: &Path, text: &str, offset: Option<usize>, message: impl Into<String>) -> Self {
        Problem {
            file: file.to_path_buf(),
            line: offset.map(|o| line_of(text, o)),
            message: message.into(),
        }
    }

    /// A problem about a whole file.
    pub fn in_file(file: &Path, message: impl Into<String>) -> Self {
        Problem {
            file: file.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }

    /// A TOML syntax or shape error, placed where the parser says.
    pub fn from_toml(file: &Path, text: &str, err: &toml::de::Error) -> Self {
        let message = err.message().trim().to_string();
        Problem::at(file, text, err.span().map(|s| s.start), message)
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", .0.len(), render(.0))]
pub struct Problems(pub Vec<Problem>);

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
