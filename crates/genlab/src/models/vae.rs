//! Variational autoencoders (SPEC sections 2 and 3): one family with two
//! bodies, an MLP and a convolutional encoder/decoder, sharing the
//! reparameterisation, the loss and the training loop.
//!
//! Loss per image (`likelihood = "mse"`, the seed's): `784 * MSE(x, x_hat) +
//! KL`, i.e. the *sum* of squared errors over pixels plus the KL term
//! `-0.5 sum(1 + logvar - mean^2 - exp(logvar))`; the reported loss is its mean
//! over the batch, and the gradient is that of the mean. With `likelihood =
//! "bernoulli"`: binary cross-entropy summed over pixels (decoder logits) on
//! training images binarised afresh each epoch, plus the same KL.
//!
//! Parameters are plain named tensors (see [`VaeNet::specs`] for the names
//! and shapes written to `weights.safetensors`); dense kernels are stored
//! `[in, out]` as Keras does, convolution kernels `[out, in, kh, kw]`,
//! transposed-convolution kernels `[in, out, kh, kw]`, and the flatten between
//! the convolutions and the dense layers reads channels first (c, h, w).
//! Initialisation is Keras's: Glorot-uniform kernels, zero biases.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};
use burn::tensor::module::{conv_transpose2d, conv2d, linear};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Device, Tensor};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::optim::{Optimizer, OptimizerKind, Rule};
use super::tensors::{download, from_checkpoint, to_checkpoint, upload};
use super::{Family, ModelConfig, TrainContext};
use crate::config::{OnNan, RunConfig};
use crate::data::batches::{fill_batch, split_to_f32};
use crate::data::{EpochOrder, PIXELS, PixelView, SIDE, Split};
use crate::progress::EpochProgress;
use crate::rng::{GenRng, Purpose, RngState, fill_standard_normal, stream};
use crate::run::{Checkpoint, RunDir, TensorData};
use crate::viz::{Series, latent_scatter, line_plot, manifold_plot, save_grid};

/// Encoder/decoder bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// 784 -> hidden (relu) -> mean, logvar; latent -> hidden (relu) -> 784.
    Mlp,
    /// Two stride-2 convolutions, a dense layer of `hidden` units, the heads;
    /// the decoder mirrors it with transposed convolutions (SPEC section 3).
    Conv,
}

pub use super::likelihood::Likelihood;

impl super::host_conv::HostConvVae {
    /// The conv VAE's host path, started from `vae`'s weights and `opt`'s state.
    pub fn new(vae: &Vae, opt: &Optimizer, rows: usize) -> Result<Self> {
        Ok(Self::with_params(
            super::host::download_all(&vae.params)?,
            vae.net.latent,
            vae.net.hidden,
            super::host::HostOptimizer::from_device(opt)?,
            rows,
        ))
    }

    /// Writes the host weights and optimiser state back into `vae` and `opt`.
    pub fn store(&self, vae: &mut Vae, opt: &mut Optimizer) {
        for (t, p) in vae.params.iter_mut().zip(&self.params) {
            *t = upload(p.clone(), [p.len()], &vae.device);
        }
        *opt = self.opt.to_device(&vae.device);
    }
}

/// VAE configuration. Defaults are the seed preset `vae-2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaeConfig {
    pub architecture: Architecture,
    /// Latent dimensions.
    pub latent: usize,
    /// Units of the hidden dense layer (MLP: both sides; conv: the encoder's
    /// layer before the heads).
    pub hidden: usize,
    pub likelihood: Likelihood,
    /// `adam` (the MLP seed) or `rmsprop` (the conv seed); Keras semantics.
    pub optimizer: OptimizerKind,
    pub lr: f64,
    /// Adam's first-moment decay.
    pub beta1: f64,
    /// Adam's second-moment decay.
    pub beta2: f64,
    /// RMSprop's decay.
    pub rho: f64,
    /// Keras's epsilon (1e-7), in both optimisers.
    pub epsilon: f64,
    pub batch_size: usize,
    pub epochs: usize,
    /// The manifold figure of a 2-D latent spans [-extent, extent]^2.
    pub manifold_extent: f64,
    /// Tiles per side of the manifold figure.
    pub manifold_size: usize,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            architecture: Architecture::Mlp,
            latent: 2,
            hidden: 256,
            likelihood: Likelihood::Mse,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            rho: 0.9,
            epsilon: 1e-7,
            batch_size: 128,
            epochs: 30,
            manifold_extent: 3.0,
            manifold_size: 30,
        }
    }
}

impl ModelConfig for VaeConfig {
    fn epochs(&self) -> usize {
        self.epochs
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn training_memory(&self) -> (f64, &'static str) {
        let (v, h, l, b) = (
            PIXELS as f64,
            self.hidden as f64,
            self.latent as f64,
            self.batch_size as f64,
        );
        let params = 2.0 * (v * h + v + h) + 3.0 * (h * l + l);
        // Weights, two halves' gradients, two moments and host copies; a
        // batch's activations; the validation pass over 10,000 test images.
        let floats = 8.0 * params + 6.0 * b * (v + h + l) + 3.0 * 10_000.0 * (v + h + l);
        (
            4.0 * floats,
            "model.hidden, model.latent or model.batch_size",
        )
    }

    fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("model.latent", self.latent),
            ("model.hidden", self.hidden),
            ("model.batch_size", self.batch_size),
            ("model.epochs", self.epochs),
            ("model.manifold_size", self.manifold_size),
        ] {
            if v == 0 {
                crate::usage_bail!("{key} = 0: must be a positive integer");
            }
        }
        if !self.lr.is_finite() || self.lr <= 0.0 {
            crate::usage_bail!(
                "model.lr = {}: must be a finite number > 0, such as 0.001",
                self.lr
            );
        }
        for (key, v) in [
            ("model.beta1", self.beta1),
            ("model.beta2", self.beta2),
            ("model.rho", self.rho),
        ] {
            if !(0.0..1.0).contains(&v) {
                crate::usage_bail!("{key} = {v}: must be in [0, 1)");
            }
        }
        if !self.epsilon.is_finite() || self.epsilon <= 0.0 {
            crate::usage_bail!(
                "model.epsilon = {}: must be a finite number > 0 (Keras: 1e-7)",
                self.epsilon
            );
        }
        if !self.manifold_extent.is_finite() || self.manifold_extent <= 0.0 {
            crate::usage_bail!(
                "model.manifold_extent = {}: must be a finite number > 0",
                self.manifold_extent
            );
        }
        Ok(())
    }
}

