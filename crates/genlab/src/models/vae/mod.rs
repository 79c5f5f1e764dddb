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

use anyhow::{Context, Result, bail};
use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::{Device, Tensor};
use rand::RngExt;
use serde_json::{Map, json};

use super::optim::Optimizer;
use super::tensors::{download, from_checkpoint, take_gradients, to_checkpoint, upload};
use super::{Family, TrainContext};
use crate::config::{OnNan, RunConfig};
use crate::data::batches::{fill_batch, for_each_chunk, split_to_f32};
use crate::data::{EpochOrder, ImageShape, PixelView, Split};
use crate::nn::{self, Layer, Network, Padding};
use crate::rng::{GenRng, Purpose, fill_standard_normal, stream};
use crate::run::{Checkpoint, RunDir, TensorData};
use crate::viz::{latent_scatter, line_plot, manifold_plot, save_grid};

pub mod config;
pub mod eval;
pub mod family;
pub mod figures;
pub mod host_network;
pub mod train;

pub use super::likelihood::Likelihood;
pub use config::{Architecture, MAX_DRAWS, MAX_HIDDEN_LAYERS, Objective, VaeConfig};

/// One parameter: its name in checkpoints, its shape, and its Glorot fans
/// (`None`: initialised to zero).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
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

/// The seed's convolution channels (7x7x64 = 3136 values after them).
const CONV_CHANNELS: [usize; 2] = [32, 64];

/// The conv VAE's convolutions: channels, input side first, and kernel side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvShape {
    pub channels: Vec<usize>,
    pub kernel: usize,
}

impl ConvShape {
    /// The seed's: 32 and 64 channels, 3x3 kernels.
    pub fn seed() -> Self {
        ConvShape {
            channels: CONV_CHANNELS.to_vec(),
            kernel: 3,
        }
    }
}

/// Keras's Glorot fans of a weight: (in, out) for a dense kernel `[in, out]`;
/// for a convolution kernel `[a, b, kh, kw]` (`[out, in, ..]`, or `[in, out,
/// ..]` transposed, whose fans Keras takes the other way round, summing the
/// same) `(b kh kw, a kh kw)`.
fn glorot_fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [i, o] => (*i, *o),
        [a, b, kh, kw] => (b * kh * kw, a * kh * kw),
        _ => unreachable!("weights are matrices or 4-D kernels"),
    }
}

/// The architecture without its values: the networks described as data,
/// the parameters' names, shapes and fans, and the forward pass (run by
/// [`nn::tensor`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VaeNet {
    pub architecture: Architecture,
    pub latent: usize,
    pub hidden: usize,
    /// q(z|x)'s shared layers, then its two heads (one dense layer each).
    pub encoder: Network,
    pub mean: Network,
    pub logvar: Network,
    /// p(x|z): latent codes to pixel logits.
    pub decoder: Network,
    /// Every parameter, in the order of `encoder`, `mean`, `logvar`, `decoder`.
    pub specs: Vec<ParamSpec>,
    /// Parameters of the encoder and its heads (the first `encoder_params` specs).
    pub encoder_params: usize,
    /// The conv VAE's convolutions (the seed's for the MLP, unused).
    pub conv: ConvShape,
    /// The images the networks are built for.
    pub image: ImageShape,
}

fn build(name: &str, input: &[usize], layers: &[(&str, Layer)]) -> Network {
    let layers: Vec<(String, Layer)> = layers
        .iter()
        .map(|(n, l)| (n.to_string(), l.clone()))
        .collect();
    Network::build(name, input, &layers).expect("the VAE's layers fit their shapes")
}

impl VaeNet {
    /// The networks for MNIST's images, `latent` dimensions and the hidden
    /// widths `widths` (input side first; the conv VAE takes one: its dense
    /// layer), with the seed's convolutions.
    pub fn new(architecture: Architecture, latent: usize, widths: &[usize]) -> Self {
        Self::with_convolutions(
            architecture,
            latent,
            widths,
            &ConvShape::seed(),
            ImageShape::MNIST,
        )
    }

