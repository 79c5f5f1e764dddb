//! Products with binary (0/1) matrices, the sampled layers of an RBM's
//! Gibbs chain: the positions of a layer's ones ([`Ones`]), the weights as
//! cache-line panels ([`Panels`]), and each output row as the sum of the
//! panel rows the ones (or, for a mostly-on layer, the zeros) select.

use rayon::prelude::*;

use super::{ROWS_PER_TASK, is_serial};

/// A binary (0/1) matrix (rows x m) by the positions of its ones, row by
/// row: a sampled layer in the form [`gathered_product`] reads.
#[derive(Debug, Clone, Default)]
pub struct Ones {
    /// Row `r`'s ones are `index[r * m..][..count[r]]`.
    index: Vec<u32>,
    count: Vec<usize>,
    m: usize,
}

impl Ones {
    /// Indexes `x` (rows of `m` values, each 0 or 1), rows split between the
    /// cores, and returns the fraction of ones.
    pub fn index(&mut self, x: &[f32], m: usize) -> f32 {
        self.index_of(x, m, false)
    }

    /// Indexes the zeros of `x` instead (the ones of 1 - x), and returns
    /// their fraction: a mostly-on layer's product is the all-ones row's
    /// minus the product with its zeros ([`complement_product`]).
    pub fn index_zeros(&mut self, x: &[f32], m: usize) -> f32 {
        self.index_of(x, m, true)
    }

    fn index_of(&mut self, x: &[f32], m: usize, zeros: bool) -> f32 {
        assert_eq!(x.len() % m, 0);
        let flip = if zeros { 0xFFFF } else { 0 };
        let rows = x.len() / m;
        self.m = m;
        self.index.resize(rows * m, 0);
        self.count.resize(rows, 0);
        let task = |((row, index), count): ((&[f32], &mut [u32]), &mut usize)| {
            let mut k = 0;
            let chunks = row.chunks_exact(16);
            let tail = chunks.remainder();
            for (c, chunk) in chunks.enumerate() {
                k = push_ones(index, k, (c * 16) as u32, nonzero_mask(chunk) ^ flip);
            }
            let mut mask = 0u32;
            for (j, &v) in tail.iter().enumerate() {
                mask |= (((v != 0.0) != zeros) as u32) << j;
            }
            *count = push_ones(index, k, (m - tail.len()) as u32, mask);
        };
        if is_serial() || rows < 2 * ROWS_PER_TASK {
            x.chunks_exact(m)
                .zip(self.index.chunks_exact_mut(m))
                .zip(self.count.iter_mut())
                .for_each(task);
        } else {
            x.par_chunks_exact(m)
                .zip(self.index.par_chunks_exact_mut(m))
                .zip(self.count.par_iter_mut())
                .with_min_len(ROWS_PER_TASK)
                .for_each(task);
        }
        self.count.iter().sum::<usize>() as f32 / x.len().max(1) as f32
    }

    fn rows(&self) -> usize {
        self.count.len()
    }

    /// The columns of row `r`'s ones, ascending.
    fn row(&self, r: usize) -> &[u32] {
        &self.index[r * self.m..][..self.count[r]]
    }
}

/// Bit j set where `chunk[j]` (16 values) is not zero.
#[inline]
pub(super) fn nonzero_mask(chunk: &[f32]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512(chunk: &[f32]) -> u32 {
                use std::arch::x86_64::*;
                // SAFETY: `chunk` holds 16 values (asserted by the caller's chunking).
                let v = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
                _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(v, _mm512_setzero_ps()) as u32
            }
            assert_eq!(chunk.len(), 16);
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512(chunk) };
        }
    }
    let mut mask = 0u32;
    for (j, &v) in chunk.iter().enumerate() {
        mask |= ((v != 0.0) as u32) << j;
    }
    mask
}

/// Writes `base + j` for each set bit j of `mask` at `index[k..]`; returns the new `k`.
#[inline(always)]
fn push_ones(index: &mut [u32], mut k: usize, base: u32, mut mask: u32) -> usize {
    while mask != 0 {
        index[k] = base + mask.trailing_zeros();
        k += 1;
        mask &= mask - 1;
    }
    k
}

/// Columns of a [`Panels`] panel: one AVX-512 vector, one cache line.
const PANEL: usize = 16;
/// Running sums per output row in [`gathered_product`]: enough independent
/// additions in flight to cover their latency at two loads a cycle.
const SUMS: usize = 8;

/// One row of a panel, aligned to its cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Lane([f32; PANEL]);

/// A matrix (m x n) stored as panels of [`PANEL`] columns, each panel m
/// rows of one cache line, one after the other (the last zero-padded): a
/// panel of a 784 x 500 matrix is 49 KB, about the L1 cache, so the rows a
/// sampled layer selects are read from there by [`gathered_product`].
#[derive(Debug, Clone, Default)]
pub struct Panels {
    lanes: Vec<Lane>,
    /// The sum of all m rows (the product with an all-ones row).
    totals: Vec<f32>,
    m: usize,
    n: usize,
}