impl VaeConfig {
    fn rule(&self) -> Rule {
        match self.optimizer {
            OptimizerKind::Adam => Rule::AdamKeras {
                lr: self.lr,
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.epsilon,
            },
            OptimizerKind::Rmsprop => Rule::RmspropKeras {
                lr: self.lr,
                rho: self.rho,
                eps: self.epsilon,
            },
        }
    }

    /// The pixels the encoder sees during training.
    fn train_view(&self) -> PixelView {
        match self.likelihood {
            Likelihood::Mse => PixelView::Unit,
            Likelihood::Bernoulli => PixelView::Dynamic,
        }
    }
}

/// One parameter: its name in checkpoints, its shape, and its Glorot fans
/// (`None`: initialised to zero).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub fans: Option<(usize, usize)>,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Channels after the second convolution and the side of its output (7x7x64 = 3136).
const CONV_CHANNELS: [usize; 2] = [32, 64];
const CONV_SIDE: usize = SIDE / 4;

/// The architecture without its values: shapes, names and the forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeNet {
    pub architecture: Architecture,
    pub latent: usize,
    pub hidden: usize,
    pub specs: Vec<ParamSpec>,
    /// Parameters of the encoder (the first `encoder_params` specs).
    pub encoder_params: usize,
}

fn dense(name: &'static str, bias: &'static str, i: usize, o: usize) -> [ParamSpec; 2] {
    [
        ParamSpec {
            name,
            shape: vec![i, o],
            fans: Some((i, o)),
        },
        ParamSpec {
            name: bias,
            shape: vec![o],
            fans: None,
        },
    ]
}

fn kernel(name: &'static str, bias: &'static str, shape: [usize; 4], out: usize) -> [ParamSpec; 2] {
    let receptive = shape[2] * shape[3];
    [
        ParamSpec {
            name,
            shape: shape.to_vec(),
            fans: Some((shape[1] * receptive, shape[0] * receptive)),
        },
        ParamSpec {
            name: bias,
            shape: vec![out],
            fans: None,
        },
    ]
}

impl VaeNet {
    pub fn new(architecture: Architecture, latent: usize, hidden: usize) -> Self {
        let (l, h) = (latent, hidden);
        let mut specs = Vec::new();
        match architecture {
            Architecture::Mlp => {
                specs.extend(dense(
                    "encoder.hidden.weight",
                    "encoder.hidden.bias",
                    PIXELS,
                    h,
                ));
                specs.extend(dense("encoder.mean.weight", "encoder.mean.bias", h, l));
                specs.extend(dense("encoder.logvar.weight", "encoder.logvar.bias", h, l));
                specs.extend(dense("decoder.hidden.weight", "decoder.hidden.bias", l, h));
                specs.extend(dense("decoder.out.weight", "decoder.out.bias", h, PIXELS));
            }
            Architecture::Conv => {
                let [c1, c2] = CONV_CHANNELS;
                let flat = c2 * CONV_SIDE * CONV_SIDE;
                specs.extend(kernel(
                    "encoder.conv1.weight",
                    "encoder.conv1.bias",
                    [c1, 1, 3, 3],
                    c1,
                ));
                specs.extend(kernel(
                    "encoder.conv2.weight",
                    "encoder.conv2.bias",
                    [c2, c1, 3, 3],
                    c2,
                ));
                specs.extend(dense(
                    "encoder.hidden.weight",
                    "encoder.hidden.bias",
                    flat,
                    h,
                ));
                specs.extend(dense("encoder.mean.weight", "encoder.mean.bias", h, l));
                specs.extend(dense("encoder.logvar.weight", "encoder.logvar.bias", h, l));
                specs.extend(dense(
                    "decoder.hidden.weight",
                    "decoder.hidden.bias",
                    l,
                    flat,
                ));
                // Transposed kernels are [in, out, kh, kw]; Keras's Glorot fans
                // for them are (kh kw out, kh kw in), which sum the same.
                specs.extend(kernel(
                    "decoder.deconv1.weight",
                    "decoder.deconv1.bias",
                    [c2, c2, 3, 3],
                    c2,
                ));
                specs.extend(kernel(
                    "decoder.deconv2.weight",
                    "decoder.deconv2.bias",
                    [c2, c1, 3, 3],
                    c1,
                ));
                specs.extend(kernel(
                    "decoder.deconv3.weight",
                    "decoder.deconv3.bias",
                    [c1, 1, 3, 3],
                    1,
                ));
            }
        }
        let encoder_params = specs
            .iter()
            .take_while(|s| s.name.starts_with("encoder."))
            .count();
        VaeNet {
            architecture,
            latent,
            hidden,
            specs,
            encoder_params,
        }
    }

    pub fn from_config(c: &VaeConfig) -> Self {
        VaeNet::new(c.architecture, c.latent, c.hidden)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.specs.iter().map(|s| s.name).collect()
    }

    pub fn sizes(&self) -> Vec<usize> {
        self.specs.iter().map(|s| s.len()).collect()
    }

    /// (encoder, decoder) parameter counts.
    pub fn parameter_counts(&self) -> (usize, usize) {
        let sizes = self.sizes();
        let enc = sizes[..self.encoder_params].iter().sum();
        (enc, sizes[self.encoder_params..].iter().sum())
    }

    fn w2(&self, p: &[Tensor<1>], i: usize) -> Tensor<2> {
        let s = &self.specs[i].shape;
        p[i].clone().reshape([s[0], s[1]])
    }

    fn w4(&self, p: &[Tensor<1>], i: usize) -> Tensor<4> {
        let s = &self.specs[i].shape;
        p[i].clone().reshape([s[0], s[1], s[2], s[3]])
    }

    fn dense(&self, p: &[Tensor<1>], i: usize, x: Tensor<2>) -> Tensor<2> {
        linear(x, self.w2(p, i), Some(p[i + 1].clone()))
    }

    /// Mean and log-variance of q(z|x) for images `x` (rows of 784 values).
    pub fn encode(&self, p: &[Tensor<1>], x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        match self.architecture {
            Architecture::Mlp => {
                let h = relu(self.dense(p, 0, x));
                (self.dense(p, 2, h.clone()), self.dense(p, 4, h))
            }
            Architecture::Conv => {
                let b = x.dims()[0];
                let x = x.reshape([b, 1, SIDE, SIDE]);
                let h = relu(conv_same_stride2(x, self.w4(p, 0), p[1].clone()));
                let h = relu(conv_same_stride2(h, self.w4(p, 2), p[3].clone()));
                let h = h.reshape([b, CONV_CHANNELS[1] * CONV_SIDE * CONV_SIDE]);
                let h = relu(self.dense(p, 4, h));
                (self.dense(p, 6, h.clone()), self.dense(p, 8, h))
            }
        }
    }

