//! The VAE's configuration: a serde struct whose defaults are the seed
//! preset `vae-2`, its checks against the data, and what it implies (the
//! optimiser's rule, the training pixels, the conv VAE's shape).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{CONV_CHANNELS, ConvShape, Likelihood};
use crate::data::{ImageShape, PixelView};
use crate::models::ModelConfig;
use crate::models::optim::{OptimizerKind, Rule};

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

/// What a VAE's training maximises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The ELBO (weighted by `beta` for beta-VAE), its reconstruction term
    /// averaged over `k` posterior draws per image, the KL in closed form.
    #[default]
    Elbo,
    /// The importance-weighted bound `log (1/k) sum_j w_j` over `k` draws
    /// (IWAE, Burda et al. 2016): k = 1 is the ELBO with a sampled KL,
    /// larger k a tighter bound.
    Iwae,
}

/// The most posterior draws per training image (`model.k`).
pub const MAX_DRAWS: usize = 5000;

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
    /// The MLP's hidden widths, input side first, for more than one hidden
    /// layer (`[512, 256]`; the decoder mirrors them). Given, it replaces
    /// `hidden`; empty (the default), the MLP has one layer of `hidden` units.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encoder: Vec<usize>,
    /// The conv VAE's convolution channels, input side first, each a
    /// stride-2 'same' convolution (the decoder mirrors them with transposed
    /// ones); empty (the default): the seed's `[32, 64]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<usize>,
    /// The conv VAE's kernel side (odd); unset: the seed's 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<usize>,
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
    /// The KL term's weight in the training loss, reconstruction + beta KL
    /// (beta-VAE, Higgins et al. 2017); 1, the seed's, is the ELBO.
    /// Validation and evaluation report the two terms and the ELBO as ever.
    #[serde(skip_serializing_if = "is_one")]
    pub beta: f64,
    /// `elbo` (the seed) or `iwae`.
    #[serde(skip_serializing_if = "is_elbo")]
    pub objective: Objective,
    /// Posterior draws per training and validation image; 1 (the seed) is
    /// one reparameterisation. Above 1, and for IWAE, training runs on
    /// burn's path (the CPU executor takes one draw).
    #[serde(skip_serializing_if = "is_one_draw")]
    pub k: usize,
}

fn is_elbo(v: &Objective) -> bool {
    *v == Objective::Elbo
}

fn is_one_draw(v: &usize) -> bool {
    *v == 1
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            architecture: Architecture::Mlp,
            latent: 2,
            hidden: 256,
            encoder: Vec::new(),
            channels: Vec::new(),
            kernel: None,
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
            beta: 1.0,
            objective: Objective::Elbo,
            k: 1,
        }
    }
}

impl ModelConfig for VaeConfig {
    fn epochs(&self) -> usize {
        self.epochs
    }

