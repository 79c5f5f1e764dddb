//! The VAE's training step on genlab's CPU executor ([`crate::nn::host`])
//! for any network its description gives (`model.encoder = [512, 256]`,
//! `model.channels = [16, 32]` with `model.kernel = 5`): the
//! encoder's layers, its two heads and the decoder each run forward and
//! backward by the executor, with the loss, the reparameterisation and the
//! KL term between them. Each batch runs in two halves side by side (an
//! epoch takes about a quarter less time on two cores than with every
//! product split across both).

use super::*;
use crate::models::host::{
    HostOptimizer, bernoulli_grad, in_halves, reparameterize, reparameterize_backward,
    sigmoid_mse_grad, summed_grads,
};
use crate::nn::host::{HostNetwork, InputGradient};

/// One part of a batch: the four networks' executors (with their
/// activations: the trunk's output feeds both heads, the decoder's output
/// becomes the loss's gradient in its own buffer), the buffers between them,
/// and its parameter gradients.
struct NetworkShard {
    trunk: HostNetwork,
    mean_head: HostNetwork,
    logvar_head: HostNetwork,
    decoder: HostNetwork,
    /// Parameter gradients, in [`VaeNet::specs`] order.
    grads: Vec<Vec<f32>>,
    sd: Vec<f32>,
    z: Vec<f32>,
    d_z: Vec<f32>,
    d_mean: Vec<f32>,
    d_logvar: Vec<f32>,
    d_h: Vec<f32>,
}

/// The parameter counts of the encoder's layers, the two heads and the decoder.
fn counts(net: &VaeNet) -> [usize; 4] {
    [
        net.encoder.params.len(),
        net.mean.params.len(),
        net.logvar.params.len(),
        net.decoder.params.len(),
    ]
}

/// `v` cut into consecutive parts of `counts` lengths.
fn split4<T>(v: &mut [T], [a, b, c, _]: [usize; 4]) -> [&mut [T]; 4] {
    let (x, rest) = v.split_at_mut(a);
    let (y, rest) = rest.split_at_mut(b);
    let (z, w) = rest.split_at_mut(c);
    [x, y, z, w]
}

impl NetworkShard {
    fn new(net: &VaeNet) -> Self {
        NetworkShard {
            trunk: HostNetwork::new(net.encoder.clone()),
            mean_head: HostNetwork::new(net.mean.clone()),
            logvar_head: HostNetwork::new(net.logvar.clone()),
            decoder: HostNetwork::new(net.decoder.clone()),
            grads: net.specs.iter().map(|s| vec![0.0; s.len()]).collect(),
            sd: Vec::new(),
            z: Vec::new(),
            d_z: Vec::new(),
            d_mean: Vec::new(),
            d_logvar: Vec::new(),
            d_h: Vec::new(),
        }
    }