    /// [`VaeNet::new`] with the convolutions `conv` (the conv VAE), for
    /// images of shape `image`.
    pub fn with_convolutions(
        architecture: Architecture,
        latent: usize,
        widths: &[usize],
        conv_shape: &ConvShape,
        image: ImageShape,
    ) -> Self {
        let pixels = image.pixels();
        let l = latent;
        let h = *widths.last().expect("at least one hidden width");
        let dense = |units| Layer::Dense { units };
        let (encoder, decoder) = match architecture {
            Architecture::Mlp => {
                // One hidden layer keeps the seed's names (hidden, act);
                // deeper ones are numbered from the input side.
                let names = |k: usize| -> (String, String) {
                    if widths.len() == 1 {
                        ("hidden".into(), "act".into())
                    } else {
                        (format!("hidden{k}"), format!("act{k}"))
                    }
                };
                let mut enc = Vec::new();
                for (k, &w) in widths.iter().enumerate() {
                    let (d, a) = names(k);
                    enc.push((d, dense(w)));
                    enc.push((a, Layer::Relu));
                }
                let mut dec = Vec::new();
                for (k, &w) in widths.iter().enumerate().rev() {
                    let (d, a) = names(k);
                    dec.push((d, dense(w)));
                    dec.push((a, Layer::Relu));
                }
                dec.push(("out".into(), dense(pixels)));
                (
                    Network::build("encoder", &[pixels], &enc)
                        .expect("the VAE's layers fit their shapes"),
                    Network::build("decoder", &[l], &dec)
                        .expect("the VAE's layers fit their shapes"),
                )
            }
            Architecture::Conv => {
                let k = conv_shape.kernel;
                let conv = |filters, stride| Layer::Conv2d {
                    filters,
                    kernel: [k, k],
                    stride: [stride, stride],
                    padding: Padding::Same,
                };
                let deconv = |filters, stride| Layer::ConvTranspose2d {
                    filters,
                    kernel: [k, k],
                    stride: [stride, stride],
                    padding: Padding::Same,
                };
                let n = conv_shape.channels.len();
                let mut enc: Vec<(String, Layer)> = Vec::new();
                for (i, &c) in conv_shape.channels.iter().enumerate() {
                    enc.push((format!("conv{}", i + 1), conv(c, 2)));
                    enc.push((format!("act{}", i + 1), Layer::Relu));
                }
                enc.push(("flat".into(), Layer::Flatten));
                enc.push(("hidden".into(), dense(h)));
                enc.push((format!("act{}", n + 1), Layer::Relu));
                let encoder = Network::build("encoder", &image.dims(), &enc)
                    .expect("the VAE's layers fit their shapes");
                // The decoder starts from the shape the encoder's convolutions end in.
                let grid = encoder.layers[2 * n - 1].output.clone();
                let mut dec: Vec<(String, Layer)> = vec![
                    ("hidden".into(), dense(grid.iter().product())),
                    ("act0".into(), Layer::Relu),
                    ("grid".into(), Layer::Reshape { shape: grid }),
                ];
                // Transposed convolutions back up, the channels in reverse (the
                // seed's 64 and 32, stride 2), then one to the image (stride 1).
                for (i, &c) in conv_shape.channels.iter().rev().enumerate() {
                    dec.push((format!("deconv{}", i + 1), deconv(c, 2)));
                    dec.push((format!("act{}", i + 1), Layer::Relu));
                }
                dec.push((format!("deconv{}", n + 1), deconv(image.channels, 1)));
                dec.push(("flat".into(), Layer::Flatten));
                let decoder = Network::build("decoder", &[l], &dec)
                    .expect("the VAE's layers fit their shapes");
                (encoder, decoder)
            }
        };
        let mean = build("encoder", &[h], &[("mean", dense(l))]);
        let logvar = build("encoder", &[h], &[("logvar", dense(l))]);
        let specs: Vec<ParamSpec> = [&encoder, &mean, &logvar, &decoder]
            .iter()
            .flat_map(|n| n.params.iter())
            .map(|p| ParamSpec {
                name: p.name.clone(),
                shape: p.shape.clone(),
                fans: p.name.ends_with(".weight").then(|| glorot_fans(&p.shape)),
            })
            .collect();
        let encoder_params = encoder.params.len() + mean.params.len() + logvar.params.len();
        VaeNet {
            architecture,
            latent,
            hidden: h,
            encoder,
            mean,
            logvar,
            decoder,
            specs,
            encoder_params,
            conv: conv_shape.clone(),
            image,
        }
    }

    /// The networks a configuration describes, for images of shape `image`.
    pub fn from_config(c: &VaeConfig, image: ImageShape) -> Self {
        VaeNet::with_convolutions(
            c.architecture,
            c.latent,
            &c.hidden_widths(),
            &c.conv_shape(),
            image,
        )
    }

    pub fn names(&self) -> Vec<&str> {
        self.specs.iter().map(|s| s.name.as_str()).collect()
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

    /// The parameters of `encoder`, `mean`, `logvar` and `decoder` in `p`.
    fn split<'a>(&self, p: &'a [Tensor<1>]) -> [&'a [Tensor<1>]; 4] {
        let (e, m) = (self.encoder.params.len(), self.mean.params.len());
        let (trunk, rest) = p.split_at(e);
        let (mean, rest) = rest.split_at(m);
        let (logvar, decoder) = rest.split_at(self.logvar.params.len());
        [trunk, mean, logvar, decoder]
    }

