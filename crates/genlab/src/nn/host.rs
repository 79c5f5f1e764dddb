//! The host executor: a [`Network`] run forward and backward on host
//! buffers, one forward and one backward per layer kind, with the matrix
//! products through [`crate::cpu::matmul`] (gemm). Activations are kept per
//! layer in buffers the executor owns and reuses from batch to batch. A
//! dense layer and the activation and dropout right after it run as one
//! pass over the output (bias, activation and mask together, and their
//! derivative in one pass backward), since the activation's derivative can
//! be read off the masked output.

use super::conv::{conv_backward, conv_forward, transposed_backward, transposed_forward};
use super::{Layer, Mode, Network};
use crate::cpu::{column_sums, matmul};

/// The activation a dense layer's pass applies after its bias.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    Identity,
    Relu,
    LeakyRelu(f32),
    Tanh,
    Sigmoid,
}

/// What one pass of the executor runs: layers `first..=last` (a dense layer
/// with the activation and dropout fused into it, or one other layer).
#[derive(Debug, Clone, Copy)]
struct Pass {
    first: usize,
    last: usize,
    /// For a dense pass: the activation after the bias, and whether a
    /// dropout layer follows it.
    fused: Option<(Activation, bool)>,
}

/// Groups a network's layers into passes.
fn passes(net: &Network) -> Vec<Pass> {
    let kinds: Vec<&Layer> = net.layers.iter().map(|l| &l.layer).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < kinds.len() {
        if !matches!(kinds[i], Layer::Dense { .. }) {
            out.push(Pass {
                first: i,
                last: i,
                fused: None,
            });
            i += 1;
            continue;
        }
        let mut last = i;
        let activation = match kinds.get(i + 1) {
            Some(Layer::Relu) => Some(Activation::Relu),
            Some(Layer::LeakyRelu { slope }) => Some(Activation::LeakyRelu(*slope as f32)),
            Some(Layer::Tanh) => Some(Activation::Tanh),
            Some(Layer::Sigmoid) => Some(Activation::Sigmoid),
            Some(Layer::Identity) => Some(Activation::Identity),
            _ => None,
        };
        if activation.is_some() {
            last += 1;
        }
        let activation = activation.unwrap_or(Activation::Identity);
        // Tanh and sigmoid need their unmasked output backward.
        let dropout = matches!(kinds.get(last + 1), Some(Layer::Dropout { .. }))
            && !matches!(activation, Activation::Tanh | Activation::Sigmoid);
        if dropout {
            last += 1;
        }
        out.push(Pass {
            first: i,
            last,
            fused: Some((activation, dropout)),
        });
        i = last + 1;
    }
    out
}

