//! MLP GAN (SPEC section 4): a custom loop with two networks and two
//! optimisers.
//!
//! Losses (binary cross-entropy on logits, means over the batch):
//! `d_loss = BCE(D(x), real_label) + BCE(D(G(z)), 0)` with `real_label` 0.9
//! (label smoothing on real images only), `g_loss = BCE(D(G(z)), 1)` (flipped
//! labels, no smoothing). Per batch: `d_steps` discriminator updates on the
//! real batch and fresh fakes, then one generator update on fresh fakes.
//! Dropout is active in every training forward pass (both networks, as the
//! seed's `.train()` mode) and off when sampling. All randomness (noise,
//! dropout masks, shuffling) is drawn from genlab's seeded streams on the
//! host, so a resumed run repeats an uninterrupted one exactly.
//!
//! Weights (`weights.safetensors`): `generator.layerK.weight` `[in, out]`
//! and `generator.layerK.bias` for K = 0..3, likewise `discriminator.layerK.*`;
//! `y = x @ weight + bias` (PyTorch's `nn.Linear` stores the transpose).

use anyhow::{Context, Result, bail};
use burn::tensor::activation::{leaky_relu, log_sigmoid, sigmoid};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::optim::{Optimizer, Rule};
use super::tensors::{download, from_checkpoint, to_checkpoint, upload};
use super::{Family, ModelConfig, TrainContext};
use crate::config::{OnNan, RunConfig};
use crate::data::batches::fill_batch;
use crate::data::{EpochOrder, PIXELS, PixelView};
use crate::rng::{GenRng, Purpose, fill_standard_normal, stream};
use crate::run::{Checkpoint, RunDir, TensorData};
use crate::viz::{Series, line_plot, save_grid};

pub mod family;
pub mod train;

/// The generator's input distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Noise {
    /// Uniform(-1, 1) per dimension (the seed).
    Uniform,
    /// Standard normal per dimension.
    Normal,
}

/// GAN configuration. Defaults are the seed preset `gan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GanConfig {
    /// Noise dimensions.
    pub latent: usize,
    /// Generator hidden widths (input side first).
    pub generator_hidden: Vec<usize>,
    /// Discriminator hidden widths (input side first).
    pub discriminator_hidden: Vec<usize>,
    /// Negative slope of the leaky ReLUs.
    pub leaky_slope: f64,
    /// Dropout probability after every hidden layer of both networks.
    pub dropout: f64,
    pub noise: Noise,
    /// Target of real images in the discriminator loss: 0.9 smooths labels
    /// (the seed); 1.0 turns smoothing off.
    pub real_label: f64,
    pub lr_d: f64,
    pub lr_g: f64,
    pub beta1_d: f64,
    pub beta2_d: f64,
    pub beta1_g: f64,
    pub beta2_g: f64,
    /// PyTorch Adam's epsilon.
    pub epsilon: f64,
    /// Discriminator updates per generator update.
    pub d_steps: usize,
    pub batch_size: usize,
    pub epochs: usize,
    /// Batches between the seed's progress lines.
    pub print_every: usize,
}

impl Default for GanConfig {
    fn default() -> Self {
        GanConfig {
            latent: 100,
            generator_hidden: vec![32, 64, 128],
            discriminator_hidden: vec![128, 64, 32],
            leaky_slope: 0.2,
            dropout: 0.3,
            noise: Noise::Uniform,
            real_label: 0.9,
            lr_d: 0.002,
            lr_g: 0.002,
            beta1_d: 0.9,
            beta2_d: 0.999,
            beta1_g: 0.9,
            beta2_g: 0.999,
            epsilon: 1e-8,
            d_steps: 1,
            batch_size: 64,
            epochs: 50,
            print_every: 400,
        }
    }
}

