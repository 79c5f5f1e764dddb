//! What every model family offers beyond its training loop ([`super::Family`]):
//! loading a run, sampling, inpainting where it applies, its likelihood
//! evaluation, its labels and the report's figures. `train`, `sample`,
//! `inpaint`, `eval`, `compare`, `report`, `reproduce` and `sweep` reach a
//! family only through [`get`] and this trait, so a new family is its own
//! folder, one line in [`REGISTRY`] and its preset files.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::Value;

use super::TrainRequest;
use super::rbm::ChainStart;
use crate::config::DataConfig;
use crate::eval::options::EvalOptions;
use crate::run::RunDir;

/// Every family this build has, in the order they are listed to users.
pub static REGISTRY: &[&dyn ModelFamily] = &[
    &super::rbm::train::RbmFamily,
    &super::vae::train::VaeFamily,
    &super::gan::train::GanFamily,
];

/// The families' names, in registry order.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|f| f.name()).collect()
}

/// The family called `name`, if this build has it.
pub fn find(name: &str) -> Option<&'static dyn ModelFamily> {
    REGISTRY.iter().copied().find(|f| f.name() == name)
}

/// The family of the run at `run`, or a usage error naming it.
pub fn of_run(run: &RunDir) -> Result<&'static dyn ModelFamily> {
    let name = run.family().map_err(crate::error::usage)?;
    find(&name).ok_or_else(|| {
        crate::error::usage(anyhow::anyhow!(
            "{}: a {name} run, which this genlab does not know (it knows {})",
            run.root.display(),
            names().join(", ")
        ))
    })
}

/// How to draw samples.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    pub n: usize,
    /// Markov-chain families: steps of each chain.
    pub steps: usize,
    /// Markov-chain families: where the chains start.
    pub from: ChainStart,
    pub seed: u64,
    pub data_dir: Option<PathBuf>,
}

/// One end-of-training figure: its key in metrics.jsonl, its name in
/// aggregated tables, its short name in the comparison's summary cell, and
/// the digits it is shown with there.
#[derive(Debug, Clone, Copy)]
pub struct TrainingFigure {
    pub key: &'static str,
    pub name: &'static str,
    pub short: &'static str,
    pub digits: usize,
}

/// One picture of a run's report: file name under `images/` and caption.
#[derive(Debug, Clone)]
pub struct FigureSpec {
    pub file: String,
    pub caption: String,
    /// A grid of digits (drawn with sharp pixels), not a chart.
    pub pixels: bool,
    /// Spans the whole row (strips and large grids).
    pub wide: bool,
}

impl FigureSpec {
    /// A chart (curves, scatter plots).
    pub fn chart(file: &str, caption: impl Into<String>) -> Self {
        FigureSpec {
            file: file.to_string(),
            caption: caption.into(),
            pixels: false,
            wide: false,
        }
    }

    /// A grid of digits.
    pub fn grid(file: &str, caption: impl Into<String>) -> Self {
        FigureSpec {
            pixels: true,
            ..Self::chart(file, caption)
        }
    }

    /// The same figure across the whole row.
    pub fn wide(self) -> Self {
        FigureSpec { wide: true, ..self }
    }
}

/// A trained model, loaded from its run.
pub trait Trained {
    /// The run's data settings (which dataset, which limits).
    fn data(&self) -> &DataConfig;
    /// The shape of the images it models.
    fn image(&self) -> crate::data::ImageShape;
    /// `spec.n` samples, rows of 784 values in [0, 1].
    fn sample(&self, spec: &SampleSpec) -> Result<Vec<f32>>;
    /// How the samples were drawn, in words.
    fn sample_how(&self, spec: &SampleSpec) -> String;
    /// The sample grid's default file name inside the run's images.
    fn sample_file(&self, spec: &SampleSpec) -> String;
    /// (free, clamped) reconstructions of the `corrupted` images whose
    /// `missing` pixels were removed; `stream` numbers this call's random
    /// draws. Only called where [`ModelFamily::inpaints`].
    fn inpaint(
        &self,
        corrupted: &[f32],
        missing: &[bool],
        steps: usize,
        seed: u64,
        stream: u32,
    ) -> Result<(Vec<f32>, Vec<f32>)>;
    /// What the free and the clamped reconstruction are, in words.
    fn inpaint_methods(&self, steps: usize) -> (String, String);
}

/// A model family.
pub trait ModelFamily: Sync {
    fn name(&self) -> &'static str;
    /// The preset `genlab train NAME` uses without `--preset`.
    fn seed_preset(&self) -> &'static str;
    /// Trains a new run; returns its directory.
    fn train(&self, request: &TrainRequest) -> Result<PathBuf>;
    /// The `config.toml` text [`ModelFamily::train`] would write.
    fn planned_config(&self, request: &TrainRequest) -> Result<String>;
    /// Continues a run from its latest checkpoint.
    fn resume(
        &self,
        run: RunDir,
        epochs: Option<usize>,
        data_dir: Option<PathBuf>,
    ) -> Result<PathBuf>;
    /// Loads a trained run.
    fn load(&self, run: &RunDir) -> Result<Box<dyn Trained>>;
    /// Whether the family can fill in removed pixels.
    fn inpaints(&self) -> bool;
    /// The family's own part of `genlab eval` (its likelihood figures): the
    /// JSON object and the lines printed.
    fn evaluate(&self, run: &RunDir, opts: &EvalOptions) -> Result<(Value, Vec<String>)>;
    /// The model's name in tables ("MLP VAE").
    fn label(&self, config: &toml::Value) -> String;
    /// The model's title in the report ("MLP VAE, latent 2").
    fn title(&self, config: &toml::Value) -> String;
    /// The last epoch's figures that sum up the training.
    fn training_figures(&self) -> &'static [TrainingFigure];
    /// The report's figure groups (title, figures) in reading order; the
    /// report puts the samples over training after the second group.
    fn report_figures(&self, config: &toml::Value) -> Vec<(String, Vec<FigureSpec>)>;
    /// File-name prefix of the per-epoch sample grids (`samples_epoch_`).
    fn epoch_grid_prefix(&self) -> &'static str {
        "samples_epoch_"
    }
}

/// The [`ModelFamily`] methods that a family's training loop ([`super::Family`])
/// already answers: write `family_training!();` inside its `impl ModelFamily`.
#[macro_export]
macro_rules! family_training {
    () => {
        fn name(&self) -> &'static str {
            <Self as $crate::models::Family>::NAME
        }

        fn seed_preset(&self) -> &'static str {
            <Self as $crate::models::Family>::SEED_PRESET
        }

        fn train(
            &self,
            request: &$crate::models::TrainRequest,
        ) -> anyhow::Result<std::path::PathBuf> {
            $crate::models::train_family::<Self>(request)
        }

        fn planned_config(&self, request: &$crate::models::TrainRequest) -> anyhow::Result<String> {
            $crate::models::planned_family_config::<Self>(request)
        }

        fn resume(
            &self,
            run: $crate::run::RunDir,
            epochs: Option<usize>,
            data_dir: Option<std::path::PathBuf>,
        ) -> anyhow::Result<std::path::PathBuf> {
            $crate::models::resume_family::<Self>(run, epochs, data_dir)
        }
    };
}

/// A `[model]` key of a run's config.toml.
pub fn model_key<'a>(config: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    config.get("model").and_then(|m| m.get(key))
}