/// Where [`HostNetwork::backward`] puts the gradient at the input.
pub enum InputGradient<'a> {
    /// Not wanted.
    Skip,
    /// Written over the slice.
    Write(&'a mut [f32]),
    /// Added to the slice (two networks reading one input).
    Add(&'a mut [f32]),
}

/// A network's host executor and its buffers.
pub struct HostNetwork {
    pub net: Network,
    /// Training (batch statistics) or inference (running statistics).
    pub mode: Mode,
    /// Running statistics, in [`Network::buffers`] order; training updates them.
    pub buffers: Vec<Vec<f32>>,
    passes: Vec<Pass>,
    /// Per batch-normalisation layer, the mean and 1/sqrt(var + eps) that its
    /// last forward pass used.
    norms: Vec<(Vec<f32>, Vec<f32>)>,
    /// Each pass's output for the last forward pass (`rows x size`), kept at
    /// the pass's last layer; the other layers of a pass keep none.
    acts: Vec<Vec<f32>>,
    /// The gradient flowing backward, and the next one (swapped per pass).
    grad: Vec<f32>,
    grad_next: Vec<f32>,
    /// Patch matrices of one example (convolutions).
    cols: Vec<f32>,
}

impl HostNetwork {
    pub fn new(net: Network) -> Self {
        let acts = net.layers.iter().map(|_| Vec::new()).collect();
        let norms = net
            .layers
            .iter()
            .map(|_| (Vec::new(), Vec::new()))
            .collect();
        HostNetwork {
            mode: Mode::Train,
            buffers: net.initial_buffers(),
            passes: passes(&net),
            norms,
            net,
            acts,
            grad: Vec::new(),
            grad_next: Vec::new(),
            cols: Vec::new(),
        }
    }

    /// The output for `rows` examples `x` with parameters `params` (in
    /// [`Network::params`] order) and one mask per dropout layer (none in
    /// inference).
    pub fn forward(
        &mut self,
        params: &[Vec<f32>],
        x: &[f32],
        rows: usize,
        masks: &[&[f32]],
    ) -> &[f32] {
        assert_eq!(x.len(), rows * self.net.input_size(), "input size");
        let mut mask = masks.iter();
        let cols = &mut self.cols;
        for pass in &self.passes {
            let i = pass.first;
            let (done, rest) = self.acts.split_at_mut(i);
            let input: &[f32] = if i == 0 { x } else { &done[i - 1] };
            let layer = &self.net.layers[i];
            let n: usize = layer.output.iter().product();
            let out = &mut rest[pass.last - i];
            out.resize(rows * n, 0.0);
            match &layer.layer {
                Layer::Dense { .. } => {
                    let (w, b) = layer.params.expect("dense layers have parameters");
                    let (activation, dropout) = pass.fused.expect("dense passes are fused");
                    let k = layer.input[0];
                    matmul(out, input, &params[w], (rows, k, n), false, false, 0.0, 1.0);
                    let m: &[f32] = if dropout && self.mode == Mode::Train {
                        let m = mask.next().expect("one mask per dropout layer");
                        assert_eq!(m.len(), rows * n, "dropout mask size");
                        m
                    } else {
                        &[]
                    };
                    bias_activation(out, &params[b], activation, m);
                }
                Layer::Conv2d { .. } | Layer::ConvTranspose2d { .. } => {
                    let (w, b) = layer.params.expect("convolutions have parameters");
                    let g = layer.geometry.expect("convolutions have a geometry");
                    let k: usize = layer.input.iter().product();
                    cols.resize(g.positions() * g.patch(), 0.0);
                    let forward = if matches!(layer.layer, Layer::Conv2d { .. }) {
                        conv_forward
                    } else {
                        transposed_forward
                    };
                    for (x_r, y_r) in input.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
                        forward(&g, &params[w], &params[b], x_r, cols, y_r);
                    }
                }
                Layer::BatchNorm { epsilon, momentum } => {
                    let (w, b) = layer.params.expect("batch normalisation has parameters");
                    let (rm, rv) = layer.buffers.expect("batch normalisation has buffers");
                    let (c, plane) = layer.channels();
                    let (mean, inv) = &mut self.norms[i];
                    mean.resize(c, 0.0);
                    inv.resize(c, 0.0);
                    let count = (rows * plane) as f64;
                    for ch in 0..c {
                        let values = || {
                            input
                                .chunks_exact(c * plane)
                                .flat_map(move |e| &e[ch * plane..(ch + 1) * plane])
                        };
                        let var = match self.mode {
                            Mode::Train => {
                                let m = values().map(|&v| v as f64).sum::<f64>() / count;
                                let var =
                                    values().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / count;
                                let unbiased = if count > 1.0 {
                                    var * count / (count - 1.0)
                                } else {
                                    var
                                };
                                let mo = *momentum;
                                let old_mean = self.buffers[rm][ch] as f64;
                                self.buffers[rm][ch] = ((1.0 - mo) * old_mean + mo * m) as f32;
                                let old_var = self.buffers[rv][ch] as f64;
                                self.buffers[rv][ch] =
                                    ((1.0 - mo) * old_var + mo * unbiased) as f32;
                                mean[ch] = m as f32;
                                var
                            }
                            Mode::Infer => {
                                mean[ch] = self.buffers[rm][ch];
                                self.buffers[rv][ch] as f64
                            }
                        };
                        inv[ch] = (1.0 / (var + epsilon).sqrt()) as f32;
                    }
                    for (x_r, y_r) in input
                        .chunks_exact(c * plane)
                        .zip(out.chunks_exact_mut(c * plane))
                    {
                        for ch in 0..c {
                            let (g, sh, m, k) = (params[w][ch], params[b][ch], mean[ch], inv[ch]);
                            let span = ch * plane..(ch + 1) * plane;
                            for (y, &v) in y_r[span.clone()].iter_mut().zip(&x_r[span]) {
                                *y = g * (v - m) * k + sh;
                            }
                        }
                    }
                }
                Layer::Relu => map(out, input, |v| v.max(0.0)),
                Layer::LeakyRelu { slope } => {
                    let s = *slope as f32;
                    map(out, input, |v| if v > 0.0 { v } else { s * v })
                }
                Layer::Tanh => map(out, input, crate::cpu::tanh),
                Layer::Sigmoid => map(out, input, crate::cpu::sigmoid),
                // Inference keeps every unit and takes no mask.
                Layer::Dropout { .. } if self.mode == Mode::Infer => out.copy_from_slice(input),
                Layer::Dropout { .. } => {
                    let m = mask.next().expect("one mask per dropout layer");
                    assert_eq!(m.len(), rows * n, "dropout mask size");
                    for ((y, &v), &k) in out.iter_mut().zip(input).zip(m.iter()) {
                        *y = v * k;
                    }
                }
                Layer::Identity | Layer::Flatten | Layer::Reshape { .. } => {
                    out.copy_from_slice(&input[..rows * n])
                }
            }
        }
        self.acts.last().expect("a network has at least one layer")
    }

    /// Gradients of the last [`HostNetwork::forward`] (same `x`, `rows`,
    /// `masks`) given `d_out`, the loss's gradient at the output: every
    /// parameter's into `grads` when given (overwritten, [`Network::params`]
    /// order), and the input's as `d_input` asks.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        params: &[Vec<f32>],
        x: &[f32],
        rows: usize,
        d_out: &[f32],
        masks: &[&[f32]],
        mut grads: Option<&mut [Vec<f32>]>,
        mut d_input: InputGradient,
    ) {
        assert_eq!(
            d_out.len(),
            rows * self.net.output_size(),
            "output gradient size"
        );
        if let Some(grads) = grads.as_deref_mut() {
            for (g, p) in grads.iter_mut().zip(&self.net.params) {
                g.resize(p.len(), 0.0);
            }
        }
        self.grad.clear();
        self.grad.extend_from_slice(d_out);
        let mut mask = if self.mode == Mode::Train {
            masks.len()
        } else {
            0
        };
        for pass in self.passes.iter().rev() {
            let i = pass.first;
            let layer = &self.net.layers[i];
            let input: &[f32] = if i == 0 { x } else { &self.acts[i - 1] };
            let output = &self.acts[pass.last];
            let k: usize = layer.input.iter().product();
            let need_input_grad = i > 0 || !matches!(d_input, InputGradient::Skip);
            let dy = &mut self.grad;
            let dx = &mut self.grad_next;
            dx.resize(rows * k, 0.0);
            match &layer.layer {
                Layer::Dense { .. } => {
                    let (w, b) = layer.params.expect("dense layers have parameters");
                    let (activation, dropout) = pass.fused.expect("dense passes are fused");
                    let m: &[f32] = if dropout && self.mode == Mode::Train {
                        mask -= 1;
                        masks[mask]
                    } else {
                        &[]
                    };
                    activation_backward(dy, output, activation, m);
                    let n = layer.output[0];
                    if let Some(grads) = grads.as_deref_mut() {
                        matmul(
                            &mut grads[w],
                            input,
                            dy,
                            (k, rows, n),
                            true,
                            false,
                            0.0,
                            1.0,
                        );
                        column_sums(dy, n, &mut grads[b]);
                    }
                    // The first layer writes (or adds) straight into the caller's slice.
                    let (target, alpha) = match (&mut d_input, i) {
                        (InputGradient::Write(d), 0) => (Some(&mut d[..rows * k]), 0.0),
                        (InputGradient::Add(d), 0) => (Some(&mut d[..rows * k]), 1.0),
                        (InputGradient::Skip, 0) => (None, 0.0),
                        _ => (Some(&mut dx[..]), 0.0),
                    };
                    if let Some(t) = target {
                        matmul(t, dy, &params[w], (rows, n, k), false, true, alpha, 1.0);
                    }
                    if i == 0 {
                        return;
                    }
                }
                Layer::Conv2d { .. } | Layer::ConvTranspose2d { .. } => {
                    let (w, b) = layer.params.expect("convolutions have parameters");
                    let g = layer.geometry.expect("convolutions have a geometry");
                    let n: usize = layer.output.iter().product();
                    let cols = &mut self.cols;
                    let mut dcols = vec![0.0; g.positions() * g.patch()];
                    cols.resize(dcols.len(), 0.0);
                    // Unwanted parameter gradients go to scratch buffers.
                    let mut scratch;
                    let (gw, gb) = match grads.as_deref_mut() {
                        Some(grads) => two_mut(grads, w, b),
                        None => {
                            scratch = vec![vec![0.0; params[w].len()], vec![0.0; params[b].len()]];
                            two_mut(&mut scratch, 0, 1)
                        }
                    };
                    gw.fill(0.0);
                    gb.fill(0.0);
                    let conv = matches!(layer.layer, Layer::Conv2d { .. });
                    for r in 0..rows {
                        let x_r = &input[r * k..(r + 1) * k];
                        let dy_r = &dy[r * n..(r + 1) * n];
                        let dx_r = need_input_grad.then(|| &mut dx[r * k..(r + 1) * k]);
                        if conv {
                            g.im2col(x_r, cols);
                            conv_backward(&g, &params[w], cols, dy_r, gw, gb, &mut dcols, dx_r);
                        } else {
                            transposed_backward(
                                &g, &params[w], x_r, dy_r, gw, gb, &mut dcols, dx_r,
                            );
                        }
                    }
                }
                Layer::BatchNorm { .. } => {
                    let (w, b) = layer.params.expect("batch normalisation has parameters");
                    let (c, plane) = layer.channels();
                    let (mean, inv) = &self.norms[i];
                    let count = (rows * plane) as f32;
                    let mut param_grads = grads.as_deref_mut().map(|g| two_mut(g, w, b));
                    for ch in 0..c {
                        let span = ch * plane..(ch + 1) * plane;
                        let (mut sum_dy, mut sum_dy_xhat) = (0.0f64, 0.0f64);
                        for (x_r, dy_r) in input
                            .chunks_exact(c * plane)
                            .zip(dy.chunks_exact(c * plane))
                        {
                            for (&v, &d) in x_r[span.clone()].iter().zip(&dy_r[span.clone()]) {
                                sum_dy += d as f64;
                                sum_dy_xhat += (d * (v - mean[ch]) * inv[ch]) as f64;
                            }
                        }
                        if let Some((gw, gb)) = param_grads.as_mut() {
                            gw[ch] = sum_dy_xhat as f32;
                            gb[ch] = sum_dy as f32;
                        }
                        let (scale, mdy, mdyx) = (
                            params[w][ch] * inv[ch],
                            sum_dy as f32 / count,
                            sum_dy_xhat as f32 / count,
                        );
                        for ((x_r, dy_r), dx_r) in input
                            .chunks_exact(c * plane)
                            .zip(dy.chunks_exact(c * plane))
                            .zip(dx.chunks_exact_mut(c * plane))
                        {
                            for ((&v, &d), o) in x_r[span.clone()]
                                .iter()
                                .zip(&dy_r[span.clone()])
                                .zip(&mut dx_r[span.clone()])
                            {
                                *o = match self.mode {
                                    Mode::Train => {
                                        scale * (d - mdy - (v - mean[ch]) * inv[ch] * mdyx)
                                    }
                                    Mode::Infer => scale * d,
                                };
                            }
                        }
                    }
                }
                // For slopes >= 0 the output's sign is the input's.
                Layer::Relu => zip_map(dx, dy, output, |d, y| if y > 0.0 { d } else { 0.0 }),
                Layer::LeakyRelu { slope } => {
                    let s = *slope as f32;
                    zip_map(dx, dy, output, |d, y| if y > 0.0 { d } else { s * d })
                }
                Layer::Tanh => zip_map(dx, dy, output, |d, y| d * (1.0 - y * y)),
                Layer::Sigmoid => zip_map(dx, dy, output, |d, y| d * y * (1.0 - y)),
                Layer::Dropout { .. } if self.mode == Mode::Infer => dx.copy_from_slice(dy),
                Layer::Dropout { .. } => {
                    mask -= 1;
                    zip_map(dx, dy, masks[mask], |d, m| d * m)
                }
                Layer::Identity | Layer::Flatten | Layer::Reshape { .. } => dx.copy_from_slice(dy),
            }
            std::mem::swap(&mut self.grad, &mut self.grad_next);
        }
        match d_input {
            InputGradient::Skip => {}
            InputGradient::Write(d) => d[..self.grad.len()].copy_from_slice(&self.grad),
            InputGradient::Add(d) => d.iter_mut().zip(&self.grad).for_each(|(o, g)| *o += g),
        }
    }
}

