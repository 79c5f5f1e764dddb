//! The evaluator's convolution kernels: 3x3 convolutions as patch
//! matrices (im2col) and matrix products over a batch of channels-last
//! images, patch columns in burn's (channel, kh, kw) order. They stay apart
//! from nn's executor, whose patches are tap-major, because the shipped
//! evaluator weights and every figure computed with them were made with
//! this order of sums.

use rayon::prelude::*;

use crate::cpu::{column_sums, matmul};

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

    /// Patch matrix: `cols[(b, i, j), c * 9 + kh * 3 + kw] = image[b, y, x, c]`.
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
                                match src {
                                    Some(src) => {
                                        for (c, &v) in src.iter().enumerate() {
                                            row[c * 9 + tap] = v;
                                        }
                                    }
                                    None => {
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
                                for (c, d) in dst.iter_mut().enumerate() {
                                    *d += row[c * 9 + tap];
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
