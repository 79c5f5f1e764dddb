//! The GAN's family interface: sampling fresh noise, no inpainting, the
//! generator's likelihood under a Gaussian observation model (`eval.rs`),
//! its labels and figures.

use anyhow::Result;
use serde_json::Value;

use super::train::GanFamily;
use super::{LoadedGan, load_run, sample};
use crate::config::DataConfig;
use crate::eval::options::EvalOptions;
use crate::models::family::{FigureSpec, ModelFamily, SampleSpec, Trained, TrainingFigure};
use crate::run::RunDir;

impl Trained for LoadedGan {
    fn image(&self) -> crate::data::ImageShape {
        self.gan.image
    }

    fn data(&self) -> &DataConfig {
        &self.config.data
    }

    fn sample(&self, spec: &SampleSpec) -> Result<Vec<f32>> {
        sample(&self.gan, spec.n, spec.seed)
    }

    fn sample_how(&self, _spec: &SampleSpec) -> String {
        "generator outputs for fresh noise, dropout off".into()
    }

    fn sample_file(&self, spec: &SampleSpec) -> String {
        format!("sample_noise_seed{}.png", spec.seed)
    }

    fn inpaint(
        &self,
        _corrupted: &[f32],
        _missing: &[bool],
        _steps: usize,
        _seed: u64,
        _stream: u32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        crate::usage_bail!("a GAN has no encoder or conditional to fill in pixels with")
    }

    fn inpaint_methods(&self, _steps: usize) -> (String, String) {
        (String::new(), String::new())
    }
}

impl ModelFamily for GanFamily {
    crate::family_training!();

    fn load(&self, run: &RunDir) -> Result<Box<dyn Trained>> {
        Ok(Box::new(load_run(run)?))
    }

    fn inpaints(&self) -> bool {
        false
    }

    fn evaluate(&self, run: &RunDir, opts: &EvalOptions) -> Result<(Value, Vec<String>)> {
        super::eval::evaluate_gan(run, opts)
    }

    fn label(&self, _config: &toml::Value) -> String {
        "MLP GAN".into()
    }

    fn title(&self, _config: &toml::Value) -> String {
        "MLP GAN".into()
    }

    fn training_figures(&self) -> &'static [TrainingFigure] {
        &[
            TrainingFigure {
                key: "d_loss",
                name: "d loss",
                short: "d",
                digits: 2,
            },
            TrainingFigure {
                key: "g_loss",
                name: "g loss",
                short: "g",
                digits: 2,
            },
        ]
    }

    fn report_figures(&self, _config: &toml::Value) -> Vec<(String, Vec<FigureSpec>)> {
        vec![
            (
                "Training curves".into(),
                vec![
                    FigureSpec::chart("loss.png", "discriminator and generator loss per epoch"),
                    FigureSpec::chart(
                        "discriminator_outputs.png",
                        "mean D(x) on real and D(G(z)) on generated images per epoch",
                    ),
                ],
            ),
            (
                "Samples".into(),
                vec![
                    FigureSpec::grid("samples.png", "16 samples from fresh noise"),
                    FigureSpec::grid(
                        "fixed.png",
                        "the fixed noise drawn before training, after the last epoch",
                    ),
                    FigureSpec::grid(
                        "evolution.png",
                        "the same fixed noise after epochs 1-10 and every 5th epoch (one row per epoch, top to bottom)",
                    )
                    .wide(),
                ],
            ),
        ]
    }

    fn epoch_grid_prefix(&self) -> &'static str {
        "fixed_epoch_"
    }
}