/// Two distinct elements of `v`, both mutable.
fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert!(a < b, "weight before bias");
    let (left, right) = v.split_at_mut(b);
    (&mut left[a], &mut right[0])
}

crate::simd_fn! {
    /// In place over rows of `n = bias.len()`: `x = activation(x + bias)`,
    /// times the dropout mask when one is given.
    fn bias_activation(x: &mut [f32], bias: &[f32], activation: Activation, mask: &[f32]) {
        match activation {
            Activation::Identity => bias_rows(x, bias, mask, |a| a),
            Activation::Relu => bias_rows(x, bias, mask, |a| a.max(0.0)),
            Activation::LeakyRelu(s) => bias_rows(x, bias, mask, |a| if a > 0.0 { a } else { a * s }),
            Activation::Tanh => bias_rows(x, bias, mask, crate::cpu::tanh),
            Activation::Sigmoid => bias_rows(x, bias, mask, crate::cpu::sigmoid),
        }
    }
}

#[inline(always)]
fn bias_rows(x: &mut [f32], bias: &[f32], mask: &[f32], f: impl Fn(f32) -> f32) {
    let n = bias.len();
    if mask.is_empty() {
        for row in x.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = f(*v + b);
            }
        }
    } else {
        for (row, m) in x.chunks_exact_mut(n).zip(mask.chunks_exact(n)) {
            for ((v, b), m) in row.iter_mut().zip(bias).zip(m) {
                *v = f(*v + b) * m;
            }
        }
    }
}

