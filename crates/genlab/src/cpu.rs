//! CPU kernels for models that need no autodiff (the RBM): matrix products on
//! host buffers through `gemm` (the library burn's flex backend uses), and
//! fused elementwise passes (bias + sigmoid + Bernoulli draw in one sweep).
//!
//! Random draws here are counter-based: element `i` of a pass keyed `key` gets
//! `uniform(key, i)`, so results do not depend on how rayon splits the work.

use rayon::prelude::*;

/// `c (m x n) = alpha * c + beta * op(a) * op(b)`, row-major buffers.
/// `op(a)` is m x k: `a` is stored m x k, or k x m when `a_t`. Likewise `op(b)`
/// is k x n: `b` is stored k x n, or n x k when `b_t`. With `alpha == 0`, `c`
/// is overwritten without being read.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    a_t: bool,
    b_t: bool,
    alpha: f32,
    beta: f32,
) {
    assert!(
        c.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "matmul: buffers too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    // (column stride, row stride) of each operand as seen by the product.
    let (a_cs, a_rs) = if a_t {
        (m as isize, 1)
    } else {
        (1, k as isize)
    };
    let (b_cs, b_rs) = if b_t {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    // SAFETY: the asserts above keep every index the strides reach inside the
    // buffers; `c` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            alpha != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            alpha,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// SplitMix64's output function: a good 64-bit mix.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `i`-th uniform draw in [0, 1) of the stream `key` (SplitMix64 at position i).
#[inline(always)]
pub fn uniform(key: u64, i: u64) -> f32 {
    let bits = mix64(key.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    (bits >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// log(1 + e^x), stable for large |x|.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Rows per rayon task in elementwise passes: enough work to beat the task overhead.
const ROWS_PER_TASK: usize = 8;

/// In place: `x[r, j] = sigmoid(x[r, j] + bias[j])` (probabilities), and, when
/// `samples` is given, `samples[r, j] = 1` if `uniform(key, r * n + j) < x[r, j]` else 0.
pub fn sigmoid_bernoulli(x: &mut [f32], bias: &[f32], samples: Option<&mut [f32]>, key: u64) {
    let n = bias.len();
    assert_eq!(x.len() % n, 0);
    let chunk = ROWS_PER_TASK * n;
    match samples {
        Some(s) => {
            assert_eq!(s.len(), x.len());
            x.par_chunks_mut(chunk)
                .zip(s.par_chunks_mut(chunk))
                .enumerate()
                .for_each(|(t, (xc, sc))| {
                    let base = (t * chunk) as u64;
                    for (r, (xr, sr)) in xc.chunks_mut(n).zip(sc.chunks_mut(n)).enumerate() {
                        let row = base + (r * n) as u64;
                        for j in 0..n {
                            let p = sigmoid(xr[j] + bias[j]);
                            xr[j] = p;
                            sr[j] = (uniform(key, row + j as u64) < p) as u8 as f32;
                        }
                    }
                });
        }
        None => x.par_chunks_mut(chunk).for_each(|xc| {
            for xr in xc.chunks_mut(n) {
                for (v, b) in xr.iter_mut().zip(bias) {
                    *v = sigmoid(*v + b);
                }
            }
        }),
    }
}

/// Sums of each column of a row-major `rows x n` matrix (into `out`, overwritten).
pub fn column_sums(x: &[f32], n: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in x.chunks_exact(n) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        c
    }

    fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0.0; x.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn matmul_matches_naive_with_every_transpose_and_scaling() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37) % 17) as f32 / 7.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 11) % 13) as f32 / 5.0 - 1.0)
            .collect();
        let want = naive(&a, &b, m, k, n);
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        for (aa, ta) in [(&a, false), (&at, true)] {
            for (bb, tb) in [(&b, false), (&bt, true)] {
                let mut c = vec![f32::NAN; m * n];
                matmul(&mut c, aa, bb, (m, k, n), ta, tb, 0.0, 1.0);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-4, "{x} vs {y}");
                }
            }
        }
        let mut c = vec![1.0; m * n];
        matmul(&mut c, &a, &b, (m, k, n), false, false, 0.5, 2.0);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - (0.5 + 2.0 * y)).abs() < 1e-4);
        }
    }

    #[test]
    fn uniform_draws_are_uniform_and_keyed() {
        let n = 200_000;
        let xs: Vec<f32> = (0..n).map(|i| uniform(42, i)).collect();
        let mean = xs.iter().sum::<f32>() / n as f32;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        let below = xs.iter().filter(|&&x| x < 0.1).count() as f32 / n as f32;
        assert!((below - 0.1).abs() < 0.005);
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert_ne!(uniform(1, 0), uniform(2, 0));
    }

    #[test]
    fn sigmoid_bernoulli_gives_probabilities_and_matching_draws() {
        let n = 50;
        let rows = 400;
        let bias: Vec<f32> = (0..n).map(|j| j as f32 / 10.0 - 2.5).collect();
        let mut x = vec![0.0f32; rows * n];
        let mut s = vec![0.0f32; rows * n];
        sigmoid_bernoulli(&mut x, &bias, Some(&mut s), 9);
        for j in 0..n {
            let p = sigmoid(bias[j]);
            assert!((x[j] - p).abs() < 1e-6);
            let freq = (0..rows).map(|r| s[r * n + j]).sum::<f32>() / rows as f32;
            assert!((freq - p).abs() < 0.1, "column {j}: {freq} vs {p}");
        }
        // Same key, same draws; the draw for element i is uniform(key, i) < p.
        let mut x2 = vec![0.0f32; rows * n];
        let mut s2 = vec![0.0f32; rows * n];
        sigmoid_bernoulli(&mut x2, &bias, Some(&mut s2), 9);
        assert_eq!(s, s2);
        assert_eq!(s[77], (uniform(9, 77) < x[77]) as u8 as f32);
    }

    #[test]
    fn softplus_is_stable() {
        assert!((softplus(0.0) - 2f32.ln()).abs() < 1e-6);
        assert_eq!(softplus(100.0), 100.0);
        assert!(softplus(-100.0) > 0.0 && softplus(-100.0) < 1e-40);
    }
}
