//! `genlab sweep SWEEP.toml`: many runs described by one file (presets x
//! variants x a grid of `--set` values x seeds), each an ordinary run
//! directory under one sweep directory, handed to an executor: this machine
//! ([`local`]) or a Slurm job array ([`slurm`]). Every run is taken to its end
//! by [`crate::pipeline::finish_run`] in a task of its own (`genlab sweep FILE
//! --task I`), so each is also runnable and resumable alone, and running the
//! sweep again skips finished runs and resumes interrupted ones.
//!
//! A sweep directory holds `sweep.toml` (a copy of the file), `manifest.toml`
//! ([`manifest`]: run name, overrides, state), `runs/<name>/` and `logs/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{Overrides, one_line};
use crate::eval::EvalOptions;
use crate::inspect::InpaintOptions;
use crate::models::{self, TrainRequest};
use crate::pipeline::Steps;
use crate::presets;

pub mod aggregate;
pub mod local;
pub mod manifest;
pub mod slurm;
pub mod task;

use manifest::{Manifest, RunEntry};

/// The copy of the sweep file inside a sweep directory.
pub const SWEEP_FILE: &str = "sweep.toml";
/// Where the runs live inside a sweep directory.
pub const RUNS_DIR: &str = "runs";
/// Each task's output, one file per run.
pub const LOGS_DIR: &str = "logs";

/// How each run is evaluated after training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalLevel {
    /// Not evaluated (the training figures only).
    #[default]
    None,
    /// `reproduce --quick`'s lighter evaluation: seconds per run.
    Quick,
    /// `genlab eval`'s defaults.
    Full,
}

/// What a sweep file holds. Every key is checked: an unknown one is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Presets (or model families, meaning their seed presets).
    pub presets: Vec<String>,
    /// One run per seed of every combination.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Training epochs of every run (default: each preset's own).
    pub epochs: Option<u64>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// `mnist`, `fashion-mnist` or `idx:DIR`.
    pub dataset: Option<String>,
    /// `cpu`, `cuda` or `wgpu`.
    pub device: Option<String>,
    #[serde(default)]
    pub eval: EvalLevel,
    /// Inpaint every run that can (RBM, VAE) after training.
    #[serde(default)]
    pub inpaint: bool,
    /// Values every run gets (`model.beta = 0.5`).
    #[serde(default)]
    pub set: toml::Table,
    /// Every combination of these values (`model.latent = [2, 8, 16]`).
    #[serde(default)]
    pub grid: toml::Table,
    /// A list of value sets, each combined with the grid (`[[variants]]`).
    #[serde(default)]
    pub variants: Vec<toml::Table>,
    #[serde(default)]
    pub local: LocalSettings,
    #[serde(default)]
    pub slurm: slurm::SlurmSettings,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// Settings of the local executor.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// Runs at a time (default 1; `--jobs` wins).
    pub jobs: Option<usize>,
}

/// One run of a sweep, as planned.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    pub index: usize,
    pub name: String,
    pub preset: String,
    pub seed: u64,
    /// The run's values of the swept keys (variants, then grid), in order.
    pub swept: Vec<(String, toml::Value)>,
    /// Every `--set` assignment of the run, in the order applied.
    pub set: Vec<String>,
    /// Its target epochs (from the resolved configuration).
    pub epochs: usize,
}

impl PlannedRun {
    /// The run's group: its preset and swept values, without the seed.
    pub fn group(&self) -> String {
        let mut s = self.preset.clone();
        for (k, v) in &self.swept {
            s += &format!(", {k} = {v}");
        }
        s
    }
}

/// A sweep: its file, its directory and its planned runs.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub file: PathBuf,
    pub dir: PathBuf,
    pub spec: SweepSpec,
    /// The keys that vary between runs (besides the seed).
    pub swept_keys: Vec<String>,
    pub runs: Vec<PlannedRun>,
    pub data_dir: Option<PathBuf>,
}

/// Flattens nested tables into dotted keys (`model.lr = ...` in TOML is a table `model` with `lr`).
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => out.push((key, other.clone())),
        }
    }
}

/// A value as a `--set` right-hand side.
fn set_value(v: &toml::Value) -> String {
    v.to_string()
}

