//! CPU fast path of the MLP models: dense layers, their gradients and the
//! optimiser updates on host buffers, with the matrix products through
//! `gemm` (as flex does) and every elementwise step fused into one pass.
//! burn's generic path pays for a tensor allocation, a dispatch and a
//! separate sweep per elementwise operation, plus autodiff bookkeeping; for
//! these small networks that was about 40% of an epoch.
//! The same models run on any burn device through the generic path; this
//! one is used when the device is the CPU.

use crate::cpu::{column_sums, matmul, sigmoid, softplus};
use crate::simd_fn;

/// `out (rows x n) = x (rows x k) @ w (k x n)`, overwritten.
pub fn dense(out: &mut [f32], x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) {
    matmul(
        &mut out[..rows * n],
        &x[..rows * k],
        w,
        (rows, k, n),
        false,
        false,
        0.0,
        1.0,
    );
}

/// Gradients of a dense layer `y = x @ w + b` given `dy`: `gw = x' dy`,
/// `gb = column sums of dy`, and, when asked, `dx = dy w'` (overwritten, or
/// added to when `accumulate`).
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    (rows, k, n): (usize, usize, usize),
    gw: &mut [f32],
    gb: &mut [f32],
    dx: Option<&mut [f32]>,
    accumulate: bool,
) {
    matmul(
        gw,
        &x[..rows * k],
        &dy[..rows * n],
        (k, rows, n),
        true,
        false,
        0.0,
        1.0,
    );
    column_sums(&dy[..rows * n], n, gb);
    if let Some(dx) = dx {
        let alpha = if accumulate { 1.0 } else { 0.0 };
        matmul(
            &mut dx[..rows * k],
            &dy[..rows * n],
            w,
            (rows, n, k),
            false,
            true,
            alpha,
            1.0,
        );
    }
}

