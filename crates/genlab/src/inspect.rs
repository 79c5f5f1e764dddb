//! Commands that read a trained run and show what the model does:
//! `genlab sample` and `genlab inpaint`, through the run's family interface.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::atomic::write_atomic;
use crate::data::corrupt::remove_nonzero_fraction;
use crate::models::family::{self, SampleSpec};
use crate::models::rbm::{self, ChainStart};
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
    let model = family::of_run(&run)?.load(&run)?;
    let spec = SampleSpec {
        n: opts.n,
        steps: opts.steps,
        from: opts.from,
        seed: opts.seed,
        data_dir: opts.data_dir.clone(),
    };
    let samples = model.sample(&spec)?;
    let path = opts
        .out
        .clone()
        .unwrap_or_else(|| run.images().join(model.sample_file(&spec)));
    let cols = (opts.n as f64).sqrt().ceil() as usize;
    save_grid(&path, &samples, model.image(), opts.n.div_ceil(cols), cols)?;
    Ok((path, model.sample_how(&spec)))
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
    if opts.steps == 0 {
        crate::usage_bail!("--steps 0: use at least one step");
    }
    let family = family::of_run(&run)?;
    if !family.inpaints() {
        crate::usage_bail!(
            "{}: inpainting a {} run is not supported (it has no encoder or conditional)",
            run_root.display(),
            family.name()
        );
    }
    let model = family.load(&run)?;
    let data_config = model.data().clone();
    let data = data_config.load(opts.data_dir.clone())?;
    let n = opts.n.min(data.test.len());
    let originals = crate::data::batches::first_rows(&data.test, n);
    let image = model.image();
    let per = image.pixels();
    let out_dir = opts.out.clone().unwrap_or_else(|| run.images());
    let mut rows = Vec::new();
    for (fi, &p) in opts.remove.iter().enumerate() {
        let mut rng = stream(opts.seed, Purpose::Corrupt, fi as u32);
        let mut corrupted = Vec::with_capacity(originals.len());
        let mut missing = Vec::with_capacity(originals.len());
        for img in originals.chunks_exact(per) {
            let (c, m) = remove_nonzero_fraction(img, p, &mut rng);
            corrupted.extend(c);
            missing.extend(m);
        }
        let (free, clamped) =
            model.inpaint(&corrupted, &missing, opts.steps, opts.seed, fi as u32)?;
        // Rows of 16 digits: original / corrupted / free chain / clamped.
        let per_row = 16.min(n);
        let mut tiles = Vec::new();
        for start in (0..n).step_by(per_row) {
            for source in [&originals, &corrupted, &free, &clamped] {
                for k in start..start + per_row {
                    if k < n {
                        tiles.extend_from_slice(&source[k * per..(k + 1) * per]);
                    } else {
                        tiles.extend(std::iter::repeat_n(0.0, per));
                    }
                }
            }
        }
        let picture = out_dir.join(format!("inpaint_{:02}.png", (p * 100.0).round() as u32));
        save_grid(&picture, &tiles, image, 4 * n.div_ceil(per_row), per_row)?;
        rows.push(InpaintRow {
            fraction: p,
            images: n,
            removed_pixels: missing.iter().filter(|&&m| m).count(),
            mse_free_chain: rbm::masked_mse(&free, &originals, &missing),
            mse_clamped: rbm::masked_mse(&clamped, &originals, &missing),
            picture,
        });
    }
    let (free_method, clamped_method) = model.inpaint_methods(opts.steps);
    let report = InpaintReport {
        family: family.name().to_string(),
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
