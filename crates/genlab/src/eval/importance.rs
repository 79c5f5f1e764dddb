//! Importance-sampled log-likelihood of latent-variable models with a
//! standard normal prior and a diagonal Gaussian q(z|x) (Burda et al. 2016):
//!
//! log p(x) ~ log (1/k) sum_j p(x|z_j) p(z_j) / q(z_j|x),  z_j ~ q(z|x),
//!
//! a lower bound in expectation that tightens as k grows, next to the ELBO
//! E_q[log p(x|z)] - KL(q || p) with the KL in closed form and the
//! expectation averaged over the same k draws.

use anyhow::Result;

use crate::rng::{Purpose, fill_standard_normal, stream};

/// What the estimator needs from a model.
pub trait LatentModel {
    fn latent(&self) -> usize;
    /// Values per observation.
    fn dim(&self) -> usize;
    /// Means and log-variances of q(z|x) for rows `x` (`n x latent` each).
    fn posterior(&self, x: &[f32]) -> Result<(Vec<f32>, Vec<f32>)>;
    /// log p(x_i | z) for every row of `z`, where rows `i*s .. (i+1)*s` of `z`
    /// belong to observation `i` of `x`.
    fn log_likelihood(&self, x: &[f32], z: &[f32], s: usize) -> Result<Vec<f64>>;
}

/// Per-observation estimates.
#[derive(Debug, Clone, Default)]
pub struct Estimates {
    /// Importance-sampled log p(x) of each observation.
    pub log_px: Vec<f64>,
    /// ELBO of each observation.
    pub elbo: Vec<f64>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Standard error of the mean.
pub fn std_error(v: &[f64]) -> f64 {
    let m = mean(v);
    let n = v.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt()
}

impl Estimates {
    pub fn mean_log_px(&self) -> f64 {
        mean(&self.log_px)
    }
    pub fn mean_elbo(&self) -> f64 {
        mean(&self.elbo)
    }
}

/// Estimates for every row of `x` with `k` importance samples each. Work is
/// batched in passes of about `rows_per_pass` decoder rows; the draws depend
/// only on `seed`, the observation's position and `k` (and, for an odd
/// latent size, on the samples per pass), not on how observations are grouped.
pub fn estimate(
    model: &dyn LatentModel,
    x: &[f32],
    k: usize,
    rows_per_pass: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<Estimates> {
    let (d, l) = (model.dim(), model.latent());
    let n = x.len() / d;
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    let (mean_q, logvar_q) = model.posterior(x)?;
    let mut out = Estimates {
        log_px: Vec::with_capacity(n),
        elbo: Vec::with_capacity(n),
    };
    // Samples per pass for one observation, and observations per pass.
    let s = k.min(rows_per_pass.max(1));
    let per_pass = (rows_per_pass / s).max(1);
    let mut eps = vec![0.0f32; per_pass * s * l];
    let mut z = vec![0.0f32; per_pass * s * l];
    let mut log_w = vec![0.0f64; per_pass * s];
    for first in (0..n).step_by(per_pass) {
        let m = per_pass.min(n - first);
        // Running log-sum-exp and sum of log p(x|z) per observation.
        let mut max = vec![f64::NEG_INFINITY; m];
        let mut acc = vec![0.0f64; m];
        let mut ll_sum = vec![0.0f64; m];
        let mut rngs: Vec<_> = (0..m)
            .map(|i| stream(seed, Purpose::Importance, (first + i) as u32))
            .collect();
        let mut done = 0;
        while done < k {
            let s_now = s.min(k - done);
            for (i, rng) in rngs.iter_mut().enumerate() {
                let e = &mut eps[i * s_now * l..(i + 1) * s_now * l];
                fill_standard_normal(rng, e);
                let (mu, lv) = (
                    &mean_q[(first + i) * l..(first + i + 1) * l],
                    &logvar_q[(first + i) * l..(first + i + 1) * l],
                );
                for j in 0..s_now {
                    let mut log_q = 0.0f64;
                    let mut log_p = 0.0f64;
                    for t in 0..l {
                        let ev = e[j * l + t] as f64;
                        let sd = (0.5 * lv[t] as f64).exp();
                        let zv = mu[t] as f64 + sd * ev;
                        z[(i * s_now + j) * l + t] = zv as f32;
                        log_q += -0.5 * ev * ev - 0.5 * lv[t] as f64 - 0.5 * ln_2pi;
                        log_p += -0.5 * zv * zv - 0.5 * ln_2pi;
                    }
                    log_w[i * s_now + j] = log_p - log_q;
                }
            }
            let ll =
                model.log_likelihood(&x[first * d..(first + m) * d], &z[..m * s_now * l], s_now)?;
            for i in 0..m {
                for j in 0..s_now {
                    let r = i * s_now + j;
                    ll_sum[i] += ll[r];
                    let w = ll[r] + log_w[r];
                    if w > max[i] {
                        acc[i] = acc[i] * (max[i] - w).exp() + 1.0;
                        max[i] = w;
                    } else {
                        acc[i] += (w - max[i]).exp();
                    }
                }
            }
            done += s_now;
        }
        for i in 0..m {
            out.log_px.push(max[i] + acc[i].ln() - (k as f64).ln());
            let (mu, lv) = (
                &mean_q[(first + i) * l..(first + i + 1) * l],
                &logvar_q[(first + i) * l..(first + i + 1) * l],
            );
            let kl: f64 = mu
                .iter()
                .zip(lv)
                .map(|(&m, &v)| {
                    let (m, v) = (m as f64, v as f64);
                    0.5 * (v.exp() + m * m - 1.0 - v)
                })
                .sum();
            out.elbo.push(ll_sum[i] / k as f64 - kl);
        }
        progress(m);
    }
    Ok(out)
}
