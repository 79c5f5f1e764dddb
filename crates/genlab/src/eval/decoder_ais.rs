//! The log-likelihood of a decoder-based model (a VAE's decoder, a GAN's
//! generator) under an observation model, by annealed importance sampling
//! with Hamiltonian Monte Carlo (Wu, Burda, Salakhutdinov & Grosse, ICLR
//! 2017), and its bidirectional check (BDMC) on simulated data.
//!
//! For an image x the path runs from the prior p(z) to the posterior
//! p(z|x) through p_b(z) ∝ p(z) p(x|z)^b, b from 0 to 1. A chain starts at
//! z ~ p(z); before each transition (HMC leaving p_b invariant) its log
//! weight gains (b_t - b_{t-1}) log p(x|z). The mean weight of a chain is
//! p(x), so the log of the chains' mean weight is a stochastic lower bound
//! on log p(x) (Jensen). Run from an exact posterior sample towards the
//! prior, the same sum estimates log 1/p(x): minus it is a stochastic
//! upper bound. On data simulated from the model, z* ~ p(z) and x ~ p(x|z*),
//! z* is such an exact sample, so the two bounds bracket log p(x) and their
//! gap bounds the forward estimate's error on data like the model's own.

use rand::RngExt;
use rayon::prelude::*;

use crate::cpu::{
    affine_squared_error_grad, bernoulli_log_likelihood_grad, sigmoid, sigmoid_squared_error_grad,
};
use crate::eval::ais::log_mean_weight;
use crate::nn::host::{HostNetwork, InputGradient};
use crate::nn::{Mode, Network};
use crate::rng::{GenRng, fill_standard_normal};

/// The latent prior p(z).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    /// N(0, I).
    StandardNormal,
    /// Uniform on [-1, 1]^d (the seed GAN's noise).
    Uniform,
}

impl Prior {
    pub fn name(self) -> &'static str {
        match self {
            Prior::StandardNormal => "N(0, I)",
            Prior::Uniform => "Uniform(-1, 1)",
        }
    }

    /// Independent draws into `z`.
    pub fn sample(self, rng: &mut GenRng, z: &mut [f32]) {
        match self {
            Prior::StandardNormal => fill_standard_normal(rng, z),
            Prior::Uniform => z.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0)),
        }
    }

    /// -log p(z) up to its constant (which the weights never need): the
    /// potential energy of the prior. Inside the uniform's box it is 0.
    fn energy(self, z: &[f32]) -> f64 {
        match self {
            Prior::StandardNormal => 0.5 * z.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>(),
            Prior::Uniform => 0.0,
        }
    }

    /// The gradient of [`Prior::energy`] at `z` (`z` itself for the normal).
    #[inline]
    fn energy_grad(self, z: f32) -> f32 {
        match self {
            Prior::StandardNormal => z,
            Prior::Uniform => 0.0,
        }
    }
}

/// How the decoder's output becomes the mean of a Gaussian on pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GaussianMean {
    /// mean = sigmoid(output) (a VAE decoder's logits).
    Sigmoid,
    /// mean = scale * output + shift ((output + 1) / 2 for a tanh
    /// generator of images in [-1, 1], compared on pixel / 255).
    Affine { scale: f32, shift: f32 },
}

/// p(x|z) given the decoder's output for z.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    /// Independent Bernoulli pixels with the output as logits (binary x).
    Bernoulli,
    /// N(x; mean(output), sigma^2 I): a density on pixel values.
    Gaussian { mean: GaussianMean, sigma: f64 },
}

impl Observation {
    /// log p(x|z) of one row from the decoder's output `out`, and its
    /// gradient in `out` into `g`.
    fn log_likelihood_grad(&self, out: &[f32], x: &[f32], g: &mut [f32]) -> f64 {
        match *self {
            Observation::Bernoulli => bernoulli_log_likelihood_grad(out, x, g) as f64,
            Observation::Gaussian { mean, sigma } => {
                let var = sigma * sigma;
                let inv_var = (1.0 / var) as f32;
                let sse = match mean {
                    GaussianMean::Sigmoid => sigmoid_squared_error_grad(out, x, g, inv_var),
                    GaussianMean::Affine { scale, shift } => {
                        affine_squared_error_grad(out, x, g, scale, shift, inv_var)
                    }
                } as f64;
                let d = out.len() as f64;
                -0.5 * sse / var - 0.5 * d * (std::f64::consts::TAU * var).ln()
            }
        }
    }