    /// Decoder logits (rows of 784): sigmoid of them is the decoded image.
    pub fn decode(&self, p: &[Tensor<1>], z: Tensor<2>) -> Tensor<2> {
        match self.architecture {
            Architecture::Mlp => {
                let h = relu(self.dense(p, 6, z));
                self.dense(p, 8, h)
            }
            Architecture::Conv => {
                let b = z.dims()[0];
                let [c1, c2] = CONV_CHANNELS;
                let h = relu(self.dense(p, 10, z)).reshape([b, c2, CONV_SIDE, CONV_SIDE]);
                let h = relu(conv_transpose_same_stride2(
                    h,
                    self.w4(p, 12),
                    p[13].clone(),
                ));
                let h = relu(conv_transpose_same_stride2(
                    h,
                    self.w4(p, 14),
                    p[15].clone(),
                ));
                debug_assert_eq!(h.dims(), [b, c1, SIDE, SIDE]);
                let same1 = ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1);
                conv_transpose2d(h, self.w4(p, 16), Some(p[17].clone()), same1).reshape([b, PIXELS])
            }
        }
    }

    /// Per image: the reconstruction term and the KL term (each `[B]`) for
    /// images `x` encoded, reparameterised with noise `eps` (`[B, latent]`)
    /// and decoded.
    pub fn loss_parts(
        &self,
        p: &[Tensor<1>],
        x: Tensor<2>,
        eps: Tensor<2>,
        likelihood: Likelihood,
    ) -> (Tensor<1>, Tensor<1>) {
        let b = x.dims()[0];
        let (mean, logvar) = self.encode(p, x.clone());
        let z = mean.clone() + logvar.clone().mul_scalar(0.5).exp() * eps;
        let logits = self.decode(p, z);
        let recon = match likelihood {
            Likelihood::Mse => (sigmoid(logits) - x).square().sum_dim(1),
            // softplus(l) - x l = l (1 - x) - log_sigmoid(l)
            Likelihood::Bernoulli => {
                (logits.clone() * x.neg().add_scalar(1.0) - log_sigmoid(logits)).sum_dim(1)
            }
        };
        let kl = (logvar.clone().exp() + mean.square() - logvar)
            .add_scalar(-1.0)
            .mul_scalar(0.5)
            .sum_dim(1);
        (recon.reshape([b]), kl.reshape([b]))
    }
}

/// Keras `Conv2D(3x3, strides=2, padding="same")` on an even side n: output
/// n/2, padding one row and one column at the end only (TensorFlow puts the
/// odd padding after). Kernel `[out, in, 3, 3]`.
pub fn conv_same_stride2(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    let same2 = ConvOptions::new_with_padding([2, 2], [(0, 1), (0, 1)], [1, 1], 1);
    conv2d(x, w, Some(b), same2)
}

/// Keras `Conv2DTranspose(3x3, strides=2, padding="same")`: output 2n, the
/// full (2n + 1)-wide transposed convolution cropped to its first 2n rows and
/// columns (the gradient of [`conv_same_stride2`]). Kernel `[in, out, 3, 3]`.
pub fn conv_transpose_same_stride2(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    let [n, _, h, wd] = x.dims();
    let out = w.dims()[1];
    let up = ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1);
    conv_transpose2d(x, w, Some(b), up).slice([0..n, 0..out, 0..2 * h, 0..2 * wd])
}

/// A VAE with its parameters (on a non-autodiff device).
#[derive(Debug, Clone)]
pub struct Vae {
    pub net: VaeNet,
    pub params: Vec<Tensor<1>>,
    pub device: Device,
}

/// Images per forward pass outside training (validation, figures, evaluation).
pub const INFERENCE_BATCH: usize = 500;

impl Vae {
    /// Keras initialisation: Glorot-uniform kernels, zero biases.
    pub fn init(net: VaeNet, rng: &mut GenRng, device: &Device) -> Self {
        let params = net
            .specs
            .iter()
            .map(|s| {
                let data: Vec<f32> = match s.fans {
                    Some((fi, fo)) => {
                        let limit = (6.0 / (fi + fo) as f64).sqrt() as f32;
                        (0..s.len())
                            .map(|_| rng.random_range(-limit..limit))
                            .collect()
                    }
                    None => vec![0.0; s.len()],
                };
                upload(data, [s.len()], device)
            })
            .collect();
        Vae {
            net,
            params,
            device: device.clone(),
        }
    }

    /// The weights as a checkpoint (each tensor in its documented shape).
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut ck = Checkpoint::default();
        for (s, p) in self.net.specs.iter().zip(&self.params) {
            let flat = to_checkpoint(p)?;
            ck.insert(s.name, TensorData::new(s.shape.clone(), flat.data));
        }
        ck.set_meta("genlab.family", "vae");
        ck.set_meta(
            "genlab.architecture",
            serde_json::to_value(self.net.architecture)?
                .as_str()
                .unwrap_or_default(),
        );
        ck.set_meta("genlab.latent", self.net.latent.to_string());
        ck.set_meta("genlab.hidden", self.net.hidden.to_string());
        Ok(ck)
    }

    pub fn from_checkpoint(net: VaeNet, ck: &Checkpoint, device: &Device) -> Result<Self> {
        let params = net
            .specs
            .iter()
            .map(|s| {
                ck.tensor(s.name, &s.shape)?;
                from_checkpoint(ck, s.name, s.len(), device)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Vae {
            net,
            params,
            device: device.clone(),
        })
    }

    fn rows(&self, x: &[f32], width: usize) -> Tensor<2> {
        upload(x.to_vec(), [x.len() / width, width], &self.device)
    }

    /// Means and log-variances of q(z|x), `[n, latent]` each, in batches.
    pub fn encode(&self, x: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mut mean, mut logvar) = (Vec::new(), Vec::new());
        for chunk in x.chunks(INFERENCE_BATCH * PIXELS) {
            let (m, v) = self.net.encode(&self.params, self.rows(chunk, PIXELS));
            mean.extend(download(m)?);
            logvar.extend(download(v)?);
        }
        Ok((mean, logvar))
    }

    /// Decoder logits for latent rows `z`, in batches.
    pub fn decode_logits(&self, z: &[f32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(z.len() / self.net.latent * PIXELS);
        for chunk in z.chunks(INFERENCE_BATCH * self.net.latent) {
            out.extend(download(
                self.net
                    .decode(&self.params, self.rows(chunk, self.net.latent)),
            )?);
        }
        Ok(out)
    }

    /// Decoded images (sigmoid of the logits) for latent rows `z`.
    pub fn decode(&self, z: &[f32]) -> Result<Vec<f32>> {
        let mut v = self.decode_logits(z)?;
        crate::cpu::sigmoid_in_place(&mut v);
        Ok(v)
    }

    /// Mean reconstruction and KL terms over images `x` with noise `eps`.
    pub fn loss_terms(&self, x: &[f32], eps: &[f32], likelihood: Likelihood) -> Result<(f64, f64)> {
        let n = x.len() / PIXELS;
        let (mut recon, mut kl) = (0.0f64, 0.0f64);
        for (xc, ec) in x
            .chunks(INFERENCE_BATCH * PIXELS)
            .zip(eps.chunks(INFERENCE_BATCH * self.net.latent))
        {
            let (r, k) = self.net.loss_parts(
                &self.params,
                self.rows(xc, PIXELS),
                self.rows(ec, self.net.latent),
                likelihood,
            );
            let v = download(Tensor::cat(vec![r.sum(), k.sum()], 0))?;
            recon += v[0] as f64;
            kl += v[1] as f64;
        }
        Ok((recon / n as f64, kl / n as f64))
    }
}

