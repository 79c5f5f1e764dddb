//! Decoder AIS and BDMC against likelihoods known in closed form (a linear
//! Gaussian decoder) or by quadrature over a one-dimensional latent
//! (Bernoulli pixels; a tanh generator with a uniform prior), and the
//! decoder's latent gradient against finite differences.
// Reference computations index like the formulas they transcribe.
#![allow(clippy::needless_range_loop)]

use genlab::eval::decoder_ais::{
    Annealing, GaussianMean, NetworkDecoder, Observation, Prior, bdmc, forward_ais, reverse_ais,
};
use genlab::nn::{Layer, Network};
use genlab::rng::{GenRng, Purpose, stream};
use rand::RngExt;

fn rng(i: u32) -> GenRng {
    stream(11, Purpose::Eval, i)
}

/// Parameters for `net` drawn uniformly from [-scale, scale].
fn random_params(net: &Network, scale: f32, rng: &mut GenRng) -> Vec<Vec<f32>> {
    net.params
        .iter()
        .map(|p| {
            (0..p.len())
                .map(|_| rng.random_range(-scale..scale))
                .collect()
        })
        .collect()
}

/// log N(x; m, C) for a symmetric positive definite C (Cholesky, f64).
fn log_normal(x: &[f64], m: &[f64], c: &[Vec<f64>]) -> f64 {
    let d = x.len();
    let mut l = vec![vec![0.0f64; d]; d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = c[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            l[i][j] = if i == j { s.sqrt() } else { s / l[j][j] };
        }
    }
    // Solve L y = x - m.
    let mut y = vec![0.0f64; d];
    for i in 0..d {
        y[i] = (x[i] - m[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let log_det: f64 = (0..d).map(|i| 2.0 * l[i][i].ln()).sum();
    -0.5 * y.iter().map(|v| v * v).sum::<f64>()
        - 0.5 * log_det
        - 0.5 * d as f64 * std::f64::consts::TAU.ln()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn linear_gaussian_decoder_is_bracketed_and_met_by_both_directions() {
    // x = z W + b + sigma e with z ~ N(0, I): x ~ N(b, W'W + sigma^2 I).
    let (latent, dim, sigma) = (2, 6, 0.3);
    let net = Network::mlp("decoder", latent, &[dim], &Layer::Identity, 0.0).unwrap();
    let params = random_params(&net, 1.0, &mut rng(0));
    let (w, b) = (&params[0], &params[1]);
    let mut cov = vec![vec![0.0f64; dim]; dim];
    for i in 0..dim {
        for j in 0..dim {
            cov[i][j] = (0..latent)
                .map(|k| w[k * dim + i] as f64 * w[k * dim + j] as f64)
                .sum::<f64>()
                + if i == j { sigma * sigma } else { 0.0 };
        }
    }
    let m: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let observation = Observation::Gaussian {
        mean: GaussianMean::Affine {
            scale: 1.0,
            shift: 0.0,
        },
        sigma,
    };
    let mut dec = NetworkDecoder::new(net, &params, observation, Prior::StandardNormal, 64);
    let exact_of = |x: &[f32]| -> Vec<f64> {
        x.chunks_exact(dim)
            .map(|r| log_normal(&r.iter().map(|&v| v as f64).collect::<Vec<_>>(), &m, &cov))
            .collect()
    };
    let (z, x) = dec.simulate(12, &mut rng(1));
    let exact = mean(&exact_of(&x));
    let long = Annealing {
        chains: 16,
        steps: 1000,
        leapfrog: 5,
    };
    let short = Annealing { steps: 3, ..long };
    let fwd = forward_ais(&mut dec, &x, long, &mut rng(2));
    let rev = reverse_ais(&mut dec, &x, &z, long, &mut rng(3));
    assert!(
        (fwd.mean() - exact).abs() < 0.05,
        "forward {} vs exact {exact}",
        fwd.mean()
    );
    assert!(
        (rev.mean() - exact).abs() < 0.05,
        "reverse {} vs exact {exact}",
        rev.mean()
    );
    assert!(
        fwd.acceptance > 0.4 && fwd.acceptance < 0.95,
        "{}",
        fwd.acceptance
    );
    // With 3 transitions the bounds sit clearly apart, on their own sides.
    let f3 = forward_ais(&mut dec, &x, short, &mut rng(4)).mean();
    let r3 = reverse_ais(&mut dec, &x, &z, short, &mut rng(5)).mean();
    assert!(f3 < exact - 0.1, "short forward {f3} below exact {exact}");
    assert!(r3 > exact + 0.1, "short reverse {r3} above exact {exact}");
    assert!(
        fwd.mean() > f3 && rev.mean() < r3,
        "both approach the exact value"
    );
    // BDMC's gap shrinks with the temperatures.
    let gap_short = bdmc(&mut dec, 12, short, &mut rng(6)).gap();
    let gap_long = bdmc(&mut dec, 12, long, &mut rng(6)).gap();
    assert!(
        gap_short > 0.2 && gap_long < 0.1 && gap_long > -0.05,
        "gaps {gap_short} -> {gap_long}"
    );
}

/// log of the integral of p(z) prod_i p(x_i | z) over a one-dimensional z
/// by the trapezoid rule on [lo, hi] with `n` intervals.
fn quadrature(lo: f64, hi: f64, n: usize, log_f: impl Fn(f64) -> f64) -> f64 {
    let h = (hi - lo) / n as f64;
    let vals: Vec<f64> = (0..=n).map(|i| log_f(lo + i as f64 * h)).collect();
    let m = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = vals
        .iter()
        .enumerate()
        .map(|(i, v)| (if i == 0 || i == n { 0.5 } else { 1.0 }) * (v - m).exp())
        .sum();
    m + (s * h).ln()
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

#[test]
fn bernoulli_decoder_matches_quadrature_over_its_latent() {
    let dim = 10;
    let net = Network::mlp("decoder", 1, &[dim], &Layer::Identity, 0.0).unwrap();
    let params = random_params(&net, 2.5, &mut rng(10));
    let (w, b) = (params[0].clone(), params[1].clone());
    let mut dec = NetworkDecoder::new(
        net,
        &params,
        Observation::Bernoulli,
        Prior::StandardNormal,
        64,
    );
    let (_, mut x) = dec.simulate(8, &mut rng(11));
    // Two images the model finds unlikely as well.
    let mut r = rng(12);
    x.extend((0..2 * dim).map(|_| r.random::<bool>() as u8 as f32));
    let exact: Vec<f64> = x
        .chunks_exact(dim)
        .map(|img| {
            quadrature(-12.0, 12.0, 24_000, |z| {
                let prior = -0.5 * z * z - 0.5 * std::f64::consts::TAU.ln();
                prior
                    + (0..dim)
                        .map(|i| {
                            let l = w[i] as f64 * z + b[i] as f64;
                            img[i] as f64 * l - softplus(l)
                        })
                        .sum::<f64>()
            })
        })
        .collect();
    let a = Annealing {
        chains: 32,
        steps: 1000,
        leapfrog: 5,
    };
    let est = forward_ais(&mut dec, &x, a, &mut rng(13));
    for (i, (got, want)) in est.per_image.iter().zip(&exact).enumerate() {
        assert!(
            (got - want).abs() < 0.05,
            "image {i}: AIS {got} vs quadrature {want}"
        );
    }
}

#[test]
fn tanh_generator_with_a_uniform_prior_matches_quadrature() {
    // A generator of images in [-1, 1] compared on [0, 1]; its uniform
    // latent has walls, which HMC reflects off.
    let (dim, sigma) = (5, 0.15);
    let net = Network::mlp("generator", 1, &[dim], &Layer::Identity, 0.0).unwrap();
    let layers: Vec<(String, Layer)> = net
        .layers
        .iter()
        .map(|l| (l.name.clone(), l.layer.clone()))
        .chain([("out".to_string(), Layer::Tanh)])
        .collect();
    let net = Network::build("generator", &[1], &layers).unwrap();
    let params = random_params(&net, 2.0, &mut rng(20));
    let (w, b) = (params[0].clone(), params[1].clone());
    let observation = Observation::Gaussian {
        mean: GaussianMean::Affine {
            scale: 0.5,
            shift: 0.5,
        },
        sigma,
    };
    let mut dec = NetworkDecoder::new(net, &params, observation, Prior::Uniform, 64);
    let (z, x) = dec.simulate(8, &mut rng(21));
    assert!(z.iter().all(|v| v.abs() <= 1.0));
    let exact: Vec<f64> = x
        .chunks_exact(dim)
        .map(|img| {
            quadrature(-1.0, 1.0, 20_000, |z| {
                (0.5f64).ln()
                    + (0..dim)
                        .map(|i| {
                            let mu = 0.5 * (w[i] as f64 * z + b[i] as f64).tanh() + 0.5;
                            let e = img[i] as f64 - mu;
                            -0.5 * e * e / (sigma * sigma)
                                - 0.5 * (std::f64::consts::TAU * sigma * sigma).ln()
                        })
                        .sum::<f64>()
            })
        })
        .collect();
    let a = Annealing {
        chains: 32,
        steps: 1000,
        leapfrog: 5,
    };
    let fwd = forward_ais(&mut dec, &x, a, &mut rng(22));
    let rev = reverse_ais(&mut dec, &x, &z, a, &mut rng(23));
    for i in 0..exact.len() {
        assert!(
            (fwd.per_image[i] - exact[i]).abs() < 0.05,
            "image {i}: forward {} vs quadrature {}",
            fwd.per_image[i],
            exact[i]
        );
        assert!(
            (rev.per_image[i] - exact[i]).abs() < 0.05,
            "image {i}: reverse {} vs quadrature {}",
            rev.per_image[i],
            exact[i]
        );
    }
}

#[test]
fn latent_gradient_matches_finite_differences() {
    let (latent, dim) = (3, 7);
    let net = Network::mlp("decoder", latent, &[5, dim], &Layer::Tanh, 0.0).unwrap();
    let params = random_params(&net, 0.8, &mut rng(30));
    let mut r = rng(31);
    let x: Vec<f32> = (0..dim).map(|_| r.random::<f32>()).collect();
    let xb: Vec<f32> = x.iter().map(|v| v.round()).collect();
    let z: Vec<f32> = (0..latent).map(|_| r.random_range(-1.5..1.5)).collect();
    for (observation, x) in [
        (Observation::Bernoulli, &xb),
        (
            Observation::Gaussian {
                mean: GaussianMean::Sigmoid,
                sigma: 0.3,
            },
            &x,
        ),
    ] {
        let mut dec =
            NetworkDecoder::new(net.clone(), &params, observation, Prior::StandardNormal, 64);
        let (mut ll, mut grad) = (vec![0.0f64; 1], vec![0.0f32; latent]);
        dec.log_likelihood_grad(x, 1, &z, &mut ll, &mut grad);
        let h = 1e-2f32;
        for k in 0..latent {
            let (mut zp, mut zm) = (z.clone(), z.clone());
            zp[k] += h;
            zm[k] -= h;
            let (mut lp, mut lm, mut g) = (vec![0.0f64; 1], vec![0.0f64; 1], vec![0.0f32; latent]);
            dec.log_likelihood_grad(x, 1, &zp, &mut lp, &mut g);
            dec.log_likelihood_grad(x, 1, &zm, &mut lm, &mut g);
            let fd = (lp[0] - lm[0]) / (2.0 * h as f64);
            assert!(
                (fd - grad[k] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                "{observation:?} d/dz{k}: {} vs finite difference {fd}",
                grad[k]
            );
        }
    }
}
