//! 2-D convolutions and transposed convolutions of any kernel size, stride
//! and padding: their geometry, and the patch matrices (im2col) and layout
//! changes the host executor runs them with.
//!
//! Examples are channels-first, row-major `(c, h, w)`, as in burn and
//! PyTorch. Weights are `[filters, channels, kh, kw]` for a convolution and
//! `[channels, filters, kh, kw]` for a transposed one (burn's layouts).

use serde::{Deserialize, Serialize};

use rayon::prelude::*;

/// How a layer pads (a convolution) or crops (a transposed convolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Padding {
    /// Keras/TensorFlow 'same': output = ceil(input / stride) (convolution)
    /// or input * stride (transposed); an odd total goes at the end.
    Same,
    /// No padding.
    Valid,
    /// `[[top, bottom], [left, right]]`.
    Explicit([[usize; 2]; 2]),
}

/// The geometry of one convolution: the image side (a convolution's input,
/// a transposed convolution's output), the grid of kernel positions (the
/// other side), and the padding of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub channels: usize,
    pub image: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Rows and columns of zeros before the image (top, left).
    pub pad: [usize; 2],
    pub grid: [usize; 2],
}

impl Geometry {
    /// A convolution over an input of `channels` x `image`; None if the
    /// kernel does not fit.
    pub fn conv(
        channels: usize,
        image: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    ) -> Option<Geometry> {
        let mut pad = [0; 2];
        let mut grid = [0; 2];
        for d in 0..2 {
            let (begin, end) = match padding {
                Padding::Valid => (0, 0),
                Padding::Explicit(p) => (p[d][0], p[d][1]),
                Padding::Same => {
                    let out = image[d].div_ceil(stride[d]);
                    let total = ((out - 1) * stride[d] + kernel[d]).saturating_sub(image[d]);
                    (total / 2, total - total / 2)
                }
            };
            let padded = image[d] + begin + end;
            if padded < kernel[d] || stride[d] == 0 {
                return None;
            }
            pad[d] = begin;
            grid[d] = (padded - kernel[d]) / stride[d] + 1;
        }
        Some(Geometry {
            channels,
            image,
            kernel,
            stride,
            pad,
            grid,
        })
    }

    /// A transposed convolution whose input grid is `grid` and whose output
    /// has `channels` channels; None if the crop leaves nothing.
    pub fn transposed(
        channels: usize,
        grid: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    ) -> Option<Geometry> {
        let mut pad = [0; 2];
        let mut image = [0; 2];
        for d in 0..2 {
            if stride[d] == 0 {
                return None;
            }
            let full = (grid[d] - 1) * stride[d] + kernel[d];
            let (begin, end) = match padding {
                Padding::Valid => (0, 0),
                Padding::Explicit(p) => (p[d][0], p[d][1]),
                Padding::Same => {
                    let total = full.saturating_sub(grid[d] * stride[d]);
                    (total / 2, total - total / 2)
                }
            };
            if begin + end >= full {
                return None;
            }
            pad[d] = begin;
            image[d] = full - begin - end;
        }
        Some(Geometry {
            channels,
            image,
            kernel,
            stride,
            pad,
            grid,
        })
    }

