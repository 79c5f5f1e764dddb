//! `genlab eval`'s decoder likelihood, shared by the VAEs and the GAN:
//! log p(x) under the decoder's observation model by AIS with HMC, its
//! BDMC gap on simulated data, and, for a Gaussian observation model, the
//! standard deviation chosen on held-out images (see [`decoder_ais`]).
//! A VAE and a GAN evaluated here on the same Gaussian model of pixel/255
//! are on one scale.
//!
//! [`decoder_ais`]: crate::eval::decoder_ais

use std::time::Instant;

use anyhow::Result;
use serde_json::{Map, Value, json};

use crate::bounded::check_count;
use crate::eval::decoder_ais::{
    Annealing, GaussianMean, NetworkDecoder, Observation, Prior, SIGMA_GRID, bdmc, choose_sigma,
    forward_ais,
};
use crate::eval::options::{
    DecoderAisOptions, DecoderAisSizes, MAX_AIS_STEPS, MAX_DECODER_AIS_CHAINS,
    MAX_DECODER_AIS_IMAGES, MAX_LEAPFROG,
};
use crate::nn::Network;
use crate::rng::{Purpose, stream};

/// Refuses sizes that cannot give a figure, before any work.
pub fn check_options(o: &DecoderAisOptions) -> Result<()> {
    check_count(
        "--decoder-ais-images",
        o.images.unwrap_or(0),
        MAX_DECODER_AIS_IMAGES,
        "images",
    )?;
    check_count(
        "--bdmc-images",
        o.bdmc_images.unwrap_or(0),
        MAX_DECODER_AIS_IMAGES,
        "images",
    )?;
    check_count(
        "--sigma-images",
        o.sigma_images.unwrap_or(0),
        MAX_DECODER_AIS_IMAGES,
        "images",
    )?;
    check_count(
        "--decoder-ais-chains",
        o.chains.unwrap_or(0),
        MAX_DECODER_AIS_CHAINS,
        "chains per image",
    )?;
    check_count(
        "--decoder-ais-steps",
        o.steps.unwrap_or(0),
        MAX_AIS_STEPS,
        "intermediate distributions",
    )?;
    check_count(
        "--hmc-leapfrog",
        o.leapfrog.unwrap_or(0),
        MAX_LEAPFROG,
        "leapfrog steps",
    )?;
    if let Some(c) = o.chains
        && c < 2
    {
        crate::usage_bail!(
            "--decoder-ais-chains {c}: at least 2 chains per image are needed for an uncertainty"
        );
    }
    if let Some(s) = o.steps
        && s < 10
    {
        crate::usage_bail!(
            "--decoder-ais-steps {s}: use at least 10 (hundreds or more for a trustworthy estimate)"
        );
    }
    if o.leapfrog == Some(0) {
        crate::usage_bail!("--hmc-leapfrog 0: an HMC trajectory needs at least 1 leapfrog step");
    }
    if o.sigma_images == Some(0) && o.sigma.is_none() {
        crate::usage_bail!(
            "--sigma-images 0: the Gaussian's standard deviation needs held-out images to be chosen on, or give it with --sigma"
        );
    }
    if let Some(s) = o.sigma
        && !(s.is_finite() && s > 0.0)
    {
        crate::usage_bail!(
            "--sigma {s}: must be a positive number (a standard deviation of pixel/255 values, such as 0.1)"
        );
    }
    Ok(())
}

/// The decoder's observation model before a Gaussian's deviation is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ObservationFamily {
    Bernoulli,
    Gaussian(GaussianMean),
}

/// A model's decoder as decoder AIS needs it.
pub struct DecoderModel<'a> {
    /// Latent codes to one output per pixel.
    pub net: Network,
    /// Its parameters on the host, in the network's order.
    pub params: &'a [Vec<f32>],
    pub prior: Prior,
    pub observation: ObservationFamily,
    /// Rows per executor pass.
    pub chunk: usize,
    /// The work sizes unless the user gives others.
    pub defaults: DecoderAisSizes,
}

