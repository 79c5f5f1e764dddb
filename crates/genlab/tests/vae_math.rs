//! The VAE's pieces against independent computations: parameter counts, the
//! Keras 'same' convolution geometry, the loss, the Keras/PyTorch optimiser
//! rules, and the importance-sampled likelihood on a linear-Gaussian model
//! whose marginal is known exactly.

use anyhow::Result;
use burn::tensor::{Device, Tensor};
use genlab::eval::importance::{LatentModel, estimate};
use genlab::models::optim::{Optimizer, Rule};
use genlab::models::tensors::{download, upload};
use genlab::models::vae::host_network::HostNetworkVae;
use genlab::models::vae::{Architecture, Likelihood, Vae, VaeNet, burn_step};
use genlab::rng::{GenRng, Purpose, fill_standard_normal, stream};
use nalgebra::{DMatrix, DVector};
use rand::RngExt;

/// Keras's Adam at the seed's settings.
const KERAS_ADAM: Rule = Rule::AdamKeras {
    lr: 1e-3,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-7,
};

fn device() -> Device {
    Device::flex()
}

fn randn(rng: &mut GenRng, n: usize, scale: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    fill_standard_normal(rng, &mut v);
    v.iter().map(|x| x * scale).collect()
}

#[test]
fn parameter_counts_match_the_spec() {
    let conv = VaeNet::new(Architecture::Conv, 2, &[16]);
    assert_eq!(conv.parameter_counts(), (69_076, 65_089));
    let mlp = VaeNet::new(Architecture::Mlp, 2, &[256]);
    // 784*256+256 + 2*(256*2+2); 2*256+256 + 256*784+784
    assert_eq!(mlp.parameter_counts(), (201_988, 202_256));
}

/// TensorFlow's SAME convolution, written out: output i reads input
/// stride*i + k - pad_before, pad_before = floor(total_pad / 2).
fn naive_same_conv(
    x: &[f32],
    (c_in, n): (usize, usize),
    w: &[f32],
    c_out: usize,
    b: &[f32],
    stride: usize,
) -> Vec<f32> {
    let out = n.div_ceil(stride);
    let total = ((out - 1) * stride + 3).saturating_sub(n);
    let before = total / 2;
    let mut y = vec![0.0f32; c_out * out * out];
    for o in 0..c_out {
        for i in 0..out {
            for j in 0..out {
                let mut acc = b[o];
                for c in 0..c_in {
                    for ki in 0..3 {
                        for kj in 0..3 {
                            let (r, s) = (
                                (stride * i + ki) as isize - before as isize,
                                (stride * j + kj) as isize - before as isize,
                            );
                            if r >= 0 && s >= 0 && (r as usize) < n && (s as usize) < n {
                                acc += x[c * n * n + r as usize * n + s as usize]
                                    * w[((o * c_in + c) * 3 + ki) * 3 + kj];
                            }
                        }
                    }
                }
                y[(o * out + i) * out + j] = acc;
            }
        }
    }
    y
}

