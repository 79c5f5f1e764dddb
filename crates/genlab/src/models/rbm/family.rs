//! The RBM's family interface: Gibbs-chain sampling, inpainting by clamped
//! conditional sampling, AIS likelihoods, its labels and figures.

use anyhow::Result;
use serde_json::Value;

use super::train::RbmFamily;
use super::{ChainStart, LoadedRbm, inpaint_clamped, load_run, sample_chains};
use crate::config::DataConfig;
use crate::eval::options::EvalOptions;
use crate::models::family::{
    FigureSpec, ModelFamily, SampleSpec, Trained, TrainingFigure, model_key,
};
use crate::rng::{Purpose, stream};
use crate::run::RunDir;

fn from_words(from: ChainStart) -> &'static str {
    match from {
        ChainStart::Noise => "random noise",
        ChainStart::Data => "random test images",
    }
}

impl Trained for LoadedRbm {
    fn image(&self) -> crate::data::ImageShape {
        self.image
    }

    fn data(&self) -> &DataConfig {
        &self.config.data
    }

    fn sample(&self, spec: &SampleSpec) -> Result<Vec<f32>> {
        if spec.steps == 0 {
            crate::usage_bail!("--steps 0: a Gibbs chain needs at least one step");
        }
        let data = self.config.data.load(spec.data_dir.clone())?;
        Ok(sample_chains(
            &self.rbm, &data.test, spec.n, spec.steps, spec.from, spec.seed,
        ))
    }

    fn sample_how(&self, spec: &SampleSpec) -> String {
        format!(
            "{} Gibbs steps from {}, mean-field visible probabilities",
            spec.steps,
            from_words(spec.from)
        )
    }

    fn sample_file(&self, spec: &SampleSpec) -> String {
        let from = match spec.from {
            ChainStart::Noise => "noise",
            ChainStart::Data => "data",
        };
        format!("sample_{from}_{}steps_seed{}.png", spec.steps, spec.seed)
    }

    fn inpaint(
        &self,
        corrupted: &[f32],
        missing: &[bool],
        steps: usize,
        seed: u64,
        stream_index: u32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut chain_rng = stream(seed, Purpose::Sample, stream_index);
        let free = self
            .rbm
            .gibbs_from_visible(corrupted, steps, &mut chain_rng);
        let clamped = inpaint_clamped(
            &self.rbm,
            corrupted,
            missing,
            steps,
            steps / 4,
            &mut chain_rng,
        );
        Ok((free, clamped))
    }

    fn inpaint_methods(&self, steps: usize) -> (String, String) {
        (
            format!(
                "free chain: the seed's way, {steps} Gibbs steps from the corrupted image, unclamped"
            ),
            format!(
                "clamped: {steps} Gibbs steps with the kept pixels fixed, removed ones resampled (mean of the last quarter)"
            ),
        )
    }
}

impl ModelFamily for RbmFamily {
    crate::family_training!();

    fn load(&self, run: &RunDir) -> Result<Box<dyn Trained>> {
        Ok(Box::new(load_run(run)?))
    }

    fn inpaints(&self) -> bool {
        true
    }

    fn evaluate(&self, run: &RunDir, opts: &EvalOptions) -> Result<(Value, Vec<String>)> {
        super::eval::evaluate_rbm(run, opts)
    }

    fn label(&self, _config: &toml::Value) -> String {
        "RBM".into()
    }

    fn title(&self, config: &toml::Value) -> String {
        format!(
            "binary RBM, {} hidden units",
            model_key(config, "hidden").map_or("?".into(), ToString::to_string)
        )
    }

    fn training_figures(&self) -> &'static [TrainingFigure] {
        &[
            TrainingFigure {
                key: "pseudo_likelihood_test",
                name: "pseudo-LL",
                short: "pseudo-LL",
                digits: 1,
            },
            TrainingFigure {
                key: "recon_error_test",
                name: "recon error",
                short: "recon",
                digits: 4,
            },
        ]
    }

    fn report_figures(&self, _config: &toml::Value) -> Vec<(String, Vec<FigureSpec>)> {
        vec![
            (
                "Training curves".into(),
                vec![
                    FigureSpec::chart(
                        "pseudo_likelihood.png",
                        "pseudo-log-likelihood of test digits per epoch",
                    ),
                    FigureSpec::chart(
                        "free_energy.png",
                        "mean free energy of training and test digits per epoch",
                    ),
                    FigureSpec::chart(
                        "reconstruction_error.png",
                        "reconstruction error of test digits per epoch",
                    ),
                ],
            ),
            (
                "Samples".into(),
                vec![FigureSpec::grid(
                    "samples.png",
                    "final epoch: 64 Gibbs chains run from a fixed training batch (the seed's figure)",
                )],
            ),
            (
                "Filters".into(),
                vec![FigureSpec::grid(
                    "filters.png",
                    "weights of the first 100 hidden units, each as a 28x28 image",
                )],
            ),
        ]
    }
}
