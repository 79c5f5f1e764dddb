//! The log partition function of a binary RBM: exactly by enumerating the
//! hidden layer (small H), and by annealed importance sampling (Salakhutdinov
//! & Murray 2008) from a base-rate model otherwise.
//!
//! The annealing path between a base model A (visible biases `b_a`, no
//! weights) and the RBM B is
//! log p*_beta(v) = (1-beta) b_a'v + beta vb'v + sum_j softplus(beta (W'v + hb)_j),
//! so p*_1 = exp(-F(v)) and, since softplus(0) = log 2, p*_0 is the base model
//! with H free hidden units: log Z_0 = sum_i softplus(b_a,i) + H log 2.

use rayon::prelude::*;

use crate::cpu::{Ones, sigmoid, softplus, sum, uniform};
use crate::models::rbm::Rbm;
use crate::models::rbm::kernel::{BinaryProducts, GATHER_BELOW};
use crate::rng::GenRng;
use crate::simd_fn;
use rand::Rng;

const LN2: f64 = std::f64::consts::LN_2;

/// log(sum(exp(x))) of f64 values, stable.
pub fn log_sum_exp(x: &[f64]) -> f64 {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// The log of the mean of the weights exp(`log_w`) of an image's chains,
/// and the variance of that mean relative to its square (the delta
/// method's variance of the log; 0 for one chain).
pub fn log_mean_weight(log_w: &[f64]) -> (f64, f64) {
    let m = log_w.len();
    let log_mean = log_sum_exp(log_w) - (m as f64).ln();
    if m < 2 {
        return (log_mean, 0.0);
    }
    let var = log_w
        .iter()
        .map(|l| ((l - log_mean).exp() - 1.0).powi(2))
        .sum::<f64>()
        / (m - 1) as f64;
    (log_mean, var / m as f64)
}

/// Exact log Z by summing over all 2^H hidden configurations:
/// log Z = log sum_h exp(hb'h) prod_i (1 + exp(vb_i + W_i h)). Practical for H <= 24.
pub fn exact_log_z(rbm: &Rbm) -> f64 {
    let (nv, nh) = (rbm.visible, rbm.hidden);
    assert!(
        nh <= 30,
        "exact log Z enumerates 2^H states; H = {nh} is too many"
    );
    let total: u64 = 1 << nh;
    let block: u64 = 2048.min(total);
    let blocks: Vec<u64> = (0..total.div_ceil(block)).collect();
    let partial: Vec<f64> = blocks
        .par_iter()
        .map(|&bi| {
            let start = bi * block;
            let n = block.min(total - start) as usize;
            let mut h = vec![0.0f32; n * nh];
            for r in 0..n {
                let code = start + r as u64;
                for j in 0..nh {
                    h[r * nh + j] = ((code >> j) & 1) as f32;
                }
            }
            // pre = h W' (n x V); single-threaded inside: the blocks are parallel.
            let mut pre = vec![0.0f32; n * nv];
            for r in 0..n {
                let row = &mut pre[r * nv..(r + 1) * nv];
                row.copy_from_slice(&rbm.vb);
                for j in 0..nh {
                    if h[r * nh + j] != 0.0 {
                        for (p, w) in row.iter_mut().zip(rbm.w.iter().skip(j).step_by(nh)) {
                            *p += w;
                        }
                    }
                }
            }
            let terms: Vec<f64> = (0..n)
                .map(|r| {
                    let hb: f64 = (0..nh).map(|j| (rbm.hb[j] * h[r * nh + j]) as f64).sum();
                    hb + pre[r * nv..(r + 1) * nv]
                        .iter()
                        .map(|&x| softplus(x) as f64)
                        .sum::<f64>()
                })
                .collect();
            log_sum_exp(&terms)
        })
        .collect();
    log_sum_exp(&partial)
}

/// The inverse temperatures: Salakhutdinov & Murray's piecewise-linear
/// schedule (dense near 1: 500 steps to 0.5, 4,000 to 0.9, 10,000 to 1 out of
/// 14,500), scaled to `steps` intermediate distributions.
pub fn schedule(steps: usize) -> Vec<f64> {
    let steps = steps.max(3);
    let n1 = (steps * 500 / 14_500).max(1);
    let n2 = (steps * 4_000 / 14_500).max(1);
    let n3 = steps - n1 - n2;
    let mut betas = Vec::with_capacity(steps + 1);
    betas.push(0.0);
    for (from, to, n) in [(0.0, 0.5, n1), (0.5, 0.9, n2), (0.9, 1.0, n3)] {
        for i in 1..=n {
            betas.push(from + (to - from) * i as f64 / n as f64);
        }
    }
    betas
}

/// Visible biases of the base-rate model: the log-odds of each pixel's mean
/// over binary training data, smoothed so that no bias is infinite.
pub fn base_rate_biases(binary_data: &[f32], visible: usize) -> Vec<f32> {
    let rows = binary_data.len() / visible;
    let mut mean = vec![0.0f64; visible];
    for row in binary_data.chunks_exact(visible) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64;
        }
    }
    // Add-0.5 smoothing (a Jeffreys prior): p = (count + 0.5) / (n + 1).
    mean.iter()
        .map(|&c| {
            let p = (c + 0.5) / (rows as f64 + 1.0);
            (p / (1.0 - p)).ln() as f32
        })
        .collect()
}