#[test]
fn same_padding_matches_tensorflow_geometry() {
    let dev = device();
    let mut rng = stream(1, Purpose::Fixed, 0);
    let (c_in, c_out, n) = (2, 3, 8);
    let x = randn(&mut rng, c_in * n * n, 1.0);
    let w = randn(&mut rng, c_out * c_in * 9, 0.5);
    let b = randn(&mut rng, c_out, 0.1);
    // Keras Conv2D(3x3, strides=2, padding="same") and its transpose, as
    // the VAE's networks describe them.
    let layer = |filters, transposed: bool| {
        let (kernel, stride, padding) = ([3, 3], [2, 2], genlab::nn::Padding::Same);
        if transposed {
            genlab::nn::Layer::ConvTranspose2d {
                filters,
                kernel,
                stride,
                padding,
            }
        } else {
            genlab::nn::Layer::Conv2d {
                filters,
                kernel,
                stride,
                padding,
            }
        }
    };
    let conv = genlab::nn::Network::build("t", &[c_in, n, n], &[("c".into(), layer(c_out, false))])
        .unwrap();
    let flat = |v: &[f32]| upload(v.to_vec(), [v.len()], &dev);
    let got = download(genlab::nn::tensor::forward(
        &conv,
        &[flat(&w), flat(&b)],
        upload(x.clone(), [1, c_in * n * n], &dev),
        &[],
    ))
    .unwrap();
    let want = naive_same_conv(&x, (c_in, n), &w, c_out, &b, 2);
    assert_eq!(got.len(), c_out * 4 * 4);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{g} vs {w}");
    }

    // The transposed convolution is the adjoint of the convolution (without
    // bias): <conv(x), y> = <x, conv_t(y)> for the same kernel.
    let m = n / 2;
    let y = randn(&mut rng, c_out * m * m, 1.0);
    let zero_out = vec![0.0f32; c_out];
    let zero_in = vec![0.0f32; c_in];
    let cx = naive_same_conv(&x, (c_in, n), &w, c_out, &zero_out, 2);
    // conv kernel [out, in] is the transposed kernel [in=out, out=in].
    let deconv =
        genlab::nn::Network::build("t", &[c_out, m, m], &[("d".into(), layer(c_in, true))])
            .unwrap();
    let ty = download(genlab::nn::tensor::forward(
        &deconv,
        &[flat(&w), flat(&zero_in)],
        upload(y.clone(), [1, c_out * m * m], &dev),
        &[],
    ))
    .unwrap();
    assert_eq!(ty.len(), c_in * n * n);
    let lhs: f64 = cx.iter().zip(&y).map(|(a, b)| (a * b) as f64).sum();
    let rhs: f64 = x.iter().zip(&ty).map(|(a, b)| (a * b) as f64).sum();
    assert!(
        (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
        "{lhs} vs {rhs}"
    );
}

fn relu(v: f64) -> f64 {
    v.max(0.0)
}

#[test]
fn loss_matches_a_hand_computation() {
    let dev = device();
    let (l, h, b) = (2, 5, 3);
    let net = VaeNet::new(Architecture::Mlp, l, &[h]);
    let mut rng = stream(2, Purpose::Init, 0);
    let vae = Vae::init(net.clone(), &mut rng, &dev);
    // Non-zero biases too, so that every term is exercised.
    let params: Vec<Vec<f32>> = net
        .specs
        .iter()
        .map(|s| randn(&mut rng, s.len(), 0.3))
        .collect();
    let tensors: Vec<Tensor<1>> = params
        .iter()
        .map(|p| upload(p.clone(), [p.len()], &dev))
        .collect();
    let vae = Vae {
        params: tensors,
        ..vae
    };
    let x: Vec<f32> = (0..b * 784).map(|_| rng.random::<f32>()).collect();
    let xb: Vec<f32> = x.iter().map(|&v| (v > 0.5) as u8 as f32).collect();
    let eps = randn(&mut rng, b * l, 1.0);

    let dense = |input: &[f64], w: &[f32], bias: &[f32], o: usize| -> Vec<f64> {
        (0..o)
            .map(|j| {
                bias[j] as f64
                    + input
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v * w[i * o + j] as f64)
                        .sum::<f64>()
            })
            .collect()
    };
    for (likelihood, data) in [(Likelihood::Mse, &x), (Likelihood::Bernoulli, &xb)] {
        let (recon, kl) = vae.loss_terms(data, &eps, likelihood).unwrap();
        let (mut want_r, mut want_k) = (0.0f64, 0.0f64);
        for r in 0..b {
            let xi: Vec<f64> = data[r * 784..(r + 1) * 784]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let hid: Vec<f64> = dense(&xi, &params[0], &params[1], h)
                .into_iter()
                .map(relu)
                .collect();
            let mean = dense(&hid, &params[2], &params[3], l);
            let logvar = dense(&hid, &params[4], &params[5], l);
            let z: Vec<f64> = (0..l)
                .map(|t| mean[t] + (0.5 * logvar[t]).exp() * eps[r * l + t] as f64)
                .collect();
            let hd: Vec<f64> = dense(&z, &params[6], &params[7], h)
                .into_iter()
                .map(relu)
                .collect();
            let logits = dense(&hd, &params[8], &params[9], 784);
            for (lg, xv) in logits.iter().zip(&xi) {
                let p = 1.0 / (1.0 + (-lg).exp());
                want_r += match likelihood {
                    Likelihood::Mse => (xv - p).powi(2),
                    Likelihood::Bernoulli => -(xv * p.ln() + (1.0 - xv) * (1.0 - p).ln()),
                };
            }
            for t in 0..l {
                want_k += -0.5 * (1.0 + logvar[t] - mean[t].powi(2) - logvar[t].exp());
            }
        }
        let (want_r, want_k) = (want_r / b as f64, want_k / b as f64);
        assert!(
            (recon - want_r).abs() < 1e-3 * want_r.abs().max(1.0),
            "{likelihood:?}: recon {recon} vs {want_r}"
        );
        assert!(
            (kl - want_k).abs() < 1e-4 * want_k.abs().max(1.0),
            "kl {kl} vs {want_k}"
        );
    }
}