simd_fn! {
    /// In place over rows of `bias.len()`: `x += bias`.
    pub fn add_bias(x: &mut [f32], bias: &[f32]) {
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

simd_fn! {
    /// Dropout multipliers from random words: the uniform `u = (word >> 8) 2^-24`
    /// (how `rand` makes an f32), then 0 where `u < p`, else `keep`.
    pub fn dropout_mask(out: &mut [f32], words: &[u32], p: f32, keep: f32) {
        for (m, &w) in out.iter_mut().zip(words) {
            let u = (u32::from_le(w) >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
            *m = if u < p { 0.0 } else { keep };
        }
    }
}

simd_fn! {
    /// In place: `x = relu(x + bias)`.
    pub fn add_bias_relu(x: &mut [f32], bias: &[f32]) {
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = (*v + b).max(0.0);
            }
        }
    }
}

simd_fn! {
    /// In place: `d *= [h > 0]` (the ReLU's derivative read from its output).
    pub fn relu_backward(d: &mut [f32], h: &[f32]) {
        for (v, &a) in d.iter_mut().zip(h) {
            *v = if a > 0.0 { *v } else { 0.0 };
        }
    }
}

simd_fn! {
    /// The reparameterisation of both VAEs: `sd = exp(logvar / 2)`, `z =
    /// mean + sd eps`; returns the KL divergence to the standard normal
    /// summed over all values, `sum (sd^2 + mean^2 - 1 - logvar) / 2`. One
    /// vectorised pass (genlab's `exp`, relative error about 1e-7).
    pub fn reparameterize(mean: &[f32], logvar: &[f32], eps: &[f32], sd: &mut [f32], z: &mut [f32]) -> f64 {
        let n = mean.len();
        let (logvar, eps, sd, z) = (&logvar[..n], &eps[..n], &mut sd[..n], &mut z[..n]);
        #[inline(always)]
        fn one(m: f32, lv: f32, e: f32, sd: &mut f32, z: &mut f32) -> f32 {
            let s = crate::cpu::exp(0.5 * lv);
            *sd = s;
            *z = m + s * e;
            0.5 * (s * s + m * m - 1.0 - lv)
        }
        let whole = n - n % 8;
        let mut acc = [0.0f32; 8];
        for i in (0..whole).step_by(8) {
            for (k, a) in acc.iter_mut().enumerate() {
                let j = i + k;
                *a += one(mean[j], logvar[j], eps[j], &mut sd[j], &mut z[j]);
            }
        }
        let mut kl: f64 = acc.iter().map(|&a| a as f64).sum();
        for j in whole..n {
            kl += one(mean[j], logvar[j], eps[j], &mut sd[j], &mut z[j]) as f64;
        }
        kl
    }
}

simd_fn! {
    /// Squared-error reconstruction through a sigmoid: with `p = sigmoid(l)`,
    /// returns `sum (p - x)^2` and writes its gradient at the logits, scaled
    /// by `scale`, into `g`: `scale * 2 (p - x) p (1 - p)`.
    pub fn sigmoid_mse_grad(l: &[f32], x: &[f32], scale: f32, g: &mut [f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let n = l.len() - l.len() % 8;
        let (head, tail) = g[..l.len()].split_at_mut(n);
        for ((gc, lc), xc) in head.chunks_exact_mut(8).zip(l.chunks_exact(8)).zip(x.chunks_exact(8)) {
            for k in 0..8 {
                let p = sigmoid(lc[k]);
                let d = p - xc[k];
                acc[k] += d * d;
                gc[k] = scale * 2.0 * d * p * (1.0 - p);
            }
        }
        let mut rest = 0.0f32;
        for ((o, &v), &xv) in tail.iter_mut().zip(&l[n..]).zip(&x[n..]) {
            let p = sigmoid(v);
            let d = p - xv;
            rest += d * d;
            *o = scale * 2.0 * d * p * (1.0 - p);
        }
        acc.iter().sum::<f32>() + rest
    }
}

simd_fn! {
    /// Bernoulli reconstruction on logits: returns `sum softplus(l) - x l`
    /// and writes `scale * (sigmoid(l) - x)` into `g`.
    pub fn bernoulli_grad(l: &[f32], x: &[f32], scale: f32, g: &mut [f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let n = l.len() - l.len() % 8;
        let (head, tail) = g[..l.len()].split_at_mut(n);
        for ((gc, lc), xc) in head.chunks_exact_mut(8).zip(l.chunks_exact(8)).zip(x.chunks_exact(8)) {
            for k in 0..8 {
                let v = lc[k];
                acc[k] += softplus(v) - xc[k] * v;
                gc[k] = scale * (sigmoid(v) - xc[k]);
            }
        }
        let mut rest = 0.0f32;
        for ((o, &v), &xv) in tail.iter_mut().zip(&l[n..]).zip(&x[n..]) {
            rest += softplus(v) - xv * v;
            *o = scale * (sigmoid(v) - xv);
        }
        acc.iter().sum::<f32>() + rest
    }
}

/// The bits of `g - g`: zero for a finite `g`, a NaN's for an infinite or
/// NaN one (also where `g0 + g1` overflowed). The optimisers' kernels
/// return the OR of these over their gradients (their "poison"); an
/// integer OR keeps the loop vectorised, where a float sum would not.
#[inline(always)]
#[allow(clippy::eq_op)]
fn poison_bits(g: f32) -> u32 {
    (g - g).to_bits()
}

/// Runs `$body` for every element of a parameter slice with its gradient
/// `$g`: `$g0[i]`, or `$g0[i] + $g1[i]` when the batch's gradient came in two
/// halves (`$g1` not empty). The sum is the same f32 addition as summing the
/// halves first, so the result is bit-identical, without a pass that writes
/// the sum.
macro_rules! with_gradient {
    ($g0:ident, $g1:ident, |$i:ident, $g:ident| $body:block) => {
        if $g1.is_empty() {
            for $i in 0..$g0.len() {
                let $g = $g0[$i];
                $body
            }
        } else {
            let $g1 = &$g1[..$g0.len()];
            for $i in 0..$g0.len() {
                let $g = $g0[$i] + $g1[$i];
                $body
            }
        }
    };
}

simd_fn! {
    /// Keras Adam, one pass: `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
    /// `p -= alpha m / (sqrt(v) + eps)`, with `g = g0 + g1` (`g1` may be empty).
    /// Returns the gradients' poison (see [`poison_bits`]).
    pub fn adam_keras(p: &mut [f32], g0: &[f32], g1: &[f32], m: &mut [f32], v: &mut [f32], alpha: f32, b1: f32, b2: f32, eps: f32) -> u32 {
        let (p, m, v) = (&mut p[..g0.len()], &mut m[..g0.len()], &mut v[..g0.len()]);
        let mut poison = 0u32;
        with_gradient!(g0, g1, |i, g| {
            poison |= poison_bits(g);
            m[i] += (g - m[i]) * (1.0 - b1);
            v[i] += (g * g - v[i]) * (1.0 - b2);
            p[i] -= alpha * m[i] / (v[i].sqrt() + eps);
        });
        poison
    }
}

simd_fn! {
    /// PyTorch Adam, one pass: `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    /// `p -= step m / (sqrt(v) / sqrt_c2 + eps)` with `step = lr / (1 - b1^t)`
    /// and `sqrt_c2 = sqrt(1 - b2^t)`; `g = g0 + g1` (`g1` may be empty).
    pub fn adam_torch(p: &mut [f32], g0: &[f32], g1: &[f32], m: &mut [f32], v: &mut [f32], step: f32, sqrt_c2: f32, b1: f32, b2: f32, eps: f32) -> u32 {
        let (p, m, v) = (&mut p[..g0.len()], &mut m[..g0.len()], &mut v[..g0.len()]);
        let mut poison = 0u32;
        with_gradient!(g0, g1, |i, g| {
            poison |= poison_bits(g);
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            p[i] -= step * m[i] / (v[i].sqrt() / sqrt_c2 + eps);
        });
        poison
    }
}

simd_fn! {
    /// Keras RMSprop, one pass: `v = rho v + (1 - rho) g^2`, `p -= lr g / sqrt(v + eps)`;
    /// `g = g0 + g1` (`g1` may be empty).
    pub fn rmsprop_keras(p: &mut [f32], g0: &[f32], g1: &[f32], v: &mut [f32], lr: f32, rho: f32, eps: f32) -> u32 {
        let (p, v) = (&mut p[..g0.len()], &mut v[..g0.len()]);
        let mut poison = 0u32;
        with_gradient!(g0, g1, |i, g| {
            poison |= poison_bits(g);
            v[i] = rho * v[i] + (1.0 - rho) * g * g;
            p[i] -= lr * g / (v[i] + eps).sqrt();
        });
        poison
    }
}

/// A host copy of an optimiser's state (same layout as [`super::optim::Optimizer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HostOptimizer {
    pub rule: super::optim::Rule,
    pub step: u64,
    pub first: Vec<Vec<f32>>,
    pub second: Vec<Vec<f32>>,
}

impl HostOptimizer {
    /// A host copy of a device optimiser's state, for the CPU fast path.
    pub fn from_device(opt: &super::optim::Optimizer) -> anyhow::Result<Self> {
        let get = |v: &[burn::tensor::Tensor<1>]| -> anyhow::Result<Vec<Vec<f32>>> {
            v.iter()
                .map(|t| super::tensors::download(t.clone()))
                .collect()
        };
        Ok(HostOptimizer {
            rule: opt.rule,
            step: opt.step,
            first: get(&opt.first)?,
            second: get(&opt.second)?,
        })
    }

    /// The device optimiser holding this state, on `device`.
    pub fn to_device(&self, device: &burn::tensor::Device) -> super::optim::Optimizer {
        let put = |v: &[Vec<f32>]| {
            v.iter()
                .map(|x| super::tensors::upload(x.clone(), [x.len()], device))
                .collect()
        };
        super::optim::Optimizer {
            rule: self.rule,
            step: self.step,
            first: put(&self.first),
            second: put(&self.second),
        }
    }
}

/// Below this many parameters in all the update runs on the calling thread.
const PARALLEL_UPDATE_MIN: usize = 1 << 16;

/// A contiguous range of one parameter tensor with its gradient(s) and
/// optimiser state (`g1` and `m` may be empty).
struct Piece<'a> {
    p: &'a mut [f32],
    g0: &'a [f32],
    g1: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
}

/// Cuts every tensor's slices into `parts` groups of about equal element
/// counts, in order, so that one parallel pass can update them all.
fn split_pieces<'a>(
    params: &'a mut [Vec<f32>],
    g0: &'a [Vec<f32>],
    g1: Option<&'a [Vec<f32>]>,
    first: &'a mut [Vec<f32>],
    second: &'a mut [Vec<f32>],
    parts: usize,
) -> Vec<Vec<Piece<'a>>> {
    let total: usize = params.iter().map(Vec::len).sum();
    let per_part = total.div_ceil(parts).max(1);
    let mut groups: Vec<Vec<Piece<'a>>> = vec![Vec::new()];
    let mut room = per_part;
    let mut first = first.iter_mut();
    for (i, (p, v)) in params.iter_mut().zip(second.iter_mut()).enumerate() {
        let (mut p, mut v) = (p.as_mut_slice(), v.as_mut_slice());
        let mut m: &mut [f32] = first.next().map_or(&mut [], |m| m.as_mut_slice());
        let mut g0: &[f32] = &g0[i];
        let mut g1: &[f32] = g1.map_or(&[], |g| &g[i]);
        while !p.is_empty() {
            if room == 0 {
                groups.push(Vec::new());
                room = per_part;
            }
            let n = room.min(p.len());
            room -= n;
            let (ph, pt) = std::mem::take(&mut p).split_at_mut(n);
            let (vh, vt) = std::mem::take(&mut v).split_at_mut(n);
            let m_n = n.min(m.len());
            let (mh, mt) = std::mem::take(&mut m).split_at_mut(m_n);
            let (g0h, g0t) = g0.split_at(n);
            let (g1h, g1t) = g1.split_at(n.min(g1.len()));
            groups.last_mut().unwrap().push(Piece {
                p: ph,
                g0: g0h,
                g1: g1h,
                m: mh,
                v: vh,
            });
            (p, v, m, g0, g1) = (pt, vt, mt, g0t, g1t);
        }
    }
    groups
}