crate::simd_fn! {
    /// In place: `d` (the gradient at a dense pass's output `y`) times the
    /// derivative of its activation and dropout, read off `y`: for slopes
    /// >= 0 the masked output is positive exactly where the unit was active
    /// and kept, and a dropped unit's derivative is 0 either way.
    fn activation_backward(d: &mut [f32], y: &[f32], activation: Activation, mask: &[f32]) {
        let masked = !mask.is_empty();
        match (activation, masked) {
            (Activation::Identity, false) => {}
            (Activation::Identity, true) => {
                for (v, &m) in d.iter_mut().zip(mask) {
                    *v *= m;
                }
            }
            (Activation::Relu, false) => {
                for (v, &a) in d.iter_mut().zip(y) {
                    *v = if a > 0.0 { *v } else { 0.0 };
                }
            }
            (Activation::Relu, true) => {
                for ((v, &a), &m) in d.iter_mut().zip(y).zip(mask) {
                    *v = if a > 0.0 { *v * m } else { 0.0 };
                }
            }
            (Activation::LeakyRelu(s), false) => {
                for (v, &a) in d.iter_mut().zip(y) {
                    *v = if a > 0.0 { *v } else { s * *v };
                }
            }
            (Activation::LeakyRelu(s), true) => {
                for ((v, &a), &m) in d.iter_mut().zip(y).zip(mask) {
                    *v *= if a > 0.0 { m } else { m * s };
                }
            }
            (Activation::Tanh, _) => {
                for (v, &a) in d.iter_mut().zip(y) {
                    *v *= 1.0 - a * a;
                }
            }
            (Activation::Sigmoid, _) => {
                for (v, &a) in d.iter_mut().zip(y) {
                    *v = *v * a * (1.0 - a);
                }
            }
        }
    }
}

fn map(out: &mut [f32], input: &[f32], f: impl Fn(f32) -> f32) {
    for (y, &v) in out.iter_mut().zip(input) {
        *y = f(v);
    }
}

fn zip_map(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}