    fn check_images(&self, image: ImageShape) -> Result<()> {
        self.conv_fits(image)
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn training_memory(&self, image: ImageShape) -> (f64, &'static str) {
        let widths = self.hidden_widths();
        let (v, l, b) = (
            image.pixels() as f64,
            self.latent as f64,
            // Each of a batch's images is decoded once per draw.
            (self.batch_size * self.k) as f64,
        );
        let h = widths.iter().sum::<usize>() as f64;
        let mut fan = image.pixels();
        let mut dense = 0.0;
        for &w in &widths {
            dense += (fan * w + w) as f64;
            fan = w;
        }
        let last = fan as f64;
        let params = 2.0 * (dense + v * last + v) + 3.0 * (last * l + l);
        // Weights, two halves' gradients, two moments and host copies; a
        // batch's activations; the validation pass over 10,000 test images.
        let floats = 8.0 * params + 6.0 * b * (v + h + l) + 3.0 * 10_000.0 * (v + h + l);
        (
            4.0 * floats,
            "model.hidden (or model.encoder), model.latent or model.batch_size",
        )
    }

    fn validate(&self) -> Result<()> {
        if !(self.beta.is_finite() && (0.0..=1e4).contains(&self.beta)) {
            crate::usage_bail!(
                "model.beta = {}: the KL term's weight must be in [0, 10000] (1 is the plain VAE)",
                self.beta
            );
        }
        if self.k == 0 || self.k > MAX_DRAWS {
            crate::usage_bail!(
                "model.k = {}: posterior draws per image must be from 1 to {MAX_DRAWS}",
                self.k
            );
        }
        if self.objective == Objective::Iwae && self.beta != 1.0 {
            crate::usage_bail!(
                "model.beta = {} with model.objective = \"iwae\": the importance-weighted bound has no KL term to weigh; use beta = 1 or objective = \"elbo\"",
                self.beta
            );
        }
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
        if !self.encoder.is_empty() {
            if self.architecture != Architecture::Mlp {
                crate::usage_bail!(
                    "model.encoder = {:?}: hidden widths are for the MLP VAE (architecture = \"mlp\"); the conv VAE takes model.hidden",
                    self.encoder
                );
            }
            if self.encoder.contains(&0) {
                crate::usage_bail!(
                    "model.encoder = {:?}: every width must be a positive integer",
                    self.encoder
                );
            }
            crate::bounded::check_count(
                "model.encoder",
                self.encoder.len(),
                MAX_HIDDEN_LAYERS,
                "hidden layers",
            )?;
        }
        if self.architecture != Architecture::Conv
            && (!self.channels.is_empty() || self.kernel.is_some())
        {
            crate::usage_bail!(
                "model.channels and model.kernel are for the conv VAE (architecture = \"conv\"); the MLP takes model.hidden or model.encoder"
            );
        }
        if self.channels.contains(&0) {
            crate::usage_bail!(
                "model.channels = {:?}: every channel count must be a positive integer",
                self.channels
            );
        }
        // The image's own size is checked against these by `check_image`
        // once the data is read.
        let n = self.channels.len();
        if n > 8 {
            crate::usage_bail!(
                "model.channels = {:?}: at most 8 stride-2 convolutions (each halves the image side)",
                self.channels
            );
        }
        // The transposed convolutions of stride 2 need a kernel of 2 or more.
        if let Some(k) = self.kernel
            && (k < 3 || k % 2 == 0)
        {
            crate::usage_bail!(
                "model.kernel = {k}: use an odd kernel side of 3 or more, such as 3 or 5"
            );
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

/// The most hidden layers `model.encoder` may list.
pub const MAX_HIDDEN_LAYERS: usize = 64;

impl VaeConfig {
    /// The MLP's hidden widths, input side first (the conv VAE: its one
    /// dense layer).
    pub fn hidden_widths(&self) -> Vec<usize> {
        if self.encoder.is_empty() {
            vec![self.hidden]
        } else {
            self.encoder.clone()
        }
    }

    /// The conv VAE's convolution channels and kernel side.
    pub fn conv_shape(&self) -> ConvShape {
        ConvShape {
            channels: if self.channels.is_empty() {
                CONV_CHANNELS.to_vec()
            } else {
                self.channels.clone()
            },
            kernel: self.kernel.unwrap_or(3),
        }
    }

    pub(super) fn rule(&self) -> Rule {
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
    pub(super) fn train_view(&self) -> PixelView {
        match self.likelihood {
            Likelihood::Mse => PixelView::Unit,
            Likelihood::Bernoulli => PixelView::Dynamic,
        }
    }
}

impl VaeConfig {
    /// Whether the conv VAE's convolutions fit images of `image` (the
    /// check of [`ModelConfig::check_images`]): each
    /// stride-2 convolution halves both sides and each transposed one
    /// doubles them back, so both must divide by 2 once per convolution,
    /// and the kernel must fit inside the image.
    fn conv_fits(&self, image: ImageShape) -> Result<()> {
        if self.architecture != Architecture::Conv {
            return Ok(());
        }
        let n = self.conv_shape().channels.len() as u32;
        let (h, w) = (image.height, image.width);
        if !(h.is_multiple_of(1 << n) && w.is_multiple_of(1 << n)) {
            let fits = h.trailing_zeros().min(w.trailing_zeros());
            crate::usage_bail!(
                "the conv VAE's {n} stride-2 convolutions need image sides divisible by 2^{n}, and these images are {h}x{w} (they allow {fits}); give model.channels {fits} entries or resize: --set data.resize=[{}, {}]",
                h.next_multiple_of(1 << n),
                w.next_multiple_of(1 << n)
            );
        }
        let k = self.conv_shape().kernel;
        if k > h.min(w) {
            crate::usage_bail!(
                "model.kernel = {k} is larger than the {h}x{w} images; use an odd kernel side from 3 to {}",
                h.min(w)
            );
        }
        Ok(())
    }
}
