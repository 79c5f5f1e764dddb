//! Binary restricted Boltzmann machine trained by contrastive divergence
//! (SPEC section 1).
//!
//! Energy E(v,h) = -h'W'v - vb'v - hb'h with `W` stored visible x hidden.
//! The CD-k step runs on host buffers with fused kernels ([`crate::cpu`]):
//! the model needs no autodiff, and the hot loop allocates nothing.

use anyhow::{Context, Result, bail};
use burn::backend::Dispatch;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Device, Tensor};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub mod backend;
pub mod eval;
pub mod family;
pub mod kernel;
pub mod train;

use backend::{CdTensors, Chains, ContrastiveDivergence, Offsets, composed_cd_update};
pub use kernel::{CdBuffers, CdParams, NegativeHidden, UpdateRule, cd_update_host};
use kernel::{down, up};

impl CdBuffers {
    /// Buffers for `rbm`, batches of `batch` rows and `chains` negative
    /// chains (the batch size for CD).
    pub fn new(rbm: &Rbm, batch: usize, chains: usize) -> Self {
        Self::for_shape(rbm.visible, rbm.hidden, batch, chains)
    }
}
use super::tensors::{download, upload};
use super::{Family, ModelConfig, TrainContext};
use crate::config::{OnNan, RunConfig};
use crate::cpu::{matmul, softplus, softplus_shifted_sum, softplus_sum};
use crate::data::batches::{fill_batch, fill_batch_slice, first_rows, for_each_chunk};
use crate::data::{EpochOrder, ImageShape, PixelView, Split};
use crate::rng::{GenRng, Purpose, stream};
use crate::run::{Checkpoint, RunDir, TensorData};
use crate::viz::{line_plot, save_grid};

/// Learning-rate schedule over all updates of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// `lr` throughout.
    Constant,
    /// From `lr` at the first update linearly to `lr_final` at the last.
    Linear,
}

/// What the positive phase sees of each training image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainingPixels {
    /// pixel / 255 used as the visible values (the seed's).
    Intensity,
    /// A fresh Bernoulli(pixel / 255) draw each time an image is used:
    /// the binary images the log-likelihood is measured on, never the same
    /// twice.
    Bernoulli,
}

impl TrainingPixels {
    fn view(self) -> PixelView {
        match self {
            TrainingPixels::Intensity => PixelView::Unit,
            TrainingPixels::Bernoulli => PixelView::Dynamic,
        }
    }
}

/// RBM configuration. Defaults are the seed preset `rbm-500`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RbmConfig {
    /// Hidden units.
    pub hidden: usize,
    /// Gibbs steps per update (the k of CD-k).
    pub k: usize,
    pub lr: f64,
    pub schedule: Schedule,
    /// Final learning rate of the linear schedule.
    pub lr_final: f64,
    /// Momentum of the velocity update (0: plain SGD, as the seed).
    pub momentum: f64,
    /// L2 weight decay on `W` (never on the biases).
    pub weight_decay: f64,
    /// Persistent CD: negative chains carry over between updates.
    pub persistent: bool,
    /// PCD's number of persistent chains (absent: one per batch row). More
    /// chains than the batch average the negative statistics over more
    /// samples of the model at the same number of updates.
    pub chains: Option<usize>,
    /// The negative statistics' hidden layer: "sample" (the seed's) or
    /// "probability" (p(h | v_k), less noisy).
    pub negative_hidden: NegativeHidden,
    /// Centred gradients (Melchior, Fischer & Wiskott 2016): both layers
    /// centred on moving averages of the data's means.
    pub centring: bool,
    /// How far each update moves the offsets towards the batch's means.
    pub offset_rate: f64,
    /// The training images' visible values: "intensity" (pixel / 255, the
    /// seed's) or "bernoulli" (binarised afresh each epoch).
    pub training_pixels: TrainingPixels,
    pub batch_size: usize,
    pub epochs: usize,
    /// Gibbs steps of the per-epoch sample figure (started from a fixed training batch).
    pub sample_steps: usize,
    /// Test images used for the per-epoch pseudo-likelihood.
    pub pl_images: usize,
}

