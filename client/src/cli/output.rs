//! What the `jsonkv` tool prints: each result as one compact JSON line on stdout, and how it
//! ends when it does not succeed ([`Exit`]: one line on stderr and the exit status).

use std::io::{self, Write};

use jsonkv_client::Error;
use serde::Serialize;

/// How the process ends when it does not succeed: the line for stderr and the exit status.
/// Library errors, local input problems and "not found" all end up here, so that `main` is the
/// one place that prints them.
pub struct Exit {
    /// `None` when there is nothing to say (stdout's reader went away).
    pub line: Option<String>,
    pub code: u8,
}

impl Exit {
    pub fn not_found(key: &str) -> Exit {
        Exit {
            line: Some(format!("key not found: {key}")),
            code: 1,
        }
    }

    pub fn error(message: impl std::fmt::Display) -> Exit {
        Exit {
            line: Some(format!("error: {message}")),
            code: 1,
        }
    }
}

impl From<Error> for Exit {
    fn from(error: Error) -> Exit {
        let code = match error {
            Error::PreconditionFailed { .. } => 3,
            _ => 1,
        };
        Exit {
            code,
            ..Exit::error(error)
        }
    }
}

impl From<io::Error> for Exit {
    fn from(error: io::Error) -> Exit {
        // A reader that went away (`jsonkv watch k | head -1`) is how such pipes normally end.
        if error.kind() == io::ErrorKind::BrokenPipe {
            return Exit {
                line: None,
                code: 0,
            };
        }
        Exit::error(format!("cannot write output: {error}"))
    }
}

/// One compact JSON line on stdout, flushed at once so that a watch is seen as it happens.
pub fn print_line(line: &impl Serialize) -> Result<(), Exit> {
    print_text(&serde_json::to_string(line).map_err(Exit::error)?)
}

/// Prints `text`, one line of JSON already written, and flushes it.
pub fn print_text(text: &str) -> Result<(), Exit> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

#[derive(Serialize)]
pub struct RevisionLine {
    pub revision: i64,
}