    /// A draw of x ~ p(x|z) from the decoder's output `out` of one row.
    fn sample(&self, out: &[f32], rng: &mut GenRng, x: &mut [f32]) {
        match *self {
            Observation::Bernoulli => {
                for (v, &l) in x.iter_mut().zip(out) {
                    *v = (rng.random::<f32>() < sigmoid(l)) as u8 as f32;
                }
            }
            Observation::Gaussian { mean, sigma } => {
                fill_standard_normal(rng, x);
                for (v, &o) in x.iter_mut().zip(out) {
                    let m = match mean {
                        GaussianMean::Sigmoid => sigmoid(o),
                        GaussianMean::Affine { scale, shift } => scale * o + shift,
                    };
                    *v = m + sigma as f32 * *v;
                }
            }
        }
    }

    /// The model as a person reads it.
    pub fn describe(&self) -> String {
        match *self {
            Observation::Bernoulli => "Bernoulli pixels, the decoder's outputs as logits".into(),
            Observation::Gaussian { mean, sigma } => format!(
                "Gaussian N(x; mean, {sigma}^2 I) on pixel/255, mean = {}",
                match mean {
                    GaussianMean::Sigmoid => "sigmoid(decoder output)".to_string(),
                    GaussianMean::Affine { scale, shift } =>
                        format!("{scale} * generator output + {shift}"),
                }
            ),
        }
    }
}

/// A decoder network with its parameters, run by the CPU executor: the
/// log-likelihood of observations and its gradient in the latent code.
pub struct NetworkDecoder<'a> {
    host: HostNetwork,
    params: &'a [Vec<f32>],
    pub observation: Observation,
    pub prior: Prior,
    /// Rows per executor pass (bounds the activations kept for backward).
    chunk: usize,
    /// Advanced by one per transition of every annealing run.
    pub progress: Option<indicatif::ProgressBar>,
}

impl<'a> NetworkDecoder<'a> {
    /// `net` (latent codes to outputs, one per pixel) with `params` in its
    /// parameter order; dropout off, running statistics in normalisations.
    pub fn new(
        net: Network,
        params: &'a [Vec<f32>],
        observation: Observation,
        prior: Prior,
        chunk: usize,
    ) -> Self {
        let mut host = HostNetwork::new(net);
        host.mode = Mode::Infer;
        NetworkDecoder {
            host,
            params,
            observation,
            prior,
            chunk: chunk.max(1),
            progress: None,
        }
    }

    pub fn latent(&self) -> usize {
        self.host.net.input_size()
    }

    pub fn dim(&self) -> usize {
        self.host.net.output_size()
    }

    /// For each row r of `z`: `ll[r]` = log p(x_r | z_r), where x_r is
    /// image `r / per` of `x`, and the gradient of it in z_r into `grad`.
    pub fn log_likelihood_grad(
        &mut self,
        x: &[f32],
        per: usize,
        z: &[f32],
        ll: &mut [f64],
        grad: &mut [f32],
    ) {
        let (l, d) = (self.latent(), self.dim());
        let rows = z.len() / l;
        let observation = self.observation;
        for first in (0..rows).step_by(self.chunk) {
            let n = self.chunk.min(rows - first);
            let zc = &z[first * l..(first + n) * l];
            let llc = &mut ll[first..first + n];
            let gc = &mut grad[first * l..(first + n) * l];
            self.host.forward(self.params, zc, n, &[]);
            self.host.backward_with(
                self.params,
                zc,
                n,
                &[],
                None,
                InputGradient::Write(gc),
                |out, d_out| {
                    out.par_chunks_exact(d)
                        .zip(d_out.par_chunks_exact_mut(d))
                        .zip(llc.par_iter_mut())
                        .enumerate()
                        .for_each(|(r, ((o, g), ll))| {
                            let img = (first + r) / per;
                            *ll = observation.log_likelihood_grad(o, &x[img * d..(img + 1) * d], g);
                        });
                },
            );
        }
    }

    /// `n` draws (z*, x) of the model: z* ~ p(z), x ~ p(x|z*).
    pub fn simulate(&mut self, n: usize, rng: &mut GenRng) -> (Vec<f32>, Vec<f32>) {
        let (l, d) = (self.latent(), self.dim());
        let mut z = vec![0.0f32; n * l];
        self.prior.sample(rng, &mut z);
        let mut x = vec![0.0f32; n * d];
        for first in (0..n).step_by(self.chunk) {
            let m = self.chunk.min(n - first);
            let observation = self.observation;
            let out = self
                .host
                .forward(self.params, &z[first * l..(first + m) * l], m, &[]);
            for (o, xr) in out
                .chunks_exact(d)
                .zip(x[first * d..(first + m) * d].chunks_exact_mut(d))
            {
                observation.sample(o, rng, xr);
            }
        }
        (z, x)
    }
}