    /// Kernel positions (rows of a patch matrix).
    pub fn positions(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    /// Values of one patch (columns of a patch matrix): channels x kernel.
    pub fn patch(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// Values of one image (the image side).
    pub fn image_len(&self) -> usize {
        self.channels * self.image[0] * self.image[1]
    }

    /// For each grid column `gx`: the kernel columns `j` whose taps fall
    /// inside the image, as `lo..hi`, and the image column of tap `lo`
    /// (0 when none is inside).
    /// Inside a kernel row those taps read one run of `(hi - lo) * channels`
    /// consecutive channels-last values.
    fn column_spans(&self) -> Vec<(std::ops::Range<usize>, usize)> {
        let (kw, w) = (self.kernel[1] as isize, self.image[1] as isize);
        (0..self.grid[1])
            .map(|gx| {
                let x0 = (gx * self.stride[1]) as isize - self.pad[1] as isize;
                let lo = (-x0).clamp(0, kw);
                let hi = (w - x0).clamp(lo, kw);
                // An empty span (a padding wider than the kernel) reads nothing.
                let x = if lo < hi { (x0 + lo) as usize } else { 0 };
                (lo as usize..hi as usize, x)
            })
            .collect()
    }

    /// The patch matrices of `batch` channels-last images: one row per
    /// (example, kernel position), columns in tap-major order (tap, channel),
    /// zero where a tap falls outside the image. A kernel row's taps inside
    /// the image are one contiguous run on both sides, copied at once.
    pub fn im2col_rows(&self, images: &[f32], cols: &mut [f32], batch: usize) {
        let (per_image, per_cols) = (self.image_len(), self.positions() * self.patch());
        let (ch, q) = (self.channels, self.patch());
        let ([kh, kw], [h, w]) = (self.kernel, self.image);
        let spans = self.column_spans();
        let run = kw * ch;
        cols[..batch * per_cols]
            .par_chunks_mut(per_cols)
            .zip(images[..batch * per_image].par_chunks(per_image))
            .for_each(|(out, img)| {
                for (gy, rows) in out.chunks_exact_mut(self.grid[1] * q).enumerate() {
                    for i in 0..kh {
                        let y = (gy * self.stride[0] + i).wrapping_sub(self.pad[0]);
                        for (row, (inside, x)) in rows.chunks_exact_mut(q).zip(&spans) {
                            let taps = &mut row[i * run..][..run];
                            if y >= h {
                                zero_run(taps);
                                continue;
                            }
                            let (before, rest) = taps.split_at_mut(inside.start * ch);
                            let (values, after) = rest.split_at_mut(inside.len() * ch);
                            zero_run(before);
                            zero_run(after);
                            copy_run(values, &img[(y * w + x) * ch..][..values.len()]);
                        }
                    }
                }
            });
    }

    /// The adjoint of [`Geometry::im2col_rows`]: each image is overwritten
    /// with the sum of the patch entries that read each of its values, in
    /// the order of the kernel positions (an image row is reached from a
    /// grid row by one kernel row only, and a position's taps read distinct
    /// values, so adding a kernel row's run at once keeps that order).
    pub fn col2im_rows(&self, cols: &[f32], images: &mut [f32], batch: usize) {
        let (per_image, per_cols) = (self.image_len(), self.positions() * self.patch());
        let (ch, q) = (self.channels, self.patch());
        let ([kh, kw], [h, w]) = (self.kernel, self.image);
        let spans = self.column_spans();
        let run = kw * ch;
        images[..batch * per_image]
            .par_chunks_mut(per_image)
            .zip(cols[..batch * per_cols].par_chunks(per_cols))
            .for_each(|(img, src)| {
                img.fill(0.0);
                for (gy, rows) in src.chunks_exact(self.grid[1] * q).enumerate() {
                    for i in 0..kh {
                        let y = (gy * self.stride[0] + i).wrapping_sub(self.pad[0]);
                        if y >= h {
                            continue;
                        }
                        for (row, (inside, x)) in rows.chunks_exact(q).zip(&spans) {
                            let values = &row[i * run..][inside.start * ch..inside.end * ch];
                            add_run(&mut img[(y * w + x) * ch..][..values.len()], values);
                        }
                    }
                }
            });
    }
}

/// Copies a run of patch values. Runs are short (one to a few hundred
/// values, once per kernel row and position), where a call to memcpy costs
/// more than the copy: runs under 8 (one channel) go value by value, longer
/// ones in fixed blocks of 8, copied inline.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    if src.len() < 8 {
        for (a, b) in dst.iter_mut().zip(src) {
            *a = *b;
        }
        return;
    }
    let (mut d, mut s) = (dst.chunks_exact_mut(8), src.chunks_exact(8));
    for (a, b) in (&mut d).zip(&mut s) {
        let a: &mut [f32; 8] = a.try_into().expect("blocks of 8");
        let b: &[f32; 8] = b.try_into().expect("blocks of 8");
        *a = *b;
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = *b;
    }
}