impl ModelConfig for GanConfig {
    fn epochs(&self) -> usize {
        self.epochs
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn training_memory(&self) -> (f64, &'static str) {
        let mut widths = vec![self.latent];
        widths.extend(&self.generator_hidden);
        widths.push(PIXELS);
        widths.extend(&self.discriminator_hidden);
        widths.push(1);
        let params: f64 = widths
            .windows(2)
            .map(|w| w[0] as f64 * w[1] as f64 + w[1] as f64)
            .sum();
        let units: f64 = widths.iter().map(|&w| w as f64).sum();
        // Weights, gradients, two Adam moments and host copies of both
        // networks; activations and dropout masks of a doubled batch.
        let floats = 8.0 * params + 12.0 * self.batch_size as f64 * units;
        (
            4.0 * floats,
            "model.latent, model.generator_hidden, model.discriminator_hidden or model.batch_size",
        )
    }

    fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("model.latent", self.latent),
            ("model.d_steps", self.d_steps),
            ("model.batch_size", self.batch_size),
            ("model.epochs", self.epochs),
            ("model.print_every", self.print_every),
        ] {
            if v == 0 {
                crate::usage_bail!("{key} = 0: must be a positive integer");
            }
        }
        for (key, widths) in [
            ("model.generator_hidden", &self.generator_hidden),
            ("model.discriminator_hidden", &self.discriminator_hidden),
        ] {
            if widths.is_empty() || widths.contains(&0) {
                crate::usage_bail!(
                    "{key} = {widths:?}: give one or more positive layer widths, such as [32, 64, 128]"
                );
            }
        }
        for (key, v) in [("model.lr_d", self.lr_d), ("model.lr_g", self.lr_g)] {
            if !v.is_finite() || v <= 0.0 {
                crate::usage_bail!("{key} = {v}: must be a finite number > 0, such as 0.002");
            }
        }
        for (key, v) in [
            ("model.beta1_d", self.beta1_d),
            ("model.beta2_d", self.beta2_d),
            ("model.beta1_g", self.beta1_g),
            ("model.beta2_g", self.beta2_g),
            ("model.dropout", self.dropout),
        ] {
            if !(0.0..1.0).contains(&v) {
                crate::usage_bail!("{key} = {v}: must be in [0, 1)");
            }
        }
        if !(self.real_label > 0.0 && self.real_label <= 1.0) {
            crate::usage_bail!(
                "model.real_label = {}: must be in (0, 1]; 0.9 smooths the labels, 1.0 does not",
                self.real_label
            );
        }
        if !self.leaky_slope.is_finite() || self.leaky_slope < 0.0 {
            crate::usage_bail!(
                "model.leaky_slope = {}: must be a finite number >= 0",
                self.leaky_slope
            );
        }
        if !self.epsilon.is_finite() || self.epsilon <= 0.0 {
            crate::usage_bail!(
                "model.epsilon = {}: must be a finite number > 0 (PyTorch: 1e-8)",
                self.epsilon
            );
        }
        Ok(())
    }
}

/// A fully connected network: hidden layers with leaky ReLU and dropout,
/// then a linear output layer (tanh applied by the caller for the generator).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpShape {
    /// `generator` or `discriminator`: the prefix of the tensor names.
    pub prefix: &'static str,
    /// Widths from input to output.
    pub widths: Vec<usize>,
}

impl MlpShape {
    pub fn names(&self) -> Vec<String> {
        (0..self.widths.len() - 1)
            .flat_map(|k| {
                [
                    format!("{}.layer{k}.weight", self.prefix),
                    format!("{}.layer{k}.bias", self.prefix),
                ]
            })
            .collect()
    }

    pub fn shapes(&self) -> Vec<Vec<usize>> {
        self.widths
            .windows(2)
            .flat_map(|w| [vec![w[0], w[1]], vec![w[1]]])
            .collect()
    }

    pub fn sizes(&self) -> Vec<usize> {
        self.shapes().iter().map(|s| s.iter().product()).collect()
    }

    pub fn parameter_count(&self) -> usize {
        self.sizes().iter().sum()
    }

    /// Hidden units per example (the dropout masks' width).
    pub fn hidden_units(&self) -> usize {
        self.widths[1..self.widths.len() - 1].iter().sum()
    }

    /// PyTorch's `nn.Linear` initialisation: weights Kaiming-uniform with
    /// a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases the same.
    pub fn init(&self, rng: &mut GenRng, device: &Device) -> Vec<Tensor<1>> {
        let mut params = Vec::new();
        for w in self.widths.windows(2) {
            let bound = 1.0 / (w[0] as f32).sqrt();
            let mut draw = |n: usize| -> Tensor<1> {
                let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                upload(v, [n], device)
            };
            params.push(draw(w[0] * w[1]));
            params.push(draw(w[1]));
        }
        params
    }