/// Runs `steps` updates of a 2-element parameter with fixed gradients.
fn run_rule(rule: Rule, grads: &[[f32; 2]]) -> Vec<f32> {
    let dev = device();
    let mut opt = Optimizer::new(rule, &[2], &dev);
    let mut p = vec![upload(vec![0.5f32, -1.0], [2], &dev)];
    for g in grads {
        opt.update(&mut p, vec![upload(g.to_vec(), [2], &dev)]);
    }
    download(p[0].clone()).unwrap()
}

#[test]
#[allow(clippy::needless_range_loop)]
fn optimisers_follow_their_frameworks_formulas() {
    let grads = [[0.3f32, -2.0], [0.1, 0.5], [-0.4, 1e-4]];
    let (lr, b1, b2, eps) = (0.01f64, 0.9f64, 0.999f64, 1e-7f64);
    // Keras Adam, written out in f64.
    let mut want = [0.5f64, -1.0];
    let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
    for (t, g) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        let alpha = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        for i in 0..2 {
            let gi = g[i] as f64;
            m[i] += (gi - m[i]) * (1.0 - b1);
            v[i] += (gi * gi - v[i]) * (1.0 - b2);
            want[i] -= alpha * m[i] / (v[i].sqrt() + eps);
        }
    }
    let got = run_rule(
        Rule::AdamKeras {
            lr,
            beta1: b1,
            beta2: b2,
            eps,
        },
        &grads,
    );
    for i in 0..2 {
        assert!(
            (got[i] as f64 - want[i]).abs() < 1e-6,
            "{got:?} vs {want:?}"
        );
    }
    // PyTorch Adam: epsilon added to the bias-corrected root; with a large
    // epsilon the two rules differ visibly.
    let eps_big = 1e-2;
    let mut want = [0.5f64, -1.0];
    let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
    for (t, g) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        for i in 0..2 {
            let gi = g[i] as f64;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let (mh, vh) = (m[i] / (1.0 - b1.powi(t)), v[i] / (1.0 - b2.powi(t)));
            want[i] -= lr * mh / (vh.sqrt() + eps_big);
        }
    }
    let got = run_rule(
        Rule::AdamTorch {
            lr,
            beta1: b1,
            beta2: b2,
            eps: eps_big,
        },
        &grads,
    );
    for i in 0..2 {
        assert!(
            (got[i] as f64 - want[i]).abs() < 1e-6,
            "{got:?} vs {want:?}"
        );
    }
    let keras_big = run_rule(
        Rule::AdamKeras {
            lr,
            beta1: b1,
            beta2: b2,
            eps: eps_big,
        },
        &grads,
    );
    assert!((keras_big[1] - got[1]).abs() > 1e-4);
    // Keras RMSprop: p -= lr g / sqrt(v + eps).
    let rho = 0.9;
    let mut want = [0.5f64, -1.0];
    let mut v = [0.0f64; 2];
    for g in &grads {
        for i in 0..2 {
            let gi = g[i] as f64;
            v[i] = rho * v[i] + (1.0 - rho) * gi * gi;
            want[i] -= lr * gi / (v[i] + eps).sqrt();
        }
    }
    let got = run_rule(Rule::RmspropKeras { lr, rho, eps }, &grads);
    for i in 0..2 {
        assert!(
            (got[i] as f64 - want[i]).abs() < 1e-6,
            "{got:?} vs {want:?}"
        );
    }
}

