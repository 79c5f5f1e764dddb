//! CPU fast path of the MLP models: dense layers, their gradients and the
//! optimiser updates on host buffers, with the matrix products through
//! `gemm` (as flex does) and every elementwise step fused into one pass.
//! burn's generic path pays for a tensor allocation, a dispatch and a
//! separate sweep per elementwise operation, plus autodiff bookkeeping; for
//! these small networks that was about 40% of an epoch (see issue notes).
//! The same models run on any burn device through the generic path; this
//! one is used when the device is the CPU.

use crate::cpu::{column_sums, matmul, sigmoid, softplus, tanh};
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
    /// `out = tanh(x)`, elementwise.
    pub fn tanh_into(out: &mut [f32], x: &[f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = tanh(v);
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
    /// In place: `pre = x + bias` kept in `pre`, `x = leaky_relu(pre) * mask`.
    pub fn add_bias_leaky_dropout(x: &mut [f32], pre: &mut [f32], bias: &[f32], mask: &[f32], slope: f32) {
        let n = bias.len();
        for ((row, prow), mrow) in x.chunks_exact_mut(n).zip(pre.chunks_exact_mut(n)).zip(mask.chunks_exact(n)) {
            for (((v, p), b), m) in row.iter_mut().zip(prow.iter_mut()).zip(bias).zip(mrow) {
                let a = *v + b;
                *p = a;
                *v = if a > 0.0 { a } else { a * slope } * m;
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
    /// In place: `d *= mask * leaky'(pre)`.
    pub fn leaky_dropout_backward(d: &mut [f32], pre: &[f32], mask: &[f32], slope: f32) {
        for ((v, &a), &m) in d.iter_mut().zip(pre).zip(mask) {
            *v *= if a > 0.0 { m } else { m * slope };
        }
    }
}

simd_fn! {
    /// Squared-error reconstruction through a sigmoid: with `p = sigmoid(l)`,
    /// returns `sum (p - x)^2` and overwrites `l` with its gradient scaled by
    /// `scale`: `scale * 2 (p - x) p (1 - p)`.
    pub fn sigmoid_mse_grad(l: &mut [f32], x: &[f32], scale: f32) -> f32 {
        let mut acc = [0.0f32; 8];
        let n = l.len() - l.len() % 8;
        let (head, tail) = l.split_at_mut(n);
        for (lc, xc) in head.chunks_exact_mut(8).zip(x.chunks_exact(8)) {
            for k in 0..8 {
                let p = sigmoid(lc[k]);
                let d = p - xc[k];
                acc[k] += d * d;
                lc[k] = scale * 2.0 * d * p * (1.0 - p);
            }
        }
        let mut rest = 0.0f32;
        for (v, &xv) in tail.iter_mut().zip(&x[n..]) {
            let p = sigmoid(*v);
            let d = p - xv;
            rest += d * d;
            *v = scale * 2.0 * d * p * (1.0 - p);
        }
        acc.iter().sum::<f32>() + rest
    }
}

simd_fn! {
    /// Bernoulli reconstruction on logits: returns `sum softplus(l) - x l`
    /// and overwrites `l` with `scale * (sigmoid(l) - x)`.
    pub fn bernoulli_grad(l: &mut [f32], x: &[f32], scale: f32) -> f32 {
        let mut acc = [0.0f32; 8];
        let n = l.len() - l.len() % 8;
        let (head, tail) = l.split_at_mut(n);
        for (lc, xc) in head.chunks_exact_mut(8).zip(x.chunks_exact(8)) {
            for k in 0..8 {
                let v = lc[k];
                acc[k] += softplus(v) - xc[k] * v;
                lc[k] = scale * (sigmoid(v) - xc[k]);
            }
        }
        let mut rest = 0.0f32;
        for (v, &xv) in tail.iter_mut().zip(&x[n..]) {
            rest += softplus(*v) - xv * *v;
            *v = scale * (sigmoid(*v) - xv);
        }
        acc.iter().sum::<f32>() + rest
    }
}

simd_fn! {
    /// Keras Adam, one pass: `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
    /// `p -= alpha m / (sqrt(v) + eps)`.
    pub fn adam_keras(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], alpha: f32, b1: f32, b2: f32, eps: f32) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m += (g - *m) * (1.0 - b1);
            *v += (g * g - *v) * (1.0 - b2);
            *p -= alpha * *m / (v.sqrt() + eps);
        }
    }
}

simd_fn! {
    /// PyTorch Adam, one pass: `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    /// `p -= step m / (sqrt(v) / sqrt_c2 + eps)` with `step = lr / (1 - b1^t)`
    /// and `sqrt_c2 = sqrt(1 - b2^t)`.
    pub fn adam_torch(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], step: f32, sqrt_c2: f32, b1: f32, b2: f32, eps: f32) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= step * *m / (v.sqrt() / sqrt_c2 + eps);
        }
    }
}

