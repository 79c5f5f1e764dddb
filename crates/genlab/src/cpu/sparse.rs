//! Products with a sparse real-valued matrix on the left, for a dense
//! layer whose input is mostly zeros (MNIST pixels: about 19% are not):
//! the input by its nonzero values row by row ([`SparseRows`]), and each
//! output row as the weighted sum of the weight rows those values select
//! ([`sparse_product`]). The layer's weight gradient `x' dy` is the same
//! product with the input's transpose ([`SparseRows::transpose_into`]).
//! Against `gemm` on a 64 x 784 x 256 product with MNIST rows (one core,
//! `cargo bench --bench sparse`), about a fifth of the arithmetic at a
//! lower rate (the selected rows come from L2, not from packed panels).

use rayon::prelude::*;

use super::{ROWS_PER_TASK, gather::nonzero_mask, has_avx512f, is_serial};

/// Below this fraction of nonzero inputs a dense layer uses
/// [`sparse_product`] instead of `gemm`. The two break even at about 0.45
/// on the benchmark's shape; below that margin the sparse product's rate
/// varies more with the rows' patterns.
pub const SPARSE_BELOW: f32 = 0.3;

/// The fraction of `x`'s values that are not zero (one read, no writes).
pub fn nonzero_fraction(x: &[f32]) -> f32 {
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder().iter().filter(|&&v| v != 0.0).count();
    let ones: usize = chunks.map(|c| nonzero_mask(c).count_ones() as usize).sum();
    (ones + tail) as f32 / x.len().max(1) as f32
}

/// A matrix (rows x cols) by its nonzero values, row by row: row `r`'s are
/// `values[offsets[r]..offsets[r + 1]]` at columns `columns[..]`, ascending.
#[derive(Debug, Clone, Default)]
pub struct SparseRows {
    offsets: Vec<usize>,
    columns: Vec<u32>,
    values: Vec<f32>,
    cols: usize,
}

impl SparseRows {
    /// Indexes `x` (rows of `cols` values); returns the fraction of nonzeros.
    pub fn index(&mut self, x: &[f32], cols: usize) -> f32 {
        assert!(
            cols > 0 && x.len().is_multiple_of(cols),
            "sparse index: ragged rows"
        );
        self.cols = cols;
        // Room for every value (only ever grows); `nonzeros` is the count.
        if self.columns.len() < x.len() {
            self.columns.resize(x.len(), 0);
            self.values.resize(x.len(), 0.0);
        }
        self.offsets.clear();
        self.offsets.push(0);
        let mut k = 0;
        for row in x.chunks_exact(cols) {
            k = compress_row(row, &mut self.columns[k..], &mut self.values[k..]) + k;
            self.offsets.push(k);
        }
        k as f32 / x.len().max(1) as f32
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Writes the transpose (cols x rows) into `out`, each of its rows in
    /// ascending order of this matrix's rows (a counting sort).
    pub fn transpose_into(&self, out: &mut SparseRows) {
        let rows = self.rows();
        out.cols = rows;
        out.offsets.clear();
        out.offsets.resize(self.cols + 1, 0);
        for &c in &self.columns[..self.offsets[rows]] {
            out.offsets[c as usize + 1] += 1;
        }
        for c in 0..self.cols {
            out.offsets[c + 1] += out.offsets[c];
        }
        let nonzeros = self.offsets[rows];
        if out.columns.len() < nonzeros {
            out.columns.resize(nonzeros, 0);
            out.values.resize(nonzeros, 0.0);
        }
        // `next[c]`: where column c's next entry goes.
        let mut next = out.offsets[..self.cols].to_vec();
        for r in 0..rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let at = &mut next[c as usize];
                out.columns[*at] = r as u32;
                out.values[*at] = v;
                *at += 1;
            }
        }
    }

    fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let span = self.offsets[r]..self.offsets[r + 1];
        (&self.columns[span.clone()], &self.values[span])
    }
}

/// Writes the nonzeros of `row` (their columns and values, in order) at the
/// start of `columns` and `values` (room for the whole row); returns their
/// count. With AVX-512, sixteen values at a time by compressing stores.
fn compress_row(row: &[f32], columns: &mut [u32], values: &mut [f32]) -> usize {
    assert!(columns.len() >= row.len() && values.len() >= row.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; `columns` and `values` have room
            // for the whole row (asserted above).
            return unsafe { compress_row_avx512(row, columns, values) };
        }
    }
    let mut k = 0;
    for (j, &v) in row.iter().enumerate() {
        if v != 0.0 {
            columns[k] = j as u32;
            values[k] = v;
            k += 1;
        }
    }
    k
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn compress_row_avx512(row: &[f32], columns: &mut [u32], values: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let mut k = 0;
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        // SAFETY: `chunk` holds 16 values; 16 are stored at `k`, and `k`
        // (the nonzeros before this chunk) is at most `c * 16`, so they end
        // inside the room for the row.
        unsafe {
            let v = _mm512_loadu_ps(chunk.as_ptr());
            let mask = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(v, _mm512_setzero_ps());
            let at = _mm512_add_epi32(lanes, _mm512_set1_epi32((c * 16) as i32));
            // Compressed in registers, stored whole (a compressing store to
            // memory is microcoded on AMD's Zen 4, several times slower).
            _mm512_storeu_ps(
                values.as_mut_ptr().add(k),
                _mm512_maskz_compress_ps(mask, v),
            );
            _mm512_storeu_si512(
                columns.as_mut_ptr().add(k) as *mut __m512i,
                _mm512_maskz_compress_epi32(mask, at),
            );
            k += mask.count_ones() as usize;
        }
    }
    let base = row.len() - tail.len();
    for (j, &v) in tail.iter().enumerate() {
        if v != 0.0 {
            columns[k] = (base + j) as u32;
            values[k] = v;
            k += 1;
        }
    }
    k
}

