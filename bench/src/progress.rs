//! The progress bar on stderr: one bar whose stage (warm-up, measuring, opening watchers...)
//! changes during a run. Hidden with --quiet or when stderr is not a terminal, so that logs and
//! CI output stay clean.

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    unit: Cell<Unit>,
}

/// What a stage counts.
#[derive(Clone, Copy)]
pub enum Unit {
    Millis,
    Items,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        };
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:40}] {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar,
            unit: Cell::new(Unit::Items),
        }
    }

    /// Starts a stage that counts up to `length` milliseconds or items (requests, watchers).
    pub fn stage(&self, name: &str, length: u64, unit: Unit) {
        self.bar.set_prefix(name.to_owned());
        self.bar.set_length(length);
        self.unit.set(unit);
        self.set(0, String::new());
    }

    /// Moves to `position`, with `extra` (e.g. the current rate) after the count.
    pub fn set(&self, position: u64, extra: String) {
        let length = self.bar.length().unwrap_or(0);
        let count = match self.unit.get() {
            Unit::Millis => format!("{:.1}/{:.1} s", position as f64 / 1e3, length as f64 / 1e3),
            Unit::Items => format!("{position}/{length}"),
        };
        self.bar.set_position(position);
        self.bar.set_message(format!("{count} {extra}"));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
