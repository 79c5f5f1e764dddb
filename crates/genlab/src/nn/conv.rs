//! 2-D convolutions and transposed convolutions of any kernel size, stride
//! and padding: their geometry, and their forward and backward passes on
//! host buffers through patch matrices (im2col) and matrix products.
//!
//! Examples are channels-first, row-major `(c, h, w)`, as in burn and
//! PyTorch. Weights are `[filters, channels, kh, kw]` for a convolution and
//! `[channels, filters, kh, kw]` for a transposed one (burn's layouts).

use serde::{Deserialize, Serialize};

use crate::cpu::matmul;

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

    /// Calls `f(position, patch column, image index)` for every tap that
    /// lands inside the image.
    fn taps(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [kh, kw] = self.kernel;
        let [h, w] = self.image;
        for gy in 0..self.grid[0] {
            for gx in 0..self.grid[1] {
                let p = gy * self.grid[1] + gx;
                for c in 0..self.channels {
                    for i in 0..kh {
                        let y = (gy * self.stride[0] + i).wrapping_sub(self.pad[0]);
                        if y >= h {
                            continue;
                        }
                        for j in 0..kw {
                            let x = (gx * self.stride[1] + j).wrapping_sub(self.pad[1]);
                            if x < w {
                                f(p, (c * kh + i) * kw + j, (c * h + y) * w + x);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The patch matrix (positions x patch) of one image.
    pub fn im2col(&self, image: &[f32], cols: &mut [f32]) {
        cols.fill(0.0);
        let q = self.patch();
        self.taps(|p, k, i| cols[p * q + k] = image[i]);
    }

    /// Adds a patch matrix back onto one image (the adjoint of im2col).
    pub fn col2im_add(&self, cols: &[f32], image: &mut [f32]) {
        let q = self.patch();
        self.taps(|p, k, i| image[i] += cols[p * q + k]);
    }
}

/// A convolution's output for one example: `out (filters x positions) =
/// W (filters x patch) @ cols' + b`.
pub fn conv_forward(
    g: &Geometry,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    cols: &mut [f32],
    out: &mut [f32],
) {
    let (f, q, p) = (b.len(), g.patch(), g.positions());
    g.im2col(x, cols);
    matmul(out, w, cols, (f, q, p), false, true, 0.0, 1.0);
    for (row, bias) in out.chunks_exact_mut(p).zip(b) {
        row.iter_mut().for_each(|v| *v += bias);
    }
}

/// A convolution's gradients for one example (`cols` from its forward):
/// adds into `gw` and `gb`, and writes `dx` when given.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward(
    g: &Geometry,
    w: &[f32],
    cols: &[f32],
    dy: &[f32],
    gw: &mut [f32],
    gb: &mut [f32],
    dcols: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let (f, q, p) = (gb.len(), g.patch(), g.positions());
    matmul(gw, dy, cols, (f, p, q), false, false, 1.0, 1.0);
    for (row, gbias) in dy.chunks_exact(p).zip(gb.iter_mut()) {
        *gbias += row.iter().sum::<f32>();
    }
    if let Some(dx) = dx {
        matmul(dcols, dy, w, (p, f, q), true, false, 0.0, 1.0);
        dx.fill(0.0);
        g.col2im_add(dcols, dx);
    }
}

/// A transposed convolution's output for one example: the patch matrix
/// `cols (positions x patch) = x' (positions x channels_in) @ W`, added
/// onto the output image, plus the bias per channel.
pub fn transposed_forward(
    g: &Geometry,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    cols: &mut [f32],
    out: &mut [f32],
) {
    let (cin, q, p) = (x.len() / g.positions(), g.patch(), g.positions());
    matmul(cols, x, w, (p, cin, q), true, false, 0.0, 1.0);
    out.fill(0.0);
    g.col2im_add(cols, out);
    let plane = g.image[0] * g.image[1];
    for (chan, bias) in out.chunks_exact_mut(plane).zip(b) {
        chan.iter_mut().for_each(|v| *v += bias);
    }
}

/// A transposed convolution's gradients for one example: adds into `gw`
/// and `gb`, and writes `dx` when given.
#[allow(clippy::too_many_arguments)]
pub fn transposed_backward(
    g: &Geometry,
    w: &[f32],
    x: &[f32],
    dy: &[f32],
    gw: &mut [f32],
    gb: &mut [f32],
    dcols: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let (cin, q, p) = (x.len() / g.positions(), g.patch(), g.positions());
    g.im2col(dy, dcols);
    matmul(gw, x, dcols, (cin, p, q), false, false, 1.0, 1.0);
    let plane = g.image[0] * g.image[1];
    for (chan, gbias) in dy.chunks_exact(plane).zip(gb.iter_mut()) {
        *gbias += chan.iter().sum::<f32>();
    }
    if let Some(dx) = dx {
        matmul(dx, w, dcols, (cin, q, p), false, true, 0.0, 1.0);
    }
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
