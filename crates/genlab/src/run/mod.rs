//! Run directories: `config.toml`, `metrics.jsonl`, `checkpoints/`, `images/`.

pub mod checkpoint;
pub mod lock;
pub mod metrics;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic::write_atomic;
use crate::config::{RunConfig, parse_config, to_toml};

pub use checkpoint::{Checkpoint, TensorData};
pub use lock::RunLock;
pub use metrics::MetricsLog;

/// A run directory on disk.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// The default location: `runs/<family>-<preset>-<UTC time>`.
    pub fn default_path(family: &str, preset: &str) -> PathBuf {
        let now = time::OffsetDateTime::now_utc();
        let stamp = now
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .expect("formattable time");
        PathBuf::from("runs").join(format!("{family}-{preset}-{stamp}"))
    }

    /// Creates a new run directory. Refuses a directory that already has files,
    /// so nothing a user made is overwritten.
    pub fn create(root: &Path) -> Result<Self> {
        if root.exists() {
            // A genlab temporary or lock file left by a killed first try does not count.
            let occupied = std::fs::read_dir(root)
                .with_context(|| format!("cannot read {}", root.display()))?
                .flatten()
                .any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    !name.starts_with(crate::atomic::TEMP_PREFIX) && name != lock::LOCK_FILE
                });
            if occupied {
                if root.join("config.toml").is_file() {
                    crate::usage_bail!(
                        "{} is already a genlab run; choose another --out (genlab never overwrites a run)",
                        root.display()
                    );
                }
                crate::usage_bail!(
                    "{} exists and is not empty; choose another --out (genlab never writes into a directory it did not create)",
                    root.display()
                );
            }
        }
        // Only the directory itself: config.toml is written next, so a run
        // stopped in between leaves an empty directory that can be reused.
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let run = RunDir {
            root: root.to_path_buf(),
        };
        run.remove_stale_temporaries()?;
        Ok(run)
    }

    /// Opens an existing run, checking it is one.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            crate::usage_bail!("{}: no such run directory", root.display());
        }
        if !root.join("config.toml").is_file() {
            crate::usage_bail!(
                "{} is not a genlab run (it has no config.toml)",
                root.display()
            );
        }
        Ok(RunDir {
            root: root.to_path_buf(),
        })
    }

    /// Deletes temporary files that a killed writer left behind (a SIGKILL
    /// between creating a temporary file and renaming it). Called before a
    /// run is resumed, when no other genlab writes into it.
    pub fn remove_stale_temporaries(&self) -> Result<()> {
        for dir in [self.root.clone(), self.checkpoints(), self.images()] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(crate::atomic::TEMP_PREFIX)
                {
                    std::fs::remove_file(entry.path())
                        .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                }
            }
        }
        Ok(())
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The latest checkpoint (written every epoch).
    pub fn latest_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("latest.safetensors")
    }

    /// The best checkpoint by the model's validation criterion.
    /// The run's weights: `weights.safetensors` once training has finished,
    /// else the latest checkpoint. Returns the checkpoint and its path.
    pub fn load_weights(&self) -> anyhow::Result<(Checkpoint, PathBuf)> {
        let final_weights = self.root.join("weights.safetensors");
        let path = if final_weights.is_file() {
            final_weights
        } else if self.latest_checkpoint().is_file() {
            self.latest_checkpoint()
        } else {
            crate::usage_bail!(
                "{} has no weights yet (neither weights.safetensors nor checkpoints/latest.safetensors); train it first",
                self.root.display()
            );
        };
        let ck = Checkpoint::load(&path)
            .map_err(|e| {
                e.context(format!(
                    "{} cannot be used (its weights file is damaged; retrain the run or restore the file)",
                    self.root.display()
                ))
            })
            .map_err(crate::error::usage)?;
        let bad: Vec<&str> = ck
            .tensors
            .iter()
            .filter(|(_, t)| t.data.iter().any(|v| !v.is_finite()))
            .map(|(name, _)| name.as_str())
            .collect();
        if !bad.is_empty() {
            crate::usage_bail!(
                "{}: the weights hold NaN or infinite values (in {}); the run diverged, so retrain it with a lower learning rate",
                path.display(),
                bad.join(", ")
            );
        }
        Ok((ck, path))
    }

    pub fn best_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("best.safetensors")
    }

    pub fn metrics(&self) -> MetricsLog {
        MetricsLog::new(self.root.join("metrics.jsonl"))
    }

    /// Writes config.toml (which makes the directory a run), then the subdirectories.
    pub fn write_config<M: Serialize>(&self, config: &RunConfig<M>) -> Result<()> {
        write_atomic(&self.config_path(), to_toml(config)?.as_bytes())?;
        for sub in [self.checkpoints(), self.images()] {
            std::fs::create_dir_all(&sub)
                .with_context(|| format!("cannot create {}", sub.display()))?;
        }
        Ok(())
    }

    /// Reads config.toml; a damaged one is a usage error naming the file.
    pub fn read_config<M: DeserializeOwned>(&self) -> Result<RunConfig<M>> {
        parse_config(&self.config_path()).map_err(crate::error::usage)
    }

    /// The model family recorded in `config.toml`, read without knowing its schema.
    pub fn family(&self) -> Result<String> {
        let value = crate::config::read_toml(&self.config_path()).map_err(crate::error::usage)?;
        value
            .get("family")
            .and_then(|f| f.as_str())
            .map(str::to_string)
            .with_context(|| format!("{}: no family key", self.config_path().display()))
            .map_err(crate::error::usage)
    }
}
