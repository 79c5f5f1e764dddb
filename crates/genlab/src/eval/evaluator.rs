//! The evaluator network: a small CNN classifier whose
//! penultimate layer gives the features for FID, KID and precision/recall,
//! and whose class probabilities give the Inception Score and class coverage.
//! Trained by genlab with a fixed recipe and seed on a dataset's training
//! set (`genlab evaluator train`), on host buffers (`evaluator_conv.rs`).
//!
//! Architecture (LeNet-like): conv 3x3 'same' 1 -> 16, relu, 2x2 max-pool
//! (28 -> 14); conv 3x3 'same' 16 -> 32, relu, 2x2 max-pool (14 -> 7);
//! flatten (c, h, w) 1568 -> dense 64 (relu; the features) -> dense 10 (logits). 105,866 parameters (0.42 MB
//! of f32). Tensor names: `conv1.weight` `[16, 1, 3, 3]`, `conv1.bias`,
//! `conv2.weight` `[32, 16, 3, 3]`, `conv2.bias`, `features.weight`
//! `[1568, 64]`, `features.bias`, `classes.weight` `[64, 10]`,
//! `classes.bias` (dense kernels `[in, out]`).

use anyhow::{Result, bail};
use rand::RngExt;

use super::evaluator_conv::{Geom, conv_backward, permute};
use crate::cpu::matmul;
use crate::data::batches::fill_batch;
use crate::data::{EpochOrder, PIXELS, PixelView, Split};
use crate::models::host::{
    HostOptimizer, add_bias, add_bias_relu, dense, dense_backward, relu_backward,
};
use crate::models::optim::Rule;
use crate::rng::{GenRng, Purpose, stream};
use crate::run::{Checkpoint, TensorData};

pub const C1: usize = 16;
pub const C2: usize = 32;
const S7: usize = 7;
pub const FLAT: usize = C2 * S7 * S7;
pub const FEATURES: usize = 64;
pub const CLASSES: usize = 10;

/// Names and shapes of the parameters, in order.
pub fn specs() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("conv1.weight", vec![C1, 1, 3, 3]),
        ("conv1.bias", vec![C1]),
        ("conv2.weight", vec![C2, C1, 3, 3]),
        ("conv2.bias", vec![C2]),
        ("features.weight", vec![FLAT, FEATURES]),
        ("features.bias", vec![FEATURES]),
        ("classes.weight", vec![FEATURES, CLASSES]),
        ("classes.bias", vec![CLASSES]),
    ]
}

/// The training recipe (fixed: the shipped weights must be reproducible).
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// The learning rate is multiplied by 0.3 after this many epochs, and
    /// again after `epochs - 1` (a short anneal steadies the last epochs).
    pub decay_after: usize,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            seed: 0,
            epochs: 10,
            batch_size: 128,
            lr: 1e-3,
            decay_after: 6,
        }
    }
}

/// The network with buffers for batches of up to `rows` images.
pub struct Evaluator {
    pub params: Vec<Vec<f32>>,
    rows: usize,
    g1: Geom,
    g2: Geom,
    cols1: Vec<f32>,
    a1: Vec<f32>,
    p1: Vec<f32>,
    arg1: Vec<u8>,
    cols2: Vec<f32>,
    a2: Vec<f32>,
    p2: Vec<f32>,
    arg2: Vec<u8>,
    flat: Vec<f32>,
    feat: Vec<f32>,
    logits: Vec<f32>,
    // Gradients.
    grads: Vec<Vec<f32>>,
    dfeat: Vec<f32>,
    dflat: Vec<f32>,
    dp2: Vec<f32>,
    da2: Vec<f32>,
    dcols: Vec<f32>,
    dp1: Vec<f32>,
    da1: Vec<f32>,
}

/// 2x2 max-pooling of `b` channels-last `h x w x c` images; records which
/// of the four inputs won (for the backward pass).
fn max_pool(
    x: &[f32],
    out: &mut [f32],
    arg: &mut [u8],
    b: usize,
    (h, w, c): (usize, usize, usize),
) {
    let (oh, ow) = (h / 2, w / 2);
    for bi in 0..b {
        let img = &x[bi * h * w * c..][..h * w * c];
        for i in 0..oh {
            for j in 0..ow {
                let o = ((bi * oh + i) * ow + j) * c;
                for ch in 0..c {
                    let mut best = (f32::NEG_INFINITY, 0u8);
                    for (k, (di, dj)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                        let v = img[((2 * i + di) * w + 2 * j + dj) * c + ch];
                        if v > best.0 {
                            best = (v, k as u8);
                        }
                    }
                    out[o + ch] = best.0;
                    arg[o + ch] = best.1;
                }
            }
        }
    }
}