    /// Logits (or the generator's pre-tanh output). `masks`: per hidden layer,
    /// `[rows, width]` dropout multipliers (0 or 1/(1-p)), or `None` for no dropout.
    pub fn forward(
        &self,
        p: &[Tensor<1>],
        x: Tensor<2>,
        masks: Option<&[Tensor<2>]>,
        slope: f64,
    ) -> Tensor<2> {
        let layers = self.widths.len() - 1;
        let mut h = x;
        for k in 0..layers {
            let w = p[2 * k]
                .clone()
                .reshape([self.widths[k], self.widths[k + 1]]);
            h = linear(h, w, Some(p[2 * k + 1].clone()));
            if k + 1 < layers {
                h = leaky_relu(h, slope);
                if let Some(m) = masks {
                    h = h * m[k].clone();
                }
            }
        }
        h
    }
}

/// The two networks' shapes for a configuration.
pub fn shapes(c: &GanConfig) -> (MlpShape, MlpShape) {
    let mut g = vec![c.latent];
    g.extend(&c.generator_hidden);
    g.push(PIXELS);
    let mut d = vec![PIXELS];
    d.extend(&c.discriminator_hidden);
    d.push(1);
    (
        MlpShape {
            prefix: "generator",
            widths: g,
        },
        MlpShape {
            prefix: "discriminator",
            widths: d,
        },
    )
}

/// Mean binary cross-entropy of logits `l` (`[B, 1]`) against a constant
/// target `t`: mean of `l (1 - t) - log_sigmoid(l)` (= softplus(l) - t l),
/// stable for any `l`. Returns a `[1]` tensor.
pub fn bce_with_logits(l: Tensor<2>, t: f64) -> Tensor<1> {
    (l.clone().mul_scalar(1.0 - t) - log_sigmoid(l)).mean()
}

/// The discriminator's loss: real images against `real_label` (smoothed),
/// fakes against 0 (never smoothed).
pub fn discriminator_loss(
    real_logits: Tensor<2>,
    fake_logits: Tensor<2>,
    real_label: f64,
) -> Tensor<1> {
    bce_with_logits(real_logits, real_label) + bce_with_logits(fake_logits, 0.0)
}

/// The generator's loss: its fakes against the flipped label 1 (no smoothing).
pub fn generator_loss(fake_logits: Tensor<2>) -> Tensor<1> {
    bce_with_logits(fake_logits, 1.0)
}

/// A generator and a discriminator with their parameters.
#[derive(Debug, Clone)]
pub struct Gan {
    pub config: GanConfig,
    pub g_shape: MlpShape,
    pub d_shape: MlpShape,
    pub g: Vec<Tensor<1>>,
    pub d: Vec<Tensor<1>>,
    pub device: Device,
}

impl Gan {
    pub fn init(config: &GanConfig, seed: u64, device: &Device) -> Self {
        let (g_shape, d_shape) = shapes(config);
        let g = g_shape.init(&mut stream(seed, Purpose::Init, 0), device);
        let d = d_shape.init(&mut stream(seed, Purpose::Init, 1), device);
        Gan {
            config: config.clone(),
            g_shape,
            d_shape,
            g,
            d,
            device: device.clone(),
        }
    }

