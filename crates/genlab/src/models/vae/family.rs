//! The VAE's family interface (MLP and convolutional): prior sampling,
//! inpainting by iterated encode -> decode, importance-sampled likelihoods,
//! its labels and figures.

use anyhow::Result;
use serde_json::Value;

use super::train::VaeFamily;
use super::{LoadedVae, inpaint, load_run, sample_prior};
use crate::config::DataConfig;
use crate::eval::options::EvalOptions;
use crate::models::family::{
    FigureSpec, ModelFamily, SampleSpec, Trained, TrainingFigure, model_key,
};
use crate::run::RunDir;

impl Trained for LoadedVae {
    fn image(&self) -> crate::data::ImageShape {
        self.vae.net.image
    }

    fn data(&self) -> &DataConfig {
        &self.config.data
    }

    fn sample(&self, spec: &SampleSpec) -> Result<Vec<f32>> {
        sample_prior(&self.vae, spec.n, spec.seed)
    }

    fn sample_how(&self, _spec: &SampleSpec) -> String {
        "decoded draws of z ~ N(0, I), decoder means".into()
    }

    fn sample_file(&self, spec: &SampleSpec) -> String {
        format!("sample_prior_seed{}.png", spec.seed)
    }

    fn inpaint(
        &self,
        corrupted: &[f32],
        missing: &[bool],
        steps: usize,
        _seed: u64,
        _stream: u32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        inpaint(&self.vae, corrupted, missing, steps)
    }

    fn inpaint_methods(&self, steps: usize) -> (String, String) {
        (
            "free: one encode -> decode of the corrupted image (posterior mean), removed pixels taken from it".into(),
            format!(
                "clamped: encode -> decode iterated {steps} times, kept pixels fixed, removed ones replaced by the decoding"
            ),
        )
    }
}

fn is_conv(config: &toml::Value) -> bool {
    model_key(config, "architecture").and_then(|v| v.as_str()) == Some("conv")
}

impl ModelFamily for VaeFamily {
    crate::family_training!();

    fn load(&self, run: &RunDir) -> Result<Box<dyn Trained>> {
        Ok(Box::new(load_run(run)?))
    }

    fn inpaints(&self) -> bool {
        true
    }

    fn evaluate(&self, run: &RunDir, opts: &EvalOptions) -> Result<(Value, Vec<String>)> {
        super::eval::evaluate_vae(run, opts)
    }

    fn label(&self, config: &toml::Value) -> String {
        if is_conv(config) {
            "conv VAE"
        } else {
            "MLP VAE"
        }
        .into()
    }

    fn title(&self, config: &toml::Value) -> String {
        format!(
            "{} VAE, latent {}",
            if is_conv(config) {
                "convolutional"
            } else {
                "MLP"
            },
            model_key(config, "latent").map_or("?".into(), ToString::to_string)
        )
    }

    fn training_figures(&self) -> &'static [TrainingFigure] {
        &[
            TrainingFigure {
                key: "val_loss",
                name: "val loss",
                short: "val loss",
                digits: 2,
            },
            TrainingFigure {
                key: "loss",
                name: "train loss",
                short: "train",
                digits: 2,
            },
        ]
    }

    fn report_figures(&self, config: &toml::Value) -> Vec<(String, Vec<FigureSpec>)> {
        let extent = model_key(config, "manifold_extent")
            .and_then(|v| v.as_float())
            .map(|e| format!("[-{e}, {e}]"))
            .unwrap_or_else(|| "a square".to_string());
        let latent = model_key(config, "latent")
            .and_then(|v| v.as_integer())
            .unwrap_or(0);
        let mut latent_figs = vec![
            FigureSpec::grid(
                "reconstructions.png",
                "the first 10 test digits (top) and their reconstructions from the posterior means (bottom)",
            ),
            FigureSpec::chart(
                "latent_scatter.png",
                if latent == 2 {
                    "posterior means of the test digits, coloured by class".to_string()
                } else {
                    format!(
                        "posterior means of the test digits projected on their first two principal components (latent {latent}), coloured by class"
                    )
                },
            ),
        ];
        latent_figs.push(FigureSpec::grid(
            "traversal.png",
            format!(
                "latent traversals: test digit 0's posterior mean with one latent dimension (a row each, at most the first {}) set to {} values from -3 to 3",
                super::figures::TRAVERSAL_DIMS,
                super::figures::TRAVERSAL_STEPS
            ),
        ));
        if latent == 2 {
            latent_figs.push(
                FigureSpec::grid(
                    "manifold.png",
                    format!("decodings over a grid of z in {extent} squared, axes z[0] and z[1]"),
                )
                .wide(),
            );
        }
        vec![
            (
                "Training curves".into(),
                vec![
                    FigureSpec::chart(
                        "loss.png",
                        "loss per epoch: 784 x MSE + KL (training and validation)",
                    ),
                    FigureSpec::chart("loss_parts.png", "the loss's two terms: reconstruction and KL"),
                ],
            ),
            (
                "Samples".into(),
                vec![
                    FigureSpec::grid("samples.png", "64 decodings of z drawn from the prior N(0, I)"),
                    FigureSpec::grid(
                        "interpolation.png",
                        "test digit 0, decodings along the line between its posterior mean and test digit 1's, test digit 1",
                    )
                    .wide(),
                ],
            ),
            ("Latent space and reconstructions".into(), latent_figs),
        ]
    }
}