/// The adjoint of [`max_pool`]: each output gradient goes to its winner.
fn max_unpool(
    d_out: &[f32],
    arg: &[u8],
    dx: &mut [f32],
    b: usize,
    (h, w, c): (usize, usize, usize),
) {
    let (oh, ow) = (h / 2, w / 2);
    dx[..b * h * w * c].fill(0.0);
    for bi in 0..b {
        for i in 0..oh {
            for j in 0..ow {
                let o = ((bi * oh + i) * ow + j) * c;
                for ch in 0..c {
                    let k = arg[o + ch] as usize;
                    let (di, dj) = (k / 2, k % 2);
                    dx[((bi * h + 2 * i + di) * w + 2 * j + dj) * c + ch] = d_out[o + ch];
                }
            }
        }
    }
}

impl Evaluator {
    pub fn from_params(params: Vec<Vec<f32>>, rows: usize) -> Self {
        let g1 = Geom {
            img_h: 28,
            img_w: 28,
            channels: 1,
            grid_h: 28,
            grid_w: 28,
            stride: 1,
            pad: 1,
        };
        let g2 = Geom {
            img_h: 14,
            img_w: 14,
            channels: C1,
            grid_h: 14,
            grid_w: 14,
            stride: 1,
            pad: 1,
        };
        let z = |n: usize| vec![0.0f32; rows * n];
        let grads = params.iter().map(|p| vec![0.0; p.len()]).collect();
        Evaluator {
            rows,
            cols1: z(784 * 9),
            a1: z(784 * C1),
            p1: z(196 * C1),
            arg1: vec![0u8; rows * 196 * C1],
            cols2: z(196 * C1 * 9),
            a2: z(196 * C2),
            p2: z(FLAT),
            arg2: vec![0u8; rows * FLAT],
            flat: z(FLAT),
            feat: z(FEATURES),
            logits: z(CLASSES),
            dfeat: z(FEATURES),
            dflat: z(FLAT),
            dp2: z(FLAT),
            da2: z(196 * C2),
            dcols: z(196 * C1 * 9),
            dp1: z(196 * C1),
            da1: z(784 * C1),
            grads,
            params,
            g1,
            g2,
        }
    }

    /// Glorot-uniform kernels, zero biases.
    pub fn init(rng: &mut GenRng, rows: usize) -> Self {
        let params = specs()
            .iter()
            .map(|(_, s)| {
                let n: usize = s.iter().product();
                if s.len() == 1 {
                    return vec![0.0; n];
                }
                let (fan_in, fan_out) = if s.len() == 4 {
                    (s[1] * 9, s[0] * 9)
                } else {
                    (s[0], s[1])
                };
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                (0..n).map(|_| rng.random_range(-limit..limit)).collect()
            })
            .collect();
        Evaluator::from_params(params, rows)
    }

    pub fn to_checkpoint(&self) -> Checkpoint {
        let mut ck = Checkpoint::default();
        for ((name, shape), p) in specs().into_iter().zip(&self.params) {
            ck.insert(name, TensorData::new(shape, p.clone()));
        }
        ck
    }

