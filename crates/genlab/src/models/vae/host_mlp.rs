//! The CPU path of the VAEs: the MLP VAE's forward and backward on host
//! buffers (each batch in two halves run side by side), and the choice
//! between it and the conv VAE's host path for a training run.

use super::*;

/// The MLP VAE's training step on host buffers (the CPU fast path): the
/// same forward pass, loss and Keras update as [`VaeNet::loss_parts`] with
/// burn's autodiff, written out with fused passes and no allocation per
/// step. Parameters in [`VaeNet::specs`] order. A batch runs in two halves
/// side by side ([`crate::models::host::in_halves`]; an epoch takes about a quarter
/// less time on two cores than with every product split across both).
pub struct HostMlpVae {
    pub latent: usize,
    pub hidden: usize,
    pub params: Vec<Vec<f32>>,
    pub opt: crate::models::host::HostOptimizer,
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
        use crate::models::host::{
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
        let kl = crate::models::host::reparameterize(mean, logvar, eps, sd, z);
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
        crate::models::host::reparameterize_backward(d_z, (mean, eps, sd), scale, d_mean, d_logvar);
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
        let params = crate::models::host::download_all(&vae.params)?;
        let shard_rows = rows.div_ceil(2);
        let shards = (0..2)
            .map(|_| MlpShard::new(&params, shard_rows, l, h))
            .collect();
        Ok(HostMlpVae {
            latent: l,
            hidden: h,
            params,
            opt: crate::models::host::HostOptimizer::from_device(opt)?,
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
        crate::models::host::in_halves(
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
        crate::models::host::summed_grads(&self.shards[0].grads, &self.shards[1].grads)
    }

    /// Applies the optimiser with the gradients of the last [`HostMlpVae::forward_backward`].
    pub fn apply(&mut self) {
        let (g0, g1) = (&self.shards[0].grads, &self.shards[1].grads);
        self.opt.update_sum(&mut self.params, g0, g1);
    }
}

/// The CPU path of a VAE: the fused one of the seed's shapes (the MLP with
/// one hidden layer, the conv VAE with its 32 and 64 channels of 3x3), or
/// any other description on the CPU executor.
pub enum FastPath {
    Mlp(Box<HostMlpVae>),
    Conv(Box<crate::models::host_conv::HostConvVae>),
    Network(Box<super::host_network::HostNetworkVae>),
}

impl FastPath {
    pub fn new(vae: &Vae, opt: &Optimizer, rows: usize) -> Result<Self> {
        // The fused MLP path is written for one hidden layer (dense, relu).
        let one_hidden = vae.net.encoder.layers.len() == 2;
        Ok(match vae.net.architecture {
            Architecture::Mlp if one_hidden => {
                FastPath::Mlp(Box::new(HostMlpVae::new(vae, opt, rows)?))
            }
            Architecture::Mlp => FastPath::Network(Box::new(
                super::host_network::HostNetworkVae::new(vae, opt)?,
            )),
            // The fused conv path is written for the seed's convolutions.
            Architecture::Conv if vae.net.conv == ConvShape::seed() => FastPath::Conv(Box::new(
                crate::models::host_conv::HostConvVae::new(vae, opt, rows)?,
            )),
            Architecture::Conv => FastPath::Network(Box::new(
                super::host_network::HostNetworkVae::new(vae, opt)?,
            )),
        })
    }

    pub fn forward_backward(
        &mut self,
        x: &[f32],
        eps: &[f32],
        likelihood: Likelihood,
    ) -> ([f64; 2], bool) {
        match self {
            FastPath::Mlp(h) => h.forward_backward(x, eps, likelihood),
            FastPath::Conv(h) => h.forward_backward(x, eps, likelihood),
            FastPath::Network(h) => h.forward_backward(x, eps, likelihood),
        }
    }

    pub fn apply(&mut self) {
        match self {
            FastPath::Mlp(h) => h.apply(),
            FastPath::Conv(h) => h.apply(),
            FastPath::Network(h) => h.apply(),
        }
    }

    /// The gradients of the last step (MLP paths).
    pub fn grads(&self) -> Option<Vec<Vec<f32>>> {
        match self {
            FastPath::Mlp(h) => Some(h.grads()),
            FastPath::Network(h) => Some(h.grads()),
            FastPath::Conv(_) => None,
        }
    }

    pub fn store(&self, vae: &mut Vae, opt: &mut Optimizer) {
        match self {
            FastPath::Mlp(h) => h.store(vae, opt),
            FastPath::Conv(h) => h.store(vae, opt),
            FastPath::Network(h) => h.store(vae, opt),
        }
    }
}