/// `out (rows x n) = x @ w` for a sparse `x` (rows x m) and a row-major `w`
/// (m x n): each output row is the sum of `x[r, i] w[i, :]` over its
/// nonzeros in ascending `i`, so each value's order of
/// additions is fixed and the result does not depend on the thread count.
/// Rows are split between the cores unless the caller is [`super::serial`].
pub fn sparse_product(out: &mut [f32], x: &SparseRows, w: &[f32], n: usize) {
    let rows = x.rows();
    assert!(
        out.len() >= rows * n && w.len() >= x.cols * n,
        "sparse_product: buffers too small"
    );
    let out = &mut out[..rows * n];
    if n == 0 {
        return;
    }
    if is_serial() || rows < 2 * ROWS_PER_TASK {
        sparse_rows(out, x, w, n, 0);
    } else {
        out.par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(t, o)| sparse_rows(o, x, w, n, t * ROWS_PER_TASK));
    }
}

crate::simd_fn! {
    /// Rows `first..` of [`sparse_product`] into `out`: for each block of
    /// output columns (summed in registers, so each selected weight costs
    /// one load and one FMA; the wider the block, the longer the runs of
    /// weights read, which is what sets the pace), the sum over the row's
    /// nonzeros in ascending order, one fused multiply-add each.
    fn sparse_rows(out: &mut [f32], x: &SparseRows, w: &[f32], n: usize, first: usize) {
        // AVX-512's 32 vector registers hold 256 columns' sums (16
        // registers); AVX2's 16 hold 64 (8 registers).
        if has_avx512f() {
            sparse_rows_in_blocks::<256>(out, x, w, n, first)
        } else {
            sparse_rows_in_blocks::<64>(out, x, w, n, first)
        }
    }
}

#[inline(always)]
fn sparse_rows_in_blocks<const BLOCK: usize>(
    out: &mut [f32],
    x: &SparseRows,
    w: &[f32],
    n: usize,
    first: usize,
) {
    for (r, o) in out.chunks_exact_mut(n).enumerate() {
        let (cols, vals) = x.row(first + r);
        let mut start = 0;
        while start + BLOCK <= n {
            let mut sums = [0.0f32; BLOCK];
            for (&c, &v) in cols.iter().zip(vals) {
                let row: &[f32; BLOCK] = w[c as usize * n + start..][..BLOCK]
                    .try_into()
                    .expect("a block of columns");
                for (s, &wv) in sums.iter_mut().zip(row) {
                    *s = v.mul_add(wv, *s);
                }
            }
            o[start..start + BLOCK].copy_from_slice(&sums);
            start += BLOCK;
        }
        let o = &mut o[start..];
        o.fill(0.0);
        for (&c, &v) in cols.iter().zip(vals) {
            let row = &w[c as usize * n + start..][..o.len()];
            for (s, &wv) in o.iter_mut().zip(row) {
                *s = v.mul_add(wv, *s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::{naive, transpose};
    use crate::cpu::{hash32, serial};

    #[test]
    fn sparse_products_equal_the_dense_ones_both_ways_round() {
        // Tails on every vector width, empty rows and full ones.
        for (rows, m, n, density) in [
            (13, 37, 300, 0.15),
            (40, 50, 129, 0.5),
            (3, 8, 7, 1.0),
            (5, 20, 64, 0.0),
        ] {
            let mut seed = 7u32;
            let mut next = || {
                seed = hash32(seed);
                seed as f32 / u32::MAX as f32
            };
            let x: Vec<f32> = (0..rows * m)
                .map(|_| {
                    let keep = next() < density;
                    if keep { next() * 2.0 - 1.0 } else { 0.0 }
                })
                .collect();
            let w: Vec<f32> = (0..m * n).map(|_| next() - 0.5).collect();
            let dy: Vec<f32> = (0..rows * n).map(|_| next() - 0.5).collect();
            let mut sx = SparseRows::default();
            let got = sx.index(&x, m);
            let nonzeros = x.iter().filter(|&&v| v != 0.0).count();
            assert_eq!(got, nonzeros as f32 / x.len() as f32);
            // Forward: x @ w.
            let mut out = vec![f32::NAN; rows * n];
            sparse_product(&mut out, &sx, &w, n);
            for (g, e) in out.iter().zip(naive(&x, &w, rows, m, n)) {
                assert!((g - e).abs() < 1e-5, "{rows}x{m}x{n}: {g} vs {e}");
            }
            // Same bits on one thread as on many.
            let mut one = vec![f32::NAN; rows * n];
            serial(|| sparse_product(&mut one, &sx, &w, n));
            assert_eq!(out, one);
            // The same bits with either block of columns (AVX-512's or AVX2's).
            let (mut wide, mut narrow) = (vec![f32::NAN; rows * n], vec![f32::NAN; rows * n]);
            sparse_rows_in_blocks::<256>(&mut wide, &sx, &w, n, 0);
            sparse_rows_in_blocks::<64>(&mut narrow, &sx, &w, n, 0);
            assert_eq!(wide, out);
            assert_eq!(narrow, out);
            // Weight gradient: x' dy through the transpose.
            let mut st = SparseRows::default();
            sx.transpose_into(&mut st);
            let mut gw = vec![f32::NAN; m * n];
            sparse_product(&mut gw, &st, &dy, n);
            let want = naive(&transpose(&x, rows, m), &dy, m, rows, n);
            for (g, e) in gw.iter().zip(want) {
                assert!((g - e).abs() < 1e-5, "{rows}x{m}x{n} x'dy: {g} vs {e}");
            }
        }
    }
}