simd_fn! {
    /// One chain's hidden layer at inverse temperature b_k, from the
    /// pre-activations `a = W'v`: samples `h`, and returns the weight increment
    /// sum_j softplus(b_k x_j) - softplus(b_prev x_j) with x = a + hb.
    fn hidden_step(a: &[f32], h: &mut [f32], diff: &mut [f32], hb: &[f32], betas: (f32, f32), key: u64, first: u32) -> f32 {
        let (b_prev, b_k) = betas;
        for (j, (((a, h), d), hb)) in a.iter().zip(h.iter_mut()).zip(diff.iter_mut()).zip(hb).enumerate() {
            let x = a + hb;
            let xk = b_k * x;
            *d = softplus(xk) - softplus(b_prev * x);
            *h = if uniform(key, first + j as u32) < sigmoid(xk) { 1.0 } else { 0.0 };
        }
        sum(diff)
    }
}

simd_fn! {
    /// One chain's visible layer at b_k from `wh = W h`: samples `v` and
    /// returns (vb - base)'v (reusing `wh` as scratch).
    #[allow(clippy::too_many_arguments)]
    fn visible_step(v: &mut [f32], wh: &mut [f32], base: &[f32], vb: &[f32], delta: &[f32], b_k: f32, key: u64, first: u32) -> f32 {
        let cols = v.iter_mut().zip(wh.iter_mut()).zip(base).zip(vb).zip(delta);
        for (i, ((((v, p), b0), vb), db)) in cols.enumerate() {
            let x = (1.0 - b_k) * b0 + b_k * (vb + *p);
            *v = if uniform(key, first + i as u32) < sigmoid(x) { 1.0 } else { 0.0 };
            *p = *v * db;
        }
        sum(wh)
    }
}

/// An AIS estimate of log Z.
#[derive(Debug, Clone)]
pub struct AisEstimate {
    pub log_z: f64,
    /// log(mean - 3 standard errors) of the importance weights (-inf if that is <= 0).
    pub log_z_low: f64,
    /// log(mean + 3 standard errors).
    pub log_z_high: f64,
    pub runs: usize,
    pub steps: usize,
}

/// Runs `runs` AIS chains in parallel as one batch from the base model with
/// visible biases `base`, over `steps` intermediate distributions.
pub fn ais_log_z(
    rbm: &Rbm,
    base: &[f32],
    runs: usize,
    steps: usize,
    rng: &mut GenRng,
) -> AisEstimate {
    let nv = rbm.visible;
    let betas = schedule(steps);
    // v ~ p_0: independent Bernoulli(sigmoid(base)).
    let key = rng.next_u64();
    let mut v: Vec<f32> = (0..runs * nv)
        .map(|i| (uniform(key, i as u32) < sigmoid(base[i % nv])) as u8 as f32)
        .collect();
    let upward = betas.windows(2).map(|b| (b[0] as f32, b[1] as f32));
    let log_w = anneal(rbm, base, &mut v, upward, rng);
    // log Z = log Z_0 + log mean(w); uncertainty from the standard error of the mean.
    let m = log_w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let r: Vec<f64> = log_w.iter().map(|l| (l - m).exp()).collect();
    let n = runs as f64;
    let mean = r.iter().sum::<f64>() / n;
    let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let se = (var / n).sqrt();
    let log_z0 = base_log_z(rbm, base);
    let log = |x: f64| {
        if x > 0.0 {
            x.ln() + m + log_z0
        } else {
            f64::NEG_INFINITY
        }
    };
    AisEstimate {
        log_z: log(mean),
        log_z_low: log(mean - 3.0 * se),
        log_z_high: log(mean + 3.0 * se),
        runs,
        steps: betas.len() - 1,
    }
}