impl Default for RbmConfig {
    fn default() -> Self {
        RbmConfig {
            hidden: 500,
            k: 30,
            lr: 0.1,
            schedule: Schedule::Constant,
            lr_final: 0.0,
            momentum: 0.0,
            weight_decay: 0.0,
            persistent: false,
            chains: None,
            negative_hidden: NegativeHidden::Sample,
            centring: false,
            offset_rate: 0.01,
            training_pixels: TrainingPixels::Intensity,
            batch_size: 64,
            epochs: 30,
            sample_steps: 200,
            pl_images: 1000,
        }
    }
}

impl ModelConfig for RbmConfig {
    fn epochs(&self) -> usize {
        self.epochs
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn training_memory(&self, image: ImageShape) -> (f64, &'static str) {
        let (v, h) = (image.pixels() as f64, self.hidden as f64);
        let rows = (self.batch_size + self.chain_count()) as f64;
        // W, its velocity and gradient, on the device and in the host kernel's
        // scratch; the batch and the Gibbs chains' states and probabilities;
        // the per-epoch evaluation's 1,000-image batches.
        let floats = 6.0 * (v * h + v + h) + 4.0 * rows * (v + h) + 4.0 * 1000.0 * (v + h);
        (
            4.0 * floats,
            "model.hidden, model.batch_size or model.chains",
        )
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("model.hidden", self.hidden),
            ("model.k", self.k),
            ("model.batch_size", self.batch_size),
            ("model.epochs", self.epochs),
        ];
        for (key, v) in positive {
            if v == 0 {
                crate::usage_bail!("{key} = 0: must be a positive integer");
            }
        }
        for (key, v) in [("model.lr", self.lr), ("model.lr_final", self.lr_final)] {
            if !v.is_finite() || v < 0.0 {
                crate::usage_bail!("{key} = {v}: must be a finite number >= 0");
            }
        }
        if self.lr == 0.0 {
            crate::usage_bail!(
                "model.lr = 0: the model would not learn; use a positive learning rate such as 0.1"
            );
        }
        match self.chains {
            Some(0) => crate::usage_bail!(
                "model.chains = 0: must be a positive integer (or absent: one chain per batch row)"
            ),
            Some(c) if !self.persistent => crate::usage_bail!(
                "model.chains = {c} needs model.persistent = true: CD starts one chain from each batch row"
            ),
            _ => {}
        }
        if !(0.0..1.0).contains(&self.momentum) {
            crate::usage_bail!("model.momentum = {}: must be in [0, 1)", self.momentum);
        }
        if !(self.offset_rate > 0.0 && self.offset_rate <= 1.0) {
            crate::usage_bail!(
                "model.offset_rate = {}: must be in (0, 1] (0.01 moves the offsets 1% of the way per update)",
                self.offset_rate
            );
        }
        if !self.weight_decay.is_finite() || self.weight_decay < 0.0 {
            crate::usage_bail!(
                "model.weight_decay = {}: must be a finite number >= 0",
                self.weight_decay
            );
        }
        Ok(())
    }
}

impl RbmConfig {
    /// The negative phase's chains: `chains` for PCD, else the batch size.
    pub fn chain_count(&self) -> usize {
        self.chains.unwrap_or(self.batch_size)
    }
}

/// The parameters of a binary RBM.
#[derive(Debug, Clone, PartialEq)]
pub struct Rbm {
    pub visible: usize,
    pub hidden: usize,
    /// visible x hidden, row-major.
    pub w: Vec<f32>,
    /// Hidden biases.
    pub hb: Vec<f32>,
    /// Visible biases.
    pub vb: Vec<f32>,
}

/// Optimiser state: velocities (momentum) and the persistent chains (PCD).
#[derive(Debug, Clone, PartialEq)]
pub struct RbmState {
    pub vel_w: Vec<f32>,
    pub vel_hb: Vec<f32>,
    pub vel_vb: Vec<f32>,
    /// C x H hidden states of the persistent chains (PCD only).
    pub chains: Option<Vec<f32>>,
    /// Centring's visible and hidden offsets (centred models only).
    pub offsets: Option<(Vec<f32>, Vec<f32>)>,
}

impl Rbm {
    /// W ~ truncated normal(0, 0.1) (redrawn beyond two standard deviations), biases 0.1.
    pub fn init(visible: usize, hidden: usize, rng: &mut GenRng) -> Self {
        let w = (0..visible * hidden)
            .map(|_| {
                loop {
                    let z = standard_normal(rng);
                    if z.abs() <= 2.0 {
                        break 0.1 * z;
                    }
                }
            })
            .collect();
        Rbm {
            visible,
            hidden,
            w,
            hb: vec![0.1; hidden],
            vb: vec![0.1; visible],
        }
    }