/// The images decoder AIS measures, and those a Gaussian's deviation is
/// chosen on.
pub struct DecoderData<'a> {
    /// The split's images as the observation model reads them (binary for
    /// Bernoulli, pixel/255 for a Gaussian); the first ones are used.
    pub images: &'a [f32],
    /// Its name (test, validation).
    pub split: &'a str,
    /// Images held out of training, pixel/255, and what they are.
    pub held_out: (Vec<f32>, String),
}

/// What decoder AIS found, for the family's report.
pub struct DecoderReport {
    pub json: Map<String, Value>,
    pub lines: Vec<String>,
    /// The observation model with its deviation.
    pub observation: Observation,
    /// How many of the split's images were measured.
    pub images: usize,
}

/// Default sizes for MLP decoders (about 2 minutes for an MLP VAE on 2
/// cores).
pub const MLP_SIZES: DecoderAisSizes = DecoderAisSizes {
    images: 100,
    chains: 16,
    steps: 500,
    leapfrog: 10,
    bdmc_images: 20,
    sigma_images: 20,
};

/// Default sizes for convolutional decoders, whose passes cost ~100x an
/// MLP's per code.
pub const CONV_SIZES: DecoderAisSizes = DecoderAisSizes {
    images: 20,
    chains: 4,
    steps: 200,
    leapfrog: 5,
    bdmc_images: 5,
    sigma_images: 10,
};

/// The σ-choosing runs are this much shorter than the main one (a
/// ranking of candidates far apart needs less precision).
const SIGMA_RUN_FRACTION: usize = 4;