    /// Loss sums and gradients of the rows `x` (noise `eps`), every gradient
    /// scaled by `scale` (1 / the whole batch's rows), the KL term's also by
    /// `beta`.
    fn forward_backward(
        &mut self,
        p: &[Vec<f32>],
        counts: [usize; 4],
        (x, eps): (&[f32], &[f32]),
        scale: f32,
        likelihood: Likelihood,
        beta: f32,
    ) -> [f64; 2] {
        let b = x.len() / self.trunk.net.input_size();
        if b == 0 {
            self.grads.iter_mut().for_each(|g| g.fill(0.0));
            return [0.0, 0.0];
        }
        let (a, m, v) = (counts[0], counts[1], counts[2]);
        let (pt, pm, pv, pd) = (&p[..a], &p[a..a + m], &p[a + m..a + m + v], &p[a + m + v..]);
        self.trunk.forward(pt, x, b, &[]);
        let h = self.trunk.output();
        self.mean_head.forward(pm, h, b, &[]);
        self.logvar_head.forward(pv, h, b, &[]);
        let (mean, logvar) = (self.mean_head.output(), self.logvar_head.output());
        let n = mean.len();
        self.sd.resize(n, 0.0);
        self.z.resize(n, 0.0);
        let kl = reparameterize(mean, logvar, eps, &mut self.sd, &mut self.z);
        self.decoder.forward(pd, &self.z, b, &[]);
        let [gt, gm, gv, gd] = split4(&mut self.grads, counts);
        self.d_z.resize(n, 0.0);
        // The loss is the batch mean, so every gradient carries 1/b.
        let recon = self.decoder.backward_with(
            pd,
            &self.z,
            b,
            &[],
            Some(gd),
            InputGradient::Write(&mut self.d_z),
            |logits, g| match likelihood {
                Likelihood::Mse => sigmoid_mse_grad(logits, x, scale, g),
                Likelihood::Bernoulli => bernoulli_grad(logits, x, scale, g),
            },
        ) as f64;
        self.d_mean.resize(n, 0.0);
        self.d_logvar.resize(n, 0.0);
        reparameterize_backward(
            &self.d_z,
            (self.mean_head.output(), &eps[..n], &self.sd),
            scale * beta,
            &mut self.d_mean,
            &mut self.d_logvar,
        );
        let h = self.trunk.output();
        self.d_h.resize(h.len(), 0.0);
        // Both heads read the trunk's output: the second adds its gradient.
        self.mean_head.backward(
            pm,
            h,
            b,
            &self.d_mean,
            &[],
            Some(gm),
            InputGradient::Write(&mut self.d_h),
        );
        self.logvar_head.backward(
            pv,
            h,
            b,
            &self.d_logvar,
            &[],
            Some(gv),
            InputGradient::Add(&mut self.d_h),
        );
        self.trunk
            .backward(pt, x, b, &self.d_h, &[], Some(gt), InputGradient::Skip);
        [recon, kl]
    }
}

/// A VAE's training state on the CPU executor: parameters, Keras
/// optimiser state, and the two halves of a batch.
pub struct HostNetworkVae {
    pub latent: usize,
    counts: [usize; 4],
    pub params: Vec<Vec<f32>>,
    pub opt: HostOptimizer,
    shards: Vec<NetworkShard>,
}

impl HostNetworkVae {
    /// Copies a model and its optimiser to the host.
    pub fn new(vae: &Vae, opt: &Optimizer) -> Result<Self> {
        Ok(HostNetworkVae {
            latent: vae.net.latent,
            counts: counts(&vae.net),
            params: crate::models::host::download_all(&vae.params)?,
            opt: HostOptimizer::from_device(opt)?,
            shards: (0..2).map(|_| NetworkShard::new(&vae.net)).collect(),
        })
    }

    /// Writes the host state back into a model and an optimiser on `vae.device`.
    pub fn store(&self, vae: &mut Vae, opt: &mut Optimizer) {
        for (t, p) in vae.params.iter_mut().zip(&self.params) {
            *t = upload(p.clone(), [p.len()], &vae.device);
        }
        *opt = self.opt.to_device(&vae.device);
    }

    /// The summed (reconstruction, KL) of a batch `x` with noise `eps`, the
    /// gradients being those of reconstruction + `beta` KL, and whether they
    /// (and, with `check_gradients`, every gradient) are finite;
    /// [`HostNetworkVae::apply`] updates.
    pub fn forward_backward(
        &mut self,
        x: &[f32],
        eps: &[f32],
        likelihood: Likelihood,
        beta: f32,
        check_gradients: bool,
    ) -> ([f64; 2], bool) {
        let (p, counts) = (&self.params, self.counts);
        let width = self.shards[0].trunk.net.input_size();
        in_halves(
            &mut self.shards,
            x,
            width,
            eps,
            self.latent,
            check_gradients.then_some(|half: &mut NetworkShard| &mut half.grads),
            |half, x, eps, scale| {
                half.forward_backward(p, counts, (x, eps), scale, likelihood, beta)
            },
        )
    }

    /// The gradients of the last [`HostNetworkVae::forward_backward`].
    pub fn grads(&self) -> Vec<Vec<f32>> {
        summed_grads(&self.shards[0].grads, &self.shards[1].grads)
    }

    /// Applies the optimiser with the last step's gradients; returns
    /// whether they were all finite.
    pub fn apply(&mut self) -> bool {
        let (g0, g1) = (&self.shards[0].grads, &self.shards[1].grads);
        self.opt.update_sum(&mut self.params, g0, g1)
    }
}