/// log Z_0 of the base model with visible biases `base` and the RBM's
/// hidden units free: sum_i softplus(base_i) + H log 2.
pub fn base_log_z(rbm: &Rbm, base: &[f32]) -> f64 {
    base.iter().map(|&b| softplus(b) as f64).sum::<f64>() + rbm.hidden as f64 * LN2
}

/// Moves the chains `v` (rows of visible states, in place) along the path
/// from the base model to the RBM (module docs), one transition per
/// `(b_prev, b_k)` pair: the log weight of each chain gains
/// log p*_{b_k}(v) - log p*_{b_prev}(v) at its current state, then h and v
/// are drawn from the Gibbs kernel at b_k. AIS runs the pairs upwards from
/// 0; RAISE downwards from 1 (its first pair (1, 1), a plain Gibbs step of
/// the RBM, gains nothing). Returns the log weights. The draws are keyed by
/// each element's place, so the result does not depend on the threads.
pub(crate) fn anneal(
    rbm: &Rbm,
    base: &[f32],
    v: &mut [f32],
    transitions: impl Iterator<Item = (f32, f32)>,
    rng: &mut GenRng,
) -> Vec<f64> {
    let (nv, nh) = (rbm.visible, rbm.hidden);
    let runs = v.len() / nv;
    let delta_bias: Vec<f32> = rbm.vb.iter().zip(base).map(|(a, b)| a - b).collect();
    // c[r] = (vb - base)'v_r, kept up to date as v changes.
    let mut c: Vec<f64> = v
        .chunks_exact(nv)
        .map(|row| {
            row.iter()
                .zip(&delta_bias)
                .map(|(x, d)| (x * d) as f64)
                .sum()
        })
        .collect();
    let mut log_w = vec![0.0f64; runs];
    let mut a = vec![0.0f32; runs * nh];
    let mut h = vec![0.0f32; runs * nh];
    let mut pv = vec![0.0f32; runs * nv];
    let mut diff = vec![0.0f32; runs * nh];
    // Both layers are binary: sparse ones are multiplied as sums of the
    // weight rows they select (as in training's Gibbs chain).
    let mut products = BinaryProducts::default();
    products.fill(&rbm.w, nv, nh);
    let mut ones = Ones::default();
    const ROWS: usize = 4;
    for (b_prev, b_k) in transitions {
        let d_beta = (b_k - b_prev) as f64;
        products.up(&rbm.w, (nv, nh), v, &mut a, &mut ones, GATHER_BELOW);
        let key_h = rng.next_u64();
        // Weight update and hidden sample at beta_k, fused per row.
        a.par_chunks(ROWS * nh)
            .zip(h.par_chunks_mut(ROWS * nh))
            .zip(diff.par_chunks_mut(ROWS * nh))
            .zip(log_w.par_chunks_mut(ROWS))
            .zip(c.par_chunks(ROWS))
            .enumerate()
            .for_each(|(t, ((((ac, hc), dc), lw), cc))| {
                let rows = ac
                    .chunks_exact(nh)
                    .zip(hc.chunks_exact_mut(nh))
                    .zip(dc.chunks_exact_mut(nh));
                for (r, ((ar, hr), dr)) in rows.enumerate() {
                    let first = ((t * ROWS + r) * nh) as u32;
                    let d = hidden_step(ar, hr, dr, &rbm.hb, (b_prev, b_k), key_h, first);
                    lw[r] += d as f64 + d_beta * cc[r];
                }
            });
        // v ~ p(v | h) at beta_k: sigmoid((1-beta) base + beta (vb + W h)).
        products.down(&rbm.w, (nv, nh), &h, &mut pv, &mut ones, GATHER_BELOW);
        let key_v = rng.next_u64();
        v.par_chunks_mut(ROWS * nv)
            .zip(pv.par_chunks_mut(ROWS * nv))
            .zip(c.par_chunks_mut(ROWS))
            .enumerate()
            .for_each(|(t, ((vc, pc), cc))| {
                for (r, (vr, pr)) in vc
                    .chunks_exact_mut(nv)
                    .zip(pc.chunks_exact_mut(nv))
                    .enumerate()
                {
                    let first = ((t * ROWS + r) * nv) as u32;
                    cc[r] =
                        visible_step(vr, pr, base, &rbm.vb, &delta_bias, b_k, key_v, first) as f64;
                }
            });
    }
    log_w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_increasing_from_0_to_1_with_the_requested_length() {
        let b = schedule(10_000);
        assert_eq!(b.len(), 10_001);
        assert_eq!((b[0], *b.last().unwrap()), (0.0, 1.0));
        assert!(b.windows(2).all(|w| w[1] > w[0]));
        // Dense near 1: the last tenth of the range gets most of the steps.
        assert!(b.iter().filter(|&&x| x > 0.9).count() > 6_000);
    }

    fn estimate(log_z: f64, low: f64, high: f64) -> AisEstimate {
        AisEstimate {
            log_z,
            log_z_low: low,
            log_z_high: high,
            runs: 100,
            steps: 1000,
        }
    }

    #[test]
    fn combine_pools_agreeing_estimates_and_keeps_the_larger_of_disagreeing_ones() {
        // Disjoint intervals: one run missed mass; keep the larger.
        let (z, rule) = combine(
            &estimate(218.6, 218.4, 218.8),
            &estimate(240.0, 239.8, 240.2),
        );
        assert_eq!((z, rule), (240.0, "larger"));
        // Overlapping: a heavy-tailed estimate (unbounded below) barely counts.
        let (z, rule) = combine(
            &estimate(292.5, f64::NEG_INFINITY, 293.6),
            &estimate(291.3, 290.8, 291.6),
        );
        assert_eq!(rule, "pooled");
        assert!((z - 291.3).abs() < 0.05, "{z}");
        // Two equally good estimates: their Z values are averaged.
        let (z, _) = combine(
            &estimate(100.0, 99.9, 100.1),
            &estimate(100.02, 99.92, 100.12),
        );
        assert!(z > 100.0 && z < 100.02, "{z}");
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-9);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY]), f64::NEG_INFINITY);
    }
}