/// p(z) = N(0, I_l), p(x|z) = N(W z + c, s2 I_d): the marginal is
/// N(c, W W' + s2 I). q(z|x) is the exact posterior made worse on purpose
/// (shifted mean, inflated variance), so the importance weights vary.
struct LinearGaussian {
    w: DMatrix<f64>,
    c: DVector<f64>,
    s2: f64,
}

impl LinearGaussian {
    fn exact_log_px(&self, x: &DVector<f64>) -> f64 {
        let d = x.len();
        let cov = &self.w * self.w.transpose() + DMatrix::identity(d, d) * self.s2;
        let chol = cov.cholesky().unwrap();
        let r = x - &self.c;
        let sol = chol.solve(&r);
        let log_det: f64 = 2.0 * chol.l().diagonal().iter().map(|v| v.ln()).sum::<f64>();
        -0.5 * (r.dot(&sol) + log_det + d as f64 * (2.0 * std::f64::consts::PI).ln())
    }
}

impl LatentModel for LinearGaussian {
    fn latent(&self) -> usize {
        self.w.ncols()
    }
    fn dim(&self) -> usize {
        self.w.nrows()
    }
    fn posterior(&self, x: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let (d, l) = (self.dim(), self.latent());
        // Exact posterior: precision A = I + W'W / s2, mean A^-1 W'(x - c) / s2.
        let a = DMatrix::identity(l, l) + self.w.transpose() * &self.w / self.s2;
        let a_inv = a.try_inverse().unwrap();
        let (mut mean, mut logvar) = (Vec::new(), Vec::new());
        for row in x.chunks_exact(d) {
            let xv = DVector::from_iterator(d, row.iter().map(|&v| v as f64));
            let m = &a_inv * self.w.transpose() * (xv - &self.c) / self.s2;
            for t in 0..l {
                mean.push((m[t] + 0.2) as f32);
                logvar.push((a_inv[(t, t)] * 1.5).ln() as f32);
            }
        }
        Ok((mean, logvar))
    }
    fn log_likelihood(&self, x: &[f32], z: &[f32], s: usize) -> Result<Vec<f64>> {
        let (d, l) = (self.dim(), self.latent());
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        Ok(z.chunks_exact(l)
            .enumerate()
            .map(|(r, zr)| {
                let xr = &x[(r / s) * d..(r / s + 1) * d];
                let zv = DVector::from_iterator(l, zr.iter().map(|&v| v as f64));
                let mu = &self.w * zv + &self.c;
                let sq: f64 = (0..d).map(|i| (xr[i] as f64 - mu[i]).powi(2)).sum();
                -0.5 * sq / self.s2 - 0.5 * d as f64 * (ln2pi + self.s2.ln())
            })
            .collect())
    }
}

#[test]
#[allow(clippy::needless_range_loop)]
fn importance_sampling_recovers_an_exact_gaussian_marginal() {
    let (d, l) = (6, 2);
    let mut rng = stream(3, Purpose::Fixed, 0);
    let model = LinearGaussian {
        w: DMatrix::from_iterator(d, l, randn(&mut rng, d * l, 1.0).iter().map(|&v| v as f64)),
        c: DVector::from_iterator(d, randn(&mut rng, d, 0.5).iter().map(|&v| v as f64)),
        s2: 0.3,
    };
    // 20 observations drawn from the model itself.
    let n = 20;
    let mut x = Vec::new();
    for _ in 0..n {
        let z = DVector::from_iterator(l, randn(&mut rng, l, 1.0).iter().map(|&v| v as f64));
        let noise = randn(&mut rng, d, (model.s2 as f32).sqrt());
        let xv = &model.w * z + &model.c;
        x.extend((0..d).map(|i| xv[i] as f32 + noise[i]));
    }
    let exact: Vec<f64> = x
        .chunks_exact(d)
        .map(|r| model.exact_log_px(&DVector::from_iterator(d, r.iter().map(|&v| v as f64))))
        .collect();
    let est = estimate(&model, &x, 5000, 1000, 0, |_| {}).unwrap();
    let one = estimate(&model, &x, 1, 1000, 0, |_| {}).unwrap();
    // Per image the estimate is within 0.05 nats of the truth while the ELBO
    // is about 0.5 below it (measured: worst error 0.025, mean gap 0.49).
    for i in 0..n {
        assert!(
            (est.log_px[i] - exact[i]).abs() < 0.05,
            "image {i}: IS {} vs exact {}",
            est.log_px[i],
            exact[i]
        );
        // The ELBO is a strict lower bound here (q is not the posterior).
        assert!(
            est.elbo[i] < exact[i] - 0.1,
            "ELBO {} vs {}",
            est.elbo[i],
            exact[i]
        );
    }
    let mean_exact = exact.iter().sum::<f64>() / n as f64;
    // With one sample the estimate is a (noisy) ELBO: clearly below the truth.
    assert!(one.mean_log_px() < mean_exact - 0.05);
    assert!((est.mean_log_px() - mean_exact).abs() < 0.01);
    // The result does not depend on how the work is batched.
    let rebatched = estimate(&model, &x, 5000, 333, 0, |_| {}).unwrap();
    for (a, b) in est.log_px.iter().zip(&rebatched.log_px) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
}

