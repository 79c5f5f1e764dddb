//! The host executor's pointwise passes: a dense or convolution pass's
//! bias, activation and dropout forward and their derivative backward, max
//! pooling, and elementwise maps. They read no network: the executor in
//! [`super::host`] picks the pass and hands them its buffers.

/// The activation a dense or convolution pass applies after its bias.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Activation {
    Identity,
    Relu,
    LeakyRelu(f32),
    Tanh,
    Sigmoid,
}

crate::simd_fn! {
    /// Max pooling of a batch of images in the executor's layout
    /// (channels-last, which for one channel is burn's), `[c, h, w]` in and
    /// `[oh, ow]` out per channel, recording each output's winner (its index
    /// in the example's input; the first of equal values).
    pub(super) fn max_pool(input: &[f32], out: &mut [f32], winners: &mut [u32], dims: [usize; 5], size: [usize; 2]) {
        let [c, h, w, oh, ow] = dims;
        let [sh, sw] = size;
        for ((x_r, y_r), w_r) in input
            .chunks_exact(c * h * w)
            .zip(out.chunks_exact_mut(c * oh * ow))
            .zip(winners.chunks_exact_mut(c * oh * ow))
        {
            for oy in 0..oh {
                for ox in 0..ow {
                    // The window's positions in order, each a run of channels
                    // compared as one (branch-free, so the compiler vectorises
                    // it); the first of equal values wins.
                    let o = (oy * ow + ox) * c;
                    let (best, win) = (&mut y_r[o..o + c], &mut w_r[o..o + c]);
                    let first = (oy * sh * w + ox * sw) * c;
                    for (ch, (b, i)) in best.iter_mut().zip(win.iter_mut()).enumerate() {
                        *b = x_r[first + ch];
                        *i = (first + ch) as u32;
                    }
                    for dy in 0..sh {
                        for dx in 0..sw {
                            let at = ((oy * sh + dy) * w + ox * sw + dx) * c;
                            let run = &x_r[at..at + c];
                            for (ch, ((b, i), &v)) in best.iter_mut().zip(win.iter_mut()).zip(run).enumerate() {
                                let gt = v > *b;
                                *b = if gt { v } else { *b };
                                *i = if gt { (at + ch) as u32 } else { *i };
                            }
                        }
                    }
                }
            }
        }
    }
}

crate::simd_fn! {
    /// In place over rows of `n = bias.len()`: `x = activation(x + bias)`,
    /// times the dropout mask when one is given.
    pub(super) fn bias_activation(x: &mut [f32], bias: &[f32], activation: Activation, mask: &[f32]) {
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
    pub(super) fn activation_backward(d: &mut [f32], y: &[f32], activation: Activation, mask: &[f32]) {
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

pub(super) fn map(out: &mut [f32], input: &[f32], f: impl Fn(f32) -> f32) {
    for (y, &v) in out.iter_mut().zip(input) {
        *y = f(v);
    }
}

pub(super) fn zip_map(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}