/// Zeroes a run of patch values (see [`copy_run`]).
#[inline(always)]
fn zero_run(dst: &mut [f32]) {
    if dst.len() < 8 {
        for a in dst {
            *a = 0.0;
        }
        return;
    }
    let mut d = dst.chunks_exact_mut(8);
    for a in &mut d {
        let a: &mut [f32; 8] = a.try_into().expect("blocks of 8");
        *a = [0.0; 8];
    }
    for a in d.into_remainder() {
        *a = 0.0;
    }
}

/// Adds a run of patch values into an image: short runs (one channel)
/// one value at a time, longer ones in a loop the compiler vectorises.
#[inline(always)]
fn add_run(dst: &mut [f32], src: &[f32]) {
    if src.len() < 8 {
        for (d, v) in dst.iter_mut().zip(src) {
            *d += v;
        }
        return;
    }
    for (d, v) in dst.iter_mut().zip(src) {
        *d += v;
    }
}

/// A convolution's weights, rows of `(channel, tap)` in burn's order, as
/// rows of `(tap, channel)` (the patch columns' order) in `buf`; the
/// weights themselves where there is one channel and both orders agree.
pub fn tap_major<'a>(w: &'a [f32], g: &Geometry, buf: &'a mut Vec<f32>) -> &'a [f32] {
    let (c, taps) = (g.channels, g.kernel[0] * g.kernel[1]);
    if c == 1 {
        return w;
    }
    buf.resize(w.len(), 0.0);
    to_channels_last(w, buf, w.len() / (c * taps), c, taps);
    buf
}

/// The inverse of [`tap_major`], into `out`.
pub fn from_tap_major(w: &[f32], g: &Geometry, out: &mut [f32]) {
    let (c, taps) = (g.channels, g.kernel[0] * g.kernel[1]);
    to_channels_first(w, out, out.len() / (c * taps), c, taps);
}

/// `batch` blocks of `rows x cols` values, each transposed.
fn transpose_blocks(src: &[f32], dst: &mut [f32], batch: usize, rows: usize, cols: usize) {
    for (s, d) in src
        .chunks_exact(rows * cols)
        .zip(dst.chunks_exact_mut(rows * cols))
        .take(batch)
    {
        for r in 0..rows {
            for c in 0..cols {
                d[c * rows + r] = s[r * cols + c];
            }
        }
    }
}

/// `batch` examples of `c x p` (channels first) into `p x c` (channels last).
pub fn to_channels_last(src: &[f32], dst: &mut [f32], batch: usize, c: usize, p: usize) {
    transpose_blocks(src, dst, batch, c, p);
}

/// The inverse of [`to_channels_last`].
pub fn to_channels_first(src: &[f32], dst: &mut [f32], batch: usize, c: usize, p: usize) {
    transpose_blocks(src, dst, batch, p, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_follows_keras() {
        // Stride 2 on 28: 14 positions, the odd padding row at the end.
        let g = Geometry::conv(1, [28, 28], [3, 3], [2, 2], Padding::Same).unwrap();
        assert_eq!((g.grid, g.pad), ([14, 14], [0, 0]));
        let g = Geometry::conv(1, [28, 28], [5, 5], [1, 1], Padding::Same).unwrap();
        assert_eq!((g.grid, g.pad), ([28, 28], [2, 2]));
        // Transposed, stride 2: 7 -> 14, cropping the extra row at the end.
        let g = Geometry::transposed(64, [7, 7], [3, 3], [2, 2], Padding::Same).unwrap();
        assert_eq!((g.image, g.pad), ([14, 14], [0, 0]));
        assert!(Geometry::conv(1, [2, 2], [3, 3], [1, 1], Padding::Valid).is_none());
    }
}
