//! `genlab eval` for GAN runs: the generator's likelihood under a Gaussian
//! observation model of pixel/255 by AIS, with its BDMC gap (a GAN has no
//! likelihood of its own; this puts it on one scale with the VAEs).

use anyhow::Result;
use serde_json::{Value, json};

use super::{Noise, load_run};
use crate::data::PixelView;
use crate::data::batches::split_to_f32;
use crate::eval::decoder_ais::{GaussianMean, Prior};
use crate::eval::decoder_likelihood::{self, DecoderData, DecoderModel, ObservationFamily};
use crate::eval::options::EvalOptions;
use crate::rng::{Purpose, stream};
use crate::run::RunDir;

pub fn evaluate_gan(run: &RunDir, opts: &EvalOptions) -> Result<(Value, Vec<String>)> {
    let loaded = load_run(run)?;
    let gan = &loaded.gan;
    let mut json = json!({
        "run": run.root.display().to_string(),
        "family": "gan",
        "preset": loaded.config.preset,
        "seed": opts.seed,
    });
    let mut lines = vec![
        format!("run              {}", run.root.display()),
        format!(
            "model            MLP GAN, latent {} ({})",
            gan.config.latent, loaded.config.preset
        ),
    ];
    let sizes = opts.decoder_ais.sizes(decoder_likelihood::MLP_SIZES);
    if sizes.images == 0 {
        return Ok((json, lines));
    }
    let data = loaded.config.data.load(opts.data_dir.clone())?;
    // The unit view draws nothing; the generator is only a formality.
    let images = split_to_f32(
        opts.on.of(&data)?,
        PixelView::Unit,
        &mut stream(opts.seed, Purpose::Eval, 0),
    );
    let params = gan
        .g
        .iter()
        .map(|p| crate::models::tensors::download(p.clone()))
        .collect::<Result<Vec<_>>>()?;
    let model = DecoderModel {
        net: gan.g_net.clone(),
        params: &params,
        prior: match gan.config.noise {
            Noise::Uniform => Prior::Uniform,
            Noise::Normal => Prior::StandardNormal,
        },
        // The generator's tanh images in [-1, 1], compared on [0, 1].
        observation: ObservationFamily::Gaussian(GaussianMean::Affine {
            scale: 0.5,
            shift: 0.5,
        }),
        chunk: 2048,
        defaults: decoder_likelihood::MLP_SIZES,
    };
    let data = DecoderData {
        images: &images,
        split: opts.on.name(),
        held_out: decoder_likelihood::held_out_images(&data, opts.on, sizes.sigma_images),
    };
    if let Some(report) = decoder_likelihood::evaluate(model, data, &opts.decoder_ais, opts.seed)? {
        lines.extend(report.lines);
        json["likelihood"] = json!({ "decoder_ais": Value::Object(report.json) });
    }
    Ok((json, lines))
}
