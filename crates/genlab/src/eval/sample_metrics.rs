//! Sample-quality metrics on feature vectors: Fréchet distance
//! (FID), kernel inception distance (KID, unbiased, cubic polynomial kernel),
//! the classifier Inception Score, k-nearest-neighbour precision and recall
//! (Kynkäänniemi et al. 2019) and class coverage. Features and
//! probabilities are row-major `n x d` f32 matrices; statistics are in f64.
//! `genlab eval` computes them on the features of [`super::evaluator`].

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::seq::index::sample;

use crate::rng::{Purpose, stream};

/// Mean and covariance (normalised by n - 1) of the rows of `x` (`n x d`).
pub fn mean_cov(x: &[f32], d: usize) -> (DVector<f64>, DMatrix<f64>) {
    let n = x.len() / d;
    let mut mean = DVector::<f64>::zeros(d);
    for row in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    mean /= n as f64;
    let centred = DMatrix::<f64>::from_fn(n, d, |i, j| x[i * d + j] as f64 - mean[j]);
    let cov = centred.transpose() * &centred / (n.max(2) - 1) as f64;
    (mean, cov)
}

/// The symmetric positive semi-definite square root of `a` (eigenvalues
/// below zero, from rounding, are taken as zero).
pub fn sqrtm_psd(a: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (a + a.transpose()) * 0.5;
    let eig = SymmetricEigen::new(sym);
    let roots = eig.eigenvalues.map(|v| v.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// Fréchet distance between N(mu1, s1) and N(mu2, s2):
/// `|mu1 - mu2|^2 + tr(s1 + s2 - 2 (s1^1/2 s2 s1^1/2)^1/2)`. The product
/// under the root is symmetric, so only symmetric eigen-decompositions are
/// needed (no complex parts to discard).
pub fn frechet_distance(
    mu1: &DVector<f64>,
    s1: &DMatrix<f64>,
    mu2: &DVector<f64>,
    s2: &DMatrix<f64>,
) -> f64 {
    let r1 = sqrtm_psd(s1);
    let m = &r1 * s2 * &r1;
    let eig = SymmetricEigen::new((&m + m.transpose()) * 0.5);
    let tr_root: f64 = eig.eigenvalues.iter().map(|v| v.max(0.0).sqrt()).sum();
    (mu1 - mu2).norm_squared() + s1.trace() + s2.trace() - 2.0 * tr_root
}

/// FID between two feature sets.
pub fn fid(a: &[f32], b: &[f32], d: usize) -> f64 {
    let (m1, s1) = mean_cov(a, d);
    let (m2, s2) = mean_cov(b, d);
    frechet_distance(&m1, &s1, &m2, &s2)
}

/// Rows `idx` of `x` gathered into one matrix.
fn gather(x: &[f32], idx: &[usize], d: usize) -> Vec<f32> {
    idx.iter()
        .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
        .collect()
}

/// Sum of the cubic polynomial kernel `(x.y / d + 1)^3` over all pairs of
/// rows of `a` and `b` (`m x d` each), leaving out the diagonal when `skip_diagonal`.
fn kernel_sum(a: &[f32], b: &[f32], m: usize, d: usize, skip_diagonal: bool) -> f64 {
    let mut dots = vec![0.0f32; m * m];
    crate::cpu::matmul(&mut dots, a, b, (m, d, m), false, true, 0.0, 1.0 / d as f32);
    let mut sum = 0.0f64;
    for (i, row) in dots.chunks_exact(m).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if !(skip_diagonal && i == j) {
                sum += (v as f64 + 1.0).powi(3);
            }
        }
    }
    sum
}