    /// Noise rows for `n` images.
    pub fn noise(&self, n: usize, rng: &mut GenRng) -> Vec<f32> {
        let mut z = vec![0.0f32; n * self.config.latent];
        match self.config.noise {
            Noise::Uniform => z.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0)),
            Noise::Normal => fill_standard_normal(rng, &mut z),
        }
        z
    }

    /// Dropout multipliers for `rows` examples of a network: per hidden
    /// layer, 0 with probability p, else 1/(1-p).
    fn masks(&self, shape: &MlpShape, rows: usize, rng: &mut GenRng) -> Vec<Tensor<2>> {
        mask_values(&self.config, shape, rows, rng)
            .into_iter()
            .zip(&shape.widths[1..])
            .map(|(m, &w)| upload(m, [rows, w], &self.device))
            .collect()
    }

    /// Generated images in [-1, 1] for noise rows `z`, dropout off.
    pub fn generate(&self, z: &[f32]) -> Result<Vec<f32>> {
        let n = z.len() / self.config.latent;
        let zt = upload(z.to_vec(), [n, self.config.latent], &self.device);
        download(
            self.g_shape
                .forward(&self.g, zt, None, self.config.leaky_slope)
                .tanh(),
        )
    }

    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut ck = Checkpoint::default();
        for (shape, params) in [(&self.g_shape, &self.g), (&self.d_shape, &self.d)] {
            for ((name, dims), p) in shape.names().iter().zip(shape.shapes()).zip(params) {
                ck.insert(name, TensorData::new(dims, to_checkpoint(p)?.data));
            }
        }
        ck.set_meta("genlab.family", "gan");
        Ok(ck)
    }

    pub fn from_checkpoint(config: &GanConfig, ck: &Checkpoint, device: &Device) -> Result<Self> {
        let (g_shape, d_shape) = shapes(config);
        let load = |shape: &MlpShape| -> Result<Vec<Tensor<1>>> {
            shape
                .names()
                .iter()
                .zip(shape.shapes())
                .map(|(name, dims)| {
                    ck.tensor(name, &dims)?;
                    from_checkpoint(ck, name, dims.iter().product(), device)
                })
                .collect()
        };
        Ok(Gan {
            config: config.clone(),
            g: load(&g_shape)?,
            d: load(&d_shape)?,
            g_shape,
            d_shape,
            device: device.clone(),
        })
    }
}

/// Dropout multipliers for `rows` examples of a network, per hidden layer
/// (`rows x width`): 0 with probability p, else 1/(1-p). Both training paths
/// draw them here, in the same order.
pub fn mask_values(
    c: &GanConfig,
    shape: &MlpShape,
    rows: usize,
    rng: &mut GenRng,
) -> Vec<Vec<f32>> {
    let p = c.dropout as f32;
    let keep = 1.0 / (1.0 - p);
    shape.widths[1..shape.widths.len() - 1]
        .iter()
        .map(|&w| {
            // The words `rng.random::<f32>()` would read one at a time, read
            // in bulk (same values, same stream position), then turned into
            // uniforms the way it does: the top 24 bits times 2^-24. The
            // stream's bytes are its words in little-endian order, which
            // `dropout_mask` reads back with `u32::from_le`.
            let mut words = vec![0u32; rows * w];
            rng.fill_bytes(bytemuck::cast_slice_mut(&mut words));
            let mut mask = vec![0.0f32; rows * w];
            super::host::dropout_mask(&mut mask, &words, p, keep);
            mask
        })
        .collect()
}

/// One discriminator step through burn's autodiff: returns (d_loss, mean
/// D(x), mean D(G(z))), whether everything is finite, and D's gradients.
fn burn_d_step(gan: &Gan, x: &[f32], rng: &mut GenRng) -> Result<([f64; 3], bool, Vec<Tensor<1>>)> {
    let (c, dev) = (&gan.config, &gan.device);
    let rows = x.len() / PIXELS;
    let slope = c.leaky_slope;
    // Fakes from the current generator (constant here), dropout on.
    let z = upload(gan.noise(rows, rng), [rows, c.latent], dev);
    let gm = gan.masks(&gan.g_shape, rows, rng);
    let fake = gan.g_shape.forward(&gan.g, z, Some(&gm), slope).tanh();
    let m_real = gan.masks(&gan.d_shape, rows, rng);
    let m_fake = gan.masks(&gan.d_shape, rows, rng);
    let tracked: Vec<Tensor<1>> = gan
        .d
        .iter()
        .map(|p| p.clone().autodiff().require_grad())
        .collect();
    let xt = upload(x.to_vec(), [rows, PIXELS], dev);
    let real_logits = gan.d_shape.forward(&tracked, xt, Some(&m_real), slope);
    let fake_logits = gan.d_shape.forward(&tracked, fake, Some(&m_fake), slope);
    let stats = Tensor::cat(
        vec![
            sigmoid(real_logits.clone().inner()).mean(),
            sigmoid(fake_logits.clone().inner()).mean(),
        ],
        0,
    );
    let loss = discriminator_loss(real_logits, fake_logits, c.real_label);
    let value = loss.clone().inner();
    let mut grads = loss.backward();
    let g: Vec<Tensor<1>> = tracked
        .iter()
        .map(|p| p.grad_remove(&mut grads).expect("every parameter is used"))
        .collect();
    let gsum = g
        .iter()
        .map(|t| t.clone().sum())
        .reduce(|a, b| a + b)
        .expect("parameters");
    let host = download(Tensor::cat(vec![value, stats, gsum], 0))?;
    let finite = host.iter().all(|v| v.is_finite());
    Ok(([host[0] as f64, host[1] as f64, host[2] as f64], finite, g))
}