/// A value as part of a directory name.
fn name_part(v: &toml::Value) -> String {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(name_part).collect::<Vec<_>>().join("x"),
        // 1e30 and 1e-5, not thirty zeros.
        toml::Value::Float(x) if *x != 0.0 && (x.abs() >= 1e5 || x.abs() < 1e-3) => {
            format!("{x:e}")
        }
        other => other.to_string(),
    };
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The sweep directory a file gets without `--out`: `sweeps/<file stem>`, or
/// the directory itself for the copy inside a sweep directory.
pub fn default_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new(""));
    if file.file_name().is_some_and(|n| n == SWEEP_FILE) && parent.join(manifest::FILE).is_file() {
        return if parent.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            parent.to_path_buf()
        };
    }
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sweep".into());
    PathBuf::from("sweeps").join(stem)
}

impl SweepSpec {
    /// Reads and checks a sweep file; errors name the file and the key.
    pub fn read(file: &Path) -> Result<(SweepSpec, String)> {
        let text = crate::bounded::read_text(file, crate::bounded::CONFIG_LIMIT, "sweep file")?;
        let spec: SweepSpec = toml::from_str(&text).map_err(|e| {
            crate::error::usage(anyhow::anyhow!(
                "{}: {}",
                file.display(),
                one_line(&e.to_string())
            ))
        })?;
        spec.check()
            .map_err(|e| crate::error::usage(anyhow::anyhow!("{}: {}", file.display(), e)))?;
        Ok((spec, text))
    }

    fn check(&self) -> Result<()> {
        if self.presets.is_empty() {
            anyhow::bail!("presets = []: name at least one preset or model family");
        }
        for p in &self.presets {
            let known = presets::find(p).is_some() || models::family::find(p).is_some();
            if !known {
                let hint = presets::closest(p, presets::PRESETS.iter().map(|p| p.name))
                    .map(|c| format!(" (did you mean {c}?)"))
                    .unwrap_or_default();
                anyhow::bail!(
                    "presets: '{p}' is not a preset or model family{hint}; see `genlab presets`"
                );
            }
        }
        if self.seeds.is_empty() {
            anyhow::bail!("seeds = []: give at least one seed");
        }
        let unique: BTreeSet<u64> = self.seeds.iter().copied().collect();
        if unique.len() != self.seeds.len() {
            anyhow::bail!("seeds: a seed is listed twice");
        }
        for (key, limit) in [
            ("train_limit", self.train_limit),
            ("test_limit", self.test_limit),
        ] {
            if limit == Some(0) {
                anyhow::bail!("{key} = 0: a limit must be a positive number of images");
            }
        }
        if self.epochs == Some(0) {
            anyhow::bail!("epochs = 0: train at least one epoch");
        }
        let mut grid = Vec::new();
        flatten("", &self.grid, &mut grid);
        for (key, values) in &grid {
            match values {
                toml::Value::Array(a) if !a.is_empty() => {}
                toml::Value::Array(_) => {
                    anyhow::bail!("grid.{key} = []: give at least one value")
                }
                other => anyhow::bail!(
                    "grid.{key} = {other}: a grid key takes a list of values, e.g. {key} = [{other}]"
                ),
            }
        }
        if self.local.jobs == Some(0) {
            anyhow::bail!("local.jobs = 0: run at least one job at a time");
        }
        self.slurm.check()
    }

    /// Every (variant, grid point) combination, each a list of (key, value).
    fn combinations(&self) -> Vec<Vec<(String, toml::Value)>> {
        let mut grid = Vec::new();
        flatten("", &self.grid, &mut grid);
        let mut points: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
        for (key, values) in &grid {
            let values = values.as_array().cloned().unwrap_or_default();
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut q = p.clone();
                        q.push((key.clone(), v.clone()));
                        q
                    })
                })
                .collect();
        }
        let variants: Vec<Vec<(String, toml::Value)>> = if self.variants.is_empty() {
            vec![Vec::new()]
        } else {
            self.variants
                .iter()
                .map(|t| {
                    let mut v = Vec::new();
                    flatten("", t, &mut v);
                    v
                })
                .collect()
        };
        variants
            .iter()
            .flat_map(|v| {
                points.iter().map(move |p| {
                    let mut all = v.clone();
                    all.extend(p.iter().cloned());
                    all
                })
            })
            .collect()
    }

    /// The assignments every run gets before its own values.
    fn common_set(&self) -> Vec<String> {
        let mut set = Vec::new();
        if let Some(e) = self.epochs {
            set.push(format!("model.epochs={e}"));
        }
        if let Some(n) = self.train_limit {
            set.push(format!("data.train_limit={n}"));
        }
        if let Some(n) = self.test_limit {
            set.push(format!("data.test_limit={n}"));
        }
        if let Some(d) = &self.dataset {
            set.push(format!("data.dataset={}", toml::Value::String(d.clone())));
        }
        if let Some(d) = &self.device {
            set.push(format!("device={}", toml::Value::String(d.clone())));
        }
        let mut fixed = Vec::new();
        flatten("", &self.set, &mut fixed);
        set.extend(fixed.iter().map(|(k, v)| format!("{k}={}", set_value(v))));
        set
    }
}