/// KID: the unbiased MMD^2 with kernel `k(x, y) = (x.y / d + 1)^3`, averaged
/// over `subsets` random subsets of `subset_size` rows from each set.
/// Returns (mean, standard deviation over subsets).
pub fn kid(
    a: &[f32],
    b: &[f32],
    d: usize,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> (f64, f64) {
    let (na, nb) = (a.len() / d, b.len() / d);
    let m = subset_size.min(na).min(nb);
    assert!(m >= 2, "KID needs at least two rows per set");
    let mut rng = stream(seed, Purpose::Eval, 30);
    let values: Vec<f64> = (0..subsets.max(1))
        .map(|_| {
            let xa = gather(a, &sample(&mut rng, na, m).into_vec(), d);
            let xb = gather(b, &sample(&mut rng, nb, m).into_vec(), d);
            let mf = m as f64;
            let kxx = kernel_sum(&xa, &xa, m, d, true);
            let kyy = kernel_sum(&xb, &xb, m, d, true);
            let kxy = kernel_sum(&xa, &xb, m, d, false);
            kxx / (mf * (mf - 1.0)) + kyy / (mf * (mf - 1.0)) - 2.0 * kxy / (mf * mf)
        })
        .collect();
    mean_std(&values)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Inception Score of class probabilities (`n x classes`): per split,
/// `exp(mean_x KL(p(y|x) || p(y)))` with p(y) the split's mean; returns
/// (mean, standard deviation) over `splits` consecutive splits.
pub fn inception_score(probs: &[f32], classes: usize, splits: usize) -> (f64, f64) {
    let n = probs.len() / classes;
    let splits = splits.clamp(1, n.max(1));
    let scores: Vec<f64> = (0..splits)
        .map(|s| {
            let (lo, hi) = (s * n / splits, (s + 1) * n / splits);
            let rows = &probs[lo * classes..hi * classes];
            let count = (hi - lo) as f64;
            let mut marginal = vec![0.0f64; classes];
            for r in rows.chunks_exact(classes) {
                for (m, &p) in marginal.iter_mut().zip(r) {
                    *m += p as f64 / count;
                }
            }
            let kl: f64 = rows
                .chunks_exact(classes)
                .map(|r| {
                    r.iter()
                        .zip(&marginal)
                        .filter(|(p, _)| **p > 0.0)
                        .map(|(&p, &m)| p as f64 * ((p as f64).ln() - m.ln()))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / count;
            kl.exp()
        })
        .collect();
    mean_std(&scores)
}

/// Squared Euclidean distances between every row of `a` and every row of `b`
/// (`na x nb`), through one matrix product.
fn squared_distances(a: &[f32], b: &[f32], d: usize) -> Vec<f32> {
    let (na, nb) = (a.len() / d, b.len() / d);
    let norms = |x: &[f32]| -> Vec<f32> {
        x.chunks_exact(d)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect()
    };
    let (an, bn) = (norms(a), norms(b));
    let mut out = vec![0.0f32; na * nb];
    crate::cpu::matmul(&mut out, a, b, (na, d, nb), false, true, 0.0, -2.0);
    for (i, row) in out.chunks_exact_mut(nb).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v + an[i] + bn[j]).max(0.0);
        }
    }
    out
}

/// Squared distance from each row of `x` to its k-th nearest other row.
fn knn_radii(x: &[f32], d: usize, k: usize) -> Vec<f32> {
    let n = x.len() / d;
    let mut radii = Vec::with_capacity(n);
    // Blocks of rows keep the distance matrix small.
    for start in (0..n).step_by(1024) {
        let end = (start + 1024).min(n);
        let dist = squared_distances(&x[start * d..end * d], x, d);
        for (i, row) in dist.chunks_exact(n).enumerate() {
            let mut r: Vec<f32> = row
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != start + i)
                .map(|(_, &v)| v)
                .collect();
            let kk = k.min(r.len()).max(1) - 1;
            r.select_nth_unstable_by(kk, f32::total_cmp);
            radii.push(r[kk]);
        }
    }
    radii
}

/// Fraction of rows of `query` inside at least one ball (centre a row of
/// `manifold`, squared radius from `radii`).
fn coverage(query: &[f32], manifold: &[f32], radii: &[f32], d: usize) -> f64 {
    let (nq, nm) = (query.len() / d, manifold.len() / d);
    let mut inside = 0usize;
    for start in (0..nq).step_by(1024) {
        let end = (start + 1024).min(nq);
        let dist = squared_distances(&query[start * d..end * d], manifold, d);
        inside += dist
            .chunks_exact(nm)
            .filter(|row| row.iter().zip(radii).any(|(v, r)| v <= r))
            .count();
    }
    inside as f64 / nq.max(1) as f64
}

/// Improved precision and recall with k-nearest-neighbour manifolds
/// (Kynkäänniemi et al. 2019): precision is the fraction of generated rows
/// inside the real manifold, recall the fraction of real rows inside the
/// generated one.
pub fn precision_recall(real: &[f32], generated: &[f32], d: usize, k: usize) -> (f64, f64) {
    let real_radii = knn_radii(real, d, k);
    let gen_radii = knn_radii(generated, d, k);
    (
        coverage(generated, real, &real_radii, d),
        coverage(real, generated, &gen_radii, d),
    )
}