/// One generator step through burn's autodiff: fresh fakes through the
/// discriminator (constant here), flipped labels. Returns g_loss, whether
/// everything is finite, and G's gradients.
fn burn_g_step(gan: &Gan, rows: usize, rng: &mut GenRng) -> Result<(f64, bool, Vec<Tensor<1>>)> {
    let (c, dev) = (&gan.config, &gan.device);
    let slope = c.leaky_slope;
    let z = upload(gan.noise(rows, rng), [rows, c.latent], dev);
    let gm = gan.masks(&gan.g_shape, rows, rng);
    let dm = gan.masks(&gan.d_shape, rows, rng);
    let tracked: Vec<Tensor<1>> = gan
        .g
        .iter()
        .map(|p| p.clone().autodiff().require_grad())
        .collect();
    let fake = gan.g_shape.forward(&tracked, z, Some(&gm), slope).tanh();
    let logits = gan.d_shape.forward(&gan.d, fake, Some(&dm), slope);
    let loss = generator_loss(logits);
    let value = loss.clone().inner();
    let mut grads = loss.backward();
    let g: Vec<Tensor<1>> = tracked
        .iter()
        .map(|p| p.grad_remove(&mut grads).expect("every parameter is used"))
        .collect();
    let gsum = g
        .iter()
        .map(|t| t.clone().sum())
        .reduce(|a, b| a + b)
        .expect("parameters");
    let host = download(Tensor::cat(vec![value, gsum], 0))?;
    Ok((host[0] as f64, host.iter().all(|v| v.is_finite()), g))
}

/// The GAN's training steps on host buffers (the CPU fast path): the same
/// draws in the same order as [`burn_d_step`] and [`burn_g_step`], the same
/// losses and PyTorch Adam, with the two D passes of a D step (real and fake)
/// run as one batch of 2B rows.
pub struct HostGan {
    pub g: super::host::HostMlp,
    pub d: super::host::HostMlp,
    pub opt_g: super::host::HostOptimizer,
    pub opt_d: super::host::HostOptimizer,
    both: Vec<f32>,
    d_logits: Vec<f32>,
    d_fake: Vec<f32>,
    fake: Vec<f32>,
}

impl HostGan {
    pub fn new(gan: &Gan, opt_g: &Optimizer, opt_d: &Optimizer, rows: usize) -> Result<Self> {
        let get = |v: &[Tensor<1>]| -> Result<Vec<Vec<f32>>> {
            v.iter().map(|t| download(t.clone())).collect()
        };
        let slope = gan.config.leaky_slope as f32;
        Ok(HostGan {
            g: super::host::HostMlp::new(gan.g_shape.widths.clone(), get(&gan.g)?, slope, rows),
            d: super::host::HostMlp::new(gan.d_shape.widths.clone(), get(&gan.d)?, slope, 2 * rows),
            opt_g: super::host::HostOptimizer::from_device(opt_g)?,
            opt_d: super::host::HostOptimizer::from_device(opt_d)?,
            both: vec![0.0; 2 * rows * PIXELS],
            d_logits: vec![0.0; 2 * rows],
            d_fake: vec![0.0; rows * PIXELS],
            fake: vec![0.0; rows * PIXELS],
        })
    }

    /// Writes the host state back into `gan` and the two optimisers.
    pub fn store(&self, gan: &mut Gan, opt_g: &mut Optimizer, opt_d: &mut Optimizer) {
        let put = |v: &[Vec<f32>]| -> Vec<Tensor<1>> {
            v.iter()
                .map(|x| upload(x.clone(), [x.len()], &gan.device))
                .collect()
        };
        gan.g = put(&self.g.params);
        gan.d = put(&self.d.params);
        *opt_g = self.opt_g.to_device(&gan.device);
        *opt_d = self.opt_d.to_device(&gan.device);
    }

    /// Generator output (tanh) for noise `z` into `self.fake`.
    fn generate_into_fake(&mut self, z: &[f32], rows: usize, masks: &[Vec<f32>]) {
        let out = self.g.forward(z, rows, masks);
        super::host::tanh_into(&mut self.fake[..rows * PIXELS], out);
    }