/// One training step of `vae` (KL weight `beta`) on the CPU executor
/// against burn's autodiff: the two loss sums agree to 1e-4 (relative) and
/// every parameter's gradient to 1e-4 of its largest value. Returns the
/// executor's state after the step, not yet applied.
fn executor_step_matches_autodiff(
    what: &str,
    vae: &Vae,
    opt: &Optimizer,
    x: &[f32],
    eps: &[f32],
    (likelihood, beta): (Likelihood, f32),
) -> HostNetworkVae {
    let net = &vae.net;
    let (want_stats, finite, want_grads) = burn_step(net, vae, x, eps, likelihood, beta).unwrap();
    assert!(finite, "{what}");
    let mut host = HostNetworkVae::new(vae, opt).unwrap();
    let (stats, finite) = host.forward_backward(x, eps, likelihood, beta, true);
    assert!(finite, "{what}");
    for (a, b) in stats.iter().zip(&want_stats) {
        assert!(
            (a - b).abs() < 1e-4 * b.abs().max(1.0),
            "{what}: {stats:?} vs {want_stats:?}"
        );
    }
    for (i, (g, want)) in host.grads().iter().zip(want_grads).enumerate() {
        let name = &net.specs[i].name;
        let want = download(want).unwrap();
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{what}: {name} has no gradient");
        let err = g
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-4 * scale,
            "{what}: {name} gradient off by {err} (scale {scale})"
        );
    }
    host
}

#[test]
fn cpu_fast_path_matches_the_autodiff_step() {
    let dev = device();
    let mut rng = stream(5, Purpose::Fixed, 0);
    let rows = 7;
    // The seed's one hidden layer and deeper encoders (with their mirrored
    // decoders), all on the CPU executor of the networks' description.
    let shapes: [&[usize]; 3] = [&[16], &[24, 12], &[20, 16, 8]];
    for (likelihood, widths) in [Likelihood::Mse, Likelihood::Bernoulli]
        .into_iter()
        .flat_map(|l| shapes.into_iter().map(move |w| (l, w)))
    {
        let net = VaeNet::new(Architecture::Mlp, 3, widths);
        let vae = Vae::init(net.clone(), &mut stream(5, Purpose::Init, 0), &dev);
        let rule = KERAS_ADAM;
        let opt = Optimizer::new(rule, &net.sizes(), &dev);
        let x: Vec<f32> = (0..rows * 784)
            .map(|_| {
                let u = rng.random::<f32>();
                match likelihood {
                    Likelihood::Mse => u,
                    Likelihood::Bernoulli => (u < 0.3) as u8 as f32,
                }
            })
            .collect();
        let eps = randn(&mut rng, rows * 3, 1.0);
        let what = format!("{likelihood:?} {widths:?}");
        let mut host =
            executor_step_matches_autodiff(&what, &vae, &opt, &x, &eps, (likelihood, 1.0));
        // One update each way lands on the same parameters.
        let mut burn_vae = vae.clone();
        let mut burn_opt = Optimizer::new(rule, &net.sizes(), &dev);
        let (_, _, g) = burn_step(&net, &burn_vae, &x, &eps, likelihood, 1.0).unwrap();
        burn_opt.update(&mut burn_vae.params, g);
        assert!(host.apply(), "{what}: finite gradients reported as not");
        let mut stored = vae.clone();
        let mut stored_opt = Optimizer::new(rule, &net.sizes(), &dev);
        host.store(&mut stored, &mut stored_opt);
        assert_eq!(stored_opt.step, 1);
        for (a, b) in stored.params.iter().zip(&burn_vae.params) {
            let (a, b) = (download(a.clone()).unwrap(), download(b.clone()).unwrap());
            let err = a
                .iter()
                .zip(&b)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            // Adam moves each parameter by about lr = 1e-3; the two agree far closer.
            assert!(err < 2e-5, "{likelihood:?}: parameters differ by {err}");
        }
    }
}