    pub fn new_state(&self, config: &RbmConfig, rng: &mut GenRng) -> RbmState {
        RbmState {
            vel_w: vec![0.0; self.w.len()],
            vel_hb: vec![0.0; self.hidden],
            vel_vb: vec![0.0; self.visible],
            // Persistent chains start from random hidden states.
            chains: config.persistent.then(|| {
                (0..config.chain_count() * self.hidden)
                    .map(|_| rng.random::<bool>() as u8 as f32)
                    .collect()
            }),
            // Both layers' offsets start at 1/2; the moving averages find
            // the data's means within a few hundred updates.
            offsets: config
                .centring
                .then(|| (vec![0.5; self.visible], vec![0.5; self.hidden])),
        }
    }

    /// p(h=1|v) for `rows` visible vectors, into `out` (rows x H).
    pub fn hidden_probs(&self, v: &[f32], out: &mut [f32]) {
        up(&self.w, &self.hb, v, out, None, 0);
    }

    /// p(v=1|h) for `rows` hidden vectors, into `out` (rows x V).
    pub fn visible_probs(&self, h: &[f32], out: &mut [f32]) {
        down(&self.w, &self.vb, h, out, None, 0);
    }

    /// Samples h ~ p(h|v): probabilities into `probs`, draws into `sample`.
    pub fn sample_hidden(&self, v: &[f32], probs: &mut [f32], sample: &mut [f32], key: u64) {
        up(&self.w, &self.hb, v, probs, Some(sample), key);
    }

    /// Samples v ~ p(v|h): probabilities into `probs`, draws into `sample`.
    pub fn sample_visible(&self, h: &[f32], probs: &mut [f32], sample: &mut [f32], key: u64) {
        down(&self.w, &self.vb, h, probs, Some(sample), key);
    }

    /// One CD-k (or PCD-k) update on the batch in `bufs.data_mut()`, as
    /// [`cd_update_host`], drawing its 2k+1 keys from `rng`.
    pub fn cd_update(
        &mut self,
        bufs: &mut CdBuffers,
        state: &mut RbmState,
        rule: UpdateRule,
        rng: &mut GenRng,
    ) {
        bufs.keys.clear();
        bufs.keys
            .extend((0..rule.cd_keys()).map(|_| rng.next_u64()));
        let keys = std::mem::take(&mut bufs.keys);
        let params = CdParams {
            w: &mut self.w,
            hb: &mut self.hb,
            vb: &mut self.vb,
            vel_w: &mut state.vel_w,
            vel_hb: &mut state.vel_hb,
            vel_vb: &mut state.vel_vb,
            chains: state.chains.as_deref_mut(),
            offsets: state
                .offsets
                .as_mut()
                .map(|(v, h)| (v.as_mut_slice(), h.as_mut_slice())),
        };
        cd_update_host(params, bufs, rule, &keys);
        bufs.keys = keys;
    }

    /// Free energy F(v) = -vb'v - sum_j softplus(hb_j + W_j'v) of each row of `v`.
    pub fn free_energy(&self, v: &[f32]) -> Vec<f32> {
        let rows = v.len() / self.visible;
        let mut out = Vec::with_capacity(rows);
        let mut pre = vec![0.0f32; 1024.min(rows.max(1)) * self.hidden];
        for chunk in v.chunks(1024 * self.visible) {
            let r = chunk.len() / self.visible;
            let pre = &mut pre[..r * self.hidden];
            matmul(
                pre,
                chunk,
                &self.w,
                (r, self.visible, self.hidden),
                false,
                false,
                0.0,
                1.0,
            );
            for (row, a) in chunk
                .chunks_exact(self.visible)
                .zip(pre.chunks_exact(self.hidden))
            {
                let lin: f32 = row.iter().zip(&self.vb).map(|(x, c)| x * c).sum();
                let sp = softplus_sum(a, &self.hb);
                out.push(-lin - sp);
            }
        }
        out
    }