    /// Mean and log-variance of q(z|x) for images `x` (rows of 784 values).
    pub fn encode(&self, p: &[Tensor<1>], x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let [trunk, mean, logvar, _] = self.split(p);
        let h = nn::tensor::forward(&self.encoder, trunk, x, &[]);
        (
            nn::tensor::forward(&self.mean, mean, h.clone(), &[]),
            nn::tensor::forward(&self.logvar, logvar, h, &[]),
        )
    }

    /// Decoder logits (rows of 784): sigmoid of them is the decoded image.
    pub fn decode(&self, p: &[Tensor<1>], z: Tensor<2>) -> Tensor<2> {
        let [.., decoder] = self.split(p);
        nn::tensor::forward(&self.decoder, decoder, z, &[])
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
        let recon = reconstruction(logits, x, likelihood);
        (recon.reshape([b]), kl_divergence(mean, logvar).reshape([b]))
    }

    /// Per image, over `k` posterior draws (noise `eps` `[B k, latent]`,
    /// image i's draws in rows i k .. i k + k): the reconstruction term
    /// averaged over the draws, the KL term in closed form, and the
    /// importance-weighted bound `log (1/k) sum_j w_j` (Burda et al. 2016)
    /// with `log w = log p(x|z) + log p(z) - log q(z|x)`, where `log p(x|z)`
    /// is minus the reconstruction term (for MSE, the seed's N(x_hat, 1/2 I)
    /// without its constant) and the normals' constants cancel. Each `[B]`.
    pub fn draws_terms(
        &self,
        p: &[Tensor<1>],
        x: Tensor<2>,
        eps: Tensor<2>,
        k: usize,
        likelihood: Likelihood,
    ) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
        let [b, d] = x.dims();
        let l = self.latent;
        let (mean, logvar) = self.encode(p, x.clone());
        let each =
            |t: Tensor<2>, w: usize| t.unsqueeze_dim::<3>(1).repeat_dim(1, k).reshape([b * k, w]);
        let logvar_k = each(logvar.clone(), l);
        let z = each(mean.clone(), l) + logvar_k.clone().mul_scalar(0.5).exp() * eps.clone();
        let logits = self.decode(p, z.clone());
        let x = each(x, d);
        let recon = reconstruction(logits, x, likelihood);
        // log p(z) - log q(z|x) = sum (eps^2 - z^2 + logvar) / 2.
        let log_ratio = (eps.square() - z.square() + logvar_k)
            .mul_scalar(0.5)
            .sum_dim(1);
        let log_w = (log_ratio - recon.clone()).reshape([b, k]);
        // A stable log-sum-exp: the shift is a constant to the gradient.
        let shift = log_w.clone().max_dim(1).detach();
        let bound = (log_w - shift.clone()).exp().sum_dim(1).log() + shift;
        let bound = bound.add_scalar(-(k as f64).ln());
        (
            recon.reshape([b, k]).mean_dim(1).reshape([b]),
            kl_divergence(mean, logvar).reshape([b]),
            bound.reshape([b]),
        )
    }
}

/// Per row (`[rows, 1]`): the reconstruction term of images `x` under the
/// decoder's `logits`, the sum over pixels of the squared error of
/// sigmoid(logits) (MSE) or of the binary cross-entropy (Bernoulli).
fn reconstruction(logits: Tensor<2>, x: Tensor<2>, likelihood: Likelihood) -> Tensor<2> {
    match likelihood {
        Likelihood::Mse => (sigmoid(logits) - x).square().sum_dim(1),
        // softplus(l) - x l = l (1 - x) - log_sigmoid(l)
        Likelihood::Bernoulli => {
            (logits.clone() * x.neg().add_scalar(1.0) - log_sigmoid(logits)).sum_dim(1)
        }
    }
}