simd_fn! {
    /// Keras RMSprop, one pass: `v = rho v + (1 - rho) g^2`, `p -= lr g / sqrt(v + eps)`.
    pub fn rmsprop_keras(p: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, rho: f32, eps: f32) {
        for ((p, &g), v) in p.iter_mut().zip(g).zip(v.iter_mut()) {
            *v = rho * *v + (1.0 - rho) * g * g;
            *p -= lr * g / (*v + eps).sqrt();
        }
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

/// Elements per rayon task in the optimiser passes.
const OPT_CHUNK: usize = 1 << 15;

/// Runs `f` over matching chunks of a parameter, its gradient and its two
/// moment buffers (`m` may be empty), in parallel for large tensors.
fn par_update(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    f: impl Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    if p.len() < 2 * OPT_CHUNK {
        return f(p, g, m, v);
    }
    if m.is_empty() {
        p.par_chunks_mut(OPT_CHUNK)
            .zip(g.par_chunks(OPT_CHUNK))
            .zip(v.par_chunks_mut(OPT_CHUNK))
            .for_each(|((p, g), v)| f(p, g, &mut [], v));
    } else {
        p.par_chunks_mut(OPT_CHUNK)
            .zip(g.par_chunks(OPT_CHUNK))
            .zip(m.par_chunks_mut(OPT_CHUNK))
            .zip(v.par_chunks_mut(OPT_CHUNK))
            .for_each(|(((p, g), m), v)| f(p, g, m, v));
    }
}

impl HostOptimizer {
    /// Applies one update to every parameter; the gradients must be finite.
    pub fn update(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>]) {
        use super::optim::Rule;
        self.step += 1;
        let t = self.step as i32;
        let mut no_first = Vec::new();
        for i in 0..params.len() {
            let first = if self.first.is_empty() {
                &mut no_first
            } else {
                &mut self.first[i]
            };
            let (p, g, m, v) = (&mut params[i], &grads[i], first, &mut self.second[i]);
            match self.rule {
                Rule::AdamKeras {
                    lr,
                    beta1,
                    beta2,
                    eps,
                } => {
                    let alpha = (lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t))) as f32;
                    let (b1, b2, eps) = (beta1 as f32, beta2 as f32, eps as f32);
                    par_update(p, g, m, v, |p, g, m, v| {
                        adam_keras(p, g, m, v, alpha, b1, b2, eps)
                    });
                }
                Rule::AdamTorch {
                    lr,
                    beta1,
                    beta2,
                    eps,
                } => {
                    let step = (lr / (1.0 - beta1.powi(t))) as f32;
                    let sqrt_c2 = (1.0 - beta2.powi(t)).sqrt() as f32;
                    let (b1, b2, eps) = (beta1 as f32, beta2 as f32, eps as f32);
                    par_update(p, g, m, v, |p, g, m, v| {
                        adam_torch(p, g, m, v, step, sqrt_c2, b1, b2, eps)
                    });
                }
                Rule::RmspropKeras { lr, rho, eps } => {
                    let (lr, rho, eps) = (lr as f32, rho as f32, eps as f32);
                    par_update(p, g, m, v, |p, g, _, v| {
                        rmsprop_keras(p, g, v, lr, rho, eps)
                    });
                }
            }
        }
    }
}

/// Whether every gradient is finite (one vectorised sum per tensor).
pub fn all_finite(grads: &[Vec<f32>]) -> bool {
    grads.iter().all(|g| crate::cpu::sum(g).is_finite())
}

/// Adds gradients `from` into `into` (same shapes): how the halves of a
/// batch are combined.
pub fn add_grads(into: &mut [Vec<f32>], from: &[Vec<f32>]) {
    for (a, b) in into.iter_mut().zip(from) {
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
    }
}

/// One training step of a VAE on host buffers, a batch `x` (rows of 784,
/// noise `eps` with `latent` values per row) cut into two halves that run
/// side by side, each with single-core matrix products
/// ([`crate::cpu::serial`]): on two cores this beats splitting every
/// (small) product across both, which spends its time waking and parking
/// threads. The halves are fixed, not one per core, so the numbers do not
/// depend on the thread count. `step(half, x, eps, scale)` computes a half's
/// loss sums and gradients with every gradient scaled by `scale` (1 / the
/// batch's rows); `grads` gives a half's gradient buffers. The batch's
/// gradients end in the first half's; returns the summed (reconstruction,
/// KL) and whether everything is finite.
pub fn in_halves<S: Send>(
    halves: &mut [S],
    x: &[f32],
    eps: &[f32],
    latent: usize,
    grads: fn(&mut S) -> &mut Vec<Vec<f32>>,
    step: impl Fn(&mut S, &[f32], &[f32], f32) -> [f64; 2] + Sync,
) -> ([f64; 2], bool) {
    let b = x.len() / crate::data::PIXELS;
    // The loss is the batch mean: every gradient carries 1/b.
    let scale = 1.0 / b as f32;
    let first = b.div_ceil(2);
    let (x0, x1) = x.split_at(first * crate::data::PIXELS);
    let (e0, e1) = eps[..b * latent].split_at(first * latent);
    let (h0, h1) = halves.split_at_mut(1);
    let (h0, h1) = (&mut h0[0], &mut h1[0]);
    let (a, c) = rayon::join(
        || crate::cpu::serial(|| step(h0, x0, e0, scale)),
        || crate::cpu::serial(|| step(h1, x1, e1, scale)),
    );
    let g1 = grads(h1);
    let g0 = grads(h0);
    add_grads(g0, g1);
    let (recon, kl) = (a[0] + c[0], a[1] + c[1]);
    let finite = all_finite(g0) && recon.is_finite() && kl.is_finite();
    ([recon, kl], finite)
}

