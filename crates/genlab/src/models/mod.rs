//! Model families, one folder each: its configuration (a serde struct whose
//! defaults are the seed preset) and model in `mod.rs`, its training loop
//! implementing [`Family`] in `train.rs`, and the rest of what it offers
//! (loading, sampling, inpainting, evaluation, labels, figures) implementing
//! [`family::ModelFamily`] in `family.rs`. A family is registered by one
//! line in [`family::REGISTRY`]; nothing else names it.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::tensor::Device;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Overrides, RunConfig, resolve};
use crate::data::Dataset;
use crate::error::usage;
use crate::presets::{self, Preset};
use crate::run::{Checkpoint, RunDir, RunLock};

pub mod family;
pub mod gan;
pub mod host;
pub mod likelihood;
pub mod optim;
pub mod rbm;
pub mod tensors;
pub mod trainer;
pub mod vae;

/// A model's own configuration section (`[model]` in config.toml).
pub trait ModelConfig: Serialize + DeserializeOwned + Default + Clone + Debug {
    /// Training epochs.
    fn epochs(&self) -> usize;
    /// Images per batch (checked against the training set before a run starts).
    fn batch_size(&self) -> usize;
    /// Checks every value before any work starts; errors name the key.
    fn validate(&self) -> Result<()>;
    /// About how many bytes training needs (parameters, optimiser state,
    /// a batch's activations, the per-epoch evaluation), and the keys that
    /// set it, so that an impossible size is refused before anything is
    /// allocated or written.
    fn training_memory(&self, image: crate::data::ImageShape) -> (f64, &'static str);
    /// Checks that the model can take the dataset's images (once they are
    /// read, before a run is created or continued); errors name the fix.
    fn check_images(&self, _image: crate::data::ImageShape) -> Result<()> {
        Ok(())
    }
}

/// What a process of genlab holds before any model: the data set, the
/// evaluator, the code.
pub const BASE_MEMORY: f64 = 256.0 * (1u64 << 20) as f64;

/// Refuses a configuration whose training on images of `image`'s shape
/// cannot fit in memory.
pub fn check_training_memory<C: ModelConfig>(
    config: &C,
    image: crate::data::ImageShape,
) -> Result<()> {
    let (bytes, keys) = config.training_memory(image);
    crate::bounded::check_memory(BASE_MEMORY + bytes, "training this configuration", keys)
}

/// Everything a training loop gets.
pub struct TrainContext {
    pub run: RunDir,
    pub dataset: Dataset,
    pub device: Device,
    /// Draw progress bars (stdout is a terminal).
    pub interactive: bool,
}

/// Refuses to resume from a checkpoint whose networks were built for other
/// images than the dataset's.
pub fn check_image(
    ck: &crate::run::Checkpoint,
    image: crate::data::ImageShape,
    dataset: &crate::data::DatasetName,
) -> Result<()> {
    let trained = ck.image_shape().map_err(crate::error::usage)?;
    if trained != image {
        crate::usage_bail!(
            "the checkpoint's networks were built for {} images, dataset {dataset} has {}; resume with the dataset it was trained on",
            trained.to_meta(),
            image.to_meta()
        );
    }
    Ok(())
}

/// A model family: its name, seed preset and training loop.
pub trait Family {
    const NAME: &'static str;
    /// The preset `genlab train NAME` uses without `--preset`.
    const SEED_PRESET: &'static str;
    type Config: ModelConfig;
    /// Checks what [`ModelConfig::validate`] cannot see alone (the device, say).
    fn check(_config: &RunConfig<Self::Config>) -> Result<()> {
        Ok(())
    }
    /// Trains a run to its configured epochs: a fresh run, or one resumed
    /// from its latest checkpoint (model, optimiser and RNG state, epoch and
    /// batch position). Polls [`crate::interrupt::requested`] after every batch.
    fn train(
        ctx: &TrainContext,
        config: &RunConfig<Self::Config>,
        resume: Option<&Checkpoint>,
    ) -> Result<()>;
}

/// What a divergence message says about the run's checkpoint.
pub fn kept_checkpoint(ctx: &TrainContext) -> String {
    let latest = ctx.run.latest_checkpoint();
    if latest.exists() {
        format!("the last good checkpoint ({}) is kept", latest.display())
    } else {
        "no checkpoint had been written yet (the run starts afresh with `genlab train --resume`)"
            .to_string()
    }
}

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
    if let Some(family) = family::find(&request.family) {
        return family.train(request);
    }
    // A preset's name works as the model: `genlab train conv-vae`.
    if request.preset.is_none()
        && let Some(preset) = presets::find(&request.family)
    {
        let mut request = request.clone();
        request.family = preset.family.to_string();
        request.preset = Some(preset.name.to_string());
        return train(&request);
    }
    let names = family::names();
    let hint = presets::closest(&request.family, names.iter().copied())
        .map(|c| format!(" (did you mean {c}?)"))
        .unwrap_or_default();
    crate::usage_bail!(
        "unknown model '{}'{hint}: this genlab trains {}",
        request.family,
        names.join(", ")
    )
}

/// The `config.toml` text [`train`] would write for `request`, without
/// training (how `reproduce` and `sweep` recognise their own runs).
pub fn planned_config(request: &TrainRequest) -> Result<String> {
    match family::find(&request.family) {
        Some(f) => f.planned_config(request),
        None => crate::usage_bail!("unknown model '{}'", request.family),
    }
}