    pub fn from_checkpoint(ck: &Checkpoint, rows: usize) -> Result<Self> {
        let params = specs()
            .iter()
            .map(|(name, shape)| Ok(ck.tensor(name, shape)?.data.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Evaluator::from_params(params, rows))
    }

    /// Forward pass of up to `rows` images; fills the features and logits.
    fn forward(&mut self, x: &[f32]) -> usize {
        let b = x.len() / PIXELS;
        assert!(b <= self.rows);
        let p = &self.params;
        self.g1.im2col(x, &mut self.cols1, b);
        let r1 = b * 784;
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
        max_pool(&self.a1, &mut self.p1, &mut self.arg1, b, (28, 28, C1));
        self.g2.im2col(&self.p1, &mut self.cols2, b);
        let r2 = b * 196;
        matmul(
            &mut self.a2[..r2 * C2],
            &self.cols2[..r2 * C1 * 9],
            &p[2],
            (r2, C1 * 9, C2),
            false,
            true,
            0.0,
            1.0,
        );
        add_bias_relu(&mut self.a2[..r2 * C2], &p[3]);
        max_pool(&self.a2, &mut self.p2, &mut self.arg2, b, (14, 14, C2));
        permute(&self.p2, &mut self.flat, b, C2, S7 * S7, true);
        dense(&mut self.feat, &self.flat, &p[4], b, FLAT, FEATURES);
        add_bias_relu(&mut self.feat[..b * FEATURES], &p[5]);
        dense(&mut self.logits, &self.feat, &p[6], b, FEATURES, CLASSES);
        add_bias(&mut self.logits[..b * CLASSES], &p[7]);
        b
    }

    /// Penultimate-layer features (`n x 64`) and class probabilities
    /// (`n x 10`) of images `x` (pixel values in [0, 1]).
    pub fn features_and_probs(&mut self, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let n = x.len() / PIXELS;
        let (mut feats, mut probs) = (
            Vec::with_capacity(n * FEATURES),
            Vec::with_capacity(n * CLASSES),
        );
        for chunk in x.chunks(self.rows * PIXELS) {
            let b = self.forward(chunk);
            feats.extend_from_slice(&self.feat[..b * FEATURES]);
            for row in self.logits[..b * CLASSES].chunks_exact(CLASSES) {
                probs.extend(softmax(row));
            }
        }
        (feats, probs)
    }

    /// Fraction of a split's images classified correctly.
    pub fn accuracy(&mut self, split: &Split) -> f64 {
        let idx: Vec<usize> = (0..split.len()).collect();
        let mut x = Vec::new();
        fill_batch(
            split,
            &idx,
            PixelView::Unit,
            &mut stream(0, Purpose::Fixed, 0),
            &mut x,
        );
        let (_, probs) = self.features_and_probs(&x);
        let correct = probs
            .chunks_exact(CLASSES)
            .zip(&split.labels)
            .filter(|(p, l)| argmax(p) == **l as usize)
            .count();
        correct as f64 / split.len().max(1) as f64
    }

    /// One step of softmax cross-entropy (mean over the batch): returns the
    /// summed loss; gradients into `self.grads`.
    fn loss_and_grads(&mut self, x: &[f32], labels: &[u8]) -> f64 {
        let b = self.forward(x);
        let mut loss = 0.0f64;
        let inv = 1.0 / b as f32;
        for (r, row) in self.logits[..b * CLASSES]
            .chunks_exact_mut(CLASSES)
            .enumerate()
        {
            let p = softmax(row);
            let y = labels[r] as usize;
            loss -= (p[y].max(1e-30) as f64).ln();
            for (c, v) in row.iter_mut().enumerate() {
                *v = (p[c] - if c == y { 1.0 } else { 0.0 }) * inv;
            }
        }
        let p = &self.params;
        let g = &mut self.grads;
        {
            let (gw, gb) = g[6..].split_at_mut(1);
            dense_backward(
                &self.feat,
                &p[6],
                &self.logits,
                (b, FEATURES, CLASSES),
                &mut gw[0],
                &mut gb[0],
                Some(&mut self.dfeat),
                false,
            );
        }
        relu_backward(&mut self.dfeat[..b * FEATURES], &self.feat[..b * FEATURES]);
        {
            let (gw, gb) = g[4..].split_at_mut(1);
            dense_backward(
                &self.flat,
                &p[4],
                &self.dfeat,
                (b, FLAT, FEATURES),
                &mut gw[0],
                &mut gb[0],
                Some(&mut self.dflat),
                false,
            );
        }
        permute(&self.dflat, &mut self.dp2, b, C2, S7 * S7, false);
        max_unpool(&self.dp2, &self.arg2, &mut self.da2, b, (14, 14, C2));
        let (r1, r2) = (b * 784, b * 196);
        relu_backward(&mut self.da2[..r2 * C2], &self.a2[..r2 * C2]);
        {
            let (gw, gb) = g[2..].split_at_mut(1);
            let dp1 = Some(&mut self.dp1[..]);
            conv_backward(
                &self.g2,
                b,
                &self.cols2,
                &self.da2,
                &p[2],
                &mut gw[0],
                &mut gb[0],
                &mut self.dcols,
                dp1,
            );
        }
        max_unpool(&self.dp1, &self.arg1, &mut self.da1, b, (28, 28, C1));
        relu_backward(&mut self.da1[..r1 * C1], &self.a1[..r1 * C1]);
        let (gw, gb) = g.split_at_mut(1);
        conv_backward(
            &self.g1,
            b,
            &self.cols1,
            &self.da1,
            &p[0],
            &mut gw[0],
            &mut gb[0],
            &mut self.dcols,
            None,
        );
        loss
    }
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// What training reports per epoch.
#[derive(Debug, Clone)]
pub struct EpochReport {
    pub epoch: usize,
    pub loss: f64,
    pub test_accuracy: f64,
    pub seconds: f64,
}

/// Trains the evaluator on `train` with `recipe`, reporting each epoch's
/// mean loss and accuracy on `test` to `report`.
pub fn train(
    train: &Split,
    test: &Split,
    recipe: Recipe,
    mut report: impl FnMut(&EpochReport),
) -> Result<Evaluator> {
    if train.is_empty() {
        bail!("the evaluator needs training images");
    }
    let mut net = Evaluator::init(
        &mut stream(recipe.seed, Purpose::Init, 7),
        recipe.batch_size,
    );
    let sizes: Vec<usize> = net.params.iter().map(Vec::len).collect();
    let mut opt = HostOptimizer {
        rule: Rule::AdamTorch {
            lr: recipe.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        step: 0,
        first: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        second: sizes.iter().map(|&n| vec![0.0; n]).collect(),
    };
    let mut x = Vec::new();
    let mut no_rng = stream(recipe.seed, Purpose::Fixed, 7);
    for epoch in 1..=recipe.epochs {
        let decays = (epoch > recipe.decay_after) as i32
            + (epoch + 1 > recipe.epochs && recipe.epochs > 1) as i32;
        opt.rule = Rule::AdamTorch {
            lr: recipe.lr * 0.3f64.powi(decays),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let start = std::time::Instant::now();
        let order = EpochOrder::new(
            train.len(),
            recipe.batch_size,
            false,
            true,
            recipe.seed ^ 0xE7A1,
            epoch as u32,
        );
        let (mut sum, mut n) = (0.0f64, 0usize);
        for idx in order.batches() {
            fill_batch(train, idx, PixelView::Unit, &mut no_rng, &mut x);
            let labels: Vec<u8> = idx.iter().map(|&i| train.labels[i]).collect();
            sum += net.loss_and_grads(&x, &labels);
            n += idx.len();
            if !crate::models::host::all_finite(&net.grads) {
                bail!("evaluator training diverged at epoch {epoch} (NaN gradient)");
            }
            opt.update(&mut net.params, &net.grads);
        }
        let seconds = start.elapsed().as_secs_f64();
        let test_accuracy = net.accuracy(test);
        report(&EpochReport {
            epoch,
            loss: sum / n as f64,
            test_accuracy,
            seconds,
        });
    }
    Ok(net)
}

/// A shipped evaluator: the weights compiled into genlab and their SHA-256.
pub struct Shipped {
    pub dataset: &'static str,
    pub bytes: &'static [u8],
    pub sha256: &'static str,
    pub test_accuracy: f64,
}

/// The evaluators committed in `crates/genlab/evaluators/` (see its README).
pub const SHIPPED: &[Shipped] = &[
    Shipped {
        dataset: "mnist",
        bytes: include_bytes!("../../evaluators/mnist.safetensors"),
        sha256: "cbb271993b5c753c0ffdec43eca2ed33c67d1803b4214c833425a4ba99bca850",
        test_accuracy: 0.9918,
    },
    Shipped {
        dataset: "fashion-mnist",
        bytes: include_bytes!("../../evaluators/fashion-mnist.safetensors"),
        sha256: "e3dfc5e2b36e30223711e74e49c6acae841da0f2ad47a70cf9768d3d1f457b72",
        test_accuracy: 0.9111,
    },
];

/// Loads the shipped evaluator of `dataset`, refusing weights whose SHA-256
/// differs from the recorded one; or, when `file` is given, that network
/// (the description then names it). Returns the network and a description
/// for reports.
pub fn load(
    dataset: &str,
    file: Option<&std::path::Path>,
    rows: usize,
) -> Result<(Evaluator, String)> {
    if let Some(path) = file {
        let bytes = crate::bounded::read_file(path, crate::bounded::EVALUATOR_LIMIT, "--evaluator")
            .map_err(crate::error::usage)?;
        let ck = Checkpoint::from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("--evaluator {}: {e}", path.display()))?;
        let net = Evaluator::from_checkpoint(&ck, rows)
            .map_err(|e| anyhow::anyhow!("--evaluator {}: {e}", path.display()))?;
        let sha = crate::data::download::sha256_hex(&bytes);
        return Ok((
            net,
            format!(
                "user-supplied evaluator {} (SHA-256 {sha}), not genlab's shipped one",
                path.display()
            ),
        ));
    }
    let Some(s) = SHIPPED.iter().find(|s| s.dataset == dataset) else {
        bail!(
            "no shipped evaluator for dataset {dataset} (genlab ships: {}); train one with `genlab evaluator train --dataset {dataset}` and pass it with --evaluator FILE",
            SHIPPED
                .iter()
                .map(|s| s.dataset)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let sha = crate::data::download::sha256_hex(s.bytes);
    if sha != s.sha256 {
        bail!(
            "the shipped {dataset} evaluator has SHA-256 {sha}, expected {}: this build's weights were changed; rebuild from a clean checkout or pass --evaluator FILE",
            s.sha256
        );
    }
    let net = Evaluator::from_checkpoint(&Checkpoint::from_bytes(s.bytes)?, rows)?;
    Ok((
        net,
        format!(
            "genlab's {dataset} evaluator (SHA-256 {}, test accuracy {:.2}%)",
            &s.sha256[..16],
            100.0 * s.test_accuracy
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written backward pass against burn's autodiff of the same
    /// network (NCHW, conv2d + max_pool2d), every parameter's gradient.
    /// (Finite differences are unreliable here: ReLU and max-pool kinks.)
    #[test]
    fn gradients_match_burn_autodiff() {
        use crate::models::tensors::{download, upload};
        use burn::tensor::activation::{log_softmax, relu};
        use burn::tensor::module::{conv2d, linear, max_pool2d};
        use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
        use burn::tensor::{Device, Tensor};

        let mut rng = stream(3, Purpose::Fixed, 0);
        let mut net = Evaluator::init(&mut stream(3, Purpose::Init, 0), 4);
        for (p, (_, s)) in net.params.iter_mut().zip(specs()) {
            if s.len() == 1 {
                p.iter_mut().for_each(|v| *v = rng.random_range(-0.1..0.1));
            }
        }
        let b = 3;
        let x: Vec<f32> = (0..b * PIXELS).map(|_| rng.random::<f32>()).collect();
        let labels = [3u8, 7, 1];
        let loss = net.loss_and_grads(&x, &labels) / b as f64;

        let dev = Device::flex();
        let tracked: Vec<Tensor<1>> = net
            .params
            .iter()
            .map(|p| upload(p.clone(), [p.len()], &dev).autodiff().require_grad())
            .collect();
        let w4 = |i: usize, s: [usize; 4]| tracked[i].clone().reshape(s);
        let w2 = |i: usize, s: [usize; 2]| tracked[i].clone().reshape(s);
        let same = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let h = upload(x.clone(), [b, 1, 28, 28], &dev);
        let h = relu(conv2d(
            h,
            w4(0, [C1, 1, 3, 3]),
            Some(tracked[1].clone()),
            same.clone(),
        ));
        let h = max_pool2d(h, MaxPoolOptions::new([2, 2]));
        let h = relu(conv2d(
            h,
            w4(2, [C2, C1, 3, 3]),
            Some(tracked[3].clone()),
            same,
        ));
        let h = max_pool2d(h, MaxPoolOptions::new([2, 2])).reshape([b, FLAT]);
        let h = relu(linear(h, w2(4, [FLAT, FEATURES]), Some(tracked[5].clone())));
        let logits = linear(h, w2(6, [FEATURES, CLASSES]), Some(tracked[7].clone()));
        let onehot: Vec<f32> = labels
            .iter()
            .flat_map(|&l| (0..CLASSES).map(move |c| (c == l as usize) as u8 as f32))
            .collect();
        let burn_loss = (log_softmax(logits, 1) * upload(onehot, [b, CLASSES], &dev))
            .sum()
            .neg()
            .div_scalar(b as f64);
        let value = download(burn_loss.clone().inner()).unwrap()[0] as f64;
        assert!((value - loss).abs() < 1e-4, "{value} vs {loss}");
        let grads = burn_loss.backward();
        for (t, p) in tracked.iter().enumerate() {
            let want = download(p.grad(&grads).unwrap()).unwrap();
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
            let err = net.grads[t]
                .iter()
                .zip(&want)
                .fold(0.0f32, |m, (a, w)| m.max((a - w).abs()));
            assert!(
                err <= 1e-4 * scale,
                "{}: gradient off by {err} (scale {scale})",
                specs()[t].0
            );
        }
    }
}
