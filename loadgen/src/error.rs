//! Errors a user of the load generator can hit, each saying what to do.

use std::fmt;

/// Why a run could not start or finish.
#[derive(Debug)]
pub enum LoadgenError {
    /// A scenario value (flag or TOML key) is out of range or unknown.
    InvalidScenario(String),
    /// The scenario file could not be read.
    ScenarioFile {
        /// The path given.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// `--slo` could not be parsed.
    InvalidSlo(String),
    /// `--target`: the external server could not be reached, refused a
    /// request, or answered something the load generator cannot use.
    Target(String),
    /// The embedded engine refused to start or to open a room.
    Engine(piazza::Error),
    /// The operating system refused a socket, a thread or a file.
    Io(String),
}

impl fmt::Display for LoadgenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadgenError::InvalidScenario(m) => write!(f, "invalid scenario: {m}"),
            LoadgenError::ScenarioFile { path, message } => {
                write!(f, "cannot read scenario file {path}: {message}")
            }
            LoadgenError::InvalidSlo(m) => write!(
                f,
                "invalid --slo: {m} (example: --slo p99_ms=5,loss=0.001,freezes=0)"
            ),
            LoadgenError::Target(m) => write!(f, "target server: {m}"),
            LoadgenError::Engine(e) => write!(f, "engine: {e}"),
            LoadgenError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for LoadgenError {}

impl From<piazza::Error> for LoadgenError {
    fn from(e: piazza::Error) -> Self {
        LoadgenError::Engine(e)
    }
}

impl From<std::io::Error> for LoadgenError {
    fn from(e: std::io::Error) -> Self {
        LoadgenError::Io(format!("operating system error: {e}"))
    }
}
