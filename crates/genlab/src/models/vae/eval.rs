//! `genlab eval` for VAE runs: the seed's loss, the ELBO and the
//! importance-sampled log-likelihood of the test set.

use std::time::Instant;

use anyhow::Result;
use rayon::prelude::*;
use serde_json::{Value, json};

use super::{self as vae, Architecture, Likelihood, Vae};
use crate::cpu::{bernoulli_log_likelihood, sigmoid_squared_error};
use crate::eval::decoder_ais::{GaussianMean, Observation, Prior};
use crate::eval::decoder_likelihood::{self, ObservationFamily};
use crate::eval::importance::{LatentModel, estimate, std_error};
use crate::eval::options::EvalOptions;
use crate::nn::Mode;
use crate::nn::host::HostNetwork;
use crate::rng::{Purpose, fill_standard_normal, stream};
use crate::run::RunDir;

/// The constant in -log N(x; x_hat, sigma^2 I) with sigma^2 = 1/2 over
/// `pixels` values, the Gaussian whose negative log-density is exactly the
/// seed's sum of squared errors plus this: pixels/2 ln(2 pi sigma^2) (392
/// ln(pi) for MNIST's 784).
pub fn gaussian_constant(pixels: usize) -> f64 {
    pixels as f64 / 2.0 * std::f64::consts::PI.ln()
}

/// The variance of the Gaussian decoder whose negative log-density is the
/// seed's 784 x MSE plus a constant.
pub const SEED_VARIANCE: f64 = 0.5;

/// Importance samples per test image unless `--k` says otherwise. The conv
/// decoder costs ~30x the MLP's per sample, so it gets fewer by default.
pub fn default_k(architecture: Architecture) -> usize {
    match architecture {
        Architecture::Mlp => 5000,
        Architecture::Conv => 500,
    }
}

/// The VAE as the estimator sees it.
pub struct VaeDensity<'a> {
    pub vae: &'a Vae,
    pub likelihood: Likelihood,
    /// The Gaussian decoder's variance (MSE models): 1/2 makes its negative
    /// log-density the seed's loss plus a constant.
    pub variance: f64,
    /// The parameters on the host, to decode the many samples with genlab's
    /// CPU kernels instead of burn's generic path (CPU runs only).
    pub host_decoder: Option<Vec<Vec<f32>>>,
}

impl<'a> VaeDensity<'a> {
    pub fn new(vae: &'a Vae, likelihood: Likelihood, on_cpu: bool) -> Result<Self> {
        let host_decoder = if on_cpu {
            Some(
                vae.params
                    .iter()
                    .map(|p| crate::models::tensors::download(p.clone()))
                    .collect::<Result<Vec<_>>>()?,
            )
        } else {
            None
        };
        Ok(VaeDensity {
            vae,
            likelihood,
            variance: SEED_VARIANCE,
            host_decoder,
        })
    }

    fn logits(&self, z: &[f32]) -> Result<Vec<f32>> {
        let Some(w) = &self.host_decoder else {
            return self.vae.decode_logits(z);
        };
        // The decoder as its description says, on the CPU executor, in
        // chunks that keep its patch matrices small.
        const CHUNK: usize = 256;
        let net = &self.vae.net;
        let mut decoder = HostNetwork::new(net.decoder.clone());
        decoder.mode = Mode::Infer;
        let mut out = Vec::with_capacity(z.len() / net.latent * net.decoder.output_size());
        for zc in z.chunks(CHUNK * net.latent) {
            let rows = zc.len() / net.latent;
            out.extend_from_slice(decoder.forward(&w[net.encoder_params..], zc, rows, &[]));
        }
        Ok(out)
    }
}

impl LatentModel for VaeDensity<'_> {
    fn latent(&self) -> usize {
        self.vae.net.latent
    }

    fn dim(&self) -> usize {
        self.vae.net.image.pixels()
    }

    fn posterior(&self, x: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        self.vae.encode(x)
    }

    fn log_likelihood(&self, x: &[f32], z: &[f32], s: usize) -> Result<Vec<f64>> {
        let logits = self.logits(z)?;
        let pixels = self.dim();
        let var = self.variance;
        let c = 0.5 * pixels as f64 * (std::f64::consts::TAU * var).ln();
        Ok(logits
            .par_chunks_exact(pixels)
            .enumerate()
            .map(|(r, l)| {
                let img = &x[(r / s) * pixels..(r / s + 1) * pixels];
                match self.likelihood {
                    Likelihood::Bernoulli => bernoulli_log_likelihood(l, img) as f64,
                    Likelihood::Mse => -(0.5 * sigmoid_squared_error(l, img) as f64 / var) - c,
                }
            })
            .collect())
    }
}

