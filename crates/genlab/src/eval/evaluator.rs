//! The evaluator network: a small CNN classifier whose
//! penultimate layer gives the features for FID, KID and precision/recall,
//! and whose class probabilities give the Inception Score and class coverage.
//! Trained by genlab with a fixed recipe and seed on a dataset's training
//! set (`genlab evaluator train`); described as data ([`network`]) and run
//! by nn's host executor, forward and backward.
//!
//! Architecture (LeNet-like): conv 3x3 'same' 1 -> 16, relu, 2x2 max-pool
//! (28 -> 14); conv 3x3 'same' 16 -> 32, relu, 2x2 max-pool (14 -> 7);
//! flatten (c, h, w) 1568 -> dense 64 (relu; the features) -> dense 10
//! (logits). 105,866 parameters (0.42 MB of f32). Tensor names:
//! `conv1.weight` `[16, 1, 3, 3]`, `conv1.bias`, `conv2.weight` `[32, 16, 3,
//! 3]`, `conv2.bias`, `features.weight` `[1568, 64]`, `features.bias`,
//! `classes.weight` `[64, 10]`, `classes.bias` (dense kernels `[in, out]`):
//! the description's parameter names without the network's name.

use anyhow::{Result, bail};
use rand::RngExt;

use crate::data::batches::fill_batch;
use crate::data::{EpochOrder, ImageShape, PixelView, Split};
use crate::models::host::HostOptimizer;
use crate::models::optim::Rule;
use crate::nn::host::{HostNetwork, InputGradient};
use crate::nn::{Layer, Mode, Network, Padding};
use crate::rng::{GenRng, Purpose, stream};
use crate::run::{Checkpoint, TensorData};

pub const FEATURES: usize = 64;
/// The class count of the shipped evaluators (MNIST's and Fashion-MNIST's ten).
pub const SHIPPED_CLASSES: usize = 10;
/// The checkpoint metadata key of an evaluator's class count (absent: [`SHIPPED_CLASSES`]).
const CLASSES_META: &str = "genlab.classes";

/// The network's name, which its parameter names start with.
const NAME: &str = "evaluator";
/// The layer whose output is the features (the features' activation).
const FEATURE_LAYER: &str = "act3";

/// The evaluator network for images of shape `image` and `classes` classes.
pub fn network(image: ImageShape, classes: usize) -> Network {
    let same = |filters| Layer::Conv2d {
        filters,
        kernel: [3, 3],
        stride: [1, 1],
        padding: Padding::Same,
    };
    let pool = || Layer::MaxPool2d { size: [2, 2] };
    let layers = [
        ("conv1", same(16)),
        ("act1", Layer::Relu),
        ("pool1", pool()),
        ("conv2", same(32)),
        ("act2", Layer::Relu),
        ("pool2", pool()),
        ("flat", Layer::Flatten),
        ("features", Layer::Dense { units: FEATURES }),
        (FEATURE_LAYER, Layer::Relu),
        ("classes", Layer::Dense { units: classes }),
    ];
    let layers: Vec<(String, Layer)> = layers.into_iter().map(|(n, l)| (n.into(), l)).collect();
    Network::build(NAME, &image.dims(), &layers).expect("the evaluator fits images of 4x4 or more")
}

/// A parameter's name in evaluator checkpoints.
fn checkpoint_name(name: &str) -> &str {
    name.strip_prefix(NAME)
        .and_then(|n| n.strip_prefix('.'))
        .expect("the evaluator's parameters carry its name")
}