/// Predicted-class histogram (fractions) and the number of classes that
/// receive at least `min_fraction` of the samples.
pub fn class_coverage(probs: &[f32], classes: usize, min_fraction: f64) -> (Vec<f64>, usize) {
    let n = probs.len() / classes;
    let mut hist = vec![0.0f64; classes];
    for r in probs.chunks_exact(classes) {
        let best = r
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        hist[best] += 1.0 / n.max(1) as f64;
    }
    let covered = hist.iter().filter(|&&f| f >= min_fraction).count();
    (hist, covered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::fill_standard_normal;

    fn gaussian(n: usize, mean: &[f32], scale: &[f32], seed: u64) -> Vec<f32> {
        let d = mean.len();
        let mut z = vec![0.0f32; n * d];
        fill_standard_normal(&mut stream(seed, Purpose::Fixed, 9), &mut z);
        z.chunks_exact_mut(d)
            .flat_map(|r| {
                r.iter()
                    .zip(mean)
                    .zip(scale)
                    .map(|((v, m), s)| m + s * v)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn square_root_squares_back() {
        let mut rng = stream(1, Purpose::Fixed, 0);
        let b = DMatrix::<f64>::from_fn(6, 6, |_, _| rand::RngExt::random::<f64>(&mut rng) - 0.5);
        let a = &b * b.transpose();
        let r = sqrtm_psd(&a);
        assert!((&r * &r - &a).abs().max() < 1e-10);
    }

    #[test]
    fn frechet_distance_matches_closed_forms() {
        // Self: zero.
        let x = gaussian(2000, &[0.0, 1.0, -2.0], &[1.0, 0.5, 2.0], 1);
        assert!(fid(&x, &x, 3).abs() < 1e-3);
        // Commuting (diagonal) covariances: |dmu|^2 + sum (sigma1 - sigma2)^2.
        let mu1 = DVector::from_vec(vec![0.0, 1.0]);
        let mu2 = DVector::from_vec(vec![3.0, -1.0]);
        let s1 = DMatrix::from_diagonal(&DVector::from_vec(vec![4.0, 1.0]));
        let s2 = DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 9.0]));
        let want = 9.0 + 4.0 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2);
        assert!((frechet_distance(&mu1, &s1, &mu2, &s2) - want).abs() < 1e-9);
        // Non-commuting 2x2: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for PSD M.
        let s1 = DMatrix::from_row_slice(2, 2, &[2.0, 0.8, 0.8, 1.0]);
        let s2 = DMatrix::from_row_slice(2, 2, &[1.0, -0.3, -0.3, 3.0]);
        let r1 = sqrtm_psd(&s1);
        let m = &r1 * &s2 * &r1;
        let tr_root = (m.trace() + 2.0 * m.determinant().sqrt()).sqrt();
        let want = s1.trace() + s2.trace() - 2.0 * tr_root;
        let zero = DVector::zeros(2);
        assert!((frechet_distance(&zero, &s1, &zero, &s2) - want).abs() < 1e-9);
        // Samples from two known Gaussians approach the closed form.
        let a = gaussian(20_000, &[0.0, 0.0], &[1.0, 2.0], 2);
        let b = gaussian(20_000, &[1.0, 0.0], &[2.0, 2.0], 3);
        let want = 1.0 + 1.0;
        assert!((fid(&a, &b, 2) - want).abs() < 0.1, "{}", fid(&a, &b, 2));
    }

    #[test]
    fn kid_is_about_zero_for_one_distribution_and_positive_otherwise() {
        let a = gaussian(2000, &[0.0; 4], &[1.0; 4], 4);
        let b = gaussian(2000, &[0.0; 4], &[1.0; 4], 5);
        let (same, sd) = kid(&a, &b, 4, 20, 500, 0);
        assert!(same.abs() < 3.0 * sd.max(1e-3), "{same} +- {sd}");
        let c = gaussian(2000, &[1.0; 4], &[1.0; 4], 6);
        let (diff, _) = kid(&a, &c, 4, 20, 500, 0);
        assert!(diff > 0.1 && diff > 20.0 * same.abs(), "{diff} vs {same}");
    }

    #[test]
    fn inception_score_of_confident_uniform_classes_is_ten() {
        let n = 1000;
        let probs: Vec<f32> = (0..n)
            .flat_map(|i| (0..10).map(move |c| if c == i % 10 { 1.0 } else { 0.0 }))
            .collect();
        let (is, sd) = inception_score(&probs, 10, 10);
        assert!((is - 10.0).abs() < 1e-9 && sd < 1e-9, "{is} {sd}");
        // One class only: 1.
        let one: Vec<f32> = (0..n)
            .flat_map(|_| (0..10).map(|c| (c == 3) as u8 as f32))
            .collect();
        assert!((inception_score(&one, 10, 10).0 - 1.0).abs() < 1e-9);
        let (hist, covered) = class_coverage(&probs, 10, 0.05);
        assert_eq!(covered, 10);
        assert!(hist.iter().all(|f| (f - 0.1).abs() < 1e-9));
        assert_eq!(class_coverage(&one, 10, 0.05).1, 1);
    }

    #[test]
    fn precision_and_recall_see_overlap_and_missing_modes() {
        let real = gaussian(1000, &[0.0, 0.0], &[1.0, 1.0], 7);
        let (p, r) = precision_recall(&real, &real, 2, 3);
        assert_eq!((p, r), (1.0, 1.0));
        let far = gaussian(1000, &[50.0, 50.0], &[1.0, 1.0], 8);
        assert_eq!(precision_recall(&real, &far, 2, 3), (0.0, 0.0));
        // Generated samples covering only half of the real modes: precision
        // stays high, recall drops to about a half.
        let two_modes: Vec<f32> = gaussian(500, &[-10.0, 0.0], &[1.0, 1.0], 9)
            .into_iter()
            .chain(gaussian(500, &[10.0, 0.0], &[1.0, 1.0], 10))
            .collect();
        let one_mode = gaussian(1000, &[-10.0, 0.0], &[1.0, 1.0], 11);
        let (p, r) = precision_recall(&two_modes, &one_mode, 2, 3);
        assert!(
            p > 0.9 && (r - 0.5).abs() < 0.1,
            "precision {p}, recall {r}"
        );
    }
}
