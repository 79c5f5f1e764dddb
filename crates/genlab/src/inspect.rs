//! Commands that read a trained run and show what the model does:
//! `genlab sample` and `genlab inpaint`. Each dispatches on the run's family.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::atomic::write_atomic;
use crate::data::PIXELS;
use crate::data::corrupt::remove_nonzero_fraction;
use crate::models::rbm::{self, ChainStart};
use crate::models::{gan, vae};
use crate::rng::{Purpose, stream};
use crate::run::RunDir;
use crate::viz::save_grid;

/// The most images one picture holds (a 100 x 100 grid).
pub const MAX_GRID_IMAGES: usize = 10_000;
/// The most Gibbs steps or encode-decode iterations of `sample` and `inpaint`.
pub const MAX_STEPS: usize = 1_000_000;

/// Options of `genlab sample`.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub n: usize,
    pub steps: usize,
    pub from: ChainStart,
    pub seed: u64,
    pub out: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

/// Draws samples from a run's model and writes them as a grid; returns the
/// PNG path and a description of how the samples were drawn.
pub fn sample(run_root: &Path, opts: &SampleOptions) -> Result<(PathBuf, String)> {
    if opts.n == 0 {
        crate::usage_bail!("-n 0: ask for at least one sample");
    }
    crate::bounded::check_count("-n", opts.n, MAX_GRID_IMAGES, "samples in one grid")?;
    crate::bounded::check_count("--steps", opts.steps, MAX_STEPS, "steps")?;
    let run = RunDir::open(run_root)?;
    let family = run.family()?;
    let cols = (opts.n as f64).sqrt().ceil() as usize;
    match family.as_str() {
        "rbm" => {
            if opts.steps == 0 {
                crate::usage_bail!("--steps 0: a Gibbs chain needs at least one step");
            }
            let loaded = rbm::load_run(&run)?;
            let data = loaded.config.data.load(opts.data_dir.clone())?;
            let samples = rbm::sample_chains(
                &loaded.rbm,
                &data.test,
                opts.n,
                opts.steps,
                opts.from,
                opts.seed,
            );
            let from = match opts.from {
                ChainStart::Noise => "noise",
                ChainStart::Data => "data",
            };
            let path = opts.out.clone().unwrap_or_else(|| {
                run.images().join(format!(
                    "sample_{from}_{}steps_seed{}.png",
                    opts.steps, opts.seed
                ))
            });
            save_grid(&path, &samples, opts.n.div_ceil(cols), cols)?;
            Ok((
                path,
                format!(
                    "{} Gibbs steps from {from}, mean-field visible probabilities",
                    opts.steps
                ),
            ))
        }
        "vae" => {
            let loaded = vae::load_run(&run)?;
            let samples = vae::sample_prior(&loaded.vae, opts.n, opts.seed)?;
            let path = opts.out.clone().unwrap_or_else(|| {
                run.images()
                    .join(format!("sample_prior_seed{}.png", opts.seed))
            });
            save_grid(&path, &samples, opts.n.div_ceil(cols), cols)?;
            Ok((
                path,
                "decoded draws of z ~ N(0, I), decoder means".to_string(),
            ))
        }
        "gan" => {
            let loaded = gan::load_run(&run)?;
            let samples = gan::sample(&loaded.gan, opts.n, opts.seed)?;
            let path = opts.out.clone().unwrap_or_else(|| {
                run.images()
                    .join(format!("sample_noise_seed{}.png", opts.seed))
            });
            save_grid(&path, &samples, opts.n.div_ceil(cols), cols)?;
            Ok((
                path,
                "generator outputs for fresh noise, dropout off".to_string(),
            ))
        }
        other => crate::usage_bail!(
            "{}: sampling a {other} run is not supported",
            run_root.display()
        ),
    }
}