/// The sizes of one annealing run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Annealing {
    /// Chains per image.
    pub chains: usize,
    /// Intermediate distributions (transitions) between prior and posterior.
    pub steps: usize,
    /// Leapfrog steps per HMC transition.
    pub leapfrog: usize,
}

/// The sigmoidal path of Grosse et al.: b_t = (s(t) - s(0)) / (s(T) - s(0))
/// with s(t) = sigmoid(4 (2t/T - 1)); `steps + 1` values from 0 to 1, dense
/// near both ends, where the distributions change fastest.
pub fn sigmoid_schedule(steps: usize) -> Vec<f64> {
    let s = |t: usize| 1.0 / (1.0 + (-4.0 * (2.0 * t as f64 / steps as f64 - 1.0)).exp());
    let (lo, hi) = (s(0), s(steps));
    (0..=steps).map(|t| (s(t) - lo) / (hi - lo)).collect()
}

/// One direction's estimate for a set of images.
#[derive(Debug, Clone)]
pub struct DecoderEstimate {
    /// Each image's estimate of log p(x): a lower bound in expectation
    /// (forward) or an upper one (reverse).
    pub per_image: Vec<f64>,
    /// The standard error of the mean from the chains' spread (the delta
    /// method per image, combined over the images): how far another draw
    /// of the chains would move it, not the spread of images.
    pub chain_stderr: f64,
    /// The fraction of HMC proposals accepted.
    pub acceptance: f64,
}

impl DecoderEstimate {
    /// From each chain's log weight (an image's chains adjacent); `sign` -1
    /// when the weights estimate 1 / p(x).
    fn new(log_w: &[f64], chains: usize, sign: f64, state: &ChainState) -> Self {
        let mut variance = 0.0;
        let per_image: Vec<f64> = log_w
            .chunks_exact(chains)
            .map(|w| {
                let (log_mean, var) = log_mean_weight(w);
                variance += var;
                sign * log_mean
            })
            .collect();
        let n = per_image.len().max(1) as f64;
        DecoderEstimate {
            per_image,
            chain_stderr: variance.sqrt() / n,
            acceptance: state.accepted as f64 / state.proposed.max(1) as f64,
        }
    }

    pub fn mean(&self) -> f64 {
        self.per_image.iter().sum::<f64>() / self.per_image.len().max(1) as f64
    }

    /// Standard error of [`DecoderEstimate::mean`] over the images.
    pub fn std_error(&self) -> f64 {
        crate::eval::importance::std_error(&self.per_image)
    }
}

/// The chains' state: codes, their log-likelihoods and gradients, and the
/// HMC step size (adapted towards 65% acceptance).
struct ChainState {
    z: Vec<f32>,
    ll: Vec<f64>,
    grad: Vec<f32>,
    step: f32,
    accepted: u64,
    proposed: u64,
}

/// The acceptance rate HMC's step sizes are adapted to (Neal 2011's optimum
/// for long trajectories, as Wu et al. use).
const TARGET_ACCEPTANCE: f32 = 0.65;
/// The bounds of the adapted step size.
const MIN_STEP: f32 = 1e-4;
const MAX_STEP: f32 = 2.0;