/// The MLP VAE's training step on host buffers (the CPU fast path): the
/// same forward pass, loss and Keras update as [`VaeNet::loss_parts`] with
/// burn's autodiff, written out with fused passes and no allocation per
/// step. Parameters in [`VaeNet::specs`] order. A batch runs in two halves
/// side by side ([`super::host::in_halves`]; an epoch takes about a quarter
/// less time on two cores than with every product split across both).
pub struct HostMlpVae {
    pub latent: usize,
    pub hidden: usize,
    pub params: Vec<Vec<f32>>,
    pub opt: super::host::HostOptimizer,
    /// The two halves of a batch; the first one's gradients hold the
    /// batch's after each step.
    shards: Vec<MlpShard>,
}

/// Activations, their gradients and the parameter gradients of one part of a batch.
struct MlpShard {
    grads: Vec<Vec<f32>>,
    h1: Vec<f32>,
    mean: Vec<f32>,
    logvar: Vec<f32>,
    sd: Vec<f32>,
    z: Vec<f32>,
    h2: Vec<f32>,
    logits: Vec<f32>,
    d_h2: Vec<f32>,
    d_z: Vec<f32>,
    d_mean: Vec<f32>,
    d_logvar: Vec<f32>,
    d_h1: Vec<f32>,
}

impl MlpShard {
    fn new(params: &[Vec<f32>], rows: usize, l: usize, h: usize) -> Self {
        MlpShard {
            grads: params.iter().map(|p| vec![0.0; p.len()]).collect(),
            h1: vec![0.0; rows * h],
            mean: vec![0.0; rows * l],
            logvar: vec![0.0; rows * l],
            sd: vec![0.0; rows * l],
            z: vec![0.0; rows * l],
            h2: vec![0.0; rows * h],
            logits: vec![0.0; rows * PIXELS],
            d_h2: vec![0.0; rows * h],
            d_z: vec![0.0; rows * l],
            d_mean: vec![0.0; rows * l],
            d_logvar: vec![0.0; rows * l],
            d_h1: vec![0.0; rows * h],
        }
    }

    /// Loss sums and gradients of the rows `x` (noise `eps`), every gradient
    /// scaled by `scale` (1 / the whole batch's rows).
    #[allow(clippy::too_many_arguments)]
    fn forward_backward(
        &mut self,
        p: &[Vec<f32>],
        (l, h): (usize, usize),
        x: &[f32],
        eps: &[f32],
        scale: f32,
        likelihood: Likelihood,
    ) -> [f64; 2] {
        use super::host::{
            add_bias, add_bias_relu, bernoulli_grad, dense, dense_backward, relu_backward,
            sigmoid_mse_grad,
        };
        let b = x.len() / PIXELS;
        let g = &mut self.grads;
        if b == 0 {
            for gi in g.iter_mut() {
                gi.fill(0.0);
            }
            return [0.0, 0.0];
        }
        // Forward.
        let h1 = &mut self.h1[..b * h];
        dense(h1, x, &p[0], b, PIXELS, h);
        add_bias_relu(h1, &p[1]);
        let (mean, logvar) = (&mut self.mean[..b * l], &mut self.logvar[..b * l]);
        dense(mean, h1, &p[2], b, h, l);
        add_bias(mean, &p[3]);
        dense(logvar, h1, &p[4], b, h, l);
        add_bias(logvar, &p[5]);
        let (sd, z) = (&mut self.sd[..b * l], &mut self.z[..b * l]);
        let kl = super::host::reparameterize(mean, logvar, eps, sd, z);
        let h2 = &mut self.h2[..b * h];
        dense(h2, z, &p[6], b, l, h);
        add_bias_relu(h2, &p[7]);
        let logits = &mut self.logits[..b * PIXELS];
        dense(logits, h2, &p[8], b, h, PIXELS);
        add_bias(logits, &p[9]);
        // The loss is the batch mean: every gradient carries 1/b.
        let recon = match likelihood {
            Likelihood::Mse => sigmoid_mse_grad(logits, x, scale),
            Likelihood::Bernoulli => bernoulli_grad(logits, x, scale),
        } as f64;
        let d_logits = logits;
        // Backward.
        let d_h2 = &mut self.d_h2[..b * h];
        {
            let (g8, rest) = g[8..].split_at_mut(1);
            dense_backward(
                h2,
                &p[8],
                d_logits,
                (b, h, PIXELS),
                &mut g8[0],
                &mut rest[0],
                Some(d_h2),
                false,
            );
        }
        relu_backward(d_h2, h2);
        let d_z = &mut self.d_z[..b * l];
        {
            let (g6, rest) = g[6..].split_at_mut(1);
            dense_backward(
                z,
                &p[6],
                d_h2,
                (b, l, h),
                &mut g6[0],
                &mut rest[0],
                Some(d_z),
                false,
            );
        }
        let (d_mean, d_logvar) = (&mut self.d_mean[..b * l], &mut self.d_logvar[..b * l]);
        for i in 0..b * l {
            d_mean[i] = d_z[i] + mean[i] * scale;
            d_logvar[i] = d_z[i] * eps[i] * 0.5 * sd[i] + 0.5 * (sd[i] * sd[i] - 1.0) * scale;
        }
        let d_h1 = &mut self.d_h1[..b * h];
        {
            let (g2, rest) = g[2..].split_at_mut(1);
            dense_backward(
                h1,
                &p[2],
                d_mean,
                (b, h, l),
                &mut g2[0],
                &mut rest[0],
                Some(&mut *d_h1),
                false,
            );
            let (g4, rest) = g[4..].split_at_mut(1);
            dense_backward(
                h1,
                &p[4],
                d_logvar,
                (b, h, l),
                &mut g4[0],
                &mut rest[0],
                Some(&mut *d_h1),
                true,
            );
        }
        relu_backward(d_h1, h1);
        {
            let (g0, rest) = g.split_at_mut(1);
            dense_backward(
                x,
                &p[0],
                d_h1,
                (b, PIXELS, h),
                &mut g0[0],
                &mut rest[0],
                None,
                false,
            );
        }
        [recon, kl]
    }
}