pub fn evaluate_vae(run: &RunDir, opts: &EvalOptions) -> Result<(Value, Vec<String>)> {
    let loaded = vae::load_run(run)?;
    let model = &loaded.vae;
    let cfg = &loaded.config.model;
    let k = opts.k.unwrap_or(default_k(cfg.architecture));
    if k == 0 {
        crate::usage_bail!(
            "--k 0: use at least one importance sample per image (5000 is the default)"
        );
    }
    let data = loaded.config.data.load(opts.data_dir.clone())?;
    let split = opts.on.name();
    let test = vae::test_pixels(opts.on.of(&data)?, cfg.likelihood, opts.seed);
    let n = test.len() / model.net.image.pixels();
    let latent = model.net.latent;

    // The seed's loss, with one fixed-seed reparameterisation per image.
    let mut eps = vec![0.0f32; n * latent];
    fill_standard_normal(&mut stream(opts.seed, Purpose::Eval, 20), &mut eps);
    let (recon, kl) = model.loss_terms(&test, &eps, cfg.likelihood)?;

    let density = VaeDensity::new(
        model,
        cfg.likelihood,
        loaded.config.device == crate::device::DeviceKind::Cpu,
    )?;
    let rows_per_pass = match cfg.architecture {
        Architecture::Mlp => 5000,
        Architecture::Conv => 1000,
    };
    let bar = crate::progress::count_bar(
        n as u64,
        "importance sampling",
        crate::progress::interactive(),
    );
    let t0 = Instant::now();
    let est = estimate(&density, &test, k, rows_per_pass, opts.seed, |m| {
        bar.inc(m as u64)
    })?;
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let (log_px, elbo) = (est.mean_log_px(), est.mean_elbo());
    let (se_px, se_elbo) = (std_error(&est.log_px), std_error(&est.elbo));
    let decoder = decoder_ais(&loaded, &data, &test, density, k, rows_per_pass, opts)?;

    let d = model.net.image.pixels();
    let (data_desc, density_desc) = match cfg.likelihood {
        Likelihood::Bernoulli => (
            format!(
                "{n} {split} images binarised by one Bernoulli(pixel/255) draw each, seed {}",
                opts.seed
            ),
            "Bernoulli decoder: a probability mass on binary images".to_string(),
        ),
        Likelihood::Mse => (
            format!("{n} {split} images as pixel/255"),
            format!(
                "Gaussian decoder N(x_hat, 1/2 I): the density whose negative log is the seed's {d} x MSE plus {:.3} (= {} ln pi); a density on [0,1]^{d}, so it depends on this variance and is not comparable with Bernoulli figures",
                gaussian_constant(d),
                d as f64 / 2.0
            ),
        ),
    };
    let mut lines = vec![
        format!("run              {}", run.root.display()),
        format!(
            "model            {} VAE, latent {} ({})",
            match cfg.architecture {
                Architecture::Mlp => "MLP",
                Architecture::Conv => "convolutional",
            },
            latent,
            loaded.config.preset
        ),
        format!("test data        {data_desc}"),
        format!(
            "seed loss        {:.3} per image (reconstruction {recon:.3} + KL {kl:.3}; one reparameterisation per image)",
            recon + kl
        ),
        format!("likelihood       {density_desc}"),
        format!(
            "ELBO             {elbo:.3} nats per image (+/- {se_elbo:.3} s.e. over images; KL exact, E_q over {k} draws)"
        ),
        format!(
            "log p(x)         {log_px:.3} nats per image (+/- {se_px:.3}), importance-sampled with k = {k}, {seconds:.1} s"
        ),
        format!(
            "gap              {:.3} nats (log p(x) - ELBO)",
            log_px - elbo
        ),
    ];
    let mut json = json!({
        "run": run.root.display().to_string(),
        "family": "vae",
        "preset": loaded.config.preset,
        "seed": opts.seed,
        "test_images": n,
        "split": split,
        "loss": {
            "definition": match cfg.likelihood {
                Likelihood::Mse => format!("{d} x MSE + KL per image (sum of squared errors over pixels + KL)"),
                Likelihood::Bernoulli => "binary cross-entropy summed over pixels + KL per image".to_string(),
            },
            "test_loss": recon + kl,
            "test_recon": recon,
            "test_kl": kl,
        },
        "likelihood": {
            "decoder": match cfg.likelihood {
                Likelihood::Mse => "gaussian, variance 1/2",
                Likelihood::Bernoulli => "bernoulli",
            },
            "constant_included": match cfg.likelihood {
                Likelihood::Mse => Some(gaussian_constant(model.net.image.pixels())),
                Likelihood::Bernoulli => None,
            },
            "binarisation": match cfg.likelihood {
                Likelihood::Mse => None,
                Likelihood::Bernoulli => Some("one Bernoulli(pixel/255) draw per pixel, fixed seed"),
            },
            "elbo": elbo,
            "elbo_std_error": se_elbo,
            "test_log_likelihood": log_px,
            "test_log_likelihood_std_error": se_px,
            "importance_samples": k,
            "seconds": seconds,
        }
    });
    if let Some(report) = decoder {
        lines.extend(report.lines);
        json["likelihood"]["decoder_ais"] = Value::Object(report.json);
    }
    Ok((json, lines))
}