/// Anneals every chain of `state` along `betas` (from `betas[0]`, at which
/// the chains start exactly distributed): before each transition the log
/// weight gains (b_t - b_{t-1}) log p(x|z); the transition is HMC at b_t.
/// Returns the log weights.
fn anneal(
    dec: &mut NetworkDecoder,
    x: &[f32],
    per: usize,
    state: &mut ChainState,
    betas: &[f64],
    leapfrog: usize,
    rng: &mut GenRng,
) -> Vec<f64> {
    let l = dec.latent();
    let rows = state.ll.len();
    let prior = dec.prior;
    let mut log_w = vec![0.0f64; rows];
    let mut zp = vec![0.0f32; rows * l];
    let mut gp = vec![0.0f32; rows * l];
    let mut llp = vec![0.0f64; rows];
    let mut p = vec![0.0f32; rows * l];
    let mut h0 = vec![0.0f64; rows];
    for t in 1..betas.len() {
        let (b_prev, b) = (betas[t - 1], betas[t]);
        for (w, ll) in log_w.iter_mut().zip(&state.ll) {
            *w += (b - b_prev) * ll;
        }
        if let Some(bar) = &dec.progress {
            bar.inc(1);
        }
        if t + 1 == betas.len() {
            break;
        }
        // HMC at b: potential U(z) = E_prior(z) - b log p(x|z), unit masses.
        fill_standard_normal(rng, &mut p);
        let bf = b as f32;
        for r in 0..rows {
            let (zr, pr) = (&state.z[r * l..(r + 1) * l], &p[r * l..(r + 1) * l]);
            let kinetic: f64 = 0.5 * pr.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
            h0[r] = prior.energy(zr) - b * state.ll[r] + kinetic;
        }
        zp.copy_from_slice(&state.z);
        gp.copy_from_slice(&state.grad);
        for s in 0..leapfrog {
            // The momentum's half step (first) or full step, then the position's.
            let eps = state.step;
            for r in 0..rows {
                let first = if s == 0 { 0.5 * eps } else { eps };
                let range = r * l..(r + 1) * l;
                for ((z, pv), g) in zp[range.clone()]
                    .iter_mut()
                    .zip(&mut p[range.clone()])
                    .zip(&gp[range])
                {
                    *pv -= first * (prior.energy_grad(*z) - bf * g);
                    *z += eps * *pv;
                    if prior == Prior::Uniform {
                        reflect(z, pv);
                    }
                }
            }
            dec.log_likelihood_grad(x, per, &zp, &mut llp, &mut gp);
        }
        // The momentum's last half step, then accept or reject per chain.
        let eps = state.step;
        let mut accepted = 0usize;
        for r in 0..rows {
            let range = r * l..(r + 1) * l;
            for ((z, pv), g) in zp[range.clone()]
                .iter()
                .zip(&mut p[range.clone()])
                .zip(&gp[range.clone()])
            {
                *pv -= 0.5 * eps * (prior.energy_grad(*z) - bf * g);
            }
            let kinetic: f64 = 0.5
                * p[range.clone()]
                    .iter()
                    .map(|&v| (v as f64) * (v as f64))
                    .sum::<f64>();
            let h1 = prior.energy(&zp[range.clone()]) - b * llp[r] + kinetic;
            let log_u = (1.0 - rng.random::<f64>()).ln();
            // A NaN energy (a diverged trajectory) is never accepted.
            let accept = log_u < h0[r] - h1;
            if accept {
                state.z[range.clone()].copy_from_slice(&zp[range.clone()]);
                state.grad[range.clone()].copy_from_slice(&gp[range]);
                state.ll[r] = llp[r];
                state.accepted += 1;
            }
            state.proposed += 1;
            accepted += accept as usize;
        }
        // One step size for all chains, from their mean acceptance: a chain's
        // own acceptances would tie its kernel to its path and bias the weights.
        let rate = accepted as f32 / rows.max(1) as f32;
        state.step = (state.step * if rate > TARGET_ACCEPTANCE { 1.02 } else { 0.98 })
            .clamp(MIN_STEP, MAX_STEP);
    }
    log_w
}

/// Reflects a coordinate that left [-1, 1] back into it, reversing its
/// momentum: HMC on the box with the uniform prior's hard walls (Neal
/// 2011, section 5.5.1), which keeps the dynamics reversible and
/// volume-preserving.
#[inline]
fn reflect(z: &mut f32, p: &mut f32) {
    loop {
        if *z > 1.0 {
            *z = 2.0 - *z;
        } else if *z < -1.0 {
            *z = -2.0 - *z;
        } else {
            break;
        }
        *p = -*p;
    }
}

/// The chains of `n` images, `chains` each, started at `z` (n*chains rows).
fn start(
    dec: &mut NetworkDecoder,
    x: &[f32],
    chains: usize,
    z: Vec<f32>,
    initial_step: f32,
) -> ChainState {
    let l = dec.latent();
    let rows = z.len() / l;
    let mut state = ChainState {
        ll: vec![0.0; rows],
        grad: vec![0.0; rows * l],
        step: initial_step,
        accepted: 0,
        proposed: 0,
        z,
    };
    dec.log_likelihood_grad(x, chains, &state.z, &mut state.ll, &mut state.grad);
    state
}