/// Per row (`[rows, 1]`): KL(N(mean, exp(logvar)) || N(0, I)) in closed form.
fn kl_divergence(mean: Tensor<2>, logvar: Tensor<2>) -> Tensor<2> {
    (logvar.clone().exp() + mean.square() - logvar)
        .add_scalar(-1.0)
        .mul_scalar(0.5)
        .sum_dim(1)
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
            ck.insert(&s.name, TensorData::new(s.shape.clone(), flat.data));
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
        ck.set_meta(crate::data::IMAGE_META, self.net.image.to_meta());
        Ok(ck)
    }

    pub fn from_checkpoint(net: VaeNet, ck: &Checkpoint, device: &Device) -> Result<Self> {
        let params = net
            .specs
            .iter()
            .map(|s| {
                ck.tensor(&s.name, &s.shape)?;
                from_checkpoint(ck, &s.name, s.len(), device)
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
        let pixels = self.net.image.pixels();
        for chunk in x.chunks(INFERENCE_BATCH * pixels) {
            let (m, v) = self.net.encode(&self.params, self.rows(chunk, pixels));
            mean.extend(download(m)?);
            logvar.extend(download(v)?);
        }
        Ok((mean, logvar))
    }

    /// Decoder logits for latent rows `z`, in batches.
    pub fn decode_logits(&self, z: &[f32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(z.len() / self.net.latent * self.net.image.pixels());
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
        let pixels = self.net.image.pixels();
        let n = x.len() / pixels;
        let (mut recon, mut kl) = (0.0f64, 0.0f64);
        for (xc, ec) in x
            .chunks(INFERENCE_BATCH * pixels)
            .zip(eps.chunks(INFERENCE_BATCH * self.net.latent))
        {
            let (r, k) = self.summed_loss_terms(xc, ec, likelihood)?;
            recon += r;
            kl += k;
        }
        Ok((recon / n as f64, kl / n as f64))
    }

    /// The mean (loss, reconstruction, KL) of [`burn_draws_step`]'s loss
    /// over a split's test view, `loss.k` draws per image from the fixed
    /// noise stream `noise` (drawn chunk by chunk, so the same for every
    /// epoch and never held whole).
    pub fn split_draws_terms(
        &self,
        split: &Split,
        loss: DrawsLoss,
        seed: u64,
        noise: &mut GenRng,
    ) -> Result<[f64; 3]> {
        let (view, mut rng) = test_view(loss.likelihood, seed);
        let pixels = self.net.image.pixels();
        // At most 5,000 decoded rows at a time, whatever k.
        let chunk = (5000 / loss.k).max(1);
        let mut sums = [0.0f64; 3];
        let mut eps = Vec::new();
        for_each_chunk(split, view, &mut rng, chunk, |xc| {
            let rows = xc.len() / pixels;
            eps.resize(rows * loss.k * self.net.latent, 0.0);
            fill_standard_normal(noise, &mut eps);
            let x = self.rows(xc, pixels);
            let e = self.rows(&eps, self.net.latent);
            let (recon, kl, bound) =
                self.net
                    .draws_terms(&self.params, x, e, loss.k, loss.likelihood);
            let per_image = loss.per_image(recon.clone(), kl.clone(), bound);
            let v = download(Tensor::cat(vec![per_image.sum(), recon.sum(), kl.sum()], 0))?;
            for (s, v) in sums.iter_mut().zip(v) {
                *s += v as f64;
            }
            anyhow::Ok(())
        })?;
        let n = split.len().max(1) as f64;
        Ok(sums.map(|s| s / n))
    }

    /// [`Vae::loss_terms`] over a split's test view ([`test_pixels`]),
    /// converted [`INFERENCE_BATCH`] images at a time: the same figures
    /// without the split as f32 in memory.
    pub fn split_loss_terms(
        &self,
        split: &Split,
        eps: &[f32],
        likelihood: Likelihood,
        seed: u64,
    ) -> Result<(f64, f64)> {
        let (view, mut rng) = test_view(likelihood, seed);
        let (mut recon, mut kl) = (0.0f64, 0.0f64);
        let mut ec = eps.chunks(INFERENCE_BATCH * self.net.latent);
        for_each_chunk(split, view, &mut rng, INFERENCE_BATCH, |xc| {
            let noise = ec.next().context("fewer noise rows than images")?;
            let (r, k) = self.summed_loss_terms(xc, noise, likelihood)?;
            recon += r;
            kl += k;
            anyhow::Ok(())
        })?;
        let n = split.len().max(1) as f64;
        Ok((recon / n, kl / n))
    }

    /// Summed reconstruction and KL terms of one inference batch.
    fn summed_loss_terms(
        &self,
        x: &[f32],
        eps: &[f32],
        likelihood: Likelihood,
    ) -> Result<(f64, f64)> {
        let pixels = self.net.image.pixels();
        let (r, k) = self.net.loss_parts(
            &self.params,
            self.rows(x, pixels),
            self.rows(eps, self.net.latent),
            likelihood,
        );
        let v = download(Tensor::cat(vec![r.sum(), k.sum()], 0))?;
        Ok((v[0] as f64, v[1] as f64))
    }
}

/// One training step through burn's autodiff (any device) on the loss
/// reconstruction + `beta` KL: returns the summed (reconstruction, KL),
/// whether the loss and every gradient are finite, and the gradients.
pub fn burn_step(
    net: &VaeNet,
    vae: &Vae,
    x: &[f32],
    eps: &[f32],
    likelihood: Likelihood,
    beta: f32,
) -> Result<([f64; 2], bool, Vec<Tensor<1>>)> {
    let pixels = net.image.pixels();
    let rows = x.len() / pixels;
    let xt = upload(x.to_vec(), [rows, pixels], &vae.device);
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
    let loss = (recon + kl.mul_scalar(beta)).mean();
    // One read per batch: the two loss sums and the sum of all gradients.
    let (g, gsum) = take_gradients(&tracked, &mut loss.backward());
    let host = download(Tensor::cat(vec![stats, gsum], 0))?;
    Ok(([host[0] as f64, host[1] as f64], all_finite(&host), g))
}

/// What a training step of several posterior draws per image minimises.
#[derive(Debug, Clone, Copy)]
pub struct DrawsLoss {
    pub likelihood: Likelihood,
    pub objective: Objective,
    /// Draws per image.
    pub k: usize,
    /// The KL term's weight (ELBO only).
    pub beta: f32,
}

impl DrawsLoss {
    /// Per image, the loss the step minimises: reconstruction + beta KL
    /// (ELBO) or minus the importance-weighted bound (IWAE).
    fn per_image(&self, recon: Tensor<1>, kl: Tensor<1>, bound: Tensor<1>) -> Tensor<1> {
        match self.objective {
            Objective::Elbo => recon + kl.mul_scalar(self.beta),
            Objective::Iwae => bound.neg(),
        }
    }
}

/// One training step of `loss.k` posterior draws per image through burn's
/// autodiff (noise `eps` `[rows k, latent]`, as [`VaeNet::draws_terms`]
/// takes it): returns the summed (loss, reconstruction, KL), whether they
/// and every gradient are finite, and the gradients.
pub fn burn_draws_step(
    net: &VaeNet,
    vae: &Vae,
    x: &[f32],
    eps: &[f32],
    loss: DrawsLoss,
) -> Result<([f64; 3], bool, Vec<Tensor<1>>)> {
    let pixels = net.image.pixels();
    let rows = x.len() / pixels;
    let xt = upload(x.to_vec(), [rows, pixels], &vae.device);
    let et = upload(eps.to_vec(), [rows * loss.k, net.latent], &vae.device);
    let tracked: Vec<Tensor<1>> = vae
        .params
        .iter()
        .map(|p| p.clone().autodiff().require_grad())
        .collect();
    let (recon, kl, bound) = net.draws_terms(&tracked, xt, et, loss.k, loss.likelihood);
    let per_image = loss.per_image(recon.clone(), kl.clone(), bound);
    let stats = Tensor::cat(
        vec![
            per_image.clone().sum().inner(),
            recon.sum().inner(),
            kl.sum().inner(),
        ],
        0,
    );
    let (g, gsum) = take_gradients(&tracked, &mut per_image.mean().backward());
    let host = download(Tensor::cat(vec![stats, gsum], 0))?;
    Ok((
        [host[0] as f64, host[1] as f64, host[2] as f64],
        all_finite(&host),
        g,
    ))
}

/// The test images as the loss sees them: pixel / 255 (MSE) or one fixed
/// Bernoulli draw (seed-determined) for the Bernoulli likelihood.
pub fn test_pixels(split: &Split, likelihood: Likelihood, seed: u64) -> Vec<f32> {
    let (view, mut rng) = test_view(likelihood, seed);
    split_to_f32(split, view, &mut rng)
}

/// The view and the binarisation stream of [`test_pixels`].
fn test_view(likelihood: Likelihood, seed: u64) -> (PixelView, crate::rng::GenRng) {
    let view = match likelihood {
        Likelihood::Mse => PixelView::Unit,
        Likelihood::Bernoulli => PixelView::Dynamic,
    };
    (view, stream(seed, Purpose::Binarise, 1_000_000))
}

/// Noise for `n` reparameterisations, the same for every epoch of a run.
pub(crate) fn fixed_noise(seed: u64, index: u32, n: usize) -> Vec<f32> {
    let mut eps = vec![0.0f32; n];
    fill_standard_normal(&mut stream(seed, Purpose::Fixed, index), &mut eps);
    eps
}

/// Whether every value is finite.
fn all_finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
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
    let loaded = ck.image_shape().and_then(|image| {
        Vae::from_checkpoint(VaeNet::from_config(&config.model, image), &ck, &device)
    });
    let vae = loaded
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
