//! Per-epoch progress: a bar (batches, loss, samples/s, ETA) on a terminal,
//! one plain line per epoch otherwise.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress bars should be drawn (stdout is a terminal).
pub fn interactive() -> bool {
    std::io::stdout().is_terminal()
}

/// A bar counting `total` items on a terminal (hidden otherwise).
pub fn count_bar(total: u64, label: &str, interactive: bool) -> ProgressBar {
    if !interactive {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Progress of one epoch.
pub struct EpochProgress {
    bar: Option<ProgressBar>,
    label: String,
    start: Instant,
    samples: usize,
}

/// What an epoch took.
#[derive(Debug, Clone, Copy)]
pub struct EpochTiming {
    pub seconds: f64,
    pub samples_per_second: f64,
}

impl EpochProgress {
    pub fn start(epoch: usize, epochs: usize, batches: usize, interactive: bool) -> Self {
        let label = format!(
            "epoch {epoch:>width$}/{epochs}",
            width = epochs.to_string().len()
        );
        let bar = interactive.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar
        });
        EpochProgress {
            bar,
            label,
            start: Instant::now(),
            samples: 0,
        }
    }

    /// Records one finished batch; `loss` is shown in the bar.
    pub fn batch(&mut self, samples: usize, loss: Option<f64>) {
        self.samples += samples;
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let rate = self.samples as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
            match loss {
                Some(l) => bar.set_message(format!("loss {l:.4} {rate:.0} samples/s")),
                None => bar.set_message(format!("{rate:.0} samples/s")),
            }
        }
    }

    /// Prints a line that does not disturb the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// The training time so far (call it before per-epoch evaluation, so
    /// that evaluation does not count as training).
    pub fn timing(&self) -> EpochTiming {
        let seconds = self.start.elapsed().as_secs_f64();
        EpochTiming {
            seconds,
            samples_per_second: self.samples as f64 / seconds.max(1e-9),
        }
    }

    /// Ends the epoch and prints its summary line with the training timing.
    pub fn finish(self, timing: EpochTiming, summary: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        println!(
            "{}  {:.1}s  {:.0} samples/s  {summary}",
            self.label, timing.seconds, timing.samples_per_second
        );
    }
}