impl HostOptimizer {
    /// Applies one update to every parameter; returns whether every
    /// gradient was finite (callers that can undo check before instead).
    pub fn update(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>]) -> bool {
        self.update_with(params, grads, None)
    }

    /// Applies one update with the gradient `g0 + g1` (a batch computed in
    /// two halves), summed on the fly; returns whether every summed gradient
    /// was finite.
    pub fn update_sum(
        &mut self,
        params: &mut [Vec<f32>],
        g0: &[Vec<f32>],
        g1: &[Vec<f32>],
    ) -> bool {
        self.update_with(params, g0, Some(g1))
    }

    /// One pass over all parameters, cut into one part per core and run in
    /// a single parallel call (one wake-up of the pool per step, not one
    /// per tensor); the update is elementwise, so the cut changes nothing.
    fn update_with(
        &mut self,
        params: &mut [Vec<f32>],
        g0: &[Vec<f32>],
        g1: Option<&[Vec<f32>]>,
    ) -> bool {
        use super::optim::Rule;
        use rayon::prelude::*;
        self.step += 1;
        let t = self.step as i32;
        let rule = self.rule;
        let total: usize = params.iter().map(Vec::len).sum();
        let parts = if total < PARALLEL_UPDATE_MIN || crate::cpu::is_serial() {
            1
        } else {
            rayon::current_num_threads()
        };
        let apply = move |q: Piece| match rule {
            Rule::AdamKeras {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let alpha = (lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t))) as f32;
                adam_keras(
                    q.p,
                    q.g0,
                    q.g1,
                    q.m,
                    q.v,
                    alpha,
                    beta1 as f32,
                    beta2 as f32,
                    eps as f32,
                )
            }
            Rule::AdamTorch {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let step = (lr / (1.0 - beta1.powi(t))) as f32;
                let sqrt_c2 = (1.0 - beta2.powi(t)).sqrt() as f32;
                adam_torch(
                    q.p,
                    q.g0,
                    q.g1,
                    q.m,
                    q.v,
                    step,
                    sqrt_c2,
                    beta1 as f32,
                    beta2 as f32,
                    eps as f32,
                )
            }
            Rule::RmspropKeras { lr, rho, eps } => {
                rmsprop_keras(q.p, q.g0, q.g1, q.v, lr as f32, rho as f32, eps as f32)
            }
        };
        let groups = split_pieces(params, g0, g1, &mut self.first, &mut self.second, parts);
        let poison = if groups.len() == 1 {
            groups
                .into_iter()
                .flatten()
                .map(apply)
                .fold(0, |a, b| a | b)
        } else {
            groups
                .into_par_iter()
                .map(|group| group.into_iter().map(apply).fold(0, |a, b| a | b))
                .reduce(|| 0, |a, b| a | b)
        };
        poison == 0
    }
}

