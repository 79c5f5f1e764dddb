//! What `genlab eval` is asked to do, and the bounds of its work sizes.

use std::path::PathBuf;

/// The images `genlab eval` measures the likelihood on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EvalSplit {
    #[default]
    Test,
    /// The training images the run held out (`data.validation`).
    Validation,
}

impl EvalSplit {
    pub fn name(self) -> &'static str {
        match self {
            EvalSplit::Test => "test",
            EvalSplit::Validation => "validation",
        }
    }

    /// This split of `data`; a clear error when the run held out none.
    pub fn of(self, data: &crate::data::Dataset) -> anyhow::Result<&crate::data::Split> {
        match self {
            EvalSplit::Test => Ok(&data.test),
            EvalSplit::Validation => data.validation.as_ref().ok_or_else(|| {
                crate::error::usage(anyhow::anyhow!(
                    "--on validation: this run held out no validation images; train with --set data.validation=N"
                ))
            }),
        }
    }
}

/// Options of `genlab eval`.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub seed: u64,
    /// The images of the likelihood (the sample-quality metrics always use the test set).
    pub on: EvalSplit,
    /// AIS chains, run in parallel as one batch.
    pub ais_runs: usize,
    /// Intermediate distributions of the AIS schedule.
    pub ais_steps: usize,
    /// RBM: test images RAISE estimates the likelihood of (0 skips it).
    pub raise_images: usize,
    /// RBM: reverse chains per image.
    pub raise_chains: usize,
    /// RBM: inverse temperatures of RAISE's schedule.
    pub raise_steps: usize,
    /// Importance samples per image for latent-variable models (None: the model's default).
    pub k: Option<usize>,
    /// Generated images for the sample-quality metrics (0 skips them).
    pub samples: usize,
    /// RBM: Gibbs steps of each sampling chain (from random noise).
    pub sample_steps: usize,
    /// A user's evaluator network instead of the shipped one.
    pub evaluator: Option<PathBuf>,
    /// Where eval.json goes (default: inside the run).
    pub out: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            seed: 0,
            on: EvalSplit::Test,
            ais_runs: 100,
            ais_steps: 14_500,
            raise_images: 100,
            raise_chains: 5,
            raise_steps: 14_500,
            k: None,
            samples: 10_000,
            sample_steps: 1000,
            evaluator: None,
            out: None,
            data_dir: None,
        }
    }
}

/// Limits of `genlab eval`'s work sizes: each is a hundred times its default
/// or more, and far beyond what a figure gains from.
pub const MAX_AIS_RUNS: usize = 10_000;
pub const MAX_AIS_STEPS: usize = 1_000_000;
pub const MAX_RAISE_IMAGES: usize = 10_000;
pub const MAX_RAISE_CHAINS: usize = 1_000;
pub const MAX_IMPORTANCE_SAMPLES: usize = 100_000;
pub const MAX_SAMPLES: usize = 100_000;
pub const MAX_CHAIN_STEPS: usize = 100_000;

/// The largest hidden layer whose partition function is summed exactly.
pub const EXACT_MAX_HIDDEN: usize = 24;