    /// A discriminator step's loss and gradients (apply with [`HostGan::apply_d`]).
    pub fn d_step(&mut self, gan: &Gan, x: &[f32], rng: &mut GenRng) -> ([f64; 3], bool) {
        let c = &gan.config;
        let rows = x.len() / PIXELS;
        let z = gan.noise(rows, rng);
        let gm = mask_values(c, &gan.g_shape, rows, rng);
        let m_real = mask_values(c, &gan.d_shape, rows, rng);
        let m_fake = mask_values(c, &gan.d_shape, rows, rng);
        self.generate_into_fake(&z, rows, &gm);
        self.both[..rows * PIXELS].copy_from_slice(x);
        self.both[rows * PIXELS..2 * rows * PIXELS].copy_from_slice(&self.fake[..rows * PIXELS]);
        let masks: Vec<Vec<f32>> = m_real
            .into_iter()
            .zip(m_fake)
            .map(|(mut a, b)| {
                a.extend(b);
                a
            })
            .collect();
        let logits = self
            .d
            .forward(&self.both[..2 * rows * PIXELS], 2 * rows, &masks);
        let t = c.real_label as f32;
        let inv = 1.0 / rows as f32;
        let (mut loss, mut dx, mut dgz) = (0.0f64, 0.0f64, 0.0f64);
        for (i, (&l, d)) in logits.iter().zip(self.d_logits.iter_mut()).enumerate() {
            let s = crate::cpu::sigmoid(l);
            if i < rows {
                loss += (crate::cpu::softplus(l) - t * l) as f64;
                dx += s as f64;
                *d = (s - t) * inv;
            } else {
                loss += crate::cpu::softplus(l) as f64;
                dgz += s as f64;
                *d = s * inv;
            }
        }
        let d_logits = self.d_logits[..2 * rows].to_vec();
        self.d.backward(
            &self.both[..2 * rows * PIXELS],
            2 * rows,
            &d_logits,
            &masks,
            true,
            None,
        );
        let n = rows as f64;
        let stats = [loss / n, dx / n, dgz / n];
        let finite = stats.iter().all(|v| v.is_finite()) && super::host::all_finite(&self.d.grads);
        (stats, finite)
    }

    /// Applies the discriminator's update. Returns false when it made a
    /// parameter non-finite; with `undo`, the parameters and optimiser state
    /// from before are then put back.
    pub fn apply_d(&mut self, undo: bool) -> bool {
        apply_checked(&mut self.d, &mut self.opt_d, undo)
    }

    /// A generator step's loss and gradients (apply with [`HostGan::apply_g`]).
    pub fn g_step(&mut self, gan: &Gan, rows: usize, rng: &mut GenRng) -> (f64, bool) {
        let c = &gan.config;
        let z = gan.noise(rows, rng);
        let gm = mask_values(c, &gan.g_shape, rows, rng);
        let dm = mask_values(c, &gan.d_shape, rows, rng);
        self.generate_into_fake(&z, rows, &gm);
        let logits = self.d.forward(&self.fake[..rows * PIXELS], rows, &dm);
        let inv = 1.0 / rows as f32;
        let mut loss = 0.0f64;
        for (&l, d) in logits.iter().zip(self.d_logits.iter_mut()) {
            loss += (crate::cpu::softplus(l) - l) as f64;
            *d = (crate::cpu::sigmoid(l) - 1.0) * inv;
        }
        let d_logits = self.d_logits[..rows].to_vec();
        self.d.backward(
            &self.fake[..rows * PIXELS],
            rows,
            &d_logits,
            &dm,
            false,
            Some(&mut self.d_fake[..rows * PIXELS]),
        );
        // Through tanh: d/da tanh(a) = 1 - tanh(a)^2.
        for (d, &f) in self.d_fake[..rows * PIXELS].iter_mut().zip(&self.fake) {
            *d *= 1.0 - f * f;
        }
        self.g
            .backward(&z, rows, &self.d_fake[..rows * PIXELS], &gm, true, None);
        let loss = loss / rows as f64;
        (
            loss,
            loss.is_finite() && super::host::all_finite(&self.g.grads),
        )
    }

    /// [`HostGan::apply_d`] for the generator.
    pub fn apply_g(&mut self, undo: bool) -> bool {
        apply_checked(&mut self.g, &mut self.opt_g, undo)
    }
}