    /// Mean squared error per pixel of the mean-field reconstruction
    /// p(v | p(h|v)) of each row of `v`, averaged over rows.
    pub fn reconstruction_error(&self, v: &[f32]) -> f64 {
        let rows = v.len() / self.visible;
        let chunk_rows = 1024.min(rows.max(1));
        let mut h = vec![0.0f32; chunk_rows * self.hidden];
        let mut r = vec![0.0f32; chunk_rows * self.visible];
        let mut total = 0.0f64;
        for chunk in v.chunks(chunk_rows * self.visible) {
            let n = chunk.len() / self.visible;
            self.hidden_probs(chunk, &mut h[..n * self.hidden]);
            self.visible_probs(&h[..n * self.hidden], &mut r[..n * self.visible]);
            total += chunk
                .iter()
                .zip(&r)
                .map(|(a, b)| ((a - b) * (a - b)) as f64)
                .sum::<f64>();
        }
        total / (rows * self.visible) as f64
    }

    /// Pseudo-likelihood per image (SPEC): with x rounded to {0,1},
    /// sum_i log sigmoid(F(x with bit i flipped) - F(x)), over *all* visible
    /// units i (not one sampled index), averaged over the rows of `v`.
    pub fn pseudo_likelihood(&self, v: &[f32]) -> f64 {
        use rayon::prelude::*;
        let rows = v.len() / self.visible;
        let x: Vec<f32> = v.iter().map(|p| p.round()).collect();
        let mut pre = vec![0.0f32; rows * self.hidden];
        matmul(
            &mut pre,
            &x,
            &self.w,
            (rows, self.visible, self.hidden),
            false,
            false,
            0.0,
            1.0,
        );
        let (nv, nh) = (self.visible, self.hidden);
        let total: f64 = x
            .par_chunks_exact(nv)
            .zip(pre.par_chunks_exact(nh))
            .map(|(xr, ar)| {
                let a: Vec<f32> = ar.iter().zip(&self.hb).map(|(a, b)| a + b).collect();
                let base = softplus_sum(ar, &self.hb);
                let mut sum = 0.0f64;
                for (i, (&xi, wi)) in xr.iter().zip(self.w.chunks_exact(nh)).enumerate() {
                    // Flipping x_i changes every pre-activation by s * W[i, :].
                    let s = 1.0 - 2.0 * xi;
                    let flipped = softplus_shifted_sum(&a, wi, s);
                    // F(flip) - F(x) = -vb_i * s - (flipped - base)
                    let diff = -self.vb[i] * s - (flipped - base);
                    sum += log_sigmoid(diff) as f64;
                }
                sum
            })
            .sum();
        total / rows as f64
    }

    /// Runs `steps` Gibbs steps from visible `v0` (rows x V); returns the last
    /// step's visible probabilities p(v|h).
    pub fn gibbs_from_visible(&self, v0: &[f32], steps: usize, rng: &mut GenRng) -> Vec<f32> {
        let rows = v0.len() / self.visible;
        let mut v = v0.to_vec();
        let mut vp = vec![0.0f32; rows * self.visible];
        let mut h = vec![0.0f32; rows * self.hidden];
        let mut hp = vec![0.0f32; rows * self.hidden];
        self.sample_hidden(&v, &mut hp, &mut h, rng.next_u64());
        for step in 0..steps.max(1) {
            self.sample_visible(&h, &mut vp, &mut v, rng.next_u64());
            if step + 1 < steps {
                self.sample_hidden(&v, &mut hp, &mut h, rng.next_u64());
            }
        }
        vp
    }

    /// Safetensors with the documented names: `W` [visible, hidden], `hb` [hidden], `vb` [visible].
    /// The weights with the image shape they were trained on.
    pub fn to_checkpoint_for(&self, image: crate::data::ImageShape) -> Checkpoint {
        let mut ck = self.to_checkpoint();
        ck.set_meta(crate::data::IMAGE_META, image.to_meta());
        ck
    }

    pub fn to_checkpoint(&self) -> Checkpoint {
        let mut ck = Checkpoint::default();
        ck.insert(
            "W",
            TensorData::new(vec![self.visible, self.hidden], self.w.clone()),
        );
        ck.insert("hb", TensorData::new(vec![self.hidden], self.hb.clone()));
        ck.insert("vb", TensorData::new(vec![self.visible], self.vb.clone()));
        ck.set_meta("genlab.family", "rbm");
        ck
    }