#[test]
fn vaes_of_other_shapes_and_images_match_autodiff_on_the_cpu_executor() {
    use genlab::data::ImageShape;
    use genlab::models::vae::ConvShape;
    let dev = device();
    let mut rng = stream(8, Purpose::Fixed, 0);
    let rows = 3;
    let rgb32 = ImageShape {
        channels: 3,
        height: 32,
        width: 32,
    };
    let conv = |channels: Vec<usize>, kernel| ConvShape { channels, kernel };
    let cases = [
        (
            Architecture::Conv,
            vec![10],
            conv(vec![8, 12], 5),
            ImageShape::MNIST,
        ),
        (
            Architecture::Conv,
            vec![10],
            conv(vec![6], 3),
            ImageShape::MNIST,
        ),
        (
            Architecture::Conv,
            vec![10],
            conv(vec![4, 8], 7),
            ImageShape::MNIST,
        ),
        // Colour images of another size, through the same descriptions.
        (Architecture::Conv, vec![12], conv(vec![5, 7], 5), rgb32),
        (Architecture::Mlp, vec![40, 20], ConvShape::seed(), rgb32),
    ];
    for (architecture, widths, shape, image) in cases {
        let what = format!(
            "{architecture:?} {widths:?} {shape:?} on {}",
            image.to_meta()
        );
        let net = VaeNet::with_convolutions(architecture, 2, &widths, &shape, image);
        assert_eq!(net.encoder.input_size(), image.pixels(), "{what}");
        assert_eq!(net.decoder.output_size(), image.pixels(), "{what}");
        let vae = Vae::init(net.clone(), &mut stream(8, Purpose::Init, 0), &dev);
        let rule = Rule::RmspropKeras {
            lr: 1e-3,
            rho: 0.9,
            eps: 1e-7,
        };
        let opt = Optimizer::new(rule, &net.sizes(), &dev);
        let x: Vec<f32> = (0..rows * image.pixels())
            .map(|_| rng.random::<f32>())
            .collect();
        let eps = randn(&mut rng, rows * 2, 1.0);
        executor_step_matches_autodiff(&what, &vae, &opt, &x, &eps, (Likelihood::Mse, 1.0));
    }
}

#[test]
fn cpu_conv_fast_path_matches_the_autodiff_step() {
    let dev = device();
    let mut rng = stream(6, Purpose::Fixed, 0);
    let rows = 3;
    let net = VaeNet::new(Architecture::Conv, 2, &[16]);
    // Glorot init plus small random biases, so that every path is exercised.
    let vae = Vae::init(net.clone(), &mut stream(6, Purpose::Init, 0), &dev);
    let params: Vec<Tensor<1>> = vae
        .params
        .iter()
        .zip(&net.specs)
        .map(|(p, s)| {
            if s.fans.is_some() {
                p.clone()
            } else {
                upload(randn(&mut rng, s.len(), 0.05), [s.len()], &dev)
            }
        })
        .collect();
    let vae = Vae { params, ..vae };
    let rule = Rule::RmspropKeras {
        lr: 1e-3,
        rho: 0.9,
        eps: 1e-7,
    };
    let opt = Optimizer::new(rule, &net.sizes(), &dev);
    // beta-VAE's KL weight (4, and 0: no KL at all) as well as the seed's 1.
    for (likelihood, beta) in [
        (Likelihood::Mse, 1.0),
        (Likelihood::Bernoulli, 1.0),
        (Likelihood::Mse, 4.0),
        (Likelihood::Bernoulli, 0.0),
    ] {
        let x: Vec<f32> = (0..rows * 784).map(|_| rng.random::<f32>()).collect();
        let x: Vec<f32> = match likelihood {
            Likelihood::Mse => x,
            Likelihood::Bernoulli => x.iter().map(|&u| (u < 0.3) as u8 as f32).collect(),
        };
        let eps = randn(&mut rng, rows * 2, 1.0);
        let what = format!("{likelihood:?}, beta {beta}");
        executor_step_matches_autodiff(&what, &vae, &opt, &x, &eps, (likelihood, beta));
    }
}

