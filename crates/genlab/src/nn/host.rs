//! The host executor: a [`Network`] run forward and backward on host
//! buffers, one forward and one backward per layer kind, with the matrix
//! products through [`crate::cpu::matmul`] (gemm). Activations are kept per
//! layer in buffers the executor owns and reuses from batch to batch.
//!
//! Three choices make it fast. A dense layer or a convolution runs with the
//! activation and dropout right after it as one pass over its output (bias,
//! activation and mask together, and their derivative in one pass
//! backward), since the activation's derivative can be read off the masked
//! output. And images (`[channels, height, width]` activations) are kept
//! channels-last inside, so that a convolution is one product over the
//! whole batch: patch rows (example, position) by patch columns (tap,
//! channel), where each tap is a contiguous run of channels that im2col
//! copies and col2im adds whole. Inputs, outputs, dropout masks and
//! parameters keep burn's layouts; the executor converts at its edges, at
//! flatten and reshape, and tap-major copies of the convolution weights are
//! made at each forward pass. And a first dense layer whose input is mostly
//! zeros (image pixels) multiplies only its nonzeros, forward and for its
//! weight gradient ([`crate::cpu::sparse_product`]).

use super::conv::{Geometry, from_tap_major, tap_major, to_channels_first, to_channels_last};
use super::pointwise::{Activation, activation_backward, bias_activation, map, max_pool, zip_map};
use super::{BuiltLayer, Layer, Mode, Network};
use crate::cpu::{SPARSE_BELOW, SparseRows, column_sums, matmul, sparse_product};

/// What one pass of the executor runs: layers `first..=last` (a dense layer
/// or a convolution with the activation and dropout fused into it, or one
/// other layer).
#[derive(Debug, Clone, Copy)]
struct Pass {
    first: usize,
    last: usize,
    /// For a dense or convolution pass: the activation after the bias, and
    /// whether a dropout layer follows it.
    fused: Option<(Activation, bool)>,
}