impl HostMlpVae {
    /// Copies a model and its optimiser to the host, with buffers for batches of up to `rows`.
    pub fn new(vae: &Vae, opt: &Optimizer, rows: usize) -> Result<Self> {
        assert_eq!(vae.net.architecture, Architecture::Mlp);
        let (l, h) = (vae.net.latent, vae.net.hidden);
        let params = super::host::download_all(&vae.params)?;
        let shard_rows = rows.div_ceil(2);
        let shards = (0..2)
            .map(|_| MlpShard::new(&params, shard_rows, l, h))
            .collect();
        Ok(HostMlpVae {
            latent: l,
            hidden: h,
            params,
            opt: super::host::HostOptimizer::from_device(opt)?,
            shards,
        })
    }

    /// Writes the host state back into a model and an optimiser on `vae.device`.
    pub fn store(&self, vae: &mut Vae, opt: &mut Optimizer) {
        for (t, p) in vae.params.iter_mut().zip(&self.params) {
            *t = upload(p.clone(), [p.len()], &vae.device);
        }
        *opt = self.opt.to_device(&vae.device);
    }

    /// Computes the loss and the gradients of a batch `x` (`rows x 784`) with
    /// noise `eps`; returns the summed (reconstruction, KL) and whether every
    /// gradient is finite. Call [`HostMlpVae::apply`] to update.
    pub fn forward_backward(
        &mut self,
        x: &[f32],
        eps: &[f32],
        likelihood: Likelihood,
    ) -> ([f64; 2], bool) {
        let dims = (self.latent, self.hidden);
        let p = &self.params;
        super::host::in_halves(
            &mut self.shards,
            x,
            eps,
            self.latent,
            |half| &mut half.grads,
            |half, x, eps, scale| half.forward_backward(p, dims, x, eps, scale, likelihood),
        )
    }

    /// The gradients of the last [`HostMlpVae::forward_backward`] (the two
    /// halves' summed into a copy).
    pub fn grads(&self) -> Vec<Vec<f32>> {
        super::host::summed_grads(&self.shards[0].grads, &self.shards[1].grads)
    }

    /// Applies the optimiser with the gradients of the last [`HostMlpVae::forward_backward`].
    pub fn apply(&mut self) {
        let (g0, g1) = (&self.shards[0].grads, &self.shards[1].grads);
        self.opt.update_sum(&mut self.params, g0, g1);
    }
}

/// The CPU fast path of either body.
enum FastPath {
    Mlp(Box<HostMlpVae>),
    Conv(Box<super::host_conv::HostConvVae>),
}

impl FastPath {
    fn new(vae: &Vae, opt: &Optimizer, rows: usize) -> Result<Self> {
        Ok(match vae.net.architecture {
            Architecture::Mlp => FastPath::Mlp(Box::new(HostMlpVae::new(vae, opt, rows)?)),
            Architecture::Conv => FastPath::Conv(Box::new(super::host_conv::HostConvVae::new(
                vae, opt, rows,
            )?)),
        })
    }

    fn forward_backward(
        &mut self,
        x: &[f32],
        eps: &[f32],
        likelihood: Likelihood,
    ) -> ([f64; 2], bool) {
        match self {
            FastPath::Mlp(h) => h.forward_backward(x, eps, likelihood),
            FastPath::Conv(h) => h.forward_backward(x, eps, likelihood),
        }
    }

    fn apply(&mut self) {
        match self {
            FastPath::Mlp(h) => h.apply(),
            FastPath::Conv(h) => h.apply(),
        }
    }

    fn store(&self, vae: &mut Vae, opt: &mut Optimizer) {
        match self {
            FastPath::Mlp(h) => h.store(vae, opt),
            FastPath::Conv(h) => h.store(vae, opt),
        }
    }
}

/// One training step through burn's autodiff (any device): returns the
/// summed (reconstruction, KL), whether the loss and every gradient are
/// finite, and the gradients.
pub fn burn_step(
    net: &VaeNet,
    vae: &Vae,
    x: &[f32],
    eps: &[f32],
    likelihood: Likelihood,
) -> Result<([f64; 2], bool, Vec<Tensor<1>>)> {
    let rows = x.len() / PIXELS;
    let xt = upload(x.to_vec(), [rows, PIXELS], &vae.device);
    let et = upload(eps.to_vec(), [rows, net.latent], &vae.device);
    let tracked: Vec<Tensor<1>> = vae
        .params
        .iter()
        .map(|p| p.clone().autodiff().require_grad())
        .collect();
    let (recon, kl) = net.loss_parts(&tracked, xt, et, likelihood);
    let stats = Tensor::cat(
        vec![recon.clone().sum().inner(), kl.clone().sum().inner()],
        0,
    );
    let loss = (recon + kl).mean();
    let mut grads = loss.backward();
    let g: Vec<Tensor<1>> = tracked
        .iter()
        .map(|p| p.grad_remove(&mut grads).expect("every parameter is used"))
        .collect();
    // One read per batch: the two loss sums and the sum of all gradients
    // (finite exactly when every gradient is).
    let gsum = g
        .iter()
        .map(|t| t.clone().sum())
        .reduce(|a, b| a + b)
        .expect("parameters");
    let host = download(Tensor::cat(vec![stats, gsum], 0))?;
    Ok(([host[0] as f64, host[1] as f64], all_finite(&host), g))
}