/// Every parameter tensor read back to the host, in order.
pub fn download_all(params: &[burn::tensor::Tensor<1>]) -> anyhow::Result<Vec<Vec<f32>>> {
    params
        .iter()
        .map(|p| super::tensors::download(p.clone()))
        .collect()
}

/// A fully connected network on host buffers: hidden layers `leaky_relu`
/// then dropout (multipliers given per call), a linear last layer. Keeps
/// the activations of the last forward pass for its backward pass.
pub struct HostMlp {
    pub widths: Vec<usize>,
    /// `[W0, b0, W1, b1, ...]`, weights `[in, out]`.
    pub params: Vec<Vec<f32>>,
    pub grads: Vec<Vec<f32>>,
    pub slope: f32,
    /// Pre-activations of the hidden layers.
    pre: Vec<Vec<f32>>,
    /// Outputs of every layer (hidden: after activation and dropout).
    act: Vec<Vec<f32>>,
    /// Gradients with respect to each layer's output.
    delta: Vec<Vec<f32>>,
}

impl HostMlp {
    /// A network with these parameters and buffers for up to `rows` rows.
    pub fn new(widths: Vec<usize>, params: Vec<Vec<f32>>, slope: f32, rows: usize) -> Self {
        let layers = widths.len() - 1;
        let grads = params.iter().map(|p| vec![0.0; p.len()]).collect();
        let buf = |k: usize| vec![0.0f32; rows * widths[k + 1]];
        HostMlp {
            pre: (0..layers).map(buf).collect(),
            act: (0..layers).map(buf).collect(),
            delta: (0..layers).map(buf).collect(),
            widths,
            params,
            grads,
            slope,
        }
    }

    fn layers(&self) -> usize {
        self.widths.len() - 1
    }

    /// The last layer's output (`rows x out`) for inputs `x`; `masks[k]` are
    /// the dropout multipliers of hidden layer k (`rows x width`).
    pub fn forward(&mut self, x: &[f32], rows: usize, masks: &[Vec<f32>]) -> &[f32] {
        let last = self.layers() - 1;
        for k in 0..=last {
            let (k_in, k_out) = (self.widths[k], self.widths[k + 1]);
            let (before, after) = self.act.split_at_mut(k);
            let input: &[f32] = if k == 0 {
                x
            } else {
                &before[k - 1][..rows * k_in]
            };
            let out = &mut after[0][..rows * k_out];
            dense(out, input, &self.params[2 * k], rows, k_in, k_out);
            if k < last {
                add_bias_leaky_dropout(
                    out,
                    &mut self.pre[k][..rows * k_out],
                    &self.params[2 * k + 1],
                    &masks[k][..rows * k_out],
                    self.slope,
                );
            } else {
                add_bias(out, &self.params[2 * k + 1]);
            }
        }
        &self.act[last][..rows * self.widths[last + 1]]
    }

    /// Backward pass of the last [`HostMlp::forward`] with output gradient
    /// `d_out`: parameter gradients into `grads` when `param_grads`, and the
    /// gradient with respect to the input into `dx` when given.
    pub fn backward(
        &mut self,
        x: &[f32],
        rows: usize,
        d_out: &[f32],
        masks: &[Vec<f32>],
        param_grads: bool,
        mut dx: Option<&mut [f32]>,
    ) {
        let last = self.layers() - 1;
        self.delta[last][..d_out.len()].copy_from_slice(d_out);
        for k in (0..=last).rev() {
            let (k_in, k_out) = (self.widths[k], self.widths[k + 1]);
            let input: &[f32] = if k == 0 {
                x
            } else {
                &self.act[k - 1][..rows * k_in]
            };
            let (lower, upper) = self.delta.split_at_mut(k);
            let d = &upper[0][..rows * k_out];
            if param_grads {
                let (gw, gb) = self.grads[2 * k..].split_at_mut(1);
                dense_backward(
                    input,
                    &self.params[2 * k],
                    d,
                    (rows, k_in, k_out),
                    &mut gw[0],
                    &mut gb[0],
                    None,
                    false,
                );
            }
            let target: Option<&mut [f32]> = if k > 0 {
                Some(&mut lower[k - 1][..rows * k_in])
            } else {
                dx.as_deref_mut()
            };
            if let Some(t) = target {
                matmul(
                    t,
                    d,
                    &self.params[2 * k],
                    (rows, k_out, k_in),
                    false,
                    true,
                    0.0,
                    1.0,
                );
                if k > 0 {
                    leaky_dropout_backward(
                        t,
                        &self.pre[k - 1][..rows * k_in],
                        &masks[k - 1][..rows * k_in],
                        self.slope,
                    );
                }
            }
        }
    }
}