impl Panels {
    /// Fills the panels with `w` (row-major, `m` rows of `n`), or with its
    /// transpose (`n` rows of `m`) when `transposed`.
    pub fn fill(&mut self, w: &[f32], m: usize, n: usize, transposed: bool) {
        assert_eq!(w.len(), m * n);
        let (rows, cols) = if transposed { (n, m) } else { (m, n) };
        self.m = rows;
        self.n = cols;
        self.lanes.clear();
        self.lanes
            .resize(cols.div_ceil(PANEL) * rows, Lane::default());
        if transposed {
            // Lane (p, r) of W' is column r of W's rows p*16.., read 16 rows at a time.
            for (p, block) in w.chunks(PANEL * n).enumerate() {
                let lanes = &mut self.lanes[p * rows..(p + 1) * rows];
                for (t, wr) in block.chunks_exact(n).enumerate() {
                    for (lane, &x) in lanes.iter_mut().zip(wr) {
                        lane.0[t] = x;
                    }
                }
            }
        } else {
            for (i, wr) in w.chunks_exact(n).enumerate() {
                for (p, chunk) in wr.chunks(PANEL).enumerate() {
                    self.lanes[p * rows + i].0[..chunk.len()].copy_from_slice(chunk);
                }
            }
        }
        // Row by row, in order, for each column.
        self.totals.clear();
        self.totals.resize(cols, 0.0);
        for p in 0..cols.div_ceil(PANEL) {
            let c0 = p * PANEL;
            let width = PANEL.min(cols - c0);
            for lane in &self.lanes[p * rows..(p + 1) * rows] {
                for (t, v) in self.totals[c0..c0 + width].iter_mut().zip(&lane.0) {
                    *t += v;
                }
            }
        }
    }
}

/// `out = x @ w` for a binary `x` given by the [`Ones`] index of its
/// *zeros* ([`Ones::index_zeros`]): w's total row minus the sum of the rows
/// the zeros select, for layers that are mostly ones.
pub fn complement_product(out: &mut [f32], w: &Panels, zeros: &Ones) {
    gathered_product(out, w, zeros);
    for row in out.chunks_exact_mut(w.n) {
        for (o, t) in row.iter_mut().zip(&w.totals) {
            *o = t - *o;
        }
    }
}

/// `out (rows x n) = x @ w` for a binary `x` given by its [`Ones`] and `w`
/// as [`Panels`]: each output row is the sum of the rows of `w` its ones
/// select. The fraction of ones times the dense product's arithmetic, adds
/// instead of multiply-adds, read from the L1 cache. Each core sums its own
/// slice of the columns for every row (a repeated call reads the same part
/// of `w` from the same core's cache), each value in a fixed order, so the
/// result does not depend on the thread count.
pub fn gathered_product(out: &mut [f32], w: &Panels, ones: &Ones) {
    let (rows, n) = (ones.rows(), w.n);
    assert_eq!(
        out.len(),
        rows * n,
        "gathered_product: output of another shape"
    );
    assert_eq!(
        ones.m, w.m,
        "gathered_product: x's columns are not w's rows"
    );
    let panels = n.div_ceil(PANEL);
    let threads = if is_serial() {
        1
    } else {
        rayon::current_num_threads().min(panels)
    };
    let out = SharedRows::new(out, n);
    let task = |t: usize| {
        let panels = t * panels / threads..(t + 1) * panels / threads;
        // SAFETY: task t alone writes the columns of these panels.
        unsafe { gathered_columns(out, w, ones, panels) };
    };
    if threads == 1 {
        task(0);
    } else {
        (0..threads).into_par_iter().for_each(task);
    }
}

/// A row-major matrix of which tasks fill disjoint column ranges at once.
#[derive(Clone, Copy)]
struct SharedRows {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: the tasks given a `SharedRows` write disjoint column ranges.
unsafe impl Send for SharedRows {}
unsafe impl Sync for SharedRows {}

impl SharedRows {
    fn new(m: &mut [f32], n: usize) -> Self {
        SharedRows {
            ptr: m.as_mut_ptr(),
            n,
        }
    }

    /// Row `r`'s values in `cols`.
    ///
    /// # Safety
    /// Row `r` must lie in the matrix, `cols` in its columns, and no one else
    /// may touch them while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, r: usize, cols: std::ops::Range<usize>) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.n + cols.start), cols.len()) }
    }
}