impl Sweep {
    /// Reads a sweep file and plans its runs, checking every run's
    /// configuration before anything is written.
    pub fn plan(file: &Path, dir: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<Sweep> {
        let (spec, _) = SweepSpec::read(file)?;
        let dir = dir.unwrap_or_else(|| default_dir(file));
        let combos = spec.combinations();
        let mut swept_keys: Vec<String> = Vec::new();
        for combo in &combos {
            for (k, _) in combo {
                if !swept_keys.contains(k) {
                    swept_keys.push(k.clone());
                }
            }
        }
        let common = spec.common_set();
        let mut runs = Vec::new();
        for preset_token in &spec.presets {
            let preset = match presets::find(preset_token) {
                Some(p) => p.name.to_string(),
                None => seed_preset(preset_token)?,
            };
            for combo in &combos {
                for &seed in &spec.seeds {
                    let mut set = common.clone();
                    set.extend(combo.iter().map(|(k, v)| format!("{k}={}", set_value(v))));
                    set.push(format!("seed={seed}"));
                    let mut name = preset.clone();
                    for (k, v) in combo {
                        let short = k.rsplit('.').next().unwrap_or(k);
                        name += &format!("-{short}{}", name_part(v));
                    }
                    name += &format!("-seed{seed}");
                    runs.push(PlannedRun {
                        index: runs.len(),
                        name,
                        preset: preset.clone(),
                        seed,
                        swept: combo.clone(),
                        set,
                        epochs: 0,
                    });
                }
            }
        }
        // Names must be unique directory names; fall back to numbering.
        let names: BTreeSet<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        if names.len() != runs.len() {
            for r in &mut runs {
                r.name = format!("{:03}-{}", r.index, r.name);
            }
        }
        let mut sweep = Sweep {
            file: file.to_path_buf(),
            dir,
            spec,
            swept_keys,
            runs,
            data_dir,
        };
        for k in 0..sweep.runs.len() {
            let request = sweep.request(k);
            let planned = models::planned_config(&request).map_err(|e| {
                let usage = crate::error::is_usage(&e);
                let e = e.context(format!(
                    "{}: run {} ({})",
                    file.display(),
                    sweep.runs[k].name,
                    sweep.runs[k].set.join(" ")
                ));
                if usage { crate::error::usage(e) } else { e }
            })?;
            let value: toml::Value = toml::from_str(&planned)?;
            sweep.runs[k].epochs = value
                .get("model")
                .and_then(|m| m.get("epochs"))
                .and_then(|e| e.as_integer())
                .unwrap_or(0) as usize;
        }
        Ok(sweep)
    }

    /// The training request of run `k`.
    pub fn request(&self, k: usize) -> TrainRequest {
        let run = &self.runs[k];
        TrainRequest {
            family: presets::find(&run.preset)
                .map_or("", |p| p.family)
                .to_string(),
            preset: Some(run.preset.clone()),
            overrides: Overrides {
                config_file: None,
                set: run.set.clone(),
            },
            out: Some(self.run_dir(k)),
            data_dir: self.data_dir.clone(),
        }
    }

    /// The run directory of run `k`.
    pub fn run_dir(&self, k: usize) -> PathBuf {
        self.dir.join(RUNS_DIR).join(&self.runs[k].name)
    }

    /// The log file of run `k`.
    pub fn log_path(&self, k: usize) -> PathBuf {
        self.dir
            .join(LOGS_DIR)
            .join(format!("{}.log", self.runs[k].name))
    }

    /// What each run does after training.
    pub fn steps(&self, seed: u64) -> Steps {
        let base = EvalOptions {
            seed,
            data_dir: self.data_dir.clone(),
            ..EvalOptions::default()
        };
        let eval = match self.spec.eval {
            EvalLevel::None => None,
            EvalLevel::Full => Some(base),
            EvalLevel::Quick => Some(base.quick()),
        };
        let inpaint = self.spec.inpaint.then(|| InpaintOptions {
            remove: vec![0.2, 0.5, 0.8],
            n: 64,
            steps: 200,
            seed,
            out: None,
            data_dir: self.data_dir.clone(),
        });
        Steps { eval, inpaint }
    }

    /// Whether run `k` has done everything the sweep asks of it.
    pub fn is_finished(&self, k: usize) -> bool {
        crate::pipeline::is_finished(
            &self.run_dir(k),
            self.spec.eval != EvalLevel::None,
            self.spec.inpaint,
        )
    }

    /// The manifest this plan would write.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            sweep: self
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            eval: self.spec.eval,
            inpaint: self.spec.inpaint,
            swept: self.swept_keys.clone(),
            slurm_jobs: Vec::new(),
            run: self
                .runs
                .iter()
                .map(|r| RunEntry {
                    index: r.index,
                    name: r.name.clone(),
                    preset: r.preset.clone(),
                    seed: r.seed,
                    group: r.group(),
                    overrides: r
                        .swept
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    set: r.set.clone(),
                    state: manifest::RunState::Pending,
                    error: None,
                })
                .collect(),
        }
    }

    /// Creates the sweep directory, or checks that an existing one was made
    /// from this same sweep; then writes the copy of the file and the manifest.
    pub fn prepare(&self) -> Result<()> {
        let planned = self.manifest();
        let manifest_path = self.dir.join(manifest::FILE);
        if self.dir.exists() {
            if !self.dir.is_dir() {
                crate::usage_bail!(
                    "{} is a file, not a sweep directory; choose another --out",
                    self.dir.display()
                );
            }
            if manifest_path.is_file() {
                let existing = Manifest::read(&self.dir)?;
                if let Some(why) = existing.differs_from(&planned) {
                    crate::usage_bail!(
                        "{} was made from another sweep file ({why}); choose another --out or remove it",
                        self.dir.display()
                    );
                }
            } else if std::fs::read_dir(&self.dir)
                .with_context(|| format!("cannot read {}", self.dir.display()))?
                .next()
                .is_some()
            {
                crate::usage_bail!(
                    "{} exists and is not a genlab sweep (it has no {}); choose another --out (genlab never writes into a directory it did not create)",
                    self.dir.display(),
                    manifest::FILE
                );
            }
        }
        for sub in [RUNS_DIR, LOGS_DIR] {
            let d = self.dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| {
                crate::error::usage(anyhow::anyhow!(
                    "cannot create {} ({e}); choose another --out",
                    d.display()
                ))
            })?;
        }
        // Runs already made must be this plan's (another genlab may have changed a default).
        for k in 0..self.runs.len() {
            let run = self.run_dir(k);
            let config = run.join("config.toml");
            if config.is_file() {
                let planned = models::planned_config(&self.request(k))?;
                let existing = std::fs::read_to_string(&config)
                    .with_context(|| format!("cannot read {}", config.display()))?;
                if existing != planned {
                    crate::usage_bail!(
                        "{} has another configuration than the sweep plans for it (its config.toml differs); choose another --out or remove that run",
                        run.display()
                    );
                }
            }
        }
        let copy = self.dir.join(SWEEP_FILE);
        let same_file = copy.canonicalize().ok() == self.file.canonicalize().ok();
        if !same_file {
            let text =
                crate::bounded::read_text(&self.file, crate::bounded::CONFIG_LIMIT, "sweep file")?;
            crate::atomic::write_atomic(&copy, text.as_bytes())?;
        }
        Manifest::update(&self.dir, |m| {
            if m.run.is_empty() {
                *m = planned.clone();
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// The seed preset of a family name.
fn seed_preset(family: &str) -> Result<String> {
    models::family::find(family)
        .map(|f| f.seed_preset())
        .map(str::to_string)
        .ok_or_else(|| {
            crate::error::usage(anyhow::anyhow!("presets: '{family}' is not a model family"))
        })
}