/// The VAE family: `genlab train vae [--preset vae-2|vae-8|vae-16|conv-vae|...]`.
pub struct VaeFamily;

/// Training position saved in a checkpoint.
struct Position<'a> {
    epochs_done: usize,
    batches_done: usize,
    rng: Option<&'a GenRng>,
    best_val: f64,
    /// Sums of (loss, recon, kl, images) over the finished batches of an
    /// interrupted epoch, so its reported means stay exact after a resume.
    partial: [f64; 4],
}

fn training_checkpoint(vae: &Vae, opt: &Optimizer, at: &Position) -> Result<Checkpoint> {
    let mut ck = vae.to_checkpoint()?;
    opt.save(&mut ck, "optimizer", &vae.net.names())?;
    ck.set_meta("genlab.epoch", at.epochs_done.to_string());
    ck.set_meta("genlab.batch", at.batches_done.to_string());
    ck.set_meta("genlab.best_val_loss", at.best_val.to_string());
    ck.set_meta("genlab.partial_sums", serde_json::to_string(&at.partial)?);
    if let Some(rng) = at.rng {
        ck.set_meta(
            "genlab.rng",
            serde_json::to_string(&RngState::capture(rng))?,
        );
    }
    Ok(ck)
}

/// The test images as the loss sees them: pixel / 255 (MSE) or one fixed
/// Bernoulli draw (seed-determined) for the Bernoulli likelihood.
pub fn test_pixels(split: &Split, likelihood: Likelihood, seed: u64) -> Vec<f32> {
    let view = match likelihood {
        Likelihood::Mse => PixelView::Unit,
        Likelihood::Bernoulli => PixelView::Dynamic,
    };
    split_to_f32(split, view, &mut stream(seed, Purpose::Binarise, 1_000_000))
}

/// Noise for `n` reparameterisations, the same for every epoch of a run.
fn fixed_noise(seed: u64, index: u32, n: usize) -> Vec<f32> {
    let mut eps = vec![0.0f32; n];
    fill_standard_normal(&mut stream(seed, Purpose::Fixed, index), &mut eps);
    eps
}

fn all_finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

impl Family for VaeFamily {
    const NAME: &'static str = "vae";
    const SEED_PRESET: &'static str = "vae-2";
    type Config = VaeConfig;