/// The HMC step size the chains start with (adapted by 2% per transition).
const INITIAL_STEP: f32 = 0.2;

/// Forward AIS for each image of `x` (rows of the decoder's output size):
/// `a.chains` chains from the prior, all images' chains in one batch.
pub fn forward_ais(
    dec: &mut NetworkDecoder,
    x: &[f32],
    a: Annealing,
    rng: &mut GenRng,
) -> DecoderEstimate {
    let (l, n) = (dec.latent(), x.len() / dec.dim());
    let mut z = vec![0.0f32; n * a.chains * l];
    dec.prior.sample(rng, &mut z);
    let mut state = start(dec, x, a.chains, z, INITIAL_STEP);
    let betas = sigmoid_schedule(a.steps);
    let log_w = anneal(dec, x, a.chains, &mut state, &betas, a.leapfrog, rng);
    DecoderEstimate::new(&log_w, a.chains, 1.0, &state)
}

/// Reverse AIS for each image of `x` from `z_exact` (one exact posterior
/// sample per image, the codes that generated simulated data): an upper
/// bound on log p(x) in expectation.
pub fn reverse_ais(
    dec: &mut NetworkDecoder,
    x: &[f32],
    z_exact: &[f32],
    a: Annealing,
    rng: &mut GenRng,
) -> DecoderEstimate {
    let l = dec.latent();
    let z: Vec<f32> = z_exact
        .chunks_exact(l)
        .flat_map(|zr| std::iter::repeat_n(zr, a.chains).flatten().copied())
        .collect();
    let mut state = start(dec, x, a.chains, z, INITIAL_STEP);
    let mut betas = sigmoid_schedule(a.steps);
    betas.reverse();
    let log_w = anneal(dec, x, a.chains, &mut state, &betas, a.leapfrog, rng);
    // The weights estimate 1 / p(x).
    DecoderEstimate::new(&log_w, a.chains, -1.0, &state)
}

/// Bidirectional Monte Carlo on `n` images simulated from the model.
#[derive(Debug, Clone)]
pub struct Bdmc {
    /// Forward AIS: the lower side.
    pub lower: DecoderEstimate,
    /// Reverse AIS from the simulating codes: the upper side.
    pub upper: DecoderEstimate,
}

impl Bdmc {
    /// Mean upper minus mean lower estimate: how far forward AIS can be
    /// below the truth on data like the model's own.
    pub fn gap(&self) -> f64 {
        self.upper.mean() - self.lower.mean()
    }
}

/// BDMC with the same annealing in both directions.
pub fn bdmc(dec: &mut NetworkDecoder, n: usize, a: Annealing, rng: &mut GenRng) -> Bdmc {
    let (z, x) = dec.simulate(n, rng);
    let lower = forward_ais(dec, &x, a, rng);
    let upper = reverse_ais(dec, &x, &z, a, rng);
    Bdmc { lower, upper }
}

/// The Gaussian standard deviations tried when one is chosen on held-out
/// images (pixel values in [0, 1]): 0.02 to 0.4, about a factor 1.45 apart.
pub const SIGMA_GRID: [f64; 9] = [0.02, 0.03, 0.045, 0.065, 0.095, 0.14, 0.2, 0.28, 0.4];

/// Picks the standard deviation of `dec`'s Gaussian observation model from
/// `grid` by the largest forward-AIS log-likelihood of `held_out`; returns
/// it with every candidate's figure, and leaves it set in `dec`.
pub fn choose_sigma(
    dec: &mut NetworkDecoder,
    held_out: &[f32],
    grid: &[f64],
    a: Annealing,
    rng_for: impl Fn(usize) -> GenRng,
) -> (f64, Vec<(f64, f64)>) {
    let Observation::Gaussian { mean, .. } = dec.observation else {
        panic!("a standard deviation belongs to a Gaussian observation model");
    };
    let mut tried = Vec::with_capacity(grid.len());
    for (i, &sigma) in grid.iter().enumerate() {
        dec.observation = Observation::Gaussian { mean, sigma };
        let est = forward_ais(dec, held_out, a, &mut rng_for(i));
        tried.push((sigma, est.mean()));
    }
    let best = tried
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .fold(
            (grid[0], f64::NEG_INFINITY),
            |b, c| if c.1 > b.1 { c } else { b },
        )
        .0;
    dec.observation = Observation::Gaussian { mean, sigma: best };
    (best, tried)
}