/// Applies `net`'s update with `opt`. Returns false when it made a parameter
/// non-finite; with `undo`, the parameters and optimiser state from before
/// are then put back (copied only then).
fn apply_checked(
    net: &mut super::host::HostMlp,
    opt: &mut super::host::HostOptimizer,
    undo: bool,
) -> bool {
    let before = undo.then(|| (net.params.clone(), opt.clone()));
    opt.update(&mut net.params, &net.grads);
    let finite = super::host::all_finite(&net.params);
    if let (false, Some((params, state))) = (finite, before) {
        net.params = params;
        *opt = state;
    }
    finite
}

/// Images in [-1, 1] to [0, 1] for pictures.
pub fn to_unit(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| (x + 1.0) * 0.5).collect()
}

/// The two Adam rules (discriminator, generator) of a configuration.
pub(crate) fn rules(c: &GanConfig) -> (Rule, Rule) {
    (
        Rule::AdamTorch {
            lr: c.lr_d,
            beta1: c.beta1_d,
            beta2: c.beta2_d,
            eps: c.epsilon,
        },
        Rule::AdamTorch {
            lr: c.lr_g,
            beta1: c.beta1_g,
            beta2: c.beta2_g,
            eps: c.epsilon,
        },
    )
}

/// A trained GAN loaded from its run directory.
pub struct LoadedGan {
    pub config: RunConfig<GanConfig>,
    pub gan: Gan,
}

pub fn load_run(run: &RunDir) -> Result<LoadedGan> {
    let config: RunConfig<GanConfig> = run.read_config().map_err(crate::error::usage)?;
    let (ck, path) = run.load_weights()?;
    let device = config.device.device().map_err(crate::error::usage)?;
    let gan = Gan::from_checkpoint(&config.model, &ck, &device)
        .with_context(|| format!("{}", path.display()))
        .map_err(crate::error::usage)?;
    Ok(LoadedGan { config, gan })
}