/// beta weighs only the KL term: the decoder's gradients do not move with
/// it, the encoder's move by exactly the KL term's gradient times beta - 1,
/// and the reported sums are the unweighted terms.
#[test]
fn beta_scales_only_the_kl_terms_gradient() {
    let dev = device();
    let mut rng = stream(9, Purpose::Fixed, 0);
    let rows = 5;
    let net = VaeNet::new(Architecture::Mlp, 3, &[16]);
    let vae = Vae::init(net.clone(), &mut stream(9, Purpose::Init, 0), &dev);
    let rule = KERAS_ADAM;
    let opt = Optimizer::new(rule, &net.sizes(), &dev);
    let x: Vec<f32> = (0..rows * 784).map(|_| rng.random::<f32>()).collect();
    let eps = randn(&mut rng, rows * 3, 1.0);
    let step = |beta: f32| {
        let mut host = HostNetworkVae::new(&vae, &opt).unwrap();
        let (stats, finite) = host.forward_backward(&x, &eps, Likelihood::Mse, beta, true);
        assert!(finite);
        (stats, host.grads())
    };
    let (s0, g0) = step(0.0);
    let (s1, g1) = step(1.0);
    let (s3, g3) = step(3.0);
    assert_eq!(s0, s1, "the sums are the unweighted terms");
    assert_eq!(s1, s3);
    let mut encoder_moved = false;
    for (i, spec) in net.specs.iter().enumerate() {
        let decoder = spec.name.starts_with("decoder");
        for ((a, b), c) in g0[i].iter().zip(&g1[i]).zip(&g3[i]) {
            if decoder {
                assert_eq!(
                    a, b,
                    "{}: the decoder's gradient moved with beta",
                    spec.name
                );
                assert_eq!(a, c, "{}", spec.name);
            } else {
                // g(beta) = g_recon + beta g_kl, so g3 - g0 = 3 (g1 - g0).
                let want = 3.0 * (b - a);
                let scale = a.abs().max(b.abs()).max(c.abs()).max(1e-6);
                assert!(
                    (c - a - want).abs() <= 1e-4 * scale,
                    "{}: {a} {b} {c}",
                    spec.name
                );
                encoder_moved |= (b - a).abs() > 1e-6;
            }
        }
    }
    assert!(encoder_moved, "the KL term's gradient reached the encoder");
}

#[test]
fn host_decoder_of_the_evaluation_matches_burn() {
    use genlab::models::vae::eval::VaeDensity;
    let dev = device();
    for (arch, likelihood) in [
        (Architecture::Mlp, Likelihood::Mse),
        (Architecture::Mlp, Likelihood::Bernoulli),
        (Architecture::Conv, Likelihood::Mse),
    ] {
        let net = VaeNet::new(arch, 2, &[if arch == Architecture::Mlp { 32 } else { 16 }]);
        let vae = Vae::init(net, &mut stream(8, Purpose::Init, 0), &dev);
        let mut rng = stream(8, Purpose::Fixed, 0);
        let x: Vec<f32> = (0..2 * 784).map(|_| rng.random::<f32>()).collect();
        let z = randn(&mut rng, 2 * 5 * 2, 1.0);
        let fast = VaeDensity::new(&vae, likelihood, true).unwrap();
        let generic = VaeDensity::new(&vae, likelihood, false).unwrap();
        assert!(fast.host_decoder.is_some() && generic.host_decoder.is_none());
        let a = fast.log_likelihood(&x, &z, 5).unwrap();
        let b = generic.log_likelihood(&x, &z, 5).unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-3, "{p} vs {q}");
        }
    }
}