    fn train(
        ctx: &TrainContext,
        run_config: &RunConfig<VaeConfig>,
        resume: Option<&Checkpoint>,
    ) -> Result<()> {
        let config = &run_config.model;
        let seed = run_config.seed;
        let device = ctx.device.clone();
        let net = VaeNet::from_config(config);
        let (names, sizes) = (net.names(), net.sizes());
        let (mut vae, mut opt, epochs_done, batches_done, resumed_rng, mut best_val, partial) =
            match resume {
                Some(ck) => {
                    let parse = |key: &str| -> Result<usize> {
                        ck.meta(key)?
                            .parse()
                            .with_context(|| format!("checkpoint entry {key} is not a number"))
                    };
                    let vae = Vae::from_checkpoint(net.clone(), ck, &device)
                        .map_err(crate::error::usage)?;
                    let opt =
                        Optimizer::load(config.rule(), ck, "optimizer", &names, &sizes, &device)
                            .map_err(crate::error::usage)?;
                    let rng = match ck.metadata.get("genlab.rng") {
                        Some(json) => Some(serde_json::from_str::<RngState>(json)?.restore()?),
                        None => None,
                    };
                    let partial: [f64; 4] = match ck.metadata.get("genlab.partial_sums") {
                        Some(s) => serde_json::from_str(s)?,
                        None => [0.0; 4],
                    };
                    let best = ck
                        .meta("genlab.best_val_loss")?
                        .parse()
                        .unwrap_or(f64::INFINITY);
                    (
                        vae,
                        opt,
                        parse("genlab.epoch")?,
                        parse("genlab.batch")?,
                        rng,
                        best,
                        partial,
                    )
                }
                None => {
                    let vae = Vae::init(net.clone(), &mut stream(seed, Purpose::Init, 0), &device);
                    let opt = Optimizer::new(config.rule(), &sizes, &device);
                    (vae, opt, 0, 0, None, f64::INFINITY, [0.0; 4])
                }
            };
        ctx.run.metrics().truncate_to_epoch(epochs_done as u64)?;
        let (enc, dec) = net.parameter_counts();
        if resume.is_none() {
            println!(
                "{} VAE, latent {}: {enc} encoder + {dec} decoder parameters ({} in all)",
                match config.architecture {
                    Architecture::Mlp => "MLP",
                    Architecture::Conv => "convolutional",
                },
                config.latent,
                enc + dec
            );
        }

        let train = &ctx.dataset.train;
        let test = test_pixels(&ctx.dataset.test, config.likelihood, seed);
        let n_test = ctx.dataset.test.len();
        let val_eps = fixed_noise(seed, 2, n_test * config.latent);
        let prior_z = fixed_noise(seed, 3, 64 * config.latent);
        let latent = config.latent;
        let view = config.train_view();
        let mut xbuf = Vec::new();
        let mut eps = Vec::new();
        let skip_bad = run_config.on_nan == OnNan::SkipBatch;
        // The CPU fast path for the MLP (GENLAB_CPU_KERNELS=0 forces burn's
        // generic path, for comparisons).
        let mut fast = if run_config.device == crate::device::DeviceKind::Cpu
            && crate::cpu::kernels_enabled()
        {
            Some(FastPath::new(&vae, &opt, config.batch_size)?)
        } else {
            None
        };

        for epoch in epochs_done + 1..=config.epochs {
            let order = EpochOrder::new(
                train.len(),
                config.batch_size,
                false,
                true,
                seed,
                epoch as u32,
            );
            let resuming = epoch == epochs_done + 1 && batches_done > 0;
            let skip = if resuming { batches_done } else { 0 };
            let mut rng = match (&resumed_rng, resuming) {
                (Some(r), true) => r.clone(),
                _ => stream(seed, Purpose::Train, epoch as u32),
            };
            // (loss, recon, kl, images) summed over the epoch's batches.
            let mut sums = if resuming { partial } else { [0.0; 4] };
            let mut skipped = 0usize;
            let mut progress = EpochProgress::start(
                epoch,
                config.epochs,
                order.num_batches() - skip,
                ctx.interactive,
            );
            for (b, idx) in order.batches().enumerate().skip(skip) {
                let rows = idx.len();
                fill_batch(train, idx, view, &mut rng, &mut xbuf);
                eps.resize(rows * latent, 0.0);
                fill_standard_normal(&mut rng, &mut eps);
                let ([r, k], finite) = match fast.as_mut() {
                    Some(h) => h.forward_backward(&xbuf, &eps, config.likelihood),
                    None => {
                        let (stats, finite, g) =
                            burn_step(&net, &vae, &xbuf, &eps, config.likelihood)?;
                        if finite {
                            opt.update(&mut vae.params, g);
                        }
                        (stats, finite)
                    }
                };
                if !finite {
                    if skip_bad {
                        skipped += 1;
                        progress.batch(rows, None);
                        continue;
                    }
                    let kept = super::kept_checkpoint(ctx);
                    bail!(
                        "epoch {epoch}, batch {}: the loss or a gradient became NaN or infinite (loss {:.4}); training stopped and {kept}; lower model.lr or pass --on-nan skip-batch",
                        b + 1,
                        (r + k) / rows as f64
                    );
                }
                if let Some(h) = fast.as_mut() {
                    h.apply();
                }
                sums[0] += r + k;
                sums[1] += r;
                sums[2] += k;
                sums[3] += rows as f64;
                progress.batch(rows, Some((r + k) / rows as f64));
                if crate::interrupt::requested() && b + 1 < order.num_batches() {
                    if let Some(h) = &fast {
                        h.store(&mut vae, &mut opt);
                    }
                    let at = Position {
                        epochs_done: epoch - 1,
                        batches_done: b + 1,
                        rng: Some(&rng),
                        best_val,
                        partial: sums,
                    };
                    training_checkpoint(&vae, &opt, &at)?.save(&ctx.run.latest_checkpoint())?;
                    return Err(crate::interrupt::Interrupted {
                        epoch,
                        batch: b + 1,
                        run: ctx.run.root.display().to_string(),
                    }
                    .into());
                }
            }
            let timing = progress.timing();
            if let Some(h) = &fast {
                h.store(&mut vae, &mut opt);
            }
            let eval_start = Instant::now();
            let (val_recon, val_kl) = vae.loss_terms(&test, &val_eps, config.likelihood)?;
            let val = val_recon + val_kl;
            if !val.is_finite() {
                bail!(
                    "epoch {epoch}: the validation loss is {val}; the model diverged (lower model.lr); {}",
                    super::kept_checkpoint(ctx)
                );
            }
            if sums[3] == 0.0 {
                bail!(
                    "epoch {epoch}: every batch of the epoch was skipped (the loss or a gradient was NaN or infinite each time); training stopped and {}; lower model.lr",
                    super::kept_checkpoint(ctx)
                );
            }
            let n = sums[3];
            let (tl, tr, tk) = (sums[0] / n, sums[1] / n, sums[2] / n);
            progress.finish(
                timing,
                &format!("loss {tl:.3} (recon {tr:.3} + KL {tk:.3})  val {val:.3} (recon {val_recon:.3} + KL {val_kl:.3})"),
            );
            let samples = vae.decode(&prior_z)?;
            save_grid(
                &ctx.run
                    .images()
                    .join(format!("samples_epoch_{epoch:03}.png")),
                &samples,
                8,
                8,
            )?;

            let mut row = Map::new();
            row.insert("epoch".into(), json!(epoch));
            row.insert("seconds".into(), json!(timing.seconds));
            row.insert(
                "samples_per_second".into(),
                json!(timing.samples_per_second),
            );
            row.insert("loss".into(), json!(tl));
            row.insert("recon".into(), json!(tr));
            row.insert("kl".into(), json!(tk));
            row.insert("val_loss".into(), json!(val));
            row.insert("val_recon".into(), json!(val_recon));
            row.insert("val_kl".into(), json!(val_kl));
            row.insert(
                "eval_seconds".into(),
                json!(eval_start.elapsed().as_secs_f64()),
            );
            if run_config.on_nan == OnNan::SkipBatch {
                row.insert("skipped_batches".into(), json!(skipped));
            }
            let improved = val < best_val;
            if improved {
                best_val = val;
            }
            let at = Position {
                epochs_done: epoch,
                batches_done: 0,
                rng: None,
                best_val,
                partial: [0.0; 4],
            };
            let ck = training_checkpoint(&vae, &opt, &at)?;
            ctx.run.metrics().append(&row)?;
            ck.save(&ctx.run.latest_checkpoint())?;
            if improved {
                ck.save(&ctx.run.best_checkpoint())?;
            }
            if crate::interrupt::requested() && epoch < config.epochs {
                return Err(crate::interrupt::Interrupted {
                    epoch,
                    batch: order.num_batches(),
                    run: ctx.run.root.display().to_string(),
                }
                .into());
            }
        }
        vae.to_checkpoint()?
            .save(&ctx.run.root.join("weights.safetensors"))?;
        write_figures(&ctx.run, &vae, config, &ctx.dataset.test, seed)
            .context("drawing the figures")?;
        Ok(())
    }
}

/// Loss curves from the metrics log.
pub fn plot_metrics(run: &RunDir) -> Result<()> {
    let log = run.metrics();
    let s = |key: &str, name: &str| -> Result<Series> {
        Ok(Series {
            name: name.into(),
            points: log.series(key)?,
        })
    };
    line_plot(
        &run.images().join("loss"),
        "VAE loss per image (reconstruction + KL)",
        "epoch",
        "loss",
        &[s("loss", "train")?, s("val_loss", "validation")?],
    )?;
    line_plot(
        &run.images().join("loss_parts"),
        "Loss terms per image",
        "epoch",
        "nats / squared error",
        &[
            s("recon", "train reconstruction")?,
            s("val_recon", "validation reconstruction")?,
            s("kl", "train KL")?,
            s("val_kl", "validation KL")?,
        ],
    )
}

/// The first `n` images of a split as pixel / 255.
fn first_unit_rows(split: &Split, n: usize) -> Vec<f32> {
    let idx: Vec<usize> = (0..n.min(split.len())).collect();
    let mut out = Vec::new();
    fill_batch(
        split,
        &idx,
        PixelView::Unit,
        &mut stream(0, Purpose::Fixed, 0),
        &mut out,
    );
    out
}