    /// Reads `W`, `hb`, `vb` from a checkpoint, checking their shapes.
    pub fn from_checkpoint(ck: &Checkpoint, visible: usize, hidden: usize) -> Result<Self> {
        Ok(Rbm {
            visible,
            hidden,
            w: ck.tensor("W", &[visible, hidden])?.data.clone(),
            hb: ck.tensor("hb", &[hidden])?.data.clone(),
            vb: ck.tensor("vb", &[visible])?.data.clone(),
        })
    }
}

#[inline]
fn log_sigmoid(x: f32) -> f32 {
    -softplus(-x)
}

/// A standard normal draw (Box-Muller).
pub fn standard_normal(rng: &mut GenRng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A trained RBM loaded from its run directory.
pub struct LoadedRbm {
    pub config: RunConfig<RbmConfig>,
    pub rbm: Rbm,
    /// The shape of the images its visible units are.
    pub image: crate::data::ImageShape,
}

/// Loads the final weights of a run (`weights.safetensors`), or its latest
/// checkpoint while training has not finished.
pub fn load_run(run: &RunDir) -> Result<LoadedRbm> {
    let config: RunConfig<RbmConfig> = run.read_config().map_err(crate::error::usage)?;
    let (ck, path) = run.load_weights()?;
    let image = ck
        .image_shape()
        .with_context(|| format!("{}", path.display()))
        .map_err(crate::error::usage)?;
    let rbm = Rbm::from_checkpoint(&ck, image.pixels(), config.model.hidden)
        .with_context(|| format!("{}", path.display()))
        .map_err(crate::error::usage)?;
    Ok(LoadedRbm { config, rbm, image })
}

/// Where `genlab sample` starts its chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainStart {
    /// Independent fair coin flips.
    Noise,
    /// Random test images.
    Data,
}

/// Draws `n` samples by running `steps` Gibbs steps from `start`; returns the
/// final visible probabilities (n x 784).
pub fn sample_chains(
    rbm: &Rbm,
    test: &Split,
    n: usize,
    steps: usize,
    start: ChainStart,
    seed: u64,
) -> Vec<f32> {
    let mut rng = stream(seed, Purpose::Sample, 0);
    let v0: Vec<f32> = match start {
        ChainStart::Noise => (0..n * rbm.visible)
            .map(|_| rng.random::<bool>() as u8 as f32)
            .collect(),
        ChainStart::Data => {
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..test.len())).collect();
            let mut out = Vec::new();
            fill_batch(test, &idx, PixelView::Unit, &mut rng, &mut out);
            out
        }
    };
    rbm.gibbs_from_visible(&v0, steps, &mut rng)
}

/// Inpainting by conditional Gibbs sampling: the pixels where `missing` is
/// false stay clamped to `corrupted`; the missing ones are resampled. Returns
/// the corrupted image with the missing pixels replaced by the mean of the
/// visible probabilities over the last `average_last` of `steps` steps.
pub fn inpaint_clamped(
    rbm: &Rbm,
    corrupted: &[f32],
    missing: &[bool],
    steps: usize,
    average_last: usize,
    rng: &mut GenRng,
) -> Vec<f32> {
    let rows = corrupted.len() / rbm.visible;
    let mut v = corrupted.to_vec();
    let mut vs = vec![0.0f32; v.len()];
    let mut vp = vec![0.0f32; v.len()];
    let mut h = vec![0.0f32; rows * rbm.hidden];
    let mut hp = vec![0.0f32; rows * rbm.hidden];
    let mut mean = vec![0.0f32; v.len()];
    let average_last = average_last.clamp(1, steps.max(1));
    for step in 0..steps.max(1) {
        rbm.sample_hidden(&v, &mut hp, &mut h, rng.next_u64());
        rbm.sample_visible(&h, &mut vp, &mut vs, rng.next_u64());
        for i in 0..v.len() {
            if missing[i] {
                v[i] = vs[i];
            }
        }
        if step + average_last >= steps.max(1) {
            for (m, p) in mean.iter_mut().zip(&vp) {
                *m += p / average_last as f32;
            }
        }
    }
    corrupted
        .iter()
        .zip(missing)
        .zip(&mean)
        .map(|((&c, &m), &p)| if m { p } else { c })
        .collect()
}

/// Mean squared error over the pixels where `mask` is true.
pub fn masked_mse(a: &[f32], b: &[f32], mask: &[bool]) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for ((x, y), &m) in a.iter().zip(b).zip(mask) {
        if m {
            sum += ((x - y) * (x - y)) as f64;
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}
