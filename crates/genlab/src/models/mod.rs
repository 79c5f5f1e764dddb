//! Model families. Adding one is adding a file with its model, its
//! configuration (a serde struct whose defaults are the seed preset) and its
//! training loop implementing [`Family`], plus a line in [`FAMILIES`] and
//! in [`train`].

use std::fmt::Debug;
use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::Device;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Overrides, RunConfig, resolve};
use crate::data::{DataSources, Dataset};
use crate::presets::{self, Preset};
use crate::run::RunDir;

pub mod rbm;

/// A model's own configuration section (`[model]` in config.toml).
pub trait ModelConfig: Serialize + DeserializeOwned + Default + Clone + Debug {
    /// Training epochs.
    fn epochs(&self) -> usize;
    /// Checks every value before any work starts; errors name the key.
    fn validate(&self) -> Result<()>;
}

/// Everything a training loop gets.
pub struct TrainContext {
    pub run: RunDir,
    pub dataset: Dataset,
    pub device: Device,
    /// Draw progress bars (stdout is a terminal).
    pub interactive: bool,
}

/// A model family: its name, seed preset and training loop.
pub trait Family {
    const NAME: &'static str;
    /// The preset `genlab train NAME` uses without `--preset`.
    const SEED_PRESET: &'static str;
    type Config: ModelConfig;
    /// Trains a freshly created run to its configured epochs.
    fn train(ctx: &TrainContext, config: &RunConfig<Self::Config>) -> Result<()>;
}

/// Names of the families this build can train.
pub const FAMILIES: &[&str] = &["rbm"];

/// What `genlab train` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct TrainRequest {
    pub family: String,
    pub preset: Option<String>,
    pub overrides: Overrides,
    pub out: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

/// Trains `request.family`; returns the run directory.
pub fn train(request: &TrainRequest) -> Result<PathBuf> {
    match request.family.as_str() {
        "rbm" => train_family::<rbm::RbmFamily>(request),
        other => {
            let hint = presets::closest(other, FAMILIES.iter().copied())
                .map(|c| format!(" (did you mean {c}?)"))
                .unwrap_or_default();
            bail!(
                "unknown model '{other}'{hint}: this genlab trains {}",
                if FAMILIES.is_empty() {
                    "no models yet".to_string()
                } else {
                    FAMILIES.join(", ")
                }
            )
        }
    }
}

/// Finds the preset for a family: the named one (which must belong to it) or the seed preset.
pub fn preset_for(family: &str, seed_preset: &str, name: Option<&str>) -> Result<&'static Preset> {
    let name = name.unwrap_or(seed_preset);
    match presets::find(name) {
        Some(p) if p.family == family => Ok(p),
        Some(p) => bail!(
            "--preset {name} is a {} preset, not a {family} one; try `genlab train {} --preset {name}`",
            p.family,
            p.family
        ),
        None => {
            let own = presets::PRESETS
                .iter()
                .filter(|p| p.family == family)
                .map(|p| p.name);
            let hint = presets::closest(name, own.clone())
                .map(|c| format!(" (did you mean {c}?)"))
                .unwrap_or_default();
            bail!(
                "--preset {name}: no such preset{hint}; {family} presets: {}",
                own.collect::<Vec<_>>().join(", ")
            )
        }
    }
}

/// The generic part of `genlab train`: resolve and validate the
/// configuration, load the data, create the run directory, then hand over.
pub fn train_family<F: Family>(request: &TrainRequest) -> Result<PathBuf> {
    let preset = preset_for(F::NAME, F::SEED_PRESET, request.preset.as_deref())?;
    let config: RunConfig<F::Config> = resolve(preset, &request.overrides)?;
    config.model.validate()?;
    let device = config.device.device()?;
    let interactive = crate::progress::interactive();
    let sources = DataSources::from_env(request.data_dir.clone());
    let mut dataset = Dataset::load(&config.data.dataset, &sources, interactive)?;
    for (key, limit) in [
        ("data.train_limit", config.data.train_limit),
        ("data.test_limit", config.data.test_limit),
    ] {
        if limit == Some(0) {
            bail!("{key} = 0: a limit must be a positive number of images");
        }
    }
    dataset.limit(config.data.train_limit, config.data.test_limit);
    let root = request
        .out
        .clone()
        .unwrap_or_else(|| RunDir::default_path(F::NAME, &config.preset));
    let run = RunDir::create(&root)?;
    run.write_config(&config)?;
    device.seed(config.seed);
    let ctx = TrainContext {
        run,
        dataset,
        device,
        interactive,
    };
    F::train(&ctx, &config)?;
    Ok(root)
}