/// The two leading principal directions of `rows` (n x d), as d-vectors.
fn principal_axes(rows: &[f32], d: usize) -> [Vec<f64>; 2] {
    let n = rows.len() / d;
    let mean: Vec<f64> = (0..d)
        .map(|j| {
            rows.iter()
                .skip(j)
                .step_by(d)
                .map(|&v| v as f64)
                .sum::<f64>()
                / n as f64
        })
        .collect();
    let mut cov = nalgebra::DMatrix::<f64>::zeros(d, d);
    for r in rows.chunks_exact(d) {
        for a in 0..d {
            for b in 0..d {
                cov[(a, b)] += (r[a] as f64 - mean[a]) * (r[b] as f64 - mean[b]);
            }
        }
    }
    let eig = nalgebra::SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let axis =
        |k: usize| -> Vec<f64> { eig.eigenvectors.column(order[k]).iter().copied().collect() };
    [axis(0), axis(1.min(d - 1))]
}

/// Every end-of-training picture: loss curves, reconstructions, prior
/// samples, an interpolation strip, the latent scatter and (2-D latents) the
/// manifold.
pub fn write_figures(
    run: &RunDir,
    vae: &Vae,
    config: &VaeConfig,
    test: &Split,
    seed: u64,
) -> Result<()> {
    plot_metrics(run)?;
    let images = run.images();
    let l = vae.net.latent;

    // Reconstructions: the first 10 test digits above their reconstructions (posterior means).
    let originals = first_unit_rows(test, 10);
    let (mean, _) = vae.encode(&originals)?;
    let recon = vae.decode(&mean)?;
    let mut tiles = originals.clone();
    tiles.extend(&recon);
    save_grid(
        &images.join("reconstructions.png"),
        &tiles,
        2,
        originals.len() / PIXELS,
    )?;

    // Prior samples.
    let z = fixed_noise(seed, 4, 64 * l);
    save_grid(&images.join("samples.png"), &vae.decode(&z)?, 8, 8)?;

    // Interpolation between the posterior means of test digits 0 and 1, 12 steps.
    if mean.len() >= 2 * l {
        let steps = 12;
        let mut zs = Vec::with_capacity(steps * l);
        for s in 0..steps {
            let t = s as f32 / (steps - 1) as f32;
            zs.extend((0..l).map(|j| (1.0 - t) * mean[j] + t * mean[l + j]));
        }
        let mut strip = originals[..PIXELS].to_vec();
        strip.extend(vae.decode(&zs)?);
        strip.extend(&originals[PIXELS..2 * PIXELS]);
        save_grid(&images.join("interpolation.png"), &strip, 1, steps + 2)?;
    }

    // Scatter of the test set's latent means by class.
    let all = first_unit_rows(test, test.len());
    let (means, _) = vae.encode(&all)?;
    let labels = &test.labels;
    let (points, axes, title): (Vec<(f32, f32)>, (&str, &str), String) = if l == 2 {
        (
            means.chunks_exact(2).map(|m| (m[0], m[1])).collect(),
            ("z[0]", "z[1]"),
            format!("Latent means of {} test digits", labels.len()),
        )
    } else {
        let [a, b] = principal_axes(&means, l);
        let proj = |m: &[f32], ax: &[f64]| {
            m.iter().zip(ax).map(|(&v, w)| v as f64 * w).sum::<f64>() as f32
        };
        (
            means
                .chunks_exact(l)
                .map(|m| (proj(m, &a), proj(m, &b)))
                .collect(),
            ("principal component 1", "principal component 2"),
            format!(
                "Latent means ({l}-D) of {} test digits: first two principal components",
                labels.len()
            ),
        )
    };
    latent_scatter(
        &images.join("latent_scatter"),
        &points,
        labels,
        &title,
        axes,
    )?;

    if l == 2 {
        let n = config.manifold_size;
        let e = config.manifold_extent as f32;
        let at = |i: usize| {
            if n > 1 {
                -e + 2.0 * e * i as f32 / (n - 1) as f32
            } else {
                0.0
            }
        };
        let mut zs = Vec::with_capacity(n * n * 2);
        for row in 0..n {
            for col in 0..n {
                zs.push(at(col));
                zs.push(at(n - 1 - row));
            }
        }
        manifold_plot(
            &images.join("manifold.png"),
            &vae.decode(&zs)?,
            n,
            config.manifold_extent,
            &format!("Decoded digits over z in [-{e}, {e}]^2"),
        )?;
    }
    Ok(())
}

/// A trained VAE loaded from its run directory.
pub struct LoadedVae {
    pub config: RunConfig<VaeConfig>,
    pub vae: Vae,
}

/// Loads `weights.safetensors`, or the latest checkpoint while training has
/// not finished, onto the run's device.
pub fn load_run(run: &RunDir) -> Result<LoadedVae> {
    let config: RunConfig<VaeConfig> = run.read_config().map_err(crate::error::usage)?;
    let (ck, path) = run.load_weights()?;
    let device = config.device.device().map_err(crate::error::usage)?;
    let vae = Vae::from_checkpoint(VaeNet::from_config(&config.model), &ck, &device)
        .with_context(|| format!("{}", path.display()))
        .map_err(crate::error::usage)?;
    Ok(LoadedVae { config, vae })
}

/// Inpainting by iterating encode -> decode with the kept pixels clamped:
/// starts from the corrupted images and, `steps` times, replaces the missing
/// pixels by the decoding of the posterior mean. Returns (one plain
/// reconstruction of the corrupted images, the iterated result).
pub fn inpaint(
    vae: &Vae,
    corrupted: &[f32],
    missing: &[bool],
    steps: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut x = corrupted.to_vec();
    let mut first = None;
    for _ in 0..steps.max(1) {
        let (mean, _) = vae.encode(&x)?;
        let decoded = vae.decode(&mean)?;
        for ((xi, &d), &m) in x.iter_mut().zip(&decoded).zip(missing) {
            if m {
                *xi = d;
            }
        }
        if first.is_none() {
            first = Some(decoded);
        }
    }
    let plain = first.expect("at least one step");
    let plain = corrupted
        .iter()
        .zip(&plain)
        .zip(missing)
        .map(|((&c, &d), &m)| if m { d } else { c })
        .collect();
    Ok((plain, x))
}

/// Prior samples: `n` decoded draws of z ~ N(0, I) from `seed`.
pub fn sample_prior(vae: &Vae, n: usize, seed: u64) -> Result<Vec<f32>> {
    let mut z = vec![0.0f32; n * vae.net.latent];
    fill_standard_normal(&mut stream(seed, Purpose::Sample, 0), &mut z);
    vae.decode(&z)
}