/// log Z from two AIS runs started from different base models.
#[derive(Debug, Clone)]
pub struct TwoBaseEstimate {
    pub from_base_rates: AisEstimate,
    pub from_model_biases: AisEstimate,
    /// The estimate genlab reports (see [`combine`]).
    pub log_z: f64,
    /// How it was chosen: "pooled" or "larger".
    pub rule: &'static str,
}

/// Combines two AIS estimates of the same log Z. When their log(mean -/+ 3
/// s.e.) intervals overlap, they agree within noise and are pooled with
/// inverse-variance weights (a run whose weights are heavy-tailed counts for
/// little). When they do not, at least one missed probability mass, which
/// AIS can only underestimate: the larger is kept (SPEC section 1), so the
/// likelihood is never flattered.
pub fn combine(a: &AisEstimate, b: &AisEstimate) -> (f64, &'static str) {
    let overlap = a.log_z_low <= b.log_z_high && b.log_z_low <= a.log_z_high;
    if !overlap {
        return (a.log_z.max(b.log_z), "larger");
    }
    // Work with Z / exp(m) to stay in range.
    let m = a.log_z.max(b.log_z);
    let stats = |e: &AisEstimate| {
        let z = (e.log_z - m).exp();
        let se = (((e.log_z_high - m).exp() - z) / 3.0).max(z * 1e-12);
        (z, 1.0 / (se * se))
    };
    let ((za, wa), (zb, wb)) = (stats(a), stats(b));
    (m + ((wa * za + wb * zb) / (wa + wb)).ln(), "pooled")
}

/// AIS from the base-rate model fitted to `binary_train` and from the model's
/// own visible biases, `runs` chains each, combined by [`combine`].
pub fn two_base_log_z(
    rbm: &Rbm,
    binary_train: &[f32],
    runs: usize,
    steps: usize,
    seed: u64,
) -> TwoBaseEstimate {
    use crate::rng::{Purpose, stream};
    let base = base_rate_biases(binary_train, rbm.visible);
    let from_base_rates = ais_log_z(rbm, &base, runs, steps, &mut stream(seed, Purpose::Eval, 0));
    let from_model_biases = ais_log_z(
        rbm,
        &rbm.vb,
        runs,
        steps,
        &mut stream(seed, Purpose::Eval, 1),
    );
    let (log_z, rule) = combine(&from_base_rates, &from_model_biases);
    TwoBaseEstimate {
        from_base_rates,
        from_model_biases,
        log_z,
        rule,
    }
}