/// Options of `genlab inpaint`.
#[derive(Debug, Clone)]
pub struct InpaintOptions {
    pub remove: Vec<f32>,
    pub n: usize,
    pub steps: usize,
    pub seed: u64,
    pub out: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

/// One fraction's result.
#[derive(Debug, Clone, Serialize)]
pub struct InpaintRow {
    pub fraction: f32,
    pub images: usize,
    pub removed_pixels: usize,
    /// RBM: the seed's way, the unclamped sampler run from the corrupted
    /// image. VAE: one encode -> decode of the corrupted image.
    pub mse_free_chain: f64,
    /// RBM: conditional sampling with the kept pixels clamped. VAE: encode ->
    /// decode iterated with the kept pixels clamped.
    pub mse_clamped: f64,
    pub picture: PathBuf,
}

/// What `genlab inpaint` did.
#[derive(Debug, Clone, Serialize)]
pub struct InpaintReport {
    pub family: String,
    /// How the two reconstructions were made.
    pub free_method: String,
    pub clamped_method: String,
    pub rows: Vec<InpaintRow>,
}

/// Removes each fraction of the first `n` test digits' ink and reconstructs
/// it two ways; writes one PNG per fraction and `inpaint.json` into the run.
pub fn inpaint(run_root: &Path, opts: &InpaintOptions) -> Result<InpaintReport> {
    if opts.n == 0 {
        crate::usage_bail!("--n 0: inpaint at least one digit");
    }
    crate::bounded::check_count("--n", opts.n, MAX_GRID_IMAGES, "digits")?;
    crate::bounded::check_count("--steps", opts.steps, MAX_STEPS, "steps")?;
    if opts.remove.is_empty() {
        crate::usage_bail!("--remove: give at least one fraction, such as 0.2,0.5,0.8");
    }
    for &p in &opts.remove {
        if !(0.0..1.0).contains(&p) || p == 0.0 {
            crate::usage_bail!("--remove {p}: each fraction must be in (0, 1)");
        }
    }
    let run = RunDir::open(run_root)?;
    let _lock = crate::run::RunLock::acquire(&run.root, "inpainting")?;
    let family = run.family()?;
    if opts.steps == 0 {
        crate::usage_bail!("--steps 0: use at least one step");
    }
    enum Model {
        Rbm(rbm::LoadedRbm),
        Vae(vae::LoadedVae),
    }
    let (model, data_config) = match family.as_str() {
        "rbm" => {
            let m = rbm::load_run(&run)?;
            let d = m.config.data.clone();
            (Model::Rbm(m), d)
        }
        "vae" => {
            let m = vae::load_run(&run)?;
            let d = m.config.data.clone();
            (Model::Vae(m), d)
        }
        other => crate::usage_bail!(
            "{}: inpainting a {other} run is not supported",
            run_root.display()
        ),
    };
    let data = data_config.load(opts.data_dir.clone())?;
    let n = opts.n.min(data.test.len());
    let originals = rbm::first_rows(&data.test, n);
    let out_dir = opts.out.clone().unwrap_or_else(|| run.images());
    let mut rows = Vec::new();
    for (fi, &p) in opts.remove.iter().enumerate() {
        let mut rng = stream(opts.seed, Purpose::Corrupt, fi as u32);
        let mut corrupted = Vec::with_capacity(originals.len());
        let mut missing = Vec::with_capacity(originals.len());
        for img in originals.chunks_exact(PIXELS) {
            let (c, m) = remove_nonzero_fraction(img, p, &mut rng);
            corrupted.extend(c);
            missing.extend(m);
        }
        let (free, clamped) = match &model {
            Model::Rbm(loaded) => {
                let mut chain_rng = stream(opts.seed, Purpose::Sample, fi as u32);
                let free = loaded
                    .rbm
                    .gibbs_from_visible(&corrupted, opts.steps, &mut chain_rng);
                let clamped = rbm::inpaint_clamped(
                    &loaded.rbm,
                    &corrupted,
                    &missing,
                    opts.steps,
                    opts.steps / 4,
                    &mut chain_rng,
                );
                (free, clamped)
            }
            Model::Vae(loaded) => vae::inpaint(&loaded.vae, &corrupted, &missing, opts.steps)?,
        };
        // Rows of 16 digits: original / corrupted / free chain / clamped.
        let per_row = 16.min(n);
        let mut tiles = Vec::new();
        for start in (0..n).step_by(per_row) {
            for source in [&originals, &corrupted, &free, &clamped] {
                for k in start..start + per_row {
                    if k < n {
                        tiles.extend_from_slice(&source[k * PIXELS..(k + 1) * PIXELS]);
                    } else {
                        tiles.extend(std::iter::repeat_n(0.0, PIXELS));
                    }
                }
            }
        }
        let picture = out_dir.join(format!("inpaint_{:02}.png", (p * 100.0).round() as u32));
        save_grid(&picture, &tiles, 4 * n.div_ceil(per_row), per_row)?;
        rows.push(InpaintRow {
            fraction: p,
            images: n,
            removed_pixels: missing.iter().filter(|&&m| m).count(),
            mse_free_chain: rbm::masked_mse(&free, &originals, &missing),
            mse_clamped: rbm::masked_mse(&clamped, &originals, &missing),
            picture,
        });
    }
    let (free_method, clamped_method) = match &model {
        Model::Rbm(_) => (
            format!("free chain: the seed's way, {} Gibbs steps from the corrupted image, unclamped", opts.steps),
            format!("clamped: {} Gibbs steps with the kept pixels fixed, removed ones resampled (mean of the last quarter)", opts.steps),
        ),
        Model::Vae(_) => (
            "free: one encode -> decode of the corrupted image (posterior mean), removed pixels taken from it".to_string(),
            format!("clamped: encode -> decode iterated {} times, kept pixels fixed, removed ones replaced by the decoding", opts.steps),
        ),
    };
    let report = InpaintReport {
        family,
        free_method,
        clamped_method,
        rows,
    };
    write_atomic(
        &run.root.join("inpaint.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok(report)
}