/// Names and shapes of the parameters of MNIST's evaluator, in order.
pub fn specs() -> Vec<(String, Vec<usize>)> {
    network(ImageShape::MNIST, SHIPPED_CLASSES)
        .params
        .iter()
        .map(|p| (checkpoint_name(&p.name).to_string(), p.shape.clone()))
        .collect()
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

/// The network, its parameters and gradients, run by the host executor
/// on batches of up to `rows` images.
pub struct Evaluator {
    pub net: Network,
    pub params: Vec<Vec<f32>>,
    pub grads: Vec<Vec<f32>>,
    rows: usize,
    /// Outputs of the classifier.
    classes: usize,
    exec: HostNetwork,
    /// The index of the features' layer.
    feature_layer: usize,
    /// The gradient at the logits.
    d_logits: Vec<f32>,
}

impl Evaluator {
    pub fn from_params(net: Network, params: Vec<Vec<f32>>, rows: usize) -> Self {
        let classes = net.output_size();
        let feature_layer = net
            .layers
            .iter()
            .position(|l| l.name == FEATURE_LAYER)
            .expect("the evaluator has its features' layer");
        let mut exec = HostNetwork::new(net.clone());
        exec.mode = Mode::Infer;
        Evaluator {
            grads: params.iter().map(|p| vec![0.0; p.len()]).collect(),
            params,
            rows,
            classes,
            exec,
            feature_layer,
            d_logits: Vec::new(),
            net,
        }
    }

    /// Glorot-uniform kernels, zero biases.
    pub fn init(image: ImageShape, classes: usize, rng: &mut GenRng, rows: usize) -> Self {
        let net = network(image, classes);
        let params = net
            .params
            .iter()
            .map(|p| {
                let (s, n) = (&p.shape, p.len());
                if s.len() == 1 {
                    return vec![0.0; n];
                }
                let (fan_in, fan_out) = if s.len() == 4 {
                    let taps = s[2] * s[3];
                    (s[1] * taps, s[0] * taps)
                } else {
                    (s[0], s[1])
                };
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                (0..n).map(|_| rng.random_range(-limit..limit)).collect()
            })
            .collect();
        Evaluator::from_params(net, params, rows)
    }

    /// The image shape the network is built for.
    pub fn image(&self) -> ImageShape {
        let [channels, height, width] = [self.net.input[0], self.net.input[1], self.net.input[2]];
        ImageShape {
            channels,
            height,
            width,
        }
    }

    /// The classifier's class count.
    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn to_checkpoint(&self) -> Checkpoint {
        let mut ck = Checkpoint::default();
        for (spec, p) in self.net.params.iter().zip(&self.params) {
            ck.insert(
                checkpoint_name(&spec.name),
                TensorData::new(spec.shape.clone(), p.clone()),
            );
        }
        ck.set_meta(crate::data::IMAGE_META, self.image().to_meta());
        // Ten classes go unrecorded, as in the shipped files, so that
        // retraining a ten-class evaluator gives the same bytes as before.
        if self.classes != SHIPPED_CLASSES {
            ck.set_meta(CLASSES_META, self.classes.to_string());
        }
        ck
    }

    /// The network a checkpoint holds (for the images and classes it
    /// records; MNIST's and ten when it records none, as the shipped ones).
    pub fn from_checkpoint(ck: &Checkpoint, rows: usize) -> Result<Self> {
        let classes = match ck.metadata.get(CLASSES_META) {
            None => SHIPPED_CLASSES,
            Some(v) => match v.parse::<usize>() {
                Ok(c) if (2..=256).contains(&c) => c,
                _ => bail!("{CLASSES_META} = {v:?} is not a class count from 2 to 256"),
            },
        };
        let net = network(ck.image_shape()?, classes);
        let params = net
            .params
            .iter()
            .map(|p| Ok(ck.tensor(checkpoint_name(&p.name), &p.shape)?.data.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Evaluator::from_params(net, params, rows))
    }

    /// Forward pass of up to `rows` images; returns their number (the
    /// logits are then `self.exec.output()`).
    fn forward(&mut self, x: &[f32]) -> usize {
        let b = x.len() / self.net.input_size();
        assert!(b <= self.rows);
        self.exec.forward(&self.params, x, b, &[]);
        b
    }

    /// Penultimate-layer features (`n x 64`) and class probabilities
    /// (`n x classes`) of images `x` (pixel values in [0, 1]).
    pub fn features_and_probs(&mut self, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let n = x.len() / self.net.input_size();
        let (mut feats, mut probs) = (
            Vec::with_capacity(n * FEATURES),
            Vec::with_capacity(n * self.classes),
        );
        for chunk in x.chunks(self.rows * self.net.input_size()) {
            self.forward(chunk);
            for row in self.exec.output().chunks_exact(self.classes) {
                probs.extend(softmax(row));
            }
            let features = self
                .exec
                .layer_output(self.feature_layer)
                .expect("the features end a pass");
            feats.extend_from_slice(features);
        }
        (feats, probs)
    }

    /// Fraction of a labelled split's images classified correctly (0 for an unlabelled one, which [`train`] refuses).
    pub fn accuracy(&mut self, split: &Split) -> f64 {
        let Some(labels) = &split.labels else {
            return 0.0;
        };
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
            .chunks_exact(self.classes)
            .zip(labels)
            .filter(|(p, l)| argmax(p) == **l as usize)
            .count();
        correct as f64 / split.len().max(1) as f64
    }

    /// One step of softmax cross-entropy (mean over the batch): returns the
    /// summed loss; gradients into `self.grads`.
    fn loss_and_grads(&mut self, x: &[f32], labels: &[u8]) -> f64 {
        let b = self.forward(x);
        let logits = self.exec.output();
        let mut loss = 0.0f64;
        let inv = 1.0 / b as f32;
        self.d_logits.resize(logits.len(), 0.0);
        for (r, (row, d)) in logits
            .chunks_exact(self.classes)
            .zip(self.d_logits.chunks_exact_mut(self.classes))
            .enumerate()
        {
            let p = softmax(row);
            let y = labels[r] as usize;
            loss -= (p[y].max(1e-30) as f64).ln();
            for (c, v) in d.iter_mut().enumerate() {
                *v = (p[c] - if c == y { 1.0 } else { 0.0 }) * inv;
            }
        }
        self.exec.backward(
            &self.params,
            x,
            b,
            &self.d_logits,
            &[],
            Some(&mut self.grads),
            InputGradient::Skip,
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

/// Trains the evaluator for images of shape `image` on `train` with
/// `recipe`, reporting each epoch's mean loss and accuracy on `test` to
/// `report`.
pub fn train(
    image: ImageShape,
    classes: usize,
    train: &Split,
    test: &Split,
    recipe: Recipe,
    mut report: impl FnMut(&EpochReport),
) -> Result<Evaluator> {
    if train.is_empty() {
        bail!("the evaluator needs training images");
    }
    let train_labels = train.labels_for("training the evaluator")?;
    let test_labels = test.labels_for("training the evaluator")?;
    if !(2..=256).contains(&classes) {
        bail!("the evaluator needs 2 to 256 classes, not {classes}");
    }
    if let Some(&l) = train_labels
        .iter()
        .chain(test_labels)
        .find(|&&l| l as usize >= classes)
    {
        bail!("label {l} is outside the dataset's {classes} classes");
    }
    let mut net = Evaluator::init(
        image,
        classes,
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
            let labels: Vec<u8> = idx.iter().map(|&i| train_labels[i]).collect();
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

/// The shipped evaluator of `dataset`, if genlab has one.
pub fn shipped(dataset: &str) -> Option<&'static Shipped> {
    SHIPPED.iter().find(|s| s.dataset == dataset)
}

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

    /// The executor's backward pass against burn's autodiff of the same
    /// network written out by hand (NCHW, conv2d + max_pool2d), every
    /// parameter's gradient.
    /// (Finite differences are unreliable here: ReLU and max-pool kinks.)
    #[test]
    fn gradients_match_burn_autodiff() {
        use crate::models::tensors::{download, upload};
        use burn::tensor::activation::{log_softmax, relu};
        use burn::tensor::module::{conv2d, linear, max_pool2d};
        use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
        use burn::tensor::{Device, Tensor};

        // The network written out by hand, independently of its description.
        const PIXELS: usize = 784;
        const CLASSES: usize = SHIPPED_CLASSES;
        const C1: usize = 16;
        const C2: usize = 32;
        const FLAT: usize = C2 * 7 * 7;
        let names: Vec<String> = specs().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "conv1.weight",
                "conv1.bias",
                "conv2.weight",
                "conv2.bias",
                "features.weight",
                "features.bias",
                "classes.weight",
                "classes.bias"
            ]
        );
        let mut rng = stream(3, Purpose::Fixed, 0);
        let mut net = Evaluator::init(
            ImageShape::MNIST,
            SHIPPED_CLASSES,
            &mut stream(3, Purpose::Init, 0),
            4,
        );
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
