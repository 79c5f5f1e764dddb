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
use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::{Device, Tensor};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::optim::{Optimizer, Rule};
use super::tensors::{download, from_checkpoint, take_gradients, to_checkpoint, upload};
use super::{Family, ModelConfig, TrainContext};
use crate::config::{OnNan, RunConfig};
use crate::data::batches::fill_batch;
use crate::data::{EpochOrder, ImageShape, PixelView};
use crate::nn::host::{HostNetwork, InputGradient};
use crate::nn::{self, Layer, Network};
use crate::rng::{GenRng, Purpose, fill_standard_normal, stream};
use crate::run::{Checkpoint, RunDir, TensorData};
use crate::viz::{line_plot, save_grid};

pub mod eval;
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

    fn training_memory(&self, image: ImageShape) -> (f64, &'static str) {
        let mut widths = vec![self.latent];
        widths.extend(&self.generator_hidden);
        widths.push(image.pixels());
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

/// The generator's and the discriminator's networks, described as data:
/// dense layers of the configured widths, each hidden one followed by leaky
/// ReLU and dropout; the generator ends in tanh, the discriminator in a
/// logit. Both are built for images of shape `image` (flattened).
pub fn networks(c: &GanConfig, image: ImageShape) -> Result<(Network, Network)> {
    let pixels = image.pixels();
    let act = Layer::LeakyRelu {
        slope: c.leaky_slope,
    };
    let mut g_widths = c.generator_hidden.clone();
    g_widths.push(pixels);
    let g = Network::mlp("generator", c.latent, &g_widths, &act, c.dropout)?;
    let g = with_layer(g, "out", Layer::Tanh)?;
    let mut d_widths = c.discriminator_hidden.clone();
    d_widths.push(1);
    let d = Network::mlp("discriminator", pixels, &d_widths, &act, c.dropout)?;
    Ok((g, d))
}

/// `net` with one more layer at its end.
fn with_layer(net: Network, name: &str, layer: Layer) -> Result<Network> {
    let mut layers: Vec<(String, Layer)> = net
        .layers
        .iter()
        .map(|l| (l.name.clone(), l.layer.clone()))
        .collect();
    layers.push((name.to_string(), layer));
    Network::build(&net.name, &net.input, &layers)
}

/// The parameter names of `net`, in order.
pub fn param_names(net: &Network) -> Vec<&str> {
    net.params.iter().map(|p| p.name.as_str()).collect()
}

/// The parameter sizes of `net`, in order.
pub fn param_sizes(net: &Network) -> Vec<usize> {
    net.params.iter().map(|p| p.len()).collect()
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
    pub g_net: Network,
    pub d_net: Network,
    pub g: Vec<Tensor<1>>,
    pub d: Vec<Tensor<1>>,
    pub device: Device,
    /// The images the networks are built for.
    pub image: ImageShape,
}

impl Gan {
    pub fn init(config: &GanConfig, image: ImageShape, seed: u64, device: &Device) -> Result<Self> {
        let (g_net, d_net) = networks(config, image)?;
        let put = |values: Vec<Vec<f32>>| -> Vec<Tensor<1>> {
            values
                .into_iter()
                .map(|v| {
                    let n = v.len();
                    upload(v, [n], device)
                })
                .collect()
        };
        let g = put(g_net.torch_default_init(&mut stream(seed, Purpose::Init, 0)));
        let d = put(d_net.torch_default_init(&mut stream(seed, Purpose::Init, 1)));
        Ok(Gan {
            config: config.clone(),
            g_net,
            d_net,
            g,
            d,
            device: device.clone(),
            image,
        })
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
    fn masks(&self, net: &Network, rows: usize, rng: &mut GenRng) -> Vec<Tensor<2>> {
        mask_values(&self.config, net, rows, rng)
            .into_iter()
            .zip(net.dropout_widths())
            .map(|(m, w)| upload(m, [rows, w], &self.device))
            .collect()
    }

    /// Generated images in [-1, 1] for noise rows `z`, dropout off.
    pub fn generate(&self, z: &[f32]) -> Result<Vec<f32>> {
        let n = z.len() / self.config.latent;
        let zt = upload(z.to_vec(), [n, self.config.latent], &self.device);
        download(nn::tensor::infer(&self.g_net, &self.g, zt))
    }

    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut ck = Checkpoint::default();
        for (net, params) in [(&self.g_net, &self.g), (&self.d_net, &self.d)] {
            for (spec, p) in net.params.iter().zip(params) {
                ck.insert(
                    &spec.name,
                    TensorData::new(spec.shape.clone(), to_checkpoint(p)?.data),
                );
            }
        }
        ck.set_meta("genlab.family", "gan");
        ck.set_meta(crate::data::IMAGE_META, self.image.to_meta());
        Ok(ck)
    }

    /// The networks a checkpoint holds (built for the images it records).
    pub fn from_checkpoint(config: &GanConfig, ck: &Checkpoint, device: &Device) -> Result<Self> {
        let image = ck.image_shape()?;
        let (g_net, d_net) = networks(config, image)?;
        let load = |net: &Network| -> Result<Vec<Tensor<1>>> {
            net.params
                .iter()
                .map(|spec| {
                    ck.tensor(&spec.name, &spec.shape)?;
                    from_checkpoint(ck, &spec.name, spec.len(), device)
                })
                .collect()
        };
        Ok(Gan {
            config: config.clone(),
            g: load(&g_net)?,
            d: load(&d_net)?,
            g_net,
            d_net,
            device: device.clone(),
            image,
        })
    }
}

/// Dropout multipliers for `rows` examples of a network, per hidden layer
/// (`rows x width`): 0 with probability p, else 1/(1-p). Both training paths
/// draw them here, in the same order.
pub fn mask_values(c: &GanConfig, net: &Network, rows: usize, rng: &mut GenRng) -> Vec<Vec<f32>> {
    let p = c.dropout as f32;
    let keep = 1.0 / (1.0 - p);
    net.dropout_widths()
        .into_iter()
        .map(|w| {
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
    let pixels = gan.image.pixels();
    let rows = x.len() / pixels;
    // Fakes from the current generator (constant here), dropout on.
    let z = upload(gan.noise(rows, rng), [rows, c.latent], dev);
    let gm = gan.masks(&gan.g_net, rows, rng);
    let fake = nn::tensor::forward(&gan.g_net, &gan.g, z, &gm);
    let m_real = gan.masks(&gan.d_net, rows, rng);
    let m_fake = gan.masks(&gan.d_net, rows, rng);
    let tracked: Vec<Tensor<1>> = gan
        .d
        .iter()
        .map(|p| p.clone().autodiff().require_grad())
        .collect();
    let xt = upload(x.to_vec(), [rows, pixels], dev);
    let real_logits = nn::tensor::forward(&gan.d_net, &tracked, xt, &m_real);
    let fake_logits = nn::tensor::forward(&gan.d_net, &tracked, fake, &m_fake);
    let stats = Tensor::cat(
        vec![
            sigmoid(real_logits.clone().inner()).mean(),
            sigmoid(fake_logits.clone().inner()).mean(),
        ],
        0,
    );
    let loss = discriminator_loss(real_logits, fake_logits, c.real_label);
    let value = loss.clone().inner();
    let (g, gsum) = take_gradients(&tracked, &mut loss.backward());
    let host = download(Tensor::cat(vec![value, stats, gsum], 0))?;
    let finite = host.iter().all(|v| v.is_finite());
    Ok(([host[0] as f64, host[1] as f64, host[2] as f64], finite, g))
}

/// One generator step through burn's autodiff: fresh fakes through the
/// discriminator (constant here), flipped labels. Returns g_loss, whether
/// everything is finite, and G's gradients.
fn burn_g_step(gan: &Gan, rows: usize, rng: &mut GenRng) -> Result<(f64, bool, Vec<Tensor<1>>)> {
    let (c, dev) = (&gan.config, &gan.device);
    let z = upload(gan.noise(rows, rng), [rows, c.latent], dev);
    let gm = gan.masks(&gan.g_net, rows, rng);
    let dm = gan.masks(&gan.d_net, rows, rng);
    let tracked: Vec<Tensor<1>> = gan
        .g
        .iter()
        .map(|p| p.clone().autodiff().require_grad())
        .collect();
    let fake = nn::tensor::forward(&gan.g_net, &tracked, z, &gm);
    let logits = nn::tensor::forward(&gan.d_net, &gan.d, fake, &dm);
    let loss = generator_loss(logits);
    let value = loss.clone().inner();
    let (g, gsum) = take_gradients(&tracked, &mut loss.backward());
    let host = download(Tensor::cat(vec![value, gsum], 0))?;
    Ok((host[0] as f64, host.iter().all(|v| v.is_finite()), g))
}

/// One of the GAN's networks on the CPU executor: its parameters (in
/// [`Network::params`] order) and the gradients of the last step.
pub struct HostPart {
    pub exec: HostNetwork,
    pub params: Vec<Vec<f32>>,
    pub grads: Vec<Vec<f32>>,
}

impl HostPart {
    fn new(net: &Network, params: &[Tensor<1>]) -> Result<Self> {
        let params = super::host::download_all(params)?;
        Ok(HostPart {
            exec: HostNetwork::new(net.clone()),
            grads: params.iter().map(|p| vec![0.0; p.len()]).collect(),
            params,
        })
    }

    fn forward(&mut self, x: &[f32], rows: usize, masks: &[Vec<f32>]) -> &[f32] {
        let masks: Vec<&[f32]> = masks.iter().map(Vec::as_slice).collect();
        self.exec.forward(&self.params, x, rows, &masks)
    }

    /// Backward of the last forward: the parameters' gradients when
    /// `param_grads`, the input's into `dx` when given.
    fn backward(
        &mut self,
        x: &[f32],
        rows: usize,
        d_out: &[f32],
        masks: &[Vec<f32>],
        param_grads: bool,
        dx: Option<&mut [f32]>,
    ) {
        let masks: Vec<&[f32]> = masks.iter().map(Vec::as_slice).collect();
        let grads = param_grads.then_some(&mut self.grads[..]);
        let dx = match dx {
            Some(d) => InputGradient::Write(d),
            None => InputGradient::Skip,
        };
        self.exec
            .backward(&self.params, x, rows, d_out, &masks, grads, dx);
    }
}

/// The GAN's training steps on host buffers (the CPU fast path): the same
/// draws in the same order as [`burn_d_step`] and [`burn_g_step`], the same
/// losses and PyTorch Adam, with the two D passes of a D step (real and fake)
/// run as one batch of 2B rows.
pub struct HostGan {
    pub g: HostPart,
    pub d: HostPart,
    pub opt_g: super::host::HostOptimizer,
    pub opt_d: super::host::HostOptimizer,
    both: Vec<f32>,
    d_logits: Vec<f32>,
    d_fake: Vec<f32>,
    fake: Vec<f32>,
    /// Values per image.
    pixels: usize,
}

impl HostGan {
    pub fn new(gan: &Gan, opt_g: &Optimizer, opt_d: &Optimizer, rows: usize) -> Result<Self> {
        let pixels = gan.image.pixels();
        Ok(HostGan {
            pixels,
            g: HostPart::new(&gan.g_net, &gan.g)?,
            d: HostPart::new(&gan.d_net, &gan.d)?,
            opt_g: super::host::HostOptimizer::from_device(opt_g)?,
            opt_d: super::host::HostOptimizer::from_device(opt_d)?,
            both: vec![0.0; 2 * rows * pixels],
            d_logits: vec![0.0; 2 * rows],
            d_fake: vec![0.0; rows * pixels],
            fake: vec![0.0; rows * pixels],
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

    /// Generator output (its last layer is tanh) for noise `z` into `self.fake`.
    fn generate_into_fake(&mut self, z: &[f32], rows: usize, masks: &[Vec<f32>]) {
        let out = self.g.forward(z, rows, masks);
        self.fake[..rows * self.pixels].copy_from_slice(out);
    }

    /// A discriminator step's loss and gradients (apply with [`HostGan::apply_d`]).
    pub fn d_step(&mut self, gan: &Gan, x: &[f32], rng: &mut GenRng) -> ([f64; 3], bool) {
        let (c, px) = (&gan.config, self.pixels);
        let rows = x.len() / px;
        let z = gan.noise(rows, rng);
        let gm = mask_values(c, &gan.g_net, rows, rng);
        let m_real = mask_values(c, &gan.d_net, rows, rng);
        let m_fake = mask_values(c, &gan.d_net, rows, rng);
        self.generate_into_fake(&z, rows, &gm);
        self.both[..rows * px].copy_from_slice(x);
        self.both[rows * px..2 * rows * px].copy_from_slice(&self.fake[..rows * px]);
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
            .forward(&self.both[..2 * rows * px], 2 * rows, &masks);
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
            &self.both[..2 * rows * px],
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
        let (c, px) = (&gan.config, self.pixels);
        let z = gan.noise(rows, rng);
        let gm = mask_values(c, &gan.g_net, rows, rng);
        let dm = mask_values(c, &gan.d_net, rows, rng);
        self.generate_into_fake(&z, rows, &gm);
        let logits = self.d.forward(&self.fake[..rows * px], rows, &dm);
        let inv = 1.0 / rows as f32;
        let mut loss = 0.0f64;
        for (&l, d) in logits.iter().zip(self.d_logits.iter_mut()) {
            loss += (crate::cpu::softplus(l) - l) as f64;
            *d = (crate::cpu::sigmoid(l) - 1.0) * inv;
        }
        let d_logits = self.d_logits[..rows].to_vec();
        self.d.backward(
            &self.fake[..rows * px],
            rows,
            &d_logits,
            &dm,
            false,
            Some(&mut self.d_fake[..rows * px]),
        );
        self.g
            .backward(&z, rows, &self.d_fake[..rows * px], &gm, true, None);
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
fn apply_checked(net: &mut HostPart, opt: &mut super::host::HostOptimizer, undo: bool) -> bool {
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
        let gan = Gan::init(&config, ImageShape::MNIST, 1, &dev).unwrap();
        let z = gan.noise(8, &mut stream(1, Purpose::Sample, 0));
        let a = gan.generate(&z).unwrap();
        let b = gan.generate(&z).unwrap();
        assert_eq!(a, b, "two sample calls with the same noise agree");
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
        // A training-mode pass (dropout masks) gives something else.
        let masks = gan.masks(&gan.g_net, 8, &mut stream(1, Purpose::Train, 0));
        let zt = upload(z.clone(), [8, config.latent], &dev);
        let trained = download(nn::tensor::forward(&gan.g_net, &gan.g, zt, &masks)).unwrap();
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
        // The seed's widths, and other widths and depths from the
        // configuration, also for 32x32 colour images.
        let other = GanConfig {
            generator_hidden: vec![64, 128],
            discriminator_hidden: vec![96, 48, 24],
            latent: 20,
            ..GanConfig::default()
        };
        let rgb32 = ImageShape {
            channels: 3,
            height: 32,
            width: 32,
        };
        for (config, image) in [
            (GanConfig::default(), ImageShape::MNIST),
            (other.clone(), ImageShape::MNIST),
            (other, rgb32),
        ] {
            fast_path_matches_autodiff(&config, image);
        }
    }

    fn fast_path_matches_autodiff(config: &GanConfig, image: ImageShape) {
        let dev = Device::flex();
        let config = config.clone();
        let gan = Gan::init(&config, image, 2, &dev).unwrap();
        assert_eq!(gan.d_net.input_size(), image.pixels());
        assert_eq!(gan.g_net.output_size(), image.pixels());
        let (rule_d, rule_g) = rules(&config);
        let opt_d = Optimizer::new(rule_d, &param_sizes(&gan.d_net), &dev);
        let opt_g = Optimizer::new(rule_g, &param_sizes(&gan.g_net), &dev);
        let rows = 6;
        let mut data_rng = stream(2, Purpose::Fixed, 0);
        let x: Vec<f32> = (0..rows * image.pixels())
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
        let (_, d) = networks(&config, ImageShape::MNIST).unwrap();
        let rows = 7;
        let mut bulk = stream(3, Purpose::Train, 0);
        let mut single = bulk.clone();
        let got = mask_values(&config, &d, rows, &mut bulk);
        let p = config.dropout as f32;
        let keep = 1.0 / (1.0 - p);
        for (m, w) in got.iter().zip(d.dropout_widths()) {
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
        let (g, _) = networks(&GanConfig::default(), ImageShape::MNIST).unwrap();
        let params = g.torch_default_init(&mut stream(0, Purpose::Init, 0));
        let widths = g.dense_widths();
        for (k, w) in widths.windows(2).enumerate() {
            let bound = 1.0 / (w[0] as f32).sqrt();
            let weight = g
                .param_index(&format!("generator.layer{k}.weight"))
                .unwrap();
            let bias = g.param_index(&format!("generator.layer{k}.bias")).unwrap();
            for v in [&params[weight], &params[bias]] {
                let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                assert!(
                    max <= bound && max > 0.9 * bound,
                    "layer {k}: {max} vs {bound}"
                );
            }
        }
        assert_eq!(param_sizes(&g).iter().sum::<usize>(), 114_800);
    }
}