/// Groups a network's layers into passes.
fn passes(net: &Network) -> Vec<Pass> {
    let kinds: Vec<&Layer> = net.layers.iter().map(|l| &l.layer).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < kinds.len() {
        if !matches!(
            kinds[i],
            Layer::Dense { .. } | Layer::Conv2d { .. } | Layer::ConvTranspose2d { .. }
        ) {
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

/// `(channels, positions)` of a shape the executor keeps channels-last
/// (images of more than one channel; with one, both orders agree).
fn channels_last(shape: &[usize]) -> Option<(usize, usize)> {
    (shape.len() == 3 && shape[0] > 1).then(|| (shape[0], shape[1] * shape[2]))
}

/// A dropout mask given in burn's layout, in the executor's.
fn executor_mask<'a>(
    m: &'a [f32],
    shape: &[usize],
    rows: usize,
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    match channels_last(shape) {
        Some((c, p)) => {
            grow(buf, m.len());
            to_channels_last(m, buf, rows, c, p);
            &buf[..m.len()]
        }
        None => m,
    }
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
    /// Each pass's output for the last forward pass (`rows x size`, images
    /// channels-last), kept at the pass's last layer; the other layers of a
    /// pass keep none.
    acts: Vec<Vec<f32>>,
    /// Per convolution, the patch matrix of its last forward pass.
    cols: Vec<Vec<f32>>,
    /// Per max-pooling layer, where in its input each output's maximum was.
    winners: Vec<Vec<u32>>,
    /// Per convolution of several channels, its weights in tap-major order.
    taps: Vec<Vec<f32>>,
    /// Transposed convolutions' patches and patch gradients.
    patches: Vec<f32>,
    /// A weight gradient in tap-major order.
    weight_grad: Vec<f32>,
    /// The input channels-last, the output in burn's layout, a mask in the
    /// executor's (images of several channels).
    input: Vec<f32>,
    output: Vec<f32>,
    mask: Vec<f32>,
    /// The gradient flowing backward, and the next one (swapped per pass).
    grad: Vec<f32>,
    grad_next: Vec<f32>,
    /// The rows of the last forward pass.
    rows: usize,
    /// Whether the last forward pass found its input sparse enough for a
    /// first dense layer to use [`sparse_product`]; the input by its
    /// nonzeros then, and its transpose for that layer's weight gradient.
    sparse_first: bool,
    sparse_input: SparseRows,
    sparse_input_t: SparseRows,
}

impl HostNetwork {
    pub fn new(net: Network) -> Self {
        let per_layer = || net.layers.iter().map(|_| Vec::new()).collect::<Vec<_>>();
        HostNetwork {
            mode: Mode::Train,
            buffers: net.initial_buffers(),
            passes: passes(&net),
            norms: net
                .layers
                .iter()
                .map(|_| (Vec::new(), Vec::new()))
                .collect(),
            acts: per_layer(),
            cols: per_layer(),
            winners: net.layers.iter().map(|_| Vec::new()).collect(),
            taps: per_layer(),
            patches: Vec::new(),
            weight_grad: Vec::new(),
            input: Vec::new(),
            output: Vec::new(),
            mask: Vec::new(),
            grad: Vec::new(),
            grad_next: Vec::new(),
            rows: 0,
            sparse_first: false,
            sparse_input: SparseRows::default(),
            sparse_input_t: SparseRows::default(),
            net,
        }
    }

    /// Layer `i`'s output in the last forward pass (images channels-last),
    /// where the executor keeps one: at the last layer of each pass (a
    /// dense layer's or a convolution's is kept after the activation and
    /// dropout fused into it).
    pub fn layer_output(&self, i: usize) -> Option<&[f32]> {
        let n = self.rows * self.net.layers[i].output.iter().product::<usize>();
        self.passes
            .iter()
            .any(|p| p.last == i)
            .then(|| &self.acts[i][..n])
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
        let HostNetwork {
            net,
            mode,
            buffers,
            passes,
            norms,
            acts,
            cols,
            winners,
            taps,
            patches,
            input: input_buf,
            output: output_buf,
            mask: mask_buf,
            rows: last_rows,
            sparse_first,
            sparse_input,
            ..
        } = self;
        let mode = *mode;
        let mut mask = masks.iter();
        let x: &[f32] = match channels_last(&net.input) {
            Some((c, p)) => {
                grow(input_buf, x.len());
                to_channels_last(x, input_buf, rows, c, p);
                &input_buf[..x.len()]
            }
            None => x,
        };
        // Buffers keep their largest size (batches of two sizes alternate
        // in a GAN step): a resize that grows would zero what is overwritten.
        *last_rows = rows;
        *sparse_first = false;
        for pass in passes.iter() {
            let i = pass.first;
            let (done, rest) = acts.split_at_mut(i);
            let layer = &net.layers[i];
            let k_in: usize = layer.input.iter().product();
            let input: &[f32] = if i == 0 {
                x
            } else {
                &done[i - 1][..rows * k_in]
            };
            let n: usize = layer.output.iter().product();
            let out = &mut rest[pass.last - i];
            grow(out, rows * n);
            let out = &mut out[..rows * n];
            match &layer.layer {
                Layer::Dense { .. } => {
                    let (w, b) = layer.params.expect("dense layers have parameters");
                    let k = layer.input[0];
                    *sparse_first = i == 0 && sparse_index(sparse_input, input, k);
                    if *sparse_first {
                        sparse_product(out, sparse_input, &params[w], n);
                    } else {
                        matmul(out, input, &params[w], (rows, k, n), false, false, 0.0, 1.0);
                    }
                    let (activation, m) = fused_mask(pass, mode, &mut mask, layer, rows, mask_buf);
                    bias_activation(out, &params[b], activation, m);
                }
                Layer::Conv2d { .. } => {
                    let (w, b) = layer.params.expect("convolutions have parameters");
                    let g = layer.geometry.expect("convolutions have a geometry");
                    let (f, q, patch_rows) = (params[b].len(), g.patch(), rows * g.positions());
                    grow(&mut cols[i], patch_rows * q);
                    let c = &mut cols[i][..patch_rows * q];
                    g.im2col_rows(input, c, rows);
                    let wt = tap_major(&params[w], &g, &mut taps[i]);
                    matmul(out, c, wt, (patch_rows, q, f), false, true, 0.0, 1.0);
                    let (activation, m) = fused_mask(pass, mode, &mut mask, layer, rows, mask_buf);
                    bias_activation(out, &params[b], activation, m);
                }
                Layer::ConvTranspose2d { .. } => {
                    let (w, b) = layer.params.expect("convolutions have parameters");
                    let g = layer.geometry.expect("convolutions have a geometry");
                    let (cin, q, patch_rows) = (layer.input[0], g.patch(), rows * g.positions());
                    grow(patches, patch_rows * q);
                    let patches = &mut patches[..patch_rows * q];
                    let wt = tap_major(&params[w], &g, &mut taps[i]);
                    matmul(
                        patches,
                        input,
                        wt,
                        (patch_rows, cin, q),
                        false,
                        false,
                        0.0,
                        1.0,
                    );
                    g.col2im_rows(patches, out, rows);
                    let (activation, m) = fused_mask(pass, mode, &mut mask, layer, rows, mask_buf);
                    bias_activation(out, &params[b], activation, m);
                }
                Layer::BatchNorm { epsilon, momentum } => {
                    let (w, b) = layer.params.expect("batch normalisation has parameters");
                    let (rm, rv) = layer.buffers.expect("batch normalisation has buffers");
                    let (c, plane) = layer.channels();
                    let at = index(layer);
                    let (mean, inv) = &mut norms[i];
                    mean.resize(c, 0.0);
                    inv.resize(c, 0.0);
                    let count = (rows * plane) as f64;
                    for ch in 0..c {
                        let values = || {
                            input
                                .chunks_exact(c * plane)
                                .flat_map(move |e| (0..plane).map(move |j| e[at(ch, j)]))
                        };
                        let var = match mode {
                            Mode::Train => {
                                let m = values().map(|v| v as f64).sum::<f64>() / count;
                                let var =
                                    values().map(|v| (v as f64 - m).powi(2)).sum::<f64>() / count;
                                let unbiased = if count > 1.0 {
                                    var * count / (count - 1.0)
                                } else {
                                    var
                                };
                                let mo = *momentum;
                                let old_mean = buffers[rm][ch] as f64;
                                buffers[rm][ch] = ((1.0 - mo) * old_mean + mo * m) as f32;
                                let old_var = buffers[rv][ch] as f64;
                                buffers[rv][ch] = ((1.0 - mo) * old_var + mo * unbiased) as f32;
                                mean[ch] = m as f32;
                                var
                            }
                            Mode::Infer => {
                                mean[ch] = buffers[rm][ch];
                                buffers[rv][ch] as f64
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
                            for j in 0..plane {
                                let e = at(ch, j);
                                y_r[e] = g * (x_r[e] - m) * k + sh;
                            }
                        }
                    }
                }
                Layer::MaxPool2d { size } => {
                    let [c, h, w] = [layer.input[0], layer.input[1], layer.input[2]];
                    let [oh, ow] = [layer.output[1], layer.output[2]];
                    grow(&mut winners[i], out.len());
                    let won = &mut winners[i][..out.len()];
                    max_pool(input, out, won, [c, h, w, oh, ow], *size)
                }
                Layer::Relu => map(out, input, |v| v.max(0.0)),
                Layer::LeakyRelu { slope } => {
                    let s = *slope as f32;
                    map(out, input, |v| if v > 0.0 { v } else { s * v })
                }
                Layer::Tanh => map(out, input, crate::cpu::tanh),
                Layer::Sigmoid => map(out, input, crate::cpu::sigmoid),
                // Inference keeps every unit and takes no mask.
                Layer::Dropout { .. } if mode == Mode::Infer => out.copy_from_slice(input),
                Layer::Dropout { .. } => {
                    let m = mask.next().expect("one mask per dropout layer");
                    assert_eq!(m.len(), rows * n, "dropout mask size");
                    let m = executor_mask(m, &layer.output, rows, mask_buf);
                    for ((y, &v), &k) in out.iter_mut().zip(input).zip(m) {
                        *y = v * k;
                    }
                }
                Layer::Flatten | Layer::Reshape { .. } => {
                    relayout(input, out, rows, &layer.input, &layer.output, patches)
                }
                Layer::Identity => out.copy_from_slice(input),
            }
        }
        let n = rows * net.output_size();
        let last = &acts.last().expect("a network has at least one layer")[..n];
        let shape = &net.layers.last().expect("a network has layers").output;
        match channels_last(shape) {
            Some((c, p)) => {
                grow(output_buf, n);
                to_channels_first(last, output_buf, rows, c, p);
                &output_buf[..n]
            }
            None => last,
        }
    }

    /// The output of the last [`HostNetwork::forward`].
    pub fn output(&self) -> &[f32] {
        let n = self.rows * self.net.output_size();
        match channels_last(&self.net.layers.last().expect("a network has layers").output) {
            Some(_) => &self.output[..n],
            None => &self.acts.last().expect("a network has layers")[..n],
        }
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
        grads: Option<&mut [Vec<f32>]>,
        d_input: InputGradient,
    ) {
        assert_eq!(
            d_out.len(),
            rows * self.net.output_size(),
            "output gradient size"
        );
        self.backward_with(params, x, rows, masks, grads, d_input, |_, g| {
            g.copy_from_slice(d_out)
        });
    }

    /// [`HostNetwork::backward`] with the gradient at the output written by
    /// `loss(output, gradient)` straight into the executor's buffer (both in
    /// burn's layout), which saves a buffer and a copy; returns what `loss`
    /// returns.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_with<R>(
        &mut self,
        params: &[Vec<f32>],
        x: &[f32],
        rows: usize,
        masks: &[&[f32]],
        mut grads: Option<&mut [Vec<f32>]>,
        mut d_input: InputGradient,
        loss: impl FnOnce(&[f32], &mut [f32]) -> R,
    ) -> R {
        assert_eq!(rows, self.rows, "backward of the last forward pass");
        let HostNetwork {
            net,
            mode,
            passes,
            norms,
            acts,
            cols,
            winners,
            taps,
            patches,
            weight_grad,
            input: input_buf,
            output: output_buf,
            mask: mask_buf,
            grad,
            grad_next,
            sparse_first,
            sparse_input,
            sparse_input_t,
            ..
        } = self;
        let mode = *mode;
        if let Some(grads) = grads.as_deref_mut() {
            for (g, p) in grads.iter_mut().zip(&net.params) {
                g.resize(p.len(), 0.0);
            }
        }
        let x: &[f32] = match channels_last(&net.input) {
            Some(_) => &input_buf[..rows * net.input_size()],
            None => x,
        };
        // The two gradient buffers keep their largest size: a resize that
        // grows would zero what is overwritten anyway.
        let n = rows * net.output_size();
        grow(grad, n);
        let last = acts.last().expect("a network has layers");
        let result = match channels_last(&net.layers.last().expect("a network has layers").output) {
            Some((c, p)) => {
                grow(grad_next, n);
                let r = loss(&output_buf[..n], &mut grad_next[..n]);
                to_channels_last(&grad_next[..n], grad, rows, c, p);
                r
            }
            None => loss(&last[..n], &mut grad[..n]),
        };
        let mut mask = if mode == Mode::Train { masks.len() } else { 0 };
        for pass in passes.iter().rev() {
            let i = pass.first;
            let layer = &net.layers[i];
            let k: usize = layer.input.iter().product();
            let n_out: usize = layer.output.iter().product();
            let input: &[f32] = if i == 0 { x } else { &acts[i - 1][..rows * k] };
            let output = &acts[pass.last][..rows * n_out];
            let need_input_grad = i > 0 || !matches!(d_input, InputGradient::Skip);
            grow(grad_next, rows * k);
            let dy = &mut grad[..rows * n_out];
            let dx = &mut grad_next[..rows * k];
            // Through a fused activation and dropout, in place.
            let mut through_activation = |dy: &mut [f32]| {
                let (activation, dropout) = pass.fused.expect("a fused pass");
                let m: &[f32] = if dropout && mode == Mode::Train {
                    mask -= 1;
                    executor_mask(masks[mask], &layer.output, rows, mask_buf)
                } else {
                    &[]
                };
                activation_backward(dy, output, activation, m);
            };
            match &layer.layer {
                Layer::Dense { .. } => {
                    let (w, b) = layer.params.expect("dense layers have parameters");
                    through_activation(dy);
                    let n = layer.output[0];
                    if let Some(grads) = grads.as_deref_mut() {
                        if i == 0 && *sparse_first {
                            // x' dy as the product of x's transpose, sparse too.
                            sparse_input.transpose_into(sparse_input_t);
                            sparse_product(&mut grads[w], sparse_input_t, dy, n);
                        } else {
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
                        }
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
                        return result;
                    }
                }
                Layer::Conv2d { .. } => {
                    let (w, b) = layer.params.expect("convolutions have parameters");
                    let g = layer.geometry.expect("convolutions have a geometry");
                    let (f, q, patch_rows) = (params[b].len(), g.patch(), rows * g.positions());
                    through_activation(dy);
                    if let Some(grads) = grads.as_deref_mut() {
                        let gw = weight_grad_buffer(&g, &mut grads[w], weight_grad);
                        matmul(gw, dy, &cols[i], (f, patch_rows, q), true, false, 0.0, 1.0);
                        if g.channels > 1 {
                            from_tap_major(weight_grad, &g, &mut grads[w]);
                        }
                        column_sums(dy, f, &mut grads[b]);
                    }
                    if need_input_grad {
                        let wt = weights_as_run(&params[w], &g, &taps[i]);
                        grow(patches, patch_rows * q);
                        let patches = &mut patches[..patch_rows * q];
                        matmul(patches, dy, wt, (patch_rows, f, q), false, false, 0.0, 1.0);
                        g.col2im_rows(patches, dx, rows);
                    }
                }
                Layer::ConvTranspose2d { .. } => {
                    let (w, b) = layer.params.expect("convolutions have parameters");
                    let g = layer.geometry.expect("convolutions have a geometry");
                    let (cin, q, patch_rows) = (layer.input[0], g.patch(), rows * g.positions());
                    through_activation(dy);
                    grow(patches, patch_rows * q);
                    let patches = &mut patches[..patch_rows * q];
                    g.im2col_rows(dy, patches, rows);
                    if let Some(grads) = grads.as_deref_mut() {
                        column_sums(dy, g.channels, &mut grads[b]);
                        let gw = weight_grad_buffer(&g, &mut grads[w], weight_grad);
                        matmul(
                            gw,
                            input,
                            patches,
                            (cin, patch_rows, q),
                            true,
                            false,
                            0.0,
                            1.0,
                        );
                        if g.channels > 1 {
                            from_tap_major(weight_grad, &g, &mut grads[w]);
                        }
                    }
                    if need_input_grad {
                        let wt = weights_as_run(&params[w], &g, &taps[i]);
                        matmul(dx, patches, wt, (patch_rows, q, cin), false, true, 0.0, 1.0);
                    }
                }
                Layer::BatchNorm { .. } => {
                    let (w, b) = layer.params.expect("batch normalisation has parameters");
                    let (c, plane) = layer.channels();
                    let at = index(layer);
                    let (mean, inv) = &norms[i];
                    let count = (rows * plane) as f32;
                    let mut param_grads = grads.as_deref_mut().map(|g| two_mut(g, w, b));
                    for ch in 0..c {
                        let (mut sum_dy, mut sum_dy_xhat) = (0.0f64, 0.0f64);
                        for (x_r, dy_r) in input
                            .chunks_exact(c * plane)
                            .zip(dy.chunks_exact(c * plane))
                        {
                            for j in 0..plane {
                                let (v, d) = (x_r[at(ch, j)], dy_r[at(ch, j)]);
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
                            for j in 0..plane {
                                let e = at(ch, j);
                                let (v, d) = (x_r[e], dy_r[e]);
                                dx_r[e] = match mode {
                                    Mode::Train => {
                                        scale * (d - mdy - (v - mean[ch]) * inv[ch] * mdyx)
                                    }
                                    Mode::Infer => scale * d,
                                };
                            }
                        }
                    }
                }
                Layer::MaxPool2d { .. } => {
                    // Each output's gradient goes to the input that won.
                    dx.fill(0.0);
                    let n: usize = layer.output.iter().product();
                    for ((dx_r, dy_r), w_r) in dx
                        .chunks_exact_mut(k)
                        .zip(dy.chunks_exact(n))
                        .zip(winners[i].chunks_exact(n))
                    {
                        for (&d, &w) in dy_r.iter().zip(w_r) {
                            dx_r[w as usize] += d;
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
                Layer::Dropout { .. } if mode == Mode::Infer => dx.copy_from_slice(dy),
                Layer::Dropout { .. } => {
                    mask -= 1;
                    let m = executor_mask(masks[mask], &layer.output, rows, mask_buf);
                    zip_map(dx, dy, m, |d, m| d * m)
                }
                Layer::Flatten | Layer::Reshape { .. } => {
                    relayout(dy, dx, rows, &layer.output, &layer.input, patches)
                }
                Layer::Identity => dx.copy_from_slice(dy),
            }
            std::mem::swap(grad, grad_next);
        }
        // The input's gradient, back in burn's layout.
        let n = rows * net.input_size();
        let g: &[f32] = match channels_last(&net.input) {
            Some((c, p)) => {
                grow(grad_next, n);
                to_channels_first(&grad[..n], grad_next, rows, c, p);
                &grad_next[..n]
            }
            None => &grad[..n],
        };
        match d_input {
            InputGradient::Skip => {}
            InputGradient::Write(d) => d[..g.len()].copy_from_slice(g),
            InputGradient::Add(d) => d.iter_mut().zip(g).for_each(|(o, v)| *o += v),
        }
        result
    }
}

/// Whether fewer than [`SPARSE_BELOW`] of the input `x`'s values (rows of
/// `k`) are nonzero; if so, indexes them into `index`. The count comes
/// first and only reads, so a dense input costs one read.
fn sparse_index(index: &mut SparseRows, x: &[f32], k: usize) -> bool {
    if crate::cpu::nonzero_fraction(x) >= SPARSE_BELOW {
        return false;
    }
    index.index(x, k);
    true
}

/// Makes `v` at least `n` long.
fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// A fused pass's activation, and the mask of its dropout layer in the
/// executor's layout (training only; empty otherwise).
fn fused_mask<'m: 'b, 'b>(
    pass: &Pass,
    mode: Mode,
    masks: &mut std::slice::Iter<'_, &'m [f32]>,
    layer: &BuiltLayer,
    rows: usize,
    buf: &'b mut Vec<f32>,
) -> (Activation, &'b [f32]) {
    let (activation, dropout) = pass.fused.expect("a fused pass");
    if !(dropout && mode == Mode::Train) {
        return (activation, &[]);
    }
    let m = masks.next().expect("one mask per dropout layer");
    assert_eq!(
        m.len(),
        rows * layer.output.iter().product::<usize>(),
        "dropout mask size"
    );
    (activation, executor_mask(m, &layer.output, rows, buf))
}

/// Where channel `ch`'s value at position `j` sits in one example of a
/// batch-normalisation layer's input (images channels-last).
fn index(layer: &BuiltLayer) -> impl Fn(usize, usize) -> usize + Copy {
    let (c, plane) = layer.channels();
    let last = channels_last(&layer.input).is_some();
    move |ch, j| if last { j * c + ch } else { ch * plane + j }
}

/// A flatten or reshape from `from` to `to` (shapes per example), each side
/// in the executor's layout, through `scratch` when both are images.
fn relayout(
    src: &[f32],
    dst: &mut [f32],
    rows: usize,
    from: &[usize],
    to: &[usize],
    scratch: &mut Vec<f32>,
) {
    match (channels_last(from), channels_last(to)) {
        (None, None) => dst.copy_from_slice(&src[..dst.len()]),
        (Some((c, p)), None) => to_channels_first(src, dst, rows, c, p),
        (None, Some((c, p))) => to_channels_last(src, dst, rows, c, p),
        (Some((c, p)), Some((c2, p2))) => {
            grow(scratch, src.len());
            let scratch = &mut scratch[..src.len()];
            to_channels_first(src, scratch, rows, c, p);
            to_channels_last(scratch, dst, rows, c2, p2);
        }
    }
}

/// The buffer a convolution's weight gradient is computed in: tap-major
/// scratch for several channels, else the gradient itself.
fn weight_grad_buffer<'a>(
    g: &Geometry,
    grad: &'a mut [f32],
    scratch: &'a mut Vec<f32>,
) -> &'a mut [f32] {
    if g.channels > 1 {
        grow(scratch, grad.len());
        &mut scratch[..grad.len()]
    } else {
        grad
    }
}

/// A convolution's weights as its forward pass ran them (tap-major for
/// several channels).
fn weights_as_run<'a>(w: &'a [f32], g: &Geometry, taps: &'a [f32]) -> &'a [f32] {
    if g.channels > 1 { taps } else { w }
}

/// Two distinct elements of `v`, both mutable.
fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert!(a < b, "weight before bias");
    let (left, right) = v.split_at_mut(b);
    (&mut left[a], &mut right[0])
}
