//! The live progress line (indicatif): elapsed time, joined participants,
//! received packets per second (averaged over the last 2 s) and recent p99
//! latency. Drawn on stderr,
//! only when it is a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress line, or nothing when disabled.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A line for a run of `total`; `enabled: false` draws nothing.
    pub fn new(total: Duration, enabled: bool) -> Self {
        let target = if enabled {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total.as_millis() as u64), target);
        // The template is a constant known to parse.
        let style = ProgressStyle::with_template("{prefix:>5} [{bar:24}] {msg}")
            .expect("valid progress template")
            .progress_chars("=> ");
        bar.set_style(style);
        Progress { bar }
    }

    /// A disabled line.
    pub fn hidden() -> Self {
        Self::new(Duration::from_secs(1), false)
    }

    /// Refresh the line.
    pub fn update(&self, elapsed: Duration, joined: usize, total: usize, pps: f64, p99_us: u64) {
        self.bar.set_position(elapsed.as_millis() as u64);
        self.bar
            .set_prefix(format!("{:.1}s", elapsed.as_secs_f64()));
        self.bar.set_message(format!(
            "joined {joined}/{total}  received {pps:>7.0} packets/s (2 s average)  latency p99 {:.2} ms",
            p99_us as f64 / 1000.0
        ));
    }

    /// A one-off status message (phases of the run).
    pub fn message(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }

    /// Remove the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