/// The columns of `panels` of every output row; compiled for AVX-512 where
/// the CPU has it.
///
/// # Safety
/// No one else may touch those columns of `out` meanwhile.
unsafe fn gathered_columns(
    out: SharedRows,
    w: &Panels,
    ones: &Ones,
    panels: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        type Args<'a> = (SharedRows, &'a Panels, &'a Ones, std::ops::Range<usize>);
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512((out, w, ones, panels): Args<'_>) {
            unsafe { gathered_by_panel(out, w, ones, panels) }
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2((out, w, ones, panels): Args<'_>) {
            unsafe { gathered_by_panel(out, w, ones, panels) }
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the feature `avx512` was compiled
            // for; the caller upholds the rest.
            return unsafe { avx512((out, w, ones, panels)) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above, for `avx2`.
            return unsafe { avx2((out, w, ones, panels)) };
        }
    }
    unsafe { gathered_by_panel(out, w, ones, panels) }
}

/// One panel at a time for every row, so that the panel stays in the L1
/// cache. [`SUMS`] running sums, the selected rows dealt to them in turn,
/// keep additions in flight; they are added pairwise in a fixed order, the
/// same whatever the vector width.
///
/// # Safety
/// As [`gathered_columns`].
#[inline(always)]
unsafe fn gathered_by_panel(
    out: SharedRows,
    w: &Panels,
    ones: &Ones,
    panels: std::ops::Range<usize>,
) {
    let (m, n) = (w.m, w.n);
    for p in panels {
        let panel = &w.lanes[p * m..(p + 1) * m];
        let c0 = p * PANEL;
        let cols = c0..(c0 + PANEL).min(n);
        for r in 0..ones.rows() {
            let selected = ones.row(r);
            let mut s = [[0.0f32; PANEL]; SUMS];
            let add = |s: &mut [f32; PANEL], i: u32| {
                let lane = &panel[i as usize].0;
                for t in 0..PANEL {
                    s[t] += lane[t];
                }
            };
            let groups = selected.chunks_exact(SUMS);
            let rest = groups.remainder();
            for g in groups {
                for k in 0..SUMS {
                    add(&mut s[k], g[k]);
                }
            }
            for (k, &i) in rest.iter().enumerate() {
                add(&mut s[k], i);
            }
            let mut sum = [0.0f32; PANEL];
            for t in 0..PANEL {
                sum[t] = ((s[0][t] + s[1][t]) + (s[2][t] + s[3][t]))
                    + ((s[4][t] + s[5][t]) + (s[6][t] + s[7][t]));
            }
            // SAFETY: (caller) these columns are ours.
            let o = unsafe { out.part(r, cols.clone()) };
            o.copy_from_slice(&sum[..cols.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::{naive, transpose};
    use crate::cpu::{hash32, serial};

    #[test]
    fn gathered_product_equals_the_dense_product_of_binary_rows() {
        // Shapes with tails on every vector width, densities from empty rows to full ones.
        for (rows, m, n, density) in [
            (13, 37, 300, 0.15),
            (9, 50, 129, 0.5),
            (3, 8, 7, 1.0),
            (5, 20, 64, 0.0),
        ] {
            let mut seed = 1u32;
            let mut next = || {
                seed = hash32(seed);
                seed as f32 / u32::MAX as f32
            };
            let x: Vec<f32> = (0..rows * m)
                .map(|_| (next() < density) as u8 as f32)
                .collect();
            let w: Vec<f32> = (0..m * n).map(|_| next() - 0.5).collect();
            let mut ones = Ones::default();
            let got_density = ones.index(&x, m);
            assert_eq!(got_density, x.iter().sum::<f32>() / x.len() as f32);
            // w as panels, filled as it is and from its transpose.
            let wt = transpose(&w, m, n);
            let mut panels = Panels::default();
            let mut from_transposed = Panels::default();
            panels.fill(&w, m, n, false);
            from_transposed.fill(&wt, n, m, true);
            let mut out = vec![f32::NAN; rows * n];
            gathered_product(&mut out, &panels, &ones);
            let want = naive(&x, &w, rows, m, n);
            for (g, e) in out.iter().zip(&want) {
                assert!((g - e).abs() < 1e-5, "{rows}x{m}x{n}: {g} vs {e}");
            }
            let mut again = vec![f32::NAN; rows * n];
            gathered_product(&mut again, &from_transposed, &ones);
            assert_eq!(out, again);
            // Same bits on one thread as on many.
            let mut serial_out = vec![0.0; rows * n];
            serial(|| gathered_product(&mut serial_out, &panels, &ones));
            assert_eq!(out, serial_out);
            // From the zeros: the all-ones row's product minus theirs.
            let zeros = ones.index_zeros(&x, m);
            assert!((zeros - (1.0 - got_density)).abs() < 1e-6);
            let mut complement = vec![f32::NAN; rows * n];
            complement_product(&mut complement, &panels, &ones);
            for (g, e) in complement.iter().zip(&want) {
                assert!(
                    (g - e).abs() < 1e-4,
                    "{rows}x{m}x{n} from zeros: {g} vs {e}"
                );
            }
        }
    }
}
