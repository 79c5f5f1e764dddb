//! What `genlab eval` is asked to do, and the bounds of its work sizes.

use std::path::PathBuf;

/// Options of `genlab eval`.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub seed: u64,
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