/// The gradients at the encoder's heads of a VAE step: the reparameterised
/// code's gradient `d_z` (from the decoder, which already carries 1 / the
/// batch's rows) plus the KL term's, which carries `kl_scale` (the KL
/// term's weight over the batch's rows): `d_mean = d_z + mean kl_scale`,
/// `d_logvar = d_z eps sd / 2 + (sd^2 - 1) kl_scale / 2`, with `sd =
/// exp(logvar / 2)` as [`reparameterize`] left it.
pub fn reparameterize_backward(
    d_z: &[f32],
    (mean, eps, sd): (&[f32], &[f32], &[f32]),
    kl_scale: f32,
    d_mean: &mut [f32],
    d_logvar: &mut [f32],
) {
    for i in 0..d_mean.len() {
        d_mean[i] = d_z[i] + mean[i] * kl_scale;
        d_logvar[i] = d_z[i] * eps[i] * 0.5 * sd[i] + 0.5 * (sd[i] * sd[i] - 1.0) * kl_scale;
    }
}

/// Whether every gradient is finite (one vectorised sum per tensor).
pub fn all_finite(grads: &[Vec<f32>]) -> bool {
    grads.iter().all(|g| crate::cpu::sum(g).is_finite())
}

/// The sum of two halves' gradients (same shapes), as a new copy.
pub fn summed_grads(g0: &[Vec<f32>], g1: &[Vec<f32>]) -> Vec<Vec<f32>> {
    g0.iter()
        .zip(g1)
        .map(|(a, b)| a.iter().zip(b).map(|(a, b)| a + b).collect())
        .collect()
}

