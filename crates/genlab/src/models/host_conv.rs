//! CPU fast path of the convolutional VAE: 3x3 convolutions and transposed
//! convolutions as patch matrices (im2col) and matrix products on host
//! buffers, channels-last inside, with the same numbers as burn's NCHW
//! path ([`super::vae::VaeNet`]): weights in the same layouts, the flatten in
//! (c, h, w) order, Keras 'same' geometry (odd padding at the end, the
//! transposed convolutions cropped to 2n).

use rayon::prelude::*;

use super::host::{HostOptimizer, add_bias, add_bias_relu, dense, dense_backward, relu_backward};
use super::likelihood::Likelihood;
use crate::cpu::{column_sums, matmul};
use crate::data::PIXELS;

/// Where 3x3 patches are read: an `img_h x img_w x channels` image per
/// example (channels last) and a `grid_h x grid_w` grid of patch positions;
/// patch (i, j) reads image rows `stride i + kh - pad`, columns
/// `stride j + kw - pad` (outside: zero).
#[derive(Debug, Clone, Copy)]
pub struct Geom {
    pub img_h: usize,
    pub img_w: usize,
    pub channels: usize,
    pub grid_h: usize,
    pub grid_w: usize,
    pub stride: usize,
    pub pad: usize,
    /// Patch columns in (kh, kw, c) order instead of burn's (c, kh, kw):
    /// each tap is then a contiguous run of channels, which im2col copies
    /// and col2im adds whole (the conv VAE's epoch took about 7% less time
    /// than with the strided order). The weights must be in the same order
    /// ([`to_tap_major`]).
    pub tap_major: bool,
}

/// Rows of `channels * 9` weights in burn's (c, kh, kw) order into `out` in
/// (kh, kw, c) order.
pub fn to_tap_major(w: &[f32], channels: usize, out: &mut [f32]) {
    let k = channels * 9;
    for (src, dst) in w.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        for c in 0..channels {
            for tap in 0..9 {
                dst[tap * channels + c] = src[c * 9 + tap];
            }
        }
    }
}

/// The inverse of [`to_tap_major`].
pub fn from_tap_major(w: &[f32], channels: usize, out: &mut [f32]) {
    let k = channels * 9;
    for (src, dst) in w.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        for c in 0..channels {
            for tap in 0..9 {
                dst[c * 9 + tap] = src[tap * channels + c];
            }
        }
    }
}

impl Geom {
    fn img_len(&self) -> usize {
        self.img_h * self.img_w * self.channels
    }

    fn rows(&self) -> usize {
        self.grid_h * self.grid_w
    }

    fn cols(&self) -> usize {
        self.channels * 9
    }

    /// The image coordinate read by patch coordinate `g` at kernel offset `k`.
    #[inline]
    fn at(&self, g: usize, k: usize, limit: usize) -> Option<usize> {
        let v = (self.stride * g + k).checked_sub(self.pad)?;
        (v < limit).then_some(v)
    }