/// Decoder AIS and BDMC (see [`crate::eval::decoder_likelihood`]) on the
/// first test images, with the importance-sampled estimate under the same
/// observation model beside it (`density` with the chosen variance).
fn decoder_ais(
    loaded: &vae::LoadedVae,
    data: &crate::data::Dataset,
    test: &[f32],
    mut density: VaeDensity,
    k: usize,
    rows_per_pass: usize,
    opts: &EvalOptions,
) -> Result<Option<decoder_likelihood::DecoderReport>> {
    let net = &loaded.vae.net;
    // The host copy the density holds on the CPU; downloaded otherwise.
    let downloaded;
    let params: &[Vec<f32>] = match &density.host_decoder {
        Some(p) => p,
        None => {
            downloaded = loaded
                .vae
                .params
                .iter()
                .map(|p| crate::models::tensors::download(p.clone()))
                .collect::<Result<Vec<_>>>()?;
            &downloaded
        }
    };
    let (defaults, chunk) = match net.architecture {
        Architecture::Mlp => (decoder_likelihood::MLP_SIZES, 2048),
        Architecture::Conv => (decoder_likelihood::CONV_SIZES, 128),
    };
    let sizes = opts.decoder_ais.sizes(defaults);
    let model = decoder_likelihood::DecoderModel {
        net: net.decoder.clone(),
        params: &params[net.encoder_params..],
        prior: Prior::StandardNormal,
        observation: match loaded.config.model.likelihood {
            Likelihood::Bernoulli => ObservationFamily::Bernoulli,
            Likelihood::Mse => ObservationFamily::Gaussian(GaussianMean::Sigmoid),
        },
        chunk,
        defaults,
    };
    let data = decoder_likelihood::DecoderData {
        images: test,
        split: opts.on.name(),
        held_out: decoder_likelihood::held_out_images(data, opts.on, sizes.sigma_images),
    };
    let Some(mut report) = decoder_likelihood::evaluate(model, data, &opts.decoder_ais, opts.seed)?
    else {
        return Ok(None);
    };
    // Importance sampling with the encoder on the same images and model.
    let d = net.image.pixels();
    if let Observation::Gaussian { sigma, .. } = report.observation {
        density.variance = sigma * sigma;
    }
    let t0 = Instant::now();
    let est = estimate(
        &density,
        &test[..report.images * d],
        k,
        rows_per_pass,
        opts.seed,
        |_| {},
    )?;
    let seconds = t0.elapsed().as_secs_f64();
    report.json.insert(
        "importance_sampled_same_images".into(),
        json!({
            "log_likelihood": est.mean_log_px(),
            "std_error": std_error(&est.log_px),
            "importance_samples": k,
            "seconds": seconds,
        }),
    );
    report.lines.push(format!(
        "IS, same model   {:.3} nats per image (k = {k}, the encoder's proposal, the same images and observation model; {seconds:.1} s)",
        est.mean_log_px()
    ));
    Ok(Some(report))
}
