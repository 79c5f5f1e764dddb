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
    /// VAEs and GANs: the decoder's likelihood by AIS and its BDMC check.
    pub decoder_ais: DecoderAisOptions,
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
            decoder_ais: DecoderAisOptions::default(),
            samples: 10_000,
            sample_steps: 1000,
            evaluator: None,
            out: None,
            data_dir: None,
        }
    }
}

impl EvalOptions {
    /// The smaller work sizes of `reproduce --quick` and quick sweeps: every
    /// figure computed, none precise.
    pub fn quick(self) -> Self {
        EvalOptions {
            ais_runs: 16,
            ais_steps: 1000,
            raise_images: 20,
            raise_chains: 4,
            raise_steps: 1000,
            k: Some(50),
            decoder_ais: DecoderAisOptions {
                images: Some(10),
                chains: Some(4),
                steps: Some(100),
                leapfrog: Some(5),
                bdmc_images: Some(5),
                sigma_images: Some(5),
                ..self.decoder_ais
            },
            samples: 1000,
            sample_steps: 100,
            ..self
        }
    }
}

/// What a user asked of decoder AIS; each unset size takes the model's
/// default ([`DecoderAisSizes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecoderAisOptions {
    /// Images of the split whose likelihood is estimated (0 skips decoder AIS).
    pub images: Option<usize>,
    /// Chains per image.
    pub chains: Option<usize>,
    /// Intermediate distributions between prior and posterior.
    pub steps: Option<usize>,
    /// Leapfrog steps per HMC transition.
    pub leapfrog: Option<usize>,
    /// Images simulated from the model for BDMC (0 skips it).
    pub bdmc_images: Option<usize>,
    /// Held-out images the Gaussian's standard deviation is chosen on.
    pub sigma_images: Option<usize>,
    /// The Gaussian's standard deviation, instead of choosing one.
    pub sigma: Option<f64>,
}

/// The work sizes of one decoder-AIS evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderAisSizes {
    pub images: usize,
    pub chains: usize,
    pub steps: usize,
    pub leapfrog: usize,
    pub bdmc_images: usize,
    pub sigma_images: usize,
}

impl DecoderAisOptions {
    /// The sizes asked for, the model's `default` where none was given.
    pub fn sizes(&self, default: DecoderAisSizes) -> DecoderAisSizes {
        DecoderAisSizes {
            images: self.images.unwrap_or(default.images),
            chains: self.chains.unwrap_or(default.chains),
            steps: self.steps.unwrap_or(default.steps),
            leapfrog: self.leapfrog.unwrap_or(default.leapfrog),
            bdmc_images: self.bdmc_images.unwrap_or(default.bdmc_images),
            sigma_images: self.sigma_images.unwrap_or(default.sigma_images),
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
pub const MAX_DECODER_AIS_IMAGES: usize = 10_000;
pub const MAX_DECODER_AIS_CHAINS: usize = 1_000;
pub const MAX_LEAPFROG: usize = 1_000;
pub const MAX_SAMPLES: usize = 100_000;
pub const MAX_CHAIN_STEPS: usize = 100_000;

/// The largest hidden layer whose partition function is summed exactly.
pub const EXACT_MAX_HIDDEN: usize = 24;