/// The importance-weighted bound of [`VaeNet::draws_terms`] against the same
/// sum written out on the host in f64 from the encoder's and decoder's
/// outputs; with one draw its reconstruction and KL terms are those of
/// the one-draw loss; and the bound grows with k (Burda et al.'s theorem 1),
/// staying below an estimate with many draws.
#[test]
fn the_iwae_bound_matches_a_written_out_sum_and_tightens_with_k() {
    let dev = device();
    let mut rng = stream(11, Purpose::Fixed, 0);
    let (rows, latent) = (40, 3);
    let net = VaeNet::new(Architecture::Mlp, latent, &[24]);
    let vae = Vae::init(net.clone(), &mut stream(11, Purpose::Init, 0), &dev);
    let x: Vec<f32> = (0..rows * 784)
        .map(|_| (rng.random::<f32>() < 0.2) as u8 as f32)
        .collect();
    let xt = || upload(x.clone(), [rows, 784], &dev);
    let bound = |k: usize, eps: &[f32]| {
        let et = upload(eps.to_vec(), [rows * k, latent], &dev);
        let (r, kl, b) = net.draws_terms(&vae.params, xt(), et, k, Likelihood::Bernoulli);
        (
            download(r).unwrap(),
            download(kl).unwrap(),
            download(b).unwrap(),
        )
    };

    // k = 3 against the written-out sum.
    let k = 3;
    let eps = randn(&mut rng, rows * k * latent, 1.0);
    let (_, _, got) = bound(k, &eps);
    let (mean, logvar) = vae.encode(&x).unwrap();
    for i in 0..rows {
        let mut log_w = Vec::new();
        for j in 0..k {
            let e = &eps[(i * k + j) * latent..][..latent];
            let (m, lv) = (
                &mean[i * latent..][..latent],
                &logvar[i * latent..][..latent],
            );
            let z: Vec<f32> = (0..latent)
                .map(|d| m[d] + (0.5 * lv[d]).exp() * e[d])
                .collect();
            let logits = vae.decode_logits(&z).unwrap();
            let log_px: f64 = logits
                .iter()
                .zip(&x[i * 784..][..784])
                .map(|(&l, &t)| {
                    let (l, t) = (l as f64, t as f64);
                    t * l - l.max(0.0) - (-l.abs()).exp().ln_1p()
                })
                .sum();
            let log_ratio: f64 = (0..latent)
                .map(|d| 0.5 * ((e[d] * e[d] - z[d] * z[d] + lv[d]) as f64))
                .sum();
            log_w.push(log_px + log_ratio);
        }
        let top = log_w.iter().cloned().fold(f64::MIN, f64::max);
        let want = top + log_w.iter().map(|w| (w - top).exp()).sum::<f64>().ln() - (k as f64).ln();
        let g = got[i] as f64;
        assert!(
            (g - want).abs() < 1e-3 * want.abs().max(1.0),
            "image {i}: {g} vs {want}"
        );
    }

    // One draw: the one-draw loss's terms, and the bound is minus
    // reconstruction minus the sampled KL.
    let eps1 = randn(&mut rng, rows * latent, 1.0);
    let (r1, kl1, _) = bound(1, &eps1);
    let (r, kl) = net.loss_parts(
        &vae.params,
        xt(),
        upload(eps1.clone(), [rows, latent], &dev),
        Likelihood::Bernoulli,
    );
    let (r, kl) = (download(r).unwrap(), download(kl).unwrap());
    for i in 0..rows {
        assert!(
            (r1[i] - r[i]).abs() <= 1e-4 * r[i].abs(),
            "{} vs {}",
            r1[i],
            r[i]
        );
        assert!((kl1[i] - kl[i]).abs() <= 1e-4 * kl[i].abs().max(1.0));
    }

    // The mean bound rises with k (each k its own draws) and stays below a
    // 2,000-draw estimate of log p(x).
    let mean_bound = |k: usize, rng: &mut GenRng| {
        let eps = randn(rng, rows * k * latent, 1.0);
        let (_, _, b) = bound(k, &eps);
        b.iter().map(|&v| v as f64).sum::<f64>() / rows as f64
    };
    let (l1, l5, l50) = (
        mean_bound(1, &mut rng),
        mean_bound(5, &mut rng),
        mean_bound(50, &mut rng),
    );
    let many = mean_bound(2000, &mut rng);
    assert!(
        l1 < l5 && l5 < l50 && l50 < many + 0.05,
        "{l1} {l5} {l50} {many}"
    );
}
