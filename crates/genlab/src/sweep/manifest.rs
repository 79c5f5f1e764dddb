//! A sweep's `manifest.toml`: every run's name, preset, seed, overrides and
//! state. Tasks on this machine or on a cluster's nodes update it under a
//! lock (the kernel's flock, held for the moment of one rewrite) and write it
//! atomically, so readers always see a whole file. States read off the run
//! directories ([`observe`]) win over recorded ones, except "failed", which
//! only a task can know.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::EvalLevel;

/// The manifest's file name inside a sweep directory.
pub const FILE: &str = "manifest.toml";
const LOCK: &str = ".genlab-manifest-lock";

/// Where a run of a sweep stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Not started.
    Pending,
    /// A task is working on it now.
    Running,
    /// Stopped before the end; the next task resumes it.
    Interrupted,
    /// Trained; its evaluation or inpainting is still to do.
    Trained,
    /// Everything the sweep asks of it is done.
    Finished,
    /// Its task ended with an error (see `error`); the next task tries again.
    Failed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Interrupted => "interrupted",
            RunState::Trained => "trained",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
        }
    }
}

/// One run's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunEntry {
    /// Its task number (`genlab sweep FILE --task INDEX`, the Slurm array index).
    pub index: usize,
    pub name: String,
    pub preset: String,
    pub seed: u64,
    /// Preset and swept values: runs of one group differ only in their seed.
    pub group: String,
    /// The run's values of the swept keys.
    pub overrides: BTreeMap<String, toml::Value>,
    /// Every `--set` assignment the run was made with.
    pub set: Vec<String>,
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The sweep file's stem.
    pub sweep: String,
    pub eval: EvalLevel,
    pub inpaint: bool,
    /// The keys that vary between groups.
    pub swept: Vec<String>,
    /// Slurm job ids submitted for this sweep, oldest first.
    #[serde(default)]
    pub slurm_jobs: Vec<String>,
    #[serde(default)]
    pub run: Vec<RunEntry>,
}

impl Manifest {
    /// Reads the manifest of the sweep directory `dir`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(FILE);
        let text = crate::bounded::read_text(&path, 64 << 20, "sweep manifest")?;
        toml::from_str(&text).map_err(|e| {
            crate::error::usage(anyhow::anyhow!(
                "{}: not a genlab sweep manifest ({}); remove the sweep directory and run the sweep again",
                path.display(),
                crate::config::one_line(&e.to_string())
            ))
        })
    }

    fn to_text(&self) -> Result<String> {
        Ok(format!(
            "# genlab sweep manifest: one [[run]] per run; `genlab sweep status DIR` refreshes the states.\n{}",
            toml::to_string(self)?
        ))
    }

    /// Why `planned` is another sweep than this one, if it is.
    pub fn differs_from(&self, planned: &Manifest) -> Option<String> {
        if self.eval != planned.eval {
            return Some(format!(
                "eval = \"{:?}\" there, \"{:?}\" here",
                self.eval, planned.eval
            ));
        }
        if self.inpaint != planned.inpaint {
            return Some(format!(
                "inpaint = {} there, {} here",
                self.inpaint, planned.inpaint
            ));
        }
        if self.run.len() != planned.run.len() {
            return Some(format!(
                "{} runs there, {} here",
                self.run.len(),
                planned.run.len()
            ));
        }
        for (a, b) in self.run.iter().zip(&planned.run) {
            if a.name != b.name || a.set != b.set || a.preset != b.preset {
                return Some(format!(
                    "run {} is {} with {} there, {} with {} here",
                    a.index,
                    a.name,
                    a.set.join(" "),
                    b.name,
                    b.set.join(" ")
                ));
            }
        }
        None
    }

    /// Reads, changes and rewrites the manifest of `dir` under its lock (a
    /// missing manifest starts empty).
    pub fn update<T>(dir: &Path, change: impl FnOnce(&mut Manifest) -> Result<T>) -> Result<T> {
        let lock_path = dir.join(LOCK);
        let lock: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        let mut manifest = if dir.join(FILE).is_file() {
            Manifest::read(dir)?
        } else {
            Manifest {
                sweep: String::new(),
                eval: EvalLevel::None,
                inpaint: false,
                swept: Vec::new(),
                slurm_jobs: Vec::new(),
                run: Vec::new(),
            }
        };
        let out = change(&mut manifest)?;
        crate::atomic::write_atomic(&dir.join(FILE), manifest.to_text()?.as_bytes())?;
        let _ = lock.unlock();
        Ok(out)
    }

    /// Records run `index`'s state (and error line).
    pub fn record(dir: &Path, index: usize, state: RunState, error: Option<String>) -> Result<()> {
        Manifest::update(dir, |m| {
            if let Some(entry) = m.run.iter_mut().find(|r| r.index == index) {
                entry.state = state;
                entry.error = error;
            }
            Ok(())
        })
    }
}

/// Whether another process holds the run's lock (trains or evaluates it now).
pub fn is_busy(run: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .write(true)
        .open(run.join(crate::run::lock::LOCK_FILE))
    else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

/// A run's state as its directory shows it; `recorded` decides only between
/// "failed" and "interrupted" (both leave a half-made run).
pub fn observe(run: &Path, finished: bool, recorded: RunState) -> RunState {
    if finished {
        RunState::Finished
    } else if is_busy(run) {
        RunState::Running
    } else if run.join("weights.safetensors").is_file() {
        if recorded == RunState::Failed {
            RunState::Failed
        } else {
            RunState::Trained
        }
    } else if recorded == RunState::Failed {
        RunState::Failed
    } else if run.join("config.toml").is_file() {
        RunState::Interrupted
    } else {
        RunState::Pending
    }
}