/// Runs decoder AIS (unless asked for 0 images) on `data`.
pub fn evaluate(
    model: DecoderModel,
    data: DecoderData,
    options: &DecoderAisOptions,
    seed: u64,
) -> Result<Option<DecoderReport>> {
    let sizes = options.sizes(model.defaults);
    if sizes.images == 0 {
        return Ok(None);
    }
    let dim = model.net.output_size();
    let n = sizes.images.min(data.images.len() / dim);
    let images = &data.images[..n * dim];
    let main = Annealing {
        chains: sizes.chains,
        steps: sizes.steps,
        leapfrog: sizes.leapfrog,
    };
    let short = Annealing {
        chains: (sizes.chains / SIGMA_RUN_FRACTION).max(2),
        steps: (sizes.steps / SIGMA_RUN_FRACTION).max(10),
        ..main
    };
    let (held_out, held_out_desc) = &data.held_out;
    let sigma_images = sizes.sigma_images.min(held_out.len() / dim);
    let choosing =
        matches!(model.observation, ObservationFamily::Gaussian(_)) && options.sigma.is_none();
    if choosing && sigma_images == 0 {
        crate::usage_bail!(
            "no held-out images to choose the Gaussian's standard deviation on; give it with --sigma"
        );
    }
    let observation = match model.observation {
        ObservationFamily::Bernoulli => Observation::Bernoulli,
        ObservationFamily::Gaussian(mean) => Observation::Gaussian {
            mean,
            sigma: options.sigma.unwrap_or(SIGMA_GRID[0]),
        },
    };
    let mut dec = NetworkDecoder::new(
        model.net,
        model.params,
        observation,
        model.prior,
        model.chunk,
    );
    let transitions = sizes.steps * (1 + 2 * (sizes.bdmc_images > 0) as usize)
        + if choosing {
            SIGMA_GRID.len() * short.steps
        } else {
            0
        };
    let bar = crate::progress::count_bar(
        transitions as u64,
        "decoder AIS",
        crate::progress::interactive(),
    );
    dec.progress = Some(bar.clone());
    let t0 = Instant::now();
    let mut json = Map::new();
    let mut lines = Vec::new();
    if choosing {
        let (sigma, tried) = choose_sigma(
            &mut dec,
            &held_out[..sigma_images * dim],
            &SIGMA_GRID,
            short,
            |i| stream(seed, Purpose::DecoderAis, 100 + i as u32),
        );
        json.insert("sigma".into(), json!(sigma));
        json.insert(
            "sigma_chosen_on".into(),
            json!(format!("{sigma_images} {held_out_desc}")),
        );
        json.insert(
            "sigma_candidates".into(),
            json!(
                tried
                    .iter()
                    .map(|(s, ll)| json!({"sigma": s, "log_likelihood": ll}))
                    .collect::<Vec<_>>()
            ),
        );
        json.insert(
            "sigma_annealing".into(),
            json!({"chains": short.chains, "steps": short.steps, "leapfrog": short.leapfrog}),
        );
        lines.push(format!(
            "decoder sigma    {sigma} (the best of {} by AIS on {sigma_images} {held_out_desc}: {})",
            tried.len(),
            tried
                .iter()
                .map(|(s, ll)| format!("{s} {ll:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    } else if let Observation::Gaussian { sigma, .. } = dec.observation {
        json.insert("sigma".into(), json!(sigma));
        json.insert("sigma_chosen_on".into(), json!("given (--sigma)"));
    }
    let observation = dec.observation;
    let est = forward_ais(
        &mut dec,
        images,
        main,
        &mut stream(seed, Purpose::DecoderAis, 0),
    );
    let ais_seconds = t0.elapsed().as_secs_f64();
    json.insert(
        "observation".into(),
        json!(match observation {
            Observation::Bernoulli => "bernoulli",
            Observation::Gaussian { .. } => "gaussian",
        }),
    );
    json.insert("observation_model".into(), json!(observation.describe()));
    json.insert("prior".into(), json!(dec.prior.name()));
    json.insert("split".into(), json!(data.split));
    json.insert("images".into(), json!(n));
    json.insert("chains".into(), json!(main.chains));
    json.insert("steps".into(), json!(main.steps));
    json.insert("leapfrog".into(), json!(main.leapfrog));
    json.insert("log_likelihood".into(), json!(est.mean()));
    json.insert("std_error".into(), json!(est.std_error()));
    json.insert("chain_std_error".into(), json!(est.chain_stderr));
    json.insert("acceptance".into(), json!(est.acceptance));
    json.insert("seconds".into(), json!(ais_seconds));
    lines.push(format!(
        "decoder model    {}, prior {}",
        observation.describe(),
        dec.prior.name()
    ));
    lines.push(format!(
        "decoder AIS      {:.3} nats per image (+/- {:.3} s.e. over images, {:.3} over chains) on the first {n} {} images; {} chains x {} steps, HMC with {} leapfrog steps ({:.0}% accepted), {ais_seconds:.1} s",
        est.mean(),
        est.std_error(),
        est.chain_stderr,
        data.split,
        main.chains,
        main.steps,
        main.leapfrog,
        100.0 * est.acceptance
    ));
    if sizes.bdmc_images > 0 {
        let t1 = Instant::now();
        let check = bdmc(
            &mut dec,
            sizes.bdmc_images,
            main,
            &mut stream(seed, Purpose::DecoderAis, 1),
        );
        let seconds = t1.elapsed().as_secs_f64();
        json.insert(
            "bdmc".into(),
            json!({
                "images": sizes.bdmc_images,
                "data": "simulated from the model: z ~ prior, x ~ p(x|z)",
                "lower": check.lower.mean(),
                "upper": check.upper.mean(),
                "gap": check.gap(),
                "lower_chain_std_error": check.lower.chain_stderr,
                "upper_chain_std_error": check.upper.chain_stderr,
                "seconds": seconds,
            }),
        );
        lines.push(format!(
            "BDMC             {:.3} (forward) to {:.3} (reverse): gap {:.3} nats on {} images simulated from the model, same annealing, {seconds:.1} s",
            check.lower.mean(),
            check.upper.mean(),
            check.gap(),
            sizes.bdmc_images
        ));
    }
    bar.finish_and_clear();
    Ok(Some(DecoderReport {
        json,
        lines,
        observation,
        images: n,
    }))
}

/// The held-out images of a run's data for choosing a deviation: its
/// validation split when it has one and the figures are on another split,
/// else its first training images.
pub fn held_out_images(
    data: &crate::data::Dataset,
    on: crate::eval::EvalSplit,
    n: usize,
) -> (Vec<f32>, String) {
    use crate::data::batches::first_rows;
    match (&data.validation, on) {
        (Some(v), crate::eval::EvalSplit::Test) => (
            first_rows(v, n),
            "validation images (held out of training)".into(),
        ),
        _ => (
            first_rows(&data.train, n),
            "training images (the run holds out no other split)".into(),
        ),
    }
}