simd_fn! {
    /// `sum |x|`, with eight running partial sums so that it vectorises.
    pub fn abs_sum(x: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let chunks = x.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().map(|v| v.abs()).sum();
        for c in chunks {
            for k in 0..8 {
                acc[k] += c[k].abs();
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

/// The sum of `|g|` over gradient tensors, in f64 (NaN if any is NaN).
fn l1_norm(grads: &[Vec<f32>]) -> f64 {
    grads.iter().map(|g| abs_sum(g) as f64).sum()
}

/// A half's gradient buffers, for [`in_halves`] to check.
pub type GradientBuffers<S> = fn(&mut S) -> &mut Vec<Vec<f32>>;

/// One training step of a VAE on host buffers, a batch `x` (rows of
/// `width` values, noise `eps` with `latent` values per row) cut into two halves that run
/// side by side, each with single-core matrix products
/// ([`crate::cpu::serial`]): on two cores this beats splitting every
/// (small) product across both, which spends its time waking and parking
/// threads. The halves are fixed, not one per core, so the numbers do not
/// depend on the thread count. `step(half, x, eps, scale)` computes a half's
/// loss sums and gradients with every gradient scaled by `scale` (1 / the
/// batch's rows). The batch's
/// gradient is the sum of the two halves' ([`HostOptimizer::update_sum`]
/// adds them as it updates). Returns the summed (reconstruction, KL) and
/// whether everything is finite: the losses, and with `check_gradients`
/// (a half's gradient buffers) the gradients too, each half checking its
/// own in its own thread as `sum |g|` over both halves below `f32::MAX`,
/// which also rules out an overflow when the halves are added. Without it (a caller that cannot
/// undo an update anyway) the optimiser's pass reports non-finite
/// gradients ([`HostOptimizer::update_sum`]), which saves a pass.
pub fn in_halves<S: Send>(
    halves: &mut [S],
    x: &[f32],
    width: usize,
    eps: &[f32],
    latent: usize,
    check_gradients: Option<GradientBuffers<S>>,
    step: impl Fn(&mut S, &[f32], &[f32], f32) -> [f64; 2] + Sync,
) -> ([f64; 2], bool) {
    let b = x.len() / width;
    // The loss is the batch mean: every gradient carries 1/b.
    let scale = 1.0 / b as f32;
    let first = b.div_ceil(2);
    let (x0, x1) = x.split_at(first * width);
    let (e0, e1) = eps[..b * latent].split_at(first * latent);
    let (h0, h1) = halves.split_at_mut(1);
    let (h0, h1) = (&mut h0[0], &mut h1[0]);
    let half = |h: &mut S, x: &[f32], e: &[f32]| {
        crate::cpu::serial(|| {
            let losses = step(h, x, e, scale);
            let l1 = check_gradients.map_or(0.0, |grads| l1_norm(grads(h)));
            (losses, l1)
        })
    };
    let ((a, l1_a), (c, l1_c)) = rayon::join(|| half(h0, x0, e0), || half(h1, x1, e1));
    let (recon, kl) = (a[0] + c[0], a[1] + c[1]);
    let finite = l1_a + l1_c < f32::MAX as f64 && recon.is_finite() && kl.is_finite();
    ([recon, kl], finite)
}

/// Every parameter tensor read back to the host, in order.
pub fn download_all(params: &[burn::tensor::Tensor<1>]) -> anyhow::Result<Vec<Vec<f32>>> {
    params
        .iter()
        .map(|p| super::tensors::download(p.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::optim::Rule;
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| crate::cpu::uniform(seed as u64, i) * 2.0 - 1.0)
            .collect()
    }

    /// One of each update rule, with the seed presets' settings.
    const RULES: [Rule; 3] = [
        Rule::AdamKeras {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
        },
        Rule::AdamTorch {
            lr: 2e-3,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
        },
        Rule::RmspropKeras {
            lr: 1e-3,
            rho: 0.9,
            eps: 1e-7,
        },
    ];

    /// Three steps of `rule`, by hand in f64 from the documented formulas.
    fn by_hand(rule: Rule, p: &[f32], g0: &[f32], g1: &[f32]) -> Vec<f64> {
        let (mut m, mut v) = (0.0f64, 0.0f64);
        p.iter()
            .zip(g0.iter().zip(g1))
            .map(|(&p, (&a, &b))| {
                let (mut p, g) = (p as f64, a as f64 + b as f64);
                (m, v) = (0.0, 0.0);
                for t in 1..=3 {
                    match rule {
                        Rule::AdamKeras {
                            lr,
                            beta1,
                            beta2,
                            eps,
                        } => {
                            m = beta1 * m + (1.0 - beta1) * g;
                            v = beta2 * v + (1.0 - beta2) * g * g;
                            let alpha = lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t));
                            p -= alpha * m / (v.sqrt() + eps);
                        }
                        Rule::AdamTorch {
                            lr,
                            beta1,
                            beta2,
                            eps,
                        } => {
                            m = beta1 * m + (1.0 - beta1) * g;
                            v = beta2 * v + (1.0 - beta2) * g * g;
                            let (mh, vh) = (m / (1.0 - beta1.powi(t)), v / (1.0 - beta2.powi(t)));
                            p -= lr * mh / (vh.sqrt() + eps);
                        }
                        Rule::RmspropKeras { lr, rho, eps } => {
                            v = rho * v + (1.0 - rho) * g * g;
                            p -= lr * g / (v + eps).sqrt();
                        }
                    }
                }
                p
            })
            .collect()
    }

    #[test]
    fn summed_update_in_parallel_parts_equals_the_serial_update_and_the_formulas() {
        // Tensors of odd sizes (one empty), so parts cross tensor boundaries.
        let sizes = [70_001, 3, 0, 100_003, 17];
        for rule in RULES {
            let fresh = || HostOptimizer {
                rule,
                step: 0,
                first: match rule {
                    Rule::RmspropKeras { .. } => Vec::new(),
                    _ => sizes.iter().map(|&n| vec![0.0; n]).collect(),
                },
                second: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            };
            let p0: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 1)).collect();
            let g0: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 2)).collect();
            let g1: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 3)).collect();
            // Reference: the halves summed first, one part on this thread.
            let (mut serial_p, mut serial_opt) = (p0.clone(), fresh());
            let sum = summed_grads(&g0, &g1);
            crate::cpu::serial(|| {
                for _ in 0..3 {
                    assert!(serial_opt.update(&mut serial_p, &sum), "{rule:?}: finite");
                }
            });
            for threads in [2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (mut p, mut opt) = (p0.clone(), fresh());
                pool.install(|| {
                    for _ in 0..3 {
                        assert!(opt.update_sum(&mut p, &g0, &g1), "{rule:?}: finite");
                    }
                });
                assert_eq!(p, serial_p, "{rule:?}, {threads} threads");
                assert_eq!(opt, serial_opt, "{rule:?}, {threads} threads");
            }
            for (i, p) in serial_p.iter().enumerate() {
                let want = by_hand(rule, &p0[i], &g0[i], &g1[i]);
                for (a, b) in p.iter().zip(&want) {
                    assert!(
                        (*a as f64 - b).abs() < 1e-6,
                        "{rule:?}: tensor {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_update_reports_a_gradient_that_is_not_finite_wherever_it_is() {
        let sizes = [70_001, 3, 100_003];
        // (tensor, index, g0's value, g1's value): NaN or infinity in either
        // half, and two finite halves whose sum overflows.
        let spoilers = [
            (0, 0, f32::NAN, 0.5),
            (0, 70_000, 0.5, f32::INFINITY),
            (1, 2, f32::NEG_INFINITY, 0.5),
            (2, 50_000, f32::MAX, f32::MAX),
            (2, 100_002, 0.5, f32::NAN),
        ];
        for rule in RULES {
            for &(t, i, a, b) in &spoilers {
                let mut g0: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 2)).collect();
                let mut g1: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 3)).collect();
                (g0[t][i], g1[t][i]) = (a, b);
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut p: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 1)).collect();
                    let mut opt = HostOptimizer {
                        rule,
                        step: 0,
                        first: sizes.iter().map(|&n| vec![0.0; n]).collect(),
                        second: sizes.iter().map(|&n| vec![0.0; n]).collect(),
                    };
                    let finite = pool.install(|| opt.update_sum(&mut p, &g0, &g1));
                    assert!(
                        !finite,
                        "{rule:?}, {threads} threads: g0 {a}, g1 {b} at {t}/{i}"
                    );
                }
            }
        }
    }
}
