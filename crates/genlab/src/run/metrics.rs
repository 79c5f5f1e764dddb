//! `metrics.jsonl`: one JSON object per epoch, appended line-atomically.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

/// The metrics log of a run.
#[derive(Debug, Clone)]
pub struct MetricsLog {
    pub path: PathBuf,
}

impl MetricsLog {
    pub fn new(path: PathBuf) -> Self {
        MetricsLog { path }
    }

    /// Appends one row as a single write of a whole line, then syncs, so a
    /// crash leaves at most a torn last line (which [`MetricsLog::read`] drops).
    pub fn append(&self, row: &Map<String, Value>) -> Result<()> {
        let mut line = serde_json::to_string(row).context("serialising a metrics row")?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        file.write_all(line.as_bytes())
            .and_then(|_| file.sync_data())
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }

    /// Every complete row; a torn (unterminated or unparsable) last line is dropped.
    pub fn read(&self) -> Result<Vec<Map<String, Value>>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        let mut rows = Vec::new();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..i],
            None => "",
        };
        for (n, line) in complete.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row: Map<String, Value> = serde_json::from_str(line).with_context(|| {
                format!(
                    "{}: line {} is not a JSON object",
                    self.path.display(),
                    n + 1
                )
            })?;
            rows.push(row);
        }
        Ok(rows)
    }

    /// Rewrites the log with only the rows whose epoch is at most `last_epoch`
    /// (used when resuming from a checkpoint older than the log's tail).
    pub fn truncate_to_epoch(&self, last_epoch: u64) -> Result<()> {
        let kept: Vec<String> = self
            .read()?
            .into_iter()
            .filter(|r| {
                r.get("epoch")
                    .and_then(Value::as_u64)
                    .is_some_and(|e| e <= last_epoch)
            })
            .map(|r| serde_json::to_string(&r).expect("serialisable"))
            .collect();
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        crate::atomic::write_atomic(&self.path, text.as_bytes())
    }

    /// One column over epochs: (epoch, value) for every row that has `key`.
    /// [`MetricsLog::series`] as a plot line called `name`.
    pub fn named_series(&self, key: &str, name: &str) -> Result<crate::viz::Series> {
        Ok(crate::viz::Series {
            name: name.into(),
            points: self.series(key)?,
        })
    }

    pub fn series(&self, key: &str) -> Result<Vec<(f64, f64)>> {
        Ok(self
            .read()?
            .iter()
            .filter_map(|r| Some((r.get("epoch")?.as_f64()?, r.get(key)?.as_f64()?)))
            .collect())
    }
}