    /// Patch matrix: `cols[(b, i, j), c * 9 + kh * 3 + kw] = image[b, y, x, c]`
    /// (tap-major: column `(kh * 3 + kw) * channels + c`).
    pub fn im2col(&self, image: &[f32], cols: &mut [f32], batch: usize) {
        let (per_img, per_cols) = (self.img_len(), self.rows() * self.cols());
        let ch = self.channels;
        cols[..batch * per_cols]
            .par_chunks_mut(per_cols)
            .zip(image[..batch * per_img].par_chunks(per_img))
            .for_each(|(out, img)| {
                for i in 0..self.grid_h {
                    for j in 0..self.grid_w {
                        let row = &mut out[(i * self.grid_w + j) * self.cols()..][..self.cols()];
                        for kh in 0..3 {
                            let y = self.at(i, kh, self.img_h);
                            for kw in 0..3 {
                                let x = self.at(j, kw, self.img_w);
                                let tap = kh * 3 + kw;
                                let src = match (y, x) {
                                    (Some(y), Some(x)) => {
                                        Some(&img[(y * self.img_w + x) * ch..][..ch])
                                    }
                                    _ => None,
                                };
                                match (self.tap_major, src) {
                                    (true, Some(src)) => row[tap * ch..][..ch].copy_from_slice(src),
                                    (true, None) => row[tap * ch..][..ch].fill(0.0),
                                    (false, Some(src)) => {
                                        for (c, &v) in src.iter().enumerate() {
                                            row[c * 9 + tap] = v;
                                        }
                                    }
                                    (false, None) => {
                                        for c in 0..ch {
                                            row[c * 9 + tap] = 0.0;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            });
    }

    /// The adjoint of [`Geom::im2col`]: `image` is overwritten with the sum
    /// of every patch entry that reads each pixel.
    pub fn col2im(&self, cols: &[f32], image: &mut [f32], batch: usize) {
        let (per_img, per_cols) = (self.img_len(), self.rows() * self.cols());
        let ch = self.channels;
        image[..batch * per_img]
            .par_chunks_mut(per_img)
            .zip(cols[..batch * per_cols].par_chunks(per_cols))
            .for_each(|(img, src)| {
                img.fill(0.0);
                for i in 0..self.grid_h {
                    for j in 0..self.grid_w {
                        let row = &src[(i * self.grid_w + j) * self.cols()..][..self.cols()];
                        for kh in 0..3 {
                            let Some(y) = self.at(i, kh, self.img_h) else {
                                continue;
                            };
                            for kw in 0..3 {
                                let Some(x) = self.at(j, kw, self.img_w) else {
                                    continue;
                                };
                                let tap = kh * 3 + kw;
                                let dst = &mut img[(y * self.img_w + x) * ch..][..ch];
                                if self.tap_major {
                                    for (d, v) in dst.iter_mut().zip(&row[tap * ch..][..ch]) {
                                        *d += v;
                                    }
                                } else {
                                    for (c, d) in dst.iter_mut().enumerate() {
                                        *d += row[c * 9 + tap];
                                    }
                                }
                            }
                        }
                    }
                }
            });
    }
}

/// Backward of a convolution computed as `y = im2col(x) @ w'` (`cols` the
/// patch matrix of the forward pass, `dy` its `rows x c_out` gradient, `w`
/// `[c_out, c_in * 9]`): `gw = dy' cols`, `gb` = column sums of `dy`, and,
/// when `dx` is given, the input image gradient `col2im(dy w)` (via `dcols`).
#[allow(clippy::too_many_arguments)]
pub fn conv_backward(
    geom: &Geom,
    batch: usize,
    cols: &[f32],
    dy: &[f32],
    w: &[f32],
    gw: &mut [f32],
    gb: &mut [f32],
    dcols: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let (rows, k, c_out) = (batch * geom.rows(), geom.cols(), gb.len());
    let dy = &dy[..rows * c_out];
    matmul(
        gw,
        dy,
        &cols[..rows * k],
        (c_out, rows, k),
        true,
        false,
        0.0,
        1.0,
    );
    column_sums(dy, c_out, gb);
    if let Some(dx) = dx {
        matmul(
            &mut dcols[..rows * k],
            dy,
            w,
            (rows, c_out, k),
            false,
            false,
            0.0,
            1.0,
        );
        geom.col2im(dcols, dx, batch);
    }
}

/// Backward of a transposed convolution computed as `y = col2im(x @ w)`
/// (`x` the `rows x c_in` input, `w` `[c_in, c_out * 9]`, `dy` the gradient
/// of the output image): `gb` = per-channel sums of `dy`, `gw = x' im2col(dy)`
/// and, when `dx` is given, `dx = im2col(dy) w'` (the patches go to `dcols`).
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose_backward(
    geom: &Geom,
    batch: usize,
    x: &[f32],
    dy: &[f32],
    w: &[f32],
    gw: &mut [f32],
    gb: &mut [f32],
    dcols: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let (rows, k, c_in) = (batch * geom.rows(), geom.cols(), w.len() / geom.cols());
    column_sums(&dy[..batch * geom.img_len()], geom.channels, gb);
    geom.im2col(dy, dcols, batch);
    let dcols = &dcols[..rows * k];
    matmul(
        gw,
        &x[..rows * c_in],
        dcols,
        (c_in, rows, k),
        true,
        false,
        0.0,
        1.0,
    );
    if let Some(dx) = dx {
        matmul(
            &mut dx[..rows * c_in],
            dcols,
            w,
            (rows, k, c_in),
            false,
            true,
            0.0,
            1.0,
        );
    }
}

/// `[b, c, p]` (channels first, `p` positions) to `[b, p, c]`, or back with `inverse`.
pub(crate) fn permute(
    src: &[f32],
    dst: &mut [f32],
    batch: usize,
    c: usize,
    p: usize,
    inverse: bool,
) {
    for b in 0..batch {
        let (s, d) = (&src[b * c * p..][..c * p], &mut dst[b * c * p..][..c * p]);
        for ci in 0..c {
            for pi in 0..p {
                if inverse {
                    d[ci * p + pi] = s[pi * c + ci];
                } else {
                    d[pi * c + ci] = s[ci * p + pi];
                }
            }
        }
    }
}

const C1: usize = 32;
const C2: usize = 64;
const S7: usize = 7;
const FLAT: usize = C2 * S7 * S7;

/// The conv VAE's training step on host buffers (parameters in
/// [`super::vae::VaeNet::specs`] order for the conv architecture).
pub struct HostConvVae {
    pub latent: usize,
    pub hidden: usize,
    pub params: Vec<Vec<f32>>,
    pub opt: HostOptimizer,
    g_conv1: Geom,
    g_conv2: Geom,
    g_up1: Geom,
    g_up2: Geom,
    g_out: Geom,
    /// Tap-major copies of the weights of conv2 and the two transposed
    /// convolutions (conv1 and the output layer have one channel, where both
    /// orders agree).
    w_conv2: Vec<f32>,
    w_up1: Vec<f32>,
    w_up2: Vec<f32>,
    /// The two halves of a batch, run side by side with single-core
    /// products (as the MLP VAE's); the first one's gradients hold the
    /// batch's after each step.
    shards: Vec<ConvShard>,
}

/// What every half of a batch reads: the parameters, their tap-major
/// copies and the layer geometry.
struct ConvNet<'a> {
    latent: usize,
    hidden: usize,
    p: &'a [Vec<f32>],
    w_conv2: &'a [f32],
    w_up1: &'a [f32],
    w_up2: &'a [f32],
    geoms: [Geom; 5],
}

/// Activations, gradients and scratch of one half of a batch.
struct ConvShard {
    grads: Vec<Vec<f32>>,
    /// A weight gradient in tap-major order before it is put back.
    g_taps: Vec<f32>,
    // Activations (channels last unless said) and scratch.
    cols1: Vec<f32>,
    a1: Vec<f32>,
    cols2: Vec<f32>,
    a2: Vec<f32>,
    flat: Vec<f32>,
    hid: Vec<f32>,
    mean: Vec<f32>,
    logvar: Vec<f32>,
    sd: Vec<f32>,
    z: Vec<f32>,
    dflat: Vec<f32>,
    d0: Vec<f32>,
    ucols1: Vec<f32>,
    u1: Vec<f32>,
    ucols2: Vec<f32>,
    u2: Vec<f32>,
    ucols3: Vec<f32>,
    logits: Vec<f32>,
    // Gradient scratch.
    dcols_big: Vec<f32>,
    du1: Vec<f32>,
    du2: Vec<f32>,
    dd0: Vec<f32>,
    ddflat: Vec<f32>,
    dz: Vec<f32>,
    dmean: Vec<f32>,
    dlogvar: Vec<f32>,
    dhid: Vec<f32>,
    dflat_enc: Vec<f32>,
    da2: Vec<f32>,
    da1: Vec<f32>,
}

impl HostConvVae {
    /// The host path for these parameters (in the conv VAE's order), latent
    /// and hidden sizes, optimiser state, and batches of `rows` rows.
    pub fn with_params(
        params: Vec<Vec<f32>>,
        l: usize,
        h: usize,
        opt: HostOptimizer,
        rows: usize,
    ) -> Self {
        let lens: Vec<usize> = params.iter().map(Vec::len).collect();
        let geom = |img: usize, channels: usize, grid: usize, stride: usize, pad: usize| Geom {
            img_h: img,
            img_w: img,
            channels,
            grid_h: grid,
            grid_w: grid,
            stride,
            pad,
            tap_major: true,
        };
        let g_conv1 = geom(28, 1, 14, 2, 0);
        let g_conv2 = geom(14, C1, 7, 2, 0);
        // Transposed convolutions: the image side is their output.
        let g_up1 = geom(14, C2, 7, 2, 0);
        let g_up2 = geom(28, C1, 14, 2, 0);
        let g_out = geom(28, 1, 28, 1, 1);
        let shard_rows = rows.div_ceil(2);
        let z = |n: usize| vec![0.0f32; shard_rows * n];
        let shard = || ConvShard {
            grads: lens.iter().map(|&n| vec![0.0; n]).collect(),
            g_taps: vec![0.0; lens[2].max(lens[12]).max(lens[14])],
            cols1: z(g_conv1.rows() * g_conv1.cols()),
            a1: z(14 * 14 * C1),
            cols2: z(g_conv2.rows() * g_conv2.cols()),
            a2: z(FLAT),
            flat: z(FLAT),
            hid: z(h),
            mean: z(l),
            logvar: z(l),
            sd: z(l),
            z: z(l),
            dflat: z(FLAT),
            d0: z(FLAT),
            ucols1: z(g_up1.rows() * g_up1.cols()),
            u1: z(14 * 14 * C2),
            ucols2: z(g_up2.rows() * g_up2.cols()),
            u2: z(28 * 28 * C1),
            ucols3: z(g_out.rows() * g_out.cols()),
            logits: z(PIXELS),
            // The largest patch matrix of the backward pass (the second transposed convolution).
            dcols_big: z(g_up2.rows() * C1 * 9),
            du1: z(14 * 14 * C2),
            du2: z(28 * 28 * C1),
            dd0: z(FLAT),
            ddflat: z(FLAT),
            dz: z(l),
            dmean: z(l),
            dlogvar: z(l),
            dhid: z(h),
            dflat_enc: z(FLAT),
            da2: z(FLAT),
            da1: z(14 * 14 * C1),
        };
        let shards = vec![shard(), shard()];
        HostConvVae {
            latent: l,
            hidden: h,
            opt,
            w_conv2: vec![0.0; lens[2]],
            w_up1: vec![0.0; lens[12]],
            w_up2: vec![0.0; lens[14]],
            params,
            shards,
            g_conv1,
            g_conv2,
            g_up1,
            g_up2,
            g_out,
        }
    }

    /// The gradients of the last forward_backward (the two halves' summed into a copy).
    pub fn grads(&self) -> Vec<Vec<f32>> {
        super::host::summed_grads(&self.shards[0].grads, &self.shards[1].grads)
    }

    /// Loss sums and gradients of a batch, as [`super::vae::host_network::HostNetworkVae::forward_backward`].
    pub fn forward_backward(
        &mut self,
        x: &[f32],
        eps: &[f32],
        likelihood: Likelihood,
    ) -> ([f64; 2], bool) {
        let l = self.latent;
        to_tap_major(&self.params[2], C1, &mut self.w_conv2);
        to_tap_major(&self.params[12], C2, &mut self.w_up1);
        to_tap_major(&self.params[14], C1, &mut self.w_up2);
        let net = ConvNet {
            latent: l,
            hidden: self.hidden,
            p: &self.params,
            w_conv2: &self.w_conv2,
            w_up1: &self.w_up1,
            w_up2: &self.w_up2,
            geoms: [
                self.g_conv1,
                self.g_conv2,
                self.g_up1,
                self.g_up2,
                self.g_out,
            ],
        };
        super::host::in_halves(
            &mut self.shards,
            x,
            eps,
            l,
            |half| &mut half.grads,
            |half, x, eps, scale| half.forward_backward(&net, x, eps, scale, likelihood),
        )
    }

    pub fn apply(&mut self) {
        let (g0, g1) = (&self.shards[0].grads, &self.shards[1].grads);
        self.opt.update_sum(&mut self.params, g0, g1);
    }
}

impl ConvShard {
    /// Loss sums and gradients of the rows `x` (noise `eps`), every gradient
    /// scaled by `scale` (1 / the whole batch's rows).
    fn forward_backward(
        &mut self,
        net: &ConvNet<'_>,
        x: &[f32],
        eps: &[f32],
        scale: f32,
        likelihood: Likelihood,
    ) -> [f64; 2] {
        use super::host::{bernoulli_grad, sigmoid_mse_grad};
        let (l, h) = (net.latent, net.hidden);
        let b = x.len() / PIXELS;
        let p = net.p;
        let g = &mut self.grads;
        if b == 0 {
            for gi in g.iter_mut() {
                gi.fill(0.0);
            }
            return [0.0, 0.0];
        }
        let [gc1, gc2, gu1, gu2, go] = net.geoms;

        // Encoder: x (28x28x1, channels last = as stored) -> conv1 -> conv2.
        gc1.im2col(x, &mut self.cols1, b);
        let r1 = b * gc1.rows();
        matmul(
            &mut self.a1[..r1 * C1],
            &self.cols1[..r1 * 9],
            &p[0],
            (r1, 9, C1),
            false,
            true,
            0.0,
            1.0,
        );
        add_bias_relu(&mut self.a1[..r1 * C1], &p[1]);
        gc2.im2col(&self.a1, &mut self.cols2, b);
        let r2 = b * gc2.rows();
        matmul(
            &mut self.a2[..r2 * C2],
            &self.cols2[..r2 * C1 * 9],
            net.w_conv2,
            (r2, C1 * 9, C2),
            false,
            true,
            0.0,
            1.0,
        );
        add_bias_relu(&mut self.a2[..r2 * C2], &p[3]);
        // Flatten in (c, h, w) order, as burn's NCHW reshape.
        permute(&self.a2, &mut self.flat, b, C2, S7 * S7, true);
        let hid = &mut self.hid[..b * h];
        dense(hid, &self.flat, &p[4], b, FLAT, h);
        add_bias_relu(hid, &p[5]);
        let (mean, logvar) = (&mut self.mean[..b * l], &mut self.logvar[..b * l]);
        dense(mean, hid, &p[6], b, h, l);
        add_bias(mean, &p[7]);
        dense(logvar, hid, &p[8], b, h, l);
        add_bias(logvar, &p[9]);
        let (sd, z) = (&mut self.sd[..b * l], &mut self.z[..b * l]);
        let kl = super::host::reparameterize(mean, logvar, eps, sd, z);
        // Decoder: dense -> 7x7x64 -> up 14x14x64 -> up 28x28x32 -> 28x28x1.
        let dflat = &mut self.dflat[..b * FLAT];
        dense(dflat, z, &p[10], b, l, FLAT);
        add_bias_relu(dflat, &p[11]);
        permute(dflat, &mut self.d0, b, C2, S7 * S7, false);
        let ru1 = b * gu1.rows();
        matmul(
            &mut self.ucols1[..ru1 * C2 * 9],
            &self.d0[..ru1 * C2],
            net.w_up1,
            (ru1, C2, C2 * 9),
            false,
            false,
            0.0,
            1.0,
        );
        gu1.col2im(&self.ucols1, &mut self.u1, b);
        add_bias_relu(&mut self.u1[..b * gu1.img_len()], &p[13]);
        let ru2 = b * gu2.rows();
        matmul(
            &mut self.ucols2[..ru2 * C1 * 9],
            &self.u1[..ru2 * C2],
            net.w_up2,
            (ru2, C2, C1 * 9),
            false,
            false,
            0.0,
            1.0,
        );
        gu2.col2im(&self.ucols2, &mut self.u2, b);
        add_bias_relu(&mut self.u2[..b * gu2.img_len()], &p[15]);
        let ro = b * go.rows();
        matmul(
            &mut self.ucols3[..ro * 9],
            &self.u2[..ro * C1],
            &p[16],
            (ro, C1, 9),
            false,
            false,
            0.0,
            1.0,
        );
        go.col2im(&self.ucols3, &mut self.logits, b);
        let logits = &mut self.logits[..b * PIXELS];
        add_bias(logits, &p[17]);
        let recon = match likelihood {
            Likelihood::Mse => sigmoid_mse_grad(logits, x, scale),
            Likelihood::Bernoulli => bernoulli_grad(logits, x, scale),
        } as f64;
        let d_logits = &self.logits[..b * PIXELS];

        // Backward through the transposed convolutions (their image side is their output).
        let dcols = &mut self.dcols_big;
        {
            let (gw, gb) = g[16..].split_at_mut(1);
            let du2 = Some(&mut self.du2[..ro * C1]);
            conv_transpose_backward(
                &go, b, &self.u2, d_logits, &p[16], &mut gw[0], &mut gb[0], dcols, du2,
            );
        }
        relu_backward(&mut self.du2[..ro * C1], &self.u2[..ro * C1]);
        {
            let gw = &mut self.g_taps[..p[14].len()];
            let du1 = Some(&mut self.du1[..ru2 * C2]);
            conv_transpose_backward(
                &gu2, b, &self.u1, &self.du2, net.w_up2, gw, &mut g[15], dcols, du1,
            );
            from_tap_major(gw, C1, &mut g[14]);
        }
        relu_backward(&mut self.du1[..ru2 * C2], &self.u1[..ru2 * C2]);
        {
            let gw = &mut self.g_taps[..p[12].len()];
            let dd0 = Some(&mut self.dd0[..ru1 * C2]);
            conv_transpose_backward(
                &gu1, b, &self.d0, &self.du1, net.w_up1, gw, &mut g[13], dcols, dd0,
            );
            from_tap_major(gw, C2, &mut g[12]);
        }
        // Back to (c, h, w) order, through the decoder's dense layer.
        permute(&self.dd0, &mut self.ddflat, b, C2, S7 * S7, true);
        relu_backward(&mut self.ddflat[..b * FLAT], &self.dflat[..b * FLAT]);
        {
            let (gw, gb) = g[10..].split_at_mut(1);
            dense_backward(
                &self.z,
                &p[10],
                &self.ddflat,
                (b, l, FLAT),
                &mut gw[0],
                &mut gb[0],
                Some(&mut self.dz),
                false,
            );
        }
        crate::models::host::reparameterize_backward(
            &self.dz[..b * l],
            (&self.mean[..b * l], eps, &self.sd[..b * l]),
            scale,
            &mut self.dmean[..b * l],
            &mut self.dlogvar[..b * l],
        );
        {
            let (gw, gb) = g[6..].split_at_mut(1);
            dense_backward(
                &self.hid,
                &p[6],
                &self.dmean,
                (b, h, l),
                &mut gw[0],
                &mut gb[0],
                Some(&mut self.dhid),
                false,
            );
            let (gw, gb) = g[8..].split_at_mut(1);
            dense_backward(
                &self.hid,
                &p[8],
                &self.dlogvar,
                (b, h, l),
                &mut gw[0],
                &mut gb[0],
                Some(&mut self.dhid),
                true,
            );
        }
        relu_backward(&mut self.dhid[..b * h], &self.hid[..b * h]);
        {
            let (gw, gb) = g[4..].split_at_mut(1);
            dense_backward(
                &self.flat,
                &p[4],
                &self.dhid,
                (b, FLAT, h),
                &mut gw[0],
                &mut gb[0],
                Some(&mut self.dflat_enc),
                false,
            );
        }
        permute(&self.dflat_enc, &mut self.da2, b, C2, S7 * S7, false);
        relu_backward(&mut self.da2[..r2 * C2], &self.a2[..r2 * C2]);
        {
            let gw = &mut self.g_taps[..p[2].len()];
            conv_backward(
                &gc2,
                b,
                &self.cols2,
                &self.da2,
                net.w_conv2,
                gw,
                &mut g[3],
                dcols,
                Some(&mut self.da1),
            );
            from_tap_major(gw, C1, &mut g[2]);
        }
        relu_backward(&mut self.da1[..r1 * C1], &self.a1[..r1 * C1]);
        // conv1: weights only (the input needs no gradient).
        let (gw, gb) = g.split_at_mut(1);
        conv_backward(
            &gc1,
            b,
            &self.cols1,
            &self.da1,
            &p[0],
            &mut gw[0],
            &mut gb[0],
            dcols,
            None,
        );

        [recon, kl]
    }
}

/// Decoder logits (rows of 784) for latent rows `z` with the conv VAE's
/// parameters `params` (all of them, in spec order), on host buffers.
pub fn decode_logits(params: &[Vec<f32>], latent: usize, z: &[f32]) -> Vec<f32> {
    let p = params;
    let n_all = z.len() / latent;
    let mut out = vec![0.0f32; n_all * PIXELS];
    let geom = |img: usize, channels: usize, grid: usize, stride: usize, pad: usize| Geom {
        img_h: img,
        img_w: img,
        channels,
        grid_h: grid,
        grid_w: grid,
        stride,
        pad,
        tap_major: false,
    };
    let (gu1, gu2, go) = (
        geom(14, C2, 7, 2, 0),
        geom(28, C1, 14, 2, 0),
        geom(28, 1, 28, 1, 1),
    );
    const CHUNK: usize = 256;
    let mut dflat = vec![0.0f32; CHUNK * FLAT];
    let mut d0 = vec![0.0f32; CHUNK * FLAT];
    let mut cols = vec![0.0f32; CHUNK * gu2.rows() * C1 * 9];
    let mut u1 = vec![0.0f32; CHUNK * gu1.img_len()];
    let mut u2 = vec![0.0f32; CHUNK * gu2.img_len()];
    for (zc, oc) in z.chunks(CHUNK * latent).zip(out.chunks_mut(CHUNK * PIXELS)) {
        let n = zc.len() / latent;
        dense(&mut dflat, zc, &p[10], n, latent, FLAT);
        add_bias_relu(&mut dflat[..n * FLAT], &p[11]);
        permute(&dflat, &mut d0, n, C2, S7 * S7, false);
        let r1 = n * gu1.rows();
        matmul(
            &mut cols[..r1 * C2 * 9],
            &d0[..r1 * C2],
            &p[12],
            (r1, C2, C2 * 9),
            false,
            false,
            0.0,
            1.0,
        );
        gu1.col2im(&cols, &mut u1, n);
        add_bias_relu(&mut u1[..n * gu1.img_len()], &p[13]);
        let r2 = n * gu2.rows();
        matmul(
            &mut cols[..r2 * C1 * 9],
            &u1[..r2 * C2],
            &p[14],
            (r2, C2, C1 * 9),
            false,
            false,
            0.0,
            1.0,
        );
        gu2.col2im(&cols, &mut u2, n);
        add_bias_relu(&mut u2[..n * gu2.img_len()], &p[15]);
        let r3 = n * go.rows();
        matmul(
            &mut cols[..r3 * 9],
            &u2[..r3 * C1],
            &p[16],
            (r3, C1, 9),
            false,
            false,
            0.0,
            1.0,
        );
        go.col2im(&cols, oc, n);
        add_bias(&mut oc[..n * PIXELS], &p[17]);
    }
    out
}