/// [`planned_config`] for the family `F`.
pub fn planned_family_config<F: Family>(request: &TrainRequest) -> Result<String> {
    let preset = preset_for(F::NAME, F::SEED_PRESET, request.preset.as_deref())?;
    let config: RunConfig<F::Config> = resolve(preset, &request.overrides).map_err(usage)?;
    config.model.validate().map_err(usage)?;
    if let Some(image) = config.data.expected_shape() {
        check_training_memory(&config.model, image)?;
    }
    crate::config::to_toml(&config)
}

/// Finds the preset for a family: the named one (which must belong to it) or the seed preset.
pub fn preset_for(family: &str, seed_preset: &str, name: Option<&str>) -> Result<&'static Preset> {
    let name = name.unwrap_or(seed_preset);
    match presets::find(name) {
        Some(p) if p.family == family => Ok(p),
        Some(p) => crate::usage_bail!(
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
            crate::usage_bail!(
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
    let config: RunConfig<F::Config> = resolve(preset, &request.overrides).map_err(usage)?;
    config.model.validate().map_err(usage)?;
    // Before the data is read where its shape is known, after it otherwise.
    if let Some(image) = config.data.expected_shape() {
        check_training_memory(&config.model, image)?;
    }
    let device = config.device.device().map_err(usage)?;
    F::check(&config).map_err(usage)?;
    config.data.validate()?;
    let interactive = crate::progress::interactive();
    let dataset = config.data.load(request.data_dir.clone())?;
    config.model.check_images(dataset.image)?;
    check_training_memory(&config.model, dataset.image)?;
    if config.model.batch_size() > dataset.train.len() {
        crate::usage_bail!(
            "model.batch_size = {} is larger than the training set ({} images{}); lower it or raise data.train_limit",
            config.model.batch_size(),
            dataset.train.len(),
            if config.data.train_limit.is_some() {
                ", after data.train_limit"
            } else {
                ""
            }
        );
    }
    let root = request
        .out
        .clone()
        .unwrap_or_else(|| RunDir::default_path(F::NAME, &config.preset));
    let run = RunDir::create(&root)?;
    let _lock = RunLock::acquire(&run.root, "training")?;
    run.write_config(&config)?;
    device.seed(config.seed);
    let ctx = TrainContext {
        run,
        dataset,
        device,
        interactive,
    };
    let _graceful = crate::interrupt::graceful();
    F::train(&ctx, &config, None)?;
    Ok(root)
}

/// `genlab train --resume RUN [--epochs N]`: continues a run from its latest
/// checkpoint; `epochs` raises (or lowers) the run's target epoch count.
pub fn resume(
    run_root: &Path,
    epochs: Option<usize>,
    data_dir: Option<PathBuf>,
) -> Result<PathBuf> {
    let run = RunDir::open(run_root).map_err(usage)?;
    let _lock = RunLock::acquire(&run.root, "training (resumed)")?;
    run.remove_stale_temporaries()?;
    family::of_run(&run)?.resume(run, epochs, data_dir)
}

/// [`resume`] for the family `F`.
pub fn resume_family<F: Family>(
    run: RunDir,
    epochs: Option<usize>,
    data_dir: Option<PathBuf>,
) -> Result<PathBuf> {
    let mut config: RunConfig<F::Config> = run.read_config().map_err(usage)?;
    if let Some(e) = epochs {
        let mut value = toml::Value::try_from(&config)?;
        crate::config::apply_set(&mut value, &format!("model.epochs={e}"))?;
        config = value
            .try_into()
            .map_err(|e: toml::de::Error| usage(e.into()))?;
        config.model.validate().map_err(usage)?;
    }
    // A run stopped before its first checkpoint starts again from the beginning.
    let checkpoint = if run.latest_checkpoint().exists() {
        let ck = Checkpoint::load(&run.latest_checkpoint())
            .map_err(|e| usage(e.context(format!("{} cannot be resumed", run.root.display()))))?;
        let done: usize = ck.meta("genlab.epoch").map_err(usage)?.parse().unwrap_or(0);
        let in_epoch: usize = ck.meta("genlab.batch").map_err(usage)?.parse().unwrap_or(0);
        if done >= config.model.epochs() && in_epoch == 0 {
            match epochs {
                Some(e) => crate::usage_bail!(
                    "{} has already trained {done} epochs, so --epochs {e} adds none; pass --epochs N with N > {done} to train it further",
                    run.root.display()
                ),
                None => crate::usage_bail!(
                    "{} has finished its {done} epochs; pass --epochs N with N > {done} to train it further",
                    run.root.display()
                ),
            }
        }
        Some(ck)
    } else {
        None
    };
    let device = config.device.device()?;
    let interactive = crate::progress::interactive();
    let dataset = config.data.load(data_dir)?;
    config.model.check_images(dataset.image)?;
    check_training_memory(&config.model, dataset.image)?;
    if epochs.is_some() {
        run.write_config(&config)?;
    }
    device.seed(config.seed);
    let root = run.root.clone();
    let ctx = TrainContext {
        run,
        dataset,
        device,
        interactive,
    };
    let _graceful = crate::interrupt::graceful();
    F::train(&ctx, &config, checkpoint.as_ref())?;
    Ok(root)
}