/// `n` samples from fresh noise (dropout off), as images in [0, 1].
pub fn sample(gan: &Gan, n: usize, seed: u64) -> Result<Vec<f32>> {
    let z = gan.noise(n, &mut stream(seed, Purpose::Sample, 0));
    Ok(to_unit(&gan.generate(&z)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softplus(x: f64) -> f64 {
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    #[test]
    fn losses_match_a_hand_computation_and_smooth_real_labels_only() {
        let dev = Device::flex();
        let real = [2.0f32, -1.0, 0.5, 30.0];
        let fake = [-3.0f32, 0.2, 1.5, -40.0];
        let t = |v: &[f32]| upload(v.to_vec(), [v.len(), 1], &dev);
        let mean = |f: &dyn Fn(f64) -> f64, v: &[f32]| {
            v.iter().map(|&x| f(x as f64)).sum::<f64>() / v.len() as f64
        };
        // BCE(l, t) = -t ln s(l) - (1 - t) ln(1 - s(l)) = softplus(l) - t l.
        let want_d = mean(&|l| softplus(l) - 0.9 * l, &real) + mean(&softplus, &fake);
        let want_g = mean(&|l| softplus(l) - l, &fake);
        let d = download(discriminator_loss(t(&real), t(&fake), 0.9)).unwrap()[0] as f64;
        let g = download(generator_loss(t(&fake))).unwrap()[0] as f64;
        assert!((d - want_d).abs() < 1e-5, "{d} vs {want_d}");
        assert!((g - want_g).abs() < 1e-5, "{g} vs {want_g}");
        // Swapping the roles shows the smoothing sits on the real term only:
        // the same logits as fakes are scored against 0, not 0.1.
        let swapped = download(discriminator_loss(t(&fake), t(&real), 0.9)).unwrap()[0] as f64;
        let want_swapped = mean(&|l| softplus(l) - 0.9 * l, &fake) + mean(&softplus, &real);
        assert!((swapped - want_swapped).abs() < 1e-5);
        // Without smoothing, a confident real logit costs almost nothing.
        let off = download(bce_with_logits(t(&[30.0]), 1.0)).unwrap()[0];
        assert!(off < 1e-6);
    }

    #[test]
    fn sampling_has_no_dropout_and_training_does() {
        let dev = Device::flex();
        let config = GanConfig::default();
        let gan = Gan::init(&config, 1, &dev);
        let z = gan.noise(8, &mut stream(1, Purpose::Sample, 0));
        let a = gan.generate(&z).unwrap();
        let b = gan.generate(&z).unwrap();
        assert_eq!(a, b, "two sample calls with the same noise agree");
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
        // A training-mode pass (dropout masks) gives something else.
        let masks = gan.masks(&gan.g_shape, 8, &mut stream(1, Purpose::Train, 0));
        let zt = upload(z.clone(), [8, config.latent], &dev);
        let trained = download(
            gan.g_shape
                .forward(&gan.g, zt, Some(&masks), config.leaky_slope)
                .tanh(),
        )
        .unwrap();
        assert_ne!(trained, a);
        // Roughly 30% of the hidden units are dropped.
        let m = download(masks[2].clone()).unwrap();
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.3).abs() < 0.06, "{dropped}");
    }

    fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        a.iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    #[test]
    fn cpu_fast_path_matches_the_autodiff_steps() {
        let dev = Device::flex();
        let config = GanConfig::default();
        let gan = Gan::init(&config, 2, &dev);
        let (rule_d, rule_g) = rules(&config);
        let opt_d = Optimizer::new(rule_d, &gan.d_shape.sizes(), &dev);
        let opt_g = Optimizer::new(rule_g, &gan.g_shape.sizes(), &dev);
        let rows = 6;
        let mut data_rng = stream(2, Purpose::Fixed, 0);
        let x: Vec<f32> = (0..rows * PIXELS)
            .map(|_| data_rng.random_range(-1.0..1.0))
            .collect();
        let mut host = HostGan::new(&gan, &opt_g, &opt_d, rows).unwrap();

        let rng = stream(2, Purpose::Train, 1);
        let (want, finite, want_g) = burn_d_step(&gan, &x, &mut rng.clone()).unwrap();
        assert!(finite);
        let (got, finite) = host.d_step(&gan, &x, &mut rng.clone());
        assert!(finite);
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() < 1e-5 * b.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
        for (g, w) in host.d.grads.iter().zip(want_g) {
            let w = download(w).unwrap();
            assert!(max_rel_err(g, &w) < 1e-4, "discriminator gradient");
        }

        let (want, finite, want_g) = burn_g_step(&gan, rows, &mut rng.clone()).unwrap();
        assert!(finite);
        let (got, finite) = host.g_step(&gan, rows, &mut rng.clone());
        assert!(finite);
        assert!(
            (got - want).abs() < 1e-5 * want.abs().max(1.0),
            "{got} vs {want}"
        );
        for (g, w) in host.g.grads.iter().zip(want_g) {
            let w = download(w).unwrap();
            assert!(max_rel_err(g, &w) < 1e-4, "generator gradient");
        }
    }

    #[test]
    fn bulk_dropout_masks_are_the_one_at_a_time_draws() {
        let config = GanConfig::default();
        let (_, d) = shapes(&config);
        let rows = 7;
        let mut bulk = stream(3, Purpose::Train, 0);
        let mut single = bulk.clone();
        let got = mask_values(&config, &d, rows, &mut bulk);
        let p = config.dropout as f32;
        let keep = 1.0 / (1.0 - p);
        for (m, &w) in got.iter().zip(&d.widths[1..]) {
            assert_eq!(m.len(), rows * w);
            for &v in m {
                let want = if single.random::<f32>() < p {
                    0.0
                } else {
                    keep
                };
                assert_eq!(v, want);
            }
        }
        // Both streams stand at the same place afterwards.
        assert_eq!(bulk.random::<u64>(), single.random::<u64>());
    }

    #[test]
    fn pytorch_initialisation_bounds() {
        let dev = Device::flex();
        let (g, _) = shapes(&GanConfig::default());
        let params = g.init(&mut stream(0, Purpose::Init, 0), &dev);
        for (k, w) in g.widths.windows(2).enumerate() {
            let bound = 1.0 / (w[0] as f32).sqrt();
            for p in [&params[2 * k], &params[2 * k + 1]] {
                let v = download(p.clone()).unwrap();
                let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                assert!(
                    max <= bound && max > 0.9 * bound,
                    "layer {k}: {max} vs {bound}"
                );
            }
        }
        assert_eq!(g.parameter_count(), 114_800);
    }
}
